/* tunnel.c: the node's DataPlaneService client, on a thread of its own (see tunnel.h).
 *
 * The thread owns the channels (one per control-plane endpoint, the current one used),
 * the completion queue and the session; it wakes at least every 100 ms to run its
 * timers (heartbeat, metrics, refresh, lease renewal, reconnect, the outbox's bounds).
 * Everything the loop thread also touches (the stream pointer, live statuses, pending
 * completions, the capacity, the event queue) is under t->mu; the loop never waits on
 * the network. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <sodium.h>

#include "lantern/tunnel.h"
#include "lantern/v1/dataplane.pb-c.h"

#define TICK_MS        100
#define RPC_TIMEOUT_MS 10000
#define BACKOFF_MIN_MS 250

/* The latest report of a run still running, re-sent after a reconnect. */
struct live {
	char run_id[64];
	int64_t epoch;
	enum tunnel_status st;
	char *detail;
	struct live *next;
};

/* A completion not yet acknowledged; bytes are the packed DpRunStreamClientMsg. */
struct pending {
	char run_id[64];
	uint8_t *buf;
	size_t len;
	int64_t created;              /* unix seconds it was made (the outbox's age bound) */
	uint64_t sent_gen;            /* stream generation it was last sent on (0: not yet) */
	int64_t sent_ms;              /* monotonic ms of that send */
	struct pending *next;
};

/* An identity request sent and not yet answered: a stream that moves to another replica
 * takes it along, so a start does not fail for the replica that went away. */
struct idreq {
	char inst[64];
	uint8_t *buf;
	size_t len;
	int64_t sent_ms;              /* monotonic: dropped IDREQ_KEEP_MS after */
	struct idreq *next;
};
#define IDREQ_KEEP_MS 10000

/* Renewals sent and not yet answered: their grants count from these times. */
#define RENEWALS_KEPT 16

struct tunnel {
	struct tunnel_opts o;
	char *target, *tenant, *token_file, *state_dir, *ca_file, *version, *store_id, *region;
	uint8_t node_pk[32];
	char **classes;
	char **targets;               /* the endpoints, from target */
	size_t n_targets;
	char outbox[4096], session_path[4096];
	pthread_t thread;
	atomic_int stop;
	int efd;
	atomic_int active_runs, queue_depth;
	atomic_int self_draining;     /* lanternd is stopping */
	atomic_int drain_told;        /* a heartbeat saying so was acknowledged */
	atomic_int registered;        /* the session's last heartbeat was answered */

	/* thread only */
	struct rpc_cq *q;
	struct rpc_channel **chs;     /* one per endpoint */
	size_t cur;                   /* the endpoint in use */
	int lease_ttl_ms;             /* 0: the control plane grants no leases */
	bool acks;                    /* it acknowledges completions */
	uint64_t renew_seq;
	struct {
		uint64_t seq;
		int64_t sent_ms;
	} renewals[RENEWALS_KEPT];
	int64_t next_renew;
	atomic_int renew_now;
	char plane_id[64];
	char *token;                  /* session token, NULL until registered */
	int64_t token_exp, token_got; /* unix seconds */
	int hb_s, metrics_s;
	int64_t next_register, next_stream, next_hb, next_metrics; /* monotonic ms */
	int register_fails, stream_fails, refresh_fails;
	int64_t next_refresh;         /* monotonic ms: a failed refresh waits its backoff */
	bool register_busy, hb_busy, metrics_busy, refresh_busy;
	bool draining;
	bool hb_failing;
	bool hb_draining;             /* the heartbeat in flight says draining */
	atomic_bool signs_identity;   /* the control plane said so at Register */
	uint64_t cpu_prev_total, cpu_prev_idle;
	int64_t stream_opened;

	pthread_mutex_t mu;
	struct rpc_stream *stream;    /* open RunStream, Hello sent */
	uint64_t gen;                 /* streams opened so far */
	struct tunnel_capacity cap;
	struct live *live;
	struct pending *pending;
	struct idreq *idreqs;
	struct tunnel_ev *evs, *evs_tail;
};

static int64_t mono_ms(void)
{
	return (int64_t)(util_now_ns(CLOCK_MONOTONIC) / 1000000);
}

static struct rpc_channel *ch(struct tunnel *t)
{
	return t->chs[t->cur];
}

/* The current endpoint failed: the next one is tried (a no-op with one). */
static void rotate(struct tunnel *t, const char *why)
{
	if (t->n_targets < 2)
		return;
	t->cur = (t->cur + 1) % t->n_targets;
	log_warn("tunnel: %s; moving to control-plane endpoint %s", why, t->targets[t->cur]);
}

/* Full-jitter exponential backoff: a delay in [d/2, d], d doubling from 250 ms. */
static int64_t backoff(struct tunnel *t, int *fails)
{
	int64_t d = BACKOFF_MIN_MS;

	for (int i = 0; i < *fails && d < t->o.backoff_max_ms; i++)
		d *= 2;
	if (d > t->o.backoff_max_ms)
		d = t->o.backoff_max_ms;
	if (*fails < 30)
		(*fails)++;
	return d / 2 + (int64_t)randombytes_uniform((uint32_t)(d / 2 + 1));
}

static void post(struct tunnel *t, struct tunnel_ev *ev)
{
	uint64_t one = 1;

	pthread_mutex_lock(&t->mu);
	if (t->evs_tail)
		t->evs_tail->next = ev;
	else
		t->evs = ev;
	t->evs_tail = ev;
	pthread_mutex_unlock(&t->mu);
	if (write(t->efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		log_error("tunnel: waking the event loop: %s", strerror(errno));
}

struct tunnel_ev *tunnel_take(struct tunnel *t)
{
	struct tunnel_ev *ev;
	uint64_t n;

	if (read(t->efd, &n, sizeof(n)) < 0 && errno != EAGAIN)
		log_error("tunnel: eventfd: %s", strerror(errno));
	pthread_mutex_lock(&t->mu);
	ev = t->evs;
	t->evs = t->evs_tail = NULL;
	pthread_mutex_unlock(&t->mu);
	return ev;
}

static void strv_free(char **v, size_t n)
{
	for (size_t i = 0; v && i < n; i++)
		free(v[i]);
	free(v);
}

void tunnel_ev_free(struct tunnel_ev *ev)
{
	if (!ev)
		return;
	free(ev->config_json);
	free(ev->input_json);
	free(ev->idem);
	strv_free(ev->renewed, ev->n_renewed);
	strv_free(ev->lost, ev->n_lost);
	strv_free(ev->lost_why, ev->n_lost);
	free(ev);
}

void tunnel_set_load(struct tunnel *t, int active_runs, int queue_depth)
{
	atomic_store(&t->active_runs, active_runs);
	atomic_store(&t->queue_depth, queue_depth);
}

void tunnel_set_capacity(struct tunnel *t, const struct tunnel_capacity *c)
{
	pthread_mutex_lock(&t->mu);
	t->cap = *c;
	pthread_mutex_unlock(&t->mu);
}

/* The capacity as the wire has it (classes and slots point into t and slots). */
static void capacity_msg(struct tunnel *t, Lantern__V1__DpCapacity *m, Lantern__V1__DpClassSlots *slots,
			 Lantern__V1__DpClassSlots **ptrs, size_t max)
{
	size_t n = t->o.n_classes < max ? t->o.n_classes : max;

	pthread_mutex_lock(&t->mu);
	m->cpu_millis = t->cap.cpu_millis;
	m->memory_bytes = t->cap.memory_bytes;
	m->scratch_bytes = t->cap.scratch_bytes;
	for (size_t i = 0; i < n; i++) {
		lantern__v1__dp_class_slots__init(&slots[i]);
		slots[i].isolation_class = t->classes[i];
		slots[i].free = t->cap.free_slots;
		ptrs[i] = &slots[i];
	}
	pthread_mutex_unlock(&t->mu);
	m->slots = ptrs;
	m->n_slots = n;
}

/* --- session file --- */

static void session_save(struct tunnel *t)
{
	json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:i, s:i, s:i, s:b, s:b}", "target", t->target,
			      "tenant", t->tenant, "plane_id", t->plane_id, "session_token", t->token,
			      "expires_at", (json_int_t)t->token_exp, "obtained_at",
			      (json_int_t)t->token_got, "heartbeat_s", t->hb_s, "metrics_s", t->metrics_s,
			      "lease_ttl_ms", t->lease_ttl_ms, "completion_acks", t->acks,
			      "signs_identity", atomic_load(&t->signs_identity));
	char *s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);

	json_decref(j);
	/* util_write_file_atomic creates 0600: the token is a credential */
	if (!s || util_write_file_atomic(t->session_path, s, strlen(s)) < 0)
		log_error("tunnel: cannot save the session in %s: a restart will need a new "
			  "bootstrap token", t->session_path);
	if (s)
		sodium_memzero(s, strlen(s));
	free(s);
}

static void session_drop(struct tunnel *t)
{
	if (t->token) {
		sodium_memzero(t->token, strlen(t->token));
		free(t->token);
	}
	t->token = NULL;
	t->plane_id[0] = '\0';
	atomic_store(&t->registered, 0);
	unlink(t->session_path);
}

static void session_load(struct tunnel *t)
{
	json_t *j = json_load_file(t->session_path, 0, NULL);
	const char *tg = json_string_value(json_object_get(j, "target"));
	const char *tn = json_string_value(json_object_get(j, "tenant"));
	const char *pid = json_string_value(json_object_get(j, "plane_id"));
	const char *tok = json_string_value(json_object_get(j, "session_token"));
	int64_t exp = json_integer_value(json_object_get(j, "expires_at"));

	/* a session belongs to one control plane and tenant, and is useless once expired */
	if (tg && tn && pid && tok && !strcmp(tg, t->target) && !strcmp(tn, t->tenant) &&
	    exp > (int64_t)time(NULL) + 5) {
		snprintf(t->plane_id, sizeof(t->plane_id), "%s", pid);
		t->token = strdup(tok);
		t->token_exp = exp;
		t->token_got = json_integer_value(json_object_get(j, "obtained_at"));
		t->hb_s = (int)json_integer_value(json_object_get(j, "heartbeat_s"));
		t->metrics_s = (int)json_integer_value(json_object_get(j, "metrics_s"));
		atomic_store(&t->signs_identity, json_is_true(json_object_get(j, "signs_identity")));
		if (t->hb_s <= 0)
			t->hb_s = 30;
		if (t->metrics_s <= 0)
			t->metrics_s = 60;
		t->lease_ttl_ms = (int)json_integer_value(json_object_get(j, "lease_ttl_ms"));
		t->acks = json_is_true(json_object_get(j, "completion_acks"));
		log_info("tunnel: resuming session of plane %s (expires in %llds)", pid,
			 (long long)(exp - time(NULL)));
	}
	json_decref(j);
}

/* --- outbox --- */

static void outbox_path(struct tunnel *t, const char *run_id, char *path, size_t len)
{
	snprintf(path, len, "%s/%s.pb", t->outbox, run_id);
}

static bool safe_id(const char *id)
{
	if (!*id || strlen(id) >= 64)
		return false;
	for (const char *p = id; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
		      *p == '-' || *p == '_' || *p == '.'))
			return false;
	return id[0] != '.';
}

static void outbox_load(struct tunnel *t)
{
	DIR *d = opendir(t->outbox);
	struct dirent *de;

	while (d && (de = readdir(d))) {
		size_t n = strlen(de->d_name);
		struct pending *p;
		char path[8192];
		char *buf;
		size_t len;

		if (n < 4 || n - 3 >= sizeof(p->run_id) || strcmp(de->d_name + n - 3, ".pb"))
			continue;
		snprintf(path, sizeof(path), "%s/%s", t->outbox, de->d_name);
		if (util_read_file(path, &buf, &len) < 0)
			continue;
		p = calloc(1, sizeof(*p));
		if (!p) {
			free(buf);
			continue;
		}
		snprintf(p->run_id, sizeof(p->run_id), "%.*s", (int)(n - 3), de->d_name);
		p->buf = (uint8_t *)buf;
		p->len = len;
		{
			struct stat st;

			p->created = stat(path, &st) == 0 ? (int64_t)st.st_mtime : (int64_t)time(NULL);
		}
		p->next = t->pending;
		t->pending = p;
	}
	if (d)
		closedir(d);
}

bool tunnel_pending(struct tunnel *t, const char *run_id)
{
	bool found = false;

	pthread_mutex_lock(&t->mu);
	for (struct pending *p = t->pending; p; p = p->next)
		if (!strcmp(p->run_id, run_id))
			found = true;
	pthread_mutex_unlock(&t->mu);
	return found;
}

/* --- reports (loop thread) --- */

static void ts_now(Google__Protobuf__Timestamp *ts)
{
	uint64_t ns = util_now_ns(CLOCK_REALTIME);

	ts->seconds = (int64_t)(ns / 1000000000);
	ts->nanos = (int32_t)(ns % 1000000000);
}

static uint8_t *pack_client(Lantern__V1__DpRunStreamClientMsg *m, size_t *len)
{
	uint8_t *buf;

	*len = lantern__v1__dp_run_stream_client_msg__get_packed_size(m);
	buf = malloc(*len ? *len : 1);
	if (buf)
		lantern__v1__dp_run_stream_client_msg__pack(m, buf);
	return buf;
}

/* Packs a status (or Accepted) report; with t->mu held or before the stream exists. */
static uint8_t *pack_report(const struct live *l, size_t *len)
{
	Lantern__V1__DpRunStreamClientMsg m = LANTERN__V1__DP_RUN_STREAM_CLIENT_MSG__INIT;
	Lantern__V1__DpRunAccepted a = LANTERN__V1__DP_RUN_ACCEPTED__INIT;
	Lantern__V1__DpRunStatusUpdate s = LANTERN__V1__DP_RUN_STATUS_UPDATE__INIT;
	Google__Protobuf__Timestamp ts = GOOGLE__PROTOBUF__TIMESTAMP__INIT;

	if (l->st == TUNNEL_ACCEPTED) {
		a.run_id = (char *)l->run_id;
		a.fencing_epoch = l->epoch;
		m.msg_case = LANTERN__V1__DP_RUN_STREAM_CLIENT_MSG__MSG_ACCEPTED;
		m.accepted = &a;
	} else {
		ts_now(&ts);
		s.run_id = (char *)l->run_id;
		s.status = (Lantern__V1__DpRunStatus)l->st;
		s.detail = l->detail ? l->detail : "";
		s.ts = &ts;
		s.fencing_epoch = l->epoch;
		m.msg_case = LANTERN__V1__DP_RUN_STREAM_CLIENT_MSG__MSG_STATUS;
		m.status = &s;
	}
	return pack_client(&m, len);
}

void tunnel_report(struct tunnel *t, const char *run_id, int64_t epoch, enum tunnel_status st,
		   const char *detail)
{
	struct live *l;
	uint8_t *buf;
	size_t len;

	pthread_mutex_lock(&t->mu);
	for (l = t->live; l; l = l->next)
		if (!strcmp(l->run_id, run_id))
			break;
	if (!l && (l = calloc(1, sizeof(*l)))) {
		snprintf(l->run_id, sizeof(l->run_id), "%s", run_id);
		l->next = t->live;
		t->live = l;
	}
	if (l) {
		l->epoch = epoch;
		l->st = st;
		free(l->detail);
		l->detail = detail ? strdup(detail) : NULL;
		if (t->stream && (buf = pack_report(l, &len))) {
			rpc_stream_send(t->stream, buf, len);
			free(buf);
		}
	}
	pthread_mutex_unlock(&t->mu);
	/* a new run's lease counts from a renewal, not from the assignment */
	if (st == TUNNEL_ACCEPTED)
		atomic_store(&t->renew_now, 1);
}

static void live_drop_locked(struct tunnel *t, const char *run_id)
{
	for (struct live **pp = &t->live; *pp; pp = &(*pp)->next)
		if (!strcmp((*pp)->run_id, run_id)) {
			struct live *l = *pp;
			*pp = l->next;
			free(l->detail);
			free(l);
			return;
		}
}

void tunnel_forget(struct tunnel *t, const char *run_id)
{
	pthread_mutex_lock(&t->mu);
	live_drop_locked(t, run_id);
	pthread_mutex_unlock(&t->mu);
}

/* Removes p (t->mu held) and its outbox file; the loop learns it may forget the run. */
static void pending_drop_locked(struct tunnel *t, struct pending **pp, const char *why)
{
	struct pending *p = *pp;
	struct tunnel_ev *ev;
	char path[8192];

	*pp = p->next;
	if (why)
		log_warn("tunnel: completion of run %s dropped from the outbox: %s", p->run_id, why);
	outbox_path(t, p->run_id, path, sizeof(path));
	unlink(path);
	/* post() takes the mutex: queue the event directly */
	if ((ev = calloc(1, sizeof(*ev)))) {
		uint64_t one = 1;

		ev->type = TUNNEL_FORGET;
		snprintf(ev->run_id, sizeof(ev->run_id), "%s", p->run_id);
		if (t->evs_tail)
			t->evs_tail->next = ev;
		else
			t->evs = ev;
		t->evs_tail = ev;
		if (write(t->efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
			log_error("tunnel: waking the event loop: %s", strerror(errno));
	}
	free(p->buf);
	free(p);
}

/* The outbox's bounds (t->mu held): a peer that never acknowledges has seen a
 * completion once a stream took it and stayed up; nothing stays past the age bound. */
static void outbox_bound_locked(struct tunnel *t, bool acks)
{
	int64_t now = mono_ms(), unix_now = (int64_t)time(NULL);

	for (struct pending **pp = &t->pending; *pp;) {
		struct pending *p = *pp;

		if (unix_now - p->created > TUNNEL_OUTBOX_MAX_AGE_S)
			pending_drop_locked(t, pp, "older than the outbox's age bound");
		else if (!acks && t->stream && p->sent_gen == t->gen && now - p->sent_ms >= TUNNEL_ACCEPT_MS)
			pending_drop_locked(t, pp, NULL);
		else
			pp = &p->next;
	}
}

/* At most TUNNEL_OUTBOX_MAX kept: the oldest goes (t->mu held). */
static void outbox_cap_locked(struct tunnel *t)
{
	size_t n = 0;
	struct pending **oldest = NULL;

	for (struct pending *p = t->pending; p; p = p->next)
		n++;
	while (n-- > TUNNEL_OUTBOX_MAX) {
		oldest = NULL;
		for (struct pending **pp = &t->pending; *pp; pp = &(*pp)->next)
			if (!oldest || (*pp)->created < (*oldest)->created)
				oldest = pp;
		if (oldest)
			pending_drop_locked(t, oldest, "the outbox is full");
	}
}

int tunnel_complete(struct tunnel *t, const struct tunnel_completion *c, struct lerr *e)
{
	Lantern__V1__DpRunStreamClientMsg m = LANTERN__V1__DP_RUN_STREAM_CLIENT_MSG__INIT;
	Lantern__V1__DpRunCompleted rc = LANTERN__V1__DP_RUN_COMPLETED__INIT;
	struct pending *p;
	char path[8192];
	int err;

	if (!safe_id(c->run_id))
		return lerr_set(e, EINVAL, "tunnel: run id \"%s\" cannot name an outbox file", c->run_id);
	rc.run_id = (char *)c->run_id;
	rc.status = (Lantern__V1__DpRunStatus)c->status;
	rc.output_json = (char *)(c->output_json ? c->output_json : "");
	rc.cost_usd = c->cost_usd;
	rc.tokens_in = c->tokens_in;
	rc.tokens_out = c->tokens_out;
	rc.duration_ms = c->duration_ms;
	rc.fencing_epoch = c->epoch;
	rc.detail = (char *)(c->detail ? c->detail : "");
	rc.not_started = c->not_started;
	rc.receipt = (char *)(c->receipt ? c->receipt : "");
	m.msg_case = LANTERN__V1__DP_RUN_STREAM_CLIENT_MSG__MSG_COMPLETED;
	m.completed = &rc;
	p = calloc(1, sizeof(*p));
	if (!p || !(p->buf = pack_client(&m, &p->len))) {
		free(p);
		return lerr_set(e, ENOMEM, "tunnel: out of memory");
	}
	snprintf(p->run_id, sizeof(p->run_id), "%s", c->run_id);
	p->created = (int64_t)time(NULL);
	outbox_path(t, c->run_id, path, sizeof(path));
	if ((err = util_write_file_atomic(path, p->buf, p->len)) < 0) {
		free(p->buf);
		free(p);
		return lerr_set(e, err, "tunnel: outbox %s: %s", path, strerror(-err));
	}
	pthread_mutex_lock(&t->mu);
	live_drop_locked(t, c->run_id);
	for (struct pending **pp = &t->pending; *pp; pp = &(*pp)->next)
		if (!strcmp((*pp)->run_id, c->run_id)) {
			struct pending *old = *pp;
			*pp = old->next;
			free(old->buf);
			free(old);
			break;
		}
	p->next = t->pending;
	t->pending = p;
	if (t->stream) {
		rpc_stream_send(t->stream, p->buf, p->len);
		p->sent_gen = t->gen;
		p->sent_ms = mono_ms();
	}
	outbox_cap_locked(t);
	pthread_mutex_unlock(&t->mu);
	return 0;
}

/* t->mu held: the answered one goes (inst), and those past their keep. */
static void idreqs_prune_locked(struct tunnel *t, const char *inst)
{
	int64_t now = mono_ms();

	for (struct idreq **pp = &t->idreqs; *pp;) {
		struct idreq *q = *pp;

		if ((inst && !strcmp(q->inst, inst)) || now - q->sent_ms > IDREQ_KEEP_MS) {
			*pp = q->next;
			free(q->buf);
			free(q);
		} else {
			pp = &q->next;
		}
	}
}

int tunnel_identity_request(struct tunnel *t, const char *run_id, int64_t epoch, const char *inst,
			    const uint8_t pk[32], int64_t exp)
{
	Lantern__V1__DpRunStreamClientMsg m = LANTERN__V1__DP_RUN_STREAM_CLIENT_MSG__INIT;
	Lantern__V1__DpIdentityRequest rq = LANTERN__V1__DP_IDENTITY_REQUEST__INIT;
	struct idreq *q;
	uint8_t *buf;
	size_t len;
	int err = -ENOTCONN;

	if (!atomic_load(&t->signs_identity))
		return -ENOENT;
	rq.run_id = (char *)run_id;
	rq.instance_id = (char *)inst;
	rq.public_key.data = (uint8_t *)pk;
	rq.public_key.len = 32;
	rq.expires_at_unix = exp;
	rq.fencing_epoch = epoch;
	m.msg_case = LANTERN__V1__DP_RUN_STREAM_CLIENT_MSG__MSG_IDENTITY_REQUEST;
	m.identity_request = &rq;
	if (!(buf = pack_client(&m, &len)))
		return -ENOMEM;
	q = calloc(1, sizeof(*q));
	pthread_mutex_lock(&t->mu);
	/* kept until answered (or IDREQ_KEEP_MS): a stream down now (its replica was killed)
	 * sends it when it opens again, so a start waits out a failover within the signing
	 * timeout instead of failing at once */
	if (t->stream) {
		rpc_stream_send(t->stream, buf, len);
		err = 0;
	}
	idreqs_prune_locked(t, NULL);
	if (q) {
		snprintf(q->inst, sizeof(q->inst), "%s", inst);
		q->buf = buf;
		q->len = len;
		q->sent_ms = mono_ms();
		q->next = t->idreqs;
		t->idreqs = q;
		buf = NULL;
		err = 0;
	}
	pthread_mutex_unlock(&t->mu);
	free(buf);
	return err;
}

/* --- the stream (thread) --- */

static void on_ack(struct tunnel *t, Lantern__V1__DpCompletionAck *a)
{
	char path[8192];
	bool was_pending = false;
	struct tunnel_ev *ev;

	pthread_mutex_lock(&t->mu);
	for (struct pending **pp = &t->pending; *pp; pp = &(*pp)->next)
		if (!strcmp((*pp)->run_id, a->run_id)) {
			struct pending *p = *pp;
			*pp = p->next;
			free(p->buf);
			free(p);
			was_pending = true;
			break;
		}
	/* an error about a live run: the control plane does not want to hear of it again */
	live_drop_locked(t, a->run_id);
	pthread_mutex_unlock(&t->mu);
	if (a->error[0])
		log_warn("tunnel: control plane on run %s: %s", a->run_id, a->error);
	if (was_pending && safe_id(a->run_id)) {
		outbox_path(t, a->run_id, path, sizeof(path));
		unlink(path);
		if ((ev = calloc(1, sizeof(*ev)))) {
			ev->type = TUNNEL_FORGET;
			snprintf(ev->run_id, sizeof(ev->run_id), "%s", a->run_id);
			post(t, ev);
		}
	}
}

static char **strv_dup(char **v, size_t n)
{
	char **out = calloc(n + 1, sizeof(char *));

	for (size_t i = 0; out && i < n; i++)
		out[i] = strdup(v[i]);
	return out;
}

static void on_grant(struct tunnel *t, Lantern__V1__DpLeaseGrant *g)
{
	struct tunnel_ev *ev;
	int64_t sent = -1;

	for (int i = 0; i < RENEWALS_KEPT; i++)
		if (t->renewals[i].seq == g->seq && g->seq)
			sent = t->renewals[i].sent_ms;
	/* an answer to a renewal too old to remember renews nothing */
	if (sent < 0 || !(ev = calloc(1, sizeof(*ev))))
		return;
	ev->type = TUNNEL_LEASE;
	ev->sent_ms = sent;
	ev->lease_ttl_ms = g->ttl_ms;
	ev->renewed = strv_dup(g->renewed, g->n_renewed);
	ev->n_renewed = ev->renewed ? g->n_renewed : 0;
	ev->lost = calloc(g->n_lost + 1, sizeof(char *));
	ev->lost_why = calloc(g->n_lost + 1, sizeof(char *));
	for (size_t i = 0; ev->lost && ev->lost_why && i < g->n_lost; i++) {
		ev->lost[i] = strdup(g->lost[i]->run_id);
		ev->lost_why[i] = strdup(g->lost[i]->reason);
		ev->n_lost++;
	}
	if (g->ttl_ms > 0)
		t->lease_ttl_ms = g->ttl_ms;
	post(t, ev);
}

static void send_renewal(struct tunnel *t)
{
	Lantern__V1__DpRunStreamClientMsg m = LANTERN__V1__DP_RUN_STREAM_CLIENT_MSG__INIT;
	Lantern__V1__DpLeaseRenew rn = LANTERN__V1__DP_LEASE_RENEW__INIT;
	Lantern__V1__DpCapacity cap = LANTERN__V1__DP_CAPACITY__INIT;
	Lantern__V1__DpClassSlots slots[8], *sp[8];
	Lantern__V1__DpLeaseHeld *held = NULL, **hp = NULL;
	size_t n = 0, len;
	uint8_t *buf;

	capacity_msg(t, &cap, slots, sp, ARRAY_SIZE(slots));
	pthread_mutex_lock(&t->mu);
	for (struct live *l = t->live; l; l = l->next)
		n++;
	held = calloc(n + 1, sizeof(*held));
	hp = calloc(n + 1, sizeof(*hp));
	n = 0;
	for (struct live *l = t->live; held && hp && l; l = l->next) {
		lantern__v1__dp_lease_held__init(&held[n]);
		held[n].run_id = l->run_id;
		held[n].fencing_epoch = l->epoch;
		hp[n] = &held[n];
		n++;
	}
	rn.seq = ++t->renew_seq;
	rn.leases = hp;
	rn.n_leases = n;
	rn.capacity = &cap;
	m.msg_case = LANTERN__V1__DP_RUN_STREAM_CLIENT_MSG__MSG_LEASE_RENEW;
	m.lease_renew = &rn;
	if (t->stream && (buf = pack_client(&m, &len))) {
		rpc_stream_send(t->stream, buf, len);
		free(buf);
		t->renewals[rn.seq % RENEWALS_KEPT].seq = rn.seq;
		t->renewals[rn.seq % RENEWALS_KEPT].sent_ms = mono_ms();
	}
	pthread_mutex_unlock(&t->mu);
	free(held);
	free(hp);
}

static void stream_msg(struct rpc_stream *s, void *arg, const uint8_t *msg, size_t len)
{
	struct tunnel *t = arg;
	Lantern__V1__DpRunStreamServerMsg *m = lantern__v1__dp_run_stream_server_msg__unpack(NULL, len, msg);
	struct tunnel_ev *ev;

	if (!m) {
		log_warn("tunnel: dropping a malformed frame from the control plane (%zu bytes)", len);
		return;
	}
	switch (m->msg_case) {
	case LANTERN__V1__DP_RUN_STREAM_SERVER_MSG__MSG_ASSIGNMENT:
		if (!(ev = calloc(1, sizeof(*ev))))
			break;
		ev->type = TUNNEL_ASSIGN;
		snprintf(ev->run_id, sizeof(ev->run_id), "%s", m->assignment->run_id);
		ev->config_json = strdup(m->assignment->config_json);
		ev->input_json = strdup(m->assignment->input_json);
		ev->idem = strdup(m->assignment->idempotency_key);
		ev->epoch = m->assignment->fencing_epoch;
		ev->deadline_unix = m->assignment->deadline_unix;
		ev->lease_ttl_ms = m->assignment->lease_ttl_ms > 0 ? m->assignment->lease_ttl_ms : 0;
		ev->resume = m->assignment->resume;
		ev->recv_ms = mono_ms();
		if (ev->lease_ttl_ms && (!t->lease_ttl_ms || ev->lease_ttl_ms < t->lease_ttl_ms))
			t->lease_ttl_ms = ev->lease_ttl_ms;
		post(t, ev);
		break;
	case LANTERN__V1__DP_RUN_STREAM_SERVER_MSG__MSG_CANCEL:
		if (!(ev = calloc(1, sizeof(*ev))))
			break;
		ev->type = TUNNEL_CANCEL;
		snprintf(ev->run_id, sizeof(ev->run_id), "%s", m->cancel->run_id);
		post(t, ev);
		break;
	case LANTERN__V1__DP_RUN_STREAM_SERVER_MSG__MSG_PING: {
		Lantern__V1__DpRunStreamClientMsg pm = LANTERN__V1__DP_RUN_STREAM_CLIENT_MSG__INIT;
		Lantern__V1__DpPong pong = LANTERN__V1__DP_PONG__INIT;
		uint8_t buf[16];
		size_t n;

		pm.msg_case = LANTERN__V1__DP_RUN_STREAM_CLIENT_MSG__MSG_PONG;
		pm.pong = &pong;
		n = lantern__v1__dp_run_stream_client_msg__pack(&pm, buf);
		rpc_stream_send(s, buf, n);
		break;
	}
	case LANTERN__V1__DP_RUN_STREAM_SERVER_MSG__MSG_COMPLETION_ACK:
		on_ack(t, m->completion_ack);
		break;
	case LANTERN__V1__DP_RUN_STREAM_SERVER_MSG__MSG_LEASE_GRANT:
		on_grant(t, m->lease_grant);
		break;
	case LANTERN__V1__DP_RUN_STREAM_SERVER_MSG__MSG_IDENTITY_TOKEN:
		pthread_mutex_lock(&t->mu);
		idreqs_prune_locked(t, m->identity_token->instance_id);
		pthread_mutex_unlock(&t->mu);
		if (t->o.on_identity)
			t->o.on_identity(t->o.identity_arg, m->identity_token->run_id,
					 m->identity_token->instance_id, m->identity_token->token,
					 m->identity_token->error);
		break;
	default:
		break;
	}
	lantern__v1__dp_run_stream_server_msg__free_unpacked(m, NULL);
}

static void stream_end(struct rpc_stream *s, void *arg, int status, const char *details)
{
	struct tunnel *t = arg;
	int64_t up;

	pthread_mutex_lock(&t->mu);
	if (t->stream == s)
		t->stream = NULL;
	pthread_mutex_unlock(&t->mu);
	up = mono_ms() - t->stream_opened;
	if (up > 10000)
		t->stream_fails = 0;
	if (status == RPC_UNAUTHENTICATED) {
		log_warn("tunnel: RunStream refused the session (%s): registering again", details);
		session_drop(t);
	} else if (status != RPC_OK && status != RPC_ABORTED && status != RPC_RESOURCE_EXHAUSTED &&
		   !atomic_load(&t->stop)) {
		rotate(t, "the RunStream failed");
	}
	t->next_stream = mono_ms() + backoff(t, &t->stream_fails);
	if (!atomic_load(&t->stop))
		log_warn("tunnel: RunStream ended (%s%s%s) after %lld ms; reconnecting in %lld ms",
			 rpc_status_name(status), details[0] ? ": " : "", details, (long long)up,
			 (long long)(t->next_stream - mono_ms()));
	rpc_stream_unref(s);
}

static const struct rpc_stream_ops stream_ops = {
	.on_msg = stream_msg,
	.on_end = stream_end,
};

static void stream_open(struct tunnel *t)
{
	Lantern__V1__DpRunStreamClientMsg m = LANTERN__V1__DP_RUN_STREAM_CLIENT_MSG__INIT;
	Lantern__V1__DpHello h = LANTERN__V1__DP_HELLO__INIT;
	struct rpc_stream *s;
	uint8_t *buf;
	size_t len;

	if (rpc_stream_open(ch(t), t->q, RPC_SERVICE "RunStream", &stream_ops, t, &s) < 0) {
		t->next_stream = mono_ms() + backoff(t, &t->stream_fails);
		return;
	}
	h.plane_id = t->plane_id;
	h.session_token = t->token;
	m.msg_case = LANTERN__V1__DP_RUN_STREAM_CLIENT_MSG__MSG_HELLO;
	m.hello = &h;
	t->stream_opened = mono_ms();
	pthread_mutex_lock(&t->mu);
	if ((buf = pack_client(&m, &len))) {
		rpc_stream_send(s, buf, len);
		free(buf);
	}
	/* what the control plane may have missed while the stream was down */
	for (struct live *l = t->live; l; l = l->next)
		if ((buf = pack_report(l, &len))) {
			rpc_stream_send(s, buf, len);
			free(buf);
		}
	idreqs_prune_locked(t, NULL);
	for (struct idreq *q = t->idreqs; q; q = q->next)
		rpc_stream_send(s, q->buf, q->len);
	t->gen++;
	for (struct pending *p = t->pending; p; p = p->next) {
		rpc_stream_send(s, p->buf, p->len);
		p->sent_gen = t->gen;
		p->sent_ms = mono_ms();
	}
	t->stream = s;
	pthread_mutex_unlock(&t->mu);
	atomic_store(&t->renew_now, 1);
	log_info("tunnel: RunStream open to %s as plane %s", t->targets[t->cur], t->plane_id);
}

/* --- unary calls (thread) --- */

static char *read_token(struct tunnel *t)
{
	char *buf = NULL;
	size_t len;

	if (util_read_file(t->token_file, &buf, &len) < 0)
		return NULL;
	while (len && (buf[len - 1] == '\n' || buf[len - 1] == '\r' || buf[len - 1] == ' '))
		buf[--len] = '\0';
	return buf;
}

/* A token's expiry as the control plane sent it, never before the token was obtained: a
 * past (or hugely negative) one means refresh at once, and the refresh arithmetic on it
 * (expiry minus obtained) cannot overflow. */
static int64_t expiry(int64_t exp, int64_t got)
{
	return exp > got ? exp : got;
}

static void on_register(void *arg, int status, const char *details, const uint8_t *resp, size_t len)
{
	struct tunnel *t = arg;
	Lantern__V1__DpRegisterResponse *r = NULL;

	t->register_busy = false;
	if (status == RPC_OK)
		r = lantern__v1__dp_register_response__unpack(NULL, len, resp);
	if (!r) {
		t->next_register = mono_ms() + backoff(t, &t->register_fails);
		log_error("tunnel: Register with %s failed (%s%s%s); retrying in %lld ms", t->targets[t->cur],
			  rpc_status_name(status), details[0] ? ": " : "", details,
			  (long long)(t->next_register - mono_ms()));
		if (status != RPC_UNAUTHENTICATED)
			rotate(t, "Register failed");
		return;
	}
	t->register_fails = 0;
	snprintf(t->plane_id, sizeof(t->plane_id), "%s", r->plane_id);
	free(t->token);
	t->token = strdup(r->session_token);
	t->token_got = (int64_t)time(NULL);
	/* an older control plane does not say when the token expires: assume the 1 h TTL */
	t->token_exp = r->expires_at_unix ? expiry(r->expires_at_unix, t->token_got) : t->token_got + 3600;
	t->hb_s = r->heartbeat_interval_seconds > 0 ? r->heartbeat_interval_seconds : 30;
	t->metrics_s = r->metrics_interval_seconds > 0 ? r->metrics_interval_seconds : 60;
	t->lease_ttl_ms = r->lease_ttl_ms > 0 ? r->lease_ttl_ms : 0;
	t->acks = r->completion_acks;
	atomic_store(&t->signs_identity, r->signs_identity);
	lantern__v1__dp_register_response__free_unpacked(r, NULL);
	session_save(t);
	atomic_store(&t->registered, 1);
	t->next_hb = t->next_stream = mono_ms();
	t->next_metrics = mono_ms() + 1000;
	log_info("tunnel: registered with %s as plane %s (heartbeat %ds, metrics %ds, lease ttl %d ms%s)",
		 t->targets[t->cur], t->plane_id, t->hb_s, t->metrics_s, t->lease_ttl_ms,
		 t->acks ? "" : ", completions not acknowledged");
}

static void do_register(struct tunnel *t)
{
	Lantern__V1__DpRegisterRequest rq = LANTERN__V1__DP_REGISTER_REQUEST__INIT;
	Lantern__V1__DpCapacity cap = LANTERN__V1__DP_CAPACITY__INIT;
	Lantern__V1__DpClassSlots slots[8], *sp[8];
	struct utsname u;
	char host[256] = "";
	char *tok = read_token(t);
	uint8_t *buf;
	size_t len;

	if (!tok || !*tok) {
		log_error("tunnel: bootstrap token file %s is missing or empty", t->token_file);
		free(tok);
		t->next_register = mono_ms() + backoff(t, &t->register_fails);
		return;
	}
	gethostname(host, sizeof(host) - 1);
	uname(&u);
	rq.tenant_id = t->tenant;
	rq.agent_token = tok;
	rq.agent_version = t->version;
	rq.hostname = host;
	rq.os = u.sysname;
	rq.arch = u.machine;
	rq.isolation_classes = t->classes;
	rq.n_isolation_classes = t->o.n_classes;
	rq.max_runs = t->o.max_runs;
	rq.journal_store = t->store_id ? t->store_id : "";
	capacity_msg(t, &cap, slots, sp, ARRAY_SIZE(slots));
	rq.capacity = &cap;
	rq.region = t->region;
	if (t->o.node_pk) {
		rq.node_public_key.data = t->node_pk;
		rq.node_public_key.len = 32;
	}
	len = lantern__v1__dp_register_request__get_packed_size(&rq);
	buf = malloc(len ? len : 1);
	if (buf) {
		lantern__v1__dp_register_request__pack(&rq, buf);
		if (rpc_unary(ch(t), t->q, RPC_SERVICE "Register", buf, len, RPC_TIMEOUT_MS,
			      on_register, t) == 0)
			t->register_busy = true;
		sodium_memzero(buf, len);
	}
	sodium_memzero(tok, strlen(tok));
	free(tok);
	free(buf);
	if (!t->register_busy)
		t->next_register = mono_ms() + backoff(t, &t->register_fails);
}

/* A call refused for its session: the session is gone, register again. */
static void unauthenticated(struct tunnel *t, const char *what, const char *details)
{
	log_warn("tunnel: %s refused the session token (%s): registering again", what, details);
	session_drop(t);
	pthread_mutex_lock(&t->mu);
	if (t->stream)
		rpc_stream_finish(t->stream, RPC_CANCELLED, "session refused");
	pthread_mutex_unlock(&t->mu);
}

static void on_heartbeat(void *arg, int status, const char *details, const uint8_t *resp, size_t len)
{
	struct tunnel *t = arg;
	Lantern__V1__DpHeartbeatAck *a = status == RPC_OK ?
		lantern__v1__dp_heartbeat_ack__unpack(NULL, len, resp) : NULL;
	struct tunnel_ev *ev;

	t->hb_busy = false;
	if (status == RPC_UNAUTHENTICATED) {
		unauthenticated(t, "Heartbeat", details);
		return;
	}
	if (!a) {
		if (!t->hb_failing)
			log_warn("tunnel: Heartbeat failed (%s%s%s)", rpc_status_name(status),
				 details[0] ? ": " : "", details);
		t->hb_failing = true;
		atomic_store(&t->registered, 0);
		return;
	}
	if (t->hb_failing)
		log_info("tunnel: Heartbeat answered again");
	t->hb_failing = false;
	atomic_store(&t->registered, 1);
	if (t->hb_draining && !atomic_exchange(&t->drain_told, 1))
		log_info("tunnel: the control plane knows this node is draining");
	if (a->draining != t->draining && (ev = calloc(1, sizeof(*ev)))) {
		t->draining = a->draining;
		ev->type = TUNNEL_DRAIN;
		ev->draining = a->draining;
		post(t, ev);
	}
	lantern__v1__dp_heartbeat_ack__free_unpacked(a, NULL);
}

static void do_heartbeat(struct tunnel *t)
{
	Lantern__V1__DpHeartbeatRequest rq = LANTERN__V1__DP_HEARTBEAT_REQUEST__INIT;
	uint8_t buf[4096];
	size_t len;

	rq.plane_id = t->plane_id;
	rq.session_token = t->token;
	rq.active_runs = atomic_load(&t->active_runs);
	rq.queue_depth = atomic_load(&t->queue_depth);
	rq.draining = t->hb_draining = atomic_load(&t->self_draining);
	len = lantern__v1__dp_heartbeat_request__get_packed_size(&rq);
	if (len > sizeof(buf))
		return;
	lantern__v1__dp_heartbeat_request__pack(&rq, buf);
	if (rpc_unary(ch(t), t->q, RPC_SERVICE "Heartbeat", buf, len, RPC_TIMEOUT_MS,
		      on_heartbeat, t) == 0)
		t->hb_busy = true;
}

static void on_metrics(void *arg, int status, const char *details, const uint8_t *resp, size_t len)
{
	struct tunnel *t = arg;

	t->metrics_busy = false;
	if (status == RPC_UNAUTHENTICATED)
		unauthenticated(t, "ReportMetrics", details);
}

/* Node CPU busy share since the last call and memory in use, from /proc. */
static void node_pressure(struct tunnel *t, double *cpu, double *mem)
{
	unsigned long long v[8] = { 0 }, total = 0, idle;
	unsigned long long mtotal = 0, mavail = 0;
	char line[256];
	FILE *f;

	*cpu = *mem = 0;
	if ((f = fopen("/proc/stat", "re"))) {
		if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2],
			   &v[3], &v[4], &v[5], &v[6], &v[7]) == 8) {
			for (int i = 0; i < 8; i++)
				total += v[i];
			idle = v[3] + v[4];
			if (t->cpu_prev_total && total > t->cpu_prev_total)
				*cpu = 100.0 * (1.0 - (double)(idle - t->cpu_prev_idle) /
						       (double)(total - t->cpu_prev_total));
			t->cpu_prev_total = total;
			t->cpu_prev_idle = idle;
		}
		fclose(f);
	}
	if ((f = fopen("/proc/meminfo", "re"))) {
		while (fgets(line, sizeof(line), f)) {
			sscanf(line, "MemTotal: %llu kB", &mtotal);
			sscanf(line, "MemAvailable: %llu kB", &mavail);
		}
		fclose(f);
		if (mtotal)
			*mem = 100.0 * (double)(mtotal - mavail) / (double)mtotal;
	}
}

static void do_metrics(struct tunnel *t)
{
	Lantern__V1__DpMetricsReport rq = LANTERN__V1__DP_METRICS_REPORT__INIT;
	Google__Protobuf__Timestamp ts = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
	Lantern__V1__DpCapacity cap = LANTERN__V1__DP_CAPACITY__INIT;
	Lantern__V1__DpClassSlots slots[8], *sp[8];
	uint8_t buf[4096];
	size_t len;

	rq.plane_id = t->plane_id;
	rq.session_token = t->token;
	node_pressure(t, &rq.cpu_pct, &rq.mem_pct);
	rq.active_runs = atomic_load(&t->active_runs);
	rq.queue_depth = atomic_load(&t->queue_depth);
	ts_now(&ts);
	rq.ts = &ts;
	capacity_msg(t, &cap, slots, sp, ARRAY_SIZE(slots));
	rq.capacity = &cap;
	len = lantern__v1__dp_metrics_report__get_packed_size(&rq);
	if (len > sizeof(buf))
		return;
	lantern__v1__dp_metrics_report__pack(&rq, buf);
	if (rpc_unary(ch(t), t->q, RPC_SERVICE "ReportMetrics", buf, len, RPC_TIMEOUT_MS,
		      on_metrics, t) == 0)
		t->metrics_busy = true;
}

static void on_refresh(void *arg, int status, const char *details, const uint8_t *resp, size_t len)
{
	struct tunnel *t = arg;
	Lantern__V1__DpRefreshTokenResponse *r = status == RPC_OK ?
		lantern__v1__dp_refresh_token_response__unpack(NULL, len, resp) : NULL;

	t->refresh_busy = false;
	if (status == RPC_UNAUTHENTICATED) {
		unauthenticated(t, "RefreshToken", details);
		return;
	}
	if (!r) {
		/* retried with backoff: a call that fails at once (no connection) must not be
		 * re-issued in a loop, which floods the channel with connection attempts */
		t->next_refresh = mono_ms() + backoff(t, &t->refresh_fails);
		log_warn("tunnel: RefreshToken failed (%s%s%s); the current token expires in %llds; "
			 "retrying in %lld ms", rpc_status_name(status), details[0] ? ": " : "", details,
			 (long long)(t->token_exp - time(NULL)), (long long)(t->next_refresh - mono_ms()));
		return;
	}
	t->refresh_fails = 0;
	free(t->token);
	t->token = strdup(r->session_token);
	t->token_got = (int64_t)time(NULL);
	t->token_exp = expiry(r->expires_at_unix, t->token_got);
	lantern__v1__dp_refresh_token_response__free_unpacked(r, NULL);
	session_save(t);
	log_info("tunnel: session token refreshed, expires in %llds",
		 (long long)(t->token_exp - t->token_got));
}

static void do_refresh(struct tunnel *t)
{
	Lantern__V1__DpRefreshTokenRequest rq = LANTERN__V1__DP_REFRESH_TOKEN_REQUEST__INIT;
	uint8_t buf[4096];
	size_t len;

	rq.plane_id = t->plane_id;
	rq.session_token = t->token;
	len = lantern__v1__dp_refresh_token_request__get_packed_size(&rq);
	if (len > sizeof(buf))
		return;
	lantern__v1__dp_refresh_token_request__pack(&rq, buf);
	if (rpc_unary(ch(t), t->q, RPC_SERVICE "RefreshToken", buf, len, RPC_TIMEOUT_MS,
		      on_refresh, t) == 0)
		t->refresh_busy = true;
}

/* One round of timers: what is due is started; completions run in rpc_cq_poll. */
static void tunnel_step(struct tunnel *t)
{
	int64_t now = mono_ms(), unix_now = (int64_t)time(NULL);
	bool have_stream;

	if (!t->token) {
		if (!t->register_busy && now >= t->next_register)
			do_register(t);
		return;
	}
	/* a node that is stopping says so at once, and again until it is heard */
	if (atomic_load(&t->self_draining) && !atomic_load(&t->drain_told))
		t->next_hb = now;
	/* refresh once two thirds of the token's life are gone */
	if (!t->refresh_busy && now >= t->next_refresh &&
	    unix_now >= t->token_exp - (t->token_exp - t->token_got) / 3)
		do_refresh(t);
	if (!t->hb_busy && now >= t->next_hb) {
		do_heartbeat(t);
		t->next_hb = now + (int64_t)t->hb_s * 1000;
	}
	if (!t->metrics_busy && now >= t->next_metrics) {
		do_metrics(t);
		t->next_metrics = now + (int64_t)t->metrics_s * 1000;
	}
	pthread_mutex_lock(&t->mu);
	have_stream = t->stream != NULL;
	outbox_bound_locked(t, t->acks);
	pthread_mutex_unlock(&t->mu);
	if (!have_stream && now >= t->next_stream)
		stream_open(t);
	if (have_stream && t->lease_ttl_ms > 0 && (now >= t->next_renew || atomic_exchange(&t->renew_now, 0))) {
		send_renewal(t);
		t->next_renew = now + t->lease_ttl_ms / 3;
	}
}

static void *tunnel_main(void *arg)
{
	struct tunnel *t = arg;

	while (!atomic_load(&t->stop)) {
		tunnel_step(t);
		rpc_cq_poll(t->q, TICK_MS);
	}
	pthread_mutex_lock(&t->mu);
	if (t->stream)
		rpc_stream_finish(t->stream, RPC_CANCELLED, "lanternd stopping");
	pthread_mutex_unlock(&t->mu);
	for (size_t i = 0; i < t->n_targets; i++)
		rpc_channel_close(t->chs[i]);
	rpc_cq_free(t->q);
	return NULL;
}

static void tunnel_free(struct tunnel *t)
{
	if (!t)
		return;
	if (t->efd >= 0)
		close(t->efd);
	for (size_t i = 0; t->classes && i < t->o.n_classes; i++)
		free(t->classes[i]);
	free(t->classes);
	strv_free(t->targets, t->n_targets);
	free(t->chs);
	free(t->store_id);
	while (t->live) {
		struct live *l = t->live;
		t->live = l->next;
		free(l->detail);
		free(l);
	}
	while (t->pending) {
		struct pending *p = t->pending;
		t->pending = p->next;
		free(p->buf);
		free(p);
	}
	while (t->idreqs) {
		struct idreq *q = t->idreqs;

		t->idreqs = q->next;
		free(q->buf);
		free(q);
	}
	while (t->evs) {
		struct tunnel_ev *ev = t->evs;
		t->evs = ev->next;
		tunnel_ev_free(ev);
	}
	if (t->token) {
		sodium_memzero(t->token, strlen(t->token));
		free(t->token);
	}
	free(t->target);
	free(t->tenant);
	free(t->token_file);
	free(t->state_dir);
	free(t->ca_file);
	free(t->version);
	free(t->region);
	pthread_mutex_destroy(&t->mu);
	free(t);
}

/* target "a:1,b:2" -> targets[]; one channel each, opened by the caller. */
static int split_targets(struct tunnel *t, struct lerr *e)
{
	char *copy = strdup(t->target), *save = NULL;
	size_t n = 1;

	for (const char *p = t->target; *p; p++)
		n += *p == ',';
	t->targets = calloc(n, sizeof(char *));
	t->chs = calloc(n, sizeof(struct rpc_channel *));
	if (!copy || !t->targets || !t->chs) {
		free(copy);
		return lerr_set(e, ENOMEM, "tunnel: out of memory");
	}
	for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
		if (*tok)
			t->targets[t->n_targets++] = strdup(tok);
	free(copy);
	if (!t->n_targets)
		return lerr_set(e, EINVAL, "tunnel: --control-plane \"%s\" names no endpoint", t->target);
	return 0;
}

int tunnel_start(const struct tunnel_opts *o, struct tunnel **out, int *efd, struct lerr *e)
{
	struct tunnel *t = calloc(1, sizeof(*t));
	int err;

	if (!t)
		return lerr_set(e, ENOMEM, "tunnel: out of memory");
	pthread_mutex_init(&t->mu, NULL);
	t->efd = -1;
	t->o = *o;
	if (t->o.backoff_max_ms < BACKOFF_MIN_MS)
		t->o.backoff_max_ms = 30000;
	t->target = strdup(o->target);
	t->tenant = strdup(o->tenant);
	t->token_file = strdup(o->token_file);
	t->state_dir = strdup(o->state_dir);
	t->version = strdup(o->agent_version ? o->agent_version : "");
	t->region = strdup(o->region ? o->region : "");
	if (o->node_pk)
		memcpy(t->node_pk, o->node_pk, sizeof(t->node_pk));
	t->ca_file = o->tls.ca_file ? strdup(o->tls.ca_file) : NULL;
	t->o.tls.ca_file = t->ca_file;
	t->store_id = o->journal_store ? strdup(o->journal_store) : NULL;
	t->cap = o->capacity;
	t->classes = calloc(o->n_classes + 1, sizeof(char *));
	if (!t->target || !t->tenant || !t->token_file || !t->state_dir || !t->version || !t->region ||
	    !t->classes) {
		tunnel_free(t);
		return lerr_set(e, ENOMEM, "tunnel: out of memory");
	}
	for (size_t i = 0; i < o->n_classes; i++)
		t->classes[i] = strdup(o->classes[i]);
	if ((err = split_targets(t, e)) < 0) {
		tunnel_free(t);
		return err;
	}
	snprintf(t->outbox, sizeof(t->outbox), "%s/outbox", o->state_dir);
	snprintf(t->session_path, sizeof(t->session_path), "%s/session.json", o->state_dir);
	if ((err = util_mkdir_p(t->outbox, 0700)) < 0) {
		lerr_set(e, err, "tunnel: %s: %s", t->outbox, strerror(-err));
		tunnel_free(t);
		return err;
	}
	t->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (t->efd < 0) {
		err = lerr_set(e, errno, "tunnel: eventfd: %s", strerror(errno));
		tunnel_free(t);
		return err;
	}
	session_load(t);
	outbox_load(t);
	t->q = rpc_cq_new();
	if (!t->q) {
		tunnel_free(t);
		return lerr_set(e, ENOMEM, "tunnel: out of memory");
	}
	for (size_t i = 0; i < t->n_targets; i++) {
		if ((err = rpc_channel_open(t->targets[i], &t->o.tls, &t->chs[i], e)) < 0) {
			while (i-- > 0)
				rpc_channel_close(t->chs[i]);
			rpc_cq_free(t->q);
			tunnel_free(t);
			return err;
		}
	}
	if ((err = pthread_create(&t->thread, NULL, tunnel_main, t)) != 0) {
		for (size_t i = 0; i < t->n_targets; i++)
			rpc_channel_close(t->chs[i]);
		rpc_cq_free(t->q);
		tunnel_free(t);
		return lerr_set(e, err, "tunnel: thread: %s", strerror(err));
	}
	pthread_setname_np(t->thread, "lantern-tunnel");
	*efd = t->efd;
	*out = t;
	return 0;
}

void tunnel_drain(struct tunnel *t)
{
	atomic_store(&t->self_draining, 1);
}

bool tunnel_drain_told(struct tunnel *t)
{
	return atomic_load(&t->drain_told);
}

bool tunnel_registered(struct tunnel *t)
{
	return atomic_load(&t->registered);
}

void tunnel_stop(struct tunnel *t)
{
	if (!t)
		return;
	atomic_store(&t->stop, 1);
	pthread_join(t->thread, NULL);
	tunnel_free(t);
}
