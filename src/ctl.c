/* SPDX-License-Identifier: MIT */
/* sqlite-maintctl: the daemon's statistics and operations, one-shot. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <stdarg.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "conf.h"
#include "jobproc.h"
#include "json.h"
#include "maint.h"
#include "ctlclient.h"
#include "schedule.h"
#include "util.h"

/* Exit status, documented in --help and the man page. */
enum {
        EXIT_OK = 0,
        EXIT_FAILURE_OTHER = 1, /* missing, not a database, permission, I/O, cannot maintain */
        EXIT_USAGE = 2,
        EXIT_CORRUPT = 3,
        EXIT_NOSPACE = 4,
        EXIT_BUSY = 5,
        EXIT_ROWIDS = 6,        /* vacuum refused: it would renumber rowids */
};

enum command {
        CMD_STATS,
        CMD_VACUUM,
        CMD_ANALYZE,
        CMD_CHECK,
};

struct ctl {
        enum command cmd;
        bool json, force, full, deep, no_space_check, allow_rowid_change, wait;
        const char *socket; /* --socket */
        const char *since;  /* --since */
        int attempts;
        struct conf *conf;
        struct json j;
};

#define DEFAULT_ATTEMPTS 3

static void usage(FILE *f)
{
        fputs("Usage: sqlite-maintctl [OPTIONS] COMMAND [OPTIONS] DB...\n"
              "\n"
              "Statistics and maintenance of SQLite databases, one-shot, with the same\n"
              "safety checks as sqlite-maintd.\n"
              "\n"
              "Commands:\n"
              "  stats [--deep]      page counts, free pages, fragmentation, sizes, modes;\n"
              "                      --deep reads every page (SQLite's dbstat): the bytes unused\n"
              "                      inside the pages of each table and index, and the share of\n"
              "                      pages out of sequence, as sqlite3_analyzer counts them\n"
              "  vacuum [--force] [--no-space-check] [--allow-rowid-change]\n"
              "                      VACUUM when fragmentation reaches the threshold; --force\n"
              "                      skips the threshold, never the space and integrity checks;\n"
              "                      --no-space-check skips the free-space check (SQLite then\n"
              "                      fails with SQLITE_FULL, the database intact, if space runs out);\n"
              "                      --allow-rowid-change runs it even when it would renumber the\n"
              "                      rowids of tables without an INTEGER PRIMARY KEY or any index\n"
              "  analyze [--force]   ANALYZE of the tables whose statistics are missing or stale,\n"
              "                      each on its own; --force: of every table\n"
              "  check [--full]      quick_check, or integrity_check and FTS checks with --full\n"
              "\n"
              "stats and check never write: every file is left as it was.\n"
              "\n"
              "Commands asking the running sqlite-maintd, over its control socket:\n"
              "  status [DB]         every database it watches (or DB): figures, the last jobs,\n"
              "                      what comes next and why\n"
              "  explain DB          why it does or does not plan maintenance for DB now\n"
              "  run vacuum|analyze|check|checkpoint DB [--wait]\n"
              "                      queue that job now (every safety check still applies);\n"
              "                      --wait: wait for it and exit as the one-shot command would\n"
              "  history [DB] [--since TIME]\n"
              "                      past jobs from its state file (the newest 1000); TIME: a\n"
              "                      duration ago (2h, 7d) or a local date and time\n"
              "  metrics             its metrics, Prometheus text format\n"
              "\n"
              "Options:\n"
              "  -c, --config FILE   take thresholds and limits from FILE (the entry matching\n"
              "                      each database, else its defaults); without it, built-in\n"
              "                      defaults\n"
              "      --json          one JSON object per database on stdout\n"
              "      --attempts N    tries on a lock conflict (default 3), waiting retry.initial_backoff\n"
              "                      (1s), doubling, between them\n"
              "      --socket PATH   the daemon's control socket (default: control_socket of the\n"
              "                      configuration given with -c, else " DEFAULT_CONTROL_SOCKET ")\n"
              "  -h, --help          this text\n"
              "  -V, --version       the version\n"
              "\n"
              "Exit status: 0 success, 1 failure (missing, not a database, permission, I/O,\n"
              "cannot maintain, hot journal), 2 usage error, 3 corruption found, 4 refused for\n"
              "lack of space, 5 still busy after every attempt, 6 vacuum refused because it\n"
              "would renumber rowids, 7 the daemon cannot be reached (no socket, nobody\n"
              "listening, permission denied). With several databases, the first of 3, 4, 6,\n"
              "5, 1 that applies.\n", f);
}

int ctl_exit_code(enum maint_status s); /* ctlclient.c uses it too */
int ctl_exit_code(enum maint_status s)
{
        switch (s) {
        case MAINT_OK:
        case MAINT_SKIPPED: return EXIT_OK;
        case MAINT_CORRUPT: return EXIT_CORRUPT;
        case MAINT_NOSPACE: return EXIT_NOSPACE;
        case MAINT_BUSY: return EXIT_BUSY;
        case MAINT_ROWIDS: return EXIT_ROWIDS;
        default: return EXIT_FAILURE_OTHER;
        }
}

/* Keep the most important exit status: 3, then 4, 6, 5, 1. */
static int worse(int a, int b)
{
        static const int rank[] = { [EXIT_OK] = 0, [EXIT_FAILURE_OTHER] = 1, [EXIT_USAGE] = 6,
                                    [EXIT_CORRUPT] = 5, [EXIT_NOSPACE] = 4, [EXIT_BUSY] = 2,
                                    [EXIT_ROWIDS] = 3 };
        return rank[b] > rank[a] ? b : a;
}

static void json_stats(struct json *j, const struct dbstat *st)
{
        json_dbstat(j, st);
}

static void json_deep(struct json *j, const struct deep_stats *d)
{
        json_object_begin(j, "deep");
        json_u64(j, "btree_pages", d->btree_pages);
        json_u64(j, "unused_bytes", d->unused_bytes);
        json_fixed2(j, "unused_percent", deep_unused_percent(d->unused_bytes, d->btree_pages, d->page_size));
        if (d->nonsequential_known) {
                json_u64(j, "nonsequential_pages", d->nonsequential_pages);
                json_fixed2(j, "nonsequential_percent", deep_total_nonsequential_percent(d));
        }
        json_u64(j, "reclaimable_bytes", d->reclaimable_bytes);
        json_array_begin(j, "btrees");
        for (size_t i = 0; i < d->n_btrees; i++) {
                const struct btree_space *b = &d->btrees[i];
                uint64_t pages = b->interior_pages + b->leaf_pages + b->overflow_pages;

                json_object_begin(j, NULL);
                json_str(j, "name", b->name);
                json_str(j, "type", b->is_index ? "index" : "table");
                json_str(j, "table", b->table);
                json_u64(j, "pages", pages);
                json_u64(j, "interior_pages", b->interior_pages);
                json_u64(j, "leaf_pages", b->leaf_pages);
                json_u64(j, "overflow_pages", b->overflow_pages);
                json_u64(j, "unused_bytes", b->unused_bytes);
                json_fixed2(j, "unused_percent", deep_unused_percent(b->unused_bytes, pages, d->page_size));
                if (d->nonsequential_known) {
                        json_u64(j, "nonsequential_pages", b->nonsequential_pages);
                        json_fixed2(j, "nonsequential_percent",
                                    deep_nonsequential_percent(b->nonsequential_pages, pages));
                }
                json_object_end(j);
        }
        json_array_end(j);
        json_object_end(j);
}

/* vacuum's own figures: sizes before and after, and what stood in its way */
static void json_vacuum(struct json *j, const struct maint_result *r)
{
        json_u64(j, "bytes_reclaimed", r->bytes_reclaimed);
        if (r->wrote) {
                json_u64(j, "disk_bytes_before", r->disk_bytes_before);
                json_u64(j, "disk_bytes_after", r->disk_bytes_after);
        }
        json_u64(j, "page_bytes_reclaimed", r->page_bytes_reclaimed);
        if (r->have_before)
                json_fixed2(j, "fragmentation_before_percent", r->before.fragmentation_percent);
        if (r->have_after)
                json_fixed2(j, "fragmentation_after_percent", r->after.fragmentation_percent);
        json_bool(j, "checkpoint_busy", r->checkpoint_busy);
        if (r->check_after_skipped)
                json_str(j, "check_after", r->message);
        if (r->status == MAINT_NOSPACE && r->space_needed) {
                json_u64(j, "space_needed_bytes", r->space_needed);
                json_u64(j, "temp_space_needed_bytes", r->space_needed_tmp);
                json_u64(j, "space_free_bytes", r->space_free_db);
                json_u64(j, "temp_space_free_bytes", r->space_free_tmp);
                json_str(j, "temp_dir", r->tmp_dir);
        }
}

/* One object per table: vacuum's (refused: those whose rowids would
 * change; done: those renumbered) with their rowids, analyze's with their
 * verdicts. */
static void json_tables(struct json *j, const struct maint_result *r, bool analyze)
{
        json_array_begin(j, analyze ? "tables" : "renumbered_tables");
        for (size_t i = 0; i < r->n_tables; i++) {
                const struct maint_table *t = &r->tables[i];

                json_object_begin(j, NULL);
                json_str(j, "name", t->name);
                if (analyze)
                        json_str(j, "verdict", maint_table_verdict_name(t->verdict));
                json_u64(j, "rows", t->rows);
                if (analyze) {
                        json_u64(j, "statistics_rows", t->baseline_rows);
                } else {
                        json_i64(j, "rowid_min", t->rowid_min);
                        json_i64(j, "rowid_max", t->rowid_max);
                }
                json_object_end(j);
        }
        json_array_end(j);
}

/* The full-text and R*Tree indexes a check covered, or could not */
static void json_vtabs(struct json *j, const struct maint_result *r)
{
        json_array_begin(j, "virtual_tables");
        for (size_t i = 0; i < r->n_vtabs; i++) {
                json_object_begin(j, NULL);
                json_str(j, "name", r->vtabs[i].name);
                json_str(j, "kind", vtab_kind_key(r->vtabs[i].kind));
                json_str(j, "verdict", vtab_verdict_name(r->vtabs[i].verdict));
                if (r->vtabs[i].why)
                        json_str(j, r->vtabs[i].verdict == VTAB_VERDICT_CANNOT ? "reason" : "error",
                                 r->vtabs[i].why);
                json_object_end(j);
        }
        json_array_end(j);
}

/* One JSON object per database: its figures, then what the command found. */
static void print_json(struct ctl *c, const char *path, const char *op, const struct maint_result *r)
{
        struct json *j = &c->j;
        const struct dbstat *st = r->have_after ? &r->after : r->have_before ? &r->before : NULL;

        json_object_begin(j, NULL);
        json_str(j, "path", path);
        if (op)
                json_str(j, "operation", op);
        json_str(j, "status", maint_status_name(r->status));
        if (st)
                json_stats(j, st);
        if (c->cmd == CMD_VACUUM)
                json_vacuum(j, r);
        if (r->rolled_back_journal)
                json_bool(j, "rolled_back_journal", true);
        if (c->cmd == CMD_VACUUM && r->n_tables)
                json_tables(j, r, false);
        if (c->cmd == CMD_ANALYZE && (r->n_tables || r->status == MAINT_OK))
                json_tables(j, r, true);
        if (r->have_deep)
                json_deep(j, &r->deep);
        if (r->n_vtabs)
                json_vtabs(j, r);
        if (op)
                json_u64(j, "duration_ms", r->duration_ms);
        if (r->status != MAINT_OK)
                json_str(j, r->status == MAINT_SKIPPED ? "reason" : "error", r->message);
        if (r->n_problems) {
                json_array_begin(j, "problems");
                for (size_t i = 0; i < r->n_problems; i++)
                        json_str(j, NULL, r->problems[i]);
                json_array_end(j);
        }
        json_object_end(j);
}

/* Human output: each line escaped (util_escape), so a file name cannot
 * forge lines or reach the terminal as escape sequences; JSON output is
 * escaped by json.c. */
void ctl_vout(FILE *f, const char *prefix, const char *fmt, va_list ap)
{
        char line[8192], safe[3 * 8192];

        vsnprintf(line, sizeof(line), fmt, ap);
        fprintf(f, "%s%s\n", prefix, util_escape(line, safe, sizeof(safe)));
}

static void out(FILE *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void out(FILE *f, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        ctl_vout(f, "", fmt, ap);
        va_end(ap);
}

static void print_table_header(void)
{
        printf("%7s %10s %10s %6s %10s %10s %10s %-8s %-11s %s\n", "FRAG%", "FREE", "PAGES", "PAGESZ",
               "SIZE", "WAL", "WASTED", "JOURNAL", "AUTO_VACUUM", "PATH");
}

static void print_stats_row(const char *path, const struct dbstat *st)
{
        char size[32], wal[32], wasted[32];

        out(stdout, "%7.2f %10llu %10llu %6u %10s %10s %10s %-8s %-11s %s", st->fragmentation_percent,
            (unsigned long long)st->freelist_count, (unsigned long long)st->page_count, st->page_size,
            util_format_bytes(st->file_size_bytes, size, sizeof(size)),
            util_format_bytes(st->wal_size_bytes, wal, sizeof(wal)),
            util_format_bytes(st->estimated_wasted_space_bytes, wasted, sizeof(wasted)), st->journal_mode,
            dbstat_auto_vacuum_name(st->auto_vacuum), path);
}

/* The deep scan: the database's figures, then one line per b-tree. */
static void print_deep(const char *path, const struct maint_result *r)
{
        const struct deep_stats *d = &r->deep;
        char unused[32], all[32], back[32], nonseq[32] = "unknown";

        if (d->nonsequential_known)
                snprintf(nonseq, sizeof(nonseq), "%.2f%%", deep_total_nonsequential_percent(d));
        out(stdout, "%s: %llu pages of %u bytes, %llu on the freelist (%.2f%%); inside the pages of its b-trees "
            "%s of %s unused (%.2f%%), non-sequential pages %s; a VACUUM could give back up to %s",
            path, (unsigned long long)d->page_count, d->page_size, (unsigned long long)d->freelist_count,
            dbstat_fragmentation(d->freelist_count, d->page_count),
            util_format_bytes(d->unused_bytes, unused, sizeof(unused)),
            util_format_bytes(d->btree_pages * d->page_size, all, sizeof(all)),
            deep_unused_percent(d->unused_bytes, d->btree_pages, d->page_size), nonseq,
            util_format_bytes(d->reclaimable_bytes, back, sizeof(back)));
        printf("  %-5s %10s %12s %8s %8s  %s\n", "TYPE", "PAGES", "UNUSED", "UNUSED%", "NONSEQ%", "NAME");
        for (size_t i = 0; i < d->n_btrees; i++) {
                const struct btree_space *b = &d->btrees[i];
                uint64_t pages = b->interior_pages + b->leaf_pages + b->overflow_pages;

                snprintf(nonseq, sizeof(nonseq), "%.2f", deep_nonsequential_percent(b->nonsequential_pages, pages));
                out(stdout, "  %-5s %10llu %12llu %8.2f %8s  %s%s%s%s", b->is_index ? "index" : "table",
                    (unsigned long long)pages, (unsigned long long)b->unused_bytes,
                    deep_unused_percent(b->unused_bytes, pages, d->page_size),
                    d->nonsequential_known ? nonseq : "-", b->name, b->is_index ? " (on " : "",
                    b->is_index ? b->table : "", b->is_index ? ")" : "");
        }
}

/* "analyzed 2 of 5 tables in 12 ms: a (analyzed, 10 rows), b (unchanged, 3 rows)" */
static void print_analyzed(const char *path, const struct maint_result *r)
{
        char line[4096];
        size_t n = 0, k;

        for (size_t i = 0; i < r->n_tables; i++)
                n += r->tables[i].verdict == TABLE_ANALYZED || r->tables[i].verdict == TABLE_ANALYZED_LIMITED;
        k = (size_t)snprintf(line, sizeof(line), "analyzed %zu of %zu table%s in %llu ms%s", n, r->n_tables,
                             r->n_tables == 1 ? "" : "s", (unsigned long long)r->duration_ms, r->n_tables ? ":" : "");
        for (size_t i = 0; i < r->n_tables && k < sizeof(line); i++)
                k += (size_t)snprintf(line + k, sizeof(line) - k, " %s (%s, %llu rows)%s", r->tables[i].name,
                                      maint_table_verdict_name(r->tables[i].verdict),
                                      (unsigned long long)r->tables[i].rows, i + 1 < r->n_tables ? "," : "");
        out(stdout, "%s: %s", path, line);
}

/* " and 2 full-text or R*Tree indexes": what a full check covered */
static const char *vtabs_checked(const struct maint_result *r, char *buf, size_t len)
{
        snprintf(buf, len, " and %zu full-text or R*Tree index%s", r->n_vtabs, r->n_vtabs == 1 ? "" : "es");
        return buf;
}

static void print_human(struct ctl *c, const char *path, const struct maint_result *r)
{
        char bytes[32];

        if (r->rolled_back_journal)
                out(stdout, "%s: rolled back a hot journal first (a transaction interrupted by a crash), as any "
                    "read-write open would", path);

        if (r->status != MAINT_OK && r->status != MAINT_SKIPPED) {
                out(stderr, "sqlite-maintctl: %s: %s: %s", path, maint_status_name(r->status), r->message);
                for (size_t i = 0; i < r->n_problems && i < 10; i++)
                        out(stderr, "    %s", r->problems[i]);
                if (r->n_problems > 10)
                        out(stderr, "    ... %zu more", r->n_problems - 10);
                return;
        }
        if (r->status == MAINT_SKIPPED) {
                out(stdout, "%s: skipped: %s", path, r->message);
                return;
        }
        switch (c->cmd) {
        case CMD_STATS:
                if (c->deep)
                        print_deep(path, r);
                else
                        print_stats_row(path, &r->after);
                break;
        case CMD_VACUUM:
                out(stdout, "%s: vacuumed: fragmentation %.2f%% -> %.2f%%, reclaimed %s (on disk %s -> %s) in %llu ms",
                    path, r->before.fragmentation_percent, r->after.fragmentation_percent,
                    util_format_bytes(r->bytes_reclaimed, bytes, sizeof(bytes)),
                    util_format_bytes(r->disk_bytes_before, (char[32]){ 0 }, 32),
                    util_format_bytes(r->disk_bytes_after, (char[32]){ 0 }, 32), (unsigned long long)r->duration_ms);
                for (size_t i = 0; i < r->n_tables; i++)
                        out(stdout, "%s: rowids of table %s renumbered 1..%llu (they were %lld..%lld), as allowed", path,
                            r->tables[i].name, (unsigned long long)r->tables[i].rows,
                            (long long)r->tables[i].rowid_min, (long long)r->tables[i].rowid_max);
                if (r->checkpoint_busy)
                        out(stderr, "sqlite-maintctl: %s: warning: WAL checkpoint was busy (a reader is open); "
                            "the -wal file was not truncated", path);
                if (r->check_after_skipped)
                        out(stderr, "sqlite-maintctl: %s: warning: VACUUM done; %s", path, r->message);
                break;
        case CMD_ANALYZE:
                print_analyzed(path, r);
                break;
        case CMD_CHECK:
                out(stdout, "%s: ok (%s%s, %llu ms)", path, c->full ? "integrity_check" : "quick_check",
                    r->n_vtabs ? vtabs_checked(r, (char[64]){ 0 }, 64) : "", (unsigned long long)r->duration_ms);
                break;
        }
}

/* Threshold and min_reclaim (the daemon's rule, sched_threshold), unless
 * --force: SKIPPED with the reason. */
static bool below_threshold(const struct vacuum_conf *v, const struct dbstat *st, struct maint_result *r)
{
        char have[32], want[32];

        switch (sched_threshold(st, v)) {
        case SCHED_REASON_BELOW:
                snprintf(r->message, sizeof(r->message),
                         "fragmentation %.2f%% is below the threshold %.2f%% (use --force)",
                         st->fragmentation_percent, v->threshold);
                return true;
        case SCHED_REASON_MIN_RECLAIM:
                snprintf(r->message, sizeof(r->message), "only %s to reclaim, below min_reclaim %s (use --force)",
                         util_format_bytes(st->estimated_wasted_space_bytes, have, sizeof(have)),
                         util_format_bytes(v->min_reclaim, want, sizeof(want)));
                return true;
        default:
                return false;
        }
}

/* The database a command works on: its directory, opened as the admin
 * named it, and its name there; every operation runs in a job process
 * (jobproc.h) with the file owner's identity and a time limit. */
struct target_db {
        const char *path;
        int dirfd;
        const char *name;
        const struct db_conf *dc;
};

/* A long VACUUM's phase and time on a terminal (stderr), on one line
 * rewritten in place; path NULL: the line wiped, if one was written. */
static void progress_line(void *path, int phase, uint64_t elapsed_ms)
{
        static bool shown;
        char a[32], safe[3 * PATH_MAX];

        if (!path) {
                if (shown)
                        fputs("\r\033[K", stderr);
                shown = false;
                return;
        }
        if (elapsed_ms < 2000 || elapsed_ms % 1000 >= 100) /* long ones only, once a second */
                return;
        fprintf(stderr, "\r\033[K%s: VACUUM %s, %s", util_escape(path, safe, sizeof(safe)),
                maint_phase_name((enum maint_phase)phase), util_format_approx(elapsed_ms / 1000 * 1000, a, sizeof(a)));
        shown = true;
}

static enum maint_status run_op(const struct target_db *t, enum maint_op op, const struct maint_opts *o,
                                struct maint_result *r)
{
        const struct limits_conf *l = &t->dc->limits;
        uint64_t timeout = l->job_timeout_ms;
        struct stat st;
        struct jobproc_request req = {
                .dirfd = t->dirfd,
                .name = t->name,
                .display_path = t->path,
                .op = op,
                .opts = o,
        };

        /* per GiB the file takes on disk: its length can be made anything
         * (a sparse file), its blocks cannot */
        if (op == MAINT_OP_VACUUM && fstatat(t->dirfd, t->name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
                double bytes = (double)(st.st_size < st.st_blocks * 512 ? st.st_size : st.st_blocks * 512);

                timeout += (uint64_t)(bytes / (double)(1ull << 30) * (double)l->vacuum_timeout_per_gib_ms);
        }
        req.timeout_ms = timeout;
        if ((op == MAINT_OP_VACUUM || op == MAINT_OP_INCREMENTAL_VACUUM) && isatty(STDERR_FILENO)) {
                req.tick = progress_line;
                req.tick_userdata = (void *)t->path;
        }
        r->status = jobproc_run(&req, NULL, r);
        if (req.tick)
                progress_line(NULL, -1, 0);
        return r->status;
}

static enum maint_status run_once(struct ctl *c, const struct target_db *t, const struct maint_opts *o,
                                  struct maint_result *r)
{
        const struct db_conf *dc = t->dc;

        switch (c->cmd) {
        case CMD_STATS:
                return run_op(t, c->deep ? MAINT_OP_DEEP_SCAN : MAINT_OP_STATS, o, r);
        case CMD_ANALYZE:
                return run_op(t, MAINT_OP_ANALYZE, o, r);
        case CMD_CHECK:
                return run_op(t, MAINT_OP_CHECK, o, r);
        case CMD_VACUUM:
                if (!c->force) {
                        if (run_op(t, MAINT_OP_STATS, o, r) != MAINT_OK)
                                return r->status;
                        if (below_threshold(&dc->vacuum, &r->after, r)) {
                                r->before = r->after;
                                r->have_before = true;
                                r->status = MAINT_SKIPPED;
                                return r->status;
                        }
                }
                if (dc->vacuum.mode == VACUUM_MODE_INCREMENTAL) {
                        run_op(t, MAINT_OP_INCREMENTAL_VACUUM, o, r);
                        /* Not an incremental database (the daemon's rule,
                         * sched_vacuum_action): a full VACUUM is what the admin asked. */
                        if (r->status != MAINT_CANNOT || !r->have_before ||
                            sched_vacuum_action(&r->before, &dc->vacuum) == SCHED_INCREMENTAL_VACUUM)
                                return r->status;
                }
                return run_op(t, MAINT_OP_VACUUM, o, r);
        }
        return MAINT_ERROR;
}

/* Open the directory of path: the symbolic links root or the invoking
 * user own are followed, another user's are not (they are theirs to point
 * at any file, as root opens it); the database's own name is never. */
static int open_dir_of(const char *path, const char **name, struct maint_result *r)
{
        const char *slash = strrchr(path, '/');
        char dir[4096];
        int fd;

        *name = slash + 1;
        snprintf(dir, sizeof(dir), "%.*s", slash == path ? 1 : (int)(slash - path), path);
        fd = util_open_dir_trusted_links(dir, r->message, sizeof(r->message));
        if (fd < 0)
                r->status = fd == -ENOENT || fd == -ENOTDIR ? MAINT_MISSING
                          : fd == -EACCES || fd == -ELOOP ? MAINT_PERMISSION : MAINT_IOERR;
        return fd;
}

static int process(struct ctl *c, const char *arg, const struct db_conf *defaults)
{
        static const char *const ops[] = { [CMD_STATS] = NULL, [CMD_VACUUM] = "vacuum",
                                           [CMD_ANALYZE] = "analyze", [CMD_CHECK] = "check" };
        struct maint_result r = { 0 };
        const struct db_conf *dc;
        struct target_db t;
        struct maint_opts o;
        char *path;
        int e, code;

        e = util_absolute_path(arg, &path);
        if (e < 0) {
                out(stderr, "sqlite-maintctl: %s: %s", arg, strerror(-e));
                return EXIT_FAILURE_OTHER;
        }
        dc = c->conf ? conf_match(c->conf, path) : NULL;
        if (!dc)
                dc = defaults;
        maint_opts_from_conf(&o, &dc->vacuum, &dc->analyze, &dc->retry);
        if (c->cmd == CMD_CHECK)
                o.integrity = c->full ? INTEGRITY_FULL : INTEGRITY_QUICK;
        o.skip_space_check = c->no_space_check;
        o.allow_rowid_change = o.allow_rowid_change || c->allow_rowid_change;
        o.analyze_all = c->cmd == CMD_ANALYZE && c->force;

        t = (struct target_db){ .path = path, .dc = dc };
        t.dirfd = open_dir_of(path, &t.name, &r);
        /* The daemon's backoff: retry.initial_backoff doubling, with jitter. */
        for (int attempt = 1; t.dirfd >= 0; attempt++) {
                run_once(c, &t, &o, &r);
                if (r.status != MAINT_BUSY || attempt >= c->attempts)
                        break;
                util_sleep_ms(sched_backoff_ms(&dc->retry, attempt, (uint32_t)random()));
        }
        if (t.dirfd >= 0)
                close(t.dirfd);
        if (r.status == MAINT_BUSY) {
                char msg[sizeof(r.message) + 64];

                snprintf(msg, sizeof(msg), "still busy after %d attempt%s (the last: %s)", c->attempts,
                         c->attempts == 1 ? "" : "s", r.message);
                util_strlcpy(r.message, msg, sizeof(r.message));
        }
        if (c->json)
                print_json(c, path, ops[c->cmd], &r);
        else
                print_human(c, path, &r);
        code = ctl_exit_code(r.status);
        maint_result_clear(&r);
        free(path);
        return code;
}

static int parse_command(const char *s, enum command *ret)
{
        static const char *const names[] = { [CMD_STATS] = "stats", [CMD_VACUUM] = "vacuum",
                                             [CMD_ANALYZE] = "analyze", [CMD_CHECK] = "check" };

        for (size_t i = 0; i < ELEMENTSOF(names); i++)
                if (strcmp(s, names[i]) == 0) {
                        *ret = (enum command)i;
                        return 0;
                }
        return -EINVAL;
}

/* conf_load_report()'s sink: every message on stderr, escaped. */
static void report(const char *line, void *userdata)
{
        out(stderr, "sqlite-maintctl: %s", line);
}

/* The options before and after the command, one case each: -1 to go on,
 * else the exit status (--help, --version, a usage error). */
static int parse_options(int argc, char **argv, struct ctl *c, const char **config)
{
        enum { OPT_JSON = 0x100, OPT_ATTEMPTS, OPT_FORCE, OPT_FULL, OPT_DEEP, OPT_NO_SPACE_CHECK, OPT_ALLOW_ROWID_CHANGE,
               OPT_SOCKET, OPT_WAIT, OPT_SINCE };
        static const struct option options[] = {
                { "config", required_argument, NULL, 'c' },
                { "json", no_argument, NULL, OPT_JSON },
                { "attempts", required_argument, NULL, OPT_ATTEMPTS },
                { "force", no_argument, NULL, OPT_FORCE },
                { "full", no_argument, NULL, OPT_FULL },
                { "deep", no_argument, NULL, OPT_DEEP },
                { "no-space-check", no_argument, NULL, OPT_NO_SPACE_CHECK },
                { "allow-rowid-change", no_argument, NULL, OPT_ALLOW_ROWID_CHANGE },
                { "socket", required_argument, NULL, OPT_SOCKET },
                { "wait", no_argument, NULL, OPT_WAIT },
                { "since", required_argument, NULL, OPT_SINCE },
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, 'V' },
                { NULL, 0, NULL, 0 },
        };
        char *end;
        long n;
        int opt;

        while ((opt = getopt_long(argc, argv, "c:hV", options, NULL)) != -1) {
                switch (opt) {
                case 'c': *config = optarg; break;
                case OPT_JSON: c->json = true; break;
                case OPT_FORCE: c->force = true; break;
                case OPT_FULL: c->full = true; break;
                case OPT_DEEP: c->deep = true; break;
                case OPT_NO_SPACE_CHECK: c->no_space_check = true; break;
                case OPT_ALLOW_ROWID_CHANGE: c->allow_rowid_change = true; break;
                case OPT_SOCKET: c->socket = optarg; break;
                case OPT_WAIT: c->wait = true; break;
                case OPT_SINCE: c->since = optarg; break;
                case OPT_ATTEMPTS:
                        errno = 0;
                        n = strtol(optarg, &end, 10);
                        if (errno || *end || n < 1 || n > 100) {
                                out(stderr, "sqlite-maintctl: --attempts takes a number from 1 to 100, not '%s'", optarg);
                                return EXIT_USAGE;
                        }
                        c->attempts = (int)n;
                        break;
                case 'h': usage(stdout); return EXIT_OK;
                case 'V': printf("sqlite-maintctl %s\n", PACKAGE_VERSION); return EXIT_OK;
                default: usage(stderr); return EXIT_USAGE;
                }
        }
        return -1;
}

/* The command, the options it takes (a table, checked in its order) and
 * at least one database: -1 to go on, else EXIT_USAGE. */
static int check_command(int argc, char **argv, struct ctl *c)
{
        const struct {
                bool given;
                unsigned commands; /* 1u << CMD_... */
                const char *message;
        } rules[] = {
                { c->force, 1u << CMD_VACUUM | 1u << CMD_ANALYZE, "--force goes with vacuum or analyze" },
                { c->allow_rowid_change, 1u << CMD_VACUUM, "--allow-rowid-change goes with vacuum" },
                { c->no_space_check, 1u << CMD_VACUUM, "--no-space-check goes with vacuum" },
                { c->full, 1u << CMD_CHECK, "--full goes with check" },
                { c->deep, 1u << CMD_STATS, "--deep goes with stats" },
        };

        if (optind >= argc) {
                fputs("sqlite-maintctl: no command given\n", stderr);
                usage(stderr);
                return EXIT_USAGE;
        }
        if (parse_command(argv[optind], &c->cmd) < 0) {
                out(stderr, "sqlite-maintctl: unknown command '%s'", argv[optind]);
                usage(stderr);
                return EXIT_USAGE;
        }
        for (size_t i = 0; i < ELEMENTSOF(rules); i++)
                if (rules[i].given && !(rules[i].commands & 1u << c->cmd)) {
                        fprintf(stderr, "sqlite-maintctl: %s\n", rules[i].message);
                        return EXIT_USAGE;
                }
        if (optind + 1 >= argc) {
                out(stderr, "sqlite-maintctl: %s: no database given", argv[optind]);
                return EXIT_USAGE;
        }
        return -1;
}

/* The command on each database named, in order: the worst exit status. */
static int run_all(struct ctl *c, int argc, char **argv, const struct db_conf *defaults)
{
        int code = EXIT_OK;

        if (jobproc_init() < 0) {
                fputs("sqlite-maintctl: cannot find its own executable (/proc/self/exe)\n", stderr);
                return EXIT_FAILURE_OTHER;
        }
        /* a job process that ends early must not kill the tool */
        signal(SIGPIPE, SIG_IGN);
        srandom((unsigned)time(NULL) ^ (unsigned)getpid()); /* backoff jitter */
        json_init(&c->j, stdout);
        if (c->cmd == CMD_STATS && !c->json && !c->deep)
                print_table_header();
        for (int i = optind + 1; i < argc; i++) {
                code = worse(code, process(c, argv[i], defaults));
                fflush(stdout);
        }
        return code;
}

/* status, explain, run, metrics: asked of the daemon over its control
 * socket: --socket, else the configuration's control_socket (-c), else
 * the built-in one. */
static int daemon_command(struct ctl *c, const char *config, int argc, char **argv)
{
        const char *path = c->socket ? c->socket : DEFAULT_CONTROL_SOCKET;
        struct conf *conf = NULL;
        int code;

        if (c->force || c->full || c->deep || c->no_space_check || c->allow_rowid_change) {
                out(stderr, "sqlite-maintctl: %s takes --json, --wait (run) and --socket", argv[optind]);
                return EXIT_USAGE;
        }
        if (!c->socket && config) {
                if (conf_load_report(config, &conf, report, NULL) < 0)
                        return EXIT_USAGE;
                path = conf->control_socket;
        }
        code = ctlclient_run(path, argc - optind, argv + optind, c->json, c->wait, c->since);
        conf_free(conf);
        return code;
}

int main(int argc, char **argv)
{
        struct ctl c = { .attempts = DEFAULT_ATTEMPTS };
        const char *config = NULL;
        struct db_conf defaults;
        int code;

        if (argc == 2 && strcmp(argv[1], JOBPROC_ARG) == 0)
                jobproc_child_main();
        code = parse_options(argc, argv, &c, &config);
        if (code < 0 && optind < argc && ctlclient_is_command(argv[optind]))
                return daemon_command(&c, config, argc, argv);
        if (code < 0 && (c.wait || c.since || c.socket)) {
                fprintf(stderr, "sqlite-maintctl: %s\n", c.wait ? "--wait goes with run"
                                                      : c.since ? "--since goes with history"
                                                                : "--socket goes with status, explain, run, history and metrics");
                return EXIT_USAGE;
        }
        if (code < 0)
                code = check_command(argc, argv, &c);
        if (code >= 0)
                return code;
        if (config && conf_load_report(config, &c.conf, report, NULL) < 0)
                return EXIT_USAGE;
        /* Without a matching entry: the config's defaults, or the built-in ones. */
        conf_db_defaults(c.conf, &defaults);
        code = run_all(&c, argc, argv, &defaults);
        conf_free(c.conf);
        return code;
}
