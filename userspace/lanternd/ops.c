/* ops.c: the operations of lanternd's local API (what the lantern CLI asks), each
 * answered by the module that owns it: runs (run, ps, kill), logs (follow, logs),
 * egress (audit_egress, egress_update), durable (journal), telemetry (trace, cost),
 * identity (identity, identity_jwks, receipt), the OCI runtime (node, image_*), the pools
 * (pools), and bind
 * (lantern-oci, the runtime handler containerd execs, asking whether a container may
 * join a run's instance: run_bind). An op naming a run_id gets the run looked up first.
 * Also the probes on the metrics address (/healthz, /readyz), which ask the same
 * modules. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lanternd.h"

/* The run a request names; answers and finishes the client when there is none. */
static struct run *req_run(struct daemon *d, struct api_client *c, json_t *req, const char *op)
{
	const char *id = json_string_value(json_object_get(req, "run_id"));
	struct run *r;
	char m[160];

	if (!id) {
		snprintf(m, sizeof(m), "%s needs \"run_id\"", op);
		api_send_error(c, m);
		api_finish(c);
		return NULL;
	}
	if (!(r = runs_find(d->runs, id))) {
		snprintf(m, sizeof(m), "no run \"%.64s\" on this node", id);
		api_send_error(c, m);
		api_finish(c);
	}
	return r;
}

static void reply(struct api_client *c, json_t *msg)
{
	api_send(c, msg);
	api_finish(c);
}

/* A run op waiting for the secrets its spec names to be read (identity_prefetch). */
struct run_op {
	struct daemon *d;
	struct api_client *c;
	json_t *req;
	struct run_prefetch *pf;
};

static void run_op_free(struct run_op *o)
{
	identity_prefetch_free(o->pf);
	json_decref(o->req);
	free(o);
}

/* The start itself, with what was read before it (or nothing). */
static void run_now(struct daemon *d, struct api_client *c, json_t *req, struct run_prefetch *pf)
{
	json_t *y = json_object_get(req, "yaml");
	struct run_submit sub = {
		.file = json_string_value(json_object_get(req, "file")), .yaml = json_string_value(y),
		.len = json_string_length(y), .input = json_object_get(req, "input"), .prefetch = pf,
	};
	struct lerr e = { 0 };
	struct run *r;

	if (d->draining) {
		api_send_error(c, "spawn: refused: node is draining: lanternd is stopping (a restart or rollout)");
	} else if (runs_start(d->runs, &sub, &r, &e) < 0) {
		api_send_error(c, e.msg);
	} else {
		api_send(c, json_pack("{s:s, s:s, s:s}", "type", "accepted", "run_id", run_id(r),
				      "instance_id", run_instance_id(r)));
		if (json_is_true(json_object_get(req, "follow"))) {
			logs_follow(d->logs, r, c);
			return;
		}
	}
	api_finish(c);
}

static void on_run_read(void *arg, struct run_prefetch *pf)
{
	struct run_op *o = arg;

	api_on_close(o->c, NULL, NULL);
	run_now(o->d, o->c, o->req, pf);
	run_op_free(o);
}

/* The client left while its secrets were read: the start is called off. */
static void on_run_client_gone(void *arg, struct api_client *c)
{
	run_op_free(arg);
}

static void op_run(void *arg, struct api_client *c, json_t *req)
{
	struct daemon *d = arg;
	const char *file = json_string_value(json_object_get(req, "file"));
	json_t *y = json_object_get(req, "yaml");
	struct run_op *o;

	if (!file || !json_is_string(y)) {
		api_send_error(c, "run needs \"file\" and \"yaml\"");
	} else if (d->draining) {
		api_send_error(c, "spawn: refused: node is draining: lanternd is stopping (a restart or rollout)");
	} else if (!(o = calloc(1, sizeof(*o)))) {
		api_send_error(c, "lanternd: out of memory");
	} else {
		/* k8s:// secrets are read first: admission cannot wait for the API server */
		o->d = d;
		o->c = c;
		o->req = json_incref(req);
		if (identity_prefetch(d->identity, file, json_string_value(y), json_string_length(y), on_run_read, o,
				      &o->pf) > 0) {
			api_on_close(c, on_run_client_gone, o);
			return;
		}
		run_op_free(o);
		run_now(d, c, req, NULL);
		return;
	}
	api_finish(c);
}

static void op_ps(void *arg, struct api_client *c, json_t *req)
{
	struct daemon *d = arg;
	json_t *arr = json_array();

	for (struct run *r = runs_first(d->runs); r; r = run_next(r))
		json_array_append_new(arr, run_json(r));
	reply(c, json_pack("{s:s, s:o}", "type", "runs", "runs", arr));
}

static void op_pools(void *arg, struct api_client *c, json_t *req)
{
	struct daemon *d = arg;

	reply(c, pool_json(d->pool));
}

static void op_kill(void *arg, struct api_client *c, json_t *req)
{
	struct daemon *d = arg;
	struct run *r = req_run(d, c, req, "kill");
	struct lerr e = { 0 };

	if (!r)
		return;
	if (run_cancel(r, &e) < 0)
		api_send_error(c, e.msg);
	else
		api_send(c, json_pack("{s:s, s:s}", "type", "ok", "run_id", run_id(r)));
	api_finish(c);
}

static void op_audit_egress(void *arg, struct api_client *c, json_t *req)
{
	struct daemon *d = arg;
	json_t *arr = json_array();
	struct run *r;

	if (json_object_get(req, "run_id")) {
		if (!(r = req_run(d, c, req, "audit_egress"))) {
			json_decref(arr);
			return;
		}
		json_array_append_new(arr, egress_audit_json(d->egress, r));
	} else {
		for (r = runs_first(d->runs); r; r = run_next(r))
			if (!run_status_final(run_status(r)))
				json_array_append_new(arr, egress_audit_json(d->egress, r));
	}
	reply(c, json_pack("{s:s, s:o}", "type", "audit", "runs", arr));
}

static void op_egress_update(void *arg, struct api_client *c, json_t *req)
{
	struct daemon *d = arg;
	const char *file = json_string_value(json_object_get(req, "file"));
	json_t *y = json_object_get(req, "yaml");
	struct lerr e = { 0 };
	struct run *r;

	if (!file || !json_is_string(y)) {
		reply(c, json_pack("{s:s, s:s}", "type", "error", "error",
				   "egress_update needs \"run_id\", \"file\" and \"yaml\""));
		return;
	}
	if (!(r = req_run(d, c, req, "egress_update")))
		return;
	if (egress_update(d->egress, r, file, json_string_value(y), json_string_length(y), &e) < 0)
		api_send_error(c, e.msg);
	else
		api_send(c, json_pack("{s:s, s:s}", "type", "ok", "run_id", run_id(r)));
	api_finish(c);
}

static void op_journal(void *arg, struct api_client *c, json_t *req)
{
	struct daemon *d = arg;
	struct run *r = req_run(d, c, req, "journal");

	if (r)
		reply(c, durable_journal_json(d->durable, r));
}

static void op_follow(void *arg, struct api_client *c, json_t *req)
{
	struct daemon *d = arg;
	struct run *r = req_run(d, c, req, "follow");

	if (r)
		logs_follow(d->logs, r, c);
}

static void op_logs(void *arg, struct api_client *c, json_t *req)
{
	struct daemon *d = arg;
	struct run *r = req_run(d, c, req, "logs");

	if (r)
		logs_request(d->logs, r, c, req);
}

static void op_trace(void *arg, struct api_client *c, json_t *req)
{
	struct daemon *d = arg;
	struct run *r = req_run(d, c, req, "trace");

	if (r)
		reply(c, telemetry_trace_json(d->telemetry, r));
}

static void op_cost(void *arg, struct api_client *c, json_t *req)
{
	struct daemon *d = arg;
	struct run *r = req_run(d, c, req, "cost");

	if (r)
		reply(c, telemetry_cost_json(d->telemetry, r));
}

static void op_identity(void *arg, struct api_client *c, json_t *req)
{
	struct daemon *d = arg;
	struct run *r = req_run(d, c, req, "identity");

	if (r)
		reply(c, identity_run_json(d->identity, r));
}

static void op_identity_jwks(void *arg, struct api_client *c, json_t *req)
{
	struct daemon *d = arg;

	reply(c, json_pack("{s:s, s:o}", "type", "jwks", "jwks", identity_jwks(d->identity)));
}

static void op_receipt(void *arg, struct api_client *c, json_t *req)
{
	struct daemon *d = arg;
	struct run *r = req_run(d, c, req, "receipt");
	char *jws, m[160];

	if (!r)
		return;
	if (!(jws = identity_receipt(r))) {
		snprintf(m, sizeof(m), "run %s has no receipt%s", run_id(r),
			 run_status_final(run_status(r)) ? "" : " yet: it is signed when the run ends");
		api_send_error(c, m);
		api_finish(c);
		return;
	}
	reply(c, json_pack("{s:s, s:s, s:s}", "type", "receipt", "run_id", run_id(r), "receipt", jws));
	free(jws);
}

/* A request the OCI runtime may answer later (an image import runs on a worker): the
 * client can go before the answer comes, or the answer come before the client goes.
 * Whichever happens second frees it. */
struct pending {
	struct api_client *c;
	bool answered;
};

static void pending_closed(void *arg, struct api_client *c)
{
	struct pending *p = arg;

	p->c = NULL;
	if (p->answered)
		free(p);
}

static void pending_answer(void *arg, json_t *msg)
{
	struct pending *p = arg;

	p->answered = true;
	if (!p->c) {
		json_decref(msg);
		free(p);
		return;
	}
	api_send(p->c, msg);
	api_finish(p->c);
}

static void op_oci(void *arg, struct api_client *c, json_t *req)
{
	struct daemon *d = arg;
	struct pending *p = calloc(1, sizeof(*p));

	if (!p) {
		api_send_error(c, "out of memory");
		api_finish(c);
		return;
	}
	p->c = c;
	api_on_close(c, pending_closed, p);
	if (runtime_oci_api(d->oci, d->runs, json_string_value(json_object_get(req, "op")), req,
			    pending_answer, p) < 0)
		pending_answer(p, json_pack("{s:s, s:s}", "type", "error", "error", "not an OCI operation"));
}

/* lantern-oci's question before the real runtime runs a container; every field comes
 * from the container's config.json (tools/lantern-oci). */
static void op_bind(void *arg, struct api_client *c, json_t *req)
{
	struct daemon *d = arg;
	json_t *ann = json_object_get(req, "annotations"), *answer = NULL;
	struct lerr e = { 0 };
#define ANN(k) json_string_value(json_object_get(ann, k))
	struct run_bind_req b = {
		.container_id = json_string_value(json_object_get(req, "container_id")),
		.cgroups_path = json_string_value(json_object_get(req, "cgroups_path")),
		.handler_class = json_string_value(json_object_get(req, "handler_class")),
		.sandbox = ANN("io.kubernetes.cri.container-type") &&
			   !strcmp(ANN("io.kubernetes.cri.container-type"), "sandbox"),
		.sandbox_id = ANN("io.kubernetes.cri.sandbox-id"),
		.pod_namespace = ANN("io.kubernetes.cri.sandbox-namespace"),
		.pod_name = ANN("io.kubernetes.cri.sandbox-name"),
		.pod_uid = ANN("io.kubernetes.cri.sandbox-uid"),
		.run_id = ANN("lantern.dev/run-id"),
		.instance_id = ANN("lantern.dev/agent-instance-id"),
		.process = json_object_get(req, "process"),
	};
#undef ANN

	if (!b.container_id || !json_is_object(ann)) {
		api_send_error(c, "bind needs \"container_id\" and \"annotations\"");
	} else if (run_bind(d->runs, &b, &answer, &e) < 0) {
		log_warn("%s", e.msg);
		api_send_error(c, e.msg);
	} else {
		json_object_set_new(answer, "type", json_string("bound"));
		api_send(c, answer);
	}
	api_finish(c);
}

int ops_register(struct daemon *d, struct lerr *e)
{
	static const struct {
		const char *op;
		api_op_fn fn;
	} ops[] = {
		{ "run", op_run },           { "ps", op_ps },
		{ "kill", op_kill },         { "audit_egress", op_audit_egress },
		{ "egress_update", op_egress_update }, { "journal", op_journal },
		{ "follow", op_follow },     { "logs", op_logs },
		{ "trace", op_trace },       { "cost", op_cost },
		{ "identity", op_identity }, { "identity_jwks", op_identity_jwks },
		{ "receipt", op_receipt },
		{ "node", op_oci },          { "image_import", op_oci },
		{ "image_ls", op_oci },      { "image_rm", op_oci },
		{ "bind", op_bind },          { "pools", op_pools },
	};
	int err;

	for (size_t i = 0; i < ARRAY_SIZE(ops); i++)
		if ((err = api_register(d->api, ops[i].op, ops[i].fn, d)) < 0)
			return lerr_set(e, err, "api: cannot register op %s", ops[i].op);
	return 0;
}

void ops_metrics(void *arg, struct metrics_out *o)
{
	struct daemon *d = arg;

	metrics_family(o, "lantern_runs", "gauge", "Runs this lanternd knows, by status.");
	for (int s = 0; s < RUN_N_STATUS; s++) {
		const char *labels[] = { "status", run_status_name((enum run_status)s), NULL };

		metrics_u64(o, "lantern_runs", labels, runs_count(d->runs, (enum run_status)s));
	}
}

unsigned ops_healthz(void *arg, char **body, const char **type)
{
	*body = strdup("ok\n");
	return 200;
}

/* Pinned links under the pin root: what keeps the programs attached past lanternd. */
static int pinned_links(const char *root)
{
	DIR *dir = opendir(root);
	struct dirent *de;
	int n = 0;

	while (dir && (de = readdir(dir)))
		n += !strncmp(de->d_name, "link_", 5);
	if (dir)
		closedir(dir);
	return n;
}

struct check {
	const char *name;
	bool ok;
	char why[320];
};

unsigned ops_readyz(void *arg, char **body, const char **type)
{
	struct daemon *d = arg;
	struct check c[5] = { { "programs" }, { "socket" }, { "runtime" }, { "control-plane" }, { "draining" } };
	const char *cls[8];
	int links = pinned_links(d->cfg.bpffs);
	size_t len = 0;
	bool all = true;
	FILE *f;

	c[0].ok = links > 0;
	snprintf(c[0].why, sizeof(c[0].why), "%d links pinned under %s", links, d->cfg.bpffs);
	c[1].ok = d->api && util_unix_socket_alive(d->cfg.socket);
	snprintf(c[1].why, sizeof(c[1].why), "%s%s", d->cfg.socket, c[1].ok ? "" : ": not accepting");
	if (d->kube && (c[2].ok = runtime_kube_ready(d->kube, c[2].why, sizeof(c[2].why))))
		snprintf(c[2].why, sizeof(c[2].why), "kubernetes: this node's pods watched, node labelled");
	if (!d->kube) {
		size_t nc = runtimes_classes(d->runtimes, cls, ARRAY_SIZE(cls));

		c[2].ok = nc > 0;
		snprintf(c[2].why, sizeof(c[2].why), "%zu isolation classes runnable", nc);
	}
	if (!d->cplane) {
		c[3].ok = true;
		snprintf(c[3].why, sizeof(c[3].why), "none configured");
	} else if ((c[3].ok = cplane_registered(d->cplane, c[3].why, sizeof(c[3].why)))) {
		snprintf(c[3].why, sizeof(c[3].why), "%s answers heartbeats", d->cfg.control_plane);
	}
	c[4].ok = !d->draining;
	snprintf(c[4].why, sizeof(c[4].why), "%s", d->draining ? "lanternd is stopping" : "no");
	if (!(f = open_memstream(body, &len)))
		return 500;
	for (size_t i = 0; i < ARRAY_SIZE(c); i++) {
		fprintf(f, "%s %s: %s\n", c[i].ok ? "ok" : "fail", c[i].name, c[i].why);
		all = all && c[i].ok;
	}
	fclose(f);
	return all ? 200 : 503;
}
