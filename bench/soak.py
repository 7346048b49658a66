#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Soak test for sqlite-maintd.

Runs the daemon for --minutes over --databases real SQLite files (mixed
rollback/WAL, some auto_vacuum=INCREMENTAL maintained with `mode:
incremental`) while worker processes keep fragmenting them (DELETE/INSERT in
random databases, a hot subset more often) and locking them (BEGIN EXCLUSIVE
/ BEGIN IMMEDIATE held 0.1-3 s). The journal goes to a real journald (one is
started if none listens, and stopped by its pid at the end). Reported:
the jobs by kind, retries, give-ups, failures (there must be no CORRUPT), the
daemon's RSS, fd count and CPU time sampled every 30 s, what the application
processes saw, the daemon's exit status after SIGTERM, and integrity_check
of every database at the end.

    /usr/bin/python3 bench/soak.py --minutes 32 --json-out /tmp/soak.json

Needs root (journald, journalctl). Every loop is bounded by a deadline.
Exit status 0 when every check passed, 1 otherwise.
"""

import argparse
import collections
import datetime
import json
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import binary_revision, git_revision  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_ROOT = os.path.dirname(HERE)
DEFAULT_BIN = "/tmp/bench-build/src/sqlite-maintd"
PYTHON = "/usr/bin/python3"

JOURNALD_BIN = "/lib/systemd/systemd-journald"
JOURNAL_DIR = "/run/systemd/journal"
JOURNAL_SOCKET = JOURNAL_DIR + "/socket"

# Journal entries that are failures of some kind; CORRUPT must never appear.
FAILURE_KINDS = ("JOB_FAILED", "CORRUPT", "NO_SPACE", "CANNOT_MAINTAIN")


def load_msgids():
    with open(os.path.join(SOURCE_ROOT, "src", "msgid.h")) as f:
        ids = dict(re.findall(r'#define\s+MSGID_(\w+)\s+"([0-9a-f]{32})"', f.read()))
    if not ids:
        sys.exit("no MESSAGE_IDs found in src/msgid.h")
    return ids


def now_utc():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


# --------------------------------------------------------------------------
# The workload: separate processes, as applications are

def pick_db(rng, paths, hot):
    """Hot databases get most of the activity, so the daemon meets locks."""
    return rng.choice(hot) if hot and rng.random() < 0.7 else rng.choice(paths)


def worker_main(args):
    """--role fragmenter|locker: runs until the end time, writes its
    counts as JSON to --result."""
    spec = json.load(open(args.spec))
    rng = random.Random(spec["seed"])
    end = spec["end_wall"]
    paths, hot, rows = spec["paths"], spec["hot"], spec["rows"]
    res = {"role": args.role, "statements": 0, "transactions": 0, "errors": 0,
           "error_messages": {}, "begin_wait_ms": []}

    def error(e):
        res["errors"] += 1
        k = f"{type(e).__name__}: {e}"
        res["error_messages"][k] = res["error_messages"].get(k, 0) + 1

    def begin(con, how):
        t = time.monotonic()
        con.execute(how)
        res["begin_wait_ms"].append(round((time.monotonic() - t) * 1000, 1))
        res["statements"] += 1

    while time.time() < end:
        path = pick_db(rng, paths, hot)
        con = None
        try:
            # busy_timeout 10 s, as an application would set it.
            con = sqlite3.connect(path, timeout=10, isolation_level=None)
            if args.role == "locker":
                begin(con, rng.choice(["BEGIN EXCLUSIVE", "BEGIN IMMEDIATE"]))
                con.execute("INSERT INTO app(note) VALUES(?)", (f"locker {os.getpid()}",))
                res["statements"] += 1
                time.sleep(max(0.0, min(rng.uniform(0.1, 3.0), end - time.time())))
                con.execute("COMMIT")
                res["statements"] += 1
                res["transactions"] += 1
                pause = rng.uniform(0.1, 0.8)
            else:
                target = rows[path]
                x = rng.random()
                if x < 0.45:
                    # Delete a random share of the rows: pages go to the freelist.
                    begin(con, "BEGIN IMMEDIATE")
                    n = con.execute("SELECT count(*) FROM t").fetchone()[0]
                    k = int(n * rng.uniform(0.1, 0.5))
                    con.execute("DELETE FROM t WHERE id IN (SELECT id FROM t ORDER BY random() LIMIT ?)", (k,))
                    con.execute("COMMIT")
                    res["statements"] += 3
                elif x < 0.9:
                    # Grow back towards the database's size (bounded: a few MB).
                    begin(con, "BEGIN IMMEDIATE")
                    n = con.execute("SELECT count(*) FROM t").fetchone()[0]
                    k = max(0, int(target * rng.uniform(0.9, 1.15)) - n)
                    blob = spec["blob"][path]
                    con.executemany("INSERT INTO t(k, v) VALUES(?, randomblob(?))",
                                    [(rng.randrange(1 << 30), blob) for _ in range(k)])
                    con.execute("INSERT INTO app(note) VALUES('grow')")
                    con.execute("COMMIT")
                    res["statements"] += 4
                else:
                    lo = rng.randrange(1 << 30)
                    con.execute("SELECT count(*), sum(length(v)) FROM t").fetchone()
                    con.execute("SELECT id, k FROM t WHERE k >= ? ORDER BY k LIMIT 50", (lo,)).fetchall()
                    res["statements"] += 2
                res["transactions"] += 1
                pause = rng.uniform(0.02, 0.25)
        except sqlite3.Error as e:
            error(e)
            pause = 0.2
            if con is not None:
                try:
                    con.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
        finally:
            if con is not None:
                con.close()
        time.sleep(max(0.0, min(pause, end - time.time())))
    with open(args.result, "w") as f:
        json.dump(res, f)
    return 0


# --------------------------------------------------------------------------
# Databases

def make_databases(root, n, rng):
    """n databases in root/full (rollback and WAL) and root/incr
    (auto_vacuum=INCREMENTAL); returns the lists the workers need."""
    os.makedirs(os.path.join(root, "full"))
    os.makedirs(os.path.join(root, "incr"))
    paths, rows, blobs, kinds = [], {}, {}, collections.Counter()
    for i in range(n):
        wal = i % 3 == 0
        incr = i % 7 == 3
        sub = "incr" if incr else "full"
        path = os.path.join(root, sub, f"db{i:04d}.db")
        blob = rng.choice([400, 900, 1800, 3000])
        size = rng.uniform(0.2, 2.5) * 1024 * 1024
        nrows = max(50, int(size / (blob + 30)))
        con = sqlite3.connect(path, isolation_level=None)
        con.execute("PRAGMA synchronous=OFF")
        if incr:
            con.execute("PRAGMA auto_vacuum=INCREMENTAL")
        con.execute(f"PRAGMA journal_mode={'WAL' if wal else 'DELETE'}")
        con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, k INTEGER, v BLOB)")
        con.execute("CREATE INDEX t_k ON t(k)")
        con.execute("CREATE TABLE app(id INTEGER PRIMARY KEY, note TEXT)")
        con.execute("BEGIN")
        con.executemany("INSERT INTO t(k, v) VALUES(?, randomblob(?))",
                        [(rng.randrange(1 << 30), blob) for _ in range(nrows)])
        con.execute("COMMIT")
        # Some start fragmented already.
        if rng.random() < 0.4:
            con.execute("DELETE FROM t WHERE id % ? = 0", (rng.choice([2, 3, 4, 5]),))
        con.close()
        paths.append(path)
        rows[path] = nrows
        blobs[path] = blob
        kinds["wal" if wal else "rollback"] += 1
        if incr:
            kinds["incremental"] += 1
    return paths, rows, blobs, kinds


def integrity_check_all(paths):
    bad = {}
    for p in paths:
        try:
            con = sqlite3.connect(f"file:{p}?mode=ro", uri=True, timeout=30)
            try:
                res = [r[0] for r in con.execute("PRAGMA integrity_check")]
            finally:
                con.close()
        except sqlite3.Error as e:
            res = [f"{type(e).__name__}: {e}"]
        if res != ["ok"]:
            bad[p] = res[:5]
    return bad


def fragmentation_now(paths):
    out = []
    for p in paths:
        try:
            con = sqlite3.connect(f"file:{p}?mode=ro", uri=True, timeout=30)
            try:
                fl = con.execute("PRAGMA freelist_count").fetchone()[0]
                pc = con.execute("PRAGMA page_count").fetchone()[0]
            finally:
                con.close()
            out.append(100.0 * fl / pc if pc else 0.0)
        except sqlite3.Error:
            pass
    return out


# --------------------------------------------------------------------------
# journald

def journal_accepts():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        s.sendto(b"SYSLOG_IDENTIFIER=sqlite-maintd-soak\nPRIORITY=7\nMESSAGE=probe\n", JOURNAL_SOCKET)
        return True
    except OSError:
        return False
    finally:
        s.close()


class JournaldKeeper:
    """Uses the journald that listens; starts one when none does (another
    test session may stop the one it started) and stops, by pid, only the
    ones started here."""

    def __init__(self, logdir):
        self.logdir = logdir
        self.started = []
        self.restarts = 0

    def ensure(self):
        if journal_accepts():
            return True
        if not os.access(JOURNALD_BIN, os.X_OK):
            return False
        if os.path.isdir(JOURNAL_DIR):
            shutil.rmtree(JOURNAL_DIR, ignore_errors=True)
        log = open(os.path.join(self.logdir, f"journald-{len(self.started)}.log"), "wb")
        p = subprocess.Popen([JOURNALD_BIN], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                             start_new_session=True)
        log.close()
        self.started.append(p)
        self.restarts += 1
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if journal_accepts():
                return True
            if p.poll() is not None:
                break
            time.sleep(0.05)
        return journal_accepts()

    def stop(self):
        for p in self.started:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(timeout=15)


def journal_field(v):
    if isinstance(v, list):
        if v and all(isinstance(x, int) for x in v):
            return bytes(v).decode("utf-8", "replace")
        return [journal_field(x) for x in v]
    return v


class JournalReader:
    """Reads the daemon's entries (journalctl -o json _PID=pid) since the
    start, now and then during the run and once at the end; entries are
    kept by cursor, so what a rotated journal or a restarted journald
    loses later is already counted. (Reading only after the last cursor
    seen missed about half the entries in a trial run on this machine,
    while the same reads done afterwards found them all; a full read each
    time is slower but sure.)"""

    def __init__(self, pid, since_s, msgids):
        self.pid = pid
        self.since_s = since_s
        self.names = {v: k for k, v in msgids.items()}
        self.seen = set()
        self.counts = collections.Counter()      # MESSAGE_ID name
        self.by_op = collections.Counter()       # (name, OPERATION)
        self.priority = collections.Counter()
        self.durations = collections.defaultdict(list)  # op -> DURATION_MS of successes
        self.reclaimed = 0
        self.notable = []                        # failures and give-ups, for the report
        self.first_ts = self.last_ts = None
        self.stopping_seen = False
        self.errors = []

    def poll(self):
        try:
            subprocess.run(["journalctl", "--sync"], capture_output=True, timeout=10)
        except subprocess.TimeoutExpired:
            pass
        cmd = ["journalctl", "-o", "json", "--no-pager", f"--since=@{int(self.since_s) - 1}",
               "--output-fields=MESSAGE_ID,MESSAGE,OPERATION,PRIORITY,REASON,DURATION_MS,BYTES_RECLAIMED",
               f"_PID={self.pid}"]
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        except subprocess.TimeoutExpired:
            self.errors.append("journalctl timed out")
            return
        for line in p.stdout.splitlines():
            if not line.startswith("{"):
                continue
            e = {k: journal_field(v) for k, v in json.loads(line).items()}
            c = e.get("__CURSOR")
            if c in self.seen:
                continue
            self.seen.add(c)
            self.take(e)

    def take(self, e):
        name = self.names.get(e.get("MESSAGE_ID"), "-")
        op = e.get("OPERATION", "-")
        ts = int(e.get("__REALTIME_TIMESTAMP", "0")) / 1e6
        self.first_ts = ts if self.first_ts is None else min(self.first_ts, ts)
        self.last_ts = ts if self.last_ts is None else max(self.last_ts, ts)
        self.counts[name] += 1
        self.by_op[(name, op)] += 1
        self.priority[e.get("PRIORITY", "?")] += 1
        if name == "STOPPING":
            self.stopping_seen = True
        if name in ("VACUUM_DONE", "ANALYZE_DONE") and "DURATION_MS" in e:
            self.durations[op].append(int(e["DURATION_MS"]))
            self.reclaimed += int(e.get("BYTES_RECLAIMED", "0") or 0)
        if name in FAILURE_KINDS or name == "GAVE_UP" or e.get("PRIORITY") in ("0", "1", "2", "3"):
            if len(self.notable) < 200:
                self.notable.append({
                    "time": datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%H:%M:%S"),
                    "kind": name, "priority": e.get("PRIORITY"), "operation": op,
                    "reason": e.get("REASON"), "after_stop": self.stopping_seen,
                    "message": e.get("MESSAGE")})


def journald_suppressions(since_s):
    """journald's own 'Suppressed N messages' lines since the start: a rate
    limit would make the counts above incomplete."""
    try:
        p = subprocess.run(["journalctl", "-o", "json", "--no-pager", f"--since=@{int(since_s) - 1}",
                            "_COMM=systemd-journal"], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return ["journalctl timed out"]
    out = []
    for line in p.stdout.splitlines():
        if line.startswith("{"):
            m = journal_field(json.loads(line).get("MESSAGE", ""))
            if "uppressed" in str(m):
                out.append(m)
    return out


# --------------------------------------------------------------------------
# The daemon's process

def proc_sample(pid, t0):
    """RSS, peak RSS, threads, open fds and CPU seconds of pid."""
    s = {"t_s": round(time.monotonic() - t0, 1)}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                s[k.lower() + "_kib"] = int(v.split()[0])
            elif k == "Threads":
                s["threads"] = int(v)
    s["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tck = os.sysconf("SC_CLK_TCK")
    s["cpu_s"] = round((int(fields[11]) + int(fields[12])) / tck, 2)  # utime + stime
    return s


def write_config(path, root, state_dir, poll_interval):
    text = f"""# written by bench/soak.py
poll_interval: {poll_interval}
max_concurrent_jobs: 2
state_dir: {state_dir}
defaults:
  vacuum:
    threshold: 15%
    urgent_threshold: 25%
    window: always
    min_interval: 30s
    min_reclaim: 0
    integrity: quick
  analyze:
    interval: 2m
  retry:
    busy_timeout: 50ms
    initial_backoff: 500ms
    max_backoff: 10s
    max_attempts: 6
databases:
  - path: {root}/incr/*.db
    vacuum:
      mode: incremental
  - path: {root}/full/*.db
"""
    with open(path, "w") as f:
        f.write(text)


def pct(values, q):
    if not values:
        return 0
    v = sorted(values)
    return v[min(len(v) - 1, int(q / 100.0 * len(v)))]


# --------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--databases", type=int, default=300)
    ap.add_argument("--fragmenters", type=int, default=3, help="worker processes deleting/inserting rows")
    ap.add_argument("--lockers", type=int, default=2, help="worker processes holding BEGIN EXCLUSIVE/IMMEDIATE")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--poll-interval", default="5s")
    ap.add_argument("--sample-every", type=float, default=30.0, help="seconds between RSS/fd samples")
    ap.add_argument("--journal-every", type=float, default=300.0,
                    help="seconds between reads of the daemon's journal entries during the run")
    ap.add_argument("--bin", default=DEFAULT_BIN)
    ap.add_argument("--workdir", help="where the databases go (default: a new directory in /var/tmp)")
    ap.add_argument("--keep", action="store_true", help="keep the databases afterwards")
    ap.add_argument("--json-out")
    # worker processes
    ap.add_argument("--role", choices=["fragmenter", "locker"], help=argparse.SUPPRESS)
    ap.add_argument("--spec", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role:
        return worker_main(args)

    if os.geteuid() != 0:
        sys.exit("soak.py needs root: it uses (or starts) journald and reads the journal")
    if not os.access(args.bin, os.X_OK):
        sys.exit(f"{args.bin} is not an executable; build it (see docs/PERFORMANCE.md)")
    msgids = load_msgids()
    rng = random.Random(args.seed)
    root = args.workdir or tempfile.mkdtemp(prefix="maintd-soak-", dir="/var/tmp")
    os.makedirs(root, exist_ok=True)
    dbroot = os.path.join(root, "db")
    state_dir = os.path.join(root, "state")
    os.makedirs(state_dir, exist_ok=True)
    problems = []

    print(f"soak: {now_utc()}: creating {args.databases} databases in {dbroot}", flush=True)
    t_setup = time.monotonic()
    paths, rows, blobs, kinds = make_databases(dbroot, args.databases, rng)
    total_bytes = sum(os.path.getsize(p) for p in paths)
    setup_s = time.monotonic() - t_setup
    frag0 = fragmentation_now(paths)
    hot = rng.sample(paths, max(1, len(paths) * 15 // 100))
    conf = os.path.join(root, "maintd.yaml")
    write_config(conf, dbroot, state_dir, args.poll_interval)
    chk = subprocess.run([args.bin, "--check-config", "-c", conf], capture_output=True, text=True, timeout=30)
    if chk.returncode != 0:
        sys.exit(f"config refused: {chk.stdout}{chk.stderr}")

    keeper = JournaldKeeper(root)
    if not keeper.ensure():
        sys.exit("no journald listening and none could be started")
    journald_started_here = bool(keeper.started)

    duration_s = args.minutes * 60
    start_wall = time.time()
    start_text = now_utc()
    t0 = time.monotonic()
    end_mono = t0 + duration_s
    out = open(os.path.join(root, "daemon.stdout"), "wb")
    err = open(os.path.join(root, "daemon.stderr"), "wb")
    daemon = subprocess.Popen([args.bin, "-c", conf, "--log-target=journal"], stdin=subprocess.DEVNULL,
                              stdout=out, stderr=err)
    reader = JournalReader(daemon.pid, start_wall, msgids)
    print(f"soak: {start_text}: daemon pid {daemon.pid}, running {args.minutes:g} min", flush=True)

    # The workload ends a little before the daemon is stopped.
    spec_base = {"end_wall": start_wall + duration_s - 2, "paths": paths, "hot": hot, "rows": rows,
                 "blob": blobs}
    workers = []
    for i, role in enumerate(["fragmenter"] * args.fragmenters + ["locker"] * args.lockers):
        spec = os.path.join(root, f"worker{i}.json")
        with open(spec, "w") as f:
            json.dump({**spec_base, "seed": args.seed * 1000 + i}, f)
        result = os.path.join(root, f"worker{i}.result.json")
        p = subprocess.Popen([PYTHON, os.path.abspath(__file__), "--role", role, "--spec", spec,
                              "--result", result], stdin=subprocess.DEVNULL)
        workers.append((p, role, result))

    samples = []
    next_sample = t0 + 5 + 2  # after the first poll round: 5 s interval, reads spread over 4 s
    next_journal_check = t0 + 5
    next_journal_read = t0 + args.journal_every
    died = None
    while time.monotonic() < end_mono:
        if daemon.poll() is not None:
            died = daemon.returncode
            problems.append(f"the daemon exited during the run with status {died}")
            break
        now = time.monotonic()
        if now >= next_journal_check:
            if not keeper.ensure():
                problems.append(f"journald not listening at t={now - t0:.0f}s and could not be started")
            next_journal_check = now + 2
        if now >= next_sample:
            try:
                s = proc_sample(daemon.pid, t0)
                samples.append(s)
                print(f"soak: t={s['t_s']:7.1f}s rss={s['vmrss_kib']} KiB fds={s['fds']} "
                      f"threads={s['threads']} cpu={s['cpu_s']} s", flush=True)
            except OSError as e:
                problems.append(f"cannot sample the daemon: {e}")
            if now >= next_journal_read:
                reader.poll()
                next_journal_read = now + args.journal_every
            # then on the grid t0 + k * sample_every
            next_sample = t0 + args.sample_every * (int((time.monotonic() - t0) / args.sample_every) + 1)
        time.sleep(max(0.0, min(1.0, end_mono - time.monotonic())))

    # Workload first: each worker ends by itself at end_wall.
    worker_results = []
    for p, role, result in workers:
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=15)
            problems.append(f"a {role} did not end on time and was killed")
        try:
            with open(result) as f:
                worker_results.append(json.load(f))
        except (OSError, ValueError):
            problems.append(f"a {role} left no result (exit {p.returncode})")

    # The end sample, then SIGTERM.
    if died is None:
        try:
            samples.append(proc_sample(daemon.pid, t0))
        except OSError as e:
            problems.append(f"cannot sample the daemon: {e}")
        keeper.ensure()
        term_at = time.monotonic()
        daemon.send_signal(signal.SIGTERM)
        try:
            rc = daemon.wait(timeout=60)
        except subprocess.TimeoutExpired:
            daemon.kill()
            rc = daemon.wait(timeout=15)
            problems.append("the daemon did not exit within 60 s of SIGTERM; killed")
        stop_s = time.monotonic() - term_at
    else:
        rc, stop_s = died, None
    if rc != 0:
        problems.append(f"the daemon exited with status {rc}")
    end_text = now_utc()
    elapsed_s = time.monotonic() - t0
    out.close()
    err.close()
    # The final read: every entry up to STOPPING and "stopped after".
    deadline = time.monotonic() + 20
    while True:
        time.sleep(1)
        reader.poll()
        if reader.stopping_seen or time.monotonic() > deadline:
            break
    suppressed = journald_suppressions(start_wall)
    stderr_text = open(os.path.join(root, "daemon.stderr"), errors="replace").read()

    bad = integrity_check_all(paths)
    frag1 = fragmentation_now(paths)
    if bad:
        problems.append(f"{len(bad)} database(s) failed integrity_check")
    if reader.counts["CORRUPT"]:
        problems.append(f"{reader.counts['CORRUPT']} CORRUPT entries")
    if not reader.stopping_seen:
        problems.append("no STOPPING entry read back from the journal (journal incomplete?)")
    if suppressed:
        problems.append("journald suppressed messages during the run: counts may be low")

    # --- figures ---
    st = samples[0] if samples else {}
    en = samples[-1] if samples else {}
    mx = {k: max(s[k] for s in samples) for k in ("vmrss_kib", "fds", "threads")} if samples else {}
    wstat = {"statements": 0, "transactions": 0, "errors": 0, "error_messages": collections.Counter()}
    waits = {"fragmenter": [], "locker": []}
    for r in worker_results:
        for k in ("statements", "transactions", "errors"):
            wstat[k] += r[k]
        wstat["error_messages"].update(r["error_messages"])
        waits[r["role"]] += r["begin_wait_ms"]
    if wstat["errors"]:
        problems.append(f"the application processes saw {wstat['errors']} errors")
    fail_after_stop = sum(1 for n in reader.notable if n["kind"] == "JOB_FAILED" and n["after_stop"])
    c = reader.counts
    cpu_s = en.get("cpu_s", 0)
    result = {
        "commit": binary_revision(args.bin, git_revision(SOURCE_ROOT)),
        "binary": args.bin,
        "start": start_text, "end": end_text,
        "duration_s": round(elapsed_s, 1),
        "databases": len(paths), "database_kinds": dict(kinds),
        "database_bytes_at_start": total_bytes,
        "setup_s": round(setup_s, 1),
        "workload": {"fragmenters": args.fragmenters, "lockers": args.lockers, "hot_databases": len(hot),
                     "seed": args.seed},
        "jobs": {
            "VACUUM_DONE vacuum": reader.by_op[("VACUUM_DONE", "vacuum")],
            "VACUUM_DONE incremental_vacuum": reader.by_op[("VACUUM_DONE", "incremental_vacuum")],
            "ANALYZE_DONE": c["ANALYZE_DONE"],
        },
        "scheduled": c["SCHEDULED"],
        "retries": c["RETRY"],
        "gave_up": {"job": c["GAVE_UP"] - reader.by_op[("GAVE_UP", "poll")],
                    "statistics read (poll)": reader.by_op[("GAVE_UP", "poll")]},
        "failures": {k: c[k] for k in FAILURE_KINDS},
        "job_failed_at_shutdown": fail_after_stop,
        "checkpoint_busy": c["CHECKPOINT_BUSY"],
        "bytes_reclaimed": reader.reclaimed,
        "job_duration_ms": {op: {"n": len(v), "median": pct(v, 50), "p99": pct(v, 99), "max": max(v)}
                            for op, v in reader.durations.items() if v},
        "journal_entries": sum(c.values()),
        "journal_by_kind": dict(c),
        "journal_by_priority": dict(reader.priority),
        "journald_started_here": journald_started_here,
        "journald_restarts_during_run": keeper.restarts - (1 if journald_started_here else 0),
        "journald_suppressed": suppressed,
        "rss_kib": {"start": st.get("vmrss_kib"), "max": mx.get("vmrss_kib"), "end": en.get("vmrss_kib")},
        "peak_rss_kib_vmhwm": en.get("vmhwm_kib"),
        "fds": {"start": st.get("fds"), "max": mx.get("fds"), "end": en.get("fds")},
        "threads": {"start": st.get("threads"), "max": mx.get("threads"), "end": en.get("threads")},
        "daemon_cpu_s": cpu_s,
        "daemon_cpu_percent": round(100.0 * cpu_s / elapsed_s, 2) if elapsed_s else None,
        "samples": samples,
        "app": {"statements": wstat["statements"], "transactions": wstat["transactions"],
                "errors": wstat["errors"], "error_messages": dict(wstat["error_messages"]),
                "begin_wait_ms": {role: {"n": len(v), "median": pct(v, 50), "p99": pct(v, 99),
                                         "max": max(v) if v else 0} for role, v in waits.items()}},
        "fragmentation_percent": {
            "start": {"median": round(pct(frag0, 50), 1), "max": round(max(frag0), 1) if frag0 else 0},
            "end": {"median": round(pct(frag1, 50), 1), "max": round(max(frag1), 1) if frag1 else 0,
                    "over_25": sum(1 for f in frag1 if f >= 25)}},
        "integrity_check": {"checked": len(paths), "failed": len(bad), "failures": bad},
        "daemon_exit_status": rc,
        "sigterm_to_exit_s": round(stop_s, 2) if stop_s is not None else None,
        "daemon_stderr": stderr_text[-2000:],
        "notable_entries": reader.notable[:50],
        "journal_read_errors": reader.errors,
        "problems": problems,
        "machine": {"nproc": os.cpu_count(), "loadavg_at_end": open("/proc/loadavg").read().split()[:3]},
    }

    rows_out = [
        ("run", f"{start_text} -> {end_text} ({elapsed_s / 60:.1f} min)"),
        ("binary", f"{args.bin} ({result['commit']})"),
        ("databases", f"{len(paths)}: {kinds['rollback']} rollback, {kinds['wal']} WAL, "
                      f"{kinds['incremental']} auto_vacuum=INCREMENTAL (mode: incremental); "
                      f"{total_bytes / 2**20:.0f} MiB at start"),
        ("workload", f"{args.fragmenters} fragmenters, {args.lockers} lockers, {len(hot)} hot databases, "
                     f"seed {args.seed}"),
        ("VACUUM_DONE (vacuum)", result["jobs"]["VACUUM_DONE vacuum"]),
        ("VACUUM_DONE (incremental)", result["jobs"]["VACUUM_DONE incremental_vacuum"]),
        ("ANALYZE_DONE", c["ANALYZE_DONE"]),
        ("bytes reclaimed", f"{reader.reclaimed / 2**20:.1f} MiB"),
        ("RETRY", c["RETRY"]),
        ("GAVE_UP (job / poll)", f"{result['gave_up']['job']} / {result['gave_up']['statistics read (poll)']}"),
        ("JOB_FAILED", f"{c['JOB_FAILED']} ({fail_after_stop} interrupted at shutdown)"),
        ("CORRUPT", c["CORRUPT"]),
        ("NO_SPACE", c["NO_SPACE"]),
        ("CANNOT_MAINTAIN", c["CANNOT_MAINTAIN"]),
        ("CHECKPOINT_BUSY", c["CHECKPOINT_BUSY"]),
        ("journal entries (by priority)", f"{sum(c.values())} "
         + str(dict(sorted(reader.priority.items())))),
        ("journald", ("started here" if journald_started_here else "already running")
         + f", {result['journald_restarts_during_run']} restart(s) during the run, "
         + f"{len(suppressed)} rate-limit suppression(s)"),
        ("RSS start / max / end", f"{st.get('vmrss_kib')} / {mx.get('vmrss_kib')} / {en.get('vmrss_kib')} KiB"
                                  f" (VmHWM {en.get('vmhwm_kib')} KiB)"),
        ("open fds start / max / end", f"{st.get('fds')} / {mx.get('fds')} / {en.get('fds')}"),
        ("threads start / max / end", f"{st.get('threads')} / {mx.get('threads')} / {en.get('threads')}"),
        ("daemon CPU", f"{cpu_s:.1f} s ({result['daemon_cpu_percent']}% of one core)"),
        ("samples", f"{len(samples)} (every {args.sample_every:g} s)"),
        ("app statements / transactions", f"{wstat['statements']} / {wstat['transactions']}"),
        ("app errors", f"{wstat['errors']} " + (str(dict(wstat['error_messages'])) if wstat['errors'] else "")),
        ("app BEGIN wait p99 / max", "; ".join(
            f"{role} {result['app']['begin_wait_ms'][role]['p99']} / {result['app']['begin_wait_ms'][role]['max']} ms"
            for role in ("fragmenter", "locker"))),
        ("fragmentation median/max", f"start {result['fragmentation_percent']['start']['median']}% / "
         f"{result['fragmentation_percent']['start']['max']}%, end "
         f"{result['fragmentation_percent']['end']['median']}% / {result['fragmentation_percent']['end']['max']}%"),
        ("integrity_check", f"{len(paths) - len(bad)}/{len(paths)} ok"),
        ("SIGTERM -> exit", f"status {rc} after {stop_s:.2f} s" if stop_s is not None else f"died: {rc}"),
        ("daemon stderr", "empty" if not stderr_text.strip() else f"{len(stderr_text)} bytes"),
        ("result", "PASS" if not problems else "FAIL: " + "; ".join(problems)),
    ]
    w = max(len(k) for k, _ in rows_out)
    print("\nsqlite-maintd soak summary")
    for k, v in rows_out:
        print(f"  {k:<{w}}  {v}")
    if reader.notable:
        print("\nnotable journal entries (first 20):")
        for n in reader.notable[:20]:
            print(f"  {n['time']} [{n['priority']}] {n['kind']} {n['operation']} {n['message']}")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(result, f, indent=2)
        print(f"\nJSON: {args.json_out}")

    keeper.stop()
    if args.keep:
        print(f"kept: {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
