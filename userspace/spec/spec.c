/* spec.c: the AgentSpec schema. Walks the YAML node tree, checks every field against
 * agent.yaml's reference (docs/agent-yaml.md), applies defaults, fills struct spec and
 * its normalized JSON.
 *
 * Validation never stops at the first problem: each field is checked on its own and
 * every error is collected with its position and dotted path, so one run of
 * `lantern validate` shows everything wrong with a file. A spec is only handed out when
 * there is no error at all. */
#include "lantern/spec.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lantern/policy.h"
#include "lantern/util.h"
#include "spec_int.h"

#define API_VERSION "lantern.dev/v1"
#define EGRESS_MODE_LABEL "lantern.dev/egress-mode"

static const char *const iso_names[] = {
	[SPEC_ISO_STANDARD] = "standard", [SPEC_ISO_TRUSTED] = "trusted",
	[SPEC_ISO_UNTRUSTED] = "untrusted", [SPEC_ISO_HOSTILE] = "hostile",
	[SPEC_ISO_WASM] = "wasm",         [SPEC_ISO_DEVCONTAINER] = "devcontainer",
};

static const char *const net_names[] = {
	[SPEC_NET_NONE] = "none", [SPEC_NET_ALLOWLIST_DOMAIN] = "allowlist_domain",
	[SPEC_NET_TENANT_VPC] = "tenant_vpc", [SPEC_NET_OPEN] = "open",
};

static const char *const http_methods[] = {
	"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
};

const char *spec_isolation_name(enum spec_isolation i)
{
	return (unsigned)i < ARRAY_SIZE(iso_names) ? iso_names[i] : "unknown";
}

const char *spec_network_name(enum spec_network n)
{
	return (unsigned)n < ARRAY_SIZE(net_names) ? net_names[n] : "unknown";
}

const char *spec_label(const struct spec *s, const char *key)
{
	for (size_t i = 0; s && i < s->n_labels; i++)
		if (!strcmp(s->labels[i].key, key))
			return s->labels[i].value;
	return NULL;
}

bool spec_region_ok(const struct spec *s, const char *region)
{
	const char *fb = spec_label(s, SPEC_REGION_FALLBACK_LABEL);

	if (!s->n_preferred_regions || (fb && !strcmp(fb, "allow")))
		return true;
	for (size_t i = 0; region && *region && i < s->n_preferred_regions; i++)
		if (!strcmp(s->preferred_regions[i], region))
			return true;
	return false;
}

/* ---- node helpers ---- */

bool is_null(const struct snode *n)
{
	return n->kind == SN_SCALAR && n->plain &&
	       (!*n->str || !strcmp(n->str, "~") || !strcmp(n->str, "null") ||
		!strcmp(n->str, "Null") || !strcmp(n->str, "NULL"));
}

/* Absent and explicit null both mean "not set", as in Kubernetes. */
bool unset(const struct snode *n)
{
	return !n || is_null(n);
}

const char *kind_name(const struct snode *n)
{
	if (n->kind == SN_MAP)
		return "a mapping";
	if (n->kind == SN_SEQ)
		return "a list";
	return is_null(n) ? "null" : "a scalar";
}

static void path_join(char *out, size_t len, const char *base, const char *key)
{
	snprintf(out, len, "%s%s%s", base, *base ? "." : "", key);
}


/* Checks n is a mapping whose keys are unique and all in f; sets f[].key/val.
 * what names the mapping in the unknown-field message. */
bool walk_map(struct sctx *c, struct snode *n, const char *path, const char *what,
		     struct field *f, size_t nf)
{
	if (n->kind != SN_MAP) {
		sctx_error(c, n->line, n->col, *path ? path : NULL, "expected a mapping, found %s",
			   kind_name(n));
		return false;
	}
	for (size_t i = 0; i + 1 < n->n; i += 2) {
		struct snode *k = n->kids[i], *v = n->kids[i + 1];
		char sub[512], known[512] = "";
		size_t j;

		if (k->kind != SN_SCALAR) {
			sctx_error(c, k->line, k->col, *path ? path : NULL,
				   "keys must be strings, found %s", kind_name(k));
			continue;
		}
		path_join(sub, sizeof(sub), path, k->str);
		for (j = 0; j < nf; j++)
			if (!strcmp(f[j].name, k->str))
				break;
		if (j == nf) {
			for (size_t m = 0; m < nf; m++)
				snprintf(known + strlen(known), sizeof(known) - strlen(known), "%s%s",
					 m ? ", " : "", f[m].name);
			sctx_error(c, k->line, k->col, sub, "unknown field (%s takes: %s)", what,
				   known);
			continue;
		}
		if (f[j].key) {
			sctx_error(c, k->line, k->col, sub, "duplicate key (first at line %d)",
				   f[j].key->line);
			continue;
		}
		f[j].key = k;
		f[j].val = v;
	}
	return true;
}

struct snode *field_val(struct field *f, size_t nf, const char *name)
{
	for (size_t i = 0; i < nf; i++)
		if (!strcmp(f[i].name, name))
			return f[i].val;
	return NULL;
}

void missing(struct sctx *c, const struct snode *parent, const char *path)
{
	sctx_error(c, parent->line, parent->col, path, "required field is missing");
}

/* A string where a string belongs. YAML numbers and booleans are taken as written
 * (env: {PORT: 8080} means "8080"); mappings, lists and null are not strings. */
char *get_str(struct sctx *c, const struct snode *n, const char *path)
{
	char *s;

	if (n->kind != SN_SCALAR || is_null(n)) {
		sctx_error(c, n->line, n->col, path, "expected a string, found %s", kind_name(n));
		return NULL;
	}
	s = strdup(n->str);
	if (!s)
		c->oom = true;
	return s;
}

bool get_uint(struct sctx *c, const struct snode *n, const char *path, uint64_t *out)
{
	const char *s = n->str;
	uint64_t v = 0;

	if (n->kind != SN_SCALAR || is_null(n)) {
		sctx_error(c, n->line, n->col, path, "expected a non-negative integer, found %s",
			   kind_name(n));
		return false;
	}
	if (*s == '-' && s[1]) {
		sctx_error(c, n->line, n->col, path, "\"%s\" must not be negative", s);
		return false;
	}
	if (*s == '+')
		s++;
	if (!*s || strspn(s, "0123456789") != strlen(s)) {
		sctx_error(c, n->line, n->col, path, "\"%s\" is not a non-negative integer", n->str);
		return false;
	}
	for (; *s; s++) {
		if (v > (uint64_t)(INT64_MAX - (*s - '0')) / 10) {
			sctx_error(c, n->line, n->col, path, "\"%s\" is too large", n->str);
			return false;
		}
		v = v * 10 + (uint64_t)(*s - '0');
	}
	*out = v;
	return true;
}

static bool get_bool(struct sctx *c, const struct snode *n, const char *path, bool *out)
{
	static const char *const t[] = { "true", "True", "TRUE" }, *const f[] = { "false", "False", "FALSE" };

	for (size_t i = 0; n->kind == SN_SCALAR && n->plain && i < ARRAY_SIZE(t); i++) {
		if (!strcmp(n->str, t[i]) || !strcmp(n->str, f[i])) {
			*out = !strcmp(n->str, t[i]);
			return true;
		}
	}
	if (n->kind == SN_SCALAR && !is_null(n))
		sctx_error(c, n->line, n->col, path, "\"%s\" is not a boolean (true or false)",
			   n->str);
	else
		sctx_error(c, n->line, n->col, path, "expected true or false, found %s",
			   kind_name(n));
	return false;
}

bool get_enum(struct sctx *c, const struct snode *n, const char *path, const char *what,
		     const char *const *names, size_t nn, int *out)
{
	char allowed[256] = "";

	if (n->kind == SN_SCALAR && !is_null(n)) {
		for (size_t i = 0; i < nn; i++) {
			if (!strcmp(n->str, names[i])) {
				*out = (int)i;
				return true;
			}
		}
	}
	for (size_t i = 0; i < nn; i++)
		snprintf(allowed + strlen(allowed), sizeof(allowed) - strlen(allowed), "%s%s",
			 i ? ", " : "", names[i]);
	if (n->kind == SN_SCALAR && !is_null(n))
		sctx_error(c, n->line, n->col, path, "\"%s\" is not %s (one of: %s)", n->str, what,
			   allowed);
	else
		sctx_error(c, n->line, n->col, path, "expected %s (one of: %s), found %s", what,
			   allowed, kind_name(n));
	return false;
}

/* A list of strings; *out stays NULL with count 0 on error. */
static void get_str_list(struct sctx *c, const struct snode *n, const char *path, char ***out,
			 size_t *count)
{
	char **v;

	if (n->kind != SN_SEQ) {
		sctx_error(c, n->line, n->col, path, "expected a list of strings, found %s",
			   kind_name(n));
		return;
	}
	v = calloc(n->n + 1, sizeof(*v));
	if (!v) {
		c->oom = true;
		return;
	}
	for (size_t i = 0; i < n->n; i++) {
		char sub[512];

		snprintf(sub, sizeof(sub), "%s[%zu]", path, i);
		v[i] = get_str(c, n->kids[i], sub);
	}
	*out = v;
	*count = n->n;
}

static void kv_free(struct spec_kv *kv, size_t n)
{
	for (size_t i = 0; kv && i < n; i++) {
		free(kv[i].key);
		free(kv[i].value);
	}
	free(kv);
}

static bool kv_push(struct sctx *c, struct spec_kv **kv, size_t *n, const char *k, const char *v)
{
	struct spec_kv *nkv = realloc(*kv, (*n + 1) * sizeof(**kv));

	if (!nkv) {
		c->oom = true;
		return false;
	}
	*kv = nkv;
	nkv[*n].key = strdup(k);
	nkv[*n].value = strdup(v);
	(*n)++;
	if (!nkv[*n - 1].key || !nkv[*n - 1].value)
		c->oom = true;
	return !c->oom;
}

static bool valid_env_name(const char *s)
{
	if (!*s || isdigit((unsigned char)*s))
		return false;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && *s != '_')
			return false;
	return true;
}

/* A mapping of strings to strings (labels, env); env also vets each key as a variable
 * name. A null value is the empty string. */
static void get_str_map(struct sctx *c, const struct snode *n, const char *path,
			struct spec_kv **out, size_t *count, bool env)
{
	if (n->kind != SN_MAP) {
		sctx_error(c, n->line, n->col, path, "expected a mapping of strings, found %s",
			   kind_name(n));
		return;
	}
	for (size_t i = 0; i + 1 < n->n; i += 2) {
		const struct snode *k = n->kids[i], *v = n->kids[i + 1];
		char sub[512];
		bool dup = false;

		if (k->kind != SN_SCALAR || is_null(k)) {
			sctx_error(c, k->line, k->col, path, "keys must be strings, found %s",
				   kind_name(k));
			continue;
		}
		snprintf(sub, sizeof(sub), "%s[\"%s\"]", path, k->str);
		for (size_t j = 0; j < i && !dup; j += 2)
			dup = n->kids[j]->kind == SN_SCALAR && !strcmp(n->kids[j]->str, k->str);
		if (dup) {
			sctx_error(c, k->line, k->col, sub, "duplicate key");
			continue;
		}
		if (env && !valid_env_name(k->str)) {
			sctx_error(c, k->line, k->col, sub,
				   "\"%s\" is not an environment variable name (letters, digits and "
				   "'_', not starting with a digit)", k->str);
			continue;
		}
		if (is_null(v)) {
			kv_push(c, out, count, k->str, "");
			continue;
		}
		if (v->kind != SN_SCALAR) {
			sctx_error(c, v->line, v->col, sub, "expected a string, found %s",
				   kind_name(v));
			continue;
		}
		kv_push(c, out, count, k->str, v->str);
	}
}

/* ---- value syntax ---- */

/* DNS-1123 subdomain, as Kubernetes names objects. */
bool valid_name(const char *s)
{
	size_t n = strlen(s), label = 0;

	if (n == 0 || n > 253)
		return false;
	for (size_t i = 0; i <= n; i++) {
		char ch = i < n ? s[i] : '.';

		if (ch == '.') {
			if (!label || s[i - 1] == '-' || s[i - label] == '-' || label > 63)
				return false;
			label = 0;
		} else if ((ch >= 'a' && ch <= 'z') || isdigit((unsigned char)ch) || ch == '-') {
			label++;
		} else {
			return false;
		}
	}
	return true;
}

static bool is_hex(const char *s, size_t n)
{
	if (strlen(s) != n)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isdigit((unsigned char)s[i]) && !(s[i] >= 'a' && s[i] <= 'f'))
			return false;
	return true;
}

bool valid_digest(const char *d)
{
	return (!strncmp(d, "sha256:", 7) && is_hex(d + 7, 64)) ||
	       (!strncmp(d, "sha512:", 7) && is_hex(d + 7, 128));
}

/* A light check only: "host", a digest, NAME@digest or NAME[:TAG]. Whether this node
 * can run the image is admission's call, not the parser's. */
static const char *image_problem(const char *s)
{
	const char *at = strchr(s, '@');
	size_t n = strlen(s);

	if (!strcmp(s, "host"))
		return NULL;
	if (!n)
		return "must not be empty";
	for (const char *p = s; *p; p++)
		if (!isalnum((unsigned char)*p) && !strchr("._/:@-", *p))
			return "is not an image reference (\"host\", sha256:HEX, NAME@sha256:HEX "
			       "or NAME:TAG)";
	if (!strncmp(s, "sha256:", 7) || !strncmp(s, "sha512:", 7))
		return valid_digest(s) ? NULL : "has a malformed digest (sha256: and 64 lowercase "
						"hex digits)";
	if (at) {
		if (at == s || strchr(at + 1, '@'))
			return "is not an image reference (NAME@sha256:HEX)";
		if (!valid_digest(at + 1))
			return "has a malformed digest (sha256: and 64 lowercase hex digits)";
		n = (size_t)(at - s);
	}
	if (strchr("/:.-", s[0]) || strchr("/:.-", s[n - 1]) || strstr(s, "//"))
		return "is not an image reference (NAME:TAG or NAME@sha256:HEX)";
	return NULL;
}

/* ---- sections ---- */

static void parse_metadata(struct sctx *c, struct snode *n, struct spec *s)
{
	struct field f[] = { { "name" }, { "labels" } };
	struct snode *v;

	if (!walk_map(c, n, "metadata", "metadata", f, ARRAY_SIZE(f)))
		return;
	v = field_val(f, ARRAY_SIZE(f), "name");
	if (unset(v)) {
		missing(c, n, "metadata.name");
	} else if ((s->name = get_str(c, v, "metadata.name")) && !valid_name(s->name)) {
		sctx_error(c, v->line, v->col, "metadata.name",
			   "\"%s\" is not a valid name (lowercase letters, digits, '-' and '.', "
			   "starting and ending with a letter or digit, at most 253 characters)",
			   s->name);
	}
	v = field_val(f, ARRAY_SIZE(f), "labels");
	if (unset(v))
		return;
	get_str_map(c, v, "metadata.labels", &s->labels, &s->n_labels, false);
	for (size_t i = 0; v->kind == SN_MAP && i + 1 < v->n; i += 2) {
		const struct snode *k = v->kids[i], *val = v->kids[i + 1];

		if (k->kind != SN_SCALAR || val->kind != SN_SCALAR)
			continue;
		if (!strcmp(k->str, EGRESS_MODE_LABEL) && strcmp(val->str, "audit") &&
		    strcmp(val->str, "enforce"))
			sctx_error(c, val->line, val->col, "metadata.labels[\"" EGRESS_MODE_LABEL "\"]",
				   "\"%s\" is not an egress mode (one of: audit, enforce)", val->str);
		if (!strcmp(k->str, SPEC_REGION_FALLBACK_LABEL) && strcmp(val->str, "allow") &&
		    strcmp(val->str, "deny"))
			sctx_error(c, val->line, val->col, "metadata.labels[\"" SPEC_REGION_FALLBACK_LABEL "\"]",
				   "\"%s\" is not a region fallback (one of: allow, deny)", val->str);
	}
}

void parse_quantity(struct sctx *c, struct snode *v, const char *path, bool milli,
			   uint64_t *out)
{
	const char *why;

	if (unset(v))
		return;
	if (v->kind != SN_SCALAR) {
		sctx_error(c, v->line, v->col, path, "expected a quantity, found %s", kind_name(v));
		return;
	}
	why = spec_quantity(v->str, milli, out);
	if (why)
		sctx_error(c, v->line, v->col, path, "\"%s\" %s", v->str, why);
}

static void parse_limits(struct sctx *c, struct snode *n, struct spec_limits *l)
{
	struct field f[] = { { "vcpu" },      { "memory" },     { "gpu" },
			     { "timeout" },   { "max_steps" },  { "max_tokens" },
			     { "max_cost_usd" }, { "scratch_size" } };
	struct snode *v;
	const char *why;

	if (!walk_map(c, n, "spec.limits", "spec.limits", f, ARRAY_SIZE(f)))
		return;
	parse_quantity(c, field_val(f, ARRAY_SIZE(f), "vcpu"), "spec.limits.vcpu", true,
		       &l->vcpu_milli);
	parse_quantity(c, field_val(f, ARRAY_SIZE(f), "memory"), "spec.limits.memory", false,
		       &l->memory_bytes);
	parse_quantity(c, field_val(f, ARRAY_SIZE(f), "scratch_size"), "spec.limits.scratch_size",
		       false, &l->scratch_bytes);
	if (!unset(v = field_val(f, ARRAY_SIZE(f), "gpu")))
		get_uint(c, v, "spec.limits.gpu", &l->gpu);
	if (!unset(v = field_val(f, ARRAY_SIZE(f), "max_steps")))
		get_uint(c, v, "spec.limits.max_steps", &l->max_steps);
	if (!unset(v = field_val(f, ARRAY_SIZE(f), "max_tokens")))
		get_uint(c, v, "spec.limits.max_tokens", &l->max_tokens);
	if (!unset(v = field_val(f, ARRAY_SIZE(f), "timeout"))) {
		if (v->kind != SN_SCALAR)
			sctx_error(c, v->line, v->col, "spec.limits.timeout",
				   "expected a duration, found %s", kind_name(v));
		else if ((why = spec_duration(v->str, &l->timeout_ms)))
			sctx_error(c, v->line, v->col, "spec.limits.timeout", "\"%s\" %s", v->str,
				   why);
	}
	if (!unset(v = field_val(f, ARRAY_SIZE(f), "max_cost_usd"))) {
		char *end = NULL;
		double d = 0;

		if (v->kind == SN_SCALAR && strspn(v->str, "0123456789.eE+-") == strlen(v->str))
			d = strtod(v->str, &end);
		if (v->kind != SN_SCALAR)
			sctx_error(c, v->line, v->col, "spec.limits.max_cost_usd",
				   "expected a number, found %s", kind_name(v));
		else if (!end || end == v->str || *end || d != d || d > 1e300)
			sctx_error(c, v->line, v->col, "spec.limits.max_cost_usd",
				   "\"%s\" is not a number", v->str);
		else if (d < 0)
			sctx_error(c, v->line, v->col, "spec.limits.max_cost_usd",
				   "\"%s\" must not be negative", v->str);
		else
			l->max_cost_usd = d;
	}
}

static void parse_egress(struct sctx *c, struct snode *n, struct spec *s)
{
	if (n->kind != SN_SEQ) {
		sctx_error(c, n->line, n->col, "spec.egress_rules",
			   "expected a list of rules, found %s", kind_name(n));
		return;
	}
	s->egress = calloc(n->n + 1, sizeof(*s->egress));
	if (!s->egress) {
		c->oom = true;
		return;
	}
	s->n_egress = n->n;
	for (size_t i = 0; i < n->n; i++) {
		struct spec_egress_rule *r = &s->egress[i];
		struct field f[] = { { "pattern" }, { "http_methods" }, { "rate_bps" } };
		char path[48], sub[96];
		struct snode *v;

		snprintf(path, sizeof(path), "spec.egress_rules[%zu]", i);
		if (!walk_map(c, n->kids[i], path, path, f, ARRAY_SIZE(f)))
			continue;
		r->line = n->kids[i]->line;
		r->col = n->kids[i]->col;
		v = field_val(f, ARRAY_SIZE(f), "pattern");
		path_join(sub, sizeof(sub), path, "pattern");
		if (unset(v)) {
			missing(c, n->kids[i], sub);
		} else if ((r->pattern = get_str(c, v, sub))) {
			struct policy_rule pr;
			struct lerr e;

			r->line = v->line;
			r->col = v->col;
			if (policy_parse_pattern(r->pattern, &pr, &e))
				sctx_error(c, v->line, v->col, sub, "%s", e.msg);
		}
		v = field_val(f, ARRAY_SIZE(f), "http_methods");
		path_join(sub, sizeof(sub), path, "http_methods");
		if (!unset(v)) {
			get_str_list(c, v, sub, &r->http_methods, &r->n_http_methods);
			for (size_t m = 0; m < r->n_http_methods; m++) {
				size_t k;

				if (!r->http_methods[m])
					continue;
				for (k = 0; k < ARRAY_SIZE(http_methods); k++)
					if (!strcmp(r->http_methods[m], http_methods[k]))
						break;
				if (k < ARRAY_SIZE(http_methods))
					continue;
				snprintf(sub, sizeof(sub), "%s.http_methods[%zu]", path, m);
				sctx_error(c, v->kids[m]->line, v->kids[m]->col, sub,
					   "\"%s\" is not an HTTP method (one of: GET, HEAD, POST, "
					   "PUT, DELETE, CONNECT, OPTIONS, TRACE, PATCH; uppercase)",
					   r->http_methods[m]);
			}
		}
		v = field_val(f, ARRAY_SIZE(f), "rate_bps");
		path_join(sub, sizeof(sub), path, "rate_bps");
		if (!unset(v))
			get_uint(c, v, sub, &r->rate_bps);
	}
}

static void parse_secrets(struct sctx *c, struct snode *n, struct spec *s)
{
	if (n->kind != SN_SEQ) {
		sctx_error(c, n->line, n->col, "spec.secrets", "expected a list, found %s",
			   kind_name(n));
		return;
	}
	s->secrets = calloc(n->n + 1, sizeof(*s->secrets));
	if (!s->secrets) {
		c->oom = true;
		return;
	}
	s->n_secrets = n->n;
	for (size_t i = 0; i < n->n; i++) {
		struct field f[] = { { "env_name" }, { "secret_uri" } };
		char path[48], sub[96];
		struct snode *v;

		snprintf(path, sizeof(path), "spec.secrets[%zu]", i);
		if (!walk_map(c, n->kids[i], path, path, f, ARRAY_SIZE(f)))
			continue;
		path_join(sub, sizeof(sub), path, "env_name");
		v = field_val(f, ARRAY_SIZE(f), "env_name");
		if (unset(v)) {
			missing(c, n->kids[i], sub);
		} else if ((s->secrets[i].env_name = get_str(c, v, sub))) {
			if (!valid_env_name(v->str))
				sctx_error(c, v->line, v->col, sub,
					   "\"%s\" is not an environment variable name (letters, "
					   "digits and '_', not starting with a digit)", v->str);
			for (size_t j = 0; j < i; j++)
				if (s->secrets[j].env_name && !strcmp(s->secrets[j].env_name, v->str))
					sctx_error(c, v->line, v->col, sub,
						   "\"%s\" is already set by spec.secrets[%zu]",
						   v->str, j);
		}
		path_join(sub, sizeof(sub), path, "secret_uri");
		v = field_val(f, ARRAY_SIZE(f), "secret_uri");
		if (unset(v))
			missing(c, n->kids[i], sub);
		else
			s->secrets[i].secret_uri = get_str(c, v, sub);
	}
}

/* env: a mapping NAME: value, or the Kubernetes list of {name, value}; both become the
 * mapping. */
static void parse_env(struct sctx *c, struct snode *n, struct spec *s)
{
	if (n->kind == SN_MAP) {
		get_str_map(c, n, "spec.env", &s->env, &s->n_env, true);
		return;
	}
	if (n->kind != SN_SEQ) {
		sctx_error(c, n->line, n->col, "spec.env",
			   "expected a mapping NAME: value or a list of {name, value}, found %s",
			   kind_name(n));
		return;
	}
	for (size_t i = 0; i < n->n; i++) {
		struct field f[] = { { "name" }, { "value" } };
		char path[64], sub[96];
		struct snode *nm, *val;
		char *name, *value = NULL;
		bool dup = false;

		snprintf(path, sizeof(path), "spec.env[%zu]", i);
		if (!walk_map(c, n->kids[i], path, path, f, ARRAY_SIZE(f)))
			continue;
		nm = field_val(f, ARRAY_SIZE(f), "name");
		val = field_val(f, ARRAY_SIZE(f), "value");
		path_join(sub, sizeof(sub), path, "name");
		if (unset(nm)) {
			missing(c, n->kids[i], sub);
			continue;
		}
		if (!(name = get_str(c, nm, sub)))
			continue;
		for (size_t j = 0; j < s->n_env && !dup; j++)
			dup = !strcmp(s->env[j].key, name);
		if (!valid_env_name(name))
			sctx_error(c, nm->line, nm->col, sub,
				   "\"%s\" is not an environment variable name (letters, digits and "
				   "'_', not starting with a digit)", name);
		else if (dup)
			sctx_error(c, nm->line, nm->col, sub, "\"%s\" is set twice", name);
		path_join(sub, sizeof(sub), path, "value");
		if (!unset(val))
			value = get_str(c, val, sub);
		if (valid_env_name(name) && !dup && (unset(val) || value))
			kv_push(c, &s->env, &s->n_env, name, value ? value : "");
		free(name);
		free(value);
	}
}

static void parse_body(struct sctx *c, struct snode *n, struct spec *s)
{
	struct field f[] = { { "image_digest" }, { "isolation" },   { "limits" },
			     { "network" },      { "egress_rules" }, { "secrets" },
			     { "labels" },       { "preferred_regions" }, { "idempotent" },
			     { "restore_snapshot_id" }, { "command" }, { "args" }, { "env" } };
	struct snode *v;
	int e;

	s->idempotent = true;
	s->network = SPEC_NET_ALLOWLIST_DOMAIN;
	if (!walk_map(c, n, "spec", "spec", f, ARRAY_SIZE(f)))
		return;
	v = field_val(f, ARRAY_SIZE(f), "image_digest");
	if (unset(v)) {
		missing(c, n, "spec.image_digest");
	} else if ((s->image_digest = get_str(c, v, "spec.image_digest"))) {
		const char *why = image_problem(s->image_digest);

		if (why)
			sctx_error(c, v->line, v->col, "spec.image_digest", "\"%s\" %s",
				   s->image_digest, why);
	}
	if (!unset(v = field_val(f, ARRAY_SIZE(f), "isolation")) &&
	    get_enum(c, v, "spec.isolation", "an isolation class", iso_names,
		     ARRAY_SIZE(iso_names), &e)) {
		s->isolation = (enum spec_isolation)e;
		s->isolation_set = true;
	}
	if (!unset(v = field_val(f, ARRAY_SIZE(f), "limits")))
		parse_limits(c, v, &s->limits);
	if (!unset(v = field_val(f, ARRAY_SIZE(f), "network")) &&
	    get_enum(c, v, "spec.network", "a network mode", net_names, ARRAY_SIZE(net_names),
		     &e))
		s->network = (enum spec_network)e;
	if (!unset(v = field_val(f, ARRAY_SIZE(f), "egress_rules"))) {
		parse_egress(c, v, s);
		if (s->network == SPEC_NET_NONE && v->kind == SN_SEQ && v->n)
			sctx_error(c, v->line, v->col, "spec.egress_rules",
				   "not allowed with network \"none\", which allows no egress "
				   "(the rules would be ignored)");
	}
	if (!unset(v = field_val(f, ARRAY_SIZE(f), "secrets")))
		parse_secrets(c, v, s);
	if (!unset(v = field_val(f, ARRAY_SIZE(f), "labels")))
		get_str_map(c, v, "spec.labels", &s->spec_labels, &s->n_spec_labels, false);
	if (!unset(v = field_val(f, ARRAY_SIZE(f), "preferred_regions")))
		get_str_list(c, v, "spec.preferred_regions", &s->preferred_regions,
			     &s->n_preferred_regions);
	if (!unset(v = field_val(f, ARRAY_SIZE(f), "idempotent")))
		get_bool(c, v, "spec.idempotent", &s->idempotent);
	if (!unset(v = field_val(f, ARRAY_SIZE(f), "restore_snapshot_id")))
		s->restore_snapshot_id = get_str(c, v, "spec.restore_snapshot_id");
	if (!unset(v = field_val(f, ARRAY_SIZE(f), "command")))
		get_str_list(c, v, "spec.command", &s->command, &s->n_command);
	if (!unset(v = field_val(f, ARRAY_SIZE(f), "args")))
		get_str_list(c, v, "spec.args", &s->args, &s->n_args);
	if (!unset(v = field_val(f, ARRAY_SIZE(f), "env")))
		parse_env(c, v, s);
}

static void parse_root(struct sctx *c, struct snode *root, struct spec *s)
{
	struct field f[] = { { "apiVersion" }, { "kind" }, { "metadata" }, { "spec" } };
	struct snode *v;

	if (root->kind != SN_MAP && is_null(root)) {
		sctx_error(c, root->line, root->col, NULL,
			   "the document is empty; expected an AgentSpec");
		return;
	}
	if (root->kind != SN_MAP) {
		sctx_error(c, root->line, root->col, NULL,
			   "expected an AgentSpec mapping, found %s", kind_name(root));
		return;
	}
	walk_map(c, root, "", "an AgentSpec", f, ARRAY_SIZE(f));
	v = field_val(f, ARRAY_SIZE(f), "apiVersion");
	if (unset(v))
		missing(c, root, "apiVersion");
	else if (v->kind != SN_SCALAR || strcmp(v->str, API_VERSION))
		sctx_error(c, v->line, v->col, "apiVersion", "%s%s%s is not supported (expected \""
			   API_VERSION "\")", v->kind == SN_SCALAR ? "\"" : "",
			   v->kind == SN_SCALAR ? v->str : kind_name(v),
			   v->kind == SN_SCALAR ? "\"" : "");
	v = field_val(f, ARRAY_SIZE(f), "kind");
	if (unset(v))
		missing(c, root, "kind");
	else if (v->kind != SN_SCALAR || strcmp(v->str, "AgentSpec"))
		sctx_error(c, v->line, v->col, "kind", "%s%s%s is not supported (expected "
			   "\"AgentSpec\")", v->kind == SN_SCALAR ? "\"" : "",
			   v->kind == SN_SCALAR ? v->str : kind_name(v),
			   v->kind == SN_SCALAR ? "\"" : "");
	v = field_val(f, ARRAY_SIZE(f), "metadata");
	if (unset(v))
		missing(c, root, "metadata");
	else
		parse_metadata(c, v, s);
	v = field_val(f, ARRAY_SIZE(f), "spec");
	if (unset(v))
		missing(c, root, "spec");
	else
		parse_body(c, v, s);
}

/* ---- normalized JSON ---- */

static json_t *kv_json(const struct spec_kv *kv, size_t n)
{
	json_t *o = json_object();

	for (size_t i = 0; o && i < n; i++)
		json_object_set_new(o, kv[i].key, json_string(kv[i].value));
	return o;
}

static json_t *strs_json(char **v, size_t n)
{
	json_t *a = json_array();

	for (size_t i = 0; a && i < n; i++)
		json_array_append_new(a, json_string(v[i]));
	return a;
}

/* Thousandths as a JSON number: whole values stay integers (2, not 2.0). */
static json_t *milli_json(uint64_t v)
{
	if (!v)
		return json_null();
	if (v % 1000 == 0)
		return json_integer((json_int_t)(v / 1000));
	return json_real((double)v / 1000.0);
}

static json_t *bytes_json(uint64_t v)
{
	return v ? json_integer((json_int_t)v) : json_null();
}

static json_t *spec_to_json(const struct spec *s)
{
	json_t *limits, *egress, *secrets, *body;

	limits = json_pack("{s:o,s:o,s:I,s:o,s:I,s:I,s:f,s:o}",
			   "vcpu", milli_json(s->limits.vcpu_milli),
			   "memory", bytes_json(s->limits.memory_bytes),
			   "gpu", (json_int_t)s->limits.gpu,
			   "timeout", milli_json(s->limits.timeout_ms),
			   "max_steps", (json_int_t)s->limits.max_steps,
			   "max_tokens", (json_int_t)s->limits.max_tokens,
			   "max_cost_usd", s->limits.max_cost_usd,
			   "scratch_size", bytes_json(s->limits.scratch_bytes));
	egress = json_array();
	for (size_t i = 0; egress && i < s->n_egress; i++)
		json_array_append_new(egress,
				      json_pack("{s:s,s:o,s:I}", "pattern", s->egress[i].pattern,
						"http_methods",
						strs_json(s->egress[i].http_methods,
							  s->egress[i].n_http_methods),
						"rate_bps", (json_int_t)s->egress[i].rate_bps));
	secrets = json_array();
	for (size_t i = 0; secrets && i < s->n_secrets; i++)
		json_array_append_new(secrets, json_pack("{s:s,s:s}", "env_name",
							 s->secrets[i].env_name, "secret_uri",
							 s->secrets[i].secret_uri));
	body = json_pack("{s:s,s:s,s:o*,s:s,s:o*,s:o*,s:o,s:o,s:b,s:s?,s:o,s:o,s:o}",
			 "image_digest", s->image_digest,
			 "isolation", spec_isolation_name(s->isolation),
			 "limits", limits,
			 "network", spec_network_name(s->network),
			 "egress_rules", egress,
			 "secrets", secrets,
			 "labels", kv_json(s->spec_labels, s->n_spec_labels),
			 "preferred_regions", strs_json(s->preferred_regions,
							s->n_preferred_regions),
			 "idempotent", s->idempotent,
			 "restore_snapshot_id", s->restore_snapshot_id,
			 "command", strs_json(s->command, s->n_command),
			 "args", strs_json(s->args, s->n_args),
			 "env", kv_json(s->env, s->n_env));
	return json_pack("{s:s,s:s,s:{s:s,s:o},s:o}", "apiVersion", API_VERSION,
			 "kind", "AgentSpec", "metadata", "name", s->name, "labels",
			 kv_json(s->labels, s->n_labels), "spec", body);
}

/* ---- entry points ---- */

static int cmp_err(const void *a, const void *b)
{
	const struct serr *x = a, *y = b;

	if (x->line != y->line)
		return x->line < y->line ? -1 : 1;
	if (x->col != y->col)
		return x->col < y->col ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Moves the collected errors, in file order, into errs. */
void hand_out(struct sctx *c, struct spec_errors *errs)
{
	qsort(c->v, c->n, sizeof(*c->v), cmp_err);
	if (errs) {
		errs->msg = calloc(c->n + 1, sizeof(char *));
		for (size_t i = 0; errs->msg && i < c->n; i++)
			errs->msg[errs->n++] = c->v[i].msg;
	}
	if (!errs || !errs->msg)
		for (size_t i = 0; i < c->n; i++)
			free(c->v[i].msg);
	free(c->v);
	c->v = NULL;
	c->n = 0;
}

int spec_parse(const char *file, const char *buf, size_t len, struct spec **out,
	       struct spec_errors *errs)
{
	struct sctx c = { .file = file ? file : "agent.yaml" };
	struct snode *root, *all = NULL;
	struct spec *s;
	int err = 0;

	*out = NULL;
	if (errs)
		*errs = (struct spec_errors){ 0 };
	s = calloc(1, sizeof(*s));
	if (!s || !(s->file = strdup(c.file))) {
		free(s);
		return -ENOMEM;
	}
	root = snode_parse(&c, buf, len, &all);
	if (root)
		parse_root(&c, root, s);
	snode_free_all(all);
	if (c.oom) {
		err = -ENOMEM;
	} else if (c.n) {
		err = -EINVAL;
	} else if (!(s->json = spec_to_json(s))) {
		err = -ENOMEM;
	}
	if (err) {
		if (c.oom)
			sctx_error(&c, 1, 1, NULL, "out of memory");
		hand_out(&c, errs);
		spec_free(s);
		return err;
	}
	free(c.v);
	*out = s;
	return 0;
}

int read_input(const char *path, char **buf, size_t *len, struct spec_errors *errs)
{
	char *msg = NULL;
	int err = util_read_file(path, buf, len);

	if (errs)
		*errs = (struct spec_errors){ 0 };
	if (err && errs && asprintf(&msg, "%s: cannot read: %s", path, strerror(-err)) >= 0) {
		errs->msg = calloc(2, sizeof(char *));
		if (errs->msg)
			errs->msg[errs->n++] = msg;
		else
			free(msg);
	}
	return err;
}

int spec_parse_file(const char *path, struct spec **out, struct spec_errors *errs)
{
	char *buf = NULL;
	size_t len = 0;
	int err;

	*out = NULL;
	if ((err = read_input(path, &buf, &len, errs)))
		return err;
	err = spec_parse(path, buf, len, out, errs);
	free(buf);
	return err;
}

static void strs_free(char **v, size_t n)
{
	for (size_t i = 0; v && i < n; i++)
		free(v[i]);
	free(v);
}

void spec_free(struct spec *s)
{
	if (!s)
		return;
	free(s->file);
	free(s->name);
	kv_free(s->labels, s->n_labels);
	free(s->image_digest);
	for (size_t i = 0; s->egress && i < s->n_egress; i++) {
		free(s->egress[i].pattern);
		strs_free(s->egress[i].http_methods, s->egress[i].n_http_methods);
	}
	free(s->egress);
	for (size_t i = 0; s->secrets && i < s->n_secrets; i++) {
		free(s->secrets[i].env_name);
		free(s->secrets[i].secret_uri);
	}
	free(s->secrets);
	kv_free(s->spec_labels, s->n_spec_labels);
	strs_free(s->preferred_regions, s->n_preferred_regions);
	free(s->restore_snapshot_id);
	strs_free(s->command, s->n_command);
	strs_free(s->args, s->n_args);
	kv_free(s->env, s->n_env);
	json_decref(s->json);
	free(s);
}

void spec_errors_free(struct spec_errors *errs)
{
	if (!errs)
		return;
	for (size_t i = 0; i < errs->n; i++)
		free(errs->msg[i]);
	free(errs->msg);
	*errs = (struct spec_errors){ 0 };
}
