/* tar.c: a tar reader (ustar, pax extended headers, GNU long names) and the layer
 * unpacker that applies OCI whiteouts.
 *
 * Every path of a layer resolves inside the root with openat2(RESOLVE_IN_ROOT): a
 * symlink planted by one entry ("etc -> /etc") cannot make a later entry write
 * outside the image's root. */
#include "lantern/image.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>
#include <zlib.h>

#include "lantern/util.h"

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

static int read_full(struct image_tar *t, void *buf, size_t n)
{
	size_t got = 0;

	while (got < n) {
		ssize_t r = t->rd(t->ctx, (char *)buf + got, n - got);
		if (r < 0)
			return -EIO;
		if (r == 0)
			return got ? -EBADMSG : 0;
		got += (size_t)r;
	}
	return 1;
}

static int skip(struct image_tar *t, uint64_t n)
{
	char buf[4096];

	while (n) {
		size_t k = n < sizeof(buf) ? (size_t)n : sizeof(buf);
		if (read_full(t, buf, k) != 1)
			return -EBADMSG;
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

/* Reads a whole extension payload (pax header or GNU long name) of size n. */
static char *read_payload(struct image_tar *t, uint64_t n)
{
	uint64_t padded = (n + BLOCK - 1) / BLOCK * BLOCK;
	char *buf;

	if (n > (1u << 20))
		return NULL;
	buf = malloc(padded + 1);
	if (!buf || read_full(t, buf, padded) != 1) {
		free(buf);
		return NULL;
	}
	buf[n] = '\0';
	return buf;
}

/* pax records: "LEN key=value\n"; keeps path, linkpath and size. */
static int parse_pax(char *buf, size_t n, char **path, char **link, uint64_t *size, bool *has_size)
{
	size_t off = 0;

	while (off < n) {
		char *end, *eq, *rec = buf + off;
		unsigned long len = strtoul(rec, &end, 10);

		if (end == rec || *end != ' ' || len == 0 || off + len > n || rec[len - 1] != '\n')
			return -EBADMSG;
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
			*size = strtoull(eq + 1, NULL, 10);
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

	if (skip(t, t->left + t->pad) < 0)
		return lerr_set(e, EBADMSG, "tar: truncated entry data");
	t->left = t->pad = 0;
	image_tar_free(t);
	for (;;) {
		uint64_t size, v;
		char full[257];

		r = read_full(t, &h, BLOCK);
		if (r == 0)
			goto end; /* no end-of-archive blocks: accepted, as GNU tar does */
		if (r < 0) {
			r = lerr_set(e, EBADMSG, "tar: truncated header");
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
		if (h.typeflag == 'x' || h.typeflag == 'g' || h.typeflag == 'L' || h.typeflag == 'K') {
			char *p = read_payload(t, size);

			if (!p) {
				r = lerr_set(e, EBADMSG, "tar: extension header of %llu bytes unreadable",
					     (unsigned long long)size);
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
		num(h.mode, sizeof(h.mode), &v);
		t->ent.mode = (mode_t)(v & 07777);
		num(h.uid, sizeof(h.uid), &v);
		t->ent.uid = (uid_t)v;
		num(h.gid, sizeof(h.gid), &v);
		t->ent.gid = (gid_t)v;
		num(h.mtime, sizeof(h.mtime), &v);
		t->ent.mtime = (int64_t)v;
		num(h.devmajor, sizeof(h.devmajor), &v);
		t->ent.devmajor = (unsigned)v;
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
	if (r <= 0)
		return -EBADMSG;
	t->left -= (uint64_t)r;
	return r;
}

/* ---- unpacking ---- */

static int openat2_in_root(int root, const char *path, int flags, mode_t mode)
{
	struct open_how how = {
		.flags = (uint64_t)flags | O_CLOEXEC,
		.mode = mode,
		.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
	};
	long fd = syscall(SYS_openat2, root, path, &how, sizeof(how));

	return fd < 0 ? -errno : (int)fd;
}

/* Normalizes an archive path: no leading "./" or "/", no "." components; refuses "..".
 * Returns false for the root itself or a path escaping it. */
static bool clean_path(const char *in, char *out, size_t cap)
{
	size_t n = 0;
	const char *p = in;

	while (*p) {
		const char *s;
		size_t len;

		while (*p == '/')
			p++;
		s = p;
		while (*p && *p != '/')
			p++;
		len = (size_t)(p - s);
		if (len == 0 || (len == 1 && s[0] == '.'))
			continue;
		if (len == 2 && s[0] == '.' && s[1] == '.')
			return false;
		if (n + len + 2 > cap)
			return false;
		if (n)
			out[n++] = '/';
		memcpy(out + n, s, len);
		n += len;
	}
	out[n] = '\0';
	return n > 0;
}

/* Opens the parent directory of path inside root (creating missing directories) and
 * points *base at the last component. */
static int open_parent(int root, char *path, char **base)
{
	char *slash = strrchr(path, '/');
	int fd;

	if (!slash) {
		*base = path;
		return fcntl(root, F_DUPFD_CLOEXEC, 3);
	}
	*slash = '\0';
	*base = slash + 1;
	fd = openat2_in_root(root, path, O_PATH | O_DIRECTORY, 0);
	if (fd == -ENOENT) {
		/* missing parents: create them one by one, each inside the root */
		for (char *p = path;; p++) {
			if (*p == '/' || *p == '\0') {
				char c = *p;
				int pfd;

				*p = '\0';
				pfd = openat2_in_root(root, path, O_PATH | O_DIRECTORY, 0);
				if (pfd == -ENOENT) {
					char *pslash = strrchr(path, '/');
					int gp;

					if (pslash) {
						*pslash = '\0';
						gp = openat2_in_root(root, path, O_PATH | O_DIRECTORY, 0);
						*pslash = '/';
					} else {
						gp = fcntl(root, F_DUPFD_CLOEXEC, 3);
					}
					if (gp < 0) {
						*p = c;
						*slash = '/';
						return gp;
					}
					if (mkdirat(gp, pslash ? pslash + 1 : path, 0755) < 0 && errno != EEXIST) {
						int err = -errno;
						close(gp);
						*p = c;
						*slash = '/';
						return err;
					}
					close(gp);
				} else if (pfd >= 0) {
					close(pfd);
				}
				*p = c;
				if (!c)
					break;
			}
		}
		fd = openat2_in_root(root, path, O_PATH | O_DIRECTORY, 0);
	}
	*slash = '/';
	return fd;
}

/* Removes name in dir (recursively for directories). */
static int remove_at(int dir, const char *name)
{
	struct stat st;

	if (fstatat(dir, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (S_ISDIR(st.st_mode)) {
		int fd = openat(dir, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		DIR *d;
		struct dirent *de;

		if (fd < 0)
			return -errno;
		d = fdopendir(fd);
		if (!d) {
			close(fd);
			return -errno;
		}
		while ((de = readdir(d)))
			if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
				remove_at(dirfd(d), de->d_name);
		closedir(d);
		return unlinkat(dir, name, AT_REMOVEDIR) < 0 ? -errno : 0;
	}
	return unlinkat(dir, name, 0) < 0 ? -errno : 0;
}

/* Paths created by the layer being unpacked: an opaque whiteout empties a directory
 * of what LOWER layers put there, not of this layer's own entries. */
struct seen {
	char **v;
	size_t n, cap;
};

static bool seen_has(const struct seen *s, const char *p)
{
	for (size_t i = 0; i < s->n; i++)
		if (!strcmp(s->v[i], p))
			return true;
	return false;
}

static void seen_add(struct seen *s, const char *p)
{
	if (s->n == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 64;
		char **v = realloc(s->v, cap * sizeof(*v));
		if (!v)
			return;
		s->v = v;
		s->cap = cap;
	}
	if ((s->v[s->n] = strdup(p)))
		s->n++;
}

static void seen_free(struct seen *s)
{
	for (size_t i = 0; i < s->n; i++)
		free(s->v[i]);
	free(s->v);
}

static int opaque(int root, const char *dirpath, const struct seen *s)
{
	int fd = dirpath[0] ? openat2_in_root(root, dirpath, O_RDONLY | O_DIRECTORY, 0)
			    : fcntl(root, F_DUPFD_CLOEXEC, 3);
	DIR *d;
	struct dirent *de;

	if (fd < 0)
		return fd == -ENOENT ? 0 : fd;
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -errno;
	}
	while ((de = readdir(d))) {
		char child[4096];

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		snprintf(child, sizeof(child), "%s%s%s", dirpath, dirpath[0] ? "/" : "", de->d_name);
		if (!seen_has(s, child))
			remove_at(dirfd(d), de->d_name);
	}
	closedir(d);
	return 0;
}

static ssize_t gz_read(void *ctx, void *buf, size_t n)
{
	int r = gzread((gzFile)ctx, buf, (unsigned)(n > (1u << 30) ? (1u << 30) : n));
	return r < 0 ? -1 : r;
}

static int write_file_data(struct image_tar *t, int fd)
{
	char buf[65536];
	ssize_t n;

	while ((n = image_tar_read(t, buf, sizeof(buf))) > 0) {
		for (ssize_t off = 0; off < n;) {
			ssize_t w = write(fd, buf + off, (size_t)(n - off));
			if (w < 0)
				return -errno;
			off += w;
		}
	}
	return n < 0 ? (int)n : 0;
}

static int unpack_entry(int root, struct image_tar *t, const struct image_tar_entry *en,
			struct seen *s, const char *what, struct lerr *e)
{
	char path[4096], *base;
	int pfd, err = 0, fd;
	struct stat st;

	if (!clean_path(en->path, path, sizeof(path)))
		return en->type == '5' ? 0 : lerr_set(e, EPERM, "image: %s: entry \"%s\" leaves the root",
						     what, en->path);
	pfd = open_parent(root, path, &base);
	if (pfd < 0)
		return lerr_set(e, pfd, "image: %s: parent of \"%s\": %s", what, path, strerror(-pfd));

	if (!strcmp(base, ".wh..wh..opq")) {
		char dirpath[4096];

		snprintf(dirpath, sizeof(dirpath), "%.*s", (int)(base - path > 0 ? base - path - 1 : 0), path);
		err = opaque(root, dirpath, s);
		close(pfd);
		return err < 0 ? lerr_set(e, err, "image: %s: opaque whiteout of \"%s\": %s", what,
					  dirpath, strerror(-err)) : 0;
	}
	if (!strncmp(base, ".wh.", 4)) {
		err = remove_at(pfd, base + 4);
		close(pfd);
		return err < 0 ? lerr_set(e, err, "image: %s: whiteout \"%s\": %s", what, path,
					  strerror(-err)) : 0;
	}

	/* A later layer replaces what a lower one had, except that a directory stays a
	 * directory (its contents merge). */
	if (fstatat(pfd, base, &st, AT_SYMLINK_NOFOLLOW) == 0 && !(en->type == '5' && S_ISDIR(st.st_mode)))
		remove_at(pfd, base);

	switch (en->type) {
	case '0':
		fd = openat(pfd, base, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (fd < 0) {
			err = -errno;
			break;
		}
		err = write_file_data(t, fd);
		if (!err && fchown(fd, en->uid, en->gid) < 0)
			err = -errno;
		if (!err && fchmod(fd, en->mode) < 0)
			err = -errno;
		close(fd);
		break;
	case '1': {
		char target[4096], *tbase;
		int tfd;

		if (!en->link || !clean_path(en->link, target, sizeof(target))) {
			err = -EPERM;
			break;
		}
		tfd = open_parent(root, target, &tbase);
		if (tfd < 0) {
			err = tfd;
			break;
		}
		if (linkat(tfd, tbase, pfd, base, 0) < 0)
			err = -errno;
		close(tfd);
		break;
	}
	case '2':
		if (!en->link || symlinkat(en->link, pfd, base) < 0)
			err = en->link ? -errno : -EBADMSG;
		else if (fchownat(pfd, base, en->uid, en->gid, AT_SYMLINK_NOFOLLOW) < 0)
			err = -errno;
		break;
	case '3':
	case '4':
	case '6': {
		mode_t type = en->type == '3' ? S_IFCHR : en->type == '4' ? S_IFBLK : S_IFIFO;

		if (mknodat(pfd, base, type | en->mode, makedev(en->devmajor, en->devminor)) < 0)
			err = -errno;
		else if (fchownat(pfd, base, en->uid, en->gid, AT_SYMLINK_NOFOLLOW) < 0)
			err = -errno;
		break;
	}
	case '5':
		if (mkdirat(pfd, base, 0755) < 0 && errno != EEXIST)
			err = -errno;
		else if (fchownat(pfd, base, en->uid, en->gid, AT_SYMLINK_NOFOLLOW) < 0 ||
			 fchmodat(pfd, base, en->mode, 0) < 0)
			err = -errno;
		break;
	default:
		close(pfd);
		return lerr_set(e, ENOTSUP, "image: %s: entry \"%s\" has unsupported type '%c'", what,
				path, en->type);
	}
	if (!err && en->type != '1') {
		struct timespec ts[2] = { { .tv_sec = en->mtime }, { .tv_sec = en->mtime } };
		utimensat(pfd, base, ts, AT_SYMLINK_NOFOLLOW);
	}
	close(pfd);
	if (err)
		return lerr_set(e, err, "image: %s: unpack \"%s\": %s", what, path, strerror(-err));
	seen_add(s, path);
	return 0;
}

int image_unpack_layer(int root_fd, int fd, const char *what, struct lerr *e)
{
	gzFile gz = gzdopen(fd, "rb");
	struct image_tar t;
	const struct image_tar_entry *en;
	struct seen s = { 0 };
	int r;

	if (!gz) {
		close(fd);
		return lerr_set(e, ENOMEM, "image: %s: cannot read", what);
	}
	gzbuffer(gz, 1 << 17);
	image_tar_init(&t, gz_read, gz);
	while ((r = image_tar_next(&t, &en, e)) > 0)
		if ((r = unpack_entry(root_fd, &t, en, &s, what, e)) < 0)
			break;
	if (r < 0 && strncmp(e->msg, "image:", 6)) {
		char why[sizeof(e->msg)];
		snprintf(why, sizeof(why), "%s", e->msg);
		lerr_set(e, r, "image: %s: %s", what, why);
	}
	image_tar_free(&t);
	seen_free(&s);
	gzclose(gz);
	return r < 0 ? r : 0;
}
