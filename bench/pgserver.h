/* pgserver.h: a private PostgreSQL server for the benchmarks that need one
 * (bench/journal's replicated rows, bench/failover): initdb in a directory of the
 * benchmark's, run as the postgres user (PostgreSQL refuses root), trust
 * authentication, loopback only, fsync and synchronous commit left ON (a benchmark of
 * durable appends must pay for durability on both sides). Header-only: each benchmark
 * is one folder of its own and links no test code. */
#ifndef LANTERN_BENCH_PGSERVER_H
#define LANTERN_BENCH_PGSERVER_H

#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lantern/util.h"

struct pgserver {
	char dir[512];
	char url[600];              /* postgres://lantern@127.0.0.1:PORT/postgres */
	int port;
	pid_t pid;
};

static inline pid_t pgserver_as_postgres(char *const argv[], const char *log)
{
	struct passwd *pw = getpwnam("postgres");
	pid_t pid;

	if (!pw)
		return -1;
	pid = fork();
	if (pid == 0) {
		FILE *f = fopen(log, "a");

		if (f) {
			dup2(fileno(f), 1);
			dup2(fileno(f), 2);
		}
		if (setgid(pw->pw_gid) || setuid(pw->pw_uid))
			_exit(126);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		execv(argv[0], argv);
		_exit(127);
	}
	return pid;
}

/* Starts it under dir (created) on port; 0 or -1 (see dir/postgres.log). */
static inline int pgserver_start(struct pgserver *pg, const char *dir, int port)
{
	struct passwd *pw = getpwnam("postgres");
	char data[600], log[600], p[16], ready[700];
	int st;
	pid_t pid;

	snprintf(pg->dir, sizeof(pg->dir), "%s", dir);
	snprintf(data, sizeof(data), "%s/data", dir);
	snprintf(log, sizeof(log), "%s/postgres.log", dir);
	snprintf(p, sizeof(p), "%d", port);
	pg->port = port;
	snprintf(pg->url, sizeof(pg->url), "postgres://lantern@127.0.0.1:%d/postgres", port);
	if (!pw || util_mkdir_p(dir, 0700) < 0 || chown(dir, pw->pw_uid, pw->pw_gid) < 0)
		return -1;
	char *initdb[] = { "/usr/lib/postgresql/15/bin/initdb", "-D", data, "-A", "trust", "-U", "lantern",
			   "--no-sync", NULL };
	pid = pgserver_as_postgres(initdb, log);
	if (pid < 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st))
		return -1;
	char *server[] = { "/usr/lib/postgresql/15/bin/postgres", "-D", data, "-p", p, "-k", pg->dir, "-c",
			   "listen_addresses=127.0.0.1", "-c", "max_connections=300", NULL };
	pg->pid = pgserver_as_postgres(server, log);
	if (pg->pid < 0)
		return -1;
	snprintf(ready, sizeof(ready), "/usr/lib/postgresql/15/bin/pg_isready -q -h 127.0.0.1 -p %d", port);
	for (int i = 0; i < 300; i++) {
		if (system(ready) == 0)
			return 0;
		usleep(50000);
	}
	return -1;
}

static inline void pgserver_stop(struct pgserver *pg)
{
	if (pg->pid > 0) {
		kill(pg->pid, SIGINT);
		waitpid(pg->pid, NULL, 0);
		pg->pid = 0;
	}
	if (pg->dir[0] && !getenv("LANTERN_KEEP"))
		util_rm_rf(pg->dir);
}

#endif
