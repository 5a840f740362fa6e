/* oci.h: OCI runtime handlers, the bundles lanternd hands them, and the CNI network
 * they join.
 *
 * A handler is an OCI runtime (runc, runsc, a Kata runtime) probed at start: it is
 * advertised only if its binary is installed AND answers (`--version`, and `list`
 * against its state root). Isolation classes map to handlers in the node's config;
 * a class whose handler is not advertised is refused, never run on something weaker.
 *
 * The bundle (config.json) gives the workload its own pid, mount, ipc, uts, cgroup
 * and network namespaces, no_new_privileges, a minimal capability set, a seccomp
 * profile (deny-list by default, allow-list for untrusted), a read-only root (the
 * image's shared unpacked root) with a writable tmpfs scratch at /tmp, runc's masked
 * and read-only /proc and /sys paths, /run/lantern (a small tmpfs holding the run's
 * node directories a run shows its sandbox, such as the harness socket's) and an empty /run/lantern/secrets tmpfs. cgroupsPath names the
 * instance cgroup lanternd prepared, so the runtime joins it instead of making one. */
#ifndef LANTERN_OCI_H
#define LANTERN_OCI_H

#include <jansson.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>

#include "lantern/spec.h"
#include "lantern/util.h"

enum oci_kind { OCI_RUNC, OCI_RUNSC, OCI_KATA };

struct oci_handler {
	char name[32];            /* "runc", "runsc", "kata" */
	enum oci_kind kind;
	char bin[PATH_MAX];       /* resolved binary, when found */
	char root[PATH_MAX];      /* the runtime's state root (--root), per lanternd */
	char version[128];        /* first line of --version */
	bool available;
	char missing[256];        /* why not available */
};

/* Isolation class -> handler name ("runc", "runsc", "kata"; NULL: not served): the
 * defaults (trusted runc, standard and untrusted runsc, hostile kata), then the node's
 * "CLASS=HANDLER" entries (handler none: not served). lanternd and `lantern node
 * containerd-config` read the same --runtime-handler flags through it. */
#define OCI_N_CLASSES (SPEC_ISO_DEVCONTAINER + 1)
int oci_class_map(const char *const *entries, int n, const char *out[OCI_N_CLASSES], struct lerr *e);
/* Finds and checks a handler; root is created. Never fails: h->available says. */
void oci_handler_probe(struct oci_handler *h, const char *name, const char *root);

/* A node directory shown to the sandbox. */
struct oci_bind {
	const char *source;       /* absolute, on the node */
	const char *dest;         /* absolute, under /run/lantern */
	bool read_only;
};

/* Network of a spawn as the runtime sees it. */
enum oci_net { OCI_NET_LOOPBACK, OCI_NET_NETNS };

struct oci_bundle_req {
	const char *dir;          /* bundle directory; config.json goes there */
	const char *rootfs;       /* absolute; mounted read-only */
	json_t *image_config;     /* image config's "config" (User, Env, Entrypoint, Cmd, WorkingDir) */
	const struct spec *spec;
	char *const *lantern_env; /* "LANTERN_...=..." added last; NULL-terminated */
	const char *cgroups_path; /* "/<root>/<instance>" */
	enum oci_kind kind;
	enum oci_net net;
	const char *netns_path;   /* OCI_NET_NETNS with runc: joined; runsc runs inside it */
	const char *hostname;
	uint64_t scratch_bytes;   /* /tmp tmpfs size; 0 = 64 MiB */
	bool seccomp_allowlist;   /* deny by default (untrusted) */
	/* node directories bind-mounted under /run/lantern (the harness socket's directory:
	 * a directory, so a socket bound again after a lanternd restart is the one the
	 * sandbox sees) */
	const struct oci_bind *binds;
	size_t n_binds;
};

/* The bundle's seccomp profile (OCI linux.seccomp): the deny-list, or the untrusted
 * allow-list. A new reference; CRI pods get it as a Localhost profile file. */
json_t *oci_seccomp_profile(bool allowlist);
/* Writes dir/config.json. */
int oci_bundle_write(const struct oci_bundle_req *r, struct lerr *e);

/* The handler's global flags (runsc: platform, network, seccomp inside the sandbox,
 * host Unix sockets), as every command of one container must be given them: stored in
 * argv (static strings), their number returned. host_network: the sandbox uses the
 * network namespace it runs in (the spawn's own), so the cgroup socket programs judge
 * its traffic. */
int oci_handler_flags(const struct oci_handler *h, bool host_network, char **argv, int max);
/* argv (NULL-terminated, static strings and the given ones) to start a container
 * detached (runc: create+start in one `run -d`, pid file in pid_file) or in the
 * foreground (runsc: `run`, whose exit status is the workload's). */
int oci_run_argv(const struct oci_handler *h, const char *bundle, const char *id,
		 const char *pid_file, bool host_network, char **argv, int max);
/* `RUNTIME --root R delete --force ID`, waited for; 0 or -errno (-ENOENT: no such
 * container). */
int oci_delete(const struct oci_handler *h, const char *id);
/* Container ids the runtime knows under its root. *ids must be freed (each and all). */
int oci_list(const struct oci_handler *h, char ***ids, size_t *n);

/* Runs argv (absolute path) with envp (NULL: ours) and stdin from in (NULL: /dev/null),
 * capturing stdout and stderr into out (cap bytes, NUL-terminated). Returns the exit
 * status, or -errno. The runtimes, CNI plugins and `ip` go through it. */
int oci_exec(char *const argv[], char *const envp[], const char *in, char *out, size_t cap);

/* --- CNI: a veth to the node bridge in a network namespace of the spawn's own --- */
struct oci_cni {
	char plugin_dir[PATH_MAX];   /* /usr/lib/cni */
	char data_dir[PATH_MAX];     /* host-local IPAM state */
	char bridge[16];             /* node bridge, e.g. lantern0 */
	char subnet[64];             /* e.g. 10.213.0.0/24 */
	char netns_prefix[64];       /* names under /run/netns: <prefix><instance> */
	bool default_route;          /* route everything through the bridge (NAT), or only the subnet */
};

/* Creates /run/netns/<prefix><inst>, brings lo up, adds the veth (bridge + host-local).
 * ip gets the spawn's address, gw the bridge's (gateway) address as seen from the spawn
 * ("" when the plugin named none). Undoes itself on failure. */
int oci_cni_add(const struct oci_cni *c, const char *inst, char *netns_path, size_t len,
		char ip[64], char gw[64], struct lerr *e);
/* Removes the veth, the address lease and the namespace; missing parts are fine. */
int oci_cni_del(const struct oci_cni *c, const char *inst);
/* The node bridge as a CNI network configuration list (the bridge plugin, addresses
 * from host-local in data_dir): what containerd's CRI plugin gives lantern's pods, the
 * same network and address pool as the OCI runtime's spawns. Malloc'd, or NULL. */
char *oci_cni_conflist(const struct oci_cni *c);
/* Namespaces under /run/netns with the prefix: *insts must be freed (each and all). */
int oci_cni_list(const struct oci_cni *c, char ***insts, size_t *n);

#endif
