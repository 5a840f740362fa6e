/* service.c: lantern.v1.DataPlaneService as lantern-cp serves it. Register trades a
 * one-time bootstrap token for a session token; every other call and the RunStream's
 * Hello must present a session token issued to that plane. A RunStream's first frame
 * must be Hello; a tenant may hold LANTERN_DP_MAX_STREAMS_PER_TENANT streams at once
 * (RESOURCE_EXHAUSTED past it). Frames that cannot be decoded end the stream with
 * INVALID_ARGUMENT; reports about runs the control plane does not know (or under an old
 * fencing epoch) are answered with a DpCompletionAck carrying the error, so the node
 * stops repeating them. Completions are de-duplicated by run id and always acknowledged. */
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

/* The plane a session token was issued to, or NULL with details set. */
static struct plane *auth(struct cp *cp, const char *plane_id, const char *token, char *details,
			  size_t dlen)
{
	char tenant[128];
	struct plane *p;
	struct lerr e;

	if (token_session_check(cp, token ? token : "", plane_id ? plane_id : "", tenant,
				sizeof(tenant), &e) < 0) {
		snprintf(details, dlen, "%s", e.msg);
		return NULL;
	}
	p = cp_plane(cp, plane_id);
	if (!p || !p->registered || strcmp(p->tenant, tenant)) {
		snprintf(details, dlen, "session token: plane %s is not registered for tenant %s",
			 plane_id, tenant);
		return NULL;
	}
	return p;
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

static int do_register(struct cp *cp, Lantern__V1__DpRegisterRequest *rq, struct rpc_buf *resp,
		       char *details, size_t dlen)
{
	Lantern__V1__DpRegisterResponse rs = LANTERN__V1__DP_REGISTER_RESPONSE__INIT;
	char hash[65], now[24], mr[24], classes[256] = "", nk[64] = "";
	const char *p[8];
	struct id_row row = { "" };
	struct plane *pl;
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
	if (rq->node_public_key.len == crypto_sign_PUBLICKEYBYTES)
		sodium_bin2base64(nk, sizeof(nk), rq->node_public_key.data, rq->node_public_key.len,
				  sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	p[6] = nk;
	p[7] = rq->region;
	/* one statement decides: a token is consumed once even with several replicas */
	n = db_exec(cp->db, "UPDATE data_planes SET token_used = 1, registered_at = $3, "
		    "last_heartbeat = $3, hostname = $4, classes = $5, max_runs = $6, down = 0, "
		    "node_key = $7, region = $8 "
		    "WHERE token_hash = $1 AND tenant_id = $2 AND token_used = 0", 8, p, &e);
	if (n < 0) {
		snprintf(details, dlen, "register: %s", e.msg);
		return RPC_UNAVAILABLE;
	}
	if (n != 1 || db_query(cp->db, "SELECT id FROM data_planes WHERE token_hash = $1", 1, p,
			       id_row, &row, &e) < 0 || !(pl = cp_plane(cp, row.id))) {
		log_warn("register: refused a bootstrap token for tenant %s from %s: unknown, used, "
			 "or another tenant's", rq->tenant_id, rq->hostname);
		snprintf(details, dlen, "register: bootstrap token unknown, already used, or not "
			 "issued for tenant %s", rq->tenant_id);
		return RPC_UNAUTHENTICATED;
	}
	pl->registered = true;
	pl->down = false;
	pl->last_hb_ms = cp_mono_ms();
	pl->max_runs = rq->max_runs > 0 ? rq->max_runs : 0;
	snprintf(pl->hostname, sizeof(pl->hostname), "%s", rq->hostname);
	snprintf(pl->classes, sizeof(pl->classes), "%s", classes);
	snprintf(pl->node_key, sizeof(pl->node_key), "%s", nk);
	snprintf(pl->region, sizeof(pl->region), "%s", rq->region);
	jwt = token_session_new(cp, pl->id, pl->tenant, cp->o.session_ttl_s, &exp);
	if (!jwt) {
		snprintf(details, dlen, "register: cannot sign a session token");
		return RPC_INTERNAL;
	}
	rs.plane_id = pl->id;
	rs.session_token = jwt;
	rs.heartbeat_interval_seconds = cp->o.heartbeat_s;
	rs.metrics_interval_seconds = cp->o.metrics_s;
	rs.expires_at_unix = exp;
	rs.signs_identity = true;
	PACK(dp_register_response, &rs, resp);
	free(jwt);
	log_info("plane %s (%s, tenant %s): registered, classes [%s], max runs %d, region %s, node key "
		 "%s, agent %s", pl->id, pl->hostname, pl->tenant, classes, pl->max_runs,
		 pl->region[0] ? pl->region : "-", nk[0] ? "given" : "none", rq->agent_version);
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
	struct plane *p;
	int st = RPC_OK;

	if (!rq) {
		snprintf(details, dlen, "heartbeat: malformed DpHeartbeatRequest");
		return RPC_INVALID_ARGUMENT;
	}
	pthread_mutex_lock(&cp->mu);
	if (!(p = auth(cp, rq->plane_id, rq->session_token, details, dlen))) {
		st = RPC_UNAUTHENTICATED;
	} else {
		p->last_hb_ms = cp_mono_ms();
		p->reported_active = rq->active_runs;
		p->queue_depth = rq->queue_depth;
		if (p->down) {
			p->down = false;
			cp_save_plane(cp, p);
			log_info("plane %s (%s): heartbeats again: up", p->id, p->hostname);
		}
		if (rq->draining && !p->draining) {
			p->draining = p->self_draining = true;
			cp_save_plane(cp, p);
			log_info("plane %s (%s): draining: the node is stopping", p->id, p->hostname);
		} else if (!rq->draining && p->self_draining) {
			p->draining = p->self_draining = false;
			cp_save_plane(cp, p);
			log_info("plane %s (%s): drain lifted: the node is back", p->id, p->hostname);
		}
		ack.ok = true;
		ack.draining = p->draining;
		PACK(dp_heartbeat_ack, &ack, resp);
		cp_dispatch(cp);
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
	struct plane *p;
	int st = RPC_OK;

	if (!rq) {
		snprintf(details, dlen, "metrics: malformed DpMetricsReport");
		return RPC_INVALID_ARGUMENT;
	}
	pthread_mutex_lock(&cp->mu);
	if (!(p = auth(cp, rq->plane_id, rq->session_token, details, dlen))) {
		st = RPC_UNAUTHENTICATED;
	} else {
		p->cpu_pct = rq->cpu_pct;
		p->mem_pct = rq->mem_pct;
		p->reported_active = rq->active_runs;
		p->queue_depth = rq->queue_depth;
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
	struct plane *p;
	int st = RPC_OK;
	int64_t exp;
	char *jwt;

	if (!rq) {
		snprintf(details, dlen, "refresh: malformed DpRefreshTokenRequest");
		return RPC_INVALID_ARGUMENT;
	}
	pthread_mutex_lock(&cp->mu);
	if (!(p = auth(cp, rq->plane_id, rq->session_token, details, dlen))) {
		st = RPC_UNAUTHENTICATED;
	} else if (!(jwt = token_session_new(cp, p->id, p->tenant, cp->o.session_ttl_s, &exp))) {
		snprintf(details, dlen, "refresh: cannot sign a session token");
		st = RPC_INTERNAL;
	} else {
		rs.session_token = jwt;
		rs.expires_at_unix = exp;
		PACK(dp_refresh_token_response, &rs, resp);
		free(jwt);
		log_info("plane %s: session token refreshed, expires at %lld", p->id, (long long)exp);
	}
	pthread_mutex_unlock(&cp->mu);
	lantern__v1__dp_refresh_token_request__free_unpacked(rq, NULL);
	return st;
}

/* --- RunStream --- */

void cp_session_send(struct session *ss, const void *msg, size_t len)
{
	rpc_stream_send(ss->s, msg, len);
}

static void send_ack(struct session *ss, const char *run_id, const char *error)
{
	Lantern__V1__DpCompletionAck a = LANTERN__V1__DP_COMPLETION_ACK__INIT;
	Lantern__V1__DpRunStreamServerMsg m = LANTERN__V1__DP_RUN_STREAM_SERVER_MSG__INIT;
	struct rpc_buf b;

	a.run_id = (char *)run_id;
	a.error = (char *)(error ? error : "");
	m.msg_case = LANTERN__V1__DP_RUN_STREAM_SERVER_MSG__MSG_COMPLETION_ACK;
	m.completion_ack = &a;
	PACK(dp_run_stream_server_msg, &m, &b);
	if (b.data)
		cp_session_send(ss, b.data, b.len);
	free(b.data);
}

static int tenant_streams(struct cp *cp, const char *tenant, const struct session *except)
{
	int n = 0;

	for (struct session *s = cp->sessions; s; s = s->next)
		if (s != except && s->plane && !strcmp(s->tenant, tenant))
			n++;
	return n;
}

static void on_hello(struct session *ss, Lantern__V1__DpHello *h)
{
	struct cp *cp = ss->cp;
	char details[512];
	struct plane *p = auth(cp, h->plane_id, h->session_token, details, sizeof(details));
	int n;

	if (!p) {
		rpc_stream_finish(ss->s, RPC_UNAUTHENTICATED, details);
		return;
	}
	/* a plane's newer stream replaces its older one (a reconnect the CP has not noticed) */
	n = tenant_streams(cp, p->tenant, p->stream);
	if (n >= cp->o.max_streams_per_tenant) {
		snprintf(details, sizeof(details), "tenant %s already has %d RunStreams open "
			 "(LANTERN_DP_MAX_STREAMS_PER_TENANT=%d)", p->tenant, n,
			 cp->o.max_streams_per_tenant);
		log_warn("plane %s: %s", p->id, details);
		rpc_stream_finish(ss->s, RPC_RESOURCE_EXHAUSTED, details);
		return;
	}
	if (p->stream) {
		p->stream->plane = NULL;
		rpc_stream_finish(p->stream->s, 10 /* ABORTED */, "replaced by a newer RunStream");
	}
	ss->plane = p;
	snprintf(ss->tenant, sizeof(ss->tenant), "%s", p->tenant);
	p->stream = ss;
	log_info("plane %s (%s): RunStream open", p->id, p->hostname);
	for (struct cprun *r = cp->runs; r; r = r->next) {
		if (cp_state_final(r->state) || strcmp(r->plane, p->id))
			continue;
		if (r->state == RS_ASSIGNED)
			cp_send_assignment(cp, r);
		if (r->cancel_requested)
			cp_send_cancel(cp, r);
	}
	cp_dispatch(cp);
}

/* The run a plane reports about, if it is that plane's under the current epoch. */
static struct cprun *reported_run(struct session *ss, const char *run_id, int64_t epoch,
				  const char **why)
{
	struct cprun *r = cp_run(ss->cp, run_id);

	if (!r || strcmp(r->plane, ss->plane->id)) {
		*why = "unknown run id";
		return NULL;
	}
	if (epoch && epoch != r->epoch) {
		*why = "stale fencing epoch";
		return NULL;
	}
	return r;
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

/* Signs an instance's token for a run of this plane; the answer goes back on the stream. */
static void on_identity_request(struct session *ss, Lantern__V1__DpIdentityRequest *rq)
{
	Lantern__V1__DpIdentityToken t = LANTERN__V1__DP_IDENTITY_TOKEN__INIT;
	Lantern__V1__DpRunStreamServerMsg m = LANTERN__V1__DP_RUN_STREAM_SERVER_MSG__INIT;
	const char *why = NULL;
	struct cprun *r = reported_run(ss, rq->run_id, rq->fencing_epoch, &why);
	char err[256] = "", *tok = NULL;
	struct rpc_buf b;

	if (!r)
		snprintf(err, sizeof(err), "run %s: %s", rq->run_id, why);
	else if (cp_state_final(r->state))
		snprintf(err, sizeof(err), "run %s has ended", rq->run_id);
	else
		tok = cp_identity_token(ss->cp, r, rq->instance_id, rq->public_key.data, rq->public_key.len,
					rq->expires_at_unix, err, sizeof(err));
	if (!tok)
		log_warn("plane %s: no identity token for instance %s: %s", ss->plane->id, rq->instance_id, err);
	t.run_id = rq->run_id;
	t.instance_id = rq->instance_id;
	t.token = tok ? tok : "";
	t.error = err;
	m.msg_case = LANTERN__V1__DP_RUN_STREAM_SERVER_MSG__MSG_IDENTITY_TOKEN;
	m.identity_token = &t;
	PACK(dp_run_stream_server_msg, &m, &b);
	if (b.data)
		cp_session_send(ss, b.data, b.len);
	free(b.data);
	free(tok);
}

static void on_report(struct session *ss, Lantern__V1__DpRunStreamClientMsg *m)
{
	struct cp *cp = ss->cp;
	const char *why = NULL;
	struct cprun *r;

	switch (m->msg_case) {
	case LANTERN__V1__DP_RUN_STREAM_CLIENT_MSG__MSG_ACCEPTED:
		if (!(r = reported_run(ss, m->accepted->run_id, m->accepted->fencing_epoch, &why))) {
			log_warn("plane %s: accepted %s: %s", ss->plane->id, m->accepted->run_id, why);
			send_ack(ss, m->accepted->run_id, why);
		} else if (r->state == RS_ASSIGNED) {
			r->state = RS_ACCEPTED;
			r->accepted_us = cp_now_us();
			cp_save_run(cp, r);
		}
		break;
	case LANTERN__V1__DP_RUN_STREAM_CLIENT_MSG__MSG_STATUS:
		if (!(r = reported_run(ss, m->status->run_id, m->status->fencing_epoch, &why))) {
			log_warn("plane %s: status of %s: %s", ss->plane->id, m->status->run_id, why);
			send_ack(ss, m->status->run_id, why);
		} else if (!cp_state_final(r->state) &&
			   m->status->status == LANTERN__V1__DP_RUN_STATUS__DP_RUN_STATUS_RUNNING &&
			   r->state != RS_RUNNING) {
			int64_t now = cp_now_us();

			if (!r->accepted_us)
				r->accepted_us = now;
			r->state = RS_RUNNING;
			r->running_us = now;
			if (m->status->detail[0])
				snprintf(r->detail, sizeof(r->detail), "%s", m->status->detail);
			cp_save_run(cp, r);
		} else if (!cp_state_final(r->state) && m->status->detail[0]) {
			snprintf(r->detail, sizeof(r->detail), "%s", m->status->detail);
		}
		break;
	case LANTERN__V1__DP_RUN_STREAM_CLIENT_MSG__MSG_COMPLETED: {
		Lantern__V1__DpRunCompleted *c = m->completed;

		if (!(r = reported_run(ss, c->run_id, c->fencing_epoch, &why))) {
			log_warn("plane %s: completion of %s: %s", ss->plane->id, c->run_id, why);
			send_ack(ss, c->run_id, why);
			break;
		}
		if (c->not_started && !cp_state_final(r->state) && !r->cancel_requested) {
			cp_requeue(cp, r, c->detail);
		} else if (!cp_state_final(r->state)) {
			/* a completion ends the run: one that names a live status (accepted,
			 * running) would leave it placed but no longer counted on its plane */
			enum run_state st = from_dp(c->status);

			if (c->receipt[0])
				cp_receipt_take(cp, r, ss->plane, c->receipt);
			free(r->output_json);
			r->output_json = strdup(c->output_json);
			r->cost_usd = c->cost_usd;
			r->tokens_in = c->tokens_in;
			r->tokens_out = c->tokens_out;
			r->duration_ms = c->duration_ms;
			cp_run_end(cp, r, cp_state_final(st) ? st : RS_FAILED, c->detail);
			cp_dispatch(cp);
		}
		/* recorded now or before (a re-sent completion): either way the node may forget it */
		send_ack(ss, c->run_id, NULL);
		break;
	}
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
	} else if (!ss->plane) {
		if (m->msg_case != LANTERN__V1__DP_RUN_STREAM_CLIENT_MSG__MSG_HELLO)
			rpc_stream_finish(s, RPC_INVALID_ARGUMENT, "the first frame of a RunStream must be Hello");
		else
			on_hello(ss, m->hello);
	} else {
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
	if (ss->plane && ss->plane->stream == ss) {
		ss->plane->stream = NULL;
		log_info("plane %s: RunStream closed (%s%s%s)", ss->plane->id, rpc_status_name(status),
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
	rpc_stream_ref(s);
	pthread_mutex_lock(&cp->mu);
	ss->next = cp->sessions;
	cp->sessions = ss;
	pthread_mutex_unlock(&cp->mu);
	*ops = &session_ops;
	*sarg = ss;
}

const struct rpc_method cp_methods[] = {
	{ RPC_SERVICE "Register", h_register, NULL },
	{ RPC_SERVICE "Heartbeat", h_heartbeat, NULL },
	{ RPC_SERVICE "ReportMetrics", h_metrics, NULL },
	{ RPC_SERVICE "RefreshToken", h_refresh, NULL },
	{ RPC_SERVICE "RunStream", NULL, h_runstream },
};
const size_t cp_n_methods = ARRAY_SIZE(cp_methods);
