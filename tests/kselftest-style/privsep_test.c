/* privsep_test: what a workload's bytes meet. lanternd runs as root; what a workload
 * sends to its harness socket (and DNS proxy) is read by lantern-wire, which lanternd
 * starts as nobody, chrooted to an empty directory, with no capabilities, no new
 * privileges and a seccomp allowlist. This test checks that shape from /proc, then
 * attacks the harness socket from inside a run (tests/kselftest-style/helpers/
 * harness_flood): 10,000 pipelined requests, a client that never reads, more
 * connections than a run may hold, malformed requests, 40 steps with 8 MB results, and
 * lantern-wire killed in the middle of a run's steps and between two DNS lookups. lanternd must stay up and answer `lantern ps` quickly
 * throughout, and the run must finish. */
#include <dirent.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tap.h"
#include "testlib.h"
#include "lantern/util.h"

#define NPOINTS 10

static struct tl_env T;
static char daemon_flags[64]; /* --dns-upstream at the test's dnsmasq */

/* lantern-wire serving T (its --root is T's state dir's wire/), or 0. */
static pid_t wire_pid(void)
{
	char want[400], path[64], buf[1024];
	DIR *d = opendir("/proc");
	struct dirent *de;
	pid_t found = 0;

	snprintf(want, sizeof(want), "%s/wire", T.state);
	while (d && (de = readdir(d)) && !found) {
		FILE *f;
		size_t n;

		if (de->d_name[0] < '0' || de->d_name[0] > '9')
			continue;
		snprintf(path, sizeof(path), "/proc/%s/cmdline", de->d_name);
		if (!(f = fopen(path, "r")))
			continue;
		n = fread(buf, 1, sizeof(buf) - 1, f);
		fclose(f);
		buf[n] = '\0';
		/* argv is NUL-separated: argv[0] first, --root's value somewhere after */
		if (strcmp(buf, "lantern-wire"))
			continue;
		for (size_t i = 0; i < n; i += strlen(buf + i) + 1)
			if (!strcmp(buf + i, want))
				found = atoi(de->d_name);
	}
	if (d)
		closedir(d);
	return found;
}

/* The value of a /proc/PID/status field, "" if none (static, rotated over 16). */
static const char *status_field(pid_t pid, const char *name)
{
	static char vals[16][128];
	static int k;
	char path[64], line[256], *v = vals[k++ % 16];
	size_t nl = strlen(name);
	FILE *f;

	v[0] = '\0';
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	if (!(f = fopen(path, "r")))
		return v;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, name, nl) && line[nl] == ':') {
			char *s = line + nl + 1;
			s += strspn(s, " \t");
			s[strcspn(s, "\n")] = '\0';
			snprintf(v, 128, "%s", s);
			break;
		}
	fclose(f);
	return v;
}

static long rss_kb(pid_t pid)
{
	return atol(status_field(pid, "VmRSS"));
}

/* A run whose workload is SCRIPT (the helper is $F), on the process runtime. */
static const char *flood_spec(const char *name, const char *script)
{
	char s[1024];

	snprintf(s, sizeof(s), "F=%s/tests/harness_flood; %s", T.build, script);
	return tl_spec(&T, name, NULL, s,
		       "  image_digest: host\n  isolation: trusted\n  network: none\n"
		       "  limits:\n    memory: 512Mi\n");
}

/* n `lantern ps`, 100 ms apart: the median and the slowest, in ms. */
static void ps_times(int n, uint64_t *median, uint64_t *worst)
{
	uint64_t t[32];

	n = n > 32 ? 32 : n;
	for (int i = 0; i < n; i++) {
		uint64_t t0 = tl_ms();
		tl_lantern(&T, NULL, NULL, "ps");
		t[i] = tl_ms() - t0;
		for (int j = i; j > 0 && t[j - 1] > t[j]; j--) {
			uint64_t x = t[j];
			t[j] = t[j - 1];
			t[j - 1] = x;
		}
		usleep(100000);
	}
	*median = t[n / 2];
	*worst = t[n - 1];
}

static void test_shape(void)
{
	pid_t w = wire_pid();
	char root[PATH_MAX], link[64], want[400];
	ssize_t n;

	char wnet[64] = "", dnet[64] = "";

	snprintf(link, sizeof(link), "/proc/%d/root", (int)w);
	n = w ? readlink(link, root, sizeof(root) - 1) : -1;
	root[n > 0 ? n : 0] = '\0';
	snprintf(link, sizeof(link), "/proc/%d/ns/net", (int)w);
	n = readlink(link, wnet, sizeof(wnet) - 1);
	wnet[n > 0 ? n : 0] = '\0';
	snprintf(link, sizeof(link), "/proc/%d/ns/net", (int)T.daemon);
	n = readlink(link, dnet, sizeof(dnet) - 1);
	dnet[n > 0 ? n : 0] = '\0';
	snprintf(want, sizeof(want), "%s/wire", T.state);
	tap_ok(w > 0 && !strcmp(status_field(w, "Uid"), "65534\t65534\t65534\t65534") &&
		       !strcmp(status_field(w, "Gid"), "65534\t65534\t65534\t65534") &&
		       !strcmp(status_field(w, "Groups"), "") &&
		       !strcmp(status_field(w, "CapEff"), "0000000000000000") &&
		       !strcmp(status_field(w, "CapPrm"), "0000000000000000") &&
		       !strcmp(status_field(w, "NoNewPrivs"), "1") &&
		       !strcmp(status_field(w, "Seccomp"), "2") && !strcmp(root, want) && wnet[0] && dnet[0] &&
		       strcmp(wnet, dnet),
	       "lantern-wire (pid %d) runs as nobody, no groups, no capabilities, no new privileges, "
	       "under a seccomp filter, chrooted to %s, in a network namespace of its own (uid %s, "
	       "caps %s, nnp %s, seccomp %s, root %s, net %s vs lanternd's %s)",
	       (int)w, want, status_field(w, "Uid"), status_field(w, "CapEff"),
	       status_field(w, "NoNewPrivs"), status_field(w, "Seccomp"), root, wnet, dnet);
}

static void test_floods(void)
{
	char *out = NULL, *err = NULL, id[64];
	pid_t w0 = wire_pid(), d0 = T.daemon;
	uint64_t t0 = tl_ms(), median, worst;
	long wrss0 = rss_kb(w0), drss0 = rss_kb(d0), wrss, drss;
	int rc;

	rc = tl_run(&T, flood_spec("pipeline", "$F pipeline 10000"), &out, &err);
	tap_ok(rc == 0 && tl_has(out, "answered 10000 of 10000") && wire_pid() == w0 &&
		       kill(d0, 0) == 0,
	       "10,000 pipelined requests on one connection are all answered, lanternd and "
	       "lantern-wire unharmed (%s, %llu ms)", tl_oneline(out), (unsigned long long)(tl_ms() - t0));
	free(out);
	free(err);

	/* a client that pipelines 2,000 requests for its input (256 KiB each) and never
	 * reads the answers: what is held for it must stay bounded, and lanternd answers */
	tl_sh(NULL, NULL, "{ printf '{\"pad\":\"'; head -c 262144 /dev/zero | tr '\\0' a; printf '\"}'; } >%s/big.json",
	      T.dir);
	tl_sh(NULL, NULL, "%s/lantern --socket %s run --input %s/big.json %s >%s/noread.out 2>&1 &", T.build,
	      T.sock, T.dir, flood_spec("noread", "$F noread 2000 6"), T.dir);
	tl_running_run(&T, "noread", id, sizeof(id), 10000);
	sleep(3);
	ps_times(11, &median, &worst);
	wrss = rss_kb(wire_pid());
	drss = rss_kb(d0);
	tl_sh(&out, NULL, "cat %s/noread.out", T.dir);
	tap_ok(wire_pid() == w0 && tl_has(out, "held (") && wrss - wrss0 < 96 * 1024 &&
		       drss - drss0 < 64 * 1024 && median < 100 && worst < 1000,
	       "a client that pipelines requests for its 256 KiB input and never reads the answers: "
	       "lantern-wire grows %ld KiB (< 96 MiB), lanternd %ld KiB (< 64 MiB), lantern ps (the CLI "
	       "started and answered) takes %llu ms median of 11 (< 100), %llu ms at worst (< 1000) (%s)",
	       wrss - wrss0, drss - drss0, (unsigned long long)median, (unsigned long long)worst,
	       tl_oneline(out));
	free(out);
	out = NULL;
	tl_lantern(&T, NULL, NULL, "kill %s", id);

	rc = tl_run(&T, flood_spec("conns", "$F conns 64 3"), &out, &err);
	{
		int answered = -1, refused = -1, n = 0;
		const char *p = out ? strstr(out, "answered ") : NULL;
		if (p)
			sscanf(p, "answered %d refused %d of %d", &answered, &refused, &n);
		tap_ok(rc == 0 && answered == 16 && refused == 48 && kill(d0, 0) == 0,
		       "64 connections at once: 16 are served, the other 48 closed at once (%s)", tl_oneline(out));
	}
	free(out);
	free(err);

	rc = tl_run(&T, flood_spec("garbage", "$F garbage"), &out, &err);
	{
		int lines = 0, bad = 0;
		char *copy = strdup(out ? out : "");
		for (char *save = NULL, *l = strtok_r(copy, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
			if (strstr(l, "lantern:"))
				continue;
			lines++;
			if (!strstr(l, ": HTTP/1.1 4"))
				bad++;
		}
		free(copy);
		/* the one cut short by the client's EOF (its body is a byte short) is not
		 * answered: there is no request to answer */
		tap_ok(rc == 0 && lines == 12 && bad == 1 && tl_has(out, "11: (closed)") && wire_pid() == w0,
		       "malformed requests (bad request lines, signed, huge or repeated lengths, chunked "
		       "bodies, truncated or non-object JSON, path tricks) each get a 4xx, a request cut "
		       "short by EOF is closed unanswered, lantern-wire survives (%s)", tl_oneline(out));
	}
	free(out);
	free(err);
}

/* 40 steps with 8 MB results (a compressible 320 MB): lanternd keeps offsets, not
 * results, so neither the run nor its replay after a restart holds them. */
static void test_big_results(void)
{
	char *out = NULL, id[64] = "";
	long base = rss_kb(T.daemon), during = 0, after = 0;
	bool replayed = false;

	tl_sh(NULL, NULL, "%s/lantern --socket %s run %s >%s/big.out 2>&1 &", T.build, T.sock,
	      flood_spec("bigsteps", "$F bigsteps 40 8000000 120"), T.dir);
	tl_running_run(&T, "bigsteps", id, sizeof(id), 10000);
	for (uint64_t end = tl_ms() + 120000; tl_ms() < end && !tl_has(out, "completed"); usleep(200000)) {
		free(out);
		out = NULL;
		tl_sh(&out, NULL, "cat %s/big.out", T.dir);
	}
	during = rss_kb(T.daemon);
	/* lanternd dies and comes back: the run is adopted and its journal replayed */
	tl_daemon_stop(&T, SIGKILL);
	if (tl_daemon_start(&T, daemon_flags) == 0) {
		for (uint64_t end = tl_ms() + 20000; tl_ms() < end && !replayed; usleep(100000))
			replayed = tl_log_contains(&T, "journal replayed: 81 records");
		after = rss_kb(T.daemon);
	}
	tap_ok(tl_has(out, "completed 40 of 40") && replayed && during - base < 64 * 1024 &&
		       after - base < 64 * 1024,
	       "40 steps with 8 MB results: lanternd holds %ld KiB more than at start while the run "
	       "lives and %ld KiB after a restart replayed its journal (each < 64 MiB; results are read "
	       "back from the journal when asked for) (%s)",
	       during - base, after - base, tl_oneline(out));
	tl_lantern(&T, NULL, NULL, "kill %s", id);
	free(out);
}

static void test_wire_dies(void)
{
	char *out = NULL, *err = NULL, id[64] = "", script[512];
	pid_t w0 = wire_pid(), w1 = 0;
	int rc, restarted = 0;

	/* 40 steps, a little apart; lantern-wire is killed three times while they run */
	snprintf(script, sizeof(script),
		 "i=0; while [ $i -lt 40 ]; do i=$((i+1)); $LANTERN_CLI step s$i -- echo $i >/dev/null || exit 7; "
		 "sleep 0.05; done; echo all-done");
	tl_sh(NULL, NULL, "%s/lantern --socket %s run %s >%s/steps.out 2>&1 &", T.build, T.sock,
	      tl_spec(&T, "steps", NULL, script,
		      "  image_digest: host\n  isolation: trusted\n  network: none\n"),
	      T.dir);
	tl_running_run(&T, "steps", id, sizeof(id), 10000);
	for (int k = 0; k < 3; k++) {
		pid_t w = wire_pid();

		usleep(400000);
		if (w > 0)
			kill(w, SIGKILL);
		for (uint64_t end = tl_ms() + 3000; tl_ms() < end; usleep(20000))
			if ((w1 = wire_pid()) > 0 && w1 != w) {
				restarted++;
				break;
			}
	}
	for (uint64_t end = tl_ms() + 60000; tl_ms() < end; usleep(100000)) {
		free(out);
		out = NULL;
		tl_sh(&out, NULL, "cat %s/steps.out", T.dir);
		if (tl_has(out, "succeeded") || tl_has(out, "failed") || tl_has(out, "exceeded"))
			break;
	}
	rc = tl_lantern(&T, &err, NULL, "journal %s", id);
	tap_ok(restarted == 3 && w1 != w0 && tl_has(out, "all-done") && rc == 0 &&
		       tl_has(err, "step_completed  s40 ") && tl_has(err, "run_completed   succeeded") &&
		       tl_log_contains(&T, "lantern-wire (pid"),
	       "lantern-wire killed three times during a run's 40 steps: started again each time "
	       "(%d of 3), the workload's calls retried, the run succeeds with every step journaled (%s)",
	       restarted, tl_oneline(out));
	free(out);
	free(err);
}

/* DNS goes through lantern-wire (which has no network: lanternd asks the upstream); a
 * query sent while lantern-wire is down waits in the socket lanternd keeps, and is
 * answered by the next one. */
static void test_dns_restart(void)
{
	char *out = NULL, *err = NULL, id[64] = "", script[512];
	pid_t w = wire_pid();

	snprintf(script, sizeof(script),
		 "P=%s/tests/netprobe; $P dns one.privsep.test 127.0.0.53; sleep 2; "
		 "$P dns two.privsep.test 127.0.0.53; $P dns other.test 127.0.0.53",
		 T.build);
	tl_sh(NULL, NULL, "%s/lantern --socket %s run %s >%s/dns.out 2>&1 &", T.build, T.sock,
	      tl_spec(&T, "dns", NULL, script,
		      "  image_digest: host\n  isolation: trusted\n  network: allowlist_domain\n"
		      "  egress_rules:\n    - pattern: \"*.privsep.test\"\n"),
	      T.dir);
	tl_running_run(&T, "dns", id, sizeof(id), 10000);
	usleep(1000000);
	if (w > 0)
		kill(w, SIGKILL);
	for (uint64_t end = tl_ms() + 20000; tl_ms() < end; usleep(100000)) {
		free(out);
		out = NULL;
		tl_sh(&out, NULL, "cat %s/dns.out", T.dir);
		if (tl_has(out, "succeeded") || tl_has(out, "failed"))
			break;
	}
	tap_ok(tl_has(out, "127.0.0.21\n127.0.0.22\nrefused\n") && wire_pid() > 0 && wire_pid() != w,
	       "DNS through lantern-wire: allowed names answered by the upstream lanternd asks, others "
	       "refused; lantern-wire killed between two lookups, the second is answered by the next "
	       "one (%s)", tl_oneline(out));
	free(out);
	free(err);
}

static void test_no_privsep(void)
{
	char *out = NULL, *err = NULL;
	int rc;

	tl_daemon_stop(&T, SIGTERM);
	if (tl_daemon_start(&T, "--no-privsep --dns-upstream 127.0.0.1:1") < 0) {
		tap_ok(false, "lanternd --no-privsep starts");
		return;
	}
	rc = tl_run(&T, flood_spec("inproc", "$F pipeline 100 && $LANTERN_CLI step one -- echo stepped"),
		    &out, &err);
	tap_ok(wire_pid() == 0 && rc == 0 && tl_has(out, "answered 100 of 100") && tl_has(out, "stepped"),
	       "--no-privsep: no lantern-wire, lanternd serves the harness itself (%s)", tl_oneline(out));
	free(out);
	free(err);
}

int main(void)
{
	const char *missing = tl_env_missing();
	uint16_t dns_port = 0;

	tap_plan(NPOINTS);
	if (missing) {
		for (int i = 0; i < NPOINTS; i++)
			tap_skip(missing, "privilege separation");
		return tap_done();
	}
	if (tl_dnsmasq_start(&dns_port, NULL, "--host-record=one.privsep.test,127.0.0.21",
			     "--host-record=two.privsep.test,127.0.0.22", (char *)NULL) < 0)
		tap_diag("dnsmasq did not start: the DNS point will fail");
	snprintf(daemon_flags, sizeof(daemon_flags), "--dns-upstream 127.0.0.1:%u", dns_port);
	if (tl_env_init(&T, "privsep") < 0 || tl_daemon_start(&T, daemon_flags) < 0) {
		tap_ok(false, "lanternd starts");
		tl_env_cleanup(&T);
		return tap_done();
	}
	test_shape();
	tap_ok(tl_log_contains(&T, "lantern-wire running as pid"), "lanternd says lantern-wire runs, as whom and where");
	test_floods();
	test_big_results();
	test_wire_dies();
	test_dns_restart();
	test_no_privsep();
	tl_env_cleanup(&T);
	return tap_done();
}
