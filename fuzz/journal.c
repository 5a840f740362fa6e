/* journal.c (fuzz target "journal"): the verifying scan of a run journal over arbitrary
 * bytes, and the replay it feeds, as lanternd recovers a run (journal_open with the
 * durable module's callback: harness_state_apply_raw, which stops the scan on error).
 *
 * Input: a mode byte, then the file. Mode bit 0 first fixes up every record the frames
 * delimit (sequence, previous hash, CRC32C), so mutated types, flags, lengths and
 * compressed payloads get past the checksums to the decompression and the replay; and
 * writes the magic: format 2 (LNTJRNL2, what journal_create writes), or format 1 with
 * mode bit 1 (LNTJRNL1, journals written before format 2).
 *
 * Properties beyond the sanitizers:
 *  - the scan and journal_open agree (result, format, records, valid bytes, torn tail,
 *    free space, head);
 *  - valid bytes, the torn tail and the free space make up the whole file: format 1 has
 *    no free space; in format 2 the free space (preallocated) is zeros only, and a torn
 *    tail ends at the last non-zero byte (the end of the written data); the format is
 *    the magic's; the head is the hash of the last record handed to the callback; every
 *    payload is NUL-terminated;
 *  - journal_read at each record's offset gives back its type and payload (how a replayed
 *    step's result is read when a workload asks for it);
 *  - after journal_open (a torn tail is cut), one more append gives a journal of the
 *    same format that scans clean with one more record, and whose valid bytes and free
 *    space make up the file: recovery leaves a journal that can go on. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "fuzzlib.h"
#include "lantern/harness.h"
#include "lantern/journal.h"

#define KEPT 64

struct replay {
	struct harness_state st;
	uint64_t seen;
	uint8_t last[JOURNAL_HASH_BYTES];
	/* the first records: where they are, their type and a hash of their payload */
	uint64_t off[KEPT];
	unsigned type[KEPT];
	uint8_t sum[KEPT][crypto_generichash_BYTES];
};

static int on_record(void *arg, const struct journal_record *rec)
{
	struct replay *r = arg;
	struct lerr e = { 0 };

	FZ_CHECK(rec->payload[rec->len] == '\0' && rec->len <= JOURNAL_MAX_RECORD,
		 "record %llu: payload of %zu bytes", (unsigned long long)rec->seq, rec->len);
	FZ_CHECK(rec->seq == ++r->seen, "record %llu handed over as number %llu",
		 (unsigned long long)rec->seq, (unsigned long long)r->seen);
	memcpy(r->last, rec->hash, JOURNAL_HASH_BYTES);
	if (r->seen <= KEPT) {
		r->off[r->seen - 1] = rec->offset;
		r->type[r->seen - 1] = rec->type;
		crypto_generichash(r->sum[r->seen - 1], crypto_generichash_BYTES,
				   (const unsigned char *)rec->payload, rec->len, NULL, 0);
	}
	return harness_state_apply(&r->st, rec->type, rec->payload, rec->len, rec->offset, &e);
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void fix_up(uint8_t *b, size_t size, bool v1)
{
	uint8_t head[JOURNAL_HASH_BYTES] = { 0 };
	size_t off = JOURNAL_MAGIC_LEN;

	if (size >= JOURNAL_MAGIC_LEN)
		memcpy(b, v1 ? JOURNAL_MAGIC_V1 : JOURNAL_MAGIC, JOURNAL_MAGIC_LEN);
	for (uint64_t seq = 1; off + JOURNAL_FRAME + JOURNAL_HEADER <= size; seq++) {
		uint32_t body_len = get32(b + off);
		uint8_t *body = b + off + JOURNAL_FRAME;

		if (body_len < JOURNAL_HEADER || body_len > size - off - JOURNAL_FRAME)
			break;
		put32(body + 8, (uint32_t)seq);
		put32(body + 12, (uint32_t)(seq >> 32));
		memcpy(body + 24, head, JOURNAL_HASH_BYTES);
		put32(b + off + 4, journal_crc32c(0, body, body_len));
		crypto_hash_sha256(head, b + off, JOURNAL_FRAME + body_len);
		off += JOURNAL_FRAME + body_len;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char more[] = "{\"instance_id\":\"inst-3\",\"reason\":\"fuzz\"}";
	struct journal_scan a, b, c;
	struct lerr ea = { 0 }, eb = { 0 }, ec = { 0 };
	struct replay ra = { 0 }, rb = { 0 };
	struct journal *j = NULL;
	struct stat stb;
	char path[64];
	uint8_t *file;
	int fd, sa, sb, sc;

	if (!size)
		return 0;
	file = malloc(size);
	memcpy(file, data + 1, size - 1);
	if (data[0] & 1)
		fix_up(file, size - 1, data[0] & 2);
	fd = fz_memfd(file, size - 1);
	FZ_CHECK(fd >= 0, "memfd: %s", strerror(errno));
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);

	harness_state_init(&ra.st);
	sa = journal_scan(path, on_record, &ra, &a, &ea);
	FZ_CHECK(sa == 0 || sa == -EBADMSG, "scan: %d (%s)", sa, ea.msg);
	FZ_CHECK(ra.seen == a.records || sa < 0, "%llu records handed over, %llu counted",
		 (unsigned long long)ra.seen, (unsigned long long)a.records);
	if (sa == 0) {
		FZ_CHECK(a.bytes + a.torn_bytes + a.free_bytes == size - 1, "%llu valid + %llu torn + "
			 "%llu free bytes of %zu", (unsigned long long)a.bytes,
			 (unsigned long long)a.torn_bytes, (unsigned long long)a.free_bytes, size - 1);
		FZ_CHECK(a.bytes >= JOURNAL_MAGIC_LEN && a.version ==
			 (memcmp(file, JOURNAL_MAGIC_V1, JOURNAL_MAGIC_LEN) ? 2u : 1u),
			 "format %u, magic \"%.8s\", %llu valid bytes", a.version, (char *)file,
			 (unsigned long long)a.bytes);
		FZ_CHECK(a.version == 2 || !a.free_bytes, "format 1 with %llu free bytes",
			 (unsigned long long)a.free_bytes);
		for (size_t i = a.bytes + a.torn_bytes; i < size - 1; i++)
			FZ_CHECK(!file[i], "free byte at %zu is 0x%02x", i, file[i]);
		FZ_CHECK(a.version == 1 || !a.torn_bytes || file[a.bytes + a.torn_bytes - 1],
			 "format 2: the torn tail (%llu bytes at %llu) ends in a zero",
			 (unsigned long long)a.torn_bytes, (unsigned long long)a.bytes);
		FZ_CHECK(!a.records || !memcmp(a.head, ra.last, JOURNAL_HASH_BYTES),
			 "head is not the last record's hash");
	}
	free(file);

	harness_state_init(&rb.st);
	sb = journal_open(path, NULL, on_record, &rb, &b, &j, &eb);
	FZ_CHECK(sa == sb, "scan %d (%s), open %d (%s)", sa, ea.msg, sb, eb.msg);
	if (sb == 0) {
		FZ_CHECK(a.version == b.version && a.records == b.records && a.bytes == b.bytes &&
			 a.torn_bytes == b.torn_bytes && a.free_bytes == b.free_bytes &&
			 !memcmp(a.head, b.head, JOURNAL_HASH_BYTES), "scan and open disagree");
		for (uint64_t i = 0; i < rb.seen && i < KEPT; i++) {
			uint8_t sum[crypto_generichash_BYTES];
			unsigned type;
			char *payload;
			size_t len;

			sc = journal_read(j, rb.off[i], &type, &payload, &len, &ec);
			FZ_CHECK(sc == 0, "record %llu at offset %llu does not read back: %s",
				 (unsigned long long)i + 1, (unsigned long long)rb.off[i], ec.msg);
			crypto_generichash(sum, sizeof(sum), (const unsigned char *)payload, len, NULL, 0);
			FZ_CHECK(type == rb.type[i] && !memcmp(sum, rb.sum[i], sizeof(sum)) &&
				 payload[len] == '\0', "record %llu read back differs from the scan's",
				 (unsigned long long)i + 1);
			free(payload);
		}
		sc = journal_append(j, JOURNAL_RUN_RESUMED, more, strlen(more), NULL, &ec);
		FZ_CHECK(sc == 0, "append after recovery: %s", ec.msg);
		journal_close(j);
		sc = journal_scan(path, NULL, NULL, &c, &ec);
		FZ_CHECK(sc == 0 && c.records == b.records + 1 && !c.torn_bytes && c.version == b.version,
			 "after recovery and an append: %d (%s), format %u, %llu records, %llu torn bytes",
			 sc, ec.msg, c.version, (unsigned long long)c.records,
			 (unsigned long long)c.torn_bytes);
		FZ_CHECK(fstat(fd, &stb) == 0 && (uint64_t)stb.st_size == c.bytes + c.free_bytes,
			 "after recovery and an append: %llu valid + %llu free bytes, the file has %lld",
			 (unsigned long long)c.bytes, (unsigned long long)c.free_bytes,
			 (long long)stb.st_size);
	}
	harness_state_free(&ra.st);
	harness_state_free(&rb.st);
	close(fd);
	return 0;
}
