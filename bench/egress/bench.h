/* bench.h: what the files of the egress benchmark share.
 *
 * The benchmark measures connect() on loopback from one process in one instance
 * cgroup under several egress policies: none, lantern's BPF programs with an
 * allowlist of N entries, and nftables holding the same allowlist for the same
 * cgroup (as a set, and as a list of rules). main.c runs the rounds and prints the
 * table; measure.c owns the listener and the measuring child; nft.c writes and
 * removes the nftables table; enforce.c drives lantern's cgroup and BPF modules. */
#ifndef LANTERN_BENCH_EGRESS_H
#define LANTERN_BENCH_EGRESS_H

#include <arpa/inet.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "lantern/cgroup.h"
#include "lantern/util.h"

/* Set by the SIGINT/SIGTERM/SIGHUP handler; every wait checks it. */
extern volatile sig_atomic_t bench_stop;

/* The allowlist of one configuration: the listener's address plus n other
 * addresses 10.x.y.z/32. Entry i (0-based) of the others, in network order. */
static inline uint32_t bench_other_addr(size_t i)
{
	return htonl(0x0a000000u + (uint32_t)i + 1); /* 10.0.0.1, 10.0.0.2, ... */
}

/* ---- measure.c ---- */

/* A TCP listener on 127.0.0.1 served by an accept-and-close process. */
struct listener {
	int fd;
	uint16_t port;   /* host order */
	pid_t acceptor;
};
int listener_start(struct listener *l, int cpu);
void listener_stop(struct listener *l);

/* One batch's result, computed in the measuring child. */
struct batch {
	int err;          /* 0, or the errno of the first failed connect */
	uint64_t median;  /* ns per connect() */
	uint64_t p99;
	int probe;        /* errno of the probe connect to a destination no policy allows:
	                     ECONNREFUSED = let through, EPERM/ETIMEDOUT = stopped */
};

/* The measuring child: forked once, joined to the instance cgroup by the parent,
 * then runs one batch per request. */
struct measurer {
	pid_t pid;
	int req;   /* parent -> child */
	int resp;  /* child -> parent */
};
int measurer_start(struct measurer *m, int cpu);
/* Asks for warmup + n timed connects to 127.0.0.1:port, then one probe connect to
 * 127.0.0.2:port (nothing listens there; only a policy that lets it through gets
 * ECONNREFUSED). Returns 0 or -errno (-EINTR when bench_stop was set). */
int measurer_run(struct measurer *m, uint16_t port, uint32_t n, uint32_t warmup,
		 struct batch *out);
void measurer_stop(struct measurer *m);

/* ---- nft.c ---- */

enum nft_kind {
	NFT_SET_HASH,      /* ip daddr @allow, a hash set of addresses */
	NFT_SET_INTERVAL,  /* the same set with flags interval (CIDR-capable) */
	NFT_RULES,         /* one "ip daddr X accept" rule per entry, the listener last */
};

/* Replaces the private table with one that holds the allowlist (listener + n others)
 * for the cgroup at cg_path (relative to the cgroup2 mount as nft resolves it, e.g.
 * "unified/lantern-bench-1/bench") at cgroup level level, then drops the rest of that
 * cgroup's traffic. */
int nft_load(const char *table, enum nft_kind kind, size_t n, const char *cg_path,
	     uint32_t level, struct lerr *e);
/* Removes the private table; -ENOENT when there was none. */
int nft_remove(const char *table);

/* ---- enforce.c: lantern's side ---- */

struct lantern_side {
	char root[64];               /* cgroup subtree name, lantern-bench-PID */
	char pin_root[128];          /* /sys/fs/bpf/lantern-bench-PID */
	struct cgroup_node node;
	struct cgroup_inst inst;
	bool have_node, have_inst;
	struct lbpf *bpf;            /* NULL while lantern's programs are detached */
};

/* Creates the private subtree and the instance cgroup. */
int lantern_setup(struct lantern_side *s, struct lerr *e);
/* Loads, pins and attaches lantern's programs to the subtree. */
int lantern_attach(struct lantern_side *s, struct lerr *e);
/* Installs the instance's allowlist (listener + n others) in allowlist mode. */
int lantern_policy(struct lantern_side *s, size_t n, struct lerr *e);
/* Detaches and unpins everything (the instance cgroup stays). */
int lantern_detach(struct lantern_side *s, struct lerr *e);
/* Detaches, kills what is in the instance, removes the cgroups. Idempotent. */
void lantern_teardown(struct lantern_side *s);
/* Cumulative run time and run count of the pinned connect4 program, read with
 * bpftool (counted only while kernel.bpf_stats_enabled is on). */
int lantern_prog_stats(const struct lantern_side *s, uint64_t *run_ns, uint64_t *runs,
		       struct lerr *e);
/* Sets kernel.bpf_stats_enabled; *old (may be NULL) gets the previous value. */
int lantern_bpf_stats(int on, int *old);
/* The instance's v2 directory relative to /sys/fs/cgroup, as nft wants it. */
const char *lantern_nft_path(const struct lantern_side *s);

#endif
