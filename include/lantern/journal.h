/* journal.h: a run's event-sourced journal, one append-only file per run
 * (STATE/runs/<id>/journal). The journal, not lanternd's memory, is the record of
 * what a run did: a restarted lanternd rebuilds every step from it.
 *
 * File: an 8-byte magic "LNTJRNL1", then records. One record:
 *
 *   u32 body_len   little-endian, bytes after this 8-byte frame
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
 * before it, so a receipt signing the head signs the whole run.
 *
 * Recovery (journal_open): a record cut short at the end of the file, or a last
 * record whose CRC fails (a write the crash tore), is a torn tail: it is truncated
 * and reported. Any other damage (a CRC, sequence or chain mismatch followed by more
 * data) is corruption in the middle: the journal refuses to open (-EBADMSG) with the
 * offset and the reason; nothing is skipped silently.
 *
 * Durability: journal_append writes the record (not yet durable). journal_sync makes
 * everything appended durable (fdatasync). Many concurrent runs share syncs through
 * a journal_syncer: one thread that takes every journal with unsynced appends and
 * makes the batch durable with one syncfs() of their filesystem (one fdatasync when
 * the batch is a single journal), so N runs appending at once cost about one device
 * flush, not N. */
#ifndef LANTERN_JOURNAL_H
#define LANTERN_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lantern/util.h"

#define JOURNAL_MAGIC "LNTJRNL1"
#define JOURNAL_MAGIC_LEN 8
#define JOURNAL_FRAME 8                     /* body_len + crc32c */
#define JOURNAL_HEADER 56                   /* body before the payload */
#define JOURNAL_HASH_BYTES 32
#define JOURNAL_MAX_RECORD (16u << 20)       /* one record's body at most */
#define JOURNAL_DEFAULT_MAX_BYTES (64ull << 20)
#define JOURNAL_DEFAULT_COMPRESS 512         /* payloads longer than this are compressed */
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

/* CRC32C (Castagnoli, reflected 0x82F63B78), slice-by-8. crc starts at 0. */
uint32_t journal_crc32c(uint32_t crc, const void *buf, size_t len);

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
	uint64_t records;
	uint64_t bytes;             /* valid bytes, magic included */
	uint64_t torn_bytes;        /* bytes after the last valid record (truncated on open) */
	uint64_t compressed;        /* records stored compressed */
	uint8_t head[JOURNAL_HASH_BYTES];
};

struct journal_opts {
	uint64_t max_bytes;         /* 0: JOURNAL_DEFAULT_MAX_BYTES */
	uint32_t compress_over;     /* 0: JOURNAL_DEFAULT_COMPRESS */
};

struct journal;

/* Creates path (must not exist) with the magic; the file and its directory entry
 * become durable with the first sync (journal_sync or the syncer). */
int journal_create(const char *path, const struct journal_opts *o, struct journal **out,
		   struct lerr *e);
/* Opens for appending after verifying every record (cb may be NULL). A torn tail is
 * truncated and counted in info->torn_bytes; corruption fails with -EBADMSG. */
int journal_open(const char *path, const struct journal_opts *o, journal_record_cb cb,
		 void *arg, struct journal_scan *info, struct journal **out, struct lerr *e);
/* Reads and verifies without changing the file (lantern journal, verify). A torn
 * tail is reported in info, not an error. */
int journal_scan(const char *path, journal_record_cb cb, void *arg, struct journal_scan *info,
		 struct lerr *e);
/* Writes one record (not yet durable); *seq is its number. -EFBIG past max_bytes
 * (records that end a run, run_completed, may use JOURNAL_END_RESERVE beyond it). */
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
uint64_t journal_size(const struct journal *j);
const char *journal_path(const struct journal *j);
void journal_head(const struct journal *j, uint8_t out[JOURNAL_HASH_BYTES]);
/* A journal must not be queued in a syncer when closed: journal_syncer_forget first. */
void journal_close(struct journal *j);

/* Group commit. notify_fd (an eventfd, or -1) gets 1 added after every batch, so an
 * event loop can answer the callers whose records are now durable. */
struct journal_syncer;
struct journal_syncer_stats {
	uint64_t batches;           /* syncfs or fdatasync calls */
	uint64_t journals;          /* journals made durable, summed over batches */
};
int journal_syncer_start(int notify_fd, struct journal_syncer **out, struct lerr *e);
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

#endif
