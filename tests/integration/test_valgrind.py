# SPDX-License-Identifier: MIT
"""sqlite-maintd and sqlite-maintctl under valgrind's memcheck: a daemon's
whole life (start, polls, a VACUUM, an ANALYZE, a SIGHUP reload, SIGTERM)
and a few sqlite-maintctl runs, each of which must end with its documented
exit status (not valgrind's 99), "ERROR SUMMARY: 0 errors" and no block
definitely lost. Skipped when valgrind is not installed or when the binary
is an AddressSanitizer build (ASan and valgrind do not mix).

Valgrind makes everything 20-50 times slower: small databases, a 200 ms
poll interval, generous waits."""

import json
import os
import re
import signal
import subprocess

import pytest

import helpers
from daemon_fixtures import (  # noqa: F401  (fixtures are used by name)
    config_text, Daemon, journald, notify_socket)
from helpers import MAINTCTL_BIN, MAINTD_BIN, db_stats, fragmentation, make_db

VALGRIND = "/usr/bin/valgrind"
VG_ERROR_EXIT = 99
VG_ARGS = ["--error-exitcode=%d" % VG_ERROR_EXIT, "--leak-check=full",
           "--errors-for-leak-kinds=definite", "--show-leak-kinds=definite",
           "--track-fds=no", "--trace-children=no", "--num-callers=30"]

# Waits under valgrind: a poll, a VACUUM of a 1 MB file, journald's delay.
VG_WAIT = 40


def _require_valgrind(binary):
    if not os.access(VALGRIND, os.X_OK):
        pytest.skip(f"{VALGRIND} is not installed")
    if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        pytest.fail(f"not built: {binary}", pytrace=False)
    # `ldd BIN | grep -q asan`: gcc's -fsanitize=address links libasan.so
    p = subprocess.run(["ldd", binary], capture_output=True, text=True, timeout=30)
    if "asan" in p.stdout:
        pytest.skip(f"{binary} is an AddressSanitizer build; valgrind cannot run it")


def _valgrind_argv(log, binary, *args):
    return [VALGRIND, *VG_ARGS, f"--log-file={log}", binary, *map(str, args)]


def valgrind_findings(log):
    """What memcheck found, from its log: a list of problems (empty when
    clean) and the log text."""
    with open(log, errors="replace") as f:
        text = f.read()
    problems = []
    m = re.findall(r"ERROR SUMMARY: ([\d,]+) errors", text)
    if not m:
        problems.append("no ERROR SUMMARY line (did valgrind finish?)")
    elif m[-1] != "0":
        problems.append(f"ERROR SUMMARY: {m[-1]} errors")
    for n in re.findall(r"definitely lost: ([\d,]+) bytes", text):
        if n != "0":
            problems.append(f"definitely lost: {n} bytes")
    if re.search(r"are definitely lost in loss record", text):
        problems.append("a loss record of definitely lost blocks")
    return problems, text


def _excerpt(text, limit=12000):
    """The interesting end of a valgrind log: its error and leak reports."""
    return text if len(text) <= limit else "...\n" + text[-limit:]


# --------------------------------------------------------------------------
# The daemon

class ValgrindDaemons:
    """Starts sqlite-maintd under valgrind as DaemonFactory.start() starts
    it (--log-target=journal, the notify_socket listener, a clean
    environment), which has no way to put valgrind in front. valgrind runs
    the program in its own process, so the pid the journal and the notify
    socket see is the Popen's, and the Daemon helpers work unchanged.
    Killed at teardown whatever happens."""

    def __init__(self, journal, notify, tmp_path):
        self.journal = journal
        self.notify = notify
        self.tmp_path = tmp_path
        self.daemons = []

    def start(self, config_path, log_level="debug"):
        self.journal.ensure_running()
        n = len(self.daemons) + 1
        env = dict(os.environ)
        for k in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM",
                  "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "SQLITE_TMPDIR"):
            env.pop(k, None)
        env["NOTIFY_SOCKET"] = self.notify.path
        vglog = str(self.tmp_path / f"valgrind-maintd-{n}.log")
        argv = _valgrind_argv(vglog, MAINTD_BIN, "-c", config_path, "--log-target=journal",
                              f"--log-level={log_level}")
        d = Daemon(self.journal, argv, env, self.notify, str(config_path),
                   str(self.tmp_path / f"vg-maintd-{n}.out"), str(self.tmp_path / f"vg-maintd-{n}.err"),
                   False)
        d.valgrind_log = vglog
        self.daemons.append(d)
        return d

    def close(self):
        for d in self.daemons:
            d.close()


@pytest.fixture
def vg_daemon(journald, notify_socket, tmp_path):
    _require_valgrind(MAINTD_BIN)
    f = ValgrindDaemons(journald, notify_socket, tmp_path)
    try:
        yield f
    finally:
        f.close()


def test_daemon_cycle_under_valgrind(tmp_path, vg_daemon):
    dbs, state = tmp_path / "dbs", tmp_path / "state"
    dbs.mkdir()
    hot, stats, late = dbs / "hot.db", dbs / "stats.db", dbs / "late.db"
    make_db(hot, 35, rows=300)                      # urgent: vacuumed at once
    make_db(stats, 5, rows=60, index=True)          # below the threshold: only analyzed
    make_db(late, 35, rows=300)                     # only in the config after the reload
    late_before = db_stats(late)
    entries = [hot, {"path": stats, "analyze": {"interval": "1h"}}]
    cfg = tmp_path / "maintd.yaml"
    cfg.write_text(config_text(state, entries, poll_interval="200ms"))

    d = vg_daemon.start(cfg)
    d.wait_notify("READY=1", timeout=VG_WAIT)
    d.wait_for_entry(msgid="VACUUM_DONE", DB_PATH=hot, timeout=VG_WAIT)
    assert fragmentation(hot) == 0.0
    d.wait_for_entry(msgid="ANALYZE_DONE", DB_PATH=stats, timeout=VG_WAIT)
    assert db_stats(late) == late_before, "late.db is not configured yet"

    # a changed configuration: one more database
    cfg.write_text(config_text(state, entries + [late], poll_interval="200ms"))
    mark = len(d.notify.snapshot())
    d.signal(signal.SIGHUP)
    i, _ = d.wait_notify("RELOADING=1", timeout=VG_WAIT, after=mark)
    d.wait_notify("READY=1", timeout=VG_WAIT, after=i + 1)
    d.wait_for_entry(msgid="RELOADED", timeout=VG_WAIT)
    d.wait_for_entry(msgid="VACUUM_DONE", DB_PATH=late, timeout=VG_WAIT)
    assert fragmentation(late) == 0.0
    assert not d.entries(msgid="RELOAD_FAILED"), d.describe()
    assert not d.entries(msgid="JOB_FAILED"), d.describe()

    rc = d.stop(timeout=VG_WAIT)
    problems, text = valgrind_findings(d.valgrind_log)
    assert rc != VG_ERROR_EXIT and not problems, \
        f"valgrind: {problems}\n{_excerpt(text)}\n{d.describe()}"
    assert rc == 0, d.describe()


# --------------------------------------------------------------------------
# sqlite-maintctl

@pytest.fixture(scope="module")
def ctl_dbs(tmp_path_factory):
    """A fragmented database and a corrupt one, made once: the runs below
    read them, and vacuum --force of the good one leaves it a good one."""
    _require_valgrind(MAINTCTL_BIN)
    d = tmp_path_factory.mktemp("vg-ctl")
    frag, corrupt = d / "frag.db", d / "corrupt.db"
    helpers.make_fragmented_db(frag, rows=300, delete_fraction=0.4)
    helpers.make_corrupt_db(corrupt)
    return {"frag": frag, "corrupt": corrupt}


# (arguments, databases, exit status as documented in sqlite-maintctl(1))
CTL_RUNS = [
    (["stats"], ["frag"], 0),
    (["--json", "check", "--full"], ["frag"], 0),
    (["--json", "vacuum", "--force"], ["frag"], 0),
    (["check"], ["corrupt"], 3),
    (["--json", "vacuum", "--force"], ["corrupt", "frag"], 3),
]


@pytest.mark.parametrize("args,which,want", CTL_RUNS,
                         ids=[" ".join(a + w) for a, w, _ in CTL_RUNS])
def test_maintctl_under_valgrind(tmp_path, ctl_dbs, args, which, want):
    log = str(tmp_path / "valgrind-maintctl.log")
    env = dict(os.environ)
    env.pop("SQLITE_TMPDIR", None)
    argv = _valgrind_argv(log, MAINTCTL_BIN, *args, *[ctl_dbs[w] for w in which])
    p = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=120)
    problems, text = valgrind_findings(log)
    what = (f"command: {' '.join(argv)}\nexit status: {p.returncode}\n"
            f"--- stdout ---\n{p.stdout}--- stderr ---\n{p.stderr}")
    assert p.returncode != VG_ERROR_EXIT and not problems, \
        f"valgrind: {problems}\n{_excerpt(text)}\n{what}"
    assert p.returncode == want, what
    if "--json" in args:
        status = {os.path.basename(o["path"]): o["status"]
                  for o in map(json.loads, filter(str.strip, p.stdout.splitlines()))}
        for w in which:
            assert status[f"{w}.db"] == ("corrupt" if w == "corrupt" else "ok"), what
