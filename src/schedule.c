/* SPDX-License-Identifier: MIT */
#include <stdint.h>
#include <string.h>

#include "schedule.h"

bool sched_in_window(const struct window *w, int m)
{
        if (w->always)
                return true;
        if (w->start_min < w->end_min)
                return m >= w->start_min && m < w->end_min;
        /* Wraps midnight: 22:00-03:00 is [22:00, 24:00) and [00:00, 03:00). */
        return m >= w->start_min || m < w->end_min;
}

int sched_minutes_until_window(const struct window *w, int m)
{
        if (sched_in_window(w, m))
                return 0;
        return (w->start_min - m + 1440) % 1440;
}

/* The space a deep scan found unused inside pages (vacuum.unused_threshold):
 * a VACUUM packs the pages again. Only in the window, never urgent, and
 * only for a full VACUUM (an incremental one frees whole free pages). */
static bool unused_due(const struct dbstat *st, const struct vacuum_conf *vc, const struct sched_history *h)
{
        uint64_t reclaimable_pages = st->page_size ? h->deep_reclaimable_bytes / st->page_size : 0;

        if (vc->unused_threshold <= 0 || vc->mode != VACUUM_MODE_FULL || !h->deep_known ||
            h->deep_unused_percent < vc->unused_threshold || h->deep_reclaimable_bytes < vc->min_reclaim)
                return false;
        /* Shrunk since the scan by more than half of what a VACUUM could
         * give back: someone else packed it (sqlite-maintctl, the
         * application's own VACUUM); the figures are history. */
        return st->page_count + reclaimable_pages / 2 >= h->deep_page_count;
}

enum sched_reason sched_threshold(const struct dbstat *st, const struct vacuum_conf *vc)
{
        if (st->fragmentation_percent < vc->threshold)
                return SCHED_REASON_BELOW;
        if (st->estimated_wasted_space_bytes < vc->min_reclaim)
                return SCHED_REASON_MIN_RECLAIM;
        return SCHED_REASON_THRESHOLD;
}

enum sched_action sched_vacuum_action(const struct dbstat *st, const struct vacuum_conf *vc)
{
        /* Incremental vacuum only frees pages of an auto_vacuum=INCREMENTAL
         * database; any other database gets the full VACUUM. */
        return vc->mode == VACUUM_MODE_INCREMENTAL && st->auto_vacuum == AUTO_VACUUM_INCREMENTAL
             ? SCHED_INCREMENTAL_VACUUM : SCHED_VACUUM;
}

struct sched_decision sched_vacuum(const struct dbstat *st, const struct vacuum_conf *vc,
                                   const struct sched_history *h, int64_t now_ms, int minute_of_day,
                                   bool ignore_window)
{
        struct sched_decision d = { SCHED_NONE, SCHED_REASON_BELOW, false };
        bool urgent = st->fragmentation_percent >= vc->urgent_threshold;
        bool unused = false;
        enum sched_reason freelist;

        if (st->page_count == 0)
                return d;
        freelist = sched_threshold(st, vc);
        if (freelist != SCHED_REASON_THRESHOLD) {
                unused = unused_due(st, vc, h);
                if (!unused) {
                        d.reason = freelist;
                        return d;
                }
                urgent = false;
                d.unused = true;
        }
        if (h->last_vacuum_ms > 0 && now_ms - h->last_vacuum_ms < (int64_t)vc->min_interval_ms) {
                d.reason = SCHED_REASON_MIN_INTERVAL;
                return d;
        }
        if (!urgent && !ignore_window && !sched_in_window(&vc->window, minute_of_day)) {
                d.reason = SCHED_REASON_WAIT_WINDOW;
                return d;
        }
        d.reason = urgent ? SCHED_REASON_URGENT : unused ? SCHED_REASON_UNUSED : SCHED_REASON_THRESHOLD;
        /* the unused space inside pages only a full VACUUM packs */
        d.action = unused ? SCHED_VACUUM : sched_vacuum_action(st, vc);
        return d;
}

int sched_minutes_until_window_end(const struct window *w, int m)
{
        if (w->always)
                return INT32_MAX;
        if (!sched_in_window(w, m))
                return 0;
        return (w->end_min - m + 1440) % 1440;
}

int64_t sched_deep_scan_due(const struct deep_scan_conf *dc, const struct sched_history *h, uint64_t stagger_ms,
                            uint32_t path_hash)
{
        if (dc->interval_ms == 0)
                return INT64_MAX;
        if (h->last_deep_scan_ms > 0)
                return h->last_deep_scan_ms + (int64_t)dc->interval_ms;
        if (stagger_ms > dc->interval_ms)
                stagger_ms = dc->interval_ms;
        return h->first_seen_ms + (stagger_ms ? (int64_t)(path_hash % stagger_ms) : 0);
}

/* SQLite's default wal_autocheckpoint, in pages. */
#define SQLITE_AUTOCHECKPOINT_PAGES 1000

bool sched_checkpoint(const struct dbstat *st, const struct checkpoint_conf *cc, bool owed,
                      enum sched_reason *reason)
{
        /* the -wal of SQLITE_AUTOCHECKPOINT_PAGES frames: the 32-byte WAL header,
         * then each page after its 24-byte frame header (fileformat2.html) */
        uint64_t wal = st->wal_size_bytes,
                 floor = 32 + (uint64_t)SQLITE_AUTOCHECKPOINT_PAGES * ((uint64_t)st->page_size + 24);

        *reason = SCHED_REASON_NONE;
        if (strcmp(st->journal_mode, "wal") != 0 || wal == 0)
                return false;
        if (owed)
                *reason = SCHED_REASON_AFTER_VACUUM;
        else if ((cc->wal_size_limit && wal > cc->wal_size_limit) ||
                 (cc->wal_size_ratio > 0 && wal > floor &&
                  (double)wal > cc->wal_size_ratio / 100.0 * (double)st->file_size_bytes))
                *reason = SCHED_REASON_WAL_SIZE;
        return *reason != SCHED_REASON_NONE;
}

int64_t sched_analyze_due(const struct analyze_conf *ac, const struct sched_history *h, uint64_t stagger_ms,
                          uint32_t path_hash)
{
        if (ac->interval_ms == 0)
                return INT64_MAX;
        if (h->last_analyze_ms > 0)
                return h->last_analyze_ms + (int64_t)ac->interval_ms;
        if (stagger_ms > ac->interval_ms)
                stagger_ms = ac->interval_ms;
        return h->first_seen_ms + (stagger_ms ? (int64_t)(path_hash % stagger_ms) : 0);
}

uint64_t sched_backoff_ms(const struct retry_conf *rc, int attempt, uint32_t rnd)
{
        uint64_t d = rc->initial_backoff_ms;

        for (int i = 1; i < attempt && d < rc->max_backoff_ms; i++)
                d *= 2;
        if (d > rc->max_backoff_ms)
                d = rc->max_backoff_ms;
        /* Jitter below the bound, so the cap holds and retries of many
         * databases locked by one app do not fall into step. */
        return d - (d / 4 ? rnd % (d / 4 + 1) : 0);
}

int sched_compare(bool a_urgent, double a_frag, bool b_urgent, double b_frag)
{
        if (a_urgent != b_urgent)
                return a_urgent ? -1 : 1;
        if (a_frag != b_frag)
                return a_frag > b_frag ? -1 : 1;
        return 0;
}

/* Vacuums and checkpoints, then ANALYZE, then deep scans. */
static int dispatch_rank(enum maint_op op)
{
        return op == MAINT_OP_DEEP_SCAN ? 2 : op == MAINT_OP_ANALYZE ? 1 : 0;
}

/* Whether a goes before b: by dispatch_rank, then sched_compare. */
static bool dispatch_before(const struct sched_job *a, const struct sched_job *b)
{
        if (dispatch_rank(a->op) != dispatch_rank(b->op))
                return dispatch_rank(a->op) < dispatch_rank(b->op);
        return sched_compare(a->urgent, a->fragmentation_percent, b->urgent, b->fragmentation_percent) < 0;
}

struct sched_dispatch sched_dispatch(const struct sched_job *jobs, size_t n, unsigned running, unsigned max_running,
                                     uint64_t now_ms, int minute_of_day, bool ignore_window)
{
        struct sched_dispatch d = { SCHED_DISPATCH_NONE, 0, UINT64_MAX };
        const struct sched_job *best = NULL;

        if (running >= max_running)
                return d;
        for (size_t i = 0; i < n; i++) {
                const struct sched_job *j = &jobs[i];

                if (j->in_use) /* one job per database */
                        continue;
                if (j->retry_at_ms > now_ms) {
                        d.wake_ms = j->retry_at_ms < d.wake_ms ? j->retry_at_ms : d.wake_ms;
                        continue;
                }
                if (!best || dispatch_before(j, best)) {
                        best = j;
                        d.index = i;
                }
        }
        if (!best)
                return d;
        /* Queued (or backing off) past the end of its window. */
        d.choice = best->reason == SCHED_REASON_THRESHOLD && !ignore_window &&
                   !sched_in_window(&best->window, minute_of_day)
                 ? SCHED_DISPATCH_WINDOW_CLOSED : SCHED_DISPATCH_START;
        return d;
}

bool sched_hold_lasts(uint64_t until_ms, bool same_file, uint64_t now_ms)
{
        return same_file && !(until_ms && now_ms >= until_ms);
}

uint32_t sched_hash(const char *s)
{
        uint32_t h = 2166136261u;

        for (; *s; s++) {
                h ^= (unsigned char)*s;
                h *= 16777619u;
        }
        return h;
}

const char *sched_reason_name(enum sched_reason r)
{
        switch (r) {
        case SCHED_REASON_THRESHOLD: return "threshold";
        case SCHED_REASON_URGENT: return "urgent";
        case SCHED_REASON_TIMER: return "timer";
        case SCHED_REASON_WAIT_WINDOW: return "outside-window";
        case SCHED_REASON_MIN_INTERVAL: return "min-interval";
        case SCHED_REASON_MIN_RECLAIM: return "min-reclaim";
        case SCHED_REASON_BELOW: return "below-threshold";
        case SCHED_REASON_WAL_SIZE: return "wal-size";
        case SCHED_REASON_AFTER_VACUUM: return "after-vacuum";
        case SCHED_REASON_ROWIDS: return "rowids";
        case SCHED_REASON_UNUSED: return "unused-space";
        case SCHED_REASON_REQUESTED: return "requested";
        case SCHED_REASON_WINDOW_SHORT: return "window-too-short";
        default: return "none";
        }
}

int64_t sched_vacuum_estimate_ms(const struct sched_rate *rate, uint64_t bytes)
{
        if (rate->n == 0 || rate->bytes < 1024 * 1024 || rate->ms == 0)
                return -1;
        return (int64_t)((double)bytes * (double)rate->ms / (double)rate->bytes);
}

bool sched_fits_window(const struct window *w, int minute_of_day, int second, int64_t est_ms)
{
        int64_t left_ms;

        if (w->always || est_ms < 0)
                return true;
        left_ms = (int64_t)sched_minutes_until_window_end(w, minute_of_day) * 60000 - (int64_t)second * 1000;
        return est_ms <= left_ms;
}

struct sched_decision sched_vacuum_fit(struct sched_decision d, const struct window *w, int minute_of_day, int second,
                                       int64_t est_ms, bool ignore_window)
{
        if (d.action == SCHED_VACUUM && d.reason != SCHED_REASON_URGENT && !ignore_window &&
            !sched_fits_window(w, minute_of_day, second, est_ms))
                return (struct sched_decision){ SCHED_NONE, SCHED_REASON_WINDOW_SHORT, d.unused };
        return d;
}
