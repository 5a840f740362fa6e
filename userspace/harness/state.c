/* state.c: a run's steps as the journal says they are, and the harness decisions on
 * them. The state changes only in harness_state_apply, from a journal record, so a
 * replay after a crash and the live run reach the same state by the same code; records
 * are read by record.c's scanner, which picks the few fields the state needs and skips
 * the rest (a step's result, the run's input and output stay in the journal, at the
 * offset the state keeps).
 *
 * Steps are kept in a hash table by step_id; input digests in a second one, counting
 * how often each proceeded (the loop guard). */
#include <errno.h>
#include <stdarg.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "record.h"
#include "lantern/harness.h"
#include "lantern/journal.h"

struct harness_digest {
	char *digest;
	uint32_t count;
	struct harness_digest *next;
};

static uint64_t hash_str(const char *s)
{
	uint64_t h = 1469598103934665603ull;

	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ull;
	return h;
}

void harness_state_init(struct harness_state *st)
{
	memset(st, 0, sizeof(*st));
}

void harness_state_free(struct harness_state *st)
{
	for (size_t i = 0; i < st->nbuckets; i++)
		for (struct harness_step *s = st->buckets[i], *n; s; s = n) {
			n = s->next;
			free(s->error);
			free(s);
		}
	for (size_t i = 0; i < st->ndbuckets; i++)
		for (struct harness_digest *d = st->dbuckets[i], *n; d; d = n) {
			n = d->next;
			free(d->digest);
			free(d);
		}
	free(st->buckets);
	free(st->dbuckets);
	memset(st, 0, sizeof(*st));
}

struct harness_step *harness_state_step(const struct harness_state *st, const char *id)
{
	if (!st->nbuckets)
		return NULL;
	for (struct harness_step *s = st->buckets[hash_str(id) & (st->nbuckets - 1)]; s; s = s->next)
		if (!strcmp(s->id, id))
			return s;
	return NULL;
}

struct harness_step *harness_state_in_flight(const struct harness_state *st)
{
	for (size_t i = 0; i < st->nbuckets; i++)
		for (struct harness_step *s = st->buckets[i]; s; s = s->next)
			if (s->state == HSTEP_STARTED)
				return s;
	return NULL;
}

/* Doubles a table of chained entries whose first field after the key is `next`. */
static int grow_steps(struct harness_state *st)
{
	size_t n = st->nbuckets ? st->nbuckets * 2 : 64;
	struct harness_step **b = calloc(n, sizeof(*b));

	if (!b)
		return -ENOMEM;
	for (size_t i = 0; i < st->nbuckets; i++)
		for (struct harness_step *s = st->buckets[i], *nx; s; s = nx) {
			size_t h = hash_str(s->id) & (n - 1);

			nx = s->next;
			s->next = b[h];
			b[h] = s;
		}
	free(st->buckets);
	st->buckets = b;
	st->nbuckets = n;
	return 0;
}

/* A step and its id in one allocation (a replay adds one per step). */
static struct harness_step *step_add(struct harness_state *st, const char *id)
{
	size_t n = strlen(id) + 1, h;
	struct harness_step *s;

	if (st->nsteps + 1 > st->nbuckets && grow_steps(st) < 0)
		return NULL;
	if (!(s = calloc(1, sizeof(*s) + n)))
		return NULL;
	s->id = memcpy(s + 1, id, n);
	h = hash_str(id) & (st->nbuckets - 1);
	s->next = st->buckets[h];
	st->buckets[h] = s;
	st->nsteps++;
	return s;
}

static struct harness_digest *digest_find(const struct harness_state *st, const char *dg)
{
	if (!st->ndbuckets)
		return NULL;
	for (struct harness_digest *d = st->dbuckets[hash_str(dg) & (st->ndbuckets - 1)]; d; d = d->next)
		if (!strcmp(d->digest, dg))
			return d;
	return NULL;
}

static int digest_bump(struct harness_state *st, const char *dg)
{
	struct harness_digest *d = digest_find(st, dg);
	size_t h;

	if (d) {
		d->count++;
		return 0;
	}
	if (st->ndigests + 1 > st->ndbuckets) {
		size_t n = st->ndbuckets ? st->ndbuckets * 2 : 64;
		struct harness_digest **b = calloc(n, sizeof(*b));

		if (!b)
			return -ENOMEM;
		for (size_t i = 0; i < st->ndbuckets; i++)
			for (struct harness_digest *x = st->dbuckets[i], *nx; x; x = nx) {
				size_t h = hash_str(x->digest) & (n - 1);

				nx = x->next;
				x->next = b[h];
				b[h] = x;
			}
		free(st->dbuckets);
		st->dbuckets = b;
		st->ndbuckets = n;
	}
	d = calloc(1, sizeof(*d));
	if (!d || !(d->digest = strdup(dg))) {
		free(d);
		return -ENOMEM;
	}
	d->count = 1;
	h = hash_str(dg) & (st->ndbuckets - 1);
	d->next = st->dbuckets[h];
	st->dbuckets[h] = d;
	st->ndigests++;
	return 0;
}

/* s: the step id names, if the state has it already. */
static int apply_started(struct harness_state *st, struct harness_step *s, const char *id,
			 const char *kind, uint32_t attempt, const char *dg, bool reissued,
			 struct lerr *e)
{
	size_t kn = strnlen(kind, sizeof(s->kind) - 1);

	if (!s) {
		if (!(s = step_add(st, id)))
			return lerr_set(e, ENOMEM, "out of memory");
		st->steps_begun++;
	} else if (s->state == HSTEP_COMPLETED) {
		return lerr_set(e, EBADMSG, "step \"%s\" started again after it completed", id);
	}
	memcpy(s->kind, kind, kn);
	s->kind[kn] = '\0';
	s->state = HSTEP_STARTED;
	s->attempt = attempt;
	if (dg && !reissued && digest_bump(st, dg) < 0)
		return lerr_set(e, ENOMEM, "out of memory");
	return 0;
}

static int apply_completed(struct harness_state *st, struct harness_step *s, const char *id,
			   uint32_t attempt, struct lerr *e)
{
	if (!s || s->state != HSTEP_STARTED || s->attempt != attempt)
		return lerr_set(e, EBADMSG, "step_completed for step \"%s\" attempt %u, which is not "
				"in flight", id ? id : "?", attempt);
	s->state = HSTEP_COMPLETED;
	st->steps_completed++;
	return 0;
}

/* The fields of a record the state reads. Its strings are only read when set (or
 * emptied by rec_init): a replay starts one per record, and clearing all of it would
 * cost more than scanning a short record. */
struct rec {
	char step_id[HARNESS_MAX_STEP_ID + 1], kind[8], digest[257], run_id[64];
	char provider[64], model[96], error[257];
	bool have_id, have_digest, reissued, retryable, have_usage;
	uint64_t attempt;
	struct meter_tokens tokens;
};

static bool rec_usage(void *arg, const char *k, size_t kn, const char *v, const char *ve)
{
	struct rec *r = arg;

	if (record_key_is(k, kn, "input_tokens"))
		return record_uint(v, ve, &r->tokens.input);
	if (record_key_is(k, kn, "output_tokens"))
		return record_uint(v, ve, &r->tokens.output);
	if (record_key_is(k, kn, "cache_read_tokens"))
		return record_uint(v, ve, &r->tokens.cache_read);
	if (record_key_is(k, kn, "cache_creation_tokens"))
		return record_uint(v, ve, &r->tokens.cache_creation);
	if (record_key_is(k, kn, "reasoning_tokens"))
		return record_uint(v, ve, &r->tokens.reasoning);
	if (record_key_is(k, kn, "provider"))
		return record_string(v, ve, r->provider, sizeof(r->provider), true);
	if (record_key_is(k, kn, "model"))
		return record_string(v, ve, r->model, sizeof(r->model), true);
	return true;
}

static bool rec_member(void *arg, const char *k, size_t kn, const char *v, const char *ve)
{
	struct rec *r = arg;

	if (record_key_is(k, kn, "step_id"))
		return (r->have_id = record_string(v, ve, r->step_id, sizeof(r->step_id), false));
	if (record_key_is(k, kn, "kind"))
		return record_string(v, ve, r->kind, sizeof(r->kind), false);
	if (record_key_is(k, kn, "input_digest"))
		return (r->have_digest = record_string(v, ve, r->digest, sizeof(r->digest), false));
	if (record_key_is(k, kn, "run_id"))
		return record_string(v, ve, r->run_id, sizeof(r->run_id), false);
	if (record_key_is(k, kn, "error"))
		return record_string(v, ve, r->error, sizeof(r->error), true);
	if (record_key_is(k, kn, "attempt"))
		return record_uint(v, ve, &r->attempt) && r->attempt <= UINT32_MAX;
	if (record_key_is(k, kn, "reissued"))
		return record_bool(v, ve, &r->reissued);
	if (record_key_is(k, kn, "retryable"))
		return record_bool(v, ve, &r->retryable);
	if (record_key_is(k, kn, "usage"))
		return (r->have_usage = record_scan(v, ve, rec_usage, r));
	return true;
}

static void rec_init(struct rec *r)
{
	r->step_id[0] = r->digest[0] = r->run_id[0] = r->provider[0] = r->model[0] = r->error[0] = '\0';
	memcpy(r->kind, "other", sizeof("other"));
	r->have_id = r->have_digest = r->reissued = r->retryable = r->have_usage = false;
	r->attempt = 0;
	memset(&r->tokens, 0, sizeof(r->tokens));
}

int harness_state_apply(struct harness_state *st, unsigned type, const char *payload, size_t len,
			uint64_t offset, struct lerr *e)
{
	struct harness_step *s;
	struct rec r;
	int err;

	rec_init(&r);
	if (!record_scan(payload, payload + len, rec_member, &r))
		return lerr_set(e, EBADMSG, "record %" PRIu64 " (%s) is not a record lantern writes",
				st->records + 1, journal_type_name(type));
	if ((type == JOURNAL_STEP_STARTED || type == JOURNAL_STEP_COMPLETED || type == JOURNAL_STEP_FAILED) &&
	    !r.have_id)
		return lerr_set(e, EBADMSG, "%s record %" PRIu64 " has no step_id", journal_type_name(type),
				st->records + 1);
	st->records++;
	s = r.have_id ? harness_state_step(st, r.step_id) : NULL;
	switch (type) {
	case JOURNAL_RUN_STARTED:
		snprintf(st->run_id, sizeof(st->run_id), "%s", r.run_id);
		st->started_off = offset;
		return 0;
	case JOURNAL_STEP_STARTED:
		return apply_started(st, s, r.step_id, r.kind, (uint32_t)r.attempt,
				     r.have_digest ? r.digest : NULL, r.reissued, e);
	case JOURNAL_STEP_COMPLETED:
		if ((err = apply_completed(st, s, r.step_id, (uint32_t)r.attempt, e)) < 0)
			return err;
		if (r.have_usage)
			meter_tally_add(&st->tally, r.provider, r.model, &r.tokens);
		s->rec_off = offset;
		return 0;
	case JOURNAL_STEP_FAILED:
		if (!s || s->state != HSTEP_STARTED || s->attempt != r.attempt)
			return lerr_set(e, EBADMSG, "step_failed for step \"%s\" attempt %u, which is not "
					"in flight", r.step_id, (unsigned)r.attempt);
		free(s->error);
		s->error = strdup(r.error);
		s->state = HSTEP_FAILED;
		s->retryable = r.retryable;
		s->rec_off = offset;
		return 0;
	case JOURNAL_OUTPUT_SET:
		st->output_off = offset;
		return 0;
	case JOURNAL_RUN_RESUMED:
		st->resumes++;
		return 0;
	case JOURNAL_RUN_COMPLETED:
		st->end = true;
		return 0;
	case JOURNAL_RECEIPT:
		return 0;
	default:
		return lerr_set(e, EBADMSG, "unknown record type %u", type);
	}
}

void harness_idempotency_key(const char *run_id, const char *step_id, uint32_t attempt,
			     char out[HARNESS_KEY_LEN + 1])
{
	crypto_hash_sha256_state h;
	unsigned char d[crypto_hash_sha256_BYTES];
	char num[16];

	crypto_hash_sha256_init(&h);
	crypto_hash_sha256_update(&h, (const unsigned char *)"lantern-idempotency-v1\n", 23);
	crypto_hash_sha256_update(&h, (const unsigned char *)run_id, strlen(run_id));
	crypto_hash_sha256_update(&h, (const unsigned char *)"\n", 1);
	crypto_hash_sha256_update(&h, (const unsigned char *)step_id, strlen(step_id));
	snprintf(num, sizeof(num), "\n%u", attempt);
	crypto_hash_sha256_update(&h, (const unsigned char *)num, strlen(num));
	crypto_hash_sha256_final(&h, d);
	sodium_bin2hex(out, HARNESS_KEY_LEN + 1, d, sizeof(d));
}

static void decide(struct harness_decision *o, enum harness_verdict v, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void decide(struct harness_decision *o, enum harness_verdict v, const char *fmt, ...)
{
	va_list ap;

	o->v = v;
	va_start(ap, fmt);
	vsnprintf(o->reason, sizeof(o->reason), fmt, ap);
	va_end(ap);
}

static bool budget_before(const struct harness_state *st, const struct harness_limits *lim,
			  bool new_step, struct harness_decision *o)
{
	if (new_step && lim->max_steps && st->steps_begun >= lim->max_steps) {
		decide(o, HV_BUDGET, "limits.max_steps of %" PRIu64 " reached", lim->max_steps);
		return true;
	}
	return false;
}

/* The decision's record text; out of memory is a 500 the caller cannot tell from a
 * refusal, so it is a conflict with the reason. */
static void take_record(struct harness_decision *o, struct json_text *t)
{
	if (!(o->record = json_text_take(t, &o->record_len)))
		decide(o, HV_CONFLICT, "lanternd: out of memory");
}

void harness_begin(const struct harness_state *st, const struct harness_limits *lim,
		   const struct harness_call *c, struct harness_decision *o)
{
	const char *id = c->step_id, *dg = c->have_digest ? c->digest : NULL;
	struct harness_step *s = harness_state_step(st, id);
	struct json_text t;
	bool reissue = false;

	memset(o, 0, sizeof(*o));
	if (s && s->state == HSTEP_COMPLETED) {
		o->attempt = s->attempt;
		decide(o, HV_REPLAY, "step \"%s\" completed: replayed from the journal", id);
		return;
	}
	if (s && s->state == HSTEP_FAILED && !s->retryable) {
		decide(o, HV_CONFLICT, "step \"%s\" failed and is not retryable: %s", id, s->error ? s->error : "");
		return;
	}
	if (s && s->state == HSTEP_STARTED) {
		/* in flight: after a crash or a lost reply the same attempt runs again, with
		 * the same key, so a downstream service can tell it is a repeat */
		reissue = true;
		o->reissued = true;
		o->attempt = s->attempt;
	} else {
		o->attempt = s ? s->attempt + 1 : 1;
		if (budget_before(st, lim, !s, o))
			return;
		if (dg && lim->loop_threshold) {
			struct harness_digest *d = digest_find(st, dg);

			if (d && d->count >= lim->loop_threshold) {
				o->loop = true;
				decide(o, HV_BUDGET, "loop detected: step \"%s\" would repeat input "
				       "digest %.64s, already run %u times (at most %u)", id, dg, d->count,
				       lim->loop_threshold);
				return;
			}
		}
	}
	harness_idempotency_key(st->run_id, id, o->attempt, o->key);
	o->type = JOURNAL_STEP_STARTED;
	json_text_open(&t);
	json_text_uint(&t, "attempt", o->attempt);
	json_text_str(&t, "idempotency_key", o->key);
	if (dg)
		json_text_str(&t, "input_digest", dg);
	json_text_str(&t, "kind", c->kind[0] ? c->kind : "other");
	if (reissue)
		json_text_bool(&t, "reissued", true);
	json_text_str(&t, "step_id", id);
	decide(o, HV_PROCEED, "step \"%s\" attempt %u", id, o->attempt);
	take_record(o, &t);
}

static void put_usage(struct json_text *t, const struct harness_usage *u)
{
	struct json_text ut;
	size_t n;
	char *text;

	json_text_open(&ut);
	if (u->has & HU_CACHE_CREATION)
		json_text_uint(&ut, "cache_creation_tokens", u->t.cache_creation);
	if (u->has & HU_CACHE_READ)
		json_text_uint(&ut, "cache_read_tokens", u->t.cache_read);
	if (u->has & HU_INPUT)
		json_text_uint(&ut, "input_tokens", u->t.input);
	if (u->has & HU_MODEL)
		json_text_str(&ut, "model", u->model);
	if (u->has & HU_OUTPUT)
		json_text_uint(&ut, "output_tokens", u->t.output);
	if (u->has & HU_PROVIDER)
		json_text_str(&ut, "provider", u->provider);
	if (u->has & HU_REASONING)
		json_text_uint(&ut, "reasoning_tokens", u->t.reasoning);
	if (!(text = json_text_take(&ut, &n))) {
		t->failed = true;
		return;
	}
	json_text_raw(t, "usage", text, n);
	free(text);
}

void harness_complete(const struct harness_state *st, const struct harness_call *c, double cost_usd,
		      struct harness_decision *o)
{
	const char *id = c->step_id;
	struct harness_step *s = harness_state_step(st, id);
	struct json_text t;

	memset(o, 0, sizeof(*o));
	if (s && c->have_attempt && c->attempt != s->attempt && s->state != HSTEP_STARTED) {
		decide(o, HV_CONFLICT, "step \"%s\" is at attempt %u, not %u", id, s->attempt, c->attempt);
		return;
	}
	if (s && s->state == HSTEP_COMPLETED) {
		o->attempt = s->attempt;
		decide(o, HV_DONE, "step \"%s\" was already recorded as completed", id);
		return;
	}
	if (!s || s->state != HSTEP_STARTED) {
		decide(o, HV_CONFLICT, "step \"%s\" is not in flight: begin it first", id);
		return;
	}
	if (c->have_attempt && c->attempt != s->attempt) {
		decide(o, HV_CONFLICT, "step \"%s\" is at attempt %u, not that one", id, s->attempt);
		return;
	}
	o->attempt = s->attempt;
	o->type = JOURNAL_STEP_COMPLETED;
	json_text_open(&t);
	json_text_uint(&t, "attempt", s->attempt);
	if (c->usage.present)
		json_text_real(&t, "cost_usd", cost_usd);
	if (c->have_exit_code)
		json_text_int(&t, "exit_code", c->exit_code);
	if (c->value)
		json_text_raw(&t, c->value_b64 ? "result_b64" : "result", c->value, c->value_len);
	json_text_str(&t, "step_id", id);
	if (c->usage.present)
		put_usage(&t, &c->usage);
	decide(o, HV_RECORD, "step \"%s\" completed", id);
	take_record(o, &t);
}

void harness_fail(const struct harness_state *st, const struct harness_call *c,
		  struct harness_decision *o)
{
	const char *id = c->step_id;
	struct harness_step *s = harness_state_step(st, id);
	struct json_text t;

	memset(o, 0, sizeof(*o));
	if (s && s->state == HSTEP_FAILED) {
		o->attempt = s->attempt;
		decide(o, HV_DONE, "step \"%s\" attempt %u was already recorded as failed", id, s->attempt);
		return;
	}
	if (!s || s->state != HSTEP_STARTED) {
		decide(o, HV_CONFLICT, "step \"%s\" is not in flight", id);
		return;
	}
	o->attempt = s->attempt;
	o->type = JOURNAL_STEP_FAILED;
	json_text_open(&t);
	json_text_uint(&t, "attempt", s->attempt);
	json_text_str(&t, "error", c->error);
	json_text_bool(&t, "retryable", c->retryable);
	json_text_str(&t, "step_id", id);
	decide(o, HV_RECORD, "step \"%s\" failed", id);
	take_record(o, &t);
}

void harness_output(const struct harness_call *c, struct harness_decision *o)
{
	struct json_text t;

	memset(o, 0, sizeof(*o));
	o->type = JOURNAL_OUTPUT_SET;
	json_text_open(&t);
	json_text_raw(&t, "output", c->value ? c->value : "null", c->value ? c->value_len : 4);
	decide(o, HV_RECORD, "output set");
	take_record(o, &t);
}
