/* log.c: a container's CRI log (what containerd writes for the kubelet: one line
 * "RFC3339NANO STREAM TAG TEXT", STREAM stdout or stderr, TAG F for a full line or P for
 * part of a longer one) turned into the run's record log, the same records lantern-shim
 * writes for the other runtimes, so `lantern run` and `lantern logs` read every runtime's
 * output alike. Where it got to (bytes read, next record number) is kept in
 * RUN/cri-log.pos, so a restarted lanternd neither repeats nor skips a line. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "lantern/cri.h"

static void pos_path(const struct cri_log *g, char *out, size_t len)
{
	snprintf(out, len, "%s/cri-log.pos", g->run_dir);
}

void cri_log_init(struct cri_log *g, const char *src, const char *run_dir, uint64_t max)
{
	char path[4200], *buf = NULL, log[4200];
	unsigned long long off = 0, seq = 0;
	struct stat st;

	memset(g, 0, sizeof(*g));
	snprintf(g->src, sizeof(g->src), "%s", src);
	snprintf(g->run_dir, sizeof(g->run_dir), "%s", run_dir);
	g->max = max ? max : 8ull << 20;
	pos_path(g, path, sizeof(path));
	if (util_read_file(path, &buf, NULL) == 0 && sscanf(buf, "%llu %llu", &off, &seq) == 2) {
		g->off = off;
		g->seq = seq;
	}
	free(buf);
	snprintf(log, sizeof(log), "%s/log", run_dir);
	if (stat(log, &st) == 0)
		g->len = (uint64_t)st.st_size;
}

/* "2023-01-02T03:04:05.123456789Z" (containerd writes UTC with a Z) as seconds and ns. */
static bool parse_time(const char *s, size_t len, long long *sec, long *nsec)
{
	struct tm tm = { 0 };
	const char *end;
	char buf[64];

	if (len >= sizeof(buf))
		return false;
	memcpy(buf, s, len);
	buf[len] = '\0';
	if (!(end = strptime(buf, "%Y-%m-%dT%H:%M:%S", &tm)))
		return false;
	*sec = (long long)timegm(&tm);
	*nsec = 0;
	if (*end == '.') {
		long mult = 100000000;

		for (end++; *end >= '0' && *end <= '9'; end++, mult /= 10)
			*nsec += (*end - '0') * mult;
	}
	return true;
}

static int write_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -errno;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static int record(struct cri_log *g, int *fd, long long sec, long nsec, int stream, const char *text,
		  size_t len, bool newline)
{
	char hdr[96], cur[4200], old[4200];
	int h = snprintf(hdr, sizeof(hdr), "%llu %lld.%09ld %d %zu\n", (unsigned long long)g->seq, sec, nsec,
			 stream, len + newline);

	if (g->len && g->len + (uint64_t)h + len + 2 > g->max / 2) {
		snprintf(cur, sizeof(cur), "%s/log", g->run_dir);
		snprintf(old, sizeof(old), "%s/log.1", g->run_dir);
		if (rename(cur, old) == 0) {
			close(*fd);
			*fd = open(cur, O_WRONLY | O_APPEND | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
			g->len = 0;
			if (*fd < 0)
				return -errno;
		}
	}
	if (write_all(*fd, hdr, (size_t)h) < 0 || write_all(*fd, text, len) < 0 ||
	    (newline && write_all(*fd, "\n", 1) < 0) || write_all(*fd, "\n", 1) < 0)
		return -EIO;
	g->seq++;
	g->len += (uint64_t)h + len + newline + 1;
	return 0;
}

void cri_log_pump(struct cri_log *g)
{
	char path[4200], pos[64], buf[65536];
	int in, out;
	size_t have = 0;
	ssize_t n;

	if ((in = open(g->src, O_RDONLY | O_CLOEXEC)) < 0)
		return;
	snprintf(path, sizeof(path), "%s/log", g->run_dir);
	if ((out = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600)) < 0) {
		close(in);
		return;
	}
	while ((n = pread(in, buf + have, sizeof(buf) - have, (off_t)(g->off + have))) > 0) {
		size_t len = have + (size_t)n, used = 0;
		char *line = buf;

		for (char *nl; (nl = memchr(line, '\n', len - used)); line = nl + 1, used = (size_t)(line - buf)) {
			/* TIME STREAM TAG TEXT: a malformed line is skipped, not guessed at */
			char *sp1 = memchr(line, ' ', (size_t)(nl - line)), *sp2, *sp3;
			long long sec;
			long nsec;

			if (!sp1 || !(sp2 = memchr(sp1 + 1, ' ', (size_t)(nl - sp1 - 1))) ||
			    !(sp3 = memchr(sp2 + 1, ' ', (size_t)(nl - sp2 - 1))) ||
			    !parse_time(line, (size_t)(sp1 - line), &sec, &nsec))
				continue;
			if (record(g, &out, sec, nsec, !strncmp(sp1 + 1, "stderr ", 7) ? 2 : 1, sp3 + 1,
				   (size_t)(nl - sp3 - 1), sp2[1] == 'F') < 0)
				break;
		}
		g->off += used;
		have = len - used;
		if (have == sizeof(buf)) {
			/* a line longer than the buffer: containerd splits lines at 16 KiB, so
			 * this is not its output; skip what was read */
			g->off += have;
			have = 0;
		} else {
			memmove(buf, buf + used, have);
		}
	}
	close(in);
	close(out);
	snprintf(pos, sizeof(pos), "%llu %llu\n", (unsigned long long)g->off, (unsigned long long)g->seq);
	pos_path(g, path, sizeof(path));
	util_write_file_replace(path, pos, strlen(pos));
}
