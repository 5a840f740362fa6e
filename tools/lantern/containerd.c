/* containerd.c: `lantern node containerd-config`: the containerd configuration (a
 * drop-in for containerd's `imports`, config version 2, containerd 1.6 and later) that
 * gives this node's lantern runtime handlers to containerd's CRI plugin: one handler
 * lantern-<class> per isolation class the node actually runs, each containerd's runc.v2
 * shim with lantern-oci as its runtime binary (which binds every container to its run
 * through lanternd) and a runtime root lantern-oci reads the class from. It runs without
 * lanternd (the DaemonSet's init container installs it before lanternd starts), so it
 * probes the runtimes itself, with the same --runtime-handler flags as lanternd.
 * --write-cni also writes the node bridge's CNI configuration the handlers point at.
 *
 * containerd 1.6 takes an imported file's section of a plugin in place of the main
 * file's, not merged into it, so the drop-in is the CRI plugin's whole section: the
 * node's default handler (runc) and CNI directories are restated in it (--cni-bin-dir,
 * --node-cni-conf-dir), and only lantern's pods get lantern's network. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "lantern/oci.h"
#include "lantern/spec.h"
#include "lantern/util.h"

#define MAX_MAP 8

static void usage(FILE *f)
{
	fprintf(f, "usage: lantern node containerd-config [--runtime-handler CLASS=HANDLER]... [--state-dir DIR]\n"
		   "         [--lantern-oci PATH] [--handler-root DIR] [--pause-image REF] [--cni-conf-dir DIR]\n"
		   "         [--net-bridge NAME] [--net-subnet CIDR] [--net-default-route] [--write-cni]\n"
		   "         [--cni-bin-dir DIR] [--node-cni-conf-dir DIR] [--restrict-oom-score-adj]\n"
		   "prints containerd's drop-in for the lantern-<class> handlers this node runs\n");
}

int cmd_node_containerd(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "runtime-handler", required_argument, NULL, 'r' }, { "state-dir", required_argument, NULL, 's' },
		{ "lantern-oci", required_argument, NULL, 'o' },     { "handler-root", required_argument, NULL, 'R' },
		{ "pause-image", required_argument, NULL, 'p' },     { "cni-conf-dir", required_argument, NULL, 'c' },
		{ "net-bridge", required_argument, NULL, 'b' },      { "net-subnet", required_argument, NULL, 'n' },
		{ "net-default-route", no_argument, NULL, 'd' },     { "write-cni", no_argument, NULL, 'w' },
		{ "cni-bin-dir", required_argument, NULL, 'B' },     { "node-cni-conf-dir", required_argument, NULL, 'N' },
		{ "restrict-oom-score-adj", no_argument, NULL, 'O' },
		{ "help", no_argument, NULL, 'h' },                  { 0 },
	};
	const char *map[MAX_MAP], *handlers[OCI_N_CLASSES];
	const char *state = "/var/lib/lantern", *oci = "/usr/local/bin/lantern-oci", *root = "/run/lantern-oci";
	const char *pause = "docker.io/lantern/pause:1", *cni_dir = "/etc/lantern/cni";
	const char *cni_bin = "/usr/lib/cni", *node_cni = "/etc/cni/net.d";
	struct oci_cni cni = { 0 };
	struct oci_handler probed[3];
	static const char *const names[] = { "runc", "runsc", "kata" };
	bool write_cni = false, restrict_oom = false;
	struct lerr e = { 0 };
	int nmap = 0, ch, served = 0;

	snprintf(cni.bridge, sizeof(cni.bridge), "lantern0");
	snprintf(cni.subnet, sizeof(cni.subnet), "10.213.0.0/24");
	optind = 1;
	while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (ch) {
		case 'r':
			if (nmap == MAX_MAP) {
				fprintf(stderr, "lantern: --runtime-handler: at most %d\n", MAX_MAP);
				return 2;
			}
			map[nmap++] = optarg;
			break;
		case 's': state = optarg; break;
		case 'o': oci = optarg; break;
		case 'R': root = optarg; break;
		case 'p': pause = optarg; break;
		case 'c': cni_dir = optarg; break;
		case 'b': snprintf(cni.bridge, sizeof(cni.bridge), "%s", optarg); break;
		case 'n': snprintf(cni.subnet, sizeof(cni.subnet), "%s", optarg); break;
		case 'd': cni.default_route = true; break;
		case 'w': write_cni = true; break;
		case 'B': cni_bin = optarg; break;
		case 'N': node_cni = optarg; break;
		case 'O': restrict_oom = true; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind < argc || oci[0] != '/' || root[0] != '/') {
		usage(stderr);
		return 2;
	}
	if (oci_class_map(map, nmap, handlers, &e) < 0) {
		fprintf(stderr, "lantern: %s\n", e.msg);
		return 2;
	}
	/* the same probe, against the same state roots, as lanternd's */
	for (size_t i = 0; i < ARRAY_SIZE(names); i++) {
		char r[PATH_MAX];

		snprintf(r, sizeof(r), "%s/oci/%s", state, names[i]);
		oci_handler_probe(&probed[i], names[i], r);
	}
	snprintf(cni.plugin_dir, sizeof(cni.plugin_dir), "%s", cni_bin);
	/* the OCI runtime's network and address pool: spawns and pods never share an address */
	snprintf(cni.data_dir, sizeof(cni.data_dir), "%s/cni", state);

	printf("# containerd drop-in for lantern's runtime handlers, by `lantern node containerd-config`.\n"
	       "# Each handler is containerd's runc.v2 shim running lantern-oci, which asks lanternd to bind\n"
	       "# every container to its run before the class's runtime runs it (docs/kubernetes.md).\n"
	       "version = 2\n\n"
	       "[plugins.\"io.containerd.grpc.v1.cri\"]\n"
	       "  # nothing is pulled on lantern nodes: the pause image comes from scripts/mkpause.sh\n"
	       "  sandbox_image = \"%s\"\n"
	       "%s"
	       "  [plugins.\"io.containerd.grpc.v1.cri\".cni]\n"
	       "    bin_dir = \"%s\"\n"
	       "    conf_dir = \"%s\"\n"
	       "  [plugins.\"io.containerd.grpc.v1.cri\".containerd]\n"
	       "    default_runtime_name = \"runc\"\n"
	       "  # the node's own pods, as containerd's defaults have them\n"
	       "  [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n"
	       "    runtime_type = \"io.containerd.runc.v2\"\n", pause,
	       /* a node whose root lacks CAP_SYS_RESOURCE (a node inside a container) cannot
		* give a pause process the CRI's oom_score_adj of -998 */
	       restrict_oom ? "  restrict_oom_score_adj = true\n" : "", cni_bin, node_cni);
	for (int c = 0; c < OCI_N_CLASSES; c++) {
		const char *cls = spec_isolation_name((enum spec_isolation)c);
		const struct oci_handler *h = NULL;

		for (size_t i = 0; i < ARRAY_SIZE(names); i++)
			if (handlers[c] && !strcmp(handlers[c], names[i]))
				h = &probed[i];
		if (!h || !h->available || h->kind == OCI_KATA) {
			printf("\n# isolation %s: not run on this node (%s)\n", cls,
			       !h ? "no handler serves it" : h->kind == OCI_KATA && h->available ?
			       "kata is not run through lantern-oci" : h->missing);
			continue;
		}
		served++;
		printf("\n# isolation %s: %s (%s)\n"
		       "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.lantern-%s]\n"
		       "  runtime_type = \"io.containerd.runc.v2\"\n"
		       "  # lantern-oci reads the run's identity from the pod's lantern.dev/ annotations\n"
		       "  pod_annotations = [\"lantern.dev/*\"]\n"
		       "  cni_conf_dir = \"%s\"\n"
		       "  cni_max_conf_num = 1\n"
		       "  [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.lantern-%s.options]\n"
		       "    BinaryName = \"%s\"\n"
		       "    Root = \"%s/lantern-%s\"\n"
		       "    SystemdCgroup = false\n",
		       cls, h->name, h->version, cls, cni_dir, cls, oci, root, cls);
	}
	if (!served)
		fprintf(stderr, "lantern: no isolation class can run on this node: containerd gets no lantern "
				"handler\n");
	if (write_cni) {
		char path[PATH_MAX + 32], *conf = oci_cni_conflist(&cni);
		int err;

		snprintf(path, sizeof(path), "%s/10-lantern.conflist", cni_dir);
		if (!conf || (err = util_mkdir_p(cni_dir, 0755)) < 0 ||
		    (err = util_write_file_atomic(path, conf, strlen(conf))) < 0) {
			fprintf(stderr, "lantern: cannot write %s\n", path);
			free(conf);
			return 1;
		}
		free(conf);
	}
	return served ? 0 : 1;
}
