/* record.c (fuzz target "record"): the journal record scanner (userspace/harness/record.c)
 * that rebuilds a run's step state on replay without a JSON parser, against jansson: the
 * scanner must read what a JSON parser reads, for the records lanternd writes.
 *
 * Input: a record type byte, a form byte, then the payload. The payload goes through
 * harness_state_apply (on a state with a run started and step "s" in flight), whatever
 * it is. When jansson reads it as an object without repeated keys, every member is
 * compared: as written (form odd), or re-encoded compactly with sorted keys as lanternd
 * writes records (form even; then every member whose key needs no escape must be found):
 *  - harness_record_member finds the member, and its text reads (jansson) as the value;
 *  - a string member decodes (record_string: escapes, surrogate pairs) to jansson's
 *    string, a non-negative integer (record_uint) to its value, a negative one to 0, a
 *    boolean (record_bool) to its value. As written, the scanner may refuse what
 *    lanternd never writes (it refuses rather than guesses); it must never misread. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "fuzzlib.h"
#include "lantern/harness.h"
#include "lantern/journal.h"
#include "record.h"

static void check_member(const char *text, size_t len, const char *key, json_t *v, bool must_find)
{
	size_t ml;
	const char *m = harness_record_member(text, len, key, &ml);
	json_t *again;

	FZ_CHECK(m || !must_find, "member \"%s\" not found in %.*s", key, (int)len, text);
	if (!m)
		return;
	again = json_loadb(m, ml, JSON_DECODE_ANY, NULL);
	FZ_CHECK(again && json_equal(again, v), "member \"%s\": the scanner's span \"%.*s\" is not "
		 "its value", key, (int)ml, m);
	json_decref(again);
	if (json_is_string(v) && json_string_length(v) < 4096 &&
	    strlen(json_string_value(v)) == json_string_length(v)) {
		char buf[4096];

		bool ok = record_string(m, m + ml, buf, sizeof(buf), false);

		FZ_CHECK(ok ? !strcmp(buf, json_string_value(v)) : !must_find,
			 "member \"%s\": %.*s decodes to \"%s\", jansson reads \"%s\"", key, (int)ml, m,
			 buf, json_string_value(v));
	} else if (json_is_integer(v)) {
		uint64_t u = 1;
		json_int_t i = json_integer_value(v);

		bool ok = record_uint(m, m + ml, &u);

		FZ_CHECK(ok ? u == (i > 0 ? (uint64_t)i : 0) : !must_find,
			 "member \"%s\": %.*s reads as %llu, jansson reads %lld", key, (int)ml, m,
			 (unsigned long long)u, (long long)i);
	} else if (json_is_boolean(v)) {
		bool b = !json_is_true(v);

		bool ok = record_bool(m, m + ml, &b);

		FZ_CHECK(ok ? b == json_is_true(v) : !must_find,
			 "member \"%s\": %.*s reads as %d", key, (int)ml, m, b);
	}
}

/* Keys are matched as written: lanternd's are plain names that need no escape. */
static bool plain(const char *k)
{
	for (; *k; k++)
		if (*k == '"' || *k == '\\' || (unsigned char)*k < 0x20)
			return false;
	return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char started[] = "{\"created\":1,\"input\":{},\"instance_id\":\"i\",\"run_id\":\"r\",\"spec\":{}}";
	static const char step[] = "{\"attempt\":1,\"idempotency_key\":\"k\",\"kind\":\"llm\",\"step_id\":\"s\"}";
	struct harness_state st;
	struct lerr e = { 0 };
	const char *payload;
	unsigned type, form;
	size_t len;
	json_t *j, *v;
	const char *k;

	if (size < 2)
		return 0;
	type = data[0] % (JOURNAL_TYPE_MAX + 1);
	form = data[1];
	payload = (const char *)data + 2;
	len = size - 2;

	harness_state_init(&st);
	FZ_CHECK(harness_state_apply(&st, JOURNAL_RUN_STARTED, started, strlen(started), 8, &e) == 0 &&
		 harness_state_apply(&st, JOURNAL_STEP_STARTED, step, strlen(step), 100, &e) == 0,
		 "setting up: %s", e.msg);
	harness_state_apply(&st, type, payload, len, 200, &e);
	harness_state_free(&st);

	j = json_loadb(payload, len, JSON_REJECT_DUPLICATES, NULL);
	if (!json_is_object(j)) {
		json_decref(j);
		return 0;
	}
	if (form & 1) {
		json_object_foreach(j, k, v)
			check_member(payload, len, k, v, false);
	} else {
		char *canon = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);

		json_object_foreach(j, k, v)
			check_member(canon, strlen(canon), k, v, plain(k));
		free(canon);
	}
	json_decref(j);
	return 0;
}
