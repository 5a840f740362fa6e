/* oci_unit_test: the two halves of userspace/oci that stand between a spawn and its
 * sandbox, each on its own.
 *
 * oci_bundle_write: the config.json handed to runc and runsc, read back with jansson:
 * the namespaces (and which network namespace each runtime gets), the capability set,
 * no_new_privileges, the read-only root and the tmpfs scratch, masked and read-only
 * /proc and /sys paths, the seccomp deny-list and the untrusted allow-list (every name
 * one libseccomp knows), cgroupsPath, the process (Kubernetes' command/args rule, the
 * image user looked up in the image, the environment in order with lantern's last),
 * the harness directory's bind mount, and refusals that write nothing.
 *
 * oci_cni_add/del/list: for real, with Debian's CNI plugins, on a bridge, subnet, data
 * directory and namespace prefix of this test's own: the namespace with lo up and a
 * veth addressed in the subnet, the gateway reported and reachable, no route out; a
 * name already taken left alone; del removing veth, lease and namespace; list finding
 * exactly ours; a failing add leaving nothing behind. No packet leaves the machine:
 * the namespaces route only the test's subnet. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <sched.h>
#include <seccomp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lantern/oci.h"
#include "lantern/spec.h"
#include "lantern/util.h"
#include "tap.h"
#include "testlib.h"

#define BUNDLE_POINTS 28
#define CNI_POINTS 11
#define OUTSIDE "192.0.2.1" /* TEST-NET-1, put on the test's bridge */

static char dir[64], rootfs[128], bundle[128];

/* ---- the bundle ---- */

static struct spec *spec_of(const char *fields)
{
	char yaml[2048];
	struct spec *s = NULL;
	struct spec_errors errs = { 0 };

	snprintf(yaml, sizeof(yaml),
		 "apiVersion: lantern.dev/v1\nkind: AgentSpec\nmetadata:\n  name: b\nspec:\n"
		 "  image_digest: x@sha256:0000000000000000000000000000000000000000000000000000000000000000\n%s",
		 fields);
	if (spec_parse("b.yaml", yaml, strlen(yaml), &s, &errs) < 0)
		for (size_t i = 0; i < errs.n; i++)
			tap_diag("%s", errs.msg[i]);
	spec_errors_free(&errs);
	return s;
}

/* The request every case starts from: runc in a network namespace, no scratch size. */
static struct oci_bundle_req req_of(const struct spec *s, json_t *image_config)
{
	static char *const lenv[] = { "LANTERN_RUN_ID=r-1", "LANTERN_INSTANCE_ID=i-1", NULL };

	return (struct oci_bundle_req){
		.dir = bundle,
		.rootfs = rootfs,
		.image_config = image_config,
		.spec = s,
		.lantern_env = lenv,
		.cgroups_path = "/lantern-test/i-1",
		.kind = OCI_RUNC,
		.net = OCI_NET_NETNS,
		.netns_path = "/run/netns/lantern-i-1",
		.hostname = "i-1",
	};
}

/* Writes the bundle and reads config.json back (NULL if not written); *rc gets the
 * result. */
static json_t *write_read(const struct oci_bundle_req *r, int *rc, struct lerr *e)
{
	char path[256];

	snprintf(path, sizeof(path), "%s/config.json", bundle);
	unlink(path);
	*rc = oci_bundle_write(r, e);
	return json_load_file(path, 0, NULL);
}

static bool has(json_t *arr, const char *s)
{
	json_t *x;
	size_t i;

	json_array_foreach(arr, i, x)
		if (!strcmp(json_string_value(x) ?: "", s))
			return true;
	return false;
}

static json_t *ns_of(json_t *cfg, const char *type)
{
	json_t *x;
	size_t i;

	json_array_foreach(json_object_get(json_object_get(cfg, "linux"), "namespaces"), i, x)
		if (!strcmp(json_string_value(json_object_get(x, "type")) ?: "", type))
			return x;
	return NULL;
}

/* The mount at dst and its index in mounts (-1: none). */
static json_t *mount_at(json_t *cfg, const char *dst, int *idx)
{
	json_t *x;
	size_t i;

	*idx = -1;
	json_array_foreach(json_object_get(cfg, "mounts"), i, x) {
		if (!strcmp(json_string_value(json_object_get(x, "destination")) ?: "", dst)) {
			*idx = (int)i;
			return x;
		}
	}
	return NULL;
}

static const char *str(json_t *o, const char *key)
{
	return json_string_value(json_object_get(o, key)) ?: "";
}

/* The array as one string, "a b c", for comparisons and messages. */
static const char *joined(json_t *arr)
{
	static char buf[4][1024];
	static int k;
	char *b = buf[k++ % 4];
	size_t off = 0;
	json_t *x;
	size_t i;

	b[0] = '\0';
	json_array_foreach(arr, i, x)
		off += (size_t)snprintf(b + off, off < sizeof(buf[0]) ? sizeof(buf[0]) - off : 0, "%s%s",
					i ? " " : "", json_string_value(x) ?: "?");
	return b;
}

static const char *arch_name(uint32_t a)
{
	switch (a) {
	case SCMP_ARCH_X86_64: return "SCMP_ARCH_X86_64";
	case SCMP_ARCH_X86: return "SCMP_ARCH_X86";
	case SCMP_ARCH_AARCH64: return "SCMP_ARCH_AARCH64";
	case SCMP_ARCH_ARM: return "SCMP_ARCH_ARM";
	case SCMP_ARCH_RISCV64: return "SCMP_ARCH_RISCV64";
	case SCMP_ARCH_PPC64LE: return "SCMP_ARCH_PPC64LE";
	case SCMP_ARCH_S390X: return "SCMP_ARCH_S390X";
	}
	return "unknown";
}

/* A syscall name libseccomp does not know is dropped from a profile (or fails it):
 * a deny-list with a misspelt name denies nothing. */
static const char *unknown_syscall(json_t *names)
{
	json_t *x;
	size_t i;

	json_array_foreach(names, i, x)
		if (seccomp_syscall_resolve_name(json_string_value(x)) == __NR_SCMP_ERROR)
			return json_string_value(x);
	return NULL;
}

static void test_bundle_shape(void)
{
	struct spec *s = spec_of("  command: [\"/bin/sh\", \"-c\"]\n  args: [\"true\"]\n");
	json_t *ic = json_pack("{s:[s]}", "Env", "PATH=/bin"), *cfg, *proc, *caps, *mnt, *ns;
	struct oci_bundle_req r = req_of(s, ic);
	struct lerr e = { { 0 } };
	static const char *const five[] = { "pid", "mount", "ipc", "uts", "cgroup" };
	static const char *const never[] = { "CAP_SYS_ADMIN", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_SYS_PTRACE",
					     "CAP_SYS_MODULE", "CAP_DAC_READ_SEARCH", "CAP_BPF", "CAP_SYS_RAWIO" };
	bool all_ns = true, none = true;
	int rc, idx;

	cfg = write_read(&r, &rc, &e);
	if (!tap_ok(rc == 0 && cfg && !strcmp(str(cfg, "ociVersion"), "1.0.2"),
		    "oci_bundle_write writes a config.json that parses (%s)", rc ? e.msg : "ok")) {
		spec_free(s);
		json_decref(ic);
		return;
	}
	for (size_t i = 0; i < ARRAY_SIZE(five); i++)
		all_ns &= ns_of(cfg, five[i]) && !json_object_get(ns_of(cfg, five[i]), "path");
	ns = ns_of(cfg, "network");
	tap_ok(all_ns && ns && !strcmp(str(ns, "path"), r.netns_path) &&
		       json_array_size(json_object_get(json_object_get(cfg, "linux"), "namespaces")) == 6,
	       "runc: new pid, mount, ipc, uts and cgroup namespaces, and the spawn's network namespace %s",
	       str(ns, "path"));

	proc = json_object_get(cfg, "process");
	caps = json_object_get(proc, "capabilities");
	for (size_t i = 0; i < ARRAY_SIZE(never); i++)
		none &= !has(json_object_get(caps, "bounding"), never[i]) &&
			!has(json_object_get(caps, "effective"), never[i]) &&
			!has(json_object_get(caps, "permitted"), never[i]);
	tap_ok(json_is_true(json_object_get(proc, "noNewPrivileges")) &&
		       json_is_false(json_object_get(proc, "terminal")),
	       "noNewPrivileges is set, no terminal");
	tap_ok(none && json_array_size(json_object_get(caps, "bounding")) == 9 &&
		       !strcmp(joined(json_object_get(caps, "bounding")), joined(json_object_get(caps, "effective"))) &&
		       !strcmp(joined(json_object_get(caps, "bounding")), joined(json_object_get(caps, "permitted"))) &&
		       json_array_size(json_object_get(caps, "ambient")) == 0 && !json_object_get(caps, "inheritable"),
	       "capabilities: the same 9 bounding, effective and permitted, none ambient, no admin, raw or ptrace: %s",
	       joined(json_object_get(caps, "bounding")));

	tap_ok(!strcmp(str(json_object_get(cfg, "root"), "path"), rootfs) &&
		       json_is_true(json_object_get(json_object_get(cfg, "root"), "readonly")) &&
		       !strcmp(str(cfg, "hostname"), "i-1"),
	       "the image's root, read-only; the hostname asked for");
	mnt = mount_at(cfg, "/tmp", &idx);
	tap_ok(mnt && !strcmp(str(mnt, "type"), "tmpfs") && has(json_object_get(mnt, "options"), "size=67108864") &&
		       has(json_object_get(mnt, "options"), "nosuid") && has(json_object_get(mnt, "options"), "nodev"),
	       "/tmp: a nosuid, nodev tmpfs of 64 MiB when no scratch size is given: %s",
	       joined(json_object_get(mnt, "options")));
	{
		json_t *lx = json_object_get(cfg, "linux"), *sys = mount_at(cfg, "/sys", &idx),
		       *cg = mount_at(cfg, "/sys/fs/cgroup", &idx);

		tap_ok(has(json_object_get(lx, "maskedPaths"), "/proc/kcore") &&
			       has(json_object_get(lx, "maskedPaths"), "/proc/keys") &&
			       has(json_object_get(lx, "maskedPaths"), "/sys/firmware") &&
			       has(json_object_get(lx, "maskedPaths"), "/proc/timer_list") &&
			       has(json_object_get(lx, "readonlyPaths"), "/proc/sys") &&
			       has(json_object_get(lx, "readonlyPaths"), "/proc/sysrq-trigger") &&
			       has(json_object_get(sys, "options"), "ro") && has(json_object_get(cg, "options"), "ro"),
		       "masked /proc/kcore, /proc/keys, /sys/firmware...; read-only /proc/sys, sysrq-trigger, /sys, "
		       "/sys/fs/cgroup");
		tap_ok(!strcmp(str(lx, "cgroupsPath"), "/lantern-test/i-1"),
		       "cgroupsPath names the instance cgroup lanternd prepared: %s", str(lx, "cgroupsPath"));
	}
	json_decref(cfg);

	/* runsc runs inside the namespace lanternd made (--network=host): no network
	 * namespace of its own; without a namespace (loopback) the runtime makes a new one */
	r.kind = OCI_RUNSC;
	cfg = write_read(&r, &rc, &e);
	ns = ns_of(cfg, "network");
	r.kind = OCI_RUNC;
	r.net = OCI_NET_LOOPBACK;
	{
		json_t *cfg2 = write_read(&r, &rc, &e), *ns2 = ns_of(cfg2, "network");

		tap_ok(cfg && !ns && ns_of(cfg, "pid") && ns2 && !json_object_get(ns2, "path"),
		       "runsc in the spawn's namespace: no network namespace entry; loopback: a new, empty one");
		json_decref(cfg2);
	}
	json_decref(cfg);

	r.net = OCI_NET_NETNS;
	r.scratch_bytes = 256ull << 20;
	cfg = write_read(&r, &rc, &e);
	mnt = mount_at(cfg, "/tmp", &idx);
	tap_ok(mnt && has(json_object_get(mnt, "options"), "size=268435456"),
	       "limits.scratch_size sizes the /tmp tmpfs: %s", joined(json_object_get(mnt, "options")));
	json_decref(cfg);
	spec_free(s);
	json_decref(ic);
}

static void test_bundle_seccomp(void)
{
	struct spec *s = spec_of("  command: [\"/bin/true\"]\n");
	json_t *ic = json_object(), *cfg, *sc, *rule, *deny_names = NULL, *allow_names;
	struct oci_bundle_req r = req_of(s, ic);
	struct lerr e = { { 0 } };
	static const char *const must_deny[] = { "bpf", "mount", "umount2", "ptrace", "unshare", "setns",
						 "keyctl", "kexec_load", "init_module", "finit_module",
						 "io_uring_setup", "open_by_handle_at", "userfaultfd",
						 "perf_event_open", "pivot_root", "reboot" };
	static const char *const must_allow[] = { "read", "write", "openat", "execve", "exit_group", "mmap",
						  "brk", "rt_sigreturn", "clone3", "futex", "socket", "connect" };
	bool denies = true, allows = true, overlap = false;
	const char *bad;
	int rc;

	cfg = write_read(&r, &rc, &e);
	sc = json_object_get(json_object_get(cfg, "linux"), "seccomp");
	rule = json_array_get(json_object_get(sc, "syscalls"), 0);
	for (size_t i = 0; i < ARRAY_SIZE(must_deny); i++)
		denies &= has(json_object_get(rule, "names"), must_deny[i]);
	tap_ok(!strcmp(str(sc, "defaultAction"), "SCMP_ACT_ALLOW") &&
		       json_array_size(json_object_get(sc, "syscalls")) == 1 &&
		       !strcmp(str(rule, "action"), "SCMP_ACT_ERRNO") &&
		       json_integer_value(json_object_get(rule, "errnoRet")) == EPERM && denies,
	       "default profile: allow, but bpf, mount, ptrace, unshare, setns, keyctl, kexec, modules, "
	       "io_uring, open_by_handle_at, userfaultfd, perf_event_open... fail with EPERM");
	deny_names = json_incref(json_object_get(rule, "names"));
	bad = unknown_syscall(deny_names);
	tap_ok(!bad, "every name on the deny-list is a syscall libseccomp knows%s%s", bad ? ": not " : "",
	       bad ? bad : "");
	tap_ok(has(json_object_get(sc, "architectures"), arch_name(seccomp_arch_native())),
	       "the profile covers this machine's architecture (%s): %s", arch_name(seccomp_arch_native()),
	       joined(json_object_get(sc, "architectures")));
	json_decref(cfg);

	r.seccomp_allowlist = true;
	cfg = write_read(&r, &rc, &e);
	sc = json_object_get(json_object_get(cfg, "linux"), "seccomp");
	rule = json_array_get(json_object_get(sc, "syscalls"), 0);
	allow_names = json_object_get(rule, "names");
	for (size_t i = 0; i < ARRAY_SIZE(must_allow); i++)
		allows &= has(allow_names, must_allow[i]);
	{
		json_t *x;
		size_t i;

		json_array_foreach(deny_names, i, x)
			overlap |= has(allow_names, json_string_value(x));
	}
	tap_ok(!strcmp(str(sc, "defaultAction"), "SCMP_ACT_ERRNO") &&
		       json_integer_value(json_object_get(sc, "defaultErrnoRet")) == ENOSYS &&
		       json_array_size(json_object_get(sc, "syscalls")) == 1 &&
		       !strcmp(str(rule, "action"), "SCMP_ACT_ALLOW") && allows && !overlap,
	       "untrusted: deny by default with ENOSYS, an allow-list with what programs need and nothing the "
	       "deny-list names");
	bad = unknown_syscall(allow_names);
	tap_ok(!bad && json_array_size(allow_names) > 100, "every name on the allow-list is a syscall libseccomp "
	       "knows (%zu names)%s%s", json_array_size(allow_names), bad ? ": not " : "", bad ? bad : "");
	json_decref(cfg);
	json_decref(deny_names);
	spec_free(s);
	json_decref(ic);
}

static void test_bundle_process(void)
{
	json_t *ic = json_pack("{s:[s,s,s], s:[s], s:[s], s:s, s:s}", "Env", "PATH=/img/bin", "A=img", "B=img",
			       "Entrypoint", "/entry", "Cmd", "default-arg", "User", "app", "WorkingDir", "/work");
	struct spec *s = spec_of("  env: {A: spec, C: spec}\n");
	struct oci_bundle_req r = req_of(s, ic);
	struct lerr e = { { 0 } };
	json_t *cfg, *proc;
	int rc;

	cfg = write_read(&r, &rc, &e);
	proc = json_object_get(cfg, "process");
	tap_ok(!strcmp(joined(json_object_get(proc, "env")),
		       "PATH=/img/bin A=spec B=img C=spec LANTERN_RUN_ID=r-1 LANTERN_INSTANCE_ID=i-1"),
	       "env: the image's, then spec.env (replacing the image's value in place), then lantern's last: %s",
	       joined(json_object_get(proc, "env")));
	tap_ok(json_integer_value(json_object_get(json_object_get(proc, "user"), "uid")) == 1000 &&
		       json_integer_value(json_object_get(json_object_get(proc, "user"), "gid")) == 1001 &&
		       !strcmp(str(proc, "cwd"), "/work") && !strcmp(joined(json_object_get(proc, "args")),
								     "/entry default-arg"),
	       "the image's User (looked up in its /etc/passwd: 1000:1001), WorkingDir, Entrypoint and Cmd");
	json_decref(cfg);
	spec_free(s);

	/* a workload cannot pose as lantern: its LANTERN_RUN_ID is lantern's */
	s = spec_of("  env: {LANTERN_RUN_ID: forged}\n");
	r = req_of(s, ic);
	cfg = write_read(&r, &rc, &e);
	{
		json_t *env = json_object_get(json_object_get(cfg, "process"), "env");
		int n = 0;
		json_t *x;
		size_t i;

		json_array_foreach(env, i, x)
			n += !strncmp(json_string_value(x), "LANTERN_RUN_ID=", 15);
		tap_ok(n == 1 && has(env, "LANTERN_RUN_ID=r-1"),
		       "a spec.env LANTERN_RUN_ID is overridden by lantern's: %s", joined(env));
	}
	json_decref(cfg);
	spec_free(s);

	/* Kubernetes' rule: command replaces Entrypoint, args replace Cmd */
	{
		static const struct {
			const char *fields, *want;
		} cases[] = {
			{ "  command: [\"/bin/x\"]\n  args: [\"a1\"]\n", "/bin/x a1" },
			{ "  args: [\"a1\", \"a2\"]\n", "/entry a1 a2" },
			{ "  command: [\"/bin/x\"]\n", "/bin/x" },
		};
		bool ok = true;
		char got[512] = "";

		for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
			s = spec_of(cases[i].fields);
			r = req_of(s, ic);
			cfg = write_read(&r, &rc, &e);
			snprintf(got + strlen(got), sizeof(got) - strlen(got), "[%s] ",
				 joined(json_object_get(json_object_get(cfg, "process"), "args")));
			ok &= rc == 0 && !strcmp(joined(json_object_get(json_object_get(cfg, "process"), "args")),
						 cases[i].want);
			json_decref(cfg);
			spec_free(s);
		}
		tap_ok(ok, "command replaces the Entrypoint, args replace the Cmd: %s", got);
	}

	/* users by number and by name:group; an image without Env still gets a PATH */
	{
		json_t *ic2 = json_pack("{s:s, s:[s]}", "User", "1234:5678", "Cmd", "/c"), *u;
		json_t *ic3 = json_pack("{s:s, s:[s]}", "User", "app:staff", "Cmd", "/c");
		bool ok;

		s = spec_of("");
		r = req_of(s, ic2);
		cfg = write_read(&r, &rc, &e);
		u = json_object_get(json_object_get(cfg, "process"), "user");
		ok = rc == 0 && json_integer_value(json_object_get(u, "uid")) == 1234 &&
		     json_integer_value(json_object_get(u, "gid")) == 5678 &&
		     !strcmp(str(json_object_get(cfg, "process"), "cwd"), "/") &&
		     !strncmp(joined(json_object_get(json_object_get(cfg, "process"), "env")), "PATH=/", 6);
		json_decref(cfg);
		r.image_config = ic3;
		cfg = write_read(&r, &rc, &e);
		u = json_object_get(json_object_get(cfg, "process"), "user");
		ok &= rc == 0 && json_integer_value(json_object_get(u, "uid")) == 1000 &&
		      json_integer_value(json_object_get(u, "gid")) == 50;
		tap_ok(ok, "User \"1234:5678\" and \"app:staff\" (group from /etc/group: 50); cwd \"/\" and a PATH by "
		       "default");
		json_decref(cfg);
		spec_free(s);
		json_decref(ic2);
		json_decref(ic3);
	}
	json_decref(ic);
}

static void test_bundle_mounts_and_refusals(void)
{
	struct spec *s = spec_of("  command: [\"/bin/true\"]\n");
	json_t *ic = json_object(), *cfg, *h, *sec, *run;
	struct oci_bundle_req r = req_of(s, ic);
	struct lerr e = { { 0 } };
	int rc, ih, isec, irun;

	struct oci_bind hb = { "/var/lib/lantern/runs/r-1/harness", "/run/lantern/harness", false };
	struct oci_bind ro = { "/var/lib/lantern/runs/r-1/identity", "/run/lantern/identity", true };
	struct oci_bind both[] = { hb, ro }, bad = { "/etc", "/etc", false }, up = { "/etc", "/run/lantern/../../etc", false };

	r.binds = both;
	r.n_binds = 2;
	cfg = write_read(&r, &rc, &e);
	run = mount_at(cfg, "/run/lantern", &irun);
	h = mount_at(cfg, "/run/lantern/harness", &ih);
	sec = mount_at(cfg, "/run/lantern/secrets", &isec);
	/* a mount on /run/lantern after the others would hide them */
	tap_ok(run && h && sec && irun < ih && irun < isec && !strcmp(str(h, "type"), "bind") &&
		       !strcmp(str(h, "source"), hb.source) &&
		       !strcmp(joined(json_object_get(h, "options")), "bind nosuid nodev noexec") &&
		       !strcmp(str(sec, "type"), "tmpfs") && has(json_object_get(sec, "options"), "mode=700"),
	       "the harness directory is bind-mounted at /run/lantern/harness (nosuid, nodev, noexec), "
	       "secrets an empty 0700 tmpfs, both after the /run/lantern tmpfs");
	h = mount_at(cfg, "/run/lantern/identity", &ih);
	tap_ok(h && !strcmp(joined(json_object_get(h, "options")), "bind ro nosuid nodev noexec"),
	       "a read-only bind is mounted ro (%s)", h ? joined(json_object_get(h, "options")) : "missing");
	json_decref(cfg);
	r.binds = NULL;
	r.n_binds = 0;
	cfg = write_read(&r, &rc, &e);
	tap_ok(cfg && !mount_at(cfg, "/run/lantern/harness", &ih) && mount_at(cfg, "/run/lantern/secrets", &isec),
	       "a run without a harness socket gets no harness mount");
	json_decref(cfg);
	r.binds = &bad;
	r.n_binds = 1;
	cfg = write_read(&r, &rc, &e);
	tap_ok(rc == -EINVAL && !cfg && strstr(e.msg, "/etc"), "a bind mount outside /run/lantern is refused: %s", e.msg);
	json_decref(cfg);
	r.binds = &up;
	cfg = write_read(&r, &rc, &e);
	tap_ok(rc == -EINVAL && !cfg, "a bind mount that climbs out of /run/lantern with .. is refused: %s", e.msg);
	json_decref(cfg);
	r.binds = NULL;
	r.n_binds = 0;
	spec_free(s);

	/* what would run as someone else, or run nothing, writes nothing */
	s = spec_of("");
	r = req_of(s, ic);
	cfg = write_read(&r, &rc, &e);
	tap_ok(rc == -EINVAL && !cfg && strstr(e.msg, "Entrypoint/Cmd"),
	       "neither command nor Entrypoint/Cmd: refused, nothing written: %s", e.msg);
	spec_free(s);
	s = spec_of("  command: [\"/bin/true\"]\n");
	{
		json_t *ic2 = json_pack("{s:s}", "User", "ghost");

		r = req_of(s, ic2);
		cfg = write_read(&r, &rc, &e);
		tap_ok(rc == -ENOENT && !cfg && strstr(e.msg, "\"ghost\"") && strstr(e.msg, "/etc/passwd"),
		       "an image user not in the image's /etc/passwd is refused (never root): %s", e.msg);
		json_decref(ic2);
	}
	r = req_of(s, ic);
	r.dir = "/nonexistent/lantern-bundle";
	rc = oci_bundle_write(&r, &e);
	tap_ok(rc < 0 && strstr(e.msg, "/nonexistent/lantern-bundle/config.json"),
	       "a bundle directory that cannot be written: an error naming the file: %s", e.msg);
	spec_free(s);
	json_decref(ic);
}

/* ---- CNI ---- */

static struct tl_net net;
static struct oci_cni cni;
static char decoys[2][64];

static void cni_cleanup(void)
{
	static const char *const insts[] = { "a", "b", "f" };

	for (size_t i = 0; i < ARRAY_SIZE(insts); i++)
		oci_cni_del(&cni, insts[i]);
	for (size_t i = 0; i < ARRAY_SIZE(decoys); i++)
		if (decoys[i][0])
			tl_sh(NULL, NULL, "ip netns delete %s 2>/dev/null", decoys[i]);
	tl_sh(NULL, NULL, "ip link del %s 2>/dev/null", net.bridge);
}

static void remove_dir(void)
{
	util_rm_rf(dir);
}

/* The number a shell command prints first (-1 if none). */
static int __attribute__((format(printf, 1, 2))) count(const char *fmt, ...)
{
	char cmd[1024], *out = NULL;
	va_list ap;
	int n;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	tl_sh(&out, NULL, "%s", cmd);
	n = out && *out >= '0' && *out <= '9' ? atoi(out) : -1;
	free(out);
	return n;
}

static int veths(void)
{
	return count("ip -o link show master %s 2>/dev/null | grep -c veth", net.bridge);
}

/* Polls for the number of veths on the bridge: the kernel removes the host end of a
 * pair whose namespace went away a little after the namespace. */
static bool veths_become(int want)
{
	for (uint64_t end = tl_ms() + 5000;; usleep(50000)) {
		if (veths() == want)
			return true;
		if (tl_ms() >= end)
			return false;
	}
}

/* connect() from inside the namespace at nspath to addr:port; returns 0 or the errno. */
static int connect_from(const char *nspath, const char *addr, uint16_t port)
{
	pid_t pid = fork();
	int st;

	if (pid == 0) {
		struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
		int nsfd = open(nspath, O_RDONLY | O_CLOEXEC), fd;

		if (nsfd < 0 || setns(nsfd, CLONE_NEWNET) < 0)
			_exit(200);
		inet_pton(AF_INET, addr, &a.sin_addr);
		fd = socket(AF_INET, SOCK_STREAM, 0);
		_exit(connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0 ? 0 : errno);
	}
	waitpid(pid, &st, 0);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 255;
}

static bool list_is(const char *want)
{
	char **v = NULL, got[256] = "";
	size_t n = 0;
	bool ok;

	oci_cni_list(&cni, &v, &n);
	/* readdir order: sort the two-or-fewer names we expect */
	if (n == 2 && strcmp(v[0], v[1]) > 0) {
		char *t = v[0];
		v[0] = v[1];
		v[1] = t;
	}
	for (size_t i = 0; i < n; i++) {
		snprintf(got + strlen(got), sizeof(got) - strlen(got), "%s%s", i ? " " : "", v[i]);
		free(v[i]);
	}
	free(v);
	ok = !strcmp(got, want);
	if (!ok)
		tap_diag("oci_cni_list: \"%s\", want \"%s\"", got, want);
	return ok;
}

static void test_cni(void)
{
	char nsa[PATH_MAX], nsb[PATH_MAX], nsf[PATH_MAX], ipa[64] = "", gwa[64] = "", ipb[64] = "", gwb[64] = "";
	char prefix[24], lease[PATH_MAX + 64], name_a[128];
	struct lerr e = { { 0 } };
	struct stat st;
	uint16_t port = 0;
	int rc, lfd;

	tl_net_init(&net, "lu", 100);
	snprintf(cni.plugin_dir, sizeof(cni.plugin_dir), "/usr/lib/cni");
	snprintf(cni.data_dir, sizeof(cni.data_dir), "%s/cni", dir);
	snprintf(cni.bridge, sizeof(cni.bridge), "%s", net.bridge);
	snprintf(cni.subnet, sizeof(cni.subnet), "%s", net.subnet);
	snprintf(cni.netns_prefix, sizeof(cni.netns_prefix), "lantern-test-ociu-%d-", (int)getpid());
	snprintf(decoys[0], sizeof(decoys[0]), "lantern-test-ociu-%dx", (int)getpid());
	snprintf(decoys[1], sizeof(decoys[1]), "%s", cni.netns_prefix);
	tl_on_exit(cni_cleanup);
	snprintf(prefix, sizeof(prefix), "10.%u.%u.", net.a, net.b);

	rc = oci_cni_add(&cni, "a", nsa, sizeof(nsa), ipa, gwa, &e);
	snprintf(name_a, sizeof(name_a), "%sa", cni.netns_prefix);
	if (!tap_ok(rc == 0 && !strncmp(nsa, "/run/netns/", 11) && !strcmp(nsa + 11, name_a) && stat(nsa, &st) == 0,
		    "oci_cni_add makes the namespace %s: %s", nsa, rc ? tl_oneline(e.msg) : "ok")) {
		for (int i = 1; i < CNI_POINTS; i++)
			tap_ok(false, "cni point %d (no namespace)", i + 1);
		return;
	}
	{
		char ip_only[64];

		snprintf(ip_only, sizeof(ip_only), "%.*s", (int)strcspn(ipa, "/"), ipa);
		tap_ok(!strncmp(ipa, prefix, strlen(prefix)) && !strcmp(ipa + strlen(ip_only), "/24") &&
			       strcmp(ip_only, net.gw) && !strcmp(gwa, net.gw),
		       "it reports the spawn's address in %s (%s) and the bridge's as gateway (%s)", net.subnet, ipa,
		       gwa);
		tap_ok(count("ip -n %s -o link show lo | grep -c 'LOOPBACK,UP'", name_a) == 1 &&
			       count("ip -n %s -o addr show dev eth0 | grep -c ' %s/24 '", name_a, ip_only) == 1 &&
			       count("ip -n %s route | grep -c '^default'", name_a) == 0,
		       "inside: lo is up, eth0 has %s, there is no default route", ipa);
		snprintf(lease, sizeof(lease), "%s/lantern/%s", cni.data_dir, ip_only);
	}
	tap_ok(veths() == 1 && count("ip -o addr show dev %s | grep -c ' %s/24 '", net.bridge, net.gw) == 1 &&
		       tl_wait_file_text(lease, name_a, 0),
	       "outside: one veth on bridge %s, which holds %s; the lease %s names the namespace", net.bridge,
	       net.gw, lease);

	lfd = tl_tcp_listen(net.gw, &port);
	rc = connect_from(nsa, net.gw, port);
	tap_ok(lfd >= 0 && rc == 0, "from inside, a connect to the gateway %s:%u succeeds (%s)", net.gw, port,
	       rc ? strerror(rc) : "ok");
	if (lfd >= 0)
		close(lfd);
	/* the address outside the subnet is this machine's own: were there a route out,
	 * the connect would still not leave the machine */
	tl_sh(NULL, NULL, "ip addr add %s/32 dev %s", OUTSIDE, net.bridge);
	rc = connect_from(nsa, OUTSIDE, 9);
	tap_ok(rc == ENETUNREACH, "an address outside the subnet is unreachable: %s", strerror(rc));

	/* a name already in use is refused and the namespace that has it is left alone */
	rc = oci_cni_add(&cni, "a", nsb, sizeof(nsb), ipb, gwb, &e);
	tap_ok(rc < 0 && strstr(e.msg, name_a) && stat(nsa, &st) == 0 && veths() == 1 &&
		       connect_from(nsa, OUTSIDE, 9) == ENETUNREACH &&
		       count("ip -n %s -o addr show dev eth0 | grep -c ' %s'", name_a, prefix) == 1,
	       "adding a namespace that exists is refused and leaves the one in use intact: %s", tl_oneline(e.msg));

	rc = oci_cni_add(&cni, "b", nsb, sizeof(nsb), ipb, gwb, &e);
	for (size_t i = 0; i < ARRAY_SIZE(decoys); i++)
		tl_sh(NULL, NULL, "ip netns add %s", decoys[i]);
	tap_ok(rc == 0 && strcmp(ipa, ipb) && veths() == 2 && list_is("a b"),
	       "a second spawn gets another address (%s); oci_cni_list finds exactly a and b, not %s or %s", ipb,
	       decoys[0], decoys[1]);

	rc = oci_cni_del(&cni, "a");
	tap_ok(rc == 0 && stat(nsa, &st) < 0 && access(lease, F_OK) < 0 && veths_become(1) &&
		       count("ip netns list | grep -c '^%s'", name_a) == 0 && list_is("b"),
	       "oci_cni_del removes a's veth, lease and namespace; b stays");
	tap_ok(oci_cni_del(&cni, "a") == 0, "deleting it again is fine");

	/* IPAM fails after the bridge plugin made the veth: the add undoes everything */
	{
		struct oci_cni bad = cni;
		char file[PATH_MAX];

		snprintf(file, sizeof(file), "%s/not-a-dir", dir);
		tl_sh(NULL, NULL, "touch %s", file);
		snprintf(bad.data_dir, sizeof(bad.data_dir), "%s/sub", file);
		rc = oci_cni_add(&bad, "f", nsf, sizeof(nsf), ipb, gwb, &e);
		tap_ok(rc < 0 && strstr(e.msg, "CNI bridge") && strstr(e.msg, net.bridge) && stat(nsf, &st) < 0 &&
			       veths_become(1) && list_is("b"),
		       "an add that fails leaves no namespace and no veth behind: %s", tl_oneline(e.msg));
	}
	oci_cni_del(&cni, "b");
}

/* An image root with the users and groups the bundle looks up. */
static bool make_rootfs(void)
{
	static const char *const files[][2] = {
		{ "etc/passwd", "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001:app:/home/app:/bin/sh\n" },
		{ "etc/group", "root:x:0:\nstaff:x:50:app\n" },
	};
	char path[256];

	snprintf(path, sizeof(path), "%s/etc", rootfs);
	if (util_mkdir_p(path, 0755) < 0 || util_mkdir_p(bundle, 0700) < 0)
		return false;
	for (size_t i = 0; i < ARRAY_SIZE(files); i++) {
		snprintf(path, sizeof(path), "%s/%s", rootfs, files[i][0]);
		if (util_write_file_replace(path, files[i][1], strlen(files[i][1])) < 0)
			return false;
	}
	return true;
}

int main(void)
{
	tap_plan(BUNDLE_POINTS + CNI_POINTS);
	util_tmp_template(dir, sizeof(dir), "/tmp/lantern-test-ociu-");
	if (mkdtemp(dir))
		tl_on_exit(remove_dir);
	snprintf(rootfs, sizeof(rootfs), "%s/rootfs", dir);
	snprintf(bundle, sizeof(bundle), "%s/bundle", dir);
	if (!make_rootfs()) {
		for (int i = 0; i < BUNDLE_POINTS + CNI_POINTS; i++)
			tap_ok(false, "oci point %d (no temporary directory)", i + 1);
		return tap_done();
	}
	test_bundle_shape();
	test_bundle_seccomp();
	test_bundle_process();
	test_bundle_mounts_and_refusals();

	if (geteuid() != 0 || access("/usr/lib/cni/bridge", X_OK) || access("/usr/sbin/ip", X_OK)) {
		for (int i = 0; i < CNI_POINTS; i++)
			tap_skip(geteuid() ? "not root" : "CNI plugins or ip missing (make deps)", "cni point %d", i + 1);
		return tap_done();
	}
	test_cni();
	return tap_done();
}
