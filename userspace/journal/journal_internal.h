/* journal_internal.h: the journal's state, shared by journal.c (the file) and
 * syncer.c (group commit). Fields marked "syncer" are guarded by the syncer's mutex;
 * seq and durable are read across threads with atomics. */
#ifndef LANTERN_JOURNAL_INTERNAL_H
#define LANTERN_JOURNAL_INTERNAL_H

#include <limits.h>
#include <sys/types.h>

#include "lantern/journal.h"

struct journal {
	int fd;
	dev_t dev;                  /* filesystem, for one syncfs per filesystem per batch */
	char path[PATH_MAX];
	unsigned version;           /* 1 or 2: format 1 is never preallocated */
	uint64_t size;              /* valid bytes; the next record goes here (owner
				     * writes, atomic store; the syncer reads) */
	uint64_t alloc;             /* the file's size: [size, alloc) is preallocated zeros */
	uint64_t seq;               /* last appended (owner writes, syncer reads) */
	uint64_t durable;           /* last durable (atomic) */
	uint8_t head[JOURNAL_HASH_BYTES];
	uint64_t max_bytes;
	uint32_t compress_over;
	/* syncer */
	bool queued;                /* in the syncer's queue */
	bool dir_unsynced;          /* created, directory entry not yet synced */
	unsigned settle_up;         /* which directory's entry that is: 0 or 1, the file's
				     * own; 2, the one above it (a journal made ahead, whose
				     * directory was renamed since) */
	int syncing;                /* batches in progress holding it */
	uint64_t target;            /* seq the running batch makes durable */
	int batch_err;              /* result of the running batch */
	int sync_err;               /* sticky: a failed sync poisons the journal (atomic) */
	struct journal *qnext, *bnext;
	/* the node log (nodelog.c) */
	uint64_t base;              /* bytes durable in the file or in the node log, at a
				     * record boundary; 0 = not known yet (atomic) */
	uint64_t batch_size;        /* syncer: the size the running batch makes durable */
	uint64_t log_from;          /* syncer: where its bytes in the log start (base) */
	bool via_log;               /* syncer: the running batch logs it */
	int log_ok;                 /* syncer: 0 not looked at yet; 1 its path is one the
				     * log may carry (ino and btime below set); -1 never */
	uint64_t ino;
	int64_t btime_sec;
	uint32_t btime_nsec;
	struct journal_replica *rep; /* its copy in a journal store, or NULL (store.c) */
	const struct journal_replica_ops *rep_ops; /* set with rep, by store.c */
};

/* What the file side calls of its copy: store.c sets them with j->rep, so journal.c
 * knows the store only through these. */
struct journal_replica_ops {
	/* a record journal_append wrote goes to the store's queue too (a copy) */
	void (*push)(struct journal_replica *r, uint64_t seq, const uint8_t *rec, size_t len);
	/* takes j out of its store (waits for a batch that holds its records), frees the replica */
	void (*drop)(struct journal_replica *r);
};

static inline void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static inline void put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t get64(const uint8_t *p)
{
	return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

/* pwrite of all of buf at off (EINTR retried): 0 or -errno */
int journal_write_at(int fd, const void *buf, size_t len, off_t off);
/* The whole file behind fd into *buf (malloc'd, one spare byte), its length in *size. */
int journal_read_fd(const char *path, int fd, uint8_t **buf, size_t *size, struct lerr *e);

/* Raises j->base to size (never lowers it). */
static inline void journal_raise_base(struct journal *j, uint64_t size)
{
	uint64_t cur = __atomic_load_n(&j->base, __ATOMIC_ACQUIRE);

	while (cur < size && !__atomic_compare_exchange_n(&j->base, &cur, size, false,
							  __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
		;
}

/* ---- the node log (nodelog.c): one preallocated, pre-written file beside the run
 * directories. A batch's new journal bytes are copied into it with one write and one
 * fdatasync, instead of one syncfs that writes back every journal's pages and
 * converts their preallocated extents; opening it puts back whatever a crash took
 * from a journal file. */
struct nodelog;
struct nodelog_stats {
	uint64_t writes;            /* batches written to the log */
	uint64_t checkpoints;       /* log full: syncfs, then the log starts over */
	uint64_t replayed_files;    /* at open: journal files the log restored bytes of */
	uint64_t replayed_bytes;
};
/* Opens (creating, bytes large) the log at path, puts back what it holds, starts it over.
 * Never fails a start over a log it cannot replay: that one is kept beside it, named
 * <path>.unreplayed-<generation>, and logged. */
int nodelog_open(const char *path, uint64_t bytes, struct nodelog **out, struct lerr *e);
/* May the log carry j's bytes (sets j's identity the first time)? */
bool nodelog_accepts(struct nodelog *l, struct journal *j);
/* Logs [j->base, j->batch_size) of every journal with via_log set in the batch (bnext
 * list), one write and one fdatasync. -ENOSPC: the log is full (nodelog_checkpoint,
 * whose syncfs makes them durable); -E2BIG: the batch can never fit; other -errno:
 * the log failed (stop using it). */
int nodelog_write(struct nodelog *l, struct journal *batch);
/* syncfs of the log's filesystem (every journal it logs is on it), then the log starts
 * over empty. */
int nodelog_checkpoint(struct nodelog *l);
void nodelog_stats(struct nodelog *l, struct nodelog_stats *st);
void nodelog_close(struct nodelog *l);

/* After j's first successful fdatasync: syncs its directory entry (once). */
void journal_dir_settle(struct journal *j);

/* Raises j->durable to seq (never lowers it). */
static inline void journal_mark_durable(struct journal *j, uint64_t seq)
{
	uint64_t cur = __atomic_load_n(&j->durable, __ATOMIC_ACQUIRE);

	while (cur < seq && !__atomic_compare_exchange_n(&j->durable, &cur, seq, false,
							 __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
		;
}

#endif
