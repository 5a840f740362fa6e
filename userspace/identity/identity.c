/* identity.c: the node key, each instance's key pair and identity token, the tmpfs the
 * instance reads them from, the run hooks, and the well-known documents (see
 * identity.h).
 *
 * A start asks a remote signer (the control plane) at admission and only waits for
 * the answer after the runtime's preparation and the instance's cgroup, so the round
 * trip overlaps the rest of the start; the tunnel's thread hands the answer over
 * through inbox (a mutex and condition variable), which the waiting start or, for a
 * later refresh, the loop (an eventfd) picks up. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "internal.h"
#include "lantern/metrics.h"

#define TMPFS_FLAGS (MS_NOSUID | MS_NODEV | MS_NOEXEC)
#define DEFAULT_TOKEN_TTL 3600

const uint8_t *identity_node_key(const struct identity *id) { return id->node_pk; }

/* ---- the node key ---- */

static int node_key_load(struct identity *id, struct lerr *e)
{
	char path[PATH_MAX + 16], *pem = NULL;
	struct stat st;
	size_t len;
	int fd, err;

	snprintf(path, sizeof(path), "%s/node.key", id->state_dir);
	if (!(id->node_sk = sodium_malloc(JOSE_SK_BYTES)))
		return lerr_set(e, ENOMEM, "identity: out of memory");
	if ((err = util_read_file(path, &pem, &len)) == 0) {
		err = stat(path, &st) == 0 && (st.st_mode & 077) ? -EPERM : 0;
		if (!err)
			err = jose_pem_read_private(pem, id->node_sk, id->node_pk);
		sodium_memzero(pem, len);
		free(pem);
		if (err == -EPERM)
			return lerr_set(e, EPERM, "identity: node key %s is readable by others (mode %03o): "
					"it must be 0600", path, st.st_mode & 0777);
		if (err < 0)
			return lerr_set(e, EINVAL, "identity: node key %s is not a PKCS#8 Ed25519 key", path);
		return 0;
	}
	if (err != -ENOENT)
		return lerr_set(e, err, "identity: node key %s: %s", path, strerror(-err));
	crypto_sign_keypair(id->node_pk, id->node_sk);
	if (!(pem = jose_pem_private(id->node_sk)))
		return lerr_set(e, ENOMEM, "identity: out of memory");
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	err = fd < 0 ? -errno : 0;
	if (fd >= 0) {
		len = strlen(pem);
		if (write(fd, pem, len) != (ssize_t)len || fsync(fd) < 0)
			err = -EIO;
		close(fd);
	}
	sodium_memzero(pem, strlen(pem));
	free(pem);
	if (err < 0) {
		unlink(path);
		return lerr_set(e, -err, "identity: cannot create node key %s: %s", path, strerror(-err));
	}
	log_info("identity: node key created in %s", path);
	return 0;
}

/* ---- the instance's tmpfs ---- */

static int write_file(const char *dir, const char *name, const char *text, struct lerr *e)
{
	char tmp[PATH_MAX + 64], path[PATH_MAX + 64];
	size_t len = strlen(text);
	int fd, err = 0;

	snprintf(tmp, sizeof(tmp), "%s/.%s", dir, name);
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	/* readable by whatever user the image runs as: the tmpfs is the instance's alone,
	 * and its root on the node (ROOT, 0700) keeps everyone else out */
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0444);
	if (fd < 0 || write(fd, text, len) != (ssize_t)len)
		err = -(errno ? errno : EIO);
	if (fd >= 0)
		close(fd);
	if (!err && rename(tmp, path) < 0)
		err = -errno;
	if (err)
		return lerr_set(e, -err, "identity: %s: %s", path, strerror(-err));
	return 0;
}

/* A read-only remount fails with EBUSY while any process holds a file of the tmpfs open
 * for writing. write_file closes its fd at once, but a child that another of lanternd's
 * threads forks in between (a runtime command, a pool's filler) holds a copy until its
 * exec closes it (O_CLOEXEC): a few ms at most. So EBUSY is retried, for up to 200 ms. */
static int tmpfs_writable(struct id_run *ir, bool rw, struct lerr *e)
{
	unsigned long f = TMPFS_FLAGS | MS_REMOUNT | (rw ? 0 : MS_RDONLY);
	int tries = 0;

	while (mount(NULL, ir->dir, NULL, f, NULL) < 0) {
		if (errno == EBUSY && !rw && ++tries < 200) {
			usleep(1000);
			continue;
		}
		return lerr_set(e, errno, "identity: remounting %s %s: %s", ir->dir, rw ? "rw" : "ro",
				strerror(errno));
	}
	return 0;
}

static int tmpfs_mount(const char *dir, struct lerr *e)
{
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return lerr_set(e, errno, "identity: %s: %s", dir, strerror(errno));
	if (mount("lantern-identity", dir, "tmpfs", TMPFS_FLAGS, "size=64k,nr_inodes=16,mode=0755") < 0) {
		int err = errno;

		rmdir(dir);
		return lerr_set(e, err, "identity: cannot mount a tmpfs at %s: %s", dir, strerror(err));
	}
	return 0;
}

/* Takes inst off the list of pooled instances' tmpfs mounts; true if it was there. */
static bool premounted_take(struct identity *id, const char *inst)
{
	for (size_t i = 0; i < id->n_premounted; i++) {
		if (!strcmp(id->premounted[i], inst)) {
			memcpy(id->premounted[i], id->premounted[--id->n_premounted], sizeof(id->premounted[i]));
			return true;
		}
	}
	return false;
}

static int tmpfs_make(struct id_run *ir, struct lerr *e)
{
	int err;

	if (ir->mounted)
		return 0;
	/* a pooled sandbox's: mounted empty when the pool made it, shown to the sandbox
	 * since; the claiming run fills it */
	if (!premounted_take(ir->id, ir->inst) && (err = tmpfs_mount(ir->dir, e)) < 0)
		return err;
	ir->mounted = true;
	return 0;
}

static void tmpfs_remove(const char *dir)
{
	if (umount2(dir, MNT_DETACH) < 0 && errno != EINVAL && errno != ENOENT)
		log_warn("identity: unmounting %s: %s", dir, strerror(errno));
	if (rmdir(dir) < 0 && errno != ENOENT)
		log_warn("identity: removing %s: %s", dir, strerror(errno));
}

static int write_token(struct id_run *ir, struct lerr *e)
{
	int err;

	if ((err = tmpfs_writable(ir, true, e)) < 0)
		return err;
	err = write_file(ir->dir, "token", ir->token, e);
	if (tmpfs_writable(ir, false, err ? NULL : e) < 0 && !err)
		err = -EIO;
	return err;
}

/* ---- tokens ---- */

static const char *agent_version(const struct run *r)
{
	const struct spec *s = run_spec(r);
	const char *v = s ? spec_label(s, "lantern.dev/agent-version") : NULL;

	return v ? v : s && s->name ? s->name : "";
}

/* The latest a token of r may live: its deadline, or the token TTL from now. */
static int64_t token_exp(const struct identity *id, const struct run *r, int64_t now)
{
	const struct spec *s = run_spec(r);
	int64_t exp = now + (id->o.token_ttl_s ? id->o.token_ttl_s : DEFAULT_TOKEN_TTL);

	if (s && s->limits.timeout_ms) {
		int64_t deadline = run_created(r) + (int64_t)((s->limits.timeout_ms + 999) / 1000);

		if (deadline < exp)
			exp = deadline;
	}
	return exp;
}

static char *node_token(struct identity *id, struct id_run *ir, int64_t now, int64_t exp)
{
	char jti[33];
	json_t *c;
	char *payload, *tok = NULL;

	util_random_hex(jti, 16);
	c = json_pack("{s:s, s:s, s:I, s:I, s:s, s:s, s:s, s:s, s:s, s:{s:o}}", "iss", IDENTITY_ISSUER,
		      "sub", ir->inst, "iat", (json_int_t)now, "exp", (json_int_t)exp, "jti", jti, "typ",
		      "agent-instance", "tenant_id", run_tenant(ir->r), "run_id", run_id(ir->r),
		      "agent_version_id", agent_version(ir->r), "cnf", "jwk", jose_jwk(ir->pk));
	if (c && (payload = jose_jcs(c))) {
		tok = jose_sign(id->node_sk, id->node_kid, "JWT", payload, strlen(payload));
		free(payload);
	}
	json_decref(c);
	return tok;
}

static struct signed_token *inbox_take_locked(struct identity *id, const char *inst)
{
	for (struct signed_token **pp = &id->inbox; *pp; pp = &(*pp)->next)
		if (!strcmp((*pp)->inst, inst)) {
			struct signed_token *t = *pp;

			*pp = t->next;
			return t;
		}
	return NULL;
}

static void signed_free(struct signed_token *t)
{
	if (t) {
		free(t->token);
		free(t);
	}
}

void identity_token_signed(struct identity *id, const char *inst, const char *token, const char *error)
{
	struct signed_token *t = calloc(1, sizeof(*t));
	uint64_t one = 1;

	if (!t)
		return;
	snprintf(t->inst, sizeof(t->inst), "%s", inst);
	t->token = token && *token ? strdup(token) : NULL;
	snprintf(t->error, sizeof(t->error), "%s", error && *error ? error : t->token ? "" : "no token");
	pthread_mutex_lock(&id->mu);
	t->next = id->inbox;
	id->inbox = t;
	pthread_cond_broadcast(&id->cond);
	pthread_mutex_unlock(&id->mu);
	if (write(id->efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		log_warn("identity: waking the loop: %s", strerror(errno));
}

static void schedule_refresh(struct id_run *ir);

#define REFRESH_RETRY_MS 5000
#define REFRESH_RETRY_MAX_MS 60000

/* Takes a signed token; write: into the (read-only) tmpfs now, as for a refresh. */
static int take_token(struct id_run *ir, struct signed_token *t, bool write, struct lerr *e)
{
	int err;

	if (!t->token)
		return lerr_set(e, EACCES, "identity: the control plane did not sign the token of instance "
				"%s: %s", ir->inst, t->error);
	free(ir->token);
	ir->token = t->token;
	t->token = NULL;
	ir->pending = false;
	/* the control plane may have cut exp down to the run's deadline: read it back */
	{
		struct jose_jws j;
		struct lerr pe;

		if (jose_parse(ir->token, strlen(ir->token), &j, &pe) == 0) {
			json_t *c = json_loadb((const char *)j.payload, j.payload_len, 0, NULL);

			ir->exp = json_integer_value(json_object_get(c, "exp"));
			json_decref(c);
			jose_jws_free(&j);
		}
	}
	if (write && ir->mounted && (err = write_token(ir, e)) < 0)
		return err;
	ir->id->tokens_remote++;
	return 0;
}

/* Asks for (or makes) a token for ir's current key. */
static int sign_begin(struct identity *id, struct id_run *ir, struct lerr *e)
{
	int64_t now = (int64_t)time(NULL), exp = token_exp(id, ir->r, now);
	int err;

	if (id->signer) {
		err = id->signer->request(id->signer_arg, ir->r, ir->pk, exp, ir->remote_run_id,
					  sizeof(ir->remote_run_id));
		if (err == 0) {
			ir->remote = ir->pending = true;
			ir->exp = exp;
			return 0;
		}
		if (err != -ENOENT) {
			id->sign_failures++;
			return lerr_set(e, -err, "identity: cannot ask the control plane to sign the token of "
					"instance %s: %s", ir->inst, strerror(-err));
		}
	}
	ir->remote = false;
	free(ir->token);
	if (!(ir->token = node_token(id, ir, now, exp)))
		return lerr_set(e, ENOMEM, "identity: cannot sign a token: out of memory");
	ir->exp = exp;
	id->tokens_node++;
	return 0;
}

/* Waits for the remote signature asked for in sign_begin, up to the timeout. */
static int sign_wait(struct identity *id, struct id_run *ir, struct lerr *e)
{
	struct timespec until;
	struct signed_token *t = NULL;
	int err = 0;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += id->o.sign_timeout_ms / 1000;
	until.tv_nsec += (long)(id->o.sign_timeout_ms % 1000) * 1000000;
	if (until.tv_nsec >= 1000000000) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000;
	}
	pthread_mutex_lock(&id->mu);
	while (!(t = inbox_take_locked(id, ir->inst)) && err != ETIMEDOUT)
		err = pthread_cond_timedwait(&id->cond, &id->mu, &until);
	pthread_mutex_unlock(&id->mu);
	if (!t) {
		id->sign_failures++;
		return lerr_set(e, ETIMEDOUT, "identity: the control plane did not sign the token of instance "
				"%s within %u ms", ir->inst, id->o.sign_timeout_ms);
	}
	err = take_token(ir, t, false, e);
	signed_free(t);
	return err;
}

static void on_refresh(struct loop *l, void *arg)
{
	struct id_run *ir = arg;
	struct lerr e = { 0 };

	ir->refresh_timer = 0;
	/* a refresh that cannot be asked for, or that no answer comes to (a control plane
	 * away past the tunnel's keep, or one refusing), is asked again, 5 s then doubling
	 * up to a minute, until one is signed or the run ends */
	ir->retry_ms = ir->retry_ms ? (ir->retry_ms >= REFRESH_RETRY_MAX_MS / 2 ? REFRESH_RETRY_MAX_MS :
				       ir->retry_ms * 2) : REFRESH_RETRY_MS;
	if (sign_begin(ir->id, ir, &e) < 0) {
		log_error("run %s: %s (asked again in %u ms)", run_id(ir->r), e.msg, ir->retry_ms);
		ir->refresh_timer = loop_timer_add(ir->id->loop, ir->retry_ms, on_refresh, ir);
		return;
	}
	if (ir->pending) {
		/* written when the answer arrives (on_inbox) */
		ir->refresh_timer = loop_timer_add(ir->id->loop, ir->retry_ms, on_refresh, ir);
		return;
	}
	if (write_token(ir, &e) < 0)
		log_error("run %s: %s", run_id(ir->r), e.msg);
	schedule_refresh(ir);
}

/* A token that ends before the run's deadline is renewed two thirds into its life. */
static void schedule_refresh(struct id_run *ir)
{
	int64_t now = (int64_t)time(NULL);
	const struct spec *s = run_spec(ir->r);
	int64_t deadline = s && s->limits.timeout_ms ?
			   run_created(ir->r) + (int64_t)((s->limits.timeout_ms + 999) / 1000) : INT64_MAX;

	if (ir->refresh_timer)
		loop_timer_cancel(ir->id->loop, ir->refresh_timer);
	ir->refresh_timer = 0;
	ir->retry_ms = 0;
	if (ir->exp >= deadline || ir->exp <= now)
		return;
	ir->refresh_timer = loop_timer_add(ir->id->loop, (uint64_t)(ir->exp - now) * 2000 / 3, on_refresh, ir);
}

static void on_inbox(struct loop *l, int fd, uint32_t events, void *arg)
{
	struct identity *id = arg;
	struct signed_token *list;
	uint64_t n;

	if (read(fd, &n, sizeof(n)) < 0 && errno != EAGAIN)
		log_warn("identity: eventfd: %s", strerror(errno));
	pthread_mutex_lock(&id->mu);
	list = id->inbox;
	id->inbox = NULL;
	pthread_mutex_unlock(&id->mu);
	while (list) {
		struct signed_token *t = list;
		struct run *r = runs_by_instance(id->runs, t->inst);
		struct id_run *ir = r ? identity_run_of(id, r) : NULL;
		struct lerr e = { 0 };

		list = t->next;
		/* only refreshes arrive here: a start takes its own answer */
		if (ir && ir->pending) {
			if (take_token(ir, t, true, &e) < 0)
				log_error("run %s: %s", run_id(r), e.msg);
			else
				schedule_refresh(ir);
		}
		signed_free(t);
	}
}

/* ---- issuing ---- */

static struct id_run *ir_new(struct identity *id, struct run *r)
{
	struct id_run *ir = calloc(1, sizeof(*ir));

	if (!ir)
		return NULL;
	ir->id = id;
	ir->r = r;
	snprintf(ir->inst, sizeof(ir->inst), "%s", run_instance_id(r));
	snprintf(ir->dir, sizeof(ir->dir), "%s/%s", id->root, ir->inst);
	return ir;
}

static void ir_free(struct id_run *ir)
{
	if (!ir)
		return;
	if (ir->refresh_timer)
		loop_timer_cancel(ir->id->loop, ir->refresh_timer);
	if (ir->sk)
		sodium_free(ir->sk);
	identity_secrets_abandon(ir->id, ir, "the run's instance is gone");
	identity_secrets_free(ir);
	free(ir->token);
	free(ir);
}

/* A fresh key pair for r's current instance, and its token asked for. */
static int issue_begin(struct identity *id, struct run *r, struct lerr *e)
{
	struct id_run *ir = identity_run_of(id, r);
	int err;

	if (ir && strcmp(ir->inst, run_instance_id(r))) {
		/* a resumed run: the old instance's identity goes with it */
		if (ir->mounted)
			tmpfs_remove(ir->dir);
		ir_free(ir);
		ir = NULL;
	}
	if (!ir) {
		if (!(ir = ir_new(id, r)))
			return lerr_set(e, ENOMEM, "identity: out of memory");
		run_set_slot(r, id->slot, ir);
	}
	if (!ir->sk && !(ir->sk = sodium_malloc(JOSE_SK_BYTES)))
		return lerr_set(e, ENOMEM, "identity: out of memory");
	crypto_sign_keypair(ir->pk, ir->sk);
	jose_kid(ir->pk, ir->kid);
	if ((err = sign_begin(id, ir, e)) < 0)
		return err;
	return 0;
}

/* The tmpfs with the key, then the token (waiting for a remote one), read-only. */
static int issue_finish(struct identity *id, struct run *r, struct lerr *e)
{
	struct id_run *ir = identity_run_of(id, r);
	char *pem = NULL, *jwk = NULL;
	json_t *j;
	int err;

	if (!ir || !ir->sk)
		return lerr_set(e, EINVAL, "identity: run %s has no key pair", run_id(r));
	if ((err = tmpfs_make(ir, e)) < 0)
		return err;
	j = jose_jwk(ir->pk);
	json_object_set_new(j, "kid", json_string(ir->kid));
	jwk = jose_jcs(j);
	json_decref(j);
	if (!(pem = jose_pem_private(ir->sk)) || !jwk) {
		err = lerr_set(e, ENOMEM, "identity: out of memory");
		goto out;
	}
	if ((err = write_file(ir->dir, "key", pem, e)) < 0 ||
	    (err = write_file(ir->dir, "public.jwk", jwk, e)) < 0)
		goto out;
	/* the instance has its key: lanternd needs only the public half from here on */
	sodium_free(ir->sk);
	ir->sk = NULL;
	if (ir->pending && (err = sign_wait(id, ir, e)) < 0)
		goto out;
	if ((err = write_file(ir->dir, "token", ir->token, e)) < 0 || (err = tmpfs_writable(ir, false, e)) < 0)
		goto out;
	schedule_refresh(ir);
out:
	if (pem) {
		sodium_memzero(pem, strlen(pem));
		free(pem);
	}
	free(jwk);
	return err;
}

int identity_instance_prepare(struct identity *id, const char *inst, char *dir, size_t len,
			      struct lerr *e)
{
	int err;

	if (strlen(inst) >= sizeof(id->premounted[0]))
		return lerr_set(e, EINVAL, "identity: instance id %s is too long", inst);
	if (id->n_premounted == id->cap_premounted) {
		size_t cap = id->cap_premounted ? id->cap_premounted * 2 : 16;
		char (*v)[32] = realloc(id->premounted, cap * sizeof(*v));

		if (!v)
			return lerr_set(e, ENOMEM, "identity: out of memory");
		id->premounted = v;
		id->cap_premounted = cap;
	}
	snprintf(dir, len, "%s/%s", id->root, inst);
	if ((err = tmpfs_mount(dir, e)) < 0)
		return err;
	snprintf(id->premounted[id->n_premounted++], sizeof(id->premounted[0]), "%s", inst);
	return 0;
}

void identity_instance_release(struct identity *id, const char *inst)
{
	char dir[PATH_MAX + 40];

	if (!premounted_take(id, inst))
		return;
	snprintf(dir, sizeof(dir), "%s/%s", id->root, inst);
	tmpfs_remove(dir);
}

int identity_issue(struct identity *id, struct run *r, struct lerr *e)
{
	int err = issue_begin(id, r, e);

	return err < 0 ? err : issue_finish(id, r, e);
}

/* ---- the run hooks ---- */

static int on_admitted(void *arg, struct run *r, json_t *input, struct lerr *e)
{
	struct identity *id = arg;
	int err;

	if ((err = identity_secrets_check(id, r, e)) < 0 || (err = issue_begin(id, r, e)) < 0)
		return err;
	/* what was read before the start is the first lease */
	identity_secrets_seed(id, identity_run_of(id, r));
	return 0;
}

static int on_resumed(void *arg, struct run *r, struct lerr *e)
{
	return on_admitted(arg, r, NULL, e);
}

static int on_prepared(void *arg, struct run *r, struct lerr *e)
{
	return issue_finish(arg, r, e);
}

static void on_env(void *arg, struct run *r, struct run_env *env)
{
	struct identity *id = arg;
	struct id_run *ir = identity_run_of(id, r);

	if (!ir || !ir->mounted)
		return;
	run_env_set_path(env, "LANTERN_IDENTITY_DIR", ir->dir, IDENTITY_SANDBOX_DIR, "", true);
	run_env_set_path(env, "LANTERN_IDENTITY_TOKEN", ir->dir, IDENTITY_SANDBOX_DIR, "token", true);
}

/* The instance is gone: its leases are revoked and its key's tmpfs goes. Requests still
 * waiting for the API server are answered 503 now, while their connections are there
 * (durable's ended, after this hook, closes the harness socket). */
static void on_released(void *arg, struct run *r)
{
	struct identity *id = arg;
	struct id_run *ir = identity_run_of(id, r);
	size_t n;

	if (!ir)
		return;
	identity_secrets_abandon(id, ir, "the run is ending");
	if ((n = identity_secrets_revoke(ir)))
		log_info("run %s: %zu secret lease%s revoked at teardown", run_id(r), n, n == 1 ? "" : "s");
	if (ir->refresh_timer)
		loop_timer_cancel(id->loop, ir->refresh_timer);
	ir->refresh_timer = 0;
	if (ir->mounted)
		tmpfs_remove(ir->dir);
	ir->mounted = false;
}

/* A live instance a previous lanternd gave an identity: its public key is back from
 * the tmpfs (the private half never left it), and requests stamped before now are
 * refused, as the nonces seen before are forgotten. */
static int on_adopted(void *arg, struct run *r, struct lerr *e)
{
	struct identity *id = arg;
	struct id_run *ir;
	char path[PATH_MAX + 32], *buf = NULL;
	json_t *j;

	if (!(ir = ir_new(id, r)))
		return lerr_set(e, ENOMEM, "identity: out of memory");
	snprintf(path, sizeof(path), "%s/public.jwk", ir->dir);
	if (util_read_file(path, &buf, NULL) < 0) {
		/* a run from before identities existed */
		free(ir);
		return 0;
	}
	j = json_loads(buf, 0, NULL);
	free(buf);
	if (jose_jwk_key(j, ir->pk) < 0) {
		json_decref(j);
		free(ir);
		return lerr_set(e, EINVAL, "identity: %s is damaged: the instance's key is unknown", path);
	}
	json_decref(j);
	jose_kid(ir->pk, ir->kid);
	ir->mounted = true;
	ir->not_before = (int64_t)time(NULL);
	snprintf(path, sizeof(path), "%s/token", ir->dir);
	util_read_file(path, &ir->token, NULL);
	run_set_slot(r, id->slot, ir);
	{
		struct jose_jws jw;
		struct lerr pe;

		if (ir->token && jose_parse(ir->token, strlen(ir->token), &jw, &pe) == 0) {
			json_t *c = json_loadb((const char *)jw.payload, jw.payload_len, 0, NULL);

			ir->exp = json_integer_value(json_object_get(c, "exp"));
			ir->remote = strcmp(json_string_value(json_object_get(jw.sigs[0].header, "kid")) ?: "",
					    id->node_kid) != 0;
			json_decref(c);
			jose_jws_free(&jw);
		}
	}
	schedule_refresh(ir);
	return 0;
}

/* Identity tmpfs mounts no live run owns (their instance went while lanternd was
 * down) are unmounted. */
static void on_recovered(void *arg, struct runs *t)
{
	struct identity *id = arg;
	DIR *d = opendir(id->root);
	struct dirent *de;

	while (d && (de = readdir(d))) {
		char path[PATH_MAX + 300];

		if (de->d_name[0] == '.' || runs_by_instance(t, de->d_name))
			continue;
		snprintf(path, sizeof(path), "%s/%s", id->root, de->d_name);
		log_info("identity: reclaiming %s: no live run owns it", path);
		tmpfs_remove(path);
	}
	if (d)
		closedir(d);
}

static void on_json(void *arg, const struct run *r, json_t *j)
{
	struct identity *id = arg;
	struct id_run *ir = identity_run_of(id, r);

	if (!ir)
		return;
	json_object_set_new(j, "identity", json_pack("{s:s, s:s, s:I, s:I}", "kid", ir->kid, "issuer",
						     ir->remote ? "control-plane" : "node", "token_exp",
						     (json_int_t)ir->exp, "leases_revoked",
						     (json_int_t)ir->revoked));
}

static void on_free(void *arg, struct run *r)
{
	struct identity *id = arg;

	ir_free(identity_run_of(id, r));
	run_set_slot(r, id->slot, NULL);
}

static const struct run_hooks identity_hooks = {
	.name = "identity",
	.admitted = on_admitted,
	.resumed = on_resumed,
	.prepared = on_prepared,
	.env = on_env,
	.released = on_released,
	.adopted = on_adopted,
	.recovered = on_recovered,
	.json = on_json,
	.free = on_free,
};

void identity_set_kube(struct identity *id, struct kube *k)
{
	if (!k)
		identity_secrets_stop(id);
	id->kube = k;
}

int identity_subscribe(struct identity *id, struct runs *t, struct lerr *e)
{
	id->runs = t;
	if ((id->slot = runs_subscribe(t, &identity_hooks, id)) < 0)
		return lerr_set(e, -id->slot, "identity: cannot subscribe to runs");
	return 0;
}

void identity_set_signer(struct identity *id, const struct identity_signer *s, void *arg)
{
	id->signer = s;
	id->signer_arg = arg;
}

json_t *identity_run_json(struct identity *id, struct run *r)
{
	struct id_run *ir = identity_run_of(id, r);
	json_t *j;

	if (!ir)
		return json_pack("{s:s, s:s}", "type", "error", "error",
				 run_status_final(run_status(r)) ?
				 "the run has ended: its instance's identity went with it" :
				 "the run's instance has no identity");
	j = json_pack("{s:s, s:s, s:s, s:s, s:o, s:s, s:s, s:I, s:I, s:b}", "type", "identity", "run_id",
		      run_id(r), "instance_id", ir->inst, "kid", ir->kid, "public_key", jose_jwk(ir->pk),
		      "token", ir->token ? ir->token : "", "issuer", ir->remote ? "control-plane" : "node",
		      "exp", (json_int_t)ir->exp, "leases_revoked", (json_int_t)ir->revoked,
		      "live", !run_status_final(run_status(r)));
	if (ir->mounted)
		json_object_set_new(j, "dir", json_string(ir->dir));
	return j;
}

json_t *identity_jwks(const struct identity *id)
{
	return jose_jwks((const uint8_t(*)[JOSE_PK_BYTES])id->node_pk, 1);
}

/* ---- the well-known documents ---- */

static unsigned page_identity(void *arg, char **body, const char **type)
{
	struct identity *id = arg;
	char *pk = malloc(sodium_base64_ENCODED_LEN(JOSE_PK_BYTES, sodium_base64_VARIANT_ORIGINAL));
	json_t *j;
	char *s;

	if (!pk)
		return 500;
	sodium_bin2base64(pk, sodium_base64_ENCODED_LEN(JOSE_PK_BYTES, sodium_base64_VARIANT_ORIGINAL),
			  id->node_pk, JOSE_PK_BYTES, sodium_base64_VARIANT_ORIGINAL);
	j = json_pack("{s:s, s:s, s:s, s:s}", "algorithm", "Ed25519", "publicKey", pk, "keyFingerprint",
		      id->node_kid, "issuer", IDENTITY_ISSUER);
	free(pk);
	s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(j);
	*type = "application/json";
	*body = s;
	return s ? 200 : 500;
}

static unsigned page_jwks(void *arg, char **body, const char **type)
{
	json_t *j = identity_jwks(arg);
	char *s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);

	*type = "application/jwk-set+json";
	json_decref(j);
	*body = s;
	return s ? 200 : 500;
}

int identity_serve_wellknown(struct identity *id, struct metrics *m)
{
	int err;

	if ((err = metrics_route(m, "/.well-known/lantern-agent-identity", page_identity, id)) < 0 ||
	    (err = metrics_route(m, "/.well-known/jwks.json", page_jwks, id)) < 0 ||
	    (err = metrics_route(m, "/.well-known/lantern-receipts", page_jwks, id)) < 0)
		return err;
	return metrics_register(m, identity_metrics, id);
}

void identity_metrics(void *arg, struct metrics_out *o)
{
	struct identity *id = arg;
	const char *node[] = { "signer", "node", NULL }, *cp[] = { "signer", "control-plane", NULL };
	static const char *const outcomes[] = { "ok", "denied", "replayed", "stale" };
	uint64_t v[] = { id->req_ok, id->req_denied, id->req_replayed, id->req_stale };

	metrics_family(o, "lantern_identity_tokens_total", "counter", "Instance identity tokens issued, by signer.");
	metrics_u64(o, "lantern_identity_tokens_total", node, id->tokens_node);
	metrics_u64(o, "lantern_identity_tokens_total", cp, id->tokens_remote);
	metrics_family(o, "lantern_identity_sign_failures_total", "counter",
		       "Starts refused because no token could be signed.");
	metrics_u64(o, "lantern_identity_sign_failures_total", NULL, id->sign_failures);
	metrics_family(o, "lantern_secret_requests_total", "counter", "Secret requests on the harness API, by outcome.");
	for (size_t i = 0; i < ARRAY_SIZE(outcomes); i++) {
		const char *l[] = { "outcome", outcomes[i], NULL };

		metrics_u64(o, "lantern_secret_requests_total", l, v[i]);
	}
	metrics_family(o, "lantern_secret_leases_total", "counter", "Secret leases granted.");
	metrics_u64(o, "lantern_secret_leases_total", NULL, id->leases);
	metrics_family(o, "lantern_secret_leases_revoked_total", "counter", "Live leases revoked at teardown.");
	metrics_u64(o, "lantern_secret_leases_revoked_total", NULL, id->leases_revoked);
	metrics_family(o, "lantern_receipts_total", "counter", "Run receipts signed.");
	metrics_u64(o, "lantern_receipts_total", NULL, id->receipts);
}

/* ---- open, close ---- */

int identity_open(struct loop *l, const struct identity_opts *o, struct identity **out, struct lerr *e)
{
	struct identity *id = calloc(1, sizeof(*id));
	int err;

	if (!id)
		return lerr_set(e, ENOMEM, "identity: out of memory");
	if (sodium_init() < 0) {
		free(id);
		return lerr_set(e, EIO, "identity: libsodium cannot start");
	}
	id->loop = l;
	id->o = *o;
	id->secrets_fd = -1;
	id->efd = -1;
	snprintf(id->state_dir, sizeof(id->state_dir), "%s", o->state_dir);
	snprintf(id->secrets_dir, sizeof(id->secrets_dir), "%s", o->secrets_dir ? o->secrets_dir : "");
	snprintf(id->tenant, sizeof(id->tenant), "%s", o->tenant ? o->tenant : "default");
	snprintf(id->region, sizeof(id->region), "%s", o->region ? o->region : "");
	if (!id->o.secret_ttl_s)
		id->o.secret_ttl_s = IDENTITY_DEFAULT_SECRET_TTL;
	pthread_mutex_init(&id->mu, NULL);
	pthread_cond_init(&id->cond, NULL);
	if ((err = node_key_load(id, e)) < 0)
		goto fail;
	jose_kid(id->node_pk, id->node_kid);
	/* a directory per node key: lanternds side by side never reclaim each other's */
	snprintf(id->root, sizeof(id->root), "%s/%.12s", o->tmpfs_root, id->node_kid);
	if ((err = util_mkdir_p(id->root, 0700)) < 0 || (err = chmod(id->root, 0700) < 0 ? -errno : 0) < 0) {
		lerr_set(e, -err, "identity: %s: %s", id->root, strerror(-err));
		goto fail;
	}
	if ((err = identity_secrets_open(id, e)) < 0)
		goto fail;
	if ((id->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0) {
		err = lerr_set(e, errno, "identity: eventfd: %s", strerror(errno));
		goto fail;
	}
	if ((err = loop_add(l, id->efd, EPOLLIN, on_inbox, id)) < 0) {
		lerr_set(e, -err, "identity: watching its eventfd: %s", strerror(-err));
		close(id->efd);
		id->efd = -1;
		goto fail;
	}
	log_info("identity: node key %s; instance identities under %s%s%s", id->node_kid, id->root,
		 id->secrets_fd >= 0 ? "; file:// secrets from " : "", id->secrets_fd >= 0 ? id->secrets_dir : "");
	*out = id;
	return 0;
fail:
	identity_close(id);
	return err;
}

void identity_close(struct identity *id)
{
	if (!id)
		return;
	if (id->efd >= 0) {
		loop_del(id->loop, id->efd);
		close(id->efd);
	}
	if (id->secrets_fd >= 0)
		close(id->secrets_fd);
	identity_secrets_drop(id);
	while (id->inbox) {
		struct signed_token *t = id->inbox;

		id->inbox = t->next;
		signed_free(t);
	}
	if (id->node_sk)
		sodium_free(id->node_sk);
	free(id->premounted);
	pthread_mutex_destroy(&id->mu);
	pthread_cond_destroy(&id->cond);
	free(id);
}
