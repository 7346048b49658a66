/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <sqlite3.h>

#include "jobproc.h"
#include "json.h"
#include "state.h"
#include "util.h"

/* One database's history as state_load() found it. */
struct remembered {
        char *path;
        struct sched_history hist;
};

struct state {
        sqlite3 *db;
        pthread_mutex_t lock; /* workers record concurrently */
        struct remembered *loaded; /* sorted by path (strcmp) */
        size_t n_loaded;
};

/* state_open()'s explanations, handed out as *errmsg (startup, loop thread). */
static char open_why[512], open_why_full[600];

/* The directory, made only where it would be trusted (not inside a
 * tenant's directory), and then trusted as it is: 0, or -errno with
 * *errmsg. */
static int make_state_dir(const char *dir, const char **errmsg)
{
        struct stat st = { 0 };
        int rc;

        if (lstat(dir, &st) < 0 && errno == ENOENT) {
                char *parent = strdup(dir), *slash = parent ? strrchr(parent, '/') : NULL;

                if (slash)
                        *(slash == parent ? slash + 1 : slash) = '\0';
                rc = parent && util_trusted_parent(slash ? parent : ".", open_why, sizeof(open_why)) == -EPERM;
                free(parent);
                if (rc) {
                        snprintf(open_why_full, sizeof(open_why_full),
                                 "refusing the state directory: %s; it is not made there", open_why);
                        *errmsg = open_why_full;
                        return -EPERM;
                }
        }
        if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
                *errmsg = strerror(errno);
                return -errno;
        }
        /* Whoever could write here could plant a symbolic link as state.db
         * and make root create or write the file it names. */
        if (lstat(dir, &st) < 0 || !S_ISDIR(st.st_mode) || util_trusted_path(dir, open_why, sizeof(open_why)) < 0) {
                snprintf(open_why_full, sizeof(open_why_full), "refusing the state directory: %s",
                         S_ISDIR(st.st_mode) ? open_why : "not a directory (a symbolic link is not followed)");
                *errmsg = open_why_full;
                return -EPERM;
        }
        return 0;
}

/* path (dir/state.db) opened, never through a symbolic link, and its
 * tables made: an SQLite result code. */
static int open_state_db(struct state *s, const char *path)
{
        int rc = sqlite3_open_v2(path, &s->db,
                                 SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX |
                                 SQLITE_OPEN_NOFOLLOW, NULL);

        if (rc != SQLITE_OK)
                return rc;
        /* Our own file: waiting on its lock is harmless, and losing
         * the last second of history on power loss costs little. */
        sqlite3_busy_timeout(s->db, 5000);
        return sqlite3_exec(s->db,
                            "PRAGMA journal_mode=WAL;"
                            "PRAGMA synchronous=NORMAL;"
                            "CREATE TABLE IF NOT EXISTS history("
                            "  path TEXT PRIMARY KEY,"
                            "  last_vacuum_ms INTEGER NOT NULL DEFAULT 0,"
                            "  last_analyze_ms INTEGER NOT NULL DEFAULT 0"
                            ") WITHOUT ROWID;"
                            "CREATE TABLE IF NOT EXISTS analyzed("
                            "  path TEXT NOT NULL,"
                            "  tbl TEXT NOT NULL,"
                            "  rows INTEGER NOT NULL,"
                            "  stat TEXT NOT NULL,"
                            "  PRIMARY KEY(path, tbl)"
                            ") WITHOUT ROWID;"
                            "CREATE TABLE IF NOT EXISTS deep_scan("
                            "  path TEXT PRIMARY KEY,"
                            "  scanned_ms INTEGER NOT NULL,"
                            "  known INTEGER NOT NULL,"
                            "  unused_percent REAL NOT NULL,"
                            "  reclaimable_bytes INTEGER NOT NULL,"
                            "  page_count INTEGER NOT NULL"
                            ") WITHOUT ROWID;"
                            "CREATE TABLE IF NOT EXISTS jobs("
                            "  path TEXT NOT NULL,"
                            "  operation TEXT NOT NULL,"
                            "  result TEXT NOT NULL,"
                            "  finished_ms INTEGER NOT NULL,"
                            "  duration_ms INTEGER NOT NULL,"
                            "  bytes_given_back INTEGER NOT NULL,"
                            "  message TEXT NOT NULL"
                            ");"
                            "CREATE INDEX IF NOT EXISTS jobs_by_path ON jobs(path, finished_ms);"
                            "CREATE TABLE IF NOT EXISTS vacuum_rates("
                            "  bytes INTEGER NOT NULL,"
                            "  duration_ms INTEGER NOT NULL"
                            ");",
                            NULL, NULL, NULL);
}

/* Why state.db did not open: SQLite's static text for rc (sqlite3_errmsg()
 * dies with the connection), or that it is a symbolic link. */
static const char *state_db_error(const char *dir, int rc)
{
        char db[sizeof(open_why)];
        struct stat st;

        snprintf(db, sizeof(db), "%s/state.db", dir);
        if (lstat(db, &st) == 0 && S_ISLNK(st.st_mode)) {
                snprintf(open_why_full, sizeof(open_why_full), "%s is a symbolic link: not followed", db);
                return open_why_full;
        }
        return sqlite3_errstr(rc);
}

int state_open(const char *dir, struct state **ret, const char **errmsg)
{
        struct state *s;
        char *path;
        int rc;

        *errmsg = NULL;
        rc = make_state_dir(dir, errmsg);
        if (rc < 0)
                return rc;
        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        pthread_mutex_init(&s->lock, NULL);
        path = sqlite3_mprintf("%s/state.db", dir);
        if (!path) {
                state_free(s);
                return -ENOMEM;
        }
        rc = open_state_db(s, path);
        sqlite3_free(path);
        if (rc != SQLITE_OK) {
                *errmsg = state_db_error(dir, rc);
                state_free(s);
                return -EIO;
        }
        *ret = s;
        return 0;
}

struct state *state_free(struct state *s)
{
        if (!s)
                return NULL;
        sqlite3_close_v2(s->db);
        pthread_mutex_destroy(&s->lock);
        for (size_t i = 0; i < s->n_loaded; i++)
                free(s->loaded[i].path);
        free(s->loaded);
        free(s);
        return NULL;
}

static int remembered_cmp(const void *a, const void *b)
{
        return strcmp(((const struct remembered *)a)->path, ((const struct remembered *)b)->path);
}

/* One row of the query below, kept. */
static int remember(struct state *s, size_t *cap, sqlite3_stmt *st)
{
        int64_t r = sqlite3_column_int64(st, 6), n = sqlite3_column_int64(st, 7);
        const char *path = (const char *)sqlite3_column_text(st, 0);

        if (!path)
                return 0;
        if (util_grow(&s->loaded, cap, s->n_loaded + 1, sizeof(*s->loaded), 256) < 0)
                return -ENOMEM;
        s->loaded[s->n_loaded] = (struct remembered){
                .path = strdup(path),
                .hist = {
                        .last_vacuum_ms = sqlite3_column_int64(st, 1),
                        .last_analyze_ms = sqlite3_column_int64(st, 2),
                        .last_deep_scan_ms = sqlite3_column_int64(st, 3),
                        .deep_known = sqlite3_column_int(st, 4) != 0,
                        .deep_unused_percent = sqlite3_column_double(st, 5),
                        .deep_reclaimable_bytes = r > 0 ? (uint64_t)r : 0,
                        .deep_page_count = n > 0 ? (uint64_t)n : 0,
                },
        };
        if (!s->loaded[s->n_loaded].path)
                return -ENOMEM;
        s->n_loaded++;
        return 0;
}

int state_load(struct state *s)
{
        sqlite3_stmt *st;
        size_t cap = 0;
        int rc, r = 0;

        rc = sqlite3_prepare_v2(s->db,
                                "SELECT path, max(v), max(a), max(d), max(k), max(u), max(r), max(n) FROM ("
                                "  SELECT path, last_vacuum_ms AS v, last_analyze_ms AS a, 0 AS d, 0 AS k, 0.0 AS u,"
                                "         0 AS r, 0 AS n FROM history"
                                "  UNION ALL"
                                "  SELECT path, 0, 0, scanned_ms, known, unused_percent, reclaimable_bytes, page_count"
                                "  FROM deep_scan"
                                ") GROUP BY path", -1, &st, NULL);
        if (rc != SQLITE_OK)
                return -EIO;
        while (r == 0 && (rc = sqlite3_step(st)) == SQLITE_ROW)
                r = remember(s, &cap, st);
        sqlite3_finalize(st);
        if (s->n_loaded > 1)
                qsort(s->loaded, s->n_loaded, sizeof(*s->loaded), remembered_cmp);
        return r < 0 ? r : rc == SQLITE_DONE ? 0 : -EIO;
}

bool state_history(const struct state *s, const char *path, struct sched_history *ret)
{
        const struct remembered key = { .path = (char *)path }, *found;

        found = s->n_loaded ? bsearch(&key, s->loaded, s->n_loaded, sizeof(*s->loaded), remembered_cmp) : NULL;
        if (found)
                *ret = found->hist;
        return found != NULL;
}

int state_record_deep_scan(struct state *s, const char *path, int64_t when_ms, const struct deep_stats *ds)
{
        sqlite3_stmt *st;
        int rc;

        pthread_mutex_lock(&s->lock);
        rc = sqlite3_prepare_v2(s->db, "INSERT OR REPLACE INTO deep_scan(path, scanned_ms, known, unused_percent, "
                                "reclaimable_bytes, page_count) VALUES(?1, ?2, 1, ?3, ?4, ?5)", -1, &st, NULL);
        if (rc == SQLITE_OK) {
                sqlite3_bind_text(st, 1, path, -1, SQLITE_STATIC);
                sqlite3_bind_int64(st, 2, when_ms);
                sqlite3_bind_double(st, 3, deep_unused_percent(ds->unused_bytes, ds->btree_pages, ds->page_size));
                sqlite3_bind_int64(st, 4, (sqlite3_int64)ds->reclaimable_bytes);
                sqlite3_bind_int64(st, 5, (sqlite3_int64)ds->page_count);
                rc = sqlite3_step(st);
                sqlite3_finalize(st);
        }
        pthread_mutex_unlock(&s->lock);
        return rc == SQLITE_DONE ? 0 : -EIO;
}

int state_record(struct state *s, const char *path, enum maint_op op, int64_t when_ms)
{
        const char *sql;
        sqlite3_stmt *st;
        int rc;

        switch (op) {
        case MAINT_OP_VACUUM:
        case MAINT_OP_INCREMENTAL_VACUUM:
                sql = "INSERT INTO history(path, last_vacuum_ms) VALUES(?1, ?2) "
                      "ON CONFLICT(path) DO UPDATE SET last_vacuum_ms = excluded.last_vacuum_ms";
                break;
        case MAINT_OP_ANALYZE:
                sql = "INSERT INTO history(path, last_analyze_ms) VALUES(?1, ?2) "
                      "ON CONFLICT(path) DO UPDATE SET last_analyze_ms = excluded.last_analyze_ms";
                break;
        default:
                return 0;
        }
        pthread_mutex_lock(&s->lock);
        rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);
        if (rc == SQLITE_OK) {
                sqlite3_bind_text(st, 1, path, -1, SQLITE_STATIC);
                sqlite3_bind_int64(st, 2, when_ms);
                rc = sqlite3_step(st);
                sqlite3_finalize(st);
        }
        /* a full VACUUM packed the pages: what the deep scan found is gone */
        if (rc == SQLITE_DONE && op == MAINT_OP_VACUUM &&
            sqlite3_prepare_v2(s->db, "UPDATE deep_scan SET known = 0 WHERE path = ?1", -1, &st, NULL) == SQLITE_OK) {
                sqlite3_bind_text(st, 1, path, -1, SQLITE_STATIC);
                rc = sqlite3_step(st);
                sqlite3_finalize(st);
        }
        pthread_mutex_unlock(&s->lock);
        return rc == SQLITE_DONE ? 0 : -EIO;
}

int state_record_analyzed(struct state *s, const char *path, const struct maint_table *tables, size_t n)
{
        sqlite3_stmt *st = NULL;
        int rc;

        pthread_mutex_lock(&s->lock);
        rc = sqlite3_exec(s->db, "BEGIN", NULL, NULL, NULL);
        if (rc == SQLITE_OK)
                rc = sqlite3_prepare_v2(s->db, "INSERT OR REPLACE INTO analyzed(path, tbl, rows, stat) "
                                        "VALUES(?1, ?2, ?3, ?4)", -1, &st, NULL);
        for (size_t i = 0; rc == SQLITE_OK && i < n; i++) {
                const struct maint_table *t = &tables[i];

                if ((t->verdict != TABLE_ANALYZED && t->verdict != TABLE_ANALYZED_LIMITED) || !t->stat)
                        continue;
                sqlite3_bind_text(st, 1, path, -1, SQLITE_STATIC);
                sqlite3_bind_text(st, 2, t->name, -1, SQLITE_STATIC);
                sqlite3_bind_int64(st, 3, (sqlite3_int64)t->rows);
                sqlite3_bind_text(st, 4, t->stat, -1, SQLITE_STATIC);
                rc = sqlite3_step(st) == SQLITE_DONE ? SQLITE_OK : SQLITE_ERROR;
                sqlite3_reset(st);
        }
        sqlite3_finalize(st);
        if (rc == SQLITE_OK)
                rc = sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL);
        if (rc != SQLITE_OK)
                sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
        pthread_mutex_unlock(&s->lock);
        return rc == SQLITE_OK ? 0 : -EIO;
}

int state_analyze_baselines(struct state *s, const char *path, struct jobproc_baseline **ret, size_t *n)
{
        struct jobproc_baseline *v = NULL;
        sqlite3_stmt *st;
        size_t k = 0, cap = 0;
        int rc;

        *ret = NULL;
        *n = 0;
        pthread_mutex_lock(&s->lock);
        rc = sqlite3_prepare_v2(s->db, "SELECT tbl, stat, rows FROM analyzed WHERE path = ?1", -1, &st, NULL);
        if (rc == SQLITE_OK) {
                sqlite3_bind_text(st, 1, path, -1, SQLITE_STATIC);
                while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                        const char *t = (const char *)sqlite3_column_text(st, 0),
                                   *x = (const char *)sqlite3_column_text(st, 1);

                        if (!t || !x || strlen(t) >= sizeof(v->table) || strlen(x) >= sizeof(v->stat))
                                continue; /* too long to pass on: the job goes by sqlite_stat1 */
                        if (util_grow(&v, &cap, k + 1, sizeof(*v), 16) < 0) {
                                rc = SQLITE_NOMEM;
                                break;
                        }
                        memset(&v[k], 0, sizeof(v[k]));
                        memcpy(v[k].table, t, strlen(t));
                        memcpy(v[k].stat, x, strlen(x));
                        v[k].rows = (uint64_t)sqlite3_column_int64(st, 2);
                        k++;
                }
                sqlite3_finalize(st);
        }
        pthread_mutex_unlock(&s->lock);
        if (rc != SQLITE_DONE) {
                free(v);
                return -EIO;
        }
        *ret = v;
        *n = k;
        return 0;
}

/* Every path the state knows, copied out under the lock: SQLITE_OK, or
 * SQLITE_NOMEM (or the prepare's error) with what was copied so far. */
static int known_paths(struct state *s, char ***paths, size_t *n)
{
        sqlite3_stmt *sel = NULL;
        size_t cap = 0;
        int rc;

        pthread_mutex_lock(&s->lock);
        rc = sqlite3_prepare_v2(s->db, "SELECT path FROM history UNION SELECT path FROM analyzed UNION SELECT path FROM deep_scan", -1, &sel, NULL);
        while (rc == SQLITE_OK && sqlite3_step(sel) == SQLITE_ROW) {
                const char *p = (const char *)sqlite3_column_text(sel, 0);

                if (!p)
                        continue;
                if (util_grow(paths, &cap, *n + 1, sizeof(**paths), 64) < 0) {
                        rc = SQLITE_NOMEM;
                        break;
                }
                if (!((*paths)[*n] = strdup(p))) {
                        rc = SQLITE_NOMEM;
                        break;
                }
                (*n)++;
        }
        sqlite3_finalize(sel);
        pthread_mutex_unlock(&s->lock);
        return rc;
}

/* Each path's rows deleted, in one transaction under the lock: the
 * number of paths, or -EIO (rolled back). */
static int forget_paths(struct state *s, char *const *gone, size_t n)
{
        static const char *const sql[] = {
                "DELETE FROM history WHERE path = ?1",
                "DELETE FROM analyzed WHERE path = ?1",
                "DELETE FROM deep_scan WHERE path = ?1",
        };
        sqlite3_stmt *del[ELEMENTSOF(sql)] = { NULL };
        bool began, prepared, ok;
        int r = 0;

        pthread_mutex_lock(&s->lock);
        began = prepared = sqlite3_exec(s->db, "BEGIN", NULL, NULL, NULL) == SQLITE_OK;
        for (size_t k = 0; k < ELEMENTSOF(sql) && prepared; k++)
                prepared = sqlite3_prepare_v2(s->db, sql[k], -1, &del[k], NULL) == SQLITE_OK;
        if (began && !prepared) { /* the transaction is not left open */
                sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
                r = -EIO;
        }
        if (prepared) {
                for (size_t i = 0; i < n; i++) {
                        if (!gone[i])
                                continue;
                        for (size_t k = 0; k < ELEMENTSOF(del); k++)
                                sqlite3_bind_text(del[k], 1, gone[i], -1, SQLITE_STATIC);
                        ok = true;
                        for (size_t k = 0; k < ELEMENTSOF(del) && ok; k++)
                                ok = sqlite3_step(del[k]) == SQLITE_DONE;
                        if (!ok)
                                r = -EIO;
                        for (size_t k = 0; k < ELEMENTSOF(del); k++)
                                sqlite3_reset(del[k]);
                        r = r < 0 ? r : r + 1;
                }
                sqlite3_exec(s->db, r < 0 ? "ROLLBACK" : "COMMIT", NULL, NULL, NULL);
        }
        for (size_t k = 0; k < ELEMENTSOF(del); k++)
                sqlite3_finalize(del[k]);
        pthread_mutex_unlock(&s->lock);
        return r;
}

int state_prune(struct state *s)
{
        char **gone = NULL;
        struct stat st;
        size_t n = 0;
        int r = 0;

        /* the list first, the files looked at outside the lock */
        if (known_paths(s, &gone, &n) != SQLITE_OK)
                r = -ENOMEM;
        for (size_t i = 0; i < n; i++)
                if (r == 0 && lstat(gone[i], &st) == 0) {
                        free(gone[i]);
                        gone[i] = NULL;
                } else if (r == 0 && errno != ENOENT && errno != ENOTDIR) {
                        free(gone[i]); /* cannot tell: kept */
                        gone[i] = NULL;
                }
        if (r == 0)
                r = forget_paths(s, gone, n);
        for (size_t i = 0; i < n; i++)
                free(gone[i]);
        free(gone);
        return r;
}

int state_record_job(struct state *s, const char *path, enum maint_op op, const struct maint_result *r,
                     int64_t finished_ms)
{
        sqlite3_stmt *st;
        int rc;

        pthread_mutex_lock(&s->lock);
        rc = sqlite3_prepare_v2(s->db, "INSERT INTO jobs(path, operation, result, finished_ms, duration_ms, "
                                "bytes_given_back, message) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)", -1, &st, NULL);
        if (rc == SQLITE_OK) {
                sqlite3_bind_text(st, 1, path, -1, SQLITE_STATIC);
                sqlite3_bind_text(st, 2, maint_op_name(op), -1, SQLITE_STATIC);
                sqlite3_bind_text(st, 3, maint_status_name(r->status), -1, SQLITE_STATIC);
                sqlite3_bind_int64(st, 4, finished_ms);
                sqlite3_bind_int64(st, 5, (sqlite3_int64)r->duration_ms);
                sqlite3_bind_int64(st, 6, (sqlite3_int64)maint_bytes_given_back(op, r));
                sqlite3_bind_text(st, 7, r->message, -1, SQLITE_STATIC);
                rc = sqlite3_step(st);
                sqlite3_finalize(st);
        }
        /* the newest STATE_JOBS_KEPT rows: the oldest go, by rowid (no scan) */
        if (rc == SQLITE_DONE)
                (void)sqlite3_exec(s->db, "DELETE FROM jobs WHERE rowid <= (SELECT max(rowid) FROM jobs) - "
                                   STRINGIFY(STATE_JOBS_KEPT), NULL, NULL, NULL);
        pthread_mutex_unlock(&s->lock);
        return rc == SQLITE_DONE ? 0 : -EIO;
}

int state_jobs_json(struct state *s, const char *path, int64_t since_ms, size_t limit, struct json *j)
{
        sqlite3_stmt *st;
        int rc;

        pthread_mutex_lock(&s->lock);
        rc = sqlite3_prepare_v2(s->db, "SELECT path, operation, result, finished_ms, duration_ms, bytes_given_back, "
                                "message FROM (SELECT rowid AS id, * FROM jobs WHERE (?1 IS NULL OR path = ?1) AND "
                                "finished_ms >= ?2 ORDER BY finished_ms DESC, id DESC LIMIT ?3) "
                                "ORDER BY finished_ms, id", -1, &st, NULL);
        if (rc == SQLITE_OK) {
                if (path)
                        sqlite3_bind_text(st, 1, path, -1, SQLITE_STATIC);
                sqlite3_bind_int64(st, 2, since_ms);
                sqlite3_bind_int64(st, 3, (sqlite3_int64)limit);
                json_array_begin(j, "jobs");
                while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                        json_object_begin(j, NULL);
                        json_str(j, "db", (const char *)sqlite3_column_text(st, 0));
                        json_str(j, "operation", (const char *)sqlite3_column_text(st, 1));
                        json_str(j, "result", (const char *)sqlite3_column_text(st, 2));
                        json_i64(j, "finished_ms", sqlite3_column_int64(st, 3));
                        json_i64(j, "duration_ms", sqlite3_column_int64(st, 4));
                        json_i64(j, "bytes_given_back", sqlite3_column_int64(st, 5));
                        json_str(j, "message", (const char *)sqlite3_column_text(st, 6));
                        json_object_end(j);
                }
                json_array_end(j);
                sqlite3_finalize(st);
        }
        pthread_mutex_unlock(&s->lock);
        return rc == SQLITE_DONE ? 0 : -EIO;
}

int state_record_vacuum_rate(struct state *s, uint64_t bytes, uint64_t duration_ms)
{
        sqlite3_stmt *st;
        int rc;

        pthread_mutex_lock(&s->lock);
        rc = sqlite3_prepare_v2(s->db, "INSERT INTO vacuum_rates(bytes, duration_ms) VALUES(?1, ?2)", -1, &st, NULL);
        if (rc == SQLITE_OK) {
                sqlite3_bind_int64(st, 1, (sqlite3_int64)bytes);
                sqlite3_bind_int64(st, 2, (sqlite3_int64)duration_ms);
                rc = sqlite3_step(st);
                sqlite3_finalize(st);
        }
        if (rc == SQLITE_DONE)
                (void)sqlite3_exec(s->db, "DELETE FROM vacuum_rates WHERE rowid <= (SELECT max(rowid) FROM "
                                   "vacuum_rates) - " STRINGIFY(SCHED_RATE_SAMPLES), NULL, NULL, NULL);
        pthread_mutex_unlock(&s->lock);
        return rc == SQLITE_DONE ? 0 : -EIO;
}

int state_vacuum_rate(struct state *s, struct sched_rate *ret)
{
        sqlite3_stmt *st;
        int rc;

        *ret = (struct sched_rate){ 0 };
        pthread_mutex_lock(&s->lock);
        rc = sqlite3_prepare_v2(s->db, "SELECT count(*), total(bytes), total(duration_ms) FROM (SELECT * FROM "
                                "vacuum_rates ORDER BY rowid DESC LIMIT " STRINGIFY(SCHED_RATE_SAMPLES) ")",
                                -1, &st, NULL);
        if (rc == SQLITE_OK) {
                rc = sqlite3_step(st);
                if (rc == SQLITE_ROW)
                        *ret = (struct sched_rate){ (uint64_t)sqlite3_column_double(st, 1),
                                                    (uint64_t)sqlite3_column_double(st, 2),
                                                    (unsigned)sqlite3_column_int(st, 0) };
                sqlite3_finalize(st);
        }
        pthread_mutex_unlock(&s->lock);
        return rc == SQLITE_ROW ? 0 : -EIO;
}
