/* process.c: the process runtime (lanternd --process-runtime), for development: a spec
 * with isolation trusted and image_digest "host" runs spec.command as a host process
 * under lantern-shim, in the run's instance cgroup, with the host's files. It is not a
 * boundary against a workload that wants out (docs/security.md); egress, limits and
 * telemetry hold as for any instance. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "runtime_internal.h"

#define DEFAULT_PATH "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

struct process_rt {
	struct loop *loop;
	bool enabled;
	char shim[PATH_MAX];
	uint64_t log_max;
};

static int process_admit(void *arg, const struct spec *s, struct lerr *e)
{
	struct process_rt *p = arg;

	if (s->isolation != SPEC_ISO_TRUSTED || strcmp(s->image_digest, "host"))
		return -ENOENT;
	if (!p->enabled)
		return lerr_set(e, EPERM,
				"spawn: refused: image_digest \"host\" runs a host process, which needs "
				"lanternd --process-runtime; this node runs images (NAME@sha256:HEX) only");
	if (!s->n_command)
		return lerr_set(e, EINVAL, "spawn: refused: spec.command is empty: nothing to run");
	if (runtime_refuse_unhonoured(s, e) < 0)
		return -EPERM;
	if (s->limits.scratch_bytes)
		return lerr_set(e, EPERM, "spawn: refused: spec.limits.scratch_size: a host process shares the "
				"host's files; it has no scratch volume to size (an image runs with one)");
	if (s->network == SPEC_NET_TENANT_VPC)
		return lerr_set(e, EPERM, "spawn: refused: network \"tenant_vpc\" is not supported on this node");
	return 0;
}

static struct runtime_shim *shim_of(struct process_rt *p, struct run *r)
{
	struct runtime_shim *s = run_runtime_state(r);

	if (!s && (s = calloc(1, sizeof(*s)))) {
		runtime_shim_init(s, p->loop, r, false);
		run_set_runtime_state(r, s);
	}
	return s;
}

/* spec.env, PATH unless it sets one, then lantern's variables with host paths. */
static char **process_env(const struct spec *s, struct run_env *env)
{
	char *const *lv = run_env_strings(env, false);
	size_t n = 0, nl = 0;
	bool have_path = false;
	char **out;

	while (lv[nl])
		nl++;
	if (!(out = calloc(s->n_env + nl + 2, sizeof(char *))))
		return NULL;
	for (size_t i = 0; i < s->n_env; i++) {
		if (!strcmp(s->env[i].key, "PATH"))
			have_path = true;
		if (asprintf(&out[n], "%s=%s", s->env[i].key, s->env[i].value) > 0)
			n++;
	}
	if (!have_path && (out[n] = strdup(DEFAULT_PATH)))
		n++;
	for (size_t i = 0; i < nl; i++)
		if ((out[n] = strdup(lv[i])))
			n++;
	return out;
}

static void strv_free(char **v)
{
	for (size_t i = 0; v && v[i]; i++)
		free(v[i]);
	free(v);
}

static int process_start(void *arg, struct run *r, struct run_env *env, struct lerr *e)
{
	struct process_rt *p = arg;
	const struct spec *s = run_spec(r);
	struct runtime_shim *sh = shim_of(p, r);
	char **argv = NULL, **envp = NULL;
	int err;

	if (!sh)
		return lerr_set(e, ENOMEM, "spawn: out of memory");
	argv = calloc(s->n_command + s->n_args + 1, sizeof(char *));
	envp = process_env(s, env);
	if (!argv || !envp) {
		err = lerr_set(e, ENOMEM, "spawn: out of memory");
		goto out;
	}
	for (size_t i = 0; i < s->n_command; i++)
		argv[i] = s->command[i];
	for (size_t i = 0; i < s->n_args; i++)
		argv[s->n_command + i] = s->args[i];

	struct spawn_req req = {
		.shim_path = p->shim, .run_dir = run_dir(r), .cg = run_cgroup(r), .log_max = p->log_max,
		.argv = argv, .envp = envp,
	};
	err = runtime_shim_start(sh, &req, e);
out:
	free(argv);
	strv_free(envp);
	return err;
}

static void process_teardown(void *arg, struct run *r, void (*done)(struct run *r))
{
	struct runtime_shim *sh = run_runtime_state(r);

	if (sh)
		runtime_shim_forget(sh);
	if (done)
		done(r);
}

static enum runtime_found process_adopt(void *arg, struct run *r, struct run_exit *x)
{
	struct runtime_shim *sh = shim_of(arg, r);

	if (!sh) {
		memset(x, 0, sizeof(*x));
		return RUNTIME_EXITED;
	}
	return runtime_shim_adopt(sh, x);
}

static void process_kill(void *arg, struct run *r)
{
	struct runtime_shim *sh = run_runtime_state(r);

	if (sh)
		runtime_shim_kill(sh);
}

static void process_free(void *arg, struct run *r)
{
	struct runtime_shim *sh = run_runtime_state(r);

	if (sh) {
		runtime_shim_forget(sh);
		free(sh);
		run_set_runtime_state(r, NULL);
	}
}

static void process_close(void *arg)
{
	free(arg);
}

static const struct runtime_ops process_ops = {
	.name = "process",
	.admit = process_admit,
	.start = process_start,
	.teardown = process_teardown,
	.adopt = process_adopt,
	.kill = process_kill,
	.free = process_free,
	.close = process_close,
};

int runtime_process_add(struct runtimes *rs, struct loop *l, const struct runtime_process_opts *o,
			struct lerr *e)
{
	struct process_rt *p = calloc(1, sizeof(*p));
	int err;

	if (!p)
		return lerr_set(e, ENOMEM, "process runtime: out of memory");
	p->loop = l;
	p->enabled = o->enabled;
	p->log_max = o->log_max;
	snprintf(p->shim, sizeof(p->shim), "%s", o->shim);
	if ((err = runtimes_add(rs, &process_ops, p)) < 0) {
		free(p);
		return lerr_set(e, err, "process runtime: too many runtimes");
	}
	return 0;
}
