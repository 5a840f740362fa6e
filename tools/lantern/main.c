/* main.c: the `lantern` command: global flags, then one subcommand. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "lantern/util.h"

#define DEFAULT_SOCKET "/run/lantern/lanternd.sock"

static const struct {
	const char *name;
	int (*fn)(struct cli *c, int argc, char **argv);
	const char *help;
} cmds[] = {
	{ "run", cmd_run, "run [--input FILE | --input-json JSON] FILE.yaml\n"
	  "                                    run a spec; stream its output; exit with its status" },
	{ "ps", cmd_ps, "ps [--json]                       list runs, their status and OOM kills" },
	{ "kill", cmd_kill, "kill RUN                          stop a run (status cancelled)" },
	{ "validate", cmd_validate, "validate FILE.yaml                check a spec without a daemon; print it normalized" },
	{ "audit", cmd_audit, "audit egress [--json] [RUN]       what an instance may reach and what it tried" },
	{ "egress", cmd_egress, "egress update RUN FILE.yaml       replace a running instance's egress policy" },
	{ "journal", cmd_journal, "journal [verify] [--json] RUN     print a run's journal; verify its CRCs and hash chain" },
	{ "step", cmd_step, "step ID [--kind K] -- CMD ARGS   (in a workload) run CMD once as a journaled step" },
	{ "image", cmd_image, "image import PATH | ls | rm REF   the node's images (OCI layout or tar, by digest)" },
	{ "node", cmd_node, "node [--json]                     isolation classes and runtime handlers this node advertises\n"
	  "  node containerd-config [...]    containerd's drop-in for this node's lantern-<class> handlers" },
	{ "logs", cmd_logs, "logs [-f] [-t] [--json] [--from SEQ] RUN\n"
	  "                                    a run's output with timestamps; -f follows, resuming after reconnects" },
	{ "trace", cmd_trace, "trace RUN [--json]                the run's spans as a tree with durations" },
	{ "cost", cmd_cost, "cost RUN [--json]                 what the run cost, by component" },
	{ "identity", cmd_identity, "identity RUN [--json]             an instance's identity token and public key\n"
	  "  identity verify TOKEN [--jwks FILE|URL]\n"
	  "                                    check a token offline (default keys: this node's)" },
	{ "receipt", cmd_receipt, "receipt RUN [--json]              a run's signed receipt (JWS)\n"
	  "  receipt verify FILE [--journal PATH] [--keys FILE|URL]\n"
	  "                                    check its signatures; with the journal, its head hash" },
	{ "secrets", cmd_secrets, "secrets exec -- CMD ARGS          (in a workload) run CMD with the spec's secrets in its environment" },
	{ "reset", cmd_reset, "reset [--state-dir D] [--bpffs D] [--cgroup-root N]\n"
	  "                                    remove everything a stopped lanternd left" },
};

static int usage(FILE *f)
{
	fprintf(f, "usage: lantern [--socket PATH] COMMAND [ARGS]\n\ncommands:\n");
	for (size_t i = 0; i < ARRAY_SIZE(cmds); i++)
		fprintf(f, "  %s\n", cmds[i].help);
	fprintf(f, "\nLANTERN_SOCKET in the environment works like --socket (default %s).\n",
		DEFAULT_SOCKET);
	fprintf(f, "With --control-plane URL (or LANTERN_CONTROL_PLANE), `run FILE.yaml --tenant T`\n"
		"goes through lantern-cp instead (operator token: LANTERN_CP_TOKEN or --token-file).\n");
	return f == stderr ? 2 : 0;
}

int main(int argc, char **argv)
{
	struct cli c = { .socket = getenv("LANTERN_SOCKET"),
			 .control_plane = getenv("LANTERN_CONTROL_PLANE") };
	int i = 1;

	log_set_prog("lantern");
	if (!c.socket || !*c.socket)
		c.socket = DEFAULT_SOCKET;
	for (; i < argc && argv[i][0] == '-'; i++) {
		if (!strcmp(argv[i], "--socket") && i + 1 < argc)
			c.socket = argv[++i];
		else if (!strncmp(argv[i], "--socket=", 9))
			c.socket = argv[i] + 9;
		else if (!strcmp(argv[i], "--control-plane") && i + 1 < argc)
			c.control_plane = argv[++i];
		else if (!strncmp(argv[i], "--control-plane=", 16))
			c.control_plane = argv[i] + 16;
		else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help"))
			return usage(stdout);
		else {
			fprintf(stderr, "lantern: unknown option %s\n", argv[i]);
			return usage(stderr);
		}
	}
	if (i >= argc)
		return usage(stderr);
	for (size_t k = 0; k < ARRAY_SIZE(cmds); k++)
		if (!strcmp(cmds[k].name, argv[i]))
			return cmds[k].fn(&c, argc - i, argv + i);
	fprintf(stderr, "lantern: unknown command \"%s\"\n", argv[i]);
	return usage(stderr);
}
