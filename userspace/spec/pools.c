/* pools.c: the node's pools file (lanternd --pools FILE, docs/pools.md), checked with
 * the same node tree and field walkers as agent.yaml, so every error names
 * FILE:LINE:COL and the field, and every one is reported, not only the first.
 *
 *   pools:
 *     - name: small
 *       image_digest: lantern/busybox@sha256:...
 *       isolation: trusted          # default standard
 *       network: none               # none (default) or bridge
 *       limits: {vcpu: 500m, memory: 256Mi, scratch_size: 64Mi}
 *       size: {min: 1, max: 4}
 */
#include "lantern/spec.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lantern/util.h"
#include "spec_int.h"

static const char *const pool_nets[] = { [SPEC_POOL_NET_NONE] = "none", [SPEC_POOL_NET_BRIDGE] = "bridge" };

const char *spec_pool_net_name(enum spec_pool_net n)
{
	return (unsigned)n < ARRAY_SIZE(pool_nets) ? pool_nets[n] : "unknown";
}

/* A pool's limits: the shape of its sandboxes' instances. Per-run limits (timeout,
 * budgets) are each run's own and have no place here. */
static void parse_pool_limits(struct sctx *c, struct snode *n, const char *path, struct spec_limits *l)
{
	struct field f[] = { { "vcpu" }, { "memory" }, { "scratch_size" } };
	char sub[96];

	if (!walk_map(c, n, path, "a pool's limits", f, ARRAY_SIZE(f)))
		return;
	snprintf(sub, sizeof(sub), "%s.vcpu", path);
	parse_quantity(c, field_val(f, ARRAY_SIZE(f), "vcpu"), sub, true, &l->vcpu_milli);
	snprintf(sub, sizeof(sub), "%s.memory", path);
	parse_quantity(c, field_val(f, ARRAY_SIZE(f), "memory"), sub, false, &l->memory_bytes);
	snprintf(sub, sizeof(sub), "%s.scratch_size", path);
	parse_quantity(c, field_val(f, ARRAY_SIZE(f), "scratch_size"), sub, false, &l->scratch_bytes);
}

static void parse_size(struct sctx *c, struct snode *n, const char *path, struct spec_pool *p)
{
	struct field f[] = { { "min" }, { "max" } };
	struct snode *vmin, *vmax;
	uint64_t min = 0, max = 0;
	char sub[96];
	bool ok_min = true, ok_max;

	if (!walk_map(c, n, path, "a pool's size", f, ARRAY_SIZE(f)))
		return;
	vmin = field_val(f, ARRAY_SIZE(f), "min");
	vmax = field_val(f, ARRAY_SIZE(f), "max");
	snprintf(sub, sizeof(sub), "%s.min", path);
	if (!unset(vmin))
		ok_min = get_uint(c, vmin, sub, &min);
	snprintf(sub, sizeof(sub), "%s.max", path);
	if (unset(vmax)) {
		missing(c, n, sub);
		return;
	}
	if (!(ok_max = get_uint(c, vmax, sub, &max)))
		return;
	if (max < 1 || max > SPEC_POOL_SIZE_MAX) {
		sctx_error(c, vmax->line, vmax->col, sub, "%llu is not from 1 to %d", (unsigned long long)max,
			   SPEC_POOL_SIZE_MAX);
		return;
	}
	if (ok_min && min > max) {
		snprintf(sub, sizeof(sub), "%s.min", path);
		sctx_error(c, vmin->line, vmin->col, sub, "%llu is more than size.max (%llu)",
			   (unsigned long long)min, (unsigned long long)max);
		return;
	}
	p->min = (uint32_t)min;
	p->max = (uint32_t)max;
}

static void parse_pool(struct sctx *c, struct snode *n, size_t idx, struct spec_pool *p)
{
	struct field f[] = { { "name" }, { "image_digest" }, { "isolation" }, { "network" }, { "limits" },
			     { "size" } };
	const char *iso[SPEC_ISO_DEVCONTAINER + 1];
	char path[48], sub[96];
	struct snode *v;
	int e;

	snprintf(path, sizeof(path), "pools[%zu]", idx);
	p->line = n->line;
	p->col = n->col;
	if (!walk_map(c, n, path, "a pool", f, ARRAY_SIZE(f)))
		return;
	snprintf(sub, sizeof(sub), "%s.name", path);
	if (unset(v = field_val(f, ARRAY_SIZE(f), "name")))
		missing(c, n, sub);
	else if ((p->name = get_str(c, v, sub)) && (!valid_name(p->name) || strlen(p->name) > 63))
		sctx_error(c, v->line, v->col, sub, "\"%s\" is not a valid name (lowercase letters, digits, '-' "
			   "and '.', starting and ending with a letter or digit, at most 63 characters)", p->name);
	snprintf(sub, sizeof(sub), "%s.image_digest", path);
	if (unset(v = field_val(f, ARRAY_SIZE(f), "image_digest"))) {
		missing(c, n, sub);
	} else if ((p->image_digest = get_str(c, v, sub))) {
		const char *at = strrchr(p->image_digest, '@');
		const char *d = at ? at + 1 : p->image_digest;

		if (!valid_digest(d) || (at && at == p->image_digest))
			sctx_error(c, v->line, v->col, sub, "\"%s\" is not pinned by digest: a pool's image is "
				   "NAME@sha256:HEX or sha256:HEX", p->image_digest);
	}
	for (size_t i = 0; i < ARRAY_SIZE(iso); i++)
		iso[i] = spec_isolation_name((enum spec_isolation)i);
	snprintf(sub, sizeof(sub), "%s.isolation", path);
	if (!unset(v = field_val(f, ARRAY_SIZE(f), "isolation")) &&
	    get_enum(c, v, sub, "an isolation class", iso, ARRAY_SIZE(iso), &e))
		p->isolation = (enum spec_isolation)e;
	snprintf(sub, sizeof(sub), "%s.network", path);
	if (!unset(v = field_val(f, ARRAY_SIZE(f), "network")) &&
	    get_enum(c, v, sub, "a pool's network (none: loopback only; bridge: the node bridge, for "
		     "allowlist_domain and open specs)", pool_nets, ARRAY_SIZE(pool_nets), &e))
		p->network = (enum spec_pool_net)e;
	snprintf(sub, sizeof(sub), "%s.limits", path);
	if (!unset(v = field_val(f, ARRAY_SIZE(f), "limits")))
		parse_pool_limits(c, v, sub, &p->limits);
	snprintf(sub, sizeof(sub), "%s.size", path);
	if (unset(v = field_val(f, ARRAY_SIZE(f), "size")))
		missing(c, n, sub);
	else
		parse_size(c, v, sub, p);
}

static void parse_pools(struct sctx *c, struct snode *root, struct spec_pools *out)
{
	struct field f[] = { { "pools" } };
	struct snode *v;

	if (root->kind != SN_MAP) {
		sctx_error(c, root->line, root->col, NULL, "expected a mapping with \"pools\", found %s",
			   kind_name(root));
		return;
	}
	if (!walk_map(c, root, "", "a pools file", f, ARRAY_SIZE(f)))
		return;
	if (unset(v = field_val(f, ARRAY_SIZE(f), "pools"))) {
		missing(c, root, "pools");
		return;
	}
	if (v->kind != SN_SEQ) {
		sctx_error(c, v->line, v->col, "pools", "expected a list of pools, found %s", kind_name(v));
		return;
	}
	if (v->n > SPEC_POOLS_MAX) {
		sctx_error(c, v->line, v->col, "pools", "%zu pools: at most %d", v->n, SPEC_POOLS_MAX);
		return;
	}
	if (!(out->v = calloc(v->n ? v->n : 1, sizeof(*out->v)))) {
		c->oom = true;
		return;
	}
	out->n = v->n;
	for (size_t i = 0; i < v->n; i++) {
		parse_pool(c, v->kids[i], i, &out->v[i]);
		for (size_t k = 0; k < i && out->v[i].name; k++) {
			if (out->v[k].name && !strcmp(out->v[k].name, out->v[i].name)) {
				char sub[48];

				snprintf(sub, sizeof(sub), "pools[%zu].name", i);
				sctx_error(c, v->kids[i]->line, v->kids[i]->col, sub,
					   "\"%s\" is declared twice (first at line %d)", out->v[i].name, out->v[k].line);
				break;
			}
		}
	}
}

void spec_pools_free(struct spec_pools *p)
{
	if (!p)
		return;
	for (size_t i = 0; p->v && i < p->n; i++) {
		free(p->v[i].name);
		free(p->v[i].image_digest);
	}
	free(p->v);
	free(p->file);
	*p = (struct spec_pools){ 0 };
}

int spec_pools_parse(const char *file, const char *buf, size_t len, struct spec_pools *out,
		     struct spec_errors *errs)
{
	struct sctx c = { .file = file ? file : "pools.yaml" };
	struct snode *root, *all = NULL;
	int err = 0;

	*out = (struct spec_pools){ 0 };
	if (errs)
		*errs = (struct spec_errors){ 0 };
	if (!(out->file = strdup(c.file)))
		return -ENOMEM;
	root = snode_parse(&c, buf, len, &all);
	if (root)
		parse_pools(&c, root, out);
	snode_free_all(all);
	if (c.oom)
		sctx_error(&c, 1, 1, NULL, "out of memory");
	if (c.n) {
		err = c.oom ? -ENOMEM : -EINVAL;
		hand_out(&c, errs);
		spec_pools_free(out);
		return err;
	}
	free(c.v);
	return 0;
}

int spec_pools_parse_file(const char *path, struct spec_pools *out, struct spec_errors *errs)
{
	char *buf = NULL;
	size_t len = 0;
	int err;

	*out = (struct spec_pools){ 0 };
	if ((err = read_input(path, &buf, &len, errs)))
		return err;
	err = spec_pools_parse(path, buf, len, out, errs);
	free(buf);
	return err;
}
