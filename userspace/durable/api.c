/* api.c: the harness API's calls (docs/harness-api.md), typed (struct harness_call, as
 * call.c decoded them where the workload's bytes were read): each call that changes the
 * run becomes a journal record, and its answer waits until that record is durable.
 * Budgets: max_steps and the loop guard are the step state's (harness_begin),
 * max_tokens and max_cost_usd the meter's, checked before a step begins and after it
 * completes. Answers are JSON text built here from lantern's own data; a replayed
 * step's result and the run's input are read back from the journal and passed on as
 * the bytes they are, never parsed. /v1/secrets is handed to identity whole: the
 * signature check and the secrets are its. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "durable_internal.h"
#include "lantern/identity.h"
#include "lantern/util.h"

/* Only processes of this run's instance may use its socket: the caller's cgroup (v2
 * line of /proc/PID/cgroup) must be the instance's directory or below it. */
bool durable_caller_ok(struct durable_run *du, pid_t pid, char *why, size_t len)
{
	char path[64], want[256], *buf = NULL, *line, *save = NULL;
	bool ok = false;

	snprintf(want, sizeof(want), "/%s/%s", runs_cgroup_node(du->d->runs)->root, run_cgroup(du->r)->name);
	snprintf(path, sizeof(path), "/proc/%d/cgroup", (int)pid);
	if (pid > 0 && util_read_file(path, &buf, NULL) == 0) {
		for (line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
			size_t wl = strlen(want);

			if (!strncmp(line, "0::", 3) && !strncmp(line + 3, want, wl) &&
			    (line[3 + wl] == '\0' || line[3 + wl] == '/'))
				ok = true;
		}
	}
	free(buf);
	if (!ok) {
		snprintf(why, len, "harness: pid %d is not a process of run %s (instance %s): each "
			 "instance may use only its own harness socket", (int)pid, run_id(du->r),
			 run_instance_id(du->r));
		log_warn("run %s: %s", run_id(du->r), why);
	}
	return ok;
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

static char *text(struct json_text *t, size_t *n)
{
	return json_text_take(t, n);
}

/* Appends dec's record; a full journal ends the run (the bound is there to stop it)
 * and answers 507. False when the caller was answered already. */
static bool append_or_fail(struct durable_run *du, void *peer, struct harness_decision *dec, uint64_t *seq)
{
	struct lerr e = { 0 };

	if (durable_append(du, dec->type, dec->record, dec->record_len, seq, &e) == 0)
		return true;
	log_error("run %s: %s", run_id(du->r), e.msg);
	durable_reply_error(du->d, peer, 507, "journal", e.msg);
	run_end(du->r, RUN_FAILED, e.msg);
	return false;
}

static void record_and_reply(struct durable_run *du, void *peer, struct harness_decision *dec,
			     char *reply, size_t len)
{
	uint64_t seq;

	if (append_or_fail(du, peer, dec, &seq))
		durable_park(du, peer, seq, 200, reply, len, false, 0, NULL);
	else
		free(reply);
}

/* A step that completed or failed is told to the run's subscribers (its span). */
static void step_ended(struct durable_run *du, const struct harness_call *c, const struct harness_decision *dec,
		       const char *error)
{
	struct harness_step *s = harness_state_step(&du->st, c->step_id);

	if (dec->v == HV_RECORD && s) {
		struct run_step st = { .id = c->step_id, .kind = s->kind, .attempt = dec->attempt,
				       .usage = c->usage.present ? &c->usage : NULL, .tool = c->tool,
				       .error = error };

		run_step_ended(du->r, &st);
	}
}

/* The replayed step's record with "action":"replay" first (records are sorted objects,
 * so the key goes right after the brace). */
static void reply_replay(struct durable_run *du, void *peer, const struct harness_step *s)
{
	char *rec = NULL, *out;
	struct lerr e = { 0 };
	size_t n;

	if (journal_read(du->j, s->rec_off, NULL, &rec, &n, &e) < 0 || n < 2 || rec[0] != '{') {
		log_error("run %s: step %s: %s", run_id(du->r), s->id, e.msg[0] ? e.msg : "record unreadable");
		durable_reply_error(du->d, peer, 500, "journal", e.msg[0] ? e.msg : "the step's record is unreadable");
		free(rec);
		return;
	}
	if (!(out = malloc(n + 20))) {
		free(rec);
		durable_reply_error(du->d, peer, 500, "internal", "lanternd: out of memory");
		return;
	}
	n = (size_t)snprintf(out, n + 20, "{\"action\":\"replay\"%s%s", n > 2 ? "," : "", rec + 1);
	free(rec);
	/* what was replayed must itself be durable before anyone acts on it */
	durable_park(du, peer, journal_seq(du->j), 200, out, n, false, 0, NULL);
}

static void api_begin(struct durable_run *du, void *peer, const struct harness_call *c)
{
	struct harness_decision dec;
	struct json_text t;
	char why[512], *body;
	size_t n;

	harness_begin(&du->st, &du->lim, c, &dec);
	/* a new attempt must have budget left; an in-flight step re-running after a crash
	 * is the same attempt and goes on */
	if (dec.v == HV_PROCEED && !dec.reissued &&
	    meter_run_budget(du->d->meter, du->r, METER_REACHED, why, sizeof(why))) {
		free(dec.record);
		dec.record = NULL;
		dec.v = HV_BUDGET;
		snprintf(dec.reason, sizeof(dec.reason), "%s", why);
	}
	switch (dec.v) {
	case HV_REPLAY:
		reply_replay(du, peer, harness_state_step(&du->st, c->step_id));
		break;
	case HV_PROCEED:
		json_text_open(&t);
		json_text_str(&t, "action", "proceed");
		json_text_uint(&t, "attempt", dec.attempt);
		json_text_str(&t, "idempotency_key", dec.key);
		json_text_str(&t, "step_id", c->step_id);
		body = text(&t, &n);
		run_step_begun(du->r, c->step_id);
		record_and_reply(du, peer, &dec, body, n);
		break;
	case HV_BUDGET:
		log_warn("run %s: %s", run_id(du->r), dec.reason);
		json_text_open(&t);
		json_text_str(&t, "error", dec.loop ? "loop_detected" : "budget_exceeded");
		json_text_str(&t, "reason", dec.reason);
		body = text(&t, &n);
		durable_park(du, peer, journal_seq(du->j), 429, body, n, true, RUN_BUDGET_EXCEEDED, dec.reason);
		break;
	default:
		durable_reply_error(du->d, peer, status_of(dec.v), dec.v == HV_INVALID ? "invalid" : "conflict",
				    dec.reason);
	}
	free(dec.record);
}

static void put_totals(struct durable_run *du, struct json_text *t)
{
	json_text_real(t, "cost_usd", meter_tally_usd(meter_prices(du->d->meter), &du->st.tally));
	json_text_uint(t, "tokens", util_sat_i64(du->st.tally.total));
}

static void api_record(struct durable_run *du, void *peer, struct harness_decision *dec)
{
	char why[512] = "", *body, *tot;
	struct json_text t;
	uint64_t seq;
	size_t n, tn;
	bool over;

	if (dec->v == HV_DONE) {
		json_text_open(&t);
		json_text_bool(&t, "already_recorded", true);
		json_text_uint(&t, "attempt", dec->attempt);
		json_text_bool(&t, "ok", true);
		body = text(&t, &n);
		durable_park(du, peer, journal_seq(du->j), 200, body, n, false, 0, NULL);
		return;
	}
	if (dec->v != HV_RECORD) {
		durable_reply_error(du->d, peer, status_of(dec->v), dec->v == HV_INVALID ? "invalid" : "conflict",
				    dec->reason);
		return;
	}
	if (dec->type != JOURNAL_STEP_COMPLETED) {
		json_text_open(&t);
		if (dec->type != JOURNAL_OUTPUT_SET)
			json_text_uint(&t, "attempt", dec->attempt);
		json_text_bool(&t, "ok", true);
		body = text(&t, &n);
		record_and_reply(du, peer, dec, body, n);
		return;
	}
	if (!append_or_fail(du, peer, dec, &seq))
		return;
	/* the after-completion check, on the tally that now holds this step */
	over = meter_run_budget(du->d->meter, du->r, METER_EXCEEDED, why, sizeof(why));
	json_text_open(&t);
	put_totals(du, &t);
	tot = text(&t, &tn);
	json_text_open(&t);
	json_text_uint(&t, "attempt", dec->attempt);
	if (over)
		json_text_str(&t, "budget_exceeded", why);
	json_text_bool(&t, "ok", true);
	json_text_raw(&t, "totals", tot ? tot : "{}", tot ? tn : 2);
	body = text(&t, &n);
	free(tot);
	if (over)
		log_warn("run %s: %s", run_id(du->r), why);
	durable_park(du, peer, seq, 200, body, n, over, RUN_BUDGET_EXCEEDED, why);
}

/* GET /v1/input: the input as it is in the run_started record. */
static void api_input(struct durable_run *du, void *peer)
{
	char *rec = NULL, *body;
	const char *input = NULL;
	struct json_text t;
	struct lerr e = { 0 };
	size_t n, ilen = 0;

	if (journal_read(du->j, du->st.started_off, NULL, &rec, &n, &e) == 0)
		input = harness_record_member(rec, n, "input", &ilen);
	json_text_open(&t);
	json_text_raw(&t, "input", input ? input : "null", input ? ilen : 4);
	json_text_str(&t, "run_id", run_id(du->r));
	body = text(&t, &n);
	free(rec);
	du->d->tp->reply(du->d->tp_arg, peer, 200, body, body ? n : 0);
	free(body);
}

static void api_run(struct durable_run *du, void *peer)
{
	struct json_text t;
	char *body;
	size_t n;

	json_text_open(&t);
	put_totals(du, &t);
	json_text_str(&t, "instance_id", run_instance_id(du->r));
	json_text_uint(&t, "resumes", du->st.resumes);
	json_text_str(&t, "run_id", run_id(du->r));
	json_text_uint(&t, "steps_begun", du->st.steps_begun);
	json_text_uint(&t, "steps_completed", du->st.steps_completed);
	body = text(&t, &n);
	du->d->tp->reply(du->d->tp_arg, peer, 200, body, body ? n : 0);
	free(body);
}

/* An answer of identity's, now or once its source was read; it may hold a secret. */
static void secret_answer(void *arg, void *peer, int status, char *body, size_t n)
{
	struct durable *d = arg;

	d->tp->reply(d->tp_arg, peer, status, body ? body : "{}", body ? n : 2);
	if (body)
		sodium_memzero(body, n);
	free(body);
}

/* /v1/secrets: identity's, whole (the signature check and the secrets). An expired
 * k8s:// lease is answered when the API server has (durable_forget_peer drops it). */
static void api_secret(struct durable_run *du, void *peer, const struct harness_call *c)
{
	char *body = NULL;
	size_t n = 0;
	int st;

	if (!du->d->o.identity) {
		durable_reply_error(du->d, peer, 404, "not_found", "this node vends no secrets");
		return;
	}
	st = identity_secret_request(du->d->o.identity, du->r, c, peer, secret_answer, du->d, &body, &n);
	if (st)
		secret_answer(du->d, peer, st, body, n);
}

void durable_call(struct durable_run *du, void *peer, const struct harness_call *c)
{
	struct harness_decision dec = { 0 };

	if (c->op == HOP_INPUT) {
		api_input(du, peer);
		return;
	}
	if (c->op == HOP_RUN) {
		api_run(du, peer);
		return;
	}
	if (c->op == HOP_SECRETS || c->op == HOP_SECRET) {
		api_secret(du, peer, c);
		return;
	}
	if (run_ending(du->r) && c->op != HOP_COMPLETE && c->op != HOP_FAIL) {
		durable_reply_error(du->d, peer, 409, "run_ending", run_reason(du->r));
		return;
	}
	switch (c->op) {
	case HOP_BEGIN:
		api_begin(du, peer, c);
		return;
	case HOP_COMPLETE:
		harness_complete(&du->st, c,
				 c->usage.present ? meter_tokens_usd(meter_prices(du->d->meter), c->usage.provider,
								     c->usage.model, &c->usage.t) : 0, &dec);
		step_ended(du, c, &dec, NULL);
		api_record(du, peer, &dec);
		break;
	case HOP_FAIL:
		harness_fail(&du->st, c, &dec);
		step_ended(du, c, &dec, c->error[0] ? c->error : "step failed");
		api_record(du, peer, &dec);
		break;
	case HOP_OUTPUT:
		harness_output(c, &dec);
		api_record(du, peer, &dec);
		break;
	default:
		durable_reply_error(du->d, peer, 404, "not_found", "unknown call");
		return;
	}
	free(dec.record);
}
