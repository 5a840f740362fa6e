/* harness_eq.h: whether two harness step states are the same state, for the targets that
 * build one state two ways (a live run's decisions and their replay from the journal).
 * Stops the target, naming the first difference, when they are not. */
#ifndef LANTERN_FUZZ_HARNESS_EQ_H
#define LANTERN_FUZZ_HARNESS_EQ_H

#include "lantern/harness.h"

/* Compares everything harness_state holds: run id, where its input and output records
 * are, whether it ended, every step (kind, state, attempt, retryable, error, where its
 * record is), the loop guard's digest counts, the counters and the token tally. */
void fz_harness_equal(struct harness_state *a, struct harness_state *b, const char *what);

#endif
