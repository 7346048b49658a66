/* SPDX-License-Identifier: MIT */
/* log: one logging API. Structured journal entries when the journal is the
 * target, plain lines on stderr otherwise. Priorities are syslog's. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <syslog.h>
#include <sys/uio.h>

#define LOG_PRINTF(a, b) __attribute__((format(printf, a, b)))

enum log_target {
        LOG_TARGET_AUTO,    /* journal when stderr is connected to it (JOURNAL_STREAM), else console */
        LOG_TARGET_JOURNAL,
        LOG_TARGET_CONSOLE,
};

int log_parse_target(const char *s, enum log_target *ret);
/* Resolve AUTO and remember the identifier (SYSLOG_IDENTIFIER=). */
void log_setup(enum log_target target, const char *ident);
void log_set_max_level(int prio);

/* A plain line: MESSAGE= and PRIORITY= only. */
void log_msg(int prio, const char *fmt, ...) LOG_PRINTF(2, 3);

/* One field of a structured entry, KEY=value, its value formatted by its
 * type: text as it is, integers in decimal, a percentage with two
 * decimals ("12.50"). A field whose key is NULL, or whose text is NULL, is
 * left out: an optional field is `cond ? "KEY" : NULL`. */
enum log_field_type {
        LOG_FIELD_TEXT,
        LOG_FIELD_U64,
        LOG_FIELD_I64,
        LOG_FIELD_PERCENT,
};

struct log_field {
        const char *key;
        enum log_field_type type;
        union {
                const char *text;
                uint64_t u;
                int64_t i;
                double d;
        };
};

#define LOG_TEXT(k, v) { .key = (k), .type = LOG_FIELD_TEXT, .text = (v) }
#define LOG_U64(k, v) { .key = (k), .type = LOG_FIELD_U64, .u = (uint64_t)(v) }
#define LOG_I64(k, v) { .key = (k), .type = LOG_FIELD_I64, .i = (int64_t)(v) }
#define LOG_PERCENT(k, v) { .key = (k), .type = LOG_FIELD_PERCENT, .d = (double)(v) }
/* The fields of one entry, as log_struct() takes them: an array and its length. */
#define LOG_FIELDS(...) ((const struct log_field[]){ __VA_ARGS__ }), \
        (sizeof((const struct log_field[]){ __VA_ARGS__ }) / sizeof(struct log_field))
#define LOG_NO_FIELDS NULL, 0

/* Every field at once, then the message, as systemd's log_struct(): one
 * entry with MESSAGE_ID=message_id (32 hex digits, or NULL), PRIORITY=,
 * SYSLOG_IDENTIFIER= and the fields; on the console, the message alone.
 * At most LOG_MAX_FIELDS fields and LOG_BUF_SIZE bytes of them: a field
 * past either is dropped, the message is kept. An entry with a DB_PATH
 * field is budgeted per directory (below). */
#define LOG_MAX_FIELDS 24
#define LOG_BUF_SIZE 16384
void log_struct(int prio, const char *message_id, const struct log_field *fields, size_t n_fields, const char *fmt,
                ...) LOG_PRINTF(5, 6);

/* Entries about databases are budgeted per directory and window (log.c):
 * call now and then (loop thread), so that what a window dropped is said
 * when it ends, even if nothing else is logged after it; with end, now
 * (the daemon stops). */
void log_flood_tick(bool end);
