/* durable.c: the durable subscriber's journals (see durable.h): created at admission
 * with the run_started record, replayed at adoption and resume, closed with the
 * run_completed record (and the run's cost) at the end; and the answers of the harness
 * API parked until the record they depend on is durable.
 *
 * Threads: everything here runs on the event loop, except fdatasync/syncfs, which the
 * journal syncer thread does (a blocking call that would stall every run's API). The
 * loop appends a record (a write() into the page cache), queues the journal with the
 * syncer and parks the answer; the syncer flushes a batch of journals and bumps an
 * eventfd; the loop then sends every parked answer whose record is durable. So one
 * flush serves every run that appended meanwhile (group commit), and the loop never
 * waits on the disk. Exceptions, on purpose: the run_resumed and run_completed records
 * are synced directly, because the run must not start (or be reported ended) before
 * they are on disk; run_started is synced on a thread of its own (d->starts) while the
 * run's other hooks go on, and the ready hook, the last one before the workload, waits
 * for it: nothing runs before it is durable either. A claimed run's journal was made
 * with its pooled sandbox (journal_premake) and is only opened here.
 *
 * With a journal store the same holds for the store's copy: the store thread commits
 * batches beside the syncer and bumps the same eventfd, and a parked answer goes out
 * only when its record is durable in both. run_started and run_resumed wait for the
 * store before the workload starts (a start is refused at once while the store is
 * known to be unreachable, rather than stalling the loop until the bound). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "durable_internal.h"
#include "lantern/identity.h"
#include "lantern/util.h"

struct pending {
	struct durable_run *du;
	void *peer;                 /* NULL once the caller went away */
	uint64_t seq;               /* answer when the journal is durable up to here */
	int status;
	char *reply;
	size_t len;
	bool end;                   /* end the run after answering */
	enum run_status end_as;
	char end_reason[512];
	struct pending *next;
};

static struct durable_run *du_of(const struct durable *d, const struct run *r)
{
	return run_slot(r, d->slot);
}

/* Every journal append of lanternd goes through here (the crash point counts them);
 * the state changes from the record as it was written, as in a replay. */
int durable_append(struct durable_run *du, unsigned type, const char *rec, size_t len, uint64_t *seq,
		   struct lerr *e)
{
	struct durable *d = du->d;
	uint64_t off = journal_size(du->j);
	int err;

	if (!rec)
		return lerr_set(e, ENOMEM, "journal of %s: cannot encode a %s record", run_id(du->r),
				journal_type_name(type));
	if ((err = journal_append(du->j, type, rec, len, seq, e)) < 0)
		return err;
	if ((err = harness_state_apply(&du->st, type, rec, len, off, e)) < 0)
		return err;
	if (type == JOURNAL_STEP_COMPLETED)
		meter_run_set_tally(d->meter, du->r, &du->st.tally);
	if (d->crash_at && ++d->appends == d->crash_at) {
		if (d->crash_kill)
			runs_kill_all(d->runs);
		log_warn("test crash point: exiting after journal append %ld", d->appends);
		_exit(86);
	}
	return 0;
}

/* A record of lantern's own data (no workload bytes in it) from a JSON value. */
static int append_json(struct durable_run *du, unsigned type, json_t *rec, uint64_t *seq,
		       struct lerr *e)
{
	char *s = rec ? json_dumps(rec, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
	int err = durable_append(du, type, s, s ? strlen(s) : 0, seq, e);

	free(s);
	return err;
}

static struct durable_run *du_new(struct durable *d, struct run *r)
{
	struct durable_run *du = calloc(1, sizeof(*du));
	const struct spec *s = run_spec(r);

	if (!du)
		return NULL;
	du->d = d;
	du->r = r;
	harness_state_init(&du->st);
	/* in a directory of its own: an OCI sandbox bind-mounts the directory, so it sees
	 * the socket a restarted lanternd binds again (a bind-mounted socket file would
	 * stay the old, dead inode) */
	snprintf(du->dir, sizeof(du->dir), "%s/harness", run_dir(r));
	snprintf(du->sock, sizeof(du->sock), "%s/harness.sock", du->dir);
	du->lim.max_steps = s ? s->limits.max_steps : 0;
	du->lim.loop_threshold = d->o.loop_threshold;
	return du;
}

static void drop_pending(struct durable *d, struct durable_run *du)
{
	struct pending **pp = &d->pending;

	while (*pp) {
		struct pending *p = *pp;

		if (p->du == du) {
			*pp = p->next;
			free(p->reply);
			free(p);
		} else {
			pp = &p->next;
		}
	}
	d->pending_tail = pp;
}

static void du_free(struct durable_run *du)
{
	if (!du)
		return;
	drop_pending(du->d, du);
	if (du->listener)
		du->d->tp->unlisten(du->d->tp_arg, du->listener);
	if (du->j) {
		/* the start syncer holds it only until on_ready has seen run_started durable
		 * (start_seq 0); the group syncer is asked for it only after that, when the
		 * workload calls: so the two never share the journal's queue fields */
		if (du->start_seq)
			journal_syncer_forget(du->d->starts, du->j);
		journal_syncer_forget(du->d->syncer, du->j);
		journal_close(du->j);
	}
	harness_state_free(&du->st);
	free(du);
}

static void journal_file(const struct run *r, char *out, size_t len)
{
	snprintf(out, len, "%s/journal", run_dir(r));
}

/* A run's key in the store: the control plane's id, which every node that may resume
 * it knows; a standalone run's own id. */
static const char *store_key(const struct run *r)
{
	return run_ref(r)[0] ? run_ref(r) : run_id(r);
}

static int du_replicate(struct durable *d, struct durable_run *du, struct lerr *e)
{
	return d->store ? journal_replicate(du->j, d->store, store_key(du->r), run_epoch(du->r), e) : 0;
}

/* Waits until the store holds du's journal up to seq (the records before a start). */
static int store_wait(struct durable_run *du, uint64_t seq, struct lerr *e)
{
	char why[512];
	int err = journal_store_wait(du->j, seq);

	if (err < 0) {
		journal_store_error(du->j, why, sizeof(why));
		return lerr_set(e, -err, "%s", why);
	}
	return 0;
}

/* ---- answers parked until their record is durable ---- */

void durable_reply_error(struct durable *d, void *peer, int status, const char *code, const char *reason)
{
	struct json_text t;
	size_t n;
	char *body;

	json_text_open(&t);
	json_text_str(&t, "error", code);
	json_text_str(&t, "reason", reason);
	body = json_text_take(&t, &n);
	d->tp->reply(d->tp_arg, peer, status, body, body ? n : 0);
	free(body);
}

void durable_park(struct durable_run *du, void *peer, uint64_t seq, int status, char *reply,
		  size_t len, bool end, enum run_status as, const char *why)
{
	struct durable *d = du->d;
	struct pending *p = calloc(1, sizeof(*p));

	if (!p) {
		free(reply);
		durable_reply_error(d, peer, 500, "internal", "lanternd: out of memory");
		return;
	}
	p->du = du;
	p->peer = peer;
	p->seq = seq;
	p->status = status;
	p->reply = reply;
	p->len = len;
	p->end = end;
	p->end_as = as;
	snprintf(p->end_reason, sizeof(p->end_reason), "%s", why ? why : "");
	/* at the tail without walking the list: with hundreds of runs parked, a walk per
	 * park made each wake-up's parking quadratic */
	*d->pending_tail = p;
	d->pending_tail = &p->next;
	journal_syncer_request(d->syncer, du->j);
}

void durable_forget_peer(struct durable *d, void *peer)
{
	for (struct pending *p = d->pending; p; p = p->next)
		if (p->peer == peer)
			p->peer = NULL;
	/* a secret request waiting for the API server: its read is called off */
	if (d->o.identity)
		identity_secret_forget(d->o.identity, peer);
}

/* Sends p's answer if its record is durable (or can never be); true when done. */
static bool pending_try(struct pending *p)
{
	struct durable_run *du = p->du;
	struct durable *d = du->d;
	int serr = journal_sync_error(du->j), rerr;
	char why[512];

	if (!serr && (rerr = journal_store_error(du->j, why, sizeof(why)))) {
		/* the record is not in the store, and never will be: the caller must not act
		 * on it */
		if (p->peer)
			durable_reply_error(d, p->peer, rerr == -ESTALE ? 409 : 503,
					    rerr == -ESTALE ? "fenced" : "journal_store", why);
		free(p->reply);
		if (rerr == -ESTALE)
			run_fence(du->r, why);
		else
			run_end(du->r, RUN_FAILED, why);
		return true;
	}
	if (!serr && (journal_durable_seq(du->j) < p->seq ||
		      (journal_replicated(du->j) && journal_stored_seq(du->j) < p->seq)))
		return false;
	if (serr) {
		char why[512];

		snprintf(why, sizeof(why), "journal %s: sync failed: %s: the run cannot continue safely",
			 journal_path(du->j), strerror(-serr));
		if (p->peer)
			durable_reply_error(d, p->peer, 500, "journal", why);
		free(p->reply);
		run_end(du->r, RUN_FAILED, why);
		return true;
	}
	if (p->peer)
		d->tp->reply(d->tp_arg, p->peer, p->status, p->reply, p->len);
	free(p->reply);
	if (p->end)
		run_end(du->r, p->end_as, p->end_reason);
	return true;
}

static void flush_pending(struct durable *d, struct durable_run *only)
{
	struct pending *list = d->pending, *keep = NULL, **kt = &keep;

	d->pending = NULL;
	d->pending_tail = &d->pending;
	while (list) {
		struct pending *p = list;

		list = p->next;
		p->next = NULL;
		if ((!only || p->du == only) && pending_try(p)) {
			free(p);
		} else {
			*kt = p;
			kt = &p->next;
		}
	}
	/* answers sent above may have parked new ones meanwhile: keep their order after */
	*kt = d->pending;
	if (!d->pending)
		d->pending_tail = keep ? kt : &d->pending;
	d->pending = keep;
}

static void on_synced(struct loop *l, int fd, uint32_t events, void *arg)
{
	struct durable *d = arg;
	uint64_t n;

	if (read(fd, &n, sizeof(n)) < 0 && errno != EAGAIN)
		log_warn("durable: reading the syncer's eventfd: %s", strerror(errno));
	flush_pending(d, NULL);
}

/* ---- journals: open, replay ---- */

static int replay_cb(void *arg, const struct journal_record *rec)
{
	struct durable_run *du = arg;
	struct lerr e = { 0 };
	int err = harness_state_apply(&du->st, rec->type, rec->payload, rec->len, rec->offset, &e);

	if (err < 0)
		log_error("run %s: journal record %llu: %s", run_id(du->r), (unsigned long long)rec->seq, e.msg);
	return err;
}

/* Opens r's journal and rebuilds its state; refuses a damaged one. */
static int du_open(struct durable *d, struct run *r, struct lerr *e)
{
	struct journal_opts o = { .max_bytes = d->o.journal_max_bytes };
	struct journal_scan info;
	struct durable_run *du;
	char path[PATH_MAX + 16];
	uint64_t t0 = util_now_ns(CLOCK_MONOTONIC);
	int err;

	if (du_of(d, r))
		return 0;
	journal_file(r, path, sizeof(path));
	if (access(path, F_OK) < 0)
		return lerr_set(e, ENOENT, "run %s has no journal", run_id(r));
	if (!(du = du_new(d, r)))
		return lerr_set(e, ENOMEM, "durable: out of memory");
	if ((err = journal_open(path, &o, replay_cb, du, &info, &du->j, e)) < 0) {
		if (err != -EBADMSG && !e->msg[0])
			lerr_set(e, err, "journal %s: replay failed: %s", path, strerror(-err));
		du_free(du);
		return err;
	}
	if (info.torn_bytes)
		log_warn("run %s: journal had a torn tail of %llu bytes after record %llu: truncated",
			 run_id(r), (unsigned long long)info.torn_bytes, (unsigned long long)info.records);
	if ((err = du_replicate(d, du, e)) < 0) {
		du_free(du);
		return err;
	}
	log_info("run %s: journal replayed: %llu records, %llu steps (%llu completed) in %.2f ms",
		 run_id(r), (unsigned long long)info.records, (unsigned long long)du->st.steps_begun,
		 (unsigned long long)du->st.steps_completed, (util_now_ns(CLOCK_MONOTONIC) - t0) / 1e6);
	run_set_slot(r, d->slot, du);
	meter_run_set_tally(d->meter, r, &du->st.tally);
	return 0;
}

static int du_listen(struct durable *d, struct durable_run *du, struct lerr *e)
{
	int err, fd;

	if (du->listener)
		return 0;
	/* a claimed sandbox's socket was bound when it was made (pool.c) */
	if ((fd = run_take_harness_fd(du->r)) >= 0)
		return d->tp->listen(d->tp_arg, du, du->sock, fd, &du->listener, e);
	if ((err = util_mkdir_p(du->dir, 0755)) < 0)
		return lerr_set(e, err, "harness: socket directory %s: %s", du->dir, strerror(-err));
	return d->tp->listen(d->tp_arg, du, du->sock, -1, &du->listener, e);
}

/* ---- the run hooks ---- */

/* A new run's journal. A claimed run's was made with its pooled sandbox (pool.c,
 * journal_premake: created, preallocated, durable in the sandbox's directory), which
 * was renamed to the run's since: what is left to make durable with run_started is
 * that rename, the entry in STATE/runs (two levels above the file). A cold run's is
 * created now, its entry in the run's directory synced with run_started. */
static int journal_begin(struct run *r, const char *path, const struct journal_opts *o,
			 struct journal **out, struct lerr *e)
{
	if (run_pool(r))
		return journal_open_premade(path, o, 2, out, e);
	return journal_create(path, o, out, e);
}

static int on_admitted(void *arg, struct run *r, json_t *input, struct lerr *e)
{
	struct durable *d = arg;
	struct journal_opts o = { .max_bytes = d->o.journal_max_bytes };
	struct durable_run *du = du_new(d, r);
	const struct spec *s = run_spec(r);
	char path[PATH_MAX + 16];
	json_t *rec;
	int err;

	uint64_t seq;
	char why[512];

	if (!du)
		return lerr_set(e, ENOMEM, "durable: out of memory");
	if (d->store && (err = journal_store_health(d->store, why, sizeof(why))) < 0) {
		du_free(du);
		return lerr_set(e, -err, "run refused: its journal cannot be replicated: %s", why);
	}
	journal_file(r, path, sizeof(path));
	if ((err = journal_begin(r, path, &o, &du->j, e)) < 0) {
		du_free(du);
		return err;
	}
	if ((err = du_replicate(d, du, e)) < 0) {
		du_free(du);
		return err;
	}
	rec = json_pack("{s:s, s:s, s:O, s:O, s:I}", "run_id", run_id(r), "instance_id", run_instance_id(r),
			"spec", s->json ? s->json : json_null(), "input", input ? input : json_null(),
			"created", (json_int_t)run_created(r));
	err = append_json(du, JOURNAL_RUN_STARTED, rec, &seq, e);
	json_decref(rec);
	if (err < 0) {
		du_free(du);
		return err;
	}
	/* durable while the other hooks run; on_ready waits for it */
	du->start_seq = seq;
	journal_syncer_request(d->starts, du->j);
	run_set_slot(r, d->slot, du);
	return 0;
}

/* Nothing runs before its run_started record is durable, in the file (the directory
 * entry that reaches it included) and in the store when there is one. */
static int on_ready(void *arg, struct run *r, struct lerr *e)
{
	struct durable *d = arg;
	struct durable_run *du = du_of(d, r);
	uint64_t seq;
	int err;

	if (!du || !du->start_seq)
		return 0;
	seq = du->start_seq;
	if ((err = journal_syncer_wait(d->starts, du->j, seq)) < 0)
		return lerr_set(e, -err, "journal %s: run_started is not durable: %s", journal_path(du->j),
				strerror(-err));
	if ((err = store_wait(du, seq, e)) < 0)
		return err;
	du->start_seq = 0;
	return 0;
}

static int on_resumed(void *arg, struct run *r, struct lerr *e)
{
	struct durable *d = arg;
	struct harness_step *s;
	struct durable_run *du;
	uint64_t seq;
	char why[512];
	json_t *rec;
	int err;

	if (d->store && (err = journal_store_health(d->store, why, sizeof(why))) < 0)
		return lerr_set(e, -err, "not resumed: its journal cannot be replicated: %s", why);
	if ((err = du_open(d, r, e)) < 0)
		return err;
	du = du_of(d, r);
	if (du->st.end)
		return lerr_set(e, EALREADY, "run %s: the journal already records its end", run_id(r));
	s = harness_state_in_flight(&du->st);
	if (s && run_spec(r) && !run_spec(r)->idempotent)
		return lerr_set(e, EPERM, "not resumed: spec.idempotent is false and step \"%s\" "
				"(attempt %u) was in flight when the workload died", s->id, s->attempt);
	rec = json_pack("{s:s, s:s, s:I}", "instance_id", run_instance_id(r), "reason",
			run_epoch(r) ? "the workload was gone (lanternd or its node went down): continued "
			"under its lease" : "workload died with lanternd", "completed_steps",
			(json_int_t)du->st.steps_completed);
	if (s)
		json_object_set_new(rec, "in_flight", json_string(s->id));
	if (run_epoch(r))
		json_object_set_new(rec, "epoch", json_integer(run_epoch(r)));
	err = append_json(du, JOURNAL_RUN_RESUMED, rec, &seq, e);
	json_decref(rec);
	if (err < 0 || (err = journal_sync(du->j, e)) < 0)
		return err;
	if ((err = store_wait(du, seq, e)) < 0) {
		/* another node holds the run now (a lanternd restarted after its lease moved):
		 * this copy must neither start nor report an end */
		if (err == -ESTALE)
			run_fence(r, e->msg);
		return err;
	}
	log_info("run %s: resuming in instance %s after %llu completed steps%s%s", run_id(r),
		 run_instance_id(r), (unsigned long long)du->st.steps_completed,
		 s ? "; re-running in-flight step " : "", s ? s->id : "");
	return 0;
}

static int on_prepared(void *arg, struct run *r, struct lerr *e)
{
	struct durable *d = arg;
	struct durable_run *du = du_of(d, r);

	return du ? du_listen(d, du, e) : 0;
}

static void on_env(void *arg, struct run *r, struct run_env *env)
{
	struct durable *d = arg;
	struct durable_run *du = du_of(d, r);

	if (!du || !du->listener)
		return;
	/* read-only: connect() on a Unix socket needs no write access to the mount, and a
	 * writable, unbounded directory of the node's state would let a sandbox's root
	 * fill the state filesystem */
	run_env_set_path(env, "LANTERN_HARNESS_SOCKET", du->dir, "/run/lantern/harness", "harness.sock",
			 true);
	if (d->cli[0])
		run_env_set_host(env, "LANTERN_CLI", d->cli);
}

static int on_adopted(void *arg, struct run *r, struct lerr *e)
{
	struct durable *d = arg;
	int err = du_open(d, r, e);

	if (err == -ENOENT) {
		/* a run from before journals existed */
		e->msg[0] = '\0';
		return 0;
	}
	if (err < 0)
		return err;
	return du_listen(d, du_of(d, r), e);
}

static bool on_can_resume(void *arg, struct run *r)
{
	char path[PATH_MAX + 16];

	journal_file(r, path, sizeof(path));
	return access(path, F_OK) == 0;
}

/* The receipt, signed over the journal's head (run_completed), as its last record. */
static void seal(struct durable *d, struct durable_run *du, const json_t *cost)
{
	struct identity_journal jh = {
		.records = journal_seq(du->j), .cost = cost,
		.cost_usd = meter_tally_usd(meter_prices(d->meter), &du->st.tally),
		.tokens = util_sat_i64(du->st.tally.total), .steps_completed = du->st.steps_completed,
	};
	struct json_text t;
	struct lerr e = { 0 };
	char *jws, *text;
	size_t n;

	if (!d->o.identity)
		return;
	journal_head(du->j, jh.head);
	if (!(jws = identity_receipt_seal(d->o.identity, du->r, &jh)))
		return;
	json_text_open(&t);
	json_text_str(&t, "receipt", jws);
	text = json_text_take(&t, &n);
	free(jws);
	if (!text || durable_append(du, JOURNAL_RECEIPT, text, n, NULL, &e) < 0 || journal_sync(du->j, &e) < 0)
		log_error("run %s: receipt not journaled: %s", run_id(du->r), e.msg[0] ? e.msg : "out of memory");
	free(text);
}

/* The run_completed record: how the run ended, its output (the bytes of the last
 * output_set record, read back from the journal), its steps, tokens and cost; then the
 * receipt sealed over it. Both durable before anyone is told of the end. */
static void append_completed(struct durable *d, struct durable_run *du, struct run *r)
{
	char *cost = NULL, *out_rec = NULL, *text, why[512];
	const char *output = NULL;
	struct json_text t;
	size_t n, olen = 0;
	struct lerr e = { 0 };
	json_t *cj = meter_run_cost(d->meter, r);

	cost = cj ? json_dumps(cj, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
	if (du->st.output_off && journal_read(du->j, du->st.output_off, NULL, &out_rec, &n, &e) == 0)
		output = harness_record_member(out_rec, n, "output", &olen);
	else if (du->st.output_off)
		log_error("run %s: its output is not in the end record: %s", run_id(r), e.msg);
	json_text_open(&t);
	json_text_raw(&t, "cost", cost ? cost : "{}", cost ? strlen(cost) : 2);
	json_text_real(&t, "cost_usd", meter_tally_usd(meter_prices(d->meter), &du->st.tally));
	json_text_int(&t, "exit_code", run_exit_code(r));
	if (output)
		json_text_raw(&t, "output", output, olen);
	if (run_reason(r)[0])
		json_text_str(&t, "reason", run_reason(r));
	json_text_str(&t, "status", run_status_name(run_status(r)));
	json_text_uint(&t, "steps_completed", du->st.steps_completed);
	json_text_uint(&t, "tokens", util_sat_i64(du->st.tally.total));
	text = json_text_take(&t, &n);
	e.msg[0] = '\0';
	if (durable_append(du, JOURNAL_RUN_COMPLETED, text, n, NULL, &e) < 0 || journal_sync(du->j, &e) < 0) {
		log_error("run %s: %s", run_id(r), e.msg);
	} else {
		seal(d, du, cj);
		/* the store's copy too, its receipt included, unless the store is known away
		 * (or the run was fenced: its copy is no longer this node's to extend) */
		if (journal_replicated(du->j) && !run_fenced(r) &&
		    journal_store_health(d->store, why, sizeof(why)) == 0 &&
		    store_wait(du, journal_seq(du->j), &e) < 0)
			log_warn("run %s: its end is not in the journal store: %s", run_id(r), e.msg);
	}
	json_decref(cj);
	free(text);
	free(out_rec);
	free(cost);
}

static void on_ended(void *arg, struct run *r)
{
	struct durable *d = arg;
	struct durable_run *du;
	struct lerr e = { 0 };

	if (!du_of(d, r) && du_open(d, r, &e) < 0) {
		if (e.msg[0] && !strstr(e.msg, "no journal"))
			log_error("run %s: end not journaled: %s", run_id(r), e.msg);
		return;
	}
	du = du_of(d, r);
	/* answers still parked: make their records durable now and send them */
	if (journal_sync(du->j, &e) < 0)
		log_error("run %s: %s", run_id(r), e.msg);
	flush_pending(d, du);
	drop_pending(d, du);
	if (run_fenced(r))
		journal_replicate_stop(du->j);
	if (!du->st.end)
		append_completed(d, du, r);
	/* nothing more is appended to an ended run: its preallocated space goes back */
	if (journal_trim(du->j, &e) < 0)
		log_warn("run %s: %s", run_id(r), e.msg);
	/* nobody reconnects to a run that ended */
	unlink(du->sock);
	du_free(du);
	run_set_slot(r, d->slot, NULL);
}

static void on_free(void *arg, struct run *r)
{
	struct durable *d = arg;

	du_free(du_of(d, r));
	run_set_slot(r, d->slot, NULL);
}

struct first_only {
	uint64_t n;
	bool other;
};

static int count_record(void *arg, const struct journal_record *rec)
{
	struct first_only *f = arg;

	f->n++;
	f->other |= rec->type != JOURNAL_RUN_STARTED;
	return 0;
}

/* A run directory with no run.json: its journal, if it has one, is kept when it holds
 * more than the run's first record. A new run's journal holds run_started alone until
 * its run.json is written (the workload's first step record comes after: the loop
 * writes run.json right after the start); more means a run resumed here from another
 * node's journal (its directory seeded), whose history must not be lost. A journal
 * that cannot be read is kept too. */
static bool on_keeps_dir(void *arg, const char *id, const char *dir)
{
	char path[PATH_MAX + 16];
	struct first_only f = { 0 };
	struct journal_scan info;
	struct lerr e = { 0 };
	struct stat st;
	int err;

	snprintf(path, sizeof(path), "%s/journal", dir);
	if (lstat(path, &st) < 0)
		return errno != ENOENT;
	if (!S_ISREG(st.st_mode))
		return true;
	if ((err = journal_scan(path, count_record, &f, &info, &e)) < 0) {
		log_warn("run %s: journal %s: %s", id, path, e.msg);
		return true;
	}
	return f.n > 1 || f.other;
}

static const struct run_hooks durable_hooks = {
	.name = "durable",
	.admitted = on_admitted,
	.resumed = on_resumed,
	.prepared = on_prepared,
	.env = on_env,
	.ready = on_ready,
	.ended = on_ended,
	.adopted = on_adopted,
	.can_resume = on_can_resume,
	.keeps_dir = on_keeps_dir,
	.free = on_free,
};

int durable_subscribe(struct durable *d, struct runs *t, struct lerr *e)
{
	d->runs = t;
	if ((d->slot = runs_subscribe(t, &durable_hooks, d)) < 0)
		return lerr_set(e, -d->slot, "durable: cannot subscribe to runs");
	return 0;
}

struct journal_store *durable_store(struct durable *d)
{
	return d->store;
}

void durable_set_transport(struct durable *d, const struct durable_transport *tp, void *arg)
{
	d->tp = tp;
	d->tp_arg = arg;
}

json_t *durable_journal_json(struct durable *d, struct run *r)
{
	char path[PATH_MAX + 16];

	journal_file(r, path, sizeof(path));
	return json_pack("{s:s, s:s, s:s}", "type", "journal", "run_id", run_id(r), "path", path);
}

int durable_open(struct loop *l, const struct durable_opts *o, struct meter *m, struct durable **out,
		 struct lerr *e)
{
	struct durable *d = calloc(1, sizeof(*d));
	const char *crash = getenv("LANTERN_TEST_CRASH_AT");
	char logpath[PATH_MAX];
	int err;

	if (!d)
		return lerr_set(e, ENOMEM, "durable: out of memory");
	d->loop = l;
	d->pending_tail = &d->pending;
	d->o = *o;
	d->meter = m;
	d->tp = &durable_local_transport;
	snprintf(d->cli, sizeof(d->cli), "%s", o->cli ? o->cli : "");
	if (crash && *crash) {
		d->crash_at = strtol(crash, NULL, 10);
		d->crash_kill = getenv("LANTERN_TEST_CRASH_KILL") &&
				!strcmp(getenv("LANTERN_TEST_CRASH_KILL"), "1");
		log_warn("test crash point armed: exit after journal append %ld%s", d->crash_at,
			 d->crash_kill ? ", killing workloads" : "");
	}
	/* the step syncer's node log; the start syncer's first sync of a journal is the
	 * one that makes its directory entry durable, which the log cannot */
	if (o->state_dir)
		snprintf(logpath, sizeof(logpath), "%s/journal.log", o->state_dir);
	d->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (d->efd < 0) {
		err = lerr_set(e, errno, "durable: eventfd: %s", strerror(errno));
		free(d);
		return err;
	}
	if ((err = loop_add(l, d->efd, EPOLLIN, on_synced, d)) < 0 ||
	    (err = journal_syncer_start_logged(d->efd, o->state_dir ? logpath : NULL, 0, &d->syncer, e)) < 0 ||
	    (err = journal_syncer_start(-1, &d->starts, e)) < 0) {
		if (!e->msg[0])
			lerr_set(e, err, "durable: watching the syncer: %s", strerror(-err));
		journal_syncer_stop(d->syncer);
		close(d->efd);
		free(d);
		return err;
	}
	if (o->store_url) {
		/* the store's batches wake the same eventfd as the syncer's */
		struct journal_store_opts so = {
			.url = o->store_url, .owner = o->store_owner, .notify_fd = d->efd,
			.give_up_ms = o->store_timeout_ms,
		};

		if ((err = journal_store_open(&so, &d->store, e)) < 0) {
			journal_syncer_stop(d->starts);
			journal_syncer_stop(d->syncer);
			loop_del(l, d->efd);
			close(d->efd);
			free(d);
			return err;
		}
	}
	*out = d;
	return 0;
}

void durable_close(struct durable *d)
{
	if (!d)
		return;
	journal_store_close(d->store);
	free(d);
}
