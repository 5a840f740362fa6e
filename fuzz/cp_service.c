/* cp_service.c (fuzz target "cp_service"): lantern-cp's DataPlaneService handlers
 * (tools/lantern-cp/service.c, and the scheduling they trigger in sched.c) on what nodes
 * send: the unary calls Register, Heartbeat, ReportMetrics and RefreshToken, and RunStream
 * frames, through the method table lantern-cp serves (cp_methods) and the in-memory
 * transport of fake_rpc.h. Each input starts from the same control plane: SQLite in
 * memory, two planes with known bootstrap tokens (tenant-a, tenant-b), three queued runs.
 *
 * Input: actions, each a byte and what it needs: a unary call (method byte, request
 * bytes), a new RunStream, a frame on stream i, the end of stream i, a periodic tick, an
 * operator's cancel of run i. The fuzzer cannot sign session tokens: in a request or a
 * Hello that unpacks, a plane_id "@" becomes plane a's id and a session_token "@" a
 * valid token for the plane named (then the request is packed again), so the fuzzer
 * reaches what lies behind authentication.
 *
 * Properties beyond the sanitizers:
 *  - every response and every frame lantern-cp sends unpacks;
 *  - a plane's count of active runs is the number of its runs placed and not final;
 *  - the operator API can show every plane and run (cp_plane_json, cp_run_json). */
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
	struct plane *p;
	int64_t exp;

	*keep_plane = *keep_token = NULL;
	if (*plane_id && !strcmp(*plane_id, "@")) {
		*keep_plane = *plane_id;
		*plane_id = strdup(PLANE_A);
	}
	if (*token && !strcmp(*token, "@")) {
		p = cp_plane(cp, *plane_id ? *plane_id : "");
		*keep_token = *token;
		*token = token_session_new(cp, *plane_id ? *plane_id : "", p ? p->tenant : "tenant-a",
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
	int st;

	with_stand_ins(&lantern__v1__dp_run_stream_client_msg__descriptor, msg, len, &sub, &sub_len);
	fake_rpc_deliver(s, sub ? sub : msg, sub ? sub_len : len);
	free(sub);
	/* gRPC ends a stream the server finished once its status is sent */
	if (fake_rpc_finished(s, &st))
		fake_rpc_end(s, st, "finished");
}

static void check_state(void)
{
	for (struct plane *p = cp->planes; p; p = p->next) {
		int active = 0;
		json_t *j = cp_plane_json(cp, p);

		FZ_CHECK(j, "the operator API cannot show plane %s (hostname \"%s\", classes \"%s\")",
			 p->id, p->hostname, p->classes);
		json_decref(j);
		for (struct cprun *r = cp->runs; r; r = r->next)
			if (!strcmp(r->plane, p->id) && r->state != RS_QUEUED && !cp_state_final(r->state))
				active++;
		FZ_CHECK(p->active == active, "plane %s counts %d active runs, has %d", p->id, p->active,
			 active);
	}
	for (struct cprun *r = cp->runs; r; r = r->next) {
		json_t *j = cp_run_json(r);

		FZ_CHECK(j, "the operator API cannot show run %s (detail \"%s\")", r->id, r->detail);
		json_decref(j);
	}
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
	struct cprun *r = calloc(1, sizeof(*r));

	snprintf(r->id, sizeof(r->id), "%s", id);
	snprintf(r->tenant, sizeof(r->tenant), "%s", tenant);
	snprintf(r->isolation, sizeof(r->isolation), "%s", isolation);
	r->config_json = strdup("{\"apiVersion\":\"lantern.dev/v1\",\"kind\":\"AgentSpec\"}");
	r->input_json = strdup("{}");
	r->created_us = 1;
	if (cp->runs_tail)
		cp->runs_tail->next = r;
	else
		cp->runs = r;
	cp->runs_tail = r;
	cp_save_run(cp, r);
}

/* The database and the signing key are made once; each input starts from the same rows. */
static void cp_open(void)
{
	struct lerr e = { 0 };

	FZ_CHECK(db_exec(cp->db, "DELETE FROM data_planes", 0, NULL, &e) >= 0 &&
		 db_exec(cp->db, "DELETE FROM runs", 0, NULL, &e) >= 0, "%s", e.msg);
	add_plane(PLANE_A, "tenant-a", "bootstrap-token");
	add_plane("dp-000000000000000b", "tenant-b", "bootstrap-token-b");
	FZ_CHECK(cp_load(cp, &e) == 0, "cp_load: %s", e.msg);
	add_run("run-0000000000000001", "tenant-a", "trusted");
	add_run("run-0000000000000002", "tenant-a", "standard");
	add_run("run-0000000000000003", "tenant-b", "trusted");
}

static void cp_close(void)
{
	while (cp->planes) {
		struct plane *p = cp->planes;

		cp->planes = p->next;
		free(p);
	}
	while (cp->runs) {
		struct cprun *r = cp->runs;

		cp->runs = r->next;
		free(r->config_json);
		free(r->input_json);
		free(r->output_json);
		free(r);
	}
	cp->runs_tail = NULL;
	FZ_CHECK(!cp->sessions, "a session outlived its stream");
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct lerr e = { 0 };

	fake_rpc_sent = on_sent;
	cp = calloc(1, sizeof(*cp));
	cp->o = (struct cp_opts){ .heartbeat_s = 30, .metrics_s = 60, .session_ttl_s = 3600,
				  .down_after = 3, .ping_s = 15, .max_message = 4 << 20,
				  .max_streams_per_tenant = 2 };
	pthread_mutex_init(&cp->mu, NULL);
	FZ_CHECK(db_open(":memory:", &cp->db, &e) == 0 && db_migrate(cp->db, &e) == 0 &&
		 token_keys_load(cp, &e) == 0, "control plane: %s", e.msg);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct rpc_stream *streams[MAX_STREAMS] = { 0 };
	struct fz f = { data, size };
	const struct rpc_method *runstream = &cp_methods[4];

	cp_open();
	while (f.n) {
		unsigned op = fz_u8(&f) % 6, i;
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
			cp_tick(cp);
			break;
		case 5: {
			struct cprun *r = cp->runs;

			for (i = fz_u8(&f) % 3; r && i; i--)
				r = r->next;
			if (r)
				cp_cancel(cp, r);
			break;
		}
		}
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
