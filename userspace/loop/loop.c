/* loop.c: lanternd's event loop: one epoll set for fds, found again in O(1) (a table
 * indexed by fd, and the watch itself in each event), and one timerfd for a sorted list
 * of one-shot timers (a couple per run). A watch removed by a callback is freed after
 * the batch of events it may still appear in. */
#include "lantern/loop.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "lantern/util.h"

#define LOOP_ACCEPT_PAUSE_MS 100

struct watch {
	int fd;
	loop_fd_cb cb;
	void *arg;
	bool dead;               /* removed; freed after the current batch */
	uint32_t events;
	uint64_t pause_timer;    /* a listener out of fds, watched again when it fires */
	struct watch *next_dead;
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
	struct watch **byfd;     /* invariant: byfd[fd] is fd's only live watch, or NULL */
	size_t nbyfd;
	struct watch *dead;      /* removed during a batch, freed at its end */
	struct timer *timers;    /* invariant: sorted by due_ns */
};

static struct watch *watch_find(struct loop *l, int fd)
{
	return fd >= 0 && (size_t)fd < l->nbyfd ? l->byfd[fd] : NULL;
}

static void free_dead(struct loop *l)
{
	while (l->dead) {
		struct watch *w = l->dead;

		l->dead = w->next_dead;
		free(w);
	}
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
	for (size_t i = 0; i < l->nbyfd; i++)
		free(l->byfd[i]);
	free(l->byfd);
	free_dead(l);
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

	if (fd < 0)
		return -EBADF;
	if (watch_find(l, fd))
		return -EEXIST;
	if ((size_t)fd >= l->nbyfd) {
		size_t n = l->nbyfd ? l->nbyfd : 64;
		struct watch **t;

		while (n <= (size_t)fd)
			n *= 2;
		if (!(t = realloc(l->byfd, n * sizeof(*t))))
			return -ENOMEM;
		memset(t + l->nbyfd, 0, (n - l->nbyfd) * sizeof(*t));
		l->byfd = t;
		l->nbyfd = n;
	}
	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->fd = fd;
	w->cb = cb;
	w->arg = arg;
	w->events = events;
	ev.data.ptr = w;
	if (epoll_ctl(l->ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
		int err = -errno;
		free(w);
		return err;
	}
	l->byfd[fd] = w;
	return 0;
}

int loop_mod(struct loop *l, int fd, uint32_t events)
{
	struct watch *w = watch_find(l, fd);
	struct epoll_event ev = { .events = events };

	if (!w)
		return -ENOENT;
	w->events = events;
	ev.data.ptr = w;
	return epoll_ctl(l->ep, EPOLL_CTL_MOD, fd, &ev) < 0 ? -errno : 0;
}

int loop_del(struct loop *l, int fd)
{
	struct watch *w = watch_find(l, fd);

	if (!w)
		return -ENOENT;
	epoll_ctl(l->ep, EPOLL_CTL_DEL, fd, NULL);
	l->byfd[fd] = NULL;
	if (w->pause_timer)
		loop_timer_cancel(l, w->pause_timer);
	/* an event later in the same batch may still point at it */
	w->dead = true;
	w->next_dead = l->dead;
	l->dead = w;
	return 0;
}

static void accept_resume(struct loop *l, void *arg)
{
	struct watch *w = arg;
	struct epoll_event ev = { .events = w->events, .data.ptr = w };

	w->pause_timer = 0;
	epoll_ctl(l->ep, EPOLL_CTL_MOD, w->fd, &ev);
}

int loop_accept(struct loop *l, int lfd, int flags)
{
	struct watch *w = watch_find(l, lfd);
	int fd = accept4(lfd, NULL, NULL, flags);
	struct epoll_event ev = { 0 };

	if (fd >= 0)
		return fd;
	if (errno != EMFILE && errno != ENFILE && errno != ENOBUFS && errno != ENOMEM)
		return -errno;
	if (w && !w->pause_timer) {
		log_warn("accept on fd %d: %s: not accepting for %d ms", lfd, strerror(errno), LOOP_ACCEPT_PAUSE_MS);
		ev.data.ptr = w;
		epoll_ctl(l->ep, EPOLL_CTL_MOD, lfd, &ev);
		w->pause_timer = loop_timer_add(l, LOOP_ACCEPT_PAUSE_MS, accept_resume, w);
	}
	return -EAGAIN;
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

			if (!w) {
				run_timers(l);
				continue;
			}
			if (!w->dead && w->cb)
				w->cb(l, w->fd, evs[i].events, w->arg);
		}
		free_dead(l);
	}
	return 0;
}

void loop_stop(struct loop *l)
{
	l->stop = true;
}
