/* netprobe: the workload the egress tests run inside instances. It makes one kind of
 * network call and reports how the kernel answered.
 *
 *   netprobe MODE ADDR PORT [N]
 *   MODE: tcp (connect), udp (unconnected sendto), udpc (connect + send),
 *         tfo (TCP Fast Open: sendto with MSG_FASTOPEN), loop (connects for N ms, counting),
 *         flood (N TCP connects; also prints its own CPU time in ms)
 *   netprobe listen ADDR PORT   accept and close TCP connections until killed
 *   netprobe dns NAME SERVER [PORT]   one A query over UDP (dnstcp: over TCP; dns6: an
 *         AAAA query over UDP); prints each address; "refused" and exit 3 on REFUSED
 * ADDR is an IPv4 or IPv6 literal (::ffff:a.b.c.d tests the mapped form).
 * Prints "ok", "denied" (EPERM) or "error: ..."; exits 0, 2, 1 respectively. loop
 * prints "ok=A denied=D other=O" and exits 0. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef MSG_FASTOPEN
#define MSG_FASTOPEN 0x20000000
#endif

static socklen_t mkaddr(const char *s, int port, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (strchr(s, ':')) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
		a->sin6_family = AF_INET6;
		a->sin6_port = htons((unsigned short)port);
		if (inet_pton(AF_INET6, s, &a->sin6_addr) != 1)
			return 0;
		return sizeof(*a);
	}
	struct sockaddr_in *a = (struct sockaddr_in *)ss;
	a->sin_family = AF_INET;
	a->sin_port = htons((unsigned short)port);
	if (inet_pton(AF_INET, s, &a->sin_addr) != 1)
		return 0;
	return sizeof(*a);
}

static int once(const char *mode, struct sockaddr_storage *ss, socklen_t len)
{
	int tcp = !strcmp(mode, "tcp") || !strcmp(mode, "tfo") || !strcmp(mode, "loop");
	int fd = socket(ss->ss_family, tcp ? SOCK_STREAM : SOCK_DGRAM, 0);
	int r, err;

	if (fd < 0)
		return -errno;
	if (!strcmp(mode, "loop")) {
		/* reset on close: no TIME_WAIT, so a long loop never runs out of ports */
		struct linger lg = { .l_onoff = 1, .l_linger = 0 };
		setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		r = connect(fd, (struct sockaddr *)ss, len);
	} else if (!strcmp(mode, "tcp")) {
		r = connect(fd, (struct sockaddr *)ss, len);
	} else if (!strcmp(mode, "tfo")) {
		r = (int)sendto(fd, "x", 1, MSG_FASTOPEN, (struct sockaddr *)ss, len);
	} else if (!strcmp(mode, "udp")) {
		r = (int)sendto(fd, "x", 1, 0, (struct sockaddr *)ss, len);
	} else {
		r = connect(fd, (struct sockaddr *)ss, len);
		if (r == 0)
			r = (int)send(fd, "x", 1, 0);
	}
	err = r < 0 ? -errno : 0;
	close(fd);
	return err;
}

static int skip_name(const unsigned char *m, int len, int off)
{
	while (off < len) {
		if (m[off] == 0)
			return off + 1;
		if ((m[off] & 0xc0) == 0xc0)
			return off + 2;
		off += m[off] + 1;
	}
	return -1;
}

/* A minimal resolver so tests never depend on (or reach) the host's resolv.conf. */
static int dns(int tcp, int aaaa, const char *name, struct sockaddr_storage *ss, socklen_t len)
{
	unsigned char q[512], a[4096];
	int n = 12, fd, r, off, an;
	const char *p = name;

	memset(q, 0, sizeof(q));
	q[0] = 0x4c; q[1] = 0x4e; q[2] = 0x01; q[5] = 1; /* id, RD, QDCOUNT 1 */
	while (*p && n < 400) {
		const char *dot = strchr(p, '.');
		int l = dot ? (int)(dot - p) : (int)strlen(p);
		q[n++] = (unsigned char)l;
		memcpy(q + n, p, (size_t)l);
		n += l;
		p += l + (dot ? 1 : 0);
	}
	q[n++] = 0;
	q[n++] = 0; q[n++] = aaaa ? 28 : 1; q[n++] = 0; q[n++] = 1; /* A or AAAA, IN */
	fd = socket(ss->ss_family, tcp ? SOCK_STREAM : SOCK_DGRAM, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)ss, len) < 0)
		return errno == EPERM ? -EPERM : -1;
	if (tcp) {
		unsigned char lq[2 + 512] = { (unsigned char)(n >> 8), (unsigned char)n };
		memcpy(lq + 2, q, (size_t)n);
		if (send(fd, lq, (size_t)n + 2, 0) < 0)
			return errno == EPERM ? -EPERM : -1;
	} else if (send(fd, q, (size_t)n, 0) < 0) {
		return errno == EPERM ? -EPERM : -1;
	}
	struct pollfd pf = { .fd = fd, .events = POLLIN };
	if (poll(&pf, 1, 3000) != 1)
		return -ETIMEDOUT;
	if (tcp) {
		int got = 0;
		while (got < 2 || got < 2 + ((a[0] << 8) | a[1])) {
			r = (int)recv(fd, a + got, sizeof(a) - (size_t)got, 0);
			if (r <= 0)
				return -1;
			got += r;
		}
		r = got - 2;
		memmove(a, a + 2, (size_t)r);
	} else {
		r = (int)recv(fd, a, sizeof(a), 0);
	}
	close(fd);
	if (r < 12)
		return -1;
	if ((a[3] & 15) == 5)
		return -ECONNREFUSED;
	an = (a[6] << 8) | a[7];
	off = skip_name(a, r, 12) + 4;
	for (int i = 0; i < an && off > 0 && off + 10 <= r; i++) {
		off = skip_name(a, r, off);
		if (off < 0 || off + 10 > r)
			break;
		int type = (a[off] << 8) | a[off + 1], rdlen = (a[off + 8] << 8) | a[off + 9];
		off += 10;
		if (type == 1 && rdlen == 4 && off + 4 <= r) {
			char buf[INET_ADDRSTRLEN];
			printf("%s\n", inet_ntop(AF_INET, a + off, buf, sizeof(buf)));
		} else if (type == 28 && rdlen == 16 && off + 16 <= r) {
			char buf[INET6_ADDRSTRLEN];
			printf("%s\n", inet_ntop(AF_INET6, a + off, buf, sizeof(buf)));
		}
		off += rdlen;
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 4 && !strcmp(argv[1], "listen")) {
		struct sockaddr_storage ls;
		socklen_t ll = mkaddr(argv[2], atoi(argv[3]), &ls);
		int one = 1, fd = ll ? socket(ls.ss_family, SOCK_STREAM, 0) : -1;

		if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
		    bind(fd, (struct sockaddr *)&ls, ll) < 0 || listen(fd, 1024) < 0) {
			printf("error: %s\n", strerror(errno));
			return 1;
		}
		for (;;) {
			int c = accept(fd, NULL, NULL);
			if (c >= 0)
				close(c);
		}
	}
	if (argc >= 4 && (!strcmp(argv[1], "dns") || !strcmp(argv[1], "dnstcp") || !strcmp(argv[1], "dns6"))) {
		struct sockaddr_storage ds;
		socklen_t dl = mkaddr(argv[3], argc > 4 ? atoi(argv[4]) : 53, &ds);
		int r = dl ? dns(argv[1][3] == 't', argv[1][3] == '6', argv[2], &ds, dl) : -1;

		if (r == 0)
			return 0;
		if (r == -ECONNREFUSED) {
			printf("refused\n");
			return 3;
		}
		if (r == -EPERM) {
			printf("denied\n");
			return 2;
		}
		printf("error: %s\n", r == -ETIMEDOUT ? "timeout" : strerror(errno));
		return 1;
	}
	struct sockaddr_storage ss;
	socklen_t len;
	int r;

	if (argc < 4 || !(len = mkaddr(argv[2], atoi(argv[3]), &ss))) {
		fprintf(stderr, "usage: netprobe tcp|udp|udpc|tfo|loop ADDR PORT [N [STOPFILE]]\n");
		return 1;
	}
	if (!strcmp(argv[1], "loop")) {
		long ms = argc > 4 ? atol(argv[4]) : 1000, ok = 0, denied = 0, other = 0, n = 0;
		const char *stop = argc > 5 ? argv[5] : NULL;
		struct timespec t0, t;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		for (;; n++) {
			clock_gettime(CLOCK_MONOTONIC, &t);
			if ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 >= ms)
				break;
			/* until whoever watches says stop (checked now and then: a stat is no connect) */
			if (stop && !(n % 64) && access(stop, F_OK) == 0)
				break;
			r = once("loop", &ss, len);
			if (r == 0)
				ok++;
			else if (r == -EPERM)
				denied++;
			else
				other++;
		}
		printf("ok=%ld denied=%ld other=%ld\n", ok, denied, other);
		return 0;
	}
	if (!strcmp(argv[1], "flood")) {
		long n = argc > 4 ? atol(argv[4]) : 1, ok = 0, denied = 0, other = 0;
		struct rusage ru;

		for (long i = 0; i < n; i++) {
			r = once("tcp", &ss, len);
			if (r == 0)
				ok++;
			else if (r == -EPERM)
				denied++;
			else
				other++;
		}
		getrusage(RUSAGE_SELF, &ru);
		printf("ok=%ld denied=%ld other=%ld cpu_ms=%ld\n", ok, denied, other,
		       (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000 +
			       (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1000);
		return 0;
	}
	r = once(argv[1], &ss, len);
	if (r == 0) {
		printf("ok\n");
		return 0;
	}
	if (r == -EPERM) {
		printf("denied\n");
		return 2;
	}
	printf("error: %s\n", strerror(-r));
	return 1;
}
