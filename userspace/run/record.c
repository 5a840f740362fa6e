/* record.c: a run's record on disk, STATE/runs/<id>/run.json (what run_json says, plus
 * the spec's file name and the instance cgroup's name), and loading a run from it and
 * its spec.yaml after a restart. Subscribers keep their own files beside it. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "run_internal.h"
#include "lantern/util.h"

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
	st = run_status_from_name(jstr(j, "status"));
	r->status = st < 0 ? RUN_FAILED : (enum run_status)st;
	r->exit_code = (int)json_integer_value(json_object_get(j, "exit_code"));
	r->created = json_integer_value(json_object_get(j, "created"));
	r->finished = json_integer_value(json_object_get(j, "finished"));
	r->cg.id = (uint64_t)json_integer_value(json_object_get(j, "cgroup_id"));
	r->oom_kills = (uint64_t)json_integer_value(json_object_get(j, "oom_kills"));
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
