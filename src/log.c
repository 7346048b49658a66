/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <systemd/sd-journal.h>

#include "log.h"
#include "util.h"

/* One entry being built: its fields, packed into buf. */
struct log_entry {
        int prio;
        size_t n_fields;
        size_t off[LOG_MAX_FIELDS], len[LOG_MAX_FIELDS];
        size_t used;
        char buf[LOG_BUF_SIZE];
};

static enum log_target target = LOG_TARGET_CONSOLE;
static int max_level = LOG_INFO;
static char ident[64] = "sqlite-maintd";

int log_parse_target(const char *s, enum log_target *ret)
{
        if (strcmp(s, "auto") == 0)
                *ret = LOG_TARGET_AUTO;
        else if (strcmp(s, "journal") == 0)
                *ret = LOG_TARGET_JOURNAL;
        else if (strcmp(s, "console") == 0)
                *ret = LOG_TARGET_CONSOLE;
        else
                return -EINVAL;
        return 0;
}

/* systemd sets JOURNAL_STREAM=dev:ino for a service whose stderr goes to
 * the journal; it is only ours if stderr is still that stream. */
static bool stderr_is_journal(void)
{
        const char *e = getenv("JOURNAL_STREAM");
        unsigned long long dev, ino;
        struct stat st;

        if (!e || sscanf(e, "%llu:%llu", &dev, &ino) != 2)
                return false;
        if (fstat(STDERR_FILENO, &st) < 0)
                return false;
        return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void log_setup(enum log_target t, const char *id)
{
        if (t == LOG_TARGET_AUTO)
                t = stderr_is_journal() ? LOG_TARGET_JOURNAL : LOG_TARGET_CONSOLE;
        target = t;
        if (id)
                util_strlcpy(ident, id, sizeof(ident));
}

void log_set_max_level(int prio)
{
        max_level = prio;
}

static bool log_enabled(int prio)
{
        return prio <= max_level;
}

static const char *prio_prefix(int prio)
{
        switch (prio) {
        case LOG_EMERG:
        case LOG_ALERT:
        case LOG_CRIT: return "critical: ";
        case LOG_ERR: return "error: ";
        case LOG_WARNING: return "warning: ";
        case LOG_DEBUG: return "debug: ";
        default: return "";
        }
}

/* One line on stderr, escaped: a file name in it cannot forge another line
 * or reach the terminal as control characters (util_escape). */
static void console_line(int prio, const char *msg)
{
        char safe[3 * 2048];

        fprintf(stderr, "%s%s\n", prio_prefix(prio), util_escape(msg, safe, sizeof(safe)));
}

static void add_field(struct log_entry *e, const char *key, const char *fmt, ...) LOG_PRINTF(3, 4);

static void entry_init(struct log_entry *e, int prio, const char *message_id)
{
        e->prio = prio;
        e->n_fields = 0;
        e->used = 0;
        if (message_id)
                add_field(e, "MESSAGE_ID", "%s", message_id);
}

static void vfield(struct log_entry *e, const char *key, const char *fmt, va_list ap)
{
        size_t room = sizeof(e->buf) - e->used;
        int k, v;

        if (e->n_fields >= LOG_MAX_FIELDS)
                return;
        k = snprintf(e->buf + e->used, room, "%s=", key);
        if (k < 0 || (size_t)k >= room)
                return;
        v = vsnprintf(e->buf + e->used + k, room - (size_t)k, fmt, ap);
        if (v < 0 || (size_t)(k + v) >= room)
                return;
        e->off[e->n_fields] = e->used;
        e->len[e->n_fields] = (size_t)(k + v);
        e->n_fields++;
        e->used += (size_t)(k + v) + 1;
}

static void add_field(struct log_entry *e, const char *key, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        vfield(e, key, fmt, ap);
        va_end(ap);
}

static void add_typed(struct log_entry *e, const struct log_field *f)
{
        if (!f->key)
                return;
        switch (f->type) {
        case LOG_FIELD_TEXT:
                if (f->text)
                        add_field(e, f->key, "%s", f->text);
                break;
        case LOG_FIELD_U64:
                add_field(e, f->key, "%llu", (unsigned long long)f->u);
                break;
        case LOG_FIELD_I64:
                add_field(e, f->key, "%lld", (long long)f->i);
                break;
        case LOG_FIELD_PERCENT:
                add_field(e, f->key, "%.2f", f->d);
                break;
        }
}

/* ---- floods ----------------------------------------------------------------
 * journald drops a service's entries past RateLimitBurst (10000) per
 * RateLimitIntervalSec (30 s), whichever entries they are. So that one
 * directory of databases (one tenant's files) cannot push another's
 * entries, a critical corruption report above all, past that limit,
 * entries about databases are budgeted per window: per directory, and in
 * all, with critical entries counted on their own; the rest of a window's
 * are dropped and counted, and said in a summary when the next window
 * begins. Debug entries are not budgeted: they are asked for. */
#define FLOOD_WINDOW_MS 30000
#define FLOOD_PER_DIR 200
#define FLOOD_ALL 4000      /* below journald's 10000, with room for critical ones */
#define FLOOD_ALL_CRIT 4000
#define FLOOD_DIRS 1024     /* directories tracked one by one; the rest share one budget */
#define FLOOD_SUMMARIES 10

struct flood_dir {
        uint64_t hash;      /* 0: free */
        char dir[160];
        unsigned n, n_crit, dropped;
};

static struct {
        struct flood_dir dirs[FLOOD_DIRS + 1]; /* the last: every directory past FLOOD_DIRS */
        size_t n_dirs;
        uint64_t window_start;
        unsigned n, n_crit;
        unsigned long dropped;
        bool summarizing;
} flood;

static uint64_t fnv1a64(const char *s, size_t n)
{
        uint64_t h = 14695981039346656037ull;

        for (size_t i = 0; i < n; i++) {
                h ^= (unsigned char)s[i];
                h *= 1099511628211ull;
        }
        return h ? h : 1;
}

static struct flood_dir *flood_dir_of(const char *path, size_t len)
{
        const char *slash = memrchr(path, '/', len);
        size_t n = slash ? (size_t)(slash - path) : len;
        uint64_t h = fnv1a64(path, n);

        for (size_t i = 0, k = h % FLOOD_DIRS; i < FLOOD_DIRS; i++, k = (k + 1) % FLOOD_DIRS) {
                struct flood_dir *d = &flood.dirs[k];

                if (d->hash == h)
                        return d;
                if (d->hash == 0) {
                        d->hash = h;
                        snprintf(d->dir, sizeof(d->dir), "%.*s", (int)n, path);
                        flood.n_dirs++;
                        return d;
                }
        }
        snprintf(flood.dirs[FLOOD_DIRS].dir, sizeof(flood.dirs[FLOOD_DIRS].dir), "(other directories)");
        return &flood.dirs[FLOOD_DIRS];
}

static void log_summary(unsigned long n, const char *dir, unsigned long seconds);

/* The window is over: say what was dropped, start anew. */
static void flood_new_window(uint64_t now)
{
        unsigned long shown = 0, seconds = (unsigned long)((now - flood.window_start + 999) / 1000);

        flood.summarizing = true;
        for (size_t k = 0; k < FLOOD_SUMMARIES && flood.dropped > shown; k++) {
                struct flood_dir *most = NULL;

                for (size_t i = 0; i <= FLOOD_DIRS; i++)
                        if (flood.dirs[i].dropped && (!most || flood.dirs[i].dropped > most->dropped))
                                most = &flood.dirs[i];
                if (!most)
                        break;
                log_summary(most->dropped, most->dir, seconds);
                shown += most->dropped;
                most->dropped = 0;
        }
        if (flood.dropped > shown)
                log_summary(flood.dropped - shown, NULL, seconds);
        flood.summarizing = false;
        memset(&flood, 0, sizeof(flood));
        flood.window_start = now;
}

/* The DB_PATH field's value in e: its offset, or SIZE_MAX when none. */
static size_t db_path_field(const struct log_entry *e, size_t *len)
{
        for (size_t i = 0; i < e->n_fields; i++)
                if (e->len[i] > 8 && memcmp(e->buf + e->off[i], "DB_PATH=", 8) == 0) {
                        *len = e->len[i] - 8;
                        return e->off[i] + 8;
                }
        return SIZE_MAX;
}

/* Whether an entry may go out now (all but budgeted ones about databases). */
static bool flood_allows(const struct log_entry *e)
{
        bool crit = e->prio <= LOG_CRIT;
        struct flood_dir *d;
        uint64_t now;
        size_t at, len;

        if (e->prio >= LOG_DEBUG || flood.summarizing || (at = db_path_field(e, &len)) == SIZE_MAX)
                return true;
        now = util_monotonic_ms();
        if (now - flood.window_start >= FLOOD_WINDOW_MS)
                flood_new_window(now);
        d = flood_dir_of(e->buf + at, len);
        if (crit ? d->n_crit < FLOOD_PER_DIR && flood.n_crit < FLOOD_ALL_CRIT
                 : d->n < FLOOD_PER_DIR && flood.n < FLOOD_ALL) {
                if (crit) {
                        d->n_crit++;
                        flood.n_crit++;
                } else {
                        d->n++;
                        flood.n++;
                }
                return true;
        }
        d->dropped++;
        flood.dropped++;
        return false;
}

static void vsend(struct log_entry *e, const char *fmt, va_list ap)
{
        char msg[2048], prio[16], id[96];
        struct iovec iov[LOG_MAX_FIELDS + 3];
        size_t n = 0;
        int r;

        if (!log_enabled(e->prio) || !flood_allows(e))
                return;
        vsnprintf(msg, sizeof(msg), fmt, ap);

        if (target == LOG_TARGET_CONSOLE) {
                console_line(e->prio, msg);
                return;
        }

        /* MESSAGE= needs its own buffer: msg is a plain string. */
        char message[sizeof(msg) + 8];
        snprintf(message, sizeof(message), "MESSAGE=%s", msg);
        snprintf(prio, sizeof(prio), "PRIORITY=%d", e->prio);
        snprintf(id, sizeof(id), "SYSLOG_IDENTIFIER=%s", ident);
        iov[n++] = (struct iovec){ message, strlen(message) };
        iov[n++] = (struct iovec){ prio, strlen(prio) };
        iov[n++] = (struct iovec){ id, strlen(id) };
        for (size_t i = 0; i < e->n_fields; i++)
                iov[n++] = (struct iovec){ e->buf + e->off[i], e->len[i] };
        r = sd_journal_sendv(iov, (int)n);
        if (r < 0) /* no journal after all: the message must not be lost */
                console_line(e->prio, msg);
}

void log_struct(int prio, const char *message_id, const struct log_field *fields, size_t n_fields, const char *fmt,
                ...)
{
        struct log_entry e;
        va_list ap;

        if (!log_enabled(prio))
                return;
        entry_init(&e, prio, message_id);
        for (size_t i = 0; i < n_fields; i++)
                add_typed(&e, &fields[i]);
        va_start(ap, fmt);
        vsend(&e, fmt, ap);
        va_end(ap);
}

static void log_summary(unsigned long n, const char *dir, unsigned long seconds)
{
        if (dir)
                log_msg(LOG_WARNING, "%lu journal entries about databases in %s were dropped in the last %lu s: each "
                               "directory may have %d every %d s (and all together %d), so that one directory's "
                               "cannot push others' past journald's rate limit", n, dir, seconds, FLOOD_PER_DIR,
                               FLOOD_WINDOW_MS / 1000, FLOOD_ALL);
        else
                log_msg(LOG_WARNING, "%lu more journal entries about databases were dropped in the last %lu s", n,
                               seconds);
}

void log_flood_tick(bool end)
{
        uint64_t now = util_monotonic_ms();

        if (flood.dropped && (end || now - flood.window_start >= FLOOD_WINDOW_MS))
                flood_new_window(now);
}

void log_msg(int prio, const char *fmt, ...)
{
        struct log_entry e;
        va_list ap;

        if (!log_enabled(prio))
                return;
        entry_init(&e, prio, NULL);
        va_start(ap, fmt);
        vsend(&e, fmt, ap);
        va_end(ap);
}
