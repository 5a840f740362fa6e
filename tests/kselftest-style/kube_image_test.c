/* kube_image_test: the DaemonSet's image (scripts/mkimage-lanternd.sh, `make image`) in a
 * real containerd. Asserts that building it twice from the same binaries gives the same
 * digest and the same archive, byte for byte; that Debian's containerd (a private
 * instance started here: its own root, state and socket, the CRI plugin off) imports
 * the archive under that digest; that `lanternd --version` and the runtimes the image
 * carries run inside it (their shared libraries are all there); and that the init
 * container's lantern-install installs the host's half (or, in an image built without
 * lantern-oci, refuses and installs nothing). */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "tap.h"
#include "testlib.h"
#include "lantern/util.h"
#include "lantern/version.h"

/* one point less in a tree without lantern-oci (the CRI work): nothing to install twice */
#define PLAN 7

static struct tl_env T;
static pid_t containerd;
static char sock[400], ns[64];

static void stop_containerd(void)
{
	if (containerd > 0) {
		tl_sh(NULL, NULL, "ctr -a %s -n %s containers ls -q | xargs -r ctr -a %s -n %s containers rm >/dev/null 2>&1",
		      sock, ns, sock, ns);
		tl_child_stop(containerd, SIGTERM);
	}
	containerd = 0;
}

static pid_t containerd_start(void)
{
	const char *cfg = tl_file(&T, "containerd.toml",
				  "version = 2\nroot = \"%s/ctrd/root\"\nstate = \"%s/ctrd/state\"\n"
				  "disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n"
				  "[grpc]\n  address = \"%s\"\n[ttrpc]\n  address = \"%s.ttrpc\"\n"
				  "[plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"%s/ctrd/opt\"\n",
				  T.dir, T.dir, sock, sock, T.dir);
	char cmd[1024];
	pid_t pid;

	snprintf(cmd, sizeof(cmd), "exec containerd --config %s >>%s/containerd.log 2>&1", cfg, T.dir);
	if ((pid = fork()) == 0) {
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	tl_child_track(pid, SIGTERM);
	for (int i = 0; i < 200; i++, usleep(50000))
		if (tl_sh(NULL, NULL, "ctr -a %s version >/dev/null 2>&1", sock) == 0)
			return pid;
	return -1;
}

/* `ctr run` of the image with args; its output in *out. */
static int in_image(char **out, const char *mounts, const char *args)
{
	static int n;

	return tl_sh(out, NULL, "ctr -a %s -n %s run --rm %s localhost/lantern/lanternd:%s image-test-%d-%d %s 2>&1",
		     sock, ns, mounts ? mounts : "", LANTERN_VERSION, getpid(), n++, args);
}

int main(void)
{
	const char *missing = tl_env_missing();
	char *d1 = NULL, *d2 = NULL, *out = NULL, *ls = NULL;
	char img1[400], img2[400];
	bool ok, have_oci;
	int rc;

	have_oci = access("tools/lantern-oci", F_OK) == 0;
	tap_plan(have_oci ? PLAN : PLAN - 1);
	if (missing || access("/usr/bin/containerd", X_OK) != 0 || access("/usr/bin/ctr", X_OK) != 0) {
		for (int i = 0; i < (have_oci ? PLAN : PLAN - 1); i++)
			tap_skip(missing ? missing : "containerd and ctr are not installed (make deps)", "kube_image_test");
		return tap_done();
	}
	tl_env_init(&T, "kimage");
	tl_on_exit(stop_containerd);
	snprintf(sock, sizeof(sock), "%s/containerd.sock", T.dir);
	snprintf(ns, sizeof(ns), "lantern-kimage-test-%d", getpid());
	snprintf(img1, sizeof(img1), "%s/img1", T.dir);
	snprintf(img2, sizeof(img2), "%s/img2", T.dir);

	/* reproducible */
	ok = tl_sh(NULL, NULL, "bash scripts/mkimage-lanternd.sh %s %s >/dev/null 2>&1", T.build, img1) == 0 &&
	     tl_sh(NULL, NULL, "bash scripts/mkimage-lanternd.sh %s %s >/dev/null 2>&1", T.build, img2) == 0 &&
	     tl_sh(&d1, NULL, "cat %s/digest", img1) == 0 && tl_sh(&d2, NULL, "cat %s/digest", img2) == 0 &&
	     !strcmp(d1, d2) && tl_sh(NULL, NULL, "cmp -s %s/lanternd.tar %s/lanternd.tar", img1, img2) == 0;
	tap_ok(ok, "the image built twice from the same binaries: the same digest (%s) and the same archive, "
	       "byte for byte", tl_oneline(d1));

	/* imported under that digest */
	containerd = containerd_start();
	ok = containerd > 0 && tl_sh(NULL, NULL, "ctr -a %s -n %s images import %s/lanternd.tar >/dev/null 2>&1",
				     sock, ns, img1) == 0 &&
	     tl_sh(&ls, NULL, "ctr -a %s -n %s images ls", sock, ns) == 0 && d1 && tl_has(ls, "lantern/lanternd:" LANTERN_VERSION) &&
	     (d1[strcspn(d1, "\n")] = '\0', tl_has(ls, d1));
	tap_ok(ok, "a private containerd (ctr images import) takes the archive as localhost/lantern/lanternd:"
	       LANTERN_VERSION " under that digest (%s)", tl_oneline(ls));

	/* its programs run inside it */
	rc = in_image(&out, NULL, "/usr/bin/lanternd --version");
	tap_ok(rc == 0 && tl_has(out, "lanternd " LANTERN_VERSION), "lanternd --version in the image, through ctr "
	       "run: \"%s\"", tl_oneline(out));
	free(out);
	rc = in_image(&out, NULL, "/opt/lantern/bin/runc --version");
	tap_ok(rc == 0 && tl_has(out, "runc version"), "runc runs in the image: its shared libraries are there (%s)",
	       tl_oneline(out));
	free(out);
	rc = in_image(&out, NULL, "/opt/lantern/bin/runsc --version");
	ok = rc == 0 && tl_has(out, "runsc version");
	free(out);
	rc = in_image(&out, "--env CNI_COMMAND=VERSION", "/usr/lib/cni/bridge");
	tap_ok(ok && rc == 0 && tl_has(out, "cniVersion"), "runsc and the CNI plugins run in the image (%s)",
	       tl_oneline(out));
	free(out);

	/* the init container's job */
	{
		char host[400], mounts[600];

		snprintf(host, sizeof(host), "%s/host", T.dir);
		util_mkdir_p(host, 0755);
		snprintf(mounts, sizeof(mounts), "--mount type=bind,src=%s,dst=/host,options=rbind:rw", host);
		rc = in_image(&out, mounts, "/usr/bin/lantern-install --host /host");
		if (have_oci) {
			tap_ok(rc == 0 && tl_sh(NULL, NULL, "test -x %s/opt/lantern/bin/lantern-oci && test -x "
						"%s/opt/lantern/bin/runc && test -s %s/etc/containerd/conf.d/lantern.toml",
						host, host, host) == 0,
			       "lantern-install puts lantern-oci, runc, runsc and containerd's drop-in on the host (%s)",
			       tl_oneline(out));
			free(out);
			rc = in_image(&out, mounts, "/usr/bin/lantern-install --host /host");
			tap_ok(rc == 0 && tl_has(out, "lantern.toml unchanged"),
			       "run again (a pod restart), it changes nothing (%s)", tl_oneline(out));
		} else {
			tap_ok(rc != 0 && tl_has(out, "no /usr/bin/lantern-oci") &&
			       tl_sh(NULL, NULL, "test -z \"$(find %s -type f)\"", host) == 0,
			       "an image built without lantern-oci: lantern-install refuses and installs nothing, so "
			       "the DaemonSet's pod does not start (%s)", tl_oneline(out));
		}
		free(out);
	}
	free(d1);
	free(d2);
	free(ls);
	stop_containerd();
	tl_env_cleanup(&T);
	return tap_done();
}
