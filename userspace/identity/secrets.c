/* secrets.c: spec.secrets from data-plane sources, vended on the harness API (see
 * identity.h and docs/identity.md).
 *
 * Sources: file:///PATH names a file below the node's secrets directory (root-owned,
 * writable by root alone), opened beneath it with openat2 (no symbolic links, no other
 * filesystem), itself a regular root-owned file no one else may write; k8s://NAME/KEY
 * is the key KEY of the Secret NAME in the run's tenant namespace, read through the
 * Kubernetes runtime's API client (k8s.c: read before the start, since admission cannot
 * wait for the API server; refused on a node without --kubernetes); any other scheme
 * is refused. Every source is read at admission so a run never starts without a secret
 * its spec names, and again whenever a lease has expired (for k8s://, the workload's
 * request is answered when the API server has: identity_secret_request returns 0).
 *
 * A request is POST /v1/secrets/{env_name} with X-Lantern-Timestamp (unix seconds),
 * X-Lantern-Nonce (16 to 128 of [A-Za-z0-9_-]) and X-Lantern-Signature, the Ed25519
 * signature (base64 or base64url) by the instance key of
 *     "lantern-secrets-v1\n" METHOD "\n" PATH "\n" hex(SHA-256(body)) "\n" TS "\n" NONCE
 * A stale timestamp, a nonce seen before within the window, or a signature that does
 * not verify is refused (401). Values live in sodium_malloc'd memory (guarded, locked,
 * wiped when freed) until their lease is replaced or revoked; an answer holding one is
 * built and freed with jansson wiping what it frees (util_json_wipe). */
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "internal.h"

/* nonces remembered per instance within the window: 13,000 signed requests/s sustained
 * per instance at most, 4 MiB of table at most */
#define NONCE_MAX 131072
#define SIGN_PREFIX "lantern-secrets-v1\n"
/* requests of one run waiting for the API server, at most */
#define WAITERS_MAX 32
/* after a read of the API server failed, its reason answers requests this long (s)
 * before another GET: a workload cannot turn its requests into a stream of them */
#define READ_RETRY_S 2

struct lease {
	const char *env_name;        /* the spec's */
	uint8_t *value;              /* sodium_malloc'd */
	size_t len;
	char id[20];                 /* l-<16 hex> */
	int64_t expires_at;
	struct id_run *ir;
	size_t idx;                  /* in spec.secrets */
	struct k8s_read *read;       /* the source being read again (k8s://) */
	int64_t retry_at;            /* its last read failed: not again before */
	char why[384];               /* why it failed */
};

/* A harness request waiting for its lease's read. */
struct secret_waiter {
	struct id_run *ir;
	size_t idx;
	void *peer;
	identity_answer_fn done;
	void *arg;
	struct secret_waiter *next;
};

struct nonce {
	uint64_t h;                  /* 0: free */
	int64_t ts;
};

static uint8_t nonce_key[crypto_shorthash_KEYBYTES];

int identity_secrets_open(struct identity *id, struct lerr *e)
{
	struct stat st;

	randombytes_buf(nonce_key, sizeof(nonce_key));
	if (!id->secrets_dir[0]) {
		snprintf(id->secrets_why, sizeof(id->secrets_why),
			 "this node has no secrets directory (lanternd --secrets-dir)");
		return 0;
	}
	id->secrets_fd = open(id->secrets_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (id->secrets_fd < 0) {
		snprintf(id->secrets_why, sizeof(id->secrets_why), "the secrets directory %s cannot be opened: %s",
			 id->secrets_dir, strerror(errno));
		log_warn("identity: %s: file:// secrets are refused", id->secrets_why);
		return 0;
	}
	if (fstat(id->secrets_fd, &st) < 0 || st.st_uid != 0 || (st.st_mode & 022)) {
		snprintf(id->secrets_why, sizeof(id->secrets_why),
			 "the secrets directory %s must be owned by root and writable by root alone",
			 id->secrets_dir);
		log_warn("identity: %s: file:// secrets are refused", id->secrets_why);
		close(id->secrets_fd);
		id->secrets_fd = -1;
	}
	return 0;
}

/* The path of uri below the secrets directory; a refusal names the field. */
static int resolve(struct identity *id, const char *field, const char *uri, const char **rel,
		   struct lerr *e)
{
	size_t dl = strlen(id->secrets_dir);
	const char *p;

	if (strncmp(uri, "file://", 7))
		return lerr_set(e, EPERM, "spawn: refused: %s: \"%s\": unknown secret scheme (this node "
				"reads file:///PATH below its secrets directory and k8s://SECRET/KEY)", field, uri);
	p = uri + 7;
	if (id->secrets_fd < 0)
		return lerr_set(e, EPERM, "spawn: refused: %s: \"%s\": %s", field, uri, id->secrets_why);
	if (strncmp(p, id->secrets_dir, dl) || p[dl] != '/' || !p[dl + 1])
		return lerr_set(e, EPERM, "spawn: refused: %s: \"%s\" is not a file below this node's "
				"secrets directory %s", field, uri, id->secrets_dir);
	*rel = p + dl + 1;
	return 0;
}

/* Reads the secret at rel (below the secrets directory) into sodium_malloc'd memory. */
static int read_secret(struct identity *id, const char *field, const char *uri, const char *rel,
		       uint8_t **out, size_t *len, struct lerr *e)
{
	struct open_how how = {
		.flags = O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK,
		.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV,
	};
	uint8_t *buf;
	struct stat st;
	size_t got = 0;
	int fd, err;

	fd = (int)syscall(SYS_openat2, id->secrets_fd, rel, &how, sizeof(how));
	if (fd < 0)
		return lerr_set(e, errno == ENOENT ? ENOENT : EACCES, "spawn: refused: %s: \"%s\": %s", field,
				uri, errno == ENOENT ? "no such secret" :
				errno == ELOOP ? "a symbolic link is on its path" :
				errno == EXDEV ? "it leaves the secrets directory" : strerror(errno));
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_uid != 0 || (st.st_mode & 022) ||
	    (size_t)st.st_size > SECRET_MAX_BYTES) {
		close(fd);
		return lerr_set(e, EACCES, "spawn: refused: %s: \"%s\" must be a regular file owned by root, "
				"writable by root alone, of at most %u bytes", field, uri, SECRET_MAX_BYTES);
	}
	if (!(buf = sodium_malloc((size_t)st.st_size + 1))) {
		close(fd);
		return lerr_set(e, ENOMEM, "identity: out of memory");
	}
	while (got < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	err = errno;
	close(fd);
	if (got != (size_t)st.st_size) {
		sodium_free(buf);
		return lerr_set(e, EIO, "spawn: refused: %s: \"%s\": cannot be read: %s", field, uri,
				strerror(err ? err : EIO));
	}
	buf[got] = 0;
	*out = buf;
	*len = got;
	return 0;
}

static bool is_k8s(const char *uri)
{
	return !strncmp(uri, IDENTITY_K8S_SCHEME, strlen(IDENTITY_K8S_SCHEME));
}

int identity_secrets_check(struct identity *id, const struct run *r, struct lerr *e)
{
	const struct spec *s = run_spec(r);

	for (size_t i = 0; s && i < s->n_secrets; i++) {
		char field[64];
		const char *rel;
		uint8_t *v;
		size_t len;
		int err;

		snprintf(field, sizeof(field), "spec.secrets[%zu].secret_uri", i);
		if (is_k8s(s->secrets[i].secret_uri)) {
			/* read before the start (k8s.c): the value, or why there is none */
			if ((err = identity_prefetch_take(id, r, i, field, s->secrets[i].secret_uri,
							  NULL, NULL, NULL, e)) < 0)
				return err;
			continue;
		}
		if ((err = resolve(id, field, s->secrets[i].secret_uri, &rel, e)) < 0 ||
		    (err = read_secret(id, field, s->secrets[i].secret_uri, rel, &v, &len, e)) < 0)
			return err;
		sodium_free(v);
	}
	return 0;
}

static void lease_clear(struct lease *l)
{
	identity_k8s_cancel(l->read);
	l->read = NULL;
	if (l->value)
		sodium_free(l->value);
	l->value = NULL;
	l->len = 0;
	l->expires_at = 0;
}

size_t identity_secrets_revoke(struct id_run *ir)
{
	int64_t now = (int64_t)time(NULL);
	size_t live = 0;

	for (size_t i = 0; i < ir->nleases; i++) {
		if (ir->leases[i].value && ir->leases[i].expires_at > now)
			live++;
		lease_clear(&ir->leases[i]);
	}
	ir->revoked += live;
	ir->id->leases_revoked += live;
	return live;
}

void identity_secrets_free(struct id_run *ir)
{
	for (size_t i = 0; i < ir->nleases; i++)
		lease_clear(&ir->leases[i]);
	free(ir->leases);
	free(ir->nonces);
	ir->leases = NULL;
	ir->nonces = NULL;
	ir->nleases = ir->nonce_cap = ir->nonce_n = 0;
}

/* ---- replay ---- */

static void nonce_put(struct nonce *t, size_t cap, uint64_t h, int64_t ts)
{
	size_t i = (size_t)h & (cap - 1);

	while (t[i].h)
		i = (i + 1) & (cap - 1);
	t[i].h = h;
	t[i].ts = ts;
}

/* Keeps only the nonces still inside the window, in a table of cap slots. */
static int nonce_rebuild(struct id_run *ir, size_t cap, int64_t now)
{
	struct nonce *t = calloc(cap, sizeof(*t));
	size_t n = 0;

	if (!t)
		return -ENOMEM;
	for (size_t i = 0; i < ir->nonce_cap; i++)
		if (ir->nonces[i].h && ir->nonces[i].ts >= now - IDENTITY_REQUEST_MAX_AGE_S) {
			nonce_put(t, cap, ir->nonces[i].h, ir->nonces[i].ts);
			n++;
		}
	free(ir->nonces);
	ir->nonces = t;
	ir->nonce_cap = cap;
	ir->nonce_n = n;
	return 0;
}

/* 0: first time seen (now remembered); -EALREADY: a replay; -ENOSPC: too many live. */
static int nonce_check(struct id_run *ir, const char *nonce, int64_t ts, int64_t now)
{
	uint64_t h;
	size_t i;

	crypto_shorthash((uint8_t *)&h, (const uint8_t *)nonce, strlen(nonce), nonce_key);
	h |= 1; /* 0 marks a free slot */
	for (i = (size_t)h & (ir->nonce_cap - 1); ir->nonce_cap && ir->nonces[i].h;
	     i = (i + 1) & (ir->nonce_cap - 1))
		if (ir->nonces[i].h == h && ir->nonces[i].ts >= now - IDENTITY_REQUEST_MAX_AGE_S)
			return -EALREADY;
	if ((ir->nonce_n + 1) * 2 > ir->nonce_cap) {
		size_t cap = ir->nonce_cap ? ir->nonce_cap : 1024;

		if (nonce_rebuild(ir, cap, now) < 0)
			return -ENOMEM;
		while ((ir->nonce_n + 1) * 2 > cap && cap < 2 * NONCE_MAX)
			cap *= 2;
		if ((ir->nonce_n + 1) * 2 > cap)
			return -ENOSPC;
		if (cap != ir->nonce_cap && nonce_rebuild(ir, cap, now) < 0)
			return -ENOMEM;
	}
	nonce_put(ir->nonces, ir->nonce_cap, h, ts);
	ir->nonce_n++;
	return 0;
}

/* ---- requests ---- */

static json_t *refusal(const char *code, const char *fmt, const char *arg)
{
	char reason[512];

	snprintf(reason, sizeof(reason), fmt, arg);
	return json_pack("{s:s, s:s}", "error", code, "reason", reason);
}

static bool nonce_ok(const char *n)
{
	size_t len = strlen(n);

	if (len < 16 || len > 128)
		return false;
	for (const char *p = n; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
		      *p == '-' || *p == '_'))
			return false;
	return true;
}

/* 0 when c is signed by ir's key, fresh and not seen before; else the status. */
static int authenticate(struct identity *id, struct id_run *ir, const struct harness_call *c,
			json_t **reply)
{
	char hex[2 * crypto_hash_sha256_BYTES + 1], *end, *msg = NULL;
	int64_t now = (int64_t)time(NULL), t;
	uint8_t *sb;
	size_t slen = 0;
	int bad, err;

	if (!c->sig_ts[0] || !c->sig_nonce[0] || !c->sig[0]) {
		id->req_denied++;
		*reply = refusal("unsigned", "%s", "a secrets request needs X-Lantern-Timestamp, X-Lantern-Nonce "
				 "and X-Lantern-Signature (Ed25519 by the instance key; docs/identity.md)");
		return 401;
	}
	t = strtoll(c->sig_ts, &end, 10);
	if (*end || !nonce_ok(c->sig_nonce)) {
		id->req_denied++;
		*reply = refusal("malformed", "%s", "X-Lantern-Timestamp must be unix seconds and "
				 "X-Lantern-Nonce 16 to 128 of [A-Za-z0-9_-]");
		return 401;
	}
	if (t < now - IDENTITY_REQUEST_MAX_AGE_S || t > now + IDENTITY_REQUEST_MAX_AHEAD_S ||
	    t < ir->not_before) {
		id->req_stale++;
		*reply = refusal("stale", "the request was signed at %s, outside the window of the node's "
				 "clock (10 s back, 5 s ahead)", c->sig_ts);
		return 401;
	}
	sodium_bin2hex(hex, sizeof(hex), c->body_sha256, sizeof(c->body_sha256));
	sb = jose_b64_decode(c->sig, strlen(c->sig), &slen);
	if (asprintf(&msg, SIGN_PREFIX "POST\n/v1/secrets/%s\n%s\n%s\n%s", c->env_name, hex, c->sig_ts,
		     c->sig_nonce) < 0)
		msg = NULL;
	bad = !sb || slen != JOSE_SIG_BYTES || !msg ||
	      crypto_sign_verify_detached(sb, (const uint8_t *)msg, strlen(msg), ir->pk);
	free(sb);
	free(msg);
	if (bad) {
		id->req_denied++;
		*reply = refusal("bad_signature", "the signature does not verify with the key of instance %s",
				 ir->inst);
		return 401;
	}
	if ((err = nonce_check(ir, c->sig_nonce, t, now)) < 0) {
		if (err == -EALREADY)
			id->req_replayed++;
		else
			id->req_denied++;
		*reply = err == -EALREADY ? refusal("replayed", "nonce %s was used before", c->sig_nonce) :
			 refusal("busy", "%s", "too many signed requests in the window; retry shortly");
		return err == -EALREADY ? 401 : 503;
	}
	return 0;
}

/* ir's leases, one per spec.secrets entry, made on first use. */
static int leases_make(struct id_run *ir, const struct spec *s)
{
	if (ir->leases || !s->n_secrets)
		return 0;
	if (!(ir->leases = calloc(s->n_secrets, sizeof(*ir->leases))))
		return -ENOMEM;
	ir->nleases = s->n_secrets;
	for (size_t i = 0; i < s->n_secrets; i++) {
		ir->leases[i].env_name = s->secrets[i].env_name;
		ir->leases[i].ir = ir;
		ir->leases[i].idx = i;
	}
	return 0;
}

static struct lease *lease_of(struct id_run *ir, const struct spec *s, const char *name, size_t *idx)
{
	if (leases_make(ir, s) < 0)
		return NULL;
	for (size_t i = 0; i < ir->nleases; i++)
		if (!strcmp(ir->leases[i].env_name, name)) {
			*idx = i;
			return &ir->leases[i];
		}
	return NULL;
}

/* l holds value (taken) from now, read at read_at, until the TTL is over. */
static void lease_grant(struct lease *l, uint8_t *value, size_t len, int64_t read_at)
{
	struct identity *id = l->ir->id;

	lease_clear(l);
	l->retry_at = 0;
	l->value = value;
	l->len = len;
	l->id[0] = 'l';
	l->id[1] = '-';
	util_random_hex(l->id + 2, 8);
	l->expires_at = read_at + id->o.secret_ttl_s;
	id->leases++;
}

void identity_secrets_seed(struct identity *id, struct id_run *ir)
{
	const struct spec *s = run_spec(ir->r);

	if (!s || !run_prefetch(ir->r) || leases_make(ir, s) < 0)
		return;
	for (size_t i = 0; i < s->n_secrets; i++) {
		struct lerr e = { 0 };
		uint8_t *v = NULL;
		size_t len = 0;
		int64_t at = 0;

		if (is_k8s(s->secrets[i].secret_uri) &&
		    identity_prefetch_take(id, ir->r, i, "", s->secrets[i].secret_uri, &v, &len, &at, &e) == 0)
			lease_grant(&ir->leases[i], v, len, at);
	}
}

static json_t *lease_json(const struct identity *id, const struct lease *l)
{
	json_t *v = json_stringn((const char *)l->value, l->len);
	json_t *j = json_pack("{s:s, s:s, s:I, s:I}", "env_name", l->env_name, "lease_id", l->id,
			      "expires_at", (json_int_t)l->expires_at, "ttl_s", (json_int_t)id->o.secret_ttl_s);

	if (v) {
		json_object_set_new(j, "value", v);
	} else {
		/* bytes that are not UTF-8 cannot be a JSON string */
		char *b = malloc(sodium_base64_ENCODED_LEN(l->len, sodium_base64_VARIANT_ORIGINAL));

		if (b) {
			sodium_bin2base64(b, sodium_base64_ENCODED_LEN(l->len, sodium_base64_VARIANT_ORIGINAL),
					  l->value, l->len, sodium_base64_VARIANT_ORIGINAL);
			json_object_set_new(j, "value_b64", json_string(b));
			sodium_memzero(b, strlen(b));
			free(b);
		}
	}
	return j;
}

/* The request's answer: its status, and *reply as text (wiped when freed). The JSON
 * document that held a value is wiped as jansson frees it. */
static int answer(int status, json_t *reply, char **body, size_t *len)
{
	bool was = util_json_wipe(true);

	*body = json_dumps(reply, JSON_COMPACT | JSON_SORT_KEYS);
	*len = *body ? strlen(*body) : 0;
	json_decref(reply);
	util_json_wipe_restore(was);
	return *body ? status : 500;
}

/* A lease's answer now, built with jansson wiping (lease_json copies the value). */
static int lease_answer(struct identity *id, const struct lease *l, char **body, size_t *len)
{
	bool was = util_json_wipe(true);
	json_t *j = lease_json(id, l);

	util_json_wipe_restore(was);
	id->req_ok++;
	return answer(200, j, body, len);
}

/* ---- requests waiting for the API server ---- */

static size_t waiters_of(struct identity *id, const struct id_run *ir)
{
	size_t n = 0;

	for (struct secret_waiter *w = id->waiters; w; w = w->next)
		n += w->ir == ir;
	return n;
}

/* The waiters of ir (and of its lease idx, unless idx is SIZE_MAX), unlinked: answering
 * one may close a connection, which forgets its peer in id->waiters. */
static struct secret_waiter *waiters_take(struct identity *id, const struct id_run *ir, size_t idx)
{
	struct secret_waiter *out = NULL, **pp = &id->waiters;

	while (*pp) {
		struct secret_waiter *w = *pp;

		if ((!ir || w->ir == ir) && (idx == SIZE_MAX || w->idx == idx)) {
			*pp = w->next;
			w->next = out;
			out = w;
		} else {
			pp = &w->next;
		}
	}
	return out;
}

static void waiters_answer(struct identity *id, struct secret_waiter *list, const struct lease *l,
			   const char *why)
{
	while (list) {
		struct secret_waiter *w = list;
		char *body = NULL;
		size_t len = 0;
		int st;

		list = w->next;
		st = l && l->value ? lease_answer(id, l, &body, &len) :
		     answer(503, json_pack("{s:s, s:s}", "error", "unavailable", "reason", why ? why : "not read"),
			    &body, &len);
		w->done(w->arg, w->peer, st, body, len);
		free(w);
	}
}

static void on_lease_read(void *arg, uint8_t *value, size_t len, const char *why)
{
	struct lease *l = arg;
	struct id_run *ir = l->ir;

	l->read = NULL;
	if (value) {
		lease_grant(l, value, len, (int64_t)time(NULL));
	} else {
		log_warn("run %s: secret %s: %s", run_id(ir->r), l->env_name, why);
		l->retry_at = (int64_t)time(NULL) + READ_RETRY_S;
		snprintf(l->why, sizeof(l->why), "%s", why);
	}
	waiters_answer(ir->id, waiters_take(ir->id, ir, l->idx), l, why);
}

/* c waits for l's source, read again (k8s://); 0, or the status of a refusal. */
static int lease_wait(struct identity *id, struct lease *l, void *peer, identity_answer_fn done, void *arg,
		      json_t **reply)
{
	const struct spec *s = run_spec(l->ir->r);
	struct secret_waiter *w;
	struct lerr e = { 0 };
	char field[64];

	if (!done) {
		*reply = refusal("unavailable", "%s", "this request cannot wait for the API server");
		return 503;
	}
	if (waiters_of(id, l->ir) >= WAITERS_MAX || !(w = calloc(1, sizeof(*w)))) {
		*reply = refusal("busy", "%s", "too many secret requests waiting for the API server; retry shortly");
		return 503;
	}
	snprintf(field, sizeof(field), "spec.secrets[%zu].secret_uri", l->idx);
	if (!l->read && identity_k8s_read(id, run_tenant(l->ir->r), field, s->secrets[l->idx].secret_uri,
					  on_lease_read, l, &l->read, &e) < 0) {
		free(w);
		log_warn("run %s: secret %s: %s", run_id(l->ir->r), l->env_name, e.msg);
		*reply = json_pack("{s:s, s:s}", "error", "unavailable", "reason", e.msg);
		return 503;
	}
	w->ir = l->ir;
	w->idx = l->idx;
	w->peer = peer;
	w->done = done;
	w->arg = arg;
	w->next = id->waiters;
	id->waiters = w;
	return 0;
}

void identity_secret_forget(struct identity *id, void *peer)
{
	struct secret_waiter **pp = id ? &id->waiters : NULL;

	while (pp && *pp) {
		struct secret_waiter *w = *pp;
		struct lease *l = &w->ir->leases[w->idx];

		if (w->peer != peer) {
			pp = &w->next;
			continue;
		}
		*pp = w->next;
		free(w);
		/* nobody waits for that read any more */
		if (l->read && !waiters_of(id, l->ir)) {
			identity_k8s_cancel(l->read);
			l->read = NULL;
		}
	}
}

void identity_secrets_abandon(struct identity *id, struct id_run *ir, const char *why)
{
	waiters_answer(id, waiters_take(id, ir, SIZE_MAX), NULL, why);
}

void identity_secrets_stop(struct identity *id)
{
	for (struct run *r = id->runs ? runs_first(id->runs) : NULL; r; r = run_next(r)) {
		struct id_run *ir = identity_run_of(id, r);

		for (size_t i = 0; ir && i < ir->nleases; i++) {
			identity_k8s_cancel(ir->leases[i].read);
			ir->leases[i].read = NULL;
		}
	}
	waiters_answer(id, waiters_take(id, NULL, SIZE_MAX), NULL, "lanternd is stopping");
	identity_prefetch_stop(id);
}

void identity_secrets_drop(struct identity *id)
{
	struct secret_waiter *list = waiters_take(id, NULL, SIZE_MAX);

	while (list) {
		struct secret_waiter *w = list;

		list = w->next;
		free(w);
	}
}

/* ---- a request ---- */

static int secret_request(struct identity *id, struct run *r, const struct harness_call *c, void *peer,
			  identity_answer_fn done, void *arg, json_t **reply, struct lease **granted)
{
	struct id_run *ir = identity_run_of(id, r);
	const struct spec *s = run_spec(r);
	int64_t now = (int64_t)time(NULL);
	struct lerr e = { 0 };
	struct lease *l;
	size_t idx = 0;
	int st;

	if (!ir || !s) {
		*reply = refusal("no_identity", "run %s has no instance identity to sign with", run_id(r));
		return 409;
	}
	if (c->op == HOP_SECRETS) {
		json_t *list = json_array();

		for (size_t i = 0; i < s->n_secrets; i++)
			json_array_append_new(list, json_string(s->secrets[i].env_name));
		*reply = json_pack("{s:o, s:I}", "secrets", list, "ttl_s", (json_int_t)id->o.secret_ttl_s);
		return 200;
	}
	if ((st = authenticate(id, ir, c, reply)))
		return st;
	if (!(l = lease_of(ir, s, c->env_name, &idx))) {
		*reply = refusal("not_found", "spec.secrets names no \"%s\"", c->env_name);
		return 404;
	}
	if (l->value && l->expires_at > now) {
		*granted = l;
		return 200;
	}
	/* expired or never read: the source again, so a rotated secret arrives; a
	 * k8s:// read already under way answers this request too */
	if (is_k8s(s->secrets[idx].secret_uri)) {
		if (!l->read && now < l->retry_at) {
			*reply = json_pack("{s:s, s:s}", "error", "unavailable", "reason", l->why);
			return 503;
		}
		if (!l->read)
			lease_clear(l);
		return lease_wait(id, l, peer, done, arg, reply);
	}
	lease_clear(l);
	{
		char field[64];
		const char *rel;
		uint8_t *v;
		size_t len;

		snprintf(field, sizeof(field), "spec.secrets[%zu].secret_uri", idx);
		if (resolve(id, field, s->secrets[idx].secret_uri, &rel, &e) < 0 ||
		    read_secret(id, field, s->secrets[idx].secret_uri, rel, &v, &len, &e) < 0) {
			log_warn("run %s: secret %s: %s", run_id(r), c->env_name, e.msg);
			*reply = json_pack("{s:s, s:s}", "error", "unavailable", "reason", e.msg);
			return 503;
		}
		lease_grant(l, v, len, now);
	}
	*granted = l;
	return 200;
}

int identity_secret_request(struct identity *id, struct run *r, const struct harness_call *c, void *peer,
			    identity_answer_fn done, void *arg, char **body, size_t *len)
{
	struct lease *granted = NULL;
	json_t *reply = NULL;
	int st = secret_request(id, r, c, peer, done, arg, &reply, &granted);

	if (!st)
		return 0;
	if (granted)
		return lease_answer(id, granted, body, len);
	return answer(st, reply, body, len);
}
