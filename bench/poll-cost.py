#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""What watching many databases costs sqlite-maintd.

1. One poll round, everything at once: `sqlite-maintd --once --dry-run`
   over N small databases (one file written, then copied N times), for
   N = 100, 1000, 10000; wall time, CPU time (user+sys) and peak RSS of the
   process from wait4(). Two layouts:
     rollback   rollback-journal databases: the 100-byte header is trusted
     wal        WAL databases, each with a non-empty -wal and no -shm: the
                header cannot be trusted, every database needs the precise
                read, a job process each (src/jobproc.c), which reads the
                -wal itself and writes nothing (the worst case; the files
                are copied again before each run, as when the read, before
                job processes, checkpointed the -wal away)
2. Instruction counts (valgrind --tool=callgrind, repeatable where timing
   is not) of the same runs for N = 1 and N = 1000; the difference divided
   by 999 is the cost of one database. The daemon's own instructions: job
   processes are not traced (bench/jobproc-cost.py measures them).
3. Steady state: the daemon running (poll_interval 10s) for 60 s over
   10000 rollback databases, and over 1000 WAL databases that an
   application keeps open (so their -wal stays non-empty and every poll
   reads every one in a job process): CPU% from /proc/PID/stat
   (utime+stime, and cutime+cstime: the job processes the daemon reaped)
   after the first round, and RSS.

No database is above a threshold, ANALYZE and deep scans are off, so
nothing is scheduled and nothing is logged per database: this is the cost
of looking.

    /usr/bin/python3 bench/poll-cost.py --json-out /tmp/poll-cost.json
    /usr/bin/python3 bench/poll-cost.py --quick          # N = 100, 1000; shorter

The files go to a fresh directory under /var/tmp (removed at the end).
The page cache is warm: a first run, not counted, reads the files in.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import (binary_revision, copy_set, finish, git_revision, make_template,  # noqa: E402
                      run_timed, write_watch_config)

DEFAULT_BIN = "/tmp/bench-build/src/sqlite-maintd"

# An application that keeps one idle connection open to each WAL database
# (reading once so the WAL index is set up), until its stdin closes.
HOLDER = r"""
import os, resource, sqlite3, sys
d, n = sys.argv[1], int(sys.argv[2])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * n + 64)), hard))
cons = []
for i in range(n):
    c = sqlite3.connect(os.path.join(d, f"db{i:05d}.db"), isolation_level=None)
    c.execute("SELECT count(*) FROM t").fetchone()
    cons.append(c)
print("ready", flush=True)
sys.stdin.read()
"""


# --------------------------------------------------------------------------
# Databases

# --------------------------------------------------------------------------
# Running the daemon

def run_once(binary, conf, timeout=600, wrapper=None):
    """--once --dry-run; returns (wall s, user s, sys s, maxrss KiB, status,
    stderr), as benchlib.run_timed measures them (the peak RSS through
    /usr/bin/time, unless wrapper replaces it)."""
    res = run_timed([binary, "-c", conf, "--once", "--dry-run", "--log-target=console"], timeout=timeout,
                    rss=wrapper is None, check=False, stdout=False, wrapper=wrapper, text_from="stderr")
    if res[4] != 0:
        print(f"warning: exit status {res[4]}: {res[5][-500:]}", file=sys.stderr)
    return res


def callgrind_ir(binary, conf, outdir, tag):
    """Total instructions (Ir) of one --once --dry-run under callgrind."""
    out = os.path.join(outdir, f"callgrind.{tag}.out")
    _, _, _, _, rc, text = run_once(binary, conf, timeout=1800,
                                    wrapper=("valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                                             "--trace-children=no"))
    with open(out) as f:
        for line in f:
            if line.startswith("summary:") or line.startswith("totals:"):
                return int(line.split()[1])
    raise RuntimeError(f"no summary in {out} (exit {rc}): {text[-500:]}")


def proc_cpu_rss(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # utime, stime, and cutime, cstime: the job processes it reaped
    cpu = sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    return cpu, rss


def steady_state(binary, conf, seconds, poll_interval_s):
    """The daemon running; CPU% measured from the end of its first round
    (poll_interval after start) to the end, RSS sampled every second."""
    err = tempfile.TemporaryFile()
    p = subprocess.Popen([binary, "-c", conf, "--log-target=console"], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=err)
    t0 = time.monotonic()
    samples = []
    try:
        while time.monotonic() - t0 < seconds:
            time.sleep(1.0)
            if p.poll() is not None:
                raise RuntimeError(f"the daemon exited ({p.returncode})")
            cpu, rss = proc_cpu_rss(p.pid)
            samples.append((time.monotonic() - t0, cpu, rss))
    finally:
        p.terminate()
        try:
            rc = p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            rc = p.wait(timeout=15)
    first = next(s for s in samples if s[0] >= poll_interval_s)
    last = samples[-1]
    window = last[0] - first[0]
    cpu = last[1] - first[1]
    return {
        "seconds": round(last[0], 1),
        "window_s": round(window, 1),
        "rounds_in_window": round(window / poll_interval_s, 2),
        "cpu_s_first_round": round(first[1], 2),
        "cpu_s_window": round(cpu, 2),
        "cpu_percent": round(100.0 * cpu / window, 2),
        "cpu_ms_per_round": round(1000.0 * cpu / (window / poll_interval_s), 1),
        "rss_kib_max": max(s[2] for s in samples),
        "rss_kib_end": last[2],
        "exit_status": rc,
    }


# --------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=DEFAULT_BIN)
    ap.add_argument("--quick", action="store_true", help="N = 100, 1000; 2 runs; 20 s steady state over 1000")
    ap.add_argument("--counts", help="comma-separated N (default 100,1000,10000)")
    ap.add_argument("--runs", type=int, help="timed runs per case (default 5; median reported)")
    ap.add_argument("--steady-seconds", type=float)
    ap.add_argument("--steady-databases", type=int)
    ap.add_argument("--steady-wal-databases", type=int,
                    help="WAL databases held open by an application (default 1000; each costs it 3 fds)")
    ap.add_argument("--no-callgrind", action="store_true")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workdir")
    ap.add_argument("--json-out")
    args = ap.parse_args()

    counts = [int(x) for x in args.counts.split(",")] if args.counts else \
        ([100, 1000] if args.quick else [100, 1000, 10000])
    runs = args.runs or (2 if args.quick else 5)
    steady_s = args.steady_seconds or (20 if args.quick else 60)
    steady_n = args.steady_databases or (1000 if args.quick else 10000)
    steady_wal_n = args.steady_wal_databases or (100 if args.quick else 1000)
    cg_n = 100 if args.quick else 1000
    if not os.access(args.bin, os.X_OK):
        sys.exit(f"{args.bin} is not an executable")
    do_callgrind = not args.no_callgrind and shutil.which("valgrind") is not None

    root = args.workdir or tempfile.mkdtemp(prefix="maintd-pollcost-", dir="/var/tmp")
    os.makedirs(root, exist_ok=True)
    src_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = {"commit": binary_revision(args.bin, git_revision(src_root)), "binary": args.bin, "seed": args.seed, "runs": runs,
              "nproc": os.cpu_count(), "loadavg_at_start": open("/proc/loadavg").read().split()[:3],
              "once": [], "callgrind": [], "steady": None}
    try:
        for layout in ("rollback", "wal"):
            template, keep = make_template(root, layout, args.seed)
            wal = layout == "wal"
            for n in sorted(set(counts + ([1, cg_n] if do_callgrind else []))):
                dest = os.path.join(root, f"{layout}-{n}")
                conf = os.path.join(root, f"{layout}-{n}.yaml")
                state = os.path.join(root, f"state-{layout}-{n}")
                os.makedirs(state, exist_ok=True)
                write_watch_config(conf, os.path.join(dest, "*.db"), state, "60s", "bench/poll-cost.py")
                copy_set(template, wal, dest, n)
                if n in counts:
                    run_once(args.bin, conf)  # warm-up: page cache, state file
                    rows = []
                    for _ in range(runs):
                        copy_set(template, wal, dest, n) if wal else None
                        wall, ut, st, rss, rc, _ = run_once(args.bin, conf)
                        rows.append((wall, ut + st, ut, st, rss, rc))
                        if wal:  # -wal files still there: the read wrote nothing (before jobs: 0, checkpointed)
                            left = sum(1 for i in range(n) if os.path.exists(os.path.join(dest, f"db{i:05d}.db-wal")))
                            rows[-1] += (left,)
                    r = {
                        "layout": layout, "n": n,
                        "wall_ms": round(1000 * statistics.median(x[0] for x in rows), 1),
                        "wall_ms_range": [round(1000 * min(x[0] for x in rows), 1),
                                          round(1000 * max(x[0] for x in rows), 1)],
                        "cpu_ms": round(1000 * statistics.median(x[1] for x in rows), 1),
                        "cpu_ms_range": [round(1000 * min(x[1] for x in rows), 1),
                                         round(1000 * max(x[1] for x in rows), 1)],
                        "user_ms": round(1000 * statistics.median(x[2] for x in rows), 1),
                        "sys_ms": round(1000 * statistics.median(x[3] for x in rows), 1),
                        "maxrss_kib": max(x[4] for x in rows),
                        "exit_status": sorted(set(x[5] for x in rows)),
                    }
                    if wal:
                        r["wal_files_left_after_run"] = max(x[6] for x in rows)
                    result["once"].append(r)
                    print(f"once {layout:8} N={n:6}: wall {r['wall_ms']} ms, cpu {r['cpu_ms']} ms "
                          f"(user {r['user_ms']}, sys {r['sys_ms']}), maxrss {r['maxrss_kib']} KiB", flush=True)
                if do_callgrind and n in (1, cg_n):
                    if wal:
                        copy_set(template, wal, dest, n)
                    ir = callgrind_ir(args.bin, conf, root, f"{layout}-{n}")
                    result["callgrind"].append({"layout": layout, "n": n, "instructions": ir})
                    print(f"callgrind {layout:8} N={n:6}: {ir} instructions", flush=True)
                shutil.rmtree(dest)
            if keep is not None:
                keep.close()
        if do_callgrind:
            for layout in ("rollback", "wal"):
                ir = {c["n"]: c["instructions"] for c in result["callgrind"] if c["layout"] == layout}
                if 1 in ir and cg_n in ir:
                    result.setdefault("callgrind_per_db", {})[layout] = round((ir[cg_n] - ir[1]) / (cg_n - 1))

        # Steady state: rollback databases (trusted headers).
        template, _ = make_template(root, "rollback", args.seed, "steady")
        dest = os.path.join(root, "steady")
        conf = os.path.join(root, "steady.yaml")
        state = os.path.join(root, "state-steady")
        os.makedirs(state, exist_ok=True)
        copy_set(template, False, dest, steady_n)
        write_watch_config(conf, os.path.join(dest, "*.db"), state, "10s", "bench/poll-cost.py")
        run_once(args.bin, conf)  # warm the page cache
        s = steady_state(args.bin, conf, steady_s, 10.0)
        s["n"] = steady_n
        s["poll_interval_s"] = 10
        s["layout"] = "rollback"
        result["steady"] = s
        print(f"steady rollback N={steady_n}: {s}", flush=True)
        shutil.rmtree(dest)

        # Steady state, worst case: WAL databases whose application keeps
        # a connection open (so the -wal is never checkpointed away and
        # every poll reads every database through SQLite).
        template, keep = make_template(root, "wal", args.seed, "steady-wal")
        dest = os.path.join(root, "steady-wal")
        conf = os.path.join(root, "steady-wal.yaml")
        state = os.path.join(root, "state-steady-wal")
        os.makedirs(state, exist_ok=True)
        copy_set(template, True, dest, steady_wal_n)
        keep.close()
        write_watch_config(conf, os.path.join(dest, "*.db"), state, "10s", "bench/poll-cost.py")
        holder = subprocess.Popen([sys.executable, "-c", HOLDER, dest, str(steady_wal_n)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            line = holder.stdout.readline().strip()
            if line != "ready":
                raise RuntimeError(f"the connection holder said {line!r}")
            s = steady_state(args.bin, conf, steady_s, 10.0)
            left = sum(1 for i in range(steady_wal_n)
                       if os.path.getsize(os.path.join(dest, f"db{i:05d}.db-wal")) > 0)
        finally:
            holder.stdin.close()
            try:
                holder.wait(timeout=120)
            except subprocess.TimeoutExpired:
                holder.kill()
                holder.wait(timeout=15)
        s.update(n=steady_wal_n, poll_interval_s=10, layout="wal, held open", nonempty_wal_at_end=left)
        result["steady_wal"] = s
        print(f"steady wal N={steady_wal_n}: {s}", flush=True)
        shutil.rmtree(dest)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    result["loadavg_at_end"] = open("/proc/loadavg").read().split()[:3]
    print()
    print("| layout | N | wall ms (median, min-max) | CPU ms user+sys (median, min-max) | user / sys ms | max RSS MiB |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in result["once"]:
        print(f"| {r['layout']} | {r['n']} | {r['wall_ms']} ({r['wall_ms_range'][0]}-{r['wall_ms_range'][1]}) | "
              f"{r['cpu_ms']} ({r['cpu_ms_range'][0]}-{r['cpu_ms_range'][1]}) | {r['user_ms']} / {r['sys_ms']} | "
              f"{r['maxrss_kib'] / 1024:.1f} |")
    if result["callgrind"]:
        print()
        print("| layout | N | instructions | per database |")
        print("|---|---:|---:|---:|")
        for c in result["callgrind"]:
            per = result.get("callgrind_per_db", {}).get(c["layout"]) if c["n"] != 1 else ""
            print(f"| {c['layout']} | {c['n']} | {c['instructions']:,} | {per:,} |" if per != ""
                  else f"| {c['layout']} | {c['n']} | {c['instructions']:,} | |")
    print()
    print("| steady state | N | poll_interval | measured | CPU % of one core | CPU ms per round | RSS max MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for s in (result["steady"], result["steady_wal"]):
        print(f"| {s['layout']} | {s['n']} | {s['poll_interval_s']} s | {s['window_s']} s after the first round | "
              f"{s['cpu_percent']} | {s['cpu_ms_per_round']} | {s['rss_kib_max'] / 1024:.1f} |")
    finish(result, args.json_out, loads=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
