/* main.c: lanternd, the node agent. Parses flags, opens the modules in order (cgroup
 * subtree, BPF state, DNS upstream, the local API), reconciles what a previous
 * lanternd left, and runs the one event loop. A clean stop (SIGTERM, SIGINT) leaves
 * running instances running and enforced; the next lanternd adopts them. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/inotify.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "lanternd.h"
#include "lantern/util.h"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: lanternd [flags]\n"
		"  --state-dir DIR       runs, logs, journals (default /var/lib/lantern)\n"
		"  --socket PATH         local API for the lantern CLI, mode 0600, root only\n"
		"                        (default /run/lantern/lanternd.sock)\n"
		"  --bpffs DIR           pin root for programs, maps, links (default /sys/fs/bpf/lantern)\n"
		"  --cgroup-root NAME    the node's cgroup subtree for instances (default lantern)\n"
		"  --dns-upstream A:P    upstream for the FQDN proxy (default: /etc/resolv.conf)\n"
		"  --process-runtime     allow isolation: trusted + image_digest: host as host processes\n"
		"  --egress-audit        node-wide audit mode: would-deny is allowed and recorded\n"
		"  --pids-max N          pids cap per instance (default 1024)\n"
		"  --dns-ttl-floor SEC   minimum time a DNS-learned address stays allowed (default 30)\n"
		"  --shim PATH           lantern-shim (default: beside lanternd)\n"
		"  --prices FILE         LLM prices, USD per million tokens by model (JSON; default:\n"
		"                        every model at 3 input / 15 output, docs/durable-execution.md)\n"
		"  --journal-max-bytes N per-run journal size bound (default 64 MiB)\n"
		"  --loop-threshold N    times one step input digest may run before the run is\n"
		"                        ended as a loop (default 5; 0 turns the guard off)\n"
		"  --runtime-handler CLASS=HANDLER  serve an isolation class with runc, runsc, kata or\n"
		"                        none (defaults: trusted=runc standard=runsc untrusted=runsc\n"
		"                        hostile=kata; wasm and devcontainer unsupported); repeatable\n"
		"  --net-bridge NAME     CNI bridge for allowlist_domain/open spawns (default lantern0)\n"
		"  --net-subnet CIDR     its private range (default 10.213.0.0/24)\n"
		"  --net-default-route   spawns route everything via the bridge, NATed (default: the\n"
		"                        bridge's subnet only)\n"
		"  --log-max BYTES       output kept per run (default 8 MiB, log rotated at half)\n"
		"  --control-plane H:P   dial a control plane (gRPC, TLS) for runs (docs/tunnel.md)\n"
		"  --bootstrap-token-file FILE  one-time token from POST /v1/data-planes\n"
		"  --control-plane-ca FILE  CA for the control plane's certificate (default: system)\n"
		"  --insecure            plaintext to the control plane (tests only)\n"
		"  --max-runs N          runs at once taken from the control plane (default 64)\n"
		"  --reconnect-max SEC   ceiling of the reconnect backoff (default 30)\n");
	telemetry_usage(f);
}

static void on_signal(struct loop *l, int fd, uint32_t events, void *arg)
{
	struct signalfd_siginfo si;

	if (read(fd, &si, sizeof(si)) == sizeof(si)) {
		log_info("signal %u: stopping; running instances stay enforced", si.ssi_signo);
		loop_stop(l);
	}
}

static void on_inotify(struct loop *l, int fd, uint32_t events, void *arg)
{
	run_inotify_event(arg);
}

static int parse_flags(int argc, char **argv, struct daemon_opts *o)
{
	static const struct option opts[] = {
		{ "state-dir", required_argument, NULL, 's' },
		{ "socket", required_argument, NULL, 'S' },
		{ "bpffs", required_argument, NULL, 'b' },
		{ "cgroup-root", required_argument, NULL, 'c' },
		{ "dns-upstream", required_argument, NULL, 'd' },
		{ "process-runtime", no_argument, NULL, 'p' },
		{ "egress-audit", no_argument, NULL, 'a' },
		{ "pids-max", required_argument, NULL, 'P' },
		{ "dns-ttl-floor", required_argument, NULL, 't' },
		{ "shim", required_argument, NULL, 'm' },
		{ "prices", required_argument, NULL, 0x401 },
		{ "journal-max-bytes", required_argument, NULL, 0x402 },
		{ "loop-threshold", required_argument, NULL, 0x403 },
		{ "runtime-handler", required_argument, NULL, 0x501 },
		{ "net-bridge", required_argument, NULL, 0x502 },
		{ "net-subnet", required_argument, NULL, 0x503 },
		{ "net-default-route", no_argument, NULL, 0x504 },
		{ "log-max", required_argument, NULL, 0x505 },
		{ "control-plane", required_argument, NULL, 0x601 },
		{ "bootstrap-token-file", required_argument, NULL, 0x603 },
		{ "control-plane-ca", required_argument, NULL, 0x604 },
		{ "insecure", no_argument, NULL, 0x605 },
		{ "max-runs", required_argument, NULL, 0x606 },
		{ "reconnect-max", required_argument, NULL, 0x607 },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	int c;
	char *end;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 's': o->state_dir = optarg; break;
		case 'S': o->socket = optarg; break;
		case 'b': o->bpffs = optarg; break;
		case 'c': o->cgroup_root = optarg; break;
		case 'd': o->dns_upstream = optarg; break;
		case 'p': o->process_runtime = true; break;
		case 'a': o->egress_audit = true; break;
		case 'm': o->shim = optarg; break;
		case 0x401: o->prices_file = optarg; break;
		case 0x501:
			if (o->n_runtime_handlers == (int)ARRAY_SIZE(o->runtime_handlers)) {
				fprintf(stderr, "lanternd: --runtime-handler: at most %zu\n", ARRAY_SIZE(o->runtime_handlers));
				return -1;
			}
			o->runtime_handlers[o->n_runtime_handlers++] = optarg;
			break;
		case 0x502: o->net_bridge = optarg; break;
		case 0x601: o->control_plane = optarg; break;
		case 0x603: o->bootstrap_token_file = optarg; break;
		case 0x604: o->cp_ca = optarg; break;
		case 0x605: o->cp_insecure = true; break;
		case 0x606:
		case 0x607: {
			long v = strtol(optarg, &end, 10);

			if (*end || v <= 0 || v > 100000) {
				fprintf(stderr, "lanternd: --%s: \"%s\" is not a positive integer\n",
					c == 0x606 ? "max-runs" : "reconnect-max", optarg);
				return -1;
			}
			if (c == 0x606)
				o->max_runs = (int)v;
			else
				o->cp_backoff_max_ms = (int)v * 1000;
			break;
		}
		case 0x503: o->net_subnet = optarg; break;
		case 0x504: o->net_default_route = true; break;
		case 0x505:
			o->log_max = strtoull(optarg, &end, 10);
			if (*end || o->log_max < 4096) {
				fprintf(stderr, "lanternd: --log-max: \"%s\" is not a size of at least 4096 bytes\n", optarg);
				return -1;
			}
			break;
		case 0x402:
			o->journal_max_bytes = strtoull(optarg, &end, 10);
			if (*end || o->journal_max_bytes < 4096) {
				fprintf(stderr, "lanternd: --journal-max-bytes: \"%s\" is not a size of at least 4096 bytes\n", optarg);
				return -1;
			}
			break;
		case 0x403:
			o->loop_threshold = (uint32_t)strtoul(optarg, &end, 10);
			if (*end) {
				fprintf(stderr, "lanternd: --loop-threshold: \"%s\" is not a number\n", optarg);
				return -1;
			}
			break;
		case 'P':
			o->pids_max = strtoull(optarg, &end, 10);
			if (*end || !o->pids_max) {
				fprintf(stderr, "lanternd: --pids-max: \"%s\" is not a positive integer\n", optarg);
				return -1;
			}
			break;
		case 't':
			o->dns_ttl_floor = (uint32_t)strtoul(optarg, &end, 10);
			if (*end) {
				fprintf(stderr, "lanternd: --dns-ttl-floor: \"%s\" is not a number of seconds\n", optarg);
				return -1;
			}
			break;
		case 'h': usage(stdout); exit(0);
		default: usage(stderr); return -1;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "lanternd: unexpected argument \"%s\"\n", argv[optind]);
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	static char shim[PATH_MAX];
	struct daemon d = {
		.o = {
			.state_dir = "/var/lib/lantern",
			.socket = "/run/lantern/lanternd.sock",
			.bpffs = "/sys/fs/bpf/lantern",
			.cgroup_root = "lantern",
			.pids_max = 1024,
			.dns_ttl_floor = 30,
			.grace_ms = 3000,
			.loop_threshold = 5,
			.max_runs = 64,
			.cp_backoff_max_ms = 30000,
		},
		.inotify = -1,
	};
	struct lerr e = { 0 };
	sigset_t mask;
	int sfd, err;

	log_set_prog("lanternd");
	signal(SIGPIPE, SIG_IGN);
	/* --tenant is one flag for two readers: telemetry tags standalone runs with it (and
	 * takes it out of argv), the control-plane link registers with it */
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--tenant") && i + 1 < argc)
			d.o.tenant = argv[i + 1];
		else if (!strncmp(argv[i], "--tenant=", 9))
			d.o.tenant = argv[i] + 9;
	}
	if (telemetry_parse_flags(&argc, argv) < 0)
		return 2;
	if (parse_flags(argc, argv, &d.o) < 0)
		return 2;
	if (!d.o.shim) {
		ssize_t n = readlink("/proc/self/exe", shim, sizeof(shim) - 16);
		char *slash;

		if (n < 0) {
			log_error("cannot find own path: %s", strerror(errno));
			return 1;
		}
		shim[n] = '\0';
		slash = strrchr(shim, '/');
		strcpy(slash ? slash + 1 : shim, "lantern-shim");
		d.o.shim = shim;
	}

	snprintf(d.runs_dir, sizeof(d.runs_dir), "%s/runs", d.o.state_dir);
	if ((err = util_mkdir_p(d.runs_dir, 0700)) < 0) {
		log_error("state dir %s: %s", d.runs_dir, strerror(-err));
		return 1;
	}
	d.loop = loop_new();
	if (!d.loop) {
		log_error("event loop: %s", strerror(errno));
		return 1;
	}
	if (cgroup_node_open(d.o.cgroup_root, &d.cg, &e) < 0) {
		log_error("%s", e.msg);
		return 1;
	}
	if (egress_start(&d, &e) < 0) {
		log_error("%s", e.msg);
		return 1;
	}
	d.inotify = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (d.inotify < 0 || loop_add(d.loop, d.inotify, EPOLLIN, on_inotify, &d) < 0) {
		log_error("inotify: %s", strerror(errno));
		return 1;
	}

	if (durable_init(&d, &e) < 0) {
		log_error("%s", e.msg);
		return 1;
	}
	if (ocirun_init(&d, &e) < 0) {
		log_error("%s", e.msg);
		return 1;
	}
	if (telemetry_start(&d, &e) < 0) {
		log_error("%s", e.msg);
		return 1;
	}
	if (cplane_open(&d, &e) < 0) {
		log_error("%s", e.msg);
		return 1;
	}
	run_recover(&d);
	telemetry_recover(&d);

	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	if (sfd < 0 || loop_add(d.loop, sfd, EPOLLIN, on_signal, &d) < 0) {
		log_error("signalfd: %s", strerror(errno));
		return 1;
	}
	if (api_open(&d, &e) < 0) {
		log_error("%s", e.msg);
		return 1;
	}
	log_info("ready: socket %s, pins %s, cgroup %s (%s)%s", d.o.socket, d.o.bpffs,
		 d.cg.v2, d.cg.layout == CGROUP_HYBRID ? "hybrid" : "unified",
		 d.o.process_runtime ? ", process runtime on" : "");
	err = loop_run(d.loop);
	ocirun_close(&d);
	cplane_close(&d);
	unlink(d.o.socket);
	telemetry_stop(&d);
	lbpf_close(d.bpf);
	return err < 0 ? 1 : 0;
}
