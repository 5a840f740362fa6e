/* start.c: an assignment whose spec names k8s:// secrets waits for them before it
 * starts: admission cannot wait for the API server, so identity reads them first
 * (identity_prefetch) and the start takes what was read, or is refused with the reason
 * one could not be (report.c). An assignment re-sent meanwhile is answered by the
 * start that waits; one continued from the journal store keeps its staged directory
 * until then. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cplane_internal.h"
#include "lantern/identity.h"
#include "lantern/util.h"

struct start {
	struct cplane *c;
	struct tunnel_ev ev;            /* the assignment (its strings owned here) */
	int64_t taken_ms;
	char id[64];                    /* continued as this run id, or "" */
	char seed[PATH_MAX + 80];       /* its staged directory, or "" */
	struct run_prefetch *pf;
	struct start *next;
};

static void start_unlink(struct start *s)
{
	for (struct start **pp = &s->c->starts; *pp; pp = &(*pp)->next)
		if (*pp == s) {
			*pp = s->next;
			break;
		}
}

static void start_free(struct start *s)
{
	identity_prefetch_free(s->pf);
	/* a start that took it renamed it; one that did not leaves nothing behind */
	if (s->seed[0])
		util_rm_rf(s->seed);
	free(s->ev.config_json);
	free(s->ev.input_json);
	free(s->ev.idem);
	free(s);
}

static void on_read(void *arg, struct run_prefetch *pf)
{
	struct start *s = arg;
	struct cplane *c = s->c;

	start_unlink(s);
	if (c->draining || c->stopping)
		cplane_refuse(c, s->ev.run_id, s->ev.epoch, "node is draining: it takes no new runs", true);
	else
		cplane_start_now(c, &s->ev, s->taken_ms, s->id[0] ? s->id : NULL, s->seed[0] ? s->seed : NULL, pf);
	start_free(s);
}

static struct start *start_new(struct cplane *c, const struct tunnel_ev *ev, int64_t taken_ms, const char *id,
			       const char *seed_dir)
{
	struct start *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	s->c = c;
	s->ev = *ev;
	s->ev.next = NULL;
	s->ev.renewed = s->ev.lost = s->ev.lost_why = NULL;
	s->ev.config_json = strdup(ev->config_json ? ev->config_json : "");
	s->ev.input_json = strdup(ev->input_json ? ev->input_json : "");
	s->ev.idem = strdup(ev->idem ? ev->idem : "");
	s->taken_ms = taken_ms;
	if (!s->ev.config_json || !s->ev.input_json || !s->ev.idem) {
		start_free(s);
		return NULL;
	}
	snprintf(s->id, sizeof(s->id), "%s", id ? id : "");
	return s;
}

bool cplane_start(struct cplane *c, const struct tunnel_ev *ev, int64_t taken_ms, const char *id,
		  const char *seed_dir)
{
	struct start *s = c->id ? start_new(c, ev, taken_ms, id, seed_dir) : NULL;

	/* out of memory: started now, and admission refuses a k8s:// secret it was not given */
	if (s && identity_prefetch(c->id, "assignment", s->ev.config_json, strlen(s->ev.config_json), on_read, s,
				   &s->pf) > 0) {
		snprintf(s->seed, sizeof(s->seed), "%s", seed_dir ? seed_dir : "");
		s->next = c->starts;
		c->starts = s;
		return seed_dir != NULL;
	}
	if (s)
		start_free(s);
	cplane_start_now(c, ev, taken_ms, id, seed_dir, NULL);
	return false;
}

bool start_pending(struct cplane *c, const char *cp_id)
{
	for (struct start *s = c->starts; s; s = s->next)
		if (!strcmp(s->ev.run_id, cp_id))
			return true;
	return false;
}

void start_close(struct cplane *c)
{
	while (c->starts) {
		struct start *s = c->starts;

		c->starts = s->next;
		start_free(s);
	}
}
