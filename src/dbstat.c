/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dbstat.h"
#include "util.h"
#include "walread.h"

static uint32_t be16(const unsigned char *p) { return (uint32_t)p[0] << 8 | p[1]; }
static uint32_t be32(const unsigned char *p)
{
        return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

double dbstat_fragmentation(uint64_t freelist_count, uint64_t page_count)
{
        if (page_count == 0)
                return 0.0;
        if (freelist_count > page_count) /* only a corrupt header says so */
                freelist_count = page_count;
        return round((double)freelist_count * 10000.0 / (double)page_count) / 100.0;
}

const char *dbstat_auto_vacuum_name(enum auto_vacuum a)
{
        switch (a) {
        case AUTO_VACUUM_FULL: return "full";
        case AUTO_VACUUM_INCREMENTAL: return "incremental";
        default: return "none";
        }
}

int dbstat_parse_header(const unsigned char h[DBSTAT_HEADER_SIZE], struct dbheader *ret)
{
        uint32_t ps;

        if (memcmp(h, "SQLite format 3", 16) != 0)
                return -EINVAL;
        ps = be16(h + 16);
        if (ps == 1)
                ps = 65536;
        if (ps < 512 || ps > 65536 || (ps & (ps - 1)) != 0)
                return -EINVAL;
        *ret = (struct dbheader){
                .page_size = ps,
                .wal = h[18] == 2 && h[19] == 2,
                .change_counter = be32(h + 24),
                .page_count = be32(h + 28),
                .schema_cookie = be32(h + 40),
                .freelist_count = be32(h + 36),
                .largest_root = be32(h + 52),
                .incremental = be32(h + 64),
                .version_valid_for = be32(h + 92),
        };
        return 0;
}

/* Size of path+suffix (in dirfd, or AT_FDCWD), 0 when absent; -errno on
 * other errors. found (NULL: not wanted) records whether it is there. */
static int64_t side_file_size_at(int dirfd, const char *path, const char *suffix, enum side_file *found)
{
        char p[4096 + 16];
        struct stat st;

        if ((size_t)snprintf(p, sizeof(p), "%s%s", path, suffix) >= sizeof(p))
                return -ENAMETOOLONG;
        if (fstatat(dirfd, p, &st, AT_SYMLINK_NOFOLLOW) < 0) {
                if (errno != ENOENT)
                        return -errno;
                if (found)
                        *found = SIDE_ABSENT;
                return 0;
        }
        if (found)
                *found = SIDE_PRESENT;
        return (int64_t)st.st_size;
}

static int64_t side_file_size(const char *path, const char *suffix)
{
        return side_file_size_at(AT_FDCWD, path, suffix, NULL);
}

/* A file that is not a regular one, as open_raw_at() refuses it. */
static int not_regular(mode_t mode)
{
        return S_ISLNK(mode) ? -ELOOP : S_ISDIR(mode) ? -EISDIR : -EINVAL;
}

static void fill_derived(struct dbstat *st)
{
        st->fragmentation_percent = dbstat_fragmentation(st->freelist_count, st->page_count);
        st->estimated_wasted_space_bytes = st->freelist_count * st->page_size;
}

/* Open a file for a raw read: never following a symbolic link, never
 * blocking on a FIFO, leaving no access time where that is allowed. */
static int open_raw_at(int dirfd, const char *path, struct stat *st)
{
        int fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOATIME);

        if (fd < 0 && errno == EPERM)
                fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
        if (fd < 0)
                return -errno;
        if (fstat(fd, st) < 0) {
                int e = -errno;

                close(fd);
                return e;
        }
        if (!S_ISREG(st->st_mode)) {
                close(fd);
                return not_regular(st->st_mode);
        }
        return fd;
}

static int open_raw(const char *path, struct stat *st)
{
        return open_raw_at(AT_FDCWD, path, st);
}

/* The database size in pages by the header's own rule (fileformat2.html,
 * "In-header database size"): the in-header count when it is non-zero and
 * the change counter equals version-valid-for, else the file size over the
 * page size. */
static uint64_t dbstat_header_page_count(const struct dbheader *h, uint64_t file_size)
{
        if (h->page_count != 0 && h->change_counter == h->version_valid_for)
                return h->page_count;
        return file_size / h->page_size;
}

static enum auto_vacuum header_auto_vacuum(const struct dbheader *h)
{
        return h->largest_root == 0 ? AUTO_VACUUM_NONE : h->incremental ? AUTO_VACUUM_INCREMENTAL : AUTO_VACUUM_FULL;
}

int dbstat_read_header(const char *path, struct dbstat *st)
{
        return dbstat_read_header_at(AT_FDCWD, path, st);
}

/* The header of fd. No lock guards a raw read, so a read may meet a
 * write of page 1 half done. In a rollback database every commit writes a
 * new change counter (offset 24) and the same value as version-valid-for
 * (offset 92) in that one write (fileformat2.html, "File change counter",
 * "In-header database size"): a read torn anywhere between them shows them
 * different, and header_believable() refuses it; the bytes before 24 and
 * after 96 never change. A WAL database's header is written by checkpoints,
 * which need not move the counter: read twice, the same bytes. Returns 0,
 * -EAGAIN when it moved or was cut short, -EINVAL when it is not a
 * database's. */
static int read_stable_header(int fd, struct dbheader *h)
{
        unsigned char a[DBSTAT_HEADER_SIZE], b[DBSTAT_HEADER_SIZE];
        ssize_t n1, n2;

        n1 = pread(fd, a, sizeof(a), 0);
        if (n1 < 0)
                return -errno;
        if (n1 < (ssize_t)sizeof(a)) {
                /* Cut short: a truncated database is SQLite's to judge
                 * (SQLITE_CORRUPT), anything else is not a database. */
                return n1 >= 16 && memcmp(a, "SQLite format 3", 16) == 0 ? -EAGAIN : -EINVAL;
        }
        if (dbstat_parse_header(a, h) < 0)
                return -EINVAL; /* not a database */
        if (!h->wal)
                return 0;
        n2 = pread(fd, b, sizeof(b), 0);
        if (n2 < 0)
                return -errno;
        if (n2 != n1 || memcmp(a, b, sizeof(a)) != 0)
                return -EAGAIN;
        return 0;
}

/* When the header can be believed, see SQLITE-NOTES.md: the in-header
 * page count is valid only if non-zero and the change counter equals
 * version-valid-for; a WAL database's header is stale while its -wal
 * holds frames; a rollback database with a live journal is mid-write. */
static bool header_believable(const struct dbheader *h, int64_t wal, int64_t journal, off_t file_size)
{
        if (wal != 0 || journal != 0)
                return false;
        if (h->page_count == 0 || h->change_counter != h->version_valid_for)
                return false;
        if ((uint64_t)h->page_count * h->page_size != (uint64_t)file_size)
                return false;
        return h->freelist_count <= h->page_count;
}

int dbstat_open_at(int dirfd, const char *name, struct stat *st)
{
        return open_raw_at(dirfd, name, st);
}

/* A side file's size by what the caller knows: 0 when known absent, else
 * side_file_size_at(), which *known then records. */
static int64_t side_size(int dirfd, const char *name, const char *suffix, enum side_file *known)
{
        return *known == SIDE_ABSENT ? 0 : side_file_size_at(dirfd, name, suffix, known);
}

int dbstat_read_header_fd(int fd, const struct stat *s, int dirfd, const char *path,
                          struct dbstat_sides *sides, struct dbstat *st)
{
        struct dbstat_sides none = { SIDE_UNKNOWN, SIDE_UNKNOWN };
        struct dbheader h;
        int64_t wal, journal;
        int r;

        if (!sides)
                sides = &none;
        *st = (struct dbstat){ .file_size_bytes = (uint64_t)s->st_size, .from_header = true };
        if (s->st_size == 0) {
                /* An empty file is an empty database to SQLite. */
                st->page_size = 4096;
                util_strlcpy(st->journal_mode, "delete", sizeof(st->journal_mode));
                return side_size(dirfd, path, DBSTAT_SUFFIX_WAL, &sides->wal) > 0 ||
                       side_size(dirfd, path, DBSTAT_SUFFIX_JOURNAL, &sides->journal) > 0 ? -EAGAIN : 0;
        }
        r = read_stable_header(fd, &h);
        if (r < 0)
                return r;
        st->page_size = h.page_size;
        st->auto_vacuum = header_auto_vacuum(&h);
        st->schema_cookie = h.schema_cookie;
        util_strlcpy(st->journal_mode, h.wal ? "wal" : "delete", sizeof(st->journal_mode));
        wal = side_size(dirfd, path, DBSTAT_SUFFIX_WAL, &sides->wal);
        journal = side_size(dirfd, path, DBSTAT_SUFFIX_JOURNAL, &sides->journal);
        st->wal_size_bytes = wal > 0 ? (uint64_t)wal : 0;
        if (!header_believable(&h, wal, journal, s->st_size))
                return -EAGAIN;
        st->page_count = h.page_count;
        st->freelist_count = h.freelist_count;
        fill_derived(st);
        return 0;
}

int dbstat_read_header_at(int dirfd, const char *path, struct dbstat *st)
{
        struct stat s;
        int fd, r;

        /* O_NOFOLLOW as the SQLite open uses SQLITE_OPEN_NOFOLLOW; O_NONBLOCK
         * so a FIFO named like a database cannot hang the loop (it is then
         * refused as not a regular file). */
        fd = open_raw_at(dirfd, path, &s);
        if (fd < 0)
                return fd;
        r = dbstat_read_header_fd(fd, &s, dirfd, path, NULL, st);
        close(fd);
        return r;
}

/* Whether a side file may be opened by this process (root, in the daemon)
 * for its database owned by uid: a regular file with one link, the
 * database owner's. A hard link in a tenant's directory may name a file of
 * root's (jobproc.c check_files(), which refuses the job loudly: the
 * caller falls back to one). */
static bool side_file_ours(const struct stat *st, uid_t uid)
{
        return S_ISREG(st->st_mode) && st->st_nlink == 1 && st->st_uid == uid;
}

/* name+suffix in dirfd opened for a raw read, looked at first without
 * opening it (side_file_ours()), and again once open (the same file):
 * the descriptor, -EPERM when it is not the database owner's own, or
 * -errno. */
static int open_side_at(int dirfd, const char *name, const char *suffix, uid_t uid, struct stat *st)
{
        char p[4096 + 16];
        struct stat before;
        int fd;

        if ((size_t)snprintf(p, sizeof(p), "%s%s", name, suffix) >= sizeof(p))
                return -ENAMETOOLONG;
        if (fstatat(dirfd, p, &before, AT_SYMLINK_NOFOLLOW) < 0)
                return -errno;
        if (!S_ISREG(before.st_mode))
                return not_regular(before.st_mode);
        if (!side_file_ours(&before, uid))
                return -EPERM;
        fd = open_raw_at(dirfd, p, st);
        if (fd >= 0 && (!side_file_ours(st, uid) || st->st_dev != before.st_dev || st->st_ino != before.st_ino)) {
                close(fd);
                return -EPERM;
        }
        return fd;
}

/* st from the main file's header (h, its size s) and what the -wal says (w). */
static int wal_figures(const struct dbheader *h, const struct stat *s, const struct stat *ws, const struct walread *w,
                       bool index, struct dbstat *st)
{
        struct dbheader h1;

        if (dbstat_parse_header(w->page1, &h1) < 0 || h1.page_size != h->page_size)
                return -EAGAIN;
        *st = (struct dbstat){
                .page_size = h->page_size,
                .page_count = index || w->frames ? w->page_count : dbstat_header_page_count(h, (uint64_t)s->st_size),
                .freelist_count = h1.freelist_count,
                .file_size_bytes = (uint64_t)s->st_size,
                .wal_size_bytes = (uint64_t)ws->st_size,
                .auto_vacuum = header_auto_vacuum(&h1),
                .schema_cookie = h1.schema_cookie,
        };
        util_strlcpy(st->journal_mode, "wal", sizeof(st->journal_mode));
        if (st->freelist_count > st->page_count)
                return -EAGAIN;
        fill_derived(st);
        return 0;
}

/* The -wal open as wfd scanned whole (walread_scan()), the main file
 * open as fd giving page 1 when the log does not. */
static int scan_wal(int fd, int wfd, const struct dbheader *h, const struct stat *s, const struct stat *ws,
                    struct dbstat *st)
{
        struct walread w;
        int r = walread_scan(wfd, h->page_size, &w);

        if (r < 0)
                return r == -EPROTO ? -EAGAIN : r;
        if (!w.page1_in_wal && pread(fd, w.page1, sizeof(w.page1), 0) != (ssize_t)sizeof(w.page1))
                return -EAGAIN; /* cut short: SQLite's to judge */
        return wal_figures(h, s, ws, &w, false, st);
}

int dbstat_read_wal_index(int fd, const struct stat *s, int dirfd, const char *name, struct dbstat *st)
{
        struct stat ws, ss;
        struct dbheader h;
        struct walread w;
        int wfd, sfd = -1, r;

        r = read_stable_header(fd, &h);
        if (r < 0)
                return r;
        /* gone meanwhile (checkpointed away), or not the owner's own: a job tells */
        wfd = open_side_at(dirfd, name, DBSTAT_SUFFIX_WAL, s->st_uid, &ws);
        if (wfd < 0)
                return wfd == -ENOENT || wfd == -EPERM ? -EAGAIN : wfd;
        sfd = open_side_at(dirfd, name, DBSTAT_SUFFIX_SHM, s->st_uid, &ss);
        if (sfd == -EPERM) {
                close(wfd);
                return -EAGAIN;
        }
        r = sfd < 0 ? -ESTALE : walread_shm(fd, wfd, sfd, h.page_size, &w);
        if (r == 0) {
                r = wal_figures(&h, s, &ws, &w, true, st);
        } else if (r == -ESTALE && ws.st_size <= DBSTAT_WAL_SCAN_MAX) {
                /* no connection: the -wal is what SQLite would recover from */
                r = scan_wal(fd, wfd, &h, s, &ws, st);
        } else if (r == -ESTALE || r == -EINVAL) {
                r = -EAGAIN;
        }
        if (sfd >= 0)
                close(sfd);
        close(wfd);
        return r;
}

int dbstat_read_wal(const char *path, struct dbstat *st)
{
        struct stat s, ws;
        struct dbheader h;
        int fd, wfd = -1, r;

        fd = open_raw(path, &s);
        if (fd < 0)
                return fd;
        r = read_stable_header(fd, &h);
        if (r == 0) {
                wfd = open_side_at(AT_FDCWD, path, DBSTAT_SUFFIX_WAL, s.st_uid, &ws);
                /* gone meanwhile: look again */
                r = wfd < 0 ? (wfd == -ENOENT ? -EAGAIN : wfd) : scan_wal(fd, wfd, &h, &s, &ws, st);
        }
        if (wfd >= 0)
                close(wfd);
        close(fd);
        return r;
}

int dbstat_read_db(sqlite3 *db, const char *path, struct dbstat *st)
{
        sqlite3_stmt *s;
        int64_t wal, av;
        struct stat sb;
        int rc;

        *st = (struct dbstat){ 0 };
        /* One statement is one read transaction: the figures belong to one
         * snapshot, and a failure leaves SQLite's own error text in place. */
        rc = sqlite3_prepare_v2(db,
                                "SELECT * FROM pragma_page_count(), pragma_freelist_count(), pragma_page_size(),"
                                " pragma_auto_vacuum(), pragma_journal_mode(), pragma_schema_version()", -1, &s, NULL);
        if (rc != SQLITE_OK)
                return rc;
        rc = sqlite3_step(s);
        if (rc != SQLITE_ROW) {
                sqlite3_finalize(s);
                return rc == SQLITE_DONE ? SQLITE_ERROR : rc;
        }
        st->page_count = (uint64_t)sqlite3_column_int64(s, 0);
        st->freelist_count = (uint64_t)sqlite3_column_int64(s, 1);
        st->page_size = (uint32_t)sqlite3_column_int64(s, 2);
        av = sqlite3_column_int64(s, 3);
        util_strlcpy(st->journal_mode, (const char *)sqlite3_column_text(s, 4), sizeof(st->journal_mode));
        st->schema_cookie = (uint32_t)sqlite3_column_int64(s, 5);
        sqlite3_finalize(s);

        st->auto_vacuum = av == 1 ? AUTO_VACUUM_FULL : av == 2 ? AUTO_VACUUM_INCREMENTAL : AUTO_VACUUM_NONE;
        if (stat(path, &sb) == 0)
                st->file_size_bytes = (uint64_t)sb.st_size;
        wal = side_file_size(path, DBSTAT_SUFFIX_WAL);
        st->wal_size_bytes = wal > 0 ? (uint64_t)wal : 0;
        fill_derived(st);
        return SQLITE_OK;
}
