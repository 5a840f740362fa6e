/* egress.c: the instance and policy operations on the pinned maps.
 *
 * Versioning: each lbpf_instance_set writes the whole new policy into lantern_egress
 * under a fresh policy id, then flips lantern_instances[cgid] to that id with one map
 * update, then deletes the old id's entries. A connect sees either the old id (whose
 * entries are all still there) or the new one (whose entries are all already there),
 * never a mixture and never nothing. */
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lantern/policy.h"
#include "lbpf_internal.h"

#define KEY_PREFIX_BITS 32 /* policy_id in front of the address */

static void make_key(struct lantern_lpm_key *k, uint32_t policy_id, const uint8_t addr[16],
		     unsigned prefix)
{
	memset(k, 0, sizeof(*k));
	k->prefixlen = KEY_PREFIX_BITS + prefix;
	k->policy_id = policy_id;
	memcpy(k->addr, addr, 16);
}

/* A full hash map says E2BIG, a full LPM trie ENOSPC: both mean "map full". */
static bool map_full(int err)
{
	return err == -E2BIG || err == -ENOSPC || err == -ENOMEM;
}

/* Does the entry hold a DNS-learned slot (one with an expiry)? */
static bool value_learned(const struct lantern_egress_value *v)
{
	for (uint32_t i = 0; i < v->nslots && i < LANTERN_MAX_SLOTS; i++)
		if (v->slot[i].expires_ns)
			return true;
	return false;
}

static struct lbpf_learned *learned_find(struct lbpf *b, uint64_t cgid)
{
	for (size_t i = 0; i < b->n_learned; i++)
		if (b->learned[i].cgid == cgid)
			return &b->learned[i];
	return NULL;
}

/* The instance's count, created (zero) if missing; NULL when out of memory. */
static struct lbpf_learned *learned_get(struct lbpf *b, uint64_t cgid, uint32_t policy_id)
{
	struct lbpf_learned *l = learned_find(b, cgid);

	if (l)
		return l;
	if (b->n_learned == b->cap_learned) {
		size_t nc = b->cap_learned ? b->cap_learned * 2 : 16;
		struct lbpf_learned *nv = realloc(b->learned, nc * sizeof(*nv));

		if (!nv)
			return NULL;
		b->learned = nv;
		b->cap_learned = nc;
	}
	l = &b->learned[b->n_learned++];
	*l = (struct lbpf_learned){ .cgid = cgid, .policy_id = policy_id };
	return l;
}

static void learned_drop(struct lbpf *b, uint64_t cgid)
{
	struct lbpf_learned *l = learned_find(b, cgid);

	if (l)
		*l = b->learned[--b->n_learned];
}

/* Collects the keys of lantern_egress; keep(k) selects. *keys must be freed. */
static int egress_keys(struct lbpf *b, bool (*keep)(const struct lantern_lpm_key *, void *),
		       void *arg, struct lantern_lpm_key **keys, size_t *n)
{
	struct lantern_lpm_key cur, next, *v = NULL;
	size_t cap = 0, cnt = 0;
	void *prev = NULL;

	while (bpf_map_get_next_key(b->fd_egress, prev, &next) == 0) {
		cur = next;
		prev = &cur;
		if (!keep(&cur, arg))
			continue;
		if (cnt == cap) {
			size_t nc = cap ? cap * 2 : 64;
			struct lantern_lpm_key *nv = realloc(v, nc * sizeof(*v));
			if (!nv) {
				free(v);
				return -ENOMEM;
			}
			v = nv;
			cap = nc;
		}
		v[cnt++] = cur;
	}
	if (errno != ENOENT) {
		free(v);
		return -errno;
	}
	*keys = v;
	*n = cnt;
	return 0;
}

static bool key_of_policy(const struct lantern_lpm_key *k, void *arg)
{
	return k->policy_id == *(uint32_t *)arg;
}

int lbpf_egress_delete_policy(struct lbpf *b, uint32_t policy_id)
{
	struct lantern_lpm_key *keys;
	size_t n;
	int err;

	err = egress_keys(b, key_of_policy, &policy_id, &keys, &n);
	if (err)
		return err;
	for (size_t i = 0; i < n; i++)
		bpf_map_delete_elem(b->fd_egress, &keys[i]);
	free(keys);
	return (int)n;
}

struct id_set {
	uint32_t *ids;
	size_t n;
};

static bool key_orphan(const struct lantern_lpm_key *k, void *arg)
{
	struct id_set *s = arg;

	for (size_t i = 0; i < s->n; i++)
		if (s->ids[i] == k->policy_id)
			return false;
	return true;
}

static bool key_any(const struct lantern_lpm_key *k, void *arg)
{
	return true;
}

int lbpf_egress_reconcile(struct lbpf *b)
{
	struct id_set live = { 0 };
	struct lantern_lpm_key *keys = NULL;
	uint64_t *cgids = NULL;
	uint32_t max_id = 0;
	size_t n_cg = 0, n = 0;
	int err;

	err = lbpf_instance_list(b, &cgids, &n_cg);
	if (err)
		return err;
	live.ids = calloc(n_cg ? n_cg : 1, sizeof(*live.ids));
	if (!live.ids) {
		free(cgids);
		return -ENOMEM;
	}
	b->n_learned = 0;
	for (size_t i = 0; i < n_cg; i++) {
		struct lantern_instance in;

		if (bpf_map_lookup_elem(b->fd_instances, &cgids[i], &in) == 0) {
			live.ids[live.n++] = in.policy_id;
			if (in.policy_id > max_id)
				max_id = in.policy_id;
			if (!learned_get(b, cgids[i], in.policy_id))
				err = -ENOMEM;
		}
	}
	free(cgids);
	if (err) {
		free(live.ids);
		return err;
	}

	err = egress_keys(b, key_orphan, &live, &keys, &n);
	if (!err) {
		for (size_t i = 0; i < n; i++)
			bpf_map_delete_elem(b->fd_egress, &keys[i]);
		free(keys);
		/* ids of entries that could not be deleted must not be reused either */
		err = egress_keys(b, key_any, NULL, &keys, &n);
	}
	if (!err) {
		for (size_t i = 0; i < n; i++) {
			struct lantern_egress_value v;

			if (keys[i].policy_id > max_id)
				max_id = keys[i].policy_id;
			if (bpf_map_lookup_elem(b->fd_egress, &keys[i], &v) < 0 || !value_learned(&v))
				continue;
			for (size_t j = 0; j < b->n_learned; j++)
				if (b->learned[j].policy_id == keys[i].policy_id)
					b->learned[j].n++;
		}
		free(keys);
	}
	free(live.ids);
	b->next_policy_id = max_id + 1;
	return err;
}

static const char *fmt_prefix(const uint8_t addr[16], uint8_t prefix, char *out, size_t len)
{
	policy_format_prefix(addr, prefix, out, len);
	return out;
}

static bool entry_learned(struct lbpf *b, uint32_t policy_id, const uint8_t addr[16])
{
	struct lantern_egress_value v;
	struct lantern_lpm_key k;

	make_key(&k, policy_id, addr, 128);
	return bpf_map_lookup_elem(b->fd_egress, &k, &v) == 0 && value_learned(&v);
}

/* Writes addr/128 under policy_id: the slots that cover it now, plus add. Returns 1
 * when that made an entry hold learned slots it did not hold before, else 0 or -errno. */
static int learn_one(struct lbpf *b, uint32_t policy_id, const uint8_t addr[16],
		     const struct lantern_egress_value *add, struct lerr *e)
{
	struct lantern_egress_value v = { 0 };
	struct lantern_lpm_key k;
	bool before;
	char a[64];
	int err;

	make_key(&k, policy_id, addr, 128);
	if (bpf_map_lookup_elem(b->fd_egress, &k, &v) < 0)
		memset(&v, 0, sizeof(v));
	before = value_learned(&v);
	for (uint32_t i = 0; i < add->nslots && i < LANTERN_MAX_SLOTS; i++) {
		if (policy_value_add(&v, &add->slot[i]) < 0)
			return lerr_set(e, -E2BIG, "lbpf: address %s would need more than %d port rules",
					fmt_prefix(addr, 128, a, sizeof(a)), LANTERN_MAX_SLOTS);
	}
	if (bpf_map_update_elem(b->fd_egress, &k, &v, BPF_ANY) < 0) {
		err = -errno;
		if (map_full(err))
			return lerr_set(e, -ENOSPC, "lbpf: map lantern_egress is full (%d entries): "
					"cannot add %s", LANTERN_MAX_EGRESS, fmt_prefix(addr, 128, a, sizeof(a)));
		return lerr_set(e, err, "lbpf: writing lantern_egress entry %s: %s",
				fmt_prefix(addr, 128, a, sizeof(a)), strerror(-err));
	}
	return !before && value_learned(&v);
}

int lbpf_instance_set(struct lbpf *b, uint64_t cgid, const struct policy *p,
		      uint16_t dns_port, const struct policy_entry *extra, size_t n_extra,
		      struct lerr *e)
{
	struct lantern_instance old, in = { 0 };
	struct lbpf_learned *l;
	uint32_t id, n_learned = 0;
	bool had_old;
	char a[64];
	int err = 0;

	if (p->mode != LANTERN_NET_NONE && p->mode != LANTERN_NET_ALLOWLIST &&
	    p->mode != LANTERN_NET_OPEN)
		return lerr_set(e, -EINVAL, "lbpf: instance %llu: unknown network mode %d",
				(unsigned long long)cgid, (int)p->mode);
	had_old = bpf_map_lookup_elem(b->fd_instances, &cgid, &old) == 0;
	id = b->next_policy_id++;
	if (!id)
		id = b->next_policy_id++;

	for (size_t i = 0; i < p->n_entries; i++) {
		const struct policy_entry *pe = &p->entries[i];
		struct lantern_lpm_key k;

		if (pe->prefix > 128 || pe->val.nslots > LANTERN_MAX_SLOTS) {
			err = lerr_set(e, -EINVAL, "lbpf: instance %llu: bad entry %s",
				       (unsigned long long)cgid, fmt_prefix(pe->addr, pe->prefix, a, sizeof(a)));
			goto rollback;
		}
		make_key(&k, id, pe->addr, pe->prefix);
		if (bpf_map_update_elem(b->fd_egress, &k, &pe->val, BPF_ANY) < 0) {
			err = -errno;
			if (map_full(err))
				lerr_set(e, err = -ENOSPC,
					 "lbpf: map lantern_egress is full (%d entries): policy of "
					 "instance %llu (%zu entries) not installed, previous policy "
					 "kept", LANTERN_MAX_EGRESS, (unsigned long long)cgid,
					 p->n_entries + n_extra);
			else
				lerr_set(e, err, "lbpf: writing lantern_egress entry %s: %s",
					 fmt_prefix(pe->addr, pe->prefix, a, sizeof(a)), strerror(-err));
			goto rollback;
		}
	}
	/* learned addresses inherit what covers them in the new policy */
	for (size_t i = 0; i < n_extra; i++) {
		err = learn_one(b, id, extra[i].addr, &extra[i].val, e);
		if (err < 0)
			goto rollback;
		n_learned += (uint32_t)err;
	}
	if (!(l = learned_get(b, cgid, id))) {
		err = lerr_set(e, -ENOMEM, "lbpf: out of memory");
		goto rollback;
	}

	in.policy_id = id;
	in.net_mode = (uint32_t)p->mode;
	in.flags = p->flags;
	in.dns_port = dns_port;
	/* a new policy keeps the instance's DNS redirect address (lbpf_instance_set_dns_ip4) */
	in.dns_redirect_ip4 = had_old ? old.dns_redirect_ip4 : 0;
	if (bpf_map_update_elem(b->fd_instances, &cgid, &in, BPF_ANY) < 0) {
		err = -errno;
		if (map_full(err))
			lerr_set(e, err = -ENOSPC, "lbpf: map lantern_instances is full (%d instances): "
				 "instance %llu not registered", LANTERN_MAX_INSTANCES,
				 (unsigned long long)cgid);
		else
			lerr_set(e, err, "lbpf: writing lantern_instances[%llu]: %s",
				 (unsigned long long)cgid, strerror(-err));
		goto rollback;
	}
	l->policy_id = id;
	l->n = n_learned;
	/* a policy of network none has no entries (its instances are judged without a
	 * lookup): nothing to wait for before a new one replaces it, as when a pooled
	 * sandbox's run takes it (docs/pools.md) */
	if (had_old && old.policy_id != id && old.net_mode != LANTERN_NET_NONE) {
		/* wait until no program can still hold the old id, then delete its entries */
		uint32_t zero = 0;
		if (bpf_map_update_elem(b->fd_sync, &zero, &b->fd_sync_inner, BPF_ANY) < 0)
			usleep(10000); /* not expected once loaded; a pause far longer than any program run */
		lbpf_egress_delete_policy(b, old.policy_id);
	}
	return 0;
rollback:
	lbpf_egress_delete_policy(b, id);
	if (!had_old)
		learned_drop(b, cgid);
	return err;
}

int lbpf_instance_set_dns_ip4(struct lbpf *b, uint64_t cgid, uint32_t ip4, struct lerr *e)
{
	struct lantern_instance in;
	int err;

	if (bpf_map_lookup_elem(b->fd_instances, &cgid, &in) < 0) {
		err = -errno;
		return lerr_set(e, err, "lbpf: instance %llu: DNS redirect address: not registered: %s",
				(unsigned long long)cgid, strerror(-err));
	}
	in.dns_redirect_ip4 = ip4;
	/* BPF_EXIST: never resurrect an instance removed meanwhile */
	if (bpf_map_update_elem(b->fd_instances, &cgid, &in, BPF_EXIST) < 0) {
		err = -errno;
		return lerr_set(e, err, "lbpf: writing lantern_instances[%llu]: %s",
				(unsigned long long)cgid, strerror(-err));
	}
	return 0;
}

int lbpf_instance_remove(struct lbpf *b, uint64_t cgid)
{
	struct lantern_instance in;

	if (bpf_map_lookup_elem(b->fd_instances, &cgid, &in) < 0)
		return -errno;
	if (bpf_map_delete_elem(b->fd_instances, &cgid) < 0)
		return -errno;
	lbpf_egress_delete_policy(b, in.policy_id);
	bpf_map_delete_elem(b->fd_stats, &cgid);
	bpf_map_delete_elem(b->fd_pkt_stats, &cgid);
	learned_drop(b, cgid);
	return 0;
}

int lbpf_instance_get(struct lbpf *b, uint64_t cgid, struct lantern_instance *out)
{
	return bpf_map_lookup_elem(b->fd_instances, &cgid, out) < 0 ? -errno : 0;
}

int lbpf_instance_list(struct lbpf *b, uint64_t **ids, size_t *n)
{
	uint64_t cur, next, *v = NULL;
	size_t cnt = 0, cap = 0;
	void *prev = NULL;

	while (bpf_map_get_next_key(b->fd_instances, prev, &next) == 0) {
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
		v[cnt++] = next;
		cur = next;
		prev = &cur;
	}
	*ids = v;
	*n = cnt;
	return 0;
}

int lbpf_egress_learn(struct lbpf *b, uint64_t cgid, const uint8_t addr[16],
		      const struct lantern_egress_value *add, struct lerr *e)
{
	struct lantern_instance in;
	struct lbpf_learned *l;
	char a[64];
	int err;

	if (bpf_map_lookup_elem(b->fd_instances, &cgid, &in) < 0)
		return lerr_set(e, -errno, "lbpf: learn: instance %llu is not registered",
				(unsigned long long)cgid);
	if (!(l = learned_get(b, cgid, in.policy_id)))
		return lerr_set(e, -ENOMEM, "lbpf: out of memory");
	if (l->n >= b->learn_max && !entry_learned(b, in.policy_id, addr))
		return lerr_set(e, -EDQUOT, "lbpf: instance %llu already holds %u DNS-learned "
				"addresses, its limit (--dns-learn-max): %s not added",
				(unsigned long long)cgid, l->n, fmt_prefix(addr, 128, a, sizeof(a)));
	err = learn_one(b, in.policy_id, addr, add, e);
	if (err < 0)
		return err;
	l->n += (uint32_t)err;
	return 0;
}

uint32_t lbpf_egress_learned(struct lbpf *b, uint64_t cgid)
{
	struct lbpf_learned *l = learned_find(b, cgid);

	return l ? l->n : 0;
}

int lbpf_egress_gc(struct lbpf *b, uint64_t now_boottime_ns)
{
	struct lantern_lpm_key *keys;
	size_t n;
	int err, removed = 0;

	err = egress_keys(b, key_any, NULL, &keys, &n);
	if (err)
		return err;
	for (size_t i = 0; i < n; i++) {
		struct lantern_egress_value v, nv = { 0 };

		if (bpf_map_lookup_elem(b->fd_egress, &keys[i], &v) < 0)
			continue;
		for (uint32_t j = 0; j < v.nslots && j < LANTERN_MAX_SLOTS; j++) {
			if (v.slot[j].expires_ns && v.slot[j].expires_ns <= now_boottime_ns)
				removed++;
			else
				nv.slot[nv.nslots++] = v.slot[j];
		}
		if (nv.nslots == v.nslots)
			continue;
		if (!nv.nslots)
			bpf_map_delete_elem(b->fd_egress, &keys[i]);
		else
			bpf_map_update_elem(b->fd_egress, &keys[i], &nv, BPF_EXIST);
		if (value_learned(&nv))
			continue;
		for (size_t j = 0; j < b->n_learned; j++)
			if (b->learned[j].policy_id == keys[i].policy_id && b->learned[j].n)
				b->learned[j].n--;
	}
	free(keys);
	return removed;
}

int lbpf_egress_dump(struct lbpf *b, uint64_t cgid, struct policy_entry **out, size_t *n)
{
	struct lantern_instance in;
	struct lantern_lpm_key *keys;
	struct policy_entry *v;
	size_t nk, cnt = 0;
	int err;

	if (bpf_map_lookup_elem(b->fd_instances, &cgid, &in) < 0)
		return -errno;
	err = egress_keys(b, key_of_policy, &in.policy_id, &keys, &nk);
	if (err)
		return err;
	v = calloc(nk ? nk : 1, sizeof(*v));
	if (!v) {
		free(keys);
		return -ENOMEM;
	}
	for (size_t i = 0; i < nk; i++) {
		if (bpf_map_lookup_elem(b->fd_egress, &keys[i], &v[cnt].val) < 0)
			continue;
		memcpy(v[cnt].addr, keys[i].addr, 16);
		v[cnt].prefix = (uint8_t)(keys[i].prefixlen - KEY_PREFIX_BITS);
		cnt++;
	}
	free(keys);
	*out = v;
	*n = cnt;
	return 0;
}

/* The per-CPU value of key in a map of counters (structs of __u64 only), summed into
 * out (words __u64s); a key not there is all zeros. */
static int percpu_sum(int fd, uint64_t key, __u64 *out, size_t words)
{
	int ncpu = libbpf_num_possible_cpus();
	__u64 *per;

	memset(out, 0, words * sizeof(*out));
	if (ncpu <= 0)
		return ncpu ? ncpu : -EINVAL;
	if (!(per = calloc((size_t)ncpu * words, sizeof(*per))))
		return -ENOMEM;
	if (bpf_map_lookup_elem(fd, &key, per) < 0) {
		int err = -errno;

		free(per);
		return err == -ENOENT ? 0 : err;
	}
	for (int i = 0; i < ncpu; i++)
		for (size_t k = 0; k < words; k++)
			out[k] += per[(size_t)i * words + k];
	free(per);
	return 0;
}

_Static_assert(sizeof(struct lantern_egress_stats) % sizeof(__u64) == 0, "counters only");
_Static_assert(sizeof(struct lantern_pkt_stats) % sizeof(__u64) == 0, "counters only");

int lbpf_stats_get(struct lbpf *b, uint64_t cgid, struct lantern_egress_stats *out)
{
	return percpu_sum(b->fd_stats, cgid, (__u64 *)out, sizeof(*out) / sizeof(__u64));
}

int lbpf_pkt_stats_get(struct lbpf *b, uint64_t cgid, struct lantern_pkt_stats *out)
{
	return percpu_sum(b->fd_pkt_stats, cgid, (__u64 *)out, sizeof(*out) / sizeof(__u64));
}
