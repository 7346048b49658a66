# SPDX-License-Identifier: MIT
"""Helpers for tests/integration/test_hostile.py: the corpus of corrupt and
hostile databases from SQLite's own test suite (used through copies only),
a runner for sqlite-maintctl that survives whatever bytes a hostile database
puts in its output, and ways to damage a real database file the way disks,
bugs and attackers do."""

import csv
import dataclasses
import hashlib
import json
import os
import random
import shutil
import sqlite3
import subprocess
import time

import helpers

CORPUS = os.path.normpath(os.path.join(helpers.SOURCE_ROOT, "..", "shared", "corpus", "sqlite-testsuite"))
CORPUS_DB = os.path.join(CORPUS, "db")
MANIFEST = os.path.join(CORPUS, "MANIFEST.tsv")

# What a sanitizer (or glibc) prints when the program did something wrong.
CRASH_MARKERS = ("AddressSanitizer", "LeakSanitizer", "UndefinedBehaviorSanitizer", "runtime error:",
                 "MemorySanitizer", "ThreadSanitizer", "stack smashing detected", "double free",
                 "corrupted size", "malloc(): ", "free(): ", "Segmentation fault")

# Exit statuses of sqlite-maintctl (README): 0 ok, 1 failure, 3 corrupt,
# 4 no space, 5 busy; 2 is a usage error, never the answer to a database.
CTL_EXIT = {0, 1, 3, 4, 5}

# The statuses a database that fails quick_check may get: anything but
# "ok" (or "skipped", which --force rules out) means it was not vacuumed.
REFUSED_KINDS = {"corrupt", "cannot_maintain", "not_a_database"}


def crash_lines(text):
    """Lines of text that show a crash or a sanitizer report."""
    return [line for line in text.splitlines() if any(m in line for m in CRASH_MARKERS)]


# --------------------------------------------------------------------------
# The corpus

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
# Running sqlite-maintctl on hostile input

@dataclasses.dataclass
class Run:
    args: list
    rc: int
    out: bytes
    err: str
    elapsed: float
    json: list        # one dict per stdout line, decoded leniently (surrogateescape)
    bad_lines: list   # stdout lines that are not a JSON object

    def describe(self, limit=6000):
        out = self.out.decode("utf-8", "replace")
        return (f"command: {' '.join(map(str, self.args))}\nexit status: {self.rc} ({self.elapsed:.2f}s)\n"
                f"--- stdout ---\n{out[-limit:]}--- stderr ---\n{self.err[-limit:]}")

    def by_path(self):
        return {o.get("path"): o for o in self.json}

    def invalid_utf8_lines(self):
        bad = []
        for line in self.out.splitlines():
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as e:
                path = line.split(b'"path":"', 1)[-1].split(b'"', 1)[0].decode("utf-8", "replace")
                bad.append(f"{os.path.basename(path)}: bytes {line[max(0, e.start - 40):e.start + 20]!r} ({e.reason})")
        return bad


def run_ctl_raw(*args, user=None, timeout=60):
    """sqlite-maintctl --json ... with stdout kept as bytes: a database can
    put any byte in an error message. Fails the test (not an exception from
    deep inside subprocess) on a timeout, a signal or a sanitizer report."""
    argv = [helpers.MAINTCTL_BIN] + [str(a) for a in args]
    if user is not None:
        assert user == "nobody"
        argv = helpers.AS_NOBODY + argv
    env = dict(os.environ)
    env.pop("SQLITE_TMPDIR", None)
    t0 = time.monotonic()
    try:
        p = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"sqlite-maintctl hung: still running after {timeout}s (killed)\n"
                             f"command: {' '.join(argv)}\n--- stdout so far ---\n"
                             f"{(e.stdout or b'').decode('utf-8', 'replace')[-3000:]}") from None
    elapsed = time.monotonic() - t0
    err = p.stderr.decode("utf-8", "replace")
    objs, bad = [], []
    for line in p.stdout.splitlines():
        if not line.strip():
            continue
        try:
            o = json.loads(line.decode("utf-8", "surrogateescape"))
        except json.JSONDecodeError:
            bad.append(line[:200])
            continue
        if isinstance(o, dict):
            objs.append(o)
        else:
            bad.append(line[:200])
    r = Run(argv, p.returncode, p.stdout, err, elapsed, objs, bad)
    assert p.returncode >= 0, f"sqlite-maintctl was killed by signal {-p.returncode}\n" + r.describe()
    assert p.returncode not in (134, 139), f"sqlite-maintctl crashed (exit {p.returncode})\n" + r.describe()
    assert not crash_lines(err), "sanitizer or crash report on stderr:\n" + "\n".join(crash_lines(err)[:20]) \
        + "\n" + r.describe()
    assert p.returncode in CTL_EXIT, f"undocumented exit status {p.returncode}\n" + r.describe()
    return r


def assert_one_object_each(run, paths):
    """One JSON object per database, in order, each with a documented status."""
    got = [o.get("path") for o in run.json]
    want = [str(p) for p in paths]
    assert not run.bad_lines, f"stdout lines that are not JSON objects: {run.bad_lines[:5]}\n" + run.describe()
    assert got == want, (f"expected {len(want)} JSON objects, one per database in order, got {len(got)}; "
                         f"missing: {sorted(set(want) - set(got))[:10]}, extra: {sorted(set(got) - set(want))[:10]}\n"
                         + run.describe())
    odd = {o["path"]: o.get("status") for o in run.json if o.get("status") not in helpers.STATUS_WORDS}
    assert not odd, f"statuses outside the documented set: {odd}"


def distribution(objs):
    d = {}
    for o in objs:
        d[o.get("status")] = d.get(o.get("status"), 0) + 1
    return dict(sorted(d.items(), key=lambda kv: -kv[1]))


# --------------------------------------------------------------------------
# What a user would check on a file

def sha(path):
    """sha256 of a file, or a word for what it is when it is not one."""
    path = str(path)
    if os.path.islink(path):
        return "symlink->" + os.readlink(path)
    if not os.path.exists(path):
        return None
    if not os.path.isfile(path):
        return "not-a-file"
    return helpers.sha256(path)


def snapshot(paths):
    """{file: sha} for each path and its -journal/-wal/-shm (None: absent)."""
    out = {}
    for p in paths:
        for f in (str(p), str(p) + "-journal", str(p) + "-wal", str(p) + "-shm"):
            out[f] = sha(f)
    return out


def database_of(f):
    """The database a file of snapshot() belongs to (itself or the one of
    its -journal, -wal or -shm)."""
    for s in ("-journal", "-wal", "-shm"):
        if f.endswith(s):
            return f[:-len(s)]
    return f


def changed(before, after):
    return sorted(f for f in before if before[f] != after.get(f))


def rows_checksum(path, tables=None):
    """sha256 over every row of every ordinary table (virtual tables are
    left out: reading a corrupt FTS index is not what is measured here; its
    shadow tables are ordinary tables and are counted). Read-only."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    h = hashlib.sha256()
    try:
        names = [r[0] for r in con.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND sql NOT LIKE 'CREATE VIRTUAL%' "
            "AND name NOT LIKE 'sqlite_%' ORDER BY name")]
        for name in (tables or names):
            rows = sorted(con.execute(f'SELECT * FROM "{name}"').fetchall(), key=repr)
            h.update(f"{name} {len(rows)}\n".encode())
            for r in rows:
                h.update(repr(r).encode())
    finally:
        con.close()
    return h.hexdigest()


def quick_check_ok(path):
    return helpers.quick_check(str(path)) == ["ok"]


# --------------------------------------------------------------------------
# Damage

def page_size(path):
    with open(path, "rb") as f:
        f.seek(16)
        v = int.from_bytes(f.read(2), "big")
    return 65536 if v == 1 else v


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


def first_trunk(path):
    with open(path, "rb") as f:
        f.seek(32)
        return int.from_bytes(f.read(4), "big")


def damage_freelist(path, how):
    """how: "trunk-is-in-use" (the header's first trunk page is a page a
    table uses), "leaf-count" (the trunk claims 0xFFFFFF00 leaves),
    "next-trunk-in-use" (the trunk's next pointer is a table page)."""
    ps = page_size(path)
    trunk = first_trunk(path)
    assert trunk, f"{path} has no freelist"
    leaves = [p for p, name, t in btree_pages(path) if t == "leaf" and name == "t"]
    victim = leaves[len(leaves) // 2]
    with open(path, "r+b") as f:
        if how == "trunk-is-in-use":
            f.seek(32)
            f.write(victim.to_bytes(4, "big"))
        elif how == "leaf-count":
            f.seek((trunk - 1) * ps + 4)
            f.write((0xFFFFFF00).to_bytes(4, "big"))
        elif how == "next-trunk-in-use":
            f.seek((trunk - 1) * ps)
            f.write(victim.to_bytes(4, "big"))
        else:
            raise ValueError(how)


def write_at(path, offset, data):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def truncate(path, size):
    with open(path, "r+b") as f:
        f.truncate(size)


# --------------------------------------------------------------------------
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


def make_wal_pair(workdir, dest, make_db):
    """dest (a WAL database, T1 checkpointed into it) and dest-wal holding
    two more commits: T2 (deletes a third of t, app row 't2') and T3 (app
    row 't3', shrinks some blobs). Written by an application in another
    process. Returns {frames_t2, frames_t3: frame indexes of each commit,
    rows_t1, rows_t2: rows_checksum of the database after T1, after T2}."""
    src = os.path.join(str(workdir), "walsrc.db")
    t2_copy = os.path.join(str(workdir), "after-t2.db")
    make_db(src, 5, rows=300, mode="wal")  # T1, checkpointed at close
    rows_t1 = rows_checksum(src)
    p = subprocess.Popen([helpers.PYTHON, "-c", WAL_APP, src, str(dest), t2_copy], stdin=subprocess.PIPE,
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
    rows_t2 = rows_checksum(t2_copy)
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


def t_ids(path):
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return [r[0] for r in con.execute("SELECT id FROM t ORDER BY id")]
    finally:
        con.close()


# --------------------------------------------------------------------------
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


def make_unusual_db(path, kind, fragment_to, frag=35):
    """A healthy database with table t (one 4000-byte blob a row, as
    daemon_fixtures.make_db) plus the schema of UNUSUAL_SCHEMAS[kind], then
    rows of t deleted until frag percent of its pages are free."""
    con = sqlite3.connect(str(path), isolation_level=None)
    try:
        con.create_function("app_norm", 1, lambda s: (s or "").lower(), deterministic=True)
        con.create_collation("app_nocase", lambda a, b: (a.lower() > b.lower()) - (a.lower() < b.lower()))
        assert con.execute("PRAGMA journal_mode=DELETE").fetchone()[0] == "delete"
        con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB)")
        con.execute("BEGIN")
        con.executemany("INSERT INTO t(id, b) VALUES(?, randomblob(4000))", [(i,) for i in range(1, 401)])
        con.execute("COMMIT")
        for s in UNUSUAL_SCHEMAS[kind]:
            con.execute(s)
        got = fragment_to(con, frag)
    finally:
        con.close()
    return got
