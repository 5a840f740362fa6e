/* loop.h: lanternd's one event loop (epoll), with fd watches and one-shot timers.
 * Single-threaded: every callback runs on the loop's thread. */
#ifndef LANTERN_LOOP_H
#define LANTERN_LOOP_H

#include <stdint.h>

struct loop;
typedef void (*loop_fd_cb)(struct loop *l, int fd, uint32_t events, void *arg);
typedef void (*loop_timer_cb)(struct loop *l, void *arg);

struct loop *loop_new(void);
void loop_free(struct loop *l);
/* events are EPOLLIN/EPOLLOUT/...; a fd is registered at most once. */
int loop_add(struct loop *l, int fd, uint32_t events, loop_fd_cb cb, void *arg);
int loop_mod(struct loop *l, int fd, uint32_t events);
int loop_del(struct loop *l, int fd);
/* accept4(lfd, flags) for a listener watched by l. When the process is out of fds (or
 * memory) the listener stays readable, so it is unwatched for 100 ms rather than
 * spinning the loop; -EAGAIN then, as when nobody waits. Returns the fd or -errno. */
int loop_accept(struct loop *l, int lfd, int flags);
/* Fires once after ms milliseconds; returns an id > 0 for loop_timer_cancel. */
uint64_t loop_timer_add(struct loop *l, uint64_t ms, loop_timer_cb cb, void *arg);
void loop_timer_cancel(struct loop *l, uint64_t id);
/* Runs until loop_stop; returns 0, or -errno if epoll fails. */
int loop_run(struct loop *l);
void loop_stop(struct loop *l);

#endif
