/* image_internal.h: what the image module's files share: the checks on an archive
 * entry's path, opening beneath a root (fs.c), the bounded gunzip stream the tar
 * reader reads through (tar.c) and the extraction of an import archive (archive.c). */
#ifndef LANTERN_IMAGE_INTERNAL_H
#define LANTERN_IMAGE_INTERNAL_H

#include <linux/openat2.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <zlib.h>

#include "lantern/image.h"

/* A root lanternd builds (a layer's target, an import's extraction directory): its
 * symlinks are the archive's, followed only inside it, never through a /proc magic
 * link or onto another mount. */
#define IMAGE_RESOLVE_BUILD (RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV)
/* A source an import reads (an OCI layout, an extracted archive): no symlink at all. */
#define IMAGE_RESOLVE_SOURCE (RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)

/* ---- fs.c ---- */

/* Normalizes an archive path into out ("a/b/c"; "" for the root): leading "/" and
 * "./", empty and "." components dropped. Returns 0, or -EPERM with *why set for a
 * ".." component, a component longer than NAME_MAX or a path longer than PATH_MAX. */
int image_path_clean(const char *in, char *out, size_t cap, const char **why);
/* openat2(root, path) with resolve flags; path "" is the root. fd or -errno. */
int image_openat2(int root, const char *path, int flags, mode_t mode, uint64_t resolve);
/* Opens the directory path beneath root (IMAGE_RESOLVE_BUILD), creating what is
 * missing (mode 0755); made(ctx, prefix) is told of each directory created, and may
 * refuse it (-errno). Returns an O_PATH directory fd or -errno. path is clean. */
int image_mkdirs(int root, const char *path, int (*made)(void *ctx, const char *prefix), void *ctx);
/* Opens path beneath a source root: a regular file of at most max bytes, O_NONBLOCK
 * (a FIFO never blocks, and is refused anyway). fd and *size, or -errno with e set. */
int image_src_open(int root, const char *path, uint64_t max, uint64_t *size, const char *what,
		   struct lerr *e);
/* The whole of such a file, NUL-terminated, malloc'd. */
int image_src_read(int root, const char *path, size_t max, char **buf, size_t *len, const char *what,
		   struct lerr *e);
/* Removes name in dir and, for a directory, everything below it, without recursion
 * and with at most a few directories open, however deep the tree. */
int image_tree_remove(int dir, const char *name);
/* Removes every entry of dir whose name starts with '.' (a crashed import's leftovers). */
void image_remove_dot_entries(int dir);

/* ---- tar.c: the bounded stream ---- */

/* gunzip (or pass-through) of a file, refusing to yield more than max bytes in all. */
struct image_stream {
	gzFile gz;
	uint64_t got, max;
	const atomic_bool *stop;
	int err;                   /* why reading stopped: -EFBIG past max, -ECANCELED, -EBADMSG */
};
int image_stream_open(struct image_stream *s, int fd, uint64_t max, const atomic_bool *stop);
ssize_t image_stream_read(void *s, void *buf, size_t n);
void image_stream_close(struct image_stream *s);

/* ---- archive.c ---- */

/* Extracts an image archive (fd, consumed) into the empty directory dir: directories
 * and regular files only (links between the archive's own files become hard links),
 * at most lim->image_bytes of stream and lim->entries entries. */
int image_archive_extract(int dir, int fd, const char *what, const struct image_limits *lim,
			  struct lerr *e);

#endif
