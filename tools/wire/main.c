/* lantern-wire: the unprivileged half of lanternd (privilege separation, include/lantern/
 * wire.h). It reads what workloads send: the harness API's HTTP and JSON on each run's
 * socket, and each instance's DNS queries. It owns no authority: lanternd binds every
 * socket and passes it over, decides every question (is this caller the run's? may
 * this name resolve?), asks the upstream and records its addresses, and writes every
 * record; this process only parses, asks and relays.
 *
 *   lantern-wire --fd N --user USER --root DIR
 *
 * lanternd starts it as root with the link on fd N; it drops everything before it reads
 * a byte from anyone: into network, IPC and UTS namespaces of its own (no interface but
 * a down loopback), into DIR (an empty directory) as its root, to USER's uid and gid
 * with no supplementary groups, no capabilities, no new privileges, and a seccomp
 * allow-list of the few system calls an event loop over passed sockets needs (no
 * socket, no connect, no open). When the
 * link goes, it exits; lanternd starts another and hands it the sockets again. */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <jansson.h>
#include <sched.h>
#include <seccomp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lantern/dns.h"
#include "lantern/harness.h"
#include "lantern/loop.h"
#include "lantern/util.h"
#include "lantern/wire.h"

struct served {
	uint64_t handle;
	struct harness_server *srv;
	struct dns_server *dns;
	struct served *next;
};

static struct {
	struct loop *loop;
	struct wire_link *link;
	struct served *runs, *proxies;
} W;

static struct served **find(struct served **list, uint64_t handle)
{
	for (; *list; list = &(*list)->next)
		if ((*list)->handle == handle)
			return list;
	return list;
}

static void send_msg(struct wire_msg *m)
{
	if (W.link)
		wire_send(W.link, m);
	else
		wire_msg_free(m);
}

/* ---- the harness API ---- */

static bool h_accept(void *arg, pid_t pid, char *why, size_t len)
{
	/* who may use the socket is lanternd's to say: the pid goes with each call */
	return true;
}

static void h_request(void *arg, struct harness_conn *c, const struct harness_request *rq)
{
	struct served *s = arg;
	struct harness_call call;
	struct wire_msg m;
	char why[512];
	int status = harness_call_decode_request(rq, &call, why, sizeof(why));

	if (status) {
		struct json_text t;
		size_t n;
		char *body;

		json_text_open(&t);
		json_text_str(&t, "error", status == 400 ? "invalid" : "not_found");
		json_text_str(&t, "reason", why);
		body = json_text_take(&t, &n);
		harness_reply(c, status, body, body ? n : 0);
		free(body);
		harness_call_free(&call);
		return;
	}
	wire_msg_init(&m, WIRE_CALL);
	wire_put_u64(&m, s->handle);
	wire_put_u64(&m, harness_conn_id(c));
	wire_put_u32(&m, (uint32_t)harness_conn_pid(c));
	wire_put_call(&m, &call);
	harness_call_free(&call);
	send_msg(&m);
}

static void h_closed(void *arg, struct harness_conn *c)
{
	struct served *s = arg;
	struct wire_msg m;

	wire_msg_init(&m, WIRE_GONE);
	wire_put_u64(&m, s->handle);
	wire_put_u64(&m, harness_conn_id(c));
	send_msg(&m);
}

static const struct harness_ops h_ops = {
	.accept = h_accept,
	.request = h_request,
	.closed = h_closed,
};

static void harness_serve_msg(struct wire_msg *m)
{
	uint64_t handle = wire_get_u64(m);
	int fd = wire_take_fd(m);
	struct served *s;
	struct lerr e;

	if (!wire_msg_done(m) || fd < 0 || *find(&W.runs, handle) || !(s = calloc(1, sizeof(*s)))) {
		if (fd >= 0)
			close(fd);
		return;
	}
	s->handle = handle;
	if (harness_serve(W.loop, fd, &h_ops, s, &s->srv, &e) < 0) {
		log_warn("harness: %s", e.msg);
		free(s);
		return;
	}
	s->next = W.runs;
	W.runs = s;
}

static void harness_stop_msg(struct wire_msg *m)
{
	struct served **pp = find(&W.runs, wire_get_u64(m)), *s = *pp;

	if (!wire_msg_done(m) || !s)
		return;
	*pp = s->next;
	harness_server_close(s->srv);
	free(s);
}

static void reply_msg(struct wire_msg *m)
{
	uint64_t handle = wire_get_u64(m), peer = wire_get_u64(m);
	uint32_t status = wire_get_u32(m);
	bool close_after = wire_get_u8(m);
	size_t n;
	const uint8_t *body = wire_get_bytes(m, WIRE_MAX_FRAME, &n);
	struct served *s = *find(&W.runs, handle);
	struct harness_conn *c = s ? harness_conn_find(s->srv, peer) : NULL;

	if (!wire_msg_done(m) || !c || status < 100 || status > 599)
		return;
	if (close_after)
		harness_reply_close(c, (int)status, (const char *)body, n);
	else
		harness_reply(c, (int)status, (const char *)body, n);
}

/* ---- DNS ---- */

static int d_ask(void *ctx, uint64_t qid, const char *qname, uint16_t qtype, uint16_t qclass, bool tcp)
{
	struct served *s = ctx;
	struct wire_msg m;

	wire_msg_init(&m, WIRE_DNS_ASK);
	wire_put_u64(&m, s->handle);
	wire_put_u64(&m, qid);
	wire_put_str(&m, qname);
	wire_put_u16(&m, qtype);
	wire_put_u16(&m, qclass);
	wire_put_u8(&m, tcp);
	send_msg(&m);
	return -EINPROGRESS;
}

static void d_refused(void *ctx, const char *qname, uint16_t qtype)
{
	struct served *s = ctx;
	struct wire_msg m;

	wire_msg_init(&m, WIRE_DNS_REFUSED);
	wire_put_u64(&m, s->handle);
	wire_put_str(&m, qname);
	wire_put_u16(&m, qtype);
	send_msg(&m);
}

static const struct dns_server_hooks d_hooks = {
	.ask = d_ask,
	.refused = d_refused,
};

static void dns_serve_msg(struct wire_msg *m)
{
	uint64_t handle = wire_get_u64(m);
	uint8_t mask = wire_get_u8(m);
	struct dns_listeners ls = { .udp = { -1, -1, -1 }, .tcp = { -1, -1, -1 } };
	struct served *s;
	struct lerr e;

	ls.port = wire_get_u16(m);
	for (int i = 0; i < 6; i++)
		if (mask & (1u << i))
			*(i < 3 ? &ls.udp[i] : &ls.tcp[i - 3]) = wire_take_fd(m);
	if (!wire_msg_done(m) || *find(&W.proxies, handle) || !(s = calloc(1, sizeof(*s)))) {
		dns_listeners_close(&ls);
		return;
	}
	s->handle = handle;
	/* no upstream: lanternd asks it */
	if (dns_server_serve(W.loop, NULL, &ls, &d_hooks, s, &s->dns, &e) < 0) {
		log_warn("%s", e.msg);
		free(s);
		return;
	}
	s->next = W.proxies;
	W.proxies = s;
}

static void dns_msg(struct wire_msg *m)
{
	uint64_t handle = wire_get_u64(m);
	struct served **pp = find(&W.proxies, handle), *s = *pp;
	uint64_t qid;
	struct lerr e;
	int udp, tcp;

	switch (m->type) {
	case WIRE_DNS_ADD:
		udp = wire_take_fd(m);
		tcp = wire_take_fd(m);
		if (wire_msg_done(m) && s && udp >= 0 && tcp >= 0) {
			if (dns_server_add_ip4(s->dns, udp, tcp, &e) < 0)
				log_warn("%s", e.msg);
		} else {
			if (udp >= 0)
				close(udp);
			if (tcp >= 0)
				close(tcp);
		}
		break;
	case WIRE_DNS_STOP:
		if (wire_msg_done(m) && s) {
			*pp = s->next;
			dns_server_close(s->dns);
			free(s);
		}
		break;
	case WIRE_DNS_REFUSE:
		qid = wire_get_u64(m);
		if (wire_msg_done(m) && s)
			dns_server_verdict(s->dns, qid, false);
		break;
	case WIRE_DNS_RELAY: {
		size_t n;
		const uint8_t *reply;

		qid = wire_get_u64(m);
		reply = wire_get_bytes(m, DNS_WIRE_MSG_MAX, &n);
		if (wire_msg_done(m) && s)
			dns_server_relay(s->dns, qid, n ? reply : NULL, n);
		break;
	}
	}
}

static void on_msg(void *arg, struct wire_msg *m)
{
	switch (m->type) {
	case WIRE_HARNESS_SERVE: harness_serve_msg(m); break;
	case WIRE_HARNESS_STOP: harness_stop_msg(m); break;
	case WIRE_REPLY: reply_msg(m); break;
	case WIRE_DNS_SERVE: dns_serve_msg(m); break;
	case WIRE_DNS_ADD:
	case WIRE_DNS_STOP:
	case WIRE_DNS_REFUSE:
	case WIRE_DNS_RELAY: dns_msg(m); break;
	default: break;
	}
}

static void on_down(void *arg, const char *why)
{
	/* nothing here outlives lanternd's side: it starts another */
	exit(0);
}

/* ---- dropping privileges ---- */

static int drop(const char *user, const char *root)
{
	static const int allowed[] = {
		SCMP_SYS(read), SCMP_SYS(write), SCMP_SYS(readv), SCMP_SYS(writev), SCMP_SYS(close),
		SCMP_SYS(recvfrom), SCMP_SYS(sendto), SCMP_SYS(recvmsg), SCMP_SYS(sendmsg),
		SCMP_SYS(accept4), SCMP_SYS(getsockopt),
		SCMP_SYS(getsockname), SCMP_SYS(shutdown), SCMP_SYS(epoll_wait), SCMP_SYS(epoll_pwait),
		SCMP_SYS(epoll_ctl), SCMP_SYS(timerfd_settime), SCMP_SYS(clock_gettime), SCMP_SYS(getrandom),
		SCMP_SYS(brk), SCMP_SYS(mmap), SCMP_SYS(munmap), SCMP_SYS(mremap), SCMP_SYS(madvise),
		SCMP_SYS(fcntl), SCMP_SYS(fstat), SCMP_SYS(newfstatat), SCMP_SYS(lseek), SCMP_SYS(futex),
		SCMP_SYS(getpid), SCMP_SYS(gettid), SCMP_SYS(rt_sigreturn), SCMP_SYS(restart_syscall),
		SCMP_SYS(exit), SCMP_SYS(exit_group),
	};
	struct passwd *pw = getpwnam(user);
	scmp_filter_ctx f;
	int err = 0;

	if (!pw) {
		log_error("no user %s to run as", user);
		return -1;
	}
	/* a network of its own with nothing in it (the sockets it serves were bound by
	 * lanternd and are passed in): lantern-wire cannot reach anything, even if taken */
	if (unshare(CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS) < 0) {
		log_error("unshare (network, IPC, UTS): %s", strerror(errno));
		return -1;
	}
	if (chroot(root) < 0 || chdir("/") < 0 || setgroups(0, NULL) < 0 ||
	    setresgid(pw->pw_gid, pw->pw_gid, pw->pw_gid) < 0 ||
	    setresuid(pw->pw_uid, pw->pw_uid, pw->pw_uid) < 0 ||
	    prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
		log_error("dropping privileges (root %s, user %s): %s", root, user, strerror(errno));
		return -1;
	}
	if (getuid() == 0 || geteuid() == 0) {
		log_error("still root after setresuid: refusing to read anything");
		return -1;
	}
	if (!(f = seccomp_init(SCMP_ACT_KILL_PROCESS)))
		return -1;
	for (size_t i = 0; i < ARRAY_SIZE(allowed) && !err; i++)
		err = seccomp_rule_add(f, SCMP_ACT_ALLOW, allowed[i], 0);
	/* a library reaching for a file (a locale, a random device) gets an error, not a kill:
	 * the chroot is empty and the user owns nothing anyway */
	if (!err)
		err = seccomp_rule_add(f, SCMP_ACT_ERRNO(EACCES), SCMP_SYS(openat), 0);
	if (!err)
		err = seccomp_rule_add(f, SCMP_ACT_ERRNO(EACCES), SCMP_SYS(open), 0);
	if (!err)
		err = seccomp_load(f);
	seccomp_release(f);
	if (err) {
		log_error("seccomp: %s", strerror(-err));
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	const char *user = "nobody", *root = NULL;
	int fd = -1;
	struct lerr e;

	log_set_prog("lantern-wire");
	for (int i = 1; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--fd"))
			fd = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--user"))
			user = argv[i + 1];
		else if (!strcmp(argv[i], "--root"))
			root = argv[i + 1];
	}
	if (fd < 3 || !root || fcntl(fd, F_GETFD) < 0) {
		fprintf(stderr, "usage: lantern-wire --fd N --user USER --root DIR (started by lanternd)\n");
		return 2;
	}
	fcntl(fd, F_SETFD, FD_CLOEXEC);
	signal(SIGPIPE, SIG_IGN);
	/* the loop's own descriptors exist before the filter is in place */
	if (!(W.loop = loop_new()) || wire_link_open(W.loop, fd, on_msg, on_down, NULL, &W.link, &e) < 0) {
		log_error("cannot start: %s", strerror(errno));
		return 1;
	}
	/* jansson seeds its hash from /dev/urandom on first use: do it while the file is there */
	json_object_seed(0);
	if (drop(user, root) < 0)
		return 1;
	loop_run(W.loop);
	return 0;
}
