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
/* identity.c: `identity RUN`, `identity verify`, `receipt RUN`, `receipt verify` */
int cmd_identity(struct cli *c, int argc, char **argv);
int cmd_receipt(struct cli *c, int argc, char **argv);
/* secrets.c: `secrets exec -- CMD`, inside a workload */
int cmd_secrets(struct cli *c, int argc, char **argv);

/* hclient.c: one HTTP exchange on the harness socket sock; headers are extra header
 * lines ("Name: value\r\n"...) or NULL. -EAGAIN when it should be retried (no
 * answer: lanternd restarting), else 0 with *status and *resp (the JSON body). */
int harness_http(const char *sock, const char *method, const char *path, const char *body,
		 const char *headers, int *status, json_t **resp);

#endif
