/* validate.c: `lantern validate FILE.yaml`: checks an AgentSpec without a daemon.
 * Prints the normalized spec as JSON (indented, keys sorted) and exits 0, or prints
 * every error, one per line, on stderr and exits 1. */
#include <stdio.h>
#include <stdlib.h>

#include "cli.h"
#include "lantern/spec.h"

int cmd_validate(struct cli *c, int argc, char **argv)
{
	struct spec_errors errs;
	struct spec *s;
	char *text;

	if (argc != 2) {
		fprintf(stderr, "usage: lantern validate FILE.yaml\n");
		return 2;
	}
	if (spec_parse_file(argv[1], &s, &errs)) {
		for (size_t i = 0; i < errs.n; i++)
			fprintf(stderr, "%s\n", errs.msg[i]);
		if (!errs.n)
			fprintf(stderr, "%s: cannot validate: out of memory\n", argv[1]);
		spec_errors_free(&errs);
		return 1;
	}
	text = json_dumps(s->json, JSON_INDENT(2) | JSON_SORT_KEYS);
	spec_free(s);
	if (!text) {
		fprintf(stderr, "%s: cannot print the normalized spec: out of memory\n", argv[1]);
		return 1;
	}
	printf("%s\n", text);
	free(text);
	return 0;
}
