/* image.h: OCI images by digest on a standalone node.
 *
 * The store (lanternd's STATE/images) is content-addressed:
 *   blobs/sha256/<hex>      every blob, its sha256 checked when it enters the store
 *   index.json              the images imported: {"images":[{"name","digest","imported"}]}
 *   rootfs/<hex>/           a manifest's layers unpacked (read-only for spawns)
 *   rootfs/<hex>.ok         written after a complete unpack: the manifest and, per layer
 *                           blob, the identity (device, inode, size, times) it had then
 * A spec names an image as NAME@sha256:HEX (the manifest's digest, or an index's that
 * lists a linux/amd64 manifest). A tag without a digest, an unknown digest or a blob
 * whose bytes do not match its digest is refused.
 *
 * Everything in an image is hostile input. Import reads its source beneath the source's
 * root with no symlink followed, regular files only, never more than fstat said or a
 * bound; it unpacks the layers right away, each path resolved inside the new root, each
 * layer and the image bounded in bytes and entries (struct image_limits). Import and
 * unpack block for as long as the image is big: lanternd runs them on a worker thread.
 * A spawn only verifies (image_resolve): the manifest and config are hashed again, each
 * layer blob is compared with the identity recorded at unpack and hashed again only if
 * it changed.
 *
 * The tar reader is ours: ustar, pax extended headers (path, linkpath, size) and GNU
 * long names and base-256 sizes; it reads through zlib's gz stream so gzip and plain
 * layers look the same. */
#ifndef LANTERN_IMAGE_H
#define LANTERN_IMAGE_H

#include <jansson.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "lantern/util.h"

/* What an image may cost; past a bound the import is refused, naming the bound. */
struct image_limits {
	uint64_t layer_bytes;      /* one layer unpacked: its tar stream after gunzip */
	uint64_t image_bytes;      /* all layers of an image together; an imported archive */
	uint64_t entries;          /* files, directories and links one layer or archive makes */
	const atomic_bool *stop;   /* set: the import ends with -ECANCELED (lanternd stopping) */
};
#define IMAGE_LAYER_BYTES_DEFAULT (16ull << 30)
#define IMAGE_BYTES_DEFAULT (32ull << 30)
#define IMAGE_ENTRIES_DEFAULT 1000000ull
/* Index, manifest and config are parsed whole, on every spawn for the last two. */
#define IMAGE_JSON_MAX (4u << 20)

/* ---- tar ---- */
struct image_tar_entry {
	char *path;        /* as in the archive (pax/GNU long names applied) */
	char *link;        /* symlink or hardlink target, else NULL */
	char type;         /* '0' file, '1' hardlink, '2' symlink, '3' chr, '4' blk, '5' dir, '6' fifo */
	mode_t mode;
	uid_t uid;
	gid_t gid;
	uint64_t size;
	int64_t mtime;
	unsigned devmajor, devminor;
};

/* Reads up to n bytes: >0, 0 at the end, -errno on failure. */
typedef ssize_t (*image_tar_read_fn)(void *ctx, void *buf, size_t n);

struct image_tar {
	image_tar_read_fn rd;
	void *ctx;
	uint64_t left;     /* data bytes of the current entry not read yet */
	uint64_t pad;      /* padding after them */
	struct image_tar_entry ent;
};

void image_tar_init(struct image_tar *t, image_tar_read_fn rd, void *ctx);
/* Next entry: 1 and *out (valid until the next call), 0 at the end, -errno on a
 * damaged archive or a failed read (e names the reason). Unread data of the previous
 * entry is skipped. */
int image_tar_next(struct image_tar *t, const struct image_tar_entry **out, struct lerr *e);
/* Reads data of the current entry; 0 at its end, -errno on failure. */
ssize_t image_tar_read(struct image_tar *t, void *buf, size_t n);
void image_tar_free(struct image_tar *t);

/* Unpacks one layer (fd, consumed: tar or gzip'd tar) into root_fd, honouring OCI
 * whiteouts (.wh.NAME deletes NAME of lower layers, .wh..wh..opq empties a directory
 * of them). Every path resolves inside the root; "..", a whiteout naming no entry or
 * a whiteout used as a directory refuse the layer. Devices are not created (each
 * spawn's /dev is the runtime's). *image_left (bytes the image may still unpack) is
 * lowered by what the layer's stream took. */
int image_unpack_layer(int root_fd, int fd, const char *what, const struct image_limits *lim,
		       uint64_t *image_left, struct lerr *e);

/* Reads path of an unpacked root (rootfs) beneath it: symlinks resolve inside the
 * root, a regular file only, at most max bytes (-EFBIG past that), never blocking on
 * a FIFO. *buf is NUL-terminated, malloc'd. */
int image_root_read(const char *rootfs, const char *path, size_t max, char **buf, size_t *len);

/* ---- the store ---- */
struct image_info {
	char digest[80];          /* sha256:<hex> of the manifest */
	char rootfs[4096];        /* unpacked, read-only for spawns */
	json_t *config;           /* the image config's "config" object (User, Env, Cmd,
				     Entrypoint, WorkingDir), owned */
};

/* Imports an OCI image layout directory, or an OCI / `docker save` tar (gzip'd or
 * not), and unpacks its images. *out lists what was imported ([{"name","digest"}]).
 * Blocks for as long as the image is big. */
int image_import(const char *store, const char *path, const struct image_limits *lim, json_t **out,
		 struct lerr *e);
/* [{"name","digest","imported","size","unpacked"}] */
int image_list(const char *store, json_t **out, struct lerr *e);
/* Removes an image by NAME@sha256:HEX, sha256:HEX or NAME, with the blobs and rootfs
 * no other image uses. busy(digest) says a running spawn uses it (refused then). */
int image_remove(const char *store, const char *ref, bool (*busy)(void *ctx, const char *digest),
		 void *ctx, json_t **removed, struct lerr *e);
/* Resolves NAME@sha256:HEX to a verified manifest and its unpacked root. Never
 * unpacks: an image whose root is not complete is refused. */
int image_resolve(const char *store, const char *ref, struct image_info *out, struct lerr *e);
void image_info_free(struct image_info *i);

/* sha256 of a file as "sha256:<hex>" (out holds 72 bytes). */
int image_sha256_file(const char *path, char out[80]);

#endif
