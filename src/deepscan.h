/* SPDX-License-Identifier: MIT */
/* deepscan: how full the pages of each b-tree are and how they lie in the
 * file, read page by page through SQLite's dbstat virtual table
 * (dbstat.html), with the rules of sqlite3_analyzer (SQLite's
 * tool/spaceanal.tcl), so that both tools give the same figures:
 *
 * - unused bytes: dbstat's "unused" summed over a b-tree's interior, leaf
 *   and overflow pages; its share is of the b-tree's pages x page size
 *   ("Unused bytes on all pages");
 * - non-sequential pages: with a b-tree's pages in page-number order, the
 *   leaf pages whose number is not one more than the page before them;
 *   its share is of the b-tree's pages minus one ("Non-sequential pages").
 *
 * The freelist (dbstat.h) is not part of either: these are the space a
 * freelist-only measure does not see, inside pages still in use. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sqlite3.h>

/* One b-tree: a table, an index, or the schema table (sqlite_schema). */
struct btree_space {
        char *name;
        char *table;               /* the table an index belongs to; a table's own name */
        bool is_index;
        uint64_t interior_pages, leaf_pages, overflow_pages;
        uint64_t unused_bytes;     /* interior + leaf + overflow */
        uint64_t nonsequential_pages;
        uint64_t leaf_cells;       /* the cells of its leaf pages (rows of a table, entries of an index) */
        uint64_t leaf_cell_bytes;  /* what they take there, each with its 2-byte cell pointer */
        uint64_t leaf_largest_sum; /* over its leaf pages: the largest cell's payload on the page, at most
                                    * what a table leaf keeps in the page (U - 35, fileformat2.html) */
};

struct deep_stats {
        uint32_t page_size;
        uint64_t page_count;       /* PRAGMA page_count, in the scan's own read transaction */
        uint64_t freelist_count;
        uint64_t btree_pages;      /* all b-trees' pages */
        uint64_t unused_bytes;     /* all b-trees' unused bytes */
        uint64_t nonsequential_pages;
        bool nonsequential_known;  /* false when the page map did not fit in memory */
        /* what a VACUUM could give back: the freelist, and each b-tree's
         * leaf pages beyond those its cells fill when packed (whole cells
         * to a page: SQLite never splits a cell between two; a VACUUM
         * appends them in order, so each leaf takes as many as fit), with
         * its interior pages in proportion; overflow pages stay */
        uint64_t reclaimable_bytes;
        struct btree_space *btrees;
        size_t n_btrees;
        /* deepscan_run's SQLITE_CORRUPT: the page dbstat could not decode
         * (its pagetype "corrupted") and the b-tree it belongs to */
        uint64_t corrupt_page;
        char corrupt_btree[128];
};

/* Scan main of db in one read transaction (db must have none open): every
 * page of every b-tree through dbstat; a page dbstat cannot decode is
 * SQLITE_CORRUPT (ds->corrupt_page says which). Memory: the b-tree list, and 4
 * bytes per page of the file for the page map (a 1 GiB file of 4 KiB
 * pages: 1 MiB). Interruptible with sqlite3_interrupt() (SQLITE_INTERRUPT).
 * Returns an SQLite result code; on SQLITE_OK *ds is filled (free with
 * deep_stats_clear), else zeroed. */
int deepscan_run(sqlite3 *db, struct deep_stats *ds);
void deep_stats_clear(struct deep_stats *ds);

/* unused_bytes over (pages x page_size), in percent; 0 when there are no pages. */
double deep_unused_percent(uint64_t unused_bytes, uint64_t pages, uint32_t page_size);
/* nonsequential over (pages - 1), in percent; 0 when pages < 2. The total
 * of a database is this over the sum of its b-trees' (pages - 1). */
double deep_nonsequential_percent(uint64_t nonsequential, uint64_t pages);
double deep_total_nonsequential_percent(const struct deep_stats *ds);
