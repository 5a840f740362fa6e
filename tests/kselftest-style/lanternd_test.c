/* lanternd_test: egress end to end, the way a user meets it: a private lanternd,
 * specs submitted with `lantern run`, workloads (netprobe) connecting to loopback
 * listeners, and what the CLI, the log and the kernel say. Covers admission and bad
 * specs, allow/deny over TCP and UDP, IPv4 and IPv6, port ranges, longest prefix,
 * none/open/audit, processes outside instances, two instances at once, kill -9 of
 * lanternd and adoption, FQDN through a real dnsmasq, atomic policy update under a
 * connect loop, a full map, cancel and timeout, socket permissions, and reset. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tap.h"
#include "testlib.h"
#include "lantern/util.h"

static struct tl_env T;
static char probe[512];
static uint16_t port_a, port_b, port_c, port6;
static int lfd[8];

/* Writes a process-runtime spec whose workload is `sh -c SCRIPT`. rules is the YAML
 * list body of egress_rules (lines "    - pattern: ..."), or NULL. */
static const char *spec(const char *name, const char *network, const char *labels,
			const char *rules, const char *extra_limits, const char *script)
{
	return tl_spec(&T, name, labels, script,
		       "  image_digest: host\n"
		       "  isolation: trusted\n"
		       "  network: %s\n"
		       "%s%s"
		       "  limits:\n"
		       "    memory: 256Mi\n"
		       "%s",
		       network, rules ? "  egress_rules:\n" : "", rules ? rules : "",
		       extra_limits ? extra_limits : "");
}

static int count_cgroup_children(void)
{
	char *out = NULL;
	int n;

	tl_sh(&out, NULL, "find /sys/fs/cgroup/unified/%s -mindepth 1 -maxdepth 1 -type d | wc -l", T.cgroot);
	n = out ? atoi(out) : -1;
	free(out);
	return n;
}

static void test_admission(void)
{
	char *out = NULL, *err = NULL;
	const char *f;
	int rc;

	f = tl_file(&T, "bad.yaml",
		    "apiVersion: lantern.dev/v1\nkind: AgentSpec\nmetadata:\n  name: bad\n"
		    "spec:\n  image_digest: host\n  isolation: trusted\n  limits:\n    memory: 12Qi\n"
		    "  egress_rules:\n    - pattern: tcp://10.0.0.1/8\n  command: [\"true\"]\n");
	rc = tl_run(&T, f, &out, &err);
	tap_ok(rc != 0 && tl_has(err, "bad.yaml:9:13") && tl_has(err, "spec.limits.memory") &&
	       tl_has(err, "bad.yaml:11:16") && tl_has(err, "spec.egress_rules[0].pattern"),
	       "invalid spec: every error names file:line:col and the field (got: %s)", tl_oneline(err));
	tap_ok(count_cgroup_children() == 0, "invalid spec: nothing was started (no instance cgroup)");
	free(out);
	free(err);

	f = spec("standard", "none", NULL, NULL, NULL, "true");
	tl_sh(NULL, NULL, "sed -i 's/isolation: trusted/isolation: untrusted/' %s", f);
	rc = tl_run(&T, f, &out, &err);
	tap_ok(rc != 0 && tl_has(err, "refused") && tl_has(err, "untrusted"),
	       "isolation untrusted is refused by the process runtime, naming the class");
	free(out);
	free(err);

	f = spec("vpc", "tenant_vpc", NULL, NULL, NULL, "true");
	rc = tl_run(&T, f, &out, &err);
	tap_ok(rc != 0 && tl_has(err, "tenant_vpc"), "network tenant_vpc is refused as unsupported");
	free(out);
	free(err);
}

static void test_basic(void)
{
	char rules[512], script[1024], *out = NULL, *err = NULL;
	const char *f;
	int rc;

	snprintf(rules, sizeof(rules), "    - pattern: tcp://127.0.0.1:%u\n", port_a);
	snprintf(script, sizeof(script),
		 "echo to-stdout; echo to-stderr >&2; %s tcp 127.0.0.1 %u; %s tcp 127.0.0.1 %u; exit 7",
		 probe, port_a, probe, port_b);
	f = spec("basic", "allowlist_domain", NULL, rules, NULL, script);
	rc = tl_run(&T, f, &out, &err);
	tap_ok(rc == 7, "lantern run exits with the workload's exit status (got %d)", rc);
	tap_ok(tl_has(out, "to-stdout") && tl_has(err, "to-stderr"), "stdout and stderr are streamed");
	tap_ok(tl_has(out, "ok\ndenied\n"), "allowed TCP port connects, another port on the same address is denied (EPERM)");
	tap_ok(tl_has(err, "failed") && tl_has(err, "exit code 7"), "a failed run prints its status and reason on stderr");
	tap_ok(tl_log_contains(&T, "\"event\":\"egress\"") && tl_log_contains(&T, "\"verdict\":\"deny\"") &&
	       tl_log_contains(&T, "\"comm\":\"netprobe\"") && tl_log_contains(&T, "\"dst\":\"127.0.0.1\""),
	       "the deny is one JSON line in lanternd's log with comm, destination, verdict");
	tap_ok(count_cgroup_children() == 0, "the instance cgroup is gone after the run");
	free(out);
	free(err);

	/* Outside any instance the same destination is reachable. */
	rc = tl_sh(&out, NULL, "%s tcp 127.0.0.1 %u", probe, port_b);
	tap_ok(rc == 0, "a process outside instances is unaffected");
	free(out);
}

static void test_protocols(void)
{
	char rules[1024], script[2048], *out = NULL, *err = NULL;
	const char *f;

	/* 127.0.0.0/8 tcp 443-only would be narrow; use a range and a longer prefix. */
	snprintf(rules, sizeof(rules),
		 "    - pattern: tcp://127.0.0.0/8:%u\n"
		 "    - pattern: 127.0.0.1/32\n"
		 "    - pattern: udp://127.0.0.3:%u-%u\n"
		 "    - pattern: tcp://[::1]:%u\n",
		 port_c, port_a, port_a + 2, port6);
	snprintf(script, sizeof(script),
		 "P=%s; $P tcp 127.0.0.1 %u; $P udp 127.0.0.1 9; $P tcp 127.0.0.2 %u; $P tcp 127.0.0.2 %u; "
		 "$P udp 127.0.0.3 %u; $P udp 127.0.0.3 %u; $P udpc 127.0.0.3 %u; $P udp 127.0.0.4 %u; "
		 "$P tcp ::1 %u; $P tcp ::1 %u; $P tcp ::ffff:127.0.0.2 %u; $P tfo 127.0.0.2 %u; "
		 "$P udp ::1 %u; true",
		 probe, port_b, port_c, port_b, port_a + 1, port_a + 3, port_a, port_a, port6, port6 + 1,
		 port_b, port_b, port6);
	f = spec("protocols", "allowlist_domain", NULL, rules, NULL, script);
	tl_run(&T, f, &out, &err);
	const char *want =
		"ok\nok\n"          /* /32 allows everything on 127.0.0.1: tcp and udp */
		"ok\ndenied\n"      /* /8 only allows port_c: longest prefix keeps the union */
		"ok\ndenied\nok\n"  /* udp port range, connected udp too */
		"denied\n"          /* other address, same port */
		"ok\ndenied\n"      /* IPv6 allowed port / other port */
		"denied\n"          /* IPv4-mapped IPv6 judged as IPv4 127.0.0.2: denied */
		"denied\n"          /* TCP Fast Open cannot bypass */
		"denied\n";         /* udp to ::1 (only tcp allowed) */
	tap_ok(out && !strcmp(out, want),
	       "TCP/UDP, IPv4/IPv6, ranges, longest prefix, mapped, TFO, connected UDP (want %s, got %s)",
	       tl_oneline(want), tl_oneline(out));
	free(out);
	free(err);
}

static void test_modes(void)
{
	char script[1024], *out = NULL, *err = NULL;
	const char *f;

	snprintf(script, sizeof(script), "%s tcp 127.0.0.1 %u; %s tcp ::1 %u; true", probe, port_a, probe, port6);
	f = spec("none", "none", NULL, NULL, NULL, script);
	tl_run(&T, f, &out, &err);
	tap_ok(out && !strcmp(out, "denied\ndenied\n"),
	       "network none in the host's netns: even the node's loopback is denied (got %s)", tl_oneline(out));
	free(out);
	free(err);

	f = spec("open", "open", NULL, NULL, NULL, script);
	tl_run(&T, f, &out, &err);
	tap_ok(out && !strcmp(out, "ok\nok\n"), "network open: everything allowed (got %s)", tl_oneline(out));
	tap_ok(tl_log_contains(&T, "\"verdict\":\"allow\""), "network open: connections are still recorded");
	free(out);
	free(err);

	snprintf(script, sizeof(script), "%s tcp 127.0.0.1 %u; true", probe, port_b);
	f = spec("audited", "allowlist_domain", "  labels:\n    lantern.dev/egress-mode: audit\n", NULL, NULL, script);
	tl_run(&T, f, &out, &err);
	tap_ok(out && !strcmp(out, "ok\n") && tl_log_contains(&T, "\"verdict\":\"audit\""),
	       "audit mode label: a would-deny is allowed and recorded as audit");
	free(out);
	free(err);
}

static void test_two_instances(void)
{
	char ra[256], rb[256], sa[1024], sb[1024], *out = NULL;
	char oa[600], ob[600];
	const char *fa, *fb;

	snprintf(ra, sizeof(ra), "    - pattern: tcp://127.0.0.1:%u\n", port_a);
	snprintf(rb, sizeof(rb), "    - pattern: tcp://127.0.0.1:%u\n", port_b);
	snprintf(sa, sizeof(sa), "sleep 0.5; %s tcp 127.0.0.1 %u; %s tcp 127.0.0.1 %u; true", probe, port_a, probe, port_b);
	snprintf(sb, sizeof(sb), "sleep 0.5; %s tcp 127.0.0.1 %u; %s tcp 127.0.0.1 %u; true", probe, port_a, probe, port_b);
	fa = spec("twin-a", "allowlist_domain", NULL, ra, NULL, sa);
	fb = spec("twin-b", "allowlist_domain", NULL, rb, NULL, sb);
	snprintf(oa, sizeof(oa), "%s/twin-a.out", T.dir);
	snprintf(ob, sizeof(ob), "%s/twin-b.out", T.dir);
	tl_sh(NULL, NULL, "%s/lantern --socket %s run %s >%s 2>/dev/null & "
	      "%s/lantern --socket %s run %s >%s 2>/dev/null & wait",
	      T.build, T.sock, fa, oa, T.build, T.sock, fb, ob);
	util_read_file(oa, &out, NULL);
	tap_ok(out && !strcmp(out, "ok\ndenied\n"), "two instances at once: A gets its own policy");
	free(out);
	out = NULL;
	util_read_file(ob, &out, NULL);
	tap_ok(out && !strcmp(out, "denied\nok\n"), "two instances at once: B gets its own policy");
	free(out);
}

static void test_crash_and_adopt(void)
{
	char rules[256], script[1024], outp[600], id[64], *out = NULL;
	const char *f;
	int st;

	snprintf(rules, sizeof(rules), "    - pattern: tcp://127.0.0.1:%u\n", port_a);
	snprintf(outp, sizeof(outp), "%s/survivor.out", T.dir);
	snprintf(script, sizeof(script),
		 "while true; do %s tcp 127.0.0.1 %u >>%s; %s tcp 127.0.0.1 %u >>%s; sleep 0.1; done",
		 probe, port_b, outp, probe, port_a, outp);
	f = spec("survivor", "allowlist_domain", NULL, rules, NULL, script);
	tl_sh(NULL, NULL, "%s/lantern --socket %s run %s >/dev/null 2>&1 &", T.build, T.sock, f);
	tap_ok(tl_wait_file_text(outp, "denied", 5000), "long-running instance is enforced");
	tl_daemon_stop(&T, SIGKILL);
	truncate(outp, 0);
	usleep(600000);
	util_read_file(outp, &out, NULL);
	tap_ok(out && tl_has(out, "denied") && tl_has(out, "ok") && !tl_has(out, "error"),
	       "after kill -9 of lanternd the workload keeps running and is still denied");
	free(out);
	out = NULL;
	st = tl_daemon_start(&T, NULL);
	tap_ok(st == 0 && tl_running_run(&T, "survivor", id, sizeof(id), 0) && tl_log_contains(&T, "adopted"),
	       "restarted lanternd adopts the running instance");
	truncate(outp, 0);
	usleep(600000);
	util_read_file(outp, &out, NULL);
	tap_ok(out && tl_has(out, "denied") && tl_has(out, "ok"), "still enforced after adoption");
	free(out);
	out = NULL;

	tl_lantern(&T, &out, NULL, "audit egress %s", id);
	snprintf(script, sizeof(script), "tcp://127.0.0.1:%u", port_a);
	tap_ok(tl_has(out, script) && tl_has(out, "mode: enforce") && tl_has(out, "denied") &&
	       !tl_has(out, "denied 0,") && tl_has(out, "deny   tcp 127.0.0.1"),
	       "lantern audit egress shows the rule, the kernel entry, the deny count and the denies");
	free(out);
	out = NULL;

	/* a clean stop also leaves the instance enforced, and the next lanternd adopts it */
	tl_daemon_stop(&T, SIGTERM);
	truncate(outp, 0);
	usleep(600000);
	util_read_file(outp, &out, NULL);
	tap_ok(out && tl_has(out, "denied") && tl_has(out, "ok") && !tl_has(out, "error"),
	       "after a clean stop of lanternd the instance is still enforced");
	free(out);
	out = NULL;
	st = tl_daemon_start(&T, NULL);
	tap_ok(st == 0 && tl_running_run(&T, "survivor", id, sizeof(id), 0), "and the next lanternd adopts it again");
	tap_ok(tl_lantern(&T, NULL, NULL, "kill %s", id) == 0, "lantern kill stops the adopted run");
	for (int i = 0; i < 100 && tl_running_run(&T, "survivor", id, sizeof(id), 0); i++)
		usleep(100000);
	tl_lantern(&T, &out, NULL, "ps");
	tap_ok(tl_has(out, "survivor") && tl_has(out, "cancelled") && count_cgroup_children() == 0,
	       "the killed run shows cancelled and its cgroup is gone");
	free(out);
}

/* A run whose lanternd dies between its start and its run.json (a crash there; the
 * test-only crash point LANTERN_TEST_CRASH_BEFORE_RECORD=1 exits right before it):
 * STATE/runs/<id> has no run.json, its workload runs in its instance cgroup with its
 * identity tmpfs mounted. The next lanternd loads no run from it and leaves nothing of
 * it (directory, cgroup in any hierarchy, mount). Beside it: a directory with no
 * run.json whose journal holds more than the first record stays (a durable run's
 * history), a symlink named like a run is not followed, and a link inside a removed
 * directory goes without its target. */
static void test_crash_before_record(void)
{
	char *out = NULL, *dirs = NULL, *inst = NULL, *left = NULL, *mnt = NULL, kept[64] = "r-00c0ffee0001";
	char outside[600];
	int st, rc;

	tl_daemon_stop(&T, SIGTERM);
	setenv("LANTERN_TEST_CRASH_BEFORE_RECORD", "1", 1);
	rc = tl_daemon_start(&T, NULL);
	unsetenv("LANTERN_TEST_CRASH_BEFORE_RECORD");
	tl_lantern(&T, &out, NULL, "run %s", spec("unrecorded", "none", NULL, NULL, NULL, "sleep 120"));
	st = tl_daemon_stop(&T, SIGKILL);
	tl_sh(&dirs, NULL, "cd %s/runs && for d in r-*; do [ -d \"$d\" ] && [ ! -e \"$d/run.json\" ] && echo \"$d\"; done",
	      T.state);
	tl_sh(&inst, NULL, "ls /sys/fs/cgroup/unified/%s | grep '^i-'", T.cgroot);
	if (inst && strchr(inst, '\n'))
		*strchr(inst, '\n') = '\0';
	tl_sh(&mnt, NULL, "grep -c '/%s ' /proc/self/mountinfo", inst && *inst ? inst : "no-instance");
	tap_ok(rc == 0 && WIFEXITED(st) && WEXITSTATUS(st) == 86 && dirs && strlen(dirs) == 15 && inst && *inst &&
	       mnt && atoi(mnt) == 1 && tl_sh(NULL, NULL, "grep -q . /sys/fs/cgroup/unified/%s/%s/cgroup.procs", T.cgroot,
					      inst) == 0,
	       "lanternd killed between a run's start and its run.json leaves a run directory without it (%s), "
	       "its live instance %s and its identity tmpfs (%s mounted)", tl_oneline(dirs), inst ? inst : "?",
	       tl_oneline(mnt));
	free(out);
	out = NULL;

	/* a journal with more than its first record (a finished run's: one with run.json),
	 * no run.json */
	tl_sh(NULL, NULL, "cd %s/runs && for d in r-*; do [ -e \"$d/run.json\" ] && [ -e \"$d/journal\" ] && "
	      "j=\"$d/journal\" && break; done; mkdir %s && cp \"$j\" %s/journal", T.state, kept, kept);
	/* a link named like a run, and one inside the leftover, to a directory outside */
	snprintf(outside, sizeof(outside), "%s/outside", T.dir);
	tl_sh(NULL, NULL, "mkdir -p %s && echo keep >%s/file && ln -s %s %s/runs/r-00c0ffee0002 && "
	      "ln -s %s %s/runs/%.14s/link", outside, outside, outside, T.state, outside, T.state, dirs ? dirs : "none");

	tl_daemon_start(&T, NULL);
	tl_lantern(&T, &out, NULL, "ps");
	tl_sh(&left, NULL, "ls -d %s/runs/%.14s /sys/fs/cgroup/*/%s/%s 2>/dev/null; grep '/%s ' /proc/self/mountinfo",
	      T.state, dirs ? dirs : "none", T.cgroot, inst ? inst : "none", inst ? inst : "none");
	tap_ok(out && !tl_has(out, "unrecorded") && left && !*left && tl_log_contains(&T, "it has no run.json"),
	       "the next lanternd loads no run from it and removes it with what its run claimed: directory, "
	       "cgroups, mount (left: %s)", tl_oneline(left));
	free(left);
	left = NULL;
	tl_sh(&left, NULL, "cd %s/runs && ls -d %s/journal && readlink r-00c0ffee0002 && cat %s/file", T.state, kept,
	      outside);
	tap_ok(left && tl_has(left, "journal") && tl_has(left, "outside") && tl_has(left, "keep") &&
	       tl_log_contains(&T, "left in place, not loaded"),
	       "a directory without run.json whose journal holds a run's history is kept (logged); a link named "
	       "like a run and a link inside a removed directory are not followed: %s", tl_oneline(left));
	tl_sh(NULL, NULL, "rm -rf %s/runs/%s %s/runs/r-00c0ffee0002 %s", T.state, kept, T.state, outside);
	free(left);
	free(out);
	free(dirs);
	free(inst);
	free(mnt);
}

static void test_timeout(void)
{
	char *out = NULL, *err = NULL;
	const char *f = spec("slow", "none", NULL, NULL, "    timeout: 1s\n", "sleep 30");
	uint64_t t0 = tl_ms();
	int rc = tl_run(&T, f, &out, &err);

	tap_ok(rc != 0 && tl_has(err, "timed_out") && tl_ms() - t0 < 10000,
	       "limits.timeout ends the run as timed_out (%llu ms)", (unsigned long long)(tl_ms() - t0));
	free(out);
	free(err);
}

static void test_fqdn(uint16_t dns_port)
{
	char rules[512], script[2048], *out = NULL, *err = NULL;
	const char *f;
	int l7 = -1;
	uint16_t p7 = port_a;

	l7 = tl_tcp_listen("127.0.0.7", &p7);
	/* the node's loopback stands in for the internet here: answers in it are learned
	 * only with a CIDR rule naming it (a port nothing listens on) */
	snprintf(rules, sizeof(rules),
		 "    - pattern: tcp://allowed.example.test:%u\n"
		 "    - pattern: \"*.wild.test\"\n"
		 "    - pattern: tcp://127.0.0.0/8:1\n", p7);
	snprintf(script, sizeof(script),
		 "P=%s; $P tcp 127.0.0.7 %u; $P dns allowed.example.test 127.0.0.53; $P tcp 127.0.0.7 %u; "
		 "$P dns blocked.test 127.0.0.53; $P tcp 127.0.0.9 %u; "
		 "$P dnstcp api.wild.test 10.255.255.53; $P udp 127.0.0.8 9; true",
		 probe, p7, p7, p7);
	f = spec("fqdn", "allowlist_domain", NULL, rules, NULL, script);
	tl_run(&T, f, &out, &err);
	const char *want = "denied\n"      /* before the lookup, the address is not allowed */
			   "127.0.0.7\n"   /* DNS to any address is redirected to lanternd's proxy */
			   "ok\n"          /* the answer opened exactly that address and port */
			   "refused\n"     /* names outside the allowlist: REFUSED */
			   "denied\n"
			   "127.0.0.8\n"   /* DNS over TCP, wildcard pattern */
			   "ok\n";
	tap_ok(out && !strcmp(out, want), "FQDN allowlist through a real dnsmasq upstream (want %s, got %s)",
	       tl_oneline(want), tl_oneline(out));
	tap_ok(tl_log_contains(&T, "\"event\":\"dns\"") && tl_log_contains(&T, "\"qname\":\"blocked.test\""),
	       "a refused name is a deny event in the log");
	free(out);
	free(err);
	if (l7 >= 0)
		close(l7);
}

/* Two instances resolve through their own proxies: what one learns never opens
 * anything for the other. */
static void test_fqdn_isolation(void)
{
	char ra[256], rb[256], sa[1024], sb[1024], go[600], ob[600], *out = NULL;
	const char *fa, *fb;
	uint16_t p7 = 0;
	int l7 = tl_tcp_listen("127.0.0.7", &p7);

	snprintf(go, sizeof(go), "%s/fqdn-go", T.dir);
	snprintf(ob, sizeof(ob), "%s/fqdn-b.out", T.dir);
	snprintf(ra, sizeof(ra), "    - pattern: tcp://allowed.example.test:%u\n    - pattern: tcp://127.0.0.0/8:1\n",
		 p7);
	snprintf(rb, sizeof(rb), "    - pattern: tcp://blocked.test:%u\n", p7);
	snprintf(sa, sizeof(sa), "%s dns allowed.example.test 127.0.0.53 >/dev/null; %s tcp 127.0.0.7 %u >/dev/null && touch %s; sleep 2",
		 probe, probe, p7, go);
	snprintf(sb, sizeof(sb), "i=0; while [ ! -e %s ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done; %s tcp 127.0.0.7 %u",
		 go, probe, p7);
	fa = spec("learner", "allowlist_domain", NULL, ra, NULL, sa);
	fb = spec("bystander", "allowlist_domain", NULL, rb, NULL, sb);
	tl_sh(NULL, NULL, "%s/lantern --socket %s run %s >/dev/null 2>&1 & "
	      "%s/lantern --socket %s run %s >%s 2>/dev/null & wait",
	      T.build, T.sock, fa, T.build, T.sock, fb, ob);
	util_read_file(ob, &out, NULL);
	tap_ok(access(go, F_OK) == 0 && out && !strcmp(out, "denied\n"),
	       "an address one instance learned from DNS stays denied for another (got %s)", tl_oneline(out));
	free(out);
	if (l7 >= 0)
		close(l7);
}

static void test_atomic_update(void)
{
	char r1[256], r2[512], script[1024], id[64], outp[600], stopf[600], *out = NULL;
	const char *f, *f2;
	int fails = 0;

	snprintf(r1, sizeof(r1), "    - pattern: tcp://127.0.0.1:%u\n", port_a);
	snprintf(r2, sizeof(r2), "    - pattern: tcp://127.0.0.0/24:%u\n    - pattern: 10.9.0.0/16\n", port_a);
	snprintf(outp, sizeof(outp), "%s/loop.out", T.dir);
	snprintf(stopf, sizeof(stopf), "%s/loop.stop", T.dir);
	/* the loop runs until the updates are done (or 120 s), however slow the machine */
	snprintf(script, sizeof(script), "%s loop 127.0.0.1 %u 120000 %s >%s", probe, port_a, stopf, outp);
	f = spec("updater", "allowlist_domain", NULL, r1, NULL, script);
	f2 = spec("updater2", "allowlist_domain", NULL, r2, NULL, "true");
	tl_sh(NULL, NULL, "%s/lantern --socket %s run %s >/dev/null 2>&1 &", T.build, T.sock, f);
	tl_running_run(&T, "updater", id, sizeof(id), 5000);
	for (int i = 0; i < 60; i++) {
		char *uerr = NULL;

		if (tl_lantern(&T, NULL, &uerr, "egress update %s %s", id, i % 2 ? f : f2) != 0) {
			if (!fails)
				tap_diag("egress update %d: %s", i, tl_oneline(uerr));
			fails++;
		}
		free(uerr);
	}
	tap_ok(fails == 0, "egress update of a running instance succeeds (%d failures)", fails);
	tl_file(&T, "loop.stop", "stop\n");
	tl_wait_file_text(outp, "ok=", 60000);
	util_read_file(outp, &out, NULL);
	tap_ok(out && tl_has(out, "denied=0 ") && tl_has(out, "other=0"),
	       "no connect was denied while the policy flipped 60 times under a connect loop (%s)",
	       tl_oneline(out));
	free(out);
}

static void test_too_many_rules(void)
{
	char path[600], *out = NULL, *err = NULL;
	FILE *fp;
	int rc;

	snprintf(path, sizeof(path), "%s/huge.yaml", T.dir);
	fp = fopen(path, "w");
	if (!fp) {
		tap_ok(false, "full map: cannot write spec");
		return;
	}
	fprintf(fp, "apiVersion: lantern.dev/v1\nkind: AgentSpec\nmetadata:\n  name: huge\nspec:\n"
		    "  image_digest: host\n  isolation: trusted\n  command: [\"true\"]\n  egress_rules:\n");
	for (int i = 0; i < 70000; i++)
		fprintf(fp, "    - pattern: 10.%d.%d.%d\n", i >> 16, (i >> 8) & 255, i & 255);
	fclose(fp);
	rc = tl_run(&T, path, &out, &err);
	tap_ok(rc != 0 && tl_has(err, "65534"), "more egress rules than a policy can index are refused: %s", tl_oneline(err));
	free(out);
	free(err);
}

static char *big_spec(const char *name, int base, const char *script)
{
	char path[600];
	FILE *fp;

	snprintf(path, sizeof(path), "%s/%s.yaml", T.dir, name);
	fp = fopen(path, "w");
	if (!fp)
		return NULL;
	fprintf(fp, "apiVersion: lantern.dev/v1\nkind: AgentSpec\nmetadata:\n  name: %s\nspec:\n"
		    "  image_digest: host\n  isolation: trusted\n  command: [\"/bin/sh\", \"-c\"]\n"
		    "  args: [\"%s\"]\n  egress_rules:\n    - pattern: tcp://127.0.0.1:%u\n", name, script, port_a);
	for (int i = 0; i < 40000; i++)
		fprintf(fp, "    - pattern: 10.%d.%d.%d\n", base + (i >> 16), (i >> 8) & 255, i & 255);
	fclose(fp);
	return strdup(path);
}

/* Two instances of 40,000 entries do not fit the 65,536-entry map: the second is
 * refused whole and the first keeps its policy. */
static void test_full_map(void)
{
	char script[1024], go[600], outp[600], id[64], *out = NULL, *err = NULL;
	char *fa, *fb;
	int rc;

	snprintf(go, sizeof(go), "%s/go", T.dir);
	snprintf(outp, sizeof(outp), "%s/big.out", T.dir);
	snprintf(script, sizeof(script),
		 "while [ ! -e %s ]; do sleep 0.05; done; %s tcp 127.0.0.1 %u >%s; %s tcp 127.0.0.1 %u >>%s",
		 go, probe, port_a, outp, probe, port_b, outp);
	fa = big_spec("big-a", 1, script);
	fb = big_spec("big-b", 2, "true");
	tl_sh(NULL, NULL, "%s/lantern --socket %s run %s >/dev/null 2>&1 &", T.build, T.sock, fa);
	tl_running_run(&T, "big-a", id, sizeof(id), 10000);
	rc = tl_run(&T, fb, &out, &err);
	tap_ok(rc != 0 && tl_has(err, "full"), "a policy that does not fit the map is refused: %s", tl_oneline(err));
	tap_ok(count_cgroup_children() == 1, "the refused spawn left no cgroup behind");
	tl_sh(NULL, NULL, "touch %s", go);
	free(out);
	out = NULL;
	tl_wait_file_text(outp, "denied", 10000);
	util_read_file(outp, &out, NULL);
	tap_ok(out && !strcmp(out, "ok\ndenied\n"), "the instance already in the map keeps its policy (got %s)",
	       tl_oneline(out));
	free(out);
	free(err);
	free(fa);
	free(fb);
}

static void test_socket_perms(void)
{
	struct stat st;
	pid_t pid;
	int status = 0;

	tap_ok(stat(T.sock, &st) == 0 && (st.st_mode & 0777) == 0600, "lanternd's socket is mode 0600");
	pid = fork();
	if (pid == 0) {
		struct sockaddr_un a = { .sun_family = AF_UNIX };
		char buf[256] = { 0 };
		int fd;

		chmod(T.sock, 0666); /* even if the mode were loosened, the uid check refuses */
		chmod(T.dir, 0755);
		if (setgid(65534) < 0 || setuid(65534) < 0)
			_exit(3);
		fd = socket(AF_UNIX, SOCK_STREAM, 0);
		snprintf(a.sun_path, sizeof(a.sun_path), "%s", T.sock);
		if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
			_exit(4);
		/* no request: lanternd answers the refusal on accept, before any */
		if (read(fd, buf, sizeof(buf) - 1) > 0 && strstr(buf, "permission denied"))
			_exit(0);
		_exit(1);
	}
	waitpid(pid, &status, 0);
	chmod(T.sock, 0600);
	chmod(T.dir, 0700);
	tap_ok(WIFEXITED(status) && WEXITSTATUS(status) == 0,
	       "a non-root caller is refused by credentials, not only by the file mode");
}

static void test_no_process_runtime(void)
{
	struct tl_env t2;
	char *out = NULL, *err = NULL;
	const char *f;

	tl_env_init(&t2, "noproc");
	t2.no_process_runtime = true;
	if (tl_daemon_start(&t2, "--dns-upstream 127.0.0.1:1") < 0) {
		tap_ok(false, "second lanternd (no --process-runtime) starts beside the first");
		tl_env_cleanup(&t2);
		return;
	}
	f = tl_file(&t2, "p.yaml", "apiVersion: lantern.dev/v1\nkind: AgentSpec\nmetadata:\n  name: p\n"
		    "spec:\n  image_digest: host\n  isolation: trusted\n  command: [\"true\"]\n");
	tap_ok(tl_lantern(&t2, &out, &err, "run %s", f) != 0 && tl_has(err, "process-runtime"),
	       "a second lanternd side by side without --process-runtime refuses host processes with a reason");
	free(out);
	free(err);
	tl_env_cleanup(&t2);
}

static void test_reset(void)
{
	char path[600];
	struct stat st;

	tl_daemon_stop(&T, SIGTERM);
	tap_ok(tl_sh(NULL, NULL, "%s/lantern --socket %s reset --state-dir %s --bpffs %s --cgroup-root %s",
		     T.build, T.sock, T.state, T.bpffs, T.cgroot) == 0 &&
	       stat(T.bpffs, &st) < 0 && stat(T.state, &st) < 0 &&
	       (snprintf(path, sizeof(path), "/sys/fs/cgroup/unified/%s", T.cgroot), stat(path, &st) < 0),
	       "lantern reset removes pins, cgroups and state");
}

int main(void)
{
	const char *missing = tl_env_missing();
	uint16_t dns_port = 0;
	char extra[128], log[400];

	tap_start();
	if (missing) {
		tap_skip(missing, "lanternd end-to-end tests");
		return tap_done_plan();
	}
	if (tl_env_init(&T, "lanternd") < 0) {
		tap_ok(false, "test environment");
		return tap_done_plan();
	}
	snprintf(probe, sizeof(probe), "%s/tests/netprobe", T.build);
	lfd[0] = tl_tcp_listen("127.0.0.1", &port_a);
	lfd[1] = tl_tcp_listen("127.0.0.1", &port_b);
	lfd[2] = tl_tcp_listen("127.0.0.2", &port_c);
	lfd[3] = tl_tcp_listen("::1", &port6);
	/* the same port on 127.0.0.2, so "denied" never means "no listener" */
	lfd[4] = tl_tcp_listen("127.0.0.2", &port_b);
	for (int i = 0; i < 5; i++)
		tl_acceptor(lfd[i], NULL);
	snprintf(log, sizeof(log), "%s/dnsmasq.log", T.dir);
	if (tl_dnsmasq_start(&dns_port, log, "--host-record=allowed.example.test,127.0.0.7",
			     "--host-record=api.wild.test,127.0.0.8", "--host-record=blocked.test,127.0.0.9",
			     "--local-ttl=60", (char *)NULL) < 0)
		tap_diag("dnsmasq did not start: the FQDN points will fail");
	snprintf(extra, sizeof(extra), "--dns-upstream 127.0.0.1:%u", dns_port);
	if (!tap_ok(tl_daemon_start(&T, extra) == 0, "lanternd starts with a private state dir, socket, pin root and cgroup root")) {
		tl_env_cleanup(&T);
		return tap_done_plan();
	}
	test_admission();
	test_basic();
	test_protocols();
	test_modes();
	test_two_instances();
	test_fqdn(dns_port);
	test_fqdn_isolation();
	test_timeout();
	test_atomic_update();
	test_too_many_rules();
	test_full_map();
	test_socket_perms();
	test_no_process_runtime();
	test_crash_and_adopt();
	test_crash_before_record();
	test_reset();
	for (size_t i = 0; i < ARRAY_SIZE(lfd); i++)
		if (lfd[i] > 0)
			close(lfd[i]);
	/* dnsmasq and the acceptors are stopped at exit (testlib) */
	tl_env_cleanup(&T);
	return tap_done_plan();
}
