/* SPDX-License-Identifier: MIT */
/* json: a minimal streaming JSON writer for sqlite-maintctl --json. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define JSON_MAX_DEPTH 8

struct json {
        FILE *f;
        int depth;
        bool first[JSON_MAX_DEPTH];
};

/* The length of the UTF-8 sequence at p (1 to 4), or 0 when it is not
 * one (overlong forms, surrogates and past U+10FFFF are not). */
size_t json_utf8_len(const unsigned char *p);

void json_init(struct json *j, FILE *f);
void json_object_begin(struct json *j, const char *key); /* key NULL: top level or array element */
void json_object_end(struct json *j);
void json_array_begin(struct json *j, const char *key);
void json_array_end(struct json *j);
void json_str(struct json *j, const char *key, const char *v); /* v NULL: null */
void json_u64(struct json *j, const char *key, uint64_t v);
void json_i64(struct json *j, const char *key, int64_t v);
void json_fixed2(struct json *j, const char *key, double v);  /* two decimals */
void json_bool(struct json *j, const char *key, bool v);

struct dbstat;
/* A database's statistics as members of the object j is in: page_count,
 * freelist_count, page_size, fragmentation_percent, file_size_bytes,
 * wal_size_bytes, estimated_wasted_space_bytes, journal_mode, auto_vacuum
 * (sqlite-maintctl --json and the control socket's status alike). */
void json_dbstat(struct json *j, const struct dbstat *st);
