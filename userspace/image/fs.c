/* fs.c: every file the image module touches beneath a root it does not trust: the
 * checks on an archive entry's path, opening and creating beneath a root with openat2,
 * bounded reads of the files an import brings, reading an unpacked root's files for
 * the bundle, and removing a tree without recursion.
 *
 * Nothing here joins a string path onto a host directory: every lookup starts at a
 * root's descriptor and the kernel keeps it beneath that root (RESOLVE_IN_ROOT), so
 * neither "..", an absolute symlink nor a race with the archive's own symlinks can
 * reach the host. */
#include "image_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

int image_path_clean(const char *in, char *out, size_t cap, const char **why)
{
	size_t n = 0;
	const char *p = in;

	while (*p) {
		const char *s;
		size_t len;

		while (*p == '/')
			p++;
		s = p;
		while (*p && *p != '/')
			p++;
		len = (size_t)(p - s);
		if (len == 0 || (len == 1 && s[0] == '.'))
			continue;
		if (len == 2 && s[0] == '.' && s[1] == '.') {
			*why = "has a \"..\" component";
			return -EPERM;
		}
		if (len > NAME_MAX) {
			*why = "has a component longer than 255 bytes";
			return -EPERM;
		}
		if (n + len + 2 > cap || n + len + 1 >= PATH_MAX) {
			*why = "is longer than 4095 bytes";
			return -EPERM;
		}
		if (n)
			out[n++] = '/';
		memcpy(out + n, s, len);
		n += len;
	}
	out[n] = '\0';
	return 0;
}

int image_openat2(int root, const char *path, int flags, mode_t mode, uint64_t resolve)
{
	struct open_how how = {
		.flags = (uint64_t)flags | O_CLOEXEC,
		.mode = mode,
		.resolve = resolve,
	};
	long fd = syscall(SYS_openat2, root, path[0] ? path : ".", &how, sizeof(how));

	return fd < 0 ? -errno : (int)fd;
}

int image_mkdirs(int root, const char *path, int (*made)(void *ctx, const char *prefix), void *ctx)
{
	char buf[PATH_MAX];
	size_t len = strlen(path), end;
	int fd, err;

	fd = image_openat2(root, path, O_PATH | O_DIRECTORY, 0, IMAGE_RESOLVE_BUILD);
	if (fd != -ENOENT)
		return fd;
	if (len >= sizeof(buf))
		return -ENAMETOOLONG;
	memcpy(buf, path, len + 1);
	/* the deepest prefix that exists; every one shorter exists too */
	end = len;
	for (;;) {
		char *slash;

		buf[end] = '\0';
		slash = strrchr(buf, '/');
		end = slash ? (size_t)(slash - buf) : 0;
		buf[end] = '\0';
		fd = image_openat2(root, buf, O_PATH | O_DIRECTORY, 0, IMAGE_RESOLVE_BUILD);
		if (fd != -ENOENT || end == 0)
			break;
	}
	if (fd < 0)
		return fd;
	/* the rest is made here, one directory in the last: nothing else writes in a root
	 * being built, so what mkdirat made is what the next step opens */
	memcpy(buf, path, len + 1);
	while (end < len) {
		size_t start = end ? end + 1 : 0;
		char *comp = buf + start, *next = strchr(comp, '/');
		int sub;

		if (next)
			*next = '\0';
		if (mkdirat(fd, comp, 0755) < 0 && errno != EEXIST) {
			err = -errno;
			close(fd);
			return err;
		}
		sub = image_openat2(fd, comp, O_PATH | O_DIRECTORY, 0,
				    RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV);
		close(fd);
		if (sub < 0)
			return sub;
		fd = sub;
		end = start + strlen(comp);
		if (made && (err = made(ctx, buf)) < 0) {
			close(fd);
			return err;
		}
		if (next)
			*next = '/';
	}
	return fd;
}

/* Opens path beneath root for reading if it is a regular file (-EPERM if not): it is
 * looked at through an O_PATH descriptor first and reopened only then, so a device
 * or a FIFO is never opened at all (no driver's open runs, nothing blocks). */
static int open_regular(int root, const char *path, uint64_t resolve, struct stat *st)
{
	char self[64];
	int pfd = image_openat2(root, path, O_PATH, 0, resolve), fd;

	if (pfd < 0)
		return pfd;
	if (fstat(pfd, st) < 0 || !S_ISREG(st->st_mode)) {
		close(pfd);
		return -EPERM;
	}
	snprintf(self, sizeof(self), "/proc/self/fd/%d", pfd);
	fd = open(self, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	fd = fd < 0 ? -errno : fd;
	close(pfd);
	return fd;
}

int image_src_open(int root, const char *path, uint64_t max, uint64_t *size, const char *what,
		   struct lerr *e)
{
	struct stat st;
	int fd = open_regular(root, path, IMAGE_RESOLVE_SOURCE, &st);

	if (fd == -ELOOP)
		return lerr_set(e, ELOOP, "image: %s: \"%s\" is or passes through a symlink, which an "
				"import does not follow: refused", what, path);
	if (fd == -EXDEV)
		return lerr_set(e, EXDEV, "image: %s: \"%s\" resolves outside the image: refused", what, path);
	if (fd == -EPERM)
		return lerr_set(e, EPERM, "image: %s: \"%s\" is not a regular file: refused", what, path);
	if (fd < 0)
		return lerr_set(e, -fd, "image: %s: \"%s\": %s", what, path, strerror(-fd));
	if ((uint64_t)st.st_size > max) {
		close(fd);
		return lerr_set(e, EFBIG, "image: %s: \"%s\" is %llu bytes, more than the %llu allowed: refused",
				what, path, (unsigned long long)st.st_size, (unsigned long long)max);
	}
	*size = (uint64_t)st.st_size;
	return fd;
}

/* Reads exactly size bytes: a file that shrank is an error, one that grew is cut. */
static int read_exact(int fd, char *buf, size_t size)
{
	size_t got = 0;

	while (got < size) {
		ssize_t r = read(fd, buf + got, size - got);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			return -EBADMSG;
		got += (size_t)r;
	}
	return 0;
}

int image_src_read(int root, const char *path, size_t max, char **buf, size_t *len, const char *what,
		   struct lerr *e)
{
	uint64_t size;
	int fd = image_src_open(root, path, max, &size, what, e), err;
	char *b;

	if (fd < 0)
		return fd;
	if (!(b = malloc(size + 1))) {
		close(fd);
		return lerr_set(e, ENOMEM, "image: %s: out of memory", what);
	}
	err = read_exact(fd, b, size);
	close(fd);
	if (err < 0) {
		free(b);
		return lerr_set(e, -err, "image: %s: read \"%s\": %s", what, path, strerror(-err));
	}
	b[size] = '\0';
	*buf = b;
	if (len)
		*len = size;
	return 0;
}

int image_root_read(const char *rootfs, const char *path, size_t max, char **buf, size_t *len)
{
	int root = open(rootfs, O_PATH | O_DIRECTORY | O_CLOEXEC), fd, err;
	struct stat st;
	char *b;

	if (root < 0)
		return -errno;
	fd = open_regular(root, path, IMAGE_RESOLVE_BUILD, &st);
	close(root);
	if (fd < 0)
		return fd;
	if ((uint64_t)st.st_size > max) {
		close(fd);
		return -EFBIG;
	}
	if (!(b = malloc((size_t)st.st_size + 1))) {
		close(fd);
		return -ENOMEM;
	}
	err = read_exact(fd, b, (size_t)st.st_size);
	close(fd);
	if (err < 0) {
		free(b);
		return err;
	}
	b[st.st_size] = '\0';
	*buf = b;
	if (len)
		*len = (size_t)st.st_size;
	return 0;
}

/* Past this depth a subtree is moved up into the top directory and removed from
 * there, so the walk never holds more directories open, however deep the tree. */
#define REMOVE_DEPTH 16

struct level {
	DIR *d;
	char name[NAME_MAX + 1];   /* in the level above; the top one is the caller's */
	bool found;                /* an entry since the last rewind (the top level) */
};

int image_tree_remove(int dir, const char *name)
{
	struct level st[REMOVE_DEPTH];
	unsigned long moved = 0;
	struct stat sb;
	int n, fd, err = 0;

	if (fstatat(dir, name, &sb, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISDIR(sb.st_mode))
		return unlinkat(dir, name, 0) < 0 && errno != ENOENT ? -errno : 0;
	fd = openat(dir, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0 || !(st[0].d = fdopendir(fd))) {
		err = -errno;
		if (fd >= 0)
			close(fd);
		return err;
	}
	st[0].found = false;
	n = 1;
	while (n > 0) {
		struct level *l = &st[n - 1];
		struct dirent *de;
		unsigned char type;

		errno = 0;
		if (!(de = readdir(l->d))) {
			int pfd = n > 1 ? dirfd(st[n - 2].d) : dir;
			const char *nm = n > 1 ? l->name : name;

			if (errno) {
				err = -errno;
				break;
			}
			if (unlinkat(pfd, nm, AT_REMOVEDIR) == 0) {
				closedir(l->d);
				n--;
				continue;
			}
			/* subtrees moved up while this pass read the top directory */
			if (errno == ENOTEMPTY && n == 1 && l->found) {
				rewinddir(l->d);
				l->found = false;
				continue;
			}
			err = -errno;
			break;
		}
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (n == 1)
			l->found = true;
		type = de->d_type;
		if (type == DT_UNKNOWN) {
			if (fstatat(dirfd(l->d), de->d_name, &sb, AT_SYMLINK_NOFOLLOW) < 0) {
				if (errno == ENOENT)
					continue;
				err = -errno;
				break;
			}
			type = S_ISDIR(sb.st_mode) ? DT_DIR : DT_REG;
		}
		if (type != DT_DIR) {
			if (unlinkat(dirfd(l->d), de->d_name, 0) < 0 && errno != ENOENT) {
				err = -errno;
				break;
			}
			continue;
		}
		if (n == REMOVE_DEPTH) {
			char to[32];
			int r;

			do {
				snprintf(to, sizeof(to), ".rm-%lu", moved++);
				r = renameat2(dirfd(l->d), de->d_name, dirfd(st[0].d), to, RENAME_NOREPLACE);
			} while (r < 0 && errno == EEXIST);
			if (r < 0) {
				err = -errno;
				break;
			}
			continue;
		}
		fd = openat(dirfd(l->d), de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0 || !(st[n].d = fdopendir(fd))) {
			err = -errno;
			if (fd >= 0)
				close(fd);
			break;
		}
		snprintf(st[n].name, sizeof(st[n].name), "%s", de->d_name);
		st[n].found = false;
		n++;
	}
	while (n > 0)
		closedir(st[--n].d);
	return err;
}

void image_remove_dot_entries(int dir)
{
	int fd = openat(dir, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	struct dirent *de;

	if (!d) {
		if (fd >= 0)
			close(fd);
		return;
	}
	while ((de = readdir(d)))
		if (de->d_name[0] == '.' && strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			image_tree_remove(dirfd(d), de->d_name);
	closedir(d);
}
