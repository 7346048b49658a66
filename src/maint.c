/* SPDX-License-Identifier: MIT */
/* maint: VACUUM, ANALYZE, integrity checks and incremental vacuum on one
 * database, each behind the checks of SQLITE-NOTES.md. Runs on a worker. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "maint.h"
#include "util.h"

/* A hostile database must not be able to take all memory: SQLite fails
 * allocations past this with SQLITE_NOMEM instead. Generous, since the
 * page cache of a VACUUM of a big database lives under it too. */
#define MAINT_HEAP_LIMIT (512LL * 1024 * 1024)
/* How often (in VM steps) a long statement checks for a stop request. */
#define MAINT_PROGRESS_STEPS 1000
/* The most problem rows kept from an integrity check. */
#define MAINT_MAX_PROBLEMS 100

int maint_init(void)
{
        int rc = sqlite3_initialize();

        if (rc != SQLITE_OK)
                return -EIO;
        sqlite3_hard_heap_limit64(MAINT_HEAP_LIMIT);
        return 0;
}

void maint_opts_from_conf(struct maint_opts *o, const struct vacuum_conf *v,
                          const struct analyze_conf *a, const struct retry_conf *r)
{
        *o = (struct maint_opts){
                .busy_timeout_ms = r->busy_timeout_ms,
                .integrity = v->integrity,
                .disk_space_factor = v->disk_space_factor,
                .analysis_limit = a->analysis_limit,
                .incremental_batch_pages = 256,
                .incremental_pause_ms = 50,
        };
}

int maint_cancel_init(struct maint_cancel *c)
{
        c->db = NULL;
        atomic_init(&c->requested, false);
        return -pthread_mutex_init(&c->lock, NULL);
}

void maint_cancel_destroy(struct maint_cancel *c)
{
        pthread_mutex_destroy(&c->lock);
}

/* Safe from any thread: the connection cannot be closed while we hold the
 * lock. A VACUUM in its copy-back phase ignores the interrupt and finishes. */
void maint_cancel_request(struct maint_cancel *c)
{
        atomic_store(&c->requested, true);
        pthread_mutex_lock(&c->lock);
        if (c->db)
                sqlite3_interrupt(c->db);
        pthread_mutex_unlock(&c->lock);
}

static bool cancelled(struct maint_cancel *c)
{
        return c && atomic_load(&c->requested);
}

static int progress_cb(void *arg)
{
        return cancelled(arg) ? 1 : 0;
}

const char *maint_status_name(enum maint_status s)
{
        static const char *const names[] = {
                [MAINT_OK] = "ok",
                [MAINT_SKIPPED] = "skipped",
                [MAINT_BUSY] = "busy",
                [MAINT_CORRUPT] = "corrupt",
                [MAINT_NOTADB] = "not_a_database",
                [MAINT_CANNOT] = "cannot_maintain",
                [MAINT_NOSPACE] = "no_space",
                [MAINT_IOERR] = "io_error",
                [MAINT_PERMISSION] = "permission_denied",
                [MAINT_MISSING] = "missing",
                [MAINT_INTERRUPTED] = "interrupted",
                [MAINT_ERROR] = "error",
        };
        return (size_t)s < ELEMENTSOF(names) && names[s] ? names[s] : "error";
}

const char *maint_op_name(enum maint_op op)
{
        switch (op) {
        case MAINT_OP_STATS: return "poll";
        case MAINT_OP_VACUUM: return "vacuum";
        case MAINT_OP_ANALYZE: return "analyze";
        case MAINT_OP_CHECK: return "check";
        case MAINT_OP_INCREMENTAL_VACUUM: return "incremental_vacuum";
        }
        return "unknown";
}

/* What an SQLite failure means for the admin. A schema we cannot load or an
 * index on a function only the application defines is not corruption: the
 * database may be perfectly healthy, we just cannot maintain it. */
enum maint_status maint_classify(int rc, const char *msg)
{
        msg = msg ? msg : "";
        switch (rc & 0xff) {
        case SQLITE_OK:
        case SQLITE_DONE:
        case SQLITE_ROW:
                return MAINT_OK;
        case SQLITE_BUSY:
        case SQLITE_LOCKED:
                return MAINT_BUSY;
        case SQLITE_CORRUPT:
                /* A schema this SQLite cannot parse (newer syntax, unsafe
                 * functions) is not damage; a schema pointing at pages that
                 * are not there is. */
                if (strstr(msg, "malformed database schema") && !strstr(msg, "database disk image is malformed") &&
                    !strstr(msg, "invalid rootpage") && !strstr(msg, "orphan index"))
                        return MAINT_CANNOT;
                return MAINT_CORRUPT;
        case SQLITE_NOTADB:
                return MAINT_NOTADB;
        case SQLITE_FULL:
                return MAINT_NOSPACE;
        case SQLITE_IOERR:
                return MAINT_IOERR;
        case SQLITE_CANTOPEN:
        case SQLITE_PERM:
        case SQLITE_READONLY:
        case SQLITE_AUTH:
                return MAINT_PERMISSION;
        case SQLITE_INTERRUPT:
                return MAINT_INTERRUPTED;
        case SQLITE_TOOBIG:
                return MAINT_CANNOT;
        case SQLITE_ERROR:
                if (strstr(msg, "no such function") || strstr(msg, "unknown function") ||
                    strstr(msg, "no such collation") ||
                    strstr(msg, "no such module") || strstr(msg, "no such tokenizer") ||
                    strstr(msg, "unknown tokenizer") || strstr(msg, "unrecognized option") ||
                    strstr(msg, "malformed database schema"))
                        return MAINT_CANNOT;
                return MAINT_ERROR;
        default:
                return MAINT_ERROR;
        }
}

static enum maint_status set_status(struct maint_result *r, enum maint_status s, int rc,
                                    const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static enum maint_status set_status(struct maint_result *r, enum maint_status s, int rc,
                                    const char *fmt, ...)
{
        va_list ap;

        r->status = s;
        r->sqlite_rc = rc;
        va_start(ap, fmt);
        vsnprintf(r->message, sizeof(r->message), fmt, ap);
        va_end(ap);
        return s;
}

/* Record a failed SQLite call: status from the code and text. */
static enum maint_status fail_sqlite(struct maint_result *r, sqlite3 *db, int rc, const char *what)
{
        const char *msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);

        return set_status(r, maint_classify(rc, msg), rc, "%s: %s (%s)", what, msg, sqlite3_errstr(rc));
}

/* Leave every side file owned as the database is. SQLite does this itself
 * for files it creates while running as root; this covers the rest (files
 * created by an earlier run or another tool under our uid). */
static void fix_side_file_owners(const char *path)
{
        static const char *const suffixes[] = { "-journal", "-wal", "-shm" };
        struct stat db, side;
        char p[4096 + 16];

        if (geteuid() != 0 || stat(path, &db) < 0)
                return;
        for (size_t i = 0; i < ELEMENTSOF(suffixes); i++) {
                if ((size_t)snprintf(p, sizeof(p), "%s%s", path, suffixes[i]) >= sizeof(p))
                        continue;
                if (lstat(p, &side) < 0 || !S_ISREG(side.st_mode))
                        continue;
                /* Best effort: a file that vanished or a filesystem without
                 * ownership (vfat) leaves nothing better to do. */
                if ((side.st_uid != db.st_uid || side.st_gid != db.st_gid) &&
                    fchownat(AT_FDCWD, p, db.st_uid, db.st_gid, AT_SYMLINK_NOFOLLOW) < 0)
                        continue;
        }
}

/* Defensive open of a database we do not control (SQLITE-NOTES.md,
 * "Databases you do not control"). Never creates the file. */
static enum maint_status db_open(const char *path, const struct maint_opts *o,
                                 struct maint_cancel *cancel, sqlite3 **ret, struct maint_result *r)
{
        sqlite3 *db = NULL;
        struct stat st;
        char sql[64];
        int rc;

        *ret = NULL;
        if (path[0] != '/')
                return set_status(r, MAINT_ERROR, 0, "not an absolute path");
        if (lstat(path, &st) < 0) {
                if (errno == ENOENT || errno == ENOTDIR)
                        return set_status(r, MAINT_MISSING, 0, "no such file");
                if (errno == EACCES)
                        return set_status(r, MAINT_PERMISSION, 0, "cannot look up the file: %s", strerror(errno));
                return set_status(r, MAINT_IOERR, 0, "cannot look up the file: %s", strerror(errno));
        }
        if (S_ISLNK(st.st_mode))
                return set_status(r, MAINT_PERMISSION, 0,
                                  "is a symbolic link; configure the real path instead");
        /* Opening a FIFO or device could block or have effects: never. */
        if (!S_ISREG(st.st_mode))
                return set_status(r, MAINT_NOTADB, 0, "not a regular file (%s)",
                                  S_ISDIR(st.st_mode) ? "a directory" : "a special file");

        rc = sqlite3_open_v2(path, &db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOFOLLOW | SQLITE_OPEN_EXRESCODE, NULL);
        if (rc != SQLITE_OK) {
                fail_sqlite(r, db, rc, "cannot open");
                sqlite3_close_v2(db);
                return r->status;
        }
        sqlite3_extended_result_codes(db, 1);
        sqlite3_db_config(db, SQLITE_DBCONFIG_DEFENSIVE, 1, NULL);
        /* VACUUM, ANALYZE and the checks need neither; a hostile schema's
         * triggers and views are never run. trusted_schema stays ON: see
         * SQLITE-NOTES.md (JSON indexes would read as corrupt). */
        sqlite3_db_config(db, SQLITE_DBCONFIG_ENABLE_TRIGGER, 0, NULL);
        sqlite3_db_config(db, SQLITE_DBCONFIG_ENABLE_VIEW, 0, NULL);
        /* conf caps busy_timeout well inside an int of milliseconds. */
        sqlite3_busy_timeout(db, o->busy_timeout_ms > INT_MAX ? INT_MAX : (int)o->busy_timeout_ms);
        sqlite3_progress_handler(db, MAINT_PROGRESS_STEPS, progress_cb, cancel);
        snprintf(sql, sizeof(sql), "PRAGMA cell_size_check=ON; PRAGMA mmap_size=0;");
        rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
        if (rc != SQLITE_OK) {
                fail_sqlite(r, db, rc, "cannot set up the connection");
                sqlite3_close_v2(db);
                return r->status;
        }
        if (cancel) {
                pthread_mutex_lock(&cancel->lock);
                cancel->db = db;
                pthread_mutex_unlock(&cancel->lock);
        }
        *ret = db;
        return MAINT_OK;
}

static void db_close(const char *path, sqlite3 *db, struct maint_cancel *cancel)
{
        if (!db)
                return;
        if (cancel) {
                pthread_mutex_lock(&cancel->lock);
                cancel->db = NULL;
                pthread_mutex_unlock(&cancel->lock);
        }
        /* Every statement is finalized by now; close_v2 cannot leave a zombie. */
        sqlite3_close_v2(db);
        fix_side_file_owners(path);
}

static void add_problem(struct maint_result *r, const char *text)
{
        char **p;

        if (r->n_problems >= MAINT_MAX_PROBLEMS)
                return;
        p = realloc(r->problems, (r->n_problems + 1) * sizeof(*p));
        if (!p)
                return;
        r->problems = p;
        r->problems[r->n_problems] = strdup(text ? text : "(null)");
        if (r->problems[r->n_problems])
                r->n_problems++;
}

/* FTS3/4/5 keep their own index structures, which quick_check and
 * integrity_check do not look into; a full check asks each table. */
static enum maint_status check_fts(sqlite3 *db, struct maint_result *r)
{
        sqlite3_stmt *s;
        int rc;

        rc = sqlite3_prepare_v2(db,
                "SELECT name FROM sqlite_schema WHERE type = 'table' AND "
                "(sql LIKE 'CREATE VIRTUAL TABLE%USING fts5%' OR sql LIKE 'CREATE VIRTUAL TABLE%USING fts4%' OR "
                " sql LIKE 'CREATE VIRTUAL TABLE%USING fts3%')", -1, &s, NULL);
        if (rc != SQLITE_OK)
                return fail_sqlite(r, db, rc, "cannot list FTS tables");
        while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
                const char *name = (const char *)sqlite3_column_text(s, 0);
                char *sql, line[512];
                int rc2;

                if (!name)
                        continue;
                sql = sqlite3_mprintf("INSERT INTO \"%w\"(\"%w\") VALUES('integrity-check')", name, name);
                if (!sql) {
                        rc = SQLITE_NOMEM;
                        break;
                }
                rc2 = sqlite3_exec(db, sql, NULL, NULL, NULL);
                sqlite3_free(sql);
                if (rc2 == SQLITE_OK)
                        continue;
                if (maint_classify(rc2, sqlite3_errmsg(db)) != MAINT_CORRUPT) {
                        /* Record before finalize, which resets the error. */
                        fail_sqlite(r, db, rc2, "full-text index check");
                        sqlite3_finalize(s);
                        return r->status;
                }
                snprintf(line, sizeof(line), "full-text index %s: %s", name, sqlite3_errmsg(db));
                add_problem(r, line);
        }
        sqlite3_finalize(s);
        if (rc != SQLITE_DONE)
                return fail_sqlite(r, db, rc, "cannot list FTS tables");
        return MAINT_OK;
}

/* quick_check or integrity_check (+ FTS checks for full). MAINT_OK, or
 * MAINT_CORRUPT with r->problems, or the failure of the check itself. */
static enum maint_status run_check(sqlite3 *db, enum integrity_level level, const char *when,
                                   struct maint_result *r)
{
        sqlite3_stmt *s;
        bool ok = false;
        int rc;

        if (level == INTEGRITY_NONE)
                return MAINT_OK;
        rc = sqlite3_prepare_v2(db, level == INTEGRITY_FULL ? "PRAGMA integrity_check(100)" : "PRAGMA quick_check(100)",
                                -1, &s, NULL);
        if (rc != SQLITE_OK) {
                fail_sqlite(r, db, rc, "integrity check");
                return r->status;
        }
        while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
                const char *row = (const char *)sqlite3_column_text(s, 0);

                if (row && strcmp(row, "ok") == 0)
                        ok = true;
                else
                        add_problem(r, row);
        }
        sqlite3_finalize(s);
        if (rc != SQLITE_DONE) {
                fail_sqlite(r, db, rc, "integrity check");
                if (r->status == MAINT_CORRUPT)
                        add_problem(r, sqlite3_errmsg(db));
                return r->status;
        }
        if (level == INTEGRITY_FULL && r->n_problems == 0 && check_fts(db, r) != MAINT_OK)
                return r->status;
        if (!ok || r->n_problems > 0)
                return set_status(r, MAINT_CORRUPT, SQLITE_CORRUPT, "%s%s%s reported %zu line%s of problems, first: %s",
                                  level == INTEGRITY_FULL ? "integrity_check" : "quick_check", *when ? " " : "", when,
                                  r->n_problems, r->n_problems == 1 ? "" : "s",
                                  r->n_problems ? r->problems[0] : "(no rows)");
        return MAINT_OK;
}

const char *maint_temp_dir(void)
{
        const char *dirs[] = { sqlite3_temp_directory, getenv("SQLITE_TMPDIR"), getenv("TMPDIR"),
                               "/var/tmp", "/usr/tmp", "/tmp" };
        struct stat st;

        /* The same choice as unixTempFileDir() in SQLite's os_unix.c. */
        for (size_t i = 0; i < ELEMENTSOF(dirs); i++)
                if (dirs[i] && stat(dirs[i], &st) == 0 && S_ISDIR(st.st_mode) &&
                    access(dirs[i], W_OK | X_OK) == 0)
                        return dirs[i];
        return ".";
}

static int free_bytes(const char *path, uint64_t *ret)
{
        struct statvfs v;

        if (statvfs(path, &v) < 0)
                return -errno;
        /* f_bavail, not f_bfree: root's reserve is not ours to spend. */
        *ret = (uint64_t)v.f_bavail * v.f_frsize;
        return 0;
}

/* VACUUM needs a temp copy in the temp directory and a journal or WAL
 * about the size of the new database next to it (SQLITE-NOTES.md). */
static enum maint_status check_space(const char *path, const struct dbstat *st,
                                     const struct maint_opts *o, struct maint_result *r)
{
        char need[32], size_s[32], have_db[32], have_tmp[32], dir[4096];
        uint64_t size = st->file_size_bytes + st->wal_size_bytes;
        const char *tmp = maint_temp_dir(), *slash;
        int e;

        util_strlcpy(r->tmp_dir, tmp, sizeof(r->tmp_dir));
        r->space_needed = (uint64_t)((double)size * o->disk_space_factor);
        if ((e = free_bytes(path, &r->space_free_db)) < 0)
                return set_status(r, MAINT_IOERR, 0, "cannot measure free space: %s", strerror(-e));
        if ((e = free_bytes(tmp, &r->space_free_tmp)) < 0)
                return set_status(r, MAINT_IOERR, 0, "cannot measure free space in %s: %s", tmp, strerror(-e));
        if (r->space_free_db >= r->space_needed && r->space_free_tmp >= r->space_needed)
                return MAINT_OK;
        slash = strrchr(path, '/');
        snprintf(dir, sizeof(dir), "%.*s", slash == path ? 1 : (int)(slash - path), path);
        util_format_bytes(r->space_needed, need, sizeof(need));
        util_format_bytes(size, size_s, sizeof(size_s));
        util_format_bytes(r->space_free_db, have_db, sizeof(have_db));
        util_format_bytes(r->space_free_tmp, have_tmp, sizeof(have_tmp));
        return set_status(r, MAINT_NOSPACE, 0,
                          "not enough free space for VACUUM: it needs %s (%.1f x the database's %s) free in %s "
                          "(has %s%s) and in the temp directory %s (has %s%s)",
                          need, o->disk_space_factor, size_s, dir, have_db,
                          r->space_free_db < r->space_needed ? ", too little" : "", tmp, have_tmp,
                          r->space_free_tmp < r->space_needed ? ", too little" : "");
}

/* PRAGMA wal_checkpoint(TRUNCATE); busy=1 (a reader holds an old
 * snapshot) is reported, not ignored: the WAL stays large until a retry. */
static void checkpoint_truncate(sqlite3 *db, struct maint_result *r)
{
        sqlite3_stmt *s;
        int rc;

        rc = sqlite3_prepare_v2(db, "PRAGMA wal_checkpoint(TRUNCATE)", -1, &s, NULL);
        if (rc != SQLITE_OK) {
                r->checkpoint_busy = true;
                return;
        }
        rc = sqlite3_step(s);
        r->checkpoint_busy = rc != SQLITE_ROW || sqlite3_column_int(s, 0) != 0;
        sqlite3_finalize(s);
}

static bool is_wal(const struct dbstat *st)
{
        return strcmp(st->journal_mode, "wal") == 0;
}

static enum maint_status read_stats(sqlite3 *db, const char *path, struct dbstat *st, bool *have,
                                    struct maint_result *r)
{
        int rc = dbstat_read_db(db, path, st);

        if (rc != SQLITE_OK)
                return fail_sqlite(r, db, rc, "cannot read statistics");
        *have = true;
        return MAINT_OK;
}

/* An empty file is an empty database to SQLite: writing to it (VACUUM,
 * ANALYZE) would make it a real one with our page size, a choice that is
 * the application's. Nothing to do: SKIPPED. */
static bool empty_database(const struct dbstat *st, struct maint_result *r)
{
        if (st->page_count > 0)
                return false;
        set_status(r, MAINT_SKIPPED, 0, "empty database (0 pages), nothing to do");
        return true;
}

/* After pages were freed: truncate the WAL (it holds the rewritten pages),
 * then the figures after and what was reclaimed. */
static void conclude_shrink(sqlite3 *db, const char *path, struct maint_result *r)
{
        uint64_t was, now;

        if (is_wal(&r->before))
                checkpoint_truncate(db, r);
        if (read_stats(db, path, &r->after, &r->have_after, r) != MAINT_OK)
                return;
        was = r->before.page_count * r->before.page_size;
        now = r->after.page_count * r->after.page_size;
        r->bytes_reclaimed = was > now ? was - now : 0;
}

static void begin(struct maint_result *r, uint64_t *t0)
{
        maint_result_clear(r);
        *t0 = util_now_ms();
}

static enum maint_status finish(const char *path, sqlite3 *db, struct maint_cancel *cancel,
                                struct maint_result *r, uint64_t t0)
{
        db_close(path, db, cancel);
        r->duration_ms = util_now_ms() - t0;
        return r->status;
}

enum maint_status maint_stats(const char *path, const struct maint_opts *o, struct maint_result *r)
{
        sqlite3 *db;
        uint64_t t0;

        begin(r, &t0);
        if (db_open(path, o, NULL, &db, r) == MAINT_OK)
                read_stats(db, path, &r->after, &r->have_after, r);
        return finish(path, db, NULL, r, t0);
}

enum maint_status maint_check(const char *path, const struct maint_opts *o,
                              struct maint_cancel *cancel, struct maint_result *r)
{
        enum integrity_level level = o->integrity == INTEGRITY_NONE ? INTEGRITY_QUICK : o->integrity;
        sqlite3 *db;
        uint64_t t0;

        begin(r, &t0);
        if (db_open(path, o, cancel, &db, r) == MAINT_OK &&
            read_stats(db, path, &r->after, &r->have_after, r) == MAINT_OK)
                run_check(db, level, "", r);
        return finish(path, db, cancel, r, t0);
}

enum maint_status maint_vacuum(const char *path, const struct maint_opts *o,
                               struct maint_cancel *cancel, struct maint_result *r)
{
        sqlite3 *db;
        uint64_t t0;
        int rc;

        begin(r, &t0);
        if (db_open(path, o, cancel, &db, r) != MAINT_OK ||
            read_stats(db, path, &r->before, &r->have_before, r) != MAINT_OK ||
            empty_database(&r->before, r) ||
            /* Corruption first: on a full disk it is still the news. */
            run_check(db, o->integrity, "before VACUUM", r) != MAINT_OK ||
            (!o->skip_space_check && check_space(path, &r->before, o, r) != MAINT_OK))
                return finish(path, db, cancel, r, t0);
        if (cancelled(cancel)) {
                set_status(r, MAINT_INTERRUPTED, SQLITE_INTERRUPT, "stopped before VACUUM");
                return finish(path, db, cancel, r, t0);
        }

        rc = sqlite3_exec(db, "VACUUM", NULL, NULL, NULL);
        if (rc != SQLITE_OK) {
                /* SQLITE_FULL midway leaves the database intact, but in WAL
                 * mode the partial -wal keeps the disk full until the last
                 * connection closes, and the application's may stay open:
                 * truncate it now. */
                fail_sqlite(r, db, rc, "VACUUM failed");
                if (is_wal(&r->before))
                        checkpoint_truncate(db, r);
                /* SQLite can commit the VACUUM and still report SQLITE_FULL
                 * (the temp directory filled at the very end): the figures
                 * after tell what really happened. */
                r->have_after = dbstat_read_db(db, path, &r->after) == SQLITE_OK;
                return finish(path, db, cancel, r, t0);
        }
        if (run_check(db, o->integrity, "after VACUUM", r) == MAINT_OK)
                conclude_shrink(db, path, r);
        return finish(path, db, cancel, r, t0);
}

enum maint_status maint_analyze(const char *path, const struct maint_opts *o,
                                struct maint_cancel *cancel, struct maint_result *r)
{
        char sql[64];
        sqlite3 *db;
        uint64_t t0;
        int rc;

        begin(r, &t0);
        if (db_open(path, o, cancel, &db, r) != MAINT_OK ||
            read_stats(db, path, &r->before, &r->have_before, r) != MAINT_OK || empty_database(&r->before, r))
                return finish(path, db, cancel, r, t0);
        /* ANALYZE is a write transaction that blocks app writers while it
         * runs: analysis_limit keeps it short. */
        snprintf(sql, sizeof(sql), "PRAGMA analysis_limit=%d; ANALYZE;", o->analysis_limit);
        rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
        if (rc != SQLITE_OK)
                fail_sqlite(r, db, rc, "ANALYZE failed");
        else
                read_stats(db, path, &r->after, &r->have_after, r);
        return finish(path, db, cancel, r, t0);
}

/* One PRAGMA incremental_vacuum(N), stepped to SQLITE_DONE: the write lock
 * is held from the first step to the last, so N stays small. */
static int incremental_batch(sqlite3 *db, uint32_t pages)
{
        sqlite3_stmt *s;
        char sql[64];
        int rc;

        snprintf(sql, sizeof(sql), "PRAGMA incremental_vacuum(%u)", pages);
        rc = sqlite3_prepare_v2(db, sql, -1, &s, NULL);
        if (rc != SQLITE_OK)
                return rc;
        while ((rc = sqlite3_step(s)) == SQLITE_ROW)
                ;
        sqlite3_finalize(s);
        return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

enum maint_status maint_incremental_vacuum(const char *path, const struct maint_opts *o,
                                           struct maint_cancel *cancel, struct maint_result *r)
{
        uint32_t batch = o->incremental_batch_pages ? o->incremental_batch_pages : 256;
        struct dbstat now;
        bool have;
        sqlite3 *db;
        uint64_t t0;
        int rc;

        begin(r, &t0);
        if (db_open(path, o, cancel, &db, r) != MAINT_OK ||
            read_stats(db, path, &r->before, &r->have_before, r) != MAINT_OK)
                return finish(path, db, cancel, r, t0);
        if (r->before.auto_vacuum != AUTO_VACUUM_INCREMENTAL) {
                set_status(r, MAINT_CANNOT, 0,
                           "auto_vacuum is %s, not incremental: incremental vacuum frees nothing here",
                           dbstat_auto_vacuum_name(r->before.auto_vacuum));
                return finish(path, db, cancel, r, t0);
        }
        if (run_check(db, o->integrity, "before incremental vacuum", r) != MAINT_OK)
                return finish(path, db, cancel, r, t0);

        now = r->before;
        /* Bounded: each batch frees up to `batch` pages or the loop ends. */
        for (uint64_t round = 0; now.freelist_count > 0 && round <= r->before.freelist_count / batch + 1; round++) {
                if (round > 0)
                        util_sleep_ms(o->incremental_pause_ms);
                if (cancelled(cancel)) {
                        set_status(r, MAINT_INTERRUPTED, SQLITE_INTERRUPT, "stopped between batches");
                        break;
                }
                rc = incremental_batch(db, batch);
                if (rc != SQLITE_OK) {
                        fail_sqlite(r, db, rc, "incremental vacuum failed");
                        break;
                }
                if (read_stats(db, path, &now, &have, r) != MAINT_OK)
                        break;
        }
        /* Batches that committed before a stop or a lock stay freed. */
        if (r->status == MAINT_OK || r->status == MAINT_INTERRUPTED || r->status == MAINT_BUSY)
                conclude_shrink(db, path, r);
        return finish(path, db, cancel, r, t0);
}

void maint_result_clear(struct maint_result *r)
{
        for (size_t i = 0; i < r->n_problems; i++)
                free(r->problems[i]);
        free(r->problems);
        *r = (struct maint_result){ .status = MAINT_OK };
}
