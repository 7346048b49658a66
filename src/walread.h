/* SPDX-License-Identifier: MIT */
/* walread: a database's size and page 1 as of the last commit in its -wal,
 * read from the files with pread() alone: no SQLite, no lock, no write.
 * The format and its validation are SQLite's (fileformat2.html, "The
 * Write-Ahead Log"; walformat.html; wal.c walIndexRecover()). */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#define WALREAD_PAGE1_BYTES 100 /* the database header, the start of page 1 */

struct walread {
        uint32_t page_size;      /* from the WAL header */
        uint32_t frames;         /* valid frames up to and including the last commit (SQLite's mxFrame) */
        uint32_t page_count;     /* the database size in pages after that commit (its nTruncate); 0: no commit */
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
