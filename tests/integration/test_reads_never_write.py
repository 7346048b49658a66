# SPDX-License-Identifier: MIT
"""Reads never write. `sqlite-maintctl stats`, `check`, `check --full` and a
daemon poll that finds nothing to do must leave every file of a database
byte-identical (the database, its -wal, -shm and -journal) and create or
remove none, for each way the files can lie on disk:

  rollback          a rollback-journal database at rest
  rollback-writing  the same while a writer holds its transaction open
                    (a -journal that is not hot)
  wal-at-rest       a WAL database with no -wal and no -shm (its last
                    connection closed cleanly)
  wal-app-open      a WAL database an application holds open in another
                    process, idle, its last statement a write: a plain
                    reader would move a reader mark in the -shm
  wal-restored      a -wal with frames and no -shm (a restored copy)
  wal-crashed       a -wal and a -shm nobody holds (copied while the
                    application had them open, as a crash leaves them)
  *-mid-write       the same two, copied while the application was inside
                    a write transaction that spilled uncommitted frames
  wal-crashed-empty an empty -wal and a -shm nobody holds (the
                    application only read before it died)
  hot-journal       a rollback database with a hot journal (its writer
                    killed with SIGKILL mid-transaction, the cache spilled)

and in a directory the reader cannot write (an unprivileged user made
here; a read-only bind mount). Every figure must still be what SQLite says
through a normal connection on a copy of the files."""

import contextlib
import hashlib
import json
import os
import re
import secrets
import select
import shutil
import signal
import sqlite3
import subprocess
import tempfile

import pytest

import helpers
from daemon_fixtures import (  # noqa: F401  (fixtures are used by name)
    MSGID, WAIT, config_text, daemon, format_entries, journald)
from helpers import AppProcess, LockHolder, run_ctl, sha256

READS = (("stats",), ("check",), ("check", "--full"))
# A journal entry of any of these for a database means something was
# decided or done to it: a poll that finds nothing due logs none.
ACTION_IDS = {MSGID[k] for k in ("SCHEDULED", "VACUUM_DONE", "ANALYZE_DONE", "CHECKPOINT_DONE",
                                 "CHECKPOINT_BUSY", "JOB_FAILED", "CORRUPT", "CANNOT_MAINTAIN",
                                 "ROWID_GUARD", "RETRY", "GAVE_UP", "NO_SPACE", "HOT_JOURNAL")}
JOURNAL_MAGIC = bytes.fromhex("d9d505f920a163d7")  # fileformat2.html, "The Rollback Journal"


# --------------------------------------------------------------------------
# Databases

def make_test_db(path, mode):
    """A real database, closed: table t of one-page blobs with every fifth
    row deleted (free pages), table app, and an FTS5 table so that
    `check --full` takes its snapshot path. In WAL mode the close
    checkpoints and removes the -wal and -shm."""
    path = str(path)
    con = sqlite3.connect(path, isolation_level=None)
    try:
        assert con.execute(f"PRAGMA journal_mode={mode}").fetchone()[0] == mode
        con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB)")
        con.execute("CREATE TABLE app(id INTEGER PRIMARY KEY, note TEXT)")
        con.execute("CREATE VIRTUAL TABLE docs USING fts5(body)")
        con.execute("BEGIN")
        con.executemany("INSERT INTO t VALUES(?, randomblob(3000))", [(i,) for i in range(1, 401)])
        con.executemany("INSERT INTO docs(body) VALUES(?)",
                        [(f"word{i} shared text {i % 7}",) for i in range(300)])
        con.execute("COMMIT")
        con.execute("DELETE FROM t WHERE id % 5 = 0")
        assert con.execute("PRAGMA freelist_count").fetchone()[0] > 0
    finally:
        con.close()
    for s in ("-journal", "-wal", "-shm"):
        assert not os.path.exists(path + s), f"{path + s} left behind by a clean close"


# An application's statements, the last one a write; the deletes leave the
# main file's header stale (the freelist is in the -wal).
APP_WRITES = ["DELETE FROM t WHERE id % 7 = 0",
              "INSERT INTO docs(body) VALUES('late words')",
              "INSERT INTO app(note) VALUES('the last statement: a write')"]


def copy_files(src, dst):
    """Copy src and whichever side files exist to dst (+ the same suffixes)."""
    for s in ("", "-journal", "-wal", "-shm"):
        if os.path.exists(str(src) + s):
            shutil.copyfile(str(src) + s, str(dst) + s)


def make_hot_journal(path):
    """A rollback database whose writer was killed (SIGKILL) inside a
    transaction, after the page cache spilled: the journal is synced (its
    magic written) and the database file already holds changed pages.
    Returns the checksum of the rows as committed (what a rollback gives
    back)."""
    path = str(path)
    make_test_db(path, "delete")
    committed, before = helpers.checksum(path), sha256(path)
    w = subprocess.Popen([helpers.PYTHON, "-c", r"""
import sqlite3, sys, time
con = sqlite3.connect(sys.argv[1], isolation_level=None)
con.execute("PRAGMA cache_size=10")      # spill: the journal is synced, the file written
con.execute("BEGIN")
con.execute("UPDATE t SET b = randomblob(3000)")
print("mid-transaction", flush=True)
time.sleep(600)
""", path], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([w.stdout], [], [], 30)
        line = w.stdout.readline().strip() if ready else None
        assert line == "mid-transaction", (line, w.stderr.read() if w.poll() is not None else "")
    finally:
        w.kill()
        w.wait(timeout=15)
        w.stdout.close()
        w.stderr.close()
    assert w.returncode == -signal.SIGKILL
    with open(path + "-journal", "rb") as f:
        assert f.read(8) == JOURNAL_MAGIC, "the journal was not synced: not hot"
    assert sha256(path) != before, "the cache did not spill: the database file is unchanged"
    return committed


# --------------------------------------------------------------------------
# Files

def dir_state(d):
    """Everything a write could change in directory d: the sorted listing,
    and each file's sha256, size, modification and change times."""
    names = sorted(os.listdir(d))
    files = {}
    for n in names:
        p = os.path.join(d, n)
        st = os.lstat(p)
        files[n] = (sha256(p), st.st_size, st.st_mtime_ns, st.st_ctime_ns) if os.path.isfile(p) \
            else ("not a file", st.st_mode)
    return {"listing": hashlib.sha256("\n".join(names).encode()).hexdigest(), "names": names, "files": files}


def assert_unchanged(d, before, after_what, extra=""):
    now = dir_state(d)
    if now == before:
        return
    created = sorted(set(now["names"]) - set(before["names"]))
    removed = sorted(set(before["names"]) - set(now["names"]))
    changed = sorted(n for n in set(now["names"]) & set(before["names"])
                     if now["files"][n] != before["files"][n])
    raise AssertionError(f"{after_what} changed the files in {d}: created {created}, removed {removed}, "
                         f"changed {changed}\n{extra}")


def sqlite_figures(files_prefix, tmp_dir):
    """What SQLite says through a normal read-write connection on a copy of
    the files (the copy may be rolled back or recovered; the originals are
    not touched)."""
    d = tempfile.mkdtemp(prefix="copy-", dir=tmp_dir)
    try:
        copy = os.path.join(d, "copy.db")
        copy_files(files_prefix, copy)
        p = helpers.db_stats(copy, recover=True)
    finally:
        shutil.rmtree(d)
    p["fragmentation"] = round(100.0 * p["freelist_count"] / p["page_count"], 2) if p["page_count"] else 0.0
    return p


def assert_figures(obj, path, want, what):
    """The statistics in a JSON object equal SQLite's on the copy, and the
    files' sizes as they are."""
    got = {k: obj.get(k) for k in ("page_count", "freelist_count", "page_size", "journal_mode", "auto_vacuum")}
    exp = {k: want[k] for k in got}
    assert got == exp, f"{what}: {got} != SQLite's {exp}\n{json.dumps(obj)}"
    helpers.assert_two_decimals(obj["fragmentation_percent"],
                                helpers.expected_fragmentation(want["freelist_count"], want["page_count"]),
                                f"{what}: fragmentation_percent")
    assert obj["estimated_wasted_space_bytes"] == want["freelist_count"] * want["page_size"], (what, obj)
    assert obj["file_size_bytes"] == os.path.getsize(path), (what, obj)
    assert obj["wal_size_bytes"] == helpers.file_size(str(path) + "-wal"), (what, obj)


# --------------------------------------------------------------------------
# The readers

def ctl_reads(d, db, before, user=None):
    """stats, check and check --full of db, each followed by a look at
    every file of d; returns {command: CtlResult}."""
    out = {}
    for args in READS:
        r = ctl(*args, db, user=user)
        assert r.rc in (0, 1), r.describe()
        assert_unchanged(d, before, f"sqlite-maintctl {' '.join(args)}", r.describe())
        out[" ".join(args)] = r
    return out


def ctl(*args, user=None):
    argv = ["--json"] + [str(a) for a in args]
    if user is None:
        return run_ctl(*argv)
    # as a real unprivileged user (setpriv drops every supplementary group)
    cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", helpers.MAINTCTL_BIN] + argv
    env = {k: v for k, v in os.environ.items() if k != "SQLITE_TMPDIR"}
    p = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=helpers.DEFAULT_TIMEOUT)
    res = helpers.CtlResult(cmd, p.returncode, p.stdout, p.stderr, None, 0.0)
    assert p.returncode >= 0, res.describe()
    res.json = [json.loads(line) for line in p.stdout.splitlines() if line.strip()]
    return res


def daemon_config(state, dbs):
    """Nothing is due: thresholds far above the databases', ANALYZE off,
    no checkpoint for the -wal's size."""
    return config_text(state, [{"path": str(p), "checkpoint": {"wal_size_limit": 0, "wal_size_ratio": "0%"}}
                               for p in dbs],
                       vacuum={"threshold": "90%", "urgent_threshold": "95%"}, analyze={"interval": "never"})


def poll_line(path):
    pat = re.compile(re.escape(str(path)) + r": fragmentation (\d+\.\d\d)%, nothing to do \(below-threshold\)$")

    def pred(e):
        return pat.match(str(e.get("MESSAGE", ""))) is not None
    pred.__name__ = f"poll line of {path}"
    return pred, pat


def daemon_poll(daemon, journal, state, d, before, dbs, failing=()):
    """sqlite-maintd --once over dbs: it must have read each (its poll line,
    or for those in failing, the HOT_JOURNAL entry), decided nothing else,
    and left every file of d as it was. Returns {path: fragmentation the
    daemon read}."""
    dm, rc = daemon.run_once(daemon_config(state, dbs))
    got = {}
    for p in dbs:
        if p in failing:
            journal.wait_for_entry(dm.pid, lambda e, p=p: e.get("MESSAGE_ID") == MSGID["HOT_JOURNAL"]
                                   and e.get("DB_PATH") == str(p), WAIT, dm.since_us)
            continue
        pred, pat = poll_line(p)
        e = journal.wait_for_entry(dm.pid, pred, WAIT, dm.since_us, what=pred.__name__)
        got[p] = float(pat.match(e["MESSAGE"]).group(1))
    es = dm.entries()
    for p in dbs:
        acted = [e for e in es if e.get("DB_PATH") == str(p) and e.get("MESSAGE_ID") in ACTION_IDS
                 and not (p in failing and e.get("MESSAGE_ID") == MSGID["HOT_JOURNAL"])]
        assert not acted, f"the daemon acted on {p}:\n" + format_entries(acted)
    assert rc == (1 if failing else 0), dm.describe()
    assert_unchanged(d, before, "a daemon poll (sqlite-maintd --once)", dm.describe())
    return got, dm


# --------------------------------------------------------------------------
# The layouts

LAYOUTS = ("rollback", "rollback-writing", "wal-at-rest", "wal-app-open", "wal-restored", "wal-crashed",
           "wal-restored-mid-write", "wal-crashed-mid-write", "wal-crashed-empty")


@contextlib.contextmanager
def layout(kind, d):
    """Make the files of a layout in directory d; yields the database path
    (with the application running, for wal-app-open)."""
    db = os.path.join(d, f"{kind}.db")
    if kind in ("rollback", "wal-at-rest"):
        make_test_db(db, "delete" if kind == "rollback" else "wal")
        if kind == "wal-at-rest":
            with open(db, "rb") as f:
                assert f.read(20)[18:20] == b"\x02\x02", "not a WAL-format header"
        yield db
        return
    if kind == "wal-app-open":
        make_test_db(db, "wal")
        app = AppProcess(db, stmts=APP_WRITES)
        try:
            assert helpers.file_size(db + "-wal") > 0 and os.path.exists(db + "-shm")
            yield db
        finally:
            app.close()
            app.kill()
        return
    if kind == "rollback-writing":
        # A live writer inside its transaction: a -journal that is not hot.
        make_test_db(db, "delete")
        holder = LockHolder(db, "BEGIN IMMEDIATE", ["DELETE FROM t WHERE id % 3 = 0"])
        try:
            assert helpers.file_size(db + "-journal") > 0
            yield db
        finally:
            holder.release("ROLLBACK")
            holder.close()
            holder.kill()
        return
    # wal-restored*, wal-crashed*: copies of an idle application's files
    # (consistent while it is idle), made in a directory of their own;
    # *-mid-write: the application is inside a write transaction whose
    # pages spilled into the -wal (uncommitted frames, page 1 among them).
    srcdir = tempfile.mkdtemp(prefix="app-", dir=os.path.dirname(d))
    try:
        src = os.path.join(srcdir, "src.db")
        make_test_db(src, "wal")
        empty = kind == "wal-crashed-empty"  # an application that only read
        app = AppProcess(src, stmts=["SELECT count(*) FROM t"] if empty else APP_WRITES)
        try:
            assert (helpers.file_size(src + "-wal") == 0) == empty and os.path.exists(src + "-wal")
            assert os.path.exists(src + "-shm")
            if kind.endswith("-mid-write"):
                committed = helpers.file_size(src + "-wal")
                app.sql("PRAGMA cache_size=5")
                app.sql("BEGIN")
                app.sql("DELETE FROM t WHERE id % 2 = 0")
                assert helpers.file_size(src + "-wal") > committed, "no uncommitted frames in the -wal"
            shutil.copyfile(src, db)
            shutil.copyfile(src + "-wal", db + "-wal")
            if kind.startswith("wal-crashed"):
                shutil.copyfile(src + "-shm", db + "-shm")
        finally:
            app.close()
            app.kill()
    finally:
        shutil.rmtree(srcdir, ignore_errors=True)
    yield db


def _dirs(tmp_path, kind):
    d = tmp_path / "dbs" / kind
    d.mkdir(parents=True)
    return str(d), tmp_path / "state"


@pytest.mark.parametrize("kind", LAYOUTS)
def test_reads_leave_every_file_as_it_was(tmp_path, daemon, journald, kind):
    d, state = _dirs(tmp_path, kind)
    with layout(kind, d) as db:
        before = dir_state(d)
        want = sqlite_figures(db, tmp_path)
        assert want["freelist_count"] > 0

        res = ctl_reads(d, db, before)
        for cmd, r in res.items():
            o = r.one()
            assert r.rc == 0 and o["status"] == "ok", r.describe()
            assert o["path"] == db

        polled, _ = daemon_poll(daemon, journald, state, d, before, [db])
        assert abs(polled[db] - want["fragmentation"]) < 0.006, (polled, want)

        if kind == "wal-app-open":
            # The scenario is sharp: a plain read-only reader in another
            # process does write (it sets a reader mark in the -shm).
            shm = sha256(db + "-shm")
            p = subprocess.run([helpers.PYTHON, "-c", "import sqlite3, sys; c = sqlite3.connect("
                                "'file:' + sys.argv[1] + '?mode=ro', uri=True); "
                                "print(c.execute('SELECT count(*) FROM t').fetchone()[0]); c.close()", db],
                               capture_output=True, text=True, timeout=60)
            assert p.returncode == 0, p.stderr
            assert sha256(db + "-shm") != shm, "a plain reader left the -shm alone: the scenario proves nothing"


@pytest.mark.parametrize("kind", LAYOUTS)
def test_read_figures_are_sqlites(tmp_path, kind):
    """stats and check report what SQLite itself says, through a normal
    connection on a copy (the header of a WAL database with frames is
    stale; the journal mode of a WAL database at rest is still wal)."""
    d, _ = _dirs(tmp_path, kind)
    with layout(kind, d) as db:
        want = sqlite_figures(db, tmp_path)
        assert want["journal_mode"] == ("delete" if kind.startswith("rollback") else "wal"), want
        for args in (("stats",), ("check",)):
            r = ctl(*args, db)
            assert r.rc == 0, r.describe()
            assert_figures(r.one(), db, want, f"sqlite-maintctl {' '.join(args)} ({kind})")


def test_hot_journal_reported_not_rolled_back(tmp_path, daemon, journald):
    d, state = _dirs(tmp_path, "hot-journal")
    db = os.path.join(d, "hot.db")
    committed = make_hot_journal(db)
    before = dir_state(d)

    res = ctl_reads(d, db, before)
    for cmd, r in res.items():
        o = r.one()
        assert r.rc == 1 and o["status"] == "hot_journal", r.describe()
        assert "hot journal" in o.get("error", ""), r.describe()
        for k in ("page_count", "freelist_count", "fragmentation_percent"):
            assert k not in o, f"{cmd} reported {k} of a database it could not read\n{r.describe()}"
    # the human form says so too
    r = run_ctl("stats", db)
    assert r.rc == 1 and "hot_journal" in r.err, r.describe()
    assert_unchanged(d, before, "sqlite-maintctl stats", r.describe())

    _, dm = daemon_poll(daemon, journald, state, d, before, [db], failing=[db])
    failed = dm.entries(msgid="HOT_JOURNAL", DB_PATH=db)
    assert failed and failed[0]["REASON"] == "hot_journal" and failed[0]["PRIORITY"] == "4", format_entries(failed)

    # What a rollback gives back, from a normal open of a copy.
    want = sqlite_figures(db, tmp_path)

    # An operation that writes anyway rolls it back first, says so, and
    # goes on: the rows are the committed ones, vacuumed.
    r = run_ctl("vacuum", "--force", db)
    assert r.rc == 0, r.describe()
    assert "vacuumed" in r.out, r.describe()
    assert not os.path.exists(db + "-journal")
    assert helpers.quick_check(db, "integrity_check") == ["ok"]
    assert helpers.checksum(db) == committed, "the rows are not the committed ones"
    after = helpers.db_stats(db)
    assert after["freelist_count"] == 0
    assert after["page_count"] == want["page_count"] - want["freelist_count"], (after, want)
    assert re.search(r"(?i)rolled back|hot journal", r.out + r.err), \
        "vacuum rolled back a hot journal without saying so\n" + r.describe()


def test_hot_journal_vacuum_json(tmp_path):
    """The same through --json: the rollback is done and the VACUUM runs."""
    db = str(tmp_path / "hot.db")
    committed = make_hot_journal(db)
    want = sqlite_figures(db, tmp_path)
    r = run_ctl("--json", "vacuum", "--force", db)
    o = r.one()
    assert r.rc == 0 and o["status"] == "ok", r.describe()
    helpers.assert_two_decimals(o["fragmentation_before_percent"],
                                helpers.expected_fragmentation(want["freelist_count"], want["page_count"]),
                                "fragmentation_before_percent")
    assert o["freelist_count"] == 0 and o["page_count"] == want["page_count"] - want["freelist_count"], o
    assert helpers.checksum(db) == committed
    assert helpers.quick_check(db, "integrity_check") == ["ok"]


# --------------------------------------------------------------------------
# A directory the reader cannot write

RO_LAYOUTS = ("rollback", "wal-at-rest", "wal-restored", "wal-crashed")


def make_ro_set(d):
    """Every layout that needs no live application, plus a hot journal, in d."""
    dbs = {}
    for kind in RO_LAYOUTS:
        with layout(kind, d) as db:
            dbs[kind] = db
    dbs["hot-journal"] = os.path.join(d, "hot-journal.db")
    make_hot_journal(dbs["hot-journal"])
    return dbs


def check_ro_reads(d, dbs, before, tmp_dir, user=None):
    for kind, db in dbs.items():
        res = ctl_reads(d, db, before, user=user)
        if kind == "hot-journal":
            for r in res.values():
                assert r.rc == 1 and r.one()["status"] == "hot_journal", r.describe()
            continue
        want = sqlite_figures(db, tmp_dir)
        r = res["stats"]
        assert r.rc == 0 and r.one()["status"] == "ok", r.describe()
        assert r.one()["page_count"] == want["page_count"], (kind, r.describe(), want)
        assert r.one()["freelist_count"] == want["freelist_count"], (kind, r.describe(), want)
        for cmd in ("check", "check --full"):
            r = res[cmd]
            o = r.one()
            if kind == "wal-restored" and o["status"] == "permission_denied":
                # A -wal without its -shm: the check needs an exclusive
                # lock, which a read-only descriptor cannot take; refusing
                # is the safe answer (nothing was written either way).
                assert r.rc == 1, r.describe()
                continue
            assert r.rc == 0 and o["status"] == "ok", f"{kind}\n{r.describe()}"


@pytest.fixture
def unprivileged_user():
    """A real user made with useradd for this test, removed (userdel) after."""
    if os.geteuid() != 0:
        pytest.skip("creating a user needs root")
    for tool in ("useradd", "userdel", "setpriv"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    name = f"mtro{os.getpid() % 100000}{secrets.token_hex(2)}"
    p = subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
                        "--shell", "/usr/sbin/nologin", name], capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        pytest.skip(f"useradd failed: {p.stderr.strip()}")
    try:
        yield name
    finally:
        subprocess.run(["userdel", name], capture_output=True, timeout=60)
        assert subprocess.run(["id", name], capture_output=True).returncode != 0, f"user {name} not removed"


def test_read_only_directory_unprivileged_user(tmp_path, unprivileged_user):
    user = unprivileged_user
    base = tempfile.mkdtemp(prefix="maintd-ro-", dir="/tmp")
    try:
        os.chmod(base, 0o755)
        d = os.path.join(base, "dbs")
        os.mkdir(d)
        dbs = make_ro_set(d)
        for n in os.listdir(d):
            os.chmod(os.path.join(d, n), 0o644)       # theirs to read, not to write
        os.chmod(d, 0o755)                              # root's directory: they cannot create a file
        probe = subprocess.run(["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups",
                                "touch", os.path.join(d, "probe")], capture_output=True, timeout=30)
        assert probe.returncode != 0, f"user {user} can write {d}"
        before = dir_state(d)
        check_ro_reads(d, dbs, before, str(tmp_path), user=user)
        assert_unchanged(d, before, f"the reads as user {user}")
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def ro_bind_mount(tmp_path):
    """ro_bind_mount(src) -> a read-only bind mount of src, unmounted at teardown."""
    if os.geteuid() != 0:
        pytest.skip("a bind mount needs root")
    mounts = []

    def mount(src):
        dst = tmp_path / f"ro{len(mounts)}"
        dst.mkdir()
        p = subprocess.run(["mount", "--bind", str(src), str(dst)], capture_output=True, text=True, timeout=30)
        if p.returncode != 0:
            pytest.skip(f"cannot bind-mount here: {p.stderr.strip()}")
        mounts.append(dst)
        p = subprocess.run(["mount", "-o", "remount,bind,ro", str(dst)], capture_output=True, text=True,
                           timeout=30)
        if p.returncode != 0:
            pytest.skip(f"cannot make a bind mount read-only here: {p.stderr.strip()}")
        return str(dst)

    yield mount
    for m in reversed(mounts):
        if subprocess.run(["umount", str(m)], capture_output=True, timeout=30).returncode != 0:
            subprocess.run(["umount", "-l", str(m)], capture_output=True, timeout=30)


def test_read_only_bind_mount(tmp_path, daemon, journald, ro_bind_mount):
    src = tmp_path / "src"
    src.mkdir()
    make_ro_set(str(src))
    d = ro_bind_mount(src)
    with pytest.raises(OSError):
        open(os.path.join(d, "probe"), "w").close()
    dbs = {k: os.path.join(d, f"{k}.db") for k in RO_LAYOUTS + ("hot-journal",)}
    before = dir_state(d)
    check_ro_reads(d, dbs, before, str(tmp_path))

    polled, _ = daemon_poll(daemon, journald, tmp_path / "state", d, before, list(dbs.values()),
                            failing=[dbs["hot-journal"]])
    for kind in RO_LAYOUTS:
        want = sqlite_figures(dbs[kind], str(tmp_path))
        assert abs(polled[dbs[kind]] - want["fragmentation"]) < 0.006, (kind, polled, want)
    assert_unchanged(d, before, "everything")


# --------------------------------------------------------------------------
# A -journal beside a WAL database in use

def test_journal_beside_wal_database_in_use(tmp_path):
    """An application holds a WAL database open (its -wal and -shm live),
    and a -journal lies beside it: 1024 zero bytes, left by the days the
    database was in rollback mode, not hot (its header is zero). The reads
    go through the -shm read-only and change nothing."""
    d, _ = _dirs(tmp_path, "wal-journal")
    with layout("wal-app-open", d) as db:
        with open(db + "-journal", "wb") as f:
            f.write(bytes(1024))
        before = dir_state(d)
        want = sqlite_figures(db, tmp_path)
        for cmd, r in ctl_reads(d, db, before).items():
            o = r.one()
            assert r.rc == 0 and o["status"] == "ok", r.describe()
            if cmd == "stats":
                assert_figures(o, db, want, "sqlite-maintctl stats of a WAL database with a -journal")
        assert_unchanged(d, before, "the reads")
        assert sorted(os.listdir(d)) == sorted(os.path.basename(db) + s for s in ("", "-journal", "-shm", "-wal"))


def test_hot_journal_beside_wal_files_is_reported(tmp_path):
    """A genuinely hot journal (its writer killed mid-transaction after the
    cache spilled) with a -wal and a -shm beside the database: any open
    rolls the journal back first, so it is what stats reports."""
    d, _ = _dirs(tmp_path, "hot-wal")
    db = os.path.join(d, "hot.db")
    make_hot_journal(db)
    # the -wal and -shm of a WAL database an application had open (idle)
    src = os.path.join(d, "src.db")
    make_test_db(src, "wal")
    app = AppProcess(src, stmts=["SELECT count(*) FROM t"])
    try:
        shutil.copyfile(src + "-wal", db + "-wal")
        shutil.copyfile(src + "-shm", db + "-shm")
    finally:
        app.close()
        app.kill()
    os.unlink(src)
    assert sorted(os.listdir(d)) == ["hot.db", "hot.db-journal", "hot.db-shm", "hot.db-wal"], os.listdir(d)
    before = dir_state(d)
    for cmd, r in ctl_reads(d, db, before).items():
        o = r.one()
        assert r.rc == 1 and o["status"] == "hot_journal", r.describe()
        assert "page_count" not in o, r.describe()
    assert_unchanged(d, before, "the reads")


# --------------------------------------------------------------------------
# An idle WAL database is not read again

def test_idle_wal_database_costs_nothing(tmp_path, daemon, journald):
    """A WAL database an application holds open has frames in its -wal, so
    its header cannot be trusted: it is read from its wal-index (the -shm
    the application keeps current) and its -wal, with no SQLite and no job
    process. While its files stay as they were, it is not read at all
    (inotify saw no change). A commit changes the -wal, and the next poll
    reads the new figures, again without SQLite."""
    from helpers import fragment_to, make_db

    db = str(tmp_path / "held.db")
    con = make_db(db, 5, mode="wal", rows=200, keep_open=True)
    done = re.compile(r"poll done: (\d+) read, (\d+) unchanged \(inotify\), (\d+) WAL databases? read without "
                      r"SQLite \(wal-index or -wal\), (\d+) through SQLite")

    def round_(read, unchanged, wal, fallback):
        def pred(e):
            m = done.match(str(e.get("MESSAGE", "")))
            return bool(m) and tuple(int(x) for x in m.groups()) == (read, unchanged, wal, fallback)
        return pred
    try:
        assert os.path.getsize(db + "-wal") > 32, "the deletes should sit in the -wal"
        d = daemon.start(config_text(tmp_path / "state", [db], poll_interval="1s",
                                     vacuum={"threshold": "90%", "urgent_threshold": "95%"}))
        d.wait_for_entry(round_(1, 0, 1, 0))
        d.wait_for_entry(round_(0, 1, 0, 0))
        # the application commits: 40% of the pages free, in the -wal
        got = fragment_to(con, 40)
        assert abs(got - 40) <= 3, got
        seen = re.compile(re.escape(f"{db}: fragmentation ") + r"(\d+\.\d+)%")

        def new_figures(e):
            m = seen.match(str(e.get("MESSAGE", "")))
            return bool(m) and float(m.group(1)) >= 35

        e = d.wait_for_entry(new_figures)
        assert "nothing to do" in e["MESSAGE"], format_entries([e])
        # read without SQLite, and once read, left alone again
        later = len(d.entries(round_(0, 1, 0, 0)))
        d.wait_for_entries(later + 1, round_(0, 1, 0, 0))
        assert not d.entries(lambda x: (m := done.match(str(x.get("MESSAGE", "")))) and int(m.group(4)) > 0), \
            format_entries(d.entries())
        assert not d.entries(message="unchanged since its last statistics read")
    finally:
        con.close()


def test_crashed_wal_read_leaves_change_times(tmp_path, daemon, journald):
    """A WAL database whose writer was killed: a -wal of several MiB (past
    what the daemon scans itself) and a -shm no connection holds. Read by
    sqlite-maintctl stats and by a daemon poll (both through SQLite, in a
    job process, as root, the files root's): SQLite's unix VFS would chown
    the -wal and -shm to the owner they have (os_unix.c robustFchown()),
    which moves their change time; nothing may, not even that."""
    import time
    db = str(tmp_path / "crashed.db")
    code = ("import os, sqlite3, sys\n"
            "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
            "c.execute('PRAGMA journal_mode=WAL'); c.execute('PRAGMA wal_autocheckpoint=0')\n"
            "c.execute('CREATE TABLE t(x)')\n"
            "for i in range(800): c.execute('INSERT INTO t VALUES(randomblob(3000))')\n"
            "c.execute('DELETE FROM t WHERE rowid % 2 = 0')\n"
            "os.kill(os.getpid(), 9)\n")
    subprocess.run(["/usr/bin/python3", "-c", code, db], timeout=60)
    assert os.path.getsize(db + "-wal") > 2 * 1024 * 1024 and os.path.exists(db + "-shm")
    # the clock past the files' last change, so that a change now would show
    newest = max(os.stat(db + s).st_ctime_ns for s in ("", "-wal", "-shm"))
    while time.time_ns() <= newest + 50_000_000:
        time.sleep(0.01)
    before = helpers.snapshot([db], times=True)
    r = helpers.run_ctl("--json", "stats", db)
    assert r.rc == 0, r.describe()
    assert r.json[0]["journal_mode"] == "wal", r.describe()
    assert helpers.changed(before, helpers.snapshot([db], times=True)) == []
    # --dry-run: the statistics read runs, nothing it decides does
    d = daemon.start(config_text(tmp_path / "state", [db], poll_interval="1s"), "--dry-run")
    d.wait_for_entry(message="1 through SQLite")
    d.wait_for_poll_rounds(2)
    assert d.stop() == 0
    assert helpers.changed(before, helpers.snapshot([db], times=True)) == []
