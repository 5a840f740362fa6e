/* cprun.c: `lantern --control-plane URL run FILE.yaml --tenant T`: submits an AgentSpec
 * to lantern-cp's operator API (libcurl) instead of the local lanternd, then follows the
 * run's status until it ends. Only metadata crosses the boundary, so what is shown is
 * the status, the node's detail and the exit code, not the workload's output (that stays
 * on the node: `lantern logs` there). Interrupting it cancels the run.
 * The operator token comes from $LANTERN_CP_TOKEN or --token-file. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>

#include "cli.h"
#include "lantern/util.h"

struct cpc {
	CURL *curl;
	const char *url;
	char auth[512];
};

struct body {
	char *p;
	size_t n;
};

static volatile sig_atomic_t interrupted;

static void on_int(int sig)
{
	interrupted = 1;
}

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *arg)
{
	struct body *b = arg;
	size_t n = size * nmemb;
	char *np = realloc(b->p, b->n + n + 1);

	if (!np)
		return 0;
	memcpy(np + b->n, ptr, n);
	b->n += n;
	np[b->n] = '\0';
	b->p = np;
	return n;
}

/* One request; returns the HTTP status (0 if none) and the JSON answer in *out. */
static long cpc_call(struct cpc *c, const char *method, const char *path, json_t *in, json_t **out)
{
	struct curl_slist *h = NULL;
	struct body b = { 0 };
	char url[2048], *data = NULL;
	long code = 0;
	CURLcode rc;

	snprintf(url, sizeof(url), "%s%s", c->url, path);
	curl_easy_reset(c->curl);
	curl_easy_setopt(c->curl, CURLOPT_URL, url);
	curl_easy_setopt(c->curl, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(c->curl, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(c->curl, CURLOPT_WRITEDATA, &b);
	curl_easy_setopt(c->curl, CURLOPT_TIMEOUT, 30L);
	curl_easy_setopt(c->curl, CURLOPT_NOSIGNAL, 1L);
	h = curl_slist_append(h, c->auth);
	h = curl_slist_append(h, "Content-Type: application/json");
	curl_easy_setopt(c->curl, CURLOPT_HTTPHEADER, h);
	if (in) {
		data = json_dumps(in, JSON_COMPACT);
		curl_easy_setopt(c->curl, CURLOPT_POSTFIELDS, data ? data : "{}");
	} else if (!strcmp(method, "POST")) {
		curl_easy_setopt(c->curl, CURLOPT_POSTFIELDS, "{}");
	}
	rc = curl_easy_perform(c->curl);
	if (rc != CURLE_OK)
		fprintf(stderr, "lantern: control plane %s: %s\n", url, curl_easy_strerror(rc));
	else
		curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &code);
	*out = b.p ? json_loads(b.p, 0, NULL) : NULL;
	free(b.p);
	free(data);
	curl_slist_free_all(h);
	return code;
}

static int read_text(const char *path, char **out)
{
	size_t len;
	int err = util_read_file(path, out, &len);

	if (err < 0)
		fprintf(stderr, "lantern: %s: %s\n", path, strerror(-err));
	return err;
}

static bool final(const char *st)
{
	return !strcmp(st, "succeeded") || !strcmp(st, "failed") || !strcmp(st, "cancelled") ||
	       !strcmp(st, "timed_out");
}

/* Follows the run until it ends; returns the exit status to use. */
static int follow(struct cpc *c, const char *id)
{
	char path[256], last[600] = "", now[600];
	bool cancel_sent = false;

	snprintf(path, sizeof(path), "/v1/runs/%s", id);
	for (;;) {
		json_t *r = NULL;
		long code = cpc_call(c, "GET", path, NULL, &r);
		const char *st = json_string_value(json_object_get(r, "status"));

		if (code != 200 || !st) {
			fprintf(stderr, "lantern: run %s: the control plane answered %ld\n", id, code);
			json_decref(r);
			return 1;
		}
		/* a queued run says why it waits; a new reason is news too */
		snprintf(now, sizeof(now), "%s%s%s%s", st,
			 json_object_get(r, "why_queued") ? " (" : "",
			 json_string_value(json_object_get(r, "why_queued")) ?: "",
			 json_object_get(r, "why_queued") ? ")" : "");
		if (strcmp(now, last)) {
			const char *plane = json_string_value(json_object_get(r, "plane_id"));

			fprintf(stderr, "lantern: run %s %s%s%s\n", id, now, plane && *plane ? " on " : "",
				plane && *plane ? plane : "");
			snprintf(last, sizeof(last), "%s", now);
		}
		if (final(st)) {
			const char *detail = json_string_value(json_object_get(r, "detail"));
			json_t *out = json_loads(json_string_value(json_object_get(r, "output_json")) ?: "",
						 0, NULL);
			int exit_code = (int)json_integer_value(json_object_get(out, "exit_code"));
			int rc = !strcmp(st, "succeeded") ? 0 :
				 !strcmp(st, "failed") && exit_code > 0 && exit_code < 256 ? exit_code : 1;

			if (strcmp(st, "succeeded") && detail && *detail)
				fprintf(stderr, "lantern: %s\n", detail);
			printf("%s\n", json_string_value(json_object_get(r, "output_json")) ?: "");
			json_decref(out);
			json_decref(r);
			return rc;
		}
		json_decref(r);
		if (interrupted && !cancel_sent) {
			char cpath[300];
			json_t *x = NULL;

			snprintf(cpath, sizeof(cpath), "/v1/runs/%s/cancel", id);
			cpc_call(c, "POST", cpath, NULL, &x);
			json_decref(x);
			fprintf(stderr, "lantern: run %s: cancel requested\n", id);
			cancel_sent = true;
		}
		usleep(100000);
	}
}

int cp_run(struct cli *cl, int argc, char **argv)
{
	const char *file = NULL, *tenant = NULL, *token_file = getenv("LANTERN_CP_TOKEN_FILE");
	const char *input = NULL, *plane = NULL, *idem = NULL, *token = getenv("LANTERN_CP_TOKEN");
	bool detach = false;
	struct cpc c = { .url = cl->control_plane };
	char *spec = NULL, *tok = NULL;
	json_t *req, *res = NULL;
	long code;
	int rc = 1;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--tenant") && i + 1 < argc)
			tenant = argv[++i];
		else if (!strcmp(argv[i], "--token-file") && i + 1 < argc)
			token_file = argv[++i];
		else if (!strcmp(argv[i], "--input-json") && i + 1 < argc)
			input = argv[++i];
		else if (!strcmp(argv[i], "--plane") && i + 1 < argc)
			plane = argv[++i];
		else if (!strcmp(argv[i], "--idempotency-key") && i + 1 < argc)
			idem = argv[++i];
		else if (!strcmp(argv[i], "--detach"))
			detach = true;
		else if (argv[i][0] != '-' && !file)
			file = argv[i];
		else
			file = NULL, i = argc;
	}
	if (!file || !tenant) {
		fprintf(stderr, "usage: lantern --control-plane URL run FILE.yaml --tenant T "
			"[--token-file F] [--input-json J] [--plane ID] [--idempotency-key K] [--detach]\n");
		return 2;
	}
	if (token_file) {
		if (read_text(token_file, &tok) < 0)
			return 1;
		tok[strcspn(tok, "\r\n")] = '\0';
		token = tok;
	}
	if (!token || !*token) {
		fprintf(stderr, "lantern: the control plane needs the operator token: $LANTERN_CP_TOKEN "
			"or --token-file\n");
		free(tok);
		return 2;
	}
	snprintf(c.auth, sizeof(c.auth), "Authorization: Bearer %s", token);
	free(tok);
	if (read_text(file, &spec) < 0)
		return 1;
	curl_global_init(CURL_GLOBAL_DEFAULT);
	c.curl = curl_easy_init();
	req = json_pack("{s:s, s:s}", "tenant_id", tenant, "spec", spec);
	free(spec);
	if (!req || !c.curl) {
		fprintf(stderr, "lantern: %s is not valid UTF-8 text\n", file);
		goto out;
	}
	if (input)
		json_object_set_new(req, "input_json", json_string(input));
	if (plane)
		json_object_set_new(req, "plane_id", json_string(plane));
	if (idem)
		json_object_set_new(req, "idempotency_key", json_string(idem));
	code = cpc_call(&c, "POST", "/v1/runs", req, &res);
	json_decref(req);
	if (code != 200 && code != 202) {
		json_t *errs = json_object_get(res, "errors");
		size_t i;
		json_t *v;

		fprintf(stderr, "lantern: control plane refused the run (%ld): %s\n", code,
			json_string_value(json_object_get(res, "error")) ?: "no answer");
		json_array_foreach(errs, i, v)
			fprintf(stderr, "  %s\n", json_string_value(v));
		goto out;
	}
	{
		const char *id = json_string_value(json_object_get(res, "id"));

		if (!id) {
			fprintf(stderr, "lantern: the control plane's answer has no run id\n");
			goto out;
		}
		if (detach) {
			printf("%s\n", id);
			rc = 0;
			goto out;
		}
		signal(SIGINT, on_int);
		signal(SIGTERM, on_int);
		rc = follow(&c, id);
	}
out:
	json_decref(res);
	if (c.curl)
		curl_easy_cleanup(c.curl);
	curl_global_cleanup();
	return rc;
}
