/* tar.c: a tar reader (ustar, pax extended headers, GNU long names and base-256
 * sizes) and the bounded gunzip stream it reads layers and archives through.
 *
 * The reader trusts nothing it reads: extension payloads are capped at 1 MiB, numbers
 * are parsed strictly, and the stream under it stops at a byte bound, so a gzip bomb,
 * an endless run of extension headers or a size field of 2^63 cost at most the bound. */
#include "image_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BLOCK 512

struct hdr {
	char name[100], mode[8], uid[8], gid[8], size[12], mtime[12], chksum[8];
	char typeflag, linkname[100], magic[6], version[2], uname[32], gname[32];
	char devmajor[8], devminor[8], prefix[155], pad[12];
};

void image_tar_init(struct image_tar *t, image_tar_read_fn rd, void *ctx)
{
	memset(t, 0, sizeof(*t));
	t->rd = rd;
	t->ctx = ctx;
}

void image_tar_free(struct image_tar *t)
{
	free(t->ent.path);
	free(t->ent.link);
	t->ent.path = t->ent.link = NULL;
}

/* 1 when n bytes were read, 0 at a clean end before any, -errno otherwise (the
 * reader's own error, or -EBADMSG for an archive that ends inside a record). */
static int read_full(struct image_tar *t, void *buf, size_t n)
{
	size_t got = 0;

	while (got < n) {
		ssize_t r = t->rd(t->ctx, (char *)buf + got, n - got);
		if (r < 0)
			return (int)r;
		if (r == 0)
			return got ? -EBADMSG : 0;
		got += (size_t)r;
	}
	return 1;
}

static int skip(struct image_tar *t, uint64_t n)
{
	char buf[16384];

	while (n) {
		size_t k = n < sizeof(buf) ? (size_t)n : sizeof(buf);
		int r = read_full(t, buf, k);

		if (r != 1)
			return r < 0 ? r : -EBADMSG;
		n -= k;
	}
	return 0;
}

/* Octal field (NUL or space terminated), or GNU base-256 when the high bit is set. */
static int num(const char *f, size_t len, uint64_t *out)
{
	uint64_t v = 0;
	size_t i = 0;

	if ((unsigned char)f[0] & 0x80) {
		if ((unsigned char)f[0] != 0x80)
			return -EBADMSG; /* negative or too large */
		for (i = 1; i < len; i++) {
			if (v >> 56)
				return -EOVERFLOW;
			v = (v << 8) | (unsigned char)f[i];
		}
		*out = v;
		return 0;
	}
	while (i < len && f[i] == ' ')
		i++;
	for (; i < len && f[i] >= '0' && f[i] <= '7'; i++) {
		if (v >> 60)
			return -EOVERFLOW;
		v = v * 8 + (uint64_t)(f[i] - '0');
	}
	if (i < len && f[i] != '\0' && f[i] != ' ')
		return -EBADMSG;
	*out = v;
	return 0;
}

static bool checksum_ok(const struct hdr *h)
{
	const unsigned char *p = (const unsigned char *)h;
	uint64_t want;
	unsigned long sum = 0;

	if (num(h->chksum, sizeof(h->chksum), &want) < 0)
		return false;
	for (size_t i = 0; i < BLOCK; i++)
		sum += (i >= 148 && i < 156) ? ' ' : p[i];
	return sum == want;
}

/* Extension payloads (pax records, GNU long names) are read whole: no real one is
 * near this. */
#define PAYLOAD_MAX (1u << 20)

/* Reads a whole extension payload of size n (<= PAYLOAD_MAX) into *out. */
static int read_payload(struct image_tar *t, uint64_t n, char **out)
{
	uint64_t padded = (n + BLOCK - 1) / BLOCK * BLOCK;
	char *buf;
	int r;

	if (!(buf = malloc(padded + 1)))
		return -ENOMEM;
	if ((r = read_full(t, buf, padded)) != 1) {
		free(buf);
		return r < 0 ? r : -EBADMSG;
	}
	buf[n] = '\0';
	*out = buf;
	return 0;
}

/* A decimal number that fills [s, end) exactly, without overflow. */
static bool decimal(const char *s, const char *end, uint64_t *out)
{
	uint64_t v = 0;

	if (s == end)
		return false;
	for (; s < end; s++) {
		if (*s < '0' || *s > '9' || v > (UINT64_MAX - 9) / 10)
			return false;
		v = v * 10 + (uint64_t)(*s - '0');
	}
	*out = v;
	return true;
}

/* pax records: "LEN key=value\n"; keeps path, linkpath and size. */
static int parse_pax(char *buf, size_t n, char **path, char **link, uint64_t *size, bool *has_size)
{
	size_t off = 0;

	while (off < n) {
		char *sp, *eq, *rec = buf + off;
		uint64_t len;

		sp = memchr(rec, ' ', n - off);
		if (!sp || !decimal(rec, sp, &len) || len <= (uint64_t)(sp - rec) + 1 || len > n - off ||
		    rec[len - 1] != '\n')
			return -EBADMSG;
		char *end = sp;
		rec[len - 1] = '\0';
		eq = strchr(end + 1, '=');
		if (!eq)
			return -EBADMSG;
		*eq = '\0';
		if (!strcmp(end + 1, "path")) {
			free(*path);
			*path = strdup(eq + 1);
		} else if (!strcmp(end + 1, "linkpath")) {
			free(*link);
			*link = strdup(eq + 1);
		} else if (!strcmp(end + 1, "size")) {
			if (!decimal(eq + 1, eq + 1 + strlen(eq + 1), size))
				return -EBADMSG;
			*has_size = true;
		}
		off += len;
	}
	return 0;
}

int image_tar_next(struct image_tar *t, const struct image_tar_entry **out, struct lerr *e)
{
	char *lpath = NULL, *llink = NULL;
	uint64_t xsize = 0;
	bool has_xsize = false;
	struct hdr h;
	int r;

	if ((r = skip(t, t->left)) < 0 || (r = skip(t, t->pad)) < 0)
		return r == -EBADMSG ? lerr_set(e, EBADMSG, "tar: truncated entry data") :
		       lerr_set(e, -r, "tar: read: %s", strerror(-r));
	t->left = t->pad = 0;
	image_tar_free(t);
	for (;;) {
		uint64_t size, v;
		char full[257];

		r = read_full(t, &h, BLOCK);
		if (r == 0)
			goto end; /* no end-of-archive blocks: accepted, as GNU tar does */
		if (r < 0) {
			r = r == -EBADMSG ? lerr_set(e, EBADMSG, "tar: truncated header") :
			    lerr_set(e, -r, "tar: read: %s", strerror(-r));
			goto fail;
		}
		if (!memcmp(&h, (char[BLOCK]){ 0 }, BLOCK))
			goto end;
		if (!checksum_ok(&h)) {
			r = lerr_set(e, EBADMSG, "tar: header checksum mismatch (not a tar archive, or damaged)");
			goto fail;
		}
		if (num(h.size, sizeof(h.size), &size) < 0) {
			r = lerr_set(e, EBADMSG, "tar: bad size field");
			goto fail;
		}
		if (h.typeflag == 'g') {
			/* global pax records: nothing lantern uses */
			if ((r = skip(t, size)) < 0 || (r = skip(t, (BLOCK - size % BLOCK) % BLOCK)) < 0) {
				r = lerr_set(e, -r, "tar: global header: %s", strerror(-r));
				goto fail;
			}
			continue;
		}
		if (h.typeflag == 'x' || h.typeflag == 'L' || h.typeflag == 'K') {
			char *p;

			if (size > PAYLOAD_MAX) {
				r = lerr_set(e, EFBIG, "tar: extension header of %llu bytes (at most %u)",
					     (unsigned long long)size, PAYLOAD_MAX);
				goto fail;
			}
			if ((r = read_payload(t, size, &p)) < 0) {
				r = lerr_set(e, -r, "tar: extension header: %s", strerror(-r));
				goto fail;
			}
			if (h.typeflag == 'x' &&
			    parse_pax(p, size, &lpath, &llink, &xsize, &has_xsize) < 0) {
				free(p);
				r = lerr_set(e, EBADMSG, "tar: malformed pax header");
				goto fail;
			}
			if (h.typeflag == 'L') {
				free(lpath);
				lpath = strndup(p, size);
			} else if (h.typeflag == 'K') {
				free(llink);
				llink = strndup(p, size);
			}
			free(p);
			continue;
		}
		memset(&t->ent, 0, sizeof(t->ent));
		if (lpath) {
			t->ent.path = lpath;
			lpath = NULL;
		} else {
			/* ustar splits long names into prefix "/" name */
			if (!memcmp(h.magic, "ustar", 5) && h.prefix[0])
				snprintf(full, sizeof(full), "%.155s/%.100s", h.prefix, h.name);
			else
				snprintf(full, sizeof(full), "%.100s", h.name);
			t->ent.path = strdup(full);
		}
		if (llink) {
			t->ent.link = llink;
			llink = NULL;
		} else if (h.linkname[0]) {
			t->ent.link = strndup(h.linkname, sizeof(h.linkname));
		}
		if (!t->ent.path) {
			r = lerr_set(e, ENOMEM, "tar: out of memory");
			goto fail;
		}
		t->ent.type = h.typeflag ? h.typeflag : '0';
		if (t->ent.type == '7')
			t->ent.type = '0'; /* contiguous file: a regular file */
		/* a damaged attribute reads as 0, as GNU tar reads it with a warning */
		v = 0;
		num(h.mode, sizeof(h.mode), &v);
		t->ent.mode = (mode_t)(v & 07777);
		v = 0;
		num(h.uid, sizeof(h.uid), &v);
		t->ent.uid = (uid_t)v;
		v = 0;
		num(h.gid, sizeof(h.gid), &v);
		t->ent.gid = (gid_t)v;
		v = 0;
		num(h.mtime, sizeof(h.mtime), &v);
		t->ent.mtime = (int64_t)v;
		v = 0;
		num(h.devmajor, sizeof(h.devmajor), &v);
		t->ent.devmajor = (unsigned)v;
		v = 0;
		num(h.devminor, sizeof(h.devminor), &v);
		t->ent.devminor = (unsigned)v;
		/* only regular files carry data blocks */
		t->ent.size = t->ent.type == '0' ? (has_xsize ? xsize : size) : 0;
		t->left = t->ent.size;
		t->pad = (BLOCK - t->ent.size % BLOCK) % BLOCK;
		*out = &t->ent;
		return 1;
	}
end:
	free(lpath);
	free(llink);
	return 0;
fail:
	free(lpath);
	free(llink);
	return r;
}

ssize_t image_tar_read(struct image_tar *t, void *buf, size_t n)
{
	ssize_t r;

	if (!t->left)
		return 0;
	if (n > t->left)
		n = (size_t)t->left;
	r = t->rd(t->ctx, buf, n);
	if (r == 0)
		return -EBADMSG;
	if (r < 0)
		return r;
	t->left -= (uint64_t)r;
	return r;
}


/* ---- the bounded stream ---- */

int image_stream_open(struct image_stream *s, int fd, uint64_t max, const atomic_bool *stop)
{
	memset(s, 0, sizeof(*s));
	s->max = max;
	s->stop = stop;
	if (!(s->gz = gzdopen(fd, "rb"))) {
		close(fd);
		return -ENOMEM;
	}
	gzbuffer(s->gz, 1 << 17);
	return 0;
}

ssize_t image_stream_read(void *arg, void *buf, size_t n)
{
	struct image_stream *s = arg;
	int r;

	if (s->stop && atomic_load(s->stop))
		return s->err = -ECANCELED;
	if (s->got >= s->max)
		return s->err = -EFBIG;
	/* one byte past the bound is enough to know it is passed */
	if ((uint64_t)n > s->max - s->got)
		n = (size_t)(s->max - s->got) + 1;
	if (n > (1u << 30))
		n = 1u << 30;
	r = gzread(s->gz, buf, (unsigned)n);
	if (r < 0)
		return s->err = -EBADMSG;
	s->got += (uint64_t)r;
	if (s->got > s->max)
		return s->err = -EFBIG;
	return r;
}

void image_stream_close(struct image_stream *s)
{
	if (s->gz)
		gzclose(s->gz);
	s->gz = NULL;
}
