/* SPDX-License-Identifier: MIT */
/* Unit tests of conf: the value parsers and formatters, defaults and
 * overrides, aliases and merges, conf_match(), and the table of bad
 * configuration files in data/bad, each of which says in its "# expect:"
 * lines which errors it must produce. */

#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf.h"
#include "config.h"
#include "check.h"

#define MS_PER_S 1000ull
#define MS_PER_M (60 * MS_PER_S)
#define MS_PER_H (60 * MS_PER_M)
#define MS_PER_D (24 * MS_PER_H)

static void test_duration(void)
{
        static const struct {
                const char *s;
                uint64_t ms;
        } good[] = {
                { "0", 0 },
                { "0s", 0 },
                { "500ms", 500 },
                { "30s", 30 * MS_PER_S },
                { "5m", 5 * MS_PER_M },
                { "6h", 6 * MS_PER_H },
                { "1d", MS_PER_D },
                { "2w", 14 * MS_PER_D },
                { "007s", 7 * MS_PER_S },
                { "18446744073709551615ms", UINT64_MAX },
                { "30500568904w", 30500568904ull * 7 * MS_PER_D }, /* the largest that fits */
        };
        static const char *const bad[] = {
                "", "5", "ms", "-5m", "+5m", "1.5h", "5 m", " 5m", "5m ", "5M", "5min",
                "5mm", "1h30m", "0x10s", "never", "18446744073709551616ms",
                "99999999999999999999w", "30500568905w", "213503982335d",
        };
        uint64_t v;

        for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
                v = 1;
                CHECK_MSG(conf_parse_duration(good[i].s, &v) == 0, "'%s' refused", good[i].s);
                CHECK_MSG(v == good[i].ms, "'%s' gave %llu", good[i].s, (unsigned long long)v);
        }
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                v = 42;
                CHECK_MSG(conf_parse_duration(bad[i], &v) == -EINVAL, "'%s' accepted", bad[i]);
                CHECK_MSG(v == 42, "'%s' wrote the result", bad[i]);
        }
        CHECK(conf_parse_duration(NULL, &v) == -EINVAL);
}

static void test_size(void)
{
        static const struct {
                const char *s;
                uint64_t bytes;
        } good[] = {
                { "0", 0 },
                { "1500", 1500 },
                { "512B", 512 },
                { "512KiB", 512 * 1024 },
                { "1MiB", 1024 * 1024 },
                { "2GiB", 2ull << 30 },
                { "1TiB", 1ull << 40 },
                { "1kB", 1000 },
                { "3MB", 3000000 },
                { "2GB", 2000000000 },
                { "1TB", 1000000000000ull },
                { "18446744073709551615", UINT64_MAX },
                { "16777215TiB", 16777215ull << 40 },
        };
        static const char *const bad[] = {
                "", "B", "-1", "+1", "1.5MiB", "1 MiB", "1mib", "1KB", "1Mb", "1MiBs", "1K",
                "18446744073709551616", "16777216TiB", "99999999999999999999", "20000000TB",
        };
        uint64_t v;

        for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
                v = 1;
                CHECK_MSG(conf_parse_size(good[i].s, &v) == 0, "'%s' refused", good[i].s);
                CHECK_MSG(v == good[i].bytes, "'%s' gave %llu", good[i].s, (unsigned long long)v);
        }
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
                CHECK_MSG(conf_parse_size(bad[i], &v) == -EINVAL, "'%s' accepted", bad[i]);
}

static void test_percent(void)
{
        static const struct {
                const char *s;
                double d;
        } good[] = {
                { "0", 0.0 },     { "0%", 0.0 },    { "20%", 20.0 },   { "20", 20.0 },
                { "12.5%", 12.5 }, { "12.5", 12.5 }, { "100%", 100.0 }, { "100.0", 100.0 },
                { "0.25%", 0.25 }, { "033%", 33.0 },
        };
        static const char *const bad[] = {
                "", "%", "-5%", "+5%", "101%", "100.01", "12.%", ".5%", "20 %", "20%%", "twenty",
                "1e2", "99999999999999999999%", "20%x", "0x10",
        };
        double v;

        for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
                v = -1.0;
                CHECK_MSG(conf_parse_percent(good[i].s, &v) == 0, "'%s' refused", good[i].s);
                CHECK_MSG(v == good[i].d, "'%s' gave %g", good[i].s, v);
        }
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
                CHECK_MSG(conf_parse_percent(bad[i], &v) == -EINVAL, "'%s' accepted", bad[i]);
}

static void test_window(void)
{
        static const struct {
                const char *s;
                int start, end;
        } good[] = {
                { "02:00-05:00", 120, 300 },
                { "22:00-03:00", 1320, 180 }, /* wraps midnight */
                { "00:00-23:59", 0, 1439 },
                { "23:59-00:00", 1439, 0 },
                { "2:00-5:30", 120, 330 },
                { "02:00 - 05:00", 120, 300 },
        };
        static const char *const bad[] = {
                "", "25:00-03:00", "02:00-24:00", "02:60-03:00", "02:00-02:00", "02:00",
                "02:00-", "-05:00", "0200-0500", "02:0-05:00", "02:00-05:00x", "Always",
                "always ", "02:00..05:00", "002:00-05:00",
        };
        struct window w;

        for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
                w = (struct window){ .always = true, .start_min = -1, .end_min = -1 };
                CHECK_MSG(conf_parse_window(good[i].s, &w) == 0, "'%s' refused", good[i].s);
                CHECK_MSG(!w.always && w.start_min == good[i].start && w.end_min == good[i].end,
                          "'%s' gave %d-%d", good[i].s, w.start_min, w.end_min);
        }
        w = (struct window){ .always = false };
        CHECK(conf_parse_window("always", &w) == 0 && w.always);
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
                CHECK_MSG(conf_parse_window(bad[i], &w) == -EINVAL, "'%s' accepted", bad[i]);
}

static void test_format(void)
{
        char buf[32];
        uint64_t v;

        CHECK_STREQ(conf_format_duration(0, buf, sizeof(buf)), "0");
        CHECK_STREQ(conf_format_duration(300000, buf, sizeof(buf)), "5m");
        CHECK_STREQ(conf_format_duration(1500, buf, sizeof(buf)), "1500ms");
        CHECK_STREQ(conf_format_duration(50, buf, sizeof(buf)), "50ms");
        CHECK_STREQ(conf_format_duration(90 * MS_PER_M, buf, sizeof(buf)), "90m");
        CHECK_STREQ(conf_format_duration(6 * MS_PER_H, buf, sizeof(buf)), "6h");
        CHECK_STREQ(conf_format_duration(MS_PER_D, buf, sizeof(buf)), "1d");
        CHECK_STREQ(conf_format_duration(14 * MS_PER_D, buf, sizeof(buf)), "2w");
        CHECK_STREQ(conf_format_duration(UINT64_MAX, buf, sizeof(buf)), "18446744073709551615ms");

        CHECK_STREQ(conf_format_size(0, buf, sizeof(buf)), "0B");
        CHECK_STREQ(conf_format_size(1500, buf, sizeof(buf)), "1500B");
        CHECK_STREQ(conf_format_size(1048576, buf, sizeof(buf)), "1MiB");
        CHECK_STREQ(conf_format_size(1536 * 1024, buf, sizeof(buf)), "1536KiB");
        CHECK_STREQ(conf_format_size(2ull << 30, buf, sizeof(buf)), "2GiB");
        CHECK_STREQ(conf_format_size(5ull << 40, buf, sizeof(buf)), "5TiB");
        CHECK_STREQ(conf_format_size(UINT64_MAX, buf, sizeof(buf)), "18446744073709551615B");

        /* what is formatted parses back to the same value */
        static const uint64_t round[] = { 1, 999, 1000, 60000, 3600001, 7 * MS_PER_D * 3 };
        for (size_t i = 0; i < sizeof(round) / sizeof(round[0]); i++) {
                CHECK(conf_parse_duration(conf_format_duration(round[i], buf, sizeof(buf)), &v) == 0 &&
                      v == round[i]);
                CHECK(conf_parse_size(conf_format_size(round[i], buf, sizeof(buf)), &v) == 0 && v == round[i]);
        }

        CHECK_STREQ(conf_integrity_name(INTEGRITY_NONE), "none");
        CHECK_STREQ(conf_integrity_name(INTEGRITY_QUICK), "quick");
        CHECK_STREQ(conf_integrity_name(INTEGRITY_FULL), "full");
        CHECK_STREQ(conf_vacuum_mode_name(VACUUM_MODE_FULL), "full");
        CHECK_STREQ(conf_vacuum_mode_name(VACUUM_MODE_INCREMENTAL), "incremental");
}

/* Field by field: padding makes memcmp() of these structs meaningless. */
static bool vacuum_eq(const struct vacuum_conf *a, const struct vacuum_conf *b)
{
        return a->threshold == b->threshold && a->urgent_threshold == b->urgent_threshold &&
               a->window.always == b->window.always && a->window.start_min == b->window.start_min &&
               a->window.end_min == b->window.end_min && a->min_interval_ms == b->min_interval_ms &&
               a->min_reclaim == b->min_reclaim && a->disk_space_factor == b->disk_space_factor &&
               a->integrity == b->integrity && a->mode == b->mode &&
               a->allow_rowid_change == b->allow_rowid_change;
}

static bool analyze_eq(const struct analyze_conf *a, const struct analyze_conf *b)
{
        return a->interval_ms == b->interval_ms && a->analysis_limit == b->analysis_limit &&
               a->threshold_rows == b->threshold_rows && a->scale_factor_percent == b->scale_factor_percent &&
               a->large_table_rows == b->large_table_rows;
}

static bool checkpoint_eq(const struct checkpoint_conf *a, const struct checkpoint_conf *b)
{
        return a->wal_size_limit == b->wal_size_limit && a->wal_size_ratio == b->wal_size_ratio &&
               a->warn_after_ms == b->warn_after_ms;
}

static bool is_builtin_vacuum(const struct vacuum_conf *v)
{
        return v->threshold == 20.0 && v->urgent_threshold == 30.0 && !v->window.always &&
               v->window.start_min == 120 && v->window.end_min == 300 && v->min_interval_ms == 6 * MS_PER_H &&
               v->min_reclaim == 1024 * 1024 && v->disk_space_factor == 2.0 && v->integrity == INTEGRITY_QUICK &&
               v->mode == VACUUM_MODE_FULL && !v->allow_rowid_change;
}

static bool is_builtin_analyze(const struct analyze_conf *a)
{
        return a->interval_ms == MS_PER_D && a->analysis_limit == 1000 && a->threshold_rows == 50 &&
               a->scale_factor_percent == 10.0 && a->large_table_rows == 1000000;
}

static bool is_builtin_checkpoint(const struct checkpoint_conf *k)
{
        return k->wal_size_limit == 64ull << 20 && k->wal_size_ratio == 100.0 && k->warn_after_ms == MS_PER_H;
}

static bool is_builtin_retry(const struct retry_conf *r)
{
        return r->busy_timeout_ms == 50 && r->max_attempts == 8 && r->initial_backoff_ms == MS_PER_S &&
               r->max_backoff_ms == 10 * MS_PER_M;
}

static void print_diag(const struct conf_diag *d)
{
        for (size_t i = 0; i < d->n; i++)
                fprintf(stderr, "#   %s\n", d->msgs[i]);
}

/* Load a file that must be valid; NULL (and a failure) if it is not. */
static struct conf *load_good(const char *path)
{
        struct conf_diag d = { 0 };
        struct conf *c = NULL;
        int r = conf_load(path, &c, &d);

        CHECK_MSG(r == 0 && c, "%s: conf_load() = %d", path, r);
        CHECK_MSG(d.n == 0, "%s: %zu messages", path, d.n);
        print_diag(&d);
        conf_diag_clear(&d);
        return r == 0 ? c : NULL;
}

static void test_init_defaults(void)
{
        struct conf *c = calloc(1, sizeof(*c));

        CHECK(c && conf_init_defaults(c) == 0);
        if (!c)
                return;
        CHECK(c->poll_interval_ms == 5 * MS_PER_M);
        CHECK(c->max_concurrent_jobs == 1);
        CHECK_STREQ(c->state_dir, DEFAULT_STATE_DIR);
        CHECK(c->file != NULL);
        CHECK(is_builtin_vacuum(&c->vacuum));
        CHECK(is_builtin_analyze(&c->analyze));
        CHECK(is_builtin_retry(&c->retry));
        CHECK(is_builtin_checkpoint(&c->checkpoint));
        CHECK(c->n_dbs == 0 && c->dbs == NULL);
        CHECK(conf_match(c, "/var/lib/app/main.db") == NULL);
        CHECK(conf_free(c) == NULL);
        CHECK(conf_free(NULL) == NULL);
}

static void test_minimal(void)
{
        struct conf *c = load_good(TEST_DATA_DIR "/good/minimal.yaml");

        if (!c)
                return;
        CHECK_STREQ(c->file, TEST_DATA_DIR "/good/minimal.yaml");
        CHECK(c->poll_interval_ms == 5 * MS_PER_M);
        CHECK(c->max_concurrent_jobs == 1);
        CHECK_STREQ(c->state_dir, DEFAULT_STATE_DIR);
        CHECK(is_builtin_vacuum(&c->vacuum));
        CHECK(is_builtin_analyze(&c->analyze));
        CHECK(is_builtin_retry(&c->retry));
        CHECK(is_builtin_checkpoint(&c->checkpoint));
        CHECK(c->n_dbs == 1);
        if (c->n_dbs == 1) {
                const struct db_conf *d = &c->dbs[0];

                CHECK_STREQ(d->path, "/var/lib/app/main.db");
                CHECK(!d->is_glob);
                CHECK(d->line == 3 && d->column == 5);
                CHECK(is_builtin_vacuum(&d->vacuum));
                CHECK(is_builtin_analyze(&d->analyze));
                CHECK(is_builtin_retry(&d->retry));
                CHECK(is_builtin_checkpoint(&d->checkpoint));
        }
        conf_free(c);
}

static void test_full(void)
{
        struct conf *c = load_good(TEST_DATA_DIR "/good/full.yaml");
        const struct db_conf *d;

        if (!c)
                return;
        CHECK(c->poll_interval_ms == 30 * MS_PER_S);
        CHECK(c->max_concurrent_jobs == 4);
        CHECK_STREQ(c->state_dir, "/srv/maintd-state");
        CHECK(c->vacuum.threshold == 12.5);
        CHECK(c->vacuum.urgent_threshold == 40.0);
        CHECK(!c->vacuum.window.always && c->vacuum.window.start_min == 22 * 60 + 30 &&
              c->vacuum.window.end_min == 3 * 60 + 15);
        CHECK(c->vacuum.min_interval_ms == 2 * MS_PER_D);
        CHECK(c->vacuum.min_reclaim == 64ull << 20);
        CHECK(c->vacuum.disk_space_factor == 2.5);
        CHECK(c->vacuum.integrity == INTEGRITY_FULL);
        CHECK(c->vacuum.mode == VACUUM_MODE_INCREMENTAL);
        CHECK(c->vacuum.allow_rowid_change);
        CHECK(c->analyze.interval_ms == 14 * MS_PER_D);
        CHECK(c->analyze.analysis_limit == 0);
        CHECK(c->analyze.threshold_rows == 500);
        CHECK(c->analyze.scale_factor_percent == 2.5);
        CHECK(c->analyze.large_table_rows == 5000);
        CHECK(c->checkpoint.wal_size_limit == 1ull << 30);
        CHECK(c->checkpoint.wal_size_ratio == 50.0);
        CHECK(c->checkpoint.warn_after_ms == 30 * MS_PER_M);
        CHECK(c->retry.busy_timeout_ms == 250);
        CHECK(c->retry.max_attempts == 3);
        CHECK(c->retry.initial_backoff_ms == 500);
        CHECK(c->retry.max_backoff_ms == MS_PER_H);
        CHECK(c->n_dbs == 2);
        if (c->n_dbs != 2) {
                conf_free(c);
                return;
        }
        /* the first entry has exactly the defaults: section */
        d = &c->dbs[0];
        CHECK(vacuum_eq(&d->vacuum, &c->vacuum));
        CHECK(analyze_eq(&d->analyze, &c->analyze));
        CHECK(checkpoint_eq(&d->checkpoint, &c->checkpoint));
        CHECK(d->retry.busy_timeout_ms == c->retry.busy_timeout_ms &&
              d->retry.max_attempts == c->retry.max_attempts &&
              d->retry.initial_backoff_ms == c->retry.initial_backoff_ms &&
              d->retry.max_backoff_ms == c->retry.max_backoff_ms);

        /* the second overrides some keys and inherits the others */
        d = &c->dbs[1];
        CHECK_STREQ(d->path, "/srv/tenants/*.db");
        CHECK(d->is_glob);
        CHECK(d->line == 35 && d->column == 5);
        CHECK(d->vacuum.threshold == 25.0);
        CHECK(d->vacuum.urgent_threshold == 40.0);
        CHECK(d->vacuum.window.always);
        CHECK(d->vacuum.min_interval_ms == 2 * MS_PER_D);
        CHECK(d->vacuum.min_reclaim == 10000000);
        CHECK(d->vacuum.disk_space_factor == 2.5);
        CHECK(d->vacuum.integrity == INTEGRITY_NONE);
        CHECK(d->vacuum.mode == VACUUM_MODE_INCREMENTAL);
        CHECK(!d->vacuum.allow_rowid_change);
        CHECK(d->analyze.interval_ms == 0);
        CHECK(d->analyze.analysis_limit == 0);
        CHECK(d->analyze.threshold_rows == 0);
        CHECK(d->analyze.scale_factor_percent == 2.5);
        CHECK(d->analyze.large_table_rows == 5000);
        CHECK(d->checkpoint.wal_size_limit == 1ull << 30);
        CHECK(d->checkpoint.wal_size_ratio == 0.0);
        CHECK(d->checkpoint.warn_after_ms == 30 * MS_PER_M);
        CHECK(d->retry.busy_timeout_ms == 250);
        CHECK(d->retry.max_attempts == 1);
        CHECK(d->retry.initial_backoff_ms == 500);
        CHECK(d->retry.max_backoff_ms == MS_PER_H);
        conf_free(c);
}

static void test_defaults_after_databases(void)
{
        struct conf *c = load_good(TEST_DATA_DIR "/good/defaults-after-databases.yaml");

        if (!c)
                return;
        CHECK(c->n_dbs == 2);
        if (c->n_dbs == 2) {
                CHECK(c->dbs[0].vacuum.threshold == 50.0 && c->dbs[0].vacuum.urgent_threshold == 60.0);
                CHECK(c->dbs[0].retry.max_attempts == 2);
                CHECK(c->dbs[1].vacuum.threshold == 50.0 && c->dbs[1].vacuum.urgent_threshold == 90.0);
                CHECK(c->dbs[1].retry.max_attempts == 2);
        }
        conf_free(c);
}

static void test_aliases(void)
{
        struct conf *c = load_good(TEST_DATA_DIR "/good/aliases.yaml");

        if (!c)
                return;
        CHECK(c->n_dbs == 3);
        for (size_t i = 0; i < c->n_dbs; i++) {
                const struct vacuum_conf *v = &c->dbs[i].vacuum;

                CHECK(v->threshold == 40.0 && v->urgent_threshold == 60.0);
                CHECK(v->window.start_min == 60 && v->window.end_min == 120);
                CHECK(v->min_reclaim == 1024 * 1024);
        }
        if (c->n_dbs == 3) {
                CHECK(c->dbs[0].retry.busy_timeout_ms == 10 && c->dbs[0].retry.max_attempts == 20);
                CHECK(is_builtin_retry(&c->dbs[1].retry));
                CHECK(c->dbs[2].retry.busy_timeout_ms == 10 && c->dbs[2].retry.max_attempts == 20);
        }
        CHECK(is_builtin_vacuum(&c->vacuum));
        conf_free(c);
}

static void test_merge(void)
{
        struct conf *c = load_good(TEST_DATA_DIR "/good/merge.yaml");

        if (!c)
                return;
        CHECK(c->n_dbs == 4);
        if (c->n_dbs == 4) {
                const struct db_conf *d = c->dbs;

                /* explicit threshold wins over the merged one */
                CHECK(d[0].vacuum.threshold == 10.0 && d[0].vacuum.urgent_threshold == 50.0);
                CHECK(d[0].vacuum.mode == VACUUM_MODE_INCREMENTAL);
                CHECK(d[0].vacuum.window.start_min == 120);
                /* the first of the merged mappings wins */
                CHECK(d[1].vacuum.threshold == 35.0 && d[1].vacuum.urgent_threshold == 50.0);
                CHECK(d[1].vacuum.window.start_min == 23 * 60 && d[1].vacuum.window.end_min == 4 * 60);
                CHECK_STREQ(d[2].path, "/srv/c.db");
                CHECK(d[2].analyze.interval_ms == 12 * MS_PER_H);
                CHECK_STREQ(d[3].path, "/srv/d.db");
                CHECK(d[3].analyze.interval_ms == 12 * MS_PER_H);
        }
        conf_free(c);
}

static void test_forms(void)
{
        struct conf *c = load_good(TEST_DATA_DIR "/good/forms.yaml");

        if (!c)
                return;
        CHECK(c->poll_interval_ms == 1500);
        CHECK(c->max_concurrent_jobs == 1024);
        CHECK(c->vacuum.threshold == 0.0 && c->vacuum.urgent_threshold == 100.0);
        CHECK(c->vacuum.window.start_min == 1439 && c->vacuum.window.end_min == 0);
        CHECK(c->vacuum.min_interval_ms == 0 && c->vacuum.min_reclaim == 0);
        CHECK(c->vacuum.disk_space_factor == 1.0);
        CHECK(c->analyze.interval_ms == 0);
        CHECK(is_builtin_retry(&c->retry));
        CHECK(c->n_dbs == 2);
        if (c->n_dbs == 2) {
                CHECK(c->dbs[0].vacuum.threshold == 5.0 && c->dbs[0].vacuum.window.always);
                CHECK(c->dbs[1].is_glob && c->dbs[1].retry.max_attempts == 1000);
        }
        conf_free(c);
}

static void test_shipped(void)
{
        struct conf *c = load_good(TEST_DATA_DIR "/../../../conf/sqlite-maintd.yaml");

        if (!c)
                return;
        /* the example documents the defaults, so it must not change them */
        CHECK(c->poll_interval_ms == 5 * MS_PER_M);
        CHECK(c->max_concurrent_jobs == 1);
        /* the built-in state_dir follows the build's prefix; the example
         * shows the packaged one */
        CHECK_STREQ(c->state_dir, "/var/lib/sqlite-maintd");
        CHECK(is_builtin_vacuum(&c->vacuum));
        CHECK(is_builtin_analyze(&c->analyze));
        CHECK(is_builtin_retry(&c->retry));
        CHECK(is_builtin_checkpoint(&c->checkpoint));
        CHECK(c->n_dbs >= 1);
        conf_free(c);
}

static void test_every_good_file(void)
{
        DIR *dir = opendir(TEST_DATA_DIR "/good");
        struct dirent *de;
        unsigned n = 0;

        CHECK(dir != NULL);
        if (!dir)
                return;
        while ((de = readdir(dir))) {
                char path[4096];
                struct conf *c;

                if (!strstr(de->d_name, ".yaml"))
                        continue;
                snprintf(path, sizeof(path), "%s/good/%s", TEST_DATA_DIR, de->d_name);
                c = load_good(path);
                CHECK_MSG(c && c->n_dbs > 0, "%s", path);
                conf_free(c);
                n++;
        }
        closedir(dir);
        CHECK(n >= 3);
}

static void test_match(void)
{
        static const char yaml[] = "databases:\n"
                                   "  - path: /srv/tenants/special.db\n"
                                   "    vacuum: {threshold: 5%}\n"
                                   "  - path: /srv/tenants/*.db\n"
                                   "    vacuum: {threshold: 25%}\n"
                                   "  - path: /srv/t?/[ab].db\n"
                                   "  - path: /var/lib/app/main.db\n";
        struct conf *c = NULL;
        const struct db_conf *d;

        CHECK(conf_load_buffer("match", yaml, strlen(yaml), &c, NULL) == 0);
        if (!c)
                return;
        CHECK(c->n_dbs == 4);
        if (c->n_dbs != 4) {
                conf_free(c);
                return;
        }
        CHECK(!c->dbs[0].is_glob && c->dbs[1].is_glob && c->dbs[2].is_glob && !c->dbs[3].is_glob);

        /* the first matching entry wins, even over a later exact path */
        d = conf_match(c, "/srv/tenants/special.db");
        CHECK(d == &c->dbs[0]);
        d = conf_match(c, "/srv/tenants/other.db");
        CHECK(d == &c->dbs[1]);
        CHECK(d && d->vacuum.threshold == 25.0);
        /* FNM_PATHNAME: * does not cross a / */
        CHECK(conf_match(c, "/srv/tenants/sub/x.db") == NULL);
        CHECK(conf_match(c, "/srv/tenants/.db") == &c->dbs[1]);
        CHECK(conf_match(c, "/srv/t1/a.db") == &c->dbs[2]);
        CHECK(conf_match(c, "/srv/t1/c.db") == NULL);
        CHECK(conf_match(c, "/srv/t12/a.db") == NULL);
        CHECK(conf_match(c, "/var/lib/app/main.db") == &c->dbs[3]);
        CHECK(conf_match(c, "/var/lib/app/main.db-wal") == NULL);
        CHECK(conf_match(c, "/var/lib/app") == NULL);
        CHECK(conf_match(NULL, "/x") == NULL);
        CHECK(conf_match(c, NULL) == NULL);
        conf_free(c);
}

/* Messages of a buffer that must fail; the count is returned. */
static size_t load_bad_buffer(const char *yaml, size_t len, int expect_r, const char *expect_msg)
{
        struct conf_diag d = { 0 };
        struct conf *c = NULL;
        int r = conf_load_buffer("buf.yaml", yaml, len, &c, &d);
        size_t n = d.n;

        bool ok = n >= 1 && strstr(d.msgs[0], expect_msg);

        CHECK_MSG(r == expect_r, "conf_load_buffer() = %d, expected %d", r, expect_r);
        CHECK(c == NULL);
        CHECK_MSG(ok, "no first message containing '%s'", expect_msg);
        if (!ok || r != expect_r)
                print_diag(&d);
        conf_diag_clear(&d);
        conf_free(c);
        return n;
}

static size_t load_bad_str(const char *yaml, const char *expect_msg)
{
        return load_bad_buffer(yaml, strlen(yaml), -EINVAL, expect_msg);
}

static void test_buffers(void)
{
        static const char ok[] = "databases: [{path: /a.db}]\n";
        char *big, *many;
        struct conf_diag d = { 0 };
        struct conf *c = NULL;
        size_t n, len;

        load_bad_buffer("", 0, -EINVAL, "buf.yaml:1:1: empty configuration");
        load_bad_buffer(NULL, 0, -EINVAL, "buf.yaml:1:1: empty configuration");
        load_bad_buffer("~\n", 2, -EINVAL, "buf.yaml:1:1: empty configuration");
        load_bad_str("databases: [{path: /a.db}]\nx: \"\\0\"\n", "buf.yaml:2:1: unknown key 'x'");
        load_bad_str("databases: [{path: \"/a\\0.db\"}]\n", "buf.yaml:1:20: invalid value for 'path': contains a NUL");
        load_bad_str("databases: [{path: /a.db}]\nx: \xff\n", "buf.yaml:2:4: invalid YAML: invalid leading UTF-8 octet");

        /* one byte over the limit is refused before parsing */
        big = malloc(CONF_MAX_FILE_SIZE + 1);
        CHECK(big != NULL);
        if (big) {
                memset(big, '#', CONF_MAX_FILE_SIZE + 1);
                memcpy(big, ok, strlen(ok));
                big[CONF_MAX_FILE_SIZE - 1] = '\n';
                /* exactly at the limit it is fine */
                CHECK(conf_load_buffer("big", big, CONF_MAX_FILE_SIZE, &c, &d) == 0 && c && d.n == 0);
                c = conf_free(c);
                load_bad_buffer(big, CONF_MAX_FILE_SIZE + 1, -EFBIG, "buf.yaml: configuration too large");
                free(big);
        }

        /* a thousand errors are cut off, with a note saying so */
        len = 1000 * 8 + 64;
        many = malloc(len);
        CHECK(many != NULL);
        if (many) {
                size_t off = (size_t)snprintf(many, len, "databases: [{path: /a.db}]\n");

                for (int i = 0; i < 1000; i++)
                        off += (size_t)snprintf(many + off, len - off, "k%03d: 1\n", i);
                n = load_bad_buffer(many, off, -EINVAL, "buf.yaml:2:1: unknown key 'k000'");
                CHECK_MSG(n == 51, "%zu messages", n);
                free(many);
        }

        /* messages are appended to what diag already holds */
        CHECK(conf_load_buffer("a", "x: 1\n", 5, &c, &d) == -EINVAL);
        CHECK(conf_load_buffer("b", "y: 1\n", 5, &c, &d) == -EINVAL);
        CHECK(c == NULL);
        CHECK(d.n == 4);
        conf_diag_clear(&d);
        CHECK(d.n == 0 && d.msgs == NULL);
        conf_diag_clear(&d);
        conf_diag_clear(NULL);
}

/* vacuum.allow_rowid_change: YAML 1.2's words and 1.1's yes/no/on/off, each
 * set over the opposite default; anything else refused where it stands. */
static void test_bool(void)
{
        static const char *const yes[] = { "true", "True", "TRUE", "yes", "on" };
        static const char *const no[] = { "false", "False", "FALSE", "no", "off" };
        static const char *const bad[] = {
                "Yes", "YES", "y", "Y", "On", "ON", "No", "NO", "n", "Off", "OFF", "1", "0",
                "t", "f", "tru", "truee", "enable", "disabled", "~", "null", "yes!",
        };
        static const char fmt[] = "defaults:\n"
                                  "  vacuum: {allow_rowid_change: %s}\n"
                                  "databases:\n"
                                  "  - path: /a.db\n"
                                  "    vacuum: {allow_rowid_change: %s}\n";
        char yaml[256], msg[128];
        struct conf *c;

        for (size_t i = 0; i < 5; i++) {
                c = NULL;
                snprintf(yaml, sizeof(yaml), fmt, no[i], yes[i]);
                CHECK_MSG(conf_load_buffer("b", yaml, strlen(yaml), &c, NULL) == 0, "'%s' refused", yes[i]);
                CHECK_MSG(c && !c->vacuum.allow_rowid_change && c->dbs[0].vacuum.allow_rowid_change,
                          "'%s' over '%s'", yes[i], no[i]);
                conf_free(c);
                c = NULL;
                snprintf(yaml, sizeof(yaml), fmt, yes[i], no[i]);
                CHECK_MSG(conf_load_buffer("b", yaml, strlen(yaml), &c, NULL) == 0, "'%s' refused", no[i]);
                CHECK_MSG(c && c->vacuum.allow_rowid_change && !c->dbs[0].vacuum.allow_rowid_change,
                          "'%s' over '%s'", no[i], yes[i]);
                conf_free(c);
        }
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                snprintf(yaml, sizeof(yaml), fmt, "true", bad[i]);
                snprintf(msg, sizeof(msg), "buf.yaml:5:34: invalid allow_rowid_change '%s': expected true or false",
                         bad[i]);
                CHECK_MSG(load_bad_str(yaml, msg) == 1, "'%s'", bad[i]);
        }
        load_bad_str("databases:\n  - path: /a.db\n    vacuum: {allow_rowid_change: [true]}\n",
                     "buf.yaml:3:34: invalid value for 'allow_rowid_change': expected true or false, found a list");
}

/* analyze.threshold, scale_factor, large_table_rows and the checkpoint:
 * section: every form, defaults: over the built-in values, entries over
 * defaults:, merges, and the values refused. */
static void test_new_keys(void)
{
        static const char yaml[] =
                "x-ck: &ck {wal_size_limit: 2GiB, wal_size_ratio: 75%}\n"
                "defaults:\n"
                "  analyze: {threshold: 100, scale_factor: 12.5%, large_table_rows: 0}\n"
                "  checkpoint:\n"
                "    wal_size_limit: 1500\n"
                "    warn_after: 10m\n"
                "databases:\n"
                "  - path: /a.db\n"
                "  - path: /b.db\n"
                "    analyze: {threshold: 9223372036854775807, scale_factor: 100}\n"
                "    checkpoint: {wal_size_ratio: 25%, warn_after: 0}\n"
                "  - path: /c.db\n"
                "    checkpoint:\n"
                "  - path: /d.db\n"
                "    checkpoint: {<<: *ck, wal_size_ratio: 0%}\n"
                "  - path: /e.db\n"
                "    analyze: {scale_factor: 0, large_table_rows: 1}\n"
                "    checkpoint: {wal_size_limit: 0, wal_size_ratio: 100%, warn_after: 2w}\n";
        struct conf_diag d = { 0 };
        struct conf *c = NULL;
        const struct db_conf *db;

        CHECK(conf_load_buffer("new", yaml, strlen(yaml), &c, &d) == 0);
        print_diag(&d);
        conf_diag_clear(&d);
        if (!c || c->n_dbs != 5) {
                CHECK(c && c->n_dbs == 5);
                conf_free(c);
                return;
        }
        /* defaults: what is set, and the built-in value of what is not */
        CHECK(c->analyze.threshold_rows == 100 && c->analyze.scale_factor_percent == 12.5 &&
              c->analyze.large_table_rows == 0);
        CHECK(c->analyze.interval_ms == MS_PER_D && c->analyze.analysis_limit == 1000);
        CHECK(c->checkpoint.wal_size_limit == 1500 && c->checkpoint.warn_after_ms == 10 * MS_PER_M);
        CHECK(c->checkpoint.wal_size_ratio == 100.0);
        CHECK(is_builtin_vacuum(&c->vacuum) && is_builtin_retry(&c->retry));

        db = &c->dbs[0]; /* all inherited */
        CHECK(analyze_eq(&db->analyze, &c->analyze));
        CHECK(checkpoint_eq(&db->checkpoint, &c->checkpoint));

        db = &c->dbs[1]; /* some overridden, the rest inherited */
        CHECK(db->analyze.threshold_rows == INT64_MAX && db->analyze.scale_factor_percent == 100.0 &&
              db->analyze.large_table_rows == 0);
        CHECK(db->checkpoint.wal_size_limit == 1500 && db->checkpoint.wal_size_ratio == 25.0 &&
              db->checkpoint.warn_after_ms == 0);

        db = &c->dbs[2]; /* an empty checkpoint: overrides nothing */
        CHECK(checkpoint_eq(&db->checkpoint, &c->checkpoint));

        db = &c->dbs[3]; /* merged, the key written in the mapping winning */
        CHECK(db->checkpoint.wal_size_limit == 2ull << 30 && db->checkpoint.wal_size_ratio == 0.0 &&
              db->checkpoint.warn_after_ms == 10 * MS_PER_M);

        db = &c->dbs[4]; /* the bounds */
        CHECK(db->analyze.threshold_rows == 100 && db->analyze.scale_factor_percent == 0.0 &&
              db->analyze.large_table_rows == 1);
        CHECK(db->checkpoint.wal_size_limit == 0 && db->checkpoint.wal_size_ratio == 100.0 &&
              db->checkpoint.warn_after_ms == 14 * MS_PER_D);
        conf_free(c);

        /* Refused values, each where it stands. */
        load_bad_str("databases: [{path: /a.db, analyze: {threshold: 1.5}}]\n",
                     "buf.yaml:1:48: invalid threshold '1.5': expected a whole number of rows, 0 or more");
        load_bad_str("databases: [{path: /a.db, analyze: {threshold: 1e3}}]\n",
                     "buf.yaml:1:48: invalid threshold '1e3': expected a whole number of rows, 0 or more");
        load_bad_str("databases: [{path: /a.db, analyze: {threshold: +5}}]\n",
                     "buf.yaml:1:48: invalid threshold '+5': expected a whole number of rows, 0 or more");
        load_bad_str("databases: [{path: /a.db, analyze: {large_table_rows: many}}]\n",
                     "buf.yaml:1:55: invalid large_table_rows 'many': expected a whole number of rows, 0 or more");
        load_bad_str("databases: [{path: /a.db, analyze: {scale_factor: 0.5x}}]\n",
                     "buf.yaml:1:51: invalid percentage '0.5x': expected a number from 0 to 100");
        load_bad_str("databases: [{path: /a.db, checkpoint: {wal_size_limit: 1.5GiB}}]\n",
                     "buf.yaml:1:56: invalid size '1.5GiB': fractions are not supported");
        load_bad_str("databases: [{path: /a.db, checkpoint: {wal_size_limit: -1}}]\n",
                     "buf.yaml:1:56: invalid size '-1': expected a whole number of bytes");
        load_bad_str("databases: [{path: /a.db, checkpoint: {wal_size_ratio: 100.5%}}]\n",
                     "buf.yaml:1:56: invalid percentage '100.5%': out of range");
        load_bad_str("databases: [{path: /a.db, checkpoint: {warn_after: 1h30m}}]\n",
                     "buf.yaml:1:52: invalid duration '1h30m': expected a number followed by ms, s, m, h, d or w");
        load_bad_str("databases: [{path: /a.db, checkpoint: {warn_after: 60}}]\n",
                     "buf.yaml:1:52: invalid duration '60': a unit is required");
        load_bad_str("databases: [{path: /a.db, checkpoint: [wal_size_limit]}]\n",
                     "buf.yaml:1:39: invalid value for 'checkpoint': expected a mapping, found a list");
        /* Unknown keys in the new section get the usual hints. */
        load_bad_str("databases: [{path: /a.db, checkpoint: {wal_size_ration: 5%}}]\n",
                     "buf.yaml:1:40: unknown key 'wal_size_ration' in checkpoint, did you mean 'wal_size_ratio'?");
        load_bad_str("databases: [{path: /a.db, checkpoint: {warnafter: 5m}}]\n",
                     "buf.yaml:1:40: unknown key 'warnafter' in checkpoint, did you mean 'warn_after'?");
        load_bad_str("databases: [{path: /a.db, checkpoint: {threshold: 5}}]\n",
                     "buf.yaml:1:40: unknown key 'threshold' in checkpoint, did you mean to put it under 'vacuum:'?");
        load_bad_str("databases: [{path: /a.db, checkpoint: {busy_timeout: 5s}}]\n",
                     "buf.yaml:1:40: unknown key 'busy_timeout' in checkpoint, did you mean to put it under 'retry:'?");
        load_bad_str("databases: [{path: /a.db, checkpoint: {size: 5MiB}}]\n",
                     "buf.yaml:1:40: unknown key 'size' in checkpoint: expected one of wal_size_limit, wal_size_ratio, warn_after");
        load_bad_str("databases: [{path: /a.db, analyze: {scale: 5%}}]\n",
                     "buf.yaml:1:37: unknown key 'scale' in analyze: expected one of interval, analysis_limit, threshold, scale_factor, large_table_rows");
        load_bad_str("databases: [{path: /a.db, analyze: {large_table_row: 5}}]\n",
                     "buf.yaml:1:37: unknown key 'large_table_row' in analyze, did you mean 'large_table_rows'?");
        load_bad_str("databases: [{path: /a.db, vacuum: {allow_rowid_changes: yes}}]\n",
                     "buf.yaml:1:36: unknown key 'allow_rowid_changes' in vacuum, did you mean 'allow_rowid_change'?");
        load_bad_str("databases: [{path: /a.db, wal_size_limit: 1GiB}]\n",
                     "buf.yaml:1:27: unknown key 'wal_size_limit' in databases entry, did you mean to put it under 'checkpoint:'?");
        load_bad_str("checkpoint: {}\ndatabases: [{path: /a.db}]\n",
                     "buf.yaml:1:1: unknown key 'checkpoint' at top level, did you mean to put it under 'defaults:'?");
}

static void test_files(void)
{
        struct conf_diag d = { 0 };
        struct conf *c = NULL;

        CHECK(conf_load(TEST_DATA_DIR "/no-such-file.yaml", &c, &d) == -ENOENT);
        CHECK(c == NULL);
        CHECK(d.n == 1 && strstr(d.msgs[0], "no-such-file.yaml: cannot open configuration: No such file"));
        conf_diag_clear(&d);

        CHECK(conf_load(TEST_DATA_DIR "/good", &c, &d) == -EISDIR);
        CHECK(c == NULL);
        CHECK(d.n == 1 && strstr(d.msgs[0], "/good: not a regular file"));
        conf_diag_clear(&d);

        CHECK(conf_load("/dev/null", &c, &d) == -EINVAL);
        CHECK(d.n == 1 && strstr(d.msgs[0], "/dev/null: not a regular file"));
        conf_diag_clear(&d);

        /* diag may be NULL */
        CHECK(conf_load(TEST_DATA_DIR "/bad/two-errors.yaml", &c, NULL) == -EINVAL);
        CHECK(c == NULL);
}

/* Every message of the bad files, in full, as "NAME.yaml:LINE:COLUMN: text"
 * lines (the directory cut off), gathered by test_bad_file() and compared
 * with data/bad.messages: the "# expect:" lines match a part of each
 * message, this the whole of it, byte for byte. */
static FILE *bad_messages;

static void record_messages(const struct conf_diag *d)
{
        static const char dir[] = TEST_DATA_DIR "/bad/";

        for (size_t j = 0; j < d->n && bad_messages; j++) {
                const char *m = d->msgs[j];

                fprintf(bad_messages, "%s\n", strncmp(m, dir, strlen(dir)) == 0 ? m + strlen(dir) : m);
        }
}

static char *read_file(const char *path)
{
        FILE *f = fopen(path, "r");
        char *s = NULL;
        size_t n = 0;

        if (!f)
                return NULL;
        if (getdelim(&s, &n, '\0', f) < 0) {
                free(s);
                s = NULL;
        }
        fclose(f);
        return s;
}

/* "# expect: 7:16: text" */
struct expect {
        unsigned line, column;
        char text[256];
        bool matched;
};

static void test_bad_file(const char *path)
{
        struct expect ex[16];
        size_t n_ex = 0;
        struct conf_diag d = { 0 };
        struct conf *c = NULL;
        char line[512];
        FILE *f = fopen(path, "r");
        bool all_matched = true;
        int r;

        CHECK_MSG(f != NULL, "%s: %s", path, strerror(errno));
        if (!f)
                return;
        while (n_ex < 16 && fgets(line, sizeof(line), f)) {
                struct expect *e = &ex[n_ex];
                int off = 0;

                if (sscanf(line, "# expect: %u:%u: %n", &e->line, &e->column, &off) != 2 || off == 0)
                        break;
                snprintf(e->text, sizeof(e->text), "%s", line + off);
                e->text[strcspn(e->text, "\n")] = '\0';
                e->matched = false;
                n_ex++;
        }
        fclose(f);
        CHECK_MSG(n_ex > 0, "%s: no '# expect: LINE:COLUMN: text' on the first line", path);

        r = conf_load(path, &c, &d);
        CHECK_MSG(r < 0 && c == NULL, "%s: accepted", path);
        conf_free(c);
        record_messages(&d);

        for (size_t i = 0; i < n_ex; i++) {
                char prefix[4200];

                snprintf(prefix, sizeof(prefix), "%s:%u:%u: ", path, ex[i].line, ex[i].column);
                for (size_t j = 0; j < d.n && !ex[i].matched; j++)
                        ex[i].matched = strncmp(d.msgs[j], prefix, strlen(prefix)) == 0 &&
                                        strstr(d.msgs[j] + strlen(prefix), ex[i].text);
                CHECK_MSG(ex[i].matched, "%s: no message '%u:%u: ...%s...'", path, ex[i].line, ex[i].column,
                          ex[i].text);
                all_matched = all_matched && ex[i].matched;
        }
        /* and nothing else: a cascade of follow-up errors is noise */
        CHECK_MSG(d.n == n_ex, "%s: %zu messages for %zu expected", path, d.n, n_ex);
        if (d.n != n_ex || !all_matched)
                print_diag(&d);
        for (size_t j = 0; j < d.n; j++) {
                const char *m = d.msgs[j];
                size_t len = strlen(m);

                CHECK_MSG(len > 0 && m[len - 1] != '.' && m[len - 1] != '\n', "%s: '%s'", path, m);
        }
        conf_diag_clear(&d);
}

static int name_cmp(const void *a, const void *b)
{
        return strcmp(*(char *const *)a, *(char *const *)b);
}

static void test_bad_files(void)
{
        DIR *dir = opendir(TEST_DATA_DIR "/bad");
        struct dirent *de;
        char *names[256];
        char *got = NULL, *want;
        size_t n = 0, got_len = 0;

        CHECK(dir != NULL);
        if (!dir)
                return;
        bad_messages = open_memstream(&got, &got_len);
        while ((de = readdir(dir)) && n < 256) {
                size_t len = strlen(de->d_name);

                if (len > 5 && strcmp(de->d_name + len - 5, ".yaml") == 0)
                        names[n++] = strdup(de->d_name);
        }
        closedir(dir);
        qsort(names, n, sizeof(names[0]), name_cmp);
        CHECK_MSG(n >= 25, "only %zu bad files", n);
        for (size_t i = 0; i < n; i++) {
                char path[4096];

                if (!names[i])
                        continue;
                snprintf(path, sizeof(path), "%s/bad/%s", TEST_DATA_DIR, names[i]);
                test_bad_file(path);
                free(names[i]);
        }
        if (bad_messages)
                fclose(bad_messages);
        bad_messages = NULL;
        want = read_file(TEST_DATA_DIR "/bad.messages");
        CHECK_MSG(want != NULL, "%s: %s", TEST_DATA_DIR "/bad.messages", strerror(errno));
        CHECK_MSG(got && want && strcmp(got, want) == 0, "the messages of data/bad differ from data/bad.messages");
        if (got && (!want || strcmp(got, want) != 0))
                fprintf(stderr, "# got:\n%s", got);
        free(got);
        free(want);
}

int main(void)
{
        test_duration();
        test_size();
        test_percent();
        test_window();
        test_format();
        test_init_defaults();
        test_minimal();
        test_full();
        test_defaults_after_databases();
        test_aliases();
        test_merge();
        test_forms();
        test_shipped();
        test_every_good_file();
        test_match();
        test_buffers();
        test_bool();
        test_new_keys();
        test_files();
        test_bad_files();
        return test_summary();
}
