/* loop.c: lanternd's event loop: one epoll set for fds, one timerfd for a small
 * sorted list of one-shot timers (a handful per run, so a list is enough). */
#include "lantern/loop.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "lantern/util.h"

struct watch {
	int fd;
	loop_fd_cb cb;
	void *arg;
	struct watch *next;
};

struct timer {
	uint64_t id;
	uint64_t due_ns;
	loop_timer_cb cb;
	void *arg;
	struct timer *next;
};

struct loop {
	int ep;
	int tfd;
	bool stop;
	uint64_t next_id;
	struct watch *watches;   /* invariant: at most one per fd */
	struct timer *timers;    /* invariant: sorted by due_ns */
};

static struct watch *watch_find(struct loop *l, int fd)
{
	for (struct watch *w = l->watches; w; w = w->next)
		if (w->fd == fd)
			return w;
	return NULL;
}

static void timer_arm(struct loop *l)
{
	struct itimerspec its = { 0 };

	if (l->timers) {
		its.it_value.tv_sec = (time_t)(l->timers->due_ns / 1000000000ULL);
		its.it_value.tv_nsec = (long)(l->timers->due_ns % 1000000000ULL);
		if (!its.it_value.tv_sec && !its.it_value.tv_nsec)
			its.it_value.tv_nsec = 1;
	}
	timerfd_settime(l->tfd, TFD_TIMER_ABSTIME, &its, NULL);
}

struct loop *loop_new(void)
{
	struct loop *l = calloc(1, sizeof(*l));
	struct epoll_event ev = { .events = EPOLLIN };

	if (!l)
		return NULL;
	l->ep = epoll_create1(EPOLL_CLOEXEC);
	l->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
	if (l->ep < 0 || l->tfd < 0)
		goto fail;
	ev.data.ptr = NULL; /* NULL marks the timerfd */
	if (epoll_ctl(l->ep, EPOLL_CTL_ADD, l->tfd, &ev) < 0)
		goto fail;
	return l;
fail:
	loop_free(l);
	return NULL;
}

void loop_free(struct loop *l)
{
	if (!l)
		return;
	while (l->watches) {
		struct watch *w = l->watches;
		l->watches = w->next;
		free(w);
	}
	while (l->timers) {
		struct timer *t = l->timers;
		l->timers = t->next;
		free(t);
	}
	if (l->ep >= 0)
		close(l->ep);
	if (l->tfd >= 0)
		close(l->tfd);
	free(l);
}

int loop_add(struct loop *l, int fd, uint32_t events, loop_fd_cb cb, void *arg)
{
	struct watch *w;
	struct epoll_event ev = { .events = events };

	if (watch_find(l, fd))
		return -EEXIST;
	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->fd = fd;
	w->cb = cb;
	w->arg = arg;
	ev.data.ptr = w;
	if (epoll_ctl(l->ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
		int err = -errno;
		free(w);
		return err;
	}
	w->next = l->watches;
	l->watches = w;
	return 0;
}

int loop_mod(struct loop *l, int fd, uint32_t events)
{
	struct watch *w = watch_find(l, fd);
	struct epoll_event ev = { .events = events };

	if (!w)
		return -ENOENT;
	ev.data.ptr = w;
	return epoll_ctl(l->ep, EPOLL_CTL_MOD, fd, &ev) < 0 ? -errno : 0;
}

int loop_del(struct loop *l, int fd)
{
	for (struct watch **pp = &l->watches; *pp; pp = &(*pp)->next) {
		struct watch *w = *pp;
		if (w->fd != fd)
			continue;
		epoll_ctl(l->ep, EPOLL_CTL_DEL, fd, NULL);
		*pp = w->next;
		/* loop_run checks a watch is still listed before calling it, so an
		 * event later in the same batch never reaches a freed watch */
		free(w);
		return 0;
	}
	return -ENOENT;
}

uint64_t loop_timer_add(struct loop *l, uint64_t ms, loop_timer_cb cb, void *arg)
{
	struct timer *t = calloc(1, sizeof(*t)), **pp;

	if (!t)
		return 0;
	t->id = ++l->next_id;
	t->due_ns = util_now_ns(CLOCK_MONOTONIC) + ms * 1000000ULL;
	t->cb = cb;
	t->arg = arg;
	for (pp = &l->timers; *pp && (*pp)->due_ns <= t->due_ns; pp = &(*pp)->next)
		;
	t->next = *pp;
	*pp = t;
	timer_arm(l);
	return t->id;
}

void loop_timer_cancel(struct loop *l, uint64_t id)
{
	for (struct timer **pp = &l->timers; *pp; pp = &(*pp)->next) {
		if ((*pp)->id == id) {
			struct timer *t = *pp;
			*pp = t->next;
			free(t);
			timer_arm(l);
			return;
		}
	}
}

static void run_timers(struct loop *l)
{
	uint64_t now = util_now_ns(CLOCK_MONOTONIC), exp;

	if (read(l->tfd, &exp, sizeof(exp)) < 0 && errno != EAGAIN)
		return;
	while (l->timers && l->timers->due_ns <= now) {
		struct timer *t = l->timers;
		l->timers = t->next;
		t->cb(l, t->arg);
		free(t);
	}
	timer_arm(l);
}

int loop_run(struct loop *l)
{
	struct epoll_event evs[64];

	l->stop = false;
	while (!l->stop) {
		int n = epoll_wait(l->ep, evs, (int)ARRAY_SIZE(evs), -1);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		for (int i = 0; i < n && !l->stop; i++) {
			struct watch *w = evs[i].data.ptr;
			bool live = false;

			if (!w) {
				run_timers(l);
				continue;
			}
			/* the watch may have been removed by an earlier callback in this batch */
			for (struct watch *x = l->watches; x; x = x->next)
				if (x == w)
					live = true;
			if (live && w->cb)
				w->cb(l, w->fd, evs[i].events, w->arg);
		}
	}
	return 0;
}

void loop_stop(struct loop *l)
{
	l->stop = true;
}
