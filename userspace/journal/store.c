/* store.c: the journal's second copy, in a PostgreSQL the data plane runs
 * (lanternd --journal-store; see journal.h). Each record a replicated journal appends
 * is copied into its replica's queue; one thread, "lantern-jstore", takes everything
 * queued since its last batch and commits it in one statement, so N runs appending at
 * once cost one round trip and one commit, not N (the same shape as the syncer's
 * group commit for the files, and the two run side by side).
 *
 * Tables (created at open, all named lantern_journal_* so the database can be shared):
 *   lantern_journal_runs    (run_key, epoch, owner, updated_us): a run's lease epoch
 *   lantern_journal_records (run_key, seq, rec): each record's framed bytes
 *   lantern_journal_meta    (k, v): the store's id and schema version
 *
 * Fencing: the batch statement upserts each run's row (a row lock, held until the
 * statement commits) and inserts a run's records only where the epoch they carry is
 * not below the row's. A node resuming the run raises the row's epoch in its claim
 * (journal_store_claim) under the same lock, so whichever commits second sees the
 * other: a node that lost its lease can no longer extend the journal, and the new
 * holder reads every record the old one got in.
 *
 * Failures: a batch that cannot be committed (no connection, a timeout) stays queued
 * and is retried with backoff; records are inserted with ON CONFLICT DO NOTHING, so a
 * retry of a batch that did commit changes nothing. A record not in the store after
 * give_up_ms fails its run's replica (-ETIMEDOUT): the run's waiting callers are told,
 * nothing is half-written (a batch commits whole or not at all). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <libpq-fe.h>

#include "journal_internal.h"

#define STORE_MAX_RECORDS 4096          /* per statement: 4 parameters each (libpq: 65535) */
#define STORE_MAX_BYTES   (32u << 20)   /* per statement */
#define ATTEMPT_MAX_MS    10000
#define BACKOFF_MIN_MS    100
#define BACKOFF_MAX_MS    2000

struct rec {
	struct rec *next;
	uint64_t seq;
	int64_t queued_ms;          /* monotonic: when it was appended */
	size_t len;
	uint8_t data[];
};

struct journal_replica {
	struct journal_store *s;
	struct journal *j;
	char key[128];
	int64_t epoch;
	/* under s->mu */
	struct rec *head, *tail;     /* appended, not yet taken by a batch (seq order) */
	bool queued;                 /* in s->queue */
	int inflight;                /* batches holding its records */
	bool stopped;                /* appends stay in the file (journal_replicate_stop) */
	bool catchup;                /* the store's head is unknown: learn it, send the file's rest */
	uint64_t catchup_bytes;      /* the file's size when attached: what catch-up reads */
	uint64_t catchup_seq;        /* and its last record then */
	char why[256];
	struct journal_replica *qnext;
	uint64_t stored;             /* atomic: last seq the store holds */
	int err;                     /* atomic, sticky: -ESTALE fenced, -ETIMEDOUT gave up */
	/* batch (store thread) */
	struct rec *bhead, *btail;
	uint64_t bmax;
	struct journal_replica *bnext;
};

struct journal_store {
	char url[1024];
	char shown[1024];            /* url without its password, for messages */
	char owner[128];
	char id[40];
	int notify_fd;
	uint32_t give_up_ms;
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t work, done;
	struct journal_replica *queue;
	bool stop;
	int health;                  /* 0 or the last attempt's -errno (mu) */
	char health_why[512];
	struct journal_store_stats stats;
	/* store thread */
	PGconn *pg;
	int backoff_ms;
	int64_t retry_at;
};

static int64_t mono_ms(void)
{
	return (int64_t)(util_now_ns(CLOCK_MONOTONIC) / 1000000);
}

/* postgres://user:secret@host/db -> postgres://user:***@host/db */
static void url_shown(const char *url, char *out, size_t len)
{
	const char *scheme = strstr(url, "://"), *at, *colon;

	snprintf(out, len, "%s", url);
	if (!scheme)
		return;
	at = strchr(scheme + 3, '@');
	colon = strchr(scheme + 3, ':');
	if (at && colon && colon < at && (!strchr(scheme + 3, '/') || at < strchr(scheme + 3, '/')))
		snprintf(out, len, "%.*s:***%s", (int)(colon - url), url, at);
}

/* libpq's message on one line (it ends them, and some of their parts, with newlines). */
static const char *pq_msg(const char *m)
{
	static __thread char buf[512];
	size_t n = 0;

	for (; m && *m && n < sizeof(buf) - 1; m++)
		if (*m != '\n' || (m[1] && n && buf[n - 1] != ' '))
			buf[n++] = *m == '\n' || *m == '\t' ? ' ' : *m;
	while (n && buf[n - 1] == ' ')
		n--;
	buf[n] = '\0';
	return buf;
}

static PGconn *store_connect(const char *url, const char *shown, uint32_t timeout_ms,
			     struct lerr *e)
{
	char to[16];
	const char *keys[] = { "dbname", "connect_timeout", "application_name", NULL };
	const char *vals[] = { url, to, "lanternd", NULL };
	PGconn *c;

	snprintf(to, sizeof(to), "%u", timeout_ms < 2000 ? 2 : timeout_ms / 1000);
	c = PQconnectdbParams(keys, vals, 1);
	if (!c || PQstatus(c) != CONNECTION_OK) {
		lerr_set(e, ECONNREFUSED, "journal store %s: cannot connect: %s", shown,
			 c ? pq_msg(PQerrorMessage(c)) : "out of memory");
		PQfinish(c);
		return NULL;
	}
	PQclear(PQexec(c, "SET client_min_messages TO warning"));
	PQsetnonblocking(c, 1);
	return c;
}

/* Runs one statement, waiting at most ms for all of it; its result, or NULL with e set
 * (then the connection may be unusable: the caller drops it). The connection is
 * non-blocking, so a server that stops answering (or reading) costs at most ms. */
static PGresult *exec_timed(PGconn *c, const char *shown, const char *sql, int n,
			    const char *const *vals, const int *lens, const int *fmts, int binary,
			    int ms, struct lerr *e)
{
	int64_t deadline = mono_ms() + ms;
	PGresult *last = NULL;
	int st;

	if (!PQsendQueryParams(c, sql, n, NULL, vals, lens, fmts, binary)) {
		lerr_set(e, EIO, "journal store %s: %s", shown, pq_msg(PQerrorMessage(c)));
		return NULL;
	}
	for (;;) {
		int64_t left = deadline - mono_ms();
		int flushed = PQflush(c);
		struct pollfd p = { .fd = PQsocket(c), .events = POLLIN };

		if (flushed < 0)
			break;
		if (flushed == 0) {
			while (!PQisBusy(c)) {
				PGresult *r = PQgetResult(c);

				if (!r)
					goto done;
				PQclear(last);
				last = r;
			}
		} else {
			p.events |= POLLOUT;
		}
		if (left <= 0) {
			PQclear(last);
			lerr_set(e, ETIMEDOUT, "journal store %s: no answer within %d ms", shown, ms);
			return NULL;
		}
		if (poll(&p, 1, (int)left) < 0 && errno != EINTR)
			break;
		/* read-ready: take it in, also while still sending (the server may answer
		 * early, and must be read for it to go on reading) */
		if ((p.revents & (POLLIN | POLLHUP | POLLERR)) && !PQconsumeInput(c))
			break;
	}
	PQclear(last);
	lerr_set(e, EIO, "journal store %s: %s", shown, pq_msg(PQerrorMessage(c)));
	return NULL;
done:
	st = last ? PQresultStatus(last) : PGRES_FATAL_ERROR;
	if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
		lerr_set(e, EIO, "journal store %s: %s", shown,
			 pq_msg(last ? PQresultErrorMessage(last) : PQerrorMessage(c)));
		PQclear(last);
		return NULL;
	}
	return last;
}

static int exec_ok(PGconn *c, const char *shown, const char *sql, int n, const char *const *vals,
		   int ms, struct lerr *e)
{
	PGresult *r = exec_timed(c, shown, sql, n, vals, NULL, NULL, 0, ms, e);

	if (!r)
		return -EIO;
	PQclear(r);
	return 0;
}

static uint32_t attempt_ms(const struct journal_store *s)
{
	return s->give_up_ms < ATTEMPT_MAX_MS ? (s->give_up_ms < 1000 ? 1000 : s->give_up_ms)
					      : ATTEMPT_MAX_MS;
}

/* ---- the replica's queue (any thread, under s->mu) ---- */

static void enqueue_locked(struct journal_store *s, struct journal_replica *r)
{
	if (r->queued)
		return;
	r->queued = true;
	r->qnext = s->queue;
	s->queue = r;
	pthread_cond_signal(&s->work);
}

static void unqueue_locked(struct journal_store *s, struct journal_replica *r)
{
	if (!r->queued)
		return;
	for (struct journal_replica **pp = &s->queue; *pp; pp = &(*pp)->qnext)
		if (*pp == r) {
			*pp = r->qnext;
			break;
		}
	r->queued = false;
}

static void free_recs(struct rec *r)
{
	while (r) {
		struct rec *n = r->next;

		free(r);
		r = n;
	}
}

static void replica_push(struct journal_replica *r, uint64_t seq, const uint8_t *data, size_t len)
{
	struct journal_store *s = r->s;
	struct rec *x = malloc(sizeof(*x) + len);

	pthread_mutex_lock(&s->mu);
	if (!x) {
		if (!r->err) {
			snprintf(r->why, sizeof(r->why), "journal store: out of memory queueing record %" PRIu64
				 " of run %s", seq, r->key);
			__atomic_store_n(&r->err, -ENOMEM, __ATOMIC_RELEASE);
		}
	} else if (!r->err && !r->stopped) {
		x->next = NULL;
		x->seq = seq;
		x->queued_ms = mono_ms();
		x->len = len;
		memcpy(x->data, data, len);
		if (r->tail)
			r->tail->next = x;
		else
			r->head = x;
		r->tail = x;
		enqueue_locked(s, r);
		x = NULL;
	}
	pthread_mutex_unlock(&s->mu);
	free(x);
}

/* Fails r for good (with s->mu held): its queue goes, its waiters are told. */
static void fail_locked(struct journal_replica *r, int err, const char *why)
{
	if (r->err)
		return;
	snprintf(r->why, sizeof(r->why), "%s", why);
	__atomic_store_n(&r->err, err, __ATOMIC_RELEASE);
	free_recs(r->head);
	r->head = r->tail = NULL;
	r->catchup = false;
	log_error("%s", why);
}

static void replica_drop(struct journal_replica *r)
{
	struct journal_store *s = r->s;

	pthread_mutex_lock(&s->mu);
	unqueue_locked(s, r);
	while (r->inflight)
		pthread_cond_wait(&s->done, &s->mu);
	free_recs(r->head);
	r->j->rep = NULL;
	pthread_mutex_unlock(&s->mu);
	free(r);
}

static const struct journal_replica_ops replica_ops = { .push = replica_push, .drop = replica_drop };

int journal_replicate(struct journal *j, struct journal_store *s, const char *key, int64_t epoch,
		      struct lerr *e)
{
	struct journal_replica *r;

	if (j->rep)
		return lerr_set(e, EALREADY, "journal %s: already replicated", j->path);
	if (strlen(key) >= sizeof(r->key))
		return lerr_set(e, ENAMETOOLONG, "journal %s: store key \"%s\" is too long", j->path, key);
	if (!(r = calloc(1, sizeof(*r))))
		return lerr_set(e, ENOMEM, "journal %s: out of memory", j->path);
	r->s = s;
	r->j = j;
	snprintf(r->key, sizeof(r->key), "%s", key);
	r->epoch = epoch;
	pthread_mutex_lock(&s->mu);
	j->rep = r;
	j->rep_ops = &replica_ops;
	if (j->seq) {
		/* records already in the file: the store may lack the last ones (lanternd died
		 * between an append and its batch) */
		r->catchup = true;
		r->catchup_bytes = j->size;
		r->catchup_seq = j->seq;
		enqueue_locked(s, r);
	}
	pthread_mutex_unlock(&s->mu);
	return 0;
}

void journal_replicate_stop(struct journal *j)
{
	if (!j->rep)
		return;
	pthread_mutex_lock(&j->rep->s->mu);
	j->rep->stopped = true;
	pthread_mutex_unlock(&j->rep->s->mu);
}

bool journal_replicated(const struct journal *j)
{
	return j->rep != NULL;
}

uint64_t journal_stored_seq(struct journal *j)
{
	return j->rep ? __atomic_load_n(&j->rep->stored, __ATOMIC_ACQUIRE) : 0;
}

int journal_store_error(struct journal *j, char *why, size_t len)
{
	struct journal_replica *r = j->rep;
	int err;

	if (!r || !(err = __atomic_load_n(&r->err, __ATOMIC_ACQUIRE)))
		return 0;
	pthread_mutex_lock(&r->s->mu);
	snprintf(why, len, "%s", r->why);
	pthread_mutex_unlock(&r->s->mu);
	return err;
}

int journal_store_wait(struct journal *j, uint64_t seq)
{
	struct journal_replica *r = j->rep;
	int err = 0;

	if (!r)
		return 0;
	pthread_mutex_lock(&r->s->mu);
	while (__atomic_load_n(&r->stored, __ATOMIC_ACQUIRE) < seq && !(err = r->err))
		pthread_cond_wait(&r->s->done, &r->s->mu);
	pthread_mutex_unlock(&r->s->mu);
	return err;
}

/* ---- the store thread ---- */

/* The store's head of r and, from the file, every record beyond it (before the ones
 * appended since r was attached, which are newer). */
static int catch_up(struct journal_store *s, struct journal_replica *r, struct lerr *e)
{
	const char *v[] = { r->key };
	struct rec *first = NULL, *last = NULL;
	uint64_t head, off = JOURNAL_MAGIC_LEN;
	int64_t held;
	PGresult *res;
	uint8_t frame[JOURNAL_FRAME + JOURNAL_HEADER];
	size_t n = 0;

	res = exec_timed(s->pg, s->shown, "SELECT coalesce(max(seq), 0), coalesce((SELECT epoch FROM "
			 "lantern_journal_runs WHERE run_key = $1), -1) FROM lantern_journal_records "
			 "WHERE run_key = $1", 1, v, NULL, NULL, 0, (int)attempt_ms(s), e);
	if (!res)
		return -EIO;
	head = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
	held = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
	PQclear(res);
	if (held > r->epoch || head > r->catchup_seq) {
		/* another node holds the run, or has extended its journal past this copy: this
		 * copy must not go on (and what the store has is not this node's to count) */
		char why[256];

		if (held > r->epoch)
			snprintf(why, sizeof(why), "journal store: run %s is held under lease epoch %" PRId64
				 ", this node's is %" PRId64 ": its appends are refused (fenced)", r->key, held,
				 r->epoch);
		else
			snprintf(why, sizeof(why), "journal store: run %s has %" PRIu64 " records there, more "
				 "than this node's %" PRIu64 ": another node extended it (fenced)", r->key, head,
				 r->catchup_seq);
		pthread_mutex_lock(&s->mu);
		fail_locked(r, -ESTALE, why);
		free_recs(r->bhead);
		r->bhead = r->btail = NULL;
		pthread_mutex_unlock(&s->mu);
		return 0;
	}
	/* the bytes below catchup_bytes were verified when the journal was opened and are
	 * never written again */
	while (off + sizeof(frame) <= r->catchup_bytes && n < STORE_MAX_RECORDS) {
		uint32_t body;
		uint64_t seq = 0;
		struct rec *x;

		if (pread(r->j->fd, frame, sizeof(frame), (off_t)off) != (ssize_t)sizeof(frame))
			return lerr_set(e, EIO, "journal %s: reading record at %" PRIu64 " for the store: %s",
					r->j->path, off, strerror(errno));
		body = (uint32_t)frame[0] | (uint32_t)frame[1] << 8 | (uint32_t)frame[2] << 16 |
		       (uint32_t)frame[3] << 24;
		for (int i = 7; i >= 0; i--)
			seq = seq << 8 | frame[JOURNAL_FRAME + 8 + i];
		if (seq > head) {
			if (!(x = malloc(sizeof(*x) + JOURNAL_FRAME + body)))
				return lerr_set(e, ENOMEM, "journal store: out of memory");
			x->next = NULL;
			x->seq = seq;
			x->queued_ms = mono_ms();
			x->len = JOURNAL_FRAME + body;
			if (pread(r->j->fd, x->data, x->len, (off_t)off) != (ssize_t)x->len) {
				free(x);
				free_recs(first);
				return lerr_set(e, EIO, "journal %s: reading record %" PRIu64 " for the store",
						r->j->path, seq);
			}
			if (last)
				last->next = x;
			else
				first = x;
			last = x;
			n++;
		}
		off += JOURNAL_FRAME + body;
	}
	pthread_mutex_lock(&s->mu);
	__atomic_store_n(&r->stored, head, __ATOMIC_RELEASE);
	if (off + sizeof(frame) <= r->catchup_bytes) {
		/* more than one statement's worth behind: this batch sends only the oldest,
		 * the newer records wait (the store's copy must never have a gap) */
		if (r->bhead) {
			r->btail->next = r->head;
			r->head = r->bhead;
			if (!r->tail)
				r->tail = r->btail;
		}
		r->bhead = first;
		r->btail = last;
		enqueue_locked(s, r);
	} else {
		r->catchup = false;
		if (last) {
			last->next = r->bhead;
			r->bhead = first;
			if (!r->btail)
				r->btail = last;
		}
	}
	if (r->btail)
		r->bmax = r->btail->seq;
	pthread_mutex_unlock(&s->mu);
	return 0;
}

/* One statement for the whole batch: each run's row upserted (locked), its records
 * inserted only under an epoch not below the row's; the answer is every run's epoch
 * in the store, which says who was refused. */
static PGresult *commit_batch(struct journal_store *s, struct journal_replica *batch, size_t nrec,
			      struct lerr *e)
{
	size_t np = 2 + 4 * nrec, cap = 1024 + nrec * 96, off = 0, k = 2;
	const char **vals = calloc(np, sizeof(char *));
	int *lens = calloc(np, sizeof(int)), *fmts = calloc(np, sizeof(int));
	char (*nums)[24] = calloc(2 * nrec + 1, sizeof(*nums));
	char *sql = malloc(cap), now[24];
	PGresult *res = NULL;
	size_t ni = 0;

	if (!vals || !lens || !fmts || !nums || !sql) {
		lerr_set(e, ENOMEM, "journal store: out of memory");
		goto out;
	}
	snprintf(now, sizeof(now), "%" PRId64, (int64_t)(util_now_ns(CLOCK_REALTIME) / 1000));
	vals[0] = s->owner;
	vals[1] = now;
	off += (size_t)snprintf(sql + off, cap - off, "WITH b(run_key, epoch, seq, rec) AS (VALUES ");
	for (struct journal_replica *r = batch; r; r = r->bnext) {
		for (struct rec *x = r->bhead; x; x = x->next) {
			snprintf(nums[ni], sizeof(nums[ni]), "%" PRId64, r->epoch);
			snprintf(nums[ni + 1], sizeof(nums[ni + 1]), "%" PRIu64, x->seq);
			vals[k] = r->key;
			vals[k + 1] = nums[ni];
			vals[k + 2] = nums[ni + 1];
			vals[k + 3] = (const char *)x->data;
			lens[k + 3] = (int)x->len;
			fmts[k + 3] = 1;
			off += (size_t)snprintf(sql + off, cap - off, "%s($%zu::text, $%zu::bigint, $%zu::bigint, "
						"$%zu::bytea)", k == 2 ? "" : ", ", k + 1, k + 2, k + 3, k + 4);
			k += 4;
			ni += 2;
		}
	}
	snprintf(sql + off, cap - off,
		 "), r AS (INSERT INTO lantern_journal_runs AS jr (run_key, epoch, owner, updated_us) "
		 "SELECT run_key, max(epoch), $1, $2::bigint FROM b GROUP BY run_key "
		 "ON CONFLICT (run_key) DO UPDATE SET updated_us = excluded.updated_us "
		 "RETURNING jr.run_key, jr.epoch), "
		 "ins AS (INSERT INTO lantern_journal_records (run_key, seq, rec) "
		 "SELECT b.run_key, b.seq, b.rec FROM b JOIN r ON r.run_key = b.run_key AND b.epoch >= r.epoch "
		 "ON CONFLICT (run_key, seq) DO NOTHING) "
		 "SELECT run_key, epoch FROM r");
	res = exec_timed(s->pg, s->shown, sql, (int)np, vals, lens, fmts, 0, (int)attempt_ms(s), e);
out:
	free(vals);
	free(lens);
	free(fmts);
	free(nums);
	free(sql);
	return res;
}

/* Connects if needed, catches up replicas that need it, commits. 0, or -errno with e
 * (the batch was not committed, or may not have been). */
static int attempt(struct journal_store *s, struct journal_replica *batch, size_t *nrec,
		   PGresult **res, struct lerr *e)
{
	*res = NULL;
	if (!s->pg && !(s->pg = store_connect(s->url, s->shown, attempt_ms(s), e)))
		return -ECONNREFUSED;
	*nrec = 0;
	for (struct journal_replica *r = batch; r; r = r->bnext) {
		if (r->catchup && catch_up(s, r, e) < 0)
			return -EIO;
		for (struct rec *x = r->bhead; x; x = x->next)
			(*nrec)++;
	}
	if (!*nrec)
		return 0;
	*res = commit_batch(s, batch, *nrec, e);
	return *res ? 0 : -EIO;
}

/* Marks what the statement's answer says for each run of the batch. */
static void apply(struct journal_store *s, struct journal_replica *batch, PGresult *res)
{
	int rows = res ? PQntuples(res) : 0;

	for (struct journal_replica *r = batch; r; r = r->bnext) {
		int64_t have = -1;

		if (!r->bhead)
			continue;
		for (int i = 0; i < rows; i++)
			if (!strcmp(PQgetvalue(res, i, 0), r->key))
				have = strtoll(PQgetvalue(res, i, 1), NULL, 10);
		if (have > r->epoch) {
			char why[256];

			snprintf(why, sizeof(why), "journal store: run %s is held under lease epoch %" PRId64
				 ", this node's is %" PRId64 ": its appends are refused (fenced)", r->key, have,
				 r->epoch);
			fail_locked(r, -ESTALE, why);
		} else if (have >= 0) {
			__atomic_store_n(&r->stored, r->bmax, __ATOMIC_RELEASE);
		} else {
			char why[256];

			snprintf(why, sizeof(why), "journal store: the batch's answer does not name run %s",
				 r->key);
			fail_locked(r, -EIO, why);
		}
		free_recs(r->bhead);
		r->bhead = r->btail = NULL;
	}
}

/* The batch goes back in front of what was appended since, to be retried. */
static void put_back_locked(struct journal_store *s, struct journal_replica *batch)
{
	for (struct journal_replica *r = batch; r; r = r->bnext) {
		if (r->bhead && !r->err) {
			r->btail->next = r->head;
			r->head = r->bhead;
			if (!r->tail)
				r->tail = r->btail;
		} else {
			free_recs(r->bhead);
		}
		r->bhead = r->btail = NULL;
		if ((r->head || r->catchup) && !r->err)
			enqueue_locked(s, r);
	}
}

static void notify(struct journal_store *s);

/* Replicas whose oldest record waited past the bound fail (their callers are told). */
static void give_up_locked(struct journal_store *s)
{
	int64_t now = mono_ms();
	bool any = false;

	for (struct journal_replica **pp = &s->queue; *pp;) {
		struct journal_replica *r = *pp;

		if (r->head && now - r->head->queued_ms > (int64_t)s->give_up_ms) {
			char why[512];

			snprintf(why, sizeof(why), "journal store unreachable for %u ms (record %" PRIu64
				 " of run %s not replicated): %s", s->give_up_ms, r->head->seq, r->key,
				 s->health_why);
			fail_locked(r, -ETIMEDOUT, why);
			*pp = r->qnext;
			r->queued = false;
			any = true;
			continue;
		}
		pp = &r->qnext;
	}
	if (any) {
		pthread_cond_broadcast(&s->done);
		notify(s);
	}
}

/* Takes up to the batch bounds from the queue; a replica with records left stays in it. */
static struct journal_replica *take_batch_locked(struct journal_store *s, size_t *nrec)
{
	struct journal_replica *batch = NULL, *keep = NULL, **kt = &keep;
	size_t bytes = 0;

	*nrec = 0;
	while (s->queue) {
		struct journal_replica *r = s->queue;

		s->queue = r->qnext;
		r->qnext = NULL;
		while (r->head && *nrec < STORE_MAX_RECORDS && bytes + r->head->len <= STORE_MAX_BYTES) {
			struct rec *x = r->head;

			r->head = x->next;
			if (!r->head)
				r->tail = NULL;
			x->next = NULL;
			if (r->btail)
				r->btail->next = x;
			else
				r->bhead = x;
			r->btail = x;
			r->bmax = x->seq;
			bytes += x->len;
			(*nrec)++;
		}
		if (r->bhead || r->catchup) {
			r->inflight++;
			r->bnext = batch;
			batch = r;
		}
		if (r->head) {
			*kt = r;
			kt = &r->qnext;
		} else {
			r->queued = false;
		}
	}
	s->queue = keep;
	return batch;
}

static void notify(struct journal_store *s)
{
	uint64_t one = 1;

	if (s->notify_fd >= 0 && write(s->notify_fd, &one, sizeof(one)) < 0) {
		/* the counter is saturated: the loop is due to wake anyway */
	}
}

/* One round trip on a fresh or kept connection: health follows (s->mu not held). */
static void probe(struct journal_store *s)
{
	struct lerr e = { 0 };
	int err = 0;

	if (!s->pg && !(s->pg = store_connect(s->url, s->shown, attempt_ms(s), &e)))
		err = -ECONNREFUSED;
	else if (exec_ok(s->pg, s->shown, "SELECT 1", 0, NULL, (int)attempt_ms(s), &e) < 0)
		err = -EIO;
	if (err && s->pg) {
		PQfinish(s->pg);
		s->pg = NULL;
	}
	pthread_mutex_lock(&s->mu);
	if (err) {
		s->health = err;
		snprintf(s->health_why, sizeof(s->health_why), "%s", e.msg);
		s->backoff_ms = s->backoff_ms ? s->backoff_ms * 2 : BACKOFF_MIN_MS;
		if (s->backoff_ms > BACKOFF_MAX_MS)
			s->backoff_ms = BACKOFF_MAX_MS;
		s->retry_at = mono_ms() + s->backoff_ms;
	} else {
		log_info("journal store %s: reachable again", s->shown);
		s->health = 0;
		s->backoff_ms = 0;
		s->retry_at = 0;
	}
	pthread_mutex_unlock(&s->mu);
}

static void *store_main(void *arg)
{
	struct journal_store *s = arg;

	prctl(PR_SET_NAME, "lantern-jstore");
	pthread_mutex_lock(&s->mu);
	for (;;) {
		struct journal_replica *batch;
		PGresult *res = NULL;
		struct lerr e = { 0 };
		size_t nrec;
		int err;

		while (!s->stop && (!s->queue || mono_ms() < s->retry_at)) {
			struct timespec ts;

			if (!s->queue && !s->health) {
				pthread_cond_wait(&s->work, &s->mu);
				continue;
			}
			if (!s->queue && mono_ms() >= s->retry_at) {
				/* known away and nothing to send: see whether it is back, so new runs
				 * are not refused for longer than it is away */
				pthread_mutex_unlock(&s->mu);
				probe(s);
				pthread_mutex_lock(&s->mu);
				continue;
			}
			/* failing: wait out the backoff, but give up on what waited too long */
			give_up_locked(s);
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_nsec += 50 * 1000000L;
			if (ts.tv_nsec >= 1000000000L) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000L;
			}
			pthread_cond_timedwait(&s->work, &s->mu, &ts);
		}
		if (s->stop)
			break;
		batch = take_batch_locked(s, &nrec);
		pthread_mutex_unlock(&s->mu);

		err = attempt(s, batch, &nrec, &res, &e);
		if (err < 0 && s->pg && PQstatus(s->pg) != CONNECTION_OK) {
			PQfinish(s->pg);
			s->pg = NULL;
		} else if (err == -EIO && s->pg) {
			/* a timeout leaves a statement running: start over on a fresh connection */
			PQfinish(s->pg);
			s->pg = NULL;
		}

		pthread_mutex_lock(&s->mu);
		if (err < 0) {
			if (!s->health)
				log_warn("%s: retrying", e.msg);
			s->health = err;
			snprintf(s->health_why, sizeof(s->health_why), "%s", e.msg);
			s->stats.retries++;
			put_back_locked(s, batch);
			s->backoff_ms = s->backoff_ms ? s->backoff_ms * 2 : BACKOFF_MIN_MS;
			if (s->backoff_ms > BACKOFF_MAX_MS)
				s->backoff_ms = BACKOFF_MAX_MS;
			s->retry_at = mono_ms() + s->backoff_ms;
			give_up_locked(s);
		} else {
			if (s->health)
				log_info("journal store %s: reachable again", s->shown);
			s->health = 0;
			s->backoff_ms = 0;
			s->retry_at = 0;
			apply(s, batch, res);
			if (nrec) {
				s->stats.batches++;
				s->stats.records += nrec;
			}
		}
		for (struct journal_replica *r = batch; r; r = r->bnext)
			r->inflight--;
		PQclear(res);
		pthread_cond_broadcast(&s->done);
		pthread_mutex_unlock(&s->mu);
		notify(s);
		pthread_mutex_lock(&s->mu);
	}
	pthread_mutex_unlock(&s->mu);
	return NULL;
}

/* ---- open, close ---- */

static const char *const schema[] = {
	"CREATE TABLE IF NOT EXISTS lantern_journal_meta (k TEXT PRIMARY KEY, v TEXT NOT NULL)",
	"CREATE TABLE IF NOT EXISTS lantern_journal_runs (run_key TEXT PRIMARY KEY, "
	"epoch BIGINT NOT NULL, owner TEXT NOT NULL DEFAULT '', updated_us BIGINT NOT NULL DEFAULT 0)",
	"CREATE TABLE IF NOT EXISTS lantern_journal_records (run_key TEXT NOT NULL, seq BIGINT NOT NULL, "
	"rec BYTEA NOT NULL, PRIMARY KEY (run_key, seq))",
	"INSERT INTO lantern_journal_meta (k, v) VALUES ('schema_version', '1') ON CONFLICT (k) DO NOTHING",
};

static int schema_create(struct journal_store *s, PGconn *c, struct lerr *e)
{
	char fresh[33];
	const char *v[] = { fresh };
	PGresult *res;
	int err = 0, ms = (int)attempt_ms(s);

	util_random_hex(fresh, 16);
	/* two nodes starting at once must not both create the tables */
	if ((err = exec_ok(c, s->shown, "SELECT pg_advisory_lock(7411012)", 0, NULL, ms, e)) < 0)
		return err;
	for (size_t i = 0; i < ARRAY_SIZE(schema) && !err; i++)
		err = exec_ok(c, s->shown, schema[i], 0, NULL, ms, e);
	if (!err)
		err = exec_ok(c, s->shown, "INSERT INTO lantern_journal_meta (k, v) VALUES ('store_id', $1) "
			      "ON CONFLICT (k) DO NOTHING", 1, v, ms, e);
	if (!err && (res = exec_timed(c, s->shown, "SELECT v FROM lantern_journal_meta WHERE k = 'store_id'",
				      0, NULL, NULL, NULL, 0, ms, e))) {
		snprintf(s->id, sizeof(s->id), "%s", PQntuples(res) ? PQgetvalue(res, 0, 0) : "");
		PQclear(res);
	} else if (!err) {
		err = -EIO;
	}
	if (exec_ok(c, s->shown, "SELECT pg_advisory_unlock(7411012)", 0, NULL, ms, e) < 0 && !err)
		err = -EIO;
	return err;
}

int journal_store_open(const struct journal_store_opts *o, struct journal_store **out,
		       struct lerr *e)
{
	struct journal_store *s = calloc(1, sizeof(*s));
	PGconn *c;
	int err;

	if (!s)
		return lerr_set(e, ENOMEM, "journal store: out of memory");
	if (strncmp(o->url, "postgres://", 11) && strncmp(o->url, "postgresql://", 13)) {
		free(s);
		return lerr_set(e, EINVAL, "--journal-store: \"%s\" is not a postgres:// URL", o->url);
	}
	snprintf(s->url, sizeof(s->url), "%s", o->url);
	url_shown(o->url, s->shown, sizeof(s->shown));
	snprintf(s->owner, sizeof(s->owner), "%s", o->owner ? o->owner : "");
	s->notify_fd = o->notify_fd;
	s->give_up_ms = o->give_up_ms ? o->give_up_ms : 30000;
	if (!(c = store_connect(s->url, s->shown, attempt_ms(s), e))) {
		free(s);
		return -ECONNREFUSED;
	}
	if ((err = schema_create(s, c, e)) < 0) {
		PQfinish(c);
		free(s);
		return err;
	}
	s->pg = c;
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->work, NULL);
	pthread_cond_init(&s->done, NULL);
	if ((err = pthread_create(&s->thread, NULL, store_main, s))) {
		PQfinish(c);
		free(s);
		return lerr_set(e, err, "journal store: starting its thread: %s", strerror(err));
	}
	log_info("journal store %s: id %s, appends given up after %u ms", s->shown, s->id, s->give_up_ms);
	*out = s;
	return 0;
}

void journal_store_close(struct journal_store *s)
{
	if (!s)
		return;
	pthread_mutex_lock(&s->mu);
	s->stop = true;
	pthread_cond_signal(&s->work);
	pthread_mutex_unlock(&s->mu);
	pthread_join(s->thread, NULL);
	PQfinish(s->pg);
	pthread_mutex_destroy(&s->mu);
	pthread_cond_destroy(&s->work);
	pthread_cond_destroy(&s->done);
	free(s);
}

const char *journal_store_id(const struct journal_store *s)
{
	return s->id;
}

int journal_store_health(struct journal_store *s, char *why, size_t len)
{
	int h;

	pthread_mutex_lock(&s->mu);
	h = s->health;
	snprintf(why, len, "%s", s->health_why);
	pthread_mutex_unlock(&s->mu);
	return h;
}

void journal_store_stats(struct journal_store *s, struct journal_store_stats *st)
{
	pthread_mutex_lock(&s->mu);
	*st = s->stats;
	pthread_mutex_unlock(&s->mu);
}

/* ---- reading a run's copy ---- */

/* Magic + every record of key in seq order, from a result of (rec bytea) in binary. */
static int copy_of(PGresult *res, uint8_t **buf, size_t *len, struct lerr *e)
{
	int rows = PQntuples(res);
	size_t n = JOURNAL_MAGIC_LEN;
	uint8_t *b;

	for (int i = 0; i < rows; i++)
		n += (size_t)PQgetlength(res, i, 0);
	if (!(b = malloc(n)))
		return lerr_set(e, ENOMEM, "journal store: out of memory for a %zu-byte journal", n);
	memcpy(b, JOURNAL_MAGIC, JOURNAL_MAGIC_LEN);
	n = JOURNAL_MAGIC_LEN;
	for (int i = 0; i < rows; i++) {
		memcpy(b + n, PQgetvalue(res, i, 0), (size_t)PQgetlength(res, i, 0));
		n += (size_t)PQgetlength(res, i, 0);
	}
	*buf = b;
	*len = n;
	return rows;
}

int journal_store_read(const char *url, const char *key, uint8_t **buf, size_t *len,
		       struct lerr *e)
{
	char shown[1024];
	const char *v[] = { key };
	PGconn *c;
	PGresult *res;
	int n;

	url_shown(url, shown, sizeof(shown));
	if (!(c = store_connect(url, shown, 10000, e)))
		return -ECONNREFUSED;
	res = exec_timed(c, shown, "SELECT rec FROM lantern_journal_records WHERE run_key = $1 ORDER BY seq",
			 1, v, NULL, NULL, 1, 60000, e);
	n = res ? copy_of(res, buf, len, e) : -EIO;
	PQclear(res);
	PQfinish(c);
	if (n == 0) {
		free(*buf);
		return lerr_set(e, ENOENT, "journal store %s: no record of run %s", shown, key);
	}
	return n < 0 ? n : 0;
}

static int claim_cb(void *arg, const struct journal_record *rec)
{
	struct journal_claim *c = arg;

	if (rec->seq == 1 && rec->type == JOURNAL_RUN_STARTED) {
		json_t *j = json_loadb(rec->payload, rec->len, 0, NULL);

		snprintf(c->run_id, sizeof(c->run_id), "%s",
			 json_string_value(json_object_get(j, "run_id")) ?: "");
		json_decref(j);
	}
	/* only the receipt follows the end */
	if (rec->type == JOURNAL_RUN_COMPLETED) {
		c->ended = true;
		free(c->end_payload);
		c->end_payload = strdup(rec->payload);
	}
	return 0;
}

static int write_durable(const char *path, const uint8_t *buf, size_t len, struct lerr *e)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	size_t off = 0;

	if (fd < 0)
		return lerr_set(e, errno, "journal %s: create: %s", path, strerror(errno));
	while (off < len) {
		ssize_t w = write(fd, buf + off, len - off);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			int err = lerr_set(e, errno ? errno : EIO, "journal %s: write: %s", path, strerror(errno));
			close(fd);
			unlink(path);
			return err;
		}
		off += (size_t)w;
	}
	if (fdatasync(fd) < 0) {
		int err = lerr_set(e, errno, "journal %s: fdatasync: %s", path, strerror(errno));
		close(fd);
		unlink(path);
		return err;
	}
	close(fd);
	{
		char dir[PATH_MAX];
		char *slash;

		snprintf(dir, sizeof(dir), "%s", path);
		slash = strrchr(dir, '/');
		if (slash && slash != dir) {
			*slash = '\0';
			util_fsync_path(dir);
		}
	}
	return 0;
}

int journal_store_claim(struct journal_store *s, const char *key, int64_t epoch, const char *path,
			struct journal_claim *out, struct lerr *e)
{
	char ep[24], now[24];
	const char *v[] = { key, ep, s->owner, now };
	struct journal_scan info;
	PGresult *res = NULL;
	uint8_t *buf = NULL;
	size_t len = 0;
	int ms = (int)attempt_ms(s), err, n;
	PGconn *c;

	memset(out, 0, sizeof(*out));
	snprintf(ep, sizeof(ep), "%" PRId64, epoch);
	snprintf(now, sizeof(now), "%" PRId64, (int64_t)(util_now_ns(CLOCK_REALTIME) / 1000));
	if (!(c = store_connect(s->url, s->shown, attempt_ms(s), e)))
		return -ECONNREFUSED;
	if ((err = exec_ok(c, s->shown, "BEGIN", 0, NULL, ms, e)) < 0)
		goto out;
	res = exec_timed(c, s->shown,
			 "INSERT INTO lantern_journal_runs AS jr (run_key, epoch, owner, updated_us) "
			 "VALUES ($1, $2::bigint, $3, $4::bigint) ON CONFLICT (run_key) DO UPDATE SET "
			 "epoch = excluded.epoch, owner = excluded.owner, updated_us = excluded.updated_us "
			 "WHERE jr.epoch <= excluded.epoch RETURNING jr.epoch", 4, v, NULL, NULL, 0, ms, e);
	if (!res) {
		err = -EIO;
		goto out;
	}
	if (PQntuples(res) == 0) {
		PQclear(res);
		res = exec_timed(c, s->shown, "SELECT epoch FROM lantern_journal_runs WHERE run_key = $1",
				 1, v, NULL, NULL, 0, ms, e);
		err = lerr_set(e, ESTALE, "journal store: run %s is held under lease epoch %s, newer than "
			       "this assignment's %" PRId64, key,
			       res && PQntuples(res) ? PQgetvalue(res, 0, 0) : "?", epoch);
		goto out;
	}
	PQclear(res);
	res = exec_timed(c, s->shown, "SELECT rec FROM lantern_journal_records WHERE run_key = $1 "
			 "ORDER BY seq", 1, v, NULL, NULL, 1, ms, e);
	if (!res || (n = copy_of(res, &buf, &len, e)) < 0) {
		err = -EIO;
		goto out;
	}
	if ((err = exec_ok(c, s->shown, "COMMIT", 0, NULL, ms, e)) < 0)
		goto out;
	out->records = (uint64_t)n;
	if (!n)
		goto out;
	/* verified exactly as a file is: a store copy has no torn tail to forgive */
	if ((err = journal_scan_buf(key, buf, len, claim_cb, out, &info, e)) < 0)
		goto out;
	if (info.torn_bytes) {
		err = lerr_set(e, EBADMSG, "journal store: the copy of run %s is damaged after record %"
			       PRIu64 " (%" PRIu64 " bytes that are not a whole record)", key, info.records,
			       info.torn_bytes);
		goto out;
	}
	err = write_durable(path, buf, len, e);
out:
	PQclear(res);
	PQfinish(c);
	free(buf);
	if (err < 0) {
		free(out->end_payload);
		out->end_payload = NULL;
	}
	return err;
}
