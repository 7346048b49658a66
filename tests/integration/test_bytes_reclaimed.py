# SPDX-License-Identifier: MIT
"""bytes_reclaimed is what the file system got back: the disk space
(allocated blocks, as du counts them) of the database, its -wal and its
-journal before the VACUUM minus after; page_bytes_reclaimed is the page
count's drop times the page size. The two differ exactly where an admin
cares: a file longer than its pages, a big -wal an application left, a
-journal kept by journal_mode=PERSIST. Each figure is checked against what
the test measures itself (helpers.disk_bytes, the same rule), through
sqlite-maintctl's JSON and the daemon's VACUUM_DONE entry."""

import os
import sqlite3

import pytest

from daemon_fixtures import (  # noqa: F401  (fixtures are used by name)
    config_text, daemon, journald, window_with_now)
from helpers import AppProcess, checksum, db_stats, disk_bytes, file_size, make_db, quick_check

KIB = 1024
TAIL = 512 * KIB   # zero bytes written past the last page


def _append_zeros(path, n=TAIL):
    """Make the file longer than its pages with real (allocated) zero
    bytes, as a file system that grows files in chunks, or an application
    that preallocates (SQLITE_FCNTL_CHUNK_SIZE), leaves it. SQLite goes by
    the page count in the header and never reads them."""
    before = os.path.getsize(path)
    with open(path, "ab") as f:
        f.write(b"\0" * n)
        f.flush()
        os.fsync(f.fileno())
    assert os.path.getsize(path) == before + n
    p = db_stats(path)
    assert p["page_count"] * p["page_size"] == before, (p, before)
    assert quick_check(path) == ["ok"]


def _full_db(path, rows=2000):
    """A database without a single free page."""
    con = sqlite3.connect(str(path), isolation_level=None)
    con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, data BLOB)")
    con.execute("BEGIN")
    con.executemany("INSERT INTO t(name, data) VALUES (?, randomblob(1000))", [(f"r{i}",) for i in range(rows)])
    con.execute("COMMIT")
    con.close()
    assert db_stats(path)["freelist_count"] == 0


def _assert_disk_figures(o, measured_before, path):
    """The JSON's disk figures are the test's own measures, and
    bytes_reclaimed is their difference."""
    assert o["disk_bytes_before"] == measured_before, (o["disk_bytes_before"], measured_before)
    assert o["disk_bytes_after"] == disk_bytes(path), (o["disk_bytes_after"], disk_bytes(path))
    assert o["bytes_reclaimed"] == o["disk_bytes_before"] - o["disk_bytes_after"], o


# --------------------------------------------------------------------------
# (a) a file longer than its pages

def test_file_longer_than_its_pages(tmp_path, run_ctl):
    db = tmp_path / "tail.db"
    _full_db(db)
    _append_zeros(db)
    before, cs = db_stats(db), checksum(db)
    disk_before = disk_bytes(db)

    r = run_ctl("--json", "vacuum", "--force", db)
    assert r.rc == 0, r.describe()
    o = r.one()
    assert o["status"] == "ok", r.describe()
    _assert_disk_figures(o, disk_before, db)
    # not a page was freed, yet the file system got the tail back
    assert o["page_bytes_reclaimed"] == 0, o
    assert o["bytes_reclaimed"] >= TAIL - 8 * KIB > 200 * KIB, o
    after = db_stats(db)
    assert after["page_count"] == before["page_count"]
    assert os.path.getsize(db) == after["page_count"] * after["page_size"]
    assert checksum(db) == cs and quick_check(db, "integrity_check") == ["ok"]

    # the human line says the same figure
    _append_zeros(db)
    r = run_ctl("vacuum", "--force", db)
    assert r.rc == 0 and "reclaimed 512.0 KiB" in r.out, r.describe()


def test_daemon_counts_the_tail_too(tmp_path, daemon):
    """Above the threshold (a freelist) and longer than its pages: the
    VACUUM_DONE entry counts both, as the test measures them."""
    dbs, state = tmp_path / "dbs", tmp_path / "state"
    dbs.mkdir()
    db = dbs / "tail.db"
    make_db(str(db) + ".making", 35)
    os.rename(str(db) + ".making", db)
    _append_zeros(db)
    before, cs = db_stats(db), checksum(db, "t")
    disk_before = disk_bytes(db)

    d = daemon.start(config_text(state, [db], vacuum={"window": window_with_now(True)}))
    done = d.wait_for_entry(msgid="VACUUM_DONE", DB_PATH=db, timeout=30)
    after = db_stats(db)
    pages_freed = (before["page_count"] - after["page_count"]) * before["page_size"]
    assert int(done["PAGE_BYTES_RECLAIMED"]) == pages_freed > 0, done
    assert int(done["DISK_BYTES_BEFORE"]) == disk_before, (done, disk_before)
    assert int(done["DISK_BYTES_AFTER"]) == disk_bytes(db), (done, disk_bytes(db))
    assert int(done["BYTES_RECLAIMED"]) == disk_before - disk_bytes(db), done
    # the tail is in it, beyond the pages
    assert int(done["BYTES_RECLAIMED"]) >= pages_freed + TAIL - 8 * KIB, done
    assert os.path.getsize(db) == after["page_count"] * after["page_size"]
    assert checksum(db, "t") == cs and after["freelist_count"] == 0
    assert d.stop() == 0, d.describe()


# --------------------------------------------------------------------------
# (b) the -wal an application left

def test_big_wal_given_back(tmp_path, run_ctl):
    """The application (another process, connection open, no automatic
    checkpoint) rewrote every row several times: its -wal is several times
    the database. The VACUUM's TRUNCATE checkpoint gives it back, and that
    counts."""
    db = tmp_path / "wal.db"
    con = sqlite3.connect(str(db), isolation_level=None)
    assert con.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
    con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, data BLOB)")
    con.executemany("INSERT INTO t(name, data) VALUES (?, randomblob(1000))", [(f"r{i}",) for i in range(1500)])
    con.close()   # checkpointed, -wal removed
    app = AppProcess(db)
    try:
        for _ in range(4):
            app.sql("UPDATE t SET data = randomblob(1000)")
        wal = str(db) + "-wal"
        p = db_stats(db)
        wal_disk = os.stat(wal).st_blocks * 512
        assert file_size(wal) > 3 * p["page_count"] * p["page_size"], (file_size(wal), p)
        assert p["freelist_count"] <= 2, p
        cs = checksum(db)
        disk_before = disk_bytes(db)

        r = run_ctl("--json", "vacuum", "--force", db)
        assert r.rc == 0, r.describe()
        o = r.one()
        assert o["status"] == "ok" and o["checkpoint_busy"] is False, r.describe()
        _assert_disk_figures(o, disk_before, db)
        assert file_size(wal) == 0 and o["wal_size_bytes"] == 0, r.describe()
        # the -wal's space is in the figure; the pages alone are next to nothing
        assert o["page_bytes_reclaimed"] <= 4 * p["page_size"], o
        assert o["bytes_reclaimed"] >= wal_disk - abs(o["disk_bytes_after"] - (disk_before - wal_disk)), o
        assert o["bytes_reclaimed"] > 2 * p["page_count"] * p["page_size"], o
        assert checksum(db) == cs
        # the application goes on
        assert app.query("SELECT count(*) FROM t") == [(1500,)]
        app.sql("INSERT INTO t(name, data) VALUES ('after', x'00')")
    finally:
        app.close()


# --------------------------------------------------------------------------
# (c) a -journal left beside a rollback database

@pytest.mark.parametrize("journal_mode", ["truncate", "persist"])
def test_leftover_journal(tmp_path, run_ctl, journal_mode):
    """journal_mode=TRUNCATE leaves a zero-size -journal, PERSIST one with
    its header zeroed and its size kept: neither is hot, and what the
    -journal held on disk before counts, like the database's own blocks."""
    db = tmp_path / f"{journal_mode}.db"
    con = sqlite3.connect(str(db), isolation_level=None)
    assert con.execute(f"PRAGMA journal_mode={journal_mode.upper()}").fetchone()[0] == journal_mode
    con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, data BLOB)")
    con.execute("BEGIN")
    con.executemany("INSERT INTO t(name, data) VALUES (?, randomblob(2000))", [(f"r{i}",) for i in range(1000)])
    con.execute("COMMIT")
    con.execute("DELETE FROM t WHERE id % 3 = 0")   # a journal of many pages
    con.close()
    journal = str(db) + "-journal"
    assert os.path.exists(journal)
    if journal_mode == "truncate":
        assert file_size(journal) == 0
    else:
        assert file_size(journal) > 100 * KIB
        with open(journal, "rb") as f:
            assert f.read(28) == b"\0" * 28   # the header zeroed: not hot
    journal_disk = os.stat(journal).st_blocks * 512
    before, cs = db_stats(db), checksum(db)
    disk_before = disk_bytes(db)
    assert disk_before == os.stat(db).st_blocks * 512 + journal_disk

    r = run_ctl("--json", "vacuum", "--force", db)
    assert r.rc == 0, r.describe()
    o = r.one()
    assert o["status"] == "ok", r.describe()
    assert "rolled_back_journal" not in o, r.describe()
    _assert_disk_figures(o, disk_before, db)
    after = db_stats(db)
    pages_freed = (before["page_count"] - after["page_count"]) * before["page_size"]
    assert o["page_bytes_reclaimed"] == pages_freed > 0, o
    # whatever became of the -journal is in the figure
    left = os.stat(journal).st_blocks * 512 if os.path.exists(journal) else 0
    assert o["disk_bytes_after"] == os.stat(db).st_blocks * 512 + left, o
    if journal_mode == "persist":
        assert o["bytes_reclaimed"] >= pages_freed + journal_disk - left - 8 * KIB, o
    assert checksum(db) == cs and quick_check(db, "integrity_check") == ["ok"]
