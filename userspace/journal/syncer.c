/* syncer.c: group commit for run journals. One thread, "lantern-syncer", owns every
 * sync: callers append and queue their journal; the thread takes the whole queue as
 * one batch and makes it durable with a single syncfs() per filesystem (fdatasync
 * when the batch holds one journal), then wakes the waiters and the event loop.
 *
 * Why syncfs: journals are separate files, and fdatasync on each costs one device
 * flush per file (measured ~130 us on the CI disk: 256 runs => 35 ms per round). One
 * syncfs flushes all of them in about the time of one. The price is that it also
 * writes other dirty data of that filesystem; keep the state dir on a filesystem
 * without heavy unrelated writers (docs/durable-execution.md). */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "journal_internal.h"

struct journal_syncer {
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t work, done;
	struct journal *queue;
	bool stop;
	int notify_fd;
	struct journal_syncer_stats stats;
};

static void syncer_enqueue(struct journal_syncer *s, struct journal *j)
{
	if (j->queued)
		return;
	j->queued = true;
	j->qnext = s->queue;
	s->queue = j;
	pthread_cond_signal(&s->work);
}

/* Makes the batch durable; each journal's result goes to its batch_err. */
static void syncer_flush(struct journal *batch, int *nflushes)
{
	if (batch && !batch->bnext) {
		batch->batch_err = fdatasync(batch->fd) < 0 ? -errno : 0;
		if (!batch->batch_err)
			journal_dir_settle(batch);
		(*nflushes)++;
		return;
	}
	for (struct journal *j = batch; j; j = j->bnext)
		j->batch_err = 1; /* not flushed yet */
	for (struct journal *j = batch; j; j = j->bnext) {
		int err;

		if (j->batch_err != 1)
			continue;
		err = syncfs(j->fd) < 0 ? -errno : 0;
		(*nflushes)++;
		for (struct journal *k = j; k; k = k->bnext)
			if (k->batch_err == 1 && k->dev == j->dev)
				k->batch_err = err;
	}
}

static void *syncer_main(void *arg)
{
	struct journal_syncer *s = arg;

	prctl(PR_SET_NAME, "lantern-syncer");
	pthread_mutex_lock(&s->mu);
	for (;;) {
		struct journal *batch = NULL;
		int n = 0, flushes = 0;

		while (!s->stop && !s->queue)
			pthread_cond_wait(&s->work, &s->mu);
		if (!s->queue && s->stop)
			break;
		for (struct journal *j = s->queue, *next; j; j = next) {
			next = j->qnext;
			j->queued = false;
			j->syncing++;
			j->target = __atomic_load_n(&j->seq, __ATOMIC_ACQUIRE);
			j->bnext = batch;
			batch = j;
			n++;
		}
		s->queue = NULL;
		pthread_mutex_unlock(&s->mu);

		syncer_flush(batch, &flushes);

		pthread_mutex_lock(&s->mu);
		for (struct journal *j = batch; j; j = j->bnext) {
			/* a journal that failed once stays failed: what the failed sync
			 * covered may be lost even if a later one succeeds */
			if (j->batch_err < 0 && !j->sync_err)
				__atomic_store_n(&j->sync_err, j->batch_err, __ATOMIC_RELEASE);
			if (!j->sync_err)
				journal_mark_durable(j, j->target);
			j->syncing--;
		}
		s->stats.batches += (uint64_t)flushes;
		s->stats.journals += (uint64_t)n;
		pthread_cond_broadcast(&s->done);
		pthread_mutex_unlock(&s->mu);
		if (s->notify_fd >= 0) {
			uint64_t one = 1;
			/* an eventfd write fails only when the counter saturates, and then the
			 * loop is already due to wake */
			ssize_t w = write(s->notify_fd, &one, sizeof(one));
			(void)w;
		}
		pthread_mutex_lock(&s->mu);
	}
	pthread_mutex_unlock(&s->mu);
	return NULL;
}

int journal_syncer_start(int notify_fd, struct journal_syncer **out, struct lerr *e)
{
	struct journal_syncer *s = calloc(1, sizeof(*s));
	int err;

	if (!s)
		return lerr_set(e, ENOMEM, "journal syncer: out of memory");
	s->notify_fd = notify_fd;
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->work, NULL);
	pthread_cond_init(&s->done, NULL);
	if ((err = pthread_create(&s->thread, NULL, syncer_main, s))) {
		free(s);
		return lerr_set(e, err, "journal syncer: starting its thread: %s", strerror(err));
	}
	*out = s;
	return 0;
}

void journal_syncer_request(struct journal_syncer *s, struct journal *j)
{
	pthread_mutex_lock(&s->mu);
	syncer_enqueue(s, j);
	pthread_mutex_unlock(&s->mu);
}

int journal_syncer_wait(struct journal_syncer *s, struct journal *j, uint64_t seq)
{
	int err = 0;

	pthread_mutex_lock(&s->mu);
	while (journal_durable_seq(j) < seq) {
		if (j->sync_err && !j->syncing) {
			err = j->sync_err;
			break;
		}
		if (!j->syncing)
			syncer_enqueue(s, j);
		pthread_cond_wait(&s->done, &s->mu);
	}
	pthread_mutex_unlock(&s->mu);
	return err;
}

int journal_sync_error(struct journal *j)
{
	return __atomic_load_n(&j->sync_err, __ATOMIC_ACQUIRE);
}

void journal_syncer_forget(struct journal_syncer *s, struct journal *j)
{
	pthread_mutex_lock(&s->mu);
	if (j->queued) {
		for (struct journal **pp = &s->queue; *pp; pp = &(*pp)->qnext) {
			if (*pp == j) {
				*pp = j->qnext;
				break;
			}
		}
		j->queued = false;
	}
	while (j->syncing)
		pthread_cond_wait(&s->done, &s->mu);
	pthread_mutex_unlock(&s->mu);
}

void journal_syncer_stats(struct journal_syncer *s, struct journal_syncer_stats *st)
{
	pthread_mutex_lock(&s->mu);
	*st = s->stats;
	pthread_mutex_unlock(&s->mu);
}

void journal_syncer_stop(struct journal_syncer *s)
{
	if (!s)
		return;
	pthread_mutex_lock(&s->mu);
	s->stop = true;
	pthread_cond_signal(&s->work);
	pthread_mutex_unlock(&s->mu);
	pthread_join(s->thread, NULL);
	pthread_mutex_destroy(&s->mu);
	pthread_cond_destroy(&s->work);
	pthread_cond_destroy(&s->done);
	free(s);
}
