/* SPDX-License-Identifier: MIT */
/* expand_cost: what one expansion of a databases: glob costs (src/targets.c),
 * whole (targets_expand: at start and at a reload, on the loop thread) and
 * in its two parts: the walk (targets_list, on a worker at each poll) and
 * its application (targets_apply, on the loop thread); against the bare
 * walk any expansion must do and against glob(3); and what one header read
 * costs (dbstat_read_header_at), the loop thread's yardstick.
 * One measurement per run, printed as one line of JSON; bench/expand-cost.py
 * runs it again and again and takes medians.
 *
 *   expand_cost [--max-matches N] [--drop-caches] MODE GLOB
 *
 * MODE:
 *   first      an empty set of targets (start, or every file new): each match
 *              is a new target; they join the sorted set in one merge
 *   steady     every file already a target, as at every poll after the first
 *              (an untimed expansion first): the walk and its application
 *   list       steady, only the walk (targets_list), which the daemon runs on
 *              a worker thread
 *   apply      steady, only the application of a walk made untimed just
 *              before (targets_apply): what the loop thread does per poll
 *   walk       the reference: opendir/readdir and fnmatch(FNM_PERIOD), one
 *              component at a time, counting the regular files that match;
 *              no path built, nothing kept
 *   glob       glob(3) of GLOB, sorted, as a shell expands it
 *   header     dbstat_read_header_at() of every target in turn (an untimed
 *              expansion first); the files must be SQLite databases
 * --drop-caches  sync and echo 3 > /proc/sys/vm/drop_caches just before the
 *              timed part (root). Each mode runs once untimed first, so
 *              that a cold run reads the directories from disk, not this
 *              program's code; "first" then empties its set of targets and
 *              gives the memory back (malloc_trim) before the timed one.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <glob.h>
#include <inttypes.h>
#include <limits.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "conf.h"
#include "dbstat.h"
#include "targets.h"

struct sample {
        struct timespec wall, cpu;
        struct rusage ru;
};

static void sample_now(struct sample *s)
{
        getrusage(RUSAGE_SELF, &s->ru);
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &s->cpu);
        clock_gettime(CLOCK_MONOTONIC, &s->wall);
}

static double ts_us(const struct timespec *a, const struct timespec *b)
{
        return (double)(b->tv_sec - a->tv_sec) * 1e6 + (double)(b->tv_nsec - a->tv_nsec) / 1e3;
}

static double tv_us(const struct timeval *a, const struct timeval *b)
{
        return (double)(b->tv_sec - a->tv_sec) * 1e6 + (double)(b->tv_usec - a->tv_usec);
}

static int drop_caches(void)
{
        int fd;
        ssize_t n;

        sync();
        fd = open("/proc/sys/vm/drop_caches", O_WRONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        n = write(fd, "3\n", 2);
        close(fd);
        return n == 2 ? 0 : -EIO;
}

/* ---- the reference walk --------------------------------------------------- */

static bool has_glob(const char *s)
{
        return strpbrk(s, "*?[") != NULL;
}

/* Regular files under fd matching the components in rest ('/'-separated). */
static uint64_t walk(int fd, const char *rest)
{
        const char *slash = strchr(rest, '/');
        size_t n = slash ? (size_t)(slash - rest) : strlen(rest);
        char comp[NAME_MAX + 1];
        struct dirent *de;
        uint64_t found = 0;
        DIR *d;

        if (n == 0 || n > NAME_MAX)
                return 0;
        memcpy(comp, rest, n);
        comp[n] = '\0';
        d = fdopendir(fd);
        if (!d) {
                close(fd);
                return 0;
        }
        while ((de = readdir(d))) {
                if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0 ||
                    fnmatch(comp, de->d_name, FNM_PERIOD) != 0)
                        continue;
                if (slash) {
                        int sub;

                        if (de->d_type != DT_DIR)
                                continue;
                        sub = openat(dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                        if (sub >= 0)
                                found += walk(sub, slash + 1);
                } else if (de->d_type == DT_REG) {
                        found++;
                }
        }
        closedir(d);
        return found;
}

/* The glob from its directory before the first glob component. */
static uint64_t walk_glob(const char *pattern)
{
        char root[PATH_MAX];
        const char *p = pattern, *last = pattern;
        int fd;

        /* the last slash before the first component with a glob character */
        for (const char *s = strchr(pattern + 1, '/'); s; s = strchr(s + 1, '/')) {
                char comp[NAME_MAX + 1];
                size_t n = (size_t)(s - p - 1);

                if (n > NAME_MAX)
                        return 0;
                memcpy(comp, p + 1, n);
                comp[n] = '\0';
                if (has_glob(comp))
                        break;
                last = s;
                p = s;
        }
        if ((size_t)(last - pattern) >= sizeof(root))
                return 0;
        memcpy(root, pattern, (size_t)(last - pattern));
        root[last - pattern] = '\0';
        fd = open(root[0] ? root : "/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        return fd < 0 ? 0 : walk(fd, last + 1);
}

/* ---- targets_expand --------------------------------------------------------- */

static uint64_t n_added, n_refused;

static void on_added(void *userdata, struct target *t)
{
        n_added++;
}

static void on_refused(void *userdata, const struct db_conf *dc, const char *path, const char *why)
{
        n_refused++;
}

static int load(const char *pattern, uint64_t max_matches, struct conf **ret)
{
        char buf[PATH_MAX + 256];
        struct conf_diag diag = { 0 };
        int n, r;

        if (max_matches)
                n = snprintf(buf, sizeof(buf), "defaults:\n  limits:\n    max_matches: %" PRIu64 "\n"
                             "databases:\n  - path: \"%s\"\n", max_matches, pattern);
        else
                n = snprintf(buf, sizeof(buf), "databases:\n  - path: \"%s\"\n", pattern);
        if (n < 0 || (size_t)n >= sizeof(buf))
                return -ENAMETOOLONG;
        r = conf_load_buffer("expand_cost", buf, (size_t)n, ret, &diag);
        for (size_t i = 0; i < diag.n; i++)
                fprintf(stderr, "%s\n", diag.msgs[i]);
        conf_diag_clear(&diag);
        return r;
}

int main(int argc, char **argv)
{
        const struct targets_events ev = { on_added, on_refused, NULL };
        uint64_t max_matches = 0, matched = 0;
        bool drop = false;
        const char *mode, *pattern;
        struct conf *c = NULL;
        struct targets ts;
        struct sample a, b;
        double read_max_us = 0;
        uint64_t reads_ok = 0;
        int i, r;

        for (i = 1; i < argc && argv[i][0] == '-'; i++) {
                if (strcmp(argv[i], "--drop-caches") == 0)
                        drop = true;
                else if (strcmp(argv[i], "--max-matches") == 0 && i + 1 < argc)
                        max_matches = strtoull(argv[++i], NULL, 10);
                else
                        break;
        }
        if (argc - i != 2) {
                fprintf(stderr, "usage: %s [--max-matches N] [--drop-caches] first|steady|list|apply|walk|glob|header GLOB\n",
                        argv[0]);
                return 2;
        }
        mode = argv[i];
        pattern = argv[i + 1];

        targets_init(&ts);
        bool expands = strcmp(mode, "first") == 0 || strcmp(mode, "steady") == 0 || strcmp(mode, "list") == 0 ||
                       strcmp(mode, "apply") == 0;
        struct listing *l = NULL;

        if (strcmp(mode, "walk") != 0 && strcmp(mode, "glob") != 0) {
                r = load(pattern, max_matches, &c);
                if (r < 0 || targets_configure(&ts, c) < 0) {
                        fprintf(stderr, "%s: cannot load a configuration for it (%s)\n", pattern, strerror(-r));
                        return 1;
                }
                if (c->n_dbs != 1 || !c->dbs[0].is_glob) {
                        fprintf(stderr, "%s: not a glob\n", pattern);
                        return 2;
                }
                max_matches = c->dbs[0].limits.max_matches;
                /* untimed: the code runs once, so a cold run reads
                 * directories from disk, not this program's pages */
                if (targets_expand(&ts, &ev) < 0) {
                        fprintf(stderr, "out of memory\n");
                        return 1;
                }
                if (strcmp(mode, "first") == 0) {
                        targets_clear(&ts);
                        malloc_trim(0); /* its memory comes from the system again, as at start */
                        if (targets_configure(&ts, c) < 0) {
                                fprintf(stderr, "out of memory\n");
                                return 1;
                        }
                }
        } else if (drop) {
                if (strcmp(mode, "walk") == 0) {
                        walk_glob(pattern);
                } else {
                        glob_t g;

                        if (glob(pattern, 0, NULL, &g) == 0)
                                globfree(&g);
                }
        }
        if (drop && (r = drop_caches()) < 0) {
                fprintf(stderr, "cannot drop the caches: %s\n", strerror(-r));
                return 1;
        }

        if (strcmp(mode, "apply") == 0 || strcmp(mode, "list") == 0) {
                l = targets_listing_new(&ts);
                if (!l) {
                        fprintf(stderr, "out of memory\n");
                        return 1;
                }
                if (strcmp(mode, "apply") == 0)
                        targets_list(l);
        }
        n_added = n_refused = 0;
        sample_now(&a);
        if (expands) {
                if (strcmp(mode, "list") == 0)
                        targets_list(l);
                if (strcmp(mode, "apply") == 0)
                        r = targets_apply(&ts, l, &ev);
                else if (strcmp(mode, "list") == 0)
                        r = 0;
                else
                        r = targets_expand(&ts, &ev);
                if (r < 0) {
                        fprintf(stderr, "out of memory\n");
                        return 1;
                }
                sample_now(&b);
                if (strcmp(mode, "list") == 0)
                        r = targets_apply(&ts, l, &ev);
                l = targets_listing_free(l);
                for (size_t k = 0; k < ts.n; k++)
                        matched += ts.v[k]->seen;
        } else if (strcmp(mode, "walk") == 0) {
                matched = walk_glob(pattern);
                sample_now(&b);
        } else if (strcmp(mode, "glob") == 0) {
                glob_t g;

                r = glob(pattern, 0, NULL, &g);
                sample_now(&b);
                matched = r == 0 ? g.gl_pathc : 0;
                if (r == 0)
                        globfree(&g);
        } else if (strcmp(mode, "header") == 0) {
                for (size_t k = 0; k < ts.n; k++) {
                        struct timespec t0, t1;
                        struct dbstat st;

                        clock_gettime(CLOCK_MONOTONIC, &t0);
                        r = ts.v[k]->dir ? dbstat_read_header_at(ts.v[k]->dir->fd, ts.v[k]->name, &st) : -ENOENT;
                        clock_gettime(CLOCK_MONOTONIC, &t1);
                        reads_ok += r == 0;
                        if (ts_us(&t0, &t1) > read_max_us)
                                read_max_us = ts_us(&t0, &t1);
                }
                sample_now(&b);
                matched = ts.n;
        } else {
                fprintf(stderr, "%s: unknown mode\n", mode);
                return 2;
        }

        printf("{\"mode\": \"%s\", \"glob\": \"%s\", \"matched\": %" PRIu64 ", \"targets\": %zu, "
               "\"added\": %" PRIu64 ", \"max_matches\": %" PRIu64 ", \"over_max_matches\": %s, "
               "\"wall_us\": %.1f, \"cpu_us\": %.1f, \"user_us\": %.0f, \"sys_us\": %.0f, \"maxrss_kib\": %ld",
               mode, pattern, matched, ts.n, n_added, max_matches, n_refused ? "true" : "false",
               ts_us(&a.wall, &b.wall), ts_us(&a.cpu, &b.cpu), tv_us(&a.ru.ru_utime, &b.ru.ru_utime),
               tv_us(&a.ru.ru_stime, &b.ru.ru_stime), b.ru.ru_maxrss);
        if (strcmp(mode, "header") == 0)
                printf(", \"reads_trusted\": %" PRIu64 ", \"read_max_us\": %.1f", reads_ok, read_max_us);
        printf("}\n");
        targets_clear(&ts);
        conf_free(c);
        return 0;
}
