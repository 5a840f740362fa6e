/* state.c: planes and runs as the database holds them (the only copy: any replica may
 * have changed a row since this one last read it), their rows turned into structs,
 * and their JSON for the operator API. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cp.h"
#include "lantern/spec.h"

static const char *const state_names[] = {
	[RS_QUEUED] = "queued",       [RS_ASSIGNED] = "assigned", [RS_ACCEPTED] = "accepted",
	[RS_RUNNING] = "running",     [RS_SUCCEEDED] = "succeeded", [RS_FAILED] = "failed",
	[RS_CANCELLED] = "cancelled", [RS_TIMED_OUT] = "timed_out",
};

int64_t cp_now_us(void)
{
	return (int64_t)(util_now_ns(CLOCK_REALTIME) / 1000);
}

int64_t cp_mono_ms(void)
{
	return (int64_t)(util_now_ns(CLOCK_MONOTONIC) / 1000000);
}

const char *cp_state_name(enum run_state s)
{
	return s < ARRAY_SIZE(state_names) ? state_names[s] : "unknown";
}

bool cp_state_final(enum run_state s)
{
	return s >= RS_SUCCEEDED;
}

enum run_state cp_state_from(const char *n)
{
	for (size_t i = 0; i < ARRAY_SIZE(state_names); i++)
		if (n && !strcmp(n, state_names[i]))
			return (enum run_state)i;
	return RS_FAILED;
}

const char *cp_i64(char *buf, size_t len, int64_t v)
{
	snprintf(buf, len, "%lld", (long long)v);
	return buf;
}

static int64_t i64(const char *v)
{
	return v ? atoll(v) : 0;
}

/* ---- planes ---- */

#define PLANE_COLS "id, tenant_id, name, token_used, hostname, classes, max_runs, draining, down, " \
		   "journal_store, stream_replica, hb_us, reported_active, queue_depth, cpu_pct, " \
		   "mem_pct, cap_cpu, cap_memory, cap_scratch, cap_slots, cap_us, placed, node_key, region, " \
		   "self_draining"

static void plane_row(struct plane *p, int ncol, char **v)
{
	if (ncol < 25)
		return;
	snprintf(p->id, sizeof(p->id), "%s", v[0]);
	snprintf(p->tenant, sizeof(p->tenant), "%s", v[1]);
	snprintf(p->name, sizeof(p->name), "%s", v[2] ?: "");
	p->registered = i64(v[3]);
	snprintf(p->hostname, sizeof(p->hostname), "%s", v[4] ?: "");
	snprintf(p->classes, sizeof(p->classes), "%s", v[5] ?: "");
	p->max_runs = (int)i64(v[6]);
	p->draining = i64(v[7]);
	p->down = i64(v[8]);
	snprintf(p->journal_store, sizeof(p->journal_store), "%s", v[9] ?: "");
	snprintf(p->stream_replica, sizeof(p->stream_replica), "%s", v[10] ?: "");
	p->hb_us = i64(v[11]);
	p->reported_active = (int)i64(v[12]);
	p->queue_depth = (int)i64(v[13]);
	p->cpu_pct = v[14] ? atof(v[14]) : 0;
	p->mem_pct = v[15] ? atof(v[15]) : 0;
	p->cap_cpu = i64(v[16]);
	p->cap_memory = i64(v[17]);
	p->cap_scratch = i64(v[18]);
	p->cap_slots = (int)i64(v[19]);
	p->cap_us = i64(v[20]);
	p->placed = (uint64_t)i64(v[21]);
	snprintf(p->node_key, sizeof(p->node_key), "%s", v[22] ?: "");
	snprintf(p->region, sizeof(p->region), "%s", v[23] ?: "");
	p->self_draining = i64(v[24]);
}

struct one_plane {
	struct plane *p;
	bool found;
};

static void one_plane_cb(void *arg, int ncol, char **v)
{
	struct one_plane *o = arg;

	plane_row(o->p, ncol, v);
	o->found = true;
}

int state_plane(struct cp *cp, const char *id, struct plane *p, struct lerr *e)
{
	struct one_plane o = { p, false };
	const char *v[] = { id };
	int err;

	memset(p, 0, sizeof(*p));
	err = db_query(cp->db, "SELECT " PLANE_COLS " FROM data_planes WHERE id = $1", 1, v,
		       one_plane_cb, &o, e);
	return err < 0 ? err : o.found;
}

static void planes_cb(void *arg, int ncol, char **v)
{
	struct plane **list = arg, *p = calloc(1, sizeof(*p));

	if (!p)
		return;
	plane_row(p, ncol, v);
	p->next = *list;
	*list = p;
}

int state_planes(struct cp *cp, struct plane **out, struct lerr *e)
{
	*out = NULL;
	return db_query(cp->db, "SELECT " PLANE_COLS " FROM data_planes ORDER BY id DESC", 0, NULL,
			planes_cb, out, e);
}

void state_planes_free(struct plane *p)
{
	while (p) {
		struct plane *n = p->next;

		free(p);
		p = n;
	}
}

/* Length of the valid UTF-8 sequence at s (Unicode 15, table 3-7: no overlong forms,
 * no surrogates, nothing past U+10FFFF), or 0. */
static size_t utf8_seq(const unsigned char *s)
{
	unsigned char lo = 0x80, hi = 0xbf;
	size_t n;

	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		n = 2;
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
		n = 3;
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
		n = 4;
	else
		return 0;
	if (s[0] == 0xe0)
		lo = 0xa0;
	else if (s[0] == 0xed)
		hi = 0x9f;
	else if (s[0] == 0xf0)
		lo = 0x90;
	else if (s[0] == 0xf4)
		hi = 0x8f;
	if (s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < n; i++)
		if (s[i] < 0x80 || s[i] > 0xbf)
			return 0;
	return n;
}

/* s as a JSON string, every byte that is not part of valid UTF-8 shown as '?'. Names,
 * hostnames and details come from operators and nodes (protobuf-c does not check that a
 * string is UTF-8) and are cut to fit their fields, maybe inside a character; a string
 * jansson refuses would make the whole plane or run vanish from the operator API. */
static json_t *text(const char *s)
{
	json_t *j = json_string(s);
	unsigned char *c;

	if (j || !(c = (unsigned char *)strdup(s)))
		return j;
	for (size_t i = 0, n; c[i]; i += n)
		if (!(n = utf8_seq(c + i))) {
			c[i] = '?';
			n = 1;
		}
	j = json_string((char *)c);
	free(c);
	return j;
}

json_t *state_plane_json(const struct plane *p, int64_t now_us, int64_t live_after_us)
{
	json_t *j = json_pack("{s:o, s:o, s:o, s:o, s:o, s:i, s:b, s:b, s:b, s:b, s:i, s:i, s:f, s:f, s:I, "
			      "s:o, s:o}",
			      "id", text(p->id), "tenant_id", text(p->tenant), "name", text(p->name),
			      "hostname", text(p->hostname), "isolation_classes", text(p->classes),
			      "max_runs", p->max_runs,
			      "registered", p->registered, "draining", p->draining, "down", p->down,
			      "connected", p->stream_replica[0] != '\0',
			      "reported_active_runs", p->reported_active, "queue_depth", p->queue_depth,
			      "cpu_pct", p->cpu_pct, "mem_pct", p->mem_pct,
			      "ms_since_heartbeat", (json_int_t)(p->hb_us ? (now_us - p->hb_us) / 1000 : -1),
			      "journal_store", text(p->journal_store), "stream_replica", text(p->stream_replica));

	json_object_set_new(j, "region", text(p->region));
	json_object_set_new(j, "node_key", text(p->node_key));
	json_object_set_new(j, "capacity", json_pack("{s:I, s:I, s:I, s:i}", "cpu_millis",
						     (json_int_t)p->cap_cpu, "memory_bytes",
						     (json_int_t)p->cap_memory, "scratch_bytes",
						     (json_int_t)p->cap_scratch, "free_slots", p->cap_slots));
	json_object_set_new(j, "live", json_boolean(p->hb_us >= live_after_us));
	return j;
}

/* ---- runs ---- */

/* What a run's spec says about placement and its identity token (regions, agent
 * version, timeout): read from the spec each time the row is, nothing to keep in step. */
void cp_run_spec_info(struct cprun *r)
{
	json_t *j = json_loads(r->config_json ? r->config_json : "{}", 0, NULL);
	json_t *spec = json_object_get(j, "spec"), *labels = json_object_get(json_object_get(j, "metadata"), "labels");
	const char *fb = json_string_value(json_object_get(labels, SPEC_REGION_FALLBACK_LABEL));
	const char *av = json_string_value(json_object_get(labels, "lantern.dev/agent-version"));
	json_t *v;
	size_t i;

	r->regions[0] = '\0';
	json_array_foreach(json_object_get(spec, "preferred_regions"), i, v) {
		size_t l = strlen(r->regions);

		snprintf(r->regions + l, sizeof(r->regions) - l, "%s%s", l ? "," : "", json_string_value(v) ?: "");
	}
	r->region_fallback = fb && !strcmp(fb, "allow");
	snprintf(r->agent_version, sizeof(r->agent_version), "%s",
		 av ? av : json_string_value(json_object_get(json_object_get(j, "metadata"), "name")) ?: "");
	r->timeout_s = json_number_value(json_object_get(json_object_get(spec, "limits"), "timeout"));
	json_decref(j);
}


#define RUN_COLS "id, tenant_id, isolation, pin, idempotency_key, config_json, input_json, status, " \
		 "plane_id, epoch, detail, output_json, cost_usd, tokens_in, tokens_out, duration_ms, " \
		 "cancel_requested, created_us, assigned_us, accepted_us, running_us, finished_us, " \
		 "cpu_millis, memory_bytes, scratch_bytes, resume, lost_plane, journal_store, resumes, " \
		 "lease_expires_us, not_before_us, queue_reason"

static void run_row(struct cprun *r, int ncol, char **v)
{
	if (ncol < 32)
		return;
	snprintf(r->id, sizeof(r->id), "%s", v[0]);
	snprintf(r->tenant, sizeof(r->tenant), "%s", v[1]);
	snprintf(r->isolation, sizeof(r->isolation), "%s", v[2]);
	snprintf(r->pin, sizeof(r->pin), "%s", v[3] ?: "");
	snprintf(r->idem, sizeof(r->idem), "%s", v[4] ?: "");
	r->config_json = strdup(v[5] ?: "{}");
	r->input_json = strdup(v[6] ?: "");
	r->state = cp_state_from(v[7]);
	snprintf(r->plane, sizeof(r->plane), "%s", v[8] ?: "");
	r->epoch = i64(v[9]);
	snprintf(r->detail, sizeof(r->detail), "%s", v[10] ?: "");
	r->output_json = strdup(v[11] ?: "");
	r->cost_usd = v[12] ? atof(v[12]) : 0;
	r->tokens_in = i64(v[13]);
	r->tokens_out = i64(v[14]);
	r->duration_ms = i64(v[15]);
	r->cancel_requested = i64(v[16]);
	r->created_us = i64(v[17]);
	r->assigned_us = i64(v[18]);
	r->accepted_us = i64(v[19]);
	r->running_us = i64(v[20]);
	r->finished_us = i64(v[21]);
	r->cpu_millis = i64(v[22]);
	r->memory_bytes = i64(v[23]);
	r->scratch_bytes = i64(v[24]);
	r->resume = i64(v[25]);
	snprintf(r->lost_plane, sizeof(r->lost_plane), "%s", v[26] ?: "");
	snprintf(r->store, sizeof(r->store), "%s", v[27] ?: "");
	r->resumes = (int)i64(v[28]);
	r->lease_expires_us = i64(v[29]);
	r->not_before_us = i64(v[30]);
	snprintf(r->queue_reason, sizeof(r->queue_reason), "%s", v[31] ?: "");
	cp_run_spec_info(r);
}

void state_run_clear(struct cp *cp, struct cprun *r)
{
	free(r->config_json);
	free(r->input_json);
	free(r->output_json);
	memset(r, 0, sizeof(*r));
}

struct one_run {
	struct cprun *r;
	bool found;
};

static void one_run_cb(void *arg, int ncol, char **v)
{
	struct one_run *o = arg;

	if (o->found)
		return;
	run_row(o->r, ncol, v);
	o->found = true;
}

int state_run(struct cp *cp, const char *id, struct cprun *r, struct lerr *e)
{
	struct one_run o = { r, false };
	const char *v[] = { id };
	int err;

	memset(r, 0, sizeof(*r));
	err = db_query(cp->db, "SELECT " RUN_COLS " FROM runs WHERE id = $1", 1, v, one_run_cb, &o, e);
	return err < 0 ? err : o.found;
}

int state_run_by_idem(struct cp *cp, const char *tenant, const char *idem, struct cprun *r,
		      struct lerr *e)
{
	struct one_run o = { r, false };
	const char *v[] = { tenant, idem };
	int err;

	memset(r, 0, sizeof(*r));
	err = db_query(cp->db, "SELECT " RUN_COLS " FROM runs WHERE tenant_id = $1 AND "
		       "idempotency_key = $2", 2, v, one_run_cb, &o, e);
	return err < 0 ? err : o.found;
}

struct many_runs {
	struct cp *cp;
	void (*cb)(void *arg, struct cprun *r);
	void *arg;
};

static void many_cb(void *arg, int ncol, char **v)
{
	struct many_runs *m = arg;
	struct cprun r = { 0 };

	run_row(&r, ncol, v);
	m->cb(m->arg, &r);
	state_run_clear(m->cp, &r);
}

int state_runs(struct cp *cp, const char *where, int n, const char *const *p,
	       void (*cb)(void *arg, struct cprun *r), void *arg, struct lerr *e)
{
	struct many_runs m = { cp, cb, arg };
	char sql[2048];

	snprintf(sql, sizeof(sql), "SELECT " RUN_COLS " FROM runs WHERE %s", where);
	return db_query(cp->db, sql, n, p, many_cb, &m, e);
}

int state_run_insert(struct cp *cp, const struct cprun *r, struct lerr *e)
{
	char cr[24], cpu[24], mem[24], scr[24];
	const char *v[] = {
		r->id, r->tenant, r->isolation, r->pin, r->idem, r->config_json,
		r->input_json ? r->input_json : "", I64(cr, r->created_us), I64(cpu, r->cpu_millis),
		I64(mem, r->memory_bytes), I64(scr, r->scratch_bytes),
	};

	return db_exec(cp->db, "INSERT INTO runs (id, tenant_id, isolation, pin, idempotency_key, "
		       "config_json, input_json, status, created_us, cpu_millis, memory_bytes, "
		       "scratch_bytes) VALUES ($1, $2, $3, $4, $5, $6, $7, 'queued', $8, $9, $10, $11)",
		       (int)ARRAY_SIZE(v), v, e);
}

json_t *state_run_json(const struct cprun *r)
{
	json_t *j = json_pack("{s:o, s:o, s:o, s:s, s:o, s:I, s:o, s:f, s:I, s:I, s:I, s:b}",
			      "id", text(r->id), "tenant_id", text(r->tenant), "isolation", text(r->isolation),
			      "status", cp_state_name(r->state), "plane_id", text(r->plane),
			      "epoch", (json_int_t)r->epoch, "detail", text(r->detail), "cost_usd", r->cost_usd,
			      "tokens_in", (json_int_t)r->tokens_in, "tokens_out", (json_int_t)r->tokens_out,
			      "duration_ms", (json_int_t)r->duration_ms, "cancel_requested",
			      r->cancel_requested);
	json_t *ts = json_pack("{s:I, s:I, s:I, s:I, s:I}", "created", (json_int_t)r->created_us,
			       "assigned", (json_int_t)r->assigned_us, "accepted",
			       (json_int_t)r->accepted_us, "running", (json_int_t)r->running_us,
			       "finished", (json_int_t)r->finished_us);

	json_object_set_new(j, "times_us", ts);
	json_object_set_new(j, "limits", json_pack("{s:I, s:I, s:I}", "cpu_millis",
						   (json_int_t)r->cpu_millis, "memory_bytes",
						   (json_int_t)r->memory_bytes, "scratch_bytes",
						   (json_int_t)r->scratch_bytes));
	if (r->output_json && r->output_json[0])
		json_object_set_new(j, "output_json", text(r->output_json));
	if (r->pin[0])
		json_object_set_new(j, "pin", text(r->pin));
	if (r->idem[0])
		json_object_set_new(j, "idempotency_key", text(r->idem));
	if (r->regions[0])
		json_object_set_new(j, "preferred_regions", text(r->regions));
	if (r->state == RS_QUEUED)
		json_object_set_new(j, "why_queued", text(r->queue_reason[0] ? r->queue_reason :
								 "waiting for the next placement"));
	if (r->resume)
		json_object_set_new(j, "resume", json_true());
	if (r->resumes) {
		json_object_set_new(j, "resumes", json_integer(r->resumes));
		json_object_set_new(j, "resumed_from", text(r->lost_plane));
	}
	if (!cp_state_final(r->state) && r->lease_expires_us)
		json_object_set_new(j, "lease_expires_us", json_integer(r->lease_expires_us));
	return j;
}
