# SPDX-License-Identifier: MIT
"""The deep scan: the bytes unused inside the pages of each table and index
and the pages out of sequence, read through dbstat with sqlite3_analyzer's
rules, where the freelist ratio sees nothing.

- The issue's case: rows deleted all over a table leave every page half
  empty and the freelist empty; `stats` says 0.00%, `stats --deep` sees
  half the bytes unused, and a VACUUM gives back about what it predicted.
- Agreement with sqlite3_analyzer (SQLite's own tool, package
  sqlite3-tools) on databases of many shapes: per table and index, the
  unused bytes and non-sequential pages are exactly the same.
- The daemon scans on its own (deep_scan.interval), logs DEEP_SCAN, and
  vacuums in the window when unused_threshold is reached, never when it is
  0 (off).
- A deep scan writes nothing, and on a rollback-mode database takes no
  lock: a writer that commits all through it never gets SQLITE_BUSY.
- Corrupt, missing, and --deep with another command."""

import os
import random
import re
import shutil
import sqlite3
import subprocess
import threading
import time

import pytest

import helpers
from daemon_fixtures import (  # noqa: F401  (fixtures are used by name)
    M, config_text, daemon, format_entries, journald)
from helpers import PYTHON, checksum, db_stats, quick_check, sha256, snapshot

ANALYZER = shutil.which("sqlite3_analyzer") or "/usr/bin/sqlite3_analyzer"
POLL = 1.0


# --------------------------------------------------------------------------
# Databases

def make_sparse_pages_db(path, rows=16000, row_bytes=200, mode="delete", seed=3):
    """The issue's case: table t of ~200-byte rows and an index, every other
    row deleted (so every page is about half empty and hardly any is freed),
    then new rows appended until the freelist is empty again, as an
    application that goes on writing would. Returns the rows deleted."""
    r = random.Random(seed)
    con = sqlite3.connect(str(path), isolation_level=None)
    jm = con.execute(f"PRAGMA journal_mode={'WAL' if mode == 'wal' else 'DELETE'}").fetchone()[0]
    assert jm == ("wal" if mode == "wal" else "delete")
    con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, body BLOB)")
    con.execute("CREATE INDEX t_name ON t(name)")
    con.execute("BEGIN")
    con.executemany("INSERT INTO t VALUES (?, ?, ?)",
                    [(i, f"n{i:07d}", r.randbytes(row_bytes)) for i in range(1, rows + 1)])
    con.execute("COMMIT")
    con.execute("DELETE FROM t WHERE id % 2 = 0")
    i = rows
    while con.execute("PRAGMA freelist_count").fetchone()[0] > 0:
        i += 1
        con.execute("INSERT INTO t VALUES (?, ?, ?)", (i, f"n{i:07d}", r.randbytes(row_bytes)))
    if mode == "wal":
        assert con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
    con.close()
    return rows // 2


def dbstat_figures(path):
    """What dbstat says, summed by the test itself: {name: (pages, unused)}."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {n: (p, u) for n, p, u in con.execute(
            "SELECT name, count(*), sum(unused) FROM dbstat GROUP BY name")}
    finally:
        con.close()


def deep(run_ctl, db, *extra):
    r = run_ctl("--json", *extra, "stats", "--deep", db)
    assert r.rc == 0, r.describe()
    o = r.one()
    assert o["status"] == "ok", r.describe()
    return o


# --------------------------------------------------------------------------
# (a) the case

def test_unused_space_the_freelist_does_not_see(tmp_path, run_ctl):
    db = tmp_path / "sparse.db"
    make_sparse_pages_db(db)
    before = db_stats(db)
    assert before["freelist_count"] == 0, before
    ps = before["page_size"]

    # the freelist measure: nothing to do
    r = run_ctl("--json", "stats", db)
    assert r.rc == 0, r.describe()
    o = r.one()
    assert o["freelist_count"] == 0 and o["fragmentation_percent"] == 0, r.describe()
    r = run_ctl("stats", db)
    assert r.rc == 0 and re.match(r"\s*0\.00\s", r.out.splitlines()[-1]), r.describe()

    # the deep scan: about half of every page unused
    o = deep(run_ctl, db)
    d = o["deep"]
    assert d["unused_percent"] > 40, d
    assert o["fragmentation_percent"] == 0 and o["freelist_count"] == 0, o
    # the figures are dbstat's, summed by the test
    truth = dbstat_figures(db)
    bt = {b["name"]: b for b in d["btrees"]}
    assert set(bt) == set(truth), (set(bt), set(truth))
    for name, (pages, unused) in truth.items():
        assert bt[name]["pages"] == pages, (name, bt[name], pages)
        assert bt[name]["unused_bytes"] == unused, (name, bt[name], unused)
        assert bt[name]["unused_percent"] == round(100.0 * unused / (pages * ps), 2), (name, bt[name])
    assert d["btree_pages"] == sum(p for p, _ in truth.values()) == before["page_count"]
    assert d["unused_bytes"] == sum(u for _, u in truth.values())
    assert d["unused_percent"] == round(100.0 * d["unused_bytes"] / (d["btree_pages"] * ps), 2)
    assert bt["t"]["type"] == "table" and bt["t_name"]["type"] == "index" and bt["t_name"]["table"] == "t"
    assert bt["sqlite_schema"]["type"] == "table"
    predicted = d["reclaimable_bytes"]
    assert predicted >= 0.3 * before["page_count"] * ps, d

    # human output says the same
    r = run_ctl("stats", "--deep", db)
    assert r.rc == 0, r.describe()
    assert f"({d['unused_percent']:.2f}%)" in r.out and "t_name (on t)" in r.out, r.describe()

    # a VACUUM gives back about what the scan predicted
    cs = checksum(db, "t")
    r = run_ctl("--json", "vacuum", "--force", db)
    assert r.rc == 0 and r.one()["status"] == "ok", r.describe()
    after = db_stats(db)
    freed = (before["page_count"] - after["page_count"]) * ps
    assert after["page_count"] <= 0.7 * before["page_count"], (before, after)
    assert 0.75 * predicted <= freed <= predicted + 4 * ps, (freed, predicted)
    assert r.one()["page_bytes_reclaimed"] == freed
    assert checksum(db, "t") == cs and quick_check(db, "integrity_check") == ["ok"]
    # and afterwards the pages are full again: little left to give back
    d = deep(run_ctl, db)["deep"]
    assert d["unused_percent"] < 15, d
    assert d["reclaimable_bytes"] < 0.1 * predicted, d


def make_packed_db(path, row_bytes, rows=1500):
    """Rows of row_bytes inserted in order and the file VACUUMed: its pages
    are as full as SQLite can make them. A cell is never split between
    two pages, so with rows of 2100 bytes a 4 KiB page holds one, and
    about half of every page stays unused whatever VACUUM does."""
    con = sqlite3.connect(str(path), isolation_level=None)
    con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, data BLOB)")
    con.execute("BEGIN")
    con.executemany("INSERT INTO t(data) VALUES (randomblob(?))", [(row_bytes,)] * rows)
    con.execute("COMMIT")
    con.execute("VACUUM")
    con.close()


@pytest.mark.parametrize("row_bytes", [200, 1400, 2100])
def test_reclaimable_is_what_a_vacuum_gives_back(tmp_path, run_ctl, row_bytes):
    """reclaimable_bytes is what a VACUUM could give back: right after one,
    another gives back (almost) nothing, and the scan must predict (almost)
    nothing, whatever the row size. Else the daemon's unused-space rule
    (unused_threshold) would VACUUM such a database again and again for
    nothing."""
    db = tmp_path / f"packed-{row_bytes}.db"
    make_packed_db(db, row_bytes)
    before = db_stats(db)
    ps = before["page_size"]
    d = deep(run_ctl, db)["deep"]
    r = run_ctl("--json", "vacuum", "--force", db)
    assert r.rc == 0 and r.one()["status"] == "ok", r.describe()
    freed = (before["page_count"] - db_stats(db)["page_count"]) * ps
    assert freed <= 2 * ps, (freed, before)
    assert d["reclaimable_bytes"] <= freed + 4 * ps, (
        f"rows of {row_bytes} bytes, packed by VACUUM ({d['unused_percent']}% of the bytes unused): "
        f"the scan predicts {d['reclaimable_bytes']} bytes back, a VACUUM gives {freed}")


# --------------------------------------------------------------------------
# (b) agreement with sqlite3_analyzer

def _rows(n, seed):
    r = random.Random(seed)
    return r, [r.randbytes(r.randint(20, 400)) for _ in range(n)]


def db_rowid_with_index(con):
    r, blobs = _rows(5000, 1)
    con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, body BLOB)")
    con.execute("CREATE INDEX t_name ON t(name)")
    con.execute("CREATE UNIQUE INDEX t_body_len ON t(length(body), id)")
    con.execute("BEGIN")
    con.executemany("INSERT INTO t VALUES (?, ?, ?)", [(i, f"name{r.randint(0, 99999)}", b)
                                                       for i, b in enumerate(blobs, 1)])
    con.execute("COMMIT")
    con.execute("DELETE FROM t WHERE id % 3 = 0")
    con.execute("UPDATE t SET body = randomblob(900) WHERE id % 7 = 0")


def db_without_rowid(con):
    r, _ = _rows(0, 2)
    keys = [f"key-{i:06d}" for i in range(6000)]
    r.shuffle(keys)   # random insertion order: splits all over the b-tree
    con.execute("CREATE TABLE w(k TEXT PRIMARY KEY, v TEXT, n INTEGER) WITHOUT ROWID")
    con.execute("CREATE INDEX w_n ON w(n)")
    con.execute("BEGIN")
    con.executemany("INSERT INTO w VALUES (?, ?, ?)", [(k, "v" * r.randint(10, 200), r.randint(0, 500))
                                                       for k in keys])
    con.execute("COMMIT")
    con.execute("DELETE FROM w WHERE n % 4 = 0")


def db_overflow(con):
    r, _ = _rows(0, 3)
    con.execute("CREATE TABLE big(id INTEGER PRIMARY KEY, b BLOB)")
    con.execute("CREATE TABLE small(id INTEGER PRIMARY KEY, s TEXT)")
    con.execute("BEGIN")
    for i in range(1, 301):
        con.execute("INSERT INTO big VALUES (?, ?)", (i, r.randbytes(r.randint(5000, 30000))))
        con.execute("INSERT INTO small VALUES (?, ?)", (i, "s" * 100))
    con.execute("COMMIT")
    con.execute("DELETE FROM big WHERE id % 5 = 0")
    con.executemany("INSERT INTO big(b) VALUES (?)", [(r.randbytes(9000),) for _ in range(40)])


def db_interleaved(con):
    """Inserts into two tables in turn: their pages alternate in the file."""
    con.execute("CREATE TABLE a(id INTEGER PRIMARY KEY, x BLOB)")
    con.execute("CREATE TABLE b(id INTEGER PRIMARY KEY, y BLOB, z TEXT)")
    con.execute("CREATE INDEX b_z ON b(z)")
    for i in range(1, 1201):
        con.execute("INSERT INTO a VALUES (?, randomblob(700))", (i,))
        con.execute("INSERT INTO b VALUES (?, randomblob(500), ?)", (i, f"z{(i * 7919) % 1201:05d}"))


def db_empty_table(con):
    con.execute("CREATE TABLE empty(a, b)")
    con.execute("CREATE INDEX empty_a ON empty(a)")
    con.execute("CREATE TABLE few(id INTEGER PRIMARY KEY, s TEXT)")
    con.executemany("INSERT INTO few VALUES (?, ?)", [(1, "one"), (2, "two"), (3, "three")])


def db_auto_vacuum_full(con):
    con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB, c TEXT)")
    con.execute("CREATE INDEX t_c ON t(c)")
    con.execute("CREATE TABLE u(id INTEGER PRIMARY KEY, b BLOB)")
    for i in range(1, 2001):
        con.execute("INSERT INTO t VALUES (?, randomblob(300), ?)", (i, f"c{(i * 31) % 2000}"))
        if i % 3 == 0:
            con.execute("INSERT INTO u VALUES (?, randomblob(1500))", (i,))
    con.execute("DELETE FROM t WHERE id % 2 = 1")
    con.execute("DELETE FROM u WHERE id % 9 = 0")


def db_small_pages(con):
    con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, s TEXT, b BLOB)")
    con.execute("CREATE INDEX t_s ON t(s)")
    con.execute("BEGIN")
    con.executemany("INSERT INTO t VALUES (?, ?, randomblob(?))",
                    [(i, f"s{(i * 13) % 997}", 50 + i % 1500) for i in range(1, 3001)])
    con.execute("COMMIT")
    con.execute("DELETE FROM t WHERE id % 4 = 1")


SHAPES = {
    "rowid_with_index": ({}, db_rowid_with_index),
    "without_rowid": ({}, db_without_rowid),
    "overflow": ({}, db_overflow),
    "interleaved": ({}, db_interleaved),
    "empty_table": ({}, db_empty_table),
    "auto_vacuum_full": ({"auto_vacuum": "FULL"}, db_auto_vacuum_full),
    "page_size_1024": ({"page_size": 1024}, db_small_pages),
}


def make_shape(path, shape):
    pr, build = SHAPES[shape]
    con = sqlite3.connect(str(path), isolation_level=None)
    for k, v in pr.items():
        con.execute(f"PRAGMA {k}={v}")
    build(con)
    con.close()


_STATLINE = re.compile(r"^(\S.*?)\.{2,}\s*(\d+)\b")


def analyzer_report(db):
    """sqlite3_analyzer's report: {section title: {statline label: integer}}."""
    p = subprocess.run([ANALYZER, str(db)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, f"sqlite3_analyzer failed ({p.returncode}): {p.stderr}"
    sections, cur = {}, None
    for line in p.stdout.splitlines():
        m = re.match(r"^\*\*\* (.+?) \*+\s*$", line)
        if m:
            cur = sections.setdefault(m.group(1), {})
            continue
        m = _STATLINE.match(line)
        if m and cur is not None:
            cur.setdefault(m.group(1).strip(), int(m.group(2)))
    return sections, p.stdout


def analyzer_btrees(sections):
    """{NAME (upper case, as the report shows it): statlines} of each single
    b-tree: "Table T w/o any indices", "Index I of table T", and "Table T"
    for a table without indexes."""
    out = {}
    for title, stats in sections.items():
        m = re.fullmatch(r"Table (.+) w/o any indices", title) or re.fullmatch(r"Index (.+) of table .+", title)
        if m:
            out[m.group(1)] = stats
        elif title.startswith("Table ") and not title.endswith(" and all its indices"):
            out[title[len("Table "):]] = stats
    return out


@pytest.fixture(scope="module")
def analyzer():
    if not os.access(ANALYZER, os.X_OK):
        pytest.fail(f"{ANALYZER} is not installed (package sqlite3-tools)", pytrace=False)
    return ANALYZER


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_agrees_with_sqlite3_analyzer(tmp_path, run_ctl, analyzer, shape):
    db = tmp_path / f"{shape}.db"
    make_shape(db, shape)
    o = deep(run_ctl, db)
    d = o["deep"]
    ps = o["page_size"]
    sections, text = analyzer_report(db)
    theirs = analyzer_btrees(sections)
    ours = {b["name"].upper(): b for b in d["btrees"]}
    assert set(ours) == set(theirs), f"b-trees differ: ours {sorted(ours)}, analyzer's {sorted(theirs)}\n{text}"
    assert d["nonsequential_pages"] == sum(b["nonsequential_pages"] for b in d["btrees"])
    for name, b in ours.items():
        t = theirs[name]
        pages = b["pages"]
        what = f"{shape}: {b['type']} {b['name']}: ours {b}, analyzer's {t}"
        assert pages == t["Total pages used"], what
        assert b["leaf_pages"] == t["Primary pages used"], what
        assert b["interior_pages"] == t.get("Index pages used", 0), what
        assert b["overflow_pages"] == t["Overflow pages used"], what
        assert b["unused_bytes"] == t["Unused bytes on all pages"], what
        # the analyzer prints the line only for a b-tree of more than one page
        assert b["nonsequential_pages"] == t.get("Non-sequential pages", 0), what
        assert b["unused_percent"] == round(100.0 * b["unused_bytes"] / (pages * ps), 2), what
        assert b["nonsequential_percent"] == (
            round(100.0 * b["nonsequential_pages"] / (pages - 1), 2) if pages > 1 else 0), what
    # the whole database: "All tables and indices" (only printed when there
    # is an index), else "All tables"
    total = sections.get("All tables and indices") or sections["All tables"]
    assert d["unused_bytes"] == total["Unused bytes on all pages"], (d["unused_bytes"], total)
    assert d["btree_pages"] == sum(b["pages"] for b in d["btrees"])
    # every page is a b-tree's, the freelist's or (auto_vacuum) a pointer map's
    assert d["btree_pages"] == o["page_count"] - o["freelist_count"] - _ptrmap_pages(db), o
    # something worth comparing was there
    if shape == "interleaved":
        assert d["nonsequential_pages"] > 100, d
    if shape == "overflow":
        assert sum(b["overflow_pages"] for b in d["btrees"]) > 500, d
    if shape == "empty_table":
        assert ours["EMPTY"]["pages"] == 1 and ours["EMPTY_A"]["pages"] == 1, d


def _ptrmap_pages(db):
    """Pages of pointer map (auto_vacuum) and the lock-byte page: neither
    belongs to a b-tree nor to the freelist."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        av = con.execute("PRAGMA auto_vacuum").fetchone()[0]
        pc = con.execute("PRAGMA page_count").fetchone()[0]
        ps = con.execute("PRAGMA page_size").fetchone()[0]
    finally:
        con.close()
    if not av:
        return 0
    per = ps // 5   # entries per ptrmap page
    n, p = 0, 2
    while p <= pc:
        n += 1
        p += per + 1
    return n


# --------------------------------------------------------------------------
# (c) the daemon

def _deep_conf(state, databases, unused_threshold="25%"):
    return config_text(state, databases, poll_interval=f"{POLL:g}s",
                       vacuum={"threshold": "90%", "urgent_threshold": "95%", "window": "always",
                               "min_reclaim": 0, "unused_threshold": unused_threshold})


def _db_entry(path, interval="2s", **extra):
    return {"path": path, "deep_scan": {"interval": interval, "in_window": True}, **extra}


def _ts(e):
    return int(e["__REALTIME_TIMESTAMP"])


def _assert_deep_entry(e, ctl_deep):
    """The DEEP_SCAN entry's fields are the figures sqlite-maintctl gave for
    the same, unchanged, file."""
    assert e["PRIORITY"] == "6" and e["OPERATION"] == "deep_scan", e
    for field, key in (("UNUSED_BYTES", "unused_bytes"), ("BTREE_PAGES", "btree_pages"),
                       ("RECLAIMABLE_BYTES", "reclaimable_bytes"), ("NONSEQUENTIAL_PAGES", "nonsequential_pages")):
        assert int(e[field]) == ctl_deep[key], (field, e[field], ctl_deep[key])
    for field, key in (("UNUSED_PERCENT", "unused_percent"), ("NONSEQUENTIAL_PERCENT", "nonsequential_percent")):
        assert re.fullmatch(r"\d+\.\d\d", e[field]) and float(e[field]) == ctl_deep[key], (field, e[field])
    assert e["FRAGMENTATION"] == "0.00", e
    assert re.fullmatch(r"\d+", e["DURATION_MS"]), e


def test_daemon_vacuums_unused_space(tmp_path, daemon, run_ctl):
    dbs, state = tmp_path / "dbs", tmp_path / "state"
    dbs.mkdir()
    db = dbs / "sparse.db"
    make_sparse_pages_db(db)
    before, cs = db_stats(db), checksum(db, "t")
    assert before["freelist_count"] == 0
    ctl = deep(run_ctl, db)["deep"]
    assert ctl["unused_percent"] >= 25

    d = daemon.start(_deep_conf(state, [_db_entry(db)]))
    scan = d.wait_for_entry(msgid="DEEP_SCAN", DB_PATH=db)
    _assert_deep_entry(scan, ctl)
    sched = d.wait_for_entry(msgid="SCHEDULED", DB_PATH=db, REASON="unused-space")
    assert sched["OPERATION"] == "vacuum" and sched["UNUSED_PERCENT"] == scan["UNUSED_PERCENT"], sched
    done = d.wait_for_entry(msgid="VACUUM_DONE", DB_PATH=db, timeout=30)
    assert done["REASON"] == "unused-space", done
    assert _ts(scan) < _ts(sched) <= _ts(done), format_entries(d.entries())

    after = db_stats(db)
    assert after["page_count"] <= 0.7 * before["page_count"], (before, after)
    assert checksum(db, "t") == cs and quick_check(db, "integrity_check") == ["ok"]
    freed = (before["page_count"] - after["page_count"]) * before["page_size"]
    assert int(done["PAGE_BYTES_RECLAIMED"]) == freed, done
    assert 0.75 * ctl["reclaimable_bytes"] <= freed, (freed, ctl)
    assert int(done["BYTES_RECLAIMED"]) == int(done["DISK_BYTES_BEFORE"]) - int(done["DISK_BYTES_AFTER"]) > 0

    # the next scan sees the packed pages, and nothing more is scheduled:
    # the scan after it finds the file unchanged
    again = d.wait_for_entry(lambda e: M("DEEP_SCAN", DB_PATH=db)(e) and _ts(e) > _ts(done))
    assert float(again["UNUSED_PERCENT"]) < 25, again
    d.wait_for_entry(lambda e: _ts(e) > _ts(again) and
                     f"{db}: deep scan due, but the database is unchanged" in e.get("MESSAGE", ""))
    es = d.entries()
    assert len([e for e in es if M("VACUUM_DONE", DB_PATH=db)(e)]) == 1, format_entries(es)
    assert len([e for e in es if M("SCHEDULED", DB_PATH=db, OPERATION="vacuum")(e)]) == 1, format_entries(es)
    assert d.stop() == 0, d.describe()


def test_daemon_unused_threshold_zero_is_off(tmp_path, daemon, run_ctl):
    """Two databases alike: off.db with unused_threshold 0 is scanned and
    left alone; on.db with the defaults' 25% is vacuumed by the same
    daemon. That off.db was decided on after its scan shows in a later
    poll's debug line (its next scan, due, is skipped: the file is
    unchanged), which comes only after the VACUUM decision."""
    dbs, state = tmp_path / "dbs", tmp_path / "state"
    dbs.mkdir()
    off, on = dbs / "off.db", dbs / "on.db"
    make_sparse_pages_db(off, seed=5)
    make_sparse_pages_db(on, seed=6)
    off_files = snapshot([off])
    on_pages = db_stats(on)["page_count"]

    d = daemon.start(_deep_conf(state, [_db_entry(off, vacuum={"unused_threshold": 0}), _db_entry(on)]))
    scan = d.wait_for_entry(msgid="DEEP_SCAN", DB_PATH=off)
    assert float(scan["UNUSED_PERCENT"]) >= 25, scan   # the other database's threshold would fire
    d.wait_for_entry(lambda e: _ts(e) > _ts(scan) and
                     f"{off}: deep scan due, but the database is unchanged" in e.get("MESSAGE", ""))
    done = d.wait_for_entry(msgid="VACUUM_DONE", DB_PATH=on, timeout=30)
    assert done["REASON"] == "unused-space", done
    assert db_stats(on)["page_count"] <= 0.7 * on_pages

    es = d.entries()
    bad = [e for e in es if e.get("DB_PATH") == str(off) and (
        M("SCHEDULED", OPERATION="vacuum")(e) or M("VACUUM_DONE")(e) or M("JOB_FAILED")(e))]
    assert not bad, "off.db was to be left alone:\n" + format_entries(es)
    assert snapshot([off]) == off_files
    assert d.stop() == 0, d.describe()


def test_daemon_leaves_pages_vacuum_cannot_pack(tmp_path, daemon):
    """Half of every page unused, but a VACUUM gives none of it back (rows
    of 2100 bytes, one to a 4 KiB page, already packed): above
    unused_threshold, yet nothing to reclaim beyond min_reclaim (1 MiB),
    so no VACUUM, even with min_interval 1s. That the daemon decided after
    its scan shows in the debug line of its next, skipped, scan."""
    dbs, state = tmp_path / "dbs", tmp_path / "state"
    dbs.mkdir()
    db = dbs / "packed.db"
    make_packed_db(db, 2100, rows=1500)
    files = snapshot([db])
    cfg = config_text(state, [_db_entry(db)], poll_interval=f"{POLL:g}s",
                      vacuum={"threshold": "90%", "urgent_threshold": "95%", "window": "always",
                              "min_interval": "1s", "min_reclaim": "1MiB", "unused_threshold": "25%"})
    d = daemon.start(cfg)
    scan = d.wait_for_entry(msgid="DEEP_SCAN", DB_PATH=db)
    assert float(scan["UNUSED_PERCENT"]) >= 25, scan
    d.wait_for_entry(lambda e: _ts(e) > _ts(scan) and
                     f"{db}: deep scan due, but the database is unchanged" in e.get("MESSAGE", ""))
    es = d.entries()
    bad = [e for e in es if e.get("DB_PATH") == str(db) and (
        M("SCHEDULED", OPERATION="vacuum")(e) or M("VACUUM_DONE")(e))]
    assert not bad, "a VACUUM that can give nothing back:\n" + format_entries(es)
    assert snapshot([db]) == files
    assert d.stop() == 0, d.describe()


# --------------------------------------------------------------------------
# (d) a deep scan writes nothing and locks nothing

def _make_mode(path, mode, tmp_path):
    """A database in the given state; returns an AppProcess to close, or None."""
    if mode == "wal-open":
        app = helpers.make_fragmented_db(path, mode="wal", rows=800, keep_open=True)
        assert os.path.getsize(str(path) + "-wal") > 0
        return app
    if mode == "wal-closed":
        helpers.make_fragmented_db(path, mode="wal", rows=800)
        assert helpers.header_field(path, 18, 1) == 2 and not os.path.exists(str(path) + "-wal")
        return None
    if mode == "persist":
        # a rollback database whose application keeps its journal
        # (journal_mode=PERSIST): the -journal stays, its header zeroed
        helpers.make_fragmented_db(path, rows=800)
        con = sqlite3.connect(str(path), isolation_level=None)
        assert con.execute("PRAGMA journal_mode=PERSIST").fetchone()[0] == "persist"
        con.execute("DELETE FROM t WHERE id % 7 = 0")
        con.close()
        assert os.path.getsize(str(path) + "-journal") > 0
        return None
    helpers.make_fragmented_db(path, rows=800)
    return None


@pytest.mark.parametrize("mode", ["delete", "persist", "wal-closed", "wal-open"])
def test_deep_scan_changes_no_file(tmp_path, run_ctl, mode):
    db = tmp_path / f"{mode}.db"
    app = _make_mode(db, mode, tmp_path)
    try:
        files = snapshot([db])
        mtimes = {f: os.stat(f).st_mtime_ns for f, h in files.items() if h}
        o = deep(run_ctl, db)
        assert o["deep"]["btree_pages"] > 100, o
        assert snapshot([db]) == files, f"{mode}: a file changed, appeared or went away"
        assert {f: os.stat(f).st_mtime_ns for f in mtimes} == mtimes
        if app:
            # the application's connection goes on as before
            assert app.query("SELECT count(*) FROM t") == [(480,)]
    finally:
        if app:
            app.close()


WRITER = r"""
import select, sqlite3, sys, time
con = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=0)   # busy_timeout 0
i = 0
print("ready", flush=True)
while not select.select([sys.stdin], [], [], 0)[0]:
    t0 = time.monotonic()
    try:
        con.execute("BEGIN IMMEDIATE")
        con.execute("INSERT INTO app(note) VALUES (?)", (f"w{i}",))
        time.sleep(0.002)          # the -journal lives for a while
        con.execute("COMMIT")
        print(f"commit {t0} {time.monotonic()}", flush=True)
    except sqlite3.OperationalError as e:
        print(f"busy {t0} {e}", flush=True)
        if con.in_transaction:
            con.execute("ROLLBACK")
    i += 1
    time.sleep(0.001)
print("stopped", flush=True)
"""


class Writer:
    """The writer process and what it said, line by line, as it said it."""

    def __init__(self, db, script=WRITER):
        self.proc = subprocess.Popen([PYTHON, "-c", script, str(db)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        assert self._ready.wait(15), "the writer did not start"

    def _read(self):
        for line in self.proc.stdout:
            line = line.strip()
            if line == "ready":
                self._ready.set()
            with self._lock:
                self.lines.append(line)

    def commits(self):
        with self._lock:
            return [tuple(map(float, x.split()[1:3])) for x in self.lines if x.startswith("commit ")]

    def busy(self):
        with self._lock:
            return [x for x in self.lines if x.startswith("busy ")]

    def stop(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("stop\n")
                self.proc.stdin.flush()
            except BrokenPipeError:
                pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=15)
        self._thread.join(timeout=15)
        return self.proc.returncode, self.proc.stderr.read()


def test_rollback_deep_scan_never_blocks_a_writer(tmp_path, run_ctl):
    """A writer commits in a loop, busy_timeout 0, all through several
    `stats --deep` runs. A SHARED lock held by the scan would make a COMMIT
    fail with SQLITE_BUSY at once; there must be none. The runs go on until
    commits fell inside three of them (the writer's and the test's clocks
    are the same CLOCK_MONOTONIC), however fast or slow the machine."""
    db = tmp_path / "big.db"
    con = sqlite3.connect(str(db), isolation_level=None)
    con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB)")
    con.execute("CREATE TABLE app(id INTEGER PRIMARY KEY, note TEXT)")
    con.execute("BEGIN")
    con.executemany("INSERT INTO t(b) VALUES (randomblob(300))", [()] * 80000)
    con.execute("COMMIT")
    con.close()

    w = Writer(db)
    runs, overlapped = [], []
    try:
        while len(overlapped) < 3 and len(runs) < 60 and not w.busy():
            t0 = time.monotonic()
            r = run_ctl("--json", "--attempts", "1", "stats", "--deep", db)
            t1 = time.monotonic()
            runs.append(r)
            if any(t0 <= c0 and c1 <= t1 for c0, c1 in w.commits()):
                overlapped.append(r)
    finally:
        rc, err = w.stop()
    assert rc == 0, err
    busy = w.busy()
    assert busy == [], f"the writer got SQLITE_BUSY {len(busy)} times, the first: {busy[:3]}"
    assert len(overlapped) >= 3, f"commits fell inside only {len(overlapped)} of {len(runs)} runs"
    for r in runs:
        o = r.one()
        # a scan of a file that kept changing may give up; it never
        # mistakes a half-written page for corruption
        assert o["status"] in ("ok", "busy"), r.describe()
        if o["status"] == "busy":
            assert "changed while it was read" in o["error"], r.describe()
        else:
            assert o["deep"]["btree_pages"] > 1000, r.describe()
    # every commit is there
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        assert con.execute("SELECT count(*) FROM app").fetchone()[0] == len(w.commits())
        assert con.execute("PRAGMA quick_check").fetchall() == [("ok",)]
    finally:
        con.close()


# --------------------------------------------------------------------------
# (e) what is not a deep scan's

def test_deep_scan_corrupt_and_missing(tmp_path, run_ctl):
    bad = tmp_path / "corrupt.db"
    helpers.make_corrupt_db(bad)
    digest = sha256(bad)
    r = run_ctl("--json", "stats", "--deep", bad)
    assert r.rc == 3, r.describe()
    o = r.one()
    assert o["status"] == "corrupt" and "deep" not in o and o.get("error"), r.describe()
    assert sha256(bad) == digest

    missing = tmp_path / "missing.db"
    r = run_ctl("--json", "stats", "--deep", missing)
    assert r.rc == 1, r.describe()
    assert r.one()["status"] == "missing" and "deep" not in r.one(), r.describe()
    assert not missing.exists()

    # several at once: each its own, the worst exit status
    good = tmp_path / "good.db"
    helpers.make_fragmented_db(good, rows=300)
    r = run_ctl("--json", "stats", "--deep", good, missing, bad)
    assert r.rc == 3, r.describe()
    by = r.by_path()
    assert by[str(good)]["status"] == "ok" and by[str(good)]["deep"]["btree_pages"] > 0, r.describe()
    assert by[str(missing)]["status"] == "missing" and by[str(bad)]["status"] == "corrupt", r.describe()


@pytest.mark.parametrize("args", [
    ["vacuum", "--deep"], ["check", "--deep"], ["analyze", "--deep"], ["--deep", "vacuum", "--force"],
    ["check", "--full", "--deep"],
])
def test_deep_goes_with_stats_only(tmp_path, run_ctl, args):
    db = tmp_path / "x.db"
    helpers.make_fragmented_db(db, rows=200)
    digest = sha256(db)
    r = run_ctl(*args, db)
    assert r.rc == 2, r.describe()
    assert "--deep" in r.err and r.out == "", r.describe()
    assert sha256(db) == digest


# A writer that changes much at each commit: 2000 rows deleted here and
# there and 2000 blobs of random sizes appended, in one transaction, page
# after page of it written into the database file at COMMIT. A read
# without locks that runs through such a commit can meet pages of two
# states.
CHURN = r"""
import random, select, sqlite3, sys, time
con = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=60)
r = random.Random(11)
print("ready", flush=True)
while not select.select([sys.stdin], [], [], 0)[0]:
    t0 = time.monotonic()
    con.execute("BEGIN IMMEDIATE")
    con.execute("DELETE FROM t WHERE id IN (SELECT id FROM t ORDER BY random() LIMIT 2000)")
    con.executemany("INSERT INTO t(b) VALUES (?)", [(r.randbytes(r.randint(10, 3000)),) for _ in range(2000)])
    con.execute("COMMIT")
    print(f"commit {t0} {time.monotonic()}", flush=True)
print("stopped", flush=True)
"""


def make_churn_db(path, rows=30000, seed=12):
    r = random.Random(seed)
    con = sqlite3.connect(str(path), isolation_level=None)
    assert con.execute("PRAGMA journal_mode=DELETE").fetchone()[0] == "delete"
    con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB)")
    con.execute("BEGIN")
    con.executemany("INSERT INTO t(b) VALUES (?)", [(r.randbytes(r.randint(10, 3000)),) for _ in range(rows)])
    con.execute("COMMIT")
    con.close()


def _damage_leaf(path):
    """Bytes of a table leaf page in the middle overwritten, as a disk
    would: its page type no longer one SQLite knows."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        ps = con.execute("PRAGMA page_size").fetchone()[0]
        pages = [p for (p,) in con.execute(
            "SELECT pageno FROM dbstat WHERE name = 't' AND pagetype = 'leaf' ORDER BY pageno")]
    finally:
        con.close()
    victim = pages[len(pages) // 2]
    with open(path, "r+b") as f:
        f.seek((victim - 1) * ps)
        f.write(b"\x55" * 16)
    assert quick_check(path) != ["ok"]


def test_rollback_deep_scan_through_commits_never_corrupt(tmp_path, run_ctl):
    """`stats --deep` on a rollback-mode database while another process
    commits big transactions (DELETE 2000 random rows, INSERT 2000 blobs of
    10..3000 bytes) without pause. The lockless read may meet a commit
    half written; what it then finds is read again under a SHARED lock,
    so the answer is ok or busy, never corrupt (before, about one run in
    two said corrupt, exit 3, and the daemon raised a CRITICAL). The runs
    go on until commits fell inside at least five of them and there were
    40 in all. The control: the same file really damaged, with no writer,
    is corrupt."""
    db = tmp_path / "churn.db"
    make_churn_db(db)

    # the control first: a copy with a damaged page is corrupt, exit 3
    bad = tmp_path / "churn-damaged.db"
    shutil.copyfile(db, bad)
    _damage_leaf(bad)
    r = run_ctl("--json", "--attempts", "1", "stats", "--deep", bad)
    assert r.rc == 3, r.describe()
    assert r.one()["status"] == "corrupt" and "deep" not in r.one(), r.describe()

    w = Writer(db, CHURN)
    runs, overlapped = [], []
    try:
        while (len(runs) < 40 or len(overlapped) < 5) and len(runs) < 200:
            t0 = time.monotonic()
            r = run_ctl("--json", "--attempts", "1", "stats", "--deep", db, timeout=120)
            t1 = time.monotonic()
            runs.append(r)
            if any(t0 <= c0 and c1 <= t1 or c0 <= t0 <= c1 or c0 <= t1 <= c1 for c0, c1 in w.commits()):
                overlapped.append(r)
            assert r.one()["status"] != "corrupt", r.describe()
    finally:
        rc, err = w.stop()
    assert rc == 0, err
    assert len(overlapped) >= 5, f"commits fell inside only {len(overlapped)} of {len(runs)} runs"
    assert len(w.commits()) >= 5, w.lines[-5:]
    statuses = {}
    for r in runs:
        o = r.one()
        statuses[o["status"]] = statuses.get(o["status"], 0) + 1
        assert o["status"] in ("ok", "busy"), r.describe()
        if o["status"] == "busy":
            assert r.rc == 5, r.describe()
            assert o["error"].startswith("still busy after 1 attempt (the last: "), r.describe()
        else:
            assert r.rc == 0 and o["deep"]["btree_pages"] > 1000, r.describe()
    assert statuses.get("ok", 0) > 0, statuses
    assert quick_check(db, "integrity_check") == ["ok"]
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        assert con.execute("SELECT count(*) FROM t").fetchone()[0] == 30000
    finally:
        con.close()


# --------------------------------------------------------------------------
# (f) the VACUUM estimate with cells of mixed sizes

def _rows_mixed(con, r):
    con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB)")
    return "INSERT INTO t(b) VALUES (?)", [(r.randbytes(r.randint(10, 2000)),) for _ in range(6000)]


def _rows_fixed(con, r):
    con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB)")
    return "INSERT INTO t(b) VALUES (?)", [(r.randbytes(1000),) for _ in range(4000)]


def _rows_small_indexed(con, r):
    con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, n INTEGER)")
    con.execute("CREATE INDEX t_name ON t(name)")
    return "INSERT INTO t(name, n) VALUES (?, ?)", [(f"n{r.randint(0, 10 ** 9):09d}", r.randint(0, 1000))
                                                   for _ in range(30000)]


ESTIMATE_SHAPES = {"mixed_10_2000": _rows_mixed, "fixed_1000": _rows_fixed, "small_indexed": _rows_small_indexed}


def make_every_third_deleted(path, shape, seed=1, vacuum=False):
    con = sqlite3.connect(str(path), isolation_level=None)
    sql, rows = ESTIMATE_SHAPES[shape](con, random.Random(seed))
    con.execute("BEGIN")
    con.executemany(sql, rows)
    con.execute("COMMIT")
    con.execute("DELETE FROM t WHERE id % 3 = 0")
    if vacuum:
        con.execute("VACUUM")
    con.close()


def _vacuumed_copy(db, copy):
    """What a VACUUM of a copy of db gives back, in bytes of file."""
    shutil.copyfile(db, copy)
    before = os.path.getsize(copy)
    con = sqlite3.connect(str(copy), isolation_level=None)
    con.execute("VACUUM")
    con.close()
    return before - os.path.getsize(copy)


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("shape", sorted(ESTIMATE_SHAPES))
def test_estimate_is_at_most_what_a_vacuum_gives_back(tmp_path, run_ctl, shape, seed):
    """Every third row deleted: the scan's "could give back up to"
    (reclaimable_bytes) is never more than a VACUUM of a copy really gives
    back, and not far below it (70%); on the copy just VACUUMed it is
    nothing (less than a page). Rows of mixed sizes leave each packed page
    short by part of the cell that did not fit; counting whole cells of the
    average size, the estimate was a third too high, and a just-VACUUMed
    file seemed to have hundreds of KiB to give back."""
    db = tmp_path / f"{shape}.db"
    make_every_third_deleted(db, shape, seed)
    ps = db_stats(db)["page_size"]
    est = deep(run_ctl, db)["deep"]["reclaimable_bytes"]
    copy = tmp_path / f"{shape}-vacuumed.db"
    real = _vacuumed_copy(db, copy)
    assert real > 50 * ps, (shape, real)
    assert est <= real, f"{shape}: the scan predicts {est} bytes back, a VACUUM gives {real}"
    assert est >= 0.7 * real, f"{shape}: the scan predicts {est} bytes back, a VACUUM gives {real}"
    again = deep(run_ctl, copy)["deep"]
    assert again["reclaimable_bytes"] < ps, (shape, again)
    # and another VACUUM indeed gives (almost) nothing
    assert _vacuumed_copy(copy, tmp_path / f"{shape}-twice.db") <= ps


def test_daemon_does_not_vacuum_a_packed_file_again(tmp_path, daemon, run_ctl):
    """Rows of 10..2000 bytes, every third deleted, then VACUUMed: about 16%
    of the bytes stay unused (the part of a page the next cell did not fit
    in), above unused_threshold 10%, but a VACUUM gives nothing back, and
    the scan says so: no VACUUM. min_reclaim 64 KiB: above nothing, below
    the ~700 KiB the old estimate saw in such a file (min_reclaim 0 turns
    that rule off, and a VACUUM for nothing is then what was asked for).
    Two deep scans (the file changed a little between them) and the
    unchanged-file line after the second are the positive signs that the
    daemon decided twice."""
    dbs, state = tmp_path / "dbs", tmp_path / "state"
    dbs.mkdir()
    db = dbs / "packed-mixed.db"
    make_every_third_deleted(db, "mixed_10_2000", vacuum=True)
    ps = db_stats(db)["page_size"]
    ctl = deep(run_ctl, db)["deep"]
    assert ctl["unused_percent"] > 10 and ctl["reclaimable_bytes"] < ps, ctl

    d = daemon.start(_deep_conf(state, [_db_entry(db, vacuum={"min_reclaim": "64KiB"})], unused_threshold="10%"))
    first = d.wait_for_entry(msgid="DEEP_SCAN", DB_PATH=db, timeout=60)
    _assert_deep_entry(first, ctl)
    assert float(first["UNUSED_PERCENT"]) > 10 and int(first["RECLAIMABLE_BYTES"]) < ps, first
    pages = db_stats(db)["page_count"]
    # a small change, so that the next scan runs and is decided on again
    con = sqlite3.connect(str(db), isolation_level=None)
    con.execute("INSERT INTO t(b) VALUES (randomblob(100))")
    con.close()
    second = d.wait_for_entry(lambda e: M("DEEP_SCAN", DB_PATH=db)(e) and _ts(e) > _ts(first), timeout=60)
    assert float(second["UNUSED_PERCENT"]) > 10 and int(second["RECLAIMABLE_BYTES"]) < ps, second
    d.wait_for_entry(lambda e: _ts(e) > _ts(second) and
                     f"{db}: deep scan due, but the database is unchanged" in e.get("MESSAGE", ""), timeout=60)
    es = d.entries()
    bad = [e for e in es if e.get("DB_PATH") == str(db) and (
        M("SCHEDULED", OPERATION="vacuum")(e) or M("VACUUM_DONE")(e) or M("JOB_FAILED")(e))]
    assert not bad, "a VACUUM of a packed file:\n" + format_entries(es)
    assert db_stats(db)["page_count"] >= pages
    assert d.stop() == 0, d.describe()


# --------------------------------------------------------------------------
# (g) the daemon's words for corruption a deep scan finds

def test_daemon_deep_scan_finds_corruption(tmp_path, daemon):
    """Not a VACUUM's finding, so not "not vacuumed": the CRITICAL line says
    the database is left alone until it changes, and the file is not
    written."""
    dbs, state = tmp_path / "dbs", tmp_path / "state"
    dbs.mkdir()
    db = dbs / "damaged.db"
    helpers.make_corrupt_db(db)
    files = snapshot([db])
    d = daemon.start(_deep_conf(state, [_db_entry(db)]))
    crit = d.wait_for_entry(msgid="CORRUPT", DB_PATH=db, timeout=60)
    assert crit["PRIORITY"] == "2" and crit["OPERATION"] == "deep_scan", crit
    assert crit["MESSAGE"].startswith(f"{db}: DATABASE CORRUPT, left alone until it changes: "), crit
    assert "not vacuumed" not in crit["MESSAGE"], crit
    es = d.entries()
    assert not [e for e in es if M("DEEP_SCAN", DB_PATH=db)(e) or M("VACUUM_DONE", DB_PATH=db)(e)], \
        format_entries(es)
    assert snapshot([db]) == files
    assert d.stop() == 0, d.describe()
