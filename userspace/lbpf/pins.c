/* pins.c: attaching a set of programs so they outlive lanternd, and adopting them
 * when lanternd starts again: the one place that decides, per program, between a
 * link a previous lanternd pinned and a new attachment. Egress (lbpf.c) and telemetry
 * (telemetry.c) both attach through it; their maps are pinned by their own open
 * functions, since which maps are state differs between the two objects. */
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "lbpf_internal.h"

/* Replaces the pin at path. bpffs has no rename, so the pin is briefly absent; the
 * program itself stays attached through its link all along. */
static int pin_replace(int fd, const char *path)
{
	if (unlink(path) < 0 && errno != ENOENT)
		return -errno;
	return bpf_obj_pin(fd, path) < 0 ? -errno : 0;
}

static int pins_attach_one(const char *pin_root, const char *cgroup_path, int *cg_fd,
			   const struct lbpf_pinned_prog *p, struct bpf_link **link, bool *adopted,
			   struct lerr *e)
{
	const char *name = bpf_program__name(p->prog);
	char path[PATH_MAX];
	int err;

	snprintf(path, sizeof(path), "%s/link_%s", pin_root, p->pin);
	if (access(path, F_OK) == 0) {
		*adopted = true;
		if (!p->cgroup)
			return 0; /* the pinned tracing link keeps running its program */
		*link = bpf_link__open(path);
		if (!*link)
			return lerr_set(e, -errno, "lbpf: opening pinned link %s: %s", path, strerror(errno));
		/* the old program runs until the new one is in: no window without the hook */
		if (bpf_link__update_program(*link, p->prog) < 0)
			return lerr_set(e, -errno, "lbpf: swapping program %s into link %s: %s", name,
					path, strerror(errno));
	} else {
		if (p->cgroup) {
			if (*cg_fd < 0) {
				*cg_fd = open(cgroup_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
				if (*cg_fd < 0)
					return lerr_set(e, -errno, "lbpf: opening cgroup %s: %s",
							cgroup_path, strerror(errno));
			}
			*link = bpf_program__attach_cgroup(p->prog, *cg_fd);
			if (!*link)
				return lerr_set(e, -errno, "lbpf: attaching %s to cgroup %s: %s", name,
						cgroup_path, strerror(errno));
		} else {
			*link = bpf_program__attach(p->prog);
			if (!*link)
				return lerr_set(e, -errno, "lbpf: attaching %s: %s", name, strerror(errno));
		}
		if (bpf_link__pin(*link, path) < 0)
			return lerr_set(e, -errno, "lbpf: pinning link %s: %s", path, strerror(errno));
	}
	snprintf(path, sizeof(path), "%s/prog_%s", pin_root, p->pin);
	if ((err = pin_replace(bpf_program__fd(p->prog), path)) < 0)
		return lerr_set(e, err, "lbpf: pinning program %s at %s: %s", name, path, strerror(-err));
	return 0;
}

int lbpf_pins_attach(const char *pin_root, const char *cgroup_path,
		     const struct lbpf_pinned_prog *progs, size_t n, struct bpf_link **links,
		     bool *adopted, struct lerr *e)
{
	int cg_fd = -1, err = 0;

	for (size_t i = 0; i < n && !err; i++)
		err = pins_attach_one(pin_root, cgroup_path, &cg_fd, &progs[i], &links[i], adopted, e);
	if (cg_fd >= 0)
		close(cg_fd);
	return err;
}
