# SPDX-License-Identifier: MIT
"""Helpers shared by the reliability tests (test_crash_safety.py,
test_lock_storm.py, test_full_disk.py): databases of one row per page that
can be fragmented again without shrinking, a content checksum taken the way
an application would see the data after a crash (a normal read-write
connection, so a hot journal is rolled back and a WAL recovered), a look at
what files a stopped process has open, and the small Python programs that
play the application in another process."""

import hashlib
import math
import os
import signal
import sqlite3
import subprocess
import time

import helpers
from daemon_fixtures import _con_stats as _stats, _evenly  # the same arithmetic as the daemon tests

MAINTD_BIN = os.environ.get("MAINTD_BIN", helpers.MAINTD_BIN)
PYTHON = helpers.PYTHON

BLOB = 4000  # one row per 4096-byte page: a deleted row frees one page


# --------------------------------------------------------------------------
# The build under test

def sanitized(binary=MAINTD_BIN):
    """True when binary links AddressSanitizer (the CI's second run, 2-3x
    slower): iteration counts may be scaled down there."""
    try:
        p = subprocess.run(["ldd", binary], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "asan" in p.stdout


def scaled(plain, sanitizer_build):
    return sanitizer_build if sanitized() else plain


# --------------------------------------------------------------------------
# Databases

def _con(path, timeout=10.0):
    return sqlite3.connect(str(path), isolation_level=None, timeout=timeout)


def make_page_db(path, mode="delete", rows=1000, frag=35.0, auto_vacuum="none"):
    """A real database of `rows` pages: table t(id, b) with one 4000-byte
    random blob per page, table kv with an index (something for ANALYZE to
    look at), table app for an application's own writes; then rows of t
    deleted evenly until frag percent of the pages are free. Returns the
    fragmentation reached (checked with a fresh connection)."""
    path = str(path)
    con = _con(path)
    try:
        con.execute(f"PRAGMA auto_vacuum={auto_vacuum.upper()}")
        jm = con.execute(f"PRAGMA journal_mode={'WAL' if mode == 'wal' else 'DELETE'}").fetchone()[0]
        assert jm == ("wal" if mode == "wal" else "delete"), jm
        con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB)")
        con.execute("CREATE TABLE kv(k INTEGER, v TEXT)")
        con.execute("CREATE INDEX kv_k ON kv(k)")
        con.execute("CREATE TABLE app(id INTEGER PRIMARY KEY, note TEXT)")
        con.execute("BEGIN")
        con.executemany("INSERT INTO t(id, b) VALUES(?, randomblob(?))", [(i, BLOB) for i in range(1, rows + 1)])
        con.executemany("INSERT INTO kv VALUES(?, ?)", [(i % 37, f"v{i}") for i in range(1500)])
        con.execute("COMMIT")
        # auto_vacuum=INCREMENTAL keeps the free pages until asked
        _punch(con, frag)
        if mode == "wal":
            busy = con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            assert busy == 0
        assert con.execute("PRAGMA auto_vacuum").fetchone()[0] == \
            {"none": 0, "full": 1, "incremental": 2}[auto_vacuum]
    finally:
        con.close()
    got = fragmentation(path)
    assert abs(got - frag) <= 3, f"{path}: made {got:.2f}% fragmentation, wanted {frag}%"
    return got


def _punch(con, target):
    """Delete rows of t, evenly spread, until target percent of the pages are free."""
    for _ in range(10):
        fl, pc = _stats(con)
        if 100.0 * fl / pc >= target - 0.5:
            return
        k = max(1, math.ceil(target / 100.0 * pc - fl))
        ids = [r[0] for r in con.execute("SELECT id FROM t ORDER BY id")]
        con.execute("BEGIN")
        con.executemany("DELETE FROM t WHERE id = ?", [(i,) for i in _evenly(ids, k)])
        con.execute("COMMIT")


def refragment(path, target):
    """Fragment a make_page_db database again to about target percent
    without shrinking it: insert N new rows (they take the free pages, then
    grow the file), then delete N old rows evenly spread. The row count is
    unchanged, the rows are not; the caller takes a new checksum."""
    con = _con(path)
    try:
        fl, pc = _stats(con)
        used = pc - fl
        n = max(1, math.ceil(target / 100.0 * used / (1 - target / 100.0)))
        ids = [r[0] for r in con.execute("SELECT id FROM t ORDER BY id")]
        top = ids[-1] if ids else 0
        con.execute("BEGIN IMMEDIATE")
        con.executemany("INSERT INTO t(id, b) VALUES(?, randomblob(?))",
                        [(top + 1 + i, BLOB) for i in range(n)])
        con.executemany("DELETE FROM t WHERE id = ?", [(i,) for i in _evenly(ids, n)])
        con.execute("COMMIT")
        if con.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        con.close()
    got = fragmentation(path)
    assert got >= target - 3, f"{path}: refragmented to {got:.2f}%, wanted {target}%"
    return got


def fragmentation(path):
    fl, pc = db_stats(path)[:2]
    return 100.0 * fl / pc if pc else 0.0


def db_stats(path):
    """(freelist_count, page_count) from a normal connection."""
    con = _con(path)
    try:
        con.execute("BEGIN")
        r = _stats(con)
        con.execute("COMMIT")
        return r
    finally:
        con.close()


def content_checksum(con):
    """sha256 of what the application can read: the schema (without root
    page numbers) and every row of every table, in rowid order. The
    statistics tables ANALYZE writes (sqlite_stat*) are left out: they are
    the one thing maintenance is meant to change."""
    h = hashlib.sha256()
    schema = con.execute("SELECT type, name, tbl_name, sql FROM sqlite_master "
                         "WHERE name NOT LIKE 'sqlite_stat%' ORDER BY type, name").fetchall()
    h.update(repr(schema).encode())
    for name, sql in con.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table' "
                                 "AND name NOT LIKE 'sqlite_%' ORDER BY name").fetchall():
        n = 0
        if "WITHOUT ROWID" in (sql or "").upper():
            rows = sorted(con.execute(f'SELECT * FROM "{name}"').fetchall(), key=repr)
        else:
            rows = con.execute(f'SELECT rowid, * FROM "{name}" ORDER BY rowid')
        for row in rows:
            for v in row:
                if isinstance(v, bytes):
                    h.update(b"B%d:" % len(v))
                    h.update(v)
                else:
                    h.update(repr(v).encode())
                h.update(b"|")
            n += 1
        h.update(f"table {name} {n}\n".encode())
    return h.hexdigest()


def open_and_verify(path):
    """Open path as an application would after a crash (a normal read-write
    connection: a hot journal is rolled back, a WAL recovered) and return
    (integrity_check rows, content checksum, freelist_count, page_count)."""
    con = _con(path, timeout=30)
    try:
        try:
            problems = [r[0] for r in con.execute("PRAGMA integrity_check")]
        except sqlite3.DatabaseError as e:
            problems = [f"error: {e}"]
        con.execute("BEGIN")
        try:
            cs = content_checksum(con)
            fl, pc = _stats(con)
        finally:
            con.execute("COMMIT")
    finally:
        con.close()
    return problems, cs, fl, pc


def checksum(path):
    return open_and_verify(path)[1]


def side_file_sizes(path):
    """{"-journal": size, "-wal": size} of the side files that exist."""
    out = {}
    for s in ("-journal", "-wal"):
        try:
            out[s] = os.path.getsize(str(path) + s)
        except FileNotFoundError:
            pass
    return out


def free_bytes(path):
    v = os.statvfs(str(path))
    return v.f_bavail * v.f_frsize


# --------------------------------------------------------------------------
# A process, frozen and looked at

def wait_stopped(pid, timeout=2.0):
    """After SIGSTOP: wait until every thread of pid is stopped."""
    deadline = time.monotonic() + timeout
    while True:
        states = []
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/stat") as f:
                    states.append(f.read().rsplit(")", 1)[1].split()[0])
        except FileNotFoundError:
            return False
        if states and all(s in ("T", "t", "Z", "X") for s in states):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.0005)


def process_tree(pid):
    """pid and every process below it (the daemon's and sqlite-maintctl's
    job processes, which do the work on the files: jobproc.h), from each
    thread's /proc/PID/task/TID/children."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except FileNotFoundError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
            except FileNotFoundError:
                pass
    return out


def open_files(pid):
    """[(path, size)] of the regular files pid and the processes below it
    have open; a deleted file's path ends with " (deleted)"."""
    out = []
    for p in process_tree(pid):
        try:
            fds = os.listdir(f"/proc/{p}/fd")
        except FileNotFoundError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{p}/fd/{fd}")
                size = os.stat(f"/proc/{p}/fd/{fd}").st_size
            except OSError:
                continue
            if target.startswith("/"):
                out.append((target, size))
    return out


def freeze_tree(pid):
    """SIGSTOP pid and everything below it, again until no new process
    appears (one may fork while the others stop); returns the pids."""
    frozen = []
    while True:
        new = [p for p in process_tree(pid) if p not in frozen]
        if not new:
            return frozen
        for p in new:
            try:
                os.kill(p, signal.SIGSTOP)
            except ProcessLookupError:
                continue
            wait_stopped(p)
            frozen.append(p)


def freeze_and_kill(proc, look=None):
    """SIGSTOP proc and its job processes, call look() while every thread
    stands still (what they have open, which side files exist), then
    SIGKILL them all. Returns (killed, what look returned): killed is False
    when the process had already exited on its own."""
    if proc.poll() is not None:
        return False, None
    frozen = freeze_tree(proc.pid)
    seen = look() if look else None
    for p in frozen:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    rc = proc.wait(timeout=30)
    return rc == -signal.SIGKILL, seen


# --------------------------------------------------------------------------
# The application, in other processes

# A writer: small write transactions (BEGIN IMMEDIATE, a couple of rows,
# COMMIT) and small reads in a loop; every `punch` seconds one transaction
# deleting every third row of t (so the daemon has something to VACUUM
# again); every `batch` seconds a write transaction kept open `hold_ms`
# (a batch job: the daemon meets its lock now and then); until the stop
# file appears (max_seconds only bounds a test that never says stop). Its
# busy timeout is 10 s. It counts every statement that fails and prints a
# JSON report with the time (time.time()) of every write transaction it
# committed and of its start and end; the blob of row id is a function of
# id, so the test can check every row afterwards.
WRITER_SCRIPT = r"""
import json, os, sqlite3, sys, time
path, stop_file = sys.argv[1], sys.argv[2]
punch, batch, hold_ms, max_seconds = (float(x) for x in sys.argv[3:7])
def blob(i):
    return i.to_bytes(8, "big") * 500
con = sqlite3.connect(path, isolation_level=None, timeout=10.0)
ids = set(r[0] for r in con.execute("SELECT id FROM t"))
nxt = (max(ids) if ids else 0) + 1
rep = {"write_tx": 0, "reads": 0, "punches": 0, "batches": 0, "errors": 0, "error_texts": [],
       "max_statement_ms": 0.0, "slow_statements": 0, "commits": []}
def run(fn):
    t = time.monotonic()
    ok = True
    try:
        fn()
    except sqlite3.Error as e:
        ok = False
        rep["errors"] += 1
        if len(rep["error_texts"]) < 20:
            rep["error_texts"].append(f"{time.time():.3f} {type(e).__name__}: {e}")
        if con.in_transaction:
            try:
                con.execute("ROLLBACK")
            except sqlite3.Error:
                pass
    ms = (time.monotonic() - t) * 1000
    rep["max_statement_ms"] = max(rep["max_statement_ms"], ms)
    if ms > 20:
        rep["slow_statements"] += 1
    return ok
def write(fn):
    ok = run(fn)
    if ok:
        rep["commits"].append(time.time())
    return ok
def insert():
    con.execute("BEGIN IMMEDIATE")
    con.execute("INSERT INTO t(id, b) VALUES(?, ?)", (nxt, blob(nxt)))
    con.execute("INSERT INTO t(id, b) VALUES(?, ?)", (nxt + 1, blob(nxt + 1)))
    con.execute("INSERT INTO app(note) VALUES(?)", (f"tx {nxt}",))
    con.execute("COMMIT")
def read():
    con.execute("SELECT count(*), max(id) FROM t").fetchone()
    con.execute("SELECT b FROM t WHERE id = ?", (nxt - 1,)).fetchone()
victims = []
def delete():
    con.execute("BEGIN IMMEDIATE")
    con.executemany("DELETE FROM t WHERE id = ?", [(i,) for i in victims])
    con.execute("COMMIT")
def batch_job():
    con.execute("BEGIN IMMEDIATE")
    con.execute("INSERT INTO app(note) VALUES('batch')")
    time.sleep(hold_ms / 1000.0)
    con.execute("COMMIT")
print("started", flush=True)
rep["start"] = time.time()
t0 = last = last_batch = time.monotonic()
while not os.path.exists(stop_file) and time.monotonic() - t0 < max_seconds:
    if write(insert):
        ids.update((nxt, nxt + 1))
        nxt += 2
        rep["write_tx"] += 1
    if run(read):
        rep["reads"] += 1
    if time.monotonic() - last >= punch:
        last = time.monotonic()
        victims = sorted(ids)[::3]
        if write(delete):
            ids.difference_update(victims)
            rep["punches"] += 1
    if time.monotonic() - last_batch >= batch:
        last_batch = time.monotonic()
        if write(batch_job):
            rep["batches"] += 1
    time.sleep(0.003)
rep["seconds"] = time.monotonic() - t0
rep["end"] = time.time()
rep["ids"] = sorted(ids)
con.close()
print(json.dumps(rep), flush=True)
"""


def writer_blob(i):
    return i.to_bytes(8, "big") * 500


# New read transactions, one after another as densely as Python goes: open
# a connection (busy timeout `timeout_ms`), BEGIN, SELECT, COMMIT, close;
# until the stop file appears (max_seconds only bounds a test that never
# says stop). Prints a JSON report: how many, how many failed (and when),
# how many waited more than 5 ms (they met a lock and the busy handler got
# them through), the slowest, and its start and end (time.time()).
READER_SCRIPT = r"""
import json, os, sqlite3, sys, time
path, stop_file, timeout_ms, max_seconds = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
rep = {"reads": 0, "failures": 0, "failure_times": [], "errors": [], "waited": 0, "max_ms": 0.0}
print("started", flush=True)
end = time.monotonic() + max_seconds
rep["start"] = time.time()
while not os.path.exists(stop_file) and time.monotonic() < end:
    t = time.monotonic()
    con = None
    try:
        con = sqlite3.connect(path, isolation_level=None, timeout=timeout_ms / 1000.0)
        con.execute("BEGIN")
        con.execute("SELECT id FROM t ORDER BY id LIMIT 1").fetchone()
        con.execute("COMMIT")
        rep["reads"] += 1
    except sqlite3.OperationalError as e:
        rep["failures"] += 1
        if len(rep["failure_times"]) < 200:
            rep["failure_times"].append(time.time())
        if len(rep["errors"]) < 5:
            rep["errors"].append(str(e))
    finally:
        if con is not None:
            con.close()
    ms = (time.monotonic() - t) * 1000
    rep["max_ms"] = max(rep["max_ms"], ms)
    if ms > 5:
        rep["waited"] += 1
rep["end"] = time.time()
print(json.dumps(rep), flush=True)
"""

# The control of the PENDING test: a plain process that asks for an
# EXCLUSIVE lock with a long busy timeout, which is what a maintenance tool
# must not do in rollback mode.
EXCLUSIVE_WAITER_SCRIPT = r"""
import sqlite3, sys, time
path, timeout = sys.argv[1], float(sys.argv[2])
con = sqlite3.connect(path, isolation_level=None, timeout=timeout)
print("started", flush=True)
t = time.monotonic()
try:
    con.execute("BEGIN EXCLUSIVE")
    con.execute("ROLLBACK")
    res = "locked it"
except sqlite3.OperationalError as e:
    res = str(e)
print(f"{res} after {time.monotonic() - t:.2f}s", flush=True)
con.close()
"""


class Script:
    """A Python program from above in its own process; waits for its
    "started" line. .result() waits for the end and parses the JSON line."""

    def __init__(self, script, *args):
        self.proc = subprocess.Popen([PYTHON, "-c", script] + [str(a) for a in args],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().strip()
        if line != "started":
            self.kill()
            raise AssertionError(f"helper process did not start: {line!r} {self.proc.stderr.read()}")
        self.started = time.time()

    def result(self, timeout=120):
        import json
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"helper process still running after {timeout}s") from None
        assert self.proc.returncode == 0, f"helper process failed ({self.proc.returncode}):\n{err}"
        lines = [ln for ln in out.splitlines() if ln.strip()]
        try:
            return json.loads(lines[-1])
        except (IndexError, ValueError):
            return lines[-1] if lines else ""

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=15)
        for s in (self.proc.stdout, self.proc.stderr):
            try:
                s.close()
            except OSError:
                pass
