/* lbpf_internal.h: what the lbpf files share: the egress handle and the map helpers
 * its lifecycle code (lbpf.c) and its map operations (egress.c) both use, and the
 * pin/attach/adopt step (pins.c) of both program sets, egress and telemetry. */
#ifndef LANTERN_LBPF_INTERNAL_H
#define LANTERN_LBPF_INTERNAL_H

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stddef.h>

#include "lantern/lbpf.h"

struct egress_bpf;
struct bpf_link;
struct bpf_program;
struct ring_buffer;

#define LBPF_NPROGS 8

/* How many lantern_egress entries of one instance hold DNS-learned slots: bounded by
 * learn_max, so one instance cannot fill the map every instance shares. Kept in memory,
 * rebuilt from the maps when lbpf opens. */
struct lbpf_learned {
	uint64_t cgid;
	uint32_t policy_id;      /* the instance's current policy id */
	uint32_t n;
};

struct lbpf {
	struct egress_bpf *skel;
	char pin_root[PATH_MAX - 256]; /* room for "/link_<name>" */
	struct bpf_link *links[LBPF_NPROGS];
	struct ring_buffer *rb;
	lbpf_event_cb cb;       /* set for the duration of one lbpf_events_consume */
	void *cb_arg;
	unsigned cb_left;       /* events it may still deliver */
	uint32_t next_policy_id; /* never reused while an entry of it may exist */
	uint32_t learn_max;
	struct lbpf_learned *learned; /* one per instance with a policy; unordered */
	size_t n_learned, cap_learned;
	int fd_config, fd_instances, fd_egress, fd_stats, fd_pkt_stats, fd_sock_orig, fd_drops, fd_events;
	int fd_sync, fd_sync_inner;
};

/* One program of a set kept attached across lanternd restarts. Its pins under the
 * pin root are link_<pin> (the link, which keeps it attached) and prog_<pin> (the
 * program that runs, for bpftool). */
struct lbpf_pinned_prog {
	struct bpf_program *prog;
	const char *pin;
	bool cgroup;            /* attaches to the node's cgroup; else a tracing program */
};

/* Attaches progs, or adopts what a previous lanternd left pinned under pin_root
 * (*adopted then set; the caller clears it first). A pinned cgroup link gets the
 * new program swapped in (bpf_link__update_program); a pinned tracing link cannot
 * be updated and is kept as it is, running its program on the same pinned maps. A
 * program without a pinned link is attached (cgroup programs to cgroup_path) and
 * its link pinned. prog_<pin> is replaced unless the link was kept. links[i] gets
 * program i's link (NULL for a kept tracing link); destroying it leaves a pinned
 * link attached. Stops at the first failure, with -errno and a message. */
int lbpf_pins_attach(const char *pin_root, const char *cgroup_path,
		     const struct lbpf_pinned_prog *progs, size_t n, struct bpf_link **links,
		     bool *adopted, struct lerr *e);

/* What a ring buffer callback returns when the consumer's budget is spent: libbpf
 * stops there, the record just delivered counted as consumed. */
#define LBPF_BUDGET_SPENT (-EAGAIN)

/* Deletes every lantern_egress entry of policy_id; returns how many, or -errno. */
int lbpf_egress_delete_policy(struct lbpf *b, uint32_t policy_id);
/* Scans lantern_instances and lantern_egress: deletes entries no instance refers to
 * (left by a crash mid-update) and sets next_policy_id above every id in use. */
int lbpf_egress_reconcile(struct lbpf *b);

#endif
