# SPDX-License-Identifier: MIT
"""sqlite-maintctl vacuum / analyze / check on healthy databases: the free
pages are gone, every row is still there, the WAL is truncated, thresholds
and the config decide what is skipped."""

import json
import os
import pwd
import random
import sqlite3

import pytest

from helpers import (
    PYTHON, assert_stats_match, assert_two_decimals, checksum, db_stats, disk_bytes, expected_fragmentation,
    file_size, header_field, quick_check, run_as_nobody, sha256, write_config)


def _assert_vacuumed(r, db, before, checksum_before, mode, disk_before=None):
    """What a user checks after a VACUUM that should have run. disk_before:
    the files' disk space just before sqlite-maintctl ran."""
    assert r.rc == 0, r.describe()
    o = r.one()
    assert o["status"] == "ok", r.describe()
    assert o["operation"] == "vacuum"
    after = db_stats(db)
    # the free pages are gone and the data is identical
    assert after["freelist_count"] == 0, after
    assert after["page_count"] < before["page_count"]
    assert checksum(db) == checksum_before
    assert quick_check(db) == ["ok"]
    assert after["journal_mode"] == mode
    # the JSON object describes the database after the operation
    assert_stats_match(o, db, mode=mode)
    assert o["freelist_count"] == 0
    assert o["fragmentation_after_percent"] == 0
    assert_two_decimals(o["fragmentation_before_percent"],
                        expected_fragmentation(before["freelist_count"], before["page_count"]),
                        "fragmentation_before_percent")
    # the pages freed, and what the file system got back: the files' disk
    # space before and after, as du counts it
    freed = (before["page_count"] - after["page_count"]) * before["page_size"]
    assert o["page_bytes_reclaimed"] == freed, (o["page_bytes_reclaimed"], freed)
    assert o["disk_bytes_after"] == disk_bytes(db), (o["disk_bytes_after"], disk_bytes(db))
    if disk_before is not None:
        assert o["disk_bytes_before"] == disk_before, (o["disk_bytes_before"], disk_before)
    assert o["bytes_reclaimed"] == o["disk_bytes_before"] - o["disk_bytes_after"] > 0, o
    assert isinstance(o["duration_ms"], int) and o["duration_ms"] >= 0
    assert o["checkpoint_busy"] is False
    assert "error" not in o
    return o


def test_vacuum_rollback_mode(tmp_path, run_ctl, make_fragmented_db):
    db = tmp_path / "rollback.db"
    make_fragmented_db(db, mode="delete", delete_fraction=0.35)
    before = db_stats(db)
    assert 0.3 < before["freelist_count"] / before["page_count"] < 0.4
    cs = checksum(db)
    size_before = os.path.getsize(db)
    disk_before = disk_bytes(db)

    r = run_ctl("--json", "vacuum", db)
    _assert_vacuumed(r, db, before, cs, "delete", disk_before)
    assert os.path.getsize(db) < size_before
    assert not os.path.exists(str(db) + "-journal")


def test_vacuum_wal_mode_truncates_wal(tmp_path, run_ctl, make_fragmented_db):
    """The application keeps its connection open (idle): the deletes are in
    the -wal, and after the VACUUM the -wal must be empty while that
    connection is still open (the last close would hide a missing
    checkpoint by deleting the file)."""
    db = tmp_path / "wal.db"
    app = make_fragmented_db(db, mode="wal", delete_fraction=0.35, keep_open=True)
    wal = str(db) + "-wal"
    before = db_stats(db)
    assert file_size(wal) > 0
    assert header_field(db, 36) != before["freelist_count"]
    cs = checksum(db)
    disk_before = disk_bytes(db)  # the -wal with the deletes counts: it is given back too

    r = run_ctl("--json", "vacuum", db)
    o = _assert_vacuumed(r, db, before, cs, "wal", disk_before)
    assert file_size(wal) == 0, f"-wal is {file_size(wal)} bytes after vacuum"
    assert o["wal_size_bytes"] == 0
    # still a WAL database on disk (header bytes 18/19 == 2)
    assert header_field(db, 18, 1) == 2 and header_field(db, 19, 1) == 2
    # the application's connection goes on working and sees the same data
    assert app.query("SELECT count(*) FROM t") == [(975,)]
    app.sql("INSERT INTO t(name, data) VALUES('after', x'00')")
    assert file_size(wal) > 0
    assert quick_check(db) == ["ok"]


@pytest.mark.parametrize("mode", ["delete", "wal"])
def test_vacuum_below_threshold_is_skipped_then_forced(tmp_path, run_ctl, make_fragmented_db, mode):
    db = tmp_path / f"low-{mode}.db"
    app = make_fragmented_db(db, mode=mode, delete_fraction=0.10, keep_open=(mode == "wal"))
    before = db_stats(db)
    assert 0.05 < before["freelist_count"] / before["page_count"] < 0.15
    digest, wal_digest = sha256(db), (sha256(str(db) + "-wal") if app else None)
    cs = checksum(db)

    r = run_ctl("--json", "vacuum", db)
    assert r.rc == 0, r.describe()
    o = r.one()
    assert o["status"] == "skipped", r.describe()
    assert o["operation"] == "vacuum"
    assert sha256(db) == digest
    if app:
        assert sha256(str(db) + "-wal") == wal_digest
    assert db_stats(db)["freelist_count"] == before["freelist_count"]
    assert_two_decimals(o["fragmentation_percent"],
                        expected_fragmentation(before["freelist_count"], before["page_count"]),
                        "fragmentation_percent")

    r = run_ctl("--json", "vacuum", "--force", db)
    _assert_vacuumed(r, db, before, cs, mode)
    if app:
        assert file_size(str(db) + "-wal") == 0


def test_vacuum_small_reclaim_is_skipped(tmp_path, run_ctl, make_fragmented_db):
    """Half the pages are free but that is far less than min_reclaim (1 MiB)."""
    db = tmp_path / "small.db"
    make_fragmented_db(db, rows=150, delete_fraction=0.5)
    before = db_stats(db)
    assert before["freelist_count"] / before["page_count"] > 0.3
    assert before["freelist_count"] * before["page_size"] < 1024 * 1024
    digest = sha256(db)
    r = run_ctl("--json", "vacuum", db)
    assert r.rc == 0, r.describe()
    assert r.one()["status"] == "skipped", r.describe()
    assert sha256(db) == digest

    cs = checksum(db)
    r = run_ctl("--json", "vacuum", "--force", db)
    _assert_vacuumed(r, db, before, cs, "delete")


def _unrelated_entry(tmp_path):
    """A databases: list naming some other database (the loader wants one)."""
    return f"databases:\n  - path: {json.dumps(str(tmp_path / 'unrelated.db'))}\n"


def test_vacuum_threshold_alone_decides(tmp_path, run_ctl, make_fragmented_db):
    """min_reclaim 0 in the defaults: a 10% database is still below the
    default 20% threshold."""
    db = tmp_path / "ten.db"
    make_fragmented_db(db, delete_fraction=0.10)
    conf = write_config(tmp_path / "maintd.yaml",
                        "defaults:\n  vacuum:\n    min_reclaim: 0\n" + _unrelated_entry(tmp_path))
    digest = sha256(db)
    r = run_ctl("-c", conf, "--json", "vacuum", db)
    assert r.rc == 0, r.describe()
    assert r.one()["status"] == "skipped", r.describe()
    assert sha256(db) == digest


def test_vacuum_per_database_threshold_from_config(tmp_path, run_ctl, make_fragmented_db):
    db = tmp_path / "ten.db"
    other = tmp_path / "other.db"
    make_fragmented_db(db, delete_fraction=0.10)
    make_fragmented_db(other, delete_fraction=0.10, seed=2)
    conf = write_config(tmp_path / "maintd.yaml", (
        "databases:\n"
        f"  - path: {json.dumps(str(db))}\n"
        "    vacuum:\n"
        "      threshold: 5%\n"
        "      min_reclaim: 0\n"))
    before = db_stats(db)
    cs = checksum(db)
    other_digest = sha256(other)

    r = run_ctl("-c", conf, "--json", "vacuum", db)
    _assert_vacuumed(r, db, before, cs, "delete")

    # a database the entry does not match keeps the default threshold
    r = run_ctl("-c", conf, "--json", "vacuum", other)
    assert r.rc == 0, r.describe()
    assert r.one()["status"] == "skipped", r.describe()
    assert sha256(other) == other_digest


def test_vacuum_config_defaults_threshold(tmp_path, run_ctl, make_fragmented_db):
    """The defaults: section applies to databases no entry names; options
    may also come after the command."""
    db = tmp_path / "ten.db"
    make_fragmented_db(db, delete_fraction=0.10)
    conf = write_config(tmp_path / "maintd.yaml",
                        "defaults:\n  vacuum:\n    threshold: 8%\n    min_reclaim: 0\n"
                        + _unrelated_entry(tmp_path))
    before, cs = db_stats(db), checksum(db)
    r = run_ctl("vacuum", db, "--json", "-c", conf)
    _assert_vacuumed(r, db, before, cs, "delete")


RICH_SCHEMA = """
PRAGMA auto_vacuum=NONE;
CREATE TABLE doc(id INTEGER PRIMARY KEY, body TEXT NOT NULL,
  kind TEXT GENERATED ALWAYS AS (json_extract(body, '$.kind')) VIRTUAL,
  size INTEGER GENERATED ALWAYS AS (length(body)) STORED,
  pad BLOB);
CREATE INDEX doc_kind ON doc(json_extract(body, '$.kind'));
CREATE INDEX doc_gen ON doc(kind);
CREATE TABLE audit(id INTEGER PRIMARY KEY, doc_id INTEGER, action TEXT);
CREATE TRIGGER doc_ins AFTER INSERT ON doc BEGIN
  INSERT INTO audit(doc_id, action) VALUES (new.id, 'insert'); END;
CREATE TRIGGER doc_del AFTER DELETE ON doc BEGIN
  INSERT INTO audit(doc_id, action) VALUES (old.id, 'delete'); END;
CREATE VIEW doc_kinds AS SELECT kind, count(*) AS n FROM doc GROUP BY kind;
CREATE VIRTUAL TABLE doc_fts USING fts5(title, content);
"""


def _make_rich_db(path, mode):
    con = sqlite3.connect(str(path), isolation_level=None)
    con.executescript(RICH_SCHEMA)
    if mode == "wal":
        con.execute("PRAGMA journal_mode=WAL")
    r = random.Random(7)
    words = ["alpha", "beta", "gamma", "delta", "omega", "sigma"]
    con.execute("BEGIN")
    for i in range(1, 1001):
        con.execute("INSERT INTO doc(id, body, pad) VALUES (?, ?, ?)",
                    (i, json.dumps({"kind": f"k{i % 7}", "n": i}), r.randbytes(r.randint(1000, 3000))))
        con.execute("INSERT INTO doc_fts(rowid, title, content) VALUES (?, ?, ?)",
                    (i, f"title {i}", " ".join(r.choice(words) for _ in range(40))))
    con.execute("COMMIT")
    con.execute("DELETE FROM doc WHERE id % 3 = 0")
    con.execute("DELETE FROM doc_fts WHERE rowid % 3 = 0")
    con.close()


@pytest.mark.parametrize("mode", ["delete", "wal"])
def test_vacuum_rich_schema(tmp_path, run_ctl, mode):
    """JSON functions in an index and a generated column (which break with
    trusted_schema=OFF), triggers, a view and FTS5: vacuumed, not corrupt."""
    db = tmp_path / f"rich-{mode}.db"
    _make_rich_db(db, mode)
    before = db_stats(db)
    assert before["freelist_count"] > 0
    cs = checksum(db)

    r = run_ctl("--json", "vacuum", "--force", db)
    _assert_vacuumed(r, db, before, cs, mode)
    assert file_size(str(db) + "-wal") == 0

    con = sqlite3.connect(str(db), isolation_level=None)
    try:
        assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        con.execute("INSERT INTO doc_fts(doc_fts) VALUES ('integrity-check')")
        assert con.execute("SELECT count(*) FROM doc_fts WHERE doc_fts MATCH 'title'").fetchone()[0] == 667
        assert con.execute("SELECT count(*) FROM doc WHERE json_extract(body, '$.kind') = 'k3'").fetchone()[0] > 0
        assert sum(n for _, n in con.execute("SELECT * FROM doc_kinds")) == 667
        con.execute("INSERT INTO doc(body) VALUES ('{\"kind\": \"new\"}')")   # trigger still fires
        assert con.execute("SELECT action FROM audit ORDER BY id DESC LIMIT 1").fetchone() == ("insert",)
    finally:
        con.close()

    # and the checks agree it is healthy
    for args in (["check"], ["check", "--full"]):
        r = run_ctl("--json", *args, db)
        assert r.rc == 0, r.describe()
        assert r.one()["status"] == "ok", r.describe()


def test_vacuum_app_function_index_is_not_corrupt(tmp_path, run_ctl):
    """An index on an application-defined function: SQLite says 'no such
    function'. That is "cannot maintain", never "corrupt", and the database
    is left alone."""
    db = tmp_path / "appfn.db"
    con = sqlite3.connect(str(db), isolation_level=None)
    con.create_function("app_upper", 1, lambda x: x.upper() if x else x, deterministic=True)
    con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, a TEXT, pad BLOB)")
    con.execute("CREATE INDEX t_f ON t(app_upper(a))")
    con.executemany("INSERT INTO t(a, pad) VALUES (?, zeroblob(2000))", [(f"a{i}",) for i in range(1000)])
    con.execute("DELETE FROM t WHERE id % 2 = 0")
    con.close()
    digest = sha256(db)

    r = run_ctl("--json", "vacuum", "--force", db)
    o = r.one()
    assert o["status"] == "cannot_maintain", r.describe()
    assert r.rc == 1, r.describe()
    assert o.get("error"), r.describe()
    assert sha256(db) == digest

    r = run_ctl("--json", "check", "--full", db)
    assert r.one()["status"] not in ("corrupt", "ok"), r.describe()
    assert r.one()["status"] == "cannot_maintain", r.describe()
    assert r.rc == 1, r.describe()


def test_analyze_creates_sqlite_stat1(tmp_path, run_ctl, make_fragmented_db):
    db = tmp_path / "an.db"
    make_fragmented_db(db, rows=500, delete_fraction=0.2)
    con = sqlite3.connect(str(db))
    assert con.execute("SELECT count(*) FROM sqlite_master WHERE name='sqlite_stat1'").fetchone()[0] == 0
    con.close()
    cs = checksum(db)

    r = run_ctl("--json", "analyze", db)
    assert r.rc == 0, r.describe()
    o = r.one()
    assert o["status"] == "ok", r.describe()
    assert o["operation"] == "analyze"
    assert isinstance(o["duration_ms"], int) and o["duration_ms"] >= 0

    con = sqlite3.connect(str(db))
    try:
        stat = con.execute("SELECT tbl, idx, stat FROM sqlite_stat1").fetchall()
    finally:
        con.close()
    assert any(t == "t" and i == "t_name" for t, i, _ in stat), stat
    assert checksum(db) == cs
    assert quick_check(db) == ["ok"]


@pytest.mark.parametrize("mode", ["delete", "wal"])
@pytest.mark.parametrize("full", [False, True])
def test_check_healthy(tmp_path, run_ctl, make_fragmented_db, mode, full):
    db = tmp_path / "ok.db"
    app = make_fragmented_db(db, mode=mode, rows=400, keep_open=(mode == "wal"))
    digest = sha256(db)
    r = run_ctl("--json", "check", *(["--full"] if full else []), db)
    assert r.rc == 0, r.describe()
    o = r.one()
    assert o["status"] == "ok", r.describe()
    assert o["operation"] == "check"
    assert o.get("problems", []) == []
    assert isinstance(o["duration_ms"], int) and o["duration_ms"] >= 0
    assert sha256(db) == digest
    if app:
        assert app.query("SELECT count(*) FROM t") == [(240,)]


def test_check_full_finds_what_quick_misses(tmp_path, run_ctl):
    """An index whose entries do not match its definition passes quick_check
    but not integrity_check: check --full must run the full check."""
    db = tmp_path / "idx.db"
    con = sqlite3.connect(str(db), isolation_level=None)
    con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, a TEXT, b TEXT)")
    con.executemany("INSERT INTO t(a, b) VALUES (?, ?)", [(f"a{i}", f"b{i}") for i in range(200)])
    con.execute("CREATE INDEX t_a ON t(a)")
    con.execute("PRAGMA writable_schema=ON")
    con.execute("UPDATE sqlite_master SET sql='CREATE INDEX t_a ON t(b)' WHERE name='t_a'")
    con.execute("PRAGMA writable_schema=OFF")
    con.close()
    assert quick_check(db) == ["ok"]
    assert quick_check(db, "integrity_check") != ["ok"]
    digest = sha256(db)

    r = run_ctl("--json", "check", db)
    assert r.rc == 0, r.describe()
    assert r.one()["status"] == "ok", r.describe()

    r = run_ctl("--json", "check", "--full", db)
    assert r.rc == 3, r.describe()
    o = r.one()
    assert o["status"] == "corrupt", r.describe()
    assert any("t_a" in p for p in o["problems"]), r.describe()
    assert sha256(db) == digest


# --------------------------------------------------------------------------
# The application's journal mode: a -journal it keeps is kept

# The application, as user nobody: its own journal_mode, one INSERT, the
# number of its rows.
APP_WRITE = """
import sqlite3, sys
path, mode = sys.argv[1], sys.argv[2]
con = sqlite3.connect(path, isolation_level=None, timeout=10)
assert con.execute(f"PRAGMA journal_mode={mode}").fetchone()[0] == mode
con.execute("INSERT INTO t(name, data) VALUES('app', x'00')")
print(con.execute("SELECT count(*) FROM t WHERE name = 'app'").fetchone()[0])
con.close()
"""


def _nobody_writes(db, mode):
    return run_as_nobody([PYTHON, "-c", APP_WRITE, str(db), mode])


def _assert_journal_kept(db, mode, uid):
    """The -journal is there, still the application's, and not hot."""
    j = str(db) + "-journal"
    assert os.path.exists(j), f"{j} was removed: user nobody cannot create it again"
    st = os.stat(j)
    assert st.st_uid == uid, f"{j} is owned by uid {st.st_uid} now"
    if mode == "truncate":
        assert st.st_size == 0, f"TRUNCATE leaves an empty -journal, this one has {st.st_size} bytes"
    else:
        assert st.st_size > 0
        with open(j, "rb") as f:
            assert f.read(28) == bytes(28), "a PERSIST -journal's header is zeroed after a commit"


@pytest.mark.parametrize("mode", ["persist", "truncate"])
def test_kept_journal_survives_vacuum_and_analyze(nobody_dir, run_ctl, make_fragmented_db, mode):
    """The database and its -journal belong to user nobody, in root's 0755
    directory: nobody can write the database only because the -journal is
    already there (journal_mode PERSIST or TRUNCATE keeps it). A VACUUM or
    ANALYZE that deleted it would leave the application unable to write."""
    nobody = pwd.getpwnam("nobody")
    db = os.path.join(nobody_dir, f"{mode}.db")
    make_fragmented_db(db, delete_fraction=0.35)
    con = sqlite3.connect(db, isolation_level=None)
    try:
        assert con.execute(f"PRAGMA journal_mode={mode}").fetchone()[0] == mode
        con.execute("INSERT INTO t(name, data) VALUES('setup', x'00')")
    finally:
        con.close()
    for f in (db, db + "-journal"):
        os.chown(f, nobody.pw_uid, nobody.pw_gid)
    _assert_journal_kept(db, mode, nobody.pw_uid)
    # the premise: nobody cannot create a file there, yet writes the database
    p = run_as_nobody(["touch", os.path.join(nobody_dir, "probe")])
    assert p.returncode != 0, f"user nobody can create files in {nobody_dir}"
    p = _nobody_writes(db, mode)
    assert p.returncode == 0 and p.stdout.strip() == "1", p.stderr
    before, cs = db_stats(db), checksum(db)

    r = run_ctl("--json", "vacuum", "--force", db)
    assert r.rc == 0 and r.one()["status"] == "ok", r.describe()
    assert db_stats(db)["freelist_count"] == 0 and db_stats(db)["page_count"] < before["page_count"]
    assert checksum(db) == cs
    _assert_journal_kept(db, mode, nobody.pw_uid)
    p = _nobody_writes(db, mode)
    assert p.returncode == 0 and p.stdout.strip() == "2", f"the application cannot write after the VACUUM: {p.stderr}"

    r = run_ctl("--json", "analyze", db)
    assert r.rc == 0 and r.one()["status"] == "ok", r.describe()
    assert [t["verdict"] for t in r.one()["tables"]] == ["analyzed"], r.describe()   # it wrote
    _assert_journal_kept(db, mode, nobody.pw_uid)
    p = _nobody_writes(db, mode)
    assert p.returncode == 0 and p.stdout.strip() == "3", f"the application cannot write after ANALYZE: {p.stderr}"
    assert quick_check(db, "integrity_check") == ["ok"]
    assert os.stat(db).st_uid == nobody.pw_uid


def test_delete_mode_leaves_no_journal(tmp_path, run_ctl, make_fragmented_db):
    db = tmp_path / "delete.db"
    make_fragmented_db(db, delete_fraction=0.35)
    assert db_stats(db)["journal_mode"] == "delete"
    for args in (("vacuum", "--force"), ("analyze",)):
        r = run_ctl("--json", *args, db)
        assert r.rc == 0 and r.one()["status"] == "ok", r.describe()
        assert not os.path.exists(str(db) + "-journal"), f"{' '.join(args)} left a -journal behind"
    assert db_stats(db)["freelist_count"] == 0
