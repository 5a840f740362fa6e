/* link.c: the control-plane runs this node took, each linked to its local run in
 * STATE/tunnel/runs/<id>.json (see cplane.c), and the wall clock the link counts in. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>
#include "cplane_internal.h"
#include "lantern/identity.h"
#include "lantern/journal.h"
#include "lantern/meter.h"
#include "lantern/runtime.h"
#include "lantern/util.h"
#include "lantern/workq.h"

int64_t cplane_unix_ms(void)
{
	return (int64_t)(util_now_ns(CLOCK_REALTIME) / 1000000);
}

struct link *link_by_cp(struct cplane *c, const char *id)
{
	for (struct link *l = c->links; l; l = l->next)
		if (!strcmp(l->cp_id, id))
			return l;
	return NULL;
}

struct link *link_by_local(struct cplane *c, const char *id)
{
	for (struct link *l = c->links; l; l = l->next)
		if (!strcmp(l->local, id))
			return l;
	return NULL;
}

int link_save(struct cplane *c, const struct link *l)
{
	char path[PATH_MAX + 80], *s;
	json_t *j = json_pack("{s:s, s:s, s:I, s:I, s:i}", "run_id", l->cp_id, "local", l->local,
			      "epoch", (json_int_t)l->epoch, "start_ms", (json_int_t)l->start_ms,
			      "lease_ttl_ms", l->ttl_ms);
	int err;

	s = j ? json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
	json_decref(j);
	if (!s)
		return -ENOMEM;
	snprintf(path, sizeof(path), "%s/%s.json", c->links_dir, l->cp_id);
	err = util_write_file_atomic(path, s, strlen(s));
	free(s);
	return err;
}

struct link *link_new(struct cplane *c, const char *cp_id, const char *local, int64_t epoch,
		      int64_t start_ms)
{
	struct link *l = calloc(1, sizeof(*l));

	if (!l)
		return NULL;
	snprintf(l->cp_id, sizeof(l->cp_id), "%s", cp_id);
	snprintf(l->local, sizeof(l->local), "%s", local);
	l->epoch = epoch;
	l->start_ms = start_ms;
	l->next = c->links;
	c->links = l;
	return l;
}

void link_drop(struct cplane *c, const char *cp_id)
{
	char path[PATH_MAX + 80];

	for (struct link **pp = &c->links; *pp; pp = &(*pp)->next)
		if (!strcmp((*pp)->cp_id, cp_id)) {
			struct link *l = *pp;

			*pp = l->next;
			free(l);
			break;
		}
	snprintf(path, sizeof(path), "%s/%s.json", c->links_dir, cp_id);
	unlink(path);
}

void links_load(struct cplane *c)
{
	DIR *d = opendir(c->links_dir);
	struct dirent *de;

	while (d && (de = readdir(d))) {
		char path[PATH_MAX + 300];
		struct link *l;
		json_t *j;

		if (de->d_name[0] == '.' || !strstr(de->d_name, ".json"))
			continue;
		snprintf(path, sizeof(path), "%s/%s", c->links_dir, de->d_name);
		if (!(j = json_load_file(path, 0, NULL)))
			continue;
		l = link_new(c, json_string_value(json_object_get(j, "run_id")) ?: "",
			     json_string_value(json_object_get(j, "local")) ?: "",
			     json_integer_value(json_object_get(j, "epoch")),
			     json_integer_value(json_object_get(j, "start_ms")));
		if (l)
			l->ttl_ms = (int)json_integer_value(json_object_get(j, "lease_ttl_ms"));
		json_decref(j);
	}
	if (d)
		closedir(d);
}
