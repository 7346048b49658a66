/* SPDX-License-Identifier: MIT */
/* log: one logging API. Structured journal entries when the journal is the
 * target, plain lines on stderr otherwise. Priorities are syslog's. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <syslog.h>
#include <sys/uio.h>

#define LOG_PRINTF(a, b) __attribute__((format(printf, a, b)))

enum log_target {
        LOG_TARGET_AUTO,    /* journal when stderr is connected to it (JOURNAL_STREAM), else console */
        LOG_TARGET_JOURNAL,
        LOG_TARGET_CONSOLE,
};

#define LOG_MAX_FIELDS 24
#define LOG_BUF_SIZE 16384

/* One structured entry being built: fields, then a message. */
struct log_entry {
        int prio;
        size_t n_fields;
        size_t off[LOG_MAX_FIELDS], len[LOG_MAX_FIELDS];
        size_t used;
        char buf[LOG_BUF_SIZE];
};

int log_parse_target(const char *s, enum log_target *ret);
/* Resolve AUTO and remember the identifier (SYSLOG_IDENTIFIER=). */
void log_setup(enum log_target target, const char *ident);
void log_set_max_level(int prio);

void log_msg(int prio, const char *fmt, ...) LOG_PRINTF(2, 3);

/* message_id: 32 hex digits, or NULL. */
void log_entry_init(struct log_entry *e, int prio, const char *message_id);
/* Adds KEY=value; a field that does not fit is dropped (the message is kept). */
void log_field(struct log_entry *e, const char *key, const char *fmt, ...) LOG_PRINTF(3, 4);
void log_entry_send(struct log_entry *e, const char *fmt, ...) LOG_PRINTF(2, 3);

/* Entries about databases are budgeted per directory and window (log.c):
 * call now and then (loop thread), so that what a window dropped is said
 * when it ends, even if nothing else is logged after it; with end, now
 * (the daemon stops). */
void log_flood_tick(bool end);
