/* spec_test.c: agent.yaml parsing as a user meets it: a full spec, defaults, every
 * quantity and duration form, each kind of error with its exact file:line:col and field
 * path, all errors in one pass, the JSON round trip, and `lantern validate`. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lantern/spec.h"
#include "lantern/util.h"
#include "tap.h"
#include "testlib.h"

static const char *full_yaml =
	"apiVersion: lantern.dev/v1\n"
	"kind: AgentSpec\n"
	"metadata:\n"
	"  name: research-agent.v2\n"
	"  labels:\n"
	"    team: infra\n"
	"    lantern.dev/egress-mode: audit\n"
	"spec:\n"
	"  image_digest: \"ghcr.io/acme/agent@sha256:"
	"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\"\n"
	"  isolation: untrusted\n"
	"  limits:\n"
	"    vcpu: 500m\n"
	"    memory: 256Mi\n"
	"    gpu: 1\n"
	"    timeout: 1h30m\n"
	"    max_steps: 100\n"
	"    max_tokens: 50000\n"
	"    max_cost_usd: 2.5\n"
	"    scratch_size: 1Gi\n"
	"  network: allowlist_domain\n"
	"  egress_rules:\n"
	"    - pattern: \"tcp://10.0.0.0/8:443\"\n"
	"      http_methods: [GET, POST]\n"
	"      rate_bps: 1000000\n"
	"    - pattern: \"*.example.com\"\n"
	"    - pattern: \"udp://[2001:db8::/32]:53\"\n"
	"  secrets:\n"
	"    - env_name: API_KEY\n"
	"      secret_uri: vault://kv/api\n"
	"  labels: {tier: gold}\n"
	"  preferred_regions: [eu-west-1, us-east-1]\n"
	"  idempotent: false\n"
	"  restore_snapshot_id: snap-1\n"
	"  command: [python, -m, agent]\n"
	"  args: [\"--fast\"]\n"
	"  env:\n"
	"    PORT: 8080\n"
	"    MODE: fast\n";

static const char *minimal_head =
	"apiVersion: lantern.dev/v1\n"
	"kind: AgentSpec\n"
	"metadata:\n"
	"  name: a\n"
	"spec:\n"
	"  image_digest: host\n";

static struct spec *parse(const char *yaml, struct spec_errors *errs)
{
	struct spec *s = NULL;

	spec_parse("agent.yaml", yaml, strlen(yaml), &s, errs);
	return s;
}

static bool has_error(const struct spec_errors *e, const char *want)
{
	for (size_t i = 0; i < e->n; i++)
		if (!strcmp(e->msg[i], want))
			return true;
	return false;
}

/* Parses minimal_head + extra under spec:, expects exactly one error, equal to want. */
static void expect_error(const char *doc, const char *want, const char *what)
{
	struct spec_errors e;
	struct spec *s = parse(doc, &e);
	bool ok = !s && e.n == 1 && !strcmp(e.msg[0], want);

	tap_ok(ok, "error: %s", what);
	if (!ok) {
		tap_diag("want: %s", want);
		for (size_t i = 0; i < e.n; i++)
			tap_diag("got:  %s", e.msg[i]);
	}
	spec_free(s);
	spec_errors_free(&e);
}

static char *with_spec(const char *extra)
{
	char *doc;

	if (asprintf(&doc, "%s%s", minimal_head, extra) < 0)
		abort();
	return doc;
}

static void test_full(void)
{
	struct spec_errors e;
	struct spec *s = parse(full_yaml, &e);

	if (!tap_ok(s != NULL, "full spec with every field parses")) {
		for (size_t i = 0; i < e.n; i++)
			tap_diag("%s", e.msg[i]);
		spec_errors_free(&e);
		for (int i = 0; i < 8; i++)
			tap_ok(false, "full spec field check skipped");
		return;
	}
	tap_ok(!strcmp(s->name, "research-agent.v2") && s->n_labels == 2 &&
	       !strcmp(spec_label(s, "team"), "infra") &&
	       !strcmp(spec_label(s, "lantern.dev/egress-mode"), "audit") &&
	       !spec_label(s, "nope"), "metadata: name and labels");
	tap_ok(s->isolation == SPEC_ISO_UNTRUSTED && s->isolation_set &&
	       s->network == SPEC_NET_ALLOWLIST_DOMAIN &&
	       !strncmp(s->image_digest, "ghcr.io/acme/agent@sha256:", 26),
	       "image_digest, isolation, network");
	tap_ok(s->limits.vcpu_milli == 500 && s->limits.memory_bytes == 256ull << 20 &&
	       s->limits.gpu == 1 && s->limits.timeout_ms == 5400000 &&
	       s->limits.max_steps == 100 && s->limits.max_tokens == 50000 &&
	       s->limits.max_cost_usd == 2.5 && s->limits.scratch_bytes == 1ull << 30,
	       "limits: every field converted");
	tap_ok(s->n_egress == 3 && !strcmp(s->egress[0].pattern, "tcp://10.0.0.0/8:443") &&
	       s->egress[0].n_http_methods == 2 && !strcmp(s->egress[0].http_methods[1], "POST") &&
	       s->egress[0].rate_bps == 1000000 && s->egress[0].line == 22 &&
	       s->egress[0].col == 16 && s->egress[1].rate_bps == 0 &&
	       s->egress[1].n_http_methods == 0, "egress_rules with their positions");
	tap_ok(s->n_secrets == 1 && !strcmp(s->secrets[0].env_name, "API_KEY") &&
	       !strcmp(s->secrets[0].secret_uri, "vault://kv/api"), "secrets");
	tap_ok(s->n_spec_labels == 1 && !strcmp(s->spec_labels[0].value, "gold") &&
	       s->n_preferred_regions == 2 && !strcmp(s->preferred_regions[1], "us-east-1") &&
	       !s->idempotent && !strcmp(s->restore_snapshot_id, "snap-1"),
	       "labels, preferred_regions, idempotent, restore_snapshot_id");
	tap_ok(s->n_command == 3 && !strcmp(s->command[2], "agent") && s->n_args == 1 &&
	       !strcmp(s->args[0], "--fast") && s->n_env == 2 && !strcmp(s->env[0].key, "PORT") &&
	       !strcmp(s->env[0].value, "8080"), "command, args, env (numbers kept as written)");
	{
		json_t *lim = json_object_get(json_object_get(s->json, "spec"), "limits");

		tap_ok(json_real_value(json_object_get(lim, "vcpu")) == 0.5 &&
		       json_integer_value(json_object_get(lim, "memory")) == 268435456 &&
		       json_integer_value(json_object_get(lim, "timeout")) == 5400 &&
		       json_integer_value(json_object_get(lim, "scratch_size")) == 1073741824,
		       "JSON: vcpu in cores, memory in bytes, timeout in seconds");
	}
	spec_free(s);
}

static void test_defaults(void)
{
	struct spec_errors e;
	struct spec *s = parse(minimal_head, &e);
	json_t *body;

	if (!tap_ok(s != NULL, "minimal spec parses")) {
		spec_errors_free(&e);
		tap_ok(false, "defaults skipped");
		tap_ok(false, "defaults in JSON skipped");
		return;
	}
	tap_ok(s->isolation == SPEC_ISO_STANDARD && !s->isolation_set &&
	       s->network == SPEC_NET_ALLOWLIST_DOMAIN && s->idempotent &&
	       s->limits.vcpu_milli == 0 && s->limits.memory_bytes == 0 && s->n_egress == 0 &&
	       !s->restore_snapshot_id && s->n_env == 0,
	       "defaults: standard, allowlist_domain, idempotent, no limits");
	body = json_object_get(s->json, "spec");
	tap_ok(!strcmp(json_string_value(json_object_get(body, "isolation")), "standard") &&
	       !strcmp(json_string_value(json_object_get(body, "network")), "allowlist_domain") &&
	       json_is_true(json_object_get(body, "idempotent")) &&
	       json_is_object(json_object_get(body, "env")) &&
	       json_is_array(json_object_get(body, "egress_rules")) &&
	       json_is_null(json_object_get(body, "restore_snapshot_id")) &&
	       json_is_null(json_object_get(json_object_get(body, "limits"), "memory")),
	       "defaults appear in the normalized JSON");
	spec_free(s);
}

static void test_quantities(void)
{
	static const struct {
		const char *field, *text;
		uint64_t want;
	} ok[] = {
		{ "vcpu", "500m", 500 },          { "vcpu", "\"2\"", 2000 },
		{ "vcpu", "0.5", 500 },           { "vcpu", "2", 2000 },
		{ "vcpu", "1.25", 1250 },         { "vcpu", "0.10000000000000001", 100 },
		{ "memory", "256Mi", 256ull << 20 }, { "memory", "1Gi", 1ull << 30 },
		{ "memory", "1G", 1000000000 },   { "memory", "500k", 500000 },
		{ "memory", "129e6", 129000000 }, { "memory", "1048576", 1048576 },
		{ "memory", "1.5Gi", 3ull << 29 }, { "memory", "2Ei", 2ull << 60 },
		{ "scratch_size", "10Gi", 10ull << 30 },
		{ "timeout", "30s", 30000 },      { "timeout", "5m", 300000 },
		{ "timeout", "1h", 3600000 },     { "timeout", "1h30m", 5400000 },
		{ "timeout", "250ms", 250 },      { "timeout", "30", 30000 },
		{ "timeout", "0.25", 250 },       { "timeout", "1.5h", 5400000 },
		{ "timeout", "2m30s", 150000 },
	};
	static const struct {
		const char *field, *text, *why;
	} bad[] = {
		{ "memory", "12Qi", "is not a Kubernetes quantity" },
		{ "memory", "-1Gi", "must not be negative" },
		{ "memory", "0.5", "is not a whole number of bytes" },
		{ "memory", "100m", "is not a whole number of bytes" },
		{ "memory", "16Ei", "is too large" },
		{ "memory", "1e30", "is too large" },
		{ "memory", "1.2.3", "is not a Kubernetes quantity" },
		{ "vcpu", "-500m", "must not be negative" },
		{ "vcpu", "2 cores", "is not a Kubernetes quantity" },
		{ "timeout", "5x", "is not a duration (like 30s, 5m, 1h30m, 250ms)" },
		{ "timeout", "-5s", "must not be negative" },
		{ "timeout", "h", "is not a duration (like 30s, 5m, 1h30m, 250ms)" },
	};

	for (size_t i = 0; i < ARRAY_SIZE(ok); i++) {
		char extra[256], *doc;
		struct spec_errors e;
		struct spec *s;
		uint64_t got = 0;

		snprintf(extra, sizeof(extra), "  limits:\n    %s: %s\n", ok[i].field, ok[i].text);
		doc = with_spec(extra);
		s = parse(doc, &e);
		if (s && !strcmp(ok[i].field, "vcpu"))
			got = s->limits.vcpu_milli;
		else if (s && !strcmp(ok[i].field, "memory"))
			got = s->limits.memory_bytes;
		else if (s && !strcmp(ok[i].field, "scratch_size"))
			got = s->limits.scratch_bytes;
		else if (s)
			got = s->limits.timeout_ms;
		if (!tap_ok(s && got == ok[i].want, "%s: %s -> %llu", ok[i].field, ok[i].text,
			    (unsigned long long)ok[i].want))
			tap_diag("got %llu%s%s", (unsigned long long)got, e.n ? ", " : "",
				 e.n ? e.msg[0] : "");
		spec_free(s);
		spec_errors_free(&e);
		free(doc);
	}
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		char extra[256], want[256], what[128], *doc;

		snprintf(extra, sizeof(extra), "  limits:\n    %s: %s\n", bad[i].field, bad[i].text);
		snprintf(want, sizeof(want), "agent.yaml:8:%zu: spec.limits.%s: \"%s\" %s",
			 6 + strlen(bad[i].field) + 1, bad[i].field, bad[i].text, bad[i].why);
		snprintf(what, sizeof(what), "%s: %s refused", bad[i].field, bad[i].text);
		doc = with_spec(extra);
		expect_error(doc, want, what);
		free(doc);
	}
}

static void test_error_kinds(void)
{
	static const struct {
		const char *extra, *want, *what;
	} cases[] = {
		{ "  limts: {}\n",
		  "agent.yaml:7:3: spec.limts: unknown field (spec takes: image_digest, isolation, "
		  "limits, network, egress_rules, secrets, labels, preferred_regions, idempotent, "
		  "restore_snapshot_id, command, args, env)", "unknown key" },
		{ "  limits:\n    memory: 1Gi\n    memory: 2Gi\n",
		  "agent.yaml:9:5: spec.limits.memory: duplicate key (first at line 8)",
		  "duplicate key" },
		{ "  limits: [1, 2]\n",
		  "agent.yaml:7:11: spec.limits: expected a mapping, found a list",
		  "a list where a mapping belongs" },
		{ "  command: run.sh\n",
		  "agent.yaml:7:12: spec.command: expected a list of strings, found a scalar",
		  "a scalar where a list belongs" },
		{ "  isolation: secure\n",
		  "agent.yaml:7:14: spec.isolation: \"secure\" is not an isolation class (one of: "
		  "standard, trusted, untrusted, hostile, wasm, devcontainer)", "bad isolation" },
		{ "  network: vpn\n",
		  "agent.yaml:7:12: spec.network: \"vpn\" is not a network mode (one of: none, "
		  "allowlist_domain, tenant_vpc, open)", "bad network" },
		{ "  idempotent: \"true\"\n",
		  "agent.yaml:7:15: spec.idempotent: \"true\" is not a boolean (true or false)",
		  "quoted boolean" },
		{ "  limits: {gpu: 1.5}\n",
		  "agent.yaml:7:17: spec.limits.gpu: \"1.5\" is not a non-negative integer",
		  "fractional gpu" },
		{ "  egress_rules:\n    - pattern: example.com\n    - pattern: example.com\n"
		  "    - pattern: \"10.1.0.1/16:443\"\n",
		  "agent.yaml:10:16: spec.egress_rules[2].pattern: \"10.1.0.1/16:443\": host bits "
		  "are set below the /16 prefix (the network is 10.1.0.0/16)", "bad pattern" },
		{ "  egress_rules:\n    - http_methods: [GET]\n",
		  "agent.yaml:8:7: spec.egress_rules[0].pattern: required field is missing",
		  "missing pattern" },
		{ "  egress_rules:\n    - pattern: a.com\n      http_methods: [get]\n",
		  "agent.yaml:9:22: spec.egress_rules[0].http_methods[0]: \"get\" is not an HTTP "
		  "method (one of: GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE, PATCH; "
		  "uppercase)", "lowercase HTTP method" },
		{ "  egress_rules:\n    - pattern: a.com\n      rate_bps: -5\n",
		  "agent.yaml:9:17: spec.egress_rules[0].rate_bps: \"-5\" must not be negative",
		  "negative rate_bps" },
		{ "  network: none\n  egress_rules:\n    - pattern: 10.0.0.1\n",
		  "agent.yaml:9:5: spec.egress_rules: not allowed with network \"none\", which allows "
		  "no egress (the rules would be ignored)", "egress_rules with network none" },
		{ "  secrets:\n    - env_name: 9LIVES\n      secret_uri: vault://x\n",
		  "agent.yaml:8:17: spec.secrets[0].env_name: \"9LIVES\" is not an environment "
		  "variable name (letters, digits and '_', not starting with a digit)",
		  "bad secret env_name" },
		{ "  env:\n    - name: A\n      value: x\n    - name: A\n",
		  "agent.yaml:10:13: spec.env[1].name: \"A\" is set twice", "env list duplicate" },
		{ "  env: {BAD-NAME: x}\n",
		  "agent.yaml:7:9: spec.env[\"BAD-NAME\"]: \"BAD-NAME\" is not an environment "
		  "variable name (letters, digits and '_', not starting with a digit)",
		  "env map bad name" },
		{ "  labels: {a: [1]}\n",
		  "agent.yaml:7:15: spec.labels[\"a\"]: expected a string, found a list",
		  "label value not a string" },
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		char *doc = with_spec(cases[i].extra);

		expect_error(doc, cases[i].want, cases[i].what);
		free(doc);
	}
	expect_error("apiVersion: lantern.dev/v1\nkind: AgentSpec\nmetadata: {name: a}\n",
		     "agent.yaml:1:1: spec: required field is missing", "missing spec");
	expect_error("apiVersion: lantern.dev/v1\nkind: AgentSpec\nmetadata:\n  labels: {}\n"
		     "spec: {image_digest: host}\n",
		     "agent.yaml:4:3: metadata.name: required field is missing", "missing name");
	expect_error("apiVersion: v1\nkind: AgentSpec\nmetadata: {name: a}\nspec: {image_digest: host}\n",
		     "agent.yaml:1:13: apiVersion: \"v1\" is not supported (expected \"lantern.dev/v1\")",
		     "wrong apiVersion");
	expect_error("apiVersion: lantern.dev/v1\nkind: AgentSpec\nmetadata: {name: My_Agent}\n"
		     "spec: {image_digest: host}\n",
		     "agent.yaml:3:18: metadata.name: \"My_Agent\" is not a valid name (lowercase "
		     "letters, digits, '-' and '.', starting and ending with a letter or digit, at "
		     "most 253 characters)", "bad name");
	expect_error("apiVersion: lantern.dev/v1\nkind: AgentSpec\nmetadata:\n  name: a\n  labels:\n"
		     "    lantern.dev/egress-mode: loud\nspec: {image_digest: host}\n",
		     "agent.yaml:6:30: metadata.labels[\"lantern.dev/egress-mode\"]: \"loud\" is not "
		     "an egress mode (one of: audit, enforce)", "bad egress-mode label");
	expect_error("apiVersion: lantern.dev/v1\nkind: AgentSpec\nmetadata: {name: a}\n"
		     "spec: {image_digest: \"sha256:abc\"}\n",
		     "agent.yaml:4:22: spec.image_digest: \"sha256:abc\" has a malformed digest "
		     "(sha256: and 64 lowercase hex digits)", "bad digest");
	expect_error("apiVersion: lantern.dev/v1\nkind: [AgentSpec\n",
		     "agent.yaml:3:1: YAML syntax error: did not find expected ',' or ']' (while "
		     "parsing a flow sequence that starts at 2:7)", "YAML syntax error");
	expect_error("apiVersion: lantern.dev/v1\n---\nkind: AgentSpec\n",
		     "agent.yaml:2:1: more than one YAML document; agent.yaml holds one AgentSpec",
		     "more than one document");
	expect_error("", "agent.yaml:1:1: the file is empty; expected an AgentSpec", "empty file");
	expect_error("# nothing but a comment\n",
		     "agent.yaml:1:1: the file is empty; expected an AgentSpec", "comment-only file");
	expect_error("- a\n- b\n", "agent.yaml:1:1: expected an AgentSpec mapping, found a list",
		     "a list at the top");
}

static void test_all_errors(void)
{
	const char *doc =
		"apiVersion: lantern.dev/v2\n"
		"metadata:\n"
		"  name: Bad\n"
		"spec:\n"
		"  isolation: secure\n"
		"  limits:\n"
		"    memory: 12Qi\n"
		"  egress_rules:\n"
		"    - pattern: \"http://a.com\"\n"
		"  bogus: 1\n";
	struct spec_errors e;
	struct spec *s = parse(doc, &e);
	bool sorted = true;

	bool ok = !s && e.n == 8 &&
	       has_error(&e, "agent.yaml:1:1: kind: required field is missing") &&
	       has_error(&e, "agent.yaml:5:3: spec.image_digest: required field is missing") &&
	       has_error(&e, "agent.yaml:7:13: spec.limits.memory: \"12Qi\" is not a Kubernetes "
			 "quantity") &&
	       has_error(&e, "agent.yaml:9:16: spec.egress_rules[0].pattern: \"http://a.com\": "
			 "unknown scheme \"http\" (tcp:// or udp://, or none for both)");
	if (!tap_ok(ok, "every error collected in one pass (%zu)", e.n))
		for (size_t i = 0; i < e.n; i++)
			tap_diag("%s", e.msg[i]);
	for (size_t i = 1; i < e.n; i++) {
		int l0 = atoi(strchr(e.msg[i - 1], ':') + 1), l1 = atoi(strchr(e.msg[i], ':') + 1);

		sorted &= l0 <= l1;
	}
	tap_ok(sorted, "errors come in file order");
	spec_errors_free(&e);
}

static void test_env_forms(void)
{
	char *a = with_spec("  env:\n    - name: B\n      value: two\n    - name: A\n");
	char *b = with_spec("  env: {B: two, A: null}\n");
	struct spec_errors e;
	struct spec *sa = parse(a, &e), *sb;

	spec_errors_free(&e);
	sb = parse(b, &e);
	spec_errors_free(&e);
	tap_ok(sa && sb && sa->n_env == 2 && !strcmp(sa->env[1].key, "A") &&
	       !strcmp(sa->env[1].value, "") &&
	       json_equal(json_object_get(json_object_get(sa->json, "spec"), "env"),
			  json_object_get(json_object_get(sb->json, "spec"), "env")),
	       "env as a list of {name, value} normalizes to the same map");
	spec_free(sa);
	spec_free(sb);
	free(a);
	free(b);
}

static void test_round_trip(void)
{
	const char *docs[] = { full_yaml, minimal_head };

	for (size_t i = 0; i < ARRAY_SIZE(docs); i++) {
		struct spec_errors e;
		struct spec *s1 = parse(docs[i], &e), *s2 = NULL;
		char *text = s1 ? json_dumps(s1->json, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;

		spec_errors_free(&e);
		if (text)
			s2 = parse(text, &e);
		for (size_t k = 0; k < e.n; k++)
			tap_diag("%s", e.msg[k]);
		spec_errors_free(&e);
		tap_ok(s2 && json_equal(s1->json, s2->json) &&
		       s1->limits.vcpu_milli == s2->limits.vcpu_milli &&
		       s1->limits.timeout_ms == s2->limits.timeout_ms &&
		       s1->limits.memory_bytes == s2->limits.memory_bytes &&
		       s1->isolation == s2->isolation && s1->network == s2->network &&
		       s1->idempotent == s2->idempotent && s1->n_egress == s2->n_egress &&
		       s1->n_env == s2->n_env,
		       "round trip: normalized JSON parses back to the same spec (%s)",
		       i ? "minimal" : "full");
		free(text);
		spec_free(s1);
		spec_free(s2);
	}
	{
		/* values that are not exact as doubles still come back unchanged */
		char *doc = with_spec("  limits: {vcpu: 100m, timeout: 1234567ms}\n");
		struct spec_errors e;
		struct spec *s1 = parse(doc, &e), *s2 = NULL;
		char *text = s1 ? json_dumps(s1->json, 0) : NULL;

		spec_errors_free(&e);
		if (text)
			s2 = parse(text, &e);
		spec_errors_free(&e);
		tap_ok(s2 && s2->limits.vcpu_milli == 100 && s2->limits.timeout_ms == 1234567,
		       "round trip keeps 100m and 1234.567s exactly");
		free(text);
		free(doc);
		spec_free(s1);
		spec_free(s2);
	}
}

static void test_cli(void)
{
	/* static: testlib cleans up an env it still knows of when the test ends */
	static struct tl_env t;
	char *out = NULL, *err = NULL, bin[400];
	const char *good, *bad;
	json_t *j;
	int rc;

	if (tl_env_init(&t, "spec")) {
		tap_ok(false, "test directory");
		return;
	}
	snprintf(bin, sizeof(bin), "%s/lantern", t.build);
	if (access(bin, X_OK)) {
		for (int i = 0; i < 4; i++)
			tap_skip("build/lantern not built", "lantern validate");
		tl_env_cleanup(&t);
		return;
	}
	good = tl_file(&t, "good.yaml", "%s", full_yaml);
	rc = tl_sh(&out, &err, "%s validate %s", bin, good);
	j = out ? json_loads(out, 0, NULL) : NULL;
	tap_ok(rc == 0 && j && !strcmp(json_string_value(json_object_get(j, "kind")), "AgentSpec") &&
	       strstr(out, "\n  \"apiVersion\"") && strstr(out, "\"args\"") < strstr(out, "\"command\""),
	       "lantern validate: exit 0, indented sorted JSON on stdout");
	json_decref(j);
	free(out);
	free(err);
	bad = tl_file(&t, "bad.yaml", "%s", "apiVersion: lantern.dev/v1\nkind: AgentSpec\n"
		      "metadata: {name: a}\nspec:\n  image_digest: host\n  isolation: secure\n"
		      "  limits: {memory: 12Qi}\n");
	rc = tl_sh(&out, &err, "%s validate %s", bin, bad);
	{
		char want1[512], want2[512];

		snprintf(want1, sizeof(want1), "%s:6:14: spec.isolation: \"secure\" is not", bad);
		snprintf(want2, sizeof(want2), "%s:7:20: spec.limits.memory: \"12Qi\" is not a "
			 "Kubernetes quantity\n", bad);
		if (!tap_ok(rc == 1 && out && !*out && err && strstr(err, want1) &&
			    strstr(err, want2),
			    "lantern validate: exit 1, each error on its own line on stderr"))
			tap_diag("exit %d, stderr: %s", rc, err ? err : "");
	}
	free(out);
	free(err);
	rc = tl_sh(&out, &err, "%s validate %s/missing.yaml", bin, t.dir);
	tap_ok(rc == 1 && err && strstr(err, "missing.yaml: cannot read: No such file or directory"),
	       "lantern validate: unreadable file named with the reason, exit 1");
	free(out);
	free(err);
	rc = tl_sh(&out, &err, "%s validate", bin);
	tap_ok(rc != 0 && rc != 1 && err && strstr(err, "usage"), "lantern validate: usage");
	free(out);
	free(err);
	tl_env_cleanup(&t);
}

int main(void)
{
	tap_plan(9 + 3 + 24 + 12 + 17 + 11 + 2 + 1 + 3 + 4);
	test_full();
	test_defaults();
	test_quantities();
	test_error_kinds();
	test_all_errors();
	test_env_forms();
	test_round_trip();
	test_cli();
	return tap_done();
}
