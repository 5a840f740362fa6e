/* main.c: lanternd, the node agent. It reads its flags, opens the modules in order
 * (the cgroup subtree, the egress and telemetry programs, the meter, the runtimes, the
 * run table and its subscribers, the control-plane link, the local API and the metrics
 * endpoint), reconciles what a previous lanternd left, and runs the one event loop.
 * Subscribers are registered in the order the run module calls them at each step of a
 * run (run.h): egress first (policy before anything runs), the meter before the
 * journal (which hands it the token tally), identity before the journal (a run refused
 * for a secret it cannot have leaves no journal; its key is in place before the
 * harness socket opens), the journal before telemetry, logs and the control plane
 * (the end is journaled, and the receipt sealed, before anyone is told).
 *
 * A clean stop (SIGTERM, SIGINT) drains: no new runs, the control plane is told the
 * node is draining (bounded wait), then lanternd exits leaving running instances
 * running and enforced, their pins in place; the next lanternd (a DaemonSet rollout's
 * new pod) adopts them. A second signal exits at once. */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include "lanternd.h"
#include "lantern/util.h"

/* how long a stopping lanternd waits for the control plane to hear it is draining: well
 * inside the DaemonSet's terminationGracePeriodSeconds */
#define DRAIN_TELL_MS 5000

static uint64_t mono_ms(void)
{
	return util_now_ns(CLOCK_MONOTONIC) / 1000000;
}

static void on_drain_tick(struct loop *l, void *arg)
{
	struct daemon *d = arg;

	if (cplane_drain_told(d->cplane)) {
		log_info("stopping: the control plane knows this node is draining");
	} else if (mono_ms() >= d->drain_deadline_ms) {
		log_warn("stopping: the control plane did not acknowledge the drain within %d ms", DRAIN_TELL_MS);
	} else {
		loop_timer_add(l, 50, on_drain_tick, d);
		return;
	}
	loop_stop(l);
}

static void on_signal(struct loop *l, int fd, uint32_t events, void *arg)
{
	struct daemon *d = arg;
	struct signalfd_siginfo si;

	if (read(fd, &si, sizeof(si)) != sizeof(si))
		return;
	if (d->draining) {
		log_info("signal %u again: stopping now", si.ssi_signo);
		loop_stop(l);
		return;
	}
	d->draining = true;
	log_info("signal %u: draining: no new runs; running instances stay enforced for the next "
		 "lanternd to adopt", si.ssi_signo);
	if (!d->cplane) {
		loop_stop(l);
		return;
	}
	cplane_drain(d->cplane);
	d->drain_deadline_ms = mono_ms() + DRAIN_TELL_MS;
	loop_timer_add(l, 0, on_drain_tick, d);
}

/* A file beside lanternd's own binary (lantern-shim, the lantern CLI). */
static int beside_self(const char *name, char *out, size_t len)
{
	ssize_t n = readlink("/proc/self/exe", out, len - 1);
	char *slash;

	if (n < 0)
		return -errno;
	out[n] = '\0';
	slash = strrchr(out, '/');
	if ((size_t)((slash ? slash + 1 : out) - out) + strlen(name) + 1 > len)
		return -ENAMETOOLONG;
	strcpy(slash ? slash + 1 : out, name);
	return 0;
}

/* Every run holds sockets (its harness API, its DNS proxy) and clients hold more: the
 * soft fd limit goes up to the hard one, so the node's bound is the hard limit, and
 * running out is handled (listeners pause) rather than hit at 1024. */
static void raise_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
			log_warn("cannot raise the open file limit: %s", strerror(errno));
	}
}

static enum lbpf_sys_hook sys_hook(const char *name)
{
	if (!strcmp(name, "raw_tp"))
		return LBPF_SYS_RAW_TP;
	if (!strcmp(name, "tracepoint"))
		return LBPF_SYS_TRACEPOINT;
	if (!strcmp(name, "none"))
		return LBPF_SYS_NONE;
	return LBPF_SYS_TP_BTF;
}

static int open_runtimes(struct daemon *d, const char *shim, struct lerr *e)
{
	const struct lanternd_config *c = &d->cfg;
	struct runtime_process_opts po = {
		.enabled = c->process_runtime, .shim = shim, .log_max = c->log_max,
	};
	struct runtime_oci_opts oo = {
		.state_dir = c->state_dir, .cg = &d->cg, .shim = shim, .log_max = c->log_max,
		.class_handlers = c->runtime_handlers, .n_class_handlers = c->n_runtime_handlers,
		.net_bridge = c->net_bridge, .net_subnet = c->net_subnet,
		.net_default_route = c->net_default_route, .process_runtime = c->process_runtime,
		.image_layer_max = c->image_layer_max, .image_max = c->image_max,
		.image_entries = c->image_entries, .handlers_only = c->kubernetes || c->cri_endpoint,
	};
	struct runtime_kube_opts ko = {
		.kubeconfig = c->kubeconfig, .node = c->node_name, .tenant_config = c->kube_tenant_config,
		.node_ip = c->kube_node_ip, .grace_s = (uint32_t)((c->grace_ms + 999) / 1000),
		.start_timeout_s = (uint32_t)c->kube_start_timeout_s,
	};
	int err;

	if (!(d->runtimes = runtimes_new()))
		return lerr_set(e, ENOMEM, "runtimes: out of memory");
	/* the process runtime first: it claims only trusted + image_digest host */
	if ((err = runtime_process_add(d->runtimes, d->loop, &po, e)) < 0 ||
	    (err = runtime_oci_add(d->runtimes, d->loop, &oo, &d->oci, e)) < 0)
		return err;
	if (c->cri_endpoint) {
		/* every image spawn is a pod of containerd; the handlers probed above are what
		 * lantern-oci runs its containers with */
		struct runtime_cri_opts co = {
			.endpoint = c->cri_endpoint, .oci = d->oci, .cg = &d->cg,
			.net_subnet = c->net_subnet, .log_max = c->log_max,
		};

		return runtime_cri_add(d->runtimes, d->loop, &co, e);
	}
	if (!c->kubernetes)
		return 0;
	/* on a Kubernetes node every spawn is a pod the kubelet knows; the handlers
	 * probed above are what lantern-oci runs them with */
	if (!ko.node) {
		if (gethostname(d->node_name, sizeof(d->node_name) - 1) < 0)
			return lerr_set(e, errno, "kubernetes: hostname: %s (give --node-name)", strerror(errno));
		ko.node = d->node_name;
	}
	ko.oci = d->oci;
	return runtime_kube_add(d->runtimes, d->loop, &ko, &d->kube, e);
}

/* lantern-wire, the unprivileged process that reads workloads' bytes, beside lanternd. */
static int open_edge(struct daemon *d, struct lerr *e)
{
	char wire[PATH_MAX], root[PATH_MAX + 16];
	struct edge_opts o = { .wire = wire, .user = d->cfg.wire_user, .root = root };
	int err;

	if (d->cfg.no_privsep) {
		log_warn("--no-privsep: workloads' bytes are parsed in lanternd's own (root) process");
		return 0;
	}
	if ((err = beside_self("lantern-wire", wire, sizeof(wire))) < 0)
		return lerr_set(e, err, "cannot find lantern-wire: %s", strerror(-err));
	snprintf(root, sizeof(root), "%s/wire", d->cfg.state_dir);
	return edge_open(d->loop, &o, &d->edge, e);
}

/* The pools file, read before anything is opened: each of its errors (FILE:LINE:COL
 * and the field) is printed and lanternd does not start. */
static int read_pools(struct daemon *d)
{
	struct spec_errors errs = { 0 };

	if (!d->cfg.pools_file || spec_pools_parse_file(d->cfg.pools_file, &d->pools_decl, &errs) == 0)
		return 0;
	for (size_t i = 0; i < errs.n; i++)
		log_error("--pools %s", errs.msg[i]);
	spec_errors_free(&errs);
	return -EINVAL;
}

/* The pools checked against the runtimes (a pool this node cannot serve refuses the
 * start, naming FILE:LINE and why), then subscribed for claims. */
static int open_pools(struct daemon *d, struct lerr *e)
{
	const struct lanternd_config *c = &d->cfg;
	char waiter[PATH_MAX];
	struct pool_opts po = {
		.decl = &d->pools_decl, .state_dir = c->state_dir, .cg = &d->cg, .pids_max = c->pids_max,
		.runtimes = d->runtimes, .egress = d->egress, .identity = d->identity, .waiter = waiter,
		.max_total = c->max_runs, .mem_floor = c->pool_memory_floor,
	};
	int err;

	if (beside_self("lantern-waiter", waiter, sizeof(waiter)) < 0)
		waiter[0] = '\0';
	err = pool_open(d->loop, &po, &d->pool, e);
	spec_pools_free(&d->pools_decl);
	if (err < 0)
		return err;
	return pool_subscribe(d->pool, d->runs, e);
}

/* A run resumed after a restart reads its k8s:// secrets first, as every other start. */
static int prefetch_start(void *arg, const char *file, const char *yaml, size_t len,
			  void (*done)(void *ctx, struct run_prefetch *pf), void *ctx, struct run_prefetch **out)
{
	return identity_prefetch(arg, file, yaml, len, done, ctx, out);
}

static void prefetch_free(void *arg, struct run_prefetch *pf)
{
	identity_prefetch_free(pf);
}

static const struct run_prefetcher identity_prefetcher = { .start = prefetch_start, .free = prefetch_free };

static int open_modules(struct daemon *d, const char *shim, const char *cli, struct lerr *e)
{
	const struct lanternd_config *c = &d->cfg;
	struct egress_opts eo = {
		.bpffs = c->bpffs, .cg = &d->cg, .audit_all = c->egress_audit,
		.dns_upstream = c->dns_upstream, .dns_ttl_floor = (uint32_t)c->dns_ttl_floor,
		.dns_learn_max = (uint32_t)c->dns_learn_max,
	};
	struct otlp_opts otlp;
	struct telemetry_opts to = {
		.bpffs = c->bpffs, .cg = &d->cg, .state_dir = c->state_dir,
		.sys_hook = sys_hook(c->syscall_hook), .ringbuf_bytes = (uint32_t)c->ringbuf_bytes,
	};
	struct durable_opts dop = {
		.journal_max_bytes = c->journal_max_bytes, .loop_threshold = (uint32_t)c->loop_threshold,
		.cli = cli, .store_url = c->journal_store, .state_dir = c->state_dir,
		.store_timeout_ms = (uint32_t)(c->journal_store_timeout_s * 1000),
	};
	char owner[512], host[256] = "";
	struct runs_opts ro = {
		.loop = d->loop, .state_dir = c->state_dir, .cg = &d->cg, .tenant = c->tenant,
		.pids_max = c->pids_max, .grace_ms = (uint32_t)c->grace_ms, .region = c->region,
	};
	struct meter_opts mo = { .prices_file = c->prices_file };
	struct identity_opts io = {
		.state_dir = c->state_dir, .tmpfs_root = c->identity_dir, .secrets_dir = c->secrets_dir,
		.tenant = c->tenant, .region = c->region, .secret_ttl_s = (uint32_t)c->secret_ttl_s,
		.token_ttl_s = (uint32_t)c->token_ttl_s, .sign_timeout_ms = (uint32_t)c->sign_timeout_ms,
	};
	int err;

	gethostname(host, sizeof(host) - 1);
	snprintf(owner, sizeof(owner), "%s:%s", host, c->state_dir);
	dop.store_owner = owner;

	if ((err = open_edge(d, e)) < 0)
		return err;
	if (d->edge) {
		eo.dns = &edge_dns;
		eo.dns_arg = d->edge;
	}
	if ((err = cgroup_node_open(c->cgroup_root, &d->cg, e)) < 0 ||
	    (err = egress_open(d->loop, &eo, &d->egress, e)) < 0)
		return err;
	to.egress_bpf = egress_bpf(d->egress);
	if ((err = otlp_configure(c->otlp_endpoint, c->otlp_protocol, c->otlp_insecure, c->otlp_ca, &otlp, e)) < 0)
		return err;
	to.otlp = err > 0 ? &otlp : NULL;
	if ((err = telemetry_open(d->loop, &to, &d->telemetry, e)) < 0)
		return err;
	mo.tm = telemetry_bpf(d->telemetry);
	io.egress = d->egress;
	if ((err = meter_open(d->loop, &mo, &d->meter, e)) < 0 ||
	    (err = identity_open(d->loop, &io, &d->identity, e)) < 0)
		return err;
	dop.identity = d->identity;
	if ((err = durable_open(d->loop, &dop, d->meter, &d->durable, e)) < 0 ||
	    (err = logs_open(d->loop, &d->logs, e)) < 0 ||
	    (err = open_runtimes(d, shim, e)) < 0)
		return err;
	/* k8s:// secrets are read with the Kubernetes runtime's API client */
	identity_set_kube(d->identity, runtime_kube_client(d->kube));
	if (d->edge) {
		durable_set_transport(d->durable, &edge_harness, d->edge);
		edge_set_durable(d->edge, d->durable);
	}
	ro.runtimes = d->runtimes;
	if ((err = runs_open(&ro, &d->runs, e)) < 0)
		return err;
	runs_set_prefetcher(d->runs, &identity_prefetcher, d->identity);
	if ((err = egress_subscribe(d->egress, d->runs, e)) < 0 ||
	    (err = meter_subscribe(d->meter, d->runs, e)) < 0 ||
	    (err = identity_subscribe(d->identity, d->runs, e)) < 0 ||
	    (err = durable_subscribe(d->durable, d->runs, e)) < 0 ||
	    (err = telemetry_subscribe(d->telemetry, d->runs, d->meter, e)) < 0 ||
	    (err = logs_subscribe(d->logs, d->runs, e)) < 0 ||
	    (err = open_pools(d, e)) < 0)
		return err;
	if (c->control_plane) {
		struct cplane_opts co = {
			.target = c->control_plane, .tenant = c->tenant,
			.bootstrap_token_file = c->bootstrap_token_file,
			.tls = { .insecure = c->cp_insecure, .ca_file = c->cp_ca },
			.state_dir = c->state_dir, .max_runs = (int)c->max_runs,
			.backoff_max_ms = (int)c->reconnect_max_s * 1000, .region = c->region,
			.store = durable_store(d->durable),
			.alloc_cpu_millis = (int64_t)c->alloc_cpu_millis,
			.alloc_memory_bytes = (int64_t)c->alloc_memory_bytes,
			.alloc_scratch_bytes = (int64_t)c->alloc_scratch_bytes,
		};

		if ((err = cplane_open(d->loop, &co, d->runs, d->runtimes, d->meter, d->identity,
				       &d->cplane, e)) < 0)
			return err;
	}
	if (c->metrics_addr) {
		if ((err = metrics_open(d->loop, c->metrics_addr, &d->metrics, e)) < 0)
			return err;
		metrics_register(d->metrics, ops_metrics, d);
		metrics_register(d->metrics, egress_metrics, d->egress);
		metrics_register(d->metrics, telemetry_metrics, d->telemetry);
		metrics_register(d->metrics, meter_metrics, d->meter);
		metrics_register(d->metrics, pool_metrics, d->pool);
		metrics_route(d->metrics, "/healthz", ops_healthz, d);
		metrics_route(d->metrics, "/readyz", ops_readyz, d);
		if ((err = identity_serve_wellknown(d->identity, d->metrics)) < 0)
			return lerr_set(e, -err, "metrics: cannot serve identity's documents");
	}
	return 0;
}

static void close_modules(struct daemon *d)
{
	api_close(d->api);
	metrics_close(d->metrics);
	/* its sandboxes go while their runtime, maps and identity are still open */
	pool_close(d->pool);
	/* identity's reads of the API server go before its client does */
	if (d->identity)
		identity_set_kube(d->identity, NULL);
	runtimes_free(d->runtimes);
	cplane_close(d->cplane);
	runs_close(d->runs);
	logs_close(d->logs);
	durable_close(d->durable);
	identity_close(d->identity);
	meter_close(d->meter);
	telemetry_close(d->telemetry);
	egress_close(d->egress);
	edge_close(d->edge);
	loop_free(d->loop);
}

int main(int argc, char **argv)
{
	char shim[PATH_MAX], cli[PATH_MAX];
	struct daemon d = { 0 };
	struct lerr e = { 0 };
	sigset_t mask;
	int sfd, err;

	log_set_prog("lanternd");
	signal(SIGPIPE, SIG_IGN);
	raise_fd_limit();
	if ((err = lanternd_flags(argc, argv, &d.cfg)) != 0)
		return err > 0 ? 0 : 2;
	if (read_pools(&d) < 0)
		return 2;
	if (!d.cfg.shim) {
		if ((err = beside_self("lantern-shim", shim, sizeof(shim))) < 0) {
			log_error("cannot find own path: %s", strerror(-err));
			return 1;
		}
		d.cfg.shim = shim;
	}
	if (beside_self("lantern", cli, sizeof(cli)) < 0)
		cli[0] = '\0';
	if ((err = util_mkdir_p(d.cfg.state_dir, 0700)) < 0) {
		log_error("state dir %s: %s", d.cfg.state_dir, strerror(-err));
		return 1;
	}
	if (!(d.loop = loop_new())) {
		log_error("event loop: %s", strerror(errno));
		return 1;
	}
	/* blocked before any module starts a thread, which inherits the mask: a SIGTERM
	 * delivered to a thread that does not block it would end lanternd at once, with
	 * no drain */
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	if (open_modules(&d, d.cfg.shim, cli, &e) < 0) {
		log_error("%s", e.msg);
		return 1;
	}
	runs_recover(d.runs);
	pool_start(d.pool);

	sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	if (sfd < 0 || loop_add(d.loop, sfd, EPOLLIN, on_signal, &d) < 0) {
		log_error("signalfd: %s", strerror(errno));
		return 1;
	}
	if (api_open(d.loop, d.cfg.socket, &d.api, &e) < 0 || ops_register(&d, &e) < 0) {
		log_error("%s", e.msg);
		return 1;
	}
	log_info("ready: socket %s, pins %s, cgroup %s (%s)%s%s", d.cfg.socket, d.cfg.bpffs, d.cg.v2,
		 d.cg.layout == CGROUP_HYBRID ? "hybrid" : "unified",
		 d.cfg.process_runtime ? ", process runtime on" : "",
		 d.cfg.kubernetes ? ", spawns as Kubernetes pods" : "");
	err = loop_run(d.loop);
	close_modules(&d);
	return err < 0 ? 1 : 0;
}
