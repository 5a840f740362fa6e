/* kube.h: a small client of the Kubernetes API for lanternd's event loop: where the API
 * server is and how to authenticate to it (in-cluster service account, or a
 * kubeconfig with a bearer token or a client certificate; TLS always verified unless
 * the kubeconfig itself says insecure-skip-tls-verify), single requests whose answer
 * comes back as a callback on the loop, and list+watch of a collection that survives
 * anything the server does to it (watch timeouts, bookmarks, 410 Gone, restarts).
 *
 * Nothing here blocks the loop: libcurl's multi interface runs on the loop's own fds
 * and timers (its DNS resolver is threaded), so a slow or unreachable API server only
 * delays answers. Only this module calls libcurl for Kubernetes. */
#ifndef LANTERN_KUBE_H
#define LANTERN_KUBE_H

#include <jansson.h>
#include <stdbool.h>

#include "lantern/loop.h"
#include "lantern/util.h"

struct kube_config;

/* Loads the kubeconfig at path (its current-context), or when path is NULL the
 * in-cluster configuration: $KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT with the
 * service account's token and CA under /var/run/secrets/kubernetes.io/serviceaccount.
 * Token files are read again while lanternd runs (bound tokens rotate). */
int kube_config_load(const char *path, struct kube_config **out, struct lerr *e);
void kube_config_free(struct kube_config *c);

struct kube;

/* Takes c (freed by kube_close). */
int kube_open(struct loop *l, struct kube_config *c, struct kube **out, struct lerr *e);
/* Cancels every request and watch without calling their callbacks. */
void kube_close(struct kube *k);

/* The answer to a request. status is the HTTP status, or 0 when none came (err then
 * says why: connection refused, TLS verification, timeout). body is the parsed JSON
 * answer, NULL if there was none or it was not JSON; it belongs to the caller of the
 * callback (take a reference to keep it). */
struct kube_resp {
	long status;
	json_t *body;
	const char *err;
};
typedef void (*kube_done_fn)(void *arg, const struct kube_resp *res);

struct kube_req;

/* method is GET, POST, PUT, PATCH (a JSON merge patch) or DELETE; path starts with /
 * and may carry a query. body (may be NULL) is consumed. done runs later on the loop,
 * never from within kube_request; the handle is valid until done starts. */
int kube_request(struct kube *k, const char *method, const char *path, json_t *body,
		 kube_done_fn done, void *arg, struct kube_req **out, struct lerr *e);
/* A GET whose answer may hold a secret (a Secret), answered within timeout_ms: the
 * answer's bytes are zeroed before they are freed (never realloc'd), and while it is
 * parsed, handed to done and freed, jansson wipes every block it frees (util.h). */
int kube_get_sensitive(struct kube *k, const char *path, long timeout_ms, kube_done_fn done, void *arg,
		       struct kube_req **out, struct lerr *e);
/* The same request made on the calling thread and waited for, within timeout_ms: for
 * a worker thread, never the loop's. res->body is the caller's (json_decref); res->err
 * points into err. -EIO with e set when it could not be made. */
int kube_request_wait(struct kube *k, const char *method, const char *path, json_t *body, long timeout_ms,
		      struct kube_resp *res, char *err, size_t errlen, struct lerr *e);
/* Drops a request whose done has not run; done will not run. */
void kube_cancel(struct kube_req *q);
/* "Reason: message" of a Status answer, else the transport error or "HTTP n". */
const char *kube_resp_why(const struct kube_resp *res, char *buf, size_t len);

/* What a watch hands its consumer. A list (the first, and again after 410 Gone or a
 * watch that cannot resume) is LIST_BEGIN, one LISTED per object, LIST_END: after
 * LIST_END, an object that was not listed no longer exists. Between lists, ADDED,
 * MODIFIED and DELETED come in the server's order. */
enum kube_ev { KUBE_LIST_BEGIN, KUBE_LISTED, KUBE_LIST_END, KUBE_ADDED, KUBE_MODIFIED, KUBE_DELETED };
typedef void (*kube_watch_fn)(void *arg, enum kube_ev ev, json_t *obj);

struct kube_watch;

/* Lists and then watches path (a collection: /api/v1/pods) with the given label and
 * field selectors (may be NULL), for as long as it runs: bookmarks keep its
 * resourceVersion fresh, a watch that ends is resumed, 410 Gone relists, errors are
 * retried with backoff. fn runs on the loop; it must not stop its own watch. */
int kube_watch_start(struct kube *k, const char *path, const char *label_selector,
		     const char *field_selector, kube_watch_fn fn, void *arg, struct kube_watch **out,
		     struct lerr *e);
void kube_watch_stop(struct kube_watch *w);
/* True while the watch is current (its last list or watch request answered); else
 * why not in why. */
bool kube_watch_current(const struct kube_watch *w, char *why, size_t len);

#endif
