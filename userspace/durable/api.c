/* api.c: the harness API's calls (docs/harness-api.md) on a run's socket: only the
 * run's own processes may call; each call that changes the run becomes a journal
 * record, and its answer waits until that record is durable. Budgets: max_steps and
 * the loop guard are the step state's (harness_begin), max_tokens and max_cost_usd
 * the meter's, checked before a step begins and after it completes. /v1/secrets is
 * handed to identity whole: the signature check and the secrets are its. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "durable_internal.h"
#include "lantern/identity.h"
#include "lantern/util.h"

/* Only processes of this run's instance may use its socket: the caller's cgroup (v2
 * line of /proc/PID/cgroup) must be the instance's directory or below it. */
static bool on_accept(void *arg, pid_t pid, char *why, size_t len)
{
	struct durable_run *du = arg;
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
static bool append_or_fail(struct durable_run *du, struct harness_conn *c,
			   struct harness_decision *dec, uint64_t *seq)
{
	struct lerr e = { 0 };

	if (durable_append(du, dec->type, dec->record, seq, &e) == 0)
		return true;
	log_error("run %s: %s", run_id(du->r), e.msg);
	harness_reply(c, 507, err_body("journal", e.msg));
	run_end(du->r, RUN_FAILED, e.msg);
	return false;
}

static void record_and_reply(struct durable_run *du, struct harness_conn *c,
			     struct harness_decision *dec, json_t *reply)
{
	uint64_t seq;

	if (append_or_fail(du, c, dec, &seq))
		durable_park(du, c, seq, 200, reply, false, 0, NULL);
	else
		json_decref(reply);
}

/* A step that completed or failed is told to the run's subscribers (its span). */
static void step_ended(struct durable_run *du, json_t *body, const struct harness_decision *dec,
		       const char *error)
{
	const char *id = json_string_value(json_object_get(body, "step_id"));
	struct harness_step *s = id ? harness_state_step(&du->st, id) : NULL;

	if (dec->v == HV_RECORD && s) {
		struct run_step st = { .id = id, .kind = s->kind, .attempt = dec->attempt, .body = body,
				       .error = error };

		run_step_ended(du->r, &st);
	}
}

static void api_begin(struct durable_run *du, struct harness_conn *c, json_t *body)
{
	struct harness_decision dec;
	struct harness_step *s;
	char why[512];
	json_t *reply;

	harness_begin(&du->st, &du->lim, body, &dec);
	/* a new attempt must have budget left; an in-flight step re-running after a crash
	 * is the same attempt and goes on */
	if (dec.v == HV_PROCEED && !json_is_true(json_object_get(dec.record, "reissued")) &&
	    meter_run_budget(du->d->meter, du->r, METER_REACHED, why, sizeof(why))) {
		json_decref(dec.record);
		dec.record = NULL;
		dec.v = HV_BUDGET;
		snprintf(dec.reason, sizeof(dec.reason), "%s", why);
	}
	switch (dec.v) {
	case HV_REPLAY:
		s = harness_state_step(&du->st, json_string_value(json_object_get(body, "step_id")));
		reply = json_deep_copy(harness_step_record(s));
		json_object_set_new(reply, "action", json_string("replay"));
		/* what was replayed must itself be durable before anyone acts on it */
		durable_park(du, c, journal_seq(du->j), 200, reply, false, 0, NULL);
		break;
	case HV_PROCEED:
		reply = json_pack("{s:s, s:O, s:i, s:s}", "action", "proceed", "step_id",
				  json_object_get(dec.record, "step_id"), "attempt", (int)dec.attempt,
				  "idempotency_key", dec.key);
		run_step_begun(du->r, json_string_value(json_object_get(dec.record, "step_id")));
		record_and_reply(du, c, &dec, reply);
		break;
	case HV_BUDGET:
		log_warn("run %s: %s", run_id(du->r), dec.reason);
		durable_park(du, c, journal_seq(du->j), 429,
			     err_body(dec.loop ? "loop_detected" : "budget_exceeded", dec.reason), true,
			     RUN_BUDGET_EXCEEDED, dec.reason);
		break;
	default:
		harness_reply(c, status_of(dec.v), err_body(dec.v == HV_INVALID ? "invalid" : "conflict",
							    dec.reason));
	}
	json_decref(dec.record);
}

static json_t *totals(struct durable_run *du)
{
	return json_pack("{s:I, s:f}", "tokens", (json_int_t)(du->st.tally.total & INT64_MAX), "cost_usd",
			 meter_tally_usd(meter_prices(du->d->meter), &du->st.tally));
}

static void api_record(struct durable_run *du, struct harness_conn *c, struct harness_decision *dec)
{
	char why[512] = "";
	json_t *reply;
	uint64_t seq;
	bool over;

	if (dec->v == HV_DONE) {
		durable_park(du, c, journal_seq(du->j), 200,
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
		record_and_reply(du, c, dec, json_pack("{s:b, s:i}", "ok", 1, "attempt", (int)dec->attempt));
		return;
	}
	if (!append_or_fail(du, c, dec, &seq))
		return;
	/* the after-completion check, on the tally that now holds this step */
	over = meter_run_budget(du->d->meter, du->r, METER_EXCEEDED, why, sizeof(why));
	reply = json_pack("{s:b, s:i, s:o}", "ok", 1, "attempt", (int)dec->attempt, "totals", totals(du));
	if (over) {
		json_object_set_new(reply, "budget_exceeded", json_string(why));
		log_warn("run %s: %s", run_id(du->r), why);
	}
	durable_park(du, c, seq, 200, reply, over, RUN_BUDGET_EXCEEDED, why);
}

static void on_request(void *arg, struct harness_conn *c, const struct harness_request *rq)
{
	struct durable_run *du = arg;
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
	if (!strncmp(rq->path, "/v1/secrets", 11) && du->d->o.identity) {
		json_t *reply = NULL;
		int st = identity_secret_request(du->d->o.identity, du->r, rq, &reply);

		harness_reply(c, st, reply);
	} else if (!strcmp(rq->path, "/v1/input") && !post) {
		harness_reply(c, 200, json_pack("{s:s, s:O}", "run_id", run_id(du->r), "input",
						du->st.input ? du->st.input : json_null()));
	} else if (!strcmp(rq->path, "/v1/run") && !post) {
		json_t *t = totals(du);

		harness_reply(c, 200, json_pack("{s:s, s:s, s:I, s:I, s:O, s:O, s:I}", "run_id", run_id(du->r),
						"instance_id", run_instance_id(du->r), "steps_begun",
						(json_int_t)du->st.steps_begun, "steps_completed",
						(json_int_t)du->st.steps_completed, "tokens",
						json_object_get(t, "tokens"), "cost_usd",
						json_object_get(t, "cost_usd"), "resumes",
						(json_int_t)du->st.resumes));
		json_decref(t);
	} else if (!post) {
		harness_reply(c, strncmp(rq->path, "/v1/", 4) ? 404 : 405,
			      err_body("not_found", "GET /v1/input, GET /v1/run, GET /v1/secrets; POST "
				       "/v1/steps/begin, /v1/steps/complete, /v1/steps/fail, /v1/output, "
				       "/v1/secrets/{env_name}"));
	} else if (run_ending(du->r) && strcmp(rq->path, "/v1/steps/complete") &&
		   strcmp(rq->path, "/v1/steps/fail")) {
		harness_reply(c, 409, err_body("run_ending", run_reason(du->r)));
	} else if (!strcmp(rq->path, "/v1/steps/begin")) {
		api_begin(du, c, body);
	} else if (!strcmp(rq->path, "/v1/steps/complete")) {
		harness_complete(&du->st, body,
				 meter_usage_usd(meter_prices(du->d->meter), json_object_get(body, "usage")), &dec);
		step_ended(du, body, &dec, NULL);
		api_record(du, c, &dec);
	} else if (!strcmp(rq->path, "/v1/steps/fail")) {
		harness_fail(&du->st, body, &dec);
		step_ended(du, body, &dec, json_string_value(json_object_get(body, "error")) ?: "step failed");
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

static void on_closed(void *arg, struct harness_conn *c);

const struct harness_ops durable_harness_ops = {
	.accept = on_accept,
	.request = on_request,
	.closed = on_closed,
};

/* The caller went away: an answer parked for it is dropped when it comes due. */
static void on_closed(void *arg, struct harness_conn *c)
{
	struct durable_run *du = arg;

	durable_forget_conn(du->d, c);
}
