/* SPDX-License-Identifier: MIT */
/* control: the control socket's connections, their bounds and the
 * parsing of requests (control.h). Requests are JSON; they are read with
 * SQLite's own JSON functions (json_valid, json_type, json_extract, in an
 * in-memory database of the daemon's own): a well-kept parser already
 * linked, not one of ours. */
#include <errno.h>
#include <grp.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <sqlite3.h>

#include "control.h"
#include "log.h"
#include "util.h"

struct control_conn {
        uv_pipe_t pipe;
        uv_timer_t timer;
        struct control *ctl;
        LIST_ENTRY(control_conn) link;
        char buf[CONTROL_REQUEST_MAX];
        size_t len;
        uid_t uid;
        /* Refused, and told at once; what it sends is read and dropped up
         * to the end of its line (draining), for a socket closed with data
         * unread gives its peer ECONNRESET, not the reply. */
        bool draining;
        size_t drained;  /* bytes dropped so far: past CONTROL_DRAIN_MAX, closed as it is */
        bool asked;     /* a request was handed to the handler */
        bool answered;  /* its reply began */
        bool done;      /* the reply is complete: close once written */
        bool closing;
        int open_handles;
        size_t pending; /* bytes written, not yet taken */
        control_produce_fn *produce;
        control_free_fn *free_state;
        void *state;
};

struct control {
        uv_loop_t *loop;
        uv_pipe_t listener;
        uv_timer_t slice; /* producers run at the loop's next turn */
        char *path;
        int64_t gid;
        struct control_handlers h;
        LIST_HEAD(, control_conn) conns;
        unsigned n_conns;
        sqlite3 *db;
        sqlite3_stmt *parse;
        int open_handles;
        bool closing;
};

struct write_req {
        uv_write_t req;
        struct control_conn *c;
        size_t len;
        char data[];
};

static void conn_close(struct control_conn *c);
static void conn_write(struct control_conn *c, const char *data, size_t len);

static void maybe_free_control(struct control *ctl)
{
        if (!ctl->closing || ctl->open_handles > 0 || ctl->n_conns > 0)
                return;
        sqlite3_finalize(ctl->parse);
        sqlite3_close(ctl->db);
        free(ctl->path);
        free(ctl);
}

static void conn_closed(uv_handle_t *h)
{
        struct control_conn *c = h->data;
        struct control *ctl = c->ctl;

        if (--c->open_handles > 0)
                return;
        LIST_REMOVE(c, link);
        ctl->n_conns--;
        free(c);
        maybe_free_control(ctl);
}

static void conn_close(struct control_conn *c)
{
        if (c->closing)
                return;
        c->closing = true;
        if (c->asked && !c->answered && c->ctl->h.gone)
                c->ctl->h.gone(c->ctl->h.userdata, c);
        if (c->free_state)
                c->free_state(c->state);
        c->produce = NULL;
        c->free_state = NULL;
        uv_close((uv_handle_t *)&c->pipe, conn_closed);
        uv_close((uv_handle_t *)&c->timer, conn_closed);
}

static void conn_timeout(uv_timer_t *t)
{
        struct control_conn *c = t->data;

        log_msg(LOG_DEBUG, "control socket: a client (uid %u) took too long %s; closed", (unsigned)c->uid,
                c->answered ? "to read its reply" : "to send its request");
        conn_close(c);
}

/* A reply's producer runs while its client keeps up. */
static void run_producers(uv_timer_t *t)
{
        struct control *ctl = t->data;
        struct control_conn *c;
        bool more = false;

        LIST_FOREACH(c, &ctl->conns, link) {
                char *text = NULL;
                size_t len = 0;
                FILE *f;

                if (c->closing || !c->produce || c->pending >= CONTROL_PENDING_MAX)
                        continue;
                f = open_memstream(&text, &len);
                if (!f) {
                        conn_close(c);
                        continue;
                }
                c->done = c->produce(c->state, f);
                if (fclose(f) != 0) {
                        free(text);
                        conn_close(c);
                        continue;
                }
                if (c->done) {
                        c->free_state(c->state);
                        c->produce = NULL;
                        c->free_state = NULL;
                }
                conn_write(c, text, len);
                free(text);
                more |= !c->done;
        }
        if (more)
                uv_timer_start(&ctl->slice, run_producers, 0, 0);
}

static void written(uv_write_t *req, int status)
{
        struct write_req *w = (struct write_req *)req;
        struct control_conn *c = w->c;

        c->pending -= w->len;
        free(w);
        if (c->closing)
                return;
        if (status < 0) { /* the client went away */
                conn_close(c);
                return;
        }
        /* progress: the client reads */
        uv_timer_start(&c->timer, conn_timeout, CONTROL_WRITE_TIMEOUT_MS, 0);
        if (c->done && c->pending == 0 && !c->draining) {
                conn_close(c);
                return;
        }
        if (c->produce && c->pending < CONTROL_PENDING_MAX)
                uv_timer_start(&c->ctl->slice, run_producers, 0, 0);
}

static void conn_write(struct control_conn *c, const char *data, size_t len)
{
        struct write_req *w;
        uv_buf_t b;

        if (c->closing)
                return;
        if (len == 0) {
                if (c->done && c->pending == 0 && !c->draining)
                        conn_close(c);
                return;
        }
        w = malloc(sizeof(*w) + len);
        if (!w) {
                conn_close(c);
                return;
        }
        w->c = c;
        w->len = len;
        memcpy(w->data, data, len);
        b = uv_buf_init(w->data, (unsigned)len);
        if (uv_write(&w->req, (uv_stream_t *)&c->pipe, &b, 1, written) < 0) {
                free(w);
                conn_close(c);
                return;
        }
        c->pending += len;
}

void control_reply(struct control_conn *c, const char *text, size_t len)
{
        c->answered = true;
        c->done = true;
        if (!c->draining)
                uv_read_stop((uv_stream_t *)&c->pipe);
        uv_timer_start(&c->timer, conn_timeout, CONTROL_WRITE_TIMEOUT_MS, 0);
        if (len > 0 && text[len - 1] != '\n') {
                char *line = malloc(len + 1);

                if (!line) {
                        conn_close(c);
                        return;
                }
                memcpy(line, text, len);
                line[len] = '\n';
                conn_write(c, line, len + 1);
                free(line);
                return;
        }
        conn_write(c, text, len);
}

void control_stream(struct control_conn *c, control_produce_fn *produce, control_free_fn *free_state, void *state)
{
        c->answered = true;
        uv_read_stop((uv_stream_t *)&c->pipe);
        if (c->closing) {
                free_state(state);
                return;
        }
        c->produce = produce;
        c->free_state = free_state;
        c->state = state;
        uv_timer_start(&c->timer, conn_timeout, CONTROL_WRITE_TIMEOUT_MS, 0);
        uv_timer_start(&c->ctl->slice, run_producers, 0, 0);
}

uid_t control_peer_uid(const struct control_conn *c)
{
        return c->uid;
}

/* An error reply: {"ok": false, "error": why}. why holds no character
 * that needs escaping (our own static strings). */
static void reply_error(struct control_conn *c, const char *why)
{
        char line[256];
        int n = snprintf(line, sizeof(line), "{\"ok\": false, \"error\": \"%s\"}\n", why);

        control_reply(c, line, n > 0 && (size_t)n < sizeof(line) ? (size_t)n : 0);
}

/* A JSON text value of at most size - 1 bytes into buf; false otherwise. */
static bool text_column(sqlite3_stmt *st, int col, char *buf, size_t size)
{
        const unsigned char *s = sqlite3_column_text(st, col);
        int n = sqlite3_column_bytes(st, col);

        if (sqlite3_column_type(st, col) != SQLITE_TEXT || !s || (size_t)n >= size)
                return false;
        memcpy(buf, s, (size_t)n + 1);
        return true;
}

/* db_hex: a path's bytes in hexadecimal (a name that is not UTF-8, which
 * a JSON string cannot carry), into *ret (allocated); NULL, or why not. */
static const char *unhex(const char *hex, char **ret)
{
        size_t n = strlen(hex);
        char *p;

        if (n % 2 || n / 2 >= PATH_MAX)
                return "\\\"db_hex\\\" is not a path's bytes in hexadecimal";
        p = malloc(n / 2 + 1);
        if (!p)
                return "out of memory";
        for (size_t i = 0; i < n / 2; i++) {
                unsigned v;

                if (sscanf(hex + 2 * i, "%2x", &v) != 1 || !strchr("0123456789abcdefABCDEF", hex[2 * i]) ||
                    !strchr("0123456789abcdefABCDEF", hex[2 * i + 1]) || v == 0) {
                        free(p);
                        return "\\\"db_hex\\\" is not a path's bytes in hexadecimal";
                }
                p[i] = (char)v;
        }
        p[n / 2] = '\0';
        *ret = p;
        return NULL;
}

/* The request in line (len bytes, no newline) into *req; NULL, or why not. */
static const char *parse_request(struct control *ctl, const char *line, size_t len, struct control_request *req)
{
        sqlite3_stmt *st = ctl->parse;
        const char *why = NULL;

        *req = (struct control_request){ .db = NULL };
        if (memchr(line, '\0', len))
                return "the request holds a NUL byte";
        sqlite3_reset(st);
        if (sqlite3_bind_text(st, 1, line, (int)len, SQLITE_STATIC) != SQLITE_OK || sqlite3_step(st) != SQLITE_ROW)
                return "cannot read the request";
        if (sqlite3_column_int(st, 0) != 1 || sqlite3_column_type(st, 1) != SQLITE_TEXT ||
            strcmp((const char *)sqlite3_column_text(st, 1), "object") != 0)
                why = "the request is not a JSON object on one line";
        else if (!text_column(st, 2, req->command, sizeof(req->command)))
                why = "\\\"command\\\" is missing or not a short string";
        else if (sqlite3_column_type(st, 3) != SQLITE_NULL &&
                 !text_column(st, 3, req->operation, sizeof(req->operation)))
                why = "\\\"operation\\\" is not a short string";
        else if (sqlite3_column_type(st, 4) != SQLITE_NULL && sqlite3_column_type(st, 4) != SQLITE_TEXT)
                why = "\\\"db\\\" is not a string";
        else if (sqlite3_column_type(st, 5) != SQLITE_NULL &&
                 (sqlite3_column_type(st, 5) != SQLITE_INTEGER || sqlite3_column_int64(st, 5) < 0 ||
                  sqlite3_column_int64(st, 5) > 1))
                why = "\\\"wait\\\" is not true or false";
        else if (sqlite3_column_type(st, 6) != SQLITE_NULL &&
                 (sqlite3_column_type(st, 6) != SQLITE_INTEGER || sqlite3_column_int64(st, 6) < 0))
                why = "\\\"since\\\" is not a time in milliseconds";
        else if (sqlite3_column_type(st, 7) != SQLITE_NULL && sqlite3_column_type(st, 7) != SQLITE_TEXT)
                why = "\\\"db_hex\\\" is not a string";
        if (!why) {
                if (sqlite3_column_type(st, 7) == SQLITE_TEXT)
                        why = unhex((const char *)sqlite3_column_text(st, 7), &req->db);
                else if (sqlite3_column_type(st, 4) == SQLITE_TEXT &&
                         !(req->db = strdup((const char *)sqlite3_column_text(st, 4))))
                        why = "out of memory";
                if (!why && req->db && !*req->db)
                        why = "\\\"db\\\" is empty";
                req->wait = sqlite3_column_int64(st, 5) == 1;
                req->since_ms = sqlite3_column_int64(st, 6);
        }
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
        return why;
}

/* Told why at once; closed once what it sends is read to its line's end. */
static void refuse(struct control_conn *c, const char *why)
{
        c->draining = true;
        reply_error(c, why);
        /* the rest of its line within the read timeout, not the write one */
        uv_timer_start(&c->timer, conn_timeout, CONTROL_READ_TIMEOUT_MS, 0);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
        struct control_conn *c = h->data;

        (void)suggested;
        /* a refused client's request is read into the same room, and dropped */
        *buf = uv_buf_init(c->buf + c->len, (unsigned)(sizeof(c->buf) - c->len));
}

static void read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
        struct control_conn *c = s->data;
        struct control_request req;
        const char *why;
        char *nl;

        (void)buf;
        if (n < 0 && !c->draining) { /* gone before a whole request */
                conn_close(c);
                return;
        }
        if (c->draining) {
                c->len = 0;
                c->drained += n > 0 ? (size_t)n : 0;
                if (c->drained > CONTROL_DRAIN_MAX) { /* a client that never ends its line */
                        conn_close(c);
                        return;
                }
                if (n < 0 || memchr(c->buf, '\n', (size_t)n)) {
                        c->draining = false;
                        uv_read_stop(s);
                        if (c->pending == 0)
                                conn_close(c);
                }
                return;
        }
        c->len += (size_t)n;
        nl = memchr(c->buf, '\n', c->len);
        if (!nl) {
                if (c->len == sizeof(c->buf)) {
                        c->len = 0;
                        refuse(c, "the request is longer than 4096 bytes");
                }
                return;
        }
        uv_read_stop(s);
        why = parse_request(c->ctl, c->buf, (size_t)(nl - c->buf), &req);
        if (why) {
                reply_error(c, why);
                return;
        }
        c->asked = true;
        /* its request read: no read timeout while the daemon works on it
         * (run --wait waits for the job, however long) */
        uv_timer_stop(&c->timer);
        c->ctl->h.request(c->ctl->h.userdata, c, &req);
        free(req.db);
}

static bool in_groups(const gid_t *v, size_t n, int64_t gid)
{
        for (size_t i = 0; i < n; i++)
                if ((int64_t)v[i] == gid)
                        return true;
        return false;
}

/* Root, the daemon's own user, or a member of the group (its primary
 * group or a supplementary one: SO_PEERGROUPS, Linux 4.13). */
static bool peer_allowed(const struct control *ctl, int fd, uid_t *uid)
{
        struct ucred cred;
        socklen_t len = sizeof(cred);
        gid_t groups[256], *many;
        bool ok;

        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
                return false;
        *uid = cred.uid;
        if (cred.uid == 0 || cred.uid == geteuid())
                return true;
        if (ctl->gid < 0)
                return false;
        if ((int64_t)cred.gid == ctl->gid)
                return true;
        len = sizeof(groups);
        if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len) == 0)
                return in_groups(groups, len / sizeof(gid_t), ctl->gid);
        if (errno != ERANGE) /* len: the room its groups need */
                return false;
        many = malloc(len);
        ok = many && getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, many, &len) == 0 &&
             in_groups(many, len / sizeof(gid_t), ctl->gid);
        free(many);
        return ok;
}

/* Connections not closing, this one included. */
static unsigned open_connections(const struct control *ctl)
{
        const struct control_conn *c;
        unsigned n = 0;

        LIST_FOREACH(c, &ctl->conns, link)
                n += !c->closing;
        return n;
}

static void on_connection(uv_stream_t *server, int status)
{
        struct control *ctl = server->data;
        const char *refusal = NULL;
        struct control_conn *c;
        unsigned open_conns;
        uv_os_fd_t fd;

        if (status < 0 || ctl->closing)
                return;
        c = calloc(1, sizeof(*c));
        if (!c)
                return; /* the kernel keeps it in the backlog; the next one tries again */
        c->ctl = ctl;
        uv_pipe_init(ctl->loop, &c->pipe, 0);
        uv_timer_init(ctl->loop, &c->timer);
        c->pipe.data = c->timer.data = c;
        c->open_handles = 2;
        LIST_INSERT_HEAD(&ctl->conns, c, link);
        ctl->n_conns++;
        if (uv_accept(server, (uv_stream_t *)&c->pipe) < 0) {
                conn_close(c);
                return;
        }
        /* past twice the limit, not even told (those closing do not count) */
        open_conns = open_connections(ctl);
        if (open_conns > 2 * CONTROL_CONNECTIONS_MAX) {
                conn_close(c);
                return;
        }
        if (uv_fileno((uv_handle_t *)&c->pipe, &fd) < 0 || !peer_allowed(ctl, fd, &c->uid)) {
                log_msg(LOG_NOTICE, "control socket: a client (uid %u) is neither root nor in the configured "
                        "control_group: refused", (unsigned)c->uid);
                refusal = "permission denied: root or the control_group only";
        } else if (open_conns > CONTROL_CONNECTIONS_MAX) {
                refusal = "too many connections: try again";
        }
        uv_timer_start(&c->timer, conn_timeout, CONTROL_READ_TIMEOUT_MS, 0);
        if (uv_read_start((uv_stream_t *)&c->pipe, alloc_cb, read_cb) < 0)
                conn_close(c);
        else if (refusal)
                refuse(c, refusal);
}

static void control_handle_closed(uv_handle_t *h)
{
        struct control *ctl = h->data;

        ctl->open_handles--;
        maybe_free_control(ctl);
}

/* path free to bind: nothing there, or a socket nobody listens on. */
static int clear_stale(const char *path, const char **why)
{
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        struct stat st;
        int fd, r;

        if (lstat(path, &st) < 0)
                return errno == ENOENT ? 0 : (*why = "cannot look at the socket's path", -errno);
        if (!S_ISSOCK(st.st_mode)) {
                *why = "something that is not a socket is in the way";
                return -EEXIST;
        }
        if (strlen(path) >= sizeof(sa.sun_path)) {
                *why = "the path is too long for a socket";
                return -ENAMETOOLONG;
        }
        memcpy(sa.sun_path, path, strlen(path) + 1);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return (*why = "cannot make a socket", -errno);
        r = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
        close(fd);
        if (r == 0) {
                *why = "another process listens on it (another sqlite-maintd?)";
                return -EADDRINUSE;
        }
        if (unlink(path) < 0 && errno != ENOENT)
                return (*why = "cannot remove the stale socket", -errno);
        return 0;
}

/* 0 when path's directory exists, else a negative errno (libuv's bind
 * says EACCES where the kernel said ENOENT). */
static int parent_exists(const char *path)
{
        char dir[sizeof(((struct sockaddr_un *)0)->sun_path)];
        struct stat st;
        char *slash;

        util_strlcpy(dir, path, sizeof(dir));
        slash = strrchr(dir, '/');
        if (!slash)
                return 0;
        if (slash == dir)
                slash[1] = '\0';
        else
                *slash = '\0';
        return stat(dir, &st) < 0 ? -errno : S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
}

int control_open(uv_loop_t *loop, const char *path, int64_t gid, const struct control_handlers *h,
                 struct control **ret, const char **why)
{
        /* json_type() and json_extract() fail on what is not JSON: asked only of JSON */
        static const char parse_sql[] =
                "SELECT v, CASE WHEN v THEN json_type(j) END, CASE WHEN v THEN json_extract(j, '$.command') END, "
                "CASE WHEN v THEN json_extract(j, '$.operation') END, CASE WHEN v THEN json_extract(j, '$.db') END, "
                "CASE WHEN v THEN json_extract(j, '$.wait') END, CASE WHEN v THEN json_extract(j, '$.since') END, "
                "CASE WHEN v THEN json_extract(j, '$.db_hex') END "
                "FROM (SELECT json_valid(?1) AS v, ?1 AS j)";
        struct control *ctl = calloc(1, sizeof(*ctl));
        int r;

        *ret = NULL;
        if (strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
                free(ctl);
                *why = "the path is longer than a socket's 107 bytes";
                return -ENAMETOOLONG;
        }
        r = parent_exists(path);
        if (r < 0) {
                free(ctl);
                *why = "its directory is missing";
                return r;
        }
        *why = "out of memory";
        if (!ctl || !(ctl->path = strdup(path))) {
                free(ctl);
                return -ENOMEM;
        }
        ctl->loop = loop;
        ctl->gid = gid;
        ctl->h = *h;
        LIST_INIT(&ctl->conns);
        if (sqlite3_open_v2(":memory:", &ctl->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_MEMORY, NULL) != SQLITE_OK ||
            sqlite3_prepare_v3(ctl->db, parse_sql, -1, SQLITE_PREPARE_PERSISTENT, &ctl->parse, NULL) != SQLITE_OK) {
                *why = "cannot prepare SQLite's JSON functions";
                r = -ENOMEM;
                goto fail;
        }
        r = clear_stale(path, why);
        if (r < 0)
                goto fail;
        uv_pipe_init(loop, &ctl->listener, 0);
        uv_timer_init(loop, &ctl->slice);
        ctl->listener.data = ctl->slice.data = ctl;
        ctl->open_handles = 2;
        r = uv_pipe_bind(&ctl->listener, path);
        if (r == 0 && (chmod(path, 0660) < 0 || (gid >= 0 && chown(path, (uid_t)-1, (gid_t)gid) < 0)))
                r = -errno;
        if (r == 0)
                r = uv_listen((uv_stream_t *)&ctl->listener, 64, on_connection);
        if (r < 0) {
                *why = "cannot listen on it";
                ctl->closing = true;
                unlink(path);
                uv_close((uv_handle_t *)&ctl->listener, control_handle_closed);
                uv_close((uv_handle_t *)&ctl->slice, control_handle_closed);
                return r;
        }
        *ret = ctl;
        return 0;
fail:
        sqlite3_finalize(ctl->parse);
        sqlite3_close(ctl->db);
        free(ctl->path);
        free(ctl);
        return r;
}

void control_close(struct control *ctl)
{
        struct control_conn *c, *next;

        if (!ctl || ctl->closing)
                return;
        ctl->closing = true;
        unlink(ctl->path);
        for (c = LIST_FIRST(&ctl->conns); c; c = next) {
                next = LIST_NEXT(c, link);
                conn_close(c);
        }
        uv_close((uv_handle_t *)&ctl->listener, control_handle_closed);
        uv_close((uv_handle_t *)&ctl->slice, control_handle_closed);
}
