/* handler.c: OCI runtime handlers: finding and checking them at start, the command
 * lines that start and delete containers, and listing what a runtime still holds.
 *
 * runc runs detached (`run -d`): the container's init is re-parented to lantern-shim
 * (a child subreaper), which waits for it; the cgroup then stays until lanternd has
 * read its OOM counters and calls `delete`. runsc runs in the foreground: its exit
 * status is the workload's, and it leaves a cgroup it did not create in place. */
#include "lantern/oci.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static bool find_bin(const char *name, char *out, size_t len)
{
	/* /opt/lantern/bin first: lanternd's image (the DaemonSet) keeps its runtimes there
	 * and its init container puts the same ones at the same path on the host, so a
	 * path lanternd names is valid where lantern-oci execs it, outside the pod */
	const char *dirs[] = { "/opt/lantern/bin", "/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin",
			       "/sbin", "/bin" };

	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
		snprintf(out, len, "%s/%s", dirs[i], name);
		if (access(out, X_OK) == 0)
			return true;
	}
	out[0] = '\0';
	return false;
}

/* Runs argv with envp (NULL: lanternd's), stdin fed from in (NULL: /dev/null),
 * capturing up to cap-1 bytes of its stdout and stderr together. Returns the
 * exit status, or -errno. */
int oci_exec(char *const argv[], char *const envp[], const char *in, char *out, size_t cap)
{
	int p[2], q[2] = { -1, -1 }, status;
	size_t n = 0;
	ssize_t r;
	pid_t pid;

	if (pipe2(p, O_CLOEXEC) < 0)
		return -errno;
	if (in && pipe2(q, O_CLOEXEC) < 0) {
		close(p[0]);
		close(p[1]);
		return -errno;
	}
	pid = fork();
	if (pid < 0) {
		int err = -errno;
		close(p[0]);
		close(p[1]);
		if (in) {
			close(q[0]);
			close(q[1]);
		}
		return err;
	}
	if (pid == 0) {
		int inf = in ? q[0] : open("/dev/null", O_RDONLY);
		if (inf < 0 || dup2(inf, 0) < 0 || dup2(p[1], 1) < 0 || dup2(p[1], 2) < 0)
			_exit(127);
		if (envp)
			execve(argv[0], argv, envp);
		else
			execv(argv[0], argv);
		_exit(127);
	}
	close(p[1]);
	if (in) {
		size_t len = strlen(in);
		close(q[0]);
		/* CNI configs are small: the pipe takes them whole */
		if (write(q[1], in, len) != (ssize_t)len)
			log_warn("oci: short write to %s's stdin", argv[0]);
		close(q[1]);
	}
	while ((r = read(p[0], out + n, n + 1 < cap ? cap - 1 - n : 0)) > 0)
		n += (size_t)r;
	/* drain what did not fit so the child never blocks on a full pipe */
	while (r > 0 || (r < 0 && errno == EINTR)) {
		char sink[512];
		r = read(p[0], sink, sizeof(sink));
	}
	close(p[0]);
	if (cap)
		out[n] = '\0';
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -errno;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static int run_capture(char *const argv[], char *out, size_t cap)
{
	return oci_exec(argv, NULL, NULL, out, cap);
}

static const char *global_flag(const struct oci_handler *h)
{
	return h->kind == OCI_RUNSC ? "--platform=ptrace" : NULL;
}

static const char *const known[] = { "runc", "runsc", "kata" };

int oci_class_map(const char *const *entries, int n, const char *out[OCI_N_CLASSES], struct lerr *e)
{
	for (int c = 0; c < OCI_N_CLASSES; c++)
		out[c] = NULL;
	out[SPEC_ISO_TRUSTED] = "runc";
	out[SPEC_ISO_STANDARD] = "runsc";
	out[SPEC_ISO_UNTRUSTED] = "runsc";
	out[SPEC_ISO_HOSTILE] = "kata";
	for (int i = 0; i < n; i++) {
		const char *m = entries[i], *eq = strchr(m, '='), *h = NULL;
		char cls[32];
		int c = -1;

		snprintf(cls, sizeof(cls), "%.*s", eq ? (int)(eq - m) : 0, m);
		for (int k = 0; k < OCI_N_CLASSES; k++)
			if (!strcmp(spec_isolation_name((enum spec_isolation)k), cls))
				c = k;
		if (!eq || c < 0)
			return lerr_set(e, EINVAL, "--runtime-handler \"%s\": want CLASS=HANDLER with a class of "
					"agent.yaml (trusted, standard, untrusted, hostile, wasm, devcontainer)", m);
		for (size_t k = 0; k < sizeof(known) / sizeof(known[0]); k++)
			if (!strcmp(eq + 1, known[k]))
				h = known[k];
		if (!h && strcmp(eq + 1, "none"))
			return lerr_set(e, EINVAL, "--runtime-handler \"%s\": handler \"%s\" is not one of runc, "
					"runsc, kata, none", m, eq + 1);
		out[c] = h;
	}
	return 0;
}

void oci_handler_probe(struct oci_handler *h, const char *name, const char *root)
{
	const char *bin = !strcmp(name, "kata") ? "kata-runtime" : name;
	char out[2048], *nl;
	int rc;

	memset(h, 0, sizeof(*h));
	snprintf(h->name, sizeof(h->name), "%s", name);
	h->kind = !strcmp(name, "runsc") ? OCI_RUNSC : !strcmp(name, "kata") ? OCI_KATA : OCI_RUNC;
	snprintf(h->root, sizeof(h->root), "%s", root);
	if (strcmp(name, "runc") && strcmp(name, "runsc") && strcmp(name, "kata")) {
		snprintf(h->missing, sizeof(h->missing), "\"%s\" is not a runtime handler lanternd knows", name);
		return;
	}
	if (!find_bin(bin, h->bin, sizeof(h->bin))) {
		snprintf(h->missing, sizeof(h->missing), "%s is not installed (no %s in /usr/sbin, /usr/bin, ...)",
			 bin, bin);
		return;
	}
	rc = run_capture((char *[]){ h->bin, "--version", NULL }, out, sizeof(out));
	if (rc != 0) {
		snprintf(h->missing, sizeof(h->missing), "%s --version failed (exit %d)", h->bin, rc);
		return;
	}
	if ((nl = strchr(out, '\n')))
		*nl = '\0';
	snprintf(h->version, sizeof(h->version), "%s", out);
	if (util_mkdir_p(root, 0700) < 0) {
		snprintf(h->missing, sizeof(h->missing), "cannot create its state root %s", root);
		return;
	}
	/* `list` reads the state root: a runtime that cannot even do that cannot run */
	rc = run_capture((char *[]){ h->bin, "--root", (char *)root, "list", NULL }, out, sizeof(out));
	if (rc != 0) {
		if ((nl = strchr(out, '\n')))
			*nl = '\0';
		snprintf(h->missing, sizeof(h->missing), "%s list failed (exit %d): %.120s", h->bin, rc, out);
		return;
	}
	h->available = true;
}

int oci_handler_flags(const struct oci_handler *h, bool host_network, char **argv, int max)
{
	int n = 0;

	if (h->kind != OCI_RUNSC)
		return 0;
	if (max < 4)
		return -E2BIG;
	argv[n++] = (char *)global_flag(h);
	argv[n++] = host_network ? "--network=host" : "--network=none";
	/* the bundle's seccomp profile applies inside the sandbox too */
	argv[n++] = "--oci-seccomp";
	/* the harness socket is a host Unix socket bind-mounted into the sandbox */
	argv[n++] = "--host-uds=open";
	return n;
}

int oci_run_argv(const struct oci_handler *h, const char *bundle, const char *id,
		 const char *pid_file, bool host_network, char **argv, int max)
{
	int n = 0, k;

	if (max < 16)
		return -E2BIG;
	argv[n++] = (char *)h->bin;
	argv[n++] = "--root";
	argv[n++] = (char *)h->root;
	if ((k = oci_handler_flags(h, host_network, argv + n, max - n - 8)) < 0)
		return k;
	n += k;
	if (h->kind == OCI_RUNSC) {
		argv[n++] = "run";
	} else {
		argv[n++] = "run";
		argv[n++] = "-d";
		argv[n++] = "--pid-file";
		argv[n++] = (char *)pid_file;
	}
	argv[n++] = "--bundle";
	argv[n++] = (char *)bundle;
	argv[n++] = (char *)id;
	argv[n] = NULL;
	return n;
}

int oci_delete(const struct oci_handler *h, const char *id)
{
	char out[1024];
	int rc;

	if (h->kind == OCI_RUNSC)
		rc = run_capture((char *[]){ (char *)h->bin, "--root", (char *)h->root, "--platform=ptrace",
					     "delete", "--force", (char *)id, NULL }, out, sizeof(out));
	else
		rc = run_capture((char *[]){ (char *)h->bin, "--root", (char *)h->root, "delete", "--force",
					     (char *)id, NULL }, out, sizeof(out));
	if (rc < 0)
		return rc;
	if (rc == 0)
		return 0;
	return strstr(out, "not exist") || strstr(out, "not found") ? -ENOENT : -EIO;
}

int oci_list(const struct oci_handler *h, char ***ids, size_t *n)
{
	char out[65536], *save = NULL, *line;
	char **v = NULL;
	size_t k = 0;
	int rc = run_capture((char *[]){ (char *)h->bin, "--root", (char *)h->root, "list", "-q", NULL },
			     out, sizeof(out));

	*ids = NULL;
	*n = 0;
	if (rc != 0)
		return rc < 0 ? rc : -EIO;
	for (line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char **nv = realloc(v, (k + 1) * sizeof(*v));
		if (!nv)
			break;
		v = nv;
		if ((v[k] = strdup(line)))
			k++;
	}
	*ids = v;
	*n = k;
	return 0;
}
