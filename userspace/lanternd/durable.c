/* durable.c: durable execution in lanternd: each run's journal and harness socket, the
 * harness API's calls turned into journal records, answers sent only once their
 * record is durable, budgets and the loop guard, and resume after a restart.
 *
 * Threads: everything here runs on the event loop, except fdatasync/syncfs, which the
 * journal syncer thread does (a blocking call that would stall every run's API). The
 * loop appends a record (a write() into the page cache), queues the journal with the
 * syncer and parks the answer; the syncer flushes a batch of journals and bumps an
 * eventfd; the loop then sends every parked answer whose record is durable. So one
 * flush serves every run that appended meanwhile (group commit), and the loop never
 * waits on the disk. Exceptions, on purpose: the run_started, run_resumed and
 * run_completed records are synced directly, because the run must not start (or be
 * reported ended) before they are on disk.
 *
 * Test-only crash point: LANTERN_TEST_CRASH_AT=N makes lanternd _exit right after its
 * Nth journal append (before that record is synced or answered). With
 * LANTERN_TEST_CRASH_KILL=1 it first SIGKILLs every running workload and its shim,
 * as a machine restart would. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "lanternd.h"
#include "lantern/harness.h"
#include "lantern/journal.h"
#include "lantern/meter.h"
#include "lantern/spawn.h"
#include "lantern/util.h"

struct pending {
	struct durable *du;
	struct harness_conn *c;     /* NULL once the caller went away */
	uint64_t seq;               /* answer when the journal is durable up to here */
	int status;
	json_t *reply;
	bool end;                   /* end the run after answering */
	enum run_status end_as;
	char end_reason[512];
	struct pending *next;
};

struct durable_node {
	struct journal_syncer *syncer;
	int efd;
	struct pending *pending;
	long crash_at, appends;
	bool crash_kill;
};

struct durable {
	struct daemon *d;
	struct run *r;
	struct journal *j;
	struct harness_server *srv;
	struct harness_state st;
	struct harness_limits lim;
	char sock[PATH_MAX];
};

static void durable_flush_pending(struct daemon *d, struct durable *only);

static void on_synced(struct loop *l, int fd, uint32_t events, void *arg)
{
	struct daemon *d = arg;
	uint64_t n;

	if (read(fd, &n, sizeof(n)) < 0 && errno != EAGAIN)
		log_warn("durable: reading the syncer's eventfd: %s", strerror(errno));
	durable_flush_pending(d, NULL);
}

int durable_init(struct daemon *d, struct lerr *e)
{
	struct durable_node *n = calloc(1, sizeof(*n));
	const char *crash = getenv("LANTERN_TEST_CRASH_AT");
	int err;

	if (!n)
		return lerr_set(e, ENOMEM, "durable: out of memory");
	d->dur = n;
	if (crash && *crash) {
		n->crash_at = strtol(crash, NULL, 10);
		n->crash_kill = getenv("LANTERN_TEST_CRASH_KILL") &&
				!strcmp(getenv("LANTERN_TEST_CRASH_KILL"), "1");
		log_warn("test crash point armed: exit after journal append %ld%s", n->crash_at,
			 n->crash_kill ? ", killing workloads" : "");
	}
	n->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (n->efd < 0)
		return lerr_set(e, errno, "durable: eventfd: %s", strerror(errno));
	if ((err = loop_add(d->loop, n->efd, EPOLLIN, on_synced, d)) < 0)
		return lerr_set(e, err, "durable: watching the syncer: %s", strerror(-err));
	return journal_syncer_start(n->efd, &n->syncer, e);
}

/* Every journal append of lanternd goes through here (the crash point counts them). */
static int durable_append(struct durable *du, unsigned type, json_t *rec, uint64_t *seq,
			  struct lerr *e)
{
	struct durable_node *n = du->d->dur;
	char *s = json_dumps(rec, JSON_COMPACT | JSON_SORT_KEYS);
	int err;

	if (!s)
		return lerr_set(e, ENOMEM, "journal of %s: cannot encode a %s record", du->r->id,
				journal_type_name(type));
	err = journal_append(du->j, type, s, strlen(s), seq, e);
	free(s);
	if (err < 0)
		return err;
	if ((err = harness_state_apply(&du->st, type, rec, e)) < 0)
		return err;
	if (n->crash_at && ++n->appends == n->crash_at) {
		if (n->crash_kill) {
			for (struct run *r = du->d->runs; r; r = r->next) {
				if (run_status_final(r->status))
					continue;
				cgroup_inst_signal(&r->cg, SIGKILL);
				if (r->shim_pid > 0)
					kill(r->shim_pid, SIGKILL);
			}
		}
		log_warn("test crash point: exiting after journal append %ld", n->appends);
		_exit(86);
	}
	return 0;
}

static void limits_of(struct durable *du)
{
	const struct spec *s = du->r->spec;

	du->lim.max_steps = s ? s->limits.max_steps : 0;
	du->lim.max_tokens = s ? s->limits.max_tokens : 0;
	du->lim.max_cost_usd = s ? s->limits.max_cost_usd : 0;
	du->lim.loop_threshold = du->d->o.loop_threshold;
}

static struct durable *durable_new(struct daemon *d, struct run *r)
{
	struct durable *du = calloc(1, sizeof(*du));

	if (!du)
		return NULL;
	du->d = d;
	du->r = r;
	harness_state_init(&du->st);
	/* in a directory of its own: an OCI sandbox bind-mounts the directory, so it sees
	 * the socket a restarted lanternd binds again (a bind-mounted socket file would
	 * stay the old, dead inode) */
	snprintf(du->sock, sizeof(du->sock), "%s/harness/harness.sock", r->dir);
	limits_of(du);
	return du;
}

static void durable_free(struct durable *du)
{
	if (!du)
		return;
	harness_server_close(du->srv);
	if (du->j) {
		journal_syncer_forget(du->d->dur->syncer, du->j);
		journal_close(du->j);
	}
	harness_state_free(&du->st);
	free(du);
}

static void journal_file(const struct run *r, char *out, size_t len)
{
	snprintf(out, len, "%s/journal", r->dir);
}

int durable_begin(struct daemon *d, struct run *r, json_t *input, struct lerr *e)
{
	struct journal_opts o = { .max_bytes = d->o.journal_max_bytes };
	struct durable *du = durable_new(d, r);
	char path[PATH_MAX + 16];
	json_t *rec;
	int err;

	if (!du)
		return lerr_set(e, ENOMEM, "durable: out of memory");
	journal_file(r, path, sizeof(path));
	if ((err = journal_create(path, &o, &du->j, e)) < 0) {
		durable_free(du);
		return err;
	}
	rec = json_pack("{s:s, s:s, s:O, s:O, s:I}", "run_id", r->id, "instance_id", r->instance_id,
			"spec", r->spec->json ? r->spec->json : json_null(), "input",
			input ? input : json_null(), "created", (json_int_t)r->created);
	err = durable_append(du, JOURNAL_RUN_STARTED, rec, NULL, e);
	json_decref(rec);
	if (err < 0 || (err = journal_sync(du->j, e)) < 0) {
		durable_free(du);
		return err;
	}
	r->dur = du;
	return 0;
}

int durable_env(const struct run *r, char **env)
{
	char self[PATH_MAX], *slash;
	ssize_t n;
	int k = 0;

	if (!r->dur)
		return 0;
	if (asprintf(&env[k], "LANTERN_HARNESS_SOCKET=%s", r->dur->sock) > 0)
		k++;
	/* the process runtime shares the host's files: the CLI beside lanternd is the
	 * one `lantern step` in the workload should use */
	n = readlink("/proc/self/exe", self, sizeof(self) - 16);
	if (n > 0) {
		self[n] = '\0';
		if ((slash = strrchr(self, '/'))) {
			strcpy(slash + 1, "lantern");
			if (asprintf(&env[k], "LANTERN_CLI=%s", self) > 0)
				k++;
		}
	}
	env[k] = NULL;
	return k;
}

/* --- the harness API --- */

/* Only processes of this run's instance may use its socket: the caller's cgroup (v2
 * line of /proc/PID/cgroup) must be the instance's directory or below it. */
static bool on_accept(void *arg, pid_t pid, char *why, size_t len)
{
	struct durable *du = arg;
	char path[64], want[256], *buf = NULL, *line;
	bool ok = false;

	snprintf(want, sizeof(want), "/%s/%s", du->d->cg.root, du->r->cg.name);
	snprintf(path, sizeof(path), "/proc/%d/cgroup", (int)pid);
	if (pid > 0 && util_read_file(path, &buf, NULL) == 0) {
		for (line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
			size_t wl = strlen(want);
			if (!strncmp(line, "0::", 3) && !strncmp(line + 3, want, wl) &&
			    (line[3 + wl] == '\0' || line[3 + wl] == '/'))
				ok = true;
		}
	}
	free(buf);
	if (!ok) {
		snprintf(why, len, "harness: pid %d is not a process of run %s (instance %s): each "
			 "instance may use only its own harness socket", (int)pid, du->r->id,
			 du->r->instance_id);
		log_warn("run %s: %s", du->r->id, why);
	}
	return ok;
}

static void on_closed(void *arg, struct harness_conn *c)
{
	struct durable *du = arg;

	for (struct pending *p = du->d->dur->pending; p; p = p->next)
		if (p->c == c)
			p->c = NULL;
}

static void park(struct durable *du, struct harness_conn *c, uint64_t seq, int status,
		 json_t *reply, bool end, enum run_status as, const char *why)
{
	struct durable_node *n = du->d->dur;
	struct pending *p = calloc(1, sizeof(*p)), **pp;

	if (!p) {
		json_decref(reply);
		harness_reply(c, 500, json_pack("{s:s}", "error", "lanternd: out of memory"));
		return;
	}
	p->du = du;
	p->c = c;
	p->seq = seq;
	p->status = status;
	p->reply = reply;
	p->end = end;
	p->end_as = as;
	snprintf(p->end_reason, sizeof(p->end_reason), "%s", why ? why : "");
	for (pp = &n->pending; *pp; pp = &(*pp)->next)
		;
	*pp = p;
	journal_syncer_request(n->syncer, du->j);
}

/* Sends p's answer if its record is durable (or can never be); true when done. */
static bool pending_try(struct daemon *d, struct pending *p)
{
	struct durable *du = p->du;
	int serr = journal_sync_error(du->j);

	if (!serr && journal_durable_seq(du->j) < p->seq)
		return false;
	if (serr) {
		char why[512];
		snprintf(why, sizeof(why), "journal %s: sync failed: %s: the run cannot continue safely",
			 journal_path(du->j), strerror(-serr));
		if (p->c)
			harness_reply(p->c, 500, json_pack("{s:s}", "error", why));
		json_decref(p->reply);
		run_end(d, du->r, RUN_FAILED, why);
		return true;
	}
	if (p->c)
		harness_reply(p->c, p->status, p->reply);
	else
		json_decref(p->reply);
	if (p->end)
		run_end(d, du->r, p->end_as, p->end_reason);
	return true;
}

static void durable_flush_pending(struct daemon *d, struct durable *only)
{
	struct durable_node *n = d->dur;
	struct pending *list = n->pending, *keep = NULL, **kt = &keep;

	n->pending = NULL;
	while (list) {
		struct pending *p = list;
		list = p->next;
		p->next = NULL;
		if ((!only || p->du == only) && pending_try(d, p)) {
			free(p);
		} else {
			*kt = p;
			kt = &p->next;
		}
	}
	/* answers sent above may have parked new ones meanwhile: keep their order after */
	*kt = n->pending;
	n->pending = keep;
}

static json_t *err_body(const char *code, const char *reason)
{
	return json_pack("{s:s, s:s}", "error", code, "reason", reason);
}

static int status_of(enum harness_verdict v)
{
	switch (v) {
	case HV_INVALID: return 400;
	case HV_CONFLICT: return 409;
	case HV_BUDGET: return 429;
	default: return 200;
	}
}

/* Appends dec's record; a full journal ends the run (the bound is there to stop it)
 * and answers 507. False when the caller was answered already. */
static bool append_or_fail(struct durable *du, struct harness_conn *c,
			   struct harness_decision *dec, uint64_t *seq)
{
	struct lerr e = { 0 };

	if (durable_append(du, dec->type, dec->record, seq, &e) == 0)
		return true;
	log_error("run %s: %s", du->r->id, e.msg);
	harness_reply(c, 507, err_body("journal", e.msg));
	run_end(du->d, du->r, RUN_FAILED, e.msg);
	return false;
}

static void record_and_reply(struct durable *du, struct harness_conn *c,
			     struct harness_decision *dec, json_t *reply)
{
	uint64_t seq;

	if (append_or_fail(du, c, dec, &seq))
		park(du, c, seq, 200, reply, false, 0, NULL);
	else
		json_decref(reply);
}

/* A step that completed or failed becomes a span of the run's trace (telemetry.c). */
static void step_telemetry(struct durable *du, json_t *body, const struct harness_decision *dec,
			   const char *error)
{
	const char *id = json_string_value(json_object_get(body, "step_id"));
	struct harness_step *s = id ? harness_state_step(&du->st, id) : NULL;

	if (dec->v == HV_RECORD && s)
		telemetry_step_end(du->d, du->r, id, s->kind, dec->attempt, body, error);
}

static void api_begin(struct durable *du, struct harness_conn *c, json_t *body)
{
	struct harness_decision dec;
	struct harness_step *s;
	json_t *reply;

	du->lim.other_usd = telemetry_run_resource_usd(du->d, du->r);
	harness_begin(&du->st, &du->lim, body, &dec);
	switch (dec.v) {
	case HV_REPLAY:
		s = harness_state_step(&du->st, json_string_value(json_object_get(body, "step_id")));
		reply = json_deep_copy(harness_step_record(s));
		json_object_set_new(reply, "action", json_string("replay"));
		/* what was replayed must itself be durable before anyone acts on it */
		park(du, c, journal_seq(du->j), 200, reply, false, 0, NULL);
		break;
	case HV_PROCEED:
		reply = json_pack("{s:s, s:O, s:i, s:s}", "action", "proceed", "step_id",
				  json_object_get(dec.record, "step_id"), "attempt", (int)dec.attempt,
				  "idempotency_key", dec.key);
		telemetry_step_begin(du->r, json_string_value(json_object_get(dec.record, "step_id")));
		record_and_reply(du, c, &dec, reply);
		break;
	case HV_BUDGET:
		log_warn("run %s: %s", du->r->id, dec.reason);
		park(du, c, journal_seq(du->j), 429,
		     err_body(dec.loop ? "loop_detected" : "budget_exceeded", dec.reason), true,
		     RUN_BUDGET_EXCEEDED, dec.reason);
		break;
	default:
		harness_reply(c, status_of(dec.v), err_body(dec.v == HV_INVALID ? "invalid" : "conflict",
							    dec.reason));
	}
	json_decref(dec.record);
}

static void api_record(struct durable *du, struct harness_conn *c, struct harness_decision *dec)
{
	char why[512] = "";
	json_t *reply;
	uint64_t seq;
	bool over;

	if (dec->v == HV_DONE) {
		park(du, c, journal_seq(du->j), 200,
		     json_pack("{s:b, s:b, s:i}", "ok", 1, "already_recorded", 1, "attempt",
			       (int)dec->attempt), false, 0, NULL);
		return;
	}
	if (dec->v != HV_RECORD) {
		harness_reply(c, status_of(dec->v), err_body(dec->v == HV_INVALID ? "invalid" : "conflict",
							     dec->reason));
		return;
	}
	if (dec->type != JOURNAL_STEP_COMPLETED) {
		record_and_reply(du, c, dec, json_pack("{s:b, s:i}", "ok", 1, "attempt",
						       (int)dec->attempt));
		return;
	}
	if (!append_or_fail(du, c, dec, &seq))
		return;
	/* the after-completion check, on the state that now holds this step */
	du->lim.other_usd = telemetry_run_resource_usd(du->d, du->r);
	over = harness_over_budget(&du->st, &du->lim, why, sizeof(why));
	reply = json_pack("{s:b, s:i, s:{s:I, s:f}}", "ok", 1, "attempt", (int)dec->attempt,
			  "totals", "tokens", (json_int_t)du->st.tokens, "cost_usd", du->st.cost_usd);
	if (over) {
		json_object_set_new(reply, "budget_exceeded", json_string(why));
		log_warn("run %s: %s", du->r->id, why);
	}
	park(du, c, seq, 200, reply, over, RUN_BUDGET_EXCEEDED, why);
}

static void on_request(void *arg, struct harness_conn *c, const struct harness_request *rq)
{
	struct durable *du = arg;
	struct harness_decision dec = { 0 };
	json_t *body = NULL;
	json_error_t je;
	bool post = !strcmp(rq->method, "POST");

	if (post) {
		body = rq->body_len ? json_loadb(rq->body, rq->body_len, 0, &je) : json_object();
		if (!json_is_object(body)) {
			char m[256];
			snprintf(m, sizeof(m), "request body is not a JSON object%s%s", body ? "" : ": ",
				 body ? "" : je.text);
			json_decref(body);
			harness_reply(c, 400, err_body("invalid", m));
			return;
		}
	}
	if (!strcmp(rq->path, "/v1/input") && !post) {
		harness_reply(c, 200, json_pack("{s:s, s:O}", "run_id", du->r->id, "input",
						du->st.input ? du->st.input : json_null()));
	} else if (!strcmp(rq->path, "/v1/run") && !post) {
		harness_reply(c, 200, json_pack("{s:s, s:s, s:I, s:I, s:I, s:f, s:I}", "run_id", du->r->id,
						"instance_id", du->r->instance_id, "steps_begun",
						(json_int_t)du->st.steps_begun, "steps_completed",
						(json_int_t)du->st.steps_completed, "tokens",
						(json_int_t)du->st.tokens, "cost_usd", du->st.cost_usd,
						"resumes", (json_int_t)du->st.resumes));
	} else if (!post) {
		harness_reply(c, strncmp(rq->path, "/v1/", 4) ? 404 : 405,
			      err_body("not_found", "GET /v1/input, GET /v1/run; POST /v1/steps/begin, "
				       "/v1/steps/complete, /v1/steps/fail, /v1/output"));
	} else if (du->r->ending_set && strcmp(rq->path, "/v1/steps/complete") &&
		   strcmp(rq->path, "/v1/steps/fail")) {
		harness_reply(c, 409, err_body("run_ending", du->r->reason));
	} else if (!strcmp(rq->path, "/v1/steps/begin")) {
		api_begin(du, c, body);
	} else if (!strcmp(rq->path, "/v1/steps/complete")) {
		harness_complete(&du->st, body, meter_usage_usd(telemetry_prices(), json_object_get(body, "usage")), &dec);
		step_telemetry(du, body, &dec, NULL);
		api_record(du, c, &dec);
	} else if (!strcmp(rq->path, "/v1/steps/fail")) {
		harness_fail(&du->st, body, &dec);
		step_telemetry(du, body, &dec, json_string_value(json_object_get(body, "error")) ?: "step failed");
		api_record(du, c, &dec);
	} else if (!strcmp(rq->path, "/v1/output")) {
		if (!json_object_get(body, "output")) {
			harness_reply(c, 400, err_body("invalid", "\"output\" is missing"));
		} else {
			dec.v = HV_RECORD;
			dec.type = JOURNAL_OUTPUT_SET;
			dec.record = json_pack("{s:O}", "output", json_object_get(body, "output"));
			record_and_reply(du, c, &dec, json_pack("{s:b}", "ok", 1));
		}
	} else {
		harness_reply(c, 404, err_body("not_found", rq->path));
	}
	json_decref(dec.record);
	json_decref(body);
}

static const struct harness_ops harness_ops = {
	.accept = on_accept,
	.request = on_request,
	.closed = on_closed,
};

int durable_listen(struct daemon *d, struct run *r, struct lerr *e)
{
	char dir[PATH_MAX + 16];
	int err;

	if (!r->dur || r->dur->srv)
		return 0;
	snprintf(dir, sizeof(dir), "%s/harness", r->dir);
	if ((err = util_mkdir_p(dir, 0755)) < 0)
		return lerr_set(e, err, "harness: socket directory %s: %s", dir, strerror(-err));
	return harness_listen(d->loop, r->dur->sock, &harness_ops, r->dur, &r->dur->srv, e);
}

/* --- replay, adoption, resume, end --- */

static int replay_cb(void *arg, const struct journal_record *rec)
{
	struct durable *du = arg;
	struct lerr e = { 0 };
	int err = harness_state_apply_raw(&du->st, rec->type, rec->payload, rec->len, &e);

	if (err < 0)
		log_error("run %s: journal record %llu: %s", du->r->id, (unsigned long long)rec->seq, e.msg);
	return err;
}

/* Opens r's journal and rebuilds its state; refuses a damaged one. */
static int durable_open(struct daemon *d, struct run *r, struct lerr *e)
{
	struct journal_opts o = { .max_bytes = d->o.journal_max_bytes };
	struct journal_scan info;
	struct durable *du;
	char path[PATH_MAX + 16];
	uint64_t t0 = util_now_ns(CLOCK_MONOTONIC);
	int err;

	if (r->dur)
		return 0;
	journal_file(r, path, sizeof(path));
	if (access(path, F_OK) < 0)
		return lerr_set(e, ENOENT, "run %s has no journal", r->id);
	if (!(du = durable_new(d, r)))
		return lerr_set(e, ENOMEM, "durable: out of memory");
	if ((err = journal_open(path, &o, replay_cb, du, &info, &du->j, e)) < 0) {
		if (err != -EBADMSG && !e->msg[0])
			lerr_set(e, err, "journal %s: replay failed: %s", path, strerror(-err));
		durable_free(du);
		return err;
	}
	if (info.torn_bytes)
		log_warn("run %s: journal had a torn tail of %llu bytes after record %llu: truncated",
			 r->id, (unsigned long long)info.torn_bytes, (unsigned long long)info.records);
	log_info("run %s: journal replayed: %llu records, %llu steps (%llu completed) in %.2f ms",
		 r->id, (unsigned long long)info.records, (unsigned long long)du->st.steps_begun,
		 (unsigned long long)du->st.steps_completed,
		 (util_now_ns(CLOCK_MONOTONIC) - t0) / 1e6);
	r->dur = du;
	return 0;
}

bool durable_wants_resume(struct daemon *d, struct run *r)
{
	struct spawn_exit x = { 0 };
	char path[PATH_MAX + 16];
	pid_t pid;
	int fd;

	journal_file(r, path, sizeof(path));
	if (access(path, F_OK) < 0)
		return false;
	if (spawn_adopt(r->dir, &pid, &fd) == 0) {
		close(fd);
		return false;
	}
	spawn_read_exit(r->dir, &x);
	return !x.exited;
}

int durable_adopt(struct daemon *d, struct run *r, struct lerr *e)
{
	int err = durable_open(d, r, e);

	if (err == -ENOENT)
		return 0; /* a run from before journals existed */
	if (err < 0)
		return err;
	return durable_listen(d, r, e);
}

int durable_resume(struct daemon *d, struct run *r, struct lerr *e)
{
	struct harness_step *s;
	json_t *rec;
	int err;

	if ((err = durable_open(d, r, e)) < 0)
		return err;
	if (r->dur->st.end) {
		err = lerr_set(e, EALREADY, "run %s: the journal already records its end", r->id);
		goto fail;
	}
	s = harness_state_in_flight(&r->dur->st);
	if (s && r->spec && !r->spec->idempotent) {
		err = lerr_set(e, EPERM, "not resumed: spec.idempotent is false and step \"%s\" "
			       "(attempt %u) was in flight when the workload died", s->id, s->attempt);
		goto fail;
	}
	rec = json_pack("{s:s, s:s, s:I}", "instance_id", r->instance_id, "reason",
			"workload died with lanternd", "completed_steps",
			(json_int_t)r->dur->st.steps_completed);
	if (s)
		json_object_set_new(rec, "in_flight", json_string(s->id));
	err = durable_append(r->dur, JOURNAL_RUN_RESUMED, rec, NULL, e);
	json_decref(rec);
	if (err < 0 || (err = journal_sync(r->dur->j, e)) < 0)
		goto fail;
	log_info("run %s: resuming in instance %s after %llu completed steps%s%s", r->id,
		 r->instance_id, (unsigned long long)r->dur->st.steps_completed,
		 s ? "; re-running in-flight step " : "", s ? s->id : "");
	return 0;
fail:
	/* keep the journal open: durable_finish records how the run ended */
	return err;
}

void durable_finish(struct daemon *d, struct run *r)
{
	struct lerr e = { 0 };
	struct durable *du;
	json_t *rec;

	if (!r->dur && durable_open(d, r, &e) < 0) {
		if (e.msg[0] && strstr(e.msg, "no journal") == NULL)
			log_error("run %s: end not journaled: %s", r->id, e.msg);
		return;
	}
	du = r->dur;
	/* answers still parked: make their records durable now and send them */
	if (journal_sync(du->j, &e) < 0)
		log_error("run %s: %s", r->id, e.msg);
	durable_flush_pending(d, du);
	for (struct pending **pp = &d->dur->pending; *pp;) {
		struct pending *p = *pp;
		if (p->du == du) {
			*pp = p->next;
			json_decref(p->reply);
			free(p);
		} else {
			pp = &p->next;
		}
	}
	if (!du->st.end) {
		rec = json_pack("{s:s, s:i}", "status", run_status_name(r->status), "exit_code", r->exit_code);
		if (r->reason[0])
			json_object_set_new(rec, "reason", json_string(r->reason));
		if (du->st.output)
			json_object_set(rec, "output", du->st.output);
		json_object_set_new(rec, "steps_completed", json_integer((json_int_t)du->st.steps_completed));
		json_object_set_new(rec, "tokens", json_integer((json_int_t)du->st.tokens));
		json_object_set_new(rec, "cost_usd", json_real(du->st.cost_usd));
		json_object_set_new(rec, "cost", telemetry_run_cost(d, r));
		if (durable_append(du, JOURNAL_RUN_COMPLETED, rec, NULL, &e) < 0 ||
		    journal_sync(du->j, &e) < 0)
			log_error("run %s: %s", r->id, e.msg);
		json_decref(rec);
	}
	r->dur = NULL;
	/* nobody reconnects to a run that ended */
	unlink(du->sock);
	durable_free(du);
}

void durable_discard(struct run *r)
{
	struct durable *du = r->dur;

	if (!du)
		return;
	for (struct pending **pp = &du->d->dur->pending; *pp;) {
		struct pending *p = *pp;
		if (p->du == du) {
			*pp = p->next;
			json_decref(p->reply);
			free(p);
		} else {
			pp = &p->next;
		}
	}
	r->dur = NULL;
	durable_free(du);
}

json_t *durable_journal_json(struct daemon *d, struct run *r)
{
	char path[PATH_MAX + 16];

	journal_file(r, path, sizeof(path));
	return json_pack("{s:s, s:s, s:s}", "type", "journal", "run_id", r->id, "path", path);
}
