/* cp_service.c (fuzz target "cp_service"): lantern-cp's DataPlaneService handlers
 * (tools/lantern-cp/service.c) and the leader's work they lead to (sched.c: placement,
 * the watchdog, planes gone down) on what nodes send: the unary calls Register,
 * Heartbeat, ReportMetrics and RefreshToken, and RunStream frames, through the method
 * table lantern-cp serves (cp_methods) and the in-memory transport of fake_rpc.h. The
 * control plane is the database-backed one: one replica, the leader, on SQLite in
 * memory; every state is read back from the rows. Each input starts from the same rows:
 * two planes with known bootstrap tokens (tenant-a, tenant-b), three queued runs.
 *
 * Input: actions, each a byte and what it needs: a unary call (method byte, request
 * bytes), a new RunStream, a frame on stream i, the end of stream i, a periodic round
 * (main.c's tick as when a second has passed: leader lease, watchdog, liveness,
 * placement, deliveries, pings), an operator's cancel of run i (what http.c's cancel
 * writes), time passing (flags: the runs' leases expire, the planes' heartbeats are
 * late). After every action the main loop's round between completions runs: placement
 * when something woke it, the deliveries woken. The fuzzer cannot sign session tokens:
 * in a request or a Hello that unpacks, a plane_id "@" becomes plane a's id and a
 * session_token "@" a valid token for the plane named (then the request is packed
 * again), so the fuzzer reaches what lies behind authentication.
 *
 * Properties beyond the sanitizers, after every action:
 *  - every response and every frame lantern-cp sends unpacks;
 *  - a plane's active runs (what placement counts against it: its runs in a live
 *    status) are its placed, unfinished runs: a queued run names no plane, a live run
 *    (assigned, accepted, running) names a registered plane under an epoch and holds a
 *    lease, and no plane has more live runs than its max_runs;
 *  - a plane shows connected to this replica exactly while a RunStream of it is held;
 *  - the operator API can show every plane and run (state_plane_json, state_run_json). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cp.h"
#include "fake_rpc.h"
#include "fuzzlib.h"
#include "lantern/v1/dataplane.pb-c.h"

#define MAX_STREAMS 4
#define PLANE_A "dp-000000000000000a"
#define PLANE_B "dp-000000000000000b"
#define RUN_1 "run-0000000000000001"
#define RUN_2 "run-0000000000000002"
#define RUN_3 "run-0000000000000003"

static struct cp *cp;

static void on_sent(struct rpc_stream *s, const uint8_t *msg, size_t len)
{
	Lantern__V1__DpRunStreamServerMsg *m = lantern__v1__dp_run_stream_server_msg__unpack(NULL, len, msg);

	FZ_CHECK(m, "lantern-cp sent a RunStream frame that does not unpack (%zu bytes)", len);
	lantern__v1__dp_run_stream_server_msg__free_unpacked(m, NULL);
}

/* plane_id and session_token "@" stand for plane a and a valid token for the plane */
static void stand_in(char **plane_id, char **token, char **keep_plane, char **keep_token)
{
	struct plane p;
	struct lerr e;
	bool known;
	int64_t exp;

	*keep_plane = *keep_token = NULL;
	if (*plane_id && !strcmp(*plane_id, "@")) {
		*keep_plane = *plane_id;
		*plane_id = strdup(PLANE_A);
	}
	if (*token && !strcmp(*token, "@")) {
		pthread_mutex_lock(&cp->mu);
		known = state_plane(cp, *plane_id ? *plane_id : "", &p, &e) == 1;
		pthread_mutex_unlock(&cp->mu);
		*keep_token = *token;
		*token = token_session_new(cp, *plane_id ? *plane_id : "", known ? p.tenant : "tenant-a",
					   3600, &exp);
	}
}

static void restore(char **plane_id, char **token, char *keep_plane, char *keep_token)
{
	if (keep_plane) {
		free(*plane_id);
		*plane_id = keep_plane;
	}
	if (keep_token) {
		free(*token);
		*token = keep_token;
	}
}

/* Unpacks msg as d; if it names "@", packs it again with the stand-ins into *out. */
static void with_stand_ins(const ProtobufCMessageDescriptor *d, const uint8_t *msg, size_t len,
			   uint8_t **out, size_t *out_len)
{
	ProtobufCMessage *m = protobuf_c_message_unpack(d, NULL, len, msg);
	char **pid = NULL, **tok = NULL, *kp, *kt;

	*out = NULL;
	if (!m)
		return;
	if (d == &lantern__v1__dp_heartbeat_request__descriptor) {
		pid = &((Lantern__V1__DpHeartbeatRequest *)m)->plane_id;
		tok = &((Lantern__V1__DpHeartbeatRequest *)m)->session_token;
	} else if (d == &lantern__v1__dp_metrics_report__descriptor) {
		pid = &((Lantern__V1__DpMetricsReport *)m)->plane_id;
		tok = &((Lantern__V1__DpMetricsReport *)m)->session_token;
	} else if (d == &lantern__v1__dp_refresh_token_request__descriptor) {
		pid = &((Lantern__V1__DpRefreshTokenRequest *)m)->plane_id;
		tok = &((Lantern__V1__DpRefreshTokenRequest *)m)->session_token;
	} else if (d == &lantern__v1__dp_run_stream_client_msg__descriptor &&
		   ((Lantern__V1__DpRunStreamClientMsg *)m)->msg_case ==
			   LANTERN__V1__DP_RUN_STREAM_CLIENT_MSG__MSG_HELLO) {
		pid = &((Lantern__V1__DpRunStreamClientMsg *)m)->hello->plane_id;
		tok = &((Lantern__V1__DpRunStreamClientMsg *)m)->hello->session_token;
	}
	if (pid) {
		stand_in(pid, tok, &kp, &kt);
		if (kp || kt) {
			*out_len = protobuf_c_message_get_packed_size(m);
			*out = malloc(*out_len + 1);
			protobuf_c_message_pack(m, *out);
		}
		restore(pid, tok, kp, kt);
	}
	protobuf_c_message_free_unpacked(m, NULL);
}

static const struct {
	const ProtobufCMessageDescriptor *req, *resp;
} unary[] = {
	{ &lantern__v1__dp_register_request__descriptor, &lantern__v1__dp_register_response__descriptor },
	{ &lantern__v1__dp_heartbeat_request__descriptor, &lantern__v1__dp_heartbeat_ack__descriptor },
	{ &lantern__v1__dp_metrics_report__descriptor, &lantern__v1__dp_metrics_ack__descriptor },
	{ &lantern__v1__dp_refresh_token_request__descriptor, &lantern__v1__dp_refresh_token_response__descriptor },
};

static void call(unsigned i, const uint8_t *req, size_t len)
{
	struct rpc_buf resp = { 0 };
	char details[512] = "";
	uint8_t *sub;
	size_t sub_len;
	int st;

	with_stand_ins(unary[i].req, req, len, &sub, &sub_len);
	st = cp_methods[i].unary(cp, sub ? sub : req, sub ? sub_len : len, &resp, details,
				 sizeof(details));
	if (st == RPC_OK) {
		ProtobufCMessage *m = protobuf_c_message_unpack(unary[i].resp, NULL, resp.len, resp.data);

		FZ_CHECK(m, "%s answered OK with a response that does not unpack", cp_methods[i].path);
		protobuf_c_message_free_unpacked(m, NULL);
	} else {
		FZ_CHECK(details[0], "%s answered %d without details", cp_methods[i].path, st);
	}
	free(resp.data);
	free(sub);
}

static void frame(struct rpc_stream *s, const uint8_t *msg, size_t len)
{
	uint8_t *sub;
	size_t sub_len;

	with_stand_ins(&lantern__v1__dp_run_stream_client_msg__descriptor, msg, len, &sub, &sub_len);
	fake_rpc_deliver(s, sub ? sub : msg, sub ? sub_len : len);
	free(sub);
}

struct runs_seen {
	int n, live_of[2];
	const char *planes[2];
};

static void run_seen(void *arg, struct cprun *r)
{
	struct runs_seen *rs = arg;
	json_t *j = state_run_json(r);
	bool live = r->state != RS_QUEUED && !cp_state_final(r->state);

	FZ_CHECK(j, "the operator API cannot show run %s (detail \"%s\")", r->id, r->detail);
	json_decref(j);
	rs->n++;
	FZ_CHECK(r->state != RS_QUEUED || !r->plane[0], "run %s is queued and placed on %s", r->id,
		 r->plane);
	if (!live)
		return;
	FZ_CHECK(r->plane[0] && r->epoch > 0 && r->lease_expires_us > 0, "run %s is %s on plane \"%s\" "
		 "(epoch %lld) without a lease (expires %lld)", r->id, cp_state_name(r->state), r->plane,
		 (long long)r->epoch, (long long)r->lease_expires_us);
	FZ_CHECK(!strcmp(r->plane, rs->planes[0]) || !strcmp(r->plane, rs->planes[1]),
		 "run %s is %s on plane \"%s\", which does not exist", r->id, cp_state_name(r->state),
		 r->plane);
	rs->live_of[strcmp(r->plane, rs->planes[0]) ? 1 : 0]++;
}

static void count_row(void *arg, int ncol, char **v)
{
	*(int *)arg = ncol > 0 && v[0] ? atoi(v[0]) : -1;
}

static void check_state(void)
{
	struct plane *planes = NULL;
	struct runs_seen rs = { .planes = { PLANE_A, PLANE_B } };
	struct lerr e = { 0 };
	int n = -1;

	FZ_CHECK(state_planes(cp, &planes, &e) == 2, "planes: %s", e.msg);
	FZ_CHECK(state_runs(cp, "1 = 1", 0, NULL, run_seen, &rs, &e) >= 0 &&
		 db_query(cp->db, "SELECT count(*) FROM runs", 0, NULL, count_row, &n, &e) == 1,
		 "runs: %s", e.msg);
	FZ_CHECK(rs.n == n, "%d runs, %d of them readable", n, rs.n);
	for (struct plane *p = planes; p; p = p->next) {
		json_t *j = state_plane_json(p, cp_now_us(), 0);
		int live = rs.live_of[strcmp(p->id, PLANE_A) ? 1 : 0];
		bool held = false;

		FZ_CHECK(j, "the operator API cannot show plane %s (hostname \"%s\", classes \"%s\")",
			 p->id, p->hostname, p->classes);
		json_decref(j);
		FZ_CHECK(!live || p->registered, "plane %s is not registered and has %d live runs", p->id,
			 live);
		FZ_CHECK(!p->max_runs || live <= p->max_runs, "plane %s has %d live runs, its max_runs is %d",
			 p->id, live, p->max_runs);
		for (struct session *s = cp->sessions; s; s = s->next)
			held |= !strcmp(s->plane, p->id);
		FZ_CHECK(held == !strcmp(p->stream_replica, cp->replica), "plane %s: stream_replica \"%s\", "
			 "this replica %s its stream", p->id, p->stream_replica, held ? "holds" : "does not hold");
	}
	state_planes_free(planes);
}

static void add_plane(const char *id, const char *tenant, const char *token)
{
	char hash[65];
	const char *p[] = { id, tenant, hash };
	struct lerr e;

	token_hash(token, hash);
	FZ_CHECK(db_exec(cp->db, "INSERT INTO data_planes (id, tenant_id, name, token_hash, created_at) "
			 "VALUES ($1, $2, 'fuzz', $3, 1)", 3, p, &e) == 1, "%s", e.msg);
}

static void add_run(const char *id, const char *tenant, const char *isolation)
{
	struct cprun r = { .created_us = 1 };
	struct lerr e;

	snprintf(r.id, sizeof(r.id), "%s", id);
	snprintf(r.tenant, sizeof(r.tenant), "%s", tenant);
	snprintf(r.isolation, sizeof(r.isolation), "%s", isolation);
	r.config_json = "{\"apiVersion\":\"lantern.dev/v1\",\"kind\":\"AgentSpec\"}";
	r.input_json = "{}";
	FZ_CHECK(state_run_insert(cp, &r, &e) == 1, "%s", e.msg);
}

/* What is due after an action, as main.c's loop does between completions (periodic:
 * as when every period has passed). A stream lantern-cp finished ends: gRPC ends a
 * stream once the server's status is sent. */
static void main_round(struct rpc_stream **streams, bool periodic)
{
	bool place;
	int st;

	pthread_mutex_lock(&cp->mu);
	if (periodic) {
		leader_tick(cp);
		FZ_CHECK(cp->leader, "the only replica does not lead");
		/* it has led for long: the watchdog and liveness judge at once */
		cp->leader_since_us = 0;
		sched_watchdog(cp);
		sched_liveness(cp);
	}
	place = wake_take_sched(cp);
	if (place || periodic)
		sched_place(cp);
	service_deliver_woken(cp);
	if (periodic)
		service_tick(cp);
	pthread_mutex_unlock(&cp->mu);
	for (unsigned i = 0; i < MAX_STREAMS; i++)
		if (streams[i] && fake_rpc_finished(streams[i], &st))
			fake_rpc_end(streams[i], st, "finished");
}

/* An operator's cancel, as http.c writes it: a queued run ends, a placed one is asked
 * of its node. */
static void cancel(unsigned i)
{
	static const char *const ids[] = { RUN_1, RUN_2, RUN_3 };
	struct cprun r;
	struct lerr e;
	char fi[24];
	const char *v[] = { ids[i % 3], I64(fi, cp_now_us()) };

	pthread_mutex_lock(&cp->mu);
	if (state_run(cp, v[0], &r, &e) == 1 && !cp_state_final(r.state)) {
		if (db_exec(cp->db, "UPDATE runs SET status = 'cancelled', detail = 'cancelled before "
			    "placement', finished_us = $2 WHERE id = $1 AND status = 'queued'", 2, v, &e) != 1 &&
		    db_exec(cp->db, "UPDATE runs SET cancel_requested = 1, cancel_sent = 0 WHERE id = $1 "
			    "AND status IN " RS_LIVE_SQL, 1, v, &e) == 1)
			wake_plane(cp, r.plane);
	}
	state_run_clear(cp, &r);
	pthread_mutex_unlock(&cp->mu);
}

/* Time passes: bit 0, the live runs' leases expire; bit 1, the planes' last heartbeats
 * are older than the liveness window. */
static void time_passes(unsigned flags)
{
	struct lerr e;

	pthread_mutex_lock(&cp->mu);
	if (flags & 1)
		db_exec(cp->db, "UPDATE runs SET lease_expires_us = 1 WHERE lease_expires_us > 0 AND "
			"status IN " RS_LIVE_SQL, 0, NULL, &e);
	if (flags & 2)
		db_exec(cp->db, "UPDATE data_planes SET hb_us = 1 WHERE hb_us > 0", 0, NULL, &e);
	pthread_mutex_unlock(&cp->mu);
}

/* The database and the signing key are made once; each input starts from the same rows,
 * with no leader. */
static void cp_open(void)
{
	struct lerr e = { 0 };
	char **planes;
	size_t n;

	FZ_CHECK(db_exec(cp->db, "DELETE FROM data_planes", 0, NULL, &e) >= 0 &&
		 db_exec(cp->db, "DELETE FROM runs", 0, NULL, &e) >= 0 &&
		 db_exec(cp->db, "DELETE FROM receipts", 0, NULL, &e) >= 0 &&
		 db_exec(cp->db, "DELETE FROM cp_replicas", 0, NULL, &e) >= 0 &&
		 db_exec(cp->db, "UPDATE cp_leader SET holder = '', epoch = 0, expires_us = 0", 0, NULL,
			 &e) == 1, "%s", e.msg);
	cp->leader = false;
	cp->leader_epoch = 0;
	wake_take_sched(cp);
	wake_take_planes(cp, &planes, &n);
	for (size_t i = 0; i < n; i++)
		free(planes[i]);
	free(planes);
	add_plane(PLANE_A, "tenant-a", "bootstrap-token");
	add_plane(PLANE_B, "tenant-b", "bootstrap-token-b");
	add_run(RUN_1, "tenant-a", "trusted");
	add_run(RUN_2, "tenant-a", "standard");
	add_run(RUN_3, "tenant-b", "trusted");
}

static void cp_close(void)
{
	FZ_CHECK(!cp->sessions, "a session outlived its stream");
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct lerr e = { 0 };

	fake_rpc_sent = on_sent;
	cp = calloc(1, sizeof(*cp));
	cp->o = (struct cp_opts){ .heartbeat_s = 30, .metrics_s = 60, .session_ttl_s = 3600,
				  .down_after = 3, .ping_s = 15, .max_message = 4 << 20,
				  .max_streams_per_tenant = 2, .lease_ttl_ms = 30000,
				  .leader_ttl_ms = 10000, .database = ":memory:" };
	snprintf(cp->replica, sizeof(cp->replica), "fuzz-replica");
	pthread_mutex_init(&cp->mu, NULL);
	FZ_CHECK(db_open(cp->o.database, &cp->db, &e) == 0 && db_migrate(cp->db, &e) == 0 &&
		 token_keys_load(cp, &e) == 0 && wake_start(cp, &e) == 0, "control plane: %s", e.msg);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct rpc_stream *streams[MAX_STREAMS] = { 0 };
	struct fz f = { data, size };
	const struct rpc_method *runstream = &cp_methods[4];

	cp_open();
	main_round(streams, true);
	while (f.n) {
		unsigned op = fz_u8(&f) % 7, i;
		const uint8_t *p;
		size_t len;
		int st;

		switch (op) {
		case 0:
			i = fz_u8(&f) % 4;
			p = fz_piece(&f, &len);
			call(i, p, len);
			break;
		case 1:
			for (i = 0; i < MAX_STREAMS && streams[i]; i++)
				;
			if (i < MAX_STREAMS)
				streams[i] = fake_rpc_serve(runstream, cp);
			break;
		case 2:
			i = fz_u8(&f) % MAX_STREAMS;
			p = fz_piece(&f, &len);
			if (streams[i])
				frame(streams[i], p, len);
			break;
		case 3:
			i = fz_u8(&f) % MAX_STREAMS;
			st = fz_u8(&f) % 17;
			if (streams[i]) {
				fake_rpc_end(streams[i], st, "node went away");
				fake_rpc_release(streams[i]);
				streams[i] = NULL;
			}
			break;
		case 4:
			main_round(streams, true);
			break;
		case 5:
			cancel(fz_u8(&f) % 3);
			break;
		case 6:
			time_passes(fz_u8(&f));
			break;
		}
		if (op != 4)
			main_round(streams, false);
		check_state();
	}
	for (unsigned i = 0; i < MAX_STREAMS; i++)
		if (streams[i]) {
			fake_rpc_end(streams[i], RPC_CANCELLED, "done");
			fake_rpc_release(streams[i]);
		}
	cp_close();
	return 0;
}
