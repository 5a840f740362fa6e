/* spec.h: agent.yaml, the platform's AgentSpec (apiVersion lantern.dev/v1, kind AgentSpec).
 *
 * spec_parse reads YAML (JSON is accepted too, as the YAML subset it is), checks every
 * field, applies defaults and returns the spec, or a list of errors each naming
 * file:line:col and the field. Nothing here knows what this node can run: every valid
 * AgentSpec of the platform parses; admission decides later. */
#ifndef LANTERN_SPEC_H
#define LANTERN_SPEC_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum spec_isolation {
	SPEC_ISO_STANDARD = 0, /* unset means standard */
	SPEC_ISO_TRUSTED,
	SPEC_ISO_UNTRUSTED,
	SPEC_ISO_HOSTILE,
	SPEC_ISO_WASM,
	SPEC_ISO_DEVCONTAINER,
};

enum spec_network {
	SPEC_NET_NONE = 0,
	SPEC_NET_ALLOWLIST_DOMAIN,
	SPEC_NET_TENANT_VPC,
	SPEC_NET_OPEN,
};

struct spec_limits {
	uint64_t vcpu_milli;     /* "500m" -> 500, "2" -> 2000; 0 = unset */
	uint64_t memory_bytes;   /* 0 = unset */
	uint64_t gpu;
	uint64_t timeout_ms;     /* 0 = unset */
	uint64_t max_steps;      /* 0 = unlimited */
	uint64_t max_tokens;     /* 0 = unlimited */
	double   max_cost_usd;   /* 0 = unlimited */
	uint64_t scratch_bytes;  /* 0 = unset */
};

struct spec_egress_rule {
	char *pattern;           /* as written; its syntax was checked by policy_parse_pattern */
	char **http_methods;
	size_t n_http_methods;
	uint64_t rate_bps;       /* 0 = unlimited */
	int line, col;           /* where the rule's pattern stands in the file */
};

struct spec_secret {
	char *env_name;
	char *secret_uri;
};

struct spec_kv {
	char *key;
	char *value;
};

struct spec {
	char *file;              /* the name errors are reported against */
	char *name;              /* metadata.name */
	struct spec_kv *labels;  /* metadata.labels */
	size_t n_labels;
	char *image_digest;
	enum spec_isolation isolation;
	bool isolation_set;
	struct spec_limits limits;
	enum spec_network network;
	struct spec_egress_rule *egress;
	size_t n_egress;
	struct spec_secret *secrets;
	size_t n_secrets;
	struct spec_kv *spec_labels; /* spec.labels */
	size_t n_spec_labels;
	char **preferred_regions;
	size_t n_preferred_regions;
	bool idempotent;
	char *restore_snapshot_id;
	char **command;
	size_t n_command;
	char **args;
	size_t n_args;
	struct spec_kv *env;
	size_t n_env;
	json_t *json;            /* the normalized spec, defaults applied (owned) */
};

/* Errors, one line each: "FILE:LINE:COL: FIELD: reason". */
struct spec_errors {
	char **msg;
	size_t n;
};

/* Parses buf (len bytes) named file. Returns 0 and *out, or -EINVAL with errs filled
 * (every error found, not only the first). Other -errno for I/O on spec_parse_file. */
int spec_parse(const char *file, const char *buf, size_t len, struct spec **out,
	       struct spec_errors *errs);
int spec_parse_file(const char *path, struct spec **out, struct spec_errors *errs);
void spec_free(struct spec *s);
void spec_errors_free(struct spec_errors *errs);

/* metadata.labels[this]: "allow" lets a run go outside spec.preferred_regions when no
 * node in them can take it; "deny" (the default) keeps it waiting for one. */
#define SPEC_REGION_FALLBACK_LABEL "lantern.dev/region-fallback"
/* True when spec.preferred_regions is empty, names region, or the label allows. */
bool spec_region_ok(const struct spec *s, const char *region);

/* Value of metadata.labels[key], or NULL. */
const char *spec_label(const struct spec *s, const char *key);
const char *spec_isolation_name(enum spec_isolation i);
const char *spec_network_name(enum spec_network n);

#endif
