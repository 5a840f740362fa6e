/* telemetry_test: one trace per spawn, end to end, received by a real OTLP decoder:
 * tests/otlp-receiver (the official @opentelemetry/otlp-transformer generated code,
 * @grpc/grpc-js for gRPC, node's http for OTLP/HTTP) on loopback. A private lanternd
 * exports to it over gRPC, is killed with -9 mid-run and restarted exporting over
 * HTTP/protobuf against a receiver that refuses its first requests (retries). Asserts
 * trace and parent links, span names, attribute names and values (GenAI conventions,
 * lantern ids, resource), TRACEPARENT in the workload, the same trace_id after the
 * restart, the syscall count of a known number of getpid calls, an egress deny and
 * execs as span events, cost components adding up to the total (and to the span's
 * attributes), limits.max_cost_usd enforced, ring buffer drops counted under
 * overload, and the Prometheus endpoint.
 *
 * Transport security: an https:// gRPC endpoint served in plaintext (a bare TCP
 * listener standing in for a plaintext gRPC server) sees a TLS ClientHello and never
 * an HTTP/2 preface while lanternd logs the failed handshake; a scheme-less endpoint
 * is TLS by default and plaintext with --otlp-insecure; https:// (gRPC and HTTP)
 * reaches a TLS receiver whose certificate the CA file vouches for, and without that
 * file certificate verification refuses it. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tap.h"
#include "testlib.h"
#include "lantern/otlp.h"
#include "lantern/trace.h"
#include "lantern/util.h"

#define PLAN 30
#define GETPIDS 20000

static struct tl_env T;
static pid_t receivers[3], plain_pid;
static char recv_out[3][400], plain_out[400];
static uint16_t grpc_port[3], http_port[3], plain_port;
static uint16_t metrics_port;
static char getpids[512], netprobe[512];

static void stop_receivers(void)
{
	for (int i = 0; i < 3; i++) {
		tl_child_stop(receivers[i], 0);
		receivers[i] = 0;
	}
	if (plain_pid > 0) {
		tl_child_stop(plain_pid, SIGKILL);
		plain_pid = 0;
	}
}

/* Starts receiver i; extra are more flags (e.g. "--fail-first 2"). */
static bool receiver_start(int i, const char *extra)
{
	char cmd[1024], line[128] = "";
	int p[2];
	ssize_t n;

	snprintf(recv_out[i], sizeof(recv_out[i]), "%s/received-%d.jsonl", T.dir, i);
	snprintf(cmd, sizeof(cmd), "exec node tests/otlp-receiver/receiver.js --out %s %s", recv_out[i],
		 extra ? extra : "");
	if (pipe(p) < 0)
		return false;
	receivers[i] = fork();
	if (receivers[i] == 0) {
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		dup2(p[1], 1);
		close(p[0]);
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	tl_child_track(receivers[i], SIGTERM);
	close(p[1]);
	n = read(p[0], line, sizeof(line) - 1);
	close(p[0]);
	if (n <= 0)
		return false;
	line[n] = '\0';
	return sscanf(line, "ready %hu %hu", &grpc_port[i], &http_port[i]) == 2;
}

/* Every span the receiver decoded, each with "_transport". */
static json_t *received_spans(int i)
{
	json_t *out = json_array();
	char *buf;

	if (util_read_file(recv_out[i], &buf, NULL) < 0)
		return out;
	for (char *save = NULL, *l = strtok_r(buf, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
		json_t *j = json_loads(l, 0, NULL), *rs, *ss, *sp;
		size_t a, b, c;

		json_array_foreach(json_object_get(json_object_get(j, "request"), "resourceSpans"), a, rs)
			json_array_foreach(json_object_get(rs, "scopeSpans"), b, ss)
				json_array_foreach(json_object_get(ss, "spans"), c, sp) {
					json_object_set(sp, "_transport", json_object_get(j, "transport"));
					json_object_set(sp, "_resource", json_object_get(rs, "resource"));
					json_array_append(out, sp);
				}
		json_decref(j);
	}
	free(buf);
	return out;
}

static json_t *attr(json_t *owner, const char *key)
{
	json_t *kv;
	size_t i;

	json_array_foreach(json_object_get(owner, "attributes"), i, kv)
		if (!strcmp(json_string_value(json_object_get(kv, "key")) ?: "", key))
			return json_object_get(kv, "value");
	return NULL;
}

static const char *attr_s(json_t *owner, const char *key)
{
	return json_string_value(json_object_get(attr(owner, key), "stringValue")) ?: "";
}

static long long attr_i(json_t *owner, const char *key)
{
	json_t *v = json_object_get(attr(owner, key), "intValue");

	return json_is_string(v) ? atoll(json_string_value(v)) : json_integer_value(v);
}

static double attr_d(json_t *owner, const char *key)
{
	return json_number_value(json_object_get(attr(owner, key), "doubleValue"));
}

static json_t *span_named(json_t *spans, const char *trace_id, const char *name)
{
	json_t *s;
	size_t i;

	json_array_foreach(spans, i, s)
		if (!strcmp(json_string_value(json_object_get(s, "traceId")) ?: "", trace_id) &&
		    !strcmp(json_string_value(json_object_get(s, "name")) ?: "", name))
			return s;
	return NULL;
}

static const char *spec(const char *name, const char *limits, const char *rules, const char *script)
{
	return tl_spec(&T, name, NULL, script,
		       "  image_digest: host\n  isolation: trusted\n  network: allowlist_domain\n"
		       "%s%s  limits:\n    memory: 256Mi\n%s",
		       rules ? "  egress_rules:\n" : "", rules ? rules : "", limits ? limits : "");
}

static bool run_id_of(const char *out, char *id, size_t len)
{
	char *out2 = NULL;
	bool ok = false;

	tl_lantern(&T, &out2, NULL, "ps");
	for (char *save = NULL, *l = strtok_r(out2, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
		char rid[64], inst[64], nm[128];
		if (sscanf(l, "%63s %63s %127s", rid, inst, nm) == 3 && !strcmp(nm, out)) {
			snprintf(id, len, "%s", rid);
			ok = true;
		}
	}
	free(out2);
	return ok;
}

static json_t *lantern_json(const char *fmt, const char *arg)
{
	char *out = NULL;
	json_t *j;

	tl_lantern(&T, &out, NULL, fmt, arg);
	j = out ? json_loads(out, 0, NULL) : NULL;
	free(out);
	return j;
}

static bool wait_spans(int i, const char *trace_id, const char *name, int ms)
{
	for (uint64_t end = tl_ms() + (uint64_t)ms; tl_ms() < end; usleep(100000)) {
		json_t *s = received_spans(i);
		bool ok = span_named(s, trace_id, name) != NULL;
		json_decref(s);
		if (ok)
			return true;
	}
	return false;
}

static char *metrics(void)
{
	char *out = NULL;

	tl_sh(&out, NULL, "curl -s http://127.0.0.1:%u/metrics", metrics_port);
	return out;
}

/* The value of the sample line that starts with name (HELP and TYPE lines skipped). */
static double metric(const char *text, const char *name)
{
	for (const char *p = text; p && (p = strstr(p, name)); p += strlen(name))
		if (p == text || p[-1] == '\n')
			return atof(p + strlen(name));
	return -1;
}

#define CURL "curl -s --unix-socket \"$LANTERN_HARNESS_SOCKET\" -H 'Content-Type: application/json' -X POST"

static void test_trace(void)
{
	char rules[256], script[4096], id[64], tid[64] = "", *out = NULL, *err = NULL, tp[128] = "";
	json_t *tr, *spans, *root, *chat, *tool, *adm, *cost, *comp, *s, *ev;
	bool parents = true, ids = true, deny = false, exec = false;
	double sum, total;
	size_t i;
	int rc;
	uint16_t denied = 9; /* discard: nothing listens; the kernel refuses first */

	snprintf(rules, sizeof(rules), "    - pattern: tcp://127.0.0.1:1\n");
	snprintf(script, sizeof(script),
		 "echo \"TP=$TRACEPARENT\"; %s %d; %s tcp 127.0.0.1 %u; "
		 CURL " http://h/v1/steps/begin -d '{\"step_id\":\"plan\",\"kind\":\"llm\"}' >/dev/null; "
		 CURL " http://h/v1/steps/complete -d '{\"step_id\":\"plan\",\"result\":\"ok\",\"usage\":"
		 "{\"provider\":\"openai\",\"model\":\"gpt-4o\",\"input_tokens\":1000,\"output_tokens\":500,"
		 "\"cache_read_tokens\":200,\"cache_creation_tokens\":100,\"reasoning_tokens\":50}}' >/dev/null; "
		 CURL " http://h/v1/steps/begin -d '{\"step_id\":\"search\",\"kind\":\"tool\"}' >/dev/null; "
		 CURL " http://h/v1/steps/complete -d '{\"step_id\":\"search\",\"result\":\"r\",\"name\":\"web_search\"}' >/dev/null; "
		 "exit 0", getpids, GETPIDS, netprobe, denied);
	rc = tl_lantern(&T, &out, &err, "run %s", spec("tracer", NULL, rules, script));
	if (out && strstr(out, "TP="))
		sscanf(strstr(out, "TP=") + 3, "%127s", tp);
	tap_ok(rc == 0 && strstr(out ?: "", "denied"), "traced run succeeds; its probe was denied (rc %d, %s)",
	       rc, err ?: "");
	free(out);
	free(err);
	if (!run_id_of("tracer", id, sizeof(id)))
		id[0] = '\0';
	tr = lantern_json("trace %s --json", id);
	snprintf(tid, sizeof(tid), "%s", json_string_value(json_object_get(tr, "trace_id")) ?: "");
	json_decref(tr);
	wait_spans(0, tid, "invoke_agent tracer", 5000);
	spans = received_spans(0);
	root = span_named(spans, tid, "invoke_agent tracer");
	chat = span_named(spans, tid, "chat gpt-4o");
	tool = span_named(spans, tid, "execute_tool web_search");
	adm = span_named(spans, tid, "admission");
	tap_ok(strlen(tid) == 32 && root && adm && span_named(spans, tid, "start") &&
	       span_named(spans, tid, "teardown") && chat && tool &&
	       !strcmp(json_string_value(json_object_get(root, "_transport")) ?: "", "grpc"),
	       "one trace over OTLP/gRPC: invoke_agent tracer, admission, start, chat gpt-4o, "
	       "execute_tool web_search, teardown (trace %s)", tid);
	json_array_foreach(spans, i, s) {
		if (strcmp(json_string_value(json_object_get(s, "traceId")) ?: "", tid))
			continue;
		if (s != root && strcmp(json_string_value(json_object_get(s, "parentSpanId")) ?: "",
					json_string_value(json_object_get(root, "spanId")) ?: "-"))
			parents = false;
		if (strcmp(attr_s(s, "lantern.tenant_id"), "acme") || strcmp(attr_s(s, "lantern.run_id"), id) ||
		    strncmp(attr_s(s, "lantern.agent_instance_id"), "i-", 2))
			ids = false;
	}
	tap_ok(root && !json_object_get(root, "parentSpanId") && parents,
	       "the root has no parent; every other span's parent is the root");
	tap_ok(ids, "every span carries lantern.tenant_id=acme, lantern.run_id, lantern.agent_instance_id");
	snprintf(rules, sizeof(rules), "00-%s-%s-01", tid, root ? json_string_value(json_object_get(root, "spanId")) : "");
	tap_ok(!strcmp(tp, rules), "the workload's TRACEPARENT names the trace and the root span (%s)", tp);
	tap_ok(chat && !strcmp(attr_s(chat, "gen_ai.operation.name"), "chat") &&
	       !strcmp(attr_s(chat, "gen_ai.provider.name"), "openai") &&
	       !strcmp(attr_s(chat, "gen_ai.request.model"), "gpt-4o") &&
	       attr_i(chat, "gen_ai.usage.input_tokens") == 1000 &&
	       attr_i(chat, "gen_ai.usage.output_tokens") == 500 &&
	       attr_i(chat, "gen_ai.usage.cache_read.input_tokens") == 200 &&
	       attr_i(chat, "gen_ai.usage.cache_creation.input_tokens") == 100 &&
	       attr_i(chat, "gen_ai.usage.reasoning.output_tokens") == 50 &&
	       !strcmp(attr_s(chat, "lantern.step_id"), "plan"),
	       "LLM step span: gen_ai.operation.name, provider, request.model, usage tokens "
	       "(input, output, cache read/creation, reasoning), lantern.step_id");
	tap_ok(tool && !strcmp(attr_s(tool, "gen_ai.tool.name"), "web_search") &&
	       !strcmp(attr_s(tool, "gen_ai.operation.name"), "execute_tool") &&
	       !strcmp(attr_s(tool, "lantern.step_id"), "search"),
	       "tool step span: gen_ai.tool.name, gen_ai.operation.name execute_tool, lantern.step_id");
	tap_ok(root && !strcmp(attr_s(json_object_get(root, "_resource"), "service.name"), "lanternd") &&
	       *attr_s(json_object_get(root, "_resource"), "host.name") &&
	       strlen(attr_s(json_object_get(root, "_resource"), "service.instance.id")) == 32,
	       "resource: service.name lanternd, host.name, service.instance.id");
	tap_ok(root && attr_i(root, "lantern.syscall.getpid.count") >= GETPIDS &&
	       attr_i(root, "lantern.syscall.getpid.count") <= GETPIDS + 50 &&
	       attr_i(root, "lantern.syscalls.total") > GETPIDS &&
	       strstr(attr_s(root, "lantern.syscalls.top"), "getpid="),
	       "syscall summary on the root: getpid %lld for %d calls, total %lld, top \"%.60s\"",
	       root ? attr_i(root, "lantern.syscall.getpid.count") : -1, GETPIDS,
	       root ? attr_i(root, "lantern.syscalls.total") : -1, root ? attr_s(root, "lantern.syscalls.top") : "");
	json_array_foreach(json_object_get(root, "events"), i, ev) {
		const char *n = json_string_value(json_object_get(ev, "name")) ?: "";
		if (!strcmp(n, "egress.deny") && attr_i(ev, "server.port") == denied &&
		    !strcmp(attr_s(ev, "server.address"), "127.0.0.1"))
			deny = true;
		if (!strcmp(n, "process.exec") && strstr(attr_s(ev, "process.executable.path"), "getpids"))
			exec = true;
	}
	tap_ok(deny, "the egress deny is a span event (egress.deny, server.address, server.port)");
	tap_ok(exec, "execs are span events (process.exec with the executable's path)");

	cost = lantern_json("cost %s --json", id);
	comp = json_object_get(json_object_get(cost, "cost"), "components");
	total = json_number_value(json_object_get(json_object_get(cost, "cost"), "total_usd"));
	sum = json_number_value(json_object_get(comp, "tokens_usd")) + json_number_value(json_object_get(comp, "cpu_usd")) +
	      json_number_value(json_object_get(comp, "memory_usd")) + json_number_value(json_object_get(comp, "egress_usd")) +
	      json_number_value(json_object_get(comp, "wall_usd"));
	/* prices file: gpt-4o 2.5 in, 10 out, 1.25 cache read, 3 cache write, 10 reasoning */
	tap_ok(fabs(json_number_value(json_object_get(comp, "tokens_usd")) -
		    (1000 * 2.5 + 500 * 10 + 200 * 1.25 + 100 * 3 + 50 * 10) / 1e6) < 1e-12 &&
	       fabs(sum - total) < 1e-12 && total > 0 && json_is_true(json_object_get(cost, "final")),
	       "lantern cost: components add up to the total (%.9f = %.9f), tokens priced by the table",
	       sum, total);
	tap_ok(root && fabs(attr_d(root, "lantern.cost.usd") - total) < 1e-12 &&
	       fabs(attr_d(root, "lantern.cost.tokens_usd") - json_number_value(json_object_get(comp, "tokens_usd"))) < 1e-12 &&
	       attr(root, "lantern.cost.cpu_usd") && attr(root, "lantern.cost.memory_usd") &&
	       attr(root, "lantern.cost.egress_usd") && attr(root, "lantern.cost.wall_usd"),
	       "the root span carries lantern.cost.usd and one attribute per component");
	json_decref(cost);
	json_decref(spans);

	out = NULL;
	tl_lantern(&T, &out, NULL, "trace %s", id);
	tap_ok(out && strstr(out, "invoke_agent tracer") && strstr(out, "  chat gpt-4o") &&
	       strstr(out, " ms]") && strstr(out, "egress.deny"),
	       "lantern trace prints the span tree with durations and events");
	free(out);
}

/* A bare TCP listener standing in for a plaintext gRPC server behind an https://
 * endpoint. Per connection it appends "conn LEN FIRST_BYTE PREFACE" to plain_out
 * (PREFACE 1 if the HTTP/2 client preface, what a plaintext gRPC client sends first,
 * was among the bytes), then answers as a plaintext HTTP/2 server does (an empty
 * SETTINGS frame), which a TLS client must refuse. */
static bool plain_start(void)
{
	static const uint8_t settings[9] = { 0, 0, 0, 4, 0, 0, 0, 0, 0 };
	int fd = tl_tcp_listen("127.0.0.1", &plain_port);

	snprintf(plain_out, sizeof(plain_out), "%s/plain.txt", T.dir);
	if (fd < 0)
		return false;
	plain_pid = fork();
	if (plain_pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		for (;;) {
			struct timeval tv = { .tv_sec = 1 };
			uint8_t buf[16384];
			ssize_t n;
			FILE *f;
			int c = accept(fd, NULL, NULL);

			if (c < 0)
				continue;
			setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
			/* a ClientHello comes in one flight, as does a plaintext client's preface */
			n = read(c, buf, sizeof(buf));
			if (n < 0)
				n = 0;
			(void)send(c, settings, sizeof(settings), MSG_NOSIGNAL);
			if ((f = fopen(plain_out, "a"))) {
				fprintf(f, "conn %zd %02x %d\n", n, n ? buf[0] : 0,
					memmem(buf, (size_t)n, "PRI * HTTP/2.0", 14) != NULL);
				fclose(f);
			}
			close(c);
		}
	}
	close(fd);
	if (plain_pid > 0)
		tl_child_track(plain_pid, SIGKILL);
	return plain_pid > 0;
}

/* Connections plain_out recorded since it was last emptied that carried bytes (gRPC
 * also opens some it abandons before a byte is sent), how many of those opened with
 * a TLS handshake record (0x16), and how many held the HTTP/2 preface. */
static int plain_conns(int *tls, int *preface)
{
	char *buf = NULL;
	int n = 0;

	*tls = *preface = 0;
	if (util_read_file(plain_out, &buf, NULL) < 0)
		return 0;
	for (char *save = NULL, *l = strtok_r(buf, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
		unsigned first;
		int len, pre;

		if (sscanf(l, "conn %d %x %d", &len, &first, &pre) != 3 || len <= 0)
			continue;
		n++;
		*tls += first == 0x16;
		*preface += pre;
	}
	free(buf);
	return n;
}

static void plain_reset(void)
{
	int fd = open(plain_out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	if (fd >= 0)
		close(fd);
}

/* Restarts lanternd with only the OTLP flags in extra; says why on failure. */
static bool daemon_restart(const char *extra)
{
	int rc;

	tl_daemon_stop(&T, SIGTERM);
	rc = tl_daemon_start(&T, extra);
	if (rc < 0) {
		char *lg = NULL;
		tl_sh(&lg, NULL, "tail -5 %s", T.log);
		tap_diag("lanternd %s: did not start (%d): %s", extra, rc, tl_oneline(lg));
		free(lg);
	}
	return rc == 0;
}

static bool wait_log(const char *s, int ms)
{
	for (uint64_t end = tl_ms() + (uint64_t)ms; tl_ms() < end; usleep(100000))
		if (tl_log_contains(&T, s))
			return true;
	return false;
}

static void test_tls_daemon(void)
{
	char extra[512], what[160], id[64], tid[64] = "";
	int conns, tls, preface, rc;
	json_t *tr;

	/* https:// over gRPC, to a listener that only speaks plaintext */
	plain_reset();
	snprintf(extra, sizeof(extra), "--otlp-endpoint https://127.0.0.1:%u --otlp-protocol grpc",
		 plain_port);
	rc = daemon_restart(extra) &&
	     tl_lantern(&T, NULL, NULL, "run %s >/dev/null 2>&1", spec("tlsprobe", NULL, NULL, "exit 0")) == 0;
	snprintf(what, sizeof(what), "spans dropped: gRPC 127.0.0.1:%u (TLS): UNAVAILABLE", plain_port);
	rc = rc && wait_log(what, 20000);
	conns = plain_conns(&tls, &preface);
	tap_ok(rc && conns > 0 && tls == conns && !preface,
	       "https:// gRPC endpoint served in plaintext: %d connections sent bytes, %d opened "
	       "with a TLS ClientHello (0x16), %d with the HTTP/2 preface", conns, tls, preface);
	tap_ok(rc && tl_log_contains(&T, "Handshake failed with fatal error SSL_ERROR_SSL"),
	       "lanternd logs the failed TLS handshake and drops the spans instead of sending them "
	       "in plaintext (\"%s\", \"Handshake failed with fatal error SSL_ERROR_SSL\")", what);

	/* no scheme and --otlp-insecure: plaintext gRPC to the plaintext receiver */
	snprintf(extra, sizeof(extra), "--otlp-endpoint 127.0.0.1:%u --otlp-protocol grpc --otlp-insecure",
		 grpc_port[0]);
	rc = daemon_restart(extra) &&
	     tl_lantern(&T, NULL, NULL, "run %s >/dev/null 2>&1", spec("plainrun", NULL, NULL, "exit 0")) == 0;
	if (rc && run_id_of("plainrun", id, sizeof(id)) && (tr = lantern_json("trace %s --json", id))) {
		snprintf(tid, sizeof(tid), "%s", json_string_value(json_object_get(tr, "trace_id")) ?: "");
		json_decref(tr);
	}
	snprintf(what, sizeof(what), "otlp: gRPC to 127.0.0.1:%u in plaintext", grpc_port[0]);
	tap_ok(rc && tid[0] && wait_spans(0, tid, "invoke_agent plainrun", 10000) && tl_log_contains(&T, what),
	       "scheme-less gRPC endpoint with --otlp-insecure: spans reach the plaintext receiver "
	       "(trace %s)", tid);
}

/* Exports one span named name (its trace id into tid_hex) through an exporter of
 * this process's own (no lanternd) and returns its counters once the span was sent
 * or dropped; the exporter's log lines go to T.dir/otlp.log. */
static struct otlp_stats export_one(const char *endpoint, const char *protocol, bool insecure,
				    const char *ca, unsigned attempts, const char *name,
				    char *tid_hex, bool *tls)
{
	struct otlp_stats st = { 0 };
	struct otlp_exporter *x = NULL;
	struct otlp_opts o;
	struct lerr e = { 0 };
	uint8_t tid[TRACE_ID_LEN], sid[SPAN_ID_LEN];
	char path[512];
	json_t *span, *res = json_array();
	int saved = dup(2), fd;

	snprintf(path, sizeof(path), "%s/otlp.log", T.dir);
	fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (fd >= 0) {
		fflush(stderr);
		dup2(fd, 2);
		close(fd);
	}
	trace_id_for_run(name, tid);
	trace_span_id_for(name, "root", sid);
	trace_hex(tid, sizeof(tid), tid_hex);
	if (otlp_configure(endpoint, protocol, insecure, ca, &o, &e) > 0) {
		*tls = o.grpc_tls;
		o.max_attempts = attempts;
		if (otlp_exporter_start(&o, res, &x, &e) == 0) {
			span = trace_span_new(tid, sid, NULL, name, TRACE_KIND_INTERNAL, trace_now_ns(),
					      trace_now_ns());
			otlp_export(x, span);
			json_decref(span);
			/* the stop frees the counters: read them once the span is settled */
			for (uint64_t end = tl_ms() + 15000; tl_ms() < end; usleep(50000)) {
				otlp_stats_get(x, &st);
				if (st.exported + st.rejected + st.dropped)
					break;
			}
			otlp_exporter_stop(x, 0);
		}
	}
	if (e.msg[0])
		fprintf(stderr, "export_one %s: %s\n", name, e.msg);
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	json_decref(res);
	return st;
}

static void test_tls_export(void)
{
	char ca[512], key[512], logpath[512], ep[128], tid[40], *log = NULL;
	struct otlp_stats st;
	json_t *spans;
	int conns, tls_conns, preface;
	bool tls = false, ok;

	/* no scheme, no insecure setting: TLS, as the specification's default */
	plain_reset();
	snprintf(ep, sizeof(ep), "127.0.0.1:%u", plain_port);
	st = export_one(ep, "grpc", false, NULL, 1, "tls-default", tid, &tls);
	conns = plain_conns(&tls_conns, &preface);
	tap_ok(tls && st.dropped == 1 && conns > 0 && tls_conns == conns && !preface,
	       "scheme-less gRPC endpoint without an insecure setting: TLS by default (%d of %d "
	       "connections with bytes opened with a ClientHello)", tls_conns, conns);

	snprintf(ca, sizeof(ca), "%s/otlp-ca.pem", T.dir);
	snprintf(key, sizeof(key), "%s/otlp-key.pem", T.dir);
	ok = tl_sh(NULL, NULL, "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
		   "-keyout %s -out %s -days 1 -subj /CN=lantern-otlp-test "
		   "-addext subjectAltName=IP:127.0.0.1 2>/dev/null", key, ca) == 0;
	{
		char extra[1200];
		snprintf(extra, sizeof(extra), "--tls-cert %s --tls-key %s", ca, key);
		ok = ok && receiver_start(2, extra);
	}
	snprintf(ep, sizeof(ep), "https://127.0.0.1:%u", grpc_port[2]);
	st = export_one(ep, "grpc", false, ca, 1, "tls-grpc", tid, &tls);
	spans = received_spans(2);
	tap_ok(ok && tls && st.exported == 1 && span_named(spans, tid, "tls-grpc"),
	       "https:// gRPC endpoint with a TLS receiver and its CA file: exported and received "
	       "(exported %llu, dropped %llu)", (unsigned long long)st.exported,
	       (unsigned long long)st.dropped);
	json_decref(spans);

	snprintf(ep, sizeof(ep), "https://127.0.0.1:%u", http_port[2]);
	st = export_one(ep, "http/protobuf", true, NULL, 1, "https-unverified", tid, &tls);
	spans = received_spans(2);
	snprintf(logpath, sizeof(logpath), "%s/otlp.log", T.dir);
	util_read_file(logpath, &log, NULL);
	tap_ok(ok && st.dropped == 1 && !span_named(spans, tid, "https-unverified") &&
	       tl_has(log, "SSL certificate problem"),
	       "https:// OTLP/HTTP to a certificate the system's roots do not vouch for: refused, "
	       "even with the insecure setting (libcurl verifies; nothing received)");
	free(log);
	json_decref(spans);

	st = export_one(ep, "http/protobuf", false, ca, 1, "https-ca", tid, &tls);
	spans = received_spans(2);
	tap_ok(ok && st.exported == 1 && span_named(spans, tid, "https-ca"),
	       "https:// OTLP/HTTP with the receiver's CA file: exported and received");
	json_decref(spans);
}

static void test_budget(void)
{
	char *out = NULL, *err = NULL;
	int rc = tl_lantern(&T, &out, &err, "run %s",
			    spec("spender", "    max_cost_usd: 0.000003\n", NULL, "while :; do :; done"));

	tap_ok(rc != 0 && strstr(err ?: "", "budget_exceeded") && strstr(err ?: "", "max_cost_usd") &&
	       strstr(err ?: "", "cpu"),
	       "limits.max_cost_usd is enforced on the metered cost (CPU here): %s", err ?: "");
	free(out);
	free(err);
}

static void test_overload(void)
{
	char id[64], *m;
	json_t *tr;
	double drops;
	int rc;

	/* lanternd stopped while 300 processes exec and exit: the 16 KiB ring fills */
	rc = tl_lantern(&T, NULL, NULL, "run %s >/dev/null 2>&1 &", spec("flood", NULL, NULL,
		 "sleep 1; i=0; while [ $i -lt 300 ]; do /bin/true; i=$((i+1)); done; sleep 1"));
	usleep(500000);
	kill(T.daemon, SIGSTOP);
	sleep(3);
	kill(T.daemon, SIGCONT);
	for (int i = 0; i < 50 && !(run_id_of("flood", id, sizeof(id)) &&
				    (tr = lantern_json("trace %s --json", id)) &&
				    !strcmp(json_string_value(json_object_get(tr, "status")) ?: "", "succeeded")); i++)
		usleep(200000);
	m = metrics();
	drops = metric(m, "lantern_ringbuf_dropped_total{ring=\"process\"} ");
	tap_ok(rc == 0 && drops > 0, "ring buffer reserves that failed under overload are counted and "
	       "exported (lantern_ringbuf_dropped_total{ring=\"process\"} %.0f)", drops);
	free(m);
}

static void test_restart(void)
{
	char id[64], tid[64] = "", *m = NULL;
	json_t *spans0, *spans1, *tr, *root, *adm;
	int rc;

	rc = tl_lantern(&T, NULL, NULL, "run %s >/dev/null 2>&1 &", spec("survivor", NULL, NULL, "sleep 4"));
	for (int i = 0; i < 50 && !run_id_of("survivor", id, sizeof(id)); i++)
		usleep(100000);
	tr = lantern_json("trace %s --json", id);
	snprintf(tid, sizeof(tid), "%s", json_string_value(json_object_get(tr, "trace_id")) ?: "");
	json_decref(tr);
	wait_spans(0, tid, "start", 3000);
	tl_daemon_stop(&T, SIGKILL);

	/* the restarted lanternd exports over OTLP/HTTP to a receiver refusing twice */
	if (!receiver_start(1, "--fail-first 2")) {
		tap_ok(false, "second receiver did not start");
		tap_ok(false, "skipped");
		tap_ok(false, "skipped");
		return;
	}
	{
		char extra[512];
		snprintf(extra, sizeof(extra), "--tenant acme --prices %s/prices.json --otlp-endpoint "
			 "http://127.0.0.1:%u --otlp-protocol http/protobuf --metrics-addr 127.0.0.1:%u "
			 "--telemetry-ringbuf-bytes 16384", T.dir, http_port[1], metrics_port);
		rc = tl_daemon_start(&T, extra);
	}
	if (!tap_ok(rc == 0, "lanternd restarted after kill -9, exporting over OTLP/HTTP"))
	{
		char *lg = NULL;
		tl_sh(&lg, NULL, "tail -5 %s", T.log);
		tap_diag("lanternd log: %s", lg ? lg : "");
		free(lg);
	}
	wait_spans(1, tid, "invoke_agent survivor", 12000);
	spans0 = received_spans(0);
	spans1 = received_spans(1);
	adm = span_named(spans0, tid, "admission");
	root = span_named(spans1, tid, "invoke_agent survivor");
	tap_ok(adm && root && !strcmp(json_string_value(json_object_get(root, "_transport")) ?: "", "http") &&
	       !strcmp(json_string_value(json_object_get(adm, "parentSpanId")) ?: "",
		       json_string_value(json_object_get(root, "spanId")) ?: "-") &&
	       !strcmp(attr_s(root, "lantern.run.status"), "succeeded"),
	       "after kill -9 and adoption the root span (over HTTP) has the same trace_id %s and is "
	       "the parent of the admission span sent before (over gRPC)", tid);
	m = metrics();
	tap_ok(metric(m, "lantern_otlp_retries_total ") >= 2 && metric(m, "lantern_spans_total{state=\"exported\"} ") >= 1 &&
	       metric(m, "lantern_spans_total{state=\"dropped\"} ") == 0,
	       "UNAVAILABLE-like answers (HTTP 503) are retried with backoff; nothing dropped");
	free(m);
	json_decref(spans0);
	json_decref(spans1);
}

int main(void)
{
	const char *missing = tl_env_missing();
	char extra[512], *m;
	int rc;

	tap_plan(PLAN);
	if (missing) {
		for (int i = 0; i < PLAN; i++)
			tap_skip(missing, "telemetry point %d", i + 1);
		return tap_done();
	}
	tl_env_init(&T, "telemetry");
	snprintf(getpids, sizeof(getpids), "%s/tests/getpids", T.build);
	snprintf(netprobe, sizeof(netprobe), "%s/tests/netprobe", T.build);
	tl_file(&T, "prices.json",
		"{\"openai/gpt-4o\": {\"input\": 2.5, \"output\": 10, \"cache_read\": 1.25,"
		" \"cache_creation\": 3, \"reasoning\": 10}}\n");
	rc = access("tests/otlp-receiver/node_modules/@opentelemetry/otlp-transformer", F_OK) == 0 &&
	     receiver_start(0, NULL);
	if (!tap_ok(rc,
		    "OTLP receiver (official OpenTelemetry JS decoder) on loopback: gRPC %u, HTTP %u "
		    "(make deps runs npm ci in tests/otlp-receiver)", grpc_port[0], http_port[0])) {
		for (int i = 1; i < PLAN; i++)
			tap_ok(false, "telemetry point %d (no receiver)", i + 1);
		return tap_done();
	}
	metrics_port = (uint16_t)(20000 + getpid() % 20000);
	snprintf(extra, sizeof(extra), "--tenant acme --prices %s/prices.json --otlp-endpoint "
		 "http://127.0.0.1:%u --otlp-protocol grpc --metrics-addr 127.0.0.1:%u "
		 "--telemetry-ringbuf-bytes 16384", T.dir, grpc_port[0], metrics_port);
	rc = tl_daemon_start(&T, extra);
	if (!tap_ok(rc == 0, "lanternd with --otlp-endpoint (gRPC), --metrics-addr, --tenant acme")) {
		for (int i = 2; i < PLAN; i++)
			tap_ok(false, "telemetry point %d (no lanternd)", i + 1);
		return tap_done();
	}
	test_trace();
	test_budget();
	m = metrics();
	if (!tap_ok(m && strstr(m, "lantern_runs{status=\"succeeded\"} 1") &&
	       strstr(m, "lantern_runs{status=\"budget_exceeded\"} 1") &&
	       metric(m, "lantern_egress_denied_total ") >= 1 && metric(m, "lantern_syscalls_total ") > GETPIDS &&
	       metric(m, "lantern_cost_usd_total{tenant=\"acme\",component=\"total\"} ") > 0 &&
	       metric(m, "lantern_spans_total{state=\"exported\"} ") >= 6,
	       "Prometheus metrics: runs by status, egress denies, syscall totals, spans exported, cost per tenant"))
		tap_diag("metrics: %s", m ? m : "(none)");
	free(m);
	test_overload();
	test_restart();
	if (!plain_start())
		tap_diag("the plaintext listener did not start");
	test_tls_export();
	test_tls_daemon();
	stop_receivers();
	tap_ok(true, "receivers stopped");
	return tap_done();
}
