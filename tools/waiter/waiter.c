/* lantern-waiter: the first process of a pooled sandbox (docs/pools.md). The runtime
 * starts it as it would start a workload: same image, user, capabilities, seccomp
 * profile, namespaces and instance cgroups. It connects to the socket lanternd gave
 * it, says hello, and does nothing until lanternd sends the claiming run's command,
 * environment and working directory; then it becomes that workload with execve. Its
 * end of the socket is close-on-exec, so lanternd sees the exec as end of file. If it
 * cannot exec, it says why and exits 127. If lanternd goes away first, it exits 75
 * having run nothing.
 *
 *   lantern-waiter SOCKET
 *
 * Static, libc only: it runs in images that have no libc of their own. The message
 * format is in include/lantern/spawn.h. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "lantern/spawn.h"

#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

static int read_full(int fd, void *buf, size_t len)
{
	char *p = buf;

	while (len) {
		ssize_t n = read(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static void say(int fd, const char *s)
{
	size_t len = strlen(s);

	while (len) {
		ssize_t n = write(fd, s, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return;
		s += n;
		len -= (size_t)n;
	}
}

/* Reports why the workload cannot start: to lanternd and to the run's log. */
static void fail(int sock, const char *what, const char *obj, int err)
{
	char msg[768];

	snprintf(msg, sizeof(msg), "lantern-waiter: %s %s: %s\n", what, obj, strerror(err));
	say(sock, msg);
	say(2, msg);
	_exit(127);
}

static uint32_t le32(const unsigned char *b)
{
	return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

/* execve of cmd, looked up in path when it has no '/'; returns the errno to report. */
static int exec_in_path(char **argv, char **envp, const char *path)
{
	char buf[4096];
	int err = ENOENT;

	if (strchr(argv[0], '/')) {
		execve(argv[0], argv, envp);
		return errno;
	}
	while (*path) {
		const char *end = strchr(path, ':');
		size_t n = end ? (size_t)(end - path) : strlen(path);

		if (n + 1 + strlen(argv[0]) < sizeof(buf)) {
			snprintf(buf, sizeof(buf), "%.*s/%s", (int)n, n ? path : ".", argv[0]);
			execve(buf, argv, envp);
			/* keep looking past a directory that lacks it; report what stopped an exec
			 * of a file that exists */
			if (errno != ENOENT && errno != ENOTDIR)
				err = errno;
		}
		path += n + (end ? 1 : 0);
		if (!end)
			break;
	}
	return err;
}

int main(int argc, char **argv)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	unsigned char hdr[12];
	uint32_t len, nargs, nenv;
	char *body, *p, *end, *cwd, **args, **env, *home = getenv("HOME");
	const char *path = DEFAULT_PATH;
	int sock, has_home = 0;

	if (argc != 2 || strlen(argv[1]) >= sizeof(a.sun_path)) {
		say(2, "usage: lantern-waiter SOCKET\n");
		return 2;
	}
	strcpy(a.sun_path, argv[1]);
	sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (sock < 0 || connect(sock, (struct sockaddr *)&a, sizeof(a)) < 0)
		return SPAWN_WAITER_ORPHANED;
	say(sock, SPAWN_WAITER_HELLO);
	if (read_full(sock, hdr, sizeof(hdr)) < 0)
		return SPAWN_WAITER_ORPHANED;
	len = le32(hdr);
	nargs = le32(hdr + 4);
	nenv = le32(hdr + 8);
	if (!len || len > SPAWN_WAITER_MSG_MAX || !nargs || nargs > SPAWN_WAITER_STRS_MAX ||
	    nenv > SPAWN_WAITER_STRS_MAX)
		fail(sock, "read", "the command", EPROTO);
	if (!(body = malloc(len)) || !(args = calloc(nargs + 1, sizeof(*args))) ||
	    !(env = calloc(nenv + 2, sizeof(*env))))
		fail(sock, "read", "the command", ENOMEM);
	if (read_full(sock, body, len) < 0)
		return SPAWN_WAITER_ORPHANED;
	if (body[len - 1] != '\0')
		fail(sock, "read", "the command", EPROTO);
	p = body;
	end = body + len;
	cwd = p;
	p += strlen(p) + 1;
	for (uint32_t i = 0; i < nargs + nenv; i++) {
		if (p >= end)
			fail(sock, "read", "the command", EPROTO);
		if (i < nargs) {
			args[i] = p;
		} else {
			env[i - nargs] = p;
			if (!strncmp(p, "PATH=", 5))
				path = p + 5;
			has_home |= !strncmp(p, "HOME=", 5);
		}
		p += strlen(p) + 1;
	}
	if (p != end)
		fail(sock, "read", "the command", EPROTO);
	/* as the runtime would have set it for this user, had the workload started cold */
	if (!has_home && home && (env[nenv] = malloc(strlen(home) + 6)))
		sprintf(env[nenv], "HOME=%s", home);
	if (chdir(cwd) < 0)
		fail(sock, "chdir to", cwd, errno);
	fail(sock, "exec", args[0], exec_in_path(args, env, path));
	return 127;
}
