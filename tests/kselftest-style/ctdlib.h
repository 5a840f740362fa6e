/* ctdlib.h: a private containerd for the tests whose pods go through containerd's CRI
 * (cri_test, kube_pods_test): Debian's containerd 1.6 with its own root, state, socket
 * and config, the drop-in of `lantern node containerd-config` (lantern-oci as every
 * lantern-<class> handler's runtime, the node CNI on the test's bridge), the pause image
 * built from the tree (scripts/mkpause.sh) and the workload image (scripts/mkimage.sh)
 * imported with ctr. What it leaves is removed at the end of the test. */
#ifndef LANTERN_TEST_CTDLIB_H
#define LANTERN_TEST_CTDLIB_H

#include <stdbool.h>
#include <sys/types.h>

#include "testlib.h"

struct tl_ctd {
	struct tl_env *t;
	const struct tl_net *net;
	char dir[300];      /* T.dir/ctd: root, state, config, log */
	char sock[400];     /* its CRI and API socket */
	char endpoint[420]; /* unix://SOCK */
	char ctr[600];      /* "ctr -a SOCK -n k8s.io" */
	char hroot[400];    /* the handlers' runtime roots (BASE of BASE/lantern-<class>) */
	char image[256];    /* the workload image: docker.io/test/busybox@sha256:HEX */
	pid_t pid;
};

/* Names everything under t->dir/ctd and makes it; its cleanup runs at the end of the
 * test (one tl_ctd per test). */
void tl_ctd_init(struct tl_ctd *c, struct tl_env *t, const struct tl_net *net);
/* Builds the workload and pause images; the scripts' output in *out (may be NULL). */
int tl_ctd_images(struct tl_ctd *c, char **out);
/* `lantern node containerd-config` into DIR/dropin.toml, printed to *out (and its
 * stderr to *err; either may be NULL); the network namespaces kept under containerd's
 * state so the test finds its own. Returns its exit status. */
int tl_ctd_config(struct tl_ctd *c, char **out, char **err);
/* Starts containerd (LANTERN_SOCKET = the env's lanternd socket: lantern-oci's) and
 * imports both images; 0 once ctr reaches it and the images are in. */
int tl_ctd_start(struct tl_ctd *c);

#endif
