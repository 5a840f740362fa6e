/* image.c (fuzz target "image"): `lantern image import` of an archive someone handed the
 * operator (a `docker save` tar or an OCI layout tar, gzip'd or not), then what a spawn
 * of each imported image does: image_resolve, which verifies what import unpacked; then
 * list and remove. Only the public API of the image module, bounded by image_limits
 * (64 MiB, 10,000 entries): the harness follows the module's changes.
 *
 * Input: a mode byte, then the archive; mode bit 0 first rewrites the header checksums of
 * the (plain) archive, so that mutated headers are read rather than refused.
 *
 * Each input gets a fresh store in WORK/store; the archive is WORK/in/image.tar. Next to
 * them: WORK/canary (must keep its bytes) and WORK/secret, a file the archive must not be
 * able to read into the store (its digest must never become a blob).
 * Properties beyond the sanitizers: nothing outside the store changes or appears; no
 * file outside the archive becomes a blob; a resolved image's root is in the store. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzzlib.h"
#include "lantern/image.h"

#define CANARY "outside the store\n"
#define SECRET "not part of any archive\n"

static const char *work;
static const struct image_limits lim = { .layer_bytes = 64u << 20, .image_bytes = 64u << 20,
					 .entries = 10000 };
static char store[4096], in_dir[4096], archive[4096], canary[4096], secret[4096];
static char secret_blob[4096];

static void put(const char *path, const void *data, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

	FZ_CHECK(fd >= 0 && write(fd, data, len) == (ssize_t)len, "%s: %s", path, strerror(errno));
	close(fd);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct rlimit fsize = { 64u << 20, 64u << 20 };
	char d[80];

	work = fz_workdir("image");
	snprintf(store, sizeof(store), "%s/store", work);
	snprintf(in_dir, sizeof(in_dir), "%s/in", work);
	snprintf(archive, sizeof(archive), "%s/in/image.tar", work);
	snprintf(canary, sizeof(canary), "%s/canary", work);
	snprintf(secret, sizeof(secret), "%s/secret", work);
	put(secret, SECRET, strlen(SECRET));
	FZ_CHECK(image_sha256_file(secret, d) == 0, "sha256 of %s", secret);
	snprintf(secret_blob, sizeof(secret_blob), "%s/blobs/sha256/%s", store, d + 7);
	signal(SIGXFSZ, SIG_IGN);
	setrlimit(RLIMIT_FSIZE, &fsize);
	return 0;
}

static void check_outside(void)
{
	char buf[64] = "";
	int fd = open(canary, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;
	DIR *d = opendir(work);
	struct dirent *de;

	if (fd >= 0)
		close(fd);
	FZ_CHECK(n == (ssize_t)strlen(CANARY) && !memcmp(buf, CANARY, (size_t)n),
		 "%s, outside the store, was changed or removed", canary);
	FZ_CHECK(access(secret, F_OK) == 0, "%s, outside the store, was removed", secret);
	FZ_CHECK(d, "%s is gone", work);
	while ((de = readdir(d)))
		FZ_CHECK(!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..") ||
			 !strcmp(de->d_name, "store") || !strcmp(de->d_name, "in") ||
			 !strcmp(de->d_name, "canary") || !strcmp(de->d_name, "secret"),
			 "\"%s\" appeared in %s, outside the store", de->d_name, work);
	closedir(d);
}

static void spawn_each(json_t *imported)
{
	json_t *x, *list = NULL, *removed = NULL;
	struct lerr e = { 0 };
	size_t i;

	json_array_foreach(imported, i, x) {
		const char *name = json_string_value(json_object_get(x, "name"));
		const char *digest = json_string_value(json_object_get(x, "digest"));
		struct image_info info;
		char ref[4096];
		int err;

		FZ_CHECK(name && digest, "imported entry %zu without a name or digest", i);
		snprintf(ref, sizeof(ref), "%s@%s", name, digest);
		err = image_resolve(store, ref, &info, &e);
		if (err == 0) {
			FZ_CHECK(!strncmp(info.rootfs, store, strlen(store)) && info.config,
				 "image %s resolved to a root outside the store: %s", ref, info.rootfs);
			image_info_free(&info);
		}
	}
	FZ_CHECK(image_list(store, &list, &e) == 0, "image list: %s", e.msg);
	json_decref(list);
	x = json_array_get(imported, 0);
	if (x && image_remove(store, json_string_value(json_object_get(x, "digest")), NULL, NULL,
			      &removed, &e) == 0)
		json_decref(removed);
}

int LLVMFuzzerTestOneInput(const uint8_t *in, size_t in_size)
{
	struct lerr e = { 0 };
	json_t *imported = NULL;
	size_t size = in_size ? in_size - 1 : 0;
	uint8_t *data = malloc(size + 1);
	int err;

	memcpy(data, in + (in_size ? 1 : 0), size);
	if (in_size && (in[0] & 1))
		fz_tar_fix_checksums(data, size);

	fz_empty(work);
	FZ_CHECK(mkdir(in_dir, 0755) == 0, "mkdir %s: %s", in_dir, strerror(errno));
	put(canary, CANARY, strlen(CANARY));
	put(secret, SECRET, strlen(SECRET));
	put(archive, data, size);
	err = image_import(store, archive, &lim, &imported, &e);
	FZ_CHECK(err <= 0 && (!err || e.msg[0]), "import: %d without a reason", err);
	/* before image_remove collects it as garbage */
	FZ_CHECK(access(secret_blob, F_OK) < 0, "%s, a file outside the archive, became a blob", secret);
	if (err == 0) {
		spawn_each(imported);
		json_decref(imported);
	}
	check_outside();
	free(data);
	return 0;
}
