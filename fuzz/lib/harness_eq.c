/* harness_eq.c: fz_harness_equal (harness_eq.h). */
#include "harness_eq.h"

#include <string.h>

#include "fuzzlib.h"

/* state.c's private entry of the loop guard's table, mirrored here to read the counts
 * (keep it the same as state.c's) */
struct harness_digest {
	char *digest;
	uint32_t count;
	struct harness_digest *next;
};

static uint32_t digest_count(const struct harness_state *st, const char *dg)
{
	for (size_t i = 0; i < st->ndbuckets; i++)
		for (const struct harness_digest *d = st->dbuckets[i]; d; d = d->next)
			if (!strcmp(d->digest, dg))
				return d->count;
	return 0;
}

static void steps_of_a_in_b(struct harness_state *a, struct harness_state *b, const char *what)
{
	for (size_t i = 0; i < a->nbuckets; i++)
		for (struct harness_step *s = a->buckets[i]; s; s = s->next) {
			struct harness_step *t = harness_state_step(b, s->id);

			FZ_CHECK(t, "%s: step \"%s\" is in one state only", what, s->id);
			FZ_CHECK(!strcmp(s->kind, t->kind) && s->state == t->state &&
				 s->attempt == t->attempt && s->retryable == t->retryable &&
				 s->rec_off == t->rec_off,
				 "%s: step \"%s\": kind %s/%s, state %d/%d, attempt %u/%u, retryable %d/%d, "
				 "record at %llu/%llu", what, s->id, s->kind, t->kind, s->state, t->state,
				 s->attempt, t->attempt, s->retryable, t->retryable,
				 (unsigned long long)s->rec_off, (unsigned long long)t->rec_off);
			FZ_CHECK(!s->error == !t->error && (!s->error || !strcmp(s->error, t->error)),
				 "%s: step \"%s\": error \"%s\" vs \"%s\"", what, s->id,
				 s->error ? s->error : "(none)", t->error ? t->error : "(none)");
		}
}

static void digests_of_a_in_b(const struct harness_state *a, const struct harness_state *b,
			      const char *what)
{
	for (size_t i = 0; i < a->ndbuckets; i++)
		for (const struct harness_digest *d = a->dbuckets[i]; d; d = d->next)
			FZ_CHECK(d->count == digest_count(b, d->digest),
				 "%s: input digest \"%s\" counted %u and %u times", what, d->digest,
				 d->count, digest_count(b, d->digest));
}

void fz_harness_equal(struct harness_state *a, struct harness_state *b, const char *what)
{
	FZ_CHECK(!strcmp(a->run_id, b->run_id) && a->started_off == b->started_off &&
		 a->output_off == b->output_off && a->end == b->end,
		 "%s: run id %s/%s, input at %llu/%llu, output at %llu/%llu, ended %d/%d", what,
		 a->run_id, b->run_id, (unsigned long long)a->started_off,
		 (unsigned long long)b->started_off, (unsigned long long)a->output_off,
		 (unsigned long long)b->output_off, a->end, b->end);
	FZ_CHECK(a->nsteps == b->nsteps && a->ndigests == b->ndigests &&
		 a->steps_begun == b->steps_begun && a->steps_completed == b->steps_completed &&
		 a->resumes == b->resumes && a->records == b->records,
		 "%s: steps %zu/%zu, digests %zu/%zu, begun %llu/%llu, completed %llu/%llu, "
		 "resumes %llu/%llu, records %llu/%llu", what, a->nsteps, b->nsteps, a->ndigests,
		 b->ndigests, (unsigned long long)a->steps_begun, (unsigned long long)b->steps_begun,
		 (unsigned long long)a->steps_completed, (unsigned long long)b->steps_completed,
		 (unsigned long long)a->resumes, (unsigned long long)b->resumes,
		 (unsigned long long)a->records, (unsigned long long)b->records);
	steps_of_a_in_b(a, b, what);
	digests_of_a_in_b(a, b, what);
	FZ_CHECK(a->tally.n == b->tally.n && a->tally.total == b->tally.total,
		 "%s: tally of %zu models, %llu tokens vs %zu, %llu", what, a->tally.n,
		 (unsigned long long)a->tally.total, b->tally.n, (unsigned long long)b->tally.total);
	for (size_t i = 0; i < a->tally.n; i++)
		FZ_CHECK(!strcmp(a->tally.m[i].provider, b->tally.m[i].provider) &&
			 !strcmp(a->tally.m[i].model, b->tally.m[i].model) &&
			 !memcmp(&a->tally.m[i].t, &b->tally.m[i].t, sizeof(a->tally.m[i].t)),
			 "%s: tally entry %zu (%s/%s vs %s/%s) differs", what, i, a->tally.m[i].provider,
			 a->tally.m[i].model, b->tally.m[i].provider, b->tally.m[i].model);
}
