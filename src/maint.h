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
};

enum maint_op {
        MAINT_OP_STATS,
        MAINT_OP_VACUUM,
        MAINT_OP_ANALYZE,
        MAINT_OP_CHECK,
        MAINT_OP_INCREMENTAL_VACUUM,
};

/* Settings of one operation; maint_opts_from_conf() fills them. */
struct maint_opts {
        uint64_t busy_timeout_ms;
        enum integrity_level integrity; /* vacuum: before and after; check: quick or full */
        double disk_space_factor;
        int analysis_limit;
        uint32_t incremental_batch_pages; /* incremental vacuum: pages per transaction */
        uint64_t incremental_pause_ms;    /* and the pause between two */
        bool skip_space_check;            /* the admin knows better (sqlite-maintctl --no-space-check) */
};

/* Lets another thread stop a running operation (sqlite3_interrupt), safely:
 * the connection is published under the mutex. */
struct maint_cancel {
        pthread_mutex_t lock;
        sqlite3 *db;       /* the running operation's connection, under lock */
        atomic_bool requested;
};

struct maint_result {
        enum maint_status status;
        int sqlite_rc;           /* extended result code of the failing call, or 0 */
        char message[512];       /* what went wrong, with SQLite's own text */
        struct dbstat before, after;
        bool have_before, have_after;
        uint64_t bytes_reclaimed;
        uint64_t duration_ms;
        bool checkpoint_busy;    /* wal_checkpoint(TRUNCATE) reported busy=1 */
        uint64_t space_needed;   /* the space check's figures (bytes) */
        uint64_t space_free_db, space_free_tmp;
        char tmp_dir[256];
        char **problems;         /* check: the rows that are not "ok" */
        size_t n_problems;
};

/* Process-wide SQLite setup (heap limit); call once before any operation. */
int maint_init(void);

void maint_opts_from_conf(struct maint_opts *o, const struct vacuum_conf *v,
                          const struct analyze_conf *a, const struct retry_conf *r);

int maint_cancel_init(struct maint_cancel *c);
void maint_cancel_destroy(struct maint_cancel *c);
void maint_cancel_request(struct maint_cancel *c);

/* Each returns r->status and fills r, which must be zeroed or have been
 * used before (its old contents are freed); cancel may be NULL. */
enum maint_status maint_stats(const char *path, const struct maint_opts *o, struct maint_result *r);
enum maint_status maint_vacuum(const char *path, const struct maint_opts *o,
                               struct maint_cancel *cancel, struct maint_result *r);
enum maint_status maint_analyze(const char *path, const struct maint_opts *o,
                                struct maint_cancel *cancel, struct maint_result *r);
enum maint_status maint_check(const char *path, const struct maint_opts *o,
                              struct maint_cancel *cancel, struct maint_result *r);
enum maint_status maint_incremental_vacuum(const char *path, const struct maint_opts *o,
                                           struct maint_cancel *cancel, struct maint_result *r);

void maint_result_clear(struct maint_result *r);

/* The directory SQLite puts temp files in (SQLITE_TMPDIR, TMPDIR, /var/tmp,
 * /usr/tmp, /tmp, .), as SQLite's unix VFS chooses it. */
const char *maint_temp_dir(void);

const char *maint_status_name(enum maint_status s);   /* "ok", "busy", "not_a_database", ... */
const char *maint_op_name(enum maint_op op);          /* "vacuum", "incremental_vacuum", ... */
enum maint_status maint_classify(int sqlite_rc, const char *errmsg);
