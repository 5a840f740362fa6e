/* log.c: egress's JSON lines (lanternd's log and each run's egress.jsonl), bounded per
 * instance. A workload can make denied calls far faster than lanternd can write lines
 * about them, so each run (and the node, for events of no known run) writes at most
 * EGRESS_LOG_PER_S lines a second; past that, events are counted per destination
 * (EGRESS_AGG_KEYS of them, the rest together) and one line per destination says, at
 * the end of the second, how many more there were ("suppressed": N). The kernel's own
 * counters stay exact whatever is written. egress.jsonl stays open for the run's life
 * and stops growing at EGRESS_RUN_LOG_MAX bytes. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "lantern/util.h"

#define EGRESS_LOG_PER_S      20
#define EGRESS_LOG_WINDOW_NS  1000000000ULL
#define EGRESS_RUN_LOG_MAX    (1u << 20)

static bool verdict_is_event(const char *verdict)
{
	return verdict && (!strcmp(verdict, "deny") || !strcmp(verdict, "audit"));
}

static void put_time(json_t *ev)
{
	struct timespec now;
	struct tm tm;
	char ts[40];

	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(ts + strlen(ts), sizeof(ts) - strlen(ts), ".%03ldZ", now.tv_nsec / 1000000);
	json_object_set_new(ev, "time", json_string(ts));
}

/* The run's egress.jsonl, opened on its first line and kept open. */
static int jsonl_fd(struct egress_log *lg)
{
	char path[PATH_MAX + 16];
	struct stat st;

	if (lg->fd >= 0 || !lg->r || lg->fd_failed)
		return lg->fd;
	snprintf(path, sizeof(path), "%s/egress.jsonl", run_dir(lg->r));
	lg->fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	if (lg->fd < 0) {
		lg->fd_failed = true;
		log_warn("run %s: cannot open %s: %s", run_id(lg->r), path, strerror(errno));
		return -1;
	}
	lg->bytes = fstat(lg->fd, &st) == 0 ? (uint64_t)st.st_size : 0;
	return lg->fd;
}

/* Writes one line (consumes ev); a deny or audit also becomes a run event. */
static void write_line(struct egress_log *lg, json_t *ev, bool tell_run)
{
	const char *verdict = json_string_value(json_object_get(ev, "verdict"));
	struct run *r = lg->r;
	size_t len;
	char *s;
	int fd;

	put_time(ev);
	if (r) {
		json_object_set_new(ev, "run_id", json_string(run_id(r)));
		json_object_set_new(ev, "instance_id", json_string(run_instance_id(r)));
		if (tell_run && verdict_is_event(verdict))
			run_event(r, json_incref(ev));
	}
	s = json_dumps(ev, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(ev);
	if (!s)
		return;
	len = strlen(s);
	s[len] = '\n';
	/* stderr is unbuffered: one write, so a line is never split between two writers */
	fwrite(s, 1, len + 1, stderr);
	if ((fd = jsonl_fd(lg)) >= 0 && lg->bytes < EGRESS_RUN_LOG_MAX &&
	    write(fd, s, len + 1) == (ssize_t)(len + 1))
		lg->bytes += len + 1;
	free(s);
}

/* Is the current second's quota spent? Starts a new second when the last one is over. */
static bool over_rate(struct egress_log *lg, uint64_t now)
{
	if (now - lg->win_ns >= EGRESS_LOG_WINDOW_NS) {
		lg->win_ns = now;
		lg->lines = 0;
	}
	return lg->lines >= EGRESS_LOG_PER_S;
}

static void on_flush_timer(struct loop *l, void *arg)
{
	struct egress_log *lg = arg;

	lg->timer = 0;
	egress_log_flush(lg, true);
}

static void arm_flush(struct egress_log *lg, uint64_t now)
{
	uint64_t end = lg->win_ns + EGRESS_LOG_WINDOW_NS;

	if (!lg->timer)
		lg->timer = loop_timer_add(lg->eg->loop, end > now ? (end - now) / 1000000 + 1 : 1,
					   on_flush_timer, lg);
}

static struct egress_agg *agg_find(struct egress_log *lg, const char *key)
{
	for (size_t i = 0; i < lg->n_agg; i++)
		if (!strcmp(lg->agg[i].key, key))
			return &lg->agg[i];
	return NULL;
}

bool egress_log_suppressed(struct egress_log *lg, const char *key)
{
	uint64_t now = util_now_ns(CLOCK_MONOTONIC);
	struct egress_agg *a;

	if (!over_rate(lg, now))
		return false;
	if ((a = agg_find(lg, key))) {
		a->n++;
		return true;
	}
	if (lg->n_agg == EGRESS_AGG_KEYS) {
		lg->other++;
		arm_flush(lg, now);
		return true;
	}
	return false;
}

void egress_log_key(struct egress_log *lg, json_t *ev, const char *key)
{
	uint64_t now = util_now_ns(CLOCK_MONOTONIC);
	struct egress_agg *a;

	if (!over_rate(lg, now)) {
		lg->lines++;
		write_line(lg, ev, true);
		return;
	}
	arm_flush(lg, now);
	if ((a = agg_find(lg, key))) {
		a->n++;
		json_decref(ev);
	} else if (lg->n_agg < EGRESS_AGG_KEYS) {
		a = &lg->agg[lg->n_agg++];
		snprintf(a->key, sizeof(a->key), "%s", key);
		a->tmpl = ev;
		a->n = 1;
	} else {
		lg->other++;
		json_decref(ev);
	}
}

/* The key events are aggregated by: what they were and where they went. */
static void json_key(json_t *ev, char *key, size_t len)
{
	const char *dst = json_string_value(json_object_get(ev, "dst"));

	snprintf(key, len, "%s %s %s %lld %s %s", json_string_value(json_object_get(ev, "event")) ?: "",
		 json_string_value(json_object_get(ev, "verdict")) ?: "",
		 dst ? dst : json_string_value(json_object_get(ev, "qname")) ?: "",
		 (long long)json_integer_value(json_object_get(ev, "port")),
		 json_string_value(json_object_get(ev, "proto")) ?: "",
		 json_string_value(json_object_get(ev, "reason")) ?: "");
}

void egress_log(struct egress *eg, struct run *r, json_t *ev)
{
	struct egress_run *er = r ? egress_run_of(eg, r) : NULL;
	char key[EGRESS_AGG_KEY_LEN];

	if (!ev)
		return;
	json_key(ev, key, sizeof(key));
	egress_log_key(er ? &er->log : &eg->log, ev, key);
}

/* "N more denies to 127.0.0.1:22/tcp", from the interval's first such event. */
static json_t *aggregate_line(struct egress_agg *a)
{
	json_t *j = a->tmpl;
	const char *verdict = json_string_value(json_object_get(j, "verdict")) ?: "event";
	const char *dst = json_string_value(json_object_get(j, "dst"));
	const char *plural = !strcmp(verdict, "deny") ? "denies" : !strcmp(verdict, "audit") ? "audits" :
			     !strcmp(verdict, "allow") ? "allows" : "redirects";
	char msg[400];

	if (dst)
		snprintf(msg, sizeof(msg), "%llu more %s to %s:%lld/%s", (unsigned long long)a->n, plural,
			 dst, (long long)json_integer_value(json_object_get(j, "port")),
			 json_string_value(json_object_get(j, "proto")) ?: "");
	else
		snprintf(msg, sizeof(msg), "%llu more dns %s for %s", (unsigned long long)a->n, plural,
			 json_string_value(json_object_get(j, "qname")) ?: "");
	/* one event stands for many: who made it is not known for each */
	json_object_del(j, "pid");
	json_object_del(j, "comm");
	json_object_del(j, "time");
	json_object_set_new(j, "suppressed", json_integer((json_int_t)a->n));
	json_object_set_new(j, "message", json_string(msg));
	a->tmpl = NULL;
	return j;
}

void egress_log_flush(struct egress_log *lg, bool tell_run)
{
	for (size_t i = 0; i < lg->n_agg; i++)
		write_line(lg, aggregate_line(&lg->agg[i]), tell_run);
	lg->n_agg = 0;
	if (lg->other) {
		char msg[96];

		snprintf(msg, sizeof(msg), "%llu more events to other destinations",
			 (unsigned long long)lg->other);
		write_line(lg, json_pack("{s:s, s:I, s:s}", "event", "egress", "suppressed",
					 (json_int_t)lg->other, "message", msg), false);
		lg->other = 0;
	}
}

void egress_log_init(struct egress_log *lg, struct egress *eg, struct run *r)
{
	memset(lg, 0, sizeof(*lg));
	lg->eg = eg;
	lg->r = r;
	lg->fd = -1;
}

void egress_log_close(struct egress_log *lg, bool tell_run)
{
	if (lg->timer) {
		loop_timer_cancel(lg->eg->loop, lg->timer);
		lg->timer = 0;
	}
	egress_log_flush(lg, tell_run);
	if (lg->fd >= 0)
		close(lg->fd);
	lg->fd = -1;
}
