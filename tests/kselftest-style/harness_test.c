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

/* Records applied so far, by "offset" (index + 1): a journal in memory. */
static char *recs[64];
static size_t nrecs;

static const char *rec_at(uint64_t off)
{
	return off && off <= nrecs ? recs[off - 1] : NULL;
}

/* Applies dec's record as lanternd does: the text as written, through the scanner. */
static void apply(struct harness_state *st, struct harness_decision *d)
{
	struct lerr e;

	if (nrecs < sizeof(recs) / sizeof(recs[0]) && d->record) {
		recs[nrecs++] = d->record;
		if (harness_state_apply(st, d->type, d->record, d->record_len, nrecs, &e) < 0)
			tap_diag("apply: %s", e.msg);
	} else {
		free(d->record);
	}
	d->record = NULL;
}

static void forget_records(void)
{
	while (nrecs)
		free(recs[--nrecs]);
}

/* A call decoded from a POST body, as lantern-wire (or the in-process server) does. */
static int call_of(const char *path, const char *body, struct harness_call *c)
{
	char why[256];

	return harness_call_decode("POST", path, body, strlen(body), c, why, sizeof(why));
}

static void begin(struct harness_state *st, const struct harness_limits *lim, const char *body,
		  struct harness_decision *d)
{
	struct harness_call c;

	memset(d, 0, sizeof(*d));
	if (call_of("/v1/steps/begin", body, &c) == 0)
		harness_begin(st, lim, &c, d);
	else
		d->v = HV_INVALID;
	harness_call_free(&c);
}

static void complete(struct harness_state *st, const char *body, struct harness_decision *d)
{
	struct harness_call c;

	memset(d, 0, sizeof(*d));
	if (call_of("/v1/steps/complete", body, &c) == 0)
		harness_complete(st, &c, 0.5, d);
	else
		d->v = HV_INVALID;
	harness_call_free(&c);
}

static void fail(struct harness_state *st, const char *body, struct harness_decision *d)
{
	struct harness_call c;

	memset(d, 0, sizeof(*d));
	if (call_of("/v1/steps/fail", body, &c) == 0)
		harness_fail(st, &c, d);
	else
		d->v = HV_INVALID;
	harness_call_free(&c);
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
	static const char started[] = "{\"input\":{\"q\":1},\"run_id\":\"r-1\"}";
	const char *rec, *v;
	size_t vlen;

	harness_state_init(&st);
	harness_state_apply(&st, JOURNAL_RUN_STARTED, started, strlen(started), 1000, NULL);
	v = harness_record_member(started, strlen(started), "input", &vlen);
	tap_ok(!strcmp(st.run_id, "r-1") && st.started_off == 1000 && v && vlen == 7 && !strncmp(v, "{\"q\":1}", 7),
	       "run_started: the run id, and where the input is (read back as its bytes)");

	begin(&st, &lim, "{\"step_id\":\"a\",\"kind\":\"tool\"}", &d);
	tap_ok(d.v == HV_PROCEED && d.attempt == 1, "a new step proceeds at attempt 1");
	snprintf(key1, sizeof(key1), "%s", d.key);
	apply(&st, &d);
	begin(&st, &lim, "{\"step_id\":\"a\",\"kind\":\"tool\"}", &d);
	tap_ok(d.v == HV_PROCEED && d.attempt == 1 && !strcmp(d.key, key1) && d.reissued &&
	       strstr(d.record, "\"reissued\":true"),
	       "begin of a step in flight re-issues the same attempt and key");
	apply(&st, &d);
	tap_ok(st.steps_begun == 1, "a re-issue is not a new step");

	complete(&st, "{\"step_id\":\"a\",\"result\":{\"z\":[1,\"}\"],\"a\":\"out\"},\"exit_code\":3}", &d);
	tap_ok(d.v == HV_RECORD && d.type == JOURNAL_STEP_COMPLETED &&
	       !strcmp(d.record, "{\"attempt\":1,\"exit_code\":3,\"result\":{\"a\":\"out\",\"z\":[1,\"}\"]},\"step_id\":\"a\"}"),
	       "complete of the step in flight is recorded, the result as compact sorted JSON: %s", d.record);
	apply(&st, &d);
	begin(&st, &lim, "{\"step_id\":\"a\"}", &d);
	struct harness_step *s = harness_state_step(&st, "a");
	rec = s ? rec_at(s->rec_off) : NULL;
	v = rec ? harness_record_member(rec, strlen(rec), "result", &vlen) : NULL;
	tap_ok(d.v == HV_REPLAY && v && vlen == strlen("{\"a\":\"out\",\"z\":[1,\"}\"]}") &&
	       !strncmp(v, "{\"a\":\"out\",\"z\":[1,\"}\"]}", vlen),
	       "a completed step replays its recorded result and exit code (read back by its offset)");
	complete(&st, "{\"step_id\":\"a\",\"result\":\"other\"}", &d);
	tap_ok(d.v == HV_DONE, "a repeated complete is acknowledged, not recorded twice");

	begin(&st, &lim, "{\"step_id\":\"b\"}", &d);
	apply(&st, &d);
	fail(&st, "{\"step_id\":\"b\",\"error\":\"503\",\"retryable\":true}", &d);
	apply(&st, &d);
	begin(&st, &lim, "{\"step_id\":\"b\"}", &d);
	tap_ok(d.v == HV_PROCEED && d.attempt == 2, "after a retryable failure the step proceeds at attempt 2");
	apply(&st, &d);
	fail(&st, "{\"step_id\":\"b\",\"error\":\"400 \\u00e9\",\"retryable\":false}", &d);
	apply(&st, &d);
	begin(&st, &lim, "{\"step_id\":\"b\"}", &d);
	tap_ok(d.v == HV_CONFLICT && strstr(d.reason, "not retryable: 400 \xc3\xa9"),
	       "a permanently failed step cannot begin again (its error, decoded from the record: %s)", d.reason);
	complete(&st, "{\"step_id\":\"zzz\",\"result\":\"x\"}", &d);
	tap_ok(d.v == HV_CONFLICT, "complete of a step never begun is a conflict");
	begin(&st, &lim, "{\"step_id\":\"c\",\"kind\":\"shell\"}", &d);
	tap_ok(d.v == HV_INVALID, "an unknown kind is invalid");
	harness_state_free(&st);
	forget_records();
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

	meter_table_load(NULL, &prices, &e);
	harness_state_init(&st);
	begin(&st, &lim, "{\"step_id\":\"a\",\"input_digest\":\"D\"}", &d);
	apply(&st, &d);
	complete(&st, "{\"step_id\":\"a\",\"result\":\"x\",\"usage\":{\"input_tokens\":80,\"output_tokens\":30}}", &d);
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
	forget_records();
	meter_table_free(&prices);
}

/* The record scanner against jansson: escapes in the fields the state needs are
 * decoded (no fallback parser any more), the rest is skipped whatever it holds, and
 * what lantern never writes is refused rather than guessed. */
static void test_scanner(void)
{
	static const char *const good[] = {
		"{\"attempt\":1,\"idempotency_key\":\"k\",\"input_digest\":\"d1\",\"kind\":\"llm\",\"step_id\":\"s1\"}",
		"{\"attempt\":1,\"cost_usd\":0.25,\"result\":\"a \\\"quoted\\\" {brace} [x]\",\"step_id\":\"s1\","
		"\"usage\":{\"input_tokens\":10,\"model\":\"m\\u00e9\",\"output_tokens\":5,\"reasoning_tokens\":2}}",
		"{\"attempt\":1,\"kind\":\"tool\",\"step_id\":\"s\\u00e9\\ud83d\\ude00\"}",
		"{\"attempt\":1,\"result\":[1,{\"a\":\"}\\\\\"}],\"step_id\":\"s\\u00e9\\ud83d\\ude00\",\"usage\":{\"cache_read_tokens\":7,\"provider\":\"p\\/q\"}}",
	};
	static const char *const bad[] = {
		"{\"attempt\":1,\"step_id\":\"s1", "[1,2]", "{\"step_id\":\"\\ud800\"}",
		"{\"attempt\":99999999999,\"step_id\":\"x\"}", "{\"step_id\":\"x\",\"result\":tru", "",
	};
	struct harness_state st;
	struct meter_tally want = { 0 };
	struct lerr e;
	bool ok = true;
	char *deep;
	size_t n = 0;

	harness_state_init(&st);
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		unsigned type = i % 2 ? JOURNAL_STEP_COMPLETED : JOURNAL_STEP_STARTED;
		json_t *p = json_loads(good[i], 0, NULL);

		ok &= p != NULL;
		ok &= harness_state_apply(&st, type, good[i], strlen(good[i]), i + 1, &e) == 0;
		if (json_object_get(p, "usage"))
			meter_tally_add_usage(&want, json_object_get(p, "usage"));
		json_decref(p);
	}
	tap_ok(ok && st.tally.total == 24 && st.tally.n == 2 && !memcmp(&st.tally, &want, sizeof(want)) &&
	       st.steps_completed == 2 && harness_state_step(&st, "s\xc3\xa9\xf0\x9f\x98\x80"),
	       "the scanner reaches the state jansson's reading gives (escapes and surrogate pairs decoded)");
	harness_state_free(&st);
	ok = true;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		harness_state_init(&st);
		ok &= harness_state_apply(&st, JOURNAL_STEP_STARTED, bad[i], strlen(bad[i]), 1, &e) == -EBADMSG;
		harness_state_free(&st);
	}
	deep = malloc(40000);
	n += (size_t)sprintf(deep, "{\"step_id\":\"x\",\"result\":");
	for (int i = 0; i < 10000; i++)
		deep[n++] = '[';
	for (int i = 0; i < 10000; i++)
		deep[n++] = ']';
	deep[n++] = '}';
	harness_state_init(&st);
	ok &= harness_state_apply(&st, JOURNAL_STEP_STARTED, deep, n, 1, &e) == -EBADMSG;
	harness_state_free(&st);
	free(deep);
	tap_ok(ok, "what lantern never writes is refused: cut short, not an object, a lone surrogate, an "
	       "attempt past 32 bits, a broken literal, nothing, 10000 nested arrays");
}

/* One JSON string for test_scanner_escapes: prefix, then n backslashes written before a
 * quote: n even, they are n/2 escaped backslashes and the quote closes the string; n
 * odd, the last one escapes the quote and "y" follows inside the string. */
static void escaped_run(char *out, const char *prefix, int n)
{
	out += sprintf(out, "\"%s", prefix);
	for (int i = 0; i < n; i++)
		*out++ = '\\';
	sprintf(out, n % 2 ? "\"y\"" : "\"");
}

/* The scanner finds a string's end with memchr and counts the backslashes before each
 * quote: for every run of 0 to 7 backslashes before a quote, right after the opening
 * quote or not, in a skipped string, in a nested one and in a decoded one, the members
 * after it read as jansson reads them; a string whose last quote is escaped is cut
 * short and refused. */
static void test_scanner_escapes(void)
{
	static const char *const prefixes[] = { "", "x" };
	static const char cut[] = "{\"step_id\":\"s\",\"result\":\"abc\\\"}";
	struct harness_state st;
	struct lerr e;
	bool ok = true;
	char str[64], rec[512], id[16];

	for (size_t p = 0; p < 2; p++)
		for (int n = 0; n < 8; n++) {
			json_t *j;
			const char *model;

			escaped_run(str, prefixes[p], n);
			snprintf(id, sizeof(id), "s%zu%d", p, n);
			snprintf(rec, sizeof(rec), "{\"attempt\":1,\"result\":%s,\"step_id\":\"%s\",\"usage\":"
				 "{\"input_tokens\":3,\"model\":%s,\"x\":{\"a\":[%s,%s]},\"output_tokens\":4}}",
				 str, id, str, str, str);
			j = json_loads(rec, 0, NULL);
			model = json_string_value(json_object_get(json_object_get(j, "usage"), "model"));
			harness_state_init(&st);
			ok &= model && harness_state_apply(&st, JOURNAL_STEP_STARTED, rec, strlen(rec), 1, &e) == 0 &&
			      harness_state_apply(&st, JOURNAL_STEP_COMPLETED, rec, strlen(rec), 2, &e) == 0 &&
			      harness_state_step(&st, id) && st.steps_completed == 1 && st.tally.n == 1 &&
			      !strcmp(st.tally.m[0].model, model) && st.tally.total == 7;
			harness_state_free(&st);
			json_decref(j);
		}
	harness_state_init(&st);
	ok &= harness_state_apply(&st, JOURNAL_STEP_STARTED, cut, strlen(cut), 1, &e) == -EBADMSG;
	harness_state_free(&st);
	tap_ok(ok, "strings end where jansson ends them: 0 to 7 backslashes before a quote, skipped, "
	       "nested and decoded; an escaped last quote is a string cut short");
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
	{
		char b[300];
		int n = snprintf(b, sizeof(b), "{\"path\":\"%s\"}", rq->path);

		harness_reply(c, 200, b, (size_t)n);
	}
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
		for (size_t off = 0, len = strlen(req); off < len;) {
			/* large requests go in whole writes: 3-byte pieces would take hours */
			size_t k = len > 4096 ? len - off : len - off < 3 ? len - off : 3;
			ssize_t w = write(fd, req + off, k);

			if (w <= 0)
				break;
			off += (size_t)w;
			if (len <= 4096)
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
	{
		/* the documented bound is the body's: 8 MiB exactly is taken, one byte more is 413 */
		size_t hl = 64, max = HARNESS_MAX_BODY;
		char *req = malloc(hl + max + 2), *o1, *o2;

		if (req) {
			int h = snprintf(req, hl, "POST /v1/big HTTP/1.1\r\nContent-Length: %zu\r\n\r\n", max);

			memset(req + h, 'x', max);
			req[h + max] = '\0';
			o1 = run_http(true, req);
			h = snprintf(req, hl, "POST /v1/big HTTP/1.1\r\nContent-Length: %zu\r\n\r\n", max + 1);
			memset(req + h, 'x', max + 1);
			req[h + max + 1] = '\0';
			o2 = run_http(true, req);
			tap_ok(o1 && strstr(o1, "HTTP/1.1 200") && strstr(o1, "/v1/big") && o2 &&
			       strstr(o2, "HTTP/1.1 413"),
			       "a body of exactly 8 MiB is answered 200, one of 8 MiB + 1 byte 413 (%.12s | %.12s)",
			       o1 ? o1 : "", o2 ? o2 : "");
			free(o1);
			free(o2);
			free(req);
		} else {
			tap_ok(false, "a body of exactly 8 MiB: out of memory");
		}
	}
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
	tap_plan(27);
	test_keys();
	test_steps();
	test_budgets();
	test_scanner();
	test_scanner_escapes();
	test_http();
	test_http_backpressure();
	return tap_done();
}
