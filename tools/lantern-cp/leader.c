/* leader.c: which replica does the leader's work (placement, the watchdog, marking
 * planes down). One row, cp_leader, holds the lease: a replica takes it when it is
 * free or expired (raising its epoch) and keeps it by renewing it every third of
 * --leader-ttl. Every write of the leader's carries the condition that it still holds
 * the lease under the same epoch (leader_fence), checked by the database in the same
 * statement: a leader that stalled past its lease while another took over writes
 * nothing, so two leaders never both place.
 *
 * Clocks: expiry times are each replica's wall clock (µs); replicas are expected to
 * keep their clocks synchronised (NTP) far below the lease TTLs. The epoch fencing
 * does not depend on clocks.
 *
 * Every replica also records itself in cp_replicas at each tick; the leader lets go of
 * the streams a replica held once it stopped recording itself (its nodes reconnect to
 * another replica), so a plane never looks connected through a dead replica. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cp.h"

void leader_fence(char *sql, size_t len, int first)
{
	snprintf(sql, len, "EXISTS (SELECT 1 FROM cp_leader WHERE id = 1 AND holder = $%d AND epoch = $%d)",
		 first, first + 1);
}

void leader_params(struct cp *cp, char epoch[24], const char **replica, const char **ep)
{
	snprintf(epoch, 24, "%lld", (long long)cp->leader_epoch);
	*replica = cp->replica;
	*ep = epoch;
}

static void epoch_row(void *arg, int ncol, char **v)
{
	int64_t *e = arg;

	if (ncol > 0 && v[0])
		*e = atoll(v[0]);
}

void leader_tick(struct cp *cp)
{
	int64_t now = cp_now_us(), epoch = 0;
	char n0[24], n1[24], stale[24];
	const char *v[] = { cp->replica, I64(n0, now), I64(n1, now + (int64_t)cp->o.leader_ttl_ms * 1000) };
	struct lerr e = { 0 };
	int n;

	n = db_exec(cp->db, "UPDATE cp_leader SET epoch = CASE WHEN holder = $1 THEN epoch ELSE epoch + 1 END, "
		    "holder = $1, expires_us = $3 WHERE id = 1 AND (holder = $1 OR expires_us < $2)", 3, v, &e);
	if (n == 1 && db_query(cp->db, "SELECT epoch FROM cp_leader WHERE id = 1 AND holder = $1", 1, v,
			       epoch_row, &epoch, &e) == 1) {
		if (!cp->leader || cp->leader_epoch != epoch) {
			cp->leader = true;
			cp->leader_epoch = epoch;
			cp->leader_since_us = now;
			log_info("leader: this replica (%s) leads, epoch %lld", cp->replica, (long long)epoch);
			wake_sched(cp);
		}
	} else if (cp->leader) {
		cp->leader = false;
		log_warn("leader: this replica (%s) no longer leads%s%s", cp->replica, e.msg[0] ? ": " : "",
			 e.msg);
	}
	if (db_exec(cp->db, "INSERT INTO cp_replicas (id, seen_us) VALUES ($1, $2) ON CONFLICT (id) "
		    "DO UPDATE SET seen_us = excluded.seen_us", 2, v, &e) < 0)
		log_warn("leader: %s", e.msg);
	if (!cp->leader)
		return;
	{
		const char *w[] = { I64(stale, now - (int64_t)cp->o.leader_ttl_ms * 1000) };

		n = db_exec(cp->db, "UPDATE data_planes SET stream_replica = '' WHERE stream_replica <> '' "
			    "AND stream_replica NOT IN (SELECT id FROM cp_replicas WHERE seen_us >= $1)", 1, w, &e);
		if (n > 0)
			log_info("leader: %d planes' streams were held by a replica that stopped", n);
		db_exec(cp->db, "DELETE FROM cp_replicas WHERE seen_us < $1", 1, w, &e);
	}
}

void leader_release(struct cp *cp)
{
	const char *v[] = { cp->replica };
	struct lerr e;

	/* the next leader need not wait out the lease, nor the planes this replica's streams */
	db_exec(cp->db, "UPDATE cp_leader SET expires_us = 0 WHERE id = 1 AND holder = $1", 1, v, &e);
	db_exec(cp->db, "UPDATE data_planes SET stream_replica = '' WHERE stream_replica = $1", 1, v, &e);
	db_exec(cp->db, "DELETE FROM cp_replicas WHERE id = $1", 1, v, &e);
	cp->leader = false;
}

static void replica_row(void *arg, int ncol, char **v)
{
	json_array_append_new(arg, json_pack("{s:s, s:I}", "id", v[0] ?: "", "seen_us",
					     (json_int_t)(v[1] ? atoll(v[1]) : 0)));
}

static void leader_row(void *arg, int ncol, char **v)
{
	json_t *j = arg;

	json_object_set_new(j, "leader", json_string(v[0] ?: ""));
	json_object_set_new(j, "leader_epoch", json_integer(v[1] ? atoll(v[1]) : 0));
	json_object_set_new(j, "leader_expires_us", json_integer(v[2] ? atoll(v[2]) : 0));
}

json_t *leader_json(struct cp *cp)
{
	json_t *j = json_pack("{s:s, s:b, s:s}", "replica", cp->replica, "leads", cp->leader,
			      "database", db_kind(cp->db));
	json_t *reps = json_array();
	struct lerr e;

	db_query(cp->db, "SELECT holder, epoch, expires_us FROM cp_leader WHERE id = 1", 0, NULL,
		 leader_row, j, &e);
	db_query(cp->db, "SELECT id, seen_us FROM cp_replicas ORDER BY id", 0, NULL, replica_row, reps, &e);
	json_object_set_new(j, "replicas", reps);
	return j;
}
