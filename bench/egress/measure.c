/* measure.c: the loopback listener and the measuring child of the egress benchmark.
 *
 * The child times each connect() alone with CLOCK_MONOTONIC: socket creation and
 * close stay outside the window. On loopback the whole three-way handshake runs
 * inside connect(), so the window holds every hook a policy adds: lantern's
 * connect4 program once, nftables' output chain for each packet the client sends.
 * Each socket is closed with an RST (SO_LINGER 0) so no TIME_WAIT accumulates and
 * the port search costs the same in every batch. */
#include "bench.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct req {
	uint16_t port;
	uint32_t n;
	uint32_t warmup;
};

static void pin_cpu(int cpu)
{
	cpu_set_t set;

	if (cpu < 0)
		return;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	sched_setaffinity(0, sizeof(set), &set);
}

/* Children die with the parent and on ^C, so the parent's cleanup finds them gone
 * or kills them by pid. */
static void child_init(int cpu)
{
	signal(SIGINT, SIG_DFL);
	signal(SIGTERM, SIG_DFL);
	signal(SIGHUP, SIG_DFL);
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	pin_cpu(cpu);
}

static void loopback(struct sockaddr_in *sa, const char *addr, uint16_t port)
{
	memset(sa, 0, sizeof(*sa));
	sa->sin_family = AF_INET;
	sa->sin_port = htons(port);
	inet_pton(AF_INET, addr, &sa->sin_addr);
}

int listener_start(struct listener *l, int cpu)
{
	struct sockaddr_in sa;
	socklen_t len = sizeof(sa);
	int one = 1;

	l->acceptor = 0;
	l->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (l->fd < 0)
		return -errno;
	setsockopt(l->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	loopback(&sa, "127.0.0.1", 0);
	if (bind(l->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(l->fd, 4096) < 0 ||
	    getsockname(l->fd, (struct sockaddr *)&sa, &len) < 0) {
		int err = -errno;
		close(l->fd);
		return err;
	}
	l->port = ntohs(sa.sin_port);

	l->acceptor = fork();
	if (l->acceptor < 0) {
		int err = -errno;
		close(l->fd);
		return err;
	}
	if (l->acceptor == 0) {
		child_init(cpu);
		for (;;) {
			int c = accept(l->fd, NULL, NULL);
			if (c >= 0)
				close(c);
		}
	}
	return 0;
}

void listener_stop(struct listener *l)
{
	if (l->acceptor > 0) {
		kill(l->acceptor, SIGKILL);
		waitpid(l->acceptor, NULL, 0);
		l->acceptor = 0;
	}
	if (l->fd >= 0)
		close(l->fd);
	l->fd = -1;
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* One connect to sa; *ns gets its duration. Returns 0 or the errno. */
static int timed_connect(const struct sockaddr_in *sa, uint64_t *ns)
{
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };
	uint64_t t0, t1;
	int fd, rc, err = 0;

	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return errno;
	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	t0 = now_ns();
	rc = connect(fd, (const struct sockaddr *)sa, sizeof(*sa));
	t1 = now_ns();
	if (rc < 0)
		err = errno;
	close(fd);
	*ns = t1 - t0;
	return err;
}

/* A connect to a destination that no policy allows: a refusal means the packet got
 * through to the loopback stack, EPERM (lantern) or silence (an nft drop) means the
 * policy stopped it. */
static int probe(uint16_t port)
{
	struct sockaddr_in sa;
	struct pollfd pfd;
	socklen_t len = sizeof(int);
	int fd, err = 0;

	loopback(&sa, "127.0.0.2", port);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return errno;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
		goto out;
	err = errno;
	if (err != EINPROGRESS)
		goto out;
	pfd.fd = fd;
	pfd.events = POLLOUT;
	if (poll(&pfd, 1, 300) <= 0) {
		err = ETIMEDOUT;
		goto out;
	}
	getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
out:
	close(fd);
	return err;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static void run_batch(const struct req *r, uint64_t *samples, struct batch *b)
{
	struct sockaddr_in sa;
	uint64_t ns = 0;

	memset(b, 0, sizeof(*b));
	loopback(&sa, "127.0.0.1", r->port);
	for (uint32_t i = 0; i < r->warmup + r->n; i++) {
		int err = timed_connect(&sa, &ns);
		if (err) {
			b->err = err;
			return;
		}
		if (i >= r->warmup)
			samples[i - r->warmup] = ns;
	}
	qsort(samples, r->n, sizeof(*samples), cmp_u64);
	b->median = samples[r->n / 2];
	b->p99 = samples[(size_t)r->n * 99 / 100];
	b->probe = probe(r->port);
}

static int read_full(int fd, void *buf, size_t len)
{
	char *p = buf;

	while (len) {
		ssize_t r = read(fd, p, len);
		if (r < 0 && errno == EINTR && !bench_stop)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			return -EPIPE;
		p += r;
		len -= (size_t)r;
	}
	return 0;
}

static int write_full(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len) {
		ssize_t w = write(fd, p, len);
		if (w < 0 && errno == EINTR && !bench_stop)
			continue;
		if (w < 0)
			return -errno;
		p += w;
		len -= (size_t)w;
	}
	return 0;
}

static void child_loop(int req, int resp)
{
	uint64_t *samples = NULL;
	uint32_t cap = 0;
	struct req r;
	struct batch b;

	while (read_full(req, &r, sizeof(r)) == 0) {
		if (r.n == 0)
			_exit(2);
		if (r.n > cap) {
			free(samples);
			samples = malloc(sizeof(*samples) * r.n);
			if (!samples)
				_exit(3);
			cap = r.n;
		}
		run_batch(&r, samples, &b);
		if (write_full(resp, &b, sizeof(b)) < 0)
			_exit(4);
	}
	_exit(0);
}

int measurer_start(struct measurer *m, int cpu)
{
	int to_child[2], to_parent[2];

	if (pipe2(to_child, O_CLOEXEC) < 0)
		return -errno;
	if (pipe2(to_parent, O_CLOEXEC) < 0) {
		int err = -errno;
		close(to_child[0]);
		close(to_child[1]);
		return err;
	}
	m->pid = fork();
	if (m->pid < 0) {
		int err = -errno;
		close(to_child[0]);
		close(to_child[1]);
		close(to_parent[0]);
		close(to_parent[1]);
		return err;
	}
	if (m->pid == 0) {
		child_init(cpu);
		close(to_child[1]);
		close(to_parent[0]);
		child_loop(to_child[0], to_parent[1]);
	}
	close(to_child[0]);
	close(to_parent[1]);
	m->req = to_child[1];
	m->resp = to_parent[0];
	return 0;
}

int measurer_run(struct measurer *m, uint16_t port, uint32_t n, uint32_t warmup,
		 struct batch *out)
{
	struct req r = { .port = port, .n = n, .warmup = warmup };
	int err;

	err = write_full(m->req, &r, sizeof(r));
	if (!err)
		err = read_full(m->resp, out, sizeof(*out));
	return bench_stop ? -EINTR : err;
}

void measurer_stop(struct measurer *m)
{
	if (m->pid > 0) {
		kill(m->pid, SIGKILL);
		waitpid(m->pid, NULL, 0);
		m->pid = 0;
	}
	if (m->req >= 0)
		close(m->req);
	if (m->resp >= 0)
		close(m->resp);
	m->req = m->resp = -1;
}
