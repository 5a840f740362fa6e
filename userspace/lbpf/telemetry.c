/* telemetry.c: loading, pinning and adopting telemetry.bpf.c, and its map operations.
 *
 * The same shape as lbpf.c: every map gets a pin path under pin_root (libbpf reuses
 * a pinned map, else creates and pins it), then lbpf_pins_attach (pins.c) either
 * adopts the link a previous lanternd pinned for each program or attaches it and
 * pins its link. cgroup_skb links are updated in place with the new program; tracing
 * links cannot be, and are kept as they are (their programs use the same pinned
 * maps). */
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lantern/lbpf_tm.h"
#include "lbpf_internal.h"
#include "telemetry.skel.h"

#define TM_NLINKS 8

struct lbpf_tm {
	struct telemetry_bpf *skel;
	char pin_root[PATH_MAX - 256];
	struct bpf_link *links[TM_NLINKS];
	struct ring_buffer *rb;
	lbpf_proc_cb cb;
	void *cb_arg;
	unsigned cb_left;
	int ncpus;
	int fd_inst, fd_sys, fd_proc, fd_net, fd_rate, fd_drops, fd_events, fd_cgrp;
	int fd_node;    /* the node's cgroup v2 directory: opens instance cgroups by id */
};

static const char *const hook_names[] = {
	[LBPF_SYS_TP_BTF] = "tp_btf", [LBPF_SYS_RAW_TP] = "raw_tp",
	[LBPF_SYS_TRACEPOINT] = "tracepoint", [LBPF_SYS_NONE] = "none",
};

const char *lbpf_tm_sys_hook_name(enum lbpf_sys_hook h)
{
	return h < ARRAY_SIZE(hook_names) ? hook_names[h] : "unknown";
}

static int tm_progs(struct lbpf_tm *t, enum lbpf_sys_hook h, struct lbpf_pinned_prog out[TM_NLINKS])
{
	struct telemetry_bpf *s = t->skel;
	struct bpf_program *enter[] = { s->progs.lantern_sys_enter, s->progs.lantern_sys_enter_raw,
					s->progs.lantern_sys_enter_tp };
	struct bpf_program *exit_[] = { s->progs.lantern_sys_exit, s->progs.lantern_sys_exit_raw,
					s->progs.lantern_sys_exit_tp };
	int n = 0;

	for (int i = 0; i < 3; i++) {
		bpf_program__set_autoload(enter[i], h == (enum lbpf_sys_hook)i);
		bpf_program__set_autoload(exit_[i], h == (enum lbpf_sys_hook)i);
	}
	if (h != LBPF_SYS_NONE) {
		out[n++] = (struct lbpf_pinned_prog){ enter[h], "tm_sys_enter", false };
		out[n++] = (struct lbpf_pinned_prog){ exit_[h], "tm_sys_exit", false };
	}
	out[n++] = (struct lbpf_pinned_prog){ s->progs.lantern_cgroup_mkdir, "tm_cgroup_mkdir", false };
	out[n++] = (struct lbpf_pinned_prog){ s->progs.lantern_fork, "tm_fork", false };
	out[n++] = (struct lbpf_pinned_prog){ s->progs.lantern_exec, "tm_exec", false };
	out[n++] = (struct lbpf_pinned_prog){ s->progs.lantern_exit, "tm_exit", false };
	out[n++] = (struct lbpf_pinned_prog){ s->progs.lantern_skb_egress, "tm_skb_egress", true };
	out[n++] = (struct lbpf_pinned_prog){ s->progs.lantern_skb_ingress, "tm_skb_ingress", true };
	return n;
}

static int events_trampoline(void *ctx, void *data, size_t size)
{
	struct lbpf_tm *t = ctx;

	if (!t->cb || size < sizeof(struct lantern_proc_event))
		return 0;
	t->cb(data, t->cb_arg);
	return --t->cb_left ? 0 : LBPF_BUDGET_SPENT;
}

/* The syscall hook a previous lanternd attached, read from its pinned program's
 * type, so adoption reports what really runs. */
static enum lbpf_sys_hook pinned_sys_hook(const char *pin_root, enum lbpf_sys_hook dflt)
{
	struct bpf_prog_info info = { 0 };
	__u32 len = sizeof(info);
	char path[PATH_MAX];
	int fd;

	snprintf(path, sizeof(path), "%s/prog_tm_sys_enter", pin_root);
	fd = bpf_obj_get(path);
	if (fd < 0)
		return dflt;
	if (bpf_obj_get_info_by_fd(fd, &info, &len) == 0) {
		if (info.type == BPF_PROG_TYPE_TRACING)
			dflt = LBPF_SYS_TP_BTF;
		else if (info.type == BPF_PROG_TYPE_RAW_TRACEPOINT)
			dflt = LBPF_SYS_RAW_TP;
		else if (info.type == BPF_PROG_TYPE_TRACEPOINT)
			dflt = LBPF_SYS_TRACEPOINT;
	}
	close(fd);
	return dflt;
}

/* max_entries of the map pinned at path, 0 if none. */
static uint32_t pinned_map_size(const char *path)
{
	struct bpf_map_info info = { 0 };
	__u32 len = sizeof(info);
	int fd = bpf_obj_get(path);
	uint32_t size = 0;

	if (fd < 0)
		return 0;
	if (bpf_obj_get_info_by_fd(fd, &info, &len) == 0)
		size = info.max_entries;
	close(fd);
	return size;
}

int lbpf_tm_open(const struct lbpf_tm_opts *o, struct lbpf_tm **out, bool *adopted, struct lerr *e)
{
	struct lbpf_pinned_prog progs[TM_NLINKS];
	struct bpf_map *map;
	struct lbpf_tm *t;
	char path[PATH_MAX + 64];
	bool adopt = false;
	int err, n;

	*out = NULL;
	if (adopted)
		*adopted = false;
	if (!o->pin_root || !o->cgroup_path)
		return lerr_set(e, -EINVAL, "lbpf: pin_root and cgroup_path are required");
	if (strlen(o->pin_root) >= sizeof(t->pin_root))
		return lerr_set(e, -ENAMETOOLONG, "lbpf: pin root %s: name too long", o->pin_root);
	if ((err = util_mkdir_p(o->pin_root, 0700)) < 0)
		return lerr_set(e, err, "lbpf: creating pin root %s: %s", o->pin_root, strerror(-err));
	t = calloc(1, sizeof(*t));
	if (!t)
		return lerr_set(e, -ENOMEM, "lbpf: out of memory");
	t->fd_node = -1;
	snprintf(t->pin_root, sizeof(t->pin_root), "%s", o->pin_root);
	t->ncpus = libbpf_num_possible_cpus();
	if (t->ncpus <= 0) {
		err = lerr_set(e, t->ncpus ? t->ncpus : -EINVAL, "lbpf: cannot count possible CPUs");
		goto fail;
	}

	t->skel = telemetry_bpf__open();
	if (!t->skel) {
		err = lerr_set(e, -errno, "lbpf: opening BPF object telemetry: %s", strerror(errno));
		goto fail;
	}
	t->skel->rodata->instance_level = o->instance_level;
	bpf_object__for_each_map(map, t->skel->obj) {
		if (bpf_map__is_internal(map))
			continue;
		snprintf(path, sizeof(path), "%s/%s", t->pin_root, bpf_map__name(map));
		if (map == t->skel->maps.lantern_tm_events) {
			uint32_t size = pinned_map_size(path);
			/* a pinned ring buffer is reused only with its own size */
			if (size || o->events_bytes)
				bpf_map__set_max_entries(map, size ? size : o->events_bytes);
		}
		if (bpf_map__set_pin_path(map, path) < 0) {
			err = lerr_set(e, -errno, "lbpf: pin path %s: %s", path, strerror(errno));
			goto fail;
		}
	}
	n = tm_progs(t, pinned_sys_hook(t->pin_root, o->sys_hook), progs);
	err = telemetry_bpf__load(t->skel);
	if (err) {
		lerr_set(e, err, "lbpf: loading BPF object telemetry (pins under %s): %s", t->pin_root,
			 strerror(-err));
		goto fail;
	}
	t->fd_inst = bpf_map__fd(t->skel->maps.lantern_tm_inst);
	t->fd_sys = bpf_map__fd(t->skel->maps.lantern_tm_sys);
	t->fd_proc = bpf_map__fd(t->skel->maps.lantern_tm_proc);
	t->fd_net = bpf_map__fd(t->skel->maps.lantern_tm_net);
	t->fd_rate = bpf_map__fd(t->skel->maps.lantern_tm_rate);
	t->fd_drops = bpf_map__fd(t->skel->maps.lantern_tm_drops);
	t->fd_events = bpf_map__fd(t->skel->maps.lantern_tm_events);
	t->fd_cgrp = bpf_map__fd(t->skel->maps.lantern_tm_cgrp);
	t->fd_node = open(o->cgroup_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (t->fd_node < 0) {
		err = lerr_set(e, -errno, "lbpf: opening cgroup %s: %s", o->cgroup_path, strerror(errno));
		goto fail;
	}
	err = lbpf_pins_attach(t->pin_root, o->cgroup_path, progs, (size_t)n, t->links, &adopt, e);
	if (err)
		goto fail;
	t->rb = ring_buffer__new(t->fd_events, events_trampoline, t, NULL);
	if (!t->rb) {
		err = lerr_set(e, -errno, "lbpf: ring buffer lantern_tm_events: %s", strerror(errno));
		goto fail;
	}
	if (adopted)
		*adopted = adopt;
	*out = t;
	return 0;
fail:
	lbpf_tm_close(t);
	return err;
}

void lbpf_tm_close(struct lbpf_tm *t)
{
	if (!t)
		return;
	ring_buffer__free(t->rb);
	for (int i = 0; i < TM_NLINKS; i++)
		bpf_link__destroy(t->links[i]);
	telemetry_bpf__destroy(t->skel);
	if (t->fd_node >= 0)
		close(t->fd_node);
	free(t);
}

/* The cgroup v2 directory with id cgid, opened through the node's cgroup fs (cgroup
 * ids are kernfs file handles), or -errno. */
static int open_cgroup_by_id(struct lbpf_tm *t, uint64_t cgid)
{
	struct {
		struct file_handle fh;
		uint64_t id;
	} h = { .fh = { .handle_bytes = sizeof(uint64_t), .handle_type = 0xfe /* FILEID_KERNFS */ },
		.id = cgid };
	int fd = open_by_handle_at(t->fd_node, &h.fh, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	return fd < 0 ? -errno : fd;
}

/* Marks (or unmarks) the cgroup dir_fd and, below depth 16, every cgroup under it;
 * cgroups created later are marked by lantern_cgroup_mkdir. */
static int mark_tree(struct lbpf_tm *t, int dir_fd, uint64_t cgid, bool mark, int depth)
{
	struct lantern_tm_mark m = { .cgroup_id = cgid };
	struct dirent *de;
	int err = 0, dup_fd;
	DIR *d;

	if (mark) {
		if (bpf_map_update_elem(t->fd_cgrp, &dir_fd, &m, BPF_ANY) < 0)
			return -errno;
	} else if (bpf_map_delete_elem(t->fd_cgrp, &dir_fd) < 0 && errno != ENOENT) {
		return -errno;
	}
	if (depth >= 16 || (dup_fd = dup(dir_fd)) < 0)
		return 0;
	d = fdopendir(dup_fd);
	if (!d) {
		close(dup_fd);
		return 0;
	}
	while (!err && (de = readdir(d))) {
		int sub;

		if (de->d_type != DT_DIR || de->d_name[0] == '.')
			continue;
		sub = openat(dir_fd, de->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (sub < 0)
			continue; /* removed meanwhile */
		err = mark_tree(t, sub, cgid, mark, depth + 1);
		close(sub);
	}
	closedir(d);
	return err;
}

int lbpf_tm_instance_add(struct lbpf_tm *t, uint64_t cgid, const struct lbpf_rate *rates,
			 size_t n_rates, struct lerr *e)
{
	struct lantern_tm_instance in = { 0 };
	uint64_t now;

	now = util_now_ns(CLOCK_MONOTONIC);
	for (size_t i = 0; i < n_rates; i++) {
		struct lantern_rate_key k = { .cgroup_id = cgid, .rule = rates[i].rule };
		struct lantern_rate_bucket b = { 0 };

		b.rate_Bps = rates[i].rate_bps / 8 ? rates[i].rate_bps / 8 : 1;
		/* 20 ms of traffic, at least two 64 KiB loopback segments, so one GSO packet
		 * always fits and TCP is marked before it is dropped */
		b.burst = b.rate_Bps / 50 > 131072 ? b.rate_Bps / 50 : 131072;
		b.tokens = (int64_t)b.burst;
		b.last_ns = now;
		if (bpf_map_update_elem(t->fd_rate, &k, &b, BPF_ANY) < 0) {
			int err = -errno;
			lbpf_tm_instance_remove(t, cgid);
			return lerr_set(e, err, "lbpf: map lantern_tm_rate: rate of rule %u of cgroup %llu: %s",
					rates[i].rule, (unsigned long long)cgid, strerror(-err));
		}
	}
	if (bpf_map_update_elem(t->fd_inst, &cgid, &in, BPF_ANY) < 0) {
		int err = -errno;
		lbpf_tm_instance_remove(t, cgid);
		return lerr_set(e, err, "lbpf: map lantern_tm_inst: adding cgroup %llu: %s",
				(unsigned long long)cgid, strerror(-err));
	}
	/* after lantern_tm_inst, so a cgroup created meanwhile is marked by
	 * lantern_cgroup_mkdir or by this walk, if not by both */
	{
		int fd = open_cgroup_by_id(t, cgid), err;

		err = fd < 0 ? fd : mark_tree(t, fd, cgid, true, 0);
		if (fd >= 0)
			close(fd);
		if (err < 0) {
			lbpf_tm_instance_remove(t, cgid);
			return lerr_set(e, err, "lbpf: map lantern_tm_cgrp: marking cgroup %llu: %s",
					(unsigned long long)cgid, strerror(-err));
		}
	}
	return 0;
}

/* Calls fn for every entry of the hash map fd whose key (ksize bytes) starts with the
 * u64 cgid; vsize is one entry's value as a batch returns it (per-CPU maps: one
 * 8-byte aligned copy per possible CPU). The map is read a batch of buckets per bpf()
 * call: a get_next_key walk (one call per key, plus a lookup per matching key) cost
 * about 370 calls per spawn with one run alive and grew with every live run. */
typedef void (*entry_fn)(const void *key, const void *val, void *arg);

static int walk_cgid(int fd, size_t ksize, size_t vsize, uint64_t cgid, entry_fn fn, void *arg)
{
	LIBBPF_OPTS(bpf_map_batch_opts, o);
	uint8_t tok_in[8], tok_out[8]; /* a hash map's batch token is a u32 bucket index */
	uint32_t cap = 256;
	uint8_t *keys = NULL, *vals = NULL;
	void *in = NULL;
	int err = 0;

	for (;;) {
		uint32_t count = cap;
		bool last = false;

		if (!keys && (!(keys = malloc(cap * ksize)) || !(vals = malloc(cap * vsize)))) {
			err = -ENOMEM;
			break;
		}
		if (bpf_map_lookup_batch(fd, in, tok_out, keys, vals, &count, &o) < 0) {
			if (errno == ENOENT) {
				last = true; /* the last buckets were in this batch */
			} else if (errno == ENOSPC && cap < (1u << 16)) {
				/* one bucket holds more entries than a batch: a bigger batch */
				free(keys);
				free(vals);
				keys = vals = NULL;
				cap *= 2;
				continue;
			} else {
				err = -errno;
				break;
			}
		}
		for (uint32_t i = 0; i < count; i++)
			if (!memcmp(keys + i * ksize, &cgid, sizeof(cgid)))
				fn(keys + i * ksize, vals + i * vsize, arg);
		if (last)
			break;
		memcpy(tok_in, tok_out, sizeof(tok_in));
		in = tok_in;
	}
	free(keys);
	free(vals);
	return err;
}

struct keyset {
	uint8_t *keys;
	size_t ksize, n, cap;
};

static void collect_key(const void *key, const void *val, void *arg)
{
	struct keyset *ks = arg;

	if (ks->n == ks->cap) {
		size_t nc = ks->cap ? ks->cap * 2 : 64;
		uint8_t *nk = realloc(ks->keys, nc * ks->ksize);
		if (!nk)
			return;
		ks->keys = nk;
		ks->cap = nc;
	}
	memcpy(ks->keys + ks->n++ * ks->ksize, key, ks->ksize);
}

/* Deletes every key of fd whose leading u64 is cgid: one batch read to find them, one
 * batch delete (keys a concurrent delete took first are skipped one by one). */
static void delete_by_cgid(int fd, size_t ksize, size_t vsize, uint64_t cgid)
{
	LIBBPF_OPTS(bpf_map_batch_opts, o);
	struct keyset ks = { .ksize = ksize };
	size_t done = 0;

	walk_cgid(fd, ksize, vsize, cgid, collect_key, &ks);
	while (done < ks.n) {
		uint32_t count = (uint32_t)(ks.n - done);

		if (bpf_map_delete_batch(fd, ks.keys + done * ksize, &count, &o) == 0)
			break;
		done += count + 1; /* count were deleted; the next one failed */
	}
	free(ks.keys);
}

int lbpf_tm_instance_remove(struct lbpf_tm *t, uint64_t cgid)
{
	int err = bpf_map_delete_elem(t->fd_inst, &cgid) < 0 && errno != ENOENT ? -errno : 0;
	int fd = open_cgroup_by_id(t, cgid);

	/* the cgroup may be gone already, and its marks with it */
	if (fd >= 0) {
		mark_tree(t, fd, cgid, false, 0);
		close(fd);
	}

	delete_by_cgid(t->fd_sys, sizeof(struct lantern_sys_key),
		       (size_t)t->ncpus * ((sizeof(struct lantern_sys_stats) + 7) & ~(size_t)7), cgid);
	delete_by_cgid(t->fd_rate, sizeof(struct lantern_rate_key), sizeof(struct lantern_rate_bucket), cgid);
	bpf_map_delete_elem(t->fd_proc, &cgid);
	bpf_map_delete_elem(t->fd_net, &cgid);
	return err;
}

bool lbpf_tm_instance_has(struct lbpf_tm *t, uint64_t cgid)
{
	struct lantern_tm_instance in;

	return bpf_map_lookup_elem(t->fd_inst, &cgid, &in) == 0;
}

int lbpf_tm_instance_list(struct lbpf_tm *t, uint64_t **ids, size_t *n)
{
	uint64_t cur, next, *v = NULL;
	size_t cnt = 0, cap = 0;
	void *prev = NULL;

	while (bpf_map_get_next_key(t->fd_inst, prev, &next) == 0) {
		cur = next;
		prev = &cur;
		if (cnt == cap) {
			size_t nc = cap ? cap * 2 : 16;
			uint64_t *nv = realloc(v, nc * sizeof(*v));
			if (!nv) {
				free(v);
				return -ENOMEM;
			}
			v = nv;
			cap = nc;
		}
		v[cnt++] = cur;
	}
	*ids = v;
	*n = cnt;
	return 0;
}

/* Per-CPU values come back as one (8-byte aligned) copy per possible CPU. */
/* Sums a per-CPU value of nwords 64-bit counters into out (a struct of __u64 fields:
 * written with memcpy, since __u64 and uint64_t are different types to the aliasing
 * rules). */
static int percpu_sum(struct lbpf_tm *t, int fd, const void *key, void *out, size_t nwords)
{
	size_t stride = (nwords * 8 + 7) & ~(size_t)7;
	uint64_t *buf = calloc((size_t)t->ncpus, stride), sum[16] = { 0 };
	int err = 0;

	if (!buf)
		return -ENOMEM;
	if (nwords > ARRAY_SIZE(sum)) {
		free(buf);
		return -E2BIG;
	}
	if (bpf_map_lookup_elem(fd, key, buf) < 0) {
		err = errno == ENOENT ? 0 : -errno;
	} else {
		for (int c = 0; c < t->ncpus; c++)
			for (size_t w = 0; w < nwords; w++)
				sum[w] += buf[(size_t)c * (stride / 8) + w];
	}
	memcpy(out, sum, nwords * 8);
	free(buf);
	return err;
}

struct sys_walk {
	struct lbpf_tm *t;
	lbpf_sys_cb cb;
	void *arg;
};

static void sys_entry(const void *key, const void *val, void *arg)
{
	const struct lantern_sys_key *k = key;
	struct sys_walk *w = arg;
	struct lantern_sys_stats s;
	size_t stride = (sizeof(s) + 7) & ~(size_t)7;
	uint64_t sum[sizeof(s) / 8] = { 0 }, word;

	/* summed as u64 words, then copied: s's fields are __u64, another type to the
	 * compiler's aliasing rules */
	for (int c = 0; c < w->t->ncpus; c++)
		for (size_t i = 0; i < sizeof(s) / 8; i++) {
			memcpy(&word, (const uint8_t *)val + (size_t)c * stride + i * 8, 8);
			sum[i] += word;
		}
	memcpy(&s, sum, sizeof(s));
	if (s.count)
		w->cb(k->nr, &s, w->arg);
}

int lbpf_tm_syscalls(struct lbpf_tm *t, uint64_t cgid, lbpf_sys_cb cb, void *arg)
{
	struct sys_walk w = { .t = t, .cb = cb, .arg = arg };

	return walk_cgid(t->fd_sys, sizeof(struct lantern_sys_key),
			 (size_t)t->ncpus * ((sizeof(struct lantern_sys_stats) + 7) & ~(size_t)7), cgid,
			 sys_entry, &w);
}

int lbpf_tm_net(struct lbpf_tm *t, uint64_t cgid, struct lantern_net_stats *out)
{
	return percpu_sum(t, t->fd_net, &cgid, out, sizeof(*out) / 8);
}

int lbpf_tm_proc(struct lbpf_tm *t, uint64_t cgid, struct lantern_proc_stats *out)
{
	return percpu_sum(t, t->fd_proc, &cgid, out, sizeof(*out) / 8);
}

int lbpf_tm_drops(struct lbpf_tm *t, struct lantern_tm_drops *out)
{
	uint32_t zero = 0;

	return percpu_sum(t, t->fd_drops, &zero, out, sizeof(*out) / 8);
}

int lbpf_tm_events_fd(struct lbpf_tm *t)
{
	return ring_buffer__epoll_fd(t->rb);
}

int lbpf_tm_events_consume_n(struct lbpf_tm *t, lbpf_proc_cb cb, void *arg, unsigned max)
{
	int n;

	if (!max)
		return 0;
	t->cb = cb;
	t->cb_arg = arg;
	t->cb_left = max;
	n = ring_buffer__consume(t->rb);
	t->cb = NULL;
	t->cb_arg = NULL;
	return n == LBPF_BUDGET_SPENT ? (int)max : n;
}

int lbpf_tm_events_consume(struct lbpf_tm *t, lbpf_proc_cb cb, void *arg)
{
	return lbpf_tm_events_consume_n(t, cb, arg, UINT_MAX);
}
