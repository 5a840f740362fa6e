/* internal.h: the run module's own structures, shared by its files: run.c (the
 * life), record.c (run.json and loading a run a previous lanternd left) and env.c (the
 * workload's environment). Nothing outside userspace/run/ includes this. */
#ifndef LANTERN_RUN_INTERNAL_H
#define LANTERN_RUN_INTERNAL_H

#include "lantern/run.h"
#include "lantern/runtime.h"

#define RUNS_MAX_SUBS 12

struct run {
	struct runs *t;
	char id[32];                /* r-<12 hex> */
	char instance_id[32];       /* i-<12 hex>; a resumed run gets a new one */
	char dir[PATH_MAX];         /* STATE/runs/<id> */
	char *file;                 /* the spec's name, as submitted */
	const char *yaml;           /* the spec as submitted, during runs_start only: run_start
				     * writes it to spec.yaml once the workload runs */
	size_t yaml_len;
	char tenant[64];
	char ref[64];               /* the control plane's id of the run, or "" */
	int64_t epoch;              /* its lease's fencing epoch */
	bool fenced;                /* its lease was lost: nobody reports its end */
	struct spec *spec;
	struct cgroup_inst cg;
	bool cg_made;
	enum run_status status;
	char reason[512];
	int exit_code;
	uint64_t oom_kills;
	int64_t created, finished;  /* unix seconds */
	uint64_t timeout_timer, kill_timer;
	enum run_status ending;     /* set by timeout, kill or run_end before the end */
	bool ending_set;
	bool exited;                /* run_exited was called for the current instance */
	const struct runtime_ops *rt_ops;
	void *rt;
	void *rt_state;
	bool own_netns;
	uint32_t dns_ip4;
	/* a pooled sandbox taken (run.h): the claim until it is settled, then what the
	 * record keeps of it */
	struct run_claim claim;
	bool claimed, claim_open;
	char pool[64];
	int64_t pool_waited_ms;
	uint64_t stage_us[3];       /* a claim's admission, preparation, exec (µs) */
	char pool_fallback[256];    /* a cold start after a failed claim: why */
	struct run_prefetch *prefetch; /* the submit's, during its hooks only */
	struct run_prefetch *resume_pf; /* read for its resume after a restart, until done */
	void *slot[RUNS_MAX_SUBS];
	struct run *next;
};

struct run_sub {
	const struct run_hooks *h;
	void *arg;
};

struct runs {
	struct runs_opts o;
	char runs_dir[PATH_MAX];
	struct run_sub subs[RUNS_MAX_SUBS];
	int nsubs;
	struct run *runs;           /* newest first */
	const struct run_prefetcher *pre; /* or NULL */
	void *pre_arg;
	bool crash_before_record;   /* test only: LANTERN_TEST_CRASH_BEFORE_RECORD=1 */
};

/* Every subscriber's hook fn, in registration order. */
#define RUN_HOOKS(t, fn, ...)                                                   \
	do {                                                                    \
		for (int hi_ = 0; hi_ < (t)->nsubs; hi_++)                      \
			if ((t)->subs[hi_].h->fn)                               \
				(t)->subs[hi_].h->fn((t)->subs[hi_].arg, __VA_ARGS__); \
	} while (0)

/* record.c */
void run_record_save(struct run *r);
/* A run of STATE/runs/<id> as its record says; NULL if it has none. */
struct run *run_record_load(struct runs *t, const char *id);

/* run.c */
struct run *run_alloc(struct runs *t);
void run_free(struct run *r);

/* env.c */
struct run_env *run_env_new(const struct run *r);
void run_env_free(struct run_env *env);

#endif
