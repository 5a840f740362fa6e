/* reset_oci.c: the part of `lantern reset` that removes what OCI spawns leave when
 * lanternd is gone (killed, crashed, or stopped with spawns running): containers under
 * lanternd's runtime state roots (STATE/oci/<handler>), the spawns' network namespaces
 * (<cgroup-root>-<instance> in /run/netns) with their veths and address leases, the
 * node bridge once no port is left on it, the runs' shims and bundles. (The cgroup
 * directories runc makes in the hierarchies lanternd does not manage are removed by
 * reset.c through cgroup_node_sweep.)
 *
 * What to look for comes from STATE/oci/net.json, written by lanternd at start (bridge,
 * subnet, namespace prefix); without it, namespaces are found by the prefix made from
 * the cgroup root, the same rule lanternd uses. */
#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <jansson.h>

#include "cli.h"
#include "lantern/oci.h"
#include "lantern/spawn.h"
#include "lantern/util.h"

static int delete_containers(const char *state, bool *any)
{
	static const char *const names[] = { "runc", "runsc" };
	int rc = 0;

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		struct oci_handler h;
		char root[PATH_MAX + 16], **ids = NULL;
		size_t n = 0;
		struct stat st;

		snprintf(root, sizeof(root), "%s/oci/%s", state, names[i]);
		if (stat(root, &st) < 0)
			continue;
		oci_handler_probe(&h, names[i], root);
		if (!h.available || oci_list(&h, &ids, &n) < 0)
			continue;
		for (size_t k = 0; k < n; k++) {
			int err = oci_delete(&h, ids[k]);

			if (err < 0 && err != -ENOENT) {
				fprintf(stderr, "lantern: reset: %s delete %s: %s\n", names[i], ids[k], strerror(-err));
				rc = 1;
			} else {
				*any = true;
			}
			free(ids[k]);
		}
		free(ids);
	}
	return rc;
}

/* The CNI settings lanternd ran with; false if it never wrote them. */
static bool load_net(const char *state, const char *cgroot, struct oci_cni *c)
{
	char path[PATH_MAX + 16];
	json_t *j;
	char *p;

	memset(c, 0, sizeof(*c));
	snprintf(c->plugin_dir, sizeof(c->plugin_dir), "/usr/lib/cni");
	snprintf(c->data_dir, sizeof(c->data_dir), "%s/cni", state);
	snprintf(c->netns_prefix, sizeof(c->netns_prefix), "%s-", cgroot);
	for (p = c->netns_prefix; *p; p++)
		if (*p == '/')
			*p = '-';
	snprintf(path, sizeof(path), "%s/oci/net.json", state);
	if (!(j = json_load_file(path, 0, NULL)))
		return false;
	snprintf(c->bridge, sizeof(c->bridge), "%s", json_string_value(json_object_get(j, "bridge")) ?: "");
	snprintf(c->subnet, sizeof(c->subnet), "%s", json_string_value(json_object_get(j, "subnet")) ?: "");
	c->default_route = json_is_true(json_object_get(j, "default_route"));
	json_decref(j);
	return c->bridge[0] && c->subnet[0];
}

static int ip(const char *a, const char *b, const char *c, const char *d)
{
	char out[512];

	return oci_exec((char *[]){ "/usr/sbin/ip", (char *)a, (char *)b, (char *)c, (char *)d, NULL }, NULL, NULL,
			out, sizeof(out));
}

static int delete_networks(const char *state, const char *cgroot, bool *any)
{
	struct oci_cni c;
	bool have_conf = load_net(state, cgroot, &c);
	char **insts = NULL, path[PATH_MAX];
	size_t n = 0;
	int rc = 0;
	DIR *dir;

	if (oci_cni_list(&c, &insts, &n) == 0) {
		for (size_t k = 0; k < n; k++) {
			char name[128];

			snprintf(name, sizeof(name), "%s%s", c.netns_prefix, insts[k]);
			/* DEL with the configuration also releases the lease and NAT rules;
			 * without it, deleting the namespace still takes its veth along */
			if ((have_conf ? oci_cni_del(&c, insts[k]) : ip("netns", "delete", name, NULL)) != 0) {
				fprintf(stderr, "lantern: reset: network namespace %s: not removed\n", name);
				rc = 1;
			}
			*any = true;
			free(insts[k]);
		}
		free(insts);
	}
	if (!have_conf)
		return rc;
	/* the bridge goes only once no veth of anyone is attached to it */
	snprintf(path, sizeof(path), "/sys/class/net/%s/brif", c.bridge);
	if ((dir = opendir(path))) {
		struct dirent *de;
		bool ports = false;

		while ((de = readdir(dir)))
			if (de->d_name[0] != '.')
				ports = true;
		closedir(dir);
		if (!ports && ip("link", "delete", c.bridge, NULL) == 0)
			*any = true;
	}
	return rc;
}

/* The shims of runs still going (the workload's supervisor lives outside the instance
 * cgroup), and STATE/runs/<id>/bundle of every run: the runtime reads it only while it
 * runs. A shim is killed only if /proc says it is that run's (spawn_adopt checks). */
static void delete_shims_and_bundles(const char *state, bool *any)
{
	char path[PATH_MAX];
	struct dirent *de;
	DIR *d;

	snprintf(path, sizeof(path), "%s/runs", state);
	if (!(d = opendir(path)))
		return;
	while ((de = readdir(d))) {
		char b[PATH_MAX + 300];

		if (de->d_name[0] == '.')
			continue;
		pid_t pid;
		int pidfd;

		snprintf(b, sizeof(b), "%s/%s", path, de->d_name);
		if (spawn_adopt(b, &pid, &pidfd) == 0) {
			struct pollfd p = { .fd = pidfd, .events = POLLIN };

			if (syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0) == 0)
				poll(&p, 1, 2000);
			close(pidfd);
			*any = true;
		}
		snprintf(b, sizeof(b), "%s/%s/bundle", path, de->d_name);
		util_rm_rf(b);
	}
	closedir(d);
}

int reset_oci(const char *state, const char *cgroot)
{
	bool any = false;
	int rc = 0;

	rc |= delete_containers(state, &any);
	rc |= delete_networks(state, cgroot, &any);
	delete_shims_and_bundles(state, &any);
	if (any)
		printf("removed: OCI containers, network namespaces and shims of \"%s\"\n", cgroot);
	return rc;
}
