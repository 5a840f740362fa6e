/* pools.c: `lantern pools`: the node's pools of sandboxes started and waiting
 * (docs/pools.md): each pool's size, target, ready and starting sandboxes, claims in
 * the last minute, refill time, and why it is not filling when it is not. */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "client.h"

static long long num(json_t *o, const char *k)
{
	return (long long)json_integer_value(json_object_get(o, k));
}

int cmd_pools(struct cli *c, int argc, char **argv)
{
	bool as_json = argc == 2 && !strcmp(argv[1], "--json");
	json_t *req, *res, *p;
	size_t i;

	if (argc > 1 && !as_json) {
		fprintf(stderr, "usage: lantern pools [--json]\n");
		return 2;
	}
	req = json_pack("{s:s}", "op", "pools");
	res = client_call(c, req);
	json_decref(req);
	if (!res)
		return 1;
	if (as_json) {
		json_dumpf(json_object_get(res, "pools"), stdout, JSON_INDENT(2) | JSON_SORT_KEYS);
		printf("\n");
		json_decref(res);
		return 0;
	}
	if (!json_array_size(json_object_get(res, "pools")))
		printf("no pools (lanternd --pools FILE declares them)\n");
	else
		printf("%-20s %-9s %-7s %-6s %-9s %-10s %-12s %s\n", "POOL", "SIZE", "TARGET", "READY", "STARTING",
		       "CLAIMS/MIN", "REFILL p50", "NOTE");
	json_array_foreach(json_object_get(res, "pools"), i, p) {
		json_t *size = json_object_get(p, "size"), *refill = json_object_get(p, "refill_ms");
		char sz[32], rf[32] = "-";

		snprintf(sz, sizeof(sz), "%lld..%lld", num(size, "min"), num(size, "max"));
		if (refill)
			snprintf(rf, sizeof(rf), "%lld ms", num(refill, "p50"));
		printf("%-20s %-9s %-7lld %-6lld %-9lld %-10lld %-12s %s\n", json_string_value(json_object_get(p, "name")),
		       sz, num(p, "target"), num(p, "ready"), num(p, "starting"), num(p, "claimed_per_minute"), rf,
		       json_string_value(json_object_get(p, "not_filling")) ?: "");
	}
	json_decref(res);
	return 0;
}
