/* egress_bpf_test: the egress programs and the lbpf module against the real kernel.
 *
 * Builds a private cgroup v2 subtree with instance cgroups under it and a private
 * bpffs pin root, opens lbpf on them, installs hand-built policies, and runs
 * build/tests/netprobe (or an in-process probe) in instance cgroups. Everything
 * goes to 127.0.0.0/8 or ::1: a denied destination is a loopback one too. Source
 * routes and raw sockets are sent by build/tests/rtprobe from a network namespace of
 * its own with only lo (documentation addresses on it), where a capture on lo counts
 * what would have reached the denied address. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <linux/magic.h>

#include "lantern/lbpf.h"
#include "lantern/lbpf_tm.h"
#include "lantern/policy.h"
#include "tap.h"
#include "testlib.h"

#define PLAN 77

static char cg2[64];           /* cgroup v2 mount */
static char root[256];         /* private subtree */
static char root2[256];        /* a second lanternd's subtree */
static char pins[256], pins2[256];
static char netprobe[512], rtprobe[512];
static struct lbpf *lb;

/* every event seen so far */
static struct lantern_egress_event evs[4096];
static size_t n_evs;

static void on_event(const struct lantern_egress_event *ev, void *arg)
{
	if (n_evs < ARRAY_SIZE(evs))
		evs[n_evs++] = *ev;
}

static void drain(void)
{
	if (lb)
		lbpf_events_consume(lb, on_event, NULL);
}

static int cg_make(const char *base, const char *name, char *out, size_t len, uint64_t *id)
{
	struct stat st;

	snprintf(out, len, "%s/%s", base, name);
	if (mkdir(out, 0755) < 0 && errno != EEXIST)
		return -errno;
	if (stat(out, &st) < 0)
		return -errno;
	if (id)
		*id = st.st_ino;
	return 0;
}

static void cg_join(const char *cg)
{
	char path[512], pid[32];
	int fd;

	snprintf(path, sizeof(path), "%s/cgroup.procs", cg);
	snprintf(pid, sizeof(pid), "%d", getpid());
	fd = open(path, O_WRONLY);
	if (fd < 0 || write(fd, pid, strlen(pid)) < 0)
		_exit(99);
	close(fd);
}

/* Runs netprobe MODE ADDR PORT [N] inside cgroup cg (NULL: stay where we are).
 * Returns netprobe's exit status (0 ok, 2 denied, 1 other error); out gets stdout. */
static int probe_n(const char *cg, const char *mode, const char *addr, uint16_t port, long n,
		   char *out, size_t outlen, pid_t *child)
{
	char ps[16], ns[32];
	int p[2], st;
	ssize_t r, got = 0;
	pid_t pid;

	if (pipe(p) < 0)
		return -1;
	snprintf(ps, sizeof(ps), "%u", port);
	snprintf(ns, sizeof(ns), "%ld", n);
	pid = fork();
	if (pid == 0) {
		close(p[0]);
		if (cg)
			cg_join(cg);
		dup2(p[1], 1);
		execl(netprobe, "netprobe", mode, addr, ps, ns, (char *)NULL);
		_exit(98);
	}
	close(p[1]);
	if (child)
		*child = pid;
	while (out && (size_t)got + 1 < outlen && (r = read(p[0], out + got, outlen - got - 1)) > 0)
		got += r;
	if (out)
		out[got] = '\0';
	close(p[0]);
	waitpid(pid, &st, 0);
	drain();
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static int probe(const char *cg, const char *mode, const char *addr, uint16_t port)
{
	char out[256];

	return probe_n(cg, mode, addr, port, 1, out, sizeof(out), NULL);
}

/* "Not denied": connected, or refused by the (absent) peer, not by the policy. */
static bool passes(int rc)
{
	return rc == 0 || rc == 1;
}

static void mapped(const char *s, uint8_t out[16])
{
	struct in_addr a;

	memset(out, 0, 16);
	if (strchr(s, ':')) {
		inet_pton(AF_INET6, s, out);
		return;
	}
	inet_pton(AF_INET, s, &a);
	out[10] = out[11] = 0xff;
	memcpy(out + 12, &a, 4);
}

struct pol {
	struct policy p;
	struct policy_entry e[16];
};

static void pol_init(struct pol *x, enum lantern_net_mode mode, uint32_t flags)
{
	memset(x, 0, sizeof(*x));
	x->p.mode = mode;
	x->p.flags = flags;
	x->p.entries = x->e;
}

/* Adds a slot to the entry for addr/prefix (IPv4 prefixes as written, e.g. /8). */
static void pol_add(struct pol *x, const char *addr, unsigned prefix, uint8_t protos,
		    uint16_t lo, uint16_t hi, uint16_t rule)
{
	struct lantern_port_rule s = { .port_lo = lo, .port_hi = hi, .protos = protos, .rule = rule };
	uint8_t a[16];
	unsigned pl = strchr(addr, ':') ? prefix : 96 + prefix;
	size_t i;

	mapped(addr, a);
	for (i = 0; i < x->p.n_entries; i++)
		if (x->e[i].prefix == pl && !memcmp(x->e[i].addr, a, 16))
			break;
	if (i == x->p.n_entries) {
		memcpy(x->e[i].addr, a, 16);
		x->e[i].prefix = (uint8_t)pl;
		x->p.n_entries++;
	}
	policy_value_add(&x->e[i].val, &s);
}

static const struct lantern_egress_event *find_event(uint64_t cgid, uint8_t verdict,
						     const char *addr, uint16_t port)
{
	uint8_t a[16];

	mapped(addr, a);
	for (size_t i = n_evs; i-- > 0;)
		if (evs[i].cgroup_id == cgid && evs[i].verdict == verdict && evs[i].port == port &&
		    !memcmp(evs[i].addr, a, 16))
			return &evs[i];
	return NULL;
}

static int lo_up(void)
{
	struct ifreq ifr = { 0 };
	int fd = socket(AF_INET, SOCK_DGRAM, 0), r;

	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "lo");
	if (fd < 0 || ioctl(fd, SIOCGIFFLAGS, &ifr) < 0)
		return -1;
	ifr.ifr_flags |= IFF_UP;
	r = ioctl(fd, SIOCSIFFLAGS, &ifr);
	close(fd);
	return r;
}

/* Child in cg, own network namespace: may it connect to its own loopback? Exit 0
 * when the kernel did not refuse with EPERM. */
static int own_netns_loopback(const char *cg, uint16_t port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
	int st, fd, r;
	pid_t pid = fork();

	if (pid == 0) {
		cg_join(cg);
		if (unshare(CLONE_NEWNET) < 0 || lo_up() < 0)
			_exit(3);
		a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		fd = socket(AF_INET, SOCK_STREAM, 0);
		r = connect(fd, (struct sockaddr *)&a, sizeof(a));
		_exit(r < 0 && errno == EPERM ? 2 : 0);
	}
	waitpid(pid, &st, 0);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

/* DNS through the redirect: the child in cg queries ADDR:53 over UDP and expects the
 * answer to come from ADDR:53; the parent plays the proxy on proxy_fd. */
static int dns_udp_roundtrip(const char *cg, int family, const char *addr, int proxy_fd)
{
	struct sockaddr_storage dst = { 0 }, from;
	socklen_t flen = sizeof(from);
	char buf[64];
	struct pollfd pf = { .fd = proxy_fd, .events = POLLIN };
	int st, fd;
	ssize_t n;
	pid_t pid;

	if (family == AF_INET) {
		struct sockaddr_in *s = (struct sockaddr_in *)&dst;
		s->sin_family = AF_INET;
		s->sin_port = htons(53);
		inet_pton(AF_INET, addr, &s->sin_addr);
	} else {
		struct sockaddr_in6 *s = (struct sockaddr_in6 *)&dst;
		s->sin6_family = AF_INET6;
		s->sin6_port = htons(53);
		inet_pton(AF_INET6, addr, &s->sin6_addr);
	}
	pid = fork();
	if (pid == 0) {
		struct timeval tv = { .tv_sec = 3 };
		socklen_t dl = family == AF_INET ? sizeof(struct sockaddr_in)
						  : sizeof(struct sockaddr_in6);

		cg_join(cg);
		fd = socket(family, SOCK_DGRAM, 0);
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		if (sendto(fd, "query", 5, 0, (struct sockaddr *)&dst, dl) != 5)
			_exit(errno == EPERM ? 2 : 3);
		n = recvfrom(fd, buf, sizeof(buf), 0, (struct sockaddr *)&from, &flen);
		if (n != 6 || memcmp(buf, "answer", 6))
			_exit(4);
		/* the answer must look like it came from where the query went */
		if (flen != dl || memcmp(&from, &dst, dl))
			_exit(5);
		_exit(0);
	}
	if (poll(&pf, 1, 3000) == 1) {
		n = recvfrom(proxy_fd, buf, sizeof(buf), 0, (struct sockaddr *)&from, &flen);
		if (n == 5)
			sendto(proxy_fd, "answer", 6, 0, (struct sockaddr *)&from, flen);
	}
	waitpid(pid, &st, 0);
	drain();
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

/* DNS over TCP: connect to 127.0.0.53:53 lands on the proxy's listener, and
 * getpeername reports 127.0.0.53:53. */
static int dns_tcp_peer(const char *cg)
{
	struct sockaddr_in dst = { .sin_family = AF_INET, .sin_port = htons(53) }, peer;
	socklen_t pl = sizeof(peer);
	int st, fd;
	pid_t pid;

	inet_pton(AF_INET, "127.0.0.53", &dst.sin_addr);
	pid = fork();
	if (pid == 0) {
		cg_join(cg);
		fd = socket(AF_INET, SOCK_STREAM, 0);
		if (connect(fd, (struct sockaddr *)&dst, sizeof(dst)) < 0)
			_exit(errno == EPERM ? 2 : 3);
		if (getpeername(fd, (struct sockaddr *)&peer, &pl) < 0)
			_exit(4);
		_exit(peer.sin_addr.s_addr == dst.sin_addr.s_addr && peer.sin_port == dst.sin_port
			      ? 0 : 5);
	}
	waitpid(pid, &st, 0);
	drain();
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

/* Runs rtprobe PORT CASES in cgroup cg (it makes its own network namespace there);
 * out gets its report, one "CASE RESULT seen=N" line per case. */
static void rt_run(const char *cg, uint16_t port, const char *cases, char *out, size_t len)
{
	char *o = NULL;

	tl_sh(&o, NULL, "echo $$ > %s/cgroup.procs && exec %s %u %s", cg, rtprobe, port, cases);
	snprintf(out, len, "%s", o ? o : "");
	free(o);
	drain();
}

/* The result word and packet count rtprobe reported for case name; seen -1 if absent. */
static int rt_seen(const char *out, const char *name, char *res, size_t len)
{
	char key[64], word[64] = "";
	const char *l;
	int n = -1;

	snprintf(key, sizeof(key), "%s ", name);
	for (l = out; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
		if (!strncmp(l, key, strlen(key))) {
			const char *sp = strstr(l, " seen=");

			sscanf(l + strlen(key), "%63s", word);
			n = sp ? atoi(sp + 6) : -1;
			break;
		}
	}
	if (res)
		snprintf(res, len, "%s", word);
	return n;
}

/* Events from cgroup cgid with the given reason and verdict; the last one in *last. */
static int count_reason(uint64_t cgid, uint8_t reason, uint8_t verdict,
			const struct lantern_egress_event **last)
{
	int n = 0;

	for (size_t i = 0; i < n_evs; i++)
		if (evs[i].cgroup_id == cgid && evs[i].hook == LANTERN_HOOK_SKB_EGRESS &&
		    evs[i].reason == reason && evs[i].verdict == verdict) {
			n++;
			if (last)
				*last = &evs[i];
		}
	return n;
}

static bool wait_gone(const char *cg, const char *addr, uint16_t port)
{
	for (int i = 0; i < 50; i++) {
		if (probe(cg, "tcp", addr, port) == 0)
			return true;
		usleep(20000);
	}
	return false;
}

static void cleanup(void)
{
	struct lerr e;
	const char *subs[] = { "a", "b", "c", "d", "e", "f", "h", "outside", "" };

	lbpf_close(lb);
	lb = NULL;
	lbpf_unpin_all(pins, &e);
	lbpf_unpin_all(pins2, &e);
	for (size_t i = 0; i < ARRAY_SIZE(subs); i++) {
		char p[512];

		snprintf(p, sizeof(p), "%s/%s", root, subs[i]);
		rmdir(p);
	}
	{
		char g[512];

		snprintf(g, sizeof(g), "%s/g", root2);
		rmdir(g);
		rmdir(root2);
	}
}

static void skip_all(const char *why)
{
	for (int i = 0; i < PLAN; i++)
		tap_skip(why, "egress point %d", i + 1);
}

int main(void)
{
	const char *missing = tl_env_missing(), *b = getenv("LANTERN_BUILD");
	char cga[512], cgb[512], cgc[512], cgd[512], cge[512], cgf[512], cgo[512], cgg[512], cgh[512];
	uint64_t ida, idb, idc, idd, ide, idf, idg, idh;
	uint16_t pt = 0, pd = 0, pdns = 0;
	int lt1 = -1, lt2 = -1, lt6 = -1, ld1 = -1, dns4 = -1, dns6 = -1, dnst = -1, r;
	struct lantern_egress_stats st;
	struct lbpf_opts o = { 0 };
	struct lerr e = { { 0 } };
	struct statfs sf;
	struct pol pa, pa2, pb, pc, pd_, pe, pf, pg, ph;
	bool adopted = true;
	char out[256];

	tap_plan(PLAN);
	if (missing) {
		skip_all(missing);
		return tap_done();
	}
	snprintf(netprobe, sizeof(netprobe), "%s/tests/netprobe", b && *b ? b : "./build");
	snprintf(rtprobe, sizeof(rtprobe), "%s/tests/rtprobe", b && *b ? b : "./build");
	if (access(netprobe, X_OK) < 0 || access(rtprobe, X_OK) < 0) {
		skip_all("build/tests/netprobe or rtprobe not built");
		return tap_done();
	}
	snprintf(cg2, sizeof(cg2), "%s",
		 statfs("/sys/fs/cgroup/unified", &sf) == 0 && sf.f_type == CGROUP2_SUPER_MAGIC
			 ? "/sys/fs/cgroup/unified" : "/sys/fs/cgroup");
	snprintf(root, sizeof(root), "%s/lantern-test-bpf-%d", cg2, getpid());
	snprintf(root2, sizeof(root2), "%s/lantern-test-bpf2-%d", cg2, getpid());
	snprintf(pins, sizeof(pins), "/sys/fs/bpf/lantern-test-bpf-%d", getpid());
	snprintf(pins2, sizeof(pins2), "/sys/fs/bpf/lantern-test-bpf2-%d", getpid());
	/* however the test ends, no cgroup or pin outlives it */
	tl_on_exit(cleanup);
	mkdir(root, 0755);
	mkdir(root2, 0755);
	if (cg_make(root, "a", cga, sizeof(cga), &ida) || cg_make(root, "b", cgb, sizeof(cgb), &idb) ||
	    cg_make(root, "c", cgc, sizeof(cgc), &idc) || cg_make(root, "d", cgd, sizeof(cgd), &idd) ||
	    cg_make(root, "e", cge, sizeof(cge), &ide) || cg_make(root, "f", cgf, sizeof(cgf), &idf) ||
	    cg_make(root, "h", cgh, sizeof(cgh), &idh) ||
	    cg_make(root, "outside", cgo, sizeof(cgo), NULL) ||
	    cg_make(root2, "g", cgg, sizeof(cgg), &idg)) {
		skip_all("cannot create cgroup v2 directories");
		return tap_done();
	}

	/* listeners: PT on 127.0.0.1, 127.0.0.2 and ::1; PD on 127.0.0.1 */
	for (int tries = 0; tries < 20 && (lt1 < 0 || lt2 < 0 || lt6 < 0); tries++) {
		if (lt1 >= 0)
			close(lt1);
		if (lt2 >= 0)
			close(lt2);
		pt = 0;
		lt1 = tl_tcp_listen("127.0.0.1", &pt);
		lt2 = tl_tcp_listen("127.0.0.2", &pt);
		lt6 = tl_tcp_listen("::1", &pt);
	}
	ld1 = tl_tcp_listen("127.0.0.1", &pd);
	for (int tries = 0; tries < 20 && (dns4 < 0 || dns6 < 0 || dnst < 0); tries++) {
		if (dns4 >= 0)
			close(dns4);
		if (dns6 >= 0)
			close(dns6);
		pdns = 0;
		dns4 = tl_udp_bind("127.0.0.1", &pdns);
		dns6 = tl_udp_bind("::1", &pdns);
		dnst = tl_tcp_listen("127.0.0.1", &pdns);
	}
	tap_diag("ports: allowed %u, denied %u, dns proxy %u", pt, pd, pdns);

	o.pin_root = pins;
	o.cgroup_path = root;
	o.instance_level = 2;
	o.dns_ip4 = htonl(0x7f000001);
	o.learn_max = 4;
	r = lbpf_open(&o, &lb, &adopted, &e);
	if (!tap_ok(r == 0 && !adopted, "lbpf_open fresh: %d %s", r, r ? e.msg : "")) {
		for (int i = 1; i < PLAN; i++)
			tap_ok(false, "egress point %d (lbpf_open failed)", i + 1);
		return tap_done();
	}

	/* A: 127/8 tcp PT; 127.0.0.2 any udp (and tcp PT folded in); ::1 tcp+udp PT;
	 * 127.0.0.5 tcp 20000-20010 (and tcp PT folded in) */
	pol_init(&pa, LANTERN_NET_ALLOWLIST, 0);
	pol_add(&pa, "127.0.0.0", 8, LANTERN_PROTO_TCP, pt, pt, 0);
	pol_add(&pa, "127.0.0.2", 32, LANTERN_PROTO_UDP, 0, 65535, 1);
	pol_add(&pa, "127.0.0.2", 32, LANTERN_PROTO_TCP, pt, pt, 0);
	pol_add(&pa, "::1", 128, LANTERN_PROTO_TCP | LANTERN_PROTO_UDP, pt, pt, 2);
	pol_add(&pa, "127.0.0.5", 32, LANTERN_PROTO_TCP, 20000, 20010, 3);
	pol_add(&pa, "127.0.0.5", 32, LANTERN_PROTO_TCP, pt, pt, 0);
	/* A': the same plus 127.0.0.9, for the flip test */
	pa2 = pa;
	pa2.p.entries = pa2.e;
	pol_add(&pa2, "127.0.0.9", 32, LANTERN_PROTO_UDP, 1, 1, 4);
	pol_init(&pb, LANTERN_NET_ALLOWLIST, 0);
	pol_add(&pb, "127.0.0.1", 32, LANTERN_PROTO_TCP, pd, pd, 0);
	pol_init(&pc, LANTERN_NET_NONE, 0);
	pol_init(&pd_, LANTERN_NET_OPEN, 0);
	pol_init(&pe, LANTERN_NET_ALLOWLIST, LANTERN_F_AUDIT);
	pol_add(&pe, "127.0.0.1", 32, LANTERN_PROTO_TCP, pt, pt, 0);
	pol_init(&pf, LANTERN_NET_ALLOWLIST, 0);

	r = lbpf_instance_set(lb, ida, &pa.p, 0, NULL, 0, &e);
	r = r ?: lbpf_instance_set(lb, idb, &pb.p, 0, NULL, 0, &e);
	r = r ?: lbpf_instance_set(lb, idc, &pc.p, 0, NULL, 0, &e);
	r = r ?: lbpf_instance_set(lb, idd, &pd_.p, 0, NULL, 0, &e);
	r = r ?: lbpf_instance_set(lb, ide, &pe.p, 0, NULL, 0, &e);
	r = r ?: lbpf_instance_set(lb, idf, &pf.p, pdns, NULL, 0, &e);
	tap_ok(r == 0, "six instances installed: %d %s", r, r ? e.msg : "");

	tap_ok(probe(cga, "tcp", "127.0.0.1", pt) == 0, "tcp4 to an allowed port connects");
	tap_ok(probe(cga, "tcp", "127.0.0.1", pd) == 2, "tcp4 to another port is denied (EPERM)");
	tap_ok(probe(cga, "udp", "127.0.0.2", pd) == 0, "udp4 sendto an allowed address works");
	tap_ok(probe(cga, "udp", "127.0.0.1", pt) == 2, "udp4 sendto a tcp-only prefix is denied");
	tap_ok(probe(cga, "tcp", "::1", pt) == 0, "tcp6 to an allowed port connects");
	tap_ok(probe(cga, "tcp", "::1", pd) == 2, "tcp6 to another port is denied");
	tap_ok(probe(cga, "udp", "::1", pt) == 0, "udp6 sendto an allowed port works");
	tap_ok(probe(cga, "udp", "::1", pd) == 2, "udp6 sendto another port is denied");
	tap_ok(passes(probe(cga, "tcp", "127.0.0.5", 20000)) &&
		       passes(probe(cga, "tcp", "127.0.0.5", 20010)),
	       "port range: both ends allowed");
	tap_ok(probe(cga, "tcp", "127.0.0.5", 19999) == 2 &&
		       probe(cga, "tcp", "127.0.0.5", 20011) == 2,
	       "port range: just outside both ends denied");
	tap_ok(probe(cga, "tcp", "127.0.0.2", pt) == 0 && probe(cga, "udp", "127.0.0.2", 7) == 0,
	       "longest prefix /32 carries its own udp rule and the folded /8 tcp rule");
	tap_ok(passes(probe(cga, "tcp", "127.0.0.3", pt)) && probe(cga, "udp", "127.0.0.3", 7) == 2,
	       "an address only the /8 covers gets only the /8 rule");
	tap_ok(probe(cga, "tcp", "::ffff:127.0.0.1", pt) == 0,
	       "IPv4-mapped tcp6 judged as IPv4: allowed port connects");
	tap_ok(probe(cga, "tcp", "::ffff:127.0.0.1", pd) == 2 &&
		       probe(cga, "udp", "::ffff:127.0.0.1", pt) == 2 &&
		       probe(cga, "udpc", "::ffff:127.0.0.1", pt) == 2,
	       "IPv4-mapped tcp/udp/connected-udp judged as IPv4: denied");
	tap_ok(probe(cga, "tfo", "127.0.0.1", pd) == 2 && probe(cga, "tfo", "::1", pd) == 2,
	       "TCP Fast Open (sendto MSG_FASTOPEN) cannot bypass: denied");
	tap_ok(passes(probe(cga, "tfo", "127.0.0.1", pt)), "TCP Fast Open to an allowed port passes");
	tap_ok(probe(cga, "udpc", "127.0.0.1", pt) == 2 && probe(cga, "udpc", "::1", pd) == 2,
	       "connected UDP cannot bypass: denied");
	tap_ok(probe(cga, "udpc", "127.0.0.2", pt) == 0, "connected UDP to an allowed address works");
	tap_ok(probe(cgo, "tcp", "127.0.0.1", pt) == 2 && probe(cgo, "udp", "127.0.0.1", pt) == 2,
	       "a process in an instance-level cgroup with no registered policy is denied (fail closed)");
	tap_ok(probe(NULL, "tcp", "127.0.0.1", pd) == 0, "a process outside the subtree is unaffected");
	tap_ok(probe(cgb, "tcp", "127.0.0.1", pd) == 0 && probe(cgb, "tcp", "127.0.0.1", pt) == 2,
	       "second instance enforces its own policy at the same time");
	tap_ok(probe(cgc, "tcp", "127.0.0.1", pt) == 2 && probe(cgc, "udp", "::1", pt) == 2,
	       "network none in the host netns: even loopback denied");
	r = own_netns_loopback(cgc, pt);
	tap_ok(r == 0, "network none in its own netns: its own loopback allowed (%d)", r);
	tap_ok(probe(cgd, "tcp", "127.0.0.1", pd) == 0 && probe(cgd, "udp", "::1", pd) == 0,
	       "network open: everything allowed");
	tap_ok(find_event(idd, LANTERN_VERDICT_ALLOW, "127.0.0.1", pd) != NULL,
	       "network open: connect recorded with verdict ALLOW");
	tap_ok(probe(cge, "tcp", "127.0.0.1", pd) == 0, "audit instance: would-deny allowed");
	tap_ok(find_event(ide, LANTERN_VERDICT_AUDIT, "127.0.0.1", pd) != NULL,
	       "audit instance: recorded with verdict AUDIT");
	r = lbpf_set_audit_all(lb, true);
	tap_ok(r == 0 && probe(cga, "tcp", "127.0.0.1", pd) == 0 &&
		       find_event(ida, LANTERN_VERDICT_AUDIT, "127.0.0.1", pd) != NULL,
	       "node-wide audit: would-deny allowed and recorded AUDIT");
	lbpf_set_audit_all(lb, false);
	tap_ok(probe(cga, "tcp", "127.0.0.1", pd) == 2, "node-wide audit off: denied again");

	{
		pid_t child = 0;
		const struct lantern_egress_event *ev;

		probe_n(cga, "tcp", "::1", pd, 1, out, sizeof(out), &child);
		ev = find_event(ida, LANTERN_VERDICT_DENY, "::1", pd);
		tap_ok(ev && ev->pid == (uint32_t)child && !strcmp(ev->comm, "netprobe") &&
			       ev->proto == LANTERN_PROTO_TCP && ev->family == AF_INET6 &&
			       ev->hook == LANTERN_HOOK_CONNECT6 && ev->policy_id != 0,
		       "deny event carries cgroup id, pid %d, comm, address, port, proto, hook",
		       (int)child);
		ev = find_event(ida, LANTERN_VERDICT_DENY, "::1", pd);
		probe(cga, "udp", "127.0.0.1", pt);
		ev = find_event(ida, LANTERN_VERDICT_DENY, "127.0.0.1", pt);
		tap_ok(ev && ev->proto == LANTERN_PROTO_UDP && ev->family == AF_INET &&
			       ev->hook == LANTERN_HOOK_SENDMSG4,
		       "udp deny event: proto udp, family inet, hook sendmsg4");
	}
	r = lbpf_stats_get(lb, ida, &st);
	tap_ok(r == 0 && st.denied >= 12 && st.allowed >= 8 && st.audited >= 1,
	       "stats: allowed %llu denied %llu audited %llu", (unsigned long long)st.allowed,
	       (unsigned long long)st.denied, (unsigned long long)st.audited);
	{
		struct lantern_drops d = { 0 };
		tap_ok(lbpf_drops_get(lb, &d) == 0 && d.egress_events == 0, "no events dropped");
	}

	/* learned addresses: allowed until gc removes them, covering rules kept */
	{
		struct lantern_egress_value add = { .nslots = 1 };
		uint8_t a7[16];

		mapped("127.0.0.7", a7);
		add.slot[0] = (struct lantern_port_rule){ .expires_ns = util_now_ns(CLOCK_BOOTTIME) +
									 60000000000ULL,
							  .port_lo = pd, .port_hi = pd,
							  .protos = LANTERN_PROTO_UDP, .rule = 5 };
		tap_ok(probe(cga, "udp", "127.0.0.7", pd) == 2 &&
			       lbpf_egress_learn(lb, ida, a7, &add, &e) == 0 &&
			       probe(cga, "udp", "127.0.0.7", pd) == 0 &&
			       passes(probe(cga, "tcp", "127.0.0.7", pt)),
		       "learned /128: allowed, and the covering /8 tcp rule still applies");
		r = lbpf_egress_gc(lb, util_now_ns(CLOCK_BOOTTIME) + 120000000000ULL);
		tap_ok(r == 1 && probe(cga, "udp", "127.0.0.7", pd) == 2 &&
			       passes(probe(cga, "tcp", "127.0.0.7", pt)),
		       "gc removes the expired slot (%d), the address is denied again", r);

		/* at most learn_max (4 here) learned entries per instance */
		int fails = 0;
		uint8_t ax[16];

		for (int i = 0; i < 4; i++) {
			char a[32];

			snprintf(a, sizeof(a), "127.0.0.%d", 21 + i);
			mapped(a, ax);
			fails += lbpf_egress_learn(lb, ida, ax, &add, &e) != 0;
		}
		mapped("127.0.0.25", ax);
		r = lbpf_egress_learn(lb, ida, ax, &add, &e);
		tap_ok(fails == 0 && lbpf_egress_learned(lb, ida) == 4 && r == -EDQUOT &&
			       strstr(e.msg, "--dns-learn-max") && probe(cga, "udp", "127.0.0.25", pd) == 2,
		       "learn limit: a 5th address is refused (-EDQUOT: %s) and stays denied", e.msg);
		mapped("127.0.0.21", ax);
		r = lbpf_egress_learn(lb, ida, ax, &add, &e);
		mapped("127.0.0.25", ax);
		tap_ok(r == 0 && lbpf_egress_learned(lb, ida) == 4 &&
			       lbpf_egress_learn(lb, idb, ax, &add, &e) == 0 && lbpf_egress_learned(lb, idb) == 1,
		       "learn limit: an address already learned is refreshed; another instance has its own");
		r = lbpf_egress_gc(lb, util_now_ns(CLOCK_BOOTTIME) + 120000000000ULL);
		tap_ok(r == 5 && lbpf_egress_learned(lb, ida) == 0 && lbpf_egress_learned(lb, idb) == 0 &&
			       lbpf_egress_learn(lb, ida, ax, &add, &e) == 0 && lbpf_egress_learned(lb, ida) == 1,
		       "gc gives expired entries back to the limit (%d removed)", r);
		lbpf_egress_gc(lb, util_now_ns(CLOCK_BOOTTIME) + 120000000000ULL);
	}

	/* atomic update under a connect loop */
	{
		struct lantern_instance before, after;
		pid_t acc = tl_acceptor(lt1, NULL), child = 0;
		int p[2], flips = 0, st2;
		char buf[128] = "";
		long okc = -1, den = -1, oth = -1;
		ssize_t n;

		lbpf_instance_get(lb, ida, &before);
		if (pipe(p) == 0) {
			char ps[16];

			snprintf(ps, sizeof(ps), "%u", pt);
			child = fork();
			if (child == 0) {
				close(p[0]);
				cg_join(cga);
				dup2(p[1], 1);
				execl(netprobe, "netprobe", "loop", "127.0.0.1", ps, "4000", (char *)NULL);
				_exit(98);
			}
			tl_child_track(child, SIGKILL);
			close(p[1]);
			while (waitpid(child, &st2, WNOHANG) == 0) {
				lbpf_instance_set(lb, ida, flips % 2 ? &pa.p : &pa2.p, 0, NULL, 0, &e);
				flips++;
			}
			tl_child_forget(child);
			n = read(p[0], buf, sizeof(buf) - 1);
			if (n > 0)
				buf[n] = '\0';
			close(p[0]);
			sscanf(buf, "ok=%ld denied=%ld other=%ld", &okc, &den, &oth);
		}
		tl_child_stop(acc, 0);
		lbpf_instance_set(lb, ida, &pa.p, 0, NULL, 0, &e);
		lbpf_instance_get(lb, ida, &after);
		drain();
		tap_ok(flips >= 20 && okc > 0 && den == 0,
		       "atomic update: %d policy flips during %ld connects, %ld denied, %ld other",
		       flips, okc, den, oth);
		tap_ok(after.policy_id > before.policy_id,
		       "policy ids advance (%u -> %u)", before.policy_id, after.policy_id);
	}
	{
		struct policy_entry *ents = NULL;
		size_t n = 0;

		lbpf_egress_dump(lb, ida, &ents, &n);
		tap_ok(n == pa.p.n_entries, "old versions deleted: current policy has %zu entries", n);
		free(ents);
	}

	/* full map: -ENOSPC, nothing half-written, the old policy still enforced */
	{
		struct policy big = { .mode = LANTERN_NET_ALLOWLIST };
		struct lantern_instance before, after;
		struct policy_entry *ents = NULL;
		size_t n = 0;

		big.n_entries = LANTERN_MAX_EGRESS + 1;
		big.entries = calloc(big.n_entries, sizeof(*big.entries));
		for (size_t i = 0; big.entries && i < big.n_entries; i++) {
			struct policy_entry *pe = &big.entries[i];

			mapped("::1", pe->addr);
			pe->addr[13] = (uint8_t)(i >> 16);
			pe->addr[14] = (uint8_t)(i >> 8);
			pe->addr[15] = (uint8_t)i;
			pe->prefix = 128;
			pe->val.nslots = 1;
			pe->val.slot[0] = (struct lantern_port_rule){ .port_lo = 1, .port_hi = 1,
								     .protos = LANTERN_PROTO_TCP };
		}
		lbpf_instance_get(lb, ida, &before);
		r = big.entries ? lbpf_instance_set(lb, ida, &big, 0, NULL, 0, &e) : -ENOMEM;
		tap_ok(r == -ENOSPC && strstr(e.msg, "lantern_egress"),
		       "full map: -ENOSPC naming the map (%d: %s)", r, e.msg);
		lbpf_instance_get(lb, ida, &after);
		lbpf_egress_dump(lb, ida, &ents, &n);
		tap_ok(after.policy_id == before.policy_id && n == pa.p.n_entries &&
			       probe(cga, "tcp", "127.0.0.1", pt) == 0 &&
			       probe(cga, "tcp", "127.0.0.1", pd) == 2,
		       "full map: old policy intact and still enforced");
		free(ents);
		free(big.entries);
	}

	/* DNS redirect */
	r = dns_udp_roundtrip(cgf, AF_INET, "127.0.0.53", dns4);
	tap_ok(r == 0, "dns udp4: 127.0.0.53:53 reaches the proxy, answer shows 127.0.0.53:53 (%d)",
	       r);
	r = dns_udp_roundtrip(cgf, AF_INET6, "::1", dns6);
	tap_ok(r == 0, "dns udp6: [::1]:53 reaches the proxy, answer shows [::1]:53 (%d)", r);
	r = dns_udp_roundtrip(cgf, AF_INET6, "::ffff:127.0.0.53", dns4);
	tap_ok(r == 0, "dns udp6 to a mapped address: redirected to the IPv4 proxy (%d)", r);
	r = dns_tcp_peer(cgf);
	tap_ok(r == 0, "dns tcp: connect to 127.0.0.53:53 redirected, getpeername shows it (%d)", r);
	tap_ok(probe(cgf, "udp", "127.0.0.1", pt) == 2, "dns instance: non-DNS traffic still denied");
	r = lbpf_stats_get(lb, idf, &st);
	tap_ok(r == 0 && st.dns_redirected == 4, "stats: dns_redirected %llu",
	       (unsigned long long)st.dns_redirected);
	tap_ok(find_event(idf, LANTERN_VERDICT_DNS, "127.0.0.53", 53) != NULL,
	       "dns redirect recorded with verdict DNS and the original address");

	/* packets that go somewhere their socket's address does not say: source routes
	 * (IPv6 routing headers, IPv4 LSRR/SSRR, per socket or per message) and raw
	 * sockets, dropped in cgroup_skb egress (the telemetry object's program) */
	{
		struct lbpf_tm_opts to = { .pin_root = pins, .cgroup_path = root, .instance_level = 2,
					   .sys_hook = LBPF_SYS_NONE };
		struct lantern_pkt_stats ps = { 0 };
		const struct lantern_egress_event *ev = NULL;
		struct lbpf_tm *tm = NULL;
		bool tm_adopted = false;
		const uint16_t rp = 4000;
		char rt[1024], res[64];
		int n6, n4, nopt, nraw;

		pol_init(&ph, LANTERN_NET_ALLOWLIST, 0);
		pol_add(&ph, "192.0.2.1", 32, LANTERN_PROTO_TCP | LANTERN_PROTO_UDP, rp, rp, 0);
		pol_add(&ph, "2001:db8::1", 128, LANTERN_PROTO_TCP | LANTERN_PROTO_UDP, rp, rp, 1);
		r = lbpf_instance_set(lb, idh, &ph.p, 0, NULL, 0, &e);
		r = r ?: lbpf_tm_open(&to, &tm, &tm_adopted, &e);
		tap_ok(r == 0, "telemetry programs (cgroup_skb egress) share the egress pins: %d %s", r,
		       r ? e.msg : "");
		rt_run(cgh, rp, "", rt, sizeof(rt));
		tap_diag("rtprobe: %s", tl_oneline(rt));
		tap_ok(rt_seen(rt, "direct", res, sizeof(res)) == 0 && !strcmp(res, "denied"),
		       "own netns: UDP straight to the denied address is denied (EPERM)");
		tap_ok(rt_seen(rt, "plain-udp", res, sizeof(res)) >= 1 && !strcmp(res, "ok") &&
			       rt_seen(rt, "plain-tcp", res, sizeof(res)) >= 1 && !strcmp(res, "ok"),
		       "normal UDP and TCP to the allowed address still flow");
		tap_ok(rt_seen(rt, "srh-udp", NULL, 0) == 0 && rt_seen(rt, "srh-tcp", NULL, 0) == 0,
		       "a segment routing header (uid 65534, UDP and TCP) towards the allowed address "
		       "gets nothing to the denied first segment");
		n6 = count_reason(idh, LANTERN_REASON_IPV6_ROUTING_HEADER, LANTERN_VERDICT_DENY, &ev);
		tap_ok(n6 == 2 && ev && ev->family == AF_INET6 && ev->port == rp &&
			       ev->proto == LANTERN_PROTO_TCP && !memcmp(ev->addr + 12, "\0\0\0\2", 4),
		       "routing header: %d deny events, reason ipv6_routing_header, naming the first "
		       "segment and the port", n6);
		tap_ok(rt_seen(rt, "lsrr-udp", NULL, 0) == 0 && rt_seen(rt, "lsrr-tcp", NULL, 0) == 0 &&
			       rt_seen(rt, "ssrr-cmsg", NULL, 0) == 0,
		       "IPv4 LSRR (IP_OPTIONS, UDP and TCP) and SSRR (an IP_RETOPTS cmsg): nothing to the "
		       "denied first hop");
		n4 = count_reason(idh, LANTERN_REASON_IPV4_SOURCE_ROUTE, LANTERN_VERDICT_DENY, &ev);
		tap_ok(n4 == 3 && ev && ev->family == AF_INET && ev->proto == LANTERN_PROTO_UDP,
		       "source route: %d deny events, reason ipv4_source_route", n4);
		nopt = count_reason(idh, LANTERN_REASON_IPV4_OPTIONS, LANTERN_VERDICT_DENY, NULL);
		tap_ok(rt_seen(rt, "rr-udp", NULL, 0) == 0 && nopt == 1 &&
			       rt_seen(rt, "hbh-udp", NULL, 0) >= 1,
		       "any other IPv4 option (record route) is dropped too (reason ipv4_options); IPv6 "
		       "hop-by-hop and destination options are walked and pass");
		nraw = count_reason(idh, LANTERN_REASON_SOCKET_TYPE, LANTERN_VERDICT_DENY, NULL);
		tap_ok(rt_seen(rt, "raw", NULL, 0) == 0 && nraw == 1,
		       "a raw socket's packet to the denied address is dropped (%d socket_type events)", nraw);
		r = lbpf_pkt_stats_get(lb, idh, &ps);
		tap_ok(r == 0 && ps.ipv6_routing_header == (uint64_t)n6 &&
			       ps.ipv4_source_route == (uint64_t)n4 && ps.socket_type == (uint64_t)nraw &&
			       ps.ipv4_options == (uint64_t)nopt && ps.ipv6_ext_headers == 0 &&
			       ps.audited == 0,
		       "lantern_pkt_stats counts exactly what was reported: rh %llu, srr %llu, opt %llu, "
		       "raw %llu", (unsigned long long)ps.ipv6_routing_header,
		       (unsigned long long)ps.ipv4_source_route, (unsigned long long)ps.ipv4_options,
		       (unsigned long long)ps.socket_type);

		/* audit mode lets it through and says so; network open does not look */
		pol_add(&pe, "2001:db8::1", 128, LANTERN_PROTO_UDP, rp, rp, 1);
		lbpf_instance_set(lb, ide, &pe.p, 0, NULL, 0, &e);
		rt_run(cge, rp, "srh-udp", rt, sizeof(rt));
		lbpf_pkt_stats_get(lb, ide, &ps);
		tap_ok(rt_seen(rt, "srh-udp", NULL, 0) == 1 && ps.audited == 1 &&
			       count_reason(ide, LANTERN_REASON_IPV6_ROUTING_HEADER, LANTERN_VERDICT_AUDIT,
					    NULL) == 1,
		       "audit mode: the routed packet passes, counted and reported as audit");
		rt_run(cgd, rp, "srh-udp raw", rt, sizeof(rt));
		lbpf_pkt_stats_get(lb, idd, &ps);
		tap_ok(rt_seen(rt, "srh-udp", NULL, 0) == 1 && rt_seen(rt, "raw", NULL, 0) >= 1 &&
			       ps.ipv6_routing_header == 0 && ps.socket_type == 0,
		       "network open: routed and raw packets pass untouched");
		lbpf_tm_close(tm);
	}

	/* auditable with bpftool */
	{
		char *bo = NULL;

		r = tl_sh(&bo, NULL, "bpftool map dump pinned %s/lantern_instances", pins);
		tap_ok(r == 0 && bo && strstr(bo, "\"policy_id\"") && strstr(bo, "\"net_mode\""),
		       "bpftool map dump pinned lantern_instances shows field names");
		free(bo);
		r = tl_sh(&bo, NULL, "bpftool map dump pinned %s/lantern_egress", pins);
		tap_ok(r == 0 && bo && strstr(bo, "\"prefixlen\"") && strstr(bo, "\"port_lo\""),
		       "bpftool map dump pinned lantern_egress shows field names");
		free(bo);
		r = tl_sh(&bo, NULL, "bpftool prog show pinned %s/prog_connect4", pins);
		tap_ok(r == 0 && bo && strstr(bo, "lantern_connect4"), "programs pinned with their names");
		free(bo);
	}

	/* a second lanternd beside the first: own pins, own subtree */
	{
		struct lbpf_opts o2 = o;
		struct lbpf *lb2 = NULL;
		bool ad2 = true;

		o2.pin_root = pins2;
		o2.cgroup_path = root2;
		pol_init(&pg, LANTERN_NET_ALLOWLIST, 0);
		pol_add(&pg, "127.0.0.1", 32, LANTERN_PROTO_TCP, pd, pd, 0);
		r = lbpf_open(&o2, &lb2, &ad2, &e);
		r = r ?: lbpf_instance_set(lb2, idg, &pg.p, 0, NULL, 0, &e);
		tap_ok(r == 0 && !ad2, "second lbpf on its own pin root and subtree: %d %s", r,
		       r ? e.msg : "");
		tap_ok(probe(cgg, "tcp", "127.0.0.1", pd) == 0 && probe(cgg, "tcp", "127.0.0.1", pt) == 2 &&
			       probe(cga, "tcp", "127.0.0.1", pt) == 0 &&
			       probe(cga, "tcp", "127.0.0.1", pd) == 2,
		       "two lanternd side by side enforce independently");
		lbpf_close(lb2);
		lbpf_unpin_all(pins2, &e);
		tap_ok(wait_gone(cgg, "127.0.0.1", pt) && probe(cga, "tcp", "127.0.0.1", pd) == 2,
		       "removing the second one's pins leaves the first enforcing");
	}

	/* enforcement survives the daemon; a restart adopts */
	{
		struct lantern_instance in;
		uint64_t *ids = NULL;
		size_t n = 0;
		uint32_t old_id;

		struct lantern_egress_value add = { .nslots = 1 };
		uint8_t ax[16];

		add.slot[0] = (struct lantern_port_rule){ .expires_ns = util_now_ns(CLOCK_BOOTTIME) +
									 60000000000ULL,
							  .port_lo = pd, .port_hi = pd,
							  .protos = LANTERN_PROTO_UDP, .rule = 5 };
		mapped("127.0.0.31", ax);
		lbpf_egress_learn(lb, idb, ax, &add, &e);
		mapped("127.0.0.32", ax);
		lbpf_egress_learn(lb, idb, ax, &add, &e);
		lbpf_instance_get(lb, ida, &in);
		old_id = in.policy_id;
		lbpf_close(lb);
		lb = NULL;
		tap_ok(probe(cga, "tcp", "127.0.0.1", pd) == 2 && probe(cga, "tcp", "127.0.0.1", pt) == 0,
		       "after lbpf_close: still enforced");
		r = lbpf_open(&o, &lb, &adopted, &e);
		tap_ok(r == 0 && adopted && lbpf_egress_learned(lb, idb) == 2,
		       "reopen adopts the pinned state, learned counts rebuilt from the map: %d %s", r,
		       r ? e.msg : "");
		if (r)
			return tap_done();
		lbpf_instance_list(lb, &ids, &n);
		tap_ok(n == 7 && probe(cga, "tcp", "127.0.0.1", pd) == 2 &&
			       probe(cga, "tcp", "127.0.0.1", pt) == 0 &&
			       probe(cgb, "tcp", "127.0.0.1", pd) == 0,
		       "after adopt: %zu instances, still enforced", n);
		free(ids);
		r = lbpf_instance_set(lb, ida, &pa2.p, 0, NULL, 0, &e);
		lbpf_instance_get(lb, ida, &in);
		tap_ok(r == 0 && in.policy_id > old_id && probe(cga, "udp", "127.0.0.9", 1) == 0,
		       "after adopt: policy ids continue (%u -> %u), updates work", old_id,
		       in.policy_id);
		r = lbpf_instance_remove(lb, idb);
		tap_ok(r == 0 && lbpf_instance_get(lb, idb, &in) == -ENOENT &&
			       probe(cgb, "tcp", "127.0.0.1", pt) == 2,
		       "instance removed: a process left in its cgroup is denied, not let loose");
	}

	lbpf_close(lb);
	lb = NULL;
	r = lbpf_unpin_all(pins, &e);
	tap_ok(r == 0 && access(pins, F_OK) < 0, "lbpf_unpin_all removes the pin root: %d %s", r,
	       r ? e.msg : "");
	tap_ok(wait_gone(cga, "127.0.0.1", pd), "after unpin: enforcement gone");

	close(lt1);
	close(lt2);
	close(lt6);
	close(ld1);
	close(dns4);
	close(dns6);
	close(dnst);
	if (tap_count != PLAN)
		tap_diag("plan says %d, ran %d", PLAN, tap_count);
	return tap_done();
}
