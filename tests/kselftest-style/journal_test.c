/* journal_test: the run journal module on its own: CRC32C against known vectors, the
 * chain's SHA-256 (libcrypto) against libsodium's, append and verified reopen
 * (payloads, compression, hash chain), a torn tail cut at every byte of the last
 * record and a zero-filled tail (truncated), corruption in the middle (refused, file
 * untouched), a broken chain with valid CRCs, the size bound, and 1,000 concurrent
 * runs appending through the group-commit syncer. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "tap.h"
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
	tap_ok(file_size(p) < 100 * 4000 / 4, "compression keeps the file small (%lld bytes)",
	       (long long)file_size(p));
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

static void test_torn(void)
{
	const char *p = jpath("torn"), *full = jpath("torn-full");
	struct journal_scan info;
	struct lerr e;
	off_t whole, last_start;
	char *buf;
	size_t len;
	bool all_ok = true;
	int err;

	write_journal(full, 20, NULL);
	whole = file_size(full);
	journal_scan(full, NULL, NULL, &info, &e);
	/* the start of record 20: scan 19 */
	write_journal(p, 19, NULL);
	last_start = file_size(p);
	util_read_file(full, &buf, &len);
	/* Cut the last record at every byte: each must open as 19 records. */
	for (off_t cut = last_start + 1; cut < whole; cut++) {
		struct journal *j;
		int fd = open(p, O_WRONLY | O_TRUNC | O_CREAT, 0600);
		if (fd < 0 || write(fd, buf, (size_t)cut) != cut) {
			all_ok = false;
			break;
		}
		close(fd);
		err = journal_open(p, NULL, NULL, NULL, &info, &j, &e);
		if (err < 0 || info.records != 19 || info.torn_bytes != (uint64_t)(cut - last_start) ||
		    file_size(p) != last_start) {
			tap_diag("cut at %lld: err %d (%s), records %llu, torn %llu", (long long)cut, err,
				 e.msg, (unsigned long long)info.records, (unsigned long long)info.torn_bytes);
			all_ok = false;
			if (err == 0)
				journal_close(j);
			break;
		}
		journal_close(j);
	}
	tap_ok(all_ok, "a last record cut at any of its %lld bytes is a torn tail: truncated, 19 records remain",
	       (long long)(whole - last_start));

	/* The last record whole but damaged (the write tore inside it). */
	{
		struct journal *j;
		int fd = open(p, O_WRONLY | O_TRUNC | O_CREAT, 0600);
		buf[whole - 3] ^= 0x55;
		err = write(fd, buf, (size_t)whole) == whole ? 0 : -1;
		close(fd);
		buf[whole - 3] ^= 0x55;
		err = err ? err : journal_open(p, NULL, NULL, NULL, &info, &j, &e);
		tap_ok(err == 0 && info.records == 19 && file_size(p) == last_start,
		       "a damaged last record is a torn tail too");
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
		       "a zero-filled tail is truncated and every record kept");
		if (err == 0)
			journal_close(j);
	}
	free(buf);
}

static void test_corrupt(void)
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
	       "a flipped bit in record 5 of 20 refuses the journal, naming the record and why (%s)", e.msg);
	tap_ok(file_size(p) == before, "the corrupt journal is left as it was (nothing truncated)");
	err = journal_scan(p, NULL, NULL, &info, &e);
	tap_ok(err == -EBADMSG && info.records == 4, "verify reports the same, after 4 good records");
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
	       "a record with a valid CRC but a wrong previous hash breaks the chain (%s)", e.msg);
	free(buf);
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
	err = journal_append(j, JOURNAL_RUN_COMPLETED, "{\"status\":\"failed\"}", 19, NULL, &e);
	tap_ok(err == 0, "run_completed still fits in the reserve past the bound");
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

int main(void)
{
	snprintf(dir, sizeof(dir), "/tmp/lantern-test-journal-%d", getpid());
	util_mkdir_p(dir, 0700);
	tap_plan(27);
	test_crc();
	test_sha();
	test_roundtrip();
	test_torn();
	test_corrupt();
	test_bound();
	test_concurrent();
	if (!getenv("LANTERN_KEEP"))
		util_rm_rf(dir);
	return tap_done();
}
