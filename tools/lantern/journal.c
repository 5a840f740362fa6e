/* journal.c: `lantern journal RUN` prints a run's journal readably (--json: one JSON
 * object per record); `lantern journal verify RUN` checks every record's CRC32C, the
 * sequence and the SHA-256 chain, and prints the head hash, the format and the space
 * preallocated after the records (format 2). RUN is a run id (lanternd says where its
 * journal is, or --state-dir DIR when lanternd is down) or a path; with --store URL it
 * is a run's key in the replicated journal store (the control plane's run id, or a
 * standalone run's id), and the store's copy is read and checked the same way. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "client.h"
#include "lantern/journal.h"
#include "lantern/util.h"

static int journal_usage(void)
{
	fprintf(stderr, "usage: lantern journal [verify] [--json] [--state-dir DIR | --store URL] RUN|PATH\n");
	return 2;
}

static int resolve(struct cli *c, const char *state_dir, const char *arg, char *out, size_t len)
{
	json_t *req, *ans;

	if (strchr(arg, '/')) {
		snprintf(out, len, "%s", arg);
		return 0;
	}
	if (state_dir) {
		snprintf(out, len, "%s/runs/%s/journal", state_dir, arg);
		return 0;
	}
	req = json_pack("{s:s, s:s}", "op", "journal", "run_id", arg);
	ans = client_call(c, req);
	json_decref(req);
	if (!ans)
		return -1;
	snprintf(out, len, "%s", json_string_value(json_object_get(ans, "path")) ?: "");
	json_decref(ans);
	return 0;
}

/* Up to max characters of s on one line, with an ellipsis when cut. */
static void print_short(const char *s, size_t max)
{
	size_t i = 0;

	putchar('"');
	for (; s[i] && i < max; i++)
		putchar(s[i] == '\n' ? '|' : (unsigned char)s[i] < 0x20 ? '.' : s[i]);
	printf("\"%s", s[i] ? "..." : "");
}

static int print_record(void *arg, const struct journal_record *rec)
{
	bool as_json = *(bool *)arg;
	json_t *p = json_loadb(rec->payload, rec->len, 0, NULL);
	const char *step = json_string_value(json_object_get(p, "step_id"));
	char when[32], hash[2 * JOURNAL_HASH_BYTES + 1];
	time_t t = (time_t)(rec->time_ns / 1000000000ull);
	struct tm tm;

	sodium_bin2hex(hash, sizeof(hash), rec->hash, JOURNAL_HASH_BYTES);
	if (as_json) {
		json_t *o = json_pack("{s:I, s:s, s:I, s:s, s:b, s:O}", "seq", (json_int_t)rec->seq,
				      "type", journal_type_name(rec->type), "time_ns",
				      (json_int_t)rec->time_ns, "hash", hash, "compressed",
				      rec->compressed, "payload", p ? p : json_null());
		char *s = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
		puts(s ? s : "{}");
		free(s);
		json_decref(o);
		json_decref(p);
		return 0;
	}
	gmtime_r(&t, &tm);
	strftime(when, sizeof(when), "%H:%M:%S", &tm);
	printf("%5llu %s.%03u %-15s", (unsigned long long)rec->seq, when,
	       (unsigned)(rec->time_ns / 1000000 % 1000), journal_type_name(rec->type));
	switch (rec->type) {
	case JOURNAL_RUN_STARTED: {
		char *in = json_dumps(json_object_get(p, "input"), JSON_COMPACT | JSON_ENCODE_ANY);
		printf(" run %s instance %s input ", json_string_value(json_object_get(p, "run_id")),
		       json_string_value(json_object_get(p, "instance_id")));
		print_short(in ? in : "null", 60);
		free(in);
		break;
	}
	case JOURNAL_STEP_STARTED:
		printf(" %s (%s) attempt %lld key %.16s...%s", step,
		       json_string_value(json_object_get(p, "kind")),
		       (long long)json_integer_value(json_object_get(p, "attempt")),
		       json_string_value(json_object_get(p, "idempotency_key")) ?: "",
		       json_is_true(json_object_get(p, "reissued")) ? " (re-issued)" : "");
		break;
	case JOURNAL_STEP_COMPLETED: {
		json_t *u = json_object_get(p, "usage");
		printf(" %s attempt %lld", step, (long long)json_integer_value(json_object_get(p, "attempt")));
		if (json_is_integer(json_object_get(p, "exit_code")))
			printf(" exit %lld", (long long)json_integer_value(json_object_get(p, "exit_code")));
		if (json_is_string(json_object_get(p, "result"))) {
			printf(" result ");
			print_short(json_string_value(json_object_get(p, "result")), 48);
		} else if (json_object_get(p, "result_b64")) {
			printf(" result (binary, %zu base64 chars)",
			       strlen(json_string_value(json_object_get(p, "result_b64")) ?: ""));
		}
		if (u)
			printf(" %s/%s in %lld out %lld cost $%.6f",
			       json_string_value(json_object_get(u, "provider")) ?: "-",
			       json_string_value(json_object_get(u, "model")) ?: "-",
			       (long long)json_integer_value(json_object_get(u, "input_tokens")),
			       (long long)json_integer_value(json_object_get(u, "output_tokens")),
			       json_number_value(json_object_get(p, "cost_usd")));
		break;
	}
	case JOURNAL_STEP_FAILED:
		printf(" %s attempt %lld %s: %s", step,
		       (long long)json_integer_value(json_object_get(p, "attempt")),
		       json_is_true(json_object_get(p, "retryable")) ? "retryable" : "permanent",
		       json_string_value(json_object_get(p, "error")) ?: "");
		break;
	case JOURNAL_RUN_RESUMED:
		printf(" in instance %s%s%s", json_string_value(json_object_get(p, "instance_id")) ?: "?",
		       json_object_get(p, "in_flight") ? ", re-running " : "",
		       json_string_value(json_object_get(p, "in_flight")) ?: "");
		break;
	case JOURNAL_RUN_COMPLETED:
		printf(" %s exit %lld%s%s", json_string_value(json_object_get(p, "status")) ?: "?",
		       (long long)json_integer_value(json_object_get(p, "exit_code")),
		       json_object_get(p, "reason") ? ": " : "",
		       json_string_value(json_object_get(p, "reason")) ?: "");
		break;
	default: {
		printf(" ");
		print_short(rec->payload, 60);
	}
	}
	putchar('\n');
	json_decref(p);
	return 0;
}

int cmd_journal(struct cli *c, int argc, char **argv)
{
	const char *state_dir = NULL, *store = NULL, *arg = NULL;
	bool verify = false, as_json = false;
	struct journal_scan info;
	struct lerr e = { 0 };
	char path[4096], head[2 * JOURNAL_HASH_BYTES + 1];
	int err;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "verify") && i == 1)
			verify = true;
		else if (!strcmp(argv[i], "--json"))
			as_json = true;
		else if (!strcmp(argv[i], "--state-dir") && i + 1 < argc)
			state_dir = argv[++i];
		else if (!strcmp(argv[i], "--store") && i + 1 < argc)
			store = argv[++i];
		else if (argv[i][0] != '-' && !arg)
			arg = argv[i];
		else
			return journal_usage();
	}
	if (!arg || sodium_init() < 0)
		return journal_usage();
	if (store) {
		uint8_t *buf;
		size_t len;

		snprintf(path, sizeof(path), "%s (journal store)", arg);
		if ((err = journal_store_read(store, arg, &buf, &len, &e)) == 0) {
			err = journal_scan_buf(path, buf, len, verify ? NULL : print_record, &as_json, &info, &e);
			free(buf);
		}
	} else {
		if (resolve(c, state_dir, arg, path, sizeof(path)) < 0)
			return 1;
		err = journal_scan(path, verify ? NULL : print_record, &as_json, &info, &e);
	}
	if (err < 0) {
		fprintf(stderr, "lantern: %s\n", e.msg);
		if (verify)
			printf("FAILED: %llu records verified before the damage\n",
			       (unsigned long long)info.records);
		return 1;
	}
	sodium_bin2hex(head, sizeof(head), info.head, JOURNAL_HASH_BYTES);
	if (store && info.torn_bytes) {
		/* the store holds whole records only: anything else is damage */
		fprintf(stderr, "lantern: %s: %llu bytes after record %llu are not a whole record\n", path,
			(unsigned long long)info.torn_bytes, (unsigned long long)info.records);
		if (verify)
			printf("FAILED: %llu records verified before the damage\n",
			       (unsigned long long)info.records);
		return 1;
	}
	if (info.torn_bytes)
		fprintf(stderr, "lantern: %s: a torn tail of %llu bytes follows record %llu (a write cut "
			"by a crash; lanternd truncates it on recovery)\n", path,
			(unsigned long long)info.torn_bytes, (unsigned long long)info.records);
	if (verify) {
		char fmt[96];

		snprintf(fmt, sizeof(fmt), "format %u", info.version);
		if (info.free_bytes)
			snprintf(fmt + strlen(fmt), sizeof(fmt) - strlen(fmt), ", %llu bytes preallocated after them",
				 (unsigned long long)info.free_bytes);
		printf("ok: %llu records, %llu bytes (%s), CRC32C and SHA-256 chain verified, head %s\n",
		       (unsigned long long)info.records, (unsigned long long)info.bytes, fmt, head);
	}
	else if (!as_json)
		printf("head %s (%llu records)\n", head, (unsigned long long)info.records);
	return 0;
}
