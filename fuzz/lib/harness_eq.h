/* harness_eq.h: whether two harness step states are the same state, for the targets that
 * build one state two ways (live decisions and their replay; the replay fast path and the
 * full parser). Stops the target, naming the first difference, when they are not. */
#ifndef LANTERN_FUZZ_HARNESS_EQ_H
#define LANTERN_FUZZ_HARNESS_EQ_H

#include "lantern/harness.h"

/* Compares everything harness_state holds: run id, input, spec, output, end, every step
 * (kind, state, attempt, retryable, its record as JSON), the loop guard's digest counts,
 * the counters and the token tally. Replayed records are parsed on the way (as
 * harness_step_record does when a step is replayed to the workload). */
void fz_harness_equal(struct harness_state *a, struct harness_state *b, const char *what);

#endif
