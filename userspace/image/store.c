/* store.c: the node's content-addressed image store: import (OCI layout directory,
 * OCI tar, `docker save` tar), list, remove, and resolution of NAME@sha256:HEX to a
 * verified manifest and its unpacked, shared root filesystem.
 *
 * A blob enters the store only through store_blob, which hashes while copying and
 * keeps the file only if the bytes match the digest. Resolution hashes the manifest
 * and config again on every spawn and each layer again right before unpacking it, so
 * a blob damaged on disk after import is refused, not run. */
#include "lantern/image.h"

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

int image_sha256_file(const char *path, char out[80])
{
	crypto_hash_sha256_state st;
	unsigned char buf[65536], h[32];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -errno;
	crypto_hash_sha256_init(&st);
	while ((n = read(fd, buf, sizeof(buf))) > 0)
		crypto_hash_sha256_update(&st, buf, (unsigned long long)n);
	close(fd);
	if (n < 0)
		return -EIO;
	crypto_hash_sha256_final(&st, h);
	hex_digest(h, out);
	return 0;
}

/* Checks a stored blob against its digest (and size when known, >= 0). */
static int blob_verify(const char *store, const char *digest, int64_t size, struct lerr *e)
{
	char path[4096], got[80];
	struct stat st;
	int err;

	blob_path(store, digest, path, sizeof(path));
	if (stat(path, &st) < 0)
		return lerr_set(e, ENOENT, "image: blob %s is not in this node's store", digest);
	if (size >= 0 && st.st_size != size)
		return lerr_set(e, EBADMSG, "image: blob %s is %lld bytes, its descriptor says %lld: refused",
				digest, (long long)st.st_size, (long long)size);
	if ((err = image_sha256_file(path, got)) < 0)
		return lerr_set(e, err, "image: blob %s: %s", digest, strerror(-err));
	if (strcmp(got, digest))
		return lerr_set(e, EBADMSG, "image: blob %s does not match its digest (its bytes hash to %s): refused",
				digest, got);
	return 0;
}

/* Copies src into the store under want (or its computed digest when want is NULL),
 * hashing as it goes; keeps it only when the bytes match. digest_out gets the digest. */
static int store_blob(const char *store, const char *src, const char *want, char digest_out[80],
		      struct lerr *e)
{
	char tmp[4096], dst[4096], got[80];
	crypto_hash_sha256_state st;
	unsigned char buf[65536], h[32];
	int in, out, err = 0;
	ssize_t n;

	if (want && !digest_valid(want))
		return lerr_set(e, EINVAL, "image: \"%s\" is not a sha256 digest", want);
	if (want) {
		blob_path(store, want, dst, sizeof(dst));
		if (access(dst, F_OK) == 0 && blob_verify(store, want, -1, NULL) == 0) {
			snprintf(digest_out, 80, "%s", want);
			return 0;
		}
	}
	in = open(src, O_RDONLY | O_CLOEXEC);
	if (in < 0)
		return lerr_set(e, errno, "image: blob %s: %s", src, strerror(errno));
	snprintf(tmp, sizeof(tmp), "%s/blobs/sha256/.in-%d", store, (int)getpid());
	out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (out < 0) {
		err = lerr_set(e, errno, "image: %s: %s", tmp, strerror(errno));
		close(in);
		return err;
	}
	crypto_hash_sha256_init(&st);
	while ((n = read(in, buf, sizeof(buf))) > 0) {
		crypto_hash_sha256_update(&st, buf, (unsigned long long)n);
		if (write(out, buf, (size_t)n) != n) {
			err = lerr_set(e, errno ? errno : EIO, "image: write %s: %s", tmp, strerror(errno));
			break;
		}
	}
	if (n < 0 && !err)
		err = lerr_set(e, errno, "image: read %s: %s", src, strerror(errno));
	close(in);
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
				src, want, got);
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

/* Stores a JSON document we made (docker save has no manifest) as a blob. */
static int store_json_blob(const char *store, json_t *j, char digest_out[80], int64_t *size,
			   struct lerr *e)
{
	char *s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS), tmp[4096];
	int err;

	if (!s)
		return lerr_set(e, ENOMEM, "image: out of memory");
	snprintf(tmp, sizeof(tmp), "%s/blobs/sha256/.json-%d", store, (int)getpid());
	err = util_write_file_atomic(tmp, s, strlen(s));
	*size = (int64_t)strlen(s);
	free(s);
	if (err < 0)
		return lerr_set(e, err, "image: %s: %s", tmp, strerror(-err));
	err = store_blob(store, tmp, NULL, digest_out, e);
	unlink(tmp);
	return err;
}

static json_t *load_blob_json(const char *store, const char *digest, struct lerr *e)
{
	char path[4096];
	json_error_t je;
	json_t *j;

	blob_path(store, digest, path, sizeof(path));
	j = json_load_file(path, 0, &je);
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
static int import_manifest(const char *store, const char *blobs, const char *digest, struct lerr *e)
{
	char src[4096], got[80];
	json_t *m, *layers, *l;
	size_t i;
	int err;

	snprintf(src, sizeof(src), "%s/sha256/%s", blobs, digest + 7);
	if ((err = store_blob(store, src, digest, got, e)) < 0)
		return err;
	if (!(m = load_blob_json(store, digest, e)))
		return -EBADMSG;
	layers = json_object_get(m, "layers");
	if (!json_is_array(layers) || !json_is_object(json_object_get(m, "config"))) {
		json_decref(m);
		return lerr_set(e, EBADMSG, "image: manifest %s has no config or layers", digest);
	}
	json_array_foreach(layers, i, l) {
		const char *d = json_string_value(json_object_get(l, "digest"));
		const char *mt = json_string_value(json_object_get(l, "mediaType"));

		if (!layer_type_ok(mt)) {
			json_decref(m);
			return lerr_set(e, ENOTSUP, "image: manifest %s: layer media type %s is not supported "
					"on this node (tar and gzip only)", digest, mt);
		}
		snprintf(src, sizeof(src), "%s/sha256/%s", blobs, d && strlen(d) > 7 ? d + 7 : "");
		if ((err = store_blob(store, src, d, got, e)) < 0) {
			json_decref(m);
			return err;
		}
	}
	{
		const char *d = json_string_value(json_object_get(json_object_get(m, "config"), "digest"));
		snprintf(src, sizeof(src), "%s/sha256/%s", blobs, d && strlen(d) > 7 ? d + 7 : "");
		err = store_blob(store, src, d, got, e);
	}
	json_decref(m);
	return err;
}

static const char *ref_name(json_t *desc)
{
	json_t *a = json_object_get(desc, "annotations");

	return json_string_value(json_object_get(a, "io.containerd.image.name")) ?:
	       json_string_value(json_object_get(a, "org.opencontainers.image.ref.name"));
}

/* An OCI image layout: oci-layout, index.json, blobs/sha256. */
static int import_layout(const char *store, const char *dir, const char *dflt_name, json_t *idx,
			 json_t *out, struct lerr *e)
{
	char p[4096], blobs[4096];
	json_t *index, *mans, *m;
	size_t i;
	int err = 0;

	snprintf(p, sizeof(p), "%s/index.json", dir);
	snprintf(blobs, sizeof(blobs), "%s/blobs", dir);
	index = json_load_file(p, 0, NULL);
	mans = json_object_get(index, "manifests");
	if (!json_is_array(mans) || !json_array_size(mans)) {
		json_decref(index);
		return lerr_set(e, EBADMSG, "image: %s: index.json lists no manifests", dir);
	}
	json_array_foreach(mans, i, m) {
		const char *d = json_string_value(json_object_get(m, "digest"));
		const char *mt = json_string_value(json_object_get(m, "mediaType")) ?: OCI_MANIFEST;
		const char *name = ref_name(m) ?: dflt_name;
		char got[80];

		if (!digest_valid(d)) {
			err = lerr_set(e, EBADMSG, "image: %s: manifest digest \"%s\" is not sha256", dir,
				       d ? d : "");
			break;
		}
		if (!strcmp(mt, LAYOUT_INDEX) || !strcmp(mt, DOCKER_LIST)) {
			/* a multi-platform image: keep the index and its linux/amd64 manifests */
			json_t *sub, *sm;
			size_t k;

			snprintf(p, sizeof(p), "%s/sha256/%s", blobs, d + 7);
			if ((err = store_blob(store, p, d, got, e)) < 0 || !(sub = load_blob_json(store, d, e))) {
				err = err ? err : -EBADMSG;
				break;
			}
			json_array_foreach(json_object_get(sub, "manifests"), k, sm) {
				json_t *pl = json_object_get(sm, "platform");
				const char *os = json_string_value(json_object_get(pl, "os"));
				const char *arch = json_string_value(json_object_get(pl, "architecture"));
				const char *sd = json_string_value(json_object_get(sm, "digest"));

				if (os && arch && (strcmp(os, "linux") || strcmp(arch, "amd64")))
					continue;
				if (!digest_valid(sd) || (err = import_manifest(store, blobs, sd, e)) < 0)
					break;
			}
			json_decref(sub);
			if (err)
				break;
		} else if ((err = import_manifest(store, blobs, d, e)) < 0) {
			break;
		}
		index_add(idx, name, d);
		json_array_append_new(out, json_pack("{s:s, s:s}", "name", name, "digest", d));
	}
	json_decref(index);
	return err;
}

/* `docker save` (before Docker 25): manifest.json with Config, RepoTags, Layers
 * (plain tars). There is no manifest: one is made, canonical (sorted, compact), so
 * the same image always gets the same digest. */
static int import_docker(const char *store, const char *dir, const char *dflt_name, json_t *idx,
			 json_t *out, struct lerr *e)
{
	char p[4096];
	json_t *dm, *ent;
	size_t i;
	int err = 0;

	snprintf(p, sizeof(p), "%s/manifest.json", dir);
	dm = json_load_file(p, 0, NULL);
	if (!json_is_array(dm)) {
		json_decref(dm);
		return lerr_set(e, EBADMSG, "image: %s: manifest.json is not a docker save manifest", dir);
	}
	json_array_foreach(dm, i, ent) {
		const char *cfg = json_string_value(json_object_get(ent, "Config"));
		json_t *layers = json_object_get(ent, "Layers"), *l, *man, *ldescs;
		const char *name = json_string_value(json_array_get(json_object_get(ent, "RepoTags"), 0))
				   ?: dflt_name;
		char cfgd[80], mand[80];
		struct stat st;
		int64_t msize;
		size_t k;

		if (!cfg || !json_is_array(layers)) {
			err = lerr_set(e, EBADMSG, "image: %s: manifest.json entry %zu has no Config or Layers", dir, i);
			break;
		}
		snprintf(p, sizeof(p), "%s/%s", dir, cfg);
		if ((err = store_blob(store, p, NULL, cfgd, e)) < 0 || stat(p, &st) < 0) {
			err = err ? err : -errno;
			break;
		}
		ldescs = json_array();
		man = json_pack("{s:i, s:s, s:{s:s, s:s, s:I}, s:o}", "schemaVersion", 2, "mediaType",
				OCI_MANIFEST, "config", "mediaType", OCI_CONFIG, "digest", cfgd, "size",
				(json_int_t)st.st_size, "layers", ldescs);
		json_array_foreach(layers, k, l) {
			char ld[80];
			struct stat ls;

			snprintf(p, sizeof(p), "%s/%s", dir, json_string_value(l) ?: "");
			if ((err = store_blob(store, p, NULL, ld, e)) < 0 || stat(p, &ls) < 0) {
				err = err ? err : -errno;
				break;
			}
			json_array_append_new(ldescs, json_pack("{s:s, s:s, s:I}", "mediaType", OCI_LAYER,
								"digest", ld, "size", (json_int_t)ls.st_size));
		}
		if (!err)
			err = store_json_blob(store, man, mand, &msize, e);
		json_decref(man);
		if (err)
			break;
		index_add(idx, name, mand);
		json_array_append_new(out, json_pack("{s:s, s:s}", "name", name, "digest", mand));
	}
	json_decref(dm);
	return err;
}

int image_import(const char *store, const char *path, json_t **out, struct lerr *e)
{
	char tmp[4096] = "", dir[4096], p[4096], dflt[256];
	const char *base = strrchr(path, '/');
	json_t *idx, *res = json_array();
	struct stat st;
	int err;

	*out = NULL;
	if ((err = store_open(store, e)) < 0)
		goto done;
	if (stat(path, &st) < 0) {
		err = lerr_set(e, errno, "image: import %s: %s", path, strerror(errno));
		goto done;
	}
	/* images without a name annotation are named after the file they came in */
	snprintf(dflt, sizeof(dflt), "%s", base ? base + 1 : path);
	if (strchr(dflt, '.'))
		*strchr(dflt, '.') = '\0';
	if (S_ISDIR(st.st_mode)) {
		snprintf(dir, sizeof(dir), "%s", path);
	} else {
		int fd = open(path, O_RDONLY | O_CLOEXEC), root;

		snprintf(tmp, sizeof(tmp), "%s/.import-%d", store, (int)getpid());
		util_rm_rf(tmp);
		if (fd < 0 || mkdir(tmp, 0700) < 0) {
			err = lerr_set(e, errno, "image: import %s: %s", path, strerror(errno));
			if (fd >= 0)
				close(fd);
			goto done;
		}
		root = open(tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		/* the archive is unpacked with the layer code: same path rules, gzip or not */
		err = image_unpack_layer(root, fd, path, e);
		close(root);
		if (err < 0)
			goto done;
		snprintf(dir, sizeof(dir), "%s", tmp);
	}
	idx = index_load(store);
	snprintf(p, sizeof(p), "%s/index.json", dir);
	if (access(p, F_OK) == 0) {
		snprintf(p, sizeof(p), "%s/oci-layout", dir);
		if (access(p, F_OK) < 0)
			err = lerr_set(e, EBADMSG, "image: %s: index.json without oci-layout: not an OCI layout", path);
		else
			err = import_layout(store, dir, dflt, idx, res, e);
	} else {
		snprintf(p, sizeof(p), "%s/manifest.json", dir);
		if (access(p, F_OK) == 0)
			err = import_docker(store, dir, dflt, idx, res, e);
		else
			err = lerr_set(e, EBADMSG, "image: %s is neither an OCI layout (index.json, oci-layout) "
				       "nor a docker save archive (manifest.json)", path);
	}
	if (!err)
		err = index_save(store, idx, e);
	json_decref(idx);
done:
	if (tmp[0])
		util_rm_rf(tmp);
	if (err) {
		json_decref(res);
		return err;
	}
	*out = res;
	return 0;
}

static bool rootfs_ready(const char *store, const char *digest)
{
	char p[4096];

	snprintf(p, sizeof(p), "%s/rootfs/%s.ok", store, digest + 7);
	return access(p, F_OK) == 0;
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
			json_object_set_new(c, "size", json_integer(manifest_size(store, d)));
			json_object_set_new(c, "unpacked", json_boolean(rootfs_ready(store, d)));
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
	json_t *idx = index_load(store), *imgs = json_object_get(idx, "images"), *keep, *gone, *x;
	char p[4096];
	DIR *d;
	struct dirent *de;
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
	/* garbage: blobs and unpacked roots no remaining image references */
	keep = json_object();
	json_array_foreach(imgs, i, x)
		mark_blobs(store, json_string_value(json_object_get(x, "digest")), keep, 0);
	snprintf(p, sizeof(p), "%s/blobs/sha256", store);
	if ((d = opendir(p))) {
		while ((de = readdir(d))) {
			char f[4096 + 300];
			if (de->d_name[0] == '.' || json_object_get(keep, de->d_name))
				continue;
			snprintf(f, sizeof(f), "%s/%s", p, de->d_name);
			unlink(f);
		}
		closedir(d);
	}
	snprintf(p, sizeof(p), "%s/rootfs", store);
	if ((d = opendir(p))) {
		while ((de = readdir(d))) {
			char f[4096 + 300], name[80];
			if (de->d_name[0] == '.')
				continue;
			snprintf(name, sizeof(name), "%.64s", de->d_name);
			if (json_object_get(keep, name))
				continue;
			snprintf(f, sizeof(f), "%s/%s", p, de->d_name);
			util_rm_rf(f);
		}
		closedir(d);
	}
	json_decref(keep);
	json_decref(idx);
	*removed = gone;
	return 0;
}

void image_info_free(struct image_info *i)
{
	json_decref(i->config);
	i->config = NULL;
}

/* Unpacks the manifest's layers into rootfs/<hex> (through a temporary directory,
 * renamed when complete), verifying each layer right before it is used. */
static int unpack(const char *store, const char *digest, json_t *m, struct lerr *e)
{
	char tmp[4096], dst[4096], ok[4096];
	json_t *l;
	size_t i;
	int root, err = 0;

	snprintf(tmp, sizeof(tmp), "%s/rootfs/.%s.%d", store, digest + 7, (int)getpid());
	snprintf(dst, sizeof(dst), "%s/rootfs/%s", store, digest + 7);
	snprintf(ok, sizeof(ok), "%s/rootfs/%s.ok", store, digest + 7);
	util_rm_rf(tmp);
	util_rm_rf(dst);
	if (mkdir(tmp, 0755) < 0)
		return lerr_set(e, errno, "image: %s: %s", tmp, strerror(errno));
	root = open(tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (root < 0) {
		err = lerr_set(e, errno, "image: %s: %s", tmp, strerror(errno));
		goto out;
	}
	json_array_foreach(json_object_get(m, "layers"), i, l) {
		const char *d = json_string_value(json_object_get(l, "digest"));
		const char *mt = json_string_value(json_object_get(l, "mediaType"));
		json_t *sz = json_object_get(l, "size");
		char bp[4096], what[120];
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
		if ((err = blob_verify(store, d, json_is_integer(sz) ? json_integer_value(sz) : -1, e)) < 0)
			break;
		blob_path(store, d, bp, sizeof(bp));
		fd = open(bp, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			err = lerr_set(e, errno, "image: layer %s: %s", d, strerror(errno));
			break;
		}
		snprintf(what, sizeof(what), "layer %s", d);
		if ((err = image_unpack_layer(root, fd, what, e)) < 0)
			break;
	}
	for (i = 0; !err && i < sizeof(mountpoints) / sizeof(mountpoints[0]); i++) {
		struct stat st;
		if (fstatat(root, mountpoints[i], &st, AT_SYMLINK_NOFOLLOW) < 0 &&
		    mkdirat(root, mountpoints[i], 0755) < 0)
			err = lerr_set(e, errno, "image: mount point /%s in %s: %s", mountpoints[i], tmp,
				       strerror(errno));
	}
	if (!err && fchmod(root, 0755) < 0)
		err = lerr_set(e, errno, "image: %s: %s", tmp, strerror(errno));
	if (!err && rename(tmp, dst) < 0)
		err = lerr_set(e, errno, "image: %s: %s", dst, strerror(errno));
	if (!err && util_write_file_atomic(ok, digest, strlen(digest)) < 0)
		err = lerr_set(e, EIO, "image: %s: cannot write", ok);
out:
	if (root >= 0)
		close(root);
	if (err)
		util_rm_rf(tmp);
	return err;
}

int image_resolve(const char *store, const char *ref, struct image_info *out, struct lerr *e)
{
	const char *at = strchr(ref, '@');
	char digest[80];
	json_t *m = NULL, *cfg = NULL;
	const char *mt, *cd;
	int err;

	memset(out, 0, sizeof(*out));
	if (!at || strncmp(at + 1, "sha256:", 7))
		return lerr_set(e, EPERM, "image \"%s\": refused: a tag is not a pin; name the image by "
				"digest as NAME@sha256:HEX (lantern image ls shows the digests on this node)", ref);
	if (!digest_valid(at + 1))
		return lerr_set(e, EINVAL, "image \"%s\": refused: \"%s\" is not a sha256 digest of 64 "
				"lowercase hex digits", ref, at + 1);
	snprintf(digest, sizeof(digest), "%s", at + 1);
	if ((err = blob_verify(store, digest, -1, e)) < 0) {
		if (err == -ENOENT)
			return lerr_set(e, ENOENT, "image \"%s\": refused: digest %s is not in this node's store "
					"(a standalone node does not pull: lantern image import it first)", ref, digest);
		return err;
	}
	if (!(m = load_blob_json(store, digest, e)))
		return -EBADMSG;
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
			return lerr_set(e, ENOENT, "image \"%s\": refused: the index lists no linux/amd64 manifest", ref);
		}
		snprintf(digest, sizeof(digest), "%s", pick);
		json_decref(m);
		if ((err = blob_verify(store, digest, -1, e)) < 0)
			return err;
		if (!(m = load_blob_json(store, digest, e)))
			return -EBADMSG;
	}
	cd = json_string_value(json_object_get(json_object_get(m, "config"), "digest"));
	if (!digest_valid(cd)) {
		json_decref(m);
		return lerr_set(e, EBADMSG, "image \"%s\": refused: manifest %s has no config digest", ref, digest);
	}
	if ((err = blob_verify(store, cd, -1, e)) < 0 || !(cfg = load_blob_json(store, cd, e))) {
		json_decref(m);
		return err ? err : -EBADMSG;
	}
	if (!rootfs_ready(store, digest) && (err = unpack(store, digest, m, e)) < 0) {
		json_decref(m);
		json_decref(cfg);
		return err;
	}
	json_decref(m);
	snprintf(out->digest, sizeof(out->digest), "%s", digest);
	snprintf(out->rootfs, sizeof(out->rootfs), "%s/rootfs/%s", store, digest + 7);
	out->config = json_incref(json_object_get(cfg, "config")) ?: json_object();
	json_decref(cfg);
	return 0;
}
