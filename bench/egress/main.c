/* main.c: the egress benchmark. connect() latency on loopback for a process in an
 * instance cgroup under no policy, under lantern's BPF allowlist, and under
 * nftables holding the same allowlist for the same cgroup, side by side in one run.
 *
 * Usage: egress [-r ROUNDS] [-n CONNECTS] [-w WARMUP] [-s SETTLE_MS]
 *
 * Every configuration is measured once per round and the rounds interleave them, so
 * slow drift of the machine spreads over all of them; the table shows the median of
 * the round medians (and of the round p99s). Fairness: while nftables is measured,
 * lantern's programs are detached and unpinned (the cgroup has no BPF program at
 * all), and while lantern is measured no nft table exists; the baseline has
 * neither. After each policy change the run waits SETTLE_MS before measuring, so
 * the kernel's deferred freeing of the previous policy (RCU callbacks, nf_tables'
 * cleanup work) is not timed as part of the next one. Everything the run creates (cgroups, pins, the nft table, children) is
 * removed at the end, also on failure and on SIGINT/SIGTERM/SIGHUP. */
#include "bench.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

volatile sig_atomic_t bench_stop;

enum cfg_kind { CFG_NONE, CFG_LANTERN, CFG_NFT };

struct cfg {
	enum cfg_kind kind;
	enum nft_kind nft;
	size_t n;           /* allowlist entries besides the listener */
	const char *name;
};

static const size_t sizes[] = { 0, 100, 10000 };
#define NSIZES ARRAY_SIZE(sizes)

/* Index 0 is the baseline; then NSIZES per policy kind. */
static const struct {
	enum cfg_kind kind;
	enum nft_kind nft;
	const char *name;
} kinds[] = {
	{ CFG_LANTERN, 0, "lantern (BPF, LPM trie)" },
	{ CFG_NFT, NFT_SET_HASH, "nft set (hash)" },
	{ CFG_NFT, NFT_SET_INTERVAL, "nft set (interval)" },
	{ CFG_NFT, NFT_RULES, "nft rule list" },
};
#define NCFG (1 + ARRAY_SIZE(kinds) * NSIZES)

static struct cfg cfgs[NCFG];

/* What cleanup must undo; file-scope so every exit path reaches it. */
static struct lantern_side lantern;
static struct listener lsn = { .fd = -1 };
static struct measurer meas = { .req = -1, .resp = -1 };
static char nft_table[64];
static int stats_old = -1; /* kernel.bpf_stats_enabled before the run; -1 = untouched */

static void on_signal(int sig)
{
	bench_stop = sig;
}

static void cleanup(void)
{
	measurer_stop(&meas);
	listener_stop(&lsn);
	if (nft_table[0])
		nft_remove(nft_table);
	lantern_teardown(&lantern);
	if (stats_old >= 0)
		lantern_bpf_stats(stats_old, NULL);
}

static void build_cfgs(void)
{
	size_t c = 0;

	cfgs[c++] = (struct cfg){ .kind = CFG_NONE, .name = "none (baseline)" };
	for (size_t k = 0; k < ARRAY_SIZE(kinds); k++)
		for (size_t s = 0; s < NSIZES; s++)
			cfgs[c++] = (struct cfg){ .kind = kinds[k].kind, .nft = kinds[k].nft,
						  .n = sizes[s], .name = kinds[k].name };
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static uint64_t median_of(const uint64_t *v, size_t n)
{
	uint64_t tmp[64];

	memcpy(tmp, v, n * sizeof(*v));
	qsort(tmp, n, sizeof(*tmp), cmp_u64);
	return n % 2 ? tmp[n / 2] : (tmp[n / 2 - 1] + tmp[n / 2]) / 2;
}

struct opts {
	uint32_t rounds, connects, warmup, settle_ms;
};

static uint64_t med[NCFG][64], p99[NCFG][64];
/* lantern's connect4 program: in-kernel ns per run, per configuration and round */
static uint64_t prog_ns[NCFG][64];

/* Measures configuration c in round r; the policy is already in place. */
static int measure(size_t c, size_t r, const struct opts *o, struct lerr *e)
{
	struct batch b;
	bool enforced = cfgs[c].kind != CFG_NONE;
	int err;

	usleep(o->settle_ms * 1000u);
	err = measurer_run(&meas, lsn.port, o->connects, o->warmup, &b);

	if (err)
		return lerr_set(e, err, "bench: measuring child: %s", strerror(-err));
	if (b.err)
		return lerr_set(e, b.err, "bench: %s with %zu entries: connect to the allowed "
				"listener 127.0.0.1:%u failed: %s", cfgs[c].name, cfgs[c].n,
				lsn.port, strerror(b.err));
	/* a policy that lets an unlisted destination through would time nothing */
	if (enforced == (b.probe == ECONNREFUSED))
		return lerr_set(e, EPROTO, "bench: %s with %zu entries: probe to 127.0.0.2 "
				"got \"%s\", the policy is %s", cfgs[c].name, cfgs[c].n,
				strerror(b.probe), enforced ? "not enforced" : "unexpectedly there");
	med[c][r] = b.median;
	p99[c][r] = b.p99;
	return 0;
}

/* The program's own run time, from a separate batch with kernel.bpf_stats_enabled
 * on: stats add two clock reads per run, so they stay off while latency is timed. */
static int prog_time(size_t c, size_t r, const struct opts *o, struct lerr *e)
{
	uint32_t n = o->connects < 5000 ? o->connects : 5000;
	uint64_t ns0, runs0, ns1, runs1;
	struct batch b;
	int err;

	err = lantern_bpf_stats(1, stats_old < 0 ? &stats_old : NULL);
	if (err)
		return lerr_set(e, err, "bench: enabling kernel.bpf_stats_enabled: %s", strerror(-err));
	err = lantern_prog_stats(&lantern, &ns0, &runs0, e);
	if (!err) {
		err = measurer_run(&meas, lsn.port, n, 0, &b);
		if (err)
			lerr_set(e, err, "bench: measuring child: %s", strerror(-err));
	}
	if (!err)
		err = lantern_prog_stats(&lantern, &ns1, &runs1, e);
	lantern_bpf_stats(0, NULL);
	if (!err && runs1 <= runs0)
		err = lerr_set(e, EPROTO, "bench: connect4 program did not run with %zu entries",
			       cfgs[c].n);
	if (!err)
		prog_ns[c][r] = (ns1 - ns0) / (runs1 - runs0);
	return err;
}

static int lantern_block(size_t r, const struct opts *o, struct lerr *e)
{
	int err = lantern_attach(&lantern, e);

	for (size_t c = 0; !err && c < NCFG; c++) {
		if (cfgs[c].kind != CFG_LANTERN)
			continue;
		err = lantern_policy(&lantern, cfgs[c].n, e);
		if (!err)
			err = measure(c, r, o, e);
		if (!err)
			err = prog_time(c, r, o, e);
	}
	if (err)
		return err;
	return lantern_detach(&lantern, e);
}

static int other_block(size_t r, const struct opts *o, struct lerr *e)
{
	int err = 0;

	for (size_t c = 0; !err && c < NCFG; c++) {
		if (cfgs[c].kind == CFG_LANTERN)
			continue;
		if (cfgs[c].kind == CFG_NFT)
			err = nft_load(nft_table, cfgs[c].nft, cfgs[c].n, lantern_nft_path(&lantern),
				       lantern.node.instance_level, e);
		else
			nft_remove(nft_table);
		if (!err)
			err = measure(c, r, o, e);
	}
	nft_remove(nft_table);
	return err;
}

/* Median over rounds of (configuration - baseline) in the same round: pairing
 * within a round cancels drift that moves a whole round. */
static long added_of(uint64_t (*v)[64], size_t c, uint32_t rounds)
{
	uint64_t shifted[64];

	/* offset keeps negative differences representable in the unsigned median */
	for (size_t r = 0; r < rounds; r++)
		shifted[r] = v[c][r] + (1ull << 40) - v[0][r];
	return (long)median_of(shifted, rounds) - (long)(1ull << 40);
}

static void print_table(const struct opts *o)
{
	uint64_t base = median_of(med[0], o->rounds);

	printf("\negress: connect() on loopback from one process in cgroup v2 \"%s\"\n",
	       lantern_nft_path(&lantern));
	printf("%u rounds x %u connects per configuration (+%u warm-up), configurations "
	       "interleaved;\nmedian, p99: medians over rounds of each round's median and p99;\n"
	       "spread: max - min of the round medians; +median, +p99: medians over rounds of "
	       "(configuration - baseline of the same round);\nratio: median / baseline median; "
	       "entries: allowlist size (+1 = the listener). All in ns.\n\n",
	       o->rounds, o->connects, o->warmup);
	printf("%-24s %9s %9s %9s %8s %9s %9s %6s\n", "policy", "entries", "median", "p99",
	       "spread", "+median", "+p99", "ratio");
	for (size_t c = 0; c < NCFG; c++) {
		uint64_t m = median_of(med[c], o->rounds), q = median_of(p99[c], o->rounds);
		uint64_t lo = med[c][0], hi = med[c][0];
		char ent[32];

		for (size_t r = 1; r < o->rounds; r++) {
			lo = med[c][r] < lo ? med[c][r] : lo;
			hi = med[c][r] > hi ? med[c][r] : hi;
		}
		if (cfgs[c].kind == CFG_NONE) {
			printf("%-24s %9s %9lu %9lu %8lu %9s %9s %6.2f\n", cfgs[c].name, "-",
			       (unsigned long)m, (unsigned long)q, (unsigned long)(hi - lo), "-", "-",
			       1.0);
			continue;
		}
		snprintf(ent, sizeof(ent), "%zu+1", cfgs[c].n);
		printf("%-24s %9s %9lu %9lu %8lu %+9ld %+9ld %6.2f\n", cfgs[c].name, ent,
		       (unsigned long)m, (unsigned long)q, (unsigned long)(hi - lo),
		       added_of(med, c, o->rounds), added_of(p99, c, o->rounds),
		       (double)m / (double)base);
	}
}

static void print_prog(const struct opts *o)
{
	printf("\nlantern's connect4 program alone: in-kernel time per run, from a separate "
	       "batch of\n%u connects per round with kernel.bpf_stats_enabled on (median over "
	       "rounds, ns):\n", o->connects < 5000 ? o->connects : 5000);
	for (size_t c = 0; c < NCFG; c++)
		if (cfgs[c].kind == CFG_LANTERN)
			printf("  %zu+1 entries: %lu\n", cfgs[c].n,
			       (unsigned long)median_of(prog_ns[c], o->rounds));
}

/* The two targets, read off the largest allowlist. */
static void print_targets(const struct opts *o)
{
	long added[ARRAY_SIZE(kinds)];

	for (size_t k = 0; k < ARRAY_SIZE(kinds); k++)
		added[k] = added_of(med, 1 + k * NSIZES + (NSIZES - 1), o->rounds);
	printf("\ntarget: lantern adds < 1000 ns per connect at %zu entries: %s (%+ld ns)\n",
	       sizes[NSIZES - 1], added[0] < 1000 ? "met" : "NOT met", added[0]);
	printf("target: lantern no slower than nft with a set at %zu entries: %s "
	       "(lantern %+ld ns, nft hash set %+ld ns, nft interval set %+ld ns)\n",
	       sizes[NSIZES - 1], added[0] <= added[1] && added[0] <= added[2] ? "met" : "NOT met",
	       added[0], added[1], added[2]);
}

static int parse_u32(const char *s, uint32_t lo, uint32_t hi, uint32_t *out)
{
	char *end;
	unsigned long v = strtoul(s, &end, 10);

	if (!*s || *end || v < lo || v > hi)
		return -EINVAL;
	*out = (uint32_t)v;
	return 0;
}

int main(int argc, char **argv)
{
	struct opts o = { .rounds = 5, .connects = 20000, .warmup = 1000, .settle_ms = 300 };
	struct sigaction sa = { .sa_handler = on_signal };
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	struct lerr e = { "" };
	int opt, err;

	log_set_prog("bench/egress");
	while ((opt = getopt(argc, argv, "r:n:w:s:")) != -1) {
		int bad = -EINVAL;

		if (opt == 'r')
			bad = parse_u32(optarg, 1, 64, &o.rounds);
		else if (opt == 'n')
			bad = parse_u32(optarg, 100, 10000000, &o.connects);
		else if (opt == 'w')
			bad = parse_u32(optarg, 0, 10000000, &o.warmup);
		else if (opt == 's')
			bad = parse_u32(optarg, 0, 60000, &o.settle_ms);
		if (bad) {
			fprintf(stderr, "usage: %s [-r ROUNDS 1..64] [-n CONNECTS >= 100] "
				"[-w WARMUP] [-s SETTLE_MS]\n", argv[0]);
			return 2;
		}
	}
	if (geteuid() != 0) {
		log_error("bench: needs root (cgroups, BPF, nftables)");
		return 1;
	}
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	build_cfgs();
	snprintf(nft_table, sizeof(nft_table), "lantern_bench_%d", (int)getpid());

	err = lantern_setup(&lantern, &e);
	if (!err)
		err = listener_start(&lsn, ncpu > 1 ? 0 : -1);
	if (err && !e.msg[0])
		lerr_set(&e, err, "bench: loopback listener: %s", strerror(-err));
	if (!err) {
		err = measurer_start(&meas, ncpu > 1 ? (int)ncpu - 1 : -1);
		if (err)
			lerr_set(&e, err, "bench: measuring child: %s", strerror(-err));
	}
	if (!err)
		err = cgroup_inst_attach(&lantern.inst, meas.pid, &e);
	if (!err)
		fprintf(stderr, "bench/egress: listener 127.0.0.1:%u, cgroup %s, pins %s, "
			"nft table inet %s\n", lsn.port, lantern.inst.dirs[0], lantern.pin_root,
			nft_table);

	/* even rounds measure lantern first, odd rounds nftables and the baseline first */
	for (size_t r = 0; !err && r < o.rounds; r++) {
		fprintf(stderr, "bench/egress: round %zu of %u\n", r + 1, o.rounds);
		if (r % 2 == 0) {
			err = lantern_block(r, &o, &e);
			if (!err)
				err = other_block(r, &o, &e);
		} else {
			err = other_block(r, &o, &e);
			if (!err)
				err = lantern_block(r, &o, &e);
		}
		if (!err && bench_stop)
			err = -EINTR;
	}
	if (!err) {
		print_table(&o);
		print_prog(&o);
		print_targets(&o);
	}
	cleanup();
	if (bench_stop) {
		log_error("bench: interrupted by signal %d; cleaned up", (int)bench_stop);
		return 130;
	}
	if (err) {
		log_error("%s", e.msg[0] ? e.msg : strerror(-err));
		return 1;
	}
	return 0;
}
