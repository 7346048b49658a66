/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <sqlite3.h>

#include "state.h"

struct state {
        sqlite3 *db;
        pthread_mutex_t lock; /* workers record concurrently */
};

int64_t state_now_ms(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int state_open(const char *dir, struct state **ret, const char **errmsg)
{
        struct state *s;
        char *path;
        int rc;

        *errmsg = NULL;
        if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
                *errmsg = strerror(errno);
                return -errno;
        }
        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        pthread_mutex_init(&s->lock, NULL);
        path = sqlite3_mprintf("%s/state.db", dir);
        if (!path) {
                state_free(s);
                return -ENOMEM;
        }
        rc = sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, NULL);
        sqlite3_free(path);
        if (rc == SQLITE_OK) {
                /* Our own file: waiting on its lock is harmless, and losing
                 * the last second of history on power loss costs little. */
                sqlite3_busy_timeout(s->db, 5000);
                rc = sqlite3_exec(s->db,
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
                                  ") WITHOUT ROWID;",
                                  NULL, NULL, NULL);
        }
        if (rc != SQLITE_OK) {
                /* sqlite3_errmsg() dies with the connection: the static text */
                *errmsg = sqlite3_errstr(rc);
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
        free(s);
        return NULL;
}

int state_load(struct state *s, state_load_cb cb, void *userdata)
{
        sqlite3_stmt *st;
        int rc;

        rc = sqlite3_prepare_v2(s->db, "SELECT path, last_vacuum_ms, last_analyze_ms FROM history", -1, &st, NULL);
        if (rc != SQLITE_OK)
                return -EIO;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW)
                cb(userdata, (const char *)sqlite3_column_text(st, 0), sqlite3_column_int64(st, 1),
                   sqlite3_column_int64(st, 2));
        sqlite3_finalize(st);
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

int state_analyze_baseline(struct state *s, const char *path, const char *table, const char *stat, uint64_t *rows)
{
        sqlite3_stmt *st;
        int rc, r = -ENOENT;

        pthread_mutex_lock(&s->lock);
        rc = sqlite3_prepare_v2(s->db, "SELECT rows FROM analyzed WHERE path = ?1 AND tbl = ?2 AND stat = ?3", -1,
                                &st, NULL);
        if (rc == SQLITE_OK) {
                sqlite3_bind_text(st, 1, path, -1, SQLITE_STATIC);
                sqlite3_bind_text(st, 2, table, -1, SQLITE_STATIC);
                sqlite3_bind_text(st, 3, stat, -1, SQLITE_STATIC);
                if (sqlite3_step(st) == SQLITE_ROW) {
                        *rows = (uint64_t)sqlite3_column_int64(st, 0);
                        r = 0;
                }
                sqlite3_finalize(st);
        } else {
                r = -EIO;
        }
        pthread_mutex_unlock(&s->lock);
        return r;
}
