#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""What running each operation in a job process of its own costs.

Every operation on a database (a statistics read the header cannot answer,
VACUUM, ANALYZE, a check, a checkpoint, a deep scan) runs in a process of
its own: fork, execveat of the program itself, which becomes the file's
owner, checks the files and answers over a pipe (src/jobproc.c). The
operation measured here is the smallest one, the statistics read, so that
what the process adds shows:

1. sqlite-maintctl --json stats over N small databases in one invocation
   (one job process per database, one after the other), against the same
   statistics read done in one Python process with the sqlite3 module (the
   same PRAGMAs, read-only, one connection per file), in the same run,
   alternating; wall and CPU time per database, and the ratio. Layouts:
     rollback   rollback-journal databases (the job opens them mode=ro)
     wal-open   WAL databases whose -wal holds frames, each kept open by an
                application (so there is a -shm): the job reads through
                SQLite with the -shm read-only
     wal-copy   WAL databases with a -wal of frames and no -shm (a
                restored copy): the job reads the -wal itself (walread), no
                SQLite; the Python reference opens it mode=ro, which makes
                a -shm (removed after each reference run)
2. One database, M times: `sqlite-maintctl --json stats DB` against
   `sqlite-maintctl --version` and `sqlite-maintd --version` (the programs
   started and ended, no job; a job is the program itself started again):
   wall and CPU time of each run, median, mean, p90 and how many took
   over 40 ms.
3. The daemon: sqlite-maintd --once --dry-run over N databases of each
   layout (as bench/poll-cost.py): rollback databases are decided on
   their header alone (no job), WAL ones with frames in the -wal need the
   precise read, a job each (two at a time). Wall and CPU time (the
   daemon and its job processes, from wait4), peak RSS (/usr/bin/time),
   and checks that the reads wrote nothing (every -wal still there, its
   size unchanged; no -shm made).

Nothing is due (thresholds not reached, ANALYZE and deep scans off), so
this is the cost of looking.

    /usr/bin/python3 bench/jobproc-cost.py --json-out /tmp/jobproc.json   # about 4 minutes
    /usr/bin/python3 bench/jobproc-cost.py --quick                        # under a minute

The files go to a fresh directory under /var/tmp (removed at the end).
The page cache is warm: a first run, not counted, reads the files in.
"""

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import (binary_revision, copy_set, finish, git_revision, loadavg, make_template,  # noqa: E402
                      med_range, run_timed, write_watch_config)

DEFAULT_BUILD = "/tmp/bench-build"
LAYOUTS = ("rollback", "wal-open", "wal-copy")

# The statistics read of a job (src/dbstat.c dbstat_read_db, after
# src/maint.c db_connect's PRAGMAs), done in one Python process, one
# connection per file; it times only the loop. argv: URI parameters, then
# the files.
REFERENCE = r"""
import json, os, resource, sqlite3, sys, time
params, paths = sys.argv[1], sys.argv[2:]
SQL = ("SELECT * FROM pragma_page_count(), pragma_freelist_count(), pragma_page_size(),"
       " pragma_auto_vacuum(), pragma_journal_mode(), pragma_schema_version()")
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
rows = []
c0, t0 = cpu(), time.monotonic()
for p in paths:
    con = sqlite3.connect(f"file:{p}?{params}", uri=True, isolation_level=None)
    con.execute("PRAGMA cell_size_check=ON")
    con.execute("PRAGMA mmap_size=0")
    rows.append(con.execute(SQL).fetchone())
    os.stat(p)
    try:
        os.stat(p + "-wal")
    except FileNotFoundError:
        pass
    con.close()
t1, c1 = time.monotonic(), cpu()
print(json.dumps({"wall_s": t1 - t0, "cpu_s": c1 - c0, "page_counts": sorted(set(r[0] for r in rows)),
                  "journal_modes": sorted(set(r[4] for r in rows))}))
"""

# An application that keeps one idle connection open to each WAL database
# (reading once so the WAL index is set up), until its stdin closes.
HOLDER = r"""
import glob, os, resource, sqlite3, sys
paths = [p for d in sys.argv[1:] for p in sorted(glob.glob(os.path.join(d, "*.db")))]
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * len(paths) + 64)), hard))
cons = []
for p in paths:
    c = sqlite3.connect(p, isolation_level=None)
    c.execute("SELECT count(*) FROM t").fetchone()
    cons.append(c)
print("ready", flush=True)
sys.stdin.read()
"""


# --------------------------------------------------------------------------
# Databases

def remove_shm(dest):
    """The -shm files a reference run made (wal-copy only)."""
    n = 0
    for f in os.listdir(dest):
        if f.endswith("-shm"):
            os.unlink(os.path.join(dest, f))
            n += 1
    return n


def side_files(dest, n, wal_size):
    """(-wal files of the original size, -shm files) among the first n."""
    wal = shm = 0
    for i in range(n):
        p = os.path.join(dest, f"db{i:05d}.db")
        try:
            wal += os.path.getsize(p + "-wal") == wal_size
        except FileNotFoundError:
            pass
        shm += os.path.exists(p + "-shm")
    return wal, shm


# --------------------------------------------------------------------------

def reference(paths, params):
    out = subprocess.run([sys.executable, "-c", REFERENCE, params, *paths], capture_output=True, text=True,
                         check=True, timeout=600)
    return json.loads(out.stdout)


def summary(rows, n):
    """Per database: median (min-max) wall and CPU ms over the runs."""
    return {
        "wall_ms_per_db": med_range([r["wall_s"] / n for r in rows], 1000, 3),
        "cpu_ms_per_db": med_range([r["cpu_s"] / n for r in rows], 1000, 3),
        "runs": len(rows),
    }


def pct(sorted_values, q):
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default=DEFAULT_BUILD,
                    help=f"bench/build.sh's directory (default {DEFAULT_BUILD}): BUILD/src/sqlite-maintd, -maintctl")
    ap.add_argument("--quick", action="store_true", help="ctl over 50, daemon over 100, 2 runs, 30 single runs")
    ap.add_argument("--ctl-databases", type=int, help="databases per sqlite-maintctl stats run (default 200)")
    ap.add_argument("--counts", help="comma-separated N for the daemon (default 100,1000)")
    ap.add_argument("--runs", type=int, help="timed runs per case (default 5; median reported)")
    ap.add_argument("--single-runs", type=int, help="runs of part 2 (default 100)")
    ap.add_argument("--layouts", default=",".join(LAYOUTS))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workdir")
    ap.add_argument("--json-out")
    args = ap.parse_args()

    daemon = os.path.join(args.build, "src", "sqlite-maintd")
    ctl = os.path.join(args.build, "src", "sqlite-maintctl")
    for b in (daemon, ctl):
        if not os.access(b, os.X_OK):
            sys.exit(f"{b} is not an executable (bench/build.sh {args.build})")
    n_ctl = args.ctl_databases or (50 if args.quick else 200)
    counts = [int(x) for x in args.counts.split(",")] if args.counts else ([100] if args.quick else [100, 1000])
    runs = args.runs or (2 if args.quick else 5)
    single = args.single_runs or (30 if args.quick else 100)
    layouts = [x for x in args.layouts.split(",") if x]
    n_max = max(counts + [n_ctl])

    root = args.workdir or tempfile.mkdtemp(prefix="maintd-jobproc-", dir="/var/tmp")
    os.makedirs(root, exist_ok=True)
    src_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = {"commit": binary_revision(daemon, git_revision(src_root)), "daemon": daemon, "ctl_binary": ctl,
              "sqlite": sqlite3.sqlite_version, "seed": args.seed, "runs": runs, "nproc": os.cpu_count(),
              "loadavg_at_start": loadavg(), "ctl_databases": n_ctl, "ctl": {}, "single": {}, "once": []}

    def log(msg):
        print(msg, flush=True)

    holder = None
    keep = []
    try:
        # The databases: per layout, one directory per daemon N (and the
        # ctl runs use the first n_ctl of the largest).
        templates = {}
        dirs = {}
        for layout in layouts:
            wal = layout != "rollback"
            if wal not in templates:
                path, con = make_template(root, "wal" if wal else "rollback", args.seed)
                templates[wal] = path
                if con is not None:
                    keep.append(con)
            for n in sorted(set(counts + [n_max])):
                d = os.path.join(root, layout, f"n{n}")
                copy_set(templates[wal], wal, d, n)
                dirs[(layout, n)] = d
        wal_size = os.path.getsize(templates[True] + "-wal") if True in templates else 0
        for con in keep:
            con.close()
        if "wal-open" in layouts:
            holder = subprocess.Popen([sys.executable, "-c", HOLDER,
                                       *[d for (lay, _), d in dirs.items() if lay == "wal-open"]],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            line = holder.stdout.readline().strip()
            if line != "ready":
                raise RuntimeError(f"the connection holder said {line!r}")
        params = {"rollback": "mode=ro", "wal-open": "mode=ro&readonly_shm=1", "wal-copy": "mode=ro"}

        # 1. sqlite-maintctl stats against the in-process read.
        for layout in layouts:
            d = dirs[(layout, n_max)]
            paths = [os.path.join(d, f"db{i:05d}.db") for i in range(n_ctl)]
            argv = [ctl, "--json", "stats", *paths]
            run_timed(argv, stdout=False)  # warm-up
            reference(paths, params[layout])
            remove_shm(d) if layout == "wal-copy" else None
            ctl_rows, ref_rows = [], []
            for i in range(runs):
                wall, ut, st, _, rc, out = run_timed(argv)
                lines = [json.loads(x) for x in out.splitlines() if x.strip()]
                if len(lines) != n_ctl or any(x["status"] != "ok" for x in lines):
                    raise RuntimeError(f"ctl stats: {len(lines)} answers, statuses "
                                       f"{sorted(set(x['status'] for x in lines))}")
                ctl_rows.append({"wall_s": wall, "cpu_s": ut + st, "user_s": ut, "sys_s": st})
                ref = reference(paths, params[layout])
                made = remove_shm(d) if layout == "wal-copy" else 0
                ref["shm_made"] = made
                ref_rows.append(ref)
                log(f"ctl {layout:8} run {i + 1}: ctl {1000 * wall / n_ctl:.2f} ms/db wall, "
                    f"{1000 * (ut + st) / n_ctl:.2f} ms/db CPU; python {1000 * ref['wall_s'] / n_ctl:.3f} ms/db wall, "
                    f"{1000 * ref['cpu_s'] / n_ctl:.3f} ms/db CPU")
            c, r = summary(ctl_rows, n_ctl), summary(ref_rows, n_ctl)
            c["user_ms_per_db"] = round(1000 * statistics.median(x["user_s"] for x in ctl_rows) / n_ctl, 3)
            c["sys_ms_per_db"] = round(1000 * statistics.median(x["sys_s"] for x in ctl_rows) / n_ctl, 3)
            ent = {"ctl": c, "python": r,
                   "wall_ratio": round(c["wall_ms_per_db"]["median"] / r["wall_ms_per_db"]["median"], 1),
                   "cpu_ratio": round(c["cpu_ms_per_db"]["median"] / max(r["cpu_ms_per_db"]["median"], 0.001), 1),
                   "added_wall_ms_per_db": round(c["wall_ms_per_db"]["median"] - r["wall_ms_per_db"]["median"], 3),
                   "added_cpu_ms_per_db": round(c["cpu_ms_per_db"]["median"] - r["cpu_ms_per_db"]["median"], 3),
                   "python_page_counts": ref_rows[-1]["page_counts"],
                   "python_journal_modes": ref_rows[-1]["journal_modes"],
                   "python_shm_made": ref_rows[-1]["shm_made"]}
            if layout != "rollback":
                ent["wal_kept_shm"] = side_files(d, n_ctl, wal_size)
            result["ctl"][layout] = ent

        # 2. One database, many times: the job against the programs alone.
        def single_runs(argv):
            walls, cpus = [], []
            for _ in range(single):
                wall, ut, st, _, _, _ = run_timed(argv, stdout=False)
                walls.append(1000 * wall)
                cpus.append(1000 * (ut + st))
            w = sorted(walls)
            return {"wall_ms": med_range(w, 1, 2), "wall_ms_mean": round(statistics.mean(w), 2),
                    "wall_ms_p90": round(pct(w, 0.9), 2), "over_40ms": sum(1 for x in w if x > 40),
                    "cpu_ms": med_range(cpus, 1, 2), "cpu_ms_mean": round(statistics.mean(cpus), 2),
                    "runs": single}

        result["single"]["sqlite-maintctl --version"] = single_runs([ctl, "--version"])
        result["single"]["sqlite-maintd --version"] = single_runs([daemon, "--version"])
        for layout in layouts:
            db = os.path.join(dirs[(layout, n_max)], "db00000.db")
            e = result["single"][f"sqlite-maintctl --json stats ({layout})"] = single_runs([ctl, "--json", "stats", db])
            log(f"single {layout:8}: stats median {e['wall_ms']['median']} ms, mean {e['wall_ms_mean']} ms, "
                f"over 40 ms {e['over_40ms']}/{single}")
            if layout == "wal-copy":
                remove_shm(dirs[(layout, n_max)])

        # 3. The daemon's poll round.
        for n in counts:
            for layout in layouts:
                d = dirs[(layout, n)]
                conf = os.path.join(root, f"{layout}-{n}.yaml")
                state = os.path.join(root, f"state-{layout}-{n}")
                os.makedirs(state, exist_ok=True)
                write_watch_config(conf, os.path.join(d, "*.db"), state, "60s", "bench/jobproc-cost.py")
                argv = [daemon, "-c", conf, "--once", "--dry-run", "--log-target=console"]
                run_timed(argv, stdout=False)  # warm-up: page cache, state file
                rows = []
                for _ in range(runs):
                    wall, ut, st, rss, rc, _ = run_timed(argv, rss=True, stdout=False)
                    rows.append({"wall_s": wall, "cpu_s": ut + st, "user_s": ut, "sys_s": st, "rss": rss})
                r = {"layout": layout, "n": n,
                     "wall_ms": med_range([x["wall_s"] for x in rows], 1000, 1),
                     "cpu_ms": med_range([x["cpu_s"] for x in rows], 1000, 1),
                     "user_ms": round(1000 * statistics.median(x["user_s"] for x in rows), 1),
                     "sys_ms": round(1000 * statistics.median(x["sys_s"] for x in rows), 1),
                     "maxrss_kib": max(x["rss"] for x in rows), "runs": runs}
                if layout != "rollback":
                    r["wal_unchanged"], r["shm_files"] = side_files(d, n, wal_size)
                result["once"].append(r)
                log(f"once {layout:8} N={n:5}: wall {r['wall_ms']['median']} ms, CPU {r['cpu_ms']['median']} ms "
                    f"(user {r['user_ms']}, sys {r['sys_ms']}), max RSS {r['maxrss_kib']} KiB")
    finally:
        if holder is not None:
            holder.stdin.close()
            try:
                holder.wait(timeout=120)
            except subprocess.TimeoutExpired:
                holder.kill()
        shutil.rmtree(root, ignore_errors=True)

    # What a job adds in the daemon: the WAL round over the rollback round
    # (header reads), less the read itself (part 1's Python figure).
    once = {(r["layout"], r["n"]): r for r in result["once"]}
    result["daemon_per_job"] = []
    for n in counts:
        base = once.get(("rollback", n))
        for layout in ("wal-open", "wal-copy"):
            r = once.get((layout, n))
            if not base or not r:
                continue
            read = result["ctl"].get(layout, {}).get("python", {})
            ent = {"layout": layout, "n": n,
                   "wall_ms_per_db": round((r["wall_ms"]["median"] - base["wall_ms"]["median"]) / n, 3),
                   "cpu_ms_per_db": round((r["cpu_ms"]["median"] - base["cpu_ms"]["median"]) / n, 3),
                   "wall_ratio": round(r["wall_ms"]["median"] / base["wall_ms"]["median"], 1),
                   "cpu_ratio": round(r["cpu_ms"]["median"] / max(base["cpu_ms"]["median"], 0.1), 1)}
            if read:
                ent["python_read_cpu_ms_per_db"] = read["cpu_ms_per_db"]["median"]
            result["daemon_per_job"].append(ent)
    result["loadavg_at_end"] = loadavg()

    print()
    print(f"1. sqlite-maintctl --json stats over {n_ctl} databases against the same read in one Python process "
          f"(per database, median of {runs} (min-max)):")
    print("| layout | ctl wall ms | ctl CPU ms | Python wall ms | Python CPU ms | wall ratio | CPU ratio | "
          "added wall ms | added CPU ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for layout, e in result["ctl"].items():
        c, p = e["ctl"], e["python"]

        def f(x):
            return f"{x['median']:.3f} ({x['min']:.3f}-{x['max']:.3f})"
        print(f"| {layout} | {f(c['wall_ms_per_db'])} | {f(c['cpu_ms_per_db'])} | {f(p['wall_ms_per_db'])} | "
              f"{f(p['cpu_ms_per_db'])} | {e['wall_ratio']} | {e['cpu_ratio']} | {e['added_wall_ms_per_db']} | "
              f"{e['added_cpu_ms_per_db']} |")
    print()
    print(f"2. one database, {single} runs each: wall ms")
    print("| command | wall ms median (min-max) | mean | p90 | runs over 40 ms | CPU ms median | CPU ms mean |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for what, x in result["single"].items():
        print(f"| {what} | {x['wall_ms']['median']} ({x['wall_ms']['min']}-{x['wall_ms']['max']}) | "
              f"{x['wall_ms_mean']} | {x['wall_ms_p90']} | {x['over_40ms']} | {x['cpu_ms']['median']} | "
              f"{x['cpu_ms_mean']} |")
    print()
    print(f"3. sqlite-maintd --once --dry-run, median of {runs} (min-max):")
    print("| layout | N | wall ms | CPU ms | user / sys ms | max RSS MiB | -wal unchanged | -shm |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in result["once"]:
        print(f"| {r['layout']} | {r['n']} | {r['wall_ms']['median']} ({r['wall_ms']['min']}-{r['wall_ms']['max']}) | "
              f"{r['cpu_ms']['median']} ({r['cpu_ms']['min']}-{r['cpu_ms']['max']}) | {r['user_ms']} / {r['sys_ms']} | "
              f"{r['maxrss_kib'] / 1024:.1f} | {r.get('wal_unchanged', '')} | {r.get('shm_files', '')} |")
    print()
    print("per job in the daemon: (WAL round - rollback round) / N")
    print("| layout | N | wall ms per db | CPU ms per db | wall ratio | CPU ratio | the read alone (Python) CPU ms |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for e in result["daemon_per_job"]:
        print(f"| {e['layout']} | {e['n']} | {e['wall_ms_per_db']} | {e['cpu_ms_per_db']} | {e['wall_ratio']} | "
              f"{e['cpu_ratio']} | {e.get('python_read_cpu_ms_per_db', '')} |")
    finish(result, args.json_out, loads=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
