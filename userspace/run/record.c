/* record.c: a run's record: its status names, its JSON (lantern ps, run.json), the file
 * STATE/runs/<id>/run.json (that JSON plus the spec's file name and the instance
 * cgroup's name), and loading a run from it and its spec.yaml after a restart.
 * Subscribers keep their own files beside it. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "lantern/util.h"

static const char *const status_names[] = {
	[RUN_ACCEPTED] = "accepted",   [RUN_RUNNING] = "running",
	[RUN_SUCCEEDED] = "succeeded", [RUN_FAILED] = "failed",
	[RUN_TIMED_OUT] = "timed_out", [RUN_CANCELLED] = "cancelled",
	[RUN_OOM_KILLED] = "oom_killed", [RUN_BUDGET_EXCEEDED] = "budget_exceeded",
};

const char *run_status_name(enum run_status s)
{
	return s < ARRAY_SIZE(status_names) ? status_names[s] : "unknown";
}

bool run_status_final(enum run_status s)
{
	return s != RUN_ACCEPTED && s != RUN_RUNNING;
}

int run_status_from_name(const char *n)
{
	for (size_t i = 0; i < ARRAY_SIZE(status_names); i++)
		if (n && !strcmp(n, status_names[i]))
			return (int)i;
	return -1;
}

/* ---- a run, read-only ---- */

const char *run_id(const struct run *r) { return r->id; }
const char *run_instance_id(const struct run *r) { return r->instance_id; }
const char *run_dir(const struct run *r) { return r->dir; }
const char *run_file(const struct run *r) { return r->file ? r->file : "agent.yaml"; }
const char *run_tenant(const struct run *r) { return r->tenant; }
const struct spec *run_spec(const struct run *r) { return r->spec; }
const struct cgroup_inst *run_cgroup(const struct run *r) { return &r->cg; }
uint64_t run_cgid(const struct run *r) { return r->cg.id; }
enum run_status run_status(const struct run *r) { return r->status; }
const char *run_reason(const struct run *r) { return r->reason; }
int run_exit_code(const struct run *r) { return r->exit_code; }
int64_t run_created(const struct run *r) { return r->created; }
int64_t run_finished(const struct run *r) { return r->finished; }
bool run_ending(const struct run *r) { return r->ending_set; }
const char *run_ref(const struct run *r) { return r->ref; }
int64_t run_epoch(const struct run *r) { return r->epoch; }
bool run_fenced(const struct run *r) { return r->fenced; }
struct runs *run_table(const struct run *r) { return r->t; }
void *run_slot(const struct run *r, int slot) { return slot >= 0 && slot < RUNS_MAX_SUBS ? r->slot[slot] : NULL; }
void *run_runtime_state(const struct run *r) { return r->rt_state; }
void run_set_runtime_state(struct run *r, void *v) { r->rt_state = v; }
const struct runtime_ops *run_runtime(const struct run *r) { return r->rt_ops; }
void run_set_network(struct run *r, bool own_netns, uint32_t dns_ip4)
{
	r->own_netns = own_netns;
	r->dns_ip4 = dns_ip4;
}

bool run_own_netns(const struct run *r) { return r->own_netns; }
uint32_t run_dns_ip4(const struct run *r) { return r->dns_ip4; }
const char *run_pool(const struct run *r) { return r->pool[0] ? r->pool : NULL; }
int64_t run_pool_waited_ms(const struct run *r) { return r->pool_waited_ms; }
const char *run_pool_fallback(const struct run *r) { return r->pool_fallback[0] ? r->pool_fallback : NULL; }
struct run_prefetch *run_prefetch(const struct run *r) { return r->prefetch; }

int run_take_harness_fd(struct run *r)
{
	int fd = r->claim_open ? r->claim.harness_fd : -1;

	if (r->claim_open)
		r->claim.harness_fd = -1;
	return fd;
}

void run_set_slot(struct run *r, int slot, void *v)
{
	if (slot >= 0 && slot < RUNS_MAX_SUBS)
		r->slot[slot] = v;
}

struct run *run_alloc(struct runs *t)
{
	struct run *r = calloc(1, sizeof(*r));

	if (r)
		r->t = t;
	return r;
}

/* A live run's count is read now: a process may have been OOM-killed while the run
 * goes on (Kubernetes reports such a container OOMKilled too). */
uint64_t run_oom_kills(const struct run *r)
{
	struct cgroup_stats st;

	if (!run_status_final(r->status) && r->cg_made && cgroup_inst_stats(&r->cg, &st, NULL) == 0)
		return st.oom_kills;
	return r->oom_kills;
}

json_t *run_json(const struct run *r)
{
	json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:I}", "id", r->id, "instance_id",
			      r->instance_id, "name", r->spec ? r->spec->name : "",
			      "status", run_status_name(r->status), "created", (json_int_t)r->created);

	if (!j)
		return NULL;
	if (r->reason[0])
		json_object_set_new(j, "reason", json_string(r->reason));
	if (run_status_final(r->status)) {
		json_object_set_new(j, "exit_code", json_integer(r->exit_code));
		json_object_set_new(j, "finished", json_integer(r->finished));
	}
	json_object_set_new(j, "tenant", json_string(r->tenant));
	if (r->ref[0]) {
		json_object_set_new(j, "ref", json_string(r->ref));
		json_object_set_new(j, "epoch", json_integer(r->epoch));
	}
	if (r->fenced)
		json_object_set_new(j, "fenced", json_true());
	if (r->pool[0])
		json_object_set_new(j, "pool", json_pack("{s:s, s:I, s:{s:I, s:I, s:I}}", "name", r->pool,
							 "waited_ms", (json_int_t)r->pool_waited_ms, "claim_us",
							 "admission", (json_int_t)r->stage_us[0], "prepare",
							 (json_int_t)r->stage_us[1], "exec", (json_int_t)r->stage_us[2]));
	else if (r->pool_fallback[0])
		json_object_set_new(j, "pool", json_pack("{s:s}", "fallback", r->pool_fallback));
	json_object_set_new(j, "cgroup_id", json_integer((json_int_t)r->cg.id));
	json_object_set_new(j, "oom_kills", json_integer((json_int_t)run_oom_kills(r)));
	if (r->rt_ops) {
		json_object_set_new(j, "runtime", json_string(r->rt_ops->name));
		if (r->rt_ops->json)
			r->rt_ops->json(r->rt, r, j);
	}
	RUN_HOOKS(r->t, json, r, j);
	return j;
}


void run_record_save(struct run *r)
{
	char path[PATH_MAX + 16];
	json_t *j = run_json(r);
	char *s;

	if (j) {
		json_object_set_new(j, "file", json_string(r->file ? r->file : ""));
		json_object_set_new(j, "cgroup", json_string(r->cg.name));
	}
	s = j ? json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
	json_decref(j);
	snprintf(path, sizeof(path), "%s/run.json", r->dir);
	if (!s || util_write_file_atomic(path, s, strlen(s)) < 0)
		log_error("run %s: cannot write %s: the record of this run may be stale", r->id, path);
	free(s);
}

static const char *jstr(json_t *j, const char *k)
{
	return json_string_value(json_object_get(j, k)) ?: "";
}

/* A record from before runtimes had names: a "handler" means an OCI spawn. */
static const char *runtime_name(json_t *j)
{
	if (json_is_string(json_object_get(j, "runtime")))
		return jstr(j, "runtime");
	return json_object_get(j, "handler") ? "oci" : "process";
}

struct run *run_record_load(struct runs *t, const char *id)
{
	char path[PATH_MAX + 64], *buf = NULL;
	struct spec_errors errs = { 0 };
	struct run *r;
	size_t len;
	json_t *j;
	int st;

	if (strlen(id) >= sizeof(r->id) || !(r = run_alloc(t)))
		return NULL;
	snprintf(r->dir, sizeof(r->dir), "%s/%s", t->runs_dir, id);
	snprintf(path, sizeof(path), "%s/run.json", r->dir);
	if (!(j = json_load_file(path, 0, NULL))) {
		free(r);
		return NULL;
	}
	snprintf(r->id, sizeof(r->id), "%s", id);
	snprintf(r->instance_id, sizeof(r->instance_id), "%s", jstr(j, "instance_id"));
	snprintf(r->cg.name, sizeof(r->cg.name), "%s", jstr(j, "cgroup"));
	snprintf(r->reason, sizeof(r->reason), "%s", jstr(j, "reason"));
	snprintf(r->tenant, sizeof(r->tenant), "%s", jstr(j, "tenant")[0] ? jstr(j, "tenant") :
		 t->o.tenant ? t->o.tenant : "default");
	r->file = strdup(jstr(j, "file")[0] ? jstr(j, "file") : "agent.yaml");
	snprintf(r->ref, sizeof(r->ref), "%s", jstr(j, "ref"));
	r->epoch = json_integer_value(json_object_get(j, "epoch"));
	r->fenced = json_is_true(json_object_get(j, "fenced"));
	st = run_status_from_name(jstr(j, "status"));
	r->status = st < 0 ? RUN_FAILED : (enum run_status)st;
	r->exit_code = (int)json_integer_value(json_object_get(j, "exit_code"));
	r->created = json_integer_value(json_object_get(j, "created"));
	r->finished = json_integer_value(json_object_get(j, "finished"));
	r->cg.id = (uint64_t)json_integer_value(json_object_get(j, "cgroup_id"));
	r->oom_kills = (uint64_t)json_integer_value(json_object_get(j, "oom_kills"));
	{
		json_t *p = json_object_get(j, "pool"), *st = json_object_get(p, "claim_us");

		snprintf(r->pool, sizeof(r->pool), "%s", jstr(p, "name"));
		snprintf(r->pool_fallback, sizeof(r->pool_fallback), "%s", jstr(p, "fallback"));
		r->pool_waited_ms = json_integer_value(json_object_get(p, "waited_ms"));
		r->stage_us[0] = (uint64_t)json_integer_value(json_object_get(st, "admission"));
		r->stage_us[1] = (uint64_t)json_integer_value(json_object_get(st, "prepare"));
		r->stage_us[2] = (uint64_t)json_integer_value(json_object_get(st, "exec"));
	}
	runtimes_named(t->o.runtimes, runtime_name(j), &r->rt_ops, &r->rt);
	json_decref(j);

	snprintf(path, sizeof(path), "%s/spec.yaml", r->dir);
	if (util_read_file(path, &buf, &len) == 0) {
		if (spec_parse(r->file, buf, len, &r->spec, &errs) < 0)
			spec_errors_free(&errs);
		free(buf);
	}
	return r;
}
