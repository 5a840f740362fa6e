/* kubelib.h: the loopback test API server (tests/kube-apiserver/server.js) for the
 * tests of lanternd --kubernetes: its certificates, its process, calls to it and a
 * kubeconfig that names it. */
#ifndef LANTERN_TEST_KUBELIB_H
#define LANTERN_TEST_KUBELIB_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "testlib.h"

struct tl_kube {
	struct tl_env *t;
	const char *token;            /* the bearer token it takes */
	const char *node;             /* the Node it knows */
	pid_t server;
	uint16_t port;
	char base[64];                /* https://127.0.0.1:PORT */
};

/* In t->dir: a CA, the server's certificate for 127.0.0.1 and, with client, a client
 * certificate (client.pem, client.key). */
bool tl_kube_certs(struct tl_env *t, bool client);
/* Starts the server with more flags (may be NULL) once k->t, token and node are set;
 * its pid (tracked: stopped at exit), or -1. Its stderr goes to t->dir/apiserver.log. */
pid_t tl_kube_start(struct tl_kube *k, const char *extra);
void tl_kube_stop(struct tl_kube *k);
/* method path [body, taken]: the server's JSON answer, NULL on a transport error. */
json_t *tl_kube_api(struct tl_kube *k, const char *method, const char *path, json_t *body, long *status);
/* A kubeconfig file named name with the CA inline and user (the YAML lines of the
 * user's credentials). */
const char *tl_kube_kubeconfig(struct tl_kube *k, const char *name, const char *user);

#endif
