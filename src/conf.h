/* SPDX-License-Identifier: MIT */
/* conf: the YAML configuration, parsed into plain structs with defaults. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CONF_MAX_FILE_SIZE (1024 * 1024) /* a larger config file is refused */

enum integrity_level {
        INTEGRITY_NONE,
        INTEGRITY_QUICK,
        INTEGRITY_FULL,
};

enum vacuum_mode {
        VACUUM_MODE_FULL,
        VACUUM_MODE_INCREMENTAL,
};

/* A daily maintenance window in local time, [start, end) in minutes after
 * midnight; end < start wraps midnight; always = no window. */
struct window {
        bool always;
        int start_min; /* 0..1439 */
        int end_min;   /* 0..1439; start == end is refused by the parser */
};

/* Bytes of a hook command, its NUL included, and its words at most. */
#define CONF_COMMAND_MAX 256
#define CONF_COMMAND_WORDS 32

struct vacuum_conf {
        double threshold;        /* percent, 0..100 */
        double urgent_threshold; /* percent, threshold..100 */
        struct window window;
        uint64_t min_interval_ms;
        uint64_t min_reclaim;    /* bytes */
        double disk_space_factor; /* >= 1 */
        enum integrity_level integrity;
        enum vacuum_mode mode;
        bool allow_rowid_change; /* VACUUM even when it would renumber rowids (maint.h) */
        /* percent of the bytes of b-tree pages unused (a deep scan's
         * unused_percent) at or above which VACUUM runs in the window;
         * 0 = off */
        double unused_threshold;
        /* Commands run by the job process around a VACUUM (hook.h), ""
         * for none: before (a non-zero exit skips the VACUUM) and after
         * it, each killed at hook_timeout_ms. */
        char before_vacuum[CONF_COMMAND_MAX];
        char after_vacuum[CONF_COMMAND_MAX];
        uint64_t hook_timeout_ms;
};

/* The deep scan (deepscan.h): the whole file read through dbstat. */
struct deep_scan_conf {
        uint64_t interval_ms; /* 0 = never */
        bool in_window;       /* only inside vacuum.window */
};

struct analyze_conf {
        uint64_t interval_ms; /* 0 = never */
        int analysis_limit;   /* 0 = no limit (SQLite's meaning), else 1..N */
        /* A table's statistics are stale when its row count moved by more
         * than threshold_rows + scale_factor_percent% of the count they
         * were gathered at (PostgreSQL's autovacuum_analyze_threshold and
         * _scale_factor); analysis_limit applies above large_table_rows. */
        uint64_t threshold_rows;
        double scale_factor_percent;
        uint64_t large_table_rows;
};

/* WAL space given back: a -wal past either limit is checkpointed. */
struct checkpoint_conf {
        uint64_t wal_size_limit;    /* bytes; 0 = no absolute limit */
        double wal_size_ratio;      /* percent of the database file; 0 = off */
        uint64_t warn_after_ms;     /* readers kept it from being truncated this long: a warning */
};

struct retry_conf {
        uint64_t busy_timeout_ms;
        int max_attempts; /* >= 1 */
        uint64_t initial_backoff_ms;
        uint64_t max_backoff_ms; /* >= initial_backoff_ms */
};

/* What one job and one entry may take (docs/DESIGN.md, "Threat model"). */
struct limits_conf {
        uint64_t job_timeout_ms;          /* any job is stopped for certain after this */
        uint64_t vacuum_timeout_per_gib_ms; /* a VACUUM: job_timeout plus this per GiB of database */
        uint64_t max_matches;             /* databases one entry may match; the rest are not watched */
};

/* Effective settings of one databases: entry: the defaults with the entry's
 * own overrides applied. */
struct db_conf {
        char *path;   /* absolute; may hold glob characters */
        bool is_glob; /* path has *, ? or [ */
        unsigned line, column; /* where the entry starts, for messages */
        struct vacuum_conf vacuum;
        struct analyze_conf analyze;
        struct retry_conf retry;
        struct checkpoint_conf checkpoint;
        struct limits_conf limits;
        struct deep_scan_conf deep_scan;
};

struct conf {
        char *file; /* the path it was loaded from */
        uint64_t poll_interval_ms;
        /* Every database read again and the paths walked again this
         * often, whatever inotify said (docs/DESIGN.md, "What a poll reads"). */
        uint64_t full_sweep_interval_ms;
        unsigned max_concurrent_jobs; /* >= 1 */
        char *state_dir;
        /* The control socket (docs/CONTROL.md): its path, and the group
         * besides root allowed to use it (-1: none). */
        char *control_socket;
        int64_t control_gid;
        char *metrics_file;          /* NULL: none (docs/METRICS.md) */
        struct vacuum_conf vacuum;   /* defaults: */
        struct analyze_conf analyze;
        struct retry_conf retry;
        struct checkpoint_conf checkpoint;
        struct limits_conf limits;
        struct deep_scan_conf deep_scan;
        struct db_conf *dbs;
        size_t n_dbs;
};

/* Diagnostics gathered while loading; each message is a complete line
 * "FILE:LINE:COLUMN: what is wrong, what was expected" (no newline). */
struct conf_diag {
        char **msgs;
        size_t n;
};

/* Fill c with every built-in default and no databases (c->file, c->state_dir
 * allocated). Returns 0 or -ENOMEM. The built-in values are those of the
 * key table in conf.c, one row per key. */
int conf_init_defaults(struct conf *c);

/* The settings a databases: entry of c starts from, into *ret: c's
 * defaults: section, or the built-in values when c is NULL. ret->path is
 * NULL and nothing in *ret is allocated; cannot fail. */
void conf_db_defaults(const struct conf *c, struct db_conf *ret);

/* Load and validate path. On success returns 0 and hands over *ret; on
 * failure returns a negative errno-style code (-EINVAL for bad content,
 * -ENOENT, -EACCES, -EFBIG, ...) and diag holds one message per error found
 * (all of them, not just the first). diag may be NULL. */
int conf_load(const char *path, struct conf **ret, struct conf_diag *diag);

/* conf_load(), each message handed to report() as one complete line
 * without a newline, in file order; a failure that comes without a
 * message (out of memory) is reported as "PATH: strerror". The one way
 * sqlite-maintd and sqlite-maintctl load and show a configuration; report
 * escapes or logs as its output needs. Returns what conf_load() returns. */
int conf_load_report(const char *path, struct conf **ret, void (*report)(const char *line, void *userdata),
                     void *userdata);

/* Same as conf_load(), from a buffer of len bytes (need not be
 * NUL-terminated; NULL counts as empty); name is used in messages. */
int conf_load_buffer(const char *name, const char *buf, size_t len, struct conf **ret,
                     struct conf_diag *diag);

/* Frees c and everything it holds. NULL-safe; returns NULL. */
struct conf *conf_free(struct conf *c);
/* Frees every message of d and empties it, ready for reuse. NULL-safe. */
void conf_diag_clear(struct conf_diag *d);

/* The first databases: entry whose path (or glob, fnmatch with FNM_PATHNAME)
 * matches db_path, or NULL. */
const struct db_conf *conf_match(const struct conf *c, const char *db_path);

/* Value parsers, shared by the loader and the tests. Each returns 0 or
 * -EINVAL; the whole string must be consumed (no trailing junk, no sign). */
int conf_parse_duration(const char *s, uint64_t *ret_ms); /* 500ms 30s 5m 6h 1d 2w; "0" ok */
int conf_parse_size(const char *s, uint64_t *ret_bytes);  /* 512KiB 1MiB 2GiB 1TiB, 512B, bare bytes; also kB/MB/GB (10^3) */
int conf_parse_percent(const char *s, double *ret);       /* "20%" or "20" or "12.5%"; 0..100 */
int conf_parse_window(const char *s, struct window *ret); /* "02:00-05:00", "22:00-03:00", "always" */

/* Human-readable forms for messages (the largest unit that divides
 * exactly: "90m", "1536KiB"); what they write parses back to the same
 * value. buf >= 32 bytes; returns buf. */
const char *conf_format_duration(uint64_t ms, char *buf, size_t len);
const char *conf_format_size(uint64_t bytes, char *buf, size_t len);

/* The word the configuration uses for l or m ("quick", "incremental"), or
 * "unknown" for a value outside the enum. Static strings. */
const char *conf_integrity_name(enum integrity_level l);
const char *conf_vacuum_mode_name(enum vacuum_mode m);
