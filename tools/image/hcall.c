/* lantern-hcall: one call to the harness API from inside an image that has no curl
 * able to speak HTTP over a Unix socket (busybox's cannot). Built static.
 *   lantern-hcall METHOD PATH [BODY]
 * Connects to $LANTERN_HARNESS_SOCKET, sends the request with Connection: close and
 * prints the whole answer (status line, headers, body). Exits 0 when the status is
 * 2xx, 1 otherwise, 2 when the socket cannot be reached.
 *
 * A request that could not be sent (the connection refused or reset before its last
 * byte went) is sent again on a new connection, up to SEND_TRIES times, each retry said
 * on stderr: nothing of it reached lanternd, so this is safe for any method, and it is
 * what the lantern CLI's own harness client does (its send failures are -EAGAIN). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define SEND_TRIES 5

static int send_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* A connection with the whole request sent, or -1 with errno and what failed. */
static int send_request(const struct sockaddr_un *a, const char *head, const char *body, const char **what)
{
	int fd = socket(AF_UNIX, SOCK_STREAM, 0), err;

	*what = "connect";
	if (fd < 0 || connect(fd, (const struct sockaddr *)a, sizeof(*a)) < 0)
		goto fail;
	*what = "write";
	if (send_all(fd, head, strlen(head)) < 0 || send_all(fd, body, strlen(body)) < 0)
		goto fail;
	return fd;
fail:
	err = errno;
	if (fd >= 0)
		close(fd);
	errno = err;
	return -1;
}

int main(int argc, char **argv)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	const char *sock = getenv("LANTERN_HARNESS_SOCKET"), *body = argc > 3 ? argv[3] : "", *what = "";
	char head[1024], buf[65536];
	size_t got = 0;
	ssize_t n;
	int fd = -1, hl, status = 0;

	if (argc < 3 || !sock || strlen(sock) >= sizeof(a.sun_path)) {
		fprintf(stderr, "usage: lantern-hcall METHOD PATH [BODY] (with LANTERN_HARNESS_SOCKET set)\n");
		return 2;
	}
	strcpy(a.sun_path, sock);
	hl = snprintf(head, sizeof(head),
		      "%s %s HTTP/1.1\r\nHost: lantern\r\nContent-Type: application/json\r\n"
		      "Content-Length: %zu\r\nConnection: close\r\n\r\n",
		      argv[1], argv[2], strlen(body));
	if (hl < 0 || (size_t)hl >= sizeof(head)) {
		fprintf(stderr, "lantern-hcall: request line too long\n");
		return 2;
	}
	for (int try = 1; fd < 0; try++) {
		fd = send_request(&a, head, body, &what);
		if (fd >= 0)
			break;
		if (try == SEND_TRIES || (errno != EPIPE && errno != ECONNRESET && errno != ECONNREFUSED)) {
			fprintf(stderr, "lantern-hcall: %s: %s\n", what, strerror(errno));
			return 2;
		}
		fprintf(stderr, "lantern-hcall: %s: %s: sending again (%d of %d)\n", what, strerror(errno), try + 1,
			SEND_TRIES);
		usleep(20000 * try);
	}
	while (got < sizeof(buf) - 1 && (n = read(fd, buf + got, sizeof(buf) - 1 - got)) > 0)
		got += (size_t)n;
	if (!got)
		fprintf(stderr, "lantern-hcall: the connection ended with no answer (%s)\n",
			n < 0 ? strerror(errno) : "end of file");
	buf[got] = '\0';
	fwrite(buf, 1, got, stdout);
	putchar('\n');
	sscanf(buf, "HTTP/1.1 %d", &status);
	return status >= 200 && status < 300 ? 0 : 1;
}
