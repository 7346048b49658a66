/* SPDX-License-Identifier: MIT */
/* walread_scan() and dbstat_read_wal() against SQLite's own recovery.
 *
 * Each case makes a real WAL database with SQLite and copies it, while its
 * connection is open, with its -wal and without its -shm (what a copy, a
 * backup or a crash leaves). The copy is read without SQLite first, then
 * opened with SQLite, whose recovery rebuilds the wal-index from the same
 * -wal: PRAGMA page_count, freelist_count, schema_version, auto_vacuum and
 * the frame count wal_checkpoint reports (mxFrame) must agree with ours.
 * Damaged and crafted -wal files are written here by hand, their checksums
 * computed as fileformat2.html ("The Write-Ahead Log") describes them. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sqlite3.h>

#include "dbstat.h"
#include "check.h"
#include "walread.h"

#define WAL_HDR 32
#define FRAME_HDR 24
#define PATH_LEN 512

static char dir[] = "/tmp/test-walread-XXXXXX";

/* ---- files -------------------------------------------------------------- */

struct buf {
        unsigned char *p;
        size_t len;
};

static void path_of(char *out, const char *name, const char *suffix)
{
        snprintf(out, PATH_LEN, "%s/%s.db%s", dir, name, suffix);
}

/* The whole file; p == NULL when it does not exist. */
static struct buf slurp(const char *path)
{
        struct buf b = { NULL, 0 };
        struct stat st;
        int fd = open(path, O_RDONLY | O_CLOEXEC);

        if (fd < 0)
                return b;
        if (fstat(fd, &st) < 0 || !(b.p = malloc((size_t)st.st_size + 1)) ||
            read(fd, b.p, (size_t)st.st_size) != st.st_size) {
                fprintf(stderr, "cannot read %s\n", path);
                exit(2);
        }
        b.len = (size_t)st.st_size;
        close(fd);
        return b;
}

static void spit(const char *path, const unsigned char *p, size_t len)
{
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

        if (fd < 0 || (len && write(fd, p, len) != (ssize_t)len) || close(fd) < 0) {
                fprintf(stderr, "cannot write %s\n", path);
                exit(2);
        }
}

static bool exists(const char *path)
{
        return access(path, F_OK) == 0;
}

static void remove_db(const char *name)
{
        char p[PATH_LEN];

        path_of(p, name, "");
        unlink(p);
        path_of(p, name, "-wal");
        unlink(p);
        path_of(p, name, "-shm");
        unlink(p);
}

/* Copy from.db and from.db-wal to to.db and to.db-wal, without the -shm.
 * In a child process: an open()+close() of a file this process has open
 * through SQLite would drop the connection's POSIX locks (SQLITE-NOTES). */
static void snapshot(const char *from, const char *to)
{
        static const char *const suffixes[] = { "", "-wal" };
        int status = 0;
        pid_t pid;

        remove_db(to);
        pid = fork();
        if (pid < 0)
                exit(2);
        if (pid == 0) {
                for (size_t i = 0; i < 2; i++) {
                        char a[PATH_LEN], b[PATH_LEN];
                        struct buf f;

                        path_of(a, from, suffixes[i]);
                        path_of(b, to, suffixes[i]);
                        f = slurp(a);
                        if (f.p)
                                spit(b, f.p, f.len);
                        free(f.p);
                }
                _exit(0);
        }
        if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
                fprintf(stderr, "snapshot %s -> %s failed\n", from, to);
                exit(2);
        }
}

static struct buf load(const char *name, const char *suffix)
{
        char p[PATH_LEN];

        path_of(p, name, suffix);
        return slurp(p);
}

static void store(const char *name, const char *suffix, const struct buf *b)
{
        char p[PATH_LEN];

        path_of(p, name, suffix);
        spit(p, b->p, b->len);
}

/* ---- SQLite --------------------------------------------------------------- */

static void exec(sqlite3 *db, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void exec(sqlite3 *db, const char *fmt, ...)
{
        char sql[512], *err = NULL;
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(sql, sizeof(sql), fmt, ap);
        va_end(ap);
        if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) {
                fprintf(stderr, "SQL failed: %s: %s\n", sql, err);
                exit(2);
        }
}

static int64_t query_int(sqlite3 *db, const char *sql, int column)
{
        sqlite3_stmt *s;
        int64_t v = -1;

        if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) != SQLITE_OK)
                return -1;
        if (sqlite3_step(s) == SQLITE_ROW)
                v = sqlite3_column_int64(s, column);
        sqlite3_finalize(s);
        return v;
}

/* A WAL database name.db that never checkpoints by itself, with a table
 * t(id INTEGER PRIMARY KEY, b BLOB). */
static sqlite3 *open_wal_db(const char *name, int page_size, const char *auto_vacuum)
{
        char path[PATH_LEN];
        sqlite3 *db;

        remove_db(name);
        path_of(path, name, "");
        if (sqlite3_open(path, &db) != SQLITE_OK)
                exit(2);
        exec(db, "PRAGMA page_size=%d; PRAGMA auto_vacuum=%s", page_size, auto_vacuum);
        exec(db, "PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0");
        exec(db, "CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB)");
        CHECK(query_int(db, "SELECT journal_mode = 'wal' FROM pragma_journal_mode()", 0) == 1);
        return db;
}

/* Rows first..last of size bytes each, in one transaction. */
static void fill(sqlite3 *db, int first, int last, int size)
{
        exec(db,
             "WITH RECURSIVE n(i) AS (SELECT %d UNION ALL SELECT i+1 FROM n WHERE i < %d)"
             " INSERT INTO t SELECT i, randomblob(%d) FROM n",
             first, last, size);
}

/* PRAGMA wal_checkpoint(mode): busy, log, checkpointed. */
static void checkpoint(sqlite3 *db, const char *mode, int64_t out[3])
{
        char sql[64];

        snprintf(sql, sizeof(sql), "PRAGMA wal_checkpoint(%s)", mode);
        for (int i = 0; i < 3; i++)
                out[i] = query_int(db, sql, i);
}

/* A 4 KiB-page database whose main file holds 200 rows (a truncating
 * checkpoint), and whose -wal then holds six more transactions: deletes
 * that grow the freelist, inserts, an index (the schema cookie moves).
 * Over 64 frames, so a scan crosses walread's read-buffer boundary. */
static sqlite3 *make_base(const char *name)
{
        sqlite3 *db = open_wal_db(name, 4096, "NONE");
        int64_t ck[3];

        fill(db, 1, 200, 1500);
        checkpoint(db, "TRUNCATE", ck);
        CHECK(ck[0] == 0);
        exec(db, "DELETE FROM t WHERE id %% 20 < 8");
        fill(db, 1001, 1100, 1500);
        exec(db, "DELETE FROM t WHERE id %% 20 > 15");
        exec(db, "CREATE INDEX t_b ON t(substr(b, 1, 8))");
        fill(db, 2001, 2080, 1500);
        exec(db, "DELETE FROM t WHERE id > 2040");
        return db;
}

/* ---- what SQLite's recovery makes of a copy ------------------------------- */

struct truth {
        int rc; /* of opening and reading the copy */
        int64_t page_count, freelist_count, schema_version, auto_vacuum, page_size;
        int64_t frames; /* wal_checkpoint's log column: the recovered mxFrame */
};

/* Opens name.db with SQLite: recovery runs (there is no -shm), and closing
 * checkpoints and deletes the -wal, so our reads come first. */
static struct truth sqlite_truth(const char *name)
{
        struct truth t = { .rc = SQLITE_OK };
        char path[PATH_LEN];
        sqlite3_stmt *s = NULL;
        sqlite3 *db = NULL;

        path_of(path, name, "");
        t.rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL);
        if (t.rc == SQLITE_OK)
                t.rc = sqlite3_prepare_v2(db,
                                          "SELECT * FROM pragma_page_count(), pragma_freelist_count(),"
                                          " pragma_schema_version(), pragma_auto_vacuum(), pragma_page_size()",
                                          -1, &s, NULL);
        if (t.rc == SQLITE_OK) {
                t.rc = sqlite3_step(s);
                if (t.rc == SQLITE_ROW) {
                        t.rc = SQLITE_OK;
                        t.page_count = sqlite3_column_int64(s, 0);
                        t.freelist_count = sqlite3_column_int64(s, 1);
                        t.schema_version = sqlite3_column_int64(s, 2);
                        t.auto_vacuum = sqlite3_column_int64(s, 3);
                        t.page_size = sqlite3_column_int64(s, 4);
                }
        }
        sqlite3_finalize(s);
        if (t.rc == SQLITE_OK)
                t.frames = query_int(db, "PRAGMA wal_checkpoint(PASSIVE)", 1);
        sqlite3_close(db);
        return t;
}

/* ---- our reads -------------------------------------------------------------- */

static uint32_t get32(const unsigned char *p)
{
        return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put32(unsigned char *p, uint32_t v)
{
        p[0] = (unsigned char)(v >> 24);
        p[1] = (unsigned char)(v >> 16);
        p[2] = (unsigned char)(v >> 8);
        p[3] = (unsigned char)v;
}

static uint32_t main_page_size(const char *name)
{
        struct buf m = load(name, "");
        uint32_t ps = m.len >= 100 ? ((uint32_t)m.p[16] << 8 | m.p[17]) : 0;

        free(m.p);
        return ps == 1 ? 65536 : ps;
}

/* walread_scan() of name.db-wal with page size ps. */
static int scan(const char *name, uint32_t ps, struct walread *w)
{
        char p[PATH_LEN];
        int fd, r;

        path_of(p, name, "-wal");
        fd = open(p, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        memset(w, 0xa5, sizeof(*w)); /* everything must be written */
        r = walread_scan(fd, ps, w);
        close(fd);
        return r;
}

static int read_wal(const char *name, struct dbstat *st)
{
        char p[PATH_LEN];

        path_of(p, name, "");
        memset(st, 0xa5, sizeof(*st));
        return dbstat_read_wal(p, st);
}

/* Both reads of the copy name, then SQLite's: every figure must agree.
 * Returns SQLite's view; *ret_w gets walread's. */
static struct truth check_case(const char *what, const char *name, struct walread *ret_w)
{
        struct buf db0 = load(name, ""), wal0 = load(name, "-wal"), db1, wal1;
        char shm[PATH_LEN];
        struct walread w;
        struct dbstat st;
        struct truth t;
        int rs, rd;

        rs = scan(name, main_page_size(name), &w);
        rd = read_wal(name, &st);

        /* Reads never write: the files are as they were, no -shm appeared. */
        db1 = load(name, "");
        wal1 = load(name, "-wal");
        path_of(shm, name, "-shm");
        CHECK_MSG(db0.len == db1.len && memcmp(db0.p, db1.p, db0.len) == 0, "%s: main file changed", what);
        CHECK_MSG(wal0.len == wal1.len && (!wal0.len || memcmp(wal0.p, wal1.p, wal0.len) == 0),
                  "%s: -wal changed", what);
        CHECK_MSG(!exists(shm), "%s: a -shm appeared", what);

        t = sqlite_truth(name);
        CHECK_MSG(t.rc == SQLITE_OK, "%s: SQLite cannot read the copy: %s", what, sqlite3_errstr(t.rc));
        CHECK_MSG(rs == 0, "%s: walread_scan() = %d", what, rs);
        CHECK_MSG(rd == 0, "%s: dbstat_read_wal() = %d", what, rd);
        if (rs == 0) {
                CHECK_MSG(w.page_size == t.page_size, "%s: walread page_size %u", what, w.page_size);
                CHECK_MSG(w.frames == t.frames, "%s: walread frames %u, SQLite's recovery %lld", what, w.frames,
                          (long long)t.frames);
                CHECK_MSG(w.frames == 0 || w.page_count == t.page_count,
                          "%s: walread page_count %u, SQLite %lld", what, w.page_count, (long long)t.page_count);
                CHECK_MSG(w.frames > 0 || w.page_count == 0, "%s: a page count without a commit", what);
                CHECK_MSG(w.frames > 0 || !w.page1_in_wal, "%s: page 1 without a commit", what);
        }
        if (rd == 0) {
                CHECK_MSG(st.page_count == (uint64_t)t.page_count, "%s: page_count %llu, SQLite %lld", what,
                          (unsigned long long)st.page_count, (long long)t.page_count);
                CHECK_MSG(st.freelist_count == (uint64_t)t.freelist_count, "%s: freelist_count %llu, SQLite %lld",
                          what, (unsigned long long)st.freelist_count, (long long)t.freelist_count);
                CHECK_MSG(st.schema_cookie == (uint64_t)t.schema_version, "%s: schema_cookie %u, SQLite %lld", what,
                          st.schema_cookie, (long long)t.schema_version);
                CHECK_MSG((int64_t)st.auto_vacuum == t.auto_vacuum, "%s: auto_vacuum %d, SQLite %lld", what,
                          (int)st.auto_vacuum, (long long)t.auto_vacuum);
                CHECK_MSG(st.page_size == t.page_size, "%s: page_size %u", what, st.page_size);
                CHECK_MSG(strcmp(st.journal_mode, "wal") == 0, "%s: journal_mode %.12s", what, st.journal_mode);
                CHECK_MSG(st.file_size_bytes == db0.len, "%s: file_size_bytes", what);
                CHECK_MSG(st.wal_size_bytes == wal0.len, "%s: wal_size_bytes", what);
                CHECK_MSG(!st.from_header, "%s: from_header", what);
                CHECK_MSG(st.estimated_wasted_space_bytes == st.freelist_count * st.page_size, "%s: wasted", what);
                CHECK_MSG(st.fragmentation_percent == dbstat_fragmentation(st.freelist_count, st.page_count),
                          "%s: fragmentation_percent", what);
        }
        free(db0.p);
        free(wal0.p);
        free(db1.p);
        free(wal1.p);
        if (ret_w)
                *ret_w = w;
        return t;
}

/* ---- the -wal format, written independently of walread.c ------------------ */

static size_t frame_off(uint32_t i, uint32_t ps) /* frame i, 1-based */
{
        return WAL_HDR + (size_t)(i - 1) * (FRAME_HDR + ps);
}

static uint32_t frames_in(const struct buf *w, uint32_t ps)
{
        return w->len < WAL_HDR ? 0 : (uint32_t)((w->len - WAL_HDR) / (FRAME_HDR + ps));
}

/* fileformat2.html: over 32-bit words in the byte order the magic names,
 * s0 += x[i] + s1; s1 += x[i+1] + s0, continuing from s. */
static void cksum(bool big_endian, const unsigned char *p, size_t n, uint32_t s[2])
{
        for (size_t i = 0; i < n; i += 8) {
                uint32_t x[2];

                for (int k = 0; k < 2; k++) {
                        const unsigned char *q = p + i + 4 * k;

                        x[k] = big_endian ? get32(q)
                                          : (uint32_t)q[3] << 24 | (uint32_t)q[2] << 16 | (uint32_t)q[1] << 8 | q[0];
                }
                s[0] += x[0] + s[1];
                s[1] += x[1] + s[0];
        }
}

static bool wal_big_endian(const struct buf *w)
{
        return get32(w->p) & 1;
}

/* Give the header the magic of big_endian and a checksum of its own, and
 * frames 1..n checksums that continue from it. */
static void reseal(struct buf *w, uint32_t ps, bool big_endian, uint32_t n)
{
        uint32_t s[2] = { 0, 0 };

        put32(w->p, 0x377f0682u | (big_endian ? 1u : 0u));
        cksum(big_endian, w->p, 24, s);
        put32(w->p + 24, s[0]);
        put32(w->p + 28, s[1]);
        for (uint32_t i = 1; i <= n; i++) {
                unsigned char *f = w->p + frame_off(i, ps);

                cksum(big_endian, f, 8, s);
                cksum(big_endian, f + FRAME_HDR, ps, s);
                put32(f + 16, s[0]);
                put32(f + 20, s[1]);
        }
}

/* Only the header's checksum, over what the header now says. */
static void reseal_header(struct buf *w)
{
        uint32_t s[2] = { 0, 0 };

        cksum(wal_big_endian(w), w->p, 24, s);
        put32(w->p + 24, s[0]);
        put32(w->p + 28, s[1]);
}

/* Append a frame with the header's salts and a checksum continuing the
 * chain of the last frame in the file. */
static void append_frame(struct buf *w, uint32_t ps, uint32_t pgno, uint32_t commit, const unsigned char *page)
{
        uint32_t n = frames_in(w, ps);
        const unsigned char *prev = n ? w->p + frame_off(n, ps) + 16 : w->p + 24;
        uint32_t s[2] = { get32(prev), get32(prev + 4) };
        unsigned char *f;

        w->len = frame_off(n + 1, ps) + FRAME_HDR + ps;
        w->p = realloc(w->p, w->len);
        if (!w->p)
                exit(2);
        f = w->p + frame_off(n + 1, ps);
        put32(f, pgno);
        put32(f + 4, commit);
        memcpy(f + 8, w->p + 16, 8);
        memcpy(f + FRAME_HDR, page, ps);
        cksum(wal_big_endian(w), f, 8, s);
        cksum(wal_big_endian(w), f + FRAME_HDR, ps, s);
        put32(f + 16, s[0]);
        put32(f + 20, s[1]);
}

/* The last frame of 1..n with a commit size: where the log ends when frame
 * n+1 is bad (frames 1..n being good). */
static uint32_t last_commit_upto(const struct buf *w, uint32_t ps, uint32_t n)
{
        uint32_t last = 0;

        for (uint32_t i = 1; i <= n; i++)
                if (get32(w->p + frame_off(i, ps) + 4) != 0)
                        last = i;
        return last;
}

/* The commit size of frame i. */
static uint32_t commit_of(const struct buf *w, uint32_t ps, uint32_t i)
{
        return get32(w->p + frame_off(i, ps) + 4);
}

/* The newest image of page pgno in frames 1..n, else the main file's. */
static unsigned char *page_image(const struct buf *w, const struct buf *m, uint32_t ps, uint32_t n, uint32_t pgno)
{
        unsigned char *out = malloc(ps);

        if (!out)
                exit(2);
        memcpy(out, m->p + (size_t)(pgno - 1) * ps, ps);
        for (uint32_t i = 1; i <= n; i++)
                if (get32(w->p + frame_off(i, ps)) == pgno)
                        memcpy(out, w->p + frame_off(i, ps) + FRAME_HDR, ps);
        return out;
}

/* ---- the cases ----------------------------------------------------------- */

static void test_inserts_and_deletes(void)
{
        sqlite3 *db = open_wal_db("grow", 4096, "NONE");
        struct buf m;
        struct walread w;
        struct truth t;

        fill(db, 1, 300, 1500);
        fill(db, 301, 400, 1500);
        /* (SQLite's look at a copy checkpoints it: the main file is
         * looked at first.) */
        snapshot("grow", "grow-ins");
        m = load("grow-ins", "");
        t = check_case("after inserts", "grow-ins", &w);
        CHECK(w.frames > 0 && w.page1_in_wal);
        CHECK(t.page_count > 100 && t.freelist_count == 0);
        /* The main file still has the size of before the inserts. */
        CHECK(m.len / 4096 < (uint64_t)t.page_count);
        free(m.p);

        exec(db, "DELETE FROM t WHERE id %% 20 < 10");
        snapshot("grow", "grow-del");
        m = load("grow-del", "");
        t = check_case("after deletes", "grow-del", &w);
        CHECK(t.freelist_count > 50);
        /* Page 1 changed only in the -wal: the main file says no freelist. */
        CHECK(m.len >= 100 && get32(m.p + 36) == 0);
        free(m.p);

        exec(db, "CREATE TABLE u(x); CREATE INDEX t_b ON t(b)");
        snapshot("grow", "grow-schema");
        m = load("grow-schema", "");
        t = check_case("after a schema change", "grow-schema", &w);
        CHECK(t.schema_version >= 3 && get32(m.p + 40) < (uint32_t)t.schema_version);
        free(m.p);
        sqlite3_close(db);
}

static void test_checkpoints(void)
{
        sqlite3 *db = open_wal_db("ckpt", 4096, "NONE");
        uint32_t salt1, salt2, n;
        int64_t ck[3];
        struct walread w;
        struct truth t;
        struct buf wal;

        fill(db, 1, 300, 1500);
        exec(db, "DELETE FROM t WHERE id %% 20 < 10");

        /* PASSIVE, nobody reading: every frame copied back, all still there. */
        checkpoint(db, "PASSIVE", ck);
        CHECK(ck[0] == 0 && ck[1] > 0 && ck[1] == ck[2]);
        snapshot("ckpt", "ckpt-passive");
        wal = load("ckpt-passive", "-wal");
        t = check_case("after a PASSIVE checkpoint", "ckpt-passive", &w);
        CHECK(w.frames == ck[1] && t.frames == ck[1]);
        CHECK(frames_in(&wal, 4096) == ck[1]);
        salt1 = get32(wal.p + 16);
        salt2 = get32(wal.p + 20);
        free(wal.p);

        /* The next writer restarts the log: new salts, a few new frames over
         * the first old ones, the old frames beyond them still in the file. */
        exec(db, "UPDATE t SET b = zeroblob(1500) WHERE id = 15");
        snapshot("ckpt", "ckpt-restart");
        wal = load("ckpt-restart", "-wal");
        CHECK(get32(wal.p + 16) == salt1 + 1 && get32(wal.p + 20) != salt2);
        t = check_case("after the log restarted", "ckpt-restart", &w);
        n = frames_in(&wal, 4096);
        CHECK(w.frames > 0 && w.frames < 5 && n == ck[1]);
        if (w.frames < n) /* the next frame is an old one */
                CHECK(get32(wal.p + frame_off(w.frames + 1, 4096) + 8) == salt1);
        free(wal.p);

        /* TRUNCATE: an empty -wal, the main file is the database. */
        checkpoint(db, "TRUNCATE", ck);
        CHECK(ck[0] == 0 && ck[1] == 0);
        snapshot("ckpt", "ckpt-truncate");
        wal = load("ckpt-truncate", "-wal");
        CHECK(wal.p && wal.len == 0);
        free(wal.p);
        t = check_case("after a TRUNCATE checkpoint", "ckpt-truncate", &w);
        CHECK(w.frames == 0 && t.freelist_count > 50);

        /* A commit that does not write page 1 (a cell rewritten in place):
         * the main file's page 1 is still the newest. */
        exec(db, "UPDATE t SET b = zeroblob(1500) WHERE id = 13");
        snapshot("ckpt", "ckpt-nopage1");
        t = check_case("a commit without page 1", "ckpt-nopage1", &w);
        CHECK(w.frames >= 1 && !w.page1_in_wal);
        sqlite3_close(db);
}

static void test_spilled_tail(void)
{
        sqlite3 *db = open_wal_db("spill", 4096, "NONE");
        struct walread w;
        struct buf wal;

        fill(db, 1, 50, 1500);
        /* A write transaction larger than the page cache spills pages into
         * the -wal as frames without a commit size. */
        exec(db, "PRAGMA cache_size=10; BEGIN");
        fill(db, 51, 400, 3000);
        snapshot("spill", "spill-open");
        wal = load("spill-open", "-wal");
        check_case("an open transaction's spilled frames", "spill-open", &w);
        CHECK(frames_in(&wal, 4096) > w.frames + 100);
        CHECK(w.frames > 0 && last_commit_upto(&wal, 4096, frames_in(&wal, 4096)) == w.frames);
        free(wal.p);
        exec(db, "ROLLBACK");
        sqlite3_close(db);
}

static void test_appended_tail(void)
{
        sqlite3 *db = make_base("tail");
        uint32_t n, commit, cookie;
        unsigned char *p1;
        struct buf wal, m;
        struct walread w;
        struct truth t;

        snapshot("tail", "tail-x");
        wal = load("tail-x", "-wal");
        m = load("tail-x", "");
        n = frames_in(&wal, 4096);
        commit = commit_of(&wal, 4096, n);
        CHECK(n > 64 && commit > 0);

        /* A valid-looking frame without a commit size: page 1 with another
         * schema cookie. Not part of the database yet. */
        p1 = page_image(&wal, &m, 4096, n, 1);
        cookie = get32(p1 + 40);
        put32(p1 + 40, cookie + 5);
        append_frame(&wal, 4096, 1, 0, p1);
        store("tail-x", "-wal", &wal);
        t = check_case("an uncommitted frame appended", "tail-x", &w);
        CHECK(w.frames == n && t.schema_version == cookie);

        /* The same frame again, now with the commit size: both count. This
         * also shows the crafted frames are sealed as SQLite seals them. */
        snapshot("tail", "tail-x");
        append_frame(&wal, 4096, 1, commit, p1);
        store("tail-x", "-wal", &wal);
        t = check_case("a commit frame appended", "tail-x", &w);
        CHECK(w.frames == n + 2 && w.page1_in_wal && t.schema_version == cookie + 5);
        free(p1);
        free(wal.p);
        free(m.p);
        sqlite3_close(db);
}

static void test_torn_frame(void)
{
        sqlite3 *db = make_base("torn");
        struct buf wal;
        struct walread w;
        uint32_t n, expect;

        snapshot("torn", "torn-x");
        wal = load("torn-x", "-wal");
        n = frames_in(&wal, 4096);
        expect = last_commit_upto(&wal, 4096, n - 1);
        CHECK(commit_of(&wal, 4096, n) != 0 && expect > 0 && expect < n);

        /* The last frame cut in its page data, then in its header. */
        wal.len = frame_off(n, 4096) + FRAME_HDR + 2048;
        store("torn-x", "-wal", &wal);
        check_case("a torn last frame", "torn-x", &w);
        CHECK(w.frames == expect);

        snapshot("torn", "torn-x");
        wal.len = frame_off(n, 4096) + 10;
        store("torn-x", "-wal", &wal);
        check_case("a torn last frame header", "torn-x", &w);
        CHECK(w.frames == expect);

        /* The file ending exactly after a commit frame is whole. */
        snapshot("torn", "torn-x");
        wal.len = frame_off(expect + 1, 4096);
        store("torn-x", "-wal", &wal);
        check_case("cut just after a commit", "torn-x", &w);
        CHECK(w.frames == expect);
        free(wal.p);
        sqlite3_close(db);
}

/* Damage frame k of a fresh copy of base at byte offset off within the
 * frame: the log must end at the last commit before k. */
static void damage_frame(const char *base, uint32_t k, size_t off, const char *what)
{
        struct buf wal;
        struct walread w;
        uint32_t n, expect;
        char label[128];

        snapshot(base, "dmg");
        wal = load("dmg", "-wal");
        n = frames_in(&wal, 4096);
        CHECK(k < n);
        expect = last_commit_upto(&wal, 4096, k - 1);
        wal.p[frame_off(k, 4096) + off] ^= 0x01;
        store("dmg", "-wal", &wal);
        snprintf(label, sizeof(label), "%s in frame %u of %u", what, k, n);
        check_case(label, "dmg", &w);
        CHECK_MSG(w.frames == expect, "%s: frames %u, expected %u", label, w.frames, expect);
        CHECK_MSG(last_commit_upto(&wal, 4096, n) > k, "%s: no commit after the damage", label);
        free(wal.p);
}

static void test_bad_frames(void)
{
        sqlite3 *db = make_base("bad");
        struct buf wal;
        uint32_t n;

        snapshot("bad", "bad-x");
        wal = load("bad-x", "-wal");
        n = frames_in(&wal, 4096);
        free(wal.p);
        CHECK(n > 70);
        /* Either side of walread's 64-frame reads, and the middle. */
        for (uint32_t k = 2; k < n - 2; k += (k < 63 ? 61 : k < 66 ? 1 : n / 2)) {
                damage_frame("bad", k, FRAME_HDR + 1000, "a bad checksum (page data)");
                damage_frame("bad", k, 16, "a bad checksum (stored)");
                damage_frame("bad", k, 4, "a changed commit size");
                damage_frame("bad", k, 8, "a wrong salt-1");
                damage_frame("bad", k, 15, "a wrong salt-2");
        }
        sqlite3_close(db);
}

/* A header that SQLite's recovery ignores: no frame counts, the main file
 * is the database. */
static void bad_header(const char *what, void (*spoil)(struct buf *))
{
        struct buf wal, m;
        struct walread w;
        struct truth t;

        snapshot("hdr", "hdr-x");
        wal = load("hdr-x", "-wal");
        spoil(&wal);
        store("hdr-x", "-wal", &wal);
        m = load("hdr-x", "");
        t = check_case(what, "hdr-x", &w);
        CHECK_MSG(w.frames == 0 && !w.page1_in_wal, "%s: %u frames", what, w.frames);
        /* what the main file says, not what the -wal held */
        CHECK_MSG(t.freelist_count == get32(m.p + 36) && t.page_count == (int64_t)(m.len / 4096),
                  "%s: SQLite did not fall back to the main file", what);
        free(m.p);
        free(wal.p);
}

static void spoil_checksum(struct buf *w) { w->p[27] ^= 0x10; }
static void spoil_magic(struct buf *w) { put32(w->p, 0x377f0684u); reseal_header(w); }
static void spoil_magic_unsealed(struct buf *w) { w->p[3] ^= 0x01; }
static void spoil_page_size(struct buf *w) { put32(w->p + 8, 768); reseal_header(w); }
static void spoil_page_size_small(struct buf *w) { put32(w->p + 8, 256); reseal_header(w); }

static void test_bad_header(void)
{
        sqlite3 *db = make_base("hdr");
        struct truth valid;
        struct walread w;

        snapshot("hdr", "hdr-x");
        valid = check_case("the intact base", "hdr-x", &w);
        CHECK(valid.freelist_count > 0 && w.frames > 0);
        bad_header("a header with a bad checksum", spoil_checksum);
        bad_header("a header with a bad magic, sealed", spoil_magic);
        bad_header("a header whose magic names the other byte order, unsealed", spoil_magic_unsealed);
        bad_header("a header with page size 768, sealed", spoil_page_size);
        bad_header("a header with page size 256, sealed", spoil_page_size_small);
        sqlite3_close(db);
}

/* SQLite cannot open a -wal whose sealed header names another format
 * version (SQLITE_CANTOPEN): only SQLite can tell, so dbstat_read_wal()
 * must not report the main file's figures as the database's. */
static void test_bad_version(void)
{
        sqlite3 *db = make_base("ver");
        struct dbstat st;
        int r;
        struct buf wal;
        struct truth t;

        snapshot("ver", "ver-x");
        sqlite3_close(db);
        wal = load("ver-x", "-wal");
        put32(wal.p + 4, 3007001);
        reseal(&wal, 4096, wal_big_endian(&wal), frames_in(&wal, 4096));
        store("ver-x", "-wal", &wal);
        free(wal.p);
        r = read_wal("ver-x", &st);
        CHECK_MSG(r == -EAGAIN, "a -wal of version 3007001: dbstat_read_wal() = %d", r);
        t = sqlite_truth("ver-x");
        CHECK_MSG(t.rc == SQLITE_CANTOPEN, "SQLite opened a -wal of version 3007001: %s", sqlite3_errstr(t.rc));
}

static void test_byte_order(void)
{
        sqlite3 *db = make_base("order");
        struct walread native, other, unsealed;
        struct truth a, b;
        struct buf wal;
        bool be;

        snapshot("order", "order-x");
        wal = load("order-x", "-wal");
        be = wal_big_endian(&wal);
        /* SQLite writes the machine's own order; the other is made here by
         * rewriting the magic and every checksum. */
        a = check_case(be ? "big-endian checksums (native)" : "little-endian checksums (native)", "order-x",
                       &native);
        reseal(&wal, 4096, !be, frames_in(&wal, 4096));
        snapshot("order", "order-x");
        store("order-x", "-wal", &wal);
        b = check_case(be ? "little-endian checksums (rewritten)" : "big-endian checksums (rewritten)", "order-x",
                       &other);
        CHECK(native.frames > 0 && other.frames == native.frames && other.page_count == native.page_count);
        CHECK(a.freelist_count == b.freelist_count && a.schema_version == b.schema_version &&
              a.page_count == b.page_count);

        /* The header resealed in the other order but the frames not: the
         * first frame's checksum fails, nothing counts. */
        snapshot("order", "order-x");
        free(wal.p);
        wal = load("order-x", "-wal");
        put32(wal.p, get32(wal.p) ^ 1u);
        reseal_header(&wal);
        store("order-x", "-wal", &wal);
        check_case("the other byte order, frames not resealed", "order-x", &unsealed);
        CHECK(unsealed.frames == 0);
        free(wal.p);
        sqlite3_close(db);
}

static void test_other_page_size(void)
{
        sqlite3 *small = open_wal_db("p1k", 1024, "NONE");
        sqlite3 *db = make_base("p4k");
        struct walread w;
        struct dbstat st;
        struct buf wal;

        fill(small, 1, 100, 500);
        exec(small, "DELETE FROM t WHERE id %% 4 = 0");
        snapshot("p1k", "p1k-x");
        wal = load("p1k-x", "-wal");
        check_case("1 KiB pages", "p1k-x", &w);
        CHECK(w.frames > 0 && w.page_size == 1024);

        /* The 1 KiB -wal next to a 4 KiB database: only SQLite can tell. */
        snapshot("p4k", "mixed");
        store("mixed", "-wal", &wal);
        CHECK(scan("mixed", 4096, &w) == -EPROTO);
        CHECK(read_wal("mixed", &st) == -EAGAIN);
        /* A header alone of another page size says so too. */
        wal.len = WAL_HDR;
        store("mixed", "-wal", &wal);
        CHECK(scan("mixed", 4096, &w) == -EPROTO);
        CHECK(read_wal("mixed", &st) == -EAGAIN);
        free(wal.p);
        sqlite3_close(small);
        sqlite3_close(db);
}

static void test_empty_and_short(void)
{
        sqlite3 *db = make_base("short");
        int64_t ck[3];
        struct walread w;
        struct buf wal;

        checkpoint(db, "TRUNCATE", ck);
        CHECK(ck[0] == 0);
        snapshot("short", "short-x");
        check_case("an empty -wal", "short-x", &w);
        CHECK(w.frames == 0);

        exec(db, "DELETE FROM t WHERE id %% 7 = 0");
        snapshot("short", "short-x");
        wal = load("short-x", "-wal");
        CHECK(frames_in(&wal, 4096) > 0);

        wal.len = WAL_HDR;
        store("short-x", "-wal", &wal);
        check_case("a header-only -wal", "short-x", &w);
        CHECK(w.frames == 0);

        snapshot("short", "short-x");
        wal.len = WAL_HDR - 1;
        store("short-x", "-wal", &wal);
        check_case("a -wal cut inside its header", "short-x", &w);
        CHECK(w.frames == 0);

        snapshot("short", "short-x");
        wal.len = WAL_HDR + 100;
        store("short-x", "-wal", &wal);
        check_case("a header and part of a frame", "short-x", &w);
        CHECK(w.frames == 0);
        free(wal.p);
        sqlite3_close(db);
}

static void test_auto_vacuum(void)
{
        sqlite3 *db = open_wal_db("incr", 4096, "INCREMENTAL");
        struct walread before, after;
        struct truth t;
        struct buf m;
        int64_t ck[3];

        fill(db, 1, 200, 1500);
        snapshot("incr", "incr-x");
        t = check_case("auto_vacuum=INCREMENTAL", "incr-x", &before);
        CHECK(t.auto_vacuum == AUTO_VACUUM_INCREMENTAL);

        /* incremental_vacuum shrinks the database inside the -wal. */
        exec(db, "DELETE FROM t WHERE id %% 20 < 10; PRAGMA incremental_vacuum(20)");
        snapshot("incr", "incr-x");
        t = check_case("after incremental_vacuum(20)", "incr-x", &after);
        CHECK(after.page_count + 20 == before.page_count && t.freelist_count > 0);
        sqlite3_close(db);

        /* Switched by a VACUUM that is still in the -wal: only page 1 there
         * says so (offsets 52 and 64). */
        db = open_wal_db("switch", 4096, "NONE");
        fill(db, 1, 100, 1500);
        checkpoint(db, "TRUNCATE", ck);
        exec(db, "PRAGMA auto_vacuum=INCREMENTAL; VACUUM");
        snapshot("switch", "switch-x");
        m = load("switch-x", "");
        CHECK(get32(m.p + 52) == 0 && get32(m.p + 64) == 0);
        free(m.p);
        t = check_case("switched to INCREMENTAL in the -wal", "switch-x", NULL);
        CHECK(t.auto_vacuum == AUTO_VACUUM_INCREMENTAL);

        exec(db, "PRAGMA auto_vacuum=FULL");
        snapshot("switch", "switch-x");
        t = check_case("switched to FULL in the -wal", "switch-x", NULL);
        CHECK(t.auto_vacuum == AUTO_VACUUM_FULL);
        sqlite3_close(db);
}

/* 65536-byte pages: the database header writes the size as 1, a -wal
 * header as 65536. SQLite's recovery ignores a -wal header saying 1
 * (szPage < 512, wal.c walIndexRecover), so must walread. */
static void test_64k_pages(void)
{
        sqlite3 *db = open_wal_db("big", 65536, "NONE");
        struct walread w;
        struct buf wal;

        fill(db, 1, 20, 30000);
        exec(db, "DELETE FROM t WHERE id %% 2 = 0");
        snapshot("big", "big-x");
        wal = load("big-x", "-wal");
        CHECK(get32(wal.p + 8) == 65536);
        check_case("65536-byte pages", "big-x", &w);
        CHECK(w.frames > 0 && w.page_size == 65536);

        snapshot("big", "big-x");
        put32(wal.p + 8, 1);
        reseal(&wal, 65536, wal_big_endian(&wal), frames_in(&wal, 65536));
        store("big-x", "-wal", &wal);
        check_case("a -wal header page size of 1", "big-x", &w);
        CHECK_MSG(w.frames == 0, "a -wal header page size of 1: %u frames, SQLite's recovery reads none", w.frames);
        free(wal.p);
        sqlite3_close(db);
}

static void test_errors(void)
{
        static unsigned char text[200];
        char p[PATH_LEN], q[PATH_LEN];
        struct walread w;
        struct dbstat st;
        struct buf m;
        sqlite3 *db;
        int fd;

        CHECK(walread_scan(-1, 4096, &w) == -EBADF);
        fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        CHECK(walread_scan(fd, 4096, &w) == -EISDIR);
        close(fd);

        CHECK(read_wal("missing", &st) == -ENOENT);

        /* Closed by its last connection: no -wal left, look again. */
        db = open_wal_db("closed", 4096, "NONE");
        fill(db, 1, 10, 100);
        sqlite3_close(db);
        path_of(p, "closed", "-wal");
        CHECK(!exists(p));
        CHECK(read_wal("closed", &st) == -EAGAIN);

        memset(text, '.', sizeof(text));
        memcpy(text, "this is not a database", 22);
        m = (struct buf){ text, sizeof(text) };
        store("text", "", &m);
        store("text", "-wal", &m);
        CHECK(read_wal("text", &st) == -EINVAL);

        /* A -wal that is a symbolic link or a directory is not read. */
        m = load("closed", "");
        store("link", "", &m);
        free(m.p);
        path_of(p, "link", "-wal");
        path_of(q, "text", "-wal");
        CHECK(symlink(q, p) == 0);
        CHECK(read_wal("link", &st) == -ELOOP);
        unlink(p);
        CHECK(mkdir(p, 0700) == 0);
        CHECK(read_wal("link", &st) == -EISDIR);
        rmdir(p);
}

int main(void)
{
        if (!mkdtemp(dir))
                return 2;
        test_inserts_and_deletes();
        test_checkpoints();
        test_spilled_tail();
        test_appended_tail();
        test_torn_frame();
        test_bad_frames();
        test_bad_header();
        test_bad_version();
        test_byte_order();
        test_other_page_size();
        test_empty_and_short();
        test_auto_vacuum();
        test_64k_pages();
        test_errors();
        {
                char cmd[300];

                snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
                if (system(cmd) != 0)
                        fprintf(stderr, "could not remove %s\n", dir);
        }
        return test_summary();
}
