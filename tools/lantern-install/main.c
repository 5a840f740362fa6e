/* lantern-install: the DaemonSet's init container. It puts the host's half of lantern
 * on a Kubernetes node, from lanternd's own image, before lanternd starts:
 *
 *   HOST/opt/lantern/bin/lantern-oci, runc, runsc   what containerd runs for the
 *       lantern-<class> handlers (lantern-oci) and the runtimes lantern-oci execs, at
 *       the path lanternd knows them by inside its container (/opt/lantern/bin), so a
 *       runtime lanternd names is the same binary on the host;
 *   HOST/etc/containerd/conf.d/lantern.toml          the handlers' drop-in for
 *       containerd's `imports`, from `lantern node containerd-config` (arguments after
 *       -- go to it).
 *
 * Each file is written beside its place and renamed over it, so containerd never execs
 * half a binary, and only when its content differs. containerd reads its configuration
 * when it starts: a drop-in that changed needs containerd restarted, which this says
 * (a pod cannot do it).
 *
 *   lantern-install --host DIR [-- CONTAINERD-CONFIG-ARGS...] */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define IMAGE_BIN "/opt/lantern/bin"
#define LANTERN_OCI "/usr/bin/lantern-oci"
#define LANTERN "/usr/bin/lantern"
#define DROPIN_DIR "/etc/containerd/conf.d"
#define DROPIN_MAX (1u << 20)

static int read_all(int fd, char **buf, size_t *len, size_t max)
{
	size_t cap = 65536, n = 0;
	char *b = malloc(cap);
	ssize_t r;

	if (!b)
		return -ENOMEM;
	while ((r = read(fd, b + n, cap - n)) != 0) {
		if (r < 0) {
			if (errno == EINTR)
				continue;
			free(b);
			return -errno;
		}
		n += (size_t)r;
		if (n == cap) {
			char *nb;

			if (cap >= max || !(nb = realloc(b, cap * 2))) {
				free(b);
				return cap >= max ? -EFBIG : -ENOMEM;
			}
			b = nb;
			cap *= 2;
		}
	}
	*buf = b;
	*len = n;
	return 0;
}

static int read_path(const char *path, char **buf, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC), err;

	if (fd < 0)
		return -errno;
	err = read_all(fd, buf, len, 1u << 30);
	close(fd);
	return err;
}

/* Writes dst (mode) unless it already holds exactly buf. 1: written, 0: unchanged. */
static int put(const char *dst, const char *buf, size_t len, mode_t mode)
{
	char tmp[4096], *old = NULL;
	size_t olen = 0, off = 0;
	int fd, same;

	if (read_path(dst, &old, &olen) == 0) {
		same = olen == len && !memcmp(old, buf, len);
		free(old);
		if (same)
			return 0;
	}
	snprintf(tmp, sizeof(tmp), "%s.lantern-install", dst);
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)) < 0)
		return -errno;
	while (off < len) {
		ssize_t w = write(fd, buf + off, len - off);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0) {
			int err = -errno;

			close(fd);
			unlink(tmp);
			return err;
		}
		off += (size_t)w;
	}
	if (fchmod(fd, mode) < 0 || fsync(fd) < 0 || close(fd) < 0 || rename(tmp, dst) < 0) {
		int err = -errno;

		unlink(tmp);
		return err;
	}
	return 1;
}

static int mkdirs(const char *path)
{
	char p[4096];

	snprintf(p, sizeof(p), "%s", path);
	for (char *s = p + 1; *s; s++) {
		if (*s != '/')
			continue;
		*s = '\0';
		if (mkdir(p, 0755) < 0 && errno != EEXIST)
			return -errno;
		*s = '/';
	}
	return mkdir(p, 0755) < 0 && errno != EEXIST ? -errno : 0;
}

static int install_bin(const char *host, const char *src, const char *name)
{
	char dst[4096], *buf;
	size_t len;
	int err;

	snprintf(dst, sizeof(dst), "%s%s/%s", host, IMAGE_BIN, name);
	if ((err = read_path(src, &buf, &len)) < 0) {
		fprintf(stderr, "lantern-install: %s: %s\n", src, strerror(-err));
		return err;
	}
	err = put(dst, buf, len, 0755);
	free(buf);
	if (err < 0)
		fprintf(stderr, "lantern-install: %s: %s\n", dst, strerror(-err));
	else
		printf("lantern-install: %s %s\n", dst, err ? "installed" : "unchanged");
	return err;
}

/* `lantern node containerd-config ARGS...`'s output. */
static int containerd_config(char **extra, int nextra, char **out, size_t *len)
{
	char *argv[64] = { LANTERN, "node", "containerd-config", "--lantern-oci", IMAGE_BIN "/lantern-oci" };
	int p[2], st, n = 5, err;
	pid_t pid;

	for (int i = 0; i < nextra && n < (int)(sizeof(argv) / sizeof(argv[0])) - 1; i++)
		argv[n++] = extra[i];
	if (pipe2(p, O_CLOEXEC) < 0)
		return -errno;
	if ((pid = fork()) < 0)
		return -errno;
	if (pid == 0) {
		dup2(p[1], 1);
		execv(argv[0], argv);
		fprintf(stderr, "lantern-install: %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	close(p[1]);
	err = read_all(p[0], out, len, DROPIN_MAX);
	close(p[0]);
	if (waitpid(pid, &st, 0) < 0)
		return -errno;
	if (err == 0 && (!WIFEXITED(st) || WEXITSTATUS(st) != 0)) {
		free(*out);
		fprintf(stderr, "lantern-install: lantern node containerd-config failed (status %d)\n", st);
		return -EIO;
	}
	return err;
}

int main(int argc, char **argv)
{
	const char *host = NULL;
	char dir[4096], dropin[4096], *conf = NULL;
	size_t len = 0;
	int i, err, changed = 0;

	for (i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--host") && i + 1 < argc)
			host = argv[++i];
		else if (!strcmp(argv[i], "--"))
			break;
		else
			host = NULL, i = argc;
	}
	if (!host || host[0] != '/') {
		fprintf(stderr, "usage: lantern-install --host DIR [-- CONTAINERD-CONFIG-ARGS...]\n");
		return 2;
	}
	if (access(LANTERN_OCI, X_OK) != 0) {
		fprintf(stderr, "lantern-install: this image has no %s (built before the lantern-oci runtime "
			"handler existed): nothing installed, and lantern's RuntimeClasses cannot run here\n",
			LANTERN_OCI);
		return 1;
	}
	snprintf(dir, sizeof(dir), "%s%s", host, IMAGE_BIN);
	if ((err = mkdirs(dir)) < 0) {
		fprintf(stderr, "lantern-install: %s: %s\n", dir, strerror(-err));
		return 1;
	}
	if (install_bin(host, IMAGE_BIN "/runc", "runc") < 0 || install_bin(host, IMAGE_BIN "/runsc", "runsc") < 0 ||
	    install_bin(host, LANTERN_OCI, "lantern-oci") < 0)
		return 1;
	if (containerd_config(argv + i + (i < argc), argc - i - (i < argc), &conf, &len) < 0)
		return 1;
	snprintf(dir, sizeof(dir), "%s%s", host, DROPIN_DIR);
	snprintf(dropin, sizeof(dropin), "%s/lantern.toml", dir);
	if ((err = mkdirs(dir)) < 0 || (changed = put(dropin, conf, len, 0644)) < 0) {
		fprintf(stderr, "lantern-install: %s: %s\n", dropin, strerror(-(err < 0 ? err : changed)));
		free(conf);
		return 1;
	}
	free(conf);
	printf("lantern-install: %s %s\n", dropin, changed ? "written: restart containerd to load lantern's "
	       "runtime handlers (its config must import " DROPIN_DIR "/*.toml)" : "unchanged");
	return 0;
}
