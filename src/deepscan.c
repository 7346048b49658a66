/* SPDX-License-Identifier: MIT */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deepscan.h"
#include "util.h"

/* The page map (4 bytes a page) is given up above this many pages (a 512
 * GiB file of 4 KiB pages): the non-sequential figures are then unknown. */
#define MAP_MAX_PAGES (1u << 27)

/* fileformat2.html, "B-tree Pages": a leaf page's header; page 1 has the
 * database header before it. */
#define LEAF_HEADER_BYTES 8
#define DB_HEADER_BYTES 100

/* A page map entry: the b-tree's index + 1, shifted, and whether a leaf. */
#define MAP_LEAF 1u
#define MAP_OWNER(e) ((e) >> 1)

struct scan {
        struct deep_stats *ds;
        uint64_t corrupt_page;  /* the first page dbstat could not decode */
        char corrupt_btree[128];
        uint32_t *map;          /* page number -> entry; NULL: not kept */
        uint32_t *first_page;   /* per b-tree: its lowest page number */
        size_t cap;
};

static int pragma_u64(sqlite3 *db, const char *sql, uint64_t *out)
{
        sqlite3_stmt *s;
        int rc = sqlite3_prepare_v2(db, sql, -1, &s, NULL);

        if (rc != SQLITE_OK)
                return rc;
        rc = sqlite3_step(s);
        if (rc == SQLITE_ROW) {
                int64_t v = sqlite3_column_int64(s, 0);

                *out = v > 0 ? (uint64_t)v : 0;
                rc = SQLITE_OK;
        } else if (rc == SQLITE_DONE) {
                rc = SQLITE_ERROR;
        }
        sqlite3_finalize(s);
        return rc;
}

static int new_btree(struct scan *sc, const char *name)
{
        struct deep_stats *ds = sc->ds;

        if (ds->n_btrees == sc->cap) {
                size_t cap = sc->cap ? 2 * sc->cap : 64;
                struct btree_space *b = realloc(ds->btrees, cap * sizeof(*b));
                uint32_t *f;

                if (!b)
                        return SQLITE_NOMEM;
                ds->btrees = b;
                f = realloc(sc->first_page, cap * sizeof(*f));
                if (!f)
                        return SQLITE_NOMEM;
                sc->first_page = f;
                sc->cap = cap;
        }
        ds->btrees[ds->n_btrees] = (struct btree_space){ .name = strdup(name) };
        if (!ds->btrees[ds->n_btrees].name)
                return SQLITE_NOMEM;
        sc->first_page[ds->n_btrees] = UINT32_MAX;
        ds->n_btrees++;
        return SQLITE_OK;
}

/* Every page of every b-tree, as dbstat walks them: one b-tree after the
 * other, its pages in tree order (dbstat.c statNext). */
static int scan_pages(sqlite3 *db, struct scan *sc)
{
        struct deep_stats *ds = sc->ds;
        sqlite3_stmt *s;
        int rc = sqlite3_prepare_v2(db, "SELECT name, pagetype, pageno, unused, ncell, pgsize, mx_payload FROM dbstat", -1, &s, NULL);

        if (rc != SQLITE_OK)
                return rc;
        while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
                const char *name = (const char *)sqlite3_column_text(s, 0);
                const char *type = (const char *)sqlite3_column_text(s, 1);
                int64_t pageno = sqlite3_column_int64(s, 2), unused = sqlite3_column_int64(s, 3);
                struct btree_space *b;
                bool leaf;

                if (!name || !type)
                        continue;
                /* dbstat.c statDecodePage(): a page it cannot decode (a
                 * cell pointer out of the page, a bad header) is no error
                 * but a row of pagetype "corrupted" */
                if (strcmp(type, "corrupted") == 0) {
                        sc->corrupt_page = pageno > 0 ? (uint64_t)pageno : 0;
                        snprintf(sc->corrupt_btree, sizeof(sc->corrupt_btree), "%s", name);
                        rc = SQLITE_CORRUPT;
                        break;
                }
                if (ds->n_btrees == 0 || strcmp(ds->btrees[ds->n_btrees - 1].name, name) != 0) {
                        rc = new_btree(sc, name);
                        if (rc != SQLITE_OK)
                                break;
                }
                b = &ds->btrees[ds->n_btrees - 1];
                leaf = strcmp(type, "leaf") == 0;
                if (leaf) {
                        int64_t cells = sqlite3_column_int64(s, 4), size = sqlite3_column_int64(s, 5);
                        /* the leaf header: 8 bytes, after the database header on page 1 */
                        int64_t bytes = size - unused - LEAF_HEADER_BYTES - (pageno == 1 ? DB_HEADER_BYTES : 0);

                        b->leaf_pages++;
                        b->leaf_cells += cells > 0 ? (uint64_t)cells : 0;
                        int64_t largest = sqlite3_column_int64(s, 6), local = size - 35;

                        b->leaf_cell_bytes += bytes > 0 ? (uint64_t)bytes : 0;
                        /* a cell keeps at most U - 35 bytes of payload in the page */
                        largest = largest < local ? largest : local;
                        b->leaf_largest_sum += largest > 0 ? (uint64_t)largest : 0;
                } else if (strcmp(type, "internal") == 0) {
                        b->interior_pages++;
                } else {
                        b->overflow_pages++;
                }
                b->unused_bytes += unused > 0 ? (uint64_t)unused : 0;
                if (pageno > 0 && (uint64_t)pageno <= ds->page_count) {
                        if (sc->map)
                                sc->map[pageno] = (uint32_t)(ds->n_btrees << 1) | (leaf ? MAP_LEAF : 0);
                        if ((uint32_t)pageno < sc->first_page[ds->n_btrees - 1])
                                sc->first_page[ds->n_btrees - 1] = (uint32_t)pageno;
                }
        }
        sqlite3_finalize(s);
        return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* A leaf page whose page before is another b-tree's (or none's) and that
 * is not its own b-tree's first: spaceanal.tcl's gap. */
static void count_gaps(struct scan *sc)
{
        struct deep_stats *ds = sc->ds;

        for (uint64_t p = 2; p <= ds->page_count; p++) {
                uint32_t e = sc->map[p], owner = MAP_OWNER(e);

                if (!(e & MAP_LEAF) || owner == 0 || MAP_OWNER(sc->map[p - 1]) == owner ||
                    p == sc->first_page[owner - 1])
                        continue;
                ds->btrees[owner - 1].nonsequential_pages++;
        }
        ds->nonsequential_known = true;
}

struct schema_entry {
        char *name, *table;
        bool is_index;
};

static int cmp_entry(const void *a, const void *b)
{
        return strcmp(((const struct schema_entry *)a)->name, ((const struct schema_entry *)b)->name);
}

/* The table of each index, from the schema: entries sorted by name,
 * looked up once per b-tree. */
static int name_tables(sqlite3 *db, struct deep_stats *ds)
{
        struct schema_entry *v = NULL;
        size_t n = 0, cap = 0;
        sqlite3_stmt *s;
        int rc = sqlite3_prepare_v2(db, "SELECT name, tbl_name, type = 'index' FROM main.sqlite_schema "
                                        "WHERE coalesce(rootpage, 0) > 0", -1, &s, NULL);

        if (rc != SQLITE_OK)
                return rc;
        while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
                const char *name = (const char *)sqlite3_column_text(s, 0);
                const char *tbl = (const char *)sqlite3_column_text(s, 1);

                if (!name || !tbl)
                        continue;
                if (util_grow(&v, &cap, n + 1, sizeof(*v), 64) < 0) {
                        rc = SQLITE_NOMEM;
                        break;
                }
                v[n++] = (struct schema_entry){ strdup(name), strdup(tbl), sqlite3_column_int(s, 2) != 0 };
                if (!v[n - 1].name || !v[n - 1].table) {
                        rc = SQLITE_NOMEM;
                        break;
                }
        }
        sqlite3_finalize(s);
        if (rc == SQLITE_DONE) {
                rc = SQLITE_OK;
                qsort(v, n, sizeof(*v), cmp_entry);
                for (size_t i = 0; i < ds->n_btrees && rc == SQLITE_OK; i++) {
                        struct btree_space *b = &ds->btrees[i];
                        struct schema_entry key = { .name = b->name };
                        const struct schema_entry *hit = bsearch(&key, v, n, sizeof(*v), cmp_entry);

                        b->is_index = hit && hit->is_index;
                        b->table = strdup(hit ? hit->table : b->name);
                        if (!b->table)
                                rc = SQLITE_NOMEM;
                }
        }
        for (size_t i = 0; i < n; i++) {
                free(v[i].name);
                free(v[i].table);
        }
        free(v);
        return rc;
}

/* Bytes of a cell besides its payload, at most: the 2-byte cell pointer
 * and the payload-size and rowid varints (fileformat2.html, "B-tree
 * Pages"). */
#define CELL_OVERHEAD_BYTES 12

/* The leaf pages a b-tree's cells fill when packed: a VACUUM appends them
 * in order, and each page takes cells until the next does not fit (SQLite
 * never splits a cell's in-page part between two pages). A page is left
 * short by part of the next cell. Cells of about one size: whole cells of
 * the average size to a page. Cells of mixed sizes: short by about
 * E[S^2] / 2E[S], more than half the average, since the cell that does not
 * fit is likelier a large one; each cell's size is not known here, and
 * half the average of each page's largest cell stands for it, which errs
 * on the side of giving back less (a VACUUM must not be planned for what
 * it cannot give back). */
static uint64_t packed_leaves(const struct btree_space *b, uint64_t page_size)
{
        uint64_t room = page_size > LEAF_HEADER_BYTES ? page_size - LEAF_HEADER_BYTES : 1;
        uint64_t avg, largest, per_page;

        if (b->leaf_cells == 0 || b->leaf_cell_bytes == 0 || b->leaf_pages == 0)
                return b->leaf_pages ? 1 : 0;
        avg = b->leaf_cell_bytes / b->leaf_cells;
        largest = b->leaf_largest_sum / b->leaf_pages + CELL_OVERHEAD_BYTES;
        if (largest > avg + avg / 4 && room > largest / 2)
                return (b->leaf_cell_bytes + (room - largest / 2) - 1) / (room - largest / 2);
        /* cells per page: room over the average cell, rounded down */
        per_page = room * b->leaf_cells / b->leaf_cell_bytes;
        if (per_page == 0)
                per_page = 1;
        return (b->leaf_cells + per_page - 1) / per_page;
}

static void totals(struct deep_stats *ds)
{
        uint64_t ps = ds->page_size;

        ds->reclaimable_bytes = ds->freelist_count * ps;
        for (size_t i = 0; i < ds->n_btrees; i++) {
                const struct btree_space *b = &ds->btrees[i];
                uint64_t pages = b->interior_pages + b->leaf_pages + b->overflow_pages;
                uint64_t leaves = packed_leaves(b, ps), interior = 0, packed;

                if (leaves > b->leaf_pages)
                        leaves = b->leaf_pages;
                /* the interior pages shrink with the leaves they point to */
                if (b->interior_pages && b->leaf_pages)
                        interior = (b->interior_pages * leaves + b->leaf_pages - 1) / b->leaf_pages;
                if (b->interior_pages && leaves > 1 && interior == 0)
                        interior = 1;
                packed = leaves + interior + b->overflow_pages;
                if (packed == 0)
                        packed = 1;
                ds->btree_pages += pages;
                ds->unused_bytes += b->unused_bytes;
                ds->nonsequential_pages += b->nonsequential_pages;
                if (pages > packed)
                        ds->reclaimable_bytes += (pages - packed) * ps;
        }
}

int deepscan_run(sqlite3 *db, struct deep_stats *ds)
{
        struct scan sc = { .ds = ds };
        uint64_t page_size = 0;
        int rc;

        *ds = (struct deep_stats){ 0 };
        /* one read transaction: the page count and the pages agree */
        rc = sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
        if (rc != SQLITE_OK)
                return rc;
        rc = pragma_u64(db, "PRAGMA main.page_count", &ds->page_count);
        if (rc == SQLITE_OK)
                rc = pragma_u64(db, "PRAGMA main.freelist_count", &ds->freelist_count);
        if (rc == SQLITE_OK)
                rc = pragma_u64(db, "PRAGMA main.page_size", &page_size);
        ds->page_size = (uint32_t)page_size;
        if (rc == SQLITE_OK && ds->page_count < MAP_MAX_PAGES)
                sc.map = calloc(ds->page_count + 1, sizeof(*sc.map)); /* NULL: not known, not an error */
        if (rc == SQLITE_OK)
                rc = scan_pages(db, &sc);
        if (rc == SQLITE_OK)
                rc = name_tables(db, ds);
        (void)sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
        if (rc == SQLITE_OK) {
                if (sc.map)
                        count_gaps(&sc);
                totals(ds);
        }
        free(sc.map);
        free(sc.first_page);
        if (rc != SQLITE_OK) {
                deep_stats_clear(ds);
                ds->corrupt_page = sc.corrupt_page;
                memcpy(ds->corrupt_btree, sc.corrupt_btree, sizeof(ds->corrupt_btree));
        }
        return rc;
}

void deep_stats_clear(struct deep_stats *ds)
{
        for (size_t i = 0; ds && i < ds->n_btrees; i++) {
                free(ds->btrees[i].name);
                free(ds->btrees[i].table);
        }
        if (ds) {
                free(ds->btrees);
                *ds = (struct deep_stats){ 0 };
        }
}

double deep_unused_percent(uint64_t unused_bytes, uint64_t pages, uint32_t page_size)
{
        double all = (double)pages * page_size;

        return all > 0 ? 100.0 * (double)unused_bytes / all : 0.0;
}

double deep_nonsequential_percent(uint64_t nonsequential, uint64_t pages)
{
        return pages > 1 ? 100.0 * (double)nonsequential / (double)(pages - 1) : 0.0;
}

double deep_total_nonsequential_percent(const struct deep_stats *ds)
{
        uint64_t denominator = 0;

        for (size_t i = 0; i < ds->n_btrees; i++) {
                uint64_t pages = ds->btrees[i].interior_pages + ds->btrees[i].leaf_pages +
                                 ds->btrees[i].overflow_pages;

                denominator += pages > 1 ? pages - 1 : 0;
        }
        return denominator ? 100.0 * (double)ds->nonsequential_pages / (double)denominator : 0.0;
}
