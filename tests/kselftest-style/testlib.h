/* testlib.h: what the test programs share: a private lanternd (own state dir, socket,
 * bpffs pin root and cgroup root, so two runs never collide), running the `lantern`
 * CLI, loopback listeners and the servers tests start (dnsmasq, acceptors), and the
 * cleanup that runs however a test ends. */
#ifndef LANTERN_TESTLIB_H
#define LANTERN_TESTLIB_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct tl_env {
	char name[64];
	char dir[256];      /* /tmp/lantern-test-NAME-PID: state, socket, logs, files */
	char state[300];
	char sock[300];
	char log[300];      /* lanternd's stderr */
	char bpffs[256];    /* /sys/fs/bpf/lantern-test-NAME-PID */
	char cgroot[128];   /* lantern-test-NAME-PID */
	char build[256];    /* $LANTERN_BUILD or ./build */
	pid_t daemon;
	bool no_process_runtime; /* start lanternd without --process-runtime */
};

/* Why this machine cannot run kernel tests, or NULL when it can (root, bpffs,
 * cgroup2, BTF). */
const char *tl_env_missing(void);
/* t must outlive main (a static): the end of the test cleans it up if the test did
 * not. */
int tl_env_init(struct tl_env *t, const char *name);
/* Starts build/lanternd with the env's flags, --process-runtime, and extra (a string
 * of more flags, may be NULL); waits until the socket accepts. */
int tl_daemon_start(struct tl_env *t, const char *extra);
/* Sends sig and waits for the daemon to exit. */
int tl_daemon_stop(struct tl_env *t, int sig);
/* Stops the daemon, runs `lantern reset` for the env, removes the directory. */
void tl_env_cleanup(struct tl_env *t);

/* Runs `build/lantern --socket SOCK ARGS` through sh -c; returns the exit status
 * (or 128+signal). out/err may be NULL; else malloc'd. */
int tl_lantern(struct tl_env *t, char **out, char **err, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* Runs a shell command; same conventions. */
int tl_sh(char **out, char **err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Writes a file under t->dir; returns its path (static buffer rotated over 8 calls). */
const char *tl_file(struct tl_env *t, const char *name, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* True if the daemon log contains s. */
bool tl_log_contains(struct tl_env *t, const char *s);

/* Loopback listeners; addr is an IPv4 or IPv6 literal; *port 0 picks one. */
int tl_tcp_listen(const char *addr, uint16_t *port);
int tl_udp_bind(const char *addr, uint16_t *port);

/* s contains sub (false for NULL s). */
bool tl_has(const char *s, const char *sub);
/* s on one line (newlines as '|'), for TAP messages; static buffers rotated over 4 calls. */
const char *tl_oneline(const char *s);
/* The id of the run named name that `lantern ps` shows running; waits up to ms. */
bool tl_running_run(struct tl_env *t, const char *name, char *id, size_t len, int ms);
/* True once the file at path contains text; waits up to ms. */
bool tl_wait_file_text(const char *path, const char *text, int ms);

/* Writes NAME.yaml under t->dir: an AgentSpec named name whose workload is
 * `/bin/sh -c SCRIPT`. meta: more lines of metadata (NULL: none); fields: the lines
 * of spec before the command, printf-style. Returns its path (as tl_file). */
const char *tl_spec(struct tl_env *t, const char *name, const char *meta, const char *script,
		    const char *fields, ...) __attribute__((format(printf, 5, 6)));
/* `lantern ARGS` parsed as JSON (a new reference), NULL when it failed. */
json_t *tl_lantern_json(struct tl_env *t, const char *args);
/* The run id's record from `lantern ps --json` (a new reference), or NULL. */
json_t *tl_run_record(struct tl_env *t, const char *id);
/* `lantern run FILE`; as tl_lantern. */
int tl_run(struct tl_env *t, const char *file, char **out, char **err);
/* The run lanternd created last (its directory's birth time, so a stopped daemon is
 * fine) and, if inst is not NULL, its instance id from run.json. */
bool tl_newest_run(struct tl_env *t, char *id, size_t idlen, char *inst, size_t instlen);
/* scripts/mkimage.sh DIR REF: an OCI layout of busybox; image gets the pinned
 * reference it prints ("" if none). Returns the script's exit status. */
int tl_mkimage(const char *dir, const char *ref, char *image, size_t len);

/* A bridge and a /24 of this test process's own, for spawns or CNI: bridge
 * PREFIX<pid>, subnet 10.A.B.0/24 with A = base + pid % 50 and B = pid / 50 % 250, so
 * tests with different bases running at once never share an address. */
struct tl_net {
	char bridge[16];
	char subnet[32];
	char gw[32];        /* 10.A.B.1: the bridge's address */
	unsigned a, b;
};
void tl_net_init(struct tl_net *n, const char *prefix, unsigned base);
/* 10.A.B.HOST, in buf. */
const char *tl_net_addr(const struct tl_net *n, unsigned host, char *buf, size_t len);

/* ---- children and the end of a test ----
 * When the test ends (returns from main, exits, or is killed by the runner's timeout,
 * ^C or a closed pipe), its tracked children get their stop signal and are waited
 * for, then the private lanternds still live are stopped and reset, then the
 * functions given to tl_on_exit run, last given first. Only the test's own process
 * does this, never a forked child. A signal the test was started with ignored stays
 * ignored (a background job's SIGINT, a test that sets SIGPIPE to SIG_IGN first). */
void tl_on_exit(void (*fn)(void));
/* Tracks pid (ignored if <= 0): stop_sig ends it when the test ends. */
void tl_child_track(pid_t pid, int stop_sig);
/* Sends pid sig (0: its stop signal, SIGKILL if untracked), waits for it and forgets
 * it; returns the wait status. */
int tl_child_stop(pid_t pid, int sig);
/* Forgets a tracked child the caller has waited for itself. */
void tl_child_forget(pid_t pid);

/* A tracked child that accepts connections on fd until stopped, sends reply (if not
 * NULL) and closes each, so a listener's backlog never fills and a connect always
 * meets a live peer. Dies with the test. */
pid_t tl_acceptor(int fd, const char *reply);
/* dnsmasq on 127.0.0.1 (a free port, in *port), authoritative for nothing but what
 * the NULL-terminated extra flags say (--host-record=..., --cname=..., --local-ttl=...,
 * --addn-hosts=...); output to log (NULL: discarded). Returns once it answers queries:
 * its pid (tracked, dies with the test), or -errno. */
pid_t tl_dnsmasq_start(uint16_t *port, const char *log, ...) __attribute__((sentinel));

/* ---- a private PostgreSQL server ----
 * initdb in /tmp/lantern-test-pg-NAME-PID as the postgres user (PostgreSQL refuses
 * root), trust authentication, listening on 127.0.0.1 only, on a free port. fsync off
 * unless durable (tests do not need it; the benchmarks measure with it). The server
 * and its directory go at the end of the test. */
struct tl_pg {
	char name[32];
	char dir[256];
	char url[256];      /* postgres://lantern@127.0.0.1:PORT/postgres */
	uint16_t port;
	pid_t pid;
	bool durable;
};
/* 0, or -errno (the reason is in DIR/postgres.log). */
int tl_pg_start(struct tl_pg *pg, const char *name, bool durable);
/* Stops the server (fast shutdown), keeping its data: tl_pg_resume starts it again on
 * the same port. */
void tl_pg_halt(struct tl_pg *pg);
int tl_pg_resume(struct tl_pg *pg);
/* Stops it and removes its directory. */
void tl_pg_stop(struct tl_pg *pg);
/* psql -At against it; as tl_sh. */
int tl_psql(struct tl_pg *pg, char **out, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Milliseconds since an arbitrary start. */
uint64_t tl_ms(void);

#endif
