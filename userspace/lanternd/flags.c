/* flags.c: every flag of lanternd in one table: its name, what it fills, how its value
 * is checked, and its help line. Parsing and --help are both made from the table. */
#include <getopt.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flags.h"
#include "lantern/image.h"
#include "lantern/util.h"

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

int lanternd_flags(int argc, char **argv, struct lanternd_config *c)
{
	struct option opts[ARRAY_SIZE(flags) + 2];
	int ch;

	*c = (struct lanternd_config){
		.state_dir = "/var/lib/lantern",
		.socket = "/run/lantern/lanternd.sock",
		.bpffs = "/sys/fs/bpf/lantern",
		.cgroup_root = "lantern",
		.pids_max = 1024,
		.dns_ttl_floor = 30,
		.grace_ms = 3000,
		.loop_threshold = 5,
		.max_runs = 64,
		.reconnect_max_s = 30,
		.syscall_hook = "tp_btf",
		.wire_user = "nobody",
		.image_layer_max = IMAGE_LAYER_BYTES_DEFAULT,
		.image_max = IMAGE_BYTES_DEFAULT,
		.image_entries = IMAGE_ENTRIES_DEFAULT,
	};
	for (size_t i = 0; i < ARRAY_SIZE(flags); i++)
		opts[i] = (struct option){ flags[i].name, flags[i].kind == BOOL ? no_argument : required_argument,
					   NULL, (int)i + 256 };
	opts[ARRAY_SIZE(flags)] = (struct option){ "help", no_argument, NULL, 'h' };
	opts[ARRAY_SIZE(flags) + 1] = (struct option){ 0 };
	optind = 1;
	while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		if (ch == 'h') {
			lanternd_usage(stdout);
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
	return 0;
}
