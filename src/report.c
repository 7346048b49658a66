/* SPDX-License-Identifier: MIT */
/* report: status, explain and metrics (report.h). */
#include <inttypes.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "conf.h"
#include "report.h"
#include "schedule.h"
#include "util.h"

enum report_result report_result_of(enum maint_status s)
{
        switch (s) {
        case MAINT_OK:
        case MAINT_SKIPPED: return REPORT_OK;
        case MAINT_BUSY: return REPORT_BUSY;
        case MAINT_CORRUPT: return REPORT_CORRUPT;
        case MAINT_NOSPACE: return REPORT_NO_SPACE;
        case MAINT_ROWIDS: return REPORT_ROWIDS;
        case MAINT_TIMEOUT: return REPORT_TIMEOUT;
        case MAINT_HOOK_REFUSED: return REPORT_HOOK_REFUSED;
        default: return REPORT_FAILED;
        }
}

const char *report_result_name(enum report_result r)
{
        static const char *const names[REPORT_RESULTS] = {
                [REPORT_OK] = "ok",           [REPORT_BUSY] = "busy",       [REPORT_CORRUPT] = "corrupt",
                [REPORT_NO_SPACE] = "no_space", [REPORT_ROWIDS] = "rowids", [REPORT_HOOK_REFUSED] = "hook_refused",
                [REPORT_TIMEOUT] = "timeout", [REPORT_FAILED] = "failed",
        };

        return names[r];
}

static const char *state_name(enum target_state s)
{
        switch (s) {
        case TARGET_IDLE: return "idle";
        case TARGET_STAT_QUEUED: return "statistics_queued";
        case TARGET_STAT_RUNNING: return "reading_statistics";
        case TARGET_QUEUED: return "queued";
        case TARGET_RUNNING: return "running";
        case TARGET_HELD: return "held";
        case TARGET_REMOVED: return "removed";
        }
        return "unknown";
}

/* A wall clock time, ms, as local ISO 8601 with its offset. */
static const char *when(int64_t ms, char *buf, size_t size)
{
        time_t s = (time_t)(ms / 1000);
        struct tm tm;

        if (ms <= 0 || !localtime_r(&s, &tm) || strftime(buf, size, "%Y-%m-%d %H:%M:%S %z", &tm) == 0)
                snprintf(buf, size, "never");
        return buf;
}

static void json_time(struct json *j, const char *key, int64_t ms)
{
        if (ms > 0)
                json_i64(j, key, ms);
        else
                json_str(j, key, NULL);
}

void report_daemon_json(struct json *j, const struct report_daemon *d)
{
        json_str(j, "config", d->conf_file);
        json_i64(j, "started_ms", d->started_ms);
        json_i64(j, "uptime_ms", d->now_ms - d->started_ms);
        json_u64(j, "poll_interval_ms", d->poll_interval_ms);
        json_u64(j, "databases_watched", d->watched);
        json_u64(j, "jobs_running", d->running);
        json_u64(j, "jobs_queued", d->queued);
        json_time(j, "last_poll_ms", d->last_round_end_ms);
        if (d->last_round) {
                json_u64(j, "last_poll_read", d->last_round->read);
                json_u64(j, "last_poll_unchanged", d->last_round->unchanged);
                json_u64(j, "last_poll_duration_ms", d->last_round_ms);
        }
}

int report_progress_percent(const struct report_progress *p, int64_t now_ms)
{
        int64_t pct;

        if (p->estimate_ms < 1000) /* unknown, or too short to follow */
                return -1;
        pct = (now_ms - p->started_ms) * 100 / p->estimate_ms;
        return pct < 0 ? 0 : pct > 99 ? 99 : (int)pct;
}

/* The operation of the job that ended last (mm->last[]), or -1: none. */
static int last_job(const struct target_memo *mm)
{
        int op = -1;

        for (int i = 0; i <= MAINT_OP_DEEP_SCAN; i++)
                if (mm->last[i].ms > 0 && (op < 0 || mm->last[i].ms >= mm->last[op].ms))
                        op = i;
        return op;
}

void report_target_json(struct json *j, const char *key, const struct target *t, int64_t now_ms,
                        const struct report_progress *progress)
{
        const struct target_memo *mm = target_memo_get(t);
        int last = last_job(mm);
        const struct dbstat *st = &t->stat;

        json_object_begin(j, key);
        json_str(j, "db", t->path);
        json_str(j, "state", state_name(t->state));
        if (t->have_stat)
                json_dbstat(j, st);
        if (t->hist.deep_known) {
                json_fixed2(j, "deep_unused_percent", t->hist.deep_unused_percent);
                json_u64(j, "deep_reclaimable_bytes", t->hist.deep_reclaimable_bytes);
        }
        json_time(j, "last_vacuum_ms", t->hist.last_vacuum_ms);
        json_time(j, "last_analyze_ms", t->hist.last_analyze_ms);
        json_time(j, "last_deep_scan_ms", t->hist.last_deep_scan_ms);
        json_time(j, "last_check_ms", mm->last_check_ms);
        if (last >= 0) {
                json_object_begin(j, "last_job");
                json_str(j, "operation", maint_op_name((enum maint_op)last));
                json_str(j, "result", maint_status_name(mm->last[last].status));
                json_i64(j, "finished_ms", mm->last[last].ms);
                json_u64(j, "bytes_given_back", mm->last[last].given_back);
                json_object_end(j);
        }
        json_object_begin(j, "last");
        for (int op = MAINT_OP_VACUUM; op <= MAINT_OP_DEEP_SCAN; op++) {
                if (!mm->last[op].ms)
                        continue;
                json_object_begin(j, maint_op_name((enum maint_op)op));
                json_i64(j, "finished_ms", mm->last[op].ms);
                json_str(j, "result", maint_status_name(mm->last[op].status));
                json_u64(j, "bytes_given_back", mm->last[op].given_back);
                json_object_end(j);
        }
        json_object_end(j);
        json_u64(j, "job_failures", (uint64_t)mm->job_failures);
        if (t->state == TARGET_QUEUED || t->state == TARGET_RUNNING) {
                json_object_begin(j, "job");
                json_str(j, "operation", maint_op_name(t->op));
                json_str(j, "reason", sched_reason_name(t->reason));
                json_bool(j, "urgent", t->urgent);
                json_u64(j, "attempt", (uint64_t)t->attempt);
                if (progress && t->state == TARGET_RUNNING) {
                        int pct = report_progress_percent(progress, now_ms);

                        json_str(j, "phase", maint_phase_name(progress->phase));
                        json_i64(j, "started_ms", progress->started_ms);
                        json_i64(j, "elapsed_ms", now_ms - progress->started_ms);
                        if (pct >= 0) {
                                int64_t left = progress->started_ms + progress->estimate_ms - now_ms;

                                json_i64(j, "estimated_ms", progress->estimate_ms);
                                json_u64(j, "estimated_percent", (uint64_t)pct);
                                json_i64(j, "estimated_left_ms", left > 0 ? left : 0);
                        }
                }
                json_object_end(j);
        }
        json_str(j, "decision", sched_reason_name(t->logged_reason));
        if (t->state == TARGET_HELD) {
                json_object_begin(j, "hold");
                json_str(j, "reason", maint_status_name(mm->hold_status));
                json_bool(j, "until_changed", mm->hold_on_change);
                json_object_end(j);
        }
        json_bool(j, "rowid_hold", mm->rowid_hold);
        json_bool(j, "checkpoint_owed", mm->wal_owed);
        json_object_end(j);
}

/* ---- explain ------------------------------------------------------------ */

static void explain_vacuum(FILE *f, const struct target *t, int64_t now, int minute, bool ignore_window,
                           int64_t est_ms)
{
        const struct vacuum_conf *vc = &t->dc->vacuum;
        const struct target_memo *mm = target_memo_get(t);
        const struct dbstat *st = &t->stat;
        struct sched_decision d = sched_vacuum_fit(sched_vacuum(st, vc, &t->hist, now, minute, ignore_window),
                                                   &vc->window, minute, (int)(now / 1000 % 60), est_ms, ignore_window);
        char a[32], b[32], c[48];

        fprintf(f, "Fragmentation %.2f%% (%" PRIu64 " free pages of %" PRIu64 ", %s reclaimable); its entry vacuums "
                "at %.2f%% (vacuum.threshold) in its window and at %.2f%% (vacuum.urgent_threshold) at once. ",
                st->fragmentation_percent, st->freelist_count, st->page_count,
                util_format_bytes(st->estimated_wasted_space_bytes, a, sizeof(a)), vc->threshold,
                vc->urgent_threshold);
        if (t->state != TARGET_IDLE) /* what is under way, or the hold, is what counts now */
                return;
        if (vc->window.always)
                fputs("(Its window is always open.) ", f);
        else
                fprintf(f, "(The window is %02d:%02d-%02d:%02d, %s now.) ", vc->window.start_min / 60,
                        vc->window.start_min % 60, vc->window.end_min / 60, vc->window.end_min % 60,
                        sched_in_window(&vc->window, minute) ? "open" : "closed");
        if (d.action != SCHED_NONE && mm->rowid_hold && st->schema_cookie == mm->rowid_hold_cookie) {
                fputs("A VACUUM is due but held: the last one was refused because it would renumber the rowids of "
                      "tables without an INTEGER PRIMARY KEY or index (the rowid guard); it is not tried again until "
                      "the schema changes, or vacuum.allow_rowid_change is set. ", f);
                return;
        }
        switch (d.reason) {
        case SCHED_REASON_BELOW:
                fputs("That is below its threshold: no VACUUM is planned. ", f);
                break;
        case SCHED_REASON_MIN_RECLAIM:
                fprintf(f, "It is at its threshold, but VACUUM would give back less than vacuum.min_reclaim (%s): "
                        "none is planned. ", util_format_bytes(vc->min_reclaim, b, sizeof(b)));
                break;
        case SCHED_REASON_MIN_INTERVAL:
                fprintf(f, "A VACUUM is due, but the last one was at %s and vacuum.min_interval keeps the next until "
                        "%s. ", when(t->hist.last_vacuum_ms, c, sizeof(c)),
                        when(t->hist.last_vacuum_ms + (int64_t)vc->min_interval_ms, b, sizeof(b)));
                break;
        case SCHED_REASON_WAIT_WINDOW:
                fputs("A VACUUM is due and waits for the window to open (below the urgent threshold). ", f);
                break;
        case SCHED_REASON_URGENT:
                fputs("That is past the urgent threshold: a VACUUM runs as soon as a job slot is free, window or "
                      "not. ", f);
                break;
        case SCHED_REASON_THRESHOLD:
                fputs("That is past its threshold inside the window: a VACUUM runs as soon as a job slot is free. ", f);
                break;
        case SCHED_REASON_WINDOW_SHORT:
                fprintf(f, "A VACUUM is due, but it should take about %s on this host (its past VACUUM jobs) and "
                        "only %d min of the window are left: it waits for the next window (past the urgent "
                        "threshold it would run at once). ", util_format_approx((uint64_t)est_ms, b, sizeof(b)),
                        sched_minutes_until_window_end(&vc->window, minute));
                break;
        case SCHED_REASON_UNUSED:
                fprintf(f, "The last deep scan found %.2f%% of the bytes of its pages unused (vacuum.unused_threshold "
                        "%.2f%%): a VACUUM packs them. ", t->hist.deep_unused_percent, vc->unused_threshold);
                break;
        default:
                break;
        }
}

static void explain_state(FILE *f, const struct target *t)
{
        const struct target_memo *mm = target_memo_get(t);

        switch (t->state) {
        case TARGET_QUEUED:
                fprintf(f, "A %s job is queued (%s%s)%s. ", maint_op_name(t->op), sched_reason_name(t->reason),
                        t->urgent ? ", urgent" : "",
                        t->attempt > 0 ? ", backing off after a lock conflict" : "");
                break;
        case TARGET_RUNNING:
                fprintf(f, "A %s job is running now. ", maint_op_name(t->op));
                break;
        case TARGET_STAT_QUEUED:
        case TARGET_STAT_RUNNING:
                fputs("Its statistics need SQLite to read (a WAL database whose -wal the header cannot tell): that "
                      "read is queued or running. ", f);
                break;
        case TARGET_HELD:
                if (mm->hold_status == MAINT_CORRUPT)
                        fputs("It is HELD: a check found it corrupt, and it is never vacuumed while it is; it is "
                              "looked at again when the file changes. Restore it or repair it (see "
                              "sqlite-maintctl check --full). ", f);
                else if (mm->hold_status == MAINT_NOSPACE)
                        fputs("It is HELD: the last VACUUM was refused for lack of free space; it is tried again "
                              "within the hour or when the file changes. ", f);
                else if (mm->hold_status == MAINT_TIMEOUT)
                        fputs("It is HELD: its last job ran out of its time limit; it is left alone for a while "
                              "(one hour, doubling up to a day). ", f);
                else
                        fprintf(f, "It is HELD after a failure (%s): it is looked at again when the file changes. ",
                                maint_status_name(mm->hold_status));
                break;
        default:
                break;
        }
}

static void explain_others(FILE *f, const struct target *t, int64_t now, uint64_t poll_interval_ms)
{
        const struct target_memo *mm = target_memo_get(t);
        int last = last_job(mm);
        int64_t due;
        char a[48], b[32], c[32];

        if (t->dc->analyze.interval_ms == 0) {
                fputs("ANALYZE is off for it (analyze.interval: never). ", f);
        } else {
                due = sched_analyze_due(&t->dc->analyze, &t->hist, poll_interval_ms, t->hash);
                if (t->hist.last_analyze_ms > 0)
                        fprintf(f, "ANALYZE: the last at %s; the next look at its statistics ",
                                when(t->hist.last_analyze_ms, a, sizeof(a)));
                else
                        fputs("ANALYZE: none yet; the first look at its statistics ", f);
                if (due <= now)
                        fputs("is due now", f);
                else
                        fprintf(f, "at %s", when(due, a, sizeof(a)));
                fputs(" (the tables whose row counts changed by analyze.threshold rows plus analyze.scale_factor of "
                      "the count their statistics describe are analyzed, the others left as they are). ", f);
        }
        if (t->stat.wal_size_bytes > 0)
                fprintf(f, "Its -wal holds %s (checkpoint.wal_size_limit %s)%s. ",
                        util_format_bytes(t->stat.wal_size_bytes, b, sizeof(b)),
                        util_format_bytes(t->dc->checkpoint.wal_size_limit, c, sizeof(c)),
                        mm->wal_owed ? "; a checkpoint is owed since a VACUUM whose readers kept it" : "");
        if (last >= 0)
                fprintf(f, "The last job: %s, %s, at %s. ", maint_op_name((enum maint_op)last),
                        maint_status_name(mm->last[last].status), when(mm->last[last].ms, a, sizeof(a)));
}

void report_explain(FILE *f, const struct target *t, int64_t now_ms, int minute, bool ignore_window,
                    uint64_t poll_interval_ms, int64_t est_ms)
{
        fprintf(f, "%s: ", t->path);
        explain_state(f, t);
        if (!t->have_stat)
                fputs("No statistics yet (not read since the daemon started, or it could not be read). ", f);
        else
                explain_vacuum(f, t, now_ms, minute, ignore_window, est_ms);
        explain_others(f, t, now_ms, poll_interval_ms);
        fputc('\n', f);
}

/* ---- metrics -------------------------------------------------------------- */

static void family(FILE *f, const char *name, const char *type, const char *help)
{
        fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void report_metrics_daemon(FILE *f, const struct report_daemon *d)
{
        static const enum maint_op ops[] = { MAINT_OP_VACUUM, MAINT_OP_INCREMENTAL_VACUUM, MAINT_OP_ANALYZE,
                                             MAINT_OP_CHECK, MAINT_OP_CHECKPOINT, MAINT_OP_DEEP_SCAN };
        const struct report_counts *c = d->counts;

        family(f, "sqlite_maintd_build_info", "gauge", "Always 1; the version in its label.");
        fprintf(f, "sqlite_maintd_build_info{version=\"%s\"} 1\n", PACKAGE_VERSION);
        family(f, "sqlite_maintd_start_time_seconds", "gauge", "When the daemon started, Unix time.");
        fprintf(f, "sqlite_maintd_start_time_seconds %.3f\n", (double)d->started_ms / 1000.0);
        family(f, "sqlite_maintd_poll_interval_seconds", "gauge", "poll_interval in force.");
        fprintf(f, "sqlite_maintd_poll_interval_seconds %.3f\n", (double)d->poll_interval_ms / 1000.0);
        family(f, "sqlite_maintd_databases_watched", "gauge", "Databases watched.");
        fprintf(f, "sqlite_maintd_databases_watched %zu\n", d->watched);
        family(f, "sqlite_maintd_jobs_running", "gauge", "Maintenance jobs running.");
        fprintf(f, "sqlite_maintd_jobs_running %u\n", d->running);
        family(f, "sqlite_maintd_jobs_queued", "gauge", "Maintenance jobs waiting for a slot.");
        fprintf(f, "sqlite_maintd_jobs_queued %zu\n", d->queued);
        family(f, "sqlite_maintd_jobs_total", "counter", "Maintenance jobs finished since start, by operation and result.");
        for (size_t i = 0; i < ELEMENTSOF(ops); i++)
                for (int r = 0; r < REPORT_RESULTS; r++)
                        fprintf(f, "sqlite_maintd_jobs_total{operation=\"%s\",result=\"%s\"} %" PRIu64 "\n",
                                maint_op_name(ops[i]), report_result_name((enum report_result)r), c->jobs[ops[i]][r]);
        family(f, "sqlite_maintd_job_retries_total", "counter", "Jobs retried after a lock conflict.");
        for (size_t i = 0; i < ELEMENTSOF(ops); i++)
                fprintf(f, "sqlite_maintd_job_retries_total{operation=\"%s\"} %" PRIu64 "\n", maint_op_name(ops[i]),
                        c->retries[ops[i]]);
        family(f, "sqlite_maintd_reclaimed_bytes_total", "counter", "Bytes given back to the file system.");
        for (size_t i = 0; i < ELEMENTSOF(ops); i++)
                fprintf(f, "sqlite_maintd_reclaimed_bytes_total{operation=\"%s\"} %" PRIu64 "\n",
                        maint_op_name(ops[i]), c->reclaimed[ops[i]]);
        family(f, "sqlite_maintd_poll_rounds_total", "counter", "Poll rounds finished since start.");
        fprintf(f, "sqlite_maintd_poll_rounds_total %" PRIu64 "\n", c->rounds);
        if (!d->last_round)
                return;
        family(f, "sqlite_maintd_last_poll_timestamp_seconds", "gauge", "When the last poll round finished, Unix time.");
        fprintf(f, "sqlite_maintd_last_poll_timestamp_seconds %.3f\n", (double)d->last_round_end_ms / 1000.0);
        family(f, "sqlite_maintd_poll_duration_seconds", "gauge", "How long the last poll round took.");
        fprintf(f, "sqlite_maintd_poll_duration_seconds %.3f\n", (double)d->last_round_ms / 1000.0);
        family(f, "sqlite_maintd_poll_databases_read", "gauge", "Databases the last poll round read.");
        fprintf(f, "sqlite_maintd_poll_databases_read %zu\n", d->last_round->read);
        family(f, "sqlite_maintd_poll_databases_unchanged", "gauge",
               "Databases the last poll round did not read: unchanged (inotify).");
        fprintf(f, "sqlite_maintd_poll_databases_unchanged %zu\n", d->last_round->unchanged);
        family(f, "sqlite_maintd_loop_lag_p99_seconds", "gauge", "The last poll round's loop lateness, 99th percentile.");
        fprintf(f, "sqlite_maintd_loop_lag_p99_seconds %.6f\n", (double)d->last_round->lag_p99_us / 1e6);
        family(f, "sqlite_maintd_loop_lag_max_seconds", "gauge", "The last poll round's loop lateness, at most.");
        fprintf(f, "sqlite_maintd_loop_lag_max_seconds %.6f\n", (double)d->last_round->lag_max_us / 1e6);
}

static const struct {
        const char *name, *help;
} db_families[REPORT_DB_FAMILIES] = {
        { "sqlite_maintd_database_size_bytes", "The database file's size." },
        { "sqlite_maintd_database_wal_size_bytes", "Its -wal file's size (0: none)." },
        { "sqlite_maintd_database_freelist_ratio", "Free pages / pages." },
        { "sqlite_maintd_database_reclaimable_bytes", "Free pages times the page size." },
        { "sqlite_maintd_database_unused_ratio", "The last deep scan's unused share of the bytes of b-tree pages." },
        { "sqlite_maintd_database_vacuum_threshold_ratio", "vacuum.threshold of its entry." },
        { "sqlite_maintd_database_urgent_threshold_ratio", "vacuum.urgent_threshold of its entry." },
        { "sqlite_maintd_database_wal_size_limit_bytes", "checkpoint.wal_size_limit of its entry." },
        { "sqlite_maintd_database_last_vacuum_timestamp_seconds", "The last successful VACUUM, Unix time." },
        { "sqlite_maintd_database_last_analyze_timestamp_seconds", "The last successful ANALYZE, Unix time." },
        { "sqlite_maintd_database_corrupt", "1 while a check found the database corrupt and it is held." },
        { "sqlite_maintd_database_job_failures", "Maintenance jobs that failed in a row." },
        { "sqlite_maintd_database_last_check_timestamp_seconds",
          "The last integrity check that passed (alone or around a VACUUM), Unix time; since the daemon started." },
};

void report_metrics_family_head(FILE *f, int fam)
{
        family(f, db_families[fam].name, "gauge", db_families[fam].help);
}

bool report_metrics_exportable(const struct target *t)
{
        for (const unsigned char *p = (const unsigned char *)t->path; *p;) {
                size_t n = json_utf8_len(p);

                if (n == 0)
                        return false;
                p += n;
        }
        return true;
}

/* The label value: \, " and newline escaped (the text format's rules). */
static void label_value(FILE *f, const char *s)
{
        for (;;) {
                size_t n = strcspn(s, "\\\"\n"); /* a path rarely holds any: written whole */

                fwrite(s, 1, n, f);
                s += n;
                if (!*s)
                        return;
                fputs(*s == '\n' ? "\\n" : *s == '"' ? "\\\"" : "\\\\", f);
                s++;
        }
}

bool report_metrics_sample(FILE *f, int fam, const struct target *t)
{
        const struct target_memo *mm = target_memo_get(t);
        const struct dbstat *st = &t->stat;
        double v;

        switch (fam) {
        case 0: if (!t->have_stat) return false; v = (double)st->file_size_bytes; break;
        case 1: if (!t->have_stat) return false; v = (double)st->wal_size_bytes; break;
        case 2: if (!t->have_stat) return false; v = st->page_count ? (double)st->freelist_count / (double)st->page_count : 0; break;
        case 3: if (!t->have_stat) return false; v = (double)st->estimated_wasted_space_bytes; break;
        case 4: if (!t->hist.deep_known) return false; v = t->hist.deep_unused_percent / 100.0; break;
        case 5: v = t->dc->vacuum.threshold / 100.0; break;
        case 6: v = t->dc->vacuum.urgent_threshold / 100.0; break;
        case 7: v = (double)t->dc->checkpoint.wal_size_limit; break;
        case 8: if (t->hist.last_vacuum_ms <= 0) return false; v = (double)t->hist.last_vacuum_ms / 1000.0; break;
        case 9: if (t->hist.last_analyze_ms <= 0) return false; v = (double)t->hist.last_analyze_ms / 1000.0; break;
        case 10: v = t->state == TARGET_HELD && mm->hold_status == MAINT_CORRUPT; break;
        case 11: v = mm->job_failures; break;
        case 12: if (mm->last_check_ms <= 0) return false; v = (double)mm->last_check_ms / 1000.0; break;
        default: return false;
        }
        fputs(db_families[fam].name, f);
        fputs("{db=\"", f);
        label_value(f, t->path);
        /* whole numbers as such (bytes, counts); the others to 15 digits
         * (times in ms / 1000 keep their 3 places) */
        if (v == (double)(int64_t)v) {
                char num[24], *p = num + sizeof(num);
                uint64_t u = (uint64_t)(v < 0 ? -v : v);

                *--p = '\0';
                do
                        *--p = (char)('0' + u % 10);
                while ((u /= 10) > 0);
                if (v < 0)
                        *--p = '-';
                fputs("\"} ", f);
                fputs(p, f);
                fputc('\n', f);
        } else {
                fprintf(f, "\"} %.15g\n", v);
        }
        return true;
}
