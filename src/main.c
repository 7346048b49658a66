/* SPDX-License-Identifier: MIT */
/* sqlite-maintd: argv and exit codes. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "config.h"
#include "conf.h"
#include "jobproc.h"
#include "util.h"
#include "log.h"
#include "maint.h"
#include "manager.h"

/* Exit status: sysexits' EX_CONFIG for a configuration that does not load,
 * so the unit can tell it from a crash (RestartPreventExitStatus=). */
#define EXIT_CONFIG 78

static void usage(FILE *f)
{
        fputs("Usage: sqlite-maintd [OPTIONS]\n"
              "\n"
              "Keeps SQLite databases healthy: watches their fragmentation, runs VACUUM and\n"
              "ANALYZE when due, behind space and integrity checks.\n"
              "\n"
              "  -c, --config FILE        configuration (default " DEFAULT_CONFIG_FILE ")\n"
              "  -n, --check-config       check the configuration, print \"configuration OK\"\n"
              "                           or every error, and exit\n"
              "      --once               poll once, run what is due, wait for it, and exit\n"
              "                           (exit status 1 if any job failed)\n"
              "      --ignore-window      with --once: run scheduled VACUUMs outside the window\n"
              "      --dry-run            log every decision, run nothing\n"
              "      --log-target=TARGET  auto, journal or console (default auto: the journal\n"
              "                           when stderr is connected to it)\n"
              "      --log-level=LEVEL    debug, info, notice, warning or err (default info)\n"
              "  -h, --help               this text\n"
              "  -V, --version            the version\n", f);
}

/* A directory descriptor is kept for each directory of watched
 * databases: the soft limit goes up to the hard one. */
static void raise_fd_limit(void)
{
        struct rlimit rl;

        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
                rl.rlim_cur = rl.rlim_max;
                (void)setrlimit(RLIMIT_NOFILE, &rl);
        }
}

static int parse_level(const char *s)
{
        static const struct { const char *name; int level; } levels[] = {
                { "debug", LOG_DEBUG }, { "info", LOG_INFO }, { "notice", LOG_NOTICE },
                { "warning", LOG_WARNING }, { "err", LOG_ERR }, { "error", LOG_ERR },
        };

        for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++)
                if (strcmp(s, levels[i].name) == 0)
                        return levels[i].level;
        return -1;
}

/* conf_load_report() sinks: the journal (or stderr through log.c) when
 * running, plain stderr for --check-config. */
static void report_log(const char *line, void *userdata)
{
        log_msg(LOG_ERR, "%s", line);
}

static void report_stderr(const char *line, void *userdata)
{
        char safe[3 * 2048];

        /* a path in it may be a tenant's choice: escaped */
        fprintf(stderr, "%s\n", util_escape(line, safe, sizeof(safe)));
}

static int check_config(const char *file)
{
        struct conf *c = NULL;

        if (conf_load_report(file, &c, report_stderr, NULL) < 0)
                return EXIT_CONFIG;
        conf_free(c);
        puts("configuration OK");
        return EXIT_SUCCESS;
}

/* What the command line asks for. */
struct args {
        struct manager_options mo;
        enum log_target target;
        int level;
        bool check;
};

/* The options, one case each, then the rules between them: -1 to go on,
 * else the exit status (--help, --version, --check-config, a usage error). */
static int parse_options(int argc, char **argv, struct args *a)
{
        enum { OPT_LOG_TARGET = 0x100, OPT_LOG_LEVEL, OPT_ONCE, OPT_DRY_RUN, OPT_IGNORE_WINDOW };
        static const struct option options[] = {
                { "config", required_argument, NULL, 'c' },
                { "check-config", no_argument, NULL, 'n' },
                { "log-target", required_argument, NULL, OPT_LOG_TARGET },
                { "log-level", required_argument, NULL, OPT_LOG_LEVEL },
                { "once", no_argument, NULL, OPT_ONCE },
                { "dry-run", no_argument, NULL, OPT_DRY_RUN },
                { "ignore-window", no_argument, NULL, OPT_IGNORE_WINDOW },
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, 'V' },
                { NULL, 0, NULL, 0 },
        };
        int opt;

        while ((opt = getopt_long(argc, argv, "c:nhV", options, NULL)) != -1) {
                switch (opt) {
                case 'c': a->mo.conf_file = optarg; break;
                case OPT_ONCE: a->mo.once = true; break;
                case OPT_DRY_RUN: a->mo.dry_run = true; break;
                case OPT_IGNORE_WINDOW: a->mo.ignore_window = true; break;
                case OPT_LOG_LEVEL:
                        a->level = parse_level(optarg);
                        if (a->level < 0) {
                                fprintf(stderr, "sqlite-maintd: --log-level takes debug, info, notice, warning or err, not '%s'\n", optarg);
                                return 2;
                        }
                        break;
                case 'n': a->check = true; break;
                case OPT_LOG_TARGET:
                        if (log_parse_target(optarg, &a->target) < 0) {
                                fprintf(stderr, "sqlite-maintd: --log-target takes auto, journal or console, not '%s'\n", optarg);
                                return 2;
                        }
                        break;
                case 'h': usage(stdout); return EXIT_SUCCESS;
                case 'V': printf("sqlite-maintd %s\n", PACKAGE_VERSION); return EXIT_SUCCESS;
                default: usage(stderr); return 2;
                }
        }
        if (optind < argc) {
                fprintf(stderr, "sqlite-maintd: unexpected argument '%s'\n", argv[optind]);
                return 2;
        }
        if (a->check)
                return check_config(a->mo.conf_file);
        if (a->mo.ignore_window && !a->mo.once) {
                fputs("sqlite-maintd: --ignore-window goes with --once\n", stderr);
                return 2;
        }
        return -1;
}

/* Logging, SQLite and job processes set up, the configuration loaded,
 * then the manager's loop until it ends: the exit status. */
static int run_daemon(const struct args *a)
{
        struct manager *m = NULL;
        struct conf *c = NULL;
        int r;

        log_setup(a->target, "sqlite-maintd");
        log_set_max_level(a->level);
        if (maint_init() < 0) {
                log_msg(LOG_ERR, "cannot initialize SQLite");
                return EXIT_FAILURE;
        }
        if (jobproc_init() < 0) {
                log_msg(LOG_ERR, "cannot find its own executable (/proc/self/exe) to run jobs with");
                return EXIT_FAILURE;
        }
        raise_fd_limit();
        /* Startup errors end here, before READY=1. */
        if (conf_load_report(a->mo.conf_file, &c, report_log, NULL) < 0)
                return EXIT_CONFIG;
        r = manager_new(&m, &a->mo, c);
        if (r < 0)
                return EXIT_FAILURE;
        r = manager_run(m);
        manager_free(m);
        return r;
}

int main(int argc, char **argv)
{
        struct args a = {
                .mo = { .conf_file = DEFAULT_CONFIG_FILE },
                .target = LOG_TARGET_AUTO,
                .level = LOG_INFO,
        };
        int code;

        if (argc == 2 && strcmp(argv[1], JOBPROC_ARG) == 0)
                jobproc_child_main();
        code = parse_options(argc, argv, &a);
        return code >= 0 ? code : run_daemon(&a);
}
