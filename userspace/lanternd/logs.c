/* logs.c: `lantern logs RUN [-f]`: a run's timestamped output records (written by
 * lantern-shim to RUN/log, rotated to RUN/log.1) sent from a sequence number on.
 *
 * A client asks {"op":"logs","run_id":R,"from":SEQ,"follow":bool} and gets
 * {"type":"log","seq","t","fd","data"(base64)} for every kept record with seq >= SEQ,
 * in order, then, when the run has ended (or at once without follow),
 * {"type":"end","next":N,"status",...}. A client that lost its connection asks again
 * from the last seq it got + 1: no gap, no duplicate. Records rotated away before
 * they were read are reported as {"type":"gap","from","to"}, never silently skipped.
 *
 * Followers are polled every 100 ms (a rotation renames the file under a reader;
 * polling the name and the open file covers both without inotify bookkeeping). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "lanternd.h"
#include "lantern/util.h"

#define POLL_MS 100

struct logs_follower {
	struct daemon *d;
	struct client *c;
	char run_id[32];
	char dir[PATH_MAX];
	uint64_t next;           /* next seq the client needs */
	int fd;                  /* the "log" being read */
	ino_t ino;
	off_t off;               /* start of the first record not parsed yet */
	bool follow;
	struct logs_follower *nextf;
};

static struct logs_follower *followers;
static uint64_t poll_timer;

static void send_record(struct logs_follower *f, uint64_t seq, const char *t, int fd,
			const char *data, size_t len)
{
	size_t b64len = sodium_base64_encoded_len(len, sodium_base64_VARIANT_ORIGINAL);
	char *b64 = malloc(b64len);

	if (!b64)
		return;
	sodium_bin2base64(b64, b64len, (const unsigned char *)data, len, sodium_base64_VARIANT_ORIGINAL);
	api_send(f->c, json_pack("{s:s, s:I, s:s, s:i, s:s}", "type", "log", "seq", (json_int_t)seq,
				 "t", t, "fd", fd, "data", b64));
	free(b64);
}

/* Parses the records in buf[0..len); calls back for each complete one with lo <= seq
 * < hi; returns the bytes consumed (complete records). */
typedef void (*record_cb)(struct logs_follower *f, uint64_t seq, const char *t, int fd,
			  const char *data, size_t len);

static size_t parse_records(struct logs_follower *f, const char *buf, size_t len, uint64_t lo,
			    uint64_t hi, record_cb cb)
{
	size_t off = 0;

	while (off < len) {
		const char *nl = memchr(buf + off, '\n', len - off);
		unsigned long long seq;
		char t[40];
		int fd;
		size_t dlen;

		if (!nl)
			break;
		if (sscanf(buf + off, "%llu %39s %d %zu", &seq, t, &fd, &dlen) != 4)
			break; /* a damaged log: stop rather than guess */
		if ((size_t)(nl - buf) + 1 + dlen + 1 > len)
			break; /* incomplete: the shim is still writing it */
		if (seq >= lo && seq < hi)
			cb(f, seq, t, fd, nl + 1, dlen);
		off = (size_t)(nl - buf) + 1 + dlen + 1;
	}
	return off;
}

static int read_all(int fd, off_t from, char **buf, size_t *len)
{
	struct stat st;
	ssize_t n;

	*buf = NULL;
	*len = 0;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (st.st_size <= from)
		return 0;
	*buf = malloc((size_t)(st.st_size - from));
	if (!*buf)
		return -ENOMEM;
	n = pread(fd, *buf, (size_t)(st.st_size - from), from);
	if (n < 0) {
		free(*buf);
		*buf = NULL;
		return -errno;
	}
	*len = (size_t)n;
	return 0;
}

static void emit(struct logs_follower *f, uint64_t seq, const char *t, int fd, const char *data,
		 size_t len)
{
	send_record(f, seq, t, fd, data, len);
	f->next = seq + 1;
}

static void gap_then_emit(struct logs_follower *f, uint64_t seq, const char *t, int fd,
			  const char *data, size_t len)
{
	if (seq > f->next)
		api_send(f->c, json_pack("{s:s, s:I, s:I}", "type", "gap", "from", (json_int_t)f->next,
					 "to", (json_int_t)seq));
	emit(f, seq, t, fd, data, len);
}

/* Records [f->next, hi) from log.1, for a reader that fell behind a rotation (or, at
 * the start, everything it keeps; a gap before its first record is reported). */
static void fill_from_old(struct logs_follower *f, uint64_t hi)
{
	char path[PATH_MAX + 16], *buf;
	size_t len;
	int fd;

	snprintf(path, sizeof(path), "%s/log.1", f->dir);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	if (read_all(fd, 0, &buf, &len) == 0 && buf) {
		parse_records(f, buf, len, f->next, hi, hi == UINT64_MAX ? gap_then_emit : emit);
		free(buf);
	}
	close(fd);
}

static void gap_check(struct logs_follower *f, uint64_t seq, const char *t, int fd,
		      const char *data, size_t len)
{
	if (seq > f->next) {
		fill_from_old(f, seq);
		if (seq > f->next)
			api_send(f->c, json_pack("{s:s, s:I, s:I}", "type", "gap", "from", (json_int_t)f->next,
						 "to", (json_int_t)seq));
	}
	emit(f, seq, t, fd, data, len);
}

/* Sends what the open "log" has past f->off. */
static void pump_fd(struct logs_follower *f)
{
	char *buf;
	size_t len;

	if (read_all(f->fd, f->off, &buf, &len) < 0 || !buf)
		return;
	f->off += (off_t)parse_records(f, buf, len, f->next, UINT64_MAX, gap_check);
	free(buf);
}

static void pump(struct logs_follower *f)
{
	char path[PATH_MAX + 16];
	struct stat st;

	snprintf(path, sizeof(path), "%s/log", f->dir);
	for (int round = 0; round < 4; round++) {
		if (f->fd < 0) {
			f->fd = open(path, O_RDONLY | O_CLOEXEC);
			if (f->fd < 0)
				return;
			fstat(f->fd, &st);
			f->ino = st.st_ino;
			f->off = 0;
		}
		pump_fd(f);
		if (stat(path, &st) == 0 && st.st_ino == f->ino)
			return;
		/* rotated: the old file is complete once renamed; finish it, then the new */
		pump_fd(f);
		close(f->fd);
		f->fd = -1;
	}
}

static void follower_free(struct logs_follower *f)
{
	for (struct logs_follower **pp = &followers; *pp; pp = &(*pp)->nextf) {
		if (*pp == f) {
			*pp = f->nextf;
			break;
		}
	}
	if (f->fd >= 0)
		close(f->fd);
	free(f);
}

static void send_end(struct logs_follower *f, const struct run *r)
{
	json_t *m = json_pack("{s:s, s:s, s:I}", "type", "end", "run_id", f->run_id, "next",
			      (json_int_t)f->next);

	if (r) {
		json_object_set_new(m, "status", json_string(run_status_name(r->status)));
		if (run_status_final(r->status))
			json_object_set_new(m, "exit_code", json_integer(r->exit_code));
	}
	api_send(f->c, m);
	api_finish(f->c);
}

static void on_poll(struct loop *l, void *arg)
{
	struct daemon *d = arg;

	poll_timer = 0;
	for (struct logs_follower *f = followers, *nx; f; f = nx) {
		struct run *r = run_find(d, f->run_id);
		bool ended = !r || run_status_final(r->status);

		nx = f->nextf;
		pump(f);
		if (ended) {
			/* the shim closed the log before recording the exit: all is read now */
			pump(f);
			send_end(f, r);
			follower_free(f);
		}
	}
	if (followers)
		poll_timer = loop_timer_add(d->loop, POLL_MS, on_poll, d);
}

void logs_request(struct daemon *d, struct client *c, struct run *r, json_t *req)
{
	struct logs_follower *f = calloc(1, sizeof(*f));
	json_t *from = json_object_get(req, "from");

	if (!f) {
		api_finish(c);
		return;
	}
	f->d = d;
	f->c = c;
	f->fd = -1;
	snprintf(f->run_id, sizeof(f->run_id), "%s", r->id);
	snprintf(f->dir, sizeof(f->dir), "%s", r->dir);
	f->next = json_is_integer(from) && json_integer_value(from) > 0 ? (uint64_t)json_integer_value(from) : 0;
	f->follow = json_is_true(json_object_get(req, "follow"));
	/* what is kept before the current log is in log.1 */
	fill_from_old(f, UINT64_MAX);
	pump(f);
	if (!f->follow || run_status_final(r->status)) {
		pump(f);
		send_end(f, r);
		if (f->fd >= 0)
			close(f->fd);
		free(f);
		return;
	}
	f->nextf = followers;
	followers = f;
	if (!poll_timer)
		poll_timer = loop_timer_add(d->loop, POLL_MS, on_poll, d);
}

void logs_unfollow_client(struct daemon *d, struct client *c)
{
	for (struct logs_follower *f = followers, *nx; f; f = nx) {
		nx = f->nextf;
		if (f->c == c)
			follower_free(f);
	}
}
