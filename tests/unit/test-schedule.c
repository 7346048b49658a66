/* SPDX-License-Identifier: MIT */
/* schedule: every scheduling rule at its edges. */
#include <stdint.h>
#include <string.h>

#include "schedule.h"
#include "check.h"

#define MIN 60000LL
#define HOUR (60 * MIN)
#define DAY (24 * HOUR)

static struct vacuum_conf vconf(void)
{
        return (struct vacuum_conf){
                .threshold = 20.0,
                .urgent_threshold = 30.0,
                .window = { .always = false, .start_min = 2 * 60, .end_min = 5 * 60 },
                .min_interval_ms = 6 * HOUR,
                .min_reclaim = 1024 * 1024,
                .disk_space_factor = 2.0,
                .integrity = INTEGRITY_QUICK,
                .mode = VACUUM_MODE_FULL,
        };
}

/* A database of 10000 4 KiB pages with freelist giving frag percent. */
static struct dbstat stat_at(double frag)
{
        struct dbstat st = { .page_size = 4096, .page_count = 10000 };

        st.freelist_count = (uint64_t)(frag * 100.0 + 0.5);
        st.fragmentation_percent = frag;
        st.estimated_wasted_space_bytes = st.freelist_count * st.page_size;
        return st;
}

static enum sched_reason reason(double frag, int minute, int64_t last_vacuum, int64_t now)
{
        struct vacuum_conf vc = vconf();
        struct dbstat st = stat_at(frag);
        struct sched_history h = { .last_vacuum_ms = last_vacuum };

        return sched_vacuum(&st, &vc, &h, now, minute, false).reason;
}

static void test_windows(void)
{
        struct window w = { false, 2 * 60, 5 * 60 };
        struct window wrap = { false, 22 * 60, 3 * 60 };
        struct window always = { true, 0, 0 };

        CHECK(!sched_in_window(&w, 119));
        CHECK(sched_in_window(&w, 120));  /* start is inside */
        CHECK(sched_in_window(&w, 299));
        CHECK(!sched_in_window(&w, 300)); /* end is outside */
        CHECK(sched_minutes_until_window(&w, 60) == 60);
        CHECK(sched_minutes_until_window(&w, 300) == 1260);
        CHECK(sched_minutes_until_window(&w, 150) == 0);

        CHECK(sched_in_window(&wrap, 22 * 60));
        CHECK(sched_in_window(&wrap, 23 * 60 + 59));
        CHECK(sched_in_window(&wrap, 0));
        CHECK(sched_in_window(&wrap, 179));
        CHECK(!sched_in_window(&wrap, 180));
        CHECK(!sched_in_window(&wrap, 12 * 60));
        CHECK(!sched_in_window(&wrap, 22 * 60 - 1));
        CHECK(sched_minutes_until_window(&wrap, 21 * 60) == 60);
        CHECK(sched_minutes_until_window(&wrap, 3 * 60) == 19 * 60);

        for (int m = 0; m < 1440; m += 7)
                CHECK(sched_in_window(&always, m) && sched_minutes_until_window(&always, m) == 0);
}

static void test_thresholds(void)
{
        int64_t now = 100 * DAY;
        int inside = 3 * 60, outside = 12 * 60;

        CHECK(reason(19.99, inside, 0, now) == SCHED_REASON_BELOW);
        CHECK(reason(20.00, inside, 0, now) == SCHED_REASON_THRESHOLD);   /* at the threshold: due */
        CHECK(reason(20.00, outside, 0, now) == SCHED_REASON_WAIT_WINDOW);
        CHECK(reason(29.99, outside, 0, now) == SCHED_REASON_WAIT_WINDOW);
        CHECK(reason(30.00, outside, 0, now) == SCHED_REASON_URGENT);     /* urgent ignores the window */
        CHECK(reason(30.00, inside, 0, now) == SCHED_REASON_URGENT);
        CHECK(reason(5.0, inside, 0, now) == SCHED_REASON_BELOW);
        CHECK(reason(100.0, outside, 0, now) == SCHED_REASON_URGENT);

        /* The action goes with the reason. */
        {
                struct vacuum_conf vc = vconf();
                struct dbstat st = stat_at(35.0);
                struct sched_history h = { 0 };

                CHECK(sched_vacuum(&st, &vc, &h, now, outside, false).action == SCHED_VACUUM);
                st = stat_at(25.0);
                CHECK(sched_vacuum(&st, &vc, &h, now, outside, false).action == SCHED_NONE);
                CHECK(sched_vacuum(&st, &vc, &h, now, outside, true).action == SCHED_VACUUM); /* --ignore-window */
                st = (struct dbstat){ 0 };
                CHECK(sched_vacuum(&st, &vc, &h, now, inside, false).action == SCHED_NONE); /* empty database */
        }
}

static void test_min_interval_and_reclaim(void)
{
        int64_t now = 100 * DAY;
        struct vacuum_conf vc = vconf();
        struct dbstat st;
        struct sched_history h = { 0 };

        CHECK(reason(35.0, 0, now - 6 * HOUR + 1, now) == SCHED_REASON_MIN_INTERVAL);
        CHECK(reason(35.0, 0, now - 6 * HOUR, now) == SCHED_REASON_URGENT); /* exactly min_interval: allowed */
        CHECK(reason(35.0, 0, 0, now) == SCHED_REASON_URGENT);              /* never vacuumed */

        /* 25% of a small database: below 1 MiB to reclaim. */
        st = (struct dbstat){ .page_size = 4096, .page_count = 1000, .freelist_count = 250,
                              .fragmentation_percent = 25.0, .estimated_wasted_space_bytes = 250 * 4096 };
        CHECK(sched_vacuum(&st, &vc, &h, now, 3 * 60, false).reason == SCHED_REASON_MIN_RECLAIM);
        st.freelist_count = 256;
        st.estimated_wasted_space_bytes = 256 * 4096; /* exactly 1 MiB */
        CHECK(sched_vacuum(&st, &vc, &h, now, 3 * 60, false).reason == SCHED_REASON_THRESHOLD);
        vc.min_reclaim = 0;
        st.estimated_wasted_space_bytes = 0;
        CHECK(sched_vacuum(&st, &vc, &h, now, 3 * 60, false).reason == SCHED_REASON_THRESHOLD);
}

static void test_incremental(void)
{
        struct vacuum_conf vc = vconf();
        struct dbstat st = stat_at(40.0);
        struct sched_history h = { 0 };

        vc.mode = VACUUM_MODE_INCREMENTAL;
        st.auto_vacuum = AUTO_VACUUM_INCREMENTAL;
        CHECK(sched_vacuum(&st, &vc, &h, DAY, 0, false).action == SCHED_INCREMENTAL_VACUUM);
        st.auto_vacuum = AUTO_VACUUM_NONE; /* not an incremental database: full VACUUM */
        CHECK(sched_vacuum(&st, &vc, &h, DAY, 0, false).action == SCHED_VACUUM);
        vc.mode = VACUUM_MODE_FULL;
        st.auto_vacuum = AUTO_VACUUM_INCREMENTAL;
        CHECK(sched_vacuum(&st, &vc, &h, DAY, 0, false).action == SCHED_VACUUM);
}

static void test_analyze(void)
{
        struct analyze_conf ac = { .interval_ms = DAY, .analysis_limit = 1000 };
        struct sched_history h = { .first_seen_ms = 1000 * DAY };
        int64_t due;
        uint32_t hashes[] = { 0, 1, 12345, 4000000000u };

        /* Never analyzed: within the stagger after first seen, spread by path. */
        for (size_t i = 0; i < sizeof(hashes) / sizeof(hashes[0]); i++) {
                due = sched_analyze_due(&ac, &h, 5 * MIN, hashes[i]);
                CHECK(due >= h.first_seen_ms && due < h.first_seen_ms + 5 * MIN);
        }
        CHECK(sched_analyze_due(&ac, &h, 5 * MIN, sched_hash("/a.db")) !=
              sched_analyze_due(&ac, &h, 5 * MIN, sched_hash("/b.db")));
        /* Analyzed before: exactly one interval later. */
        h.last_analyze_ms = 1001 * DAY;
        CHECK(sched_analyze_due(&ac, &h, 5 * MIN, 7) == 1002 * DAY);
        /* A stagger longer than the interval is cut to it. */
        h.last_analyze_ms = 0;
        ac.interval_ms = 1000;
        CHECK(sched_analyze_due(&ac, &h, DAY, 999999) < h.first_seen_ms + 1000);
        /* Off. */
        ac.interval_ms = 0;
        CHECK(sched_analyze_due(&ac, &h, 5 * MIN, 7) == INT64_MAX);
}

static void test_backoff(void)
{
        struct retry_conf rc = { .busy_timeout_ms = 50, .max_attempts = 8, .initial_backoff_ms = 1000,
                                 .max_backoff_ms = 600000 };
        uint64_t prev_max = 0;

        for (int a = 1; a <= 30; a++) {
                uint64_t base = 1000ull << (a - 1 > 20 ? 20 : a - 1);
                uint64_t lo, hi = 0;

                if (base > rc.max_backoff_ms)
                        base = rc.max_backoff_ms;
                lo = UINT64_MAX;
                for (uint32_t r = 0; r < 2000; r += 37) {
                        uint64_t d = sched_backoff_ms(&rc, a, r * 2654435761u);

                        lo = d < lo ? d : lo;
                        hi = d > hi ? d : hi;
                }
                CHECK_MSG(hi <= base && lo >= base - base / 4, "attempt %d: [%llu, %llu] base %llu", a,
                          (unsigned long long)lo, (unsigned long long)hi, (unsigned long long)base);
                CHECK(hi <= rc.max_backoff_ms); /* bounded */
                CHECK(hi >= prev_max / 2);      /* grows (with jitter) until the cap */
                prev_max = hi;
        }
        CHECK(sched_backoff_ms(&rc, 1, 0) == 1000);
        CHECK(sched_backoff_ms(&rc, 2, 0) == 2000);
        CHECK(sched_backoff_ms(&rc, 4, 0) == 8000);
        CHECK(sched_backoff_ms(&rc, 11, 0) == 600000); /* 1024 s capped at 10 min */
        rc.initial_backoff_ms = 0;
        CHECK(sched_backoff_ms(&rc, 5, 12345) == 0);
}

static void test_priority(void)
{
        CHECK(sched_compare(true, 31.0, false, 90.0) < 0); /* urgent first, whatever the figures */
        CHECK(sched_compare(false, 90.0, true, 31.0) > 0);
        CHECK(sched_compare(false, 25.0, false, 28.0) > 0); /* then the most fragmented */
        CHECK(sched_compare(true, 50.0, true, 40.0) < 0);
        CHECK(sched_compare(false, 25.0, false, 25.0) == 0);
}

/* A WAL database of file_size bytes with a -wal of wal bytes. */
static struct dbstat wal_stat(uint64_t file_size, uint64_t wal)
{
        struct dbstat st = { .page_size = 4096, .file_size_bytes = file_size, .wal_size_bytes = wal };

        st.page_count = file_size / 4096;
        strcpy(st.journal_mode, "wal");
        return st;
}

/* sched_checkpoint() with the reason it gives; the reason must say NONE
 * exactly when the answer is no. */
static enum sched_reason ckpt(const struct dbstat *st, const struct checkpoint_conf *cc, bool owed)
{
        enum sched_reason r = SCHED_REASON_THRESHOLD; /* must be overwritten */
        bool due = sched_checkpoint(st, cc, owed, &r);

        CHECK_MSG(due == (r != SCHED_REASON_NONE), "due %d with reason %s", due, sched_reason_name(r));
        return r;
}

static void test_checkpoint(void)
{
        /* 1000 frames of 4 KiB pages: what SQLite's auto-checkpoint keeps */
        const uint64_t MiB = 1024 * 1024, floor4k = 32 + 1000 * (4096 + 24);
        struct checkpoint_conf cc = { .wal_size_limit = 64 * MiB, .wal_size_ratio = 100.0, .warn_after_ms = HOUR };
        struct checkpoint_conf off = { .wal_size_limit = 0, .wal_size_ratio = 0.0 };
        struct dbstat st;

        /* Not in WAL mode, or nothing in the -wal: never, owed or not. */
        st = wal_stat(10 * MiB, 100 * MiB);
        strcpy(st.journal_mode, "delete");
        CHECK(ckpt(&st, &cc, false) == SCHED_REASON_NONE);
        CHECK(ckpt(&st, &cc, true) == SCHED_REASON_NONE);
        strcpy(st.journal_mode, "");
        CHECK(ckpt(&st, &cc, true) == SCHED_REASON_NONE);
        st = wal_stat(10 * MiB, 0);
        CHECK(ckpt(&st, &cc, false) == SCHED_REASON_NONE);
        CHECK(ckpt(&st, &cc, true) == SCHED_REASON_NONE);

        /* Owed after a VACUUM: any non-empty -wal, whatever the limits. */
        st = wal_stat(10 * MiB, 1);
        CHECK(ckpt(&st, &cc, false) == SCHED_REASON_NONE);
        CHECK(ckpt(&st, &cc, true) == SCHED_REASON_AFTER_VACUUM);
        CHECK(ckpt(&st, &off, true) == SCHED_REASON_AFTER_VACUUM);
        st = wal_stat(10 * MiB, 100 * MiB); /* past the limits too: the owed one is named */
        CHECK(ckpt(&st, &cc, true) == SCHED_REASON_AFTER_VACUUM);

        /* wal_size_limit: at it is fine, one byte past it is not (the
         * ratio kept out of the way by a large database file). */
        st = wal_stat(1024 * MiB, 64 * MiB);
        CHECK(ckpt(&st, &cc, false) == SCHED_REASON_NONE);
        st.wal_size_bytes = 64 * MiB + 1;
        CHECK(ckpt(&st, &cc, false) == SCHED_REASON_WAL_SIZE);
        /* 0 is no absolute limit. */
        cc.wal_size_limit = 0;
        st.wal_size_bytes = 1000 * MiB;
        CHECK(ckpt(&st, &cc, false) == SCHED_REASON_NONE);
        st.wal_size_bytes = 1024 * MiB + 1; /* but the ratio still holds */
        CHECK(ckpt(&st, &cc, false) == SCHED_REASON_WAL_SIZE);
        /* both off: never for size */
        st.wal_size_bytes = UINT64_MAX / 2;
        CHECK(ckpt(&st, &off, false) == SCHED_REASON_NONE);

        /* wal_size_ratio: at the ratio is fine, one byte past it is not. */
        cc = (struct checkpoint_conf){ .wal_size_limit = 0, .wal_size_ratio = 100.0 };
        st = wal_stat(100 * MiB, 100 * MiB);
        CHECK(ckpt(&st, &cc, false) == SCHED_REASON_NONE);
        st.wal_size_bytes++;
        CHECK(ckpt(&st, &cc, false) == SCHED_REASON_WAL_SIZE);
        cc.wal_size_ratio = 50.0;
        st.wal_size_bytes = 50 * MiB;
        CHECK(ckpt(&st, &cc, false) == SCHED_REASON_NONE);
        st.wal_size_bytes++;
        CHECK(ckpt(&st, &cc, false) == SCHED_REASON_WAL_SIZE);
        cc.wal_size_ratio = 0.0; /* off */
        st.wal_size_bytes = 1000 * MiB;
        CHECK(ckpt(&st, &cc, false) == SCHED_REASON_NONE);

        /* The floor: however small the database, a -wal of up to 1000
         * frames is what SQLite's own auto-checkpoint keeps (an application
         * left on the defaults sits exactly there: 4,120,032 bytes). */
        cc.wal_size_ratio = 100.0;
        st = wal_stat(8192, floor4k);
        CHECK(ckpt(&st, &cc, false) == SCHED_REASON_NONE);
        st.wal_size_bytes = floor4k + 1;
        CHECK(ckpt(&st, &cc, false) == SCHED_REASON_WAL_SIZE);
        /* with the page size: 1000 frames of 64 KiB pages */
        st = wal_stat(65536, 32 + 1000 * (65536 + 24));
        st.page_size = 65536;
        CHECK(ckpt(&st, &cc, false) == SCHED_REASON_NONE);
        st.wal_size_bytes++;
        CHECK(ckpt(&st, &cc, false) == SCHED_REASON_WAL_SIZE);
        st.page_size = 512;
        st.wal_size_bytes = 32 + 1000 * (512 + 24);
        CHECK(ckpt(&st, &cc, false) == SCHED_REASON_NONE);
        st.wal_size_bytes++;
        CHECK(ckpt(&st, &cc, false) == SCHED_REASON_WAL_SIZE);
        /* an empty main file: only the floor holds */
        st = wal_stat(0, floor4k);
        CHECK(ckpt(&st, &cc, false) == SCHED_REASON_NONE);
        st.wal_size_bytes++;
        CHECK(ckpt(&st, &cc, false) == SCHED_REASON_WAL_SIZE);
        /* the floor does not hold back wal_size_limit */
        cc = (struct checkpoint_conf){ .wal_size_limit = 4096, .wal_size_ratio = 0.0 };
        st = wal_stat(8192, 4097);
        CHECK(ckpt(&st, &cc, false) == SCHED_REASON_WAL_SIZE);
}

/* A deep scan's history: unused percent of the b-tree pages and what a
 * VACUUM could give back. */
static struct sched_history deep_history(double unused, uint64_t reclaimable)
{
        return (struct sched_history){ .deep_known = true, .deep_unused_percent = unused,
                                       .deep_reclaimable_bytes = reclaimable };
}

static void test_unused_trigger(void)
{
        int64_t now = 100 * DAY;
        int inside = 3 * 60, outside = 12 * 60;
        struct vacuum_conf vc = vconf();
        struct dbstat st = stat_at(0.0); /* no free page at all */
        struct sched_history h;
        struct sched_decision d;

        vc.unused_threshold = 30.0;

        /* known, above the threshold, enough to give back, in the window */
        h = deep_history(52.0, 8 << 20);
        d = sched_vacuum(&st, &vc, &h, now, inside, false);
        CHECK(d.action == SCHED_VACUUM && d.reason == SCHED_REASON_UNUSED && d.unused);
        /* exactly at the threshold: due; just below: not */
        h = deep_history(30.0, 8 << 20);
        d = sched_vacuum(&st, &vc, &h, now, inside, false);
        CHECK(d.action == SCHED_VACUUM && d.reason == SCHED_REASON_UNUSED && d.unused);
        h = deep_history(29.99, 8 << 20);
        d = sched_vacuum(&st, &vc, &h, now, inside, false);
        CHECK(d.action == SCHED_NONE && d.reason == SCHED_REASON_BELOW && !d.unused);
        /* unknown (never scanned, or scanned before the last VACUUM) */
        h = deep_history(90.0, 8 << 20);
        h.deep_known = false;
        d = sched_vacuum(&st, &vc, &h, now, inside, false);
        CHECK(d.action == SCHED_NONE && d.reason == SCHED_REASON_BELOW && !d.unused);

        /* min_reclaim (1 MiB) applies to what the scan says could be given back */
        h = deep_history(60.0, (1 << 20) - 1);
        d = sched_vacuum(&st, &vc, &h, now, inside, false);
        CHECK(d.action == SCHED_NONE && !d.unused);
        h = deep_history(60.0, 1 << 20);
        d = sched_vacuum(&st, &vc, &h, now, inside, false);
        CHECK(d.action == SCHED_VACUUM && d.reason == SCHED_REASON_UNUSED && d.unused);

        /* min_interval holds it back, and says it was the unused space */
        h = deep_history(60.0, 8 << 20);
        h.last_vacuum_ms = now - 6 * HOUR + 1;
        d = sched_vacuum(&st, &vc, &h, now, inside, false);
        CHECK(d.action == SCHED_NONE && d.reason == SCHED_REASON_MIN_INTERVAL && d.unused);
        h.last_vacuum_ms = now - 6 * HOUR;
        d = sched_vacuum(&st, &vc, &h, now, inside, false);
        CHECK(d.action == SCHED_VACUUM && d.reason == SCHED_REASON_UNUSED);

        /* only in the window, never urgent; --ignore-window runs it */
        h = deep_history(99.0, 800 << 20);
        d = sched_vacuum(&st, &vc, &h, now, outside, false);
        CHECK(d.action == SCHED_NONE && d.reason == SCHED_REASON_WAIT_WINDOW && d.unused);
        d = sched_vacuum(&st, &vc, &h, now, outside, true);
        CHECK(d.action == SCHED_VACUUM && d.reason == SCHED_REASON_UNUSED && d.unused);
        vc.window = (struct window){ .always = true };
        d = sched_vacuum(&st, &vc, &h, now, outside, false);
        CHECK(d.action == SCHED_VACUUM && d.reason == SCHED_REASON_UNUSED);
        vc.window = vconf().window;

        /* incremental mode frees whole free pages only: no unused trigger,
         * whatever the database's auto_vacuum */
        vc.mode = VACUUM_MODE_INCREMENTAL;
        st.auto_vacuum = AUTO_VACUUM_INCREMENTAL;
        d = sched_vacuum(&st, &vc, &h, now, inside, false);
        CHECK(d.action == SCHED_NONE && !d.unused);
        st.auto_vacuum = AUTO_VACUUM_NONE;
        d = sched_vacuum(&st, &vc, &h, now, inside, false);
        CHECK(d.action == SCHED_NONE && !d.unused);
        vc.mode = VACUUM_MODE_FULL;

        /* threshold 0 is off, not "always" */
        vc.unused_threshold = 0.0;
        h = deep_history(100.0, 800 << 20);
        d = sched_vacuum(&st, &vc, &h, now, inside, false);
        CHECK(d.action == SCHED_NONE && d.reason == SCHED_REASON_BELOW && !d.unused);
        h = deep_history(0.0, 0);
        d = sched_vacuum(&st, &vc, &h, now, inside, false);
        CHECK(d.action == SCHED_NONE && !d.unused);
        vc.unused_threshold = 30.0;

        /* the freelist rule comes first: its reason, not the deep scan's */
        h = deep_history(60.0, 8 << 20);
        st = stat_at(25.0);
        d = sched_vacuum(&st, &vc, &h, now, inside, false);
        CHECK(d.action == SCHED_VACUUM && d.reason == SCHED_REASON_THRESHOLD && !d.unused);
        st = stat_at(35.0);
        d = sched_vacuum(&st, &vc, &h, now, outside, false);
        CHECK(d.action == SCHED_VACUUM && d.reason == SCHED_REASON_URGENT && !d.unused);
        /* an incremental database past its threshold still gets its incremental vacuum */
        vc.mode = VACUUM_MODE_INCREMENTAL;
        st.auto_vacuum = AUTO_VACUUM_INCREMENTAL;
        d = sched_vacuum(&st, &vc, &h, now, inside, false);
        CHECK(d.action == SCHED_INCREMENTAL_VACUUM && !d.unused);
        vc.mode = VACUUM_MODE_FULL;
        st.auto_vacuum = AUTO_VACUUM_NONE;

        /* urgent by the freelist but below min_reclaim: the unused space
         * decides, and then only in the window (it is not urgent) */
        st = (struct dbstat){ .page_size = 4096, .page_count = 100, .freelist_count = 40,
                              .fragmentation_percent = 40.0, .estimated_wasted_space_bytes = 40 * 4096 };
        d = sched_vacuum(&st, &vc, &h, now, outside, false);
        CHECK(d.action == SCHED_NONE && d.reason == SCHED_REASON_WAIT_WINDOW && d.unused);
        d = sched_vacuum(&st, &vc, &h, now, inside, false);
        CHECK(d.action == SCHED_VACUUM && d.reason == SCHED_REASON_UNUSED && d.unused);

        /* an empty database has nothing to pack */
        st = (struct dbstat){ 0 };
        d = sched_vacuum(&st, &vc, &h, now, inside, false);
        CHECK(d.action == SCHED_NONE && !d.unused);
}

static void test_deep_scan_due(void)
{
        struct deep_scan_conf dc = { .interval_ms = 7 * DAY, .in_window = true };
        struct sched_history h = { .first_seen_ms = 1000 * DAY };
        uint32_t hashes[] = { 0, 1, 12345, 4000000000u };
        int64_t due;

        /* never scanned: within the stagger after first seen, spread by path */
        for (size_t i = 0; i < sizeof(hashes) / sizeof(hashes[0]); i++) {
                due = sched_deep_scan_due(&dc, &h, 5 * MIN, hashes[i]);
                CHECK(due >= h.first_seen_ms && due < h.first_seen_ms + 5 * MIN);
        }
        CHECK(sched_deep_scan_due(&dc, &h, 5 * MIN, sched_hash("/a.db")) !=
              sched_deep_scan_due(&dc, &h, 5 * MIN, sched_hash("/b.db")));
        CHECK(sched_deep_scan_due(&dc, &h, 0, 12345) == h.first_seen_ms); /* --once: no stagger */
        /* scanned: exactly one interval later, whatever the stagger */
        h.last_deep_scan_ms = 1001 * DAY;
        CHECK(sched_deep_scan_due(&dc, &h, 5 * MIN, 7) == 1008 * DAY);
        CHECK(sched_deep_scan_due(&dc, &h, 0, 7) == 1008 * DAY);
        dc.interval_ms = 1000;
        CHECK(sched_deep_scan_due(&dc, &h, 5 * MIN, 7) == 1001 * DAY + 1000);
        /* the figures of the last scan play no part in when the next is due */
        h.deep_known = true;
        h.deep_unused_percent = 99.0;
        CHECK(sched_deep_scan_due(&dc, &h, 5 * MIN, 7) == 1001 * DAY + 1000);
        /* off */
        dc.interval_ms = 0;
        CHECK(sched_deep_scan_due(&dc, &h, 5 * MIN, 7) == INT64_MAX);
        h.last_deep_scan_ms = 0;
        CHECK(sched_deep_scan_due(&dc, &h, 5 * MIN, 7) == INT64_MAX);
}

static void test_window_end(void)
{
        struct window w = { false, 2 * 60, 5 * 60 };
        struct window wrap = { false, 22 * 60, 3 * 60 };
        struct window always = { true, 0, 0 };

        /* inside: the minutes left until the end */
        CHECK(sched_minutes_until_window_end(&w, 2 * 60) == 180);
        CHECK(sched_minutes_until_window_end(&w, 4 * 60) == 60);
        CHECK(sched_minutes_until_window_end(&w, 4 * 60 + 59) == 1);
        /* outside (the end itself is outside): 0 */
        CHECK(sched_minutes_until_window_end(&w, 5 * 60) == 0);
        CHECK(sched_minutes_until_window_end(&w, 60) == 0);
        CHECK(sched_minutes_until_window_end(&w, 119) == 0);
        CHECK(sched_minutes_until_window_end(&w, 23 * 60) == 0);
        /* wrapping midnight: before and after it */
        CHECK(sched_minutes_until_window_end(&wrap, 22 * 60) == 300);
        CHECK(sched_minutes_until_window_end(&wrap, 23 * 60 + 59) == 181);
        CHECK(sched_minutes_until_window_end(&wrap, 0) == 180);
        CHECK(sched_minutes_until_window_end(&wrap, 60) == 120);
        CHECK(sched_minutes_until_window_end(&wrap, 2 * 60 + 59) == 1);
        CHECK(sched_minutes_until_window_end(&wrap, 3 * 60) == 0);
        CHECK(sched_minutes_until_window_end(&wrap, 12 * 60) == 0);
        CHECK(sched_minutes_until_window_end(&wrap, 22 * 60 - 1) == 0);
        /* every minute inside a window has at least one left, and never more than its length */
        for (int m = 0; m < 1440; m++) {
                int left = sched_minutes_until_window_end(&wrap, m);

                CHECK(sched_in_window(&wrap, m) ? left >= 1 && left <= 300 : left == 0);
        }
        /* always open: no end */
        for (int m = 0; m < 1440; m += 7)
                CHECK(sched_minutes_until_window_end(&always, m) == INT32_MAX);
}

static void test_threshold_rule(void)
{
        struct vacuum_conf vc = vconf();
        struct dbstat st;

        /* the freelist rule alone, as sqlite-maintctl vacuum asks it */
        st = stat_at(19.99);
        CHECK(sched_threshold(&st, &vc) == SCHED_REASON_BELOW);
        st = stat_at(20.0); /* at the threshold: due */
        CHECK(sched_threshold(&st, &vc) == SCHED_REASON_THRESHOLD);
        st = stat_at(90.0); /* urgent is the daemon's business: still the threshold */
        CHECK(sched_threshold(&st, &vc) == SCHED_REASON_THRESHOLD);
        st.estimated_wasted_space_bytes = vc.min_reclaim - 1;
        CHECK(sched_threshold(&st, &vc) == SCHED_REASON_MIN_RECLAIM);
        st.estimated_wasted_space_bytes = vc.min_reclaim;
        CHECK(sched_threshold(&st, &vc) == SCHED_REASON_THRESHOLD);
        /* below both: the threshold is named */
        st = stat_at(1.0);
        st.estimated_wasted_space_bytes = 0;
        CHECK(sched_threshold(&st, &vc) == SCHED_REASON_BELOW);
        /* the window and min_interval are not its business */
        st = stat_at(25.0);
        vc.window = (struct window){ .always = false, .start_min = 0, .end_min = 1 };
        CHECK(sched_threshold(&st, &vc) == SCHED_REASON_THRESHOLD);
}

static void test_vacuum_action(void)
{
        struct vacuum_conf vc = vconf();
        struct dbstat st = stat_at(25.0);
        static const enum auto_vacuum avs[] = { AUTO_VACUUM_NONE, AUTO_VACUUM_FULL, AUTO_VACUUM_INCREMENTAL };

        /* full mode: always the full VACUUM */
        for (size_t i = 0; i < sizeof(avs) / sizeof(avs[0]); i++) {
                st.auto_vacuum = avs[i];
                CHECK(sched_vacuum_action(&st, &vc) == SCHED_VACUUM);
        }
        /* incremental mode: incremental only on an auto_vacuum=INCREMENTAL database */
        vc.mode = VACUUM_MODE_INCREMENTAL;
        st.auto_vacuum = AUTO_VACUUM_INCREMENTAL;
        CHECK(sched_vacuum_action(&st, &vc) == SCHED_INCREMENTAL_VACUUM);
        st.auto_vacuum = AUTO_VACUUM_NONE;
        CHECK(sched_vacuum_action(&st, &vc) == SCHED_VACUUM);
        st.auto_vacuum = AUTO_VACUUM_FULL;
        CHECK(sched_vacuum_action(&st, &vc) == SCHED_VACUUM);
}

/* A queued job: a VACUUM for the threshold at frag percent, window 02:00-05:00. */
static struct sched_job qjob(double frag)
{
        return (struct sched_job){
                .op = MAINT_OP_VACUUM,
                .reason = SCHED_REASON_THRESHOLD,
                .fragmentation_percent = frag,
                .window = vconf().window,
        };
}

#define NOW (1000 * DAY) /* monotonic */
#define INSIDE (3 * 60)  /* minute of day inside the 02:00-05:00 window */
#define OUTSIDE (12 * 60)

/* The same, queued urgent. */
static struct sched_job ujob(double frag)
{
        struct sched_job j = qjob(frag);

        j.urgent = true;
        j.reason = SCHED_REASON_URGENT;
        return j;
}

/* sched_dispatch() with room for one more job, in the window. */
static struct sched_dispatch pick(const struct sched_job *jobs, size_t n)
{
        return sched_dispatch(jobs, n, 0, 1, NOW, INSIDE, false);
}

/* The index of the job pick() starts; SIZE_MAX for none (or a drop). */
static size_t starts(const struct sched_job *jobs, size_t n)
{
        struct sched_dispatch d = pick(jobs, n);

        return d.choice == SCHED_DISPATCH_START ? d.index : SIZE_MAX;
}

/* A job of op, queued for reason. */
static struct sched_job op_job(enum maint_op op, enum sched_reason reason, double frag)
{
        struct sched_job j = qjob(frag);

        j.op = op;
        j.reason = reason;
        return j;
}

static void test_dispatch_order(void)
{
        struct sched_job q[4];
        struct sched_dispatch d;

        /* empty queue: nothing, and no wake-up */
        d = pick(NULL, 0);
        CHECK(d.choice == SCHED_DISPATCH_NONE && d.wake_ms == UINT64_MAX);

        /* one job: it, and no wake-up */
        q[0] = qjob(25.0);
        d = pick(q, 1);
        CHECK(d.choice == SCHED_DISPATCH_START && d.index == 0 && d.wake_ms == UINT64_MAX);

        /* the most fragmented first, wherever it stands */
        q[0] = qjob(25.0), q[1] = qjob(28.0), q[2] = qjob(21.0);
        CHECK(starts(q, 3) == 1);

        /* urgent first, whatever the figures; of two urgent, the more fragmented */
        q[0] = qjob(90.0), q[1] = ujob(31.0);
        CHECK(starts(q, 2) == 1);
        q[0] = ujob(90.0);
        CHECK(starts(q, 2) == 0);

        /* equal fragmentation: the first in the queue */
        q[0] = qjob(25.0), q[1] = qjob(25.0), q[2] = qjob(25.0);
        CHECK(starts(q, 3) == 0);
        q[0] = qjob(24.99);
        CHECK(starts(q, 3) == 1);
        q[0] = ujob(25.0), q[1] = ujob(25.0);
        CHECK(starts(q, 3) == 0);

        /* vacuums and checkpoints, then ANALYZE, then deep scans */
        q[0] = op_job(MAINT_OP_DEEP_SCAN, SCHED_REASON_TIMER, 50.0);
        q[1] = op_job(MAINT_OP_ANALYZE, SCHED_REASON_TIMER, 40.0);
        q[2] = op_job(MAINT_OP_CHECKPOINT, SCHED_REASON_WAL_SIZE, 0.0);
        CHECK(starts(q, 3) == 2);
        CHECK(starts(q, 2) == 1);
        CHECK(starts(q, 1) == 0);
        /* a checkpoint and a VACUUM are of one rank: fragmentation decides */
        q[3] = op_job(MAINT_OP_INCREMENTAL_VACUUM, SCHED_REASON_THRESHOLD, 21.0);
        CHECK(starts(q, 4) == 3);
        q[2].fragmentation_percent = 22.0;
        CHECK(starts(q, 4) == 2);
}

static void test_dispatch_backoff(void)
{
        struct sched_job q[3];
        struct sched_dispatch d;

        /* backing off: passed over, and its retry is the next wake-up */
        q[0] = qjob(90.0);
        q[0].retry_at_ms = NOW + 1;
        q[1] = qjob(21.0);
        d = pick(q, 2);
        CHECK(d.choice == SCHED_DISPATCH_START && d.index == 1 && d.wake_ms == NOW + 1);
        /* only jobs backing off: nothing now, wake at the earliest retry */
        q[1].retry_at_ms = NOW + 5000;
        q[2] = qjob(50.0);
        q[2].retry_at_ms = NOW + 20;
        d = pick(q, 3);
        CHECK(d.choice == SCHED_DISPATCH_NONE && d.wake_ms == NOW + 1);
        q[0].retry_at_ms = NOW + 60000;
        d = pick(q, 3);
        CHECK(d.choice == SCHED_DISPATCH_NONE && d.wake_ms == NOW + 20);
        /* a retry due exactly now runs now */
        q[2].retry_at_ms = NOW;
        d = pick(q, 3);
        CHECK(d.choice == SCHED_DISPATCH_START && d.index == 2 && d.wake_ms == NOW + 5000);
        /* one run out long ago, one never backed off */
        q[0].retry_at_ms = 1;
        q[1].retry_at_ms = 0;
        d = pick(q, 2);
        CHECK(d.choice == SCHED_DISPATCH_START && d.index == 0 && d.wake_ms == UINT64_MAX);
}

static void test_dispatch_in_use(void)
{
        struct sched_job q[3];
        struct sched_dispatch d;

        /* one job per database: a file with a job running is passed over */
        q[0] = qjob(90.0);
        q[0].in_use = true;
        q[1] = qjob(21.0);
        CHECK(starts(q, 2) == 1);
        /* urgent or not */
        q[0] = ujob(90.0);
        q[0].in_use = true;
        CHECK(starts(q, 2) == 1);
        /* every file in use: nothing */
        q[1].in_use = true;
        d = pick(q, 2);
        CHECK(d.choice == SCHED_DISPATCH_NONE && d.wake_ms == UINT64_MAX);
        /* in use and backing off: no wake-up for it (the job's end dispatches) */
        q[0].retry_at_ms = NOW + 10;
        q[1].retry_at_ms = NOW + 10;
        d = pick(q, 2);
        CHECK(d.choice == SCHED_DISPATCH_NONE && d.wake_ms == UINT64_MAX);
        q[2] = qjob(21.0);
        q[2].retry_at_ms = NOW + 30;
        d = pick(q, 3);
        CHECK(d.choice == SCHED_DISPATCH_NONE && d.wake_ms == NOW + 30);
}

static void test_dispatch_cap(void)
{
        struct sched_job q[2] = { qjob(50.0), qjob(25.0) };
        struct sched_dispatch d;

        q[1].retry_at_ms = NOW + 100;
        /* below the cap: the next one */
        d = sched_dispatch(q, 2, 0, 2, NOW, INSIDE, false);
        CHECK(d.choice == SCHED_DISPATCH_START && d.index == 0 && d.wake_ms == NOW + 100);
        d = sched_dispatch(q, 2, 1, 2, NOW, INSIDE, false);
        CHECK(d.choice == SCHED_DISPATCH_START && d.index == 0);
        /* at the cap: nothing, and no wake-up (the end of a job dispatches) */
        d = sched_dispatch(q, 2, 2, 2, NOW, INSIDE, false);
        CHECK(d.choice == SCHED_DISPATCH_NONE && d.wake_ms == UINT64_MAX);
        /* past it (a reload lowered max_concurrent_jobs) */
        d = sched_dispatch(q, 2, 5, 2, NOW, INSIDE, false);
        CHECK(d.choice == SCHED_DISPATCH_NONE && d.wake_ms == UINT64_MAX);
        d = sched_dispatch(q, 2, 0, 0, NOW, INSIDE, false);
        CHECK(d.choice == SCHED_DISPATCH_NONE);
}

static void test_dispatch_window(void)
{
        struct sched_job q[3];
        struct sched_dispatch d;

        /* queued for the threshold in the window; the window closed before it could start */
        q[0] = qjob(25.0);
        d = sched_dispatch(q, 1, 0, 1, NOW, OUTSIDE, false);
        CHECK(d.choice == SCHED_DISPATCH_WINDOW_CLOSED && d.index == 0);
        /* the window's edges: its start is inside, its end outside */
        d = sched_dispatch(q, 1, 0, 1, NOW, 2 * 60, false);
        CHECK(d.choice == SCHED_DISPATCH_START);
        d = sched_dispatch(q, 1, 0, 1, NOW, 5 * 60 - 1, false);
        CHECK(d.choice == SCHED_DISPATCH_START);
        d = sched_dispatch(q, 1, 0, 1, NOW, 5 * 60, false);
        CHECK(d.choice == SCHED_DISPATCH_WINDOW_CLOSED);
        d = sched_dispatch(q, 1, 0, 1, NOW, 2 * 60 - 1, false);
        CHECK(d.choice == SCHED_DISPATCH_WINDOW_CLOSED);
        /* --ignore-window, or a window always open: it starts */
        d = sched_dispatch(q, 1, 0, 1, NOW, OUTSIDE, true);
        CHECK(d.choice == SCHED_DISPATCH_START);
        q[0].window = (struct window){ .always = true };
        d = sched_dispatch(q, 1, 0, 1, NOW, OUTSIDE, false);
        CHECK(d.choice == SCHED_DISPATCH_START);
        /* only a job queued for the threshold waits for the window: urgent,
         * a checkpoint, ANALYZE, a deep scan and the unused space start */
        static const struct {
                enum maint_op op;
                enum sched_reason reason;
        } others[] = {
                { MAINT_OP_VACUUM, SCHED_REASON_URGENT },
                { MAINT_OP_VACUUM, SCHED_REASON_UNUSED },
                { MAINT_OP_CHECKPOINT, SCHED_REASON_WAL_SIZE },
                { MAINT_OP_CHECKPOINT, SCHED_REASON_AFTER_VACUUM },
                { MAINT_OP_ANALYZE, SCHED_REASON_TIMER },
                { MAINT_OP_DEEP_SCAN, SCHED_REASON_TIMER },
        };
        for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++) {
                q[0] = op_job(others[i].op, others[i].reason, 25.0);
                d = sched_dispatch(q, 1, 0, 1, NOW, OUTSIDE, false);
                CHECK_MSG(d.choice == SCHED_DISPATCH_START, "%s", sched_reason_name(others[i].reason));
        }
        /* the first pick is dropped, the next one starts; a window of its
         * own (another entry) may still be open */
        q[0] = qjob(40.0);
        q[1] = qjob(30.0);
        q[1].window = (struct window){ .always = false, .start_min = 11 * 60, .end_min = 13 * 60 };
        q[2] = qjob(35.0);
        d = sched_dispatch(q, 3, 0, 1, NOW, OUTSIDE, false);
        CHECK(d.choice == SCHED_DISPATCH_WINDOW_CLOSED && d.index == 0);
        q[0] = q[2]; /* dropped: the manager's swap-remove */
        d = sched_dispatch(q, 2, 0, 1, NOW, OUTSIDE, false);
        CHECK(d.choice == SCHED_DISPATCH_WINDOW_CLOSED && d.index == 0);
        d = sched_dispatch(q + 1, 1, 0, 1, NOW, OUTSIDE, false);
        CHECK(d.choice == SCHED_DISPATCH_START && d.index == 0);
        /* a retry backing off past the window's end: dropped once due */
        q[0] = qjob(25.0);
        q[0].retry_at_ms = NOW + 1;
        d = sched_dispatch(q, 1, 0, 1, NOW, OUTSIDE, false);
        CHECK(d.choice == SCHED_DISPATCH_NONE && d.wake_ms == NOW + 1);
        d = sched_dispatch(q, 1, 0, 1, NOW + 1, OUTSIDE, false);
        CHECK(d.choice == SCHED_DISPATCH_WINDOW_CLOSED && d.wake_ms == UINT64_MAX);
}

/* The manager's way through its queue: pick, remove (swap with the last),
 * until nothing may start; the order of the ops started into order[]. */
static size_t drain(struct sched_job *q, size_t n, unsigned max, double *order)
{
        unsigned running = 0;
        size_t k = 0;

        for (;;) {
                struct sched_dispatch d = sched_dispatch(q, n, running, max, NOW, INSIDE, false);

                if (d.choice == SCHED_DISPATCH_NONE)
                        return k;
                if (d.choice == SCHED_DISPATCH_START) {
                        order[k++] = q[d.index].fragmentation_percent;
                        running++;
                }
                q[d.index] = q[--n];
        }
}

static void test_dispatch_drain(void)
{
        struct sched_job q[5] = { qjob(21.0), qjob(60.0), ujob(33.0), qjob(45.0), qjob(27.0) };
        double order[5];

        /* up to the cap, in order: urgent, then the most fragmented */
        CHECK(drain(q, 5, 3, order) == 3);
        CHECK(order[0] == 33.0 && order[1] == 60.0 && order[2] == 45.0);
}

static void test_hold(void)
{
        uint64_t now = NOW;

        /* until the file changes */
        CHECK(sched_hold_lasts(0, true, now));
        CHECK(sched_hold_lasts(0, true, UINT64_MAX));
        CHECK(!sched_hold_lasts(0, false, now));
        /* and for a while: a hold ending exactly now has ended */
        CHECK(sched_hold_lasts(now + 1, true, now));
        CHECK(!sched_hold_lasts(now, true, now));
        CHECK(!sched_hold_lasts(now - 1, true, now));
        /* a changed file ends it early */
        CHECK(!sched_hold_lasts(now + 60 * MIN, false, now));
}

static void test_reason_names(void)
{
        static const struct {
                enum sched_reason r;
                const char *name;
        } names[] = {
                { SCHED_REASON_NONE, "none" },
                { SCHED_REASON_THRESHOLD, "threshold" },
                { SCHED_REASON_URGENT, "urgent" },
                { SCHED_REASON_TIMER, "timer" },
                { SCHED_REASON_WAIT_WINDOW, "outside-window" },
                { SCHED_REASON_MIN_INTERVAL, "min-interval" },
                { SCHED_REASON_MIN_RECLAIM, "min-reclaim" },
                { SCHED_REASON_BELOW, "below-threshold" },
                { SCHED_REASON_WAL_SIZE, "wal-size" },
                { SCHED_REASON_AFTER_VACUUM, "after-vacuum" },
                { SCHED_REASON_ROWIDS, "rowids" },
                { SCHED_REASON_UNUSED, "unused-space" },
                { SCHED_REASON_REQUESTED, "requested" },
                { SCHED_REASON_WINDOW_SHORT, "window-too-short" },
        };

        for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
                CHECK_STREQ(sched_reason_name(names[i].r), names[i].name);
}

/* The window fit: an estimate from the host's past VACUUMs, and a VACUUM
 * in the window that would not end in it waits (urgent ones do not). */
static void test_window_fit(void)
{
        struct window w = { .always = false, .start_min = 120, .end_min = 300 }; /* 02:00-05:00 */
        struct window always = { .always = true };
        struct sched_rate none = { 0 }, tiny = { 512 * 1024, 1000, 1 }, rate = { 100u << 20, 10000, 2 };
        struct sched_decision due = { SCHED_VACUUM, SCHED_REASON_THRESHOLD, false };
        struct sched_decision urgent = { SCHED_VACUUM, SCHED_REASON_URGENT, false };
        struct sched_decision d;

        CHECK(sched_vacuum_estimate_ms(&none, 1u << 30) == -1);  /* no past VACUUM */
        CHECK(sched_vacuum_estimate_ms(&tiny, 1u << 30) == -1);  /* under 1 MiB of them */
        CHECK(sched_vacuum_estimate_ms(&rate, 100u << 20) == 10000);
        CHECK(sched_vacuum_estimate_ms(&rate, 1000u << 20) == 100000);

        CHECK(sched_fits_window(&w, 200, 0, -1));               /* unknown: it runs */
        CHECK(sched_fits_window(&always, 200, 0, 86400000));
        CHECK(sched_fits_window(&w, 290, 0, 10 * 60000));       /* 10 min left, 10 min needed */
        CHECK(!sched_fits_window(&w, 290, 1, 10 * 60000));      /* a second less */
        CHECK(!sched_fits_window(&w, 299, 0, 61000));

        d = sched_vacuum_fit(due, &w, 290, 30, 20 * 60000, false);
        CHECK(d.action == SCHED_NONE && d.reason == SCHED_REASON_WINDOW_SHORT);
        d = sched_vacuum_fit(due, &w, 200, 0, 20 * 60000, false);
        CHECK(d.action == SCHED_VACUUM && d.reason == SCHED_REASON_THRESHOLD);
        d = sched_vacuum_fit(urgent, &w, 299, 0, 86400000, false);
        CHECK(d.action == SCHED_VACUUM && d.reason == SCHED_REASON_URGENT);
        d = sched_vacuum_fit(due, &w, 299, 0, 86400000, true);  /* --ignore-window */
        CHECK(d.action == SCHED_VACUUM);
}

int main(void)
{
        test_window_fit();
        test_windows();
        test_thresholds();
        test_min_interval_and_reclaim();
        test_incremental();
        test_analyze();
        test_backoff();
        test_priority();
        test_checkpoint();
        test_unused_trigger();
        test_deep_scan_due();
        test_window_end();
        test_reason_names();
        test_threshold_rule();
        test_vacuum_action();
        test_dispatch_order();
        test_dispatch_backoff();
        test_dispatch_in_use();
        test_dispatch_cap();
        test_dispatch_window();
        test_dispatch_drain();
        test_hold();
        return test_summary();
}
