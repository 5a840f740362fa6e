/* runtime.c: the node's runtimes in one table, and the one admission path: each spec
 * goes to the first runtime that claims it, which runs it or refuses it with the
 * reason; a spec nobody claims is refused. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "lantern/runtime.h"

#define RUNTIMES_MAX 8

struct runtimes {
	const struct runtime_ops *ops[RUNTIMES_MAX];
	void *rt[RUNTIMES_MAX];
	int n;
};

struct runtimes *runtimes_new(void)
{
	return calloc(1, sizeof(struct runtimes));
}

void runtimes_free(struct runtimes *rs)
{
	if (!rs)
		return;
	for (int i = 0; i < rs->n; i++)
		if (rs->ops[i]->close)
			rs->ops[i]->close(rs->rt[i]);
	free(rs);
}

int runtimes_add(struct runtimes *rs, const struct runtime_ops *ops, void *rt)
{
	if (rs->n == RUNTIMES_MAX)
		return -ENOSPC;
	rs->ops[rs->n] = ops;
	rs->rt[rs->n++] = rt;
	return 0;
}

int runtimes_admit(const struct runtimes *rs, const struct spec *s, const struct runtime_ops **ops,
		   void **rt, struct lerr *e)
{
	for (int i = 0; i < rs->n; i++) {
		int err = rs->ops[i]->admit(rs->rt[i], s, e);

		if (err == -ENOENT)
			continue;
		if (err < 0)
			return err;
		*ops = rs->ops[i];
		*rt = rs->rt[i];
		return 0;
	}
	return lerr_set(e, EPERM, "spawn: refused: isolation \"%s\" with image \"%s\": no runtime on "
			"this node runs it", spec_isolation_name(s->isolation), s->image_digest);
}

int runtimes_named(const struct runtimes *rs, const char *name, const struct runtime_ops **ops,
		   void **rt)
{
	for (int i = 0; i < rs->n; i++) {
		if (!strcmp(rs->ops[i]->name, name)) {
			*ops = rs->ops[i];
			*rt = rs->rt[i];
			return 0;
		}
	}
	return -ENOENT;
}

size_t runtimes_classes(const struct runtimes *rs, const char **out, size_t max)
{
	static const char probe_image[] =
		"probe@sha256:0000000000000000000000000000000000000000000000000000000000000000";
	size_t n = 0;

	for (int c = SPEC_ISO_STANDARD; c <= SPEC_ISO_DEVCONTAINER && n < max; c++) {
		struct spec img = { .isolation = (enum spec_isolation)c, .image_digest = (char *)probe_image,
				    .network = SPEC_NET_NONE };
		static char *const cmd[] = { "true" };
		struct spec host = img;
		const struct runtime_ops *ops;
		struct lerr e;
		void *rt;

		host.image_digest = "host";
		host.command = (char **)cmd;
		host.n_command = 1;
		if (runtimes_admit(rs, &img, &ops, &rt, &e) == 0 || runtimes_admit(rs, &host, &ops, &rt, &e) == 0)
			out[n++] = spec_isolation_name((enum spec_isolation)c);
	}
	return n;
}

int runtime_refuse_unhonoured(const struct spec *s, struct lerr *e)
{
	if (s->limits.gpu)
		return lerr_set(e, EPERM, "spawn: refused: spec.limits.gpu: %llu GPU%s asked for; this node "
				"has no GPU device path for its runtimes", (unsigned long long)s->limits.gpu,
				s->limits.gpu == 1 ? "" : "s");
	if (s->restore_snapshot_id)
		return lerr_set(e, EPERM, "spawn: refused: spec.restore_snapshot_id: \"%s\": this node has no "
				"snapshot store to restore from", s->restore_snapshot_id);
	return 0;
}

void runtimes_reclaim(const struct runtimes *rs, struct runs *t)
{
	for (int i = 0; i < rs->n; i++)
		if (rs->ops[i]->reclaim)
			rs->ops[i]->reclaim(rs->rt[i], t);
}
