/* SPDX-License-Identifier: MIT */
/* events: what the daemon says. One function for each kind of journal
 * entry about a database or the daemon's life: its wording, its fields
 * (docs/DESIGN.md, "Journal fields"), its MESSAGE_ID (msgid.h, explained
 * in systemd/sqlite-maintd.catalog) and its priority, in one place. The
 * manager decides and calls these; they decide nothing, except how loud
 * (an entry repeated for the same reason goes at DEBUG). Each is one
 * log_struct() call: an entry with DB_PATH= is budgeted per directory
 * (log.h). The STATUS= text systemd shows is kept here too, with the
 * last notable thing done. Loop thread only. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conf.h"
#include "job.h"
#include "maint.h"
#include "schedule.h"
#include "targets.h"

/* --- the daemon's life --------------------------------------------------- */

void event_started(const char *conf_file, size_t n_watched, bool once, bool dry_run, uint64_t poll_interval_ms,
                   unsigned max_jobs);
/* running: jobs still running (each stops at its next safe point). again: a
 * second stop signal while those finish. */
void event_stopping(unsigned running, bool again);
void event_stopped(unsigned long jobs_done, unsigned failed);
void event_reloading(const char *conf_file);
/* d: the configuration's errors (each its own entry); r: the negative
 * errno when there are none. */
void event_reload_failed(const char *conf_file, const struct conf_diag *d, int r);
void event_reloaded(const char *conf_file, size_t n_entries, size_t n_watched);
/* A reload that changes state_dir: the old one stays until a restart. */
void event_state_dir_kept(const char *new_dir, const char *old_dir);
/* A reload asking for more jobs at once than the pool sized at start has room for. */
void event_jobs_capped(unsigned asked, unsigned allowed);
/* A poll round begins over n databases watched: n_round to look at (the
 * others' decisions stand), per_tick every tick_ms (DEBUG). */
void event_poll_round(size_t n, size_t n_round, size_t per_tick, uint64_t tick_ms);
/* forgot: databases the state file forgot (> 0), or a negative errno. */
void event_state_pruned(int forgot);

/* STATUS= for systemd (sd_notify): watched databases, jobs running and
 * queued, the last notable thing done; while stopping, the jobs left. */
/* A poll round's figures: databases read, left unread because inotify
 * saw no change, WAL databases read from their wal-index or (that failing
 * validation) through SQLite in a job; how late its ticks ran, in
 * microseconds (the loop's lag). */
struct event_round {
        size_t read, unchanged, wal_from_index, wal_fallback;
        uint64_t lag_p99_us, lag_max_us;
};

/* progress: the running VACUUM's phase and progress, in words, or NULL. */
void event_status(size_t n_watched, unsigned running, size_t queued, bool stopping, unsigned stopping_jobs,
                  const struct event_round *last, const char *progress);
/* A running VACUUM entered phase, elapsed_ms after it began; percent of
 * its estimate (estimate_ms), or -1 when not known (INFO). */
void event_vacuum_phase(const char *path, enum maint_phase phase, uint64_t elapsed_ms, int percent,
                        int64_t estimate_ms);
void event_poll_round_done(const struct event_round *r);
/* Directories not watched for changes (targets_listing_unwatched()):
 * said once while it lasts (*said), and when it ends. */
void event_unwatched(size_t remote, size_t refused, int why, bool *said);

/* --- databases coming and going ------------------------------------------ */

enum event_added {
        EVENT_ADDED_AT_START, /* DEBUG: one line per database, not ten thousand at INFO */
        EVENT_ADDED_NEW,      /* a new match of a configured glob or path */
        EVENT_ADDED_BACK,     /* a configured path that was missing appeared */
};
void event_db_added(const char *path, enum event_added how);
/* why: "does not exist (any more)", "left the configuration", ...;
 * still_watched: a configured path, which may come back (WARNING). */
void event_db_removed(const char *path, const char *why, bool still_watched);
/* A path the expansion did not follow (config_path: the entry that met it). */
void event_path_refused(const char *path, const char *config_path, const char *why);
/* An entry that matched more than its limits.max_matches. */
void event_entry_capped(const char *config_path, const char *why, uint64_t max_matches);
/* Refused paths past the first `named`, counted rather than named. */
void event_refused_counted(size_t n, size_t named);

/* --- decisions -------------------------------------------------------------- */

/* op is decided for t (from t->stat, t->hist, t->dc). again: the same
 * reason as the last decision logged (DEBUG). */
void event_scheduled(const struct target *t, enum maint_op op, enum sched_reason reason, bool urgent, bool again,
                     bool dry_run);
/* A VACUUM due but held back: d->reason is SCHED_REASON_WAIT_WINDOW or
 * SCHED_REASON_MIN_INTERVAL (said once, when it starts). */
/* est_ms and rate: the window fit's estimate (SCHED_REASON_WINDOW_SHORT). */
void event_vacuum_waits(const struct target *t, const struct sched_decision *d, int minute_of_day, int64_t est_ms,
                        const struct sched_rate *rate);
/* DEBUG lines of decisions that change nothing. */
void event_nothing_to_do(const struct target *t, enum sched_reason reason);
void event_vacuum_held_for_rowids(const struct target *t);
void event_analyze_current(const struct target *t);
void event_deep_scan_current(const struct target *t);
void event_stats_reused(const struct target *t);
/* The window closed while a VACUUM waited in the queue. */
void event_window_closed(const struct target *t);

/* --- results ------------------------------------------------------------------ */

/* CRIT, the one an admin must act on: op found it ("poll", "vacuum",
 * "deep_scan", ...), why is SQLite's word; r, when a check ran, gives the
 * problem rows (else NULL). */
void event_corrupt(const char *path, const char *op, const char *why, const struct maint_result *r);
/* A database that cannot even be looked at, by kind (held until it changes). */
void event_poll_failed(const char *path, enum maint_status s, const char *why);
/* What a maintenance job did (any status but a busy one being retried).
 * window_end: a deep scan stopped at the end of its window. */
void event_job_done(const struct target *t, const struct job *j, bool window_end);
/* A lock conflict: retried after backoff_ms (attempt of max), or given up. */
void event_retry(const char *path, const struct job *j, int attempt, int max_attempts, uint64_t backoff_ms);
void event_gave_up(const char *path, const struct job *j, int attempts);
/* A busy checkpoint, tried again after backoff_ms (DEBUG); readers that
 * have held the -wal for busy_ms (WARNING, every warn_after). */
void event_checkpoint_retry(const char *path, const struct maint_result *r, uint64_t backoff_ms);
void event_checkpoint_held(const char *path, const struct maint_result *r, uint64_t busy_ms, int attempt);
/* A precise statistics read met a lock at `polls` polls in a row (WARNING
 * once it reaches max_attempts, else DEBUG), or ran out of time (then the
 * database is held for hold_ms). */
void event_stats_locked(const char *path, const char *why, int polls, int max_attempts);
void event_stats_timeout(const char *path, const char *why, uint64_t hold_ms);
/* A job that could not even start. */
void event_cannot_start(const char *path, enum maint_op op);
