# SPDX-License-Identifier: MIT
"""What a poll reads (issue: performance at scale). The running daemon
watches each database's directory with inotify and reads only the databases
whose files changed since their last read; the others keep their figures,
decided on again at each poll. With real files and a real application in
another process:

  - a round over unchanged databases reads none of them; a write to one
    is read at the next round, and only that one, and its new figures are
    acted on;
  - a database made in a new tenant directory, a directory removed and one
    made again under the same name are found without a full sweep;
  - a database that turns to WAL mode, its rows in the -wal (the -wal
    appears after the daemon's last look), is read from its -wal, not from
    its stale header;
  - full_sweep_interval reads every database whatever inotify said;
  - a bad full_sweep_interval is refused with its place in the file.

Every wait is for the daemon's own "poll done" line (debug) or entry; the
timeouts only bound a hang."""

import os
import re
import shutil
import sqlite3
import subprocess

import pytest  # noqa: F401

import helpers
from daemon_fixtures import (  # noqa: F401  (fixtures are used by name)
    MSGID, config_text, daemon, journald)
from helpers import make_db

LONG = 90
DONE = re.compile(r"poll done: (\d+) read, (\d+) unchanged")


def poll_done(read=None, unchanged=None):
    """A predicate: the line that ends a poll round, with these figures."""
    def pred(e):
        if "DB_PATH" in e or e.get("PRIORITY") != "7":
            return False
        m = DONE.match(str(e.get("MESSAGE", "")))
        return bool(m) and (read is None or int(m.group(1)) == read) and \
            (unchanged is None or int(m.group(2)) == unchanged)
    pred.__name__ = f"poll_done(read={read}, unchanged={unchanged})"
    pred.__qualname__ = pred.__name__
    return pred


def settled(d, n):
    """Wait for a round that read nothing: every one of n databases
    unchanged since its last read."""
    d.wait_for_entry(poll_done(0, n), timeout=LONG)


def _dbs(tmp_path, n, frag=0):
    dbs = tmp_path / "dbs"
    dbs.mkdir()
    paths = []
    for i in range(n):
        p = dbs / f"db{i:02d}.db"
        make_db(p, frag, rows=60)
        paths.append(p)
    return dbs, paths


def test_only_a_changed_database_is_read_again(daemon, tmp_path):
    dbs, paths = _dbs(tmp_path, 12)
    d = daemon.start(config_text(tmp_path / "state", [dbs / "*.db"], poll_interval="1s"), "--dry-run")
    d.wait_for_entry(poll_done(12, 0), timeout=LONG)
    settled(d, 12)
    # Another process frees most of one database's pages: seen at the next
    # round, the only database read, and its figures acted on.
    con = sqlite3.connect(paths[5], isolation_level=None)
    con.execute("DELETE FROM t WHERE id % 10 != 0")
    con.close()
    d.wait_for_entry(poll_done(1, 11), timeout=LONG)
    d.wait_for_entry(msgid="SCHEDULED", DB_PATH=str(paths[5]), timeout=LONG)
    assert not d.entries(msgid="SCHEDULED", DB_PATH=str(paths[4]))


def test_new_and_replaced_directories_are_found(daemon, tmp_path):
    base = tmp_path / "tenants"
    for t in ("a", "b"):
        (base / t).mkdir(parents=True)
        make_db(base / t / "app.db", 0, rows=30)
    d = daemon.start(config_text(tmp_path / "state", [base / "*" / "app.db"], poll_interval="1s"))
    settled(d, 2)
    (base / "c").mkdir()
    make_db(base / "c" / "app.db", 0, rows=30)
    d.wait_for_entry(msgid="DB_ADDED", DB_PATH=str(base / "c" / "app.db"), timeout=LONG)
    shutil.rmtree(base / "a")
    d.wait_for_entry(msgid="DB_REMOVED", DB_PATH=str(base / "a" / "app.db"), timeout=LONG)
    (base / "a").mkdir()
    make_db(base / "a" / "app.db", 0, rows=30)
    # (watched from the start: no DB_ADDED entry then, a debug line)
    d.wait_for_entry(msgid="DB_ADDED", DB_PATH=str(base / "a" / "app.db"), timeout=LONG)
    settled(d, 3)


def test_a_wal_appearing_after_the_last_look_is_read(daemon, tmp_path):
    dbs, paths = _dbs(tmp_path, 4)
    d = daemon.start(config_text(tmp_path / "state", [dbs / "*.db"], poll_interval="1s"), "--dry-run")
    settled(d, 4)
    # The application turns the database to WAL and frees pages; its
    # connection stays open, so the frames stay in the -wal and the main
    # file's header still shows the old figures.
    con = sqlite3.connect(paths[2], isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA wal_autocheckpoint=0")
    con.execute("DELETE FROM t WHERE id % 10 != 0")
    assert os.path.getsize(str(paths[2]) + "-wal") > 0
    try:
        e = d.wait_for_entry(msgid="SCHEDULED", DB_PATH=str(paths[2]), timeout=LONG)
        assert float(e["FRAGMENTATION_BEFORE"]) > 30, e
        assert helpers.header_field(paths[2], 36) == 0  # the header itself still says no free page
    finally:
        con.close()


def test_full_sweep_reads_every_database(daemon, tmp_path):
    dbs, paths = _dbs(tmp_path, 5)
    cfg = config_text(tmp_path / "state", [dbs / "*.db"], poll_interval="1s")
    d = daemon.start(cfg.replace("poll_interval: 1s", "poll_interval: 1s\nfull_sweep_interval: 1s"))
    d.wait_for_entries(3, poll_done(5, 0), timeout=LONG)


def test_bad_full_sweep_interval_is_refused(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"state_dir: {tmp_path}\nfull_sweep_interval: soon\ndatabases:\n  - path: /x.db\n")
    r = subprocess.run([helpers.MAINTD_BIN, "--check-config", "-c", str(cfg)], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode != 0
    assert f"{cfg}:2:" in r.stderr + r.stdout, r.stderr + r.stdout


def test_directories_inotify_refuses_are_read_at_every_poll(tmp_path):
    """Past the inotify watch limit (set low in a user namespace of its
    own, /proc/sys/user/max_inotify_watches, so nothing else on the host is
    touched): a warning says how many directories are not watched and what
    to raise, their databases are read at every poll, and a change in one
    of them is seen."""
    import time
    base = tmp_path / "tenants"
    paths = []
    for i in range(8):
        (base / f"t{i}").mkdir(parents=True)
        p = base / f"t{i}" / "app.db"
        make_db(p, 0, rows=30)
        paths.append(p)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(config_text(tmp_path / "state", [base / "*" / "app.db"], poll_interval="1s"))
    err = tmp_path / "err.txt"
    script = ("echo 3 > /proc/sys/user/max_inotify_watches && exec \"$0\" -c \"$1\" --log-target=console "
              "--log-level=debug --dry-run")
    with open(err, "wb") as f:
        proc = subprocess.Popen(["unshare", "--user", "--map-root-user", "sh", "-c", script, helpers.MAINTD_BIN,
                                 str(cfg)], stdout=subprocess.DEVNULL, stderr=f)
    try:
        def wait_for(pattern, after=0):
            deadline = time.monotonic() + LONG
            while time.monotonic() < deadline:
                text = err.read_text(errors="replace")
                m = re.search(pattern, text[after:])
                if m:
                    return after + m.end()
                assert proc.poll() is None, text
                time.sleep(0.1)
            raise AssertionError(f"no {pattern!r} in:\n" + err.read_text(errors="replace")[-4000:])

        at = wait_for(r"warning: cannot watch \d+ database directories for changes \(inotify: No space left on "
                      r"device; raise fs.inotify.max_user_watches\): their databases are read at every poll")
        # every round reads those it cannot watch: more than none, round after round
        at = wait_for(r"poll done: [1-8] read", at)
        at = wait_for(r"poll done: [1-8] read", at)
        for p in paths:
            con = sqlite3.connect(p, isolation_level=None)
            con.execute("DELETE FROM t WHERE id % 10 != 0")
            con.close()
        for p in paths:
            wait_for(re.escape(f"{p}: ") + r"(fragmentation|VACUUM)[^\n]*(3\d|[4-9]\d)\.\d\d%", at)
        assert err.read_text().count("cannot watch") == 1
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.parametrize("layout", ["flat", "nested"])
@pytest.mark.parametrize("once", [True, False], ids=["once", "daemon"])
def test_wal_frames_under_any_glob_are_read(daemon, tmp_path, layout, once):
    """What a directory's listing shows of a database's -wal is used
    instead of a stat: under a glob of one level and of several
    (tenants/*/db/*.db), a WAL database whose frees sit in its -wal is read
    from its -wal (its main file's header still says no free page), in
    --once and in the running daemon; its figure is SQLite's."""
    if layout == "flat":
        d_ = tmp_path / "dbs"
        pattern = d_ / "*.db"
    else:
        d_ = tmp_path / "tenants" / "t1" / "db"
        pattern = tmp_path / "tenants" / "*" / "db" / "*.db"
    d_.mkdir(parents=True)
    db = d_ / "w.db"
    make_db(db, 0, rows=200)
    con = sqlite3.connect(db, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA wal_autocheckpoint=0")
    con.execute("DELETE FROM t WHERE id % 2 = 0")
    pages, free = con.execute("SELECT * FROM pragma_page_count(), pragma_freelist_count()").fetchone()
    want = f"{round(free * 10000 / pages) / 100:.2f}%"
    assert helpers.header_field(db, 36) == 0 and float(want[:-1]) > 30
    try:
        args = ("--dry-run", "--once") if once else ("--dry-run",)
        d = daemon.start(config_text(tmp_path / "state", [pattern], poll_interval="1s"), *args, wait_ready=not once)
        e = d.wait_for_entry(msgid="SCHEDULED", DB_PATH=str(db), timeout=LONG)
        assert e["FRAGMENTATION_BEFORE"] == want[:-1], (e, want)
        if once:
            assert d.wait() == 0
    finally:
        con.close()
