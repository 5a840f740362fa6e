/* run.c: one run's life in lanternd: admission, the instance (cgroup, egress policy,
 * DNS proxy) prepared BEFORE the workload's first instruction, start through
 * lantern-shim, output to followers, timeout and cancel, teardown, and adoption of
 * what a previous lanternd left running.
 *
 * Invariant: a run whose status is not final owns its cgroup, its lantern_instances
 * entry and (if it has hostname rules) a DNS server; a final run owns none of them.
 * The run directory (STATE/runs/<id>) is the record: run.json, spec.yaml, stdout,
 * stderr, egress.jsonl, and the shim's files. */
#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/inotify.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lanternd.h"
#include "lantern/spawn.h"
#include "lantern/util.h"

static const char *const status_names[] = {
	[RUN_ACCEPTED] = "accepted",   [RUN_RUNNING] = "running",
	[RUN_SUCCEEDED] = "succeeded", [RUN_FAILED] = "failed",
	[RUN_TIMED_OUT] = "timed_out", [RUN_CANCELLED] = "cancelled",
	[RUN_OOM_KILLED] = "oom_killed", [RUN_BUDGET_EXCEEDED] = "budget_exceeded",
};

const char *run_status_name(enum run_status s)
{
	return s < ARRAY_SIZE(status_names) ? status_names[s] : "unknown";
}

bool run_status_final(enum run_status s)
{
	return s != RUN_ACCEPTED && s != RUN_RUNNING;
}

static int status_from_name(const char *n)
{
	for (size_t i = 0; i < ARRAY_SIZE(status_names); i++)
		if (n && !strcmp(n, status_names[i]))
			return (int)i;
	return -1;
}

struct run *run_find(struct daemon *d, const char *id)
{
	for (struct run *r = d->runs; r; r = r->next)
		if (!strcmp(r->id, id))
			return r;
	return NULL;
}

static struct run *run_by_wd(struct daemon *d, int wd, int *which)
{
	for (struct run *r = d->runs; r; r = r->next)
		for (int i = 0; i < 2; i++)
			if (r->wd[i] == wd && wd >= 0) {
				*which = i;
				return r;
			}
	return NULL;
}

json_t *run_json(const struct run *r)
{
	json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:I}", "id", r->id, "instance_id",
			      r->instance_id, "name", r->spec ? r->spec->name : "",
			      "status", run_status_name(r->status), "created", (json_int_t)r->created);
	if (r->reason[0])
		json_object_set_new(j, "reason", json_string(r->reason));
	if (run_status_final(r->status)) {
		json_object_set_new(j, "exit_code", json_integer(r->exit_code));
		json_object_set_new(j, "finished", json_integer(r->finished));
	}
	json_object_set_new(j, "cgroup_id", json_integer((json_int_t)r->cg.id));
	ocirun_json(r, j);
	return j;
}

static void run_save(struct run *r)
{
	char path[PATH_MAX + 16];
	json_t *j = run_json(r);
	char *s;

	json_object_set_new(j, "file", json_string(r->file ? r->file : ""));
	json_object_set_new(j, "cgroup", json_string(r->cg.name));
	s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(j);
	snprintf(path, sizeof(path), "%s/run.json", r->dir);
	if (!s || util_write_file_atomic(path, s, strlen(s)) < 0)
		log_error("run %s: cannot write %s: the record of this run may be stale", r->id, path);
	free(s);
}

static void run_free(struct run *r)
{
	ocirun_free(r);
	telemetry_run_free(r);
	while (r->followers) {
		struct follower *f = r->followers;
		r->followers = f->next;
		free(f);
	}
	spec_free(r->spec);
	policy_free(r->policy);
	free(r->file);
	free(r);
}

/* Sends output the followers have not seen yet. */
static void run_pump(struct run *r)
{
	char buf[65536];

	for (struct follower *f = r->followers; f; f = f->next) {
		for (int i = 0; i < 2; i++) {
			char path[PATH_MAX + 16];
			int fd;
			ssize_t n;

			snprintf(path, sizeof(path), "%s/%s", r->dir, i ? "stderr" : "stdout");
			fd = open(path, O_RDONLY | O_CLOEXEC);
			if (fd < 0)
				continue;
			while ((n = pread(fd, buf, sizeof(buf), f->off[i])) > 0) {
				api_send_output(f->c, i + 1, buf, (size_t)n);
				f->off[i] += n;
			}
			close(fd);
		}
	}
}

static void run_notify_end(struct run *r)
{
	run_pump(r);
	while (r->followers) {
		struct follower *f = r->followers;
		json_t *m = json_pack("{s:s, s:s, s:s, s:i}", "type", "exit", "run_id", r->id,
				      "status", run_status_name(r->status), "exit_code", r->exit_code);
		if (r->reason[0])
			json_object_set_new(m, "reason", json_string(r->reason));
		api_send(f->c, m);
		api_finish(f->c);
		r->followers = f->next;
		free(f);
	}
}

void run_follow(struct run *r, struct client *c)
{
	struct follower *f = calloc(1, sizeof(*f));

	if (!f) {
		api_finish(c);
		return;
	}
	f->c = c;
	f->next = r->followers;
	r->followers = f;
	if (run_status_final(r->status))
		run_notify_end(r);
	else
		run_pump(r);
}

void run_unfollow_client(struct daemon *d, struct client *c)
{
	for (struct run *r = d->runs; r; r = r->next) {
		for (struct follower **pp = &r->followers; *pp;) {
			if ((*pp)->c == c) {
				struct follower *f = *pp;
				*pp = f->next;
				free(f);
			} else {
				pp = &(*pp)->next;
			}
		}
	}
}

void run_inotify_event(struct daemon *d)
{
	char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
	ssize_t n;

	while ((n = read(d->inotify, buf, sizeof(buf))) > 0) {
		for (char *p = buf; p < buf + n;) {
			struct inotify_event *ev = (struct inotify_event *)p;
			int which;
			struct run *r = run_by_wd(d, ev->wd, &which);

			if (r && r->followers)
				run_pump(r);
			p += sizeof(*ev) + ev->len;
		}
	}
}

/* OOM kills the memory controller recorded for this instance (v1 or v2 counter). */
static uint64_t run_oom_kills(const struct run *r)
{
	static const char *const files[] = { "memory.events", "memory.oom_control" };
	uint64_t kills = 0;

	for (int i = 0; i < r->cg.ndirs; i++) {
		for (size_t k = 0; k < ARRAY_SIZE(files); k++) {
			char path[PATH_MAX + 32], *buf, *p;

			snprintf(path, sizeof(path), "%s/%s", r->cg.dirs[i], files[k]);
			if (util_read_file(path, &buf, NULL) < 0)
				continue;
			if ((p = strstr(buf, "oom_kill ")))
				kills += strtoull(p + 9, NULL, 10);
			free(buf);
		}
	}
	return kills;
}

/* Releases the instance: cgroup (killing what is left), map entries, DNS. */
static void run_teardown(struct daemon *d, struct run *r)
{
	struct lerr e = { 0 };

	telemetry_run_collect(d, r);
	/* processes first: until the last one is gone its policy must stay in force */
	ocirun_teardown(d, r);
	if (r->cg_made) {
		if (cgroup_inst_destroy(&r->cg, 5000, &e) < 0)
			log_error("run %s: %s", r->id, e.msg);
		r->cg_made = false;
	}
	if (r->in_maps) {
		lbpf_instance_remove(d->bpf, r->cg.id);
		r->in_maps = false;
	}
	telemetry_run_release(d, r);
	if (r->dns) {
		dns_server_close(r->dns);
		r->dns = NULL;
	}
	for (int i = 0; i < 2; i++) {
		if (r->wd[i] >= 0)
			inotify_rm_watch(d->inotify, r->wd[i]);
		r->wd[i] = -1;
	}
	if (r->pidfd >= 0) {
		loop_del(d->loop, r->pidfd);
		close(r->pidfd);
		r->pidfd = -1;
	}
	if (r->timeout_timer)
		loop_timer_cancel(d->loop, r->timeout_timer);
	if (r->kill_timer)
		loop_timer_cancel(d->loop, r->kill_timer);
	r->timeout_timer = r->kill_timer = 0;
}

static void run_finish_rest(struct run *r);

/* The workload's shim exited (or was found gone): decide the status, tear down. */
static void run_finish(struct daemon *d, struct run *r)
{
	struct spawn_exit x = { 0 };
	bool oom = run_oom_kills(r) > 0;

	if (r->shim_pid > 0)
		waitpid(r->shim_pid, NULL, WNOHANG);
	spawn_read_exit(r->dir, &x);
	if (!x.exited) {
		r->status = RUN_FAILED;
		r->exit_code = -1;
		snprintf(r->reason, sizeof(r->reason),
			 "the workload's supervisor ended without recording an exit status");
	} else if (x.error[0]) {
		r->status = RUN_FAILED;
		r->exit_code = x.exit_code;
		snprintf(r->reason, sizeof(r->reason), "start failed: %s", x.error);
	} else if (r->ending_set) {
		r->status = r->ending;
		r->exit_code = x.signal ? 128 + x.signal : x.exit_code;
	} else if (oom && (x.signal == SIGKILL || (r->oci && x.exit_code))) {
		r->status = RUN_OOM_KILLED;
		r->exit_code = 128 + x.signal;
		snprintf(r->reason, sizeof(r->reason), "out of memory: killed at limits.memory");
	} else if (x.signal) {
		r->status = RUN_FAILED;
		r->exit_code = 128 + x.signal;
		snprintf(r->reason, sizeof(r->reason), "killed by signal %d (%s)", x.signal,
			 strsignal(x.signal));
	} else {
		r->exit_code = x.exit_code;
		r->status = x.exit_code == 0 ? RUN_SUCCEEDED : RUN_FAILED;
		if (x.exit_code)
			snprintf(r->reason, sizeof(r->reason), "exit code %d", x.exit_code);
	}
	/* the runtime's delete and CNI run on a worker; the shim is gone, stop watching it */
	if (r->pidfd >= 0) {
		loop_del(d->loop, r->pidfd);
		close(r->pidfd);
		r->pidfd = -1;
	}
	if (ocirun_teardown_async(d, r, run_finish_rest))
		return;
	run_finish_rest(r);
}

/* After the OCI parts are gone: the instance, the record, the followers. */
static void run_finish_rest(struct run *r)
{
	struct daemon *d = r->d;

	run_teardown(d, r);
	durable_finish(d, r);
	r->finished = (int64_t)time(NULL);
	run_save(r);
	telemetry_run_end(d, r);
	log_info("run %s (%s): %s%s%s", r->id, r->spec ? r->spec->name : "?",
		 run_status_name(r->status), r->reason[0] ? ": " : "", r->reason);
	run_notify_end(r);
	cplane_run_ended(d, r);
}

static void on_shim_exit(struct loop *l, int fd, uint32_t events, void *arg)
{
	struct run *r = arg;

	run_finish(r->d, r);
}

static void on_kill_timer(struct loop *l, void *arg)
{
	struct run *r = arg;

	r->kill_timer = 0;
	cgroup_inst_signal(&r->cg, SIGKILL);
}

/* Ends the run as `as`: SIGTERM to the whole instance, SIGKILL after the grace. */
static void run_stop(struct daemon *d, struct run *r, enum run_status as, const char *why)
{
	if (r->ending_set)
		return;
	r->ending = as;
	r->ending_set = true;
	snprintf(r->reason, sizeof(r->reason), "%s", why);
	cgroup_inst_signal(&r->cg, SIGTERM);
	r->kill_timer = loop_timer_add(d->loop, d->o.grace_ms, on_kill_timer, r);
}

static void on_timeout(struct loop *l, void *arg)
{
	struct run *r = arg;
	char why[128];

	r->timeout_timer = 0;
	snprintf(why, sizeof(why), "limits.timeout of %llums reached",
		 (unsigned long long)r->spec->limits.timeout_ms);
	run_stop(r->d, r, RUN_TIMED_OUT, why);
}

void run_end(struct daemon *d, struct run *r, enum run_status as, const char *why)
{
	if (!run_status_final(r->status))
		run_stop(d, r, as, why);
}

int run_cancel(struct daemon *d, struct run *r, struct lerr *e)
{
	if (run_status_final(r->status))
		return lerr_set(e, EALREADY, "run %s already ended: %s", r->id,
				run_status_name(r->status));
	run_stop(d, r, RUN_CANCELLED, "cancelled by lantern kill");
	return 0;
}

/* Refuses what this node cannot run, naming what is missing. Never downgrades. */
static int run_admit(struct daemon *d, const struct spec *s, struct lerr *e)
{
	/* the handler table: the process runtime serves trusted + image_digest host,
	 * the OCI handlers (ocirun.c) every other spec */
	if (s->isolation != SPEC_ISO_TRUSTED || strcmp(s->image_digest, "host"))
		return ocirun_admit(d, s, e);
	if (!d->o.process_runtime)
		return lerr_set(e, EPERM,
				"spawn: refused: image_digest \"host\" runs a host process, which needs "
				"lanternd --process-runtime; this node runs images (NAME@sha256:HEX) only");
	if (!s->n_command)
		return lerr_set(e, EINVAL, "spawn: refused: spec.command is empty: nothing to run");
	if (s->network == SPEC_NET_TENANT_VPC)
		return lerr_set(e, EPERM, "spawn: refused: network \"tenant_vpc\" is not supported on this node");
	return 0;
}

static char **run_env(const struct run *r)
{
	const struct spec *s = r->spec;
	size_t n = 0, cap = s->n_env + 8;
	char **env = calloc(cap, sizeof(char *));
	bool have_path = false;

	if (!env)
		return NULL;
	for (size_t i = 0; i < s->n_env; i++) {
		if (!strcmp(s->env[i].key, "PATH"))
			have_path = true;
		if (asprintf(&env[n++], "%s=%s", s->env[i].key, s->env[i].value) < 0)
			env[--n] = NULL;
	}
	if (!have_path && asprintf(&env[n], "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin") > 0)
		n++;
	if (asprintf(&env[n], "LANTERN_RUN_ID=%s", r->id) > 0)
		n++;
	if (asprintf(&env[n], "LANTERN_INSTANCE_ID=%s", r->instance_id) > 0)
		n++;
	n += telemetry_run_env(r, env + n);
	n += durable_env(r, env + n);
	env[n] = NULL;
	return env;
}

static void strv_free(char **v)
{
	for (size_t i = 0; v && v[i]; i++)
		free(v[i]);
	free(v);
}

static int run_watch_output(struct daemon *d, struct run *r)
{
	for (int i = 0; i < 2; i++) {
		char path[PATH_MAX + 16];
		int fd;

		snprintf(path, sizeof(path), "%s/%s", r->dir, i ? "stderr" : "stdout");
		fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
		if (fd < 0)
			return -errno;
		close(fd);
		r->wd[i] = inotify_add_watch(d->inotify, path, IN_MODIFY);
		if (r->wd[i] < 0)
			return -errno;
	}
	return 0;
}

static int run_open_dns(struct daemon *d, struct run *r, uint16_t port, struct lerr *e)
{
	if (!r->policy->has_hosts || r->dns)
		return 0;
	if (!d->have_upstream)
		return lerr_set(e, ENOENT, "spawn: refused: hostname egress rules need a DNS upstream "
				"(--dns-upstream or a nameserver in /etc/resolv.conf)");
	return dns_server_open(d->loop, &d->upstream, port, &egress_dns_callbacks, r, &r->dns, e);
}

static int spec_errors_to_lerr(struct spec_errors *errs, struct lerr *e)
{
	size_t off = 0;

	e->msg[0] = '\0';
	for (size_t i = 0; i < errs->n && off < sizeof(e->msg) - 1; i++)
		off += (size_t)snprintf(e->msg + off, sizeof(e->msg) - off, "%s%s", i ? "\n" : "",
					errs->msg[i]);
	spec_errors_free(errs);
	return -EINVAL;
}

static struct run *run_new(struct daemon *d)
{
	struct run *r = calloc(1, sizeof(*r));

	if (!r)
		return NULL;
	r->d = d;
	r->pidfd = -1;
	r->wd[0] = r->wd[1] = -1;
	return r;
}

/* The instance (cgroup, DNS, map entries, harness socket) and the workload in it;
 * r->instance_id is set. On error what was made is left for run_teardown. */
static int run_start(struct daemon *d, struct run *r, struct lerr *e)
{
	const struct spec *s = r->spec;
	char **argv = NULL, **envp = NULL;
	int err;

	if (strcmp(s->image_digest, "host") && (err = ocirun_prepare(d, r, e)) < 0)
		return err;
	/* The instance exists, limited and enforced, before the workload does. */
	if ((err = cgroup_inst_create(&d->cg, r->instance_id, &s->limits, d->o.pids_max, &r->cg, e)) < 0)
		return err;
	r->cg_made = true;
	if ((err = run_open_dns(d, r, 0, e)) < 0)
		return err;
	if ((err = lbpf_instance_set(d->bpf, r->cg.id, r->policy, r->dns ? dns_server_port(r->dns) : 0,
				     NULL, 0, e)) < 0)
		return err;
	r->in_maps = true;
	if ((err = telemetry_run_prepare(d, r, e)) < 0)
		return err;
	if ((err = run_watch_output(d, r)) < 0)
		return lerr_set(e, err, "spawn: watching output of %s: %s", r->id, strerror(-err));
	if ((err = durable_listen(d, r, e)) < 0)
		return err;

	struct spawn_req req = {
		.shim_path = d->o.shim, .run_dir = r->dir, .cg = &r->cg, .log_max = d->o.log_max,
	};
	if (r->oci) {
		if ((err = ocirun_start(d, r, &req, e)) < 0)
			goto out;
	} else {
		argv = calloc(s->n_command + s->n_args + 1, sizeof(char *));
		envp = run_env(r);
		if (!argv || !envp) {
			err = lerr_set(e, ENOMEM, "spawn: out of memory");
			goto out;
		}
		for (size_t i = 0; i < s->n_command; i++)
			argv[i] = s->command[i];
		for (size_t i = 0; i < s->n_args; i++)
			argv[s->n_command + i] = s->args[i];
		req.argv = argv;
		req.envp = envp;
	}
	if ((err = spawn_start(&req, &r->shim_pid, &r->pidfd, e)) < 0)
		goto out;
	if ((err = loop_add(d->loop, r->pidfd, EPOLLIN, on_shim_exit, r)) < 0) {
		lerr_set(e, err, "spawn: watching the shim of %s: %s", r->id, strerror(-err));
		kill(r->shim_pid, SIGKILL);
		goto out;
	}
	if (s->limits.timeout_ms)
		r->timeout_timer = loop_timer_add(d->loop, s->limits.timeout_ms, on_timeout, r);
	r->status = RUN_RUNNING;
	{
		/* spec.yaml with run.json: what a restart after a power loss loads */
		char spec_path[PATH_MAX + 16];
		int serr;

		snprintf(spec_path, sizeof(spec_path), "%s/spec.yaml", r->dir);
		if ((serr = util_fsync_path(spec_path)) < 0)
			log_warn("run %s: cannot sync %s: %s", r->id, spec_path, strerror(-serr));
	}
	run_save(r);
	telemetry_run_started(d, r);
	log_info("run %s (%s): running, instance %s, cgroup id %llu, pid %d", r->id, s->name,
		 r->instance_id, (unsigned long long)r->cg.id, r->shim_pid);
out:
	free(argv);
	strv_free(envp);
	return err;
}

int run_submit(struct daemon *d, const char *file, const char *yaml, size_t len, json_t *input,
	       struct run **out, struct lerr *e)
{
	struct spec_errors errs = { 0 };
	struct spec *s = NULL;
	struct run *r;
	char path[PATH_MAX + 16];
	int err;

	if (spec_parse(file, yaml, len, &s, &errs) < 0)
		return spec_errors_to_lerr(&errs, e);
	if ((err = run_admit(d, s, e)) < 0) {
		spec_free(s);
		return err;
	}
	r = run_new(d);
	if (!r) {
		spec_free(s);
		return lerr_set(e, ENOMEM, "spawn: out of memory");
	}
	r->spec = s;
	r->file = strdup(file);
	if ((err = policy_compile(s, &r->policy, e)) < 0)
		goto fail;
	memcpy(r->id, "r-", 2);
	util_random_hex(r->id + 2, 6);
	memcpy(r->instance_id, "i-", 2);
	util_random_hex(r->instance_id + 2, 6);
	r->created = (int64_t)time(NULL);
	r->status = RUN_ACCEPTED;
	snprintf(r->dir, sizeof(r->dir), "%s/%s", d->runs_dir, r->id);
	if ((err = util_mkdir_p(r->dir, 0700)) < 0) {
		lerr_set(e, err, "spawn: run directory %s: %s", r->dir, strerror(-err));
		goto fail;
	}
	/* not synced here: before the workload starts only its journal record must be
	 * durable (durable_begin); run_start syncs this file with run.json after */
	snprintf(path, sizeof(path), "%s/spec.yaml", r->dir);
	if ((err = util_write_file_replace(path, yaml, len)) < 0) {
		lerr_set(e, err, "spawn: %s: %s", path, strerror(-err));
		goto fail;
	}
	telemetry_run_begin(d, r);
	if ((err = durable_begin(d, r, input, e)) < 0)
		goto fail;
	if ((err = run_start(d, r, e)) < 0)
		goto fail;
	r->next = d->runs;
	d->runs = r;
	*out = r;
	return 0;

fail:
	run_teardown(d, r);
	durable_discard(r);
	if (r->dir[0])
		util_rm_rf(r->dir);
	log_warn("%s", e->msg);
	run_free(r);
	return err;
}

/* A learned (DNS) slot survives a policy update only if the new policy has the
 * same hostname rule at the same index. */
static bool slot_still_valid(const struct policy *old, const struct policy *new,
			     const struct lantern_port_rule *s)
{
	const struct policy_rule *a = NULL, *b = NULL;

	for (size_t i = 0; i < old->n_rules; i++)
		if (old->rules[i].index == s->rule)
			a = &old->rules[i];
	for (size_t i = 0; i < new->n_rules; i++)
		if (new->rules[i].index == s->rule)
			b = &new->rules[i];
	return a && b && a->is_host && b->is_host && a->wildcard == b->wildcard &&
	       !strcmp(a->host, b->host) && a->protos == b->protos &&
	       a->port_lo == b->port_lo && a->port_hi == b->port_hi;
}

/* The DNS-learned entries of the running policy, re-folded against the new one. */
static int carry_learned(struct daemon *d, struct run *r, const struct policy *np,
			 struct policy_entry **out, size_t *nout)
{
	struct policy_entry *cur = NULL, *res;
	size_t n = 0, k = 0;
	int err = lbpf_egress_dump(d->bpf, r->cg.id, &cur, &n);

	*out = NULL;
	*nout = 0;
	if (err < 0)
		return err;
	res = calloc(n ? n : 1, sizeof(*res));
	if (!res) {
		free(cur);
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++) {
		struct policy_entry ne = { .prefix = 128 };
		bool any = false;

		if (cur[i].prefix != 128)
			continue;
		memcpy(ne.addr, cur[i].addr, 16);
		if (policy_fold_static(np, ne.addr, &ne.val) < 0)
			continue;
		for (uint32_t s = 0; s < cur[i].val.nslots; s++) {
			const struct lantern_port_rule *sl = &cur[i].val.slot[s];
			if (sl->expires_ns && slot_still_valid(r->policy, np, sl) &&
			    policy_value_add(&ne.val, sl) == 0)
				any = true;
		}
		if (any)
			res[k++] = ne;
	}
	free(cur);
	*out = res;
	*nout = k;
	return 0;
}

int run_egress_update(struct daemon *d, struct run *r, const char *file, const char *yaml,
		      size_t len, struct lerr *e)
{
	struct spec_errors errs = { 0 };
	struct spec *s = NULL;
	struct policy *np = NULL, *old;
	struct policy_entry *extra = NULL;
	size_t nextra = 0;
	struct dns_server *new_dns = NULL;
	struct lantern_instance cur;
	char path[PATH_MAX + 16];
	int err;

	if (run_status_final(r->status))
		return lerr_set(e, EALREADY, "run %s already ended: %s", r->id, run_status_name(r->status));
	if (spec_parse(file, yaml, len, &s, &errs) < 0)
		return spec_errors_to_lerr(&errs, e);
	if ((err = policy_compile(s, &np, e)) < 0)
		goto out;
	if (np->has_hosts && !r->dns) {
		if (!d->have_upstream) {
			err = lerr_set(e, ENOENT, "egress: hostname rules need a DNS upstream");
			goto out;
		}
		if ((err = dns_server_open(d->loop, &d->upstream, 0, &egress_dns_callbacks, r, &new_dns, e)) < 0)
			goto out;
		/* an OCI spawn's DNS goes to the bridge's address (ocirun.c): listen there too */
		if (lbpf_instance_get(d->bpf, r->cg.id, &cur) == 0 && cur.dns_redirect_ip4 &&
		    (err = dns_server_listen_ip4(new_dns, cur.dns_redirect_ip4, e)) < 0)
			goto out;
	}
	if ((err = carry_learned(d, r, np, &extra, &nextra)) < 0) {
		lerr_set(e, err, "egress: reading the current policy of %s: %s", r->id, strerror(-err));
		goto out;
	}
	err = lbpf_instance_set(d->bpf, r->cg.id, np,
				new_dns ? dns_server_port(new_dns) : r->dns ? dns_server_port(r->dns) : 0,
				extra, nextra, e);
	if (err < 0)
		goto out;
	if (new_dns) {
		r->dns = new_dns;
		new_dns = NULL;
	}
	old = r->policy;
	r->policy = np;
	np = NULL;
	policy_free(old);
	snprintf(path, sizeof(path), "%s/egress.yaml", r->dir);
	if (util_write_file_atomic(path, yaml, len) < 0)
		log_error("run %s: cannot record the new policy in %s", r->id, path);
	log_info("run %s: egress policy replaced from %s (%zu rules, %zu learned addresses kept)",
		 r->id, file, np ? np->n_rules : r->policy->n_rules, nextra);
out:
	if (new_dns)
		dns_server_close(new_dns);
	free(extra);
	policy_free(np);
	spec_free(s);
	return err;
}

/* Loads STATE/runs/<id>/run.json and the spec it ran with. */
static struct run *run_load(struct daemon *d, const char *id)
{
	char path[PATH_MAX + 64], *buf = NULL;
	size_t len;
	json_t *j;
	struct run *r = run_new(d);
	struct spec_errors errs = { 0 };
	struct lerr e;
	int st;

	if (!r)
		return NULL;
	snprintf(r->dir, sizeof(r->dir), "%s/%s", d->runs_dir, id);
	snprintf(path, sizeof(path), "%s/run.json", r->dir);
	j = json_load_file(path, 0, NULL);
	if (!j) {
		run_free(r);
		return NULL;
	}
	snprintf(r->id, sizeof(r->id), "%s", id);
	snprintf(r->instance_id, sizeof(r->instance_id), "%s",
		 json_string_value(json_object_get(j, "instance_id")) ?: "");
	snprintf(r->cg.name, sizeof(r->cg.name), "%s", json_string_value(json_object_get(j, "cgroup")) ?: "");
	snprintf(r->reason, sizeof(r->reason), "%s", json_string_value(json_object_get(j, "reason")) ?: "");
	r->file = strdup(json_string_value(json_object_get(j, "file")) ?: "agent.yaml");
	st = status_from_name(json_string_value(json_object_get(j, "status")));
	r->status = st < 0 ? RUN_FAILED : (enum run_status)st;
	r->exit_code = (int)json_integer_value(json_object_get(j, "exit_code"));
	r->created = json_integer_value(json_object_get(j, "created"));
	r->finished = json_integer_value(json_object_get(j, "finished"));
	r->cg.id = (uint64_t)json_integer_value(json_object_get(j, "cgroup_id"));
	json_decref(j);

	snprintf(path, sizeof(path), "%s/spec.yaml", r->dir);
	if (util_read_file(path, &buf, &len) == 0) {
		if (spec_parse(r->file, buf, len, &r->spec, &errs) < 0)
			spec_errors_free(&errs);
		free(buf);
	}
	snprintf(path, sizeof(path), "%s/egress.yaml", r->dir);
	if (r->spec && util_read_file(path, &buf, &len) == 0) {
		struct spec *es = NULL;
		if (spec_parse(r->file, buf, len, &es, &errs) == 0) {
			policy_compile(es, &r->policy, &e);
			spec_free(es);
		} else {
			spec_errors_free(&errs);
		}
		free(buf);
	}
	if (r->spec && !r->policy)
		policy_compile(r->spec, &r->policy, &e);
	return r;
}

static bool run_owns_cgroup(struct daemon *d, const char *name)
{
	for (struct run *r = d->runs; r; r = r->next)
		if (!run_status_final(r->status) && !strcmp(r->cg.name, name))
			return true;
	return false;
}

static bool run_owns_cgid(struct daemon *d, uint64_t id)
{
	for (struct run *r = d->runs; r; r = r->next)
		if (!run_status_final(r->status) && r->cg.id == id)
			return true;
	return false;
}

/* Restarts a run whose workload died with the previous lanternd, from its journal,
 * in a fresh instance: same run id, same journal, a new instance id and cgroup. */
static void run_resume(struct daemon *d, struct run *r)
{
	struct lerr e = { 0 };
	int err;

	/* what is left of the old instance goes first */
	if (r->cg.name[0] && cgroup_inst_open(&d->cg, r->cg.name, &r->cg, &e) == 0)
		r->cg_made = true;
	r->in_maps = r->cg.id != 0;
	run_teardown(d, r);
	memcpy(r->instance_id, "i-", 2);
	util_random_hex(r->instance_id + 2, 6);
	memset(&r->cg, 0, sizeof(r->cg));
	e.msg[0] = '\0';
	if (!r->spec || !r->policy)
		err = lerr_set(&e, EINVAL, "run %s: cannot resume: its spec is unreadable", r->id);
	else if ((err = durable_resume(d, r, &e)) == 0)
		err = run_start(d, r, &e);
	if (err < 0) {
		log_error("run %s: %s", r->id, e.msg);
		run_teardown(d, r);
		r->status = RUN_FAILED;
		r->exit_code = -1;
		snprintf(r->reason, sizeof(r->reason), "%s", e.msg);
		durable_finish(d, r);
		r->finished = (int64_t)time(NULL);
		run_save(r);
	}
}

/* Adopts a run a previous lanternd started: its shim is alive or has just ended. */
static void run_adopt(struct daemon *d, struct run *r)
{
	struct lantern_instance inst = { 0 };
	struct lerr e = { 0 };
	int64_t left;

	if (durable_wants_resume(d, r)) {
		run_resume(d, r);
		return;
	}

	if (cgroup_inst_open(&d->cg, r->cg.name, &r->cg, &e) < 0) {
		log_warn("run %s: %s", r->id, e.msg);
	} else {
		r->cg_made = true;
		r->in_maps = lbpf_instance_get(d->bpf, r->cg.id, &inst) == 0;
	}
	if (!r->spec || !r->policy || !r->cg_made || !r->in_maps) {
		log_error("run %s: cannot adopt (spec, policy, cgroup or map entry missing): stopping it",
			  r->id);
		if (r->cg_made)
			cgroup_inst_signal(&r->cg, SIGKILL);
		run_finish(d, r);
		return;
	}
	run_watch_output(d, r);
	if (spawn_adopt(r->dir, &r->shim_pid, &r->pidfd) < 0) {
		r->shim_pid = 0;
		run_finish(d, r);
		return;
	}
	if (durable_adopt(d, r, &e) < 0) {
		/* the journal is authoritative: without it the run cannot go on */
		log_error("run %s: %s: stopping it", r->id, e.msg);
		snprintf(r->reason, sizeof(r->reason), "%s", e.msg);
		r->ending = RUN_FAILED;
		r->ending_set = true;
		cgroup_inst_signal(&r->cg, SIGKILL);
	}
	if (run_open_dns(d, r, inst.dns_port, &e) < 0) {
		/* the old port is taken: a new one, and the kernel redirects there */
		e.msg[0] = '\0';
		if (run_open_dns(d, r, 0, &e) < 0 ||
		    lbpf_instance_set(d->bpf, r->cg.id, r->policy, dns_server_port(r->dns), NULL, 0, &e) < 0)
			log_error("run %s: DNS proxy not restored: %s", r->id, e.msg);
	}
	/* an OCI spawn's DNS goes to the bridge's address (ocirun.c), the proxy listens there too */
	if (r->dns && inst.dns_redirect_ip4 && dns_server_listen_ip4(r->dns, inst.dns_redirect_ip4, &e) < 0)
		log_error("run %s: DNS proxy not restored on the bridge: %s", r->id, e.msg);
	loop_add(d->loop, r->pidfd, EPOLLIN, on_shim_exit, r);
	if (r->spec->limits.timeout_ms) {
		left = r->created * 1000 + (int64_t)r->spec->limits.timeout_ms - (int64_t)time(NULL) * 1000;
		r->timeout_timer = loop_timer_add(d->loop, left > 0 ? (uint64_t)left : 0, on_timeout, r);
	}
	log_info("run %s (%s): adopted, shim pid %d, cgroup id %llu", r->id, r->spec->name,
		 r->shim_pid, (unsigned long long)r->cg.id);
}

void run_recover(struct daemon *d)
{
	DIR *dir = opendir(d->runs_dir);
	struct dirent *de;
	char **names = NULL;
	size_t nnames = 0;
	uint64_t *ids = NULL;
	size_t nids = 0;

	while (dir && (de = readdir(dir))) {
		struct run *r;

		if (de->d_name[0] == '.')
			continue;
		r = run_load(d, de->d_name);
		if (!r)
			continue;
		r->next = d->runs;
		d->runs = r;
		ocirun_adopt(r);
		if (!run_status_final(r->status))
			run_adopt(d, r);
	}
	if (dir)
		closedir(dir);

	/* Reclaim what no live run owns: cgroups first, then map entries. */
	if (cgroup_node_list(&d->cg, &names, &nnames) == 0) {
		for (size_t i = 0; i < nnames; i++) {
			if (!run_owns_cgroup(d, names[i])) {
				struct cgroup_inst c;
				struct lerr e = { 0 };

				if (cgroup_inst_open(&d->cg, names[i], &c, &e) == 0) {
					log_info("reclaiming cgroup %s: no run owns it", names[i]);
					lbpf_instance_remove(d->bpf, c.id);
					cgroup_inst_destroy(&c, 5000, &e);
				}
			}
			free(names[i]);
		}
		free(names);
	}
	if (lbpf_instance_list(d->bpf, &ids, &nids) == 0) {
		for (size_t i = 0; i < nids; i++)
			if (!run_owns_cgid(d, ids[i])) {
				log_info("reclaiming map entries of cgroup id %llu: no run owns it",
					 (unsigned long long)ids[i]);
				lbpf_instance_remove(d->bpf, ids[i]);
			}
		free(ids);
	}
	ocirun_reclaim(d);
}
