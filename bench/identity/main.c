/* bench/identity: what identity costs a spawn, what a receipt costs a run's end, and
 * how many signed secret requests lanternd answers per second on one core.
 *
 *  - admission: the work identity_issue does for each instance, in process, timed per
 *    spawn: a fresh Ed25519 key pair, the token's claims as RFC 8785 JSON signed
 *    (EdDSA) by the node key, the key as PKCS#8 PEM and JWK, and the tmpfs: mounted,
 *    three files written, remounted read-only (its unmount at teardown timed apart).
 *    Peer: the key pair alone, the floor of any per-instance key.
 *  - receipt: a receipt of the size lanternd makes (cost components included) as
 *    RFC 8785 JSON, hashed into the payload and signed. Peer: the same object dumped by
 *    jansson (sorted, compact: not canonical) and signed.
 *  - secrets: lanternd (pinned to CPU 0) runs a workload of this program (pinned to
 *    CPU 1) that keeps C connections busy with POST /v1/secrets/KEY, each signed with
 *    the instance key (fresh timestamp and nonce), for D seconds; requests/s answered
 *    200. Peer in the same run: GET /v1/run on the same socket, unsigned (the harness
 *    API without the signature check and the lease).
 *
 *   build/bench/identity [-n SAMPLES] [-d SECONDS] [-c CONNECTIONS]   (1000, 5, 4) */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <sodium.h>

#include "lantern/jose.h"
#include "lantern/util.h"

static int n_samples = 1000, seconds = 5, conns = 4;

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
	char cmd[4096];
	va_list ap;
	int st;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	st = system(cmd);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static uint64_t ns(void)
{
	return util_now_ns(CLOCK_MONOTONIC);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static double pct(uint64_t *v, int n, double p)
{
	qsort(v, (size_t)n, sizeof(*v), cmp_u64);
	return v[(int)(p * (n - 1))] / 1e3;
}

static void pin(int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	sched_setaffinity(0, sizeof(set), &set);
}

/* ---- in process: admission and receipts ---- */

static uint8_t node_pk[32], node_sk[64];
static char node_kid[JOSE_KID_LEN + 1];

static void write_file(const char *dir, const char *name, const char *text)
{
	char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	if ((f = fopen(path, "we"))) {
		fputs(text, f);
		fclose(f);
	}
}

/* One instance's identity, as identity_issue makes it; returns ns spent, *fs_ns the
 * part spent on the tmpfs, *umount_ns the teardown's unmount. */
static uint64_t one_identity(const char *dir, uint64_t *fs_ns, uint64_t *umount_ns)
{
	uint8_t pk[32], sk[64];
	char kid[JOSE_KID_LEN + 1], jti[33], *payload, *tok, *pem, *jwk;
	uint64_t t0 = ns(), t1;
	json_t *c, *k;

	crypto_sign_keypair(pk, sk);
	jose_kid(pk, kid);
	util_random_hex(jti, 16);
	c = json_pack("{s:s, s:s, s:I, s:I, s:s, s:s, s:s, s:s, s:s, s:{s:o}}", "iss", "lantern-agent", "sub",
		      "i-0123456789ab", "iat", (json_int_t)time(NULL), "exp", (json_int_t)time(NULL) + 3600, "jti",
		      jti, "typ", "agent-instance", "tenant_id", "default", "run_id", "r-0123456789ab",
		      "agent_version_id", "bench", "cnf", "jwk", jose_jwk(pk));
	payload = jose_jcs(c);
	tok = jose_sign(node_sk, node_kid, "JWT", payload, strlen(payload));
	pem = jose_pem_private(sk);
	k = jose_jwk(pk);
	json_object_set_new(k, "kid", json_string(kid));
	jwk = jose_jcs(k);
	*fs_ns = ns();
	mkdir(dir, 0700);
	mount("bench-identity", dir, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=64k,nr_inodes=16,mode=0755");
	write_file(dir, "key", pem);
	write_file(dir, "public.jwk", jwk);
	write_file(dir, "token", tok);
	mount(NULL, dir, NULL, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
	t1 = ns();
	*fs_ns = t1 - *fs_ns;
	umount2(dir, MNT_DETACH);
	rmdir(dir);
	*umount_ns = ns() - t1;
	sodium_memzero(sk, sizeof(sk));
	free(payload);
	free(tok);
	free(pem);
	free(jwk);
	json_decref(c);
	json_decref(k);
	return t1 - t0;
}

static json_t *receipt_object(void)
{
	char head[65];

	util_random_hex(head, 32);
	return json_pack("{s:s, s:i, s:s, s:s, s:s, s:o, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:i, s:I, s:I, "
			 "s:{s:s, s:I}, s:{s:{s:f, s:f, s:f, s:f, s:f}, s:f}, s:f, s:I, s:{s:s, s:s, s:s}, s:I}",
			 "typ", "lantern-receipt", "v", 1, "run_id", "r-0123456789ab", "tenant_id", "default",
			 "agent_instance_id", "i-0123456789ab", "instance_public_key", jose_jwk(node_pk),
			 "image_digest", "ghcr.io/acme/agent@sha256:0123", "isolation", "standard", "runtime", "oci",
			 "handler", "runsc", "egress_policy_sha256", head, "status", "succeeded", "reason", "",
			 "exit_code", 0, "started_at", (json_int_t)1796040817, "ended_at", (json_int_t)1796040917,
			 "journal", "head_sha256", head, "records", (json_int_t)412, "cost", "components",
			 "cpu_usd", 3.1458582222222222e-7, "memory_usd", 1.2e-9, "egress_usd", 0.0, "tokens_usd",
			 0.0421, "wall_usd", 0.0, "total_usd", 0.04210031458, "cost_usd", 0.0421, "tokens",
			 (json_int_t)12034, "node", "kid", node_kid, "hostname", "node-1", "region", "eu-west-1",
			 "issued_at", (json_int_t)1796040917);
}

static void bench_in_process(void)
{
	uint64_t *id = calloc((size_t)n_samples, sizeof(uint64_t)), *um = calloc((size_t)n_samples, sizeof(uint64_t));
	uint64_t *kp = calloc((size_t)n_samples, sizeof(uint64_t)), *rc = calloc((size_t)n_samples, sizeof(uint64_t));
	uint64_t *rj = calloc((size_t)n_samples, sizeof(uint64_t)), *fs = calloc((size_t)n_samples, sizeof(uint64_t));
	char dir[128];

	crypto_sign_keypair(node_pk, node_sk);
	jose_kid(node_pk, node_kid);
	snprintf(dir, sizeof(dir), "/tmp/lantern-bench-identity-%d", (int)getpid());
	for (int i = 0; i < n_samples; i++) {
		uint8_t pk[32], sk[64];
		uint64_t t0 = ns();
		json_t *r;
		char *s, *jws;

		crypto_sign_keypair(pk, sk);
		kp[i] = ns() - t0;
		id[i] = one_identity(dir, &fs[i], &um[i]);
		r = receipt_object();
		t0 = ns();
		s = jose_jcs(r);
		jws = jose_sign(node_sk, node_kid, "lantern-receipt+jws", s, strlen(s));
		rc[i] = ns() - t0;
		free(s);
		free(jws);
		t0 = ns();
		s = json_dumps(r, JSON_COMPACT | JSON_SORT_KEYS);
		jws = jose_sign(node_sk, node_kid, "lantern-receipt+jws", s, strlen(s));
		rj[i] = ns() - t0;
		free(s);
		free(jws);
		json_decref(r);
	}
	printf("\n%-52s %10s %10s\n", "per spawn / per run, one thread (µs)", "p50", "p99");
	printf("%-52s %10.1f %10.1f\n", "identity admission: key, token, PEM, tmpfs (ro)", pct(id, n_samples, 0.5),
	       pct(id, n_samples, 0.99));
	printf("%-52s %10.1f %10.1f\n", "  of which the tmpfs: mount, 3 files, read-only", pct(fs, n_samples, 0.5),
	       pct(fs, n_samples, 0.99));
	printf("%-52s %10.1f %10.1f\n", "  peer: the Ed25519 key pair alone", pct(kp, n_samples, 0.5),
	       pct(kp, n_samples, 0.99));
	printf("%-52s %10.1f %10.1f\n", "identity teardown: tmpfs unmounted", pct(um, n_samples, 0.5),
	       pct(um, n_samples, 0.99));
	printf("%-52s %10.1f %10.1f\n", "receipt: RFC 8785 JSON + EdDSA JWS", pct(rc, n_samples, 0.5),
	       pct(rc, n_samples, 0.99));
	printf("%-52s %10.1f %10.1f\n", "  peer: jansson sorted dump + EdDSA JWS", pct(rj, n_samples, 0.5),
	       pct(rj, n_samples, 0.99));
	free(id);
	free(um);
	free(kp);
	free(rc);
	free(rj);
	free(fs);
}

/* ---- the workload: signed requests in a closed loop ---- */

struct client {
	const char *sock;
	const uint8_t *sk;
	bool signed_req;
	uint64_t ok, other;
	uint64_t until;
};

static int conn_open(const char *sock)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	snprintf(a.sun_path, sizeof(a.sun_path), "%s", sock);
	if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Reads one reply (headers + Content-Length body); its status, or -1. */
static int read_reply(int fd, char *buf, size_t cap)
{
	size_t len = 0;
	char *hend, *cl;

	for (;;) {
		ssize_t n = read(fd, buf + len, cap - len - 1);

		if (n <= 0)
			return -1;
		len += (size_t)n;
		buf[len] = '\0';
		if ((hend = strstr(buf, "\r\n\r\n")) && (cl = strcasestr(buf, "Content-Length:")) &&
		    len >= (size_t)(hend + 4 - buf) + strtoul(cl + 15, NULL, 10))
			return atoi(buf + 9);
	}
}

static void *client_main(void *arg)
{
	struct client *c = arg;
	static const char empty_hex[] = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
	char req[1024], msg[512], nonce[33], buf[8192];
	uint8_t sig[64];
	int fd = conn_open(c->sock);

	while (fd >= 0 && ns() < c->until) {
		int n, st;

		if (c->signed_req) {
			long long ts = (long long)time(NULL);
			char *b64;

			util_random_hex(nonce, 16);
			snprintf(msg, sizeof(msg), "lantern-secrets-v1\nPOST\n/v1/secrets/KEY\n%s\n%lld\n%s", empty_hex,
				 ts, nonce);
			crypto_sign_detached(sig, NULL, (const uint8_t *)msg, strlen(msg), c->sk);
			b64 = jose_b64url(sig, sizeof(sig));
			n = snprintf(req, sizeof(req), "POST /v1/secrets/KEY HTTP/1.1\r\nHost: l\r\nContent-Length: 0\r\n"
				     "X-Lantern-Timestamp: %lld\r\nX-Lantern-Nonce: %s\r\nX-Lantern-Signature: %s\r\n\r\n",
				     ts, nonce, b64);
			free(b64);
		} else {
			n = snprintf(req, sizeof(req), "GET /v1/run HTTP/1.1\r\nHost: l\r\n\r\n");
		}
		if (write(fd, req, (size_t)n) != n || (st = read_reply(fd, buf, sizeof(buf))) < 0)
			break;
		if (st == 200)
			c->ok++;
		else
			c->other++;
	}
	if (fd >= 0)
		close(fd);
	return NULL;
}

static double rate(const char *sock, const uint8_t *sk, bool signed_req, uint64_t *other)
{
	struct client cs[64];
	pthread_t th[64];
	uint64_t ok = 0, t0 = ns();

	*other = 0;
	for (int i = 0; i < conns; i++) {
		cs[i] = (struct client){ .sock = sock, .sk = sk, .signed_req = signed_req,
					 .until = t0 + (uint64_t)seconds * 1000000000ull };
		pthread_create(&th[i], NULL, client_main, &cs[i]);
	}
	for (int i = 0; i < conns; i++) {
		pthread_join(th[i], NULL);
		ok += cs[i].ok;
		*other += cs[i].other;
	}
	return ok / ((ns() - t0) / 1e9);
}

static int client_mode(void)
{
	const char *sock = getenv("LANTERN_HARNESS_SOCKET"), *dir = getenv("LANTERN_IDENTITY_DIR");
	uint8_t sk[64], pk[32];
	char path[512], *pem = NULL;
	uint64_t bad_signed, bad_plain;
	double s, u;

	pin(1);
	snprintf(path, sizeof(path), "%s/key", dir ? dir : "");
	if (!sock || util_read_file(path, &pem, NULL) < 0 || jose_pem_read_private(pem, sk, pk) < 0) {
		fprintf(stderr, "bench client: no harness socket or instance key\n");
		return 1;
	}
	free(pem);
	u = rate(sock, sk, false, &bad_plain);
	s = rate(sock, sk, true, &bad_signed);
	printf("rps_signed %.0f refused %llu rps_unsigned %.0f refused %llu\n", s, (unsigned long long)bad_signed, u,
	       (unsigned long long)bad_plain);
	return 0;
}

/* ---- lanternd ---- */

static int bench_secrets(const char *self)
{
	char dir[128], cmd[4096], *out = NULL;
	double s = 0, u = 0;
	unsigned long long bs = 0, bu = 0;
	char build[400];
	pid_t pid;
	FILE *f;

	snprintf(build, sizeof(build), "%s", self);
	*strrchr(build, '/') = '\0';
	*strrchr(build, '/') = '\0';
	snprintf(dir, sizeof(dir), "/tmp/lantern-bench-identity-d%d", (int)getpid());
	sh("mkdir -p %s/secrets && chmod 700 %s/secrets && printf sk-bench-0123456789 > %s/secrets/key", dir, dir, dir);
	snprintf(cmd, sizeof(cmd), "exec %s/lanternd --state-dir %s/state --socket %s/sock --bpffs /sys/fs/bpf/lbi%d "
		 "--cgroup-root lbi%d --process-runtime --secrets-dir %s/secrets --identity-dir %s/ids "
		 ">%s/lanternd.log 2>&1", build, dir, dir, (int)getpid(), (int)getpid(), dir, dir, dir);
	if ((pid = fork()) == 0) {
		pin(0);
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 500; i++) {
		char sp[200];

		snprintf(sp, sizeof(sp), "%s/sock", dir);
		if (util_unix_socket_alive(sp))
			break;
		usleep(10000);
	}
	snprintf(cmd, sizeof(cmd), "%s/spec.yaml", dir);
	if ((f = fopen(cmd, "w"))) {
		fprintf(f, "apiVersion: lantern.dev/v1\nkind: AgentSpec\nmetadata: {name: bench-secrets}\nspec:\n"
			"  image_digest: host\n  isolation: trusted\n  network: none\n  secrets:\n"
			"    - {env_name: KEY, secret_uri: \"file://%s/secrets/key\"}\n"
			"  command: [\"%s\", \"--client\", \"-d\", \"%d\", \"-c\", \"%d\"]\n", dir, self, seconds, conns);
		fclose(f);
	}
	snprintf(cmd, sizeof(cmd), "%s/lantern --socket %s/sock run %s/spec.yaml 2>&1", build, dir, dir);
	if ((f = popen(cmd, "r"))) {
		char line[512];

		while (fgets(line, sizeof(line), f))
			if (sscanf(line, "rps_signed %lf refused %llu rps_unsigned %lf refused %llu", &s, &bs, &u, &bu) == 4)
				out = strdup(line);
		pclose(f);
	}
	kill(pid, SIGTERM);
	waitpid(pid, NULL, 0);
	sh("%s/lantern reset --state-dir %s/state --bpffs /sys/fs/bpf/lbi%d --cgroup-root lbi%d >/dev/null 2>&1; rm -rf %s",
	   build, dir, (int)getpid(), (int)getpid(), dir);
	if (!out) {
		fprintf(stderr, "bench identity: the secrets workload reported nothing\n");
		return 1;
	}
	printf("\n%-52s %12s %10s\n", "harness API, lanternd on one core, " , "requests/s", "refused");
	printf("%-52s %12.0f %10llu\n", "POST /v1/secrets/KEY, signed (Ed25519), leased", s, bs);
	printf("%-52s %12.0f %10llu\n", "  peer: GET /v1/run, unsigned", u, bu);
	printf("(%d connections for %d s each, client on CPU 1)\n", conns, seconds);
	free(out);
	return 0;
}

int main(int argc, char **argv)
{
	bool client = false;
	char self[512];
	int opt;

	while ((opt = getopt(argc, argv, "n:d:c:-:")) != -1) {
		switch (opt) {
		case 'n': n_samples = atoi(optarg); break;
		case 'd': seconds = atoi(optarg); break;
		case 'c': conns = atoi(optarg) > 64 ? 64 : atoi(optarg); break;
		case '-': client = !strcmp(optarg, "client"); break;
		default:
			fprintf(stderr, "usage: %s [-n SAMPLES] [-d SECONDS] [-c CONNECTIONS]\n", argv[0]);
			return 2;
		}
	}
	if (sodium_init() < 0)
		return 1;
	if (client)
		return client_mode();
	if (readlink("/proc/self/exe", self, sizeof(self) - 1) < 0)
		return 1;
	self[sizeof(self) - 1] = '\0';
	self[readlink("/proc/self/exe", self, sizeof(self) - 1)] = '\0';
	printf("bench/identity: %d samples; secrets %d s x %d connections\n", n_samples, seconds, conns);
	bench_in_process();
	return bench_secrets(self);
}
