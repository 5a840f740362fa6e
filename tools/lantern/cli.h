/* cli.h: the `lantern` command's subcommands, one file each. */
#ifndef LANTERN_CLI_H
#define LANTERN_CLI_H

#include <jansson.h>

struct cli {
	const char *socket;  /* --socket, $LANTERN_SOCKET, or the default */
	const char *control_plane; /* --control-plane URL (lantern-cp's API), $LANTERN_CONTROL_PLANE */
};

/* Each returns the process exit status. argv[0] is the subcommand's name. */
int cmd_validate(struct cli *c, int argc, char **argv);
int cmd_run(struct cli *c, int argc, char **argv);
/* cprun.c: `run` through a control plane (--control-plane URL) */
int cp_run(struct cli *c, int argc, char **argv);
int cmd_ps(struct cli *c, int argc, char **argv);
int cmd_kill(struct cli *c, int argc, char **argv);
int cmd_audit(struct cli *c, int argc, char **argv);
int cmd_egress(struct cli *c, int argc, char **argv);
int cmd_reset(struct cli *c, int argc, char **argv);
/* reset_oci.c: containers, network namespaces, bridge and bundles of OCI spawns under
 * STATE. */
int reset_oci(const char *state, const char *cgroot);
int cmd_image(struct cli *c, int argc, char **argv);
int cmd_node(struct cli *c, int argc, char **argv);
/* containerd.c: `node containerd-config` (argv[0] is "containerd-config"). */
int cmd_node_containerd(int argc, char **argv);
int cmd_logs(struct cli *c, int argc, char **argv);
int cmd_journal(struct cli *c, int argc, char **argv);
int cmd_step(struct cli *c, int argc, char **argv);
int cmd_trace(struct cli *c, int argc, char **argv);
int cmd_cost(struct cli *c, int argc, char **argv);

#endif
