/* ocirun.c: spawns on OCI images in lanternd: the node's runtime handlers and the
 * isolation classes they serve, admission (fail closed, never downgraded), the
 * image, network and bundle of a run, its start through lantern-shim, teardown,
 * reclaiming what a previous lanternd left, and the image/node API.
 *
 * The process runtime (--process-runtime, isolation trusted + image_digest host) is
 * the other handler; run.c keeps it. Everything else comes here.
 *
 * Per run (STATE/runs/<id>): bundle/config.json, container.pid (runc), oci.json (the
 * handler, container id and network namespace, for a restarted lanternd). The
 * container id is the instance id; each lanternd gives its runtimes a state root of
 * its own (STATE/oci/<handler>), so lanternds side by side never see each other's. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lanternd.h"
#include "lantern/image.h"
#include "lantern/oci.h"
#include "lantern/spawn.h"
#include "lantern/util.h"
#include "lantern/workq.h"

#define N_CLASSES (SPEC_ISO_DEVCONTAINER + 1)

struct ocirun {
	const struct oci_handler *h;
	struct image_info img;
	char bundle[PATH_MAX];
	char pidfile[PATH_MAX];
	char netns[PATH_MAX];
	char ip[64];
	char gw[64];                /* the bridge's address, where the spawn's DNS goes */
	bool netns_made;
	bool tearing;               /* a worker is removing it */
	bool torn_down;
	char *argv[24];
	char *envp[4];
};

static struct oci_handler handlers[3];     /* runc, runsc, kata */
static const char *class_handler[N_CLASSES]; /* NULL: not supported on this node */
static struct oci_cni cni;
static char image_store[PATH_MAX];
/* runtime deletes and CNI removals run here, off the event loop: each is an exec of a
 * runtime or plugin that takes tens of milliseconds */
static struct workq *pool;
#define POOL_THREADS 2

static const struct oci_handler *handler_named(const char *name)
{
	for (size_t i = 0; i < ARRAY_SIZE(handlers); i++)
		if (name && !strcmp(handlers[i].name, name))
			return &handlers[i];
	return NULL;
}

static int class_of(const char *name)
{
	for (int i = 0; i < N_CLASSES; i++)
		if (!strcmp(spec_isolation_name((enum spec_isolation)i), name))
			return i;
	return -1;
}

/* STATE/oci/net.json: what `lantern reset` needs to find this node's networks after
 * lanternd is gone (tools/lantern/reset_oci.c). */
static void ocirun_record_net(struct daemon *d)
{
	char path[PATH_MAX + 16], *s;
	json_t *j = json_pack("{s:s, s:s, s:s, s:b}", "bridge", cni.bridge, "subnet", cni.subnet,
			      "netns_prefix", cni.netns_prefix, "default_route", cni.default_route);

	s = j ? json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
	json_decref(j);
	snprintf(path, sizeof(path), "%s/oci/net.json", d->o.state_dir);
	if (!s || util_write_file_atomic(path, s, strlen(s)) < 0)
		log_warn("cannot write %s: lantern reset will not find this node's bridge", path);
	free(s);
}

int ocirun_init(struct daemon *d, struct lerr *e)
{
	static const char *const names[] = { "runc", "runsc", "kata" };
	char root[PATH_MAX + 32], *p;
	int err;

	snprintf(image_store, sizeof(image_store), "%s/images", d->o.state_dir);
	if ((err = util_mkdir_p(image_store, 0700)) < 0)
		return lerr_set(e, err, "images: %s: %s", image_store, strerror(-err));
	for (size_t i = 0; i < ARRAY_SIZE(names); i++) {
		snprintf(root, sizeof(root), "%s/oci/%s", d->o.state_dir, names[i]);
		oci_handler_probe(&handlers[i], names[i], root);
	}
	/* the defaults, then the node's --runtime-handler CLASS=HANDLER entries */
	class_handler[SPEC_ISO_TRUSTED] = "runc";
	class_handler[SPEC_ISO_STANDARD] = "runsc";
	class_handler[SPEC_ISO_UNTRUSTED] = "runsc";
	class_handler[SPEC_ISO_HOSTILE] = "kata";
	for (int i = 0; i < d->o.n_runtime_handlers; i++) {
		const char *m = d->o.runtime_handlers[i], *eq = strchr(m, '=');
		char cls[32];
		int c;

		snprintf(cls, sizeof(cls), "%.*s", eq ? (int)(eq - m) : 0, m);
		if (!eq || (c = class_of(cls)) < 0)
			return lerr_set(e, EINVAL, "--runtime-handler \"%s\": want CLASS=HANDLER with a class of "
					"agent.yaml (trusted, standard, untrusted, hostile, wasm, devcontainer)", m);
		if (!handler_named(eq + 1) && strcmp(eq + 1, "none"))
			return lerr_set(e, EINVAL, "--runtime-handler \"%s\": handler \"%s\" is not one of runc, "
					"runsc, kata, none", m, eq + 1);
		class_handler[c] = strcmp(eq + 1, "none") ? eq + 1 : NULL;
	}

	if ((err = workq_open(d->loop, POOL_THREADS, "lantern-oci", &pool, e)) < 0)
		return err;
	snprintf(cni.plugin_dir, sizeof(cni.plugin_dir), "/usr/lib/cni");
	snprintf(cni.data_dir, sizeof(cni.data_dir), "%s/cni", d->o.state_dir);
	snprintf(cni.bridge, sizeof(cni.bridge), "%s", d->o.net_bridge ? d->o.net_bridge : "lantern0");
	snprintf(cni.subnet, sizeof(cni.subnet), "%s", d->o.net_subnet ? d->o.net_subnet : "10.213.0.0/24");
	cni.default_route = d->o.net_default_route;
	/* namespaces are named after the node's cgroup subtree, so side-by-side lanternds
	 * reclaim only their own */
	snprintf(cni.netns_prefix, sizeof(cni.netns_prefix), "%s-", d->cg.root);
	for (p = cni.netns_prefix; *p; p++)
		if (*p == '/')
			*p = '-';
	ocirun_record_net(d);

	for (int c = 0; c < N_CLASSES; c++) {
		const struct oci_handler *h = handler_named(class_handler[c]);
		const char *cls = spec_isolation_name((enum spec_isolation)c);

		if (!h)
			log_info("node: isolation %s: not supported on this node", cls);
		else if (h->available)
			log_info("node: isolation %s -> %s (%s)", cls, h->name, h->version);
		else
			log_info("node: isolation %s -> %s: not advertised: %s", cls, h->name, h->missing);
	}
	return 0;
}

int ocirun_admit(struct daemon *d, const struct spec *s, struct lerr *e)
{
	const char *cls = spec_isolation_name(s->isolation);
	const char *hn = s->isolation < N_CLASSES ? class_handler[s->isolation] : NULL;
	const struct oci_handler *h = handler_named(hn);

	if (!hn)
		return lerr_set(e, EPERM, "spawn: refused: isolation \"%s\" is not supported on this node "
				"(no runtime handler serves it)", cls);
	if (!h || !h->available)
		return lerr_set(e, EPERM, "spawn: refused: isolation \"%s\" needs runtime handler \"%s\", "
				"not advertised on this node: %s", cls, hn,
				h ? h->missing : "unknown handler");
	if (!strcmp(s->image_digest, "host"))
		return lerr_set(e, EPERM, "spawn: refused: image_digest \"host\" runs only as isolation: "
				"trusted under lanternd --process-runtime; isolation \"%s\" needs an image "
				"NAME@sha256:HEX", cls);
	if (s->network == SPEC_NET_TENANT_VPC)
		return lerr_set(e, EPERM, "spawn: refused: network \"tenant_vpc\" is not supported on this node");
	if (s->isolation == SPEC_ISO_UNTRUSTED && s->network == SPEC_NET_OPEN)
		return lerr_set(e, EPERM, "spawn: refused: isolation \"untrusted\" allows network none or "
				"allowlist_domain only, not \"open\"");
	(void)d;
	return 0;
}

int ocirun_prepare(struct daemon *d, struct run *r, struct lerr *e)
{
	struct ocirun *o = calloc(1, sizeof(*o));
	int err;

	if (!o)
		return lerr_set(e, ENOMEM, "spawn: out of memory");
	ocirun_free(r); /* a resumed run starts over in a fresh instance */
	o->h = handler_named(class_handler[r->spec->isolation]);
	if ((err = image_resolve(image_store, r->spec->image_digest, &o->img, e)) < 0) {
		free(o);
		return err;
	}
	r->oci = o;
	return 0;
}

static void ocirun_record(struct run *r)
{
	struct ocirun *o = r->oci;
	char path[PATH_MAX + 16], *s;
	json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:s}", "handler", o->h->name, "container",
			      r->instance_id, "netns", o->netns_made ? o->netns : "", "image",
			      r->spec->image_digest, "manifest", o->img.digest);

	s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(j);
	snprintf(path, sizeof(path), "%s/oci.json", r->dir);
	/* no fsync: only a lanternd restarted on the same boot needs it (a power loss
	 * ends the container too) */
	if (!s || util_write_file_replace(path, s, strlen(s)) < 0)
		log_error("run %s: cannot write %s: a restarted lanternd may not find its container", r->id, path);
	free(s);
}

/* The spawn's namespace cannot reach lanternd's loopback, where the instance's DNS
 * proxy listens: the proxy also listens on the bridge's address, and the egress
 * programs send the instance's IPv4 DNS there. Before the workload starts. The address
 * is recorded even without hostname rules, so a policy update that brings some opens
 * its proxy there too (run.c). */
static int ocirun_dns_on_bridge(struct daemon *d, struct run *r, struct lerr *e)
{
	struct ocirun *o = r->oci;
	struct in_addr gw;
	int err;

	if (inet_pton(AF_INET, o->gw, &gw) != 1) {
		if (!r->dns)
			return 0;
		return lerr_set(e, EIO, "spawn: network %s: the bridge %s has no IPv4 gateway address "
				"(\"%s\") for the DNS proxy of hostname egress rules", o->netns, cni.bridge, o->gw);
	}
	if (r->dns && (err = dns_server_listen_ip4(r->dns, gw.s_addr, e)) < 0)
		return err;
	return lbpf_instance_set_dns_ip4(d->bpf, r->cg.id, gw.s_addr, e);
}

int ocirun_start(struct daemon *d, struct run *r, struct spawn_req *req, struct lerr *e)
{
	struct ocirun *o = r->oci;
	const struct spec *s = r->spec;
	char cgpath[512], hsock[PATH_MAX + 32], hdir[PATH_MAX + 16];
	char e_run[64], e_inst[64];
	char *lenv[4];
	int err, n = 0;
	bool host_net = false;

	if (s->network != SPEC_NET_NONE) {
		if ((err = oci_cni_add(&cni, r->instance_id, o->netns, sizeof(o->netns), o->ip, o->gw, e)) < 0)
			return err;
		o->netns_made = true;
		host_net = o->h->kind == OCI_RUNSC;
		if ((err = ocirun_dns_on_bridge(d, r, e)) < 0)
			return err;
	}
	snprintf(o->bundle, sizeof(o->bundle), "%s/bundle", r->dir);
	snprintf(o->pidfile, sizeof(o->pidfile), "%s/container.pid", r->dir);
	if ((err = util_mkdir_p(o->bundle, 0700)) < 0)
		return lerr_set(e, err, "spawn: bundle %s: %s", o->bundle, strerror(-err));
	snprintf(e_run, sizeof(e_run), "LANTERN_RUN_ID=%s", r->id);
	snprintf(e_inst, sizeof(e_inst), "LANTERN_INSTANCE_ID=%s", r->instance_id);
	lenv[n++] = e_run;
	lenv[n++] = e_inst;
	/* the harness socket, when the run has one, appears at
	 * /run/lantern/harness/harness.sock: its directory is bind-mounted (durable.c) */
	snprintf(hsock, sizeof(hsock), "%s/harness/harness.sock", r->dir);
	if (access(hsock, F_OK) == 0)
		lenv[n++] = "LANTERN_HARNESS_SOCKET=/run/lantern/harness/harness.sock";
	snprintf(hdir, sizeof(hdir), "%s/harness", r->dir);
	lenv[n] = NULL;
	snprintf(cgpath, sizeof(cgpath), "/%s/%s", d->cg.root, r->cg.name);

	struct oci_bundle_req br = {
		.dir = o->bundle,
		.rootfs = o->img.rootfs,
		.image_config = o->img.config,
		.spec = s,
		.lantern_env = lenv,
		.cgroups_path = cgpath,
		.kind = o->h->kind,
		.net = o->netns_made ? OCI_NET_NETNS : OCI_NET_LOOPBACK,
		.netns_path = o->netns,
		.hostname = r->instance_id,
		.scratch_bytes = s->limits.scratch_bytes,
		.seccomp_allowlist = s->isolation == SPEC_ISO_UNTRUSTED,
		.harness_dir = access(hsock, F_OK) == 0 ? hdir : NULL,
	};
	if ((err = oci_bundle_write(&br, e)) < 0)
		return err;
	if (oci_run_argv(o->h, o->bundle, r->instance_id, o->pidfile, host_net, o->argv,
			 (int)ARRAY_SIZE(o->argv)) < 0)
		return lerr_set(e, E2BIG, "spawn: %s command line too long", o->h->name);
	o->envp[0] = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
	o->envp[1] = NULL;
	ocirun_record(r);
	req->argv = o->argv;
	req->envp = o->envp;
	req->netns = host_net ? o->netns : NULL;
	req->wait_pidfile = o->h->kind == OCI_RUNSC ? NULL : o->pidfile;
	return 0;
}

void ocirun_json(const struct run *r, json_t *j)
{
	const struct ocirun *o = r->oci;

	if (!o)
		return;
	json_object_set_new(j, "handler", json_string(o->h->name));
	json_object_set_new(j, "image", json_string(o->img.digest));
	if (o->ip[0])
		json_object_set_new(j, "ip", json_string(o->ip));
}

/* For a run a previous lanternd started: what oci.json recorded. */
static struct ocirun *ocirun_load(struct run *r)
{
	char path[PATH_MAX + 16];
	struct ocirun *o;
	json_t *j;

	snprintf(path, sizeof(path), "%s/oci.json", r->dir);
	if (!(j = json_load_file(path, 0, NULL)))
		return NULL;
	o = calloc(1, sizeof(*o));
	if (o) {
		const char *ns = json_string_value(json_object_get(j, "netns")) ?: "";

		o->h = handler_named(json_string_value(json_object_get(j, "handler")));
		snprintf(o->netns, sizeof(o->netns), "%s", ns);
		o->netns_made = ns[0] != '\0';
		snprintf(o->img.digest, sizeof(o->img.digest), "%s",
			 json_string_value(json_object_get(j, "manifest")) ?: "");
		snprintf(o->bundle, sizeof(o->bundle), "%s/bundle", r->dir);
		snprintf(o->pidfile, sizeof(o->pidfile), "%s/container.pid", r->dir);
	}
	json_decref(j);
	return o;
}

void ocirun_adopt(struct run *r)
{
	if (!r->oci)
		r->oci = ocirun_load(r);
}

/* What one teardown needs, copied so a worker owns it while the loop goes on. */
struct teardown_job {
	struct run *r;                  /* touched on the loop only (completion) */
	void (*cont)(struct run *r);
	const struct oci_handler *h;    /* static table: lives as long as lanternd */
	char run_id[32], inst[32];
	char bundle[PATH_MAX], pidfile[PATH_MAX];
	bool netns_made;
};

/* Removes the container (its processes and the cgroups the runtime made), the
 * network namespace with its veth and address, and the bundle. */
static void teardown_work(void *arg)
{
	struct teardown_job *j = arg;
	int err;

	if (j->h && (err = oci_delete(j->h, j->inst)) < 0 && err != -ENOENT)
		log_warn("run %s: %s delete %s: %s", j->run_id, j->h->name, j->inst, strerror(-err));
	if (j->netns_made)
		oci_cni_del(&cni, j->inst);
	if (j->bundle[0])
		util_rm_rf(j->bundle);
	if (j->pidfile[0])
		unlink(j->pidfile);
}

static struct teardown_job *teardown_job_new(struct run *r)
{
	struct ocirun *o = r->oci;
	struct teardown_job *j;

	if (!o)
		o = r->oci = ocirun_load(r);
	if (!o || o->torn_down || !(j = calloc(1, sizeof(*j))))
		return NULL;
	j->r = r;
	j->h = o->h;
	j->netns_made = o->netns_made;
	snprintf(j->run_id, sizeof(j->run_id), "%s", r->id);
	snprintf(j->inst, sizeof(j->inst), "%s", r->instance_id);
	snprintf(j->bundle, sizeof(j->bundle), "%s", o->bundle);
	snprintf(j->pidfile, sizeof(j->pidfile), "%s", o->pidfile);
	return j;
}

static void teardown_done(void *arg)
{
	struct teardown_job *j = arg;

	if (j->r->oci) {
		j->r->oci->torn_down = true;
		j->r->oci->tearing = false;
	}
	if (j->cont)
		j->cont(j->r);
	free(j);
}

/* The instance cgroup itself and the map entry are run.c's, after this. */
void ocirun_teardown(struct daemon *d, struct run *r)
{
	struct teardown_job *j = teardown_job_new(r);

	if (!j)
		return;
	teardown_work(j);
	j->cont = NULL;
	teardown_done(j);
}

bool ocirun_teardown_async(struct daemon *d, struct run *r, void (*cont)(struct run *r))
{
	struct teardown_job *j = pool ? teardown_job_new(r) : NULL;

	if (!j)
		return false;
	j->cont = cont;
	if (workq_submit(pool, teardown_work, teardown_done, j) < 0) {
		free(j);
		return false;
	}
	r->oci->tearing = true;
	return true;
}

void ocirun_close(struct daemon *d)
{
	workq_close(pool);
	pool = NULL;
}

void ocirun_free(struct run *r)
{
	if (r->oci) {
		image_info_free(&r->oci->img);
		free(r->oci);
		r->oci = NULL;
	}
}

static bool live_instance(struct daemon *d, const char *inst)
{
	for (struct run *r = d->runs; r; r = r->next)
		if ((!run_status_final(r->status) || (r->oci && r->oci->tearing)) &&
		    !strcmp(r->instance_id, inst))
			return true;
	return false;
}

void ocirun_reclaim(struct daemon *d)
{
	char **ids;
	size_t n;

	for (size_t i = 0; i < ARRAY_SIZE(handlers); i++) {
		if (!handlers[i].available || oci_list(&handlers[i], &ids, &n) < 0)
			continue;
		for (size_t k = 0; k < n; k++) {
			if (!live_instance(d, ids[k])) {
				log_info("reclaiming %s container %s: no run owns it", handlers[i].name, ids[k]);
				oci_delete(&handlers[i], ids[k]);
			}
			free(ids[k]);
		}
		free(ids);
	}
	if (oci_cni_list(&cni, &ids, &n) == 0) {
		for (size_t k = 0; k < n; k++) {
			if (!live_instance(d, ids[k])) {
				log_info("reclaiming network namespace %s%s: no run owns it", cni.netns_prefix, ids[k]);
				oci_cni_del(&cni, ids[k]);
			}
			free(ids[k]);
		}
		free(ids);
	}
}

static bool image_busy(void *ctx, const char *digest)
{
	struct daemon *d = ctx;

	for (struct run *r = d->runs; r; r = r->next)
		if (!run_status_final(r->status) && r->oci && !strcmp(r->oci->img.digest, digest))
			return true;
	return false;
}

static json_t *node_json(struct daemon *d)
{
	json_t *classes = json_array(), *hs = json_array();

	for (int c = 0; c < N_CLASSES; c++) {
		const struct oci_handler *h = handler_named(class_handler[c]);
		json_t *x = json_pack("{s:s}", "class", spec_isolation_name((enum spec_isolation)c));

		if (!h) {
			json_object_set_new(x, "advertised", json_false());
			json_object_set_new(x, "reason", json_string("not supported on this node"));
		} else {
			json_object_set_new(x, "handler", json_string(h->name));
			json_object_set_new(x, "advertised", json_boolean(h->available));
			if (!h->available)
				json_object_set_new(x, "reason", json_string(h->missing));
		}
		json_array_append_new(classes, x);
	}
	for (size_t i = 0; i < ARRAY_SIZE(handlers); i++) {
		json_t *x = json_pack("{s:s, s:b}", "name", handlers[i].name, "available", handlers[i].available);

		if (handlers[i].available)
			json_object_set_new(x, "version", json_string(handlers[i].version));
		else
			json_object_set_new(x, "missing", json_string(handlers[i].missing));
		json_array_append_new(hs, x);
	}
	return json_pack("{s:s, s:o, s:o, s:b, s:{s:s, s:s, s:b}, s:s}", "type", "node", "classes", classes,
			 "handlers", hs, "process_runtime", d->o.process_runtime, "network", "bridge",
			 cni.bridge, "subnet", cni.subnet, "default_route", cni.default_route,
			 "cgroup_layout", d->cg.layout == CGROUP_HYBRID ? "hybrid" : "unified");
}

bool ocirun_api(struct daemon *d, struct client *c, const char *op, json_t *req)
{
	struct lerr e = { 0 };
	json_t *res = NULL;

	if (!strcmp(op, "node")) {
		api_send(c, node_json(d));
	} else if (!strcmp(op, "image_import")) {
		const char *path = json_string_value(json_object_get(req, "path"));

		if (!path || image_import(image_store, path, &res, &e) < 0)
			api_send(c, json_pack("{s:s, s:s}", "type", "error", "error",
					      path ? e.msg : "image_import needs \"path\""));
		else
			api_send(c, json_pack("{s:s, s:o}", "type", "images", "images", res));
	} else if (!strcmp(op, "image_ls")) {
		if (image_list(image_store, &res, &e) < 0)
			api_send(c, json_pack("{s:s, s:s}", "type", "error", "error", e.msg));
		else
			api_send(c, json_pack("{s:s, s:o}", "type", "images", "images", res));
	} else if (!strcmp(op, "image_rm")) {
		const char *ref = json_string_value(json_object_get(req, "ref"));

		if (!ref || image_remove(image_store, ref, image_busy, d, &res, &e) < 0)
			api_send(c, json_pack("{s:s, s:s}", "type", "error", "error",
					      ref ? e.msg : "image_rm needs \"ref\""));
		else
			api_send(c, json_pack("{s:s, s:o}", "type", "images", "images", res));
	} else {
		return false;
	}
	api_finish(c);
	return true;
}
