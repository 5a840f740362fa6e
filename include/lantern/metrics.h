/* metrics.h: lanternd's HTTP endpoint on --metrics-addr: Prometheus text at GET /metrics,
 * written by collectors the modules register, with label values escaped as the text
 * format requires, and the GET paths modules register beside it (the probes /healthz
 * and /readyz, identity's well-known documents). Served by libmicrohttpd inside the
 * event loop (its epoll fd is
 * watched by the loop), so collectors run on the loop's thread and read their state
 * directly. */
#ifndef LANTERN_METRICS_H
#define LANTERN_METRICS_H

#include <stdint.h>

#include "lantern/loop.h"
#include "lantern/util.h"

struct metrics;
struct metrics_out;
typedef void (*metrics_collect_fn)(void *arg, struct metrics_out *o);

/* addr: "IPV4:PORT" or "[IPV6]:PORT". */
int metrics_open(struct loop *l, const char *addr, struct metrics **out, struct lerr *e);
void metrics_close(struct metrics *m);
/* Collectors write in registration order. */
int metrics_register(struct metrics *m, metrics_collect_fn fn, void *arg);
/* GET path answered by fn: it returns the HTTP status, a malloc'd body (NULL: none) and
 * its content type (text/plain unless fn sets *type). Answered on the loop's thread,
 * so an answer also says the loop is alive. */
typedef unsigned (*metrics_route_fn)(void *arg, char **body, const char **type);
int metrics_route(struct metrics *m, const char *path, metrics_route_fn fn, void *arg);

/* A metric family's HELP and TYPE ("counter", "gauge"), then its samples. labels is
 * NULL or a NULL-terminated list of name, value, name, value, ... */
void metrics_family(struct metrics_out *o, const char *name, const char *type, const char *help);
void metrics_u64(struct metrics_out *o, const char *name, const char *const *labels, uint64_t v);
void metrics_f64(struct metrics_out *o, const char *name, const char *const *labels, double v);
/* The Prometheus text every collector writes now (for tests and tools); freed by the
 * caller. */
char *metrics_text(struct metrics *m);

#endif
