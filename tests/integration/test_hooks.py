# SPDX-License-Identifier: MIT
"""vacuum.before_vacuum and after_vacuum (src/hook.c, run by the job
process as the database's owner): a non-zero exit of before_vacuum skips
the VACUUM with its reason logged and the database left as it was; a hook
that hangs is killed at hook_timeout with what it started; the hooks get
the database and its figures in their environment, after_vacuum the
result; a database of an unprivileged user runs its hooks as that user.
Waits are for the job's own answer (run --wait); nothing depends on speed."""

import os
import shutil
import subprocess
import tempfile

import pytest

import helpers
from daemon_fixtures import M, config_text, journald, daemon  # noqa: F401

LONG_WAIT = 90


@pytest.fixture
def shared():
    """A directory everyone may enter (a database of nobody's, its hooks
    and their output), short enough for a socket."""
    d = tempfile.mkdtemp(prefix="maintd-h-", dir="/tmp")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def script(path, body):
    with open(path, "w") as f:
        f.write("#!/bin/sh\n" + body)
    os.chmod(path, 0o755)
    return path


def start(daemon, shared, dbs, vacuum):
    state = os.path.join(shared, "state")
    os.makedirs(state, exist_ok=True)
    sock = os.path.join(shared, "ctl.sock")
    text = config_text(state, dbs, vacuum=vacuum) + f"control_socket: {sock}\n"
    return daemon.start(text), sock


def run_vacuum(sock, db):
    return helpers.run_ctl("--socket", sock, "run", "vacuum", db, "--wait", "--json", timeout=LONG_WAIT)


def env_file(path):
    with open(path) as f:
        return dict(line.rstrip("\n").split("=", 1) for line in f if "=" in line and line.startswith("SQLITE_MAINTD_"))


def test_before_vacuum_refusal_skips_it(daemon, shared):
    db = os.path.join(shared, "a.db")
    helpers.make_fragmented_db(db, delete_fraction=0.25)
    free = helpers.freelist_count(db)
    digest = helpers.sha256(db)
    hook = script(os.path.join(shared, "refuse"), "echo 'a backup is running' >&2\nexit 3\n")
    d, sock = start(daemon, shared, [db], {"before_vacuum": hook})
    r = run_vacuum(sock, db)
    assert r.rc == 1, r.describe()
    o = r.one()
    assert o["result"] == "hook_refused", o
    assert o["message"] == f"before_vacuum {hook}: exit status 3: a backup is running; VACUUM skipped", o
    assert helpers.freelist_count(db) == free and helpers.sha256(db) == digest
    e = d.wait_for_entry(M("JOB_FAILED", REASON="hook_refused", DB_PATH=db))
    assert e["PRIORITY"] == "4" and "decided again at the next poll" in e["MESSAGE"], e
    st = helpers.run_ctl("--socket", sock, "status", "--json", db).one()["databases"][0]
    assert st["state"] != "held" and st["last_job"]["result"] == "hook_refused", st
    m = helpers.run_ctl("--socket", sock, "metrics").out
    assert 'sqlite_maintd_jobs_total{operation="vacuum",result="hook_refused"} 1' in m, m[:3000]


def test_hooks_get_the_database_and_its_figures(daemon, shared):
    db = os.path.join(shared, "b.db")
    helpers.make_fragmented_db(db, delete_fraction=0.25)
    frag = helpers.fragmentation(db)
    before_out = os.path.join(shared, "before.env")
    after_out = os.path.join(shared, "after.env")
    before = script(os.path.join(shared, "before"), f"env > {before_out}\nexit 0\n")
    after = script(os.path.join(shared, "after"), f"env > {after_out}\nexit 0\n")
    d, sock = start(daemon, shared, [db], {"before_vacuum": before, "after_vacuum": after})
    r = run_vacuum(sock, db)
    assert r.rc == 0 and r.one()["result"] == "ok", r.describe()
    b = env_file(before_out)
    assert b["SQLITE_MAINTD_DB"] == db and b["SQLITE_MAINTD_OPERATION"] == "vacuum", b
    assert abs(float(b["SQLITE_MAINTD_FRAGMENTATION_PERCENT"]) - frag) < 0.01, (b, frag)
    assert int(b["SQLITE_MAINTD_FREELIST_COUNT"]) > 0 and int(b["SQLITE_MAINTD_FILE_SIZE_BYTES"]) > 0, b
    a = env_file(after_out)
    assert a["SQLITE_MAINTD_RESULT"] == "ok" and int(a["SQLITE_MAINTD_BYTES_RECLAIMED"]) > 0, a
    assert float(a["SQLITE_MAINTD_FRAGMENTATION_PERCENT"]) == 0.0, a
    assert helpers.freelist_count(db) == 0


def test_a_hanging_hook_is_killed_at_its_timeout(daemon, shared):
    db = os.path.join(shared, "c.db")
    helpers.make_fragmented_db(db, delete_fraction=0.25)
    free = helpers.freelist_count(db)
    marker = f"sleep 600.{os.getpid()}{len(shared)}"  # a command line of this test's own
    # the hook starts a child of its own: both go at the limit
    hook = script(os.path.join(shared, "hang"), f"{marker} &\nexec {marker}\n")
    d, sock = start(daemon, shared, [db], {"before_vacuum": hook, "hook_timeout": "1s"})
    r = run_vacuum(sock, db)
    assert r.rc == 1 and r.one()["result"] == "hook_refused", r.describe()
    assert "killed at its time limit" in r.one()["message"], r.one()
    assert helpers.freelist_count(db) == free
    left = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True)
    assert left.returncode == 1, f"hook processes left running: {left.stdout}"
    assert d.alive(), d.describe()


def test_hooks_run_as_the_databases_owner(daemon, shared):
    """A tenant's database: its hooks run as the tenant (the job process's
    user), not as root."""
    tenant = os.path.join(shared, "tenant")
    os.mkdir(tenant)
    db = os.path.join(tenant, "t.db")
    helpers.make_fragmented_db(db, delete_fraction=0.25)
    out = os.path.join(tenant, "who")
    for p in (tenant, db):
        shutil.chown(p, "nobody", "nogroup")
    hook = script(os.path.join(shared, "who"), f"id -u > {out}\nexit 0\n")
    d, sock = start(daemon, shared, [db], {"before_vacuum": hook})
    r = run_vacuum(sock, db)
    assert r.rc == 0 and r.one()["result"] == "ok", r.describe()
    with open(out) as f:
        assert f.read().strip() == "65534"
    assert os.stat(out).st_uid == 65534


def test_bad_hook_settings_name_file_line_column(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(f"state_dir: {tmp_path}\ndatabases:\n  - path: /x.db\n    vacuum:\n      before_vacuum: relative/script\n")
    p = subprocess.run([helpers.MAINTD_BIN, "-n", "-c", str(cfg)], capture_output=True, text=True, timeout=60)
    assert p.returncode != 0, p
    assert f"{cfg}:5:22: invalid before_vacuum 'relative/script': expected an absolute path" in p.stderr, p.stderr


def wait_file(path, timeout=LONG_WAIT):
    import time
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path):
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} never appeared")


def test_progress_of_a_running_vacuum(daemon, shared):
    """A running VACUUM's phase, reported by its job process: in status
    (with the share of this host's estimate), STATUS= and the journal.
    Hooks that wait for the test hold it in a phase as long as needed."""
    import sqlite3
    import time

    db = os.path.join(shared, "p.db")
    helpers.make_fragmented_db(db, delete_fraction=0.25)
    state = os.path.join(shared, "state")
    os.makedirs(state, mode=0o700)
    con = sqlite3.connect(os.path.join(state, "state.db"))
    con.execute("CREATE TABLE vacuum_rates(bytes INTEGER NOT NULL, duration_ms INTEGER NOT NULL)")
    con.execute("INSERT INTO vacuum_rates VALUES(?, 3600000)", (os.path.getsize(db),))  # an hour for this file
    con.commit()
    con.close()
    entered, release = os.path.join(shared, "entered"), os.path.join(shared, "release")
    hold = script(os.path.join(shared, "hold"), f"touch {entered}\nwhile [ ! -e {release} ]; do sleep 0.05; done\n")
    d, sock = start(daemon, shared, [db], {"before_vacuum": hold})
    q = helpers.run_ctl("--socket", sock, "run", "vacuum", db, "--json")
    assert q.rc == 0 and q.one()["message"] == "queued", q.describe()
    # a client that waits for it, longer than the socket's 5 s read timeout
    waiter = subprocess.Popen([helpers.MAINTCTL_BIN, "--socket", sock, "run", "vacuum", db, "--wait"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_file(entered)
    t_entered = time.monotonic()
    e = d.wait_for_entry(M(message=f"{db}: VACUUM before_vacuum hook (running for"))
    assert e["PHASE"] == "before_vacuum hook" and "PROGRESS_PERCENT" in e, e
    job = helpers.run_ctl("--socket", sock, "status", "--json", db).one()["databases"][0]["job"]
    assert job["operation"] == "vacuum" and job["phase"] == "before_vacuum hook", job
    assert job["estimated_ms"] > 3000000 and 0 <= job["estimated_percent"] <= 99, job
    _, n = d.notify.wait_for(lambda n: f"; now: VACUUM of {db}: before_vacuum hook, about " in (n.value("STATUS") or ""),
                             alive=d.alive)
    assert n.value("STATUS").startswith("Watching 1 database; 1 job running, 0 queued; "), n.text
    # held past the read timeout (5 s): the reply must still come
    time.sleep(max(0.0, 6.0 - (time.monotonic() - t_entered)))
    open(release, "w").close()
    d.wait_for_entry(M("VACUUM_DONE", DB_PATH=db), timeout=LONG_WAIT)
    assert helpers.freelist_count(db) == 0
    out, err = waiter.communicate(timeout=LONG_WAIT)
    assert waiter.returncode == 0 and f"{db}: vacuum: ok: fragmentation " in out, (out, err)


def test_ctl_progress_line_only_on_a_terminal(shared):
    """sqlite-maintctl vacuum shows a progress line on a terminal (stderr)
    for a long job, and none when stderr is not one."""
    import pty
    import select

    db = os.path.join(shared, "t.db")
    helpers.make_fragmented_db(db, delete_fraction=0.25)
    entered, release = os.path.join(shared, "entered"), os.path.join(shared, "release")
    hold = script(os.path.join(shared, "hold"), f"touch {entered}\nwhile [ ! -e {release} ]; do sleep 0.05; done\n")
    cfg = os.path.join(shared, "c.yaml")
    with open(cfg, "w") as f:
        f.write(f"databases:\n  - path: {db}\n    vacuum:\n      before_vacuum: {hold}\n")
    master, slave = pty.openpty()
    p = subprocess.Popen([helpers.MAINTCTL_BIN, "-c", cfg, "vacuum", "--force", db], stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    seen = b""
    try:
        while b"VACUUM before_vacuum hook" not in seen:
            r, _, _ = select.select([master], [], [], LONG_WAIT)
            assert r, f"no progress line on the terminal: {seen!r}"
            seen += os.read(master, 4096)
        open(release, "w").close()
        out, _ = p.communicate(timeout=LONG_WAIT)
    finally:
        if p.poll() is None:
            p.kill()
        open(release, "a").close()
    assert p.returncode == 0, (out, seen)
    assert b"\r" in seen and b"\n" not in seen.split(b"VACUUM before_vacuum hook", 1)[1].split(b"\r", 1)[0]
    assert b"\r" not in out

    os.unlink(entered)
    os.unlink(release)
    # --force: the packed file is vacuumed again, as long
    q = subprocess.Popen([helpers.MAINTCTL_BIN, "-c", cfg, "vacuum", "--force", db], stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_file(entered)
    open(release, "w").close()
    out, err = q.communicate(timeout=LONG_WAIT)
    assert q.returncode == 0 and b"\r" not in err and b"VACUUM before_vacuum hook" not in err, (out, err)


def test_a_hook_others_may_change_is_not_run(daemon, shared):
    """A hook runs as the database's owner (root here): a program another
    user may write would run their code as root. Refused, named, the
    database left alone."""
    db = os.path.join(shared, "u.db")
    helpers.make_fragmented_db(db, delete_fraction=0.25)
    free = helpers.freelist_count(db)
    loose = os.path.join(shared, "loose")
    os.mkdir(loose)
    os.chmod(loose, 0o777)  # anyone may replace what is in it
    ran = os.path.join(shared, "ran")
    hook = script(os.path.join(loose, "hook"), f"touch {ran}\nexit 0\n")
    d, sock = start(daemon, shared, [db], {"before_vacuum": hook})
    r = run_vacuum(sock, db)
    assert r.rc == 1 and r.one()["result"] == "hook_refused", r.describe()
    assert "not run: " in r.one()["message"] and "writable by" in r.one()["message"], r.one()
    assert not os.path.exists(ran) and helpers.freelist_count(db) == free


def test_after_vacuum_failure_is_a_warning(daemon, shared):
    db = os.path.join(shared, "w.db")
    helpers.make_fragmented_db(db, delete_fraction=0.25)
    after = script(os.path.join(shared, "after"), "echo 'cannot resume the writers' >&2\nexit 2\n")
    d, sock = start(daemon, shared, [db], {"after_vacuum": after})
    r = run_vacuum(sock, db)
    assert r.rc == 0 and r.one()["result"] == "ok", r.describe()  # the VACUUM's result stands
    assert helpers.freelist_count(db) == 0
    e = d.wait_for_entry(M("JOB_FAILED", REASON="after_vacuum_failed", DB_PATH=db))
    assert e["PRIORITY"] == "4" and "exit status 2: cannot resume the writers" in e["HOOK_MESSAGE"], e


def test_a_stop_ends_a_running_hook(daemon, shared):
    """SIGTERM while before_vacuum runs: the job is asked to stop, its
    hook and what the hook started are killed, the daemon ends, nothing
    is left running."""
    db = os.path.join(shared, "s.db")
    helpers.make_fragmented_db(db, delete_fraction=0.25)
    free = helpers.freelist_count(db)
    marker = f"sleep 700.{os.getpid()}{len(shared)}"
    entered = os.path.join(shared, "entered")
    hook = script(os.path.join(shared, "long"), f"touch {entered}\n{marker} &\nexec {marker}\n")
    d, sock = start(daemon, shared, [db], {"before_vacuum": hook, "hook_timeout": "1h"})
    q = helpers.run_ctl("--socket", sock, "run", "vacuum", db)
    assert q.rc == 0, q.describe()
    wait_file(entered)
    assert d.stop() == 0, d.describe()
    left = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True)
    assert left.returncode == 1, f"hook processes left running: {left.stdout}"
    assert helpers.freelist_count(db) == free


def test_a_hook_that_leaves_a_child_has_ended(daemon, shared):
    """A before_vacuum that exits 0 at once leaving a child that holds its
    output: the hook is done when it exits (not at hook_timeout), and the
    child, in its process group, goes."""
    db = os.path.join(shared, "k.db")
    helpers.make_fragmented_db(db, delete_fraction=0.25)
    marker = f"sleep 800.{os.getpid()}{len(shared)}"
    hook = script(os.path.join(shared, "leaves"), f"{marker} &\necho started a child\nexit 0\n")
    d, sock = start(daemon, shared, [db], {"before_vacuum": hook, "hook_timeout": "1h"})
    r = run_vacuum(sock, db)  # bounded by LONG_WAIT, far below the 1 h limit
    assert r.rc == 0 and r.one()["result"] == "ok", r.describe()
    assert helpers.freelist_count(db) == 0
    left = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True)
    assert left.returncode == 1, f"the hook's child was left running: {left.stdout}"
