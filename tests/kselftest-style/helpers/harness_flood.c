/* harness_flood: a hostile workload's side of privsep_test, run inside a run so its
 * harness socket ($LANTERN_HARNESS_SOCKET) accepts it.
 *
 *   harness_flood pipeline N   N pipelined GET /v1/input on one connection, written
 *                              while the answers are read; prints "answered A of N"
 *   harness_flood noread N S   N pipelined GET /v1/input, then S seconds of never
 *                              reading; prints "held"
 *   harness_flood conns N S    N connections at once, each sends one request; after S
 *                              seconds prints "answered A refused R of N"
 *   harness_flood garbage      malformed requests, one connection each; prints the
 *                              status lines it got back, one per line
 *   harness_flood bigsteps N B S  N steps, each completed with a result of B bytes,
 *                              then S seconds asleep; prints "completed C of N"
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static const char req[] = "GET /v1/input HTTP/1.1\r\nHost: h\r\n\r\n";

static int dial(void)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	const char *p = getenv("LANTERN_HARNESS_SOCKET");
	int fd;

	if (!p || strlen(p) >= sizeof(a.sun_path)) {
		fprintf(stderr, "harness_flood: no LANTERN_HARNESS_SOCKET\n");
		exit(2);
	}
	strcpy(a.sun_path, p);
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		perror("harness_flood: connect");
		exit(2);
	}
	return fd;
}

/* Counts "HTTP/1.1 200 " at the start of answers in a stream read in pieces. */
struct counter {
	char tail[16];
	size_t tl;
	long n;
};

static void count(struct counter *c, const char *buf, size_t len)
{
	static const char pat[] = "HTTP/1.1 200 ";
	const size_t pl = sizeof(pat) - 1;
	char *join = malloc(c->tl + len);

	memcpy(join, c->tail, c->tl);
	memcpy(join + c->tl, buf, len);
	size_t n = c->tl + len;
	for (char *p = join; (p = memmem(p, (size_t)(join + n - p), pat, pl)); p += pl)
		c->n++;
	c->tl = n < pl - 1 ? n : pl - 1;
	memcpy(c->tail, join + n - c->tl, c->tl);
	free(join);
}

static int pipeline(long n)
{
	int fd = dial();
	long sent = 0;
	size_t off = 0;
	struct counter c = { 0 };
	char buf[65536];

	fcntl(fd, F_SETFL, O_NONBLOCK);
	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN | (sent < n ? POLLOUT : 0) };

		if (c.n >= n || poll(&p, 1, 20000) <= 0)
			break;
		if (p.revents & POLLIN) {
			ssize_t r = read(fd, buf, sizeof(buf));
			if (r == 0)
				break;
			if (r > 0)
				count(&c, buf, (size_t)r);
		}
		if (sent < n && (p.revents & POLLOUT)) {
			ssize_t w = send(fd, req + off, sizeof(req) - 1 - off, MSG_NOSIGNAL);
			if (w < 0 && errno != EAGAIN)
				break;
			if (w > 0 && (off += (size_t)w) == sizeof(req) - 1) {
				off = 0;
				sent++;
			}
		}
	}
	printf("answered %ld of %ld\n", c.n, n);
	return c.n == n ? 0 : 1;
}

static int noread(long n, int secs)
{
	int fd = dial();
	long sent = 0;

	fcntl(fd, F_SETFL, O_NONBLOCK);
	/* as much as the server takes in before it stops reading, for a while */
	for (time_t end = time(NULL) + 3; sent < n && time(NULL) < end;) {
		ssize_t w = send(fd, req, sizeof(req) - 1, MSG_NOSIGNAL);
		if (w == (ssize_t)sizeof(req) - 1)
			sent++;
		else if (w < 0 && errno == EAGAIN)
			usleep(1000);
		else
			break;
	}
	printf("held (%ld sent)\n", sent);
	fflush(stdout);
	sleep((unsigned)secs);
	return 0;
}

static int conns(int n, int secs)
{
	int *fds = calloc((size_t)n, sizeof(int));
	int answered = 0, refused = 0;
	char buf[4096];

	for (int i = 0; i < n; i++) {
		fds[i] = dial();
		send(fds[i], req, sizeof(req) - 1, MSG_NOSIGNAL);
	}
	sleep((unsigned)secs);
	for (int i = 0; i < n; i++) {
		ssize_t r = recv(fds[i], buf, sizeof(buf) - 1, MSG_DONTWAIT);
		if (r > 0 && !strncmp(buf, "HTTP/1.1 200 ", 13))
			answered++;
		else if (r == 0 || (r < 0 && errno == ECONNRESET))
			refused++;
	}
	printf("answered %d refused %d of %d\n", answered, refused, n);
	return 0;
}

static int garbage(void)
{
	static const char *const bad[] = {
		"\r\n\r\n",
		"GET\r\n\r\n",
		"GET /v1/input HTTP/9.9\r\n\r\n",
		"POST /v1/steps/begin HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
		"POST /v1/steps/begin HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
		"POST /v1/steps/begin HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"POST /v1/steps/begin HTTP/1.1\r\nContent-Length: 9\r\n\r\n{\"a\":[[[[",
		"POST /v1/steps/begin HTTP/1.1\r\nContent-Length: 2\r\n\r\n[]",
		"POST /v1/steps/complete HTTP/1.1\r\nContent-Length: 15\r\n\r\n{\"step_id\":\"\\u0",
		"POST /v1/steps/begin HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 0\r\n\r\n{}",
		"GET /v1/../../etc/passwd HTTP/1.1\r\n\r\n",
		/* last: a body shorter than its length, then EOF (nothing to answer) */
		"POST /v1/steps/begin HTTP/1.1\r\nContent-Length: 100\r\n\r\n{}",
	};
	char buf[512];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int fd = dial();
		ssize_t r;

		send(fd, bad[i], strlen(bad[i]), MSG_NOSIGNAL);
		shutdown(fd, SHUT_WR);
		r = read(fd, buf, sizeof(buf) - 1);
		buf[r > 0 ? r : 0] = '\0';
		buf[strcspn(buf, "\r\n")] = '\0';
		printf("%zu: %s\n", i, r > 0 ? buf : "(closed)");
		close(fd);
	}
	return 0;
}

/* One request on its own connection; the status, or -1. */
static int call(const char *path, const char *body, size_t blen)
{
	char head[256], buf[4096];
	int fd = dial(), status = -1;
	int hl = snprintf(head, sizeof(head),
			  "POST %s HTTP/1.1\r\nHost: h\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
			  path, blen);
	size_t off = 0;
	ssize_t n;

	if (send(fd, head, (size_t)hl, MSG_NOSIGNAL) != hl)
		goto out;
	while (off < blen && (n = send(fd, body + off, blen - off, MSG_NOSIGNAL)) > 0)
		off += (size_t)n;
	if ((n = read(fd, buf, sizeof(buf) - 1)) > 0) {
		buf[n] = '\0';
		sscanf(buf, "HTTP/1.1 %d", &status);
	}
out:
	close(fd);
	return status;
}

static int bigsteps(int n, size_t bytes, int secs)
{
	char *body = malloc(bytes + 128), begin[128];
	int done = 0;

	for (int i = 0; i < n; i++) {
		int bl = snprintf(begin, sizeof(begin), "{\"step_id\":\"b%d\",\"kind\":\"tool\"}", i);
		size_t off;

		if (call("/v1/steps/begin", begin, (size_t)bl) != 200)
			break;
		off = (size_t)sprintf(body, "{\"step_id\":\"b%d\",\"result\":\"", i);
		memset(body + off, 'a', bytes);
		off += bytes;
		off += (size_t)sprintf(body + off, "\"}");
		if (call("/v1/steps/complete", body, off) != 200)
			break;
		done++;
	}
	printf("completed %d of %d\n", done, n);
	fflush(stdout);
	sleep((unsigned)secs);
	return done == n ? 0 : 1;
}

int main(int argc, char **argv)
{
	if (argc >= 3 && !strcmp(argv[1], "pipeline"))
		return pipeline(atol(argv[2]));
	if (argc >= 4 && !strcmp(argv[1], "noread"))
		return noread(atol(argv[2]), atoi(argv[3]));
	if (argc >= 4 && !strcmp(argv[1], "conns"))
		return conns(atoi(argv[2]), atoi(argv[3]));
	if (argc >= 2 && !strcmp(argv[1], "garbage"))
		return garbage();
	if (argc >= 5 && !strcmp(argv[1], "bigsteps"))
		return bigsteps(atoi(argv[2]), (size_t)atol(argv[3]), atoi(argv[4]));
	fprintf(stderr, "usage: harness_flood pipeline N | noread N S | conns N S | garbage | bigsteps N B S\n");
	return 2;
}
