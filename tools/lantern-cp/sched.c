/* sched.c: the leader's work, all of it from the database and back (another replica
 * may be serving the planes' streams and the operator's calls):
 *
 * Placement. Queued runs (an index of their own, not a scan of every run) in
 * submission order go to a registered, connected, live, non-draining plane of their
 * tenant that advertised the run's isolation class (a plane that advertised none
 * takes any: its admission decides) and has room: fewer live runs than max_runs, and
 * the run's limits within what the plane last said it can still take (CPU, memory,
 * scratch, free slots), less what was placed there since. A run with
 * spec.preferred_regions goes to a plane in one of them, and elsewhere only when none
 * fits and its spec allows it (metadata.labels["lantern.dev/region-fallback"]: allow).
 * Least loaded first, ties to the plane that took the fewest runs. A run whose journal is in a store (placed
 * before on a node with one) goes only to a node of the same store. A run that fits
 * nowhere waits, and its row says why (why_queued in the operator API). Each placement
 * raises the run's epoch and starts its lease.
 *
 * The watchdog. A live run whose lease expired (its node stopped renewing it) is
 * queued again: with resume when its node had accepted it (the next node continues it
 * from its journal), failed when that node keeps no journal store (nothing could
 * continue it). A plane that misses heartbeats is marked down; its runs without a
 * journal store fail with that reason, the others are left to their leases.
 *
 * A replica that just became leader gives planes a heartbeat window and leases a TTL
 * before judging them: they may have been renewing through a replica that stopped.
 * Every write here carries the leader fence (leader.c). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cp.h"

#define QUEUE_BATCH 512

static bool has_class(const struct plane *p, const char *cls)
{
	size_t n = strlen(cls);

	if (!p->classes[0])
		return true;
	for (const char *c = p->classes; (c = strstr(c, cls)); c += n)
		if ((c == p->classes || c[-1] == ',') && (c[n] == ',' || c[n] == '\0'))
			return true;
	return false;
}

static int plane_load(const struct plane *p)
{
	return p->active > p->reported_active ? p->active : p->reported_active;
}

/* How far a plane gets with a run; the furthest any plane got says why it waits. */
enum stage { ST_NONE, ST_LIVE, ST_CLASS, ST_REGION, ST_STORE, ST_DRAIN, ST_OK };

static bool in_regions(const struct plane *p, const char *regions)
{
	size_t n = strlen(p->region);

	if (!n)
		return false;
	for (const char *c = regions; (c = strstr(c, p->region)); c += n)
		if ((c == regions || c[-1] == ',') && (c[n] == ',' || c[n] == '\0'))
			return true;
	return false;
}

static bool room(const struct plane *p, const struct cprun *r, char *why, size_t len)
{
	if (p->max_runs && plane_load(p) >= p->max_runs) {
		snprintf(why, len, "%s runs %d of its %d", p->id, plane_load(p), p->max_runs);
		return false;
	}
	if (p->cap_cpu >= 0 && r->cpu_millis && p->cap_cpu - p->pend_cpu < r->cpu_millis) {
		snprintf(why, len, "the run needs %lldm of CPU, %s has %lldm", (long long)r->cpu_millis,
			 p->id, (long long)(p->cap_cpu - p->pend_cpu));
		return false;
	}
	if (p->cap_memory >= 0 && r->memory_bytes && p->cap_memory - p->pend_memory < r->memory_bytes) {
		snprintf(why, len, "the run needs %lld bytes of memory, %s has %lld",
			 (long long)r->memory_bytes, p->id, (long long)(p->cap_memory - p->pend_memory));
		return false;
	}
	if (p->cap_scratch >= 0 && r->scratch_bytes && p->cap_scratch - p->pend_scratch < r->scratch_bytes) {
		snprintf(why, len, "the run needs %lld bytes of scratch, %s has %lld",
			 (long long)r->scratch_bytes, p->id, (long long)(p->cap_scratch - p->pend_scratch));
		return false;
	}
	if (p->cap_slots >= 0 && p->cap_slots - p->pend_slots <= 0) {
		snprintf(why, len, "%s has no free slot", p->id);
		return false;
	}
	return true;
}

static enum stage judge(const struct plane *p, const struct cprun *r, int64_t live_after,
			bool any_region, char *why, size_t len)
{
	if (strcmp(p->tenant, r->tenant) || (r->pin[0] && strcmp(p->id, r->pin)))
		return ST_NONE;
	if (!p->registered || p->down || !p->stream_replica[0] || p->hb_us < live_after)
		return ST_NONE;
	/* an operator's pin skips the class filter: the node's admission decides */
	if (!r->pin[0] && !has_class(p, r->isolation))
		return ST_LIVE;
	if (!r->pin[0] && !any_region && r->regions[0] && !in_regions(p, r->regions))
		return ST_CLASS;
	if (r->store[0] && strcmp(p->journal_store, r->store))
		return ST_REGION;
	if (p->draining)
		return ST_STORE;
	if (!room(p, r, why, len))
		return ST_DRAIN;
	return ST_OK;
}

static void why_waiting(const struct cprun *r, enum stage best, const char *room_why, char *out,
			size_t len)
{
	switch (best) {
	case ST_NONE:
		if (r->pin[0])
			snprintf(out, len, "pinned plane %s is not connected and live", r->pin);
		else
			snprintf(out, len, "no connected, live node of tenant %s", r->tenant);
		break;
	case ST_LIVE:
		snprintf(out, len, "no connected node advertises isolation class %s", r->isolation);
		break;
	case ST_CLASS:
		snprintf(out, len, "no connected node in its preferred regions (%s)%s", r->regions,
			 r->region_fallback ? "" : "; its spec allows no other");
		break;
	case ST_REGION:
		snprintf(out, len, "waiting for a connected node of journal store %s, where its journal is",
			 r->store);
		break;
	case ST_STORE:
		snprintf(out, len, "every node that can run it is draining");
		break;
	default:
		snprintf(out, len, "no node has room for it: %s", room_why);
		break;
	}
}

struct queue {
	struct cprun *r;
	size_t n, cap;
};

static void queue_cb(void *arg, struct cprun *r)
{
	struct queue *q = arg;

	if (q->n == q->cap) {
		struct cprun *n = realloc(q->r, (q->cap ? q->cap * 2 : 64) * sizeof(*n));

		if (!n)
			return;
		q->r = n;
		q->cap = q->cap ? q->cap * 2 : 64;
	}
	q->r[q->n] = *r;
	/* the strings stay with the row's copy: this one keeps only what placement reads */
	q->r[q->n].config_json = q->r[q->n].input_json = q->r[q->n].output_json = NULL;
	q->n++;
}

static struct plane *find(struct plane *list, const char *id)
{
	for (struct plane *p = list; p; p = p->next)
		if (!strcmp(p->id, id))
			return p;
	return NULL;
}

/* Live runs count against their plane; those placed since its last report of what it
 * can take count against that too. Row (one per plane): plane_id, live runs, and the
 * count and limits of those placed since the report. */
static void live_cb(void *arg, int ncol, char **v)
{
	struct plane *p = ncol >= 6 && v[0] ? find(arg, v[0]) : NULL;

	if (!p)
		return;
	p->active = atoi(v[1] ?: "0");
	p->pend_slots = atoi(v[2] ?: "0");
	p->pend_cpu = atoll(v[3] ?: "0");
	p->pend_memory = atoll(v[4] ?: "0");
	p->pend_scratch = atoll(v[5] ?: "0");
}

/* Least loaded first, ties to the plane that took the fewest runs; a run that lost its
 * lease goes back to the plane that lost it only when no other can take it (that plane
 * may look live for a heartbeat longer than it is). */
static bool better(const struct plane *p, const struct plane *best, const struct cprun *r)
{
	bool p_lost = !strcmp(p->id, r->lost_plane), b_lost;

	if (!best)
		return true;
	b_lost = !strcmp(best->id, r->lost_plane);
	if (p_lost != b_lost)
		return !p_lost;
	return plane_load(p) < plane_load(best) ||
	       (plane_load(p) == plane_load(best) && p->placed < best->placed);
}

static bool place_one(struct cp *cp, struct cprun *r, struct plane *p, int64_t now)
{
	char fence[160], sql[1024], as[24], le[24], ep[24];
	const char *v[7] = { r->id, p->id, I64(as, now), I64(le, now + (int64_t)cp->o.lease_ttl_ms * 1000),
			     r->store[0] ? r->store : p->journal_store };
	struct lerr e = { 0 };
	int n;

	leader_params(cp, ep, &v[5], &v[6]);
	leader_fence(fence, sizeof(fence), 6);
	snprintf(sql, sizeof(sql), "UPDATE runs SET status = 'assigned', plane_id = $2, epoch = epoch + 1, "
		 "assigned_us = $3, accepted_us = 0, running_us = 0, lease_expires_us = $4, "
		 "journal_store = $5, queue_reason = '', delivered_epoch = 0 "
		 "WHERE id = $1 AND status = 'queued' AND %s", fence);
	n = db_exec(cp->db, sql, 7, v, &e);
	if (n < 0)
		log_error("run %s: not placed: %s", r->id, e.msg);
	if (n != 1)
		return false;
	db_exec(cp->db, "UPDATE data_planes SET placed = placed + 1 WHERE id = $1", 1, &v[1], &e);
	p->active++;
	p->placed++;
	p->pend_cpu += r->cpu_millis;
	p->pend_memory += r->memory_bytes;
	p->pend_scratch += r->scratch_bytes;
	p->pend_slots++;
	log_info("run %s: placed on %s (epoch %lld%s)", r->id, p->id, (long long)r->epoch + 1,
		 r->resume ? ", to continue from its journal" : "");
	wake_plane(cp, p->id);
	return true;
}

void sched_place(struct cp *cp)
{
	int64_t now = cp_now_us(), live_after = now - (int64_t)cp->o.down_after * cp->o.heartbeat_s * 1000000;
	struct queue q = { 0 };
	struct plane *planes = NULL;
	struct lerr e = { 0 };

	if (state_planes(cp, &planes, &e) < 0 ||
	    db_query(cp->db, "SELECT r.plane_id, count(*), "
		     "sum(CASE WHEN r.assigned_us > p.cap_us THEN 1 ELSE 0 END), "
		     "sum(CASE WHEN r.assigned_us > p.cap_us THEN r.cpu_millis ELSE 0 END), "
		     "sum(CASE WHEN r.assigned_us > p.cap_us THEN r.memory_bytes ELSE 0 END), "
		     "sum(CASE WHEN r.assigned_us > p.cap_us THEN r.scratch_bytes ELSE 0 END) "
		     "FROM runs r JOIN data_planes p ON p.id = r.plane_id WHERE r.status IN " RS_LIVE_SQL
		     " GROUP BY r.plane_id", 0, NULL, live_cb, planes, &e) < 0 ||
	    state_runs(cp, "status = 'queued' ORDER BY created_us, id LIMIT 512", 0, NULL, queue_cb, &q,
		       &e) < 0) {
		log_error("placement: %s", e.msg);
		goto out;
	}
	/* every placement and reason of the round in one transaction */
	if (q.n && db_begin(cp->db, &e) < 0) {
		log_error("placement: %s", e.msg);
		goto out;
	}
	for (size_t i = 0; i < q.n; i++) {
		struct cprun *r = &q.r[i];
		struct plane *best = NULL;
		enum stage far = ST_NONE;
		char room_why[256] = "", why[512];

		if (r->not_before_us > now)
			continue;
		/* its preferred regions first; anywhere only when none fits and it may */
		for (int any = 0; any < 2 && !best; any++) {
			if (any && (!r->regions[0] || !r->region_fallback))
				break;
			for (struct plane *p = planes; p; p = p->next) {
				char w[256] = "";
				enum stage st = judge(p, r, live_after, any, w, sizeof(w));

				if (st > far || (st == far && st == ST_DRAIN && !room_why[0]))
					snprintf(room_why, sizeof(room_why), "%s", w);
				if (st > far)
					far = st;
				if (st == ST_OK && better(p, best, r))
					best = p;
			}
		}
		if (best && place_one(cp, r, best, now))
			continue;
		why_waiting(r, far, room_why, why, sizeof(why));
		if (strcmp(why, r->queue_reason)) {
			const char *w[] = { r->id, why };

			db_exec(cp->db, "UPDATE runs SET queue_reason = $2 WHERE id = $1 AND status = 'queued'",
				2, w, &e);
		}
	}
	if (q.n && db_commit(cp->db, &e) < 0)
		log_error("placement: %s", e.msg);
out:
	free(q.r);
	state_planes_free(planes);
}

/* ---- the watchdog ---- */

void sched_watchdog(struct cp *cp)
{
	int64_t now = cp_now_us();
	struct queue q = { 0 };
	struct lerr e = { 0 };
	char cut[24];
	const char *v[] = { I64(cut, now) };

	/* just took over: the nodes get one lease to renew through this replica's peers */
	if (now - cp->leader_since_us < (int64_t)cp->o.lease_ttl_ms * 1000)
		return;
	if (state_runs(cp, "status IN " RS_LIVE_SQL " AND lease_expires_us > 0 AND lease_expires_us < $1 "
		       "ORDER BY lease_expires_us LIMIT 512", 1, v, queue_cb, &q, &e) < 0) {
		log_error("watchdog: %s", e.msg);
		return;
	}
	for (size_t i = 0; i < q.n; i++) {
		struct cprun *r = &q.r[i];
		char fence[160], sql[1024], why[512], ep[24], le[24];
		const char *w[7] = { r->id, I64(le, r->epoch), cp_state_name(r->state), why, r->plane };
		int n;

		leader_params(cp, ep, &w[5], &w[6]);
		leader_fence(fence, sizeof(fence), 6);
		if (!r->store[0]) {
			snprintf(why, sizeof(why), "the lease of epoch %lld on data plane %s expired and it keeps "
				 "no journal store: the run cannot continue elsewhere", (long long)r->epoch, r->plane);
			snprintf(sql, sizeof(sql), "UPDATE runs SET status = 'failed', detail = $4, finished_us = "
				 "%lld, lease_expires_us = 0 WHERE id = $1 AND epoch = $2 AND status = $3 AND "
				 "plane_id = $5 AND %s", (long long)now, fence);
		} else if (r->state == RS_ASSIGNED) {
			snprintf(why, sizeof(why), "the lease of epoch %lld on data plane %s expired before it "
				 "accepted the run: placed again", (long long)r->epoch, r->plane);
			snprintf(sql, sizeof(sql), "UPDATE runs SET status = 'queued', plane_id = '', "
				 "queue_reason = $4, lease_expires_us = 0, not_before_us = 0 WHERE id = $1 AND "
				 "epoch = $2 AND status = $3 AND plane_id = $5 AND %s", fence);
		} else {
			snprintf(why, sizeof(why), "the lease of epoch %lld on data plane %s expired: waiting for a "
				 "node to continue the run from its journal", (long long)r->epoch, r->plane);
			snprintf(sql, sizeof(sql), "UPDATE runs SET status = 'queued', plane_id = '', resume = 1, "
				 "lost_plane = $5, resumes = resumes + 1, queue_reason = $4, lease_expires_us = 0, "
				 "not_before_us = 0, accepted_us = 0, running_us = 0 WHERE id = $1 AND epoch = $2 "
				 "AND status = $3 AND plane_id = $5 AND %s", fence);
		}
		n = db_exec(cp->db, sql, 7, w, &e);
		if (n == 1) {
			log_warn("watchdog: run %s: %s (%lld ms after it expired)", r->id, why,
				 (long long)(now - r->lease_expires_us) / 1000);
			wake_sched(cp);
		} else if (n < 0) {
			log_error("watchdog: run %s: %s", r->id, e.msg);
		}
	}
	free(q.r);
}

/* ---- planes gone down ---- */

void sched_liveness(struct cp *cp)
{
	int64_t now = cp_now_us(), window = (int64_t)cp->o.down_after * cp->o.heartbeat_s * 1000000;
	struct plane *planes = NULL;
	struct lerr e = { 0 };

	if (now - cp->leader_since_us < window || state_planes(cp, &planes, &e) < 0)
		goto out;
	for (struct plane *p = planes; p; p = p->next) {
		char fence[160], sql[512], why[256], cut[24], ep[24], fi[24];
		const char *v[4] = { p->id, I64(cut, now - window) };

		if (!p->registered || p->down || p->hb_us >= now - window)
			continue;
		leader_params(cp, ep, &v[2], &v[3]);
		leader_fence(fence, sizeof(fence), 3);
		snprintf(sql, sizeof(sql), "UPDATE data_planes SET down = 1 WHERE id = $1 AND down = 0 AND "
			 "hb_us < $2 AND %s", fence);
		if (db_exec(cp->db, sql, 4, v, &e) != 1)
			continue;
		log_warn("plane %s (%s): down: no heartbeat for %lld ms", p->id, p->hostname,
			 (long long)(now - p->hb_us) / 1000);
		snprintf(why, sizeof(why), "data plane %s is down: it missed %d heartbeats", p->id,
			 cp->o.down_after);
		{
			const char *w[5] = { p->id, why, I64(fi, now) };

			leader_params(cp, ep, &w[3], &w[4]);
			leader_fence(fence, sizeof(fence), 4);
			/* runs with a journal store are left to their leases: the node may be alive
			 * behind a partition, and the store decides who continues them */
			snprintf(sql, sizeof(sql), "UPDATE runs SET status = 'failed', detail = $2, finished_us = $3, "
				 "lease_expires_us = 0 WHERE plane_id = $1 AND status IN " RS_LIVE_SQL " AND "
				 "journal_store = '' AND %s", fence);
			if (db_exec(cp->db, sql, 5, w, &e) > 0)
				log_info("plane %s: its runs without a journal store failed: %s", p->id, why);
		}
		wake_sched(cp);
	}
out:
	state_planes_free(planes);
}
