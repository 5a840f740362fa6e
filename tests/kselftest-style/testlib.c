/* testlib.c: private lanternd instances, CLI runs, loopback listeners, the servers
 * tests start, and the cleanup at the end of a test (see testlib.h). */
#include "testlib.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <linux/magic.h>

#include "lantern/util.h"

const char *tl_env_missing(void)
{
	struct statfs sf;

	if (geteuid() != 0)
		return "not root";
	if (statfs("/sys/fs/bpf", &sf) < 0 || sf.f_type != BPF_FS_MAGIC)
		return "bpffs not mounted at /sys/fs/bpf";
	if (access("/sys/kernel/btf/vmlinux", R_OK) < 0)
		return "no kernel BTF";
	if ((statfs("/sys/fs/cgroup/unified", &sf) < 0 || sf.f_type != CGROUP2_SUPER_MAGIC) &&
	    (statfs("/sys/fs/cgroup", &sf) < 0 || sf.f_type != CGROUP2_SUPER_MAGIC))
		return "no cgroup2 mount";
	return NULL;
}

/* What the end of the test undoes (see testlib.h), in that order. */
static struct {
	pid_t pid;
	int sig;
} kids[32];
static struct tl_env *live_envs[8];
static struct tl_pg *live_pgs[4];
static void (*exit_fns[8])(void);
static size_t n_exit_fns;
static pid_t owner;
static const int fatal_sigs[] = { SIGTERM, SIGINT, SIGPIPE };

static void finish(void)
{
	static bool done;
	sigset_t fatal;

	if (done || getpid() != owner)
		return;
	done = true;
	/* a second signal (the runner's timeout after ^C) must not cut the cleanup short;
	 * commands it runs get their own mask back (vsh) */
	sigemptyset(&fatal);
	for (size_t i = 0; i < ARRAY_SIZE(fatal_sigs); i++)
		sigaddset(&fatal, fatal_sigs[i]);
	sigprocmask(SIG_BLOCK, &fatal, NULL);
	for (size_t i = ARRAY_SIZE(kids); i-- > 0;)
		if (kids[i].pid > 0)
			tl_child_stop(kids[i].pid, 0);
	for (size_t i = 0; i < ARRAY_SIZE(live_envs); i++)
		if (live_envs[i])
			tl_env_cleanup(live_envs[i]);
	for (size_t i = 0; i < ARRAY_SIZE(live_pgs); i++)
		if (live_pgs[i])
			tl_pg_stop(live_pgs[i]);
	while (n_exit_fns > 0)
		exit_fns[--n_exit_fns]();
}

static void on_fatal_signal(int sig)
{
	sigset_t one;

	finish();
	signal(sig, SIG_DFL);
	sigemptyset(&one);
	sigaddset(&one, sig);
	sigprocmask(SIG_UNBLOCK, &one, NULL);
	raise(sig);
}

static void arm(void)
{
	if (owner)
		return;
	owner = getpid();
	atexit(finish);
	for (size_t i = 0; i < ARRAY_SIZE(fatal_sigs); i++) {
		struct sigaction old;

		if (sigaction(fatal_sigs[i], NULL, &old) == 0 && old.sa_handler != SIG_IGN)
			signal(fatal_sigs[i], on_fatal_signal);
	}
}

void tl_on_exit(void (*fn)(void))
{
	arm();
	if (n_exit_fns < ARRAY_SIZE(exit_fns))
		exit_fns[n_exit_fns++] = fn;
	else
		fprintf(stderr, "testlib: more than %zu exit functions; one will not run\n", ARRAY_SIZE(exit_fns));
}

void tl_child_track(pid_t pid, int stop_sig)
{
	if (pid <= 0)
		return;
	arm();
	for (size_t i = 0; i < ARRAY_SIZE(kids); i++) {
		if (kids[i].pid <= 0) {
			kids[i].pid = pid;
			kids[i].sig = stop_sig;
			return;
		}
	}
	fprintf(stderr, "testlib: more than %zu children to track; %d will outlive a killed test\n",
		ARRAY_SIZE(kids), (int)pid);
}

void tl_child_forget(pid_t pid)
{
	for (size_t i = 0; i < ARRAY_SIZE(kids); i++)
		if (kids[i].pid == pid)
			kids[i].pid = 0;
}

int tl_child_stop(pid_t pid, int sig)
{
	int st = 0;

	if (pid <= 0)
		return 0;
	for (size_t i = 0; i < ARRAY_SIZE(kids) && !sig; i++)
		if (kids[i].pid == pid)
			sig = kids[i].sig;
	tl_child_forget(pid);
	kill(pid, sig ? sig : SIGKILL);
	waitpid(pid, &st, 0);
	return st;
}

int tl_env_init(struct tl_env *t, const char *name)
{
	const char *b = getenv("LANTERN_BUILD");

	arm();
	for (size_t i = 0; i < ARRAY_SIZE(live_envs); i++) {
		if (!live_envs[i]) {
			live_envs[i] = t;
			break;
		}
	}

	memset(t, 0, sizeof(*t));
	snprintf(t->name, sizeof(t->name), "%s", name);
	snprintf(t->dir, sizeof(t->dir), "/tmp/lantern-test-%s-%d", name, getpid());
	snprintf(t->state, sizeof(t->state), "%s/state", t->dir);
	snprintf(t->sock, sizeof(t->sock), "%s/lanternd.sock", t->dir);
	snprintf(t->log, sizeof(t->log), "%s/lanternd.log", t->dir);
	snprintf(t->bpffs, sizeof(t->bpffs), "/sys/fs/bpf/lantern-test-%s-%d", name, getpid());
	snprintf(t->cgroot, sizeof(t->cgroot), "lantern-test-%s-%d", name, getpid());
	if (b && *b)
		snprintf(t->build, sizeof(t->build), "%s", b);
	else if (!getcwd(t->build, sizeof(t->build) - 8) ||
		 strlen(t->build) + 7 > sizeof(t->build))
		return -ENAMETOOLONG;
	else
		strcat(t->build, "/build");
	return util_mkdir_p(t->dir, 0700);
}

int tl_daemon_start(struct tl_env *t, const char *extra)
{
	char cmd[2048];
	pid_t pid;

	unlink(t->sock);
	snprintf(cmd, sizeof(cmd),
		 "exec %s/lanternd --state-dir %s --socket %s --bpffs %s --cgroup-root %s "
		 "%s %s >>%s 2>&1",
		 t->build, t->state, t->sock, t->bpffs, t->cgroot,
		 t->no_process_runtime ? "" : "--process-runtime", extra ? extra : "", t->log);
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	t->daemon = pid;
	for (int i = 0; i < 500; i++) {
		int st;
		if (util_unix_socket_alive(t->sock))
			return 0;
		if (waitpid(pid, &st, WNOHANG) == pid) {
			t->daemon = 0;
			return -ECHILD;
		}
		usleep(10000);
	}
	return -ETIMEDOUT;
}

int tl_daemon_stop(struct tl_env *t, int sig)
{
	int st = 0;

	if (t->daemon <= 0)
		return 0;
	kill(t->daemon, sig);
	waitpid(t->daemon, &st, 0);
	t->daemon = 0;
	return st;
}

void tl_env_cleanup(struct tl_env *t)
{
	for (size_t i = 0; i < ARRAY_SIZE(live_envs); i++)
		if (live_envs[i] == t)
			live_envs[i] = NULL;
	tl_daemon_stop(t, SIGTERM);
	tl_sh(NULL, NULL, "%s/lantern reset --state-dir %s --bpffs %s --cgroup-root %s >/dev/null 2>&1",
	      t->build, t->state, t->bpffs, t->cgroot);
	if (!getenv("LANTERN_KEEP"))
		util_rm_rf(t->dir);
}

static char *slurp_fd(int fd)
{
	size_t cap = 4096, n = 0;
	char *b = malloc(cap);
	ssize_t r;

	while (b && (r = read(fd, b + n, cap - n - 1)) > 0) {
		n += (size_t)r;
		if (n + 1 >= cap) {
			char *nb = realloc(b, cap *= 2);
			if (!nb) {
				free(b);
				return NULL;
			}
			b = nb;
		}
	}
	if (b)
		b[n] = '\0';
	return b;
}

static int vsh(char **out, char **err, const char *fmt, va_list ap)
{
	char cmd[8192];
	char o[64], e[64];
	int ofd, efd, st = 0;
	pid_t pid;

	util_tmp_template(o, sizeof(o), "/tmp/lantern-tl-out-");
	util_tmp_template(e, sizeof(e), "/tmp/lantern-tl-err-");
	ofd = mkstemp(o);
	efd = mkstemp(e);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	if (ofd < 0 || efd < 0)
		return -1;
	unlink(o);
	unlink(e);
	pid = fork();
	if (pid == 0) {
		sigset_t none;

		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		dup2(ofd, 1);
		dup2(efd, 2);
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	waitpid(pid, &st, 0);
	if (out) {
		lseek(ofd, 0, SEEK_SET);
		*out = slurp_fd(ofd);
	}
	if (err) {
		lseek(efd, 0, SEEK_SET);
		*err = slurp_fd(efd);
	}
	close(ofd);
	close(efd);
	if (WIFEXITED(st))
		return WEXITSTATUS(st);
	return 128 + WTERMSIG(st);
}

int tl_sh(char **out, char **err, const char *fmt, ...)
{
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = vsh(out, err, fmt, ap);
	va_end(ap);
	return r;
}

int tl_lantern(struct tl_env *t, char **out, char **err, const char *fmt, ...)
{
	char args[6144];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(args, sizeof(args), fmt, ap);
	va_end(ap);
	return tl_sh(out, err, "%s/lantern --socket %s %s", t->build, t->sock, args);
}

const char *tl_file(struct tl_env *t, const char *name, const char *fmt, ...)
{
	static char paths[8][512];
	static int next;
	char *p = paths[next++ % 8];
	FILE *f;
	va_list ap;

	snprintf(p, 512, "%s/%s", t->dir, name);
	f = fopen(p, "w");
	if (!f)
		return p;
	va_start(ap, fmt);
	vfprintf(f, fmt, ap);
	va_end(ap);
	fclose(f);
	return p;
}

bool tl_log_contains(struct tl_env *t, const char *s)
{
	char *buf;
	bool found;

	if (util_read_file(t->log, &buf, NULL) < 0)
		return false;
	found = strstr(buf, s) != NULL;
	free(buf);
	return found;
}

static int bind_any(int type, const char *addr, uint16_t *port)
{
	struct sockaddr_storage ss = { 0 };
	socklen_t len;
	int one = 1, fd;
	bool v6 = strchr(addr, ':') != NULL;

	if (v6) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
		a->sin6_family = AF_INET6;
		a->sin6_port = htons(*port);
		if (inet_pton(AF_INET6, addr, &a->sin6_addr) != 1)
			return -EINVAL;
		len = sizeof(*a);
	} else {
		struct sockaddr_in *a = (struct sockaddr_in *)&ss;
		a->sin_family = AF_INET;
		a->sin_port = htons(*port);
		if (inet_pton(AF_INET, addr, &a->sin_addr) != 1)
			return -EINVAL;
		len = sizeof(*a);
	}
	fd = socket(v6 ? AF_INET6 : AF_INET, type | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (v6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&ss, len) < 0 ||
	    (type == SOCK_STREAM && listen(fd, 512) < 0)) {
		int err = -errno;
		close(fd);
		return err;
	}
	getsockname(fd, (struct sockaddr *)&ss, &len);
	*port = ntohs(v6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
			 : ((struct sockaddr_in *)&ss)->sin_port);
	return fd;
}

int tl_tcp_listen(const char *addr, uint16_t *port)
{
	return bind_any(SOCK_STREAM, addr, port);
}

int tl_udp_bind(const char *addr, uint16_t *port)
{
	return bind_any(SOCK_DGRAM, addr, port);
}

bool tl_has(const char *s, const char *sub)
{
	return s && strstr(s, sub);
}

const char *tl_oneline(const char *s)
{
	static char buf[4][1024];
	static int k;
	char *b = buf[k++ % 4];
	size_t i = 0;

	for (; s && *s && i < sizeof(buf[0]) - 1; s++)
		b[i++] = *s == '\n' ? '|' : *s;
	b[i] = '\0';
	return s || i ? b : "(null)";
}

bool tl_running_run(struct tl_env *t, const char *name, char *id, size_t len, int ms)
{
	for (uint64_t end = tl_ms() + (uint64_t)ms;; usleep(50000)) {
		char *out = NULL;
		bool found = false;

		tl_lantern(t, &out, NULL, "ps");
		for (char *save = NULL, *l = strtok_r(out, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
			char rid[64], inst[64], nm[128], st[64];
			if (sscanf(l, "%63s %63s %127s %63s", rid, inst, nm, st) == 4 && !strcmp(nm, name) &&
			    !strcmp(st, "running")) {
				snprintf(id, len, "%s", rid);
				found = true;
			}
		}
		free(out);
		if (found)
			return true;
		if (tl_ms() >= end)
			return false;
	}
}

bool tl_wait_file_text(const char *path, const char *text, int ms)
{
	for (uint64_t end = tl_ms() + (uint64_t)ms;; usleep(50000)) {
		char *buf;
		if (util_read_file(path, &buf, NULL) == 0) {
			bool ok = strstr(buf, text) != NULL;
			free(buf);
			if (ok)
				return true;
		}
		if (tl_ms() >= end)
			return false;
	}
}

const char *tl_spec(struct tl_env *t, const char *name, const char *meta, const char *script,
		    const char *fields, ...)
{
	char file[128], body[4096];
	va_list ap;

	va_start(ap, fields);
	vsnprintf(body, sizeof(body), fields, ap);
	va_end(ap);
	snprintf(file, sizeof(file), "%s.yaml", name);
	return tl_file(t, file,
		       "apiVersion: lantern.dev/v1\nkind: AgentSpec\nmetadata:\n  name: %s\n%sspec:\n%s"
		       "  command: [\"/bin/sh\", \"-c\"]\n  args:\n    - |\n      %s\n",
		       name, meta ? meta : "", body, script);
}

int tl_run(struct tl_env *t, const char *file, char **out, char **err)
{
	return tl_lantern(t, out, err, "run %s", file);
}

bool tl_newest_run(struct tl_env *t, char *id, size_t idlen, char *inst, size_t instlen)
{
	struct statx best = { 0 };
	char runs[400], path[700], name[256] = "";
	struct dirent *de;
	DIR *d;

	snprintf(runs, sizeof(runs), "%s/runs", t->state);
	d = opendir(runs);
	if (!d)
		return false;
	/* birth, not modification: a finished run's directory is still written to
	 * (run.json replaced at teardown) after a newer run has started */
	while ((de = readdir(d))) {
		struct statx sx;

		if (de->d_name[0] == '.' ||
		    statx(dirfd(d), de->d_name, AT_SYMLINK_NOFOLLOW, STATX_BTIME, &sx) < 0 ||
		    !(sx.stx_mask & STATX_BTIME))
			continue;
		if (!name[0] || sx.stx_btime.tv_sec > best.stx_btime.tv_sec ||
		    (sx.stx_btime.tv_sec == best.stx_btime.tv_sec &&
		     sx.stx_btime.tv_nsec > best.stx_btime.tv_nsec)) {
			best = sx;
			snprintf(name, sizeof(name), "%s", de->d_name);
		}
	}
	closedir(d);
	if (!name[0])
		return false;
	snprintf(id, idlen, "%s", name);
	if (inst) {
		json_t *j;

		snprintf(path, sizeof(path), "%s/%s/run.json", runs, name);
		j = json_load_file(path, 0, NULL);
		snprintf(inst, instlen, "%s", json_string_value(json_object_get(j, "instance_id")) ?: "");
		json_decref(j);
	}
	return true;
}

int tl_mkimage(const char *dir, const char *ref, char *image, size_t len)
{
	char *out = NULL;
	int rc = tl_sh(&out, NULL, "scripts/mkimage.sh %s %s", dir, ref);

	snprintf(image, len, "%.*s", out ? (int)strcspn(out, "\n") : 0, out ? out : "");
	free(out);
	return rc;
}

void tl_net_init(struct tl_net *n, const char *prefix, unsigned base)
{
	unsigned pid = (unsigned)getpid();

	n->a = base + pid % 50;
	n->b = pid / 50 % 250;
	snprintf(n->bridge, sizeof(n->bridge), "%s%u", prefix, pid % 100000);
	snprintf(n->subnet, sizeof(n->subnet), "10.%u.%u.0/24", n->a, n->b);
	snprintf(n->gw, sizeof(n->gw), "10.%u.%u.1", n->a, n->b);
}

const char *tl_net_addr(const struct tl_net *n, unsigned host, char *buf, size_t len)
{
	snprintf(buf, len, "10.%u.%u.%u", n->a, n->b, host);
	return buf;
}

pid_t tl_acceptor(int fd, const char *reply)
{
	pid_t pid = fork();

	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		for (;;) {
			int c = accept(fd, NULL, NULL);

			if (c < 0 && (errno == EBADF || errno == EINVAL || errno == ENOTSOCK))
				_exit(1);
			if (c < 0)
				continue;
			/* a peer that closed first must not end the acceptor */
			if (reply)
				send(c, reply, strlen(reply), MSG_NOSIGNAL);
			close(c);
		}
	}
	tl_child_track(pid, SIGKILL);
	return pid;
}

/* True once something on 127.0.0.1:port answers a DNS query (any answer: dnsmasq
 * reads its records before it serves). */
static bool dns_answers(uint16_t port, int ms)
{
	static const uint8_t q[] = { 0x4c, 0x54, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0,
				     5, 'r', 'e', 'a', 'd', 'y', 4, 't', 'e', 's', 't', 0, 0, 1, 0, 1 };
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
	struct pollfd p = { .events = POLLIN };
	uint8_t r[512];
	ssize_t n = -1;

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	p.fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (p.fd < 0)
		return false;
	if (connect(p.fd, (struct sockaddr *)&a, sizeof(a)) == 0 && send(p.fd, q, sizeof(q), 0) > 0 &&
	    poll(&p, 1, ms) == 1)
		n = recv(p.fd, r, sizeof(r), 0);
	close(p.fd);
	return n >= 12 && r[0] == q[0] && r[1] == q[1] && (r[2] & 0x80);
}

pid_t tl_dnsmasq_start(uint16_t *port, const char *log, ...)
{
	const char *argv[64] = { "dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--no-resolv",
				 "--no-hosts", "--bind-interfaces", "--listen-address=127.0.0.1",
				 "--pid-file=", "--user=root" };
	size_t n = 9, port_at = n++;
	char portarg[32];
	va_list ap;

	va_start(ap, log);
	for (const char *a; (a = va_arg(ap, const char *)) && n < ARRAY_SIZE(argv) - 1;)
		argv[n++] = a;
	va_end(ap);
	argv[n] = NULL;
	argv[port_at] = portarg;

	/* a port free now may be taken before dnsmasq binds it: then it exits, try another */
	for (int attempt = 0; attempt < 10; attempt++) {
		uint16_t p = 0;
		int fd = tl_udp_bind("127.0.0.1", &p);
		pid_t pid;

		if (fd < 0)
			return fd;
		close(fd);
		snprintf(portarg, sizeof(portarg), "--port=%u", p);
		pid = fork();
		if (pid < 0)
			return -errno;
		if (pid == 0) {
			int out = open(log ? log : "/dev/null", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

			prctl(PR_SET_PDEATHSIG, SIGTERM);
			dup2(out, 1);
			dup2(out, 2);
			execv("/usr/sbin/dnsmasq", (char *const *)argv);
			_exit(127);
		}
		tl_child_track(pid, SIGTERM);
		for (uint64_t end = tl_ms() + 5000; tl_ms() < end;) {
			if (dns_answers(p, 200)) {
				*port = p;
				return pid;
			}
			if (waitpid(pid, NULL, WNOHANG) == pid) {
				tl_child_forget(pid);
				pid = 0;
				break;
			}
			usleep(20000);
		}
		if (pid > 0)
			tl_child_stop(pid, SIGKILL);
	}
	return -EADDRINUSE;
}

/* Runs argv as the postgres user (postgres refuses root); the child dies with us. */
static pid_t as_postgres(char *const argv[], const char *log)
{
	struct passwd *pw = getpwnam("postgres");
	pid_t pid;

	if (!pw)
		return -ENOENT;
	pid = fork();
	if (pid == 0) {
		int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);

		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		if (setgid(pw->pw_gid) || setuid(pw->pw_uid))
			_exit(126);
		/* after the uid change: a credential change clears the death signal */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		execv(argv[0], argv);
		_exit(127);
	}
	return pid;
}

static bool pg_ready(struct tl_pg *pg, int ms)
{
	for (uint64_t end = tl_ms() + (uint64_t)ms;; usleep(50000)) {
		if (tl_sh(NULL, NULL, "/usr/lib/postgresql/15/bin/pg_isready -q -h 127.0.0.1 -p %u",
			  pg->port) == 0)
			return true;
		if (tl_ms() >= end)
			return false;
	}
}

int tl_pg_resume(struct tl_pg *pg)
{
	char data[300], log[300], port[16];

	snprintf(data, sizeof(data), "%s/data", pg->dir);
	snprintf(log, sizeof(log), "%s/postgres.log", pg->dir);
	snprintf(port, sizeof(port), "%u", pg->port);
	char *argv[] = { "/usr/lib/postgresql/15/bin/postgres", "-D", data, "-p", port, "-k", pg->dir,
			 "-c", "listen_addresses=127.0.0.1", "-c",
			 pg->durable ? "fsync=on" : "fsync=off", "-c", "max_connections=200", NULL };
	pg->pid = as_postgres(argv, log);
	if (pg->pid < 0)
		return pg->pid;
	tl_child_track(pg->pid, SIGQUIT);
	return pg_ready(pg, 20000) ? 0 : -ETIMEDOUT;
}

int tl_pg_start(struct tl_pg *pg, const char *name, bool durable)
{
	struct passwd *pw = getpwnam("postgres");
	char data[300], log[300];
	int st, fd;
	pid_t pid;

	memset(pg, 0, sizeof(*pg));
	snprintf(pg->name, sizeof(pg->name), "%s", name);
	pg->durable = durable;
	snprintf(pg->dir, sizeof(pg->dir), "/tmp/lantern-test-pg-%s-%d", name, getpid());
	snprintf(data, sizeof(data), "%s/data", pg->dir);
	snprintf(log, sizeof(log), "%s/postgres.log", pg->dir);
	if (!pw)
		return -ENOENT;
	if (util_mkdir_p(pg->dir, 0700) < 0 || chown(pg->dir, pw->pw_uid, pw->pw_gid) < 0)
		return -errno;
	arm();
	for (size_t i = 0; i < ARRAY_SIZE(live_pgs); i++)
		if (!live_pgs[i]) {
			live_pgs[i] = pg;
			break;
		}
	char *initdb[] = { "/usr/lib/postgresql/15/bin/initdb", "-D", data, "-A", "trust", "-U",
			   "lantern", "--no-sync", NULL };
	pid = as_postgres(initdb, log);
	if (pid < 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st))
		return -EIO;
	fd = tl_tcp_listen("127.0.0.1", &pg->port);
	if (fd >= 0)
		close(fd);
	snprintf(pg->url, sizeof(pg->url), "postgres://lantern@127.0.0.1:%u/postgres", pg->port);
	return tl_pg_resume(pg);
}

void tl_pg_halt(struct tl_pg *pg)
{
	/* SIGINT: fast shutdown (sessions cut, data kept) */
	tl_child_stop(pg->pid, SIGINT);
	pg->pid = 0;
}

void tl_pg_stop(struct tl_pg *pg)
{
	for (size_t i = 0; i < ARRAY_SIZE(live_pgs); i++)
		if (live_pgs[i] == pg)
			live_pgs[i] = NULL;
	tl_child_stop(pg->pid, 0);
	pg->pid = 0;
	if (pg->dir[0] && !getenv("LANTERN_KEEP"))
		util_rm_rf(pg->dir);
}

int tl_psql(struct tl_pg *pg, char **out, const char *fmt, ...)
{
	char sql[4096];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(sql, sizeof(sql), fmt, ap);
	va_end(ap);
	return tl_sh(out, NULL, "psql -At '%s' -c \"%s\"", pg->url, sql);
}

uint64_t tl_ms(void)
{
	return util_now_ns(CLOCK_MONOTONIC) / 1000000ULL;
}

json_t *tl_lantern_json(struct tl_env *t, const char *args)
{
	char *out = NULL;
	json_t *j = NULL;

	if (tl_lantern(t, &out, NULL, "%s", args) == 0 && out)
		j = json_loads(out, 0, NULL);
	free(out);
	return j;
}

json_t *tl_run_record(struct tl_env *t, const char *id)
{
	json_t *runs = tl_lantern_json(t, "ps --json"), *r, *found = NULL;
	size_t i;

	json_array_foreach(runs, i, r)
		if (!strcmp(json_string_value(json_object_get(r, "id")) ?: "", id))
			found = json_incref(r);
	json_decref(runs);
	return found;
}
