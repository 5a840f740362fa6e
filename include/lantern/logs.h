/* logs.h: a run's output for the lantern CLI, a run subscriber. lantern-shim writes the
 * workload's output into the run directory; this module follows it: `lantern run`
 * (and the "follow" op) gets stdout and stderr as they grow and the run's end;
 * `lantern logs [-f] [--from SEQ]` gets the timestamped records (RUN/log, rotated to
 * RUN/log.1) from a sequence number on, through a lanternd restart without a gap or a
 * duplicate. */
#ifndef LANTERN_LOGS_H
#define LANTERN_LOGS_H

#include <jansson.h>

#include "lantern/api.h"
#include "lantern/loop.h"
#include "lantern/run.h"
#include "lantern/util.h"

struct logs;

int logs_open(struct loop *l, struct logs **out, struct lerr *e);
void logs_close(struct logs *g);
int logs_subscribe(struct logs *g, struct runs *t, struct lerr *e);
/* Streams r's output to c, then its end ({"type":"exit",...}), and finishes c. */
void logs_follow(struct logs *g, struct run *r, struct api_client *c);
/* `lantern logs`: req has "from" and "follow". */
void logs_request(struct logs *g, struct run *r, struct api_client *c, json_t *req);

#endif
