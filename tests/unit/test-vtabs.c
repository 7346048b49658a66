/* SPDX-License-Identifier: MIT */
/* vtabs: CREATE VIRTUAL TABLE statements as SQLite's tokenizer reads them
 * (case, quoting, comments, line breaks, IF NOT EXISTS, schema.name), the
 * content= option, the kind of each module; then the list and the checks
 * on real tables in an in-memory database. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "check.h"
#include "vtabs.h"

/* sql parses, to module and kind */
static void parses(const char *sql, const char *module, enum vtab_kind kind)
{
        struct vtab v;
        int r = vtab_parse(sql, &v);

        CHECK_MSG(r == 0, "vtab_parse(%s) = %d", sql, r);
        if (r != 0)
                return;
        CHECK_MSG(strcmp(v.module, module) == 0, "vtab_parse(%s): module \"%s\", want \"%s\"", sql, v.module, module);
        CHECK_MSG(v.kind == kind, "vtab_parse(%s): kind %d, want %d", sql, (int)v.kind, (int)kind);
}

static void rejects(const char *sql)
{
        struct vtab v;
        int r = vtab_parse(sql, &v);

        CHECK_MSG(r == -EINVAL, "vtab_parse(%s) = %d, want -EINVAL", sql ? sql : "NULL", r);
}

enum content { PLAIN, CONTENTLESS, EXTERNAL };

static void content(const char *sql, enum content want)
{
        struct vtab v;
        int r = vtab_parse(sql, &v);

        CHECK_MSG(r == 0, "vtab_parse(%s) = %d", sql, r);
        if (r != 0)
                return;
        CHECK_MSG(v.contentless == (want == CONTENTLESS), "vtab_parse(%s): contentless %d, want %d", sql,
                  v.contentless, want == CONTENTLESS);
        CHECK_MSG(v.external_content == (want == EXTERNAL), "vtab_parse(%s): external_content %d, want %d", sql,
                  v.external_content, want == EXTERNAL);
}

static void test_modules(void)
{
        static const struct {
                const char *module;
                enum vtab_kind kind;
        } m[] = {
                { "fts3", VTAB_FTS3 },         { "fts4", VTAB_FTS3 },        { "fts5", VTAB_FTS5 },
                { "rtree", VTAB_RTREE },       { "rtree_i32", VTAB_RTREE },  { "geopoly", VTAB_RTREE },
                { "fts5vocab", VTAB_AUX },     { "fts4aux", VTAB_AUX },      { "fts3tokenize", VTAB_AUX },
                { "dbstat", VTAB_OTHER },      { "csv", VTAB_OTHER },        { "spellfix1", VTAB_OTHER },
                /* a name that only starts like a known module is another module */
                { "fts5x", VTAB_OTHER },       { "fts", VTAB_OTHER },        { "rtree2", VTAB_OTHER },
                { "fts4auxiliary", VTAB_OTHER },
        };
        char sql[256];

        for (size_t i = 0; i < sizeof(m) / sizeof(m[0]); i++) {
                snprintf(sql, sizeof(sql), "CREATE VIRTUAL TABLE t USING %s(a, b, c)", m[i].module);
                parses(sql, m[i].module, m[i].kind);
        }
        /* no arguments at all: SQLite allows it (fts5 then fails to create, not to parse) */
        parses("CREATE VIRTUAL TABLE t USING fts4", "fts4", VTAB_FTS3);
        parses("CREATE VIRTUAL TABLE t USING rtree_i32 ", "rtree_i32", VTAB_RTREE);

        CHECK_STREQ(vtab_kind_key(VTAB_FTS3), "full_text");
        CHECK_STREQ(vtab_kind_key(VTAB_FTS5), "full_text");
        CHECK_STREQ(vtab_kind_key(VTAB_RTREE), "rtree");
        CHECK_STREQ(vtab_kind_key(VTAB_AUX), "auxiliary");
        CHECK_STREQ(vtab_kind_key(VTAB_OTHER), "other");
        CHECK_STREQ(vtab_verdict_name(VTAB_VERDICT_OK), "ok");
        CHECK_STREQ(vtab_verdict_name(VTAB_VERDICT_CORRUPT), "corrupt");
        CHECK_STREQ(vtab_verdict_name(VTAB_VERDICT_CANNOT), "cannot_check");
}

static void test_spellings(void)
{
        /* any case, for the keywords and the module */
        parses("create virtual table t using FtS5(a)", "fts5", VTAB_FTS5);
        parses("CrEaTe ViRtUaL TaBlE t UsInG RTREE(id, x0, x1)", "rtree", VTAB_RTREE);
        parses("CREATE VIRTUAL TABLE t USING RTREE_I32(id, x0, x1)", "rtree_i32", VTAB_RTREE);
        parses("CREATE VIRTUAL TABLE t USING GeoPoly(a)", "geopoly", VTAB_RTREE);
        parses("CREATE VIRTUAL TABLE v USING FTS5VOCAB(f, 'row')", "fts5vocab", VTAB_AUX);
        /* quoted names, with spaces and doubled quotes */
        parses("CREATE VIRTUAL TABLE \"my \"\"odd\"\" fts\" USING fts5(a)", "fts5", VTAB_FTS5);
        parses("CREATE VIRTUAL TABLE [with space] USING fts4(a)", "fts4", VTAB_FTS3);
        parses("CREATE VIRTUAL TABLE `back``tick` USING fts3(a)", "fts3", VTAB_FTS3);
        parses("CREATE VIRTUAL TABLE 'single ''q''' USING rtree(id, a, b)", "rtree", VTAB_RTREE);
        parses("CREATE VIRTUAL TABLE \"USING\" USING fts5(a)", "fts5", VTAB_FTS5);
        parses("CREATE VIRTUAL TABLE [a(b] USING fts5(a)", "fts5", VTAB_FTS5);
        parses("CREATE VIRTUAL TABLE t\xc3\xa9l\xc3\xa9 USING fts5(a)", "fts5", VTAB_FTS5);
        parses("CREATE VIRTUAL TABLE _t$1 USING fts5(a)", "fts5", VTAB_FTS5);
        /* a quoted module name (SQLite takes any name token there) */
        parses("CREATE VIRTUAL TABLE t USING \"fts5\"(a)", "fts5", VTAB_FTS5);
        parses("CREATE VIRTUAL TABLE t USING [RTree](id, a, b)", "rtree", VTAB_RTREE);
        /* comments and line breaks anywhere between tokens */
        parses("CREATE /* a */ VIRTUAL -- b\n TABLE/**/t/* c */USING/*d*/fts5(a)", "fts5", VTAB_FTS5);
        parses("CREATE VIRTUAL TABLE t -- the index\n  USING -- which module\n  rtree(id, x0, x1)", "rtree",
               VTAB_RTREE);
        parses("\n\t CREATE\r\nVIRTUAL\tTABLE\fx\nUSING\n\nfts4\n(\na\n)\n", "fts4", VTAB_FTS3);
        parses("/* leading */ -- and another\nCREATE VIRTUAL TABLE t USING fts5(a)", "fts5", VTAB_FTS5);
        parses("CREATE VIRTUAL TABLE t /* USING fts4 */ USING rtree(id, a, b)", "rtree", VTAB_RTREE);
        parses("CREATE VIRTUAL TABLE t -- USING fts4\nUSING fts5(a)", "fts5", VTAB_FTS5);
        /* IF NOT EXISTS, schema.name */
        parses("CREATE VIRTUAL TABLE IF NOT EXISTS t USING fts5(a)", "fts5", VTAB_FTS5);
        parses("create virtual table if  not\nexists t using fts4(a)", "fts4", VTAB_FTS3);
        parses("CREATE VIRTUAL TABLE main.t USING rtree(id, a, b)", "rtree", VTAB_RTREE);
        parses("CREATE VIRTUAL TABLE \"main\" . \"t x\" USING fts5(a)", "fts5", VTAB_FTS5);
        parses("CREATE VIRTUAL TABLE IF NOT EXISTS [main].[t] USING fts5vocab(f, row)", "fts5vocab", VTAB_AUX);
        /* a name that starts like a keyword is a name */
        parses("CREATE VIRTUAL TABLE iffy USING fts5(a)", "fts5", VTAB_FTS5);
        parses("CREATE VIRTUAL TABLE usingx USING fts5(a)", "fts5", VTAB_FTS5);
}

static void test_rejected(void)
{
        rejects(NULL);
        rejects("");
        rejects("   -- nothing\n");
        rejects("CREATE TABLE t(a)");
        rejects("CREATE INDEX i ON t(a)");
        rejects("CREATE VIEW v AS SELECT 1");
        rejects("SELECT 1");
        rejects("CREATE VIRTUALTABLE t USING fts5(a)");
        rejects("CREATE VIRTUAL TABLES t USING fts5(a)");
        rejects("CREATE VIRTUAL t USING fts5(a)");
        rejects("CREATE VIRTUAL TABLE t");
        rejects("CREATE VIRTUAL TABLE t fts5(a)");
        rejects("CREATE VIRTUAL TABLE t USING (a)");
        rejects("CREATE VIRTUAL TABLE t USING");
        rejects("CREATE VIRTUAL TABLE USING fts5(a)");
        rejects("CREATE VIRTUAL TABLE IF EXISTS t USING fts5(a)");
        rejects("CREATE VIRTUAL TABLE IF NOT t USING fts5(a)");
        rejects("CREATE VIRTUAL TABLE main. USING fts5(a)");
        rejects("CREATE VIRTUAL TABLE (t) USING fts5(a)");
        rejects("CREATE /* unterminated VIRTUAL TABLE t USING fts5(a)");
}

static void test_content(void)
{
        content("CREATE VIRTUAL TABLE t USING fts5(a, b)", PLAIN);
        content("CREATE VIRTUAL TABLE t USING fts5(a, content='')", CONTENTLESS);
        content("CREATE VIRTUAL TABLE t USING fts4(a, content=\"\")", CONTENTLESS);
        content("CREATE VIRTUAL TABLE t USING fts4(content=``, a)", CONTENTLESS);
        content("CREATE VIRTUAL TABLE t USING fts5(a, content=[])", CONTENTLESS);
        content("CREATE VIRTUAL TABLE t USING fts5(a, content=docs)", EXTERNAL);
        content("CREATE VIRTUAL TABLE t USING fts5(a, content=docs, content_rowid=id)", EXTERNAL);
        content("CREATE VIRTUAL TABLE t USING fts4(a, CONTENT = 'x')", EXTERNAL);
        content("CREATE VIRTUAL TABLE t USING fts4(a, Content=\"my docs\")", EXTERNAL);
        content("CREATE VIRTUAL TABLE t USING fts5(a,\n  content\n  =\n  ''\n)", CONTENTLESS);
        content("CREATE VIRTUAL TABLE t USING fts5(a, /* c */ content = /* d */ '' -- e\n)", CONTENTLESS);
        /* other options around it, some with commas and parentheses in quotes */
        content("CREATE VIRTUAL TABLE t USING fts5(a, tokenize = 'porter unicode61 remove_diacritics 1', "
                "content='')", CONTENTLESS);
        content("CREATE VIRTUAL TABLE t USING fts5(a, tokenize=\"unicode61 tokenchars ',()'\", content=docs)",
                EXTERNAL);
        content("CREATE VIRTUAL TABLE t USING fts5(a, prefix='2 3', content='x(y', b)", EXTERNAL);
        content("CREATE VIRTUAL TABLE t USING fts4(a, tokenize=unicode61 \"tokenchars=,\", content='')",
                CONTENTLESS);
        /* not the content option: a column called content, content_rowid alone, another key */
        content("CREATE VIRTUAL TABLE t USING fts5(content, body)", PLAIN);
        content("CREATE VIRTUAL TABLE t USING fts5(title, content UNINDEXED)", PLAIN);
        content("CREATE VIRTUAL TABLE t USING fts4(content TEXT, body TEXT)", PLAIN);
        content("CREATE VIRTUAL TABLE t USING fts5(a, content_rowid=id)", PLAIN);
        content("CREATE VIRTUAL TABLE t USING fts5(a, contentless_delete=1)", PLAIN);
        content("CREATE VIRTUAL TABLE t USING fts5(a, tokenize='content=x')", PLAIN);
        /* content= is an FTS option: other modules' arguments say nothing of it */
        content("CREATE VIRTUAL TABLE t USING rtree(id, content, b)", PLAIN);
        content("CREATE VIRTUAL TABLE t USING fts5vocab(content='', row)", PLAIN);
        /* A comment inside an argument is no argument text of SQLite's
         * (vtab.c takes each argument from its first token to its last),
         * and a quote in it quotes nothing. */
        content("CREATE VIRTUAL TABLE t USING fts4(a /* it's */, content=\"\")", CONTENTLESS);
        content("CREATE VIRTUAL TABLE t USING fts4(a -- it's the body\n, content='')", CONTENTLESS);
        content("CREATE VIRTUAL TABLE t USING fts5(a /* ) */, content=docs)", EXTERNAL);
}

/* FTS4's and FTS5's options as recorded: the content table's name, and
 * FTS4's compress and uncompress functions, "F, G" in the order given */
static void options(const char *sql, const char *want_content, const char *want_compress)
{
        struct vtab v;
        int r = vtab_parse(sql, &v);

        CHECK_MSG(r == 0, "vtab_parse(%s) = %d", sql, r);
        if (r != 0)
                return;
        CHECK_MSG(strcmp(v.content, want_content) == 0, "vtab_parse(%s): content \"%s\", want \"%s\"", sql,
                  v.content, want_content);
        CHECK_MSG(strcmp(v.compress, want_compress) == 0, "vtab_parse(%s): compress \"%s\", want \"%s\"", sql,
                  v.compress, want_compress);
}

static void test_options(void)
{
        /* fts3 reads no options (fts3.c fts3InitVtab, isFts4 only): to it
         * content='' is a column named content, and so is compress=zip */
        content("CREATE VIRTUAL TABLE t USING fts3(a, content='')", PLAIN);
        content("CREATE VIRTUAL TABLE t USING fts3(content='', a)", PLAIN);
        content("CREATE VIRTUAL TABLE t USING FTS3(a, content=docs)", PLAIN);
        content("CREATE VIRTUAL TABLE t USING fts4(a, content='')", CONTENTLESS);
        options("CREATE VIRTUAL TABLE t USING fts3(a, content='')", "", "");
        options("CREATE VIRTUAL TABLE t USING fts3(a, compress=zip, uncompress=unzip)", "", "");

        /* the content table's name, unquoted */
        options("CREATE VIRTUAL TABLE t USING fts5(a, content=docs, content_rowid=id)", "docs", "");
        options("CREATE VIRTUAL TABLE t USING fts4(a, Content=\"my docs\")", "my docs", "");
        options("CREATE VIRTUAL TABLE t USING fts5(a, content='v')", "v", "");
        options("CREATE VIRTUAL TABLE t USING fts5(a, content=[odd \"name\"])", "odd \"name\"", "");
        options("CREATE VIRTUAL TABLE t USING fts5(a, content='')", "", "");
        options("CREATE VIRTUAL TABLE t USING fts5(a, b)", "", "");
        options("CREATE VIRTUAL TABLE t USING fts5(content, b)", "", "");

        /* FTS4's compress and uncompress, in the order written */
        options("CREATE VIRTUAL TABLE t USING fts4(a, compress=zip, uncompress=unzip)", "", "zip, unzip");
        options("CREATE VIRTUAL TABLE t USING fts4(a, uncompress = 'unzip', COMPRESS = \"zip\")", "", "unzip, zip");
        options("CREATE VIRTUAL TABLE t USING fts4(a, content=docs, compress=z)", "docs", "z");
        options("CREATE VIRTUAL TABLE t USING fts4(a, compress='')", "", "");
        options("CREATE VIRTUAL TABLE t USING fts4(compress TEXT, a)", "", "");
        /* not FTS4's: fts5 has no such option, rtree no options at all */
        options("CREATE VIRTUAL TABLE t USING fts5(a, compress=zip)", "", "");
        options("CREATE VIRTUAL TABLE t USING rtree(id, compress, b)", "", "");
}

/* ---- on real tables -------------------------------------------------------- */

static void exec(sqlite3 *db, const char *sql)
{
        char *err = NULL;

        if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) {
                fprintf(stderr, "SQL failed: %s: %s\n", sql, err);
                exit(2);
        }
}

static const struct vtab *find(const struct vtab *v, size_t n, const char *name)
{
        for (size_t i = 0; i < n; i++)
                if (strcmp(v[i].name, name) == 0)
                        return &v[i];
        return NULL;
}

static enum vtab_verdict verdict_of(sqlite3 *db, const struct vtab *v, char **why)
{
        enum vtab_verdict verdict = VTAB_VERDICT_OK;
        int rc;

        *why = NULL;
        rc = vtab_check(db, v, &verdict, why);
        CHECK_MSG(rc == SQLITE_OK, "vtab_check(%s) = %d", v->name, rc);
        return verdict;
}

static void test_list_and_check(void)
{
        struct vtab *v = NULL;
        const struct vtab *x;
        size_t n = 0;
        sqlite3 *db;
        char *why;

        if (sqlite3_open(":memory:", &db) != SQLITE_OK)
                exit(2);
        sqlite3_extended_result_codes(db, 1); /* as every connection of maint.c */
        exec(db, "CREATE TABLE docs(id INTEGER PRIMARY KEY, body TEXT);"
                 "CREATE VIRTUAL TABLE f4 USING fts4(body);"
                 "CREATE VIRTUAL TABLE \"F 5\" USING FtS5(body);"
                 "CREATE VIRTUAL TABLE ext USING fts5(body, content=docs, content_rowid=id);"
                 "CREATE VIRTUAL TABLE cl USING fts4(body, content='');"
                 "CREATE VIRTUAL TABLE voc USING fts5vocab('F 5', 'row');"
                 "CREATE VIRTUAL TABLE rt USING rtree(id, x0, x1);"
                 "CREATE VIRTUAL TABLE ri USING rtree_i32(id, x0, x1);"
                 "CREATE VIRTUAL TABLE st USING dbstat;"
                 "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200) "
                 "  INSERT INTO docs SELECT i, 'alpha beta gamma ' || i FROM n;"
                 "INSERT INTO f4(docid, body) SELECT id, body FROM docs;"
                 "INSERT INTO \"F 5\"(rowid, body) SELECT id, body FROM docs;"
                 "INSERT INTO cl(docid, body) SELECT id, body FROM docs;"
                 "INSERT INTO ext(ext) VALUES('rebuild');"
                 "INSERT INTO rt SELECT id, id, id + 1 FROM docs;"
                 "INSERT INTO ri SELECT id, id, id + 1 FROM docs;");

        CHECK(vtabs_list(db, &v, &n) == SQLITE_OK);
        CHECK_MSG(n == 8, "%zu virtual tables listed", n); /* docs and the shadow tables are real tables */
        x = find(v, n, "f4");
        CHECK(x && x->kind == VTAB_FTS3 && !x->contentless && !x->external_content);
        if (x)
                CHECK(verdict_of(db, x, &why) == VTAB_VERDICT_OK && why == NULL);
        x = find(v, n, "F 5");
        CHECK(x && x->kind == VTAB_FTS5);
        if (x)
                CHECK(verdict_of(db, x, &why) == VTAB_VERDICT_OK && why == NULL);
        x = find(v, n, "ext");
        CHECK(x && x->kind == VTAB_FTS5 && x->external_content);
        if (x)
                CHECK(verdict_of(db, x, &why) == VTAB_VERDICT_OK && why == NULL);
        x = find(v, n, "cl");
        CHECK(x && x->kind == VTAB_FTS3 && x->contentless);
        if (x) {
                CHECK(verdict_of(db, x, &why) == VTAB_VERDICT_CANNOT);
                CHECK_MSG(why && strstr(why, "contentless"), "why: %s", why ? why : "(null)");
                free(why);
        }
        x = find(v, n, "voc");
        CHECK(x && x->kind == VTAB_AUX);
        if (x)
                CHECK(verdict_of(db, x, &why) == VTAB_VERDICT_OK && why == NULL); /* nothing to check */
        x = find(v, n, "st");
        CHECK(x && x->kind == VTAB_OTHER);
        for (const char *r = "rt"; r; r = strcmp(r, "rt") == 0 ? "ri" : NULL) {
                x = find(v, n, r);
                CHECK(x && x->kind == VTAB_RTREE);
                if (x)
                        CHECK(verdict_of(db, x, &why) == VTAB_VERDICT_OK && why == NULL);
        }

        /* damaged behind the indexes' backs */
        exec(db, "UPDATE f4_content SET c0body = 'nothing like it' WHERE docid = 7;"
                 "UPDATE docs SET body = 'other words entirely' WHERE id = 9;"
                 "UPDATE rt_rowid SET nodeno = 99 WHERE rowid = 10;");
        x = find(v, n, "f4");
        if (x) {
                CHECK(verdict_of(db, x, &why) == VTAB_VERDICT_CORRUPT);
                CHECK_MSG(why && strstr(why, "SQLITE_CORRUPT_VTAB"), "why: %s", why ? why : "(null)");
                free(why);
        }
        x = find(v, n, "ext");
        if (x) {
                CHECK(verdict_of(db, x, &why) == VTAB_VERDICT_CORRUPT); /* rank 1: the content is compared */
                free(why);
        }
        x = find(v, n, "rt");
        if (x) {
                CHECK(verdict_of(db, x, &why) == VTAB_VERDICT_CORRUPT);
                CHECK_MSG(why && strstr(why, "(10 -> 99)"), "why: %s", why ? why : "(null)");
                free(why);
        }
        x = find(v, n, "F 5");
        if (x)
                CHECK(verdict_of(db, x, &why) == VTAB_VERDICT_OK && why == NULL);
        x = find(v, n, "ri");
        if (x)
                CHECK(verdict_of(db, x, &why) == VTAB_VERDICT_OK && why == NULL);
        vtabs_free(v, n);

        /* a tokenizer this SQLite does not have: cannot be checked, and not corrupt */
        exec(db, "CREATE VIRTUAL TABLE tk USING fts5(body);"
                 "INSERT INTO tk(body) VALUES('hello world');"
                 "PRAGMA writable_schema = ON;"
                 "UPDATE sqlite_schema SET sql = 'CREATE VIRTUAL TABLE tk USING fts5(body, tokenize=\"mytok\")' "
                 "  WHERE name = 'tk';"
                 "PRAGMA writable_schema = RESET;");
        CHECK(vtabs_list(db, &v, &n) == SQLITE_OK);
        x = find(v, n, "tk");
        CHECK(x && x->kind == VTAB_FTS5);
        if (x) {
                CHECK(verdict_of(db, x, &why) == VTAB_VERDICT_CANNOT);
                CHECK_MSG(why && strstr(why, "mytok"), "why: %s", why ? why : "(null)");
                free(why);
        }
        vtabs_free(v, n);

        /* a shadow table gone: corrupt, named; a content table that is a
         * view (never run) or gone: cannot check, named; FTS4 through
         * compress functions: cannot check, the functions named */
        exec(db, "CREATE VIRTUAL TABLE gone USING rtree(id, x0, x1);"
                 "INSERT INTO gone VALUES (1, 1, 2);"
                 "DROP TABLE gone_node;"
                 "CREATE VIEW docs_view AS SELECT id, body FROM docs;"
                 "CREATE VIRTUAL TABLE viewed USING fts5(body, content=docs_view, content_rowid=id);"
                 "CREATE TABLE dropped(id INTEGER PRIMARY KEY, body TEXT);"
                 "CREATE VIRTUAL TABLE orphan USING fts5(body, content=dropped, content_rowid=id);"
                 "DROP TABLE dropped;"
                 "PRAGMA writable_schema = ON;"
                 "UPDATE sqlite_schema SET sql = 'CREATE VIRTUAL TABLE f4 USING fts4(body, compress=zip, "
                 "uncompress=unzip)' WHERE name = 'f4';"
                 "PRAGMA writable_schema = RESET;");
        /* as on every connection of maint.c's (db_connect, the snapshot):
         * the views a database defines are not run */
        CHECK(sqlite3_db_config(db, SQLITE_DBCONFIG_ENABLE_VIEW, 0, NULL) == SQLITE_OK);
        CHECK(vtabs_list(db, &v, &n) == SQLITE_OK);
        static const struct {
                const char *name;
                enum vtab_verdict verdict;
                const char *why;
        } missing[] = {
                { "gone", VTAB_VERDICT_CORRUPT, "its shadow table gone_node is missing" },
                { "viewed", VTAB_VERDICT_CANNOT,
                  "its content table docs_view is a view, and sqlite-maintd does not run the views a database "
                  "file defines" },
                { "orphan", VTAB_VERDICT_CANNOT, "its content table dropped does not exist" },
                { "f4", VTAB_VERDICT_CANNOT, "the functions zip, unzip" },
        };
        for (size_t i = 0; i < sizeof(missing) / sizeof(missing[0]); i++) {
                x = find(v, n, missing[i].name);
                CHECK_MSG(x != NULL, "%s not listed", missing[i].name);
                if (!x)
                        continue;
                CHECK_MSG(verdict_of(db, x, &why) == missing[i].verdict, "%s: verdict", missing[i].name);
                CHECK_MSG(why && strstr(why, missing[i].why), "%s: why: %s", missing[i].name, why ? why : "(null)");
                free(why);
        }
        vtabs_free(v, n);
        sqlite3_close(db);
}

int main(void)
{
        test_modules();
        test_spellings();
        test_rejected();
        test_content();
        test_options();
        test_list_and_check();
        return test_summary();
}
