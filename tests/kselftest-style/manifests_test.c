/* manifests_test: deploy/daemonset, and deploy/tenant's per-namespace grant of k8s://
 * secrets, checked before anyone applies them (part of make check).
 * tests/kube-apiserver/validate-manifests.js validates every object against the
 * official Kubernetes schemas (kubernetes-models, strictly) and checks what the node
 * agent depends on (least RBAC: nothing on secrets cluster-wide; get on secrets, and
 * only that, in a tenant namespace that applies deploy/tenant); each of its checks is
 * one point here. Two last points break copies of the manifests and assert the checks
 * notice, so a check that passes everything cannot hide behind the others. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tap.h"
#include "testlib.h"
#include "lantern/util.h"

#define TENANT_GRANT "deploy/tenant/secrets-reader.yaml"

/* The checks' verdicts on dir, as a JSON array; NULL if the validator did not run. */
static json_t *validate(const char *dir, const char *help, const char *tenant)
{
	char *out = NULL;
	json_t *res;

	tl_sh(&out, NULL, "node tests/kube-apiserver/validate-manifests.js %s %s %s", dir, help, tenant);
	res = out ? json_loads(out, 0, NULL) : NULL;
	free(out);
	return json_is_array(res) ? res : NULL;
}

static bool failed(json_t *res, const char *name_part)
{
	json_t *x;
	size_t i;

	json_array_foreach(res, i, x)
		if (strstr(json_string_value(json_object_get(x, "name")) ?: "", name_part) &&
		    json_is_false(json_object_get(x, "ok")))
			return true;
	return false;
}

int main(void)
{
	char dir[64], help[300], *build = getenv("LANTERN_BUILD");
	json_t *res, *x, *broken;
	size_t i;

	util_tmp_template(dir, sizeof(dir), "/tmp/lantern-manifests-");
	tap_start();
	if (access("tests/kube-apiserver/node_modules/kubernetes-models", F_OK) != 0) {
		tap_skip("tests/kube-apiserver/node_modules missing (make deps)", "manifests_test");
		return tap_done_plan();
	}
	if (!mkdtemp(dir)) {
		tap_ok(false, "mkdtemp");
		return tap_done_plan();
	}
	snprintf(help, sizeof(help), "%s/lanternd.help", dir);
	tl_sh(NULL, NULL, "%s/lanternd --help > %s", build ? build : "build", help);
	res = validate("deploy/daemonset", help, TENANT_GRANT);
	if (!res)
		tap_ok(false, "tests/kube-apiserver/validate-manifests.js ran on deploy/daemonset");
	json_array_foreach(res, i, x)
		tap_ok(json_is_true(json_object_get(x, "ok")), "%s%s%s", json_string_value(json_object_get(x, "name")),
		       json_is_true(json_object_get(x, "ok")) ? "" : ": ",
		       json_string_value(json_object_get(x, "detail")) ?: "");

	/* a copy with a misspelt field and no mount propagation on /sys/fs/bpf */
	tl_sh(NULL, NULL, "cp deploy/daemonset/*.yaml %s/ && sed -i -e 's/^      hostPID: true/      hostPid: true/' "
	      "-e '/mountPropagation: Bidirectional/d' %s/daemonset.yaml", dir, dir);
	broken = validate(dir, help, TENANT_GRANT);
	tap_ok(broken && failed(broken, "DaemonSet lanternd passes the official schema") &&
	       failed(broken, "Bidirectional mount propagation") && failed(broken, "hostPID"),
	       "a DaemonSet with a misspelt field (hostPid) and without Bidirectional propagation on "
	       "/sys/fs/bpf fails the schema and the property checks");
	json_decref(broken);

	/* grants that say too much: list and watch on secrets; the same as a ClusterRole
	 * bound cluster-wide; secrets in the DaemonSet's ClusterRole */
	tl_sh(NULL, NULL, "sed -e 's/verbs: \\[\"get\"\\]/verbs: [\"get\", \"list\", \"watch\"]/' " TENANT_GRANT
	      " > %s/list.yaml && sed -e 's/^kind: Role$/kind: ClusterRole/' -e 's/^kind: RoleBinding$/kind: "
	      "ClusterRoleBinding/' -e 's/  kind: Role$/  kind: ClusterRole/' " TENANT_GRANT " > %s/cluster.yaml && "
	      "sed -i 's/resources: \\[\"pods\"\\]/resources: [\"pods\", \"secrets\"]/' %s/rbac.yaml",
	      dir, dir, dir);
	{
		char list[128], cluster[128];
		json_t *bl, *bc;

		snprintf(list, sizeof(list), "%s/list.yaml", dir);
		snprintf(cluster, sizeof(cluster), "%s/cluster.yaml", dir);
		bl = validate("deploy/daemonset", help, list);
		bc = validate(dir, help, cluster);
		tap_ok(bl && failed(bl, "grants exactly get on secrets") && !failed(bl, "namespaced only") &&
		       bc && failed(bc, "namespaced only") && failed(bc, "no secrets/configmaps/serviceaccounts"),
		       "a tenant grant with list and watch on secrets fails the exactly-get check; one made "
		       "cluster-wide (ClusterRole, ClusterRoleBinding) fails the namespaced-only check; "
		       "secrets in the DaemonSet's ClusterRole fail its check");
		json_decref(bl);
		json_decref(bc);
	}
	json_decref(res);
	tl_sh(NULL, NULL, "rm -rf %s", dir);
	return tap_done_plan();
}
