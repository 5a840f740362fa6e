/* rtprobe: the workload the source-routing tests run inside an instance. It makes a
 * network namespace of its own (no route out: only lo, carrying 192.0.2.1, 192.0.2.2,
 * 2001:db8::1 and 2001:db8::2), sends to the "allowed" address (.1) in ways that make
 * the packet go to the "denied" one (.2) first, and counts what really left for .2 by
 * capturing on lo. The egress policy under test allows .1 and not .2.
 *
 *   rtprobe PORT [CASE...]     (no CASE: every case)
 *
 * One line per case: "CASE RESULT seen=N", RESULT being how the send call answered
 * (ok, denied for EPERM, error: ...), N the packets that left addressed to .2.
 * Cases (the ones marked nobody run as uid 65534: no capability needed):
 *   direct      UDP straight to .2 (the policy's own deny)
 *   plain-udp   UDP to .1 (normal traffic; seen counts packets to .1 here)
 *   plain-tcp   TCP connect to a listener on .1, completed (seen counts to .1)
 *   srh-udp     IPV6_RTHDR, segment routing header listing .2, UDP to .1 (nobody)
 *   srh-tcp     the same header on a TCP connect to .1 (nobody)
 *   lsrr-udp    IP_OPTIONS loose source route via .2, UDP to .1
 *   lsrr-tcp    the same option on a TCP connect to .1
 *   ssrr-cmsg   strict source route via .2 as an IP_RETOPTS cmsg of one sendmsg
 *   rr-udp      IP_OPTIONS record route (no source route), UDP to .1 (seen: to .1)
 *   hbh-udp     IPV6_HOPOPTS (padding only) and IPV6_DSTOPTS, UDP to .1 (seen: to .1)
 *   raw         a raw IPv4 socket sending a UDP datagram to .2 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/seg6.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <poll.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define A4 "192.0.2.1"
#define D4 "192.0.2.2"
#define A6 "2001:db8::1"
#define D6 "2001:db8::2"

static int cap_fd = -1;
static uint16_t port;

static int setup(void)
{
	struct sockaddr_ll ll = { .sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ALL) };

	if (unshare(CLONE_NEWNET) < 0)
		return -1;
	if (system("ip link set lo up && ip addr add " A4 "/32 dev lo && ip addr add " D4 "/32 dev lo && "
		   "ip -6 addr add " A6 "/128 dev lo nodad && ip -6 addr add " D6 "/128 dev lo nodad") != 0)
		return -1;
	/* the kernel installs an IPv6 address's local route from a work queue: wait for it */
	if (system("for i in $(seq 200); do ip -6 route show table local | grep -q '^local " D6 " ' && "
		   "ip -6 route show table local | grep -q '^local " A6 " ' && exit 0; sleep 0.01; done; "
		   "exit 1") != 0)
		return -1;
	cap_fd = socket(AF_PACKET, SOCK_DGRAM | SOCK_CLOEXEC, htons(ETH_P_ALL));
	ll.sll_ifindex = (int)if_nametoindex("lo");
	if (cap_fd < 0 || bind(cap_fd, (struct sockaddr *)&ll, sizeof(ll)) < 0)
		return -1;
	return 0;
}

/* Packets that left on lo addressed to s, until 150 ms pass without one. */
static int seen(const char *s)
{
	unsigned char buf[2048], want[16];
	struct pollfd pf = { .fd = cap_fd, .events = POLLIN };
	int v6 = strchr(s, ':') != NULL, n = 0;

	inet_pton(v6 ? AF_INET6 : AF_INET, s, want);
	while (poll(&pf, 1, 150) == 1) {
		struct sockaddr_ll from;
		socklen_t fl = sizeof(from);
		ssize_t len = recvfrom(cap_fd, buf, sizeof(buf), 0, (struct sockaddr *)&from, &fl);

		/* lo shows each packet twice: count it as it leaves */
		if (len <= 0 || from.sll_pkttype != PACKET_OUTGOING)
			continue;
		if (v6 && len >= 40 && (buf[0] >> 4) == 6 && !memcmp(buf + 24, want, 16))
			n++;
		else if (!v6 && len >= 20 && (buf[0] >> 4) == 4 && !memcmp(buf + 16, want, 4))
			n++;
	}
	return n;
}

static socklen_t addr(const char *s, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (strchr(s, ':')) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;

		a->sin6_family = AF_INET6;
		a->sin6_port = htons(port);
		inet_pton(AF_INET6, s, &a->sin6_addr);
		return sizeof(*a);
	}
	struct sockaddr_in *a = (struct sockaddr_in *)ss;

	a->sin_family = AF_INET;
	a->sin_port = htons(port);
	inet_pton(AF_INET, s, &a->sin_addr);
	return sizeof(*a);
}

static const char *result(int r)
{
	static char buf[128];

	if (r >= 0 || errno == EINPROGRESS)
		return "ok";
	if (errno == EPERM)
		return "denied";
	snprintf(buf, sizeof(buf), "error: %s", strerror(errno));
	return buf;
}

/* A segment routing header (type 4) whose only segment is .2: the kernel sends the
 * packet to .2, with the socket's own destination written in as segment 0. */
static int set_srh(int fd)
{
	unsigned char b[sizeof(struct ipv6_sr_hdr) + 16] = { 0 };
	struct ipv6_sr_hdr *h = (struct ipv6_sr_hdr *)b;

	h->hdrlen = 2;
	h->type = 4;
	inet_pton(AF_INET6, D6, &h->segments[0]);
	return setsockopt(fd, IPPROTO_IPV6, IPV6_RTHDR, b, sizeof(b));
}

/* NOP, then LSRR or SSRR with .2 as the one hop. */
static void source_route(unsigned char opt[8], int type)
{
	memset(opt, 0, 8);
	opt[0] = IPOPT_NOP;
	opt[1] = (unsigned char)type;
	opt[2] = 7;
	opt[3] = 4;
	inet_pton(AF_INET, D4, opt + 4);
}

static int send_udp(int fd, const char *to)
{
	struct sockaddr_storage ss;
	socklen_t len = addr(to, &ss);

	return (int)sendto(fd, "rtprobe", 7, 0, (struct sockaddr *)&ss, len);
}

static int connect_nb(int fd, const char *to)
{
	struct sockaddr_storage ss;
	socklen_t len = addr(to, &ss);

	fcntl(fd, F_SETFL, O_NONBLOCK);
	return connect(fd, (struct sockaddr *)&ss, len);
}

/* Runs fn as uid 65534 in a child; returns its result line's first word via out. */
static void as_nobody(int (*fn)(const char **), char *out, size_t len)
{
	int p[2], st;
	pid_t pid;
	ssize_t n;

	if (pipe(p) < 0) {
		snprintf(out, len, "error: pipe");
		return;
	}
	pid = fork();
	if (pid == 0) {
		const char *res = "error: setuid";

		close(p[0]);
		if (setgid(65534) == 0 && setuid(65534) == 0)
			fn(&res);
		if (write(p[1], res, strlen(res)) < 0)
			_exit(1);
		_exit(0);
	}
	close(p[1]);
	n = read(p[0], out, len - 1);
	out[n > 0 ? n : 0] = '\0';
	close(p[0]);
	waitpid(pid, &st, 0);
}

static int srh_udp(const char **res)
{
	int fd = socket(AF_INET6, SOCK_DGRAM, 0);

	if (set_srh(fd) < 0) {
		*res = result(-1);
		return -1;
	}
	*res = result(send_udp(fd, A6));
	close(fd);
	return 0;
}

static int srh_tcp(const char **res)
{
	int fd = socket(AF_INET6, SOCK_STREAM, 0);

	if (set_srh(fd) < 0) {
		*res = result(-1);
		return -1;
	}
	*res = result(connect_nb(fd, A6));
	usleep(50000);
	close(fd);
	return 0;
}

static void one(const char *name)
{
	unsigned char opt[8];
	char res[160] = "";
	const char *watch = !strncmp(name, "srh", 3) ? D6 : D4;
	int fd = -1, r;

	if (!strcmp(name, "direct")) {
		fd = socket(AF_INET, SOCK_DGRAM, 0);
		snprintf(res, sizeof(res), "%s", result(send_udp(fd, D4)));
	} else if (!strcmp(name, "plain-udp")) {
		fd = socket(AF_INET, SOCK_DGRAM, 0);
		snprintf(res, sizeof(res), "%s", result(send_udp(fd, A4)));
		watch = A4;
	} else if (!strcmp(name, "plain-tcp")) {
		struct sockaddr_storage ss;
		socklen_t len = addr(A4, &ss);
		int one = 1, l = socket(AF_INET, SOCK_STREAM, 0), c;

		setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		bind(l, (struct sockaddr *)&ss, len);
		listen(l, 4);
		fd = socket(AF_INET, SOCK_STREAM, 0);
		r = connect(fd, (struct sockaddr *)&ss, len);
		snprintf(res, sizeof(res), "%s", result(r));
		if (r == 0 && (c = accept(l, NULL, NULL)) >= 0)
			close(c);
		close(l);
		watch = A4;
	} else if (!strcmp(name, "srh-udp")) {
		as_nobody(srh_udp, res, sizeof(res));
	} else if (!strcmp(name, "srh-tcp")) {
		as_nobody(srh_tcp, res, sizeof(res));
	} else if (!strcmp(name, "lsrr-udp") || !strcmp(name, "lsrr-tcp")) {
		bool tcp = !strcmp(name, "lsrr-tcp");

		fd = socket(AF_INET, tcp ? SOCK_STREAM : SOCK_DGRAM, 0);
		source_route(opt, IPOPT_LSRR);
		if (setsockopt(fd, IPPROTO_IP, IP_OPTIONS, opt, sizeof(opt)) < 0)
			snprintf(res, sizeof(res), "%s", result(-1));
		else
			snprintf(res, sizeof(res), "%s", result(tcp ? connect_nb(fd, A4) : send_udp(fd, A4)));
		if (tcp)
			usleep(50000);
	} else if (!strcmp(name, "ssrr-cmsg")) {
		char cbuf[CMSG_SPACE(sizeof(opt))] = { 0 };
		struct sockaddr_storage ss;
		struct iovec iov = { .iov_base = "rtprobe", .iov_len = 7 };
		struct msghdr m = { .msg_name = &ss, .msg_namelen = addr(A4, &ss), .msg_iov = &iov,
				    .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf) };
		struct cmsghdr *c = CMSG_FIRSTHDR(&m);

		source_route(opt, IPOPT_SSRR);
		c->cmsg_level = IPPROTO_IP;
		c->cmsg_type = IP_RETOPTS;
		c->cmsg_len = CMSG_LEN(sizeof(opt));
		memcpy(CMSG_DATA(c), opt, sizeof(opt));
		fd = socket(AF_INET, SOCK_DGRAM, 0);
		snprintf(res, sizeof(res), "%s", result((int)sendmsg(fd, &m, 0)));
	} else if (!strcmp(name, "rr-udp")) {
		unsigned char rr[12] = { IPOPT_RR, 11, 4 };

		rr[11] = IPOPT_END;
		fd = socket(AF_INET, SOCK_DGRAM, 0);
		if (setsockopt(fd, IPPROTO_IP, IP_OPTIONS, rr, sizeof(rr)) < 0)
			snprintf(res, sizeof(res), "%s", result(-1));
		else
			snprintf(res, sizeof(res), "%s", result(send_udp(fd, A4)));
		watch = A4;
	} else if (!strcmp(name, "hbh-udp")) {
		/* next header, length 0 (8 bytes), PadN covering the other 6 */
		unsigned char h[8] = { 0, 0, 1, 4 };

		fd = socket(AF_INET6, SOCK_DGRAM, 0);
		if (setsockopt(fd, IPPROTO_IPV6, IPV6_HOPOPTS, h, sizeof(h)) < 0 ||
		    setsockopt(fd, IPPROTO_IPV6, IPV6_DSTOPTS, h, sizeof(h)) < 0)
			snprintf(res, sizeof(res), "%s", result(-1));
		else
			snprintf(res, sizeof(res), "%s", result(send_udp(fd, A6)));
		watch = A6;
	} else if (!strcmp(name, "raw")) {
		unsigned char udp[8 + 7] = { 0 };
		struct sockaddr_storage ss;
		socklen_t len = addr(D4, &ss);

		udp[0] = 0x30; /* source port 12345 */
		udp[1] = 0x39;
		udp[2] = (unsigned char)(port >> 8);
		udp[3] = (unsigned char)port;
		udp[5] = sizeof(udp);
		memcpy(udp + 8, "rtprobe", 7);
		((struct sockaddr_in *)&ss)->sin_port = 0;
		fd = socket(AF_INET, SOCK_RAW, IPPROTO_UDP);
		snprintf(res, sizeof(res), "%s",
			 result((int)sendto(fd, udp, sizeof(udp), 0, (struct sockaddr *)&ss, len)));
	} else {
		printf("%s error: unknown case seen=0\n", name);
		return;
	}
	printf("%s %s seen=%d\n", name, res, seen(watch));
	fflush(stdout);
	if (fd >= 0)
		close(fd);
}

int main(int argc, char **argv)
{
	static const char *const all[] = { "direct", "plain-udp", "plain-tcp", "srh-udp", "srh-tcp",
					   "lsrr-udp", "lsrr-tcp", "ssrr-cmsg", "rr-udp", "hbh-udp",
					   "raw" };

	if (argc < 2) {
		fprintf(stderr, "usage: rtprobe PORT [CASE...]\n");
		return 1;
	}
	port = (uint16_t)atoi(argv[1]);
	if (setup() < 0) {
		printf("error: network namespace setup: %s\n", strerror(errno));
		return 1;
	}
	if (argc == 2)
		for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
			one(all[i]);
	for (int i = 2; i < argc; i++)
		one(argv[i]);
	return 0;
}
