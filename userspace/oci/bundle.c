/* bundle.c: the OCI runtime spec (config.json) lanternd writes for a spawn, and the
 * seccomp profiles it carries.
 *
 * The process: command and args from the spec (Kubernetes' rule: command replaces the
 * image's Entrypoint, args replace its Cmd), user and working directory from the image
 * config, environment in the order image, spec.env, LANTERN_* (later wins). */
#include "lantern/oci.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lantern/image.h"

/* Syscalls no workload needs and a kernel exploit or an escape often does (the ones
 * Docker's default profile leaves out, plus the new mount API and io_uring). The
 * default profile refuses them with EPERM. */
static const char *const denied[] = {
	"acct", "add_key", "bpf", "clock_adjtime", "clock_settime", "create_module",
	"delete_module", "finit_module", "fsconfig", "fsmount", "fsopen", "fspick",
	"get_kernel_syms", "init_module", "io_uring_enter", "io_uring_register",
	"io_uring_setup", "ioperm", "iopl", "kcmp", "kexec_file_load", "kexec_load", "keyctl",
	"lookup_dcookie", "mount", "mount_setattr", "move_mount", "name_to_handle_at",
	"nfsservctl", "open_by_handle_at", "open_tree", "perf_event_open", "pivot_root",
	"process_vm_readv", "process_vm_writev", "ptrace", "query_module", "quotactl",
	"quotactl_fd", "reboot", "request_key", "setns", "settimeofday", "stime", "swapoff",
	"swapon", "sysfs", "_sysctl", "umount", "umount2", "unshare", "uselib", "userfaultfd",
	"ustat", "vm86", "vm86old",
};

/* What an untrusted workload may call; everything else fails with ENOSYS, as on a
 * kernel that lacks the call, so programs fall back rather than crash. */
static const char *const allowed[] = {
	"accept", "accept4", "access", "alarm", "arch_prctl", "bind", "brk", "capget",
	"capset", "chdir", "chmod", "chown", "clock_getres", "clock_gettime", "clock_nanosleep",
	"clone", "clone3", "close", "close_range", "connect", "copy_file_range", "creat", "dup",
	"dup2", "dup3", "epoll_create", "epoll_create1", "epoll_ctl", "epoll_pwait",
	"epoll_pwait2", "epoll_wait", "eventfd", "eventfd2", "execve", "execveat", "exit",
	"exit_group", "faccessat", "faccessat2", "fadvise64", "fallocate", "fchdir", "fchmod",
	"fchmodat", "fchown", "fchownat", "fcntl", "fdatasync", "fgetxattr", "flistxattr",
	"flock", "fork", "fstat", "fstatfs", "fsync", "ftruncate", "futex", "futex_waitv",
	"getcpu", "getcwd", "getdents", "getdents64", "getegid", "geteuid", "getgid",
	"getgroups", "getitimer", "getpeername", "getpgid", "getpgrp", "getpid", "getppid",
	"getpriority", "getrandom", "getresgid", "getresuid", "getrlimit", "getrusage",
	"getsid", "getsockname", "getsockopt", "gettid", "gettimeofday", "getuid", "getxattr",
	"inotify_add_watch", "inotify_init", "inotify_init1", "inotify_rm_watch", "ioctl",
	"kill", "lchown", "lgetxattr", "link", "linkat", "listen", "listxattr", "llistxattr",
	"lseek", "lstat", "madvise", "membarrier", "memfd_create", "mincore", "mkdir",
	"mkdirat", "mknod", "mknodat", "mlock", "mlock2", "mlockall", "mmap", "mprotect",
	"mremap", "msync", "munlock", "munlockall", "munmap", "nanosleep", "newfstatat", "open",
	"openat", "openat2", "pause", "pipe", "pipe2", "poll", "ppoll", "prctl", "pread64",
	"preadv", "preadv2", "prlimit64", "pselect6", "pwrite64", "pwritev", "pwritev2", "read",
	"readahead", "readlink", "readlinkat", "readv", "recvfrom", "recvmmsg", "recvmsg",
	"rename", "renameat", "renameat2", "restart_syscall", "rmdir", "rseq", "rt_sigaction",
	"rt_sigpending", "rt_sigprocmask", "rt_sigqueueinfo", "rt_sigreturn", "rt_sigsuspend",
	"rt_sigtimedwait", "rt_tgsigqueueinfo", "sched_getaffinity", "sched_getparam",
	"sched_get_priority_max", "sched_get_priority_min", "sched_getscheduler",
	"sched_yield", "select", "sendfile", "sendmmsg", "sendmsg", "sendto", "set_robust_list",
	"set_tid_address", "setgid", "setgroups", "setitimer", "setpgid", "setpriority",
	"setregid", "setresgid", "setresuid", "setreuid", "setsid", "setsockopt", "setuid",
	"shutdown", "sigaltstack", "socket", "socketpair", "splice", "stat", "statfs", "statx",
	"symlink", "symlinkat", "sync", "sync_file_range", "syncfs", "sysinfo", "tee", "tgkill",
	"time", "timer_create", "timer_delete", "timer_getoverrun", "timer_gettime",
	"timer_settime", "timerfd_create", "timerfd_gettime", "timerfd_settime", "tkill",
	"truncate", "umask", "uname", "unlink", "unlinkat", "utime", "utimensat", "utimes",
	"vfork", "wait4", "waitid", "write", "writev",
};

static const char *const caps[] = {
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_SETGID",
	"CAP_SETUID", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
};

/* runc's defaults (libcontainer/specconv). */
static const char *const masked[] = {
	"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
	"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
	"/sys/firmware",
};
static const char *const readonly[] = {
	"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
};

static json_t *strarr(const char *const *v, size_t n)
{
	json_t *a = json_array();

	for (size_t i = 0; i < n; i++)
		json_array_append_new(a, json_string(v[i]));
	return a;
}

#define STRARR(v) strarr(v, sizeof(v) / sizeof((v)[0]))

json_t *oci_seccomp_profile(bool allowlist)
{
	json_t *arches = json_pack("[s,s,s]", "SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32");

	if (allowlist)
		return json_pack("{s:s, s:i, s:o, s:[{s:o, s:s}]}", "defaultAction", "SCMP_ACT_ERRNO",
				 "defaultErrnoRet", ENOSYS, "architectures", arches, "syscalls",
				 "names", STRARR(allowed), "action", "SCMP_ACT_ALLOW");
	return json_pack("{s:s, s:o, s:[{s:o, s:s, s:i}]}", "defaultAction", "SCMP_ACT_ALLOW",
			 "architectures", arches, "syscalls", "names", STRARR(denied), "action",
			 "SCMP_ACT_ERRNO", "errnoRet", EPERM);
}

/* Bigger than any real passwd or group file; the image's own bytes, read by lanternd. */
#define ID_FILE_MAX (1u << 20)

/* "name" or "uid[:gid]" of the image config, looked up in the image's /etc/passwd
 * and /etc/group. Unknown names are an error: guessing root would be a downgrade. The
 * file is the image's: read beneath its root (a symlink cannot lead to the host's
 * file), a regular file only (a FIFO or /dev/zero cannot stall or flood lanternd),
 * and bounded. -ENOENT, or the reason it cannot be read. */
static int lookup_id(const char *rootfs, const char *file, const char *name, unsigned *id,
		     unsigned *gid)
{
	char path[32], *buf, *line, *save = NULL;
	int found = -ENOENT, err;

	snprintf(path, sizeof(path), "etc/%s", file);
	if ((err = image_root_read(rootfs, path, ID_FILE_MAX, &buf, NULL)) < 0)
		return err;
	for (line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *f[4] = { 0 }, *s = line;

		for (int i = 0; i < 4 && s; i++) {
			f[i] = s;
			s = strchr(s, ':');
			if (s)
				*s++ = '\0';
		}
		if (f[0] && f[2] && !strcmp(f[0], name)) {
			*id = (unsigned)strtoul(f[2], NULL, 10);
			if (gid && f[3])
				*gid = (unsigned)strtoul(f[3], NULL, 10);
			found = 0;
			break;
		}
	}
	free(buf);
	return found;
}

static int id_error(struct lerr *e, const char *kind, const char *name, const char *file, int err)
{
	if (err == -ENOENT)
		return lerr_set(e, ENOENT, "spawn: image %s \"%s\" is not in the image's /etc/%s", kind, name, file);
	return lerr_set(e, -err, "spawn: image %s \"%s\": the image's /etc/%s %s: refused", kind, name, file,
			err == -EPERM ? "is not a regular file" :
			err == -EFBIG ? "is larger than 1 MiB" :
			err == -ELOOP ? "is a symlink loop" :
			err == -EXDEV ? "leads out of the image" : strerror(-err));
}

static int parse_user(const char *rootfs, const char *user, unsigned *uid, unsigned *gid,
		      struct lerr *e)
{
	char u[256], *colon, *end;
	int err;

	*uid = *gid = 0;
	if (!user || !*user)
		return 0;
	snprintf(u, sizeof(u), "%s", user);
	colon = strchr(u, ':');
	if (colon)
		*colon++ = '\0';
	*uid = (unsigned)strtoul(u, &end, 10);
	if ((*end || !*u) && (err = lookup_id(rootfs, "passwd", u, uid, gid)) < 0)
		return id_error(e, "user", u, "passwd", err);
	if (colon && *colon) {
		*gid = (unsigned)strtoul(colon, &end, 10);
		if (*end && (err = lookup_id(rootfs, "group", colon, gid, NULL)) < 0)
			return id_error(e, "group", colon, "group", err);
	}
	return 0;
}

/* Sets KEY=VALUE in env, replacing an earlier KEY. */
static void env_set(json_t *env, const char *kv)
{
	const char *eq = strchr(kv, '=');
	size_t klen = eq ? (size_t)(eq - kv) + 1 : strlen(kv);
	json_t *x;
	size_t i;

	json_array_foreach(env, i, x) {
		if (!strncmp(json_string_value(x), kv, klen)) {
			json_array_set_new(env, i, json_string(kv));
			return;
		}
	}
	json_array_append_new(env, json_string(kv));
}

static json_t *mount(const char *dst, const char *type, const char *src, json_t *opts)
{
	return json_pack("{s:s, s:s, s:s, s:o}", "destination", dst, "type", type, "source", src,
			 "options", opts);
}

static int write_new(const char *path, const char *txt)
{
	FILE *f = fopen(path, "we");
	int err = 0;

	if (!f)
		return -errno;
	if (fputs(txt, f) == EOF)
		err = -EIO;
	if (fclose(f) == EOF && !err)
		err = -EIO;
	return err;
}

int oci_bundle_write(const struct oci_bundle_req *r, struct lerr *e)
{
	const struct spec *s = r->spec;
	json_t *ic = r->image_config, *args = json_array(), *env = json_array(), *x, *cfg, *mounts = NULL, *ns;
	json_t *entry = json_object_get(ic, "Entrypoint"), *cmd = json_object_get(ic, "Cmd");
	unsigned uid, gid;
	char path[PATH_MAX + 16], size_opt[64], *txt;
	const char *cwd = json_string_value(json_object_get(ic, "WorkingDir"));
	size_t i;
	int err;

	if ((err = parse_user(r->rootfs, json_string_value(json_object_get(ic, "User")), &uid, &gid, e)) < 0)
		goto fail;
	if (s->n_command) {
		for (i = 0; i < s->n_command; i++)
			json_array_append_new(args, json_string(s->command[i]));
	} else {
		json_array_extend(args, json_is_array(entry) ? entry : json_array());
	}
	if (s->n_args || s->n_command) {
		for (i = 0; i < s->n_args; i++)
			json_array_append_new(args, json_string(s->args[i]));
	} else if (json_is_array(cmd)) {
		json_array_extend(args, cmd);
	}
	if (!json_array_size(args)) {
		err = lerr_set(e, EINVAL, "spawn: refused: neither spec.command nor the image's "
			       "Entrypoint/Cmd says what to run");
		goto fail;
	}
	json_array_foreach(json_object_get(ic, "Env"), i, x)
		if (json_is_string(x))
			env_set(env, json_string_value(x));
	if (!json_array_size(env))
		env_set(env, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
	for (i = 0; i < s->n_env; i++) {
		char kv[8192];
		snprintf(kv, sizeof(kv), "%s=%s", s->env[i].key, s->env[i].value);
		env_set(env, kv);
	}
	for (i = 0; r->lantern_env && r->lantern_env[i]; i++)
		env_set(env, r->lantern_env[i]);

	snprintf(size_opt, sizeof(size_opt), "size=%llu",
		 (unsigned long long)(r->scratch_bytes ? r->scratch_bytes : 64ull << 20));
	mounts = json_array();
	json_array_append_new(mounts, mount("/proc", "proc", "proc", json_pack("[s,s,s]", "nosuid", "noexec", "nodev")));
	json_array_append_new(mounts, mount("/dev", "tmpfs", "tmpfs",
					    json_pack("[s,s,s,s]", "nosuid", "strictatime", "mode=755", "size=65536k")));
	json_array_append_new(mounts, mount("/dev/pts", "devpts", "devpts",
					    json_pack("[s,s,s,s,s]", "nosuid", "noexec", "newinstance",
						      "ptmxmode=0666", "mode=0620")));
	json_array_append_new(mounts, mount("/dev/shm", "tmpfs", "shm",
					    json_pack("[s,s,s,s,s]", "nosuid", "noexec", "nodev", "mode=1777", "size=65536k")));
	json_array_append_new(mounts, mount("/dev/mqueue", "mqueue", "mqueue", json_pack("[s,s,s]", "nosuid", "noexec", "nodev")));
	json_array_append_new(mounts, mount("/sys", "sysfs", "sysfs", json_pack("[s,s,s,s]", "nosuid", "noexec", "nodev", "ro")));
	json_array_append_new(mounts, mount("/sys/fs/cgroup", "cgroup", "cgroup",
					    json_pack("[s,s,s,s,s]", "nosuid", "noexec", "nodev", "relatime", "ro")));
	/* the spawn's writable scratch: its own tmpfs, capped at limits.scratch_size */
	json_array_append_new(mounts, mount("/tmp", "tmpfs", "tmpfs",
					    json_pack("[s,s,s,s]", "nosuid", "nodev", "mode=1777", size_opt)));
	json_array_append_new(mounts, mount("/run/lantern", "tmpfs", "tmpfs",
					    json_pack("[s,s,s,s]", "nosuid", "nodev", "mode=755", "size=64k")));
	for (i = 0; i < r->n_binds; i++) {
		if (strncmp(r->binds[i].dest, "/run/lantern/", 13) || strstr(r->binds[i].dest, "..")) {
			err = lerr_set(e, EINVAL, "spawn: bind mount at %s: only below /run/lantern/",
				       r->binds[i].dest);
			goto fail;
		}
		json_array_append_new(mounts, mount(r->binds[i].dest, "bind", r->binds[i].source,
						    r->binds[i].read_only ?
						    json_pack("[s,s,s,s,s]", "bind", "ro", "nosuid", "nodev", "noexec") :
						    json_pack("[s,s,s,s]", "bind", "nosuid", "nodev", "noexec")));
	}
	json_array_append_new(mounts, mount("/run/lantern/secrets", "tmpfs", "tmpfs",
					    json_pack("[s,s,s,s,s]", "nosuid", "nodev", "noexec", "mode=700", "size=1m")));

	ns = json_pack("[{s:s},{s:s},{s:s},{s:s},{s:s}]", "type", "pid", "type", "mount", "type", "ipc",
		       "type", "uts", "type", "cgroup");
	if (r->kind == OCI_RUNSC && r->net == OCI_NET_NETNS) {
		/* runsc --network=host inside the namespace lanternd made: the Sentry's own
		 * host sockets carry the traffic, so the cgroup socket hooks judge it */
	} else if (r->net == OCI_NET_NETNS) {
		json_array_append_new(ns, json_pack("{s:s, s:s}", "type", "network", "path", r->netns_path));
	} else {
		json_array_append_new(ns, json_pack("{s:s}", "type", "network"));
	}

	cfg = json_pack("{s:s, s:{s:b, s:{s:i, s:i}, s:o, s:o, s:s, s:b, s:{s:o, s:o, s:o, s:o}},"
			" s:{s:s, s:b}, s:s, s:o,"
			" s:{s:s, s:o, s:o, s:o, s:o}}",
			"ociVersion", "1.0.2",
			"process", "terminal", 0, "user", "uid", (int)uid, "gid", (int)gid,
			"args", args, "env", env, "cwd", cwd && *cwd ? cwd : "/",
			"noNewPrivileges", 1,
			"capabilities", "bounding", STRARR(caps), "effective", STRARR(caps),
			"permitted", STRARR(caps), "ambient", json_array(),
			"root", "path", r->rootfs, "readonly", 1,
			"hostname", r->hostname ? r->hostname : "lantern",
			"mounts", mounts,
			"linux", "cgroupsPath", r->cgroups_path, "namespaces", ns,
			"maskedPaths", STRARR(masked), "readonlyPaths", STRARR(readonly),
			"seccomp", oci_seccomp_profile(r->seccomp_allowlist));
	if (!cfg) {
		err = lerr_set(e, ENOMEM, "spawn: config.json for %s: cannot build", r->dir);
		goto out;
	}
	txt = json_dumps(cfg, JSON_INDENT(1) | JSON_SORT_KEYS);
	json_decref(cfg);
	snprintf(path, sizeof(path), "%s/config.json", r->dir);
	/* no fsync: a bundle does not outlive a crash of its spawn in any useful way */
	err = txt ? write_new(path, txt) : -ENOMEM;
	free(txt);
	if (err < 0)
		lerr_set(e, err, "spawn: write %s: %s", path, strerror(-err));
	return err;
fail:
	json_decref(mounts);
	json_decref(args);
	json_decref(env);
out:
	return err;
}
