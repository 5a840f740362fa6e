/* lbpf.c: loading, pinning and adopting the egress programs.
 *
 * One path for both a first start and a restart: open the skeleton with every map's
 * pin path set under pin_root (libbpf reuses a pinned map, else creates and pins it),
 * load, write lantern_config, then hand the programs to lbpf_pins_attach (pins.c):
 * each is swapped into the link a previous lanternd pinned (the old program runs
 * until the new one is in, so there is no window without enforcement) or attached to
 * the node's cgroup subtree with its new link pinned. */
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <dirent.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "egress.skel.h"
#include "lbpf_internal.h"

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif

#define PROG_PREFIX "lantern_"

static int quiet_print(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	if (level == LIBBPF_WARN)
		return vfprintf(stderr, fmt, ap);
	return 0;
}

static int host_netns_cookie(__u64 *cookie, struct lerr *e)
{
	socklen_t len = sizeof(*cookie);
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0), err = 0;

	if (fd < 0)
		return lerr_set(e, -errno, "lbpf: socket for netns cookie: %s", strerror(errno));
	if (getsockopt(fd, SOL_SOCKET, SO_NETNS_COOKIE, cookie, &len) < 0)
		err = lerr_set(e, -errno, "lbpf: getsockopt SO_NETNS_COOKIE: %s", strerror(errno));
	close(fd);
	return err;
}

static int write_config(struct lbpf *b, const struct lbpf_opts *o, struct lerr *e)
{
	static const uint8_t lo6[16] = { [15] = 1 };
	struct lantern_config c = { 0 };
	uint32_t zero = 0;
	int err;

	err = host_netns_cookie(&c.host_netns_cookie, e);
	if (err)
		return err;
	c.instance_level = o->instance_level;
	c.flags = o->audit_all ? LANTERN_F_AUDIT : 0;
	c.dns_ip4 = o->dns_ip4 ? o->dns_ip4 : htonl(0x7f000001);
	memcpy(c.dns_ip6, o->dns_ip6 ? o->dns_ip6 : lo6, sizeof(c.dns_ip6));
	if (bpf_map_update_elem(b->fd_config, &zero, &c, BPF_ANY) < 0)
		return lerr_set(e, -errno, "lbpf: writing map lantern_config: %s", strerror(errno));
	return 0;
}

/* Every egress program is a cgroup hook, pinned under its name without the prefix. */
static int attach_all(struct lbpf *b, const struct lbpf_opts *o, bool *adopted, struct lerr *e)
{
	struct lbpf_pinned_prog progs[LBPF_NPROGS];
	struct bpf_program *prog;
	size_t n = 0;

	bpf_object__for_each_program(prog, b->skel->obj) {
		const char *name = bpf_program__name(prog);

		if (n >= LBPF_NPROGS)
			return lerr_set(e, -E2BIG, "lbpf: more programs than %d", LBPF_NPROGS);
		if (!strncmp(name, PROG_PREFIX, strlen(PROG_PREFIX)))
			name += strlen(PROG_PREFIX);
		progs[n++] = (struct lbpf_pinned_prog){ prog, name, true };
	}
	return lbpf_pins_attach(b->pin_root, o->cgroup_path, progs, n, b->links, adopted, e);
}

/* A record shorter than the struct comes from a program older than its last fields
 * (still in the ring buffer across an upgrade): those fields read as 0. */
static int events_trampoline(void *ctx, void *data, size_t size)
{
	struct lantern_egress_event ev = { 0 };
	struct lbpf *b = ctx;

	if (!b->cb || size < offsetof(struct lantern_egress_event, reason))
		return 0;
	memcpy(&ev, data, size < sizeof(ev) ? size : sizeof(ev));
	b->cb(&ev, b->cb_arg);
	return --b->cb_left ? 0 : LBPF_BUDGET_SPENT;
}

int lbpf_open(const struct lbpf_opts *o, struct lbpf **out, bool *adopted, struct lerr *e)
{
	struct bpf_map *map;
	struct lbpf *b;
	char path[PATH_MAX + 64];
	bool adopt = false;
	int err;

	*out = NULL;
	if (adopted)
		*adopted = false;
	if (!o->pin_root || !o->cgroup_path)
		return lerr_set(e, -EINVAL, "lbpf: pin_root and cgroup_path are required");
	if (strlen(o->pin_root) >= sizeof(b->pin_root))
		return lerr_set(e, -ENAMETOOLONG, "lbpf: pin root %s: name too long", o->pin_root);
	err = util_mkdir_p(o->pin_root, 0700);
	if (err)
		return lerr_set(e, err, "lbpf: creating pin root %s: %s", o->pin_root, strerror(-err));

	b = calloc(1, sizeof(*b));
	if (!b)
		return lerr_set(e, -ENOMEM, "lbpf: out of memory");
	snprintf(b->pin_root, sizeof(b->pin_root), "%s", o->pin_root);
	b->learn_max = o->learn_max ? o->learn_max : LBPF_LEARN_MAX;
	libbpf_set_print(quiet_print);

	b->skel = egress_bpf__open();
	if (!b->skel) {
		err = lerr_set(e, -errno, "lbpf: opening BPF object egress: %s", strerror(errno));
		goto fail;
	}
	bpf_object__for_each_map(map, b->skel->obj) {
		if (!strncmp(bpf_map__name(map), "lantern_sync", 12))
			continue; /* holds no state: created fresh by every lanternd */
		snprintf(path, sizeof(path), "%s/%s", b->pin_root, bpf_map__name(map));
		if (bpf_map__set_pin_path(map, path) < 0) {
			err = lerr_set(e, -errno, "lbpf: pin path %s: %s", path, strerror(errno));
			goto fail;
		}
	}
	err = egress_bpf__load(b->skel);
	if (err) {
		lerr_set(e, err, "lbpf: loading BPF object egress (pins under %s): %s", b->pin_root,
			 strerror(-err));
		goto fail;
	}
	b->fd_config = bpf_map__fd(b->skel->maps.lantern_config);
	b->fd_sync = bpf_map__fd(b->skel->maps.lantern_sync);
	b->fd_sync_inner = bpf_map__fd(b->skel->maps.lantern_sync_inner);
	b->fd_instances = bpf_map__fd(b->skel->maps.lantern_instances);
	b->fd_egress = bpf_map__fd(b->skel->maps.lantern_egress);
	b->fd_stats = bpf_map__fd(b->skel->maps.lantern_stats);
	b->fd_pkt_stats = bpf_map__fd(b->skel->maps.lantern_pkt_stats);
	b->fd_sock_orig = bpf_map__fd(b->skel->maps.lantern_sock_orig);
	b->fd_drops = bpf_map__fd(b->skel->maps.lantern_drops);
	b->fd_events = bpf_map__fd(b->skel->maps.lantern_events);

	err = write_config(b, o, e);
	if (err)
		goto fail;
	err = lbpf_egress_reconcile(b);
	if (err) {
		lerr_set(e, err, "lbpf: reconciling pinned map lantern_egress: %s", strerror(-err));
		goto fail;
	}
	err = attach_all(b, o, &adopt, e);
	if (err)
		goto fail;
	b->rb = ring_buffer__new(b->fd_events, events_trampoline, b, NULL);
	if (!b->rb) {
		err = lerr_set(e, -errno, "lbpf: ring buffer lantern_events: %s", strerror(errno));
		goto fail;
	}
	if (adopted)
		*adopted = adopt;
	*out = b;
	return 0;
fail:
	lbpf_close(b);
	return err;
}

void lbpf_close(struct lbpf *b)
{
	if (!b)
		return;
	ring_buffer__free(b->rb);
	/* closing a pinned link's fd leaves it attached: the pin holds it */
	for (int i = 0; i < LBPF_NPROGS; i++)
		bpf_link__destroy(b->links[i]);
	egress_bpf__destroy(b->skel);
	free(b->learned);
	free(b);
}

int lbpf_unpin_all(const char *pin_root, struct lerr *e)
{
	struct dirent *de;
	char path[PATH_MAX + 256];
	int err = 0;
	DIR *d;

	d = opendir(pin_root);
	if (!d) {
		if (errno == ENOENT)
			return 0;
		return lerr_set(e, -errno, "lbpf: opening pin root %s: %s", pin_root, strerror(errno));
	}
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		snprintf(path, sizeof(path), "%s/%s", pin_root, de->d_name);
		if (unlink(path) < 0 && !err)
			err = lerr_set(e, -errno, "lbpf: removing pin %s: %s", path, strerror(errno));
	}
	closedir(d);
	if (rmdir(pin_root) < 0 && !err)
		err = lerr_set(e, -errno, "lbpf: removing pin root %s: %s", pin_root, strerror(errno));
	return err;
}

int lbpf_events_fd(struct lbpf *b)
{
	return ring_buffer__epoll_fd(b->rb);
}

int lbpf_events_consume_n(struct lbpf *b, lbpf_event_cb cb, void *arg, unsigned max)
{
	int n;

	if (!max)
		return 0;
	b->cb = cb;
	b->cb_arg = arg;
	b->cb_left = max;
	n = ring_buffer__consume(b->rb);
	b->cb = NULL;
	b->cb_arg = NULL;
	return n == LBPF_BUDGET_SPENT ? (int)max : n;
}

int lbpf_events_consume(struct lbpf *b, lbpf_event_cb cb, void *arg)
{
	return lbpf_events_consume_n(b, cb, arg, UINT_MAX);
}

int lbpf_drops_get(struct lbpf *b, struct lantern_drops *out)
{
	uint32_t zero = 0;

	return bpf_map_lookup_elem(b->fd_drops, &zero, out) < 0 ? -errno : 0;
}

int lbpf_set_audit_all(struct lbpf *b, bool on)
{
	struct lantern_config c;
	uint32_t zero = 0;

	if (bpf_map_lookup_elem(b->fd_config, &zero, &c) < 0)
		return -errno;
	c.flags = on ? (c.flags | LANTERN_F_AUDIT) : (c.flags & ~(uint32_t)LANTERN_F_AUDIT);
	return bpf_map_update_elem(b->fd_config, &zero, &c, BPF_ANY) < 0 ? -errno : 0;
}
