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
#include <sys/queue.h>
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
        uint64_t mnt_id; /* statx's: a bind mount of it elsewhere is another */
        int wd;          /* its inotify watch (targets_notify()), -1 without one */
        bool rewatched;  /* this expansion found it under another watch: its files may have changed */
        bool seen;
};

/* Where a database is, one value (docs/DESIGN.md, "A target's states").
 * The manager moves a target from one to the next, and keeps each state's
 * targets in one list (in brackets):
 *
 *   IDLE         polled in its turn: its header read, then decide()
 *   STAT_QUEUED  [statq] its header needs SQLite (WAL): a precise read waits
 *   STAT_RUNNING [running] that read runs in a job process
 *   QUEUED       [queue] maintenance decided, waiting for a slot, its
 *                window, or its backoff (retry_at) after a lock conflict
 *   RUNNING      [running] its job runs
 *   HELD         left alone: until the file changes or hold_until, or
 *                (after a time limit) until hold_until whatever the file does
 *   REMOVED      [running] dropped while its job ran: freed when it ends
 *
 *   IDLE -> QUEUED | STAT_QUEUED | HELD        (a poll)
 *   STAT_QUEUED -> STAT_RUNNING | IDLE         (dispatch; the file in use, stopping)
 *   STAT_RUNNING -> IDLE -> QUEUED | HELD      (its figures decided on)
 *   QUEUED -> RUNNING | IDLE                   (dispatch; the window closed, stopping)
 *   RUNNING -> IDLE | QUEUED | HELD            (done; a lock conflict backs off; failed)
 *   HELD -> IDLE                               (the file changed, the hold ran out, a reload)
 *   STAT_RUNNING | RUNNING -> REMOVED          (gone from the configuration or the disk)
 */
enum target_state {
        TARGET_IDLE,
        TARGET_STAT_QUEUED,
        TARGET_STAT_RUNNING,
        TARGET_QUEUED,
        TARGET_RUNNING,
        TARGET_HELD,
        TARGET_REMOVED,
};

/* What a target's jobs and failures left to remember: out of line, so
 * that a database no job has touched costs only struct target (a host
 * watching 100,000 databases keeps every byte of struct target 100,000
 * times: docs/PERFORMANCE.md, memory). */
struct target_memo {
        /* HELD: until the file changes from hold_id (when hold_on_change)
         * or until hold_until (monotonic ms; 0 = no end), the first of them. */
        struct file_id hold_id;
        bool hold_on_change;
        uint64_t hold_until;
        int timeouts;             /* jobs in a row stopped at their time limit */

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
        /* HELD: why (the result that held it). */
        enum maint_status hold_status;
        int64_t last_check_ms;    /* wall clock ms of the last check that passed (alone or around a VACUUM) */
        /* The last job of each operation (enum maint_op), ended at ms (0: none since start). */
        struct target_last {
                int64_t ms;
                enum maint_status status;
                uint64_t given_back;
        } last[MAINT_OP_DEEP_SCAN + 1];
        int job_failures;         /* jobs that failed in a row (0 after a success) */
};

struct target {
        char *path;
        const char *name;         /* the file's name: after the last slash of path */
        struct tdir *dir;         /* its directory, NULL while that is missing */
        const struct db_conf *dc; /* the matching entry of the conf in force */
        uint32_t hash;
        enum target_state state;
        struct sched_history hist;
        struct dbstat stat;

        /* Its -wal and -journal as the last directory listing and inotify
         * events since tell (known only while its directory is watched,
         * or in --once); and whether its files may have changed since
         * their last read (clean, below): a clean target is not read again
         * (its last figures stand) until an event, a full sweep or a reload. */
        struct dbstat_sides sides;
        uint64_t changes;         /* events that named its files, so far */
        /* While clean: the last decision stands until this (wall clock ms;
         * 0: decide again), the next time a timer of its comes due. */
        int64_t quiet_until;

        TAILQ_ENTRY(target) link;       /* in its state's list, if it has one */
        TAILQ_ENTRY(target) round_link; /* in this poll's round, while in_round */
        struct job *job;          /* running (STAT_RUNNING, RUNNING, REMOVED), or NULL */
        dev_t dev;                /* the file as the last poll found it (st_dev, st_ino) */
        ino_t ino;
        enum maint_op op;         /* QUEUED: the operation */
        enum sched_reason reason;
        int attempt;              /* busy results in a row */
        int stat_busy;            /* polls in a row whose statistics read met a lock */
        uint64_t retry_at;        /* QUEUED: monotonic ms; not before */

        /* What its jobs and failures left to remember, NULL until one did:
         * most databases never need it (target_memo()). */
        struct target_memo *memo;

        enum sched_reason logged_reason; /* the last decision logged at INFO */
        /* (flags together: a hundred thousand targets, no padding between) */
        bool have_stat;
        bool clean;
        bool in_round;
        bool urgent;              /* QUEUED: past the urgent threshold */
        bool reported_missing;
        bool seen;                /* matched by this expansion */
        bool explicit_path;       /* configured as a plain path, not a glob */
};

TAILQ_HEAD(target_list, target);

/* One databases: entry, with the admin's part of its path resolved once
 * when the configuration loads (targets_configure). */
struct entry_root {
        const struct db_conf *dc;
        size_t prefix_len;  /* the admin's part: dc->path up to the slash before the first glob component */
        char *real;         /* that part, its symbolic links resolved; NULL while it does not exist */
        bool capped;        /* reported: it matched more than limits.max_matches */
        uint64_t watched;   /* databases it watched after the last expansion (at most max_matches) */
};

/* A directory the walk read or descends from, watched with inotify: an
 * event naming name (a glob component, or a plain one) is for this walk. */
struct watch_entry {
        int wd;
        char *dir;  /* the admin's spelling, as the targets' paths */
        char *name; /* the component below dir */
        bool glob;  /* name holds glob characters (fnmatch) */
        bool last;  /* name is the last component: it names databases */
};

struct targets {
        struct target **v; /* sorted by path */
        size_t n, cap;
        struct tdir **dirs; /* sorted by path */
        size_t n_dirs, cap_dirs;
        struct entry_root *roots;
        size_t n_roots;
        uint64_t generation; /* one more at each targets_configure() */
        int notify_fd;       /* inotify's (targets_notify_open()), -1 without */
        struct watch_entry *watches; /* of the last expansion applied, sorted by wd */
        size_t n_watches;
        uint64_t seq;        /* events applied so far (targets_notify()) */
};

void targets_init(struct targets *ts);
void targets_clear(struct targets *ts);
struct target *targets_find(const struct targets *ts, const char *path);
/* Find or add; NULL on allocation failure. */
struct target *targets_get(struct targets *ts, const char *path, bool *created);
/* A target for path, in no set; NULL on allocation failure. */
struct target *target_new(const char *path);
/* t's memo, allocated (zeroed) the first time; NULL on allocation failure. */
struct target_memo *target_memo(struct target *t);
/* t's memo to read: all zero (nothing remembered) until one was written. */
const struct target_memo *target_memo_get(const struct target *t);
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

/* An expansion of every databases: entry, in two steps, so that the file
 * system is walked off the loop thread:
 *
 * targets_listing_new() (loop thread) copies the entries' paths;
 * targets_list() (any thread, touching nothing but the listing) walks
 * them: from each admin's part, opened anew component by component
 * without following a symbolic link, each further component is opened the
 * same way or, when it holds glob characters, matched against the
 * directory's entries (fnmatch with FNM_PERIOD, as glob(3)); side files
 * (-wal, -shm, -journal), directories and symbolic links never match. It
 * records what it meets in order, keeping each matching directory open
 * (one fstat each, none per file);
 * targets_apply() (loop thread) marks every target unseen, then applies
 * the records (the first entry that matches a path has it;
 * limits.max_matches: what is watched stays, newcomers wait), reporting
 * new targets through added() and paths not followed through refused().
 * Afterwards the caller deals with the unseen targets, whose dir is NULL.
 * It returns 0, -ENOMEM, or -ESTALE when the listing was made before the
 * last targets_configure() (nothing is changed: walk again). */
struct listing;
struct listing *targets_listing_new(const struct targets *ts);
void targets_list(struct listing *l);
bool targets_listing_stale(const struct targets *ts, const struct listing *l);
int targets_apply(struct targets *ts, struct listing *l, const struct targets_events *ev);
struct listing *targets_listing_free(struct listing *l);

/* All three at once, on the calling thread (at start, at a reload). */
int targets_expand(struct targets *ts, const struct targets_events *ev);

/* A listing not applied (stale, failed): freed, and the inotify watches
 * its walk set up that the targets do not use removed. */
struct listing *targets_listing_discard(struct targets *ts, struct listing *l);

/* ---- change notification (inotify(7)) -------------------------------------
 *
 * With targets_notify_open(), each walk sets an inotify watch on every
 * directory it reads or descends from, before it reads it (by its open
 * descriptor, through /proc/self/fd: the directory walked, not whatever
 * its name means later), so nothing that changes after the walk's look
 * goes unseen. Not on a file system whose changes may come from another
 * host (NFS, SMB/CIFS, FUSE, Ceph, 9p, AFS, GFS2, OCFS2, Lustre: inotify
 * sees local changes only), nor past the kernel's max_user_watches: a
 * listing with such a directory is incomplete, and the caller walks and
 * reads everything at every poll as it would without inotify.
 *
 * targets_notify_open(): 0, or -errno from inotify_init1().
 * targets_listing_complete(): every directory of the walk watched, every
 * entry's admin part opened and walked to the end (none past
 * limits.max_matches, no plain path missing its directory): no walk is
 * needed until an event says so.
 * targets_notify(): one event applied: the target it names marked not
 * clean (and its -wal/-journal presence updated). Returns NOTIFY_WALK
 * when the configured paths may match something else now (a matching
 * name created, deleted or moved; a watched directory gone or moved; the
 * event queue overflowed: every target is then marked not clean too). */
#define NOTIFY_WALK 1u
int targets_notify_open(struct targets *ts);
bool targets_listing_complete(const struct listing *l);
/* Directories the walk did not watch: on a remote file system, and
 * refused by inotify_add_watch() (why: its errno, ENOSPC for
 * fs.inotify.max_user_watches). */
void targets_listing_unwatched(const struct listing *l, size_t *remote, size_t *refused, int *why);
struct inotify_event;
unsigned targets_notify(struct targets *ts, const struct inotify_event *ev);
