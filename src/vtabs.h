/* SPDX-License-Identifier: MIT */
/* vtabs: the virtual tables a database declares, read from its schema as
 * SQLite's own tokenizer reads a CREATE VIRTUAL TABLE statement (tokenize.c,
 * vtab.c: any case, quoting, comments, whitespace and line breaks), and
 * which of them carry an index SQLite can check: FTS3/4/5 tables
 * ('integrity-check', fts3.html, fts5.html) and R*Tree tables (rtreecheck(),
 * rtree.html). The auxiliary modules (fts5vocab, fts4aux, fts3tokenize) are
 * views of another table, not indexes. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include <sqlite3.h>

enum vtab_kind {
        VTAB_OTHER,  /* a module this code does not check */
        VTAB_AUX,    /* fts5vocab, fts4aux, fts3tokenize: nothing of its own to check */
        VTAB_FTS3,   /* fts3 and fts4: INSERT INTO t(t) VALUES('integrity-check') */
        VTAB_FTS5,   /* INSERT INTO t(t, rank) VALUES('integrity-check', 1) */
        VTAB_RTREE,  /* rtree, rtree_i32, geopoly: rtreecheck() */
};

struct vtab {
        char *name;
        char module[64];       /* as declared, lower case */
        enum vtab_kind kind;
        bool contentless;      /* content='' (FTS4/FTS5; to fts3 an ordinary column): no content to compare */
        bool external_content; /* content=TABLE (FTS4/FTS5) */
        char content[128];     /* that TABLE */
        char compress[128];    /* FTS4 compress=F / uncompress=G: "F, G", functions only the application has */
};

/* Parse the sql of a sqlite_schema row of a virtual table ("CREATE VIRTUAL
 * TABLE name USING module(args)"): the module, and FTS4's and FTS5's
 * content option and FTS4's compress and uncompress (fts3.c fts3InitVtab
 * reads options for fts4 only: to fts3, "content=''" declares a column).
 * Returns 0, or -EINVAL when it is not such a statement. Exported for
 * tests/unit/test-vtabs.c. */
int vtab_parse(const char *sql, struct vtab *v);

/* Every virtual table of main, from sqlite_schema (the modules are not
 * loaded: a table whose module is missing is still listed). Returns an
 * SQLite result code; *ret is a malloc'd array of *n (vtabs_free). */
int vtabs_list(sqlite3 *db, struct vtab **ret, size_t *n);
void vtabs_free(struct vtab *v, size_t n);

const char *vtab_kind_name(enum vtab_kind k); /* "full-text index", "R*Tree index", ... */
const char *vtab_kind_key(enum vtab_kind k);  /* "full_text", "rtree", "auxiliary", "other": for JSON */

enum vtab_verdict {
        VTAB_VERDICT_OK,
        VTAB_VERDICT_CORRUPT, /* SQLite's check found the index damaged or not matching its content, or a
                               * shadow table of the module's is missing */
        VTAB_VERDICT_CANNOT,  /* no check can run here (a contentless FTS4 table, a module, tokenizer or
                               * function this SQLite lacks, a content table that is a view or missing,
                               * SQLite out of memory in the check) */
};

/* The check SQLite supports for v, on db: first, that the module's shadow
 * tables are there (fts3.html, fts5.html, rtree.html name them); then
 * FTS3/4 'integrity-check' (fts3.html; not for a contentless table, nor
 * with compress functions), FTS5 'integrity-check' with rank 1
 * (fts5.html), rtreecheck() (rtree.html); nothing (VTAB_VERDICT_OK) for
 * the other kinds. The FTS checks are INSERT statements: db must be
 * writable (a snapshot; they change nothing). Returns SQLITE_OK with
 * *verdict, and *why (malloc'd, SQLite's own words; rtreecheck()'s
 * findings one per line) unless ok; or the SQLite error that stopped the
 * check before it said anything of the table (busy, interrupted, I/O,
 * read-only). Out of memory in the check is the table's CANNOT: FTS5
 * answers SQLITE_NOMEM for some damaged indexes (a size read from the
 * index), so it says nothing of the other tables. */
int vtab_check(sqlite3 *db, const struct vtab *v, enum vtab_verdict *verdict, char **why);
const char *vtab_verdict_name(enum vtab_verdict v); /* "ok", "corrupt", "cannot_check" */
