#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""What sqlite-maintd costs the application: its write latency and throughput.

An application, a separate Python process (the sqlite3 module, the system's
libsqlite3), writes to its database at a fixed rate (default 500 writes/s):
each write is one small transaction, BEGIN IMMEDIATE, an INSERT of one row,
COMMIT, timed from before BEGIN to after COMMIT with time.perf_counter_ns().
A slot missed because a write took longer than the period is skipped, not
caught up in a burst, so latencies stay comparable between phases and a
stall shows as lost throughput (writes/s is what was reached: where a
commit's fsyncs take longer than the period, as in rollback mode with
synchronous=FULL on a slow disk, the application writes back to back). On SQLITE_BUSY the statement is retried
exactly as sqlite3_busy_timeout() would (SQLite's sqliteDefaultBusyCallback:
sleeps of 1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, 100, 100... ms, at most
--busy-timeout-ms of them per statement, default 5000), in Python, so that
every write that met SQLITE_BUSY is counted; a write whose statement ran
out of busy time is rolled back and counted as failed.

For a rollback-journal database (journal_mode=DELETE) and a WAL database:

1. no daemon: the reference;
2. polling: sqlite-maintd running (foreground, console log, a
   NOTIFY_SOCKET of our own to know when it is ready) over the
   application's database and N other small databases (default 10000) of
   the same journal mode, poll_interval 2s, nothing due (vacuum thresholds
   100%, min_reclaim 1TiB, unused_threshold 0, ANALYZE, deep scans and
   checkpoints off): the cost of looking. Its CPU (with the job processes
   it reaped) and read system calls over the phase are recorded.
   Phases 1 and 2 alternate, R times (default 5), each on a fresh copy of
   the same database; each run is reported, the medians, the paired
   difference of p99 (polling minus the no-daemon run just before it) and,
   as the yardstick of noise, the difference between successive no-daemon
   runs.
3. analyzing: `sqlite-maintctl analyze --force DB` (every table, in a job
   process, as the daemon's ANALYZE job runs it: src/maint.c
   maint_analyze), one started every second (--analyze-every) for the
   length of the phase, while the application writes; the writes that
   overlapped an ANALYZE are summarized apart;
4. vacuuming: the database fragmented beforehand (about 37% free pages),
   `sqlite-maintctl vacuum DB` (its default checks: quick_check before and
   after; the daemon's VACUUM job runs the same maint_vacuum in a job
   process) while the application writes; the writes that met
   SQLITE_BUSY, those that failed, and the longest wait, over the phase
   and over the writes that overlapped the VACUUM.

And the VACUUM job against SQLite's own: `sqlite-maintctl vacuum DB` (its
default checks), the same with `integrity: none` (-c), and `sqlite3 DB
VACUUM` (Debian's CLI), each on a fresh copy of one fragmented database of
--vacuum-size (default 200M, rollback journal, INTEGER PRIMARY KEY and two
indexes), synced to disk before each run, alternately, after one round
not counted, wall and CPU time (wait4: the program and the job process it
reaped), and the ratios.

    bench/build.sh /tmp/bench-build-impact
    /usr/bin/python3 bench/app-impact.py --build /tmp/bench-build-impact --json-out /tmp/impact.json  # ~5 min
    /usr/bin/python3 bench/app-impact.py --build /tmp/bench-build-impact --quick                      # < 1 min

The files go to a fresh directory under /var/tmp (removed at the end). The
page cache is warm (the files were just written). Timing is reported,
never asserted.
"""

import argparse
import json
import math
import os
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import (binary_revision, copy_set, finish, git_revision, loadavg, make_template,  # noqa: E402
                      notify_socket, run_timed)

DEFAULT_BUILD = "/tmp/bench-build"
LAYOUTS = {"rollback": "DELETE", "wal": "WAL"}

# --------------------------------------------------------------------------
# The application

APP = r"""
import json, os, random, resource, select, sqlite3, sys, time
db, sync, rate, busy_ms, seed = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
# SQLite's sqliteDefaultBusyCallback (main.c): what sqlite3_busy_timeout() sleeps, in ms
DELAYS = (1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, 100)
con = sqlite3.connect(db, timeout=0, isolation_level=None)   # busy_timeout 0: the retries are ours
con.execute("PRAGMA synchronous=" + sync)
mode = con.execute("PRAGMA journal_mode").fetchone()[0]
rng = random.Random(seed)
seq = con.execute("SELECT coalesce(max(id), 0) FROM t").fetchone()[0]
errors = {}

def is_busy(e):
    code = getattr(e, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xff in (5, 6)
    return "locked" in str(e) or "busy" in str(e)

def step(sql, args, w):
    count = slept = 0
    while True:
        try:
            con.execute(sql, args)
            return True
        except sqlite3.OperationalError as e:
            if not is_busy(e):
                raise
            w[0] += 1
            delay = DELAYS[count] if count < len(DELAYS) else DELAYS[-1]
            if slept + delay > busy_ms:
                delay = busy_ms - slept
                if delay <= 0:
                    return False
            time.sleep(delay / 1000.0)
            slept += delay
            count += 1

def write():
    global seq
    seq += 1
    w = [0]
    ok = False
    t0 = time.perf_counter_ns()
    try:
        if step("BEGIN IMMEDIATE", (), w):
            ok = step("INSERT INTO t(k, name, v) VALUES(?, ?, ?)",
                      (rng.randrange(10**6), "z%09d" % seq, rng.randbytes(100)), w) and step("COMMIT", (), w)
    except sqlite3.Error as e:
        errors[str(e)] = errors.get(str(e), 0) + 1
        ok = None
    if not ok and con.in_transaction:
        try:
            con.execute("ROLLBACK")
        except sqlite3.Error as e:
            errors["ROLLBACK: " + str(e)] = errors.get("ROLLBACK: " + str(e), 0) + 1
    t1 = time.perf_counter_ns()
    return t0, t1 - t0, w[0], 1 if ok else (0 if ok is False else -1)

for _ in range(20):   # warm-up, not recorded
    write()
print("ready", mode, flush=True)
sys.stdin.readline()
fd = sys.stdin.fileno()
period = int(1e9 / rate) if rate > 0 else 0
start, dur, busy, status = [], [], [], []
skipped = 0
ru0 = resource.getrusage(resource.RUSAGE_SELF)
t_go = t_next = time.perf_counter_ns()
while True:
    wait = (t_next - time.perf_counter_ns()) / 1e9 if period else 0.0
    if select.select([fd], [], [], max(wait, 0.0))[0]:
        break
    t0, d, b, s = write()
    start.append(t0); dur.append(d); busy.append(b); status.append(s)
    if period:
        t_next += period
        now = time.perf_counter_ns()
        if t_next < now:
            skipped += (now - t_next) // period
            t_next = now
t_end = time.perf_counter_ns()
ru1 = resource.getrusage(resource.RUSAGE_SELF)
json.dump({"journal_mode": mode, "t_go": t_go, "t_end": t_end, "start": start, "dur_ns": dur, "busy": busy,
           "status": status, "skipped_slots": skipped, "errors": errors,
           "cpu_s": round(ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime, 3)}, sys.stdout)
"""


class App:
    """The application process: started, warmed up (20 writes), then go()
    and stop(), which returns what it recorded."""

    def __init__(self, db, args, seed):
        self.p = subprocess.Popen([sys.executable, "-c", APP, db, args.synchronous, str(args.rate),
                                   str(args.busy_timeout_ms), str(seed)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.p.stdout.readline().split()
        if not line or line[0] != "ready":
            self.p.kill()
            raise RuntimeError(f"the application said {line!r}")
        self.mode = line[1]

    def go(self):
        self.p.stdin.write("go\n")
        self.p.stdin.flush()

    def stop(self):
        self.p.stdin.write("stop\n")
        self.p.stdin.flush()
        out = self.p.stdout.read()
        self.p.wait(timeout=60)
        if self.p.returncode != 0:
            raise RuntimeError(f"the application exited {self.p.returncode}")
        return json.loads(out)


# --------------------------------------------------------------------------
# Figures

def pct(sorted_v, q):
    """Nearest-rank percentile of a sorted list."""
    if not sorted_v:
        return None
    k = math.ceil(round(q * len(sorted_v), 6)) - 1
    return sorted_v[max(0, min(len(sorted_v) - 1, k))]


HIST_EDGES_US = [10 * m * 10 ** e for e in range(0, 7) for m in (1, 2, 5)]  # 10 us .. 50 s


def summarize(rec, windows=None):
    """The writes of rec (all, or those overlapping one of the windows,
    [(lo, hi)] in ns): latencies in us, throughput, SQLITE_BUSY, failures."""
    idx = list(range(len(rec["start"])))
    if windows is not None:
        idx = [i for i in idx if any(rec["start"][i] <= hi and rec["start"][i] + rec["dur_ns"][i] >= lo
                                     for lo, hi in windows)]
    lat = sorted(rec["dur_ns"][i] / 1000.0 for i in idx)
    ok = sum(1 for i in idx if rec["status"][i] == 1)
    failed = sum(1 for i in idx if rec["status"][i] == 0)
    errors = sum(1 for i in idx if rec["status"][i] == -1)
    met_busy = [i for i in idx if rec["busy"][i] > 0]
    window = (sum(hi - lo for lo, hi in windows) if windows is not None else (rec["t_end"] - rec["t_go"])) / 1e9
    hist = [0] * (len(HIST_EDGES_US) + 1)
    for v in lat:
        k = 0
        while k < len(HIST_EDGES_US) and v >= HIST_EDGES_US[k]:
            k += 1
        hist[k] += 1
    r = {
        "writes": len(idx), "ok": ok, "failed": failed, "errors": errors,
        "window_s": round(window, 3),
        "writes_per_s": round(ok / window, 1) if window > 0 else None,
        "p50_us": round(pct(lat, 0.50), 1) if lat else None,
        "p90_us": round(pct(lat, 0.90), 1) if lat else None,
        "p99_us": round(pct(lat, 0.99), 1) if lat else None,
        "p999_us": round(pct(lat, 0.999), 1) if lat else None,
        "max_us": round(lat[-1], 1) if lat else None,
        "mean_us": round(statistics.fmean(lat), 1) if lat else None,
        "met_busy": len(met_busy),
        "busy_retries": sum(rec["busy"][i] for i in idx),
        "longest_wait_ms": round(max(rec["dur_ns"][i] for i in met_busy) / 1e6, 2) if met_busy else 0.0,
        "writes_over_10ms": sum(1 for v in lat if v >= 10000),
        "histogram_us": {"edges": HIST_EDGES_US, "counts": hist},
    }
    if windows is None:
        r["skipped_slots"] = rec["skipped_slots"]
        r["app_cpu_s"] = rec["cpu_s"]
        r["app_errors"] = rec["errors"]
    return r


def slow_writes(rec, t_ref, limit_us=10000, most=200):
    """Writes of limit_us or more: start (ms after t_ref), duration (ms), busy retries, status."""
    out = []
    for i in range(len(rec["start"])):
        if rec["dur_ns"][i] >= limit_us * 1000:
            out.append([round((rec["start"][i] - t_ref) / 1e6, 2), round(rec["dur_ns"][i] / 1e6, 2),
                        rec["busy"][i], rec["status"][i]])
    return out[:most]


def med(values, digits=1):
    v = [x for x in values if x is not None]
    return round(statistics.median(v), digits) if v else None


# --------------------------------------------------------------------------
# Databases

def parse_size(text):
    t = text.strip().upper().rstrip("B").rstrip("I")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    if t and t[-1] in mult:
        return int(float(t[:-1]) * mult[t[-1]])
    return int(t)


def build_fragmented(path, size):
    """A rollback-journal database of about size bytes: t(id INTEGER PRIMARY
    KEY, k, name, v BLOB) with an index on k (random) and on name (in id
    order); then 40% of the rows deleted in runs of 1000 ids (two runs in
    every five), so that whole pages go to the freelist. Returns its figures."""
    for side in ("", "-journal", "-wal", "-shm"):
        try:
            os.unlink(path + side)
        except FileNotFoundError:
            pass
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA page_size=4096")
    con.execute("PRAGMA journal_mode=DELETE")
    con.execute("PRAGMA synchronous=OFF")
    con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, k INTEGER, name TEXT, v BLOB)")
    batch, n = 20000, 0
    # about 210 bytes per row with both indexes (measured): rows before the indexes
    target_rows = max(1000, int(size / 210))
    while n < target_rows:
        con.execute("BEGIN")
        m = min(batch, target_rows - n)
        con.execute("WITH RECURSIVE c(i) AS (SELECT ? UNION ALL SELECT i + 1 FROM c WHERE i < ?) "
                    "INSERT INTO t(id, k, name, v) SELECT i, abs(random()) % 1000000, printf('n%09d', i), "
                    "randomblob(150) FROM c", (n + 1, n + m))
        con.execute("COMMIT")
        n += m
    con.execute("CREATE INDEX t_k ON t(k)")
    con.execute("CREATE INDEX t_name ON t(name)")
    con.execute("DELETE FROM t WHERE (id / 1000) % 5 < 2")
    pages, free = (con.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_count", "freelist_count"))
    rows = con.execute("SELECT count(*) FROM t").fetchone()[0]
    con.close()
    return {"bytes": os.path.getsize(path), "pages": pages, "free_pages": free, "rows": rows,
            "fragmentation_percent": round(100.0 * free / pages, 2)}


def to_wal(src, dst):
    """A copy of src in WAL mode, closed cleanly (no -wal left)."""
    shutil.copyfile(src, dst)
    con = sqlite3.connect(dst, isolation_level=None)
    mode = con.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    con.close()
    assert mode == "wal", mode
    assert not os.path.exists(dst + "-wal")


def fresh_copy(template, dst):
    for side in ("", "-journal", "-wal", "-shm"):
        try:
            os.unlink(dst + side)
        except FileNotFoundError:
            pass
    shutil.copyfile(template, dst)


def write_conf(path, app_db, others_glob, state_dir, poll_interval):
    """Nothing due: VACUUM thresholds at 100% (never reached: page 1 is
    never free) and min_reclaim 1TiB, the deep-scan rule, ANALYZE, deep
    scans and checkpoints off."""
    with open(path, "w") as f:
        f.write(f"""# written by bench/app-impact.py
poll_interval: {poll_interval}
max_concurrent_jobs: 1
state_dir: {state_dir}
defaults:
  vacuum:
    threshold: 100%
    urgent_threshold: 100%
    window: always
    min_reclaim: 1TiB
    unused_threshold: 0
  analyze:
    interval: never
  deep_scan:
    interval: never
  checkpoint:
    wal_size_limit: 0
    wal_size_ratio: 0
databases:
  - path: {app_db}
""" + (f"  - path: {others_glob}\n" if others_glob else ""))


# --------------------------------------------------------------------------
# The daemon

def proc_figures(pid):
    """CPU s (utime+stime, and cutime+cstime: the job processes it reaped),
    read system calls, RSS KiB."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    syscr = 0
    try:
        with open(f"/proc/{pid}/io") as f:
            for line in f:
                if line.startswith("syscr:"):
                    syscr = int(line.split()[1])
    except OSError:
        pass
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    return cpu, syscr, rss


class Daemon:
    """sqlite-maintd in the foreground, its READY=1 and STATUS= read from a
    NOTIFY_SOCKET of ours."""

    def __init__(self, binary, conf, workdir, tag):
        self.sock_path, self.sock = notify_socket(workdir, tag)
        self.status = []
        self.log_path = os.path.join(workdir, f"daemon-{tag}.log")
        self.log = open(self.log_path, "w+")
        env = dict(os.environ, NOTIFY_SOCKET=self.sock_path)
        env.pop("WATCHDOG_USEC", None)
        env.pop("WATCHDOG_PID", None)
        t0 = time.monotonic()
        self.p = subprocess.Popen([binary, "-c", conf, "--log-target=console"], stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=self.log, env=env)
        self.sock.settimeout(0.5)
        ready = False
        while not ready:
            if time.monotonic() - t0 > 300:
                self.stop()
                raise RuntimeError("sqlite-maintd not ready after 300 s")
            if self.p.poll() is not None:
                raise RuntimeError(f"sqlite-maintd exited {self.p.returncode}: {self.log_tail()}")
            try:
                msg = self.sock.recv(4096).decode("utf-8", "replace")
            except socket.timeout:
                continue
            ready = self.note(msg)
        self.ready_s = time.monotonic() - t0

    def note(self, msg):
        ready = False
        for line in msg.split("\n"):
            if line == "READY=1":
                ready = True
            elif line.startswith("STATUS="):
                self.status.append(line[7:])
        return ready

    def drain(self):
        self.sock.settimeout(0)
        while True:
            try:
                self.note(self.sock.recv(4096).decode("utf-8", "replace"))
            except (BlockingIOError, socket.timeout):
                break

    def figures(self):
        return proc_figures(self.p.pid)

    def log_tail(self, n=2000):
        self.log.flush()
        with open(self.log_path) as f:
            return f.read()[-n:]

    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        try:
            rc = self.p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.p.kill()
            rc = self.p.wait(timeout=15)
        self.drain()
        self.sock.close()
        os.unlink(self.sock_path)
        self.log.close()
        with open(self.log_path) as f:
            lines = f.read().splitlines()
        kinds = {}
        for line in lines:
            k = line.split(":", 1)[0] if line.split(":", 1)[0] in ("debug", "warning", "error", "critical") \
                else "info/notice"
            kinds[k] = kinds.get(k, 0) + 1
        return {"exit_status": rc, "log_lines": len(lines), "log_lines_by_level": kinds,
                "log_not_info": [x for x in lines if x.startswith(("warning:", "error:", "critical:"))][:20],
                "log_first_lines": lines[:3], "status_last": self.status[-1] if self.status else None}


# --------------------------------------------------------------------------
# Phases

def phase_plain(app_template, app_db, args, seed, seconds=None):
    """Phase 1: no daemon."""
    fresh_copy(app_template, app_db)
    app = App(app_db, args, seed)
    la = loadavg()
    app.go()
    time.sleep(seconds or args.seconds)
    rec = app.stop()
    s = summarize(rec)
    s["loadavg_at_start"] = la
    return s, rec


def phase_polling(app_template, app_db, args, seed, daemon_bin, conf, root, tag, n_watched):
    """Phase 2: the daemon polling."""
    fresh_copy(app_template, app_db)
    d = Daemon(daemon_bin, conf, root, tag)
    try:
        app = App(app_db, args, seed)
        la = loadavg()
        cpu0, scr0, _ = d.figures()
        t0 = time.monotonic()
        app.go()
        rss = 0
        end = t0 + args.seconds
        while time.monotonic() < end:
            time.sleep(min(1.0, max(0.0, end - time.monotonic())))
            rss = max(rss, d.figures()[2])
            if d.p.poll() is not None:
                raise RuntimeError(f"sqlite-maintd exited {d.p.returncode}: {d.log_tail()}")
        cpu1, scr1, _ = d.figures()
        t1 = time.monotonic()
        rec = app.stop()
    finally:
        info = d.stop()
    s = summarize(rec)
    s["loadavg_at_start"] = la
    window = t1 - t0
    s["daemon"] = {
        "ready_after_s": round(d.ready_s, 3),
        "cpu_s": round(cpu1 - cpu0, 2),
        "cpu_percent": round(100.0 * (cpu1 - cpu0) / window, 2),
        "read_syscalls": scr1 - scr0,
        # a header read is two pread()s: the rounds those reads amount to
        "rounds_of_header_reads": round((scr1 - scr0) / (2.0 * n_watched), 2),
        "rounds_expected": round(window / args.poll_interval_s, 2),
        "rss_kib_max": rss,
        **info,
    }
    return s, rec


def phase_analyze(app_template, app_db, args, seed, ctl):
    """Phase 3: sqlite-maintctl analyze --force, one every
    args.analyze_every seconds (or back to back when one takes longer)."""
    fresh_copy(app_template, app_db)
    app = App(app_db, args, seed)
    app.go()
    time.sleep(args.lead)
    runs, windows = [], []
    t_lo = time.perf_counter_ns()
    end = time.monotonic() + args.seconds
    next_start = time.monotonic()
    while time.monotonic() < end or not runs:
        time.sleep(max(0.0, next_start - time.monotonic()))
        a = time.perf_counter_ns()
        wall, ut, st, _, rc, out = run_timed([ctl, "--json", "analyze", "--force", app_db], check=False)
        b = time.perf_counter_ns()
        windows.append((a, b))
        try:
            j = json.loads(out.splitlines()[0])
        except (ValueError, IndexError):
            j = {}
        runs.append({"start_ms": round((a - t_lo) / 1e6, 1), "wall_ms": round((b - a) / 1e6, 1),
                     "cpu_ms": round(1000 * (ut + st), 1), "exit_status": rc, "status": j.get("status"),
                     "duration_ms": j.get("duration_ms"), "message": j.get("message")})
        next_start = max(next_start + args.analyze_every, time.monotonic())
    time.sleep(args.tail)
    rec = app.stop()
    s = summarize(rec)
    s["during"] = summarize(rec, windows)
    s["analyze_every_s"] = args.analyze_every
    s["analyze_runs"] = runs
    s["analyze_count"] = len(runs)
    s["analyze_exit_status"] = sorted(set(r["exit_status"] for r in runs))
    s["analyze_wall_ms_median"] = med([r["wall_ms"] for r in runs])
    s["slow_writes"] = slow_writes(rec, t_lo)
    return s, rec


def phase_vacuum(app_template, app_db, args, seed, ctl):
    """Phase 4: sqlite-maintctl vacuum of the fragmented database."""
    fresh_copy(app_template, app_db)
    os.sync()
    app = App(app_db, args, seed)
    app.go()
    time.sleep(args.lead)
    a = time.perf_counter_ns()
    wall, ut, st, _, rc, out = run_timed([ctl, "--json", "vacuum", app_db], check=False)
    b = time.perf_counter_ns()
    time.sleep(args.tail)
    rec = app.stop()
    try:
        j = json.loads(out.splitlines()[0])
    except (ValueError, IndexError):
        j = {"output": out[-500:]}
    s = summarize(rec)
    s["during"] = summarize(rec, [(a, b)])
    s["vacuum"] = {"wall_ms": round((b - a) / 1e6, 1), "cpu_ms": round(1000 * (ut + st), 1), "exit_status": rc,
                   "result": j}
    s["slow_writes"] = slow_writes(rec, a)
    # how the slow writes sit against the VACUUM: before it, during, after
    s["writes_after_vacuum"] = summarize(rec, [(b, rec["t_end"])])
    return s, rec


# --------------------------------------------------------------------------
# VACUUM job against sqlite3 DB VACUUM

def vacuum_compare(template, root, ctl, runs, log):
    conf_none = os.path.join(root, "vacuum-none.yaml")
    db = os.path.join(root, "vacuum-run.db")
    state = os.path.join(root, "state-vacuum")
    os.makedirs(state, exist_ok=True)
    with open(conf_none, "w") as f:
        f.write(f"# written by bench/app-impact.py\nstate_dir: {state}\ndefaults:\n  vacuum:\n"
                f"    integrity: none\ndatabases:\n  - path: {db}\n")
    cases = [
        ("sqlite3 DB VACUUM", ["sqlite3", db, "VACUUM"]),
        ("sqlite-maintctl vacuum DB", [ctl, "--json", "vacuum", db]),
        ("sqlite-maintctl -c (integrity: none) vacuum DB", [ctl, "--json", "-c", conf_none, "vacuum", db]),
    ]
    res = {name: [] for name, _ in cases}
    for name, argv in cases:  # not counted: the programs and the template into the page cache
        fresh_copy(template, db)
        os.sync()
        run_timed(argv, check=False)
    for i in range(runs):
        order = cases if i % 2 == 0 else cases[::-1]
        for name, argv in order:
            fresh_copy(template, db)
            os.sync()
            wall, ut, st, rss, rc, out = run_timed(argv, check=False, rss=True)
            after = os.path.getsize(db)
            status = None
            if "maintctl" in name:
                try:
                    status = json.loads(out.splitlines()[0]).get("status")
                except (ValueError, IndexError):
                    status = out[-300:]
            res[name].append({"wall_s": round(wall, 3), "cpu_s": round(ut + st, 3), "user_s": round(ut, 3),
                              "sys_s": round(st, 3), "maxrss_kib": rss, "exit_status": rc, "status": status,
                              "bytes_after": after})
            log(f"  vacuum {name}: wall {wall:.3f} s, cpu {ut + st:.3f} s, exit {rc}, {after} bytes after")
    for side in ("", "-journal"):
        try:
            os.unlink(db + side)
        except FileNotFoundError:
            pass
    ref = res["sqlite3 DB VACUUM"]
    out = {"runs": res, "medians": {}}
    for name, _ in cases:
        r = res[name]
        out["medians"][name] = {
            "wall_s": med([x["wall_s"] for x in r], 3), "cpu_s": med([x["cpu_s"] for x in r], 3),
            "wall_s_range": [min(x["wall_s"] for x in r), max(x["wall_s"] for x in r)],
            "cpu_s_range": [min(x["cpu_s"] for x in r), max(x["cpu_s"] for x in r)],
            "wall_ratio": round(med([x["wall_s"] for x in r], 4) / med([x["wall_s"] for x in ref], 4), 3),
            "cpu_ratio": round(med([x["cpu_s"] for x in r], 4) / med([x["cpu_s"] for x in ref], 4), 3),
            # per run: the same copy position in the alternation
            "wall_ratio_per_run": [round(x["wall_s"] / y["wall_s"], 3) for x, y in zip(r, ref)],
        }
    return out


# --------------------------------------------------------------------------
# Printing

def fmt(v, digits=0):
    if v is None:
        return "-"
    return f"{v:,.{digits}f}" if isinstance(v, float) else f"{v:,}"


def row(label, run, s, extra=""):
    return (f"| {label} | {run} | {s['ok']:,} | {fmt(s['writes_per_s'], 1)} | {fmt(s['p50_us'])} | "
            f"{fmt(s['p99_us'])} | {fmt(s['max_us'])} | {s['met_busy']} | {s['failed'] + s['errors']} | "
            f"{fmt(s['longest_wait_ms'], 1)} | {extra} |")


def print_layout(L, args):
    print()
    print(f"### {L['layout']} (journal_mode={L['journal_mode']}), application database "
          f"{L['app_db']['bytes'] / 2**20:.1f} MiB, {L['app_db']['fragmentation_percent']}% free pages; "
          f"{args.rate:g} writes/s, synchronous={args.synchronous}; {args.seconds:g} s per phase; "
          f"daemon over 1 + {L['others']} databases, poll_interval {args.poll_interval}")
    print()
    print("| phase | run | writes ok | writes/s | p50 us | p99 us | max us | met BUSY | failed | "
          "longest wait ms | notes |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for i, p in enumerate(L["paired"]):
        print(row("1 no daemon", i + 1, p["no_daemon"]))
        d = p["polling"]["daemon"]
        print(row("2 polling", i + 1, p["polling"],
                  f"daemon CPU {d['cpu_percent']}%, {d['rounds_of_header_reads']} rounds of reads "
                  f"({d['rounds_expected']} expected), exit {d['exit_status']}"))
    for key, label in (("no_daemon", "1 no daemon"), ("polling", "2 polling")):
        m = L["medians"][key]
        print(f"| {label} | median | {fmt(m['ok'])} | {fmt(m['writes_per_s'], 1)} | {fmt(m['p50_us'])} | "
              f"{fmt(m['p99_us'])} | {fmt(m['max_us'])} | {fmt(m['met_busy'])} | {fmt(m['failed'])} | "
              f"{fmt(m['longest_wait_ms'], 1)} | |")
    a = L["analyze"]
    print(row("3 analyzing", 1, a, f"{a['analyze_count']} x `analyze --force` every {a['analyze_every_s']:g} s, median "
              f"{a['analyze_wall_ms_median']} ms, exit {a['analyze_exit_status']}"))
    print(row("3 analyzing, writes during", 1, a["during"], ""))
    for i, v in enumerate(L["vacuum"]):
        vv = v["vacuum"]
        res = vv["result"]
        print(row("4 vacuuming", i + 1, v, f"VACUUM {vv['wall_ms']:.0f} ms (job {res.get('duration_ms')} ms), "
                  f"exit {vv['exit_status']} ({res.get('status')}), journal_mode after {res.get('journal_mode')}, "
                  f"{fmt(res.get('bytes_reclaimed'))} bytes reclaimed"))
        print(row("4 vacuuming, writes during", i + 1, v["during"], ""))
    c = L["p99_comparison"]
    print()
    print("| p99 us | per run | median (of the absolute values) |")
    print("|---|---|---:|")
    print(f"| no daemon | {c['no_daemon_p99_us']} | {fmt(med(c['no_daemon_p99_us']))} |")
    print(f"| polling | {c['polling_p99_us']} | {fmt(med(c['polling_p99_us']))} |")
    print(f"| polling minus the no-daemon run before it (paired) | {c['paired_diff_us']} | "
          f"{fmt(c['paired_diff_median_us'])} ({fmt(c['paired_absdiff_median_us'])}) |")
    print(f"| no daemon minus the no-daemon run before it (noise) | {c['noise_diff_us']} | "
          f"{fmt(med(c['noise_diff_us']))} ({fmt(c['noise_absdiff_median_us'])}) |")
    print(f"| spread (max - min): no daemon / polling | | {fmt(c['spread_no_daemon_us'])} / "
          f"{fmt(c['spread_polling_us'])} |")


def print_vacuum_compare(vc, size_text, info):
    print()
    print(f"### VACUUM job against `sqlite3 DB VACUUM`: {info['bytes'] / 2**20:.1f} MiB ({size_text}), "
          f"{info['fragmentation_percent']}% free pages, {info['rows']:,} rows; fresh synced copy per run")
    print()
    print("| command | wall s (median, min-max) | CPU s (median, min-max) | wall / sqlite3 | CPU / sqlite3 | "
          "wall ratio per run |")
    print("|---|---:|---:|---:|---:|---|")
    for name, m in vc["medians"].items():
        print(f"| `{name}` | {m['wall_s']:.3f} ({m['wall_s_range'][0]:.3f}-{m['wall_s_range'][1]:.3f}) | "
              f"{m['cpu_s']:.3f} ({m['cpu_s_range'][0]:.3f}-{m['cpu_s_range'][1]:.3f}) | {m['wall_ratio']:.3f} | "
              f"{m['cpu_ratio']:.3f} | {m['wall_ratio_per_run']} |")


# --------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default=DEFAULT_BUILD,
                    help=f"bench/build.sh's directory (default {DEFAULT_BUILD}): BUILD/src/sqlite-maintd, -maintctl")
    ap.add_argument("--quick", action="store_true",
                    help="1000 other databases, 2 pairs of 3 s, a 10M application database, a 20M VACUUM, 1 run")
    ap.add_argument("--others", type=int, help="other databases the daemon watches (default 10000)")
    ap.add_argument("--runs", type=int, help="pairs of phases 1 and 2 (default 5)")
    ap.add_argument("--seconds", type=float, help="length of each phase (default 10)")
    ap.add_argument("--vacuum-phase-runs", type=int, help="runs of phase 4 per layout (default 3)")
    ap.add_argument("--analyze-every", type=float, default=1.0,
                    help="seconds between the starts of the ANALYZEs of phase 3 (default 1; 0: back to back)")
    ap.add_argument("--rate", type=float, default=500.0, help="application writes per second (0: a tight loop)")
    ap.add_argument("--synchronous", default="FULL", choices=("OFF", "NORMAL", "FULL", "EXTRA"))
    ap.add_argument("--busy-timeout-ms", type=int, default=5000)
    ap.add_argument("--poll-interval", default="2s")
    ap.add_argument("--app-size", help="the application's database (default 50M)")
    ap.add_argument("--vacuum-size", help="the database of the VACUUM comparison (default 200M)")
    ap.add_argument("--vacuum-runs", type=int, help="runs of each VACUUM command (default 3)")
    ap.add_argument("--layouts", default="rollback,wal")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workdir")
    ap.add_argument("--json-out")
    args = ap.parse_args()

    q = args.quick
    args.others = args.others if args.others is not None else (1000 if q else 10000)
    args.runs = args.runs or (2 if q else 5)
    args.seconds = args.seconds or (3.0 if q else 10.0)
    args.vacuum_phase_runs = args.vacuum_phase_runs or (1 if q else 3)
    args.app_size = args.app_size or ("10M" if q else "50M")
    args.vacuum_size = args.vacuum_size or ("20M" if q else "200M")
    args.vacuum_runs = args.vacuum_runs or (1 if q else 3)
    args.lead = 1.0 if q else 1.5      # application writes before the job starts
    args.tail = 0.5 if q else 1.5      # ... and after it ended
    pi = args.poll_interval
    args.poll_interval_s = float(pi[:-2]) / 1000 if pi.endswith("ms") else \
        float(pi[:-1]) * {"s": 1, "m": 60}[pi[-1]]
    layouts = [x for x in args.layouts.split(",") if x]

    daemon = os.path.join(args.build, "src", "sqlite-maintd")
    ctl = os.path.join(args.build, "src", "sqlite-maintctl")
    for b in (daemon, ctl):
        if not os.access(b, os.X_OK):
            sys.exit(f"{b} is not an executable (bench/build.sh {args.build})")
    if not shutil.which("sqlite3"):
        sys.exit("the sqlite3 CLI is missing (apt-get install sqlite3)")

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    t_start = time.monotonic()
    root = args.workdir or tempfile.mkdtemp(prefix="maintd-impact-", dir="/var/tmp")
    os.makedirs(root, exist_ok=True)
    src_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cli_version = subprocess.run(["sqlite3", "--version"], capture_output=True, text=True).stdout.split()[:1]
    result = {
        "commit": binary_revision(daemon, git_revision(src_root)), "daemon": daemon, "ctl_binary": ctl,
        "argv": sys.argv, "quick": q, "sqlite_python": sqlite3.sqlite_version, "sqlite_cli": cli_version,
        "python": sys.version.split()[0], "nproc": os.cpu_count(), "uname": " ".join(os.uname()),
        "loadavg_at_start": loadavg(), "seed": args.seed,
        "settings": {"others": args.others, "runs": args.runs, "seconds": args.seconds, "rate": args.rate,
                     "synchronous": args.synchronous, "busy_timeout_ms": args.busy_timeout_ms,
                     "poll_interval": args.poll_interval, "app_size": args.app_size,
                     "vacuum_size": args.vacuum_size, "vacuum_runs": args.vacuum_runs,
                     "vacuum_phase_runs": args.vacuum_phase_runs, "lead_s": args.lead, "tail_s": args.tail},
        "layouts": [], "vacuum_compare": None,
    }
    try:
        log(f"building the application's database ({args.app_size}) in {root}")
        app_rollback = os.path.join(root, "app-template-rollback.db")
        app_info = build_fragmented(app_rollback, parse_size(args.app_size))
        app_wal = os.path.join(root, "app-template-wal.db")
        to_wal(app_rollback, app_wal)
        small, _ = make_template(root, "rollback", args.seed, "small-rollback")
        small_wal = os.path.join(root, "template-small-wal.db")
        to_wal(small, small_wal)
        log(f"  {app_info}")

        for layout in layouts:
            L = {"layout": layout, "journal_mode": LAYOUTS[layout], "app_db": app_info, "others": args.others,
                 "paired": [], "analyze": None, "vacuum": []}
            app_template = app_rollback if layout == "rollback" else app_wal
            app_dir = os.path.join(root, f"app-{layout}")
            os.makedirs(app_dir, exist_ok=True)
            app_db = os.path.join(app_dir, "app.db")
            others = os.path.join(root, f"others-{layout}")
            log(f"{layout}: {args.others} other databases")
            copy_set(small if layout == "rollback" else small_wal, False, others, args.others)
            state = os.path.join(root, f"state-{layout}")
            os.makedirs(state, exist_ok=True)
            conf = os.path.join(root, f"daemon-{layout}.yaml")
            write_conf(conf, app_db, os.path.join(others, "*.db") if args.others else None, state,
                       args.poll_interval)
            chk = subprocess.run([daemon, "--check-config", "-c", conf], capture_output=True, text=True)
            if chk.returncode != 0:
                raise RuntimeError(f"{conf}: {chk.stdout}{chk.stderr}")
            # one run not counted: the page cache, the state file, the
            # application's first writes
            fresh_copy(app_template, app_db)
            d = Daemon(daemon, conf, root, f"{layout}-warmup")
            time.sleep(1.0 if q else 3.0)
            d.stop()
            phase_plain(app_template, app_db, args, args.seed, 1.0 if q else 3.0)

            for i in range(args.runs):
                s1, _ = phase_plain(app_template, app_db, args, args.seed + i)
                s2, _ = phase_polling(app_template, app_db, args, args.seed + i, daemon, conf, root,
                                      f"{layout}-{i}", args.others + 1)
                L["paired"].append({"no_daemon": s1, "polling": s2})
                log(f"  {layout} pair {i + 1}: no daemon p50/p99/max {s1['p50_us']}/{s1['p99_us']}/{s1['max_us']} us "
                    f"{s1['writes_per_s']}/s; polling {s2['p50_us']}/{s2['p99_us']}/{s2['max_us']} us "
                    f"{s2['writes_per_s']}/s, daemon CPU {s2['daemon']['cpu_percent']}%, "
                    f"{s2['daemon']['rounds_of_header_reads']} rounds")
            L["medians"] = {}
            for key in ("no_daemon", "polling"):
                rs = [p[key] for p in L["paired"]]
                L["medians"][key] = {k: med([r[k] for r in rs]) for k in
                                     ("ok", "writes_per_s", "p50_us", "p90_us", "p99_us", "p999_us", "max_us",
                                      "met_busy", "failed", "longest_wait_ms")}
            p1 = [p["no_daemon"]["p99_us"] for p in L["paired"]]
            p2 = [p["polling"]["p99_us"] for p in L["paired"]]
            pd = [round(b - a, 1) for a, b in zip(p1, p2)]
            nd = [round(p1[i + 1] - p1[i], 1) for i in range(len(p1) - 1)]
            L["p99_comparison"] = {
                "no_daemon_p99_us": p1, "polling_p99_us": p2,
                "paired_diff_us": pd, "paired_diff_median_us": med(pd),
                "paired_absdiff_median_us": med([abs(x) for x in pd]),
                "noise_diff_us": nd, "noise_absdiff_median_us": med([abs(x) for x in nd]),
                "spread_no_daemon_us": round(max(p1) - min(p1), 1),
                "spread_polling_us": round(max(p2) - min(p2), 1),
            }
            shutil.rmtree(others)

            log(f"  {layout}: analyzing")
            L["analyze"], _ = phase_analyze(app_template, app_db, args, args.seed + 100, ctl)
            a = L["analyze"]
            log(f"    {a['analyze_count']} ANALYZE, writes p50/p99/max {a['p50_us']}/{a['p99_us']}/{a['max_us']} us, "
                f"met BUSY {a['met_busy']}, failed {a['failed']}")
            for i in range(args.vacuum_phase_runs):
                log(f"  {layout}: vacuuming, run {i + 1}")
                v, _ = phase_vacuum(app_template, app_db, args, args.seed + 200 + i, ctl)
                L["vacuum"].append(v)
                log(f"    VACUUM {v['vacuum']['wall_ms']} ms exit {v['vacuum']['exit_status']} "
                    f"({v['vacuum']['result'].get('status')}); writes met BUSY {v['met_busy']}, failed {v['failed']}, "
                    f"longest wait {v['longest_wait_ms']} ms")
            shutil.rmtree(app_dir)
            result["layouts"].append(L)

        log(f"building the VACUUM comparison's database ({args.vacuum_size})")
        vt = os.path.join(root, "vacuum-template.db")
        vinfo = build_fragmented(vt, parse_size(args.vacuum_size))
        log(f"  {vinfo}")
        result["vacuum_compare"] = vacuum_compare(vt, root, ctl, args.vacuum_runs, log)
        result["vacuum_compare"]["database"] = vinfo
    finally:
        if not args.workdir:
            shutil.rmtree(root, ignore_errors=True)

    result["loadavg_at_end"] = loadavg()
    result["elapsed_s"] = round(time.monotonic() - t_start, 1)
    print(f"## sqlite-maintd and the application's writes: {result['commit']}, nproc {result['nproc']}, "
          f"SQLite {result['sqlite_python']}")
    for L in result["layouts"]:
        print_layout(L, args)
    print_vacuum_compare(result["vacuum_compare"], args.vacuum_size, result["vacuum_compare"]["database"])
    print()
    print(f"elapsed {result['elapsed_s']} s")
    finish(result, args.json_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
