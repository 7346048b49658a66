/* SPDX-License-Identifier: MIT */
/* fuzz-conf: a libFuzzer harness for the configuration loader. Each input is
 * a configuration file given to conf_load_buffer(); a configuration that
 * loads is then used as the daemon and sqlite-maintctl use it (conf_match(),
 * conf_format_*()), and checked against what conf.h promises about a loaded
 * one, so that a validation hole is a crash too, not only a memory error.
 * The input, as a string, also goes through the four value parsers.
 * Built and run by scripts/fuzz. */

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf.h"

/* The limits conf.c enforces, restated here as the contract under test. */
#define MS_PER_D (24ull * 3600 * 1000)
#define MAX_DURATION_MS (520ull * 7 * MS_PER_D)
#define MAX_BUSY_TIMEOUT_MS (24ull * MS_PER_D)
/* conf_match() is quadratic over the entries; checking the first ones is enough */
#define MAX_MATCHED_DBS 64

#define NAME "fuzz.yaml"

/* An invariant broken: say which, and crash so libFuzzer keeps the input. */
#define require(cond)                                                                             \
        do {                                                                                      \
                if (!(cond)) {                                                                    \
                        fprintf(stderr, "fuzz-conf: %s:%d: broken: %s\n", __FILE__, __LINE__, #cond); \
                        abort();                                                                  \
                }                                                                                 \
        } while (0)

/* conf_format_duration() and conf_parse_duration() are inverses. */
static void check_duration(uint64_t ms, uint64_t max)
{
        char buf[32];
        uint64_t back = UINT64_MAX;

        require(ms <= max);
        require(conf_format_duration(ms, buf, sizeof(buf)) == buf);
        require(strlen(buf) < sizeof(buf));
        require(conf_parse_duration(buf, &back) == 0);
        require(back == ms);
}

static void check_size(uint64_t bytes)
{
        char buf[32];
        uint64_t back = UINT64_MAX;

        require(conf_format_size(bytes, buf, sizeof(buf)) == buf);
        require(strlen(buf) < sizeof(buf));
        require(conf_parse_size(buf, &back) == 0);
        require(back == bytes);
}

static void check_window(const struct window *w)
{
        if (w->always)
                return;
        require(w->start_min >= 0 && w->start_min < 24 * 60);
        require(w->end_min >= 0 && w->end_min < 24 * 60);
        require(w->start_min != w->end_min);
}

/* The three sections of defaults: or of a databases entry, with their
 * effective values. */
static void check_sections(const struct vacuum_conf *v, const struct analyze_conf *a,
                           const struct retry_conf *r)
{
        require(v->threshold >= 0.0 && v->threshold <= v->urgent_threshold && v->urgent_threshold <= 100.0);
        check_window(&v->window);
        check_duration(v->min_interval_ms, MAX_DURATION_MS);
        check_size(v->min_reclaim);
        require(v->disk_space_factor >= 1.0);
        require(strcmp(conf_integrity_name(v->integrity), "unknown") != 0);
        require(strcmp(conf_vacuum_mode_name(v->mode), "unknown") != 0);

        check_duration(a->interval_ms, MAX_DURATION_MS);
        require(a->analysis_limit >= 0);

        check_duration(r->busy_timeout_ms, MAX_BUSY_TIMEOUT_MS);
        require(r->max_attempts >= 1 && r->max_attempts <= 1000);
        check_duration(r->initial_backoff_ms, MAX_DURATION_MS);
        check_duration(r->max_backoff_ms, MAX_DURATION_MS);
        require(r->initial_backoff_ms <= r->max_backoff_ms);
}

/* A configuration that loaded: what the daemon relies on. */
static void check_conf(const struct conf *c)
{
        static const char *const probes[] = {
                "/var/lib/app/main.db", "/srv/tenants/a.db", "/srv/tenants/sub/a.db", "/data/a1.db",
                "/", "", "relative.db", "/a/.hidden.db",
        };

        require(c->file && strcmp(c->file, NAME) == 0);
        check_duration(c->poll_interval_ms, MAX_DURATION_MS);
        require(c->poll_interval_ms > 0);
        require(c->max_concurrent_jobs >= 1 && c->max_concurrent_jobs <= 1024);
        require(c->state_dir && c->state_dir[0] == '/');
        check_sections(&c->vacuum, &c->analyze, &c->retry);

        require(c->n_dbs >= 1 && c->dbs);
        for (size_t i = 0; i < c->n_dbs; i++) {
                const struct db_conf *d = &c->dbs[i];

                require(d->path && d->path[0] == '/');
                require(strlen(d->path) > 0);
                require(d->is_glob == (strpbrk(d->path, "*?[") != NULL));
                require(d->line >= 1 && d->column >= 1);
                check_sections(&d->vacuum, &d->analyze, &d->retry);
                if (i < MAX_MATCHED_DBS) {
                        /* an entry's own path finds it, or an earlier glob */
                        const struct db_conf *m = conf_match(c, d->path);

                        require(m && m >= c->dbs && m <= d);
                        /* duplicate paths are refused */
                        for (size_t j = 0; j < i; j++)
                                require(strcmp(c->dbs[j].path, d->path) != 0);
                }
        }
        for (size_t i = 0; i < sizeof(probes) / sizeof(probes[0]); i++) {
                const struct db_conf *m = conf_match(c, probes[i]);

                require(!m || (m >= c->dbs && m < c->dbs + c->n_dbs));
        }
        require(conf_match(c, NULL) == NULL);
}

/* The value parsers on the whole input as one string: whatever they accept
 * is in range and survives formatting and parsing again. */
static void check_parsers(const uint8_t *data, size_t size)
{
        char *s = malloc(size + 1);
        uint64_t u;
        double d;
        struct window w;

        if (!s)
                return;
        memcpy(s, data, size);
        s[size] = '\0';
        if (conf_parse_duration(s, &u) == 0)
                check_duration(u, UINT64_MAX);
        if (conf_parse_size(s, &u) == 0)
                check_size(u);
        if (conf_parse_percent(s, &d) == 0)
                require(d >= 0.0 && d <= 100.0);
        if (conf_parse_window(s, &w) == 0)
                check_window(&w);
        free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct conf_diag diag = { 0 };
        struct conf *c = NULL;
        int r;

        /* data is libFuzzer's own copy of exactly size bytes, with no NUL
         * after it: a read past len is a heap overflow ASan reports */
        r = conf_load_buffer(NAME, (const char *)data, size, &c, &diag);
        if (r == 0) {
                require(c);
                require(diag.n == 0); /* every message is an error */
                check_conf(c);
        } else {
                require(r < 0);
                require(!c); /* *ret is set only on success */
                /* bad content is -EINVAL, or -ELOOP / -E2BIG for an alias
                 * cycle or bomb; whichever, the user is told why */
                if (r != -ENOMEM)
                        require(diag.n >= 1);
        }
        for (size_t i = 0; i < diag.n; i++) {
                /* "FILE:LINE:COLUMN: message" or "FILE: message", one line */
                require(diag.msgs[i]);
                require(strncmp(diag.msgs[i], NAME ":", strlen(NAME ":")) == 0);
                require(!strchr(diag.msgs[i], '\n'));
        }
        conf_diag_clear(&diag);
        require(diag.n == 0 && !diag.msgs);
        require(conf_free(c) == NULL);

        check_parsers(data, size);
        return 0;
}
