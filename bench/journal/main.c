/* bench/journal: durable appends per second of the run journal with group commit, for
 * 1, 16 and 256 concurrent runs, side by side in the same run, in four shapes:
 *  - loop: the journal driven as lanternd drives it (userspace/durable/durable.c): ONE
 *    event-loop thread (lanternd's own loop, epoll) appends every run's records
 *    (journal_append), parks each answer and calls journal_syncer_request; the syncer,
 *    started with an eventfd as notify_fd, flushes a batch (syncfs, fdatasync for one
 *    journal; one write and one fdatasync of the node log beside the journals, as
 *    lanternd's <state>/journal.log, once a journal has had its first sync) and bumps
 *    the eventfd; the loop reads it, walks the parked answers as
 *    flush_pending does and answers those whose record is durable
 *    (journal_durable_seq). Each run has one append in flight at a time: its next
 *    record is appended only once its previous one is durable, as a workload waiting
 *    for its harness reply does. What lanternd does besides (the harness API's socket
 *    reads and writes, JSON, harness_state_apply) is not in it; see measure_loop.
 *  - threads: a thread per run, each journal_append + journal_syncer_wait (the shape
 *    of the earlier tables; lanternd has no thread per run);
 *  - replicated: as threads, with the journal replicated to a journal store (lanternd
 *    --journal-store: every append durable in the file AND committed in PostgreSQL
 *    before its caller goes on);
 *  - SQLite (WAL, synchronous=FULL, one transaction per append, one connection and
 *    thread per run: its best concurrency), the same records.
 * The targets (>= 1x SQLite at 1 run, >= 20x at 256) are judged on the loop rows. Then
 * one journal appending with an fdatasync per append (no syncer), format 1
 * (every append extends the file) beside format 2 (preallocated), with the
 * filesystem-journal commits each costs where the directory's filesystem has a jbd2
 * journal; the time to resume a 10,000-step run (verify the journal and replay every
 * record into the harness state, which is what lanternd does on restart), with SQLite
 * reading the same records back as its peer; and the chain's SHA-256 over that
 * journal's records with libcrypto (what the journal uses) beside libsodium's.
 *
 * Every append is durable before its run goes on, in all of them: the loop answers a
 * run only once journal_durable_seq reaches its record, the threads wait on the syncer
 * (journal_syncer_wait), the replicated one on the store as well (journal_store_wait;
 * PostgreSQL with fsync and synchronous_commit on), SQLite commits with
 * synchronous=FULL. The machine is shared, so each row is measured in several rounds,
 * the four back to back in each; the table gives medians, the ratios being the medians
 * of each round's.
 *
 *   build/bench/journal [--seconds S] [--rounds R] [--runs N] [--dir DIR] [--store URL]
 *                       [--only resume|loop]
 * (default 3 s per cell, 3 rounds, /var/tmp; without --store, a private PostgreSQL 15
 * is started under DIR when run as root, else the replicated rows are left out;
 * --only resume measures the resume row and the chain's SHA-256 alone, no appends;
 * --only loop the loop rows alone, no peer: for profiling lanternd's path; --runs N the
 * row of N runs alone) */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <sodium.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include "../pgserver.h"
#include "lantern/harness.h"
#include "lantern/journal.h"
#include "lantern/loop.h"
#include "lantern/util.h"

static char dir[512] = "/var/tmp";
static double seconds = 3;
static int rounds = 3;
static bool only_resume, only_loop;
static int only_runs;               /* --runs N: that row alone */
static struct journal_syncer *syncer;
static struct journal_store *store;
static volatile int stop_flag;

/* A step_completed record as a workload's tool call produces it (~300 bytes). */
static int make_record(char *buf, size_t len, int run, uint64_t i)
{
	return snprintf(buf, len,
			"{\"attempt\":1,\"exit_code\":0,\"result\":\"tool output %d/%llu: the quick brown "
			"fox jumps over the lazy dog; status=ok items=[1,2,3,4,5,6,7,8]\",\"step_id\":"
			"\"step-%llu\",\"usage\":{\"input_tokens\":1532,\"model\":\"m\",\"output_tokens\""
			":211,\"provider\":\"p\"},\"cost_usd\":0.0077}",
			run, (unsigned long long)i, (unsigned long long)i);
}

struct worker {
	pthread_t th;
	int id;
	struct journal *j;
	sqlite3 *db;
	uint64_t appends;
	int err;
};

static void *journal_worker(void *arg)
{
	struct worker *w = arg;
	struct lerr e;
	char rec[512];

	while (!stop_flag) {
		uint64_t seq;
		int n = make_record(rec, sizeof(rec), w->id, w->appends);

		if (journal_append(w->j, JOURNAL_STEP_COMPLETED, rec, (size_t)n, &seq, &e) < 0 ||
		    journal_syncer_wait(syncer, w->j, seq) < 0 || journal_store_wait(w->j, seq) < 0) {
			w->err = 1;
			break;
		}
		w->appends++;
	}
	return NULL;
}

static void *sqlite_worker(void *arg)
{
	struct worker *w = arg;
	sqlite3_stmt *st = NULL;
	char rec[512];

	if (sqlite3_prepare_v2(w->db, "INSERT INTO records(run, seq, type, payload) VALUES(?,?,?,?)",
			       -1, &st, NULL) != SQLITE_OK) {
		w->err = 1;
		return NULL;
	}
	while (!stop_flag) {
		int n = make_record(rec, sizeof(rec), w->id, w->appends);

		if (sqlite3_exec(w->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
			w->err = 1;
			break;
		}
		sqlite3_bind_int(st, 1, w->id);
		sqlite3_bind_int64(st, 2, (sqlite3_int64)w->appends + 1);
		sqlite3_bind_int(st, 3, JOURNAL_STEP_COMPLETED);
		sqlite3_bind_blob(st, 4, rec, n, SQLITE_STATIC);
		if (sqlite3_step(st) != SQLITE_DONE ||
		    sqlite3_exec(w->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
			w->err = 1;
			break;
		}
		sqlite3_reset(st);
		w->appends++;
	}
	sqlite3_finalize(st);
	return NULL;
}

static double now_s(void)
{
	return util_now_ns(CLOCK_MONOTONIC) / 1e9;
}

/* This thread's CPU time: what a measurement costs without the time other tasks of a
 * shared machine took the CPU from it. */
static double cpu_s(void)
{
	return util_now_ns(CLOCK_THREAD_CPUTIME_ID) / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(double), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static sqlite3 *sqlite_open(const char *path)
{
	sqlite3 *db;

	if (sqlite3_open(path, &db) != SQLITE_OK)
		return NULL;
	sqlite3_busy_timeout(db, 60000);
	sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;", NULL, NULL, NULL);
	return db;
}

enum mode { LOCAL, REPLICATED, SQLITE };

/* Appends/s of n concurrent runs in mode; *flushes: syncs (local) or statements
 * (replicated) per second. */
static double measure(int n, enum mode mode, uint64_t *flushes)
{
	bool sqlite = mode == SQLITE;
	static int round;
	struct worker *w = calloc((size_t)n, sizeof(*w));
	char path[700];
	struct lerr e;
	uint64_t total = 0;
	double t0, t;
	sqlite3 *setup = NULL;
	struct journal_syncer_stats st0 = { 0 }, st1 = { 0 };
	struct journal_store_stats ss0 = { 0 }, ss1 = { 0 };

	round++;
	snprintf(path, sizeof(path), "%s/%s", dir, sqlite ? "bench.sqlite" : "journals");
	util_rm_rf(path);
	if (sqlite) {
		setup = sqlite_open(path);
		if (!setup || sqlite3_exec(setup, "CREATE TABLE records(run INTEGER, seq INTEGER, type INTEGER, "
					   "payload BLOB, PRIMARY KEY(run, seq))", NULL, NULL, NULL) != SQLITE_OK) {
			fprintf(stderr, "bench: sqlite %s: %s\n", path, setup ? sqlite3_errmsg(setup) : "open");
			exit(1);
		}
	} else {
		util_mkdir_p(path, 0700);
	}
	for (int i = 0; i < n; i++) {
		w[i].id = i;
		if (sqlite) {
			w[i].db = sqlite_open(path);
		} else {
			char jp[800];
			snprintf(jp, sizeof(jp), "%s/%d", path, i);
			char key[96];

			snprintf(key, sizeof(key), "bench-%d-%d-%d", getpid(), round, i);
			if (journal_create(jp, NULL, &w[i].j, &e) < 0 ||
			    (mode == REPLICATED && journal_replicate(w[i].j, store, key, 1, &e) < 0)) {
				fprintf(stderr, "bench: %s\n", e.msg);
				exit(1);
			}
		}
	}
	stop_flag = 0;
	if (!sqlite)
		journal_syncer_stats(syncer, &st0);
	if (mode == REPLICATED)
		journal_store_stats(store, &ss0);
	t0 = now_s();
	for (int i = 0; i < n; i++)
		pthread_create(&w[i].th, NULL, sqlite ? sqlite_worker : journal_worker, &w[i]);
	usleep((useconds_t)(seconds * 1e6));
	stop_flag = 1;
	for (int i = 0; i < n; i++)
		pthread_join(w[i].th, NULL);
	t = now_s() - t0;
	if (!sqlite)
		journal_syncer_stats(syncer, &st1);
	*flushes = st1.batches - st0.batches;
	if (mode == REPLICATED) {
		journal_store_stats(store, &ss1);
		*flushes = ss1.batches - ss0.batches;
	}
	for (int i = 0; i < n; i++) {
		if (w[i].err)
			fprintf(stderr, "bench: %s worker %d failed\n", sqlite ? "sqlite" : "journal", i);
		total += w[i].appends;
		if (w[i].j) {
			journal_syncer_forget(syncer, w[i].j);
			journal_close(w[i].j);
		}
		if (w[i].db)
			sqlite3_close(w[i].db);
	}
	if (setup)
		sqlite3_close(setup);
	util_rm_rf(path);
	if (sqlite) {
		char side[800];
		snprintf(side, sizeof(side), "%s-wal", path);
		unlink(side);
		snprintf(side, sizeof(side), "%s-shm", path);
		unlink(side);
	}
	free(w);
	return total / t;
}

/* ---- lanternd's shape: one event-loop thread, N runs, one outstanding append each ----
 *
 * What userspace/durable/durable.c does for a harness call that records a step, without
 * the harness API around it (no socket read or write, no JSON decoding, no
 * harness_state_apply: the records are the other rows' step_completed records, the same
 * bytes, which the harness state would refuse without their step_started; replaying a
 * 10,000-step run's 20,001 records through it takes ~20 ms here, ~1 us a record): the journal's part of lanternd's loop. durable_append is
 * journal_append on the loop thread; durable_park allocates a struct pending, walks the
 * pending list to its tail and calls journal_syncer_request; the syncer (started with
 * the eventfd as notify_fd, as durable_open does) flushes a batch and bumps the eventfd;
 * on_synced reads the eventfd and flush_pending walks every parked answer, pending_try
 * checking journal_sync_error, journal_store_error, journal_durable_seq (and the store's
 * seq when replicated) as durable.c does. An answered run's workload then makes its next
 * call: here, once the walk is done, the run appends its next record (a workload
 * waiting for its harness reply has one call outstanding, never more). The loop is
 * lanternd's own (userspace/loop: epoll), a timer ends the cell. */
struct lb_pending {                 /* durable.c's struct pending, the same fields */
	struct lb_run *du;
	void *peer;
	uint64_t seq;
	int status;
	char *reply;
	size_t len;
	bool end;
	int end_as;
	char end_reason[512];
	struct lb_pending *next;
};

struct lb_run {
	int id;
	struct journal *j;
	uint64_t appends;           /* answered: durable */
	bool answered;
	struct lb_run *next_ready;
};

struct lb {
	struct loop *l;
	struct journal_syncer *syncer;
	struct lb_pending *pending, **pending_tail;
	struct lb_run *runs, *ready, **ready_tail;
	int n, err;
	bool stopping;
	uint64_t wakeups;
};

/* durable_park, less the reply's bytes (the "{}" a step call gets): linked at the
 * list's tail through the tail pointer. */
static void lb_park(struct lb *b, struct lb_run *du, uint64_t seq)
{
	struct lb_pending *p = calloc(1, sizeof(*p));

	if (!p) {
		b->err = 1;
		return;
	}
	p->du = du;
	p->peer = du;
	p->seq = seq;
	p->status = 200;
	p->reply = strdup("{}");
	p->len = 2;
	snprintf(p->end_reason, sizeof(p->end_reason), "%s", "");
	*b->pending_tail = p;
	b->pending_tail = &p->next;
	journal_syncer_request(b->syncer, du->j);
}

/* A run's next harness call: its record appended on the loop thread and parked. */
static void lb_call(struct lb *b, struct lb_run *du)
{
	char rec[512];
	struct lerr e;
	uint64_t seq;
	int n = make_record(rec, sizeof(rec), du->id, du->appends);

	if (journal_append(du->j, JOURNAL_STEP_COMPLETED, rec, (size_t)n, &seq, &e) < 0) {
		fprintf(stderr, "bench: loop: %s\n", e.msg);
		b->err = 1;
		return;
	}
	lb_park(b, du, seq);
}

/* pending_try: true when p's answer went out (its record durable). */
static bool lb_try(struct lb *b, struct lb_pending *p)
{
	struct lb_run *du = p->du;
	int serr = journal_sync_error(du->j);
	char why[512];

	if (!serr && journal_store_error(du->j, why, sizeof(why))) {
		b->err = 1;
		free(p->reply);
		return true;
	}
	if (!serr && (journal_durable_seq(du->j) < p->seq ||
		      (journal_replicated(du->j) && journal_stored_seq(du->j) < p->seq)))
		return false;
	if (serr) {
		b->err = 1;
		free(p->reply);
		return true;
	}
	/* the reply: its run's workload will call again */
	du->appends++;
	du->next_ready = NULL;
	*b->ready_tail = du;
	b->ready_tail = &du->next_ready;
	free(p->reply);
	return true;
}

static void lb_on_synced(struct loop *l, int fd, uint32_t events, void *arg)
{
	struct lb *b = arg;
	struct lb_pending *list = b->pending, *keep = NULL, **kt = &keep;
	uint64_t v;

	b->wakeups++;
	if (read(fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		b->err = 1;
	b->ready = NULL;
	b->ready_tail = &b->ready;
	/* flush_pending */
	b->pending = NULL;
	b->pending_tail = &b->pending;
	while (list) {
		struct lb_pending *p = list;

		list = p->next;
		p->next = NULL;
		if (lb_try(b, p)) {
			free(p);
		} else {
			*kt = p;
			kt = &p->next;
		}
	}
	*kt = b->pending;
	if (!b->pending)
		b->pending_tail = keep ? kt : &b->pending;
	b->pending = keep;
	/* the answered workloads' next calls */
	for (struct lb_run *du = b->ready; du; du = du->next_ready)
		if (!b->stopping && !b->err)
			lb_call(b, du);
	if ((b->stopping || b->err) && !b->pending)
		loop_stop(l);
}

static void lb_time_up(struct loop *l, void *arg)
{
	struct lb *b = arg;

	b->stopping = true;
	if (!b->pending)
		loop_stop(l);
}

/* Appends/s of n runs driven the way lanternd drives them; *flushes: the syncer's
 * syncs, *wakeups: the loop's eventfd wake-ups. */
static double measure_loop(int n, uint64_t *flushes, uint64_t *wakeups, double *cpu_us)
{
	struct lb b = { .n = n };
	char path[700], logp[700];
	struct lerr e;
	struct journal_syncer_stats st = { 0 };
	uint64_t total = 0;
	double t0, t, c0;
	int efd;

	snprintf(path, sizeof(path), "%s/journals", dir);
	/* lanternd's node log beside the run directories (its own: main's syncer has one) */
	snprintf(logp, sizeof(logp), "%s/loop.log", dir);
	util_rm_rf(path);
	util_mkdir_p(path, 0700);
	b.runs = calloc((size_t)n, sizeof(*b.runs));
	b.pending_tail = &b.pending;
	b.l = loop_new();
	/* durable_open: the eventfd, watched by the loop, the syncer's notify_fd */
	efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (!b.runs || !b.l || efd < 0 || loop_add(b.l, efd, EPOLLIN, lb_on_synced, &b) < 0 ||
	    journal_syncer_start_logged(efd, logp, 0, &b.syncer, &e) < 0) {
		fprintf(stderr, "bench: loop: cannot set up: %s\n", e.msg);
		exit(1);
	}
	for (int i = 0; i < n; i++) {
		char jp[800];

		snprintf(jp, sizeof(jp), "%s/%d", path, i);
		b.runs[i].id = i;
		if (journal_create(jp, NULL, &b.runs[i].j, &e) < 0) {
			fprintf(stderr, "bench: %s\n", e.msg);
			exit(1);
		}
	}
	t0 = now_s();
	c0 = cpu_s();
	/* every run's first call */
	for (int i = 0; i < n; i++)
		lb_call(&b, &b.runs[i]);
	loop_timer_add(b.l, (uint64_t)(seconds * 1000), lb_time_up, &b);
	if (loop_run(b.l) < 0)
		b.err = 1;
	t = now_s() - t0;
	c0 = cpu_s() - c0;
	journal_syncer_stats(b.syncer, &st);
	*flushes = st.batches;
	*wakeups = b.wakeups;
	if (b.err)
		fprintf(stderr, "bench: loop: a run failed\n");
	for (int i = 0; i < n; i++) {
		total += b.runs[i].appends;
		journal_syncer_forget(b.syncer, b.runs[i].j);
		journal_close(b.runs[i].j);
	}
	while (b.pending) {
		struct lb_pending *p = b.pending;

		b.pending = p->next;
		free(p->reply);
		free(p);
	}
	journal_syncer_stop(b.syncer);
	loop_del(b.l, efd);
	close(efd);
	loop_free(b.l);
	free(b.runs);
	util_rm_rf(path);
	*cpu_us = total ? c0 * 1e6 / total : 0;
	return total / t;
}

/* Commits of the jbd2 journal of the filesystem holding dir (/proc/fs/jbd2/<dev>-8/info
 * starts with "<n> transactions"), or -1 where it has none (no journal, not ext4). */
static long fs_commits(void)
{
	char link[64], target[256], path[320];
	struct stat st;
	ssize_t n;
	long c = -1;
	FILE *f;

	if (stat(dir, &st) < 0)
		return -1;
	snprintf(link, sizeof(link), "/sys/dev/block/%u:%u", major(st.st_dev), minor(st.st_dev));
	if ((n = readlink(link, target, sizeof(target) - 1)) < 0)
		return -1;
	target[n] = '\0';
	snprintf(path, sizeof(path), "/proc/fs/jbd2/%s-8/info", strrchr(target, '/') ? strrchr(target, '/') + 1 : target);
	if ((f = fopen(path, "r"))) {
		if (fscanf(f, "%ld", &c) != 1)
			c = -1;
		fclose(f);
	}
	return c;
}

/* One journal, one fdatasync per append on this thread: format 1 (created here as the
 * previous lanternd did, every append extends the file) or format 2 (preallocated).
 * Median microseconds per durable append over n; *commits gets the filesystem-journal
 * commits it caused (or -1). */
static double single_append(unsigned version, int n, double *commits)
{
	char path[700], rec[512];
	struct journal *j;
	struct lerr e;
	double *lat = malloc((size_t)n * sizeof(double)), m;
	long c0, c1;
	int fd;

	snprintf(path, sizeof(path), "%s/single-%u", dir, version);
	unlink(path);
	if (version == 1) {
		fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
		if (fd < 0 || write(fd, JOURNAL_MAGIC_V1, JOURNAL_MAGIC_LEN) != JOURNAL_MAGIC_LEN || fsync(fd) < 0) {
			fprintf(stderr, "bench: %s: %s\n", path, strerror(errno));
			exit(1);
		}
		close(fd);
	}
	if ((version == 1 ? journal_open(path, NULL, NULL, NULL, NULL, &j, &e) :
			    journal_create(path, NULL, &j, &e)) < 0 || journal_sync(j, &e) < 0) {
		fprintf(stderr, "bench: %s\n", e.msg);
		exit(1);
	}
	c0 = fs_commits();
	for (int i = 0; i < n; i++) {
		int len = make_record(rec, sizeof(rec), 0, (uint64_t)i);
		double t0 = now_s();

		if (journal_append(j, JOURNAL_STEP_COMPLETED, rec, (size_t)len, NULL, &e) < 0 ||
		    journal_sync(j, &e) < 0) {
			fprintf(stderr, "bench: %s\n", e.msg);
			exit(1);
		}
		lat[i] = (now_s() - t0) * 1e6;
	}
	c1 = fs_commits();
	*commits = c0 < 0 || c1 < 0 ? -1 : (double)(c1 - c0) / n;
	journal_close(j);
	unlink(path);
	m = median(lat, n);
	free(lat);
	return m;
}

static void single_bench(void)
{
	double l1[99], l2[99], c1 = 0, c2 = 0, c;
	const int n = 1000;

	for (int r = 0; r < rounds; r++) {
		l1[r] = single_append(1, n, &c);
		c1 += c / rounds;
		l2[r] = single_append(2, n, &c);
		c2 += c / rounds;
	}
	printf("\none journal, an fdatasync per append on the caller's thread (no syncer), %d appends, median of %d rounds:\n",
	       n, rounds);
	printf("%-44s %10s %16s\n", "", "us/append", "fs commits/app.");
	if (c1 < 0 || c2 < 0) {
		printf("%-44s %10.0f %16s\n", "format 1: every append extends the file", median(l1, rounds), "n/a");
		printf("%-44s %10.0f %16s\n", "format 2: preallocated (fallocate)", median(l2, rounds), "n/a");
		printf("(no jbd2 journal on %s's filesystem: commits not counted)\n", dir);
	} else {
		printf("%-44s %10.0f %16.3f\n", "format 1: every append extends the file", median(l1, rounds), c1);
		printf("%-44s %10.0f %16.3f\n", "format 2: preallocated (fallocate)", median(l2, rounds), c2);
	}
	printf("format 1 / format 2: %.2fx\n", median(l1, rounds) / median(l2, rounds));
}

static int replay_cb(void *arg, const struct journal_record *rec)
{
	struct lerr e;
	return harness_state_apply(arg, rec->type, rec->payload, rec->len, rec->offset, &e);
}

static void print_load(const char *when)
{
	char line[128] = "?";
	FILE *f = fopen("/proc/loadavg", "r");

	if (f) {
		if (!fgets(line, sizeof(line), f))
			snprintf(line, sizeof(line), "?");
		fclose(f);
	}
	printf("load average %s: %s", when, line);
	if (!strchr(line, '\n'))
		putchar('\n');
}

struct rec_span {
	const uint8_t *base;
	size_t n, cap;
	size_t *off, *len;
};

static int span_cb(void *arg, const struct journal_record *rec)
{
	struct rec_span *s = arg;

	if (s->n == s->cap) {
		size_t cap = s->cap ? 2 * s->cap : 1024;
		size_t *o = realloc(s->off, cap * sizeof(size_t)), *l;

		if (!o)
			return -ENOMEM;
		s->off = o;
		if (!(l = realloc(s->len, cap * sizeof(size_t))))
			return -ENOMEM;
		s->len = l;
		s->cap = cap;
	}
	s->off[s->n] = rec->offset;
	s->len[s->n] = JOURNAL_FRAME + JOURNAL_HEADER + rec->stored_len;
	s->n++;
	return 0;
}

/* One record through libcrypto's EVP digest interface, one context reused (what
 * journal_sha256 did before it called SHA256_Init/Update/Final). */
static void sha256_evp(EVP_MD_CTX *ctx, const EVP_MD *md, uint8_t out[32], const void *buf, size_t len)
{
	EVP_DigestInit_ex2(ctx, md, NULL);
	EVP_DigestUpdate(ctx, buf, len);
	EVP_DigestFinal_ex(ctx, out, NULL);
}

/* The chain's hashing alone: every record of the journal at path hashed one by one, as
 * the scan does, with journal_sha256 (libcrypto's SHA256_*), libcrypto's EVP interface
 * and libsodium. */
static void sha_bench(const char *path)
{
	struct rec_span sp = { 0 };
	struct journal_scan info;
	struct lerr e;
	char *buf;
	size_t len, bytes = 0;
	double lc[7], le[7], ls[7];
	uint8_t a[32], b[32], c[32];
	bool same = true;
	EVP_MD *md = EVP_MD_fetch(NULL, "SHA256", NULL);
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();

	if (!md || !ctx || journal_scan(path, span_cb, &sp, &info, &e) < 0 ||
	    util_read_file(path, &buf, &len) < 0) {
		fprintf(stderr, "bench: sha: %s\n", md && ctx ? e.msg : "libcrypto has no SHA256");
		EVP_MD_CTX_free(ctx);
		EVP_MD_free(md);
		return;
	}
	for (size_t i = 0; i < sp.n; i++)
		bytes += sp.len[i];
	for (int r = 0; r < 7; r++) {
		double t0 = now_s();

		for (size_t i = 0; i < sp.n; i++)
			journal_sha256(a, buf + sp.off[i], sp.len[i]);
		lc[r] = (now_s() - t0) * 1e3;
		t0 = now_s();
		for (size_t i = 0; i < sp.n; i++)
			sha256_evp(ctx, md, c, buf + sp.off[i], sp.len[i]);
		le[r] = (now_s() - t0) * 1e3;
		t0 = now_s();
		for (size_t i = 0; i < sp.n; i++)
			crypto_hash_sha256(b, (const uint8_t *)buf + sp.off[i], sp.len[i]);
		ls[r] = (now_s() - t0) * 1e3;
		same &= !memcmp(a, b, 32) && !memcmp(a, c, 32);
	}
	printf("\nSHA-256 of the chain: the same %zu records (%zu bytes) one by one (median of 7):\n", sp.n, bytes);
	printf("%-44s %10s %10s\n", "", "ms", "MB/s");
	printf("%-44s %10.2f %10.0f\n", "libcrypto SHA256_* (journal_sha256)", median(lc, 7),
	       bytes / median(lc, 7) / 1e3);
	printf("%-44s %10.2f %10.0f\n", "libcrypto EVP_Digest*, one context reused", median(le, 7),
	       bytes / median(le, 7) / 1e3);
	printf("%-44s %10.2f %10.0f\n", "libsodium crypto_hash_sha256", median(ls, 7), bytes / median(ls, 7) / 1e3);
	printf("%s, digests %s; EVP/SHA256_* %.2fx, libsodium/SHA256_* %.1fx\n", OpenSSL_version(OPENSSL_VERSION),
	       same ? "identical" : "DIFFER", median(le, 7) / median(lc, 7), median(ls, 7) / median(lc, 7));
	EVP_MD_CTX_free(ctx);
	EVP_MD_free(md);
	free(sp.off);
	free(sp.len);
	free(buf);
}

/* A 10,000-step run: run_started, then step_started + step_completed per step. */
#define NRESUME 9
static void resume_bench(void)
{
	char path[700], sq[700], rec[1024];
	struct journal *j;
	struct lerr e;
	sqlite3 *db;
	sqlite3_stmt *ins;
	double jt[NRESUME], st[NRESUME], vt[NRESUME], jc[NRESUME], sc[NRESUME], vc[NRESUME], c0;
	uint64_t steps = 0;
	struct journal_scan info;
	const int nsteps = 10000;

	snprintf(path, sizeof(path), "%s/resume.journal", dir);
	snprintf(sq, sizeof(sq), "%s/resume.sqlite", dir);
	unlink(path);
	unlink(sq);
	if (journal_create(path, NULL, &j, &e) < 0) {
		fprintf(stderr, "bench: %s\n", e.msg);
		exit(1);
	}
	db = sqlite_open(sq);
	sqlite3_exec(db, "PRAGMA synchronous=OFF; CREATE TABLE records(run INTEGER, seq INTEGER, "
		     "type INTEGER, payload BLOB, PRIMARY KEY(run, seq)); BEGIN", NULL, NULL, NULL);
	sqlite3_prepare_v2(db, "INSERT INTO records VALUES(1,?,?,?)", -1, &ins, NULL);
	uint64_t seq = 0;
	for (int i = 0; i <= nsteps; i++) {
		for (int k = i ? 0 : 1; k < 2; k++) {
			unsigned type = !i ? JOURNAL_RUN_STARTED : k == 0 ? JOURNAL_STEP_STARTED : JOURNAL_STEP_COMPLETED;
			int n;
			char key[HARNESS_KEY_LEN + 1];

			if (!i) {
				n = snprintf(rec, sizeof(rec), "{\"run_id\":\"r-bench\",\"instance_id\":\"i-bench\","
					     "\"input\":{\"q\":\"bench\"},\"spec\":{}}");
			} else if (type == JOURNAL_STEP_STARTED) {
				harness_idempotency_key("r-bench", "x", (uint32_t)i, key);
				n = snprintf(rec, sizeof(rec), "{\"attempt\":1,\"idempotency_key\":\"%s\",\"kind\":"
					     "\"llm\",\"step_id\":\"step-%d\"}", key, i);
			} else {
				n = make_record(rec, sizeof(rec), 1, (uint64_t)i);
				/* the step id in make_record is step-<i> as well */
			}
			journal_append(j, type, rec, (size_t)n, NULL, &e);
			sqlite3_bind_int64(ins, 1, (sqlite3_int64)++seq);
			sqlite3_bind_int(ins, 2, (int)type);
			sqlite3_bind_blob(ins, 3, rec, n, SQLITE_TRANSIENT);
			sqlite3_step(ins);
			sqlite3_reset(ins);
		}
	}
	sqlite3_finalize(ins);
	sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
	journal_sync(j, &e);
	journal_close(j);

	for (int r = 0; r < NRESUME; r++) {
		struct harness_state hs;
		double t0 = now_s();
		struct journal *jj;

		c0 = cpu_s();
		harness_state_init(&hs);
		if (journal_open(path, NULL, replay_cb, &hs, &info, &jj, &e) < 0) {
			fprintf(stderr, "bench: resume: %s\n", e.msg);
			exit(1);
		}
		jt[r] = (now_s() - t0) * 1e3;
		jc[r] = (cpu_s() - c0) * 1e3;
		steps = hs.steps_completed;
		journal_close(jj);
		harness_state_free(&hs);

		t0 = now_s();
		c0 = cpu_s();
		if (journal_scan(path, NULL, NULL, &info, &e) < 0) {
			fprintf(stderr, "bench: resume: %s\n", e.msg);
			exit(1);
		}
		vt[r] = (now_s() - t0) * 1e3;
		vc[r] = (cpu_s() - c0) * 1e3;

		sqlite3_stmt *sel;
		harness_state_init(&hs);
		t0 = now_s();
		c0 = cpu_s();
		sqlite3_prepare_v2(db, "SELECT type, payload FROM records WHERE run=1 ORDER BY seq", -1, &sel, NULL);
		for (uint64_t row = 1; sqlite3_step(sel) == SQLITE_ROW; row++)
			harness_state_apply(&hs, (unsigned)sqlite3_column_int(sel, 0),
					    sqlite3_column_blob(sel, 1), (size_t)sqlite3_column_bytes(sel, 1), row, &e);
		sqlite3_finalize(sel);
		st[r] = (now_s() - t0) * 1e3;
		sc[r] = (cpu_s() - c0) * 1e3;
		harness_state_free(&hs);
	}
	printf("\nresume of a %d-step run (%llu records, %llu bytes + %llu preallocated; median of %d, warm cache):\n",
	       nsteps, (unsigned long long)info.records, (unsigned long long)info.bytes,
	       (unsigned long long)info.free_bytes, NRESUME);
	printf("%-44s %10s %10s\n", "", "ms", "CPU ms");
	printf("%-44s %10.2f %10.2f\n", "journal: open, verify CRC+chain, replay", median(jt, NRESUME),
	       median(jc, NRESUME));
	printf("%-44s %10.2f %10.2f\n", "  of which read + verify (scan, no replay)", median(vt, NRESUME),
	       median(vc, NRESUME));
	printf("%-44s %10.2f %10.2f\n", "sqlite: SELECT ordered by seq, replay", median(st, NRESUME),
	       median(sc, NRESUME));
	printf("replayed %llu completed steps; target < 20 ms: %s\n", (unsigned long long)steps,
	       median(jt, NRESUME) < 20 ? "met" : "MISSED");
	sqlite3_close(db);
	sha_bench(path);
	if (!getenv("LANTERN_KEEP"))
		unlink(path);
	unlink(sq);
}

/* The replicated rows' store: --store, else a private server under dir. */
static struct pgserver pg;

static const char *store_url(const char *given)
{
	char pdir[700];
	int fd, port = 0;
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t len = sizeof(a);

	if (given)
		return given;
	if (geteuid() != 0 || access("/usr/lib/postgresql/15/bin/postgres", X_OK) < 0)
		return NULL;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
	    getsockname(fd, (struct sockaddr *)&a, &len) == 0)
		port = ntohs(a.sin_port);
	if (fd >= 0)
		close(fd);
	/* beside dir, not in it: dir is root's alone and the server runs as postgres */
	snprintf(pdir, sizeof(pdir), "%s-pg", dir);
	if (!port || pgserver_start(&pg, pdir, port) < 0) {
		fprintf(stderr, "bench: PostgreSQL did not start (see %s/postgres.log)\n", pdir);
		return NULL;
	}
	return pg.url;
}

/* The table: appends/s of 1, 16 and 256 runs: the journal driven as lanternd drives it
 * (one loop thread), by a thread per run, replicated (a thread per run), and SQLite. The
 * targets are judged on the loop rows, lanternd's path. */
static void append_bench(void)
{
	static const int runs[] = { 1, 16, 256 };
	static const double target[] = { 1, 0, 20 };

	printf("durable appends per second (every append durable before the run goes on), %s,\n"
	       "%g s per cell, median of %d rounds (loop, threads, replicated and sqlite back to back in each)\n",
	       dir, seconds, rounds);
	printf("loop: lanternd's shape, one event-loop thread appending for every run (journal_append,\n"
	       "      journal_syncer_request, the syncer's eventfd, parked answers), one append per run in flight\n");
	printf("threads: a thread per run, each journal_append + journal_syncer_wait\n");
	printf("replicated: a thread per run, also committed in the journal store (%s)\n",
	       store ? "PostgreSQL 15, fsync on" : "left out: no store");
	printf("sqlite: a thread and connection per run, WAL, synchronous=FULL, one transaction per append\n");
	printf("(flushes/s: the syncer's node log writes, syncfs and fdatasync; wakes/s: the loop's eventfd wake-ups; us/app: the loop\n"
	       " thread's CPU time per durable append)\n");
	printf("%-5s %9s %9s %8s %6s %9s %9s %12s %9s %8s %13s %8s %8s  %s\n", "runs", "loop/s", "flushes/s",
	       "wakes/s", "us/app", "threads/s", "flushes/s", "replicated/s", "sqlite/s", "l/sqlite", "l/s min-max",
	       "t/sqlite", "r/sqlite", "target (loop; replicated)");
	for (size_t k = 0; k < sizeof(runs) / sizeof(runs[0]); k++) {
		if (only_runs && runs[k] != only_runs)
			continue;
		double lr[99], lf[99], lw[99], lc[99], jr[99], rr[99], sr[99], fl[99], lratio[99], ratio[99], rratio[99];
		double lo = 1e99, hi = 0, lm, m, rm;
		char tgt[96] = "";

		for (int r = 0; r < rounds; r++) {
			uint64_t f = 0, rf = 0, w = 0, dummy;

			lr[r] = measure_loop(runs[k], &f, &w, &lc[r]);
			lf[r] = f / seconds;
			lw[r] = w / seconds;
			jr[r] = measure(runs[k], LOCAL, &f);
			fl[r] = f / seconds;
			rr[r] = store ? measure(runs[k], REPLICATED, &rf) : 0;
			sr[r] = measure(runs[k], SQLITE, &dummy);
			lratio[r] = lr[r] / sr[r];
			ratio[r] = jr[r] / sr[r];
			rratio[r] = rr[r] / sr[r];
			lo = lratio[r] < lo ? lratio[r] : lo;
			hi = lratio[r] > hi ? lratio[r] : hi;
		}
		lm = median(lratio, rounds);
		m = median(ratio, rounds);
		rm = median(rratio, rounds);
		if (target[k])
			snprintf(tgt, sizeof(tgt), ">= %.0fx: %s", target[k], lm >= target[k] ? "met" : "MISSED");
		if (store && runs[k] == 256)
			snprintf(tgt + strlen(tgt), sizeof(tgt) - strlen(tgt), "; replicated >= 10x: %s",
				 rm >= 10 ? "met" : "MISSED");
		printf("%-5d %9.0f %9.0f %8.0f %6.1f %9.0f %9.0f %12.0f %9.0f %7.1fx %6.1f-%-6.1f %7.1fx %7.1fx  %s\n",
		       runs[k], median(lr, rounds), median(lf, rounds), median(lw, rounds), median(lc, rounds),
		       median(jr, rounds),
		       median(fl, rounds), median(rr, rounds), median(sr, rounds), lm, lo, hi, m, rm, tgt);
	}
}

/* --only loop: the loop rows alone (no peer), to profile lanternd's path. */
static void loop_rows(void)
{
	static const int runs[] = { 1, 16, 256 };

	print_load("at start");
	printf("%-5s %9s %9s %8s %6s\n", "runs", "loop/s", "flushes/s", "wakes/s", "us/app");
	for (size_t k = 0; k < sizeof(runs) / sizeof(runs[0]); k++) {
		if (only_runs && runs[k] != only_runs)
			continue;
		double lr[99], lf[99], lw[99], lc[99];

		for (int r = 0; r < rounds; r++) {
			uint64_t f = 0, w = 0;

			lr[r] = measure_loop(runs[k], &f, &w, &lc[r]);
			lf[r] = f / seconds;
			lw[r] = w / seconds;
		}
		printf("%-5d %9.0f %9.0f %8.0f %6.1f\n", runs[k], median(lr, rounds), median(lf, rounds),
		       median(lw, rounds), median(lc, rounds));
	}
	print_load("at end");
}

int main(int argc, char **argv)
{
	struct lerr e;
	const char *given = NULL, *url;
	char logp[600];

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
			seconds = atof(argv[++i]);
		else if (!strcmp(argv[i], "--rounds") && i + 1 < argc)
			rounds = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--runs") && i + 1 < argc)
			only_runs = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--dir") && i + 1 < argc)
			snprintf(dir, sizeof(dir), "%s", argv[++i]);
		else if (!strcmp(argv[i], "--store") && i + 1 < argc)
			given = argv[++i];
		else if (!strcmp(argv[i], "--only") && i + 1 < argc && !strcmp(argv[i + 1], "resume") && ++i)
			only_resume = true;
		else if (!strcmp(argv[i], "--only") && i + 1 < argc && !strcmp(argv[i + 1], "loop") && ++i)
			only_loop = true;
		else
			rounds = 0;
	}
	if (rounds < 1 || rounds > 99 || sodium_init() < 0) {
		fprintf(stderr, "usage: journal [--seconds S] [--rounds 1-99] [--runs 1|16|256] [--dir DIR] [--store URL] "
			"[--only resume|loop]\n");
		return 2;
	}
	snprintf(dir + strlen(dir), sizeof(dir) - strlen(dir), "/lantern-bench-journal-%d", getpid());
	snprintf(logp, sizeof(logp), "%s/journal.log", dir);
	if (util_mkdir_p(dir, 0700) < 0 || journal_syncer_start_logged(-1, logp, 0, &syncer, &e) < 0) {
		fprintf(stderr, "bench: cannot prepare %s: %s\n", dir, e.msg);
		return 1;
	}
	if (only_loop) {
		loop_rows();
		journal_syncer_stop(syncer);
		util_rm_rf(dir);
		return 0;
	}
	url = only_resume ? NULL : store_url(given);
	if (url) {
		struct journal_store_opts so = { .url = url, .owner = "bench", .notify_fd = -1,
						 .give_up_ms = 60000 };

		if (journal_store_open(&so, &store, &e) < 0) {
			fprintf(stderr, "bench: %s\n", e.msg);
			store = NULL;
		}
	}
	print_load("at start");
	if (!only_resume) {
		append_bench();
		single_bench();
	}
	resume_bench();
	print_load("at end");
	journal_store_close(store);
	pgserver_stop(&pg);
	journal_syncer_stop(syncer);
	if (!getenv("LANTERN_KEEP"))
		util_rm_rf(dir);
	return 0;
}
