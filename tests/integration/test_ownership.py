# SPDX-License-Identifier: MIT
"""A root daemon maintaining another user's database must leave every side
file (-journal, -wal, -shm) owned as the database is, so the application can
still open and write it afterwards."""
import os
import pwd
import shutil
import sqlite3
import subprocess
import tempfile

import pytest

from daemon_fixtures import (  # noqa: F401  (fixtures are used by name)
    config_text, daemon, journald, notify_socket)
from helpers import AS_NOBODY, PYTHON, make_db

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to own files as another user")

SIDE = ("-journal", "-wal", "-shm")


def app_writes(db):
    """The application, as nobody: open and insert a row."""
    code = ("import sqlite3,sys; c=sqlite3.connect(sys.argv[1], timeout=10); "
            "c.execute('CREATE TABLE IF NOT EXISTS owner_probe(x)'); "
            "c.execute('INSERT INTO owner_probe VALUES (1)'); "
            "c.commit(); print(c.execute('SELECT count(*) FROM owner_probe').fetchone()[0])")
    return subprocess.run(AS_NOBODY + [PYTHON, "-c", code, str(db)], capture_output=True, text=True, timeout=30)


# The application, as nobody, keeps a connection open (so -wal and -shm stay
# after the daemon closes its own) until its stdin closes.
APP_OPEN = ("import sqlite3,sys; c=sqlite3.connect(sys.argv[1], timeout=10); "
            "c.execute('SELECT count(*) FROM sqlite_master').fetchone(); print('open', flush=True); "
            "sys.stdin.read()")


@pytest.fixture
def app_dir():
    nobody = pwd.getpwnam("nobody")
    # a directory of its own under /tmp, which nobody can reach (pytest's
    # base may sit below directories it cannot enter); never a fixed name,
    # which another test session running at the same time would share
    base = tempfile.mkdtemp(prefix="maintd-owner-", dir="/tmp")
    os.chmod(base, 0o755)
    os.chown(base, nobody.pw_uid, nobody.pw_gid)
    yield base, nobody.pw_uid, nobody.pw_gid
    shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("mode", ["delete", "wal"])
def test_daemon_leaves_side_files_to_the_owner(tmp_path, daemon, app_dir, mode):
    base, uid, gid = app_dir
    db = os.path.join(base, f"app-{mode}.db")
    make_db(db, 35)
    if mode == "wal":
        con = sqlite3.connect(db)
        con.execute("PRAGMA journal_mode=WAL")
        con.close()
    for f in [db] + [db + s for s in SIDE if os.path.exists(db + s)]:
        os.chown(f, uid, gid)
    os.chmod(db, 0o640)

    app = None
    if mode == "wal":
        app = subprocess.Popen(AS_NOBODY + [PYTHON, "-c", APP_OPEN, db], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
        assert app.stdout.readline().strip() == "open"
    try:
        state = tmp_path / "state"
        d = daemon.start(config_text(state, [db], vacuum={"window": "always"}, analyze={"interval": "1s"}))
        d.wait_for_entry(msgid="VACUUM_DONE", DB_PATH=db)
        d.wait_for_entry(msgid="ANALYZE_DONE", DB_PATH=db)
        assert d.stop() == 0, d.describe()

        present = [db + s for s in SIDE if os.path.exists(db + s)]
        if mode == "wal":  # the application's connection keeps them
            assert db + "-wal" in present and db + "-shm" in present, present
        for f in present + [db]:
            st = os.stat(f)
            assert (st.st_uid, st.st_gid) == (uid, gid), f"{f} is owned by {st.st_uid}:{st.st_gid}"
        p = app_writes(db)
        assert p.returncode == 0, p.stderr
        assert p.stdout.strip() == "1"
    finally:
        if app:
            app.stdin.close()
            app.wait(timeout=15)
    for f in (db + s for s in SIDE):
        if os.path.exists(f):
            st = os.stat(f)
            assert (st.st_uid, st.st_gid) == (uid, gid), f
