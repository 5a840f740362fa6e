/* lantern-oci: the OCI runtime containerd runs for lantern's runtime handlers
 * (lantern-trusted, -standard, -untrusted, -hostile). It has runc's command-line surface,
 * which is what containerd's runc.v2 shim calls through its BinaryName option:
 *
 *   lantern-oci [--root R] [--log F] [--log-format json] [...] COMMAND [ARGS...] ID
 *
 * On `create` it reads the bundle's config.json and asks lanternd over its socket to
 * bind the container to its run (the "bind" op: the cgroupsPath must lie inside the
 * run's instance cgroup, the annotations must name the run, the handler must serve the
 * run's class; include/lantern/run.h). Only when lanternd says yes does it exec the
 * real runtime of the run's class (runc, or runsc with the class's flags); lanternd
 * unreachable, a container lanternd did not ask for, a class this node does not run,
 * annotations that do not match: the create fails with lanternd's reason (also written
 * to the --log file, where the shim reads a runtime's errors) and nothing runs.
 *
 * The handler's class is the one of the runtime root containerd passes: the drop-in
 * (`lantern node containerd-config`) gives each handler the root BASE/lantern-<class>,
 * below which the shim adds its namespace. Each real runtime keeps its state below that
 * root in a directory of its own (R/runc, R/runsc), and which runtime holds a container
 * is recorded at create in R/lantern-oci/ID.json, so every other command (start, state,
 * kill, delete, exec, ps, ...) passes through to it, with lanternd down too. A command
 * for an ID without a record goes to runc, which answers as for an unknown container.
 *
 * runsc keeps a pod's containers in one sandbox and names the sandbox's process in the
 * pid file of every one of them, so containerd's shim, which learns a container's end by
 * reaping that process, would never see a workload container end. For those, create
 * leaves a waiter in its place: a process that `runsc wait`s for the container and
 * exits with its status, whose pid goes into the pid file (the shim, a child subreaper,
 * inherits and reaps it).
 *
 * A warm pool's pod made through the API server (annotated lantern.dev/pool) runs the
 * image's own process as containerd made it: lantern-oci sends that process with the
 * workload container's bind and runs lanternd's "exec" (lantern-waiter) in its place.
 *
 * The socket is $LANTERN_SOCKET, else /run/lantern/lanternd.sock. */
#include <errno.h>
#include <jansson.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lantern/cgroup.h"
#include "lantern/util.h"
#include "netns.h"

#define DEFAULT_SOCKET "/run/lantern/lanternd.sock"
#define RUNC "/usr/sbin/runc"
#define BIND_TIMEOUT_MS 10000
#define MAX_ARGS 256

/* runc's global flags that take a value (the others are booleans). */
static const char *const value_flags[] = { "--root", "--log", "--log-format", "--criu", "--rootless" };

struct cmdline {
	const char *root;             /* --root */
	const char *log;              /* --log */
	bool log_json;
	char *globals[MAX_ARGS];      /* every global flag but --root, as given */
	int nglobals;
	char **rest;                  /* COMMAND and what follows */
	int nrest;
};

static bool takes_value(const char *flag)
{
	for (size_t i = 0; i < ARRAY_SIZE(value_flags); i++)
		if (!strcmp(flag, value_flags[i]))
			return true;
	return false;
}

static int parse(int argc, char **argv, struct cmdline *c)
{
	int i = 1;

	memset(c, 0, sizeof(*c));
	for (; i < argc && argv[i][0] == '-' && strcmp(argv[i], "--version") && strcmp(argv[i], "-v"); i++) {
		char name[64], *eq = strchr(argv[i], '=');
		const char *val = NULL;

		snprintf(name, sizeof(name), "%.*s", eq ? (int)(eq - argv[i]) : (int)strlen(argv[i]), argv[i]);
		if (takes_value(name))
			val = eq ? eq + 1 : i + 1 < argc ? argv[i + 1] : NULL;
		if (takes_value(name) && !val)
			return -EINVAL;
		if (!strcmp(name, "--root")) {
			c->root = val;
		} else {
			if (c->nglobals + 2 >= MAX_ARGS)
				return -E2BIG;
			c->globals[c->nglobals++] = argv[i];
			if (takes_value(name) && !eq)
				c->globals[c->nglobals++] = argv[i + 1];
			if (!strcmp(name, "--log"))
				c->log = val;
			if (!strcmp(name, "--log-format"))
				c->log_json = !strcmp(val, "json");
		}
		if (takes_value(name) && !eq)
			i++;
	}
	c->rest = argv + i;
	c->nrest = argc - i;
	return 0;
}

/* Says why a create failed: on stderr, and in the --log file as the shim reads a
 * runtime's errors from it (JSON lines with --log-format json). */
static int fail(const struct cmdline *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(const struct cmdline *c, const char *fmt, ...)
{
	char msg[1024], ts[64];
	time_t now = time(NULL);
	struct tm tm;
	va_list ap;
	FILE *f;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fprintf(stderr, "lantern-oci: %s\n", msg);
	if (c->log && (f = fopen(c->log, "ae"))) {
		gmtime_r(&now, &tm);
		strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
		if (c->log_json) {
			json_t *j = json_pack("{s:s, s:s, s:s}", "level", "error", "msg", msg, "time", ts);
			char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;

			fprintf(f, "%s\n", s ? s : "{\"level\":\"error\",\"msg\":\"lantern-oci: refused\"}");
			free(s);
			json_decref(j);
		} else {
			fprintf(f, "time=\"%s\" level=error msg=\"lantern-oci: %s\"\n", ts, msg);
		}
		fclose(f);
	}
	return 1;
}

/* The class of the handler containerd ran: the last root component "lantern-<class>". */
static bool handler_class(const char *root, char *out, size_t len)
{
	const char *best = NULL;

	for (const char *p = root; p && (p = strstr(p, "/lantern-")); p++)
		best = p + 9;
	if (!best || !*best)
		return false;
	snprintf(out, len, "%.*s", (int)strcspn(best, "/"), best);
	return out[0] != '\0';
}

/* A container id as a file name: what runc accepts, nothing that walks directories. */
static bool id_valid(const char *id)
{
	size_t n = strlen(id);

	if (!n || n > 1024 || id[0] == '.')
		return false;
	for (const char *p = id; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
		      *p == '-' || *p == '_' || *p == '.' || *p == '+'))
			return false;
	return true;
}

static void record_path(const struct cmdline *c, const char *id, char *out, size_t len)
{
	snprintf(out, len, "%s/lantern-oci/%s.json", c->root, id);
}

/* One request, one answer line from lanternd's socket. */
static json_t *ask_lanternd(json_t *req, char *why, size_t wlen)
{
	const char *path = getenv("LANTERN_SOCKET") ? getenv("LANTERN_SOCKET") : DEFAULT_SOCKET;
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	char *line = json_dumps(req, JSON_COMPACT), buf[65536];
	struct pollfd p = { .events = POLLIN };
	size_t n = 0;
	json_t *ans = NULL;

	if (!line || strlen(path) >= sizeof(a.sun_path)) {
		snprintf(why, wlen, "lanternd's socket %s: cannot ask", path);
		free(line);
		return NULL;
	}
	strcpy(a.sun_path, path);
	p.fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (p.fd < 0 || connect(p.fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		snprintf(why, wlen, "lanternd is not reachable at %s: %s", path, strerror(errno));
		goto out;
	}
	if (write(p.fd, line, strlen(line)) != (ssize_t)strlen(line) || write(p.fd, "\n", 1) != 1) {
		snprintf(why, wlen, "lanternd at %s: cannot send the request: %s", path, strerror(errno));
		goto out;
	}
	while (n < sizeof(buf) - 1 && !memchr(buf, '\n', n)) {
		ssize_t r;

		if (poll(&p, 1, BIND_TIMEOUT_MS) != 1) {
			snprintf(why, wlen, "lanternd at %s did not answer within %d ms", path, BIND_TIMEOUT_MS);
			goto out;
		}
		if ((r = read(p.fd, buf + n, sizeof(buf) - 1 - n)) <= 0) {
			snprintf(why, wlen, "lanternd at %s closed the connection without an answer", path);
			goto out;
		}
		n += (size_t)r;
		buf[n] = '\0';
	}
	if (!(ans = json_loadb(buf, strcspn(buf, "\n"), 0, NULL)))
		snprintf(why, wlen, "lanternd at %s answered something that is not JSON", path);
out:
	if (p.fd >= 0)
		close(p.fd);
	free(line);
	return ans;
}

/* The config.json annotations lanternd judges (the CRI's and lantern's own). */
static json_t *annotations_of(json_t *cfg)
{
	json_t *out = json_object(), *v;
	const char *k;

	json_object_foreach(json_object_get(cfg, "annotations"), k, v)
		if (json_is_string(v) && (!strncmp(k, "io.kubernetes.cri.", 18) || !strncmp(k, "lantern.dev/", 12)))
			json_object_set(out, k, v);
	return out;
}

/* A pooled sandbox's workload container (its pod annotated lantern.dev/pool): the
 * process containerd made of the image's defaults (Entrypoint and Cmd, Env, WorkingDir)
 * goes to lanternd, which keeps it for the claim; lantern-waiter runs in its place (the
 * bind's answer "exec"). */
static json_t *process_of(json_t *cfg)
{
	json_t *p = json_object_get(cfg, "process");

	return json_pack("{s:O?, s:O?, s:O?}", "args", json_object_get(p, "args"), "env", json_object_get(p, "env"),
			 "cwd", json_object_get(p, "cwd"));
}

/* The bind's "exec": argv strings, at most MAX_ARGS. */
static bool exec_valid(json_t *a)
{
	json_t *v;
	size_t i;

	if (!json_is_array(a) || !json_array_size(a) || json_array_size(a) > MAX_ARGS)
		return false;
	json_array_foreach(a, i, v)
		if (!json_is_string(v) || (i == 0 && json_string_value(v)[0] != '/'))
			return false;
	return true;
}

/* The network namespace a container's config.json names, or NULL. */
static const char *netns_of(json_t *cfg)
{
	json_t *ns;
	size_t i;

	json_array_foreach(json_object_get(json_object_get(cfg, "linux"), "namespaces"), i, ns)
		if (!strcmp(json_string_value(json_object_get(ns, "type")) ?: "", "network"))
			return json_string_value(json_object_get(ns, "path"));
	return NULL;
}

static json_t *tmpfs(const char *dst, const char *mode, json_int_t size)
{
	char m[32], sz[48];

	snprintf(m, sizeof(m), "mode=%s", mode);
	snprintf(sz, sizeof(sz), "size=%lld", (long long)size);
	return json_pack("{s:s, s:s, s:s, s:[s,s,s,s]}", "destination", dst, "type", "tmpfs", "source", "tmpfs",
			 "options", "nosuid", "nodev", m, sz);
}

/* The workload's writable scratch (/tmp, limits.scratch_size) and the empty secrets
 * directory, as lantern's own bundles have them: tmpfs mounts the CRI cannot ask for. */
static void add_scratch(json_t *cfg, json_int_t scratch)
{
	json_t *mounts = json_object_get(cfg, "mounts");

	if (!json_is_array(mounts)) {
		mounts = json_array();
		json_object_set_new(cfg, "mounts", mounts);
	}
	json_array_append_new(mounts, tmpfs("/tmp", "1777", scratch));
	json_array_append_new(mounts, tmpfs("/run/lantern/secrets", "700", 1 << 20));
}

/* config.json rewritten before the runtime reads it; not synced: the runtime reads it
 * next, and nothing of it outlives a power loss. */
static int write_config(json_t *cfg, const char *path)
{
	char *txt = json_dumps(cfg, JSON_COMPACT);
	int err = txt ? util_write_file_replace(path, txt, strlen(txt)) : -ENOMEM;

	free(txt);
	return err;
}

static void exec_runtime(const struct cmdline *c, const char *bin, const char *name, json_t *args,
			 char **rest, int nrest)
{
	char *argv[MAX_ARGS * 2], root[4096];
	size_t i;
	json_t *a;
	int n = 0;

	snprintf(root, sizeof(root), "%s/%s", c->root, name);
	argv[n++] = (char *)bin;
	argv[n++] = "--root";
	argv[n++] = root;
	json_array_foreach(args, i, a)
		if (json_is_string(a) && n < MAX_ARGS)
			argv[n++] = (char *)json_string_value(a);
	for (int k = 0; k < c->nglobals; k++)
		argv[n++] = c->globals[k];
	for (int k = 0; k < nrest && n < MAX_ARGS * 2 - 1; k++)
		argv[n++] = rest[k];
	argv[n] = NULL;
	execv(bin, argv);
	fail(c, "exec %s: %s", bin, strerror(errno));
	exit(127);
}

/* The argv exec_runtime would run, for a child. */
static pid_t spawn_runtime(const struct cmdline *c, const char *bin, const char *name, json_t *args,
			   char **rest, int nrest)
{
	pid_t pid = fork();

	if (pid == 0)
		exec_runtime(c, bin, name, args, rest, nrest);
	return pid;
}

/* argv of the runtime run as a child, its stdout (up to cap) in out; its exit status. */
static int capture_runtime(const struct cmdline *c, const char *bin, const char *name, json_t *args,
			   char **rest, int nrest, char *out, size_t cap)
{
	size_t n = 0;
	ssize_t r;
	int p[2], st;
	pid_t pid;

	if (pipe2(p, O_CLOEXEC) < 0)
		return -errno;
	if ((pid = fork()) == 0) {
		dup2(p[1], 1);
		exec_runtime(c, bin, name, args, rest, nrest);
	}
	close(p[1]);
	while (pid > 0 && n + 1 < cap && (r = read(p[0], out + n, cap - 1 - n)) > 0)
		n += (size_t)r;
	out[n] = '\0';
	close(p[0]);
	if (pid < 0 || waitpid(pid, &st, 0) < 0)
		return -errno;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* The waiter's socket, bound or connected from its directory (a Unix socket path is
 * at most 107 bytes; the root and a 64-digit id together are longer). */
static int waiter_sock(const struct cmdline *c, const char *id, bool listen_on)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	char dir[4200];
	int fd, cwd, err = 0;

	snprintf(dir, sizeof(dir), "%s/lantern-oci", c->root);
	if (snprintf(a.sun_path, sizeof(a.sun_path), "%s.sock", id) >= (int)sizeof(a.sun_path))
		return -ENAMETOOLONG;
	if ((cwd = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
		return -errno;
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0 || chdir(dir) < 0)
		err = -errno;
	if (!err && listen_on) {
		unlink(a.sun_path);
		if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 4) < 0)
			err = -errno;
	} else if (!err) {
		if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
			err = -ENOENT;
		else
			unlink(a.sun_path);
	}
	if (fchdir(cwd) < 0 && !err)
		err = -errno;
	close(cwd);
	if (err) {
		if (fd >= 0)
			close(fd);
		return err;
	}
	return fd;
}

/* The waiter. runsc gives a pod's later container the stdio of `runsc start`, not of
 * `runsc create`, and the shim calls start without them: the waiter keeps the
 * container's stdio from create and hands them over its socket (lfd) to the
 * `lantern-oci start` the shim runs, which starts the container with them. Once it is
 * started, the waiter `runsc wait`s for it and exits with its status. A container
 * deleted without a start (its record gone) ends it. */
static void waiter(const struct cmdline *c, const char *bin, const char *name, json_t *args, const char *id,
		   int lfd)
{
	char *state[] = { "state", (char *)id, NULL }, *wait[] = { "wait", (char *)id, NULL }, buf[8192];
	char rec[4200], ctl[CMSG_SPACE(3 * sizeof(int))];
	struct pollfd p = { .fd = lfd, .events = POLLIN };
	int null = open("/dev/null", O_RDWR | O_CLOEXEC), conn = -1, fds[3] = { 0, 1, 2 };
	struct iovec iov = { .iov_base = "s", .iov_len = 1 };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof(ctl) };
	struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
	json_t *j;

	record_path(c, id, rec, sizeof(rec));
	while (conn < 0) {
		if (poll(&p, 1, 1000) == 1)
			conn = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		else if (access(rec, F_OK) < 0)
			_exit(255);
	}
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(fds));
	memcpy(CMSG_DATA(cm), fds, sizeof(fds));
	if (sendmsg(conn, &m, MSG_NOSIGNAL) != 1)
		_exit(255);
	close(conn);
	close(lfd);
	/* the container's stdio is the container's alone now: its end is seen by the shim */
	if (null < 0 || dup2(null, 0) < 0 || dup2(null, 1) < 0 || dup2(null, 2) < 0)
		_exit(255);
	for (;;) {
		const char *st;
		bool created;

		if (capture_runtime(c, bin, name, args, state, 2, buf, sizeof(buf)) != 0 ||
		    !(j = json_loads(buf, 0, NULL)))
			break;
		st = json_string_value(json_object_get(j, "status"));
		created = st && !strcmp(st, "created");
		json_decref(j);
		if (!created)
			break;
		usleep(5000);
	}
	if (capture_runtime(c, bin, name, args, wait, 2, buf, sizeof(buf)) < 0 || !(j = json_loads(buf, 0, NULL)))
		_exit(255);
	_exit((int)json_integer_value(json_object_get(j, "exitStatus")) & 255);
}

/* `start` of a container that has a waiter: its stdio from the waiter become ours, then
 * the runtime's start runs with them. -ENOENT when it has none. */
static int start_stdio_from_waiter(const struct cmdline *c, const char *id)
{
	char b, ctl[CMSG_SPACE(3 * sizeof(int))];
	struct iovec iov = { .iov_base = &b, .iov_len = 1 };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof(ctl) };
	struct cmsghdr *cm;
	int fd = waiter_sock(c, id, false), fds[3];

	if (fd < 0)
		return fd;
	if (recvmsg(fd, &m, MSG_CMSG_CLOEXEC) != 1 || !(cm = CMSG_FIRSTHDR(&m)) || cm->cmsg_type != SCM_RIGHTS ||
	    cm->cmsg_len != CMSG_LEN(sizeof(fds))) {
		close(fd);
		return fail(c, "start %s: its waiter did not hand over the container's stdio", id), -EIO;
	}
	close(fd);
	memcpy(fds, CMSG_DATA(cm), sizeof(fds));
	for (int i = 0; i < 3; i++)
		if (dup2(fds[i], i) < 0)
			return -errno;
	return 0;
}

/* runsc create for a workload container: the runtime runs as a child, then the waiter
 * takes the sandbox's place in the pid file. */
static int create_waited(const struct cmdline *c, const char *bin, const char *name, json_t *args,
			 const char *id)
{
	const char *pid_file = NULL;
	char tmp[4200], num[32];
	pid_t pid, w;
	int st, lfd;

	for (int k = 1; k + 1 < c->nrest; k++)
		if (!strcmp(c->rest[k], "--pid-file"))
			pid_file = c->rest[k + 1];
	if ((pid = spawn_runtime(c, bin, name, args, c->rest, c->nrest)) < 0 || waitpid(pid, &st, 0) < 0)
		return fail(c, "container %s: cannot run %s: %s", id, bin, strerror(errno));
	if (!WIFEXITED(st) || WEXITSTATUS(st))
		return WIFEXITED(st) ? WEXITSTATUS(st) : 1;
	if (!pid_file)
		return 0;
	if ((lfd = waiter_sock(c, id, true)) < 0)
		return fail(c, "container %s: its waiter's socket in %s/lantern-oci: %s", id, c->root, strerror(-lfd));
	if ((w = fork()) == 0)
		waiter(c, bin, name, args, id, lfd);
	close(lfd);
	if (w < 0)
		return fail(c, "container %s: cannot start its waiter: %s", id, strerror(errno));
	snprintf(tmp, sizeof(tmp), "%s.lantern", pid_file);
	snprintf(num, sizeof(num), "%d", (int)w);
	if (util_write_file_replace(tmp, num, strlen(num)) < 0 || rename(tmp, pid_file) < 0) {
		kill(w, SIGKILL);
		return fail(c, "container %s: cannot write %s", id, pid_file);
	}
	return 0;
}

static int create(const struct cmdline *c)
{
	const char *bundle = ".", *id = NULL;
	char path[4200], cfg_path[4200], cls[64], why[1024], rec_path[4200];
	json_t *cfg, *req, *ans, *rec;
	bool sandbox, changed = false;
	char *rec_txt;
	size_t i;
	json_t *d;
	int err;

	/* create [--bundle B] [--pid-file F] [--console-socket S] [--no-pivot] ... ID */
	for (int k = 1; k < c->nrest; k++) {
		const char *a = c->rest[k];

		if (!strcmp(a, "--bundle") || !strcmp(a, "-b"))
			bundle = k + 1 < c->nrest ? c->rest[++k] : bundle;
		else if (!strncmp(a, "--bundle=", 9))
			bundle = a + 9;
		else if (!strcmp(a, "--pid-file") || !strcmp(a, "--console-socket") || !strcmp(a, "--preserve-fds"))
			k++;
		else if (a[0] != '-')
			id = a;
	}
	if (!c->root)
		return fail(c, "refused: create without --root: not started by a lantern handler");
	if (!id || !id_valid(id))
		return fail(c, "refused: create: no valid container id");
	if (!handler_class(c->root, cls, sizeof(cls)))
		return fail(c, "refused: container %s: runtime root %s is not a lantern handler's "
			    "(BASE/lantern-<class>): lantern-oci runs only containers lanternd asked for", id, c->root);
	snprintf(cfg_path, sizeof(cfg_path), "%s/config.json", bundle);
	if (!(cfg = json_load_file(cfg_path, 0, NULL)))
		return fail(c, "refused: container %s: cannot read %s", id, cfg_path);
	sandbox = !strcmp(json_string_value(json_object_get(json_object_get(cfg, "annotations"),
							     "io.kubernetes.cri.container-type")) ?: "", "sandbox");
	req = json_pack("{s:s, s:s, s:s, s:s?, s:o}", "op", "bind", "container_id", id, "handler_class", cls,
			"cgroups_path", json_string_value(json_object_get(json_object_get(cfg, "linux"), "cgroupsPath")),
			"annotations", annotations_of(cfg));
	if (req && !sandbox && json_object_get(json_object_get(cfg, "annotations"), "lantern.dev/pool"))
		json_object_set_new(req, "process", process_of(cfg));
	ans = req ? ask_lanternd(req, why, sizeof(why)) : NULL;
	json_decref(req);
	if (!ans) {
		json_decref(cfg);
		return fail(c, "refused: container %s: %s", id, req ? why : "out of memory");
	}
	if (strcmp(json_string_value(json_object_get(ans, "type")) ?: "", "bound") ||
	    !json_is_string(json_object_get(ans, "runtime")) || !json_is_string(json_object_get(ans, "handler"))) {
		err = fail(c, "%s", json_string_value(json_object_get(ans, "error")) ?: "refused by lanternd");
		goto out;
	}
	if (sandbox && !netns_of(cfg)) {
		err = fail(c, "refused: sandbox %s: no network namespace of its own in its config.json", id);
		goto out;
	}
	if (sandbox && !strcmp(json_string_value(json_object_get(ans, "network")) ?: "", "none") &&
	    netns_keep_loopback(netns_of(cfg), why, sizeof(why)) < 0) {
		err = fail(c, "refused: sandbox %s: network none: %s", id, why);
		goto out;
	}
	/* a cgroup someone else chose (the kubelet's) gives way to one inside the instance */
	if (json_is_string(json_object_get(ans, "cgroups_path"))) {
		json_t *lx = json_object_get(cfg, "linux");

		if (!json_is_object(lx)) {
			lx = json_object();
			json_object_set_new(cfg, "linux", lx);
		}
		json_object_set(lx, "cgroupsPath", json_object_get(ans, "cgroups_path"));
		changed = true;
	}
	/* a pooled sandbox's workload container starts as its waiter */
	if (!sandbox && json_object_get(ans, "exec")) {
		json_t *proc = json_object_get(cfg, "process");

		if (!exec_valid(json_object_get(ans, "exec")) || !json_is_object(proc)) {
			err = fail(c, "refused: container %s: lanternd's \"exec\" is not a command line", id);
			goto out;
		}
		json_object_set(proc, "args", json_object_get(ans, "exec"));
		changed = true;
	}
	if (!sandbox && json_integer_value(json_object_get(ans, "scratch_bytes")) > 0) {
		add_scratch(cfg, json_integer_value(json_object_get(ans, "scratch_bytes")));
		changed = true;
	}
	if (changed && write_config(cfg, cfg_path) < 0) {
		err = fail(c, "refused: container %s: cannot rewrite %s", id, cfg_path);
		goto out;
	}
	json_decref(cfg);
	cfg = NULL;
	/* which runtime holds the container, for every later command */
	rec = json_pack("{s:O, s:O, s:O}", "runtime", json_object_get(ans, "runtime"), "handler",
			json_object_get(ans, "handler"), "args", json_object_get(ans, "args"));
	rec_txt = rec ? json_dumps(rec, JSON_COMPACT) : NULL;
	json_decref(rec);
	snprintf(path, sizeof(path), "%s/lantern-oci", c->root);
	record_path(c, id, rec_path, sizeof(rec_path));
	/* not synced: the root is in /run, and no container outlives a power loss */
	if (!rec_txt || util_mkdir_p(path, 0700) < 0 || util_write_file_replace(rec_path, rec_txt, strlen(rec_txt)) < 0) {
		free(rec_txt);
		err = fail(c, "container %s: cannot record its runtime in %s", id, rec_path);
		goto out;
	}
	free(rec_txt);
	/* runc puts every process it starts in the cgroupsPath of every hierarchy, the
	 * unified one included; runsc does not on a hybrid host, so its processes start in
	 * the instance. Each move between cgroups costs an RCU grace period at times: only
	 * where needed. */
	json_array_foreach(strcmp(json_string_value(json_object_get(ans, "handler")), "runc") ?
			   json_object_get(ans, "join") : NULL, i, d) {
		struct lerr e = { 0 };

		if (json_is_string(d) && cgroup_join(json_string_value(d), 0, &e) < 0) {
			unlink(rec_path);
			err = fail(c, "refused: container %s: %s", id, e.msg);
			goto out;
		}
	}
	if (!sandbox && !strcmp(json_string_value(json_object_get(ans, "handler")), "runsc")) {
		err = create_waited(c, json_string_value(json_object_get(ans, "runtime")), "runsc",
				    json_object_get(ans, "args"), id);
		goto out;
	}
	exec_runtime(c, json_string_value(json_object_get(ans, "runtime")),
		     json_string_value(json_object_get(ans, "handler")), json_object_get(ans, "args"), c->rest,
		     c->nrest);
	err = 127;
out:
	json_decref(cfg);
	json_decref(ans);
	return err;
}

/* runsc says "sandbox is not running" where runc says "container not running", the
 * words the shim takes for a process that has already ended: said in runc's words. */
static int kill_runsc(const struct cmdline *c, json_t *rec)
{
	char out[8192];
	int p[2], st;
	size_t n = 0;
	ssize_t r;
	pid_t pid;

	if (pipe2(p, O_CLOEXEC) < 0)
		return fail(c, "kill: %s", strerror(errno));
	if ((pid = fork()) == 0) {
		dup2(p[1], 1);
		dup2(p[1], 2);
		exec_runtime(c, json_string_value(json_object_get(rec, "runtime")), "runsc", json_object_get(rec, "args"),
			     c->rest, c->nrest);
	}
	close(p[1]);
	while (pid > 0 && n + 1 < sizeof(out) && (r = read(p[0], out + n, sizeof(out) - 1 - n)) > 0)
		n += (size_t)r;
	out[n] = '\0';
	close(p[0]);
	if (pid < 0 || waitpid(pid, &st, 0) < 0)
		return fail(c, "kill: %s", strerror(errno));
	st = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
	if (st && strstr(out, "is not running"))
		fprintf(stderr, "container not running\n");
	else
		fputs(out, stderr);
	return st;
}

/* Any other command: to the runtime recorded for the first argument that names a
 * container with a record; `delete` also drops the record once the runtime succeeded. */
static int pass(const struct cmdline *c)
{
	char path[4200], *txt = NULL;
	json_t *rec = NULL;
	pid_t pid;
	int st;

	for (int k = 1; c->root && k < c->nrest && !rec; k++) {
		if (c->rest[k][0] == '-' || !id_valid(c->rest[k]))
			continue;
		record_path(c, c->rest[k], path, sizeof(path));
		if (util_read_file(path, &txt, NULL) == 0)
			rec = json_loads(txt, 0, NULL);
		free(txt);
		txt = NULL;
	}
	if (!c->root || !rec) {
		/* runc itself answers: --version, features, an unknown container */
		static struct cmdline dflt;

		dflt = *c;
		if (!dflt.root)
			dflt.root = "/run/lantern-oci/none";
		exec_runtime(&dflt, RUNC, "runc", NULL, c->rest, c->nrest);
	}
	if (c->nrest > 1 && !strcmp(c->rest[0], "start")) {
		int rc = start_stdio_from_waiter(c, c->rest[c->nrest - 1]);

		if (rc < 0 && rc != -ENOENT)
			return fail(c, "start %s: %s", c->rest[c->nrest - 1], strerror(-rc));
	}
	if (c->nrest && !strcmp(c->rest[0], "kill") && !strcmp(json_string_value(json_object_get(rec, "handler")) ?: "", "runsc"))
		return kill_runsc(c, rec);
	if (c->nrest && strcmp(c->rest[0], "delete")) {
		exec_runtime(c, json_string_value(json_object_get(rec, "runtime")) ?: RUNC,
			     json_string_value(json_object_get(rec, "handler")) ?: "runc", json_object_get(rec, "args"),
			     c->rest, c->nrest);
	}
	if ((pid = fork()) == 0)
		exec_runtime(c, json_string_value(json_object_get(rec, "runtime")) ?: RUNC,
			     json_string_value(json_object_get(rec, "handler")) ?: "runc", json_object_get(rec, "args"),
			     c->rest, c->nrest);
	if (pid < 0 || waitpid(pid, &st, 0) < 0)
		return fail(c, "delete: cannot run the runtime: %s", strerror(errno));
	if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
		unlink(path);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

int main(int argc, char **argv)
{
	struct cmdline c;

	if (parse(argc, argv, &c) < 0) {
		fprintf(stderr, "lantern-oci: bad global flags\n");
		return 2;
	}
	if (c.nrest && !strcmp(c.rest[0], "create"))
		return create(&c);
	if (c.nrest && !strcmp(c.rest[0], "run"))
		return fail(&c, "refused: `run` does not go through lanternd's bind; use create and start");
	return pass(&c);
}
