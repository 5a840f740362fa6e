/* reset.c: `lantern reset`: removes everything a stopped lanternd left on the node:
 * OCI containers, network namespaces and the bridge (reset_oci.c), kills and removes
 * instance cgroups and the subtree (in every hierarchy), unmounts the instances'
 * identity tmpfs, unpins every program, map and link under the pin root (which ends
 * enforcement), and optionally deletes the state directory. Refuses while a lanternd still answers on the socket. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "cli.h"
#include "lantern/cgroup.h"
#include "lantern/jose.h"
#include "lantern/lbpf.h"
#include "lantern/util.h"

/* The identity tmpfs of this state dir's node key, wherever --identity-dir put them:
 * each is mounted at .../<first 12 characters of the node key's id>/<instance>. */
static int reset_identity(const char *state)
{
	char path[4200], *pem = NULL, kid[JOSE_KID_LEN + 1], line[8192], parent[4200] = "";
	uint8_t sk[JOSE_SK_BYTES], pk[JOSE_PK_BYTES];
	size_t len;
	FILE *f;
	int rc = 0;

	snprintf(path, sizeof(path), "%s/node.key", state);
	if (util_read_file(path, &pem, &len) < 0)
		return 0;
	rc = jose_pem_read_private(pem, sk, pk);
	free(pem);
	if (rc < 0)
		return 0;
	jose_kid(pk, kid);
	kid[12] = '\0';
	if (!(f = fopen("/proc/self/mountinfo", "re")))
		return 1;
	while (fgets(line, sizeof(line), f)) {
		char mnt[4096], src[256], *dash = strstr(line, " - "), *slash;

		if (!dash || sscanf(line, "%*s %*s %*s %*s %4095s", mnt) != 1 ||
		    sscanf(dash + 3, "%*s %255s", src) != 1 || strcmp(src, "lantern-identity") ||
		    !(slash = strrchr(mnt, '/')) || slash - mnt < 13 || strncmp(slash - 12, kid, 12) ||
		    slash[-13] != '/')
			continue;
		if (umount2(mnt, MNT_DETACH) < 0 || rmdir(mnt) < 0) {
			fprintf(stderr, "lantern: reset: identity %s: %s\n", mnt, strerror(errno));
			rc = 1;
		}
		snprintf(parent, sizeof(parent), "%.*s", (int)(slash - mnt), mnt);
	}
	fclose(f);
	if (parent[0])
		rmdir(parent);
	return rc;
}

int cmd_reset(struct cli *c, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "state-dir", required_argument, NULL, 's' },
		{ "bpffs", required_argument, NULL, 'b' },
		{ "cgroup-root", required_argument, NULL, 'c' },
		{ 0 },
	};
	const char *state = NULL, *bpffs = "/sys/fs/bpf/lantern", *root = "lantern";
	struct cgroup_node node;
	struct lerr e = { 0 };
	char **names = NULL;
	size_t n = 0;
	int opt, rc = 0;

	optind = 1;
	while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (opt) {
		case 's': state = optarg; break;
		case 'b': bpffs = optarg; break;
		case 'c': root = optarg; break;
		default:
			fprintf(stderr, "usage: lantern reset [--state-dir DIR] [--bpffs DIR] [--cgroup-root NAME]\n");
			return 2;
		}
	}
	if (util_unix_socket_alive(c->socket)) {
		fprintf(stderr, "lantern: reset: lanternd still answers on %s; stop it first\n", c->socket);
		return 1;
	}
	/* the runtimes first: they kill their containers and remove their cgroups. The
	 * default state dir is assumed only for the default subtree: its runtime roots
	 * would hold another lanternd's containers. */
	if (state || !strcmp(root, "lantern"))
		rc |= reset_oci(state ? state : "/var/lib/lantern", root);
	if (cgroup_node_open(root, &node, &e) == 0) {
		if (cgroup_node_list(&node, &names, &n) == 0) {
			for (size_t i = 0; i < n; i++) {
				struct cgroup_inst inst;

				if (cgroup_inst_open(&node, names[i], &inst, &e) == 0 &&
				    cgroup_inst_destroy(&inst, 5000, &e) < 0) {
					fprintf(stderr, "lantern: reset: %s\n", e.msg);
					rc = 1;
				}
				free(names[i]);
			}
			free(names);
		}
		/* what runc made in the hierarchies lanternd does not manage goes too */
		if (cgroup_node_sweep(&node, &e) < 0) {
			fprintf(stderr, "lantern: reset: %s\n", e.msg);
			rc = 1;
		}
		if (cgroup_node_remove(&node, &e) < 0) {
			fprintf(stderr, "lantern: reset: %s\n", e.msg);
			rc = 1;
		}
	} else {
		fprintf(stderr, "lantern: reset: %s\n", e.msg);
		rc = 1;
	}
	if (state || !strcmp(root, "lantern"))
		rc |= reset_identity(state ? state : "/var/lib/lantern");
	if (lbpf_unpin_all(bpffs, &e) < 0) {
		fprintf(stderr, "lantern: reset: %s\n", e.msg);
		rc = 1;
	}
	if (state) {
		int err = util_rm_rf(state);
		if (err < 0) {
			fprintf(stderr, "lantern: reset: removing %s: %s\n", state, strerror(-err));
			rc = 1;
		}
	}
	if (!rc)
		printf("removed: instances, identities and cgroup subtree \"%s\", pins under %s%s%s\n", root, bpffs,
		       state ? ", state " : "", state ? state : "");
	return rc;
}
