/* interop_test: the tunnel against peers that speak only the platform's
 * dataplane.proto (no project fields), in both directions, on loopback.
 *
 * A lanternd against a control plane of the test's own (a gRPC server on userspace/rpc)
 * that never acknowledges completions, grants no leases and sends no fencing epochs:
 * a refusal's status, reason and exit code reach it in output_json, a short run's
 * duration is not 0, and the node's outbox empties once the stream took the
 * completions instead of re-sending them after every reconnect forever.
 *
 * A platform node against lantern-cp: registered without isolation_classes, it still
 * gets an unpinned run (its admission decides). */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <dirent.h>
#include <unistd.h>

#include <jansson.h>

#include "tap.h"
#include "testlib.h"
#include "lantern/rpc.h"
#include "lantern/tunnel.h"
#include "lantern/util.h"
#include "lantern/v1/dataplane.pb-c.h"

#define OPTOK  "interop-test-operator-token-0123456789"
#define POINTS 5

static struct tl_env N;
static struct rpc_cq *sq, *cq;

/* --- the platform control plane: what the test's server saw --- */

struct seen {
	struct rpc_stream *stream;      /* the node's open RunStream */
	int hellos;
	int completions[2];             /* per run "p-ok", "p-refused" */
	char output[2][1024];
	char detail[2][512];
	int64_t duration[2];
	int status[2];
};
static struct seen seen;

static int run_index(const char *id)
{
	return !strcmp(id, "p-ok") ? 0 : !strcmp(id, "p-refused") ? 1 : -1;
}

static int h_register(void *arg, const uint8_t *req, size_t len, struct rpc_buf *resp, char *d, size_t dl)
{
	Lantern__V1__DpRegisterResponse rs = LANTERN__V1__DP_REGISTER_RESPONSE__INIT;

	/* the platform's four fields and nothing else */
	rs.plane_id = "dp-platform";
	rs.session_token = "platform-session";
	rs.heartbeat_interval_seconds = 1;
	rs.metrics_interval_seconds = 60;
	resp->len = lantern__v1__dp_register_response__get_packed_size(&rs);
	resp->data = malloc(resp->len);
	lantern__v1__dp_register_response__pack(&rs, resp->data);
	return RPC_OK;
}

static int h_heartbeat(void *arg, const uint8_t *req, size_t len, struct rpc_buf *resp, char *d, size_t dl)
{
	Lantern__V1__DpHeartbeatAck a = LANTERN__V1__DP_HEARTBEAT_ACK__INIT;

	a.ok = true;
	resp->len = lantern__v1__dp_heartbeat_ack__get_packed_size(&a);
	resp->data = malloc(resp->len ? resp->len : 1);
	lantern__v1__dp_heartbeat_ack__pack(&a, resp->data);
	return RPC_OK;
}

static int h_metrics(void *arg, const uint8_t *req, size_t len, struct rpc_buf *resp, char *d, size_t dl)
{
	Lantern__V1__DpMetricsAck a = LANTERN__V1__DP_METRICS_ACK__INIT;

	a.ok = true;
	resp->len = lantern__v1__dp_metrics_ack__get_packed_size(&a);
	resp->data = malloc(resp->len ? resp->len : 1);
	lantern__v1__dp_metrics_ack__pack(&a, resp->data);
	return RPC_OK;
}

static void p_msg(struct rpc_stream *s, void *arg, const uint8_t *msg, size_t len)
{
	Lantern__V1__DpRunStreamClientMsg *m = lantern__v1__dp_run_stream_client_msg__unpack(NULL, len, msg);
	int i;

	if (!m)
		return;
	if (m->msg_case == LANTERN__V1__DP_RUN_STREAM_CLIENT_MSG__MSG_HELLO) {
		seen.hellos++;
		seen.stream = s;
	} else if (m->msg_case == LANTERN__V1__DP_RUN_STREAM_CLIENT_MSG__MSG_COMPLETED &&
		   (i = run_index(m->completed->run_id)) >= 0) {
		seen.completions[i]++;
		seen.status[i] = m->completed->status;
		seen.duration[i] = m->completed->duration_ms;
		snprintf(seen.output[i], sizeof(seen.output[i]), "%s", m->completed->output_json);
		snprintf(seen.detail[i], sizeof(seen.detail[i]), "%s", m->completed->detail);
	}
	lantern__v1__dp_run_stream_client_msg__free_unpacked(m, NULL);
}

static void p_end(struct rpc_stream *s, void *arg, int status, const char *details)
{
	if (seen.stream == s)
		seen.stream = NULL;
	rpc_stream_unref(s);
}

static const struct rpc_stream_ops p_ops = { p_msg, p_end };

static void h_runstream(void *arg, struct rpc_stream *s, const struct rpc_stream_ops **ops, void **sarg)
{
	rpc_stream_ref(s);
	*ops = &p_ops;
	*sarg = NULL;
}

static const struct rpc_method platform[] = {
	{ RPC_SERVICE "Register", h_register, NULL },
	{ RPC_SERVICE "Heartbeat", h_heartbeat, NULL },
	{ RPC_SERVICE "ReportMetrics", h_metrics, NULL },
	{ RPC_SERVICE "RunStream", NULL, h_runstream },
};

static void pump(int ms)
{
	for (uint64_t end = tl_ms() + (uint64_t)ms; tl_ms() < end;) {
		rpc_cq_poll(sq, 20);
		if (cq)
			rpc_cq_poll(cq, 1);
	}
}

static void assign(const char *run_id, const char *spec)
{
	Lantern__V1__DpRunStreamServerMsg m = LANTERN__V1__DP_RUN_STREAM_SERVER_MSG__INIT;
	Lantern__V1__DpRunAssignment a = LANTERN__V1__DP_RUN_ASSIGNMENT__INIT;
	size_t len;
	uint8_t *buf;

	a.run_id = (char *)run_id;
	a.tenant_id = "tp";
	a.config_json = (char *)spec;
	a.input_json = "";
	m.msg_case = LANTERN__V1__DP_RUN_STREAM_SERVER_MSG__MSG_ASSIGNMENT;
	m.assignment = &a;
	len = lantern__v1__dp_run_stream_server_msg__get_packed_size(&m);
	buf = malloc(len);
	lantern__v1__dp_run_stream_server_msg__pack(&m, buf);
	rpc_stream_send(seen.stream, buf, len);
	free(buf);
}

static int outbox_files(void)
{
	char path[600];
	struct dirent *de;
	DIR *d;
	int n = 0;

	snprintf(path, sizeof(path), "%s/tunnel/outbox", N.state);
	if (!(d = opendir(path)))
		return -1;
	while ((de = readdir(d)))
		n += de->d_name[0] != '.';
	closedir(d);
	return n;
}

static void node_against_platform(void)
{
	struct rpc_tls tls = { .insecure = true };
	struct rpc_server *srv = NULL;
	struct lerr e = { 0 };
	uint16_t port = 0;
	char addr[64], flags[1024];
	int fd = tl_tcp_listen("127.0.0.1", &port), empty_after = -1;
	json_t *ok_out, *ref_out;

	close(fd);
	snprintf(addr, sizeof(addr), "127.0.0.1:%u", port);
	if (rpc_server_open(addr, &tls, 1 << 20, platform, ARRAY_SIZE(platform), NULL, sq, &srv, &e) < 0) {
		for (int i = 0; i < 3; i++)
			tap_ok(false, "platform control plane: %s", e.msg);
		return;
	}
	snprintf(flags, sizeof(flags), "--control-plane %s --insecure --tenant tp --bootstrap-token-file %s "
		 "--reconnect-max 1", addr, tl_file(&N, "token", "platform-bootstrap\n"));
	if (tl_daemon_start(&N, flags) < 0) {
		for (int i = 0; i < 3; i++)
			tap_ok(false, "lanternd did not start");
		rpc_server_shutdown(srv);
		return;
	}
	for (uint64_t t0 = tl_ms(); !seen.stream && tl_ms() - t0 < 10000;)
		pump(50);
	if (seen.stream) {
		assign("p-ok", "{\"apiVersion\":\"lantern.dev/v1\",\"kind\":\"AgentSpec\",\"metadata\":{\"name\":\"pok\"},"
		       "\"spec\":{\"image_digest\":\"host\",\"isolation\":\"trusted\",\"network\":\"none\","
		       "\"command\":[\"/bin/true\"]}}");
		assign("p-refused", "{\"apiVersion\":\"lantern.dev/v1\",\"kind\":\"AgentSpec\",\"metadata\":"
		       "{\"name\":\"pno\"},\"spec\":{\"image_digest\":\"test@sha256:11111111111111111111111111111111"
		       "11111111111111111111111111111111\",\"isolation\":\"hostile\",\"network\":\"none\","
		       "\"command\":[\"/bin/true\"]}}");
	}
	for (uint64_t t0 = tl_ms(); (!seen.completions[0] || !seen.completions[1]) && tl_ms() - t0 < 15000;)
		pump(50);
	ref_out = json_loads(seen.output[1], 0, NULL);
	ok_out = json_loads(seen.output[0], 0, NULL);
	tap_ok(seen.status[1] == LANTERN__V1__DP_RUN_STATUS__DP_RUN_STATUS_FAILED &&
	       !strcmp(json_string_value(json_object_get(ref_out, "status")) ?: "", "failed") &&
	       tl_has(json_string_value(json_object_get(ref_out, "reason")), "hostile") &&
	       json_is_integer(json_object_get(ref_out, "exit_code")),
	       "a refusal reaches a platform control plane in output_json: status, reason and exit code (%s)",
	       seen.output[1]);
	tap_ok(seen.status[0] == LANTERN__V1__DP_RUN_STATUS__DP_RUN_STATUS_SUCCEEDED && seen.duration[0] > 0 &&
	       json_integer_value(json_object_get(ok_out, "exit_code")) == 0 &&
	       !strcmp(json_string_value(json_object_get(ok_out, "status")) ?: "", "succeeded"),
	       "a short run's completion: duration_ms %lld (from acceptance), output_json %s",
	       (long long)seen.duration[0], seen.output[0]);
	json_decref(ok_out);
	json_decref(ref_out);
	/* no acknowledgement ever comes: the stream took them, so they go */
	for (uint64_t t0 = tl_ms(); tl_ms() - t0 < TUNNEL_ACCEPT_MS + 8000;) {
		pump(200);
		if (outbox_files() == 0) {
			empty_after = (int)(tl_ms() - t0);
			break;
		}
	}
	/* a reconnect does not bring them back */
	if (seen.stream)
		rpc_stream_finish(seen.stream, RPC_UNAVAILABLE, "the platform restarts");
	{
		int hellos = seen.hellos;

		for (uint64_t t0 = tl_ms(); seen.hellos == hellos && tl_ms() - t0 < 8000;)
			pump(50);
		pump(1500);
		tap_ok(empty_after >= 0 && seen.hellos > hellos && seen.completions[0] == 1 &&
		       seen.completions[1] == 1,
		       "a control plane that never acknowledges: the outbox empties once the stream took the "
		       "completions (%d ms) and a new stream gets none again (%d, %d sent)", empty_after,
		       seen.completions[0], seen.completions[1]);
	}
	tl_daemon_stop(&N, SIGTERM);
	rpc_server_shutdown(srv);
}

/* --- a platform node against lantern-cp --- */

static json_t *api(uint16_t port, const char *method, const char *path, const char *body, long *code)
{
	char *out = NULL, *nl;
	json_t *j = NULL;
	const char *bf = body ? tl_file(&N, "body.json", "%s", body) : "/dev/null";

	*code = 0;
	tl_sh(&out, NULL, "curl -s -m 10 -X %s -H 'Authorization: Bearer %s' --data-binary @%s "
	      "-w '\\n%%{http_code}' http://127.0.0.1:%u%s", method, OPTOK, bf, port, path);
	if (out && (nl = strrchr(out, '\n'))) {
		*code = strtol(nl + 1, NULL, 10);
		*nl = '\0';
		j = json_loads(out, 0, NULL);
	}
	free(out);
	return j;
}

struct assigned {
	bool got;
	char run_id[64];
	bool ended;
	int status;
};

static void c_msg(struct rpc_stream *s, void *arg, const uint8_t *msg, size_t len)
{
	struct assigned *a = arg;
	Lantern__V1__DpRunStreamServerMsg *m = lantern__v1__dp_run_stream_server_msg__unpack(NULL, len, msg);

	if (m && m->msg_case == LANTERN__V1__DP_RUN_STREAM_SERVER_MSG__MSG_ASSIGNMENT) {
		a->got = true;
		snprintf(a->run_id, sizeof(a->run_id), "%s", m->assignment->run_id);
	}
	if (m)
		lantern__v1__dp_run_stream_server_msg__free_unpacked(m, NULL);
}

static void c_end(struct rpc_stream *s, void *arg, int status, const char *details)
{
	((struct assigned *)arg)->ended = true;
	((struct assigned *)arg)->status = status;
}

static const struct rpc_stream_ops c_ops = { c_msg, c_end };

struct ures {
	bool done;
	int status;
	uint8_t *resp;
	size_t len;
};

static void ucb(void *arg, int status, const char *details, const uint8_t *resp, size_t len)
{
	struct ures *u = arg;

	u->done = true;
	u->status = status;
	if (resp && (u->resp = malloc(len ? len : 1))) {
		memcpy(u->resp, resp, len);
		u->len = len;
	}
}

/* RunStreams that never say Hello: lantern-cp keeps at most 64 of them open, and each
 * for 10 s; it answers its API all along. */
#define SILENT 65
static void silent_streams(struct rpc_channel *ch, uint16_t http)
{
	static struct assigned st[SILENT];
	struct rpc_stream *ss[SILENT] = { 0 };
	int opened = 0, refused = 0, timed_out = 0, other = 0;
	uint64_t t0 = tl_ms(), t_end = 0;
	long code = 0;

	memset(st, 0, sizeof(st));
	for (int i = 0; ch && i < SILENT; i++) {
		if (rpc_stream_open(ch, cq, RPC_SERVICE "RunStream", &c_ops, &st[i], &ss[i]) == 0)
			opened++;
		for (int k = 0; k < 2; k++)
			rpc_cq_poll(cq, 10);
	}
	for (uint64_t t = tl_ms(); tl_ms() - t < 2000;)
		rpc_cq_poll(cq, 50);
	for (int i = 0; i < SILENT; i++)
		refused += st[i].ended && st[i].status == RPC_RESOURCE_EXHAUSTED;
	json_decref(api(http, "GET", "/v1/data-planes", NULL, &code));
	for (bool all = false; !all && tl_ms() - t0 < 20000;) {
		rpc_cq_poll(cq, 100);
		all = true;
		for (int i = 0; i < SILENT; i++)
			all = all && (!ss[i] || st[i].ended);
	}
	t_end = tl_ms() - t0;
	for (int i = 0; i < SILENT; i++) {
		if (st[i].ended && st[i].status == RPC_DEADLINE_EXCEEDED)
			timed_out++;
		else if (!(st[i].ended && st[i].status == RPC_RESOURCE_EXHAUSTED))
			other++;
		if (ss[i])
			rpc_stream_unref(ss[i]);
	}
	tap_ok(opened == SILENT && refused >= 1 && refused + timed_out == SILENT && other == 0 && code == 200 &&
	       t_end >= 9000 && t_end < 20000,
	       "%d RunStreams that never say Hello: %d refused at once (more than 64 waiting), %d ended "
	       "DEADLINE_EXCEEDED within %llu ms (the 10 s bound), %d otherwise; the operator API answered %ld "
	       "meanwhile", opened, refused, timed_out, (unsigned long long)t_end, other, code);
}

static void platform_node_against_cp(void)
{
	uint16_t grpc = 0, http = 0;
	char cmd[2048], target[64], log[512];
	struct rpc_channel *ch = NULL;
	struct rpc_tls tls = { .insecure = true };
	struct assigned got = { 0 };
	struct rpc_stream *s = NULL;
	struct ures u = { 0 };
	struct lerr e;
	long code = 0;
	json_t *j;
	pid_t cp;
	int fd;
	bool acks = false;
	int ttl = 0;
	const char *run = "";
	char plane[64] = "", session[2048] = "", run_id[64] = "";

	fd = tl_tcp_listen("127.0.0.1", &grpc);
	close(fd);
	fd = tl_tcp_listen("127.0.0.1", &http);
	close(fd);
	snprintf(log, sizeof(log), "%s/lantern-cp.log", N.dir);
	snprintf(cmd, sizeof(cmd), "exec %s/lantern-cp --insecure --listen 127.0.0.1:%u --http 127.0.0.1:%u "
		 "--operator-token-file %s --database %s/cp.db --heartbeat-interval 1 >>%s 2>&1", N.build, grpc,
		 http, tl_file(&N, "optok", "%s\n", OPTOK), N.dir, log);
	cp = fork();
	if (cp == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	tl_child_track(cp, SIGKILL);
	for (int i = 0; i < 200 && code != 200; i++) {
		json_decref(api(http, "GET", "/v1/data-planes", NULL, &code));
		usleep(50000);
	}
	j = api(http, "POST", "/v1/data-planes", "{\"tenant_id\":\"ta\",\"name\":\"platform\"}", &code);
	snprintf(target, sizeof(target), "127.0.0.1:%u", grpc);
	if (code == 201 && rpc_channel_open(target, &tls, &ch, &e) == 0) {
		Lantern__V1__DpRegisterRequest rq = LANTERN__V1__DP_REGISTER_REQUEST__INIT;
		size_t len;
		uint8_t *buf;

		/* the platform's fields only: no isolation_classes */
		rq.tenant_id = "ta";
		rq.agent_token = (char *)json_string_value(json_object_get(j, "bootstrap_token"));
		rq.hostname = "platform-node";
		len = lantern__v1__dp_register_request__get_packed_size(&rq);
		buf = malloc(len);
		lantern__v1__dp_register_request__pack(&rq, buf);
		rpc_unary(ch, cq, RPC_SERVICE "Register", buf, len, 5000, ucb, &u);
		free(buf);
		for (uint64_t t0 = tl_ms(); !u.done && tl_ms() - t0 < 8000;)
			rpc_cq_poll(cq, 50);
	}
	json_decref(j);
	if (u.status == RPC_OK && u.resp) {
		Lantern__V1__DpRegisterResponse *r = lantern__v1__dp_register_response__unpack(NULL, u.len, u.resp);

		if (r) {
			snprintf(plane, sizeof(plane), "%s", r->plane_id);
			snprintf(session, sizeof(session), "%s", r->session_token);
			acks = r->completion_acks;
			ttl = r->lease_ttl_ms;
			lantern__v1__dp_register_response__free_unpacked(r, NULL);
		}
	}
	free(u.resp);
	if (plane[0] && rpc_stream_open(ch, cq, RPC_SERVICE "RunStream", &c_ops, &got, &s) == 0) {
		Lantern__V1__DpRunStreamClientMsg m = LANTERN__V1__DP_RUN_STREAM_CLIENT_MSG__INIT;
		Lantern__V1__DpHello h = LANTERN__V1__DP_HELLO__INIT;
		size_t len;
		uint8_t *buf;

		h.plane_id = plane;
		h.session_token = session;
		m.msg_case = LANTERN__V1__DP_RUN_STREAM_CLIENT_MSG__MSG_HELLO;
		m.hello = &h;
		len = lantern__v1__dp_run_stream_client_msg__get_packed_size(&m);
		buf = malloc(len);
		lantern__v1__dp_run_stream_client_msg__pack(&m, buf);
		rpc_stream_send(s, buf, len);
		free(buf);
		for (int i = 0; i < 20; i++)
			rpc_cq_poll(cq, 50);
		j = api(http, "POST", "/v1/runs", "{\"tenant_id\":\"ta\",\"spec\":\"apiVersion: lantern.dev/v1\\n"
			"kind: AgentSpec\\nmetadata:\\n  name: any\\nspec:\\n  image_digest: host\\n  isolation: "
			"standard\\n  network: none\\n  command: [\\\"/bin/true\\\"]\\n\"}", &code);
		snprintf(run_id, sizeof(run_id), "%s", json_string_value(json_object_get(j, "id")) ?: "");
		json_decref(j);
		for (uint64_t t0 = tl_ms(); !got.got && tl_ms() - t0 < 8000;)
			rpc_cq_poll(cq, 50);
		run = got.run_id;
	}
	tap_ok(got.got && !strcmp(run, run_id) && acks && ttl > 0,
	       "a node registered without isolation_classes gets an unpinned run (%s), and lantern-cp tells "
	       "it that it acknowledges completions and grants %d ms leases", run, ttl);
	if (s) {
		rpc_stream_finish(s, RPC_CANCELLED, "test done");
		for (int i = 0; i < 20 && !got.ended; i++)
			rpc_cq_poll(cq, 50);
		rpc_stream_unref(s);
	}
	silent_streams(ch, http);
	rpc_channel_close(ch);
	tl_child_stop(cp, SIGTERM);
}

int main(void)
{
	const char *why = tl_env_missing();

	setvbuf(stdout, NULL, _IOLBF, 0);
	tap_plan(POINTS);
	if (why) {
		for (int i = 0; i < POINTS; i++)
			tap_skip(why, "interop");
		return tap_failures ? 1 : 0;
	}
	tl_env_init(&N, "interop");
	rpc_init();
	sq = rpc_cq_new();
	cq = rpc_cq_new();
	node_against_platform();
	platform_node_against_cp();
	while (tap_count < POINTS)
		tap_ok(false, "not reached");
	return tap_failures ? 1 : 0;
}
