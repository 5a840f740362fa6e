/* tunnel.c (fuzz target "tunnel"): the node's side of the tunnel (userspace/tunnel) on
 * whatever a control plane answers: the real module, through its public API, on its own
 * thread, with the in-memory transport of fake_rpc.h in place of gRPC, so that the
 * target plays the control plane: the answers to Register, Heartbeat, ReportMetrics and
 * RefreshToken, the RunStream frames and the stream's end.
 *
 * Input: actions, each a byte and what it needs: answer the oldest unary call (a status
 * byte, mostly OK, and the response bytes), deliver a frame on the open RunStream, end
 * the stream (a status byte), complete a run on the node's side (a run id byte: its
 * completion goes to the outbox and on the stream), report a run's status.
 * When the input is spent the node's events are taken and the tunnel is stopped.
 *
 * Properties beyond the sanitizers:
 *  - everything the node sends (unary requests and RunStream frames) unpacks as the
 *    message its method carries, and the first frame of every stream is a Hello;
 *  - events handed to lanternd's loop are whole: an assignment has its strings, run ids
 *    are NUL-terminated;
 *  - the node forgets only runs it completed (an acknowledgement for any other run id
 *    changes nothing), and nothing outside the tunnel's state directory is touched (a
 *    canary file next to it). */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fake_rpc.h"
#include "fuzzlib.h"
#include "lantern/tunnel.h"
#include "lantern/v1/dataplane.pb-c.h"

static const char *work;
static char state_dir[4096], token_file[4096], canary[4096];

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static struct fz in;
static bool started, spent, released;
static struct tunnel *tun;
static struct rpc_stream *hello_seen_on;
static bool completed[5];  /* run_ids[i] was completed on the node's side */

static const char *const run_ids[] = { "run-0123456789abcdef", "run-1", "run-2", "../run", "" };

static void on_request(const char *method, const uint8_t *req, size_t len)
{
	ProtobufCMessage *m = NULL;

	if (!strcmp(method, RPC_SERVICE "Register"))
		m = (ProtobufCMessage *)lantern__v1__dp_register_request__unpack(NULL, len, req);
	else if (!strcmp(method, RPC_SERVICE "Heartbeat"))
		m = (ProtobufCMessage *)lantern__v1__dp_heartbeat_request__unpack(NULL, len, req);
	else if (!strcmp(method, RPC_SERVICE "ReportMetrics"))
		m = (ProtobufCMessage *)lantern__v1__dp_metrics_report__unpack(NULL, len, req);
	else if (!strcmp(method, RPC_SERVICE "RefreshToken"))
		m = (ProtobufCMessage *)lantern__v1__dp_refresh_token_request__unpack(NULL, len, req);
	FZ_CHECK(m, "the node sent %s a request that does not unpack (%zu bytes)", method, len);
	protobuf_c_message_free_unpacked(m, NULL);
}

static void on_sent(struct rpc_stream *s, const uint8_t *msg, size_t len)
{
	Lantern__V1__DpRunStreamClientMsg *m = lantern__v1__dp_run_stream_client_msg__unpack(NULL, len, msg);

	FZ_CHECK(m, "the node sent a RunStream frame that does not unpack (%zu bytes)", len);
	if (s != hello_seen_on) {
		FZ_CHECK(m->msg_case == LANTERN__V1__DP_RUN_STREAM_CLIENT_MSG__MSG_HELLO,
			 "the first frame of a RunStream is not Hello but case %d", m->msg_case);
		hello_seen_on = s;
	}
	lantern__v1__dp_run_stream_client_msg__free_unpacked(m, NULL);
}

static int status_of(uint8_t b)
{
	static const int st[] = { RPC_OK, RPC_OK, RPC_OK, RPC_OK, RPC_UNAUTHENTICATED,
				  RPC_UNAVAILABLE, RPC_CANCELLED, RPC_INVALID_ARGUMENT };
	return st[b % 8];
}

/* One action of the control plane, on the tunnel's thread. */
static void act(struct rpc_cq *q)
{
	unsigned op = fz_u8(&in) % 6;
	struct rpc_stream *s = fake_rpc_stream(q);
	const uint8_t *p;
	size_t len;

	switch (op) {
	case 0:
	case 1: {
		int st = status_of(fz_u8(&in));

		p = fz_piece(&in, &len);
		fake_rpc_answer(q, st, p, len);
		break;
	}
	case 2:
		p = fz_piece(&in, &len);
		if (s)
			fake_rpc_deliver(s, p, len);
		break;
	case 3: {
		int st = status_of(fz_u8(&in));

		if (s)
			fake_rpc_end(s, st, "fuzz");
		break;
	}
	case 4: {
		unsigned i = fz_u8(&in) % 5;
		struct tunnel_completion c = { .run_id = run_ids[i], .epoch = 3,
					       .status = TUNNEL_SUCCEEDED, .detail = "exit 0",
					       .output_json = "{}", .duration_ms = 5 };
		struct lerr e;

		if (tunnel_complete(tun, &c, &e) == 0)
			completed[i] = true;
		break;
	}
	case 5:
		tunnel_report(tun, run_ids[fz_u8(&in) % 5], 3, 1 + fz_u8(&in) % 6, "running");
		break;
	}
}

static void poll_hook(struct rpc_cq *q, int ms)
{
	pthread_mutex_lock(&mu);
	/* the thread polls before tunnel_start has returned the tunnel */
	while (!started)
		pthread_cond_wait(&cv, &mu);
	if (!spent && in.n) {
		pthread_mutex_unlock(&mu);
		act(q);
		return;
	}
	spent = true;
	pthread_cond_broadcast(&cv);
	while (!released)
		pthread_cond_wait(&cv, &mu);
	pthread_mutex_unlock(&mu);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	int fd;

	work = fz_workdir("tunnel");
	snprintf(state_dir, sizeof(state_dir), "%s/state", work);
	snprintf(token_file, sizeof(token_file), "%s/token", work);
	snprintf(canary, sizeof(canary), "%s/canary", work);
	FZ_CHECK(mkdir(state_dir, 0700) == 0, "mkdir %s: %s", state_dir, strerror(errno));
	fd = open(token_file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	FZ_CHECK(fd >= 0 && write(fd, "bootstrap-token\n", 16) == 16, "%s", token_file);
	close(fd);
	fd = open(canary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	close(fd);
	fake_rpc_poll = poll_hook;
	fake_rpc_sent = on_sent;
	fake_rpc_request = on_request;
	return 0;
}

static void check_events(struct tunnel_ev *ev)
{
	while (ev) {
		struct tunnel_ev *next = ev->next;

		FZ_CHECK(memchr(ev->run_id, 0, sizeof(ev->run_id)), "an event's run id is not terminated");
		if (ev->type == TUNNEL_ASSIGN)
			FZ_CHECK(ev->config_json && ev->input_json && ev->idem, "an assignment without its strings");
		if (ev->type == TUNNEL_FORGET) {
			size_t i = 0;

			while (i < 5 && strcmp(run_ids[i], ev->run_id))
				i++;
			FZ_CHECK(i < 5 && completed[i], "run \"%s\" forgotten, but the node never completed it",
				 ev->run_id);
		}
		tunnel_ev_free(ev);
		ev = next;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const classes[] = { "trusted", "standard" };
	struct tunnel_opts o = { .target = "cp.invalid:443", .tenant = "tenant-a",
				 .token_file = token_file, .tls = { .insecure = true },
				 .state_dir = state_dir, .agent_version = "fuzz",
				 .classes = classes, .n_classes = 2, .max_runs = 4 };
	struct lerr e = { 0 };
	struct timespec until;
	int efd, err;

	fz_empty(state_dir);
	in = (struct fz){ data, size };
	started = spent = released = false;
	hello_seen_on = NULL;
	memset(completed, 0, sizeof(completed));
	err = tunnel_start(&o, &tun, &efd, &e);
	FZ_CHECK(err == 0, "tunnel_start: %s", e.msg);

	pthread_mutex_lock(&mu);
	started = true;
	pthread_cond_broadcast(&cv);
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 5;
	while (!spent && pthread_cond_timedwait(&cv, &mu, &until) == 0)
		;
	FZ_CHECK(spent, "the tunnel's thread stopped polling for 5 s");
	pthread_mutex_unlock(&mu);
	check_events(tunnel_take(tun));

	pthread_mutex_lock(&mu);
	released = true;
	pthread_cond_broadcast(&cv);
	pthread_mutex_unlock(&mu);
	tunnel_stop(tun);
	tun = NULL;
	FZ_CHECK(access(canary, F_OK) == 0, "%s, outside the tunnel's state, was removed", canary);
	return 0;
}
