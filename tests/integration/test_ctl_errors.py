# SPDX-License-Identifier: MIT
"""sqlite-maintctl on databases that cannot or must not be vacuumed:
corruption, not a database, missing, directories, symlinks, permissions,
locks held by another process, too little space; and the ownership of the
side files it leaves when it runs as root."""

import os
import pwd
import grp
import subprocess
import sys
import time

import pytest

import helpers
from helpers import (
    PYTHON, checksum, db_stats, file_size, make_corrupt_db, mentions_figure, open_files, quick_check,
    run_as_nobody, sha256, side_files)

FAILURES = {"busy", "corrupt", "not_a_database", "cannot_maintain", "no_space",
            "io_error", "permission_denied", "missing", "interrupted", "error"}

OPERATIONS = [
    pytest.param(["stats"], id="stats"),
    pytest.param(["vacuum", "--force"], id="vacuum"),
    pytest.param(["analyze"], id="analyze"),
    pytest.param(["check"], id="check"),
]


def _failure(r, status, rc):
    """One JSON object with this failure status and an error message, and the exit code."""
    o = r.one()
    assert o["status"] == status, r.describe()
    assert r.rc == rc, r.describe()
    assert isinstance(o.get("error"), str) and o["error"], "no error message\n" + r.describe()
    return o


# ---------------------------------------------------------------- corruption

def test_vacuum_corrupt_database_is_refused(tmp_path, run_ctl):
    db = tmp_path / "corrupt.db"
    victims = make_corrupt_db(db)
    digest = sha256(db)

    r = run_ctl("--json", "vacuum", "--force", db)
    o = r.one()
    assert o["status"] == "corrupt", r.describe()
    assert r.rc == 3, r.describe()
    assert o["operation"] == "vacuum"
    assert isinstance(o.get("problems"), list) and o["problems"], r.describe()
    assert all(isinstance(p, str) and p for p in o["problems"])
    assert any(f"page {v}" in p for p in o["problems"] for v in victims), \
        f"no problem names a damaged page {victims}\n" + r.describe()
    # never vacuumed: not one byte changed
    assert sha256(db) == digest
    assert side_files(str(db)) == []


@pytest.mark.parametrize("full", [False, True])
def test_check_corrupt_database(tmp_path, run_ctl, full):
    db = tmp_path / "corrupt.db"
    make_corrupt_db(db)
    digest = sha256(db)
    r = run_ctl("--json", "check", *(["--full"] if full else []), db)
    o = r.one()
    assert o["status"] == "corrupt", r.describe()
    assert r.rc == 3, r.describe()
    assert o["operation"] == "check"
    assert o["problems"], r.describe()
    assert sha256(db) == digest


def test_corrupt_human_output(tmp_path, run_ctl):
    db = tmp_path / "corrupt.db"
    make_corrupt_db(db)
    r = run_ctl("vacuum", "--force", db)
    assert r.rc == 3, r.describe()
    assert f"sqlite-maintctl: {db}: " in r.err, r.describe()
    assert str(db) not in r.out, r.describe()


# ---------------------------------------------------------------- not a database, missing, directory

@pytest.mark.parametrize("op", OPERATIONS)
def test_text_file_is_not_a_database(tmp_path, run_ctl, op):
    f = tmp_path / "notes.txt"
    f.write_text("This is not an SQLite database, only some text.\n" * 200)
    digest = sha256(f)
    r = run_ctl("--json", *op, f)
    _failure(r, "not_a_database", 1)
    assert sha256(f) == digest
    assert side_files(str(f)) == []


@pytest.mark.parametrize("op", OPERATIONS)
def test_missing_path(tmp_path, run_ctl, op):
    db = tmp_path / "missing.db"
    r = run_ctl("--json", *op, db)
    o = _failure(r, "missing", 1)
    assert o["path"] == str(db)
    # the tool never creates a database
    assert os.listdir(tmp_path) == []


def test_missing_directory(tmp_path, run_ctl):
    db = tmp_path / "nodir" / "missing.db"
    r = run_ctl("--json", "vacuum", "--force", db)
    _failure(r, "missing", 1)
    assert not (tmp_path / "nodir").exists()


@pytest.mark.parametrize("op", OPERATIONS)
def test_directory_path(tmp_path, run_ctl, op):
    d = tmp_path / "adir.db"
    d.mkdir()
    r = run_ctl("--json", *op, d)
    o = r.one()
    assert o["status"] == "not_a_database", r.describe()
    assert r.rc == 1, r.describe()
    assert o.get("error"), r.describe()
    assert d.is_dir() and os.listdir(d) == []
    assert sorted(os.listdir(tmp_path)) == ["adir.db"]


@pytest.mark.parametrize("op", OPERATIONS)
def test_symlink_is_refused(tmp_path, run_ctl, make_fragmented_db, op):
    target = tmp_path / "real.db"
    make_fragmented_db(target, rows=600, delete_fraction=0.4)
    link = tmp_path / "link.db"
    link.symlink_to(target)
    digest = sha256(target)
    r = run_ctl("--json", *op, link)
    o = r.one()
    assert o["status"] == "permission_denied", r.describe()
    assert r.rc == 1, r.describe()
    assert o["path"] == str(link)
    assert sha256(target) == digest
    assert link.is_symlink()
    assert sorted(os.listdir(tmp_path)) == ["link.db", "real.db"]


# ---------------------------------------------------------------- permissions

@pytest.mark.parametrize("op", OPERATIONS)
def test_unreadable_database_as_nobody(nobody_dir, run_ctl, make_fragmented_db, op):
    db = os.path.join(nobody_dir, "root-only.db")
    make_fragmented_db(db, rows=600, delete_fraction=0.4)
    os.chmod(db, 0o600)
    digest = sha256(db)
    r = run_ctl("--json", *op, db, user="nobody", cwd=nobody_dir)
    _failure(r, "permission_denied", 1)
    assert sha256(db) == digest
    assert sorted(os.listdir(nobody_dir)) == ["root-only.db"]


def test_read_only_database_vacuum_as_nobody(nobody_dir, run_ctl, make_fragmented_db):
    """nobody may read but not write the database or its directory: a
    vacuum is refused as a permission problem, never reported as corrupt."""
    db = os.path.join(nobody_dir, "readonly.db")
    make_fragmented_db(db, rows=600, delete_fraction=0.4)
    os.chmod(db, 0o644)
    digest = sha256(db)
    r = run_ctl("--json", "vacuum", "--force", db, user="nobody", cwd=nobody_dir)
    _failure(r, "permission_denied", 1)
    assert sha256(db) == digest
    assert sorted(os.listdir(nobody_dir)) == ["readonly.db"]


# ---------------------------------------------------------------- locks

def _long_backoff_config(tmp_path):
    """A config whose retry backoff is 10 minutes: a run told to make one
    attempt that backed off anyway would run into run_ctl's timeout."""
    p = tmp_path / "long-backoff.yaml"
    p.write_text("defaults:\n  retry:\n    initial_backoff: 10m\n    max_backoff: 10m\n"
                 f"databases:\n  - path: {tmp_path}/unmatched/*.db\n")
    return p


def _in_backoff(pid, db):
    """True while process pid sleeps between two attempts: in nanosleep,
    with db closed (SQLite's busy handler sleeps with the database open)."""
    try:
        with open(f"/proc/{pid}/wchan") as f:
            if "nanosleep" not in f.read():
                return False
    except FileNotFoundError:
        return False
    return all(f != str(db) for f, _ in open_files(pid))


def test_locked_rollback_database_is_busy(tmp_path, run_ctl, make_fragmented_db, lock_holder):
    db = tmp_path / "locked.db"
    make_fragmented_db(db, mode="delete", delete_fraction=0.4)
    digest = sha256(db)
    holder = lock_holder(db, "BEGIN EXCLUSIVE")

    # one attempt, no backoff: with a 10 min backoff configured, a wait
    # would end in run_ctl's timeout
    r = run_ctl("-c", _long_backoff_config(tmp_path), "--json", "--attempts", "1", "vacuum", "--force", db)
    o = r.one()
    assert o["status"] == "busy", r.describe()
    assert r.rc == 5, r.describe()
    assert o["error"].startswith("still busy after 1 attempt (the last: "), r.describe()
    assert sha256(db) == digest

    holder.release("ROLLBACK")
    before, cs = db_stats(db), checksum(db)
    r = run_ctl("--json", "--attempts", "1", "vacuum", "--force", db)
    assert r.rc == 0, r.describe()
    assert r.one()["status"] == "ok", r.describe()
    after = db_stats(db)
    assert after["freelist_count"] == 0 and after["page_count"] < before["page_count"]
    assert checksum(db) == cs


def test_locked_wal_database_is_busy(tmp_path, run_ctl, make_fragmented_db, lock_holder):
    """WAL: the application holds a write transaction with an uncommitted
    insert. The vacuum gives up quickly; once the insert is committed the
    vacuum succeeds, keeps the row and truncates the -wal although the
    application's connection stays open."""
    db = tmp_path / "locked-wal.db"
    make_fragmented_db(db, mode="wal", delete_fraction=0.4)
    holder = lock_holder(db, "BEGIN IMMEDIATE",
                         ["INSERT INTO t(name, data) VALUES ('held', x'01')"])

    r = run_ctl("-c", _long_backoff_config(tmp_path), "--json", "--attempts", "1", "vacuum", "--force", db)
    o = r.one()
    assert o["status"] == "busy", r.describe()
    assert r.rc == 5, r.describe()
    assert o["error"].startswith("still busy after 1 attempt (the last: "), r.describe()

    holder.release("COMMIT")
    before = db_stats(db)
    assert before["freelist_count"] > 0
    cs = checksum(db)
    r = run_ctl("--json", "--attempts", "1", "vacuum", "--force", db)
    assert r.rc == 0, r.describe()
    o = r.one()
    assert o["status"] == "ok", r.describe()
    assert o["checkpoint_busy"] is False, r.describe()
    assert db_stats(db)["freelist_count"] == 0
    assert checksum(db) == cs
    assert file_size(str(db) + "-wal") == 0
    holder.sql("INSERT INTO t(name, data) VALUES ('after', x'02')")
    con_rows = subprocess.run(
        [PYTHON, "-c", "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]);"
         "print(c.execute(\"SELECT name FROM t WHERE name IN ('held','after') ORDER BY id\").fetchall())",
         str(db)], capture_output=True, text=True, timeout=30)
    assert con_rows.stdout.strip() == "[('held',), ('after',)]", con_rows


@pytest.mark.parametrize("attempts,n", [
    ("2", 2),
    (None, 3),              # the default
])
def test_busy_retries_with_backoff(tmp_path, run_ctl, make_fragmented_db, lock_holder, attempts, n):
    db = tmp_path / "retry.db"
    make_fragmented_db(db, rows=300)
    lock_holder(db, "BEGIN EXCLUSIVE")
    args = ["--json"] + (["--attempts", attempts] if attempts else []) + ["vacuum", "--force", db]
    r = run_ctl(*args)
    o = r.one()
    assert o["status"] == "busy", r.describe()
    assert r.rc == 5, r.describe()
    assert o["error"].startswith(f"still busy after {n} attempts (the last: "), r.describe()
    # Between the attempts it slept the built-in backoff, 1 s doubling,
    # jitter taking up to a quarter off: at least 0.75 s, then 1.5 s. A
    # sleep is no shorter on a faster machine; how much longer the run
    # takes is bounded only by run_ctl's timeout.
    slept = sum(0.75 * 2 ** k for k in range(n - 1))
    assert r.elapsed >= slept, f"{n} attempts in {r.elapsed:.2f}s: less than {slept} s of backoff\n" \
        + r.describe()


def test_busy_then_released_during_backoff(tmp_path, ctl_bin, make_fragmented_db, lock_holder):
    """The lock goes away while the tool backs off: a later attempt succeeds."""
    db = tmp_path / "released.db"
    make_fragmented_db(db, rows=600)
    holder = lock_holder(db, "BEGIN EXCLUSIVE")
    env = dict(os.environ)
    env.pop("SQLITE_TMPDIR", None)
    # attempts enough (backoffs of 1, 2, 4 and 8 s) that the lock is gone
    # before the last one even if the test is slow to see the first backoff
    p = subprocess.Popen([ctl_bin, "--json", "--attempts", "5", "vacuum", "--force", str(db)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        # the first attempt met the lock: the tool sleeps before the next
        deadline = time.monotonic() + 30
        while not _in_backoff(p.pid, db):
            assert p.poll() is None and time.monotonic() < deadline, \
                f"sqlite-maintctl never backed off (exit {p.poll()})"
            time.sleep(0.005)
        holder.release("ROLLBACK")
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0, (p.returncode, out, err)
    import json
    assert json.loads(out.splitlines()[0])["status"] == "ok", out
    assert db_stats(db)["freelist_count"] == 0


# ---------------------------------------------------------------- several databases

def test_several_databases_one_bad_does_not_stop_the_rest(tmp_path, run_ctl, make_fragmented_db):
    corrupt, missing, good = tmp_path / "corrupt.db", tmp_path / "missing.db", tmp_path / "good.db"
    make_corrupt_db(corrupt)
    make_fragmented_db(good, delete_fraction=0.4, seed=5)
    corrupt_digest = sha256(corrupt)
    before, cs = db_stats(good), checksum(good)

    r = run_ctl("--json", "vacuum", corrupt, missing, good)
    assert r.rc == 3, r.describe()
    assert [o["path"] for o in r.json] == [str(corrupt), str(missing), str(good)], r.describe()
    st = r.by_path()
    assert st[str(corrupt)]["status"] == "corrupt"
    assert st[str(missing)]["status"] == "missing"
    assert st[str(good)]["status"] == "ok", r.describe()
    assert sha256(corrupt) == corrupt_digest
    assert not missing.exists()
    after = db_stats(good)
    assert after["freelist_count"] == 0 and after["page_count"] < before["page_count"]
    assert checksum(good) == cs


def test_exit_status_precedence(tmp_path, run_ctl, make_fragmented_db, lock_holder):
    """3 before 5 before 1, whatever the order of the databases."""
    corrupt, locked, missing, good = (tmp_path / n for n in ("c.db", "l.db", "m.db", "g.db"))
    notadb = tmp_path / "text.db"
    notadb.write_text("hello\n" * 100)
    make_corrupt_db(corrupt)
    make_fragmented_db(locked, rows=300)
    make_fragmented_db(good, rows=300)
    lock_holder(locked, "BEGIN EXCLUSIVE")
    cases = [
        ([missing, locked, corrupt], 3),
        ([locked, missing], 5),
        ([missing, locked], 5),
        ([good, notadb], 1),
        ([missing, good], 1),
        ([good], 0),
    ]
    for dbs, rc in cases:
        r = run_ctl("--json", "--attempts", "1", "check", *dbs)
        assert r.rc == rc, r.describe()
        assert [o["path"] for o in r.json] == [str(d) for d in dbs], r.describe()


# ---------------------------------------------------------------- space

def _avail(path):
    s = os.statvfs(path)
    return s.f_bavail * s.f_frsize


def test_no_space_on_database_filesystem(tmp_path, tmpfs, run_ctl, make_fragmented_db):
    small = tmpfs("8m", name="smallfs")
    bigtmp = tmp_path / "bigtmp"
    bigtmp.mkdir()
    db = small / "big.db"
    make_fragmented_db(db, rows=1200, delete_fraction=0.4)
    size = os.path.getsize(db)
    assert size > 3 * 1024 * 1024
    needed, avail = helpers.db_space_needed(db)[0], _avail(small)
    assert avail < needed
    digest = sha256(db)

    r = run_ctl("--json", "vacuum", "--force", db, env={"SQLITE_TMPDIR": bigtmp})
    o = _failure(r, "no_space", 4)
    msg = o["error"]
    assert mentions_figure(msg, needed), f"needed {needed:.0f} not named: {msg}"
    assert mentions_figure(msg, avail), f"available {avail} not named: {msg}"
    assert str(small) in msg, msg
    assert str(bigtmp) in msg, msg
    assert sha256(db) == digest
    assert side_files(str(db)) == []
    assert os.listdir(bigtmp) == []

    r = run_ctl("vacuum", "--force", db, env={"SQLITE_TMPDIR": bigtmp})
    assert r.rc == 4, r.describe()
    assert f"sqlite-maintctl: {db}: " in r.err, r.describe()


@pytest.mark.parametrize("var", ["SQLITE_TMPDIR", "TMPDIR"])
def test_no_space_in_temp_directory(tmp_path, tmpfs, run_ctl, make_fragmented_db, var):
    small = tmpfs("1m", name="smalltmp")
    dbdir = tmp_path / "dbdir"      # not a prefix of the temp dir's path
    dbdir.mkdir()
    db = dbdir / "db.db"
    make_fragmented_db(db, rows=600, delete_fraction=0.4)
    needed, avail = helpers.db_space_needed(db)[1], _avail(small)
    assert avail < needed
    digest = sha256(db)
    env = {"SQLITE_TMPDIR": None, "TMPDIR": None, var: small}

    r = run_ctl("--json", "vacuum", "--force", db, env=env)
    o = _failure(r, "no_space", 4)
    msg = o["error"]
    assert str(small) in msg, msg
    assert str(dbdir) in msg, msg
    assert mentions_figure(msg, needed), f"needed {needed:.0f} not named: {msg}"
    assert mentions_figure(msg, avail, rel=0.25), f"available {avail} not named: {msg}"
    assert sha256(db) == digest
    assert os.listdir(small) == []
    assert sorted(os.listdir(dbdir)) == ["db.db"]


def test_sqlite_tmpdir_wins_over_tmpdir(tmp_path, tmpfs, run_ctl, make_fragmented_db):
    small = tmpfs("1m", name="smalltmp")
    bigtmp = tmp_path / "bigtmp"
    bigtmp.mkdir()
    db = tmp_path / "db.db"
    make_fragmented_db(db, rows=600, delete_fraction=0.4)
    r = run_ctl("--json", "vacuum", "--force", db, env={"SQLITE_TMPDIR": bigtmp, "TMPDIR": small})
    assert r.rc == 0, r.describe()
    assert r.one()["status"] == "ok", r.describe()
    assert db_stats(db)["freelist_count"] == 0


def test_no_space_exit_status_precedence(tmp_path, tmpfs, run_ctl, make_fragmented_db, lock_holder):
    """4 comes after 3 and before 5 and 1."""
    small = tmpfs("8m", name="smallfs")
    bigtmp = tmp_path / "bigtmp"
    bigtmp.mkdir()
    full = small / "full.db"
    make_fragmented_db(full, rows=1200, delete_fraction=0.4)
    locked, missing, corrupt = tmp_path / "l.db", tmp_path / "m.db", tmp_path / "c.db"
    make_fragmented_db(locked, rows=300)
    make_corrupt_db(corrupt)
    lock_holder(locked, "BEGIN EXCLUSIVE")
    env = {"SQLITE_TMPDIR": bigtmp}
    for dbs, rc in [([missing, locked, full], 4), ([full, corrupt], 3)]:
        r = run_ctl("--json", "--attempts", "1", "vacuum", "--force", *dbs, env=env)
        assert r.rc == rc, r.describe()
        assert r.by_path()[str(full)]["status"] == "no_space", r.describe()


# ---------------------------------------------------------------- ownership

NOBODY_INSERT = (
    "import sqlite3, sys\n"
    "c = sqlite3.connect(sys.argv[1], timeout=5)\n"
    "c.execute(\"INSERT INTO t(name, data) VALUES ('by-nobody', x'00')\")\n"
    "c.commit()\n"
    "print(c.execute(\"SELECT count(*) FROM t WHERE name='by-nobody'\").fetchone()[0])\n"
)


def _assert_owned_by_nobody(paths):
    nobody, nogroup = pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid
    for p in paths:
        st = os.stat(p)
        assert (st.st_uid, st.st_gid) == (nobody, nogroup), \
            f"{p} is owned by {st.st_uid}:{st.st_gid}, not nobody:nogroup"


@pytest.mark.parametrize("mode,app_open", [("wal", False), ("wal", True), ("delete", False)])
def test_side_files_keep_the_database_owner(nobody_dir, run_ctl, make_fragmented_db, lock_holder,
                                            mode, app_open):
    """Run as root on a database owned by nobody; afterwards the database
    and every side file are nobody's, and nobody can still write."""
    d = os.path.join(nobody_dir, "app")
    os.mkdir(d)
    db = os.path.join(d, "app.db")
    make_fragmented_db(db, mode=mode, rows=800, delete_fraction=0.4)
    nobody, nogroup = pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid
    os.chown(d, nobody, nogroup)
    os.chown(db, nobody, nogroup)
    holder = None
    if app_open:
        # the application (as nobody) keeps its connection, so -wal and -shm stay
        holder = lock_holder(db, "", ["SELECT count(*) FROM t"], user="nobody")

    for args in (["vacuum", "--force"], ["analyze"], ["check", "--full"]):
        r = run_ctl("--json", *args, db)
        assert r.rc == 0, r.describe()
        assert r.one()["status"] == "ok", r.describe()
        _assert_owned_by_nobody([db] + side_files(db))

    if holder:
        assert side_files(db), "the application's connection should keep its side files"
        holder.sql("INSERT INTO t(name, data) VALUES ('by-app', x'00')")
    p = run_as_nobody([PYTHON, "-c", NOBODY_INSERT, db], cwd=d)
    assert p.returncode == 0 and p.stdout.strip() == "1", p
    _assert_owned_by_nobody([db] + side_files(db))
    assert quick_check(db) == ["ok"]
