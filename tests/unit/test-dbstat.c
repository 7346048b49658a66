/* SPDX-License-Identifier: MIT */
/* dbstat: fragmentation arithmetic, header parsing, and both read paths
 * against SQLite's own PRAGMA figures on real files in both journal modes. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "dbstat.h"
#include "check.h"

static char dir[] = "/tmp/test-dbstat-XXXXXX";

static int64_t pragma(sqlite3 *db, const char *sql)
{
        sqlite3_stmt *s;
        int64_t v = -1;

        if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) != SQLITE_OK)
                return -1;
        if (sqlite3_step(s) == SQLITE_ROW)
                v = sqlite3_column_int64(s, 0);
        sqlite3_finalize(s);
        return v;
}

static void exec(sqlite3 *db, const char *sql)
{
        char *err = NULL;

        if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) {
                fprintf(stderr, "SQL failed: %s: %s\n", sql, err);
                exit(2);
        }
}

/* A database with a real freelist: 600 rows of 3000 bytes, every other deleted. */
static sqlite3 *make_fragmented(const char *path, const char *journal_mode)
{
        sqlite3 *db;
        char sql[128];

        unlink(path);
        if (sqlite3_open(path, &db) != SQLITE_OK)
                exit(2);
        snprintf(sql, sizeof(sql), "PRAGMA journal_mode=%s", journal_mode);
        exec(db, sql);
        exec(db, "CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB);"
                 "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 600)"
                 " INSERT INTO t SELECT i, randomblob(3000) FROM n;"
                 "DELETE FROM t WHERE id % 2 = 0;");
        return db;
}

static void check_against_pragma(sqlite3 *db, const struct dbstat *st, const char *what)
{
        int64_t pc = pragma(db, "PRAGMA page_count"), fl = pragma(db, "PRAGMA freelist_count");

        CHECK_MSG(st->page_count == (uint64_t)pc, "%s: page_count %llu != %lld", what,
                  (unsigned long long)st->page_count, (long long)pc);
        CHECK_MSG(st->freelist_count == (uint64_t)fl, "%s: freelist %llu != %lld", what,
                  (unsigned long long)st->freelist_count, (long long)fl);
        CHECK(st->page_size == (uint32_t)pragma(db, "PRAGMA page_size"));
        CHECK(st->estimated_wasted_space_bytes == (uint64_t)fl * st->page_size);
        CHECK(st->fragmentation_percent == dbstat_fragmentation((uint64_t)fl, (uint64_t)pc));
}

static void test_arithmetic(void)
{
        CHECK(dbstat_fragmentation(0, 0) == 0.0);
        CHECK(dbstat_fragmentation(5, 0) == 0.0);
        CHECK(dbstat_fragmentation(0, 100) == 0.0);
        CHECK(dbstat_fragmentation(1, 3) == 33.33);
        CHECK(dbstat_fragmentation(2, 3) == 66.67);
        CHECK(dbstat_fragmentation(1, 8) == 12.5);
        CHECK(dbstat_fragmentation(20, 100) == 20.0);
        CHECK(dbstat_fragmentation(3, 10) == 30.0);
        CHECK(dbstat_fragmentation(100, 100) == 100.0);
        CHECK(dbstat_fragmentation(200, 100) == 100.0); /* a lying header cannot exceed 100% */
        CHECK(dbstat_fragmentation(1, 4294967295u) == 0.0);
        CHECK_STREQ(dbstat_auto_vacuum_name(AUTO_VACUUM_NONE), "none");
        CHECK_STREQ(dbstat_auto_vacuum_name(AUTO_VACUUM_INCREMENTAL), "incremental");
}

static void put32(unsigned char *p, uint32_t v)
{
        p[0] = (unsigned char)(v >> 24);
        p[1] = (unsigned char)(v >> 16);
        p[2] = (unsigned char)(v >> 8);
        p[3] = (unsigned char)v;
}

static void test_parse_header(void)
{
        unsigned char h[DBSTAT_HEADER_SIZE] = "SQLite format 3";
        struct dbheader hd;

        h[16] = 0x10; h[17] = 0x00; /* 4096 */
        h[18] = h[19] = 2;
        put32(h + 24, 7);
        put32(h + 28, 42);
        put32(h + 36, 9);
        put32(h + 52, 3);
        put32(h + 64, 1);
        put32(h + 92, 7);
        CHECK(dbstat_parse_header(h, &hd) == 0);
        CHECK(hd.page_size == 4096 && hd.wal && hd.page_count == 42 && hd.freelist_count == 9);
        CHECK(hd.change_counter == hd.version_valid_for && hd.largest_root == 3 && hd.incremental == 1);

        h[16] = 0; h[17] = 1; /* 1 means 65536 */
        CHECK(dbstat_parse_header(h, &hd) == 0 && hd.page_size == 65536);
        h[16] = 0x03; h[17] = 0x00; /* 768: not a power of two */
        CHECK(dbstat_parse_header(h, &hd) == -EINVAL);
        h[16] = 0x01; h[17] = 0x00; /* 256: too small */
        CHECK(dbstat_parse_header(h, &hd) == -EINVAL);
        h[16] = 0x10;
        h[0] = 's';
        CHECK(dbstat_parse_header(h, &hd) == -EINVAL);
}

static void test_rollback(void)
{
        char path[256];
        struct dbstat st;
        sqlite3 *db, *check;

        snprintf(path, sizeof(path), "%s/rollback.db", dir);
        db = make_fragmented(path, "delete");
        sqlite3_close(db);
        sqlite3_open(path, &check);

        CHECK(dbstat_read_header(path, &st) == 0);
        CHECK(st.from_header);
        CHECK(st.freelist_count > 100); /* the fixture really is fragmented */
        CHECK_STREQ(st.journal_mode, "delete");
        CHECK(st.auto_vacuum == AUTO_VACUUM_NONE);
        check_against_pragma(check, &st, "rollback header");

        CHECK(dbstat_read_db(check, path, &st) == SQLITE_OK);
        CHECK(!st.from_header);
        CHECK_STREQ(st.journal_mode, "delete");
        check_against_pragma(check, &st, "rollback precise");

        /* A live rollback journal means a writer is mid-transaction. */
        exec(check, "BEGIN IMMEDIATE; DELETE FROM t WHERE id % 3 = 0;");
        CHECK(dbstat_read_header(path, &st) == -EAGAIN);
        exec(check, "COMMIT");
        CHECK(dbstat_read_header(path, &st) == 0);
        check_against_pragma(check, &st, "rollback after commit");
        sqlite3_close(check);
}

static void test_wal(void)
{
        char path[256];
        struct dbstat st;
        sqlite3 *db;

        snprintf(path, sizeof(path), "%s/wal.db", dir);
        db = make_fragmented(path, "wal");
        exec(db, "PRAGMA wal_autocheckpoint=0; DELETE FROM t WHERE id % 3 = 1;");

        /* The deletes sit in the -wal: the main file's header is stale. */
        CHECK(dbstat_read_header(path, &st) == -EAGAIN);
        CHECK(dbstat_read_db(db, path, &st) == SQLITE_OK);
        CHECK_STREQ(st.journal_mode, "wal");
        CHECK(st.wal_size_bytes > 0);
        check_against_pragma(db, &st, "wal precise");

        /* After a truncating checkpoint the header is exact again. */
        exec(db, "PRAGMA wal_checkpoint(TRUNCATE)");
        CHECK(dbstat_read_header(path, &st) == 0);
        CHECK_STREQ(st.journal_mode, "wal");
        CHECK(st.wal_size_bytes == 0);
        check_against_pragma(db, &st, "wal header after checkpoint");
        sqlite3_close(db);
}

static void test_auto_vacuum(void)
{
        char path[256];
        struct dbstat st;
        sqlite3 *db;

        snprintf(path, sizeof(path), "%s/incr.db", dir);
        unlink(path);
        sqlite3_open(path, &db);
        exec(db, "PRAGMA auto_vacuum=INCREMENTAL; CREATE TABLE t(x); INSERT INTO t VALUES(randomblob(20000));");
        sqlite3_close(db);
        CHECK(dbstat_read_header(path, &st) == 0);
        CHECK(st.auto_vacuum == AUTO_VACUUM_INCREMENTAL);

        snprintf(path, sizeof(path), "%s/full.db", dir);
        unlink(path);
        sqlite3_open(path, &db);
        exec(db, "PRAGMA auto_vacuum=FULL; CREATE TABLE t(x);");
        CHECK(dbstat_read_db(db, path, &st) == SQLITE_OK && st.auto_vacuum == AUTO_VACUUM_FULL);
        sqlite3_close(db);
        CHECK(dbstat_read_header(path, &st) == 0 && st.auto_vacuum == AUTO_VACUUM_FULL);
}

static void test_bad_files(void)
{
        char path[256];
        struct dbstat st;
        FILE *f;

        snprintf(path, sizeof(path), "%s/missing.db", dir);
        CHECK(dbstat_read_header(path, &st) == -ENOENT);

        snprintf(path, sizeof(path), "%s/text.db", dir);
        f = fopen(path, "w");
        for (int i = 0; i < 20; i++)
                fputs("this is not a database at all\n", f);
        fclose(f);
        CHECK(dbstat_read_header(path, &st) == -EINVAL);

        snprintf(path, sizeof(path), "%s/empty.db", dir);
        fclose(fopen(path, "w"));
        CHECK(dbstat_read_header(path, &st) == 0);
        CHECK(st.page_count == 0 && st.fragmentation_percent == 0.0);

        CHECK(dbstat_read_header(dir, &st) == -EISDIR);

        snprintf(path, sizeof(path), "%s/link.db", dir);
        CHECK(symlink("empty.db", path) == 0);
        CHECK(dbstat_read_header(path, &st) == -ELOOP);
}

int main(void)
{
        if (!mkdtemp(dir))
                return 2;
        test_arithmetic();
        test_parse_header();
        test_rollback();
        test_wal();
        test_auto_vacuum();
        test_bad_files();
        {
                char cmd[300];

                snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
                if (system(cmd) != 0)
                        fprintf(stderr, "could not remove %s\n", dir);
        }
        return test_summary();
}
