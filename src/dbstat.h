/* SPDX-License-Identifier: MIT */
/* dbstat: fragmentation statistics of one database, cheaply from its header
 * or precisely through SQLite. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <sys/stat.h>

#include <sqlite3.h>

#define DBSTAT_HEADER_SIZE 100

/* The files SQLite keeps beside a database, named by a suffix on its name:
 * the rollback journal, the write-ahead log and its wal-index
 * (fileformat2.html, "The Rollback Journal", "The Write-Ahead Log" and
 * "WAL-Index Format"; wal.html). dbstat_side_suffixes is all three, in
 * that order. */
#define DBSTAT_SUFFIX_JOURNAL "-journal"
#define DBSTAT_SUFFIX_WAL "-wal"
#define DBSTAT_SUFFIX_SHM "-shm"
static const char *const dbstat_side_suffixes[] = { DBSTAT_SUFFIX_JOURNAL, DBSTAT_SUFFIX_WAL, DBSTAT_SUFFIX_SHM };

enum auto_vacuum {
        AUTO_VACUUM_NONE = 0,
        AUTO_VACUUM_FULL = 1,
        AUTO_VACUUM_INCREMENTAL = 2,
};

struct dbstat {
        uint32_t page_size;
        uint64_t page_count;
        uint64_t freelist_count;
        double fragmentation_percent; /* freelist / page_count * 100, 2 decimals */
        uint64_t file_size_bytes;
        uint64_t wal_size_bytes;      /* 0 when there is no -wal file */
        uint64_t estimated_wasted_space_bytes; /* freelist * page_size */
        char journal_mode[12];        /* "wal" or "delete" from the header; PRAGMA's word otherwise */
        enum auto_vacuum auto_vacuum;
        uint32_t schema_cookie;       /* header offset 40: changes with every schema change */
        bool from_header;             /* figures come from the cheap header read */
};

/* The parsed 100-byte header. */
struct dbheader {
        uint32_t page_size;
        bool wal;              /* file format read/write versions are 2 */
        uint32_t change_counter;
        uint32_t page_count;   /* in-header size, offset 28 */
        uint32_t freelist_count;
        uint32_t schema_cookie;
        uint32_t largest_root; /* non-zero: auto_vacuum full or incremental */
        uint32_t incremental;
        uint32_t version_valid_for;
};

/* Parse a header; returns 0, or -EINVAL when it is not an SQLite 3 header
 * with a sane page size. Exported for tests/unit/test-dbstat.c. */
int dbstat_parse_header(const unsigned char h[DBSTAT_HEADER_SIZE], struct dbheader *ret);

/* What the caller knows of a database's -wal and -journal (from a
 * directory listing, or inotify events since a watch was set up): each
 * known to be absent spares a stat. */
enum side_file {
        SIDE_UNKNOWN = 0,
        SIDE_ABSENT,
        SIDE_PRESENT,
};

struct dbstat_sides {
        enum side_file wal, journal;
};

/* The cheap read: one pread of the header (two, which must agree, for a
 * WAL database: read_stable_header() in dbstat.c says why), stat() of
 * the file and of its -wal and -journal. Returns 0 with st filled when the
 * header can be trusted (see SQLITE-NOTES: rollback mode without a live
 * journal, or WAL mode with an absent or empty -wal, and a valid in-header
 * page count matching the file size); -EAGAIN when only a precise read can
 * tell; another negative errno when the file cannot be read (-ENOENT, -EACCES,
 * -EINVAL for not a database, ...).
 * Never call it on a database this process has open: close() drops locks.
 * Only tests/unit/test-dbstat.c calls this form; the programs use
 * dbstat_read_header_at(). */
int dbstat_read_header(const char *path, struct dbstat *st);
/* The same for name in the directory open as dirfd: openat() with
 * O_NOFOLLOW | O_NONBLOCK, side files by fstatat(). */
int dbstat_read_header_at(int dirfd, const char *name, struct dbstat *st);

/* The two halves of dbstat_read_header_at(), for a caller that wants the
 * file's identity before it reads (one openat and one fstat, where a stat
 * first would resolve the path twice).
 *
 * dbstat_open_at(): name in dirfd opened for a raw read (O_RDONLY |
 * O_NOFOLLOW | O_NONBLOCK | O_NOATIME where allowed), *st its fstat. The
 * descriptor, or -ENOENT, -ELOOP (a symbolic link), -EISDIR, -EINVAL (not
 * a regular file), another -errno.
 * dbstat_read_header_fd(): the cheap read of that descriptor; the side
 * files of name in dirfd are looked at only where sides (NULL: nothing
 * known) does not say they are absent, and what a look finds is written
 * back into it. Returns as dbstat_read_header().
 * The caller closes fd. */
int dbstat_open_at(int dirfd, const char *name, struct stat *st);
int dbstat_read_header_fd(int fd, const struct stat *s, int dirfd, const char *name,
                          struct dbstat_sides *sides, struct dbstat *st);

/* Statistics of a WAL database from its files alone, as SQLite's recovery
 * would see them (walread.h): the size after the last commit in the -wal,
 * the freelist count from the newest image of page 1. No SQLite, no lock,
 * no write. Returns 0 with st filled, -EAGAIN when only SQLite can tell (a
 * -wal of another page size), or another negative errno. */
int dbstat_read_wal(const char *path, struct dbstat *st);

/* A WAL database whose -wal holds frames, from its wal-index: the -shm
 * and -wal of name in dirfd (openat, O_NOFOLLOW | O_NONBLOCK) and the main
 * file open as fd (its fstat s) read with walread_shm(), no SQLite, no
 * lock, no write. When no connection keeps the -shm current, a -wal of at
 * most DBSTAT_WAL_SCAN_MAX bytes is scanned whole (walread_scan(), as
 * SQLite's recovery would). Returns 0 with st filled (wal_size_bytes from
 * the -wal's fstat), or -EAGAIN when only SQLite can tell (the index
 * failed validation, changed under every try, the -wal is larger, or of
 * another page size), or -errno. Never call it on a database this process
 * has open through SQLite: closing a descriptor drops POSIX locks. */
#define DBSTAT_WAL_SCAN_MAX (1024 * 1024)
int dbstat_read_wal_index(int fd, const struct stat *s, int dirfd, const char *name, struct dbstat *st);

/* The precise read through an open connection: PRAGMA page_count,
 * freelist_count, page_size, journal_mode, auto_vacuum, schema_version;
 * file sizes by stat().
 * Returns an SQLite result code (SQLITE_OK on success). */
int dbstat_read_db(sqlite3 *db, const char *path, struct dbstat *st);

/* freelist / page_count * 100 rounded to two decimals; 0 when page_count is 0. */
double dbstat_fragmentation(uint64_t freelist_count, uint64_t page_count);

const char *dbstat_auto_vacuum_name(enum auto_vacuum a);
