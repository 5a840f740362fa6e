/* lease.c: the leases of the runs a control plane gave this node, and the node fencing
 * itself when it cannot renew them.
 *
 * Why part of the control-plane link and not a subscriber of its own: a lease exists
 * only because a control plane granted one with an assignment, its renewals travel on
 * the same stream as the assignments (the tunnel's thread sends them), and it is keyed
 * by the link from the control plane's run id to the local run, which is this
 * module's. What a lease means to the rest of the node is the run's own: its epoch
 * and whether it was fenced (run.h), which the durable subscriber reads.
 *
 * Counting: a renewal's grant extends a lease to TTL after the renewal was SENT (the
 * control plane counts from when it received it, later), so this node's lease always
 * runs out first. Every 100 ms the leases are checked; a live run whose lease ran out
 * is fenced (run_fence: its workload killed at once, its end never reported): by then
 * the control plane may have given it to another node. The leases' ends are kept in
 * STATE/tunnel/leases.json (unix ms), so a restarted lanternd fences what expired
 * while it was down and keeps what did not. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "cplane_internal.h"
#include "lantern/util.h"

#define LEASE_CHECK_MS 100

static int64_t mono_ms(void)
{
	return (int64_t)(util_now_ns(CLOCK_MONOTONIC) / 1000000);
}

static void leases_path(const struct cplane *c, char *out, size_t len)
{
	snprintf(out, len, "%s/leases.json", c->dir);
}

void leases_save(struct cplane *c)
{
	int64_t now_mono = mono_ms(), now_unix = cplane_unix_ms();
	char path[PATH_MAX + 16], *s;
	json_t *j = json_object();

	for (struct link *l = c->links; j && l; l = l->next)
		if (l->ttl_ms)
			json_object_set_new(j, l->cp_id, json_pack("{s:I, s:i}", "until_unix_ms",
								   (json_int_t)(now_unix + l->lease_until - now_mono),
								   "ttl_ms", l->ttl_ms));
	s = j ? json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
	json_decref(j);
	leases_path(c, path, sizeof(path));
	/* not synced: a crash of lanternd keeps the page cache; a power loss ends the
	 * workloads these leases are for */
	if (!s || util_write_file_replace(path, s, strlen(s)) < 0)
		log_warn("control plane: cannot save the leases in %s: after a restart they count as "
			 "expired", path);
	free(s);
}

void leases_load(struct cplane *c)
{
	char path[PATH_MAX + 16];
	int64_t now_mono = mono_ms(), now_unix = cplane_unix_ms();
	json_t *j;

	leases_path(c, path, sizeof(path));
	j = json_load_file(path, 0, NULL);
	for (struct link *l = c->links; l; l = l->next) {
		json_t *x = json_object_get(j, l->cp_id);

		if (!x)
			continue;
		l->ttl_ms = (int)json_integer_value(json_object_get(x, "ttl_ms"));
		l->lease_until = now_mono + json_integer_value(json_object_get(x, "until_unix_ms")) - now_unix;
	}
	json_decref(j);
}

void lease_start(struct cplane *c, struct link *l, int ttl_ms, int64_t recv_ms)
{
	l->ttl_ms = ttl_ms;
	/* until the first renewal's grant: from when the assignment arrived, which is after
	 * the control plane started counting */
	l->lease_until = recv_ms + ttl_ms;
	if (ttl_ms)
		leases_save(c);
}

void lease_fence(struct cplane *c, struct link *l, struct run *r, const char *why)
{
	run_fence(r, why);
	tunnel_forget(c->t, l->cp_id);
}

void lease_granted(struct cplane *c, const struct tunnel_ev *ev)
{
	for (size_t i = 0; i < ev->n_renewed; i++) {
		struct link *l = link_by_cp(c, ev->renewed[i]);

		if (l && l->ttl_ms && ev->sent_ms + ev->lease_ttl_ms > l->lease_until)
			l->lease_until = ev->sent_ms + ev->lease_ttl_ms;
	}
	for (size_t i = 0; i < ev->n_lost; i++) {
		struct link *l = link_by_cp(c, ev->lost[i]);
		struct run *r = l ? runs_find(c->runs, l->local) : NULL;
		char why[512];

		if (!r || run_status_final(run_status(r)))
			continue;
		snprintf(why, sizeof(why), "the control plane says the lease of run %s (epoch %lld) is "
			 "lost: %s", l->cp_id, (long long)l->epoch, ev->lost_why[i]);
		lease_fence(c, l, r, why);
	}
	leases_save(c);
}

void lease_timer(struct loop *lp, void *arg)
{
	struct cplane *c = arg;
	int64_t now = mono_ms();

	for (struct link *l = c->links; l; l = l->next) {
		struct run *r;
		char why[512];

		if (!l->ttl_ms || now <= l->lease_until || !(r = runs_find(c->runs, l->local)) ||
		    run_status_final(run_status(r)))
			continue;
		snprintf(why, sizeof(why), "the lease of run %s (epoch %lld) was not renewed within its "
			 "%d ms TTL (expired %lld ms ago): another node may hold it now", l->cp_id,
			 (long long)l->epoch, l->ttl_ms, (long long)(now - l->lease_until));
		lease_fence(c, l, r, why);
	}
	c->lease_timer = loop_timer_add(lp, LEASE_CHECK_MS, lease_timer, c);
}
