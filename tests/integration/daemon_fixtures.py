# SPDX-License-Identifier: MIT
"""Fixtures for the sqlite-maintd integration tests: a real journald
(started here if none is listening), a real NOTIFY_SOCKET listener, the
daemon itself as a subprocess and its configuration, and an application in
another process (helpers.App). Databases and files: helpers.py.

Import the fixtures into a test module with
    from daemon_fixtures import journald, notify_socket, daemon  # noqa: F401
"""

import array
import contextlib
import dataclasses
import datetime
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import pytest

import helpers


JOURNALD_BIN = "/lib/systemd/systemd-journald"
JOURNAL_DIR = "/run/systemd/journal"
JOURNAL_SOCKET = JOURNAL_DIR + "/socket"

# Every wait in these tests is bounded; this is the default bound.
WAIT = 20


# --------------------------------------------------------------------------
# MESSAGE_IDs, read from the source so the tests never hold a stale copy

def load_msgids(root=helpers.SOURCE_ROOT):
    """{"VACUUM_DONE": "ebba...", ...} parsed from src/msgid.h."""
    path = os.path.join(root, "src", "msgid.h")
    with open(path) as f:
        text = f.read()
    ids = dict(re.findall(r'#define\s+MSGID_(\w+)\s+"([0-9a-f]{32})"', text))
    assert ids, f"no MSGID_ definitions found in {path}"
    return ids


MSGID = load_msgids()


# --------------------------------------------------------------------------
# journald

def _journal_accepts():
    """True when a journald answers on the native socket. The probe is a
    debug-level entry of our own, harmless if it lands."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        s.sendto(b"SYSLOG_IDENTIFIER=sqlite-maintd-tests\nPRIORITY=7\nMESSAGE=probe\n",
                 JOURNAL_SOCKET)
        return True
    except (ConnectionRefusedError, FileNotFoundError):
        return False
    finally:
        s.close()


def _field(v):
    """A journal JSON value as text (binary values come as byte arrays,
    repeated fields as lists)."""
    if isinstance(v, list):
        if v and all(isinstance(x, int) for x in v):
            return bytes(v).decode("utf-8", "replace")
        return [_field(x) for x in v]
    return v


class Journal:
    """Reads the journal back with journalctl, as an admin would."""

    def __init__(self, keeper=None):
        self._sync_works = None
        self._keeper = keeper
        self.last_error = ""

    def ensure_running(self):
        """Start a journald again if the one we used went away."""
        if self._keeper is not None:
            self._keeper.ensure()

    def sync(self):
        """journalctl --sync when it works; otherwise the callers poll."""
        if self._sync_works is False:
            return
        try:
            p = subprocess.run(["journalctl", "--sync"], capture_output=True, timeout=10)
            self._sync_works = p.returncode == 0
        except subprocess.TimeoutExpired:
            self._sync_works = False

    def entries(self, pid, since_us=0, sync=True):
        """Every entry of process pid (written at or after since_us, a
        CLOCK_REALTIME microsecond stamp: pids are reused across runs),
        oldest first, as dicts of text."""
        if sync:
            self.sync()
        cmd = ["journalctl", "-o", "json", "--no-pager", f"_PID={pid}"]
        if since_us:
            cmd.insert(1, f"--since=@{since_us // 1000000 - 1}")
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        # "-- No entries --" is fine when nothing matched yet; anything on
        # stderr is kept for the message of a wait that times out.
        self.last_error = p.stderr.strip()
        out = []
        # one entry a line, split on \n only: str.splitlines() would also
        # split on U+2028/U+2029, which JSON strings may hold raw
        for line in p.stdout.split("\n"):
            line = line.strip()
            if not line.startswith("{"):
                continue
            e = {k: _field(v) for k, v in json.loads(line).items()}
            if since_us and int(e.get("__REALTIME_TIMESTAMP", "0")) < since_us:
                continue
            out.append(e)
        return out

    def wait_for_entry(self, pid, predicate, timeout=WAIT, since_us=0, alive=None, what=None):
        """The first entry of pid that matches predicate, polling until
        timeout. alive() -> False ends the wait early (the process died)."""
        return self.wait_for_entries(pid, predicate, 1, timeout, since_us, alive, what)[0]

    def wait_for_entries(self, pid, predicate, count, timeout=WAIT, since_us=0, alive=None, what=None):
        deadline = time.monotonic() + timeout
        while True:
            got = [e for e in self.entries(pid, since_us) if predicate(e)]
            if len(got) >= count:
                return got
            if time.monotonic() > deadline:
                break
            if alive is not None and not alive():
                # one last look: the entries may have been written just before exit
                got = [e for e in self.entries(pid, since_us) if predicate(e)]
                if len(got) >= count:
                    return got
                break
            time.sleep(0.2)
        all_entries = self.entries(pid, since_us)
        raise AssertionError(
            f"no {count} journal entr{'y' if count == 1 else 'ies'} of pid {pid} matching "
            f"{what or predicate} within {timeout}s (found {len(got)})"
            + (f"; journalctl said: {self.last_error}" if self.last_error else "")
            + "; the process's entries:\n" + format_entries(all_entries))


def format_entries(entries, limit=80):
    """Entries as an admin would skim them: priority, MESSAGE_ID name, fields, message."""
    names = {v: k for k, v in MSGID.items()}
    lines = []
    for e in entries[-limit:]:
        extra = {k: e[k] for k in ("DB_PATH", "OPERATION", "REASON", "ATTEMPT", "BACKOFF_MS",
                                   "FRAGMENTATION_BEFORE", "FRAGMENTATION_AFTER") if k in e}
        lines.append(f"  [{e.get('PRIORITY')}] {names.get(e.get('MESSAGE_ID'), '-')} "
                     f"{extra} {e.get('MESSAGE')}")
    return "\n".join(lines) if lines else "  (none)"


def entry_matches(e, msgid=None, message=None, **fields):
    """msgid is a name from msgid.h ("VACUUM_DONE"); message a substring of
    MESSAGE; fields exact values (DB_PATH=str(path))."""
    if msgid is not None and e.get("MESSAGE_ID") != MSGID[msgid]:
        return False
    if message is not None and message not in str(e.get("MESSAGE", "")):
        return False
    return all(e.get(k) == str(v) for k, v in fields.items())


def M(msgid=None, message=None, **fields):
    """A predicate for wait_for_entry: M("VACUUM_DONE", DB_PATH=p)."""
    def pred(e):
        return entry_matches(e, msgid, message, **fields)
    pred.__name__ = f"M({msgid!r}, message={message!r}, {fields!r})"
    pred.__qualname__ = pred.__name__
    return pred


def polled(path):
    """A predicate: the entry one poll of path leaves once it has looked at
    the file (src/manager.c, poll_target and decide): a VACUUM decision (a
    SCHEDULED entry with OPERATION vacuum or incremental_vacuum), or, when
    there is nothing to do or the decision did not change, the debug line
    "<path>: fragmentation X%, nothing to do (<reason>)"; for a database
    whose statistics are locked, the debug line "<path>: locked while
    reading statistics, next poll" or the GAVE_UP entry (OPERATION poll).
    A poll of a database held after a failure (corrupt, not a database)
    or missing leaves nothing: count poll rounds for those."""
    path = str(path)
    nothing, locked = f"{path}: fragmentation ", f"{path}: locked while reading statistics"

    def pred(e):
        if e.get("DB_PATH") == path:
            return (e.get("MESSAGE_ID") == MSGID["SCHEDULED"] and e.get("OPERATION") != "analyze"
                    or e.get("MESSAGE_ID") == MSGID["GAVE_UP"] and e.get("OPERATION") == "poll")
        if "DB_PATH" in e or e.get("PRIORITY") != "7":
            return False
        m = str(e.get("MESSAGE", ""))
        return m.startswith(nothing) and ", nothing to do (" in m or m.startswith(locked)
    pred.__name__ = f"polled({path!r})"
    pred.__qualname__ = pred.__name__
    return pred


def poll_round(e):
    """The debug line that starts each poll round: "poll: N databases, ..."."""
    return "DB_PATH" not in e and e.get("PRIORITY") == "7" and str(e.get("MESSAGE", "")).startswith("poll: ")


# Test sessions running at once (meson runs the files side by side) share
# one journald: each holds a shared lock on USERS_LOCK while it may use it;
# the one that starts a journald records its pid in PID_FILE (under
# START_LOCK, so two do not start two), and whoever leaves last stops that
# pid. A journald that was running before any session is never stopped.
TESTS_RUN_DIR = "/run/sqlite-maintd-tests"
USERS_LOCK = TESTS_RUN_DIR + "/journald.users"
START_LOCK = TESTS_RUN_DIR + "/journald.start"
PID_FILE = TESTS_RUN_DIR + "/journald.pid"
# journald's rate limit counts every test daemon as one source (none runs in
# a unit): off for the journald the tests start, through a runtime drop-in.
DROPIN_DIR = "/run/systemd/journald.conf.d"
DROPIN = DROPIN_DIR + "/sqlite-maintd-tests.conf"


def _read_pid():
    try:
        with open(PID_FILE) as f:
            return int(f.read().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None


def _is_journald(pid):
    try:
        return os.readlink(f"/proc/{pid}/exe").endswith("systemd-journald")
    except OSError:
        return False


class JournaldKeeper:
    """Makes sure a journald listens, starting one when none does, and
    stops (by pid) the one the tests started when the last session that
    may use it is done."""

    def __init__(self):
        os.makedirs(TESTS_RUN_DIR, mode=0o700, exist_ok=True)
        self._users = open(USERS_LOCK, "a+")
        fcntl.flock(self._users, fcntl.LOCK_SH)

    def ensure(self):
        if _journal_accepts():
            return
        if not os.access(JOURNALD_BIN, os.X_OK):
            pytest.skip(f"no journald listening and {JOURNALD_BIN} is not installed")
        with open(START_LOCK, "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if _journal_accepts():  # another session started it meanwhile
                return
            # A stale socket nobody listens on: journald wants a clean directory.
            if os.path.isdir(JOURNAL_DIR):
                shutil.rmtree(JOURNAL_DIR)
            os.makedirs(DROPIN_DIR, exist_ok=True)
            with open(DROPIN, "w") as f:
                f.write("# written by sqlite-maintd's tests, removed when they end\n"
                        "[Journal]\nRateLimitIntervalSec=0\n")
            fd, logname = tempfile.mkstemp(prefix="maintd-tests-journald-", suffix=".log")
            with os.fdopen(fd, "wb") as logf:
                proc = subprocess.Popen([JOURNALD_BIN], stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                        start_new_session=True)
            with open(PID_FILE, "w") as f:
                f.write(f"{proc.pid}\n")
            deadline = time.monotonic() + 15
            while not _journal_accepts():
                if proc.poll() is not None or time.monotonic() > deadline:
                    with open(logname) as f:
                        pytest.fail(f"systemd-journald did not come up (exit {proc.poll()}):\n{f.read()}",
                                    pytrace=False)
                time.sleep(0.05)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(logname)

    def stop(self):
        """Leave: if no other session holds USERS_LOCK, stop the journald
        the tests started (by the pid recorded), and tidy up."""
        fcntl.flock(self._users, fcntl.LOCK_UN)
        try:
            fcntl.flock(self._users, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._users.close()  # another session still uses it
            return
        try:
            pid = _read_pid()
            if pid and _is_journald(pid):
                os.kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + 15
                while _is_journald(pid) and time.monotonic() < deadline:
                    time.sleep(0.05)
                if _is_journald(pid):
                    os.kill(pid, signal.SIGKILL)
            for path in (PID_FILE, DROPIN):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
        finally:
            self._users.close()


@pytest.fixture(scope="session")
def journald():
    """A journald listening on /run/systemd/journal/socket: the running one,
    or one started here (and stopped, by its pid, at the end of the
    session). Yields a Journal to read entries back with journalctl."""
    if os.geteuid() != 0:
        pytest.skip(f"the daemon tests need root to use or start journald (uid {os.geteuid()})")
    if shutil.which("journalctl") is None:
        pytest.skip("journalctl is not installed")
    keeper = JournaldKeeper()
    try:
        keeper.ensure()
        yield Journal(keeper)
    finally:
        keeper.stop()


# --------------------------------------------------------------------------
# NOTIFY_SOCKET

@dataclasses.dataclass
class Notification:
    t: float   # time.monotonic() on arrival
    pid: int   # the sender, from SCM_CREDENTIALS
    text: str

    def assignments(self):
        return [line for line in self.text.split("\n") if line]

    def has(self, assignment):
        return assignment in self.assignments()

    def value(self, key):
        for line in self.assignments():
            k, _, v = line.partition("=")
            if k == key:
                return v
        return None


class NotifyListener:
    """A real AF_UNIX datagram socket, as systemd's, collecting every
    datagram (with the sender's pid) on a background thread."""

    # A datagram the listener sends itself to know the queue before it is
    # taken in; it is not kept among the messages.
    _MARK = "X_MAINTD_TESTS_MARK="

    def __init__(self, path):
        self.path = str(path)
        self.messages = []
        self._marks_sent = self._marks_seen = 0
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._stop = False
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(self.path)
        self.sock.settimeout(0.1)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        credsize = socket.CMSG_SPACE(array.array("i", [0, 0, 0]).itemsize * 3)
        while not self._stop:
            try:
                data, anc, _, _ = self.sock.recvmsg(65536, credsize)
            except socket.timeout:
                continue
            except OSError:
                break
            pid = -1
            for level, typ, cdata in anc:
                if level == socket.SOL_SOCKET and typ == socket.SCM_CREDENTIALS:
                    pid = array.array("i", cdata[:12])[0]
            text = data.decode("utf-8", "replace")
            with self._cond:
                if pid == os.getpid() and text.startswith(self._MARK):
                    self._marks_seen = int(text[len(self._MARK):])
                else:
                    self.messages.append(Notification(time.monotonic(), pid, text))
                self._cond.notify_all()

    def snapshot(self):
        with self._lock:
            return list(self.messages)

    def wait_for(self, predicate, timeout=WAIT, after=0, what=None, alive=None):
        """The first message at index >= after matching predicate; returns
        (index, message)."""
        deadline = time.monotonic() + timeout
        mark = None
        with self._cond:
            while True:
                for i in range(after, len(self.messages)):
                    if predicate(self.messages[i]):
                        return i, self.messages[i]
                if mark is not None and self._marks_seen >= mark:
                    break  # everything the sender sent has been looked at
                if mark is None and alive is not None and not alive():
                    # The sender is gone: what it sent is queued on the
                    # socket, before a datagram sent now (without waiting:
                    # the listener needs the lock we hold to make room).
                    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
                        s.setblocking(False)
                        with contextlib.suppress(BlockingIOError):
                            s.sendto(f"{self._MARK}{self._marks_sent + 1}".encode(), self.path)
                            self._marks_sent += 1
                            mark = self._marks_sent
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, 0.2))
            got = [m.text for m in self.messages]
        raise AssertionError(f"no notification matching {what or predicate} within {timeout}s "
                             f"(after index {after}); received: {got}")

    def close(self):
        self._stop = True
        self._thread.join(timeout=5)
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def _socket_dir(tmp_path):
    # sun_path holds 108 bytes; pytest's tmp_path can be longer than that.
    if len(str(tmp_path)) < 80:
        return str(tmp_path), None
    d = tempfile.mkdtemp(prefix="maintd-n-", dir="/tmp")
    return d, d


@pytest.fixture
def notify_socket(tmp_path):
    d, cleanup = _socket_dir(tmp_path)
    n = NotifyListener(os.path.join(d, "notify.sock"))
    yield n
    n.close()
    if cleanup:
        shutil.rmtree(cleanup, ignore_errors=True)


# --------------------------------------------------------------------------
# Config files

def _scalar(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    s = str(v)
    if re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.%]*", s):
        return s
    return json.dumps(s)  # a double-quoted YAML scalar


def _emit(obj, indent=0):
    pad = "  " * indent
    lines = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, (dict, list)):
                lines.append(f"{pad}{k}:")
                lines += _emit(v, indent + 1)
            else:
                lines.append(f"{pad}{k}: {_scalar(v)}")
    else:
        for item in obj:
            sub = _emit(item, indent + 1) if isinstance(item, (dict, list)) else [pad + "  " + _scalar(item)]
            sub[0] = pad + "- " + sub[0][len(pad) + 2:]
            lines += sub
    return lines


def hhmm(dt):
    return f"{dt.hour:02d}:{dt.minute:02d}"


def window_with_now(inside):
    """A maintenance window in local time that contains now (now-1h..now+1h)
    or does not (now+2h..now+3h); either may wrap midnight."""
    now = datetime.datetime.now()
    h = datetime.timedelta(hours=1)
    if inside:
        return f"{hhmm(now - h)}-{hhmm(now + h)}"
    return f"{hhmm(now + 2 * h)}-{hhmm(now + 3 * h)}"


def config_text(state_dir, databases, poll_interval="1s", max_concurrent_jobs=1,
                vacuum=None, analyze=None, retry=None, deep_scan=None):
    """A config: defaults fit for tests (window outside now, min_reclaim 0,
    no ANALYZE, no deep scan, quick retries), updated by
    vacuum/analyze/retry/deep_scan; databases is a list of paths or of
    dicts (path plus overrides)."""
    v = {"threshold": "20%", "urgent_threshold": "30%", "window": window_with_now(False),
         "min_interval": "6h", "min_reclaim": 0, "integrity": "quick"}
    v.update(vacuum or {})
    a = {"interval": "never"}
    a.update(analyze or {})
    r = {"busy_timeout": "50ms", "max_attempts": 8, "initial_backoff": "200ms", "max_backoff": "2s"}
    r.update(retry or {})
    ds = {"interval": "never"}
    ds.update(deep_scan or {})
    dbs = [d if isinstance(d, dict) else {"path": str(d)} for d in databases]
    dbs = [{**d, "path": str(d["path"])} for d in dbs]
    doc = {"poll_interval": poll_interval, "max_concurrent_jobs": max_concurrent_jobs,
           "state_dir": str(state_dir),
           "defaults": {"vacuum": v, "analyze": a, "retry": r, "deep_scan": ds},
           "databases": dbs}
    return "# written by tests/integration/daemon_fixtures.py\n" + "\n".join(_emit(doc)) + "\n"


# --------------------------------------------------------------------------
# The daemon

def _now_us():
    return time.time_ns() // 1000


class Daemon:
    """One sqlite-maintd process, its config, its notify listener and its
    journal entries."""

    def __init__(self, journal, argv, env, notify, config_path, out_path, err_path, owns_notify):
        self.journal = journal
        self.notify = notify
        self.config_path = config_path
        self.argv = argv
        self.out_path, self.err_path = out_path, err_path
        self._owns_notify = owns_notify
        self.since_us = _now_us()
        self.t0 = time.monotonic()
        self._out = open(out_path, "wb")
        self._err = open(err_path, "wb")
        self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                     stdout=self._out, stderr=self._err)
        self.pid = self.proc.pid

    # --- process ---
    def alive(self):
        return self.proc.poll() is None

    def signal(self, sig):
        if self.alive():
            self.proc.send_signal(sig)

    def wait(self, timeout=30):
        """Exit status; fails the test if the process is still running."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"sqlite-maintd (pid {self.pid}) still running {timeout}s later\n"
                                 + self.describe()) from None

    def stop(self, timeout=30):
        """SIGTERM and wait; returns the exit status."""
        self.signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill(self):
        if self.alive():
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=15)

    def close(self):
        self.kill()
        self._out.close()
        self._err.close()
        if self._owns_notify:
            self.notify.close()

    def output(self):
        parts = []
        for name, p in (("stdout", self.out_path), ("stderr", self.err_path)):
            with open(p, "rb") as f:
                parts.append(f"--- {name} ---\n" + f.read().decode("utf-8", "replace")[-8000:])
        return "\n".join(parts)

    def describe(self):
        rc = self.proc.poll()
        return (f"command: {' '.join(self.argv)}\nexit status: {rc if rc is not None else 'running'}\n"
                + self.output() + "\n--- journal ---\n" + format_entries(self.entries())
                + "\n--- notifications ---\n" + "\n".join(repr(m.text) for m in self.notify.snapshot()))

    # --- journal ---
    def entries(self, *preds, **match):
        """This process's journal entries, filtered by predicates or by
        entry_matches keywords (msgid=, message=, FIELD=)."""
        es = self.journal.entries(self.pid, self.since_us)
        if match:
            preds = preds + (M(**match),)
        return [e for e in es if all(p(e) for p in preds)]

    def wait_for_entry(self, pred=None, timeout=WAIT, **match):
        pred = pred or M(**match)
        return self.journal.wait_for_entry(self.pid, pred, timeout, self.since_us, self.alive,
                                           what=getattr(pred, "__name__", None))

    def wait_for_entries(self, count, pred=None, timeout=WAIT, **match):
        pred = pred or M(**match)
        return self.journal.wait_for_entries(self.pid, pred, count, timeout, self.since_us, self.alive,
                                             what=getattr(pred, "__name__", None))

    def wait_for_polls(self, paths, n, timeout=WAIT):
        """Wait until each of paths (one path or several) has been polled n
        more times from now (see polled()): the positive sign to wait for
        before asserting that something did not happen to a database."""
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        preds = [polled(p) for p in paths]
        es = self.entries()
        seen = [sum(1 for e in es if p(e)) for p in preds]
        for p, k in zip(preds, seen):
            self.wait_for_entries(k + n, p, timeout)

    def wait_for_poll_rounds(self, n, timeout=WAIT):
        """Wait until n more poll rounds have run from now: n + 1 more round
        starts. A round's header reads are spread over 80% of the interval,
        before the next round starts; with one database its read is the
        first thing in the round (with more, a round the loop falls far
        behind on may be cut short). For databases whose polls leave no
        entry (see polled())."""
        seen = len(self.entries(poll_round))
        self.wait_for_entries(seen + n + 1, poll_round, timeout)

    # --- sd_notify ---
    def wait_notify(self, assignment, timeout=WAIT, after=0):
        """(index, message) of the first datagram from this process carrying
        assignment (e.g. "READY=1")."""
        return self.notify.wait_for(lambda m: m.pid == self.pid and m.has(assignment), timeout, after,
                                    what=f"{assignment} from pid {self.pid}", alive=self.alive)

    def notifications(self):
        return [m for m in self.notify.snapshot() if m.pid == self.pid]

    def wait_ready(self, timeout=WAIT):
        try:
            return self.wait_notify("READY=1", timeout)
        except AssertionError as e:
            raise AssertionError(f"{e}\n{self.describe()}") from None


class DaemonFactory:
    def __init__(self, journal, tmp_path):
        self.journal = journal
        self.tmp_path = tmp_path
        self.daemons = []
        self._sockdirs = []
        self._n = 0

    def config(self, text, name=None):
        """Write a config file; returns its path."""
        self._n += 1
        p = self.tmp_path / (name or f"maintd-{self._n}.yaml")
        p.write_text(text)
        return str(p)

    def start(self, config, *args, notify=None, env=None, log_level="debug", wait_ready=True):
        """Start sqlite-maintd -c config (a path or the text of one) with
        --log-target=journal. env: extra variables (None removes one).
        Returns a Daemon, killed at teardown whatever happens."""
        if "\n" in str(config):
            config = self.config(config)
        self.journal.ensure_running()
        self._n += 1
        owns = notify is None
        if owns:
            d, cleanup = _socket_dir(self.tmp_path)
            if cleanup:
                self._sockdirs.append(cleanup)
            notify = NotifyListener(os.path.join(d, f"notify-{self._n}.sock"))
        e = dict(os.environ)
        for k in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM",
                  "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "SQLITE_TMPDIR"):
            e.pop(k, None)
        e["NOTIFY_SOCKET"] = notify.path
        for k, v in (env or {}).items():
            if v is None:
                e.pop(k, None)
            else:
                e[k] = str(v)
        argv = [helpers.MAINTD_BIN, "-c", str(config), "--log-target=journal"]
        if log_level:
            argv.append(f"--log-level={log_level}")
        argv += [str(a) for a in args]
        d = Daemon(self.journal, argv, e, notify, str(config),
                   str(self.tmp_path / f"maintd-{self._n}.out"),
                   str(self.tmp_path / f"maintd-{self._n}.err"), owns)
        self.daemons.append(d)
        if wait_ready:
            d.wait_ready()
        return d

    def run_once(self, config, *args, timeout=60, log_level="debug"):
        """sqlite-maintd --once (plus args), to its end: (Daemon, exit status)."""
        d = self.start(config, "--once", *args, log_level=log_level, wait_ready=False)
        rc = d.wait(timeout)
        return d, rc

    def close(self):
        for d in self.daemons:
            d.close()
        for s in self._sockdirs:
            shutil.rmtree(s, ignore_errors=True)


@pytest.fixture
def daemon(journald, tmp_path):
    """daemon.start(config_path_or_text, *args, env=, notify=) -> Daemon."""
    b = helpers.MAINTD_BIN
    if not (os.path.isfile(b) and os.access(b, os.X_OK)):
        pytest.fail(f"sqlite-maintd not built: {b} (set MAINTD_BIN)", pytrace=False)
    f = DaemonFactory(journald, tmp_path)
    try:
        yield f
    finally:
        f.close()


# --------------------------------------------------------------------------
# An application in another process

@pytest.fixture
def app():
    """app(path, begin=, after=, write_first=) -> App; killed at teardown."""
    apps = []

    def start(*a, **kw):
        x = helpers.App(*a, **kw)
        apps.append(x)
        return x

    yield start
    for x in apps:
        x.kill()
        x.close()
