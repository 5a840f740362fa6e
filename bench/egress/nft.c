/* nft.c: the nftables peer of the egress benchmark.
 *
 * The private table holds one output chain that matches the instance cgroup with
 * `socket cgroupv2 level L "PATH"`, accepts the allowlist and drops the rest of
 * that cgroup's traffic; other processes pass untouched. The allowlist is either a
 * set (a lookup per packet) or a list of rules walked in order, with the
 * listener's rule last, so the rule list numbers are its worst case. Each load is
 * one nft transaction that also deletes the previous table, so no packet ever sees
 * half a policy. */
#include "bench.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

static void put_addr(FILE *f, uint32_t be)
{
	char s[INET_ADDRSTRLEN];
	struct in_addr a = { .s_addr = be };

	inet_ntop(AF_INET, &a, s, sizeof(s));
	fputs(s, f);
}

static void write_script(FILE *f, const char *table, enum nft_kind kind, size_t n,
			 const char *cg, uint32_t level)
{
	/* "add" then "delete" empties any previous table in the same transaction */
	fprintf(f, "add table inet %s\ndelete table inet %s\n", table, table);
	fprintf(f, "table inet %s {\n", table);
	if (kind != NFT_RULES) {
		fprintf(f, "\tset allow {\n\t\ttype ipv4_addr\n");
		if (kind == NFT_SET_INTERVAL)
			fprintf(f, "\t\tflags interval\n");
		fprintf(f, "\t\telements = { 127.0.0.1");
		for (size_t i = 0; i < n; i++) {
			fputs(i % 8 ? ", " : ",\n\t\t\t", f);
			put_addr(f, bench_other_addr(i));
		}
		fprintf(f, " }\n\t}\n");
	}
	fprintf(f, "\tchain out {\n\t\ttype filter hook output priority 0; policy accept;\n");
	if (kind == NFT_RULES) {
		for (size_t i = 0; i < n; i++) {
			fprintf(f, "\t\tsocket cgroupv2 level %u \"%s\" ip daddr ", level, cg);
			put_addr(f, bench_other_addr(i));
			fputs(" accept\n", f);
		}
		fprintf(f, "\t\tsocket cgroupv2 level %u \"%s\" ip daddr 127.0.0.1 accept\n",
			level, cg);
	} else {
		fprintf(f, "\t\tsocket cgroupv2 level %u \"%s\" ip daddr @allow accept\n", level, cg);
	}
	fprintf(f, "\t\tsocket cgroupv2 level %u \"%s\" drop\n\t}\n}\n", level, cg);
}

int nft_load(const char *table, enum nft_kind kind, size_t n, const char *cg_path,
	     uint32_t level, struct lerr *e)
{
	FILE *f = popen("nft -f -", "w");
	int st;

	if (!f)
		return lerr_set(e, errno, "nft: cannot run nft: %s", strerror(errno));
	write_script(f, table, kind, n, cg_path, level);
	st = pclose(f);
	if (st == -1)
		return lerr_set(e, errno, "nft: %s", strerror(errno));
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		return lerr_set(e, EIO, "nft: loading table inet %s (%zu entries) failed, status %d",
				table, n, st);
	return 0;
}

int nft_remove(const char *table)
{
	char cmd[256];

	snprintf(cmd, sizeof(cmd), "nft delete table inet %s 2>/dev/null", table);
	return system(cmd) == 0 ? 0 : -ENOENT;
}
