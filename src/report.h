/* SPDX-License-Identifier: MIT */
/* report: what the control socket answers (docs/CONTROL.md) and the
 * metrics (docs/METRICS.md), made from the targets and the daemon's
 * figures. Pure writers: nothing here changes a target. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "events.h"
#include "json.h"
#include "maint.h"
#include "targets.h"

/* A job's result as the metrics count it (label result). */
enum report_result {
        REPORT_OK,
        REPORT_BUSY,
        REPORT_CORRUPT,
        REPORT_NO_SPACE,
        REPORT_ROWIDS,
        REPORT_HOOK_REFUSED,
        REPORT_TIMEOUT,
        REPORT_FAILED,
        REPORT_RESULTS,
};

#define REPORT_OPS (MAINT_OP_DEEP_SCAN + 1)

/* Counters since start (the metrics' _total). */
struct report_counts {
        uint64_t jobs[REPORT_OPS][REPORT_RESULTS];
        uint64_t retries[REPORT_OPS];
        uint64_t reclaimed[REPORT_OPS]; /* bytes given back */
        uint64_t rounds;
};

/* The daemon as a reply shows it. */
struct report_daemon {
        const char *conf_file;
        int64_t started_ms;            /* wall clock ms */
        int64_t now_ms;                /* wall clock ms */
        uint64_t poll_interval_ms;
        size_t watched, queued;
        unsigned running;
        const struct event_round *last_round; /* its figures; NULL before the first */
        int64_t last_round_end_ms;     /* wall clock ms; 0 before the first */
        uint64_t last_round_ms;        /* its duration */
        const struct report_counts *counts;
};

enum report_result report_result_of(enum maint_status s);
const char *report_result_name(enum report_result r);

/* A running VACUUM job, as status shows it. */
struct report_progress {
        enum maint_phase phase;
        int64_t started_ms;  /* wall clock */
        int64_t estimate_ms; /* the whole job, from this host's past VACUUMs; -1 unknown */
};
/* Percent of the estimate elapsed (0-99 while it runs), or -1 unknown. */
int report_progress_percent(const struct report_progress *p, int64_t now_ms);

/* The daemon's fields, into the object j is in. */
void report_daemon_json(struct json *j, const struct report_daemon *d);
/* One database as an object (its key: NULL in an array). now_ms: wall
 * clock ms. */
void report_target_json(struct json *j, const char *key, const struct target *t, int64_t now_ms,
                        const struct report_progress *progress);
/* Why the scheduler plans what it plans for t now: one paragraph, plain
 * text, ending in a newline. minute: the local minute of the day; est_ms:
 * how long a VACUUM of t should take here (-1: not known). */
void report_explain(FILE *f, const struct target *t, int64_t now_ms, int minute, bool ignore_window,
                    uint64_t poll_interval_ms, int64_t est_ms);

/* Prometheus text format, version 0.0.4: the daemon's metric families. */
void report_metrics_daemon(FILE *f, const struct report_daemon *d);
/* The per-database families, REPORT_DB_FAMILIES of them: family's HELP
 * and TYPE lines (report_metrics_family_head) then one sample of each
 * target (report_metrics_sample, false when t has none of it). A label
 * value must be UTF-8: a target whose path is not is left out
 * (report_metrics_exportable). */
#define REPORT_DB_FAMILIES 13
void report_metrics_family_head(FILE *f, int family);
bool report_metrics_sample(FILE *f, int family, const struct target *t);
bool report_metrics_exportable(const struct target *t);
