/* oci.c: the OCI runtime: spawns on images by digest under the node's handlers (runc,
 * runsc, kata), each isolation class mapped to one (refused fail-closed when its
 * handler is not advertised, never downgraded), the image and network of a run, its
 * bundle and start through lantern-shim, teardown on a worker thread, reclaiming what
 * a previous lanternd left, and the image and node operations of the local API.
 *
 * Images are imported and unpacked on a worker thread of their own (one: imports never
 * overlap), so a big or hostile archive never stalls the loop; the `image_import` op
 * answers when it is done. A spawn's prepare only verifies its image (image_resolve:
 * a few stat calls and the hashes of manifest and config), so it stays on the loop
 * and never waits for an unpack.
 *
 * Per run (STATE/runs/<id>): bundle/config.json, container.pid (runc), oci.json (the
 * handler, container id and network namespace, for a restarted lanternd). The
 * container id is the instance id; each lanternd gives its runtimes a state root of
 * its own (STATE/oci/<handler>), so lanternds side by side never see each other's. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runtime_internal.h"
#include "lantern/image.h"
#include "lantern/oci.h"
#include "lantern/workq.h"

/* runtime deletes and CNI removals run here, off the event loop: each is an exec of a
 * runtime or plugin that takes tens of milliseconds */
#define POOL_THREADS 2
/* How long a claim waits for a pooled sandbox's waiter to exec the workload: a waiter
 * that is stopped or stuck fails the claim (a cold start follows) instead of holding
 * the loop. */
#define SANDBOX_BINDS 8


struct runtime_oci {
	struct loop *loop;
	struct oci_handler handlers[3];          /* runc, runsc, kata */
	const char *class_handler[OCI_N_CLASSES];    /* NULL: not supported on this node */
	struct oci_cni cni;
	char image_store[PATH_MAX];
	char state_dir[PATH_MAX];
	char shim[PATH_MAX];
	uint64_t log_max;
	bool process_runtime;
	bool handlers_only;
	enum cgroup_layout layout;
	char cg_root[128];
	struct workq *pool;
	struct workq *images;                    /* imports, one at a time */
	int imports;                             /* submitted and not answered yet */
	struct image_limits limits;
	atomic_bool stopping;                    /* ends an import under way at close */
};

struct oci_run {
	struct runtime_shim shim;
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
	/* a pooled sandbox this run claimed: its waiter execs the workload at start */
	bool pooled;
	int waiter_fd;
	struct runtime_pooled_mount binds[SANDBOX_BINDS];
	size_t nbinds;
};

/* A pooled sandbox of this runtime, until a run claims it (runtime_sandbox.state). */
struct oci_sandbox {
	const struct oci_handler *h;
	struct image_info img;
	char inst[32];
	char bundle[PATH_MAX];
	char pidfile[PATH_MAX];     /* outside its directory, which is renamed at the claim */
	char netns[PATH_MAX];
	char ip[64], gw[64];
	bool netns_made;
	struct runtime_pooled_mount binds[SANDBOX_BINDS];
	size_t nbinds;
	char *argv[24];
};

static const struct oci_handler *handler_named(const struct runtime_oci *o, const char *name)
{
	for (size_t i = 0; i < ARRAY_SIZE(o->handlers); i++)
		if (name && !strcmp(o->handlers[i].name, name))
			return &o->handlers[i];
	return NULL;
}

static struct oci_run *run_of(const struct run *r)
{
	return run_runtime_state(r);
}

/* ---- admission ---- */

static int oci_admit(void *arg, const struct spec *s, struct lerr *e)
{
	struct runtime_oci *o = arg;
	const char *cls = spec_isolation_name(s->isolation);
	const char *hn = s->isolation < OCI_N_CLASSES ? o->class_handler[s->isolation] : NULL;
	const struct oci_handler *h = handler_named(o, hn);

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
	if (runtime_refuse_unhonoured(s, e) < 0)
		return -EPERM;
	return 0;
}

/* The runtime's admission: none of its own when its handlers serve pods. */
static int oci_admit_spawn(void *arg, const struct spec *s, struct lerr *e)
{
	struct runtime_oci *o = arg;

	return o->handlers_only ? -ENOENT : oci_admit(o, s, e);
}

int runtime_oci_check(struct runtime_oci *o, const struct spec *s, struct lerr *e)
{
	return oci_admit(o, s, e);
}

/* ---- a run ---- */

static void oci_run_free(struct oci_run *or)
{
	runtime_shim_forget(&or->shim);
	if (or->pooled && or->waiter_fd >= 0)
		close(or->waiter_fd);
	image_info_free(&or->img);
	free(or);
}

static void oci_record(struct run *r, struct oci_run *or)
{
	char path[PATH_MAX + 16], *s;
	json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "handler", or->h->name, "container",
			      run_instance_id(r), "netns", or->netns_made ? or->netns : "", "image",
			      run_spec(r)->image_digest, "manifest", or->img.digest, "pidfile", or->pidfile);

	s = j ? json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
	json_decref(j);
	snprintf(path, sizeof(path), "%s/oci.json", run_dir(r));
	/* no fsync: only a lanternd restarted on the same boot needs it (a power loss
	 * ends the container too) */
	if (!s || util_write_file_replace(path, s, strlen(s)) < 0)
		log_error("run %s: cannot write %s: a restarted lanternd may not find its container",
			  run_id(r), path);
	free(s);
}

/* The image verified and the network made, before the instance: the spawn's namespace
 * cannot reach lanternd's loopback, where the instance's DNS proxy listens, so the
 * bridge's address is where its DNS goes (the egress subscriber listens there). */
static int oci_prepare(void *arg, struct run *r, struct lerr *e)
{
	struct runtime_oci *o = arg;
	const struct spec *s = run_spec(r);
	struct oci_run *or = run_of(r);
	struct in_addr gw = { 0 };
	int err;

	if (or) {
		/* a resumed run starts over in a fresh instance */
		oci_run_free(or);
		run_set_runtime_state(r, NULL);
	}
	if (!(or = calloc(1, sizeof(*or))))
		return lerr_set(e, ENOMEM, "spawn: out of memory");
	runtime_shim_init(&or->shim, o->loop, r, true);
	or->waiter_fd = -1;
	or->h = handler_named(o, o->class_handler[s->isolation]);
	if ((err = image_resolve(o->image_store, s->image_digest, &or->img, e)) < 0) {
		free(or);
		return err;
	}
	run_set_runtime_state(r, or);
	snprintf(or->bundle, sizeof(or->bundle), "%s/bundle", run_dir(r));
	snprintf(or->pidfile, sizeof(or->pidfile), "%s/container.pid", run_dir(r));
	if (s->network == SPEC_NET_NONE) {
		run_set_network(r, true, 0);
		return 0;
	}
	if ((err = oci_cni_add(&o->cni, run_instance_id(r), or->netns, sizeof(or->netns), or->ip,
			       or->gw, e)) < 0)
		return err;
	or->netns_made = true;
	if (inet_pton(AF_INET, or->gw, &gw) != 1)
		log_warn("run %s: network %s: the bridge %s has no IPv4 gateway address (\"%s\"): "
			 "hostname egress rules cannot work", run_id(r), or->netns, o->cni.bridge, or->gw);
	run_set_network(r, true, gw.s_addr);
	return 0;
}


/* ---- pooled sandboxes (docs/pools.md) ---- */

/* The runtime's part of a pooled sandbox: the image verified, its network, the bundle
 * whose process is the waiter, and the shim starting it; on a pool worker thread. */
static int oci_sandbox_start(void *arg, const struct runtime_sandbox_req *q, struct runtime_sandbox *sb,
			     struct lerr *e)
{
	static char *const path_env[] = { "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", NULL };
	struct runtime_oci *o = arg;
	const struct spec *s = q->spec;
	struct oci_sandbox *ox = calloc(1, sizeof(*ox));
	struct oci_bind binds[SANDBOX_BINDS + 1];
	size_t nb = 0;
	char cgpath[512], dir[PATH_MAX + 16];
	bool host_net;
	int err;

	if (!ox)
		return lerr_set(e, ENOMEM, "pool: out of memory");
	ox->h = handler_named(o, o->class_handler[s->isolation]);
	if (!ox->h || !ox->h->available) {
		free(ox);
		return lerr_set(e, EPERM, "pool: isolation \"%s\" is not served on this node",
				spec_isolation_name(s->isolation));
	}
	snprintf(ox->inst, sizeof(ox->inst), "%s", q->instance_id);
	snprintf(ox->bundle, sizeof(ox->bundle), "%s/bundle", q->dir);
	snprintf(dir, sizeof(dir), "%s/oci/pool", o->state_dir);
	snprintf(ox->pidfile, sizeof(ox->pidfile), "%s/%s.pid", dir, q->instance_id);
	if ((err = image_resolve(o->image_store, s->image_digest, &ox->img, e)) < 0) {
		free(ox);
		return err;
	}
	if ((err = util_mkdir_p(dir, 0700)) < 0 || (err = util_mkdir_p(ox->bundle, 0700)) < 0) {
		lerr_set(e, err, "pool: %s: %s", ox->bundle, strerror(-err));
		goto fail;
	}
	for (size_t i = 0; i < q->n_mounts && nb < SANDBOX_BINDS; i++) {
		if ((err = runtime_pooled_mount_note(&ox->binds[nb], q->mounts[i].host, q->mounts[i].sandbox, e)) < 0)
			goto fail;
		binds[nb++] = (struct oci_bind){ q->mounts[i].host, q->mounts[i].sandbox, q->mounts[i].read_only };
	}
	ox->nbinds = nb;
	binds[nb++] = (struct oci_bind){ q->waiter_bin, q->waiter_argv[0], true, true };
	if (s->network != SPEC_NET_NONE) {
		if ((err = oci_cni_add(&o->cni, q->instance_id, ox->netns, sizeof(ox->netns), ox->ip, ox->gw, e)) < 0)
			goto fail;
		ox->netns_made = true;
	}
	host_net = ox->netns_made && ox->h->kind == OCI_RUNSC;
	snprintf(cgpath, sizeof(cgpath), "/%s/%s", o->cg_root, q->cg->name);

	struct oci_bundle_req br = {
		.dir = ox->bundle,
		.rootfs = ox->img.rootfs,
		.image_config = ox->img.config,
		.spec = s,
		.cgroups_path = cgpath,
		.kind = ox->h->kind,
		.net = ox->netns_made ? OCI_NET_NETNS : OCI_NET_LOOPBACK,
		.netns_path = ox->netns,
		.hostname = q->instance_id,
		.scratch_bytes = s->limits.scratch_bytes,
		.seccomp_allowlist = s->isolation == SPEC_ISO_UNTRUSTED,
		.binds = binds,
		.n_binds = nb,
		.waiter_argv = q->waiter_argv,
	};
	if ((err = oci_bundle_write(&br, e)) < 0)
		goto fail;
	if (oci_run_argv(ox->h, ox->bundle, q->instance_id, ox->pidfile, host_net, ox->argv,
			 (int)ARRAY_SIZE(ox->argv)) < 0) {
		err = lerr_set(e, E2BIG, "pool: %s command line too long", ox->h->name);
		goto fail;
	}
	struct spawn_req req = {
		.shim_path = o->shim, .run_dir = q->dir, .cg = q->cg, .log_max = o->log_max,
		.argv = ox->argv, .envp = path_env,
		.netns = host_net ? ox->netns : NULL,
		.wait_pidfile = ox->h->kind == OCI_RUNSC ? NULL : ox->pidfile,
	};
	if ((err = spawn_start(&req, &sb->shim_pid, &sb->shim_pidfd, e)) < 0)
		goto fail;
	sb->state = ox;
	return 0;
fail:
	if (ox->netns_made)
		oci_cni_del(&o->cni, q->instance_id);
	util_rm_rf(ox->bundle);
	image_info_free(&ox->img);
	free(ox);
	return err;
}

/* Removes a sandbox no run took: the container (its processes, the runtime's
 * cgroups), its network and bundle. On a pool worker thread. */
static void oci_sandbox_stop(void *arg, struct runtime_sandbox *sb)
{
	struct runtime_oci *o = arg;
	struct oci_sandbox *ox = sb->state;
	int err;

	if (!ox)
		return;
	if ((err = oci_delete(ox->h, ox->inst)) < 0 && err != -ENOENT)
		log_warn("pool: %s delete %s: %s", ox->h->name, ox->inst, strerror(-err));
	if (ox->netns_made)
		oci_cni_del(&o->cni, ox->inst);
	util_rm_rf(ox->bundle);
	unlink(ox->pidfile);
	image_info_free(&ox->img);
	free(ox);
	sb->state = NULL;
}

/* r takes a started sandbox in place of prepare: its image, network and bundle become
 * the run's, its shim is watched as the run's, its waiter waits for start. */
static int oci_claim(void *arg, struct run *r, struct run_claim *c, struct lerr *e)
{
	struct runtime_oci *o = arg;
	struct runtime_sandbox *sb = c->sandbox;
	struct oci_sandbox *ox = sb ? sb->state : NULL;
	struct in_addr gw = { 0 };
	struct oci_run *or;
	int err;

	if (!ox || c->waiter_fd < 0)
		return lerr_set(e, EINVAL, "claim: no sandbox to take");
	if (!(or = calloc(1, sizeof(*or))))
		return lerr_set(e, ENOMEM, "claim: out of memory");
	runtime_shim_init(&or->shim, o->loop, r, true);
	if ((err = runtime_shim_take(&or->shim, sb->shim_pid, sb->shim_pidfd, e)) < 0) {
		free(or);
		return err;
	}
	sb->shim_pidfd = -1;
	or->h = ox->h;
	or->img = ox->img;
	memset(&ox->img, 0, sizeof(ox->img));
	snprintf(or->bundle, sizeof(or->bundle), "%s/bundle", run_dir(r));
	snprintf(or->pidfile, sizeof(or->pidfile), "%s", ox->pidfile);
	snprintf(or->netns, sizeof(or->netns), "%s", ox->netns);
	snprintf(or->ip, sizeof(or->ip), "%s", ox->ip);
	snprintf(or->gw, sizeof(or->gw), "%s", ox->gw);
	or->netns_made = ox->netns_made;
	or->pooled = true;
	or->waiter_fd = c->waiter_fd;
	c->waiter_fd = -1;
	memcpy(or->binds, ox->binds, sizeof(or->binds));
	or->nbinds = ox->nbinds;
	free(ox);
	sb->state = NULL;
	run_set_runtime_state(r, or);
	if (or->netns_made)
		inet_pton(AF_INET, or->gw, &gw);
	run_set_network(r, true, gw.s_addr);
	/* oci.json once the waiter has exec'd the workload (exec_pooled): only a restart
	 * reads it, for a run whose run.json exists, which is written after the start */
	return 0;
}

/* A claimed run's start: the waiter execs the workload's process, exactly what a
 * cold start's bundle would run, with the run's environment. The run's node
 * directories must be the ones the sandbox was started with (compared by inode), or
 * the claim fails: never a workload missing a mount it was promised. */
static int exec_pooled(struct run *r, struct oci_run *or, struct run_env *env, struct lerr *e)
{
	struct oci_bundle_req br = {
		.rootfs = or->img.rootfs,
		.image_config = or->img.config,
		.spec = run_spec(r),
		.lantern_env = run_env_strings(env, true),
	};
	int err;

	if ((err = runtime_pooled_mounts_match(or->binds, or->nbinds, env, "pooled sandbox", e)) < 0 ||
	    (err = runtime_pooled_exec(&or->waiter_fd, &br, e)) < 0)
		return err;
	oci_record(r, or);
	return 0;
}

static int oci_start(void *arg, struct run *r, struct run_env *env, struct lerr *e)
{
	struct runtime_oci *o = arg;
	struct oci_run *or = run_of(r);
	const struct spec *s = run_spec(r);
	const struct run_env_mount *m;
	struct oci_bind binds[8];
	size_t nm = run_env_mounts(env, &m), nb = 0;
	char cgpath[512];
	bool host_net = or->netns_made && or->h->kind == OCI_RUNSC;
	int err;

	if (or->pooled)
		return exec_pooled(r, or, env, e);
	if ((err = util_mkdir_p(or->bundle, 0700)) < 0)
		return lerr_set(e, err, "spawn: bundle %s: %s", or->bundle, strerror(-err));
	for (size_t i = 0; i < nm && nb < ARRAY_SIZE(binds); i++)
		binds[nb++] = (struct oci_bind){ m[i].host, m[i].sandbox, m[i].read_only };
	snprintf(cgpath, sizeof(cgpath), "/%s/%s", o->cg_root, run_cgroup(r)->name);

	struct oci_bundle_req br = {
		.dir = or->bundle,
		.rootfs = or->img.rootfs,
		.image_config = or->img.config,
		.spec = s,
		.lantern_env = run_env_strings(env, true),
		.cgroups_path = cgpath,
		.kind = or->h->kind,
		.net = or->netns_made ? OCI_NET_NETNS : OCI_NET_LOOPBACK,
		.netns_path = or->netns,
		.hostname = run_instance_id(r),
		.scratch_bytes = s->limits.scratch_bytes,
		.seccomp_allowlist = s->isolation == SPEC_ISO_UNTRUSTED,
		.binds = binds,
		.n_binds = nb,
	};
	if ((err = oci_bundle_write(&br, e)) < 0)
		return err;
	if (oci_run_argv(or->h, or->bundle, run_instance_id(r), or->pidfile, host_net, or->argv,
			 (int)ARRAY_SIZE(or->argv)) < 0)
		return lerr_set(e, E2BIG, "spawn: %s command line too long", or->h->name);
	oci_record(r, or);

	static char *const path_env[] = { "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", NULL };
	struct spawn_req req = {
		.shim_path = o->shim, .run_dir = run_dir(r), .cg = run_cgroup(r), .log_max = o->log_max,
		.argv = or->argv, .envp = path_env,
		.netns = host_net ? or->netns : NULL,
		.wait_pidfile = or->h->kind == OCI_RUNSC ? NULL : or->pidfile,
	};
	return runtime_shim_start(&or->shim, &req, e);
}

static void oci_json(void *arg, const struct run *r, json_t *j)
{
	const struct oci_run *or = run_of(r);

	if (!or || !or->h)
		return;
	json_object_set_new(j, "handler", json_string(or->h->name));
	json_object_set_new(j, "image", json_string(or->img.digest));
	if (or->ip[0])
		json_object_set_new(j, "ip", json_string(or->ip));
}

/* For a run a previous lanternd started: what oci.json recorded. */
static struct oci_run *oci_load(struct runtime_oci *o, struct run *r)
{
	char path[PATH_MAX + 16];
	struct oci_run *or;
	json_t *j;

	snprintf(path, sizeof(path), "%s/oci.json", run_dir(r));
	if (!(j = json_load_file(path, 0, NULL)))
		return NULL;
	if ((or = calloc(1, sizeof(*or)))) {
		const char *ns = json_string_value(json_object_get(j, "netns")) ?: "";

		runtime_shim_init(&or->shim, o->loop, r, true);
		or->h = handler_named(o, json_string_value(json_object_get(j, "handler")));
		snprintf(or->netns, sizeof(or->netns), "%s", ns);
		or->netns_made = ns[0] != '\0';
		snprintf(or->img.digest, sizeof(or->img.digest), "%s",
			 json_string_value(json_object_get(j, "manifest")) ?: "");
		snprintf(or->bundle, sizeof(or->bundle), "%s/bundle", run_dir(r));
		snprintf(or->pidfile, sizeof(or->pidfile), "%s",
			 json_string_value(json_object_get(j, "pidfile")) ?: "");
		if (!or->pidfile[0])
			snprintf(or->pidfile, sizeof(or->pidfile), "%s/container.pid", run_dir(r));
		or->waiter_fd = -1;
		run_set_runtime_state(r, or);
	}
	json_decref(j);
	return or;
}

static enum runtime_found oci_adopt(void *arg, struct run *r, struct run_exit *x)
{
	struct oci_run *or = run_of(r) ? run_of(r) : oci_load(arg, r);

	if (!or) {
		/* started before its bundle was recorded: nothing of it can be running */
		memset(x, 0, sizeof(*x));
		return RUNTIME_GONE;
	}
	return runtime_shim_adopt(&or->shim, x);
}

/* ---- teardown ---- */

/* What one teardown needs, copied so a worker owns it while the loop goes on. */
struct teardown_job {
	struct run *r;                  /* touched on the loop only (completion) */
	void (*done)(struct run *r);
	const struct oci_handler *h;    /* the runtime's table: lives as long as lanternd */
	const struct oci_cni *cni;
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
		oci_cni_del(j->cni, j->inst);
	if (j->bundle[0])
		util_rm_rf(j->bundle);
	if (j->pidfile[0])
		unlink(j->pidfile);
}

static void teardown_done(void *arg)
{
	struct teardown_job *j = arg;
	struct oci_run *or = run_of(j->r);

	if (or) {
		or->torn_down = true;
		or->tearing = false;
	}
	if (j->done)
		j->done(j->r);
	free(j);
}

static void oci_teardown(void *arg, struct run *r, void (*done)(struct run *r))
{
	struct runtime_oci *o = arg;
	struct oci_run *or = run_of(r) ? run_of(r) : oci_load(o, r);
	struct teardown_job *j;

	if (or)
		runtime_shim_forget(&or->shim);
	if (!or || or->torn_down || !(j = calloc(1, sizeof(*j)))) {
		if (done)
			done(r);
		return;
	}
	j->r = r;
	j->done = done;
	j->h = or->h;
	j->cni = &o->cni;
	j->netns_made = or->netns_made;
	snprintf(j->run_id, sizeof(j->run_id), "%s", run_id(r));
	snprintf(j->inst, sizeof(j->inst), "%s", run_instance_id(r));
	snprintf(j->bundle, sizeof(j->bundle), "%s", or->bundle);
	snprintf(j->pidfile, sizeof(j->pidfile), "%s", or->pidfile);
	if (done && o->pool && workq_submit(o->pool, teardown_work, teardown_done, j) == 0) {
		or->tearing = true;
		return;
	}
	teardown_work(j);
	teardown_done(j);
}

static void oci_kill(void *arg, struct run *r)
{
	struct oci_run *or = run_of(r);

	if (or)
		runtime_shim_kill(&or->shim);
}

static void oci_free(void *arg, struct run *r)
{
	struct oci_run *or = run_of(r);

	if (or) {
		oci_run_free(or);
		run_set_runtime_state(r, NULL);
	}
}

/* A container or namespace is someone's while its run is live or being torn down. */
static bool instance_owned(struct runs *t, const char *inst)
{
	for (struct run *r = runs_first(t); r; r = run_next(r)) {
		const struct oci_run *or = run_of(r);

		if ((!run_status_final(run_status(r)) || (or && or->tearing)) &&
		    !strcmp(run_instance_id(r), inst))
			return true;
	}
	return false;
}

static void oci_reclaim(void *arg, struct runs *t)
{
	struct runtime_oci *o = arg;
	char **ids;
	size_t n;

	for (size_t i = 0; i < ARRAY_SIZE(o->handlers); i++) {
		if (!o->handlers[i].available || oci_list(&o->handlers[i], &ids, &n) < 0)
			continue;
		for (size_t k = 0; k < n; k++) {
			if (!instance_owned(t, ids[k])) {
				log_info("reclaiming %s container %s: no run owns it", o->handlers[i].name, ids[k]);
				oci_delete(&o->handlers[i], ids[k]);
			}
			free(ids[k]);
		}
		free(ids);
	}
	if (oci_cni_list(&o->cni, &ids, &n) == 0) {
		for (size_t k = 0; k < n; k++) {
			if (!instance_owned(t, ids[k])) {
				log_info("reclaiming network namespace %s%s: no run owns it", o->cni.netns_prefix, ids[k]);
				oci_cni_del(&o->cni, ids[k]);
			}
			free(ids[k]);
		}
		free(ids);
	}
}

static void oci_close(void *arg)
{
	struct runtime_oci *o = arg;

	atomic_store(&o->stopping, true);
	workq_close(o->images);
	workq_close(o->pool);
	free(o);
}

static const struct runtime_ops oci_ops = {
	.name = "oci",
	.admit = oci_admit_spawn,
	.prepare = oci_prepare,
	.start = oci_start,
	.teardown = oci_teardown,
	.adopt = oci_adopt,
	.kill = oci_kill,
	.reclaim = oci_reclaim,
	.json = oci_json,
	.free = oci_free,
	.close = oci_close,
	.sandbox_start = oci_sandbox_start,
	.claim = oci_claim,
	.sandbox_stop = oci_sandbox_stop,
};

/* ---- the image and node operations ---- */

struct busy_ctx {
	struct runs *t;
};

static bool image_busy(void *ctx, const char *digest)
{
	struct busy_ctx *b = ctx;

	for (struct run *r = runs_first(b->t); r; r = run_next(r)) {
		const struct oci_run *or = run_of(r);

		if (!run_status_final(run_status(r)) && or && run_runtime(r) == &oci_ops &&
		    !strcmp(or->img.digest, digest))
			return true;
	}
	return false;
}

static json_t *node_json(struct runtime_oci *o)
{
	json_t *classes = json_array(), *hs = json_array();

	for (int c = 0; c < OCI_N_CLASSES; c++) {
		const struct oci_handler *h = handler_named(o, o->class_handler[c]);
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
	for (size_t i = 0; i < ARRAY_SIZE(o->handlers); i++) {
		const struct oci_handler *h = &o->handlers[i];
		json_t *x = json_pack("{s:s, s:b}", "name", h->name, "available", h->available);

		json_object_set_new(x, h->available ? "version" : "missing",
				    json_string(h->available ? h->version : h->missing));
		json_array_append_new(hs, x);
	}
	return json_pack("{s:s, s:o, s:o, s:b, s:{s:s, s:s, s:b}, s:s}", "type", "node", "classes", classes,
			 "handlers", hs, "process_runtime", o->process_runtime, "network", "bridge",
			 o->cni.bridge, "subnet", o->cni.subnet, "default_route", o->cni.default_route,
			 "cgroup_layout", o->layout == CGROUP_HYBRID ? "hybrid" : "unified");
}

static json_t *error_json(const char *msg)
{
	return json_pack("{s:s, s:s}", "type", "error", "error", msg);
}

const struct oci_handler *runtime_oci_class_handler(const struct runtime_oci *o, enum spec_isolation c)
{
	const struct oci_handler *h = (int)c < OCI_N_CLASSES ? handler_named(o, o->class_handler[c]) : NULL;

	return h && h->available ? h : NULL;
}

int runtime_oci_bind_answer(const struct runtime_oci *o, const struct spec *s, json_t *answer,
			    struct lerr *e)
{
	const struct oci_handler *h = runtime_oci_class_handler(o, s->isolation);
	char *flags[8];
	json_t *args;
	int n;

	if (!h)
		return lerr_set(e, EPERM, "bind: refused: isolation \"%s\" is not served on this node",
				spec_isolation_name(s->isolation));
	if (h->kind == OCI_KATA)
		return lerr_set(e, EPERM, "bind: refused: isolation \"%s\": handler kata is not run through "
				"lantern-oci", spec_isolation_name(s->isolation));
	n = oci_handler_flags(h, true, flags, (int)ARRAY_SIZE(flags));
	args = json_array();
	for (int i = 0; i < n; i++)
		json_array_append_new(args, json_string(flags[i]));
	json_object_set_new(answer, "runtime", json_string(h->bin));
	json_object_set_new(answer, "handler", json_string(h->name));
	json_object_set_new(answer, "args", args);
	return 0;
}

static json_t *images_json(int err, json_t *res, const struct lerr *e)
{
	return err < 0 ? error_json(e->msg) : json_pack("{s:s, s:o}", "type", "images", "images", res);
}

/* An import, owned by the image worker between submit and completion. */
struct import_job {
	struct runtime_oci *o;
	void (*answer)(void *ctx, json_t *msg);
	void *ctx;
	char path[PATH_MAX];
	json_t *res;
	int err;
	struct lerr e;
};

static void import_work(void *arg)
{
	struct import_job *j = arg;

	j->err = image_import(j->o->image_store, j->path, &j->o->limits, &j->res, &j->e);
}

static void import_done(void *arg)
{
	struct import_job *j = arg;

	j->o->imports--;
	if (j->err < 0)
		log_warn("image import %s: %s", j->path, j->e.msg);
	else
		log_info("image import %s: %zu image(s)", j->path, json_array_size(j->res));
	j->answer(j->ctx, images_json(j->err, j->res, &j->e));
	free(j);
}

int runtime_oci_api(struct runtime_oci *o, struct runs *t, const char *op, json_t *req,
		    void (*answer)(void *ctx, json_t *msg), void *ctx)
{
	struct busy_ctx busy = { t };
	struct lerr e = { 0 };
	json_t *res = NULL;
	int err;

	if (!strcmp(op, "node")) {
		answer(ctx, node_json(o));
	} else if (!strcmp(op, "image_import")) {
		const char *path = json_string_value(json_object_get(req, "path"));
		struct import_job *j;

		if (!path || strlen(path) >= sizeof(j->path)) {
			answer(ctx, error_json("image_import needs \"path\" (shorter than PATH_MAX)"));
		} else if (!(j = calloc(1, sizeof(*j)))) {
			answer(ctx, error_json("image import: out of memory"));
		} else {
			*j = (struct import_job){ .o = o, .answer = answer, .ctx = ctx };
			snprintf(j->path, sizeof(j->path), "%s", path);
			if (workq_submit(o->images, import_work, import_done, j) < 0) {
				free(j);
				answer(ctx, error_json("image import: out of memory"));
			} else {
				o->imports++;
			}
		}
	} else if (!strcmp(op, "image_ls")) {
		err = image_list(o->image_store, &res, &e);
		answer(ctx, images_json(err, res, &e));
	} else if (!strcmp(op, "image_rm")) {
		const char *ref = json_string_value(json_object_get(req, "ref"));

		if (!ref)
			answer(ctx, error_json("image_rm needs \"ref\""));
		else if (o->imports)
			/* an import's blobs are in the store before its image is in the index:
			 * collecting garbage now could take them */
			answer(ctx, error_json("image: an import is under way: nothing removed (try again "
					       "when it has finished)"));
		else {
			err = image_remove(o->image_store, ref, image_busy, &busy, &res, &e);
			answer(ctx, images_json(err, res, &e));
		}
	} else {
		return -ENOENT;
	}
	return 0;
}

/* ---- opening ---- */

/* STATE/oci/net.json: what `lantern reset` needs to find this node's networks after
 * lanternd is gone (tools/lantern/reset_oci.c). */
static void record_net(struct runtime_oci *o)
{
	char path[PATH_MAX + 16], *s;
	json_t *j = json_pack("{s:s, s:s, s:s, s:b}", "bridge", o->cni.bridge, "subnet", o->cni.subnet,
			      "netns_prefix", o->cni.netns_prefix, "default_route", o->cni.default_route);

	s = j ? json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
	json_decref(j);
	snprintf(path, sizeof(path), "%s/oci/net.json", o->state_dir);
	if (!s || util_write_file_atomic(path, s, strlen(s)) < 0)
		log_warn("cannot write %s: lantern reset will not find this node's bridge", path);
	free(s);
}

static int map_classes(struct runtime_oci *o, const struct runtime_oci_opts *opts, struct lerr *e)
{
	int err;

	if ((err = oci_class_map(opts->class_handlers, opts->n_class_handlers, o->class_handler, e)) < 0)
		return err;
	for (int c = 0; c < OCI_N_CLASSES; c++) {
		const struct oci_handler *h = handler_named(o, o->class_handler[c]);
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

int runtime_oci_add(struct runtimes *rs, struct loop *l, const struct runtime_oci_opts *opts,
		    struct runtime_oci **out, struct lerr *e)
{
	static const char *const names[] = { "runc", "runsc", "kata" };
	struct runtime_oci *o = calloc(1, sizeof(*o));
	char root[PATH_MAX + 32], *p;
	int err;

	if (!o)
		return lerr_set(e, ENOMEM, "oci: out of memory");
	o->loop = l;
	o->log_max = opts->log_max;
	o->process_runtime = opts->process_runtime;
	o->handlers_only = opts->handlers_only;
	o->layout = opts->cg->layout;
	snprintf(o->cg_root, sizeof(o->cg_root), "%s", opts->cg->root);
	snprintf(o->shim, sizeof(o->shim), "%s", opts->shim);
	snprintf(o->state_dir, sizeof(o->state_dir), "%s", opts->state_dir);
	snprintf(o->image_store, sizeof(o->image_store), "%s/images", opts->state_dir);
	if ((err = util_mkdir_p(o->image_store, 0700)) < 0) {
		lerr_set(e, err, "images: %s: %s", o->image_store, strerror(-err));
		goto fail;
	}
	for (size_t i = 0; i < ARRAY_SIZE(names); i++) {
		snprintf(root, sizeof(root), "%s/oci/%s", opts->state_dir, names[i]);
		oci_handler_probe(&o->handlers[i], names[i], root);
	}
	if ((err = map_classes(o, opts, e)) < 0)
		goto fail;
	o->limits = (struct image_limits){
		.layer_bytes = opts->image_layer_max ? opts->image_layer_max : IMAGE_LAYER_BYTES_DEFAULT,
		.image_bytes = opts->image_max ? opts->image_max : IMAGE_BYTES_DEFAULT,
		.entries = opts->image_entries ? opts->image_entries : IMAGE_ENTRIES_DEFAULT,
		.stop = &o->stopping,
	};
	if ((err = workq_open(l, POOL_THREADS, "lantern-oci", &o->pool, e)) < 0)
		goto fail;
	if ((err = workq_open(l, 1, "lantern-img", &o->images, e)) < 0) {
		workq_close(o->pool);
		goto fail;
	}
	snprintf(o->cni.plugin_dir, sizeof(o->cni.plugin_dir), "/usr/lib/cni");
	snprintf(o->cni.data_dir, sizeof(o->cni.data_dir), "%s/cni", opts->state_dir);
	snprintf(o->cni.bridge, sizeof(o->cni.bridge), "%s", opts->net_bridge ? opts->net_bridge : "lantern0");
	snprintf(o->cni.subnet, sizeof(o->cni.subnet), "%s", opts->net_subnet ? opts->net_subnet : "10.213.0.0/24");
	o->cni.default_route = opts->net_default_route;
	/* namespaces are named after the node's cgroup subtree, so side-by-side lanternds
	 * reclaim only their own */
	snprintf(o->cni.netns_prefix, sizeof(o->cni.netns_prefix), "%s-", opts->cg->root);
	for (p = o->cni.netns_prefix; *p; p++)
		if (*p == '/')
			*p = '-';
	record_net(o);
	if ((err = runtimes_add(rs, &oci_ops, o)) < 0) {
		lerr_set(e, err, "oci: too many runtimes");
		workq_close(o->images);
		workq_close(o->pool);
		goto fail;
	}
	*out = o;
	return 0;
fail:
	free(o);
	return err;
}
