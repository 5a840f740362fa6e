/* security_test: issue 13's egress findings, end to end through a private lanternd
 * (process runtime) and a real dnsmasq on loopback:
 *   - source routes and raw sockets: a workload in a network namespace of its own
 *     (build/tests/rtprobe) sends with an IPv6 segment routing header, IPv4 LSRR and
 *     a raw socket towards an allowed address; nothing reaches the denied first hop,
 *     and each drop is a deny JSON line with a reason, counted per instance;
 *   - DNS rebinding: answers pointing at the node's loopback, link-local (metadata)
 *     and own addresses are not learned unless a CIDR rule names them, and each
 *     refusal is a JSON line;
 *   - the per-instance limit of learned addresses (--dns-learn-max): past it the
 *     instance's own queries fail, another instance's still resolve, and expiry gives
 *     entries back;
 *   - a flood of 100,000 denied connects: lanternd keeps answering its API within
 *     100 ms, spends less CPU than the workload, the kernel's counters are exact and
 *     the log stays bounded (a few lines a second, then "N more denies" aggregates).
 * No packet leaves the machine: connects go only to this node's own addresses, and
 * the routed traffic stays in rtprobe's namespace. */
#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tap.h"
#include "testlib.h"
#include "lantern/util.h"

#define LEARN_MAX 16
#define FLOOD     100000

static struct tl_env T;
static char probe[512], rtprobe[512], node[INET_ADDRSTRLEN];
static uint16_t port_l;
static pid_t acc;

/* Writes a process-runtime spec running `sh -c SCRIPT`; rules is the YAML body of
 * egress_rules ("    - pattern: ..." lines). */
static const char *spec(const char *name, const char *rules, const char *script)
{
	char file[128];

	snprintf(file, sizeof(file), "%s.yaml", name);
	return tl_file(&T, file,
		       "apiVersion: lantern.dev/v1\nkind: AgentSpec\nmetadata:\n  name: %s\n"
		       "spec:\n  image_digest: host\n  isolation: trusted\n  network: allowlist_domain\n"
		       "  egress_rules:\n%s  command: [\"/bin/sh\", \"-c\"]\n  args:\n    - |\n      %s\n",
		       name, rules, script);
}

/* Starts a run in the background; its id once `lantern ps` shows it running. */
static bool run_bg(const char *name, const char *file, char *id, size_t len)
{
	tl_sh(NULL, NULL, "%s/lantern --socket %s run %s >%s/%s.out 2>/dev/null &", T.build, T.sock, file,
	      T.dir, name);
	return tl_running_run(&T, name, id, len, 10000);
}

static char *run_out(const char *name)
{
	char path[600], *out = NULL;

	snprintf(path, sizeof(path), "%s/%s.out", T.dir, name);
	util_read_file(path, &out, NULL);
	return out;
}

/* The counter key of `lantern audit egress --json ID` (first occurrence), or -1. */
static long long audit_counter(const char *id, const char *key)
{
	char *out = NULL, pat[80];
	long long v = -1;
	const char *p;

	tl_lantern(&T, &out, NULL, "audit egress --json %s", id);
	snprintf(pat, sizeof(pat), "\"%s\":", key);
	if (out && (p = strstr(out, pat)))
		v = strtoll(p + strlen(pat), NULL, 10);
	free(out);
	return v;
}

static bool file_has(const char *path, const char *s)
{
	char *buf = NULL;
	bool r;

	util_read_file(path, &buf, NULL);
	r = tl_has(buf, s);
	free(buf);
	return r;
}

/* A non-loopback IPv4 address of this node (connects to it stay on the machine). */
static bool node_address(char *out, size_t len)
{
	struct ifaddrs *ifa, *i;
	bool found = false;

	if (getifaddrs(&ifa) < 0)
		return false;
	for (i = ifa; i && !found; i = i->ifa_next) {
		struct sockaddr_in *a = (struct sockaddr_in *)i->ifa_addr;

		if (a && a->sin_family == AF_INET && (ntohl(a->sin_addr.s_addr) >> 24) != 127)
			found = inet_ntop(AF_INET, &a->sin_addr, out, (socklen_t)len) != NULL;
	}
	freeifaddrs(ifa);
	return found;
}

static pid_t start_dnsmasq(uint16_t port)
{
	char cmd[1024];
	pid_t pid;

	snprintf(cmd, sizeof(cmd),
		 "exec dnsmasq --no-daemon --conf-file=/dev/null --no-resolv --no-hosts --bind-interfaces "
		 "--listen-address=127.0.0.1 --port=%u --pid-file= --user=root --local-ttl=1 "
		 "--host-record=lo.rebind.test,127.0.0.1 --host-record=zero.rebind.test,0.0.0.0 "
		 "--host-record=meta.rebind.test,169.254.169.254 --host-record=node.rebind.test,%s "
		 "--host-record=lo6.rebind.test,::1 --host-record=ll6.rebind.test,fe80::1 "
		 "--host-record=mapped.rebind.test,::ffff:127.0.0.1 "
		 "--synth-domain=flood.test,10.77.0.0/16 >%s/dnsmasq.log 2>&1",
		 port, node, T.dir);
	pid = fork();
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	usleep(300000);
	return pid;
}

/* Issue 13.1: packets whose first hop is not the address their socket names. */
static void test_source_routes(void)
{
	char script[1024], id[64], jsonl[600], *out;
	const char *f;

	snprintf(script, sizeof(script), "%s 4000 srh-udp srh-tcp lsrr-udp ssrr-cmsg raw plain-udp; sleep 30",
		 rtprobe);
	f = spec("routed",
		 "    - pattern: udp://192.0.2.1:4000\n    - pattern: tcp://192.0.2.1:4000\n"
		 "    - pattern: \"udp://[2001:db8::1]:4000\"\n    - pattern: \"tcp://[2001:db8::1]:4000\"\n",
		 script);
	if (!tap_ok(run_bg("routed", f, id, sizeof(id)), "source routes: the run starts")) {
		for (int i = 0; i < 4; i++)
			tap_ok(false, "source routes: skipped, the run did not start");
		return;
	}
	snprintf(jsonl, sizeof(jsonl), "%s/runs/%s/egress.jsonl", T.state, id);
	snprintf(script, sizeof(script), "%s/routed.out", T.dir);
	tl_wait_file_text(script, "plain-udp", 10000);
	out = run_out("routed");
	tap_ok(tl_has(out, "srh-udp denied seen=0") && tl_has(out, "srh-tcp ok seen=0") &&
	       tl_has(out, "lsrr-udp denied seen=0") && tl_has(out, "ssrr-cmsg denied seen=0") &&
	       tl_has(out, "raw denied seen=0") && tl_has(out, "plain-udp ok seen="),
	       "SRH (as uid 65534), LSRR, SSRR cmsg and a raw socket reach nothing past the allowed "
	       "address; plain UDP still works: %s", tl_oneline(out));
	free(out);
	tap_ok(file_has(jsonl, "\"reason\":\"ipv6_routing_header\"") &&
	       file_has(jsonl, "\"reason\":\"ipv4_source_route\"") &&
	       file_has(jsonl, "\"reason\":\"socket_type\"") && file_has(jsonl, "\"hook\":\"skb_egress\"") &&
	       file_has(jsonl, "\"dst\":\"2001:db8::2\"") && file_has(jsonl, "\"dst\":\"192.0.2.2\""),
	       "each drop is a deny JSON line in the run's egress.jsonl with its reason and first hop");
	tap_ok(tl_log_contains(&T, "\"reason\":\"ipv6_routing_header\"") &&
	       tl_log_contains(&T, "\"verdict\":\"deny\""), "and in lanternd's log");
	tap_ok(audit_counter(id, "ipv6_routing_header") == 2 && audit_counter(id, "ipv4_source_route") == 2 &&
	       audit_counter(id, "socket_type") == 1,
	       "lantern audit egress counts them per reason (routing header %lld, source route %lld, "
	       "socket type %lld)", audit_counter(id, "ipv6_routing_header"),
	       audit_counter(id, "ipv4_source_route"), audit_counter(id, "socket_type"));
	tl_lantern(&T, NULL, NULL, "kill %s", id);
}

/* Issue 13.2: answers pointing at the node are not learned without a CIDR rule. */
static void test_rebinding(void)
{
	char script[2048], want[512], id[64], *out = NULL;
	const char *f;

	snprintf(script, sizeof(script),
		 "P=%s; $P dns lo.rebind.test 127.0.0.53; $P tcp 127.0.0.1 %u; "
		 "$P dns zero.rebind.test 127.0.0.53; $P tcp 0.0.0.0 %u; "
		 "$P dns meta.rebind.test 127.0.0.53; $P dns node.rebind.test 127.0.0.53; $P tcp %s %u; "
		 "$P dns6 lo6.rebind.test 127.0.0.53; $P tcp ::1 %u; $P dns6 mapped.rebind.test 127.0.0.53; "
		 "$P dns6 ll6.rebind.test 127.0.0.53; sleep 30",
		 probe, port_l, port_l, node, port_l, port_l);
	f = spec("rebind", "    - pattern: \"*.rebind.test\"\n", script);
	if (!tap_ok(run_bg("rebind", f, id, sizeof(id)), "rebinding: the run starts")) {
		for (int i = 0; i < 4; i++)
			tap_ok(false, "rebinding: skipped, the run did not start");
		return;
	}
	snprintf(want, sizeof(want),
		 "127.0.0.1\ndenied\n0.0.0.0\ndenied\n169.254.169.254\n%s\ndenied\n::1\ndenied\n"
		 "::ffff:127.0.0.1\nfe80::1\n", node);
	for (int i = 0; i < 100 && !tl_has(out, "fe80::1"); i++) {
		free(out);
		usleep(50000);
		out = run_out("rebind");
	}
	tap_ok(out && !strcmp(out, want),
	       "answers for the node's loopback, 0.0.0.0, metadata, its own address, ::1, mapped "
	       "loopback and link-local reach the client but open nothing (want %s, got %s)",
	       tl_oneline(want), tl_oneline(out));
	free(out);
	tap_ok(tl_log_contains(&T, "\"answer\":\"127.0.0.1\"") &&
	       tl_log_contains(&T, "\"reason\":\"answer_loopback\"") &&
	       tl_log_contains(&T, "\"reason\":\"answer_unspecified\"") &&
	       tl_log_contains(&T, "\"answer\":\"169.254.169.254\"") &&
	       tl_log_contains(&T, "\"reason\":\"answer_link_local\"") &&
	       tl_log_contains(&T, "\"reason\":\"answer_node_address\"") &&
	       tl_log_contains(&T, "\"qname\":\"ll6.rebind.test\""),
	       "each refused answer is a dns deny JSON line with its reason, name and address");
	tap_ok(audit_counter(id, "dns_learned") == 0 && audit_counter(id, "dns_answers_refused") == 7,
	       "nothing learned, 7 answers refused (audit: learned %lld, refused %lld)",
	       audit_counter(id, "dns_learned"), audit_counter(id, "dns_answers_refused"));
	tl_lantern(&T, NULL, NULL, "kill %s", id);

	/* a CIDR rule naming the range is consent: 127/8, and only 127/8 */
	snprintf(script, sizeof(script),
		 "P=%s; $P dns lo.rebind.test 127.0.0.53; $P tcp 127.0.0.1 %u; "
		 "$P dns meta.rebind.test 127.0.0.53 >/dev/null; $P dns node.rebind.test 127.0.0.53 >/dev/null; "
		 "$P tcp %s %u",
		 probe, port_l, node, port_l);
	f = spec("rebind-ok", "    - pattern: \"*.rebind.test\"\n    - pattern: tcp://127.0.0.0/8:1\n", script);
	tl_lantern(&T, &out, NULL, "run %s", f);
	tap_ok(out && !strcmp(out, "127.0.0.1\nok\ndenied\n"),
	       "with a CIDR rule for 127.0.0.0/8 the loopback answer is learned; metadata and the node's "
	       "address still are not (got %s)", tl_oneline(out));
	free(out);
}

/* Issue 13.2: at most --dns-learn-max learned entries per instance. */
static void test_learn_limit(void)
{
	char script[2048], id[64], mark[600], *out = NULL;
	const char *f;
	int lines = 0;

	snprintf(mark, sizeof(mark), "%s/flood-phase", T.dir);
	snprintf(script, sizeof(script),
		 "P=%s; i=1; while [ $i -le %d ]; do $P dns 10-77-0-$i.flood.test 127.0.0.53; i=$((i+1)); done; "
		 "echo end1; touch %s; sleep 9; $P dns 10-77-0-99.flood.test 127.0.0.53; echo end2; sleep 30",
		 probe, LEARN_MAX + 4, mark);
	f = spec("flood", "    - pattern: \"*.flood.test\"\n", script);
	if (!tap_ok(run_bg("flood", f, id, sizeof(id)), "learn limit: the run starts")) {
		for (int i = 0; i < 4; i++)
			tap_ok(false, "learn limit: skipped, the run did not start");
		return;
	}
	for (int i = 0; i < 200 && access(mark, F_OK) < 0; i++)
		usleep(50000);
	out = run_out("flood");
	for (const char *p = out; p && (p = strstr(p, "10.77.0.")); p++)
		lines++;
	tap_ok(lines == LEARN_MAX && tl_has(out, "end1") &&
	       audit_counter(id, "dns_learned") == LEARN_MAX &&
	       tl_log_contains(&T, "\"reason\":\"learn_limit\""),
	       "%d names resolved, %d answered: past --dns-learn-max %d the instance's own queries fail, "
	       "each a learn_limit line (learned %lld)", LEARN_MAX + 4, lines, LEARN_MAX,
	       audit_counter(id, "dns_learned"));
	free(out);

	/* another instance resolves meanwhile: the limit is per instance */
	snprintf(script, sizeof(script), "%s dns 10-77-1-1.flood.test 127.0.0.53", probe);
	f = spec("flood-b", "    - pattern: \"*.flood.test\"\n", script);
	tl_lantern(&T, &out, NULL, "run %s", f);
	tap_ok(out && !strcmp(out, "10.77.1.1\n"), "another instance still resolves and learns (got %s)",
	       tl_oneline(out));
	free(out);

	/* answers have TTL 1, kept --dns-ttl-floor 3 s: the gc (every 5 s) gives them back */
	out = NULL;
	for (int i = 0; i < 200 && !tl_has(out, "end2"); i++) {
		free(out);
		usleep(50000);
		out = run_out("flood");
	}
	tap_ok(tl_has(out, "10.77.0.99\nend2") && audit_counter(id, "dns_learned") == 1,
	       "expired entries are given back: a new name resolves again (learned %lld)",
	       audit_counter(id, "dns_learned"));
	free(out);
	tl_lantern(&T, NULL, NULL, "kill %s", id);
}

/* CPU time (user + system) of a process so far, in ms. */
static long cpu_ms(pid_t pid)
{
	char path[64], *buf = NULL, *p;
	unsigned long ut = 0, st = 0;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	if (util_read_file(path, &buf, NULL) < 0)
		return -1;
	/* fields 14 and 15, counted after the command name, which may hold spaces */
	p = strrchr(buf, ')');
	if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
		ut = st = 0;
	free(buf);
	return (long)((ut + st) * 1000 / (unsigned long)sysconf(_SC_CLK_TCK));
}

/* One `ps` request on lanternd's socket, answered in full: its round trip in ms. */
static long api_ps_ms(void)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	uint64_t t0 = tl_ms();
	char buf[4096];
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	ssize_t n;

	snprintf(a.sun_path, sizeof(a.sun_path), "%s", T.sock);
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
	    write(fd, "{\"op\":\"ps\"}\n", 12) != 12) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	while ((n = read(fd, buf, sizeof(buf))) > 0)
		;
	close(fd);
	return n < 0 ? -1 : (long)(tl_ms() - t0);
}

static int count_lines(const char *path, const char *with)
{
	char *buf = NULL;
	int n = 0;

	util_read_file(path, &buf, NULL);
	for (char *l = buf, *nl; l && *l; l = nl + 1) {
		if (!(nl = strchr(l, '\n')))
			break;
		*nl = '\0';
		if (!with || strstr(l, with))
			n++;
	}
	free(buf);
	return n;
}

/* Issue 13.4: denied connects cost the workload, not the daemon. */
static void test_deny_flood(void)
{
	char script[1024], id[64], outp[600], jsonl[600], runkey[80], *out = NULL;
	long d0 = cpu_ms(T.daemon), d1, worst = 0, w_cpu = -1, denied = -1, t;
	int samples = 0, slow = 0, lines, jlines, aggregates;
	const char *f;

	snprintf(script, sizeof(script), "%s flood 127.0.0.1 %u %d; sleep 60", probe, port_l, FLOOD);
	f = spec("deny-flood", "    - pattern: tcp://127.0.0.1:1\n", script);
	if (!tap_ok(run_bg("deny-flood", f, id, sizeof(id)), "deny flood: the run starts")) {
		for (int i = 0; i < 6; i++)
			tap_ok(false, "deny flood: skipped, the run did not start");
		return;
	}
	snprintf(outp, sizeof(outp), "%s/deny-flood.out", T.dir);
	while (!tl_has(out, "cpu_ms=")) {
		free(out);
		out = NULL;
		if ((t = api_ps_ms()) < 0 || t >= 100)
			slow++;
		if (t > worst)
			worst = t;
		samples++;
		usleep(50000);
		util_read_file(outp, &out, NULL);
		if (samples > 1200)
			break;
	}
	if (out && strstr(out, "denied=") && strstr(out, "cpu_ms=")) {
		denied = atol(strstr(out, "denied=") + 7);
		w_cpu = atol(strstr(out, "cpu_ms=") + 7);
	}
	free(out);
	/* what lanternd still had to read, and the last aggregate lines (1 s) */
	usleep(2500 * 1000);
	d1 = cpu_ms(T.daemon);
	tap_ok(denied == FLOOD, "the workload made %d connects, %ld denied (EPERM)", FLOOD, denied);
	tap_ok(samples >= 5 && !slow, "lanternd answered `ps` within 100 ms all through the flood "
	       "(%d requests, %d slow, worst %ld ms)", samples, slow, worst);
	tap_ok(d1 - d0 < w_cpu, "lanternd spent %ld ms of CPU on it, the workload %ld ms", d1 - d0, w_cpu);
	tap_ok(audit_counter(id, "denied") == FLOOD, "the kernel counted every deny: %lld",
	       audit_counter(id, "denied"));
	snprintf(jsonl, sizeof(jsonl), "%s/runs/%s/egress.jsonl", T.state, id);
	snprintf(runkey, sizeof(runkey), "\"run_id\":\"%s\"", id);
	lines = count_lines(T.log, runkey);
	jlines = count_lines(jsonl, NULL);
	aggregates = count_lines(jsonl, "\"suppressed\":");
	tap_ok(lines < 1000 && jlines < 1000 && aggregates > 0,
	       "the log stays bounded: %d lines in lanternd's log, %d in egress.jsonl (%d aggregates)",
	       lines, jlines, aggregates);
	tap_diag("deny flood: %d denies, lanternd %ld ms CPU, workload %ld ms, worst ps %ld ms", FLOOD,
		 d1 - d0, w_cpu, worst);
	tl_lantern(&T, NULL, NULL, "kill %s", id);
}

int main(void)
{
	const char *missing = tl_env_missing();
	uint16_t dns_port = 0;
	pid_t dnsmasq;
	char extra[256];
	int s, l;

	tap_start();
	if (missing) {
		tap_skip(missing, "security end-to-end tests");
		return tap_done_plan();
	}
	if (tl_env_init(&T, "security") < 0 || !node_address(node, sizeof(node))) {
		tap_ok(false, "test environment (and a non-loopback IPv4 address of this node)");
		return tap_done_plan();
	}
	snprintf(probe, sizeof(probe), "%s/tests/netprobe", T.build);
	snprintf(rtprobe, sizeof(rtprobe), "%s/tests/rtprobe", T.build);
	l = tl_tcp_listen("127.0.0.1", &port_l);
	acc = fork();
	if (acc == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		for (;;) {
			int c = accept(l, NULL, NULL);
			if (c >= 0)
				close(c);
		}
	}
	s = tl_udp_bind("127.0.0.1", &dns_port);
	close(s);
	dnsmasq = start_dnsmasq(dns_port);
	snprintf(extra, sizeof(extra), "--dns-upstream 127.0.0.1:%u --dns-learn-max %d --dns-ttl-floor 3",
		 dns_port, LEARN_MAX);
	if (!tap_ok(tl_daemon_start(&T, extra) == 0, "lanternd starts (--dns-learn-max %d)", LEARN_MAX)) {
		tl_env_cleanup(&T);
		return tap_done_plan();
	}
	test_source_routes();
	test_rebinding();
	test_learn_limit();
	test_deny_flood();
	kill(dnsmasq, SIGTERM);
	waitpid(dnsmasq, NULL, 0);
	kill(acc, SIGKILL);
	waitpid(acc, NULL, 0);
	close(l);
	tl_env_cleanup(&T);
	return tap_done_plan();
}
