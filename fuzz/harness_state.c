/* harness_state.c (fuzz target "harness_state"): the harness API's calls as a workload
 * makes them: a request decoded by harness_call_decode (call.c: the JSON body checked
 * into a typed call), decided by harness_begin, harness_complete, harness_fail or
 * harness_output (state.c), its record written as JSON text and applied as lanternd
 * applies it (harness_state_apply right after the journal append).
 *
 * Input: max_steps (u8), loop threshold (u8), then operations: one byte (begin,
 * complete, fail, output, a GET, a resume, the run's end) and a 16-bit-length-prefixed
 * body; complete also takes 8 bytes of cost (any double: NaN and infinities included).
 *
 * Properties beyond the sanitizers:
 *  - a record decided on is JSON (jansson reads it as an object) and applies to the
 *    state it was decided on (lanternd journals it first: one that failed would make the
 *    journal unreplayable);
 *  - what the record says is what was decided: the step and attempt change as the
 *    decision says, the tally grows by exactly the tokens reported, and the result or
 *    output in the record (harness_record_member) is the call's bytes, no more;
 *  - a proceed carries the idempotency key of (run, step, attempt); a replayed step has
 *    its record;
 *  - budgets hold: never more steps than max_steps, never more proceeds with one input
 *    digest than the loop threshold;
 *  - every model in the token tally shows in its JSON report (meter_tally_json);
 *  - replaying the journal (the records as written) reaches the same state as the run. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "fuzzlib.h"
#include "harness_eq.h"
#include "lantern/harness.h"
#include "lantern/journal.h"

#define MAX_RECORDS 512

struct run {
	struct harness_state st;
	struct harness_limits lim;
	unsigned type[MAX_RECORDS];
	char *rec[MAX_RECORDS];
	size_t len[MAX_RECORDS];
	uint64_t off[MAX_RECORDS], next_off;
	size_t n;
};

/* What durable does: append the record (here: keep its bytes and offset), then apply it. */
static void journal(struct run *r, unsigned type, const char *text, size_t len)
{
	struct lerr e = { 0 };
	json_t *j = json_loadb(text, len, 0, NULL);
	int err;

	FZ_CHECK(json_is_object(j), "the %s record decided on is not a JSON object: %.*s",
		 journal_type_name(type), (int)len, text);
	json_decref(j);
	err = harness_state_apply(&r->st, type, text, len, r->next_off, &e);
	FZ_CHECK(err == 0, "the %s record decided on does not apply: %s: %.*s",
		 journal_type_name(type), e.msg, (int)len, text);
	if (r->n < MAX_RECORDS) {
		r->type[r->n] = type;
		r->rec[r->n] = strndup(text, len);
		r->len[r->n] = len;
		r->off[r->n++] = r->next_off;
	}
	r->next_off += JOURNAL_FRAME + JOURNAL_HEADER + len;
}

static void journal_json(struct run *r, unsigned type, json_t *rec)
{
	char *s = json_dumps(rec, JSON_COMPACT | JSON_SORT_KEYS);

	journal(r, type, s, strlen(s));
	free(s);
	json_decref(rec);
}

static const char *record_at(const struct run *r, uint64_t off)
{
	for (size_t i = 0; i < r->n; i++)
		if (r->off[i] == off)
			return r->rec[i];
	return NULL;
}

static void decided(struct run *r, const struct harness_call *c, struct harness_decision *d)
{
	struct harness_step *s = harness_state_step(&r->st, c->step_id);
	uint64_t tokens = r->st.tally.total;
	const char *v;
	size_t vlen;
	char key[HARNESS_KEY_LEN + 1];

	switch (d->v) {
	case HV_PROCEED:
		FZ_CHECK(d->type == JOURNAL_STEP_STARTED && d->record, "proceed without a step_started");
		harness_idempotency_key(r->st.run_id, c->step_id, d->attempt, key);
		FZ_CHECK(!strcmp(key, d->key), "step \"%s\" attempt %u: key %s, expected %s", c->step_id,
			 d->attempt, d->key, key);
		journal(r, d->type, d->record, d->record_len);
		s = harness_state_step(&r->st, c->step_id);
		FZ_CHECK(s && s->state == HSTEP_STARTED && s->attempt == d->attempt,
			 "step \"%s\" proceeded with attempt %u, the record made it %u", c->step_id,
			 d->attempt, s ? s->attempt : 0);
		break;
	case HV_RECORD:
		FZ_CHECK(d->record, "a decision to record without a record");
		if (c->value) {
			v = harness_record_member(d->record, d->record_len,
						  c->op == HOP_OUTPUT ? "output" :
						  c->value_b64 ? "result_b64" : "result", &vlen);
			FZ_CHECK(v && vlen == c->value_len && !memcmp(v, c->value, vlen),
				 "the record does not hold the call's value as it came: %s", d->record);
		}
		journal(r, d->type, d->record, d->record_len);
		if (c->op == HOP_OUTPUT)
			break;
		s = harness_state_step(&r->st, c->step_id);
		FZ_CHECK(s && s->attempt == d->attempt &&
			 s->state == (c->op == HOP_COMPLETE ? HSTEP_COMPLETED : HSTEP_FAILED),
			 "step \"%s\" after its record: state %d, attempt %u", c->step_id,
			 s ? s->state : 0, s ? s->attempt : 0);
		if (c->op == HOP_COMPLETE && c->usage.present) {
			const struct meter_tokens *t = &c->usage.t;
			const unsigned h = c->usage.has;
			uint64_t want = tokens + (h & HU_INPUT ? t->input : 0) + (h & HU_OUTPUT ? t->output : 0) +
					(h & HU_CACHE_READ ? t->cache_read : 0) +
					(h & HU_CACHE_CREATION ? t->cache_creation : 0) +
					(h & HU_REASONING ? t->reasoning : 0);

			/* saturating, as the tally counts */
			FZ_CHECK(r->st.tally.total == want || r->st.tally.total == UINT64_MAX,
				 "the tally grew by %llu tokens, the call reported %llu",
				 (unsigned long long)(r->st.tally.total - tokens),
				 (unsigned long long)(want - tokens));
		}
		if (c->op == HOP_FAIL)
			FZ_CHECK(s->retryable == c->retryable, "step \"%s\" retryable %d, the call said %d",
				 c->step_id, s->retryable, c->retryable);
		break;
	case HV_REPLAY:
		FZ_CHECK(s && s->state == HSTEP_COMPLETED && record_at(r, s->rec_off),
			 "step \"%s\" replayed without its record", c->step_id);
		break;
	default:
		FZ_CHECK(!d->record, "verdict %d with a record", d->v);
		FZ_CHECK(d->reason[0], "verdict %d without a reason", d->v);
	}
	free(d->record);
}

struct harness_digest {
	char *digest;
	uint32_t count;
	struct harness_digest *next;
};

static void check_budgets(const struct run *r)
{
	const struct harness_state *st = &r->st;

	FZ_CHECK(st->steps_begun == st->nsteps && st->steps_completed <= st->steps_begun,
		 "%llu begun, %zu steps, %llu completed", (unsigned long long)st->steps_begun,
		 st->nsteps, (unsigned long long)st->steps_completed);
	FZ_CHECK(!r->lim.max_steps || st->steps_begun <= r->lim.max_steps, "%llu steps begun, max %llu",
		 (unsigned long long)st->steps_begun, (unsigned long long)r->lim.max_steps);
	for (size_t i = 0; r->lim.loop_threshold && i < st->ndbuckets; i++)
		for (const struct harness_digest *d = st->dbuckets[i]; d; d = d->next)
			FZ_CHECK(d->count <= r->lim.loop_threshold, "input digest \"%s\" proceeded %u "
				 "times, loop threshold %u", d->digest, d->count, r->lim.loop_threshold);
}

/* Every model the tally counts has its entry in the report (distinct names). */
static void check_tally_report(const struct meter_tally *t)
{
	json_t *o = meter_tally_json(t), *names = json_object();

	for (size_t i = 0; i < t->n; i++) {
		char key[200];

		snprintf(key, sizeof(key), "%s%s%s", t->m[i].provider, t->m[i].provider[0] ? "/" : "",
			 t->m[i].model);
		json_object_set_new_nocheck(names, key, json_true());
	}
	FZ_CHECK(json_object_size(o) == json_object_size(names), "the token report shows %zu of %zu "
		 "models (provider \"%s\", model \"%s\" last)", json_object_size(o),
		 json_object_size(names), t->n ? t->m[t->n - 1].provider : "",
		 t->n ? t->m[t->n - 1].model : "");
	json_decref(o);
	json_decref(names);
}

static const char *const paths[] = { "/v1/steps/begin", "/v1/steps/complete", "/v1/steps/fail",
				     "/v1/output" };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct run r;
	struct harness_state replay;
	struct fz f = { data, size };

	memset(&r, 0, sizeof(r));
	harness_state_init(&r.st);
	r.next_off = JOURNAL_MAGIC_LEN;
	r.lim.max_steps = fz_u8(&f) % 16;
	r.lim.loop_threshold = fz_u8(&f) % 8;
	journal_json(&r, JOURNAL_RUN_STARTED,
		     json_pack("{s:I, s:{s:s}, s:s, s:s, s:{}}", "created", (json_int_t)1, "input", "task",
			       "fuzz", "instance_id", "inst-1", "run_id", "run-0123456789abcdef", "spec"));
	while (f.n) {
		struct harness_decision d;
		struct harness_call c;
		unsigned op = fz_u8(&f) % 7;
		size_t len;
		const char *body = (const char *)fz_piece(&f, &len);
		char why[512];
		double cost = 0;
		int st;

		if (op == 1) {
			uint64_t bits = (uint64_t)fz_u32(&f) | (uint64_t)fz_u32(&f) << 32;

			memcpy(&cost, &bits, sizeof(cost));
		}
		if (op <= 3) {
			st = harness_call_decode("POST", paths[op], body, len, &c, why, sizeof(why));
			if (st) {
				FZ_CHECK(st >= 400 && st < 600 && why[0], "decode: %d without a reason", st);
			} else if (c.op == HOP_BEGIN) {
				harness_begin(&r.st, &r.lim, &c, &d);
				decided(&r, &c, &d);
			} else if (c.op == HOP_COMPLETE) {
				harness_complete(&r.st, &c, cost, &d);
				decided(&r, &c, &d);
			} else if (c.op == HOP_FAIL) {
				harness_fail(&r.st, &c, &d);
				decided(&r, &c, &d);
			} else {
				harness_output(&c, &d);
				decided(&r, &c, &d);
			}
			harness_call_free(&c);
		} else if (op == 4) {
			st = harness_call_decode("GET", len & 1 ? "/v1/run" : "/v1/input", body, len, &c, why,
						 sizeof(why));
			FZ_CHECK(st == 0 && (c.op == HOP_INPUT || c.op == HOP_RUN), "GET: %d", st);
			harness_call_free(&c);
		} else if (op == 5) {
			struct harness_step *s = harness_state_in_flight(&r.st);
			json_t *rec = json_pack("{s:s, s:s}", "instance_id", "inst-2", "reason", "vanished");

			if (s)
				json_object_set_new(rec, "in_flight", json_string(s->id));
			journal_json(&r, JOURNAL_RUN_RESUMED, rec);
		} else {
			journal_json(&r, JOURNAL_RUN_COMPLETED,
				     json_pack("{s:i, s:s}", "exit_code", 0, "status", "succeeded"));
		}
		check_budgets(&r);
		check_tally_report(&r.st.tally);
	}

	/* a restarted lanternd rebuilds the state from the journal */
	harness_state_init(&replay);
	for (size_t i = 0; i < r.n; i++) {
		struct lerr e = { 0 };
		int err = harness_state_apply(&replay, r.type[i], r.rec[i], r.len[i], r.off[i], &e);

		FZ_CHECK(err == 0, "replaying record %zu (%s) failed: %s: %s", i + 1,
			 journal_type_name(r.type[i]), e.msg, r.rec[i]);
	}
	if (r.n < MAX_RECORDS)
		fz_harness_equal(&r.st, &replay, "live run vs its replay");
	harness_state_free(&replay);
	harness_state_free(&r.st);
	for (size_t i = 0; i < r.n; i++)
		free(r.rec[i]);
	return 0;
}
