/* SPDX-License-Identifier: MIT */
/* walread_scan() and dbstat_read_wal() against SQLite's own recovery, and
 * walread_shm() against SQLite connections that hold the database open.
 *
 * Each case makes a real WAL database with SQLite and copies it, while its
 * connection is open, with its -wal and without its -shm (what a copy, a
 * backup or a crash leaves). The copy is read without SQLite first, then
 * opened with SQLite, whose recovery rebuilds the wal-index from the same
 * -wal: PRAGMA page_count, freelist_count, schema_version, auto_vacuum and
 * the frame count wal_checkpoint reports (mxFrame) must agree with ours.
 * Damaged and crafted -wal files are written here by hand, their checksums
 * computed as fileformat2.html ("The Write-Ahead Log") describes them.
 *
 * walread_shm() reads a live -shm: the connection that keeps it current is
 * in a child process (POSIX locks are per process), and so are a writer,
 * a checkpointer and a process that moves a crafted log under the reader;
 * crafted -shm copies are held by a child that takes the DMS lock. */
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
#include <time.h>
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

/* ---- walread_shm(): the wal-index of a database in use -------------------- */

/* POSIX locks belong to a process, and F_GETLK reports only other
 * processes' locks: the connection whose -shm DMS lock walread_shm() asks
 * about lives in a child, a "peer", driven line by line over pipes. */
struct peer {
        pid_t pid;
        FILE *to, *from;
};

/* What a peer answers each command with: its result code, PRAGMA
 * page_count and freelist_count as it sees them right after, and the
 * first three columns of the last row the command returned (-1: none). */
struct seen {
        int rc;
        int64_t page_count, freelist_count;
        int64_t row[3];
};

static int peer_row(void *arg, int n, char **v, char **names)
{
        int64_t *row = arg;

        for (int i = 0; i < 3; i++)
                row[i] = i < n && v[i] ? strtoll(v[i], NULL, 10) : -1;
        return 0;
}

/* The child: one command a line; ".repeat N SQL" runs SQL N times, each
 * its own transaction; ".close" closes the connection (the last one
 * checkpoints and deletes the -wal and -shm), ".crash" exits without. */
static void peer_serve(const char *path, FILE *in, FILE *out)
{
        static char line[8192];
        sqlite3 *db;

        if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI, NULL) != SQLITE_OK)
                _exit(3);
        sqlite3_busy_timeout(db, 5000);
        while (fgets(line, sizeof(line), in)) {
                int64_t row[3] = { -1, -1, -1 };
                const char *sql = line;
                long times = 1;
                char *err = NULL, *end;
                int rc = SQLITE_OK;

                line[strcspn(line, "\n")] = '\0';
                if (strcmp(line, ".crash") == 0)
                        _exit(0);
                if (strcmp(line, ".close") == 0)
                        break;
                if (strncmp(line, ".repeat ", 8) == 0) {
                        times = strtol(line + 8, &end, 10);
                        sql = end;
                }
                for (long i = 0; i < times && rc == SQLITE_OK; i++)
                        rc = sqlite3_exec(db, sql, peer_row, row, &err);
                if (rc != SQLITE_OK)
                        fprintf(stderr, "peer: %s: %s\n", sql, err);
                sqlite3_free(err);
                fprintf(out, "%d %lld %lld %lld %lld %lld\n", rc, (long long)query_int(db, "PRAGMA page_count", 0),
                        (long long)query_int(db, "PRAGMA freelist_count", 0), (long long)row[0], (long long)row[1],
                        (long long)row[2]);
                fflush(out);
        }
        _exit(sqlite3_close(db) == SQLITE_OK ? 0 : 4);
}

/* A peer on name.db, opened as a URI with query when it is not NULL. */
static struct peer peer_open(const char *name, const char *query)
{
        int to[2], from[2];
        char path[PATH_LEN + 64];
        struct peer p;

        path_of(path, name, "");
        if (query) {
                char file[PATH_LEN];

                path_of(file, name, "");
                snprintf(path, sizeof(path), "file:%s?%s", file, query);
        }
        if (pipe2(to, O_CLOEXEC) < 0 || pipe2(from, O_CLOEXEC) < 0)
                exit(2);
        fflush(NULL);
        p.pid = fork();
        if (p.pid < 0)
                exit(2);
        if (p.pid == 0) {
                FILE *in = fdopen(to[0], "r"), *out = fdopen(from[1], "w");

                close(to[1]);
                close(from[0]);
                if (!in || !out)
                        _exit(3);
                peer_serve(path, in, out);
        }
        close(to[0]);
        close(from[1]);
        p.to = fdopen(to[1], "w");
        p.from = fdopen(from[0], "r");
        if (!p.to || !p.from)
                exit(2);
        return p;
}

static struct peer peer_start(const char *name)
{
        return peer_open(name, NULL);
}

static struct seen peer_do(struct peer *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static struct seen peer_do(struct peer *p, const char *fmt, ...)
{
        struct seen s = { .rc = -1 };
        long long v[5];
        va_list ap;

        va_start(ap, fmt);
        vfprintf(p->to, fmt, ap);
        va_end(ap);
        fputc('\n', p->to);
        fflush(p->to);
        if (fscanf(p->from, "%d %lld %lld %lld %lld %lld", &s.rc, &v[0], &v[1], &v[2], &v[3], &v[4]) != 6) {
                fprintf(stderr, "the peer did not answer\n");
                exit(2);
        }
        s.page_count = v[0];
        s.freelist_count = v[1];
        for (int i = 0; i < 3; i++)
                s.row[i] = v[2 + i];
        CHECK_MSG(s.rc == SQLITE_OK, "the peer's command failed: %s", sqlite3_errstr(s.rc));
        return s;
}

/* Ends the peer: crash leaves the -wal and -shm as a killed application
 * does, without a checkpoint. */
static void peer_end(struct peer *p, bool crash)
{
        int status = 0;

        fputs(crash ? ".crash\n" : ".close\n", p->to);
        fclose(p->to);
        fclose(p->from);
        CHECK(waitpid(p->pid, &status, 0) == p->pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* A new WAL database name.db, held open by a peer: no autocheckpoint, no
 * fsync (nothing here survives a crash of the machine). */
static struct peer peer_new_db(const char *name, uint32_t ps, const char *auto_vacuum, struct seen *s)
{
        struct peer p;

        remove_db(name);
        p = peer_start(name);
        *s = peer_do(&p,
                     "PRAGMA page_size=%u; PRAGMA auto_vacuum=%s; PRAGMA journal_mode=WAL;"
                     " PRAGMA wal_autocheckpoint=0; PRAGMA synchronous=OFF;"
                     " CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB)",
                     ps, auto_vacuum);
        return p;
}

/* Rows first..last of size bytes each, in one transaction of the peer. */
static struct seen peer_fill(struct peer *p, int first, int last, int size)
{
        return peer_do(p,
                       "WITH RECURSIVE n(i) AS (SELECT %d UNION ALL SELECT i+1 FROM n WHERE i < %d)"
                       " INSERT INTO t SELECT i, randomblob(%d) FROM n",
                       first, last, size);
}

/* walread_shm() of name.db as the daemon calls it: the three files opened
 * read-only (a missing -wal as -1), closed after. */
static int shm_read(const char *name, uint32_t ps, struct walread *w)
{
        char p[PATH_LEN];
        int dbfd, walfd, shmfd, r;

        path_of(p, name, "");
        dbfd = open(p, O_RDONLY | O_CLOEXEC);
        path_of(p, name, "-wal");
        walfd = open(p, O_RDONLY | O_CLOEXEC);
        path_of(p, name, "-shm");
        shmfd = open(p, O_RDONLY | O_CLOEXEC);
        memset(w, 0xa5, sizeof(*w));
        if (dbfd < 0 || shmfd < 0)
                r = -errno;
        else
                r = walread_shm(dbfd, walfd, shmfd, ps, w);
        if (dbfd >= 0)
                close(dbfd);
        if (walfd >= 0)
                close(walfd);
        if (shmfd >= 0)
                close(shmfd);
        return r;
}

/* The bytes and modification times of name.db, -wal and -shm. */
struct files {
        struct buf b[3];
        struct timespec mtime[3];
};

static const char *const db_suffixes[3] = { "", "-wal", "-shm" };

static void files_take(const char *name, struct files *f)
{
        for (int i = 0; i < 3; i++) {
                char p[PATH_LEN];
                struct stat st;

                path_of(p, name, db_suffixes[i]);
                f->b[i] = slurp(p);
                f->mtime[i] = stat(p, &st) == 0 ? st.st_mtim : (struct timespec){ -1, -1 };
        }
}

static void files_free(struct files *f)
{
        for (int i = 0; i < 3; i++)
                free(f->b[i].p);
}

/* A read left every file as it was: bytes and modification time. */
static void files_same(const char *what, const char *name, const struct files *before)
{
        struct files now;

        files_take(name, &now);
        for (int i = 0; i < 3; i++) {
                const struct buf *a = &before->b[i], *b = &now.b[i];

                CHECK_MSG(!a->p == !b->p && a->len == b->len && (!a->len || memcmp(a->p, b->p, a->len) == 0),
                          "%s: %s.db%s changed", what, name, db_suffixes[i]);
                CHECK_MSG(before->mtime[i].tv_sec == now.mtime[i].tv_sec &&
                                  before->mtime[i].tv_nsec == now.mtime[i].tv_nsec,
                          "%s: the mtime of %s.db%s changed", what, name, db_suffixes[i]);
        }
        files_free(&now);
}

/* walread_shm() of name.db, which must not change it, returns want. */
static int shm_expect(const char *what, const char *name, uint32_t ps, int want, struct walread *w)
{
        struct files before;
        int r;

        files_take(name, &before);
        r = shm_read(name, ps, w);
        files_same(what, name, &before);
        files_free(&before);
        CHECK_MSG(r == want, "%s: walread_shm() = %d (%s), expected %d", what, r, strerror(-r), want);
        return r;
}

/* walread_shm() of a database a peer holds open agrees with the peer (t:
 * what it saw after its last commit) and with walread_scan() of the same
 * -wal; in_wal: where page 1 must come from (-1: either). */
static void shm_agrees(const char *what, const char *name, uint32_t ps, const struct seen *t, int in_wal,
                       struct walread *ret)
{
        struct walread w, s;
        struct buf m;

        if (shm_expect(what, name, ps, 0, &w) != 0)
                return;
        CHECK_MSG(w.page_size == ps, "%s: page_size %u", what, w.page_size);
        CHECK_MSG(w.page_count == t->page_count, "%s: page_count %u, SQLite %lld", what, w.page_count,
                  (long long)t->page_count);
        CHECK_MSG(get32(w.page1 + 36) == t->freelist_count, "%s: freelist_count %u, SQLite %lld", what,
                  get32(w.page1 + 36), (long long)t->freelist_count);
        CHECK_MSG(get32(w.page1 + 28) == w.page_count, "%s: page 1 says %u pages, nPage %u", what,
                  get32(w.page1 + 28), w.page_count);
        if (in_wal >= 0)
                CHECK_MSG(w.page1_in_wal == (in_wal == 1), "%s: page1_in_wal %d", what, w.page1_in_wal);
        /* The same log as a full scan of the -wal sees it. */
        CHECK_MSG(scan(name, ps, &s) == 0 && s.frames == w.frames, "%s: %u frames, walread_scan() %u", what,
                  w.frames, s.frames);
        m = load(name, "");
        CHECK_MSG(w.page1_in_wal == s.page1_in_wal &&
                          memcmp(w.page1, s.page1_in_wal ? s.page1 : m.p, WALREAD_PAGE1_BYTES) == 0,
                  "%s: another page 1", what);
        free(m.p);
        if (ret)
                *ret = w;
}

static void shm_agreement(uint32_t ps)
{
        int small = (int)ps / 4, big = (int)ps * 2;
        struct seen s, before;
        struct walread w;
        struct buf wal;
        char name[32], what[128];
        struct peer p;

        snprintf(name, sizeof(name), "agree%u", ps);
#define WHAT(...) (snprintf(what, sizeof(what), __VA_ARGS__), what)
        p = peer_new_db(name, ps, "NONE", &s);
        shm_agrees(WHAT("%u: a new table", ps), name, ps, &s, 1, &w);
        CHECK(w.frames > 0 && s.freelist_count == 0);

        s = peer_fill(&p, 1, 300, small);
        s = peer_fill(&p, 301, 340, big);
        shm_agrees(WHAT("%u: inserts", ps), name, ps, &s, 1, NULL);
        s = peer_do(&p, "DELETE FROM t WHERE id %% 3 = 0");
        shm_agrees(WHAT("%u: deletes", ps), name, ps, &s, 1, &w);
        CHECK(s.freelist_count > 10);

        /* PASSIVE copies every frame back, the index still names them. */
        s = peer_do(&p, "PRAGMA wal_checkpoint(PASSIVE)");
        CHECK(s.row[0] == 0 && s.row[1] == w.frames && s.row[2] == s.row[1]);
        shm_agrees(WHAT("%u: after PASSIVE", ps), name, ps, &s, 1, NULL);

        /* The next commit resets the log: new salts, one frame, the old
         * frames beyond it still in the file; page 1 is not written. */
        s = peer_do(&p, "UPDATE t SET b = zeroblob(length(b)) WHERE id = 1");
        shm_agrees(WHAT("%u: a reset log, old frames beyond", ps), name, ps, &s, 0, &w);
        wal = load(name, "-wal");
        CHECK(w.frames == 1 && frames_in(&wal, ps) > 10);
        free(wal.p);

        s = peer_do(&p, "PRAGMA wal_checkpoint(RESTART)");
        CHECK(s.row[0] == 0);
        shm_agrees(WHAT("%u: after RESTART", ps), name, ps, &s, 0, NULL);
        s = peer_do(&p, "DELETE FROM t WHERE id %% 3 = 1");
        shm_agrees(WHAT("%u: a commit after RESTART", ps), name, ps, &s, 1, &w);
        CHECK(w.frames > 1);

        s = peer_do(&p, "PRAGMA wal_checkpoint(TRUNCATE)");
        CHECK(s.row[0] == 0 && s.row[1] == 0);
        shm_agrees(WHAT("%u: after TRUNCATE", ps), name, ps, &s, 0, &w);
        CHECK(w.frames == 0);
        s = peer_do(&p, "UPDATE t SET b = zeroblob(length(b)) WHERE id = 2");
        shm_agrees(WHAT("%u: a commit without page 1", ps), name, ps, &s, 0, &w);
        CHECK(w.frames == 1);

        /* A transaction open in the peer, its frames spilled into the
         * -wal: not committed, not counted. Rolled back: still there. */
        before = s;
        s = peer_do(&p, "PRAGMA cache_size=10; BEGIN");
        s = peer_fill(&p, 1001, 1060, big);
        CHECK(s.page_count > before.page_count);
        shm_agrees(WHAT("%u: an open transaction's spilled frames", ps), name, ps, &before, 0, &w);
        wal = load(name, "-wal");
        CHECK(w.frames == 1 && frames_in(&wal, ps) > 20);
        free(wal.p);
        s = peer_do(&p, "ROLLBACK; PRAGMA cache_size=-2000");
        CHECK(s.page_count == before.page_count);
        shm_agrees(WHAT("%u: after its rollback", ps), name, ps, &s, 0, &w);
        CHECK(w.frames == 1);
        s = peer_fill(&p, 2001, 2010, small);
        shm_agrees(WHAT("%u: a commit after the rollback", ps), name, ps, &s, 1, NULL);
        peer_end(&p, false);
#undef WHAT
}

static void test_shm_agreement(void)
{
        static const uint32_t sizes[] = { 512, 4096, 65536 };

        for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
                shm_agreement(sizes[i]);
}

static void test_shm_auto_vacuum(void)
{
        struct walread w;
        struct peer p;
        struct seen s, full;

        p = peer_new_db("shm-incr", 4096, "INCREMENTAL", &s);
        s = peer_fill(&p, 1, 200, 1500);
        s = peer_do(&p, "DELETE FROM t WHERE id %% 20 < 10");
        shm_agrees("INCREMENTAL: deletes", "shm-incr", 4096, &s, 1, &w);
        full = s;
        s = peer_do(&p, "PRAGMA incremental_vacuum(20)");
        CHECK(s.page_count + 20 == full.page_count && s.freelist_count + 20 == full.freelist_count);
        shm_agrees("INCREMENTAL: incremental_vacuum(20)", "shm-incr", 4096, &s, 1, NULL);
        peer_end(&p, false);

        p = peer_new_db("shm-full", 4096, "FULL", &s);
        full = peer_fill(&p, 1, 200, 1500);
        s = peer_do(&p, "DELETE FROM t WHERE id %% 20 < 10");
        CHECK(s.freelist_count == 0 && s.page_count < full.page_count);
        shm_agrees("FULL: deletes shrink the file", "shm-full", 4096, &s, 1, NULL);
        peer_end(&p, false);
}

/* Without powersafe overwrite (psow=0) and with synchronous=FULL, a
 * commit is padded with copies of its commit frame until the next frame
 * would start past a sector boundary (4096 bytes; wal.c walFrames(),
 * nExtra): mxFrame is the last copy. */
static void test_shm_padded_commits(void)
{
        const char *name = "shm-padded";
        struct walread w;
        struct peer p;
        struct seen s;
        struct buf wal;
        uint32_t n;

        remove_db(name);
        p = peer_open(name, "psow=0");
        s = peer_do(&p, "PRAGMA page_size=512; PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0;"
                        " PRAGMA synchronous=FULL; CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB)");
        s = peer_fill(&p, 1, 40, 300);
        s = peer_do(&p, "DELETE FROM t WHERE id %% 3 = 0");
        shm_agrees("padded commits", name, 512, &s, 1, &w);
        wal = load(name, "-wal");
        n = frames_in(&wal, 512);
        /* The last two frames: the commit and a copy of it. */
        CHECK_MSG(n == w.frames && commit_of(&wal, 512, n - 1) == s.page_count &&
                          memcmp(wal.p + frame_off(n - 1, 512), wal.p + frame_off(n, 512), 8) == 0,
                  "padded commits: %u frames, not ending in a copy", n);
        free(wal.p);
        peer_end(&p, false);
}

/* More frames than the first index block holds (4062): page 1 found
 * across block boundaries, or not at all after a scan of every block. */
static void test_shm_many_frames(void)
{
        const char *name = "shm-many";
        struct walread w;
        struct peer p;
        struct seen s;

        p = peer_new_db(name, 512, "NONE", &s);
        s = peer_fill(&p, 1, 20000, 100);
        shm_agrees("20000 rows in 512-byte pages", name, 512, &s, 1, &w);
        CHECK(w.frames > 4062);
        s = peer_do(&p, "UPDATE t SET b = randomblob(100)");
        shm_agrees("every row rewritten, page 1 left in the first block", name, 512, &s, 1, &w);
        CHECK(w.frames > 4062 + 4096);

        /* One frame a transaction from an empty log: the boundaries. */
        s = peer_do(&p, "PRAGMA wal_checkpoint(TRUNCATE)");
        s = peer_do(&p, ".repeat 4061 UPDATE t SET b = randomblob(100) WHERE id = 7");
        shm_agrees("4061 frames, none of page 1", name, 512, &s, 0, &w);
        CHECK(w.frames == 4061);
        s = peer_do(&p, "PRAGMA user_version = 1");
        shm_agrees("page 1 in frame 4062, the first block's last", name, 512, &s, 1, &w);
        CHECK(w.frames == 4062);
        s = peer_do(&p, "UPDATE t SET b = randomblob(100) WHERE id = 7");
        shm_agrees("frame 4063 in the second block, page 1 in the first", name, 512, &s, 1, &w);
        CHECK(w.frames == 4063);
        s = peer_do(&p, "PRAGMA user_version = 2");
        shm_agrees("page 1 in frame 4064", name, 512, &s, 1, &w);
        s = peer_do(&p, ".repeat 4096 UPDATE t SET b = randomblob(100) WHERE id = 7");
        shm_agrees("page 1 a block down, mxFrame in the third block", name, 512, &s, 1, &w);
        CHECK(w.frames == 4064 + 4096);

        s = peer_do(&p, "PRAGMA wal_checkpoint(TRUNCATE)");
        s = peer_do(&p, ".repeat 8200 UPDATE t SET b = randomblob(100) WHERE id = 7");
        shm_agrees("8200 frames, none of page 1: every block read", name, 512, &s, 0, &w);
        CHECK(w.frames == 8200);
        peer_end(&p, false);
}

/* ---- crafted -shm files, with a second process holding the DMS lock ------ */

/* A process holding a POSIX lock on byte 128 of name.db-shm, as a
 * connection's unixLockSharedMemory() does: a read lock, then what 'r' or
 * 'w' asks for; 'q' ends it. */
struct locker {
        pid_t pid;
        int to, from;
};

static int lock_dms(int fd, short type)
{
        struct flock fl = { .l_type = type, .l_whence = SEEK_SET, .l_start = 128, .l_len = 1 };

        return fcntl(fd, F_SETLK, &fl);
}

static struct locker locker_start(const char *name)
{
        int to[2], from[2];
        char path[PATH_LEN], c;
        struct locker l;

        path_of(path, name, "-shm");
        if (pipe2(to, O_CLOEXEC) < 0 || pipe2(from, O_CLOEXEC) < 0)
                exit(2);
        fflush(NULL);
        l.pid = fork();
        if (l.pid < 0)
                exit(2);
        if (l.pid == 0) {
                int fd = open(path, O_RDWR | O_CLOEXEC);

                if (fd < 0 || lock_dms(fd, F_RDLCK) < 0)
                        _exit(3);
                while (write(from[1], "k", 1) == 1 && read(to[0], &c, 1) == 1 && c != 'q')
                        if (lock_dms(fd, c == 'w' ? F_WRLCK : F_RDLCK) < 0)
                                _exit(3);
                _exit(0);
        }
        close(to[0]);
        close(from[1]);
        l.to = to[1];
        l.from = from[0];
        if (read(l.from, &c, 1) != 1)
                exit(2);
        return l;
}

static void locker_set(struct locker *l, char type)
{
        char c;

        if (write(l->to, &type, 1) != 1 || read(l->from, &c, 1) != 1)
                exit(2);
}

static void locker_end(struct locker *l)
{
        int status = 0;

        if (write(l->to, "q", 1) != 1)
                exit(2);
        close(l->to);
        close(l->from);
        CHECK(waitpid(l->pid, &status, 0) == l->pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* The -shm header's fields (walformat.html 2.1), in this host's order. */
#define SHM_IS_INIT 12
#define SHM_BIG_END 13
#define SHM_PAGE_SIZE 14
#define SHM_MX_FRAME 16
#define SHM_N_PAGE 20
#define SHM_FRAME_CKSUM 24
#define SHM_SALT 32

static uint32_t shm_get(const struct buf *b, size_t off)
{
        uint32_t v;

        memcpy(&v, b->p + off, 4);
        return v;
}

static void shm_put(struct buf *b, size_t off, uint32_t v)
{
        memcpy(b->p + off, &v, 4);
}

/* A new checksum over bytes 0..39 in this host's order, and the second
 * copy made equal to the first, as walIndexWriteHdr() leaves them. */
static void shm_reseal(struct buf *b)
{
        uint32_t s[2] = { 0, 0 };

        for (size_t i = 0; i < 40; i += 8) {
                s[0] += shm_get(b, i) + s[1];
                s[1] += shm_get(b, i + 4) + s[0];
        }
        shm_put(b, 40, s[0]);
        shm_put(b, 44, s[1]);
        memcpy(b->p + 48, b->p, 48);
}

/* Where frame i's page number is in the -shm: 4062 after the 136-byte
 * header, then 4096 in each next 32 KiB block. */
static size_t shm_pgno_at(uint32_t i)
{
        if (i <= 4062)
                return 136 + (size_t)(i - 1) * 4;
        return 32768 * (size_t)((i - 4063) / 4096 + 1) + (size_t)((i - 4063) % 4096) * 4;
}

struct crafted {
        const char *what;
        const char *suffix;             /* the file spoiled */
        void (*spoil)(struct buf *);
};

#define CRAFTED_PS 4096 /* the crafted copies' page size */

/* Each spoils one thing; "resealed": the header's checksum made valid
 * again, so only the check named can refuse it. */

static void spoil_copies(struct buf *b) { b->p[48 + 8] ^= 1; }
static void spoil_shm_cksum(struct buf *b) { b->p[SHM_MX_FRAME] ^= 1; memcpy(b->p + 48, b->p, 48); }
static void spoil_init(struct buf *b) { b->p[SHM_IS_INIT] = 0; shm_reseal(b); }
static void spoil_version(struct buf *b) { shm_put(b, 0, 3007001); shm_reseal(b); }
static void spoil_shm_page_size(struct buf *b) { b->p[SHM_PAGE_SIZE + 1] ^= 0x30; shm_reseal(b); }
static void spoil_salt(struct buf *b) { b->p[SHM_SALT + 3] ^= 1; shm_reseal(b); }
static void spoil_order(struct buf *b) { b->p[SHM_BIG_END] ^= 1; shm_reseal(b); }
static void spoil_beyond(struct buf *b) { shm_put(b, SHM_MX_FRAME, shm_get(b, SHM_MX_FRAME) + 1000); shm_reseal(b); }
static void spoil_not_commit(struct buf *b) { shm_put(b, SHM_MX_FRAME, shm_get(b, SHM_MX_FRAME) - 1); shm_reseal(b); }
static void spoil_n_page(struct buf *b) { shm_put(b, SHM_N_PAGE, shm_get(b, SHM_N_PAGE) + 1); shm_reseal(b); }
static void spoil_frame_cksum(struct buf *b) { b->p[SHM_FRAME_CKSUM] ^= 1; shm_reseal(b); }
static void spoil_pgno_zero(struct buf *b) { shm_put(b, shm_pgno_at(shm_get(b, SHM_MX_FRAME) - 1), 0); }
static void spoil_pgno_one(struct buf *b) { shm_put(b, shm_pgno_at(shm_get(b, SHM_MX_FRAME) - 1), 1); }
static void spoil_pgno_top(struct buf *b) { shm_put(b, shm_pgno_at(shm_get(b, SHM_MX_FRAME)), 999999); }
static void spoil_shm_short(struct buf *b) { b->len = 3; /* as the first connection leaves it */ }
static void spoil_wal_cksum(struct buf *b) { b->p[27] ^= 1; }
static void spoil_wal_short(struct buf *b) { b->len -= CRAFTED_PS; }
static void spoil_wal_salt(struct buf *b) { b->p[19] ^= 1; reseal_header(b); }

/* The newest frame of page 1 made another log's (its salt-2), nothing
 * else changed: only that frame's own salts tell. */
static void spoil_page1_salt(struct buf *b)
{
        for (uint32_t i = frames_in(b, CRAFTED_PS); i > 0; i--)
                if (get32(b->p + frame_off(i, CRAFTED_PS)) == 1) {
                        b->p[frame_off(i, CRAFTED_PS) + 15] ^= 1;
                        return;
                }
}

/* The same crafted copy read with its lock held by another process: every
 * spoiled file -EAGAIN, never figures; the intact copy its figures. */
static void test_shm_crafted(void)
{
        static const struct crafted cases[] = {
                { "the two header copies differ", "-shm", spoil_copies },
                { "a bad header checksum", "-shm", spoil_shm_cksum },
                { "isInit 0", "-shm", spoil_init },
                { "iVersion 3007001", "-shm", spoil_version },
                { "another page size in the index", "-shm", spoil_shm_page_size },
                { "salts other than the -wal's", "-shm", spoil_salt },
                { "the other checksum order", "-shm", spoil_order },
                { "mxFrame beyond the -wal", "-shm", spoil_beyond },
                { "mxFrame not a commit", "-shm", spoil_not_commit },
                { "nPage not the commit's", "-shm", spoil_n_page },
                { "a wrong last-frame checksum", "-shm", spoil_frame_cksum },
                { "a page number 0 below mxFrame", "-shm", spoil_pgno_zero },
                { "page 1 named in a frame of another page", "-shm", spoil_pgno_one },
                { "mxFrame's page number not the frame's", "-shm", spoil_pgno_top },
                { "a -shm truncated to 3 bytes", "-shm", spoil_shm_short },
                { "a bad -wal header checksum", "-wal", spoil_wal_cksum },
                { "a -wal shorter than mxFrame frames", "-wal", spoil_wal_short },
                { "a -wal of other salts, sealed", "-wal", spoil_wal_salt },
                { "the page-1 frame of another log", "-wal", spoil_page1_salt },
        };
        struct walread w, intact;
        struct seen s;
        struct peer p;
        struct locker l;
        struct buf shm, wal;
        char label[128];
        int fd;

        /* The live database: page 1 in the -wal, then a commit of two
         * frames of other pages, so the scan passes entries before it
         * finds page 1, and frame mxFrame - 1 is not a commit. */
        p = peer_new_db("live", 4096, "NONE", &s);
        s = peer_fill(&p, 1, 200, 1500);
        s = peer_do(&p, "DELETE FROM t WHERE id %% 4 = 0");
        s = peer_do(&p, "UPDATE t SET b = zeroblob(length(b)) WHERE id IN (1, 199)");
        shm_agrees("the live original", "live", 4096, &s, 1, NULL);
        snapshot("live", "craft");
        shm = load("live", "-shm");
        store("craft", "-shm", &shm);
        peer_end(&p, false);

        /* Nobody holds the copy's -shm: stale. */
        shm_expect("a copy nobody holds", "craft", 4096, -ESTALE, &w);

        /* This process holding the lock itself is nobody, to F_GETLK. */
        {
                char path[PATH_LEN];

                path_of(path, "craft", "-shm");
                fd = open(path, O_RDWR | O_CLOEXEC);
                CHECK(fd >= 0 && lock_dms(fd, F_RDLCK) == 0);
                shm_expect("a copy only this process holds", "craft", 4096, -ESTALE, &w);
                close(fd);
        }

        l = locker_start("craft");
        shm_expect("the intact copy, held", "craft", 4096, 0, &intact);
        CHECK(intact.page_count == s.page_count && get32(intact.page1 + 36) == s.freelist_count &&
              intact.page1_in_wal && intact.frames > 2);
        shm_expect("the caller's page size other than the index's", "craft", 8192, -EAGAIN, &w);
        {
                char path[PATH_LEN];
                int dbfd, shmfd;

                path_of(path, "craft", "");
                dbfd = open(path, O_RDONLY | O_CLOEXEC);
                path_of(path, "craft", "-shm");
                shmfd = open(path, O_RDONLY | O_CLOEXEC);
                CHECK(walread_shm(dbfd, -1, shmfd, 4096, &w) == -EBADF); /* frames, no -wal */
                CHECK(walread_shm(dbfd, -1, -1, 4096, &w) == -EBADF);
                close(dbfd);
                close(shmfd);
        }
        CHECK(shm_read("craft", 1000, &w) == -EINVAL);

        locker_set(&l, 'w');
        shm_expect("the DMS byte held exclusively", "craft", 4096, -EAGAIN, &w);
        locker_set(&l, 'r');

        wal = load("craft", "-wal");
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                const struct crafted *c = &cases[i];
                struct buf b = strcmp(c->suffix, "-shm") == 0 ? shm : wal, copy;

                copy.len = b.len;
                copy.p = malloc(b.len);
                if (!copy.p)
                        exit(2);
                memcpy(copy.p, b.p, b.len);
                c->spoil(&copy);
                store("craft", c->suffix, &copy);
                snprintf(label, sizeof(label), "%s (%s)", c->what, c->suffix);
                shm_expect(label, "craft", 4096, -EAGAIN, &w);
                store("craft", c->suffix, &b);
                free(copy.p);
        }
        shm_expect("the intact copy again", "craft", 4096, 0, &w);
        CHECK(memcmp(&w, &intact, sizeof(w)) == 0);

        /* mxFrame 0 (a TRUNCATE, a reset): the -wal is not read at all. */
        {
                struct buf b = { malloc(shm.len), shm.len };

                if (!b.p)
                        exit(2);
                memcpy(b.p, shm.p, shm.len);
                shm_put(&b, SHM_MX_FRAME, 0);
                shm_reseal(&b);
                store("craft", "-shm", &b);
                spoil_wal_cksum(&wal);
                store("craft", "-wal", &wal);
                shm_expect("mxFrame 0, a -wal of another log", "craft", 4096, 0, &w);
                CHECK(w.frames == 0 && !w.page1_in_wal && w.page_count == s.page_count);
                /* nPage 0 too (a recovery of an empty log): the main file's size. */
                shm_put(&b, SHM_N_PAGE, 0);
                b.p[SHM_PAGE_SIZE] = b.p[SHM_PAGE_SIZE + 1] = 0;
                shm_reseal(&b);
                store("craft", "-shm", &b);
                shm_expect("mxFrame 0, nPage 0, szPage 0", "craft", 4096, 0, &w);
                {
                        struct buf m = load("craft", "");

                        CHECK(w.page_count == (m.len + 4095) / 4096 && memcmp(w.page1, m.p, 100) == 0);
                        free(m.p);
                }
                free(b.p);
        }
        locker_end(&l);
        free(shm.p);
        free(wal.p);
}

/* An application that died with the database open leaves a -shm whose
 * header is intact and matches the -wal: only the lock tells. */
static void test_shm_stale(void)
{
        struct walread w;
        struct locker l;
        struct peer p;
        struct seen s;
        char path[PATH_LEN];

        p = peer_new_db("crashed", 4096, "NONE", &s);
        s = peer_fill(&p, 1, 100, 1500);
        s = peer_do(&p, "DELETE FROM t WHERE id %% 3 = 0");
        shm_agrees("before the crash", "crashed", 4096, &s, 1, NULL);
        peer_end(&p, true);
        shm_expect("after the crash", "crashed", 4096, -ESTALE, &w);
        l = locker_start("crashed");
        shm_expect("after the crash, the lock held by another process", "crashed", 4096, 0, &w);
        CHECK(w.page_count == s.page_count && get32(w.page1 + 36) == s.freelist_count);
        locker_end(&l);

        /* Closed cleanly: the last connection deletes the -wal and -shm. */
        p = peer_start("crashed");
        s = peer_do(&p, "SELECT count(*) FROM t");
        shm_agrees("opened again: recovered", "crashed", 4096, &s, -1, NULL);
        peer_end(&p, false);
        path_of(path, "crashed", "-shm");
        CHECK(!exists(path));
        CHECK(shm_read("crashed", 4096, &w) == -ENOENT);

        /* Opened again, only read: the first connection's recovery of an
         * empty log leaves mxFrame, nPage and szPage 0 (walIndexRecover()):
         * the size is the main file's. */
        p = peer_start("crashed");
        s = peer_do(&p, "SELECT count(*) FROM t");
        shm_agrees("a new -shm over an empty log", "crashed", 4096, &s, 0, &w);
        {
                struct buf shm = load("crashed", "-shm");

                CHECK(w.frames == 0 && shm.len >= 96 && shm_get(&shm, SHM_N_PAGE) == 0 &&
                      shm.p[SHM_PAGE_SIZE] == 0 && shm.p[SHM_PAGE_SIZE + 1] == 0);
                free(shm.p);
        }
        peer_end(&p, false);
}

/* A log that moves under the reader faster than any application's: a
 * child holding the DMS lock of a crafted copy plays state k = 1, 2, ...
 * in the order SQLite writes them: a commit (the -wal rewritten from its
 * start with new salts, frame 1 page 1 of state k; then the header,
 * mxFrame 1), a checkpoint (main page 1 of state k) and a reset (the
 * header with mxFrame 0 and the next salts: walRestartHdr()). State k
 * has k free pages and flip_pages(k) pages. A read that took nPage from
 * one state and page 1 from another (e.g. the header not read again
 * after the main file's page 1) shows here. */
#define FLIP_STATES 50000
#define RACE_TIME_LIMIT 120 /* seconds: stops a hang, counts nothing */

static uint32_t flip_pages(uint32_t k)
{
        return 1000 + (k % 3) * 100 + k % 7;
}

/* The salts of state k's log, as the -wal header stores them. */
static void flip_salts(uint32_t k, unsigned char out[8])
{
        put32(out, k);
        put32(out + 4, k * 2654435761u);
}

static void flip_header(struct buf *shm, uint32_t k, uint32_t mx_frame, const struct buf *wal)
{
        unsigned char salts[8];

        shm_put(shm, 8, 2 * k - (mx_frame ? 1 : 0)); /* iChange: never the same header twice */
        shm_put(shm, SHM_MX_FRAME, mx_frame);
        shm_put(shm, SHM_N_PAGE, flip_pages(k));
        if (mx_frame) {
                shm_put(shm, SHM_FRAME_CKSUM, get32(wal->p + WAL_HDR + 16));
                shm_put(shm, SHM_FRAME_CKSUM + 4, get32(wal->p + WAL_HDR + 20));
        }
        flip_salts(mx_frame ? k : k + 1, salts);
        memcpy(shm->p + SHM_SALT, salts, 8);
        shm_reseal(shm);
}

static void flipper(const char *name, int say)
{
        struct buf shm = load(name, "-shm"), m = load(name, ""), wal = { malloc(WAL_HDR + FRAME_HDR + 4096), 0 };
        bool be = shm.p[SHM_BIG_END];
        char path[PATH_LEN];
        int shm_fd, db_fd, wal_fd;

        path_of(path, name, "-shm");
        shm_fd = open(path, O_RDWR | O_CLOEXEC);
        path_of(path, name, "-wal");
        wal_fd = open(path, O_RDWR | O_CLOEXEC);
        path_of(path, name, "");
        db_fd = open(path, O_RDWR | O_CLOEXEC);
        if (!wal.p || shm_fd < 0 || wal_fd < 0 || db_fd < 0 || lock_dms(shm_fd, F_RDLCK) < 0)
                _exit(3);
        wal.len = WAL_HDR + FRAME_HDR + 4096;
        memset(wal.p, 0, wal.len);
        put32(wal.p + 4, 3007000);
        put32(wal.p + 8, 4096);
        memcpy(wal.p + WAL_HDR + FRAME_HDR, m.p, 4096);
        put32(wal.p + WAL_HDR, 1); /* frame 1 is page 1 */
        shm_put(&shm, 136, 1);     /* and the index says so */
        if (pwrite(shm_fd, shm.p, 140, 0) != 140 || write(say, "r", 1) != 1)
                _exit(4);
        for (uint32_t k = 1; k <= FLIP_STATES; k++) {
                unsigned char *page = wal.p + WAL_HDR + FRAME_HDR;

                flip_salts(k, wal.p + 16);
                memcpy(wal.p + WAL_HDR + 8, wal.p + 16, 8);
                put32(wal.p + WAL_HDR + 4, flip_pages(k)); /* a commit */
                put32(page + 28, flip_pages(k));
                put32(page + 36, k);
                reseal(&wal, 4096, be, 1);
                if (pwrite(wal_fd, wal.p, wal.len, 0) != (ssize_t)wal.len)
                        _exit(4);
                flip_header(&shm, k, 1, &wal);
                if (pwrite(shm_fd, shm.p, 96, 0) != 96)
                        _exit(4);
                if (pwrite(db_fd, page, 100, 0) != 100) /* the checkpoint */
                        _exit(4);
                flip_header(&shm, k, 0, &wal);
                if (pwrite(shm_fd, shm.p, 96, 0) != 96)
                        _exit(4);
        }
        _exit(0);
}

static void test_shm_moving_header(void)
{
        unsigned long reads = 0, ok = 0, again = 0, stale = 0, bad = 0;
        struct walread w;
        struct peer p;
        struct seen s;
        int say[2], status;
        pid_t pid;
        char c;

        p = peer_new_db("moving", 4096, "NONE", &s);
        s = peer_fill(&p, 1, 100, 1500);
        snapshot("moving", "moving-x");
        {
                struct buf shm = load("moving", "-shm");

                store("moving-x", "-shm", &shm);
                free(shm.p);
        }
        peer_end(&p, false);
        if (pipe2(say, O_CLOEXEC) < 0)
                exit(2);
        fflush(NULL);
        pid = fork();
        if (pid < 0)
                exit(2);
        if (pid == 0) {
                close(say[0]);
                alarm(RACE_TIME_LIMIT);
                flipper("moving-x", say[1]);
        }
        close(say[1]);
        if (read(say[0], &c, 1) != 1)
                exit(2);
        fcntl(say[0], F_SETFL, O_NONBLOCK);
        alarm(RACE_TIME_LIMIT);
        while (read(say[0], &c, 1) != 0) { /* 0: EOF, the flipper is done */
                int r = shm_read("moving-x", 4096, &w);

                reads++;
                if (r == -EAGAIN) {
                        again++;
                } else if (r == -ESTALE) {
                        stale++; /* the flipper exiting drops its lock before its pipe */
                } else if (r != 0) {
                        if (bad++ < 5)
                                fprintf(stderr, "moving header: walread_shm() = %d\n", r);
                } else {
                        ok++;
                        /* A flipped state, or the copy's own before the first. */
                        if ((w.page_count != flip_pages(get32(w.page1 + 36)) &&
                             (w.page_count != s.page_count || get32(w.page1 + 36) != s.freelist_count)) ||
                            get32(w.page1 + 28) != w.page_count) {
                                if (bad++ < 5)
                                        fprintf(stderr,
                                                "moving header: %u pages, page 1 of state %u (%u pages), %u frames,"
                                                " page 1 %s\n",
                                                w.page_count, get32(w.page1 + 36), get32(w.page1 + 28), w.frames,
                                                w.page1_in_wal ? "from the -wal" : "from the main file");
                        }
                }
        }
        alarm(0);
        close(say[0]);
        CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
        printf("moving header: %d states, %lu reads: %lu read figures, %lu -EAGAIN, %lu -ESTALE at the end,"
               " %lu wrong\n",
               FLIP_STATES, reads, ok, again, stale, bad);
        CHECK_MSG(bad == 0, "%lu reads mixed two states", bad);
        CHECK(ok > 0);
}

/* ---- a writer, a checkpointer and this reader at once ---------------------- */

#define RACE_TRANSACTIONS 4000
#define RACE_MIN_READS 5000

struct pair {
        int64_t page_count, freelist_count;
};

static int pair_cmp(const void *a, const void *b)
{
        const struct pair *x = a, *y = b;

        if (x->page_count != y->page_count)
                return x->page_count < y->page_count ? -1 : 1;
        return (x->freelist_count > y->freelist_count) - (x->freelist_count < y->freelist_count);
}

static void race_record(sqlite3 *db, int fd)
{
        char line[64];
        int n = snprintf(line, sizeof(line), "%lld %lld\n", (long long)query_int(db, "PRAGMA page_count", 0),
                         (long long)query_int(db, "PRAGMA freelist_count", 0));

        if (write(fd, line, (size_t)n) != n)
                _exit(5);
}

/* The writer: commits that move page_count and freelist_count both ways
 * (inserts and deletes of blobs of many sizes, incremental_vacuum), each
 * followed by the pair it now sees, written to pairs_fd; checkpoints of
 * every mode now and then. Says 'r' when the database is set up and 'd'
 * when done, and closes when its pipe from the parent ends. */
static void race_writer(const char *path, int pairs_fd, int say, int hear)
{
        sqlite3 *db;
        char c;

        if (sqlite3_open(path, &db) != SQLITE_OK)
                _exit(3);
        sqlite3_busy_timeout(db, 10000);
        exec(db, "PRAGMA page_size=1024; PRAGMA auto_vacuum=INCREMENTAL; PRAGMA journal_mode=WAL;"
                 " PRAGMA synchronous=OFF; PRAGMA wal_autocheckpoint=0;"
                 " CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB)");
        race_record(db, pairs_fd);
        if (write(say, "r", 1) != 1)
                _exit(5);
        srandom(20240501);
        for (int i = 1; i <= RACE_TRANSACTIONS; i++) {
                long op = random() % 10, k = 1 + random() % 6;

                if (op < 5)
                        exec(db,
                             "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < %ld)"
                             " INSERT INTO t(b) SELECT randomblob(%ld) FROM n",
                             k, 20 + random() % 9000);
                else if (op < 8)
                        exec(db, "DELETE FROM t WHERE id IN (SELECT id FROM t ORDER BY random() LIMIT %ld)", k);
                else if (op < 9)
                        exec(db, "PRAGMA incremental_vacuum(%ld)", 1 + random() % 40);
                else
                        exec(db, "UPDATE t SET b = randomblob(%ld) WHERE id = (SELECT max(id) FROM t)",
                             20 + random() % 9000);
                race_record(db, pairs_fd);
                if (i % 29 == 0)
                        exec(db, "PRAGMA wal_checkpoint(PASSIVE)");
                if (i % 97 == 0)
                        exec(db, "PRAGMA wal_checkpoint(RESTART)");
                if (i % 331 == 0)
                        exec(db, "PRAGMA wal_checkpoint(TRUNCATE)");
        }
        if (write(say, "d", 1) != 1)
                _exit(5);
        while (read(hear, &c, 1) == 1)
                ;
        _exit(sqlite3_close(db) == SQLITE_OK ? 0 : 4);
}

/* The second process: checkpoints of every mode, a few milliseconds
 * apart, until its pipe from the parent ends. BUSY is what a checkpoint
 * that meets a writer says: not counted. */
static void race_checkpointer(const char *path, int hear)
{
        static const char *const modes[] = { "PASSIVE", "RESTART", "PASSIVE", "TRUNCATE" };
        sqlite3 *db;
        char c, sql[64];

        if (sqlite3_open(path, &db) != SQLITE_OK)
                _exit(3);
        sqlite3_busy_timeout(db, 20);
        fcntl(hear, F_SETFL, O_NONBLOCK);
        for (unsigned i = 0; read(hear, &c, 1) < 0 && errno == EAGAIN; i++) {
                snprintf(sql, sizeof(sql), "PRAGMA wal_checkpoint(%s)", modes[i % 4]);
                sqlite3_exec(db, sql, NULL, NULL, NULL);
                usleep(1000 + (i % 7) * 1000);
        }
        _exit(sqlite3_close(db) == SQLITE_OK ? 0 : 4);
}

/* The race's pipes and files; each child closes the ends it does not
 * use, or it would never see the end of the one it waits on. */
struct race_fds {
        int pairs;              /* the writer's pairs file */
        int say[2];             /* writer -> parent: 'r', 'd' */
        int hear_w[2];          /* parent -> writer: its end is "close now" */
        int hear_c[2];          /* parent -> checkpointer: the same */
};

static pid_t race_spawn(bool writer, const char *path, const struct race_fds *f)
{
        pid_t pid;

        fflush(NULL);
        pid = fork();
        if (pid < 0)
                exit(2);
        if (pid == 0) {
                alarm(RACE_TIME_LIMIT);
                close(f->say[0]);
                close(f->hear_w[1]);
                close(f->hear_c[1]);
                if (writer) {
                        close(f->hear_c[0]);
                        race_writer(path, f->pairs, f->say[1], f->hear_w[0]);
                }
                close(f->pairs);
                close(f->say[1]);
                close(f->hear_w[0]);
                race_checkpointer(path, f->hear_c[0]);
        }
        return pid;
}

static double now_s(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void test_shm_race(void)
{
        const char *name = "race";
        char path[PATH_LEN], pairs_path[PATH_LEN], c;
        struct race_fds fds;
        int status;
        size_t n_pairs = 0, n_got = 0, cap = 1024, bad = 0;
        unsigned long reads = 0, ok = 0, again = 0, stale = 0, other = 0;
        uint32_t max_frames = 0, in_wal = 0;
        struct pair *pairs, *got;
        pid_t writer, ckpt;
        bool done = false;
        double t0 = now_s();
        struct walread w;
        FILE *f;
        long long a, b;

        remove_db(name);
        path_of(path, name, "");
        snprintf(pairs_path, sizeof(pairs_path), "%s/race.pairs", dir);
        fds.pairs = open(pairs_path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
        if (fds.pairs < 0 || pipe2(fds.say, O_CLOEXEC) < 0 || pipe2(fds.hear_w, O_CLOEXEC) < 0 ||
            pipe2(fds.hear_c, O_CLOEXEC) < 0)
                exit(2);
        writer = race_spawn(true, path, &fds);
        if (read(fds.say[0], &c, 1) != 1 || c != 'r')
                exit(2);
        ckpt = race_spawn(false, path, &fds);
        close(fds.pairs);
        close(fds.say[1]);
        close(fds.hear_w[0]);
        close(fds.hear_c[0]);
        fcntl(fds.say[0], F_SETFL, O_NONBLOCK);

        got = malloc(cap * sizeof(*got));
        if (!got)
                exit(2);
        alarm(RACE_TIME_LIMIT);
        while (!done || reads < RACE_MIN_READS) {
                int r = shm_read(name, 1024, &w);

                reads++;
                if (r == 0) {
                        ok++;
                        if (n_got == cap && !(got = realloc(got, (cap *= 2) * sizeof(*got))))
                                exit(2);
                        got[n_got++] = (struct pair){ w.page_count, get32(w.page1 + 36) };
                        if (get32(w.page1 + 28) != w.page_count)
                                bad++;
                        max_frames = w.frames > max_frames ? w.frames : max_frames;
                        in_wal += w.page1_in_wal;
                } else if (r == -EAGAIN) {
                        again++;
                } else if (r == -ESTALE) {
                        stale++;
                } else {
                        other++;
                }
                if (!done && read(fds.say[0], &c, 1) == 1)
                        done = true;
        }
        /* Quiet now: the last read is the last commit. */
        CHECK(shm_read(name, 1024, &w) == 0);
        close(fds.hear_c[1]);
        CHECK(waitpid(ckpt, &status, 0) == ckpt && WIFEXITED(status) && WEXITSTATUS(status) == 0);
        close(fds.hear_w[1]);
        CHECK(waitpid(writer, &status, 0) == writer && WIFEXITED(status) && WEXITSTATUS(status) == 0);
        alarm(0);
        close(fds.say[0]);

        pairs = malloc((RACE_TRANSACTIONS + 1) * sizeof(*pairs));
        f = fopen(pairs_path, "r");
        if (!pairs || !f)
                exit(2);
        while (n_pairs <= RACE_TRANSACTIONS && fscanf(f, "%lld %lld", &a, &b) == 2)
                pairs[n_pairs++] = (struct pair){ a, b };
        fclose(f);
        CHECK(n_pairs == RACE_TRANSACTIONS + 1);
        CHECK(n_pairs > 0 && w.page_count == pairs[n_pairs - 1].page_count &&
              get32(w.page1 + 36) == pairs[n_pairs - 1].freelist_count);
        qsort(pairs, n_pairs, sizeof(*pairs), pair_cmp);
        for (size_t i = 0; i < n_got; i++)
                if (!bsearch(&got[i], pairs, n_pairs, sizeof(*pairs), pair_cmp)) {
                        if (bad++ < 5)
                                fprintf(stderr, "race: read page_count %lld freelist_count %lld, never committed\n",
                                        (long long)got[i].page_count, (long long)got[i].freelist_count);
                }
        printf("race: %d commits, %lu reads: %lu read figures, %lu -EAGAIN, %lu -ESTALE, %lu other;"
               " page 1 from the -wal %u times, up to %u frames; %.1f s\n",
               RACE_TRANSACTIONS, reads, ok, again, stale, other, in_wal, max_frames, now_s() - t0);
        CHECK_MSG(bad == 0, "%zu reads gave figures no commit had", bad);
        CHECK(ok >= 1 && stale == 0 && other == 0);
        free(pairs);
        free(got);
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
        test_shm_agreement();
        test_shm_auto_vacuum();
        test_shm_padded_commits();
        test_shm_many_frames();
        test_shm_crafted();
        test_shm_stale();
        test_shm_moving_header();
        test_shm_race();
        {
                char cmd[300];

                snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
                if (system(cmd) != 0)
                        fprintf(stderr, "could not remove %s\n", dir);
        }
        return test_summary();
}
