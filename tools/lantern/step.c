/* step.c: `lantern step ID [--kind K] [--digest D] -- CMD ARGS...`, run inside a
 * workload: makes a shell command a journaled step through the harness socket in
 * $LANTERN_HARNESS_SOCKET. If step ID already completed, CMD does not run: the
 * recorded stdout is printed and the recorded exit code returned. Otherwise CMD runs
 * with LANTERN_IDEMPOTENCY_KEY and LANTERN_STEP_ATTEMPT in its environment, its stdout
 * is passed through and recorded with its exit code.
 *
 * Every harness call is safe to repeat, so when lanternd restarts (connection
 * refused, or cut before the answer) the call is retried until the socket answers
 * again, for up to $LANTERN_HARNESS_WAIT seconds (default 60). */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "cli.h"
#include "lantern/harness.h"
#include "lantern/util.h"

#define STEP_MAX_OUTPUT (4u << 20)
#define EXIT_HARNESS 125 /* the harness refused or could not be reached */

static int write_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static int http_call(const char *sock, const char *method, const char *path, json_t *body,
		     int *status, json_t **resp)
{
	const char *w = getenv("LANTERN_HARNESS_WAIT");
	uint64_t deadline = util_now_ns(CLOCK_MONOTONIC) +
			    (uint64_t)(w && *w ? atoi(w) : 60) * 1000000000ull;
	char *s = body ? json_dumps(body, JSON_COMPACT) : NULL;
	int err;

	while ((err = harness_http(sock, method, path, s, NULL, status, resp)) == -EAGAIN &&
	       util_now_ns(CLOCK_MONOTONIC) < deadline)
		usleep(100000);
	free(s);
	return err;
}

static void print_result(json_t *rec)
{
	const char *r = json_string_value(json_object_get(rec, "result"));
	const char *b = json_string_value(json_object_get(rec, "result_b64"));

	if (r) {
		write_all(1, r, json_string_length(json_object_get(rec, "result")));
	} else if (b) {
		size_t bl = strlen(b), n = 0;
		unsigned char *bin = malloc(bl + 1);
		if (bin && sodium_base642bin(bin, bl + 1, b, bl, NULL, &n, NULL,
					     sodium_base64_VARIANT_ORIGINAL) == 0)
			write_all(1, (char *)bin, n);
		free(bin);
	}
}

/* Runs argv with the step's key; collects its stdout (passed through as well). */
static int run_cmd(char **argv, const char *step_id, const char *key, int attempt, char **out,
		   size_t *outlen, int *wstatus)
{
	int p[2];
	pid_t pid;
	size_t cap = 65536;
	char num[16];

	*out = malloc(cap);
	*outlen = 0;
	if (!*out || pipe2(p, O_CLOEXEC) < 0)
		return -errno;
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		snprintf(num, sizeof(num), "%d", attempt);
		setenv("LANTERN_IDEMPOTENCY_KEY", key, 1);
		setenv("LANTERN_STEP_ATTEMPT", num, 1);
		setenv("LANTERN_STEP_ID", step_id, 1);
		dup2(p[1], 1);
		execvp(argv[0], argv);
		fprintf(stderr, "lantern step: exec %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	close(p[1]);
	for (;;) {
		ssize_t n;

		if (cap - *outlen < 4096 && cap < STEP_MAX_OUTPUT + 65536) {
			char *nb = realloc(*out, cap * 2);
			if (nb) {
				*out = nb;
				cap *= 2;
			}
		}
		n = read(p[0], *out + *outlen, cap - *outlen - 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		write_all(1, *out + *outlen, (size_t)n);
		*outlen += (size_t)n;
		if (*outlen > STEP_MAX_OUTPUT)
			*outlen = STEP_MAX_OUTPUT + 1; /* recorded as too large below */
	}
	close(p[0]);
	while (waitpid(pid, wstatus, 0) < 0 && errno == EINTR)
		;
	(*out)[*outlen < cap ? *outlen : cap - 1] = '\0';
	return 0;
}

int cmd_step(struct cli *c, int argc, char **argv)
{
	const char *sock = getenv("LANTERN_HARNESS_SOCKET"), *kind = "tool", *digest = NULL;
	char dg[crypto_hash_sha256_BYTES * 2 + 1], *out = NULL;
	json_t *req, *resp = NULL;
	int i, status = 0, ws = 0, rc;
	size_t outlen = 0;

	for (i = 1; i < argc && strcmp(argv[i], "--"); i++) {
		if (!strcmp(argv[i], "--kind") && i + 1 < argc)
			kind = argv[++i];
		else if (!strcmp(argv[i], "--digest") && i + 1 < argc)
			digest = argv[++i];
		else if (argv[i][0] == '-' || i != 1)
			break;
	}
	if (argc < 4 || i >= argc || strcmp(argv[i], "--") || i + 1 >= argc || argv[1][0] == '-') {
		fprintf(stderr, "usage: lantern step ID [--kind llm|tool|other] [--digest D] -- CMD ARGS...\n");
		return 2;
	}
	if (!sock || !*sock) {
		fprintf(stderr, "lantern step: LANTERN_HARNESS_SOCKET is not set (run inside a Lantern workload)\n");
		return EXIT_HARNESS;
	}
	if (sodium_init() < 0)
		return EXIT_HARNESS;
	if (!digest) {
		/* the command line is the step's input: the same command repeated is a loop */
		crypto_hash_sha256_state h;
		unsigned char d[crypto_hash_sha256_BYTES];

		crypto_hash_sha256_init(&h);
		for (int k = i + 1; k < argc; k++)
			crypto_hash_sha256_update(&h, (unsigned char *)argv[k], strlen(argv[k]) + 1);
		crypto_hash_sha256_final(&h, d);
		sodium_bin2hex(dg, sizeof(dg), d, sizeof(d));
		digest = dg;
	}

	req = json_pack("{s:s, s:s, s:s}", "step_id", argv[1], "kind", kind, "input_digest", digest);
	rc = http_call(sock, "POST", "/v1/steps/begin", req, &status, &resp);
	json_decref(req);
	if (rc < 0 || status != 200) {
		fprintf(stderr, "lantern step %s: %s\n", argv[1],
			rc < 0 ? "the harness socket does not answer" :
			json_string_value(json_object_get(resp, "reason")) ?: "refused");
		json_decref(resp);
		return EXIT_HARNESS;
	}
	if (!strcmp(json_string_value(json_object_get(resp, "action")) ?: "", "replay")) {
		print_result(resp);
		rc = (int)json_integer_value(json_object_get(resp, "exit_code"));
		json_decref(resp);
		return rc;
	}
	int attempt = (int)json_integer_value(json_object_get(resp, "attempt"));
	char key[HARNESS_KEY_LEN + 1];
	snprintf(key, sizeof(key), "%s", json_string_value(json_object_get(resp, "idempotency_key")) ?: "");
	json_decref(resp);
	resp = NULL;

	if (run_cmd(argv + i + 1, argv[1], key, attempt, &out, &outlen, &ws) < 0) {
		fprintf(stderr, "lantern step %s: cannot run %s: %s\n", argv[1], argv[i + 1], strerror(errno));
		free(out);
		return EXIT_HARNESS;
	}
	if (WIFSIGNALED(ws) || outlen > STEP_MAX_OUTPUT) {
		char why[128];
		snprintf(why, sizeof(why), WIFSIGNALED(ws) ? "killed by signal %d" : "stdout larger than %d bytes",
			 WIFSIGNALED(ws) ? WTERMSIG(ws) : (int)STEP_MAX_OUTPUT);
		req = json_pack("{s:s, s:i, s:s, s:b}", "step_id", argv[1], "attempt", attempt, "error", why,
				"retryable", WIFSIGNALED(ws));
		rc = WIFSIGNALED(ws) ? 128 + WTERMSIG(ws) : 1;
		http_call(sock, "POST", "/v1/steps/fail", req, &status, &resp);
	} else {
		rc = WEXITSTATUS(ws);
		req = json_pack("{s:s, s:i, s:i}", "step_id", argv[1], "attempt", attempt, "exit_code", rc);
		json_t *r = json_stringn(out, outlen);
		if (r) {
			json_object_set_new(req, "result", r);
		} else {
			size_t bl = sodium_base64_encoded_len(outlen, sodium_base64_VARIANT_ORIGINAL);
			char *b = malloc(bl);
			sodium_bin2base64(b, bl, (unsigned char *)out, outlen, sodium_base64_VARIANT_ORIGINAL);
			json_object_set_new(req, "result_b64", json_string(b));
			free(b);
		}
		if (http_call(sock, "POST", "/v1/steps/complete", req, &status, &resp) < 0 || status != 200) {
			fprintf(stderr, "lantern step %s: completion not recorded: %s\n", argv[1],
				json_string_value(json_object_get(resp, "reason")) ?: "no answer");
			rc = EXIT_HARNESS;
		} else if (json_object_get(resp, "budget_exceeded")) {
			fprintf(stderr, "lantern step %s: %s\n", argv[1],
				json_string_value(json_object_get(resp, "budget_exceeded")));
		}
	}
	json_decref(req);
	json_decref(resp);
	free(out);
	return rc;
}
