/* enforce.c: lantern's side of the egress benchmark, through the project's own
 * modules: a private cgroup subtree with one instance cgroup (cgroup), and the
 * egress programs loaded, pinned under a private root and attached to that subtree
 * (lbpf), with the instance's allowlist installed the way lanternd installs it. */
#include "bench.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lantern/lbpf.h"
#include "lantern/policy.h"

#define CGROUP_MOUNT "/sys/fs/cgroup/"

int lantern_setup(struct lantern_side *s, struct lerr *e)
{
	struct spec_limits lim = { 0 }; /* no memory or cpu limit: they would time too */
	int err;

	snprintf(s->root, sizeof(s->root), "lantern-bench-%d", (int)getpid());
	snprintf(s->pin_root, sizeof(s->pin_root), "/sys/fs/bpf/%s", s->root);
	err = cgroup_node_open(s->root, &s->node, e);
	if (err)
		return err;
	s->have_node = true;
	err = cgroup_inst_create(&s->node, "bench", &lim, 4096, &s->inst, e);
	if (err)
		return err;
	s->have_inst = true;
	return 0;
}

int lantern_attach(struct lantern_side *s, struct lerr *e)
{
	struct lbpf_opts o = {
		.pin_root = s->pin_root,
		.cgroup_path = s->node.v2,
		.instance_level = s->node.instance_level,
		.dns_ip4 = htonl(INADDR_LOOPBACK),
		.dns_ip6 = in6addr_loopback.s6_addr,
	};
	bool adopted = false;

	return lbpf_open(&o, &s->bpf, &adopted, e);
}

/* The policy lanternd would compile from "egress_rules: [127.0.0.1, 10.0.0.1, ...]":
 * one /32 per address, TCP and UDP, every port. */
int lantern_policy(struct lantern_side *s, size_t n, struct lerr *e)
{
	struct policy p = { .mode = LANTERN_NET_ALLOWLIST };
	int err;

	p.n_rules = p.n_entries = n + 1;
	p.rules = calloc(n + 1, sizeof(*p.rules));
	p.entries = calloc(n + 1, sizeof(*p.entries));
	if (!p.rules || !p.entries) {
		free(p.rules);
		free(p.entries);
		return lerr_set(e, ENOMEM, "bench: no memory for a policy of %zu entries", n + 1);
	}
	for (size_t i = 0; i <= n; i++) {
		uint32_t a = i == 0 ? htonl(INADDR_LOOPBACK) : bench_other_addr(i - 1);
		struct policy_rule *r = &p.rules[i];
		struct policy_entry *pe = &p.entries[i];

		r->protos = LANTERN_PROTO_TCP | LANTERN_PROTO_UDP;
		r->port_lo = 0;
		r->port_hi = 65535;
		r->addr[10] = r->addr[11] = 0xff;
		memcpy(&r->addr[12], &a, 4);
		r->prefix = 128;
		r->v4 = true;
		r->index = (uint16_t)i;

		memcpy(pe->addr, r->addr, 16);
		pe->prefix = 128;
		pe->val.nslots = 1;
		pe->val.slot[0].port_lo = 0;
		pe->val.slot[0].port_hi = 65535;
		pe->val.slot[0].protos = r->protos;
		pe->val.slot[0].rule = r->index;
	}
	err = lbpf_instance_set(s->bpf, s->inst.id, &p, 0, NULL, 0, e);
	free(p.rules);
	free(p.entries);
	return err;
}

int lantern_detach(struct lantern_side *s, struct lerr *e)
{
	if (s->bpf) {
		lbpf_close(s->bpf);
		s->bpf = NULL;
	}
	return lbpf_unpin_all(s->pin_root, e);
}

void lantern_teardown(struct lantern_side *s)
{
	struct lerr e;

	if (!s->root[0])
		return;
	if ((s->bpf || access(s->pin_root, F_OK) == 0) && lantern_detach(s, &e) < 0)
		log_warn("bench: %s", e.msg);
	rmdir(s->pin_root);
	if (s->have_inst && cgroup_inst_destroy(&s->inst, 3000, &e) < 0)
		log_warn("bench: %s", e.msg);
	s->have_inst = false;
	if (s->have_node && cgroup_node_remove(&s->node, &e) < 0)
		log_warn("bench: %s", e.msg);
	s->have_node = false;
}

int lantern_prog_stats(const struct lantern_side *s, uint64_t *run_ns, uint64_t *runs,
		       struct lerr *e)
{
	char cmd[256];
	json_error_t jerr;
	json_t *j;
	FILE *f;
	int st;

	snprintf(cmd, sizeof(cmd), "bpftool -j prog show pinned %s/prog_connect4", s->pin_root);
	f = popen(cmd, "r");
	if (!f)
		return lerr_set(e, errno, "bench: running bpftool: %s", strerror(errno));
	j = json_loadf(f, 0, &jerr);
	st = pclose(f);
	if (!j || st != 0) {
		json_decref(j);
		return lerr_set(e, EIO, "bench: \"%s\" failed (status %d)", cmd, st);
	}
	/* the two fields are absent until the program has run with stats on */
	*run_ns = (uint64_t)json_integer_value(json_object_get(j, "run_time_ns"));
	*runs = (uint64_t)json_integer_value(json_object_get(j, "run_cnt"));
	json_decref(j);
	return 0;
}

int lantern_bpf_stats(int on, int *old)
{
	const char *path = "/proc/sys/kernel/bpf_stats_enabled";
	char *buf;
	int err;

	if (old) {
		err = util_read_file(path, &buf, NULL);
		if (err)
			return err;
		*old = atoi(buf);
		free(buf);
	}
	return util_write_str(path, on ? "1" : "0");
}

const char *lantern_nft_path(const struct lantern_side *s)
{
	const char *d = s->inst.dirs[0];

	return strncmp(d, CGROUP_MOUNT, strlen(CGROUP_MOUNT)) ? d : d + strlen(CGROUP_MOUNT);
}
