# SPDX-License-Identifier: MIT
"""The control socket (docs/CONTROL.md) against a running daemon: status,
explain, run (and --wait), metrics and the metrics file, the socket's
permissions and its check of the peer's credentials (a real unprivileged
user), malformed, oversized and slow requests, many clients at once, and
sqlite-maintctl without a daemon. Every wait is bounded and waits for a
positive sign (a reply, an entry, a file); nothing depends on speed."""

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time

import pytest

import helpers
from daemon_fixtures import M, config_text, journald, daemon  # noqa: F401

LONG_WAIT = 60
NO_DAEMON = 7  # sqlite-maintctl's exit status when the daemon cannot be reached


@pytest.fixture
def sockdir():
    """A short directory for the control socket (sun_path holds 108 bytes),
    reachable by nobody (the permission tests)."""
    d = tempfile.mkdtemp(prefix="maintd-c-", dir="/tmp")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def conf_with_socket(tmp_path, sock, dbs, extra="", **kw):
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    return config_text(state, dbs, **kw) + f"control_socket: {sock}\n" + extra


def ctl(sock, *args, **kw):
    return helpers.run_ctl("--socket", sock, *args, **kw)


def promtool_check(text):
    p = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, f"promtool check metrics:\n{p.stdout}\n{p.stderr}\n--- metrics ---\n{text[:4000]}"


def samples(text, name):
    """{labels text: value} of one metric family in Prometheus text."""
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            key, _, value = line.rpartition(" ")
            out[key[len(name):]] = float(value)
    return out


def raw_request(sock, data, timeout=LONG_WAIT):
    """Send data as it is; the whole reply until the daemon closes."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(sock)
    try:
        if data:
            s.sendall(data)
        chunks = []
        while True:
            b = s.recv(65536)
            if not b:
                return b"".join(chunks)
            chunks.append(b)
    finally:
        s.close()


def test_status_explain_and_metrics(daemon, tmp_path, sockdir):
    """status lists every database with its figures and what comes next;
    explain says in words why a due VACUUM waits (the window); metrics pass
    promtool and carry each database's figures."""
    waits = tmp_path / "waits.db"
    calm = tmp_path / "calm.db"
    helpers.make_fragmented_db(waits, delete_fraction=0.25)  # past 20%, under 30%: waits for its window
    helpers.make_db(calm, 0)
    sock = os.path.join(sockdir, "ctl.sock")
    d = daemon.start(conf_with_socket(tmp_path, sock, [waits, calm]))
    d.wait_for_polls([str(waits), str(calm)], 1)

    st = ctl(sock, "status")
    assert st.rc == 0, st.describe()
    assert "2 databases watched" in st.out and str(waits) in st.out and str(calm) in st.out, st.describe()
    assert "outside-window" in st.out, st.describe()

    one = ctl(sock, "status", "--json", waits)
    assert one.rc == 0, one.describe()
    o = one.one()
    assert o["ok"] is True and o["daemon"]["databases_watched"] == 2, o
    (db,) = o["databases"]
    assert db["db"] == str(waits) and db["state"] == "idle" and db["decision"] == "outside-window", db
    assert db["freelist_count"] == helpers.freelist_count(waits), db
    assert db["file_size_bytes"] == os.path.getsize(waits), db

    ex = ctl(sock, "explain", waits)
    assert ex.rc == 0, ex.describe()
    assert "waits for the window to open" in ex.out and "closed now" in ex.out, ex.describe()
    assert f"{db['fragmentation_percent']:.2f}%" in ex.out, ex.describe()
    ex2 = ctl(sock, "explain", calm)
    assert "below its threshold" in ex2.out, ex2.describe()

    # by another spelling of the same file
    rel = ctl(sock, "status", "--json", os.path.relpath(waits), cwd=os.getcwd())
    assert rel.rc == 0 and rel.one()["databases"][0]["db"] == str(waits), rel.describe()
    # a database the daemon does not watch
    other = ctl(sock, "explain", tmp_path / "nope.db")
    assert other.rc == 1 and "not a database the daemon watches" in other.err, other.describe()

    m = ctl(sock, "metrics")
    assert m.rc == 0, m.describe()
    promtool_check(m.out)
    ratio = samples(m.out, "sqlite_maintd_database_freelist_ratio")
    assert set(ratio) == {f'{{db="{waits}"}}', f'{{db="{calm}"}}'}, ratio
    got = ratio[f'{{db="{waits}"}}']
    assert abs(got - db["freelist_count"] / db["page_count"]) < 1e-6, (got, db)
    assert samples(m.out, "sqlite_maintd_databases_watched") == {"": 2.0}
    assert samples(m.out, "sqlite_maintd_database_urgent_threshold_ratio")[f'{{db="{waits}"}}'] == 0.3
    assert d.alive(), d.describe()


def test_run_vacuum_wait_and_metrics_file(daemon, tmp_path, sockdir):
    """run vacuum --wait queues a VACUUM outside the window now, waits for
    it and exits like sqlite-maintctl vacuum; the journal names the
    request; the metrics file (written whole, renamed into place) counts
    the job and the bytes given back."""
    db = tmp_path / "frag.db"
    helpers.make_fragmented_db(db, delete_fraction=0.25)
    before = helpers.freelist_count(db)
    assert before > 0
    sock = os.path.join(sockdir, "ctl.sock")
    prom = tmp_path / "prom" / "sqlite-maintd.prom"
    prom.parent.mkdir()
    d = daemon.start(conf_with_socket(tmp_path, sock, [db], extra=f"metrics_file: {prom}\n"))
    d.wait_for_polls([str(db)], 1)

    r = ctl(sock, "run", "vacuum", db, "--wait", timeout=LONG_WAIT)
    assert r.rc == 0, r.describe()
    assert f"{db}: vacuum: ok" in r.out, r.describe()
    assert helpers.freelist_count(db) == 0
    helpers.open_and_verify(db)
    req = d.wait_for_entry(M("SCHEDULED", message="requested through the control socket"))
    assert req["DB_PATH"] == str(db) and req["REASON"] == "requested", req
    d.wait_for_entry(M("VACUUM_DONE"))

    # the job queued without waiting: told at once
    q = ctl(sock, "run", "--json", "check", db)
    assert q.rc == 0 and q.one()["message"] in ("queued", "already queued", "already running"), q.describe()

    deadline = time.monotonic() + LONG_WAIT
    text = ""
    while time.monotonic() < deadline:
        if prom.exists():
            text = prom.read_text()
            if samples(text, "sqlite_maintd_jobs_total").get('{operation="vacuum",result="ok"}') == 1.0:
                break
        time.sleep(0.2)
    assert samples(text, "sqlite_maintd_jobs_total").get('{operation="vacuum",result="ok"}') == 1.0, text[:3000]
    promtool_check(text)
    assert samples(text, "sqlite_maintd_reclaimed_bytes_total")['{operation="vacuum"}'] > 0
    assert samples(text, "sqlite_maintd_database_last_vacuum_timestamp_seconds")[f'{{db="{db}"}}'] > 0
    assert oct(prom.stat().st_mode & 0o777) == "0o644"
    assert sorted(os.listdir(prom.parent)) == ["sqlite-maintd.prom"], os.listdir(prom.parent)


def test_run_check_on_a_corrupt_database_exits_3(daemon, tmp_path, sockdir):
    """Every safety check still applies: a corrupt database's check fails
    with the one-shot command's exit status 3, and status shows it held."""
    db = tmp_path / "bad.db"
    helpers.make_corrupt_db(db)
    sock = os.path.join(sockdir, "ctl.sock")
    d = daemon.start(conf_with_socket(tmp_path, sock, [db], vacuum={"threshold": "90%", "urgent_threshold": "95%"}))
    d.wait_for_polls([str(db)], 1)
    r = ctl(sock, "run", "check", db, "--wait", timeout=LONG_WAIT)
    assert r.rc == 3, r.describe()
    assert "corrupt" in r.out, r.describe()
    o = ctl(sock, "status", "--json", db).one()["databases"][0]
    assert o["state"] == "held" and o["hold"]["reason"] == "corrupt" and o["job_failures"] == 1, o
    m = ctl(sock, "metrics").out
    assert samples(m, "sqlite_maintd_database_corrupt")[f'{{db="{db}"}}'] == 1.0
    ex = ctl(sock, "explain", db)
    assert "corrupt" in ex.out and "never vacuumed" in ex.out, ex.describe()


def test_without_a_daemon(tmp_path, sockdir):
    """No daemon: a clear message and the documented exit status 7, for
    every daemon command; a socket file nobody listens on is the same."""
    sock = os.path.join(sockdir, "ctl.sock")
    for args in (["status"], ["explain", tmp_path / "x.db"], ["run", "vacuum", tmp_path / "x.db"], ["metrics"]):
        r = ctl(sock, *args)
        assert r.rc == NO_DAEMON and "no sqlite-maintd listens on" in r.err, r.describe()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(sock)
    s.close()  # bound, never listening: connect() is refused
    r = ctl(sock, "status")
    assert r.rc == NO_DAEMON, r.describe()
    u = helpers.run_ctl("status", "--wait")
    assert u.rc == 2 and "--wait goes with run" in u.err, u.describe()


def test_peer_credentials_are_checked(daemon, tmp_path, sockdir):
    """Only root and the control_group: nobody is refused by the socket's
    mode, and, with the mode opened, by the daemon's check of its
    credentials; with control_group nogroup (nobody's group) it is let in
    and the socket's group is that group."""
    db = tmp_path / "a.db"
    helpers.make_db(db, 0)
    sock = os.path.join(sockdir, "ctl.sock")
    d = daemon.start(conf_with_socket(tmp_path, sock, [db]))
    st = os.stat(sock)
    assert oct(st.st_mode & 0o777) == "0o660" and st.st_uid == 0 and st.st_gid == 0, st
    r = ctl(sock, "status", user="nobody")
    assert r.rc == NO_DAEMON and "permission denied" in r.err, r.describe()
    os.chmod(sock, 0o666)  # the file's mode is not what keeps nobody out
    r = ctl(sock, "status", user="nobody")
    assert r.rc == NO_DAEMON and "permission denied: root or the control_group only" in r.err, r.describe()
    d.wait_for_entry(message="control socket: a client (uid 65534) is neither root")
    assert d.stop() == 0, d.describe()

    sock2 = os.path.join(sockdir, "ctl2.sock")
    d2 = daemon.start(conf_with_socket(tmp_path, sock2, [db], extra="control_group: nogroup\n"))
    assert os.stat(sock2).st_gid == 65534
    r = ctl(sock2, "status", "--json", user="nobody")
    assert r.rc == 0 and r.one()["daemon"]["databases_watched"] == 1, r.describe()
    assert d2.alive()


def test_malformed_oversized_slow_and_many_clients(daemon, tmp_path, sockdir):
    """Bad requests get an error reply and change nothing; a request past
    4096 bytes is refused; a client that sends nothing is closed at the
    read timeout; 16 silent clients at once leave the 17th told "too many
    connections"; afterwards the daemon answers as before."""
    db = tmp_path / "a.db"
    helpers.make_db(db, 0)
    sock = os.path.join(sockdir, "ctl.sock")
    d = daemon.start(conf_with_socket(tmp_path, sock, [db]))

    for data, why in ((b"hello\n", "not a JSON object"), (b"[1, 2]\n", "not a JSON object"),
                      (b'{"command": 5}\n', "command"), (b'{"command": "status", "db": 7}\n', "db"),
                      (b'{"command": "run", "db": "/x", "wait": "yes"}\n', "wait"),
                      (b'{"command": "drop tables"}\n', "unknown command"),
                      (b'{"command": "status"\x00}\n', "NUL"),
                      (b'{"command": "run", "operation": "vacuum"}\n', "needs"),
                      (b'{"command": "run", "operation": "shred", "db": "' + str(db).encode() + b'"}\n',
                       "unknown operation")):
        reply = raw_request(sock, data)
        o = json.loads(reply)
        assert o["ok"] is False and why in o["error"], (data, o)

    reply = raw_request(sock, b"{" + b" " * 5000)
    assert json.loads(reply) == {"ok": False, "error": "the request is longer than 4096 bytes"}

    # silent clients: the 17th is told; each silent one is closed by the daemon
    silent = []
    for _ in range(16):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(LONG_WAIT)
        s.connect(sock)
        silent.append(s)
    # the daemon accepts them in its own time: the 17th is told once all 16 are in
    deadline = time.monotonic() + LONG_WAIT
    told = None
    while time.monotonic() < deadline:
        o = json.loads(raw_request(sock, b'{"command": "status"}\n'))
        if not o["ok"]:
            told = o
            break
        time.sleep(0.1)
    assert told and told["error"] == "too many connections: try again", told
    for s in silent:
        assert s.recv(1) == b"", "a silent client was not closed"  # closed at the read timeout
        s.close()
    r = ctl(sock, "status", "--json")
    assert r.rc == 0 and r.one()["ok"] is True, r.describe()
    assert d.alive(), d.describe()


def test_history_from_the_state_file(daemon, tmp_path, sockdir):
    """history lists past jobs from the state file, the database's and
    every one's, newest last, with --since; they outlive a restart."""
    a = tmp_path / "a.db"
    b = tmp_path / "b.db"
    helpers.make_fragmented_db(a, delete_fraction=0.25)
    helpers.make_fragmented_db(b, delete_fraction=0.25)
    sock = os.path.join(sockdir, "ctl.sock")
    conf = conf_with_socket(tmp_path, sock, [a, b])
    d = daemon.start(conf)
    assert ctl(sock, "run", "vacuum", a, "--wait", timeout=LONG_WAIT).rc == 0
    assert ctl(sock, "run", "check", b, "--wait", timeout=LONG_WAIT).rc == 0
    sb = ctl(sock, "status", "--json", b).one()["databases"][0]
    # a check is not a VACUUM: it sets no VACUUM time (min_interval would hold the next one back)
    assert sb["last_vacuum_ms"] is None and sb["last"]["check"]["result"] == "ok" and sb["last_check_ms"], sb
    assert "vacuum" not in sb["last"], sb
    assert d.stop() == 0, d.describe()

    d = daemon.start(conf)  # from the state file, not the daemon's memory
    h = ctl(sock, "history", "--json")
    assert h.rc == 0, h.describe()
    jobs = h.one()["jobs"]
    assert [(j["db"], j["operation"], j["result"]) for j in jobs] == [(str(a), "vacuum", "ok"), (str(b), "check", "ok")], jobs
    assert jobs[0]["bytes_given_back"] > 0 and jobs[0]["finished_ms"] <= jobs[1]["finished_ms"], jobs
    only_b = ctl(sock, "history", "--json", b).one()["jobs"]
    assert [j["db"] for j in only_b] == [str(b)], only_b
    assert ctl(sock, "history", "--json", "--since", "1h").one()["jobs"] == jobs
    assert ctl(sock, "history", "--json", "--since", "2999-01-01").one()["jobs"] == []
    human = ctl(sock, "history")
    assert human.rc == 0 and str(a) in human.out and "vacuum" in human.out, human.describe()
    bad = ctl(sock, "history", "--since", "yesterday-ish")
    assert bad.rc == 2 and "--since takes" in bad.err, bad.describe()
    assert d.alive(), d.describe()


def test_window_fit(daemon, tmp_path, sockdir):
    """A VACUUM due in the window starts only if this host's past VACUUMs
    say it ends before the window does: else it waits, said once in the
    journal and by explain; with the window long enough it runs."""
    import datetime
    import signal
    import sqlite3

    from daemon_fixtures import hhmm

    db = tmp_path / "big.db"
    helpers.make_fragmented_db(db, delete_fraction=0.25)  # past 20%, under 30%
    size = os.path.getsize(db)
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    con = sqlite3.connect(state / "state.db")
    # this host's past: one VACUUM job went through 10x this file in an hour
    con.execute("CREATE TABLE vacuum_rates(bytes INTEGER NOT NULL, duration_ms INTEGER NOT NULL)")
    con.execute("INSERT INTO vacuum_rates VALUES(?, 3600000)", (10 * size,))
    con.commit()
    con.close()
    now = datetime.datetime.now()
    # ends in 2-3 minutes: less than the 6 minutes the estimate says
    short = f"{hhmm(now - datetime.timedelta(hours=1))}-{hhmm(now + datetime.timedelta(minutes=3))}"
    sock = os.path.join(sockdir, "ctl.sock")
    cfg = tmp_path / "fit.yaml"
    cfg.write_text(config_text(state, [db], vacuum={"window": short}) + f"control_socket: {sock}\n")
    d = daemon.start(str(cfg))
    e = d.wait_for_entry(M("SCHEDULED", REASON="window-too-short", DB_PATH=db))
    assert "waits for the next window: it should take about 6 min" in e["MESSAGE"], e
    ex = ctl(sock, "explain", db)
    assert "should take about 6 min on this host" in ex.out and "waits for the next window" in ex.out, ex.describe()
    o = ctl(sock, "status", "--json", db).one()["databases"][0]
    assert o["decision"] == "window-too-short" and o["state"] == "idle", o
    assert helpers.freelist_count(db) > 0

    long_enough = f"{hhmm(now - datetime.timedelta(hours=1))}-{hhmm(now + datetime.timedelta(hours=3))}"
    cfg.write_text(config_text(state, [db], vacuum={"window": long_enough}) + f"control_socket: {sock}\n")
    d.signal(signal.SIGHUP)
    d.wait_for_entry(M("VACUUM_DONE", DB_PATH=db), timeout=LONG_WAIT)
    assert helpers.freelist_count(db) == 0


def test_a_name_that_is_not_utf8(daemon, tmp_path, sockdir):
    """A database whose name is not UTF-8 (a JSON string cannot carry it):
    sqlite-maintctl sends its bytes as db_hex, and every command reaches it;
    the metrics leave it out and say so."""
    name = os.path.join(os.fsencode(str(tmp_path)), b"bad\xff\xfe.db")
    helpers.make_fragmented_db(os.fsdecode(name), delete_fraction=0.25)
    sock = os.path.join(sockdir, "ctl.sock")
    d = daemon.start(conf_with_socket(tmp_path, sock, [os.path.join(str(tmp_path), "*.db")]))
    d.wait_for_entry(M("SCHEDULED"))  # looked at: past 20%, waiting for its window
    path = os.fsdecode(name)
    for args in (["status", "--json", path], ["explain", path], ["history", path]):
        r = ctl(sock, *args)
        assert r.rc == 0, r.describe()
    r = ctl(sock, "run", "check", path, "--wait", timeout=LONG_WAIT)
    assert r.rc == 0 and "check: ok" in r.out, r.describe()
    m = ctl(sock, "metrics")
    promtool_check(m.out)
    assert samples(m.out, "sqlite_maintd_databases_not_exported") == {"": 1.0}
    bad = json.loads(raw_request(sock, b'{"command": "status", "db_hex": "zz"}\n'))
    assert bad["ok"] is False and "db_hex" in bad["error"], bad
    empty = json.loads(raw_request(sock, b'{"command": "explain", "db": ""}\n'))
    assert empty["ok"] is False and "is empty" in empty["error"], empty
