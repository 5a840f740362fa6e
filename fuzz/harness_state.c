/* harness_state.c (fuzz target "harness_state"): the harness API's step decisions
 * (harness_begin, harness_complete, harness_fail) on whatever JSON objects a workload
 * POSTs, in any order, with the records they decide applied as lanternd applies them
 * (harness_state_apply right after the journal append).
 *
 * Input: max_steps (u8), loop threshold (u8), then operations: one byte (begin,
 * complete, fail, output, resume, end) and a 16-bit-length-prefixed body; complete also
 * takes 8 bytes of cost (any double: NaN and infinities included).
 *
 * Properties beyond the sanitizers:
 *  - a record the harness decided on applies to the state it was decided on (lanternd
 *    journals it before applying it: one that failed would make the journal unreplayable);
 *  - a proceed carries the idempotency key of (run, step, attempt);
 *  - a replayed step has its record;
 *  - budgets hold: never more steps than max_steps, never more proceeds with one input
 *    digest than the loop threshold;
 *  - replaying the journal (the records as written, through harness_state_apply_raw, the
 *    resume path) reaches the same state as the live run. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
	size_t n;
};

/* What durable_append does: write the record (here: keep its bytes), then apply it. */
static void journal(struct run *r, unsigned type, json_t *rec)
{
	char *s = json_dumps(rec, JSON_COMPACT | JSON_SORT_KEYS);
	struct lerr e = { 0 };
	int err;

	FZ_CHECK(s, "a %s record cannot be encoded", journal_type_name(type));
	err = harness_state_apply(&r->st, type, rec, &e);
	FZ_CHECK(err == 0, "the %s record decided on does not apply: %s: %s", journal_type_name(type),
		 e.msg, s);
	if (r->n == MAX_RECORDS) {
		free(s);
		return;
	}
	r->type[r->n] = type;
	r->rec[r->n++] = s;
}

static void decided(struct run *r, json_t *body, struct harness_decision *d)
{
	const char *id = json_string_value(json_object_get(body, "step_id"));
	struct harness_step *s;
	char key[HARNESS_KEY_LEN + 1];

	switch (d->v) {
	case HV_PROCEED:
		FZ_CHECK(d->type == JOURNAL_STEP_STARTED && d->record, "proceed without a step_started");
		harness_idempotency_key(r->st.run_id, id, d->attempt, key);
		FZ_CHECK(!strcmp(key, d->key) &&
			 !strcmp(json_string_value(json_object_get(d->record, "idempotency_key")) ?: "", key),
			 "step \"%s\" attempt %u: key %s, expected %s", id, d->attempt, d->key, key);
		journal(r, d->type, d->record);
		break;
	case HV_RECORD:
		FZ_CHECK(d->record, "a decision to record without a record");
		journal(r, d->type, d->record);
		break;
	case HV_REPLAY:
		s = harness_state_step(&r->st, id);
		FZ_CHECK(s && s->state == HSTEP_COMPLETED && json_is_object(harness_step_record(s)),
			 "step \"%s\" replayed without its record", id);
		break;
	default:
		FZ_CHECK(!d->record, "verdict %d with a record", d->v);
		FZ_CHECK(d->reason[0], "verdict %d without a reason", d->v);
	}
	json_decref(d->record);
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct run r;
	struct harness_state replay;
	struct fz f = { data, size };
	json_t *rec;

	memset(&r, 0, sizeof(r));
	harness_state_init(&r.st);
	r.lim.max_steps = fz_u8(&f) % 16;
	r.lim.loop_threshold = fz_u8(&f) % 8;
	rec = json_pack("{s:s, s:s, s:{}, s:{s:s}, s:i}", "run_id", "run-0123456789abcdef",
			"instance_id", "inst-1", "spec", "input", "task", "fuzz", "created", 1);
	journal(&r, JOURNAL_RUN_STARTED, rec);
	json_decref(rec);
	while (f.n) {
		struct harness_decision d;
		unsigned op = fz_u8(&f) % 6;
		size_t len;
		const uint8_t *b = fz_piece(&f, &len);
		json_t *body = json_loadb((const char *)b, len, 0, NULL);
		double cost;

		/* the API answers 400 to a body that is not an object; nothing is decided */
		if (!json_is_object(body)) {
			json_decref(body);
			continue;
		}
		switch (op) {
		case 0:
			harness_begin(&r.st, &r.lim, body, &d);
			decided(&r, body, &d);
			break;
		case 1: {
			uint64_t bits = (uint64_t)fz_u32(&f) | (uint64_t)fz_u32(&f) << 32;

			memcpy(&cost, &bits, sizeof(cost));
			harness_complete(&r.st, body, cost, &d);
			decided(&r, body, &d);
			break;
		}
		case 2:
			harness_fail(&r.st, body, &d);
			decided(&r, body, &d);
			break;
		case 3:
			if (json_object_get(body, "output")) {
				rec = json_pack("{s:O}", "output", json_object_get(body, "output"));
				journal(&r, JOURNAL_OUTPUT_SET, rec);
				json_decref(rec);
			}
			break;
		case 4: {
			struct harness_step *s = harness_state_in_flight(&r.st);

			rec = json_pack("{s:s, s:s}", "instance_id", "inst-2", "reason", "workload vanished");
			if (s)
				json_object_set_new(rec, "in_flight", json_string(s->id));
			journal(&r, JOURNAL_RUN_RESUMED, rec);
			json_decref(rec);
			break;
		}
		case 5:
			rec = json_pack("{s:s, s:i, s:O}", "status", "succeeded", "exit_code", 0, "output",
					r.st.output ? r.st.output : json_null());
			journal(&r, JOURNAL_RUN_COMPLETED, rec);
			json_decref(rec);
			break;
		}
		json_decref(body);
		check_budgets(&r);
	}

	/* a restarted lanternd rebuilds the state from the journal */
	harness_state_init(&replay);
	for (size_t i = 0; i < r.n; i++) {
		struct lerr e = { 0 };
		int err = harness_state_apply_raw(&replay, r.type[i], r.rec[i], strlen(r.rec[i]), &e);

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
