/* cmds.c: the small lanternd subcommands: ps, kill, audit egress, egress update. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "client.h"

int cmd_ps(struct cli *c, int argc, char **argv)
{
	json_t *req, *res, *runs, *r;
	bool as_json = argc == 2 && !strcmp(argv[1], "--json");
	size_t i;

	if (argc > 1 && !as_json) {
		fprintf(stderr, "usage: lantern ps [--json]\n");
		return 2;
	}
	req = json_pack("{s:s}", "op", "ps");
	res = client_call(c, req);
	json_decref(req);
	if (!res)
		return 1;
	runs = json_object_get(res, "runs");
	if (as_json) {
		json_dumpf(runs, stdout, JSON_INDENT(2) | JSON_SORT_KEYS);
		printf("\n");
		json_decref(res);
		return 0;
	}
	printf("%-16s %-16s %-24s %-11s %s\n", "RUN", "INSTANCE", "NAME", "STATUS", "REASON");
	json_array_foreach(runs, i, r) {
		long long oom = json_integer_value(json_object_get(r, "oom_kills"));

		printf("%-16s %-16s %-24s %-11s %s", json_string_value(json_object_get(r, "id")),
		       json_string_value(json_object_get(r, "instance_id")),
		       json_string_value(json_object_get(r, "name")),
		       json_string_value(json_object_get(r, "status")),
		       json_string_value(json_object_get(r, "reason")) ?: "");
		if (oom)
			printf("%s(%lld OOM kill%s in the instance)", json_string_value(json_object_get(r, "reason")) ?
			       " " : "", oom, oom == 1 ? "" : "s");
		printf("\n");
	}
	json_decref(res);
	return 0;
}

int cmd_kill(struct cli *c, int argc, char **argv)
{
	json_t *req, *res;

	if (argc != 2) {
		fprintf(stderr, "usage: lantern kill RUN\n");
		return 2;
	}
	req = json_pack("{s:s, s:s}", "op", "kill", "run_id", argv[1]);
	res = client_call(c, req);
	json_decref(req);
	if (!res)
		return 1;
	json_decref(res);
	return 0;
}

static void print_audit(json_t *r)
{
	json_t *x, *s;
	size_t i, k;

	printf("run %s (%s) instance %s, cgroup id %lld, %s\n",
	       json_string_value(json_object_get(r, "id")), json_string_value(json_object_get(r, "name")),
	       json_string_value(json_object_get(r, "instance_id")),
	       (long long)json_integer_value(json_object_get(r, "cgroup_id")),
	       json_string_value(json_object_get(r, "status")));
	printf("  network: %s   mode: %s", json_string_value(json_object_get(r, "network")),
	       json_string_value(json_object_get(r, "mode")));
	if (json_object_get(r, "policy_id"))
		printf("   policy id: %lld", (long long)json_integer_value(json_object_get(r, "policy_id")));
	printf("\n  egress_rules (agent.yaml):\n");
	json_array_foreach(json_object_get(r, "rules"), i, x)
		printf("    [%lld] %s\n", (long long)json_integer_value(json_object_get(x, "index")),
		       json_string_value(json_object_get(x, "pattern")));
	if (!json_array_size(json_object_get(r, "rules")))
		printf("    (none)\n");
	printf("  may reach now (kernel map lantern_egress, longest prefix decides):\n");
	json_array_foreach(json_object_get(r, "entries"), i, x) {
		json_array_foreach(json_object_get(x, "allow"), k, s) {
			char ports[32];
			long long lo = json_integer_value(json_object_get(s, "port_lo"));
			long long hi = json_integer_value(json_object_get(s, "port_hi"));

			if (lo == 0 && hi == 65535)
				snprintf(ports, sizeof(ports), "all ports");
			else if (lo == hi)
				snprintf(ports, sizeof(ports), "port %lld", lo);
			else
				snprintf(ports, sizeof(ports), "ports %lld-%lld", lo, hi);
			printf("    %-40s %-8s %-16s rule %lld", json_string_value(json_object_get(x, "prefix")),
			       json_string_value(json_object_get(s, "protocols")), ports,
			       (long long)json_integer_value(json_object_get(s, "rule")));
			if (json_object_get(s, "expires_in_s"))
				printf("  (from DNS, %llds left)",
				       (long long)json_integer_value(json_object_get(s, "expires_in_s")));
			printf("\n");
		}
	}
	if (!json_array_size(json_object_get(r, "entries")))
		printf("    nothing\n");
	x = json_object_get(r, "counters");
	printf("  counters: allowed %lld, denied %lld, audited %lld, dns redirected %lld, dns refused %lld\n",
	       (long long)json_integer_value(json_object_get(x, "allowed")),
	       (long long)json_integer_value(json_object_get(x, "denied")),
	       (long long)json_integer_value(json_object_get(x, "audited")),
	       (long long)json_integer_value(json_object_get(x, "dns_redirected")),
	       (long long)json_integer_value(json_object_get(x, "dns_refused")));
	printf("  dns: %lld learned addresses of at most %lld, %lld answers refused\n",
	       (long long)json_integer_value(json_object_get(x, "dns_learned")),
	       (long long)json_integer_value(json_object_get(x, "dns_learn_max")),
	       (long long)json_integer_value(json_object_get(x, "dns_answers_refused")));
	{
		json_t *pd = json_object_get(x, "packets_dropped");

		printf("  packets dropped: routing header %lld, source route %lld, ip options %lld, "
		       "extension headers %lld, socket type %lld, audited %lld\n",
		       (long long)json_integer_value(json_object_get(pd, "ipv6_routing_header")),
		       (long long)json_integer_value(json_object_get(pd, "ipv4_source_route")),
		       (long long)json_integer_value(json_object_get(pd, "ipv4_options")),
		       (long long)json_integer_value(json_object_get(pd, "ipv6_extension_headers")),
		       (long long)json_integer_value(json_object_get(pd, "socket_type")),
		       (long long)json_integer_value(json_object_get(pd, "audited")));
	}
	printf("  tried and refused or audited (latest %zu):\n", json_array_size(json_object_get(r, "recent")));
	json_array_foreach(json_object_get(r, "recent"), i, x) {
		if (json_object_get(x, "suppressed"))
			printf("    %s %-6s %s\n", json_string_value(json_object_get(x, "time")) ?: "",
			       json_string_value(json_object_get(x, "verdict")) ?: "",
			       json_string_value(json_object_get(x, "message")) ?: "");
		else if (json_object_get(x, "qname"))
			printf("    %s %-6s dns %s %s (pid n/a)%s%s%s%s\n", json_string_value(json_object_get(x, "time")),
			       json_string_value(json_object_get(x, "verdict")),
			       json_string_value(json_object_get(x, "qtype")) ?: "answer",
			       json_string_value(json_object_get(x, "qname")),
			       json_object_get(x, "answer") ? " " : "",
			       json_string_value(json_object_get(x, "answer")) ?: "",
			       json_object_get(x, "reason") ? ": " : "",
			       json_string_value(json_object_get(x, "reason")) ?: "");
		else
			printf("    %s %-6s %s %s port %lld by pid %lld (%s)%s%s\n",
			       json_string_value(json_object_get(x, "time")),
			       json_string_value(json_object_get(x, "verdict")),
			       json_string_value(json_object_get(x, "proto")),
			       json_string_value(json_object_get(x, "dst")),
			       (long long)json_integer_value(json_object_get(x, "port")),
			       (long long)json_integer_value(json_object_get(x, "pid")),
			       json_string_value(json_object_get(x, "comm")),
			       json_object_get(x, "reason") ? ": " : "",
			       json_string_value(json_object_get(x, "reason")) ?: "");
	}
}

/* lantern audit egress [--json] [RUN] */
int cmd_audit(struct cli *c, int argc, char **argv)
{
	const char *run = NULL;
	bool as_json = false;
	json_t *req, *res, *r;
	size_t i;

	if (argc < 2 || strcmp(argv[1], "egress")) {
		fprintf(stderr, "usage: lantern audit egress [--json] [RUN]\n");
		return 2;
	}
	for (int k = 2; k < argc; k++) {
		if (!strcmp(argv[k], "--json"))
			as_json = true;
		else
			run = argv[k];
	}
	req = run ? json_pack("{s:s, s:s}", "op", "audit_egress", "run_id", run)
		  : json_pack("{s:s}", "op", "audit_egress");
	res = client_call(c, req);
	json_decref(req);
	if (!res)
		return 1;
	if (as_json) {
		json_dumpf(json_object_get(res, "runs"), stdout, JSON_INDENT(2) | JSON_SORT_KEYS);
		printf("\n");
	} else {
		json_array_foreach(json_object_get(res, "runs"), i, r)
			print_audit(r);
		if (!json_array_size(json_object_get(res, "runs")))
			printf("no running instances\n");
	}
	json_decref(res);
	return 0;
}

/* lantern egress update RUN FILE.yaml */
int cmd_egress(struct cli *c, int argc, char **argv)
{
	json_t *req, *res;
	char *yaml;
	size_t len;

	if (argc != 4 || strcmp(argv[1], "update")) {
		fprintf(stderr, "usage: lantern egress update RUN FILE.yaml\n");
		return 2;
	}
	if (client_read_file(argv[3], &yaml, &len) < 0)
		return 1;
	req = json_pack("{s:s, s:s, s:s, s:s%}", "op", "egress_update", "run_id", argv[2], "file",
			argv[3], "yaml", yaml, len);
	free(yaml);
	res = req ? client_call(c, req) : NULL;
	json_decref(req);
	if (!res)
		return 1;
	json_decref(res);
	return 0;
}
