/* edge.c: lanternd's side of lantern-wire (see edge.h). Everything lantern-wire says is
 * read as untrusted: handles must name something lanternd gave it, strings are bounded,
 * counts capped; a call's pid is checked against the run's cgroup here, not there.
 *
 * Handles: each harness socket and DNS proxy gets a number lantern-wire uses to name
 * it. A caller (a connection lantern-wire accepted) is a struct peer here, tied to the
 * generation of the lantern-wire that reported it, so an answer that comes due after a
 * restart never reaches a stranger's connection. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lantern/edge.h"
#include "lantern/harness.h"
#include "lantern/wire.h"

#define MAX_PEERS 65536
#define RESTART_MIN_MS 50
#define RESTART_MAX_MS 5000
/* A lantern-wire that lived this long died of something new: the next start is quick
 * again. One that dies sooner (a request that kills it each time) is started ever
 * later, up to RESTART_MAX_MS, so a crash loop costs lanternd little. */
#define RESTART_STABLE_MS 10000
/* Questions one proxy may have at the upstream (lantern-wire holds to the same). */
#define MAX_ASKED 256
#define ASK_TIMEOUT_MS 3000
/* Addresses of one answer handed to the owner; more are not opened. */
#define MAX_ANSWER_ADDRS 64

struct listener {
	uint64_t handle;
	struct durable_run *du;
	int fd;                     /* kept, to hand over again after a restart */
	struct listener *next;
};

struct peer {
	struct edge *g;
	uint64_t handle, id;
	unsigned gen;
	int verdict;                /* -1 not checked yet, 0 refused, 1 the run's */
	struct peer *next;
};

struct asked;

struct proxy {
	uint64_t handle;
	struct dns_listeners ls;    /* kept, as the listeners are */
	struct dns_upstream up;
	struct dns_callbacks cb;
	void *ctx;
	struct asked *asked;        /* questions at the upstream for it */
	unsigned nasked;
	struct proxy *next;
};

/* A question lantern-wire handed over, at the upstream now. */
struct asked {
	struct edge *g;
	struct proxy *x;
	uint64_t qid;
	struct dns_ask *a;
	struct dns_wire_question q;
	char qname[DNS_WIRE_NAME_MAX + 1];
	unsigned naddrs;
	int err;
	struct asked *next;
};

struct edge {
	struct loop *loop;
	char wire[PATH_MAX], user[64], root[PATH_MAX];
	struct wire_link *link;
	pid_t pid;
	int pidfd;
	unsigned gen;
	unsigned backoff_ms;
	uint64_t started_ms;        /* CLOCK_MONOTONIC, when the running one started */
	unsigned restarts;
	uint64_t restart_timer;
	bool closing;
	struct durable *durable;
	uint64_t next_handle;
	struct listener *listeners;
	struct peer *peers;
	unsigned npeers;
	struct proxy *proxies;
};

static int start(struct edge *g, struct lerr *e);

pid_t edge_wire_pid(const struct edge *g)
{
	return g->link ? g->pid : 0;
}

void edge_set_durable(struct edge *g, struct durable *d)
{
	g->durable = d;
}

static void send_msg(struct edge *g, struct wire_msg *m)
{
	if (g->link)
		wire_send(g->link, m);
	else
		wire_msg_free(m);
}

/* ---- harness sockets and their callers ---- */

static struct listener *listener_of(struct edge *g, uint64_t handle)
{
	for (struct listener *l = g->listeners; l; l = l->next)
		if (l->handle == handle)
			return l;
	return NULL;
}

static struct peer *peer_of(struct edge *g, uint64_t handle, uint64_t id)
{
	for (struct peer *p = g->peers; p; p = p->next)
		if (p->handle == handle && p->id == id && p->gen == g->gen)
			return p;
	return NULL;
}

static void peer_drop(struct edge *g, struct peer *p)
{
	for (struct peer **pp = &g->peers; *pp; pp = &(*pp)->next)
		if (*pp == p) {
			*pp = p->next;
			break;
		}
	if (g->durable)
		durable_forget_peer(g->durable, p);
	g->npeers--;
	free(p);
}

static void serve_listener(struct edge *g, struct listener *l)
{
	struct wire_msg m;

	wire_msg_init(&m, WIRE_HARNESS_SERVE);
	wire_put_u64(&m, l->handle);
	wire_put_fd(&m, l->fd);
	send_msg(g, &m);
}

static int h_listen(void *arg, struct durable_run *du, const char *path, int fd, void **out,
		    struct lerr *e)
{
	struct edge *g = arg;
	struct listener *l = calloc(1, sizeof(*l));

	if (!l) {
		if (fd >= 0)
			close(fd);
		return lerr_set(e, ENOMEM, "harness: out of memory");
	}
	if ((l->fd = fd >= 0 ? fd : harness_bind(path, e)) < 0) {
		int err = l->fd;

		free(l);
		return err;
	}
	l->handle = ++g->next_handle;
	l->du = du;
	l->next = g->listeners;
	g->listeners = l;
	serve_listener(g, l);
	*out = l;
	return 0;
}

static void h_unlisten(void *arg, void *listener)
{
	struct edge *g = arg;
	struct listener *l = listener;
	struct wire_msg m;

	wire_msg_init(&m, WIRE_HARNESS_STOP);
	wire_put_u64(&m, l->handle);
	send_msg(g, &m);
	for (struct peer *p = g->peers, *nx; p; p = nx) {
		nx = p->next;
		if (p->handle == l->handle)
			peer_drop(g, p);
	}
	for (struct listener **pp = &g->listeners; *pp; pp = &(*pp)->next)
		if (*pp == l) {
			*pp = l->next;
			break;
		}
	close(l->fd);
	free(l);
}

static void reply(struct edge *g, struct peer *p, int status, bool close_after, const char *json, size_t len)
{
	struct wire_msg m;

	if (p->gen != g->gen)
		return; /* the lantern-wire that held the connection is gone */
	wire_msg_init(&m, WIRE_REPLY);
	wire_put_u64(&m, p->handle);
	wire_put_u64(&m, p->id);
	wire_put_u32(&m, (uint32_t)status);
	wire_put_u8(&m, close_after);
	wire_put_bytes(&m, json ? json : "{}", json ? len : 2);
	send_msg(g, &m);
}

static void h_reply(void *arg, void *peer, int status, const char *json, size_t len)
{
	reply(arg, peer, status, false, json, len);
}

const struct durable_transport edge_harness = {
	.listen = h_listen,
	.unlisten = h_unlisten,
	.reply = h_reply,
};

static void on_call(struct edge *g, struct wire_msg *m)
{
	uint64_t handle = wire_get_u64(m), id = wire_get_u64(m);
	pid_t pid = (pid_t)wire_get_u32(m);
	struct listener *l = listener_of(g, handle);
	struct harness_call call;
	struct peer *p;
	char why[512];

	if (wire_get_call(m, &call, why, sizeof(why)) < 0 || !l || !g->durable) {
		log_warn("wire: a call dropped: %s", !l ? "for a socket lanternd does not serve" : why);
		harness_call_free(&call);
		return;
	}
	if (!(p = peer_of(g, handle, id))) {
		if (g->npeers >= MAX_PEERS || !(p = calloc(1, sizeof(*p)))) {
			harness_call_free(&call);
			return;
		}
		p->g = g;
		p->handle = handle;
		p->id = id;
		p->gen = g->gen;
		p->verdict = -1;
		p->next = g->peers;
		g->peers = p;
		g->npeers++;
	}
	if (p->verdict < 0)
		p->verdict = durable_caller_ok(l->du, pid, why, sizeof(why));
	if (!p->verdict) {
		struct json_text t;
		size_t n;
		char *body;

		json_text_open(&t);
		json_text_str(&t, "error", "forbidden");
		json_text_str(&t, "reason", why[0] ? why : "not a process of this run");
		body = json_text_take(&t, &n);
		reply(g, p, 403, true, body, body ? n : 0);
		free(body);
	} else {
		durable_call(l->du, p, &call);
	}
	harness_call_free(&call);
}

static void on_gone(struct edge *g, struct wire_msg *m)
{
	uint64_t handle = wire_get_u64(m), id = wire_get_u64(m);
	struct peer *p = wire_msg_done(m) ? peer_of(g, handle, id) : NULL;

	if (p)
		peer_drop(g, p);
}

/* ---- DNS proxies ---- */

static struct proxy *proxy_of(struct edge *g, uint64_t handle)
{
	for (struct proxy *x = g->proxies; x; x = x->next)
		if (x->handle == handle)
			return x;
	return NULL;
}

static void serve_proxy(struct edge *g, struct proxy *x)
{
	struct wire_msg m;
	uint8_t mask = 0;

	for (int i = 0; i < 3; i++) {
		mask |= x->ls.udp[i] >= 0 ? 1u << i : 0;
		mask |= x->ls.tcp[i] >= 0 ? 1u << (i + 3) : 0;
	}
	wire_msg_init(&m, WIRE_DNS_SERVE);
	wire_put_u64(&m, x->handle);
	wire_put_u8(&m, mask);
	wire_put_u16(&m, x->ls.port);
	for (int i = 0; i < 6; i++) {
		int fd = i < 3 ? x->ls.udp[i] : x->ls.tcp[i - 3];

		if (fd >= 0)
			wire_put_fd(&m, fd);
	}
	send_msg(g, &m);
}

static int d_open(void *arg, const struct dns_upstream *u, uint16_t port, const struct dns_callbacks *cb,
		  void *ctx, void **out, struct lerr *e)
{
	struct edge *g = arg;
	struct proxy *x = calloc(1, sizeof(*x));
	int err;

	if (!x)
		return lerr_set(e, ENOMEM, "dns: out of memory");
	if (!cb || !cb->allowed || !u || !u->len) {
		free(x);
		return lerr_set(e, EINVAL, "dns: a proxy needs an upstream and an allowed callback");
	}
	if ((err = dns_listeners_open(port, &x->ls, e)) < 0) {
		free(x);
		return err;
	}
	x->handle = ++g->next_handle;
	x->up = *u;
	x->cb = *cb;
	x->ctx = ctx;
	x->next = g->proxies;
	g->proxies = x;
	serve_proxy(g, x);
	*out = x;
	return 0;
}

static void add_ip4(struct edge *g, struct proxy *x)
{
	struct wire_msg m;

	wire_msg_init(&m, WIRE_DNS_ADD);
	wire_put_u64(&m, x->handle);
	wire_put_fd(&m, x->ls.udp[2]);
	wire_put_fd(&m, x->ls.tcp[2]);
	send_msg(g, &m);
}

static int d_listen_ip4(void *arg, void *proxy, uint32_t ip4, struct lerr *e)
{
	struct proxy *x = proxy;
	int err;

	if (x->ls.udp[2] >= 0)
		return lerr_set(e, EEXIST, "dns: proxy on port %u: already listening on a second address", x->ls.port);
	if ((err = dns_listeners_ip4(x->ls.port, ip4, &x->ls.udp[2], &x->ls.tcp[2], e)) < 0)
		return err;
	add_ip4(arg, x);
	return 0;
}

static uint16_t d_port(void *arg, void *proxy)
{
	return ((struct proxy *)proxy)->ls.port;
}

static void asked_drop_all(struct proxy *x);

static void d_close(void *arg, void *proxy)
{
	struct edge *g = arg;
	struct proxy *x = proxy;
	struct wire_msg m;

	wire_msg_init(&m, WIRE_DNS_STOP);
	wire_put_u64(&m, x->handle);
	send_msg(g, &m);
	asked_drop_all(x);
	for (struct proxy **pp = &g->proxies; *pp; pp = &(*pp)->next)
		if (*pp == x) {
			*pp = x->next;
			break;
		}
	dns_listeners_close(&x->ls);
	free(x);
}

const struct dns_proxy_ops edge_dns = {
	.open = d_open,
	.listen_ip4 = d_listen_ip4,
	.port = d_port,
	.close = d_close,
};

/* A name from lantern-wire: printable, bounded, as dns_wire_name_text makes them. */
static bool name_ok(const char *s)
{
	size_t n = strlen(s);

	if (!n || n > 253)
		return false;
	for (; *s; s++)
		if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
			return false;
	return true;
}

static void dns_answer(struct edge *g, struct proxy *x, uint64_t qid, uint16_t type, const uint8_t *reply,
		       size_t len)
{
	struct wire_msg r;

	wire_msg_init(&r, type);
	wire_put_u64(&r, x->handle);
	wire_put_u64(&r, qid);
	if (type == WIRE_DNS_RELAY)
		wire_put_bytes(&r, reply, reply ? len : 0);
	send_msg(g, &r);
}

static void asked_unlink(struct asked *k)
{
	for (struct asked **pp = &k->x->asked; *pp; pp = &(*pp)->next)
		if (*pp == k) {
			*pp = k->next;
			k->x->nasked--;
			break;
		}
}

static void asked_drop_all(struct proxy *x)
{
	while (x->asked) {
		struct asked *k = x->asked;

		asked_unlink(k);
		dns_ask_cancel(k->a);
		free(k);
	}
}

static int hand_over(void *arg, const uint8_t addr[16], uint32_t ttl)
{
	struct asked *k = arg;

	if (k->naddrs >= MAX_ANSWER_ADDRS || !k->x->cb.answer)
		return 0;
	k->naddrs++;
	return k->x->cb.answer(k->x->ctx, k->qname, addr, ttl);
}

/* The upstream answered (or not): its addresses go to the owner (the instance's allow
 * map) first, then the reply to lantern-wire to relay. */
static void on_upstream(void *arg, uint8_t *reply, size_t len, size_t qend)
{
	struct asked *k = arg;

	asked_unlink(k);
	if (reply && dns_wire_rcode(reply) == DNS_RCODE_NOERROR &&
	    dns_wire_answers(reply, len, qend, &k->q, hand_over, k) < 0)
		reply = NULL;
	dns_answer(k->g, k->x, k->qid, WIRE_DNS_RELAY, reply, len);
	free(k);
}

/* A query lantern-wire read: refused here, or asked of the upstream by lanternd, with a
 * query lanternd writes itself from the name (no byte of the workload's goes out). */
static void dns_ask_msg(struct edge *g, struct proxy *x, uint64_t qid, const char *qname, struct wire_msg *m)
{
	uint16_t qtype = wire_get_u16(m), qclass = wire_get_u16(m);
	uint8_t tcp = wire_get_u8(m), query[DNS_ASK_QUERY_MAX];
	struct asked *k;
	size_t len;

	if (!wire_msg_done(m) || tcp > 1)
		return;
	if (!name_ok(qname) || !x->cb.allowed(x->ctx, qname)) {
		if (x->cb.refused)
			x->cb.refused(x->ctx, name_ok(qname) ? qname : "(unprintable)", qtype);
		dns_answer(g, x, qid, WIRE_DNS_REFUSE, NULL, 0);
		return;
	}
	if (x->nasked >= MAX_ASKED || !(len = dns_ask_build(query, qname, qtype, qclass)) ||
	    !(k = calloc(1, sizeof(*k)))) {
		dns_answer(g, x, qid, WIRE_DNS_RELAY, NULL, 0);
		return;
	}
	k->g = g;
	k->x = x;
	k->qid = qid;
	snprintf(k->qname, sizeof(k->qname), "%s", qname);
	if (dns_wire_query_parse(query, len, &k->q) != 0 ||
	    dns_ask_start(g->loop, &x->up, query, len, &k->q, tcp, ASK_TIMEOUT_MS, on_upstream, k, &k->a) < 0) {
		free(k);
		dns_answer(g, x, qid, WIRE_DNS_RELAY, NULL, 0);
		return;
	}
	k->next = x->asked;
	x->asked = k;
	x->nasked++;
}

static void on_dns(struct edge *g, struct wire_msg *m)
{
	uint64_t handle = wire_get_u64(m), qid = m->type == WIRE_DNS_REFUSED ? 0 : wire_get_u64(m);
	struct proxy *x = proxy_of(g, handle);
	char qname[DNS_WIRE_NAME_MAX + 1];

	wire_get_str(m, qname, sizeof(qname));
	if (!x)
		return;
	if (m->type == WIRE_DNS_REFUSED) {
		uint16_t qtype = wire_get_u16(m);

		if (wire_msg_done(m) && x->cb.refused)
			x->cb.refused(x->ctx, name_ok(qname) ? qname : "(unprintable)", qtype);
		return;
	}
	dns_ask_msg(g, x, qid, qname, m);
}

/* ---- the process ---- */

static void on_msg(void *arg, struct wire_msg *m)
{
	struct edge *g = arg;

	switch (m->type) {
	case WIRE_CALL: on_call(g, m); break;
	case WIRE_GONE: on_gone(g, m); break;
	case WIRE_DNS_ASK:
	case WIRE_DNS_REFUSED: on_dns(g, m); break;
	default:
		log_warn("wire: lantern-wire sent a message lanternd does not take (type %u)", m->type);
	}
}

static void on_restart(struct loop *l, void *arg)
{
	struct edge *g = arg;
	struct lerr e = { 0 };

	g->restart_timer = 0;
	if (start(g, &e) < 0) {
		log_error("wire: %s: trying again in %u ms", e.msg, g->backoff_ms);
		g->restart_timer = loop_timer_add(l, g->backoff_ms, on_restart, g);
		if (g->backoff_ms < RESTART_MAX_MS)
			g->backoff_ms *= 2;
	}
}

/* lantern-wire is gone (it exited, or its link broke): its callers with it. */
static void lost(struct edge *g, const char *why)
{
	if (!g->link)
		return;
	log_warn("wire: lantern-wire (pid %d) lost: %s: starting another", (int)g->pid, why);
	wire_link_close(g->link);
	g->link = NULL;
	if (g->pid > 0)
		kill(g->pid, SIGKILL);
	while (g->peers)
		peer_drop(g, g->peers);
	for (struct proxy *x = g->proxies; x; x = x->next)
		asked_drop_all(x);
	g->gen++;
	if (util_now_ns(CLOCK_MONOTONIC) / 1000000 - g->started_ms >= RESTART_STABLE_MS)
		g->backoff_ms = RESTART_MIN_MS;
	if (!g->closing && !g->restart_timer)
		g->restart_timer = loop_timer_add(g->loop, g->backoff_ms, on_restart, g);
	if (g->backoff_ms < RESTART_MAX_MS)
		g->backoff_ms *= 2;
}

static void on_down(void *arg, const char *why)
{
	lost(arg, why);
}

static void on_exit_fd(struct loop *l, int fd, uint32_t events, void *arg)
{
	struct edge *g = arg;
	int st = 0;

	loop_del(l, g->pidfd);
	close(g->pidfd);
	g->pidfd = -1;
	waitpid(g->pid, &st, WNOHANG);
	lost(g, WIFSIGNALED(st) ? strsignal(WTERMSIG(st)) : "it exited");
	g->pid = 0;
}

static int start(struct edge *g, struct lerr *e)
{
	char *argv[] = { "lantern-wire", "--fd", "3", "--user", g->user, "--root", g->root, NULL };
	posix_spawn_file_actions_t fa;
	int sv[2], err;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) < 0)
		return lerr_set(e, errno, "wire: socketpair: %s", strerror(errno));
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDWR, 0);
	posix_spawn_file_actions_adddup2(&fa, 0, 1);
	posix_spawn_file_actions_adddup2(&fa, sv[1], 3);
	posix_spawn_file_actions_addclosefrom_np(&fa, 4);
	err = posix_spawn(&g->pid, g->wire, &fa, NULL, argv, (char *[]){ NULL });
	posix_spawn_file_actions_destroy(&fa);
	close(sv[1]);
	if (err) {
		close(sv[0]);
		return lerr_set(e, err, "wire: cannot start %s: %s", g->wire, strerror(err));
	}
	g->pidfd = (int)syscall(SYS_pidfd_open, g->pid, 0);
	if (g->pidfd < 0 || loop_add(g->loop, g->pidfd, EPOLLIN, on_exit_fd, g) < 0 ||
	    (err = wire_link_open(g->loop, sv[0], on_msg, on_down, g, &g->link, e)) < 0) {
		kill(g->pid, SIGKILL);
		waitpid(g->pid, NULL, 0);
		if (g->pidfd >= 0)
			close(g->pidfd);
		g->pidfd = -1;
		close(sv[0]);
		return lerr_set(e, EIO, "wire: cannot watch lantern-wire (pid %d)", (int)g->pid);
	}
	/* everything it served before, again */
	for (struct listener *l = g->listeners; l; l = l->next)
		serve_listener(g, l);
	for (struct proxy *x = g->proxies; x; x = x->next) {
		serve_proxy(g, x);
		if (x->ls.udp[2] >= 0)
			add_ip4(g, x);
	}
	log_info("wire: lantern-wire running as pid %d (user %s, root %s)", (int)g->pid, g->user, g->root);
	g->started_ms = util_now_ns(CLOCK_MONOTONIC) / 1000000;
	g->restarts++;
	return 0;
}

int edge_open(struct loop *l, const struct edge_opts *o, struct edge **out, struct lerr *e)
{
	struct edge *g = calloc(1, sizeof(*g));
	int err;

	if (!g)
		return lerr_set(e, ENOMEM, "wire: out of memory");
	g->loop = l;
	g->pidfd = -1;
	g->backoff_ms = RESTART_MIN_MS;
	snprintf(g->wire, sizeof(g->wire), "%s", o->wire);
	snprintf(g->user, sizeof(g->user), "%s", o->user ? o->user : "nobody");
	snprintf(g->root, sizeof(g->root), "%s", o->root);
	if ((err = util_mkdir_p(g->root, 0755)) < 0 || (err = start(g, e)) < 0) {
		if (!e->msg[0])
			lerr_set(e, err, "wire: root %s: %s", g->root, strerror(-err));
		free(g);
		return err;
	}
	*out = g;
	return 0;
}

void edge_close(struct edge *g)
{
	if (!g)
		return;
	g->closing = true;
	if (g->restart_timer)
		loop_timer_cancel(g->loop, g->restart_timer);
	if (g->link)
		wire_link_close(g->link);
	if (g->pidfd >= 0) {
		loop_del(g->loop, g->pidfd);
		close(g->pidfd);
	}
	if (g->pid > 0) {
		kill(g->pid, SIGKILL);
		waitpid(g->pid, NULL, 0);
	}
	while (g->peers)
		peer_drop(g, g->peers);
	while (g->listeners) {
		struct listener *l = g->listeners;

		g->listeners = l->next;
		close(l->fd);
		free(l);
	}
	while (g->proxies) {
		struct proxy *x = g->proxies;

		g->proxies = x->next;
		asked_drop_all(x);
		dns_listeners_close(&x->ls);
		free(x);
	}
	free(g);
}
