#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""What one expansion of a databases: glob costs, and which thread pays it.

The expansion of each databases: entry (src/targets.c: readdir, fnmatch with
FNM_PERIOD, openat without following symbolic links, one fstat per
directory, side files skipped, limits.max_matches) is split in two:

  targets_list   the walk, on copies of the paths; its matches sorted by
                 path. At each poll it runs on a libuv worker thread.
  targets_apply  the merge of those sorted matches with the sorted targets
                 (the new ones join in one merge); on the loop thread.

Only the start and a reload still expand on the loop thread
(targets_expand = list + apply), before READY=1 (at a reload, the READY=1
that follows RELOADING=1).

This times the parts inside one process (bench/expand_cost, built by meson
from bench/expand_cost.c, linking the daemon's modules), for N = 1000,
10000 and 50000 files matching:

  flat      DIR/*.db                  N files in one directory
  spread    DIR/*/*.db                N files over 100 directories
  side      DIR/*.db                  N databases, each with a -wal and a
                                      -shm beside it (3N entries; largest N)
  capped    DIR/*.db                  the largest flat set with
                                      limits.max_matches 1000 (or N/2):
                                      the walk goes on past it

each against, in the same run and alternately, the reference: a bare
opendir/readdir + fnmatch walk in C over the same glob (the least any
expansion does), and glob(3) and `find` (a process: its start counts). The
modes of the expansion:

  first     list + apply with no target known: the start, or the files a
            reload adds (loop thread)
  steady    list + apply with every file already a target: a reload that
            keeps its entries (loop thread); before the walk moved to a
            worker, every poll
  list      the walk alone, every file a target (the worker's part)
  apply     the application alone of a walk made just before, untimed,
            every file a target: what the loop thread holds per poll

Warm cache (one untimed walk first) and cold (echo 3 >
/proc/sys/vm/drop_caches just before the timed part; root); apply reads no
directory, so its cold figure is that of its memory only. The expansion
does not read the files (readdir's d_type, no stat on ext4), so the files
are empty; the header reads it is compared with (dbstat_read_header_at,
the loop thread's yardstick) are timed over 1000 real small databases.

    bench/build.sh /tmp/bench-build
    /usr/bin/python3 bench/expand-cost.py --build /tmp/bench-build --json-out /tmp/expand-cost.json
    /usr/bin/python3 bench/expand-cost.py --quick     # N = 1000, 10000; 3 runs

The files go to a fresh directory under /var/tmp (removed at the end).
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import (binary_revision, copy_set, drop_caches, finish, git_revision, loadavg,  # noqa: E402
                      make_template, med_range, run_timed)

DEFAULT_BUILD = "/tmp/bench-build"
SPREAD_DIRS = 100
CAPPED_MAX = 1000
HEADER_N = 1000
MODES = ("walk", "glob", "find", "first", "steady", "list", "apply")


def make_files(dest, n, dirs=0, side=False):
    """n empty files dbNNNNN.db in dest, or over dest/dNN (dirs of them);
    with side, a -wal and a -shm beside each."""
    os.makedirs(dest, exist_ok=True)
    for i in range(n):
        d = os.path.join(dest, f"d{i % dirs:02d}") if dirs else dest
        if dirs and i < dirs:
            os.makedirs(d, exist_ok=True)
        p = os.path.join(d, f"db{i:05d}.db")
        for name in (p, p + "-wal", p + "-shm") if side else (p,):
            os.close(os.open(name, os.O_WRONLY | os.O_CREAT, 0o644))


def expand_cost(binary, mode, glob, cold, max_matches=None):
    """One run of bench/expand_cost: its JSON line."""
    argv = [binary]
    if max_matches:
        argv += ["--max-matches", str(max_matches)]
    if cold:
        argv.append("--drop-caches")
    _, _, _, _, _, out = run_timed(argv + [mode, glob], timeout=600)
    return json.loads(out)


def find_cost(glob, root, depth, cold):
    """find over the same files, as a process (its start included)."""
    if cold and not drop_caches():
        raise RuntimeError("cannot drop the caches (root only)")
    wall, ut, st, _, _, out = run_timed(["find", root, "-mindepth", str(depth), "-maxdepth", str(depth),
                                         "-type", "f", "-path", glob])
    return {"mode": "find", "matched": out.count("\n"), "wall_us": wall * 1e6, "cpu_us": (ut + st) * 1e6}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default=DEFAULT_BUILD, help="meson build directory (bench/build.sh)")
    ap.add_argument("--quick", action="store_true", help="N = 1000, 10000; 3 runs")
    ap.add_argument("--counts", help="comma-separated N (default 1000,10000,50000)")
    ap.add_argument("--runs", type=int, help="timed runs per case and cache (default 5; median reported)")
    ap.add_argument("--no-cold", action="store_true", help="warm cache only (no root needed)")
    ap.add_argument("--workdir")
    ap.add_argument("--json-out")
    args = ap.parse_args()

    binary = os.path.join(args.build, "bench", "expand_cost")
    if not os.access(binary, os.X_OK):
        sys.exit(f"{binary} is not an executable: run bench/build.sh {args.build}")
    counts = [int(x) for x in args.counts.split(",")] if args.counts else \
        ([1000, 10000] if args.quick else [1000, 10000, 50000])
    runs = args.runs or (3 if args.quick else 5)
    caches = ["warm"] if args.no_cold else ["warm", "cold"]
    if "cold" in caches and not drop_caches():
        sys.exit("dropping the caches needs root (or pass --no-cold)")
    top = max(counts)

    root = args.workdir or tempfile.mkdtemp(prefix="maintd-expandcost-", dir="/var/tmp")
    os.makedirs(root, exist_ok=True)
    src_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = {"commit": binary_revision(binary, git_revision(src_root)), "binary": binary, "runs": runs,
              "nproc": os.cpu_count(), "loadavg_at_start": loadavg(), "cases": [], "header": []}
    try:
        # (name, N, directory, glob, find depth, max_matches)
        cases = []
        for n in counts:
            d = os.path.join(root, f"flat-{n}")
            make_files(d, n)
            cases.append(("flat", n, d, os.path.join(d, "*.db"), 1, None))
        for n in counts:
            d = os.path.join(root, f"spread-{n}")
            make_files(d, n, dirs=SPREAD_DIRS)
            cases.append(("spread", n, d, os.path.join(d, "*", "*.db"), 2, None))
        d = os.path.join(root, f"side-{top}")
        make_files(d, top, side=True)
        cases.append(("side", top, d, os.path.join(d, "*.db"), 1, None))
        d = os.path.join(root, f"flat-{top}")
        cases.append(("capped", top, d, os.path.join(d, "*.db"), 1, min(CAPPED_MAX, top // 2)))
        os.sync()

        for cache in caches:
            for name, n, d, glob, depth, mm in cases:
                cold = cache == "cold"
                if not cold:
                    expand_cost(binary, "walk", glob, False)  # warm-up, not counted
                rows = {m: [] for m in MODES}
                for _ in range(runs):
                    for mode in MODES:  # alternately, so that load hits them alike
                        if mode == "find":
                            r = find_cost(glob, d, depth, cold)
                        else:
                            r = expand_cost(binary, mode, glob, cold, mm)
                        if mode in ("walk", "glob", "find") or mm is None:
                            if r["matched"] != n:
                                raise RuntimeError(f"{name} {n} {mode}: matched {r['matched']}, not {n}")
                        elif r["targets"] != mm or (mode == "first" and not r["over_max_matches"]):
                            raise RuntimeError(f"capped {mode}: {r['targets']} targets, not {mm}")
                        rows[mode].append(r)
                ref = statistics.median(r["wall_us"] for r in rows["walk"])
                ref_cpu = statistics.median(r["cpu_us"] for r in rows["walk"])
                for mode in MODES:
                    wall = [r["wall_us"] for r in rows[mode]]
                    cpu = [r["cpu_us"] for r in rows[mode]]
                    c = {"layout": name, "n": n, "glob": glob, "cache": cache, "mode": mode,
                         "max_matches": mm or rows["steady"][0]["max_matches"],
                         "wall_ms": med_range(wall, 1e-3, 2), "cpu_ms": med_range(cpu, 1e-3, 2),
                         "wall_us_per_file": round(statistics.median(wall) / n, 3),
                         "cpu_us_per_file": round(statistics.median(cpu) / n, 3),
                         "wall_ratio_to_walk": round(statistics.median(wall) / ref, 2),
                         "cpu_ratio_to_walk": round(statistics.median(cpu) / ref_cpu, 2)}
                    if mode in ("first", "steady", "list", "apply"):
                        c["maxrss_kib"] = max(r["maxrss_kib"] for r in rows[mode])
                    result["cases"].append(c)
                    print(f"{cache} {name:6} N={n:6} {mode:6}: wall {c['wall_ms']['median']} ms "
                          f"({c['wall_ms']['min']}-{c['wall_ms']['max']}), cpu {c['cpu_ms']['median']} ms, "
                          f"{c['wall_us_per_file']} us/file, x{c['wall_ratio_to_walk']} walk", flush=True)

        # The yardstick: header reads of real databases, one after another.
        template, _ = make_template(root, "rollback", 1)
        d = os.path.join(root, "header")
        copy_set(template, False, d, HEADER_N)
        os.sync()
        glob = os.path.join(d, "*.db")
        for cache in caches:
            cold = cache == "cold"
            if not cold:
                expand_cost(binary, "header", glob, False)
            rows = [expand_cost(binary, "header", glob, cold) for _ in range(runs)]
            if any(r["reads_trusted"] != HEADER_N for r in rows):
                raise RuntimeError(f"header reads: {[r['reads_trusted'] for r in rows]} of {HEADER_N} trusted")
            h = {"n": HEADER_N, "cache": cache,
                 "wall_us_per_read": med_range([r["wall_us"] / HEADER_N for r in rows], 1, 2),
                 "cpu_us_per_read": med_range([r["cpu_us"] / HEADER_N for r in rows], 1, 2),
                 "slowest_read_us": med_range([r["read_max_us"] for r in rows], 1, 1)}
            result["header"].append(h)
            print(f"{cache} header reads: {h['wall_us_per_read']} us each, slowest {h['slowest_read_us']} us",
                  flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    result["loadavg_at_end"] = loadavg()
    print()
    for cache in caches:
        print(f"{cache} cache: median of {runs} (min-max)")
        print("| layout | N | mode | wall ms | CPU ms | wall us/file | wall / walk | CPU / walk |")
        print("|---|---:|---|---:|---:|---:|---:|---:|")
        for c in result["cases"]:
            if c["cache"] != cache:
                continue
            w, u = c["wall_ms"], c["cpu_ms"]
            print(f"| {c['layout']} | {c['n']} | {c['mode']} | {w['median']} ({w['min']}-{w['max']}) | "
                  f"{u['median']} ({u['min']}-{u['max']}) | {c['wall_us_per_file']} | {c['wall_ratio_to_walk']} | "
                  f"{c['cpu_ratio_to_walk']} |")
        print()
    finish(result, args.json_out)


if __name__ == "__main__":
    main()
