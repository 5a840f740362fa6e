/* ctdlib.c: see ctdlib.h. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "ctdlib.h"
#include "lantern/util.h"

static struct tl_ctd *the_ctd;

/* What containerd leaves if the test is cut short: its shims and their sandboxes,
 * mounts under its root, its network namespaces (kept under its state directory), the
 * bridge its CNI made. ([c]ontainerd, [r]oot: no pattern may match this shell's own
 * command line, or the kill ends it before the rest runs.) */
static void ctd_cleanup(void)
{
	struct tl_ctd *c = the_ctd;

	if (!c)
		return;
	tl_sh(NULL, NULL,
	      "for p in $(pgrep -f '[c]ontainerd-shim-runc-v2 .*-address %s'); do kill -9 $p; done; "
	      "pkill -9 -f '[r]oot=%s' ; sleep 0.3; "
	      "for m in $(grep '%s' /proc/mounts | awk '{print $2}' | sort -r); do umount -l $m; done; "
	      "ip link del %s 2>/dev/null; rm -rf %s", c->sock, c->hroot, c->dir, c->net->bridge, c->dir);
}

void tl_ctd_init(struct tl_ctd *c, struct tl_env *t, const struct tl_net *net)
{
	c->t = t;
	c->net = net;
	snprintf(c->dir, sizeof(c->dir), "%s/ctd", t->dir);
	snprintf(c->sock, sizeof(c->sock), "%s/containerd.sock", c->dir);
	snprintf(c->endpoint, sizeof(c->endpoint), "unix://%s", c->sock);
	snprintf(c->ctr, sizeof(c->ctr), "ctr -a %s -n k8s.io", c->sock);
	snprintf(c->hroot, sizeof(c->hroot), "%s/h", c->dir);
	util_mkdir_p(c->dir, 0700);
	the_ctd = c;
	tl_on_exit(ctd_cleanup);
}

int tl_ctd_images(struct tl_ctd *c, char **out)
{
	char dir[400];

	snprintf(dir, sizeof(dir), "%s/img", c->t->dir);
	tl_mkimage(dir, "docker.io/test/busybox:1", c->image, sizeof(c->image));
	return tl_sh(out, NULL, "tar -C %s -cf %s/img.tar . && scripts/mkpause.sh %s/pause.tar", dir, c->t->dir,
		     c->t->dir);
}

int tl_ctd_config(struct tl_ctd *c, char **out, char **err)
{
	struct tl_env *t = c->t;
	int rc = tl_sh(out, err,
		       "%s/lantern node containerd-config --state-dir %s --handler-root %s --lantern-oci %s/lantern-oci "
		       "--cni-conf-dir %s/cni --write-cni --net-bridge %s --net-subnet %s --node-cni-conf-dir %s/nodecni "
		       "--restrict-oom-score-adj > %s/dropin.toml && cat %s/dropin.toml",
		       t->build, t->state, c->hroot, t->build, c->dir, c->net->bridge, c->net->subnet, c->dir, c->dir,
		       c->dir);

	/* network namespaces under containerd's own state, so this test finds its own */
	tl_sh(NULL, NULL, "sed -i 's|^  sandbox_image = .*|&\\n  netns_mounts_under_state_dir = true|' %s/dropin.toml",
	      c->dir);
	return rc;
}

int tl_ctd_start(struct tl_ctd *c)
{
	char cfg[512], log[512], *out = NULL;
	int rc;

	snprintf(cfg, sizeof(cfg), "%s/config.toml", c->dir);
	snprintf(log, sizeof(log), "%s/containerd.log", c->dir);
	tl_file(c->t, "ctd/config.toml",
		"version = 2\nroot = \"%s/root\"\nstate = \"%s/state\"\nimports = [\"%s/dropin.toml\"]\n"
		"disabled_plugins = [\"io.containerd.snapshotter.v1.btrfs\", \"io.containerd.snapshotter.v1.zfs\", "
		"\"io.containerd.snapshotter.v1.aufs\", \"io.containerd.snapshotter.v1.devmapper\", "
		"\"io.containerd.tracing.processor.v1.otlp\"]\n"
		"[grpc]\n  address = \"%s\"\n[ttrpc]\n  address = \"%s.ttrpc\"\n",
		c->dir, c->dir, c->dir, c->sock, c->sock);
	c->pid = fork();
	if (c->pid == 0) {
		FILE *f = freopen(log, "w", stderr);

		(void)f;
		setenv("LANTERN_SOCKET", c->t->sock, 1);
		execlp("containerd", "containerd", "--config", cfg, (char *)NULL);
		_exit(127);
	}
	tl_child_track(c->pid, SIGTERM);
	for (int i = 0; i < 200 && !util_unix_socket_alive(c->sock); i++)
		usleep(50000);
	rc = tl_sh(&out, NULL, "%s version >/dev/null && %s images import %s/pause.tar && %s images import %s/img.tar && "
		   "%s images tag docker.io/test/busybox:1 %s", c->ctr, c->ctr, c->t->dir, c->ctr, c->t->dir, c->ctr,
		   c->image);
	free(out);
	return rc;
}
