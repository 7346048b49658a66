#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""How the cost of watching databases scales: sqlite-maintd beside a bare header loop.

One command: the databases are made here, every figure of the daemon is
measured beside its reference in the same run (alternately where a run is
repeated), and the ratio printed with its target. For each N of --counts
(rollback databases, copies of one small template, in one directory):

1. --once: `sqlite-maintd --once --dry-run` CPU (user+sys from wait4) per
   database, against `header_loop DIR .db` (bench/header_loop.c: readdir,
   then open/pread(100)/close of each file; its own getrusage) over the
   same files; and the `sqlite3` CLI (`PRAGMA page_count; PRAGMA
   freelist_count`, a process per database) over 200 of them.
2. Running, every round a full read (poll_interval = --interval,
   full_sweep_interval 90% of it: equal is not enough, see
   sweep_every_round()): CPU of each of the 3 rounds after the first (the
   mean of those that read every database), and VmRSS after the first
   round. The daemon's CPU is its
   process CPU clock (clock_gettime of its CPUCLOCK: every thread, in ns;
   /proc/PID/stat's utime+stime to 10 ms, also recorded) plus the
   cutime+cstime of the job processes it reaped.
3. Idle: full_sweep_interval at its default (6h), nothing changes: CPU per
   round after the first; the cost per hour at the default 5 m interval
   (12 idle rounds + 1/6 of a full sweep) against a header sweep at every
   poll (12 full rounds); then one row written into one database, and the
   rounds until STATUS shows `1 read`.
4. Loop lateness under load (N = 50000, quick: 10000): poll_interval 2s,
   every round a full read, max_concurrent_jobs 2; after three rounds two
   large fragmented databases (--big-mib, default 500 MiB, 40% free pages)
   are moved into a directory a second entry watches with urgent
   thresholds, and their VACUUMs run; the `loop late` p99 and max of
   STATUS over the rounds while they run and without them, and the loop
   thread's wait for a CPU (/proc/PID/task/PID/schedstat).
5. Start and reload: spawn to READY=1; SIGHUP to READY=1 after RELOADING=1.
6. WAL databases (N = 1000, 10000; quick: 1000), each held open by an
   application (bench/poll-cost.py's HOLDER, in as many processes as the
   descriptor limit needs, so its -shm is live and its -wal holds frames):
   `--once --dry-run` CPU per database against header_loop over the same
   .db files (the holders' CPU is not counted: they idle), and the `poll
   done` figures of a debug run (WAL databases read without SQLite,
   through SQLite).

Running phases are timed by the daemon's sd_notify messages: this script
listens on NOTIFY_SOCKET. STATUS= is sent only when its text changes, so a
round whose figures equal the last one's sends nothing; rounds are
therefore counted by the clock (a round every poll_interval from the end
of the first, sampled a tenth of an interval after each expected end,
before the next begins) and STATUS gives each round's figures.

    bench/build.sh /tmp/bench-build-scale
    /usr/bin/python3 bench/poll-scale.py                   # 10k, 50k, 100k; about 20 minutes
    /usr/bin/python3 bench/poll-scale.py --quick           # 1k, 10k; under a minute
    /usr/bin/python3 bench/poll-scale.py --interval 5m     # the true default interval (hours)
    /usr/bin/python3 bench/poll-scale.py --counts 50000 --phases 4   # one phase (2 brings 1, 3 brings 2)

The files go to a fresh directory under /var/tmp, removed at the end. The
page cache is warm: every timed case follows an untimed run over the same
files. A phase that fails is reported and the run goes on.
"""

import argparse
import json
import os
import re
import resource
import select
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from benchlib import (binary_revision, copy_set, finish, git_revision, loadavg, make_template,  # noqa: E402
                      notify_socket, run_timed, write_watch_config)

DEFAULT_BUILD = "/tmp/bench-build-scale"
CLK_TCK = os.sysconf("SC_CLK_TCK")
BY = "bench/poll-scale.py"

# The daemon's spreading of a round (src/manager.c): at least POLL_BATCH
# reads per tick, ticks at least POLL_TICK_MIN_MS apart, over
# POLL_SPREAD_PERCENT of the interval. (64 up to a0dc348, 256 from c16ed89, 1024 since the commit after 648da85:
# the binary measured decides; set it to the measured one's.)
POLL_BATCH = 1024
POLL_TICK_MIN_MS = 100
POLL_SPREAD_PERCENT = 80

TARGETS = {
    "once_ratio": 1.5,          # daemon --once / header_loop, per database
    "cli_factor": 300,          # sqlite3 CLI / daemon --once, per database (at least)
    "running_ratio": 1.5,       # running daemon full round / header_loop, per database
    "rss_mib": {10000: 16, 100000: 64},
    "idle_hour_ratio": 0.1,     # (12 idle + 1/6 full) / (12 full)
    "lag_p99_ms": 20,
    "lag_max_ms": 50,
    "start_s_at_100k": 1.0,
    "reload_s_at_100k": 1.0,
    "wal_ratio": 3.0,           # daemon --once over held-open WAL databases / header_loop
}


# bench/poll-cost.py's HOLDER (an application that keeps one idle
# connection open to each WAL database, reading once so the wal-index is
# set up, until its stdin closes), for databases LO..N-1 of DIR: a
# connection holds 3 descriptors (database, -wal, -shm) and a process may
# not raise its hard RLIMIT_NOFILE without CAP_SYS_RESOURCE, so several
# processes share the set.
HOLDER = r"""
import os, resource, sqlite3, sys
d, lo, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * (n - lo) + 64)), hard))
cons = []
for i in range(lo, n):
    c = sqlite3.connect(os.path.join(d, f"db{i:05d}.db"), isolation_level=None)
    c.execute("SELECT count(*) FROM t").fetchone()
    cons.append(c)
print("ready", flush=True)
sys.stdin.read()
"""


def parse_duration(s):
    """'500ms', '30s', '5m', '6h' -> seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*", s)
    if not m:
        raise argparse.ArgumentTypeError(f"not a duration: {s!r} (500ms, 30s, 5m, 1h)")
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}[m.group(2)]


def round_ticks(n, interval_s):
    """(ticks, reads per tick, ms between ticks) of one round, as start_round() computes them."""
    spread = int(interval_s * 1000) * POLL_SPREAD_PERCENT // 100
    if n <= POLL_BATCH or spread < POLL_TICK_MIN_MS:
        return 1, max(n, 1), 0
    ticks = min(n // POLL_BATCH, spread // POLL_TICK_MIN_MS)
    return ticks, -(-n // ticks), spread // ticks


def med(values):
    return statistics.median(values) if values else None


def rnd(x, d=2):
    return None if x is None else round(x, d)


# --------------------------------------------------------------------------
# Databases

def grow_set(template, dest, n):
    """dest/db00000.db .. db{n-1}.db, copies of template; those already
    there are kept (the set grows from one N to the next)."""
    os.makedirs(dest, exist_ok=True)
    made = 0
    for i in range(n):
        p = os.path.join(dest, f"db{i:05d}.db")
        if not os.path.exists(p):
            shutil.copyfile(template, p)
            made += 1
    return made


def make_fragmented(path, size_mib, free_percent, seed):
    """A database of about size_mib MiB (4 KiB pages, one 3000-byte row per
    page) with free_percent of its pages on the freelist: rows deleted
    evenly. Returns (page_count, freelist_count)."""
    pages = size_mib * 1024 * 1024 // 4096
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA page_size=4096")
    con.execute("PRAGMA journal_mode=DELETE")
    con.execute("CREATE TABLE big(id INTEGER PRIMARY KEY, v BLOB)")
    con.execute("BEGIN")
    con.execute("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?) "
                "INSERT INTO big(id, v) SELECT x, randomblob(3000) FROM c", (pages,))
    con.execute("COMMIT")
    con.execute("DELETE FROM big WHERE id % 100 < ?", (free_percent,))
    pc = con.execute("PRAGMA page_count").fetchone()[0]
    fl = con.execute("PRAGMA freelist_count").fetchone()[0]
    con.close()
    return pc, fl


def db_pages(path):
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return con.execute("PRAGMA page_count").fetchone()[0], con.execute("PRAGMA freelist_count").fetchone()[0]
    finally:
        con.close()


def write_conf(path, glob, state, poll_interval, full_sweep=None, max_jobs=None, extra_dbs=""):
    """benchlib's watch configuration (nothing due), with full_sweep_interval
    and max_concurrent_jobs set when given, and more databases: entries."""
    write_watch_config(path, glob, state, poll_interval, BY)
    with open(path) as f:
        text = f.read()
    if full_sweep:
        text = text.replace("poll_interval:", f"full_sweep_interval: {full_sweep}\npoll_interval:", 1)
    if max_jobs:
        text = text.replace("max_concurrent_jobs: 1", f"max_concurrent_jobs: {max_jobs}", 1)
    with open(path, "w") as f:
        f.write(text + extra_dbs)
    os.makedirs(state, exist_ok=True)


# --------------------------------------------------------------------------
# The measured programs

def run_once(binary, conf, n, extra=()):
    """One `--once --dry-run`: {"wall_s", "cpu_s", "user_s", "sys_s", "exit"}."""
    wall, ut, st, _, rc, err = run_timed([binary, "-c", conf, "--once", "--dry-run", "--log-target=console",
                                          *extra], timeout=1800, check=False, stdout=False, text_from="stderr")
    m = re.search(r"started \(once\)[^:]*: (\d+) databases?", err)
    if rc != 0 or not m or int(m.group(1)) != n:
        raise RuntimeError(f"--once over {n}: exit {rc}, {err[-600:]}")
    return {"wall_s": wall, "cpu_s": ut + st, "user_s": ut, "sys_s": st, "exit": rc}, err


def run_header_loop(header_loop, dest, n):
    """header_loop DIR .db: its own figures (cpu_us: the whole process) and wait4's."""
    wall, ut, st, _, rc, out = run_timed([header_loop, dest, ".db"], timeout=600)
    r = json.loads(out)
    if r["files"] != n or r["read"] != n:
        raise RuntimeError(f"header_loop over {dest}: {r} (expected {n} files)")
    r.update(wall_s=wall, wait4_cpu_s=ut + st)
    return r


def run_cli(dbs):
    """sqlite3 DB 'PRAGMA page_count; PRAGMA freelist_count', a process per
    database: total CPU (wait4 user+sys) and wall."""
    cpu = wall = 0.0
    for db in dbs:
        w, ut, st, _, _, _ = run_timed(["sqlite3", db, "PRAGMA page_count; PRAGMA freelist_count"], timeout=60)
        cpu += ut + st
        wall += w
    return {"cpu_s": cpu, "wall_s": wall, "databases": len(dbs)}


def proc_snapshot(pid):
    """The daemon's CPU and memory now: its process CPU clock (all threads,
    ns), utime/stime/cutime/cstime (ticks) and VmRSS/VmHWM (KiB)."""
    s = {"t": time.monotonic()}
    try:
        s["clock_ns"] = time.clock_gettime_ns(((~pid) << 3) | 2)  # CPUCLOCK_SCHED of the process
    except OSError:
        s["clock_ns"] = None
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        s["utime"], s["stime"], s["cutime"], s["cstime"] = (int(x) for x in fields[11:15])
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    s[line.split(":")[0]] = int(line.split()[1])
        # the loop thread (the main one): time waiting for a CPU, and preemptions
        with open(f"/proc/{pid}/task/{pid}/schedstat") as f:
            s["loop_exec_ns"], s["loop_run_delay_ns"] = (int(x) for x in f.read().split()[:2])
        with open(f"/proc/{pid}/task/{pid}/status") as f:
            for line in f:
                if line.startswith("nonvoluntary_ctxt_switches:"):
                    s["loop_nonvoluntary_switches"] = int(line.split()[1])
    except (OSError, ValueError):
        pass
    return s


def cpu_between(a, b):
    """CPU seconds from snapshot a to b: the process clock plus the children
    reaped; and the same from /proc/PID/stat alone (10 ms ticks)."""
    child = ((b["cutime"] + b["cstime"]) - (a["cutime"] + a["cstime"])) / CLK_TCK
    stat = ((b["utime"] + b["stime"]) - (a["utime"] + a["stime"])) / CLK_TCK + child
    clock = (b["clock_ns"] - a["clock_ns"]) / 1e9 + child if a["clock_ns"] is not None and b["clock_ns"] is not None \
        else stat
    return clock, stat


STATUS_RE = re.compile(r"Watching (\d+) databases?; (\d+) jobs? running, (\d+) queued; last poll: (\d+) read, "
                       r"(\d+) unchanged, loop late ([\d.]+) ms at p99, ([\d.]+) ms at most; last: (.*)")


class Daemon:
    """sqlite-maintd running, its sd_notify messages received on a socket of
    our own; each message timed and paired with a snapshot of its CPU."""

    def __init__(self, binary, conf, workdir, tag, args=()):
        self.sock_path, self.sock = notify_socket(workdir, tag)
        self.sock.setblocking(False)
        env = {k: v for k, v in os.environ.items()
               if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID")}
        env["NOTIFY_SOCKET"] = self.sock_path
        self.log_path = os.path.join(workdir, f"daemon-{tag}.log")
        self.log = open(self.log_path, "wb")
        self.msgs = []
        self.cursor = 0
        self.t_spawn = time.monotonic()
        self.p = subprocess.Popen([binary, "-c", conf, "--log-target=console", *args], stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=self.log, env=env)
        self.pid = self.p.pid
        self.exit_status = None

    def _receive(self):
        new = []
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                break
            t = time.monotonic()
            fields = {}
            for line in data.decode("utf-8", "replace").split("\n"):
                if "=" in line:
                    k, v = line.split("=", 1)
                    fields[k] = v
            st = None
            if "STATUS" in fields:
                m = STATUS_RE.match(fields["STATUS"])
                if m:
                    st = {"watching": int(m.group(1)), "running": int(m.group(2)), "queued": int(m.group(3)),
                          "read": int(m.group(4)), "unchanged": int(m.group(5)), "lag_p99_ms": float(m.group(6)),
                          "lag_max_ms": float(m.group(7)), "last": m.group(8)}
            msg = {"t": t, "fields": fields, "status": st, "snap": proc_snapshot(self.pid)}
            self.msgs.append(msg)
            new.append(msg)
        return new

    def pump(self, until, stop_on_message=False):
        """Receive messages until monotonic time until (or the first batch,
        with stop_on_message); the new messages."""
        got = []
        while True:
            left = until - time.monotonic()
            r, _, _ = select.select([self.sock], [], [], max(0.0, min(left, 0.5)))
            if r:
                got += self._receive()
            if self.p.poll() is not None:
                raise RuntimeError(f"sqlite-maintd exited ({self.p.returncode}): {self.log_tail()}")
            if (got and stop_on_message) or time.monotonic() >= until:
                return got

    def wait_for(self, pred, timeout, what):
        """The first message from the cursor on for which pred holds; the
        cursor moves past it."""
        deadline = time.monotonic() + timeout
        while True:
            while self.cursor < len(self.msgs):
                m = self.msgs[self.cursor]
                self.cursor += 1
                if pred(m):
                    return m
            if time.monotonic() >= deadline:
                raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}; last messages: "
                                   f"{[x['fields'] for x in self.msgs[-3:]]}; log: {self.log_tail()}")
            self.pump(deadline, stop_on_message=True)

    def last_status(self, before=None):
        for m in reversed(self.msgs):
            if m["status"] and (before is None or m["t"] <= before):
                return m
        return None

    def log_tail(self, n=800):
        self.log.flush()
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-n:].decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(timeout=30)
        self.exit_status = self.p.returncode
        self.sock.close()
        self.log.close()
        try:
            os.unlink(self.sock_path)
        except FileNotFoundError:
            pass
        return self.exit_status

    def timeline(self):
        """The messages, for the JSON: [seconds since spawn, text, CPU s so far]."""
        out = []
        for m in self.msgs:
            s = m["snap"]
            cpu = s["clock_ns"] / 1e9 if s.get("clock_ns") is not None else None
            out.append([round(m["t"] - self.t_spawn, 3), "\n".join(f"{k}={v}" for k, v in m["fields"].items()),
                        rnd(cpu, 4)])
        return out


def is_ready(m):
    return m["fields"].get("READY") == "1"


def first_round_done(n):
    return lambda m: m["status"] is not None and m["status"]["read"] == n


def rounds_after_first(d, n, interval_s, rounds, first_timeout):
    """The first round's end (its STATUS), then a snapshot a tenth of an
    interval after each of the next rounds' expected end (every interval
    after the first's). Returns (first message, [(snapshot, STATUS figures
    of that round)])."""
    first = d.wait_for(first_round_done(n), first_timeout, f"the first round over {n} databases")
    t1 = first["t"]
    out = []
    for k in range(1, rounds + 1):
        at = t1 + k * interval_s + 0.1 * interval_s
        d.pump(at)
        snap = proc_snapshot(d.pid)
        last = d.last_status(before=at)
        out.append((snap, dict(last["status"], t=round(last["t"] - t1, 3)) if last else None))
    return first, out


# --------------------------------------------------------------------------
# Phases

def phase_once(a, n, dest, conf, result_n):
    """1. --once against header_loop, alternately; the sqlite3 CLI over 200."""
    run_once(a.bin, conf, n)  # warm: page cache, state file
    run_header_loop(a.header_loop, dest, n)
    daemon, header = [], []
    for _ in range(a.runs):
        daemon.append(run_once(a.bin, conf, n)[0])
        header.append(run_header_loop(a.header_loop, dest, n))
    cli_dbs = [os.path.join(dest, f"db{i:05d}.db") for i in range(min(200, n))]
    run_cli(cli_dbs[:10])  # warm the CLI's own files
    cli = [run_cli(cli_dbs) for _ in range(a.runs)]
    d_us = med([r["cpu_s"] for r in daemon]) * 1e6 / n
    h_us = med([r["cpu_us"] for r in header]) / n
    c_us = med([r["cpu_s"] for r in cli]) * 1e6 / len(cli_dbs)
    result_n["once"] = {
        "daemon_runs": daemon, "header_loop_runs": header, "cli_runs": cli,
        "daemon_cpu_us_per_db": rnd(d_us, 3), "header_loop_cpu_us_per_db": rnd(h_us, 3),
        "ratio": rnd(d_us / h_us, 3), "cli_cpu_us_per_db": rnd(c_us, 1), "cli_over_daemon": rnd(c_us / d_us, 1),
        "daemon_cpu_ms": rnd(med([r["cpu_s"] for r in daemon]) * 1e3, 2),
        "daemon_wall_ms": rnd(med([r["wall_s"] for r in daemon]) * 1e3, 2),
        "header_loop_cpu_ms": rnd(med([r["cpu_us"] for r in header]) / 1e3, 2),
        "header_loop_loop_cpu_ms": rnd(med([r["loop_cpu_us"] for r in header]) / 1e3, 2),
    }
    o = result_n["once"]
    print(f"  once N={n}: daemon {o['daemon_cpu_ms']} ms ({o['daemon_cpu_us_per_db']} us/db), header_loop "
          f"{o['header_loop_cpu_ms']} ms ({o['header_loop_cpu_us_per_db']} us/db): {o['ratio']}x; sqlite3 CLI "
          f"{o['cli_cpu_us_per_db']} us/db ({o['cli_over_daemon']}x the daemon)", flush=True)


def phase_start_reload(a, n, glob, result_n):
    """5. spawn to READY=1; after the first round, SIGHUP to READY=1."""
    interval = "1s" if a.quick else "4s"
    interval_s = parse_duration(interval)
    state = os.path.join(a.root, f"state-start-{n}")
    conf = os.path.join(a.root, f"start-{n}.yaml")
    write_conf(conf, glob, state, interval)
    runs = []
    for r in range(a.runs):
        d = Daemon(a.bin, conf, a.root, f"start-{n}-{r}")
        try:
            ready = d.wait_for(is_ready, 120, "READY=1")
            start_s = ready["t"] - d.t_spawn
            d.wait_for(first_round_done(n), interval_s * 3 + 120, "the first round")
            t_hup = time.monotonic()
            d.p.send_signal(signal.SIGHUP)
            reloading = d.wait_for(lambda m: m["fields"].get("RELOADING") == "1", 120, "RELOADING=1")
            ready2 = d.wait_for(is_ready, 120, "READY=1 after RELOADING=1")
            runs.append({"start_s": start_s, "reload_s": ready2["t"] - t_hup,
                         "reloading_after_s": reloading["t"] - t_hup, "state_file": "fresh" if r == 0 else "kept"})
        finally:
            d.stop()
    result_n["start_reload"] = {"poll_interval": interval, "runs": runs,
                                "start_s": rnd(med([x["start_s"] for x in runs]), 4),
                                "reload_s": rnd(med([x["reload_s"] for x in runs]), 4)}
    s = result_n["start_reload"]
    print(f"  start/reload N={n}: start {s['start_s']} s, reload {s['reload_s']} s (median of {len(runs)})",
          flush=True)


def sweep_every_round(interval_s):
    """A full_sweep_interval that makes every round a full sweep: 90% of the
    interval. Equal to it is not enough: poll_cb() sets the next sweep
    full_sweep_interval after the clock it reads in the callback, while
    libuv re-arms the repeating poll timer poll_interval after the loop's
    cached time (ms, taken when that iteration began, before the callback);
    when a millisecond boundary passes in between, the next poll can come
    a millisecond before the sweep is due, and that round reads nothing
    (seen once in three rounds at 100 000 with both at 30s)."""
    return f"{int(interval_s * 900)}ms"


def phase_running(a, n, glob, result_n):
    """2. every round a full read; CPU over 3 rounds after the first, RSS."""
    state = os.path.join(a.root, f"state-full-{n}")
    conf = os.path.join(a.root, f"full-{n}.yaml")
    sweep = sweep_every_round(a.interval_s)
    write_conf(conf, glob, state, a.interval, full_sweep=sweep)
    rounds = 3
    d = Daemon(a.bin, conf, a.root, f"full-{n}")
    try:
        ready = d.wait_for(is_ready, 120, "READY=1")
        first, snaps = rounds_after_first(d, n, a.interval_s, rounds, a.interval_s * 2 + 120)
        timeline = d.timeline()
    finally:
        rc = d.stop()
    s1 = first["snap"]
    clock, stat = cpu_between(s1, snaps[-1][0])
    # each round's CPU: snapshot to snapshot; only the rounds that read every database count
    each = [cpu_between(x, y[0])[0] for x, y in zip([s1] + [z[0] for z in snaps[:-1]], snaps)]
    reads = [f["read"] if f else None for _, f in snaps]
    full_rounds = [c for c, rd in zip(each, reads) if rd == n]
    per_round = statistics.mean(full_rounds) if full_rounds else clock / rounds
    ticks = round_ticks(n, a.interval_s)
    ticks5m = round_ticks(n, 300)
    header_us = result_n["once"]["header_loop_cpu_us_per_db"]
    r = {
        "poll_interval": a.interval, "full_sweep_interval": sweep, "rounds_measured": rounds,
        "cpu_ms_each_round": [rnd(c * 1e3, 2) for c in each], "full_rounds_counted": len(full_rounds),
        "start_s": rnd(ready["t"] - d.t_spawn, 4),
        "first_round_end_s": rnd(first["t"] - d.t_spawn, 3),
        "first_round_cpu_s": rnd(s1["clock_ns"] / 1e9, 4) if s1.get("clock_ns") is not None else None,
        "cpu_s_rounds": rnd(clock, 4), "cpu_s_rounds_from_proc_stat": rnd(stat, 2),
        "cpu_ms_per_round": rnd(per_round * 1e3, 2),
        "cpu_us_per_db_per_round": rnd(per_round * 1e6 / n, 3),
        "header_loop_cpu_us_per_db": header_us,
        "ratio": rnd(per_round * 1e6 / n / header_us, 3),
        "rss_kib_after_first_round": s1.get("VmRSS"), "hwm_kib_after_first_round": s1.get("VmHWM"),
        "rss_kib_end": snaps[-1][0].get("VmRSS"), "hwm_kib_end": snaps[-1][0].get("VmHWM"),
        "rss_bytes_per_db": rnd(s1.get("VmRSS", 0) * 1024 / n, 1),
        "reads_per_round": reads,
        "rounds": [f for _, f in snaps],
        "ticks_per_round": ticks[0], "reads_per_tick": ticks[1], "tick_ms": ticks[2],
        "ticks_per_round_at_5m": ticks5m[0],
        "exit_status": rc, "status_timeline": timeline,
    }
    if any(x != n for x in reads):
        r["warning"] = (f"a measured round did not read every database: reads per round {reads}; the figure is the "
                        f"mean of the {len(full_rounds)} that did")
        print(f"  WARNING N={n}: {r['warning']}", flush=True)
    result_n["running"] = r
    print(f"  running N={n}: {r['cpu_ms_per_round']} ms per round ({r['cpu_us_per_db_per_round']} us/db), "
          f"{r['ratio']}x header_loop; RSS {r['rss_kib_after_first_round']} KiB after the first round; "
          f"{ticks[0]} ticks of {ticks[1]} reads per round (at 5m: {ticks5m[0]})", flush=True)


def phase_idle(a, n, glob, dest, template, result_n):
    """3. full_sweep_interval at its default: idle rounds, then one change."""
    state = os.path.join(a.root, f"state-idle-{n}")
    conf = os.path.join(a.root, f"idle-{n}.yaml")
    write_conf(conf, glob, state, a.interval)
    rounds = a.idle_rounds
    d = Daemon(a.bin, conf, a.root, f"idle-{n}")
    target = os.path.join(dest, "db00000.db")
    try:
        ready = d.wait_for(is_ready, 120, "READY=1")
        first, snaps = rounds_after_first(d, n, a.interval_s, rounds, a.interval_s * 2 + 120)
        t1 = first["t"]
        # one row written into one database, by another process
        t_write = time.monotonic()
        subprocess.run([sys.executable, "-c",
                        "import sqlite3, sys; c = sqlite3.connect(sys.argv[1], isolation_level=None); "
                        "c.execute(\"INSERT INTO t(name, v) VALUES('changed', x'00')\"); c.close()", target],
                       check=True, timeout=60)
        d.cursor = len(d.msgs)
        seen = d.wait_for(lambda m: m["status"] is not None and 1 <= m["status"]["read"] < n,
                          a.interval_s * 6 + 60, "a round that read the changed database")
        timeline = d.timeline()
    finally:
        rc = d.stop()
        shutil.copyfile(template, target)  # the set as it was, for the next N
    clock, stat = cpu_between(first["snap"], snaps[-1][0])
    idle = clock / rounds
    full = result_n["running"]["cpu_ms_per_round"] / 1e3
    hour = 12 * idle + full / 6
    ref = 12 * full
    # rounds begin an interval apart from READY=1 (the first poll is at once):
    # the rounds that began after the write, up to the one that saw it
    k_write = int((t_write - ready["t"]) // a.interval_s)
    k_seen = int((seen["t"] - ready["t"]) // a.interval_s)
    r = {
        "poll_interval": a.interval, "full_sweep_interval": "6h (default)", "idle_rounds_measured": rounds,
        "cpu_s_idle_rounds": rnd(clock, 5), "cpu_s_idle_rounds_from_proc_stat": rnd(stat, 2),
        "cpu_ms_per_idle_round": rnd(idle * 1e3, 3), "cpu_us_per_db_per_idle_round": rnd(idle * 1e6 / n, 4),
        "full_round_cpu_ms": rnd(full * 1e3, 2),
        "per_hour_at_5m_s": rnd(hour, 4), "header_sweep_every_poll_per_hour_s": rnd(ref, 4),
        "ratio": rnd(hour / ref, 4),
        "rounds": [f for _, f in snaps],
        "rss_kib_end": snaps[-1][0].get("VmRSS"),
        "change": {"written_s_after_first_round_end": rnd(t_write - t1, 3),
                   "seen_s_after_write": rnd(seen["t"] - t_write, 3), "status": seen["status"],
                   "rounds_until_seen": k_seen - k_write},
        "exit_status": rc, "status_timeline": timeline,
    }
    bad = [f for _, f in snaps if f is None or f["read"] != 0]
    if bad:
        r["warning"] = f"an idle round read databases: {bad}"
        print(f"  WARNING N={n}: {r['warning']}", flush=True)
    result_n["idle"] = r
    print(f"  idle N={n}: {r['cpu_ms_per_idle_round']} ms per idle round; per hour at 5m {r['per_hour_at_5m_s']} s "
          f"against {r['header_sweep_every_poll_per_hour_s']} s: {r['ratio']}; the change seen "
          f"{r['change']['seen_s_after_write']} s after, {r['change']['rounds_until_seen']} round(s)", flush=True)


def phase_load(a, n, glob, result):
    """4. loop lateness while two VACUUMs run: the daemon in its stride first
    (every round a full read), then two large fragmented databases moved
    into a directory a second entry watches; rounds until the VACUUMs have
    ended and three more."""
    interval_s = 2.0
    src, big = os.path.join(a.root, "big-src"), os.path.join(a.root, "big")
    os.makedirs(src, exist_ok=True)
    os.makedirs(big, exist_ok=True)
    t = time.monotonic()
    pc, fl = make_fragmented(os.path.join(src, "big1.db"), a.big_mib, 40, a.seed)
    shutil.copyfile(os.path.join(src, "big1.db"), os.path.join(src, "big2.db"))
    made_s = time.monotonic() - t
    print(f"  load: two databases of {pc * 4096 / 2**20:.0f} MiB, {100 * fl / pc:.1f}% free pages, made in "
          f"{made_s:.1f} s", flush=True)
    state = os.path.join(a.root, "state-load")
    conf = os.path.join(a.root, "load.yaml")
    extra = f"""  - path: {big}/*.db
    vacuum:
      threshold: 10%
      urgent_threshold: 20%
      window: always
"""
    sweep = sweep_every_round(interval_s)
    write_conf(conf, glob, state, "2s", full_sweep=sweep, max_jobs=2, extra_dbs=extra)
    d = Daemon(a.bin, conf, a.root, "load")
    try:
        ready = d.wait_for(is_ready, 120, "READY=1")
        d.wait_for(first_round_done(n), 60, "the first round")
        d.pump(time.monotonic() + 2 * interval_s + 0.2)  # two rounds without jobs
        t_moved = time.monotonic()
        for b in ("big1.db", "big2.db"):
            os.rename(os.path.join(src, b), os.path.join(big, b))
        d.wait_for(lambda m: m["status"] is not None and m["status"]["running"] > 0, 60, "a VACUUM to start")
        d.wait_for(lambda m: m["status"] is not None and m["status"]["running"] == 0 and m["status"]["queued"] == 0,
                   a.load_timeout, "the VACUUMs to end")
        t_end = time.monotonic()
        d.pump(t_end + 3 * interval_s + 0.5)  # three rounds without jobs
        timeline = d.timeline()
    finally:
        rc = d.stop()
    with open(d.log_path, errors="replace") as fh:
        log = fh.read()
    vac_lines = [x for x in log.splitlines() if "VACUUM" in x or "vacuum" in x]
    after = [db_pages(os.path.join(big, b)) for b in ("big1.db", "big2.db")]
    sts = [m for m in d.msgs if m["status"]]
    run_t = [m["t"] for m in sts if m["status"]["running"] > 0]
    t_jobs0, t_jobs1 = min(run_t), min(m["t"] for m in sts if m["t"] > max(run_t))
    # round ends: a STATUS whose round figures differ from the one before (a
    # job starting or ending sends the last round's figures again; a round
    # whose figures equal the last one's sends nothing)
    ends, prev = [], None
    for m in sts:
        key = tuple(m["status"][k] for k in ("read", "unchanged", "lag_p99_ms", "lag_max_ms"))
        if key != prev and m["status"]["read"] + m["status"]["unchanged"] > 0:
            ends.append(m)
        prev = key
    first = ends[:1]
    during = [m for m in ends[1:] if t_jobs0 < m["t"] <= t_jobs1 + interval_s]
    outside = [m for m in ends[1:] if m not in during]

    def rounds_of(ms):
        out = []
        for m in ms:
            i = ends.index(m)
            a_, b_ = (ends[i - 1]["snap"] if i else ready["snap"]), m["snap"]
            x = {"t_s": rnd(m["t"] - d.t_spawn, 3),
                 **{k: m["status"][k] for k in ("running", "read", "unchanged", "lag_p99_ms", "lag_max_ms")}}
            if "loop_run_delay_ns" in a_ and "loop_run_delay_ns" in b_:
                # since the round before's end: the loop thread's wait for a CPU, its CPU, its preemptions
                x["loop_run_delay_ms"] = rnd((b_["loop_run_delay_ns"] - a_["loop_run_delay_ns"]) / 1e6, 1)
                x["loop_cpu_ms"] = rnd((b_["loop_exec_ns"] - a_["loop_exec_ns"]) / 1e6, 1)
                x["loop_preempted"] = b_.get("loop_nonvoluntary_switches", 0) - a_.get("loop_nonvoluntary_switches", 0)
            out.append(x)
        return out

    r = {
        "n": n, "poll_interval": "2s", "full_sweep_interval": sweep, "max_concurrent_jobs": 2,
        "big_databases": {"mib_each": rnd(pc * 4096 / 2**20, 1), "pages": pc, "free_pages": fl,
                          "free_percent": rnd(100 * fl / pc, 1), "made_s": rnd(made_s, 1),
                          "after": [{"pages": p, "free_pages": f} for p, f in after]},
        "moved_in_s": rnd(t_moved - d.t_spawn, 3), "jobs_from_s": rnd(t_jobs0 - d.t_spawn, 3),
        "jobs_until_s": rnd(t_jobs1 - d.t_spawn, 3),
        "jobs_running_max": max(m["status"]["running"] for m in sts),
        "jobs_s": rnd(t_jobs1 - t_jobs0, 2),
        "polls_while_jobs_ran": rnd((t_jobs1 - t_jobs0) / interval_s, 1),
        "ticks_per_round": round_ticks(n, interval_s)[0],
        "round_ends_seen": len(ends), "polls_elapsed": int((time.monotonic() - ready["t"]) // interval_s),
        "first_round": rounds_of(first), "rounds_during_jobs": rounds_of(during), "rounds_without_jobs": rounds_of(outside),
        "lag_p99_ms": max((m["status"]["lag_p99_ms"] for m in during), default=None),
        "lag_p99_ms_median_round": rnd(med([m["status"]["lag_p99_ms"] for m in during]), 2),
        "lag_max_ms": max((m["status"]["lag_max_ms"] for m in during), default=None),
        "lag_p99_ms_without_jobs": max((m["status"]["lag_p99_ms"] for m in outside), default=None),
        "lag_max_ms_without_jobs": max((m["status"]["lag_max_ms"] for m in outside), default=None),
        "vacuum_log_lines": vac_lines[:20], "exit_status": rc, "status_timeline": timeline,
    }
    result["load"] = r
    print(f"  load N={n}: {len(during)} rounds with figures while the jobs ran ({r['jobs_s']} s, "
          f"{r['polls_while_jobs_ran']} polls, at most {r['jobs_running_max']} jobs at once): loop late "
          f"{r['lag_p99_ms']} ms at p99, {r['lag_max_ms']} ms at most (without jobs: {r['lag_p99_ms_without_jobs']} / "
          f"{r['lag_max_ms_without_jobs']})", flush=True)
    shutil.rmtree(big)
    shutil.rmtree(src)


def phase_wal(a, n, result):
    """6. WAL databases held open by an application: --once against header_loop."""
    dest = os.path.join(a.root, f"wal-{n}")
    template, keep = make_template(a.root, "wal", a.seed, f"wal-{n}")
    copy_set(template, True, dest, n)
    keep.close()
    state = os.path.join(a.root, f"state-wal-{n}")
    conf = os.path.join(a.root, f"wal-{n}.yaml")
    write_conf(conf, os.path.join(dest, "*.db"), state, "5m")

    per = max(1, (resource.getrlimit(resource.RLIMIT_NOFILE)[1] - 64) // 4)
    t = time.monotonic()
    holders = [subprocess.Popen([sys.executable, "-c", HOLDER, dest, str(lo), str(min(n, lo + per))],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
               for lo in range(0, n, per)]
    try:
        for holder in holders:
            line = holder.stdout.readline().strip()
            if line != "ready":
                raise RuntimeError(f"a connection holder said {line!r}")
        held_s = time.monotonic() - t
        shm = sum(1 for i in range(n) if os.path.exists(os.path.join(dest, f"db{i:05d}.db-shm")))
        h0 = [proc_snapshot(h.pid) for h in holders]
        run_once(a.bin, conf, n)  # warm
        run_header_loop(a.header_loop, dest, n)
        daemon, header = [], []
        for _ in range(a.runs):
            daemon.append(run_once(a.bin, conf, n)[0])
            header.append(run_header_loop(a.header_loop, dest, n))
        h1 = [proc_snapshot(h.pid) for h in holders]
        _, debug = run_once(a.bin, conf, n, extra=("--log-level=debug",))
        # "W WAL databases read from the wal-index" or "... read without SQLite (wal-index or -wal)"
        m = re.search(r"poll done: (\d+) read, (\d+) unchanged \(inotify\), (\d+) WAL databases? read[^,]*, "
                      r"(\d+) through SQLite", debug)
        poll_done = {"read": int(m.group(1)), "unchanged": int(m.group(2)), "wal_without_sqlite": int(m.group(3)),
                     "through_sqlite": int(m.group(4))} if m else None
        nonempty = sum(1 for i in range(n) if os.path.getsize(os.path.join(dest, f"db{i:05d}.db-wal")) > 0)
    finally:
        for holder in holders:
            holder.stdin.close()
        for holder in holders:
            try:
                holder.wait(timeout=300)
            except subprocess.TimeoutExpired:
                holder.kill()
                holder.wait(timeout=30)
    d_us = med([r["cpu_s"] for r in daemon]) * 1e6 / n
    h_us = med([r["cpu_us"] for r in header]) / n
    r = {
        "n": n, "holder_processes": len(holders), "held_open_s": rnd(held_s, 2), "shm_files": shm,
        "nonempty_wal_after": nonempty,
        "holder_cpu_s_during_runs": rnd(sum(cpu_between(x, y)[0] for x, y in zip(h0, h1)), 4),
        "daemon_runs": daemon, "header_loop_runs": header,
        "daemon_cpu_ms": rnd(med([r["cpu_s"] for r in daemon]) * 1e3, 2),
        "daemon_wall_ms": rnd(med([r["wall_s"] for r in daemon]) * 1e3, 2),
        "daemon_cpu_us_per_db": rnd(d_us, 3), "header_loop_cpu_us_per_db": rnd(h_us, 3),
        "ratio": rnd(d_us / h_us, 3), "poll_done": poll_done,
    }
    result["wal"].append(r)
    print(f"  wal N={n}: daemon {r['daemon_cpu_ms']} ms ({r['daemon_cpu_us_per_db']} us/db), header_loop "
          f"{r['header_loop_cpu_us_per_db']} us/db: {r['ratio']}x; poll done: {poll_done}; holder CPU "
          f"{r['holder_cpu_s_during_runs']} s meanwhile", flush=True)
    shutil.rmtree(dest)


def guarded(store, key, fn, *args):
    """fn(*args); a failure is reported, kept as store[key] = {"error": ...},
    and the run goes on with the next phase."""
    try:
        fn(*args)
    except Exception as e:  # noqa: BLE001 - one phase's failure must not lose the others' figures
        import traceback

        traceback.print_exc()
        print(f"  {key} FAILED: {e}", flush=True)
        store[key] = {"error": str(e)[:2000]}


# --------------------------------------------------------------------------
# Output

def verdict(ok):
    return "-" if ok is None else ("ok" if ok else "**MISSED**")


def f(x, fmt="{:,}"):
    return "-" if x is None else fmt.format(x)


def print_tables(result):
    per = result["per_n"]
    ns = sorted(per, key=int)
    print()
    print("### 1. One round, --once --dry-run: CPU per database (median of "
          f"{result['runs']}; daemon by wait4, header_loop its own getrusage)")
    print()
    print("| N | daemon µs/db | daemon CPU ms (wall ms) | header_loop µs/db | ratio | target | |")
    print("|---:|---:|---:|---:|---:|---:|---|")
    for k in ns:
        o = per[k].get("once")
        if not o or "error" in o:
            if o:
                print(f"| {int(k):,} | failed: {o['error'][:200]} | | | | | |")
            continue
        print(f"| {int(k):,} | {o['daemon_cpu_us_per_db']} | {o['daemon_cpu_ms']} ({o['daemon_wall_ms']}) | "
              f"{o['header_loop_cpu_us_per_db']} | {o['ratio']}x | ≤ {TARGETS['once_ratio']}x | "
              f"{verdict(o['ratio'] <= TARGETS['once_ratio'])} |")
    print()
    print("| N | sqlite3 CLI µs/db (200 databases, a process each) | daemon µs/db | CLI / daemon | target | |")
    print("|---:|---:|---:|---:|---:|---|")
    for k in ns:
        o = per[k].get("once")
        if not o or "error" in o:
            continue
        print(f"| {int(k):,} | {o['cli_cpu_us_per_db']:,} | {o['daemon_cpu_us_per_db']} | {o['cli_over_daemon']:,}x | "
              f"≥ {TARGETS['cli_factor']}x | {verdict(o['cli_over_daemon'] >= TARGETS['cli_factor'])} |")

    print()
    print(f"### 2. Running, every round a full read (poll_interval {result['interval']}, full_sweep_interval 90% of it): "
          "CPU per round, the 3 rounds after the first")
    print()
    print("| N | ticks per round (at 5m) | daemon ms/round | daemon µs/db | header_loop µs/db | ratio | target | | "
          "RSS MiB after round 1 | bytes/db | RSS target | |")
    print("|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---|")
    for k in ns:
        r = per[k].get("running")
        if not r or "error" in r:
            if r:
                print(f"| {int(k):,} | failed: {r['error'][:200]} | | | | | | | | | | |")
            continue
        rss = r["rss_kib_after_first_round"] / 1024
        tgt = TARGETS["rss_mib"].get(int(k))
        print(f"| {int(k):,} | {r['ticks_per_round']} ({r['ticks_per_round_at_5m']}) | {r['cpu_ms_per_round']} | "
              f"{r['cpu_us_per_db_per_round']} | {r['header_loop_cpu_us_per_db']} | {r['ratio']}x | "
              f"≤ {TARGETS['running_ratio']}x | {verdict(r['ratio'] <= TARGETS['running_ratio'])} | {rss:.1f} | "
              f"{r['rss_bytes_per_db']:,} | {f(tgt, '≤ {} MiB')} | {verdict(None if tgt is None else rss <= tgt)} |")
    print()
    print(result["interval_note"])

    print()
    print(f"### 3. Idle (full_sweep_interval 6h, nothing changes; poll_interval {result['interval']}): per hour at the "
          "default 5m = 12 idle rounds + 1/6 full sweep, against a header sweep at every poll (12 full rounds)")
    print()
    print("| N | idle round ms (µs/db) | full round ms | per hour at 5m, s | header sweep every poll, s/h | ratio | "
          "target | | change seen after |")
    print("|---:|---:|---:|---:|---:|---:|---:|---|---|")
    for k in ns:
        r = per[k].get("idle")
        if not r or "error" in r:
            if r:
                print(f"| {int(k):,} | failed: {r['error'][:200]} | | | | | | | |")
            continue
        c = r["change"]
        print(f"| {int(k):,} | {r['cpu_ms_per_idle_round']} ({r['cpu_us_per_db_per_idle_round']}) | "
              f"{r['full_round_cpu_ms']} | {r['per_hour_at_5m_s']} | {r['header_sweep_every_poll_per_hour_s']} | "
              f"{r['ratio']} | ≤ {TARGETS['idle_hour_ratio']} | {verdict(r['ratio'] <= TARGETS['idle_hour_ratio'])} | "
              f"{c['rounds_until_seen']} round(s), {c['seen_s_after_write']} s (`{c['status']['read']} read`) |")

    ld = result.get("load")
    if ld and "error" in ld:
        print()
        print(f"### 4. Loop lateness: failed: {ld['error'][:500]}")
    elif ld:
        print()
        print(f"### 4. Loop lateness, N = {ld['n']:,}, poll_interval 2s, every round a full read, two VACUUMs of "
              f"{ld['big_databases']['mib_each']} MiB ({ld['big_databases']['free_percent']}% free)")
        print()
        def waits(rounds):
            w = [x["loop_run_delay_ms"] for x in rounds if "loop_run_delay_ms" in x]
            return f"{rnd(med(w), 1)} / {max(w)}" if w else "-"

        print("| | rounds | loop late p99 ms (worst round; median round) | target | | loop late max ms | target | | "
              "loop thread waiting for a CPU, ms per round (median / max) |")
        print("|---|---:|---:|---:|---|---:|---:|---|---:|")
        p99, mx = ld["lag_p99_ms"], ld["lag_max_ms"]
        print(f"| while the VACUUMs ran ({ld['jobs_s']} s, up to {ld['jobs_running_max']} jobs at once) | "
              f"{len(ld['rounds_during_jobs'])} | {f(p99)}; {f(ld['lag_p99_ms_median_round'])} | ≤ {TARGETS['lag_p99_ms']} | "
              f"{verdict(None if p99 is None else p99 <= TARGETS['lag_p99_ms'])} | {f(mx)} | ≤ {TARGETS['lag_max_ms']} | "
              f"{verdict(None if mx is None else mx <= TARGETS['lag_max_ms'])} | {waits(ld['rounds_during_jobs'])} |")
        print(f"| before and after (no job) | {len(ld['rounds_without_jobs'])} | {f(ld['lag_p99_ms_without_jobs'])} | "
              f"| | {f(ld['lag_max_ms_without_jobs'])} | | | {waits(ld['rounds_without_jobs'])} |")
        for x in ld["first_round"]:
            print(f"| the first round (at start, no job) | 1 | {x['lag_p99_ms']} | | | {x['lag_max_ms']} | | | "
                  f"{x.get('loop_run_delay_ms', '-')} |")
        print()
        print(f"({ld['ticks_per_round']} ticks a round: below 100 the daemon's p99 of a round is its max. The figures "
              "are those of the rounds whose STATUS changed; a round with the same figures as the one before sends none: "
              f"{ld['round_ends_seen']} round ends seen in {ld['polls_elapsed']} polls. The VACUUMs ran over "
              f"{ld['polls_while_jobs_ran']} polls.)")
        print()
        print("VACUUMs: " + "; ".join(x.strip() for x in ld["vacuum_log_lines"][:6]))
        print("after: " + ", ".join(f"{x['pages']} pages, {x['free_pages']} free" for x in ld["big_databases"]["after"]))

    print()
    print(f"### 5. Start (spawn to READY=1) and reload (SIGHUP to READY=1), median of {result['runs']}")
    print()
    print("| N | start s | reload s | target | |")
    print("|---:|---:|---:|---:|---|")
    for k in ns:
        s = per[k].get("start_reload")
        if not s or "error" in s:
            if s:
                print(f"| {int(k):,} | failed: {s['error'][:200]} | | | |")
            continue
        big = int(k) >= 100000
        ok = s["start_s"] < TARGETS["start_s_at_100k"] and s["reload_s"] < TARGETS["reload_s_at_100k"]
        print(f"| {int(k):,} | {s['start_s']} | {s['reload_s']} | {'each < 1 s' if big else '-'} | "
              f"{verdict(ok if big else None)} |")

    if result["wal"]:
        print()
        print("### 6. WAL databases held open by an application (-shm live, frames in the -wal): --once --dry-run, "
              f"median of {result['runs']}")
        print()
        print("| N | daemon µs/db | daemon CPU ms | header_loop µs/db | ratio | target | | poll done: read / WAL read "
              "without SQLite / through SQLite | -wal non-empty after |")
        print("|---:|---:|---:|---:|---:|---:|---|---|---:|")
        for w in result["wal"]:
            if "error" in w:
                print(f"| {w['n']:,} | failed: {w['error'][:200]} | | | | | | | |")
                continue
            pd = w["poll_done"]
            pds = f"{pd['read']} / {pd['wal_without_sqlite']} / {pd['through_sqlite']}" if pd else "(no line)"
            print(f"| {w['n']:,} | {w['daemon_cpu_us_per_db']} | {w['daemon_cpu_ms']} | {w['header_loop_cpu_us_per_db']} "
                  f"| {w['ratio']}x | ≤ {TARGETS['wal_ratio']}x | {verdict(w['ratio'] <= TARGETS['wal_ratio'])} | {pds} | "
                  f"{w['nonempty_wal_after']:,} of {w['n']:,} |")


def plot(result, png):
    """gnuplot PNG from the run's figures: CPU µs per database per poll against N."""
    if not shutil.which("gnuplot"):
        print("gnuplot is not installed (apt-get install gnuplot-nox): no plot", file=sys.stderr)
        return False
    per = result["per_n"]
    ns = sorted(per, key=int)
    series = [
        ("daemon --once", lambda p: p.get("once", {}).get("daemon_cpu_us_per_db")),
        ("daemon running, full read", lambda p: p.get("running", {}).get("cpu_us_per_db_per_round")),
        ("daemon idle round", lambda p: p.get("idle", {}).get("cpu_us_per_db_per_idle_round")),
        ("header\\_loop (open, pread 100, close)", lambda p: p.get("once", {}).get("header_loop_cpu_us_per_db")),
    ]
    plots, data = [], []
    for i, (title, get) in enumerate(series):
        pts = [(int(k), get(per[k])) for k in ns if get(per[k]) is not None]
        if not pts:
            continue
        plots.append(f"'-' using 1:2 with linespoints lw 2 pt {i + 5} title '{title}'")
        data.append("\n".join(f"{x} {y}" for x, y in pts) + "\ne")
    if not plots:
        print("nothing to plot (no phase 1, 2 or 3 figures)", file=sys.stderr)
        return False
    terms = subprocess.run(["gnuplot", "-e", "set terminal"], capture_output=True, text=True)
    term = "pngcairo size 900,600" if "pngcairo" in terms.stdout + terms.stderr else "png size 900,600"
    script = f"""set terminal {term}
set output '{png}'
set title "sqlite-maintd: CPU per database per poll ({result['commit']}, {result['date']})"
set logscale x
set logscale y
set xlabel 'databases watched'
set ylabel 'CPU microseconds per database per poll (log)'
set grid
set key outside below horizontal maxcols 2
set xrange [{int(ns[0]) / 1.6}:{int(ns[-1]) * 1.6}]
set xtics ({', '.join(f'"{int(k):,}" {int(k)}' for k in ns)})
plot {', '.join(plots)}
{chr(10).join(data)}
"""
    r = subprocess.run(["gnuplot"], input=script, capture_output=True, text=True)
    if r.returncode != 0:
        print(f"gnuplot failed: {r.stderr}", file=sys.stderr)
        return False
    print(f"plot: {png}")
    return True


# --------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--counts", help="comma-separated N (default 10000,50000,100000; --quick: 1000,10000)")
    ap.add_argument("--quick", action="store_true", help="N = 1000, 10000, one run each, 1s interval: under a minute")
    ap.add_argument("--build", default=DEFAULT_BUILD, help=f"bench/build.sh's directory (default {DEFAULT_BUILD})")
    ap.add_argument("--bin", help="sqlite-maintd (default BUILD/src/sqlite-maintd)")
    ap.add_argument("--interval", help="poll_interval of the running phases 2 and 3 (default 30s; --quick 1s)")
    ap.add_argument("--load-count", type=int, help="N of the lateness phase (default 50000; --quick 10000)")
    ap.add_argument("--wal-counts", help="N of the WAL phase (default 1000,10000; --quick 1000)")
    ap.add_argument("--big-mib", type=int, help="size of each fragmented database of phase 4 (default 500; quick 40)")
    ap.add_argument("--runs", type=int, help="runs of a repeated case, median reported (default 3; --quick 1)")
    ap.add_argument("--phases", default="1,2,3,4,5,6",
                    help="which phases (default all; 2 needs 1's reference, 3 needs 2's full round: added)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json-out")
    ap.add_argument("--plot", help="PNG (default bench/results/poll-scale.png unless --quick)")
    ap.add_argument("--replot", metavar="JSON", help="only draw --plot from the JSON of an earlier run")
    a = ap.parse_args()

    if a.replot:
        with open(a.replot) as fh:
            plot(json.load(fh), a.plot or os.path.join(HERE, "results", "poll-scale.png"))
        return 0

    a.counts = [int(x) for x in a.counts.split(",")] if a.counts else \
        ([1000, 10000] if a.quick else [10000, 50000, 100000])
    a.counts.sort()
    a.interval = a.interval or ("1s" if a.quick else "30s")
    a.interval_s = parse_duration(a.interval)
    a.runs = a.runs or (1 if a.quick else 3)
    a.phases = {int(x) for x in a.phases.split(",")}
    if 3 in a.phases:
        a.phases.add(2)
    if 2 in a.phases:
        a.phases.add(1)
    a.idle_rounds = 2 if a.quick else 3
    a.load_count = a.load_count or (10000 if a.quick else 50000)
    a.wal_counts = [int(x) for x in a.wal_counts.split(",")] if a.wal_counts else \
        ([1000] if a.quick else [1000, 10000])
    a.big_mib = a.big_mib or (40 if a.quick else 500)
    a.load_timeout = 120 if a.quick else 900
    a.bin = a.bin or os.path.join(a.build, "src", "sqlite-maintd")
    a.header_loop = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(a.bin))), "bench", "header_loop")
    png = a.plot or (None if a.quick else os.path.join(HERE, "results", "poll-scale.png"))
    for p in (a.bin, a.header_loop):
        if not os.access(p, os.X_OK):
            sys.exit(f"{p} is not an executable: run bench/build.sh {a.build}")
    if not shutil.which("sqlite3"):
        sys.exit("the sqlite3 CLI is needed (apt-get install sqlite3)")
    if png and not shutil.which("gnuplot"):
        print("gnuplot is not installed (apt-get install gnuplot-nox): the plot will be skipped", file=sys.stderr)

    # what the interval stands for
    lines = [f"Wake-ups: a round reads in ticks of at least {POLL_BATCH} reads, at least {POLL_TICK_MIN_MS} ms apart, "
             f"over {POLL_SPREAD_PERCENT}% of the interval: ticks = min(n/{POLL_BATCH}, "
             f"0.{POLL_SPREAD_PERCENT // 10}*interval/{POLL_TICK_MIN_MS} ms). Once 0.8*interval/100 ms >= n/{POLL_BATCH} the "
             f"number of wake-ups is n/{POLL_BATCH} whatever the interval, so a shorter interval costs a round what the default "
             f"5m does. At {a.interval} that holds up to n = {int(a.interval_s * 8) * POLL_BATCH:,}:"]
    for n in a.counts:
        t_here, t_5m = round_ticks(n, a.interval_s)[0], round_ticks(n, 300)[0]
        lines.append(f"  n = {n:,}: {t_here} ticks of {round_ticks(n, a.interval_s)[1]} reads at {a.interval}, "
                     f"{t_5m} of {round_ticks(n, 300)[1]} at 5m: " +
                     ("the same round." if t_here == t_5m else
                      f"{t_5m - t_here} fewer wake-ups here than at 5m, each with more reads; the figure leaves out "
                      f"the fixed cost of those wake-ups (run --interval 5m to include it)."))
    interval_note = "\n".join(lines)
    print(interval_note, flush=True)

    a.root = tempfile.mkdtemp(prefix="maintd-pollscale-", dir="/var/tmp")
    src_root = os.path.dirname(HERE)
    t_run = time.monotonic()
    result = {
        "commit": binary_revision(a.bin, git_revision(src_root)), "binary": a.bin, "header_loop": a.header_loop,
        "binary_built": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(os.stat(a.bin).st_mtime)),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "quick": a.quick, "counts": a.counts,
        "interval": a.interval, "runs": a.runs, "seed": a.seed,
        "phases": sorted(a.phases), "nproc": os.cpu_count(),
        "loadavg_at_start": loadavg(), "targets": {k: v for k, v in TARGETS.items() if k != "rss_mib"},
        "rss_targets_mib": TARGETS["rss_mib"], "interval_note": interval_note, "per_n": {}, "wal": [],
        "cpu_note": "--once and header_loop: wait4/getrusage user+sys; a running daemon: its process CPU clock "
                    "(all threads, ns) plus cutime+cstime of reaped children; /proc/PID/stat utime+stime also given",
    }
    try:
        template, _ = make_template(a.root, "rollback", a.seed)
        dest = os.path.join(a.root, "dbs")
        glob = os.path.join(dest, "*.db")
        for n in (a.counts if a.phases & {1, 2, 3, 4, 5} else []):
            t = time.monotonic()
            made = grow_set(template, dest, n)
            print(f"N = {n:,}: {made:,} databases copied in {time.monotonic() - t:.1f} s", flush=True)
            rn = result["per_n"][str(n)] = {"n": n, "fixture_s": rnd(time.monotonic() - t, 1)}
            conf = os.path.join(a.root, f"once-{n}.yaml")
            write_conf(conf, glob, os.path.join(a.root, f"state-once-{n}"), "5m")
            if 1 in a.phases:
                guarded(rn, "once", phase_once, a, n, dest, conf, rn)
            if 5 in a.phases:
                guarded(rn, "start_reload", phase_start_reload, a, n, glob, rn)
            if 2 in a.phases and "error" not in rn.get("once", {}):
                guarded(rn, "running", phase_running, a, n, glob, rn)
            if 3 in a.phases and "error" not in rn.get("running", {"error": 1}):
                guarded(rn, "idle", phase_idle, a, n, glob, dest, template, rn)
            if 4 in a.phases and n == a.load_count:
                guarded(result, "load", phase_load, a, n, glob, result)
        if 4 in a.phases and a.load_count not in a.counts:
            print(f"(no lateness phase: N = {a.load_count} is not among --counts)")
        shutil.rmtree(dest, ignore_errors=True)
        if 6 in a.phases:
            for n in a.wal_counts:
                w = {}
                guarded(w, "wal", phase_wal, a, n, result)
                if "wal" in w:
                    result["wal"].append(dict(w["wal"], n=n))
    finally:
        shutil.rmtree(a.root, ignore_errors=True)

    result["loadavg_at_end"] = loadavg()
    result["wall_s"] = round(time.monotonic() - t_run, 1)
    print_tables(result)
    print()
    print(f"binary: {result['commit']}; nproc {result['nproc']}; wall time {result['wall_s']} s")
    finish(result, a.json_out)
    if png:
        plot(result, png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
