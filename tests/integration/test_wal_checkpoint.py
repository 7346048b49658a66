# SPDX-License-Identifier: MIT
"""WAL space given back. With a real application in other processes:

  - a VACUUM while the application is inside a read transaction: the
    checkpoint after it is busy (CHECKPOINT_BUSY), the -wal stays large; once
    the reader ends the daemon checkpoints at a later poll (CHECKPOINT_DONE,
    REASON=after-vacuum) and the -wal is 0 bytes;
  - a -wal grown to about 8 times its database (the application ran with
    wal_autocheckpoint=0) is checkpointed (REASON=wal-size); -wal files under
    the limits (under SQLite's 1000-page floor, or under the ratio) are
    left alone;
  - readers that never let go: the CHECKPOINT_BUSY warning with
    WAL_FRAMES_LEFT, again and again, then CHECKPOINT_DONE once they end;
    meanwhile the application's writes (its own busy timeout) never fail.

No assertion depends on the machine's speed: each wait is for an entry (or
a poll line at --log-level=debug) and its timeout only bounds a hang."""

import json
import os
import re
import subprocess
import time

import pytest  # noqa: F401

import helpers
from daemon_fixtures import (  # noqa: F401  (fixtures are used by name)
    MSGID, config_text, daemon, format_entries, journald)
from helpers import checksum, db_stats, freelist_count, make_db, quick_check, sha256

# Bounds a hang only: every wait ends at the first matching entry.
LONG = 90
PAGE = 4096
SQLITE_AUTOCHECKPOINT_BYTES = 1000 * PAGE  # the daemon's floor for the ratio rule
CHECKPOINT_IDS = {MSGID[k] for k in ("CHECKPOINT_DONE", "CHECKPOINT_BUSY")}


def _dirs(tmp_path):
    dbs = tmp_path / "dbs"
    dbs.mkdir(exist_ok=True)
    return dbs, tmp_path / "state"


def _index(entries, entry):
    for i, e in enumerate(entries):
        if e.get("__CURSOR") == entry.get("__CURSOR"):
            return i
    raise AssertionError(f"entry not found: {entry.get('MESSAGE')}")


def wal_size(db):
    return helpers.file_size(str(db) + "-wal")


def poll_lines(path):
    """A predicate for the daemon's debug line of one poll decision of path."""
    pat = re.compile(re.escape(str(path)) + r": fragmentation \d+\.\d\d%, nothing to do \(")

    def pred(e):
        return pat.match(str(e.get("MESSAGE", ""))) is not None
    pred.__name__ = f"poll line of {path}"
    return pred


def wait_until(cond, what, timeout=LONG):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.05)


# --------------------------------------------------------------------------
# An application that writes in a loop

WRITER_SCRIPT = r"""
import json, os, sqlite3, sys, time
path, stop, progress = sys.argv[1:4]
con = sqlite3.connect(path, isolation_level=None, timeout=30)   # its own busy timeout
writes, failures, errors = 0, 0, []
while not os.path.exists(stop):
    try:
        con.execute("INSERT INTO app(note) VALUES(?)", (f"write {writes}",))
        writes += 1
        if writes % 10 == 0:
            con.execute("SELECT count(*) FROM app").fetchone()
    except sqlite3.Error as e:
        failures += 1
        if len(errors) < 20:
            errors.append(f"{type(e).__name__}: {e} (extended code {getattr(e, 'sqlite_errorcode', '?')})")
    with open(progress + ".tmp", "w") as f:
        f.write(str(writes))
    os.replace(progress + ".tmp", progress)
    time.sleep(0.005)
con.close()
print(json.dumps({"writes": writes, "failures": failures, "errors": errors}), flush=True)
"""


class Writer:
    """An application process that inserts one row into app at a time,
    autocommit, with a 30 s busy timeout, until stop(); every SQLite error
    is counted."""

    def __init__(self, db, workdir):
        self.stop_file = os.path.join(str(workdir), "writer.stop")
        self.progress_file = os.path.join(str(workdir), "writer.progress")
        self.proc = subprocess.Popen([helpers.PYTHON, "-c", WRITER_SCRIPT, str(db), self.stop_file,
                                      self.progress_file], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.wait_writes(1)

    def writes(self):
        try:
            with open(self.progress_file) as f:
                return int(f.read() or 0)
        except FileNotFoundError:
            return 0

    def wait_writes(self, n):
        def cond():
            assert self.proc.poll() is None, f"the writer died: {self.proc.stderr.read()}"
            return self.writes() >= n
        wait_until(cond, f"the writer's {n} writes")

    def stop(self):
        """{"writes", "failures", "errors"} of the run."""
        open(self.stop_file, "w").close()
        try:
            out, err = self.proc.communicate(timeout=LONG)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("the writer did not stop") from None
        assert self.proc.returncode == 0, err
        return json.loads(out.strip().splitlines()[-1])

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=15)


@pytest.fixture
def writer():
    ws = []

    def start(db, workdir):
        w = Writer(db, workdir)
        ws.append(w)
        return w

    yield start
    for w in ws:
        w.kill()
        for s in (w.proc.stdout, w.proc.stderr):
            s.close()


# --------------------------------------------------------------------------
# Case A: a VACUUM while the application reads

def test_checkpoint_owed_after_vacuum_with_a_reader(tmp_path, daemon, lock_holder):
    dbs, state = _dirs(tmp_path)
    db = dbs / "a.db"
    make_db(db, 35, mode="wal")
    pc = db_stats(db)["page_count"]
    rows = checksum(db, "t")

    # The application keeps its connection open and is inside a read
    # transaction (its snapshot: the database before the VACUUM).
    app = lock_holder(db, "BEGIN", ["SELECT count(*) FROM t"])
    n = app.query("SELECT count(*) FROM t")

    d = daemon.start(config_text(state, [db], poll_interval="1s"))
    done = d.wait_for_entry(msgid="VACUUM_DONE", DB_PATH=db, timeout=LONG)
    busy = d.wait_for_entry(msgid="CHECKPOINT_BUSY", DB_PATH=db, timeout=LONG)
    es = d.entries()
    assert _index(es, done) < _index(es, busy), format_entries(es)
    assert busy["PRIORITY"] == "4", busy
    assert done["REASON"] == "urgent", done

    # The -wal stays large: it holds every page of the new database.
    pages_after = pc - int(done["PAGE_BYTES_RECLAIMED"]) // PAGE
    held = int(busy["WAL_SIZE_BYTES"])
    assert held >= pages_after * PAGE, (held, pages_after)
    assert wal_size(db) == held
    # The daemon owes the checkpoint and tries it at later polls, in vain
    # while the reader stays.
    d.wait_for_entry(msgid="SCHEDULED", OPERATION="checkpoint", DB_PATH=db, REASON="after-vacuum", timeout=LONG)
    assert not d.entries(msgid="CHECKPOINT_DONE", DB_PATH=db), format_entries(d.entries())
    assert wal_size(db) == held
    assert app.query("SELECT count(*) FROM t") == n  # its snapshot is intact

    # The reader ends; the application keeps its connection.
    app.release("COMMIT")
    ck = d.wait_for_entry(msgid="CHECKPOINT_DONE", DB_PATH=db, timeout=LONG)
    assert ck["REASON"] == "after-vacuum", ck
    assert ck["OPERATION"] == "checkpoint", ck
    assert ck["PRIORITY"] == "6", ck
    assert ck["WAL_SIZE_BYTES"] == "0", ck
    assert int(ck["BYTES_RECLAIMED"]) == held, (ck, held)
    assert os.path.exists(str(db) + "-wal") and wal_size(db) == 0
    assert d.stop() == 0, d.describe()

    # The database is intact, and the application's connection still works.
    assert quick_check(db, "integrity_check") == ["ok"]
    assert checksum(db, "t") == rows
    assert freelist_count(db) == 0
    assert app.query("SELECT count(*) FROM t") == n
    app.sql("INSERT INTO app(note) VALUES('after the checkpoint')")
    assert app.query("SELECT count(*) FROM app WHERE note = 'after the checkpoint'") == [(1,)]


# --------------------------------------------------------------------------
# Case B: a -wal past its limits, and -wal files under them

def test_wal_past_its_size_checkpointed_others_left_alone(tmp_path, daemon, lock_holder):
    dbs, state = _dirs(tmp_path)
    big, small, mid = dbs / "big.db", dbs / "small.db", dbs / "mid.db"
    make_db(big, 5, mode="wal", rows=250)
    make_db(small, 5, mode="wal", rows=250)
    make_db(mid, 5, mode="wal", rows=1500)
    rewrite = "UPDATE t SET b = randomblob(4000)"
    # Applications with wal_autocheckpoint=0, now idle with their connections open.
    apps = {
        big: lock_holder(big, "", [rewrite] * 8),           # about 8 times its database
        small: lock_holder(small, "", [rewrite] * 2),       # twice its database, under the 1000-page floor
        mid: lock_holder(mid, "", [rewrite + " WHERE id <= 1200"]),  # past the floor, under 100% of its database
    }
    db_size = {p: os.path.getsize(p) for p in apps}
    wal = {p: wal_size(p) for p in apps}
    assert wal[big] >= 6 * db_size[big] and wal[big] > SQLITE_AUTOCHECKPOINT_BYTES, (wal, db_size)
    assert wal[big] < 64 << 20
    assert db_size[small] < wal[small] < SQLITE_AUTOCHECKPOINT_BYTES, (wal, db_size)
    assert SQLITE_AUTOCHECKPOINT_BYTES < wal[mid] < db_size[mid], (wal, db_size)
    rows = checksum(big, "t")
    n = apps[big].query("SELECT count(*) FROM t")
    untouched = {p: sha256(str(p) + "-wal") for p in (small, mid)}

    # The default checkpoint settings: 64MiB, 100% of the database past
    # SQLite's 1000-page auto-checkpoint size.
    d = daemon.start(config_text(state, [big, small, mid], poll_interval="1s"))
    ck = d.wait_for_entry(msgid="CHECKPOINT_DONE", DB_PATH=big, timeout=LONG)
    assert ck["REASON"] == "wal-size", ck
    assert ck["WAL_SIZE_BYTES"] == "0", ck
    assert int(ck["BYTES_RECLAIMED"]) == wal[big], (ck, wal[big])
    assert wal_size(big) == 0
    sched = d.entries(msgid="SCHEDULED", OPERATION="checkpoint", DB_PATH=big)
    assert sched and sched[0]["REASON"] == "wal-size", format_entries(d.entries())
    assert int(sched[0]["WAL_SIZE_BYTES"]) == wal[big], sched[0]

    # The others: several polls decided about them (a positive sign), and
    # none of them brought a checkpoint.
    for p in (small, mid):
        d.wait_for_entries(3, poll_lines(p), timeout=LONG)
    es = d.entries()
    for p in (small, mid):
        acted = [e for e in es if e.get("DB_PATH") == str(p) and
                 (e.get("MESSAGE_ID") in CHECKPOINT_IDS or e.get("OPERATION") == "checkpoint")]
        assert not acted, f"{p}: a -wal under the limits was checkpointed\n" + format_entries(acted)
        assert sha256(str(p) + "-wal") == untouched[p], f"{p}-wal changed"
    assert d.stop() == 0, d.describe()

    assert quick_check(big, "integrity_check") == ["ok"]
    assert checksum(big, "t") == rows
    assert apps[big].query("SELECT count(*) FROM t") == n
    apps[big].sql("INSERT INTO app(note) VALUES('after the checkpoint')")


# --------------------------------------------------------------------------
# Readers that never let go, and an application writing all along

def test_readers_that_never_let_go(tmp_path, daemon, lock_holder, writer):
    dbs, state = _dirs(tmp_path)
    db = dbs / "busy.db"
    make_db(db, 5, mode="wal", rows=300)

    w = writer(db, tmp_path)
    # A reader holds a read transaction; the writer goes on after its
    # snapshot, so frames pile up that no checkpoint may copy.
    reader = lock_holder(db, "BEGIN", ["SELECT count(*) FROM app"])
    seen = reader.query("SELECT count(*) FROM app")[0][0]
    w.wait_writes(seen + 20)
    limit = 64 << 10
    wait_until(lambda: wal_size(db) > 2 * limit, "the -wal past twice the limit")

    cfg = config_text(state, [{"path": db, "checkpoint": {"wal_size_limit": "64KiB", "wal_size_ratio": "0%",
                                                          "warn_after": "1s"}}], poll_interval="1s")
    d = daemon.start(cfg)
    warned = d.wait_for_entries(2, msgid="CHECKPOINT_BUSY", DB_PATH=db, timeout=LONG)[:2]
    for e in warned:
        assert e["PRIORITY"] == "4", e
        assert e["OPERATION"] == "checkpoint", e
        assert int(e["WAL_FRAMES_LEFT"]) > 0, e
        assert int(e["WAL_SIZE_BYTES"]) > limit, e
        assert re.search(r"for \S+", e["MESSAGE"]) and e["WAL_FRAMES_LEFT"] in e["MESSAGE"], e["MESSAGE"]
    # It keeps trying: each warning comes from a later attempt.
    assert int(warned[1]["ATTEMPT"]) > int(warned[0]["ATTEMPT"]) >= 2, format_entries(warned)
    assert not d.entries(msgid="CHECKPOINT_DONE", DB_PATH=db), format_entries(d.entries())

    reader.release("COMMIT")
    ck = d.wait_for_entry(msgid="CHECKPOINT_DONE", DB_PATH=db, timeout=LONG)
    es = d.entries()
    assert _index(es, ck) > _index(es, warned[1])
    assert ck["REASON"] == "wal-size", ck
    assert int(ck["ATTEMPT"]) > int(warned[1]["ATTEMPT"]), ck
    assert d.alive(), d.describe()

    # The application's writes never failed, before, during or after.
    res = w.stop()
    assert res["failures"] == 0, res
    assert res["writes"] > seen + 20, res
    assert d.stop() == 0, d.describe()
    assert quick_check(db, "integrity_check") == ["ok"]
    assert reader.query("SELECT count(*) FROM app") == [(res["writes"],)]
