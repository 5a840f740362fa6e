/* config.c: where the Kubernetes API server is and how lanternd proves who it is: the
 * in-cluster service account (the DaemonSet's case) or a kubeconfig file (a node
 * outside the cluster, and the tests). Only what lanternd can honour is accepted: a
 * bearer token (inline or a file) or a client certificate, a CA as a file or inline
 * data. Credential plugins (exec, auth-provider) and basic auth are refused by name
 * rather than ignored, so a kubeconfig never silently connects as nobody. */
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <yaml.h>

#include "kube_internal.h"

#define SA_DIR "/var/run/secrets/kubernetes.io/serviceaccount"
/* a kubeconfig is a few KiB; anything this large is not one */
#define KUBECONFIG_MAX (4u << 20)

void kube_config_free(struct kube_config *c)
{
	if (!c)
		return;
	free(c->ca_file);
	free(c->ca_pem);
	free(c->cert_file);
	free(c->cert_pem);
	free(c->key_file);
	if (c->key_pem) {
		sodium_memzero(c->key_pem, strlen(c->key_pem));
		free(c->key_pem);
	}
	free(c->token_file);
	if (c->token) {
		sodium_memzero(c->token, strlen(c->token));
		free(c->token);
	}
	free(c);
}

/* ---- YAML to JSON: a kubeconfig's scalars are all strings to us ---- */

static json_t *yaml_node_json(yaml_document_t *d, yaml_node_t *n, int depth)
{
	json_t *out;

	if (!n || depth > 32)
		return NULL;
	switch (n->type) {
	case YAML_SCALAR_NODE:
		return json_stringn((const char *)n->data.scalar.value, n->data.scalar.length);
	case YAML_SEQUENCE_NODE:
		out = json_array();
		for (yaml_node_item_t *i = n->data.sequence.items.start; i < n->data.sequence.items.top; i++)
			json_array_append_new(out, yaml_node_json(d, yaml_document_get_node(d, *i), depth + 1));
		return out;
	case YAML_MAPPING_NODE:
		out = json_object();
		for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
			yaml_node_t *k = yaml_document_get_node(d, p->key);
			json_t *v = yaml_node_json(d, yaml_document_get_node(d, p->value), depth + 1);

			if (k && k->type == YAML_SCALAR_NODE && v)
				json_object_setn_new(out, (const char *)k->data.scalar.value, k->data.scalar.length, v);
			else
				json_decref(v);
		}
		return out;
	default:
		return NULL;
	}
}

static json_t *yaml_to_json(const char *buf, size_t len)
{
	yaml_parser_t p;
	yaml_document_t d;
	json_t *out = NULL;

	if (!yaml_parser_initialize(&p))
		return NULL;
	yaml_parser_set_input_string(&p, (const unsigned char *)buf, len);
	if (yaml_parser_load(&p, &d)) {
		out = yaml_node_json(&d, yaml_document_get_root_node(&d), 0);
		yaml_document_delete(&d);
	}
	yaml_parser_delete(&p);
	return out;
}

/* ---- kubeconfig ---- */

static json_t *named(json_t *list, const char *name, const char *field)
{
	size_t i;
	json_t *x;

	json_array_foreach(list, i, x) {
		const char *n = json_string_value(json_object_get(x, "name"));

		if (n && name && !strcmp(n, name))
			return json_object_get(x, field);
	}
	return NULL;
}

/* A path of the kubeconfig, relative to the file's directory as kubectl reads it. */
static char *config_path(const char *dir, const char *p)
{
	char *out;

	if (!p || !*p)
		return NULL;
	if (p[0] == '/')
		return strdup(p);
	return asprintf(&out, "%s/%s", dir, p) < 0 ? NULL : out;
}

/* Inline *-data: base64 of PEM. */
static int pem_data(const char *what, const char *b64, char **out, struct lerr *e)
{
	size_t cap = strlen(b64), len = 0;
	char *buf = malloc(cap + 1);

	if (!buf)
		return lerr_set(e, ENOMEM, "kubeconfig: out of memory");
	if (sodium_base642bin((unsigned char *)buf, cap, b64, strlen(b64), " \n\r\t", &len, NULL,
			      sodium_base64_VARIANT_ORIGINAL) < 0) {
		free(buf);
		return lerr_set(e, EINVAL, "kubeconfig: %s is not base64", what);
	}
	buf[len] = '\0';
	*out = buf;
	return 0;
}

static const char *jstr(json_t *o, const char *k)
{
	const char *s = json_string_value(json_object_get(o, k));

	return s && *s ? s : NULL;
}

static int from_kubeconfig(struct kube_config *c, const char *path, json_t *kc, struct lerr *e)
{
	char dirbuf[PATH_MAX];
	const char *ctxname = jstr(kc, "current-context"), *dir;
	json_t *ctx, *cluster, *user;
	const char *s;
	int err;

	snprintf(dirbuf, sizeof(dirbuf), "%s", path);
	dir = dirname(dirbuf);
	if (!ctxname)
		return lerr_set(e, EINVAL, "kubeconfig %s: no current-context", path);
	if (!(ctx = named(json_object_get(kc, "contexts"), ctxname, "context")))
		return lerr_set(e, EINVAL, "kubeconfig %s: context \"%s\" is not defined", path, ctxname);
	if (!(cluster = named(json_object_get(kc, "clusters"), jstr(ctx, "cluster"), "cluster")))
		return lerr_set(e, EINVAL, "kubeconfig %s: context \"%s\": cluster \"%s\" is not defined", path,
				ctxname, jstr(ctx, "cluster") ?: "");
	user = named(json_object_get(kc, "users"), jstr(ctx, "user"), "user");
	if (jstr(ctx, "user") && !user)
		return lerr_set(e, EINVAL, "kubeconfig %s: context \"%s\": user \"%s\" is not defined", path,
				ctxname, jstr(ctx, "user"));

	if (!(s = jstr(cluster, "server")) || strncmp(s, "https://", 8))
		return lerr_set(e, EINVAL, "kubeconfig %s: cluster \"%s\": server \"%s\": want https://HOST[:PORT]",
				path, jstr(ctx, "cluster"), s ?: "");
	snprintf(c->server, sizeof(c->server), "%.*s", (int)strcspn(s, "?#"), s);
	while (c->server[0] && c->server[strlen(c->server) - 1] == '/')
		c->server[strlen(c->server) - 1] = '\0';
	c->insecure = (s = jstr(cluster, "insecure-skip-tls-verify")) && !strcmp(s, "true");
	if ((s = jstr(cluster, "certificate-authority-data"))) {
		if ((err = pem_data("certificate-authority-data", s, &c->ca_pem, e)) < 0)
			return err;
	} else {
		c->ca_file = config_path(dir, jstr(cluster, "certificate-authority"));
	}

	if (user && (json_object_get(user, "exec") || json_object_get(user, "auth-provider")))
		return lerr_set(e, ENOTSUP, "kubeconfig %s: user \"%s\": credential plugins (exec, "
				"auth-provider) are not supported: use a token or a client certificate",
				path, jstr(ctx, "user"));
	if (user && (jstr(user, "username") || jstr(user, "password")))
		return lerr_set(e, ENOTSUP, "kubeconfig %s: user \"%s\": basic authentication is not "
				"supported: use a token or a client certificate", path, jstr(ctx, "user"));
	if (user && (s = jstr(user, "token")) && !(c->token = strdup(s)))
		return lerr_set(e, ENOMEM, "kubeconfig: out of memory");
	if (user && !c->token)
		c->token_file = config_path(dir, jstr(user, "tokenFile"));
	if (user && (s = jstr(user, "client-certificate-data"))) {
		if ((err = pem_data("client-certificate-data", s, &c->cert_pem, e)) < 0)
			return err;
	} else if (user) {
		c->cert_file = config_path(dir, jstr(user, "client-certificate"));
	}
	if (user && (s = jstr(user, "client-key-data"))) {
		if ((err = pem_data("client-key-data", s, &c->key_pem, e)) < 0)
			return err;
	} else if (user) {
		c->key_file = config_path(dir, jstr(user, "client-key"));
	}
	if (!!(c->cert_pem || c->cert_file) != !!(c->key_pem || c->key_file))
		return lerr_set(e, EINVAL, "kubeconfig %s: user \"%s\": a client certificate needs its key "
				"and a key its certificate", path, jstr(ctx, "user"));
	if (!c->token && !c->token_file && !c->cert_pem && !c->cert_file)
		return lerr_set(e, EINVAL, "kubeconfig %s: context \"%s\" has no credentials (token, "
				"tokenFile or client certificate)", path, ctxname);
	snprintf(c->source, sizeof(c->source), "kubeconfig %s", path);
	return 0;
}

static int in_cluster(struct kube_config *c, struct lerr *e)
{
	const char *host = getenv("KUBERNETES_SERVICE_HOST"), *port = getenv("KUBERNETES_SERVICE_PORT");

	if (!host || !*host || !port || !*port)
		return lerr_set(e, ENOENT, "kubernetes: not running in a cluster (KUBERNETES_SERVICE_HOST "
				"and KUBERNETES_SERVICE_PORT unset) and no --kubeconfig given");
	snprintf(c->server, sizeof(c->server), strchr(host, ':') ? "https://[%s]:%s" : "https://%s:%s",
		 host, port);
	if (!(c->token_file = strdup(SA_DIR "/token")) || !(c->ca_file = strdup(SA_DIR "/ca.crt")))
		return lerr_set(e, ENOMEM, "kubernetes: out of memory");
	snprintf(c->source, sizeof(c->source), "in-cluster service account (%s)", SA_DIR);
	return 0;
}

int kube_config_load(const char *path, struct kube_config **out, struct lerr *e)
{
	struct kube_config *c = calloc(1, sizeof(*c));
	char *buf = NULL;
	size_t len = 0;
	json_t *kc = NULL;
	int err;

	if (!c)
		return lerr_set(e, ENOMEM, "kubernetes: out of memory");
	if (!path) {
		err = in_cluster(c, e);
	} else if ((err = util_read_file(path, &buf, &len)) < 0) {
		lerr_set(e, err, "kubeconfig %s: %s", path, strerror(-err));
	} else if (len > KUBECONFIG_MAX || !(kc = yaml_to_json(buf, len)) || !json_is_object(kc)) {
		err = lerr_set(e, EINVAL, "kubeconfig %s: not a YAML mapping", path);
	} else {
		err = from_kubeconfig(c, path, kc, e);
	}
	json_decref(kc);
	free(buf);
	/* a token file is read now so that a missing one is an error at start, not a
	 * stream of 401s later */
	if (!err && c->token_file) {
		struct lerr te;

		if ((err = kube_config_token(c, &te)) < 0)
			lerr_set(e, -err, "%s: %s", c->source, te.msg);
	}
	if (err < 0) {
		kube_config_free(c);
		return err;
	}
	*out = c;
	return 0;
}

int kube_config_token(struct kube_config *c, struct lerr *e)
{
	uint64_t now = util_now_ns(CLOCK_MONOTONIC);
	char *buf;
	size_t len;
	int err;

	if (!c->token_file || (c->token && now - c->token_read_ns < KUBE_TOKEN_REREAD_NS))
		return 0;
	if ((err = util_read_file(c->token_file, &buf, &len)) < 0)
		return lerr_set(e, err, "token file %s: %s", c->token_file, strerror(-err));
	while (len && (buf[len - 1] == '\n' || buf[len - 1] == '\r' || buf[len - 1] == ' '))
		buf[--len] = '\0';
	if (!len || strpbrk(buf, "\r\n")) {
		sodium_memzero(buf, len);
		free(buf);
		return lerr_set(e, EINVAL, "token file %s: not one token", c->token_file);
	}
	if (c->token) {
		sodium_memzero(c->token, strlen(c->token));
		free(c->token);
	}
	c->token = buf;
	c->token_read_ns = now;
	return 0;
}
