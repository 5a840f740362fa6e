/* manifests_test: deploy/daemonset checked before anyone applies it (part of make
 * check). tests/kube-apiserver/validate-manifests.js validates every object against
 * the official Kubernetes schemas (kubernetes-models, strictly) and checks what the
 * node agent depends on; each of its checks is one point here. A last point breaks a
 * copy of the manifests and asserts the checks notice, so a check that passes
 * everything cannot hide behind the others. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tap.h"
#include "testlib.h"
#include "lantern/util.h"

/* The checks' verdicts on dir, as a JSON array; NULL if the validator did not run. */
static json_t *validate(const char *dir, const char *help)
{
	char *out = NULL;
	json_t *res;

	tl_sh(&out, NULL, "node tests/kube-apiserver/validate-manifests.js %s %s", dir, help);
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
	res = validate("deploy/daemonset", help);
	if (!res)
		tap_ok(false, "tests/kube-apiserver/validate-manifests.js ran on deploy/daemonset");
	json_array_foreach(res, i, x)
		tap_ok(json_is_true(json_object_get(x, "ok")), "%s%s%s", json_string_value(json_object_get(x, "name")),
		       json_is_true(json_object_get(x, "ok")) ? "" : ": ",
		       json_string_value(json_object_get(x, "detail")) ?: "");

	/* a copy with a misspelt field and no mount propagation on /sys/fs/bpf */
	tl_sh(NULL, NULL, "cp deploy/daemonset/*.yaml %s/ && sed -i -e 's/^      hostPID: true/      hostPid: true/' "
	      "-e '/mountPropagation: Bidirectional/d' %s/daemonset.yaml", dir, dir);
	broken = validate(dir, help);
	tap_ok(broken && failed(broken, "DaemonSet lanternd passes the official schema") &&
	       failed(broken, "Bidirectional mount propagation") && failed(broken, "hostPID"),
	       "a DaemonSet with a misspelt field (hostPid) and without Bidirectional propagation on "
	       "/sys/fs/bpf fails the schema and the property checks");
	json_decref(broken);
	json_decref(res);
	tl_sh(NULL, NULL, "rm -rf %s", dir);
	return tap_done_plan();
}
