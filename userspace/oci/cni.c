/* cni.c: a spawn's network namespace joined to the node bridge through Debian's CNI
 * plugins, run as the CNI spec says (the operation in CNI_* variables, the network
 * configuration on stdin, the result on stdout).
 *
 * The namespace is made with `ip netns add`, so it shows in `ip netns` and survives
 * lanternd: a restarted lanternd finds it by name (<prefix><instance>) and either
 * keeps it for a live spawn or removes it. The bridge plugin makes the veth pair and
 * the bridge, host-local hands out the address; with default_route the spawn routes
 * everything through the bridge and the plugin masquerades it (NAT), without it the
 * spawn reaches only the bridge's subnet. */
#include "lantern/oci.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NETNS_DIR "/run/netns"
#define IP_BIN "/usr/sbin/ip"

static int cni_call(const struct oci_cni *c, const char *plugin, const char *cmd, const char *id,
		    const char *netns, const char *conf, char *out, size_t cap)
{
	char bin[PATH_MAX + 32], e_cmd[64], e_id[128], e_ns[PATH_MAX + 16], e_path[PATH_MAX + 16];
	char *envp[] = { e_cmd, e_id, e_ns, "CNI_IFNAME=eth0", e_path,
			 "PATH=/usr/sbin:/usr/bin:/sbin:/bin", NULL };

	snprintf(bin, sizeof(bin), "%s/%s", c->plugin_dir, plugin);
	snprintf(e_cmd, sizeof(e_cmd), "CNI_COMMAND=%s", cmd);
	snprintf(e_id, sizeof(e_id), "CNI_CONTAINERID=%s", id);
	snprintf(e_ns, sizeof(e_ns), "CNI_NETNS=%s", netns);
	snprintf(e_path, sizeof(e_path), "CNI_PATH=%s", c->plugin_dir);
	return oci_exec((char *[]){ bin, NULL }, envp, conf, out, cap);
}

static char *bridge_conf(const struct oci_cni *c)
{
	json_t *routes = c->default_route ? json_pack("[{s:s}]", "dst", "0.0.0.0/0") : json_array();
	json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:b, s:b, s:b, s:{s:s, s:[[{s:s}]], s:s, s:o}}",
			      "cniVersion", "1.0.0", "name", "lantern", "type", "bridge", "bridge", c->bridge,
			      "isGateway", 1, "ipMasq", c->default_route, "hairpinMode", 0,
			      "ipam", "type", "host-local", "ranges", "subnet", c->subnet, "dataDir",
			      c->data_dir, "routes", routes);
	char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;

	json_decref(j);
	return s;
}

char *oci_cni_conflist(const struct oci_cni *c)
{
	char *one = bridge_conf(c), *s = NULL;
	json_t *b = one ? json_loads(one, 0, NULL) : NULL, *j;

	free(one);
	if (!b)
		return NULL;
	json_object_del(b, "cniVersion");
	json_object_del(b, "name");
	j = json_pack("{s:s, s:s, s:[o]}", "cniVersion", "1.0.0", "name", "lantern", "plugins", b);
	s = j ? json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;
	json_decref(j);
	return s;
}

int oci_cni_add(const struct oci_cni *c, const char *inst, char *netns_path, size_t len,
		char ip[64], char gw[64], struct lerr *e)
{
	char name[128], out[8192], id[128], *conf = NULL;
	json_t *res = NULL;
	const char *addr, *gwa;
	json_t *ip0;
	int rc;

	snprintf(name, sizeof(name), "%s%s", c->netns_prefix, inst);
	snprintf(id, sizeof(id), "%s", name);
	snprintf(netns_path, len, NETNS_DIR "/%s", name);
	rc = oci_exec((char *[]){ IP_BIN, "netns", "add", name, NULL }, NULL, NULL, out, sizeof(out));
	if (rc != 0)
		return lerr_set(e, rc < 0 ? rc : EIO, "spawn: network namespace %s: ip netns add: %s", name,
				rc < 0 ? strerror(-rc) : out);
	rc = cni_call(c, "loopback", "ADD", id, netns_path,
		      "{\"cniVersion\":\"1.0.0\",\"name\":\"lo\",\"type\":\"loopback\"}", out, sizeof(out));
	if (rc != 0) {
		lerr_set(e, EIO, "spawn: network %s: CNI loopback: %.300s", name, out);
		goto fail;
	}
	conf = bridge_conf(c);
	rc = conf ? cni_call(c, "bridge", "ADD", id, netns_path, conf, out, sizeof(out)) : -ENOMEM;
	if (rc != 0) {
		lerr_set(e, EIO, "spawn: network %s: CNI bridge %s on %s: %.300s", name, c->bridge, c->subnet,
			 rc < 0 ? strerror(-rc) : out);
		goto fail;
	}
	res = json_loads(out, 0, NULL);
	ip0 = json_array_get(json_object_get(res, "ips"), 0);
	addr = json_string_value(json_object_get(ip0, "address"));
	gwa = json_string_value(json_object_get(ip0, "gateway"));
	snprintf(ip, 64, "%s", addr ? addr : "");
	snprintf(gw, 64, "%s", gwa ? gwa : "");
	json_decref(res);
	free(conf);
	return 0;
fail:
	free(conf);
	oci_cni_del(c, inst);
	return -EIO;
}

int oci_cni_del(const struct oci_cni *c, const char *inst)
{
	char name[128], path[PATH_MAX], out[4096], *conf = bridge_conf(c);
	int rc = 0;

	snprintf(name, sizeof(name), "%s%s", c->netns_prefix, inst);
	snprintf(path, sizeof(path), NETNS_DIR "/%s", name);
	/* DEL releases the address and the NAT rules even when the namespace is gone */
	if (conf && cni_call(c, "bridge", "DEL", name, access(path, F_OK) == 0 ? path : "", conf, out,
			     sizeof(out)) != 0) {
		log_warn("oci: CNI bridge DEL for %s: %.200s", name, out);
		rc = -EIO;
	}
	free(conf);
	if (access(path, F_OK) == 0 &&
	    oci_exec((char *[]){ IP_BIN, "netns", "delete", name, NULL }, NULL, NULL, out, sizeof(out)) != 0) {
		log_warn("oci: ip netns delete %s: %.200s", name, out);
		rc = -EIO;
	}
	return rc;
}

int oci_cni_list(const struct oci_cni *c, char ***insts, size_t *n)
{
	DIR *d = opendir(NETNS_DIR);
	struct dirent *de;
	size_t plen = strlen(c->netns_prefix), k = 0;
	char **v = NULL;

	*insts = NULL;
	*n = 0;
	if (!d)
		return errno == ENOENT ? 0 : -errno;
	while ((de = readdir(d))) {
		char **nv;

		if (strncmp(de->d_name, c->netns_prefix, plen) || !de->d_name[plen])
			continue;
		nv = realloc(v, (k + 1) * sizeof(*v));
		if (!nv)
			break;
		v = nv;
		if ((v[k] = strdup(de->d_name + plen)))
			k++;
	}
	closedir(d);
	*insts = v;
	*n = k;
	return 0;
}
