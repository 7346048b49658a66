/* SPDX-License-Identifier: MIT */
/* schedule (sched_*): pure scheduling decisions. No clock, no I/O: every input is an
 * argument, so each rule is unit-tested at its edges. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conf.h"
#include "dbstat.h"
#include "maint.h"

enum sched_action {
        SCHED_NONE,
        SCHED_VACUUM,
        SCHED_INCREMENTAL_VACUUM,
};

enum sched_reason {
        SCHED_REASON_NONE,
        SCHED_REASON_THRESHOLD,   /* at or above threshold, inside the window */
        SCHED_REASON_URGENT,      /* at or above urgent_threshold: window or not */
        SCHED_REASON_TIMER,       /* analyze interval elapsed */
        SCHED_REASON_WAIT_WINDOW, /* due, but outside the window */
        SCHED_REASON_MIN_INTERVAL,/* due, but vacuumed too recently */
        SCHED_REASON_MIN_RECLAIM, /* at threshold, but too little to reclaim */
        SCHED_REASON_BELOW,       /* below threshold */
        SCHED_REASON_WAL_SIZE,    /* checkpoint: the -wal is past wal_size_limit or wal_size_ratio */
        SCHED_REASON_AFTER_VACUUM,/* checkpoint: owed since a VACUUM whose checkpoint was busy */
        SCHED_REASON_ROWIDS,      /* due, but refused: it would renumber rowids (until the schema changes) */
        SCHED_REASON_UNUSED,      /* a deep scan found unused space inside pages at or above unused_threshold */
        SCHED_REASON_REQUESTED,   /* an admin asked for it (sqlite-maintctl run) */
        SCHED_REASON_WINDOW_SHORT,/* due in the window, but its estimated duration does not fit what is left of it */
};

/* What is remembered of one database (state module persists the times). */
struct sched_history {
        int64_t last_vacuum_ms;  /* wall clock, 0 = never */
        int64_t last_analyze_ms; /* wall clock, 0 = never */
        int64_t first_seen_ms;   /* wall clock: when the daemon first saw it */
        int64_t last_deep_scan_ms; /* wall clock, 0 = never */
        /* the last deep scan's figures; not known again after a VACUUM */
        bool deep_known;
        double deep_unused_percent;       /* deep_unused_percent() of all b-trees */
        uint64_t deep_reclaimable_bytes;  /* deep_stats.reclaimable_bytes */
        uint64_t deep_page_count;         /* the database's pages when it was scanned */
};

struct sched_decision {
        enum sched_action action;
        enum sched_reason reason;
        bool unused; /* decided by the deep scan's unused space, not the freelist */
};

/* minute_of_day: local time, 0..1439. */
bool sched_in_window(const struct window *w, int minute_of_day);
/* Minutes from minute_of_day until the window opens (0 when inside). Works on
 * time of day only, so a DST jump cannot make it skip or double a window: the
 * manager re-evaluates at every poll anyway. */
int sched_minutes_until_window(const struct window *w, int minute_of_day);

/* The freelist rule alone: SCHED_REASON_BELOW under vacuum.threshold,
 * SCHED_REASON_MIN_RECLAIM with less than min_reclaim bytes on the
 * freelist, else SCHED_REASON_THRESHOLD. sched_vacuum() starts with it;
 * sqlite-maintctl vacuum (without --force) asks it alone. */
enum sched_reason sched_threshold(const struct dbstat *st, const struct vacuum_conf *vc);

/* Incremental or full: SCHED_INCREMENTAL_VACUUM for vacuum.mode
 * incremental on an auto_vacuum=INCREMENTAL database (it only frees the
 * pages of such a database), SCHED_VACUUM for any other. */
enum sched_action sched_vacuum_action(const struct dbstat *st, const struct vacuum_conf *vc);

/* The VACUUM decision for one database: fragmentation at or above
 * threshold (urgent_threshold: window or not) with min_reclaim bytes on
 * the freelist; or, in the window and for a full VACUUM, the last deep
 * scan's unused_percent at or above unused_threshold with min_reclaim
 * bytes it could give back (SCHED_REASON_UNUSED) unless the database
 * shrank since by more than half of those (packed by someone else); both
 * under min_interval. */
struct sched_decision sched_vacuum(const struct dbstat *st, const struct vacuum_conf *vc,
                                   const struct sched_history *h, int64_t now_ms, int minute_of_day,
                                   bool ignore_window);

/* Minutes from minute_of_day until the window closes: 0 outside it,
 * INT32_MAX for a window that is always open. */
int sched_minutes_until_window_end(const struct window *w, int minute_of_day);

/* When the next deep scan is due (wall clock ms): the last plus
 * deep_scan.interval; never scanned: first_seen plus a per-database offset
 * below stagger_ms. INT64_MAX when deep scans are off. (Whether it may run
 * now, in the window, is the caller's to add.) */
int64_t sched_deep_scan_due(const struct deep_scan_conf *dc, const struct sched_history *h, uint64_t stagger_ms,
                            uint32_t path_hash);

/* Whether a WAL database's -wal should be checkpointed now: when one is
 * owed (a VACUUM's checkpoint was busy) and the -wal is not empty, or it
 * is larger than wal_size_limit, or than wal_size_ratio of the database
 * file once past the size SQLite's own auto-checkpoint keeps (1000 frames:
 * 32 + 1000 x (page size + 24) bytes, which SQLite never shrinks; see
 * pragma.html#pragma_wal_autocheckpoint). The reason goes to *reason. */
bool sched_checkpoint(const struct dbstat *st, const struct checkpoint_conf *cc, bool owed,
                      enum sched_reason *reason);

/* When ANALYZE is next due (wall clock ms); never analyzed: first_seen plus a
 * per-database offset below stagger_ms, so a fleet is not analyzed at once.
 * INT64_MAX when analyze is off. */
int64_t sched_analyze_due(const struct analyze_conf *ac, const struct sched_history *h, uint64_t stagger_ms,
                          uint32_t path_hash);

/* Retry delay after the attempt-th busy result (1-based):
 * initial * 2^(attempt-1) capped at max, minus up to 25% jitter from rnd. */
uint64_t sched_backoff_ms(const struct retry_conf *rc, int attempt, uint32_t rnd);

/* Queue order: negative when a goes first. Urgent before scheduled, then
 * the more fragmented first. */
int sched_compare(bool a_urgent, double a_frag, bool b_urgent, double b_frag);

/* One queued job as dispatch sees it; the manager describes each of its
 * queue at each look. */
struct sched_job {
        enum maint_op op;
        enum sched_reason reason;     /* why it was queued */
        bool urgent;                  /* at or above urgent_threshold when queued */
        double fragmentation_percent; /* the database's, when queued */
        bool in_use;                  /* its file (device and inode) has a job running, under this path or another */
        uint64_t retry_at_ms;         /* monotonic ms: backing off until then; 0 = not */
        struct window window;         /* vacuum.window of its entry */
};

enum sched_dispatch_choice {
        SCHED_DISPATCH_NONE,          /* nothing may start now */
        SCHED_DISPATCH_START,         /* start jobs[index] */
        SCHED_DISPATCH_WINDOW_CLOSED, /* drop jobs[index]: its window closed before it could start */
};

struct sched_dispatch {
        enum sched_dispatch_choice choice;
        size_t index;     /* into jobs, unless SCHED_DISPATCH_NONE */
        uint64_t wake_ms; /* monotonic ms: the earliest retry still ahead; UINT64_MAX: none */
};

/* Which of n queued jobs goes next, with running jobs of at most
 * max_running (limits: max_concurrent_jobs) at now_ms (monotonic ms) and
 * minute_of_day (local time, 0..1439). None at the cap; else, of the jobs
 * whose file has no job running and whose backoff has run out (retry_at_ms
 * reached), the first by: vacuums and checkpoints, then ANALYZE, then deep
 * scans; then sched_compare(); ties to the lowest index. A VACUUM queued
 * for its threshold inside the window (SCHED_REASON_THRESHOLD) that the
 * window closed on is dropped instead (unless ignore_window): a later poll
 * decides again. wake_ms is the earliest retry_at_ms of the jobs still
 * backing off (their file not in use), when dispatch should look again.
 * Call it again after each START or WINDOW_CLOSED, with that job gone. */
struct sched_dispatch sched_dispatch(const struct sched_job *jobs, size_t n, unsigned running, unsigned max_running,
                                     uint64_t now_ms, int minute_of_day, bool ignore_window);

/* Whether a hold on a database (a failure, a lack of space) still stands
 * at now_ms (monotonic ms): until the file changes (same_file false), and,
 * when until_ms is not 0, until until_ms: a hold ending exactly now has
 * ended. */
bool sched_hold_lasts(uint64_t until_ms, bool same_file, uint64_t now_ms);

uint32_t sched_hash(const char *s); /* FNV-1a, for staggering */
const char *sched_reason_name(enum sched_reason r);

/* The past VACUUMs of this host, for the window fit: bytes of database
 * they went through and the milliseconds they took (each job whole, its
 * checks included), summed over the last SCHED_RATE_SAMPLES. */
#define SCHED_RATE_SAMPLES 20
struct sched_rate {
        uint64_t bytes, ms;
        unsigned n;
};
/* The time a VACUUM job of a file of bytes should take at rate (ms), or
 * -1 when the rate is not known well enough (no past VACUUM, or less
 * than 1 MiB of them). */
int64_t sched_vacuum_estimate_ms(const struct sched_rate *rate, uint64_t bytes);
/* Whether a VACUUM estimated to take est_ms (-1: unknown, which fits)
 * fits in what is left of window w at minute_of_day and second: an
 * urgent one, an always-open window and an unknown estimate always do. */
bool sched_fits_window(const struct window *w, int minute_of_day, int second, int64_t est_ms);
/* d (from sched_vacuum()) held back as SCHED_REASON_WINDOW_SHORT when it
 * is a full VACUUM in the window, not urgent, that would not end in it. */
struct sched_decision sched_vacuum_fit(struct sched_decision d, const struct window *w, int minute_of_day, int second,
                                       int64_t est_ms, bool ignore_window);
