/* SPDX-License-Identifier: MIT */
/* state: when each database was last vacuumed and analyzed, kept in a small
 * SQLite file in state_dir so a restart neither repeats nor forgets work. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "deepscan.h"
#include "maint.h"
#include "schedule.h"

struct state;

/* Create dir (0700) if needed and open dir/state.db. 0 or negative errno;
 * *errmsg (static or from SQLite, may be NULL) says why on failure. */
int state_open(const char *dir, struct state **ret, const char **errmsg);
struct state *state_free(struct state *s);

/* Read every database's history (its last vacuum, analyze and deep scan,
 * wall clock ms, 0 = never; the deep scan's figures) into memory, for
 * state_history(). Loop thread, at startup. 0, -EIO or -ENOMEM (what was
 * read before stays usable). */
int state_load(struct state *s);
/* The history state_load() found for path, into *ret (first_seen_ms 0):
 * true, or false when none was remembered. Loop thread. */
bool state_history(const struct state *s, const char *path, struct sched_history *ret);

/* Record that op (vacuum, incremental vacuum or analyze) finished on path at
 * when_ms (wall clock); a full VACUUM makes the last deep scan's figures
 * unknown (it packed the pages). Safe from any thread. 0 or negative errno. */
int state_record(struct state *s, const char *path, enum maint_op op, int64_t when_ms);

/* A deep scan of path at when_ms found ds. Safe from any thread. 0 or
 * negative errno. */
int state_record_deep_scan(struct state *s, const char *path, int64_t when_ms, const struct deep_stats *ds);

/* After an ANALYZE: for each table analyzed, the exact row count and the
 * sqlite_stat1 text it left (a sampled ANALYZE writes an estimated count).
 * Safe from any thread. 0 or negative errno. */
int state_record_analyzed(struct state *s, const char *path, const struct maint_table *tables, size_t n);

/* Every row state_record_analyzed() kept for path, as an array for a job
 * process (malloc'd; *n may be 0). Safe from any thread. 0 or negative errno. */
struct jobproc_baseline;
int state_analyze_baselines(struct state *s, const char *path, struct jobproc_baseline **ret, size_t *n);

/* The jobs table keeps the newest this many rows (about 300 bytes each). */
#define STATE_JOBS_KEPT 100000

/* A maintenance job of op on path that ended at finished_ms (wall clock)
 * with result r: a row of the jobs table (sqlite-maintctl history). Safe
 * from any thread; it writes (call from a worker). 0 or negative errno. */
int state_record_job(struct state *s, const char *path, enum maint_op op, const struct maint_result *r,
                     int64_t finished_ms);
/* The newest limit jobs of path (NULL: of every database) finished at or
 * after since_ms, oldest first, as the array "jobs" of objects {db,
 * operation, result, finished_ms, duration_ms, bytes_given_back, message}
 * into the object j is in. Safe from any thread; it may wait on a
 * worker's write (call from a worker). 0 or negative errno. */
struct json;
int state_jobs_json(struct state *s, const char *path, int64_t since_ms, size_t limit, struct json *j);

/* A VACUUM job that went through bytes of database in duration_ms: one of
 * the last SCHED_RATE_SAMPLES the window fit estimates from. Safe from
 * any thread; it writes. 0 or negative errno. */
int state_record_vacuum_rate(struct state *s, uint64_t bytes, uint64_t duration_ms);
/* Their sums, into *ret (all zero when none). Loop thread, at start. 0 or
 * negative errno. */
int state_vacuum_rate(struct state *s, struct sched_rate *ret);

/* Forget the databases whose files are gone (lstat: ENOENT or ENOTDIR):
 * their history and recorded counts. Blocks (file system, fsync): call from
 * a worker. Returns the number of databases forgotten, or negative errno. */
int state_prune(struct state *s);
