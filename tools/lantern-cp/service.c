/* service.c: lantern.v1.DataPlaneService as lantern-cp serves it, on any replica.
 * Register trades a one-time bootstrap token for a session token; every other call and
 * the RunStream's Hello must present a session token issued to that plane. A
 * RunStream's first frame must be Hello; a tenant may hold
 * LANTERN_DP_MAX_STREAMS_PER_TENANT streams at once across the replicas
 * (RESOURCE_EXHAUSTED past it). Frames that cannot be decoded end the stream with
 * INVALID_ARGUMENT; reports about runs the control plane does not know (or under an old
 * fencing epoch) are answered with a DpCompletionAck carrying the error, so the node
 * stops repeating them. Completions are de-duplicated by run id and always
 * acknowledged.
 *
 * The replica holding a plane's stream records itself in the plane's row and delivers
 * what the leader placed there (assignments, cancels), renews the leases the node
 * lists, and records the node's reports; each write is conditional on the run still
 * being that plane's under that epoch, so a report from a node that lost the run
 * changes nothing. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cp.h"
#include "lantern/v1/dataplane.pb-c.h"

#define PACK(type, msg, out)                                                   \
	do {                                                                   \
		(out)->len = lantern__v1__##type##__get_packed_size(msg);      \
		(out)->data = malloc((out)->len ? (out)->len : 1);             \
		if ((out)->data)                                               \
			lantern__v1__##type##__pack(msg, (out)->data);         \
	} while (0)

/* The plane a session token was issued to (into *p), or false with details set. */
static bool auth(struct cp *cp, const char *plane_id, const char *token, struct plane *p,
		 char *details, size_t dlen)
{
	char tenant[128];
	struct lerr e;

	if (token_session_check(cp, token ? token : "", plane_id ? plane_id : "", tenant,
				sizeof(tenant), &e) < 0) {
		snprintf(details, dlen, "%s", e.msg);
		return false;
	}
	if (state_plane(cp, plane_id, p, &e) != 1 || !p->registered || strcmp(p->tenant, tenant)) {
		snprintf(details, dlen, "session token: plane %s is not registered for tenant %s",
			 plane_id, tenant);
		return false;
	}
	return true;
}

struct id_row {
	char id[40];
};

static void id_row(void *arg, int ncol, char **v)
{
	struct id_row *r = arg;

	if (ncol > 0 && v[0])
		snprintf(r->id, sizeof(r->id), "%s", v[0]);
}

/* What a node says it can still take, into its row; true when that changed. */
static bool save_capacity(struct cp *cp, const struct plane *p, const Lantern__V1__DpCapacity *c)
{
	char cpu[24], mem[24], scr[24], sl[24], at[24];
	int slots = -1;
	struct lerr e;

	if (!c)
		return false;
	for (size_t i = 0; i < c->n_slots; i++)
		if (slots < 0 || c->slots[i]->free < slots)
			slots = c->slots[i]->free;
	{
		const char *v[] = { p->id, I64(cpu, c->cpu_millis), I64(mem, c->memory_bytes),
				    I64(scr, c->scratch_bytes), I64(sl, slots), I64(at, cp_now_us()) };

		db_exec(cp->db, "UPDATE data_planes SET cap_cpu = $2, cap_memory = $3, cap_scratch = $4, "
			"cap_slots = $5, cap_us = $6 WHERE id = $1", 6, v, &e);
	}
	return c->cpu_millis != p->cap_cpu || c->memory_bytes != p->cap_memory ||
	       c->scratch_bytes != p->cap_scratch || slots != p->cap_slots;
}

static int do_register(struct cp *cp, Lantern__V1__DpRegisterRequest *rq, struct rpc_buf *resp,
		       char *details, size_t dlen)
{
	Lantern__V1__DpRegisterResponse rs = LANTERN__V1__DP_REGISTER_RESPONSE__INIT;
	char hash[65], now[24], mr[24], hb[24], classes[256] = "", nk[64] = "";
	const char *p[10];
	struct id_row row = { "" };
	struct plane pl;
	struct lerr e;
	int64_t exp;
	char *jwt;
	int n;

	if (!rq->agent_token[0] || !rq->tenant_id[0]) {
		snprintf(details, dlen, "register: tenant_id and agent_token are required");
		return RPC_UNAUTHENTICATED;
	}
	for (size_t i = 0; i < rq->n_isolation_classes; i++) {
		size_t l = strlen(classes);
		snprintf(classes + l, sizeof(classes) - l, "%s%s", l ? "," : "", rq->isolation_classes[i]);
	}
	token_hash(rq->agent_token, hash);
	snprintf(now, sizeof(now), "%lld", (long long)time(NULL));
	snprintf(mr, sizeof(mr), "%d", rq->max_runs > 0 ? rq->max_runs : 0);
	p[0] = hash;
	p[1] = rq->tenant_id;
	p[2] = now;
	p[3] = rq->hostname;
	p[4] = classes;
	p[5] = mr;
	p[6] = rq->journal_store;
	p[7] = I64(hb, cp_now_us());
	if (rq->node_public_key.len == crypto_sign_PUBLICKEYBYTES)
		sodium_bin2base64(nk, sizeof(nk), rq->node_public_key.data, rq->node_public_key.len,
				  sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	p[8] = nk;
	p[9] = rq->region;
	/* one statement decides: a token is consumed once even with several replicas */
	n = db_exec(cp->db, "UPDATE data_planes SET token_used = 1, registered_at = $3, "
		    "last_heartbeat = $3, hostname = $4, classes = $5, max_runs = $6, down = 0, "
		    "journal_store = $7, hb_us = $8, node_key = $9, region = $10 "
		    "WHERE token_hash = $1 AND tenant_id = $2 AND token_used = 0", 10, p, &e);
	if (n < 0) {
		snprintf(details, dlen, "register: %s", e.msg);
		return RPC_UNAVAILABLE;
	}
	if (n != 1 || db_query(cp->db, "SELECT id FROM data_planes WHERE token_hash = $1", 1, p,
			       id_row, &row, &e) < 0 || state_plane(cp, row.id, &pl, &e) != 1) {
		log_warn("register: refused a bootstrap token for tenant %s from %s: unknown, used, "
			 "or another tenant's", rq->tenant_id, rq->hostname);
		snprintf(details, dlen, "register: bootstrap token unknown, already used, or not "
			 "issued for tenant %s", rq->tenant_id);
		return RPC_UNAUTHENTICATED;
	}
	save_capacity(cp, &pl, rq->capacity);
	jwt = token_session_new(cp, pl.id, pl.tenant, cp->o.session_ttl_s, &exp);
	if (!jwt) {
		snprintf(details, dlen, "register: cannot sign a session token");
		return RPC_INTERNAL;
	}
	rs.plane_id = pl.id;
	rs.session_token = jwt;
	rs.heartbeat_interval_seconds = cp->o.heartbeat_s;
	rs.metrics_interval_seconds = cp->o.metrics_s;
	rs.expires_at_unix = exp;
	rs.lease_ttl_ms = cp->o.lease_ttl_ms;
	rs.completion_acks = true;
	rs.signs_identity = true;
	PACK(dp_register_response, &rs, resp);
	free(jwt);
	log_info("plane %s (%s, tenant %s): registered, classes [%s], max runs %d, region %s, node key "
		 "%s, journal store %s, agent %s", pl.id, pl.hostname, pl.tenant, classes, pl.max_runs,
		 rq->region[0] ? rq->region : "-", nk[0] ? "given" : "none",
		 rq->journal_store[0] ? rq->journal_store : "none", rq->agent_version);
	wake_sched(cp);
	return RPC_OK;
}

static int h_register(void *arg, const uint8_t *req, size_t len, struct rpc_buf *resp,
		      char *details, size_t dlen)
{
	struct cp *cp = arg;
	Lantern__V1__DpRegisterRequest *rq = lantern__v1__dp_register_request__unpack(NULL, len, req);
	int st;

	if (!rq) {
		snprintf(details, dlen, "register: malformed DpRegisterRequest");
		return RPC_INVALID_ARGUMENT;
	}
	pthread_mutex_lock(&cp->mu);
	st = do_register(cp, rq, resp, details, dlen);
	pthread_mutex_unlock(&cp->mu);
	lantern__v1__dp_register_request__free_unpacked(rq, NULL);
	return st;
}

static int h_heartbeat(void *arg, const uint8_t *req, size_t len, struct rpc_buf *resp,
		       char *details, size_t dlen)
{
	struct cp *cp = arg;
	Lantern__V1__DpHeartbeatRequest *rq = lantern__v1__dp_heartbeat_request__unpack(NULL, len, req);
	Lantern__V1__DpHeartbeatAck ack = LANTERN__V1__DP_HEARTBEAT_ACK__INIT;
	struct plane p;
	struct lerr e;
	int st = RPC_OK;

	if (!rq) {
		snprintf(details, dlen, "heartbeat: malformed DpHeartbeatRequest");
		return RPC_INVALID_ARGUMENT;
	}
	pthread_mutex_lock(&cp->mu);
	if (!auth(cp, rq->plane_id, rq->session_token, &p, details, dlen)) {
		st = RPC_UNAUTHENTICATED;
	} else {
		char hb[24], ra[24], qd[24];
		const char *v[] = { p.id, I64(hb, cp_now_us()), I64(ra, rq->active_runs),
				    I64(qd, rq->queue_depth) };

		db_exec(cp->db, "UPDATE data_planes SET hb_us = $2, reported_active = $3, queue_depth = $4, "
			"down = 0 WHERE id = $1", 4, v, &e);
		if (p.down) {
			log_info("plane %s (%s): heartbeats again: up", p.id, p.hostname);
			wake_sched(cp);
		}
		/* the node's own drain (it is stopping) comes and goes with its heartbeats; an
		 * operator's stays */
		if ((rq->draining && !p.draining) || (!rq->draining && p.self_draining)) {
			const char *w[] = { p.id, rq->draining ? "1" : "0" };

			db_exec(cp->db, "UPDATE data_planes SET draining = $2, self_draining = $2 WHERE id = $1",
				2, w, &e);
			p.draining = rq->draining;
			log_info("plane %s (%s): %s", p.id, p.hostname, rq->draining ?
				 "draining: the node is stopping" : "drain lifted: the node is back");
			if (!rq->draining)
				wake_sched(cp);
		}
		ack.ok = true;
		ack.draining = p.draining;
		PACK(dp_heartbeat_ack, &ack, resp);
	}
	pthread_mutex_unlock(&cp->mu);
	lantern__v1__dp_heartbeat_request__free_unpacked(rq, NULL);
	return st;
}

static int h_metrics(void *arg, const uint8_t *req, size_t len, struct rpc_buf *resp,
		     char *details, size_t dlen)
{
	struct cp *cp = arg;
	Lantern__V1__DpMetricsReport *rq = lantern__v1__dp_metrics_report__unpack(NULL, len, req);
	Lantern__V1__DpMetricsAck ack = LANTERN__V1__DP_METRICS_ACK__INIT;
	struct plane p;
	struct lerr e;
	int st = RPC_OK;

	if (!rq) {
		snprintf(details, dlen, "metrics: malformed DpMetricsReport");
		return RPC_INVALID_ARGUMENT;
	}
	pthread_mutex_lock(&cp->mu);
	if (!auth(cp, rq->plane_id, rq->session_token, &p, details, dlen)) {
		st = RPC_UNAUTHENTICATED;
	} else {
		char cpu[40], mem[40], ra[24], qd[24];
		const char *v[] = { p.id, cpu, mem, I64(ra, rq->active_runs), I64(qd, rq->queue_depth) };

		snprintf(cpu, sizeof(cpu), "%.6f", rq->cpu_pct);
		snprintf(mem, sizeof(mem), "%.6f", rq->mem_pct);
		db_exec(cp->db, "UPDATE data_planes SET cpu_pct = $2, mem_pct = $3, reported_active = $4, "
			"queue_depth = $5 WHERE id = $1", 5, v, &e);
		if (save_capacity(cp, &p, rq->capacity))
			wake_sched(cp);
		ack.ok = true;
		PACK(dp_metrics_ack, &ack, resp);
	}
	pthread_mutex_unlock(&cp->mu);
	lantern__v1__dp_metrics_report__free_unpacked(rq, NULL);
	return st;
}

static int h_refresh(void *arg, const uint8_t *req, size_t len, struct rpc_buf *resp,
		     char *details, size_t dlen)
{
	struct cp *cp = arg;
	Lantern__V1__DpRefreshTokenRequest *rq = lantern__v1__dp_refresh_token_request__unpack(NULL, len, req);
	Lantern__V1__DpRefreshTokenResponse rs = LANTERN__V1__DP_REFRESH_TOKEN_RESPONSE__INIT;
	struct plane p;
	int st = RPC_OK;
	int64_t exp;
	char *jwt;

	if (!rq) {
		snprintf(details, dlen, "refresh: malformed DpRefreshTokenRequest");
		return RPC_INVALID_ARGUMENT;
	}
	pthread_mutex_lock(&cp->mu);
	if (!auth(cp, rq->plane_id, rq->session_token, &p, details, dlen)) {
		st = RPC_UNAUTHENTICATED;
	} else if (!(jwt = token_session_new(cp, p.id, p.tenant, cp->o.session_ttl_s, &exp))) {
		snprintf(details, dlen, "refresh: cannot sign a session token");
		st = RPC_INTERNAL;
	} else {
		rs.session_token = jwt;
		rs.expires_at_unix = exp;
		PACK(dp_refresh_token_response, &rs, resp);
		free(jwt);
		log_info("plane %s: session token refreshed, expires at %lld", p.id, (long long)exp);
	}
	pthread_mutex_unlock(&cp->mu);
	lantern__v1__dp_refresh_token_request__free_unpacked(rq, NULL);
	return st;
}

/* --- RunStream: what goes to the node --- */

static void send_server(struct session *ss, Lantern__V1__DpRunStreamServerMsg *m)
{
	struct rpc_buf b;

	PACK(dp_run_stream_server_msg, m, &b);
	if (b.data)
		rpc_stream_send(ss->s, b.data, b.len);
	free(b.data);
}

static void send_ack(struct session *ss, const char *run_id, const char *error)
{
	Lantern__V1__DpCompletionAck a = LANTERN__V1__DP_COMPLETION_ACK__INIT;
	Lantern__V1__DpRunStreamServerMsg m = LANTERN__V1__DP_RUN_STREAM_SERVER_MSG__INIT;

	a.run_id = (char *)run_id;
	a.error = (char *)(error ? error : "");
	m.msg_case = LANTERN__V1__DP_RUN_STREAM_SERVER_MSG__MSG_COMPLETION_ACK;
	m.completion_ack = &a;
	send_server(ss, &m);
}

static struct session *session_of(struct cp *cp, const char *plane)
{
	for (struct session *s = cp->sessions; s; s = s->next)
		if (s->plane[0] && !strcmp(s->plane, plane))
			return s;
	return NULL;
}

struct delivery {
	struct cp *cp;
	struct session *ss;
};

static void deliver_assignment(void *arg, struct cprun *r)
{
	struct delivery *d = arg;
	Lantern__V1__DpRunAssignment a = LANTERN__V1__DP_RUN_ASSIGNMENT__INIT;
	Lantern__V1__DpRunStreamServerMsg m = LANTERN__V1__DP_RUN_STREAM_SERVER_MSG__INIT;
	char ep[24];
	const char *v[] = { r->id, I64(ep, r->epoch) };
	struct lerr e;

	a.run_id = r->id;
	a.agent_version_id = r->agent_version;
	a.tenant_id = r->tenant;
	a.config_json = r->config_json;
	a.input_json = r->input_json ? r->input_json : "";
	a.idempotency_key = r->idem[0] ? r->idem : r->id;
	a.fencing_epoch = r->epoch;
	a.lease_ttl_ms = d->cp->o.lease_ttl_ms;
	a.resume = r->resume;
	m.msg_case = LANTERN__V1__DP_RUN_STREAM_SERVER_MSG__MSG_ASSIGNMENT;
	m.assignment = &a;
	send_server(d->ss, &m);
	db_exec(d->cp->db, "UPDATE runs SET delivered_epoch = epoch WHERE id = $1 AND epoch = $2", 2, v, &e);
}

static void deliver_cancel(void *arg, struct cprun *r)
{
	struct delivery *d = arg;
	Lantern__V1__DpCancelRun c = LANTERN__V1__DP_CANCEL_RUN__INIT;
	Lantern__V1__DpRunStreamServerMsg m = LANTERN__V1__DP_RUN_STREAM_SERVER_MSG__INIT;
	const char *v[] = { r->id };
	struct lerr e;

	c.run_id = r->id;
	m.msg_case = LANTERN__V1__DP_RUN_STREAM_SERVER_MSG__MSG_CANCEL;
	m.cancel = &c;
	send_server(d->ss, &m);
	db_exec(d->cp->db, "UPDATE runs SET cancel_sent = 1 WHERE id = $1", 1, v, &e);
}

void service_deliver(struct cp *cp, const char *plane, bool force)
{
	struct delivery d = { cp, session_of(cp, plane) };
	const char *v[] = { plane };
	struct lerr e;

	if (!d.ss || db_begin(cp->db, &e) < 0)
		return;
	state_runs(cp, force ? "plane_id = $1 AND status = 'assigned' ORDER BY assigned_us" :
		   "plane_id = $1 AND status = 'assigned' AND delivered_epoch < epoch ORDER BY assigned_us",
		   1, v, deliver_assignment, &d, &e);
	state_runs(cp, force ? "plane_id = $1 AND cancel_requested = 1 AND status IN " RS_LIVE_SQL :
		   "plane_id = $1 AND cancel_requested = 1 AND cancel_sent = 0 AND status IN " RS_LIVE_SQL,
		   1, v, deliver_cancel, &d, &e);
	db_commit(cp->db, &e);
}

void service_deliver_woken(struct cp *cp)
{
	char **planes;
	size_t n;

	wake_take_planes(cp, &planes, &n);
	for (size_t i = 0; i < n; i++) {
		service_deliver(cp, planes[i], false);
		free(planes[i]);
	}
	free(planes);
}

void service_tick(struct cp *cp)
{
	static int64_t last_ping;
	int64_t now = cp_mono_ms();

	if (now - last_ping >= (int64_t)cp->o.ping_s * 1000) {
		Lantern__V1__DpPing ping = LANTERN__V1__DP_PING__INIT;
		Lantern__V1__DpRunStreamServerMsg m = LANTERN__V1__DP_RUN_STREAM_SERVER_MSG__INIT;

		m.msg_case = LANTERN__V1__DP_RUN_STREAM_SERVER_MSG__MSG_PING;
		m.ping = &ping;
		for (struct session *s = cp->sessions; s; s = s->next)
			if (s->plane[0])
				send_server(s, &m);
		last_ping = now;
	}
	/* a stream that has not said Hello in time goes */
	for (struct session *s = cp->sessions; s; s = s->next)
		if (!s->hello && !s->finished && now - s->opened_ms >= CP_HELLO_TIMEOUT_MS) {
			s->finished = true;
			rpc_stream_finish(s->s, RPC_DEADLINE_EXCEEDED, "no Hello within the first 10 s of the RunStream");
		}
	/* streams this replica should not hold: another replica took the plane's newer
	 * stream, or the plane is down */
	for (struct session *s = cp->sessions; s; s = s->next) {
		struct plane p;
		struct lerr e;

		if (!s->plane[0] || state_plane(cp, s->plane, &p, &e) != 1)
			continue;
		if (strcmp(p.stream_replica, cp->replica)) {
			s->plane[0] = '\0';
			rpc_stream_finish(s->s, RPC_ABORTED, "replaced by a newer RunStream on another replica");
		} else if (p.down) {
			rpc_stream_finish(s->s, RPC_UNAVAILABLE, "plane marked down");
		} else {
			service_deliver(cp, p.id, false);
		}
	}
}

/* --- RunStream: what comes from the node --- */

static void tenant_count(void *arg, int ncol, char **v)
{
	*(int *)arg = ncol > 0 && v[0] ? atoi(v[0]) : 0;
}

static void on_hello(struct session *ss, Lantern__V1__DpHello *h)
{
	struct cp *cp = ss->cp;
	char details[512], hb[24];
	struct plane p;
	struct session *old;
	struct lerr e;
	int n = 0;

	if (!auth(cp, h->plane_id, h->session_token, &p, details, sizeof(details))) {
		rpc_stream_finish(ss->s, RPC_UNAUTHENTICATED, details);
		return;
	}
	{
		const char *v[] = { p.tenant, p.id };

		/* a plane's newer stream replaces its older one: it does not count */
		db_query(cp->db, "SELECT count(*) FROM data_planes WHERE tenant_id = $1 AND id <> $2 AND "
			 "stream_replica <> ''", 2, v, tenant_count, &n, &e);
	}
	if (n >= cp->o.max_streams_per_tenant) {
		snprintf(details, sizeof(details), "tenant %s already has %d RunStreams open "
			 "(LANTERN_DP_MAX_STREAMS_PER_TENANT=%d)", p.tenant, n,
			 cp->o.max_streams_per_tenant);
		log_warn("plane %s: %s", p.id, details);
		rpc_stream_finish(ss->s, RPC_RESOURCE_EXHAUSTED, details);
		return;
	}
	if ((old = session_of(cp, p.id))) {
		old->plane[0] = '\0';
		rpc_stream_finish(old->s, RPC_ABORTED, "replaced by a newer RunStream");
	}
	snprintf(ss->plane, sizeof(ss->plane), "%s", p.id);
	snprintf(ss->tenant, sizeof(ss->tenant), "%s", p.tenant);
	ss->hello = true;
	{
		const char *v[] = { p.id, cp->replica, I64(hb, cp_now_us()) };

		db_exec(cp->db, "UPDATE data_planes SET stream_replica = $2, hb_us = $3 WHERE id = $1", 3, v, &e);
	}
	log_info("plane %s (%s): RunStream open on replica %s", p.id, p.hostname, cp->replica);
	service_deliver(cp, p.id, true);
	wake_sched(cp);
}

/* What a report needs of its run: plane, epoch, state, cancel requested. */
static void report_row(void *arg, int ncol, char **v)
{
	struct cprun *r = arg;

	if (ncol < 6)
		return;
	snprintf(r->id, sizeof(r->id), "%s", v[0] ?: "");
	snprintf(r->plane, sizeof(r->plane), "%s", v[1] ?: "");
	r->epoch = v[2] ? atoll(v[2]) : 0;
	r->state = cp_state_from(v[3]);
	r->cancel_requested = v[4] && atoi(v[4]);
	snprintf(r->tenant, sizeof(r->tenant), "%s", v[5] ?: "");
}

/* The run a plane reports about, if it is that plane's under the current epoch. */
static bool reported_run(struct session *ss, const char *run_id, int64_t epoch, struct cprun *r,
			 const char **why)
{
	const char *v[] = { run_id };
	struct lerr e;

	memset(r, 0, sizeof(*r));
	if (db_query(ss->cp->db, "SELECT id, plane_id, epoch, status, cancel_requested, tenant_id FROM "
		     "runs WHERE id = $1", 1, v, report_row, r, &e) != 1 || strcmp(r->plane, ss->plane)) {
		*why = "unknown run id";
		return false;
	}
	if (epoch && epoch != r->epoch) {
		*why = "stale fencing epoch";
		return false;
	}
	/* No epoch: a peer that speaks only the platform's proto (it registered without the
	 * project's isolation_classes) never sends one. From any other node, or for a run
	 * placed more than once, a report without its epoch could be a fenced copy's. */
	if (!epoch && r->epoch > 1) {
		struct plane p;
		struct lerr e;

		if (state_plane(ss->cp, ss->plane, &p, &e) != 1 || p.classes[0]) {
			*why = "no fencing epoch for a run placed more than once";
			return false;
		}
	}
	return true;
}

static enum run_state from_dp(Lantern__V1__DpRunStatus s)
{
	switch (s) {
	case LANTERN__V1__DP_RUN_STATUS__DP_RUN_STATUS_ACCEPTED: return RS_ACCEPTED;
	case LANTERN__V1__DP_RUN_STATUS__DP_RUN_STATUS_RUNNING: return RS_RUNNING;
	case LANTERN__V1__DP_RUN_STATUS__DP_RUN_STATUS_SUCCEEDED: return RS_SUCCEEDED;
	case LANTERN__V1__DP_RUN_STATUS__DP_RUN_STATUS_CANCELLED: return RS_CANCELLED;
	case LANTERN__V1__DP_RUN_STATUS__DP_RUN_STATUS_TIMED_OUT: return RS_TIMED_OUT;
	default: return RS_FAILED;
	}
}

static void on_accepted(struct session *ss, Lantern__V1__DpRunAccepted *a)
{
	struct cp *cp = ss->cp;
	struct cprun r;
	const char *why;
	char ep[24], now[24];
	struct lerr e;

	if (!reported_run(ss, a->run_id, a->fencing_epoch, &r, &why)) {
		log_warn("plane %s: accepted %s: %s", ss->plane, a->run_id, why);
		send_ack(ss, a->run_id, why);
	} else {
		const char *v[] = { r.id, I64(ep, r.epoch), ss->plane, I64(now, cp_now_us()) };

		db_exec(cp->db, "UPDATE runs SET status = 'accepted', accepted_us = $4 WHERE id = $1 AND "
			"epoch = $2 AND plane_id = $3 AND status = 'assigned'", 4, v, &e);
	}
	state_run_clear(cp, &r);
}

static void on_status(struct session *ss, Lantern__V1__DpRunStatusUpdate *u)
{
	struct cp *cp = ss->cp;
	struct cprun r;
	const char *why;
	char ep[24], now[24];
	struct lerr e;

	if (!reported_run(ss, u->run_id, u->fencing_epoch, &r, &why)) {
		log_warn("plane %s: status of %s: %s", ss->plane, u->run_id, why);
		send_ack(ss, u->run_id, why);
	} else {
		const char *v[] = { r.id, I64(ep, r.epoch), ss->plane, I64(now, cp_now_us()) };

		if (u->status == LANTERN__V1__DP_RUN_STATUS__DP_RUN_STATUS_RUNNING)
			db_exec(cp->db, "UPDATE runs SET status = 'running', running_us = $4, accepted_us = "
				"CASE WHEN accepted_us = 0 THEN $4 ELSE accepted_us END WHERE id = $1 AND "
				"epoch = $2 AND plane_id = $3 AND status IN ('assigned', 'accepted')", 4, v, &e);
		if (u->detail[0]) {
			const char *w[] = { r.id, ep, ss->plane, u->detail };

			db_exec(cp->db, "UPDATE runs SET detail = $4 WHERE id = $1 AND epoch = $2 AND "
				"plane_id = $3 AND status IN " RS_LIVE_SQL, 4, w, &e);
		}
	}
	state_run_clear(cp, &r);
}

static void on_completed(struct session *ss, Lantern__V1__DpRunCompleted *c)
{
	struct cp *cp = ss->cp;
	struct cprun r;
	const char *why;
	struct lerr e = { 0 };

	if (!reported_run(ss, c->run_id, c->fencing_epoch, &r, &why)) {
		log_warn("plane %s: completion of %s: %s", ss->plane, c->run_id, why);
		send_ack(ss, c->run_id, why);
		state_run_clear(cp, &r);
		return;
	}
	if (c->not_started && !cp_state_final(r.state) && !r.cancel_requested) {
		char ep[24], nb[24], reason[600];
		const char *v[] = { r.id, I64(ep, r.epoch), ss->plane, I64(nb, cp_now_us() + 1000000), reason };

		snprintf(reason, sizeof(reason), "%s gave it back unstarted (%s): placed again shortly",
			 ss->plane, c->detail);
		if (db_exec(cp->db, "UPDATE runs SET status = 'queued', plane_id = '', accepted_us = 0, "
			    "running_us = 0, lease_expires_us = 0, not_before_us = $4, queue_reason = $5 "
			    "WHERE id = $1 AND epoch = $2 AND plane_id = $3 AND status IN " RS_LIVE_SQL,
			    5, v, &e) == 1)
			log_info("run %s: %s", r.id, reason);
	} else if (!cp_state_final(r.state)) {
		char ep[24], cost[40], ti[24], to[24], du[24], fi[24];
		struct plane p;
		/* a completion ends the run: one that names a live status (accepted, running)
		 * would leave it placed, with no lease, and nothing running it */
		enum run_state st = cp_state_final(from_dp(c->status)) ? from_dp(c->status) : RS_FAILED;

		if (c->receipt[0] && state_plane(cp, ss->plane, &p, &e) == 1)
			cp_receipt_take(cp, &r, &p, c->receipt);
		e.msg[0] = '\0';
		const char *v[] = {
			r.id, I64(ep, r.epoch), ss->plane, cp_state_name(st), c->detail,
			c->output_json, (snprintf(cost, sizeof(cost), "%.17g", c->cost_usd), cost),
			I64(ti, c->tokens_in), I64(to, c->tokens_out), I64(du, c->duration_ms),
			I64(fi, cp_now_us()),
		};

		if (db_exec(cp->db, "UPDATE runs SET status = $4, detail = $5, output_json = $6, "
			    "cost_usd = $7, tokens_in = $8, tokens_out = $9, duration_ms = $10, "
			    "finished_us = $11, lease_expires_us = 0 WHERE id = $1 AND epoch = $2 AND "
			    "plane_id = $3 AND status NOT IN " RS_FINAL_SQL, (int)ARRAY_SIZE(v), v, &e) == 1)
			log_info("run %s: %s%s%s", r.id, v[3], c->detail[0] ? ": " : "", c->detail);
		else if (e.msg[0])
			log_error("run %s: completion not recorded: %s", r.id, e.msg);
	}
	/* recorded now or before (a re-sent completion): either way the node may forget
	 * it; unless the database did not take it, and then the node sends it again */
	if (!e.msg[0])
		send_ack(ss, c->run_id, NULL);
	wake_sched(cp);
	state_run_clear(cp, &r);
}

static void lost_reason(struct cp *cp, const char *plane, const char *run_id, char *out, size_t len)
{
	struct cprun r;
	struct lerr e;

	if (state_run(cp, run_id, &r, &e) != 1)
		snprintf(out, len, "unknown run id");
	else if (cp_state_final(r.state))
		snprintf(out, len, "the run has ended (%s)", cp_state_name(r.state));
	else if (strcmp(r.plane, plane))
		snprintf(out, len, "the run was given to %s (epoch %lld)", r.plane[0] ? r.plane : "the queue",
			 (long long)r.epoch);
	else
		snprintf(out, len, "stale fencing epoch (the run's is %lld)", (long long)r.epoch);
	state_run_clear(cp, &r);
}

struct renewed {
	char **ids;
	size_t n;
};

static void renewed_row(void *arg, int ncol, char **v)
{
	struct renewed *r = arg;

	if (ncol > 0 && v[0] && (r->ids[r->n] = strdup(v[0])))
		r->n++;
}

/* Renews every lease the node lists that is still its own; names the others lost. */
static void on_renew(struct session *ss, Lantern__V1__DpLeaseRenew *rn)
{
	struct cp *cp = ss->cp;
	Lantern__V1__DpLeaseGrant g = LANTERN__V1__DP_LEASE_GRANT__INIT;
	Lantern__V1__DpRunStreamServerMsg m = LANTERN__V1__DP_RUN_STREAM_SERVER_MSG__INIT;
	size_t n = rn->n_leases, np = 2 + 2 * n, off = 0;
	const char **v = calloc(np, sizeof(char *));
	char (*eps)[24] = calloc(n + 1, sizeof(*eps)), *sql = malloc(512 + n * 48), exp[24];
	struct renewed ok = { calloc(n + 1, sizeof(char *)), 0 };
	Lantern__V1__DpLeaseLost *lost = calloc(n + 1, sizeof(*lost)), **lp = calloc(n + 1, sizeof(*lp));
	char (*whys)[256] = calloc(n + 1, sizeof(*whys));
	struct plane p;
	struct lerr e;

	if (!v || !eps || !sql || !ok.ids || !lost || !lp || !whys)
		goto out;
	v[0] = I64(exp, cp_now_us() + (int64_t)cp->o.lease_ttl_ms * 1000);
	v[1] = ss->plane;
	if (n) {
		off += (size_t)snprintf(sql + off, 512, "UPDATE runs SET lease_expires_us = $1 WHERE plane_id = $2 "
					"AND status IN " RS_LIVE_SQL " AND (id, epoch) IN (VALUES ");
		for (size_t i = 0; i < n; i++) {
			v[2 + 2 * i] = rn->leases[i]->run_id;
			v[3 + 2 * i] = I64(eps[i], rn->leases[i]->fencing_epoch);
			off += (size_t)snprintf(sql + off, 48, "%s($%zu, CAST($%zu AS BIGINT))", i ? ", " : "",
						3 + 2 * i, 4 + 2 * i);
		}
		snprintf(sql + off, 32, ") RETURNING id");
		if (db_query(cp->db, sql, (int)np, v, renewed_row, &ok, &e) < 0)
			log_error("plane %s: leases not renewed: %s", ss->plane, e.msg);
	}
	for (size_t i = 0; i < n; i++) {
		bool found = false;

		for (size_t k = 0; k < ok.n; k++)
			found |= !strcmp(ok.ids[k], rn->leases[i]->run_id);
		if (found || e.msg[0])
			continue;
		lantern__v1__dp_lease_lost__init(&lost[g.n_lost]);
		lost[g.n_lost].run_id = rn->leases[i]->run_id;
		lost_reason(cp, ss->plane, rn->leases[i]->run_id, whys[g.n_lost], sizeof(whys[0]));
		lost[g.n_lost].reason = whys[g.n_lost];
		log_warn("plane %s: lease of %s (epoch %lld) not renewed: %s", ss->plane,
			 rn->leases[i]->run_id, (long long)rn->leases[i]->fencing_epoch, whys[g.n_lost]);
		lp[g.n_lost] = &lost[g.n_lost];
		g.n_lost++;
	}
	if (state_plane(cp, ss->plane, &p, &e) == 1 && save_capacity(cp, &p, rn->capacity))
		wake_sched(cp);
	g.seq = rn->seq;
	g.ttl_ms = cp->o.lease_ttl_ms;
	g.renewed = ok.ids;
	g.n_renewed = ok.n;
	g.lost = lp;
	m.msg_case = LANTERN__V1__DP_RUN_STREAM_SERVER_MSG__MSG_LEASE_GRANT;
	m.lease_grant = &g;
	send_server(ss, &m);
out:
	for (size_t k = 0; ok.ids && k < ok.n; k++)
		free(ok.ids[k]);
	free(ok.ids);
	free(v);
	free(eps);
	free(sql);
	free(lost);
	free(lp);
	free(whys);
}

/* Signs an instance's token for a run of this plane; the answer goes back on the stream. */
static void on_identity_request(struct session *ss, Lantern__V1__DpIdentityRequest *rq)
{
	Lantern__V1__DpIdentityToken t = LANTERN__V1__DP_IDENTITY_TOKEN__INIT;
	Lantern__V1__DpRunStreamServerMsg m = LANTERN__V1__DP_RUN_STREAM_SERVER_MSG__INIT;
	char err[256] = "", *tok = NULL;
	struct cprun r;
	struct lerr e;

	/* the whole row: the token's claims come from the run's spec and times */
	if (state_run(ss->cp, rq->run_id, &r, &e) != 1 || strcmp(r.plane, ss->plane))
		snprintf(err, sizeof(err), "run %s: unknown run id", rq->run_id);
	else if (rq->fencing_epoch && rq->fencing_epoch != r.epoch)
		snprintf(err, sizeof(err), "run %s: stale fencing epoch", rq->run_id);
	else if (cp_state_final(r.state))
		snprintf(err, sizeof(err), "run %s has ended", rq->run_id);
	else
		tok = cp_identity_token(ss->cp, &r, rq->instance_id, rq->public_key.data, rq->public_key.len,
					rq->expires_at_unix, err, sizeof(err));
	if (!tok)
		log_warn("plane %s: no identity token for instance %s: %s", ss->plane, rq->instance_id, err);
	t.run_id = rq->run_id;
	t.instance_id = rq->instance_id;
	t.token = tok ? tok : "";
	t.error = err;
	m.msg_case = LANTERN__V1__DP_RUN_STREAM_SERVER_MSG__MSG_IDENTITY_TOKEN;
	m.identity_token = &t;
	send_server(ss, &m);
	free(tok);
	state_run_clear(ss->cp, &r);
}

static void on_report(struct session *ss, Lantern__V1__DpRunStreamClientMsg *m)
{
	switch (m->msg_case) {
	case LANTERN__V1__DP_RUN_STREAM_CLIENT_MSG__MSG_ACCEPTED:
		on_accepted(ss, m->accepted);
		break;
	case LANTERN__V1__DP_RUN_STREAM_CLIENT_MSG__MSG_STATUS:
		on_status(ss, m->status);
		break;
	case LANTERN__V1__DP_RUN_STREAM_CLIENT_MSG__MSG_COMPLETED:
		on_completed(ss, m->completed);
		break;
	case LANTERN__V1__DP_RUN_STREAM_CLIENT_MSG__MSG_LEASE_RENEW:
		on_renew(ss, m->lease_renew);
		break;
	case LANTERN__V1__DP_RUN_STREAM_CLIENT_MSG__MSG_PONG:
		break;
	case LANTERN__V1__DP_RUN_STREAM_CLIENT_MSG__MSG_IDENTITY_REQUEST:
		on_identity_request(ss, m->identity_request);
		break;
	default:
		rpc_stream_finish(ss->s, RPC_INVALID_ARGUMENT,
				  m->msg_case == LANTERN__V1__DP_RUN_STREAM_CLIENT_MSG__MSG_HELLO ?
				  "Hello was already received on this stream" : "empty frame");
		break;
	}
}

static void stream_msg(struct rpc_stream *s, void *arg, const uint8_t *msg, size_t len)
{
	struct session *ss = arg;
	struct cp *cp = ss->cp;
	Lantern__V1__DpRunStreamClientMsg *m = lantern__v1__dp_run_stream_client_msg__unpack(NULL, len, msg);

	pthread_mutex_lock(&cp->mu);
	if (!m) {
		rpc_stream_finish(s, RPC_INVALID_ARGUMENT, "malformed DpRunStreamClientMsg");
	} else if (!ss->hello) {
		if (m->msg_case != LANTERN__V1__DP_RUN_STREAM_CLIENT_MSG__MSG_HELLO)
			rpc_stream_finish(s, RPC_INVALID_ARGUMENT, "the first frame of a RunStream must be Hello");
		else
			on_hello(ss, m->hello);
	} else if (ss->plane[0]) {
		on_report(ss, m);
	}
	pthread_mutex_unlock(&cp->mu);
	if (m)
		lantern__v1__dp_run_stream_client_msg__free_unpacked(m, NULL);
}

static void stream_end(struct rpc_stream *s, void *arg, int status, const char *details)
{
	struct session *ss = arg;
	struct cp *cp = ss->cp;

	pthread_mutex_lock(&cp->mu);
	for (struct session **pp = &cp->sessions; *pp; pp = &(*pp)->next)
		if (*pp == ss) {
			*pp = ss->next;
			break;
		}
	if (ss->plane[0] && !session_of(cp, ss->plane)) {
		const char *v[] = { ss->plane, cp->replica };
		struct lerr e;

		db_exec(cp->db, "UPDATE data_planes SET stream_replica = '' WHERE id = $1 AND "
			"stream_replica = $2", 2, v, &e);
		log_info("plane %s: RunStream closed (%s%s%s)", ss->plane, rpc_status_name(status),
			 details[0] ? ": " : "", details);
	}
	pthread_mutex_unlock(&cp->mu);
	rpc_stream_unref(ss->s);
	free(ss);
}

static const struct rpc_stream_ops session_ops = {
	.on_msg = stream_msg,
	.on_end = stream_end,
};

/* RunStreams that have not presented an accepted Hello and are still open. */
static int pending_streams(struct cp *cp)
{
	int n = 0;

	pthread_mutex_lock(&cp->mu);
	for (struct session *s = cp->sessions; s; s = s->next)
		n += !s->hello && !s->finished;
	pthread_mutex_unlock(&cp->mu);
	return n;
}

static void h_runstream(void *arg, struct rpc_stream *s, const struct rpc_stream_ops **ops,
			void **sarg)
{
	struct cp *cp = arg;
	struct session *ss = calloc(1, sizeof(*ss));

	if (!ss) {
		rpc_stream_finish(s, RPC_RESOURCE_EXHAUSTED, "out of memory");
		return;
	}
	ss->cp = cp;
	ss->s = s;
	ss->opened_ms = cp_mono_ms();
	rpc_stream_ref(s);
	pthread_mutex_lock(&cp->mu);
	ss->next = cp->sessions;
	cp->sessions = ss;
	pthread_mutex_unlock(&cp->mu);
	*ops = &session_ops;
	*sarg = ss;
	/* before Hello a stream is anyone's: bounded in number, and in time by service_tick */
	if (pending_streams(cp) > CP_MAX_PENDING_STREAMS) {
		pthread_mutex_lock(&cp->mu);
		ss->finished = true;
		pthread_mutex_unlock(&cp->mu);
		rpc_stream_finish(s, RPC_RESOURCE_EXHAUSTED, "too many RunStreams waiting for their Hello");
	}
}

const struct rpc_method cp_methods[] = {
	{ RPC_SERVICE "Register", h_register, NULL },
	{ RPC_SERVICE "Heartbeat", h_heartbeat, NULL },
	{ RPC_SERVICE "ReportMetrics", h_metrics, NULL },
	{ RPC_SERVICE "RefreshToken", h_refresh, NULL },
	{ RPC_SERVICE "RunStream", NULL, h_runstream },
};
const size_t cp_n_methods = ARRAY_SIZE(cp_methods);
