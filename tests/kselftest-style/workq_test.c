/* workq_test: the worker pool lanternd's event loop hands its blocking calls to
 * (userspace/workq), on a real loop: jobs run on threads named <name>-<n>, several at
 * once, while the loop keeps serving; completions run afterwards on the loop's own
 * thread, inside loop_run, in the order the jobs finished; workq_pending counts what
 * has not completed; workq_close runs everything queued to its end. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lantern/loop.h"
#include "lantern/util.h"
#include "lantern/workq.h"
#include "tap.h"

#define NJOBS 12
#define NTHREADS 3

static struct loop *L;
static struct workq *Q;
static pid_t loop_tid;
static bool in_loop_run;

struct job {
	int n;
	int sleep_ms;
	char thread[16];    /* the worker's name */
	pid_t tid;          /* the worker's thread id */
	bool ran;
	pid_t done_tid;     /* the thread the completion ran on */
	bool done_on_loop;  /* ... the loop's, inside loop_run */
	bool ran_before_done;
	int pending_at_done;
	int done_seq;       /* order of completions */
};

static struct job jobs[NJOBS];
static int ncompleted, expected;
static int fn_order[64], nfn;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

static void ms_sleep(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

static void job_fn(void *arg)
{
	struct job *j = arg;

	pthread_getname_np(pthread_self(), j->thread, sizeof(j->thread));
	j->tid = gettid();
	ms_sleep(j->sleep_ms);
	pthread_mutex_lock(&mu);
	fn_order[nfn++] = j->n;
	pthread_mutex_unlock(&mu);
	j->ran = true;
}

static void job_done(void *arg)
{
	struct job *j = arg;

	j->done_tid = gettid();
	j->done_on_loop = j->done_tid == loop_tid && in_loop_run;
	j->ran_before_done = j->ran;
	j->done_seq = ncompleted++;
	j->pending_at_done = workq_pending(Q);
	if (ncompleted == expected)
		loop_stop(L);
}

static bool timed_out;

static void on_timeout(struct loop *l, void *arg)
{
	timed_out = true;
	loop_stop(l);
}

/* Runs the loop until every expected completion ran, or 10 s. */
static void run_loop(void)
{
	uint64_t t = loop_timer_add(L, 10000, on_timeout, NULL);

	in_loop_run = true;
	loop_run(L);
	in_loop_run = false;
	loop_timer_cancel(L, t);
}

static void test_open_errors(void)
{
	struct workq *q = NULL;
	struct lerr e = { { 0 } };
	int r0 = workq_open(L, 0, "wqbad", &q, &e), r17;
	char m0[sizeof(e.msg)];

	snprintf(m0, sizeof(m0), "%s", e.msg);
	r17 = workq_open(L, 17, "wqbad", &q, &e);
	tap_ok(r0 == -EINVAL && r17 == -EINVAL && q == NULL && strstr(m0, "wqbad") && strstr(e.msg, "1..16"),
	       "0 or 17 threads are refused, naming the pool and the range: %s", e.msg);
}

static void test_jobs_and_completions(void)
{
	struct lerr e = { { 0 } };
	bool names = true, off_loop = true, on_loop = true, before = true, counts = true;
	bool seen[NTHREADS] = { false };
	int r, pending0;

	r = workq_open(L, NTHREADS, "wqt", &Q, &e);
	if (!tap_ok(r == 0, "a pool of %d workers opens: %s", NTHREADS, r ? e.msg : "ok"))
		return;
	for (int i = 0; i < NJOBS; i++) {
		jobs[i] = (struct job){ .n = i, .sleep_ms = 20 };
		workq_submit(Q, job_fn, job_done, &jobs[i]);
	}
	pending0 = workq_pending(Q);
	expected = NJOBS;
	run_loop();
	for (int i = 0; i < NJOBS; i++) {
		struct job *j = &jobs[i];
		int n = -1;

		if (sscanf(j->thread, "wqt-%d", &n) != 1 || n < 0 || n >= NTHREADS)
			names = false;
		else
			seen[n] = true;
		off_loop &= j->tid != loop_tid && j->tid != 0;
		on_loop &= j->done_on_loop;
		before &= j->ran_before_done;
		/* pending drops by one just before each completion runs */
		counts &= j->pending_at_done == NJOBS - 1 - j->done_seq;
	}
	tap_ok(!timed_out && ncompleted == NJOBS, "every job completes (%d of %d)", ncompleted, NJOBS);
	tap_ok(names && seen[0] && seen[1] && seen[2] && off_loop,
	       "jobs run off the loop thread, on workers named wqt-0..wqt-%d (e.g. %s)", NTHREADS - 1,
	       jobs[0].thread);
	tap_ok(on_loop && before, "each completion runs after its job, on the loop's thread, inside loop_run");
	tap_ok(pending0 == NJOBS && counts && workq_pending(Q) == 0,
	       "workq_pending: %d after submitting, one less at each completion, 0 at the end", pending0);
}

/* Three blocking jobs on three workers: each waits for the other two, which only
 * works if they run at the same time. */
static int arrived;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static bool together[NTHREADS];

static void meet_fn(void *arg)
{
	struct job *j = arg;
	struct timespec until;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 3;
	pthread_getname_np(pthread_self(), j->thread, sizeof(j->thread));
	pthread_mutex_lock(&mu);
	arrived++;
	pthread_cond_broadcast(&cv);
	while (arrived < NTHREADS && pthread_cond_timedwait(&cv, &mu, &until) == 0)
		;
	together[j->n] = arrived >= NTHREADS;
	pthread_mutex_unlock(&mu);
}

static bool tick_before_slow;
static struct job *slow;

static void on_tick(struct loop *l, void *arg)
{
	tick_before_slow = !slow->done_on_loop;
}

static void test_concurrency(void)
{
	struct job meet[NTHREADS], slow_job = { .n = 99, .sleep_ms = 400 };
	bool all = true, distinct;

	ncompleted = 0;
	expected = NTHREADS;
	for (int i = 0; i < NTHREADS; i++) {
		meet[i] = (struct job){ .n = i };
		workq_submit(Q, meet_fn, job_done, &meet[i]);
	}
	run_loop();
	for (int i = 0; i < NTHREADS; i++)
		all &= together[i];
	distinct = strcmp(meet[0].thread, meet[1].thread) && strcmp(meet[1].thread, meet[2].thread) &&
		   strcmp(meet[0].thread, meet[2].thread);
	tap_ok(!timed_out && all && distinct, "%d blocking jobs run at the same time on %s, %s, %s", NTHREADS,
	       meet[0].thread, meet[1].thread, meet[2].thread);

	/* the loop keeps serving while a job blocks: a 50 ms timer fires before the 400 ms
	 * job completes */
	ncompleted = 0;
	expected = 1;
	slow = &slow_job;
	workq_submit(Q, job_fn, job_done, &slow_job);
	loop_timer_add(L, 50, on_tick, NULL);
	run_loop();
	tap_ok(!timed_out && tick_before_slow && slow_job.done_on_loop,
	       "the loop serves a timer while a job blocks, then runs its completion");
	workq_close(Q);
	Q = NULL;
}

static void test_order_and_close(void)
{
	struct lerr e = { { 0 } };
	bool fifo = true, done_fifo = true, all_done = true;
	int r;

	/* one worker: jobs start and complete in the order submitted */
	r = workq_open(L, 1, "wq1", &Q, &e);
	if (!tap_ok(r == 0, "a pool of one worker opens: %s", r ? e.msg : "ok"))
		return;
	ncompleted = nfn = 0;
	expected = NJOBS;
	for (int i = 0; i < NJOBS; i++) {
		jobs[i] = (struct job){ .n = i, .sleep_ms = 1 };
		workq_submit(Q, job_fn, job_done, &jobs[i]);
	}
	run_loop();
	for (int i = 0; i < NJOBS; i++) {
		fifo &= fn_order[i] == i;
		done_fifo &= jobs[i].done_seq == i;
	}
	tap_ok(!timed_out && nfn == NJOBS && fifo && done_fifo,
	       "one worker: jobs run and complete in the order submitted");

	/* close with everything still queued and the loop not running: each job runs on
	 * the worker, each completion on the caller's thread, before close returns */
	ncompleted = nfn = 0;
	expected = -1;
	for (int i = 0; i < NJOBS; i++) {
		jobs[i] = (struct job){ .n = i, .sleep_ms = 5 };
		workq_submit(Q, job_fn, job_done, &jobs[i]);
	}
	workq_close(Q);
	Q = NULL;
	for (int i = 0; i < NJOBS; i++)
		all_done &= jobs[i].ran && jobs[i].ran_before_done && jobs[i].tid != loop_tid &&
			    jobs[i].done_tid == loop_tid && jobs[i].done_seq == i;
	tap_ok(nfn == NJOBS && ncompleted == NJOBS && all_done,
	       "workq_close runs all %d queued jobs, then their completions in the order the jobs finished, "
	       "before it returns (%d ran, %d completed)", NJOBS, nfn, ncompleted);
}

int main(void)
{
	tap_plan(11);
	loop_tid = gettid();
	L = loop_new();
	if (!L) {
		for (int i = 0; i < 11; i++)
			tap_ok(false, "workq point %d (no loop)", i + 1);
		return tap_done();
	}
	test_open_errors();
	test_jobs_and_completions();
	if (Q)
		test_concurrency();
	else
		for (int i = 0; i < 2; i++)
			tap_ok(false, "workq concurrency point %d (no pool)", i + 1);
	test_order_and_close();
	loop_free(L);
	return tap_done();
}
