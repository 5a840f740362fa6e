/* kubelib.c: see kubelib.h. */
#include <curl/curl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "kubelib.h"

bool tl_kube_certs(struct tl_env *t, bool client)
{
	return tl_sh(NULL, NULL,
		     "cd %s && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
		     "-keyout ca.key -out ca.pem -subj /CN=kube-test-ca -days 2 2>/dev/null && "
		     "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout server.key "
		     "-out server.csr -subj /CN=kube-apiserver 2>/dev/null && "
		     "printf 'subjectAltName=IP:127.0.0.1\\n' > san.ext && "
		     "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 "
		     "-extfile san.ext -out server.pem 2>/dev/null%s", t->dir,
		     client ? " && openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
			      "-keyout client.key -out client.csr -subj /CN=lanternd-test 2>/dev/null && "
			      "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 "
			      "-out client.pem 2>/dev/null" : "") == 0;
}

pid_t tl_kube_start(struct tl_kube *k, const char *extra)
{
	const char *d = k->t->dir;
	char cmd[2048], line[64] = "";
	int p[2];
	ssize_t n;
	pid_t pid;

	snprintf(cmd, sizeof(cmd), "exec node tests/kube-apiserver/server.js --cert %s/server.pem --key %s/server.key "
		 "--ca %s/ca.pem --token %s --node %s --runtimeclasses deploy/daemonset/runtimeclasses.yaml %s "
		 "2>>%s/apiserver.log", d, d, d, k->token, k->node, extra ? extra : "", d);
	if (pipe(p) < 0)
		return -1;
	if ((pid = fork()) == 0) {
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		dup2(p[1], 1);
		close(p[0]);
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	tl_child_track(pid, SIGTERM);
	close(p[1]);
	n = read(p[0], line, sizeof(line) - 1);
	close(p[0]);
	if (n <= 0 || sscanf(line, "ready %hu", &k->port) != 1)
		return -1;
	snprintf(k->base, sizeof(k->base), "https://127.0.0.1:%u", k->port);
	k->server = pid;
	return pid;
}

void tl_kube_stop(struct tl_kube *k)
{
	if (k->server > 0)
		tl_child_stop(k->server, SIGTERM);
	k->server = 0;
}

static size_t collect(char *p, size_t sz, size_t n, void *arg)
{
	return fwrite(p, sz, n, arg);
}

json_t *tl_kube_api(struct tl_kube *k, const char *method, const char *path, json_t *body, long *status)
{
	char url[512], ca[400], auth[200], *buf = NULL, *out = NULL;
	size_t len = 0;
	struct curl_slist *h = NULL;
	CURL *c = curl_easy_init();
	FILE *f = open_memstream(&buf, &len);
	json_t *res = NULL;

	snprintf(url, sizeof(url), "%s%s", k->base, path);
	snprintf(ca, sizeof(ca), "%s/ca.pem", k->t->dir);
	snprintf(auth, sizeof(auth), "Authorization: Bearer %s", k->token);
	h = curl_slist_append(h, auth);
	h = curl_slist_append(h, "Content-Type: application/json");
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_CAINFO, ca);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, f);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
	if (body) {
		out = json_dumps(body, JSON_COMPACT);
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, out);
	}
	if (curl_easy_perform(c) == CURLE_OK) {
		fflush(f);
		res = json_loadb(buf, len, 0, NULL);
		if (status)
			curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
	}
	fclose(f);
	free(buf);
	free(out);
	json_decref(body);
	curl_slist_free_all(h);
	curl_easy_cleanup(c);
	return res;
}

const char *tl_kube_kubeconfig(struct tl_kube *k, const char *name, const char *user)
{
	char *b64 = NULL;
	const char *out;

	tl_sh(&b64, NULL, "base64 -w0 %s/ca.pem", k->t->dir);
	out = tl_file(k->t, name,
		      "apiVersion: v1\nkind: Config\ncurrent-context: test\n"
		      "clusters:\n- name: test\n  cluster:\n    server: %s\n    certificate-authority-data: %s\n"
		      "contexts:\n- name: test\n  context:\n    cluster: test\n    user: lanternd\n"
		      "users:\n- name: lanternd\n  user:\n%s",
		      k->base, b64 ? b64 : "", user);
	free(b64);
	return out;
}
