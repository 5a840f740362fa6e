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

#include "lantern/util.h"

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
	char prefix[sizeof(workdir)];

	if (workdir[0])
		return workdir;
	snprintf(prefix, sizeof(prefix), "%s/lantern-fuzz-%s-", tmp && *tmp ? tmp : "/tmp", name);
	util_tmp_template(workdir, sizeof(workdir), prefix);
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

/* An octal size field; GNU base-256 (high bit set) too. */
static uint64_t tar_size(const uint8_t *f)
{
	uint64_t v = 0;

	if (f[0] & 0x80) {
		for (int i = 1; i < 12; i++)
			v = v << 8 | f[i];
		return v;
	}
	for (int i = 0; i < 12 && f[i] >= '0' && f[i] <= '7'; i++)
		v = v * 8 + (uint64_t)(f[i] - '0');
	return v;
}

void fz_tar_fix_checksums(uint8_t *buf, size_t len)
{
	static const uint8_t zero[512];
	size_t off = 0;

	while (off + 512 <= len && memcmp(buf + off, zero, 512)) {
		uint8_t *h = buf + off, type = h[156];
		uint64_t size = tar_size(h + 124), sum = 0;

		memset(h + 148, ' ', 8);
		for (int i = 0; i < 512; i++)
			sum += h[i];
		snprintf((char *)h + 148, 8, "%06o", (unsigned)(sum & 0777777));
		h[155] = ' ';
		off += 512;
		/* the reader skips data of regular files and extension headers only */
		if (type == '0' || type == '\0' || type == '7' || type == 'x' || type == 'g' ||
		    type == 'L' || type == 'K') {
			if (size > len)
				return;
			off += (size_t)(size + 511) / 512 * 512;
		}
	}
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
