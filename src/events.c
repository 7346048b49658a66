/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "deepscan.h"
#include "events.h"
#include "log.h"
#include "msgid.h"
#include "notify.h"
#include "util.h"

/* The b-trees a deep scan's entry names, those with the most unused bytes. */
#define DEEP_TOP_BTREES 3
/* Problem rows of a failed check copied into the entry. */
#define PROBLEMS_MAX 20

/* The fields every entry about a database starts with. */
#define DB(path, op) LOG_TEXT("DB_PATH", (path)), LOG_TEXT("OPERATION", (op))

/* The last notable thing done, for STATUS=. */
static char last_action[256];

#define DRY(dry_run) ((dry_run) ? "dry run: " : "")

/* --- the daemon's life --------------------------------------------------- */

void event_started(const char *conf_file, size_t n_watched, bool once, bool dry_run, uint64_t poll_interval_ms,
                   unsigned max_jobs)
{
        char every[32];

        log_struct(LOG_INFO, MSGID_STARTED,
                   LOG_FIELDS(LOG_TEXT("CONFIG_FILE", conf_file), LOG_U64("DATABASES", n_watched)),
                   "started%s%s: %zu database%s from %s, polling every %s, at most %u job%s at once",
                   once ? " (once)" : "", dry_run ? " (dry run)" : "", n_watched, n_watched == 1 ? "" : "s",
                   conf_file, conf_format_duration(poll_interval_ms, every, sizeof(every)), max_jobs, max_jobs == 1 ? "" : "s");
}

void event_stopping(unsigned running, bool again)
{
        if (again) {
                log_msg(LOG_NOTICE, "already stopping; waiting for %u job%s (a VACUUM in its copy-back cannot be "
                        "interrupted)", running, running == 1 ? "" : "s");
                return;
        }
        log_struct(LOG_INFO, MSGID_STOPPING, LOG_FIELDS(LOG_U64("JOBS_RUNNING", running)),
                   "stopping; %u job%s running", running, running == 1 ? "" : "s");
}

void event_stopped(unsigned long jobs_done, unsigned failed)
{
        log_msg(LOG_INFO, "stopped after %lu job%s, %u failed", jobs_done, jobs_done == 1 ? "" : "s", failed);
}

void event_reloading(const char *conf_file)
{
        log_msg(LOG_INFO, "reloading %s", conf_file);
}

void event_reload_failed(const char *conf_file, const struct conf_diag *d, int r)
{
        for (size_t i = 0; i < d->n; i++)
                log_struct(LOG_ERR, MSGID_RELOAD_FAILED, LOG_NO_FIELDS, "%s", d->msgs[i]);
        log_struct(LOG_ERR, MSGID_RELOAD_FAILED, LOG_FIELDS(LOG_TEXT("CONFIG_FILE", conf_file)),
                   "reload of %s failed (%s); keeping the old configuration", conf_file,
                   d->n ? "see the errors above" : strerror(-r));
}

void event_reloaded(const char *conf_file, size_t n_entries, size_t n_watched)
{
        log_struct(LOG_INFO, MSGID_RELOADED, LOG_FIELDS(LOG_TEXT("CONFIG_FILE", conf_file)),
                   "configuration reloaded from %s: %zu database entr%s, %zu database%s watched", conf_file,
                   n_entries, n_entries == 1 ? "y" : "ies", n_watched, n_watched == 1 ? "" : "s");
}

void event_state_dir_kept(const char *new_dir, const char *old_dir)
{
        log_msg(LOG_WARNING, "state_dir changed to %s: it takes effect at the next restart; history stays in %s "
                "until then", new_dir, old_dir);
}

void event_jobs_capped(unsigned asked, unsigned allowed)
{
        log_msg(LOG_WARNING, "max_concurrent_jobs %u is more than the worker pool sized at start allows; running at "
                "most %u until a restart", asked, allowed);
}

void event_poll_round(size_t n, size_t n_round, size_t per_tick, uint64_t tick_ms)
{
        log_msg(LOG_DEBUG, "poll: %zu database%s, %zu to look at, %zu every %llu ms", n, n == 1 ? "" : "s",
                n_round, per_tick, (unsigned long long)tick_ms);
}

void event_state_pruned(int forgot)
{
        if (forgot > 0)
                log_msg(LOG_INFO, "state file: forgot %d database%s whose files are gone", forgot,
                        forgot == 1 ? "" : "s");
        else if (forgot < 0)
                log_msg(LOG_WARNING, "state file: cannot forget databases whose files are gone: %s",
                        strerror(-forgot));
}

void event_status(size_t n_watched, unsigned running, size_t queued, bool stopping, unsigned stopping_jobs,
                  const struct event_round *last, const char *progress)
{
        if (stopping) {
                notify_status("Stopping; waiting for %u running job%s", stopping_jobs, stopping_jobs == 1 ? "" : "s");
                return;
        }
        notify_status("Watching %zu database%s; %u job%s running, %zu queued; last poll: %zu read, %zu unchanged, "
                      "loop late %.1f ms at p99, %.1f ms at most; %s: %s", n_watched,
                      n_watched == 1 ? "" : "s", running, running == 1 ? "" : "s", queued, last->read, last->unchanged,
                      (double)last->lag_p99_us / 1000.0, (double)last->lag_max_us / 1000.0, progress ? "now" : "last",
                      progress ? progress : last_action[0] ? last_action : "none yet");
}

void event_vacuum_phase(const char *path, enum maint_phase phase, uint64_t elapsed_ms, int percent,
                        int64_t estimate_ms)
{
        char a[32], b[32], pct[96] = "";

        if (percent >= 0)
                snprintf(pct, sizeof(pct), ", about %d%% of the %s this host's past VACUUMs say it takes", percent,
                         util_format_approx((uint64_t)estimate_ms, b, sizeof(b)));
        log_struct(LOG_INFO, MSGID_VACUUM_PROGRESS,
                   LOG_FIELDS(DB(path, "vacuum"), LOG_TEXT("PHASE", maint_phase_name(phase)),
                              LOG_U64("ELAPSED_MS", elapsed_ms), LOG_I64(percent >= 0 ? "PROGRESS_PERCENT" : NULL, percent)),
                   "%s: VACUUM %s (running for %s%s)", path, maint_phase_name(phase),
                   util_format_approx(elapsed_ms, a, sizeof(a)), pct);
}

void event_unwatched(size_t remote, size_t refused, int why, bool *said)
{
        if (remote + refused == 0) {
                if (*said)
                        log_msg(LOG_NOTICE, "every database directory is watched for changes again");
                *said = false;
                return;
        }
        if (*said)
                return;
        *said = true;
        if (refused)
                log_msg(LOG_WARNING, "cannot watch %zu database director%s for changes (inotify: %s%s): their "
                        "databases are read at every poll", refused, refused == 1 ? "y" : "ies", strerror(why),
                        why == ENOSPC ? "; raise fs.inotify.max_user_watches" : "");
        if (remote)
                log_msg(LOG_NOTICE, "%zu database director%s on network or user-space file systems, whose changes "
                        "inotify may not see: their databases are read at every poll", remote,
                        remote == 1 ? "y is" : "ies are");
}

void event_poll_round_done(const struct event_round *r)
{
        log_msg(LOG_DEBUG, "poll done: %zu read, %zu unchanged (inotify), %zu WAL database%s read without SQLite (wal-index or -wal), "
                "%zu through SQLite; ticks late %.1f ms at p99, %.1f ms at most", r->read, r->unchanged,
                r->wal_from_index, r->wal_from_index == 1 ? "" : "s", r->wal_fallback,
                (double)r->lag_p99_us / 1000.0, (double)r->lag_max_us / 1000.0);
}

/* --- databases coming and going ------------------------------------------ */

void event_db_added(const char *path, enum event_added how)
{
        if (how == EVENT_ADDED_AT_START) {
                log_msg(LOG_DEBUG, "watching %s", path);
                return;
        }
        log_struct(LOG_INFO, MSGID_DB_ADDED, LOG_FIELDS(DB(path, "poll")), "%s: %s, watching it", path,
                   how == EVENT_ADDED_NEW ? "new database" : "appeared");
}

void event_db_removed(const char *path, const char *why, bool still_watched)
{
        log_struct(still_watched ? LOG_WARNING : LOG_INFO, MSGID_DB_REMOVED, LOG_FIELDS(DB(path, "poll")),
                   "%s: %s; %s", path, why, still_watched ? "still watching the path" : "no longer watched");
}

void event_path_refused(const char *path, const char *config_path, const char *why)
{
        log_struct(LOG_WARNING, MSGID_PATH_REFUSED, LOG_FIELDS(DB(path, "poll"), LOG_TEXT("CONFIG_PATH", config_path)),
                   "%s: %s", path, why);
}

void event_entry_capped(const char *config_path, const char *why, uint64_t max_matches)
{
        log_struct(LOG_WARNING, MSGID_PATH_REFUSED, LOG_FIELDS(LOG_TEXT("CONFIG_PATH", config_path)),
                   "%s: %s (%llu): the others are not watched", config_path, why, (unsigned long long)max_matches);
}

void event_refused_counted(size_t n, size_t named)
{
        log_struct(LOG_WARNING, MSGID_PATH_REFUSED, LOG_NO_FIELDS,
                   "%zu more paths not followed, past the first %zu, are not named one by one", n, named);
}

/* --- decisions -------------------------------------------------------------- */

void event_scheduled(const struct target *t, enum maint_op op, enum sched_reason reason, bool urgent, bool again,
                     bool dry_run)
{
        const struct vacuum_conf *vc = &t->dc->vacuum;
        const struct log_field common[] = {
                DB(t->path, maint_op_name(op)),
                LOG_TEXT("REASON", sched_reason_name(reason)),
                LOG_PERCENT("FRAGMENTATION_BEFORE", t->stat.fragmentation_percent),
                LOG_PERCENT(reason == SCHED_REASON_UNUSED ? "UNUSED_PERCENT" : NULL, t->hist.deep_unused_percent),
                LOG_U64(op == MAINT_OP_CHECKPOINT ? "WAL_SIZE_BYTES" : NULL, t->stat.wal_size_bytes),
        };
        int prio = again ? LOG_DEBUG : LOG_INFO;
        size_t n = sizeof(common) / sizeof(common[0]);
        char a[32], b[32];

        if (reason == SCHED_REASON_REQUESTED)
                log_struct(LOG_INFO, MSGID_SCHEDULED, common, n, "%s: %s requested through the control socket "
                           "(every safety check still applies)", t->path, maint_op_name(op));
        else if (op == MAINT_OP_ANALYZE && t->hist.last_analyze_ms)
                log_struct(prio, MSGID_SCHEDULED, common, n, "%s%s: ANALYZE is due (every %s)", DRY(dry_run),
                           t->path, conf_format_duration(t->dc->analyze.interval_ms, a, sizeof(a)));
        else if (op == MAINT_OP_ANALYZE)
                log_struct(prio, MSGID_SCHEDULED, common, n, "%s%s: ANALYZE is due (the first since this database "
                           "was seen; then every %s)", DRY(dry_run), t->path,
                           conf_format_duration(t->dc->analyze.interval_ms, a, sizeof(a)));
        else if (op == MAINT_OP_DEEP_SCAN)
                log_struct(prio, MSGID_SCHEDULED, common, n, "%s%s: deep scan is due (%s; every %s)", DRY(dry_run),
                           t->path, t->hist.last_deep_scan_ms ? "reads every page"
                                                               : "the first since this database was seen",
                           conf_format_duration(t->dc->deep_scan.interval_ms, a, sizeof(a)));
        else if (reason == SCHED_REASON_UNUSED)
                log_struct(prio, MSGID_SCHEDULED, common, n, "%s%s: VACUUM, the last deep scan found %.2f%% of the "
                           "bytes of its b-tree pages unused, >= unused_threshold %.2f%% (about %s to give back)",
                           DRY(dry_run), t->path, t->hist.deep_unused_percent, vc->unused_threshold,
                           util_format_bytes(t->hist.deep_reclaimable_bytes, b, sizeof(b)));
        else if (op == MAINT_OP_CHECKPOINT)
                log_struct(prio, MSGID_SCHEDULED, common, n, "%s%s: checkpoint of the -wal (%s, the database %s): %s",
                           DRY(dry_run), t->path, util_format_bytes(t->stat.wal_size_bytes, a, sizeof(a)),
                           util_format_bytes(t->stat.file_size_bytes, b, sizeof(b)),
                           reason == SCHED_REASON_AFTER_VACUUM ? "owed since a VACUUM whose checkpoint was busy"
                                                               : "past its size limit");
        else
                log_struct(prio, MSGID_SCHEDULED, common, n, "%s%s: %s, fragmentation %.2f%% >= %s threshold %.2f%%",
                           DRY(dry_run), t->path, op == MAINT_OP_VACUUM ? "VACUUM" : "incremental vacuum",
                           t->stat.fragmentation_percent, urgent ? "urgent" : "scheduled",
                           urgent ? vc->urgent_threshold : vc->threshold);
}

void event_vacuum_waits(const struct target *t, const struct sched_decision *d, int minute_of_day, int64_t est_ms,
                        const struct sched_rate *rate)
{
        const struct vacuum_conf *vc = &t->dc->vacuum;
        const struct log_field f[] = {
                DB(t->path, "vacuum"),
                LOG_TEXT("REASON", sched_reason_name(d->reason)),
                LOG_PERCENT("FRAGMENTATION_BEFORE", t->stat.fragmentation_percent),
        };
        char why[128], a[32], b[32];

        if (d->unused)
                snprintf(why, sizeof(why), "unused space inside pages %.2f%% >= %.2f%% (deep scan)",
                         t->hist.deep_unused_percent, vc->unused_threshold);
        else
                snprintf(why, sizeof(why), "fragmentation %.2f%% >= %.2f%%", t->stat.fragmentation_percent,
                         vc->threshold);
        if (d->reason == SCHED_REASON_WAIT_WINDOW)
                log_struct(LOG_INFO, MSGID_SCHEDULED, f, sizeof(f) / sizeof(f[0]),
                           "%s: %s: VACUUM waits for the window (in %d min)", t->path, why,
                           sched_minutes_until_window(&vc->window, minute_of_day));
        else if (d->reason == SCHED_REASON_WINDOW_SHORT)
                log_struct(LOG_INFO, MSGID_SCHEDULED, f, sizeof(f) / sizeof(f[0]),
                           "%s: %s: VACUUM waits for the next window: it should take about %s (%s of database a "
                           "second in this host's last %u VACUUM jobs), and %d min of this one are left", t->path,
                           why, util_format_approx((uint64_t)est_ms, a, sizeof(a)),
                           util_format_bytes(rate->ms ? rate->bytes * 1000 / rate->ms : 0, b, sizeof(b)), rate->n,
                           sched_minutes_until_window_end(&vc->window, minute_of_day));
        else
                log_struct(LOG_INFO, MSGID_SCHEDULED, f, sizeof(f) / sizeof(f[0]),
                           "%s: %s: vacuumed less than %s ago, waiting", t->path, why,
                           conf_format_duration(vc->min_interval_ms, a, sizeof(a)));
}

void event_nothing_to_do(const struct target *t, enum sched_reason reason)
{
        log_msg(LOG_DEBUG, "%s: fragmentation %.2f%%, nothing to do (%s)", t->path, t->stat.fragmentation_percent,
                sched_reason_name(reason));
}

void event_vacuum_held_for_rowids(const struct target *t)
{
        log_msg(LOG_DEBUG, "%s: fragmentation %.2f%%, VACUUM held: it would renumber rowids (schema unchanged)",
                t->path, t->stat.fragmentation_percent);
}

void event_analyze_current(const struct target *t)
{
        log_struct(LOG_DEBUG, MSGID_ANALYZE_DONE, LOG_FIELDS(DB(t->path, "analyze"), LOG_TEXT("REASON", "unchanged")),
                   "%s: ANALYZE due, but the database is unchanged since the last one: its statistics are current",
                   t->path);
}

void event_deep_scan_current(const struct target *t)
{
        log_msg(LOG_DEBUG, "%s: deep scan due, but the database is unchanged since the last one", t->path);
}

void event_stats_reused(const struct target *t)
{
        log_msg(LOG_DEBUG, "%s: unchanged since its last statistics read", t->path);
}

void event_window_closed(const struct target *t)
{
        log_msg(LOG_INFO, "%s: the window closed before VACUUM could start; waiting for the next one", t->path);
}

/* --- results ------------------------------------------------------------------ */

void event_corrupt(const char *path, const char *op, const char *why, const struct maint_result *r)
{
        char problems[2048] = "";
        size_t len = 0;

        for (size_t i = 0; r && i < r->n_problems && i < PROBLEMS_MAX && len < sizeof(problems); i++)
                len += (size_t)snprintf(problems + len, sizeof(problems) - len, "%s%s", i ? "\n" : "",
                                        r->problems[i]);
        /* a deep scan or a check finds it with no VACUUM due: left alone all the same */
        log_struct(LOG_CRIT, MSGID_CORRUPT,
                   LOG_FIELDS(DB(path, op), LOG_TEXT("SQLITE_ERROR", why),
                              LOG_TEXT("PROBLEMS", problems[0] ? problems : NULL)),
                   "%s: DATABASE CORRUPT, %s: %s", path,
                   strstr(op, "vacuum") ? "not vacuumed" : "left alone until it changes", why);
        snprintf(last_action, sizeof(last_action), "CORRUPT %s", path);
}

void event_poll_failed(const char *path, enum maint_status s, const char *why)
{
        if (s == MAINT_CORRUPT)
                event_corrupt(path, "poll", why, NULL);
        else if (s == MAINT_HOT_JOURNAL)
                log_struct(LOG_WARNING, MSGID_HOT_JOURNAL,
                           LOG_FIELDS(DB(path, "poll"), LOG_TEXT("REASON", maint_status_name(s))),
                           "%s: a hot journal: a transaction interrupted by a crash awaits rollback; a read never "
                           "rolls it back, so statistics wait for the application's next open (until the file "
                           "changes)", path);
        else
                log_struct(LOG_WARNING, s == MAINT_CANNOT ? MSGID_CANNOT_MAINTAIN : MSGID_JOB_FAILED,
                           LOG_FIELDS(DB(path, "poll"), LOG_TEXT("REASON", maint_status_name(s)),
                                      LOG_TEXT("SQLITE_ERROR", why)),
                           "%s: %s, skipping until the file changes", path, why);
}

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
static void analyzed(const struct target *t, const struct maint_result *r)
{
        size_t full = count_tables(r, TABLE_ANALYZED), limited = count_tables(r, TABLE_ANALYZED_LIMITED);
        size_t unchanged = count_tables(r, TABLE_UNCHANGED), empty = count_tables(r, TABLE_MISSING_EMPTY);
        char a[1024], l[1024], u[1024], z[1024], done[2100], skipped[2200];

        table_list(r, TABLE_ANALYZED, a, sizeof(a));
        table_list(r, TABLE_ANALYZED_LIMITED, l, sizeof(l));
        table_list(r, TABLE_UNCHANGED, u, sizeof(u));
        table_list(r, TABLE_MISSING_EMPTY, z, sizeof(z));
        snprintf(done, sizeof(done), "%s%s%s", a, full && limited ? ", " : "", l);
        snprintf(skipped, sizeof(skipped), "%s%s%s%s%s", unchanged ? "unchanged: " : "", u,
                 unchanged && empty ? "; " : "", empty ? "no rows: " : "", z);
        const struct log_field f[] = {
                DB(t->path, "analyze"),
                LOG_U64("DURATION_MS", r->duration_ms),
                LOG_TEXT("REASON", full + limited ? sched_reason_name(t->reason) : "unchanged"),
                LOG_TEXT("TABLES_ANALYZED", done),
                LOG_TEXT("TABLES_SKIPPED", skipped),
        };

        if (full + limited == 0) {
                log_struct(LOG_DEBUG, MSGID_ANALYZE_DONE, f, sizeof(f) / sizeof(f[0]),
                           "%s: ANALYZE: the statistics of every table are current (%s), nothing written", t->path,
                           skipped[0] ? skipped : "no tables");
                return;
        }
        log_struct(LOG_INFO, MSGID_ANALYZE_DONE, f, sizeof(f) / sizeof(f[0]),
                   "%s: analyzed %zu table%s in %llu ms: %s%s%s%s%s%s", t->path, full + limited,
                   full + limited == 1 ? "" : "s", (unsigned long long)r->duration_ms, a,
                   full && limited ? ", " : "", limited ? "under analysis_limit: " : "", l,
                   skipped[0] ? "; skipped " : "", skipped);
        snprintf(last_action, sizeof(last_action), "analyzed %s", t->path);
}

/* "index i 1.2 MiB (40.00%), table t ...": the b-trees with the most unused bytes, largest first. */
static const char *most_unused(const struct deep_stats *d, char *buf, size_t len)
{
        const struct btree_space *top[DEEP_TOP_BTREES] = { NULL };
        size_t k = 0;
        char a[32];

        for (size_t i = 0; i < d->n_btrees; i++) {
                const struct btree_space *x = &d->btrees[i];

                for (size_t p = 0; p < DEEP_TOP_BTREES; p++)
                        if (!top[p] || x->unused_bytes > top[p]->unused_bytes) {
                                memmove(top + p + 1, top + p, (DEEP_TOP_BTREES - p - 1) * sizeof(*top));
                                top[p] = x;
                                break;
                        }
        }
        buf[0] = '\0';
        for (size_t p = 0; p < DEEP_TOP_BTREES && top[p] && top[p]->unused_bytes > 0 && k < len; p++) {
                uint64_t pages = top[p]->interior_pages + top[p]->leaf_pages + top[p]->overflow_pages;

                k += (size_t)snprintf(buf + k, len - k, "%s%s %s %s (%.2f%%)", p ? ", " : "",
                                      top[p]->is_index ? "index" : "table", top[p]->name,
                                      util_format_bytes(top[p]->unused_bytes, a, sizeof(a)),
                                      deep_unused_percent(top[p]->unused_bytes, pages, d->page_size));
        }
        return buf;
}

/* The deep scan's figures, and the b-trees with the most unused bytes. */
static void deep_scanned(const struct target *t, const struct maint_result *r)
{
        const struct deep_stats *d = &r->deep;
        double unused = deep_unused_percent(d->unused_bytes, d->btree_pages, d->page_size);
        double fragmentation = dbstat_fragmentation(d->freelist_count, d->page_count);
        char a[32], b[32], c[32], worst[1024], nonseq[32] = "unknown";

        most_unused(d, worst, sizeof(worst));
        if (d->nonsequential_known)
                snprintf(nonseq, sizeof(nonseq), "%.2f%%", deep_total_nonsequential_percent(d));
        log_struct(LOG_INFO, MSGID_DEEP_SCAN,
                   LOG_FIELDS(DB(t->path, "deep_scan"), LOG_U64("UNUSED_BYTES", d->unused_bytes),
                              LOG_PERCENT("UNUSED_PERCENT", unused), LOG_U64("BTREE_PAGES", d->btree_pages),
                              LOG_U64("RECLAIMABLE_BYTES", d->reclaimable_bytes),
                              LOG_U64(d->nonsequential_known ? "NONSEQUENTIAL_PAGES" : NULL, d->nonsequential_pages),
                              LOG_PERCENT(d->nonsequential_known ? "NONSEQUENTIAL_PERCENT" : NULL,
                                          deep_total_nonsequential_percent(d)),
                              LOG_PERCENT("FRAGMENTATION", fragmentation), LOG_U64("DURATION_MS", r->duration_ms)),
                   "%s: deep scan: %s of the %s in b-tree pages unused (%.2f%%), non-sequential pages %s, freelist "
                   "%.2f%%; a VACUUM could give back up to %s%s%s (%llu ms)", t->path,
                   util_format_bytes(d->unused_bytes, a, sizeof(a)),
                   util_format_bytes(d->btree_pages * d->page_size, b, sizeof(b)), unused, nonseq, fragmentation,
                   util_format_bytes(d->reclaimable_bytes, c, sizeof(c)), worst[0] ? "; most unused: " : "", worst,
                   (unsigned long long)r->duration_ms);
        snprintf(last_action, sizeof(last_action), "deep scan of %s (%.2f%% unused)", t->path, unused);
}

static void checkpointed(const struct target *t, const struct maint_result *r)
{
        char bytes[32];

        log_struct(LOG_INFO, MSGID_CHECKPOINT_DONE,
                   LOG_FIELDS(DB(t->path, "checkpoint"), LOG_U64("BYTES_RECLAIMED", maint_bytes_given_back(MAINT_OP_CHECKPOINT, r)),
                              LOG_U64("WAL_SIZE_BYTES", r->wal_bytes_after), LOG_U64("DURATION_MS", r->duration_ms),
                              LOG_TEXT("REASON", sched_reason_name(t->reason)),
                              LOG_I64("ATTEMPT", target_memo_get(t)->ckpt_attempt + 1)),
                   "%s: -wal checkpointed and truncated, %s given back%s", t->path,
                   util_format_bytes(maint_bytes_given_back(MAINT_OP_CHECKPOINT, r), bytes, sizeof(bytes)),
                   target_memo_get(t)->ckpt_attempt ? " (readers had held it before)" : "");
        snprintf(last_action, sizeof(last_action), "checkpointed %s", t->path);
}

static void vacuumed(const struct target *t, const struct job *j)
{
        const struct maint_result *r = &j->res;
        char bytes[32], before[32], after[32], list[8192];

        if (r->n_tables)
                table_list(r, -1, list, sizeof(list));
        log_struct(LOG_INFO, MSGID_VACUUM_DONE,
                   LOG_FIELDS(DB(t->path, maint_op_name(j->op)),
                              LOG_PERCENT("FRAGMENTATION_BEFORE", r->before.fragmentation_percent),
                              LOG_PERCENT("FRAGMENTATION_AFTER", r->after.fragmentation_percent),
                              LOG_U64("BYTES_RECLAIMED", r->bytes_reclaimed),
                              LOG_U64("DISK_BYTES_BEFORE", r->disk_bytes_before),
                              LOG_U64("DISK_BYTES_AFTER", r->disk_bytes_after),
                              LOG_U64("PAGE_BYTES_RECLAIMED", r->page_bytes_reclaimed),
                              LOG_U64("DURATION_MS", r->duration_ms),
                              LOG_TEXT("REASON", sched_reason_name(t->reason)),
                              LOG_TEXT(r->n_tables ? "RENUMBERED_TABLES" : NULL, list),
                              LOG_TEXT(r->check_after_skipped ? "CHECK_AFTER" : NULL, r->message)),
                   "%s: %s done: fragmentation %.2f%% -> %.2f%%, reclaimed %s on disk (%s -> %s) in %llu ms%s%s%s%s",
                   t->path, j->op == MAINT_OP_VACUUM ? "VACUUM" : "incremental vacuum",
                   r->before.fragmentation_percent, r->after.fragmentation_percent,
                   util_format_bytes(r->bytes_reclaimed, bytes, sizeof(bytes)),
                   util_format_bytes(r->disk_bytes_before, before, sizeof(before)),
                   util_format_bytes(r->disk_bytes_after, after, sizeof(after)), (unsigned long long)r->duration_ms,
                   r->n_tables ? "; rowids renumbered 1..N (allowed) in " : "", r->n_tables ? list : "",
                   r->check_after_skipped ? "; " : "", r->check_after_skipped ? r->message : "");
        snprintf(last_action, sizeof(last_action), "vacuumed %s (%.2f%% -> %.2f%%)", t->path,
                 r->before.fragmentation_percent, r->after.fragmentation_percent);
        if (r->checkpoint_busy)
                log_struct(LOG_WARNING, MSGID_CHECKPOINT_BUSY,
                           LOG_FIELDS(DB(t->path, "checkpoint"), LOG_U64("WAL_SIZE_BYTES", r->after.wal_size_bytes)),
                           "%s: WAL checkpoint after VACUUM was busy (a reader is open); the -wal file stays at %s "
                           "until a later checkpoint, tried again at later polls", t->path,
                           util_format_bytes(r->after.wal_size_bytes, bytes, sizeof(bytes)));
}

static void job_failed(const char *path, const char *op, const struct maint_result *r)
{
        log_struct(LOG_ERR, MSGID_JOB_FAILED,
                   LOG_FIELDS(DB(path, op), LOG_TEXT("REASON", maint_status_name(r->status)),
                              LOG_TEXT("SQLITE_ERROR", r->message)),
                   "%s: %s failed (%s): %s", path, op, maint_status_name(r->status), r->message);
}

void event_job_done(const struct target *t, const struct job *j, bool window_end)
{
        const struct maint_result *r = &j->res;
        const char *op = maint_op_name(j->op);
        char list[8192];

        if (r->rolled_back_journal)
                log_struct(LOG_NOTICE, MSGID_HOT_JOURNAL, LOG_FIELDS(DB(t->path, op), LOG_TEXT("REASON", "rolled_back")),
                           "%s: rolled back a hot journal (a transaction interrupted by a crash) before the %s, as "
                           "the application's next open would have", t->path, op);
        switch (r->status) {
        case MAINT_SKIPPED: /* emptied since the decision */
                log_msg(LOG_DEBUG, "%s: %s skipped: %s", t->path, op, r->message);
                break;
        case MAINT_OK:
                if (j->op == MAINT_OP_ANALYZE)
                        analyzed(t, r);
                else if (j->op == MAINT_OP_DEEP_SCAN)
                        deep_scanned(t, r);
                else if (j->op == MAINT_OP_CHECKPOINT)
                        checkpointed(t, r);
                else if (j->op == MAINT_OP_CHECK)
                        log_struct(LOG_INFO, MSGID_CHECK_DONE, LOG_FIELDS(DB(t->path, op)), "%s: check passed (%s)",
                                   t->path, r->message[0] ? r->message : "no corruption found");
                else
                        vacuumed(t, j);
                /* the VACUUM is done; the admin's after_vacuum hook is not: loud */
                if ((j->op == MAINT_OP_VACUUM || j->op == MAINT_OP_INCREMENTAL_VACUUM) &&
                    strstr(r->message, "after_vacuum "))
                        log_struct(LOG_WARNING, MSGID_JOB_FAILED,
                                   LOG_FIELDS(DB(t->path, op), LOG_TEXT("REASON", "after_vacuum_failed"),
                                              LOG_TEXT("HOOK_MESSAGE", strstr(r->message, "after_vacuum "))),
                                   "%s: %s: the VACUUM itself is done", t->path, strstr(r->message, "after_vacuum "));
                break;
        case MAINT_ROWIDS:
                log_struct(LOG_WARNING, MSGID_ROWID_GUARD,
                           LOG_FIELDS(DB(t->path, op),
                                      LOG_TEXT("TABLES", table_list(r, TABLE_ROWIDS_CHANGE, list, sizeof(list))),
                                      LOG_PERCENT("FRAGMENTATION_BEFORE", r->before.fragmentation_percent)),
                           "%s: VACUUM refused: %s; not tried again until the schema changes", t->path, r->message);
                break;
        case MAINT_CORRUPT:
                event_corrupt(t->path, op, r->message, r);
                break;
        case MAINT_NOSPACE:
                log_struct(LOG_WARNING, MSGID_NO_SPACE,
                           LOG_FIELDS(DB(t->path, op), LOG_TEXT("SQLITE_ERROR", r->message),
                                      LOG_U64("SPACE_NEEDED_BYTES", r->space_needed),
                                      LOG_U64("TEMP_SPACE_NEEDED_BYTES", r->space_needed_tmp)),
                           "%s: %s refused: %s", t->path, op, r->message);
                break;
        case MAINT_CANNOT:
                log_struct(LOG_WARNING, MSGID_CANNOT_MAINTAIN,
                           LOG_FIELDS(DB(t->path, op), LOG_TEXT("SQLITE_ERROR", r->message)),
                           "%s: cannot maintain: %s", t->path, r->message);
                break;
        case MAINT_TIMEOUT:
                if (!window_end) {
                        job_failed(t->path, op, r);
                        break;
                }
                log_struct(LOG_NOTICE, MSGID_JOB_FAILED, LOG_FIELDS(DB(t->path, op), LOG_TEXT("REASON", "window-end")),
                           "%s: deep scan stopped at the end of the maintenance window, unfinished; it starts again "
                           "in the next window", t->path);
                break;
        case MAINT_HOOK_REFUSED:
                /* a warning the first time; while the hook keeps refusing, each poll's try at INFO */
                log_struct(target_memo_get(t)->last[j->op].status == MAINT_HOOK_REFUSED &&
                                           target_memo_get(t)->last[j->op].ms
                                   ? LOG_INFO
                                   : LOG_WARNING,
                           MSGID_JOB_FAILED,
                           LOG_FIELDS(DB(t->path, op), LOG_TEXT("REASON", maint_status_name(r->status)),
                                      LOG_TEXT("HOOK_MESSAGE", r->message)),
                           "%s: %s; decided again at the next poll", t->path, r->message);
                break;
        case MAINT_BUSY: /* only when stopping: otherwise retried */
        case MAINT_INTERRUPTED:
                log_struct(LOG_NOTICE, MSGID_JOB_FAILED,
                           LOG_FIELDS(DB(t->path, op), LOG_TEXT("REASON", maint_status_name(r->status)),
                                      LOG_TEXT("SQLITE_ERROR", r->message)),
                           "%s: %s %s; the database is intact", t->path, op,
                           r->status == MAINT_BUSY ? "not run: locked when the daemon stopped" : "interrupted");
                break;
        default:
                job_failed(t->path, op, r);
                break;
        }
}

void event_retry(const char *path, const struct job *j, int attempt, int max_attempts, uint64_t backoff_ms)
{
        log_struct(LOG_INFO, MSGID_RETRY,
                   LOG_FIELDS(DB(path, maint_op_name(j->op)), LOG_I64("ATTEMPT", attempt),
                              LOG_U64("BACKOFF_MS", backoff_ms), LOG_TEXT("SQLITE_ERROR", j->res.message)),
                   "%s: %s (%s), retry %d/%d in %llu ms", path, maint_op_name(j->op), j->res.message, attempt + 1,
                   max_attempts, (unsigned long long)backoff_ms);
}

void event_gave_up(const char *path, const struct job *j, int attempts)
{
        log_struct(LOG_WARNING, MSGID_GAVE_UP,
                   LOG_FIELDS(DB(path, maint_op_name(j->op)), LOG_I64("ATTEMPT", attempts),
                              LOG_TEXT("SQLITE_ERROR", j->res.message)),
                   "%s: %s gave up after %d attempts (the last: %s); will decide again at a later poll", path,
                   maint_op_name(j->op), attempts, j->res.message);
}

void event_checkpoint_retry(const char *path, const struct maint_result *r, uint64_t backoff_ms)
{
        log_msg(LOG_DEBUG, "%s: checkpoint busy (%s), trying again in %llu ms or later", path, r->message,
                (unsigned long long)backoff_ms);
}

void event_checkpoint_held(const char *path, const struct maint_result *r, uint64_t busy_ms, int attempt)
{
        char bytes[32], since[32];

        log_struct(LOG_WARNING, MSGID_CHECKPOINT_BUSY,
                   LOG_FIELDS(DB(path, "checkpoint"), LOG_U64("WAL_SIZE_BYTES", r->wal_bytes_after),
                              LOG_U64("WAL_FRAMES_LEFT", r->wal_frames_left), LOG_I64("ATTEMPT", attempt)),
                   "%s: readers have kept the -wal (%s) from being checkpointed for %s: %llu frame%s not yet in the "
                   "database; an application holds a read transaction open", path,
                   util_format_bytes(r->wal_bytes_after, bytes, sizeof(bytes)),
                   conf_format_duration(busy_ms / 1000 * 1000, since, sizeof(since)), (unsigned long long)r->wal_frames_left,
                   r->wal_frames_left == 1 ? "" : "s");
}

void event_stats_locked(const char *path, const char *why, int polls, int max_attempts)
{
        if (polls != max_attempts) {
                log_msg(LOG_DEBUG, "%s: locked while reading statistics, next poll", path);
                return;
        }
        log_struct(LOG_WARNING, MSGID_GAVE_UP,
                   LOG_FIELDS(DB(path, "poll"), LOG_I64("ATTEMPT", polls), LOG_TEXT("SQLITE_ERROR", why)),
                   "%s: locked at each of the last %d polls, its statistics cannot even be read; an application "
                   "holds long write transactions", path, polls);
}

void event_stats_timeout(const char *path, const char *why, uint64_t hold_ms)
{
        char d[32];

        log_struct(LOG_WARNING, MSGID_JOB_FAILED,
                   LOG_FIELDS(DB(path, "poll"), LOG_TEXT("REASON", maint_status_name(MAINT_TIMEOUT)),
                              LOG_TEXT("SQLITE_ERROR", why)),
                   "%s: reading its statistics %s; not looked at again for %s", path, why,
                   conf_format_duration(hold_ms, d, sizeof(d)));
}

void event_cannot_start(const char *path, enum maint_op op)
{
        if (op == MAINT_OP_STATS)
                log_msg(LOG_ERR, "%s: cannot start a statistics read, skipping", path);
        else
                log_msg(LOG_ERR, "%s: cannot start %s, skipping", path, maint_op_name(op));
}
