/* run.c: `lantern run FILE.yaml`: submits an AgentSpec to lanternd, streams the
 * workload's stdout and stderr, and exits with the workload's exit status. A run that
 * ends any other way than succeeded prints its status and reason on stderr. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "client.h"

static void write_all(int fd, const unsigned char *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);
		if (w <= 0)
			return;
		p += w;
		n -= (size_t)w;
	}
}

/* Streams a run's output until its end; returns the exit status to use. */
static int cli_stream_run(struct client_conn *cc)
{
	json_t *m;
	int rc = 1;

	while ((m = client_next(cc))) {
		const char *type = json_string_value(json_object_get(m, "type")) ?: "";

		if (!strcmp(type, "output")) {
			const char *data = json_string_value(json_object_get(m, "data")) ?: "";
			size_t dlen = strlen(data), bin_len;
			unsigned char *bin = malloc(dlen + 1);
			int fd = (int)json_integer_value(json_object_get(m, "fd"));

			if (bin && sodium_base642bin(bin, dlen + 1, data, dlen, NULL, &bin_len, NULL,
						     sodium_base64_VARIANT_ORIGINAL) == 0)
				write_all(fd == 2 ? 2 : 1, bin, bin_len);
			free(bin);
		} else if (!strcmp(type, "accepted")) {
			fprintf(stderr, "lantern: run %s accepted (instance %s)\n",
				json_string_value(json_object_get(m, "run_id")),
				json_string_value(json_object_get(m, "instance_id")));
		} else if (!strcmp(type, "exit")) {
			const char *st = json_string_value(json_object_get(m, "status")) ?: "?";
			const char *why = json_string_value(json_object_get(m, "reason"));
			int code = (int)json_integer_value(json_object_get(m, "exit_code"));

			if (strcmp(st, "succeeded"))
				fprintf(stderr, "lantern: run %s %s%s%s\n",
					json_string_value(json_object_get(m, "run_id")), st,
					why ? ": " : "", why ? why : "");
			rc = !strcmp(st, "succeeded") ? 0 : !strcmp(st, "failed") && code > 0 && code < 256 ? code : 1;
			json_decref(m);
			return rc;
		} else if (!strcmp(type, "error")) {
			fprintf(stderr, "lantern: %s\n", json_string_value(json_object_get(m, "error")) ?: "error");
			json_decref(m);
			return 1;
		}
		json_decref(m);
	}
	fprintf(stderr, "lantern: lost the connection to lanternd before the run ended\n");
	return 1;
}

/* The run's input (--input FILE or --input-json TEXT): a JSON value, which the
 * workload reads from the harness API (GET /v1/input). */
static int parse_input(const char *file, const char *text, json_t **out)
{
	json_error_t je;

	*out = file ? json_load_file(file, JSON_DECODE_ANY, &je) :
		      json_loads(text, JSON_DECODE_ANY, &je);
	if (!*out) {
		fprintf(stderr, "lantern: run input %s is not JSON: %s (line %d)\n",
			file ? file : "--input-json", je.text, je.line);
		return -1;
	}
	return 0;
}

int cmd_run(struct cli *c, int argc, char **argv)
{
	struct client_conn cc;
	const char *in_file = NULL, *in_text = NULL, *spec_file = NULL;
	json_t *input = NULL;
	char *yaml;
	size_t len;
	json_t *req;
	int rc;

	if (c->control_plane && *c->control_plane)
		return cp_run(c, argc, argv);
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--input") && i + 1 < argc)
			in_file = argv[++i];
		else if (!strcmp(argv[i], "--input-json") && i + 1 < argc)
			in_text = argv[++i];
		else if (argv[i][0] != '-' && !spec_file)
			spec_file = argv[i];
		else
			spec_file = NULL, i = argc;
	}
	if (!spec_file || (in_file && in_text)) {
		fprintf(stderr, "usage: lantern run [--input FILE | --input-json JSON] FILE.yaml\n");
		return 2;
	}
	if ((in_file || in_text) && parse_input(in_file, in_text, &input) < 0)
		return 1;
	if (sodium_init() < 0 || client_read_file(spec_file, &yaml, &len) < 0) {
		json_decref(input);
		return 1;
	}
	req = json_pack("{s:s, s:s, s:s%, s:b}", "op", "run", "file", spec_file, "yaml", yaml, len,
			"follow", 1);
	free(yaml);
	if (!req) {
		fprintf(stderr, "lantern: %s is not valid UTF-8 text\n", spec_file);
		json_decref(input);
		return 1;
	}
	if (input)
		json_object_set_new(req, "input", input);
	rc = client_open(c, req, &cc);
	json_decref(req);
	if (rc < 0)
		return 1;
	rc = cli_stream_run(&cc);
	client_close(&cc);
	return rc;
}
