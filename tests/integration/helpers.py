# SPDX-License-Identifier: MIT
"""Helpers for the integration tests, one of each: the built programs and
sqlite-maintctl's runner; real database files made with Python's sqlite3
(the same libsqlite3 as the programs), their statistics and checksums, and
ways to damage them; SQLite's own corpus of hostile databases; what a user
would check on a file; and the processes that play the application.
The daemon, the journal and the NOTIFY_SOCKET listener are in
daemon_fixtures.py."""

import csv
import dataclasses
import hashlib
import json
import math
import os
import random
import re
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

SOURCE_ROOT = os.environ.get(
    "MAINTD_SOURCE_ROOT",
    os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
BUILD_ROOT = os.environ.get("MAINTD_BUILD_ROOT", os.path.join(SOURCE_ROOT, "build"))
MAINTCTL_BIN = os.environ.get("MAINTCTL_BIN", os.path.join(BUILD_ROOT, "src", "sqlite-maintctl"))
MAINTD_BIN = os.environ.get("MAINTD_BIN", os.path.join(BUILD_ROOT, "src", "sqlite-maintd"))

PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable

# Every subprocess gets a timeout; an operation on a few MB never needs more.
DEFAULT_TIMEOUT = 60

STATUS_WORDS = {
    "ok", "skipped", "busy", "corrupt", "not_a_database", "cannot_maintain",
    "no_space", "io_error", "permission_denied", "missing", "interrupted", "error",
}

STATS_FIELDS = (
    "path", "status", "page_count", "freelist_count", "page_size",
    "fragmentation_percent", "file_size_bytes", "wal_size_bytes",
    "estimated_wasted_space_bytes", "journal_mode", "auto_vacuum",
)

# Exit statuses of sqlite-maintctl (README): 0 ok, 1 failure, 3 corrupt,
# 4 no space, 5 busy; 2 is a usage error, never the answer to a database.
CTL_EXIT = {0, 1, 3, 4, 5, 7}

# What a sanitizer (or glibc) prints when the program did something wrong.
CRASH_MARKERS = ("AddressSanitizer", "LeakSanitizer", "UndefinedBehaviorSanitizer", "runtime error:",
                 "MemorySanitizer", "ThreadSanitizer", "stack smashing detected", "double free",
                 "corrupted size", "malloc(): ", "free(): ", "Segmentation fault")

# How to become user nobody; setpriv drops every supplementary group too.
AS_NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]

BLOB = 4000  # make_db: one row per 4096-byte page, so a deleted row frees one page

SIDE_SUFFIXES = ("-journal", "-wal", "-shm")


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


def crash_lines(text):
    """Lines of text that show a crash or a sanitizer report."""
    return [line for line in text.splitlines() if any(m in line for m in CRASH_MARKERS)]


def project_version():
    """The version meson.build declares."""
    with open(os.path.join(SOURCE_ROOT, "meson.build")) as f:
        m = re.search(r"version\s*:\s*'([^']+)'", f.read())
    return m.group(1) if m else None


# --------------------------------------------------------------------------
# Running sqlite-maintctl

@dataclasses.dataclass
class CtlResult:
    args: list
    rc: int
    out: str        # stdout, its invalid UTF-8 kept as surrogates
    err: str
    json: list      # one dict per stdout line when --json was given, else None
    elapsed: float  # seconds, wall clock
    raw: bytes = b""                                        # stdout as written
    bad_lines: list = dataclasses.field(default_factory=list)  # lenient: lines that are not a JSON object

    def describe(self, limit=6000):
        out = self.raw.decode("utf-8", "replace")
        return (f"command: {' '.join(map(str, self.args))}\n"
                f"exit status: {self.rc} ({self.elapsed:.2f}s)\n"
                f"--- stdout ---\n{out[-limit:]}--- stderr ---\n{self.err[-limit:]}")

    def one(self):
        """The single JSON object of a one-database call."""
        assert self.json is not None, "not a --json call\n" + self.describe()
        assert len(self.json) == 1, \
            f"expected one JSON object, got {len(self.json)}\n" + self.describe()
        return self.json[0]

    def by_path(self):
        assert self.json is not None, "not a --json call\n" + self.describe()
        return {o.get("path"): o for o in self.json}

    def invalid_utf8_lines(self):
        bad = []
        for line in self.raw.split(b"\n"):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as e:
                path = line.split(b'"path":"', 1)[-1].split(b'"', 1)[0].decode("utf-8", "replace")
                bad.append(f"{os.path.basename(path)}: bytes {line[max(0, e.start - 40):e.start + 20]!r} ({e.reason})")
        return bad


def run_ctl(*args, env=None, cwd=None, user=None, timeout=DEFAULT_TIMEOUT,
            expect_json=None, stdin=subprocess.DEVNULL, lenient=False):
    """Run sqlite-maintctl with args; returns a CtlResult. Fails the test
    (an AssertionError, not an exception from deep inside subprocess) on a
    timeout, a signal or a sanitizer report.

    env: extra environment variables (a value of None removes the variable).
    user: "nobody" runs it as nobody:nogroup through setpriv.
    expect_json: parse stdout as one JSON object per line (default: when
    --json is among the arguments).
    lenient: for hostile databases, which may put any byte in a message:
    lines that are not a JSON object are kept in .bad_lines, not a failure,
    and the exit status must be a documented one."""
    args = [str(a) for a in args]
    cmd = [MAINTCTL_BIN] + args
    if user is not None:
        assert user == "nobody"
        cmd = AS_NOBODY + cmd
    e = dict(os.environ)
    # The suite decides the temp directory of each run: do not inherit one.
    e.pop("SQLITE_TMPDIR", None)
    for k, v in (env or {}).items():
        if v is None:
            e.pop(k, None)
        else:
            e[k] = str(v)
    t0 = time.monotonic()
    try:
        p = subprocess.run(cmd, env=e, cwd=cwd, stdin=stdin, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired as ex:
        raise AssertionError(f"sqlite-maintctl hung: still running after {timeout}s (killed)\n"
                             f"command: {' '.join(cmd)}\n--- stdout so far ---\n"
                             f"{(ex.stdout or b'').decode('utf-8', 'replace')[-3000:]}") from None
    elapsed = time.monotonic() - t0
    err = p.stderr.decode("utf-8", "replace")
    # stdout as text mode read it: universal newlines
    out = p.stdout.decode("utf-8", "surrogateescape").replace("\r\n", "\n").replace("\r", "\n")
    res = CtlResult(cmd, p.returncode, out, err, None, elapsed, p.stdout)
    assert p.returncode >= 0, \
        f"sqlite-maintctl was killed by signal {-p.returncode}\n" + res.describe()
    assert p.returncode not in (134, 139), f"sqlite-maintctl crashed (exit {p.returncode})\n" + res.describe()
    assert not crash_lines(err), "sanitizer or crash report on stderr:\n" + "\n".join(crash_lines(err)[:20]) \
        + "\n" + res.describe()
    if lenient:
        assert p.returncode in CTL_EXIT, f"undocumented exit status {p.returncode}\n" + res.describe()
    if expect_json is None:
        expect_json = "--json" in args
    if expect_json:
        objs = []
        for line in res.out.split("\n"):  # not splitlines(): U+2028 may be in a string
            if not line.strip():
                continue
            try:
                o = json.loads(line)
            except json.JSONDecodeError as ex:
                if lenient:
                    res.bad_lines.append(line[:200])
                    continue
                raise AssertionError(
                    f"stdout line is not JSON ({ex}): {line!r}\n" + res.describe())
            if lenient and not isinstance(o, dict):
                res.bad_lines.append(line[:200])
                continue
            assert isinstance(o, dict), f"JSON line is not an object: {line!r}"
            objs.append(o)
        res.json = objs
    return res


def run_as_nobody(argv, timeout=DEFAULT_TIMEOUT, **kw):
    return subprocess.run(AS_NOBODY + list(argv), capture_output=True, text=True,
                          timeout=timeout, **kw)


def assert_one_object_each(run, paths):
    """One JSON object per database, in order, each with a documented status."""
    got = [o.get("path") for o in run.json]
    want = [str(p) for p in paths]
    assert not run.bad_lines, f"stdout lines that are not JSON objects: {run.bad_lines[:5]}\n" + run.describe()
    assert got == want, (f"expected {len(want)} JSON objects, one per database in order, got {len(got)}; "
                         f"missing: {sorted(set(want) - set(got))[:10]}, extra: {sorted(set(got) - set(want))[:10]}\n"
                         + run.describe())
    odd = {o["path"]: o.get("status") for o in run.json if o.get("status") not in STATUS_WORDS}
    assert not odd, f"statuses outside the documented set: {odd}"


def ctl_json_in(text):
    """The first JSON object sqlite-maintctl printed (one with a "path") in
    text that other writers share, such as gdb's output on the same pipe:
    gdb's block-buffered lines may stop mid-line where the object begins."""
    dec = json.JSONDecoder()
    at = text.find("{")
    while at >= 0:
        try:
            obj, _ = dec.raw_decode(text, at)
            if isinstance(obj, dict) and "path" in obj:
                return obj
        except ValueError:
            pass
        at = text.find("{", at + 1)
    raise AssertionError("no JSON object from sqlite-maintctl in:\n" + text)


def write_config(path, text):
    with open(path, "w") as f:
        f.write(text)
    return str(path)


def setfacl(path, entry):
    """Add one entry to path's POSIX access ACL (setfacl -m, package acl)."""
    if shutil.which("setfacl") is None:
        pytest.skip("setfacl is not installed (package acl: scripts/lib.sh installs it)")
    p = subprocess.run(["setfacl", "-m", entry, path], capture_output=True, text=True, timeout=30)
    if p.returncode != 0 and "not supported" in p.stderr:
        pytest.skip(f"no POSIX ACLs on this file system: {p.stderr.strip()}")
    assert p.returncode == 0, f"setfacl -m {entry} {path}: {p.stderr}"


# --------------------------------------------------------------------------
# Databases

def _page_counts(con):
    """(freelist_count, page_count) on an open connection."""
    return (con.execute("PRAGMA freelist_count").fetchone()[0],
            con.execute("PRAGMA page_count").fetchone()[0])


def _evenly(ids, k):
    k = max(0, min(k, len(ids)))
    return [ids[int(i * len(ids) / k)] for i in range(k)] if k else []


def fragment_to(con, target, blob=BLOB, tolerance=1.0):
    """Delete (or re-insert) rows of t, evenly spread, until the freelist is
    target percent of the pages. Each row fills one page, so a deleted row
    frees about one page."""
    for _ in range(20):
        fl, pc = _page_counts(con)
        pct = 100.0 * fl / pc
        if abs(pct - target) <= tolerance:
            return pct
        if pct < target:
            k = max(1, math.ceil(target / 100.0 * pc - fl))
            ids = [r[0] for r in con.execute("SELECT id FROM t ORDER BY id")]
            con.execute("BEGIN")
            con.executemany("DELETE FROM t WHERE id = ?", [(i,) for i in _evenly(ids, k)])
            con.execute("COMMIT")
        else:
            k = max(1, math.floor(fl - target / 100.0 * pc))
            con.execute("BEGIN")
            con.executemany("INSERT INTO t(b) VALUES(randomblob(?))", [(blob,)] * k)
            con.execute("COMMIT")
    fl, pc = _page_counts(con)
    return 100.0 * fl / pc


def make_db(path, frag, mode="delete", rows=1000, blob=BLOB, index=False, auto_vacuum="none",
            keep_open=False, setup=None):
    """The daemon tests' database: table t(id, b) of `rows` random blobs,
    one per page, and table app for an application's own writes; then rows
    of t deleted evenly until frag percent of the pages are free (checked to
    within 3 points). index=True adds table kv with an index (something for
    ANALYZE to look at). setup(con) runs on the connection after t is
    filled, before the deletes (a schema of its own).

    mode "wal": with keep_open the connection (wal_autocheckpoint=0) is
    returned and kept open, so the deletes stay in the -wal; the caller
    closes it. Otherwise returns the fragmentation reached."""
    path = str(path)
    con = sqlite3.connect(path, isolation_level=None)
    con.execute(f"PRAGMA auto_vacuum={auto_vacuum.upper()}")  # INCREMENTAL keeps free pages until asked
    jm = con.execute(f"PRAGMA journal_mode={'WAL' if mode == 'wal' else 'DELETE'}").fetchone()[0]
    assert jm == ("wal" if mode == "wal" else "delete"), jm
    if mode == "wal":
        con.execute("PRAGMA wal_autocheckpoint=0")
    con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB)")
    con.execute("CREATE TABLE app(id INTEGER PRIMARY KEY, note TEXT)")
    con.execute("BEGIN")
    con.executemany("INSERT INTO t(id, b) VALUES(?, randomblob(?))", [(i, blob) for i in range(1, rows + 1)])
    if index:
        con.execute("CREATE TABLE kv(k INTEGER, v TEXT)")
        con.execute("CREATE INDEX kv_k ON kv(k)")
        con.executemany("INSERT INTO kv VALUES(?, ?)", [(i % 50, f"v{i}") for i in range(2000)])
    con.execute("COMMIT")
    if setup:
        setup(con)
    if mode == "wal":
        busy = con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        assert busy == 0
    fragment_to(con, frag, blob)
    assert con.execute("PRAGMA auto_vacuum").fetchone()[0] == {"none": 0, "full": 1, "incremental": 2}[auto_vacuum]
    fl, pc = _page_counts(con)
    got = 100.0 * fl / pc
    if not keep_open:
        con.close()  # the last connection: a WAL database is checkpointed, its -wal and -shm removed
    assert abs(got - frag) <= 3, f"{path}: made {got:.2f}% fragmentation, wanted {frag}%"
    return con if keep_open else got


def refragment(path, frag, blob=BLOB):
    """Fragment a make_db database again (after a VACUUM) to about frag
    percent without shrinking it: insert N new rows (they take the free
    pages, then grow the file), then delete N old rows evenly spread. The
    row count is unchanged, the rows are not: take a new checksum."""
    con = sqlite3.connect(str(path), isolation_level=None, timeout=10)
    try:
        fl, pc = _page_counts(con)
        used = pc - fl
        n = max(1, math.ceil(frag / 100.0 * used / (1 - frag / 100.0)))
        ids = [r[0] for r in con.execute("SELECT id FROM t ORDER BY id")]
        top = ids[-1] if ids else 0
        con.execute("BEGIN IMMEDIATE")
        con.executemany("INSERT INTO t(id, b) VALUES(?, randomblob(?))", [(top + 1 + i, blob) for i in range(n)])
        con.executemany("DELETE FROM t WHERE id = ?", [(i,) for i in _evenly(ids, n)])
        con.execute("COMMIT")
        if con.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        fl, pc = _page_counts(con)
    finally:
        con.close()
    got = 100.0 * fl / pc
    assert got >= frag - 3, f"{path}: refragmented to {got:.2f}%, wanted {frag}%"
    return got


def make_fragmented_db(path, mode="delete", rows=1500, delete_fraction=0.4,
                       auto_vacuum="none", seed=1, keep_open=False,
                       blob_min=1024, blob_max=4096, page_size=None):
    """The sqlite-maintctl tests' database, rows of mixed sizes: table t of
    `rows` rows carrying 1-4 KB blobs (seeded) and an index on name, then
    delete_fraction of the rows deleted in runs of neighbouring ids (so
    whole pages go to the freelist).

    mode "wal": the rows are checkpointed into the main file. With
    keep_open the deletes are made by a separate "application" process
    (an AppProcess, autocommit, wal_autocheckpoint=0) that stays connected
    and idle, so the deletes stay in the -wal and the main file's header
    stays stale; it is returned and the caller must close() it. The
    connection lives in another process on purpose: any open()+close() of
    the database file in this process (sha256, header reads) would drop a
    local connection's POSIX locks (SQLITE-NOTES), and the tool would then
    see no other connection and checkpoint the WAL away.
    Without keep_open everything is done here and None is returned (a WAL
    database is then checkpointed by SQLite at close)."""
    path = str(path)
    con = sqlite3.connect(path, isolation_level=None)
    if page_size:
        con.execute(f"PRAGMA page_size={int(page_size)}")
    con.execute(f"PRAGMA auto_vacuum={auto_vacuum.upper()}")
    if mode == "wal":
        assert con.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
        con.execute("PRAGMA wal_autocheckpoint=0")
    else:
        assert con.execute("PRAGMA journal_mode=DELETE").fetchone()[0] == "delete"
    con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, data BLOB)")
    con.execute("CREATE INDEX t_name ON t(name)")
    r = random.Random(seed)
    con.execute("BEGIN")
    for i in range(1, rows + 1):
        con.execute("INSERT INTO t VALUES(?,?,?)",
                    (i, f"row{i}", r.randbytes(r.randint(blob_min, blob_max))))
    con.execute("COMMIT")
    if mode == "wal":
        busy, _, _ = con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        assert busy == 0
    k = int(round(delete_fraction * 100))
    delete = f"DELETE FROM t WHERE (id - 1) % 100 < {k}"
    if keep_open:
        con.close()
        return AppProcess(path, "", [delete] if k else [])
    if k:
        con.execute(delete)
    con.close()
    return None


def make_corrupt_db(path, leaf_pages=3):
    """A fragmented database whose table b-tree is damaged: the cell pointer
    arrays of a few leaf pages in the middle are overwritten with 0xFF.
    Asserts that PRAGMA quick_check really reports problems; returns the
    damaged pages."""
    path = str(path)
    make_fragmented_db(path, rows=1200, delete_fraction=0.4)
    ps = page_size(path)
    pages = [p for p, name, kind in btree_pages(path) if name == "t" and kind == "leaf"]
    assert len(pages) > 10
    victims = pages[len(pages) // 2: len(pages) // 2 + leaf_pages]
    with open(path, "r+b") as f:
        for p in victims:
            off = (p - 1) * ps
            f.seek(off)
            hdr = f.read(8)
            assert hdr[0] == 0x0D, f"page {p} is not a table leaf"
            ncell = int.from_bytes(hdr[3:5], "big")
            f.seek(off + 8)
            f.write(b"\xff" * (2 * max(ncell, 1)))
    problems = quick_check(path)
    assert problems != ["ok"], "the corrupt fixture passes quick_check"
    return victims


def make_freelist_corrupt_db(path, frag=35):
    """A make_db database whose freelist also lists a page the table uses
    (a "2nd reference"): quick_check reports it, yet a plain VACUUM would
    run without complaint and rewrite the file, so only a check made before
    the VACUUM keeps the daemon's hands off it."""
    path = str(path)
    make_db(path, frag)
    ps = page_size(path)
    leaves = [p for p, name, kind in btree_pages(path) if name == "t" and kind == "leaf"]
    victim = leaves[len(leaves) // 2]
    trunk = header_field(path, 32)
    assert trunk, "no freelist"
    assert header_field(path, (trunk - 1) * ps + 4) > 0, "the first freelist trunk page lists no leaves"
    write_at(path, (trunk - 1) * ps + 8, victim.to_bytes(4, "big"))  # the first leaf entry of the trunk page
    problems = quick_check(path)
    assert problems != ["ok"] and "2nd reference" in problems[0], problems
    return problems


# Healthy databases with schemas a careless checker would call corrupt

def _seq(n):
    return f"(WITH RECURSIVE s(value) AS (SELECT 1 UNION ALL SELECT value+1 FROM s WHERE value<{n}) SELECT value FROM s)"


UNUSUAL_SCHEMAS = {
    "json-index": [
        "CREATE TABLE doc(id INTEGER PRIMARY KEY, j TEXT CHECK (json_valid(j)))",
        "CREATE INDEX doc_name ON doc(json_extract(j, '$.name'))",
        "CREATE INDEX doc_part ON doc(json_extract(j, '$.v')) WHERE json_extract(j, '$.v') > 10",
        f"INSERT INTO doc(j) SELECT json_object('name', 'n' || value, 'v', value) FROM {_seq(400)}",
    ],
    "generated-columns": [
        "CREATE TABLE g(a INTEGER, b INTEGER GENERATED ALWAYS AS (a * 2) VIRTUAL, "
        "c TEXT GENERATED ALWAYS AS (json_extract(json_object('x', a), '$.x') || '-' || a) STORED)",
        "CREATE INDEX g_b ON g(b)",
        "CREATE INDEX g_c ON g(c)",
        f"INSERT INTO g(a) SELECT value FROM {_seq(400)}",
    ],
    "triggers-views": [
        "CREATE TABLE log(id INTEGER PRIMARY KEY, note TEXT)",
        "CREATE TRIGGER t_del AFTER DELETE ON t BEGIN INSERT INTO log(note) VALUES('deleted ' || old.id); END",
        "CREATE TRIGGER t_upd BEFORE UPDATE ON t BEGIN SELECT RAISE(ABORT, 'read only'); END",
        "CREATE VIEW v AS SELECT id, length(b) AS n FROM t",
        "CREATE VIEW v2 AS SELECT count(*), sum(n) FROM v",
    ],
    "fts5": [
        "CREATE VIRTUAL TABLE ft USING fts5(title, body)",
        f"INSERT INTO ft SELECT 'title ' || value, 'the quick brown fox jumps ' || value FROM {_seq(400)}",
        "DELETE FROM ft WHERE rowid % 4 = 0",
    ],
    "without-rowid": [
        "CREATE TABLE kv(k TEXT PRIMARY KEY, v BLOB) WITHOUT ROWID",
        "CREATE INDEX kv_v ON kv(length(v))",
        f"INSERT INTO kv SELECT 'k' || value, randomblob(200) FROM {_seq(400)}",
    ],
    "rtree": [
        "CREATE VIRTUAL TABLE rt USING rtree(id, x0, x1, y0, y1)",
        f"INSERT INTO rt SELECT value, value, value + 1, value, value + 2 FROM {_seq(400)}",
    ],
    # An index on a function only the application defines: SQLite cannot
    # maintain that index without it, so it is "cannot maintain" - never
    # "corrupt", and never touched.
    "app-function-index": [
        "CREATE TABLE u(id INTEGER PRIMARY KEY, name TEXT)",
        "CREATE INDEX u_norm ON u(app_norm(name))",
        f"INSERT INTO u(name) SELECT 'Name' || value FROM {_seq(300)}",
    ],
    "app-function-partial-index": [
        "CREATE TABLE u(id INTEGER PRIMARY KEY, name TEXT)",
        "CREATE INDEX u_part ON u(name) WHERE app_norm(name) <> 'x'",
        f"INSERT INTO u(name) SELECT 'Name' || value FROM {_seq(300)}",
    ],
    "app-function-stored-column": [
        "CREATE TABLE u(id INTEGER PRIMARY KEY, name TEXT, norm TEXT GENERATED ALWAYS AS (app_norm(name)) STORED)",
        f"INSERT INTO u(name) SELECT 'Name' || value FROM {_seq(300)}",
    ],
    "app-collation-index": [
        "CREATE TABLE u(id INTEGER PRIMARY KEY, name TEXT)",
        "CREATE INDEX u_coll ON u(name COLLATE app_nocase)",
        f"INSERT INTO u(name) SELECT 'Name' || value FROM {_seq(300)}",
    ],
}

# What sqlite-maintctl says of each healthy schema that needs something only
# the application defines: (check, check --full, vacuum). Never "corrupt".
# quick_check does not evaluate index expressions (integrity_check does),
# and neither evaluates a stored generated column: then only the VACUUM,
# which recomputes it, finds the function missing - and fails, the file
# untouched.
APP_FUNCTION_SCHEMAS = {
    "app-function-index": ("ok", "cannot_maintain", "cannot_maintain"),
    "app-function-partial-index": ("ok", "cannot_maintain", "cannot_maintain"),
    "app-function-stored-column": ("ok", "ok", "cannot_maintain"),
    "app-collation-index": ("cannot_maintain", "cannot_maintain", "cannot_maintain"),
}


def rtree_available():
    con = sqlite3.connect(":memory:")
    try:
        con.execute("CREATE VIRTUAL TABLE r USING rtree(id, a, b)")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        con.close()


def make_unusual_db(path, kind, frag=35):
    """A healthy make_db database (400 rows) plus the schema of
    UNUSUAL_SCHEMAS[kind], made on a connection that defines the
    application's function and collation; returns the fragmentation."""
    def setup(con):
        con.create_function("app_norm", 1, lambda s: (s or "").lower(), deterministic=True)
        con.create_collation("app_nocase", lambda a, b: (a.lower() > b.lower()) - (a.lower() < b.lower()))
        for s in UNUSUAL_SCHEMAS[kind]:
            con.execute(s)
    return make_db(path, frag, rows=400, setup=setup)


# A WAL database whose -wal has frames with bad checksums

WAL_HEADER = 32
WAL_FRAME_HEADER = 24


def wal_frames(wal, ps):
    """[(frame index, page number, commit size)] of a -wal file."""
    n = (os.path.getsize(wal) - WAL_HEADER) // (WAL_FRAME_HEADER + ps)
    out = []
    with open(wal, "rb") as f:
        for i in range(n):
            f.seek(WAL_HEADER + i * (WAL_FRAME_HEADER + ps))
            h = f.read(8)
            out.append((i, int.from_bytes(h[:4], "big"), int.from_bytes(h[4:8], "big")))
    return out


WAL_APP = r"""
import sqlite3, sys, shutil
path, out_db, out_t2 = sys.argv[1], sys.argv[2], sys.argv[3]
con = sqlite3.connect(path, isolation_level=None)
assert con.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
con.execute("PRAGMA wal_autocheckpoint=0")
con.execute("BEGIN")
con.execute("DELETE FROM t WHERE id % 3 = 0")                 # T2: deletes, committed
con.execute("INSERT INTO app(note) VALUES('t2')")
con.execute("COMMIT")
snap = sqlite3.connect(out_t2)                               # the state after T2, for comparison
con.backup(snap)
snap.close()
con.execute("BEGIN")
con.execute("INSERT INTO app(note) VALUES('t3')")             # T3: one more commit
con.execute("UPDATE t SET b = zeroblob(10) WHERE id % 7 = 1")
con.execute("COMMIT")
# Copy the database and its -wal while this connection keeps the -wal alive
# (in this process: no open()+close() of the file elsewhere drops our locks).
shutil.copyfile(path, out_db)
shutil.copyfile(path + "-wal", out_db + "-wal")
print("copied", flush=True)
sys.stdin.read()
con.close()
"""


def make_wal_pair(workdir, dest):
    """dest (a WAL database, T1 checkpointed into it) and dest-wal holding
    two more commits: T2 (deletes a third of t, app row 't2') and T3 (app
    row 't3', shrinks some blobs). Written by an application in another
    process. Returns {frames_t2, frames_t3: frame indexes of each commit,
    rows_t1, rows_t2: checksum of the database after T1, after T2}."""
    src = os.path.join(str(workdir), "walsrc.db")
    t2_copy = os.path.join(str(workdir), "after-t2.db")
    make_db(src, 5, rows=300, mode="wal")  # T1, checkpointed at close
    rows_t1 = checksum(src)
    p = subprocess.Popen([PYTHON, "-c", WAL_APP, src, str(dest), t2_copy], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline().strip()
        assert line == "copied", f"WAL writer failed: {line!r} {p.stderr.read()}"
    finally:
        p.stdin.close()
        p.wait(timeout=30)
    frames = wal_frames(str(dest) + "-wal", page_size(dest))
    commits = [i for i, _, c in frames if c]
    assert len(commits) == 2, f"expected 2 commits in the -wal, got frames {frames}"
    rows_t2 = checksum(t2_copy)
    assert rows_t2 != rows_t1
    return dict(frames_t2=list(range(0, commits[0] + 1)), frames_t3=list(range(commits[0] + 1, commits[1] + 1)),
                rows_t1=rows_t1, rows_t2=rows_t2)


def corrupt_wal_frame_checksum(wal, ps, frame):
    """Flip a bit of checksum-1 of one frame: SQLite's recovery stops at
    the last commit before it."""
    at = WAL_HEADER + frame * (WAL_FRAME_HEADER + ps) + 16
    with open(wal, "r+b") as f:
        f.seek(at)
        b = f.read(1)[0]
        f.seek(at)
        f.write(bytes([b ^ 0x01]))


def app_notes(path):
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return [r[0] for r in con.execute("SELECT note FROM app ORDER BY id")]
    finally:
        con.close()


# --------------------------------------------------------------------------
# Damage

def btree_pages(path):
    """[(pageno, name, pagetype)] of every b-tree page but page 1, from dbstat."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return [tuple(r) for r in con.execute(
            "SELECT pageno, name, pagetype FROM dbstat WHERE pagetype IN ('internal','leaf') "
            "AND pageno > 1 ORDER BY pageno")]
    finally:
        con.close()


def flip_btree_bytes(path, seed, pages=3, flips=6):
    """Flip random bits in the page header and cell pointer array of a few
    b-tree pages (never page 1, the schema), chosen by a seeded RNG; returns
    a description. Those are the bytes SQLite must trust to walk a page."""
    rng = random.Random(seed)
    ps = page_size(path)
    candidates = btree_pages(path)
    victims = rng.sample(candidates, min(pages, len(candidates)))
    done = []
    with open(path, "r+b") as f:
        for pageno, name, ptype in victims:
            off = (pageno - 1) * ps
            f.seek(off)
            hdr = f.read(12)
            hlen = 8 if hdr[0] in (0x0A, 0x0D) else 12
            ncell = int.from_bytes(hdr[3:5], "big")
            span = hlen + 2 * ncell
            for _ in range(flips):
                at = off + rng.randrange(span)
                f.seek(at)
                b = f.read(1)[0]
                f.seek(at)
                f.write(bytes([b ^ (1 << rng.randrange(8))]))
            done.append(f"page {pageno} ({name} {ptype})")
    return ", ".join(done)


def damage_freelist(path, how):
    """how: "trunk-is-in-use" (the header's first trunk page is a page a
    table uses), "leaf-count" (the trunk claims 0xFFFFFF00 leaves),
    "next-trunk-in-use" (the trunk's next pointer is a table page)."""
    ps = page_size(path)
    trunk = header_field(path, 32)
    assert trunk, f"{path} has no freelist"
    leaves = [p for p, name, t in btree_pages(path) if t == "leaf" and name == "t"]
    victim = leaves[len(leaves) // 2]
    at = {"trunk-is-in-use": 32, "leaf-count": (trunk - 1) * ps + 4, "next-trunk-in-use": (trunk - 1) * ps}[how]
    value = 0xFFFFFF00 if how == "leaf-count" else victim
    write_at(path, at, value.to_bytes(4, "big"))


def write_at(path, offset, data):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def truncate(path, size):
    with open(path, "r+b") as f:
        f.truncate(size)


# --------------------------------------------------------------------------
# SQLite's own corpus of corrupt and hostile databases (used through copies only)

CORPUS = os.path.normpath(os.path.join(SOURCE_ROOT, "..", "shared", "corpus", "sqlite-testsuite"))
CORPUS_DB = os.path.join(CORPUS, "db")
MANIFEST = os.path.join(CORPUS, "MANIFEST.tsv")

# The statuses a database that fails quick_check may get: anything but
# "ok" (or "skipped", which --force rules out) means it was not vacuumed.
REFUSED_KINDS = {"corrupt", "cannot_maintain", "not_a_database"}


def corpus_available():
    return os.path.isfile(MANIFEST) and os.path.isdir(CORPUS_DB)


def load_manifest():
    """{name: row} of MANIFEST.tsv, for the rows that have a decoded .db."""
    with open(MANIFEST, newline="") as f:
        rows = {r["name"]: r for r in csv.DictReader(f, delimiter="\t")}
    return {n: r for n, r in rows.items() if os.path.exists(os.path.join(CORPUS_DB, n + ".db"))}


def copy_corpus(dest, names=None):
    """Copy corpus databases into dest; returns {name: copied path}."""
    os.makedirs(dest, exist_ok=True)
    names = sorted(names if names is not None else load_manifest())
    out = {}
    for n in names:
        p = os.path.join(str(dest), n + ".db")
        shutil.copyfile(os.path.join(CORPUS_DB, n + ".db"), p)
        out[n] = p
    return out


def manifest_corrupt(row):
    """True when quick_check (sqlite3 3.40.1, MANIFEST) did not say ok."""
    return row["quick_check"].strip() != "ok"


def manifest_valid(row):
    """The manifest's own note that the image is a valid database (the
    control case of shell2.test), not a corrupt one."""
    return row["quick_check"].strip() == "ok" and "valid database" in row.get("notes", "")


# --------------------------------------------------------------------------
# What a user would ask SQLite, or check on a file

def db_stats(path, recover=False):
    """What a user would ask SQLite about a database: dict of page_count,
    freelist_count, page_size, journal_mode, auto_vacuum (as a word) and
    fragmentation (the free pages, percent of all). From a read-only
    connection, which never checkpoints a WAL nor writes anything (it may
    leave a WAL database's -wal and -shm behind); recover=True: from a
    normal read-write one, as an application opens the file: a hot
    journal is rolled back, a WAL recovered, and checkpointed away at its
    close."""
    con = sqlite3.connect(str(path) if recover else f"file:{path}?mode=ro", uri=not recover,
                          isolation_level=None, timeout=30)
    try:
        con.execute("BEGIN")
        fl, pc = _page_counts(con)
        d = {
            "page_count": pc,
            "freelist_count": fl,
            "page_size": con.execute("PRAGMA page_size").fetchone()[0],
            "auto_vacuum": {0: "none", 1: "full", 2: "incremental"}[
                con.execute("PRAGMA auto_vacuum").fetchone()[0]],
            "fragmentation": 100.0 * fl / pc if pc else 0.0,
        }
        con.execute("COMMIT")
        d["journal_mode"] = con.execute("PRAGMA journal_mode").fetchone()[0]
        return d
    finally:
        con.close()


def freelist_count(path):
    return db_stats(path)["freelist_count"]


def fragmentation(path):
    return db_stats(path)["fragmentation"]


def quick_check(path, pragma="quick_check"):
    """The rows of PRAGMA quick_check (or integrity_check) from a fresh
    connection; a statement error counts as one problem row."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return [r[0] for r in con.execute(f"PRAGMA {pragma}")]
    except sqlite3.DatabaseError as e:
        return [f"error: {e}"]
    finally:
        con.close()


def _content_hash(con, tables=None, virtual=True, stat=False):
    """sha256 of what the application reads on con: with tables (a name or
    a list), the rows of those tables; else the schema (without root pages)
    and every table. Rows come with their rowid in rowid order (WITHOUT
    ROWID tables: all rows, sorted). virtual=False leaves virtual tables
    out (their shadow tables stay in: no module needs loading, a damaged
    index is not read); stat=True counts ANALYZE's sqlite_stat tables, the
    one thing maintenance is meant to change."""
    h = hashlib.sha256()
    if isinstance(tables, str):
        tables = [tables]
    if tables is None:
        def counted(name):
            return stat or not name.startswith("sqlite_stat")
        for row in con.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name"):
            if counted(row[1]):
                h.update(repr(row).encode())
        named = [(n, s) for n, s in con.execute(
            "SELECT name, coalesce(sql, '') FROM sqlite_master WHERE type = 'table' "
            "AND (?1 OR coalesce(rootpage, 0) > 0) ORDER BY name", (virtual,)) if counted(n)]
    else:
        named = [(n, con.execute("SELECT coalesce(sql, '') FROM sqlite_master WHERE name = ?", (n,)).fetchone()[0])
                 for n in tables]
    for name, sql in named:
        quoted = '"' + name.replace('"', '""') + '"'
        if "WITHOUT ROWID" in sql.upper() and not sql.upper().startswith("CREATE VIRTUAL TABLE"):
            rows = sorted(con.execute(f"SELECT * FROM {quoted}").fetchall(), key=repr)
        else:
            rows = con.execute(f"SELECT rowid, * FROM {quoted} ORDER BY rowid")
        n = 0
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


def checksum(path, tables=None, virtual=True, stat=False):
    """_content_hash of path from a read-only connection: VACUUM must leave
    it unchanged."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        return _content_hash(con, tables, virtual, stat)
    finally:
        con.close()


def open_and_verify(path):
    """Open path as an application would after a crash (a normal read-write
    connection: a hot journal is rolled back, a WAL recovered) and return
    (integrity_check rows, checksum, freelist_count, page_count)."""
    con = sqlite3.connect(str(path), isolation_level=None, timeout=30)
    try:
        try:
            problems = [r[0] for r in con.execute("PRAGMA integrity_check")]
        except sqlite3.DatabaseError as e:
            problems = [f"error: {e}"]
        con.execute("BEGIN")
        try:
            cs = _content_hash(con)
            fl, pc = _page_counts(con)
        finally:
            con.execute("COMMIT")
    finally:
        con.close()
    return problems, cs, fl, pc


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _file_word(path, times=False):
    """sha256 of a file (with times: and its modification and change
    times: a chown to the owner it has moves the change time, and backup
    tools that go by it copy the file again), None when absent, or a word
    for what it is when it is not a regular file."""
    if os.path.islink(path):
        return "symlink->" + os.readlink(path)
    if not os.path.exists(path):
        return None
    if not os.path.isfile(path):
        return "not-a-file"
    if not times:
        return sha256(path)
    st = os.stat(path)
    return f"{sha256(path)} mtime={st.st_mtime_ns} ctime={st.st_ctime_ns}"


def snapshot(paths, times=False):
    """{file: sha256 (with times: and its times)} of each database and its -journal/-wal/-shm (None:
    absent; "symlink->target" or "not-a-file" for what is not a file)."""
    out = {}
    for p in paths:
        for f in (str(p),) + tuple(str(p) + s for s in SIDE_SUFFIXES):
            out[f] = _file_word(f, times)
    return out


def changed(before, after):
    return sorted(f for f in before if before[f] != after.get(f))


def database_of(f):
    """The database a file of snapshot() belongs to (itself or the one of
    its -journal, -wal or -shm)."""
    for s in SIDE_SUFFIXES:
        if f.endswith(s):
            return f[:-len(s)]
    return f


def header_field(path, offset, size=4):
    with open(path, "rb") as f:
        f.seek(offset)
        return int.from_bytes(f.read(size), "big")


def page_size(path):
    """The page size the database header gives (1 means 65536)."""
    v = header_field(path, 16, 2)
    return 65536 if v == 1 else v


def file_size(path):
    """Size of path, 0 when absent (as the contract counts wal_size_bytes)."""
    try:
        return os.path.getsize(path)
    except FileNotFoundError:
        return 0


def disk_bytes(path):
    """The disk space of a database as sqlite-maintd reports it: the
    allocated blocks (st_blocks, as du counts) of the file, its -wal and its
    -journal."""
    total = 0
    for suffix in ("", "-wal", "-journal"):
        try:
            total += os.lstat(str(path) + suffix).st_blocks * 512
        except FileNotFoundError:
            pass
    return total


def side_files(path):
    """The side files of path (-journal, -wal, -shm) that exist."""
    return [path + s for s in SIDE_SUFFIXES if os.path.exists(path + s)]


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


def expected_fragmentation(freelist, page_count):
    return 0.0 if page_count == 0 else freelist / page_count * 100.0


def assert_two_decimals(value, expected, what):
    """value is the contract's figure rounded to two decimals."""
    assert isinstance(value, (int, float)), f"{what} is not a number: {value!r}"
    assert abs(value - expected) <= 0.005 + 1e-9, f"{what}: {value} != {expected:.4f} rounded"
    assert abs(value * 100 - round(value * 100)) < 1e-6, f"{what} has more than 2 decimals: {value}"


def assert_stats_match(obj, path, *, mode=None):
    """The stats fields of a JSON object agree with what SQLite and the file
    system say about path right now."""
    for k in STATS_FIELDS:
        assert k in obj, f"field {k!r} missing from {obj}"
    p = db_stats(path)
    assert obj["path"] == str(path)
    assert obj["page_count"] == p["page_count"], (obj, p)
    assert obj["freelist_count"] == p["freelist_count"], (obj, p)
    assert obj["page_size"] == p["page_size"], (obj, p)
    assert_two_decimals(obj["fragmentation_percent"], p["fragmentation"], "fragmentation_percent")
    assert obj["estimated_wasted_space_bytes"] == p["freelist_count"] * p["page_size"], obj
    assert obj["file_size_bytes"] == os.path.getsize(path), obj
    assert obj["wal_size_bytes"] == file_size(str(path) + "-wal"), obj
    assert obj["journal_mode"] == p["journal_mode"], (obj, p)
    assert obj["auto_vacuum"] == p["auto_vacuum"], (obj, p)
    if mode is not None:
        assert obj["journal_mode"] == mode
    return p


# --------------------------------------------------------------------------
# Figures in messages

_UNITS = {
    "": 1, "b": 1, "byte": 1, "bytes": 1,
    "k": 1024, "kib": 1024, "kb": 1000,
    "m": 1024 ** 2, "mib": 1024 ** 2, "mb": 1000 ** 2,
    "g": 1024 ** 3, "gib": 1024 ** 3, "gb": 1000 ** 3,
    "t": 1024 ** 4, "tib": 1024 ** 4, "tb": 1000 ** 4,
}
_NUM = re.compile(r"(\d+(?:\.\d+)?)\s*(bytes|byte|KiB|MiB|GiB|TiB|kB|KB|MB|GB|TB|B|K|M|G|T)?(?![A-Za-z])")


def mentions_figure(text, value, rel=0.1):
    """text names a figure within rel of value (bytes, any common unit:
    "5.2 MiB", "5452595 bytes", "5452595")."""
    figures = (float(m.group(1)) * _UNITS.get((m.group(2) or "").lower(), 1) for m in _NUM.finditer(text))
    return any(abs(f - value) <= rel * value for f in figures)


def vacuum_space_needed(page_count, freelist_count, page_size, journal_mode, factor=2.0, block=4096):
    """(beside the database, in the temp directory) in bytes, as the space
    check estimates what VACUUM writes (docs/DESIGN.md, "Free space for
    VACUUM"): the live pages copied into the temp directory, then written
    again beside the database as WAL frames (24-byte frame headers, a
    32-byte WAL header, and the -shm's 32 KiB per 4096 frames) or
    rollback-journal records (8 bytes each and a 512-byte header); each
    file rounded up by a filesystem block; each figure times
    disk_space_factor."""
    pages = page_count - freelist_count
    live = pages * page_size
    if journal_mode == "wal":
        extra = 32 + 24 * pages + 32768 * (1 + pages // 4096) + 2 * block
    else:
        extra = 512 + 8 * pages + block
    return int((live + extra) * factor), int((live + block) * factor)


def db_space_needed(path, factor=2.0):
    """vacuum_space_needed() of the database at path, asked of SQLite
    (without a -wal, as the immutable file it then is: any other open would
    create a -wal and a -shm beside it)."""
    immutable = not os.path.exists(f"{path}-wal")
    con = sqlite3.connect(f"file:{path}?mode=ro{'&immutable=1' if immutable else ''}", uri=True)
    try:
        pc, fl, ps, jm = (con.execute(f"PRAGMA {p}").fetchone()[0]
                          for p in ("page_count", "freelist_count", "page_size", "journal_mode"))
    finally:
        con.close()
    if immutable and header_field(path, 18, 2) == 0x0202:
        jm = "wal"  # an immutable connection never opens the WAL: the header tells
    return vacuum_space_needed(pc, fl, ps, jm, factor)


# --------------------------------------------------------------------------
# The application, in other processes

# Any SQLite error ends it with a traceback and exit status 1.
LOCK_HOLDER_SCRIPT = r"""
import json, sqlite3, sys, time
path, begin, timeout, autocheckpoint = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4] == "1"
stmts = sys.argv[5:]
con = sqlite3.connect(path, isolation_level=None, timeout=timeout)
if not autocheckpoint:
    con.execute("PRAGMA wal_autocheckpoint=0")
if begin:
    con.execute(begin)
for s in stmts:
    con.execute(s).fetchall()   # step to the end: no statement left open
print("locked", flush=True)
for line in sys.stdin:
    cmd = line.strip()
    if cmd in ("COMMIT", "ROLLBACK"):
        if con.in_transaction:
            con.execute(cmd)
        print("released", flush=True)
    elif cmd.startswith("SQL "):
        con.execute(cmd[4:]).fetchall()
        print("done", flush=True)
    elif cmd.startswith("Q "):
        print(json.dumps(con.execute(cmd[2:]).fetchall()), flush=True)
    elif cmd.startswith("WORK "):
        # go on working as an application does: small write transactions, reads
        for i in range(int(cmd[5:])):
            con.execute("INSERT INTO app(note) VALUES(?)", (f"after {i}",))
            con.execute("SELECT count(*) FROM t").fetchone()
            time.sleep(0.05)
        print("ok", con.execute("SELECT count(*) FROM app").fetchone()[0], flush=True)
    elif cmd == "EXIT":
        break
con.close()
"""


class LockHolder:
    """A separate Python process with its own connection to path (busy
    timeout `timeout` seconds; wal_autocheckpoint=0 unless autocheckpoint):
    runs `begin` (e.g. "BEGIN EXCLUSIVE") and the statements, says
    "locked", and holds the lock until release()."""

    def __init__(self, path, begin="BEGIN EXCLUSIVE", stmts=(), user=None, timeout=10, autocheckpoint=False):
        argv = [PYTHON, "-c", LOCK_HOLDER_SCRIPT, str(path), begin or "", str(timeout),
                "1" if autocheckpoint else "0"] + list(stmts)
        if user is not None:
            argv = AS_NOBODY + argv
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, bufsize=1)
        self._expect("locked")

    def _readline(self, what, timeout=15):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                raise AssertionError(f"lock holder: no {what} in {timeout}s")
            r, _, _ = select.select([self.proc.stdout], [], [], left)
            if not r:
                continue
            line = self.proc.stdout.readline()
            if not line:
                self.proc.wait(timeout=15)
                err = self.proc.stderr.read()
                raise AssertionError(f"lock holder exited before {what}: {err}")
            return line.strip()

    def _expect(self, word, timeout=15):
        while self._readline(repr(word), timeout) != word:
            pass

    def query(self, statement):
        """Rows of a statement run on the process's connection."""
        self.proc.stdin.write("Q " + statement + "\n")
        self.proc.stdin.flush()
        return [tuple(r) for r in json.loads(self._readline("query result"))]

    def send(self, cmd, expect=None):
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        if expect:
            self._expect(expect)

    def release(self, how="COMMIT"):
        self.send(how, "released")

    def sql(self, statement):
        self.send("SQL " + statement, "done")

    def close(self):
        if self.proc.poll() is None:
            try:
                self.send("EXIT")
                self.proc.wait(timeout=15)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.kill()
        for s in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                s.close()
            except OSError:
                pass

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=15)


class AppProcess(LockHolder):
    """An application's idle connection in a separate process (no
    transaction open); .query() and .sql() run statements on it."""

    def __init__(self, path, begin="", stmts=(), user=None):
        super().__init__(path, begin, stmts, user)


class App(LockHolder):
    """A make_db database's application in another process: it opens a
    transaction with `begin`, holds it, with an INSERT into app made at the
    start (write_first) or just before the COMMIT, until the test calls
    release(); then it does `after` more small transactions (WORK) with a
    30 s busy timeout, and finish() waits for its end."""

    HELD = "INSERT INTO app(note) VALUES('held')"

    def __init__(self, path, begin="BEGIN EXCLUSIVE", after=20, write_first=True):
        self.after, self.write_first = after, write_first
        super().__init__(path, begin, [self.HELD] if write_first else [], timeout=30, autocheckpoint=True)

    def release(self, how="COMMIT"):
        """Commit the held transaction; returns once it is committed, the
        application working on."""
        if not self.write_first:
            self.sql(self.HELD)
        super().release(how)
        self.send(f"WORK {self.after}")

    def finish(self, timeout=60):
        """(exit status, stdout, stderr) once it has done its work."""
        self.send("EXIT")
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"the app did not finish in {timeout}s") from None
        return self.proc.returncode, out, err


# A writer: small write transactions (BEGIN IMMEDIATE, a couple of rows,
# COMMIT) and small reads in a loop; every `punch` seconds one transaction
# deleting every third row of t (so the daemon has something to VACUUM
# again); every `batch` seconds a write transaction kept open `hold_ms`
# (a batch job: the daemon meets its lock now and then); until the stop
# file appears (max_seconds only bounds a test that never says stop). Its
# busy timeout is 10 s. It counts every statement that fails and prints a
# JSON report with the time (time.time()) of every write transaction it
# committed and of its start and end; the blob of row id is writer_blob(id),
# so the test can check every row afterwards.
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


# --------------------------------------------------------------------------
# A process, frozen and looked at

def _wait_stopped(pid, timeout=2.0):
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


def freeze_and_kill(proc, look=None):
    """SIGSTOP proc and its job processes (again until no new process
    appears: one may fork while the others stop), call look() while every
    thread stands still (what they have open, which side files exist), then
    SIGKILL them all. Returns (killed, what look returned): killed is False
    when the process had already exited on its own."""
    if proc.poll() is not None:
        return False, None
    frozen = []
    while new := [p for p in process_tree(proc.pid) if p not in frozen]:
        for p in new:
            try:
                os.kill(p, signal.SIGSTOP)
            except ProcessLookupError:
                continue
            _wait_stopped(p)
            frozen.append(p)
    seen = look() if look else None
    for p in frozen:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    rc = proc.wait(timeout=30)
    return rc == -signal.SIGKILL, seen
