/* flags.c: every flag of lanternd in one table: its name, what it fills, how its value
 * is checked, and its help line. Parsing and --help are both made from the table.
 * --flags-file names a file of more flags, one per line (a DaemonSet's ConfigMap), read
 * before the command line. */
#include <getopt.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flags.h"
#include "lantern/image.h"
#include "lantern/util.h"
#include "lantern/version.h"

/* a flags file is a few lines; more is a mistake */
#define FLAGS_FILE_MAX 65536
#define FLAGS_FILE_ARGS 256

enum kind {
	STR,          /* a string */
	BOOL,         /* no value: sets true */
	NUM,          /* an unsigned integer in [min, max] */
	POW2,         /* a power of 2 in [min, max] */
	LIST,         /* repeatable string, appended */
	CHOICE,       /* one of the words in `choices` */
};

struct flag {
	const char *name;
	enum kind kind;
	size_t off;
	uint64_t min, max;
	const char *arg;          /* the value's name in --help */
	const char *help;
	const char *choices;      /* CHOICE: space-separated */
};

#define F(field) offsetof(struct lanternd_config, field)

static const struct flag flags[] = {
	{ "state-dir", STR, F(state_dir), 0, 0, "DIR", "runs, logs, journals (default /var/lib/lantern)" },
	{ "socket", STR, F(socket), 0, 0, "PATH",
	  "local API for the lantern CLI, mode 0600, root only (default /run/lantern/lanternd.sock)" },
	{ "bpffs", STR, F(bpffs), 0, 0, "DIR", "pin root for programs, maps, links (default /sys/fs/bpf/lantern)" },
	{ "cgroup-root", STR, F(cgroup_root), 0, 0, "NAME", "the node's cgroup subtree for instances (default lantern)" },
	{ "dns-upstream", STR, F(dns_upstream), 0, 0, "A:P", "upstream for the FQDN proxy (default: /etc/resolv.conf)" },
	{ "process-runtime", BOOL, F(process_runtime), 0, 0, NULL,
	  "allow isolation: trusted + image_digest: host as host processes" },
	{ "egress-audit", BOOL, F(egress_audit), 0, 0, NULL, "node-wide audit mode: would-deny is allowed and recorded" },
	{ "pids-max", NUM, F(pids_max), 1, UINT32_MAX, "N", "pids cap per instance (default 1024)" },
	{ "dns-ttl-floor", NUM, F(dns_ttl_floor), 0, 86400, "SEC",
	  "minimum time a DNS-learned address stays allowed (default 30)" },
	{ "dns-learn-max", NUM, F(dns_learn_max), 1, 65536, "N",
	  "DNS-learned addresses one instance may hold at once; answers past it fail (default 1024)" },
	{ "shim", STR, F(shim), 0, 0, "PATH", "lantern-shim (default: beside lanternd)" },
	{ "prices", STR, F(prices_file), 0, 0, "FILE",
	  "LLM prices, USD per million tokens by model, and resource rates (JSON; default: every model "
	  "at 3 input / 15 output, docs/telemetry.md)" },
	{ "journal-max-bytes", NUM, F(journal_max_bytes), 4096, UINT64_MAX, "N", "per-run journal size bound (default 64 MiB)" },
	{ "loop-threshold", NUM, F(loop_threshold), 0, UINT32_MAX, "N",
	  "times one step input digest may run before the run is ended as a loop (default 5; 0: off)" },
	{ "runtime-handler", LIST, F(runtime_handlers), 0, 0, "CLASS=HANDLER",
	  "serve an isolation class with runc, runsc, kata or none (defaults: trusted=runc "
	  "standard=runsc untrusted=runsc hostile=kata; wasm and devcontainer unsupported); repeatable" },
	{ "cri-endpoint", STR, F(cri_endpoint), 0, 0, "URL",
	  "run image spawns as pods of this CRI runtime (unix:///run/containerd/containerd.sock) under "
	  "the handlers lantern-<class> (docs/kubernetes.md); default: OCI handlers directly" },
	{ "net-bridge", STR, F(net_bridge), 0, 0, "NAME", "CNI bridge for allowlist_domain/open spawns (default lantern0)" },
	{ "net-subnet", STR, F(net_subnet), 0, 0, "CIDR", "its private range (default 10.213.0.0/24)" },
	{ "net-default-route", BOOL, F(net_default_route), 0, 0, NULL,
	  "spawns route everything via the bridge, NATed (default: the bridge's subnet only)" },
	{ "log-max", NUM, F(log_max), 4096, UINT64_MAX, "BYTES", "output kept per run (default 8 MiB, log rotated at half)" },
	{ "tenant", STR, F(tenant), 0, 0, "ID", "tenant of this node's runs (default \"default\"; 1 to 63 characters)" },
	{ "control-plane", STR, F(control_plane), 0, 0, "H:P", "dial a control plane (gRPC, TLS) for runs (docs/tunnel.md)" },
	{ "bootstrap-token-file", STR, F(bootstrap_token_file), 0, 0, "FILE", "one-time token from POST /v1/data-planes" },
	{ "control-plane-ca", STR, F(cp_ca), 0, 0, "FILE", "CA for the control plane's certificate (default: system)" },
	{ "insecure", BOOL, F(cp_insecure), 0, 0, NULL, "plaintext to the control plane (tests only)" },
	{ "max-runs", NUM, F(max_runs), 1, 100000, "N", "runs at once taken from the control plane (default 64)" },
	{ "reconnect-max", NUM, F(reconnect_max_s), 1, 100000, "SEC", "ceiling of the reconnect backoff (default 30)" },
	{ "otlp-endpoint", STR, F(otlp_endpoint), 0, 0, "URL",
	  "OTLP trace receiver (default $OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT; none: spans only go to "
	  "each run's spans.jsonl)" },
	{ "otlp-protocol", STR, F(otlp_protocol), 0, 0, "P",
	  "grpc or http/protobuf (default $OTEL_EXPORTER_OTLP_PROTOCOL, else http/protobuf)" },
	{ "otlp-insecure", BOOL, F(otlp_insecure), 0, 0, NULL,
	  "plaintext gRPC to a scheme-less endpoint (default $OTEL_EXPORTER_OTLP_[TRACES_]INSECURE; "
	  "https:// is always TLS)" },
	{ "otlp-ca", STR, F(otlp_ca), 0, 0, "FILE",
	  "CA bundle for an https/TLS OTLP endpoint (default $OTEL_EXPORTER_OTLP_[TRACES_]CERTIFICATE, "
	  "else the system's)" },
	{ "metrics-addr", STR, F(metrics_addr), 0, 0, "A:P", "Prometheus text metrics on http://A:P/metrics (default off)" },
	{ "syscall-hook", CHOICE, F(syscall_hook), 0, 0, "K", "tp_btf (default), raw_tp, tracepoint or none",
	  "tp_btf raw_tp tracepoint none" },
	{ "region", STR, F(region), 0, 0, "NAME",
	  "this node's region: told to the control plane at Register, checked against "
	  "spec.preferred_regions (default none)" },
	{ "identity-dir", STR, F(identity_dir), 0, 0, "DIR",
	  "where each instance's identity tmpfs is mounted, below DIR/<node key id> "
	  "(default /run/lantern/identity)" },
	{ "identity-sign-timeout", NUM, F(sign_timeout_ms), 1, 60000, "MS",
	  "how long a start waits for the control plane to sign its identity token (default 2000)" },
	{ "token-ttl", NUM, F(token_ttl_s), 60, 86400, "SEC",
	  "identity token life when the run has no deadline, renewed before expiry (default 3600)" },
	{ "secrets-dir", STR, F(secrets_dir), 0, 0, "DIR",
	  "root-owned directory of file:// secrets (default /etc/lantern/secrets)" },
	{ "secret-ttl", NUM, F(secret_ttl_s), 1, 86400, "SEC",
	  "life of a vended secret's lease; the source is read again after it (default 300)" },
	{ "no-privsep", BOOL, F(no_privsep), 0, 0, NULL,
	  "parse workloads' bytes (harness HTTP and JSON, DNS) in lanternd itself instead of the "
	  "unprivileged lantern-wire (debugging only)" },
	{ "wire-user", STR, F(wire_user), 0, 0, "USER", "the user lantern-wire runs as (default nobody)" },
	{ "image-layer-max", NUM, F(image_layer_max), 1u << 20, UINT64_MAX, "BYTES",
	  "bytes one image layer may unpack to, its tar stream after gunzip (default 16 GiB)" },
	{ "image-max", NUM, F(image_max), 1u << 20, UINT64_MAX, "BYTES",
	  "bytes an image's layers together, or an imported archive, may unpack to (default 32 GiB)" },
	{ "image-entries", NUM, F(image_entries), 16, UINT32_MAX, "N",
	  "files, directories and links one image layer or archive may create (default 1000000)" },
	{ "telemetry-ringbuf-bytes", POW2, F(ringbuf_bytes), 4096, 1u << 30, "N",
	  "process event ring buffer size (power of 2, default 8 MiB)" },
	{ "flags-file", STR, F(flags_file), 0, 0, "FILE",
	  "more flags, one per line (\"--name value\", \"--name=value\" or \"--name\"; # comments), "
	  "read before the command line" },
	{ "kubernetes", BOOL, F(kubernetes), 0, 0, NULL,
	  "run spawns as Pods through the Kubernetes API server (docs/kubernetes.md)" },
	{ "kubeconfig", STR, F(kubeconfig), 0, 0, "FILE",
	  "with --kubernetes: this kubeconfig (token or client certificate) instead of the in-cluster "
	  "service account" },
	{ "node-name", STR, F(node_name), 0, 0, "NAME", "with --kubernetes: this node's Node name (default: the hostname)" },
	{ "kube-tenant-config", STR, F(kube_tenant_config), 0, 0, "FILE",
	  "with --kubernetes: JSON with the \"labels\", \"resourceQuota\" and \"limitRange\" of each "
	  "tenant namespace lanternd creates" },
	{ "kube-node-ip", STR, F(kube_node_ip), 0, 0, "IPV4",
	  "with --kubernetes: this node's address as pods reach it, where their DNS proxy listens "
	  "(needed for hostname egress rules)" },
	{ "kube-start-timeout", NUM, F(kube_start_timeout_s), 1, 86400, "SEC",
	  "with --kubernetes: a pod not running by then fails its run (default 300)" },
};

void lanternd_usage(FILE *f)
{
	fprintf(f, "usage: lanternd [flags]\n");
	for (size_t i = 0; i < ARRAY_SIZE(flags); i++) {
		char lhs[64];

		snprintf(lhs, sizeof(lhs), "--%s%s%s", flags[i].name, flags[i].arg ? " " : "",
			 flags[i].arg ? flags[i].arg : "");
		fprintf(f, "  %-28s %s\n", lhs, flags[i].help);
	}
	fprintf(f, "  %-28s %s\n", "--version", "print the version and exit");
}

static bool is_choice(const char *choices, const char *v)
{
	size_t n = strlen(v);

	for (const char *p = choices; *p;) {
		const char *sp = strchr(p, ' ');
		size_t len = sp ? (size_t)(sp - p) : strlen(p);

		if (n && len == n && !strncmp(p, v, n))
			return true;
		p += len + (sp ? 1 : 0);
	}
	return false;
}

static int set(const struct flag *fl, struct lanternd_config *c, const char *v)
{
	char *base = (char *)c + fl->off, *end;
	unsigned long long n;

	switch (fl->kind) {
	case STR:
		*(const char **)base = v;
		return 0;
	case BOOL:
		*(bool *)base = true;
		return 0;
	case LIST:
		if (c->n_runtime_handlers == MAX_RUNTIME_HANDLERS) {
			fprintf(stderr, "lanternd: --%s: at most %d\n", fl->name, MAX_RUNTIME_HANDLERS);
			return -1;
		}
		c->runtime_handlers[c->n_runtime_handlers++] = v;
		return 0;
	case CHOICE:
		if (!is_choice(fl->choices, v)) {
			fprintf(stderr, "lanternd: --%s: \"%s\": use %s\n", fl->name, v, fl->choices);
			return -1;
		}
		*(const char **)base = v;
		return 0;
	case NUM:
	case POW2:
		n = strtoull(v, &end, 10);
		if (!*v || *end || *v == '-' || n < fl->min || n > fl->max ||
		    (fl->kind == POW2 && (n & (n - 1)))) {
			fprintf(stderr, "lanternd: --%s: \"%s\" must be %s from %llu to %llu\n", fl->name, v,
				fl->kind == POW2 ? "a power of 2" : "a whole number",
				(unsigned long long)fl->min, (unsigned long long)fl->max);
			return -1;
		}
		*(uint64_t *)base = n;
		return 0;
	}
	return -1;
}

/* The value of --flags-file on the command line, or NULL. */
static const char *flags_file_arg(int argc, char **argv)
{
	const char *v = NULL;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--"))
			break;
		if (!strcmp(argv[i], "--flags-file") && i + 1 < argc)
			v = argv[++i];
		else if (!strncmp(argv[i], "--flags-file=", 13))
			v = argv[i] + 13;
	}
	return v;
}

/* Splits the file's lines into arguments: each line is one flag and at most one value
 * (the rest of the line after the first space, or after '='). The strings point into
 * *buf, which lives as long as lanternd. */
static int flags_file_read(const char *path, char **buf, char **args, int *n)
{
	size_t len;
	int err;

	if ((err = util_read_file(path, buf, &len)) < 0) {
		fprintf(stderr, "lanternd: --flags-file %s: %s\n", path, strerror(-err));
		return -1;
	}
	if (len > FLAGS_FILE_MAX) {
		fprintf(stderr, "lanternd: --flags-file %s: larger than %d bytes\n", path, FLAGS_FILE_MAX);
		return -1;
	}
	*n = 0;
	for (char *save = NULL, *l = strtok_r(*buf, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
		char *end = l + strlen(l), *sp;

		while (*l == ' ' || *l == '\t')
			l++;
		while (end > l && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r'))
			*--end = '\0';
		if (!*l || *l == '#')
			continue;
		if (strncmp(l, "--", 2) || !strcmp(l, "--flags-file") || !strncmp(l, "--flags-file=", 13)) {
			fprintf(stderr, "lanternd: --flags-file %s: \"%s\": want one flag per line (\"--name "
				"value\"), and no --flags-file inside\n", path, l);
			return -1;
		}
		if (*n + 2 > FLAGS_FILE_ARGS) {
			fprintf(stderr, "lanternd: --flags-file %s: more than %d flags\n", path, FLAGS_FILE_ARGS / 2);
			return -1;
		}
		args[(*n)++] = l;
		if ((sp = strpbrk(l, " \t")) && !strchr(l, '=')) {
			*sp++ = '\0';
			while (*sp == ' ' || *sp == '\t')
				sp++;
			args[(*n)++] = sp;
		}
	}
	return 0;
}

int lanternd_flags(int argc, char **argv, struct lanternd_config *c)
{
	static char *file_buf;
	static char *all[FLAGS_FILE_ARGS + 512];
	struct option opts[ARRAY_SIZE(flags) + 3];
	const char *ff = flags_file_arg(argc, argv);
	int ch, nf = 0;

	*c = (struct lanternd_config){
		.state_dir = "/var/lib/lantern",
		.socket = "/run/lantern/lanternd.sock",
		.bpffs = "/sys/fs/bpf/lantern",
		.cgroup_root = "lantern",
		.pids_max = 1024,
		.dns_ttl_floor = 30,
		.dns_learn_max = 1024,
		.grace_ms = 3000,
		.loop_threshold = 5,
		.max_runs = 64,
		.reconnect_max_s = 30,
		.syscall_hook = "tp_btf",
		.kube_start_timeout_s = 300,
		.identity_dir = "/run/lantern/identity",
		.sign_timeout_ms = 2000,
		.token_ttl_s = 3600,
		.secrets_dir = "/etc/lantern/secrets",
		.secret_ttl_s = 300,
		.wire_user = "nobody",
		.image_layer_max = IMAGE_LAYER_BYTES_DEFAULT,
		.image_max = IMAGE_BYTES_DEFAULT,
		.image_entries = IMAGE_ENTRIES_DEFAULT,
	};
	if (ff) {
		if (flags_file_read(ff, &file_buf, all + 1, &nf) < 0)
			return -1;
		if (argc + nf >= (int)ARRAY_SIZE(all)) {
			fprintf(stderr, "lanternd: too many arguments\n");
			return -1;
		}
		/* the file's flags, then the command line's: the later value wins */
		all[0] = argv[0];
		memcpy(all + 1 + nf, argv + 1, (size_t)(argc - 1) * sizeof(char *));
		argv = all;
		argc += nf;
		argv[argc] = NULL;
	}
	for (size_t i = 0; i < ARRAY_SIZE(flags); i++)
		opts[i] = (struct option){ flags[i].name, flags[i].kind == BOOL ? no_argument : required_argument,
					   NULL, (int)i + 256 };
	opts[ARRAY_SIZE(flags)] = (struct option){ "help", no_argument, NULL, 'h' };
	opts[ARRAY_SIZE(flags) + 1] = (struct option){ "version", no_argument, NULL, 'V' };
	opts[ARRAY_SIZE(flags) + 2] = (struct option){ 0 };
	optind = 1;
	while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		if (ch == 'h') {
			lanternd_usage(stdout);
			return 1;
		}
		if (ch == 'V') {
			printf("lanternd %s\n", LANTERN_VERSION);
			return 1;
		}
		if (ch < 256 || ch >= 256 + (int)ARRAY_SIZE(flags)) {
			lanternd_usage(stderr);
			return -1;
		}
		if (set(&flags[ch - 256], c, optarg) < 0)
			return -1;
	}
	if (optind < argc) {
		fprintf(stderr, "lanternd: unexpected argument \"%s\"\n", argv[optind]);
		return -1;
	}
	if (c->tenant && (!*c->tenant || strlen(c->tenant) > 63)) {
		fprintf(stderr, "lanternd: --tenant: \"%s\" must be 1 to 63 characters\n", c->tenant);
		return -1;
	}
	if (c->kubernetes && c->cri_endpoint) {
		fprintf(stderr, "lanternd: --kubernetes and --cri-endpoint: spawns are pods of one or the other\n");
		return -1;
	}
	if (!c->kubernetes && (c->kubeconfig || c->node_name || c->kube_tenant_config || c->kube_node_ip)) {
		fprintf(stderr, "lanternd: --kubeconfig, --node-name, --kube-tenant-config and --kube-node-ip "
			"need --kubernetes\n");
		return -1;
	}
	return 0;
}
