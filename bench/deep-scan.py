#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""What a deep scan costs: every page read through SQLite's dbstat.

`sqlite-maintctl stats --deep DB` (src/deepscan.c, in a job process, as the
daemon's deep scans run) on databases of about 100 MiB and 1 GiB: tables
with and without indexes, one index filled in random key order, and rows
deleted all over every table (pages left part empty, few freed). Against,
in the same run, each a separate process whose wall time, CPU time
(user+sys, from wait4: the job process included) and peak RSS
(/usr/bin/time %M: the largest process of the tree) are measured:

  stats --deep    sqlite-maintctl --json stats --deep DB
  stats           sqlite-maintctl --json stats DB: the same process and
                  job without the scan (the RSS the scan adds)
  dbstat (CLI)    sqlite3 -readonly DB 'SELECT count(*), sum(unused),
                  sum(ncell), sum(pgsize) FROM dbstat': the same walk with
                  nothing kept, in the sqlite3 CLI
  sqlite3_analyzer  sqlite3_analyzer DB (package sqlite3-tools): SQLite's
                  own report, which walks dbstat too
  quick_check     sqlite3 -readonly DB 'PRAGMA quick_check'
  cat             cat DB > /dev/null: a sequential read of the file, the
                  I/O floor

with a warm page cache and, as root, a cold one (sync; echo 3 >
/proc/sys/vm/drop_caches before each timed run: the guest's cache only),
then --settle seconds (default 5) before the run starts. In a VM whose
balloon device reports free pages to the host (virtio-balloon
free page reporting), the memory the drop frees goes back to the host
about 2 s later, and whoever fills the page cache next pays for getting
it back, in system time: without the pause, a case's cold figures depend
on how long ago the previous one dropped the caches (a cold `cat` of
1 GiB took 0.8 s or 3.6 s). The pause gives every cold run the same
start. The MiB read from block devices during each run (/proc/vmstat
pgpgin, anyone's) shows the file did come from the disk.
The page map of the scan (4 bytes a page) is set against the measured RSS.

    /usr/bin/python3 bench/deep-scan.py --json-out /tmp/deep.json   # 100 MiB and 1 GiB, about 6 minutes
    /usr/bin/python3 bench/deep-scan.py --quick                     # 100 MiB, warm only, 1 run: a minute

The databases go to a fresh directory under /var/tmp (or --workdir) and
are removed at the end (unless --keep).
"""

import argparse
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import binary_revision, drop_caches, finish, git_revision, loadavg, med_range, run_timed  # noqa: E402

DEFAULT_CTL = "/tmp/bench-build/src/sqlite-maintctl"

# Share of the file, bytes per row (measured, with its indexes), schema,
# rows, indexes made before the rows (filled in key order or not) and
# after, and which rows go: every k-th, spread over the whole table.
TABLES = [
    ("events", 0.40, 129,
     "CREATE TABLE events(id INTEGER PRIMARY KEY, kind INT, ts INT, payload TEXT)",
     "INSERT INTO events SELECT i, i % 50, 1700000000 + (i * 7919) % 86400000, hex(randomblob(40)) FROM n",
     [], ["CREATE INDEX events_kind ON events(kind)", "CREATE INDEX events_ts ON events(ts)"],
     "DELETE FROM events WHERE id % 3 = 0"),
    ("logs", 0.25, 244,
     "CREATE TABLE logs(at INT, level INT, line TEXT)",
     "INSERT INTO logs SELECT 1700000000 + i, i % 5, hex(randomblob(120)) FROM n",
     [], [],
     "DELETE FROM logs WHERE rowid % 4 = 1"),
    # the unique index exists before the rows, which come in random email
    # order: its pages split all over the file (non-sequential)
    ("users", 0.20, 112,
     "CREATE TABLE users(id INTEGER PRIMARY KEY, email TEXT, name TEXT, created INT)",
     "INSERT INTO users SELECT i, printf('user%09d@example.org', (i * 2654435761) % 4294967296), "
     "hex(randomblob(10)), 1600000000 + (i * 31) % 100000000 FROM n",
     ["CREATE UNIQUE INDEX users_email ON users(email)"], [],
     "DELETE FROM users WHERE id % 5 = 2"),
    ("kv", 0.15, 247,
     "CREATE TABLE kv(k TEXT PRIMARY KEY, grp INT, v BLOB) WITHOUT ROWID",
     "INSERT INTO kv SELECT printf('key%012d', i), i % 1000, randomblob(200) FROM n",
     [], ["CREATE INDEX kv_grp ON kv(grp)"],
     "DELETE FROM kv WHERE grp % 3 = 0"),
]

CASES = ["stats --deep", "stats", "dbstat (CLI)", "sqlite3_analyzer", "quick_check", "cat"]
DBSTAT_SQL = "SELECT count(*), sum(unused), sum(ncell), sum(pgsize) FROM dbstat;"


def parse_size(s):
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B)?\s*", s, re.I)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {s!r} (e.g. 1G, 300M)")
    return int(float(m.group(1)) * 1024 ** " KMGT".index((m.group(2) or " ").upper()))


def make_database(path, size, page_size, log):
    """The tables, then the deletions. Returns {table: rows left}."""
    con = sqlite3.connect(path, isolation_level=None)
    con.execute(f"PRAGMA page_size={page_size}")
    con.execute("PRAGMA journal_mode=OFF")
    con.execute("PRAGMA synchronous=OFF")
    con.execute("PRAGMA cache_size=-262144")
    rows = {}
    for name, share, per_row, create, insert, before, after, delete in TABLES:
        n = max(1000, int(size * share / per_row))
        t = time.monotonic()
        con.execute(create)
        for ix in before:
            con.execute(ix)
        con.execute(f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n}) {insert}")
        for ix in after:
            con.execute(ix)
        con.execute(delete)
        rows[name] = con.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
        log(f"  {name}: {n} rows, {rows[name]} left, {len(before) + len(after)} index(es), "
            f"{time.monotonic() - t:.1f} s")
    con.execute("PRAGMA journal_mode=DELETE")
    con.close()
    return rows


def argv_for(case, ctl, cli, analyzer, db):
    return {
        "stats --deep": [ctl, "--json", "stats", "--deep", db],
        "stats": [ctl, "--json", "stats", db],
        "dbstat (CLI)": [cli, "-readonly", db, DBSTAT_SQL],
        "sqlite3_analyzer": [analyzer, db],
        "quick_check": [cli, "-readonly", db, "PRAGMA quick_check;"],
        "cat": ["cat", db],
    }[case]


def pgpgin_kib():
    """KiB read from block devices since boot, by anyone (/proc/vmstat)."""
    with open("/proc/vmstat") as f:
        for line in f:
            if line.startswith("pgpgin "):
                return int(line.split()[1])
    return 0


def run_case(case, argv, cold, settle):
    if cold:
        if not drop_caches():
            raise RuntimeError("cannot drop caches")
        time.sleep(settle)
    keep = case in ("stats --deep", "stats", "quick_check")
    before = pgpgin_kib()
    wall, ut, st, rss, rc, out = run_timed(argv, rss=True, stdout=keep)
    s = {"wall_s": wall, "cpu_s": ut + st, "user_s": ut, "sys_s": st, "maxrss_kib": rss,
         "read_mib": (pgpgin_kib() - before) / 1024}
    if case == "quick_check" and out.strip() != "ok":
        raise RuntimeError(f"quick_check: {out[:200]}")
    if case.startswith("stats"):
        o = json.loads(out.splitlines()[0])
        if o["status"] != "ok":
            raise RuntimeError(f"{case}: {o}")
        s["answer"] = o
    return s


def summarize(samples):
    return {
        "runs": len(samples),
        "wall_s": med_range([s["wall_s"] for s in samples], 1, 3),
        "cpu_s": med_range([s["cpu_s"] for s in samples], 1, 3),
        "user_s": med_range([s["user_s"] for s in samples], 1, 3)["median"],
        "sys_s": med_range([s["sys_s"] for s in samples], 1, 3)["median"],
        "maxrss_kib": max(s["maxrss_kib"] for s in samples),
        "read_mib": med_range([s["read_mib"] for s in samples], 1, 0)["median"],
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", help="comma-separated database sizes (default 100M,1G)")
    ap.add_argument("--quick", action="store_true", help="100 MiB, 1 run, warm cache only")
    ap.add_argument("--runs", type=int, help="timed runs per case and cache state (default 3; median reported)")
    ap.add_argument("--no-cold", action="store_true", help="warm cache only")
    ap.add_argument("--page-size", type=int, default=4096,
                    help="the databases' page size (default 4096; 512 makes 8 times the pages, and of the page map)")
    ap.add_argument("--settle", type=float, default=5.0,
                    help="seconds between dropping the caches and a cold run (default 5): see the docstring")
    ap.add_argument("--ctl", default=DEFAULT_CTL, help=f"sqlite-maintctl to measure (default {DEFAULT_CTL})")
    ap.add_argument("--sqlite3", default=shutil.which("sqlite3") or "/usr/bin/sqlite3")
    ap.add_argument("--analyzer", default=shutil.which("sqlite3_analyzer") or "/usr/bin/sqlite3_analyzer")
    ap.add_argument("--workdir", help="where the databases go (default: a fresh directory under /var/tmp)")
    ap.add_argument("--keep", action="store_true", help="leave the databases behind")
    ap.add_argument("--json-out")
    args = ap.parse_args()

    sizes = [parse_size(x) for x in args.sizes.split(",")] if args.sizes else \
        ([100 << 20] if args.quick else [100 << 20, 1 << 30])
    runs = args.runs or (1 if args.quick else 3)
    cold = not (args.quick or args.no_cold)
    for b in (args.ctl, args.sqlite3, args.analyzer):
        if not os.access(b, os.X_OK):
            sys.exit(f"{b} is not an executable (bench/build.sh builds sqlite-maintctl; sqlite3_analyzer is "
                     "in sqlite3-tools)")
    if cold and os.geteuid() != 0:
        print("not root: warm cache only", file=sys.stderr)
        cold = False

    root = args.workdir or tempfile.mkdtemp(prefix="maintd-deepscan-", dir="/var/tmp")
    os.makedirs(root, exist_ok=True)
    free = shutil.disk_usage(root).free
    if free < 1.2 * sum(sizes):
        sys.exit(f"{root}: {free >> 20} MiB free, want {int(1.2 * sum(sizes)) >> 20} MiB")
    src_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    version = subprocess.run([args.sqlite3, "--version"], capture_output=True, text=True).stdout.split()[0]
    result = {"commit": binary_revision(args.ctl, git_revision(src_root)), "ctl": args.ctl, "sqlite3": version,
              "page_size": args.page_size, "runs": runs, "settle_s": args.settle if cold else None, "nproc": os.cpu_count(),
              "loadavg_at_start": loadavg(), "databases": []}

    def log(msg):
        print(msg, flush=True)

    try:
        for size in sizes:
            db = os.path.join(root, f"deep-{size >> 20}M.db")
            log(f"making {db} (~{size >> 20} MiB)")
            t = time.monotonic()
            rows = make_database(db, size, args.page_size, log)
            ent = {"size_requested": size, "rows": rows, "build_s": round(time.monotonic() - t, 1),
                   "file_size": os.path.getsize(db), "results": {}}
            log(f"  {ent['file_size'] / (1 << 20):.0f} MiB in {ent['build_s']} s")
            # warm-up, not counted: every case once (the file in the page cache)
            for case in CASES:
                s = run_case(case, argv_for(case, args.ctl, args.sqlite3, args.analyzer, db), False, 0)
                if case == "stats --deep":
                    deep = s["answer"]
            d = deep["deep"]
            ent["page_count"] = deep["page_count"]
            ent["freelist_count"] = deep["freelist_count"]
            ent["fragmentation_percent"] = deep["fragmentation_percent"]
            ent["deep"] = {k: v for k, v in d.items() if k != "btrees"}
            ent["btrees"] = d.get("btrees", [])
            # deepscan.c: calloc(page_count + 1, 4), and per b-tree a
            # struct btree_space and its lowest page
            ent["page_map_bytes"] = 4 * (deep["page_count"] + 1)
            for cache in (["warm", "cold"] if cold else ["warm"]):
                samples = {c: [] for c in CASES}
                for i in range(runs):
                    for case in CASES:
                        s = run_case(case, argv_for(case, args.ctl, args.sqlite3, args.analyzer, db), cache == "cold",
                                     args.settle)
                        s.pop("answer", None)
                        samples[case].append(s)
                        log(f"  {size >> 20} MiB {cache} run {i + 1}: {case:17} wall {s['wall_s']:7.3f} s  "
                            f"cpu {s['cpu_s']:7.3f} s  rss {s['maxrss_kib'] / 1024:6.1f} MiB  read {s['read_mib']:6.0f} MiB")
                ent["results"][cache] = {c: summarize(samples[c]) for c in CASES}
            result["databases"].append(ent)
            if not args.keep:
                os.unlink(db)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"kept {root}")

    result["loadavg_at_end"] = loadavg()
    for ent in result["databases"]:
        mib = ent["file_size"] / (1 << 20)
        d = ent["deep"]
        print()
        print(f"database: {mib:.0f} MiB ({ent['file_size']:,} bytes), {ent['page_count']:,} pages, "
              f"{ent['freelist_count']:,} free ({ent['fragmentation_percent']}%); deep scan: unused "
              f"{d.get('unused_percent')}% of the b-tree bytes, non-sequential {d.get('nonsequential_percent')}%, "
              f"reclaimable {d.get('reclaimable_bytes', 0) / (1 << 20):.1f} MiB; rows left "
              f"{', '.join(f'{t} {n:,}' for t, n in ent['rows'].items())}")
        print(f"page map: {ent['page_map_bytes'] / (1 << 20):.2f} MiB")
        for cache, res in ent["results"].items():
            base = res["stats --deep"]
            print()
            print(f"{mib:.0f} MiB, {cache} cache, median of {runs} (min-max):")
            print("| case | wall s | CPU s (user+sys) | user / sys s | MiB/s | max RSS MiB | wall / deep | CPU / deep "
                  "| MiB read from disk |")
            print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
            for case, r in res.items():
                w, c = r["wall_s"], r["cpu_s"]
                print(f"| {case} | {w['median']:.3f} ({w['min']:.3f}-{w['max']:.3f}) | "
                      f"{c['median']:.3f} ({c['min']:.3f}-{c['max']:.3f}) | {r['user_s']:.3f} / {r['sys_s']:.3f} | "
                      f"{mib / max(w['median'], 1e-6):.0f} | {r['maxrss_kib'] / 1024:.1f} | "
                      f"{w['median'] / base['wall_s']['median']:.2f} | "
                      f"{c['median'] / max(base['cpu_s']['median'], 1e-3):.2f} | {r['read_mib']:.0f} |")
    finish(result, args.json_out, loads=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
