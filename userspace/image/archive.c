/* archive.c: extracts an image archive (an OCI layout or `docker save` tar, gzip'd or
 * not) into an empty directory, where the store then reads it as a source.
 *
 * Only what an image archive is made of comes out: directories and regular files. A
 * link between two of the archive's own files (docker save writes a layer it already
 * wrote as a symlink to the first copy) becomes a hard link once everything is out,
 * and only when its target is one of the archive's regular files. No symlink is ever
 * created, so nothing in the directory can point anywhere, and devices and FIFOs
 * refuse the archive. The stream is bounded by --image-max and the entries by
 * --image-entries. */
#include "image_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Names of links kept until the end: far more than docker save writes. */
#define LINKS_MAX_BYTES (1u << 20)

struct link {
	char *path, *target;     /* both clean, relative to the archive's root */
};

struct extract {
	int dir;
	const char *what;
	struct link *links;
	size_t nlinks, caplinks, link_bytes;
	uint64_t entries, max_entries;
	struct lerr *e;
};

static int refuse(struct extract *x, int err, const char *path, const char *why)
{
	return lerr_set(x->e, err, "image: archive %s: entry \"%.300s\" %s: refused", x->what, path, why);
}

/* target of a symlink at path, as a path from the archive's root ("" if it leaves). */
static bool link_target(const char *path, const char *target, char *out, size_t cap)
{
	char joined[2 * PATH_MAX + 2], *p, *save = NULL;
	const char *slash = strrchr(path, '/');
	size_t n = 0;

	if (target[0] == '/')
		return false;
	snprintf(joined, sizeof(joined), "%.*s/%s", slash ? (int)(slash - path) : 0, path, target);
	for (p = strtok_r(joined, "/", &save); p; p = strtok_r(NULL, "/", &save)) {
		if (!strcmp(p, "."))
			continue;
		if (!strcmp(p, "..")) {
			char *up;

			if (!n)
				return false;
			up = memrchr(out, '/', n);
			n = up ? (size_t)(up - out) : 0;
			continue;
		}
		if (n + strlen(p) + 2 > cap)
			return false;
		if (n)
			out[n++] = '/';
		memcpy(out + n, p, strlen(p));
		n += strlen(p);
	}
	out[n] = '\0';
	return n > 0;
}

static int keep_link(struct extract *x, const char *path, const char *target)
{
	size_t bytes = strlen(path) + strlen(target) + 2;

	if (x->link_bytes + bytes > LINKS_MAX_BYTES)
		return refuse(x, EFBIG, path, "is one link too many (their names pass 1 MiB)");
	if (x->nlinks == x->caplinks) {
		size_t cap = x->caplinks ? x->caplinks * 2 : 16;
		struct link *l = realloc(x->links, cap * sizeof(*l));

		if (!l)
			return lerr_set(x->e, ENOMEM, "image: archive %s: out of memory", x->what);
		x->links = l;
		x->caplinks = cap;
	}
	x->links[x->nlinks].path = strdup(path);
	x->links[x->nlinks].target = strdup(target);
	if (!x->links[x->nlinks].path || !x->links[x->nlinks].target) {
		free(x->links[x->nlinks].path);
		free(x->links[x->nlinks].target);
		return lerr_set(x->e, ENOMEM, "image: archive %s: out of memory", x->what);
	}
	x->nlinks++;
	x->link_bytes += bytes;
	return 0;
}

static int made_dir(void *arg, const char *prefix)
{
	struct extract *x = arg;

	if (++x->entries > x->max_entries)
		return lerr_set(x->e, EFBIG, "image: archive %s: more than %llu entries (lanternd "
				"--image-entries): refused", x->what, (unsigned long long)x->max_entries);
	return 0;
}

/* The directory holding path, made as needed; *base points into path. */
static int parent_of(struct extract *x, char *path, char **base)
{
	char *slash = strrchr(path, '/');
	int fd;

	if (!slash) {
		*base = path;
		return image_openat2(x->dir, "", O_PATH | O_DIRECTORY, 0, 0);
	}
	*slash = '\0';
	fd = image_mkdirs(x->dir, path, made_dir, x);
	*slash = '/';
	*base = slash + 1;
	return fd;
}

static int write_file(struct image_tar *t, int pfd, const char *base)
{
	char buf[65536];
	ssize_t n;
	int fd, err = 0;

	/* a later entry of the same name wins, as tar has it */
	if (unlinkat(pfd, base, 0) < 0 && errno != ENOENT)
		return -errno;
	fd = openat(pfd, base, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	while ((n = image_tar_read(t, buf, sizeof(buf))) > 0) {
		for (ssize_t off = 0; off < n && !err;) {
			ssize_t w = write(fd, buf + off, (size_t)(n - off));
			if (w < 0)
				err = -errno;
			else
				off += w;
		}
	}
	close(fd);
	return err ? err : (int)n;
}

static int extract_entry(struct extract *x, struct image_stream *in, struct image_tar *t,
			 const struct image_tar_entry *en)
{
	char path[PATH_MAX], target[PATH_MAX], *base;
	const char *why;
	int pfd, err = 0;

	if (++x->entries > x->max_entries)
		return lerr_set(x->e, EFBIG, "image: archive %s: more than %llu entries (lanternd "
				"--image-entries): refused", x->what, (unsigned long long)x->max_entries);
	if (image_path_clean(en->path, path, sizeof(path), &why) < 0)
		return refuse(x, EPERM, en->path, why);
	if (en->size > in->max - in->got)
		return lerr_set(x->e, EFBIG, "image: archive %s: entry \"%.300s\" declares %llu bytes, more "
				"than an image may unpack to (lanternd --image-max %llu): refused", x->what,
				path, (unsigned long long)en->size, (unsigned long long)in->max);
	switch (en->type) {
	case '5':
		if (!path[0])
			return 0;
		pfd = image_mkdirs(x->dir, path, made_dir, x);
		if (pfd < 0)
			return pfd == -EFBIG ? pfd : refuse(x, -pfd, path, strerror(-pfd));
		close(pfd);
		return 0;
	case '0':
		if (!path[0])
			return refuse(x, EPERM, en->path, "replaces the root");
		if ((pfd = parent_of(x, path, &base)) < 0)
			return pfd == -EFBIG ? pfd : refuse(x, -pfd, path, strerror(-pfd));
		err = write_file(t, pfd, base);
		close(pfd);
		if (err == -EFBIG || err == -ECANCELED)
			return err;
		return err < 0 ? refuse(x, -err, path, strerror(-err)) : 0;
	case '1':
		if (!en->link || image_path_clean(en->link, target, sizeof(target), &why) < 0 || !target[0])
			return refuse(x, EPERM, path, "is a hard link that leaves the archive");
		return keep_link(x, path, target);
	case '2':
		if (!en->link || !link_target(path, en->link, target, sizeof(target)))
			return refuse(x, EPERM, path, "is a symlink that leaves the archive");
		return keep_link(x, path, target);
	}
	return refuse(x, EPERM, path, "is not a file, a directory or a link between the archive's files");
}

/* Links become hard links to their targets, which must be the archive's regular files. */
static int make_links(struct extract *x)
{
	for (size_t i = 0; i < x->nlinks; i++) {
		struct link *l = &x->links[i];
		struct stat st;
		char *base;
		int tfd, pfd, err = 0;

		tfd = image_openat2(x->dir, l->target, O_PATH, 0, IMAGE_RESOLVE_SOURCE);
		if (tfd < 0 || fstat(tfd, &st) < 0 || !S_ISREG(st.st_mode)) {
			if (tfd >= 0)
				close(tfd);
			return refuse(x, EPERM, l->path, "is a link to something not a file of the archive");
		}
		if ((pfd = parent_of(x, l->path, &base)) < 0) {
			close(tfd);
			return pfd == -EFBIG ? pfd : refuse(x, -pfd, l->path, strerror(-pfd));
		}
		if (linkat(tfd, "", pfd, base, AT_EMPTY_PATH) < 0)
			err = -errno;
		close(pfd);
		close(tfd);
		if (err)
			return refuse(x, -err, l->path, strerror(-err));
	}
	return 0;
}

int image_archive_extract(int dir, int fd, const char *what, const struct image_limits *lim,
			  struct lerr *e)
{
	struct extract x = { .dir = dir, .what = what, .max_entries = lim->entries, .e = e };
	const struct image_tar_entry *en;
	struct image_stream in;
	struct image_tar t;
	int r;

	e->msg[0] = '\0';
	if (image_stream_open(&in, fd, lim->image_bytes, lim->stop) < 0)
		return lerr_set(e, ENOMEM, "image: archive %s: cannot read", what);
	image_tar_init(&t, image_stream_read, &in);
	while ((r = image_tar_next(&t, &en, e)) > 0)
		if ((r = extract_entry(&x, &in, &t, en)) < 0)
			break;
	if (r == 0)
		r = make_links(&x);
	if (r < 0 && in.err == -EFBIG)
		r = lerr_set(e, EFBIG, "image: archive %s: unpacks to more than %llu bytes (lanternd --image-max): "
			     "refused", what, (unsigned long long)in.max);
	else if (r < 0 && in.err == -ECANCELED)
		r = lerr_set(e, ECANCELED, "image: archive %s: stopped: lanternd is stopping", what);
	else if (r < 0 && in.err == -EBADMSG)
		r = lerr_set(e, EBADMSG, "image: archive %s: damaged gzip stream", what);
	else if (r < 0 && strncmp(e->msg, "image:", 6)) {
		char why[sizeof(e->msg)];

		snprintf(why, sizeof(why), "%s", e->msg);
		lerr_set(e, -r, "image: archive %s: %s", what, why);
	}
	for (size_t i = 0; i < x.nlinks; i++) {
		free(x.links[i].path);
		free(x.links[i].target);
	}
	free(x.links);
	image_tar_free(&t);
	image_stream_close(&in);
	return r < 0 ? r : 0;
}
