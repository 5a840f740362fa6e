/* flags.h: lanternd's configuration, filled from one table of flags (flags.c). */
#ifndef LANTERND_FLAGS_H
#define LANTERND_FLAGS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#define MAX_RUNTIME_HANDLERS 8

struct lanternd_config {
	const char *state_dir;
	const char *socket;
	const char *bpffs;
	const char *cgroup_root;
	const char *dns_upstream;
	const char *shim;                /* lantern-shim, default beside lanternd */
	bool process_runtime;
	bool egress_audit;               /* node-wide audit mode */
	uint64_t pids_max;               /* node default pids cap per instance */
	uint64_t dns_ttl_floor;          /* seconds a DNS-learned address stays allowed at least */
	uint64_t dns_learn_max;          /* DNS-learned addresses per instance */
	uint64_t grace_ms;               /* SIGTERM to SIGKILL on timeout and kill */
	const char *prices_file;
	uint64_t journal_max_bytes;      /* per-run journal bound; 0 = the journal's default */
	uint64_t loop_threshold;         /* proceeds allowed per input digest; 0 = off */
	const char *tenant;              /* NULL: "default" (and no control plane) */
	const char *control_plane;       /* HOST:PORT of a control plane, or NULL */
	const char *bootstrap_token_file;
	const char *cp_ca;
	bool cp_insecure;
	uint64_t max_runs;
	uint64_t reconnect_max_s;
	const char *runtime_handlers[MAX_RUNTIME_HANDLERS]; /* CLASS=HANDLER */
	int n_runtime_handlers;
	const char *cri_endpoint;        /* spawns as CRI pods (containerd), or NULL */
	const char *net_bridge;
	const char *net_subnet;
	bool net_default_route;
	uint64_t log_max;                /* per-run output cap in bytes */
	const char *otlp_endpoint;
	const char *otlp_protocol;
	bool otlp_insecure;
	const char *otlp_ca;
	const char *metrics_addr;
	const char *syscall_hook;        /* tp_btf, raw_tp, tracepoint, none */
	uint64_t ringbuf_bytes;
	const char *flags_file;          /* more flags, one per line (read first) */
	bool kubernetes;                 /* spawns as Pods through the API server */
	const char *kubeconfig;          /* NULL: in-cluster */
	const char *node_name;           /* NULL: the hostname */
	const char *kube_tenant_config;
	const char *kube_node_ip;
	uint64_t kube_start_timeout_s;
	const char *region;
	const char *identity_dir;
	uint64_t sign_timeout_ms;
	uint64_t token_ttl_s;
	const char *secrets_dir;
	uint64_t secret_ttl_s;
	bool no_privsep;                 /* parse workloads' bytes in lanternd itself (debugging) */
	const char *wire_user;           /* lantern-wire runs as this user */
	uint64_t image_layer_max;        /* bytes one image layer may unpack to */
	uint64_t image_max;              /* bytes an image (or an imported archive) may unpack to */
	uint64_t image_entries;          /* entries one layer or archive may create */
};

/* Defaults, then the lines of --flags-file, then argv (so the command line wins for
 * single-valued flags; lists get both). Returns 0, 1 after --help or --version
 * (printed), or -1 after a message on stderr naming the flag and what is wrong. */
int lanternd_flags(int argc, char **argv, struct lanternd_config *c);
void lanternd_usage(FILE *f);

#endif
