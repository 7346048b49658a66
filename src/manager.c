/* SPDX-License-Identifier: MIT */
/* The loop thread's world. Only this file touches the loop, the targets
 * and the queue; workers get a job and give back its result. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "conf.h"
#include "control.h"
#include "dbstat.h"
#include "events.h"
#include "job.h"
#include "log.h"
#include "maint.h"
#include "manager.h"
#include "notify.h"
#include "report.h"
#include "schedule.h"
#include "state.h"
#include "targets.h"
#include "util.h"

/* Precise statistics reads running at once, besides maintenance jobs. */
#define STAT_JOBS_MAX 2
/* Pool threads besides jobs and statistics reads: the expansion of the
 * configured paths, and the state file's pruning. */
#define POOL_SPARE 1
/* A poll's reads: at least POLL_BATCH per tick, ticks at least
 * POLL_TICK_MIN_MS apart, so a round wakes the loop at most
 * n / POLL_BATCH times whatever the interval (docs/PERFORMANCE.md); a
 * tick looks at no more than POLL_LOOKS_MAX targets whose files did not
 * change (their last figures decided on again, no read). */
#define POLL_BATCH 1024
#define POLL_LOOKS_MAX 4096
/* A tick holds the loop at most this long (nanoseconds); what it did not
 * get to runs at the loop's next turn, after whatever else is due. */
#define TICK_BUDGET_NS (5u * 1000u * 1000u)
/* inotify is read at most this often: a busy application's writes wake
 * the loop once per NOTIFY_BATCH_MS, not once per write. */
#define NOTIFY_BATCH_MS 1000
/* Header reads of one poll are spread over this share of the interval. */
#define POLL_SPREAD_PERCENT 80
#define POLL_TICK_MIN_MS 100
/* A database refused for lack of space is looked at again after this. */
#define NOSPACE_HOLD_MS (60 * 60 * 1000)
/* The state file forgets vanished databases this long after start, then daily. */
#define PRUNE_FIRST_MS (10 * 60 * 1000)
#define PRUNE_INTERVAL_MS (24 * 60 * 60 * 1000)
/* How often what the journal budget dropped is looked at (log_flood_tick). */
#define FLOOD_TICK_MS 5000
/* After a job ran out of its time limit: held this long, doubling. */
#define TIMEOUT_HOLD_MS (60ull * 60 * 1000)
#define TIMEOUT_HOLD_MAX_MS (24ull * 60 * 60 * 1000)
/* Refused paths remembered (each reported once while it lasts); more are counted. */
#define REFUSED_MAX 10000

struct manager {
        uv_loop_t loop;
        char *conf_file;
        struct conf *conf;
        struct state *state;
        struct targets targets;
        struct targets refused; /* paths not followed, reported once: path only */
        size_t refused_over;    /* refused paths past REFUSED_MAX in this expansion */
        bool refused_over_said;

        uv_timer_t poll_timer, tick_timer, dispatch_timer, watchdog_timer, prune_timer, flood_timer;
        uv_work_t prune_req;  /* state_prune() of databases whose files are gone */
        uv_work_t list_req;   /* targets_list(): the walk of the configured paths */
        struct listing *listing; /* being walked, or NULL */
        bool expanded_now;    /* the targets were expanded since the last round began (start, reload) */
        int expand_error;     /* of the last walk that failed, while it lasts; 0 */
        bool pruning;
        int prune_result;
        uv_signal_t sig_hup, sig_term, sig_int;
        uv_work_t pool_req;       /* starts libuv's thread pool (start_pool_without_signals) */

        struct target_list round; /* this poll's targets still to header-read, a few per tick */
        size_t per_tick;
        bool round_active;
        uint64_t tick_ms;         /* between two ticks of this round */
        uint64_t tick_due_ns;     /* when the next tick should run (uv_hrtime) */

        /* inotify (targets.h): what changed, so that a poll reads only that */
        uv_poll_t notify_poll;
        uv_timer_t notify_timer;  /* re-arms notify_poll, NOTIFY_BATCH_MS after a read */
        bool notify_on;
        /* A mount or unmount changes what a path names with no inotify
         * event: /proc/self/mountinfo polls with POLLPRI when one happens. */
        uv_poll_t mounts_poll;
        int mounts_fd;
        bool walk_needed;         /* the paths may match something else: walk at the next poll */
        bool unwatched_said;      /* directories not watched: said, while it lasts */
        uint64_t sweep_at;        /* monotonic ms of the next full sweep */

        /* This round's figures, and the loop's lateness (timer_lag_note()) */
        struct event_round fig, last_fig;
        struct lag {
                uint32_t v[512]; /* microseconds late, the last ones */
                size_t n, next;
                uint64_t max_us;
        } lag;

        /* Each state's targets (targets.h): */
        struct target_list statq;   /* STAT_QUEUED, first come first served */
        struct target_list queue;   /* QUEUED */
        struct target_list running; /* STAT_RUNNING, RUNNING, REMOVED: the files they have open */
        size_t queue_n;
        struct sched_job *jobs; /* the queue as sched_dispatch() sees it */
        size_t jobs_cap;

        unsigned running_jobs, running_stats;
        unsigned max_jobs;  /* max_concurrent_jobs, bounded by the pool */
        unsigned pool_size;

        bool once, dry_run, ignore_window;
        bool expanded; /* the first expansion is done */
        bool loop_open; /* between uv_loop_init() and uv_loop_close() */
        bool stopping;  /* a stop began: no new work, running jobs asked to stop */
        bool closed;    /* every handle asked to close: the loop ends when they have */
        unsigned failures; /* jobs that ended badly: the --once exit status */
        unsigned long jobs_done;

        /* The control socket (control.h), its run --wait requests, and
         * what the metrics count (report.h). */
        struct control *control;
        LIST_HEAD(, waiter) waiters;
        LIST_HEAD(, history_work) history; /* history requests reading the state file */
        struct report_counts counts;
        struct sched_rate rate;      /* the past VACUUMs here, for the window fit */
        int64_t started_ms;          /* wall clock */
        int64_t last_round_end_ms;   /* wall clock; 0 before the first */
        uint64_t last_round_ms;      /* its duration */
        uint64_t round_started_ms;   /* monotonic */
        uint64_t metrics_written_at; /* monotonic ms; 0: never */
        uv_timer_t metrics_timer;    /* a write put off to METRICS_MIN_GAP_MS after the last */
        uv_timer_t progress_timer;   /* while a VACUUM runs: its phases, each second */
        struct metrics_write *metrics_writing; /* the metrics file being written, or NULL */
        bool metrics_failing;        /* its last write failed (said once) */
};

/* A client of run --wait: answered when its job ends. */
struct waiter {
        struct control_conn *conn;
        struct target *t;
        enum maint_op op;
        LIST_ENTRY(waiter) link;
};

static void dispatch(struct manager *m);
static void start_round(struct manager *m);
static void begin_stop(struct manager *m);
static void answer_waiters(struct manager *m, const struct target *t, enum maint_op op, const struct maint_result *res,
                           const char *why);
static void metrics_changed(struct manager *m);

/* --- small helpers ---------------------------------------------------- */

/* The local time's minute of the day, worked out again once a second at
 * most (localtime_r() looks at the time zone each call: a poll decides on
 * up to 4,096 databases a tick). Loop thread only. */
static int minute_of_day(void)
{
        static time_t at = -1;
        static int minute;
        time_t now = time(NULL);
        struct tm tm;

        if (now != at) {
                localtime_r(&now, &tm);
                minute = tm.tm_hour * 60 + tm.tm_min;
                at = now;
        }
        return minute;
}

/* --- a target's state (targets.h) -------------------------------------- */

/* The list a state keeps its targets in, or NULL. */
static struct target_list *state_list(struct manager *m, enum target_state s)
{
        switch (s) {
        case TARGET_STAT_QUEUED: return &m->statq;
        case TARGET_QUEUED: return &m->queue;
        case TARGET_STAT_RUNNING:
        case TARGET_RUNNING:
        case TARGET_REMOVED: return &m->running;
        default: return NULL;
        }
}

/* The one way a target changes state (the transitions: targets.h). */
static void set_state(struct manager *m, struct target *t, enum target_state s)
{
        struct target_list *from = state_list(m, t->state), *to = state_list(m, s);


        if (from != to) {
                if (from)
                        TAILQ_REMOVE(from, t, link);
                if (to)
                        TAILQ_INSERT_TAIL(to, t, link);
                if (from == &m->queue)
                        m->queue_n--;
                if (to == &m->queue)
                        m->queue_n++;
        }
        t->state = s;
}

static void round_remove(struct manager *m, struct target *t)
{
        if (t->in_round) {
                TAILQ_REMOVE(&m->round, t, round_link);
                t->in_round = false;
        }
}

static bool vacuum_progress(const struct manager *m, const struct target *t, struct report_progress *ret);

static void update_status(struct manager *m)
{
        struct report_progress p;
        const struct target *t;
        char text[PATH_MAX + 128], a[32];
        const char *progress = NULL;
        int pct;

        /* the first VACUUM running, where it is */
        TAILQ_FOREACH(t, &m->running, link) {
                if (!vacuum_progress(m, t, &p))
                        continue;
                pct = report_progress_percent(&p, util_wall_ms());
                if (pct >= 0)
                        snprintf(text, sizeof(text), "VACUUM of %s: %s, about %d%% of an estimated %s", t->path,
                                 maint_phase_name(p.phase), pct,
                                 util_format_approx((uint64_t)p.estimate_ms, a, sizeof(a)));
                else
                        snprintf(text, sizeof(text), "VACUUM of %s: %s", t->path, maint_phase_name(p.phase));
                progress = text;
                break;
        }
        event_status(m->targets.n, m->running_jobs, m->queue_n, m->stopping, m->running_jobs + m->running_stats,
                     &m->last_fig, progress);
}

/* --- targets coming and going ----------------------------------------- */

static void target_added(void *userdata, struct target *t)
{
        struct manager *m = userdata;

        (void)state_history(m->state, t->path, &t->hist);
        t->hist.first_seen_ms = util_wall_ms();
        event_db_added(t->path, m->expanded ? EVENT_ADDED_NEW : EVENT_ADDED_AT_START);
}

/* Out of every list; freed now, or when its job ends. */
static void target_drop(struct manager *m, struct target *t)
{
        targets_remove(&m->targets, t);
        round_remove(m, t);
        if (t->job) {
                set_state(m, t, TARGET_REMOVED);
        } else {
                if (t->state == TARGET_QUEUED)
                        answer_waiters(m, t, t->op, NULL, "no longer watched; its job will not run");
                set_state(m, t, TARGET_IDLE);
                target_free(t);
        }
}

static void target_gone(struct manager *m, struct target *t, const char *why)
{
        if (t->explicit_path) {
                /* A configured path stays watched: it may come back. */
                if (!t->reported_missing)
                        event_db_removed(t->path, why, true);
                t->reported_missing = true;
                t->have_stat = false;
                return;
        }
        event_db_removed(t->path, why, false);
        target_drop(m, t);
}

static int target_dirfd(const struct target *t)
{
        return t->dir ? t->dir->fd : -1;
}

/* A file we cannot maintain is reported once and left alone until it
 * changes (or for a while, for a lack of space): HELD. */
static void hold(struct manager *m, struct target *t, uint64_t for_ms, enum maint_status why)
{
        struct target_memo *mm = target_memo(t);

        /* without memory to remember it, the next poll decides afresh */
        if (!mm || file_id_at(target_dirfd(t), t->name, &mm->hold_id) < 0)
                return;
        set_state(m, t, TARGET_HELD);
        mm->hold_status = why;
        mm->hold_on_change = true;
        mm->hold_until = for_ms ? util_monotonic_ms() + for_ms : 0;
}

static bool still_held(struct manager *m, struct target *t, const struct file_id *id)
{
        const struct target_memo *mm = target_memo_get(t);
        uint64_t now = util_monotonic_ms();

        if (t->state != TARGET_HELD)
                return false;
        if (mm->hold_on_change ? sched_hold_lasts(mm->hold_until, file_id_equal(id, &mm->hold_id), now)
                               : now < mm->hold_until)
                return true;
        set_state(m, t, TARGET_IDLE);
        return false;
}

/* --- decisions -------------------------------------------------------- */

static void enqueue(struct manager *m, struct target *t, enum maint_op op, enum sched_reason reason, bool urgent)
{
        bool again = op == MAINT_OP_CHECKPOINT ? target_memo_get(t)->ckpt_attempt > 0
                   : op != MAINT_OP_ANALYZE && op != MAINT_OP_DEEP_SCAN && t->logged_reason == reason;

        event_scheduled(t, op, reason, urgent, again, m->dry_run);
        if (op == MAINT_OP_VACUUM || op == MAINT_OP_INCREMENTAL_VACUUM)
                t->logged_reason = reason;
        if (m->dry_run) {
                /* In memory only: the timer is not due again next poll. */
                if (op == MAINT_OP_ANALYZE)
                        t->hist.last_analyze_ms = util_wall_ms();
                if (op == MAINT_OP_DEEP_SCAN)
                        t->hist.last_deep_scan_ms = util_wall_ms();
                return;
        }
        set_state(m, t, TARGET_QUEUED);
        t->op = op;
        t->reason = reason;
        t->urgent = urgent;
        t->attempt = 0;
        t->retry_at = 0;
}

/* The database and its -wal as a job found them (known), unchanged now. */
/* How long a precise statistics read's figures stand while the files stay
 * as they were: a file whose size and time were put back (a restore, a
 * copy keeping times) is read again within this. */
#define PRECISE_REUSE_MAX_MS (60u * 60u * 1000u)

static bool files_unchanged(const struct target *t, bool known, const struct file_id *was_db,
                            const struct file_id *was_wal)
{
        struct file_id db, wal = { 0 };
        char p[4096 + 16];

        if (!known || file_id_at(target_dirfd(t), t->name, &db) < 0)
                return false;
        if ((size_t)snprintf(p, sizeof(p), "%s-wal", t->name) < sizeof(p))
                (void)file_id_at(target_dirfd(t), p, &wal);
        return file_id_equal(&db, was_db) && file_id_equal(&wal, was_wal);
}

/* The files as the last ANALYZE left them, unchanged: nothing can be stale. */
static bool unchanged_since_analyze(const struct target *t)
{
        const struct target_memo *mm = target_memo_get(t);

        return files_unchanged(t, mm->analyzed_known, &mm->analyzed_db, &mm->analyzed_wal);
}

/* decide(), once no VACUUM or checkpoint is queued: ANALYZE and the deep
 * scan by their timers; and, when nothing is in play but timers, how long
 * the decision stands (t->quiet_until). */
static void decide_timers(struct manager *m, struct target *t, enum sched_reason vacuum_reason, bool ckpt_due,
                          int64_t now)
{
        const struct db_conf *dc = t->dc;
        int64_t analyze_at, deep_at = INT64_MAX;
        bool deep_waits;

        /* --once runs what is due now: no staggering of first analyzes. */
        analyze_at = t->stat.page_count > 0 ? sched_analyze_due(&dc->analyze, &t->hist,
                                                                m->once ? 0 : m->conf->poll_interval_ms, t->hash)
                                            : INT64_MAX;
        if (now >= analyze_at) {
                if (unchanged_since_analyze(t)) {
                        event_analyze_current(t);
                        t->hist.last_analyze_ms = now;
                        return;
                }
                enqueue(m, t, MAINT_OP_ANALYZE, SCHED_REASON_TIMER, false);
                return;
        }

        /* The deep scan reads the whole file: in the window (unless told
         * otherwise), and not again while the files stay as it saw them. */
        if (t->stat.page_count > 0)
                deep_at = sched_deep_scan_due(&dc->deep_scan, &t->hist, m->once ? 0 : m->conf->poll_interval_ms,
                                              t->hash);
        deep_waits = dc->deep_scan.in_window && !m->ignore_window &&
                     !sched_in_window(&dc->vacuum.window, minute_of_day());
        if (now >= deep_at && !deep_waits) {
                const struct target_memo *mm = target_memo_get(t);

                if (files_unchanged(t, mm->deep_known, &mm->deep_db, &mm->deep_wal)) {
                        event_deep_scan_current(t);
                        t->hist.last_deep_scan_ms = now;
                        return;
                }
                enqueue(m, t, MAINT_OP_DEEP_SCAN, SCHED_REASON_TIMER, false);
                return;
        }
        /* Nothing to do for its figures alone (under the threshold, or
         * too little to give back), and no window or backoff in play:
         * while its files do not change, the answer is the same until a
         * timer comes due (poll_target() decides again only then). */
        if ((vacuum_reason == SCHED_REASON_BELOW || vacuum_reason == SCHED_REASON_MIN_RECLAIM) &&
            !target_memo_get(t)->wal_owed && !ckpt_due && !target_memo_get(t)->rowid_hold && now < deep_at)
                t->quiet_until = analyze_at < deep_at ? analyze_at : deep_at;
}

/* How long a VACUUM job of t should take on this host (ms), -1 unknown. */
static int64_t vacuum_estimate_ms(const struct manager *m, const struct target *t)
{
        return sched_vacuum_estimate_ms(&m->rate, t->stat.file_size_bytes);
}

static void decide(struct manager *m, struct target *t)
{
        const struct db_conf *dc = t->dc;
        const struct target_memo *mm = target_memo_get(t); /* t->memo when anything is set */
        struct sched_decision d;
        enum sched_reason ckpt;
        int64_t now = util_wall_ms();
        bool ckpt_due;

        t->quiet_until = 0;
        d = sched_vacuum(&t->stat, &dc->vacuum, &t->hist, now, minute_of_day(), m->ignore_window);
        /* Refused for its rowids: not again until the schema changes. */
        if (d.action != SCHED_NONE && mm->rowid_hold) {
                if (t->stat.schema_cookie == mm->rowid_hold_cookie) {
                        event_vacuum_held_for_rowids(t);
                        d = (struct sched_decision){ SCHED_NONE, SCHED_REASON_ROWIDS, false };
                } else {
                        t->memo->rowid_hold = false;
                }
        }
        /* In the window, not urgent: started only if it should end in it. */
        d = sched_vacuum_fit(d, &dc->vacuum.window, minute_of_day(), (int)(now / 1000 % 60), vacuum_estimate_ms(m, t),
                             m->ignore_window);
        if (d.action != SCHED_NONE) {
                enqueue(m, t, d.action == SCHED_INCREMENTAL_VACUUM ? MAINT_OP_INCREMENTAL_VACUUM : MAINT_OP_VACUUM,
                        d.reason, d.reason == SCHED_REASON_URGENT);
                return;
        }
        /* Due but held back: worth one line when it starts, not one per poll. */
        if (d.reason != t->logged_reason && (d.reason == SCHED_REASON_WAIT_WINDOW ||
                                             d.reason == SCHED_REASON_MIN_INTERVAL ||
                                             d.reason == SCHED_REASON_WINDOW_SHORT))
                event_vacuum_waits(t, &d, minute_of_day(), vacuum_estimate_ms(m, t), &m->rate);
        else if (d.reason != SCHED_REASON_ROWIDS)
                event_nothing_to_do(t, d.reason);
        t->logged_reason = d.reason;

        /* The -wal: given back when it grew too large, or owed since a VACUUM. */
        if (mm->wal_owed && t->stat.wal_size_bytes == 0)
                t->memo->wal_owed = false; /* truncated meanwhile, by the application */
        ckpt_due = sched_checkpoint(&t->stat, &dc->checkpoint, mm->wal_owed, &ckpt);
        if (ckpt_due && util_monotonic_ms() >= mm->ckpt_retry_at) {
                enqueue(m, t, MAINT_OP_CHECKPOINT, ckpt, false);
                return;
        }

        decide_timers(m, t, d.reason, ckpt_due, now);
}


/* A database that cannot even be looked at: reported once, by kind (a
 * corrupt one loudly), and held until the file changes. */
static void poll_failed(struct manager *m, struct target *t, enum maint_status s, const char *why)
{
        event_poll_failed(t->path, s, why);
        m->failures++;
        hold(m, t, 0, s);
}

/* Whether another target's running job has t's file: one job per
 * database at a time, whatever path names it (two entries, a hard link, a
 * bind mount, "//" in a path), as the last polls found the files. */
static bool file_in_use(const struct manager *m, const struct target *t)
{
        const struct target *r;

        TAILQ_FOREACH(r, &m->running, link)
                if (r != t && r->dev == t->dev && r->ino == t->ino)
                        return true;
        return false;
}

/* Whether inotify watches t's files: its side files as the listing and
 * the events tell are true now, and it needs no read while clean. */
static bool watched(const struct manager *m, const struct target *t)
{
        return m->notify_on && t->dir && t->dir->wd >= 0;
}

/* Its files unchanged since their last read (inotify says so) and no
 * timer of its due before now (wall clock ms): the last decision stands,
 * and the poll neither reads nor decides. */
static bool decision_stands(const struct manager *m, const struct target *t, int64_t now)
{
        return t->clean && t->have_stat && t->state == TARGET_IDLE && watched(m, t) && now < t->quiet_until;
}

/* What is known of t's side files: in --once the listing made a moment
 * ago, in the daemon what inotify keeps current; else nothing (stat). */
static struct dbstat_sides *sides_of(struct manager *m, struct target *t)
{
        return m->once || watched(m, t) ? &t->sides : NULL;
}

/* Figures that stand: decided on, and not read again until a file changes. */
static void figures(struct manager *m, struct target *t, const struct dbstat *st)
{
        t->stat_busy = 0;
        t->stat = *st;
        t->have_stat = true;
        t->clean = watched(m, t);
        decide(m, t);
}

/* A header that needs SQLite (a WAL database whose -wal holds frames): told
 * already, of these very files (a WAL database held open and idle costs a
 * stat, not a job), or queued for a precise read. */
static void needs_precise(struct manager *m, struct target *t)
{
        const struct target_memo *mm = target_memo_get(t);

        if (t->have_stat && util_monotonic_ms() - mm->precise_at < PRECISE_REUSE_MAX_MS &&
            files_unchanged(t, mm->precise_known, &mm->precise_db, &mm->precise_wal)) {
                event_stats_reused(t);
                t->clean = watched(m, t);
                decide(m, t);
                return;
        }
        set_state(m, t, TARGET_STAT_QUEUED);
}

/* A file the poll could not read: why, reported once and held. */
static void poll_error(struct manager *m, struct target *t, int r)
{
        switch (r) {
        case -ENOENT:
        case -ENOTDIR:
                target_gone(m, t, "does not exist (any more)");
                break;
        case -ELOOP:
                poll_failed(m, t, MAINT_PERMISSION, "is a symbolic link; configure the real path");
                break;
        case -EINVAL:
                poll_failed(m, t, MAINT_NOTADB, "not an SQLite database");
                break;
        case -EISDIR:
                poll_failed(m, t, MAINT_NOTADB, "is a directory");
                break;
        default:
                poll_failed(m, t, r == -EACCES || r == -EPERM ? MAINT_PERMISSION : MAINT_IOERR, strerror(-r));
                break;
        }
}

/* Whether t is left alone this poll: held, or its file in another's job.
 * id: the file as it is now. */
static bool left_alone(struct manager *m, struct target *t, const struct file_id *id)
{
        t->dev = id->dev;
        t->ino = id->ino;
        if (file_in_use(m, t))
                return true;
        if (t->reported_missing) {
                event_db_added(t->path, EVENT_ADDED_BACK);
                t->reported_missing = false;
        }
        return still_held(m, t, id);
}

/* The cheap look at one database: nothing when its files did not change
 * since the last (its figures decided on again); else one open, one fstat,
 * the header, and a stat of each side file only where neither the listing
 * nor inotify tells. Returns whether it read. */
static bool poll_target(struct manager *m, struct target *t)
{
        struct file_id id;
        struct dbstat st;
        struct stat s;
        int fd, r;

        /* Decided already, or being worked on (under this path or another). */
        if (t->state != TARGET_IDLE && t->state != TARGET_HELD)
                return false;
        if (t->clean && t->have_stat && t->state == TARGET_IDLE && watched(m, t)) {
                m->fig.unchanged++;
                decide(m, t); /* a timer of its came due */
                return false;
        }
        m->fig.read++;
        fd = t->dir ? dbstat_open_at(t->dir->fd, t->name, &s) : -ENOENT;
        if (fd == -EWOULDBLOCK && t->state == TARGET_IDLE) {
                /* a lease (F_SETLEASE) on it: the job says whose, and backs off */
                needs_precise(m, t);
                return true;
        }
        if (fd < 0) {
                /* held for what it is (a link, a directory): while it stays so */
                if (t->state == TARGET_HELD && fd != -ENOENT && file_id_at(target_dirfd(t), t->name, &id) == 0 &&
                    left_alone(m, t, &id))
                        return true;
                poll_error(m, t, fd);
                return true;
        }
        id = (struct file_id){ s.st_dev, s.st_ino, s.st_size, s.st_mtim };
        if (left_alone(m, t, &id)) {
                close(fd);
                return true;
        }
        r = dbstat_read_header_fd(fd, &s, t->dir->fd, t->name, sides_of(m, t), &st);
        /* a WAL database whose -wal holds frames: its wal-index tells */
        if (r == -EAGAIN && strcmp(st.journal_mode, "wal") == 0 && st.wal_size_bytes > 0) {
                r = dbstat_read_wal_index(fd, &s, t->dir->fd, t->name, &st);
                if (r == 0)
                        m->fig.wal_from_index++;
                else if (r == -EAGAIN)
                        m->fig.wal_fallback++;
        }
        close(fd);
        if (r == 0)
                figures(m, t, &st);
        else if (r == -EAGAIN) /* only SQLite can tell */
                needs_precise(m, t);
        else
                poll_error(m, t, r);
        return true;
}

/* --- jobs ------------------------------------------------------------- */



/* A deep scan given the rest of the window as its time limit (shorter than
 * limits.job_timeout) that ran out of it. From the job alone: a target a
 * reload dropped while its job ran may point into a configuration freed. */
static bool deep_scan_window_end(const struct job *j)
{
        return j->op == MAINT_OP_DEEP_SCAN && j->res.status == MAINT_TIMEOUT && j->ends_with_window;
}



/* Readers keep the -wal from being truncated: try again after a backoff
 * that grows to max_backoff, at later polls; a warning once it has lasted
 * warn_after, and again each warn_after. */
static void checkpoint_later(struct target *t, const struct maint_result *r)
{
        uint64_t warn = t->dc->checkpoint.warn_after_ms, backoff;
        struct target_memo *mm = target_memo(t);
        int64_t now = util_wall_ms();

        if (!mm) /* no memory to count tries: the next poll decides afresh */
                return;
        if (!mm->ckpt_busy_since)
                mm->ckpt_busy_since = now;
        mm->ckpt_attempt++;
        backoff = sched_backoff_ms(&t->dc->retry, mm->ckpt_attempt, (uint32_t)random());
        mm->ckpt_retry_at = util_monotonic_ms() + backoff;
        event_checkpoint_retry(t->path, r, backoff);
        if ((uint64_t)(now - mm->ckpt_busy_since) < warn ||
            (mm->ckpt_warned && (uint64_t)(now - mm->ckpt_warned) < warn))
                return;
        mm->ckpt_warned = now;
        event_checkpoint_held(t->path, r, (uint64_t)(now - mm->ckpt_busy_since), mm->ckpt_attempt);
}

static void checkpoint_done(struct target *t)
{
        struct target_memo *mm = t->memo;

        if (!mm)
                return;
        mm->wal_owed = false;
        mm->ckpt_attempt = 0;
        mm->ckpt_retry_at = 0;
        mm->ckpt_busy_since = 0;
        mm->ckpt_warned = 0;
}

/* A lock conflict: back off and retry, bounded, then give up until a later
 * poll decides again. */
static void retry_later(struct manager *m, struct target *t, struct job *j)
{
        const struct retry_conf *rc = &t->dc->retry;
        uint64_t backoff;

        t->attempt++;
        if (t->attempt >= rc->max_attempts) {
                event_gave_up(t->path, j, t->attempt);
                t->attempt = 0;
                m->failures++;
                return;
        }
        backoff = sched_backoff_ms(rc, t->attempt, (uint32_t)random());
        m->counts.retries[j->op]++;
        event_retry(t->path, j, t->attempt, rc->max_attempts, backoff);
        set_state(m, t, TARGET_QUEUED);
        t->op = j->op;
        t->retry_at = util_monotonic_ms() + backoff;
}

static void close_all(struct manager *m);

static void maybe_done(struct manager *m)
{
        if (m->stopping) {
                if (m->running_jobs + m->running_stats == 0 && !m->pruning && !m->listing)
                        close_all(m);
                else
                        update_status(m);
                return;
        }
        if (m->once && !m->round_active && TAILQ_EMPTY(&m->queue) && TAILQ_EMPTY(&m->statq) &&
            m->running_jobs + m->running_stats == 0)
                begin_stop(m);
}

/* A job ran out of its time limit: not looked at again soon, whatever the
 * file does (1 h, doubling with each time limit in a row, up to a day). */
static uint64_t hold_after_timeout(struct manager *m, struct target *t)
{
        struct target_memo *mm = target_memo(t);
        uint64_t for_ms;

        if (!mm) /* no memory to hold it: the next poll decides afresh */
                return 0;
        mm->timeouts++;
        for_ms = mm->timeouts > 5 ? TIMEOUT_HOLD_MAX_MS : TIMEOUT_HOLD_MS << (mm->timeouts - 1);
        set_state(m, t, TARGET_HELD);
        mm->hold_status = MAINT_TIMEOUT;
        mm->hold_on_change = false;
        mm->hold_until = util_monotonic_ms() + for_ms;
        return for_ms;
}

static void stat_done(struct manager *m, struct target *t, struct job *j)
{
        struct target_memo *mm;

        switch (j->res.status) {
        case MAINT_OK:
                if ((mm = target_memo(t))) {
                        mm->precise_db = j->res.db_id;
                        mm->precise_wal = j->res.wal_id;
                        mm->precise_known = j->res.db_id.ino != 0;
                        mm->precise_at = util_monotonic_ms();
                }
                figures(m, t, &j->res.after);
                /* an event while it read: what it read may be older */
                if (t->changes != j->changes_at_start)
                        t->clean = false;
                break;
        case MAINT_BUSY: /* the next poll looks again; said once it lasts */
                event_stats_locked(t->path, j->res.message, ++t->stat_busy, t->dc->retry.max_attempts);
                break;
        case MAINT_MISSING:
                target_gone(m, t, "does not exist (any more)");
                break;
        case MAINT_TIMEOUT:
                event_stats_timeout(t->path, j->res.message, hold_after_timeout(m, t));
                m->failures++;
                break;
        default:
                poll_failed(m, t, j->res.status, j->res.message);
                break;
        }
}

static void job_finished(struct job *j, void *userdata);

/* A job's time limit: limits.job_timeout, and for a VACUUM also
 * vacuum_timeout_per_gib for each GiB of the database's pages in use; a
 * deep scan kept to the window ends at its end. */
static uint64_t job_timeout(const struct manager *m, const struct target *t, enum maint_op op)
{
        const struct limits_conf *l = &t->dc->limits;
        /* what a VACUUM copies: the pages in use, as the header counts them
         * (a file's size can be made anything: a sparse file costs nothing) */
        uint64_t live = t->stat.page_count > t->stat.freelist_count ? t->stat.page_count - t->stat.freelist_count : 0;
        double gib = (double)live * (double)t->stat.page_size / (double)(1ull << 30);

        if (op == MAINT_OP_DEEP_SCAN && t->dc->deep_scan.in_window && !m->ignore_window) {
                time_t now = time(NULL);
                struct tm tm;
                int left;
                uint64_t until_end;

                localtime_r(&now, &tm);
                left = sched_minutes_until_window_end(&t->dc->vacuum.window, tm.tm_hour * 60 + tm.tm_min);
                /* to the window's last second, not its last whole minute */
                until_end = ((uint64_t)left * 60 - (uint64_t)tm.tm_sec) * 1000;
                if (left > 0 && until_end > 0 && until_end < l->job_timeout_ms)
                        return until_end;
        }
        if (op != MAINT_OP_VACUUM)
                return l->job_timeout_ms;
        return l->job_timeout_ms + (uint64_t)(gib * (double)l->vacuum_timeout_per_gib_ms);
}

/* How often a running VACUUM's phase is looked at (ms). */
#define PROGRESS_TICK_MS 1000

/* Where t's running VACUUM is, into *ret: false when t runs none. */
static bool vacuum_progress(const struct manager *m, const struct target *t, struct report_progress *ret)
{
        const struct job *j = t->job;

        if (!j || t->state != TARGET_RUNNING || (j->op != MAINT_OP_VACUUM && j->op != MAINT_OP_INCREMENTAL_VACUUM))
                return false;
        *ret = (struct report_progress){
                .phase = (enum maint_phase)atomic_load(&((struct job *)j)->phase),
                .started_ms = j->started_ms ? j->started_ms : util_wall_ms(),
                .estimate_ms = j->op == MAINT_OP_VACUUM ? sched_vacuum_estimate_ms(&m->rate, t->stat.file_size_bytes)
                                                        : -1,
        };
        return true;
}

/* Each running VACUUM's phase: a journal line and STATUS= when it moves
 * on; the timer stops with the last VACUUM. */
static void progress_cb(uv_timer_t *timer)
{
        struct manager *m = timer->data;
        struct report_progress p;
        struct target *t;
        bool any = false;

        TAILQ_FOREACH(t, &m->running, link) {
                if (!vacuum_progress(m, t, &p))
                        continue;
                any = true;
                if ((int)p.phase == t->job->logged_phase || p.phase == MAINT_PHASE_NONE)
                        continue;
                t->job->logged_phase = (int)p.phase;
                event_vacuum_phase(t->path, p.phase, (uint64_t)(util_wall_ms() - p.started_ms),
                                   report_progress_percent(&p, util_wall_ms()), p.estimate_ms);
        }
        if (!any)
                uv_timer_stop(timer);
        else
                update_status(m); /* the estimate's percent moves on too */
}

static int start_job(struct manager *m, struct target *t, enum maint_op op)
{
        struct maint_opts o;
        struct job *j;
        int r;

        if (!t->dir)
                return -ENOENT;
        maint_opts_from_conf(&o, &t->dc->vacuum, &t->dc->analyze, &t->dc->retry);
        r = job_new(&j, t->dir->fd, t->name, t->path, op, &o, job_timeout(m, t, op),
                    op == MAINT_OP_STATS ? NULL : m->state);
        if (r < 0)
                return r;
        j->owner = t;
        j->changes_at_start = t->changes;
        /* a time limit shorter than limits.job_timeout: the window's end */
        j->ends_with_window = j->timeout_ms < t->dc->limits.job_timeout_ms;
        r = job_queue(j, &m->loop, job_finished, m);
        if (r < 0) {
                job_free(j);
                return -EIO;
        }
        t->job = j;
        j->logged_phase = MAINT_PHASE_NONE;
        set_state(m, t, op == MAINT_OP_STATS ? TARGET_STAT_RUNNING : TARGET_RUNNING);
        if ((op == MAINT_OP_VACUUM || op == MAINT_OP_INCREMENTAL_VACUUM) &&
            !uv_is_active((uv_handle_t *)&m->progress_timer))
                uv_timer_start(&m->progress_timer, progress_cb, PROGRESS_TICK_MS, PROGRESS_TICK_MS);
        if (op == MAINT_OP_STATS)
                m->running_stats++;
        else
                m->running_jobs++;
        return 0;
}

/* A job that did its work: what it leaves for the next decisions. */
static void job_succeeded(struct target *t, const struct job *j)
{
        const struct maint_result *r = &j->res;
        const struct deep_stats *d = &r->deep;
        struct target_memo *mm = target_memo(t); /* NULL: nothing remembered, decided afresh */

        if (t->memo)
                t->memo->timeouts = 0;
        switch (j->op) {
        case MAINT_OP_ANALYZE:
                t->hist.last_analyze_ms = j->finished_ms;
                if (mm) {
                        mm->analyzed_db = r->db_id;
                        mm->analyzed_wal = r->wal_id;
                        mm->analyzed_known = true;
                }
                break;
        case MAINT_OP_CHECKPOINT:
                checkpoint_done(t);
                break;
        case MAINT_OP_CHECK: /* job_counted() keeps its time */
                break;
        case MAINT_OP_DEEP_SCAN:
                t->hist.last_deep_scan_ms = j->finished_ms;
                t->hist.deep_known = r->have_deep;
                t->hist.deep_unused_percent = deep_unused_percent(d->unused_bytes, d->btree_pages, d->page_size);
                t->hist.deep_reclaimable_bytes = d->reclaimable_bytes;
                t->hist.deep_page_count = d->page_count;
                if (mm) {
                        mm->deep_db = r->db_id;
                        mm->deep_wal = r->wal_id;
                        mm->deep_known = r->have_deep;
                }
                break;
        default: /* a VACUUM or an incremental vacuum */
                t->hist.last_vacuum_ms = j->finished_ms;
                /* the pages are packed: the deep scan's figures are history */
                if (j->op == MAINT_OP_VACUUM)
                        t->hist.deep_known = false;
                if (r->checkpoint_busy && mm) {
                        /* a reader kept the new database's -wal: owed */
                        checkpoint_done(t);
                        mm->wal_owed = true;
                        mm->ckpt_busy_since = util_wall_ms();
                        mm->ckpt_attempt = 1;
                        mm->ckpt_retry_at = util_monotonic_ms() + sched_backoff_ms(&t->dc->retry, 1, (uint32_t)random());
                }
                break;
        }
}

/* What a finished maintenance job means for its target. */
static void job_applied(struct manager *m, struct target *t, struct job *j)
{
        const struct maint_result *r = &j->res;

        if (j->op == MAINT_OP_CHECKPOINT && r->status == MAINT_BUSY && !m->stopping) {
                checkpoint_later(t, r);
                return;
        }
        if (r->status == MAINT_BUSY && !m->stopping) {
                retry_later(m, t, j);
                return;
        }
        event_job_done(t, j, deep_scan_window_end(j));
        t->attempt = 0;
        /* After a VACUUM the next decision about it is news; an ANALYZE or a
         * checkpoint changes nothing of what was said about VACUUM. */
        if (j->op == MAINT_OP_VACUUM || j->op == MAINT_OP_INCREMENTAL_VACUUM)
                t->logged_reason = SCHED_REASON_NONE;
        if (r->have_after && (r->status == MAINT_OK || r->status == MAINT_ROWIDS)) {
                t->stat = r->after;
                t->have_stat = true;
        }
        switch (r->status) {
        case MAINT_OK:
                job_succeeded(t, j);
                break;
        case MAINT_ROWIDS:
                if (target_memo(t)) {
                        t->memo->rowid_hold = r->have_before;
                        t->memo->rowid_hold_cookie = r->before.schema_cookie;
                }
                break;
        case MAINT_INTERRUPTED:
        case MAINT_SKIPPED:
                if (j->op == MAINT_OP_CHECKPOINT)
                        checkpoint_done(t); /* not in WAL mode any more */
                break;
        case MAINT_NOSPACE:
                m->failures++;
                hold(m, t, NOSPACE_HOLD_MS, MAINT_NOSPACE);
                break;
        case MAINT_TIMEOUT:
                /* a deep scan stopped at the window's end: due again in the next */
                if (deep_scan_window_end(j))
                        break;
                m->failures++;
                hold_after_timeout(m, t);
                break;
        case MAINT_BUSY: /* stopping */
        case MAINT_HOOK_REFUSED: /* the admin's hook said not now: the next poll decides again */
                break;
        default:
                m->failures++;
                hold(m, t, 0, r->status);
                break;
        }
}

/* What status and the metrics keep of a finished job, and the clients of
 * run --wait that waited for it (unless it is queued again after a lock
 * conflict: they wait on). */
static void job_counted(struct manager *m, struct target *t, const struct job *j)
{
        const struct maint_result *r = &j->res;
        struct target_memo *mm;
        bool retried = t->state == TARGET_QUEUED && t->op == j->op;

        if (retried)
                return;
        m->counts.jobs[j->op][report_result_of(r->status)]++;
        if (j->op == MAINT_OP_VACUUM && r->status == MAINT_OK && r->have_before) {
                /* about the last SCHED_RATE_SAMPLES, as the state file keeps them */
                if (m->rate.n >= SCHED_RATE_SAMPLES) {
                        m->rate.bytes -= m->rate.bytes / m->rate.n;
                        m->rate.ms -= m->rate.ms / m->rate.n;
                        m->rate.n--;
                }
                m->rate.bytes += r->before.file_size_bytes;
                m->rate.ms += r->duration_ms;
                m->rate.n++;
        }
        m->counts.reclaimed[j->op] += maint_bytes_given_back(j->op, r);
        if ((mm = target_memo(t))) {
                mm->last[j->op] = (struct target_last){ j->finished_ms, r->status, maint_bytes_given_back(j->op, r) };
                if (r->status == MAINT_OK &&
                    (j->op == MAINT_OP_CHECK || (j->op == MAINT_OP_VACUUM && t->dc->vacuum.integrity != INTEGRITY_NONE)))
                        mm->last_check_ms = j->finished_ms;
                /* a lock the application held is not a failure of the job */
                if (r->status == MAINT_OK || r->status == MAINT_SKIPPED)
                        mm->job_failures = 0;
                else if (r->status != MAINT_BUSY && r->status != MAINT_INTERRUPTED &&
                         r->status != MAINT_HOOK_REFUSED) /* the admin's hook said not now */
                        mm->job_failures++;
        }
        answer_waiters(m, t, j->op, r, NULL);
        metrics_changed(m);
}

/* On the loop thread, when a worker is done. */
static void job_finished(struct job *j, void *userdata)
{
        struct manager *m = userdata;
        struct target *t = j->owner;

        t->job = NULL;
        if (j->op == MAINT_OP_STATS)
                m->running_stats--;
        else
                m->running_jobs--;

        if (t->state == TARGET_REMOVED) {
                /* Dropped while it ran: its result still belongs in the journal. */
                if (j->op != MAINT_OP_STATS)
                        event_job_done(t, j, deep_scan_window_end(j));
                answer_waiters(m, t, j->op, &j->res, NULL);
                set_state(m, t, TARGET_IDLE);
                target_free(t);
        } else if (j->op == MAINT_OP_STATS) {
                set_state(m, t, TARGET_IDLE);
                stat_done(m, t, j);
        } else {
                set_state(m, t, TARGET_IDLE);
                m->jobs_done++;
                job_applied(m, t, j);
                job_counted(m, t, j);
        }
        job_free(j);
        dispatch(m);
        update_status(m);
        maybe_done(m);
}

static void dispatch_cb(uv_timer_t *timer)
{
        dispatch(timer->data);
}

/* The queue as sched_dispatch() sees it, in its order, into m->jobs. */
static int describe_queue(struct manager *m)
{
        const struct target *t;
        size_t i = 0;

        if (util_grow(&m->jobs, &m->jobs_cap, m->queue_n, sizeof(*m->jobs), 64) < 0)
                return -ENOMEM;
        TAILQ_FOREACH(t, &m->queue, link)
                m->jobs[i++] = (struct sched_job){
                        .op = t->op,
                        .reason = t->reason,
                        .urgent = t->urgent,
                        .fragmentation_percent = t->stat.fragmentation_percent,
                        .in_use = file_in_use(m, t),
                        .retry_at_ms = t->retry_at,
                        .window = t->dc->vacuum.window,
                };
        return 0;
}

static struct target *queued_at(struct manager *m, size_t index)
{
        struct target *t = TAILQ_FIRST(&m->queue);

        while (index-- > 0)
                t = TAILQ_NEXT(t, link);
        return t;
}

/* Start what may start: precise reads, then maintenance as
 * sched_dispatch() picks it; arm the dispatch timer for the earliest
 * backoff still to run out. */
static void dispatch(struct manager *m)
{
        uint64_t now = util_monotonic_ms(), next = UINT64_MAX;
        int minute = minute_of_day();
        struct target *t;

        if (m->stopping)
                return;
        while (m->running_stats < STAT_JOBS_MAX && (t = TAILQ_FIRST(&m->statq))) {
                set_state(m, t, TARGET_IDLE);
                /* queued before another path's job took the file: the
                 * next poll looks again, once that job is done */
                if (!file_in_use(m, t) && start_job(m, t, MAINT_OP_STATS) < 0)
                        event_cannot_start(t->path, MAINT_OP_STATS);
        }
        for (;;) {
                struct sched_dispatch d;

                if (describe_queue(m) < 0) {
                        log_msg(LOG_ERR, "out of memory choosing the next job, trying again later");
                        break;
                }
                d = sched_dispatch(m->jobs, m->queue_n, m->running_jobs, m->max_jobs, now, minute,
                                   m->ignore_window);
                next = d.wake_ms < next ? d.wake_ms : next;
                if (d.choice == SCHED_DISPATCH_NONE)
                        break;
                t = queued_at(m, d.index);
                set_state(m, t, TARGET_IDLE);
                if (d.choice == SCHED_DISPATCH_WINDOW_CLOSED) { /* a later poll decides again */
                        event_window_closed(t);
                        answer_waiters(m, t, t->op, NULL, "its window closed before it could start; a later poll "
                                       "decides again");
                        t->logged_reason = SCHED_REASON_NONE;
                        continue;
                }
                if (start_job(m, t, t->op) < 0) {
                        event_cannot_start(t->path, t->op);
                        answer_waiters(m, t, t->op, NULL, "its job could not start; the journal says why");
                }
        }
        if (next != UINT64_MAX)
                uv_timer_start(&m->dispatch_timer, dispatch_cb, next - now, 0);
        update_status(m);
}

/* --- the poll ------------------------------------------------------------ */

/* A path the expansion did not follow: reported once, while it lasts. */
static void target_refused(void *userdata, const struct db_conf *dc, const char *path, const char *why)
{
        struct manager *m = userdata;
        bool created;
        struct target *r;

        if (!path) {
                event_entry_capped(dc->path, why, dc->limits.max_matches);
                return;
        }
        /* remembered one by one, up to a bound: past it, counted */
        if (m->refused.n >= REFUSED_MAX && !targets_find(&m->refused, path)) {
                m->refused_over++;
                return;
        }
        r = targets_get(&m->refused, path, &created);
        if (!r)
                return;
        r->seen = true;
        if (created)
                event_path_refused(path, dc->path, why);
}

/* A walk of the paths and globs applied: new targets added, paths not
 * followed reported, what no longer matches dropped. 0, -ENOMEM, or
 * -ESTALE when a reload came after the walk began (nothing changed). */
static int apply_listing(struct manager *m, struct listing *l)
{
        const struct targets_events ev = { target_added, target_refused, m };
        int r;

        if (targets_listing_stale(&m->targets, l))
                return -ESTALE;
        for (size_t i = 0; i < m->refused.n; i++)
                m->refused.v[i]->seen = false;
        m->refused_over = 0;
        r = targets_apply(&m->targets, l, &ev);
        if (m->refused_over && !m->refused_over_said)
                event_refused_counted(m->refused_over, REFUSED_MAX);
        m->refused_over_said = m->refused_over > 0;
        /* refused paths no longer met are forgotten: met again, reported
         * again (not after a walk that failed: it did not look) */
        for (size_t i = m->refused.n; r >= 0 && i-- > 0;)
                if (!m->refused.v[i]->seen) {
                        struct target *t = m->refused.v[i];

                        targets_remove(&m->refused, t);
                        target_free(t);
                }

        if (r < 0)
                return r;
        for (size_t i = m->targets.n; i-- > 0;) {
                struct target *t = m->targets.v[i];

                if (t->seen)
                        continue;
                event_db_removed(t->path, t->explicit_path ? "left the configuration"
                                                           : "no longer matches any configured path", false);
                target_drop(m, t);
        }
        m->expanded = true;
        m->expanded_now = true;
        return 0;
}

/* A walk's listing applied (r: apply_listing()'s), then let go: whether
 * the next poll must walk again is what it could not watch. */
static int listing_done(struct manager *m, struct listing *l, int r)
{
        if (r == 0) {
                size_t remote, refused;
                int why;

                m->walk_needed = !targets_listing_complete(l);
                targets_listing_unwatched(l, &remote, &refused, &why);
                if (m->notify_on)
                        event_unwatched(remote, refused, why, &m->unwatched_said);
        } else if (r != -ESTALE) {
                m->walk_needed = true;
        }
        targets_listing_discard(&m->targets, l);
        return r;
}

/* The paths and globs expanded now, on the loop thread: at start, before
 * READY=1, and at a reload, which must point every target at the new
 * configuration before the old one is freed. */
static int expand(struct manager *m)
{
        struct listing *l = targets_listing_new(&m->targets);

        if (!l)
                return -ENOMEM;
        targets_list(l);
        return listing_done(m, l, apply_listing(m, l));
}

/* --- change notification ------------------------------------------------ */

/* Every event inotify holds, applied (targets_notify()). */
static void notify_drain(struct manager *m)
{
        char buf[16384] __attribute__((aligned(__alignof__(struct inotify_event))));
        ssize_t n;

        if (!m->notify_on)
                return;
        while ((n = read(m->targets.notify_fd, buf, sizeof(buf))) > 0)
                for (char *p = buf; p < buf + n;) {
                        const struct inotify_event *ev = (const struct inotify_event *)p;

                        if (targets_notify(&m->targets, ev) & NOTIFY_WALK)
                                m->walk_needed = true;
                        p += sizeof(*ev) + ev->len;
                }
}

static void notify_rearm(uv_timer_t *timer);

/* Readable: drained, then not looked at for NOTIFY_BATCH_MS (a poll
 * drains it first all the same). */
static void notify_cb(uv_poll_t *h, int status, int events)
{
        struct manager *m = h->data;

        notify_drain(m);
        uv_poll_stop(h);
        uv_timer_start(&m->notify_timer, notify_rearm, NOTIFY_BATCH_MS, 0);
}

static void notify_rearm(uv_timer_t *timer)
{
        struct manager *m = timer->data;

        if (!m->stopping)
                uv_poll_start(&m->notify_poll, UV_READABLE, notify_cb);
}

/* A mount or unmount somewhere: the walk looks again, and a directory it
 * finds to be another (device, inode, mount) has its databases read. */
static void mounts_cb(uv_poll_t *h, int status, int events)
{
        struct manager *m = h->data;

        m->walk_needed = true;
        /* libuv stops a handle whose descriptor reports POLLERR, as this
         * one does with POLLPRI: started again, it reports the next change */
        if (!m->stopping)
                uv_poll_start(h, UV_PRIORITIZED, mounts_cb);
}

/* inotify for the running daemon (not --once: it reads everything once):
 * without it (no descriptors, a kernel without it), every poll walks and
 * reads every database. */
static void notify_start(struct manager *m)
{
        int r = targets_notify_open(&m->targets);

        if (r < 0 || uv_poll_init(&m->loop, &m->notify_poll, m->targets.notify_fd) < 0) {
                log_msg(LOG_WARNING, "cannot watch the database directories for changes (%s): every poll reads every "
                        "database", strerror(r < 0 ? -r : EIO));
                return;
        }
        m->mounts_fd = open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC);
        if (m->mounts_fd < 0 || uv_poll_init(&m->loop, &m->mounts_poll, m->mounts_fd) < 0) {
                log_msg(LOG_WARNING, "cannot watch the mount table (%s): every poll reads every database",
                        strerror(m->mounts_fd < 0 ? errno : EIO));
                uv_close((uv_handle_t *)&m->notify_poll, NULL);
                if (m->mounts_fd >= 0)
                        close(m->mounts_fd);
                m->mounts_fd = -1;
                return;
        }
        m->notify_poll.data = m->mounts_poll.data = m;
        m->notify_on = true;
        uv_poll_start(&m->notify_poll, UV_READABLE, notify_cb);
        uv_poll_start(&m->mounts_poll, UV_PRIORITIZED, mounts_cb);
}

/* --- the loop's lateness -------------------------------------------------- */

/* How late a tick ran: kept for the round's figures (loop lag). */
static void lag_note(struct lag *g, uint64_t late_us)
{
        g->v[g->next] = late_us > UINT32_MAX ? UINT32_MAX : (uint32_t)late_us;
        g->next = (g->next + 1) % ELEMENTSOF(g->v);
        if (g->n < ELEMENTSOF(g->v))
                g->n++;
        if (late_us > g->max_us)
                g->max_us = late_us;
}

static int u32_cmp(const void *a, const void *b)
{
        uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

        return (x > y) - (x < y);
}

/* The 99th percentile of the lateness kept, microseconds. */
static uint64_t lag_p99(const struct lag *g)
{
        uint32_t v[ELEMENTSOF(g->v)];

        if (g->n == 0)
                return 0;
        memcpy(v, g->v, g->n * sizeof(*v));
        qsort(v, g->n, sizeof(*v), u32_cmp);
        return v[(g->n * 99 + 99) / 100 - 1];
}

static void tick_cb(uv_timer_t *timer)
{
        struct manager *m = timer->data;
        uint64_t now = uv_hrtime();
        size_t reads = 0, looks = 0;
        struct target *t;

        if (m->tick_due_ns) {
                lag_note(&m->lag, now > m->tick_due_ns ? (now - m->tick_due_ns) / 1000 : 0);
                m->tick_due_ns = now + m->tick_ms * 1000000;
        }
        notify_drain(m);
        while (reads < m->per_tick && looks < POLL_LOOKS_MAX && (t = TAILQ_FIRST(&m->round))) {
                round_remove(m, t);
                if (poll_target(m, t))
                        reads++;
                else
                        looks++;
                if (((reads + looks) & 15) == 0 && uv_hrtime() - now > TICK_BUDGET_NS)
                        break;
        }
        if (!TAILQ_EMPTY(&m->round) && reads < m->per_tick && looks < POLL_LOOKS_MAX) {
                /* out of time: the rest at the loop's next turn */
                uv_timer_start(&m->tick_timer, tick_cb, 0, m->tick_ms);
                m->tick_due_ns = uv_hrtime();
        }
        if (TAILQ_EMPTY(&m->round)) {
                uv_timer_stop(&m->tick_timer);
                m->round_active = false;
                m->fig.lag_p99_us = lag_p99(&m->lag);
                m->fig.lag_max_us = m->lag.max_us;
                m->last_fig = m->fig;
                m->counts.rounds++;
                m->last_round_end_ms = util_wall_ms();
                m->last_round_ms = util_monotonic_ms() - m->round_started_ms;
                event_poll_round_done(&m->fig);
                update_status(m);
                metrics_changed(m);
        }
        dispatch(m);
        maybe_done(m);
        /* the next timeout from now, not from before this tick's work */
        uv_update_time(&m->loop);
}

static void round_clear(struct manager *m)
{
        struct target *t;

        while ((t = TAILQ_FIRST(&m->round)))
                round_remove(m, t);
        m->round_active = false;
}

/* A poll round over the targets as they are: their header reads spread
 * over most of the interval. */
static void start_round(struct manager *m)
{
        uint64_t spread, tick;
        int64_t now;
        size_t n;

        m->expanded_now = false;
        m->round_started_ms = util_monotonic_ms();
        round_clear(m);
        m->fig = (struct event_round){ 0 };
        m->lag = (struct lag){ .n = 0 };
        /* A database whose decision stands is not in the round at all: an
         * idle host's round is one wake-up, whatever it watches. */
        now = util_wall_ms();
        n = 0;
        for (size_t i = 0; i < m->targets.n; i++) {
                struct target *t = m->targets.v[i];

                if (decision_stands(m, t, now)) {
                        m->fig.unchanged++;
                        event_nothing_to_do(t, t->logged_reason); /* what decide() would find */
                        continue;
                }
                TAILQ_INSERT_TAIL(&m->round, t, round_link);
                t->in_round = true;
                n++;
        }
        m->round_active = true;

        /* Spread the reads over most of the interval, POLL_BATCH or more
         * per tick, so ten thousand databases are neither read at the same
         * moment nor each at a wake-up of its own. */
        spread = m->conf->poll_interval_ms * POLL_SPREAD_PERCENT / 100;
        if (m->once || n <= POLL_BATCH || spread < POLL_TICK_MIN_MS) {
                m->per_tick = n ? n : 1;
                tick = 0;
        } else {
                uint64_t ticks = n / POLL_BATCH;

                if (ticks > spread / POLL_TICK_MIN_MS)
                        ticks = spread / POLL_TICK_MIN_MS;
                tick = spread / ticks;
                m->per_tick = (size_t)((n + ticks - 1) / ticks);
        }
        m->tick_ms = tick ? tick : 1;
        m->tick_due_ns = 0;
        event_poll_round(m->targets.n, n, m->per_tick, tick);
        uv_timer_start(&m->tick_timer, tick_cb, 0, tick ? tick : 1);
        m->tick_due_ns = uv_hrtime();
}

static void list_work(uv_work_t *req)
{
        struct manager *m = req->data;

        targets_list(m->listing);
}

/* The walk is done: applied, then the round it was for. */
static void list_done(uv_work_t *req, int status)
{
        struct manager *m = req->data;
        struct listing *l = m->listing;
        int r = m->stopping ? -ESTALE : apply_listing(m, l);

        m->listing = NULL;
        r = listing_done(m, l, r);
        if (m->stopping) {
                maybe_done(m);
                return;
        }
        if (r == -ESTALE) /* a reload expanded the new paths meanwhile */
                return;
        /* A walk that failed (no descriptor left, no memory) changes no
         * target: the round goes on over those known, said once while it lasts. */
        if (r < 0 && r != m->expand_error)
                log_msg(LOG_ERR, "cannot expand the database paths (%s): polling the databases already watched "
                        "until it can", strerror(-r));
        else if (r == 0 && m->expand_error)
                log_msg(LOG_NOTICE, "the database paths are expanded again");
        m->expand_error = r;
        start_round(m);
        update_status(m);
}

/* Each poll walks the configured paths on a worker (a directory of
 * 100,000 names is far more than a header read), then starts its round;
 * the first after start or a reload uses the walk just made. */
static void poll_cb(uv_timer_t *timer)
{
        struct manager *m = timer->data;

        /* A round not done by now (a slow or busy machine) goes on: a new
         * one would start again from the first database, and those at the
         * end would never be read. */
        if (m->round_active) {
                log_msg(LOG_DEBUG, "poll: the last round is still going; this poll is skipped");
                return;
        }
        /* the full sweep: whatever inotify said, or could not (by the
         * loop's clock, the timer's own: a poll a millisecond early for it
         * is the one it is due at) */
        if (!m->once && uv_now(&m->loop) + POLL_TICK_MIN_MS >= m->sweep_at) {
                for (size_t i = 0; i < m->targets.n; i++)
                        m->targets.v[i]->clean = false;
                m->walk_needed = true;
                m->sweep_at = uv_now(&m->loop) + m->conf->full_sweep_interval_ms;
        }
        notify_drain(m);
        if (m->expanded_now || !m->walk_needed) {
                start_round(m);
                return;
        }
        if (m->listing) {
                log_msg(LOG_DEBUG, "poll: the last walk of the database paths is still running; this poll is skipped");
                return;
        }
        m->listing = targets_listing_new(&m->targets);
        if (!m->listing) {
                log_msg(LOG_ERR, "out of memory expanding the database paths, skipping this poll");
                return;
        }
        if (uv_queue_work(&m->loop, &m->list_req, list_work, list_done) != 0) {
                targets_listing_discard(&m->targets, m->listing);
                m->listing = NULL;
        }
}

/* --- signals, reload, stop --------------------------------------------- */

static void prune_cb(uv_timer_t *timer);

static void reload(struct manager *m)
{
        struct conf_diag d = { 0 };
        struct conf *c = NULL, *old;
        int r;

        notify_reloading();
        event_reloading(m->conf_file);
        r = conf_load(m->conf_file, &c, &d);
        if (r < 0) {
                event_reload_failed(m->conf_file, &d, r);
                conf_diag_clear(&d);
                notify_ready();
                update_status(m);
                return;
        }
        if (strcmp(c->state_dir, m->conf->state_dir) != 0)
                event_state_dir_kept(c->state_dir, m->conf->state_dir);
        if (strcmp(c->control_socket, m->conf->control_socket) != 0 || c->control_gid != m->conf->control_gid)
                log_msg(LOG_NOTICE, "control_socket and control_group changed: they take effect at the next "
                        "start; %s stays as it was", m->conf->control_socket);
        old = m->conf;
        m->conf = c;
        /* the admin's part of each path is resolved again: a reload is
         * when the admin says it may have changed */
        if (targets_configure(&m->targets, c) < 0)
                log_msg(LOG_ERR, "out of memory resolving the database paths");
        /* Every target now points into the new conf, or is dropped. Running
         * jobs carry copies of their settings and are not disturbed. */
        r = expand(m);
        if (r < 0) {
                log_msg(LOG_ERR, "cannot expand the database paths (%s)", strerror(-r));
                /* a failed walk changes no target, but each must point
                 * into the new configuration: at the first entry that
                 * matches its path, or it has left it */
                for (size_t i = m->targets.n; i-- > 0;) {
                        struct target *t = m->targets.v[i];

                        t->dc = conf_match(c, t->path);
                        if (!t->dc) {
                                event_db_removed(t->path, "left the configuration", false);
                                target_drop(m, t);
                        }
                }
        }
        for (size_t i = 0; i < m->targets.n; i++) {
                struct target *t = m->targets.v[i];

                if (t->state == TARGET_HELD && target_memo_get(t)->hold_on_change)
                        set_state(m, t, TARGET_IDLE); /* the new settings may fix it */
                if (t->memo)
                        t->memo->rowid_hold = false;
                t->logged_reason = SCHED_REASON_NONE;
                t->clean = false; /* looked at anew, under the new settings */
        }
        m->max_jobs = c->max_concurrent_jobs;
        if (m->max_jobs > m->pool_size - STAT_JOBS_MAX - POOL_SPARE) {
                event_jobs_capped(c->max_concurrent_jobs, m->pool_size - STAT_JOBS_MAX - POOL_SPARE);
                m->max_jobs = m->pool_size - STAT_JOBS_MAX - POOL_SPARE;
        }
        conf_free(old);
        event_reloaded(m->conf_file, c->n_dbs, m->targets.n);
        /* With --once, the one poll is the one that began: no more. */
        if (!m->once) {
                uv_timer_start(&m->poll_timer, poll_cb, 0, c->poll_interval_ms);
                /* the set of databases may have changed: the state file
                 * forgets those whose files are gone now too */
                prune_cb(&m->prune_timer);
        }
        notify_ready();
        update_status(m);
        /* the reload may have taken away what the run waited for */
        maybe_done(m);
}

static void close_cb(uv_handle_t *h)
{
        (void)h;
}

/* --- the control socket (docs/CONTROL.md) ----------------------------- */

/* The metrics file is written at most this often (ms). */
#define METRICS_MIN_GAP_MS 10000
/* Databases a slice of a long reply (status of all, metrics) covers. */
#define REPLY_SLICE 256

static void daemon_figures(const struct manager *m, struct report_daemon *d)
{
        *d = (struct report_daemon){
                .conf_file = m->conf_file,
                .started_ms = m->started_ms,
                .now_ms = util_wall_ms(),
                .poll_interval_ms = m->conf->poll_interval_ms,
                .watched = m->targets.n,
                .queued = m->queue_n,
                .running = m->running_jobs,
                .last_round = m->last_round_end_ms ? &m->last_fig : NULL,
                .last_round_end_ms = m->last_round_end_ms,
                .last_round_ms = m->last_round_ms,
                .counts = &m->counts,
        };
}

/* The first target whose path sorts after after (NULL: the first). */
static size_t targets_after(const struct manager *m, const char *after)
{
        size_t lo = 0, hi = m->targets.n;

        if (!after)
                return 0;
        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;

                if (strcmp(m->targets.v[mid]->path, after) <= 0)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return lo;
}

/* A reply made a slice at a time. Its place in the set is a path, not an
 * index: databases come and go between slices. */
struct slices {
        struct manager *m;
        bool metrics;   /* else status of every database */
        int family;     /* metrics: -1 the daemon's, then each per-database one, then the end */
        char *after;    /* the last path written in this part; NULL: none yet */
        size_t left_out; /* metrics: databases whose path is not UTF-8 */
        struct json j;
};

static void slices_free(void *state)
{
        struct slices *sl = state;

        free(sl->after);
        free(sl);
}

/* The next REPLY_SLICE databases of this part; false at its end. */
static bool next_targets(struct slices *sl, FILE *out)
{
        size_t i = targets_after(sl->m, sl->after), end = i + REPLY_SLICE;
        char *last;

        for (; i < sl->m->targets.n && i < end; i++) {
                const struct target *t = sl->m->targets.v[i];

                if (!sl->metrics) {
                        struct report_progress p;

                        report_target_json(&sl->j, NULL, t, util_wall_ms(),
                                           vacuum_progress(sl->m, t, &p) ? &p : NULL);
                } else if (!report_metrics_exportable(t)) {
                        sl->left_out += sl->family == 0;
                } else {
                        (void)report_metrics_sample(out, sl->family, t);
                }
        }
        if (i >= sl->m->targets.n)
                return false;
        last = strdup(sl->m->targets.v[i - 1]->path);
        if (last) { /* without memory: the same slice again, later */
                free(sl->after);
                sl->after = last;
        }
        return true;
}

static bool status_produce(void *state, FILE *out)
{
        struct slices *sl = state;
        struct report_daemon d;

        sl->j.f = out;
        if (sl->family < 0) {
                daemon_figures(sl->m, &d);
                json_object_begin(&sl->j, NULL);
                json_bool(&sl->j, "ok", true);
                json_object_begin(&sl->j, "daemon");
                report_daemon_json(&sl->j, &d);
                json_object_end(&sl->j);
                json_array_begin(&sl->j, "databases");
                sl->family = 0;
                return false;
        }
        if (next_targets(sl, out))
                return false;
        json_array_end(&sl->j);
        json_object_end(&sl->j);
        fputc('\n', out);
        return true;
}

static bool metrics_produce(void *state, FILE *out)
{
        struct slices *sl = state;
        struct report_daemon d;

        if (sl->family < 0) {
                daemon_figures(sl->m, &d);
                report_metrics_daemon(out, &d);
                sl->family = 0;
                report_metrics_family_head(out, 0);
                return false;
        }
        if (next_targets(sl, out))
                return false;
        free(sl->after);
        sl->after = NULL;
        if (++sl->family < REPORT_DB_FAMILIES) {
                report_metrics_family_head(out, sl->family);
                return false;
        }
        fputs("# HELP sqlite_maintd_databases_not_exported Databases left out of the per-database metrics: "
              "their path is not UTF-8.\n# TYPE sqlite_maintd_databases_not_exported gauge\n", out);
        fprintf(out, "sqlite_maintd_databases_not_exported %zu\n", sl->left_out);
        return true;
}

static struct slices *slices_new(struct manager *m, bool metrics)
{
        struct slices *sl = calloc(1, sizeof(*sl));

        if (sl) {
                sl->m = m;
                sl->metrics = metrics;
                sl->family = -1;
        }
        return sl;
}

/* A reply of one JSON object made by fill, or an error reply. */
static void reply_json(struct control_conn *c, void (*fill)(struct json *, const void *), const void *arg)
{
        char *text = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&text, &len);
        struct json j;

        if (!f) {
                control_reply(c, "{\"ok\": false, \"error\": \"out of memory\"}", 38);
                return;
        }
        json_init(&j, f);
        json_object_begin(&j, NULL);
        fill(&j, arg);
        json_object_end(&j);
        if (fclose(f) != 0)
                control_reply(c, "{\"ok\": false, \"error\": \"out of memory\"}", 38);
        else
                control_reply(c, text, len);
        free(text);
}

static void fill_error(struct json *j, const void *arg)
{
        json_bool(j, "ok", false);
        json_str(j, "error", arg);
}

static void reply_error(struct control_conn *c, const char *fmt, ...) LOG_PRINTF(2, 3);
static void reply_error(struct control_conn *c, const char *fmt, ...)
{
        char why[PATH_MAX + 256];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(why, sizeof(why), fmt, ap);
        va_end(ap);
        reply_json(c, fill_error, why);
}

/* The target a request names: its path as configured, else the same file
 * (device and inode, as the last poll found it) under another spelling. */
static struct target *requested_target(struct manager *m, const char *db)
{
        struct target *t = targets_find(&m->targets, db);
        struct stat st;

        if (t || stat(db, &st) < 0)
                return t;
        for (size_t i = 0; i < m->targets.n; i++)
                if (m->targets.v[i]->dev == st.st_dev && m->targets.v[i]->ino == st.st_ino)
                        return m->targets.v[i];
        return NULL;
}

struct target_reply {
        const struct manager *m;
        const struct target *t;
};

static void fill_status_one(struct json *j, const void *arg)
{
        const struct target_reply *tr = arg;
        struct report_progress p;
        struct report_daemon d;

        daemon_figures(tr->m, &d);
        json_bool(j, "ok", true);
        json_object_begin(j, "daemon");
        report_daemon_json(j, &d);
        json_object_end(j);
        json_array_begin(j, "databases");
        report_target_json(j, NULL, tr->t, d.now_ms, vacuum_progress(tr->m, tr->t, &p) ? &p : NULL);
        json_array_end(j);
}

static void fill_explain(struct json *j, const void *arg)
{
        const struct target_reply *tr = arg;
        char *text = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&text, &len);

        if (f) {
                report_explain(f, tr->t, util_wall_ms(), minute_of_day(), tr->m->ignore_window,
                               tr->m->conf->poll_interval_ms, vacuum_estimate_ms(tr->m, tr->t));
                if (fclose(f) != 0) {
                        free(text);
                        text = NULL;
                }
                /* each sentence ends in a space: not the last */
                while (text && len >= 2 && text[len - 2] == ' ') {
                        text[len - 2] = '\n';
                        text[--len] = '\0';
                }
        }
        json_bool(j, "ok", text != NULL);
        json_str(j, "db", tr->t->path);
        json_str(j, text ? "explanation" : "error", text ? text : "out of memory");
        free(text);
}

struct run_reply {
        const struct target *t;
        enum maint_op op;
        const char *message;
        const struct maint_result *res; /* --wait: the job's result; NULL: queued */
};

static void fill_run(struct json *j, const void *arg)
{
        const struct run_reply *rr = arg;

        json_bool(j, "ok", true);
        json_str(j, "db", rr->t->path);
        json_str(j, "operation", maint_op_name(rr->op));
        if (!rr->res) {
                json_str(j, "message", rr->message);
                return;
        }
        json_str(j, "result", maint_status_name(rr->res->status));
        json_str(j, "message", rr->res->message);
        if (rr->res->have_before)
                json_fixed2(j, "fragmentation_before_percent", rr->res->before.fragmentation_percent);
        if (rr->res->have_after)
                json_fixed2(j, "fragmentation_after_percent", rr->res->after.fragmentation_percent);
        json_u64(j, "bytes_given_back", maint_bytes_given_back(rr->op, rr->res));
        json_u64(j, "duration_ms", rr->res->duration_ms);
}

/* sqlite-maintctl history: the state file read on a worker (a worker's
 * fsync'ing write may hold it), the reply sent from the loop. */
#define HISTORY_MAX_JOBS 1000

struct history_work {
        uv_work_t req;
        struct manager *m;
        struct control_conn *conn; /* NULL once its client is gone */
        char *db;                  /* NULL: every database */
        int64_t since_ms;
        char *text;
        size_t len;
        LIST_ENTRY(history_work) link;
};

static void history_read(uv_work_t *req)
{
        struct history_work *h = req->data;
        FILE *f = open_memstream(&h->text, &h->len);
        struct json j;
        int r;

        if (!f)
                return;
        json_init(&j, f);
        json_object_begin(&j, NULL);
        r = state_jobs_json(h->m->state, h->db, h->since_ms, HISTORY_MAX_JOBS, &j);
        json_bool(&j, "ok", r == 0);
        if (r < 0)
                json_str(&j, "error", "cannot read the state file");
        json_object_end(&j);
        if (fclose(f) != 0) {
                free(h->text);
                h->text = NULL;
        }
}

static void history_done(uv_work_t *req, int status)
{
        struct history_work *h = req->data;

        (void)status;
        LIST_REMOVE(h, link);
        if (h->conn && h->text)
                control_reply(h->conn, h->text, h->len);
        else if (h->conn)
                reply_error(h->conn, "out of memory");
        free(h->text);
        free(h->db);
        free(h);
}

static void control_history(struct manager *m, struct control_conn *c, const struct control_request *req)
{
        struct history_work *h = calloc(1, sizeof(*h));
        const struct target *t = req->db ? requested_target(m, req->db) : NULL;

        if (!h) {
                reply_error(c, "out of memory");
                return;
        }
        *h = (struct history_work){ .m = m, .conn = c, .since_ms = req->since_ms };
        /* a database's past under its configured path, or as given (it may be gone) */
        if (req->db && !(h->db = strdup(t ? t->path : req->db))) {
                free(h);
                reply_error(c, "out of memory");
                return;
        }
        h->req.data = h;
        LIST_INSERT_HEAD(&m->history, h, link);
        if (uv_queue_work(&m->loop, &h->req, history_read, history_done) < 0) {
                LIST_REMOVE(h, link);
                free(h->db);
                free(h);
                reply_error(c, "cannot read the state file now");
        }
}

/* The jobs run asks for, by their names; -1 for another word. */
static int run_op(const struct target *t, const char *name)
{
        /* incremental where the entry and the database allow it, as the
         * scheduler chooses (sched_vacuum_action()); else a full VACUUM */
        if (strcmp(name, "vacuum") == 0)
                return t->have_stat && sched_vacuum_action(&t->stat, &t->dc->vacuum) == SCHED_INCREMENTAL_VACUUM
                               ? MAINT_OP_INCREMENTAL_VACUUM
                               : MAINT_OP_VACUUM;
        if (strcmp(name, "analyze") == 0)
                return MAINT_OP_ANALYZE;
        if (strcmp(name, "check") == 0)
                return MAINT_OP_CHECK;
        if (strcmp(name, "checkpoint") == 0)
                return MAINT_OP_CHECKPOINT;
        return -1;
}

static bool add_waiter(struct manager *m, struct control_conn *c, struct target *t, enum maint_op op)
{
        struct waiter *w = calloc(1, sizeof(*w));

        if (!w)
                return false;
        *w = (struct waiter){ .conn = c, .t = t, .op = op };
        LIST_INSERT_HEAD(&m->waiters, w, link);
        return true;
}

/* sqlite-maintctl run: the job queued now, every safety check in it. */
static void control_run(struct manager *m, struct control_conn *c, struct target *t, const char *name, bool wait)
{
        int op = run_op(t, name);
        struct run_reply rr = { .t = t, .op = (enum maint_op)op };

        if (op < 0) {
                if (*name)
                        reply_error(c, "unknown operation '%s': vacuum, analyze, check or checkpoint", name);
                else
                        reply_error(c, "run needs \"operation\": vacuum, analyze, check or checkpoint");
                return;
        }
        if (m->dry_run || m->stopping) {
                reply_error(c, "the daemon %s: it runs no job", m->dry_run ? "runs with --dry-run" : "is stopping");
                return;
        }
        if ((t->state == TARGET_QUEUED || t->state == TARGET_RUNNING) && (int)t->op == op) {
                rr.message = t->state == TARGET_QUEUED ? "already queued" : "already running";
        } else if (t->state != TARGET_IDLE && t->state != TARGET_HELD) {
                reply_error(c, "%s: busy with %s; ask again when it is done", t->path,
                            t->state == TARGET_QUEUED || t->state == TARGET_RUNNING ? maint_op_name(t->op)
                                                                                    : "a statistics read");
                return;
        } else {
                set_state(m, t, TARGET_IDLE);
                enqueue(m, t, (enum maint_op)op, SCHED_REASON_REQUESTED, true);
                rr.message = "queued";
                dispatch(m);
                update_status(m);
        }
        if (!wait) {
                reply_json(c, fill_run, &rr);
                return;
        }
        if (!add_waiter(m, c, t, (enum maint_op)op))
                reply_error(c, "out of memory");
}

/* A request from an allowed peer (control.h). */
static void control_request_cb(void *userdata, struct control_conn *c, const struct control_request *req)
{
        struct manager *m = userdata;
        struct target_reply tr = { .m = m };
        struct slices *sl;
        bool all = !req->db && strcmp(req->command, "status") == 0;

        if (strcmp(req->command, "metrics") == 0 || all) {
                sl = slices_new(m, !all);
                if (!sl)
                        reply_error(c, "out of memory");
                else
                        control_stream(c, all ? status_produce : metrics_produce, slices_free, sl);
                return;
        }
        if (strcmp(req->command, "history") == 0) {
                control_history(m, c, req);
                return;
        }
        if (strcmp(req->command, "status") != 0 && strcmp(req->command, "explain") != 0 &&
            strcmp(req->command, "run") != 0) {
                reply_error(c, "unknown command '%s': status, explain, run, history or metrics", req->command);
                return;
        }
        if (!req->db) {
                reply_error(c, "%s needs \"db\": the database's path", req->command);
                return;
        }
        tr.t = requested_target(m, req->db);
        if (!tr.t) {
                reply_error(c, "%s is not a database the daemon watches", req->db);
                return;
        }
        if (strcmp(req->command, "status") == 0) {
                reply_json(c, fill_status_one, &tr);
                return;
        }
        if (strcmp(req->command, "explain") == 0) {
                reply_json(c, fill_explain, &tr);
                return;
        }
        control_run(m, c, (struct target *)tr.t, req->operation, req->wait);
}

static void control_gone_cb(void *userdata, struct control_conn *c)
{
        struct manager *m = userdata;
        struct waiter *w, *next;
        struct history_work *h;

        LIST_FOREACH(h, &m->history, link)
                if (h->conn == c)
                        h->conn = NULL;
        for (w = LIST_FIRST(&m->waiters); w; w = next) {
                next = LIST_NEXT(w, link);
                if (w->conn == c) {
                        LIST_REMOVE(w, link);
                        free(w);
                }
        }
}

/* The waiters of t's job op: the job's result (res), or why there is none. */
static void answer_waiters(struct manager *m, const struct target *t, enum maint_op op, const struct maint_result *res,
                           const char *why)
{
        struct waiter *w, *next;

        for (w = LIST_FIRST(&m->waiters); w; w = next) {
                struct run_reply rr = { .t = w->t, .op = w->op, .res = res };

                next = LIST_NEXT(w, link);
                if (t && (w->t != t || w->op != op))
                        continue;
                LIST_REMOVE(w, link);
                if (res)
                        reply_json(w->conn, fill_run, &rr);
                else
                        reply_error(w->conn, "%s: %s", w->t->path, why);
                free(w);
        }
}

static void control_start(struct manager *m)
{
        const struct control_handlers h = { control_request_cb, control_gone_cb, m };
        const char *why;
        int r;

        if (m->once)
                return;
        r = control_open(&m->loop, m->conf->control_socket, m->conf->control_gid, &h, &m->control, &why);
        if (r == -ENOENT) /* outside the unit, whose RuntimeDirectory= makes /run/sqlite-maintd */
                log_msg(LOG_WARNING, "control socket %s: its directory does not exist; running without it "
                        "(sqlite-maintctl status, explain, run, history and metrics will not reach this daemon)",
                        m->conf->control_socket);
        else if (r < 0)
                log_msg(LOG_ERR, "control socket %s: %s (%s); running without it: sqlite-maintctl status, "
                        "explain, run, history and metrics will not reach this daemon", m->conf->control_socket, why,
                        strerror(-r));
}

/* --- the metrics file (docs/METRICS.md) ----------------------------- */

/* Written whole to a temporary file beside it, then renamed over it: the
 * textfile collector never reads half of one. On the loop, in slices of
 * metrics_produce(), each a loop turn of its own. */
struct metrics_write {
        struct manager *m;
        struct slices *sl;
        FILE *f;
        char path[PATH_MAX]; /* metrics_file when it began: a reload may change it meanwhile */
        char tmp[PATH_MAX + 16];
        uv_idle_t idle;
};

/* A failure said once while it lasts, and its end. */
static void metrics_said(struct manager *m, const char *path, int r)
{
        if (r < 0 && !m->metrics_failing)
                log_msg(LOG_WARNING, "metrics file %s: cannot write it: %s (said once until it can; a unit's "
                        "ReadWritePaths= must name its directory)", path, strerror(-r));
        else if (r == 0 && m->metrics_failing)
                log_msg(LOG_NOTICE, "metrics file %s: written again", path);
        m->metrics_failing = r < 0;
}

static void metrics_write_closed(uv_handle_t *h)
{
        free(h->data);
}

static void metrics_write_step(uv_idle_t *idle)
{
        struct metrics_write *w = idle->data;
        bool done = metrics_produce(w->sl, w->f);
        int r;

        if (!done && !ferror(w->f))
                return;
        /* the write's own error (ENOSPC) when a flush can still tell it */
        r = fflush(w->f) != 0 ? -errno : ferror(w->f) ? -EIO : 0;
        if (fclose(w->f) != 0 && r == 0)
                r = -errno;
        if (r == 0 && done && rename(w->tmp, w->path) < 0)
                r = -errno;
        if (r < 0 || !done)
                unlink(w->tmp);
        metrics_said(w->m, w->path, r);
        slices_free(w->sl);
        w->m->metrics_writing = NULL;
        uv_idle_stop(idle);
        uv_close((uv_handle_t *)idle, metrics_write_closed);
}

static void metrics_write_start(struct manager *m)
{
        struct metrics_write *w;
        int fd;

        if (!m->conf->metrics_file || m->once || m->stopping || m->metrics_writing)
                return;
        m->metrics_written_at = util_monotonic_ms();
        errno = 0;
        w = calloc(1, sizeof(*w));
        if (!w || (size_t)snprintf(w->path, sizeof(w->path), "%s", m->conf->metrics_file) >= sizeof(w->path) ||
            (size_t)snprintf(w->tmp, sizeof(w->tmp), "%s.tmp.XXXXXX", w->path) >= sizeof(w->tmp) ||
            !(w->sl = slices_new(m, true)) || (fd = mkostemp(w->tmp, O_CLOEXEC)) < 0) {
                int e = errno ? errno : ENOMEM;

                if (w)
                        free(w->sl);
                free(w);
                metrics_said(m, m->conf->metrics_file, -e);
                return;
        }
        (void)fchmod(fd, 0644); /* node_exporter runs as a user of its own */
        w->f = fdopen(fd, "w");
        if (!w->f) {
                close(fd);
                unlink(w->tmp);
                slices_free(w->sl);
                free(w);
                return;
        }
        w->m = m;
        uv_idle_init(&m->loop, &w->idle);
        w->idle.data = w;
        m->metrics_writing = w;
        uv_idle_start(&w->idle, metrics_write_step);
}

/* At the end: a write under way stops, its temporary file removed. */
static void metrics_write_abort(struct manager *m)
{
        struct metrics_write *w = m->metrics_writing;

        if (!w)
                return;
        fclose(w->f);
        unlink(w->tmp);
        slices_free(w->sl);
        m->metrics_writing = NULL;
        uv_idle_stop(&w->idle);
        uv_close((uv_handle_t *)&w->idle, metrics_write_closed);
}

static void metrics_timer_cb(uv_timer_t *timer)
{
        metrics_write_start(timer->data);
}

/* After a round or a job: the file again, at most every METRICS_MIN_GAP_MS. */
static void metrics_changed(struct manager *m)
{
        uint64_t now = util_monotonic_ms(), next = m->metrics_written_at + METRICS_MIN_GAP_MS;

        if (!m->conf->metrics_file || m->once || m->stopping)
                return;
        if (!m->metrics_written_at || now >= next)
                metrics_write_start(m);
        else if (!uv_is_active((uv_handle_t *)&m->metrics_timer))
                uv_timer_start(&m->metrics_timer, metrics_timer_cb, next - now, 0);
}

static void walk_close(uv_handle_t *h, void *arg)
{
        if (!uv_is_closing(h))
                uv_close(h, close_cb);
}

/* The signals the daemon answers: none may end it by its default action. */
static void stop_signals(sigset_t *s)
{
        sigemptyset(s);
        sigaddset(s, SIGTERM);
        sigaddset(s, SIGINT);
        sigaddset(s, SIGHUP);
}

static void close_all(struct manager *m)
{
        sigset_t s;

        log_flood_tick(true); /* what the last window dropped, said before the end */
        if (m->closed)
                return;
        m->closed = true;
        answer_waiters(m, NULL, MAINT_OP_STATS, NULL, "the daemon is stopping; its job did not run");
        control_close(m->control);
        m->control = NULL;
        metrics_write_abort(m);
        /* Closing the uv_signal handles gives the signals back their
         * default action, which for a second SIGTERM would end the
         * process before it has said goodbye: held in this thread (the
         * pool's threads never take them, manager_run), then ignored. */
        stop_signals(&s);
        pthread_sigmask(SIG_BLOCK, &s, NULL);
        uv_walk(&m->loop, walk_close, NULL);
        signal(SIGTERM, SIG_IGN);
        signal(SIGINT, SIG_IGN);
        signal(SIGHUP, SIG_IGN);
}

/* The one way the loop ends, whether it ran or not: every handle closed,
 * the loop run until they are, then closed. 0 or a libuv error. */
static int finish_loop(struct manager *m)
{
        int r;

        if (!m->loop_open)
                return 0;
        close_all(m);
        uv_run(&m->loop, UV_RUN_DEFAULT);
        r = uv_loop_close(&m->loop);
        if (r != 0)
                log_msg(LOG_ERR, "event loop did not close cleanly: %s", uv_strerror(r));
        m->loop_open = false;
        return r;
}

static void pool_started(uv_work_t *req)
{
        (void)req;
}

static void pool_started_done(uv_work_t *req, int status)
{
        (void)req;
        (void)status;
}

/* libuv starts its thread pool at the first work queued, each thread with
 * the mask of the thread that queues it: started now, with the signals
 * held, only the loop thread ever takes them. */
static void start_pool_without_signals(struct manager *m)
{
        sigset_t s, old;

        stop_signals(&s);
        pthread_sigmask(SIG_BLOCK, &s, &old);
        if (uv_queue_work(&m->loop, &m->pool_req, pool_started, pool_started_done) != 0)
                log_msg(LOG_WARNING, "cannot start the worker threads yet; a second SIGTERM while stopping may "
                        "end the daemon before it says so");
        pthread_sigmask(SIG_SETMASK, &old, NULL);
}

static void begin_stop(struct manager *m)
{
        struct target *t;

        event_stopping(m->running_jobs + m->running_stats, m->stopping);
        if (m->stopping)
                return;
        m->stopping = true;
        notify_stopping();
        uv_timer_stop(&m->poll_timer);
        uv_timer_stop(&m->prune_timer);
        uv_timer_stop(&m->tick_timer);
        uv_timer_stop(&m->dispatch_timer);
        uv_timer_stop(&m->notify_timer);
        if (m->notify_on) {
                uv_poll_stop(&m->notify_poll);
                uv_poll_stop(&m->mounts_poll);
        }
        round_clear(m);
        while ((t = TAILQ_FIRST(&m->queue))) {
                answer_waiters(m, t, t->op, NULL, "the daemon is stopping; its job did not run");
                set_state(m, t, TARGET_IDLE);
        }
        while ((t = TAILQ_FIRST(&m->statq)))
                set_state(m, t, TARGET_IDLE);
        /* Running jobs stop at their next safe point; the watchdog keeps
         * being fed while they do. */
        TAILQ_FOREACH(t, &m->running, link)
                job_cancel(t->job);
        maybe_done(m);
}

static void signal_cb(uv_signal_t *h, int signum)
{
        struct manager *m = h->data;

        if (signum == SIGHUP && !m->stopping)
                reload(m);
        else if (signum == SIGTERM || signum == SIGINT)
                begin_stop(m);
}

static void flood_cb(uv_timer_t *timer)
{
        log_flood_tick(false);
}

static void watchdog_cb(uv_timer_t *timer)
{
        notify_watchdog();
}

/* The state file forgets databases whose files are gone: at start, then
 * every PRUNE_INTERVAL_MS, on a worker (it looks at the file system). */
static void prune_work(uv_work_t *req)
{
        struct manager *m = req->data;

        m->prune_result = state_prune(m->state);
}

static void prune_done(uv_work_t *req, int status)
{
        struct manager *m = req->data;

        m->pruning = false;
        event_state_pruned(m->prune_result);
        maybe_done(m);
}

static void prune_cb(uv_timer_t *timer)
{
        struct manager *m = timer->data;

        if (m->pruning || m->stopping)
                return;
        if (uv_queue_work(&m->loop, &m->prune_req, prune_work, prune_done) == 0)
                m->pruning = true;
}

/* --- life cycle ----------------------------------------------------------- */

int manager_new(struct manager **ret, const struct manager_options *o, struct conf *conf)
{
        struct manager *m = calloc(1, sizeof(*m));
        const char *err;
        char n[16];
        int r;

        if (!m) {
                conf_free(conf);
                return -ENOMEM;
        }
        m->conf = conf;
        targets_init(&m->targets);
        m->mounts_fd = -1;
        TAILQ_INIT(&m->round);
        TAILQ_INIT(&m->statq);
        TAILQ_INIT(&m->queue);
        TAILQ_INIT(&m->running);
        LIST_INIT(&m->waiters);
        LIST_INIT(&m->history);
        m->started_ms = util_wall_ms();
        targets_init(&m->refused);
        m->once = o->once;
        m->dry_run = o->dry_run;
        m->ignore_window = o->ignore_window;
        m->conf_file = strdup(o->conf_file);
        if (!m->conf_file) {
                manager_free(m);
                return -ENOMEM;
        }
        r = state_open(m->conf->state_dir, &m->state, &err);
        if (r < 0) {
                log_msg(LOG_ERR, "cannot open the state file in %s: %s", m->conf->state_dir, err ? err : strerror(-r));
                manager_free(m);
                return r;
        }
        (void)state_vacuum_rate(m->state, &m->rate);
        if (state_load(m->state) < 0)
                log_msg(LOG_WARNING, "cannot read the state file in %s, starting without history",
                        m->conf->state_dir);

        /* The pool is sized once, before its first use: jobs, plus room for
         * statistics reads so they never wait behind a long VACUUM. */
        m->max_jobs = m->conf->max_concurrent_jobs;
        m->pool_size = m->max_jobs + STAT_JOBS_MAX + POOL_SPARE;
        if (m->pool_size < 4)
                m->pool_size = 4;
        snprintf(n, sizeof(n), "%u", m->pool_size);
        setenv("UV_THREADPOOL_SIZE", n, 1);

        r = uv_loop_init(&m->loop);
        if (r < 0) {
                log_msg(LOG_ERR, "cannot create the event loop: %s", uv_strerror(r));
                manager_free(m);
                return -EIO;
        }
        m->loop_open = true;
        uv_timer_init(&m->loop, &m->poll_timer);
        uv_timer_init(&m->loop, &m->tick_timer);
        uv_timer_init(&m->loop, &m->dispatch_timer);
        uv_timer_init(&m->loop, &m->watchdog_timer);
        uv_timer_init(&m->loop, &m->prune_timer);
        uv_timer_init(&m->loop, &m->flood_timer);
        uv_timer_init(&m->loop, &m->metrics_timer);
        uv_timer_init(&m->loop, &m->progress_timer);
        m->metrics_timer.data = m->progress_timer.data = m;
        uv_timer_init(&m->loop, &m->notify_timer);
        uv_signal_init(&m->loop, &m->sig_hup);
        uv_signal_init(&m->loop, &m->sig_term);
        uv_signal_init(&m->loop, &m->sig_int);
        m->poll_timer.data = m->tick_timer.data = m->dispatch_timer.data = m->watchdog_timer.data = m;
        m->notify_timer.data = m;
        m->prune_timer.data = m->prune_req.data = m->flood_timer.data = m->list_req.data = m;
        m->sig_hup.data = m->sig_term.data = m->sig_int.data = m;
        *ret = m;
        return 0;
}

int manager_run(struct manager *m)
{
        uint64_t wd = notify_watchdog_usec();
        int r;

        signal(SIGPIPE, SIG_IGN);
        srandom((unsigned)time(NULL) ^ (unsigned)getpid()); /* backoff jitter */
        start_pool_without_signals(m);
        uv_signal_start(&m->sig_hup, signal_cb, SIGHUP);
        uv_signal_start(&m->sig_term, signal_cb, SIGTERM);
        uv_signal_start(&m->sig_int, signal_cb, SIGINT);
        if (wd)
                uv_timer_start(&m->watchdog_timer, watchdog_cb, 0, wd / 2000 ? wd / 2000 : 1);

        if (!m->once)
                notify_start(m);
        m->sweep_at = uv_now(&m->loop) + m->conf->full_sweep_interval_ms;
        r = targets_configure(&m->targets, m->conf);
        if (r >= 0)
                r = expand(m);
        if (r < 0) {
                log_msg(LOG_ERR, "cannot expand the database paths: %s", strerror(-r));
                finish_loop(m);
                return EXIT_FAILURE;
        }
        event_started(m->conf_file, m->targets.n, m->once, m->dry_run, m->conf->poll_interval_ms, m->max_jobs);
        control_start(m);
        notify_ready();
        update_status(m);

        uv_timer_start(&m->flood_timer, flood_cb, FLOOD_TICK_MS, FLOOD_TICK_MS);
        if (m->once) {
                start_round(m);
        } else {
                uv_timer_start(&m->poll_timer, poll_cb, 0, m->conf->poll_interval_ms);
                uv_timer_start(&m->prune_timer, prune_cb, PRUNE_FIRST_MS, PRUNE_INTERVAL_MS);
        }

        uv_run(&m->loop, UV_RUN_DEFAULT); /* until a stop has closed every handle */
        r = finish_loop(m);
        event_stopped(m->jobs_done, m->failures);
        return r == 0 && (!m->once || m->failures == 0) ? EXIT_SUCCESS : EXIT_FAILURE;
}

struct manager *manager_free(struct manager *m)
{
        if (!m)
                return NULL;
        finish_loop(m); /* if it never ran: the handles made in manager_new */
        targets_clear(&m->targets);
        targets_clear(&m->refused);
        if (m->mounts_fd >= 0)
                close(m->mounts_fd);
        free(m->jobs);
        state_free(m->state);
        conf_free(m->conf);
        free(m->conf_file);
        free(m);
        return NULL;
}
