# SPDX-License-Identifier: MIT
"""sqlite-maintctl stats: the figures must be the ones SQLite itself gives,
in both journal modes, including a WAL database whose main-file header is
stale, and stats must not change the database."""

import os
import re

import pytest

from helpers import assert_stats_match, db_stats, file_size, header_field, sha256, side_files


@pytest.mark.parametrize("page_size", [4096, 8192])
def test_stats_rollback_fragmented(tmp_path, run_ctl, make_fragmented_db, page_size):
    db = tmp_path / "rollback.db"
    make_fragmented_db(db, mode="delete", delete_fraction=0.4, page_size=page_size)
    p = db_stats(db)
    assert p["freelist_count"] > 0.3 * p["page_count"], "fixture is not fragmented"
    assert p["auto_vacuum"] == "none" and p["page_size"] == page_size
    before = sha256(db)

    r = run_ctl("--json", "stats", db)
    assert r.rc == 0, r.describe()
    o = r.one()
    assert o["status"] == "ok", r.describe()
    assert_stats_match(o, db, mode="delete")
    assert o["wal_size_bytes"] == 0
    assert 30 < o["fragmentation_percent"] < 50
    assert o["estimated_wasted_space_bytes"] == p["freelist_count"] * page_size
    # stats only looks
    assert sha256(db) == before
    assert side_files(str(db)) == []


def test_stats_wal_with_stale_header(tmp_path, run_ctl, make_fragmented_db):
    """The deletes sit in the -wal (an open connection with autocheckpoint
    off keeps them there): the main file's header still says freelist 0,
    SQLite says otherwise, and the tool must report what SQLite says."""
    db = tmp_path / "wal.db"
    app = make_fragmented_db(db, mode="wal", delete_fraction=0.4, keep_open=True)
    p = db_stats(db)
    wal = str(db) + "-wal"
    assert p["journal_mode"] == "wal"
    assert p["freelist_count"] > 0.3 * p["page_count"]
    # The fixture really is the stale-header case.
    assert header_field(db, 36) != p["freelist_count"], "main-file header is not stale"
    assert file_size(wal) > 0
    main_before, wal_before = sha256(db), sha256(wal)

    r = run_ctl("--json", "stats", db)
    assert r.rc == 0, r.describe()
    o = r.one()
    assert o["status"] == "ok", r.describe()
    assert_stats_match(o, db, mode="wal")
    assert o["freelist_count"] == p["freelist_count"]
    assert o["wal_size_bytes"] == os.path.getsize(wal) > 0
    assert 30 < o["fragmentation_percent"] < 50
    assert sha256(db) == main_before
    assert sha256(wal) == wal_before
    # The application's connection still works and sees its data.
    assert app.query("SELECT count(*) FROM t") == [(900,)]


@pytest.mark.parametrize("auto_vacuum", ["none", "full", "incremental"])
def test_stats_auto_vacuum(tmp_path, run_ctl, make_fragmented_db, auto_vacuum):
    db = tmp_path / f"av-{auto_vacuum}.db"
    make_fragmented_db(db, rows=400, delete_fraction=0.3, auto_vacuum=auto_vacuum)
    p = db_stats(db)
    assert p["auto_vacuum"] == auto_vacuum
    if auto_vacuum == "full":
        assert p["freelist_count"] == 0     # full auto_vacuum frees at commit
    else:
        assert p["freelist_count"] > 0

    r = run_ctl("--json", "stats", db)
    assert r.rc == 0, r.describe()
    o = r.one()
    assert o["status"] == "ok", r.describe()
    assert o["auto_vacuum"] == auto_vacuum
    assert_stats_match(o, db, mode="delete")


def test_stats_empty_file(tmp_path, run_ctl):
    """A 0-byte file is an empty database to SQLite: page_count 0,
    fragmentation 0, and stats leaves it 0 bytes."""
    db = tmp_path / "empty.db"
    db.write_bytes(b"")
    r = run_ctl("--json", "stats", db)
    assert r.rc == 0, r.describe()
    o = r.one()
    assert o["status"] == "ok", r.describe()
    assert o["path"] == str(db)
    assert o["page_count"] == 0
    assert o["freelist_count"] == 0
    assert o["fragmentation_percent"] == 0
    assert o["estimated_wasted_space_bytes"] == 0
    assert o["file_size_bytes"] == 0
    assert o["wal_size_bytes"] == 0
    assert o["auto_vacuum"] == "none"
    assert o["journal_mode"] == "delete"
    assert os.path.getsize(db) == 0
    assert side_files(str(db)) == []


def test_stats_several_databases_in_order(tmp_path, run_ctl, make_fragmented_db):
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    make_fragmented_db(a, mode="delete", rows=300, delete_fraction=0.2)
    make_fragmented_db(b, mode="wal", rows=300, delete_fraction=0.5, keep_open=True)
    r = run_ctl("--json", "stats", a, b)
    assert r.rc == 0, r.describe()
    assert [o["path"] for o in r.json] == [str(a), str(b)], r.describe()
    assert_stats_match(r.json[0], a, mode="delete")
    assert_stats_match(r.json[1], b, mode="wal")


def test_stats_human_table(tmp_path, run_ctl, make_fragmented_db):
    db = tmp_path / "human.db"
    make_fragmented_db(db, mode="delete", delete_fraction=0.4)
    p = db_stats(db)
    frag = p["freelist_count"] / p["page_count"] * 100
    r = run_ctl("stats", db)
    assert r.rc == 0, r.describe()
    lines = r.out.splitlines()
    header = [l for l in lines if "PATH" in l and "FRAG" in l]
    assert header, "no table header with PATH and FRAG\n" + r.describe()
    row = [l for l in lines if str(db) in l]
    assert len(row) == 1, r.describe()
    # The FRAG column shows the figure (39.16 as "39.16", "39.2" or "39%").
    assert re.search(rf"\b{int(frag)}(\.\d+)?\s*%?", row[0].replace(str(db), "")), r.describe()
    assert r.err == "", r.describe()
