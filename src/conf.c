/* SPDX-License-Identifier: MIT */
/* conf: the YAML configuration file, parsed with libyaml's document API into
 * plain structs with defaults, and validated in one place. Every problem is
 * reported as "FILE:LINE:COLUMN: message"; all of them are collected, not
 * just the first.
 *
 * Every key is one row of keys[] below: where it may be written, its type,
 * the offset of its field, its bounds or words, and its built-in value as
 * the file would write it. The same rows read the file and make the
 * defaults; defaults: and each databases entry go through the same code.
 *
 * YAML merge keys ("<<: *base") are supported in every mapping, with the
 * usual semantics: keys written in the mapping itself win over merged ones,
 * and in "<<: [*a, *b]" a wins over b. A quoted "<<" is an ordinary key.
 * Top-level keys starting with "x-" are ignored: a place to define anchors. */

#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <grp.h>
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
        PR_BELOW, /* below the key's minimum */
        PR_ABOVE, /* above the key's maximum */
        PR_NOMEM,
        PR_UNKNOWN_GROUP,
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

/* Largest first: conf_format_duration() writes the first that divides. */
static const struct unit duration_units[] = {
        { "w", MS_PER_W }, { "d", MS_PER_D }, { "h", MS_PER_H }, { "m", MS_PER_M }, { "s", MS_PER_S }, { "ms", 1 },
};
/* The binary units first, largest first: conf_format_size() writes the
 * first that divides, which is at the latest B. */
static const struct unit size_units[] = {
        { "TiB", 1ull << 40 },
        { "GiB", 1ull << 30 },
        { "MiB", 1ull << 20 },
        { "KiB", 1ull << 10 },
        { "B", 1 },
        { "kB", 1000ull },
        { "MB", 1000ull * 1000 },
        { "GB", 1000ull * 1000 * 1000 },
        { "TB", 1000ull * 1000 * 1000 * 1000 },
        { "", 1 },
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
        return apply_unit(duration_units, ELEMENTSOF(duration_units), n, end, ret_ms);
}

int conf_parse_duration(const char *s, uint64_t *ret_ms)
{
        /* duration_reason() writes *ret_ms only on success */
        return s && duration_reason(s, ret_ms) == PR_OK ? 0 : -EINVAL;
}

static enum reason size_reason(const char *s, uint64_t *ret)
{
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
        return apply_unit(size_units, ELEMENTSOF(size_units), n, end, ret);
}

int conf_parse_size(const char *s, uint64_t *ret_bytes)
{
        /* size_reason() writes *ret_bytes only on success */
        return s && size_reason(s, ret_bytes) == PR_OK ? 0 : -EINVAL;
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
        /* percent_reason() writes *ret only on success */
        return s && percent_reason(s, ret) == PR_OK ? 0 : -EINVAL;
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
        /* window_reason() writes *ret only on success */
        return s && window_reason(s, ret) == PR_OK ? 0 : -EINVAL;
}

/* v as a number of the first of units that divides it exactly; zero as
 * zero. The last unit must be worth 1. */
static const char *format_units(const struct unit *units, uint64_t v, const char *zero, char *buf, size_t len)
{
        if (v == 0) {
                snprintf(buf, len, "%s", zero);
                return buf;
        }
        while (v % units->mult != 0)
                units++;
        snprintf(buf, len, "%" PRIu64 "%s", v / units->mult, units->name);
        return buf;
}

const char *conf_format_duration(uint64_t ms, char *buf, size_t len)
{
        return format_units(duration_units, ms, "0", buf, len);
}

const char *conf_format_size(uint64_t bytes, char *buf, size_t len)
{
        return format_units(size_units, bytes, "0B", buf, len);
}

/* ---- words -------------------------------------------------------------- */

/* A word a key accepts and the value it stands for. */
struct word {
        const char *name;
        int value;
};

static const struct word integrity_words[] = {
        { "none", INTEGRITY_NONE }, { "quick", INTEGRITY_QUICK }, { "full", INTEGRITY_FULL }, { NULL, 0 },
};
static const struct word mode_words[] = {
        { "full", VACUUM_MODE_FULL }, { "incremental", VACUUM_MODE_INCREMENTAL }, { NULL, 0 },
};
/* YAML 1.2's core schema words, and 1.1's yes/no/on/off */
static const struct word bool_words[] = {
        { "true", 1 },  { "True", 1 },  { "TRUE", 1 },  { "yes", 1 }, { "on", 1 },  { "false", 0 },
        { "False", 0 }, { "FALSE", 0 }, { "no", 0 },    { "off", 0 }, { NULL, 0 },
};

/* The first word for value, or "unknown". */
static const char *word_name(const struct word *words, int value)
{
        for (; words->name; words++)
                if (words->value == value)
                        return words->name;
        return "unknown";
}

const char *conf_integrity_name(enum integrity_level l)
{
        return word_name(integrity_words, (int)l);
}

const char *conf_vacuum_mode_name(enum vacuum_mode m)
{
        return word_name(mode_words, (int)m);
}

/* ---- schema: one row per key -------------------------------------------- */

/* Where a key may be written. */
enum section {
        SEC_TOP,
        SEC_DEFAULTS,
        SEC_DB, /* a databases: entry */
        /* the sections defaults: and an entry share, in the order the hint
         * "did you mean to put it under" tries them */
        SEC_VACUUM,
        SEC_ANALYZE,
        SEC_RETRY,
        SEC_CHECKPOINT,
        SEC_LIMITS,
        SEC_DEEP_SCAN,
};

#define IN(s) (1u << (s))
#define IN_SHARED (IN(SEC_DEFAULTS) | IN(SEC_DB))
#define IN_SECTIONS                                                                                 \
        (IN(SEC_VACUUM) | IN(SEC_ANALYZE) | IN(SEC_RETRY) | IN(SEC_CHECKPOINT) | IN(SEC_LIMITS) | \
         IN(SEC_DEEP_SCAN))

/* "in vacuum", for messages */
static const char *const section_label[] = {
        [SEC_TOP] = "at top level",    [SEC_DEFAULTS] = "in defaults",   [SEC_DB] = "in databases entry",
        [SEC_VACUUM] = "in vacuum",     [SEC_ANALYZE] = "in analyze",     [SEC_RETRY] = "in retry",
        [SEC_CHECKPOINT] = "in checkpoint", [SEC_LIMITS] = "in limits", [SEC_DEEP_SCAN] = "in deep_scan",
};

/* The type of a key's value, and of the field it is stored in. */
enum vtype {
        V_DURATION, /* uint64_t ms, min..max */
        V_SIZE,     /* uint64_t bytes */
        V_PERCENT,  /* double, 0..100 */
        V_FACTOR,   /* double, >= 1 */
        V_WINDOW,   /* struct window */
        V_WORD,     /* an enum (int-sized): one of words */
        V_BOOL,     /* bool: one of bool_words */
        V_INT,      /* int or unsigned, min..max */
        V_COUNT,    /* uint64_t, min..max */
        V_PATH,     /* char *, absolute, allocated */
        V_GROUP,    /* int64_t gid: a group name or number, resolved when loaded; "none" is -1 */
        V_COMMAND,  /* char[CONF_COMMAND_MAX]: an absolute path and its arguments, or "" / none */
        V_SECTION,  /* a mapping of the keys of section sub */
        V_LIST,     /* the databases: list, read by load_root() */
};

struct key {
        const char *name;
        unsigned in; /* IN() of each section it may be written in */
        enum vtype type;
        size_t offset;            /* of its field: in struct conf for SEC_TOP, else in struct db_conf */
        const char *def;          /* the built-in value, as the file would say it; NULL: none */
        int64_t min, max;         /* V_INT, V_COUNT; V_DURATION in ms */
        const char *expect;       /* V_WORD, V_BOOL, V_INT, V_COUNT: what a message says is expected */
        const struct word *words; /* V_WORD, V_BOOL */
        enum section sub;         /* V_SECTION */
        bool never;               /* V_DURATION: "never" is 0 */
};

/* ...: the built-in value, then any other fields */
#define TOP(n, t, field, ...) \
        { .name = n, .in = IN(SEC_TOP), .type = t, .offset = offsetof(struct conf, field), .def = __VA_ARGS__ }
#define KEY(s, n, t, field, ...) \
        { .name = n, .in = IN(s), .type = t, .offset = offsetof(struct db_conf, field), .def = __VA_ARGS__ }
#define SECTION(n, s) { .name = n, .in = IN_SHARED, .type = V_SECTION, .sub = s }
#define DURATION_MAX .max = (int64_t)MAX_DURATION_MS
#define ROWS "a whole number of rows, 0 or more"

/* Every key. The order within a section is the order of "expected one of"
 * lists, and the first of equally close names is the one hinted at. */
static const struct key keys[] = {
        TOP("poll_interval", V_DURATION, poll_interval_ms, "5m", .min = 1, DURATION_MAX),
        TOP("full_sweep_interval", V_DURATION, full_sweep_interval_ms, "6h", .min = 1, DURATION_MAX),
        TOP("max_concurrent_jobs", V_INT, max_concurrent_jobs, "1", .min = 1, .max = 1024,
            .expect = "a whole number from 1 to 1024"),
        TOP("state_dir", V_PATH, state_dir, DEFAULT_STATE_DIR),
        TOP("control_socket", V_PATH, control_socket, DEFAULT_CONTROL_SOCKET),
        TOP("control_group", V_GROUP, control_gid, "none"),
        TOP("metrics_file", V_PATH, metrics_file, NULL),
        { .name = "defaults", .in = IN(SEC_TOP), .type = V_SECTION, .sub = SEC_DEFAULTS },
        { .name = "databases", .in = IN(SEC_TOP), .type = V_LIST },

        KEY(SEC_DB, "path", V_PATH, path, NULL),
        SECTION("vacuum", SEC_VACUUM),
        SECTION("analyze", SEC_ANALYZE),
        SECTION("retry", SEC_RETRY),
        SECTION("checkpoint", SEC_CHECKPOINT),
        SECTION("limits", SEC_LIMITS),
        SECTION("deep_scan", SEC_DEEP_SCAN),

        KEY(SEC_VACUUM, "threshold", V_PERCENT, vacuum.threshold, "20%"),
        KEY(SEC_VACUUM, "urgent_threshold", V_PERCENT, vacuum.urgent_threshold, "30%"),
        KEY(SEC_VACUUM, "window", V_WINDOW, vacuum.window, "02:00-05:00"),
        KEY(SEC_VACUUM, "min_interval", V_DURATION, vacuum.min_interval_ms, "6h", DURATION_MAX),
        KEY(SEC_VACUUM, "min_reclaim", V_SIZE, vacuum.min_reclaim, "1MiB"),
        KEY(SEC_VACUUM, "disk_space_factor", V_FACTOR, vacuum.disk_space_factor, "2.0"),
        KEY(SEC_VACUUM, "integrity", V_WORD, vacuum.integrity, "quick", .words = integrity_words,
            .expect = "none, quick or full"),
        KEY(SEC_VACUUM, "mode", V_WORD, vacuum.mode, "full", .words = mode_words, .expect = "full or incremental"),
        KEY(SEC_VACUUM, "allow_rowid_change", V_BOOL, vacuum.allow_rowid_change, "false", .words = bool_words,
            .expect = "true or false"),
        KEY(SEC_VACUUM, "unused_threshold", V_PERCENT, vacuum.unused_threshold, "30%"),
        KEY(SEC_VACUUM, "before_vacuum", V_COMMAND, vacuum.before_vacuum, "none"),
        KEY(SEC_VACUUM, "after_vacuum", V_COMMAND, vacuum.after_vacuum, "none"),
        KEY(SEC_VACUUM, "hook_timeout", V_DURATION, vacuum.hook_timeout_ms, "1m", .min = 1, DURATION_MAX),

        KEY(SEC_DEEP_SCAN, "interval", V_DURATION, deep_scan.interval_ms, "7d", DURATION_MAX, .never = true),
        KEY(SEC_DEEP_SCAN, "in_window", V_BOOL, deep_scan.in_window, "true", .words = bool_words,
            .expect = "true or false"),

        KEY(SEC_ANALYZE, "interval", V_DURATION, analyze.interval_ms, "1d", DURATION_MAX, .never = true),
        KEY(SEC_ANALYZE, "analysis_limit", V_INT, analyze.analysis_limit, "1000", .max = INT_MAX,
            .expect = "0 (no limit) or a positive whole number"),
        KEY(SEC_ANALYZE, "threshold", V_COUNT, analyze.threshold_rows, "50", .max = INT64_MAX, .expect = ROWS),
        KEY(SEC_ANALYZE, "scale_factor", V_PERCENT, analyze.scale_factor_percent, "10%"),
        KEY(SEC_ANALYZE, "large_table_rows", V_COUNT, analyze.large_table_rows, "1000000", .max = INT64_MAX,
            .expect = ROWS),

        KEY(SEC_CHECKPOINT, "wal_size_limit", V_SIZE, checkpoint.wal_size_limit, "64MiB"),
        KEY(SEC_CHECKPOINT, "wal_size_ratio", V_PERCENT, checkpoint.wal_size_ratio, "100%"),
        KEY(SEC_CHECKPOINT, "warn_after", V_DURATION, checkpoint.warn_after_ms, "1h", DURATION_MAX),

        KEY(SEC_LIMITS, "job_timeout", V_DURATION, limits.job_timeout_ms, "30m", .min = 1, DURATION_MAX),
        KEY(SEC_LIMITS, "vacuum_timeout_per_gib", V_DURATION, limits.vacuum_timeout_per_gib_ms, "10m", DURATION_MAX),
        KEY(SEC_LIMITS, "max_matches", V_COUNT, limits.max_matches, "100000", .min = 1, .max = 100000000,
            .expect = "a whole number from 1 to 100000000"),

        KEY(SEC_RETRY, "busy_timeout", V_DURATION, retry.busy_timeout_ms, "50ms",
            .max = (int64_t)MAX_BUSY_TIMEOUT_MS),
        KEY(SEC_RETRY, "max_attempts", V_INT, retry.max_attempts, "8", .min = 1, .max = 1000,
            .expect = "a whole number from 1 to 1000"),
        KEY(SEC_RETRY, "initial_backoff", V_DURATION, retry.initial_backoff_ms, "1s", DURATION_MAX),
        KEY(SEC_RETRY, "max_backoff", V_DURATION, retry.max_backoff_ms, "10m", DURATION_MAX),
};

#define N_KEYS ELEMENTSOF(keys)

/* V_WORD stores an int into an enum field. */
_Static_assert(sizeof(enum integrity_level) == sizeof(int) && sizeof(enum vacuum_mode) == sizeof(int),
               "enum fields are int-sized");

/* The key called name in section sec, or NULL. */
static const struct key *find_key(enum section sec, const char *name)
{
        for (size_t i = 0; i < N_KEYS; i++)
                if ((keys[i].in & IN(sec)) && strcmp(keys[i].name, name) == 0)
                        return &keys[i];
        return NULL;
}

/* The name of the key that holds section sec ("vacuum"). */
static const char *section_name(enum section sec)
{
        for (size_t i = 0; i < N_KEYS; i++)
                if (keys[i].type == V_SECTION && keys[i].sub == sec)
                        return keys[i].name;
        return NULL;
}

/* A parsed value, in the member the key's type names. */
union value {
        uint64_t u;       /* V_DURATION, V_SIZE, V_COUNT */
        double d;         /* V_PERCENT, V_FACTOR */
        struct window w;  /* V_WINDOW */
        int i;            /* V_WORD, V_INT */
        bool b;           /* V_BOOL */
        int64_t g;        /* V_GROUP */
};

/* A hook command: "" or none, or an absolute path and its arguments
 * (split at spaces when run), shorter than CONF_COMMAND_MAX, with no
 * control character. */
static enum reason command_value(const char *s)
{
        if (*s == '\0' || strcmp(s, "none") == 0)
                return PR_OK;
        int words = 0;

        if (s[0] != '/' || strlen(s) >= CONF_COMMAND_MAX)
                return PR_SYNTAX;
        for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
                if (*p < 0x20 && *p != '\t')
                        return PR_SYNTAX;
                words += *p != ' ' && *p != '\t' && (p == (const unsigned char *)s || p[-1] == ' ' || p[-1] == '\t');
        }
        return words <= CONF_COMMAND_WORDS ? PR_OK : PR_SYNTAX;
}

/* A group, by name (getgrnam) or number, into *ret; "none": -1. */
static enum reason group_value(const char *s, int64_t *ret)
{
        struct group gr, *found = NULL;
        char buf[4096];
        uint64_t n;
        const char *end;

        if (strcmp(s, "none") == 0) {
                *ret = -1;
                return PR_OK;
        }
        if (parse_digits(s, &n, &end) == PR_OK && *end == '\0') {
                if (n >= (gid_t)-1)
                        return PR_RANGE;
                *ret = (int64_t)n;
                return PR_OK;
        }
        if (getgrnam_r(s, &gr, buf, sizeof(buf), &found) != 0 || !found)
                return PR_UNKNOWN_GROUP;
        *ret = (int64_t)found->gr_gid;
        return PR_OK;
}

/* Parse s as a value of key k into *v; PR_OK or why not. */
static enum reason key_value(const struct key *k, const char *s, union value *v)
{
        const char *end;
        enum reason r;
        int64_t i;
        bool neg;

        switch (k->type) {
        case V_DURATION:
                r = k->never && strcmp(s, "never") == 0 ? (v->u = 0, PR_OK) : duration_reason(s, &v->u);
                if (r == PR_OVERFLOW || (r == PR_OK && v->u > (uint64_t)k->max))
                        return PR_ABOVE;
                return r == PR_OK && v->u < (uint64_t)k->min ? PR_BELOW : r;
        case V_SIZE:
                return size_reason(s, &v->u);
        case V_PERCENT:
                return percent_reason(s, &v->d);
        case V_FACTOR:
                r = parse_decimal(s, &v->d, &end);
                return r != PR_OK || *end != '\0' || v->d < 1.0 ? PR_RANGE : PR_OK;
        case V_WINDOW:
                return window_reason(s, &v->w);
        case V_WORD:
        case V_BOOL:
                for (const struct word *wd = k->words; wd->name; wd++)
                        if (strcmp(s, wd->name) == 0) {
                                if (k->type == V_BOOL)
                                        v->b = wd->value != 0;
                                else
                                        v->i = wd->value;
                                return PR_OK;
                        }
                return PR_SYNTAX;
        case V_INT:
        case V_COUNT:
                neg = *s == '-';
                if (parse_digits(s + neg, &v->u, &end) != PR_OK || *end != '\0' || v->u > (uint64_t)INT64_MAX)
                        return PR_SYNTAX;
                i = neg ? -(int64_t)v->u : (int64_t)v->u;
                if (i < k->min || i > k->max)
                        return PR_RANGE;
                if (k->type == V_INT)
                        v->i = (int)i; /* the range fits an int */
                return PR_OK;
        case V_PATH:
                return s[0] == '/' ? PR_OK : PR_SYNTAX;
        case V_GROUP:
                return group_value(s, &v->g);
        case V_COMMAND:
                return command_value(s);
        case V_SECTION:
        case V_LIST:
                break;
        }
        return PR_SYNTAX;
}

/* Parse s as a value of key k into its field of base, which is written
 * only on success (a V_PATH is copied, the old copy freed). Returns PR_OK
 * or why not. */
static enum reason key_parse(const struct key *k, const char *s, void *base)
{
        static const size_t size[] = {
                [V_DURATION] = sizeof(uint64_t), [V_SIZE] = sizeof(uint64_t), [V_COUNT] = sizeof(uint64_t),
                [V_PERCENT] = sizeof(double),    [V_FACTOR] = sizeof(double), [V_WINDOW] = sizeof(struct window),
                [V_WORD] = sizeof(int),          [V_INT] = sizeof(int),       [V_BOOL] = sizeof(bool),
                [V_GROUP] = sizeof(int64_t),
        };
        char *field = (char *)base + k->offset, *copy;
        union value v;
        enum reason r = key_value(k, s, &v);

        if (r != PR_OK)
                return r;
        if (k->type == V_COMMAND) {
                /* inline: copied with its section, nothing to free */
                util_strlcpy(field, strcmp(s, "none") == 0 ? "" : s, CONF_COMMAND_MAX);
                return PR_OK;
        }
        if (k->type == V_PATH) {
                copy = strdup(s);
                if (!copy)
                        return PR_NOMEM;
                free(*(char **)field);
                memcpy(field, &copy, sizeof(copy));
                return PR_OK;
        }
        /* every member of the union starts at its beginning */
        memcpy(field, &v, size[k->type]);
        return PR_OK;
}

/* ---- defaults ---------------------------------------------------------- */

/* The built-in value of every key of the sections in mask into base (a
 * struct conf for SEC_TOP, else a struct db_conf). 0 or -ENOMEM. */
static int set_builtin(unsigned mask, void *base)
{
        for (size_t i = 0; i < N_KEYS; i++) {
                enum reason r;

                if (!(keys[i].in & mask) || !keys[i].def)
                        continue;
                r = key_parse(&keys[i], keys[i].def, base);
                if (r == PR_NOMEM)
                        return -ENOMEM;
                /* a typo in the table above, which every test would hit */
                if (r != PR_OK)
                        abort();
        }
        return 0;
}

/* The sections a databases entry and struct conf's defaults share,
 * copied one way or the other. */
#define SHARED_SECTIONS(COPY) COPY(vacuum) COPY(analyze) COPY(retry) COPY(checkpoint) COPY(limits) COPY(deep_scan)
#define TO_CONF(f) c->f = d->f;
#define TO_ENTRY(f) ret->f = c->f;

static void sections_to_conf(struct conf *c, const struct db_conf *d)
{
        SHARED_SECTIONS(TO_CONF)
}

void conf_db_defaults(const struct conf *c, struct db_conf *ret)
{
        *ret = (struct db_conf){ .path = NULL };
        if (!c) {
                /* no V_PATH among them: nothing to allocate */
                (void)set_builtin(IN_SECTIONS, ret);
                return;
        }
        SHARED_SECTIONS(TO_ENTRY)
}

int conf_init_defaults(struct conf *c)
{
        struct db_conf d;

        *c = (struct conf){ .file = strdup("(built-in defaults)") };
        conf_db_defaults(NULL, &d);
        sections_to_conf(c, &d);
        if (!c->file || set_builtin(IN(SEC_TOP), c) < 0) {
                free(c->file);
                free(c->state_dir);
                free(c->control_socket);
                c->file = c->state_dir = c->control_socket = NULL;
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
        free(c->control_socket);
        free(c->metrics_file);
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

/* A walk of the whole document before any key is read, not a budget
 * spent where pairs are read: a bomb may sit under keys that are never
 * read (an x- anchor, an unknown key), and the walk is what says where it
 * is ("aliases expand to more than ... here") before anything else. */

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

/* The keys of one mapping (merges included), indexed by their row in keys[]. */
struct pairs {
        yaml_node_t *key[N_KEYS];
        yaml_node_t *value[N_KEYS];
        size_t order[N_KEYS]; /* rows, in the order found */
        size_t n;
};

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

/* The section a key of another section belongs to, for "put it under". */
static const char *home_section(enum section sec, const char *name)
{
        for (enum section s = SEC_VACUUM; s <= SEC_DEEP_SCAN; s++)
                if (s != sec && find_key(s, name))
                        return section_name(s);
        return NULL;
}

static void unknown_key(struct loader *l, enum section sec, const yaml_node_t *key)
{
        const char *name = scalar(key), *best = NULL, *home, *label = section_label[sec];
        unsigned best_d = 3;
        char v[64], list[256] = "";

        /* Past the message limit only the count matters: an alias used a
         * thousand times must not cost a thousand hint searches per key. */
        if (l->gave_up) {
                l->n_errors++;
                return;
        }
        for (size_t i = 0; i < N_KEYS; i++) {
                unsigned d = (keys[i].in & IN(sec)) ? distance(name, keys[i].name) : UINT_MAX;

                if (d < best_d) {
                        best_d = d;
                        best = keys[i].name;
                }
        }
        show(name, v, sizeof(v));
        if (best) {
                err_at(l, key, "unknown key '%s' %s, did you mean '%s'?", v, label, best);
                return;
        }
        home = home_section(sec, name);
        if (home && sec == SEC_TOP) {
                err_at(l, key, "unknown key '%s' %s, did you mean to put it under 'defaults: %s:'?", v, label,
                       home);
                return;
        }
        if (home) {
                err_at(l, key, "unknown key '%s' %s, did you mean to put it under '%s:'?", v, label, home);
                return;
        }
        if (sec == SEC_TOP && find_key(SEC_DEFAULTS, name)) {
                err_at(l, key, "unknown key '%s' %s, did you mean to put it under 'defaults:'?", v, label);
                return;
        }
        for (size_t i = 0; i < N_KEYS; i++) {
                if (!(keys[i].in & IN(sec)))
                        continue;
                if (*list)
                        strcat(list, ", ");
                strcat(list, keys[i].name);
        }
        err_at(l, key, "unknown key '%s' %s: expected one of %s", v, label, list);
}

static void collect_pairs(struct loader *l, yaml_node_t *map, enum section sec, struct pairs *out,
                          unsigned depth);

static void merge_one(struct loader *l, yaml_node_t *src, enum section sec, struct pairs *out, unsigned depth)
{
        char buf[80];

        if (src->type == YAML_MAPPING_NODE)
                collect_pairs(l, src, sec, out, depth + 1);
        else
                err_at(l, src, "invalid merge '<<' %s: expected a mapping or a list of mappings, found %s",
                       section_label[sec], found(src, buf, sizeof(buf)));
}

/* The mappings merged into map with "<<", after its own keys so that
 * those win. */
static void collect_merged(struct loader *l, yaml_node_t *map, yaml_node_t *merge, enum section sec,
                           struct pairs *out, unsigned depth)
{
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
                                        merge_one(l, item, sec, out, depth);
                        }
                } else {
                        merge_one(l, src, sec, out, depth);
                }
                break;
        }
}

/* The known keys of mapping map into out, checking each key once; keys
 * already in out (written in an outer mapping, or merged earlier) win. */
static void collect_pairs(struct loader *l, yaml_node_t *map, enum section sec, struct pairs *out,
                          unsigned depth)
{
        const char *label = section_label[sec];
        yaml_node_t *seen[N_KEYS] = { NULL };
        yaml_node_t *merge = NULL;
        char buf[80];

        if (depth > MAX_DEPTH)
                return; /* expanded_size() has refused such a document */
        for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
                yaml_node_t *k = node_at(l, p->key), *v = node_at(l, p->value);
                const struct key *def;
                size_t id;

                if (!k || !v)
                        continue;
                if (k->type != YAML_SCALAR_NODE) {
                        err_at(l, k, "invalid key %s: expected a name, found %s", label, found(k, buf, sizeof(buf)));
                        continue;
                }
                if (k->data.scalar.style == YAML_PLAIN_SCALAR_STYLE && strcmp(scalar(k), "<<") == 0) {
                        if (merge)
                                err_at(l, k, "duplicate key '<<' %s (first at %zu:%zu)", label,
                                       merge->start_mark.line + 1, merge->start_mark.column + 1);
                        else
                                merge = k;
                        continue;
                }
                /* top-level "x-..." keys hold anchors for later aliases,
                 * as in docker-compose files */
                if (sec == SEC_TOP && strncmp(scalar(k), "x-", 2) == 0)
                        continue;
                def = find_key(sec, scalar(k));
                if (!def) {
                        unknown_key(l, sec, k);
                        continue;
                }
                id = (size_t)(def - keys);
                if (seen[id]) {
                        err_at(l, k, "duplicate key '%s' %s (first at %zu:%zu)", def->name, label,
                               seen[id]->start_mark.line + 1, seen[id]->start_mark.column + 1);
                        continue;
                }
                seen[id] = k;
                if (out->key[id])
                        continue;
                out->key[id] = k;
                out->value[id] = v;
                out->order[out->n++] = id;
        }
        if (merge)
                collect_merged(l, map, merge, sec, out, depth);
}

/* ---- values --------------------------------------------------------------- */

static const char *type_noun(const struct key *k)
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
        case V_WORD:
        case V_BOOL:
        case V_INT:
        case V_COUNT:
                return k->expect;
        case V_PATH:
                return "an absolute path";
        case V_GROUP:
                return "a group name or number, or none";
        case V_COMMAND:
                return "an absolute path and its arguments, or none";
        case V_SECTION:
                return "a mapping";
        case V_LIST:
                return "a list";
        }
        return "a value";
}

/* Why value v of key k at node n was refused (r, from key_parse()). */
static void value_error(struct loader *l, const struct key *k, yaml_node_t *n, const char *v, enum reason r)
{
        const char *dexpect = k->never ? DURATION_EXPECT ", 0 or never" : DURATION_EXPECT;
        char limit[32];

        switch (k->type) {
        case V_DURATION:
                if (r == PR_NEGATIVE)
                        err_at(l, n, "invalid duration '%s': negative durations are not allowed, %s", v, dexpect);
                else if (r == PR_FRACTION)
                        err_at(l, n, "invalid duration '%s': fractions are not supported, use a smaller unit (e.g. 90m for 1.5h)",
                               v);
                else if (r == PR_NO_UNIT)
                        err_at(l, n, "invalid duration '%s': a unit is required, %s", v, dexpect);
                else if (r == PR_BELOW)
                        err_at(l, n, "invalid %s '%s': expected a duration greater than 0", k->name, v);
                else if (r == PR_ABOVE)
                        err_at(l, n, "invalid %s '%s': too large, expected at most %s", k->name, v,
                               conf_format_duration((uint64_t)k->max, limit, sizeof(limit)));
                else
                        err_at(l, n, "invalid duration '%s': %s", v, dexpect);
                return;
        case V_SIZE:
                if (r == PR_OVERFLOW)
                        err_at(l, n, "invalid size '%s': too large, expected at most 16777215TiB", v);
                else if (r == PR_FRACTION)
                        err_at(l, n, "invalid size '%s': fractions are not supported, use a smaller unit (e.g. 1536KiB for 1.5MiB)",
                               v);
                else
                        err_at(l, n, "invalid size '%s': %s", v, SIZE_EXPECT);
                return;
        case V_PERCENT:
                if (r == PR_RANGE || r == PR_OVERFLOW || r == PR_NEGATIVE)
                        err_at(l, n, "invalid percentage '%s': out of range, %s", v, PERCENT_EXPECT);
                else
                        err_at(l, n, "invalid percentage '%s': %s", v, PERCENT_EXPECT);
                return;
        case V_WINDOW:
                if (r == PR_EQUAL)
                        err_at(l, n, "invalid window '%s': start and end are equal, use always for no window", v);
                else
                        err_at(l, n, "invalid window '%s': %s", v, WINDOW_EXPECT);
                return;
        case V_FACTOR:
                err_at(l, n, "invalid %s '%s': expected a number of at least 1 (e.g. 2.0)", k->name, v);
                return;
        case V_PATH:
                if (k->in & IN(SEC_DB))
                        err_at(l, n, "relative database path '%s': expected an absolute path starting with /", v);
                else
                        err_at(l, n, "invalid %s '%s': expected an absolute path starting with /", k->name, v);
                return;
        case V_COMMAND:
                err_at(l, n, "invalid %s '%s': expected an absolute path and its arguments (no shell, split at "
                       "spaces), at most %d words and shorter than %d bytes, or none", k->name, v,
                       CONF_COMMAND_WORDS, CONF_COMMAND_MAX);
                return;
        case V_GROUP:
                if (r == PR_UNKNOWN_GROUP)
                        err_at(l, n, "invalid %s '%s': no such group (getent group %s finds nothing)", k->name, v, v);
                else
                        err_at(l, n, "invalid %s '%s': expected a group name or number, or none", k->name, v);
                return;
        case V_WORD:
        case V_BOOL:
        case V_INT:
        case V_COUNT:
        case V_SECTION:
        case V_LIST:
                break;
        }
        err_at(l, n, "invalid %s '%s': expected %s", k->name, v, k->expect);
}

/* The scalar n as a value of key k into its field of base; false (and a
 * message) if it is not a valid one. */
static bool parse_value(struct loader *l, const struct key *k, yaml_node_t *n, void *base)
{
        char v[64], buf[80];
        const char *s;
        enum reason r;

        if (n->type != YAML_SCALAR_NODE) {
                err_at(l, n, "invalid value for '%s': expected %s, found %s", k->name, type_noun(k),
                       found(n, buf, sizeof(buf)));
                return false;
        }
        s = scalar(n);
        if (strlen(s) != n->data.scalar.length) {
                err_at(l, n, "invalid value for '%s': contains a NUL character", k->name);
                return false;
        }
        if (!*s && n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE) {
                err_at(l, n, "missing value for '%s': expected %s", k->name, type_noun(k));
                return false;
        }
        r = key_parse(k, s, base);
        if (r == PR_NOMEM)
                l->oom = true;
        else if (r != PR_OK)
                value_error(l, k, n, show(s, v, sizeof(v)), r);
        return r == PR_OK;
}

/* ---- defaults: and databases entries -------------------------------------- */

/* The settings of defaults: or of one databases entry, and where each was
 * written: src[i] is the value node of keys[i], NULL where inherited. */
struct entry {
        struct db_conf d;
        yaml_node_t *src[N_KEYS];
};

/* The pairs of mapping n, read as section sec, into *p; false when n is
 * not a mapping, after the message "<what>, found <n>". */
static bool mapping_pairs(struct loader *l, yaml_node_t *n, enum section sec, const char *what, struct pairs *p)
{
        char buf[80];

        *p = (struct pairs){ .n = 0 };
        if (n->type != YAML_MAPPING_NODE) {
                err_at(l, n, "%s, found %s", what, found(n, buf, sizeof(buf)));
                return false;
        }
        collect_pairs(l, n, sec, p, 0);
        return true;
}

/* The pairs of mapping n, which section key k holds; false when n is not
 * one (a null counts as an empty mapping). */
static bool section_pairs(struct loader *l, const struct key *k, yaml_node_t *n, struct pairs *p)
{
        char what[96];

        *p = (struct pairs){ .n = 0 };
        if (is_null(n))
                return true;
        snprintf(what, sizeof(what), "invalid value for '%s': expected a mapping", k->name);
        return mapping_pairs(l, n, k->sub, what, p);
}

/* The values of p into base (struct conf at the top level, else struct
 * db_conf) in the order written, noting in src (if any) where each was set.
 * Sections and lists are the caller's. */
static void apply_values(struct loader *l, const struct pairs *p, void *base, yaml_node_t **src)
{
        for (size_t i = 0; i < p->n; i++) {
                size_t id = p->order[i];

                if (keys[id].type == V_SECTION || keys[id].type == V_LIST)
                        continue;
                if (parse_value(l, &keys[id], p->value[id], base) && src)
                        src[id] = p->value[id];
        }
}

/* The vacuum:, analyze:, ... mappings among p applied over e. */
static void apply_sections(struct loader *l, const struct pairs *p, struct entry *e)
{
        struct pairs sp;

        for (size_t i = 0; i < p->n; i++) {
                size_t id = p->order[i];

                if (keys[id].type == V_SECTION && section_pairs(l, &keys[id], p->value[id], &sp))
                        apply_values(l, &sp, &e->d, e->src);
        }
}

/* Where key name of section sec was set in e, or NULL. */
static yaml_node_t *src_of(const struct entry *e, enum section sec, const char *name)
{
        return e->src[find_key(sec, name) - keys];
}

static const char *pct(double d, char *buf, size_t len)
{
        snprintf(buf, len, "%g%%", d);
        return buf;
}

/* Rules between keys, checked on the effective values. A value inherited
 * from defaults: is not blamed again in every databases entry. */
static void check_settings(struct loader *l, const struct entry *e)
{
        const struct vacuum_conf *v = &e->d.vacuum;
        const struct retry_conf *r = &e->d.retry;
        yaml_node_t *n;
        char a[32], b[32];

        if (v->urgent_threshold < v->threshold) {
                if ((n = src_of(e, SEC_VACUUM, "urgent_threshold")))
                        err_at(l, n, "urgent_threshold %s is below threshold %s: expected a value at or above threshold",
                               pct(v->urgent_threshold, a, sizeof(a)), pct(v->threshold, b, sizeof(b)));
                else if ((n = src_of(e, SEC_VACUUM, "threshold")))
                        err_at(l, n, "threshold %s is above urgent_threshold %s: expected a value at or below urgent_threshold",
                               pct(v->threshold, a, sizeof(a)), pct(v->urgent_threshold, b, sizeof(b)));
        }
        if (r->max_backoff_ms < r->initial_backoff_ms) {
                if ((n = src_of(e, SEC_RETRY, "max_backoff")))
                        err_at(l, n, "max_backoff %s is below initial_backoff %s: expected a value at or above initial_backoff",
                               conf_format_duration(r->max_backoff_ms, a, sizeof(a)),
                               conf_format_duration(r->initial_backoff_ms, b, sizeof(b)));
                else if ((n = src_of(e, SEC_RETRY, "initial_backoff")))
                        err_at(l, n, "initial_backoff %s is above max_backoff %s: expected a value at or below max_backoff",
                               conf_format_duration(r->initial_backoff_ms, a, sizeof(a)),
                               conf_format_duration(r->max_backoff_ms, b, sizeof(b)));
        }
}

/* The entry d (its path owned) appended to the configuration. */
static int add_db(struct loader *l, yaml_node_t *node, yaml_node_t *path_node, const struct db_conf *d)
{
        struct conf *c = l->conf;

        if (c->n_dbs == l->dbs_cap) {
                size_t cap = l->dbs_cap ? 2 * l->dbs_cap : 8;
                struct db_conf *v = realloc(c->dbs, cap * sizeof(*v));
                yaml_mark_t *m;

                if (!v)
                        return -ENOMEM;
                c->dbs = v;
                m = realloc(l->path_marks, cap * sizeof(*m));
                if (!m)
                        return -ENOMEM;
                l->path_marks = m;
                l->dbs_cap = cap;
        }
        l->path_marks[c->n_dbs] = path_node->start_mark;
        c->dbs[c->n_dbs] = *d;
        c->dbs[c->n_dbs].is_glob = strpbrk(d->path, "*?[") != NULL;
        c->dbs[c->n_dbs].line = (unsigned)node->start_mark.line + 1;
        c->dbs[c->n_dbs].column = (unsigned)node->start_mark.column + 1;
        c->n_dbs++;
        return 0;
}

/* One databases entry: a copy of the defaults with the entry's own keys
 * applied. */
static void load_db(struct loader *l, yaml_node_t *node, const struct db_conf *defaults)
{
        struct entry e = { .d = *defaults };
        struct pairs p;
        yaml_node_t *pn;

        if (!mapping_pairs(l, node, SEC_DB,
                           "invalid databases entry: expected a mapping such as '- path: /var/lib/app/main.db'", &p))
                return;
        apply_sections(l, &p, &e);
        check_settings(l, &e);

        pn = p.value[find_key(SEC_DB, "path") - keys];
        if (!pn) {
                err_at(l, node, "databases entry without 'path': expected path: /absolute/file.db");
                return;
        }
        apply_values(l, &p, &e.d, NULL); /* the path, its only value */
        if (e.d.path && add_db(l, node, pn, &e.d) < 0) {
                free(e.d.path);
                l->oom = true;
        }
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

/* defaults: (n, or NULL when absent) over the built-in values, into *ret
 * and the configuration's own copy. */
static void load_defaults(struct loader *l, yaml_node_t *n, struct db_conf *ret)
{
        struct entry e = { .d = { .path = NULL } };
        struct pairs p;

        conf_db_defaults(NULL, &e.d);
        if (n && section_pairs(l, find_key(SEC_TOP, "defaults"), n, &p)) {
                apply_sections(l, &p, &e);
                check_settings(l, &e);
        }
        sections_to_conf(l->conf, &e.d);
        *ret = e.d;
}

/* The databases: list, each entry starting from defaults. */
static void load_dbs(struct loader *l, yaml_node_t *root, yaml_node_t *dbs, const struct db_conf *defaults)
{
        char buf[80];

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
                        load_db(l, entry, defaults);
        }
        check_duplicate_paths(l);
}

static void load_root(struct loader *l, yaml_node_t *root)
{
        struct db_conf defaults;
        struct pairs p;

        if (!root || is_null(root)) {
                err_at_mark(l, root ? root->start_mark : (yaml_mark_t){ 0 },
                            "empty configuration: expected a mapping with at least a 'databases' list");
                return;
        }
        if (!mapping_pairs(l, root, SEC_TOP, "invalid configuration: expected a mapping of keys at the top level",
                           &p))
                return;
        apply_values(l, &p, l->conf, NULL);
        /* defaults: first, wherever it is in the file, since every
         * databases entry starts from it */
        load_defaults(l, p.value[find_key(SEC_TOP, "defaults") - keys], &defaults);
        load_dbs(l, root, p.value[find_key(SEC_TOP, "databases") - keys], &defaults);
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

int conf_load_report(const char *path, struct conf **ret, void (*report)(const char *line, void *userdata),
                     void *userdata)
{
        struct conf_diag d = { 0 };
        int r = conf_load(path, ret, &d);

        for (size_t i = 0; i < d.n; i++)
                report(d.msgs[i], userdata);
        if (r < 0 && d.n == 0) {
                /* only an allocation failure goes without a message */
                char line[4200];

                snprintf(line, sizeof(line), "%s: %s", path ? path : "(null)", strerror(-r));
                report(line, userdata);
        }
        conf_diag_clear(&d);
        return r;
}
