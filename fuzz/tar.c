/* tar.c (fuzz target "tar"): an image layer (plain or gzip'd tar) as an image author
 * writes it, read entry by entry with image_tar_next/image_tar_read, then unpacked with
 * image_unpack_layer into a temporary root that the target makes and empties again, and
 * image_root_read of the entries' paths in what was unpacked (how lanternd reads the
 * image's /etc/passwd and /etc/group).
 *
 * Input: a mode byte, then the layer. Mode bit 0 first rewrites the header checksums
 * (fz_tar_fix_checksums), so that mutated headers are read rather than refused.
 *
 * The root is WORK/guard/root; WORK/canary and WORK/guard/canary are files outside it.
 * Properties beyond the sanitizers:
 *  - reading: every entry has a path, only regular files carry data, and exactly their
 *    size is read;
 *  - unpacking changes nothing outside the root: both canaries keep their bytes, and
 *    WORK and WORK/guard hold nothing new (whiteouts, "..", absolute paths, symlink and
 *    hardlink tricks all stay inside);
 *  - no device node is created;
 *  - image_root_read of any path reads nothing outside the root (never a canary).
 * The layer is bounded by image_limits (64 MiB, 10,000 entries) and, for the host's sake,
 * by RLIMIT_FSIZE. */
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

#define CANARY "outside the root\n"

static char root[4096], guard[4096], canary_a[4096], canary_b[4096];
static const char *work;
static const struct image_limits lim = { .layer_bytes = 64u << 20, .image_bytes = 64u << 20,
					 .entries = 10000 };
/* paths of the first entries, to read back after the unpack */
static char *paths[16];
static size_t npaths;

struct mem {
	const uint8_t *p;
	size_t n;
};

static ssize_t mem_read(void *ctx, void *buf, size_t n)
{
	struct mem *m = ctx;

	if (n > m->n)
		n = m->n;
	memcpy(buf, m->p, n);
	m->p += n;
	m->n -= n;
	return (ssize_t)n;
}

static void write_canary(const char *path)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

	FZ_CHECK(fd >= 0 && write(fd, CANARY, strlen(CANARY)) == (ssize_t)strlen(CANARY),
		 "%s: %s", path, strerror(errno));
	close(fd);
}

static void check_canary(const char *path)
{
	char buf[64] = "";
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;

	if (fd >= 0)
		close(fd);
	FZ_CHECK(n == (ssize_t)strlen(CANARY) && !memcmp(buf, CANARY, (size_t)n),
		 "%s, outside the unpack root, was changed or removed", path);
}

/* No device nodes under dir (by descriptors: the tree may be deep, its links point
 * anywhere). */
static void check_no_devices(int dir, int depth)
{
	DIR *d;
	struct dirent *de;

	if (depth > 64 || !(d = fdopendir(dir))) {
		close(dir);
		return;
	}
	while ((de = readdir(d))) {
		struct stat st;

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..") ||
		    fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		FZ_CHECK(!S_ISCHR(st.st_mode) && !S_ISBLK(st.st_mode), "device node \"%s\" unpacked",
			 de->d_name);
		if (S_ISDIR(st.st_mode))
			check_no_devices(openat(dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
						O_CLOEXEC), depth + 1);
	}
	closedir(d);
}

static void read_back(const char *path)
{
	char *buf = NULL;
	size_t len = 0;

	if (image_root_read(root, path, 1u << 20, &buf, &len) == 0)
		FZ_CHECK(strcmp(buf, CANARY), "image_root_read(\"%s\") read a file outside the root", path);
	free(buf);
}

/* dir holds exactly the names given (and nothing the unpack put next to them) */
static void check_only(const char *dir, const char *a, const char *b)
{
	DIR *d = opendir(dir);
	struct dirent *de;

	FZ_CHECK(d, "%s, outside the unpack root, is gone: %s", dir, strerror(errno));
	while ((de = readdir(d)))
		FZ_CHECK(!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..") ||
			 !strcmp(de->d_name, a) || !strcmp(de->d_name, b),
			 "\"%s\" appeared in %s, outside the unpack root", de->d_name, dir);
	closedir(d);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct rlimit fsize = { 64u << 20, 64u << 20 };

	work = fz_workdir("tar");
	snprintf(guard, sizeof(guard), "%s/guard", work);
	snprintf(root, sizeof(root), "%s/guard/root", work);
	snprintf(canary_a, sizeof(canary_a), "%s/canary", work);
	snprintf(canary_b, sizeof(canary_b), "%s/guard/canary", work);
	signal(SIGXFSZ, SIG_IGN);
	setrlimit(RLIMIT_FSIZE, &fsize);
	return 0;
}

static void read_entries(const uint8_t *data, size_t size)
{
	struct mem m = { data, size };
	struct image_tar t;
	const struct image_tar_entry *en;
	struct lerr e = { 0 };
	char buf[8192];
	int r;

	image_tar_init(&t, mem_read, &m);
	while ((r = image_tar_next(&t, &en, &e)) > 0) {
		uint64_t got = 0;
		ssize_t n;

		FZ_CHECK(en->path, "an entry without a path");
		if (npaths < sizeof(paths) / sizeof(paths[0]))
			paths[npaths++] = strdup(en->path);
		FZ_CHECK(en->type == '0' || en->size == 0, "type '%c' with %llu data bytes", en->type,
			 (unsigned long long)en->size);
		FZ_CHECK(!(en->mode & ~07777), "mode %o", en->mode);
		while ((n = image_tar_read(&t, buf, sizeof(buf))) > 0)
			got += (uint64_t)n;
		if (n < 0)
			break; /* cut short: the archive ends inside the entry's data */
		FZ_CHECK(got == en->size, "entry \"%s\": read %llu of %llu bytes", en->path,
			 (unsigned long long)got, (unsigned long long)en->size);
	}
	FZ_CHECK(r >= 0 || e.msg[0], "tar_next: %d without a reason", r);
	image_tar_free(&t);
}

int LLVMFuzzerTestOneInput(const uint8_t *in, size_t in_size)
{
	struct lerr e = { 0 };
	int root_fd, fd, err;
	uint64_t left = lim.image_bytes;
	size_t size = in_size ? in_size - 1 : 0;
	uint8_t *data = malloc(size + 1);

	memcpy(data, in + (in_size ? 1 : 0), size);
	if (in_size && (in[0] & 1))
		fz_tar_fix_checksums(data, size);
	read_entries(data, size);

	fz_empty(work);
	FZ_CHECK(mkdir(guard, 0755) == 0 && mkdir(root, 0755) == 0, "mkdir: %s", strerror(errno));
	write_canary(canary_a);
	write_canary(canary_b);
	root_fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	fd = fz_memfd(data, size);
	FZ_CHECK(root_fd >= 0 && fd >= 0, "%s: %s", root, strerror(errno));
	/* image_unpack_layer closes fd (gzdopen owns it) */
	err = image_unpack_layer(root_fd, fd, "layer", &lim, &left, &e);
	FZ_CHECK(err <= 0 && (!err || e.msg[0]), "unpack: %d without a reason", err);
	close(root_fd);
	check_canary(canary_a);
	check_canary(canary_b);
	check_only(work, "guard", "canary");
	check_only(guard, "root", "canary");
	check_no_devices(open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC), 0);
	read_back("etc/passwd");
	read_back("../canary");
	read_back("/../../canary");
	for (size_t i = 0; i < npaths; i++) {
		read_back(paths[i]);
		free(paths[i]);
	}
	npaths = 0;
	free(data);
	return 0;
}
