/* SPDX-License-Identifier: MIT */
/* targets: the databases being watched, expanded from the configured paths
 * and globs at every poll, kept by path across polls and reloads. Each
 * lives in a directory opened without following a symbolic link below the
 * part of its configured path that the admin wrote (docs/DESIGN.md,
 * "Threat model"): every later look at it goes through that descriptor.
 * Loop thread only. */
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

/* A directory databases were found in, opened for this expansion. */
struct tdir {
        char *path;   /* as configured (the admin's spelling), for messages */
        int fd;       /* O_RDONLY | O_DIRECTORY, no symbolic link followed below the admin's part */
        dev_t dev;
        ino_t ino;
        bool seen;
};

struct target {
        char *path;
        const char *name;         /* the file's name: after the last slash of path */
        struct tdir *dir;         /* its directory, NULL while that is missing */
        const struct db_conf *dc; /* the matching entry of the conf in force */
        uint32_t hash;
        struct sched_history hist;
        struct dbstat stat;
        bool have_stat;

        struct job *job;          /* running, or NULL */
        dev_t dev;                /* the file as the last poll found it (st_dev, st_ino) */
        ino_t ino;
        bool queued;              /* in the manager's queue, waiting to run */
        bool want_precise;        /* waiting for a precise statistics read */
        enum maint_op op;         /* queued operation */
        enum sched_reason reason;
        bool urgent;
        int attempt;              /* busy results in a row */
        int stat_busy;            /* polls in a row whose statistics read met a lock */
        uint64_t retry_at;        /* monotonic ms; not before */

        int timeouts;             /* jobs in a row stopped at their time limit */
        uint64_t not_before;      /* monotonic ms: no look before (after a time limit) */
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
        /* The files as the last precise statistics read found them:
         * unchanged, its figures stand (re-read at least hourly). */
        struct file_id precise_db, precise_wal;
        bool precise_known;
        uint64_t precise_at;      /* monotonic ms of that read */
        /* The files as the last deep scan found them: unchanged, it is not repeated. */
        struct file_id deep_db, deep_wal;
        bool deep_known;

        enum sched_reason logged_reason; /* the last decision logged at INFO */
        bool reported_missing;
        bool seen;                /* matched by this expansion */
        bool explicit_path;       /* configured as a plain path, not a glob */
        bool removed;             /* dropped while its job runs: free when it ends */
};

/* One databases: entry, with the admin's part of its path resolved once
 * when the configuration loads (targets_configure). */
struct entry_root {
        const struct db_conf *dc;
        size_t prefix_len;  /* the admin's part: dc->path up to the slash before the first glob component */
        char *real;         /* that part, its symbolic links resolved; NULL while it does not exist */
        bool capped;        /* reported: it matched more than limits.max_matches */
        uint64_t watched;   /* databases it watched after the last expansion (at most max_matches) */
};

struct targets {
        struct target **v; /* sorted by path */
        size_t n, cap;
        struct tdir **dirs; /* sorted by path */
        size_t n_dirs, cap_dirs;
        struct entry_root *roots;
        size_t n_roots;
};

void targets_init(struct targets *ts);
void targets_clear(struct targets *ts);
struct target *targets_find(const struct targets *ts, const char *path);
/* Find or add; NULL on allocation failure. */
struct target *targets_get(struct targets *ts, const char *path, bool *created);
/* Take t out of the set (it is not freed). */
void targets_remove(struct targets *ts, struct target *t);
struct target *target_free(struct target *t);

/* The configuration in force: each entry's admin part (the directories
 * before its first glob component; for a plain path, its directory) is
 * resolved now, following the admin's symbolic links, and never again
 * until the next call (a reload). Returns 0 or -ENOMEM. */
int targets_configure(struct targets *ts, const struct conf *c);

struct targets_events {
        void (*added)(void *userdata, struct target *t);
        /* a path not followed, and why: a symbolic link below the admin's
         * part, a matched entry that is not a regular file; and, with path
         * NULL, an entry that matched more than its limits.max_matches */
        void (*refused)(void *userdata, const struct db_conf *dc, const char *path, const char *why);
        void *userdata;
};

/* Mark every target unseen, then expand each databases: entry (first entry
 * wins a path), marking and adding targets: from the admin's part, opened
 * anew component by component without following a symbolic link, each
 * further component is opened the same way or, when it holds glob
 * characters, matched against the directory's entries (fnmatch with
 * FNM_PERIOD, as glob(3)). Side files (-wal, -shm, -journal), directories
 * and symbolic links never match. New targets are reported through added();
 * afterwards the caller deals with the unseen ones, whose dir is NULL.
 * Returns 0 or -ENOMEM. */
int targets_expand(struct targets *ts, const struct targets_events *ev);
