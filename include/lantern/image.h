/* image.h: OCI images by digest on a standalone node.
 *
 * The store (lanternd's STATE/images) is content-addressed:
 *   blobs/sha256/<hex>      every blob, its sha256 checked when it enters the store
 *   index.json              the images imported: {"images":[{"name","digest","imported"}]}
 *   rootfs/<hex>/           a manifest's layers unpacked once (read-only for spawns)
 *   rootfs/<hex>.ok         written after a complete unpack
 * A spec names an image as NAME@sha256:HEX (the manifest's digest, or an index's that
 * lists a linux/amd64 manifest). Resolution re-hashes the manifest and config on every
 * spawn and every layer before it is unpacked; a tag without a digest, an unknown
 * digest or a blob whose bytes do not match its digest is refused.
 *
 * The tar reader below is ours: ustar, pax extended headers (path, linkpath, size) and
 * GNU long names and base-256 sizes; it reads through zlib's gz stream so gzip and
 * plain layers look the same. */
#ifndef LANTERN_IMAGE_H
#define LANTERN_IMAGE_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "lantern/util.h"

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
 * damaged archive (e names the reason). Unread data of the previous entry is skipped. */
int image_tar_next(struct image_tar *t, const struct image_tar_entry **out, struct lerr *e);
/* Reads data of the current entry; 0 at its end. */
ssize_t image_tar_read(struct image_tar *t, void *buf, size_t n);
void image_tar_free(struct image_tar *t);

/* Unpacks one layer (fd: tar or gzip'd tar) into root_fd, honouring OCI whiteouts
 * (.wh.NAME deletes NAME of lower layers, .wh..wh..opq empties a directory of them).
 * Paths resolve inside the root (symlinks cannot lead out of it). */
int image_unpack_layer(int root_fd, int fd, const char *what, struct lerr *e);

/* ---- the store ---- */
struct image_info {
	char digest[80];          /* sha256:<hex> of the manifest */
	char rootfs[4096];        /* unpacked, read-only for spawns */
	json_t *config;           /* the image config's "config" object (User, Env, Cmd,
				     Entrypoint, WorkingDir), owned */
};

/* Imports an OCI image layout directory, or an OCI / `docker save` tar. *out lists
 * what was imported ([{"name","digest"}]). */
int image_import(const char *store, const char *path, json_t **out, struct lerr *e);
/* [{"name","digest","imported","size","unpacked"}] */
int image_list(const char *store, json_t **out, struct lerr *e);
/* Removes an image by NAME@sha256:HEX, sha256:HEX or NAME, with the blobs and rootfs
 * no other image uses. busy(digest) says a running spawn uses it (refused then). */
int image_remove(const char *store, const char *ref, bool (*busy)(void *ctx, const char *digest),
		 void *ctx, json_t **removed, struct lerr *e);
/* Resolves NAME@sha256:HEX to a verified manifest and its unpacked root (unpacking it
 * now if needed). */
int image_resolve(const char *store, const char *ref, struct image_info *out, struct lerr *e);
void image_info_free(struct image_info *i);

/* sha256 of a file as "sha256:<hex>" (out holds 72 bytes). */
int image_sha256_file(const char *path, char out[80]);

#endif
