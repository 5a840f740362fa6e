/* tmbench.c: the benchmark-only programs of tm_bench.bpf.c, for bench/telemetry.
 *
 * Empty raw_syscalls programs measure the floor any tracepoint-based syscall capture
 * pays on this kernel; the synthetic producer writes process events into the pinned
 * lantern_tm_events ring buffer of a telemetry instance so the consumer can be driven
 * beyond what a fork loop reaches. Nothing here is pinned: closing detaches. */
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lantern/lbpf_tm.h"
#include "tm_bench.h"
#include "tm_bench.skel.h"

struct lbpf_tm_floor {
	struct tm_bench_bpf *skel;
	struct bpf_link *links[2];
};

struct lbpf_tm_burst {
	struct tm_bench_bpf *skel;
	uint64_t cgid;
};

int lbpf_tm_floor_open(enum lbpf_sys_hook h, bool with_exit, struct lbpf_tm_floor **out,
		       struct lerr *e)
{
	struct lbpf_tm_floor *f;
	struct bpf_program *p[2];
	int err;

	*out = NULL;
	if (h >= LBPF_SYS_NONE)
		return lerr_set(e, -EINVAL, "lbpf: floor: no syscall hook %d", (int)h);
	f = calloc(1, sizeof(*f));
	if (!f)
		return lerr_set(e, -ENOMEM, "lbpf: out of memory");
	f->skel = tm_bench_bpf__open();
	if (!f->skel) {
		err = lerr_set(e, -errno, "lbpf: opening BPF object tm_bench: %s", strerror(errno));
		goto fail;
	}
	{
		struct tm_bench_bpf *s = f->skel;
		struct bpf_program *enter[] = { s->progs.floor_enter_btf, s->progs.floor_enter_raw,
						s->progs.floor_enter_tp };
		struct bpf_program *exit_[] = { s->progs.floor_exit_btf, s->progs.floor_exit_raw,
						s->progs.floor_exit_tp };

		for (int i = 0; i < 3; i++) {
			bpf_program__set_autoload(enter[i], h == (enum lbpf_sys_hook)i);
			bpf_program__set_autoload(exit_[i], with_exit && h == (enum lbpf_sys_hook)i);
		}
		bpf_program__set_autoload(s->progs.lantern_tm_burst, false);
		p[0] = enter[h];
		p[1] = with_exit ? exit_[h] : NULL;
	}
	if ((err = tm_bench_bpf__load(f->skel))) {
		lerr_set(e, err, "lbpf: loading BPF object tm_bench: %s", strerror(-err));
		goto fail;
	}
	for (int i = 0; i < 2 && p[i]; i++) {
		f->links[i] = bpf_program__attach(p[i]);
		if (!f->links[i]) {
			err = lerr_set(e, -errno, "lbpf: attaching %s: %s", bpf_program__name(p[i]),
				       strerror(errno));
			goto fail;
		}
	}
	*out = f;
	return 0;
fail:
	lbpf_tm_floor_close(f);
	return err;
}

void lbpf_tm_floor_close(struct lbpf_tm_floor *f)
{
	if (!f)
		return;
	for (int i = 0; i < 2; i++)
		bpf_link__destroy(f->links[i]);
	tm_bench_bpf__destroy(f->skel);
	free(f);
}

int lbpf_tm_burst_open(const char *pin_root, uint64_t cgid, struct lbpf_tm_burst **out,
		       struct lerr *e)
{
	struct bpf_map_info info = { 0 };
	__u32 len = sizeof(info);
	struct lbpf_tm_burst *b;
	char path[4096];
	int err, fd;

	*out = NULL;
	snprintf(path, sizeof(path), "%s/lantern_tm_events", pin_root);
	fd = bpf_obj_get(path);
	if (fd < 0)
		return lerr_set(e, -errno, "lbpf: burst: no ring buffer pinned at %s: %s", path,
				strerror(errno));
	b = calloc(1, sizeof(*b));
	if (!b) {
		close(fd);
		return lerr_set(e, -ENOMEM, "lbpf: out of memory");
	}
	b->cgid = cgid;
	b->skel = tm_bench_bpf__open();
	if (!b->skel) {
		err = lerr_set(e, -errno, "lbpf: opening BPF object tm_bench: %s", strerror(errno));
		goto fail;
	}
	for (struct bpf_program *p = NULL; (p = bpf_object__next_program(b->skel->obj, p));)
		bpf_program__set_autoload(p, p == b->skel->progs.lantern_tm_burst);
	/* the pinned ring buffer, at its own size */
	if (bpf_obj_get_info_by_fd(fd, &info, &len) == 0)
		bpf_map__set_max_entries(b->skel->maps.lantern_tm_events, info.max_entries);
	if (bpf_map__reuse_fd(b->skel->maps.lantern_tm_events, fd) < 0) {
		err = lerr_set(e, -errno, "lbpf: burst: reusing ring buffer %s: %s", path,
			       strerror(errno));
		goto fail;
	}
	if ((err = tm_bench_bpf__load(b->skel))) {
		lerr_set(e, err, "lbpf: loading BPF object tm_bench (burst): %s", strerror(-err));
		goto fail;
	}
	close(fd);
	*out = b;
	return 0;
fail:
	close(fd);
	lbpf_tm_burst_close(b);
	return err;
}

int lbpf_tm_burst(struct lbpf_tm_burst *b, uint32_t n, uint32_t *failed)
{
	struct lantern_tm_burst_args a = { .cgroup_id = b->cgid, .n = n };
	/* a syscall program's context is copied back into ctx_in */
	LIBBPF_OPTS(bpf_test_run_opts, o, .ctx_in = &a, .ctx_size_in = sizeof(a));

	if (bpf_prog_test_run_opts(bpf_program__fd(b->skel->progs.lantern_tm_burst), &o) < 0)
		return -errno;
	*failed = a.failed;
	return 0;
}

void lbpf_tm_burst_close(struct lbpf_tm_burst *b)
{
	if (!b)
		return;
	tm_bench_bpf__destroy(b->skel);
	free(b);
}

int lbpf_tm_syscall_links(void)
{
	__u32 id = 0;
	int n = 0;

	while (bpf_link_get_next_id(id, &id) == 0) {
		struct bpf_link_info info = { 0 };
		__u32 len = sizeof(info);
		char name[32] = "";
		int fd = bpf_link_get_fd_by_id(id);

		if (fd < 0)
			continue;
		info.raw_tracepoint.tp_name = (__u64)(unsigned long)name;
		info.raw_tracepoint.tp_name_len = sizeof(name);
		if (bpf_obj_get_info_by_fd(fd, &info, &len) == 0 &&
		    info.type == BPF_LINK_TYPE_RAW_TRACEPOINT &&
		    (!strcmp(name, "sys_enter") || !strcmp(name, "sys_exit")))
			n++;
		close(fd);
	}
	return n;
}
