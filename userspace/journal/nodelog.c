/* nodelog.c: the node log, one file beside the run directories that makes a batch of
 * journals durable with one write and one fdatasync.
 *
 * Why: the syncer's other way, one syncfs per filesystem, writes back every journal's
 * dirty pages and converts each one's preallocated extents, ~45-65 us per journal on
 * the CI disk; at 256 runs that is most of a round. The log is written once at creation
 * (zeros over all of it, so an overwrite in it never changes the file's size or extents)
 * and then only overwritten: its fdatasync is one data write and one device flush,
 * however many journals the batch holds. The journal files keep their bytes in the page
 * cache until the kernel writes them back, or until the log is full: then one syncfs
 * makes every journal durable in place and the log starts over (a checkpoint).
 *
 * Layout (little endian):
 *   [0, 4096)  header: "LNTNLOG1", generation u64 @8, size u64 @16, CRC32C of [0, 24)
 *              @24; zeros after. The generation goes up at every start over.
 *   4096...    entries, each at an 8-byte aligned offset:
 *              magic u32 "LEN1" @0, CRC32C of [8, len) @4, len u32 @8 (this header, the
 *              path and the data), path_len u16 @12, flags u16 @14 (0), generation u64
 *              @16, inode u64 @24, birth time s64 @32 and ns u32 @40, data_len u32 @44,
 *              offset u64 @48 (where the data goes in the journal); then the journal's
 *              path relative to the log's directory, then the data.
 *   The entries of the header's generation, from 4096 to the first that does not check
 *   out (magic, length, CRC, generation), are the log; whatever follows is an older
 *   generation's or a write a crash cut.
 *
 * Replay (nodelog_open, before any journal is opened): per journal file, in log order,
 * each entry's bytes go back into the file where the file's own valid prefix ends,
 * after proving they continue it: the entry's bytes that overlap the file's must be the
 * file's, it must reach exactly the end of the prefix at a record boundary, and every
 * record it adds must have a good CRC, the next sequence number and the previous
 * record's hash. A file opened only beneath the log's directory, no symlink on the way,
 * never created; one whose inode or birth time is not the logged one (removed and made
 * again) is left alone, as is one that is gone. Only zeros, or nothing, are written
 * over: that is all a crash leaves. Then a syncfs (a restart on the same boot finds
 * the journals whole in the page cache, not yet on disk) and the log starts over. */
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "journal_internal.h"

#define LOG_MAGIC       "LNTNLOG1"
#define LOG_HDR         4096u
#define ENT_MAGIC       0x314e454cu   /* "LEN1" */
#define ENT_HDR         56u
#define LOG_MIN_BYTES   (256u * 1024)
#define LOG_MAX_BYTES   (1ull << 30)

struct nodelog {
	int fd, dirfd;
	dev_t dev;
	char path[PATH_MAX];
	char dir[PATH_MAX];
	size_t dir_len;
	uint64_t size, tail, gen;
	uint8_t *buf;               /* a batch's entries */
	size_t cap;
	struct nodelog_stats st;
};

static uint64_t align8(uint64_t v)
{
	return (v + 7) & ~(uint64_t)7;
}

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

/* The header of generation gen, durable; the log is empty after it. */
static int header_write(int fd, uint64_t gen, uint64_t size)
{
	uint8_t h[LOG_HDR] = { 0 };
	int err;

	memcpy(h, LOG_MAGIC, 8);
	put64(h + 8, gen);
	put64(h + 16, size);
	put32(h + 24, journal_crc32c(0, h, 24));
	if ((err = journal_write_at(fd, h, sizeof(h), 0)) < 0)
		return err;
	return fdatasync(fd) < 0 ? -errno : 0;
}

/* A fresh log of generation gen at l->path: written whole (zeros) under a temporary
 * name, durable, renamed over the old one. */
static int log_create(struct nodelog *l, uint64_t gen, struct lerr *e)
{
	char tmp[PATH_MAX + 8];
	uint8_t *zero = calloc(1, 1 << 20);
	int fd, err = 0;

	if (!zero)
		return lerr_set(e, ENOMEM, "journal node log %s: out of memory", l->path);
	snprintf(tmp, sizeof(tmp), "%s.new", l->path);
	unlink(tmp);
	fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		free(zero);
		return lerr_set(e, errno, "journal node log %s: create: %s", tmp, strerror(errno));
	}
	for (uint64_t off = LOG_HDR; off < l->size && !err; off += 1 << 20) {
		uint64_t n = l->size - off < (1 << 20) ? l->size - off : 1 << 20;

		err = journal_write_at(fd, zero, n, (off_t)off);
	}
	free(zero);
	if (!err)
		err = header_write(fd, gen, l->size);
	if (!err && fsync(fd) < 0)
		err = -errno;
	if (!err && rename(tmp, l->path) < 0)
		err = -errno;
	if (!err && fsync(l->dirfd) < 0)
		err = -errno;
	if (err < 0) {
		close(fd);
		unlink(tmp);
		return lerr_set(e, -err, "journal node log %s: writing it: %s", l->path, strerror(-err));
	}
	if (l->fd >= 0)
		close(l->fd);
	l->fd = fd;
	l->gen = gen;
	l->tail = LOG_HDR;
	return 0;
}

/* ---- replay ---- */

struct ent {
	const uint8_t *path, *data;
	uint16_t path_len;
	uint32_t data_len;
	uint64_t off, ino;
	int64_t bt_sec;
	uint32_t bt_nsec;
	size_t idx;                 /* place in the log */
};

static int ent_cmp(const void *a, const void *b)
{
	const struct ent *x = a, *y = b;
	size_t n = x->path_len < y->path_len ? x->path_len : y->path_len;
	int c = memcmp(x->path, y->path, n);

	if (c)
		return c;
	if (x->path_len != y->path_len)
		return x->path_len < y->path_len ? -1 : 1;
	return x->idx < y->idx ? -1 : x->idx > y->idx;
}

static bool same_path(const struct ent *x, const struct ent *y)
{
	return x->path_len == y->path_len && !memcmp(x->path, y->path, x->path_len);
}

/* A relative path with no empty, "." or ".." component and no NUL. */
static bool rel_ok(const char *p, size_t n)
{
	size_t start = 0;

	if (!n || memchr(p, '\0', n) || p[0] == '/')
		return false;
	for (size_t i = 0; i <= n; i++) {
		if (i < n && p[i] != '/')
			continue;
		if (i == start || (i - start == 1 && p[start] == '.') ||
		    (i - start == 2 && p[start] == '.' && p[start + 1] == '.'))
			return false;
		start = i + 1;
	}
	return true;
}

struct replay {
	struct nodelog *l;
	char why[512];              /* the first failure */
	bool failed;
};

static void replay_fail(struct replay *r, const char *rel, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void replay_fail(struct replay *r, const char *rel, const char *fmt, ...)
{
	char what[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	log_error("journal node log %s: %s: %s", r->l->path, rel, what);
	if (!r->failed)
		snprintf(r->why, sizeof(r->why), "%s: %s", rel, what);
	r->failed = true;
}

/* The records in d (the bytes [v, b) of a journal whose valid prefix ends at v with
 * record seq *records and hash head) continue it: each has its CRC, the next sequence
 * number and the previous one's hash. Advances *records and head. */
static bool records_continue(const uint8_t *d, uint64_t len, uint64_t *records, uint8_t *head)
{
	uint64_t pos = 0;

	while (pos < len) {
		const uint8_t *f = d + pos, *b = f + JOURNAL_FRAME;
		uint32_t body_len;

		if (len - pos < JOURNAL_FRAME + JOURNAL_HEADER)
			return false;
		body_len = get32(f);
		if (body_len < JOURNAL_HEADER || body_len > JOURNAL_MAX_RECORD ||
		    body_len > len - pos - JOURNAL_FRAME ||
		    journal_crc32c(0, b, body_len) != get32(f + 4) ||
		    get64(b + 8) != *records + 1 || memcmp(b + 24, head, JOURNAL_HASH_BYTES) ||
		    journal_sha256(head, f, JOURNAL_FRAME + body_len) < 0)
			return false;
		(*records)++;
		pos += JOURNAL_FRAME + body_len;
	}
	return true;
}

/* Puts back the entries e[0..n) (one path, log order) into their journal file. */
static void replay_file(struct replay *r, const struct ent *e, size_t n)
{
	struct open_how how = {
		.flags = O_RDWR | O_CLOEXEC | O_NOFOLLOW,
		.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV,
	};
	struct journal_scan info;
	struct statx sx;
	struct lerr le = { 0 };
	char rel[PATH_MAX];
	uint8_t *fb = NULL, head[JOURNAL_HASH_BYTES];
	size_t fsize = 0;
	uint64_t v, records, restored = 0;
	int fd, err;

	if (e->path_len >= sizeof(rel) || !rel_ok((const char *)e->path, e->path_len)) {
		replay_fail(r, "(entry)", "a path that is not a plain relative path (%u bytes)", e->path_len);
		return;
	}
	memcpy(rel, e->path, e->path_len);
	rel[e->path_len] = '\0';
	fd = (int)syscall(SYS_openat2, r->l->dirfd, rel, &how, sizeof(how));
	if (fd < 0) {
		if (errno == ENOENT) /* its run was removed since */
			return;
		replay_fail(r, rel, "cannot open it beneath the log's directory: %s", strerror(errno));
		return;
	}
	if (statx(fd, "", AT_EMPTY_PATH, STATX_INO | STATX_BTIME | STATX_TYPE, &sx) < 0 ||
	    !S_ISREG(sx.stx_mode)) {
		replay_fail(r, rel, "not a regular file");
		goto out;
	}
	if (!(sx.stx_mask & STATX_BTIME))
		sx.stx_btime.tv_sec = 0, sx.stx_btime.tv_nsec = 0;
	if ((err = journal_read_fd(rel, fd, &fb, &fsize, &le)) < 0) {
		replay_fail(r, rel, "reading it: %s", strerror(-err));
		goto out;
	}
	/* damage with intact records after it (-EBADMSG) is what the log may mend: the
	 * valid prefix is still info.bytes */
	err = journal_scan_buf(rel, fb, fsize, NULL, NULL, &info, &le);
	if ((err < 0 && err != -EBADMSG) || !info.version) {
		replay_fail(r, rel, "not a journal the log can continue (%s)",
			    err < 0 ? le.msg : "bad magic");
		goto out;
	}
	v = info.bytes;
	records = info.records;
	memcpy(head, info.head, sizeof(head));
	for (size_t k = 0; k < n; k++) {
		uint64_t a = e[k].off, b = a + e[k].data_len, pos;

		if (e[k].ino != sx.stx_ino || e[k].bt_sec != sx.stx_btime.tv_sec ||
		    e[k].bt_nsec != sx.stx_btime.tv_nsec)
			continue; /* another file that had this path */
		if (a > v) {
			replay_fail(r, rel, "the log continues it at %llu, its valid records end at %llu",
				    (unsigned long long)a, (unsigned long long)v);
			goto out;
		}
		if (memcmp(fb + a, e[k].data, (b < v ? b : v) - a)) {
			replay_fail(r, rel, "its bytes from %llu differ from the log's (valid up to %llu)",
				    (unsigned long long)a, (unsigned long long)v);
			goto out;
		}
		if (b <= v)
			continue;
		for (pos = a; pos < v; pos += JOURNAL_FRAME + get32(e[k].data + (pos - a)))
			if (b - pos < JOURNAL_FRAME)
				break;
		if (pos != v) {
			replay_fail(r, rel, "the log's bytes at %llu do not meet its records' end at a "
				    "record boundary (%llu)", (unsigned long long)a, (unsigned long long)v);
			goto out;
		}
		if (!records_continue(e[k].data + (v - a), b - v, &records, head)) {
			replay_fail(r, rel, "the log's records in [%llu, %llu) do not continue its chain",
				    (unsigned long long)v, (unsigned long long)b);
			goto out;
		}
		/* a crash leaves zeros (preallocated space) or nothing (past the end) where
		 * bytes did not reach the disk; other bytes that are not the log's are
		 * damage or tampering, for the journal's own checks to refuse, never to
		 * be papered over from the log */
		for (pos = v; pos < b && pos < fsize; pos++) {
			if (fb[pos] && fb[pos] != e[k].data[pos - a]) {
				replay_fail(r, rel, "its byte at %llu is neither zero nor the log's: not what "
					    "a crash leaves; left as it is (put back up to offset %llu)",
					    (unsigned long long)pos, (unsigned long long)v);
				goto out;
			}
		}
		if (b > fsize) {
			uint8_t *g = realloc(fb, b);

			if (!g) {
				replay_fail(r, rel, "out of memory for %llu bytes", (unsigned long long)b);
				goto out;
			}
			fb = g;
			fsize = b;
		}
		memcpy(fb + v, e[k].data + (v - a), b - v);
		if ((err = journal_write_at(fd, e[k].data + (v - a), b - v, (off_t)v)) < 0) {
			replay_fail(r, rel, "writing back [%llu, %llu): %s", (unsigned long long)v,
				    (unsigned long long)b, strerror(-err));
			goto out;
		}
		restored += b - v;
		v = b;
	}
out:
	if (restored) {
		if (fsync(fd) < 0) {
			replay_fail(r, rel, "fsync after putting back %llu bytes: %s",
				    (unsigned long long)restored, strerror(errno));
		} else {
			r->l->st.replayed_files++;
			r->l->st.replayed_bytes += restored;
			log_warn("journal node log %s: %s: put back %llu bytes a crash took (up to offset %llu)",
				 r->l->path, rel, (unsigned long long)restored, (unsigned long long)v);
		}
	}
	free(fb);
	close(fd);
}

/* Puts back what the log at l->fd holds. 0, or -EBADMSG with r->why (the header is
 * not a log's, or some file could not be mended: the others still are). */
static int replay(struct nodelog *l, struct replay *r)
{
	struct lerr le = { 0 };
	struct ent *ents = NULL;
	uint8_t *buf = NULL;
	size_t size = 0, n = 0, cap = 0;
	uint64_t off = LOG_HDR;
	int err;

	r->l = l;
	if ((err = journal_read_fd(l->path, l->fd, &buf, &size, &le)) < 0) {
		snprintf(r->why, sizeof(r->why), "%s", le.msg);
		return err;
	}
	if (size < LOG_HDR || memcmp(buf, LOG_MAGIC, 8) || get32(buf + 24) != journal_crc32c(0, buf, 24)) {
		snprintf(r->why, sizeof(r->why), "no valid header");
		free(buf);
		return -EBADMSG;
	}
	l->gen = get64(buf + 8);
	while (size - off >= ENT_HDR) {
		const uint8_t *p = buf + off;
		uint32_t len = get32(p + 8);
		struct ent x;

		if (get32(p) != ENT_MAGIC || len < ENT_HDR || len > size - off ||
		    get32(p + 4) != journal_crc32c(0, p + 8, len - 8) || get64(p + 16) != l->gen)
			break;
		x = (struct ent){
			.path = p + ENT_HDR, .path_len = get16(p + 12), .data_len = get32(p + 44),
			.off = get64(p + 48), .ino = get64(p + 24), .bt_sec = (int64_t)get64(p + 32),
			.bt_nsec = get32(p + 40), .idx = n,
		};
		if ((uint64_t)ENT_HDR + x.path_len + x.data_len != len || x.off < JOURNAL_MAGIC_LEN)
			break;
		x.data = x.path + x.path_len;
		if (n == cap) {
			struct ent *g = realloc(ents, (cap ? cap * 2 : 64) * sizeof(*ents));

			if (!g) {
				snprintf(r->why, sizeof(r->why), "out of memory");
				free(ents);
				free(buf);
				return -ENOMEM;
			}
			ents = g;
			cap = cap ? cap * 2 : 64;
		}
		ents[n++] = x;
		off += align8(len);
		if (off >= size)
			break;
	}
	qsort(ents, n, sizeof(*ents), ent_cmp);
	for (size_t i = 0, k; i < n; i = k) {
		for (k = i + 1; k < n && same_path(&ents[i], &ents[k]); k++)
			;
		replay_file(r, ents + i, k - i);
	}
	free(ents);
	free(buf);
	return r->failed ? -EBADMSG : 0;
}

int nodelog_open(const char *path, uint64_t bytes, struct nodelog **out, struct lerr *e)
{
	struct nodelog *l = calloc(1, sizeof(*l));
	struct stat st;
	char *slash;
	int err;

	if (!l)
		return lerr_set(e, ENOMEM, "journal node log %s: out of memory", path);
	l->fd = -1;
	bytes = bytes ? bytes : NODELOG_DEFAULT_BYTES;
	bytes = bytes < LOG_MIN_BYTES ? LOG_MIN_BYTES : bytes > LOG_MAX_BYTES ? LOG_MAX_BYTES : bytes;
	l->size = (bytes + 4095) & ~(uint64_t)4095;
	snprintf(l->path, sizeof(l->path), "%s", path);
	snprintf(l->dir, sizeof(l->dir), "%s", path);
	slash = strrchr(l->dir, '/');
	if (!slash)
		snprintf(l->dir, sizeof(l->dir), ".");
	else if (slash == l->dir)
		l->dir[1] = '\0';
	else
		*slash = '\0';
	l->dir_len = strlen(l->dir);
	l->dirfd = open(l->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (l->dirfd < 0) {
		err = lerr_set(e, errno, "journal node log %s: its directory: %s", path, strerror(errno));
		free(l);
		return err;
	}
	l->fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
	if (l->fd < 0 && errno != ENOENT) {
		err = lerr_set(e, errno, "journal node log %s: %s", path, strerror(errno));
		goto fail;
	}
	if (l->fd < 0) {
		if ((err = log_create(l, 1, e)) < 0)
			goto fail;
	} else {
		struct replay r = { 0 };

		if (fstat(l->fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid() ||
		    (uint64_t)st.st_size > LOG_MAX_BYTES) {
			err = lerr_set(e, EPERM, "journal node log %s: not a regular file of this user's "
				       "of at most %llu bytes: refusing it", path, LOG_MAX_BYTES);
			goto fail;
		}
		err = replay(l, &r);
		/* a restart on the same boot finds the journals whole in the page cache
		 * and puts nothing back, but their logged bytes may still be only there:
		 * on disk before the log forgets them */
		if (syncfs(l->fd) < 0) {
			err = lerr_set(e, errno, "journal node log %s: syncfs before starting it over: %s",
				       path, strerror(errno));
			goto fail;
		}
		if (err < 0) {
			char aside[PATH_MAX + 48];

			snprintf(aside, sizeof(aside), "%s.unreplayed-%llu-%lld", path,
				 (unsigned long long)l->gen, (long long)time(NULL));
			log_error("journal node log %s: could not put back all it holds (%s): kept as %s; "
				  "the journals it names may have lost records a crash took", path, r.why, aside);
			if (rename(path, aside) < 0)
				log_error("journal node log %s: keeping it as %s: %s", path, aside, strerror(errno));
			if ((err = log_create(l, l->gen + 1, e)) < 0)
				goto fail;
		} else if ((uint64_t)st.st_size != l->size) {
			if ((err = log_create(l, l->gen + 1, e)) < 0)
				goto fail;
		} else if ((err = header_write(l->fd, l->gen + 1, l->size)) < 0) {
			err = lerr_set(e, -err, "journal node log %s: starting it over: %s", path, strerror(-err));
			goto fail;
		} else {
			l->gen++;
			l->tail = LOG_HDR;
		}
	}
	if (fstat(l->fd, &st) < 0) {
		err = lerr_set(e, errno, "journal node log %s: stat: %s", path, strerror(errno));
		goto fail;
	}
	l->dev = st.st_dev;
	*out = l;
	return 0;
fail:
	if (l->fd >= 0)
		close(l->fd);
	close(l->dirfd);
	free(l);
	return err;
}

bool nodelog_accepts(struct nodelog *l, struct journal *j)
{
	struct statx sx;

	if (j->dev != l->dev || __atomic_load_n(&j->dir_unsynced, __ATOMIC_ACQUIRE) ||
	    !__atomic_load_n(&j->base, __ATOMIC_ACQUIRE))
		return false;
	if (!j->log_ok) {
		/* its path and identity do not change: looked at once */
		const char *rel = j->path + l->dir_len + 1;

		j->log_ok = -1;
		if (strncmp(j->path, l->dir, l->dir_len) || j->path[l->dir_len] != '/' ||
		    !rel_ok(rel, strlen(rel)) || strlen(rel) > UINT16_MAX ||
		    statx(j->fd, "", AT_EMPTY_PATH, STATX_INO | STATX_BTIME, &sx) < 0)
			return false;
		j->ino = sx.stx_ino;
		j->btime_sec = sx.stx_mask & STATX_BTIME ? sx.stx_btime.tv_sec : 0;
		j->btime_nsec = sx.stx_mask & STATX_BTIME ? sx.stx_btime.tv_nsec : 0;
		j->log_ok = 1;
	}
	return j->log_ok > 0;
}

static int read_at(int fd, uint8_t *p, size_t len, uint64_t off)
{
	while (len) {
		ssize_t n = pread(fd, p, len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

int nodelog_write(struct nodelog *l, struct journal *batch)
{
	uint64_t total = 0, pos = 0;
	int err;

	for (struct journal *j = batch; j; j = j->bnext) {
		if (!j->via_log)
			continue;
		j->log_from = __atomic_load_n(&j->base, __ATOMIC_ACQUIRE);
		if (j->log_from >= j->batch_size)
			continue;
		total += align8(ENT_HDR + strlen(j->path + l->dir_len + 1) + (j->batch_size - j->log_from));
	}
	if (!total)
		return 0;
	if (total > l->size - LOG_HDR)
		return -E2BIG;
	if (l->tail + total > l->size)
		return -ENOSPC;
	if (l->cap < total) {
		uint8_t *g = realloc(l->buf, total);

		if (!g)
			return -ENOMEM;
		l->buf = g;
		l->cap = total;
	}
	for (struct journal *j = batch; j; j = j->bnext) {
		const char *rel = j->path + l->dir_len + 1;
		size_t plen = strlen(rel);
		uint64_t dlen = j->batch_size - j->log_from, len = ENT_HDR + plen + dlen;
		uint8_t *p = l->buf + pos;

		if (!j->via_log || j->log_from >= j->batch_size)
			continue;
		put32(p, ENT_MAGIC);
		put32(p + 8, (uint32_t)len);
		put16(p + 12, (uint16_t)plen);
		put16(p + 14, 0);
		put64(p + 16, l->gen);
		put64(p + 24, j->ino);
		put64(p + 32, (uint64_t)j->btime_sec);
		put32(p + 40, j->btime_nsec);
		put32(p + 44, (uint32_t)dlen);
		put64(p + 48, j->log_from);
		memcpy(p + ENT_HDR, rel, plen);
		if ((err = read_at(j->fd, p + ENT_HDR + plen, dlen, j->log_from)) < 0)
			return err;
		put32(p + 4, journal_crc32c(0, p + 8, len - 8));
		memset(p + len, 0, align8(len) - len);
		pos += align8(len);
	}
	if ((err = journal_write_at(l->fd, l->buf, total, (off_t)l->tail)) < 0)
		return err;
	if (fdatasync(l->fd) < 0)
		return -errno;
	l->tail += total;
	l->st.writes++;
	return 0;
}

int nodelog_checkpoint(struct nodelog *l)
{
	int err;

	if (syncfs(l->fd) < 0)
		return -errno;
	if ((err = header_write(l->fd, l->gen + 1, l->size)) < 0)
		return err;
	l->gen++;
	l->tail = LOG_HDR;
	l->st.checkpoints++;
	return 0;
}

void nodelog_stats(struct nodelog *l, struct nodelog_stats *st)
{
	*st = l->st;
}

void nodelog_close(struct nodelog *l)
{
	if (!l)
		return;
	close(l->fd);
	close(l->dirfd);
	free(l->buf);
	free(l);
}
