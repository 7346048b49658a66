# SPDX-License-Identifier: MIT
"""Helpers for the sqlite-maintctl integration tests: real database files
made with Python's sqlite3 (the same libsqlite3 as the tool), a runner for
the built binary, and small checks a user would make by hand."""

import dataclasses
import hashlib
import json
import os
import random
import re
import shutil
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

# How to become user nobody; setpriv drops every supplementary group too.
AS_NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]


# --------------------------------------------------------------------------
# Running the tool

@dataclasses.dataclass
class CtlResult:
    args: list
    rc: int
    out: str
    err: str
    json: list      # parsed stdout lines when --json was given, else None
    elapsed: float  # seconds, wall clock

    def __iter__(self):
        # (rc, stdout, stderr, parsed json list), as the brief asks
        return iter((self.rc, self.out, self.err, self.json))

    def describe(self):
        return (f"command: {' '.join(map(str, self.args))}\n"
                f"exit status: {self.rc} ({self.elapsed:.2f}s)\n"
                f"--- stdout ---\n{self.out}--- stderr ---\n{self.err}")

    def one(self):
        """The single JSON object of a one-database call."""
        assert self.json is not None, "not a --json call\n" + self.describe()
        assert len(self.json) == 1, \
            f"expected one JSON object, got {len(self.json)}\n" + self.describe()
        return self.json[0]

    def by_path(self):
        assert self.json is not None, "not a --json call\n" + self.describe()
        return {o.get("path"): o for o in self.json}


def run_ctl(*args, env=None, cwd=None, user=None, timeout=DEFAULT_TIMEOUT,
            expect_json=None, stdin=subprocess.DEVNULL):
    """Run sqlite-maintctl with args; returns a CtlResult.

    env: extra environment variables (a value of None removes the variable).
    user: "nobody" runs it as nobody:nogroup through setpriv.
    expect_json: parse stdout as one JSON object per line (default: when
    --json is among the arguments)."""
    args = [str(a) for a in args]
    cmd = [MAINTCTL_BIN] + args
    if user is not None:
        assert user == "nobody"
        cmd = AS_NOBODY + cmd
    e = dict(os.environ)
    # The suite decides the temp directory of each run: do not inherit one.
    for k in ("SQLITE_TMPDIR",):
        e.pop(k, None)
    for k, v in (env or {}).items():
        if v is None:
            e.pop(k, None)
        else:
            e[k] = str(v)
    t0 = time.monotonic()
    p = subprocess.run(cmd, env=e, cwd=cwd, stdin=stdin, capture_output=True,
                       text=True, timeout=timeout)
    elapsed = time.monotonic() - t0
    res = CtlResult(cmd, p.returncode, p.stdout, p.stderr, None, elapsed)
    assert p.returncode >= 0, \
        f"sqlite-maintctl was killed by signal {-p.returncode}\n" + res.describe()
    if expect_json is None:
        expect_json = "--json" in args
    if expect_json:
        objs = []
        for line in p.stdout.split("\n"):  # not splitlines(): U+2028 may be in a string
            if not line.strip():
                continue
            try:
                o = json.loads(line)
            except json.JSONDecodeError as ex:
                raise AssertionError(
                    f"stdout line is not JSON ({ex}): {line!r}\n" + res.describe())
            assert isinstance(o, dict), f"JSON line is not an object: {line!r}"
            objs.append(o)
        res.json = objs
    return res


def run_as_nobody(argv, timeout=DEFAULT_TIMEOUT, **kw):
    return subprocess.run(AS_NOBODY + list(argv), capture_output=True, text=True,
                          timeout=timeout, **kw)


# --------------------------------------------------------------------------
# Database fixtures

def make_fragmented_db(path, mode="delete", rows=1500, delete_fraction=0.4,
                       auto_vacuum="none", seed=1, keep_open=False,
                       blob_min=1024, blob_max=4096, page_size=None):
    """A real database with a real freelist: table t of `rows` rows carrying
    1-4 KB blobs and an index, then delete_fraction of the rows deleted in
    runs of neighbouring ids (so whole pages go to the freelist).

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
    Asserts that PRAGMA quick_check really reports problems."""
    path = str(path)
    make_fragmented_db(path, rows=1200, delete_fraction=0.4)
    con = sqlite3.connect(path)
    ps = con.execute("PRAGMA page_size").fetchone()[0]
    pages = [r[0] for r in con.execute(
        "SELECT pageno FROM dbstat WHERE name='t' AND pagetype='leaf' ORDER BY pageno")]
    con.close()
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


def pragmas(path):
    """What a user would ask SQLite about a database, from a separate
    connection: page_count, freelist_count, page_size, journal_mode,
    auto_vacuum (as a word)."""
    con = sqlite3.connect(str(path), isolation_level=None)
    try:
        con.execute("BEGIN")
        d = {
            "page_count": con.execute("PRAGMA page_count").fetchone()[0],
            "freelist_count": con.execute("PRAGMA freelist_count").fetchone()[0],
            "page_size": con.execute("PRAGMA page_size").fetchone()[0],
            "auto_vacuum": {0: "none", 1: "full", 2: "incremental"}[
                con.execute("PRAGMA auto_vacuum").fetchone()[0]],
        }
        con.execute("COMMIT")
        d["journal_mode"] = con.execute("PRAGMA journal_mode").fetchone()[0]
        return d
    finally:
        con.close()


def table_checksum(path, include_stat=False, virtual=True):
    """sha256 over the schema (sqlite_master without root pages) and every
    row of every table: SELECT * ORDER BY rowid, or, for WITHOUT ROWID
    tables, all rows sorted. VACUUM must leave it unchanged. virtual=False
    leaves the virtual tables out (their shadow tables stay in): no module
    or tokenizer needs to be loaded."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    h = hashlib.sha256()
    try:
        schema = con.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name").fetchall()
        for row in schema:
            if not include_stat and row[1].startswith("sqlite_stat"):
                continue
            h.update(repr(row).encode())
        for name, sql in con.execute(
                "SELECT name, coalesce(sql, '') FROM sqlite_master WHERE type='table' "
                "AND (?1 OR coalesce(rootpage, 0) > 0) ORDER BY name", (virtual,)).fetchall():
            if not include_stat and name.startswith("sqlite_stat"):
                continue
            quoted = '"' + name.replace('"', '""') + '"'
            if "WITHOUT ROWID" in sql.upper() and not sql.upper().startswith("CREATE VIRTUAL TABLE"):
                rows = sorted(con.execute(f"SELECT * FROM {quoted}").fetchall(), key=repr)
            else:
                rows = con.execute(f"SELECT rowid, * FROM {quoted} ORDER BY rowid").fetchall()
            h.update(f"table {name} {len(rows)}\n".encode())
            for r in rows:
                h.update(repr(r).encode())
    finally:
        con.close()
    return h.hexdigest()


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def header_field(path, offset, size=4):
    with open(path, "rb") as f:
        f.seek(offset)
        return int.from_bytes(f.read(size), "big")


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
    return [path + s for s in ("-journal", "-wal", "-shm") if os.path.exists(path + s)]


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
    p = pragmas(path)
    assert obj["path"] == str(path)
    assert obj["page_count"] == p["page_count"], (obj, p)
    assert obj["freelist_count"] == p["freelist_count"], (obj, p)
    assert obj["page_size"] == p["page_size"], (obj, p)
    assert_two_decimals(obj["fragmentation_percent"],
                        expected_fragmentation(p["freelist_count"], p["page_count"]),
                        "fragmentation_percent")
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


def byte_figures(text):
    """Every figure in text read as a byte count ("5.2 MiB", "5452595 bytes", "5452595")."""
    out = []
    for m in _NUM.finditer(text):
        unit = (m.group(2) or "").lower()
        out.append(float(m.group(1)) * _UNITS.get(unit, 1))
    return out


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


def mentions_figure(text, value, rel=0.1):
    """text names a figure within rel of value (bytes, any common unit)."""
    return any(abs(f - value) <= rel * value for f in byte_figures(text))


# --------------------------------------------------------------------------
# A second process that really holds a lock

LOCK_HOLDER_SCRIPT = r"""
import json, sqlite3, sys
path, begin = sys.argv[1], sys.argv[2]
stmts = sys.argv[3:]
con = sqlite3.connect(path, isolation_level=None, timeout=10)
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
    elif cmd == "EXIT":
        break
con.close()
print("closed", flush=True)
"""


class LockHolder:
    """A separate Python process with its own connection to path: runs
    `begin` (e.g. "BEGIN EXCLUSIVE") and the statements, says "locked", and
    holds the lock until release()."""

    def __init__(self, path, begin="BEGIN EXCLUSIVE", stmts=(), user=None):
        argv = [PYTHON, "-c", LOCK_HOLDER_SCRIPT, str(path), begin or ""] + list(stmts)
        if user is not None:
            argv = AS_NOBODY + argv
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, bufsize=1)
        self._expect("locked")

    def _readline(self, what, timeout=15):
        import select
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


# --------------------------------------------------------------------------
# Config files

def write_config(path, text):
    with open(path, "w") as f:
        f.write(text)
    return str(path)


def project_version():
    """The version meson.build declares."""
    with open(os.path.join(SOURCE_ROOT, "meson.build")) as f:
        m = re.search(r"version\s*:\s*'([^']+)'", f.read())
    return m.group(1) if m else None


def setfacl(path, entry):
    """Add one entry to path's POSIX access ACL (setfacl -m, package acl)."""
    if shutil.which("setfacl") is None:
        pytest.skip("setfacl is not installed (package acl: scripts/lib.sh installs it)")
    p = subprocess.run(["setfacl", "-m", entry, path], capture_output=True, text=True, timeout=30)
    if p.returncode != 0 and "not supported" in p.stderr:
        pytest.skip(f"no POSIX ACLs on this file system: {p.stderr.strip()}")
    assert p.returncode == 0, f"setfacl -m {entry} {path}: {p.stderr}"


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
