/* syncer.c: group commit for run journals. One thread, "lantern-syncer", owns every
 * sync: callers append and queue their journal; the thread takes the whole queue as
 * one batch and makes it durable with a single syncfs() per filesystem (fdatasync
 * when the batch holds one journal), then wakes the waiters and the event loop.
 *
 * Why syncfs: journals are separate files, and fdatasync on each costs one device
 * flush per file (measured ~130 us on the CI disk: 256 runs => 35 ms per round). One
 * syncfs flushes all of them in about the time of one. The price is that it also
 * writes other dirty data of that filesystem; keep the state dir on a filesystem
 * without heavy unrelated writers (docs/durable-execution.md).
 *
 * With a node log (journal_syncer_start_logged, nodelog.c), the journals beneath the
 * log's directory are made durable cheaper still: their new bytes are copied into the
 * log with one write and one fdatasync. syncfs (or fdatasync) is left for the first
 * sync of a journal (its directory entry, and a base the log can continue), journals
 * elsewhere, and a full log (the checkpoint). */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "journal_internal.h"

struct journal_syncer {
	struct nodelog *log;        /* or NULL: syncfs only */
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t work, done;
	struct journal *queue;
	bool stop;
	int notify_fd;
	struct journal_syncer_stats stats;
	struct nodelog_stats logst; /* the log's, as of the last batch */
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

/* The journals of the batch not made durable yet (batch_err 1): one fdatasync when it
 * is one journal, else one syncfs per filesystem. */
static void sync_rest(struct journal *batch, int *nflushes)
{
	struct journal *one = NULL;
	int n = 0;

	for (struct journal *j = batch; j; j = j->bnext)
		if (j->batch_err == 1)
			one = j, n++;
	if (n == 1) {
		one->batch_err = fdatasync(one->fd) < 0 ? -errno : 0;
		(*nflushes)++;
	}
	for (struct journal *j = batch; n > 1 && j; j = j->bnext) {
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

/* Makes the batch durable; each journal's result goes to its batch_err. Through the
 * node log, when there is one, for the journals it accepts; the rest as sync_rest. */
static void syncer_flush(struct journal_syncer *s, struct journal *batch, int *nflushes,
			 int *nlogged, bool *log_failed)
{
	int nlog = 0, err;

	for (struct journal *j = batch; j; j = j->bnext) {
		j->batch_err = 1; /* not flushed yet */
		j->via_log = s->log && nodelog_accepts(s->log, j);
		nlog += j->via_log;
	}
	if (nlog) {
		err = nodelog_write(s->log, batch);
		if (err == -ENOSPC) {
			/* full: its syncfs makes this batch durable in place too */
			err = nodelog_checkpoint(s->log);
		} else if (!err) {
			(*nlogged)++;
		}
		(*nflushes)++;
		if (err && err != -E2BIG) {
			log_error("journal node log: %s: journals are synced a filesystem at a time "
				  "from now on", strerror(-err));
			*log_failed = true;
		}
		for (struct journal *j = batch; j; j = j->bnext)
			if (j->via_log && !err)
				j->batch_err = 0;
	}
	sync_rest(batch, nflushes);
	/* every journal now durable: its directory entry (once; after syncfs too: on ext4
	 * that committed it, elsewhere this does; a logged journal's is already) and the
	 * base the log continues from */
	for (struct journal *j = batch; j; j = j->bnext) {
		if (j->batch_err)
			continue;
		journal_dir_settle(j);
		journal_raise_base(j, j->batch_size);
	}
}

static void *syncer_main(void *arg)
{
	struct journal_syncer *s = arg;

	prctl(PR_SET_NAME, "lantern-syncer");
	pthread_mutex_lock(&s->mu);
	for (;;) {
		struct journal *batch = NULL;
		int n = 0, flushes = 0, logged = 0;
		bool log_failed = false;

		while (!s->stop && !s->queue)
			pthread_cond_wait(&s->work, &s->mu);
		if (!s->queue && s->stop)
			break;
		for (struct journal *j = s->queue, *next; j; j = next) {
			next = j->qnext;
			j->queued = false;
			j->syncing++;
			j->target = __atomic_load_n(&j->seq, __ATOMIC_ACQUIRE);
			/* after seq: covers at least the records up to target */
			j->batch_size = __atomic_load_n(&j->size, __ATOMIC_ACQUIRE);
			j->bnext = batch;
			batch = j;
			n++;
		}
		s->queue = NULL;
		pthread_mutex_unlock(&s->mu);

		syncer_flush(s, batch, &flushes, &logged, &log_failed);

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
		s->stats.logged += (uint64_t)logged;
		if (s->log) {
			nodelog_stats(s->log, &s->logst);
			if (log_failed) {
				nodelog_close(s->log);
				s->log = NULL;
			}
		}
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

int journal_syncer_start_logged(int notify_fd, const char *log_path, uint64_t log_bytes,
				struct journal_syncer **out, struct lerr *e)
{
	struct journal_syncer *s = calloc(1, sizeof(*s));
	int err;

	if (!s)
		return lerr_set(e, ENOMEM, "journal syncer: out of memory");
	if (log_path && (err = nodelog_open(log_path, log_bytes, &s->log, e)) < 0) {
		free(s);
		return err;
	}
	if (s->log)
		nodelog_stats(s->log, &s->logst);
	s->notify_fd = notify_fd;
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->work, NULL);
	pthread_cond_init(&s->done, NULL);
	if ((err = pthread_create(&s->thread, NULL, syncer_main, s))) {
		nodelog_close(s->log);
		free(s);
		return lerr_set(e, err, "journal syncer: starting its thread: %s", strerror(err));
	}
	*out = s;
	return 0;
}

int journal_syncer_start(int notify_fd, struct journal_syncer **out, struct lerr *e)
{
	return journal_syncer_start_logged(notify_fd, NULL, 0, out, e);
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
	st->checkpoints = s->logst.checkpoints;
	st->replayed_files = s->logst.replayed_files;
	st->replayed_bytes = s->logst.replayed_bytes;
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
	nodelog_close(s->log);
	pthread_mutex_destroy(&s->mu);
	pthread_cond_destroy(&s->work);
	pthread_cond_destroy(&s->done);
	free(s);
}
