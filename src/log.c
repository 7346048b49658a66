/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <systemd/sd-journal.h>

#include "log.h"
#include "util.h"

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

enum log_target log_target(void)
{
        return target;
}

void log_set_max_level(int prio)
{
        max_level = prio;
}

bool log_enabled(int prio)
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

void log_entry_init(struct log_entry *e, int prio, const char *message_id)
{
        e->prio = prio;
        e->n_fields = 0;
        e->used = 0;
        if (message_id)
                log_field(e, "MESSAGE_ID", "%s", message_id);
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

void log_field(struct log_entry *e, const char *key, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        vfield(e, key, fmt, ap);
        va_end(ap);
}

static void vsend(struct log_entry *e, const char *fmt, va_list ap)
{
        char msg[2048], prio[16], id[96];
        struct iovec iov[LOG_MAX_FIELDS + 3];
        size_t n = 0;
        int r;

        if (!log_enabled(e->prio))
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

void log_entry_send(struct log_entry *e, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        vsend(e, fmt, ap);
        va_end(ap);
}

void log_msg(int prio, const char *fmt, ...)
{
        struct log_entry e;
        va_list ap;

        if (!log_enabled(prio))
                return;
        log_entry_init(&e, prio, NULL);
        va_start(ap, fmt);
        vsend(&e, fmt, ap);
        va_end(ap);
}
