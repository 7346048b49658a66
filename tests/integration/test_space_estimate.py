# SPDX-License-Identifier: MIT
"""The space check's estimate of what VACUUM writes, measured on small tmpfs
mounts (root only) whose free space the test sets to the byte.

The estimate (helpers.vacuum_space_needed, computed here from what SQLite
says of the database: PRAGMA page_count, freelist_count, page_size,
journal_mode): the live pages (page_count - freelist_count) x page_size in
SQLite's temp directory, and as much again beside the database plus the
journal's or the WAL's own bytes, each x vacuum.disk_space_factor; summed
when the two are on one file system.

(a) The issue's case: a ~23.5 MiB database with 90% of its pages free, on a
    file system with 16.5 MiB free (the old check wanted twice the file,
    47 MiB), the temp directory on the same or on another small file
    system: vacuumed, the space given back, every row as it was.
(b) Free space just above the estimate (a 64 KiB margin: tmpfs counts whole
    4 KiB pages): vacuumed. Just below it: refused (exit 4, no_space) with
    the estimate and the free space in the JSON and in words, both
    directories named, the database byte for byte as it was, nothing left in
    the temp directory.
(c) The estimate is enough: with disk_space_factor 1.0 and free space just
    above the unscaled estimate, SQLite really completes the VACUUM (it
    would fail with SQLITE_FULL otherwise). Printed as well: the most space
    seen taken while the VACUUM ran (statvfs polled from a thread: a lower
    bound, never asserted) and the least free space with which the VACUUM
    really succeeds (found by bisection, --no-space-check).
    Measured on 3.40.1 (1311 live 4 KiB pages): rollback mode needs the
    estimate to within the one block it allows for rounding beside the
    database and two pages less in the temp directory; with both on one
    file system ~1.9 MiB less than the sum (the temp copy's page cache is
    still in memory while the journal exists). WAL mode needs ~11-19 KiB
    less than the estimate, which counts the 32 KiB -shm (created when
    nobody had the database open) and a block per file.
(d) The daemon, once (--once --ignore-window): VACUUM_DONE when it fits,
    NO_SPACE with SPACE_NEEDED_BYTES and TEMP_SPACE_NEEDED_BYTES equal to
    the estimate when it does not.
(e) A WAL database nobody has open is vacuumed as a WAL database.

A WAL database nobody has open has no -wal; "wal" is that database, as a
copied file or an idle application leaves it. "wal-open" has an
application's idle connection (its -wal and -shm exist)."""

import dataclasses
import hashlib
import os
import shutil
import sqlite3
import subprocess
import threading

import pytest

import helpers
from daemon_fixtures import (  # noqa: F401  (fixtures are used by name)
    config_text, daemon, format_entries, journald)
from helpers import snapshot

KiB = 1024
MiB = 1024 * KiB
BLOCK = 4096         # tmpfs allocates whole pages
MARGIN = 64 * KiB    # "just above" / "just below" the estimate

# (rows of one 4000-byte blob each, percent of pages free)
SHAPES = {
    "issue": (5990, 90),   # ~23.5 MiB, 90% free: ~2.3 MiB of live pages
    "medium": (2000, 35),  # ~8 MiB, 35% free: ~5.3 MiB of live pages
}


def _up(n):
    return -(-n // BLOCK) * BLOCK


def _down(n):
    return n // BLOCK * BLOCK


def _mib(n):
    return f"{n / MiB:.3f} MiB"


# --------------------------------------------------------------------------
# Databases made once per module, on the big file system

def row_digests(path):
    """{(table, rowid): sha256 of the row} of every table, read through a
    normal connection (a WAL database's last close removes its -wal)."""
    con = sqlite3.connect(str(path), isolation_level=None, timeout=10)
    out = {}
    try:
        con.execute("BEGIN")
        tables = [r[0] for r in con.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
        for name in tables:
            for row in con.execute(f'SELECT rowid, * FROM "{name}"'):
                out[(name, row[0])] = hashlib.sha256(repr(row[1:]).encode()).hexdigest()
        con.execute("COMMIT")
    finally:
        con.close()
    return out


@dataclasses.dataclass
class Source:
    path: str
    mode: str        # delete | wal
    pragmas: dict    # helpers.db_stats(): page_count, freelist_count, page_size, journal_mode
    digests: dict    # row_digests()
    size: int

    @property
    def live_pages(self):
        return self.pragmas["page_count"] - self.pragmas["freelist_count"]

    @property
    def live_bytes(self):
        return self.live_pages * self.pragmas["page_size"]

    def estimate(self, factor=2.0):
        """(beside the database, in the temp directory), from the PRAGMAs."""
        p = self.pragmas
        return helpers.vacuum_space_needed(p["page_count"], p["freelist_count"], p["page_size"],
                                           p["journal_mode"], factor)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """source(shape, mode) -> Source: a database made once per module."""
    made = {}

    def get(shape, mode):
        mode = "wal" if mode.startswith("wal") else mode
        if (shape, mode) not in made:
            p = tmp_path_factory.mktemp(f"src-{shape}-{mode}") / "app.db"
            rows, frag = SHAPES[shape]
            helpers.make_db(p, frag, mode, rows, index=True)
            prag = helpers.db_stats(p, recover=True)   # a normal connection: the real journal mode
            assert prag["journal_mode"] == mode, prag
            # and the file says so too (header bytes 18/19: 2 is WAL)
            assert helpers.header_field(p, 18, 1) == (2 if mode == "wal" else 1), mode
            assert not helpers.side_files(str(p)), helpers.side_files(str(p))
            made[(shape, mode)] = Source(str(p), mode, prag, row_digests(p), os.path.getsize(p))
        return made[(shape, mode)]

    return get


# --------------------------------------------------------------------------
# Small file systems with a set free space

def set_free(mnt, free):
    """Resize the tmpfs at mnt (mount -o remount,size=) so that exactly
    `free` bytes, a multiple of 4 KiB, are free besides what it holds."""
    assert free >= 0 and free % BLOCK == 0, free
    v = os.statvfs(str(mnt))
    used = (v.f_blocks - v.f_bfree) * v.f_frsize
    p = subprocess.run(["mount", "-o", f"remount,size={used + free}", str(mnt)],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, f"cannot resize the tmpfs {mnt}: {p.stderr}"
    assert helpers.free_bytes(mnt) == free, (mnt, helpers.free_bytes(mnt), free)


@dataclasses.dataclass
class Place:
    db: str
    tmp_dir: str
    db_fs: str
    tmp_fs: str      # == db_fs when the temp directory is on the database's file system

    @property
    def same(self):
        return self.db_fs == self.tmp_fs

    def free(self):
        return helpers.free_bytes(self.db_fs), helpers.free_bytes(self.tmp_fs)

    def reset(self, src):
        """A fresh copy of the source database (for one more try)."""
        for f in [self.db] + [self.db + s for s in ("-journal", "-wal", "-shm")]:
            if os.path.exists(f):
                os.unlink(f)
        assert os.listdir(self.tmp_dir) == [], os.listdir(self.tmp_dir)
        shutil.copyfile(src.path, self.db)


def place(tmpfs, src, same, size="64m"):
    """The database copied onto a small tmpfs; the temp directory a
    directory on it (same) or another small tmpfs. Free space: set_free()."""
    db_fs = tmpfs(size, name="dbfs")
    db = str(db_fs / "app.db")
    shutil.copyfile(src.path, db)
    assert helpers.sha256(db) == helpers.sha256(src.path)
    if same:
        tmp_dir = db_fs / "sqltmp"
        tmp_dir.mkdir()
        tmp_fs = db_fs
    else:
        tmp_dir = tmp_fs = tmpfs(size, name="tmpfs")
    return Place(db, str(tmp_dir), str(db_fs), str(tmp_fs))


def set_frees(pl, free_db, free_tmp):
    """free_db on the database's file system and free_tmp on the temp
    directory's; with one file system, free_db is all it has."""
    if not pl.same:
        set_free(pl.tmp_fs, free_tmp)
    set_free(pl.db_fs, free_db)


class PeakUse:
    """Polls statvfs of the file systems from a thread while a command runs:
    the most space seen taken beyond what was taken at the start, per file
    system. A VACUUM of a few MiB lasts some tens of milliseconds and the
    polls can miss its peak: a lower bound, printed, never asserted."""

    def __init__(self, *mounts):
        self.mounts = list(dict.fromkeys(str(m) for m in mounts))
        self.peak = {m: 0 for m in self.mounts}
        self._stop = threading.Event()

    def _used(self, m):
        v = os.statvfs(m)
        return (v.f_blocks - v.f_bfree) * v.f_frsize

    def _run(self):
        while not self._stop.is_set():
            for m in self.mounts:
                self.peak[m] = max(self.peak[m], self._used(m) - self._base[m])

    def __enter__(self):
        self._base = {m: self._used(m) for m in self.mounts}
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=30)


# --------------------------------------------------------------------------
# The tool, and what a user checks afterwards

def ctl_vacuum(pl, *extra, config=None, json=True):
    args = (["-c", config] if config else []) + (["--json"] if json else []) + ["vacuum", "--force"]
    return helpers.run_ctl(*args, *extra, pl.db, env={"SQLITE_TMPDIR": pl.tmp_dir})


def assert_vacuumed(res, pl, src, free_before):
    """The VACUUM ran and shrank the file to its live pages, every row as it
    was, nothing left behind: the free space is what it was plus what the
    file gave back, to the byte."""
    assert res.rc == 0, res.describe()
    o = res.one()
    assert o["status"] == "ok", res.describe()
    assert not helpers.side_files(pl.db), helpers.side_files(pl.db)
    assert os.listdir(pl.tmp_dir) == [], os.listdir(pl.tmp_dir)
    size = os.path.getsize(pl.db)
    # one row per page: the new file is the live pages, give or take an
    # interior page
    assert abs(size - src.live_bytes) <= 0.02 * src.live_bytes, (size, src.live_bytes)
    assert helpers.free_bytes(pl.db_fs) == free_before + _up(src.size) - _up(size), \
        (helpers.free_bytes(pl.db_fs), free_before, src.size, size)
    problems, _, fl, pc = helpers.open_and_verify(pl.db)
    assert problems == ["ok"], problems
    assert fl == 0 and pc * src.pragmas["page_size"] == size, (fl, pc, size)
    assert row_digests(pl.db) == src.digests, "rows changed by the VACUUM"
    return o


def _shown(text, value):
    """text names value as util_format_bytes() writes it ("%.1f MiB"):
    within half the last digit shown."""
    unit = 1
    while value >= 1024 * unit:
        unit *= 1024
    tol = 0.05 * unit + 1 if unit > 1 else 0
    return helpers.mentions_figure(text, value, rel=tol / value)


def assert_refused(res_json, res_text, pl, needs, free_db, free_tmp):
    """Refused before anything was written, with the figures: the JSON has
    them exactly, the message names what is needed, what is free and both
    directories."""
    assert res_json.rc == 4, res_json.describe()
    o = res_json.one()
    assert o["status"] == "no_space", o
    jm = o.get("journal_mode")
    assert (o["space_needed_bytes"], o["temp_space_needed_bytes"]) == needs, \
        (f"the space check's estimate {(o['space_needed_bytes'], o['temp_space_needed_bytes'])} is not "
         f"{needs}, computed from the PRAGMAs (journal mode {pl_mode(pl)}; the tool read it as {jm!r})", o)
    assert o["space_free_bytes"] == free_db, o
    assert o["temp_space_free_bytes"] == (free_db if pl.same else free_tmp), o
    assert o["temp_dir"] == pl.tmp_dir, o

    assert res_text.rc == 4, res_text.describe()
    msg = res_text.err
    assert pl.db in msg and "no_space" in msg, res_text.describe()
    figures = [needs[0], needs[1]] + ([needs[0] + needs[1], free_db] if pl.same else [free_db, free_tmp])
    for f in figures:
        assert _shown(msg, f), f"{f} bytes ({_mib(f)}) not named in: {msg}"
    assert os.path.dirname(pl.db) + " " in msg, \
        f"the database's directory {os.path.dirname(pl.db)} not named in: {msg}"
    assert pl.tmp_dir in msg, f"the temp directory {pl.tmp_dir} not named in: {msg}"


def pl_mode(pl):
    return "wal" if helpers.header_field(pl.db, 18, 1) == 2 else "rollback"


def assert_untouched(pl, files, free_db, free_tmp):
    assert snapshot([pl.db]) == files, "the refused VACUUM changed the database's files"
    assert os.listdir(pl.tmp_dir) == [], f"left in the temp directory: {os.listdir(pl.tmp_dir)}"
    assert pl.free() == (free_db, free_db if pl.same else free_tmp), "the refused VACUUM took space"


def _reason(res):
    o = res.one() if res.json else {}
    return f"exit {res.rc}, status {o.get('status')}: {o.get('error') or res.err.strip()}"


# --------------------------------------------------------------------------
# (a) the issue's case

@pytest.mark.parametrize("same", [True, False], ids=["tmpdir-same-fs", "tmpdir-other-fs"])
@pytest.mark.parametrize("mode", ["delete", "wal"])
def test_issue_case_is_vacuumed(tmpfs, source, mode, same):
    src = source("issue", mode)
    assert 23 * MiB <= src.size <= 24 * MiB, src.size
    assert 89 <= 100 * src.pragmas["freelist_count"] / src.pragmas["page_count"] <= 91, src.pragmas
    pl = place(tmpfs, src, same)
    free_db, free_tmp = int(16.5 * MiB), 8 * MiB
    set_frees(pl, free_db, free_tmp)
    needs = src.estimate()
    # the old check (twice the file) refused this; the estimate fits
    assert 2 * src.size > free_db
    if same:
        assert needs[0] + needs[1] <= free_db, needs
    else:
        assert needs[0] <= free_db and needs[1] <= free_tmp, needs

    with PeakUse(pl.db_fs, pl.tmp_fs) as peak:
        res = ctl_vacuum(pl)
    assert_vacuumed(res, pl, src, free_db)
    assert res.one()["bytes_reclaimed"] == src.size - os.path.getsize(pl.db), res.one()
    print(f"issue {mode} {'same fs' if same else 'two fs'}: {_mib(src.size)} -> "
          f"{_mib(os.path.getsize(pl.db))}; estimate (x2) {_mib(needs[0])} + {_mib(needs[1])}; "
          f"seen taken: {', '.join(_mib(v) for v in peak.peak.values())}")


# --------------------------------------------------------------------------
# (b) just above / just below the estimate (disk_space_factor 2.0, the default)

CASES = [
    # id, same file system, (db side, temp side): +1 just above, -1 just below
    ("same-fs-above", True, (+1, None)),
    ("same-fs-below", True, (-1, None)),
    ("two-fs-above", False, (+1, +1)),
    ("two-fs-db-short", False, (-1, +1)),
    ("two-fs-tmp-short", False, (+1, -1)),
]


def _free_for(need, side):
    return _up(need) + MARGIN if side > 0 else _down(need) - MARGIN


@pytest.mark.parametrize("case,same,sides", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("mode", ["delete", "wal", "wal-open"])
def test_vacuumed_above_refused_below_the_estimate(tmpfs, source, mode, case, same, sides):
    src = source("medium", mode)
    needs = src.estimate(2.0)
    pl = place(tmpfs, src, same)
    app = helpers.AppProcess(pl.db) if mode == "wal-open" else None
    try:
        if app:
            assert app.query("SELECT count(*) FROM t")[0][0] > 0
            assert os.path.exists(pl.db + "-wal") and os.path.exists(pl.db + "-shm")
        if same:
            free_db = _free_for(needs[0] + needs[1], sides[0])
            free_tmp = free_db
        else:
            free_db, free_tmp = _free_for(needs[0], sides[0]), _free_for(needs[1], sides[1])
        set_frees(pl, free_db, free_tmp)
        files = snapshot([pl.db])

        if min(s for s in sides if s is not None) > 0:
            res = ctl_vacuum(pl)
            if app:
                # the application's connection holds the -wal (emptied) and
                # the -shm; they go with it
                o = res.one()
                assert res.rc == 0 and o["status"] == "ok", res.describe()
                assert o["checkpoint_busy"] is False and helpers.file_size(pl.db + "-wal") == 0, o
                assert app.query("SELECT count(*) FROM t")[0][0] > 0
                app.close()
                app = None
                free_before = free_db + _up(32 * KiB)  # the -shm the application made
            else:
                free_before = free_db
            assert_vacuumed(res, pl, src, free_before)
            return
        res_json, res_text = ctl_vacuum(pl), ctl_vacuum(pl, json=False)
        assert_refused(res_json, res_text, pl, needs, free_db, free_tmp)
        assert_untouched(pl, files, free_db, free_tmp)
    finally:
        if app:
            app.close()
            app.kill()
    problems, _, fl, _ = helpers.open_and_verify(pl.db)
    assert problems == ["ok"] and fl == src.pragmas["freelist_count"], (problems, fl)


# --------------------------------------------------------------------------
# (c) the estimate is enough: disk_space_factor 1.0

def _works(pl, src, free_db, free_tmp):
    """One try of the VACUUM with exactly this much free (no space check):
    True when SQLite completes it, False on SQLITE_FULL."""
    pl.reset(src)
    set_frees(pl, free_db, free_tmp)
    res = ctl_vacuum(pl, "--no-space-check")
    o = res.one()
    if res.rc == 0 and o["status"] == "ok":
        return True
    assert res.rc == 4 and o["status"] == "no_space" and "disk is full" in o.get("error", ""), res.describe()
    return False


def _least_free(pl, src, side, known_good, other):
    """The least free space (to 4 KiB) on one side ("db" or "tmp") with
    which the VACUUM succeeds, the other side given `other`. known_good
    works; 0 is taken to fail."""
    lo, hi = 0, known_good
    while hi - lo > BLOCK:
        mid = _down((lo + hi) // 2)
        if mid <= lo:
            break
        args = (mid, other) if side == "db" else (other, mid)
        if _works(pl, src, *args):
            hi = mid
        else:
            lo = mid
    return hi


@pytest.mark.parametrize("same", [True, False], ids=["tmpdir-same-fs", "tmpdir-other-fs"])
@pytest.mark.parametrize("mode", ["delete", "wal"])
def test_estimate_is_enough_with_factor_one(tmp_path, tmpfs, source, mode, same):
    src = source("medium", mode)
    needs = src.estimate(1.0)
    pl = place(tmpfs, src, same)
    config = helpers.write_config(tmp_path / "factor1.yaml", config_text(
        tmp_path / "state", [pl.db], vacuum={"disk_space_factor": 1.0}))
    if same:
        free_db = free_tmp = _up(needs[0] + needs[1]) + MARGIN
    else:
        free_db, free_tmp = _up(needs[0]) + MARGIN, _up(needs[1]) + MARGIN
    set_frees(pl, free_db, free_tmp)

    # the tool's own check lets it run, and SQLite finds enough room
    with PeakUse(pl.db_fs, pl.tmp_fs) as peak:
        res = ctl_vacuum(pl, config=config)
    o = res.one()
    assert res.rc == 0 and o["status"] == "ok", \
        (f"with {_mib(free_db)} free ({'for both' if same else 'beside the database'}"
         f"{'' if same else f', {_mib(free_tmp)} in the temp directory'}), just above the estimate "
         f"{needs[0]} + {needs[1]} bytes, the VACUUM failed: {_reason(res)}\n" + res.describe())
    assert_vacuumed(res, pl, src, free_db)

    # what SQLite really needs: the least free space that works
    seen = list(peak.peak.values())
    if same:
        least = _least_free(pl, src, "db", free_db, None)
        real = f"least free that works {_mib(least)} for both, estimate {_mib(needs[0] + needs[1])} " \
               f"({least - needs[0] - needs[1]:+d} bytes); seen taken {_mib(seen[0])}"
    else:
        least_db = _least_free(pl, src, "db", free_db, free_tmp)
        least_tmp = _least_free(pl, src, "tmp", free_tmp, free_db)
        real = f"least free that works: beside the database {_mib(least_db)}, estimate {_mib(needs[0])} " \
               f"({least_db - needs[0]:+d} bytes); in the temp directory {_mib(least_tmp)}, estimate " \
               f"{_mib(needs[1])} ({least_tmp - needs[1]:+d} bytes); seen taken {_mib(seen[0])}, {_mib(seen[1])}"
    print(f"factor 1.0 {mode} {'same fs' if same else 'two fs'}: live pages {src.live_pages} x "
          f"{src.pragmas['page_size']}; {real}")

    # and the check does use factor 1.0: 8 KiB short of the estimate
    # beside the database is refused by the check, not by SQLITE_FULL
    pl.reset(src)
    short = _down(needs[0] + (needs[1] if same else 0)) - 2 * BLOCK
    set_frees(pl, short, free_tmp)
    res = ctl_vacuum(pl, config=config)
    o = res.one()
    # (a VACUUM that ran out of space is no_space too, with the check's
    # figures, but SQLite's error)
    refused = res.rc == 4 and o["status"] == "no_space" and \
        o.get("error", "").startswith("not enough free space for VACUUM")
    assert refused, \
        (f"with {_mib(short)} free, 8 KiB short of the estimate, the space check let the VACUUM run "
         f"(it estimated {o.get('space_needed_bytes')} + {o.get('temp_space_needed_bytes')} bytes, "
         f"the PRAGMAs give {needs[0]} + {needs[1]}): {_reason(res)}", o)
    assert (o["space_needed_bytes"], o["temp_space_needed_bytes"]) == needs, \
        (f"the space check's estimate is not {needs}, computed from the PRAGMAs (journal mode {mode}; "
         f"the tool read it as {o.get('journal_mode')!r})", o)


# --------------------------------------------------------------------------
# (d) the daemon, once

@pytest.mark.parametrize("fits", [True, False], ids=["fits", "short"])
@pytest.mark.parametrize("mode", ["delete", "wal"])
def test_daemon_once_vacuums_or_refuses_by_the_estimate(tmp_path, tmpfs, daemon, source, mode, fits):
    src = source("medium", mode)
    needs = src.estimate(2.0)
    pl = place(tmpfs, src, True)
    free = _free_for(needs[0] + needs[1], +1 if fits else -1)
    set_free(pl.db_fs, free)
    files = snapshot([pl.db])

    cfg = config_text(tmp_path / "state", [pl.db])
    d = daemon.start(cfg, "--once", "--ignore-window", env={"SQLITE_TMPDIR": pl.tmp_dir}, log_level="info",
                     wait_ready=False)
    rc = d.wait(60)
    if fits:
        assert rc == 0, d.describe()
        d.wait_for_entry(msgid="VACUUM_DONE", DB_PATH=pl.db)
        assert not d.entries(msgid="NO_SPACE"), format_entries(d.entries())
        assert_vacuumed_files(pl, src, free)
        return
    assert rc == 1, "a refused VACUUM is a failure for --once\n" + d.describe()
    e = d.wait_for_entry(msgid="NO_SPACE", DB_PATH=pl.db)
    assert e["OPERATION"] == "vacuum", e
    assert (int(e["SPACE_NEEDED_BYTES"]), int(e["TEMP_SPACE_NEEDED_BYTES"])) == needs, \
        (f"the daemon's estimate is not {needs}, computed from the PRAGMAs (journal mode {mode})", e)
    msg = e["MESSAGE"]
    for f in (needs[0], needs[1], needs[0] + needs[1], free):
        assert _shown(msg, f), f"{f} bytes ({_mib(f)}) not named in: {msg}"
    assert pl.tmp_dir in msg and os.path.dirname(pl.db) + " " in msg, msg
    assert not d.entries(msgid="VACUUM_DONE"), format_entries(d.entries())
    assert_untouched(pl, files, free, free)


def assert_vacuumed_files(pl, src, free_before):
    """assert_vacuumed() without the tool's JSON."""
    assert not helpers.side_files(pl.db), helpers.side_files(pl.db)
    assert os.listdir(pl.tmp_dir) == [], os.listdir(pl.tmp_dir)
    size = os.path.getsize(pl.db)
    assert abs(size - src.live_bytes) <= 0.02 * src.live_bytes, (size, src.live_bytes)
    assert helpers.free_bytes(pl.db_fs) == free_before + _up(src.size) - _up(size)
    problems, _, fl, _ = helpers.open_and_verify(pl.db)
    assert problems == ["ok"] and fl == 0, (problems, fl)
    assert row_digests(pl.db) == src.digests, "rows changed by the VACUUM"


# --------------------------------------------------------------------------
# (e) a WAL database nobody has open is still a WAL database

def test_idle_wal_database_is_vacuumed_as_wal(tmpfs, source):
    """Without a -wal the tool reads the database through immutable=1, and
    SQLite then answers PRAGMA journal_mode with "delete" whatever the
    header says. A WAL database must still be treated as one: its
    estimate counts WAL frames (test_vacuumed_above_refused_below_the_
    estimate), and after the VACUUM the tool checkpoints and truncates the
    -wal it wrote itself (it cannot count on being the last connection:
    an application may have opened the database meanwhile), so the JSON
    reports the shrunk file and an empty -wal."""
    src = source("medium", "wal")
    pl = place(tmpfs, src, True)
    free = _up(sum(src.estimate(2.0))) + MARGIN
    set_free(pl.db_fs, free)
    res = ctl_vacuum(pl)
    o = assert_vacuumed(res, pl, src, free)
    assert o["journal_mode"] == "wal", o
    assert (o["file_size_bytes"], o["wal_size_bytes"]) == (os.path.getsize(pl.db), 0), \
        ("after the VACUUM the JSON reports the file and -wal as they were before the tool's last close: "
         "no checkpoint ran", o)
