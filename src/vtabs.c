/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "util.h"
#include "vtabs.h"

/* A token of SQL, as tokenize.c sees it: what matters here is skipping
 * whitespace and comments, and reading names, quoted or not. */
struct lexer {
        const char *p;
};

static bool is_space(char c)
{
        return c == ' ' || c == '\t' || c == '\n' || c == '\f' || c == '\r';
}

/* An identifier character (tokenize.c IdChar): letters, digits, _, $ and
 * every byte of a multi-byte UTF-8 character. */
static bool is_id(unsigned char c, bool first)
{
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c >= 0x80 ||
               (!first && ((c >= '0' && c <= '9') || c == '$'));
}

static void skip_blank(struct lexer *lx)
{
        for (;;) {
                while (is_space(*lx->p))
                        lx->p++;
                if (lx->p[0] == '-' && lx->p[1] == '-') {
                        while (*lx->p && *lx->p != '\n')
                                lx->p++;
                } else if (lx->p[0] == '/' && lx->p[1] == '*') {
                        const char *end = strstr(lx->p + 2, "*/");

                        lx->p = end ? end + 2 : lx->p + strlen(lx->p);
                } else {
                        return;
                }
        }
}

/* A name, dequoted ("x", [x], `x`, 'x', or bare), into buf; false if none. */
static bool read_name(struct lexer *lx, char *buf, size_t len)
{
        char q, close;
        size_t n = 0;

        skip_blank(lx);
        q = *lx->p;
        close = q == '[' ? ']' : q;
        if (q == '"' || q == '`' || q == '\'' || q == '[') {
                lx->p++;
                for (; *lx->p; lx->p++) {
                        if (*lx->p == close) {
                                if (close != ']' && lx->p[1] == close) { /* a doubled quote */
                                        lx->p++;
                                } else {
                                        lx->p++;
                                        break;
                                }
                        }
                        if (n + 1 < len)
                                buf[n++] = *lx->p;
                }
        } else if (is_id((unsigned char)q, true)) {
                for (; is_id((unsigned char)*lx->p, false); lx->p++)
                        if (n + 1 < len)
                                buf[n++] = *lx->p;
        } else {
                return false;
        }
        buf[n] = '\0';
        return true;
}

static bool keyword(struct lexer *lx, const char *kw)
{
        size_t n = strlen(kw);

        skip_blank(lx);
        if (strncasecmp(lx->p, kw, n) != 0 || is_id((unsigned char)lx->p[n], false))
                return false;
        lx->p += n;
        return true;
}

/* The options among the module's arguments: "key = value" at the top
 * level of the parentheses (FTS4 and FTS5 take them so, the value quoted
 * or bare): content, and FTS4's compress and uncompress. */
static void read_options(struct lexer *lx, struct vtab *v)
{
        int depth = 0;

        skip_blank(lx);
        if (*lx->p != '(')
                return;
        lx->p++;
        while (*lx->p) {
                char key[64], value[256];
                struct lexer at;

                skip_blank(lx);
                at = *lx;
                if (read_name(&at, key, sizeof(key))) {
                        skip_blank(&at);
                        if (*at.p == '=') {
                                at.p++;
                                if (!read_name(&at, value, sizeof(value)))
                                        value[0] = '\0';
                                if (strcasecmp(key, "content") == 0) {
                                        v->contentless = value[0] == '\0';
                                        v->external_content = value[0] != '\0';
                                        util_strlcpy(v->content, value, sizeof(v->content));
                                } else if (v->kind == VTAB_FTS3 && value[0] &&
                                           (strcasecmp(key, "compress") == 0 || strcasecmp(key, "uncompress") == 0)) {
                                        size_t k = strlen(v->compress);

                                        snprintf(v->compress + k, sizeof(v->compress) - k, "%s%s", k ? ", " : "",
                                                 value);
                                }
                        }
                }
                /* on to the next argument at depth 0 */
                for (; *lx->p; lx->p++) {
                        char c = *lx->p;

                        if (c == '\'' || c == '"' || c == '`' || c == '[') {
                                char tmp[2];

                                (void)read_name(lx, tmp, sizeof(tmp));
                                lx->p--;
                        } else if ((c == '-' && lx->p[1] == '-') || (c == '/' && lx->p[1] == '*')) {
                                /* a comment inside an argument: its quotes
                                 * and parentheses are not SQL */
                                skip_blank(lx);
                                lx->p--;
                        } else if (c == '(') {
                                depth++;
                        } else if (c == ')' && depth-- == 0) {
                                return;
                        } else if (c == ',' && depth == 0) {
                                lx->p++;
                                break;
                        }
                }
        }
}

int vtab_parse(const char *sql, struct vtab *v)
{
        static const struct {
                const char *module;
                enum vtab_kind kind;
        } known[] = {
                { "fts3", VTAB_FTS3 },        { "fts4", VTAB_FTS3 },         { "fts5", VTAB_FTS5 },
                { "rtree", VTAB_RTREE },      { "rtree_i32", VTAB_RTREE },   { "geopoly", VTAB_RTREE },
                { "fts5vocab", VTAB_AUX },    { "fts4aux", VTAB_AUX },       { "fts3tokenize", VTAB_AUX },
        };
        struct lexer lx = { sql ? sql : "" };
        char name[256];

        v->kind = VTAB_OTHER;
        v->module[0] = '\0';
        v->contentless = v->external_content = false;
        v->content[0] = v->compress[0] = '\0';
        if (!keyword(&lx, "CREATE") || !keyword(&lx, "VIRTUAL") || !keyword(&lx, "TABLE"))
                return -EINVAL;
        if (keyword(&lx, "IF") && (!keyword(&lx, "NOT") || !keyword(&lx, "EXISTS")))
                return -EINVAL;
        if (!read_name(&lx, name, sizeof(name)))
                return -EINVAL;
        skip_blank(&lx);
        if (*lx.p == '.') { /* schema.name */
                lx.p++;
                if (!read_name(&lx, name, sizeof(name)))
                        return -EINVAL;
        }
        if (!keyword(&lx, "USING") || !read_name(&lx, v->module, sizeof(v->module)))
                return -EINVAL;
        for (char *c = v->module; *c; c++)
                if (*c >= 'A' && *c <= 'Z')
                        *c = (char)(*c - 'A' + 'a');
        for (size_t i = 0; i < ELEMENTSOF(known); i++)
                if (strcmp(v->module, known[i].module) == 0)
                        v->kind = known[i].kind;
        if (strcmp(v->module, "fts4") == 0 || v->kind == VTAB_FTS5)
                read_options(&lx, v);
        return 0;
}

void vtabs_free(struct vtab *v, size_t n)
{
        for (size_t i = 0; v && i < n; i++)
                free(v[i].name);
        free(v);
}

int vtabs_list(sqlite3 *db, struct vtab **ret, size_t *n)
{
        struct vtab *v = NULL;
        size_t k = 0, cap = 0;
        sqlite3_stmt *s;
        int rc;

        *ret = NULL;
        *n = 0;
        /* a virtual table's row: type 'table', rootpage 0 (vacuum.c) */
        rc = sqlite3_prepare_v2(db, "SELECT name, sql FROM main.sqlite_schema WHERE type = 'table' AND rootpage = 0 "
                                    "AND sql IS NOT NULL ORDER BY rowid", -1, &s, NULL);
        if (rc != SQLITE_OK)
                return rc;
        while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
                const char *name = (const char *)sqlite3_column_text(s, 0);
                struct vtab one;

                if (!name || vtab_parse((const char *)sqlite3_column_text(s, 1), &one) < 0)
                        continue;
                if (k == cap) {
                        struct vtab *nv = realloc(v, (cap = cap ? 2 * cap : 8) * sizeof(*v));

                        if (!nv) {
                                rc = SQLITE_NOMEM;
                                break;
                        }
                        v = nv;
                }
                one.name = strdup(name);
                if (!one.name) {
                        rc = SQLITE_NOMEM;
                        break;
                }
                v[k++] = one;
        }
        sqlite3_finalize(s);
        if (rc != SQLITE_DONE) {
                vtabs_free(v, k);
                return rc;
        }
        *ret = v;
        *n = k;
        return SQLITE_OK;
}

const char *vtab_kind_name(enum vtab_kind k)
{
        switch (k) {
        case VTAB_FTS3:
        case VTAB_FTS5: return "full-text index";
        case VTAB_RTREE: return "R*Tree index";
        case VTAB_AUX: return "full-text auxiliary table";
        case VTAB_OTHER: break;
        }
        return "virtual table";
}

/* What stops a check for good, rather than saying something of the table:
 * the caller gives up and reports it (a lock, a stop request, the disk). */
static bool operational(int rc)
{
        switch (rc & 0xff) {
        case SQLITE_BUSY:
        case SQLITE_LOCKED:
        case SQLITE_INTERRUPT:
        case SQLITE_IOERR:
        case SQLITE_FULL:
        case SQLITE_READONLY:
                return true;
        default:
                return false;
        }
}

static int say(char **why, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int say(char **why, const char *fmt, ...)
{
        va_list ap;
        char *m;

        va_start(ap, fmt);
        m = sqlite3_vmprintf(fmt, ap);
        va_end(ap);
        *why = m ? strdup(m) : NULL;
        sqlite3_free(m);
        return *why ? SQLITE_OK : SQLITE_NOMEM;
}

/* Whether main has a table (or view, when view) of that name. */
static bool has_table(sqlite3 *db, const char *name, bool view)
{
        sqlite3_stmt *s;
        bool yes = false;

        if (sqlite3_prepare_v2(db, "SELECT type FROM main.sqlite_schema WHERE name = ?1 COLLATE NOCASE", -1, &s,
                               NULL) != SQLITE_OK)
                return true; /* not known: not said missing */
        sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
        if (sqlite3_step(s) == SQLITE_ROW) {
                const char *type = (const char *)sqlite3_column_text(s, 0);

                yes = type && strcmp(type, view ? "view" : "table") == 0;
        }
        sqlite3_finalize(s);
        return yes;
}

static int finish_check(sqlite3 *db, const struct vtab *v, int rc, enum vtab_verdict *verdict, char **why)
{
        char said[256];

        if (rc == SQLITE_OK) {
                *verdict = VTAB_VERDICT_OK;
                return SQLITE_OK;
        }
        if (operational(rc))
                return rc;
        /* its words before another statement replaces them */
        util_strlcpy(said, sqlite3_errmsg(db), sizeof(said));
        *verdict = (rc & 0xff) == SQLITE_CORRUPT ? VTAB_VERDICT_CORRUPT : VTAB_VERDICT_CANNOT;
        if ((rc & 0xff) == SQLITE_NOMEM)
                return say(why, "SQLite ran out of memory in the check, as FTS5 does on some damaged indexes, "
                                "from a size read from the index");
        if (v->external_content && *verdict == VTAB_VERDICT_CANNOT) {
                if (has_table(db, v->content, true))
                        return say(why, "its content table %s is a view, and sqlite-maintd does not run the "
                                        "views a database file defines", v->content);
                if (!has_table(db, v->content, false))
                        return say(why, "its content table %s does not exist", v->content);
        }
        /* SQLITE_CORRUPT_VTAB: what the FTS integrity-check returns when
         * the index and the content disagree (fts3_write.c, fts5_index.c),
         * and the R*Tree module when a node cannot be read (rtree.c) */
        if (rc == SQLITE_CORRUPT_VTAB)
                return say(why, "the index is damaged or does not match its content (%s, SQLITE_CORRUPT_VTAB)",
                           said);
        return say(why, "%s", said);
}

/* The shadow tables each module keeps its index in, whatever its options
 * (fts3.html "Shadow Tables", fts5.html, rtree.html): one missing, and
 * the table cannot work at all. */
static int shadow_tables(sqlite3 *db, const struct vtab *v, enum vtab_verdict *verdict, char **why)
{
        static const char *const fts3[] = { "segments", "segdir", NULL };
        static const char *const fts5[] = { "data", "idx", "config", NULL };
        static const char *const rtree[] = { "node", "parent", "rowid", NULL };
        const char *const *names = v->kind == VTAB_FTS3 ? fts3 : v->kind == VTAB_FTS5 ? fts5 : rtree;

        for (; *names; names++) {
                char *t = sqlite3_mprintf("%s_%s", v->name, *names);
                bool there;

                if (!t)
                        return SQLITE_NOMEM;
                there = has_table(db, t, false);
                if (!there) {
                        int rc;

                        *verdict = VTAB_VERDICT_CORRUPT;
                        rc = say(why, "its shadow table %s is missing: the index cannot be read", t);
                        sqlite3_free(t);
                        return rc;
                }
                sqlite3_free(t);
        }
        return SQLITE_OK;
}

/* rtreecheck(): 'ok', or its findings, one per line (rtree.c
 * rtreeCheckAppendMsg). */
static int check_rtree(sqlite3 *db, const struct vtab *v, enum vtab_verdict *verdict, char **why)
{
        sqlite3_stmt *s;
        int rc = sqlite3_prepare_v2(db, "SELECT rtreecheck('main', ?1)", -1, &s, NULL);

        if (rc != SQLITE_OK)
                return finish_check(db, v, rc, verdict, why);
        sqlite3_bind_text(s, 1, v->name, -1, SQLITE_STATIC);
        rc = sqlite3_step(s);
        if (rc == SQLITE_ROW) {
                const char *text = (const char *)sqlite3_column_text(s, 0);

                if (text && strcmp(text, "ok") == 0) {
                        *verdict = VTAB_VERDICT_OK;
                } else {
                        *verdict = VTAB_VERDICT_CORRUPT;
                        *why = strdup(text ? text : "rtreecheck() returned NULL");
                        if (!*why)
                                rc = SQLITE_NOMEM;
                }
                sqlite3_finalize(s);
                return rc == SQLITE_ROW ? SQLITE_OK : rc;
        }
        sqlite3_finalize(s);
        return finish_check(db, v, rc, verdict, why);
}

int vtab_check(sqlite3 *db, const struct vtab *v, enum vtab_verdict *verdict, char **why)
{
        char *sql;
        int rc;

        *why = NULL;
        *verdict = VTAB_VERDICT_OK;
        if (v->kind == VTAB_FTS3 || v->kind == VTAB_FTS5 || v->kind == VTAB_RTREE) {
                rc = shadow_tables(db, v, verdict, why);
                if (rc != SQLITE_OK || *verdict != VTAB_VERDICT_OK)
                        return rc;
        }
        switch (v->kind) {
        case VTAB_RTREE:
                return check_rtree(db, v, verdict, why);
        case VTAB_FTS3:
                /* fts3_write.c fts3IntegrityCheck() tokenizes the content
                 * and compares: without content it cannot (SQLite 3.40
                 * answers "SQL logic error"). */
                if (v->contentless) {
                        *verdict = VTAB_VERDICT_CANNOT;
                        *why = strdup("a contentless table (content=''): SQLite's integrity-check compares the "
                                      "index with the content, which this table does not keep");
                        return *why ? SQLITE_OK : SQLITE_NOMEM;
                }
                /* the content is read through them (fts3.html, "The
                 * compress= and uncompress= options") */
                if (v->compress[0]) {
                        *verdict = VTAB_VERDICT_CANNOT;
                        return say(why, "its content is read through the functions %s (compress=, uncompress=), "
                                        "which only the application defines", v->compress);
                }
                sql = sqlite3_mprintf("INSERT INTO main.\"%w\"(\"%w\") VALUES('integrity-check')", v->name, v->name);
                break;
        case VTAB_FTS5:
                /* rank 1: an external-content table's index is compared
                 * with its content table too (fts5.html, "The
                 * 'integrity-check' Command") */
                sql = sqlite3_mprintf("INSERT INTO main.\"%w\"(\"%w\", rank) VALUES('integrity-check', 1)", v->name,
                                      v->name);
                break;
        default:
                return SQLITE_OK;
        }
        if (!sql)
                return SQLITE_NOMEM;
        rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
        sqlite3_free(sql);
        return finish_check(db, v, rc, verdict, why);
}

const char *vtab_kind_key(enum vtab_kind k)
{
        switch (k) {
        case VTAB_FTS3:
        case VTAB_FTS5: return "full_text";
        case VTAB_RTREE: return "rtree";
        case VTAB_AUX: return "auxiliary";
        case VTAB_OTHER: break;
        }
        return "other";
}

const char *vtab_verdict_name(enum vtab_verdict v)
{
        switch (v) {
        case VTAB_VERDICT_OK: return "ok";
        case VTAB_VERDICT_CORRUPT: return "corrupt";
        case VTAB_VERDICT_CANNOT: break;
        }
        return "cannot_check";
}
