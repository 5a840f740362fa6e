/* spans.c: the spans of a run's trace: "admission" and "start" when the workload runs
 * (numbered again for each resumption), one per journaled step, "teardown" and the root
 * "invoke_agent" at the end; each written to the run's spans.jsonl and queued for the
 * OTLP exporter. Every span carries the tenant, run and agent instance ids. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "telemetry_internal.h"
#include "lantern/harness.h"
#include "lantern/runtime.h"
#include "lantern/util.h"

#define TOP_SYSCALLS 10

static const char *agent_name(const struct run *r)
{
	const struct spec *s = run_spec(r);

	return s && s->name ? s->name : "agent";
}

/* Attributes every span of the run carries. */
static void common_attrs(const struct run *r, json_t *span)
{
	trace_attr_str(span, "lantern.tenant_id", run_tenant(r));
	trace_attr_str(span, "lantern.run_id", run_id(r));
	trace_attr_str(span, "lantern.agent_instance_id", run_instance_id(r));
}

/* Where the run's sandbox came from: a pool (and how long it had waited, which is not
 * billed), or a cold start after a claim that failed. */
static void pool_attrs(const struct run *r, json_t *span)
{
	if (run_pool(r)) {
		trace_attr_str(span, "lantern.pool.name", run_pool(r));
		trace_attr_int(span, "lantern.pool.waited_ms", run_pool_waited_ms(r));
	} else if (run_pool_fallback(r)) {
		trace_attr_str(span, "lantern.pool.fallback", run_pool_fallback(r));
	}
}

static json_t *child_span(const struct run *r, const struct tm_run *tm, const char *what,
			  const char *name, uint64_t start, uint64_t end)
{
	uint8_t sid[SPAN_ID_LEN];
	json_t *s;

	trace_span_id_for(run_id(r), what, sid);
	if ((s = trace_span_new(tm->tid, sid, tm->root, name, TRACE_KIND_INTERNAL, start, end)))
		common_attrs(r, s);
	return s;
}

/* Records a finished span: the run's spans.jsonl, and the exporter. Consumes span. */
static void emit(struct telemetry *t, const struct run *r, json_t *span)
{
	char path[PATH_MAX + 32], *line;
	json_t *spans, *td;
	FILE *f;

	if (!span)
		return;
	spans = json_pack("[O]", span);
	td = trace_traces_data(t->resource, spans);
	line = td ? json_dumps(td, JSON_COMPACT) : NULL;
	snprintf(path, sizeof(path), "%s/spans.jsonl", run_dir(r));
	if (line && (f = fopen(path, "ae"))) {
		fprintf(f, "%s\n", line);
		fclose(f);
	} else {
		log_warn("run %s: cannot append a span to %s", run_id(r), path);
	}
	t->spans_written++;
	if (t->exp)
		otlp_export(t->exp, span);
	free(line);
	json_decref(td);
	json_decref(spans);
	json_decref(span);
}

json_t *spans_event(uint64_t t, const char *name)
{
	char b[24];

	snprintf(b, sizeof(b), "%" PRIu64, t);
	return json_pack("{s:s, s:s, s:[]}", "timeUnixNano", b, "name", name, "attributes");
}

void spans_add_event(struct tm_run *tm, json_t *ev)
{
	if (json_array_size(tm->events) >= TM_MAX_EVENTS) {
		tm->events_dropped++;
		json_decref(ev);
		return;
	}
	json_array_append_new(tm->events, ev);
}

void spans_started(struct telemetry *t, struct run *r, struct tm_run *tm)
{
	const struct spec *s = run_spec(r);
	uint64_t now = trace_now_ns();
	char what[64];
	unsigned k = 0;
	json_t *sp;

	/* a resumed run gets its own admission and start spans, numbered */
	if (tm->t_started)
		k = ++tm->resumes;
	snprintf(what, sizeof(what), "admission/%u", k);
	if ((sp = child_span(r, tm, what, "admission", k ? tm->t_prepared : tm->t0, tm->t_prepared))) {
		trace_attr_str(sp, "lantern.isolation", s ? spec_isolation_name(s->isolation) : "");
		trace_attr_str(sp, "lantern.network", s ? spec_network_name(s->network) : "");
		trace_attr_int(sp, "lantern.cgroup_id", (int64_t)run_cgid(r));
		if (run_runtime(r))
			trace_attr_str(sp, "lantern.runtime", run_runtime(r)->name);
		if (k)
			trace_attr_int(sp, "lantern.resume", k);
	}
	emit(t, r, sp);
	snprintf(what, sizeof(what), "start/%u", k);
	if ((sp = child_span(r, tm, what, "start", tm->t_prepared, now)) && !k)
		pool_attrs(r, sp);
	emit(t, r, sp);
	tm->t_started = now;
	tm_save(r, tm);
}

static void token_attr(json_t *owner, const struct harness_usage *u, unsigned bit, uint64_t v,
		       const char *attr)
{
	if (u->has & bit)
		trace_attr_int(owner, attr, (int64_t)util_sat_i64(v));
}

void spans_step(struct telemetry *t, struct run *r, struct tm_run *tm, const struct run_step *st)
{
	const struct harness_usage *u = st->usage;
	const char *kind = st->kind ? st->kind : "other", *model, *op, *tool;
	uint64_t end = trace_now_ns(), start;
	char name[300], what[300];
	size_t i;
	json_t *attrs = json_object(), *sp, *kv;

	if (!attrs)
		return;
	start = strtoull(json_string_value(json_object_get(tm->steps, st->id)) ?: "0", NULL, 10);
	if (!start || start > end)
		start = end;
	if (!strcmp(kind, "llm")) {
		model = u && u->model[0] ? u->model : "unknown";
		op = u && u->operation[0] ? u->operation : "chat";
		snprintf(name, sizeof(name), "%s %s", op, model);
		trace_attr_str(attrs, "gen_ai.operation.name", op);
		if (u && u->provider[0])
			trace_attr_str(attrs, "gen_ai.provider.name", u->provider);
		trace_attr_str(attrs, "gen_ai.request.model", model);
		if (u && u->response_model[0])
			trace_attr_str(attrs, "gen_ai.response.model", u->response_model);
		if (u) {
			token_attr(attrs, u, HU_INPUT, u->t.input, "gen_ai.usage.input_tokens");
			token_attr(attrs, u, HU_OUTPUT, u->t.output, "gen_ai.usage.output_tokens");
			token_attr(attrs, u, HU_CACHE_READ, u->t.cache_read, "gen_ai.usage.cache_read.input_tokens");
			token_attr(attrs, u, HU_CACHE_CREATION, u->t.cache_creation,
				   "gen_ai.usage.cache_creation.input_tokens");
			token_attr(attrs, u, HU_REASONING, u->t.reasoning, "gen_ai.usage.reasoning.output_tokens");
			if (!st->error)
				trace_attr_double(attrs, "lantern.cost.usd",
						  meter_tokens_usd(meter_prices(t->meter), u->provider, u->model, &u->t));
		}
	} else if (!strcmp(kind, "tool")) {
		tool = st->tool && st->tool[0] ? st->tool : st->id;
		snprintf(name, sizeof(name), "execute_tool %s", tool);
		trace_attr_str(attrs, "gen_ai.operation.name", "execute_tool");
		trace_attr_str(attrs, "gen_ai.tool.name", tool);
	} else {
		snprintf(name, sizeof(name), "step %s", st->id);
	}
	snprintf(what, sizeof(what), "step/%s/%u", st->id, st->attempt);
	if ((sp = child_span(r, tm, what, name, start, end))) {
		trace_attr_str(sp, "lantern.step_id", st->id);
		trace_attr_str(sp, "lantern.step.kind", kind);
		trace_attr_int(sp, "lantern.step.attempt", st->attempt);
		json_array_foreach(json_object_get(attrs, "attributes"), i, kv)
			json_array_append(json_object_get(sp, "attributes"), kv);
		if (st->error) {
			trace_span_set_status(sp, TRACE_STATUS_ERROR, st->error);
			trace_attr_str(sp, "error.type", "step_failed");
		}
	}
	json_decref(attrs);
	emit(t, r, sp);
}

static int cmp_count(const void *a, const void *b)
{
	uint64_t x = (uint64_t)json_integer_value(json_object_get(json_object_get(*(json_t *const *)a, "v"), "count"));
	uint64_t y = (uint64_t)json_integer_value(json_object_get(json_object_get(*(json_t *const *)b, "v"), "count"));

	return x < y ? 1 : x > y ? -1 : 0;
}

/* lantern.syscalls.total, lantern.syscalls.top ("getpid=1000,write=3"), and
 * lantern.syscall.<name>.count for the top ones. */
static void syscall_summary(const struct tm_run *tm, json_t *span)
{
	size_t n = json_object_size(tm->syscalls), k = 0, off = 0;
	json_t **v = calloc(n ? n : 1, sizeof(*v)), *o;
	const char *name;
	char top[1024] = "", key[128];

	trace_attr_int(span, "lantern.syscalls.total", (int64_t)tm->sys_total);
	if (!v)
		return;
	json_object_foreach(tm->syscalls, name, o)
		v[k++] = json_pack("{s:s, s:O}", "n", name, "v", o);
	qsort(v, k, sizeof(*v), cmp_count);
	for (size_t i = 0; i < k; i++) {
		const char *nm = json_string_value(json_object_get(v[i], "n"));
		int64_t count = json_integer_value(json_object_get(json_object_get(v[i], "v"), "count"));

		if (i < TOP_SYSCALLS) {
			off += (size_t)snprintf(top + off, off < sizeof(top) ? sizeof(top) - off : 0,
						"%s%s=%" PRId64, i ? "," : "", nm, count);
			snprintf(key, sizeof(key), "lantern.syscall.%s.count", nm);
			trace_attr_int(span, key, count);
		}
		json_decref(v[i]);
	}
	free(v);
	trace_attr_str(span, "lantern.syscalls.top", top);
}

static void cost_attrs(json_t *span, const struct meter_usage *u, const struct meter_cost *c)
{
	trace_attr_double(span, "lantern.cost.usd", c->total);
	trace_attr_double(span, "lantern.cost.tokens_usd", c->tokens);
	trace_attr_double(span, "lantern.cost.cpu_usd", c->cpu);
	trace_attr_double(span, "lantern.cost.memory_usd", c->memory);
	trace_attr_double(span, "lantern.cost.egress_usd", c->egress);
	trace_attr_double(span, "lantern.cost.wall_usd", c->wall);
	trace_attr_double(span, "lantern.usage.cpu_seconds", u->cpu_seconds);
	trace_attr_double(span, "lantern.usage.memory_gib_seconds", u->memory_gib_seconds);
	trace_attr_int(span, "lantern.usage.egress_bytes", (int64_t)util_sat_i64(u->egress_bytes));
	trace_attr_double(span, "lantern.usage.wall_seconds", u->wall_seconds);
}

json_t *spans_root_now(const struct run *r, const struct tm_run *tm)
{
	char name[300];
	json_t *root;

	snprintf(name, sizeof(name), "invoke_agent %s", agent_name(r));
	if ((root = trace_span_new(tm->tid, tm->root, NULL, name, TRACE_KIND_INTERNAL, tm->t0, 0))) {
		common_attrs(r, root);
		pool_attrs(r, root);
		json_object_set_new(root, "inProgress", json_true());
		json_object_set(root, "events", tm->events);
	}
	return root;
}

void spans_end(struct telemetry *t, struct run *r, struct tm_run *tm)
{
	uint64_t now = trace_now_ns(), in = 0, out = 0;
	struct meter_usage u;
	struct meter_cost c;
	char name[300];
	json_t *span;

	meter_run_usage(t->meter, r, &u);
	meter_compute(meter_prices(t->meter), &u, &c);
	emit(t, r, child_span(r, tm, "teardown", "teardown", tm->t_collect ? tm->t_collect : now, now));

	snprintf(name, sizeof(name), "invoke_agent %s", agent_name(r));
	if (!(span = trace_span_new(tm->tid, tm->root, NULL, name, TRACE_KIND_INTERNAL, tm->t0, now)))
		return;
	common_attrs(r, span);
	pool_attrs(r, span);
	trace_attr_str(span, "gen_ai.operation.name", "invoke_agent");
	trace_attr_str(span, "gen_ai.agent.name", agent_name(r));
	trace_attr_str(span, "gen_ai.agent.id", run_instance_id(r));
	trace_attr_str(span, "lantern.run.status", run_status_name(run_status(r)));
	trace_attr_int(span, "lantern.run.exit_code", run_exit_code(r));
	trace_attr_int(span, "lantern.run.oom_kills", (int64_t)run_oom_kills(r));
	if (run_reason(r)[0])
		trace_attr_str(span, "lantern.run.reason", run_reason(r));
	syscall_summary(tm, span);
	trace_attr_int(span, "lantern.process.forks", (int64_t)tm->proc.forks);
	trace_attr_int(span, "lantern.process.execs", (int64_t)tm->proc.execs);
	trace_attr_int(span, "lantern.process.exits", (int64_t)tm->proc.exits);
	trace_attr_int(span, "lantern.net.tx_bytes", (int64_t)tm->net.tx_bytes);
	trace_attr_int(span, "lantern.net.tx_packets", (int64_t)tm->net.tx_packets);
	trace_attr_int(span, "lantern.net.rx_bytes", (int64_t)tm->net.rx_bytes);
	trace_attr_int(span, "lantern.net.rx_packets", (int64_t)tm->net.rx_packets);
	trace_attr_int(span, "lantern.net.rate_dropped_bytes", (int64_t)tm->net.rate_dropped_bytes);
	trace_attr_int(span, "lantern.ringbuf.dropped", (int64_t)(tm_node_drops(t) - tm->drops_at_start));
	for (size_t i = 0; u.tally && i < u.tally->n; i++) {
		in = meter_sat_add(in, u.tally->m[i].t.input);
		out = meter_sat_add(out, u.tally->m[i].t.output);
	}
	trace_attr_int(span, "gen_ai.usage.input_tokens", (int64_t)util_sat_i64(in));
	trace_attr_int(span, "gen_ai.usage.output_tokens", (int64_t)util_sat_i64(out));
	cost_attrs(span, &u, &c);
	json_object_set(span, "events", tm->events);
	if (tm->events_dropped)
		json_object_set_new(span, "droppedEventsCount", json_integer((json_int_t)tm->events_dropped));
	trace_span_set_status(span, run_status(r) == RUN_SUCCEEDED ? TRACE_STATUS_OK : TRACE_STATUS_ERROR,
			      run_status(r) == RUN_SUCCEEDED ? NULL :
			      run_reason(r)[0] ? run_reason(r) : run_status_name(run_status(r)));
	emit(t, r, span);
}

json_t *spans_read(const struct run *r)
{
	char path[PATH_MAX + 32], *buf, *save = NULL;
	json_t *out = json_array();

	snprintf(path, sizeof(path), "%s/spans.jsonl", run_dir(r));
	if (util_read_file(path, &buf, NULL) < 0)
		return out;
	for (char *l = strtok_r(buf, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
		json_t *td = json_loads(l, 0, NULL), *rs, *ss, *sp;
		size_t i, k, m;

		json_array_foreach(json_object_get(td, "resourceSpans"), i, rs)
			json_array_foreach(json_object_get(rs, "scopeSpans"), k, ss)
				json_array_foreach(json_object_get(ss, "spans"), m, sp)
					json_array_append(out, sp);
		json_decref(td);
	}
	free(buf);
	return out;
}
