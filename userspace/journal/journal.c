/* journal.c: the run journal's file format: create, append (framed, CRC32C,
 * compressed above a threshold, hash-chained, into space preallocated in chunks), sync,
 * and the verifying scan that recovery, `lantern journal` and `lantern journal verify`
 * share. The format is in include/lantern/journal.h. Group commit is in syncer.c,
 * replication in store.c, the chain's SHA-256 in sha256.c. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <zlib.h>

#include "journal_internal.h"

static const char *const type_names[] = {
	[JOURNAL_RUN_STARTED] = "run_started",
	[JOURNAL_STEP_STARTED] = "step_started",
	[JOURNAL_STEP_COMPLETED] = "step_completed",
	[JOURNAL_STEP_FAILED] = "step_failed",
	[JOURNAL_OUTPUT_SET] = "output_set",
	[JOURNAL_RUN_RESUMED] = "run_resumed",
	[JOURNAL_RUN_COMPLETED] = "run_completed",
	[JOURNAL_RECEIPT] = "receipt",
};

const char *journal_type_name(unsigned type)
{
	return type > 0 && type < JOURNAL_TYPE_MAX ? type_names[type] : "unknown";
}

static void opts_apply(struct journal *j, const struct journal_opts *o)
{
	j->max_bytes = o && o->max_bytes ? o->max_bytes : JOURNAL_DEFAULT_MAX_BYTES;
	j->compress_over = o && o->compress_over ? o->compress_over : JOURNAL_DEFAULT_COMPRESS;
}

int journal_write_at(int fd, const void *buf, size_t len, off_t off)
{
	const char *p = buf;

	while (len) {
		ssize_t w = pwrite(fd, p, len, off);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += w;
		len -= (size_t)w;
		off += w;
	}
	return 0;
}

/* Syncs the directory up levels above path: 1 is the directory holding path, 2 the
 * one holding that directory. */
static void sync_dir_of(const char *path, unsigned up)
{
	char dir[PATH_MAX];
	char *slash;
	int fd;

	snprintf(dir, sizeof(dir), "%s", path);
	for (unsigned i = 0; i < up; i++) {
		slash = strrchr(dir, '/');
		if (!slash)
			snprintf(dir, sizeof(dir), ".");
		else if (slash == dir)
			dir[1] = '\0';
		else
			*slash = '\0';
	}
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0) {
		fsync(fd);
		close(fd);
	}
}

/* After the file's first fdatasync: the directory entry that makes it reachable too.
 * Syncing the directory after the file costs little (on ext4 the file's sync has
 * committed the entry). */
void journal_dir_settle(struct journal *j)
{
	if (__atomic_exchange_n(&j->dir_unsynced, false, __ATOMIC_ACQ_REL))
		sync_dir_of(j->path, j->settle_up ? j->settle_up : 1);
}

static struct journal *journal_alloc(const char *path, const struct journal_opts *o)
{
	struct journal *j = calloc(1, sizeof(*j));

	if (!j)
		return NULL;
	j->fd = -1;
	snprintf(j->path, sizeof(j->path), "%s", path);
	opts_apply(j, o);
	return j;
}

int journal_create(const char *path, const struct journal_opts *o, struct journal **out,
		   struct lerr *e)
{
	struct journal *j;
	struct stat st;
	int err;

	j = journal_alloc(path, o);
	if (!j)
		return lerr_set(e, ENOMEM, "journal %s: out of memory", path);
	j->fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (j->fd < 0) {
		err = lerr_set(e, errno, "journal %s: create: %s", path, strerror(errno));
		free(j);
		return err;
	}
	/* Neither the magic nor the directory entry is synced here: the first sync does
	 * both (journal_dir_settle), so a new run pays one flush before its first record
	 * is durable, not three. A journal lost to a crash before that sync holds no
	 * record anyone relied on. */
	if ((err = journal_write_at(j->fd, JOURNAL_MAGIC, JOURNAL_MAGIC_LEN, 0)) < 0) {
		lerr_set(e, err, "journal %s: writing the header: %s", path, strerror(-err));
		close(j->fd);
		unlink(path);
		free(j);
		return err;
	}
	j->dir_unsynced = true;
	fstat(j->fd, &st);
	j->dev = st.st_dev;
	j->version = 2;
	j->size = j->alloc = JOURNAL_MAGIC_LEN;
	*out = j;
	return 0;
}

int journal_premake(const char *path, struct lerr *e)
{
	int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600), err;

	if (fd < 0)
		return lerr_set(e, errno, "journal %s: create ahead: %s", path, strerror(errno));
	if ((err = journal_write_at(fd, JOURNAL_MAGIC, JOURNAL_MAGIC_LEN, 0)) < 0) {
		lerr_set(e, err, "journal %s: writing the header: %s", path, strerror(-err));
		goto fail;
	}
	/* best effort, as journal_grow: without it the first record extends the file */
	if (fallocate(fd, 0, JOURNAL_MAGIC_LEN, JOURNAL_PREALLOC_MIN - JOURNAL_MAGIC_LEN) < 0 &&
	    errno != EOPNOTSUPP)
		log_warn("journal %s: preallocating ahead: %s", path, strerror(errno));
	if (fsync(fd) < 0) {
		err = lerr_set(e, errno, "journal %s: fsync: %s", path, strerror(errno));
		goto fail;
	}
	close(fd);
	sync_dir_of(path, 1);
	return 0;
fail:
	close(fd);
	unlink(path);
	return err;
}

int journal_open_premade(const char *path, const struct journal_opts *o, unsigned settle_up,
			 struct journal **out, struct lerr *e)
{
	struct journal_scan info;
	struct journal *j;
	int err;

	if ((err = journal_open(path, o, NULL, NULL, &info, &j, e)) < 0)
		return err;
	/* made ahead means nothing in it yet: a record (or anything but zeros after the
	 * magic) is some other journal, never a new run's */
	if (info.version != 2 || info.records || info.torn_bytes) {
		journal_close(j);
		return lerr_set(e, EEXIST, "journal %s: not a journal made ahead (format %u, %llu records, "
				"%llu torn bytes): refusing to start a run in it", path, info.version,
				(unsigned long long)info.records, (unsigned long long)info.torn_bytes);
	}
	j->settle_up = settle_up;
	j->dir_unsynced = settle_up > 0;
	*out = j;
	return 0;
}

/* Bytes [off, end) are all zero: what a crash can leave after the last good record
 * of a format 1 journal when the file's size reached the disk before its data did. */
static bool all_zero(const uint8_t *p, size_t n)
{
	return !n || (!p[0] && !memcmp(p, p + 1, n - 1));
}

/* A damaged record at the end of a format 1 file: its frame's own length says it ends
 * at (or past) the end of the file, or the header itself is cut. */
static bool rec_len_reaches_end(const uint8_t *f, size_t left)
{
	size_t body_len;

	if (left < JOURNAL_FRAME + JOURNAL_HEADER)
		return true;
	body_len = get32(f);
	if (body_len < JOURNAL_HEADER || body_len > JOURNAL_MAX_RECORD)
		return false;
	return JOURNAL_FRAME + body_len >= left;
}

/* Format 2: where the written data ends, the preallocated zeros after it left out. */
static size_t written_end(const uint8_t *buf, size_t size)
{
	uint64_t w;

	while (size >= JOURNAL_MAGIC_LEN + 8) {
		memcpy(&w, buf + size - 8, 8);
		if (w)
			break;
		size -= 8;
	}
	while (size > JOURNAL_MAGIC_LEN && !buf[size - 1])
		size--;
	return size;
}

/* Format 2: does an intact record, one that could have followed record seq, start
 * anywhere in (off, end)? Intact: a possible length within the file, a known type,
 * the flags and zero field as journal_append writes them, a later sequence number,
 * and its CRC holding. Every offset is tried: records are not aligned. */
static bool intact_after(const uint8_t *buf, size_t off, size_t end, size_t size, uint64_t seq)
{
	for (size_t o = off + 1; o < end && size - o >= JOURNAL_FRAME + JOURNAL_HEADER; o++) {
		const uint8_t *b = buf + o + JOURNAL_FRAME;
		uint32_t body_len = get32(buf + o);

		if (body_len < JOURNAL_HEADER || body_len > JOURNAL_MAX_RECORD ||
		    body_len > size - o - JOURNAL_FRAME)
			continue;
		if (!b[0] || b[0] >= JOURNAL_TYPE_MAX || b[1] > 1 || b[2] || b[3] || get64(b + 8) <= seq)
			continue;
		if (journal_crc32c(0, b, body_len) == get32(buf + o + 4))
			return true;
	}
	return false;
}

/* Verifies buf (the whole file) record by record. Returns 0 with info filled (a torn
 * tail is info->torn_bytes), -EBADMSG naming the offset and reason, or cb's error. */
int journal_scan_buf(const char *path, const uint8_t *buf, size_t size, journal_record_cb cb,
		    void *arg, struct journal_scan *info, struct lerr *e)
{
	uint8_t head[JOURNAL_HASH_BYTES] = { 0 };
	char *scratch = NULL;
	size_t scratch_cap = 0, off = JOURNAL_MAGIC_LEN, end;
	uint64_t seq = 0;
	int err = 0;

	memset(info, 0, sizeof(*info));
	if (size >= JOURNAL_MAGIC_LEN && !memcmp(buf, JOURNAL_MAGIC, JOURNAL_MAGIC_LEN))
		info->version = 2;
	else if (size >= JOURNAL_MAGIC_LEN && !memcmp(buf, JOURNAL_MAGIC_V1, JOURNAL_MAGIC_LEN))
		info->version = 1;
	else
		return lerr_set(e, EBADMSG, "journal %s: not a Lantern journal (bad magic)", path);
	/* format 1 has no preallocated space: its written data is the whole file */
	end = info->version == 2 ? written_end(buf, size) : size;
	while (off < end) {
		const uint8_t *f = buf + off, *b = f + JOURNAL_FRAME;
		size_t left = size - off, body_len, rec_len;
		struct journal_record rec = { 0 };
		const char *why = NULL;
		uint32_t raw_len;

		if (left < JOURNAL_FRAME + JOURNAL_HEADER) {
			why = "record header cut short";
			goto damaged;
		}
		body_len = get32(f);
		rec_len = JOURNAL_FRAME + body_len;
		if (body_len < JOURNAL_HEADER || body_len > JOURNAL_MAX_RECORD) {
			why = "impossible record length";
			goto damaged;
		}
		if (rec_len > left) {
			why = "record cut short";
			goto damaged;
		}
		if (journal_crc32c(0, b, body_len) != get32(f + 4)) {
			why = "CRC32C mismatch";
			goto damaged;
		}
		/* The CRC holds: from here on damage cannot be a torn write. */
		rec.type = b[0];
		rec.compressed = b[1] & 1;
		raw_len = get32(b + 4);
		rec.seq = get64(b + 8);
		rec.time_ns = get64(b + 16);
		memcpy(rec.prev, b + 24, JOURNAL_HASH_BYTES);
		rec.offset = off;
		rec.stored_len = (uint32_t)(body_len - JOURNAL_HEADER);
		if (rec.seq != seq + 1) {
			err = lerr_set(e, EBADMSG, "journal %s: record at offset %zu has sequence %llu, "
				       "expected %llu", path, off, (unsigned long long)rec.seq,
				       (unsigned long long)(seq + 1));
			break;
		}
		if (memcmp(rec.prev, head, JOURNAL_HASH_BYTES)) {
			err = lerr_set(e, EBADMSG, "journal %s: record %llu at offset %zu does not chain "
				       "to the previous record (hash mismatch)", path,
				       (unsigned long long)rec.seq, off);
			break;
		}
		if (rec.type == 0 || rec.type >= JOURNAL_TYPE_MAX || raw_len > JOURNAL_MAX_RECORD) {
			err = lerr_set(e, EBADMSG, "journal %s: record %llu at offset %zu has unknown "
				       "type %u", path, (unsigned long long)rec.seq, off, rec.type);
			break;
		}
		if (scratch_cap < (size_t)raw_len + 1) {
			char *n = realloc(scratch, (size_t)raw_len + 1);
			if (!n) {
				err = lerr_set(e, ENOMEM, "journal %s: out of memory", path);
				break;
			}
			scratch = n;
			scratch_cap = (size_t)raw_len + 1;
		}
		if (rec.compressed) {
			uLongf dl = raw_len;
			if (uncompress((Bytef *)scratch, &dl, b + JOURNAL_HEADER, rec.stored_len) != Z_OK ||
			    dl != raw_len) {
				err = lerr_set(e, EBADMSG, "journal %s: record %llu at offset %zu does not "
					       "decompress", path, (unsigned long long)rec.seq, off);
				break;
			}
		} else {
			if (raw_len != rec.stored_len) {
				err = lerr_set(e, EBADMSG, "journal %s: record %llu at offset %zu: length "
					       "mismatch", path, (unsigned long long)rec.seq, off);
				break;
			}
			memcpy(scratch, b + JOURNAL_HEADER, raw_len);
		}
		scratch[raw_len] = '\0';
		rec.payload = scratch;
		rec.len = raw_len;
		if ((err = journal_sha256(rec.hash, f, rec_len)) < 0) {
			lerr_set(e, -err, "journal %s: record %llu: SHA-256 (libcrypto) failed", path,
				 (unsigned long long)rec.seq);
			break;
		}
		if (cb && (err = cb(arg, &rec)) < 0)
			break;
		memcpy(head, rec.hash, JOURNAL_HASH_BYTES);
		seq = rec.seq;
		info->records++;
		if (rec.compressed)
			info->compressed++;
		off += rec_len;
		continue;
damaged:
		/* Only the end of the written data may be torn. Format 1: the damaged record
		 * reaches the end of the file, or everything from it on is zeros. Format 2:
		 * no record that could follow starts after it (include/lantern/journal.h). */
		if (info->version == 1 ? rec_len_reaches_end(f, left) || all_zero(f, left) :
					 !intact_after(buf, off, end, size, seq)) {
			info->torn_bytes = end - off;
			break;
		}
		err = lerr_set(e, EBADMSG, "journal %s: corrupt record %llu at offset %zu (%s) "
			       "followed by %zu more bytes: refusing to guess past it", path,
			       (unsigned long long)(seq + 1), off, why, end - off);
		break;
	}
	free(scratch);
	info->bytes = off;
	if (!err && off < size)
		info->free_bytes = size - off - info->torn_bytes;
	memcpy(info->head, head, JOURNAL_HASH_BYTES);
	return err;
}

int journal_read_fd(const char *path, int fd, uint8_t **buf, size_t *size, struct lerr *e)
{
	struct stat st;
	size_t n = 0;

	if (fstat(fd, &st) < 0)
		return lerr_set(e, errno, "journal %s: stat: %s", path, strerror(errno));
	*buf = malloc((size_t)st.st_size + 1);
	if (!*buf)
		return lerr_set(e, ENOMEM, "journal %s: out of memory", path);
	while (n < (size_t)st.st_size) {
		ssize_t r = pread(fd, *buf + n, (size_t)st.st_size - n, (off_t)n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		n += (size_t)r;
	}
	*size = n;
	return 0;
}

int journal_scan(const char *path, journal_record_cb cb, void *arg, struct journal_scan *info,
		 struct lerr *e)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC), err;
	uint8_t *buf;
	size_t size;

	if (fd < 0)
		return lerr_set(e, errno, "journal %s: %s", path, strerror(errno));
	err = journal_read_fd(path, fd, &buf, &size, e);
	close(fd);
	if (err < 0)
		return err;
	err = journal_scan_buf(path, buf, size, cb, arg, info, e);
	free(buf);
	return err;
}

int journal_open(const char *path, const struct journal_opts *o, journal_record_cb cb,
		 void *arg, struct journal_scan *info, struct journal **out, struct lerr *e)
{
	struct journal_scan local;
	struct journal *j;
	struct stat st;
	uint8_t *buf = NULL;
	size_t size = 0;
	int err;

	if (!info)
		info = &local;
	j = journal_alloc(path, o);
	if (!j)
		return lerr_set(e, ENOMEM, "journal %s: out of memory", path);
	j->fd = open(path, O_RDWR | O_CLOEXEC);
	if (j->fd < 0) {
		err = lerr_set(e, errno, "journal %s: %s", path, strerror(errno));
		free(j);
		return err;
	}
	if ((err = journal_read_fd(path, j->fd, &buf, &size, e)) < 0 ||
	    (err = journal_scan_buf(path, buf, size, cb, arg, info, e)) < 0)
		goto fail;
	/* A torn tail goes with whatever was preallocated after it: the next append
	 * preallocates again, into zeros. */
	if (info->torn_bytes) {
		if (ftruncate(j->fd, (off_t)info->bytes) < 0 || fdatasync(j->fd) < 0) {
			err = lerr_set(e, errno, "journal %s: truncating a torn tail of %llu bytes: %s",
				       path, (unsigned long long)info->torn_bytes, strerror(errno));
			goto fail;
		}
		size = info->bytes;
	}
	free(buf);
	fstat(j->fd, &st);
	j->dev = st.st_dev;
	j->version = info->version;
	j->size = info->bytes;
	j->alloc = size;
	j->seq = j->durable = info->records;
	memcpy(j->head, info->head, JOURNAL_HASH_BYTES);
	*out = j;
	return 0;
fail:
	free(buf);
	close(j->fd);
	free(j);
	return err;
}

/* Format 2: makes room for the file to hold need bytes, a chunk ahead (the file's own
 * size, between JOURNAL_PREALLOC_MIN and _MAX), never past cap. fallocate sets the
 * file's size and reserves its blocks once per chunk; the blocks read as zeros until
 * written. So an append's fdatasync commits no new size, and the filesystem's extent
 * conversion only now and then (ext4 converts up to 32 KiB around a write at once).
 * Writing zeros over the chunk would spare even those commits, but would make the run's
 * first sync, which a spawn waits for, write the whole chunk (docs/durable-execution.md).
 * Best effort: where the filesystem cannot, the record extends the file (as format 1). */
static void journal_grow(struct journal *j, uint64_t need, uint64_t cap)
{
	uint64_t chunk = j->alloc < JOURNAL_PREALLOC_MIN ? JOURNAL_PREALLOC_MIN :
			 j->alloc > JOURNAL_PREALLOC_MAX ? JOURNAL_PREALLOC_MAX : j->alloc;
	uint64_t want = j->alloc + chunk;

	if (want < need)
		want = need;
	want = (want + 4095) & ~(uint64_t)4095;
	if (want > cap)
		want = cap;
	if (want < need || want <= j->alloc)
		return;
	if (fallocate(j->fd, 0, (off_t)j->alloc, (off_t)(want - j->alloc)) == 0)
		j->alloc = want;
}

int journal_append(struct journal *j, unsigned type, const void *payload, size_t len,
		   uint64_t *seq_out, struct lerr *e)
{
	uLongf clen = 0;
	uint8_t *rec, next[JOURNAL_HASH_BYTES];
	size_t body_len, rec_len, plen = len;
	uint64_t limit = j->max_bytes + (type == JOURNAL_RUN_COMPLETED ? JOURNAL_END_RESERVE : 0);
	uint64_t seq = j->seq + 1;
	bool z = false;
	int err;

	if (len > JOURNAL_MAX_RECORD - JOURNAL_HEADER)
		return lerr_set(e, EFBIG, "journal %s: a %s record of %zu bytes exceeds the %u-byte "
				"record limit", j->path, journal_type_name(type), len, JOURNAL_MAX_RECORD);
	rec = malloc(JOURNAL_FRAME + JOURNAL_HEADER + compressBound(len));
	if (!rec)
		return lerr_set(e, ENOMEM, "journal %s: out of memory", j->path);
	if (len > j->compress_over) {
		clen = compressBound(len);
		if (compress2(rec + JOURNAL_FRAME + JOURNAL_HEADER, &clen, payload, len,
			      Z_BEST_SPEED) == Z_OK && clen < len) {
			z = true;
			plen = clen;
		}
	}
	if (!z)
		memcpy(rec + JOURNAL_FRAME + JOURNAL_HEADER, payload, len);
	body_len = JOURNAL_HEADER + plen;
	rec_len = JOURNAL_FRAME + body_len;
	if (j->size + rec_len > limit) {
		free(rec);
		return lerr_set(e, EFBIG, "journal %s: size bound of %llu bytes reached (%llu used, "
				"a %s record needs %zu more)", j->path,
				(unsigned long long)j->max_bytes, (unsigned long long)j->size,
				journal_type_name(type), rec_len);
	}
	uint8_t *b = rec + JOURNAL_FRAME;
	b[0] = (uint8_t)type;
	b[1] = z ? 1 : 0;
	b[2] = b[3] = 0;
	put32(b + 4, (uint32_t)len);
	put64(b + 8, seq);
	put64(b + 16, util_now_ns(CLOCK_REALTIME));
	memcpy(b + 24, j->head, JOURNAL_HASH_BYTES);
	put32(rec, (uint32_t)body_len);
	put32(rec + 4, journal_crc32c(0, b, body_len));
	if (j->version >= 2 && j->size + rec_len > j->alloc)
		journal_grow(j, j->size + rec_len, j->max_bytes + JOURNAL_END_RESERVE);
	if ((err = journal_sha256(next, rec, rec_len)) < 0) {
		free(rec);
		return lerr_set(e, -err, "journal %s: SHA-256 (libcrypto) failed", j->path);
	}
	if ((err = journal_write_at(j->fd, rec, rec_len, (off_t)j->size)) < 0) {
		/* leave no partial record behind for the next append to chain after (nor
		 * after it: the preallocated space goes too) */
		if (ftruncate(j->fd, (off_t)j->size) < 0)
			log_error("journal %s: cannot cut a failed append: %s", j->path, strerror(errno));
		else
			j->alloc = j->size;
		free(rec);
		return lerr_set(e, err, "journal %s: append: %s", j->path, strerror(-err));
	}
	memcpy(j->head, next, JOURNAL_HASH_BYTES);
	if (j->rep)
		j->rep_ops->push(j->rep, seq, rec, rec_len);
	free(rec);
	/* before seq: the syncer loads seq, then size, and logs [base, size) */
	__atomic_store_n(&j->size, j->size + rec_len, __ATOMIC_RELEASE);
	if (j->alloc < j->size)
		j->alloc = j->size;
	__atomic_store_n(&j->seq, seq, __ATOMIC_RELEASE);
	if (seq_out)
		*seq_out = seq;
	return 0;
}

int journal_sync(struct journal *j, struct lerr *e)
{
	uint64_t seq = __atomic_load_n(&j->seq, __ATOMIC_ACQUIRE);
	uint64_t size = __atomic_load_n(&j->size, __ATOMIC_ACQUIRE);

	if (fdatasync(j->fd) < 0)
		return lerr_set(e, errno, "journal %s: fdatasync: %s", j->path, strerror(errno));
	journal_dir_settle(j);
	journal_raise_base(j, size);
	journal_mark_durable(j, seq);
	return 0;
}

int journal_read(struct journal *j, uint64_t offset, unsigned *type, char **payload, size_t *len,
		 struct lerr *e)
{
	uint8_t frame[JOURNAL_FRAME], *body = NULL;
	uint32_t body_len, raw_len;
	char *out = NULL;
	int err;

	*payload = NULL;
	*len = 0;
	if (offset < JOURNAL_MAGIC_LEN || offset + JOURNAL_FRAME > j->size ||
	    pread(j->fd, frame, sizeof(frame), (off_t)offset) != (ssize_t)sizeof(frame))
		return lerr_set(e, EINVAL, "journal %s: no record at offset %llu", j->path,
				(unsigned long long)offset);
	body_len = get32(frame);
	if (body_len < JOURNAL_HEADER || body_len > JOURNAL_MAX_RECORD || offset + JOURNAL_FRAME + body_len > j->size)
		return lerr_set(e, EBADMSG, "journal %s: record at offset %llu: impossible length", j->path,
				(unsigned long long)offset);
	if (!(body = malloc(body_len)))
		return lerr_set(e, ENOMEM, "journal %s: out of memory", j->path);
	err = -EBADMSG;
	if (pread(j->fd, body, body_len, (off_t)(offset + JOURNAL_FRAME)) != (ssize_t)body_len ||
	    journal_crc32c(0, body, body_len) != get32(frame + 4)) {
		lerr_set(e, EBADMSG, "journal %s: record at offset %llu: CRC32C mismatch on read back", j->path,
			 (unsigned long long)offset);
		goto out;
	}
	raw_len = get32(body + 4);
	if (raw_len > JOURNAL_MAX_RECORD || !(out = malloc((size_t)raw_len + 1))) {
		err = lerr_set(e, ENOMEM, "journal %s: record at offset %llu: cannot hold %u bytes", j->path,
			       (unsigned long long)offset, raw_len);
		goto out;
	}
	if (body[1] & 1) {
		uLongf dl = raw_len;

		if (uncompress((Bytef *)out, &dl, body + JOURNAL_HEADER, body_len - JOURNAL_HEADER) != Z_OK ||
		    dl != raw_len) {
			lerr_set(e, EBADMSG, "journal %s: record at offset %llu does not decompress", j->path,
				 (unsigned long long)offset);
			goto out;
		}
	} else if (raw_len != body_len - JOURNAL_HEADER) {
		lerr_set(e, EBADMSG, "journal %s: record at offset %llu: length mismatch", j->path,
			 (unsigned long long)offset);
		goto out;
	} else {
		memcpy(out, body + JOURNAL_HEADER, raw_len);
	}
	out[raw_len] = '\0';
	if (type)
		*type = body[0];
	*payload = out;
	*len = raw_len;
	out = NULL;
	err = 0;
out:
	free(out);
	free(body);
	return err;
}

uint64_t journal_seq(const struct journal *j)
{
	return __atomic_load_n(&j->seq, __ATOMIC_ACQUIRE);
}

uint64_t journal_durable_seq(struct journal *j)
{
	return __atomic_load_n(&j->durable, __ATOMIC_ACQUIRE);
}

uint64_t journal_size(const struct journal *j)
{
	return j->size;
}

uint64_t journal_allocated(const struct journal *j)
{
	return j->alloc;
}

int journal_trim(struct journal *j, struct lerr *e)
{
	if (j->alloc <= j->size)
		return 0;
	if (ftruncate(j->fd, (off_t)j->size) < 0)
		return lerr_set(e, errno, "journal %s: giving back %llu preallocated bytes: %s", j->path,
				(unsigned long long)(j->alloc - j->size), strerror(errno));
	j->alloc = j->size;
	return 0;
}

const char *journal_path(const struct journal *j)
{
	return j->path;
}

void journal_head(const struct journal *j, uint8_t out[JOURNAL_HASH_BYTES])
{
	memcpy(out, j->head, JOURNAL_HASH_BYTES);
}

void journal_close(struct journal *j)
{
	if (!j)
		return;
	if (j->rep)
		j->rep_ops->drop(j->rep);
	if (j->fd >= 0)
		close(j->fd);
	free(j);
}
