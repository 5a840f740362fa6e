/* logs.c: `lantern logs [-f] [-t] [--json] [--from SEQ] RUN`: a run's output records.
 * With -f it follows until the run ends, and if the connection to lanternd drops (a
 * restart), it reconnects and asks again from the record after the last one it
 * printed: nothing is shown twice, nothing is skipped. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "client.h"

struct logs_opts {
	bool follow, stamps, json;
};

static void print_record(const struct logs_opts *o, json_t *m)
{
	const char *data = json_string_value(json_object_get(m, "data")) ?: "";
	const char *t = json_string_value(json_object_get(m, "t")) ?: "0.0";
	int fd = (int)json_integer_value(json_object_get(m, "fd"));
	size_t dlen = strlen(data), blen;
	unsigned char *bin = malloc(dlen + 1);
	FILE *out = fd == 2 ? stderr : stdout;

	if (!bin || sodium_base642bin(bin, dlen + 1, data, dlen, NULL, &blen, NULL,
				      sodium_base64_VARIANT_ORIGINAL) < 0) {
		free(bin);
		return;
	}
	if (o->json) {
		json_t *j = json_pack("{s:I, s:s, s:s, s:s%}", "seq", json_integer_value(json_object_get(m, "seq")),
				      "t", t, "stream", fd == 2 ? "stderr" : "stdout", "data", (char *)bin, blen);
		if (j) {
			json_dumpf(j, stdout, JSON_COMPACT | JSON_SORT_KEYS);
			printf("\n");
			json_decref(j);
		}
	} else {
		if (o->stamps) {
			time_t sec = (time_t)strtoll(t, NULL, 10);
			const char *dot = strchr(t, '.');
			struct tm tm;
			char buf[32];

			gmtime_r(&sec, &tm);
			strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
			fprintf(out, "%s.%.6sZ ", buf, dot ? dot + 1 : "000000");
		}
		fwrite(bin, 1, blen, out);
	}
	fflush(out);
	free(bin);
}

int cmd_logs(struct cli *c, int argc, char **argv)
{
	struct logs_opts o = { 0 };
	const char *run = NULL;
	long long next = 0;
	int i, tries = 0;

	for (i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "-f") || !strcmp(argv[i], "--follow"))
			o.follow = true;
		else if (!strcmp(argv[i], "-t") || !strcmp(argv[i], "--timestamps"))
			o.stamps = true;
		else if (!strcmp(argv[i], "--json"))
			o.json = true;
		else if (!strcmp(argv[i], "--from") && i + 1 < argc)
			next = strtoll(argv[++i], NULL, 10);
		else if (argv[i][0] != '-' && !run)
			run = argv[i];
		else
			break;
	}
	if (!run || i < argc) {
		fprintf(stderr, "usage: lantern logs [-f] [-t] [--json] [--from SEQ] RUN\n");
		return 2;
	}
	if (sodium_init() < 0)
		return 1;
	for (;;) {
		struct client_conn cc;
		json_t *req = json_pack("{s:s, s:s, s:I, s:b}", "op", "logs", "run_id", run, "from",
					(json_int_t)next, "follow", o.follow), *m;
		int rc = client_open(c, req, &cc);

		json_decref(req);
		if (rc == 0) {
			tries = 0;
			while ((m = client_next(&cc))) {
				const char *type = json_string_value(json_object_get(m, "type")) ?: "";

				if (!strcmp(type, "log")) {
					print_record(&o, m);
					next = json_integer_value(json_object_get(m, "seq")) + 1;
				} else if (!strcmp(type, "gap")) {
					fprintf(stderr, "lantern: records %lld to %lld were rotated away (--log-max)\n",
						(long long)json_integer_value(json_object_get(m, "from")),
						(long long)json_integer_value(json_object_get(m, "to")) - 1);
					next = json_integer_value(json_object_get(m, "to"));
				} else if (!strcmp(type, "end")) {
					json_decref(m);
					client_close(&cc);
					return 0;
				} else if (!strcmp(type, "error")) {
					fprintf(stderr, "lantern: %s\n", json_string_value(json_object_get(m, "error")) ?: "error");
					json_decref(m);
					client_close(&cc);
					return 1;
				}
				json_decref(m);
			}
			client_close(&cc);
		}
		if (!o.follow || ++tries > 240)
			break;
		if (tries == 1)
			fprintf(stderr, "lantern: lost lanternd; reconnecting to resume at record %lld\n", next);
		usleep(250 * 1000);
	}
	fprintf(stderr, "lantern: lost the connection to lanternd before the end of the logs\n");
	return 1;
}
