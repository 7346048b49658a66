# SPDX-License-Identifier: MIT
"""sqlite-maintd end to end: the built daemon against real database files,
a real journald, a real NOTIFY_SOCKET listener and, for lock conflicts, an
application in another process. Each test checks what an admin would:
the files on disk (freelist, rows, integrity, bytes), the journal entries
(journalctl -o json) and what systemd would have been told."""

import contextlib
import os
import shutil
import re
import signal
import sqlite3
import subprocess
import time

import pytest

import helpers
from daemon_fixtures import (  # noqa: F401  (fixtures are used by name)
    M, MSGID, WAIT, app, config_text, daemon, entry_matches, format_entries, journald, notify_socket, poll_round,
    polled, window_with_now)
from helpers import (
    checksum, db_stats, fragmentation, freelist_count, LockHolder, make_corrupt_db, make_db,
    make_freelist_corrupt_db, quick_check, refragment, snapshot)


def _dirs(tmp_path):
    dbs = tmp_path / "dbs"
    dbs.mkdir(exist_ok=True)
    return dbs, tmp_path / "state"


def _busy_db(tmp_path, app, daemon, retry, *args, mode="delete", begin="BEGIN IMMEDIATE", after=20,
             write_first=True):
    """A database 35% free pages whose lock an application in another
    process holds (see App), and the daemon started on it with these retry
    settings: (db, its checksum, the App, the Daemon)."""
    dbs, state = _dirs(tmp_path)
    db = dbs / "busy.db"
    make_db(db, 35, mode=mode)
    cs = checksum(db, "t")
    holder = app(db, begin=begin, after=after, write_first=write_first)
    d = daemon.start(config_text(state, [dbs / "*.db"], retry=dict(retry, busy_timeout="50ms")), *args)
    return db, cs, holder, d


def _index(entries, entry):
    for i, e in enumerate(entries):
        if e.get("__CURSOR") == entry.get("__CURSOR"):
            return i
    raise AssertionError(f"entry not found: {entry.get('MESSAGE')}")


def _create_atomically(path, frag, **kw):
    """Make the database under a name no glob matches, then rename it in:
    a running daemon never sees it half made."""
    tmp = str(path) + ".making"
    make_db(tmp, frag, **kw)
    for s in ("-journal", "-wal", "-shm"):
        assert not os.path.exists(tmp + s), f"{tmp + s} left behind"
    os.rename(tmp, path)


def _assert_vacuum_done_entry(e, path, before, pages_after):
    """The fields of a VACUUM_DONE entry agree with what SQLite said about
    the file before (db_stats) and its page count after."""
    assert e["PRIORITY"] == "6", e
    assert e["SYSLOG_IDENTIFIER"] == "sqlite-maintd"
    assert e["MESSAGE_ID"] == MSGID["VACUUM_DONE"]
    assert e["DB_PATH"] == str(path)
    assert e["OPERATION"] == "vacuum"
    assert re.fullmatch(r"\d+\.\d\d", e["FRAGMENTATION_BEFORE"]), e["FRAGMENTATION_BEFORE"]
    assert abs(float(e["FRAGMENTATION_BEFORE"]) - before["fragmentation"]) <= 0.01, (e["FRAGMENTATION_BEFORE"], before)
    assert e["FRAGMENTATION_AFTER"] == "0.00", e
    page_size = 4096
    freed = (before["page_count"] - pages_after) * page_size
    assert int(e["PAGE_BYTES_RECLAIMED"]) == freed, (e["PAGE_BYTES_RECLAIMED"], freed)
    # what the file system got back: the files' disk space before and after
    assert int(e["BYTES_RECLAIMED"]) == int(e["DISK_BYTES_BEFORE"]) - int(e["DISK_BYTES_AFTER"]) > 0, e
    assert re.fullmatch(r"\d+", e["DURATION_MS"]), e


def _assert_vacuumed_on_disk(path, cs, mode="delete"):
    s = db_stats(path)
    fl, pc = s["freelist_count"], s["page_count"]
    assert fl == 0, f"{path} still has {fl} free pages"
    assert checksum(path, "t") == cs, f"{path}: rows changed"
    assert quick_check(path, "integrity_check") == ["ok"]
    con = sqlite3.connect(str(path))
    try:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == mode
    finally:
        con.close()
    return pc


def _wait_status(d, prefix, timeout=20):
    return d.notify.wait_for(lambda m: m.pid == d.pid and (m.value("STATUS") or "").startswith(prefix),
                             timeout, what=f"STATUS={prefix}...", alive=d.alive)[1]


def _latest_status(d):
    st = [m.value("STATUS") for m in d.notifications() if m.value("STATUS") is not None]
    return st[-1] if st else None


# --------------------------------------------------------------------------
# 1-3: what gets vacuumed when

def test_urgent_vacuumed_at_once_others_left_alone(tmp_path, daemon):
    dbs, state = _dirs(tmp_path)
    hot, warm, cool = dbs / "hot.db", dbs / "warm.db", dbs / "cool.db"
    make_db(hot, 35)
    make_db(warm, 25)
    make_db(cool, 5)
    hot_before, hot_cs = db_stats(hot), checksum(hot, "t")
    warm_fl = freelist_count(warm)
    untouched = snapshot([warm, cool])

    # the window is two hours away: only the urgent one may run now
    d = daemon.start(config_text(state, [dbs / "*.db"], poll_interval="1s"))
    done = d.wait_for_entry(msgid="VACUUM_DONE", DB_PATH=hot)
    hot_pages = _assert_vacuumed_on_disk(hot, hot_cs)
    _assert_vacuum_done_entry(done, hot, hot_before, hot_pages)

    es = d.entries()
    sched = [i for i, e in enumerate(es) if entry_matches(e, "SCHEDULED", DB_PATH=hot, REASON="urgent")]
    assert sched, "no SCHEDULED entry with REASON=urgent\n" + format_entries(es)
    assert sched[0] < _index(es, done), "SCHEDULED came after VACUUM_DONE\n" + format_entries(es)
    assert es[sched[0]]["OPERATION"] == "vacuum"

    # the 25% one is seen, and waits for its window: three more polls of
    # each leave them as they were
    d.wait_for_entry(msgid="SCHEDULED", DB_PATH=warm, REASON="outside-window")
    d.wait_for_polls([warm, cool], 3)
    assert d.alive(), d.describe()
    assert freelist_count(warm) == warm_fl
    assert snapshot([warm, cool]) == untouched
    es = d.entries()
    for p in (warm, cool):
        bad = [e for e in es if e.get("DB_PATH") == str(p) and e.get("MESSAGE_ID") in
               (MSGID["VACUUM_DONE"], MSGID["JOB_FAILED"])
               or entry_matches(e, "SCHEDULED", DB_PATH=p, REASON="urgent")
               or entry_matches(e, "SCHEDULED", DB_PATH=p, REASON="threshold")]
        assert not bad, f"{p} was not to be touched:\n" + format_entries(bad)
    # what `systemctl status` shows
    st = _latest_status(d) or ""
    assert st.startswith("Watching 3 databases;") and f"vacuumed {hot}" in st, st
    assert d.stop() == 0, d.describe()


def test_threshold_vacuum_inside_window(tmp_path, daemon):
    dbs, state = _dirs(tmp_path)
    warm = dbs / "warm.db"
    make_db(warm, 25)
    before, cs = db_stats(warm), checksum(warm, "t")

    d = daemon.start(config_text(state, [dbs / "*.db"], vacuum={"window": window_with_now(True)}))
    done = d.wait_for_entry(msgid="VACUUM_DONE", DB_PATH=warm)
    assert done["REASON"] == "threshold", done
    pages = _assert_vacuumed_on_disk(warm, cs)
    _assert_vacuum_done_entry(done, warm, before, pages)
    es = d.entries()
    sched = [i for i, e in enumerate(es) if entry_matches(e, "SCHEDULED", DB_PATH=warm, REASON="threshold")]
    assert sched and sched[0] < _index(es, done), format_entries(es)
    assert d.stop() == 0, d.describe()


def test_wal_database_vacuumed_and_wal_truncated(tmp_path, daemon):
    dbs, state = _dirs(tmp_path)
    db = dbs / "wal.db"
    wal = str(db) + "-wal"
    # An application's connection stays open: the deletes sit in the -wal
    # and the main file's header is stale (SQLITE-NOTES.md).
    con = make_db(db, 35, mode="wal", keep_open=True)
    try:
        assert os.path.getsize(wal) > 0
        before, cs = db_stats(db), checksum(db, "t")
        assert abs(before["fragmentation"] - 35) <= 3

        d = daemon.start(config_text(state, [dbs / "*.db"]))
        done = d.wait_for_entry(msgid="VACUUM_DONE", DB_PATH=db)
        # the -wal is still there (our connection is open) but empty
        assert os.path.getsize(wal) == 0, f"-wal is {os.path.getsize(wal)} bytes after the VACUUM"
        pages = _assert_vacuumed_on_disk(db, cs, mode="wal")
        _assert_vacuum_done_entry(done, db, before, pages)
        assert not d.entries(msgid="CHECKPOINT_BUSY"), format_entries(d.entries())
        # the application's connection still works
        con.execute("INSERT INTO app(note) VALUES('after vacuum')")
        assert con.execute("SELECT count(*) FROM app").fetchone()[0] == 1
    finally:
        con.close()
    assert not os.path.exists(wal) or os.path.getsize(wal) == 0
    assert d.stop() == 0, d.describe()


# --------------------------------------------------------------------------
# 4: ANALYZE

def _stat1(path, idx):
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        if not con.execute("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1'").fetchall():
            return None
        return con.execute("SELECT tbl, idx, stat FROM sqlite_stat1 WHERE idx = ?", (idx,)).fetchall()
    finally:
        con.close()


def test_analyze_on_timer_and_never(tmp_path, daemon):
    dbs, state = _dirs(tmp_path)
    daily, often, never = dbs / "daily.db", dbs / "often.db", dbs / "never.db"
    for p in (daily, often, never):
        make_db(p, 5, rows=200, index=True)
        assert _stat1(p, "kv_k") is None
    cfg = config_text(state, [{"path": never, "analyze": {"interval": "never"}},
                              {"path": often, "analyze": {"interval": "1s"}},
                              daily],
                      analyze={"interval": "1h"})
    d = daemon.start(cfg)

    # the first ANALYZE comes within one poll interval of first seeing the
    # database, even with a one-hour timer: it is decided at the first or
    # the second look at the file
    first = d.wait_for_entry(msgid="ANALYZE_DONE", DB_PATH=daily)
    assert first["REASON"] == "timer" and first["OPERATION"] == "analyze", first
    assert re.fullmatch(r"\d+", first["DURATION_MS"]), first
    es = d.entries()
    due = next(i for i, e in enumerate(es) if entry_matches(e, "SCHEDULED", DB_PATH=daily, OPERATION="analyze"))
    looks = [e for e in es[:due] if polled(daily)(e)]
    assert 1 <= len(looks) <= 2, f"ANALYZE decided at look {len(looks)} at {daily}\n" + format_entries(es)
    stat = _stat1(daily, "kv_k")
    assert stat and stat[0][0] == "kv", stat
    # the estimated row count of kv (2000 rows; analysis_limit makes it approximate)
    assert int(stat[0][2].split()[0]) > 0, stat

    # a 1 s timer runs again and again; a 1 h one does not (the three runs
    # of often.db take two more poll rounds, which look at the others too)
    d.wait_for_entries(3, M("ANALYZE_DONE", DB_PATH=often))
    for p in (daily, never):
        d.wait_for_entries(3, polled(p))
    assert _stat1(often, "kv_k"), "no sqlite_stat1 in often.db"
    assert len(d.entries(msgid="ANALYZE_DONE", DB_PATH=daily)) == 1
    # never: no statistics, no entry
    assert _stat1(never, "kv_k") is None
    assert not [e for e in d.entries() if e.get("DB_PATH") == str(never) and e.get("OPERATION") == "analyze"], \
        format_entries(d.entries())
    assert d.stop() == 0, d.describe()


# --------------------------------------------------------------------------
# 5: lock conflicts

@pytest.mark.parametrize("mode,begin,write_first", [
    ("delete", "BEGIN EXCLUSIVE", False),
    ("delete", "BEGIN IMMEDIATE", True),
    ("wal", "BEGIN IMMEDIATE", True),
], ids=["rollback-exclusive", "rollback-immediate-insert", "wal-immediate-insert"])
def test_lock_conflict_retries_with_backoff(tmp_path, daemon, app, mode, begin, write_first):
    # attempts enough that giving up would take longer than the test waits
    # for anything: the daemon must not give up before the lock goes
    initial_ms, max_ms, max_attempts = 200, 2000, 20

    # another process holds the lock until the daemon has backed off
    # twice, then lets go and goes on working
    db, cs, holder, d = _busy_db(tmp_path, app, daemon,
                                 {"initial_backoff": f"{initial_ms}ms", "max_backoff": f"{max_ms}ms",
                                  "max_attempts": max_attempts}, mode=mode, begin=begin, write_first=write_first)
    d.wait_for_entries(2, M("RETRY", DB_PATH=db))
    holder.release()
    done = d.wait_for_entry(msgid="VACUUM_DONE", DB_PATH=db, timeout=30)
    rc, out, err = holder.finish()
    assert rc == 0 and err == "", f"the application saw an error (exit {rc}):\n{err}"
    assert out.split()[-2:] == ["ok", "21"], out

    es = d.entries()
    retries = [e for e in es if entry_matches(e, "RETRY", DB_PATH=db)]
    assert len(retries) >= 2, "fewer than 2 RETRY entries\n" + format_entries(es)
    assert not d.entries(msgid="GAVE_UP"), format_entries(es)
    assert all(_index(es, r) < _index(es, done) for r in retries)
    attempts = [int(r["ATTEMPT"]) for r in retries]
    # consecutive attempts of one job (a later lock by the app may start a new series at 1)
    assert attempts[:2] == [1, 2], attempts
    backoffs = [int(r["BACKOFF_MS"]) for r in retries]
    for a_, b_ in zip(attempts, backoffs):
        nominal = min(initial_ms * 2 ** (a_ - 1), max_ms)
        assert 0.75 * nominal <= b_ <= nominal, (attempts, backoffs)
    series = backoffs[:next((i for i in range(1, len(attempts)) if attempts[i] != attempts[i - 1] + 1),
                            len(attempts))]
    for x, y in zip(series, series[1:]):
        assert y > x or y >= 0.75 * max_ms, f"backoff did not grow: {backoffs}"
    for r in retries:
        assert r["OPERATION"] == "vacuum" and r["SQLITE_ERROR"], r
    # the VACUUM ran once the lock was gone, and lost nothing
    assert float(done["FRAGMENTATION_BEFORE"]) >= 30
    assert checksum(db, "t") == cs
    assert freelist_count(db) == 0
    assert quick_check(db, "integrity_check") == ["ok"]
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        assert con.execute("SELECT count(*) FROM app").fetchone()[0] == 21
    finally:
        con.close()
    assert d.stop() == 0, d.describe()


def test_lock_held_too_long_gives_up_then_vacuums_later(tmp_path, daemon, app):
    db, cs, holder, d = _busy_db(tmp_path, app, daemon,
                                 {"initial_backoff": "100ms", "max_backoff": "200ms", "max_attempts": 3},
                                 begin="BEGIN EXCLUSIVE", after=5, write_first=False)
    gave_up = d.wait_for_entry(msgid="GAVE_UP", DB_PATH=db)
    assert gave_up["PRIORITY"] == "4" and gave_up["ATTEMPT"] == "3", gave_up
    assert gave_up["OPERATION"] == "vacuum", gave_up
    es = d.entries()
    retries = [e for e in es[:_index(es, gave_up)] if entry_matches(e, "RETRY", DB_PATH=db)]
    assert [r["ATTEMPT"] for r in retries] == ["1", "2"], format_entries(es)
    assert not [e for e in es if entry_matches(e, "VACUUM_DONE", DB_PATH=db)], format_entries(es)

    # a later poll decides again, and once the app is done the VACUUM runs
    holder.release()
    done = d.wait_for_entry(msgid="VACUUM_DONE", DB_PATH=db, timeout=30)
    rc, out, err = holder.finish()
    assert rc == 0 and err == "", f"the application saw an error (exit {rc}):\n{err}"
    assert int(done["__REALTIME_TIMESTAMP"]) > int(gave_up["__REALTIME_TIMESTAMP"])
    _assert_vacuumed_on_disk(db, cs)
    assert d.stop() == 0, d.describe()


def test_locked_at_every_poll_is_reported(tmp_path, daemon, app):
    """An application holding an exclusive lock with a write under way keeps
    even the statistics read out: after max_attempts polls in a row the
    admin hears of it once (GAVE_UP, OPERATION=poll), not only at debug."""
    dbs, state = _dirs(tmp_path)
    db = dbs / "held.db"
    make_db(db, 35)
    cs = checksum(db, "t")
    holder = app(db, begin="BEGIN EXCLUSIVE", after=3, write_first=True)
    d = daemon.start(config_text(state, [dbs / "*.db"],
                                 retry={"initial_backoff": "100ms", "max_backoff": "200ms",
                                        "max_attempts": 2, "busy_timeout": "50ms"}))
    gave_up = d.wait_for_entry(msgid="GAVE_UP", DB_PATH=db, timeout=15)
    assert gave_up["OPERATION"] == "poll" and gave_up["PRIORITY"] == "4", gave_up
    assert gave_up["ATTEMPT"] == "2", gave_up
    # said once, not at every poll while the lock lasts: three more polls
    # find it locked, and the admin hears nothing more
    d.wait_for_polls(db, 3)
    es = d.entries()
    assert len([e for e in es if entry_matches(e, "GAVE_UP", DB_PATH=db)]) == 1, format_entries(es)
    holder.release()
    rc, out, err = holder.finish()
    assert rc == 0 and err == "", f"the application saw an error (exit {rc}):\n{err}"
    d.wait_for_entry(msgid="VACUUM_DONE", DB_PATH=db, timeout=30)
    es = d.entries()
    assert len([e for e in es if entry_matches(e, "GAVE_UP", DB_PATH=db)]) == 1, format_entries(es)
    _assert_vacuumed_on_disk(db, cs)
    assert d.stop() == 0, d.describe()


# --------------------------------------------------------------------------
# 6: corruption

@pytest.mark.parametrize("damage", ["btree-pages", "freelist"])
def test_corrupt_database_reported_and_never_vacuumed(tmp_path, daemon, damage):
    """btree-pages: table leaf pages overwritten (VACUUM itself would fail
    too); freelist: a page both free and in use, which quick_check reports
    but VACUUM would silently rewrite, so only the check protects it."""
    dbs, state = _dirs(tmp_path)
    bad, good = dbs / "bad.db", dbs / "good.db"
    if damage == "btree-pages":
        make_corrupt_db(bad)
    else:
        make_freelist_corrupt_db(bad)
    assert fragmentation(bad) >= 30  # urgent: the daemon will want to VACUUM it
    make_db(good, 35)
    bad_files = snapshot([bad])
    good_cs = checksum(good, "t")

    d = daemon.start(config_text(state, [dbs / "*.db"]))
    crit = d.wait_for_entry(msgid="CORRUPT", DB_PATH=bad)
    assert crit["PRIORITY"] == "2", crit
    assert crit["SQLITE_ERROR"], crit
    d.wait_for_entry(msgid="VACUUM_DONE", DB_PATH=good)
    _assert_vacuumed_on_disk(good, good_cs)

    # the polls of the corrupt one leave no entry (it is held until the file
    # changes): three more polls of its neighbour are three more rounds
    d.wait_for_polls(good, 3)
    assert d.alive(), d.describe()
    assert snapshot([bad]) == bad_files, "the corrupt database was modified"
    es = d.entries()
    assert len([e for e in es if entry_matches(e, "CORRUPT", DB_PATH=bad)]) == 1, \
        "the corruption should be reported once, not at every poll\n" + format_entries(es)
    assert not [e for e in es if entry_matches(e, "VACUUM_DONE", DB_PATH=bad)]
    st = _latest_status(d)
    assert st and "Watching 2 databases" in st, st
    assert d.stop() == 0, d.describe()


# --------------------------------------------------------------------------
# 7: databases coming and going

def test_deleted_database_reported_once(tmp_path, daemon):
    dbs, state = _dirs(tmp_path)
    a, b, c = dbs / "a.db", dbs / "b.db", dbs / "c.db"
    make_db(a, 5)
    make_db(b, 5)
    d = daemon.start(config_text(state, [dbs / "*.db"], poll_interval="500ms"))
    _wait_status(d, "Watching 2 databases;")

    os.unlink(b)
    gone = d.wait_for_entry(msgid="DB_REMOVED", DB_PATH=b)
    assert gone["OPERATION"] == "poll", gone

    # the others are still maintained: a new urgent one gets vacuumed
    _create_atomically(c, 35)
    cs = checksum(c, "t")
    d.wait_for_entry(msgid="VACUUM_DONE", DB_PATH=c)
    _assert_vacuumed_on_disk(c, cs)
    d.wait_for_polls([a, c], 3)
    assert d.alive(), d.describe()
    removed = d.entries(msgid="DB_REMOVED")
    assert len(removed) == 1, format_entries(removed)
    assert "Watching 2 databases" in (_latest_status(d) or ""), d.notifications()
    assert d.stop() == 0, d.describe()


def test_configured_path_deleted_and_recreated(tmp_path, daemon):
    dbs, state = _dirs(tmp_path)
    x = dbs / "x.db"
    make_db(x, 5)
    d = daemon.start(config_text(state, [x], poll_interval="500ms"))
    _wait_status(d, "Watching 1 database;")

    os.unlink(x)
    gone = d.wait_for_entry(msgid="DB_REMOVED", DB_PATH=x)
    assert gone["PRIORITY"] == "4", gone  # a configured database missing is worth a warning
    d.wait_for_poll_rounds(3)  # a missing file's polls leave no entry
    assert len(d.entries(msgid="DB_REMOVED", DB_PATH=x)) == 1, format_entries(d.entries())

    # it comes back (fragmented): watched again, and maintained
    _create_atomically(x, 35)
    cs = checksum(x, "t")
    d.wait_for_entry(msgid="DB_ADDED", DB_PATH=x)
    d.wait_for_entry(msgid="VACUUM_DONE", DB_PATH=x)
    _assert_vacuumed_on_disk(x, cs)
    assert d.alive(), d.describe()
    assert d.stop() == 0, d.describe()


# --------------------------------------------------------------------------
# 8: reload

def test_reload_adds_database(tmp_path, daemon):
    dbs, state = _dirs(tmp_path)
    extra = tmp_path / "extra"
    extra.mkdir()
    a, new = dbs / "a.db", extra / "new.db"
    make_db(a, 5)
    make_db(new, 35)
    new_before, new_cs = db_stats(new), checksum(new, "t")
    cfg = daemon.config(config_text(state, [dbs / "*.db"]), name="maintd.yaml")
    d = daemon.start(cfg)

    # not configured yet: left alone while the configured one is polled
    d.wait_for_polls(a, 2)
    assert db_stats(new) == new_before
    assert not [e for e in d.entries() if e.get("DB_PATH") == str(new)]

    with open(cfg, "w") as f:
        f.write(config_text(state, [dbs / "*.db", new]))
    mark = len(d.notify.snapshot())
    d.signal(signal.SIGHUP)
    i, _ = d.wait_notify("RELOADING=1", after=mark)
    d.wait_notify("READY=1", after=i + 1)
    rel = d.wait_for_entry(msgid="RELOADED")
    assert rel.get("CONFIG_FILE") == cfg, rel
    done = d.wait_for_entry(msgid="VACUUM_DONE", DB_PATH=new)
    pages = _assert_vacuumed_on_disk(new, new_cs)
    _assert_vacuum_done_entry(done, new, new_before, pages)
    assert not d.entries(msgid="RELOAD_FAILED")
    assert d.stop() == 0, d.describe()


def test_reload_with_broken_config_keeps_old_one(tmp_path, daemon):
    dbs, state = _dirs(tmp_path)
    a, late = dbs / "a.db", dbs / "late.db"
    make_db(a, 5)
    cfg = daemon.config(config_text(state, [dbs / "*.db"]), name="maintd.yaml")
    d = daemon.start(cfg)
    _wait_status(d, "Watching 1 database;")

    # a syntax error on line 3 (an unclosed flow sequence)
    with open(cfg, "w") as f:
        f.write(f"poll_interval: 1s\nstate_dir: {state}\ndatabases: [\n  {{path: /nowhere/*.db}}\n")
    mark = len(d.notify.snapshot())
    d.signal(signal.SIGHUP)
    i, _ = d.wait_notify("RELOADING=1", after=mark)
    d.wait_notify("READY=1", after=i + 1)
    fails = d.wait_for_entries(2, msgid="RELOAD_FAILED")
    for e in fails:
        assert e["PRIORITY"] == "3", e
    located = [e for e in fails if re.match(re.escape(cfg) + r":\d+:\d+: ", e["MESSAGE"])]
    assert located, "no RELOAD_FAILED entry names file:line:column\n" + format_entries(fails)
    assert not d.entries(msgid="RELOADED")
    assert d.alive(), d.describe()

    # the old configuration is still in force: its glob, its thresholds
    _create_atomically(late, 35)
    cs = checksum(late, "t")
    d.wait_for_entry(msgid="VACUUM_DONE", DB_PATH=late)
    _assert_vacuumed_on_disk(late, cs)
    assert d.stop() == 0, d.describe()


# --------------------------------------------------------------------------
# 9: stopping in the middle of a VACUUM

@pytest.fixture(scope="module")
def big_db_template(tmp_path_factory):
    """About 80 MB, 35% free pages: a VACUUM that takes a while. Made once
    and copied for each test."""
    p = tmp_path_factory.mktemp("big") / "big.db"
    make_db(p, 35, rows=20000)
    return p, checksum(p, "t"), db_stats(p)


@pytest.mark.parametrize("sigterms,when", [(1, "start"), (2, "start"), (1, "copy-back")],
                         ids=["one-sigterm", "two-sigterms", "during-copy-back"])
def test_sigterm_during_vacuum(tmp_path, daemon, big_db_template, sigterms, when):
    """start: SIGTERM as soon as the job starts (VACUUM's first phase,
    which can be interrupted); copy-back: once the VACUUM writes the
    database itself (its -journal appears), which cannot be interrupted
    and must be waited for."""
    template, cs, before = big_db_template
    dbs, state = _dirs(tmp_path)
    db = dbs / "big.db"
    with open(template, "rb") as src, open(db, "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)

    d = daemon.start(config_text(state, [dbs / "*.db"], vacuum={"integrity": "none"}))
    # the moment the job starts, systemd's status says so
    d.notify.wait_for(lambda m: m.pid == d.pid and "1 job running" in (m.value("STATUS") or ""),
                      what="STATUS with 1 job running")
    if when == "copy-back":
        journal, deadline = str(db) + "-journal", time.monotonic() + 20
        while not os.path.exists(journal):
            assert time.monotonic() < deadline and d.alive(), "the VACUUM never wrote its journal\n" + d.describe()
            time.sleep(0.001)
    t = time.monotonic()
    d.signal(signal.SIGTERM)
    if sigterms == 2:
        # the second once the daemon has taken the first (it is stopping)
        d.wait_notify("STOPPING=1")
        d.signal(signal.SIGTERM)
    rc = d.wait(30)
    took = time.monotonic() - t
    assert rc == 0, d.describe()
    d.wait_notify("STOPPING=1")
    stopping = d.wait_for_entry(msgid="STOPPING")
    assert stopping.get("JOBS_RUNNING") == "1", \
        "the SIGTERM did not arrive during the VACUUM; the test proves nothing\n" + format_entries(d.entries())

    # either finished or not started, never half done; nothing lost
    assert not os.path.exists(str(db) + "-journal"), "a hot journal was left behind"
    assert quick_check(db, "integrity_check") == ["ok"]
    assert checksum(db, "t") == cs
    es = d.entries()
    fl = freelist_count(db)
    if d.entries(msgid="VACUUM_DONE", DB_PATH=db):
        assert fl == 0
    else:
        assert fl == before["freelist_count"], (fl, before)
        assert [e for e in es if entry_matches(e, "JOB_FAILED", DB_PATH=db) and "interrupted" in e["MESSAGE"]], \
            format_entries(es)
    print(f"stopped in {took:.2f}s, freelist {fl}")


def test_sigterm_storm_exits_cleanly(tmp_path, daemon):
    """An admin (or systemd, then a second stop) sends SIGTERM again and
    again: the first stops the daemon, the others are swallowed, also while
    it closes its last handles and exits, and it exits with status 0. Sent
    until it has exited: however fast or slow the machine, some arrive
    during the shutdown."""
    dbs, state = _dirs(tmp_path)
    make_db(dbs / "a.db", 5)
    d = daemon.start(config_text(state, [dbs / "*.db"]))
    sent = 0
    while d.proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(d.pid, signal.SIGTERM)
            sent += 1
        time.sleep(0.0002)
    rc = d.wait(30)
    assert rc == 0, f"exit status {rc} after {sent} SIGTERMs\n" + d.describe()
    assert sent > 1


# --------------------------------------------------------------------------
# 10: what systemd is told

def test_notify_ready_status_watchdog_stopping(tmp_path, daemon, notify_socket):
    dbs, state = _dirs(tmp_path)
    make_db(dbs / "a.db", 5)
    d = daemon.start(config_text(state, [dbs / "*.db"]), notify=notify_socket,
                     env={"WATCHDOG_USEC": "200000"})
    d.wait_notify("READY=1")
    _wait_status(d, "Watching 1 database;")

    # fed again and again (every 100 ms, half of WATCHDOG_USEC), by the
    # daemon itself
    i = -1
    for _ in range(3):
        i, dog = notify_socket.wait_for(lambda m: m.has("WATCHDOG=1"), after=i + 1, what="WATCHDOG=1",
                                        alive=d.alive)
        assert dog.pid == d.pid, [(m.pid, m.text) for m in notify_socket.snapshot()]

    mark = len(d.notify.snapshot())
    assert d.stop() == 0, d.describe()
    d.wait_notify("STOPPING=1", after=mark)


def test_watchdog_not_sent_for_another_pid(tmp_path, daemon):
    dbs, state = _dirs(tmp_path)
    make_db(dbs / "a.db", 5)
    # WATCHDOG_PID names another process: the watchdog is not ours to feed
    d = daemon.start(config_text(state, [dbs / "*.db"]),
                     env={"WATCHDOG_USEC": "200000", "WATCHDOG_PID": str(os.getpid())})
    # the loop runs for three polls (a watchdog timer would have fired from
    # the first iteration on); STOPPING=1 comes after anything it sent
    # before, on the same socket
    d.wait_for_polls(dbs / "a.db", 3)
    assert d.alive(), d.describe()
    assert d.stop() == 0, d.describe()
    d.wait_notify("STOPPING=1")
    assert not [m for m in d.notifications() if m.has("WATCHDOG=1")], [m.text for m in d.notifications()]


# --------------------------------------------------------------------------
# 11: --once and --dry-run

def test_once_vacuums_what_is_due_and_exits(tmp_path, daemon):
    dbs, state = _dirs(tmp_path)
    hot, cool = dbs / "hot.db", dbs / "cool.db"
    make_db(hot, 35)
    make_db(cool, 5)
    cs = checksum(hot, "t")
    cool_files = snapshot([cool])

    d, rc = daemon.run_once(config_text(state, [dbs / "*.db"]))
    assert rc == 0, d.describe()
    _assert_vacuumed_on_disk(hot, cs)
    assert snapshot([cool]) == cool_files
    assert d.entries(msgid="VACUUM_DONE", DB_PATH=hot)
    assert not d.entries(msgid="VACUUM_DONE", DB_PATH=cool)


def test_once_exits_1_when_a_job_fails(tmp_path, daemon):
    dbs, state = _dirs(tmp_path)
    hot, bad = dbs / "hot.db", dbs / "bad.db"
    make_db(hot, 35)
    make_corrupt_db(bad)
    assert fragmentation(bad) >= 30
    cs = checksum(hot, "t")
    bad_files = snapshot([bad])

    d, rc = daemon.run_once(config_text(state, [dbs / "*.db"]))
    assert rc == 1, d.describe()
    assert d.entries(msgid="CORRUPT", DB_PATH=bad), format_entries(d.entries())
    assert snapshot([bad]) == bad_files
    _assert_vacuumed_on_disk(hot, cs)


CORPUS = os.path.join(os.environ.get("MAINTD_SOURCE_ROOT", os.path.join(os.path.dirname(__file__), "..", "..")),
                      "..", "shared", "corpus", "sqlite-testsuite", "db")


@pytest.mark.parametrize("name", ["corruptL-1", "corruptL-3", "incrvacuum-1"])
def test_once_reports_corruption_found_while_polling(tmp_path, daemon, name):
    """Databases from SQLite's own test suite whose statistics cannot even be
    read without SQLITE_CORRUPT: a CRIT entry, the file untouched, exit 1,
    and the healthy database beside them still maintained."""
    src = os.path.join(CORPUS, name + ".db")
    if not os.path.exists(src):
        pytest.skip(f"corpus not found at {CORPUS}")
    dbs, state = _dirs(tmp_path)
    bad, hot = dbs / "bad.db", dbs / "hot.db"
    shutil.copyfile(src, bad)
    make_db(hot, 35)
    cs = checksum(hot, "t")
    bad_files = snapshot([bad])

    d, rc = daemon.run_once(config_text(state, [dbs / "*.db"]))
    assert rc == 1, d.describe()
    crit = d.entries(msgid="CORRUPT", DB_PATH=bad)
    assert crit and crit[0]["PRIORITY"] == "2", format_entries(d.entries())
    assert snapshot([bad]) == bad_files
    _assert_vacuumed_on_disk(hot, cs)


def test_once_reload_does_not_start_more_polls(tmp_path, daemon, app):
    """--once is one poll: a SIGHUP while its VACUUM waits for an
    application's lock reloads the configuration, and the daemon still ends
    after that poll's work, without a second round."""
    db, cs, holder, d = _busy_db(tmp_path, app, daemon,
                                 {"initial_backoff": "200ms", "max_backoff": "1s", "max_attempts": 1000}, "--once")
    d.wait_for_entry(msgid="RETRY", DB_PATH=db)
    d.signal(signal.SIGHUP)
    d.wait_for_entry(msgid="RELOADED")
    holder.release()
    assert d.wait(timeout=60) == 0, d.describe()
    rc, out, err = holder.finish()
    assert rc == 0 and err == "", f"the application saw an error (exit {rc}):\n{err}"
    assert len(d.entries(msgid="VACUUM_DONE", DB_PATH=db)) == 1, format_entries(d.entries())
    assert checksum(db, "t") == cs
    assert len(d.entries(poll_round)) == 1, format_entries(d.entries())


def test_once_reload_that_drops_the_waiting_database_ends_the_run(tmp_path, daemon, app):
    """--once, its only VACUUM backing off from an application's lock, and
    a reload whose configuration no longer has that database: nothing is
    left to do, so the run ends (exit 0), untouched, while the application
    still holds its lock."""
    db, cs, holder, d = _busy_db(tmp_path, app, daemon,
                                 {"initial_backoff": "1s", "max_backoff": "5s", "max_attempts": 1000}, "--once")
    d.wait_for_entry(msgid="RETRY", DB_PATH=db)
    with open(d.config_path, "w") as f:
        f.write(config_text(tmp_path / "state", [tmp_path / "elsewhere" / "none.db"]))
    d.signal(signal.SIGHUP)
    assert d.wait(timeout=60) == 0, d.describe()
    assert d.entries(msgid="DB_REMOVED", DB_PATH=db), format_entries(d.entries())
    assert not d.entries(msgid="VACUUM_DONE"), format_entries(d.entries())
    holder.release()
    rc, out, err = holder.finish()
    assert rc == 0 and err == "", f"the application saw an error (exit {rc}):\n{err}"
    assert checksum(db, "t") == cs


def test_dry_run_once_changes_nothing(tmp_path, daemon):
    dbs, state = _dirs(tmp_path)
    hot, warm, cool = dbs / "hot.db", dbs / "warm.db", dbs / "cool.db"
    make_db(hot, 35)
    make_db(warm, 25)
    make_db(cool, 5)
    files = snapshot([hot, warm, cool])

    d, rc = daemon.run_once(config_text(state, [dbs / "*.db"], vacuum={"window": window_with_now(True)}),
                            "--dry-run")
    assert rc == 0, d.describe()
    assert snapshot([hot, warm, cool]) == files, "--dry-run changed a file"
    es = d.entries()
    for p, reason in ((hot, "urgent"), (warm, "threshold")):
        s = [e for e in es if entry_matches(e, "SCHEDULED", DB_PATH=p, REASON=reason)]
        assert s and "dry run" in s[0]["MESSAGE"], format_entries(es)
    assert not [e for e in es if e.get("MESSAGE_ID") in (MSGID["VACUUM_DONE"], MSGID["ANALYZE_DONE"])], \
        format_entries(es)
    assert not [e for e in es if e.get("DB_PATH") == str(cool) and e.get("MESSAGE_ID") == MSGID["SCHEDULED"]]


# --------------------------------------------------------------------------
# 12: history survives a restart

def test_restart_keeps_min_interval(tmp_path, daemon):
    dbs, state = _dirs(tmp_path)
    db = dbs / "a.db"
    make_db(db, 35)
    cfg = daemon.config(config_text(state, [dbs / "*.db"], vacuum={"min_interval": "1h"}))

    d1 = daemon.start(cfg)
    d1.wait_for_entry(msgid="VACUUM_DONE", DB_PATH=db)
    assert d1.stop() == 0, d1.describe()
    assert freelist_count(db) == 0

    refragment(db, 35)
    fl = freelist_count(db)
    d2 = daemon.start(cfg)
    wait = d2.wait_for_entry(msgid="SCHEDULED", DB_PATH=db, REASON="min-interval")
    assert float(wait["FRAGMENTATION_BEFORE"]) >= 30, wait
    d2.wait_for_polls(db, 3)
    assert freelist_count(db) == fl
    assert not d2.entries(msgid="VACUUM_DONE"), format_entries(d2.entries())
    assert d2.stop() == 0, d2.describe()


# --------------------------------------------------------------------------
# 13: one file under several configured paths

# An application: one INSERT into app every 0.2 s (autocommit, 30 s busy
# timeout) until the stop file appears; every SQLite error is counted, not
# fatal. Prints a JSON report: the ids it committed and the errors.
INSERTER_SCRIPT = r"""
import json, os, sqlite3, sys, time
path, stop = sys.argv[1], sys.argv[2]
con = sqlite3.connect(path, isolation_level=None, timeout=30)
rep = {"committed": [], "errors": []}
print("started", flush=True)
i = 0
while not os.path.exists(stop):
    i += 1
    try:
        con.execute("INSERT INTO app(id, note) VALUES(?, ?)", (i, f"insert {i}"))
        rep["committed"].append(i)
    except sqlite3.Error as e:
        rep["errors"].append(f"{time.time():.3f} insert {i}: {type(e).__name__}: {e}")
    time.sleep(0.2)
con.close()
print(json.dumps(rep), flush=True)
"""


# The entries that end a job on a database, one way or another.
JOB_ENDS = {MSGID[k] for k in ("VACUUM_DONE", "JOB_FAILED", "CORRUPT", "CANNOT_MAINTAIN", "GAVE_UP", "NO_SPACE",
                               "ROWID_GUARD")}


def _app_ids(path):
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        return [r[0] for r in con.execute("SELECT id FROM app ORDER BY id")]
    finally:
        con.close()


def _stop_after_one_more_commit(ins, db, stop):
    """Let the inserting application commit once more, then stop it; its report."""
    n = len(_app_ids(db))
    deadline = time.monotonic() + 3 * WAIT
    while len(_app_ids(db)) <= n:
        assert ins.proc.poll() is None and time.monotonic() < deadline, \
            "the application committed nothing after the VACUUM"
        time.sleep(0.05)
    stop.touch()
    return ins.result(timeout=3 * WAIT)


@pytest.fixture
def bind_mount():
    """mount(src, dst): a bind mount, undone after the test."""
    mounted = []

    def mount(src, dst):
        subprocess.run(["mount", "--bind", str(src), str(dst)], check=True)
        mounted.append(dst)
    yield mount
    for d in reversed(mounted):
        subprocess.run(["umount", str(d)], check=False)


def test_same_file_under_other_paths_while_vacuum_runs(tmp_path, daemon, bind_mount):
    """x.db is configured three ways: its path, the same path with "//"
    (thresholds 99%: never vacuumed under that name) and its directory
    bind-mounted on another watched directory (likewise; a hard link would
    be refused outright, test_tenant_fs.py). While the daemon VACUUMs x.db,
    the polls of the other two names must not open and close the file:
    a close() drops every POSIX lock the process holds on it, the VACUUM's
    included, and the application, inserting a row every 0.2 s, would
    write into the VACUUM and corrupt the file."""
    dbs, state = _dirs(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    db, link = dbs / "x.db", other / "x.db"
    double = f"{dbs}//x.db"
    # about 180 MB, half of it free pages: a VACUUM that lasts several polls
    make_db(db, 50, rows=60000, blob=3000)
    bind_mount(dbs, other)
    assert os.stat(double).st_ino == os.stat(link).st_ino == os.stat(db).st_ino
    cs = checksum(db, "t")
    never = {"threshold": "99%", "urgent_threshold": "99%"}
    cfg = config_text(state, [db, {"path": double, "vacuum": never}, {"path": other / "*.db", "vacuum": never}],
                      poll_interval="200ms", max_concurrent_jobs=2,
                      vacuum={"window": "always", "integrity": "quick"})

    stop = tmp_path / "stop-inserting"
    ins = helpers.Script(INSERTER_SCRIPT, db, stop)
    try:
        # the application has committed before the daemon starts...
        deadline = time.monotonic() + WAIT
        while not _app_ids(db):
            assert ins.proc.poll() is None and time.monotonic() < deadline, "the application never committed"
            time.sleep(0.05)
        d = daemon.start(cfg)
        # ...and commits after the VACUUM job is over
        done = d.wait_for_entry(lambda e: e.get("DB_PATH") == str(db) and e.get("MESSAGE_ID") in JOB_ENDS,
                                timeout=6 * WAIT)
        rep = _stop_after_one_more_commit(ins, db, stop)
    finally:
        stop.touch()
        ins.kill()
    es = d.entries()
    assert rep["errors"] == [], f"the application saw errors: {rep['errors']}\n" + format_entries(es)
    assert done["MESSAGE_ID"] == MSGID["VACUUM_DONE"], format_entries(es)
    # the other names were watched (polled) all along
    for p in (double, link):
        d.wait_for_polls(p, 1)
    es = d.entries()
    assert not [e for e in es if e.get("MESSAGE_ID") in (MSGID["CORRUPT"], MSGID["JOB_FAILED"])], \
        format_entries(es)
    assert [e["DB_PATH"] for e in es if e.get("MESSAGE_ID") == MSGID["VACUUM_DONE"]] == [str(db)], \
        format_entries(es)
    assert float(done["FRAGMENTATION_BEFORE"]) >= 45, done
    assert quick_check(db, "integrity_check") == ["ok"]
    assert checksum(db, "t") == cs, "the rows of t changed"
    assert _app_ids(db) == rep["committed"], "the rows the application committed are not all there"
    assert freelist_count(db) == 0
    assert d.stop() == 0, d.describe()
    print(f"{len(rep['committed'])} inserts, VACUUM {done['DURATION_MS']} ms")


def test_same_file_under_two_due_paths_never_two_jobs_at_once(tmp_path, daemon):
    """x.db configured under two paths ("/dir/x.db", "/dir//x.db"), both
    due for VACUUM. An application's lock makes both jobs back off, so
    both wait in the queue, each with its retry time. When the lock goes,
    at most one job may have the file: the other path's job, started
    meanwhile, would open and close the file (its look before the open,
    every retry) and so drop the running VACUUM's POSIX locks, letting the
    application write into the VACUUM."""
    dbs, state = _dirs(tmp_path)
    db = dbs / "x.db"
    double = f"{dbs}//x.db"
    make_db(db, 50, rows=60000, blob=3000)
    cs = checksum(db, "t")
    cfg = config_text(state, [db, double], poll_interval="200ms", max_concurrent_jobs=2,
                      vacuum={"window": "always"},
                      retry={"busy_timeout": "50ms", "max_attempts": 50, "initial_backoff": "300ms",
                             "max_backoff": "600ms"})
    holder = LockHolder(str(db), "BEGIN EXCLUSIVE")
    stop = tmp_path / "stop-inserting"
    ins = None
    try:
        d = daemon.start(cfg)
        for p in (db, double):
            d.wait_for_entry(msgid="RETRY", DB_PATH=p, timeout=3 * WAIT)
        # the application: waiting for its own lock now, inserting from the release on
        ins = helpers.Script(INSERTER_SCRIPT, db, stop)
        holder.release("ROLLBACK")
        done = d.wait_for_entry(lambda e: e.get("MESSAGE_ID") in JOB_ENDS - {MSGID["GAVE_UP"]}
                                and e.get("DB_PATH") in (str(db), double), timeout=6 * WAIT)
        # both paths looked at again: neither has a job queued or running
        d.wait_for_polls([db, double], 1, timeout=6 * WAIT)
        rep = _stop_after_one_more_commit(ins, db, stop)
    finally:
        stop.touch()
        if ins:
            ins.kill()
        holder.close()
        holder.kill()
    es = d.entries()
    assert rep["errors"] == [], f"the application saw errors: {rep['errors']}\n" + format_entries(es)
    assert not [e for e in es if e.get("MESSAGE_ID") in (MSGID["CORRUPT"], MSGID["JOB_FAILED"])], \
        format_entries(es)
    assert done["MESSAGE_ID"] == MSGID["VACUUM_DONE"], format_entries(es)
    assert quick_check(db, "integrity_check") == ["ok"]
    assert checksum(db, "t") == cs, "the rows of t changed"
    assert _app_ids(db) == rep["committed"], "the rows the application committed are not all there"
    assert freelist_count(db) == 0
    assert d.stop() == 0, d.describe()
