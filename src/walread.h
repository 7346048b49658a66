/* SPDX-License-Identifier: MIT */
/* walread: a database's size and page 1 as of the last commit in its -wal,
 * read from the files with pread() alone: no SQLite, no lock, no write.
 * The format and its validation are SQLite's (fileformat2.html, "The
 * Write-Ahead Log"; walformat.html; wal.c walIndexRecover(),
 * walIndexTryHdr(); os_unix.c unixLockSharedMemory()). */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#define WALREAD_PAGE1_BYTES 100 /* the database header, the start of page 1 */

struct walread {
        uint32_t page_size;      /* from the WAL header */
        uint32_t frames;         /* valid frames up to and including the last commit (SQLite's mxFrame) */
        uint32_t page_count;     /* the database size in pages after that commit (its nTruncate); 0: no commit
                                  * (walread_scan(); walread_shm() gives the main file's size then) */
        bool page1_in_wal;       /* page1 holds the newest image of page 1 found in those frames */
        unsigned char page1[WALREAD_PAGE1_BYTES];
};

/* Scan the -wal open at wal_fd the way SQLite's recovery does: the header
 * must have a known magic, version 3007000, a valid page size and its own
 * checksum; frames count while their salts match the header and their
 * cumulative checksums hold; the last frame with a commit size ends the
 * log. Returns 0 with ret filled (frames == 0 when the -wal holds no
 * committed transaction, e.g. it is empty, a header only, or was reset),
 * -EPROTO when a valid header names a version other than 3007000 or a page
 * size other than page_size (the main file's): only SQLite can tell then;
 * or -errno when the file cannot be read, -ENOMEM. Reads the whole -wal:
 * O(its size). */
int walread_scan(int wal_fd, uint32_t page_size, struct walread *ret);

/* The same figures as of the last commit, from the wal-index (the -shm
 * open at shm_fd) with a few pread()s: its 96-byte header twice, its page
 * numbers (4 bytes a frame) from mxFrame down to the newest frame of page
 * 1; of the -wal (wal_fd) its header, frame mxFrame's header and page 1's
 * frame up to 124 bytes; else the main file's (db_fd) first 100 bytes.
 * Takes no lock, writes nothing, maps nothing (a file that shrinks would
 * SIGBUS). page_size: the main file's, in bytes (its header's offset 16).
 *
 * ret on 0: frames = the header's mxFrame (0: SQLite reads nothing from
 * the -wal); page_count = its nPage, in pages, or when that is 0 the main
 * file's size in pages rounded up (pager.c pagerPagecount()), so never 0
 * unlike walread_scan()'s; page1 = the newest image of page 1 in frames
 * 1..mxFrame, else the main file's (page1_in_wal says which).
 *
 * Trust (os_unix.c unixLockSharedMemory()): the -shm describes the log
 * only while a connection has it open, and each holds a read lock on its
 * byte 128 (UNIX_SHM_DMS) meanwhile; the first to open it holds the byte
 * exclusively while it truncates the file to 3 bytes, and rebuilds the
 * index after. A left-over -shm (its last connection crashed, or closed
 * read-only or with SQLITE_FCNTL_PERSIST_WAL: walformat.html 1.4) keeps a
 * valid-looking header that may name frames since rewritten. So the byte
 * is asked about with F_GETLK (a query: it takes no lock) before and after
 * the reads. POSIX locks are per process: the caller must not have this
 * database open through SQLite (F_GETLK does not report its own process's
 * locks, and its close() of any descriptor of the -shm drops them).
 *
 * Validation is SQLite's (wal.c walIndexTryHdr(), walIndexRecover(),
 * walFrames()): both copies of the 48-byte header byte-identical, isInit
 * set, the checksum of its first 40 bytes (host byte order) right,
 * iVersion 3007000; when mxFrame > 0 also its page size (szPage, 1 for
 * 65536) equal to page_size, the -wal header's magic, version, page size
 * and checksum valid and its salts the index's, the -wal long enough for
 * mxFrame frames, frame mxFrame a commit of nPage pages with the index's
 * salts and last-frame checksum, no page number 0 among the entries read
 * (an index being rebuilt), page 1's frame numbered 1 with the index's
 * salts; and after all that, the header read again unchanged (else a
 * commit, a reset or a rebuild came meanwhile: up to 3 tries). With
 * mxFrame 0 the -wal is not read (a TRUNCATE checkpoint empties it; a
 * reset leaves the old log's header in it until the next frame) and
 * szPage may be 0 (a recovery that found no commit).
 *
 * Returns 0 with ret filled; -ESTALE when no other process holds a lock on
 * the DMS byte: nothing keeps the -shm current (use walread_scan());
 * -EAGAIN when the byte is held exclusively (a first connection is
 * rebuilding the index), or a check failed, or the header changed under
 * each try: only SQLite can tell now; -EINVAL when page_size is not a
 * power of two in 512..65536; -ENOMEM; -errno when a file cannot be read
 * (-EBADF for a wal_fd of -1 when mxFrame > 0). ret is written only on 0.
 * Cost: O(frames above page 1's newest): 16 KiB per pread() at most. */
int walread_shm(int db_fd, int wal_fd, int shm_fd, uint32_t page_size, struct walread *ret);
