# SPDX-License-Identifier: MIT
"""The daemon next to applications that really use their databases, each
application a separate process with its own connections:

(a) an application writing continuously (small transactions, a 10 s busy
    timeout) while the daemon polls, ANALYZEs and VACUUMs the same database
    again and again, in both journal modes: the application sees no failed
    statement, and every row it wrote is there afterwards;
(b) an application holding an exclusive lock for seconds on one database:
    the daemon backs off there (RETRY, GAVE_UP) and keeps maintaining the
    others meanwhile;
(c) rollback mode: while an application's read transaction keeps the
    daemon's VACUUM from getting its EXCLUSIVE lock, the daemon must not
    starve the application's *new* readers (a VACUUM waiting for EXCLUSIVE
    holds PENDING, which refuses new SHARED locks). A control run shows the
    reader loop does detect starvation: a process waiting for EXCLUSIVE with
    a 3 s busy timeout makes new readers fail.

The applications run until the daemon has reported what the test waits for
(VACUUM_DONE, RETRY, GAVE_UP entries) and hold their locks until the test
lets go: no test counts the work done in a span of time."""

import hashlib
import sqlite3

import helpers
from daemon_fixtures import (  # noqa: F401  (fixtures are used by name)
    MSGID, WAIT, app, config_text, daemon, format_entries, journald)
from helpers import checksum

# A bound on how long the applications in other processes run if the test
# never tells them to stop; the test itself stops them.
APP_MAX_SECONDS = 600


def _ts(e):
    """An entry's time, seconds since the epoch."""
    return int(e["__REALTIME_TIMESTAMP"]) / 1e6


def _of(es, msgid, path=None):
    return [e for e in es if e.get("MESSAGE_ID") == MSGID[msgid]
            and (path is None or e.get("DB_PATH") == str(path))]


def _blob_hashes(path):
    con = sqlite3.connect(str(path))
    try:
        return {i: hashlib.sha256(b).digest() for i, b in con.execute("SELECT id, b FROM t")}
    finally:
        con.close()


def _vacuum_tries(path):
    """A predicate: a VACUUM of path that met the lock (RETRY or GAVE_UP)."""
    def pred(e):
        return (e.get("MESSAGE_ID") in (MSGID["RETRY"], MSGID["GAVE_UP"]) and e.get("DB_PATH") == str(path)
                and e.get("OPERATION") == "vacuum")
    pred.__name__ = f"RETRY or GAVE_UP of the VACUUM of {path}"
    return pred


def _assert_attempts_bounded(es, max_attempts):
    for e in _of(es, "RETRY") + _of(es, "GAVE_UP"):
        a = int(e["ATTEMPT"])
        assert 1 <= a <= max_attempts, f"ATTEMPT {a} outside 1..{max_attempts}\n" + format_entries([e])
    for e in _of(es, "RETRY"):
        assert int(e["ATTEMPT"]) < max_attempts, "a RETRY after the last attempt\n" + format_entries([e])


# --------------------------------------------------------------------------
# (a)

def test_application_writes_through_repeated_maintenance(tmp_path, daemon):
    dbs = tmp_path / "dbs"
    dbs.mkdir()
    paths = {"delete": dbs / "rollback.db", "wal": dbs / "wal.db"}
    for mode, p in paths.items():
        helpers.make_db(p, 30, mode, 1500, index=True)
    initial = {mode: _blob_hashes(p) for mode, p in paths.items()}
    max_attempts = 8
    cfg = config_text(tmp_path / "state", list(paths.values()), poll_interval="200ms", max_concurrent_jobs=2,
                      vacuum={"threshold": "10%", "urgent_threshold": "15%", "window": "always",
                              "min_interval": 0, "min_reclaim": 0, "integrity": "quick"},
                      analyze={"interval": "1s"},
                      retry={"busy_timeout": "50ms", "max_attempts": max_attempts, "initial_backoff": "100ms",
                             "max_backoff": "1s"})
    stop = tmp_path / "stop-writing"
    # every 0.7 s the application deletes a third of its rows (the daemon
    # has something to VACUUM again and again), every 0.5 s it keeps a write
    # transaction open 100 ms (the daemon finds the database locked now and
    # then: a fifth of the time); it writes until the daemon has vacuumed
    # each database 4 times and analyzed it, however long that takes
    vacuums = 4
    writers = {mode: helpers.Script(helpers.WRITER_SCRIPT, p, stop, 0.7, 0.5, 100, APP_MAX_SECONDS)
               for mode, p in paths.items()}
    try:
        d = daemon.start(cfg, log_level="info")
        for p in paths.values():
            d.wait_for_entries(vacuums, msgid="VACUUM_DONE", DB_PATH=p, timeout=6 * WAIT)
            d.wait_for_entry(msgid="ANALYZE_DONE", DB_PATH=p, timeout=6 * WAIT)
        stop.touch()
        reports = {m: w.result() for m, w in writers.items()}
    finally:
        stop.touch()
        for w in writers.values():
            w.kill()
    es = d.entries()
    assert d.stop() == 0, d.describe()

    summary = []
    for mode, p in paths.items():
        rep = reports[mode]
        assert rep["errors"] == 0, f"{mode}: the application saw {rep['errors']} failed statements: " \
            f"{rep['error_texts']}\n" + format_entries(es)
        # the daemon vacuumed it again and again while the application
        # wrote (the application started first and stopped last), and the
        # application kept committing writes: at least one between each
        # VACUUM and the next
        vac = [_ts(e) for e in _of(es, "VACUUM_DONE", p) if rep["start"] <= _ts(e) <= rep["end"]]
        assert len(vac) >= vacuums, f"{mode}: {len(vac)} VACUUMs while the application wrote\n" \
            + format_entries(es)
        idle = [(a, b) for a, b in zip(vac, vac[1:]) if not any(a < t < b for t in rep["commits"])]
        assert not idle, f"{mode}: no write committed by the application between the VACUUMs done at " \
            f"{idle}\n" + format_entries(es)
        # each VACUUM after the first had new free pages to reclaim, which
        # only the application's mass deletes make
        assert rep["punches"] >= len(vac) - 1, f"{mode}: {len(vac)} VACUUMs after {rep['punches']} mass " \
            "deletes\n" + format_entries(es)
        assert _of(es, "ANALYZE_DONE", p), format_entries(es)
        # every row the application committed is there, with its bytes; the
        # rows it deleted are gone
        problems, _, _, _ = helpers.open_and_verify(p)
        assert problems == ["ok"], problems
        now = _blob_hashes(p)
        assert sorted(now) == rep["ids"], f"{mode}: the rows differ from what the application committed"
        for i, h in now.items():
            want = initial[mode][i] if i in initial[mode] else hashlib.sha256(helpers.writer_blob(i)).digest()
            assert h == want, f"{mode}: row {i} changed"
        summary.append(f"{mode}: {rep['write_tx']} write transactions, {rep['reads']} reads, "
                       f"{rep['punches']} mass deletes, {rep['batches']} 100 ms batch transactions in {rep['seconds']:.1f}s, 0 errors, slowest statement "
                       f"{rep['max_statement_ms']:.0f} ms, {rep['slow_statements']} over 20 ms; "
                       f"{len(vac)} VACUUMs meanwhile, {len(_of(es, 'RETRY', p))} RETRY")
    _assert_attempts_bounded(es, max_attempts)
    assert not _of(es, "GAVE_UP"), "gave up on a database whose application only makes short " \
        "transactions\n" + format_entries(es)
    for bad in ("CORRUPT", "JOB_FAILED", "CANNOT_MAINTAIN", "NO_SPACE"):
        assert not _of(es, bad), format_entries(es)
    print("\n".join(summary))


# --------------------------------------------------------------------------
# (b)

def test_long_exclusive_lock_backs_off_and_others_are_maintained(tmp_path, daemon, app):
    dbs = tmp_path / "dbs"
    dbs.mkdir()
    held_w, held, h1, h2, h3 = (dbs / n for n in ("held-write.db", "held.db", "h1.db", "h2.db", "h3.db"))
    for p, mode in ((held_w, "delete"), (held, "delete"), (h1, "delete"), (h2, "wal"), (h3, "delete")):
        helpers.make_db(p, 35, mode, 600, index=True)
    cs = {str(p): checksum(p, "t") for p in (held_w, held, h1, h2, h3)}
    max_attempts = 4
    # held-write: BEGIN EXCLUSIVE and a write (a live journal: even the
    # statistics read is locked out); held: BEGIN EXCLUSIVE, the write at
    # the end (the header is readable, the VACUUM job is locked out). Both
    # hold their locks until the test lets go, below.
    apps = [app(held_w, begin="BEGIN EXCLUSIVE", after=10, write_first=True),
            app(held, begin="BEGIN EXCLUSIVE", after=10, write_first=False)]
    # one job at a time: a job stuck on the lock would keep the others waiting
    d = daemon.start(config_text(tmp_path / "state", [dbs / "*.db"], poll_interval="300ms",
                                 max_concurrent_jobs=1,
                                 vacuum={"window": "always", "min_interval": 0},
                                 retry={"busy_timeout": "50ms", "max_attempts": max_attempts,
                                        "initial_backoff": "200ms", "max_backoff": "800ms"}),
                     log_level="info")
    # while the locks are held, the others are vacuumed and the daemon gives
    # up on the held ones
    for p in (h1, h2, h3):
        d.wait_for_entry(msgid="VACUUM_DONE", DB_PATH=p)
    gave_up_job = d.wait_for_entry(msgid="GAVE_UP", DB_PATH=held)
    gave_up_poll = d.wait_for_entry(msgid="GAVE_UP", DB_PATH=held_w)
    es = d.entries()
    assert gave_up_job["OPERATION"] == "vacuum" and gave_up_job["ATTEMPT"] == str(max_attempts), gave_up_job
    assert gave_up_poll["OPERATION"] == "poll" and gave_up_poll["ATTEMPT"] == str(max_attempts), gave_up_poll
    retries = [e for e in _of(es, "RETRY", held) if _ts(e) < _ts(gave_up_job)]
    assert [e["ATTEMPT"] for e in retries][:max_attempts - 1] == [str(i) for i in range(1, max_attempts)], \
        format_entries(es)
    assert not _of(es, "VACUUM_DONE", held) and not _of(es, "VACUUM_DONE", held_w), format_entries(es)

    # the lock goes; the application carries on without an error, and the
    # daemon maintains both databases at a later poll
    for a in apps:
        a.release()
        rc, out, err = a.finish()
        assert rc == 0 and err == "", f"the application saw an error (exit {rc}):\n{err}"
    for p in (held, held_w):
        d.wait_for_entry(msgid="VACUUM_DONE", DB_PATH=p)
    es = d.entries()
    _assert_attempts_bounded(es, max_attempts)
    for p in (held_w, held, h1, h2, h3):
        problems, _, fl, _ = helpers.open_and_verify(p)
        assert problems == ["ok"] and fl == 0, (p, problems, fl)
        assert checksum(p, "t") == cs[str(p)], f"{p}: rows of t changed"
    assert not _of(es, "CORRUPT") and not _of(es, "JOB_FAILED"), format_entries(es)
    assert d.stop() == 0, d.describe()


# --------------------------------------------------------------------------
# (c)

# The new readers' busy timeout: ten times the daemon's 50 ms, so that a
# loaded machine stretching the daemon's wait does not fail them, and a
# quarter or less of the controls' 2 s and 3 s waits, which must.
READ_TIMEOUT_MS = 500


def test_vacuum_waiting_for_its_lock_does_not_starve_new_readers(tmp_path, daemon, lock_holder):
    dbs = tmp_path / "dbs"
    dbs.mkdir()
    db = dbs / "read.db"
    helpers.make_db(db, 35, "delete", 1000, index=True)
    cs = checksum(db, "t")
    # an application's long read transaction: a SHARED lock, so a VACUUM
    # cannot get EXCLUSIVE
    reader_txn = lock_holder(db, begin="BEGIN", stmts=("SELECT count(*) FROM t",))

    # Control: a plain process waiting 3 s for EXCLUSIVE holds PENDING all
    # that time; new readers, reading from before it starts until after it
    # ends, then fail. If they did not, this loop could not tell a starving
    # daemon from a good one.
    stop = tmp_path / "stop-reading-control"
    readers = helpers.Script(helpers.READER_SCRIPT, db, stop, READ_TIMEOUT_MS, APP_MAX_SECONDS)
    try:
        waiter = helpers.Script(helpers.EXCLUSIVE_WAITER_SCRIPT, db, 3.0)
        waited = waiter.result()
    finally:
        stop.touch()
        control = readers.result()
    assert "database is locked" in waited, waited
    assert control["failures"] > 0, \
        f"the control did not starve the readers, the test cannot detect starvation: {control}"

    # A second control, on the daemon itself: configured to wait 2 s for
    # its lock (retry.busy_timeout, "keep it short"), it starves the readers.
    max_attempts = 8

    def run_daemon(busy_timeout, tries_wanted, state):
        """The daemon with this busy timeout, and new readers from before it
        starts until it has reported tries_wanted VACUUM attempts that met
        the lock."""
        stop = tmp_path / f"stop-reading-{state}"
        readers = helpers.Script(helpers.READER_SCRIPT, db, stop, READ_TIMEOUT_MS, APP_MAX_SECONDS)
        try:
            d = daemon.start(config_text(tmp_path / state, [db], poll_interval="200ms",
                                         vacuum={"window": "always", "min_interval": 0},
                                         retry={"busy_timeout": busy_timeout, "max_attempts": max_attempts,
                                                "initial_backoff": "100ms", "max_backoff": "400ms"}),
                             log_level="info")
            d.wait_for_entries(tries_wanted, _vacuum_tries(db))
        finally:
            stop.touch()
            rep = readers.result(timeout=60)
        es = d.entries()
        met_lock = _vacuum_tries(db)
        tries = [e for e in es if met_lock(e) and rep["start"] <= _ts(e) <= rep["end"]]
        assert not _of(es, "VACUUM_DONE", db), "VACUUM done under an open read transaction?\n" + format_entries(es)
        _assert_attempts_bounded(es, max_attempts)
        return d, rep, tries, es

    d, slow, slow_tries, es = run_daemon("2s", 1, "state-long-wait")
    assert slow_tries, "the daemon with a 2 s busy timeout never met the lock\n" + format_entries(es)
    assert slow["failures"] > 0, \
        f"a daemon waiting 2 s for its lock did not starve the readers: the test cannot detect it: {slow}"
    assert d.stop() == 0, d.describe()

    # The daemon as configured by default (50 ms): VACUUM is urgent, the
    # lock never comes while the reads go on, and no reader may fail.
    d, rep, tries, es = run_daemon("50ms", 3, "state")
    assert len(tries) >= 3, "the daemon did not try to VACUUM while the readers read: the test proves " \
        "nothing\n" + format_entries(es)
    assert rep["failures"] == 0, f"{rep['failures']} of {rep['reads'] + rep['failures']} new read " \
        f"transactions failed while the daemon waited for its lock: {rep['errors']}\n" + format_entries(es)

    # the application ends its read: the VACUUM goes through
    reader_txn.release("COMMIT")
    d.wait_for_entry(msgid="VACUUM_DONE", DB_PATH=db)
    problems, _, fl, _ = helpers.open_and_verify(db)
    assert problems == ["ok"] and fl == 0, (problems, fl)
    assert checksum(db, "t") == cs
    assert d.stop() == 0, d.describe()
    print(f"control (BEGIN EXCLUSIVE, 3 s busy timeout): {control['failures']} of "
          f"{control['reads'] + control['failures']} new read transactions failed ({waited})\n"
          f"control (daemon, busy_timeout 2s): {len(slow_tries)} VACUUM attempts met the lock; "
          f"{slow['failures']} of {slow['reads'] + slow['failures']} new read transactions failed\n"
          f"daemon: {len(tries)} VACUUM attempts met the lock; {rep['reads']} new read transactions, "
          f"0 failed, {rep['waited']} waited over 5 ms for a lock, slowest {rep['max_ms']:.0f} ms")
