/* lbpf_internal.h: what the lbpf files share: the handle and the map helpers the
 * lifecycle code (lbpf.c) and the map operations (egress.c) both use. */
#ifndef LANTERN_LBPF_INTERNAL_H
#define LANTERN_LBPF_INTERNAL_H

#include <limits.h>

#include "lantern/lbpf.h"

struct egress_bpf;
struct bpf_link;
struct ring_buffer;

#define LBPF_NPROGS 8

struct lbpf {
	struct egress_bpf *skel;
	char pin_root[PATH_MAX - 256]; /* room for "/link_<name>" */
	struct bpf_link *links[LBPF_NPROGS];
	struct ring_buffer *rb;
	lbpf_event_cb cb;       /* set for the duration of one lbpf_events_consume */
	void *cb_arg;
	uint32_t next_policy_id; /* never reused while an entry of it may exist */
	int fd_config, fd_instances, fd_egress, fd_stats, fd_sock_orig, fd_drops, fd_events;
	int fd_sync, fd_sync_inner;
};

/* Deletes every lantern_egress entry of policy_id; returns how many, or -errno. */
int lbpf_egress_delete_policy(struct lbpf *b, uint32_t policy_id);
/* Scans lantern_instances and lantern_egress: deletes entries no instance refers to
 * (left by a crash mid-update) and sets next_policy_id above every id in use. */
int lbpf_egress_reconcile(struct lbpf *b);

#endif
