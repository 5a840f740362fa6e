/* unpack.c: unpacks one image layer into a root, applying OCI whiteouts, with every
 * path resolved inside the root and the layer's cost bounded.
 *
 * Each entry's path is checked component by component (image_path_clean: no "..",
 * no over-long names) and split into a parent, opened or created beneath the root
 * (RESOLVE_IN_ROOT: the archive's own symlinks are followed as the image will see
 * them, never out of it), and a last component that every call names relative to
 * that parent without following it. A whiteout names one entry of its parent
 * (".wh.NAME": never "", "." or ".."); a whiteout prefix on a directory component
 * refuses the layer.
 *
 * Bounds: the layer's tar stream after gunzip (headers, data, padding: a gzip bomb or
 * an endless run of headers stops there), the image's remaining bytes, and the
 * entries (every header, every directory made for one). Opaque whiteouts are linear:
 * the entries this layer made are remembered as keyed 64-bit hashes of their paths
 * (a set with O(1) lookups, 16 bytes an entry at most), and a directory is made
 * opaque once per layer. */
#include "image_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- a set of paths, by keyed hash ---- */

/* Open addressing over 64-bit SipHash values of the paths, with a key drawn per
 * layer so an archive cannot aim its paths at one bucket; 0 marks a free slot. Two
 * paths with the same 64-bit hash would count as one: with a secret key that is
 * chance alone (about n^2 / 2^65), and its worst effect is one lower entry kept or
 * removed in the image the archive itself describes. */
struct pathset {
	uint64_t *v;
	size_t cap, n;
	unsigned char key[crypto_shorthash_KEYBYTES];
};

static void pathset_init(struct pathset *s)
{
	memset(s, 0, sizeof(*s));
	randombytes_buf(s->key, sizeof(s->key));
}

static void pathset_free(struct pathset *s)
{
	free(s->v);
	s->v = NULL;
}

static uint64_t pathset_hash(const struct pathset *s, const char *p)
{
	unsigned char h[crypto_shorthash_BYTES];
	uint64_t x;

	crypto_shorthash(h, (const unsigned char *)p, strlen(p), s->key);
	memcpy(&x, h, sizeof(x));
	return x ? x : 1;
}

static size_t pathset_slot(const struct pathset *s, uint64_t x)
{
	size_t i = (size_t)(x & (s->cap - 1));

	while (s->v[i] && s->v[i] != x)
		i = (i + 1) & (s->cap - 1);
	return i;
}

static bool pathset_has(const struct pathset *s, const char *p)
{
	return s->cap && s->v[pathset_slot(s, pathset_hash(s, p))];
}

static int pathset_add(struct pathset *s, const char *p)
{
	uint64_t x = pathset_hash(s, p);

	if ((s->n + 1) * 2 > s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 1024;
		struct pathset t = { .cap = cap, .n = s->n };

		if (!(t.v = calloc(cap, sizeof(*t.v))))
			return -ENOMEM;
		for (size_t i = 0; i < s->cap; i++)
			if (s->v[i])
				t.v[pathset_slot(&t, s->v[i])] = s->v[i];
		free(s->v);
		s->v = t.v;
		s->cap = cap;
	}
	size_t i = pathset_slot(s, x);
	if (!s->v[i]) {
		s->v[i] = x;
		s->n++;
	}
	return 0;
}

/* ---- one layer ---- */

struct unpack {
	int root;
	const char *what;
	const struct image_limits *lim;
	const char *bound;          /* the flag whose value the stream's max is */
	struct image_stream in;
	uint64_t entries;
	struct pathset seen;        /* paths this layer made (and their parents) */
	struct pathset opaque;      /* directories this layer made opaque */
	struct lerr *e;
};

static int count_entry(struct unpack *u)
{
	if (++u->entries > u->lim->entries)
		return lerr_set(u->e, EFBIG, "image: %s: more than %llu entries (lanternd --image-entries): "
				"refused", u->what, (unsigned long long)u->lim->entries);
	return 0;
}

/* A directory image_mkdirs made for an entry: an entry of this layer. */
static int made_dir(void *arg, const char *prefix)
{
	struct unpack *u = arg;
	int err;

	if ((err = count_entry(u)) < 0)
		return err;
	return pathset_add(&u->seen, prefix);
}

/* Remembers path and its parents as this layer's: an opaque whiteout later in the
 * layer keeps them. Parents were added with their first child, so the walk up stops
 * at the first one already there. */
static int seen_add(struct unpack *u, const char *path)
{
	char p[PATH_MAX];

	snprintf(p, sizeof(p), "%s", path);
	for (;;) {
		char *slash;

		if (pathset_has(&u->seen, p))
			return 0;
		if (pathset_add(&u->seen, p) < 0)
			return -ENOMEM;
		if (!(slash = strrchr(p, '/')))
			return 0;
		*slash = '\0';
	}
}

static int fail(struct unpack *u, int err, const char *path, const char *why)
{
	return lerr_set(u->e, err, "image: %s: entry \"%.300s\": %s", u->what, path, why);
}

/* Empties directory dirpath of what lower layers put there. */
static int opaque(struct unpack *u, const char *dirpath, int dfd)
{
	char child[PATH_MAX + NAME_MAX + 2];
	struct dirent *de;
	DIR *d;
	int fd, err = 0;

	if (pathset_has(&u->opaque, dirpath))
		return 0;
	if (pathset_add(&u->opaque, dirpath) < 0)
		return -ENOMEM;
	fd = openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || !(d = fdopendir(fd))) {
		err = -errno;
		if (fd >= 0)
			close(fd);
		return err;
	}
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		snprintf(child, sizeof(child), "%s%s%s", dirpath, dirpath[0] ? "/" : "", de->d_name);
		if (!pathset_has(&u->seen, child) && (err = image_tree_remove(dirfd(d), de->d_name)) < 0)
			break;
	}
	closedir(d);
	return err;
}

static int write_data(struct image_tar *t, int fd)
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
	return (int)n;
}

/* Makes the entry base in pfd (resolved, empty). */
static int create(struct unpack *u, struct image_tar *t, const struct image_tar_entry *en, int pfd,
		  const char *base)
{
	int fd, err = 0;

	switch (en->type) {
	case '0':
		fd = openat(pfd, base, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (fd < 0)
			return -errno;
		err = write_data(t, fd);
		if (!err && fchown(fd, en->uid, en->gid) < 0)
			err = -errno;
		if (!err && fchmod(fd, en->mode) < 0)
			err = -errno;
		close(fd);
		return err;
	case '1': {
		char target[PATH_MAX], *tbase;
		const char *why;
		int tfd;

		if (!en->link || image_path_clean(en->link, target, sizeof(target), &why) < 0 || !target[0])
			return -EPERM;
		tbase = strrchr(target, '/');
		if (tbase)
			*tbase++ = '\0';
		tfd = image_openat2(u->root, tbase ? target : "", O_PATH | O_DIRECTORY, 0, IMAGE_RESOLVE_BUILD);
		if (tfd < 0)
			return tfd;
		if (linkat(tfd, tbase ? tbase : target, pfd, base, 0) < 0)
			err = -errno;
		close(tfd);
		return err;
	}
	case '2':
		if (!en->link || !en->link[0] || strlen(en->link) >= PATH_MAX)
			return -EINVAL;
		if (symlinkat(en->link, pfd, base) < 0 ||
		    fchownat(pfd, base, en->uid, en->gid, AT_SYMLINK_NOFOLLOW) < 0)
			return -errno;
		return 0;
	case '6':
		if (mknodat(pfd, base, S_IFIFO | en->mode, 0) < 0 ||
		    fchownat(pfd, base, en->uid, en->gid, AT_SYMLINK_NOFOLLOW) < 0)
			return -errno;
		return 0;
	case '5':
		if (mkdirat(pfd, base, 0700) < 0 && errno != EEXIST)
			return -errno;
		if (fchownat(pfd, base, en->uid, en->gid, AT_SYMLINK_NOFOLLOW) < 0 ||
		    fchmodat(pfd, base, en->mode, 0) < 0)
			return -errno;
		return 0;
	}
	return -ENOTSUP;
}

static int unpack_entry(struct unpack *u, struct image_tar *t, const struct image_tar_entry *en)
{
	char path[PATH_MAX], dir[PATH_MAX], *base, *slash;
	const char *why;
	struct stat st;
	int pfd, err;

	if ((err = count_entry(u)) < 0)
		return err;
	if (image_path_clean(en->path, path, sizeof(path), &why) < 0)
		return fail(u, EPERM, en->path, why);
	if (!path[0])
		/* "./": the root; its own attributes are lantern's */
		return en->type == '5' ? 0 : fail(u, EPERM, en->path, "replaces the root");
	/* AUFS metadata (.wh..wh.plnk, ...) at the top of old Docker layers: not content */
	if (!strncmp(path, ".wh..wh.", 8) && strcmp(path, ".wh..wh..opq"))
		return 0;
	slash = strrchr(path, '/');
	base = slash ? slash + 1 : path;
	snprintf(dir, sizeof(dir), "%.*s", slash ? (int)(slash - path) : 0, path);
	for (const char *c = dir; *c; c = strchr(c, '/') ? strchr(c, '/') + 1 : c + strlen(c))
		if (!strncmp(c, ".wh.", 4))
			return fail(u, EPERM, path, "has a whiteout (.wh.) as a directory");
	if (u->in.got > u->in.max || en->size > u->in.max - u->in.got)
		return lerr_set(u->e, EFBIG, "image: %s: entry \"%.300s\" declares %llu bytes, past what the "
				"layer may unpack to (lanternd %s %llu): refused", u->what, path,
				(unsigned long long)en->size, u->bound, (unsigned long long)u->in.max);

	pfd = dir[0] ? image_mkdirs(u->root, dir, made_dir, u) : image_openat2(u->root, "", O_PATH | O_DIRECTORY, 0, 0);
	if (pfd < 0)
		return u->e->msg[0] && pfd == -EFBIG ? pfd :
		       fail(u, -pfd, path, pfd == -ENOTDIR ? "a parent is not a directory" :
			    pfd == -ELOOP ? "a parent is a symlink to nothing in the root" : strerror(-pfd));

	if (!strncmp(base, ".wh.", 4)) {
		const char *name = base + 4;
		char victim[PATH_MAX + NAME_MAX + 2];

		if (!strcmp(base, ".wh..wh..opq")) {
			err = opaque(u, dir, pfd);
		} else if (!strncmp(base, ".wh..wh.", 8)) {
			close(pfd);
			return fail(u, EPERM, path, "is a reserved whiteout name");
		} else if (!name[0] || !strcmp(name, ".") || !strcmp(name, "..")) {
			close(pfd);
			return fail(u, EPERM, path, "is a whiteout that names no entry");
		} else {
			/* a whiteout hides lower layers' entries, not this layer's */
			snprintf(victim, sizeof(victim), "%s%s%s", dir, dir[0] ? "/" : "", name);
			if (!pathset_has(&u->seen, victim))
				err = image_tree_remove(pfd, name);
		}
		close(pfd);
		return err < 0 ? fail(u, -err, path, strerror(-err)) : 0;
	}

	/* A later entry replaces what was there, except that a directory stays a
	 * directory (its contents merge). */
	if (fstatat(pfd, base, &st, AT_SYMLINK_NOFOLLOW) == 0 && !(en->type == '5' && S_ISDIR(st.st_mode)) &&
	    (err = image_tree_remove(pfd, base)) < 0) {
		close(pfd);
		return fail(u, -err, path, strerror(-err));
	}
	if (en->type == '3' || en->type == '4') {
		/* devices are not created: a spawn's /dev is its runtime's own, and a node
		 * elsewhere in a shared root would be a door to the host's device */
		close(pfd);
		return 0;
	}
	if (!strchr("012356", en->type)) {
		close(pfd);
		return lerr_set(u->e, ENOTSUP, "image: %s: entry \"%.300s\" has unsupported type '%c'", u->what,
				path, en->type);
	}
	err = create(u, t, en, pfd, base);
	if (!err && en->type != '1') {
		struct timespec ts[2] = { { .tv_sec = en->mtime }, { .tv_sec = en->mtime } };
		utimensat(pfd, base, ts, AT_SYMLINK_NOFOLLOW);
	}
	close(pfd);
	if (err == -EFBIG || err == -ECANCELED)
		return err; /* the stream's bound: the caller names it */
	if (err)
		return fail(u, -err, path, en->type == '1' && err == -EPERM ? "a hard link whose target leaves "
			    "the root or is not a file" : strerror(-err));
	return seen_add(u, path) < 0 ? lerr_set(u->e, ENOMEM, "image: %s: out of memory", u->what) : 0;
}

int image_unpack_layer(int root_fd, int fd, const char *what, const struct image_limits *lim,
		       uint64_t *image_left, struct lerr *e)
{
	struct unpack u = { .root = root_fd, .what = what, .lim = lim, .e = e };
	const struct image_tar_entry *en;
	struct image_tar t;
	uint64_t max = lim->layer_bytes;
	int r;

	u.bound = "--image-layer-max";
	if (*image_left < max) {
		max = *image_left;
		u.bound = "--image-max";
	}
	e->msg[0] = '\0';
	if (image_stream_open(&u.in, fd, max, lim->stop) < 0)
		return lerr_set(e, ENOMEM, "image: %s: cannot read", what);
	pathset_init(&u.seen);
	pathset_init(&u.opaque);
	image_tar_init(&t, image_stream_read, &u.in);
	while ((r = image_tar_next(&t, &en, e)) > 0)
		if ((r = unpack_entry(&u, &t, en)) < 0)
			break;
	if (r < 0 && u.in.err == -EFBIG)
		r = lerr_set(e, EFBIG, "image: %s: unpacks to more than %llu bytes (lanternd %s): refused", what,
			     (unsigned long long)max, u.bound);
	else if (r < 0 && u.in.err == -ECANCELED)
		r = lerr_set(e, ECANCELED, "image: %s: unpacking stopped: lanternd is stopping", what);
	else if (r < 0 && u.in.err == -EBADMSG)
		r = lerr_set(e, EBADMSG, "image: %s: damaged gzip stream", what);
	else if (r < 0 && strncmp(e->msg, "image:", 6)) {
		char why[sizeof(e->msg)];

		snprintf(why, sizeof(why), "%s", e->msg);
		lerr_set(e, -r, "image: %s: %s", what, why);
	}
	*image_left -= u.in.got < *image_left ? u.in.got : *image_left;
	image_tar_free(&t);
	pathset_free(&u.seen);
	pathset_free(&u.opaque);
	image_stream_close(&u.in);
	return r < 0 ? r : 0;
}
