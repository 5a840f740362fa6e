/* harness_test: the harness module on its own: idempotency keys as documented, the
 * step decisions (proceed, in-flight re-issue with the same key, replay, retry after a
 * retryable failure, permanent failure, repeated complete/fail), budgets before and
 * after a step, the loop guard, the replay scanner giving the same state as the full
 * parser, and the HTTP server (requests split into 3-byte writes and pipelined,
 * chunked bodies refused, a refused caller answered 403, a client pipelining 30000
 * requests without reading held off, then answered in full). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sodium.h>

#include "tap.h"
#include "lantern/harness.h"
#include "lantern/journal.h"
#include "lantern/loop.h"
#include "lantern/util.h"

static json_t *J(const char *s)
{
	return json_loads(s, 0, NULL);
}

/* Applies dec's record as lanternd would, through the raw (replay) path. */
static void apply(struct harness_state *st, struct harness_decision *d)
{
	char *s = json_dumps(d->record, JSON_COMPACT | JSON_SORT_KEYS);
	struct lerr e;

	if (harness_state_apply_raw(st, d->type, s, strlen(s), &e) < 0)
		tap_diag("apply: %s", e.msg);
	free(s);
	json_decref(d->record);
	d->record = NULL;
}

static void begin(struct harness_state *st, const struct harness_limits *lim, const char *body,
		  struct harness_decision *d)
{
	json_t *b = J(body);
	harness_begin(st, lim, b, d);
	json_decref(b);
}

static void test_keys(void)
{
	char k1[65], k2[65], k3[65], want[65];
	unsigned char d[32];
	const char *doc = "lantern-idempotency-v1\nr-abc\nfetch\n1";

	harness_idempotency_key("r-abc", "fetch", 1, k1);
	harness_idempotency_key("r-abc", "fetch", 2, k2);
	harness_idempotency_key("r-abd", "fetch", 1, k3);
	crypto_hash_sha256(d, (const unsigned char *)doc, strlen(doc));
	sodium_bin2hex(want, sizeof(want), d, sizeof(d));
	tap_ok(!strcmp(k1, want), "idempotency_key is hex SHA-256 of the documented string");
	tap_ok(strcmp(k1, k2) && strcmp(k1, k3), "the key changes with attempt and run id");
}

static void test_steps(void)
{
	struct harness_state st;
	struct harness_limits lim = { 0 };
	struct harness_decision d;
	char key1[65];
	json_t *b;

	harness_state_init(&st);
	b = J("{\"run_id\":\"r-1\",\"input\":{\"q\":1}}");
	harness_state_apply(&st, JOURNAL_RUN_STARTED, b, NULL);
	json_decref(b);

	begin(&st, &lim, "{\"step_id\":\"a\",\"kind\":\"tool\"}", &d);
	tap_ok(d.v == HV_PROCEED && d.attempt == 1, "a new step proceeds at attempt 1");
	snprintf(key1, sizeof(key1), "%s", d.key);
	apply(&st, &d);
	begin(&st, &lim, "{\"step_id\":\"a\",\"kind\":\"tool\"}", &d);
	tap_ok(d.v == HV_PROCEED && d.attempt == 1 && !strcmp(d.key, key1) &&
	       json_is_true(json_object_get(d.record, "reissued")),
	       "begin of a step in flight re-issues the same attempt and key");
	apply(&st, &d);
	tap_ok(st.steps_begun == 1, "a re-issue is not a new step");

	b = J("{\"step_id\":\"a\",\"result\":\"out\",\"exit_code\":3}");
	harness_complete(&st, b, 0, &d);
	json_decref(b);
	tap_ok(d.v == HV_RECORD && d.type == JOURNAL_STEP_COMPLETED, "complete of the step in flight is recorded");
	apply(&st, &d);
	begin(&st, &lim, "{\"step_id\":\"a\"}", &d);
	struct harness_step *s = harness_state_step(&st, "a");
	json_t *rec = s ? harness_step_record(s) : NULL;
	tap_ok(d.v == HV_REPLAY && rec && !strcmp(json_string_value(json_object_get(rec, "result")), "out") &&
	       json_integer_value(json_object_get(rec, "exit_code")) == 3,
	       "a completed step replays its recorded result and exit code");
	b = J("{\"step_id\":\"a\",\"result\":\"other\"}");
	harness_complete(&st, b, 0, &d);
	json_decref(b);
	tap_ok(d.v == HV_DONE, "a repeated complete is acknowledged, not recorded twice");

	begin(&st, &lim, "{\"step_id\":\"b\"}", &d);
	apply(&st, &d);
	b = J("{\"step_id\":\"b\",\"error\":\"503\",\"retryable\":true}");
	harness_fail(&st, b, &d);
	json_decref(b);
	apply(&st, &d);
	begin(&st, &lim, "{\"step_id\":\"b\"}", &d);
	tap_ok(d.v == HV_PROCEED && d.attempt == 2, "after a retryable failure the step proceeds at attempt 2");
	apply(&st, &d);
	b = J("{\"step_id\":\"b\",\"error\":\"400\",\"retryable\":false}");
	harness_fail(&st, b, &d);
	json_decref(b);
	apply(&st, &d);
	begin(&st, &lim, "{\"step_id\":\"b\"}", &d);
	tap_ok(d.v == HV_CONFLICT && strstr(d.reason, "not retryable"), "a permanently failed step cannot begin again");
	b = J("{\"step_id\":\"zzz\",\"result\":\"x\"}");
	harness_complete(&st, b, 0, &d);
	json_decref(b);
	tap_ok(d.v == HV_CONFLICT, "complete of a step never begun is a conflict");
	begin(&st, &lim, "{\"step_id\":\"c\",\"kind\":\"shell\"}", &d);
	tap_ok(d.v == HV_INVALID, "an unknown kind is invalid");
	harness_state_free(&st);
}

static void test_budgets(void)
{
	struct harness_state st;
	struct harness_limits lim = { .max_steps = 2, .loop_threshold = 2 };
	struct meter_table prices;
	struct meter_usage u = { 0 };
	struct harness_decision d;
	struct lerr e;
	char why[256] = "";
	json_t *b;

	meter_table_load(NULL, &prices, &e);
	harness_state_init(&st);
	begin(&st, &lim, "{\"step_id\":\"a\",\"input_digest\":\"D\"}", &d);
	apply(&st, &d);
	b = J("{\"step_id\":\"a\",\"result\":\"x\",\"usage\":{\"input_tokens\":80,\"output_tokens\":30}}");
	harness_complete(&st, b, 0.5, &d);
	json_decref(b);
	apply(&st, &d);
	u.tally = &st.tally;
	tap_ok(st.tally.total == 110 && meter_budget_spent(&prices, &u, 100, 0, METER_EXCEEDED, why, sizeof(why)) &&
	       strstr(why, "max_tokens of 100 exceeded (110 used)"),
	       "after completion: the journal's tally of 110 tokens exceeds max_tokens 100 (%s)", why);
	tap_ok(meter_budget_spent(&prices, &u, 110, 0, METER_REACHED, why, sizeof(why)) &&
	       !meter_budget_spent(&prices, &u, 110, 0, METER_EXCEEDED, why, sizeof(why)),
	       "at exactly max_tokens: no new step may begin, the completed one is not over");
	begin(&st, &lim, "{\"step_id\":\"b\",\"input_digest\":\"D\"}", &d);
	apply(&st, &d);
	begin(&st, &lim, "{\"step_id\":\"c\",\"input_digest\":\"E\"}", &d);
	tap_ok(d.v == HV_BUDGET && strstr(d.reason, "max_steps of 2"), "before a step: the third step exceeds max_steps 2");
	lim.max_steps = 0;
	begin(&st, &lim, "{\"step_id\":\"c\",\"input_digest\":\"D\"}", &d);
	tap_ok(d.v == HV_BUDGET && d.loop && strstr(d.reason, "loop detected"),
	       "the loop guard refuses a third proceed of one input digest (%s)", d.reason);
	harness_state_free(&st);
	meter_table_free(&prices);
}

static void test_scanner(void)
{
	static const char *const recs[] = {
		"{\"attempt\":1,\"idempotency_key\":\"k\",\"input_digest\":\"d1\",\"kind\":\"llm\",\"step_id\":\"s1\"}",
		"{\"attempt\":1,\"cost_usd\":0.25,\"result\":\"a \\\"quoted\\\" {brace} [x]\",\"step_id\":\"s1\","
		"\"usage\":{\"input_tokens\":10,\"model\":\"m\",\"output_tokens\":5,\"reasoning_tokens\":2}}",
		"{\"attempt\":1,\"kind\":\"tool\",\"step_id\":\"s\\u00e9\"}",
		"{\"attempt\":1,\"result\":[1,{\"a\":\"}\"}],\"step_id\":\"s\\u00e9\",\"usage\":{\"cache_read_tokens\":7}}",
	};
	struct harness_state fast, slow;
	struct lerr e;
	bool ok = true;

	harness_state_init(&fast);
	harness_state_init(&slow);
	for (size_t i = 0; i < 4; i++) {
		unsigned type = i % 2 ? JOURNAL_STEP_COMPLETED : JOURNAL_STEP_STARTED;
		json_t *p = J(recs[i]);
		ok &= harness_state_apply_raw(&fast, type, recs[i], strlen(recs[i]), &e) == 0;
		ok &= harness_state_apply(&slow, type, p, &e) == 0;
		json_decref(p);
	}
	struct harness_step *s = harness_state_step(&fast, "s1");
	json_t *r = s ? harness_step_record(s) : NULL;
	tap_ok(ok && fast.tally.total == 24 && slow.tally.total == 24 && fast.tally.n == 2 && slow.tally.n == 2 &&
	       !memcmp(&fast.tally, &slow.tally, sizeof(fast.tally)) &&
	       fast.steps_completed == 2 && harness_state_step(&fast, "s\xc3\xa9") &&
	       r && !strcmp(json_string_value(json_object_get(r, "result")), "a \"quoted\" {brace} [x]"),
	       "the replay scanner and the full parser reach the same state (escapes fall back)");
	harness_state_free(&fast);
	harness_state_free(&slow);
}

/* --- HTTP --- */
static int nreq;
static char seen[512];

static bool h_accept(void *arg, pid_t pid, char *why, size_t len)
{
	if (*(bool *)arg)
		return true;
	snprintf(why, len, "not you");
	return false;
}

static void h_request(void *arg, struct harness_conn *c, const struct harness_request *rq)
{
	size_t n = strlen(seen);

	snprintf(seen + n, sizeof(seen) - n, "%s %s [%s];", rq->method, rq->path, rq->body);
	harness_reply(c, 200, json_pack("{s:s}", "path", rq->path));
	nreq++;
}

static const struct harness_ops hops = { .accept = h_accept, .request = h_request };

static void stop_timer(struct loop *l, void *arg)
{
	loop_stop(l);
}

/* A child writes req in 3-byte pieces and prints what comes back. */
static pid_t client(const char *path, const char *req, int outfd)
{
	pid_t pid = fork();

	if (pid == 0) {
		struct sockaddr_un a = { .sun_family = AF_UNIX };
		int fd = socket(AF_UNIX, SOCK_STREAM, 0);
		char buf[4096];
		ssize_t n;

		snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
		if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
			_exit(1);
		for (size_t off = 0; off < strlen(req); off += 3) {
			size_t k = strlen(req) - off < 3 ? strlen(req) - off : 3;
			if (write(fd, req + off, k) < 0)
				break;
			usleep(2000);
		}
		shutdown(fd, SHUT_WR);
		while ((n = read(fd, buf, sizeof(buf))) > 0)
			if (write(outfd, buf, (size_t)n) < 0)
				break;
		_exit(0);
	}
	return pid;
}

static char *run_http(bool allow, const char *req)
{
	char path[128], *out = NULL;
	struct loop *l = loop_new();
	struct harness_server *s = NULL;
	struct lerr e;
	int p[2];
	pid_t pid;

	snprintf(path, sizeof(path), "/tmp/lantern-test-harness-%d.sock", getpid());
	if (pipe(p) < 0 || harness_listen(l, path, &hops, &allow, &s, &e) < 0) {
		tap_diag("listen: %s", e.msg);
		return NULL;
	}
	pid = client(path, req, p[1]);
	close(p[1]);
	loop_timer_add(l, 1500, stop_timer, NULL);
	loop_run(l);
	waitpid(pid, NULL, 0);
	out = calloc(1, 8192);
	if (read(p[0], out, 8191) < 0)
		out[0] = '\0';
	close(p[0]);
	harness_server_close(s);
	loop_free(l);
	unlink(path);
	return out;
}

/* A client that pipelines many requests and reads nothing until it has written all it
 * can: the server stops taking requests once its replies back up, and answers every one
 * of them once the client reads, without recursing once per request answered. */
#define PIPE_N 30000
#define PIPE_REQ "GET /v1/p HTTP/1.1\r\n\r\n"

static int pipe_nreq_at_stall = -1, pipe_replies = -1;

static void pipe_child(const char *path, int status_fd)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM, 0), replies = 0, match = 0;
	size_t rlen = strlen(PIPE_REQ), total = rlen * PIPE_N, sent = 0;
	static const char pat[] = "HTTP/1.1 200";
	char *all = malloc(total), buf[65536];
	bool stalled = false;

	snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
	if (!all || connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
		_exit(1);
	for (int i = 0; i < PIPE_N; i++)
		memcpy(all + (size_t)i * rlen, PIPE_REQ, rlen);
	fcntl(fd, F_SETFL, O_NONBLOCK);
	/* write without reading until the server stops taking bytes for 300 ms */
	while (!stalled && sent < total) {
		struct pollfd p = { .fd = fd, .events = POLLOUT };
		ssize_t n = send(fd, all + sent, total - sent, MSG_NOSIGNAL);

		if (n > 0)
			sent += (size_t)n;
		else if (n < 0 && errno != EAGAIN)
			_exit(2);
		else
			stalled = poll(&p, 1, 300) == 0;
	}
	if (write(status_fd, "s", 1) != 1)
		_exit(3);
	usleep(200000);
	while (replies < PIPE_N) {
		struct pollfd p = { .fd = fd, .events = POLLIN | (sent < total ? POLLOUT : 0) };
		ssize_t n;

		if (poll(&p, 1, 3000) <= 0)
			break;
		if ((p.revents & POLLOUT) && (n = send(fd, all + sent, total - sent, MSG_NOSIGNAL)) > 0)
			sent += (size_t)n;
		if (!(p.revents & POLLIN))
			continue;
		n = read(fd, buf, sizeof(buf));
		if (n <= 0)
			break;
		for (ssize_t i = 0; i < n; i++) {
			match = buf[i] == pat[match] ? match + 1 : buf[i] == pat[0];
			if (match == (int)sizeof(pat) - 1) {
				replies++;
				match = 0;
			}
		}
	}
	if (write(status_fd, &replies, sizeof(replies)) != sizeof(replies))
		_exit(4);
	_exit(0);
}

static void on_pipe_status(struct loop *l, int fd, uint32_t events, void *arg)
{
	char b[8];
	ssize_t n = read(fd, b, pipe_nreq_at_stall < 0 ? 1 : sizeof(int));

	if (n == 1 && b[0] == 's') {
		pipe_nreq_at_stall = nreq;
		return;
	}
	if (n == sizeof(int))
		memcpy(&pipe_replies, b, sizeof(int));
	loop_stop(l);
}

static void test_http_backpressure(void)
{
	char path[128];
	struct loop *l = loop_new();
	struct harness_server *s = NULL;
	struct lerr e;
	bool allow = true;
	int p[2];
	pid_t pid;

	snprintf(path, sizeof(path), "/tmp/lantern-test-harness-%d.sock", getpid());
	if (pipe(p) < 0 || harness_listen(l, path, &hops, &allow, &s, &e) < 0) {
		tap_ok(false, "pipelining: listen: %s", e.msg);
		tap_ok(false, "pipelining: every request answered");
		return;
	}
	nreq = 0;
	pid = fork();
	if (pid == 0)
		pipe_child(path, p[1]);
	close(p[1]);
	loop_add(l, p[0], EPOLLIN, on_pipe_status, NULL);
	loop_timer_add(l, 20000, stop_timer, NULL);
	loop_run(l);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	loop_del(l, p[0]);
	close(p[0]);
	harness_server_close(s);
	loop_free(l);
	unlink(path);
	tap_ok(pipe_nreq_at_stall >= 0 && pipe_nreq_at_stall < PIPE_N / 4,
	       "pipelining without reading: the server stopped taking requests after %d of %d",
	       pipe_nreq_at_stall, PIPE_N);
	tap_ok(pipe_replies == PIPE_N && nreq == PIPE_N,
	       "pipelining: once the client reads, all %d requests are answered (%d replies, %d handled)",
	       PIPE_N, pipe_replies, nreq);
}

static void test_http(void)
{
	char *out;

	seen[0] = '\0';
	out = run_http(true, "POST /v1/a HTTP/1.1\r\nContent-Length: 7\r\n\r\n{\"x\":1}"
			     "GET /v1/b HTTP/1.1\r\nHost: h\r\n\r\n");
	tap_ok(out && strstr(out, "\"path\":\"/v1/a\"") && strstr(out, "\"path\":\"/v1/b\"") &&
	       !strcmp(seen, "POST /v1/a [{\"x\":1}];GET /v1/b [];"),
	       "two pipelined requests written 3 bytes at a time are both answered, in order (%s)", seen);
	free(out);
	out = run_http(true, "POST /v1/a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
	tap_ok(out && strstr(out, "HTTP/1.1 411"), "a chunked body is refused with 411");
	free(out);
	out = run_http(true, "POST /v1/c HTTP/1.1\r\nConnection: close\r\nContent-Length: 7\r\n\r\n"
			     "{\"x\":2}");
	tap_ok(out && strstr(out, "\"path\":\"/v1/c\"") && strstr(out, "Connection: close"),
	       "Connection: close, the body arriving after the headers: answered, then closed");
	free(out);
	nreq = 0;
	out = run_http(false, "GET /v1/input HTTP/1.1\r\n\r\n");
	tap_ok(out && strstr(out, "HTTP/1.1 403") && strstr(out, "not you") && nreq == 0,
	       "a caller the accept check refuses gets 403 and its request is not handled");
	free(out);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	if (sodium_init() < 0)
		return 1;
	tap_plan(23);
	test_keys();
	test_steps();
	test_budgets();
	test_scanner();
	test_http();
	test_http_backpressure();
	return tap_done();
}
