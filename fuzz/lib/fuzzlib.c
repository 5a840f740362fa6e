/* fuzzlib.c: the helpers of fuzzlib.h. */
#include "fuzzlib.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sanitizer/common_interface_defs.h>

uint8_t fz_u8(struct fz *f)
{
	uint8_t v = 0;

	if (f->n) {
		v = f->p[0];
		f->p++;
		f->n--;
	}
	return v;
}

uint16_t fz_u16(struct fz *f)
{
	uint16_t lo = fz_u8(f);

	return (uint16_t)(lo | fz_u8(f) << 8);
}

uint32_t fz_u32(struct fz *f)
{
	uint32_t lo = fz_u16(f);

	return lo | (uint32_t)fz_u16(f) << 16;
}

const uint8_t *fz_piece(struct fz *f, size_t *len)
{
	size_t n = fz_u16(f);
	const uint8_t *p = f->p;

	if (n > f->n)
		n = f->n;
	f->p += n;
	f->n -= n;
	*len = n;
	return p;
}

char *fz_str(struct fz *f, size_t *len)
{
	size_t n;
	const uint8_t *p = fz_piece(f, &n);
	char *s = malloc(n + 1);

	if (!s)
		abort();
	memcpy(s, p, n);
	s[n] = '\0';
	if (len)
		*len = n;
	return s;
}

const uint8_t *fz_rest(struct fz *f, size_t *len)
{
	const uint8_t *p = f->p;

	*len = f->n;
	f->p += f->n;
	f->n = 0;
	return p;
}

static char workdir[256];

static void workdir_remove(void)
{
	if (workdir[0]) {
		fz_empty(workdir);
		rmdir(workdir);
	}
}

const char *fz_workdir(const char *name)
{
	const char *tmp = getenv("TMPDIR");

	if (workdir[0])
		return workdir;
	snprintf(workdir, sizeof(workdir), "%s/lantern-fuzz-%s-XXXXXX", tmp && *tmp ? tmp : "/tmp",
		 name);
	if (!mkdtemp(workdir))
		fz_fail(__FILE__, __LINE__, "mkdtemp", "cannot make %s: %s", workdir, strerror(errno));
	atexit(workdir_remove);
	return workdir;
}

/* Removes name in dir, never following a link, by descriptors: an unpacked tree may be
 * deeper than PATH_MAX, and its links may point anywhere. */
static void remove_at(int dir, const char *name)
{
	struct stat st;
	int fd;
	DIR *d;
	struct dirent *de;

	if (fstatat(dir, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return;
	if (!S_ISDIR(st.st_mode)) {
		unlinkat(dir, name, 0);
		return;
	}
	fd = openat(dir, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0 || !(d = fdopendir(fd))) {
		if (fd >= 0)
			close(fd);
		return;
	}
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			remove_at(dirfd(d), de->d_name);
	closedir(d);
	unlinkat(dir, name, AT_REMOVEDIR);
}

void fz_empty(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	DIR *d;
	struct dirent *de;

	if (fd < 0 || !(d = fdopendir(fd)))
		fz_fail(__FILE__, __LINE__, "open", "cannot open %s: %s", dir, strerror(errno));
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			remove_at(dirfd(d), de->d_name);
	closedir(d);
}

int fz_memfd(const void *data, size_t len)
{
	int fd = memfd_create("lantern-fuzz", MFD_CLOEXEC);
	const char *p = data;

	if (fd < 0)
		return -1;
	while (len) {
		ssize_t w = write(fd, p, len);
		if (w <= 0) {
			close(fd);
			return -1;
		}
		p += w;
		len -= (size_t)w;
	}
	lseek(fd, 0, SEEK_SET);
	return fd;
}

void fz_fail(const char *file, int line, const char *cond, const char *fmt, ...)
{
	char msg[2048], why[1536];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	snprintf(msg, sizeof(msg), "lantern-fuzz: %s:%d: (%s) %s", file, line, cond, why);
	__sanitizer_report_error_summary(msg);
	abort();
}
