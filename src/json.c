/* SPDX-License-Identifier: MIT */
#include "json.h"

void json_init(struct json *j, FILE *f)
{
        j->f = f;
        j->depth = 0;
        j->first[0] = true;
}

static void put_string(FILE *f, const char *s)
{
        fputc('"', f);
        for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
                switch (*p) {
                case '"': fputs("\\\"", f); break;
                case '\\': fputs("\\\\", f); break;
                case '\n': fputs("\\n", f); break;
                case '\r': fputs("\\r", f); break;
                case '\t': fputs("\\t", f); break;
                default:
                        /* File names are bytes: control characters are escaped,
                         * everything else passes (valid UTF-8 stays valid). */
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
