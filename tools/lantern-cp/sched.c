/* sched.c: where runs go. A run goes to a registered, live, non-draining plane of its
 * tenant that advertised the run's isolation class and has room, least loaded first
 * (ties: the plane that took the fewest runs); a run with spec.preferred_regions goes
 * to a plane in one of them, and elsewhere only when none fits and its spec allows it
 * (metadata.labels["lantern.dev/region-fallback"]: allow); when none fits it waits in
 * the queue, in submission order. A plane that misses heartbeats is marked down and its unfinished
 * runs fail with that reason. Every change is written through to the database.
 *
 * Each placement bumps the run's fencing epoch; what a plane reports under an older
 * epoch (a plane that came back after its run was ended elsewhere) is ignored. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cp.h"
#include "lantern/v1/dataplane.pb-c.h"

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

static enum run_state state_from(const char *n)
{
	for (size_t i = 0; i < ARRAY_SIZE(state_names); i++)
		if (n && !strcmp(n, state_names[i]))
			return (enum run_state)i;
	return RS_FAILED;
}

struct plane *cp_plane(struct cp *cp, const char *id)
{
	for (struct plane *p = cp->planes; p; p = p->next)
		if (!strcmp(p->id, id))
			return p;
	return NULL;
}

struct cprun *cp_run(struct cp *cp, const char *id)
{
	for (struct cprun *r = cp->runs; r; r = r->next)
		if (!strcmp(r->id, id))
			return r;
	return NULL;
}

#define I64(buf, v) (snprintf(buf, sizeof(buf), "%lld", (long long)(v)), buf)

void cp_save_plane(struct cp *cp, struct plane *p)
{
	char mr[24], dr[4], dn[4], hb[24], rg[4];
	const char *v[] = { p->id, p->hostname, p->classes, I64(mr, p->max_runs),
			    I64(dr, p->draining), I64(dn, p->down), I64(hb, time(NULL)), I64(rg, p->registered),
			    p->node_key, p->region };
	struct lerr e;

	if (db_exec(cp->db, "UPDATE data_planes SET hostname = $2, classes = $3, max_runs = $4, "
		    "draining = $5, down = $6, last_heartbeat = $7, token_used = $8, node_key = $9, "
		    "region = $10 WHERE id = $1", 10, v, &e) < 0)
		log_error("plane %s: not saved: %s", p->id, e.msg);
}

void cp_save_run(struct cp *cp, struct cprun *r)
{
	char ep[24], cost[40], ti[24], to[24], du[24], cr[24], as[24], ac[24], ru[24], fi[24], cx[4];
	const char *v[] = {
		r->id, r->tenant, r->isolation, r->pin, r->idem, r->config_json,
		r->input_json ? r->input_json : "", cp_state_name(r->state), r->plane, I64(ep, r->epoch),
		r->detail, r->output_json ? r->output_json : "",
		(snprintf(cost, sizeof(cost), "%.17g", r->cost_usd), cost), I64(ti, r->tokens_in),
		I64(to, r->tokens_out), I64(du, r->duration_ms), I64(cx, r->cancel_requested),
		I64(cr, r->created_us), I64(as, r->assigned_us), I64(ac, r->accepted_us),
		I64(ru, r->running_us), I64(fi, r->finished_us),
	};
	struct lerr e;

	if (db_exec(cp->db,
		    "INSERT INTO runs (id, tenant_id, isolation, pin, idempotency_key, config_json, "
		    "input_json, status, plane_id, epoch, detail, output_json, cost_usd, tokens_in, "
		    "tokens_out, duration_ms, cancel_requested, created_us, assigned_us, accepted_us, "
		    "running_us, finished_us) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, "
		    "$13, $14, $15, $16, $17, $18, $19, $20, $21, $22) ON CONFLICT (id) DO UPDATE SET "
		    "status = excluded.status, plane_id = excluded.plane_id, epoch = excluded.epoch, "
		    "detail = excluded.detail, output_json = excluded.output_json, "
		    "cost_usd = excluded.cost_usd, tokens_in = excluded.tokens_in, "
		    "tokens_out = excluded.tokens_out, duration_ms = excluded.duration_ms, "
		    "cancel_requested = excluded.cancel_requested, assigned_us = excluded.assigned_us, "
		    "accepted_us = excluded.accepted_us, running_us = excluded.running_us, "
		    "finished_us = excluded.finished_us",
		    (int)ARRAY_SIZE(v), v, &e) < 0)
		log_error("run %s: not saved: %s", r->id, e.msg);
}

static void load_plane(void *arg, int ncol, char **v)
{
	struct cp *cp = arg;
	struct plane *p = calloc(1, sizeof(*p));

	if (!p || ncol < 11)
		return;
	snprintf(p->id, sizeof(p->id), "%s", v[0]);
	snprintf(p->tenant, sizeof(p->tenant), "%s", v[1]);
	snprintf(p->name, sizeof(p->name), "%s", v[2] ?: "");
	p->registered = v[3] && atoi(v[3]);
	snprintf(p->hostname, sizeof(p->hostname), "%s", v[4] ?: "");
	snprintf(p->classes, sizeof(p->classes), "%s", v[5] ?: "");
	p->max_runs = v[6] ? atoi(v[6]) : 0;
	p->draining = v[7] && atoi(v[7]);
	p->down = v[8] && atoi(v[8]);
	snprintf(p->node_key, sizeof(p->node_key), "%s", v[9] ?: "");
	snprintf(p->region, sizeof(p->region), "%s", v[10] ?: "");
	/* a restarted control plane gives every plane a full heartbeat window to return */
	p->last_hb_ms = cp_mono_ms();
	p->next = cp->planes;
	cp->planes = p;
}

static void load_run(void *arg, int ncol, char **v)
{
	struct cp *cp = arg;
	struct cprun *r = calloc(1, sizeof(*r));

	if (!r || ncol < 22)
		return;
	snprintf(r->id, sizeof(r->id), "%s", v[0]);
	snprintf(r->tenant, sizeof(r->tenant), "%s", v[1]);
	snprintf(r->isolation, sizeof(r->isolation), "%s", v[2]);
	snprintf(r->pin, sizeof(r->pin), "%s", v[3] ?: "");
	snprintf(r->idem, sizeof(r->idem), "%s", v[4] ?: "");
	r->config_json = strdup(v[5] ?: "{}");
	r->input_json = strdup(v[6] ?: "");
	r->state = state_from(v[7]);
	snprintf(r->plane, sizeof(r->plane), "%s", v[8] ?: "");
	r->epoch = v[9] ? atoll(v[9]) : 0;
	snprintf(r->detail, sizeof(r->detail), "%s", v[10] ?: "");
	r->output_json = strdup(v[11] ?: "");
	r->cost_usd = v[12] ? atof(v[12]) : 0;
	r->tokens_in = v[13] ? atoll(v[13]) : 0;
	r->tokens_out = v[14] ? atoll(v[14]) : 0;
	r->duration_ms = v[15] ? atoll(v[15]) : 0;
	r->cancel_requested = v[16] && atoi(v[16]);
	r->created_us = v[17] ? atoll(v[17]) : 0;
	r->assigned_us = v[18] ? atoll(v[18]) : 0;
	r->accepted_us = v[19] ? atoll(v[19]) : 0;
	r->running_us = v[20] ? atoll(v[20]) : 0;
	r->finished_us = v[21] ? atoll(v[21]) : 0;
	cp_run_spec_info(r);
	if (cp->runs_tail)
		cp->runs_tail->next = r;
	else
		cp->runs = r;
	cp->runs_tail = r;
}

int cp_load(struct cp *cp, struct lerr *e)
{
	int err = db_query(cp->db, "SELECT id, tenant_id, name, token_used, hostname, classes, "
			   "max_runs, draining, down, node_key, region FROM data_planes", 0, NULL, load_plane, cp, e);

	if (err < 0)
		return err;
	err = db_query(cp->db, "SELECT id, tenant_id, isolation, pin, idempotency_key, config_json, "
		       "input_json, status, plane_id, epoch, detail, output_json, cost_usd, tokens_in, "
		       "tokens_out, duration_ms, cancel_requested, created_us, assigned_us, accepted_us, "
		       "running_us, finished_us FROM runs ORDER BY created_us", 0, NULL, load_run, cp, e);
	if (err < 0)
		return err;
	for (struct cprun *r = cp->runs; r; r = r->next) {
		struct plane *p = r->plane[0] ? cp_plane(cp, r->plane) : NULL;

		if (!cp_state_final(r->state) && r->state != RS_QUEUED && p)
			p->active++;
	}
	return 0;
}

static bool has_class(const struct plane *p, const char *cls)
{
	size_t n = strlen(cls);

	for (const char *c = p->classes; (c = strstr(c, cls)); c += n)
		if ((c == p->classes || c[-1] == ',') && (c[n] == ',' || c[n] == '\0'))
			return true;
	return false;
}

static int plane_load(const struct plane *p)
{
	return p->active > p->reported_active ? p->active : p->reported_active;
}

static bool plane_usable(const struct plane *p)
{
	return p->registered && !p->down && !p->draining && p->stream &&
	       (!p->max_runs || plane_load(p) < p->max_runs);
}

static bool in_regions(const struct plane *p, const char *regions)
{
	size_t n = strlen(p->region);

	if (!n)
		return false;
	for (const char *c = regions; (c = strstr(c, p->region)); c += n)
		if ((c == regions || c[-1] == ',') && (c[n] == ',' || c[n] == '\0'))
			return true;
	return false;
}

/* The best plane for r among those in its preferred regions (all when it has none). */
static struct plane *place_in(struct cp *cp, const struct cprun *r, bool any_region)
{
	struct plane *best = NULL;

	for (struct plane *p = cp->planes; p; p = p->next) {
		if (strcmp(p->tenant, r->tenant) || !plane_usable(p) || !has_class(p, r->isolation) ||
		    (!any_region && r->regions[0] && !in_regions(p, r->regions)))
			continue;
		if (!best || plane_load(p) < plane_load(best) ||
		    (plane_load(p) == plane_load(best) && p->placed < best->placed))
			best = p;
	}
	return best;
}

static struct plane *place(struct cp *cp, const struct cprun *r)
{
	struct plane *best;

	if (r->pin[0]) {
		/* an operator's pin skips the class filter: the node's admission decides */
		struct plane *p = cp_plane(cp, r->pin);
		return p && !strcmp(p->tenant, r->tenant) && plane_usable(p) ? p : NULL;
	}
	if (!(best = place_in(cp, r, false)) && r->regions[0] && r->region_fallback)
		best = place_in(cp, r, true);
	return best;
}

void cp_send_assignment(struct cp *cp, struct cprun *r)
{
	struct plane *p = cp_plane(cp, r->plane);
	Lantern__V1__DpRunAssignment a = LANTERN__V1__DP_RUN_ASSIGNMENT__INIT;
	Lantern__V1__DpRunStreamServerMsg m = LANTERN__V1__DP_RUN_STREAM_SERVER_MSG__INIT;
	uint8_t *buf;
	size_t len;

	if (!p || !p->stream)
		return;
	a.run_id = r->id;
	a.agent_version_id = (char *)r->agent_version;
	a.tenant_id = r->tenant;
	a.config_json = r->config_json;
	a.input_json = r->input_json ? r->input_json : "";
	a.idempotency_key = r->idem[0] ? r->idem : r->id;
	a.fencing_epoch = r->epoch;
	m.msg_case = LANTERN__V1__DP_RUN_STREAM_SERVER_MSG__MSG_ASSIGNMENT;
	m.assignment = &a;
	len = lantern__v1__dp_run_stream_server_msg__get_packed_size(&m);
	buf = malloc(len ? len : 1);
	if (!buf)
		return;
	lantern__v1__dp_run_stream_server_msg__pack(&m, buf);
	cp_session_send(p->stream, buf, len);
	free(buf);
}

void cp_send_cancel(struct cp *cp, struct cprun *r)
{
	struct plane *p = cp_plane(cp, r->plane);
	Lantern__V1__DpCancelRun c = LANTERN__V1__DP_CANCEL_RUN__INIT;
	Lantern__V1__DpRunStreamServerMsg m = LANTERN__V1__DP_RUN_STREAM_SERVER_MSG__INIT;
	uint8_t buf[256];
	size_t len;

	if (!p || !p->stream)
		return;
	c.run_id = r->id;
	m.msg_case = LANTERN__V1__DP_RUN_STREAM_SERVER_MSG__MSG_CANCEL;
	m.cancel = &c;
	len = lantern__v1__dp_run_stream_server_msg__get_packed_size(&m);
	if (len > sizeof(buf))
		return;
	lantern__v1__dp_run_stream_server_msg__pack(&m, buf);
	cp_session_send(p->stream, buf, len);
}

void cp_dispatch(struct cp *cp)
{
	for (struct cprun *r = cp->runs; r; r = r->next) {
		struct plane *p;

		if (r->state != RS_QUEUED || (r->retry_ms && r->retry_ms > cp_mono_ms()))
			continue;
		if (!(p = place(cp, r)))
			continue;
		r->state = RS_ASSIGNED;
		snprintf(r->plane, sizeof(r->plane), "%s", p->id);
		r->epoch++;
		r->assigned_us = cp_now_us();
		p->active++;
		p->placed++;
		cp_save_run(cp, r);
		cp_send_assignment(cp, r);
	}
}

void cp_run_end(struct cp *cp, struct cprun *r, enum run_state st, const char *detail)
{
	struct plane *p = r->plane[0] ? cp_plane(cp, r->plane) : NULL;

	if (cp_state_final(r->state))
		return;
	if (p && r->state != RS_QUEUED && p->active > 0)
		p->active--;
	r->state = st;
	if (detail)
		snprintf(r->detail, sizeof(r->detail), "%s", detail);
	r->finished_us = cp_now_us();
	cp_save_run(cp, r);
	log_info("run %s: %s%s%s", r->id, cp_state_name(st), r->detail[0] ? ": " : "", r->detail);
}

void cp_requeue(struct cp *cp, struct cprun *r, const char *why)
{
	struct plane *p = cp_plane(cp, r->plane);

	if (cp_state_final(r->state) || r->state == RS_QUEUED)
		return;
	if (p && p->active > 0)
		p->active--;
	log_info("run %s: %s gave it back unstarted (%s): queued again", r->id, r->plane, why);
	r->state = RS_QUEUED;
	r->plane[0] = '\0';
	r->accepted_us = r->running_us = 0;
	r->retry_ms = cp_mono_ms() + 1000;
	cp_save_run(cp, r);
}

int cp_cancel(struct cp *cp, struct cprun *r)
{
	if (cp_state_final(r->state))
		return -EALREADY;
	if (r->state == RS_QUEUED) {
		cp_run_end(cp, r, RS_CANCELLED, "cancelled before placement");
		return 0;
	}
	/* the plane ends it and reports; a plane without a stream gets it on return */
	r->cancel_requested = true;
	cp_save_run(cp, r);
	cp_send_cancel(cp, r);
	return 0;
}

void cp_tick(struct cp *cp)
{
	static int64_t last_ping;
	int64_t now = cp_mono_ms();
	static int64_t last_dispatch;

	for (struct plane *p = cp->planes; p; p = p->next) {
		char why[256];

		if (!p->registered || p->down ||
		    now - p->last_hb_ms <= (int64_t)cp->o.down_after * cp->o.heartbeat_s * 1000)
			continue;
		p->down = true;
		cp_save_plane(cp, p);
		log_warn("plane %s (%s): down: no heartbeat for %lld ms", p->id, p->hostname,
			 (long long)(now - p->last_hb_ms));
		snprintf(why, sizeof(why), "data plane %s is down: it missed %d heartbeats", p->id,
			 cp->o.down_after);
		for (struct cprun *r = cp->runs; r; r = r->next)
			if (!cp_state_final(r->state) && r->state != RS_QUEUED && !strcmp(r->plane, p->id))
				cp_run_end(cp, r, RS_FAILED, why);
		if (p->stream)
			rpc_stream_finish(p->stream->s, RPC_UNAVAILABLE, "plane marked down");
	}
	if (now - last_ping >= (int64_t)cp->o.ping_s * 1000) {
		Lantern__V1__DpPing ping = LANTERN__V1__DP_PING__INIT;
		Lantern__V1__DpRunStreamServerMsg m = LANTERN__V1__DP_RUN_STREAM_SERVER_MSG__INIT;
		uint8_t buf[16];
		size_t len;

		m.msg_case = LANTERN__V1__DP_RUN_STREAM_SERVER_MSG__MSG_PING;
		m.ping = &ping;
		len = lantern__v1__dp_run_stream_server_msg__pack(&m, buf);
		for (struct session *s = cp->sessions; s; s = s->next)
			if (s->plane)
				cp_session_send(s, buf, len);
		last_ping = now;
	}
	/* places freed by planes gone down, requeued runs whose wait is over */
	if (now - last_dispatch >= 100) {
		cp_dispatch(cp);
		last_dispatch = now;
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

json_t *cp_run_json(const struct cprun *r)
{
	json_t *j = json_pack("{s:o, s:o, s:o, s:s, s:o, s:I, s:o, s:f, s:I, s:I, s:I, s:b}",
			      "id", text(r->id), "tenant_id", text(r->tenant), "isolation",
			      text(r->isolation), "status", cp_state_name(r->state), "plane_id",
			      text(r->plane), "epoch", (json_int_t)r->epoch, "detail", text(r->detail),
			      "cost_usd", r->cost_usd, "tokens_in", (json_int_t)r->tokens_in,
			      "tokens_out", (json_int_t)r->tokens_out, "duration_ms",
			      (json_int_t)r->duration_ms, "cancel_requested", r->cancel_requested);
	json_t *ts = json_pack("{s:I, s:I, s:I, s:I, s:I}", "created", (json_int_t)r->created_us,
			       "assigned", (json_int_t)r->assigned_us, "accepted",
			       (json_int_t)r->accepted_us, "running", (json_int_t)r->running_us,
			       "finished", (json_int_t)r->finished_us);

	json_object_set_new(j, "times_us", ts);
	if (r->output_json && r->output_json[0])
		json_object_set_new(j, "output_json", text(r->output_json));
	if (r->pin[0])
		json_object_set_new(j, "pin", text(r->pin));
	if (r->idem[0])
		json_object_set_new(j, "idempotency_key", text(r->idem));
	if (r->regions[0])
		json_object_set_new(j, "preferred_regions", text(r->regions));
	return j;
}

json_t *cp_plane_json(const struct cp *cp, const struct plane *p)
{
	return json_pack("{s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:i, s:b, s:b, s:b, s:b, s:i, s:i, s:i, s:f, "
			 "s:f, s:I}",
			 "id", text(p->id), "tenant_id", text(p->tenant), "name", text(p->name),
			 "hostname", text(p->hostname), "region", text(p->region), "node_key",
			 text(p->node_key), "isolation_classes", text(p->classes), "max_runs", p->max_runs,
			 "registered", p->registered, "draining", p->draining, "down", p->down,
			 "connected", p->stream != NULL, "active_runs", p->active,
			 "reported_active_runs", p->reported_active, "queue_depth", p->queue_depth,
			 "cpu_pct", p->cpu_pct, "mem_pct", p->mem_pct,
			 "ms_since_heartbeat", (json_int_t)(cp_mono_ms() - p->last_hb_ms));
}
