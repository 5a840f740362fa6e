/* waiter.c: lanternd's side of a pooled sandbox's waiter (tools/waiter): the message
 * that tells it what to exec, and the wait for that exec (end of file on the socket)
 * or for the waiter's reason why not. Bounded: the message by SPAWN_WAITER_MSG_MAX,
 * the wait by the caller's timeout. */
#include "lantern/spawn.h"

#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static void put32(unsigned char *b, uint32_t v)
{
	b[0] = (unsigned char)v;
	b[1] = (unsigned char)(v >> 8);
	b[2] = (unsigned char)(v >> 16);
	b[3] = (unsigned char)(v >> 24);
}

static int ms_left(uint64_t deadline)
{
	uint64_t now = util_now_ns(CLOCK_MONOTONIC);

	return now >= deadline ? 0 : (int)((deadline - now + 999999) / 1000000);
}

int spawn_waiter_exec(int fd, char *const *argv, char *const *envp, const char *cwd, int timeout_ms,
		      struct lerr *e)
{
	uint64_t deadline = util_now_ns(CLOCK_MONOTONIC) + (uint64_t)timeout_ms * 1000000;
	size_t len = 12 + strlen(cwd) + 1, off = 0, nargs = 0, nenv = 0;
	char reply[512];
	size_t got = 0;
	unsigned char *msg;
	int err = 0;

	for (; argv && argv[nargs]; nargs++)
		len += strlen(argv[nargs]) + 1;
	for (; envp && envp[nenv]; nenv++)
		len += strlen(envp[nenv]) + 1;
	if (!nargs || len - 12 > SPAWN_WAITER_MSG_MAX || nargs + nenv > SPAWN_WAITER_STRS_MAX)
		return lerr_set(e, E2BIG, "waiter: the command and environment take %zu bytes in %zu strings: "
				"at most %u bytes and %u strings", len - 12, nargs + nenv, SPAWN_WAITER_MSG_MAX,
				SPAWN_WAITER_STRS_MAX);
	if (!(msg = malloc(len)))
		return lerr_set(e, ENOMEM, "waiter: out of memory");
	put32(msg, (uint32_t)(len - 12));
	put32(msg + 4, (uint32_t)nargs);
	put32(msg + 8, (uint32_t)nenv);
	off = 12;
	memcpy(msg + off, cwd, strlen(cwd) + 1);
	off += strlen(cwd) + 1;
	for (size_t i = 0; i < nargs; i++) {
		memcpy(msg + off, argv[i], strlen(argv[i]) + 1);
		off += strlen(argv[i]) + 1;
	}
	for (size_t i = 0; i < nenv; i++) {
		memcpy(msg + off, envp[i], strlen(envp[i]) + 1);
		off += strlen(envp[i]) + 1;
	}
	for (off = 0; off < len;) {
		struct pollfd pf = { .fd = fd, .events = POLLOUT };
		ssize_t n = send(fd, msg + off, len - off, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n > 0) {
			off += (size_t)n;
			continue;
		}
		if (n < 0 && errno != EAGAIN && errno != EINTR) {
			err = lerr_set(e, EPIPE, "waiter: gone before it was told what to run: %s", strerror(errno));
			goto out;
		}
		if (poll(&pf, 1, ms_left(deadline)) == 0) {
			err = lerr_set(e, ETIMEDOUT, "waiter: did not take the command within %d ms", timeout_ms);
			goto out;
		}
	}
	/* end of file: its end was closed by the exec; bytes: why it could not exec */
	for (;;) {
		struct pollfd pf = { .fd = fd, .events = POLLIN };
		ssize_t n = recv(fd, reply + got, sizeof(reply) - 1 - got, MSG_DONTWAIT);

		if (n == 0 && !got)
			break;
		if (n == 0 || (n > 0 && (got += (size_t)n) == sizeof(reply) - 1)) {
			reply[got] = '\0';
			reply[strcspn(reply, "\n")] = '\0';
			err = lerr_set(e, ENOEXEC, "%s", reply);
			break;
		}
		if (n > 0)
			continue;
		if (errno != EAGAIN && errno != EINTR) {
			err = lerr_set(e, EPIPE, "waiter: connection lost before its exec: %s", strerror(errno));
			break;
		}
		if (poll(&pf, 1, ms_left(deadline)) == 0) {
			err = lerr_set(e, ETIMEDOUT, "waiter: did not exec within %d ms", timeout_ms);
			break;
		}
	}
out:
	free(msg);
	return err ? -abs(err) : 0;
}
