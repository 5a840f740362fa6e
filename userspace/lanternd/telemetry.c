/* telemetry.c: what lanternd reports about each spawn. It opens (or adopts) the
 * telemetry BPF programs, registers each instance with them before its workload
 * starts, turns their counters and process events into one OpenTelemetry trace per
 * spawn, meters the run's cost, and ends a run that exceeds limits.max_cost_usd.
 *
 * The trace: a root span "invoke_agent {metadata.name}" (trace_id and span ids derived
 * from the run id, so a resumed run re-joins it), children "admission", "start", one
 * per journaled step ("chat {model}", "execute_tool {name}", "step {id}") and
 * "teardown". The root span is sent last, at teardown, carrying the run's outcome, the
 * syscall summary, network and process counters, the cost and its components, and
 * the exec and egress-deny events as span events. Every span goes to the run's
 * spans.jsonl (OTLP JSON lines, what `lantern trace` reads) and, when an endpoint is
 * configured, to the OTLP exporter's queue (never blocking the loop).
 *
 * What must survive a restart of lanternd (the root's start, the events so far, the
 * metered usage, the step start times) is in the run's telemetry.json, rewritten
 * atomically whenever it changes. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "lanternd.h"
#include "telemetry.h"
#include "lantern/lbpf_tm.h"
#include "lantern/meter.h"
#include "lantern/otlp.h"
#include "lantern/trace.h"
#include "lantern/util.h"

#define TM_SAMPLE_MS      1000   /* meter sampling and budget check */
#define TM_SAVE_EVERY     5      /* samples between saves of telemetry.json */
#define TM_MAX_EVENTS     128    /* span events kept on the root span */
#define TM_TOP_SYSCALLS   10

struct run_tm {
	char tenant[64];
	uint8_t tid[TRACE_ID_LEN], root[SPAN_ID_LEN];
	uint64_t t0, t_prepared, t_started, t_collect;   /* Unix ns */
	json_t *events;             /* OTLP/JSON span events for the root */
	uint64_t events_dropped;
	json_t *steps;              /* step_id -> start ns (as a string) */
	json_t *tokens;             /* meter: "provider/model" -> token counts */
	json_t *syscalls;           /* name -> {count, total_ns}, instances already collected */
	uint64_t sys_total;
	struct lantern_net_stats net;   /* collected instances */
	struct lantern_proc_stats proc;
	double cpu_done;            /* CPU seconds of collected instances */
	double cpu_live;            /* of the current instance, last sample */
	double mem_gib_s;
	uint64_t mem_sample_ns;     /* monotonic time of the last memory sample */
	uint64_t drops_at_start;
	uint64_t cgid;              /* the instance registered in lantern_tm_inst, 0 if none */
	bool collected;
	bool ended;
	unsigned samples;
};

static struct {
	const char *tenant;
	const char *otlp_endpoint;
	const char *otlp_protocol;
	const char *otlp_ca;
	bool otlp_insecure;
	const char *metrics_addr;
	uint32_t ringbuf_bytes;
	enum lbpf_sys_hook sys_hook;
	struct lbpf_tm *bpf;
	struct otlp_exporter *exp;
	struct otlp_opts otlp;
	json_t *resource;
	struct meter_table prices;
	uint64_t spans_written;
	uint64_t sys_finished;      /* syscalls of runs that ended since start */
	json_t *tenant_cost;        /* tenant -> {total_usd, tokens_usd, ...} of ended runs */
	uint64_t telemetry_drops_at_start;
} T = { .tenant = "default" };

/* ---- flags ---- */

void telemetry_usage(FILE *f)
{
	fprintf(f,
		"telemetry:\n"
		"  --tenant ID           tenant of standalone runs (default \"default\")\n"
		"  --otlp-endpoint URL   OTLP trace receiver (default $OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT;\n"
		"                        none: spans only go to each run's spans.jsonl)\n"
		"  --otlp-protocol P     grpc or http/protobuf (default $OTEL_EXPORTER_OTLP_PROTOCOL,\n"
		"                        else http/protobuf)\n"
		"  --otlp-insecure       plaintext gRPC to an endpoint without a scheme (default TLS;\n"
		"                        https:// is always TLS, http:// always plaintext)\n"
		"  --otlp-ca FILE        CA certificates (PEM) to verify the receiver with (default\n"
		"                        $OTEL_EXPORTER_OTLP_CERTIFICATE, else the system's roots)\n"
		"  --metrics-addr A:P    Prometheus text metrics on http://A:P/metrics (default off)\n"
		"  --syscall-hook K      tp_btf (default), raw_tp, tracepoint or none\n"
		"  --telemetry-ringbuf-bytes N  process event ring buffer size (power of 2, default 8 MiB)\n");
}

int telemetry_parse_flags(int *argc, char **argv)
{
	int out = 1;

	for (int i = 1; i < *argc; i++) {
		static const char *const names[] = { "--tenant", "--otlp-endpoint", "--otlp-protocol",
						     "--metrics-addr", "--syscall-hook",
						     "--telemetry-ringbuf-bytes", "--otlp-ca" };
		const char *val = NULL;
		int which = -1;

		if (!strcmp(argv[i], "--otlp-insecure")) {
			T.otlp_insecure = true;
			continue;
		}
		for (size_t k = 0; k < ARRAY_SIZE(names); k++) {
			size_t n = strlen(names[k]);
			if (!strcmp(argv[i], names[k])) {
				if (i + 1 >= *argc) {
					fprintf(stderr, "lanternd: %s needs a value\n", names[k]);
					return -1;
				}
				which = (int)k;
				val = argv[++i];
			} else if (!strncmp(argv[i], names[k], n) && argv[i][n] == '=') {
				which = (int)k;
				val = argv[i] + n + 1;
			}
			if (which >= 0)
				break;
		}
		if (which < 0) {
			argv[out++] = argv[i];
			continue;
		}
		switch (which) {
		case 0:
			if (!*val || strlen(val) >= sizeof(((struct run_tm *)0)->tenant)) {
				fprintf(stderr, "lanternd: --tenant: \"%s\" must be 1 to 63 characters\n", val);
				return -1;
			}
			T.tenant = val;
			break;
		case 1: T.otlp_endpoint = val; break;
		case 2: T.otlp_protocol = val; break;
		case 3: T.metrics_addr = val; break;
		case 4:
			if (!strcmp(val, "tp_btf"))
				T.sys_hook = LBPF_SYS_TP_BTF;
			else if (!strcmp(val, "raw_tp"))
				T.sys_hook = LBPF_SYS_RAW_TP;
			else if (!strcmp(val, "tracepoint"))
				T.sys_hook = LBPF_SYS_TRACEPOINT;
			else if (!strcmp(val, "none"))
				T.sys_hook = LBPF_SYS_NONE;
			else {
				fprintf(stderr, "lanternd: --syscall-hook: \"%s\": use tp_btf, raw_tp, "
					"tracepoint or none\n", val);
				return -1;
			}
			break;
		case 5: {
			char *end;
			unsigned long v = strtoul(val, &end, 10);
			if (*end || v < 4096 || (v & (v - 1)) || v > (1ul << 30)) {
				fprintf(stderr, "lanternd: --telemetry-ringbuf-bytes: \"%s\" must be a power "
					"of 2 from 4096 to 1 GiB\n", val);
				return -1;
			}
			T.ringbuf_bytes = (uint32_t)v;
			break;
		}
		case 6: T.otlp_ca = val; break;
		}
	}
	argv[out] = NULL;
	*argc = out;
	return 0;
}

/* ---- per-run state ---- */

static const char *run_name(const struct run *r)
{
	return r->spec && r->spec->name ? r->spec->name : "agent";
}

static void tm_path(const struct run *r, const char *file, char *out, size_t len)
{
	snprintf(out, len, "%s/%s", r->dir, file);
}

static json_t *net_json(const struct lantern_net_stats *n)
{
	return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I}", "tx_bytes", (json_int_t)n->tx_bytes,
			 "tx_packets", (json_int_t)n->tx_packets, "rx_bytes", (json_int_t)n->rx_bytes,
			 "rx_packets", (json_int_t)n->rx_packets, "rate_dropped_bytes",
			 (json_int_t)n->rate_dropped_bytes, "rate_dropped_packets",
			 (json_int_t)n->rate_dropped_packets);
}

static void tm_save(const struct run *r)
{
	struct run_tm *tm = r->tm;
	char path[PATH_MAX + 32], *s;
	json_t *j;

	j = json_pack("{s:s, s:I, s:I, s:I, s:I, s:O, s:I, s:O, s:O, s:O, s:I, s:o, s:{s:I, s:I, s:I},"
		      " s:f, s:f, s:f, s:I, s:b, s:b}",
		      "tenant", tm->tenant, "t0", (json_int_t)tm->t0, "t_prepared", (json_int_t)tm->t_prepared,
		      "t_started", (json_int_t)tm->t_started, "t_collect", (json_int_t)tm->t_collect,
		      "events", tm->events, "events_dropped", (json_int_t)tm->events_dropped,
		      "steps", tm->steps, "tokens", tm->tokens, "syscalls", tm->syscalls,
		      "sys_total", (json_int_t)tm->sys_total, "net", net_json(&tm->net),
		      "proc", "forks", (json_int_t)tm->proc.forks, "execs", (json_int_t)tm->proc.execs,
		      "exits", (json_int_t)tm->proc.exits, "cpu_done", tm->cpu_done, "cpu_live", tm->cpu_live,
		      "mem_gib_s", tm->mem_gib_s, "drops_at_start", (json_int_t)tm->drops_at_start,
		      "collected", tm->collected, "ended", tm->ended);
	s = j ? json_dumps(j, JSON_COMPACT) : NULL;
	json_decref(j);
	tm_path(r, "telemetry.json", path, sizeof(path));
	/* no fsync: a restarted lanternd reads what the page cache holds; after a power
	 * loss the last updates may be missing, which telemetry tolerates (and an fsync
	 * per event or spawn step is what made it cost) */
	if (!s || util_write_file_replace(path, s, strlen(s)) < 0)
		log_warn("run %s: cannot write %s: telemetry of this run may be incomplete after a restart",
			 r->id, path);
	free(s);
}

static uint64_t jint(json_t *o, const char *k)
{
	return (uint64_t)json_integer_value(json_object_get(o, k));
}

static json_t *obj_or_new(json_t *o, const char *k, bool array)
{
	json_t *v = json_object_get(o, k);

	if (array)
		return json_is_array(v) ? json_incref(v) : json_array();
	return json_is_object(v) ? json_incref(v) : json_object();
}

/* The run's telemetry state: in memory, else from telemetry.json (an adopted or
 * resumed run), else new. */
static struct run_tm *tm_get(struct run *r)
{
	char path[PATH_MAX + 32];
	struct run_tm *tm;
	json_t *j, *n, *p;

	if (r->tm)
		return r->tm;
	tm = calloc(1, sizeof(*tm));
	if (!tm)
		return NULL;
	r->tm = tm;
	trace_id_for_run(r->id, tm->tid);
	trace_span_id_for(r->id, "root", tm->root);
	tm_path(r, "telemetry.json", path, sizeof(path));
	j = json_load_file(path, 0, NULL);
	snprintf(tm->tenant, sizeof(tm->tenant), "%s",
		 json_string_value(json_object_get(j, "tenant")) ?: T.tenant);
	tm->t0 = jint(j, "t0");
	if (!tm->t0)
		tm->t0 = r->created ? (uint64_t)r->created * 1000000000ULL : trace_now_ns();
	tm->t_prepared = jint(j, "t_prepared");
	tm->t_started = jint(j, "t_started");
	tm->t_collect = jint(j, "t_collect");
	tm->events = obj_or_new(j, "events", true);
	tm->events_dropped = jint(j, "events_dropped");
	tm->steps = obj_or_new(j, "steps", false);
	tm->tokens = obj_or_new(j, "tokens", false);
	tm->syscalls = obj_or_new(j, "syscalls", false);
	tm->sys_total = jint(j, "sys_total");
	n = json_object_get(j, "net");
	tm->net.tx_bytes = jint(n, "tx_bytes");
	tm->net.tx_packets = jint(n, "tx_packets");
	tm->net.rx_bytes = jint(n, "rx_bytes");
	tm->net.rx_packets = jint(n, "rx_packets");
	tm->net.rate_dropped_bytes = jint(n, "rate_dropped_bytes");
	tm->net.rate_dropped_packets = jint(n, "rate_dropped_packets");
	p = json_object_get(j, "proc");
	tm->proc.forks = jint(p, "forks");
	tm->proc.execs = jint(p, "execs");
	tm->proc.exits = jint(p, "exits");
	tm->cpu_done = json_number_value(json_object_get(j, "cpu_done"));
	tm->cpu_live = json_number_value(json_object_get(j, "cpu_live"));
	tm->mem_gib_s = json_number_value(json_object_get(j, "mem_gib_s"));
	tm->drops_at_start = jint(j, "drops_at_start");
	tm->collected = json_is_true(json_object_get(j, "collected"));
	tm->ended = json_is_true(json_object_get(j, "ended"));
	json_decref(j);
	return tm;
}

void telemetry_run_free(struct run *r)
{
	struct run_tm *tm = r->tm;

	if (!tm)
		return;
	json_decref(tm->events);
	json_decref(tm->steps);
	json_decref(tm->tokens);
	json_decref(tm->syscalls);
	free(tm);
	r->tm = NULL;
}

/* Attributes every span of the run carries. */
static void common_attrs(const struct run *r, json_t *span)
{
	trace_attr_str(span, "lantern.tenant_id", r->tm->tenant);
	trace_attr_str(span, "lantern.run_id", r->id);
	trace_attr_str(span, "lantern.agent_instance_id", r->instance_id);
}

static json_t *child_span(const struct run *r, const char *what, const char *name, uint64_t start,
			  uint64_t end)
{
	uint8_t sid[SPAN_ID_LEN];
	json_t *s;

	trace_span_id_for(r->id, what, sid);
	s = trace_span_new(r->tm->tid, sid, r->tm->root, name, TRACE_KIND_INTERNAL, start, end);
	if (s)
		common_attrs(r, s);
	return s;
}

/* Records a finished span: the run's spans.jsonl, and the exporter. Consumes span. */
static void emit(struct run *r, json_t *span)
{
	char path[PATH_MAX + 32], *line;
	json_t *spans, *td;
	FILE *f;

	if (!span)
		return;
	spans = json_pack("[O]", span);
	td = trace_traces_data(T.resource, spans);
	line = td ? json_dumps(td, JSON_COMPACT) : NULL;
	tm_path(r, "spans.jsonl", path, sizeof(path));
	if (line && (f = fopen(path, "ae"))) {
		fprintf(f, "%s\n", line);
		fclose(f);
	} else {
		log_warn("run %s: cannot append a span to %s", r->id, path);
	}
	T.spans_written++;
	if (T.exp)
		otlp_export(T.exp, span);
	free(line);
	json_decref(td);
	json_decref(spans);
	json_decref(span);
}

static void add_event(struct run_tm *tm, json_t *ev)
{
	if (json_array_size(tm->events) >= TM_MAX_EVENTS) {
		tm->events_dropped++;
		json_decref(ev);
		return;
	}
	json_array_append_new(tm->events, ev);
}

static json_t *event_new(uint64_t t, const char *name)
{
	char b[24];

	snprintf(b, sizeof(b), "%" PRIu64, t);
	return json_pack("{s:s, s:s, s:[]}", "timeUnixNano", b, "name", name, "attributes");
}

/* ---- counters ---- */

static uint64_t node_tm_drops(void)
{
	struct lantern_tm_drops dr = { 0 };

	if (T.bpf)
		lbpf_tm_drops(T.bpf, &dr);
	return dr.proc_events;
}

/* CPU seconds of the instance's cgroup (v2 cpu.stat, else v1 cpuacct.usage). */
static double cgroup_cpu_seconds(const struct run *r)
{
	for (int i = 0; i < r->cg.ndirs; i++) {
		char path[PATH_MAX + 32], *buf, *p;
		double v = -1;

		snprintf(path, sizeof(path), "%s/cpu.stat", r->cg.dirs[i]);
		if (util_read_file(path, &buf, NULL) == 0) {
			if ((p = strstr(buf, "usage_usec ")))
				v = (double)strtoull(p + 11, NULL, 10) / 1e6;
			free(buf);
		}
		if (v < 0) {
			snprintf(path, sizeof(path), "%s/cpuacct.usage", r->cg.dirs[i]);
			if (util_read_file(path, &buf, NULL) == 0) {
				v = (double)strtoull(buf, NULL, 10) / 1e9;
				free(buf);
			}
		}
		if (v >= 0)
			return v;
	}
	return 0;
}

static uint64_t cgroup_memory_bytes(const struct run *r)
{
	static const char *const files[] = { "memory.current", "memory.usage_in_bytes" };

	for (int i = 0; i < r->cg.ndirs; i++) {
		for (size_t k = 0; k < ARRAY_SIZE(files); k++) {
			char path[PATH_MAX + 32], *buf;
			uint64_t v;

			snprintf(path, sizeof(path), "%s/%s", r->cg.dirs[i], files[k]);
			if (util_read_file(path, &buf, NULL) < 0)
				continue;
			v = strtoull(buf, NULL, 10);
			free(buf);
			return v;
		}
	}
	return 0;
}

static void sample_memory(struct run *r)
{
	struct run_tm *tm = r->tm;
	uint64_t now = util_now_ns(CLOCK_MONOTONIC), bytes;

	if (!r->cg_made)
		return;
	bytes = cgroup_memory_bytes(r);
	if (tm->mem_sample_ns && now > tm->mem_sample_ns)
		tm->mem_gib_s += (double)bytes / (1024.0 * 1024.0 * 1024.0) *
				 (double)(now - tm->mem_sample_ns) / 1e9;
	tm->mem_sample_ns = now;
	tm->cpu_live = cgroup_cpu_seconds(r);
}

/* The live instance's network counters (BPF), or zeros once collected. */
static void live_net(const struct run *r, struct lantern_net_stats *out)
{
	memset(out, 0, sizeof(*out));
	if (T.bpf && r->tm->cgid && !r->tm->collected)
		lbpf_tm_net(T.bpf, r->tm->cgid, out);
}

static void usage_of(struct run *r, struct meter_usage *u)
{
	struct run_tm *tm = r->tm;
	struct lantern_net_stats live;
	uint64_t end = tm->t_collect && tm->collected ? tm->t_collect : trace_now_ns();

	live_net(r, &live);
	u->cpu_seconds = tm->cpu_done + (tm->collected ? 0 : tm->cpu_live);
	u->memory_gib_seconds = tm->mem_gib_s;
	u->egress_bytes = tm->net.tx_bytes + live.tx_bytes;
	u->wall_seconds = end > tm->t0 ? (double)(end - tm->t0) / 1e9 : 0;
	u->tokens = tm->tokens;
}

json_t *telemetry_run_cost(struct daemon *d, struct run *r)
{
	struct meter_usage u;
	struct meter_cost c;

	if (!tm_get(r))
		return json_object();
	usage_of(r, &u);
	meter_compute(&T.prices, &u, &c);
	return meter_cost_json(&T.prices, &u, &c);
}

const struct meter_table *telemetry_prices(void)
{
	return &T.prices;
}

double telemetry_run_resource_usd(struct daemon *d, struct run *r)
{
	struct meter_usage u;
	struct meter_cost c;

	if (!tm_get(r))
		return 0;
	usage_of(r, &u);
	meter_compute(&T.prices, &u, &c);
	return c.total - c.tokens;
}

/* Ends the run when its cost passed limits.max_cost_usd. */
static void check_budget(struct daemon *d, struct run *r)
{
	struct meter_usage u;
	struct meter_cost c;
	char why[512];

	if (!r->spec || r->spec->limits.max_cost_usd <= 0 || run_status_final(r->status) || r->ending_set)
		return;
	usage_of(r, &u);
	meter_compute(&T.prices, &u, &c);
	if (c.total < r->spec->limits.max_cost_usd)
		return;
	snprintf(why, sizeof(why),
		 "limits.max_cost_usd of %.6g reached: cost %.6f USD (tokens %.6f, cpu %.6f, memory %.6f, "
		 "egress %.6f, wall %.6f)", r->spec->limits.max_cost_usd, c.total, c.tokens, c.cpu,
		 c.memory, c.egress, c.wall);
	log_info("run %s: %s", r->id, why);
	run_end(d, r, RUN_BUDGET_EXCEEDED, why);
}

static void on_sample(struct loop *l, void *arg)
{
	struct daemon *d = arg;

	for (struct run *r = d->runs; r; r = r->next) {
		if (run_status_final(r->status) || !tm_get(r))
			continue;
		sample_memory(r);
		check_budget(d, r);
		if (++r->tm->samples % TM_SAVE_EVERY == 0)
			tm_save(r);
	}
	loop_timer_add(l, TM_SAMPLE_MS, on_sample, d);
}

/* ---- kernel events ---- */

static struct run *run_by_cgid(struct daemon *d, uint64_t id)
{
	for (struct run *r = d->runs; r; r = r->next)
		if (!run_status_final(r->status) && r->cg.id == id)
			return r;
	return NULL;
}

static void on_proc_event(const struct lantern_proc_event *ev, void *arg)
{
	struct daemon *d = arg;
	struct run *r = run_by_cgid(d, ev->cgroup_id);
	uint64_t now_real = trace_now_ns(), now_mono = util_now_ns(CLOCK_MONOTONIC);
	char comm[17], file[97];
	json_t *e;

	if (!r || !tm_get(r))
		return;
	/* kernel times are CLOCK_MONOTONIC; spans want Unix time */
	now_real -= now_mono > ev->ts_ns ? now_mono - ev->ts_ns : 0;
	memcpy(comm, ev->comm, 16);
	comm[16] = '\0';
	memcpy(file, ev->filename, 96);
	file[96] = '\0';
	if (ev->type == LANTERN_PROC_EXEC) {
		e = event_new(now_real, "process.exec");
		trace_attr_int(e, "process.pid", ev->pid);
		trace_attr_int(e, "process.parent_pid", ev->ppid);
		trace_attr_str(e, "process.executable.path", file);
		trace_attr_str(e, "process.command", comm);
	} else if (ev->type == LANTERN_PROC_EXIT && ev->exit_code) {
		e = event_new(now_real, "process.exit");
		trace_attr_int(e, "process.pid", ev->pid);
		trace_attr_str(e, "process.command", comm);
		trace_attr_int(e, "process.exit.code", (ev->exit_code >> 8) & 0xff);
		if (ev->exit_code & 0x7f)
			trace_attr_int(e, "process.exit.signal", ev->exit_code & 0x7f);
	} else {
		return;
	}
	add_event(r->tm, e);
	if (json_array_size(r->tm->events) < TM_MAX_EVENTS)
		tm_save(r);
}

static void on_events_fd(struct loop *l, int fd, uint32_t events, void *arg)
{
	lbpf_tm_events_consume(T.bpf, on_proc_event, arg);
}

void telemetry_egress_event(struct daemon *d, struct run *r, json_t *ev)
{
	const char *verdict = json_string_value(json_object_get(ev, "verdict"));
	const char *kind = json_string_value(json_object_get(ev, "event"));
	json_t *e;

	if (!r || !verdict || (strcmp(verdict, "deny") && strcmp(verdict, "audit")) || !tm_get(r))
		return;
	e = event_new(trace_now_ns(), !strcmp(verdict, "deny") ? "egress.deny" : "egress.audit");
	trace_attr_str(e, "lantern.egress.verdict", verdict);
	trace_attr_str(e, "lantern.egress.source", kind ? kind : "egress");
	if (json_object_get(ev, "dst")) {
		trace_attr_str(e, "server.address", json_string_value(json_object_get(ev, "dst")));
		trace_attr_int(e, "server.port", json_integer_value(json_object_get(ev, "port")));
		trace_attr_str(e, "network.transport", json_string_value(json_object_get(ev, "proto")) ?: "tcp");
		trace_attr_int(e, "process.pid", json_integer_value(json_object_get(ev, "pid")));
		trace_attr_str(e, "process.command", json_string_value(json_object_get(ev, "comm")) ?: "");
	}
	if (json_object_get(ev, "qname")) {
		trace_attr_str(e, "dns.question.name", json_string_value(json_object_get(ev, "qname")));
		trace_attr_str(e, "dns.question.type", json_string_value(json_object_get(ev, "qtype")) ?: "");
	}
	add_event(r->tm, e);
	tm_save(r);
}

/* ---- a run's life ---- */

void telemetry_run_begin(struct daemon *d, struct run *r)
{
	struct run_tm *tm = tm_get(r);

	if (!tm)
		return;
	tm->t0 = trace_now_ns();
	tm->drops_at_start = node_tm_drops();
	tm_save(r);
}

int telemetry_run_prepare(struct daemon *d, struct run *r, struct lerr *e)
{
	struct run_tm *tm = tm_get(r);
	struct lbpf_rate rates[64];
	size_t n = 0;
	int err;

	if (!tm)
		return lerr_set(e, -ENOMEM, "telemetry: out of memory for run %s", r->id);
	for (size_t i = 0; r->spec && i < r->spec->n_egress; i++) {
		if (!r->spec->egress[i].rate_bps)
			continue;
		if (n == ARRAY_SIZE(rates) || i >= LANTERN_NO_RULE)
			return lerr_set(e, -E2BIG, "spawn: refused: more than %zu egress rules with rate_bps",
					ARRAY_SIZE(rates));
		rates[n].rule = (uint16_t)i;
		rates[n].rate_bps = r->spec->egress[i].rate_bps;
		n++;
	}
	if ((err = lbpf_tm_instance_add(T.bpf, r->cg.id, rates, n, e)) < 0)
		return err;
	tm->cgid = r->cg.id;
	tm->collected = false;
	tm->cpu_live = 0;
	tm->mem_sample_ns = 0;
	tm->t_prepared = trace_now_ns();
	tm_save(r);
	return 0;
}

int telemetry_run_env(const struct run *r, char **env)
{
	char tp[56];

	if (!r->tm)
		return 0;
	trace_traceparent(r->tm->tid, r->tm->root, tp);
	return asprintf(&env[0], "TRACEPARENT=%s", tp) > 0 ? 1 : 0;
}

void telemetry_run_started(struct daemon *d, struct run *r)
{
	struct run_tm *tm = tm_get(r);
	uint64_t now = trace_now_ns();
	json_t *s;
	char what[64];
	unsigned k = 0;

	if (!tm)
		return;
	/* a resumed run gets its own admission and start spans, numbered */
	if (tm->t_started) {
		k = (unsigned)jint(tm->steps, "\x01resumes") + 1;
		json_object_set_new(tm->steps, "\x01resumes", json_integer(k));
	}
	snprintf(what, sizeof(what), "admission/%u", k);
	s = child_span(r, what, "admission", k ? tm->t_prepared : tm->t0, tm->t_prepared);
	if (s) {
		trace_attr_str(s, "lantern.isolation", r->spec ? spec_isolation_name(r->spec->isolation) : "");
		trace_attr_str(s, "lantern.network", r->spec ? spec_network_name(r->spec->network) : "");
		trace_attr_int(s, "lantern.cgroup_id", (int64_t)r->cg.id);
		if (k)
			trace_attr_int(s, "lantern.resume", k);
	}
	emit(r, s);
	snprintf(what, sizeof(what), "start/%u", k);
	s = child_span(r, what, "start", tm->t_prepared, now);
	if (s)
		trace_attr_int(s, "process.pid", r->shim_pid);
	emit(r, s);
	tm->t_started = now;
	tm_save(r);
}

static void fold_syscall(uint32_t nr, const struct lantern_sys_stats *s, void *arg)
{
	struct run_tm *tm = arg;
	char *name = seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, (int)nr), num[24];
	const char *key = name;
	json_t *o;

	if (!key) {
		snprintf(num, sizeof(num), "syscall_%u", nr);
		key = num;
	}
	o = json_object_get(tm->syscalls, key);
	if (!o) {
		o = json_object();
		json_object_set_new(tm->syscalls, key, o);
	}
	json_object_set_new(o, "count", json_integer((json_int_t)(jint(o, "count") + s->count)));
	json_object_set_new(o, "total_ns", json_integer((json_int_t)(jint(o, "total_ns") + s->total_ns)));
	tm->sys_total += s->count;
	free(name);
}

void telemetry_run_collect(struct daemon *d, struct run *r)
{
	struct run_tm *tm = tm_get(r);
	struct lantern_net_stats n = { 0 };
	struct lantern_proc_stats p = { 0 };

	if (!tm || tm->collected || !tm->cgid || !T.bpf)
		return;
	tm->t_collect = trace_now_ns();
	if (r->cg_made)
		sample_memory(r);
	tm->cpu_done += tm->cpu_live;
	tm->cpu_live = 0;
	lbpf_tm_syscalls(T.bpf, tm->cgid, fold_syscall, tm);
	lbpf_tm_net(T.bpf, tm->cgid, &n);
	lbpf_tm_proc(T.bpf, tm->cgid, &p);
	tm->net.tx_bytes += n.tx_bytes;
	tm->net.tx_packets += n.tx_packets;
	tm->net.rx_bytes += n.rx_bytes;
	tm->net.rx_packets += n.rx_packets;
	tm->net.rate_dropped_bytes += n.rate_dropped_bytes;
	tm->net.rate_dropped_packets += n.rate_dropped_packets;
	tm->proc.forks += p.forks;
	tm->proc.execs += p.execs;
	tm->proc.exits += p.exits;
	/* the last exec events may still sit in the ring buffer */
	lbpf_tm_events_consume(T.bpf, on_proc_event, d);
	tm->collected = true;
	tm_save(r);
}

void telemetry_run_release(struct daemon *d, struct run *r)
{
	struct run_tm *tm = r->tm;
	uint64_t cgid = tm && tm->cgid ? tm->cgid : r->cg.id;

	if (T.bpf && cgid)
		lbpf_tm_instance_remove(T.bpf, cgid);
	if (tm) {
		tm->cgid = 0;
		tm_save(r);
	}
}

static int cmp_count(const void *a, const void *b)
{
	uint64_t x = jint(json_object_get(*(json_t *const *)a, "v"), "count");
	uint64_t y = jint(json_object_get(*(json_t *const *)b, "v"), "count");

	return x < y ? 1 : x > y ? -1 : 0;
}

/* lantern.syscalls.total, lantern.syscalls.top ("getpid=1000,write=3"), and
 * lantern.syscall.<name>.count for the top ones. */
static void syscall_summary(struct run_tm *tm, json_t *span)
{
	size_t n = json_object_size(tm->syscalls), k = 0;
	json_t **v = calloc(n ? n : 1, sizeof(*v)), *o;
	const char *name;
	char top[1024] = "", key[128];
	size_t off = 0;

	trace_attr_int(span, "lantern.syscalls.total", (int64_t)tm->sys_total);
	if (!v)
		return;
	json_object_foreach(tm->syscalls, name, o)
		v[k++] = json_pack("{s:s, s:O}", "n", name, "v", o);
	qsort(v, k, sizeof(*v), cmp_count);
	for (size_t i = 0; i < k; i++) {
		const char *nm = json_string_value(json_object_get(v[i], "n"));
		json_t *val = json_object_get(v[i], "v");

		if (i < TM_TOP_SYSCALLS) {
			off += (size_t)snprintf(top + off, off < sizeof(top) ? sizeof(top) - off : 0, "%s%s=%" PRIu64,
						i ? "," : "", nm, jint(val, "count"));
			snprintf(key, sizeof(key), "lantern.syscall.%s.count", nm);
			trace_attr_int(span, key, (int64_t)jint(val, "count"));
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
	trace_attr_int(span, "lantern.usage.egress_bytes", (int64_t)u->egress_bytes);
	trace_attr_double(span, "lantern.usage.wall_seconds", u->wall_seconds);
}

static void tenant_add(const char *tenant, const struct meter_cost *c)
{
	json_t *t = json_object_get(T.tenant_cost, tenant);
	static const char *const k[] = { "total", "tokens", "cpu", "memory", "egress", "wall" };
	double v[] = { c->total, c->tokens, c->cpu, c->memory, c->egress, c->wall };

	if (!t) {
		t = json_object();
		json_object_set_new(T.tenant_cost, tenant, t);
	}
	for (size_t i = 0; i < ARRAY_SIZE(k); i++)
		json_object_set_new(t, k[i], json_real(json_number_value(json_object_get(t, k[i])) + v[i]));
	json_object_set_new(t, "runs", json_integer(json_integer_value(json_object_get(t, "runs")) + 1));
}

void telemetry_run_end(struct daemon *d, struct run *r)
{
	struct run_tm *tm = tm_get(r);
	uint64_t now = trace_now_ns(), in = 0, out = 0;
	struct meter_usage u;
	struct meter_cost c;
	char name[300], path[PATH_MAX + 32], *s;
	const char *key;
	json_t *span, *cost, *m;

	if (!tm || tm->ended)
		return;
	telemetry_run_collect(d, r);
	usage_of(r, &u);
	meter_compute(&T.prices, &u, &c);

	span = child_span(r, "teardown", "teardown", tm->t_collect ? tm->t_collect : now, now);
	emit(r, span);

	snprintf(name, sizeof(name), "invoke_agent %s", run_name(r));
	span = trace_span_new(tm->tid, tm->root, NULL, name, TRACE_KIND_INTERNAL, tm->t0, now);
	if (!span)
		return;
	common_attrs(r, span);
	trace_attr_str(span, "gen_ai.operation.name", "invoke_agent");
	trace_attr_str(span, "gen_ai.agent.name", run_name(r));
	trace_attr_str(span, "gen_ai.agent.id", r->instance_id);
	trace_attr_str(span, "lantern.run.status", run_status_name(r->status));
	trace_attr_int(span, "lantern.run.exit_code", r->exit_code);
	if (r->reason[0])
		trace_attr_str(span, "lantern.run.reason", r->reason);
	syscall_summary(tm, span);
	trace_attr_int(span, "lantern.process.forks", (int64_t)tm->proc.forks);
	trace_attr_int(span, "lantern.process.execs", (int64_t)tm->proc.execs);
	trace_attr_int(span, "lantern.process.exits", (int64_t)tm->proc.exits);
	trace_attr_int(span, "lantern.net.tx_bytes", (int64_t)tm->net.tx_bytes);
	trace_attr_int(span, "lantern.net.tx_packets", (int64_t)tm->net.tx_packets);
	trace_attr_int(span, "lantern.net.rx_bytes", (int64_t)tm->net.rx_bytes);
	trace_attr_int(span, "lantern.net.rx_packets", (int64_t)tm->net.rx_packets);
	trace_attr_int(span, "lantern.net.rate_dropped_bytes", (int64_t)tm->net.rate_dropped_bytes);
	trace_attr_int(span, "lantern.ringbuf.dropped", (int64_t)(node_tm_drops() - tm->drops_at_start));
	json_object_foreach(tm->tokens, key, m) {
		in += jint(m, "input_tokens");
		out += jint(m, "output_tokens");
	}
	trace_attr_int(span, "gen_ai.usage.input_tokens", (int64_t)in);
	trace_attr_int(span, "gen_ai.usage.output_tokens", (int64_t)out);
	cost_attrs(span, &u, &c);
	json_object_set(span, "events", tm->events);
	if (tm->events_dropped)
		json_object_set_new(span, "droppedEventsCount", json_integer((json_int_t)tm->events_dropped));
	trace_span_set_status(span, r->status == RUN_SUCCEEDED ? TRACE_STATUS_OK : TRACE_STATUS_ERROR,
			      r->status == RUN_SUCCEEDED ? NULL : r->reason[0] ? r->reason
										 : run_status_name(r->status));
	emit(r, span);

	cost = meter_cost_json(&T.prices, &u, &c);
	s = cost ? json_dumps(cost, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
	tm_path(r, "cost.json", path, sizeof(path));
	if (!s || util_write_file_atomic(path, s, strlen(s)) < 0)
		log_warn("run %s: cannot write %s", r->id, path);
	free(s);
	json_decref(cost);
	tenant_add(tm->tenant, &c);
	T.sys_finished += tm->sys_total;
	tm->ended = true;
	tm_save(r);
}

/* ---- steps ---- */

void telemetry_step_begin(struct run *r, const char *step_id)
{
	struct run_tm *tm = tm_get(r);
	char b[24];

	if (!tm || !step_id)
		return;
	snprintf(b, sizeof(b), "%" PRIu64, trace_now_ns());
	json_object_set_new(tm->steps, step_id, json_string(b));
	tm_save(r);
}

void telemetry_step_span(struct daemon *d, struct run *r, const char *step_id, const char *kind,
			 const char *name, uint32_t attempt, uint64_t start_ns, uint64_t end_ns,
			 json_t *attrs, const char *error)
{
	char what[300];
	json_t *s, *kv;
	size_t i;

	if (!tm_get(r) || !step_id)
		return;
	snprintf(what, sizeof(what), "step/%s/%u", step_id, attempt);
	s = child_span(r, what, name, start_ns, end_ns);
	if (!s)
		return;
	trace_attr_str(s, "lantern.step_id", step_id);
	trace_attr_str(s, "lantern.step.kind", kind ? kind : "other");
	trace_attr_int(s, "lantern.step.attempt", attempt);
	json_array_foreach(attrs, i, kv)
		json_array_append(json_object_get(s, "attributes"), kv);
	if (error) {
		trace_span_set_status(s, TRACE_STATUS_ERROR, error);
		trace_attr_str(s, "error.type", "step_failed");
	}
	emit(r, s);
}

static void usage_attr(json_t *owner, json_t *usage, const char *field, const char *attr)
{
	json_t *v = json_object_get(usage, field);

	if (json_is_integer(v))
		trace_attr_int(owner, attr, json_integer_value(v));
}

void telemetry_step_end(struct daemon *d, struct run *r, const char *step_id, const char *kind,
			uint32_t attempt, json_t *body, const char *error)
{
	struct run_tm *tm = tm_get(r);
	json_t *usage = json_object_get(body, "usage"), *attrs = json_object();
	uint64_t end = trace_now_ns(), start;
	const char *model, *provider, *op, *tool;
	char name[300];

	if (!tm || !step_id || !attrs) {
		json_decref(attrs);
		return;
	}
	start = strtoull(json_string_value(json_object_get(tm->steps, step_id)) ?: "0", NULL, 10);
	if (!start || start > end)
		start = end;
	kind = kind ? kind : "other";
	if (!strcmp(kind, "llm")) {
		model = json_string_value(json_object_get(usage, "model")) ?: "unknown";
		provider = json_string_value(json_object_get(usage, "provider"));
		op = json_string_value(json_object_get(usage, "operation")) ?: "chat";
		snprintf(name, sizeof(name), "%s %s", op, model);
		trace_attr_str(attrs, "gen_ai.operation.name", op);
		if (provider)
			trace_attr_str(attrs, "gen_ai.provider.name", provider);
		trace_attr_str(attrs, "gen_ai.request.model", model);
		if (json_object_get(usage, "response_model"))
			trace_attr_str(attrs, "gen_ai.response.model",
				       json_string_value(json_object_get(usage, "response_model")));
		usage_attr(attrs, usage, "input_tokens", "gen_ai.usage.input_tokens");
		usage_attr(attrs, usage, "output_tokens", "gen_ai.usage.output_tokens");
		usage_attr(attrs, usage, "cache_read_tokens", "gen_ai.usage.cache_read.input_tokens");
		usage_attr(attrs, usage, "cache_creation_tokens", "gen_ai.usage.cache_creation.input_tokens");
		usage_attr(attrs, usage, "reasoning_tokens", "gen_ai.usage.reasoning.output_tokens");
		if (usage && !error) {
			trace_attr_double(attrs, "lantern.cost.usd", meter_usage_usd(&T.prices, usage));
			meter_add_usage(tm->tokens, usage);
		}
	} else if (!strcmp(kind, "tool")) {
		tool = json_string_value(json_object_get(body, "name")) ?:
		       json_string_value(json_object_get(body, "tool")) ?: step_id;
		snprintf(name, sizeof(name), "execute_tool %s", tool);
		trace_attr_str(attrs, "gen_ai.operation.name", "execute_tool");
		trace_attr_str(attrs, "gen_ai.tool.name", tool);
	} else {
		snprintf(name, sizeof(name), "step %s", step_id);
	}
	telemetry_step_span(d, r, step_id, kind, name, attempt, start, end,
			    json_object_get(attrs, "attributes"), error);
	json_decref(attrs);
	json_object_del(tm->steps, step_id);
	tm_save(r);
}

/* ---- API ---- */

static json_t *read_spans(struct run *r)
{
	char path[PATH_MAX + 32], *buf;
	json_t *out = json_array();

	tm_path(r, "spans.jsonl", path, sizeof(path));
	if (util_read_file(path, &buf, NULL) < 0)
		return out;
	for (char *save = NULL, *l = strtok_r(buf, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
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

bool telemetry_api(struct client *c, struct daemon *d, const char *op, struct run *r, json_t *req)
{
	char tid[33];

	if (strcmp(op, "trace") && strcmp(op, "cost"))
		return false;
	if (!r) {
		api_send(c, json_pack("{s:s, s:s}", "type", "error", "error",
				      !strcmp(op, "trace") ? "trace needs \"run_id\"" : "cost needs \"run_id\""));
		return true;
	}
	if (!tm_get(r)) {
		api_send(c, json_pack("{s:s, s:s}", "type", "error", "error", "out of memory"));
		return true;
	}
	trace_hex(r->tm->tid, TRACE_ID_LEN, tid);
	if (!strcmp(op, "trace")) {
		json_t *spans = read_spans(r);

		if (!r->tm->ended) {
			/* the root is sent at teardown; show it as it stands */
			char name[300];
			json_t *root;

			snprintf(name, sizeof(name), "invoke_agent %s", run_name(r));
			root = trace_span_new(r->tm->tid, r->tm->root, NULL, name, TRACE_KIND_INTERNAL,
					      r->tm->t0, 0);
			if (root) {
				common_attrs(r, root);
				json_object_set_new(root, "inProgress", json_true());
				json_object_set(root, "events", r->tm->events);
				json_array_append_new(spans, root);
			}
		}
		api_send(c, json_pack("{s:s, s:s, s:s, s:s, s:o}", "type", "trace", "run_id", r->id,
				      "trace_id", tid, "status", run_status_name(r->status), "spans", spans));
	} else {
		char path[PATH_MAX + 32];
		json_t *cost = NULL;

		tm_path(r, "cost.json", path, sizeof(path));
		if (r->tm->ended)
			cost = json_load_file(path, 0, NULL);
		if (!cost)
			cost = telemetry_run_cost(d, r);
		api_send(c, json_pack("{s:s, s:s, s:s, s:s, s:b, s:f, s:o}", "type", "cost", "run_id", r->id,
				      "tenant", r->tm->tenant, "status", run_status_name(r->status), "final",
				      r->tm->ended, "max_cost_usd", r->spec ? r->spec->limits.max_cost_usd : 0.0,
				      "cost", cost));
	}
	return true;
}

/* ---- metrics ---- */

static void count_syscalls(uint32_t nr, const struct lantern_sys_stats *s, void *arg)
{
	*(uint64_t *)arg += s->count;
}

char *telemetry_metrics_text(struct daemon *d)
{
	static const enum run_status sts[] = { RUN_ACCEPTED, RUN_RUNNING, RUN_SUCCEEDED, RUN_FAILED,
					       RUN_TIMED_OUT, RUN_CANCELLED, RUN_OOM_KILLED,
					       RUN_BUDGET_EXCEEDED };
	struct lantern_drops edr = { 0 };
	struct otlp_stats os = { 0 };
	uint64_t live_sys = 0;
	char *buf = NULL;
	size_t len = 0;
	const char *tenant;
	json_t *t;
	FILE *f = open_memstream(&buf, &len);

	if (!f)
		return NULL;
	fprintf(f, "# HELP lantern_runs Runs this lanternd knows, by status.\n# TYPE lantern_runs gauge\n");
	for (size_t i = 0; i < ARRAY_SIZE(sts); i++) {
		unsigned n = 0;
		for (struct run *r = d->runs; r; r = r->next)
			n += r->status == sts[i];
		fprintf(f, "lantern_runs{status=\"%s\"} %u\n", run_status_name(sts[i]), n);
	}
	fprintf(f, "# HELP lantern_egress_denied_total Egress attempts denied (kernel and DNS).\n"
		   "# TYPE lantern_egress_denied_total counter\nlantern_egress_denied_total %" PRIu64 "\n",
		d->egress_denied);
	fprintf(f, "# HELP lantern_egress_audited_total Egress attempts allowed by audit mode.\n"
		   "# TYPE lantern_egress_audited_total counter\nlantern_egress_audited_total %" PRIu64 "\n",
		d->egress_audited);
	for (struct run *r = d->runs; r; r = r->next) {
		struct run_tm *tm = r->tm;

		if (!tm || run_status_final(r->status))
			continue;
		live_sys += tm->sys_total;
		/* a live instance: what the kernel has counted so far */
		if (tm->cgid && !tm->collected && T.bpf)
			lbpf_tm_syscalls(T.bpf, tm->cgid, count_syscalls, &live_sys);
	}
	fprintf(f, "# HELP lantern_syscalls_total Syscalls made by instances (live and ended since start).\n"
		   "# TYPE lantern_syscalls_total counter\nlantern_syscalls_total %" PRIu64 "\n",
		T.sys_finished + live_sys);
	if (d->bpf)
		lbpf_drops_get(d->bpf, &edr);
	fprintf(f, "# HELP lantern_ringbuf_dropped_total Ring buffer reserves that failed (events lost).\n"
		   "# TYPE lantern_ringbuf_dropped_total counter\n"
		   "lantern_ringbuf_dropped_total{ring=\"egress\"} %" PRIu64 "\n"
		   "lantern_ringbuf_dropped_total{ring=\"process\"} %" PRIu64 "\n",
		(uint64_t)edr.egress_events, node_tm_drops());
	if (T.exp)
		otlp_stats_get(T.exp, &os);
	fprintf(f, "# HELP lantern_spans_total Spans by what became of them.\n# TYPE lantern_spans_total counter\n"
		   "lantern_spans_total{state=\"written\"} %" PRIu64 "\n"
		   "lantern_spans_total{state=\"queued\"} %" PRIu64 "\n"
		   "lantern_spans_total{state=\"exported\"} %" PRIu64 "\n"
		   "lantern_spans_total{state=\"rejected\"} %" PRIu64 "\n"
		   "lantern_spans_total{state=\"dropped\"} %" PRIu64 "\n",
		T.spans_written, os.queued, os.exported, os.rejected, os.dropped);
	fprintf(f, "# HELP lantern_otlp_requests_total OTLP export attempts.\n# TYPE lantern_otlp_requests_total counter\n"
		   "lantern_otlp_requests_total %" PRIu64 "\n"
		   "# HELP lantern_otlp_retries_total OTLP export retries.\n# TYPE lantern_otlp_retries_total counter\n"
		   "lantern_otlp_retries_total %" PRIu64 "\n", os.requests, os.retries);
	fprintf(f, "# HELP lantern_cost_usd_total Cost of runs ended since start, by tenant and component.\n"
		   "# TYPE lantern_cost_usd_total counter\n");
	json_object_foreach(T.tenant_cost, tenant, t) {
		static const char *const k[] = { "total", "tokens", "cpu", "memory", "egress", "wall" };
		for (size_t i = 0; i < ARRAY_SIZE(k); i++)
			fprintf(f, "lantern_cost_usd_total{tenant=\"%s\",component=\"%s\"} %.9f\n", tenant, k[i],
				json_number_value(json_object_get(t, k[i])));
	}
	fprintf(f, "# HELP lantern_runs_ended_total Runs ended since start, by tenant.\n"
		   "# TYPE lantern_runs_ended_total counter\n");
	json_object_foreach(T.tenant_cost, tenant, t)
		fprintf(f, "lantern_runs_ended_total{tenant=\"%s\"} %" PRIu64 "\n", tenant, jint(t, "runs"));
	fclose(f);
	return buf;
}

/* ---- lifecycle ---- */

static json_t *resource_attrs(struct daemon *d)
{
	char host[256] = "", idpath[PATH_MAX + 32], *id = NULL, hex[33];
	const char *node = getenv("LANTERN_NODE_NAME"), *ns = getenv("POD_NAMESPACE");
	json_t *holder = json_object(), *attrs;

	if (!node || !*node)
		node = getenv("NODE_NAME");
	gethostname(host, sizeof(host) - 1);
	/* service.instance.id: this node agent, stable across restarts (kept in the state dir) */
	snprintf(idpath, sizeof(idpath), "%s/instance-id", d->o.state_dir);
	if (util_read_file(idpath, &id, NULL) < 0 || strlen(id) < 32) {
		free(id);
		id = NULL;
		util_random_hex(hex, 16);
		util_write_file_atomic(idpath, hex, 32);
	} else {
		snprintf(hex, sizeof(hex), "%.32s", id);
		free(id);
	}
	trace_attr_str(holder, "service.name", "lanternd");
	trace_attr_str(holder, "service.version", TRACE_SCOPE_VERSION);
	trace_attr_str(holder, "service.instance.id", hex);
	trace_attr_str(holder, "host.name", host);
	if (node && *node)
		trace_attr_str(holder, "k8s.node.name", node);
	if (ns && *ns)
		trace_attr_str(holder, "k8s.namespace.name", ns);
	attrs = json_incref(json_object_get(holder, "attributes"));
	json_decref(holder);
	return attrs;
}

int telemetry_start(struct daemon *d, struct lerr *e)
{
	struct lbpf_tm_opts o = {
		.pin_root = d->o.bpffs,
		.cgroup_path = d->cg.v2,
		.instance_level = d->cg.instance_level,
		.sys_hook = T.sys_hook,
		.events_bytes = T.ringbuf_bytes,
	};
	bool adopted = false;
	int err;

	T.tenant_cost = json_object();
	T.resource = resource_attrs(d);
	if ((err = meter_table_load(d->o.prices_file, &T.prices, e)) < 0)
		return err;
	if ((err = lbpf_tm_open(&o, &T.bpf, &adopted, e)) < 0)
		return err;
	T.telemetry_drops_at_start = node_tm_drops();
	log_info("telemetry: %s BPF programs under %s (syscalls via %s)", adopted ? "adopted pinned" : "pinned new",
		 d->o.bpffs, lbpf_tm_sys_hook_name(T.sys_hook));
	if ((err = loop_add(d->loop, lbpf_tm_events_fd(T.bpf), EPOLLIN, on_events_fd, d)) < 0)
		return lerr_set(e, err, "telemetry: watching the process event ring buffer: %s", strerror(-err));
	err = otlp_configure(T.otlp_endpoint, T.otlp_protocol, T.otlp_insecure, T.otlp_ca, &T.otlp, e);
	if (err < 0)
		return err;
	if (err > 0) {
		if ((err = otlp_exporter_start(&T.otlp, T.resource, &T.exp, e)) < 0)
			return err;
		log_info("telemetry: exporting spans to %s over OTLP %s", T.otlp.protocol == OTLP_GRPC ?
			 T.otlp.endpoint : T.otlp.traces_url, otlp_protocol_name(T.otlp.protocol));
	} else {
		log_info("telemetry: no OTLP endpoint: spans go to each run's spans.jsonl only");
	}
	if (T.metrics_addr && (err = metrics_start(d, T.metrics_addr, e)) < 0)
		return err;
	loop_timer_add(d->loop, TM_SAMPLE_MS, on_sample, d);
	return 0;
}

void telemetry_recover(struct daemon *d)
{
	uint64_t *ids = NULL;
	size_t n = 0;
	struct lerr e = { 0 };

	for (struct run *r = d->runs; r; r = r->next) {
		struct run_tm *tm;

		if (run_status_final(r->status) || !(tm = tm_get(r)))
			continue;
		/* adopted: its instance must still be observed (a lanternd before this one
		 * may not have registered it) */
		if (r->cg.id && !lbpf_tm_instance_has(T.bpf, r->cg.id) &&
		    telemetry_run_prepare(d, r, &e) < 0)
			log_warn("run %s: not observed by the telemetry programs: %s", r->id, e.msg);
		tm->cgid = r->cg.id;
	}
	if (lbpf_tm_instance_list(T.bpf, &ids, &n) == 0) {
		for (size_t i = 0; i < n; i++) {
			bool owned = false;
			for (struct run *r = d->runs; r; r = r->next)
				owned |= !run_status_final(r->status) && r->cg.id == ids[i];
			if (!owned) {
				log_info("telemetry: reclaiming counters of cgroup id %llu: no run owns it",
					 (unsigned long long)ids[i]);
				lbpf_tm_instance_remove(T.bpf, ids[i]);
			}
		}
		free(ids);
	}
}

void telemetry_stop(struct daemon *d)
{
	metrics_stop();
	otlp_exporter_stop(T.exp, 3000);
	T.exp = NULL;
	lbpf_tm_close(T.bpf);
	T.bpf = NULL;
	meter_table_free(&T.prices);
	json_decref(T.resource);
	json_decref(T.tenant_cost);
}
