#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""What deciding staleness costs, next to the ANALYZE it saves.

One database of about --size bytes (default 1 GiB) with tables of different
sizes, with and without indexes, whose statistics are current (the
application ran a full ANALYZE). Then, side by side in one run, each as a
separate process whose wall time and CPU time (user+sys, from wait4) are
measured:

  decide          sqlite-maintctl analyze DB: nothing is stale, so it only
                  decides (the read-only phase: sqlite_stat1 and count(*)
                  of every table) and writes nothing (checked)
  ctl --force     sqlite-maintctl analyze --force DB: every table, one
                  statement each, tables above large_table_rows (1000000)
                  under analysis_limit 1000, as the daemon would
  ctl --force, all in full
                  the same with large_table_rows above every table
  ANALYZE         sqlite3 DB 'ANALYZE' (the CLI, the same libsqlite3)
  ANALYZE, limit 1000
                  sqlite3 DB 'PRAGMA analysis_limit=1000; ANALYZE'

with a warm page cache and, as root, a cold one (sync; echo 3 >
/proc/sys/vm/drop_caches before each timed run). Each repetition runs the
cases in the order above except that both ANALYZEs of the CLI come last and
the full one after the sampled one, so the next "decide" again finds exact
statistics, as the daemon would on an unchanged database.

    /usr/bin/python3 bench/analyze-staleness.py --json-out /tmp/analyze.json
    /usr/bin/python3 bench/analyze-staleness.py --quick      # 100 MiB, warm only, under a minute

The database goes to a fresh directory under /var/tmp (or --workdir) and is
removed at the end (unless --keep). Check the free space first: it needs
--size bytes, and another --size while it is written.
"""

import argparse
import json
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import binary_revision, drop_caches, finish, git_revision, run_timed  # noqa: E402

DEFAULT_CTL = "/tmp/bench-build/src/sqlite-maintctl"

# Table shapes: share of the database, bytes per row as measured on a
# 100 MiB build (row plus its index entries plus b-tree overhead), schema.
TABLES = [
    # events: the harmful case's shape, one value everywhere in (a, b)
    ("events", 0.40, 152,
     "CREATE TABLE events(id INTEGER PRIMARY KEY, a INT, b INT, c INT, ts INT, payload TEXT)",
     "INSERT INTO events SELECT i, 1, 1, i, 1700000000 + (i * 7919) % 86400000, hex(randomblob(50)) FROM n",
     ["CREATE INDEX events_ab ON events(a, b)", "CREATE INDEX events_c ON events(c)",
      "CREATE INDEX events_ts ON events(ts)"]),
    # logs: no index at all (ANALYZE, even sampled, counts its every row)
    ("logs", 0.30, 262,
     "CREATE TABLE logs(at INT, level INT, line TEXT)",
     "INSERT INTO logs SELECT 1700000000 + i, i % 5, hex(randomblob(120)) FROM n",
     []),
    # users: a unique text index and an integer one
    ("users", 0.18, 104,
     "CREATE TABLE users(id INTEGER PRIMARY KEY, email TEXT, name TEXT, created INT)",
     "INSERT INTO users SELECT i, printf('user%09d@example.org', (i * 2654435761) % 4294967296), "
     "hex(randomblob(10)), 1600000000 + (i * 31) % 100000000 FROM n",
     ["CREATE UNIQUE INDEX users_email ON users(email)", "CREATE INDEX users_created ON users(created)"]),
    # kv: WITHOUT ROWID, its primary key is its only b-tree, plus an index
    ("kv", 0.12, 266,
     "CREATE TABLE kv(k TEXT PRIMARY KEY, grp INT, v BLOB) WITHOUT ROWID",
     "INSERT INTO kv SELECT printf('key%012d', i), i % 1000, randomblob(200) FROM n",
     ["CREATE INDEX kv_grp ON kv(grp)"]),
]
SMALL = [
    ("settings", 100, "CREATE TABLE settings(k TEXT PRIMARY KEY, v TEXT)",
     "INSERT INTO settings SELECT printf('setting.%d', i), hex(randomblob(8)) FROM n", []),
    ("tags", 5000, "CREATE TABLE tags(id INTEGER PRIMARY KEY, name TEXT)",
     "INSERT INTO tags SELECT i, printf('tag%d', i % 700) FROM n", ["CREATE INDEX tags_name ON tags(name)"]),
]

# The order of each repetition: the full ANALYZE last, so that the next
# "decide" finds exact statistics again.
CASES = ["decide", "ctl --force", "ctl --force, all in full", "ANALYZE, limit 1000", "ANALYZE"]


def parse_size(s):
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B)?\s*", s, re.I)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {s!r} (e.g. 1G, 300M)")
    return int(float(m.group(1)) * 1024 ** " KMGT".index((m.group(2) or " ").upper()))


# --------------------------------------------------------------------------
# The database

def make_database(path, size, log):
    """The tables, their indexes (built after the rows), then the
    application's full ANALYZE. Returns {table: rows}."""
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA page_size=4096")
    con.execute("PRAGMA journal_mode=OFF")
    con.execute("PRAGMA synchronous=OFF")
    con.execute("PRAGMA cache_size=-262144")
    rows = {}
    for name, share, per_row, create, insert, indexes in TABLES:
        n = max(1000, int(size * share / per_row))
        t = time.monotonic()
        con.execute(create)
        con.execute(f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n}) {insert}")
        for ix in indexes:
            con.execute(ix)
        rows[name] = n
        log(f"  {name}: {n} rows, {len(indexes)} index(es), {time.monotonic() - t:.1f} s")
    for name, n, create, insert, indexes in SMALL:
        con.execute(create)
        con.execute(f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n}) {insert}")
        for ix in indexes:
            con.execute(ix)
        rows[name] = n
    t = time.monotonic()
    con.execute("ANALYZE")
    log(f"  the application's full ANALYZE: {time.monotonic() - t:.1f} s")
    con.execute("PRAGMA journal_mode=DELETE")
    con.close()
    return rows


def table_sizes(path):
    """{b-tree name: bytes} from dbstat (every page read once)."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return dict(con.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name"))
    finally:
        con.close()


def btree_owner(path):
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return dict(con.execute("SELECT name, tbl_name FROM sqlite_master WHERE type IN ('table', 'index')"))
    finally:
        con.close()


def count_costs(path, tables, runs):
    """Where deciding goes: per table, the b-tree SQLite counts (EXPLAIN
    QUERY PLAN of count(*)) and the median wall time of count(*) on one
    connection, warm."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    out = {}
    try:
        for t in tables:
            plan = " ".join(r[3] for r in con.execute(f'EXPLAIN QUERY PLAN SELECT count(*) FROM "{t}"'))
            walls = []
            for _ in range(runs):
                t0 = time.perf_counter()
                con.execute(f'SELECT count(*) FROM "{t}"').fetchone()
                walls.append(time.perf_counter() - t0)
            out[t] = {"plan": plan, "count_wall_s": round(statistics.median(walls), 4)}
    finally:
        con.close()
    return out


# --------------------------------------------------------------------------
# Running one case

def timed(argv, timeout=3600):
    """(wall s, user s, sys s, stdout) of argv, CPU from wait4."""
    wall, ut, st, _, _, out = run_timed(argv, timeout=timeout)
    return wall, ut, st, out


def change_counter(path):
    with open(path, "rb") as f:
        f.seek(24)
        return int.from_bytes(f.read(4), "big")


def argv_for(case, ctl, sqlite3_cli, db, conf_full):
    return {
        "decide": [ctl, "--json", "analyze", db],
        "ctl --force": [ctl, "--json", "analyze", "--force", db],
        "ctl --force, all in full": [ctl, "-c", conf_full, "--json", "analyze", "--force", db],
        "ANALYZE, limit 1000": [sqlite3_cli, db, "PRAGMA analysis_limit=1000; ANALYZE;"],
        "ANALYZE": [sqlite3_cli, db, "ANALYZE;"],
    }[case]


def run_case(case, argv, db, cold):
    if cold and not drop_caches():
        raise RuntimeError("cannot drop caches")
    before = change_counter(db)
    wall, ut, st, out = timed(argv)
    sample = {"wall_s": wall, "user_s": ut, "sys_s": st, "cpu_s": ut + st}
    if case.startswith("ctl") or case == "decide":
        o = json.loads(out.splitlines()[0])
        sample["verdicts"] = {t["name"]: t["verdict"] for t in o.get("tables", [])}
        sample["status"] = o["status"]
    if case == "decide":
        # Nothing is stale: nothing may be written, and nothing analyzed.
        wrote = change_counter(db) != before
        stale = {n: v for n, v in sample["verdicts"].items() if v not in ("unchanged", "empty")}
        if wrote or stale:
            raise RuntimeError(f"decide was not decide-only: wrote={wrote}, {stale}")
    return sample


def summarize(samples):
    def med(k):
        return statistics.median(s[k] for s in samples)
    return {
        "runs": len(samples),
        "wall_s": round(med("wall_s"), 4),
        "wall_s_range": [round(min(s["wall_s"] for s in samples), 4), round(max(s["wall_s"] for s in samples), 4)],
        "cpu_s": round(med("cpu_s"), 4),
        "cpu_s_range": [round(min(s["cpu_s"] for s in samples), 4), round(max(s["cpu_s"] for s in samples), 4)],
        "user_s": round(med("user_s"), 4),
        "sys_s": round(med("sys_s"), 4),
    }


# --------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=parse_size, help="database size, e.g. 1G (default), 300M")
    ap.add_argument("--quick", action="store_true", help="100 MiB, 1 run, warm cache only: under a minute")
    ap.add_argument("--runs", type=int, help="timed runs per case and cache state (default 3; median reported)")
    ap.add_argument("--no-cold", action="store_true", help="warm cache only")
    ap.add_argument("--ctl", default=DEFAULT_CTL, help=f"sqlite-maintctl to measure (default {DEFAULT_CTL})")
    ap.add_argument("--sqlite3", default=shutil.which("sqlite3") or "/usr/bin/sqlite3")
    ap.add_argument("--workdir", help="where the database goes (default: a fresh directory under /var/tmp)")
    ap.add_argument("--keep", action="store_true", help="leave the database behind")
    ap.add_argument("--json-out")
    args = ap.parse_args()

    size = args.size or (100 << 20 if args.quick else 1 << 30)
    runs = args.runs or (1 if args.quick else 3)
    cold = not (args.quick or args.no_cold)
    for b in (args.ctl, args.sqlite3):
        if not os.access(b, os.X_OK):
            sys.exit(f"{b} is not an executable (bench/build.sh builds sqlite-maintctl)")
    if cold and os.geteuid() != 0:
        print("not root: warm cache only", file=sys.stderr)
        cold = False

    root = args.workdir or tempfile.mkdtemp(prefix="maintd-analyze-", dir="/var/tmp")
    os.makedirs(root, exist_ok=True)
    free = shutil.disk_usage(root).free
    if free < 2.2 * size:
        sys.exit(f"{root}: {free >> 20} MiB free, want {int(2.2 * size) >> 20} MiB")
    db = os.path.join(root, "staleness.db")
    conf_full = os.path.join(root, "all-in-full.yaml")
    with open(conf_full, "w") as f:
        f.write("# written by bench/analyze-staleness.py: no table counts as large\n"
                f"defaults:\n  analyze:\n    large_table_rows: {10 ** 15}\n"
                f"databases:\n  - path: {json.dumps(db)}\n")
    src_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = {"commit": binary_revision(args.ctl, git_revision(src_root)), "ctl": args.ctl,
              "sqlite3": subprocess.run([args.sqlite3, "--version"], capture_output=True,
                                        text=True).stdout.split()[0],
              "size_requested": size, "runs": runs, "nproc": os.cpu_count(),
              "loadavg_at_start": open("/proc/loadavg").read().split()[:3], "results": {}}

    def log(msg):
        print(msg, flush=True)

    try:
        log(f"making {db} (~{size >> 20} MiB)")
        t = time.monotonic()
        result["rows"] = make_database(db, size, log)
        result["build_s"] = round(time.monotonic() - t, 1)
        result["file_size"] = os.path.getsize(db)
        sizes, owner = table_sizes(db), btree_owner(db)
        per_table = {}
        for name, nbytes in sizes.items():
            tbl = owner.get(name, name)
            d = per_table.setdefault(tbl, {"table_bytes": 0, "index_bytes": 0, "indexes": 0})
            if name == tbl:
                d["table_bytes"] += nbytes
            else:
                d["index_bytes"] += nbytes
                d["indexes"] += 1
        result["tables"] = {t: {**per_table.get(t, {}), "rows": n} for t, n in result["rows"].items()}
        log(f"  {result['file_size'] / (1 << 20):.0f} MiB in {result['build_s']} s")

        # Warm-up, not counted: every case once (the file ends up in the page cache).
        order = CASES
        for case in order:
            run_case(case, argv_for(case, args.ctl, args.sqlite3, db, conf_full), db, False)
        for cache in (["warm", "cold"] if cold else ["warm"]):
            samples = {c: [] for c in order}
            for i in range(runs):
                for case in order:
                    s = run_case(case, argv_for(case, args.ctl, args.sqlite3, db, conf_full), db, cache == "cold")
                    samples[case].append(s)
                    log(f"  {cache} run {i + 1}: {case:26} wall {s['wall_s']:8.3f} s  cpu {s['cpu_s']:8.3f} s")
            res = {}
            for case in order:
                res[case] = summarize(samples[case])
                v = samples[case][-1].get("verdicts")
                if v:
                    res[case]["verdicts"] = v
            result["results"][cache] = res
            if cache == "warm":
                result["count_costs"] = count_costs(db, list(result["rows"]), max(runs, 3))
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"kept {root}")

    result["loadavg_at_end"] = open("/proc/loadavg").read().split()[:3]
    print()
    print(f"database: {result['file_size'] / (1 << 20):.0f} MiB, "
          f"{sum(result['rows'].values()):,} rows in {len(result['rows'])} tables")
    print("| table | rows | table MiB | indexes | index MiB |")
    print("|---|---:|---:|---:|---:|")
    for t, d in result["tables"].items():
        print(f"| {t} | {d['rows']:,} | {d.get('table_bytes', 0) / (1 << 20):.1f} | {d.get('indexes', 0)} | "
              f"{d.get('index_bytes', 0) / (1 << 20):.1f} |")
    if "count_costs" in result:
        print()
        print("deciding, table by table (warm, median): count(*) and the b-tree SQLite counts")
        print("| table | count(*) s | plan |")
        print("|---|---:|---|")
        for t, c in result["count_costs"].items():
            print(f"| {t} | {c['count_wall_s']:.4f} | {c['plan']} |")
    for cache, res in result["results"].items():
        base = res["decide"]
        print()
        print(f"{cache} cache, median of {runs} (min-max):")
        print("| case | wall s | CPU s (user+sys) | user / sys s | wall / decide | CPU / decide |")
        print("|---|---:|---:|---:|---:|---:|")
        for case, r in res.items():
            print(f"| {case} | {r['wall_s']:.3f} ({r['wall_s_range'][0]:.3f}-{r['wall_s_range'][1]:.3f}) | "
                  f"{r['cpu_s']:.3f} ({r['cpu_s_range'][0]:.3f}-{r['cpu_s_range'][1]:.3f}) | "
                  f"{r['user_s']:.3f} / {r['sys_s']:.3f} | {r['wall_s'] / base['wall_s']:.1f} | "
                  f"{r['cpu_s'] / max(base['cpu_s'], 0.001):.1f} |")
        v = res["ctl --force"].get("verdicts", {})
        limited = [t for t, x in v.items() if x == "analyzed_limited"]
        if limited:
            print(f"ctl --force sampled (above large_table_rows): {', '.join(limited)}")
    finish(result, args.json_out, loads=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
