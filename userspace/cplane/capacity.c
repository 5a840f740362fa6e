/* capacity.c: what this node can still take, reported to the control plane (Register,
 * ReportMetrics, every lease renewal) so it places a run only where its limits fit,
 * and checked again when an assignment arrives (the control plane's view may be a
 * renewal old). The node's totals are its flags (--allocatable-cpu, -memory,
 * -scratch), else measured: online CPUs, MemTotal, the state directory's free space.
 * What live runs hold is the sum of their spec.limits (a run without a limit holds
 * none of that resource). */
#include <stdio.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "cplane_internal.h"
#include "lantern/journal.h"
#include "lantern/util.h"

static int64_t mem_total(void)
{
	unsigned long long kb = 0;
	char line[256];
	FILE *f = fopen("/proc/meminfo", "re");

	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "MemTotal: %llu kB", &kb) == 1)
			break;
	if (f)
		fclose(f);
	return kb ? (int64_t)kb * 1024 : -1;
}

static int64_t scratch_free(const struct cplane *c)
{
	struct statvfs sv;

	if (c->total_scratch >= 0)
		return c->total_scratch;
	return statvfs(c->dir, &sv) == 0 ? (int64_t)sv.f_bavail * (int64_t)sv.f_frsize : -1;
}

void capacity_init(struct cplane *c, const struct cplane_opts *o)
{
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);

	c->total_cpu = o->alloc_cpu_millis ? o->alloc_cpu_millis : cpus > 0 ? cpus * 1000 : -1;
	c->total_memory = o->alloc_memory_bytes ? o->alloc_memory_bytes : mem_total();
	/* measured free space already excludes what runs wrote: only a configured total has
	 * the runs' scratch limits taken off */
	c->total_scratch = o->alloc_scratch_bytes ? o->alloc_scratch_bytes : -1;
}

void capacity_now(struct cplane *c, struct tunnel_capacity *cap)
{
	int64_t cpu = 0, mem = 0, scratch = 0;
	int live = 0;

	for (struct run *r = runs_first(c->runs); r; r = run_next(r)) {
		const struct spec *s = run_spec(r);

		if (run_status_final(run_status(r)))
			continue;
		live++;
		if (!s)
			continue;
		cpu += (int64_t)s->limits.vcpu_milli;
		mem += (int64_t)s->limits.memory_bytes;
		scratch += (int64_t)s->limits.scratch_bytes;
	}
	cap->cpu_millis = c->total_cpu < 0 ? -1 : c->total_cpu - cpu;
	cap->memory_bytes = c->total_memory < 0 ? -1 : c->total_memory - mem;
	cap->scratch_bytes = scratch_free(c);
	if (cap->scratch_bytes >= 0 && c->total_scratch >= 0)
		cap->scratch_bytes -= scratch;
	cap->free_slots = c->max_runs - live;
	/* a node that cannot replicate a journal now takes no run (durable refuses it) */
	if (c->store) {
		char why[256];

		if (journal_store_health(c->store, why, sizeof(why)) < 0)
			cap->free_slots = 0;
	}
	if (cap->cpu_millis < -1)
		cap->cpu_millis = 0;
	if (cap->memory_bytes < -1)
		cap->memory_bytes = 0;
	if (cap->scratch_bytes < -1)
		cap->scratch_bytes = 0;
	if (cap->free_slots < 0)
		cap->free_slots = 0;
}

static bool fits(int64_t have, uint64_t need)
{
	return have < 0 || !need || (uint64_t)have >= need;
}

bool capacity_fits(struct cplane *c, const struct spec_limits *l, char *why, size_t len)
{
	struct tunnel_capacity cap;

	capacity_now(c, &cap);
	if (!fits(cap.cpu_millis, l->vcpu_milli))
		snprintf(why, len, "no room: the run needs %llum of CPU, %lldm is free",
			 (unsigned long long)l->vcpu_milli, (long long)cap.cpu_millis);
	else if (!fits(cap.memory_bytes, l->memory_bytes))
		snprintf(why, len, "no room: the run needs %llu bytes of memory, %lld are free",
			 (unsigned long long)l->memory_bytes, (long long)cap.memory_bytes);
	else if (!fits(cap.scratch_bytes, l->scratch_bytes))
		snprintf(why, len, "no room: the run needs %llu bytes of scratch, %lld are free",
			 (unsigned long long)l->scratch_bytes, (long long)cap.scratch_bytes);
	else
		return true;
	return false;
}
