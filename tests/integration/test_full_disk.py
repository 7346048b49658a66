# SPDX-License-Identifier: MIT
"""A full disk, for real: small tmpfs mounts (root only) under the database
or under SQLite's temp directory (SQLITE_TMPDIR).

(a), (b): the space check refuses a VACUUM that cannot fit, before touching
     anything: sqlite-maintctl exits 4 with status no_space and a message
     naming what is needed and what is free; the daemon logs NO_SPACE; the
     database file is byte for byte what it was.
(c)  with the check turned off (sqlite-maintctl vacuum --no-space-check) the
     VACUUM really runs out of space (SQLITE_FULL): status no_space, exit 4,
     the database intact with every row, and the space it used given back:
     the free space on the small file system is what it was before (in WAL
     mode the partial -wal must not keep the disk full)."""

import os
import shutil

import pytest

import helpers
from daemon_fixtures import (  # noqa: F401  (fixtures are used by name)
    config_text, daemon, format_entries, journald)
from helpers import checksum, snapshot

MiB = 1024 * 1024


def _make_on_big_fs(tmp_path, name, mode, pages, frag):
    """Make the database on the big file system (a tmpfs too small to make
    it on would fail the making, not the test); returns (path, checksum)."""
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    p = src / name
    helpers.make_db(p, frag, mode, pages, index=True)
    return p, helpers.checksum(p)


def _place(src, dst_dir):
    """Copy the main file (WAL checkpointed into it) where the test wants it."""
    dst = os.path.join(str(dst_dir), os.path.basename(str(src)))
    shutil.copyfile(src, dst)
    return dst


def _assert_refusal(res, db, needs, free_db, tmp_dir, free_tmp, short):
    """sqlite-maintctl's refusal, in --json (res_json) or in words (res_text);
    needs: (beside the database, in the temp directory) as
    helpers.vacuum_space_needed estimates them."""
    needed = needs[0] if short == "db" else needs[1]
    res_json, res_text = res
    assert res_json.rc == 4, res_json.describe()
    o = res_json.one()
    assert o["status"] == "no_space", o
    assert (o["space_needed_bytes"], o["temp_space_needed_bytes"]) == needs, (o, needs)
    # the small file system's free space as we see it (less the 32 KiB
    # -shm the tool's own connection makes in WAL mode); the big one's,
    # which other processes change, is plenty
    small_key, big_key = (("space_free_bytes", "temp_space_free_bytes") if short == "db"
                          else ("temp_space_free_bytes", "space_free_bytes"))
    assert abs(o[small_key] - (free_db if short == "db" else free_tmp)) <= 64 * 1024, (o, free_db, free_tmp)
    assert o[small_key] < needed <= o[big_key], o
    assert o["temp_dir"] == str(tmp_dir), o
    assert res_text.rc == 4, res_text.describe()
    msg = res_text.err
    assert str(db) in msg and "no_space" in msg, msg
    # the figures: what it needs, and the too small free space it found
    assert helpers.mentions_figure(msg, needed, rel=0.05), f"needed {needed} not in: {msg}"
    short_free = free_db if short == "db" else free_tmp
    assert helpers.mentions_figure(msg, short_free, rel=0.05), f"free {short_free} not in: {msg}"
    if short == "tmp":
        assert str(tmp_dir) in msg, msg


def _ctl_vacuum(db, tmp_dir, *extra):
    env = {"SQLITE_TMPDIR": tmp_dir}
    return (helpers.run_ctl("--json", "vacuum", "--force", *extra, db, env=env),
            helpers.run_ctl("vacuum", "--force", *extra, db, env=env))


# --------------------------------------------------------------------------
# (a) and (b): refused by the space check

@pytest.mark.parametrize("mode", ["delete", "wal"])
@pytest.mark.parametrize("short", ["db", "tmp"], ids=["db-filesystem-small", "tmpdir-small"])
def test_space_check_refuses_and_leaves_database_alone(tmp_path, tmpfs, daemon, mode, short):
    # (a) 10 MiB tmpfs holding a ~5 MiB database of ~3.3 MiB live pages:
    #     2 x (3.3 MiB and its journal or WAL) do not fit in the 5 MiB left;
    #     the temp directory is on the big file system.
    # (b) the database on the big file system, the temp directory a 2 MiB
    #     tmpfs, short of 2 x 3.3 MiB.
    src, cs = _make_on_big_fs(tmp_path, "db.db", mode, 1300, 35)
    if short == "db":
        small = tmpfs("10m")
        db = _place(src, small)
        tmp_dir = tmp_path / "sqltmp"
        tmp_dir.mkdir()
    else:
        small = tmp_dir = tmpfs("2m")
        db = _place(src, tmp_path)
    size = os.path.getsize(db)
    assert 5 * MiB <= size <= 6 * MiB, size
    needs = helpers.db_space_needed(db)
    files = snapshot([db])
    free_db, free_tmp = helpers.free_bytes(os.path.dirname(db)), helpers.free_bytes(tmp_dir)
    assert (free_db if short == "db" else free_tmp) < (needs[0] if short == "db" else needs[1])

    _assert_refusal(_ctl_vacuum(db, tmp_dir), db, needs, free_db, tmp_dir, free_tmp, short)
    assert snapshot([db]) == files, "the refused VACUUM changed the database"
    assert helpers.free_bytes(small) == (free_db if short == "db" else free_tmp), "the refused VACUUM wrote"

    # the daemon, once, outside any window: NO_SPACE, nothing touched
    cfg = config_text(tmp_path / "state", [db])
    d = daemon.start(cfg, "--once", "--ignore-window", env={"SQLITE_TMPDIR": tmp_dir}, log_level="info",
                     wait_ready=False)
    rc = d.wait(60)
    assert rc == 1, "a refused VACUUM is a failure for --once\n" + d.describe()
    e = d.wait_for_entry(msgid="NO_SPACE", DB_PATH=db)
    assert e["PRIORITY"] == "4" and e["OPERATION"] == "vacuum", e
    assert (int(e["SPACE_NEEDED_BYTES"]), int(e["TEMP_SPACE_NEEDED_BYTES"])) == needs, e
    assert helpers.mentions_figure(e["MESSAGE"], needs[0] if short == "db" else needs[1], rel=0.05), e["MESSAGE"]
    short_free = free_db if short == "db" else free_tmp
    assert helpers.mentions_figure(e["MESSAGE"], short_free, rel=0.05), e["MESSAGE"]
    assert not d.entries(msgid="VACUUM_DONE"), format_entries(d.entries())
    assert snapshot([db]) == files, "the daemon changed the database it refused to VACUUM"
    problems, got, fl, _ = helpers.open_and_verify(db)
    assert problems == ["ok"] and got == cs and fl > 0


# --------------------------------------------------------------------------
# (c): no space check, SQLITE_FULL for real

@pytest.mark.parametrize("mode", ["delete", "wal"])
@pytest.mark.parametrize("full", ["db", "tmp", "tmp-at-commit"],
                         ids=["db-filesystem-full", "tmpdir-full", "tmpdir-full-at-commit"])
def test_vacuum_running_out_of_space_leaves_database_intact(tmp_path, tmpfs, mode, full):
    if full == "db":
        # ~8.5 MiB on a 12 MiB tmpfs: the journal (rollback) or the -wal
        # (WAL) of the ~6 MiB new database cannot fit in the ~3.5 MiB left
        src, cs = _make_on_big_fs(tmp_path, "db.db", mode, 2100, 30)
        small = tmpfs("12m")
        db = _place(src, small)
        tmp_dir = tmp_path / "sqltmp"
        tmp_dir.mkdir()
    else:
        # the ~3.4 MiB temp copy of a ~5 MiB database in a 1 MiB temp
        # directory: SQLITE_FULL while the copy is built. With 2 MiB SQLite
        # 3.40 keeps the rest of the copy in memory, copies it back, commits
        # the VACUUM, and only then fails to write the temp database out:
        # SQLITE_FULL for a VACUUM that was done.
        src, cs = _make_on_big_fs(tmp_path, "db.db", mode, 1300, 35)
        small = tmpfs("1m" if full == "tmp" else "2m")
        tmp_dir = small
        db = _place(src, tmp_path)
    files = snapshot([db])
    free_before = helpers.free_bytes(small)

    res, text = _ctl_vacuum(db, tmp_dir, "--no-space-check")
    for r in (res, text):
        assert r.rc == 4, r.describe()
    o = res.one()
    assert o["status"] == "no_space", o
    assert "disk is full" in o["error"], o  # SQLITE_FULL
    assert "space_needed_bytes" not in o, "the space check ran despite --no-space-check"
    assert "no_space" in text.err and "disk is full" in text.err, text.describe()

    # the space it took is given back: nothing left behind fills the disk
    leftovers = {f: os.path.getsize(os.path.join(small, f)) for f in os.listdir(small)}
    assert helpers.free_bytes(small) >= free_before - 64 * 1024, \
        f"{free_before - helpers.free_bytes(small)} bytes less free on {small} after the failed VACUUM: {leftovers}"
    assert not os.path.exists(db + "-journal"), leftovers
    if mode == "wal":
        assert helpers.file_size(db + "-wal") == 0, leftovers
    # the database: every row as before
    problems, got, fl, _ = helpers.open_and_verify(db)
    assert problems == ["ok"], problems
    assert got == cs
    if full != "tmp-at-commit":
        # and in fact every byte: the VACUUM never wrote it
        assert snapshot([db]) == files, "the failed VACUUM changed the database file"
        assert fl > 0
    else:
        # never half done: untouched, or completely vacuumed
        assert snapshot([db]) == files or fl == 0, "a failed VACUUM left the file changed, not vacuumed"
        print(f"{mode}: SQLITE_FULL reported; the database was "
              f"{'left untouched' if snapshot([db]) == files else 'vacuumed all the same (freelist 0)'}")


def test_wal_vacuum_out_of_space_next_to_an_open_application(tmp_path, tmpfs):
    """As above in WAL mode, but the application is connected (idle), as it
    is whenever the daemon works on a live database: closing the tool's
    connection then does not delete the -wal, so the partial WAL of the
    failed VACUUM would keep the file system full until the application
    closes. The tool must give the space back itself."""
    src, _ = _make_on_big_fs(tmp_path, "db.db", "wal", 2100, 30)
    rows = checksum(src, "t")
    small = tmpfs("12m")
    db = _place(src, small)
    tmp_dir = tmp_path / "sqltmp"
    tmp_dir.mkdir()
    app = helpers.AppProcess(db)
    try:
        assert app.query("SELECT count(*) FROM t")[0][0] > 0
        free_before = helpers.free_bytes(small)
        res = helpers.run_ctl("--json", "vacuum", "--force", "--no-space-check", db,
                              env={"SQLITE_TMPDIR": tmp_dir})
        assert res.rc == 4 and res.one()["status"] == "no_space", res.describe()
        leftovers = {f: os.path.getsize(os.path.join(small, f)) for f in os.listdir(small)}
        lost = free_before - helpers.free_bytes(small)
        assert lost <= 64 * 1024, \
            f"after the failed VACUUM {lost} bytes stay taken on {small} while the application is " \
            f"connected: {leftovers}"
        # the application goes on writing
        app.sql("INSERT INTO app(note) VALUES('after the full disk')")
    finally:
        app.close()
        app.kill()
    problems, _, fl, _ = helpers.open_and_verify(db)
    assert problems == ["ok"] and fl > 0, problems
    assert checksum(db, "t") == rows
