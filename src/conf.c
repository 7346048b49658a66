/* SPDX-License-Identifier: MIT */
/* conf: the YAML configuration file, parsed with libyaml's document API into
 * plain structs with defaults, and validated in one place. Every problem is
 * reported as "FILE:LINE:COLUMN: message"; all of them are collected, not
 * just the first.
 *
 * YAML merge keys ("<<: *base") are supported in every mapping, with the
 * usual semantics: keys written in the mapping itself win over merged ones,
 * and in "<<: [*a, *b]" a wins over b. A quoted "<<" is an ordinary key.
 * Top-level keys starting with "x-" are ignored: a place to define anchors. */

#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <yaml.h>

#include "config.h"
#include "conf.h"
#include "util.h"

/* An alias may be expanded many times ("billion laughs"); the document is
 * refused when its fully expanded tree would have more nodes than this. A
 * 1 MiB file without aliases cannot come close. */
#define MAX_EXPANDED_NODES 1000000u
/* The schema is five levels deep; anything far deeper is not a config. */
#define MAX_DEPTH 64
/* After this many distinct errors the rest are only counted. */
#define MAX_ERRORS 50
/* Durations are added to clock readings in milliseconds; ten years keeps
 * every such sum far from overflowing. */
#define MAX_DURATION_MS (520ull * 7 * 24 * 3600 * 1000)
/* sqlite3_busy_timeout() takes an int of milliseconds. */
#define MAX_BUSY_TIMEOUT_MS (24ull * 24 * 3600 * 1000)

#define MS_PER_S 1000ull
#define MS_PER_M (60 * MS_PER_S)
#define MS_PER_H (60 * MS_PER_M)
#define MS_PER_D (24 * MS_PER_H)
#define MS_PER_W (7 * MS_PER_D)

#define DURATION_EXPECT "expected a number followed by ms, s, m, h, d or w"
#define SIZE_EXPECT "expected a whole number of bytes, optionally followed by B, KiB, MiB, GiB, TiB, kB, MB, GB or TB"
#define PERCENT_EXPECT "expected a number from 0 to 100, optionally followed by %"
#define WINDOW_EXPECT "expected HH:MM-HH:MM (24-hour local time) or always"

/* ---- value parsers ---------------------------------------------------- */

/* Why a value was refused, so the loader can say more than "invalid". */
enum reason {
        PR_OK,
        PR_SYNTAX,
        PR_NEGATIVE,
        PR_FRACTION,
        PR_NO_UNIT,
        PR_OVERFLOW,
        PR_RANGE,
        PR_EQUAL,
};

static bool is_digit(char ch)
{
        return ch >= '0' && ch <= '9';
}

/* Leading decimal digits of s into *ret; *end after them. */
static enum reason parse_digits(const char *s, uint64_t *ret, const char **end)
{
        uint64_t v = 0;
        bool overflow = false;

        if (!is_digit(*s))
                return PR_SYNTAX;
        for (; is_digit(*s); s++) {
                unsigned d = (unsigned)(*s - '0');

                if (v > (UINT64_MAX - d) / 10)
                        overflow = true;
                else
                        v = v * 10 + d;
        }
        *end = s;
        *ret = v;
        return overflow ? PR_OVERFLOW : PR_OK;
}

/* "123" or "12.5": digits, optionally a point and more digits. Locale
 * independent, unlike strtod(), since the daemon may call setlocale(). */
static enum reason parse_decimal(const char *s, double *ret, const char **end)
{
        uint64_t ip, frac = 0, scale = 1;
        enum reason r;

        r = parse_digits(s, &ip, &s);
        if (r != PR_OK)
                return r;
        if (ip > 1000000000u)
                return PR_OVERFLOW;
        if (*s == '.') {
                s++;
                if (!is_digit(*s))
                        return PR_SYNTAX;
                /* 12 digits keep ip * scale + frac exact in a double */
                for (unsigned n = 0; is_digit(*s); s++, n++)
                        if (n < 12) {
                                frac = frac * 10 + (unsigned)(*s - '0');
                                scale *= 10;
                        }
        }
        *end = s;
        *ret = (double)(ip * scale + frac) / (double)scale;
        return PR_OK;
}

/* A unit suffix and what one of it is worth (ms or bytes). */
struct unit {
        const char *name;
        uint64_t mult;
};

/* n followed by suffix end, looked up in units; overflow is an error. */
static enum reason apply_unit(const struct unit *units, size_t n_units, uint64_t n, const char *end,
                              uint64_t *ret)
{
        for (size_t i = 0; i < n_units; i++) {
                if (strcmp(end, units[i].name) != 0)
                        continue;
                if (n > UINT64_MAX / units[i].mult)
                        return PR_OVERFLOW;
                *ret = n * units[i].mult;
                return PR_OK;
        }
        return PR_SYNTAX;
}

static enum reason duration_reason(const char *s, uint64_t *ret_ms)
{
        static const struct unit units[] = {
                { "ms", 1 },           { "s", MS_PER_S }, { "m", MS_PER_M },
                { "h", MS_PER_H },     { "d", MS_PER_D }, { "w", MS_PER_W },
        };
        const char *end;
        uint64_t n;
        enum reason r;

        if (*s == '-')
                return PR_NEGATIVE;
        r = parse_digits(s, &n, &end);
        if (r != PR_OK)
                return r;
        if (*end == '.' || *end == ',')
                return PR_FRACTION;
        if (*end == '\0')
                /* a bare zero is unambiguous; any other bare number is not */
                return n == 0 ? (*ret_ms = 0, PR_OK) : PR_NO_UNIT;
        return apply_unit(units, sizeof(units) / sizeof(units[0]), n, end, ret_ms);
}

int conf_parse_duration(const char *s, uint64_t *ret_ms)
{
        uint64_t v;

        if (!s || duration_reason(s, &v) != PR_OK)
                return -EINVAL;
        *ret_ms = v;
        return 0;
}

static enum reason size_reason(const char *s, uint64_t *ret)
{
        static const struct unit units[] = {
                { "", 1 },
                { "B", 1 },
                { "KiB", 1ull << 10 },
                { "MiB", 1ull << 20 },
                { "GiB", 1ull << 30 },
                { "TiB", 1ull << 40 },
                { "kB", 1000ull },
                { "MB", 1000ull * 1000 },
                { "GB", 1000ull * 1000 * 1000 },
                { "TB", 1000ull * 1000 * 1000 * 1000 },
        };
        const char *end;
        uint64_t n;
        enum reason r;

        if (*s == '-')
                return PR_NEGATIVE;
        r = parse_digits(s, &n, &end);
        if (r != PR_OK)
                return r;
        if (*end == '.' || *end == ',')
                return PR_FRACTION;
        return apply_unit(units, sizeof(units) / sizeof(units[0]), n, end, ret);
}

int conf_parse_size(const char *s, uint64_t *ret_bytes)
{
        uint64_t v;

        if (!s || size_reason(s, &v) != PR_OK)
                return -EINVAL;
        *ret_bytes = v;
        return 0;
}

static enum reason percent_reason(const char *s, double *ret)
{
        const char *end;
        double v;
        enum reason r;

        if (*s == '-')
                return PR_NEGATIVE;
        r = parse_decimal(s, &v, &end);
        if (r != PR_OK)
                return r;
        if (*end == '%')
                end++;
        if (*end != '\0')
                return PR_SYNTAX;
        if (v > 100.0)
                return PR_RANGE;
        *ret = v;
        return PR_OK;
}

int conf_parse_percent(const char *s, double *ret)
{
        double v;

        if (!s || percent_reason(s, &v) != PR_OK)
                return -EINVAL;
        *ret = v;
        return 0;
}

/* "H:MM" or "HH:MM", 00:00 to 23:59, into minutes after midnight. */
static bool parse_clock(const char **sp, int *ret_min)
{
        const char *s = *sp;
        int h, m;

        if (!is_digit(s[0]))
                return false;
        h = s[0] - '0';
        s++;
        if (is_digit(*s))
                h = h * 10 + (*s++ - '0');
        if (*s++ != ':' || !is_digit(s[0]) || !is_digit(s[1]))
                return false;
        m = (s[0] - '0') * 10 + (s[1] - '0');
        if (h > 23 || m > 59)
                return false;
        *sp = s + 2;
        *ret_min = h * 60 + m;
        return true;
}

static enum reason window_reason(const char *s, struct window *ret)
{
        struct window w = { 0 };

        if (strcmp(s, "always") == 0) {
                w.always = true;
                *ret = w;
                return PR_OK;
        }
        if (!parse_clock(&s, &w.start_min))
                return PR_SYNTAX;
        while (*s == ' ')
                s++;
        if (*s++ != '-')
                return PR_SYNTAX;
        while (*s == ' ')
                s++;
        if (!parse_clock(&s, &w.end_min) || *s != '\0')
                return PR_SYNTAX;
        /* an empty window would never open; a full day is "always" */
        if (w.start_min == w.end_min)
                return PR_EQUAL;
        *ret = w;
        return PR_OK;
}

int conf_parse_window(const char *s, struct window *ret)
{
        struct window w;

        if (!s || window_reason(s, &w) != PR_OK)
                return -EINVAL;
        *ret = w;
        return 0;
}

/* The number of whole units and the largest unit that divides exactly. */
const char *conf_format_duration(uint64_t ms, char *buf, size_t len)
{
        static const struct {
                const char *name;
                uint64_t ms;
        } units[] = {
                { "w", MS_PER_W }, { "d", MS_PER_D }, { "h", MS_PER_H },
                { "m", MS_PER_M }, { "s", MS_PER_S }, { "ms", 1 },
        };

        if (ms == 0) {
                snprintf(buf, len, "0");
                return buf;
        }
        for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
                if (ms % units[i].ms == 0) {
                        snprintf(buf, len, "%" PRIu64 "%s", ms / units[i].ms, units[i].name);
                        break;
                }
        return buf;
}

const char *conf_format_size(uint64_t bytes, char *buf, size_t len)
{
        static const struct {
                const char *name;
                uint64_t mult;
        } units[] = {
                { "TiB", 1ull << 40 }, { "GiB", 1ull << 30 }, { "MiB", 1ull << 20 },
                { "KiB", 1ull << 10 }, { "B", 1 },
        };

        if (bytes == 0) {
                snprintf(buf, len, "0B");
                return buf;
        }
        for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
                if (bytes % units[i].mult == 0) {
                        snprintf(buf, len, "%" PRIu64 "%s", bytes / units[i].mult, units[i].name);
                        break;
                }
        return buf;
}

const char *conf_integrity_name(enum integrity_level l)
{
        switch (l) {
        case INTEGRITY_NONE:
                return "none";
        case INTEGRITY_QUICK:
                return "quick";
        case INTEGRITY_FULL:
                return "full";
        }
        return "unknown";
}

const char *conf_vacuum_mode_name(enum vacuum_mode m)
{
        switch (m) {
        case VACUUM_MODE_FULL:
                return "full";
        case VACUUM_MODE_INCREMENTAL:
                return "incremental";
        }
        return "unknown";
}

/* ---- defaults ---------------------------------------------------------- */

static void builtin_sections(struct vacuum_conf *v, struct analyze_conf *a, struct retry_conf *r,
                             struct checkpoint_conf *k, struct limits_conf *lim, struct deep_scan_conf *ds)
{
        *v = (struct vacuum_conf){
                .threshold = 20.0,
                .urgent_threshold = 30.0,
                .window = { .always = false, .start_min = 2 * 60, .end_min = 5 * 60 },
                .min_interval_ms = 6 * MS_PER_H,
                .min_reclaim = 1ull << 20,
                .disk_space_factor = 2.0,
                .integrity = INTEGRITY_QUICK,
                .mode = VACUUM_MODE_FULL,
                .allow_rowid_change = false,
                .unused_threshold = 30.0,
        };
        *ds = (struct deep_scan_conf){
                .interval_ms = 7 * MS_PER_D,
                .in_window = true,
        };
        *a = (struct analyze_conf){
                .interval_ms = MS_PER_D,
                .analysis_limit = 1000,
                .threshold_rows = 50,
                .scale_factor_percent = 10.0,
                .large_table_rows = 1000000,
        };
        *k = (struct checkpoint_conf){
                .wal_size_limit = 64ull << 20,
                .wal_size_ratio = 100.0,
                .warn_after_ms = MS_PER_H,
        };
        *lim = (struct limits_conf){
                .job_timeout_ms = 30 * MS_PER_M,
                .vacuum_timeout_per_gib_ms = 10 * MS_PER_M,
                .max_matches = 100000,
        };
        *r = (struct retry_conf){
                .busy_timeout_ms = 50,
                .max_attempts = 8,
                .initial_backoff_ms = MS_PER_S,
                .max_backoff_ms = 10 * MS_PER_M,
        };
}

int conf_init_defaults(struct conf *c)
{
        *c = (struct conf){
                .poll_interval_ms = 5 * MS_PER_M,
                .max_concurrent_jobs = 1,
        };
        builtin_sections(&c->vacuum, &c->analyze, &c->retry, &c->checkpoint, &c->limits, &c->deep_scan);
        c->file = strdup("(built-in defaults)");
        c->state_dir = strdup(DEFAULT_STATE_DIR);
        if (!c->file || !c->state_dir) {
                free(c->file);
                free(c->state_dir);
                c->file = c->state_dir = NULL;
                return -ENOMEM;
        }
        return 0;
}

struct conf *conf_free(struct conf *c)
{
        if (!c)
                return NULL;
        for (size_t i = 0; i < c->n_dbs; i++)
                free(c->dbs[i].path);
        free(c->dbs);
        free(c->file);
        free(c->state_dir);
        free(c);
        return NULL;
}

void conf_diag_clear(struct conf_diag *d)
{
        if (!d)
                return;
        for (size_t i = 0; i < d->n; i++)
                free(d->msgs[i]);
        free(d->msgs);
        d->msgs = NULL;
        d->n = 0;
}

const struct db_conf *conf_match(const struct conf *c, const char *db_path)
{
        if (!c || !db_path)
                return NULL;
        for (size_t i = 0; i < c->n_dbs; i++) {
                const struct db_conf *d = &c->dbs[i];

                if (strcmp(d->path, db_path) == 0)
                        return d;
                if (d->is_glob && fnmatch(d->path, db_path, FNM_PATHNAME) == 0)
                        return d;
        }
        return NULL;
}

/* ---- schema ------------------------------------------------------------ */

enum key_id {
        K_POLL_INTERVAL,
        K_MAX_CONCURRENT_JOBS,
        K_STATE_DIR,
        K_DEFAULTS,
        K_DATABASES,
        K_PATH,
        K_VACUUM,
        K_ANALYZE,
        K_RETRY,
        K_CHECKPOINT,
        K_LIMITS,
        K_DEEP_SCAN,
        K_THRESHOLD,
        K_URGENT_THRESHOLD,
        K_WINDOW,
        K_MIN_INTERVAL,
        K_MIN_RECLAIM,
        K_DISK_SPACE_FACTOR,
        K_INTEGRITY,
        K_MODE,
        K_ALLOW_ROWID_CHANGE,
        K_UNUSED_THRESHOLD,
        K_DEEP_SCAN_INTERVAL,
        K_IN_WINDOW,
        K_INTERVAL,
        K_ANALYSIS_LIMIT,
        K_ANALYZE_THRESHOLD,
        K_SCALE_FACTOR,
        K_LARGE_TABLE_ROWS,
        K_WAL_SIZE_LIMIT,
        K_WAL_SIZE_RATIO,
        K_WARN_AFTER,
        K_JOB_TIMEOUT,
        K_VACUUM_TIMEOUT_PER_GIB,
        K_MAX_MATCHES,
        K_BUSY_TIMEOUT,
        K_MAX_ATTEMPTS,
        K_INITIAL_BACKOFF,
        K_MAX_BACKOFF,
        K__COUNT,
};

enum vtype {
        V_DURATION,
        V_SIZE,
        V_PERCENT,
        V_WINDOW,
        V_FACTOR,
        V_INTEGRITY,
        V_MODE,
        V_BOOL,
        V_INT,
        V_PATH,
        V_MAP,
        V_SEQ,
};

struct key_def {
        enum key_id id;
        const char *name;
        enum vtype type;
        int64_t min, max; /* V_INT range; V_DURATION range in ms */
        const char *expect; /* V_INT: what the message says is expected */
        bool never;         /* V_DURATION: "never" means 0 */
};

struct level {
        const char *label; /* "in vacuum", for messages */
        const struct key_def *keys;
        size_t n_keys;
};

#define LEVEL(label, keys) { label, keys, sizeof(keys) / sizeof(keys[0]) }

static const struct key_def top_keys[] = {
        { K_POLL_INTERVAL, "poll_interval", V_DURATION, 1, (int64_t)MAX_DURATION_MS, NULL, false },
        { K_MAX_CONCURRENT_JOBS, "max_concurrent_jobs", V_INT, 1, 1024, "a whole number from 1 to 1024", false },
        { K_STATE_DIR, "state_dir", V_PATH, 0, 0, NULL, false },
        { K_DEFAULTS, "defaults", V_MAP, 0, 0, NULL, false },
        { K_DATABASES, "databases", V_SEQ, 0, 0, NULL, false },
};
static const struct key_def defaults_keys[] = {
        { K_VACUUM, "vacuum", V_MAP, 0, 0, NULL, false },
        { K_ANALYZE, "analyze", V_MAP, 0, 0, NULL, false },
        { K_RETRY, "retry", V_MAP, 0, 0, NULL, false },
        { K_CHECKPOINT, "checkpoint", V_MAP, 0, 0, NULL, false },
        { K_LIMITS, "limits", V_MAP, 0, 0, NULL, false },
        { K_DEEP_SCAN, "deep_scan", V_MAP, 0, 0, NULL, false },
};
static const struct key_def db_keys[] = {
        { K_PATH, "path", V_PATH, 0, 0, NULL, false },
        { K_VACUUM, "vacuum", V_MAP, 0, 0, NULL, false },
        { K_ANALYZE, "analyze", V_MAP, 0, 0, NULL, false },
        { K_RETRY, "retry", V_MAP, 0, 0, NULL, false },
        { K_CHECKPOINT, "checkpoint", V_MAP, 0, 0, NULL, false },
        { K_LIMITS, "limits", V_MAP, 0, 0, NULL, false },
        { K_DEEP_SCAN, "deep_scan", V_MAP, 0, 0, NULL, false },
};
static const struct key_def vacuum_keys[] = {
        { K_THRESHOLD, "threshold", V_PERCENT, 0, 0, NULL, false },
        { K_URGENT_THRESHOLD, "urgent_threshold", V_PERCENT, 0, 0, NULL, false },
        { K_WINDOW, "window", V_WINDOW, 0, 0, NULL, false },
        { K_MIN_INTERVAL, "min_interval", V_DURATION, 0, (int64_t)MAX_DURATION_MS, NULL, false },
        { K_MIN_RECLAIM, "min_reclaim", V_SIZE, 0, 0, NULL, false },
        { K_DISK_SPACE_FACTOR, "disk_space_factor", V_FACTOR, 0, 0, NULL, false },
        { K_INTEGRITY, "integrity", V_INTEGRITY, 0, 0, NULL, false },
        { K_MODE, "mode", V_MODE, 0, 0, NULL, false },
        { K_ALLOW_ROWID_CHANGE, "allow_rowid_change", V_BOOL, 0, 0, NULL, false },
        { K_UNUSED_THRESHOLD, "unused_threshold", V_PERCENT, 0, 0, NULL, false },
};
static const struct key_def deep_scan_keys[] = {
        { K_DEEP_SCAN_INTERVAL, "interval", V_DURATION, 0, (int64_t)MAX_DURATION_MS, NULL, true },
        { K_IN_WINDOW, "in_window", V_BOOL, 0, 0, NULL, false },
};
static const struct key_def analyze_keys[] = {
        { K_INTERVAL, "interval", V_DURATION, 0, (int64_t)MAX_DURATION_MS, NULL, true },
        { K_ANALYSIS_LIMIT, "analysis_limit", V_INT, 0, INT_MAX, "0 (no limit) or a positive whole number", false },
        { K_ANALYZE_THRESHOLD, "threshold", V_INT, 0, INT64_MAX, "a whole number of rows, 0 or more", false },
        { K_SCALE_FACTOR, "scale_factor", V_PERCENT, 0, 0, NULL, false },
        { K_LARGE_TABLE_ROWS, "large_table_rows", V_INT, 0, INT64_MAX, "a whole number of rows, 0 or more", false },
};
static const struct key_def checkpoint_keys[] = {
        { K_WAL_SIZE_LIMIT, "wal_size_limit", V_SIZE, 0, 0, NULL, false },
        { K_WAL_SIZE_RATIO, "wal_size_ratio", V_PERCENT, 0, 0, NULL, false },
        { K_WARN_AFTER, "warn_after", V_DURATION, 0, (int64_t)MAX_DURATION_MS, NULL, false },
};
static const struct key_def limits_keys[] = {
        { K_JOB_TIMEOUT, "job_timeout", V_DURATION, 1, (int64_t)MAX_DURATION_MS, NULL, false },
        { K_VACUUM_TIMEOUT_PER_GIB, "vacuum_timeout_per_gib", V_DURATION, 0, (int64_t)MAX_DURATION_MS, NULL, false },
        { K_MAX_MATCHES, "max_matches", V_INT, 1, 100000000, "a whole number from 1 to 100000000", false },
};
static const struct key_def retry_keys[] = {
        { K_BUSY_TIMEOUT, "busy_timeout", V_DURATION, 0, (int64_t)MAX_BUSY_TIMEOUT_MS, NULL, false },
        { K_MAX_ATTEMPTS, "max_attempts", V_INT, 1, 1000, "a whole number from 1 to 1000", false },
        { K_INITIAL_BACKOFF, "initial_backoff", V_DURATION, 0, (int64_t)MAX_DURATION_MS, NULL, false },
        { K_MAX_BACKOFF, "max_backoff", V_DURATION, 0, (int64_t)MAX_DURATION_MS, NULL, false },
};

static const struct level top_level = LEVEL("at top level", top_keys);
static const struct level defaults_level = LEVEL("in defaults", defaults_keys);
static const struct level db_level = LEVEL("in databases entry", db_keys);
static const struct level vacuum_level = LEVEL("in vacuum", vacuum_keys);
static const struct level analyze_level = LEVEL("in analyze", analyze_keys);
static const struct level retry_level = LEVEL("in retry", retry_keys);
static const struct level checkpoint_level = LEVEL("in checkpoint", checkpoint_keys);
static const struct level limits_level = LEVEL("in limits", limits_keys);
static const struct level deep_scan_level = LEVEL("in deep_scan", deep_scan_keys);

/* The sections that defaults: and a databases entry share, plus where
 * each effective value was set (NULL: inherited). */
struct settings {
        struct vacuum_conf vacuum;
        struct analyze_conf analyze;
        struct retry_conf retry;
        struct checkpoint_conf checkpoint;
        struct limits_conf limits;
        struct deep_scan_conf deep_scan;
        yaml_node_t *src[K__COUNT];
};

union value {
        uint64_t u;
        int64_t i;
        double d;
        bool b;
        struct window w;
        int e;
        const char *s;
};

/* ---- diagnostics -------------------------------------------------------- */

struct msg {
        unsigned line, column; /* 0: about the whole file */
        size_t seq;
        char *text;
};

struct loader {
        const char *name;
        yaml_document_t *doc;
        struct conf *conf;
        size_t dbs_cap;            /* allocated length of conf->dbs */
        yaml_mark_t *path_marks;   /* where each conf->dbs[i].path was written */
        struct msg *msgs;
        size_t n_msgs;
        unsigned n_errors;
        bool oom;
        bool gave_up;
};

static void add_msg(struct loader *l, unsigned line, unsigned column, const char *fmt, va_list ap)
        __attribute__((format(printf, 4, 0)));

static void add_msg(struct loader *l, unsigned line, unsigned column, const char *fmt, va_list ap)
{
        char *body = NULL, *text = NULL;
        struct msg *m;
        int r;

        l->n_errors++;
        if (l->gave_up)
                return;
        if (vasprintf(&body, fmt, ap) < 0) {
                l->oom = true;
                return;
        }
        if (line > 0)
                r = asprintf(&text, "%s:%u:%u: %s", l->name, line, column, body);
        else
                r = asprintf(&text, "%s: %s", l->name, body);
        free(body);
        if (r < 0) {
                l->oom = true;
                return;
        }
        /* an anchored mapping used by several entries has its errors
         * found once per use; the user needs to hear it once */
        for (size_t i = 0; i < l->n_msgs; i++)
                if (strcmp(l->msgs[i].text, text) == 0) {
                        free(text);
                        return;
                }
        if (l->n_msgs == MAX_ERRORS) {
                free(text);
                l->gave_up = true;
                r = asprintf(&text, "%s: too many errors, stopping after %d", l->name, MAX_ERRORS);
                if (r < 0) {
                        l->oom = true;
                        return;
                }
                line = UINT_MAX;
        }
        m = realloc(l->msgs, (l->n_msgs + 1) * sizeof(*m));
        if (!m) {
                free(text);
                l->oom = true;
                return;
        }
        l->msgs = m;
        l->msgs[l->n_msgs] = (struct msg){ line, column, l->n_msgs, text };
        l->n_msgs++;
}

static void err_file(struct loader *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void err_file(struct loader *l, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        add_msg(l, 0, 0, fmt, ap);
        va_end(ap);
}

static void err_at_mark(struct loader *l, yaml_mark_t mark, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
static void err_at_mark(struct loader *l, yaml_mark_t mark, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        add_msg(l, (unsigned)mark.line + 1, (unsigned)mark.column + 1, fmt, ap);
        va_end(ap);
}

#define err_at(l, node, ...) err_at_mark((l), (node)->start_mark, __VA_ARGS__)

static int msg_cmp(const void *a, const void *b)
{
        const struct msg *x = a, *y = b;

        if (x->line != y->line)
                return x->line < y->line ? -1 : 1;
        if (x->column != y->column)
                return x->column < y->column ? -1 : 1;
        return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Hand the messages over in file order, which is how a user reads them. */
static void flush_msgs(struct loader *l, struct conf_diag *diag)
{
        size_t i = 0;

        if (l->n_msgs > 1)
                qsort(l->msgs, l->n_msgs, sizeof(l->msgs[0]), msg_cmp);
        if (diag && l->n_msgs > 0) {
                char **v = realloc(diag->msgs, (diag->n + l->n_msgs) * sizeof(*v));

                if (v) {
                        diag->msgs = v;
                        for (; i < l->n_msgs; i++)
                                diag->msgs[diag->n++] = l->msgs[i].text;
                } else {
                        l->oom = true;
                }
        }
        for (; i < l->n_msgs; i++)
                free(l->msgs[i].text);
        free(l->msgs);
        l->msgs = NULL;
        l->n_msgs = 0;
}

/* ---- node helpers ------------------------------------------------------- */

static yaml_node_t *node_at(struct loader *l, int index)
{
        return yaml_document_get_node(l->doc, index);
}

static const char *scalar(const yaml_node_t *n)
{
        return (const char *)n->data.scalar.value;
}

/* A plain empty value, ~ or null: YAML's null, which for a section means
 * "nothing overridden" (e.g. every key below it commented out). */
static bool is_null(const yaml_node_t *n)
{
        const char *s;

        if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
                return false;
        s = scalar(n);
        return !*s || strcmp(s, "~") == 0 || strcmp(s, "null") == 0 || strcmp(s, "Null") == 0 ||
               strcmp(s, "NULL") == 0;
}

/* A scalar for a message: quoted by the caller, control characters
 * replaced, long values cut. */
static const char *show(const char *s, char *buf, size_t len)
{
        size_t i = 0;

        for (; *s && i + 4 < len; s++)
                buf[i++] = ((unsigned char)*s < 0x20 || *s == 0x7f) ? '?' : *s;
        if (*s) {
                memcpy(buf + i, "...", 3);
                i += 3;
        }
        buf[i] = '\0';
        return buf;
}

static const char *found(const yaml_node_t *n, char *buf, size_t len)
{
        char v[64];

        switch (n->type) {
        case YAML_SEQUENCE_NODE:
                return "a list";
        case YAML_MAPPING_NODE:
                return "a mapping";
        case YAML_SCALAR_NODE:
                if (is_null(n))
                        return "an empty value";
                snprintf(buf, len, "'%s'", show(scalar(n), v, sizeof(v)));
                return buf;
        case YAML_NO_NODE:
                break;
        }
        return "nothing";
}

/* ---- alias bombs and cycles --------------------------------------------- */

struct walk {
        uint64_t *size;
        unsigned char *state; /* 0 new, 1 on the stack, 2 done */
};

/* The number of nodes below and including node index, with every alias
 * expanded; refuses cycles, deep nesting and oversized expansions. */
static int expanded_size(struct loader *l, struct walk *w, int index, unsigned depth, uint64_t *ret)
{
        yaml_node_t *n = node_at(l, index);
        size_t i = (size_t)index - 1;
        uint64_t sum = 1, sub = 0;
        int r;

        if (!n)
                return -EINVAL;
        if (w->state[i] == 2) {
                *ret = w->size[i];
                return 0;
        }
        if (w->state[i] == 1) {
                err_at(l, n, "recursive alias: this node contains itself");
                return -ELOOP;
        }
        if (depth > MAX_DEPTH) {
                err_at(l, n, "nesting deeper than %d levels: not a sqlite-maintd configuration", MAX_DEPTH);
                return -E2BIG;
        }
        w->state[i] = 1;
        if (n->type == YAML_SEQUENCE_NODE) {
                yaml_node_item_t *it = n->data.sequence.items.start;

                for (; it < n->data.sequence.items.top; it++) {
                        r = expanded_size(l, w, *it, depth + 1, &sub);
                        if (r < 0)
                                return r;
                        sum += sub;
                        if (sum > MAX_EXPANDED_NODES)
                                break;
                }
        } else if (n->type == YAML_MAPPING_NODE) {
                for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
                        r = expanded_size(l, w, p->key, depth + 1, &sub);
                        if (r < 0)
                                return r;
                        sum += sub;
                        r = expanded_size(l, w, p->value, depth + 1, &sub);
                        if (r < 0)
                                return r;
                        sum += sub;
                        if (sum > MAX_EXPANDED_NODES)
                                break;
                }
        }
        if (sum > MAX_EXPANDED_NODES) {
                err_at(l, n, "aliases expand to more than %u nodes here: refusing a possible alias bomb",
                       MAX_EXPANDED_NODES);
                return -E2BIG;
        }
        w->state[i] = 2;
        w->size[i] = sum;
        *ret = sum;
        return 0;
}

static int check_expansion(struct loader *l, yaml_node_t *root)
{
        size_t n = (size_t)(l->doc->nodes.top - l->doc->nodes.start);
        struct walk w;
        uint64_t total;
        int r;

        w.size = calloc(n, sizeof(*w.size));
        w.state = calloc(n, 1);
        if (!w.size || !w.state) {
                r = -ENOMEM;
        } else {
                /* the root is node 1 */
                r = expanded_size(l, &w, (int)(root - l->doc->nodes.start) + 1, 0, &total);
        }
        free(w.size);
        free(w.state);
        return r;
}

/* ---- mappings, with merge keys and duplicates ---------------------------- */

struct pairs {
        yaml_node_t *key[K__COUNT];
        yaml_node_t *value[K__COUNT];
        const struct key_def *def[K__COUNT];
        enum key_id order[K__COUNT];
        size_t n;
};

static const struct key_def *find_key(const struct level *lv, const char *name)
{
        for (size_t i = 0; i < lv->n_keys; i++)
                if (strcmp(lv->keys[i].name, name) == 0)
                        return &lv->keys[i];
        return NULL;
}

static char lower(char ch)
{
        return ch >= 'A' && ch <= 'Z' ? (char)(ch - 'A' + 'a') : ch;
}

/* Levenshtein distance, ignoring case; names longer than 63 are "far". */
static unsigned distance(const char *a, const char *b)
{
        unsigned row[64], la = (unsigned)strlen(a), lb = (unsigned)strlen(b);

        if (la > 63 || lb > 63)
                return UINT_MAX;
        for (unsigned j = 0; j <= lb; j++)
                row[j] = j;
        for (unsigned i = 1; i <= la; i++) {
                unsigned diag = row[0];

                row[0] = i;
                for (unsigned j = 1; j <= lb; j++) {
                        unsigned up = row[j];
                        unsigned best = diag + (lower(a[i - 1]) != lower(b[j - 1]));

                        if (up + 1 < best)
                                best = up + 1;
                        if (row[j - 1] + 1 < best)
                                best = row[j - 1] + 1;
                        diag = up;
                        row[j] = best;
                }
        }
        return row[lb];
}

/* The section a key of another level belongs to, for "put it under". */
static const char *home_section(const struct level *lv, const char *name)
{
        static const struct {
                const struct level *lv;
                const char *name;
        } sections[] = {
                { &vacuum_level, "vacuum" },
                { &analyze_level, "analyze" },
                { &retry_level, "retry" },
                { &checkpoint_level, "checkpoint" },
                { &limits_level, "limits" },
                { &deep_scan_level, "deep_scan" },
        };

        for (size_t i = 0; i < sizeof(sections) / sizeof(sections[0]); i++)
                if (sections[i].lv != lv && find_key(sections[i].lv, name))
                        return sections[i].name;
        return NULL;
}

static void unknown_key(struct loader *l, const struct level *lv, const yaml_node_t *key)
{
        const char *name = scalar(key), *best = NULL, *home;
        unsigned best_d = 3;
        char v[64], list[256] = "";

        /* Past the message limit only the count matters: an alias used a
         * thousand times must not cost a thousand hint searches per key. */
        if (l->gave_up) {
                l->n_errors++;
                return;
        }
        for (size_t i = 0; i < lv->n_keys; i++) {
                unsigned d = distance(name, lv->keys[i].name);

                if (d < best_d) {
                        best_d = d;
                        best = lv->keys[i].name;
                }
        }
        show(name, v, sizeof(v));
        if (best) {
                err_at(l, key, "unknown key '%s' %s, did you mean '%s'?", v, lv->label, best);
                return;
        }
        home = home_section(lv, name);
        if (home && lv == &top_level) {
                err_at(l, key, "unknown key '%s' %s, did you mean to put it under 'defaults: %s:'?", v,
                       lv->label, home);
                return;
        }
        if (home) {
                err_at(l, key, "unknown key '%s' %s, did you mean to put it under '%s:'?", v, lv->label, home);
                return;
        }
        if (lv == &top_level && find_key(&defaults_level, name)) {
                err_at(l, key, "unknown key '%s' %s, did you mean to put it under 'defaults:'?", v, lv->label);
                return;
        }
        for (size_t i = 0; i < lv->n_keys; i++) {
                if (i > 0)
                        strcat(list, ", ");
                strcat(list, lv->keys[i].name);
        }
        err_at(l, key, "unknown key '%s' %s: expected one of %s", v, lv->label, list);
}

static void collect_pairs(struct loader *l, yaml_node_t *map, const struct level *lv, struct pairs *out,
                          unsigned depth);

static void merge_one(struct loader *l, yaml_node_t *src, const struct level *lv, struct pairs *out,
                      unsigned depth)
{
        char buf[80];

        if (src->type == YAML_MAPPING_NODE)
                collect_pairs(l, src, lv, out, depth + 1);
        else
                err_at(l, src, "invalid merge '<<' %s: expected a mapping or a list of mappings, found %s",
                       lv->label, found(src, buf, sizeof(buf)));
}

/* The known keys of mapping map into out, checking each key once; keys
 * already in out (written in an outer mapping, or merged earlier) win. */
static void collect_pairs(struct loader *l, yaml_node_t *map, const struct level *lv, struct pairs *out,
                          unsigned depth)
{
        yaml_node_t *seen[K__COUNT] = { NULL };
        yaml_node_t *merge = NULL;
        char buf[80];

        if (depth > MAX_DEPTH)
                return; /* expanded_size() has refused such a document */
        for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
                yaml_node_t *k = node_at(l, p->key), *v = node_at(l, p->value);
                const struct key_def *def;

                if (!k || !v)
                        continue;
                if (k->type != YAML_SCALAR_NODE) {
                        err_at(l, k, "invalid key %s: expected a name, found %s", lv->label,
                               found(k, buf, sizeof(buf)));
                        continue;
                }
                if (k->data.scalar.style == YAML_PLAIN_SCALAR_STYLE && strcmp(scalar(k), "<<") == 0) {
                        if (merge)
                                err_at(l, k, "duplicate key '<<' %s (first at %zu:%zu)", lv->label,
                                       merge->start_mark.line + 1, merge->start_mark.column + 1);
                        else
                                merge = k;
                        continue;
                }
                /* top-level "x-..." keys hold anchors for later aliases,
                 * as in docker-compose files */
                if (lv == &top_level && strncmp(scalar(k), "x-", 2) == 0)
                        continue;
                def = find_key(lv, scalar(k));
                if (!def) {
                        unknown_key(l, lv, k);
                        continue;
                }
                if (seen[def->id]) {
                        err_at(l, k, "duplicate key '%s' %s (first at %zu:%zu)", def->name, lv->label,
                               seen[def->id]->start_mark.line + 1, seen[def->id]->start_mark.column + 1);
                        continue;
                }
                seen[def->id] = k;
                if (out->key[def->id])
                        continue;
                out->key[def->id] = k;
                out->value[def->id] = v;
                out->def[def->id] = def;
                out->order[out->n++] = def->id;
        }
        if (!merge)
                return;
        /* merged after the explicit keys, so that those win */
        for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
                yaml_node_t *src;

                if (node_at(l, p->key) != merge)
                        continue;
                src = node_at(l, p->value);
                if (!src)
                        break;
                if (src->type == YAML_SEQUENCE_NODE) {
                        for (yaml_node_item_t *it = src->data.sequence.items.start;
                             it < src->data.sequence.items.top; it++) {
                                yaml_node_t *item = node_at(l, *it);

                                if (item)
                                        merge_one(l, item, lv, out, depth);
                        }
                } else {
                        merge_one(l, src, lv, out, depth);
                }
                break;
        }
}

/* ---- values --------------------------------------------------------------- */

static const char *type_noun(const struct key_def *k)
{
        switch (k->type) {
        case V_DURATION:
                return k->never ? "a duration such as 1d, or never" : "a duration such as 5m";
        case V_SIZE:
                return "a size such as 1MiB";
        case V_PERCENT:
                return "a percentage such as 20%";
        case V_WINDOW:
                return "a window such as \"02:00-05:00\", or always";
        case V_FACTOR:
                return "a number such as 2.0";
        case V_INTEGRITY:
                return "none, quick or full";
        case V_MODE:
                return "full or incremental";
        case V_BOOL:
                return "true or false";
        case V_INT:
                return k->expect;
        case V_PATH:
                return "an absolute path";
        case V_MAP:
                return "a mapping";
        case V_SEQ:
                return "a list";
        }
        return "a value";
}

static bool parse_duration_value(struct loader *l, const struct key_def *k, yaml_node_t *n, const char *s,
                                 const char *v, uint64_t *ret)
{
        const char *expect = k->never ? DURATION_EXPECT ", 0 or never" : DURATION_EXPECT;
        char limit[32];
        uint64_t ms = 0;

        if (k->never && strcmp(s, "never") == 0) {
                *ret = 0;
                return true;
        }
        switch (duration_reason(s, &ms)) {
        case PR_OK:
                break;
        case PR_NEGATIVE:
                err_at(l, n, "invalid duration '%s': negative durations are not allowed, %s", v, expect);
                return false;
        case PR_FRACTION:
                err_at(l, n, "invalid duration '%s': fractions are not supported, use a smaller unit (e.g. 90m for 1.5h)",
                       v);
                return false;
        case PR_NO_UNIT:
                err_at(l, n, "invalid duration '%s': a unit is required, %s", v, expect);
                return false;
        case PR_OVERFLOW:
                ms = UINT64_MAX;
                break;
        default:
                err_at(l, n, "invalid duration '%s': %s", v, expect);
                return false;
        }
        if (ms < (uint64_t)k->min) {
                err_at(l, n, "invalid %s '%s': expected a duration greater than 0", k->name, v);
                return false;
        }
        if (ms > (uint64_t)k->max) {
                err_at(l, n, "invalid %s '%s': too large, expected at most %s", k->name, v,
                       conf_format_duration((uint64_t)k->max, limit, sizeof(limit)));
                return false;
        }
        *ret = ms;
        return true;
}

/* Parse the scalar n for key k into *val; false (and a message) if it is
 * not a valid value for k. */
static bool parse_value(struct loader *l, const struct key_def *k, yaml_node_t *n, union value *val)
{
        char v[64], buf[80];
        const char *s, *end;
        enum reason r;
        uint64_t u;
        int64_t i;
        bool neg;

        if (n->type != YAML_SCALAR_NODE) {
                err_at(l, n, "invalid value for '%s': expected %s, found %s", k->name, type_noun(k),
                       found(n, buf, sizeof(buf)));
                return false;
        }
        s = scalar(n);
        show(s, v, sizeof(v));
        if (strlen(s) != n->data.scalar.length) {
                err_at(l, n, "invalid value for '%s': contains a NUL character", k->name);
                return false;
        }
        if (!*s && n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE) {
                err_at(l, n, "missing value for '%s': expected %s", k->name, type_noun(k));
                return false;
        }
        switch (k->type) {
        case V_DURATION:
                return parse_duration_value(l, k, n, s, v, &val->u);
        case V_SIZE:
                r = size_reason(s, &val->u);
                if (r == PR_OVERFLOW)
                        err_at(l, n, "invalid size '%s': too large, expected at most 16777215TiB", v);
                else if (r == PR_FRACTION)
                        err_at(l, n, "invalid size '%s': fractions are not supported, use a smaller unit (e.g. 1536KiB for 1.5MiB)",
                               v);
                else if (r != PR_OK)
                        err_at(l, n, "invalid size '%s': %s", v, SIZE_EXPECT);
                return r == PR_OK;
        case V_PERCENT:
                r = percent_reason(s, &val->d);
                if (r == PR_RANGE || r == PR_OVERFLOW || r == PR_NEGATIVE)
                        err_at(l, n, "invalid percentage '%s': out of range, %s", v, PERCENT_EXPECT);
                else if (r != PR_OK)
                        err_at(l, n, "invalid percentage '%s': %s", v, PERCENT_EXPECT);
                return r == PR_OK;
        case V_WINDOW:
                r = window_reason(s, &val->w);
                if (r == PR_EQUAL)
                        err_at(l, n, "invalid window '%s': start and end are equal, use always for no window", v);
                else if (r != PR_OK)
                        err_at(l, n, "invalid window '%s': %s", v, WINDOW_EXPECT);
                return r == PR_OK;
        case V_FACTOR:
                r = parse_decimal(s, &val->d, &end);
                if (r != PR_OK || *end != '\0' || val->d < 1.0) {
                        err_at(l, n, "invalid %s '%s': expected a number of at least 1 (e.g. 2.0)", k->name, v);
                        return false;
                }
                return true;
        case V_INTEGRITY:
                if (strcmp(s, "none") == 0)
                        val->e = INTEGRITY_NONE;
                else if (strcmp(s, "quick") == 0)
                        val->e = INTEGRITY_QUICK;
                else if (strcmp(s, "full") == 0)
                        val->e = INTEGRITY_FULL;
                else {
                        err_at(l, n, "invalid integrity '%s': expected none, quick or full", v);
                        return false;
                }
                return true;
        case V_MODE:
                if (strcmp(s, "full") == 0)
                        val->e = VACUUM_MODE_FULL;
                else if (strcmp(s, "incremental") == 0)
                        val->e = VACUUM_MODE_INCREMENTAL;
                else {
                        err_at(l, n, "invalid mode '%s': expected full or incremental", v);
                        return false;
                }
                return true;
        case V_BOOL:
                /* YAML 1.2's core schema words, and 1.1's yes/no/on/off */
                if (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "TRUE") || !strcmp(s, "yes") ||
                    !strcmp(s, "on"))
                        val->b = true;
                else if (!strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "FALSE") || !strcmp(s, "no") ||
                         !strcmp(s, "off"))
                        val->b = false;
                else {
                        err_at(l, n, "invalid %s '%s': expected true or false", k->name, v);
                        return false;
                }
                return true;
        case V_INT:
                neg = *s == '-';
                r = parse_digits(s + neg, &u, &end);
                if (r == PR_OK && *end == '\0' && u <= (uint64_t)INT64_MAX) {
                        i = neg ? -(int64_t)u : (int64_t)u;
                        if (i >= k->min && i <= k->max) {
                                val->i = i;
                                return true;
                        }
                }
                err_at(l, n, "invalid %s '%s': expected %s", k->name, v, k->expect);
                return false;
        case V_PATH:
                if (s[0] != '/') {
                        if (k->id == K_PATH)
                                err_at(l, n, "relative database path '%s': expected an absolute path starting with /",
                                       v);
                        else
                                err_at(l, n, "invalid %s '%s': expected an absolute path starting with /", k->name,
                                       v);
                        return false;
                }
                val->s = s;
                return true;
        case V_MAP:
        case V_SEQ:
                break;
        }
        return false;
}

static void settings_set(struct settings *st, enum key_id id, const union value *v)
{
        switch (id) {
        case K_THRESHOLD:
                st->vacuum.threshold = v->d;
                break;
        case K_URGENT_THRESHOLD:
                st->vacuum.urgent_threshold = v->d;
                break;
        case K_WINDOW:
                st->vacuum.window = v->w;
                break;
        case K_MIN_INTERVAL:
                st->vacuum.min_interval_ms = v->u;
                break;
        case K_MIN_RECLAIM:
                st->vacuum.min_reclaim = v->u;
                break;
        case K_DISK_SPACE_FACTOR:
                st->vacuum.disk_space_factor = v->d;
                break;
        case K_INTEGRITY:
                st->vacuum.integrity = (enum integrity_level)v->e;
                break;
        case K_MODE:
                st->vacuum.mode = (enum vacuum_mode)v->e;
                break;
        case K_ALLOW_ROWID_CHANGE:
                st->vacuum.allow_rowid_change = v->b;
                break;
        case K_UNUSED_THRESHOLD:
                st->vacuum.unused_threshold = v->d;
                break;
        case K_DEEP_SCAN_INTERVAL:
                st->deep_scan.interval_ms = v->u;
                break;
        case K_IN_WINDOW:
                st->deep_scan.in_window = v->b;
                break;
        case K_ANALYZE_THRESHOLD:
                st->analyze.threshold_rows = (uint64_t)v->i;
                break;
        case K_SCALE_FACTOR:
                st->analyze.scale_factor_percent = v->d;
                break;
        case K_LARGE_TABLE_ROWS:
                st->analyze.large_table_rows = (uint64_t)v->i;
                break;
        case K_WAL_SIZE_LIMIT:
                st->checkpoint.wal_size_limit = v->u;
                break;
        case K_WAL_SIZE_RATIO:
                st->checkpoint.wal_size_ratio = v->d;
                break;
        case K_WARN_AFTER:
                st->checkpoint.warn_after_ms = v->u;
                break;
        case K_JOB_TIMEOUT:
                st->limits.job_timeout_ms = v->u;
                break;
        case K_VACUUM_TIMEOUT_PER_GIB:
                st->limits.vacuum_timeout_per_gib_ms = v->u;
                break;
        case K_MAX_MATCHES:
                st->limits.max_matches = (uint64_t)v->i;
                break;
        case K_INTERVAL:
                st->analyze.interval_ms = v->u;
                break;
        case K_ANALYSIS_LIMIT:
                st->analyze.analysis_limit = (int)v->i;
                break;
        case K_BUSY_TIMEOUT:
                st->retry.busy_timeout_ms = v->u;
                break;
        case K_MAX_ATTEMPTS:
                st->retry.max_attempts = (int)v->i;
                break;
        case K_INITIAL_BACKOFF:
                st->retry.initial_backoff_ms = v->u;
                break;
        case K_MAX_BACKOFF:
                st->retry.max_backoff_ms = v->u;
                break;
        default:
                break;
        }
}

/* The pairs of mapping n, which key k holds; false when n is not one (a
 * null counts as an empty mapping). */
static bool section_pairs(struct loader *l, const struct key_def *k, yaml_node_t *n, const struct level *lv,
                          struct pairs *p)
{
        char buf[80];

        *p = (struct pairs){ .n = 0 };
        if (is_null(n))
                return true;
        if (n->type != YAML_MAPPING_NODE) {
                err_at(l, n, "invalid value for '%s': expected a mapping, found %s", k->name,
                       found(n, buf, sizeof(buf)));
                return false;
        }
        collect_pairs(l, n, lv, p, 0);
        return true;
}

/* One vacuum:, analyze:, retry: or checkpoint: mapping applied over st. */
static void apply_section(struct loader *l, const struct key_def *k, yaml_node_t *n, struct settings *st)
{
        const struct level *lv = k->id == K_VACUUM     ? &vacuum_level
                                 : k->id == K_ANALYZE  ? &analyze_level
                                 : k->id == K_RETRY    ? &retry_level
                                 : k->id == K_LIMITS   ? &limits_level
                                 : k->id == K_DEEP_SCAN ? &deep_scan_level
                                                       : &checkpoint_level;
        struct pairs p;
        union value v;

        if (!section_pairs(l, k, n, lv, &p))
                return;
        for (size_t i = 0; i < p.n; i++) {
                enum key_id id = p.order[i];

                if (parse_value(l, p.def[id], p.value[id], &v)) {
                        settings_set(st, id, &v);
                        st->src[id] = p.value[id];
                }
        }
}

static const char *pct(double d, char *buf, size_t len)
{
        snprintf(buf, len, "%g%%", d);
        return buf;
}

/* Rules between keys, checked on the effective values. A value inherited
 * from defaults: is not blamed again in every databases entry. */
static void check_settings(struct loader *l, const struct settings *st)
{
        char a[32], b[32];

        if (st->vacuum.urgent_threshold < st->vacuum.threshold) {
                if (st->src[K_URGENT_THRESHOLD])
                        err_at(l, st->src[K_URGENT_THRESHOLD],
                               "urgent_threshold %s is below threshold %s: expected a value at or above threshold",
                               pct(st->vacuum.urgent_threshold, a, sizeof(a)),
                               pct(st->vacuum.threshold, b, sizeof(b)));
                else if (st->src[K_THRESHOLD])
                        err_at(l, st->src[K_THRESHOLD],
                               "threshold %s is above urgent_threshold %s: expected a value at or below urgent_threshold",
                               pct(st->vacuum.threshold, a, sizeof(a)),
                               pct(st->vacuum.urgent_threshold, b, sizeof(b)));
        }
        if (st->retry.max_backoff_ms < st->retry.initial_backoff_ms) {
                if (st->src[K_MAX_BACKOFF])
                        err_at(l, st->src[K_MAX_BACKOFF],
                               "max_backoff %s is below initial_backoff %s: expected a value at or above initial_backoff",
                               conf_format_duration(st->retry.max_backoff_ms, a, sizeof(a)),
                               conf_format_duration(st->retry.initial_backoff_ms, b, sizeof(b)));
                else if (st->src[K_INITIAL_BACKOFF])
                        err_at(l, st->src[K_INITIAL_BACKOFF],
                               "initial_backoff %s is above max_backoff %s: expected a value at or below max_backoff",
                               conf_format_duration(st->retry.initial_backoff_ms, a, sizeof(a)),
                               conf_format_duration(st->retry.max_backoff_ms, b, sizeof(b)));
        }
}

/* The vacuum:, analyze:, retry: and checkpoint: keys of a defaults: or
 * databases entry mapping. */
static void apply_sections(struct loader *l, const struct pairs *p, struct settings *st)
{
        for (size_t i = 0; i < p->n; i++) {
                enum key_id id = p->order[i];

                if (id == K_VACUUM || id == K_ANALYZE || id == K_RETRY || id == K_CHECKPOINT || id == K_LIMITS ||
                    id == K_DEEP_SCAN)
                        apply_section(l, p->def[id], p->value[id], st);
        }
}

static bool is_glob(const char *s)
{
        return strpbrk(s, "*?[") != NULL;
}

static int add_db(struct loader *l, yaml_node_t *entry, yaml_node_t *path_node, const char *path,
                  const struct settings *st)
{
        struct conf *c = l->conf;
        struct db_conf *d;

        if (c->n_dbs == l->dbs_cap) {
                size_t cap = l->dbs_cap ? 2 * l->dbs_cap : 8;
                yaml_mark_t *m;

                d = realloc(c->dbs, cap * sizeof(*d));
                if (!d)
                        return -ENOMEM;
                c->dbs = d;
                m = realloc(l->path_marks, cap * sizeof(*m));
                if (!m)
                        return -ENOMEM;
                l->path_marks = m;
                l->dbs_cap = cap;
        }
        l->path_marks[c->n_dbs] = path_node->start_mark;
        d = &c->dbs[c->n_dbs];
        *d = (struct db_conf){
                .path = strdup(path),
                .is_glob = is_glob(path),
                .line = (unsigned)entry->start_mark.line + 1,
                .column = (unsigned)entry->start_mark.column + 1,
                .vacuum = st->vacuum,
                .analyze = st->analyze,
                .retry = st->retry,
                .checkpoint = st->checkpoint,
                .limits = st->limits,
                .deep_scan = st->deep_scan,
        };
        if (!d->path)
                return -ENOMEM;
        c->n_dbs++;
        return 0;
}

static void load_db(struct loader *l, yaml_node_t *entry, const struct settings *defaults)
{
        struct settings st = *defaults;
        struct pairs p;
        union value v;
        yaml_node_t *pn;
        char buf[80];

        if (entry->type != YAML_MAPPING_NODE) {
                err_at(l, entry, "invalid databases entry: expected a mapping such as '- path: /var/lib/app/main.db', found %s",
                       found(entry, buf, sizeof(buf)));
                return;
        }
        memset(st.src, 0, sizeof(st.src));
        p = (struct pairs){ .n = 0 };
        collect_pairs(l, entry, &db_level, &p, 0);
        apply_sections(l, &p, &st);
        check_settings(l, &st);

        pn = p.value[K_PATH];
        if (!pn) {
                err_at(l, entry, "databases entry without 'path': expected path: /absolute/file.db");
                return;
        }
        if (!parse_value(l, p.def[K_PATH], pn, &v))
                return;
        if (add_db(l, entry, pn, v.s, &st) < 0)
                l->oom = true;
}

static int db_order_cmp(const void *a, const void *b)
{
        const struct db_conf *x = *(const struct db_conf *const *)a, *y = *(const struct db_conf *const *)b;
        int r = strcmp(x->path, y->path);

        if (r != 0)
                return r;
        return x < y ? -1 : x > y;
}

/* The same path twice is a mistake (only the first entry would ever
 * match); sorting finds it without comparing every pair. */
static void check_duplicate_paths(struct loader *l)
{
        struct conf *c = l->conf;
        const struct db_conf **v;
        char buf[64];

        if (c->n_dbs < 2)
                return;
        v = malloc(c->n_dbs * sizeof(*v));
        if (!v) {
                l->oom = true;
                return;
        }
        for (size_t i = 0; i < c->n_dbs; i++)
                v[i] = &c->dbs[i];
        qsort(v, c->n_dbs, sizeof(*v), db_order_cmp);
        for (size_t i = 1, first = 0; i < c->n_dbs; i++) {
                if (strcmp(v[i]->path, v[first]->path) != 0) {
                        first = i;
                        continue;
                }
                err_at_mark(l, l->path_marks[v[i] - c->dbs], "duplicate database path '%s' (first at %u:%u)",
                            show(v[i]->path, buf, sizeof(buf)), v[first]->line, v[first]->column);
        }
        free(v);
}

static void load_root(struct loader *l, yaml_node_t *root)
{
        struct conf *c = l->conf;
        struct settings def = { .src = { NULL } };
        struct pairs p, dp;
        yaml_node_t *dbs;
        union value v;
        char buf[80];

        if (!root || is_null(root)) {
                err_at_mark(l, root ? root->start_mark : (yaml_mark_t){ 0 },
                            "empty configuration: expected a mapping with at least a 'databases' list");
                return;
        }
        if (root->type != YAML_MAPPING_NODE) {
                err_at(l, root, "invalid configuration: expected a mapping of keys at the top level, found %s",
                       found(root, buf, sizeof(buf)));
                return;
        }
        p = (struct pairs){ .n = 0 };
        collect_pairs(l, root, &top_level, &p, 0);

        for (size_t i = 0; i < p.n; i++) {
                enum key_id id = p.order[i];

                if (p.def[id]->type == V_MAP || p.def[id]->type == V_SEQ)
                        continue;
                if (!parse_value(l, p.def[id], p.value[id], &v))
                        continue;
                if (id == K_POLL_INTERVAL) {
                        c->poll_interval_ms = v.u;
                } else if (id == K_MAX_CONCURRENT_JOBS) {
                        c->max_concurrent_jobs = (unsigned)v.i;
                } else if (id == K_STATE_DIR) {
                        char *s = strdup(v.s);

                        if (!s) {
                                l->oom = true;
                                continue;
                        }
                        free(c->state_dir);
                        c->state_dir = s;
                }
        }

        /* defaults: first, wherever it is in the file, since every
         * databases entry starts from it */
        builtin_sections(&def.vacuum, &def.analyze, &def.retry, &def.checkpoint, &def.limits, &def.deep_scan);
        if (p.value[K_DEFAULTS] &&
            section_pairs(l, p.def[K_DEFAULTS], p.value[K_DEFAULTS], &defaults_level, &dp)) {
                apply_sections(l, &dp, &def);
                check_settings(l, &def);
        }
        c->vacuum = def.vacuum;
        c->analyze = def.analyze;
        c->retry = def.retry;
        c->checkpoint = def.checkpoint;
        c->deep_scan = def.deep_scan;
        c->limits = def.limits;

        dbs = p.value[K_DATABASES];
        if (!dbs) {
                err_at(l, root, "missing 'databases': expected a list of databases to maintain");
                return;
        }
        if (is_null(dbs) || (dbs->type == YAML_SEQUENCE_NODE &&
                             dbs->data.sequence.items.start == dbs->data.sequence.items.top)) {
                err_at(l, dbs, "empty 'databases' list: expected at least one entry such as '- path: /var/lib/app/main.db'");
                return;
        }
        if (dbs->type != YAML_SEQUENCE_NODE) {
                err_at(l, dbs, "invalid value for 'databases': expected a list, found %s",
                       found(dbs, buf, sizeof(buf)));
                return;
        }
        for (yaml_node_item_t *it = dbs->data.sequence.items.start; it < dbs->data.sequence.items.top; it++) {
                yaml_node_t *entry = node_at(l, *it);

                if (entry)
                        load_db(l, entry, &def);
        }
        check_duplicate_paths(l);
}

/* ---- YAML ---------------------------------------------------------------- */

/* libyaml's reader errors carry a byte offset, not a mark. */
static yaml_mark_t mark_of_offset(const char *buf, size_t len, size_t offset)
{
        yaml_mark_t m = { 0 };

        for (size_t i = 0; i < offset && i < len; i++) {
                if (buf[i] == '\n') {
                        m.line++;
                        m.column = 0;
                } else if (((unsigned char)buf[i] & 0xc0) != 0x80) {
                        m.column++;
                }
        }
        return m;
}

static int yaml_error(struct loader *l, yaml_parser_t *parser, const char *buf, size_t len)
{
        const char *problem = parser->problem ? parser->problem : "unknown error";

        switch (parser->error) {
        case YAML_MEMORY_ERROR:
                return -ENOMEM;
        case YAML_READER_ERROR:
                if (parser->problem_value != -1)
                        err_at_mark(l, mark_of_offset(buf, len, parser->problem_offset),
                                    "invalid YAML: %s (#x%x)", problem, (unsigned)parser->problem_value);
                else
                        err_at_mark(l, mark_of_offset(buf, len, parser->problem_offset), "invalid YAML: %s",
                                    problem);
                break;
        default:
                if (parser->context)
                        err_at_mark(l, parser->problem_mark, "invalid YAML: %s (%s at %zu:%zu)", problem,
                                    parser->context, parser->context_mark.line + 1,
                                    parser->context_mark.column + 1);
                else
                        err_at_mark(l, parser->problem_mark, "invalid YAML: %s", problem);
                break;
        }
        return -EINVAL;
}

static int load_yaml(struct loader *l, const char *buf, size_t len)
{
        yaml_parser_t parser;
        yaml_document_t doc, extra;
        yaml_node_t *root;
        int r = 0;

        if (!yaml_parser_initialize(&parser))
                return -ENOMEM;
        yaml_parser_set_input_string(&parser, (const unsigned char *)buf, len);
        if (!yaml_parser_load(&parser, &doc)) {
                r = yaml_error(l, &parser, buf, len);
                yaml_parser_delete(&parser);
                return r;
        }
        l->doc = &doc;
        root = yaml_document_get_root_node(&doc);
        if (root) {
                /* libyaml reads lazily: a second document, or a syntax
                 * error after the first, only shows up on the next load */
                if (!yaml_parser_load(&parser, &extra)) {
                        r = yaml_error(l, &parser, buf, len);
                } else {
                        yaml_node_t *second = yaml_document_get_root_node(&extra);

                        if (second)
                                err_at(l, second, "a second YAML document: expected a single document");
                        yaml_document_delete(&extra);
                }
        }
        if (r == 0 && root)
                r = check_expansion(l, root);
        if (r == 0)
                load_root(l, root);
        l->doc = NULL;
        yaml_document_delete(&doc);
        yaml_parser_delete(&parser);
        return r;
}

int conf_load_buffer(const char *name, const char *buf, size_t len, struct conf **ret, struct conf_diag *diag)
{
        struct loader l = { .name = name ? name : "(config)" };
        struct conf *c;
        int r;

        if (len > CONF_MAX_FILE_SIZE) {
                err_file(&l, "configuration too large (%zu bytes): the limit is 1 MiB (%d bytes)", len,
                         CONF_MAX_FILE_SIZE);
                flush_msgs(&l, diag);
                return -EFBIG;
        }
        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        r = conf_init_defaults(c);
        if (r < 0) {
                free(c);
                return r;
        }
        free(c->file);
        c->file = strdup(l.name);
        if (!c->file) {
                conf_free(c);
                return -ENOMEM;
        }
        l.conf = c;

        r = load_yaml(&l, buf ? buf : "", buf ? len : 0);
        free(l.path_marks);
        if (r == 0 && l.n_errors > 0)
                r = -EINVAL;
        if (l.oom)
                r = -ENOMEM;
        flush_msgs(&l, diag);
        if (r < 0) {
                conf_free(c);
                return r;
        }
        *ret = c;
        return 0;
}

/* Read at most CONF_MAX_FILE_SIZE + 1 bytes from fd, so a file that grows
 * after fstat() is still caught. */
static int read_all(int fd, char **ret, size_t *ret_len)
{
        size_t cap = CONF_MAX_FILE_SIZE + 1, len = 0;
        char *buf = malloc(cap);

        if (!buf)
                return -ENOMEM;
        while (len < cap) {
                ssize_t n = read(fd, buf + len, cap - len);

                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        n = -errno;
                        free(buf);
                        return (int)n;
                }
                if (n == 0)
                        break;
                len += (size_t)n;
        }
        *ret = buf;
        *ret_len = len;
        return 0;
}

int conf_load(const char *path, struct conf **ret, struct conf_diag *diag)
{
        struct loader l = { .name = path };
        char *buf = NULL, why[512];
        struct stat st;
        size_t len = 0;
        int fd, r;

        if (!path)
                return -EINVAL;
        /* O_NONBLOCK: opening a FIFO must not hang until it has a writer */
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        if (fd < 0) {
                r = -errno;
                err_file(&l, "cannot open configuration: %s", strerror(-r));
                flush_msgs(&l, diag);
                return r;
        }
        if (fstat(fd, &st) < 0) {
                r = -errno;
                err_file(&l, "cannot stat configuration: %s", strerror(-r));
                goto out;
        }
        if (!S_ISREG(st.st_mode)) {
                r = S_ISDIR(st.st_mode) ? -EISDIR : -EINVAL;
                err_file(&l, "not a regular file%s: expected a YAML configuration file",
                         S_ISDIR(st.st_mode) ? " (a directory)" : "");
                goto out;
        }
        /* Whoever can write the configuration chooses what is opened, read
         * and written as root (StrictModes, as sshd). */
        r = util_trusted_path(path, why, sizeof(why));
        if (r == -EPERM) {
                err_file(&l, "refusing the configuration: %s; it says what sqlite-maintd opens as root, so only "
                         "root may be able to change it", why);
                goto out;
        }
        if (st.st_size > CONF_MAX_FILE_SIZE) {
                r = -EFBIG;
                err_file(&l, "configuration too large (%jd bytes): the limit is 1 MiB (%d bytes)",
                         (intmax_t)st.st_size, CONF_MAX_FILE_SIZE);
                goto out;
        }
        r = read_all(fd, &buf, &len);
        if (r < 0) {
                err_file(&l, "cannot read configuration: %s", strerror(-r));
                goto out;
        }
        close(fd);
        fd = -1;
        /* conf_load_buffer() refuses it if it grew past the limit */
        r = conf_load_buffer(path, buf, len, ret, diag);
        free(buf);
        return r;
out:
        close(fd);
        flush_msgs(&l, diag);
        return r;
}
