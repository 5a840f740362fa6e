/* link.c: framed messages over a stream socket between lanternd and lantern-wire (see
 * wire.h), on an event loop. Sending queues whole frames (each with its descriptors,
 * which go with the frame's first byte) and writes what the socket takes; receiving
 * reads into a buffer bounded by the largest frame, collects passed descriptors in
 * order, and hands over each complete frame. Anything malformed (a length past the
 * bound, a frame claiming descriptors that did not come) ends the link. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lantern/wire.h"

#define HDR 8
#define FD_QUEUE 64

struct frame {
	uint8_t *data;            /* header + payload */
	size_t len, off;
	int fds[WIRE_MAX_FDS];
	unsigned nfds;
	struct frame *next;
};

struct wire_link {
	struct loop *loop;
	int fd;
	wire_msg_fn on_msg;
	wire_down_fn on_down;
	void *arg;
	bool down;
	uint32_t events;
	struct frame *out, **out_tail;
	size_t queued;
	uint8_t *in;
	size_t in_len, in_cap;
	int rfds[FD_QUEUE];       /* descriptors received, not yet claimed by a frame */
	unsigned nrfds;
	uint64_t dead_timer;
};

static void frame_free(struct frame *f)
{
	for (unsigned i = 0; i < f->nfds; i++)
		close(f->fds[i]);
	free(f->data);
	free(f);
}

static void on_dead(struct loop *l, void *arg);

/* The link is unusable: said once, on the loop's next turn (never inside a caller). */
static void go_down(struct wire_link *k, const char *why)
{
	if (k->down)
		return;
	k->down = true;
	log_warn("wire: link down: %s", why);
	loop_del(k->loop, k->fd);
	k->dead_timer = loop_timer_add(k->loop, 0, on_dead, k);
}

static void on_dead(struct loop *l, void *arg)
{
	struct wire_link *k = arg;

	k->dead_timer = 0;
	if (k->on_down)
		k->on_down(k->arg, "lantern-wire link closed");
}

static void watch(struct wire_link *k)
{
	uint32_t ev = EPOLLIN | (k->out ? EPOLLOUT : 0);

	if (!k->down && ev != k->events && loop_mod(k->loop, k->fd, ev) == 0)
		k->events = ev;
}

static void flush(struct wire_link *k)
{
	while (k->out && !k->down) {
		struct frame *f = k->out;
		struct iovec iov = { f->data + f->off, f->len - f->off };
		char cbuf[CMSG_SPACE(sizeof(int) * WIRE_MAX_FDS)];
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
		ssize_t n;

		if (f->off == 0 && f->nfds) {
			struct cmsghdr *cm;

			memset(cbuf, 0, sizeof(cbuf));
			mh.msg_control = cbuf;
			mh.msg_controllen = CMSG_SPACE(sizeof(int) * f->nfds);
			cm = CMSG_FIRSTHDR(&mh);
			cm->cmsg_level = SOL_SOCKET;
			cm->cmsg_type = SCM_RIGHTS;
			cm->cmsg_len = CMSG_LEN(sizeof(int) * f->nfds);
			memcpy(CMSG_DATA(cm), f->fds, sizeof(int) * f->nfds);
		}
		n = sendmsg(k->fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				break;
			go_down(k, strerror(errno));
			return;
		}
		if (f->off == 0) {
			/* the descriptors went with the first byte: ours are not needed any more */
			for (unsigned i = 0; i < f->nfds; i++)
				close(f->fds[i]);
			f->nfds = 0;
		}
		f->off += (size_t)n;
		k->queued -= (size_t)n;
		if (f->off < f->len)
			break;
		k->out = f->next;
		if (!k->out)
			k->out_tail = &k->out;
		frame_free(f);
	}
	watch(k);
}

int wire_send(struct wire_link *k, struct wire_msg *m)
{
	struct frame *f;
	int err = 0;

	if (k->down || m->bad)
		err = k->down ? -EPIPE : -EINVAL;
	else if (k->queued + m->len + HDR > WIRE_MAX_QUEUED)
		err = -ENOBUFS;
	else if (!(f = calloc(1, sizeof(*f))) || !(f->data = malloc(m->len + HDR))) {
		free(f);
		err = -ENOMEM;
	}
	if (err) {
		wire_msg_free(m);
		if (err == -ENOBUFS)
			go_down(k, "the other side does not read");
		return err;
	}
	for (int i = 0; i < 4; i++)
		f->data[i] = (uint8_t)(m->len >> (8 * i));
	f->data[4] = (uint8_t)m->type;
	f->data[5] = (uint8_t)(m->type >> 8);
	f->data[6] = (uint8_t)m->nfds;
	f->data[7] = 0;
	if (m->len)
		memcpy(f->data + HDR, m->buf, m->len);
	f->len = m->len + HDR;
	for (unsigned i = 0; i < m->nfds; i++) {
		f->fds[i] = m->fds[i];
		m->fds[i] = -1;
	}
	f->nfds = m->nfds;
	wire_msg_free(m);
	*k->out_tail = f;
	k->out_tail = &f->next;
	k->queued += f->len;
	flush(k);
	return 0;
}

static void keep_fds(struct wire_link *k, struct msghdr *mh)
{
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(mh); cm; cm = CMSG_NXTHDR(mh, cm)) {
		size_t n;

		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		n = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < n; i++) {
			int fd;

			memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
			if (k->nrfds < FD_QUEUE)
				k->rfds[k->nrfds++] = fd;
			else
				close(fd);
		}
	}
}

/* Hands over every complete frame in the buffer. */
static void dispatch(struct wire_link *k)
{
	size_t off = 0;

	while (!k->down && k->in_len - off >= HDR) {
		const uint8_t *h = k->in + off;
		uint32_t len = (uint32_t)h[0] | (uint32_t)h[1] << 8 | (uint32_t)h[2] << 16 | (uint32_t)h[3] << 24;
		uint16_t type = (uint16_t)(h[4] | h[5] << 8);
		unsigned nfds = h[6];
		struct wire_msg m;

		if (len > WIRE_MAX_FRAME || nfds > WIRE_MAX_FDS || !type || type >= WIRE_TYPE_MAX) {
			go_down(k, "a malformed frame");
			return;
		}
		if (k->in_len - off < HDR + (size_t)len)
			break;
		if (nfds > k->nrfds) {
			go_down(k, "a frame without the descriptors it names");
			return;
		}
		wire_msg_init(&m, type);
		if (len && !(m.buf = malloc(len))) {
			go_down(k, "out of memory");
			return;
		}
		if (len)
			memcpy(m.buf, h + HDR, len);
		m.len = m.cap = len;
		memcpy(m.fds, k->rfds, nfds * sizeof(int));
		m.nfds = nfds;
		memmove(k->rfds, k->rfds + nfds, (k->nrfds - nfds) * sizeof(int));
		k->nrfds -= nfds;
		off += HDR + len;
		k->on_msg(k->arg, &m);
		wire_msg_free(&m);
	}
	if (off) {
		memmove(k->in, k->in + off, k->in_len - off);
		k->in_len -= off;
	}
}

static void on_io(struct loop *l, int fd, uint32_t events, void *arg)
{
	struct wire_link *k = arg;

	if (events & EPOLLOUT)
		flush(k);
	if (!(events & (EPOLLIN | EPOLLHUP | EPOLLERR)) || k->down)
		return;
	/* a bounded amount per wake-up: the loop has other work */
	for (int round = 0; round < 16 && !k->down; round++) {
		char cbuf[CMSG_SPACE(sizeof(int) * WIRE_MAX_FDS)];
		struct iovec iov;
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
				     .msg_controllen = sizeof(cbuf) };
		ssize_t n;

		if (k->in_cap - k->in_len < 65536) {
			size_t cap = k->in_cap ? k->in_cap * 2 : 131072;
			uint8_t *b;

			if (cap > WIRE_MAX_FRAME + HDR + 65536)
				cap = WIRE_MAX_FRAME + HDR + 65536;
			if (cap <= k->in_cap || !(b = realloc(k->in, cap))) {
				go_down(k, "a frame larger than the link takes");
				return;
			}
			k->in = b;
			k->in_cap = cap;
		}
		iov.iov_base = k->in + k->in_len;
		iov.iov_len = k->in_cap - k->in_len;
		n = recvmsg(k->fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
		if (n < 0) {
			if (errno != EAGAIN && errno != EINTR)
				go_down(k, strerror(errno));
			break;
		}
		if (n == 0) {
			go_down(k, "the other side closed it");
			break;
		}
		keep_fds(k, &mh);
		k->in_len += (size_t)n;
		dispatch(k);
		if ((size_t)n < iov.iov_len)
			break;
	}
}

int wire_link_open(struct loop *l, int fd, wire_msg_fn on_msg, wire_down_fn on_down, void *arg,
		   struct wire_link **out, struct lerr *e)
{
	struct wire_link *k = calloc(1, sizeof(*k));
	int err;

	if (!k)
		return lerr_set(e, ENOMEM, "wire: out of memory");
	k->loop = l;
	k->fd = fd;
	k->on_msg = on_msg;
	k->on_down = on_down;
	k->arg = arg;
	k->out_tail = &k->out;
	k->events = EPOLLIN;
	if ((err = loop_add(l, fd, EPOLLIN, on_io, k)) < 0) {
		free(k);
		return lerr_set(e, err, "wire: watching the link: %s", strerror(-err));
	}
	*out = k;
	return 0;
}

void wire_link_close(struct wire_link *k)
{
	if (!k)
		return;
	if (!k->down)
		loop_del(k->loop, k->fd);
	if (k->dead_timer)
		loop_timer_cancel(k->loop, k->dead_timer);
	close(k->fd);
	while (k->out) {
		struct frame *f = k->out;

		k->out = f->next;
		frame_free(f);
	}
	for (unsigned i = 0; i < k->nrfds; i++)
		close(k->rfds[i]);
	free(k->in);
	free(k);
}
