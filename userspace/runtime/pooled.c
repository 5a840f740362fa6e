/* pooled.c: what the OCI and CRI runtimes do alike with a claimed sandbox (see
 * runtime_internal.h): the node directories it was made with, checked by inode against
 * the claiming run's, and its waiter told to exec the run's process. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runtime_internal.h"
#include "lantern/oci.h"

#define WAITER_EXEC_TIMEOUT_MS 250

int runtime_pooled_mount_note(struct runtime_pooled_mount *pm, const char *host, const char *dest,
			      struct lerr *e)
{
	struct stat st;

	if (stat(host, &st) < 0)
		return lerr_set(e, errno, "pool: %s: %s", host, strerror(errno));
	snprintf(pm->dest, sizeof(pm->dest), "%s", dest);
	pm->dev = st.st_dev;
	pm->ino = st.st_ino;
	return 0;
}

int runtime_pooled_mounts_match(const struct runtime_pooled_mount *pm, size_t n, struct run_env *env,
				const char *sandbox, struct lerr *e)
{
	const struct run_env_mount *m;
	size_t nm = run_env_mounts(env, &m);

	for (size_t i = 0; i < nm; i++) {
		struct stat st;
		size_t b;

		for (b = 0; b < n && strcmp(pm[b].dest, m[i].sandbox); b++)
			;
		if (b == n || stat(m[i].host, &st) < 0 || st.st_dev != pm[b].dev || st.st_ino != pm[b].ino)
			return lerr_set(e, EXDEV, "claim: the run shows %s at %s, which its %s does not", m[i].host,
					m[i].sandbox, sandbox);
	}
	return 0;
}

int runtime_pooled_exec(int *waiter_fd, const struct oci_bundle_req *br, struct lerr *e)
{
	char **argv = NULL, **envp = NULL;
	struct oci_process p;
	size_t n, k;
	json_t *x;
	int err;

	if ((err = oci_process_build(br, &p, e)) < 0)
		return err;
	n = json_array_size(p.args);
	k = json_array_size(p.env);
	if (!(argv = calloc(n + 1, sizeof(*argv))) || !(envp = calloc(k + 1, sizeof(*envp)))) {
		err = lerr_set(e, ENOMEM, "claim: out of memory");
		goto out;
	}
	json_array_foreach(p.args, n, x)
		argv[n] = (char *)json_string_value(x);
	json_array_foreach(p.env, k, x)
		envp[k] = (char *)json_string_value(x);
	err = spawn_waiter_exec(*waiter_fd, argv, envp, p.cwd, WAITER_EXEC_TIMEOUT_MS, e);
	close(*waiter_fd);
	*waiter_fd = -1;
out:
	free(argv);
	free(envp);
	oci_process_free(&p);
	return err;
}
