/* wake.c: who must act now. Placement wakes the stream holder of the plane it placed
 * on; a completion, a renewal or a new plane wakes placement. Within a replica that is
 * a flag and a list of planes the main loop takes at its next tick (20 ms at most);
 * on PostgreSQL the same goes to every replica as a NOTIFY ("sched", or "plane:ID"),
 * heard by each replica's listener thread on a connection of its own. A lost
 * notification costs latency only: placement runs every second anyway, and every
 * replica delivers what is due to its planes every second. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cp.h"

static void local_sched(struct cp *cp)
{
	pthread_mutex_lock(&cp->wake_mu);
	cp->wake_sched = true;
	pthread_mutex_unlock(&cp->wake_mu);
}

static void local_plane(struct cp *cp, const char *plane)
{
	pthread_mutex_lock(&cp->wake_mu);
	for (size_t i = 0; i < cp->n_wake; i++)
		if (!strcmp(cp->wake_planes[i], plane))
			goto out;
	if (cp->n_wake == cp->cap_wake) {
		size_t cap = cp->cap_wake ? cp->cap_wake * 2 : 16;
		char **n = realloc(cp->wake_planes, cap * sizeof(char *));

		if (!n)
			goto out;
		cp->wake_planes = n;
		cp->cap_wake = cap;
	}
	if ((cp->wake_planes[cp->n_wake] = strdup(plane)))
		cp->n_wake++;
out:
	pthread_mutex_unlock(&cp->wake_mu);
}

/* cp->mu held (the notifying connection is the shared one) */
void wake_sched(struct cp *cp)
{
	local_sched(cp);
	db_notify(cp->db, "sched");
}

void wake_plane(struct cp *cp, const char *plane)
{
	char msg[64];

	local_plane(cp, plane);
	snprintf(msg, sizeof(msg), "plane:%s", plane);
	db_notify(cp->db, msg);
}

bool wake_take_sched(struct cp *cp)
{
	bool sched;

	pthread_mutex_lock(&cp->wake_mu);
	sched = cp->wake_sched;
	cp->wake_sched = false;
	pthread_mutex_unlock(&cp->wake_mu);
	return sched;
}

void wake_take_planes(struct cp *cp, char ***planes, size_t *n)
{
	pthread_mutex_lock(&cp->wake_mu);
	*planes = cp->wake_planes;
	*n = cp->n_wake;
	cp->wake_planes = NULL;
	cp->n_wake = cp->cap_wake = 0;
	pthread_mutex_unlock(&cp->wake_mu);
}

static void on_notify(void *arg, const char *payload)
{
	struct cp *cp = arg;

	if (!strcmp(payload, "sched"))
		local_sched(cp);
	else if (!strncmp(payload, "plane:", 6))
		local_plane(cp, payload + 6);
}

static void *listener_main(void *arg)
{
	struct cp *cp = arg;
	struct lerr e = { 0 };

	pthread_setname_np(pthread_self(), "cp-listen");
	while (!cp->stop) {
		if (!cp->listen_db) {
			if (db_open(cp->o.database, &cp->listen_db, &e) < 0 || db_listen(cp->listen_db, &e) < 0) {
				log_warn("wake: %s (other replicas' wake-ups wait for the periodic round)", e.msg);
				db_close(cp->listen_db);
				cp->listen_db = NULL;
				usleep(1000 * 1000);
				continue;
			}
			/* what was notified while not listening is picked up now */
			local_sched(cp);
		}
		if (db_wait_notify(cp->listen_db, 200, on_notify, cp) < 0) {
			db_close(cp->listen_db);
			cp->listen_db = NULL;
		}
	}
	db_close(cp->listen_db);
	cp->listen_db = NULL;
	return NULL;
}

int wake_start(struct cp *cp, struct lerr *e)
{
	int err;

	pthread_mutex_init(&cp->wake_mu, NULL);
	if (!db_is_pg(cp->db))
		return 0;
	if ((err = pthread_create(&cp->listener, NULL, listener_main, cp)))
		return lerr_set(e, err, "wake: listener thread: %s", strerror(err));
	return 0;
}

void wake_stop(struct cp *cp)
{
	if (db_is_pg(cp->db))
		pthread_join(cp->listener, NULL);
	for (size_t i = 0; i < cp->n_wake; i++)
		free(cp->wake_planes[i]);
	free(cp->wake_planes);
}
