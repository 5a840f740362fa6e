/* journal_test: the run journal module on its own: CRC32C against known vectors (the
 * CPU's instruction and the table code alike), the chain's SHA-256 (libcrypto) against
 * libsodium's, append and verified reopen (payloads, compression, hash chain); format
 * 2's preallocation (the file grows by chunks, not by appends; zeros after the records
 * are free space, never records; a crash at any byte of an append into it, in any order
 * the bytes reached the disk, is a torn tail truncated exactly; a torn record followed
 * by an intact one is corruption); format 1 journals as the previous lanternd wrote
 * them (built here without the module) still read, appended to and verified, with
 * format 1's torn-tail rules (a record cut at every byte, a zero-filled tail);
 * corruption in the middle (refused, file untouched) in both formats, a broken chain
 * with valid CRCs, the size bound (records only, preallocation within it), 1,000
 * concurrent runs appending through the group-commit syncer, and the replicated store
 * on a private PostgreSQL: group-committed copies equal to the files, a claim under a
 * newer epoch fencing the old writer, catch-up of records the store missed, and a
 * store that is away for a moment or past the bound. */
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>
#include <zlib.h>

#include "tap.h"
#include "testlib.h"
#include "lantern/journal.h"
#include "lantern/util.h"

static char dir[256];

static const char *jpath(const char *name)
{
	static char p[4][512];
	static int k;
	char *b = p[k++ % 4];

	snprintf(b, 512, "%s/%s", dir, name);
	return b;
}

struct collect {
	int n;
	char *payload[256];
	unsigned type[256];
};

static int collect_cb(void *arg, const struct journal_record *rec)
{
	struct collect *c = arg;

	if (c->n < 256) {
		c->payload[c->n] = strdup(rec->payload);
		c->type[c->n] = rec->type;
	}
	c->n++;
	return 0;
}

static void collect_free(struct collect *c)
{
	for (int i = 0; i < c->n && i < 256; i++)
		free(c->payload[i]);
	memset(c, 0, sizeof(*c));
}

/* Payload i: small JSON for most, a long compressible one every 10th. */
static char *payload_for(int i)
{
	char *p;

	if (i % 10 == 9) {
		size_t n = 4000;
		p = malloc(n + 64);
		int off = snprintf(p, 64, "{\"step_id\":\"s%d\",\"result\":\"", i);
		memset(p + off, 'a' + i % 26, n);
		strcpy(p + off + n, "\"}");
	} else if (asprintf(&p, "{\"step_id\":\"s%d\",\"n\":%d}", i, i) < 0) {
		p = NULL;
	}
	return p;
}

static int write_journal(const char *path, int n, const struct journal_opts *o)
{
	struct journal *j;
	struct lerr e;
	int err;

	unlink(path);
	if ((err = journal_create(path, o, &j, &e)) < 0)
		return err;
	for (int i = 0; i < n; i++) {
		char *p = payload_for(i);
		err = journal_append(j, i == 0 ? JOURNAL_RUN_STARTED : JOURNAL_STEP_STARTED, p,
				     strlen(p), NULL, &e);
		free(p);
		if (err < 0)
			break;
	}
	if (!err)
		err = journal_sync(j, &e);
	journal_close(j);
	return err;
}

static off_t file_size(const char *path)
{
	struct stat st;

	return stat(path, &st) < 0 ? -1 : st.st_size;
}

static int put_file(const char *path, const void *buf, size_t len)
{
	int fd = open(path, O_WRONLY | O_TRUNC | O_CREAT, 0600), err = 0;

	if (fd < 0 || write(fd, buf, len) != (ssize_t)len)
		err = -1;
	if (fd >= 0)
		close(fd);
	return err;
}

struct offsets {
	int n;
	uint64_t off[64];
};

static int offsets_cb(void *arg, const struct journal_record *rec)
{
	struct offsets *o = arg;

	if (o->n < 64)
		o->off[o->n++] = rec->offset;
	return 0;
}

/* Rewrites a journal as format 1: the old magic and its records, nothing after them.
 * Records are the same bytes in both formats. */
static void to_v1(const char *path)
{
	struct journal_scan info;
	struct lerr e;
	char *buf;
	size_t len;

	if (journal_scan(path, NULL, NULL, &info, &e) < 0 || util_read_file(path, &buf, &len) < 0)
		return;
	memcpy(buf, JOURNAL_MAGIC_V1, JOURNAL_MAGIC_LEN);
	put_file(path, buf, info.bytes);
	free(buf);
}

/* One past the last non-zero byte of buf[from, to), or from when all are zero. */
static size_t nonzero_end(const char *buf, size_t from, size_t to)
{
	while (to > from && !buf[to - 1])
		to--;
	return to;
}

static void test_crc(void)
{
	uint8_t zeros[32] = { 0 }, ones[32];
	const char *digits = "123456789";
	char big[1000];

	memset(ones, 0xff, sizeof(ones));
	tap_ok(journal_crc32c(0, digits, 9) == 0xE3069283u, "crc32c(\"123456789\") = e3069283");
	tap_ok(journal_crc32c(0, zeros, 32) == 0x8A9136AAu, "crc32c(32 zero bytes) = 8a9136aa (RFC 3720)");
	tap_ok(journal_crc32c(0, ones, 32) == 0x62A8AB43u, "crc32c(32 0xff bytes) = 62a8ab43 (RFC 3720)");
	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (char)(i * 7);
	/* slice-by-8 with any alignment and split equals one pass */
	bool same = true;
	uint32_t whole = journal_crc32c(0, big, sizeof(big));
	for (size_t cut = 0; cut < 17; cut++)
		same &= journal_crc32c(journal_crc32c(0, big, cut), big + cut, sizeof(big) - cut) == whole;
	tap_ok(same, "crc32c continues across splits at any alignment");
	/* the CPU's instruction (where journal_crc32c uses it) and the tables agree */
	same = journal_crc32c_portable(0, digits, 9) == 0xE3069283u &&
	       journal_crc32c_portable(0, zeros, 32) == 0x8A9136AAu;
	for (size_t off = 0; off < 9; off++)
		for (size_t n = 0; n + off <= sizeof(big); n += 37)
			same &= journal_crc32c_portable(0, big + off, n) == journal_crc32c(0, big + off, n);
	tap_ok(same, "crc32c: the table code and the one in use give the same CRC at every alignment and length");
}

/* The chain's SHA-256 (libcrypto) is the SHA-256 libsodium computes, byte for byte:
 * every length around the 64-byte block and its 56-byte padding edge, and 1 MiB. */
static void test_sha(void)
{
	static uint8_t big[1 << 20];
	uint8_t a[32], b[32];
	bool same = true;

	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (uint8_t)(i * 131 + (i >> 9));
	for (size_t n = 0; n <= 300; n++) {
		same &= journal_sha256(a, big, n) == 0;
		crypto_hash_sha256(b, big, n);
		same &= !memcmp(a, b, 32);
	}
	same &= journal_sha256(a, big, sizeof(big)) == 0;
	crypto_hash_sha256(b, big, sizeof(big));
	same &= !memcmp(a, b, 32);
	tap_ok(same, "journal_sha256 (libcrypto) equals libsodium's SHA-256 for 0-300 bytes and 1 MiB");
}

static void test_roundtrip(void)
{
	const char *p = jpath("rt");
	struct collect c = { 0 };
	struct journal_scan info;
	struct journal *j;
	struct lerr e = { 0 };
	uint8_t head[32];
	bool same = true;
	int err;

	tap_ok(write_journal(p, 100, NULL) == 0, "100 records appended and synced");
	err = journal_open(p, NULL, collect_cb, &c, &info, &j, &e);
	tap_ok(err == 0 && info.records == 100 && info.torn_bytes == 0,
	       "reopen verifies 100 records, no torn tail (%d: %s)", err, e.msg);
	for (int i = 0; i < 100 && i < c.n; i++) {
		char *want = payload_for(i);
		same &= !strcmp(want, c.payload[i]);
		free(want);
	}
	tap_ok(same && c.n == 100 && c.type[0] == JOURNAL_RUN_STARTED, "payloads and types read back as written");
	tap_ok(info.compressed == 10, "payloads above the threshold are stored compressed (%llu of 100)",
	       (unsigned long long)info.compressed);
	tap_ok(info.version == 2 && info.bytes < 100 * 4000 / 4,
	       "a new journal is format 2; compression keeps its records small (%llu bytes)",
	       (unsigned long long)info.bytes);
	if (err == 0) {
		journal_head(j, head);
		tap_ok(!memcmp(head, info.head, 32) && journal_seq(j) == 100, "head hash and sequence restored");
		err = journal_append(j, JOURNAL_RUN_COMPLETED, "{\"status\":\"succeeded\"}", 23, NULL, &e);
		tap_ok(err == 0 && journal_sync(j, &e) == 0, "appending after reopen works");
		journal_close(j);
	} else {
		tap_ok(false, "head hash and sequence restored");
		tap_ok(false, "appending after reopen works");
	}
	collect_free(&c);
	err = journal_scan(p, NULL, NULL, &info, &e);
	tap_ok(err == 0 && info.records == 101, "the chain continues across reopen (101 records verify)");
}

/* Format 1, as the previous lanternd wrote it: records to the end of the file. */
static void test_torn_v1(void)
{
	const char *p = jpath("torn"), *full = jpath("torn-full");
	struct journal_scan info;
	struct lerr e = { 0 };
	off_t whole, last_start;
	char *buf;
	size_t len;
	bool all_ok = true;
	int err;

	write_journal(full, 20, NULL);
	to_v1(full);
	whole = file_size(full);
	/* the start of record 20: the end of 19 */
	write_journal(p, 19, NULL);
	to_v1(p);
	last_start = file_size(p);
	util_read_file(full, &buf, &len);
	/* Cut the last record at every byte: each must open as 19 records. */
	for (off_t cut = last_start + 1; cut < whole; cut++) {
		struct journal *j;

		if (put_file(p, buf, (size_t)cut) < 0) {
			all_ok = false;
			break;
		}
		err = journal_open(p, NULL, NULL, NULL, &info, &j, &e);
		if (err < 0 || info.version != 1 || info.records != 19 ||
		    info.torn_bytes != (uint64_t)(cut - last_start) || file_size(p) != last_start) {
			tap_diag("cut at %lld: err %d (%s), records %llu, torn %llu", (long long)cut, err,
				 e.msg, (unsigned long long)info.records, (unsigned long long)info.torn_bytes);
			all_ok = false;
			if (err == 0)
				journal_close(j);
			break;
		}
		journal_close(j);
	}
	tap_ok(all_ok && whole - last_start > JOURNAL_FRAME + JOURNAL_HEADER,
	       "format 1: a last record cut at any of its %lld bytes is a torn tail: truncated, 19 records remain",
	       (long long)(whole - last_start));

	/* The last record whole but damaged (the write tore inside it). */
	{
		struct journal *j;

		buf[whole - 3] ^= 0x55;
		err = put_file(p, buf, (size_t)whole);
		buf[whole - 3] ^= 0x55;
		err = err ? err : journal_open(p, NULL, NULL, NULL, &info, &j, &e);
		tap_ok(err == 0 && info.records == 19 && file_size(p) == last_start,
		       "format 1: a damaged last record is a torn tail too");
		if (err == 0)
			journal_close(j);
	}
	/* Zeros after the last record (size reached the disk, data did not). */
	{
		struct journal *j;
		char zeros[300] = { 0 };
		int fd = open(p, O_WRONLY | O_TRUNC | O_CREAT, 0600);
		err = write(fd, buf, (size_t)whole) == whole && write(fd, zeros, sizeof(zeros)) == sizeof(zeros) ? 0 : -1;
		close(fd);
		err = err ? err : journal_open(p, NULL, NULL, NULL, &info, &j, &e);
		tap_ok(err == 0 && info.records == 20 && info.torn_bytes == 300 && file_size(p) == whole,
		       "format 1: a zero-filled tail is truncated and every record kept");
		if (err == 0) {
			/* and it stays format 1: appended to without preallocation */
			err = journal_append(j, JOURNAL_RUN_COMPLETED, "{\"status\":\"succeeded\"}", 23, NULL, &e);
			tap_ok(err == 0 && journal_sync(j, &e) == 0 && file_size(p) == (off_t)journal_size(j) &&
			       journal_allocated(j) == journal_size(j) &&
			       journal_scan(p, NULL, NULL, &info, &e) == 0 && info.version == 1 && info.records == 21,
			       "format 1: an append after recovery stays format 1, nothing preallocated (%s)", e.msg);
			journal_close(j);
		} else {
			tap_ok(false, "format 1: an append after recovery stays format 1, nothing preallocated");
		}
	}
	free(buf);
}

/* Opens the image of a crashed journal: how many records, how much torn, what the file
 * holds after, and whether one more append then verifies. */
struct reopened {
	int err;
	uint64_t records, torn, free;
	off_t size_after;
	bool append_ok;
	char msg[256];
};

static struct reopened reopen_image(const char *p, const char *img, size_t len)
{
	struct reopened r = { 0 };
	struct journal_scan info = { 0 }, after;
	struct journal *j;
	struct lerr e = { 0 };

	if (put_file(p, img, len) < 0) {
		r.err = -EIO;
		return r;
	}
	r.err = journal_open(p, NULL, NULL, NULL, &info, &j, &e);
	snprintf(r.msg, sizeof(r.msg), "%s", e.msg);
	r.records = info.records;
	r.torn = info.torn_bytes;
	r.free = info.free_bytes;
	r.size_after = file_size(p);
	if (r.err == 0) {
		r.append_ok = journal_append(j, JOURNAL_RUN_RESUMED, "{\"reason\":\"test\"}", 17, NULL, &e) == 0 &&
			      journal_sync(j, &e) == 0;
		journal_close(j);
		r.append_ok = r.append_ok && journal_scan(p, NULL, NULL, &after, &e) == 0 &&
			      after.records == info.records + 1 && !after.torn_bytes && after.version == 2;
	}
	return r;
}

/* Format 2: the records, then preallocated zeros. A crash inside an append leaves some
 * of the record's bytes in the preallocated space: in order (a prefix), or out of order
 * (the blocks that reached the disk first were later ones: a suffix). */
static void test_torn_v2(void)
{
	const char *p = jpath("torn2"), *full = jpath("torn2-full");
	struct offsets o = { 0 };
	struct journal_scan info;
	struct lerr e = { 0 };
	struct reopened r;
	size_t len, last_start, rec_end, cut;
	char *buf, *img;
	bool prefix_ok = true, suffix_ok = true;
	int err;

	write_journal(full, 21, NULL);
	util_read_file(full, &buf, &len);
	err = journal_scan(full, offsets_cb, &o, &info, &e);
	if (!tap_ok(err == 0 && info.records == 21 && info.free_bytes > 0 &&
		    info.bytes + info.free_bytes == len,
		    "format 2: 21 records then %llu preallocated bytes of zeros, not read as records",
		    (unsigned long long)info.free_bytes)) {
		free(buf);
		return;
	}
	/* record 20 is the torn one; record 21 is kept aside for the intact-after case */
	last_start = o.off[19];
	rec_end = o.off[20];
	img = malloc(len);
	for (cut = last_start; cut < rec_end && prefix_ok; cut++) {
		size_t nz;

		memcpy(img, buf, len);
		memset(img + cut, 0, len - cut);
		nz = nonzero_end(img, last_start, cut);
		r = reopen_image(p, img, len);
		/* nothing of the record written (or only zero bytes of it): free space */
		prefix_ok = r.err == 0 && r.records == 19 && r.torn == nz - last_start &&
			    r.size_after == (off_t)(nz > last_start ? last_start : len) && r.append_ok;
		if (!prefix_ok)
			tap_diag("prefix of %zu bytes: err %d (%s), records %llu, torn %llu, size after %lld",
				 cut - last_start, r.err, r.msg, (unsigned long long)r.records,
				 (unsigned long long)r.torn, (long long)r.size_after);
	}
	tap_ok(prefix_ok, "format 2: a crash after any of the %zu bytes of an append into preallocated space is a "
	       "torn tail: exactly its bytes truncated, 19 records remain, the next append verifies",
	       rec_end - last_start);
	for (cut = last_start + 1; cut < rec_end && suffix_ok; cut++) {
		size_t nz;

		memcpy(img, buf, len);
		memset(img + last_start, 0, cut - last_start);
		memset(img + rec_end, 0, len - rec_end);
		nz = nonzero_end(img, last_start, rec_end);
		r = reopen_image(p, img, len);
		suffix_ok = r.err == 0 && r.records == 19 && r.torn == nz - last_start &&
			    r.size_after == (off_t)(nz > last_start ? last_start : len) && r.append_ok;
		if (!suffix_ok)
			tap_diag("suffix from byte %zu: err %d (%s), records %llu, torn %llu", cut - last_start,
				 r.err, r.msg, (unsigned long long)r.records, (unsigned long long)r.torn);
	}
	tap_ok(suffix_ok, "format 2: the same append with only its end on disk (blocks written out of order), "
	       "from any byte: a torn tail too");

	/* the last record whole but damaged, zeros after it */
	memcpy(img, buf, len);
	memset(img + rec_end, 0, len - rec_end);
	img[rec_end - 3] ^= 0x55;
	r = reopen_image(p, img, len);
	tap_ok(r.err == 0 && r.records == 19 && r.torn == nonzero_end(img, last_start, rec_end) - last_start &&
	       r.size_after == (off_t)last_start &&
	       r.append_ok, "format 2: a damaged last record is a torn tail (%d: %s)", r.err, r.msg);

	/* the records whole, zeros after: nothing torn, nothing truncated */
	memcpy(img, buf, len);
	r = reopen_image(p, img, len);
	tap_ok(r.err == 0 && r.records == 21 && r.torn == 0 && r.free == len - info.bytes &&
	       r.size_after == (off_t)len && r.append_ok,
	       "format 2: zeros after the last record are free space: no torn tail, nothing truncated, appends go there");
	{
		struct journal *j;
		unsigned type;
		char *payload = NULL;
		size_t plen;

		put_file(p, buf, len);
		err = journal_open(p, NULL, NULL, NULL, NULL, &j, &e);
		if (err == 0) {
			err = journal_read(j, info.bytes, &type, &payload, &plen, &e);
			tap_ok(err == -EINVAL && !payload, "format 2: no record is read back from preallocated space (%s)", e.msg);
			journal_close(j);
		} else {
			tap_ok(false, "format 2: no record is read back from preallocated space (%s)", e.msg);
		}
	}

	/* a torn record 20 before an intact record 21: not a crash of appends in order
	 * (21 was only synced with 20): corruption, nothing truncated */
	memcpy(img, buf, len);
	memset(img + last_start, 0, 16);
	r = reopen_image(p, img, len);
	tap_ok(r.err == -EBADMSG && strstr(r.msg, "corrupt record 20") && r.size_after == (off_t)len,
	       "format 2: a damaged record followed by an intact one is corruption, the file left as it was (%s)", r.msg);
	free(img);
	free(buf);
}

static void test_corrupt(unsigned version)
{
	const char *p = jpath("corrupt");
	struct journal_scan info;
	struct journal *j = NULL;
	struct lerr e = { 0 };
	off_t before;
	char *buf;
	size_t len, off = JOURNAL_MAGIC_LEN;
	int err, fd;

	write_journal(p, 20, NULL);
	if (version == 1)
		to_v1(p);
	util_read_file(p, &buf, &len);
	/* find record 5 */
	for (int i = 1; i < 5; i++)
		off += JOURNAL_FRAME + (uint32_t)((uint8_t)buf[off] | (uint8_t)buf[off + 1] << 8 |
						  (uint8_t)buf[off + 2] << 16 | (uint8_t)buf[off + 3] << 24);
	buf[off + JOURNAL_FRAME + JOURNAL_HEADER + 2] ^= 0x01;
	fd = open(p, O_WRONLY | O_TRUNC);
	if (write(fd, buf, len) != (ssize_t)len)
		tap_diag("short write");
	close(fd);
	before = file_size(p);
	err = journal_open(p, NULL, NULL, NULL, &info, &j, &e);
	tap_ok(err == -EBADMSG && strstr(e.msg, "corrupt record 5") && strstr(e.msg, "CRC32C"),
	       "format %u: a flipped bit in record 5 of 20 refuses the journal, naming the record and why (%s)",
	       version, e.msg);
	tap_ok(file_size(p) == before, "format %u: the corrupt journal is left as it was (nothing truncated)", version);
	err = journal_scan(p, NULL, NULL, &info, &e);
	tap_ok(err == -EBADMSG && info.records == 4, "format %u: verify reports the same, after 4 good records", version);
	if (j)
		journal_close(j);

	/* A record whose CRC is right but whose chain is not (rewritten by someone). */
	buf[off + JOURNAL_FRAME + JOURNAL_HEADER + 2] ^= 0x01;
	buf[off + JOURNAL_FRAME + 24] ^= 0x01; /* prev hash */
	{
		uint8_t *b = (uint8_t *)buf + off + JOURNAL_FRAME;
		uint32_t blen = (uint8_t)buf[off] | (uint8_t)buf[off + 1] << 8 |
				(uint8_t)buf[off + 2] << 16 | (uint32_t)(uint8_t)buf[off + 3] << 24;
		uint32_t crc = journal_crc32c(0, b, blen);
		memcpy(buf + off + 4, &crc, 4);
	}
	fd = open(p, O_WRONLY | O_TRUNC);
	if (write(fd, buf, len) != (ssize_t)len)
		tap_diag("short write");
	close(fd);
	err = journal_scan(p, NULL, NULL, &info, &e);
	tap_ok(err == -EBADMSG && strstr(e.msg, "does not chain"),
	       "format %u: a record with a valid CRC but a wrong previous hash breaks the chain (%s)", version, e.msg);
	free(buf);
}

/* A format 1 journal built here without the journal module, as the previous lanternd
 * wrote one: the old magic, records framed by hand (one of them zlib-compressed),
 * chained with libsodium's SHA-256. */
static int write_v1(const char *path, int n, uint8_t head[32])
{
	uint8_t rec[8192];
	FILE *f = fopen(path, "w");

	memset(head, 0, 32);
	if (!f)
		return -1;
	fwrite(JOURNAL_MAGIC_V1, 1, JOURNAL_MAGIC_LEN, f);
	for (int i = 0; i < n; i++) {
		char *p = payload_for(i);
		size_t plen = strlen(p);
		uLongf clen = sizeof(rec) - JOURNAL_FRAME - JOURNAL_HEADER;
		uint8_t *b = rec + JOURNAL_FRAME;
		uint64_t seq = (uint64_t)i + 1, t = 1700000000000000000ull + seq;
		uint32_t blen, raw = (uint32_t)plen, crc;
		bool z = plen > JOURNAL_DEFAULT_COMPRESS &&
			 compress2(b + JOURNAL_HEADER, &clen, (const Bytef *)p, plen, Z_BEST_SPEED) == Z_OK &&
			 clen < plen;

		if (!z)
			memcpy(b + JOURNAL_HEADER, p, plen);
		blen = (uint32_t)(JOURNAL_HEADER + (z ? clen : plen));
		memset(b, 0, JOURNAL_HEADER);
		b[0] = i == 0 ? JOURNAL_RUN_STARTED : JOURNAL_STEP_STARTED;
		b[1] = z;
		memcpy(b + 4, &raw, 4);          /* little-endian host, as the journal */
		memcpy(b + 8, &seq, 8);
		memcpy(b + 16, &t, 8);
		memcpy(b + 24, head, 32);
		crc = journal_crc32c(0, b, blen);
		memcpy(rec, &blen, 4);
		memcpy(rec + 4, &crc, 4);
		fwrite(rec, 1, JOURNAL_FRAME + blen, f);
		crypto_hash_sha256(head, rec, JOURNAL_FRAME + blen);
		free(p);
	}
	return fclose(f);
}

static void test_old_format(void)
{
	const char *p = jpath("v1");
	struct collect c = { 0 };
	struct journal_scan info;
	struct journal *j;
	struct lerr e = { 0 };
	uint8_t head[32], h[32];
	bool same = true;
	char cmd[1024], line[512] = "";
	const char *build = getenv("LANTERN_BUILD");
	FILE *f;
	int err;

	if (write_v1(p, 30, head) < 0) {
		tap_ok(false, "format 1: a journal as the previous lanternd wrote it");
		return;
	}
	err = journal_scan(p, collect_cb, &c, &info, &e);
	for (int i = 0; i < 30 && i < c.n; i++) {
		char *want = payload_for(i);
		same &= !strcmp(want, c.payload[i]);
		free(want);
	}
	tap_ok(err == 0 && info.version == 1 && info.records == 30 && c.n == 30 && same && info.compressed == 3 &&
	       !memcmp(info.head, head, 32) && !info.torn_bytes && !info.free_bytes,
	       "format 1: a journal the previous lanternd wrote verifies (30 records, 3 compressed), and its head "
	       "hash is the one libsodium chained (%s)", e.msg);
	collect_free(&c);
	err = journal_open(p, NULL, collect_cb, &c, &info, &j, &e);
	if (err == 0) {
		journal_head(j, h);
		err = journal_append(j, JOURNAL_RUN_RESUMED, "{\"reason\":\"upgrade\"}", 20, NULL, &e);
		err = err ? err : journal_sync(j, &e);
		tap_ok(err == 0 && c.n == 30 && !memcmp(h, head, 32) && journal_seq(j) == 31 &&
		       file_size(p) == (off_t)journal_size(j),
		       "format 1: it replays and is appended to in its own format, without preallocation (%s)", e.msg);
		journal_close(j);
	} else {
		tap_ok(false, "format 1: it replays and is appended to in its own format (%s)", e.msg);
	}
	collect_free(&c);
	err = journal_scan(p, NULL, NULL, &info, &e);
	tap_ok(err == 0 && info.version == 1 && info.records == 31, "format 1: the chain goes on across the upgrade");
	snprintf(cmd, sizeof(cmd), "%s/lantern journal verify %s 2>&1", build ? build : "build", p);
	if ((f = popen(cmd, "r"))) {
		if (!fgets(line, sizeof(line), f))
			line[0] = '\0';
		err = pclose(f);
	}
	tap_ok(f && err == 0 && strstr(line, "ok: 31 records") && strstr(line, "format 1"),
	       "lantern journal verify checks a format 1 journal (%.*s)", (int)strcspn(line, "\n"), line);
}

static void test_bound(void)
{
	const char *p = jpath("bound");
	struct journal_opts o = { .max_bytes = 4096 };
	struct journal *j;
	struct lerr e = { 0 };
	char rec[200];
	int err = 0, n = 0;

	unlink(p);
	memset(rec, 'x', sizeof(rec));
	if (journal_create(p, &o, &j, &e) < 0) {
		tap_ok(false, "size bound: create");
		return;
	}
	while (n < 100 && (err = journal_append(j, JOURNAL_STEP_STARTED, rec, sizeof(rec), NULL, &e)) == 0)
		n++;
	tap_ok(err == -EFBIG && strstr(e.msg, "size bound of 4096 bytes") && journal_size(j) <= 4096,
	       "appends stop at the size bound with a clear error after %d records (%s)", n, e.msg);
	tap_ok(n >= 4096 / (JOURNAL_FRAME + JOURNAL_HEADER + 200) - 1 && journal_allocated(j) > journal_size(j) &&
	       journal_allocated(j) <= 4096 + JOURNAL_END_RESERVE && file_size(p) == (off_t)journal_allocated(j),
	       "the bound counts records, not preallocated space; preallocation stays within bound + end reserve "
	       "(%llu of %llu bytes)", (unsigned long long)journal_size(j), (unsigned long long)journal_allocated(j));
	err = journal_append(j, JOURNAL_RUN_COMPLETED, "{\"status\":\"failed\"}", 19, NULL, &e);
	tap_ok(err == 0, "run_completed still fits in the reserve past the bound");
	journal_close(j);
}

/* Format 2 preallocates: the file grows by chunks, so appends (and their fdatasync) do
 * not change its size; the chunks are real blocks, not holes; journal_trim gives the
 * rest back when the run has ended. */
static void test_prealloc(void)
{
	const char *p = jpath("prealloc");
	struct journal_scan info;
	struct journal *j;
	struct lerr e = { 0 };
	struct stat st;
	char rec[300];
	off_t last = -1;
	int changes = 0, err = 0;

	unlink(p);
	memset(rec, 'y', sizeof(rec));
	if (journal_create(p, NULL, &j, &e) < 0) {
		tap_ok(false, "preallocation: create (%s)", e.msg);
		return;
	}
	for (int i = 0; i < 1000 && !err; i++) {
		err = journal_append(j, JOURNAL_STEP_STARTED, rec, sizeof(rec), NULL, &e);
		if (file_size(p) != last) {
			changes++;
			last = file_size(p);
		}
	}
	err = err ? err : journal_sync(j, &e);
	stat(p, &st);
	tap_ok(err == 0 && changes <= 8 && st.st_size == (off_t)journal_allocated(j) &&
	       journal_allocated(j) > journal_size(j) && (off_t)st.st_blocks * 512 >= st.st_size,
	       "1,000 appends changed the file's size %d times (chunks of 64 KiB up to 1 MiB), its blocks "
	       "allocated (%lld bytes for %llu of records)", changes, (long long)st.st_size,
	       (unsigned long long)journal_size(j));
	err = journal_trim(j, &e);
	tap_ok(err == 0 && file_size(p) == (off_t)journal_size(j) && journal_scan(p, NULL, NULL, &info, &e) == 0 &&
	       info.records == 1000 && !info.free_bytes && !info.torn_bytes,
	       "journal_trim gives the preallocated space back; the journal verifies (%s)", e.msg);
	err = journal_append(j, JOURNAL_RUN_COMPLETED, "{\"status\":\"succeeded\"}", 23, NULL, &e);
	tap_ok(err == 0 && journal_sync(j, &e) == 0 && journal_scan(p, NULL, NULL, &info, &e) == 0 &&
	       info.records == 1001 && file_size(p) > (off_t)info.bytes,
	       "an append after a trim preallocates again (%s)", e.msg);
	journal_close(j);
}

/* 1,000 runs, 50 threads each owning 20 of them, every append waited durable. */
#define NRUNS 1000
#define NTHREADS 50
#define PER_RUN 10
static struct journal *runs[NRUNS];
static struct journal_syncer *syncer;
static int thread_errors;

static void *appender(void *arg)
{
	long t = (long)arg;
	struct lerr e;

	for (int k = 0; k < PER_RUN; k++) {
		for (int r = (int)t; r < NRUNS; r += NTHREADS) {
			char p[96];
			uint64_t seq;
			int n = snprintf(p, sizeof(p), "{\"run\":%d,\"step\":%d}", r, k);
			if (journal_append(runs[r], JOURNAL_STEP_STARTED, p, (size_t)n, &seq, &e) < 0 ||
			    journal_syncer_wait(syncer, runs[r], seq) < 0)
				__atomic_add_fetch(&thread_errors, 1, __ATOMIC_RELAXED);
		}
	}
	return NULL;
}

static void test_concurrent(void)
{
	pthread_t th[NTHREADS];
	struct journal_syncer_stats st;
	struct lerr e;
	int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK), bad = 0, created = 0;
	uint64_t ticks = 0, t0;

	util_mkdir_p(jpath("many"), 0700);
	for (int i = 0; i < NRUNS; i++) {
		char p[64];
		snprintf(p, sizeof(p), "many/%d", i);
		if (journal_create(jpath(p), NULL, &runs[i], &e) == 0)
			created++;
	}
	if (!tap_ok(created == NRUNS && journal_syncer_start(efd, &syncer, &e) == 0,
		    "1,000 journals and a syncer"))
		return;
	t0 = util_now_ns(CLOCK_MONOTONIC);
	for (long t = 0; t < NTHREADS; t++)
		pthread_create(&th[t], NULL, appender, (void *)t);
	for (int t = 0; t < NTHREADS; t++)
		pthread_join(th[t], NULL);
	t0 = util_now_ns(CLOCK_MONOTONIC) - t0;
	journal_syncer_stats(syncer, &st);
	if (read(efd, &ticks, sizeof(ticks)) != sizeof(ticks))
		ticks = 0;
	tap_ok(thread_errors == 0, "10,000 appends across 1,000 runs, each durable before its caller went on");
	tap_diag("%.0f durable appends/s, %llu flushes for %d appends",
		 NRUNS * PER_RUN / (t0 / 1e9), (unsigned long long)st.batches, NRUNS * PER_RUN);
	tap_ok(st.batches < NRUNS * PER_RUN / 4, "group commit: %llu flushes for %d appends",
	       (unsigned long long)st.batches, NRUNS * PER_RUN);
	tap_ok(ticks > 0, "the syncer signals its eventfd after batches");
	for (int i = 0; i < NRUNS; i++) {
		struct journal_scan info;
		char p[64];
		journal_syncer_forget(syncer, runs[i]);
		if (journal_durable_seq(runs[i]) != PER_RUN)
			bad++;
		journal_close(runs[i]);
		snprintf(p, sizeof(p), "many/%d", i);
		if (journal_scan(jpath(p), NULL, NULL, &info, &e) < 0 || info.records != PER_RUN)
			bad++;
	}
	tap_ok(bad == 0, "every run's journal verifies with its %d records, all durable", PER_RUN);
	journal_syncer_stop(syncer);
	close(efd);
}

/* ---- the replicated store ---- */

static struct tl_pg pg;

static bool same_as_file(const char *key, const char *path, char *why, size_t len)
{
	uint8_t *copy = NULL;
	char *file = NULL;
	size_t clen = 0, flen = 0;
	struct lerr e = { 0 };
	bool ok;

	if (journal_store_read(pg.url, key, &copy, &clen, &e) < 0 || util_read_file(path, &file, &flen) < 0) {
		snprintf(why, len, "%s", e.msg[0] ? e.msg : "cannot read the file");
		free(file);
		return false;
	}
	/* the file's records, byte for byte; after them only format 2's preallocated zeros */
	ok = clen <= flen && !memcmp(copy, file, clen);
	for (size_t i = clen; ok && i < flen; i++)
		ok = !file[i];
	if (ok) {
		struct journal_scan info = { 0 };

		ok = journal_scan(path, NULL, NULL, &info, &e) == 0 && info.bytes == clen;
	}
	snprintf(why, len, "store %zu bytes, file %zu bytes (records and preallocated zeros)", clen, flen);
	free(copy);
	free(file);
	return ok;
}

struct store_writer {
	struct journal *j;
	int n, errors;
};

static void *store_appender(void *arg)
{
	struct store_writer *w = arg;
	struct lerr e;

	for (int k = 0; k < w->n; k++) {
		char p[96];
		uint64_t seq;
		int n = snprintf(p, sizeof(p), "{\"step_id\":\"s%d\",\"attempt\":1}", k);

		if (journal_append(w->j, JOURNAL_STEP_STARTED, p, (size_t)n, &seq, &e) < 0 ||
		    journal_syncer_wait(syncer, w->j, seq) < 0 || journal_store_wait(w->j, seq) < 0)
			w->errors++;
	}
	return NULL;
}

static void test_store(void)
{
	struct journal_store_opts o = { .owner = "journal-test", .notify_fd = -1, .give_up_ms = 4000 };
	struct store_writer w[8];
	pthread_t th[8];
	struct journal_store *s = NULL;
	struct journal_store_stats st;
	struct journal_claim cl;
	struct lerr e = { 0 };
	char why[512], key[8][16];
	int err, errors = 0, same = 0;
	bool opened;

	if (tl_pg_start(&pg, "journal", false) < 0) {
		for (int i = 0; i < 6; i++)
			tap_ok(false, "store: PostgreSQL did not start (%s/postgres.log)", pg.dir);
		return;
	}
	o.url = pg.url;
	opened = journal_store_open(&o, &s, &e) == 0 && journal_syncer_start(-1, &syncer, &e) == 0;
	if (!tap_ok(opened, "store: opened, tables created, id %s (%s)", s ? journal_store_id(s) : "-",
		    e.msg)) {
		for (int i = 0; i < 5; i++)
			tap_ok(false, "store: not opened");
		return;
	}
	for (int i = 0; i < 8; i++) {
		snprintf(key[i], sizeof(key[i]), "r-store%d", i);
		w[i] = (struct store_writer){ .n = 40 };
		if (journal_create(jpath(key[i]), NULL, &w[i].j, &e) < 0 ||
		    journal_replicate(w[i].j, s, key[i], 1, &e) < 0)
			errors++;
	}
	for (int i = 0; i < 8 && !errors; i++)
		pthread_create(&th[i], NULL, store_appender, &w[i]);
	for (int i = 0; i < 8 && !errors; i++) {
		pthread_join(th[i], NULL);
		errors += w[i].errors;
	}
	journal_store_stats(s, &st);
	for (int i = 0; i < 8; i++)
		same += same_as_file(key[i], jpath(key[i]), why, sizeof(why));
	tap_ok(!errors && same == 8 && st.records == 320 && st.batches < 320,
	       "store: 8 runs x 40 appends, each in the store before its caller went on; every copy "
	       "equals its file byte for byte (%d of 8; %s); %llu statements for %llu records",
	       same, why, (unsigned long long)st.batches, (unsigned long long)st.records);

	/* another node claims run 0 under epoch 2: it gets every record, verified; the old
	 * writer (epoch 1) is refused from then on */
	memset(&cl, 0, sizeof(cl));
	err = journal_store_claim(s, key[0], 2, jpath("claimed"), &cl, &e);
	{
		struct journal_scan info;
		struct lerr e2;
		uint64_t seq;
		int werr;

		journal_append(w[0].j, JOURNAL_STEP_STARTED, "{}", 2, &seq, &e2);
		werr = journal_store_wait(w[0].j, seq);
		journal_store_error(w[0].j, why, sizeof(why));
		tap_ok(err == 0 && cl.records == 40 && journal_scan(jpath("claimed"), NULL, NULL, &info, &e2) == 0 &&
		       info.records == 40 && werr == -ESTALE && strstr(why, "fenced"),
		       "store: a claim under epoch 2 reads all 40 records (verified: %s), and the epoch-1 "
		       "writer's next append is refused (%s: %s)", err ? e.msg : "ok", strerror(-werr), why);
	}
	free(cl.end_payload);
	err = journal_store_claim(s, key[0], 1, jpath("claimed-old"), &cl, &e);
	tap_ok(err == -ESTALE && access(jpath("claimed-old"), F_OK) < 0,
	       "store: a claim under an older epoch is refused and writes nothing (%s)", e.msg);

	/* lanternd died between an append and its batch: reopened, the journal sends what
	 * the store lacks */
	{
		struct journal *j = w[1].j, *again = NULL;
		struct lerr e2;

		journal_syncer_forget(syncer, j);
		journal_close(j);
		w[1].j = NULL;
		err = -1;
		if (journal_open(jpath(key[1]), NULL, NULL, NULL, NULL, &j, &e2) == 0) {
			journal_append(j, JOURNAL_OUTPUT_SET, "{\"output\":1}", 12, NULL, &e2);
			journal_append(j, JOURNAL_OUTPUT_SET, "{\"output\":2}", 12, NULL, &e2);
			journal_sync(j, &e2);
			journal_close(j);
		}
		if (journal_open(jpath(key[1]), NULL, NULL, NULL, NULL, &again, &e2) == 0 &&
		    journal_replicate(again, s, key[1], 1, &e2) == 0)
			err = journal_store_wait(again, journal_seq(again));
		tap_ok(again && err == 0 && journal_stored_seq(again) == 42 &&
		       same_as_file(key[1], jpath(key[1]), why, sizeof(why)),
		       "store: a reopened journal catches the store up (stored %llu of 42; %s)",
		       again ? (unsigned long long)journal_stored_seq(again) : 0ULL, why);
		w[1].j = again;
	}

	/* away for a moment: the append waits and lands; away past the bound: it fails */
	{
		uint64_t seq, t0;
		struct lerr e2;
		int a, b;

		tl_pg_halt(&pg);
		journal_append(w[2].j, JOURNAL_OUTPUT_SET, "{\"output\":3}", 12, &seq, &e2);
		usleep(700 * 1000);
		tl_pg_resume(&pg);
		a = journal_store_wait(w[2].j, seq);
		tap_ok(a == 0 && same_as_file(key[2], jpath(key[2]), why, sizeof(why)),
		       "store: away for 0.7 s, an append waits and lands (%s; %s)", strerror(-a), why);
		tl_pg_halt(&pg);
		journal_append(w[3].j, JOURNAL_OUTPUT_SET, "{\"output\":4}", 12, &seq, &e2);
		t0 = tl_ms();
		b = journal_store_wait(w[3].j, seq);
		journal_store_error(w[3].j, why, sizeof(why));
		tap_ok(b == -ETIMEDOUT && tl_ms() - t0 < 8000 && strstr(why, "unreachable"),
		       "store: away past the 4 s bound, the append fails with the reason after %llu ms (%s)",
		       (unsigned long long)(tl_ms() - t0), why);
		tl_pg_resume(&pg);
	}
	for (int i = 0; i < 8; i++) {
		if (w[i].j)
			journal_syncer_forget(syncer, w[i].j);
		journal_close(w[i].j);
	}
	journal_store_close(s);
	journal_syncer_stop(syncer);
	tl_pg_stop(&pg);
}

/* A journal made ahead (a pooled sandbox's): no record, 64 KiB preallocated; opened
 * for its run from another directory it was renamed to, the run's records follow; a
 * journal with a record is never taken for one made ahead. */
static void test_premade(void)
{
	char sub[600], moved[600], path[700];
	const char *p = jpath("premade");
	struct journal_scan info;
	struct journal *j = NULL;
	struct lerr e = { 0 };
	int err;

	snprintf(sub, sizeof(sub), "%s/sandbox", dir);
	snprintf(moved, sizeof(moved), "%s/run", dir);
	util_mkdir_p(sub, 0700);
	snprintf(path, sizeof(path), "%s/journal", sub);
	err = journal_premake(path, &e);
	tap_ok(err == 0 && journal_scan(path, NULL, NULL, &info, &e) == 0 && info.version == 2 && !info.records &&
	       info.bytes == JOURNAL_MAGIC_LEN && info.free_bytes == JOURNAL_PREALLOC_MIN - JOURNAL_MAGIC_LEN &&
	       journal_premake(path, &e) == -EEXIST,
	       "journal_premake: format 2, no record, %u bytes preallocated; never over an existing file (%s)",
	       JOURNAL_PREALLOC_MIN, e.msg);
	rename(sub, moved);
	snprintf(path, sizeof(path), "%s/journal", moved);
	e.msg[0] = '\0';
	err = journal_open_premade(path, NULL, 2, &j, &e);
	if (!err)
		err = journal_append(j, JOURNAL_RUN_STARTED, "{\"run_id\":\"r-1\"}", 16, NULL, &e);
	if (!err)
		err = journal_sync(j, &e);
	tap_ok(err == 0 && journal_durable_seq(j) == 1 && journal_allocated(j) == JOURNAL_PREALLOC_MIN &&
	       journal_scan(path, NULL, NULL, &info, &e) == 0 && info.records == 1 && info.version == 2 && info.free_bytes,
	       "journal_open_premade after the directory's rename: run_started goes into the preallocated space "
	       "and is durable (%s)", e.msg);
	journal_close(j);
	j = NULL;
	e.msg[0] = '\0';
	err = journal_open_premade(path, NULL, 2, &j, &e);
	unlink(p);
	write_journal(p, 3, NULL);
	tap_ok(err == -EEXIST && !j && journal_open_premade(p, NULL, 1, &j, &e) == -EEXIST && !j &&
	       strstr(e.msg, "not a journal made ahead") != NULL,
	       "a journal with records is never opened as one made ahead (%s)", e.msg);
}

/* ---- the node log ---- */

#define NL_RUNS 8
#define NL_RECS 20

static const char *nl_journal(int i)
{
	static char p[4][512];
	static int k;
	char *b = p[k++ % 4];

	snprintf(b, 512, "%s/nodelog/runs/%d/journal", dir, i);
	return b;
}

/* Offset of record n (1-based) in path, or 0. */
static uint64_t record_offset(const char *path, int n)
{
	struct offsets o = { 0 };
	struct journal_scan info;
	struct lerr e;

	if (journal_scan(path, offsets_cb, &o, &info, &e) < 0 || n < 1 || n > o.n)
		return 0;
	return o.off[n - 1];
}

/* Zeros [from, to) of path in place: bytes a crash took (never written back). */
static void zero_range(const char *path, uint64_t from, uint64_t to)
{
	int fd = open(path, O_WRONLY);
	char *z = calloc(1, to - from);

	if (fd >= 0 && z)
		(void)!pwrite(fd, z, to - from, (off_t)from);
	free(z);
	if (fd >= 0)
		close(fd);
}

/* The last entry of a node log image (offset), walking 8-aligned entries from 4096. */
static size_t last_entry(const uint8_t *log, size_t len)
{
	size_t off = 4096, last = 0;

	while (len - off >= 56 && !memcmp(log + off, "LEN1", 4)) {
		uint32_t n = (uint32_t)log[off + 8] | (uint32_t)log[off + 9] << 8 |
			     (uint32_t)log[off + 10] << 16 | (uint32_t)log[off + 11] << 24;

		last = off;
		off += (n + 7) & ~7u;
	}
	return last;
}

/* Journals beneath the node log's directory go through it after their first sync; a
 * crash that takes their unsynced bytes (zeroed here, with the log as it was on disk
 * put back) loses nothing: the next start writes them back, record by record checked.
 * A file at the logged path that is another file, a journal whose directory is gone,
 * a path through a symlink and a torn last entry are each left as they are. */
static void test_nodelog(void)
{
	struct journal_opts o = { .compress_over = 1 << 20 };
	struct journal *j[NL_RUNS];
	struct journal_syncer *s = NULL;
	struct journal_syncer_stats st = { 0 };
	struct journal_scan info;
	struct lerr e = { 0 };
	char logp[512], other[512], *img = NULL, *want[NL_RUNS] = { 0 }, *got = NULL, *saved5 = NULL;
	size_t imglen = 0, wantlen[NL_RUNS] = { 0 }, gotlen = 0, saved5len = 0, last;
	int bad = 0, made = 0;
	uint64_t garbage_at = 0;

	snprintf(logp, sizeof(logp), "%s/nodelog/journal.log", dir);
	for (int i = 0; i < NL_RUNS; i++) {
		char d[512];

		snprintf(d, sizeof(d), "%s/nodelog/runs/%d", dir, i);
		util_mkdir_p(d, 0700);
		made += journal_create(nl_journal(i), &o, &j[i], &e) == 0;
	}
	if (!tap_ok(made == NL_RUNS && journal_syncer_start_logged(-1, logp, 1 << 20, &s, &e) == 0 &&
		    file_size(logp) == 1 << 20, "a syncer with a node log of 1 MiB, made whole at start (%s)", e.msg))
		return;
	for (int r = 0; r < NL_RECS + 1; r++) {
		for (int i = 0; i < NL_RUNS; i++) {
			char *p = payload_for(r * NL_RUNS + i);

			if (r == NL_RECS && i) { /* the last batch: journal 0 alone */
				free(p);
				continue;
			}
			if (journal_append(j[i], r ? JOURNAL_STEP_STARTED : JOURNAL_RUN_STARTED, p, strlen(p), NULL, &e) < 0)
				bad++;
			free(p);
			journal_syncer_request(s, j[i]);
		}
		for (int i = 0; i < NL_RUNS; i++)
			if (journal_syncer_wait(s, j[i], journal_seq(j[i])) < 0)
				bad++;
	}
	journal_syncer_stats(s, &st);
	tap_ok(!bad && st.logged >= NL_RECS - 1 && st.logged <= st.batches,
	       "%d journals x %d records, each durable before the next: %llu of %llu flushes were one node "
	       "log write", NL_RUNS, NL_RECS, (unsigned long long)st.logged, (unsigned long long)st.batches);
	/* the disk as a crash leaves it: the log as it is, the journals' logged bytes lost */
	for (int i = 0; i < NL_RUNS; i++)
		util_read_file(nl_journal(i), &want[i], &wantlen[i]);
	util_read_file(logp, &img, &imglen);
	for (int i = 0; i < NL_RUNS; i++) {
		journal_syncer_forget(s, j[i]);
		journal_close(j[i]);
	}
	journal_syncer_stop(s);
	s = NULL;
	for (int i = 0; i < NL_RUNS; i++) {
		const char *p = nl_journal(i);

		if (i == 2) /* and a byte that is not a crash's: damage, or tampering */
			garbage_at = record_offset(p, 10) + 30;
		if (i == 3) /* a hole: record 5 lost, those after it written back */
			zero_range(p, record_offset(p, 5), record_offset(p, 6));
		else
			zero_range(p, record_offset(p, 2), wantlen[i]);
	}
	{
		int fd = open(nl_journal(2), O_WRONLY);

		if (fd < 0 || pwrite(fd, "X", 1, (off_t)garbage_at) != 1)
			bad++;
		if (fd >= 0)
			close(fd);
	}
	/* 5: another file at the path now (its run removed, a new one made there) */
	unlink(nl_journal(5));
	write_journal(nl_journal(5), 1, NULL);
	util_read_file(nl_journal(5), &saved5, &saved5len);
	/* 6: its run's directory removed */
	snprintf(other, sizeof(other), "%s/nodelog/runs/6", dir);
	util_rm_rf(other);
	/* 4: its directory is now a symlink to where the journal went */
	snprintf(other, sizeof(other), "%s/nodelog/elsewhere", dir);
	{
		char d4[512];

		snprintf(d4, sizeof(d4), "%s/nodelog/runs/4", dir);
		rename(d4, other);
		symlink(other, d4);
	}
	/* the last entry (journal 0's record 21) torn: a byte of it never reached the disk */
	last = last_entry((uint8_t *)img, imglen);
	if (last)
		img[last + 100] ^= 0x5a;
	put_file(logp, img, imglen);

	e.msg[0] = '\0';
	tap_ok(journal_syncer_start_logged(-1, logp, 1 << 20, &s, &e) == 0, "a start after the crash (%s)", e.msg);
	journal_syncer_stats(s, &st);
	journal_syncer_stop(s);
	s = NULL;
	bad = 0;
	for (int i = 0; i < NL_RUNS; i++) {
		uint64_t want_recs = NL_RECS; /* journal 0: not its 21st, the torn entry */

		if (i == 2 || i == 4 || i == 5 || i == 6)
			continue;
		if (journal_scan(nl_journal(i), NULL, NULL, &info, &e) < 0 || info.records != want_recs ||
		    util_read_file(nl_journal(i), &got, &gotlen) < 0 || memcmp(got, want[i], info.bytes)) {
			tap_diag("journal %d: %llu records (%s)", i, (unsigned long long)info.records, e.msg);
			bad++;
		}
		free(got);
		got = NULL;
	}
	tap_ok(last && !bad && st.replayed_files == 5,
	       "the log put back what the crash took of 4 journals (%llu bytes), the hole in the middle of one "
	       "too; every chain verifies, byte for byte the journal before the crash; the torn last entry "
	       "(journal 0's record %d) is not replayed", (unsigned long long)st.replayed_bytes, NL_RECS + 1);
	util_read_file(nl_journal(2), &got, &gotlen);
	e.msg[0] = '\0';
	tap_ok(got && gotlen > garbage_at && got[garbage_at] == 'X' &&
	       (journal_scan(nl_journal(2), NULL, NULL, &info, &e), info.records == 9) &&
	       garbage_at > 30 && !memcmp(got, want[2], garbage_at - 30),
	       "a byte in a logged record that is neither zero nor the log's is not a crash's: records 2-9 "
	       "are put back, the damaged record 10 left as it is, for the journal's own checks (%s)", e.msg);
	free(got);
	got = NULL;
	util_read_file(nl_journal(5), &got, &gotlen);
	tap_ok(got && gotlen == saved5len && !memcmp(got, saved5, gotlen),
	       "another file at a logged path (a new inode) is left alone");
	free(got);
	got = NULL;
	snprintf(other, sizeof(other), "%s/nodelog/elsewhere/journal", dir);
	{
		char pat[600];
		glob_t g = { 0 };

		snprintf(pat, sizeof(pat), "%s.unreplayed-*", logp);
		tap_ok(journal_scan(other, NULL, NULL, &info, &e) == 0 && info.records == 1 &&
		       glob(pat, 0, NULL, &g) == 0 && g.gl_pathc == 1,
		       "a logged path through a symlink is not followed (the file behind it keeps 1 record) "
		       "and the log is kept beside, as journal.log.unreplayed-*");
		for (size_t k = 0; k < g.gl_pathc; k++)
			unlink(g.gl_pathv[k]);
		globfree(&g);
	}
	e.msg[0] = '\0';
	tap_ok(journal_syncer_start_logged(-1, logp, 1 << 20, &s, &e) == 0 &&
	       (journal_syncer_stats(s, &st), st.replayed_files == 0) && file_size(logp) == 1 << 20,
	       "the next start finds the log started over: nothing to put back (%s)", e.msg);
	journal_syncer_stop(s);
	for (int i = 0; i < NL_RUNS; i++)
		free(want[i]);
	free(img);
	free(saved5);
}

/* A log too small for the journals' bytes: when it is full, one syncfs makes them
 * durable in place and it starts over (a checkpoint); every record is durable and
 * verifies, and the next start has nothing to mend. */
static void test_nodelog_full(void)
{
	struct journal_opts o = { .compress_over = 1 << 20 };
	struct journal *j[4];
	struct journal_syncer *s = NULL;
	struct journal_syncer_stats st = { 0 };
	struct journal_scan info;
	struct lerr e = { 0 };
	char logp[512], big[8192];
	int bad = 0;

	snprintf(logp, sizeof(logp), "%s/nodelog2/journal.log", dir);
	for (int i = 0; i < 4; i++) {
		char d[512];

		snprintf(d, sizeof(d), "%s/nodelog2/runs/%d", dir, i);
		util_mkdir_p(d, 0700);
		strcat(d, "/journal");
		bad += journal_create(d, &o, &j[i], &e) < 0;
	}
	if (!tap_ok(!bad && journal_syncer_start_logged(-1, logp, 256 << 10, &s, &e) == 0,
		    "a syncer with the smallest node log, 256 KiB (%s)", e.msg))
		return;
	for (size_t k = 0; k < sizeof(big); k++)
		big[k] = (char)('a' + (k * 7919 + k / 13) % 26);
	for (int r = 0; r < 40; r++) {
		for (int i = 0; i < 4; i++) {
			if (journal_append(j[i], r ? JOURNAL_STEP_STARTED : JOURNAL_RUN_STARTED, big, sizeof(big),
					   NULL, &e) < 0)
				bad++;
			journal_syncer_request(s, j[i]);
		}
		for (int i = 0; i < 4; i++)
			if (journal_syncer_wait(s, j[i], journal_seq(j[i])) < 0)
				bad++;
	}
	journal_syncer_stats(s, &st);
	for (int i = 0; i < 4; i++) {
		char p[512];

		journal_syncer_forget(s, j[i]);
		journal_close(j[i]);
		snprintf(p, sizeof(p), "%s/nodelog2/runs/%d/journal", dir, i);
		if (journal_scan(p, NULL, NULL, &info, &e) < 0 || info.records != 40)
			bad++;
	}
	journal_syncer_stop(s);
	tap_ok(!bad && st.checkpoints >= 3 && st.logged > st.checkpoints,
	       "1.3 MB through a 256 KiB log: %llu checkpoints, %llu log writes, every record durable and verified",
	       (unsigned long long)st.checkpoints, (unsigned long long)st.logged);
	s = NULL;
	tap_ok(journal_syncer_start_logged(-1, logp, 256 << 10, &s, &e) == 0 &&
	       (journal_syncer_stats(s, &st), st.replayed_files == 0),
	       "a restart replays the log's last generation without a change to make (%s)", e.msg);
	journal_syncer_stop(s);
}

int main(void)
{
	snprintf(dir, sizeof(dir), "/tmp/lantern-test-journal-%d", getpid());
	util_mkdir_p(dir, 0700);
	tap_plan(69);
	test_crc();
	test_sha();
	test_roundtrip();
	test_prealloc();
	test_premade();
	test_torn_v2();
	test_torn_v1();
	test_old_format();
	test_corrupt(2);
	test_corrupt(1);
	test_bound();
	test_concurrent();
	test_nodelog();
	test_nodelog_full();
	test_store();
	if (!getenv("LANTERN_KEEP"))
		util_rm_rf(dir);
	return tap_done();
}
