/* env.c: the workload's environment, built once per start for every runtime:
 * LANTERN_RUN_ID and LANTERN_INSTANCE_ID, then what the subscribers add (TRACEPARENT,
 * the harness socket, ...). Values that are paths in a node directory carry that
 * directory as a mount, so a runtime with its own root can show it to the sandbox at
 * a fixed place and pass the sandbox path (see run.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "lantern/util.h"

#define ENV_MAX    32
#define MOUNTS_MAX 8

struct env_var {
	char *name;
	char *host;              /* the value for runtimes that share the host's files */
	char *sandbox;           /* the value in a sandbox; NULL: not passed to sandboxes */
};

struct run_env {
	struct env_var v[ENV_MAX];
	size_t n;
	struct run_env_mount m[MOUNTS_MAX];
	size_t nm;
	char *strings[ENV_MAX + 1];
};

static void env_put(struct run_env *env, const char *name, const char *host, const char *sandbox)
{
	struct env_var *v = NULL;

	for (size_t i = 0; i < env->n; i++)
		if (!strcmp(env->v[i].name, name))
			v = &env->v[i];
	if (!v) {
		if (env->n == ENV_MAX) {
			log_error("workload environment: more than %d lantern variables; %s left out",
				  ENV_MAX, name);
			return;
		}
		v = &env->v[env->n++];
		v->name = strdup(name);
	} else {
		free(v->host);
		free(v->sandbox);
	}
	v->host = host ? strdup(host) : NULL;
	v->sandbox = sandbox ? strdup(sandbox) : NULL;
}

void run_env_set(struct run_env *env, const char *name, const char *value)
{
	env_put(env, name, value, value);
}

void run_env_set_host(struct run_env *env, const char *name, const char *value)
{
	env_put(env, name, value, NULL);
}

void run_env_set_path(struct run_env *env, const char *name, const char *host_dir,
		      const char *sandbox_dir, const char *file, bool read_only)
{
	char h[PATH_MAX + 256], s[PATH_MAX];
	size_t i;

	for (i = 0; i < env->nm; i++)
		if (!strcmp(env->m[i].sandbox, sandbox_dir))
			break;
	if (i == env->nm) {
		if (env->nm == MOUNTS_MAX) {
			log_error("workload environment: more than %d directories; %s left out",
				  MOUNTS_MAX, name);
			return;
		}
		snprintf(env->m[i].host, sizeof(env->m[i].host), "%s", host_dir);
		snprintf(env->m[i].sandbox, sizeof(env->m[i].sandbox), "%s", sandbox_dir);
		env->m[i].read_only = read_only;
		env->nm++;
	}
	/* an empty file names the directory itself */
	snprintf(h, sizeof(h), "%s%s%s", host_dir, *file ? "/" : "", file);
	snprintf(s, sizeof(s), "%s%s%s", sandbox_dir, *file ? "/" : "", file);
	env_put(env, name, h, s);
}

char *const *run_env_strings(struct run_env *env, bool sandbox)
{
	size_t k = 0;

	for (size_t i = 0; i < ENV_MAX + 1; i++) {
		free(env->strings[i]);
		env->strings[i] = NULL;
	}
	for (size_t i = 0; i < env->n; i++) {
		const char *val = sandbox ? env->v[i].sandbox : env->v[i].host;

		if (val && asprintf(&env->strings[k], "%s=%s", env->v[i].name, val) > 0)
			k++;
	}
	return env->strings;
}

size_t run_env_mounts(const struct run_env *env, const struct run_env_mount **out)
{
	*out = env->m;
	return env->nm;
}

struct run_env *run_env_new(const struct run *r)
{
	struct run_env *env = calloc(1, sizeof(*env));

	if (!env)
		return NULL;
	run_env_set(env, "LANTERN_RUN_ID", r->id);
	run_env_set(env, "LANTERN_INSTANCE_ID", r->instance_id);
	return env;
}

void run_env_free(struct run_env *env)
{
	if (!env)
		return;
	for (size_t i = 0; i < env->n; i++) {
		free(env->v[i].name);
		free(env->v[i].host);
		free(env->v[i].sandbox);
	}
	for (size_t i = 0; i < ENV_MAX + 1; i++)
		free(env->strings[i]);
	free(env);
}
