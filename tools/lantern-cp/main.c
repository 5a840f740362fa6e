/* main.c: lantern-cp, a control plane for Lantern nodes: flags, the database (migrated at
 * start), the signing key, the DataPlaneService gRPC server on the main thread (it polls
 * the completion queue and does the periodic work between completions, below), the
 * operator HTTP API on libmicrohttpd's thread, and on PostgreSQL the listener thread for
 * other replicas' wake-ups.
 *
 * Each tick (20 ms at most): the leader lease every third of its TTL; as leader, the
 * watchdog every 100 ms, planes' liveness every second, placement when something woke
 * it (and every second); then the deliveries woken for this replica's planes, and every
 * second the pings and a delivery round for all of them. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cp.h"

static struct cp *the_cp;

static void usage(FILE *f)
{
	fprintf(f,
		"usage: lantern-cp --operator-token-file FILE [flags]\n"
		"  --listen ADDR              DataPlaneService (gRPC) address (default [::]:50051)\n"
		"  --tls-cert FILE            certificate chain (PEM) for the gRPC listener\n"
		"  --tls-key FILE             its private key (PEM)\n"
		"  --insecure                 serve gRPC in plaintext (tests, or TLS done elsewhere)\n"
		"  --http ADDR                operator API (default 127.0.0.1:8080)\n"
		"  --operator-token-file F    the operator API's bearer token\n"
		"  --database URL             SQLite file (default /var/lib/lantern-cp/cp.db) or\n"
		"                             postgres://user@host/db\n"
		"  --heartbeat-interval SEC   told to planes at Register (default 30)\n"
		"  --metrics-interval SEC     told to planes at Register (default 60)\n"
		"  --session-ttl SEC          session token lifetime (default 3600)\n"
		"  --down-after N             missed heartbeats before a plane is down (default 3)\n"
		"  --ping-interval SEC        DpPing on each RunStream (default 15)\n"
		"  --max-message BYTES        largest gRPC message accepted (default 4194304)\n"
		"  --lease-ttl-ms MS          run lease TTL: a node that does not renew for this long\n"
		"                             loses its runs to the watchdog (default 30000)\n"
		"  --leader-ttl-ms MS         leader lease TTL among replicas (default 10000)\n"
		"  --replica-id ID            this replica's name (default host/pid/random)\n"
		"environment: LANTERN_DP_MAX_STREAMS_PER_TENANT (default 10)\n");
}

static int posint(const char *flag, const char *v, int *out)
{
	char *end;
	long n = strtol(v, &end, 10);

	if (*end || n <= 0 || n > 1000000000) {
		fprintf(stderr, "lantern-cp: %s: \"%s\" is not a positive integer\n", flag, v);
		return -1;
	}
	*out = (int)n;
	return 0;
}

static int parse_flags(int argc, char **argv, struct cp_opts *o)
{
	static const struct option opts[] = {
		{ "listen", required_argument, NULL, 'l' },
		{ "tls-cert", required_argument, NULL, 'c' },
		{ "tls-key", required_argument, NULL, 'k' },
		{ "insecure", no_argument, NULL, 'I' },
		{ "http", required_argument, NULL, 'H' },
		{ "operator-token-file", required_argument, NULL, 'o' },
		{ "database", required_argument, NULL, 'd' },
		{ "heartbeat-interval", required_argument, NULL, 'b' },
		{ "metrics-interval", required_argument, NULL, 'm' },
		{ "session-ttl", required_argument, NULL, 't' },
		{ "down-after", required_argument, NULL, 'D' },
		{ "ping-interval", required_argument, NULL, 'p' },
		{ "max-message", required_argument, NULL, 'M' },
		{ "lease-ttl-ms", required_argument, NULL, 'L' },
		{ "leader-ttl-ms", required_argument, NULL, 'E' },
		{ "replica-id", required_argument, NULL, 'R' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	int c, n;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'l': o->listen = optarg; break;
		case 'c': o->tls.cert_file = optarg; break;
		case 'k': o->tls.key_file = optarg; break;
		case 'I': o->tls.insecure = true; break;
		case 'H': o->http = optarg; break;
		case 'o': o->operator_token_file = optarg; break;
		case 'd': o->database = optarg; break;
		case 'b': if (posint("--heartbeat-interval", optarg, &o->heartbeat_s)) return -1; break;
		case 'm': if (posint("--metrics-interval", optarg, &o->metrics_s)) return -1; break;
		case 't': if (posint("--session-ttl", optarg, &o->session_ttl_s)) return -1; break;
		case 'D': if (posint("--down-after", optarg, &o->down_after)) return -1; break;
		case 'p': if (posint("--ping-interval", optarg, &o->ping_s)) return -1; break;
		case 'M': if (posint("--max-message", optarg, &n)) return -1; o->max_message = (size_t)n; break;
		case 'L': if (posint("--lease-ttl-ms", optarg, &o->lease_ttl_ms)) return -1; break;
		case 'E': if (posint("--leader-ttl-ms", optarg, &o->leader_ttl_ms)) return -1; break;
		case 'R': o->replica_id = optarg; break;
		case 'h': usage(stdout); exit(0);
		default: usage(stderr); return -1;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "lantern-cp: unexpected argument \"%s\"\n", argv[optind]);
		return -1;
	}
	if (!o->operator_token_file) {
		fprintf(stderr, "lantern-cp: --operator-token-file is required\n");
		return -1;
	}
	if (o->lease_ttl_ms < 300 || o->leader_ttl_ms < 300) {
		fprintf(stderr, "lantern-cp: --lease-ttl-ms and --leader-ttl-ms must be at least 300\n");
		return -1;
	}
	if (o->replica_id && (!*o->replica_id || strlen(o->replica_id) >= 64)) {
		fprintf(stderr, "lantern-cp: --replica-id must be 1 to 63 characters\n");
		return -1;
	}
	if (!o->tls.insecure && (!o->tls.cert_file || !o->tls.key_file)) {
		fprintf(stderr, "lantern-cp: TLS needs --tls-cert and --tls-key; plaintext only with --insecure\n");
		return -1;
	}
	return 0;
}

/* One round of the periodic work (cp->mu held); the order is the file comment's. */
static void tick(struct cp *cp, int64_t now, int64_t *last_leader, int64_t *last_place,
		 int64_t *last_watchdog, int64_t *last_second)
{
	bool place;

	if (now - *last_leader >= cp->o.leader_ttl_ms / 3) {
		leader_tick(cp);
		*last_leader = now;
	}
	if (cp->leader) {
		if (now - *last_watchdog >= 100) {
			sched_watchdog(cp);
			*last_watchdog = now;
		}
		if (now - *last_second >= 1000)
			sched_liveness(cp);
	}
	/* what the watchdog and liveness queued is placed in the same round, and what
	 * placement placed is delivered in it too */
	place = wake_take_sched(cp);
	if (cp->leader && (place || now - *last_place >= 1000)) {
		sched_place(cp);
		*last_place = now;
	}
	service_deliver_woken(cp);
	if (now - *last_second >= 1000) {
		service_tick(cp);
		*last_second = now;
	}
}

static void on_signal(int sig)
{
	if (the_cp)
		the_cp->stop = 1;
}

int main(int argc, char **argv)
{
	static struct cp cp = {
		.o = {
			.listen = "[::]:50051",
			.http = "127.0.0.1:8080",
			.database = "/var/lib/lantern-cp/cp.db",
			.heartbeat_s = 30,
			.metrics_s = 60,
			.session_ttl_s = 3600,
			.down_after = 3,
			.ping_s = 15,
			.max_message = 4u << 20,
			.max_streams_per_tenant = 10,
			.lease_ttl_ms = 30000,
			.leader_ttl_ms = 10000,
		},
	};
	int64_t last_leader = 0, last_place = 0, last_watchdog = 0, last_second = 0;
	struct lerr e = { 0 };
	const char *env = getenv("LANTERN_DP_MAX_STREAMS_PER_TENANT");
	char *tok = NULL;
	size_t len;
	int err;

	log_set_prog("lantern-cp");
	signal(SIGPIPE, SIG_IGN);
	if (parse_flags(argc, argv, &cp.o) < 0)
		return 2;
	if (env && *env && posint("LANTERN_DP_MAX_STREAMS_PER_TENANT", env, &cp.o.max_streams_per_tenant) < 0)
		return 2;
	if (sodium_init() < 0) {
		log_error("libsodium: cannot initialise");
		return 1;
	}
	if ((err = util_read_file(cp.o.operator_token_file, &tok, &len)) < 0) {
		log_error("operator token %s: %s", cp.o.operator_token_file, strerror(-err));
		return 1;
	}
	while (len && (tok[len - 1] == '\n' || tok[len - 1] == '\r' || tok[len - 1] == ' '))
		tok[--len] = '\0';
	if (len < 16 || len >= sizeof(cp.operator_token)) {
		log_error("operator token %s: must be 16 to %zu characters", cp.o.operator_token_file,
			  sizeof(cp.operator_token) - 1);
		return 1;
	}
	memcpy(cp.operator_token, tok, len + 1);
	sodium_memzero(tok, len);
	free(tok);
	pthread_mutex_init(&cp.mu, NULL);

	if (cp.o.replica_id) {
		snprintf(cp.replica, sizeof(cp.replica), "%s", cp.o.replica_id);
	} else {
		char host[32] = "", rnd[9];

		gethostname(host, sizeof(host) - 1);
		util_random_hex(rnd, 4);
		snprintf(cp.replica, sizeof(cp.replica), "%s/%d/%s", host, (int)getpid(), rnd);
	}
	if (db_open(cp.o.database, &cp.db, &e) < 0 || db_migrate(cp.db, &e) < 0 ||
	    token_keys_load(&cp, &e) < 0 || wake_start(&cp, &e) < 0) {
		log_error("%s", e.msg);
		return 1;
	}
	cp.q = rpc_cq_new();
	if (!cp.q || rpc_server_open(cp.o.listen, &cp.o.tls, cp.o.max_message, cp_methods,
				     cp_n_methods, &cp, cp.q, &cp.srv, &e) < 0) {
		log_error("%s", e.msg);
		return 1;
	}
	if (http_start(&cp, &e) < 0) {
		log_error("%s", e.msg);
		return 1;
	}
	the_cp = &cp;
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);
	log_info("ready: replica %s, gRPC %s (%s), operator API http://%s, database %s, heartbeat %ds, "
		 "session ttl %ds, lease ttl %d ms, leader ttl %d ms, %d RunStreams per tenant", cp.replica,
		 cp.o.listen, cp.o.tls.insecure ? "plaintext" : "TLS", cp.o.http, db_kind(cp.db),
		 cp.o.heartbeat_s, cp.o.session_ttl_s, cp.o.lease_ttl_ms, cp.o.leader_ttl_ms,
		 cp.o.max_streams_per_tenant);

	while (!cp.stop) {
		int64_t now;

		rpc_cq_poll(cp.q, 20);
		now = cp_mono_ms();
		pthread_mutex_lock(&cp.mu);
		tick(&cp, now, &last_leader, &last_place, &last_watchdog, &last_second);
		pthread_mutex_unlock(&cp.mu);
	}
	log_info("stopping");
	http_stop();
	rpc_server_shutdown(cp.srv);
	pthread_mutex_lock(&cp.mu);
	leader_release(&cp);
	pthread_mutex_unlock(&cp.mu);
	rpc_cq_free(cp.q);
	wake_stop(&cp);
	db_close(cp.db);
	return 0;
}
