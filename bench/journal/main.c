/* bench/journal: durable appends per second of the run journal with group commit, for
 * 1, 16 and 256 concurrent runs, side by side in the same run with SQLite (WAL,
 * synchronous=FULL, one transaction per append, one connection per run, the same
 * records); and the time to resume a 10,000-step run (verify the journal and replay
 * every record into the harness state, which is what lanternd does on restart), with
 * SQLite reading the same records back as its peer.
 *
 * Every append is durable before its caller goes on, in both: the journal waits on
 * the syncer (journal_syncer_wait), SQLite commits with synchronous=FULL.
 *
 *   build/bench/journal [--seconds S] [--dir DIR]   (default 3 s per cell, /var/tmp) */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "lantern/harness.h"
#include "lantern/journal.h"
#include "lantern/util.h"

static char dir[512] = "/var/tmp";
static double seconds = 3;
static struct journal_syncer *syncer;
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
		    journal_syncer_wait(syncer, w->j, seq) < 0) {
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

static sqlite3 *sqlite_open(const char *path)
{
	sqlite3 *db;

	if (sqlite3_open(path, &db) != SQLITE_OK)
		return NULL;
	sqlite3_busy_timeout(db, 60000);
	sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;", NULL, NULL, NULL);
	return db;
}

/* Appends/s of n concurrent runs; sqlite selects the peer. */
static double measure(int n, bool sqlite, uint64_t *flushes)
{
	struct worker *w = calloc((size_t)n, sizeof(*w));
	char path[700];
	struct lerr e;
	uint64_t total = 0;
	double t0, t;
	sqlite3 *setup = NULL;
	struct journal_syncer_stats st0 = { 0 }, st1 = { 0 };

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
			if (journal_create(jp, NULL, &w[i].j, &e) < 0) {
				fprintf(stderr, "bench: %s\n", e.msg);
				exit(1);
			}
		}
	}
	stop_flag = 0;
	if (!sqlite)
		journal_syncer_stats(syncer, &st0);
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

static int replay_cb(void *arg, const struct journal_record *rec)
{
	struct lerr e;
	return harness_state_apply(arg, rec->type, rec->payload, rec->len, rec->offset, &e);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* A 10,000-step run: run_started, then step_started + step_completed per step. */
static void resume_bench(void)
{
	char path[700], sq[700], rec[1024];
	struct journal *j;
	struct lerr e;
	sqlite3 *db;
	sqlite3_stmt *ins;
	double jt[7], st[7];
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

	for (int r = 0; r < 7; r++) {
		struct harness_state hs;
		double t0 = now_s();
		struct journal *jj;

		harness_state_init(&hs);
		if (journal_open(path, NULL, replay_cb, &hs, &info, &jj, &e) < 0) {
			fprintf(stderr, "bench: resume: %s\n", e.msg);
			exit(1);
		}
		jt[r] = (now_s() - t0) * 1e3;
		steps = hs.steps_completed;
		journal_close(jj);
		harness_state_free(&hs);

		sqlite3_stmt *sel;
		harness_state_init(&hs);
		t0 = now_s();
		sqlite3_prepare_v2(db, "SELECT type, payload FROM records WHERE run=1 ORDER BY seq", -1, &sel, NULL);
		for (uint64_t row = 1; sqlite3_step(sel) == SQLITE_ROW; row++)
			harness_state_apply(&hs, (unsigned)sqlite3_column_int(sel, 0),
					    sqlite3_column_blob(sel, 1), (size_t)sqlite3_column_bytes(sel, 1), row, &e);
		sqlite3_finalize(sel);
		st[r] = (now_s() - t0) * 1e3;
		harness_state_free(&hs);
	}
	qsort(jt, 7, sizeof(double), cmp_double);
	qsort(st, 7, sizeof(double), cmp_double);
	printf("\nresume of a %d-step run (%llu records, %llu bytes; median of 7, warm cache):\n",
	       nsteps, (unsigned long long)info.records, (unsigned long long)info.bytes);
	printf("%-44s %10s\n", "", "ms");
	printf("%-44s %10.2f\n", "journal: open, verify CRC+chain, replay", jt[3]);
	printf("%-44s %10.2f\n", "sqlite: SELECT ordered by seq, replay", st[3]);
	printf("replayed %llu completed steps; target < 50 ms: %s\n", (unsigned long long)steps,
	       jt[3] < 50 ? "met" : "MISSED");
	sqlite3_close(db);
	if (!getenv("LANTERN_KEEP"))
		unlink(path);
	unlink(sq);
}

int main(int argc, char **argv)
{
	static const int runs[] = { 1, 16, 256 };
	struct lerr e;
	double ratio256 = 0;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
			seconds = atof(argv[++i]);
		else if (!strcmp(argv[i], "--dir") && i + 1 < argc)
			snprintf(dir, sizeof(dir), "%s", argv[++i]);
	}
	snprintf(dir + strlen(dir), sizeof(dir) - strlen(dir), "/lantern-bench-journal-%d", getpid());
	if (util_mkdir_p(dir, 0700) < 0 || journal_syncer_start(-1, &syncer, &e) < 0) {
		fprintf(stderr, "bench: cannot prepare %s\n", dir);
		return 1;
	}
	printf("durable appends per second (every append durable before the caller goes on), %s, %.0f s per cell\n",
	       dir, seconds);
	printf("%-8s %16s %12s %16s %10s\n", "runs", "journal/s", "flushes/s", "sqlite/s", "ratio");
	for (size_t k = 0; k < sizeof(runs) / sizeof(runs[0]); k++) {
		uint64_t fl = 0, dummy;
		double jr = measure(runs[k], false, &fl);
		double sr = measure(runs[k], true, &dummy);

		printf("%-8d %16.0f %12.0f %16.0f %9.1fx\n", runs[k], jr, fl / seconds, sr, jr / sr);
		if (runs[k] == 256)
			ratio256 = jr / sr;
	}
	printf("target >= 5x sqlite at 256 runs: %s\n", ratio256 >= 5 ? "met" : "MISSED");
	resume_bench();
	journal_syncer_stop(syncer);
	if (!getenv("LANTERN_KEEP"))
		util_rm_rf(dir);
	return 0;
}
