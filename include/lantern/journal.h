/* journal.h: a run's event-sourced journal, one append-only file per run
 * (STATE/runs/<id>/journal). The journal, not lanternd's memory, is the record of
 * what a run did: a restarted lanternd rebuilds every step from it.
 *
 * File: an 8-byte magic, then records, then (format 2) preallocated zeros.
 *   "LNTJRNL2"  format 2, what journal_create writes: the file is grown in chunks
 *               (fallocate) ahead of the records, so an append writes into space the
 *               file already has and its fdatasync commits no new size. Everything
 *               after the last record is zeros: free space, not a torn tail.
 *   "LNTJRNL1"  format 1, journals written before format 2: records to the end of the
 *               file. Still read, verified and appended to (without preallocation:
 *               zeros after its last record are a torn tail, as they always were).
 * Records are the same bytes in both formats, at the same offsets. One record:
 *
 *   u32 body_len   little-endian, bytes after this 8-byte frame; at least 56, so a
 *                  frame never starts with four zero bytes (preallocated space does)
 *   u32 crc32c     CRC32C (Castagnoli) of the body
 *   body:
 *     u8  type     enum journal_type
 *     u8  flags    bit 0: payload is zlib-compressed
 *     u16 zero
 *     u32 raw_len  payload length before compression
 *     u64 seq      1, 2, 3, ... without gaps
 *     u64 time_ns  CLOCK_REALTIME when appended
 *     u8  prev[32] SHA-256 of the whole previous record (frame + body); zeros for seq 1
 *     payload      JSON (compact), zlib-compressed when longer than the threshold
 *
 * The SHA-256 of the last record is the run's head hash: it commits to every record
 * before it, so a receipt signing the head signs the whole run. It is computed with
 * OpenSSL's libcrypto (journal_sha256: the CPU's SHA extensions where it has them);
 * the digest is SHA-256 whoever computes it.
 *
 * Recovery (journal_open): the records are verified in order up to the first damaged
 * one (a CRC that fails, an impossible length, a record cut short).
 *   format 1: a damaged record that reaches the end of the file (its length says so,
 *     or its header is cut), or zeros from it to the end, is a torn tail.
 *   format 2: the torn tail is the non-zero bytes from the damaged record to the end of
 *     the written data (the preallocated zeros after them are not written data). It is
 *     a torn tail when no intact record (plausible frame and header, a later sequence
 *     number, CRC holding) starts anywhere after the damaged one: an append the crash
 *     cut, at any byte and in any order its blocks reached the disk, leaves none, while
 *     every record synced after a damaged one would still be there.
 * A torn tail is truncated and reported. Any other damage (a damaged record followed by
 * more records, or a CRC that holds over a wrong sequence or chain) is corruption: the
 * journal refuses to open (-EBADMSG) with the offset and the reason; nothing is
 * skipped silently.
 *
 * Durability: journal_append writes the record (not yet durable). journal_sync makes
 * everything appended durable (fdatasync). Many concurrent runs share syncs through
 * a journal_syncer: one thread that takes every journal with unsynced appends and
 * makes the batch durable with one syncfs() of their filesystem (one fdatasync when
 * the batch is a single journal), so N runs appending at once cost about one device
 * flush, not N.
 *
 * Replication (store.c, lanternd --journal-store postgres://...): a journal attached
 * to a store also sends every record it appends, as the same framed bytes, to a
 * PostgreSQL the data plane runs. The store copy of a run is magic + its records in
 * seq order: it is verified exactly like the file. One thread, "lantern-jstore",
 * commits everything queued since its last batch in one statement (group commit, as
 * the syncer does for the files). Each run's row in the store carries a lease epoch;
 * an append carrying an older epoch is refused in the same statement, under the row's
 * lock, so a node that lost a run's lease can never extend its journal. */
#ifndef LANTERN_JOURNAL_H
#define LANTERN_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lantern/util.h"

#define JOURNAL_MAGIC "LNTJRNL2"           /* what journal_create writes */
#define JOURNAL_MAGIC_V1 "LNTJRNL1"        /* read and appended to, never created */
#define JOURNAL_MAGIC_LEN 8
#define JOURNAL_FRAME 8                     /* body_len + crc32c */
#define JOURNAL_HEADER 56                   /* body before the payload */
#define JOURNAL_HASH_BYTES 32
#define JOURNAL_MAX_RECORD (16u << 20)       /* one record's body at most */
#define JOURNAL_DEFAULT_MAX_BYTES (64ull << 20)
#define JOURNAL_DEFAULT_COMPRESS 512         /* payloads longer than this are compressed */
/* Preallocation (format 2): a journal grows by its own size, at least MIN and at most
 * MAX at a time, and never past max_bytes + JOURNAL_END_RESERVE. */
#define JOURNAL_PREALLOC_MIN (64u << 10)
#define JOURNAL_PREALLOC_MAX (1u << 20)
/* Room kept beyond max_bytes for the records that end a run, so a run that hit its
 * size bound can still record how it ended. */
#define JOURNAL_END_RESERVE (64u << 10)

enum journal_type {
	JOURNAL_RUN_STARTED = 1,   /* {run_id, instance_id, spec, input, created} */
	JOURNAL_STEP_STARTED,      /* {step_id, kind, attempt, idempotency_key, input_digest?, reissued?} */
	JOURNAL_STEP_COMPLETED,    /* {step_id, attempt, result | result_b64, usage?, cost_usd?} */
	JOURNAL_STEP_FAILED,       /* {step_id, attempt, error, retryable} */
	JOURNAL_OUTPUT_SET,        /* {output} */
	JOURNAL_RUN_RESUMED,       /* {instance_id, reason, in_flight?} */
	JOURNAL_RUN_COMPLETED,     /* {status, reason?, exit_code, output?} */
	JOURNAL_RECEIPT,           /* {receipt}: the run's signed receipt (JWS), the last record */
	JOURNAL_TYPE_MAX,
};

/* "run_started", ...; "unknown" for anything else. */
const char *journal_type_name(unsigned type);

/* CRC32C (Castagnoli, reflected 0x82F63B78). crc starts at 0. The CPU's crc32
 * instruction where there is one (x86-64 SSE4.2), else slice-by-8. */
uint32_t journal_crc32c(uint32_t crc, const void *buf, size_t len);
/* The slice-by-8 code whatever the CPU has (the same CRC), for tests. */
uint32_t journal_crc32c_portable(uint32_t crc, const void *buf, size_t len);
/* SHA-256 of the chain (libcrypto). 0, or -EIO when libcrypto cannot hash. */
int journal_sha256(uint8_t out[JOURNAL_HASH_BYTES], const void *buf, size_t len);

struct journal_record {
	uint64_t seq;
	unsigned type;
	uint64_t time_ns;
	uint64_t offset;            /* of the frame in the file */
	uint32_t stored_len;        /* payload bytes in the file */
	bool compressed;
	uint8_t prev[JOURNAL_HASH_BYTES];
	uint8_t hash[JOURNAL_HASH_BYTES];   /* SHA-256 of this record */
	const char *payload;        /* uncompressed, NUL-terminated, valid during the callback */
	size_t len;
};

/* Called for each verified record in order; a negative return stops the scan and is
 * returned by it. */
typedef int (*journal_record_cb)(void *arg, const struct journal_record *rec);

struct journal_scan {
	unsigned version;           /* 1 or 2 (the magic) */
	uint64_t records;
	uint64_t bytes;             /* valid bytes, magic included */
	uint64_t torn_bytes;        /* bytes after the last valid record (truncated on open);
				     * format 2: up to the end of the written data */
	uint64_t free_bytes;        /* format 2: preallocated zeros after the records (and
				     * after a torn tail); never read as records */
	uint64_t compressed;        /* records stored compressed */
	uint8_t head[JOURNAL_HASH_BYTES];
};

struct journal_opts {
	uint64_t max_bytes;         /* 0: JOURNAL_DEFAULT_MAX_BYTES */
	uint32_t compress_over;     /* 0: JOURNAL_DEFAULT_COMPRESS */
};

struct journal;

/* Creates path (must not exist), format 2, with the magic; the file and its directory
 * entry become durable with the first sync (journal_sync or the syncer). */
int journal_create(const char *path, const struct journal_opts *o, struct journal **out,
		   struct lerr *e);
/* A journal made ahead of its run (a pooled sandbox's, docs/pools.md): creates path
 * (must not exist), format 2, with the magic and JOURNAL_PREALLOC_MIN bytes
 * preallocated, and makes the file (its size and blocks) and its directory entry
 * durable. No record: it is nobody's journal until journal_open_premade. Blocking
 * (fsync): for a worker thread. */
int journal_premake(const char *path, struct lerr *e);
/* Opens a journal journal_premake made, for its run's first record. Refuses (-EEXIST)
 * anything but a format 2 journal with no record. settle_up: the directory whose
 * entry must still become durable with the first sync (journal_sync or the syncer):
 * 1, the file's own directory; 2, the one above it (the file's directory was renamed
 * into it since the journal was made); 0, none. */
int journal_open_premade(const char *path, const struct journal_opts *o, unsigned settle_up,
			 struct journal **out, struct lerr *e);
/* Opens for appending after verifying every record (cb may be NULL). A torn tail is
 * truncated (with the preallocated space after it) and counted in info->torn_bytes;
 * corruption fails with -EBADMSG. A format 1 journal stays format 1. */
int journal_open(const char *path, const struct journal_opts *o, journal_record_cb cb,
		 void *arg, struct journal_scan *info, struct journal **out, struct lerr *e);
/* Reads and verifies without changing the file (lantern journal, verify). A torn
 * tail is reported in info, not an error. */
int journal_scan(const char *path, journal_record_cb cb, void *arg, struct journal_scan *info,
		 struct lerr *e);
/* Writes one record (not yet durable); *seq is its number. -EFBIG past max_bytes,
 * which counts the records, never preallocated space (records that end a run,
 * run_completed, may use JOURNAL_END_RESERVE beyond it). Format 2 grows the file by a
 * chunk first when the record does not fit in what is preallocated (best effort: where
 * the filesystem cannot preallocate, the record extends the file). */
int journal_append(struct journal *j, unsigned type, const void *payload, size_t len,
		   uint64_t *seq, struct lerr *e);
/* Reads back the record whose frame starts at offset (journal_size before its append,
 * or journal_record.offset in a scan): CRC checked, decompressed, NUL-terminated;
 * *payload must be freed. So a run keeps offsets in memory, not its records. */
int journal_read(struct journal *j, uint64_t offset, unsigned *type, char **payload, size_t *len,
		 struct lerr *e);
/* Makes every appended record durable now (fdatasync on the caller's thread). */
int journal_sync(struct journal *j, struct lerr *e);
uint64_t journal_seq(const struct journal *j);          /* last appended */
uint64_t journal_durable_seq(struct journal *j);        /* last known durable */
uint64_t journal_size(const struct journal *j);          /* valid bytes (records) */
uint64_t journal_allocated(const struct journal *j);     /* the file's size */
/* Gives back the preallocated space (the file ends at its last record), for a journal
 * whose run has ended. Not synced: after a crash the zeros may still be there, which
 * is harmless. */
int journal_trim(struct journal *j, struct lerr *e);
const char *journal_path(const struct journal *j);
void journal_head(const struct journal *j, uint8_t out[JOURNAL_HASH_BYTES]);
/* A journal must not be queued in a syncer when closed: journal_syncer_forget first. */
void journal_close(struct journal *j);

/* Group commit. notify_fd (an eventfd, or -1) gets 1 added after every batch, so an
 * event loop can answer the callers whose records are now durable. */
struct journal_syncer;
struct journal_syncer_stats {
	uint64_t batches;           /* syncfs, fdatasync or node log writes */
	uint64_t journals;          /* journals made durable, summed over batches */
	/* with a node log */
	uint64_t logged;            /* batches made durable by one node log write */
	uint64_t checkpoints;       /* node log full: a syncfs, and the log starts over */
	uint64_t replayed_files;    /* at start: journal files the log put bytes back in */
	uint64_t replayed_bytes;
};
int journal_syncer_start(int notify_fd, struct journal_syncer **out, struct lerr *e);
/* The same, with a node log at log_path (log_bytes large, 0: NODELOG_DEFAULT_BYTES,
 * created if absent): a batch's journals beneath the log's directory, on its
 * filesystem, become durable with one write and one fdatasync of the log instead of a
 * syncfs. Before the thread starts, the log puts back into journal files whatever a
 * crash took of their logged bytes; call it before opening any journal there. A log it
 * cannot replay is kept as <log_path>.unreplayed-<generation>-<time> and logged. */
#define NODELOG_DEFAULT_BYTES (16u << 20)
int journal_syncer_start_logged(int notify_fd, const char *log_path, uint64_t log_bytes,
				struct journal_syncer **out, struct lerr *e);
/* Queues j for the next batch (cheap; call after journal_append). */
void journal_syncer_request(struct journal_syncer *s, struct journal *j);
/* Blocks until j is durable up to seq. Returns 0, or -errno if syncing j failed. */
int journal_syncer_wait(struct journal_syncer *s, struct journal *j, uint64_t seq);
/* Takes j out of the syncer (waits for a batch that holds it); then it may be closed. */
void journal_syncer_forget(struct journal_syncer *s, struct journal *j);
/* Error of the last failed sync of j (sticky), or 0. */
int journal_sync_error(struct journal *j);
void journal_syncer_stats(struct journal_syncer *s, struct journal_syncer_stats *st);
void journal_syncer_stop(struct journal_syncer *s);

/* ---- the replicated store ---- */
struct journal_store;
struct journal_store_opts {
	const char *url;            /* postgres://... (libpq connection URI) */
	const char *owner;          /* this node, written beside each run's epoch */
	int notify_fd;              /* gets 1 added after every batch (or -1) */
	uint32_t give_up_ms;        /* a record not in the store after this fails its run */
};
struct journal_store_stats {
	uint64_t batches;           /* committed statements */
	uint64_t records;           /* records in them */
	uint64_t retries;           /* failed attempts (connection, timeout) */
};
/* Connects, creates the tables (once, under an advisory lock) and starts the thread. */
int journal_store_open(const struct journal_store_opts *o, struct journal_store **out,
		       struct lerr *e);
void journal_store_close(struct journal_store *s);
/* A random id the store keeps for itself: nodes with the same id share a store. */
const char *journal_store_id(const struct journal_store *s);
/* 0 while the last attempt to reach the store worked; else -errno with why. */
int journal_store_health(struct journal_store *s, char *why, size_t len);
void journal_store_stats(struct journal_store *s, struct journal_store_stats *st);

/* Replicates j as run key under lease epoch: records appended from now on go to the
 * store too. Records j already holds are sent first, those the store lacks (a journal
 * reopened after a crash of lanternd may be ahead of its copy). */
int journal_replicate(struct journal *j, struct journal_store *s, const char *key, int64_t epoch,
		      struct lerr *e);
/* Records appended from now on stay in the file only (a fenced run's own end is not
 * the run's end: it must not reach the store); those already queued still go. */
void journal_replicate_stop(struct journal *j);
/* Last seq the store holds (0 when not replicated: then callers need not wait). */
uint64_t journal_stored_seq(struct journal *j);
bool journal_replicated(const struct journal *j);
/* Sticky error of j's replica: -ESTALE when the store refused it (a newer lease epoch
 * holds the run: fenced), -ETIMEDOUT when the store could not be reached within the
 * bound; why says which. 0 otherwise. */
int journal_store_error(struct journal *j, char *why, size_t len);
/* Blocks until the store holds j up to seq, or j's replica failed (its error). */
int journal_store_wait(struct journal *j, uint64_t seq);

/* A run's copy in the store, read in one transaction that first claims it for epoch
 * (the store's epoch of the run becomes epoch, unless it is higher: -ESTALE). From
 * then on an append under an older epoch is refused. The copy is verified (CRC,
 * sequence, chain: any damage is -EBADMSG) and written to path (durable), if it has
 * records. Blocking: run it on a worker thread, not on an event loop. */
struct journal_claim {
	uint64_t records;           /* 0: the store has nothing of the run */
	char run_id[64];            /* the journal's own run id (run_started) */
	bool ended;                 /* its last record is run_completed */
	char *end_payload;          /* that record's payload (malloc'd) */
};
int journal_store_claim(struct journal_store *s, const char *key, int64_t epoch, const char *path,
			struct journal_claim *out, struct lerr *e);
/* The store copy of key as a journal file's bytes (magic + records), unverified, for
 * `lantern journal verify --store`: a connection of its own. */
int journal_store_read(const char *url, const char *key, uint8_t **buf, size_t *len,
		       struct lerr *e);
/* Verifies a journal held in memory (as journal_scan does a file). */
int journal_scan_buf(const char *name, const uint8_t *buf, size_t len, journal_record_cb cb,
		     void *arg, struct journal_scan *info, struct lerr *e);

#endif
