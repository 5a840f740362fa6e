/* logs.c: following a run's output (see logs.h). There is one source: the records
 * lantern-shim writes to RUN/log, "SEQ SEC.NSEC FD LEN\n" LEN bytes "\n", rotated to
 * RUN/log.1 at half of the output cap; and one reader for both kinds of client:
 *
 * `lantern run` (READ_OUTPUT) gets {"type":"output","fd","data"(base64)} for every record
 * from the first, then {"type":"exit","status","exit_code","reason"} at the run's end.
 *
 * `lantern logs` (READ_RECORDS) asks {"op":"logs","run_id":R,"from":SEQ,"follow":bool}
 * and gets {"type":"log","seq","t","fd","data"} for every kept record with seq >= SEQ,
 * in order, then, when the run has ended (or at once without follow),
 * {"type":"end","next":N,"status",...}. A client that lost its connection asks again
 * from the last seq it got + 1: no gap, no duplicate.
 *
 * Records rotated away before they were read are reported (a gap), never skipped
 * silently. Readers are woken by inotify on the run directory (a write, or the rename
 * of a rotation) while the run lives, and read to the end when it ends. */
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

/* One client reading a run's log: `lantern logs` (records) or `lantern run` (output). */
enum read_mode { READ_RECORDS, READ_OUTPUT };

struct reader {
	struct logs *g;
	struct api_client *c;
	struct run *r;
	enum read_mode mode;
	uint64_t next;              /* next seq the client needs */
	int fd;                     /* "log", being read */
	ino_t ino;
	off_t off;                  /* start of the first record of it not parsed yet */
	int old_fd;                 /* "log.1", read while next is older than log's first */
	ino_t old_ino;
	off_t old_off;
	bool ending;                /* the run has ended (or no follow): read to the end, then end */
	bool waiting;               /* for the client to take what is queued */
	uint64_t timer;             /* the next slice, on the loop's next turn */
	struct reader *nextr;
};

struct logs_run {
	int wd;                     /* inotify watch on the run directory, or -1 */
};

struct logs {
	struct loop *loop;
	struct runs *runs;
	int slot;
	int inotify;
	struct reader *readers;
};

static char *b64(const char *data, size_t len)
{
	size_t n = sodium_base64_encoded_len(len, sodium_base64_VARIANT_ORIGINAL);
	char *out = malloc(n);

	if (out)
		sodium_bin2base64(out, n, (const unsigned char *)data, len, sodium_base64_VARIANT_ORIGINAL);
	return out;
}

static void send_record(struct reader *f, uint64_t seq, const char *t, int fd, const char *data,
			size_t len)
{
	char *d = b64(data, len);

	if (!d)
		return;
	if (f->mode == READ_OUTPUT)
		api_send(f->c, json_pack("{s:s, s:i, s:s}", "type", "output", "fd", fd, "data", d));
	else
		api_send(f->c, json_pack("{s:s, s:I, s:s, s:i, s:s}", "type", "log", "seq", (json_int_t)seq,
					 "t", t, "fd", fd, "data", d));
	free(d);
}

/* Records [from, to) are gone (rotated away before they were read): said, never skipped
 * silently. */
static void send_gap(struct reader *f, uint64_t from, uint64_t to)
{
	char note[128];

	if (f->mode == READ_RECORDS) {
		api_send(f->c, json_pack("{s:s, s:I, s:I}", "type", "gap", "from", (json_int_t)from,
					 "to", (json_int_t)to));
		return;
	}
	snprintf(note, sizeof(note), "[lantern: %llu output records were rotated away before they were sent]\n",
		 (unsigned long long)(to - from));
	send_record(f, 0, "", 2, note, strlen(note));
}

/* The header of the record at p (len bytes left): "SEQ SEC.NSEC FD LEN\n". Parsed by
 * hand, within the line: the log is the workload's bytes, framed by the shim. */
struct rec_hdr {
	uint64_t seq, len;
	int fd;
	char t[40];
	size_t hlen;
};

static bool read_u64(const char **p, const char *end, char stop, uint64_t *v)
{
	const char *q = *p;
	uint64_t n = 0;

	if (q >= end || *q < '0' || *q > '9')
		return false;
	while (q < end && *q >= '0' && *q <= '9') {
		if (n > (UINT64_MAX - 9) / 10)
			return false;
		n = n * 10 + (uint64_t)(*q++ - '0');
	}
	if (q >= end || *q != stop)
		return false;
	*p = q + 1;
	*v = n;
	return true;
}

static bool parse_hdr(const char *buf, size_t len, struct rec_hdr *h)
{
	const char *p = buf, *end = buf + (len < 128 ? len : 128), *ts;
	uint64_t fd;

	if (!read_u64(&p, end, ' ', &h->seq))
		return false;
	ts = p;
	while (p < end && *p != ' ')
		p++;
	if (p >= end || (size_t)(p - ts) >= sizeof(h->t) || p == ts)
		return false;
	memcpy(h->t, ts, (size_t)(p - ts));
	h->t[p - ts] = '\0';
	p++;
	if (!read_u64(&p, end, ' ', &fd) || (fd != 1 && fd != 2) || !read_u64(&p, end, '\n', &h->len))
		return false;
	h->fd = (int)fd;
	h->hlen = (size_t)(p - buf);
	return true;
}

typedef void (*record_cb)(struct reader *f, uint64_t seq, const char *t, int fd, const char *data,
			  size_t len);

/* Records sent per slice at most (each is a JSON line to encode). */
#define LOGS_SLICE_RECORDS 256

/* Calls back for each complete record in buf[0..len) with lo <= seq < hi, at most
 * LOGS_SLICE_RECORDS of them; returns the bytes consumed (complete records). */
static size_t parse_records(struct reader *f, const char *buf, size_t len, uint64_t lo, uint64_t hi,
			    record_cb cb)
{
	size_t off = 0, sent = 0;
	struct rec_hdr h;

	while (off < len && sent < LOGS_SLICE_RECORDS) {
		if (!parse_hdr(buf + off, len - off, &h))
			break; /* incomplete (the shim is writing it) or damaged: stop rather than guess */
		if (h.len > len - off - h.hlen || len - off - h.hlen - h.len < 1)
			break;
		if (h.seq >= lo && h.seq < hi) {
			cb(f, h.seq, h.t, h.fd, buf + off + h.hlen, (size_t)h.len);
			sent++;
		}
		off += h.hlen + (size_t)h.len + 1;
	}
	return off;
}

/* A slice of the log at most this big is read and sent per turn of the loop, and no
 * more while the client has this much not taken yet: the output of a workload that
 * wrote millions of records costs a reader turns, never one long stall, and memory
 * for at most one slice and the queue's bound. A record is at most 64 KiB + its
 * header (the shim's read size), so a slice always holds one whole record. */
#define LOGS_SLICE (256u << 10)
#define LOGS_QUEUE_HIGH (256u << 10)

/* Up to LOGS_SLICE bytes of fd from off: *len bytes in *buf (malloc'd). */
static int read_slice(int fd, off_t off, char **buf, size_t *len)
{
	ssize_t n;

	*len = 0;
	if (!(*buf = malloc(LOGS_SLICE)))
		return -ENOMEM;
	while ((n = pread(fd, *buf, LOGS_SLICE, off)) < 0 && errno == EINTR)
		;
	if (n < 0) {
		free(*buf);
		*buf = NULL;
		return -errno;
	}
	*len = (size_t)n;
	return 0;
}

static void emit(struct reader *f, uint64_t seq, const char *t, int fd, const char *data, size_t len)
{
	if (seq > f->next)
		send_gap(f, f->next, seq); /* rotated away before it was read */
	send_record(f, seq, t, fd, data, len);
	f->next = seq + 1;
}

/* The seq of the first record of fd, or UINT64_MAX when it has none (yet). */
static uint64_t first_seq(int fd)
{
	char head[128];
	struct rec_hdr h;
	ssize_t n = pread(fd, head, sizeof(head), 0);

	return n > 0 && parse_hdr(head, (size_t)n, &h) ? h.seq : UINT64_MAX;
}

static void path_of(const struct reader *f, const char *name, char *out, size_t len)
{
	snprintf(out, len, "%s/%s", run_dir(f->r), name);
}

/* Opens *fd on path if it is not open, or again when path is another file now. */
static void open_again(const char *path, int *fd, ino_t *ino, off_t *off)
{
	struct stat st;

	if (*fd >= 0 && (stat(path, &st) < 0 || st.st_ino != *ino)) {
		/* rotated (log) or replaced (log.1): a file renamed away is complete, and what
		 * it held is in log.1 now, read from there */
		close(*fd);
		*fd = -1;
	}
	if (*fd < 0 && (*fd = open(path, O_RDONLY | O_CLOEXEC)) >= 0) {
		fstat(*fd, &st);
		*ino = st.st_ino;
		*off = 0;
	}
}

/* One slice: from log.1 while the client needs records older than log's first, else
 * from log. Returns true if it got anywhere (records read, or a gap said). */
static bool step(struct reader *f)
{
	char path[PATH_MAX + 16], *buf = NULL;
	uint64_t cur_first;
	size_t len = 0, used;

	path_of(f, "log", path, sizeof(path));
	open_again(path, &f->fd, &f->ino, &f->off);
	cur_first = f->fd >= 0 ? first_seq(f->fd) : UINT64_MAX;
	if (f->next < cur_first) {
		path_of(f, "log.1", path, sizeof(path));
		open_again(path, &f->old_fd, &f->old_ino, &f->old_off);
		if (f->old_fd >= 0 && read_slice(f->old_fd, f->old_off, &buf, &len) == 0 && len) {
			used = parse_records(f, buf, len, f->next, cur_first, emit);
			f->old_off += (off_t)used;
			free(buf);
			if (used)
				return true;
		} else {
			free(buf);
		}
		/* log.1 has nothing more before log's first: what lay between was rotated
		 * away (said once), or log has nothing yet */
		if (cur_first == UINT64_MAX)
			return false;
		send_gap(f, f->next, cur_first);
		f->next = cur_first;
		return true;
	}
	if (f->fd < 0 || read_slice(f->fd, f->off, &buf, &len) < 0 || !len) {
		free(buf);
		return false;
	}
	used = parse_records(f, buf, len, f->next, UINT64_MAX, emit);
	f->off += (off_t)used;
	free(buf);
	return used > 0;
}

static void kick(struct reader *f);

static void on_slice(struct loop *l, void *arg)
{
	struct reader *f = arg;

	f->timer = 0;
	kick(f);
}

static void on_drained(void *arg, struct api_client *c)
{
	struct reader *f = arg;

	f->waiting = false;
	kick(f);
}

static void reader_finish(struct reader *f);

/* Sends one slice if the client keeps up, and comes back on the loop's next turn (or
 * when the client has taken its queue) while there is more; at the end of what there
 * is: waits for the log to grow, or ends the client once the run has ended. */
static void kick(struct reader *f)
{
	if (f->timer || f->waiting)
		return;
	if (api_queued(f->c) > LOGS_QUEUE_HIGH) {
		if (api_queued(f->c) == SIZE_MAX)
			return; /* going away: reader_gone frees f */
		f->waiting = true;
		api_on_drain(f->c, on_drained, f);
		return;
	}
	if (step(f)) {
		if (!(f->timer = loop_timer_add(f->g->loop, 0, on_slice, f)))
			reader_finish(f);
		return;
	}
	if (f->ending)
		reader_finish(f);
}

static void reader_unlink(struct reader *f)
{
	for (struct reader **pp = &f->g->readers; *pp; pp = &(*pp)->nextr) {
		if (*pp == f) {
			*pp = f->nextr;
			break;
		}
	}
}

static void reader_free(struct reader *f)
{
	reader_unlink(f);
	if (f->timer)
		loop_timer_cancel(f->g->loop, f->timer);
	if (f->waiting)
		api_on_drain(f->c, NULL, NULL);
	if (f->fd >= 0)
		close(f->fd);
	if (f->old_fd >= 0)
		close(f->old_fd);
	free(f);
}

static void reader_gone(void *arg, struct api_client *c)
{
	reader_free(arg);
}

/* Everything is read: how the run stands (or ended), then the client is done. */
static void reader_finish(struct reader *f)
{
	struct run *r = f->r;
	bool final = run_status_final(run_status(r));
	json_t *m;

	if (f->mode == READ_OUTPUT) {
		m = json_pack("{s:s, s:s, s:s, s:i}", "type", "exit", "run_id", run_id(r), "status",
			      run_status_name(run_status(r)), "exit_code", run_exit_code(r));
		if (run_reason(r)[0])
			json_object_set_new(m, "reason", json_string(run_reason(r)));
	} else {
		m = json_pack("{s:s, s:s, s:I, s:s}", "type", "end", "run_id", run_id(r), "next",
			      (json_int_t)f->next, "status", run_status_name(run_status(r)));
		if (final)
			json_object_set_new(m, "exit_code", json_integer(run_exit_code(r)));
	}
	api_on_close(f->c, NULL, NULL);
	api_send(f->c, m);
	api_finish(f->c);
	reader_free(f);
}

static void reader_start(struct logs *g, struct run *r, struct api_client *c, enum read_mode mode,
			 uint64_t from, bool follow)
{
	struct reader *f = calloc(1, sizeof(*f));

	if (!f) {
		api_finish(c);
		return;
	}
	f->g = g;
	f->c = c;
	f->r = r;
	f->mode = mode;
	f->fd = f->old_fd = -1;
	f->next = from;
	f->ending = !follow || run_status_final(run_status(r));
	f->nextr = g->readers;
	g->readers = f;
	api_on_close(c, reader_gone, f);
	kick(f);
}

void logs_follow(struct logs *g, struct run *r, struct api_client *c)
{
	reader_start(g, r, c, READ_OUTPUT, 0, true);
}

void logs_request(struct logs *g, struct run *r, struct api_client *c, json_t *req)
{
	json_t *from = json_object_get(req, "from");

	reader_start(g, r, c, READ_RECORDS,
		     json_is_integer(from) && json_integer_value(from) > 0 ? (uint64_t)json_integer_value(from) : 0,
		     json_is_true(json_object_get(req, "follow")));
}

/* ---- the run directory, watched while the run lives ---- */

static void on_inotify(struct loop *l, int fd, uint32_t events, void *arg)
{
	struct logs *g = arg;
	char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
	ssize_t n;

	while ((n = read(g->inotify, buf, sizeof(buf))) > 0) {
		for (char *p = buf; p < buf + n;) {
			struct inotify_event *ev = (struct inotify_event *)p;

			for (struct reader *f = g->readers, *nx; f; f = nx) {
				struct logs_run *lr = run_slot(f->r, g->slot);

				nx = f->nextr;
				if (lr && lr->wd >= 0 && lr->wd == ev->wd)
					kick(f);
			}
			p += sizeof(*ev) + ev->len;
		}
	}
}

static int watch(struct logs *g, struct run *r, struct lerr *e)
{
	struct logs_run *lr = run_slot(r, g->slot);

	if (!lr) {
		if (!(lr = calloc(1, sizeof(*lr))))
			return lerr_set(e, ENOMEM, "logs: out of memory");
		lr->wd = -1;
		run_set_slot(r, g->slot, lr);
	}
	if (lr->wd < 0 &&
	    (lr->wd = inotify_add_watch(g->inotify, run_dir(r), IN_MODIFY | IN_CREATE | IN_MOVED_TO)) < 0)
		return lerr_set(e, errno, "spawn: watching the output of %s: %s", run_id(r), strerror(errno));
	return 0;
}

static void unwatch(struct logs *g, struct run *r)
{
	struct logs_run *lr = run_slot(r, g->slot);

	if (lr && lr->wd >= 0) {
		inotify_rm_watch(g->inotify, lr->wd);
		lr->wd = -1;
	}
}

/* ---- the run hooks ---- */

static int on_prepared(void *arg, struct run *r, struct lerr *e)
{
	return watch(arg, r, e);
}

static int on_adopted(void *arg, struct run *r, struct lerr *e)
{
	struct lerr we = { 0 };

	if (watch(arg, r, &we) < 0)
		log_warn("run %s: %s", run_id(r), we.msg);
	return 0;
}

static void on_released(void *arg, struct run *r)
{
	unwatch(arg, r);
}

/* The shim closed the log before recording the exit: everything is there now. */
static void on_ended(void *arg, struct run *r)
{
	struct logs *g = arg;

	for (struct reader *f = g->readers, *nx; f; f = nx) {
		nx = f->nextr;
		if (f->r == r) {
			f->ending = true;
			kick(f);
		}
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
