/* logs.c: following a run's output (see logs.h).
 *
 * `lantern run` follows RUN/stdout and RUN/stderr, watched with inotify from the
 * moment the instance is prepared; each follower keeps its offset in both, and gets
 * the run's end once everything was sent.
 *
 * `lantern logs` reads the records lantern-shim writes to RUN/log, "SEQ SEC.NSEC FD
 * LEN\n" LEN bytes "\n", rotated to RUN/log.1 at half of the output cap. A client asks
 * {"op":"logs","run_id":R,"from":SEQ,"follow":bool} and gets
 * {"type":"log","seq","t","fd","data"(base64)} for every kept record with seq >= SEQ,
 * in order, then, when the run has ended (or at once without follow),
 * {"type":"end","next":N,"status",...}. A client that lost its connection asks again
 * from the last seq it got + 1: no gap, no duplicate. Records rotated away before they
 * were read are reported as {"type":"gap","from","to"}, never silently skipped.
 * Followers are polled every 100 ms (a rotation renames the file under a reader;
 * polling the name and the open file covers both without inotify bookkeeping). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "lantern/logs.h"

#define POLL_MS 100

/* A `lantern run` follower of stdout and stderr. */
struct follower {
	struct logs *g;
	struct run *r;
	struct api_client *c;
	off_t off[2];               /* bytes of stdout, stderr already sent */
	struct follower *next;
};

/* A `lantern logs` follower of the record log. */
struct log_reader {
	struct logs *g;
	struct api_client *c;
	char run_id[32];
	char dir[PATH_MAX];
	uint64_t next;              /* next seq the client needs */
	int fd;                     /* the "log" being read */
	ino_t ino;
	off_t off;                  /* start of the first record not parsed yet */
	bool follow;
	struct log_reader *nextr;
};

struct logs_run {
	int wd[2];                  /* inotify watches on stdout, stderr */
};

struct logs {
	struct loop *loop;
	struct runs *runs;
	int slot;
	int inotify;
	struct follower *followers;
	struct log_reader *readers;
	uint64_t poll_timer;
};

static void send_output(struct api_client *c, int fd, const char *buf, size_t len)
{
	size_t b64len = sodium_base64_encoded_len(len, sodium_base64_VARIANT_ORIGINAL);
	char *b64 = malloc(b64len);

	if (!b64)
		return;
	sodium_bin2base64(b64, b64len, (const unsigned char *)buf, len, sodium_base64_VARIANT_ORIGINAL);
	api_send(c, json_pack("{s:s, s:i, s:s}", "type", "output", "fd", fd, "data", b64));
	free(b64);
}

/* ---- `lantern run`: stdout and stderr ---- */

/* Sends what f has not seen yet. */
static void pump_follower(struct follower *f)
{
	char buf[65536];

	for (int i = 0; i < 2; i++) {
		char path[PATH_MAX + 16];
		ssize_t n;
		int fd;

		snprintf(path, sizeof(path), "%s/%s", run_dir(f->r), i ? "stderr" : "stdout");
		if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
			continue;
		while ((n = pread(fd, buf, sizeof(buf), f->off[i])) > 0) {
			send_output(f->c, i + 1, buf, (size_t)n);
			f->off[i] += n;
		}
		close(fd);
	}
}

static void follower_unlink(struct logs *g, struct follower *f)
{
	for (struct follower **pp = &g->followers; *pp; pp = &(*pp)->next)
		if (*pp == f) {
			*pp = f->next;
			break;
		}
}

/* The run ended: the rest of its output, then how it ended. */
static void follower_end(struct follower *f)
{
	struct run *r = f->r;
	json_t *m;

	pump_follower(f);
	m = json_pack("{s:s, s:s, s:s, s:i}", "type", "exit", "run_id", run_id(r), "status",
		      run_status_name(run_status(r)), "exit_code", run_exit_code(r));
	if (run_reason(r)[0])
		json_object_set_new(m, "reason", json_string(run_reason(r)));
	api_on_close(f->c, NULL, NULL);
	api_send(f->c, m);
	api_finish(f->c);
	follower_unlink(f->g, f);
	free(f);
}

static void follower_gone(void *arg, struct api_client *c)
{
	struct follower *f = arg;

	follower_unlink(f->g, f);
	free(f);
}

void logs_follow(struct logs *g, struct run *r, struct api_client *c)
{
	struct follower *f = calloc(1, sizeof(*f));

	if (!f) {
		api_finish(c);
		return;
	}
	f->g = g;
	f->r = r;
	f->c = c;
	f->next = g->followers;
	g->followers = f;
	api_on_close(c, follower_gone, f);
	if (run_status_final(run_status(r)))
		follower_end(f);
	else
		pump_follower(f);
}

static void on_inotify(struct loop *l, int fd, uint32_t events, void *arg)
{
	struct logs *g = arg;
	char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
	ssize_t n;

	while ((n = read(g->inotify, buf, sizeof(buf))) > 0) {
		for (char *p = buf; p < buf + n;) {
			struct inotify_event *ev = (struct inotify_event *)p;

			for (struct follower *f = g->followers; f; f = f->next) {
				struct logs_run *lr = run_slot(f->r, g->slot);

				if (lr && ev->wd >= 0 && (lr->wd[0] == ev->wd || lr->wd[1] == ev->wd))
					pump_follower(f);
			}
			p += sizeof(*ev) + ev->len;
		}
	}
}

static struct logs_run *lr_get(struct logs *g, struct run *r)
{
	struct logs_run *lr = run_slot(r, g->slot);

	if (!lr && (lr = calloc(1, sizeof(*lr)))) {
		lr->wd[0] = lr->wd[1] = -1;
		run_set_slot(r, g->slot, lr);
	}
	return lr;
}

static int watch_output(struct logs *g, struct run *r, struct lerr *e)
{
	struct logs_run *lr = lr_get(g, r);

	if (!lr)
		return lerr_set(e, ENOMEM, "logs: out of memory");
	for (int i = 0; i < 2; i++) {
		char path[PATH_MAX + 16];
		int fd;

		if (lr->wd[i] >= 0)
			continue;
		snprintf(path, sizeof(path), "%s/%s", run_dir(r), i ? "stderr" : "stdout");
		if ((fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600)) < 0)
			return lerr_set(e, errno, "spawn: watching output of %s: %s", run_id(r), strerror(errno));
		close(fd);
		if ((lr->wd[i] = inotify_add_watch(g->inotify, path, IN_MODIFY)) < 0)
			return lerr_set(e, errno, "spawn: watching output of %s: %s", run_id(r), strerror(errno));
	}
	return 0;
}

static void unwatch(struct logs *g, struct run *r)
{
	struct logs_run *lr = run_slot(r, g->slot);

	for (int i = 0; lr && i < 2; i++) {
		if (lr->wd[i] >= 0)
			inotify_rm_watch(g->inotify, lr->wd[i]);
		lr->wd[i] = -1;
	}
}

/* ---- `lantern logs`: the record log ---- */

static void send_record(struct log_reader *f, uint64_t seq, const char *t, int fd, const char *data,
			size_t len)
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

typedef void (*record_cb)(struct log_reader *f, uint64_t seq, const char *t, int fd,
			  const char *data, size_t len);

/* Parses the records in buf[0..len); calls back for each complete one with lo <= seq
 * < hi; returns the bytes consumed (complete records). */
static size_t parse_records(struct log_reader *f, const char *buf, size_t len, uint64_t lo,
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
	if (!(*buf = malloc((size_t)(st.st_size - from) + 1)))
		return -ENOMEM;
	if ((n = pread(fd, *buf, (size_t)(st.st_size - from), from)) < 0) {
		free(*buf);
		*buf = NULL;
		return -errno;
	}
	(*buf)[n] = '\0';
	*len = (size_t)n;
	return 0;
}

static void emit(struct log_reader *f, uint64_t seq, const char *t, int fd, const char *data,
		 size_t len)
{
	send_record(f, seq, t, fd, data, len);
	f->next = seq + 1;
}

static void gap_then_emit(struct log_reader *f, uint64_t seq, const char *t, int fd,
			  const char *data, size_t len)
{
	if (seq > f->next)
		api_send(f->c, json_pack("{s:s, s:I, s:I}", "type", "gap", "from", (json_int_t)f->next,
					 "to", (json_int_t)seq));
	emit(f, seq, t, fd, data, len);
}

/* Records [f->next, hi) from log.1, for a reader that fell behind a rotation (or, at
 * the start, everything it keeps; a gap before its first record is reported). */
static void fill_from_old(struct log_reader *f, uint64_t hi)
{
	char path[PATH_MAX + 16], *buf;
	size_t len;
	int fd;

	snprintf(path, sizeof(path), "%s/log.1", f->dir);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return;
	if (read_all(fd, 0, &buf, &len) == 0 && buf) {
		parse_records(f, buf, len, f->next, hi, hi == UINT64_MAX ? gap_then_emit : emit);
		free(buf);
	}
	close(fd);
}

static void gap_check(struct log_reader *f, uint64_t seq, const char *t, int fd, const char *data,
		      size_t len)
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
static void pump_fd(struct log_reader *f)
{
	char *buf;
	size_t len;

	if (read_all(f->fd, f->off, &buf, &len) < 0 || !buf)
		return;
	f->off += (off_t)parse_records(f, buf, len, f->next, UINT64_MAX, gap_check);
	free(buf);
}

static void pump_log(struct log_reader *f)
{
	char path[PATH_MAX + 16];
	struct stat st;

	snprintf(path, sizeof(path), "%s/log", f->dir);
	for (int round = 0; round < 4; round++) {
		if (f->fd < 0) {
			if ((f->fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
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

static void reader_free(struct log_reader *f)
{
	for (struct log_reader **pp = &f->g->readers; *pp; pp = &(*pp)->nextr) {
		if (*pp == f) {
			*pp = f->nextr;
			break;
		}
	}
	if (f->fd >= 0)
		close(f->fd);
	free(f);
}

static void reader_gone(void *arg, struct api_client *c)
{
	reader_free(arg);
}

static void send_end(struct log_reader *f, const struct run *r)
{
	json_t *m = json_pack("{s:s, s:s, s:I}", "type", "end", "run_id", f->run_id, "next",
			      (json_int_t)f->next);

	if (r) {
		json_object_set_new(m, "status", json_string(run_status_name(run_status(r))));
		if (run_status_final(run_status(r)))
			json_object_set_new(m, "exit_code", json_integer(run_exit_code(r)));
	}
	api_on_close(f->c, NULL, NULL);
	api_send(f->c, m);
	api_finish(f->c);
}

static void on_poll(struct loop *l, void *arg)
{
	struct logs *g = arg;

	g->poll_timer = 0;
	for (struct log_reader *f = g->readers, *nx; f; f = nx) {
		struct run *r = runs_find(g->runs, f->run_id);
		bool ended = !r || run_status_final(run_status(r));

		nx = f->nextr;
		pump_log(f);
		if (ended) {
			/* the shim closed the log before recording the exit: all is read now */
			pump_log(f);
			send_end(f, r);
			reader_free(f);
		}
	}
	if (g->readers)
		g->poll_timer = loop_timer_add(g->loop, POLL_MS, on_poll, g);
}

void logs_request(struct logs *g, struct run *r, struct api_client *c, json_t *req)
{
	struct log_reader *f = calloc(1, sizeof(*f));
	json_t *from = json_object_get(req, "from");

	if (!f) {
		api_finish(c);
		return;
	}
	f->g = g;
	f->c = c;
	f->fd = -1;
	snprintf(f->run_id, sizeof(f->run_id), "%s", run_id(r));
	snprintf(f->dir, sizeof(f->dir), "%s", run_dir(r));
	f->next = json_is_integer(from) && json_integer_value(from) > 0 ? (uint64_t)json_integer_value(from) : 0;
	f->follow = json_is_true(json_object_get(req, "follow"));
	/* what is kept before the current log is in log.1 */
	fill_from_old(f, UINT64_MAX);
	pump_log(f);
	if (!f->follow || run_status_final(run_status(r))) {
		pump_log(f);
		send_end(f, r);
		if (f->fd >= 0)
			close(f->fd);
		free(f);
		return;
	}
	f->nextr = g->readers;
	g->readers = f;
	api_on_close(c, reader_gone, f);
	if (!g->poll_timer)
		g->poll_timer = loop_timer_add(g->loop, POLL_MS, on_poll, g);
}

/* ---- the run hooks ---- */

static int on_prepared(void *arg, struct run *r, struct lerr *e)
{
	return watch_output(arg, r, e);
}

static int on_adopted(void *arg, struct run *r, struct lerr *e)
{
	struct lerr we = { 0 };

	if (watch_output(arg, r, &we) < 0)
		log_warn("run %s: %s", run_id(r), we.msg);
	return 0;
}

static void on_released(void *arg, struct run *r)
{
	unwatch(arg, r);
}

static void on_ended(void *arg, struct run *r)
{
	struct logs *g = arg;

	for (struct follower *f = g->followers, *nx; f; f = nx) {
		nx = f->next;
		if (f->r == r)
			follower_end(f);
	}
}

static void on_free(void *arg, struct run *r)
{
	struct logs *g = arg;

	unwatch(g, r);
	free(run_slot(r, g->slot));
	run_set_slot(r, g->slot, NULL);
}

static const struct run_hooks logs_hooks = {
	.name = "logs",
	.prepared = on_prepared,
	.released = on_released,
	.ended = on_ended,
	.adopted = on_adopted,
	.free = on_free,
};

int logs_subscribe(struct logs *g, struct runs *t, struct lerr *e)
{
	g->runs = t;
	if ((g->slot = runs_subscribe(t, &logs_hooks, g)) < 0)
		return lerr_set(e, -g->slot, "logs: cannot subscribe to runs");
	return 0;
}

int logs_open(struct loop *l, struct logs **out, struct lerr *e)
{
	struct logs *g = calloc(1, sizeof(*g));
	int err;

	if (!g)
		return lerr_set(e, ENOMEM, "logs: out of memory");
	g->loop = l;
	g->inotify = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (g->inotify < 0 || (err = loop_add(l, g->inotify, EPOLLIN, on_inotify, g)) < 0) {
		err = lerr_set(e, errno, "logs: inotify: %s", strerror(errno));
		if (g->inotify >= 0)
			close(g->inotify);
		free(g);
		return err;
	}
	*out = g;
	return 0;
}

void logs_close(struct logs *g)
{
	if (!g)
		return;
	loop_del(g->loop, g->inotify);
	close(g->inotify);
	free(g);
}
