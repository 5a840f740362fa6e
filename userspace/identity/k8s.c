/* k8s.c: k8s://NAME/KEY secret sources (secrets.c has the others, and the leases):
 * .data[KEY] of the Secret NAME in the run's tenant namespace lantern-t-<tenant>, read
 * through the Kubernetes runtime's API client (lanternd --kubernetes) on the loop.
 *
 * Reading the API server is asynchronous and admission is not, so a start reads first:
 * identity_prefetch GETs every k8s:// secret a spec names (each bounded by
 * IDENTITY_K8S_TIMEOUT_MS) and hands its caller a run_prefetch that goes with the
 * submit (run.h); the admitted or resumed hook then finds each value or the reason it
 * could not be read there, and refuses the run with that reason before anything of it
 * exists beyond its directory. A lease that expires is read again the same way, and
 * the workload's request is answered when the GET returns (secrets.c).
 *
 * Every answer that held a value is wiped: the client's receive buffer, and every
 * block jansson frees while it is parsed and read (kube_get_sensitive). The decoded
 * value is in sodium_malloc'd memory only. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "internal.h"
#include "lantern/kube.h"
#include "lantern/spec.h"

#define NS_PREFIX "lantern-t-"

struct k8s_read {
	struct kube_req *q;
	k8s_read_fn fn;
	void *arg;
	char ns[80];
	char name[K8S_NAME_MAX + 1], key[K8S_NAME_MAX + 1];
};

/* One spec.secrets entry of a prefetch. */
struct pf_entry {
	char *uri;                   /* the spec's; NULL: not a k8s:// source */
	uint8_t *value;              /* sodium_malloc'd, or NULL */
	size_t len;
	int64_t read_at;
	char why[512];               /* why it could not be read */
	struct k8s_read *rd;         /* in flight */
	struct run_prefetch *pf;
};

struct run_prefetch {
	struct identity *id;
	char tenant[64];
	struct pf_entry *e;
	size_t n, left;
	identity_prefetch_fn done;
	void *arg;
	uint64_t timer;              /* done, when nothing was left to wait for */
	struct run_prefetch *prev, *next;
};

/* ---- names ---- */

static bool alnum_lower(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

/* A DNS-1123 subdomain (what names a Secret): labels of [a-z0-9]([-a-z0-9]*[a-z0-9])?
 * joined by dots, at most max characters. */
static bool dns_subdomain(const char *s, size_t n, size_t max)
{
	if (!n || n > max)
		return false;
	for (size_t i = 0; i < n; i++) {
		bool edge = i == 0 || i == n - 1 || s[i - 1] == '.' || s[i + 1] == '.';

		if (s[i] == '.' ? edge : !(alnum_lower(s[i]) || (s[i] == '-' && !edge)))
			return false;
	}
	return true;
}

/* A key of a Secret's data: [-._a-zA-Z0-9]+, at most 253, neither "." nor "..". */
static bool secret_key(const char *s, size_t n)
{
	if (!n || n > K8S_NAME_MAX || (n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.'))
		return false;
	for (size_t i = 0; i < n; i++)
		if (!(alnum_lower(s[i]) || (s[i] >= 'A' && s[i] <= 'Z') || s[i] == '-' || s[i] == '.' ||
		      s[i] == '_'))
			return false;
	return true;
}

int identity_k8s_parse(const char *field, const char *uri, char *name, char *key, struct lerr *e)
{
	const char *p = uri + strlen(IDENTITY_K8S_SCHEME), *slash = strchr(p, '/');

	if (!slash || !dns_subdomain(p, (size_t)(slash - p), K8S_NAME_MAX))
		return lerr_set(e, EINVAL, "spawn: refused: %s: \"%s\": k8s://NAME/KEY needs NAME, a Secret's "
				"name (a DNS-1123 subdomain: lowercase letters, digits, '-' and '.', at most "
				"253)", field, uri);
	if (!secret_key(slash + 1, strlen(slash + 1)))
		return lerr_set(e, EINVAL, "spawn: refused: %s: \"%s\": k8s://NAME/KEY needs KEY, a key of "
				"the Secret's data ([-._a-zA-Z0-9]+, at most 253, not \".\" or \"..\")", field,
				uri);
	snprintf(name, K8S_NAME_MAX + 1, "%.*s", (int)(slash - p), p);
	snprintf(key, K8S_NAME_MAX + 1, "%s", slash + 1);
	return 0;
}

int identity_k8s_usable(struct identity *id, const char *field, const char *uri, const char *tenant,
			struct lerr *e)
{
	char name[K8S_NAME_MAX + 1], key[K8S_NAME_MAX + 1];
	int err;

	if ((err = identity_k8s_parse(field, uri, name, key, e)) < 0)
		return err;
	if (!id->kube)
		return lerr_set(e, EPERM, "spawn: refused: %s: \"%s\": this node has no Kubernetes API client "
				"to read k8s:// secrets with (lanternd --kubernetes; docs/identity.md)", field, uri);
	if (!dns_subdomain(tenant, strlen(tenant), 63 - strlen(NS_PREFIX)) || strchr(tenant, '.'))
		return lerr_set(e, EPERM, "spawn: refused: %s: \"%s\": tenant \"%s\" cannot name a Kubernetes "
				"namespace (" NS_PREFIX "<tenant>)", field, uri, tenant);
	return 0;
}

/* ---- one read ---- */

/* The value of key in a Secret's answer, decoded into sodium_malloc'd memory. */
static int take_value(struct k8s_read *rd, json_t *body, uint8_t **out, size_t *len, char *why, size_t wl)
{
	json_t *v = json_object_get(json_object_get(body, "data"), rd->key);
	const char *b64 = json_string_value(v);
	size_t n = json_string_length(v), cap = n / 4 * 3 + 3, got = 0;
	uint8_t *buf;

	if (!json_is_object(body) || strcmp(json_string_value(json_object_get(body, "kind")) ?: "Secret", "Secret")) {
		snprintf(why, wl, "the API server's answer for Secret %s/%s is not a Secret", rd->ns, rd->name);
		return -EPROTO;
	}
	if (!b64) {
		snprintf(why, wl, "Secret %s/%s has no key \"%s\" in its data", rd->ns, rd->name, rd->key);
		return -ENOENT;
	}
	if (n > (SECRET_MAX_BYTES + 2) / 3 * 4) {
		snprintf(why, wl, "Secret %s/%s key \"%s\" is larger than %u bytes", rd->ns, rd->name, rd->key,
			 SECRET_MAX_BYTES);
		return -EFBIG;
	}
	if (!(buf = sodium_malloc(cap + 1))) {
		snprintf(why, wl, "identity: out of memory");
		return -ENOMEM;
	}
	if (sodium_base642bin(buf, cap, b64, n, NULL, &got, NULL, sodium_base64_VARIANT_ORIGINAL) < 0) {
		sodium_free(buf);
		snprintf(why, wl, "Secret %s/%s key \"%s\" is not base64", rd->ns, rd->name, rd->key);
		return -EBADMSG;
	}
	if (got > SECRET_MAX_BYTES) {
		sodium_free(buf);
		snprintf(why, wl, "Secret %s/%s key \"%s\" is larger than %u bytes", rd->ns, rd->name, rd->key,
			 SECRET_MAX_BYTES);
		return -EFBIG;
	}
	buf[got] = 0;
	*out = buf;
	*len = got;
	return 0;
}

static void on_read(void *arg, const struct kube_resp *res)
{
	struct k8s_read *rd = arg;
	char why[512] = "", st[384];
	uint8_t *v = NULL;
	size_t len = 0;

	if (res->status == 200)
		take_value(rd, res->body, &v, &len, why, sizeof(why));
	else if (res->status == 404)
		snprintf(why, sizeof(why), "no Secret %s in namespace %s (%s)", rd->name, rd->ns,
			 kube_resp_why(res, st, sizeof(st)));
	else if (res->status == 401 || res->status == 403)
		snprintf(why, sizeof(why), "the API server refuses lanternd the Secret %s/%s (%s): grant get on "
			 "secrets in %s (deploy/tenant/secrets-reader.yaml, docs/identity.md)", rd->ns, rd->name,
			 kube_resp_why(res, st, sizeof(st)), rd->ns);
	else if (!res->status)
		snprintf(why, sizeof(why), "Secret %s/%s: the API server did not answer: %s", rd->ns, rd->name,
			 kube_resp_why(res, st, sizeof(st)));
	else
		snprintf(why, sizeof(why), "Secret %s/%s: the API server answered %s", rd->ns, rd->name,
			 kube_resp_why(res, st, sizeof(st)));
	rd->fn(rd->arg, v, len, v ? NULL : why);
	free(rd);
}

int identity_k8s_read(struct identity *id, const char *tenant, const char *field, const char *uri,
		      k8s_read_fn fn, void *arg, struct k8s_read **out, struct lerr *e)
{
	struct k8s_read *rd;
	char path[700];
	int err;

	if ((err = identity_k8s_usable(id, field, uri, tenant, e)) < 0)
		return err;
	if (!(rd = calloc(1, sizeof(*rd))))
		return lerr_set(e, ENOMEM, "identity: out of memory");
	identity_k8s_parse(field, uri, rd->name, rd->key, e);
	rd->fn = fn;
	rd->arg = arg;
	snprintf(rd->ns, sizeof(rd->ns), NS_PREFIX "%s", tenant);
	snprintf(path, sizeof(path), "/api/v1/namespaces/%s/secrets/%s", rd->ns, rd->name);
	if ((err = kube_get_sensitive(id->kube, path, IDENTITY_K8S_TIMEOUT_MS, on_read, rd, &rd->q, e)) < 0) {
		free(rd);
		return err;
	}
	*out = rd;
	return 0;
}

void identity_k8s_cancel(struct k8s_read *rd)
{
	if (!rd)
		return;
	kube_cancel(rd->q);
	free(rd);
}

/* ---- prefetch before a start ---- */

static void pf_unlink(struct run_prefetch *pf)
{
	struct identity *id = pf->id;

	if (pf->prev)
		pf->prev->next = pf->next;
	else if (id->prefetches == pf)
		id->prefetches = pf->next;
	if (pf->next)
		pf->next->prev = pf->prev;
	pf->prev = pf->next = NULL;
}

static void pf_finish(struct run_prefetch *pf)
{
	pf_unlink(pf);
	pf->done(pf->arg, pf);
}

static void on_pf_timer(struct loop *l, void *arg)
{
	struct run_prefetch *pf = arg;

	pf->timer = 0;
	pf_finish(pf);
}

static void on_pf_read(void *arg, uint8_t *v, size_t len, const char *why)
{
	struct pf_entry *en = arg;
	struct run_prefetch *pf = en->pf;

	en->rd = NULL;
	en->value = v;
	en->len = len;
	en->read_at = (int64_t)time(NULL);
	if (why)
		snprintf(en->why, sizeof(en->why), "%s", why);
	if (!--pf->left)
		pf_finish(pf);
}

/* The spec's k8s:// entries, copied (the rest stays NULL); 0 when it names none. */
static size_t pf_entries(struct run_prefetch *pf, const struct spec *s)
{
	size_t k8s = 0;

	for (size_t i = 0; i < s->n_secrets; i++) {
		pf->e[i].pf = pf;
		if (!strncmp(s->secrets[i].secret_uri, IDENTITY_K8S_SCHEME, strlen(IDENTITY_K8S_SCHEME)) &&
		    (pf->e[i].uri = strdup(s->secrets[i].secret_uri)))
			k8s++;
	}
	return k8s;
}

int identity_prefetch(struct identity *id, const char *file, const char *yaml, size_t len,
		      identity_prefetch_fn done, void *arg, struct run_prefetch **out)
{
	struct spec_errors errs = { 0 };
	struct run_prefetch *pf;
	struct spec *s = NULL;

	*out = NULL;
	/* a spec that does not parse is refused by the start itself, with its errors */
	if (spec_parse(file, yaml, len, &s, &errs) < 0) {
		spec_errors_free(&errs);
		return 0;
	}
	if (!s->n_secrets) {
		spec_free(s);
		return 0;
	}
	/* out of memory: nothing is read, and admission refuses what it does not find */
	if (!(pf = calloc(1, sizeof(*pf))) || !(pf->e = calloc(s->n_secrets, sizeof(*pf->e)))) {
		free(pf);
		spec_free(s);
		return 0;
	}
	pf->id = id;
	pf->n = s->n_secrets;
	pf->done = done;
	pf->arg = arg;
	snprintf(pf->tenant, sizeof(pf->tenant), "%s", id->tenant);
	if (!pf_entries(pf, s)) {
		spec_free(s);
		identity_prefetch_free(pf);
		return 0;
	}
	spec_free(s);
	for (size_t i = 0; i < pf->n; i++) {
		char field[64];
		struct lerr e = { 0 };

		if (!pf->e[i].uri)
			continue;
		snprintf(field, sizeof(field), "spec.secrets[%zu].secret_uri", i);
		/* what cannot be asked for is refused at admission, with the same reason */
		if (identity_k8s_read(id, pf->tenant, field, pf->e[i].uri, on_pf_read, &pf->e[i], &pf->e[i].rd, &e) < 0)
			snprintf(pf->e[i].why, sizeof(pf->e[i].why), "%s", e.msg);
		else
			pf->left++;
	}
	pf->next = id->prefetches;
	if (pf->next)
		pf->next->prev = pf;
	id->prefetches = pf;
	/* done never runs from within: with nothing in flight, on the next turn */
	if (!pf->left)
		pf->timer = loop_timer_add(id->loop, 0, on_pf_timer, pf);
	*out = pf;
	return 1;
}

void identity_prefetch_free(struct run_prefetch *pf)
{
	if (!pf)
		return;
	pf_unlink(pf);
	if (pf->timer)
		loop_timer_cancel(pf->id->loop, pf->timer);
	for (size_t i = 0; i < pf->n; i++) {
		identity_k8s_cancel(pf->e[i].rd);
		if (pf->e[i].value)
			sodium_free(pf->e[i].value);
		free(pf->e[i].uri);
	}
	free(pf->e);
	free(pf);
}

void identity_prefetch_stop(struct identity *id)
{
	for (struct run_prefetch *pf = id->prefetches; pf; pf = pf->next)
		for (size_t i = 0; i < pf->n; i++) {
			identity_k8s_cancel(pf->e[i].rd);
			pf->e[i].rd = NULL;
			if (pf->e[i].uri && !pf->e[i].value && !pf->e[i].why[0])
				snprintf(pf->e[i].why, sizeof(pf->e[i].why), "lanternd is stopping");
		}
}

int identity_prefetch_take(struct identity *id, const struct run *r, size_t i, const char *field, const char *uri,
			   uint8_t **v, size_t *len, int64_t *read_at, struct lerr *e)
{
	struct run_prefetch *pf = run_prefetch(r);
	struct pf_entry *en = pf && i < pf->n ? &pf->e[i] : NULL;
	int err;

	if ((err = identity_k8s_usable(id, field, uri, run_tenant(r), e)) < 0)
		return err;
	if (!en || !en->uri || strcmp(en->uri, uri) || strcmp(pf->tenant, run_tenant(r)))
		return lerr_set(e, EPERM, "spawn: refused: %s: \"%s\": a k8s:// secret is read from the API server "
				"before a run starts, and this start did not read it", field, uri);
	if (!en->value)
		return lerr_set(e, EACCES, "spawn: refused: %s: \"%s\": %s", field, uri,
				en->why[0] ? en->why : "not read");
	if (v) {
		*v = en->value;
		*len = en->len;
		*read_at = en->read_at;
		en->value = NULL;
		en->len = 0;
	}
	return 0;
}
