/* workq.c: worker threads for lanternd's blocking calls, completions delivered to the
 * event loop through an eventfd (see include/lantern/workq.h).
 *
 * Two lists under one mutex: jobs waiting for a worker (FIFO) and jobs finished and
 * waiting for the loop. A worker moves a job from the first to the second after fn
 * and bumps the eventfd; the loop drains the second list and runs each completion. */
#include "lantern/workq.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

struct job {
	workq_fn fn;
	workq_done done;
	void *arg;
	struct job *next;
};

struct workq {
	struct loop *loop;
	int efd;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct job *todo, **todo_tail; /* waiting for a worker */
	struct job *done;              /* finished, waiting for the loop (any order) */
	int pending;                   /* submitted, completion not run yet (loop thread) */
	bool stopping;
	int nthreads;
	pthread_t th[16];
	char name[12];
};

static void *worker(void *arg)
{
	struct workq *q = arg;
	uint64_t one = 1;

	for (;;) {
		struct job *j;

		pthread_mutex_lock(&q->mu);
		while (!q->todo && !q->stopping)
			pthread_cond_wait(&q->cv, &q->mu);
		if (!q->todo) {
			pthread_mutex_unlock(&q->mu);
			return NULL;
		}
		j = q->todo;
		q->todo = j->next;
		if (!q->todo)
			q->todo_tail = &q->todo;
		pthread_mutex_unlock(&q->mu);

		j->fn(j->arg);

		pthread_mutex_lock(&q->mu);
		j->next = q->done;
		q->done = j;
		pthread_mutex_unlock(&q->mu);
		if (write(q->efd, &one, sizeof(one)) < 0)
			log_warn("workq %s: eventfd write: %s", q->name, strerror(errno));
	}
}

/* Runs the completions of finished jobs, oldest first. */
static void drain(struct workq *q)
{
	struct job *list, *rev = NULL;

	pthread_mutex_lock(&q->mu);
	list = q->done;
	q->done = NULL;
	pthread_mutex_unlock(&q->mu);
	while (list) {
		struct job *n = list->next;
		list->next = rev;
		rev = list;
		list = n;
	}
	while (rev) {
		struct job *n = rev->next;
		q->pending--;
		if (rev->done)
			rev->done(rev->arg);
		free(rev);
		rev = n;
	}
}

static void on_event(struct loop *l, int fd, uint32_t events, void *arg)
{
	struct workq *q = arg;
	uint64_t n;

	if (read(fd, &n, sizeof(n)) < 0 && errno != EAGAIN)
		log_warn("workq %s: eventfd read: %s", q->name, strerror(errno));
	drain(q);
}

int workq_open(struct loop *l, int nthreads, const char *name, struct workq **out, struct lerr *e)
{
	struct workq *q = calloc(1, sizeof(*q));
	int err;

	if (!q)
		return lerr_set(e, ENOMEM, "workq %s: out of memory", name);
	if (nthreads < 1 || nthreads > (int)(sizeof(q->th) / sizeof(q->th[0]))) {
		free(q);
		return lerr_set(e, EINVAL, "workq %s: %d threads: want 1..16", name, nthreads);
	}
	q->loop = l;
	q->todo_tail = &q->todo;
	snprintf(q->name, sizeof(q->name), "%s", name);
	pthread_mutex_init(&q->mu, NULL);
	pthread_cond_init(&q->cv, NULL);
	q->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (q->efd < 0) {
		err = -errno;
		free(q);
		return lerr_set(e, err, "workq %s: eventfd: %s", name, strerror(-err));
	}
	if ((err = loop_add(l, q->efd, EPOLLIN, on_event, q)) < 0) {
		close(q->efd);
		free(q);
		return lerr_set(e, err, "workq %s: watching its eventfd: %s", name, strerror(-err));
	}
	for (int i = 0; i < nthreads; i++) {
		char tn[16];

		if ((err = pthread_create(&q->th[i], NULL, worker, q))) {
			q->nthreads = i;
			workq_close(q);
			return lerr_set(e, err, "workq %s: starting worker %d: %s", name, i, strerror(err));
		}
		q->nthreads = i + 1;
		snprintf(tn, sizeof(tn), "%s-%d", q->name, i);
		pthread_setname_np(q->th[i], tn);
	}
	*out = q;
	return 0;
}

int workq_submit(struct workq *q, workq_fn fn, workq_done done, void *arg)
{
	struct job *j = calloc(1, sizeof(*j));

	if (!j)
		return -ENOMEM;
	j->fn = fn;
	j->done = done;
	j->arg = arg;
	pthread_mutex_lock(&q->mu);
	*q->todo_tail = j;
	q->todo_tail = &j->next;
	pthread_cond_signal(&q->cv);
	pthread_mutex_unlock(&q->mu);
	q->pending++;
	return 0;
}

int workq_pending(const struct workq *q)
{
	return q->pending;
}

void workq_close(struct workq *q)
{
	if (!q)
		return;
	pthread_mutex_lock(&q->mu);
	q->stopping = true;
	pthread_cond_broadcast(&q->cv);
	pthread_mutex_unlock(&q->mu);
	/* workers finish everything queued before they see stopping with an empty list */
	for (int i = 0; i < q->nthreads; i++)
		pthread_join(q->th[i], NULL);
	drain(q);
	loop_del(q->loop, q->efd);
	close(q->efd);
	pthread_mutex_destroy(&q->mu);
	pthread_cond_destroy(&q->cv);
	free(q);
}
