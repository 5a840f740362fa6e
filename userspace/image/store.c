/* store.c: the node's content-addressed image store: import (OCI layout directory,
 * OCI tar, `docker save` tar) with the images' layers unpacked, list, remove, and
 * resolution of NAME@sha256:HEX to a verified manifest and its unpacked, shared root
 * filesystem.
 *
 * A blob enters the store only through store_blob, which hashes while copying and
 * keeps the file only if the bytes match the digest. What an import reads (a layout
 * directory, or an archive extracted by archive.c) is opened beneath its root with no
 * symlink followed, regular files only, and never read past the size fstat gave or a
 * bound: a manifest naming "../../etc/hostname" or a blob that is a symlink to
 * /dev/zero is refused, not stored.
 *
 * Import unpacks each image it brings (unpack.c) and records in rootfs/<hex>.ok the
 * identity each layer blob had then. A spawn's resolution never unpacks: it hashes
 * the manifest and config again, compares each layer blob with its recorded identity
 * and hashes it again only when that changed, so a blob damaged on disk after import
 * is refused, not run, and an intact store costs a few stat calls.
 *
 * Import runs on one worker thread of lanternd (runtime/oci.c): imports never overlap,
 * and removal is refused while one runs, so the temporary names below (".in-PID",
 * ".import-PID", rootfs/.HEX.PID) are never used twice at once, and any found when an
 * import starts are a crashed lanternd's leftovers. */
#include "image_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define LAYOUT_INDEX "application/vnd.oci.image.index.v1+json"
#define DOCKER_LIST "application/vnd.docker.distribution.manifest.list.v2+json"
#define OCI_MANIFEST "application/vnd.oci.image.manifest.v1+json"
#define OCI_CONFIG "application/vnd.oci.image.config.v1+json"
#define OCI_LAYER "application/vnd.oci.image.layer.v1.tar"

/* Directories every spawn mounts over; made at unpack so runtimes never have to
 * create them in the shared, read-only root. */
static const char *const mountpoints[] = { "proc", "sys", "dev", "tmp", "run", "run/lantern",
					   "run/lantern/secrets", "etc" };

static bool hex64(const char *s)
{
	size_t i;

	for (i = 0; i < 64; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return s[64] == '\0';
}

static bool digest_valid(const char *d)
{
	return d && !strncmp(d, "sha256:", 7) && hex64(d + 7);
}

static void blob_path(const char *store, const char *digest, char *out, size_t cap)
{
	snprintf(out, cap, "%s/blobs/sha256/%s", store, digest + 7);
}

static void hex_digest(const unsigned char h[32], char out[80])
{
	memcpy(out, "sha256:", 7);
	sodium_bin2hex(out + 7, 65, h, 32);
}

/* stop (may be NULL) set: -ECANCELED, so a stopping lanternd does not wait for the
 * hash of a big layer. */
static int sha256_fd(int fd, char out[80], const atomic_bool *stop)
{
	crypto_hash_sha256_state st;
	unsigned char buf[65536], h[32];
	ssize_t n;

	crypto_hash_sha256_init(&st);
	while ((n = read(fd, buf, sizeof(buf))) > 0) {
		if (stop && atomic_load(stop))
			return -ECANCELED;
		crypto_hash_sha256_update(&st, buf, (unsigned long long)n);
	}
	if (n < 0)
		return -EIO;
	crypto_hash_sha256_final(&st, h);
	hex_digest(h, out);
	return 0;
}

int image_sha256_file(const char *path, char out[80])
{
	int fd = open(path, O_RDONLY | O_CLOEXEC), err;

	if (fd < 0)
		return -errno;
	err = sha256_fd(fd, out, NULL);
	close(fd);
	return err;
}

/* Checks an open stored blob against its digest, its size when known (>= 0) and max;
 * leaves fd at its start. */
static int blob_verify_fd(int fd, const char *digest, int64_t size, uint64_t max, const atomic_bool *stop,
			  struct lerr *e)
{
	char got[80];
	struct stat st;
	int err;

	if (fstat(fd, &st) < 0)
		return lerr_set(e, errno, "image: blob %s: %s", digest, strerror(errno));
	if (size >= 0 && st.st_size != size)
		return lerr_set(e, EBADMSG, "image: blob %s is %lld bytes, its descriptor says %lld: refused",
				digest, (long long)st.st_size, (long long)size);
	if ((uint64_t)st.st_size > max)
		return lerr_set(e, EFBIG, "image: blob %s is %lld bytes, more than the %llu allowed: refused",
				digest, (long long)st.st_size, (unsigned long long)max);
	if ((err = sha256_fd(fd, got, stop)) == -ECANCELED)
		return lerr_set(e, ECANCELED, "image: blob %s: not verified: lanternd is stopping", digest);
	if (err < 0 || lseek(fd, 0, SEEK_SET) < 0)
		return lerr_set(e, EIO, "image: blob %s: cannot read", digest);
	if (strcmp(got, digest))
		return lerr_set(e, EBADMSG, "image: blob %s does not match its digest (its bytes hash to %s): refused",
				digest, got);
	return 0;
}

static int blob_open(const char *store, const char *digest, struct lerr *e)
{
	char path[4096];
	int fd;

	blob_path(store, digest, path, sizeof(path));
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 && errno == ENOENT)
		return lerr_set(e, ENOENT, "image: blob %s is not in this node's store", digest);
	if (fd < 0)
		return lerr_set(e, errno, "image: blob %s: %s", digest, strerror(errno));
	return fd;
}

static int blob_verify(const char *store, const char *digest, int64_t size, uint64_t max,
		       const atomic_bool *stop, struct lerr *e)
{
	int fd = blob_open(store, digest, e), err;

	if (fd < 0)
		return fd;
	err = blob_verify_fd(fd, digest, size, max, stop, e);
	close(fd);
	return err;
}

/* Copies size bytes of in into the store under want (or its computed digest when want
 * is NULL), hashing as it goes; keeps it only when the bytes match. */
static int store_blob_fd(const char *store, int in, uint64_t size, const char *want, char digest_out[80],
			 const char *what, const atomic_bool *stop, struct lerr *e)
{
	char tmp[4096], dst[4096], got[80];
	crypto_hash_sha256_state st;
	unsigned char buf[65536], h[32];
	uint64_t left = size;
	int out, err = 0;

	snprintf(tmp, sizeof(tmp), "%s/blobs/sha256/.in-%d", store, (int)getpid());
	out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (out < 0)
		return lerr_set(e, errno, "image: %s: %s", tmp, strerror(errno));
	crypto_hash_sha256_init(&st);
	while (left && !err) {
		ssize_t n = read(in, buf, left < sizeof(buf) ? (size_t)left : sizeof(buf));

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			err = lerr_set(e, n ? errno : EBADMSG, "image: %s: read: %s", what,
				       n ? strerror(errno) : "shorter than when it was opened");
			break;
		}
		if (stop && atomic_load(stop)) {
			err = lerr_set(e, ECANCELED, "image: %s: not stored: lanternd is stopping", what);
			break;
		}
		crypto_hash_sha256_update(&st, buf, (unsigned long long)n);
		if (write(out, buf, (size_t)n) != n)
			err = lerr_set(e, errno ? errno : EIO, "image: write %s: %s", tmp, strerror(errno));
		left -= (uint64_t)n;
	}
	if (!err && fsync(out) < 0)
		err = lerr_set(e, errno, "image: fsync %s: %s", tmp, strerror(errno));
	close(out);
	if (err) {
		unlink(tmp);
		return err;
	}
	crypto_hash_sha256_final(&st, h);
	hex_digest(h, got);
	if (want && strcmp(got, want)) {
		unlink(tmp);
		return lerr_set(e, EBADMSG, "image: %s should be %s but its bytes hash to %s: not imported",
				what, want, got);
	}
	blob_path(store, got, dst, sizeof(dst));
	if (rename(tmp, dst) < 0) {
		err = lerr_set(e, errno, "image: store %s: %s", dst, strerror(errno));
		unlink(tmp);
		return err;
	}
	snprintf(digest_out, 80, "%s", got);
	return 0;
}

/* What one import works with. */
struct import {
	const char *store;
	int src;                        /* the source's root: a layout directory or an extracted archive */
	const char *what;               /* the path given, for messages */
	const struct image_limits *lim;
	json_t *done;                   /* digests imported already: {digest: true} */
	json_t *unpack;                 /* manifests to unpack: [digest] */
	struct lerr *e;
};

/* Stores the source file at path (clean, relative to the source's root), of at most
 * max bytes, under want (or its own digest when want is NULL). */
static int store_blob(struct import *im, const char *path, const char *want, uint64_t max,
		      char digest_out[80], uint64_t *size)
{
	char what[4096 + 64];
	uint64_t sz;
	int fd, err;

	if (want && !digest_valid(want))
		return lerr_set(im->e, EINVAL, "image: %s: \"%s\" is not a sha256 digest", im->what, want);
	if (want) {
		char dst[4096];
		struct stat st;

		blob_path(im->store, want, dst, sizeof(dst));
		if (stat(dst, &st) == 0 && (uint64_t)st.st_size <= max &&
		    blob_verify(im->store, want, -1, max, im->lim->stop, NULL) == 0) {
			snprintf(digest_out, 80, "%s", want);
			if (size)
				*size = (uint64_t)st.st_size;
			return 0;
		}
	}
	snprintf(what, sizeof(what), "%s: %s", im->what, path);
	if ((fd = image_src_open(im->src, path, max, &sz, im->what, im->e)) < 0)
		return fd;
	err = store_blob_fd(im->store, fd, sz, want, digest_out, what, im->lim->stop, im->e);
	close(fd);
	if (!err && size)
		*size = sz;
	return err;
}

/* Stores a JSON document we made (docker save has no manifest) as a blob. */
static int store_json_blob(const char *store, json_t *j, char digest_out[80], struct lerr *e)
{
	char *s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS), tmp[4096];
	int err, fd;

	if (!s)
		return lerr_set(e, ENOMEM, "image: out of memory");
	snprintf(tmp, sizeof(tmp), "%s/blobs/sha256/.json-%d", store, (int)getpid());
	err = util_write_file_atomic(tmp, s, strlen(s));
	if (err < 0) {
		free(s);
		return lerr_set(e, err, "image: %s: %s", tmp, strerror(-err));
	}
	if ((fd = open(tmp, O_RDONLY | O_CLOEXEC)) < 0)
		err = lerr_set(e, errno, "image: %s: %s", tmp, strerror(errno));
	else
		err = store_blob_fd(store, fd, strlen(s), NULL, digest_out, tmp, NULL, e);
	if (fd >= 0)
		close(fd);
	free(s);
	unlink(tmp);
	return err;
}

/* A stored JSON blob (a manifest, an index, a config), at most IMAGE_JSON_MAX. */
static json_t *load_blob_json(const char *store, const char *digest, struct lerr *e)
{
	json_error_t je;
	struct stat st;
	json_t *j;
	int fd = blob_open(store, digest, e);

	if (fd < 0)
		return NULL;
	if (fstat(fd, &st) < 0 || st.st_size > IMAGE_JSON_MAX) {
		close(fd);
		lerr_set(e, EFBIG, "image: blob %s is not a JSON document of at most %u bytes", digest,
			 IMAGE_JSON_MAX);
		return NULL;
	}
	j = json_loadfd(fd, 0, &je);
	close(fd);
	if (!j)
		lerr_set(e, EBADMSG, "image: blob %s is not JSON: %s", digest, je.text);
	return j;
}

static int store_open(const char *store, struct lerr *e)
{
	char p[4096];
	int err;

	snprintf(p, sizeof(p), "%s/blobs/sha256", store);
	if ((err = util_mkdir_p(p, 0700)) < 0)
		return lerr_set(e, err, "image: store %s: %s", p, strerror(-err));
	snprintf(p, sizeof(p), "%s/rootfs", store);
	if ((err = util_mkdir_p(p, 0755)) < 0)
		return lerr_set(e, err, "image: store %s: %s", p, strerror(-err));
	return 0;
}

/* Removes what an import or unpack of a crashed lanternd left. */
static void store_sweep(const char *store)
{
	static const char *const dirs[] = { "", "/blobs/sha256", "/rootfs" };
	char p[4096];

	for (size_t i = 0; i < ARRAY_SIZE(dirs); i++) {
		int fd;

		snprintf(p, sizeof(p), "%s%s", store, dirs[i]);
		if ((fd = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) >= 0) {
			image_remove_dot_entries(fd);
			close(fd);
		}
	}
}

static json_t *index_load(const char *store)
{
	char p[4096];
	json_t *j;

	snprintf(p, sizeof(p), "%s/index.json", store);
	j = json_load_file(p, 0, NULL);
	if (!j || !json_is_array(json_object_get(j, "images"))) {
		json_decref(j);
		j = json_pack("{s:[]}", "images");
	}
	return j;
}

static int index_save(const char *store, json_t *idx, struct lerr *e)
{
	char p[4096], *s = json_dumps(idx, JSON_INDENT(1) | JSON_SORT_KEYS);
	int err;

	snprintf(p, sizeof(p), "%s/index.json", store);
	if (!s)
		return lerr_set(e, ENOMEM, "image: out of memory");
	err = util_write_file_atomic(p, s, strlen(s));
	free(s);
	return err < 0 ? lerr_set(e, err, "image: %s: %s", p, strerror(-err)) : 0;
}

static void index_add(json_t *idx, const char *name, const char *digest)
{
	json_t *imgs = json_object_get(idx, "images"), *x;
	size_t i;

	json_array_foreach(imgs, i, x) {
		if (!strcmp(json_string_value(json_object_get(x, "name")) ?: "", name) &&
		    !strcmp(json_string_value(json_object_get(x, "digest")) ?: "", digest))
			return;
	}
	json_array_append_new(imgs, json_pack("{s:s, s:s, s:I}", "name", name, "digest", digest,
					      "imported", (json_int_t)time(NULL)));
}

static bool layer_type_ok(const char *mt)
{
	return !mt || !strcmp(mt, OCI_LAYER) || !strcmp(mt, OCI_LAYER "+gzip") ||
	       !strcmp(mt, "application/vnd.oci.image.layer.nondistributable.v1.tar") ||
	       !strcmp(mt, "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip") ||
	       !strcmp(mt, "application/vnd.docker.image.rootfs.diff.tar.gzip");
}

/* Copies a manifest (and its config and layers) from an OCI layout's blob dir. */
static int import_manifest(struct import *im, const char *digest)
{
	char src[128], got[80];
	json_t *m, *layers, *l;
	const char *cd;
	size_t i;
	int err;

	if (json_object_get(im->done, digest))
		return 0;
	snprintf(src, sizeof(src), "blobs/sha256/%s", digest + 7);
	if ((err = store_blob(im, src, digest, IMAGE_JSON_MAX, got, NULL)) < 0)
		return err;
	if (!(m = load_blob_json(im->store, digest, im->e)))
		return -EBADMSG;
	layers = json_object_get(m, "layers");
	cd = json_string_value(json_object_get(json_object_get(m, "config"), "digest"));
	if (!json_is_array(layers) || !digest_valid(cd)) {
		json_decref(m);
		return lerr_set(im->e, EBADMSG, "image: %s: manifest %s has no config digest or layers",
				im->what, digest);
	}
	json_array_foreach(layers, i, l) {
		const char *d = json_string_value(json_object_get(l, "digest"));
		const char *mt = json_string_value(json_object_get(l, "mediaType"));

		if (!layer_type_ok(mt)) {
			json_decref(m);
			return lerr_set(im->e, ENOTSUP, "image: manifest %s: layer media type %s is not supported "
					"on this node (tar and gzip only)", digest, mt);
		}
		if (!digest_valid(d)) {
			json_decref(m);
			return lerr_set(im->e, EBADMSG, "image: manifest %s: layer %zu has no sha256 digest",
					digest, i);
		}
		snprintf(src, sizeof(src), "blobs/sha256/%s", d + 7);
		if ((err = store_blob(im, src, d, im->lim->layer_bytes, got, NULL)) < 0) {
			json_decref(m);
			return err;
		}
	}
	snprintf(src, sizeof(src), "blobs/sha256/%s", cd + 7);
	err = store_blob(im, src, cd, IMAGE_JSON_MAX, got, NULL);
	json_decref(m);
	if (!err) {
		json_object_set_new(im->done, digest, json_true());
		json_array_append_new(im->unpack, json_string(digest));
	}
	return err;
}

static const char *ref_name(json_t *desc)
{
	json_t *a = json_object_get(desc, "annotations");

	return json_string_value(json_object_get(a, "io.containerd.image.name")) ?:
	       json_string_value(json_object_get(a, "org.opencontainers.image.ref.name"));
}

/* A JSON document of the source. */
static json_t *src_json(struct import *im, const char *path)
{
	json_error_t je;
	char *buf;
	size_t len;
	json_t *j;

	if (image_src_read(im->src, path, IMAGE_JSON_MAX, &buf, &len, im->what, im->e) < 0)
		return NULL;
	j = json_loadb(buf, len, 0, &je);
	free(buf);
	if (!j)
		lerr_set(im->e, EBADMSG, "image: %s: %s is not JSON: %s", im->what, path, je.text);
	return j;
}

/* Whether the source has path (as anything: what it is is checked when it is read). */
static bool src_has(struct import *im, const char *path)
{
	int fd = image_openat2(im->src, path, O_PATH | O_NOFOLLOW, 0, IMAGE_RESOLVE_SOURCE);

	if (fd >= 0)
		close(fd);
	return fd >= 0 || fd == -ELOOP;
}

/* An OCI image layout: oci-layout, index.json, blobs/sha256. */
static int import_layout(struct import *im, const char *dflt_name, json_t *idx, json_t *out)
{
	json_t *index, *mans, *m;
	size_t i;
	int err = 0;

	if (!(index = src_json(im, "index.json")))
		return -EBADMSG;
	mans = json_object_get(index, "manifests");
	if (!json_is_array(mans) || !json_array_size(mans)) {
		json_decref(index);
		return lerr_set(im->e, EBADMSG, "image: %s: index.json lists no manifests", im->what);
	}
	json_array_foreach(mans, i, m) {
		const char *d = json_string_value(json_object_get(m, "digest"));
		const char *mt = json_string_value(json_object_get(m, "mediaType")) ?: OCI_MANIFEST;
		const char *name = ref_name(m) ?: dflt_name;
		char got[80], p[128];

		if (!digest_valid(d)) {
			err = lerr_set(im->e, EBADMSG, "image: %s: manifest digest \"%.80s\" is not sha256",
				       im->what, d ? d : "");
			break;
		}
		if (!strcmp(mt, LAYOUT_INDEX) || !strcmp(mt, DOCKER_LIST)) {
			/* a multi-platform image: keep the index and its linux/amd64 manifests */
			json_t *sub, *sm;
			size_t k;

			snprintf(p, sizeof(p), "blobs/sha256/%s", d + 7);
			if ((err = store_blob(im, p, d, IMAGE_JSON_MAX, got, NULL)) < 0)
				break;
			if (!(sub = load_blob_json(im->store, d, im->e))) {
				err = -EBADMSG;
				break;
			}
			json_array_foreach(json_object_get(sub, "manifests"), k, sm) {
				json_t *pl = json_object_get(sm, "platform");
				const char *os = json_string_value(json_object_get(pl, "os"));
				const char *arch = json_string_value(json_object_get(pl, "architecture"));
				const char *sd = json_string_value(json_object_get(sm, "digest"));

				if (os && arch && (strcmp(os, "linux") || strcmp(arch, "amd64")))
					continue;
				if (!digest_valid(sd)) {
					err = lerr_set(im->e, EBADMSG, "image: %s: index %s lists a manifest "
						       "without a sha256 digest", im->what, d);
					break;
				}
				if ((err = import_manifest(im, sd)) < 0)
					break;
			}
			json_decref(sub);
			if (err)
				break;
		} else if ((err = import_manifest(im, d)) < 0) {
			break;
		}
		index_add(idx, name, d);
		json_array_append_new(out, json_pack("{s:s, s:s}", "name", name, "digest", d));
	}
	json_decref(index);
	return err;
}

/* A path of a docker save manifest, checked: relative, no "..", something. */
static int docker_path(struct import *im, const char *field, const char *in, char *out, size_t cap)
{
	const char *why = "is empty";

	if (!in || image_path_clean(in, out, cap, &why) < 0 || !out[0])
		return lerr_set(im->e, EPERM, "image: %s: manifest.json %s \"%.200s\" %s: refused", im->what,
				field, in ? in : "", in ? why : "is missing");
	return 0;
}

/* `docker save` (before Docker 25): manifest.json with Config, RepoTags, Layers
 * (plain tars). There is no manifest: one is made, canonical (sorted, compact), so
 * the same image always gets the same digest. */
static int import_docker(struct import *im, const char *dflt_name, json_t *idx, json_t *out)
{
	json_t *dm, *ent;
	size_t i;
	int err = 0;

	if (!(dm = src_json(im, "manifest.json")))
		return -EBADMSG;
	if (!json_is_array(dm)) {
		json_decref(dm);
		return lerr_set(im->e, EBADMSG, "image: %s: manifest.json is not a docker save manifest", im->what);
	}
	json_array_foreach(dm, i, ent) {
		json_t *layers = json_object_get(ent, "Layers"), *l, *man, *ldescs;
		const char *name = json_string_value(json_array_get(json_object_get(ent, "RepoTags"), 0))
				   ?: dflt_name;
		char cfgd[80], mand[80], p[PATH_MAX];
		uint64_t csize;
		size_t k;

		if (!json_is_array(layers)) {
			err = lerr_set(im->e, EBADMSG, "image: %s: manifest.json entry %zu has no Layers", im->what, i);
			break;
		}
		if ((err = docker_path(im, "Config", json_string_value(json_object_get(ent, "Config")), p,
				       sizeof(p))) < 0 ||
		    (err = store_blob(im, p, NULL, IMAGE_JSON_MAX, cfgd, &csize)) < 0)
			break;
		ldescs = json_array();
		man = json_pack("{s:i, s:s, s:{s:s, s:s, s:I}, s:o}", "schemaVersion", 2, "mediaType",
				OCI_MANIFEST, "config", "mediaType", OCI_CONFIG, "digest", cfgd, "size",
				(json_int_t)csize, "layers", ldescs);
		json_array_foreach(layers, k, l) {
			char ld[80], field[32];
			uint64_t lsize;

			snprintf(field, sizeof(field), "Layers[%zu]", k);
			if ((err = docker_path(im, field, json_string_value(l), p, sizeof(p))) < 0 ||
			    (err = store_blob(im, p, NULL, im->lim->layer_bytes, ld, &lsize)) < 0)
				break;
			json_array_append_new(ldescs, json_pack("{s:s, s:s, s:I}", "mediaType", OCI_LAYER,
								"digest", ld, "size", (json_int_t)lsize));
		}
		if (!err)
			err = store_json_blob(im->store, man, mand, im->e);
		json_decref(man);
		if (err)
			break;
		if (!json_object_get(im->done, mand)) {
			json_object_set_new(im->done, mand, json_true());
			json_array_append_new(im->unpack, json_string(mand));
		}
		index_add(idx, name, mand);
		json_array_append_new(out, json_pack("{s:s, s:s}", "name", name, "digest", mand));
	}
	json_decref(dm);
	return err;
}

/* ---- unpacked roots ---- */

/* What identifies a layer blob's file: replaced or written to, it changes. */
static void blob_identity(const struct stat *st, char *out, size_t cap)
{
	snprintf(out, cap, "%llu:%llu:%lld:%lld.%09ld:%lld.%09ld", (unsigned long long)st->st_dev,
		 (unsigned long long)st->st_ino, (long long)st->st_size, (long long)st->st_mtim.tv_sec,
		 st->st_mtim.tv_nsec, (long long)st->st_ctim.tv_sec, st->st_ctim.tv_nsec);
}

/* rootfs/<hex>.ok of a complete unpack of digest, or NULL. A lanternd before issue 13
 * wrote the digest alone there: its root is complete, its layers' identities unknown
 * ("legacy": an import records them). */
static json_t *ok_load(const char *store, const char *digest)
{
	char p[4096], *txt = NULL;
	json_t *ok;

	snprintf(p, sizeof(p), "%s/rootfs/%s.ok", store, digest + 7);
	if (util_read_file(p, &txt, NULL) < 0)
		return NULL;
	if (!strcmp(txt, digest)) {
		free(txt);
		return json_pack("{s:s, s:{}, s:b}", "manifest", digest, "layers", "legacy", 1);
	}
	ok = json_loads(txt, 0, NULL);
	free(txt);
	if (ok && (strcmp(json_string_value(json_object_get(ok, "manifest")) ?: "", digest) ||
		   !json_is_object(json_object_get(ok, "layers")))) {
		json_decref(ok);
		ok = NULL;
	}
	return ok;
}

static int ok_save(const char *store, const char *digest, json_t *ok, struct lerr *e)
{
	char p[4096], *s = json_dumps(ok, JSON_COMPACT | JSON_SORT_KEYS);
	int err;

	snprintf(p, sizeof(p), "%s/rootfs/%s.ok", store, digest + 7);
	err = s ? util_write_file_atomic(p, s, strlen(s)) : -ENOMEM;
	free(s);
	return err < 0 ? lerr_set(e, -err, "image: %s: %s", p, strerror(-err)) : 0;
}

/* Checks each layer blob of m against the identity ok recorded; one that changed is
 * hashed again and, if changed is given, its new identity recorded in ok (*changed). */
static int layers_check(const char *store, json_t *m, json_t *ok, bool *changed, const atomic_bool *stop,
			struct lerr *e)
{
	json_t *ids = json_object_get(ok, "layers"), *l;
	size_t i;

	json_array_foreach(json_object_get(m, "layers"), i, l) {
		const char *d = json_string_value(json_object_get(l, "digest"));
		json_t *sz = json_object_get(l, "size");
		char id[128];
		struct stat st;
		int fd, err;

		if (!digest_valid(d))
			return lerr_set(e, EBADMSG, "image: manifest layer %zu has no sha256 digest", i);
		if ((fd = blob_open(store, d, e)) < 0)
			return fd;
		if (fstat(fd, &st) < 0) {
			err = lerr_set(e, errno, "image: blob %s: %s", d, strerror(errno));
			close(fd);
			return err;
		}
		blob_identity(&st, id, sizeof(id));
		if (!strcmp(json_string_value(json_object_get(ids, d)) ?: "", id)) {
			close(fd);
			continue;
		}
		err = blob_verify_fd(fd, d, json_is_integer(sz) ? json_integer_value(sz) : -1, UINT64_MAX, stop, e);
		close(fd);
		if (err < 0)
			return err;
		if (changed) {
			json_object_set_new(ids, d, json_string(id));
			*changed = true;
		}
	}
	return 0;
}

/* Unpacks the manifest's layers into rootfs/<hex> (through a temporary directory,
 * renamed when complete), verifying each layer right before it is used, then writes
 * rootfs/<hex>.ok. */
static int unpack(struct import *im, const char *digest, json_t *m)
{
	char tmp[128], hex[72];
	const char *store = im->store;
	struct lerr *e = im->e;
	uint64_t image_left = im->lim->image_bytes;
	json_t *l, *ok = json_pack("{s:s, s:{}}", "manifest", digest, "layers");
	size_t i;
	int dir, root = -1, err = 0;
	char p[4096];

	snprintf(hex, sizeof(hex), "%s", digest + 7);
	snprintf(tmp, sizeof(tmp), ".%s.%d", hex, (int)getpid());
	snprintf(p, sizeof(p), "%s/rootfs", store);
	if ((dir = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
		json_decref(ok);
		return lerr_set(e, errno, "image: %s: %s", p, strerror(errno));
	}
	/* a root without its .ok is an unpack that did not finish: no spawn uses it */
	image_tree_remove(dir, tmp);
	image_tree_remove(dir, hex);
	if (mkdirat(dir, tmp, 0700) < 0 || (root = openat(dir, tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
		err = lerr_set(e, errno, "image: %s/%s: %s", p, tmp, strerror(errno));
		goto out;
	}
	json_array_foreach(json_object_get(m, "layers"), i, l) {
		const char *d = json_string_value(json_object_get(l, "digest"));
		const char *mt = json_string_value(json_object_get(l, "mediaType"));
		json_t *sz = json_object_get(l, "size");
		char what[120], id[128];
		struct stat st;
		int fd;

		if (!digest_valid(d)) {
			err = lerr_set(e, EBADMSG, "image: manifest %s: layer %zu has no sha256 digest", digest, i);
			break;
		}
		if (!layer_type_ok(mt)) {
			err = lerr_set(e, ENOTSUP, "image: manifest %s: layer media type %s is not supported",
				       digest, mt);
			break;
		}
		if ((fd = blob_open(store, d, e)) < 0) {
			err = fd;
			break;
		}
		if ((err = blob_verify_fd(fd, d, json_is_integer(sz) ? json_integer_value(sz) : -1,
					  im->lim->layer_bytes, im->lim->stop, e)) < 0 || fstat(fd, &st) < 0) {
			err = err ? err : lerr_set(e, errno, "image: blob %s: %s", d, strerror(errno));
			close(fd);
			break;
		}
		blob_identity(&st, id, sizeof(id));
		json_object_set_new(json_object_get(ok, "layers"), d, json_string(id));
		snprintf(what, sizeof(what), "layer %s", d);
		if ((err = image_unpack_layer(root, fd, what, im->lim, &image_left, e)) < 0)
			break;
	}
	for (i = 0; !err && i < ARRAY_SIZE(mountpoints); i++) {
		/* whatever the image has there, its runtime mounts over it */
		int fd = image_openat2(root, mountpoints[i], O_PATH | O_NOFOLLOW, 0, IMAGE_RESOLVE_BUILD);

		if (fd == -ENOENT)
			fd = image_mkdirs(root, mountpoints[i], NULL, NULL);
		if (fd < 0)
			err = lerr_set(e, -fd, "image: %s: mount point /%s: %s", digest, mountpoints[i],
				       fd == -ELOOP ? "under a symlink to nothing in the image" : strerror(-fd));
		else
			close(fd);
	}
	if (!err && fchmod(root, 0755) < 0)
		err = lerr_set(e, errno, "image: %s/%s: %s", p, tmp, strerror(errno));
	if (!err && renameat(dir, tmp, dir, hex) < 0)
		err = lerr_set(e, errno, "image: %s/%s: %s", p, hex, strerror(errno));
	if (!err)
		err = ok_save(store, digest, ok, e);
out:
	if (root >= 0)
		close(root);
	if (err)
		image_tree_remove(dir, tmp);
	close(dir);
	json_decref(ok);
	return err;
}

/* The manifest a spec's digest means: itself, or an index's linux/amd64 manifest
 * (*digest updated). Both are verified. */
static json_t *pick_manifest(const char *store, const char *ref, char digest[80], struct lerr *e)
{
	const char *mt;
	json_t *m;

	if (blob_verify(store, digest, -1, IMAGE_JSON_MAX, NULL, e) < 0 || !(m = load_blob_json(store, digest, e)))
		return NULL;
	mt = json_string_value(json_object_get(m, "mediaType")) ?: "";
	if (!strcmp(mt, LAYOUT_INDEX) || !strcmp(mt, DOCKER_LIST) || json_object_get(m, "manifests")) {
		json_t *sm;
		size_t i;
		const char *pick = NULL;

		json_array_foreach(json_object_get(m, "manifests"), i, sm) {
			json_t *pl = json_object_get(sm, "platform");
			if (!strcmp(json_string_value(json_object_get(pl, "os")) ?: "linux", "linux") &&
			    !strcmp(json_string_value(json_object_get(pl, "architecture")) ?: "amd64", "amd64")) {
				pick = json_string_value(json_object_get(sm, "digest"));
				break;
			}
		}
		if (!digest_valid(pick)) {
			json_decref(m);
			lerr_set(e, ENOENT, "image \"%s\": refused: the index lists no linux/amd64 manifest", ref);
			return NULL;
		}
		snprintf(digest, 80, "%s", pick);
		json_decref(m);
		if (blob_verify(store, digest, -1, IMAGE_JSON_MAX, NULL, e) < 0 ||
		    !(m = load_blob_json(store, digest, e)))
			return NULL;
	}
	return m;
}

/* Unpacks a manifest imported now, unless a complete root of it is there already
 * (then its layers' recorded identities are brought up to date). */
static int ensure_unpacked(struct import *im, const char *digest)
{
	json_t *m = load_blob_json(im->store, digest, im->e), *ok;
	bool changed = false;
	int err;

	if (!m)
		return -EBADMSG;
	if ((ok = ok_load(im->store, digest))) {
		changed = json_object_del(ok, "legacy") == 0;
		err = layers_check(im->store, m, ok, &changed, im->lim->stop, im->e);
		if (!err && changed)
			err = ok_save(im->store, digest, ok, im->e);
		json_decref(ok);
	} else {
		err = unpack(im, digest, m);
	}
	json_decref(m);
	return err;
}

static void store_gc(const char *store, json_t *imgs);

int image_import(const char *store, const char *path, const struct image_limits *lim, json_t **out,
		 struct lerr *e)
{
	struct import im = { .store = store, .src = -1, .what = path, .lim = lim, .e = e };
	char tmp[4096] = "", dflt[256];
	const char *base = strrchr(path, '/');
	json_t *idx = NULL, *res = json_array(), *x;
	struct stat st;
	size_t i;
	int fd, err;

	*out = NULL;
	im.done = json_object();
	im.unpack = json_array();
	if ((err = store_open(store, e)) < 0)
		goto done;
	store_sweep(store);
	/* images without a name annotation are named after the file they came in */
	snprintf(dflt, sizeof(dflt), "%s", base ? base + 1 : path);
	if (strchr(dflt, '.'))
		*strchr(dflt, '.') = '\0';
	fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0) {
		err = lerr_set(e, errno, "image: import %s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		goto done;
	}
	if (S_ISDIR(st.st_mode)) {
		im.src = fd;
	} else if (S_ISREG(st.st_mode)) {
		snprintf(tmp, sizeof(tmp), "%s/.import-%d", store, (int)getpid());
		if (mkdir(tmp, 0700) < 0 || (im.src = open(tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
			err = lerr_set(e, errno, "image: import %s: %s: %s", path, tmp, strerror(errno));
			close(fd);
			goto done;
		}
		if ((err = image_archive_extract(im.src, fd, path, lim, e)) < 0)
			goto done;
	} else {
		close(fd);
		err = lerr_set(e, EPERM, "image: import %s: not a directory or a regular file: refused", path);
		goto done;
	}
	idx = index_load(store);
	if (src_has(&im, "index.json")) {
		if (!src_has(&im, "oci-layout"))
			err = lerr_set(e, EBADMSG, "image: %s: index.json without oci-layout: not an OCI layout", path);
		else
			err = import_layout(&im, dflt, idx, res);
	} else if (src_has(&im, "manifest.json")) {
		err = import_docker(&im, dflt, idx, res);
	} else {
		err = lerr_set(e, EBADMSG, "image: %s is neither an OCI layout (index.json, oci-layout) "
			       "nor a docker save archive (manifest.json)", path);
	}
	json_array_foreach(im.unpack, i, x)
		if (!err)
			err = ensure_unpacked(&im, json_string_value(x));
	if (!err) {
		err = index_save(store, idx, e);
	} else {
		/* what this import stored is nobody's */
		json_t *saved = index_load(store);

		store_gc(store, json_object_get(saved, "images"));
		json_decref(saved);
	}
done:
	if (im.src >= 0)
		close(im.src);
	if (tmp[0]) {
		int sfd = open(store, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

		if (sfd >= 0) {
			image_tree_remove(sfd, strrchr(tmp, '/') + 1);
			close(sfd);
		}
	}
	json_decref(idx);
	json_decref(im.done);
	json_decref(im.unpack);
	if (err) {
		json_decref(res);
		return err;
	}
	*out = res;
	return 0;
}

static bool rootfs_ready(const char *store, const char *digest)
{
	json_t *ok = ok_load(store, digest);

	json_decref(ok);
	return ok != NULL;
}

static int64_t manifest_size(const char *store, const char *digest)
{
	json_t *m = load_blob_json(store, digest, NULL), *l;
	int64_t total = 0;
	size_t i;
	char p[4096];
	struct stat st;

	blob_path(store, digest, p, sizeof(p));
	if (stat(p, &st) == 0)
		total += st.st_size;
	total += json_integer_value(json_object_get(json_object_get(m, "config"), "size"));
	json_array_foreach(json_object_get(m, "layers"), i, l)
		total += json_integer_value(json_object_get(l, "size"));
	json_decref(m);
	return total;
}

int image_list(const char *store, json_t **out, struct lerr *e)
{
	json_t *idx = index_load(store), *arr = json_array(), *x;
	size_t i;

	json_array_foreach(json_object_get(idx, "images"), i, x) {
		const char *d = json_string_value(json_object_get(x, "digest")) ?: "";
		json_t *c = json_deep_copy(x);

		if (digest_valid(d)) {
			char md[80];
			json_t *m;

			snprintf(md, sizeof(md), "%s", d);
			/* an index's root is its linux/amd64 manifest's */
			m = pick_manifest(store, d, md, NULL);
			json_decref(m);
			json_object_set_new(c, "size", json_integer(manifest_size(store, d)));
			json_object_set_new(c, "unpacked", json_boolean(m && rootfs_ready(store, md)));
		}
		json_array_append_new(arr, c);
	}
	json_decref(idx);
	*out = arr;
	return 0;
}

/* Adds the blobs a manifest (or index) references, itself included, to keep. */
static void mark_blobs(const char *store, const char *digest, json_t *keep, int depth)
{
	json_t *m, *x;
	size_t i;

	if (!digest_valid(digest) || depth > 2)
		return;
	json_object_set_new(keep, digest + 7, json_true());
	if (!(m = load_blob_json(store, digest, NULL)))
		return;
	json_array_foreach(json_object_get(m, "manifests"), i, x)
		mark_blobs(store, json_string_value(json_object_get(x, "digest")), keep, depth + 1);
	x = json_object_get(json_object_get(m, "config"), "digest");
	if (digest_valid(json_string_value(x)))
		json_object_set_new(keep, json_string_value(x) + 7, json_true());
	json_array_foreach(json_object_get(m, "layers"), i, x) {
		const char *d = json_string_value(json_object_get(x, "digest"));
		if (digest_valid(d))
			json_object_set_new(keep, d + 7, json_true());
	}
	json_decref(m);
}

/* Removes the blobs and unpacked roots no image of imgs references. */
static void store_gc(const char *store, json_t *imgs)
{
	json_t *keep = json_object(), *x;
	struct dirent *de;
	char p[4096];
	size_t i;
	DIR *d;

	json_array_foreach(imgs, i, x)
		mark_blobs(store, json_string_value(json_object_get(x, "digest")), keep, 0);
	snprintf(p, sizeof(p), "%s/blobs/sha256", store);
	if ((d = opendir(p))) {
		while ((de = readdir(d))) {
			if (de->d_name[0] == '.' || json_object_get(keep, de->d_name))
				continue;
			unlinkat(dirfd(d), de->d_name, 0);
		}
		closedir(d);
	}
	snprintf(p, sizeof(p), "%s/rootfs", store);
	if ((d = opendir(p))) {
		while ((de = readdir(d))) {
			char name[80];

			if (de->d_name[0] == '.')
				continue;
			snprintf(name, sizeof(name), "%.64s", de->d_name);
			if (!json_object_get(keep, name))
				image_tree_remove(dirfd(d), de->d_name);
		}
		closedir(d);
	}
	json_decref(keep);
}

static bool ref_matches(json_t *img, const char *ref)
{
	const char *name = json_string_value(json_object_get(img, "name")) ?: "";
	const char *digest = json_string_value(json_object_get(img, "digest")) ?: "";
	const char *at = strchr(ref, '@');

	if (at)
		return !strcmp(at + 1, digest) && (size_t)(at - ref) == strlen(name) &&
		       !strncmp(ref, name, (size_t)(at - ref));
	if (!strncmp(ref, "sha256:", 7))
		return !strcmp(ref, digest);
	return !strcmp(ref, name);
}

int image_remove(const char *store, const char *ref, bool (*busy)(void *ctx, const char *digest),
		 void *ctx, json_t **removed, struct lerr *e)
{
	json_t *idx = index_load(store), *imgs = json_object_get(idx, "images"), *gone, *x;
	size_t i;
	int err;

	gone = json_array();
	for (i = 0; i < json_array_size(imgs);) {
		x = json_array_get(imgs, i);
		if (!ref_matches(x, ref)) {
			i++;
			continue;
		}
		if (busy && busy(ctx, json_string_value(json_object_get(x, "digest")))) {
			err = lerr_set(e, EBUSY, "image: %s is used by a running spawn: not removed", ref);
			json_decref(gone);
			json_decref(idx);
			return err;
		}
		json_array_append(gone, x);
		json_array_remove(imgs, i);
	}
	if (!json_array_size(gone)) {
		json_decref(gone);
		json_decref(idx);
		return lerr_set(e, ENOENT, "image: no image \"%s\" in this node's store", ref);
	}
	if ((err = index_save(store, idx, e)) < 0) {
		json_decref(gone);
		json_decref(idx);
		return err;
	}
	store_gc(store, imgs);
	json_decref(idx);
	*removed = gone;
	return 0;
}

void image_info_free(struct image_info *i)
{
	json_decref(i->config);
	i->config = NULL;
}

int image_resolve(const char *store, const char *ref, struct image_info *out, struct lerr *e)
{
	const char *at = strchr(ref, '@');
	char digest[80];
	json_t *m = NULL, *cfg = NULL, *ok;
	const char *cd;
	int err;

	memset(out, 0, sizeof(*out));
	if (!at || strncmp(at + 1, "sha256:", 7))
		return lerr_set(e, EPERM, "image \"%s\": refused: a tag is not a pin; name the image by "
				"digest as NAME@sha256:HEX (lantern image ls shows the digests on this node)", ref);
	if (!digest_valid(at + 1))
		return lerr_set(e, EINVAL, "image \"%s\": refused: \"%s\" is not a sha256 digest of 64 "
				"lowercase hex digits", ref, at + 1);
	snprintf(digest, sizeof(digest), "%s", at + 1);
	if (!(m = pick_manifest(store, ref, digest, e))) {
		if (!strncmp(e->msg, "image: blob ", 12) && strstr(e->msg, "is not in this node's store"))
			return lerr_set(e, ENOENT, "image \"%s\": refused: digest %s is not in this node's store "
					"(a standalone node does not pull: lantern image import it first)", ref, digest);
		return -EBADMSG;
	}
	cd = json_string_value(json_object_get(json_object_get(m, "config"), "digest"));
	if (!digest_valid(cd)) {
		json_decref(m);
		return lerr_set(e, EBADMSG, "image \"%s\": refused: manifest %s has no config digest", ref, digest);
	}
	if ((err = blob_verify(store, cd, -1, IMAGE_JSON_MAX, NULL, e)) < 0 || !(cfg = load_blob_json(store, cd, e))) {
		json_decref(m);
		return err ? err : -EBADMSG;
	}
	if (!(ok = ok_load(store, digest)) || json_is_true(json_object_get(ok, "legacy"))) {
		json_decref(ok);
		json_decref(m);
		json_decref(cfg);
		return lerr_set(e, ENOENT, "image \"%s\": refused: its root filesystem is not unpacked on this "
				"node, or was by an older lanternd that did not record its layers: lantern image "
				"import it again", ref);
	}
	/* on the event loop: a layer is hashed again only when its file changed since
	 * the unpack (damage, or a re-import that replaced it) */
	err = layers_check(store, m, ok, NULL, NULL, e);
	json_decref(ok);
	json_decref(m);
	if (err < 0) {
		json_decref(cfg);
		return err;
	}
	snprintf(out->digest, sizeof(out->digest), "%s", digest);
	snprintf(out->rootfs, sizeof(out->rootfs), "%s/rootfs/%s", store, digest + 7);
	out->config = json_incref(json_object_get(cfg, "config")) ?: json_object();
	json_decref(cfg);
	return 0;
}
