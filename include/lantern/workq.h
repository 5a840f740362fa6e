/* workq.h: a small pool of worker threads for the blocking calls lanternd's event loop
 * must not wait on (OCI runtime and CNI plugin invocations: tens of milliseconds each).
 *
 * A job is a function run on a worker thread and a completion run afterwards on the
 * loop's thread, which learns of finished jobs through an eventfd. Between submit and
 * completion the job's argument belongs to the worker: the loop must not touch what
 * the job works on. Workers are named "<name>-<n>" (visible in /proc and top -H). */
#ifndef LANTERN_WORKQ_H
#define LANTERN_WORKQ_H

#include "lantern/loop.h"
#include "lantern/util.h"

struct workq;
typedef void (*workq_fn)(void *arg);   /* on a worker thread */
typedef void (*workq_done)(void *arg); /* on the loop's thread, after fn */

/* Starts nthreads workers (1..16) and watches their completions on l. */
int workq_open(struct loop *l, int nthreads, const char *name, struct workq **out, struct lerr *e);
/* Queues fn(arg); done(arg) runs on the loop after it. 0 or -ENOMEM. */
int workq_submit(struct workq *q, workq_fn fn, workq_done done, void *arg);
/* Jobs submitted and not yet completed on the loop. */
int workq_pending(const struct workq *q);
/* Runs every queued job to its end (completions included, on the caller's thread),
 * then stops the workers. */
void workq_close(struct workq *q);

#endif
