/* harness_replay.c (fuzz target "harness_replay"): the replay fast path of the harness
 * state (harness_state_apply_raw, which reads step_started and step_completed records
 * with a small scanner and falls back to jansson for anything it does not expect) against
 * the full parser (json_loadb + harness_state_apply), record by record.
 *
 * Input: records, each a type byte, a form byte and a 16-bit-length-prefixed payload.
 * A payload that is JSON is applied to both states, as written (form odd) or as lanternd
 * writes records (form even: re-encoded compact with sorted keys, as durable_append
 * does); after every record both must have answered alike (applied, or refused) and hold
 * the same state. A payload that is not JSON goes through the fast path alone, on a third
 * state, for the sanitizers: journals are written by lanternd as JSON, and what the fast
 * path makes of other bytes is not compared (see docs/security.md, Fuzzing). */
#include <stdlib.h>
#include <string.h>

#include "fuzzlib.h"
#include "harness_eq.h"
#include "lantern/harness.h"
#include "lantern/journal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct harness_state fast, full, other;
	struct fz f = { data, size };
	char what[64];
	unsigned n = 0;

	harness_state_init(&fast);
	harness_state_init(&full);
	harness_state_init(&other);
	while (f.n) {
		/* types 0 and 8 are unknown: both paths must refuse them */
		unsigned type = fz_u8(&f) % (JOURNAL_TYPE_MAX + 1), form = fz_u8(&f);
		struct lerr ea = { 0 }, eb = { 0 };
		size_t len;
		const char *payload = (const char *)fz_piece(&f, &len);
		json_t *j = json_loadb(payload, len, 0, NULL), *again;
		char *canon = NULL;
		int a, b;

		n++;
		if (!j) {
			harness_state_apply_raw(&other, type, payload, len, &ea);
			continue;
		}
		if (!(form & 1)) {
			canon = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
			FZ_CHECK(canon, "record %u cannot be re-encoded", n);
			payload = canon;
			len = strlen(canon);
		}
		again = json_loadb(payload, len, 0, NULL);
		FZ_CHECK(again, "record %u: its re-encoding is not JSON: %s", n, payload);
		a = harness_state_apply_raw(&fast, type, payload, len, &ea);
		b = harness_state_apply(&full, type, again, &eb);
		FZ_CHECK((a < 0) == (b < 0), "record %u (%s): fast path %d (%s), full parser %d (%s): %.*s",
			 n, journal_type_name(type), a, ea.msg, b, eb.msg, (int)len, payload);
		snprintf(what, sizeof(what), "after record %u (%s)", n, journal_type_name(type));
		fz_harness_equal(&fast, &full, what);
		json_decref(again);
		json_decref(j);
		free(canon);
	}
	harness_state_free(&fast);
	harness_state_free(&full);
	harness_state_free(&other);
	return 0;
}
