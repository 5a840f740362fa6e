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

static void json_same(json_t *x, json_t *y, const char *what, const char *field)
{
	char *xs, *ys;

	if ((!x && !y) || json_equal(x, y))
		return;
	xs = x ? json_dumps(x, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY) : NULL;
	ys = y ? json_dumps(y, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY) : NULL;
	fz_fail(__FILE__, __LINE__, "json_equal", "%s: %s differs: %s vs %s", what, field,
		xs ? xs : "(none)", ys ? ys : "(none)");
}

static void steps_of_a_in_b(struct harness_state *a, struct harness_state *b, const char *what)
{
	for (size_t i = 0; i < a->nbuckets; i++)
		for (struct harness_step *s = a->buckets[i]; s; s = s->next) {
			struct harness_step *t = harness_state_step(b, s->id);

			FZ_CHECK(t, "%s: step \"%s\" is in one state only", what, s->id);
			FZ_CHECK(!strcmp(s->kind, t->kind) && s->state == t->state &&
				 s->attempt == t->attempt && s->retryable == t->retryable,
				 "%s: step \"%s\": kind %s/%s, state %d/%d, attempt %u/%u, retryable %d/%d",
				 what, s->id, s->kind, t->kind, s->state, t->state, s->attempt,
				 t->attempt, s->retryable, t->retryable);
			json_same(harness_step_record(s), harness_step_record(t), what, s->id);
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
	FZ_CHECK(!strcmp(a->run_id, b->run_id), "%s: run id %s vs %s", what, a->run_id, b->run_id);
	json_same(a->input, b->input, what, "input");
	json_same(a->spec, b->spec, what, "spec");
	json_same(a->output, b->output, what, "output");
	json_same(a->end, b->end, what, "end");
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
