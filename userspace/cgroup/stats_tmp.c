/* stats_tmp.c: an instance's CPU, memory and OOM counters (placeholder until the cgroup
 * module's own reader lands). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lantern/cgroup.h"

int cgroup_inst_stats(const struct cgroup_inst *c, struct cgroup_stats *out)
{
	bool any = false;

	memset(out, 0, sizeof(*out));
	for (int i = 0; i < c->ndirs; i++) {
		static const char *const oomf[] = { "memory.events", "memory.oom_control" };
		char path[PATH_MAX + 32], *buf, *p;

		for (size_t k = 0; k < 2; k++) {
			snprintf(path, sizeof(path), "%s/%s", c->dirs[i], oomf[k]);
			if (util_read_file(path, &buf, NULL) < 0)
				continue;
			any = true;
			if ((p = strstr(buf, "oom_kill ")))
				out->oom_kills += strtoull(p + 9, NULL, 10);
			free(buf);
		}
		snprintf(path, sizeof(path), "%s/cpu.stat", c->dirs[i]);
		if (!out->cpu_seconds && util_read_file(path, &buf, NULL) == 0) {
			if ((p = strstr(buf, "usage_usec ")))
				out->cpu_seconds = (double)strtoull(p + 11, NULL, 10) / 1e6;
			free(buf);
		}
		snprintf(path, sizeof(path), "%s/cpuacct.usage", c->dirs[i]);
		if (!out->cpu_seconds && util_read_file(path, &buf, NULL) == 0) {
			out->cpu_seconds = (double)strtoull(buf, NULL, 10) / 1e9;
			free(buf);
		}
		snprintf(path, sizeof(path), "%s/memory.current", c->dirs[i]);
		if (!out->memory_bytes && util_read_file(path, &buf, NULL) == 0) {
			out->memory_bytes = strtoull(buf, NULL, 10);
			free(buf);
		}
		snprintf(path, sizeof(path), "%s/memory.usage_in_bytes", c->dirs[i]);
		if (!out->memory_bytes && util_read_file(path, &buf, NULL) == 0) {
			out->memory_bytes = strtoull(buf, NULL, 10);
			free(buf);
		}
	}
	return any ? 0 : -1;
}
