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
	uint64_t size;              /* valid bytes; the next record goes here */
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
