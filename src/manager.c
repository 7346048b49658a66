/* SPDX-License-Identifier: MIT */
/* The loop thread's world. Only this file touches the loop, the targets
 * and the queue; workers get a job and give back its result. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "conf.h"
#include "dbstat.h"
#include "job.h"
#include "log.h"
#include "maint.h"
#include "manager.h"
#include "msgid.h"
#include "notify.h"
#include "schedule.h"
#include "state.h"
#include "targets.h"
#include "util.h"

/* Precise statistics reads running at once, besides maintenance jobs. */
#define STAT_JOBS_MAX 2
/* Header reads of one poll are spread over this share of the interval. */
#define POLL_SPREAD_PERCENT 80
#define POLL_TICK_MIN_MS 20
/* A database refused for lack of space is looked at again after this. */
#define NOSPACE_HOLD_MS (60 * 60 * 1000)
/* The state file forgets vanished databases this long after start, then daily. */
#define PRUNE_FIRST_MS (10 * 60 * 1000)
#define PRUNE_INTERVAL_MS (24 * 60 * 60 * 1000)
/* The b-trees a deep scan's journal entry names, those with the most unused bytes. */
#define DEEP_TOP_BTREES 3
/* How often what the journal budget dropped is looked at (log_flood_tick). */
#define FLOOD_TICK_MS 5000
/* After a job ran out of its time limit: held this long, doubling. */
#define TIMEOUT_HOLD_MS (60ull * 60 * 1000)
#define TIMEOUT_HOLD_MAX_MS (24ull * 60 * 60 * 1000)
/* Refused paths remembered (each reported once while it lasts); more are counted. */
#define REFUSED_MAX 10000
/* Problem rows of a failed check copied into the journal entry. */
#define LOG_PROBLEMS_MAX 20

struct manager {
        uv_loop_t loop;
        char *conf_file;
        struct conf *conf;
        struct state *state;
        struct targets targets;
        struct targets history; /* loaded from the state file: path and hist only */
        struct targets refused; /* paths not followed, reported once: path only */
        size_t refused_over;    /* refused paths past REFUSED_MAX in this expansion */
        bool refused_over_said;

        uv_timer_t poll_timer, tick_timer, dispatch_timer, watchdog_timer, prune_timer, flood_timer;
        uv_work_t prune_req;  /* state_prune() of databases whose files are gone */
        bool pruning;
        int prune_result;
        uv_signal_t sig_hup, sig_term, sig_int;
        uv_work_t pool_req;       /* starts libuv's thread pool (start_pool_without_signals) */

        struct target **round; /* this poll's targets, header-read a few per tick */
        size_t round_n, round_pos, round_cap;
        size_t per_tick;
        bool round_active;

        struct target **running; /* with a job running: the files they have open */
        size_t running_n, running_cap;
        struct target **queue; /* waiting maintenance */
        size_t queue_n, queue_cap;
        struct sched_job *jobs; /* the queue as sched_dispatch() sees it */
        size_t jobs_cap;
        struct target **statq; /* waiting precise statistics reads, FIFO from statq_head */
        size_t statq_head, statq_n, statq_cap;

        unsigned running_jobs, running_stats;
        unsigned max_jobs;  /* max_concurrent_jobs, bounded by the pool */
        unsigned pool_size;

        bool once, dry_run, ignore_window;
        bool expanded; /* the first expansion is done */
        bool stopping, closed;
        unsigned failures; /* jobs that ended badly: the --once exit status */
        unsigned long jobs_done;
        char last_action[256];
};

static void dispatch(struct manager *m);
static void start_round(struct manager *m);
static void begin_stop(struct manager *m);

/* --- small helpers ---------------------------------------------------- */

static int minute_of_day(void)
{
        time_t now = time(NULL);
        struct tm tm;

        localtime_r(&now, &tm);
        return tm.tm_hour * 60 + tm.tm_min;
}

static int push(struct target ***v, size_t *n, size_t *cap, struct target *t)
{
        if (*n == *cap) {
                size_t c = *cap ? *cap * 2 : 64;
                struct target **nv = realloc(*v, c * sizeof(**v));

                if (!nv)
                        return -ENOMEM;
                *v = nv;
                *cap = c;
        }
        (*v)[(*n)++] = t;
        return 0;
}

/* Remove t from an unordered list. */
static void drop_from(struct target **v, size_t *n, struct target *t)
{
        for (size_t i = 0; i < *n; i++)
                if (v[i] == t) {
                        v[i] = v[--*n];
                        return;
                }
}

static void entry_db(struct log_entry *e, int prio, const char *msgid, const char *path, const char *op)
{
        log_entry_init(e, prio, msgid);
        log_field(e, "DB_PATH", "%s", path);
        if (op)
                log_field(e, "OPERATION", "%s", op);
}

static void update_status(struct manager *m)
{
        if (m->stopping) {
                notify_status("Stopping; waiting for %u running job%s", m->running_jobs + m->running_stats,
                              m->running_jobs + m->running_stats == 1 ? "" : "s");
                return;
        }
        notify_status("Watching %zu database%s; %u job%s running, %zu queued; last: %s", m->targets.n,
                      m->targets.n == 1 ? "" : "s", m->running_jobs, m->running_jobs == 1 ? "" : "s",
                      m->queue_n, m->last_action[0] ? m->last_action : "none yet");
}

/* --- targets coming and going ----------------------------------------- */

static void target_added(void *userdata, struct target *t)
{
        struct manager *m = userdata;
        struct target *h = targets_find(&m->history, t->path);

        if (h)
                t->hist = h->hist;
        t->hist.first_seen_ms = util_wall_ms();
        /* One line per newcomer, but not ten thousand at startup. */
        if (m->expanded) {
                struct log_entry e;

                entry_db(&e, LOG_INFO, MSGID_DB_ADDED, t->path, "poll");
                log_entry_send(&e, "%s: new database, watching it", t->path);
        } else {
                log_msg(LOG_DEBUG, "watching %s", t->path);
        }
}

/* Out of every list; freed now, or when its job ends. */
static void target_drop(struct manager *m, struct target *t)
{
        targets_remove(&m->targets, t);
        drop_from(m->queue, &m->queue_n, t);
        for (size_t i = m->statq_head; i < m->statq_n; i++)
                if (m->statq[i] == t) {
                        memmove(m->statq + i, m->statq + i + 1, (m->statq_n - i - 1) * sizeof(*m->statq));
                        m->statq_n--;
                        break;
                }
        for (size_t i = m->round_pos; i < m->round_n; i++)
                if (m->round[i] == t)
                        m->round[i] = NULL;
        if (t->job)
                t->removed = true;
        else
                target_free(t);
}

static void target_gone(struct manager *m, struct target *t, const char *why)
{
        struct log_entry e;

        if (t->explicit_path) {
                /* A configured path stays watched: it may come back. */
                if (!t->reported_missing) {
                        entry_db(&e, LOG_WARNING, MSGID_DB_REMOVED, t->path, "poll");
                        log_entry_send(&e, "%s: %s; still watching the path", t->path, why);
                        t->reported_missing = true;
                }
                t->have_stat = false;
                return;
        }
        entry_db(&e, LOG_INFO, MSGID_DB_REMOVED, t->path, "poll");
        log_entry_send(&e, "%s: %s; no longer watched", t->path, why);
        target_drop(m, t);
}

/* A file we cannot maintain is reported once and left alone until it
 * changes (or for a while, for a lack of space). */
static int target_dirfd(const struct target *t)
{
        return t->dir ? t->dir->fd : -1;
}

static void hold(struct target *t, uint64_t for_ms)
{
        t->held = file_id_at(target_dirfd(t), t->name, &t->held_id) == 0;
        t->held_until = for_ms ? util_monotonic_ms() + for_ms : 0;
}

static bool still_held(struct target *t, const struct file_id *id)
{
        if (!t->held)
                return false;
        if (!sched_hold_lasts(t->held_until, file_id_equal(id, &t->held_id), util_monotonic_ms())) {
                t->held = false;
                return false;
        }
        return true;
}

/* --- decisions -------------------------------------------------------- */

static void enqueue(struct manager *m, struct target *t, enum maint_op op, enum sched_reason reason, bool urgent)
{
        const struct vacuum_conf *vc = &t->dc->vacuum;
        struct log_entry e;
        char a[32], b[32];
        bool again = op == MAINT_OP_CHECKPOINT ? t->ckpt_attempt > 0
                   : op != MAINT_OP_ANALYZE && op != MAINT_OP_DEEP_SCAN && t->logged_reason == reason;

        entry_db(&e, again ? LOG_DEBUG : LOG_INFO, MSGID_SCHEDULED, t->path, maint_op_name(op));
        log_field(&e, "REASON", "%s", sched_reason_name(reason));
        log_field(&e, "FRAGMENTATION_BEFORE", "%.2f", t->stat.fragmentation_percent);
        if (op == MAINT_OP_VACUUM || op == MAINT_OP_INCREMENTAL_VACUUM)
                t->logged_reason = reason;
        if (op == MAINT_OP_ANALYZE) {
                if (t->hist.last_analyze_ms)
                        log_entry_send(&e, "%s%s: ANALYZE is due (every %s)", m->dry_run ? "dry run: " : "",
                                       t->path, conf_format_duration(t->dc->analyze.interval_ms, a, sizeof(a)));
                else
                        log_entry_send(&e, "%s%s: ANALYZE is due (the first since this database was seen; "
                                       "then every %s)", m->dry_run ? "dry run: " : "", t->path,
                                       conf_format_duration(t->dc->analyze.interval_ms, a, sizeof(a)));
        } else if (op == MAINT_OP_DEEP_SCAN) {
                log_entry_send(&e, "%s%s: deep scan is due (%s; every %s)", m->dry_run ? "dry run: " : "", t->path,
                               t->hist.last_deep_scan_ms ? "reads every page" : "the first since this database was seen",
                               conf_format_duration(t->dc->deep_scan.interval_ms, a, sizeof(a)));
        } else if (reason == SCHED_REASON_UNUSED) {
                log_field(&e, "UNUSED_PERCENT", "%.2f", t->hist.deep_unused_percent);
                log_entry_send(&e, "%s%s: VACUUM, the last deep scan found %.2f%% of the bytes of its b-tree pages "
                               "unused, >= unused_threshold %.2f%% (about %s to give back)",
                               m->dry_run ? "dry run: " : "", t->path, t->hist.deep_unused_percent,
                               vc->unused_threshold, util_format_bytes(t->hist.deep_reclaimable_bytes, b, sizeof(b)));
        } else if (op == MAINT_OP_CHECKPOINT) {
                log_field(&e, "WAL_SIZE_BYTES", "%llu", (unsigned long long)t->stat.wal_size_bytes);
                log_entry_send(&e, "%s%s: checkpoint of the -wal (%s, the database %s): %s",
                               m->dry_run ? "dry run: " : "", t->path,
                               util_format_bytes(t->stat.wal_size_bytes, a, sizeof(a)),
                               util_format_bytes(t->stat.file_size_bytes, b, sizeof(b)),
                               reason == SCHED_REASON_AFTER_VACUUM ? "owed since a VACUUM whose checkpoint was busy"
                                                                   : "past its size limit");
        } else {
                log_entry_send(&e, "%s%s: %s, fragmentation %.2f%% %s %s threshold %.2f%%",
                               m->dry_run ? "dry run: " : "", t->path,
                               op == MAINT_OP_VACUUM ? "VACUUM" : "incremental vacuum",
                               t->stat.fragmentation_percent, ">=", urgent ? "urgent" : "scheduled",
                               urgent ? vc->urgent_threshold : vc->threshold);
        }
        if (m->dry_run) {
                /* In memory only: the timer is not due again next poll. */
                if (op == MAINT_OP_ANALYZE)
                        t->hist.last_analyze_ms = util_wall_ms();
                if (op == MAINT_OP_DEEP_SCAN)
                        t->hist.last_deep_scan_ms = util_wall_ms();
                return;
        }
        if (push(&m->queue, &m->queue_n, &m->queue_cap, t) < 0) {
                log_msg(LOG_ERR, "%s: out of memory, skipping", t->path);
                return;
        }
        t->queued = true;
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
        return files_unchanged(t, t->analyzed_known, &t->analyzed_db, &t->analyzed_wal);
}

static void decide(struct manager *m, struct target *t)
{
        const struct db_conf *dc = t->dc;
        struct sched_decision d;
        enum sched_reason ckpt;
        int64_t now = util_wall_ms();

        d = sched_vacuum(&t->stat, &dc->vacuum, &t->hist, now, minute_of_day(), m->ignore_window);
        /* Refused for its rowids: not again until the schema changes. */
        if (d.action != SCHED_NONE && t->rowid_hold) {
                if (t->stat.schema_cookie == t->rowid_hold_cookie) {
                        log_msg(LOG_DEBUG, "%s: fragmentation %.2f%%, VACUUM held: it would renumber rowids "
                                "(schema unchanged)", t->path, t->stat.fragmentation_percent);
                        d = (struct sched_decision){ SCHED_NONE, SCHED_REASON_ROWIDS, false };
                } else {
                        t->rowid_hold = false;
                }
        }
        if (d.action != SCHED_NONE) {
                enqueue(m, t, d.action == SCHED_INCREMENTAL_VACUUM ? MAINT_OP_INCREMENTAL_VACUUM : MAINT_OP_VACUUM,
                        d.reason, d.reason == SCHED_REASON_URGENT);
                return;
        }
        /* Due but held back: worth one line when it starts, not one per poll. */
        if (d.reason != t->logged_reason && (d.reason == SCHED_REASON_WAIT_WINDOW ||
                                             d.reason == SCHED_REASON_MIN_INTERVAL)) {
                struct log_entry e;

                entry_db(&e, LOG_INFO, MSGID_SCHEDULED, t->path, "vacuum");
                log_field(&e, "REASON", "%s", sched_reason_name(d.reason));
                log_field(&e, "FRAGMENTATION_BEFORE", "%.2f", t->stat.fragmentation_percent);
                char why[128];

                if (d.unused)
                        snprintf(why, sizeof(why), "unused space inside pages %.2f%% >= %.2f%% (deep scan)",
                                 t->hist.deep_unused_percent, dc->vacuum.unused_threshold);
                else
                        snprintf(why, sizeof(why), "fragmentation %.2f%% >= %.2f%%", t->stat.fragmentation_percent,
                                 dc->vacuum.threshold);
                if (d.reason == SCHED_REASON_WAIT_WINDOW)
                        log_entry_send(&e, "%s: %s: VACUUM waits for the window (in %d min)", t->path, why,
                                       sched_minutes_until_window(&dc->vacuum.window, minute_of_day()));
                else
                        log_entry_send(&e, "%s: %s: vacuumed less than %s ago, waiting", t->path, why,
                                       conf_format_duration(dc->vacuum.min_interval_ms, (char[32]){ 0 }, 32));
        } else if (d.reason != SCHED_REASON_ROWIDS) {
                log_msg(LOG_DEBUG, "%s: fragmentation %.2f%%, nothing to do (%s)", t->path,
                        t->stat.fragmentation_percent, sched_reason_name(d.reason));
        }
        t->logged_reason = d.reason;

        /* The -wal: given back when it grew too large, or owed since a VACUUM. */
        if (t->wal_owed && t->stat.wal_size_bytes == 0)
                t->wal_owed = false; /* truncated meanwhile, by the application */
        if (sched_checkpoint(&t->stat, &dc->checkpoint, t->wal_owed, &ckpt) && util_monotonic_ms() >= t->ckpt_retry_at) {
                enqueue(m, t, MAINT_OP_CHECKPOINT, ckpt, false);
                return;
        }

        /* --once runs what is due now: no staggering of first analyzes. */
        if (t->stat.page_count > 0 &&
            now >= sched_analyze_due(&dc->analyze, &t->hist, m->once ? 0 : m->conf->poll_interval_ms, t->hash)) {
                if (unchanged_since_analyze(t)) {
                        struct log_entry e;

                        entry_db(&e, LOG_DEBUG, MSGID_ANALYZE_DONE, t->path, "analyze");
                        log_field(&e, "REASON", "%s", "unchanged");
                        log_entry_send(&e, "%s: ANALYZE due, but the database is unchanged since the last one: "
                                       "its statistics are current", t->path);
                        t->hist.last_analyze_ms = now;
                        return;
                }
                enqueue(m, t, MAINT_OP_ANALYZE, SCHED_REASON_TIMER, false);
                return;
        }

        /* The deep scan reads the whole file: in the window (unless told
         * otherwise), and not again while the files stay as it saw them. */
        if (t->stat.page_count > 0 &&
            now >= sched_deep_scan_due(&dc->deep_scan, &t->hist, m->once ? 0 : m->conf->poll_interval_ms, t->hash) &&
            (!dc->deep_scan.in_window || m->ignore_window || sched_in_window(&dc->vacuum.window, minute_of_day()))) {
                if (files_unchanged(t, t->deep_known, &t->deep_db, &t->deep_wal)) {
                        log_msg(LOG_DEBUG, "%s: deep scan due, but the database is unchanged since the last one",
                                t->path);
                        t->hist.last_deep_scan_ms = now;
                        return;
                }
                enqueue(m, t, MAINT_OP_DEEP_SCAN, SCHED_REASON_TIMER, false);
        }
}

/* The one report an admin must act on: CRIT, with the check's problem rows
 * when a check ran (r may be NULL). */
static void report_corrupt(struct manager *m, struct target *t, const char *op, const char *why,
                           const struct maint_result *r)
{
        char problems[2048] = "";
        struct log_entry e;
        size_t len = 0;

        for (size_t i = 0; r && i < r->n_problems && i < LOG_PROBLEMS_MAX && len < sizeof(problems); i++)
                len += (size_t)snprintf(problems + len, sizeof(problems) - len, "%s%s", i ? "\n" : "",
                                        r->problems[i]);
        entry_db(&e, LOG_CRIT, MSGID_CORRUPT, t->path, op);
        log_field(&e, "SQLITE_ERROR", "%s", why);
        if (problems[0])
                log_field(&e, "PROBLEMS", "%s", problems);
        /* a deep scan or a check finds it with no VACUUM due: left alone all the same */
        log_entry_send(&e, "%s: DATABASE CORRUPT, %s: %s", t->path,
                       strstr(op, "vacuum") ? "not vacuumed" : "left alone until it changes", why);
        snprintf(m->last_action, sizeof(m->last_action), "CORRUPT %s", t->path);
}

/* A database that cannot even be looked at: reported once, by kind (a
 * corrupt one loudly), and held until the file changes. */
static void poll_failed(struct manager *m, struct target *t, enum maint_status s, const char *why)
{
        struct log_entry e;

        if (s == MAINT_CORRUPT) {
                report_corrupt(m, t, "poll", why, NULL);
        } else if (s == MAINT_HOT_JOURNAL) {
                entry_db(&e, LOG_WARNING, MSGID_HOT_JOURNAL, t->path, "poll");
                log_field(&e, "REASON", "%s", maint_status_name(s));
                log_entry_send(&e, "%s: a hot journal: a transaction interrupted by a crash awaits rollback; a "
                               "read never rolls it back, so statistics wait for the application's next open "
                               "(until the file changes)", t->path);
        } else {
                entry_db(&e, LOG_WARNING, s == MAINT_CANNOT ? MSGID_CANNOT_MAINTAIN : MSGID_JOB_FAILED, t->path,
                         "poll");
                log_field(&e, "REASON", "%s", maint_status_name(s));
                log_field(&e, "SQLITE_ERROR", "%s", why);
                log_entry_send(&e, "%s: %s, skipping until the file changes", t->path, why);
        }
        m->failures++;
        hold(t, 0);
}

/* Whether another target's running job has t's file: one job per
 * database at a time, whatever path names it (two entries, a hard link, a
 * bind mount, "//" in a path), as the last polls found the files. */
static bool file_in_use(const struct manager *m, const struct target *t)
{
        for (size_t i = 0; i < m->running_n; i++)
                if (m->running[i] != t && m->running[i]->dev == t->dev && m->running[i]->ino == t->ino)
                        return true;
        return false;
}

/* The cheap look at one database. */
static void poll_target(struct manager *m, struct target *t)
{
        struct file_id id;
        struct dbstat st;
        int r;

        /* Decided already, or being worked on (under this path or another). */
        if (t->job || t->queued || t->want_precise)
                return;
        r = file_id_at(target_dirfd(t), t->name, &id);
        if (r == -ENOENT || r == -ENOTDIR) {
                target_gone(m, t, "does not exist (any more)");
                return;
        }
        t->dev = id.dev;
        t->ino = id.ino;
        if (file_in_use(m, t))
                return;
        if (t->reported_missing) {
                struct log_entry e;

                entry_db(&e, LOG_INFO, MSGID_DB_ADDED, t->path, "poll");
                log_entry_send(&e, "%s: appeared, watching it", t->path);
                t->reported_missing = false;
        }
        if (still_held(t, &id) || util_monotonic_ms() < t->not_before)
                return;

        r = dbstat_read_header_at(target_dirfd(t), t->name, &st);
        switch (r) {
        case 0:
                t->stat_busy = 0;
                t->stat = st;
                t->have_stat = true;
                decide(m, t);
                break;
        case -EAGAIN: /* only SQLite can tell */
                /* ... and told already, of these very files: a WAL
                 * database held open and idle costs a stat, not a job */
                if (t->have_stat && util_monotonic_ms() - t->precise_at < PRECISE_REUSE_MAX_MS &&
                    files_unchanged(t, t->precise_known, &t->precise_db, &t->precise_wal)) {
                        log_msg(LOG_DEBUG, "%s: unchanged since its last statistics read", t->path);
                        decide(m, t);
                        break;
                }
                if (push(&m->statq, &m->statq_n, &m->statq_cap, t) == 0)
                        t->want_precise = true;
                break;
        case -ENOENT:
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

/* --- jobs ------------------------------------------------------------- */

/* "a, b, c" of the tables with verdict v (any when v < 0); when they do
 * not all fit, as many as do and "and N more". */
static const char *table_list(const struct maint_result *r, int v, char *buf, size_t len)
{
        size_t n = 0, shown = 0, all = 0;

        buf[0] = '\0';
        for (size_t i = 0; i < r->n_tables; i++) {
                size_t k;

                if (v >= 0 && (int)r->tables[i].verdict != v)
                        continue;
                all++;
                k = strlen(r->tables[i].name) + (n ? 2 : 0);
                if (shown + 1 < all || n + k + 32 >= len)
                        continue; /* counted, not named */
                n += (size_t)snprintf(buf + n, len - n, "%s%s", n ? ", " : "", r->tables[i].name);
                shown++;
        }
        if (shown < all)
                snprintf(buf + n, len - n, "%sand %zu more", n ? " " : "", all - shown);
        return buf;
}

static size_t count_tables(const struct maint_result *r, enum maint_table_verdict v)
{
        size_t n = 0;

        for (size_t i = 0; i < r->n_tables; i++)
                n += r->tables[i].verdict == v;
        return n;
}

/* What ANALYZE did, table by table: INFO when it wrote statistics, DEBUG
 * when every table's were current. */
static void log_analyzed(struct manager *m, struct target *t, const struct maint_result *r)
{
        size_t full = count_tables(r, TABLE_ANALYZED), limited = count_tables(r, TABLE_ANALYZED_LIMITED);
        size_t unchanged = count_tables(r, TABLE_UNCHANGED), empty = count_tables(r, TABLE_MISSING_EMPTY);
        char a[1024], l[1024], u[1024], z[1024], skipped[2200];
        struct log_entry e;

        table_list(r, TABLE_ANALYZED, a, sizeof(a));
        table_list(r, TABLE_ANALYZED_LIMITED, l, sizeof(l));
        table_list(r, TABLE_UNCHANGED, u, sizeof(u));
        table_list(r, TABLE_MISSING_EMPTY, z, sizeof(z));
        snprintf(skipped, sizeof(skipped), "%s%s%s%s%s%s", unchanged ? "unchanged: " : "", u,
                 unchanged && empty ? "; " : "", empty ? "no rows: " : "", z, "");
        entry_db(&e, full + limited ? LOG_INFO : LOG_DEBUG, MSGID_ANALYZE_DONE, t->path, "analyze");
        log_field(&e, "DURATION_MS", "%llu", (unsigned long long)r->duration_ms);
        log_field(&e, "REASON", "%s", full + limited ? sched_reason_name(t->reason) : "unchanged");
        log_field(&e, "TABLES_ANALYZED", "%s%s%s", a, full && limited ? ", " : "", l);
        log_field(&e, "TABLES_SKIPPED", "%s", skipped);
        if (full + limited == 0) {
                log_entry_send(&e, "%s: ANALYZE: the statistics of every table are current (%s), nothing written",
                               t->path, skipped[0] ? skipped : "no tables");
                return;
        }
        log_entry_send(&e, "%s: analyzed %zu table%s in %llu ms: %s%s%s%s%s%s%s", t->path, full + limited,
                       full + limited == 1 ? "" : "s", (unsigned long long)r->duration_ms, a, full && limited ? ", " : "",
                       limited ? "under analysis_limit: " : "", l, skipped[0] ? "; skipped " : "", skipped,
                       "");
        snprintf(m->last_action, sizeof(m->last_action), "analyzed %s", t->path);
}

/* A deep scan given the rest of the window as its time limit (shorter than
 * limits.job_timeout) that ran out of it. */
static bool deep_scan_window_end(const struct target *t, const struct job *j)
{
        return j->op == MAINT_OP_DEEP_SCAN && j->res.status == MAINT_TIMEOUT &&
               j->timeout_ms < t->dc->limits.job_timeout_ms;
}

/* The deep scan's figures, and the b-trees with the most unused bytes. */
static void log_deep_scan(struct manager *m, struct target *t, const struct maint_result *r)
{
        const struct deep_stats *d = &r->deep;
        const struct btree_space *top[DEEP_TOP_BTREES] = { NULL };
        double unused = deep_unused_percent(d->unused_bytes, d->btree_pages, d->page_size);
        char a[32], b[32], c[32], worst[1024] = "", nonseq[32] = "unknown";
        struct log_entry e;
        size_t k = 0;

        /* the few b-trees with the most unused bytes, largest first */
        for (size_t i = 0; i < d->n_btrees; i++) {
                const struct btree_space *x = &d->btrees[i];

                for (size_t p = 0; p < DEEP_TOP_BTREES; p++)
                        if (!top[p] || x->unused_bytes > top[p]->unused_bytes) {
                                memmove(top + p + 1, top + p, (DEEP_TOP_BTREES - p - 1) * sizeof(*top));
                                top[p] = x;
                                break;
                        }
        }
        for (size_t p = 0; p < DEEP_TOP_BTREES && top[p] && top[p]->unused_bytes > 0 && k < sizeof(worst); p++) {
                uint64_t pages = top[p]->interior_pages + top[p]->leaf_pages + top[p]->overflow_pages;

                k += (size_t)snprintf(worst + k, sizeof(worst) - k, "%s%s %s %s (%.2f%%)", p ? ", " : "",
                                      top[p]->is_index ? "index" : "table", top[p]->name,
                                      util_format_bytes(top[p]->unused_bytes, a, sizeof(a)),
                                      deep_unused_percent(top[p]->unused_bytes, pages, d->page_size));
        }
        if (d->nonsequential_known)
                snprintf(nonseq, sizeof(nonseq), "%.2f%%", deep_total_nonsequential_percent(d));
        entry_db(&e, LOG_INFO, MSGID_DEEP_SCAN, t->path, "deep_scan");
        log_field(&e, "UNUSED_BYTES", "%llu", (unsigned long long)d->unused_bytes);
        log_field(&e, "UNUSED_PERCENT", "%.2f", unused);
        log_field(&e, "BTREE_PAGES", "%llu", (unsigned long long)d->btree_pages);
        log_field(&e, "RECLAIMABLE_BYTES", "%llu", (unsigned long long)d->reclaimable_bytes);
        if (d->nonsequential_known) {
                log_field(&e, "NONSEQUENTIAL_PAGES", "%llu", (unsigned long long)d->nonsequential_pages);
                log_field(&e, "NONSEQUENTIAL_PERCENT", "%.2f", deep_total_nonsequential_percent(d));
        }
        log_field(&e, "FRAGMENTATION", "%.2f", dbstat_fragmentation(d->freelist_count, d->page_count));
        log_field(&e, "DURATION_MS", "%llu", (unsigned long long)r->duration_ms);
        log_entry_send(&e, "%s: deep scan: %s of the %s in b-tree pages unused (%.2f%%), non-sequential pages %s, "
                       "freelist %.2f%%; a VACUUM could give back up to %s%s%s (%llu ms)", t->path,
                       util_format_bytes(d->unused_bytes, a, sizeof(a)),
                       util_format_bytes(d->btree_pages * d->page_size, b, sizeof(b)), unused, nonseq,
                       dbstat_fragmentation(d->freelist_count, d->page_count),
                       util_format_bytes(d->reclaimable_bytes, c, sizeof(c)), worst[0] ? "; most unused: " : "", worst,
                       (unsigned long long)r->duration_ms);
        snprintf(m->last_action, sizeof(m->last_action), "deep scan of %s (%.2f%% unused)", t->path, unused);
}

/* The -wal's bytes a checkpoint gave back (the application may have
 * written again since: never less than nothing). */
static uint64_t wal_given_back(const struct maint_result *r)
{
        return r->wal_bytes_before > r->wal_bytes_after ? r->wal_bytes_before - r->wal_bytes_after : 0;
}

static void log_result(struct manager *m, struct target *t, struct job *j)
{
        const struct maint_result *r = &j->res;
        const char *op = maint_op_name(j->op);
        char bytes[32], list[8192];
        struct log_entry e;

        if (r->rolled_back_journal) {
                entry_db(&e, LOG_NOTICE, MSGID_HOT_JOURNAL, t->path, op);
                log_field(&e, "REASON", "%s", "rolled_back");
                log_entry_send(&e, "%s: rolled back a hot journal (a transaction interrupted by a crash) before "
                               "the %s, as the application's next open would have", t->path, op);
        }
        switch (r->status) {
        case MAINT_SKIPPED: /* emptied since the decision */
                log_msg(LOG_DEBUG, "%s: %s skipped: %s", t->path, op, r->message);
                break;
        case MAINT_OK:
                if (j->op == MAINT_OP_ANALYZE) {
                        log_analyzed(m, t, r);
                        break;
                }
                if (j->op == MAINT_OP_DEEP_SCAN) {
                        log_deep_scan(m, t, r);
                        break;
                }
                if (j->op == MAINT_OP_CHECKPOINT) {
                        entry_db(&e, LOG_INFO, MSGID_CHECKPOINT_DONE, t->path, op);
                        log_field(&e, "BYTES_RECLAIMED", "%llu", (unsigned long long)wal_given_back(r));
                        log_field(&e, "WAL_SIZE_BYTES", "%llu", (unsigned long long)r->wal_bytes_after);
                        log_field(&e, "DURATION_MS", "%llu", (unsigned long long)r->duration_ms);
                        log_field(&e, "REASON", "%s", sched_reason_name(t->reason));
                        log_field(&e, "ATTEMPT", "%d", t->ckpt_attempt + 1);
                        log_entry_send(&e, "%s: -wal checkpointed and truncated, %s given back%s", t->path,
                                       util_format_bytes(wal_given_back(r), bytes, sizeof(bytes)),
                                       t->ckpt_attempt ? " (readers had held it before)" : "");
                        snprintf(m->last_action, sizeof(m->last_action), "checkpointed %s", t->path);
                        break;
                }
                entry_db(&e, LOG_INFO, MSGID_VACUUM_DONE, t->path, op);
                log_field(&e, "FRAGMENTATION_BEFORE", "%.2f", r->before.fragmentation_percent);
                log_field(&e, "FRAGMENTATION_AFTER", "%.2f", r->after.fragmentation_percent);
                log_field(&e, "BYTES_RECLAIMED", "%llu", (unsigned long long)r->bytes_reclaimed);
                log_field(&e, "DISK_BYTES_BEFORE", "%llu", (unsigned long long)r->disk_bytes_before);
                log_field(&e, "DISK_BYTES_AFTER", "%llu", (unsigned long long)r->disk_bytes_after);
                log_field(&e, "PAGE_BYTES_RECLAIMED", "%llu", (unsigned long long)r->page_bytes_reclaimed);
                log_field(&e, "DURATION_MS", "%llu", (unsigned long long)r->duration_ms);
                log_field(&e, "REASON", "%s", sched_reason_name(t->reason));
                if (r->n_tables)
                        log_field(&e, "RENUMBERED_TABLES", "%s", table_list(r, -1, list, sizeof(list)));
                if (r->check_after_skipped)
                        log_field(&e, "CHECK_AFTER", "%s", r->message);
                log_entry_send(&e, "%s: %s done: fragmentation %.2f%% -> %.2f%%, reclaimed %s on disk (%s -> %s) "
                               "in %llu ms%s%s%s%s", t->path,
                               j->op == MAINT_OP_VACUUM ? "VACUUM" : "incremental vacuum",
                               r->before.fragmentation_percent, r->after.fragmentation_percent,
                               util_format_bytes(r->bytes_reclaimed, bytes, sizeof(bytes)),
                               util_format_bytes(r->disk_bytes_before, (char[32]){ 0 }, 32),
                               util_format_bytes(r->disk_bytes_after, (char[32]){ 0 }, 32),
                               (unsigned long long)r->duration_ms,
                               r->n_tables ? "; rowids renumbered 1..N (allowed) in " : "",
                               r->n_tables ? table_list(r, -1, list, sizeof(list)) : "",
                               r->check_after_skipped ? "; " : "", r->check_after_skipped ? r->message : "");
                snprintf(m->last_action, sizeof(m->last_action), "vacuumed %s (%.2f%% -> %.2f%%)", t->path,
                         r->before.fragmentation_percent, r->after.fragmentation_percent);
                if (r->checkpoint_busy) {
                        entry_db(&e, LOG_WARNING, MSGID_CHECKPOINT_BUSY, t->path, "checkpoint");
                        log_field(&e, "WAL_SIZE_BYTES", "%llu", (unsigned long long)r->after.wal_size_bytes);
                        log_entry_send(&e, "%s: WAL checkpoint after VACUUM was busy (a reader is open); the -wal "
                                       "file stays at %s until a later checkpoint, tried again at later polls",
                                       t->path, util_format_bytes(r->after.wal_size_bytes, bytes, sizeof(bytes)));
                }
                break;
        case MAINT_ROWIDS:
                entry_db(&e, LOG_WARNING, MSGID_ROWID_GUARD, t->path, op);
                log_field(&e, "TABLES", "%s", table_list(r, TABLE_ROWIDS_CHANGE, list, sizeof(list)));
                log_field(&e, "FRAGMENTATION_BEFORE", "%.2f", r->before.fragmentation_percent);
                log_entry_send(&e, "%s: VACUUM refused: %s; not tried again until the schema changes", t->path,
                               r->message);
                break;
        case MAINT_CORRUPT:
                report_corrupt(m, t, op, r->message, r);
                break;
        case MAINT_NOSPACE:
                entry_db(&e, LOG_WARNING, MSGID_NO_SPACE, t->path, op);
                log_field(&e, "SQLITE_ERROR", "%s", r->message);
                log_field(&e, "SPACE_NEEDED_BYTES", "%llu", (unsigned long long)r->space_needed);
                log_field(&e, "TEMP_SPACE_NEEDED_BYTES", "%llu", (unsigned long long)r->space_needed_tmp);
                log_entry_send(&e, "%s: %s refused: %s", t->path, op, r->message);
                break;
        case MAINT_CANNOT:
                entry_db(&e, LOG_WARNING, MSGID_CANNOT_MAINTAIN, t->path, op);
                log_field(&e, "SQLITE_ERROR", "%s", r->message);
                log_entry_send(&e, "%s: cannot maintain: %s", t->path, r->message);
                break;
        case MAINT_TIMEOUT:
                if (!deep_scan_window_end(t, j))
                        goto failed;
                entry_db(&e, LOG_NOTICE, MSGID_JOB_FAILED, t->path, op);
                log_field(&e, "REASON", "%s", "window-end");
                log_entry_send(&e, "%s: deep scan stopped at the end of the maintenance window, unfinished; it "
                               "starts again in the next window", t->path);
                break;
        case MAINT_BUSY: /* only when stopping: otherwise retried */
        case MAINT_INTERRUPTED:
                entry_db(&e, LOG_NOTICE, MSGID_JOB_FAILED, t->path, op);
                log_field(&e, "REASON", "%s", maint_status_name(r->status));
                log_field(&e, "SQLITE_ERROR", "%s", r->message);
                log_entry_send(&e, "%s: %s %s; the database is intact", t->path, op,
                               r->status == MAINT_BUSY ? "not run: locked when the daemon stopped" : "interrupted");
                break;
        default:
        failed:
                entry_db(&e, LOG_ERR, MSGID_JOB_FAILED, t->path, op);
                log_field(&e, "REASON", "%s", maint_status_name(r->status));
                log_field(&e, "SQLITE_ERROR", "%s", r->message);
                log_entry_send(&e, "%s: %s failed (%s): %s", t->path, op, maint_status_name(r->status), r->message);
                break;
        }
}

/* Readers keep the -wal from being truncated: try again after a backoff
 * that grows to max_backoff, at later polls; a warning once it has lasted
 * warn_after, and again each warn_after. */
static void checkpoint_later(struct target *t, const struct maint_result *r)
{
        const struct retry_conf *rc = &t->dc->retry;
        uint64_t warn = t->dc->checkpoint.warn_after_ms, backoff;
        int64_t now = util_wall_ms();
        char bytes[32], since[32];
        struct log_entry e;

        if (!t->ckpt_busy_since)
                t->ckpt_busy_since = now;
        t->ckpt_attempt++;
        backoff = sched_backoff_ms(rc, t->ckpt_attempt, (uint32_t)random());
        t->ckpt_retry_at = util_monotonic_ms() + backoff;
        log_msg(LOG_DEBUG, "%s: checkpoint busy (%s), trying again in %llu ms or later", t->path, r->message,
                (unsigned long long)backoff);
        if ((uint64_t)(now - t->ckpt_busy_since) < warn || (t->ckpt_warned && (uint64_t)(now - t->ckpt_warned) < warn))
                return;
        t->ckpt_warned = now;
        entry_db(&e, LOG_WARNING, MSGID_CHECKPOINT_BUSY, t->path, "checkpoint");
        log_field(&e, "WAL_SIZE_BYTES", "%llu", (unsigned long long)r->wal_bytes_after);
        log_field(&e, "WAL_FRAMES_LEFT", "%llu", (unsigned long long)r->wal_frames_left);
        log_field(&e, "ATTEMPT", "%d", t->ckpt_attempt);
        log_entry_send(&e, "%s: readers have kept the -wal (%s) from being checkpointed for %s: %llu frame%s not "
                       "yet in the database; an application holds a read transaction open", t->path,
                       util_format_bytes(r->wal_bytes_after, bytes, sizeof(bytes)),
                       conf_format_duration((uint64_t)(now - t->ckpt_busy_since) / 1000 * 1000, since, sizeof(since)),
                       (unsigned long long)r->wal_frames_left, r->wal_frames_left == 1 ? "" : "s");
}

static void checkpoint_done(struct target *t)
{
        t->wal_owed = false;
        t->ckpt_attempt = 0;
        t->ckpt_retry_at = 0;
        t->ckpt_busy_since = 0;
        t->ckpt_warned = 0;
}

/* A lock conflict: back off and retry, bounded, then give up until a later
 * poll decides again. */
static void retry_later(struct manager *m, struct target *t, struct job *j)
{
        const struct retry_conf *rc = &t->dc->retry;
        struct log_entry e;
        uint64_t backoff;

        t->attempt++;
        if (t->attempt >= rc->max_attempts) {
                entry_db(&e, LOG_WARNING, MSGID_GAVE_UP, t->path, maint_op_name(j->op));
                log_field(&e, "ATTEMPT", "%d", t->attempt);
                log_field(&e, "SQLITE_ERROR", "%s", j->res.message);
                log_entry_send(&e, "%s: %s gave up after %d attempts (the last: %s); will decide again at a "
                               "later poll", t->path, maint_op_name(j->op), t->attempt, j->res.message);
                t->attempt = 0;
                m->failures++;
                return;
        }
        backoff = sched_backoff_ms(rc, t->attempt, (uint32_t)random());
        entry_db(&e, LOG_INFO, MSGID_RETRY, t->path, maint_op_name(j->op));
        log_field(&e, "ATTEMPT", "%d", t->attempt);
        log_field(&e, "BACKOFF_MS", "%llu", (unsigned long long)backoff);
        log_field(&e, "SQLITE_ERROR", "%s", j->res.message);
        log_entry_send(&e, "%s: %s (%s), retry %d/%d in %llu ms", t->path, maint_op_name(j->op), j->res.message,
                       t->attempt + 1, rc->max_attempts, (unsigned long long)backoff);
        if (push(&m->queue, &m->queue_n, &m->queue_cap, t) < 0)
                return;
        t->queued = true;
        t->op = j->op;
        t->retry_at = util_monotonic_ms() + backoff;
}

static void close_all(struct manager *m);

static void maybe_done(struct manager *m)
{
        if (m->stopping) {
                if (m->running_jobs + m->running_stats == 0 && !m->pruning)
                        close_all(m);
                else
                        update_status(m);
                return;
        }
        if (m->once && !m->round_active && m->queue_n == 0 && m->statq_head == m->statq_n &&
            m->running_jobs + m->running_stats == 0)
                begin_stop(m);
}

/* A job ran out of its time limit: not looked at again soon, whatever the
 * file does (1 h, doubling with each time limit in a row, up to a day). */
static void hold_after_timeout(struct target *t)
{
        t->timeouts++;
        t->not_before = util_monotonic_ms() + (t->timeouts > 5 ? TIMEOUT_HOLD_MAX_MS : TIMEOUT_HOLD_MS << (t->timeouts - 1));
}

static void stat_done(struct manager *m, struct target *t, struct job *j)
{
        t->want_precise = false;
        switch (j->res.status) {
        case MAINT_OK:
                t->stat_busy = 0;
                t->stat = j->res.after;
                t->have_stat = true;
                t->precise_db = j->res.db_id;
                t->precise_wal = j->res.wal_id;
                t->precise_known = j->res.db_id.ino != 0;
                t->precise_at = util_monotonic_ms();
                decide(m, t);
                break;
        case MAINT_BUSY: /* the next poll looks again; say so once it lasts */
                if (++t->stat_busy == t->dc->retry.max_attempts) {
                        struct log_entry e;

                        entry_db(&e, LOG_WARNING, MSGID_GAVE_UP, t->path, "poll");
                        log_field(&e, "ATTEMPT", "%d", t->stat_busy);
                        log_field(&e, "SQLITE_ERROR", "%s", j->res.message);
                        log_entry_send(&e, "%s: locked at each of the last %d polls, its statistics cannot even "
                                       "be read; an application holds long write transactions", t->path,
                                       t->stat_busy);
                } else {
                        log_msg(LOG_DEBUG, "%s: locked while reading statistics, next poll", t->path);
                }
                break;
        case MAINT_MISSING:
                target_gone(m, t, "does not exist (any more)");
                break;
        case MAINT_TIMEOUT: {
                struct log_entry e;

                hold_after_timeout(t);
                entry_db(&e, LOG_WARNING, MSGID_JOB_FAILED, t->path, "poll");
                log_field(&e, "REASON", "%s", maint_status_name(j->res.status));
                log_field(&e, "SQLITE_ERROR", "%s", j->res.message);
                log_entry_send(&e, "%s: reading its statistics %s; not looked at again for %s", t->path,
                               j->res.message, conf_format_duration(t->not_before - util_monotonic_ms(),
                                                                    (char[32]){ 0 }, 32));
                m->failures++;
                break;
        }
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
        r = job_queue(j, &m->loop, job_finished, m);
        if (r < 0) {
                job_free(j);
                return -EIO;
        }
        t->job = j;
        (void)push(&m->running, &m->running_n, &m->running_cap, t);
        if (op == MAINT_OP_STATS)
                m->running_stats++;
        else
                m->running_jobs++;
        return 0;
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
        log_result(m, t, j);
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
                t->timeouts = 0;
                if (j->op == MAINT_OP_ANALYZE) {
                        t->hist.last_analyze_ms = j->finished_ms;
                        t->analyzed_db = r->db_id;
                        t->analyzed_wal = r->wal_id;
                        t->analyzed_known = true;
                } else if (j->op == MAINT_OP_CHECKPOINT) {
                        checkpoint_done(t);
                } else if (j->op == MAINT_OP_DEEP_SCAN) {
                        const struct deep_stats *d = &r->deep;

                        t->hist.last_deep_scan_ms = j->finished_ms;
                        t->hist.deep_known = r->have_deep;
                        t->hist.deep_unused_percent = deep_unused_percent(d->unused_bytes, d->btree_pages,
                                                                          d->page_size);
                        t->hist.deep_reclaimable_bytes = d->reclaimable_bytes;
                        t->hist.deep_page_count = d->page_count;
                        t->deep_db = r->db_id;
                        t->deep_wal = r->wal_id;
                        t->deep_known = r->have_deep;
                } else {
                        t->hist.last_vacuum_ms = j->finished_ms;
                        /* the pages are packed: the deep scan's figures are history */
                        if (j->op == MAINT_OP_VACUUM)
                                t->hist.deep_known = false;
                        if (r->checkpoint_busy) {
                                /* a reader kept the new database's -wal: owed */
                                checkpoint_done(t);
                                t->wal_owed = true;
                                t->ckpt_busy_since = util_wall_ms();
                                t->ckpt_attempt = 1;
                                t->ckpt_retry_at = util_monotonic_ms() + sched_backoff_ms(&t->dc->retry, 1,
                                                                                    (uint32_t)random());
                        }
                }
                break;
        case MAINT_ROWIDS:
                t->rowid_hold = r->have_before;
                t->rowid_hold_cookie = r->before.schema_cookie;
                break;
        case MAINT_INTERRUPTED:
        case MAINT_SKIPPED:
                if (j->op == MAINT_OP_CHECKPOINT)
                        checkpoint_done(t); /* not in WAL mode any more */
                break;
        case MAINT_NOSPACE:
                m->failures++;
                hold(t, NOSPACE_HOLD_MS);
                break;
        case MAINT_TIMEOUT:
                /* a deep scan stopped at the window's end: due again in the next */
                if (deep_scan_window_end(t, j))
                        break;
                m->failures++;
                hold_after_timeout(t);
                break;
        case MAINT_BUSY: /* stopping */
                break;
        default:
                m->failures++;
                hold(t, 0);
                break;
        }
}

/* On the loop thread, when a worker is done. */
static void job_finished(struct job *j, void *userdata)
{
        struct manager *m = userdata;
        struct target *t = j->owner;

        t->job = NULL;
        drop_from(m->running, &m->running_n, t);
        if (j->op == MAINT_OP_STATS)
                m->running_stats--;
        else
                m->running_jobs--;

        if (t->removed) {
                /* Dropped while it ran: its result still belongs in the journal. */
                if (j->op != MAINT_OP_STATS)
                        log_result(m, t, j);
                target_free(t);
        } else if (j->op == MAINT_OP_STATS) {
                stat_done(m, t, j);
        } else {
                m->jobs_done++;
                job_applied(m, t, j);
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

/* The queue as sched_dispatch() sees it, into m->jobs. */
static int describe_queue(struct manager *m)
{
        if (m->queue_n > m->jobs_cap) {
                struct sched_job *v = realloc(m->jobs, m->queue_cap * sizeof(*v));

                if (!v)
                        return -ENOMEM;
                m->jobs = v;
                m->jobs_cap = m->queue_cap;
        }
        for (size_t i = 0; i < m->queue_n; i++) {
                const struct target *t = m->queue[i];

                m->jobs[i] = (struct sched_job){
                        .op = t->op,
                        .reason = t->reason,
                        .urgent = t->urgent,
                        .fragmentation_percent = t->stat.fragmentation_percent,
                        .in_use = t->job || file_in_use(m, t),
                        .retry_at_ms = t->retry_at,
                        .window = t->dc->vacuum.window,
                };
        }
        return 0;
}

/* Start what may start: precise reads, then maintenance as
 * sched_dispatch() picks it; arm the dispatch timer for the earliest
 * backoff still to run out. */
static void dispatch(struct manager *m)
{
        uint64_t now = util_monotonic_ms(), next = UINT64_MAX;
        int minute = minute_of_day();

        if (m->stopping)
                return;
        while (m->running_stats < STAT_JOBS_MAX && m->statq_head < m->statq_n) {
                struct target *t = m->statq[m->statq_head++];

                if (m->statq_head == m->statq_n) /* drained: start again at the front */
                        m->statq_head = m->statq_n = 0;
                /* queued before another path's job took the file: the
                 * next poll looks again, once that job is done */
                if (file_in_use(m, t)) {
                        t->want_precise = false;
                        continue;
                }
                if (start_job(m, t, MAINT_OP_STATS) < 0) {
                        t->want_precise = false;
                        log_msg(LOG_ERR, "%s: cannot start a statistics read, skipping", t->path);
                }
        }
        for (;;) {
                struct sched_dispatch d;
                struct target *t;

                if (describe_queue(m) < 0) {
                        log_msg(LOG_ERR, "out of memory choosing the next job, trying again later");
                        break;
                }
                d = sched_dispatch(m->jobs, m->queue_n, m->running_jobs, m->max_jobs, now, minute,
                                   m->ignore_window);
                next = d.wake_ms < next ? d.wake_ms : next;
                if (d.choice == SCHED_DISPATCH_NONE)
                        break;
                t = m->queue[d.index];
                drop_from(m->queue, &m->queue_n, t);
                t->queued = false;
                if (d.choice == SCHED_DISPATCH_WINDOW_CLOSED) { /* a later poll decides again */
                        log_msg(LOG_INFO, "%s: the window closed before VACUUM could start; waiting for the next one",
                                t->path);
                        t->logged_reason = SCHED_REASON_NONE;
                        continue;
                }
                if (start_job(m, t, t->op) < 0)
                        log_msg(LOG_ERR, "%s: cannot start %s, skipping", t->path, maint_op_name(t->op));
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
        struct log_entry e;
        bool created;
        struct target *r;

        if (!path) {
                log_entry_init(&e, LOG_WARNING, MSGID_PATH_REFUSED);
                log_field(&e, "CONFIG_PATH", "%s", dc->path);
                log_entry_send(&e, "%s: %s (%llu): the others are not watched", dc->path, why,
                               (unsigned long long)dc->limits.max_matches);
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
        if (!created)
                return;
        entry_db(&e, LOG_WARNING, MSGID_PATH_REFUSED, path, "poll");
        log_field(&e, "CONFIG_PATH", "%s", dc->path);
        log_entry_send(&e, "%s: %s", path, why);
}

/* Expand the paths and globs again; drop what no longer matches. */
static int expand(struct manager *m)
{
        const struct targets_events ev = { target_added, target_refused, m };
        int r;

        for (size_t i = 0; i < m->refused.n; i++)
                m->refused.v[i]->seen = false;
        m->refused_over = 0;
        r = targets_expand(&m->targets, &ev);
        if (m->refused_over && !m->refused_over_said) {
                struct log_entry e;

                log_entry_init(&e, LOG_WARNING, MSGID_PATH_REFUSED);
                log_entry_send(&e, "%zu more paths not followed, past the first %d, are not named one by one",
                               m->refused_over, REFUSED_MAX);
        }
        m->refused_over_said = m->refused_over > 0;
        /* refused paths no longer met are forgotten: met again, reported again */
        for (size_t i = m->refused.n; i-- > 0;)
                if (!m->refused.v[i]->seen) {
                        struct target *t = m->refused.v[i];

                        targets_remove(&m->refused, t);
                        target_free(t);
                }

        if (r < 0)
                return r;
        for (size_t i = m->targets.n; i-- > 0;) {
                struct target *t = m->targets.v[i];
                struct log_entry e;

                if (t->seen)
                        continue;
                entry_db(&e, LOG_INFO, MSGID_DB_REMOVED, t->path, "poll");
                log_entry_send(&e, "%s: %s; no longer watched", t->path,
                               t->explicit_path ? "left the configuration" : "no longer matches any configured path");
                target_drop(m, t);
        }
        m->expanded = true;
        return 0;
}

static void tick_cb(uv_timer_t *timer)
{
        struct manager *m = timer->data;

        for (size_t k = 0; k < m->per_tick && m->round_pos < m->round_n; k++) {
                struct target *t = m->round[m->round_pos++];

                if (t)
                        poll_target(m, t);
        }
        if (m->round_pos >= m->round_n) {
                uv_timer_stop(&m->tick_timer);
                m->round_active = false;
        }
        dispatch(m);
        maybe_done(m);
}

static void start_round(struct manager *m)
{
        uint64_t spread, tick;

        if (expand(m) < 0) {
                log_msg(LOG_ERR, "out of memory expanding the database paths, skipping this poll");
                return;
        }
        m->round_n = m->round_pos = 0;
        for (size_t i = 0; i < m->targets.n; i++)
                if (push(&m->round, &m->round_n, &m->round_cap, m->targets.v[i]) < 0)
                        break;
        m->round_active = true;

        /* Spread the header reads over most of the interval, a few per tick,
         * so ten thousand databases are not all read at the same moment. */
        spread = m->conf->poll_interval_ms * POLL_SPREAD_PERCENT / 100;
        if (m->once || m->round_n == 0 || spread == 0) {
                m->per_tick = m->round_n ? m->round_n : 1;
                tick = 0;
        } else {
                tick = spread / m->round_n;
                if (tick < POLL_TICK_MIN_MS)
                        tick = POLL_TICK_MIN_MS;
                m->per_tick = (size_t)((m->round_n * tick + spread - 1) / spread);
                if (m->per_tick == 0)
                        m->per_tick = 1;
        }
        log_msg(LOG_DEBUG, "poll: %zu database%s, %zu every %llu ms", m->round_n, m->round_n == 1 ? "" : "s",
                m->per_tick, (unsigned long long)tick);
        uv_timer_start(&m->tick_timer, tick_cb, 0, tick ? tick : 1);
}

static void poll_cb(uv_timer_t *timer)
{
        start_round(timer->data);
}

/* --- signals, reload, stop --------------------------------------------- */

static void prune_cb(uv_timer_t *timer);

static void reload(struct manager *m)
{
        struct conf_diag d = { 0 };
        struct conf *c = NULL, *old;
        struct log_entry e;
        int r;

        notify_reloading();
        log_msg(LOG_INFO, "reloading %s", m->conf_file);
        r = conf_load(m->conf_file, &c, &d);
        if (r < 0) {
                for (size_t i = 0; i < d.n; i++) {
                        log_entry_init(&e, LOG_ERR, MSGID_RELOAD_FAILED);
                        log_entry_send(&e, "%s", d.msgs[i]);
                }
                log_entry_init(&e, LOG_ERR, MSGID_RELOAD_FAILED);
                log_field(&e, "CONFIG_FILE", "%s", m->conf_file);
                log_entry_send(&e, "reload of %s failed (%s); keeping the old configuration", m->conf_file,
                               d.n ? "see the errors above" : strerror(-r));
                conf_diag_clear(&d);
                notify_ready();
                update_status(m);
                return;
        }
        if (strcmp(c->state_dir, m->conf->state_dir) != 0)
                log_msg(LOG_WARNING, "state_dir changed to %s: it takes effect at the next restart; "
                        "history stays in %s until then", c->state_dir, m->conf->state_dir);
        old = m->conf;
        m->conf = c;
        /* the admin's part of each path is resolved again: a reload is
         * when the admin says it may have changed */
        if (targets_configure(&m->targets, c) < 0)
                log_msg(LOG_ERR, "out of memory resolving the database paths");
        /* Every target now points into the new conf, or is dropped. Running
         * jobs carry copies of their settings and are not disturbed. */
        if (expand(m) < 0)
                log_msg(LOG_ERR, "out of memory expanding the database paths");
        for (size_t i = 0; i < m->targets.n; i++) {
                m->targets.v[i]->held = false; /* the new settings may fix it */
                m->targets.v[i]->rowid_hold = false;
                m->targets.v[i]->logged_reason = SCHED_REASON_NONE;
        }
        m->max_jobs = c->max_concurrent_jobs;
        if (m->max_jobs > m->pool_size - STAT_JOBS_MAX) {
                log_msg(LOG_WARNING, "max_concurrent_jobs %u is more than the worker pool sized at start "
                        "allows; running at most %u until a restart", c->max_concurrent_jobs,
                        m->pool_size - STAT_JOBS_MAX);
                m->max_jobs = m->pool_size - STAT_JOBS_MAX;
        }
        conf_free(old);
        log_entry_init(&e, LOG_INFO, MSGID_RELOADED);
        log_field(&e, "CONFIG_FILE", "%s", m->conf_file);
        log_entry_send(&e, "configuration reloaded from %s: %zu database entr%s, %zu database%s watched",
                       m->conf_file, c->n_dbs, c->n_dbs == 1 ? "y" : "ies", m->targets.n,
                       m->targets.n == 1 ? "" : "s");
        uv_timer_start(&m->poll_timer, poll_cb, 0, c->poll_interval_ms);
        /* the set of databases may have changed: the state file forgets
         * those whose files are gone now too */
        prune_cb(&m->prune_timer);
        notify_ready();
        update_status(m);
}

static void close_cb(uv_handle_t *h)
{
        (void)h;
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
        struct log_entry e;

        if (m->stopping) {
                log_msg(LOG_NOTICE, "already stopping; waiting for %u job%s (a VACUUM in its copy-back "
                        "cannot be interrupted)", m->running_jobs + m->running_stats,
                        m->running_jobs + m->running_stats == 1 ? "" : "s");
                return;
        }
        m->stopping = true;
        notify_stopping();
        log_entry_init(&e, LOG_INFO, MSGID_STOPPING);
        log_field(&e, "JOBS_RUNNING", "%u", m->running_jobs + m->running_stats);
        log_entry_send(&e, "stopping; %u job%s running", m->running_jobs + m->running_stats,
                       m->running_jobs + m->running_stats == 1 ? "" : "s");
        uv_timer_stop(&m->poll_timer);
        uv_timer_stop(&m->prune_timer);
        uv_timer_stop(&m->tick_timer);
        uv_timer_stop(&m->dispatch_timer);
        m->round_active = false;
        for (size_t i = 0; i < m->queue_n; i++)
                m->queue[i]->queued = false;
        m->queue_n = 0;
        for (size_t i = m->statq_head; i < m->statq_n; i++)
                m->statq[i]->want_precise = false;
        m->statq_head = m->statq_n = 0;
        /* Running jobs stop at their next safe point; the watchdog keeps
         * being fed while they do. */
        for (size_t i = 0; i < m->targets.n; i++)
                if (m->targets.v[i]->job)
                        job_cancel(m->targets.v[i]->job);
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
        if (m->prune_result > 0)
                log_msg(LOG_INFO, "state file: forgot %d database%s whose files are gone", m->prune_result,
                        m->prune_result == 1 ? "" : "s");
        else if (m->prune_result < 0)
                log_msg(LOG_WARNING, "state file: cannot forget databases whose files are gone: %s",
                        strerror(-m->prune_result));
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

static void history_loaded(void *userdata, const char *path, const struct sched_history *hist)
{
        struct manager *m = userdata;
        bool created;
        struct target *h = targets_get(&m->history, path, &created);

        if (h)
                h->hist = *hist;
}

int manager_new(struct manager **ret, const struct manager_options *o, struct conf *conf)
{
        struct manager *m;
        const char *err;
        char n[16];
        int r;

        m = calloc(1, sizeof(*m));
        if (!m) {
                conf_free(conf);
                return -ENOMEM;
        }
        m->conf = conf;
        targets_init(&m->targets);
        targets_init(&m->history);
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
        if (state_load(m->state, history_loaded, m) < 0)
                log_msg(LOG_WARNING, "cannot read the state file in %s, starting without history",
                        m->conf->state_dir);

        /* The pool is sized once, before its first use: jobs, plus room for
         * statistics reads so they never wait behind a long VACUUM. */
        m->max_jobs = m->conf->max_concurrent_jobs;
        m->pool_size = m->max_jobs + STAT_JOBS_MAX;
        if (m->pool_size < 4)
                m->pool_size = 4;
        snprintf(n, sizeof(n), "%u", m->pool_size);
        setenv("UV_THREADPOOL_SIZE", n, 1);

        r = uv_loop_init(&m->loop);
        if (r < 0) {
                log_msg(LOG_ERR, "cannot create the event loop: %s", uv_strerror(r));
                m->loop.data = NULL;
                manager_free(m);
                return -EIO;
        }
        m->loop.data = m;
        uv_timer_init(&m->loop, &m->poll_timer);
        uv_timer_init(&m->loop, &m->tick_timer);
        uv_timer_init(&m->loop, &m->dispatch_timer);
        uv_timer_init(&m->loop, &m->watchdog_timer);
        uv_timer_init(&m->loop, &m->prune_timer);
        uv_timer_init(&m->loop, &m->flood_timer);
        uv_signal_init(&m->loop, &m->sig_hup);
        uv_signal_init(&m->loop, &m->sig_term);
        uv_signal_init(&m->loop, &m->sig_int);
        m->poll_timer.data = m->tick_timer.data = m->dispatch_timer.data = m->watchdog_timer.data = m;
        m->prune_timer.data = m->prune_req.data = m->flood_timer.data = m;
        m->sig_hup.data = m->sig_term.data = m->sig_int.data = m;
        *ret = m;
        return 0;
}

int manager_run(struct manager *m)
{
        uint64_t wd = notify_watchdog_usec();
        struct log_entry e;
        int r;

        signal(SIGPIPE, SIG_IGN);
        srandom((unsigned)time(NULL) ^ (unsigned)getpid()); /* backoff jitter */
        start_pool_without_signals(m);
        uv_signal_start(&m->sig_hup, signal_cb, SIGHUP);
        uv_signal_start(&m->sig_term, signal_cb, SIGTERM);
        uv_signal_start(&m->sig_int, signal_cb, SIGINT);
        if (wd)
                uv_timer_start(&m->watchdog_timer, watchdog_cb, 0, wd / 2000 ? wd / 2000 : 1);

        if (targets_configure(&m->targets, m->conf) < 0 || expand(m) < 0) {
                log_msg(LOG_ERR, "out of memory expanding the database paths");
                close_all(m);
                uv_run(&m->loop, UV_RUN_DEFAULT);
                return EXIT_FAILURE;
        }
        log_entry_init(&e, LOG_INFO, MSGID_STARTED);
        log_field(&e, "CONFIG_FILE", "%s", m->conf_file);
        log_field(&e, "DATABASES", "%zu", m->targets.n);
        log_entry_send(&e, "started%s%s: %zu database%s from %s, polling every %s, at most %u job%s at once",
                       m->once ? " (once)" : "", m->dry_run ? " (dry run)" : "", m->targets.n,
                       m->targets.n == 1 ? "" : "s", m->conf_file,
                       conf_format_duration(m->conf->poll_interval_ms, (char[32]){ 0 }, 32), m->max_jobs,
                       m->max_jobs == 1 ? "" : "s");
        notify_ready();
        update_status(m);

        uv_timer_start(&m->flood_timer, flood_cb, FLOOD_TICK_MS, FLOOD_TICK_MS);
        if (m->once) {
                start_round(m);
        } else {
                uv_timer_start(&m->poll_timer, poll_cb, 0, m->conf->poll_interval_ms);
                uv_timer_start(&m->prune_timer, prune_cb, PRUNE_FIRST_MS, PRUNE_INTERVAL_MS);
        }

        uv_run(&m->loop, UV_RUN_DEFAULT);
        r = uv_loop_close(&m->loop);
        if (r != 0)
                log_msg(LOG_ERR, "event loop did not close cleanly: %s", uv_strerror(r));
        m->loop.data = NULL;
        log_msg(LOG_INFO, "stopped after %lu job%s, %u failed", m->jobs_done, m->jobs_done == 1 ? "" : "s",
                m->failures);
        return r == 0 && (!m->once || m->failures == 0) ? EXIT_SUCCESS : EXIT_FAILURE;
}

struct manager *manager_free(struct manager *m)
{
        if (!m)
                return NULL;
        if (m->loop.data) { /* never ran: close the handles made in manager_new */
                close_all(m);
                uv_run(&m->loop, UV_RUN_DEFAULT);
                uv_loop_close(&m->loop);
        }
        targets_clear(&m->targets);
        targets_clear(&m->history);
        targets_clear(&m->refused);
        free(m->round);
        free(m->queue);
        free(m->jobs);
        free(m->running);
        free(m->statq);
        state_free(m->state);
        conf_free(m->conf);
        free(m->conf_file);
        free(m);
        return NULL;
}
