/* tunnel_test: the tunnel end to end. One lantern-cp (TLS with a throwaway CA, short
 * intervals) and three lanternd (each with its own state, pin root and cgroup root)
 * registered with it over loopback, plus a raw gRPC client (userspace/rpc) for what a
 * well-behaved node never sends. Covers registration and refused bootstrap tokens,
 * forged and expired session tokens, token refresh, placement by class and load, a
 * class refused by the node's admission, cancel, heartbeat-driven drain, the per-tenant
 * stream cap, bad frames, a completion re-sent after the control plane went away
 * mid-run, a node killed and marked down, the CLI through the control plane, and the
 * standalone path beside it. The whole scenario runs on SQLite, then on a private
 * PostgreSQL server (initdb in a temporary directory, as the postgres user). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "tap.h"
#include "testlib.h"
#include "lantern/rpc.h"
#include "lantern/util.h"
#include "lantern/v1/dataplane.pb-c.h"

#define OPTOK   "tunnel-test-operator-token-0123456789"
#define POINTS  34
#define STREAMS_PER_TENANT 3

static struct tl_env N[3];          /* nodes A, B, C */
static const char *const NN[3] = { "tunA", "tunB", "tunC" };
static char plane_of[3][64];
static char node_flags[3][2048];
static uint16_t grpc_port, http_port;
static pid_t cp_pid;
static struct tl_pg pg;
static char cp_log[512], db_url[512];
static char ca[512], cert[512], key[512], optok[512];
static const char *dbname;
static struct rpc_channel *ch;
static struct rpc_cq *q;

static void ms_sleep(int ms)
{
	usleep((useconds_t)ms * 1000);
}

static uint16_t free_port(void)
{
	uint16_t p = 0;
	int fd = tl_tcp_listen("127.0.0.1", &p);

	if (fd >= 0)
		close(fd);
	return p;
}

/* --- processes: lantern-cp and PostgreSQL --- */

static void cp_stop(int sig)
{
	tl_child_stop(cp_pid, sig);
	cp_pid = 0;
}

static json_t *api(const char *method, const char *path, json_t *body, long *code);

static bool cp_start(const char *extra)
{
	char cmd[4096];

	snprintf(cmd, sizeof(cmd),
		 "exec %s/lantern-cp --listen 127.0.0.1:%u --http 127.0.0.1:%u --tls-cert %s "
		 "--tls-key %s --operator-token-file %s --database '%s' --heartbeat-interval 1 "
		 "--metrics-interval 1 --down-after 3 --ping-interval 1 --max-message 1048576 %s "
		 ">>%s 2>&1", N[0].build, grpc_port, http_port, cert, key, optok, db_url,
		 extra ? extra : "", cp_log);
	cp_pid = fork();
	if (cp_pid == 0) {
		char n[16];

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		snprintf(n, sizeof(n), "%d", STREAMS_PER_TENANT);
		setenv("LANTERN_DP_MAX_STREAMS_PER_TENANT", n, 1);
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	tl_child_track(cp_pid, SIGKILL);
	for (int i = 0; i < 200; i++) {
		long code = 0;
		json_t *j = api("GET", "/v1/data-planes", NULL, &code);

		json_decref(j);
		if (code == 200)
			return true;
		if (waitpid(cp_pid, NULL, WNOHANG) == cp_pid) {
			char *out = NULL;

			tl_child_forget(cp_pid);
			cp_pid = 0;
			tl_sh(&out, NULL, "tail -5 %s", cp_log);
			printf("# lantern-cp exited: %s\n", tl_oneline(out));
			free(out);
			return false;
		}
		ms_sleep(50);
	}
	return false;
}

/* --- the operator API --- */

static json_t *api(const char *method, const char *path, json_t *body, long *code)
{
	char *out = NULL, *nl;
	const char *bf = "/dev/null";
	json_t *j = NULL;

	if (body) {
		char *s = json_dumps(body, JSON_COMPACT);
		bf = tl_file(&N[0], "body.json", "%s", s ? s : "{}");
		free(s);
	}
	*code = 0;
	tl_sh(&out, NULL, "curl -s -m 10 -X %s -H 'Authorization: Bearer %s' --data-binary @%s "
	      "-w '\\n%%{http_code}' http://127.0.0.1:%u%s", method, OPTOK, bf, http_port, path);
	if (out && (nl = strrchr(out, '\n'))) {
		*code = strtol(nl + 1, NULL, 10);
		*nl = '\0';
		j = json_loads(out, 0, NULL);
	}
	free(out);
	return j;
}

static const char *str(json_t *j, const char *k)
{
	return json_string_value(json_object_get(j, k)) ?: "";
}

/* Mints a bootstrap token: returns the plane id, writes the token to file if asked. */
static bool mint(const char *tenant, char *id, size_t idlen, char *tok, size_t toklen)
{
	long code;
	json_t *in = json_pack("{s:s, s:s}", "tenant_id", tenant, "name", "test");
	json_t *j = api("POST", "/v1/data-planes", in, &code);
	bool ok = code == 201 && json_object_get(j, "bootstrap_token");

	if (ok) {
		snprintf(id, idlen, "%s", str(j, "id"));
		snprintf(tok, toklen, "%s", str(j, "bootstrap_token"));
	}
	json_decref(in);
	json_decref(j);
	return ok;
}

static json_t *plane(const char *id)
{
	char path[128];
	long code;

	snprintf(path, sizeof(path), "/v1/data-planes/%s", id);
	return api("GET", path, NULL, &code);
}

static bool plane_flag(const char *id, const char *flag)
{
	json_t *p = plane(id);
	bool v = json_is_true(json_object_get(p, flag));

	json_decref(p);
	return v;
}

static bool wait_plane(const char *id, const char *flag, bool want, int ms)
{
	for (uint64_t t0 = tl_ms(); tl_ms() - t0 < (uint64_t)ms; ms_sleep(100))
		if (plane_flag(id, flag) == want)
			return true;
	return false;
}

static const char *spec_text(const char *name, const char *isolation, const char *image,
			     const char *script)
{
	static char buf[4][2048];
	static int k;
	char *b = buf[k++ % 4];

	snprintf(b, 2048,
		 "apiVersion: lantern.dev/v1\nkind: AgentSpec\nmetadata:\n  name: %s\nspec:\n"
		 "  image_digest: %s\n  isolation: %s\n  network: none\n  limits:\n    memory: 64Mi\n"
		 "  command: [\"/bin/sh\", \"-c\", \"%s\"]\n", name, image, isolation, script);
	return b;
}

/* Submits; returns the run id (static buffer) or "" */
static const char *submit(const char *tenant, const char *spec, const char *pin, const char *idem)
{
	static char id[4][64];
	static int k;
	char *out = id[k++ % 4];
	long code;
	json_t *in = json_pack("{s:s, s:s}", "tenant_id", tenant, "spec", spec);
	json_t *j;

	if (pin)
		json_object_set_new(in, "plane_id", json_string(pin));
	if (idem)
		json_object_set_new(in, "idempotency_key", json_string(idem));
	j = api("POST", "/v1/runs", in, &code);
	snprintf(out, 64, "%s", (code == 202 || code == 200) ? str(j, "id") : "");
	json_decref(in);
	json_decref(j);
	return out;
}

static json_t *run_get(const char *id)
{
	char path[128];
	long code;

	snprintf(path, sizeof(path), "/v1/runs/%s", id);
	return api("GET", path, NULL, &code);
}

/* Waits until the run's status is one of want ("a|b"); returns the run (caller frees). */
static json_t *wait_run(const char *id, const char *want, int ms)
{
	json_t *r = NULL;

	for (uint64_t t0 = tl_ms(); tl_ms() - t0 < (uint64_t)ms; ms_sleep(100)) {
		char pat[64];

		json_decref(r);
		r = run_get(id);
		snprintf(pat, sizeof(pat), "|%s|", str(r, "status"));
		char w[128];
		snprintf(w, sizeof(w), "|%s|", want);
		if (strstr(w, pat))
			return r;
	}
	return r;
}

static int node_of(const char *plane_id)
{
	for (int i = 0; i < 3; i++)
		if (!strcmp(plane_of[i], plane_id))
			return i;
	return -1;
}

/* --- a raw gRPC client --- */

struct ures {
	bool done;
	int status;
	char details[512];
	uint8_t *resp;
	size_t len;
};

static void ucb(void *arg, int status, const char *details, const uint8_t *resp, size_t len)
{
	struct ures *u = arg;

	u->done = true;
	u->status = status;
	snprintf(u->details, sizeof(u->details), "%s", details ? details : "");
	if (resp && (u->resp = malloc(len ? len : 1))) {
		memcpy(u->resp, resp, len);
		u->len = len;
	}
}

static int unary(const char *m, const ProtobufCMessage *req, struct ures *u)
{
	size_t len = protobuf_c_message_get_packed_size(req);
	uint8_t *buf = malloc(len ? len : 1);

	memset(u, 0, sizeof(*u));
	protobuf_c_message_pack(req, buf);
	if (rpc_unary(ch, q, m, buf, len, 5000, ucb, u) < 0)
		u->status = -1, u->done = true;
	free(buf);
	for (uint64_t t0 = tl_ms(); !u->done && tl_ms() - t0 < 8000;)
		rpc_cq_poll(q, 100);
	return u->status;
}

static int do_register(const char *tenant, const char *token, char *plane_id, char *session,
		       size_t slen)
{
	Lantern__V1__DpRegisterRequest rq = LANTERN__V1__DP_REGISTER_REQUEST__INIT;
	struct ures u;

	rq.tenant_id = (char *)tenant;
	rq.agent_token = (char *)token;
	rq.hostname = "tunnel-test";
	if (unary(RPC_SERVICE "Register", &rq.base, &u) == RPC_OK) {
		Lantern__V1__DpRegisterResponse *r = lantern__v1__dp_register_response__unpack(NULL, u.len, u.resp);
		if (r) {
			snprintf(plane_id, 64, "%s", r->plane_id);
			snprintf(session, slen, "%s", r->session_token);
			lantern__v1__dp_register_response__free_unpacked(r, NULL);
		}
	}
	free(u.resp);
	return u.status;
}

static int heartbeat(const char *plane_id, const char *session, struct ures *u)
{
	Lantern__V1__DpHeartbeatRequest rq = LANTERN__V1__DP_HEARTBEAT_REQUEST__INIT;

	rq.plane_id = (char *)plane_id;
	rq.session_token = (char *)session;
	unary(RPC_SERVICE "Heartbeat", &rq.base, u);
	free(u->resp);
	u->resp = NULL;
	return u->status;
}

struct sres {
	bool ended;
	int status;
	char details[512];
	int nmsgs;
	char ack_error[256];
	bool got_ack;
};

static void s_msg(struct rpc_stream *s, void *arg, const uint8_t *msg, size_t len)
{
	struct sres *r = arg;
	Lantern__V1__DpRunStreamServerMsg *m = lantern__v1__dp_run_stream_server_msg__unpack(NULL, len, msg);

	r->nmsgs++;
	if (m && m->msg_case == LANTERN__V1__DP_RUN_STREAM_SERVER_MSG__MSG_COMPLETION_ACK) {
		r->got_ack = true;
		snprintf(r->ack_error, sizeof(r->ack_error), "%s", m->completion_ack->error);
	}
	if (m)
		lantern__v1__dp_run_stream_server_msg__free_unpacked(m, NULL);
}

static void s_end(struct rpc_stream *s, void *arg, int status, const char *details)
{
	struct sres *r = arg;

	r->ended = true;
	r->status = status;
	snprintf(r->details, sizeof(r->details), "%s", details);
}

static const struct rpc_stream_ops sops = { s_msg, s_end };

static struct rpc_stream *sopen(struct sres *r)
{
	struct rpc_stream *s = NULL;

	memset(r, 0, sizeof(*r));
	rpc_stream_open(ch, q, RPC_SERVICE "RunStream", &sops, r, &s);
	return s;
}

static void ssend(struct rpc_stream *s, Lantern__V1__DpRunStreamClientMsg *m)
{
	size_t len = lantern__v1__dp_run_stream_client_msg__get_packed_size(m);
	uint8_t *buf = malloc(len ? len : 1);

	lantern__v1__dp_run_stream_client_msg__pack(m, buf);
	rpc_stream_send(s, buf, len);
	free(buf);
}

static void shello(struct rpc_stream *s, const char *plane_id, const char *session)
{
	Lantern__V1__DpRunStreamClientMsg m = LANTERN__V1__DP_RUN_STREAM_CLIENT_MSG__INIT;
	Lantern__V1__DpHello h = LANTERN__V1__DP_HELLO__INIT;

	h.plane_id = (char *)plane_id;
	h.session_token = (char *)session;
	m.msg_case = LANTERN__V1__DP_RUN_STREAM_CLIENT_MSG__MSG_HELLO;
	m.hello = &h;
	ssend(s, &m);
}

/* Polls until the stream ended or ms passed. */
static void swait(struct sres *r, int ms, bool for_ack)
{
	for (uint64_t t0 = tl_ms(); tl_ms() - t0 < (uint64_t)ms;) {
		if (r->ended || (for_ack && r->got_ack))
			return;
		rpc_cq_poll(q, 50);
	}
}

static void sclose(struct rpc_stream *s, struct sres *r)
{
	if (!s)
		return;
	rpc_stream_finish(s, RPC_CANCELLED, "test done");
	swait(r, 2000, false);
	rpc_stream_unref(s);
}

/* --- the scenario --- */

static void scenario(void)
{
	char tok[3][80], pid_x[64], tok_x[80], sess_x[2048], buf[2048], other[80], id[64];
	struct ures u;
	long code;
	json_t *j;
	bool ok;

	snprintf(cp_log, sizeof(cp_log), "%s/lantern-cp-%s.log", N[0].dir, dbname);
	grpc_port = free_port();
	http_port = free_port();
	/* phase 1: a 5 s session TTL, to see expiry and refresh */
	if (!tap_ok(cp_start("--session-ttl 5"), "%s: lantern-cp starts (TLS, migrations)", dbname))
		return;
	{
		struct rpc_tls tls = { .ca_file = ca };
		struct lerr e;
		char target[64];

		snprintf(target, sizeof(target), "127.0.0.1:%u", grpc_port);
		if (rpc_channel_open(target, &tls, &ch, &e) < 0) {
			tap_ok(false, "%s: %s", dbname, e.msg);
			return;
		}
	}

	/* bootstrap tokens */
	ok = true;
	for (int i = 0; i < 3; i++)
		ok = ok && mint("t1", plane_of[i], sizeof(plane_of[i]), tok[i], sizeof(tok[i]));
	ok = ok && mint("t2", id, sizeof(id), other, sizeof(other));
	tap_ok(ok && strlen(tok[0]) == 64, "%s: POST /v1/data-planes mints 32-byte bootstrap tokens", dbname);
	j = api("POST", "/v1/data-planes", NULL, &code);
	json_decref(j);
	{
		char *out = NULL;
		tl_sh(&out, NULL, "curl -s -o /dev/null -w '%%{http_code}' -X POST http://127.0.0.1:%u/v1/runs", http_port);
		tap_ok(code == 400 && tl_has(out, "401"), "%s: operator API: no bearer token is 401 (%s), no body 400 (%ld)",
		       dbname, tl_oneline(out), code);
		free(out);
	}

	/* wrong bootstrap tokens: unknown, and another tenant's */
	{
		char p[64] = "", s[2048] = "";
		int a = do_register("t1", "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff", p, s, sizeof(s));
		int b = do_register("t1", other, p, s, sizeof(s));
		tap_ok(a == RPC_UNAUTHENTICATED && b == RPC_UNAUTHENTICATED,
		       "%s: Register refuses an unknown token (%s) and another tenant's (%s)", dbname,
		       rpc_status_name(a), rpc_status_name(b));
	}

	/* three nodes; C is the only one serving untrusted */
	ok = true;
	for (int i = 0; i < 3; i++) {
		const char *tf = tl_file(&N[i], "bootstrap.token", "%s\n", tok[i]);
		snprintf(buf, sizeof(buf),
			 "--control-plane 127.0.0.1:%u --tenant t1 --bootstrap-token-file %s "
			 "--control-plane-ca %s --max-runs 4 --reconnect-max 1 %s",
			 grpc_port, tf, ca, i < 2 ? "--runtime-handler untrusted=none" : "");
		snprintf(node_flags[i], sizeof(node_flags[i]), "%s", buf);
		ok = ok && tl_daemon_start(&N[i], buf) == 0;
	}
	for (int i = 0; ok && i < 3; i++)
		ok = wait_plane(plane_of[i], "connected", true, 10000);
	tap_ok(ok, "%s: three lanternd register over TLS and open their RunStreams", dbname);
	{
		json_t *p = NULL;
		double mem = 0;

		for (uint64_t t0 = tl_ms(); tl_ms() - t0 < 4000 && mem <= 0; ms_sleep(200)) {
			json_decref(p);
			p = plane(plane_of[1]);
			mem = json_real_value(json_object_get(p, "mem_pct"));
		}
		tap_ok(mem > 0 && tl_has(str(p, "isolation_classes"), "trusted"),
		       "%s: ReportMetrics reaches lantern-cp (memory %.1f%%), classes advertised [%s]",
		       dbname, mem, str(p, "isolation_classes"));
		json_decref(p);
	}

	{
		char p[64] = "", s[2048] = "";
		int a = do_register("t1", tok[0], p, s, sizeof(s));
		tap_ok(a == RPC_UNAUTHENTICATED, "%s: a bootstrap token works once (reuse: %s)", dbname,
		       rpc_status_name(a));
	}

	/* session tokens: valid, forged, for another plane, refreshed, expired */
	ok = mint("tx", id, sizeof(id), tok_x, sizeof(tok_x)) &&
	     do_register("tx", tok_x, pid_x, sess_x, sizeof(sess_x)) == RPC_OK;
	tap_ok(ok && heartbeat(pid_x, sess_x, &u) == RPC_OK, "%s: a session token works for Heartbeat", dbname);
	{
		char forged[2048];
		size_t n = strlen(sess_x);
		int a, b;

		snprintf(forged, sizeof(forged), "%s", sess_x);
		if (n > 10)
			forged[n - 5] = forged[n - 5] == 'A' ? 'B' : 'A';
		char why[512];

		a = heartbeat(pid_x, forged, &u);
		snprintf(why, sizeof(why), "%s", u.details);
		b = heartbeat(plane_of[0], sess_x, &u);
		tap_ok(a == RPC_UNAUTHENTICATED && b == RPC_UNAUTHENTICATED,
		       "%s: a forged token (%s: %s) and another plane's (%s: %s) are refused", dbname,
		       rpc_status_name(a), tl_oneline(why), rpc_status_name(b), tl_oneline(u.details));
	}
	{
		Lantern__V1__DpRefreshTokenRequest rq = LANTERN__V1__DP_REFRESH_TOKEN_REQUEST__INIT;
		Lantern__V1__DpRefreshTokenResponse *r = NULL;
		char fresh[2048] = "";

		rq.plane_id = pid_x;
		rq.session_token = sess_x;
		if (unary(RPC_SERVICE "RefreshToken", &rq.base, &u) == RPC_OK &&
		    (r = lantern__v1__dp_refresh_token_response__unpack(NULL, u.len, u.resp))) {
			snprintf(fresh, sizeof(fresh), "%s", r->session_token);
			lantern__v1__dp_refresh_token_response__free_unpacked(r, NULL);
		}
		free(u.resp);
		ms_sleep(5200);
		int a = heartbeat(pid_x, sess_x, &u);
		tap_ok(a == RPC_UNAUTHENTICATED && tl_has(u.details, "expired"),
		       "%s: an expired session token is refused (%s: %s)", dbname, rpc_status_name(a),
		       tl_oneline(u.details));
		tap_ok(fresh[0] && strcmp(fresh, sess_x), "%s: RefreshToken rotates the token", dbname);
	}
	/* the nodes have lived past their first token: they refreshed it */
	ok = tl_log_contains(&N[0], "session token refreshed") && plane_flag(plane_of[0], "connected") &&
	     plane_flag(plane_of[0], "down") == false;
	tap_ok(ok, "%s: nodes refresh their session before expiry and stay connected", dbname);

	/* bad frames on RunStream */
	{
		struct sres r;
		struct rpc_stream *s = sopen(&r);
		Lantern__V1__DpRunStreamClientMsg m = LANTERN__V1__DP_RUN_STREAM_CLIENT_MSG__INIT;
		Lantern__V1__DpPong pong = LANTERN__V1__DP_PONG__INIT;
		int st1, st2, st3;

		m.msg_case = LANTERN__V1__DP_RUN_STREAM_CLIENT_MSG__MSG_PONG;
		m.pong = &pong;
		ssend(s, &m);
		swait(&r, 3000, false);
		st1 = r.status;
		tap_ok(r.ended && st1 == RPC_INVALID_ARGUMENT && tl_has(r.details, "Hello"),
		       "%s: a first frame that is not Hello ends the stream (%s: %s)", dbname,
		       rpc_status_name(st1), r.details);
		rpc_stream_unref(s);

		s = sopen(&r);
		rpc_stream_send(s, "\xff\xff\xff\xff\x0f garbage", 14);
		swait(&r, 3000, false);
		st2 = r.status;
		rpc_stream_unref(s);

		s = sopen(&r);
		{
			size_t big = 2u << 20;
			char *junk = calloc(1, big);
			rpc_stream_send(s, junk, big);
			free(junk);
		}
		swait(&r, 5000, false);
		st3 = r.status;
		rpc_stream_unref(s);
		tap_ok(st2 == RPC_INVALID_ARGUMENT && st3 == RPC_RESOURCE_EXHAUSTED,
		       "%s: garbage is INVALID_ARGUMENT (%s), a 2 MiB frame RESOURCE_EXHAUSTED (%s)",
		       dbname, rpc_status_name(st2), rpc_status_name(st3));

		/* a fresh session for plane X (its first one expired above) */
		char p2[64], t2[80], s2[2048];
		mint("tx", p2, sizeof(p2), t2, sizeof(t2));
		do_register("tx", t2, pid_x, sess_x, sizeof(sess_x));
		s = sopen(&r);
		shello(s, pid_x, sess_x);
		Lantern__V1__DpRunCompleted c = LANTERN__V1__DP_RUN_COMPLETED__INIT;
		c.run_id = "run-doesnotexist";
		c.status = LANTERN__V1__DP_RUN_STATUS__DP_RUN_STATUS_SUCCEEDED;
		m.msg_case = LANTERN__V1__DP_RUN_STREAM_CLIENT_MSG__MSG_COMPLETED;
		m.completed = &c;
		ssend(s, &m);
		swait(&r, 3000, true);
		tap_ok(r.got_ack && tl_has(r.ack_error, "unknown run"),
		       "%s: a completion for an unknown run id is answered with an error (%s)", dbname,
		       r.ack_error);
		sclose(s, &r);
		(void)s2;
	}
	j = api("GET", "/v1/data-planes", NULL, &code);
	json_decref(j);
	tap_ok(code == 200 && cp_pid > 0 && waitpid(cp_pid, NULL, WNOHANG) == 0,
	       "%s: lantern-cp is still serving after the bad frames", dbname);

	/* the per-tenant stream cap */
	{
		struct sres r[STREAMS_PER_TENANT + 1];
		struct rpc_stream *s[STREAMS_PER_TENANT + 1];
		int ended_ok = 0;

		for (int i = 0; i <= STREAMS_PER_TENANT; i++) {
			char p[64], t[80], ss[2048];

			mint("tcap", id, sizeof(id), t, sizeof(t));
			do_register("tcap", t, p, ss, sizeof(ss));
			s[i] = sopen(&r[i]);
			shello(s[i], p, ss);
			swait(&r[i], 400, false);
		}
		for (int i = 0; i < STREAMS_PER_TENANT; i++)
			if (!r[i].ended)
				ended_ok++;
		tap_ok(ended_ok == STREAMS_PER_TENANT && r[STREAMS_PER_TENANT].ended &&
		       r[STREAMS_PER_TENANT].status == RPC_RESOURCE_EXHAUSTED,
		       "%s: LANTERN_DP_MAX_STREAMS_PER_TENANT=%d: %d open, the next one %s (%s)", dbname,
		       STREAMS_PER_TENANT, ended_ok, rpc_status_name(r[STREAMS_PER_TENANT].status),
		       r[STREAMS_PER_TENANT].details);
		for (int i = 0; i <= STREAMS_PER_TENANT; i++) {
			if (r[i].ended)
				rpc_stream_unref(s[i]);
			else
				sclose(s[i], &r[i]);
		}
	}

	/* the control plane restarts with the usual TTL: the nodes come back on their own */
	cp_stop(SIGTERM);
	ok = cp_start(NULL);
	for (int i = 0; ok && i < 3; i++)
		ok = wait_plane(plane_of[i], "connected", true, 10000);
	tap_ok(ok, "%s: after a control-plane restart every node reconnects with its session", dbname);

	/* placement by load: three long runs land on three nodes */
	{
		const char *r[3];
		int seen[3] = { 0 }, distinct = 0;
		json_t *x;

		for (int i = 0; i < 3; i++) {
			snprintf(buf, sizeof(buf), "load%d", i);
			r[i] = submit("t1", spec_text(buf, "trusted", "host", "sleep 3"), NULL, NULL);
		}
		for (int i = 0; i < 3; i++) {
			x = wait_run(r[i], "running", 8000);
			int n = node_of(str(x, "plane_id"));
			if (n >= 0 && !seen[n]++)
				distinct++;
			json_decref(x);
		}
		tap_ok(distinct == 3, "%s: three runs go to the three least loaded nodes (%d distinct)",
		       dbname, distinct);
		for (int i = 0; i < 3; i++)
			json_decref(wait_run(r[i], "succeeded|failed", 10000));
	}

	/* placement by class, and what nobody serves */
	{
		const char *img = "test@sha256:1111111111111111111111111111111111111111111111111111111111111111";
		const char *u1 = submit("t1", spec_text("cls-untrusted", "untrusted", img, "true"), NULL, NULL);
		const char *h1 = submit("t1", spec_text("cls-hostile", "hostile", img, "true"), NULL, NULL);
		json_t *x = wait_run(u1, "assigned|accepted|running|succeeded|failed", 5000);

		tap_ok(node_of(str(x, "plane_id")) == 2,
		       "%s: an untrusted run goes to the only node advertising untrusted (%s)", dbname,
		       str(x, "plane_id"));
		json_decref(x);
		ms_sleep(1500);
		x = run_get(h1);
		tap_ok(!strcmp(str(x, "status"), "queued"),
		       "%s: a hostile run waits in the queue: no node advertises hostile (%s)", dbname,
		       str(x, "status"));
		json_decref(x);
		snprintf(buf, sizeof(buf), "/v1/runs/%s/cancel", h1);
		json_decref(api("POST", buf, NULL, &code));

		/* pinned by the operator to a node that cannot run it: the node refuses */
		const char *p1 = submit("t1", spec_text("cls-pinned", "untrusted", img, "true"), plane_of[0], NULL);
		x = wait_run(p1, "failed|succeeded", 8000);
		tap_ok(!strcmp(str(x, "status"), "failed") && tl_has(str(x, "detail"), "refused") &&
		       tl_has(str(x, "detail"), "untrusted"),
		       "%s: a node refuses a class it lacks, with the admission reason (%s)", dbname,
		       tl_oneline(str(x, "detail")));
		json_decref(x);
	}

	/* cancel */
	{
		const char *r = submit("t1", spec_text("cancel-me", "trusted", "host", "sleep 30"), NULL, NULL);
		json_t *x = wait_run(r, "running", 8000);

		json_decref(x);
		snprintf(buf, sizeof(buf), "/v1/runs/%s/cancel", r);
		json_decref(api("POST", buf, NULL, &code));
		x = wait_run(r, "cancelled", 10000);
		tap_ok(code == 202 && !strcmp(str(x, "status"), "cancelled"),
		       "%s: POST /v1/runs/{id}/cancel ends a running run (%s)", dbname, str(x, "status"));
		json_decref(x);
	}

	/* idempotency key */
	{
		char a[64], b[64];

		snprintf(a, sizeof(a), "%s", submit("t1", spec_text("idem", "trusted", "host", "true"), NULL, "key-1"));
		snprintf(b, sizeof(b), "%s", submit("t1", spec_text("idem", "trusted", "host", "true"), NULL, "key-1"));
		tap_ok(a[0] && !strcmp(a, b), "%s: the same idempotency key gives the same run (%s, %s)",
		       dbname, a, b);
		json_decref(wait_run(a, "succeeded|failed", 8000));
	}

	/* drain: learned through the heartbeat; new runs go elsewhere, in-flight finish */
	{
		const char *inflight = submit("t1", spec_text("inflight", "trusted", "host", "sleep 2"), plane_of[0], NULL);
		json_t *x = wait_run(inflight, "running", 8000);
		int on_a = 0;

		json_decref(x);
		snprintf(buf, sizeof(buf), "/v1/data-planes/%s/drain", plane_of[0]);
		json_decref(api("POST", buf, NULL, &code));
		ok = false;
		for (uint64_t t0 = tl_ms(); !ok && tl_ms() - t0 < 5000; ms_sleep(100))
			ok = tl_log_contains(&N[0], "draining: no new runs");
		tap_ok(code == 200 && ok, "%s: a drained node learns it from its heartbeat", dbname);
		for (int i = 0; i < 4; i++) {
			snprintf(buf, sizeof(buf), "drained%d", i);
			const char *r = submit("t1", spec_text(buf, "trusted", "host", "true"), NULL, NULL);
			x = wait_run(r, "succeeded|failed", 8000);
			on_a += node_of(str(x, "plane_id")) == 0;
			json_decref(x);
		}
		x = wait_run(inflight, "succeeded|failed", 8000);
		tap_ok(on_a == 0 && !strcmp(str(x, "status"), "succeeded"),
		       "%s: no new run on the drained node (%d), its in-flight run finished (%s)", dbname,
		       on_a, str(x, "status"));
		json_decref(x);
		json_t *body = json_pack("{s:b}", "draining", 0);
		snprintf(buf, sizeof(buf), "/v1/data-planes/%s/drain", plane_of[0]);
		json_decref(api("POST", buf, body, &code));
		json_decref(body);
	}

	/* the stream is cut mid-run: the completion arrives after reconnect, once */
	{
		const char *r = submit("t1", spec_text("cut", "trusted", "host", "sleep 2"), plane_of[1], NULL);
		json_t *x = wait_run(r, "running", 8000);

		json_decref(x);
		cp_stop(SIGKILL);
		ms_sleep(3000);
		ok = cp_start(NULL);
		x = wait_run(r, "succeeded|failed", 10000);
		tap_ok(ok && !strcmp(str(x, "status"), "succeeded") &&
		       tl_log_contains(&N[1], "RunStream ended"),
		       "%s: a completion made while the stream was down is re-sent and recorded (%s)",
		       dbname, str(x, "status"));
		json_decref(x);
		ok = false;
		for (uint64_t t0 = tl_ms(); !ok && tl_ms() - t0 < 5000; ms_sleep(100)) {
			char path[600];
			DIR *d;
			struct dirent *de;
			int n = 0;

			snprintf(path, sizeof(path), "%s/tunnel/outbox", N[1].state);
			if ((d = opendir(path))) {
				while ((de = readdir(d)))
					n += de->d_name[0] != '.';
				closedir(d);
				ok = n == 0;
			}
		}
		tap_ok(ok, "%s: the node forgets the completion once acknowledged (outbox empty)", dbname);
	}

	/* the CLI through the control plane, and the local path beside it */
	{
		char *out = NULL, *err = NULL;
		const char *f = tl_file(&N[0], "cli.yaml", "%s", spec_text("cli", "trusted", "host", "exit 0"));
		int rc = tl_sh(&out, &err, "LANTERN_CP_TOKEN=%s %s/lantern --control-plane http://127.0.0.1:%u run %s --tenant t1",
			       OPTOK, N[0].build, http_port, f);

		tap_ok(rc == 0 && tl_has(err, "succeeded"), "%s: lantern --control-plane URL run --tenant follows to the end (%d: %s)",
		       dbname, rc, tl_oneline(err));
		free(out);
		free(err);
		out = err = NULL;
		rc = tl_lantern(&N[1], &out, &err, "run %s", f);
		tap_ok(rc == 0, "%s: lantern run on a node's socket still works beside the control plane (%d: %s)",
		       dbname, rc, tl_oneline(err));
		free(out);
		free(err);
	}

	/* a restarted lanternd resumes its saved session: the bootstrap token is spent */
	tl_daemon_stop(&N[0], SIGTERM);
	ok = tl_daemon_start(&N[0], node_flags[0]) == 0;
	{
		bool resumed = false;

		for (uint64_t t0 = tl_ms(); ok && !resumed && tl_ms() - t0 < 8000; ms_sleep(100))
			resumed = tl_log_contains(&N[0], "resuming session of plane") &&
				  tl_log_contains(&N[0], "RunStream open");
		const char *r = submit("t1", spec_text("after-restart", "trusted", "host", "true"), plane_of[0], NULL);
		json_t *x = wait_run(r, "succeeded|failed", 8000);
		tap_ok(resumed && !strcmp(str(x, "status"), "succeeded"),
		       "%s: a restarted lanternd resumes its session and takes runs (%s)", dbname,
		       str(x, "status"));
		json_decref(x);
	}

	/* a node killed: marked down after missed heartbeats, its run fails with the reason */
	{
		const char *r = submit("t1", spec_text("orphan", "trusted", "host", "sleep 30"), plane_of[2], NULL);
		json_t *x = wait_run(r, "running", 8000);

		json_decref(x);
		tl_daemon_stop(&N[2], SIGKILL);
		ok = wait_plane(plane_of[2], "down", true, 8000);
		tap_ok(ok, "%s: a killed node is marked down after 3 missed heartbeats", dbname);
		x = wait_run(r, "failed", 3000);
		tap_ok(!strcmp(str(x, "status"), "failed") && tl_has(str(x, "detail"), "down"),
		       "%s: its run fails with the reason (%s)", dbname, tl_oneline(str(x, "detail")));
		json_decref(x);
		x = run_get(submit("t1", spec_text("after", "trusted", "host", "true"), NULL, NULL));
		json_decref(x);
	}

	/* what the database kept */
	{
		char *out = NULL;

		if (!strcmp(dbname, "sqlite"))
			tl_sh(&out, NULL, "sqlite3 '%s' 'SELECT version FROM schema_migrations'", db_url);
		else
			tl_sh(&out, NULL, "psql -At '%s' -c 'SELECT version FROM schema_migrations'", db_url);
		tap_ok(tl_has(out, "1"), "%s: schema_migrations records migration 1 (%s)", dbname, tl_oneline(out));
		free(out);
	}
	cp_stop(SIGTERM);
	tl_daemon_stop(&N[0], SIGTERM);
	tl_daemon_stop(&N[1], SIGTERM);
	rpc_channel_close(ch);
	ch = NULL;
}

static void reset_nodes(void)
{
	for (int i = 0; i < 3; i++) {
		tl_env_cleanup(&N[i]);
		tl_env_init(&N[i], NN[i]);
	}
}

int main(void)
{
	const char *why = tl_env_missing();

	setvbuf(stdout, NULL, _IOLBF, 0);
	tap_plan(POINTS * 2);
	if (why) {
		for (int i = 0; i < POINTS * 2; i++)
			tap_skip(why, "tunnel");
		return tap_failures ? 1 : 0;
	}
	for (int i = 0; i < 3; i++)
		tl_env_init(&N[i], NN[i]);
	rpc_init();
	q = rpc_cq_new();

	snprintf(ca, sizeof(ca), "%s/ca.pem", N[0].dir);
	snprintf(cert, sizeof(cert), "%s/server.pem", N[0].dir);
	snprintf(key, sizeof(key), "%s/server.key", N[0].dir);
	snprintf(optok, sizeof(optok), "%s", tl_file(&N[0], "operator.token", "%s\n", OPTOK));
	tl_file(&N[0], "san.cnf", "subjectAltName=IP:127.0.0.1,DNS:localhost\n");
	tl_sh(NULL, NULL,
	      "cd %s && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
	      "-keyout ca.key -out ca.pem -days 1 -subj /CN=lantern-test-ca && "
	      "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout server.key "
	      "-out server.csr -subj /CN=localhost && openssl x509 -req -in server.csr -CA ca.pem "
	      "-CAkey ca.key -CAcreateserial -out server.pem -days 1 -extfile san.cnf",
	      N[0].dir);

	dbname = "sqlite";
	snprintf(db_url, sizeof(db_url), "%s/cp.db", N[0].dir);
	scenario();
	while (tap_count < POINTS)
		tap_ok(false, "sqlite: not reached");

	reset_nodes();
	dbname = "postgresql";
	snprintf(optok, sizeof(optok), "%s", tl_file(&N[0], "operator.token", "%s\n", OPTOK));
	tl_file(&N[0], "san.cnf", "subjectAltName=IP:127.0.0.1,DNS:localhost\n");
	tl_sh(NULL, NULL,
	      "cd %s && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
	      "-keyout ca.key -out ca.pem -days 1 -subj /CN=lantern-test-ca && "
	      "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout server.key "
	      "-out server.csr -subj /CN=localhost && openssl x509 -req -in server.csr -CA ca.pem "
	      "-CAkey ca.key -CAcreateserial -out server.pem -days 1 -extfile san.cnf",
	      N[0].dir);
	if (tl_pg_start(&pg, "tunnel", false) == 0) {
		snprintf(db_url, sizeof(db_url), "%s", pg.url);
		scenario();
	} else {
		fprintf(stderr, "# PostgreSQL did not start; see %s/postgres.log\n", pg.dir);
	}
	while (tap_count < POINTS * 2)
		tap_ok(false, "postgresql: not reached");

	/* lantern-cp, PostgreSQL and the nodes are stopped at exit (testlib) */
	rpc_cq_free(q);
	return tap_failures ? 1 : 0;
}
