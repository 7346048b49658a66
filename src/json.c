/* SPDX-License-Identifier: MIT */
#include "dbstat.h"
#include "json.h"
#include "util.h"

void json_init(struct json *j, FILE *f)
{
        j->f = f;
        j->depth = 0;
        j->first[0] = true;
}

/* Length of the valid UTF-8 sequence at p (1-4), or 0 if it is not one. */
size_t json_utf8_len(const unsigned char *p)
{
        size_t n;
        uint32_t cp;

        if (p[0] < 0x80)
                return 1;
        if (p[0] >= 0xc2 && p[0] <= 0xdf)
                n = 2, cp = p[0] & 0x1f;
        else if (p[0] >= 0xe0 && p[0] <= 0xef)
                n = 3, cp = p[0] & 0x0f;
        else if (p[0] >= 0xf0 && p[0] <= 0xf4)
                n = 4, cp = p[0] & 0x07;
        else
                return 0;
        for (size_t i = 1; i < n; i++) {
                if ((p[i] & 0xc0) != 0x80) /* also stops at the NUL */
                        return 0;
                cp = cp << 6 | (p[i] & 0x3f);
        }
        /* No overlong forms, no surrogates, nothing past U+10FFFF. */
        if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff))
                return 0;
        return n;
}

static void put_string(FILE *f, const char *s)
{
        fputc('"', f);
        for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
                size_t n = json_utf8_len(p);

                /* JSON is Unicode: bytes that are not UTF-8 (a file name, a
                 * name from a damaged schema) become U+FFFD. */
                if (n == 0) {
                        fputs("\\ufffd", f);
                        continue;
                }
                if (n > 1) {
                        uint32_t cp = n == 2 ? (uint32_t)(p[0] & 0x1f) << 6 | (p[1] & 0x3f)
                                    : n == 3 ? (uint32_t)(p[0] & 0x0f) << 12 | (uint32_t)(p[1] & 0x3f) << 6 |
                                               (p[2] & 0x3f)
                                             : 0x10000;

                        /* what a terminal acts on (util_terminal_unsafe): as \u */
                        if (util_terminal_unsafe(cp))
                                fprintf(f, "\\u%04x", (unsigned)cp);
                        else
                                fwrite(p, 1, n, f);
                        p += n - 1;
                        continue;
                }
                switch (*p) {
                case '"': fputs("\\\"", f); break;
                case '\\': fputs("\\\\", f); break;
                case '\n': fputs("\\n", f); break;
                case '\r': fputs("\\r", f); break;
                case '\t': fputs("\\t", f); break;
                default:
                        if (*p < 0x20 || *p == 0x7f)
                                fprintf(f, "\\u%04x", *p);
                        else
                                fputc(*p, f);
                }
        }
        fputc('"', f);
}

/* Comma and key before a value at the current depth. */
static void prefix(struct json *j, const char *key)
{
        if (j->depth > 0) {
                if (!j->first[j->depth])
                        fputc(',', j->f);
                j->first[j->depth] = false;
        }
        if (key) {
                put_string(j->f, key);
                fputc(':', j->f);
        }
}

static void open_container(struct json *j, const char *key, char c)
{
        prefix(j, key);
        fputc(c, j->f);
        if (j->depth + 1 < JSON_MAX_DEPTH)
                j->depth++;
        j->first[j->depth] = true;
}

static void close_container(struct json *j, char c)
{
        fputc(c, j->f);
        if (j->depth > 0)
                j->depth--;
        if (j->depth == 0)
                fputc('\n', j->f);
}

void json_object_begin(struct json *j, const char *key) { open_container(j, key, '{'); }
void json_object_end(struct json *j) { close_container(j, '}'); }
void json_array_begin(struct json *j, const char *key) { open_container(j, key, '['); }
void json_array_end(struct json *j) { close_container(j, ']'); }

void json_str(struct json *j, const char *key, const char *v)
{
        prefix(j, key);
        if (v)
                put_string(j->f, v);
        else
                fputs("null", j->f);
}

void json_u64(struct json *j, const char *key, uint64_t v)
{
        prefix(j, key);
        fprintf(j->f, "%llu", (unsigned long long)v);
}

void json_i64(struct json *j, const char *key, int64_t v)
{
        prefix(j, key);
        fprintf(j->f, "%lld", (long long)v);
}

void json_fixed2(struct json *j, const char *key, double v)
{
        prefix(j, key);
        fprintf(j->f, "%.2f", v);
}

void json_bool(struct json *j, const char *key, bool v)
{
        prefix(j, key);
        fputs(v ? "true" : "false", j->f);
}

void json_dbstat(struct json *j, const struct dbstat *st)
{
        json_u64(j, "page_count", st->page_count);
        json_u64(j, "freelist_count", st->freelist_count);
        json_u64(j, "page_size", st->page_size);
        json_fixed2(j, "fragmentation_percent", st->fragmentation_percent);
        json_u64(j, "file_size_bytes", st->file_size_bytes);
        json_u64(j, "wal_size_bytes", st->wal_size_bytes);
        json_u64(j, "estimated_wasted_space_bytes", st->estimated_wasted_space_bytes);
        json_str(j, "journal_mode", st->journal_mode);
        json_str(j, "auto_vacuum", dbstat_auto_vacuum_name(st->auto_vacuum));
}
