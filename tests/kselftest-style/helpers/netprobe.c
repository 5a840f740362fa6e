/* netprobe: the workload the egress tests run inside instances. It makes one kind of
 * network call and reports how the kernel answered.
 *
 *   netprobe MODE ADDR PORT [N]
 *   MODE: tcp (connect), udp (unconnected sendto), udpc (connect + send),
 *         tfo (TCP Fast Open: sendto with MSG_FASTOPEN), loop (N connects, counting)
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
	if (!strcmp(mode, "tcp") || !strcmp(mode, "loop")) {
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

int main(int argc, char **argv)
{
	struct sockaddr_storage ss;
	socklen_t len;
	int r;

	if (argc < 4 || !(len = mkaddr(argv[2], atoi(argv[3]), &ss))) {
		fprintf(stderr, "usage: netprobe tcp|udp|udpc|tfo|loop ADDR PORT [N]\n");
		return 1;
	}
	if (!strcmp(argv[1], "loop")) {
		long n = argc > 4 ? atol(argv[4]) : 1000, ok = 0, denied = 0, other = 0;
		for (long i = 0; i < n; i++) {
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
