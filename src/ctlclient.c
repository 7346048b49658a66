/* SPDX-License-Identifier: MIT */
/* ctlclient: status, explain, run and metrics through the daemon's control
 * socket (ctlclient.h). Replies are read with SQLite's JSON functions, as
 * the daemon reads requests. */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "conf.h"
#include "ctlclient.h"
#include "json.h"
#include "maint.h"
#include "util.h"

/* How long a reply may pause (ms), except a run --wait's. */
#define REPLY_TIMEOUT_MS 60000

int ctl_exit_code(enum maint_status s); /* ctl.c */

static const char *const commands[] = { "status", "explain", "run", "history", "metrics" };

bool ctlclient_is_command(const char *name)
{
        for (size_t i = 0; i < ELEMENTSOF(commands); i++)
                if (strcmp(name, commands[i]) == 0)
                        return true;
        return false;
}

/* A line on stderr, made safe for a terminal. */
static void err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void err(const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        ctl_vout(stderr, "sqlite-maintctl: ", fmt, ap);
        va_end(ap);
}

static int connect_to(const char *path)
{
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd;

        if (strlen(path) >= sizeof(sa.sun_path)) {
                err("%s: too long for a socket path", path);
                return -1;
        }
        memcpy(sa.sun_path, path, strlen(path) + 1);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
                return fd;
        if (errno == ENOENT || errno == ECONNREFUSED)
                err("no sqlite-maintd listens on %s: is it running (systemctl status sqlite-maintd)? Another "
                    "socket: --socket PATH, or the control_socket of the configuration given with -c", path);
        else if (errno == EACCES)
                err("cannot reach the daemon at %s: permission denied (root, or a member of the configuration's "
                    "control_group)", path);
        else
                err("cannot reach the daemon at %s: %s", path, strerror(errno));
        if (fd >= 0)
                close(fd);
        return -1;
}

/* The whole reply, until the daemon closes the connection; NULL (said)
 * when it fails or pauses longer than timeout_ms (< 0: no limit). */
static char *exchange(int fd, const char *request, size_t len, int timeout_ms, size_t *n)
{
        char *buf = NULL;
        size_t cap = 0;
        ssize_t r;

        *n = 0;
        for (size_t off = 0; off < len; off += (size_t)r) {
                r = send(fd, request + off, len - off, MSG_NOSIGNAL);
                if (r < 0) {
                        err("cannot send the request: %s", strerror(errno));
                        return NULL;
                }
        }
        for (;;) {
                struct pollfd p = { .fd = fd, .events = POLLIN };

                if (poll(&p, 1, timeout_ms) == 0) {
                        err("the daemon did not answer within %d s", timeout_ms / 1000);
                        break;
                }
                if (util_grow((void **)&buf, &cap, *n + 65536 + 1, 1, 65536) < 0) {
                        err("out of memory");
                        break;
                }
                r = read(fd, buf + *n, cap - *n - 1);
                if (r < 0 && errno == EINTR)
                        continue;
                if (r < 0) {
                        err("cannot read the reply: %s", strerror(errno));
                        break;
                }
                if (r == 0) {
                        buf[*n] = '\0';
                        return buf;
                }
                *n += (size_t)r;
        }
        free(buf);
        return NULL;
}

static bool utf8(const char *s)
{
        for (const unsigned char *p = (const unsigned char *)s; *p;) {
                size_t n = json_utf8_len(p);

                if (n == 0)
                        return false;
                p += n;
        }
        return true;
}

/* The request's JSON object, one line. */
static char *request_line(const char *command, const char *op, const char *db, bool wait, int64_t since_ms,
                          size_t *len)
{
        char *text = NULL;
        FILE *f = open_memstream(&text, len);
        struct json j;

        if (!f)
                return NULL;
        json_init(&j, f);
        json_object_begin(&j, NULL);
        json_str(&j, "command", command);
        if (op)
                json_str(&j, "operation", op);
        if (db && utf8(db)) {
                json_str(&j, "db", db);
        } else if (db) { /* a JSON string holds only UTF-8: the bytes, in hexadecimal */
                char *hex = malloc(2 * strlen(db) + 1);

                if (!hex) {
                        fclose(f);
                        free(text);
                        return NULL;
                }
                for (size_t i = 0; db[i]; i++)
                        sprintf(hex + 2 * i, "%02x", (unsigned char)db[i]);
                json_str(&j, "db_hex", hex);
                free(hex);
        }
        if (wait)
                json_bool(&j, "wait", true);
        if (since_ms > 0)
                json_i64(&j, "since", since_ms);
        json_object_end(&j);
        fputc('\n', f);
        if (fclose(f) != 0) {
                free(text);
                return NULL;
        }
        return text;
}

/* Rows of sql over the reply (?1): the statement, or NULL (said). */
static sqlite3_stmt *query(sqlite3 *db, const char *sql, const char *reply)
{
        sqlite3_stmt *st;

        if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
                err("cannot read the reply: %s", sqlite3_errmsg(db));
                return NULL;
        }
        sqlite3_bind_text(st, 1, reply, -1, SQLITE_STATIC);
        return st;
}

static const char *col(sqlite3_stmt *st, int i)
{
        const unsigned char *s = sqlite3_column_text(st, i);

        return s ? (const char *)s : "-";
}

static const char *when(sqlite3_stmt *st, int i, char *buf, size_t size)
{
        time_t s = (time_t)(sqlite3_column_int64(st, i) / 1000);
        struct tm tm;

        if (sqlite3_column_type(st, i) == SQLITE_NULL || !localtime_r(&s, &tm) ||
            strftime(buf, size, "%Y-%m-%d %H:%M", &tm) == 0)
                return "never";
        return buf;
}

static void print_status(sqlite3 *db, const char *reply)
{
        static const char daemon_sql[] =
                "SELECT json_extract(?1, '$.daemon.config'), json_extract(?1, '$.daemon.databases_watched'), "
                "json_extract(?1, '$.daemon.jobs_running'), json_extract(?1, '$.daemon.jobs_queued'), "
                "json_extract(?1, '$.daemon.uptime_ms'), json_extract(?1, '$.daemon.last_poll_ms')";
        static const char db_sql[] =
                "SELECT json_extract(value, '$.db'), json_extract(value, '$.state'), "
                "json_extract(value, '$.fragmentation_percent'), json_extract(value, '$.file_size_bytes'), "
                "json_extract(value, '$.wal_size_bytes'), json_extract(value, '$.last_vacuum_ms'), "
                "json_extract(value, '$.last_analyze_ms'), json_extract(value, '$.decision'), "
                "json_extract(value, '$.job.operation'), json_extract(value, '$.hold.reason'), "
                "json_extract(value, '$.job.phase'), json_extract(value, '$.job.estimated_percent'), "
                "json_extract(value, '$.job.reason') "
                "FROM json_each(?1, '$.databases')";
        sqlite3_stmt *st = query(db, daemon_sql, reply);
        char a[32], b[32], c[32], d[32], safe[3 * PATH_MAX];

        if (st && sqlite3_step(st) == SQLITE_ROW)
                printf("sqlite-maintd: %s database%s watched, %s job%s running, %s queued; up %lld s; last poll %s; "
                       "config %s\n\n", col(st, 1), sqlite3_column_int(st, 1) == 1 ? "" : "s", col(st, 2),
                       sqlite3_column_int(st, 2) == 1 ? "" : "s", col(st, 3),
                       (long long)(sqlite3_column_int64(st, 4) / 1000), when(st, 5, a, sizeof(a)),
                       util_escape(col(st, 0), safe, sizeof(safe)));
        sqlite3_finalize(st);
        st = query(db, db_sql, reply);
        printf("%-18s %7s %10s %10s %-16s %-16s %-20s %s\n", "STATE", "FRAG%", "SIZE", "WAL", "LAST VACUUM",
               "LAST ANALYZE", "NEXT", "PATH");
        while (st && sqlite3_step(st) == SQLITE_ROW) {
                char next[64];
                const char *state = col(st, 1);

                if (sqlite3_column_type(st, 10) != SQLITE_NULL && sqlite3_column_type(st, 11) != SQLITE_NULL)
                        snprintf(next, sizeof(next), "%s: %s %d%%", col(st, 8), col(st, 10),
                                 sqlite3_column_int(st, 11));
                else if (sqlite3_column_type(st, 10) != SQLITE_NULL)
                        snprintf(next, sizeof(next), "%s: %s", col(st, 8), col(st, 10));
                else if (sqlite3_column_type(st, 8) != SQLITE_NULL)
                        snprintf(next, sizeof(next), "%s (%s)", col(st, 8), col(st, 12));
                else if (sqlite3_column_type(st, 9) != SQLITE_NULL)
                        snprintf(next, sizeof(next), "held: %s", col(st, 9));
                else
                        snprintf(next, sizeof(next), "%s", col(st, 7));
                char frag[16] = "-";

                if (sqlite3_column_type(st, 2) != SQLITE_NULL)
                        snprintf(frag, sizeof(frag), "%.2f", sqlite3_column_double(st, 2));
                printf("%-18s %7s %10s %10s %-16s %-16s %-20s %s\n", state, frag,
                       sqlite3_column_type(st, 3) == SQLITE_NULL
                               ? "-"
                               : util_format_bytes((uint64_t)sqlite3_column_int64(st, 3), a, sizeof(a)),
                       sqlite3_column_type(st, 4) == SQLITE_NULL
                               ? "-"
                               : util_format_bytes((uint64_t)sqlite3_column_int64(st, 4), b, sizeof(b)),
                       when(st, 5, c, sizeof(c)), when(st, 6, d, sizeof(d)), next,
                       util_escape(col(st, 0), safe, sizeof(safe)));
        }
        sqlite3_finalize(st);
}

/* A run's reply: what it says (when print), and the exit status its
 * result means. */
static int run_result(sqlite3 *db, const char *reply, bool print)
{
        static const char sql[] = "SELECT json_extract(?1, '$.db'), json_extract(?1, '$.operation'), "
                                  "json_extract(?1, '$.result'), json_extract(?1, '$.message'), "
                                  "json_extract(?1, '$.fragmentation_before_percent'), "
                                  "json_extract(?1, '$.fragmentation_after_percent'), "
                                  "json_extract(?1, '$.bytes_given_back'), json_extract(?1, '$.duration_ms')";
        sqlite3_stmt *st = query(db, sql, reply);
        int code = 1;
        char safe[3 * PATH_MAX], msg[3 * 2048];

        if (st && sqlite3_step(st) == SQLITE_ROW) {
                if (sqlite3_column_type(st, 2) == SQLITE_NULL) {
                        if (print)
                                printf("%s: %s %s\n", util_escape(col(st, 0), safe, sizeof(safe)), col(st, 1),
                                       col(st, 3));
                        code = 0;
                } else {
                        const char *result = col(st, 2);

                        char figures[160] = "", a[32];

                        if (sqlite3_column_type(st, 4) != SQLITE_NULL && sqlite3_column_type(st, 5) != SQLITE_NULL)
                                snprintf(figures, sizeof(figures), ": fragmentation %.2f%% -> %.2f%%, %s given back, "
                                         "%lld ms", sqlite3_column_double(st, 4), sqlite3_column_double(st, 5),
                                         util_format_bytes((uint64_t)sqlite3_column_int64(st, 6), a, sizeof(a)),
                                         (long long)sqlite3_column_int64(st, 7));
                        if (print)
                                printf("%s: %s: %s%s%s%s\n", util_escape(col(st, 0), safe, sizeof(safe)), col(st, 1),
                                       result, figures, *col(st, 3) ? ": " : "",
                                       util_escape(col(st, 3), msg, sizeof(msg)));
                        for (int s = 0; s <= MAINT_HOOK_REFUSED; s++)
                                if (strcmp(maint_status_name((enum maint_status)s), result) == 0)
                                        code = ctl_exit_code((enum maint_status)s);
                }
        }
        sqlite3_finalize(st);
        return code;
}

static void print_history(sqlite3 *db, const char *reply)
{
        static const char sql[] =
                "SELECT json_extract(value, '$.finished_ms'), json_extract(value, '$.operation'), "
                "json_extract(value, '$.result'), json_extract(value, '$.bytes_given_back'), "
                "json_extract(value, '$.duration_ms'), json_extract(value, '$.db'), json_extract(value, '$.message') "
                "FROM json_each(?1, '$.jobs')";
        sqlite3_stmt *st = query(db, sql, reply);
        char a[32], b[32], safe[3 * PATH_MAX], msg[3 * 2048];

        printf("%-16s %-18s %-14s %10s %9s %s\n", "FINISHED", "OPERATION", "RESULT", "GIVEN BACK", "SECONDS",
               "PATH: MESSAGE");
        while (st && sqlite3_step(st) == SQLITE_ROW)
                printf("%-16s %-18s %-14s %10s %9.1f %s%s%s\n", when(st, 0, a, sizeof(a)), col(st, 1), col(st, 2),
                       util_format_bytes((uint64_t)sqlite3_column_int64(st, 3), b, sizeof(b)),
                       (double)sqlite3_column_int64(st, 4) / 1000.0, util_escape(col(st, 5), safe, sizeof(safe)),
                       sqlite3_column_bytes(st, 6) > 0 ? ": " : "", util_escape(col(st, 6), msg, sizeof(msg)));
        sqlite3_finalize(st);
}

/* The reply of a command other than metrics: printed; its exit status. */
static int show(const char *command, const char *reply, bool json)
{
        sqlite3 *db = NULL;
        sqlite3_stmt *st;
        int code = 0;

        if (sqlite3_open_v2(":memory:", &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_MEMORY, NULL) != SQLITE_OK) {
                err("cannot read the reply: no memory");
                sqlite3_close(db);
                return 1;
        }
        st = query(db, "SELECT json_valid(?1), json_extract(?1, '$.ok'), json_extract(?1, '$.error'), "
                       "json_extract(?1, '$.explanation')", reply);
        if (!st || sqlite3_step(st) != SQLITE_ROW || sqlite3_column_int(st, 0) != 1) {
                err("the daemon's reply is not JSON");
                code = 1;
        } else if (sqlite3_column_int(st, 1) != 1) {
                const char *e = col(st, 2);

                err("%s", e);
                /* the daemon's own bounds: it could not be reached for this */
                code = strncmp(e, "permission denied", 17) == 0 || strncmp(e, "too many connections", 20) == 0
                               ? CTLCLIENT_EXIT_NO_DAEMON
                               : 1;
        } else if (json) {
                fputs(reply, stdout);
                if (strcmp(command, "run") == 0)
                        code = run_result(db, reply, false);
        } else if (strcmp(command, "status") == 0) {
                print_status(db, reply);
        } else if (strcmp(command, "history") == 0) {
                print_history(db, reply);
        } else if (strcmp(command, "explain") == 0) {
                char text[8192], safe[3 * 8192];
                size_t n;

                util_strlcpy(text, col(st, 3), sizeof(text));
                n = strlen(text);
                if (n > 0 && text[n - 1] == '\n')
                        text[n - 1] = '\0';
                printf("%s\n", util_escape(text, safe, sizeof(safe)));
        } else {
                code = run_result(db, reply, true);
        }
        sqlite3_finalize(st);
        sqlite3_close(db);
        return code;
}

/* A database named on the command line, absolute: the daemon knows its
 * databases by their configured paths, or by device and inode. */
static char *absolute(const char *db)
{
        char *abs = NULL;

        if (util_absolute_path(db, &abs) < 0) {
                err("%s: cannot make the path absolute", db);
                return NULL;
        }
        return abs;
}

int ctlclient_parse_since(const char *s, int64_t *ret_ms)
{
        static const char *const formats[] = { "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M",
                                               "%Y-%m-%dT%H:%M", "%Y-%m-%d" };
        uint64_t ago;

        if (conf_parse_duration(s, &ago) == 0) {
                *ret_ms = util_wall_ms() - (int64_t)ago;
                return 0;
        }
        for (size_t i = 0; i < ELEMENTSOF(formats); i++) {
                struct tm tm = { .tm_isdst = -1 };
                const char *end = strptime(s, formats[i], &tm);
                time_t t;

                if (!end || *end)
                        continue;
                t = mktime(&tm);
                if (t == (time_t)-1)
                        return -EINVAL;
                *ret_ms = (int64_t)t * 1000;
                return 0;
        }
        return -EINVAL;
}

int ctlclient_run(const char *socket_path, int argc, char **argv, bool json, bool wait, const char *since)
{
        const char *command = argv[0], *op = NULL;
        char *db = NULL, *request, *reply;
        int64_t since_ms = 0;
        size_t len, n;
        int fd, code;

        if (strcmp(command, "run") == 0 && argc == 3) {
                op = argv[1];
                db = absolute(argv[2]);
        } else if (((strcmp(command, "status") == 0 || strcmp(command, "history") == 0) && argc <= 2) ||
                   (strcmp(command, "explain") == 0 && argc == 2)) {
                db = argc == 2 ? absolute(argv[1]) : NULL;
        } else if (strcmp(command, "metrics") != 0 || argc != 1) {
                err("usage: status [DB], explain DB, run vacuum|analyze|check|checkpoint DB [--wait], "
                    "history [DB] [--since TIME], metrics");
                return 2;
        }
        if (since && (strcmp(command, "history") != 0 || ctlclient_parse_since(since, &since_ms) < 0)) {
                err(strcmp(command, "history") != 0 ? "--since goes with history"
                                                    : "--since takes a duration (2h, 7d) or a date and time "
                                                      "(2026-11-30, 2026-11-30 14:00)");
                free(db);
                return 2;
        }
        if (argc >= 2 && !db)
                return 1;
        if (wait && strcmp(command, "run") != 0) {
                err("--wait goes with run");
                free(db);
                return 2;
        }
        request = request_line(command, op, db, wait, since_ms, &len);
        free(db);
        if (!request) {
                err("out of memory");
                return 1;
        }
        fd = connect_to(socket_path);
        if (fd < 0) {
                free(request);
                return CTLCLIENT_EXIT_NO_DAEMON;
        }
        reply = exchange(fd, request, len, wait ? -1 : REPLY_TIMEOUT_MS, &n);
        close(fd);
        free(request);
        if (!reply)
                return CTLCLIENT_EXIT_NO_DAEMON;
        if (n == 0) {
                err("the daemon closed the connection without a reply");
                code = CTLCLIENT_EXIT_NO_DAEMON;
        } else if (strcmp(command, "metrics") == 0 && reply[0] != '{') {
                fwrite(reply, 1, n, stdout);
                code = 0;
        } else {
                code = show(command, reply, json);
        }
        free(reply);
        return code;
}
