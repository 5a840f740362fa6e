/* oci_dns_test: hostname (FQDN) egress rules for OCI spawns on the node bridge, end to
 * end with a private lanternd, the real runtimes (runc, and runsc with --network=host
 * inside the spawn's namespace) and a dnsmasq upstream on loopback. A spawn whose only
 * rule is tcp://allowed.example.test:PORT cannot connect before it resolves the name;
 * its query to any nameserver reaches the instance's DNS proxy on the bridge's address
 * (the answer appears to come from the nameserver it asked); after the answer the
 * answered address is reachable on PORT; another name is REFUSED and its address stays
 * denied.
 *
 * Network traffic stays on this machine: the names resolve to the test bridge's own
 * address (a listener of this test) and to an unused address of the bridge's subnet;
 * spawns have no default route; the nameserver they ask is an unused address of the
 * bridge's subnet, which the egress programs redirect to the proxy. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tap.h"
#include "testlib.h"
#include "lantern/util.h"

#define NPOINTS 14

static struct tl_env T;
static struct tl_net net;
static char image[256], ns_addr[32], denied_addr[32];

/* The bridge lanternd made; after the daemon is stopped and reset (testlib), in case
 * reset did not get that far. */
static void remove_bridge(void)
{
	tl_sh(NULL, NULL, "ip link del %s 2>/dev/null", net.bridge);
}

/* dnsmasq on 127.0.0.1, answering the two test names with addresses of the bridge's
 * subnet; returns its port, 0 on failure. */
static uint16_t start_dnsmasq(void)
{
	char rec1[128], rec2[128];
	uint16_t port = 0;

	snprintf(rec1, sizeof(rec1), "--host-record=allowed.example.test,%s", net.gw);
	snprintf(rec2, sizeof(rec2), "--host-record=denied.example.test,%s", denied_addr);
	return tl_dnsmasq_start(&port, NULL, "--local-ttl=300", rec1, rec2, (char *)NULL) < 0 ? 0 : port;
}

static const char *spec(const char *name, const char *iso, uint16_t port)
{
	char script[1024];

	/* before the answer, the answer, after it; the refused name, its address */
	snprintf(script, sizeof(script),
		 "nc -w 2 %s %u </dev/null 2>&1; echo =1; nslookup allowed.example.test %s 2>&1; "
		 "echo =2; nc -w 2 %s %u </dev/null 2>&1; echo =3; nslookup denied.example.test %s 2>&1; "
		 "echo =4; nc -w 2 %s %u </dev/null 2>&1; echo =5; sleep 0.3",
		 net.gw, port, ns_addr, net.gw, port, ns_addr, denied_addr, port);
	return tl_spec(&T, name, NULL, script,
		       "  image_digest: %s\n  isolation: %s\n  network: allowlist_domain\n"
		       "  egress_rules:\n    - pattern: tcp://allowed.example.test:%u\n"
		       /* the answer is the node's own (bridge) address: learned only with a
			* CIDR rule naming it, on a port nothing listens on */
		       "    - pattern: tcp://%s:1\n",
		       image, iso, port, net.gw);
}

/* The part of out between the markers =N-1 and =N. */
static const char *part(const char *out, int n, char *buf, size_t len)
{
	char m[8];
	const char *a = out, *b;

	buf[0] = '\0';
	if (!out)
		return buf;
	if (n > 0) {
		snprintf(m, sizeof(m), "=%d\n", n);
		a = strstr(out, m);
		if (!a)
			return buf;
		a += strlen(m);
	}
	snprintf(m, sizeof(m), "=%d\n", n + 1);
	b = strstr(a, m);
	if (!b)
		return buf;
	snprintf(buf, len, "%.*s", (int)(b - a), a);
	return buf;
}

static void test_iso(const char *iso, const char *handler, uint16_t port)
{
	char *out = NULL, *err = NULL, p[5][512];
	int rc;

	rc = tl_lantern(&T, &out, &err, "run %s", spec(iso, iso, port));
	for (int i = 0; i < 5; i++)
		part(out, i, p[i], sizeof(p[i]));
	tap_ok(rc == 0, "%s (%s): a spec with a hostname egress rule is admitted and runs: %s", iso,
	       handler, rc ? tl_oneline(err) : "ok");
	tap_ok(tl_has(p[0], "Operation not permitted") && !tl_has(p[0], "pong"),
	       "%s: before resolving, %s:%u is denied: %s", iso, net.gw, port, tl_oneline(p[0]));
	tap_ok(tl_has(p[1], "allowed.example.test") && tl_has(p[1], net.gw) && tl_has(p[1], ns_addr),
	       "%s: nslookup via nameserver %s (redirected to the proxy on the bridge) answers %s: %s",
	       iso, ns_addr, net.gw, tl_oneline(p[1]));
	tap_ok(tl_has(p[2], "pong"), "%s: after the answer, %s:%u connects: %s", iso, net.gw, port, tl_oneline(p[2]));
	tap_ok(tl_has(p[3], "REFUSED") && !tl_has(p[3], denied_addr) && tl_has(p[4], "Operation not permitted"),
	       "%s: denied.example.test is REFUSED and %s:%u stays denied: %s", iso, denied_addr, port,
	       tl_oneline(p[3]));
	free(out);
	free(err);
}

/* A runc spawn started with address rules only gets a hostname rule by `lantern egress
 * update`: its new proxy listens on the bridge's address too. */
static void test_update(uint16_t port)
{
	char *out = NULL, id[32] = "", inst[32] = "", outf[400], script[256];
	const char *upd = spec("upd-new", "trusted", port), *f;
	int rc;

	snprintf(script, sizeof(script), "sleep 2; nslookup allowed.example.test %s 2>&1; nc -w 2 %s %u </dev/null 2>&1",
		 ns_addr, net.gw, port);
	f = tl_spec(&T, "upd", NULL, script,
		    "  image_digest: %s\n  isolation: trusted\n  network: allowlist_domain\n"
		    "  egress_rules:\n    - pattern: tcp://%s:9\n",
		    image, net.gw);

	snprintf(outf, sizeof(outf), "%s/upd.out", T.dir);
	tl_sh(NULL, NULL, "%s/lantern --socket %s run %s >%s 2>&1 &", T.build, T.sock, f, outf);
	tl_sh(NULL, NULL, "for i in $(seq 50); do %s/lantern --socket %s ps | grep -q 'upd .*running' && break; sleep 0.05; done",
	      T.build, T.sock);
	tl_lantern(&T, &out, NULL, "ps | grep ' upd '");
	if (out)
		sscanf(out, "%31s %31s", id, inst);
	free(out);
	rc = tl_lantern(&T, NULL, NULL, "egress update %s %s", id, upd);
	tl_sh(NULL, NULL, "for i in $(seq 100); do grep -q 'pong\\|connect' %s && break; sleep 0.05; done", outf);
	tl_sh(&out, NULL, "cat %s", outf);
	tap_ok(rc == 0 && tl_has(out, "Address: ") && tl_has(out, net.gw) && tl_has(out, "pong"),
	       "runc: a policy update adding a hostname rule opens the proxy on the bridge too: %s", tl_oneline(out));
	free(out);
}

int main(void)
{
	const char *missing = tl_env_missing();
	char extra[512], dir[400];
	uint16_t up, port = 0;
	int lfd, rc;

	tap_plan(NPOINTS);
	if (missing || access("/usr/sbin/runc", X_OK) || access("/usr/bin/runsc", X_OK) ||
	    access("/usr/sbin/dnsmasq", X_OK)) {
		for (int i = 0; i < NPOINTS; i++)
			tap_skip(missing ? missing : "runc, runsc and dnsmasq are not installed (make deps)",
				 "oci dns point %d", i + 1);
		return tap_failures ? 1 : 0;
	}
	tl_env_init(&T, "ocidns");
	tl_net_init(&net, "ld", 150);
	tl_on_exit(remove_bridge);
	tl_net_addr(&net, 253, ns_addr, sizeof(ns_addr));
	tl_net_addr(&net, 250, denied_addr, sizeof(denied_addr));
	up = start_dnsmasq();
	snprintf(extra, sizeof(extra), "--net-bridge %s --net-subnet %s --dns-upstream 127.0.0.1:%u", net.bridge,
		 net.subnet, up);
	if (!tap_ok(up && tl_daemon_start(&T, extra) == 0, "dnsmasq on 127.0.0.1:%u; lanternd starts with it as "
		    "its DNS upstream", up))
		return 1;
	snprintf(dir, sizeof(dir), "%s/img", T.dir);
	rc = tl_mkimage(dir, "test/busybox:1", image, sizeof(image));
	rc = rc ?: tl_lantern(&T, NULL, NULL, "image import %s", dir);
	tap_ok(rc == 0 && tl_has(image, "@sha256:"), "the busybox image is built and imported: %s", image);

	/* the answered address is the bridge's own: a listener of this test */
	lfd = tl_tcp_listen("0.0.0.0", &port);
	tl_acceptor(lfd, "pong\n");
	close(lfd);
	test_iso("trusted", "runc", port);
	test_iso("standard", "runsc", port);
	test_update(port);
	tap_ok(tl_log_contains(&T, "denied.example.test"), "lanternd records the refused query");
	return tap_failures ? 1 : 0;
}
