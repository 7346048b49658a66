/* SPDX-License-Identifier: MIT */
/* maint: maintenance operations on one database, each with its safety checks.
 * Every function here blocks (SQLite, file system): call from a worker. */
#pragma once

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sqlite3.h>

#include "conf.h"
#include "dbstat.h"
#include "deepscan.h"
#include "util.h"
#include "vtabs.h"

enum maint_status {
        MAINT_OK,
        MAINT_SKIPPED,      /* nothing to do (below threshold, nothing to free) */
        MAINT_BUSY,         /* lock conflict: retry later */
        MAINT_CORRUPT,      /* a check failed or SQLite said SQLITE_CORRUPT */
        MAINT_NOTADB,       /* not an SQLite database */
        MAINT_CANNOT,       /* healthy maybe, but we cannot maintain it (missing app function, schema we cannot load, wrong mode) */
        MAINT_NOSPACE,      /* refused by the space check, or SQLITE_FULL */
        MAINT_IOERR,
        MAINT_PERMISSION,   /* cannot open or write: permissions, read-only, symlink */
        MAINT_MISSING,      /* the file does not exist (any more) */
        MAINT_INTERRUPTED,  /* stopped on request; the database is unchanged */
        MAINT_ERROR,        /* anything else */
        MAINT_ROWIDS,       /* VACUUM refused: it would give rows of some tables new rowids */
        MAINT_HOT_JOURNAL,  /* a crashed transaction awaits rollback: a read-only look cannot see the database */
        MAINT_TIMEOUT,      /* stopped at its time limit (a job process); the database is intact */
        MAINT_HOOK_REFUSED, /* vacuum.before_vacuum exited non-zero (or could not run): the VACUUM was skipped */
};

enum maint_op {
        MAINT_OP_STATS,
        MAINT_OP_VACUUM,
        MAINT_OP_ANALYZE,
        MAINT_OP_CHECK,
        MAINT_OP_INCREMENTAL_VACUUM,
        MAINT_OP_CHECKPOINT,
        MAINT_OP_DEEP_SCAN,
};

/* Where a running VACUUM job is (sqlite-maintctl status, STATUS=). SQLite
 * copies the database into a temporary one and back in one VACUUM
 * statement: the two halves are one phase here. */
enum maint_phase {
        MAINT_PHASE_NONE,
        MAINT_PHASE_BEFORE_HOOK,   /* vacuum.before_vacuum runs */
        MAINT_PHASE_CHECKING,      /* statistics, the integrity check, the rowid guard, the space check */
        MAINT_PHASE_COPYING,       /* the VACUUM statement */
        MAINT_PHASE_CHECKING_AFTER,
        MAINT_PHASE_CHECKPOINT,    /* the -wal truncated */
        MAINT_PHASE_AFTER_HOOK,
};
const char *maint_phase_name(enum maint_phase p); /* "checking", "copying", ... */

/* Settings of one operation; maint_opts_from_conf() fills them. */
struct maint_opts {
        uint64_t busy_timeout_ms;
        enum integrity_level integrity; /* vacuum: before and after; check: quick or full */
        double disk_space_factor;
        int analysis_limit;
        uint32_t incremental_batch_pages; /* incremental vacuum: pages per transaction */
        uint64_t incremental_pause_ms;    /* and the pause between two */
        bool skip_space_check;            /* the admin knows better (sqlite-maintctl --no-space-check) */
        bool allow_rowid_change;          /* vacuum: run even when rowids would change */
        /* analyze: a table is analyzed when its statistics are missing or
         * its row count moved by more than threshold + scale_factor x the
         * count they were gathered at (PostgreSQL's autovacuum_analyze_*) */
        uint64_t analyze_threshold_rows;
        double analyze_scale_factor;      /* 0.1 for 10% */
        uint64_t analyze_large_table_rows; /* analysis_limit only above this many rows */
        bool analyze_all;                 /* every table, stale or not (sqlite-maintctl analyze --force) */
        const char *display_path;         /* the database's path for messages (it may be opened by a relative name) */
        /* vacuum and incremental vacuum: vacuum.before_vacuum and
         * after_vacuum ("" for none), run by the job process (hook.h) */
        char before_vacuum[CONF_COMMAND_MAX];
        char after_vacuum[CONF_COMMAND_MAX];
        uint64_t hook_timeout_ms;
        /* analyze: the row count the statistics of table were gathered at,
         * when this caller knows it better than sqlite_stat1 does (the
         * daemon remembers the exact count behind a sampled ANALYZE); stat
         * is the table's sqlite_stat1 text now. Returns true and *rows when
         * known. May be NULL. */
        bool (*analyze_baseline)(void *userdata, const char *table, const char *stat, uint64_t *rows);
        void *analyze_baseline_userdata;
        /* vacuum: told each phase as it begins. May be NULL. */
        void (*phase)(enum maint_phase p);
};

/* Lets another thread stop a running operation (sqlite3_interrupt), safely:
 * the connection is published under the mutex. */
struct maint_cancel {
        pthread_mutex_t lock;
        sqlite3 *db;       /* the running operation's connection, under lock */
        atomic_bool requested;
};

/* A table an operation names: what VACUUM would do to its rowids, what
 * ANALYZE did with it. */
enum maint_table_verdict {
        TABLE_ROWIDS_CHANGE,  /* vacuum: no INTEGER PRIMARY KEY and no index; rowids not 1..N */
        TABLE_ANALYZED,       /* analyze: statistics gathered in full */
        TABLE_ANALYZED_LIMITED, /* analyze: gathered under analysis_limit (a large table) */
        TABLE_MISSING_EMPTY,  /* analyze: no rows and no statistics: nothing to gather */
        TABLE_UNCHANGED,      /* analyze: statistics current; not rewritten */
};

struct maint_table {
        char *name;
        enum maint_table_verdict verdict;
        uint64_t rows;           /* rows now */
        uint64_t baseline_rows;  /* analyze: the count the old statistics describe */
        int64_t rowid_min, rowid_max; /* vacuum: the rowids that would become 1..rows */
        char *stat;              /* analyze: the table's sqlite_stat1 text after (may be NULL) */
};

/* A full-text or R*Tree table a full check looked at, and what it found. */
struct maint_vtab {
        char *name;
        enum vtab_kind kind;
        enum vtab_verdict verdict;
        char *why;               /* unless ok: SQLite's words (corrupt) or the reason it cannot be checked */
};

struct maint_result {
        enum maint_status status;
        int sqlite_rc;           /* extended result code of the failing call, or 0 */
        char message[2048];      /* what went wrong, with SQLite's own text */
        struct dbstat before, after;
        bool have_before, have_after;
        /* vacuum, incremental vacuum: the disk space (allocated blocks, as
         * du counts) of the database file, its -wal and its -journal when
         * the operation began and when it ended, and what the file system
         * got back (before - after, never below 0); and the page-based
         * figure: (page_count before - after) x page_size */
        uint64_t disk_bytes_before, disk_bytes_after;
        uint64_t bytes_reclaimed;
        uint64_t page_bytes_reclaimed;
        uint64_t duration_ms;
        bool checkpoint_busy;    /* wal_checkpoint(TRUNCATE) reported busy=1 */
        bool check_after_skipped; /* VACUUM done, but the check after it never got its read lock (message says so) */
        uint64_t space_needed;   /* the space check's figures (bytes): beside the database (both, when one filesystem) */
        uint64_t space_needed_tmp; /* in the temp directory */
        uint64_t space_free_db, space_free_tmp;
        char tmp_dir[256];
        char **problems;         /* check: each finding once (a line of integrity_check's report, of
                                    rtreecheck()'s, a full-text index's error) */
        size_t n_problems;
        struct maint_vtab *vtabs; /* a full check: each full-text and R*Tree table's verdict */
        size_t n_vtabs;
        struct deep_stats deep;   /* deep scan: the figures of every b-tree */
        bool have_deep;
        struct maint_table *tables; /* vacuum: rowids that change; analyze: each table's verdict */
        size_t n_tables;
        uint64_t wal_frames_left; /* checkpoint: frames readers kept from being checkpointed */
        uint64_t wal_bytes_before, wal_bytes_after; /* checkpoint: size of the -wal */
        bool wrote;               /* the operation changed the database (ANALYZE of some table, ...) */
        bool rolled_back_journal; /* it rolled back a hot journal first (an operation that writes) */
        size_t unkeyed_tables;    /* vacuum: rowid tables with no PRIMARY KEY and no index, whose rowids a
                                     VACUUM may renumber (those it would are in tables) */
        struct file_id db_id, wal_id; /* stats, analyze, deep scan: the files as it found them before it looked (wal_id zero: no -wal; stats: both zero when a write in the same clock tick could hide) */
};

/* Process-wide SQLite setup (heap limit); call once before any operation. */
int maint_init(void);

/* Open databases through these VFSes (dirvfs.c registers them in a job
 * process: names relative to its working directory); the default: SQLite's
 * "unix" and "unix-excl". */
void maint_set_vfs(const char *normal, const char *excl);

void maint_opts_from_conf(struct maint_opts *o, const struct vacuum_conf *v,
                          const struct analyze_conf *a, const struct retry_conf *r);

int maint_cancel_init(struct maint_cancel *c);
void maint_cancel_destroy(struct maint_cancel *c);
void maint_cancel_request(struct maint_cancel *c);

/* Each returns r->status and fills r, which must be zeroed or have been
 * used before (its old contents are freed); cancel may be NULL.
 *
 * Reads never write. maint_stats and maint_check leave every file as they
 * found it (database, -wal, -shm: no byte changed, none created or
 * removed): rollback-mode databases are opened read-only; a WAL database
 * with its -shm through that -shm read-only (readonly_shm, so not even a
 * reader mark is set); a WAL database without a -wal as the immutable file
 * it is then, the read verified afterwards against the file's modification
 * time and retried if the file moved; a -wal without its -shm (a restored
 * copy: no application has it open) from the -wal itself (walread) for
 * statistics, and for a check under SQLite's unix-excl VFS, whose
 * exclusive lock keeps applications out while it reads. A hot journal
 * cannot be read without rolling it back: MAINT_HOT_JOURNAL. The other
 * operations write, and only once their checks are done: the checks run
 * on a read-only connection first; a hot journal they meet is rolled back
 * (rolled_back_journal), as any read-write open would. */
enum maint_status maint_stats(const char *path, const struct maint_opts *o, struct maint_result *r);
/* Refused (MAINT_ROWIDS, r->tables naming each table) when it would give
 * some table's rows new rowids, unless o->allow_rowid_change; then
 * r->tables names the tables it renumbered. The rule, from vacuum.c and
 * insert.c xferOptimization() of SQLite 3.40: each table is copied with
 * INSERT INTO ... SELECT *, which keeps the rowids of a table with an
 * INTEGER PRIMARY KEY or any index (its own or the automatic one of a
 * PRIMARY KEY or UNIQUE constraint) and numbers the rows of any other
 * rowid table 1..N in rowid order; tables named sqlite_* are SQLite's. */
enum maint_status maint_vacuum(const char *path, const struct maint_opts *o,
                               struct maint_cancel *cancel, struct maint_result *r);
/* ANALYZE of the tables whose statistics are missing or stale (see
 * maint_opts), each in its own statement, so the write lock is held per
 * table; a table of at most analyze_large_table_rows rows without
 * analysis_limit. r->tables holds every table's verdict; r->wrote says
 * whether any statistics were written. */
enum maint_status maint_analyze(const char *path, const struct maint_opts *o,
                                struct maint_cancel *cancel, struct maint_result *r);
/* quick_check, or integrity_check and the full-text index checks when
 * o->integrity is full. SQLite's full-text 'integrity-check' command is an
 * INSERT, so it runs on a private snapshot (the backup API into a temp
 * database, in the temp directory) rather than on the database. */
enum maint_status maint_check(const char *path, const struct maint_opts *o,
                              struct maint_cancel *cancel, struct maint_result *r);
/* The deep scan (deepscan.h): every page read through dbstat, without a
 * lock on a rollback-mode database (an application could not commit for
 * as long as a SHARED lock is held), the read verified afterwards and
 * tried again if the file changed meanwhile. r->deep on MAINT_OK. */
enum maint_status maint_deep_scan(const char *path, const struct maint_opts *o, struct maint_cancel *cancel,
                                  struct maint_result *r);
enum maint_status maint_incremental_vacuum(const char *path, const struct maint_opts *o,
                                           struct maint_cancel *cancel, struct maint_result *r);
/* PRAGMA wal_checkpoint(PASSIVE), which never waits on the application,
 * then TRUNCATE under the short busy timeout: MAINT_OK with the -wal
 * truncated, MAINT_BUSY with wal_frames_left when readers hold frames,
 * MAINT_SKIPPED when the database is not in WAL mode. */
enum maint_status maint_checkpoint(const char *path, const struct maint_opts *o,
                                   struct maint_cancel *cancel, struct maint_result *r);

void maint_result_clear(struct maint_result *r);


const char *maint_status_name(enum maint_status s);   /* "ok", "busy", "not_a_database", ... */
const char *maint_op_name(enum maint_op op);          /* "vacuum", "incremental_vacuum", ... */
/* The bytes a job of op gave back to the file system: a VACUUM's
 * bytes_reclaimed, a checkpoint's -wal shrinking (never less than 0: the
 * application may have written since); 0 for the others. */
uint64_t maint_bytes_given_back(enum maint_op op, const struct maint_result *r);
const char *maint_table_verdict_name(enum maint_table_verdict v); /* "analyzed", "unchanged", ... */
