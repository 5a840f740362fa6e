/* state.c: a run's steps as the journal says they are, and the harness decisions on
 * them. The state changes only in harness_state_apply, from a journal record, so a
 * replay after a crash and the live run reach the same state by the same code.
 *
 * Steps are kept in a hash table by step_id; input digests in a second one, counting
 * how often each proceeded (the loop guard).
 *
 * Replay speed: a resumed run replays every record, and building a JSON tree for
 * each (jansson) costs more than reading and verifying the whole file. So the two
 * records a run has thousands of, step_started and step_completed, are read by a
 * small scanner that picks the few fields the state needs and keeps the rest as
 * text, parsed only if that step is replayed to the workload. Anything the scanner
 * does not expect (escapes in a string it needs, a malformed value) falls back to
 * the full parser, so both paths give the same state. */
#include <errno.h>
#include <stdarg.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

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
			json_decref(s->record);
			free(s->raw);
			free(s->id);
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
	json_decref(st->input);
	json_decref(st->spec);
	json_decref(st->output);
	json_decref(st->end);
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
			nx = s->next;
			s->next = b[hash_str(s->id) & (n - 1)];
			b[hash_str(s->id) & (n - 1)] = s;
		}
	free(st->buckets);
	st->buckets = b;
	st->nbuckets = n;
	return 0;
}

static struct harness_step *step_add(struct harness_state *st, const char *id)
{
	struct harness_step *s;
	size_t h;

	if (st->nsteps + 1 > st->nbuckets && grow_steps(st) < 0)
		return NULL;
	s = calloc(1, sizeof(*s));
	if (!s || !(s->id = strdup(id))) {
		free(s);
		return NULL;
	}
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
				nx = x->next;
				x->next = b[hash_str(x->digest) & (n - 1)];
				b[hash_str(x->digest) & (n - 1)] = x;
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

static void replace(json_t **slot, json_t *v)
{
	json_incref(v);
	json_decref(*slot);
	*slot = v;
}

static int apply_started(struct harness_state *st, const char *id, const char *kind,
			 uint32_t attempt, const char *dg, bool reissued, struct lerr *e)
{
	struct harness_step *s;

	if (!id)
		return lerr_set(e, EBADMSG, "step_started without step_id");
	s = harness_state_step(st, id);
	if (!s) {
		if (!(s = step_add(st, id)))
			return lerr_set(e, ENOMEM, "out of memory");
		st->steps_begun++;
	} else if (s->state == HSTEP_COMPLETED) {
		return lerr_set(e, EBADMSG, "step \"%s\" started again after it completed", id);
	}
	snprintf(s->kind, sizeof(s->kind), "%s", kind ? kind : "other");
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

int harness_state_apply(struct harness_state *st, unsigned type, json_t *p, struct lerr *e)
{
	const char *id = json_string_value(json_object_get(p, "step_id"));
	uint32_t attempt = (uint32_t)json_integer_value(json_object_get(p, "attempt"));
	struct harness_step *s = id ? harness_state_step(st, id) : NULL;
	int err;

	st->records++;
	switch (type) {
	case JOURNAL_RUN_STARTED:
		snprintf(st->run_id, sizeof(st->run_id), "%s",
			 json_string_value(json_object_get(p, "run_id")) ?: "");
		replace(&st->input, json_object_get(p, "input"));
		replace(&st->spec, json_object_get(p, "spec"));
		return 0;
	case JOURNAL_STEP_STARTED:
		return apply_started(st, id, json_string_value(json_object_get(p, "kind")), attempt,
				     json_string_value(json_object_get(p, "input_digest")),
				     json_is_true(json_object_get(p, "reissued")), e);
	case JOURNAL_STEP_COMPLETED:
		if ((err = apply_completed(st, s, id, attempt, e)) < 0)
			return err;
		if (json_is_object(json_object_get(p, "usage")))
			meter_tally_add_usage(&st->tally, json_object_get(p, "usage"));
		replace(&s->record, p);
		return 0;
	case JOURNAL_STEP_FAILED:
		if (!s || s->state != HSTEP_STARTED || s->attempt != attempt)
			return lerr_set(e, EBADMSG, "step_failed for step \"%s\" attempt %u, which is not "
					"in flight", id ?: "?", attempt);
		replace(&s->record, p);
		free(s->raw);
		s->raw = NULL;
		s->state = HSTEP_FAILED;
		s->retryable = json_is_true(json_object_get(p, "retryable"));
		return 0;
	case JOURNAL_OUTPUT_SET:
		replace(&st->output, json_object_get(p, "output"));
		return 0;
	case JOURNAL_RUN_RESUMED:
		st->resumes++;
		return 0;
	case JOURNAL_RUN_COMPLETED:
		replace(&st->end, p);
		return 0;
	default:
		return lerr_set(e, EBADMSG, "unknown record type %u", type);
	}
}

/* --- the replay scanner (see the top of the file) --- */

struct fast_str {
	const char *p;
	size_t n;
};

static const char *skip_ws(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r'))
		p++;
	return p;
}

/* p at a '"': past the closing quote, or NULL; *esc tells if it held escapes. */
static const char *skip_string(const char *p, const char *end, bool *esc)
{
	for (p++; p < end; p++) {
		if (*p == '\\') {
			*esc = true;
			p++;
		} else if (*p == '"') {
			return p + 1;
		}
	}
	return NULL;
}

/* Past one JSON value (strings, nesting, scalars), or NULL. */
static const char *skip_value(const char *p, const char *end)
{
	bool esc = false;
	int depth = 0;

	p = skip_ws(p, end);
	do {
		if (p >= end)
			return NULL;
		if (*p == '"') {
			if (!(p = skip_string(p, end, &esc)))
				return NULL;
			continue;
		}
		if (*p == '{' || *p == '[')
			depth++;
		else if (*p == '}' || *p == ']')
			depth--;
		else if (!depth) {
			while (p < end && *p != ',' && *p != '}' && *p != ']')
				p++;
			return p;
		}
		p++;
	} while (depth > 0);
	return p;
}

/* Calls fn for each member of the object at p; false on anything unexpected. */
static bool scan_object(const char *p, const char *end,
			bool (*fn)(void *arg, struct fast_str key, const char *v, const char *vend),
			void *arg)
{
	p = skip_ws(p, end);
	if (p >= end || *p++ != '{')
		return false;
	for (;;) {
		struct fast_str k;
		const char *v, *ve;
		bool esc = false;

		p = skip_ws(p, end);
		if (p < end && *p == '}')
			return true;
		if (p >= end || *p != '"')
			return false;
		k.p = p + 1;
		if (!(p = skip_string(p, end, &esc)) || esc)
			return false;
		k.n = (size_t)(p - 1 - k.p);
		p = skip_ws(p, end);
		if (p >= end || *p++ != ':')
			return false;
		v = skip_ws(p, end);
		if (!(ve = skip_value(v, end)) || !fn(arg, k, v, ve))
			return false;
		p = skip_ws(ve, end);
		if (p < end && *p == ',')
			p++;
		else if (p < end && *p == '}')
			return true;
		else
			return false;
	}
}

static bool key_is(struct fast_str k, const char *name)
{
	return strlen(name) == k.n && !memcmp(k.p, name, k.n);
}

/* A string value without escapes, copied into buf. */
static bool fast_string(const char *v, const char *ve, char *buf, size_t len)
{
	bool esc = false;
	const char *e;

	if (*v != '"' || !(e = skip_string(v, ve, &esc)) || esc || (size_t)(e - v - 2) >= len)
		return false;
	memcpy(buf, v + 1, (size_t)(e - v - 2));
	buf[e - v - 2] = '\0';
	return true;
}

struct fast_rec {
	char step_id[HARNESS_MAX_STEP_ID + 1], kind[8], digest[257];
	char provider[64], model[96];
	bool have_id, have_digest, reissued, have_usage;
	uint32_t attempt;
	struct meter_tokens tokens;
};

/* A token count as the meter takes it: negative counts are ignored, like the full
 * parser's meter_tally_add_usage. */
static bool fast_count(const char *v, const char *ve, uint64_t *out)
{
	char *endp;
	long long t = strtoll(v, &endp, 10);

	if (endp == v || endp > ve || *endp == '.' || *endp == 'e' || *endp == 'E')
		return false;
	*out = t > 0 ? (uint64_t)t : 0;
	return true;
}

static bool fast_usage(void *arg, struct fast_str k, const char *v, const char *ve)
{
	struct fast_rec *f = arg;

	if (key_is(k, "input_tokens"))
		return fast_count(v, ve, &f->tokens.input);
	if (key_is(k, "output_tokens"))
		return fast_count(v, ve, &f->tokens.output);
	if (key_is(k, "cache_read_tokens"))
		return fast_count(v, ve, &f->tokens.cache_read);
	if (key_is(k, "cache_creation_tokens"))
		return fast_count(v, ve, &f->tokens.cache_creation);
	if (key_is(k, "reasoning_tokens"))
		return fast_count(v, ve, &f->tokens.reasoning);
	if (key_is(k, "provider"))
		return fast_string(v, ve, f->provider, sizeof(f->provider));
	if (key_is(k, "model"))
		return fast_string(v, ve, f->model, sizeof(f->model));
	return true;
}

static bool fast_member(void *arg, struct fast_str k, const char *v, const char *ve)
{
	struct fast_rec *f = arg;
	char *endp;

	if (key_is(k, "step_id"))
		return (f->have_id = fast_string(v, ve, f->step_id, sizeof(f->step_id)));
	if (key_is(k, "kind"))
		return fast_string(v, ve, f->kind, sizeof(f->kind));
	if (key_is(k, "input_digest"))
		return (f->have_digest = fast_string(v, ve, f->digest, sizeof(f->digest)));
	if (key_is(k, "reissued"))
		f->reissued = *v == 't';
	else if (key_is(k, "attempt")) {
		/* jansson reads 2.0 or 2e0 as a real, whose integer value is 0 */
		f->attempt = (uint32_t)strtoul(v, &endp, 10);
		return endp != v && endp <= ve && *endp != '.' && *endp != 'e' && *endp != 'E';
	} else if (key_is(k, "usage")) {
		/* a repeated key: jansson keeps the last object, the scan would add both */
		if (f->have_usage)
			return false;
		f->have_usage = true;
		return scan_object(v, ve, fast_usage, f);
	}
	return true;
}

/* The fast path for step_started / step_completed; 1 if it did not apply. */
static int apply_fast(struct harness_state *st, unsigned type, const char *payload, size_t len,
		      struct lerr *e)
{
	struct fast_rec f = { .kind = "other" };
	struct harness_step *s;
	int err;

	if (!scan_object(payload, payload + len, fast_member, &f) || !f.have_id)
		return 1;
	st->records++;
	if (type == JOURNAL_STEP_STARTED)
		return apply_started(st, f.step_id, f.kind, f.attempt, f.have_digest ? f.digest : NULL,
				     f.reissued, e);
	s = harness_state_step(st, f.step_id);
	if ((err = apply_completed(st, s, f.step_id, f.attempt, e)) < 0)
		return err;
	if (f.have_usage)
		meter_tally_add(&st->tally, f.provider, f.model, &f.tokens);
	json_decref(s->record);
	s->record = NULL;
	free(s->raw);
	if (!(s->raw = strndup(payload, len)))
		return lerr_set(e, ENOMEM, "out of memory");
	return 0;
}

int harness_state_apply_raw(struct harness_state *st, unsigned type, const char *payload,
			    size_t len, struct lerr *e)
{
	json_error_t je;
	json_t *p;
	int err;

	if ((type == JOURNAL_STEP_STARTED || type == JOURNAL_STEP_COMPLETED) &&
	    (err = apply_fast(st, type, payload, len, e)) <= 0)
		return err;
	p = json_loadb(payload, len, 0, &je);
	if (!p)
		return lerr_set(e, EBADMSG, "record %" PRIu64 " (%s) is not JSON: %s", st->records + 1,
				journal_type_name(type), je.text);
	err = harness_state_apply(st, type, p, e);
	json_decref(p);
	return err;
}

json_t *harness_step_record(struct harness_step *s)
{
	if (!s->record && s->raw) {
		s->record = json_loads(s->raw, 0, NULL);
		if (s->record) {
			free(s->raw);
			s->raw = NULL;
		}
	}
	return s->record;
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

static const char *body_step_id(json_t *body, struct harness_decision *o)
{
	const char *id = json_string_value(json_object_get(body, "step_id"));

	if (!id || !*id || strlen(id) > HARNESS_MAX_STEP_ID) {
		decide(o, HV_INVALID, "\"step_id\" must be a non-empty string of at most %d bytes",
		       HARNESS_MAX_STEP_ID);
		return NULL;
	}
	return id;
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

void harness_begin(const struct harness_state *st, const struct harness_limits *lim,
		   json_t *body, struct harness_decision *o)
{
	const char *id, *kind = json_string_value(json_object_get(body, "kind")) ?: "other";
	json_t *dgv = json_object_get(body, "input_digest");
	const char *dg = json_string_value(dgv);
	struct harness_step *s;
	bool reissue = false;

	memset(o, 0, sizeof(*o));
	if (!(id = body_step_id(body, o)))
		return;
	if (strcmp(kind, "llm") && strcmp(kind, "tool") && strcmp(kind, "other"))
		{
			decide(o, HV_INVALID, "\"kind\" must be llm, tool or other, not \"%s\"", kind);
			return;
		}
	if (dgv && (!dg || strlen(dg) > 256))
		{
			decide(o, HV_INVALID, "\"input_digest\" must be a string of at most 256 bytes");
			return;
		}
	s = harness_state_step(st, id);
	if (s && s->state == HSTEP_COMPLETED) {
		o->attempt = s->attempt;
		{
			decide(o, HV_REPLAY, "step \"%s\" completed: replayed from the journal", id);
			return;
		}
	}
	if (s && s->state == HSTEP_FAILED && !s->retryable)
		{
			decide(o, HV_CONFLICT, "step \"%s\" failed and is not retryable: %s", id,
				      json_string_value(json_object_get(harness_step_record(s), "error")) ?: "");
			return;
		}
	if (s && s->state == HSTEP_STARTED) {
		/* in flight: after a crash or a lost reply the same attempt runs again, with
		 * the same key, so a downstream service can tell it is a repeat */
		reissue = true;
		o->attempt = s->attempt;
	} else {
		o->attempt = s ? s->attempt + 1 : 1;
		if (budget_before(st, lim, !s, o))
			return;
		if (dg && lim->loop_threshold) {
			struct harness_digest *d = digest_find(st, dg);
			if (d && d->count >= lim->loop_threshold) {
				o->loop = true;
				{
					decide(o, HV_BUDGET, "loop detected: step \"%s\" would repeat input "
						      "digest %.64s, already run %u times (at most %u)", id,
						      dg, d->count, lim->loop_threshold);
					return;
				}
			}
		}
	}
	harness_idempotency_key(st->run_id, id, o->attempt, o->key);
	o->type = JOURNAL_STEP_STARTED;
	o->record = json_pack("{s:s, s:s, s:i, s:s}", "step_id", id, "kind", kind, "attempt",
			      (int)o->attempt, "idempotency_key", o->key);
	if (dg)
		json_object_set_new(o->record, "input_digest", json_string(dg));
	if (reissue)
		json_object_set_new(o->record, "reissued", json_true());
	decide(o, HV_PROCEED, "step \"%s\" attempt %u", id, o->attempt);
}

/* Keeps result bytes readable in the journal when they are UTF-8 text. */
static int put_result(json_t *rec, json_t *body, struct harness_decision *o)
{
	json_t *r = json_object_get(body, "result"), *b = json_object_get(body, "result_b64");

	if (r && b) {
		decide(o, HV_INVALID, "give \"result\" or \"result_b64\", not both");
		return -1;
	}
	if (b && !json_is_string(b)) {
		decide(o, HV_INVALID, "\"result_b64\" must be a base64 string");
		return -1;
	}
	if (b)
		json_object_set(rec, "result_b64", b);
	else if (r)
		json_object_set(rec, "result", r);
	return 0;
}

void harness_complete(const struct harness_state *st, json_t *body, double cost_usd,
		      struct harness_decision *o)
{
	const char *id;
	json_t *usage = json_object_get(body, "usage"), *code = json_object_get(body, "exit_code");
	json_t *att = json_object_get(body, "attempt");
	struct harness_step *s;

	memset(o, 0, sizeof(*o));
	if (!(id = body_step_id(body, o)))
		return;
	s = harness_state_step(st, id);
	if (s && att && json_is_integer(att) && (uint32_t)json_integer_value(att) != s->attempt &&
	    s->state != HSTEP_STARTED)
		{
			decide(o, HV_CONFLICT, "step \"%s\" is at attempt %u, not %lld", id, s->attempt,
				      (long long)json_integer_value(att));
			return;
		}
	if (s && s->state == HSTEP_COMPLETED) {
		o->attempt = s->attempt;
		{
			decide(o, HV_DONE, "step \"%s\" was already recorded as completed", id);
			return;
		}
	}
	if (!s || s->state != HSTEP_STARTED)
		{
			decide(o, HV_CONFLICT, "step \"%s\" is not in flight: begin it first", id);
			return;
		}
	if (att && (!json_is_integer(att) || (uint32_t)json_integer_value(att) != s->attempt))
		{
			decide(o, HV_CONFLICT, "step \"%s\" is at attempt %u, not that one", id, s->attempt);
			return;
		}
	if (usage && !json_is_object(usage))
		{
			decide(o, HV_INVALID, "\"usage\" must be an object");
			return;
		}
	if (code && !json_is_integer(code))
		{
			decide(o, HV_INVALID, "\"exit_code\" must be an integer");
			return;
		}
	o->attempt = s->attempt;
	o->type = JOURNAL_STEP_COMPLETED;
	o->record = json_pack("{s:s, s:i}", "step_id", id, "attempt", (int)s->attempt);
	if (put_result(o->record, body, o) < 0) {
		json_decref(o->record);
		o->record = NULL;
		return;
	}
	if (code)
		json_object_set(o->record, "exit_code", code);
	if (usage) {
		static const char *const f[] = { "input_tokens", "output_tokens", "cache_read_tokens",
						 "cache_creation_tokens", "reasoning_tokens" };
		json_t *u = json_object();

		for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++) {
			json_t *v = json_object_get(usage, f[i]);
			if (v && (!json_is_integer(v) || json_integer_value(v) < 0)) {
				json_decref(u);
				json_decref(o->record);
				o->record = NULL;
				{
					decide(o, HV_INVALID, "usage.%s must be a non-negative integer", f[i]);
					return;
				}
			}
			if (v)
				json_object_set(u, f[i], v);
		}
		if (json_is_string(json_object_get(usage, "provider")))
			json_object_set(u, "provider", json_object_get(usage, "provider"));
		if (json_is_string(json_object_get(usage, "model")))
			json_object_set(u, "model", json_object_get(usage, "model"));
		json_object_set_new(o->record, "usage", u);
		json_object_set_new(o->record, "cost_usd", json_real(isfinite(cost_usd) ? cost_usd : 0));
	}
	decide(o, HV_RECORD, "step \"%s\" completed", id);
}

void harness_fail(const struct harness_state *st, json_t *body, struct harness_decision *o)
{
	const char *id, *err = json_string_value(json_object_get(body, "error")) ?: "";
	struct harness_step *s;

	memset(o, 0, sizeof(*o));
	if (!(id = body_step_id(body, o)))
		return;
	s = harness_state_step(st, id);
	if (s && s->state == HSTEP_FAILED) {
		o->attempt = s->attempt;
		{
			decide(o, HV_DONE, "step \"%s\" attempt %u was already recorded as failed", id,
				      s->attempt);
			return;
		}
	}
	if (!s || s->state != HSTEP_STARTED)
		{
			decide(o, HV_CONFLICT, "step \"%s\" is not in flight", id);
			return;
		}
	o->attempt = s->attempt;
	o->type = JOURNAL_STEP_FAILED;
	o->record = json_pack("{s:s, s:i, s:s%, s:b}", "step_id", id, "attempt", (int)s->attempt,
			      "error", err, strnlen(err, 4096),
			      "retryable", json_is_true(json_object_get(body, "retryable")));
	if (!o->record)
		{
			decide(o, HV_INVALID, "\"error\" must be UTF-8 text");
			return;
		}
	decide(o, HV_RECORD, "step \"%s\" failed", id);
}
