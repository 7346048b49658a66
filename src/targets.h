/* SPDX-License-Identifier: MIT */
/* targets: the databases being watched, expanded from the configured paths
 * and globs at every poll, kept by path across polls and reloads. Loop
 * thread only. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "conf.h"
#include "dbstat.h"
#include "maint.h"
#include "schedule.h"
#include "util.h"

struct job;

struct target {
        char *path;
        const struct db_conf *dc; /* the matching entry of the conf in force */
        uint32_t hash;
        struct sched_history hist;
        struct dbstat stat;
        bool have_stat;

        struct job *job;          /* running, or NULL */
        dev_t job_dev;            /* the file its job has open (st_dev, st_ino) */
        ino_t job_ino;
        bool queued;              /* in the manager's queue, waiting to run */
        bool want_precise;        /* waiting for a precise statistics read */
        enum maint_op op;         /* queued operation */
        enum sched_reason reason;
        bool urgent;
        int attempt;              /* busy results in a row */
        int stat_busy;            /* polls in a row whose statistics read met a lock */
        uint64_t retry_at;        /* monotonic ms; not before */

        bool held;                /* failed: left alone until the file changes */
        struct file_id held_id;
        uint64_t held_until;      /* monotonic ms; 0 = until the file changes */

        /* VACUUM refused because it would renumber rowids: not tried again
         * until the schema changes (its cookie) or a reload. */
        bool rowid_hold;
        uint32_t rowid_hold_cookie;
        /* The -wal: a checkpoint owed since a VACUUM, and the backoff of
         * checkpoints that readers keep from finishing. */
        bool wal_owed;
        int ckpt_attempt;
        uint64_t ckpt_retry_at;   /* monotonic ms; not before */
        int64_t ckpt_busy_since;  /* wall clock ms of the first busy one; 0 = none */
        int64_t ckpt_warned;      /* wall clock ms of the last warning */
        /* The files as the last ANALYZE left them: unchanged, nothing is stale. */
        struct file_id analyzed_db, analyzed_wal;
        bool analyzed_known;

        enum sched_reason logged_reason; /* the last decision logged at INFO */
        bool reported_missing;
        bool seen;                /* matched by this expansion */
        bool explicit_path;       /* configured as a plain path, not a glob */
        bool removed;             /* dropped while its job runs: free when it ends */
};

struct targets {
        struct target **v; /* sorted by path */
        size_t n, cap;
};

void targets_init(struct targets *ts);
void targets_clear(struct targets *ts);
struct target *targets_find(const struct targets *ts, const char *path);
/* Find or add; NULL on allocation failure. */
struct target *targets_get(struct targets *ts, const char *path, bool *created);
/* Take t out of the set (it is not freed). */
void targets_remove(struct targets *ts, struct target *t);
struct target *target_free(struct target *t);

/* Mark every target unseen, then expand each databases: entry (first entry
 * wins a path), marking and adding targets. New ones are reported through
 * added(); afterwards the caller deals with the unseen ones. Side files
 * (-wal, -shm, -journal) and directories never match. Returns 0 or -ENOMEM. */
int targets_expand(struct targets *ts, const struct conf *c,
                   void (*added)(void *userdata, struct target *t), void *userdata);

bool target_is_side_file(const char *path);
