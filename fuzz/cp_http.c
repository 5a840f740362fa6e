/* cp_http.c (fuzz target "cp_http"): lantern-cp's operator API (tools/lantern-cp/http.c)
 * on the bytes of an HTTP connection: the real server (libmicrohttpd on its own thread,
 * started by http_start on a loopback port), this target as the client. Behind it: the
 * bearer token check, JSON bodies, agent.yaml specs submitted as runs (spec_parse), the
 * database-backed state (SQLite in memory) every request reads and writes.
 *
 * Input: the bytes of one connection (one or more requests). The operator token is
 * "fuzz-operator-token-0123" (seeds carry it). Every input starts from the same control
 * plane: one plane, dp-000000000000000a, and one queued run, run-0000000000000001 (ids
 * minted by the API are random: the fuzzer could not name them).
 *
 * Properties beyond the sanitizers:
 *  - the server answers and closes after the client's shutdown (libFuzzer's -timeout
 *    reports one that does not);
 *  - a connection that never presents the operator token changes nothing: no plane or
 *    run appears, and no column of a plane's or a run's row changes. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cp.h"
#include "fuzzlib.h"

#define TOKEN "fuzz-operator-token-0123"
#define PLANE "dp-000000000000000a"
#define RUN "run-0000000000000001"

static struct cp *cp;
static struct sockaddr_in addr = { .sin_family = AF_INET };
static char http_addr[64];

static void reset(void)
{
	char hash[65], **planes;
	const char *p[] = { PLANE, "tenant-a", hash };
	struct cprun r = { .created_us = 1 };
	struct lerr e = { 0 };
	size_t n;

	snprintf(r.id, sizeof(r.id), "%s", RUN);
	snprintf(r.tenant, sizeof(r.tenant), "tenant-a");
	snprintf(r.isolation, sizeof(r.isolation), "trusted");
	r.config_json = "{}";
	r.input_json = "";
	token_hash("bootstrap-token", hash);
	pthread_mutex_lock(&cp->mu);
	FZ_CHECK(db_exec(cp->db, "DELETE FROM data_planes", 0, NULL, &e) >= 0 &&
		 db_exec(cp->db, "DELETE FROM runs", 0, NULL, &e) >= 0 &&
		 db_exec(cp->db, "INSERT INTO data_planes (id, tenant_id, name, token_hash, created_at) "
			 "VALUES ($1, $2, 'fuzz', $3, 1)", 3, p, &e) == 1 &&
		 state_run_insert(cp, &r, &e) == 1, "control plane: %s", e.msg);
	pthread_mutex_unlock(&cp->mu);
	/* what the API woke (no main loop here takes it) */
	wake_take_sched(cp);
	wake_take_planes(cp, &planes, &n);
	for (size_t i = 0; i < n; i++)
		free(planes[i]);
	free(planes);
}

static void hash_row(void *arg, int ncol, char **v)
{
	uint64_t *h = arg;

	for (int i = 0; i < ncol; i++) {
		for (const char *c = v[i] ? v[i] : ""; *c; c++)
			*h = (*h ^ (uint8_t)*c) * 1099511628211ull;
		/* a separator, and NULL apart from "" */
		*h = (*h ^ (v[i] ? 0x100u : 0x200u)) * 1099511628211ull;
	}
}

/* A digest of everything an operator request can change: every column of every plane
 * and run. */
static uint64_t state_hash(void)
{
	uint64_t h = 1469598103934665603ull;
	struct lerr e = { 0 };

	pthread_mutex_lock(&cp->mu);
	FZ_CHECK(db_query(cp->db, "SELECT * FROM data_planes ORDER BY id", 0, NULL, hash_row, &h, &e) >= 0 &&
		 db_query(cp->db, "SELECT * FROM runs ORDER BY id", 0, NULL, hash_row, &h, &e) >= 0,
		 "control plane: %s", e.msg);
	pthread_mutex_unlock(&cp->mu);
	return h;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct lerr e = { 0 };
	int err = -1;

	cp = calloc(1, sizeof(*cp));
	cp->o = (struct cp_opts){ .heartbeat_s = 30, .metrics_s = 60, .session_ttl_s = 3600,
				  .down_after = 3, .ping_s = 15, .max_streams_per_tenant = 2,
				  .lease_ttl_ms = 30000, .leader_ttl_ms = 10000, .database = ":memory:" };
	snprintf(cp->operator_token, sizeof(cp->operator_token), "%s", TOKEN);
	snprintf(cp->replica, sizeof(cp->replica), "fuzz-replica");
	pthread_mutex_init(&cp->mu, NULL);
	FZ_CHECK(db_open(cp->o.database, &cp->db, &e) == 0 && db_migrate(cp->db, &e) == 0 &&
		 token_keys_load(cp, &e) == 0 && wake_start(cp, &e) == 0, "control plane: %s", e.msg);
	/* a loopback port of our own: a few tries from one derived from the pid */
	for (int i = 0; i < 50 && err < 0; i++) {
		unsigned port = 20000 + ((unsigned)getpid() * 7 + (unsigned)i * 131) % 30000;

		snprintf(http_addr, sizeof(http_addr), "127.0.0.1:%u", port);
		cp->o.http = http_addr;
		addr.sin_port = htons((uint16_t)port);
		err = http_start(cp, &e);
	}
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	FZ_CHECK(err == 0, "operator API: %s", e.msg);
	reset();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *req = (const char *)data;
	size_t len = size, off = 0;
	char buf[65536];
	bool authed = memmem(req, len, "Bearer " TOKEN, 7 + strlen(TOKEN)) != NULL;
	uint64_t before = state_hash();
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct pollfd pfd = { .fd = fd, .events = POLLIN };

	FZ_CHECK(fd >= 0 && connect(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0, "connect: %s",
		 strerror(errno));
	while (off < len) {
		ssize_t w = send(fd, req + off, len - off, MSG_NOSIGNAL);

		if (w <= 0)
			break; /* the server closed early: it has said all it will */
		off += (size_t)w;
	}
	shutdown(fd, SHUT_WR);
	/* a server that never answers is libFuzzer's -timeout to report */
	for (;;) {
		int n = poll(&pfd, 1, -1);

		if (n < 0 || recv(fd, buf, sizeof(buf), 0) <= 0)
			break;
	}
	close(fd);
	if (!authed)
		FZ_CHECK(state_hash() == before, "a connection without the operator token changed "
			 "planes or runs");
	reset();
	return 0;
}
