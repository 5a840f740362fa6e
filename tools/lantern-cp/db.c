/* db.c: lantern-cp's state on disk: SQLite by default (one file, no set-up) or
 * PostgreSQL (postgres://…, for a control plane with several replicas), behind one
 * small interface: statements with $N text parameters, rows as strings.
 *
 * Migrations are embedded and versioned: each runs once, in a transaction, and is
 * recorded in schema_migrations. On PostgreSQL an advisory lock keeps two replicas
 * starting at once from running the same migration twice. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>
#include <sqlite3.h>

#include "cp.h"

struct db {
	sqlite3 *lite;
	PGconn *pg;
};

/* Version 1 is the baseline and fully IF NOT EXISTS, so it is safe on a database that
 * already has the tables. Later changes are new entries, never edits of old ones. */
static const struct {
	int version;
	const char *name;
	const char *up;
} migrations[] = {
	{ 1, "baseline",
	  "CREATE TABLE IF NOT EXISTS data_planes ("
	  " id TEXT PRIMARY KEY,"
	  " tenant_id TEXT NOT NULL,"
	  " name TEXT NOT NULL DEFAULT '',"
	  " token_hash TEXT NOT NULL UNIQUE,"
	  " token_used INTEGER NOT NULL DEFAULT 0,"
	  " hostname TEXT NOT NULL DEFAULT '',"
	  " classes TEXT NOT NULL DEFAULT '',"
	  " max_runs INTEGER NOT NULL DEFAULT 0,"
	  " draining INTEGER NOT NULL DEFAULT 0,"
	  " down INTEGER NOT NULL DEFAULT 0,"
	  " created_at BIGINT NOT NULL,"
	  " registered_at BIGINT,"
	  " last_heartbeat BIGINT);"
	  "CREATE TABLE IF NOT EXISTS runs ("
	  " id TEXT PRIMARY KEY,"
	  " tenant_id TEXT NOT NULL,"
	  " isolation TEXT NOT NULL,"
	  " pin TEXT NOT NULL DEFAULT '',"
	  " idempotency_key TEXT NOT NULL DEFAULT '',"
	  " config_json TEXT NOT NULL,"
	  " input_json TEXT NOT NULL DEFAULT '',"
	  " status TEXT NOT NULL,"
	  " plane_id TEXT NOT NULL DEFAULT '',"
	  " epoch BIGINT NOT NULL DEFAULT 0,"
	  " detail TEXT NOT NULL DEFAULT '',"
	  " output_json TEXT NOT NULL DEFAULT '',"
	  " cost_usd DOUBLE PRECISION NOT NULL DEFAULT 0,"
	  " tokens_in BIGINT NOT NULL DEFAULT 0,"
	  " tokens_out BIGINT NOT NULL DEFAULT 0,"
	  " duration_ms BIGINT NOT NULL DEFAULT 0,"
	  " cancel_requested INTEGER NOT NULL DEFAULT 0,"
	  " created_us BIGINT NOT NULL,"
	  " assigned_us BIGINT NOT NULL DEFAULT 0,"
	  " accepted_us BIGINT NOT NULL DEFAULT 0,"
	  " running_us BIGINT NOT NULL DEFAULT 0,"
	  " finished_us BIGINT NOT NULL DEFAULT 0);"
	  "CREATE INDEX IF NOT EXISTS runs_tenant_status ON runs (tenant_id, status);"
	  "CREATE TABLE IF NOT EXISTS signing_keys ("
	  " id TEXT PRIMARY KEY,"
	  " secret TEXT NOT NULL,"
	  " created_at BIGINT NOT NULL);" },
	{ 2, "identity",
	  "ALTER TABLE data_planes ADD COLUMN node_key TEXT NOT NULL DEFAULT '';"
	  "ALTER TABLE data_planes ADD COLUMN region TEXT NOT NULL DEFAULT '';"
	  "CREATE TABLE IF NOT EXISTS receipts ("
	  " run_id TEXT PRIMARY KEY,"
	  " plane_id TEXT NOT NULL,"
	  " receipt TEXT NOT NULL DEFAULT '',"
	  " error TEXT NOT NULL DEFAULT '',"
	  " created_at BIGINT NOT NULL);" },
};

const char *db_kind(const struct db *db)
{
	return db->pg ? "postgresql" : "sqlite";
}

int db_open(const char *url, struct db **out, struct lerr *e)
{
	struct db *db = calloc(1, sizeof(*db));

	if (!db)
		return lerr_set(e, ENOMEM, "database: out of memory");
	if (!strncmp(url, "postgres://", 11) || !strncmp(url, "postgresql://", 13)) {
		db->pg = PQconnectdb(url);
		if (PQstatus(db->pg) != CONNECTION_OK) {
			lerr_set(e, ECONNREFUSED, "database %s: %s", url, PQerrorMessage(db->pg));
			PQfinish(db->pg);
			free(db);
			return -ECONNREFUSED;
		}
		PQclear(PQexec(db->pg, "SET client_min_messages TO warning"));
	} else {
		const char *path = !strncmp(url, "sqlite://", 9) ? url + 9 : url;

		if (sqlite3_open_v2(path, &db->lite, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
				    SQLITE_OPEN_FULLMUTEX, NULL) != SQLITE_OK) {
			lerr_set(e, EIO, "database %s: %s", path, sqlite3_errmsg(db->lite));
			sqlite3_close(db->lite);
			free(db);
			return -EIO;
		}
		sqlite3_busy_timeout(db->lite, 5000);
		/* WAL: readers never wait for the writer; NORMAL: a commit survives a crash of
		 * lantern-cp (the OS may lose the last ones only if the machine itself dies) */
		sqlite3_exec(db->lite, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;", NULL,
			     NULL, NULL);
	}
	*out = db;
	return 0;
}

void db_close(struct db *db)
{
	if (!db)
		return;
	if (db->pg)
		PQfinish(db->pg);
	if (db->lite)
		sqlite3_close(db->lite);
	free(db);
}

static int lite_prepare(struct db *db, const char *sql, int n, const char *const *params,
			sqlite3_stmt **st, struct lerr *e)
{
	if (sqlite3_prepare_v2(db->lite, sql, -1, st, NULL) != SQLITE_OK)
		return lerr_set(e, EINVAL, "database: %s: %s", sqlite3_errmsg(db->lite), sql);
	for (int i = 0; i < n; i++) {
		char name[16];
		int idx;

		snprintf(name, sizeof(name), "$%d", i + 1);
		idx = sqlite3_bind_parameter_index(*st, name);
		if (!idx)
			continue;
		if (params[i])
			sqlite3_bind_text(*st, idx, params[i], -1, SQLITE_TRANSIENT);
		else
			sqlite3_bind_null(*st, idx);
	}
	return 0;
}

int db_exec(struct db *db, const char *sql, int n, const char *const *params, struct lerr *e)
{
	if (db->pg) {
		PGresult *res = PQexecParams(db->pg, sql, n, NULL, params, NULL, NULL, 0);
		int st = PQresultStatus(res), changed;

		if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
			lerr_set(e, EIO, "database: %s", PQresultErrorMessage(res));
			PQclear(res);
			return -EIO;
		}
		changed = atoi(PQcmdTuples(res));
		PQclear(res);
		return changed;
	} else {
		sqlite3_stmt *st;
		int err = lite_prepare(db, sql, n, params, &st, e), rc;

		if (err < 0)
			return err;
		while ((rc = sqlite3_step(st)) == SQLITE_ROW)
			;
		sqlite3_finalize(st);
		if (rc != SQLITE_DONE)
			return lerr_set(e, EIO, "database: %s", sqlite3_errmsg(db->lite));
		return sqlite3_changes(db->lite);
	}
}

int db_query(struct db *db, const char *sql, int n, const char *const *params, db_row_cb cb,
	     void *arg, struct lerr *e)
{
	if (db->pg) {
		PGresult *res = PQexecParams(db->pg, sql, n, NULL, params, NULL, NULL, 0);
		int rows, cols;

		if (PQresultStatus(res) != PGRES_TUPLES_OK) {
			lerr_set(e, EIO, "database: %s", PQresultErrorMessage(res));
			PQclear(res);
			return -EIO;
		}
		rows = PQntuples(res);
		cols = PQnfields(res);
		for (int r = 0; r < rows; r++) {
			char *vals[64];

			for (int c = 0; c < cols && c < 64; c++)
				vals[c] = PQgetisnull(res, r, c) ? NULL : PQgetvalue(res, r, c);
			cb(arg, cols < 64 ? cols : 64, vals);
		}
		PQclear(res);
		return rows;
	} else {
		sqlite3_stmt *st;
		int err = lite_prepare(db, sql, n, params, &st, e), rc, rows = 0;

		if (err < 0)
			return err;
		while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
			int cols = sqlite3_column_count(st);
			char *vals[64];

			for (int c = 0; c < cols && c < 64; c++)
				vals[c] = (char *)sqlite3_column_text(st, c);
			cb(arg, cols < 64 ? cols : 64, vals);
			rows++;
		}
		sqlite3_finalize(st);
		if (rc != SQLITE_DONE)
			return lerr_set(e, EIO, "database: %s", sqlite3_errmsg(db->lite));
		return rows;
	}
}

/* Runs a script of several statements (no parameters). */
static int db_script(struct db *db, const char *sql, struct lerr *e)
{
	if (db->pg) {
		PGresult *res = PQexec(db->pg, sql);
		int st = PQresultStatus(res);

		if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
			lerr_set(e, EIO, "database: %s", PQresultErrorMessage(res));
			PQclear(res);
			return -EIO;
		}
		PQclear(res);
		return 0;
	} else {
		char *msg = NULL;

		if (sqlite3_exec(db->lite, sql, NULL, NULL, &msg) != SQLITE_OK) {
			lerr_set(e, EIO, "database: %s", msg ? msg : "?");
			sqlite3_free(msg);
			return -EIO;
		}
		return 0;
	}
}

static void max_version(void *arg, int ncol, char **vals)
{
	int *v = arg;

	if (ncol > 0 && vals[0] && atoi(vals[0]) > *v)
		*v = atoi(vals[0]);
}

int db_migrate(struct db *db, struct lerr *e)
{
	int have = 0, err;

	if (db->pg && (err = db_script(db, "SELECT pg_advisory_lock(7411006)", e)) < 0)
		return err;
	err = db_script(db, "CREATE TABLE IF NOT EXISTS schema_migrations ("
			    " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)", e);
	if (err < 0 || (err = db_query(db, "SELECT version FROM schema_migrations", 0, NULL,
				       max_version, &have, e)) < 0)
		goto out;
	for (size_t i = 0; i < ARRAY_SIZE(migrations); i++) {
		char ver[16], now[32];
		const char *p[] = { ver, migrations[i].name, now };

		if (migrations[i].version <= have)
			continue;
		snprintf(ver, sizeof(ver), "%d", migrations[i].version);
		snprintf(now, sizeof(now), "%lld", (long long)time(NULL));
		if ((err = db_script(db, "BEGIN", e)) < 0)
			goto out;
		if ((err = db_script(db, migrations[i].up, e)) < 0 ||
		    (err = db_exec(db, "INSERT INTO schema_migrations (version, name, applied_at) "
				   "VALUES ($1, $2, $3)", 3, p, e)) < 0) {
			struct lerr ignore, why = *e;
			db_script(db, "ROLLBACK", &ignore);
			lerr_set(e, err, "database: migration %d (%s): %s", migrations[i].version,
				 migrations[i].name, why.msg);
			goto out;
		}
		if ((err = db_script(db, "COMMIT", e)) < 0)
			goto out;
		log_info("database: migration %d (%s) applied", migrations[i].version, migrations[i].name);
	}
	err = 0;
out:
	if (db->pg) {
		struct lerr ignore;
		db_script(db, "SELECT pg_advisory_unlock(7411006)", &ignore);
	}
	return err;
}
