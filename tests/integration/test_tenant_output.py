# SPDX-License-Identifier: MIT
"""What a tenant can make the daemon say, and where it may not reach.

The daemon runs as root and watches directories that other users (tenants)
own. Here a real unprivileged user, made with useradd for the test and
removed after it, names its files to attack what the daemon writes: the
sd_notify datagrams systemd acts on (a STATUS= that would end its line and
add MAINPID= or WATCHDOG=trigger), the console and sqlite-maintctl's human
output (a forged "critical:" line, terminal escape sequences). A tenant who
can write the configuration or the state directory must not be trusted at
all, and one tenant's flood of failing files must not push another tenant's
corruption report out of the journal. Everything is real: users, files,
processes, journald and a NOTIFY_SOCKET listener."""

import contextlib
import dataclasses
import json
import os
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import stat
import subprocess
import tempfile
import time

import pytest

import helpers
from daemon_fixtures import (  # noqa: F401  (fixtures are used by name)
    JOURNAL_SOCKET, M, MSGID, config_text, daemon, format_entries, journald)
from helpers import MAINTCTL_BIN, MAINTD_BIN, PYTHON, SOURCE_ROOT, make_corrupt_db

# Generous bounds on waits that end with a positive sign; none is a speed claim.
LONG_WAIT = 120


class ProductBug(AssertionError):
    """The failure of an assertion a product bug once failed (since
    fixed): named as such."""


@contextlib.contextmanager
def known_bug():
    try:
        yield
    except AssertionError as e:
        raise ProductBug(str(e)) from e


# --------------------------------------------------------------------------
# Tenants: real users

@dataclasses.dataclass
class Tenant:
    name: str
    uid: int
    gid: int

    def argv(self, argv):
        # setpriv drops every supplementary group: the tenant's rights only
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups"] + list(argv)

    def run(self, argv, check=True, timeout=120, **kw):
        p = subprocess.run(self.argv(argv), capture_output=True, timeout=timeout, cwd="/",
                           stdin=subprocess.DEVNULL, **kw)
        if check:
            assert p.returncode == 0, (f"as {self.name}: {argv!r} exited {p.returncode}\n"
                                       f"{p.stdout!r}\n{p.stderr!r}")
        return p

    def python(self, script, *args, **kw):
        return self.run([PYTHON, "-c", script] + [a if isinstance(a, bytes) else str(a) for a in args], **kw)

    def mkdir(self, path, mode=0o755):
        """A directory the tenant owns (made by root, then given away)."""
        os.mkdir(path)
        os.chown(path, self.uid, self.gid)
        os.chmod(path, mode)
        return path


def _useradd(name):
    # other test sessions may hold /etc/passwd's lock for a moment
    for _ in range(40):
        p = subprocess.run(["useradd", "--no-create-home", "--user-group", "--shell", "/usr/sbin/nologin", name],
                           capture_output=True, text=True, timeout=60)
        if p.returncode == 0:
            return
        if "lock" not in p.stderr:
            break
        time.sleep(0.5)
    pytest.fail(f"useradd {name} failed ({p.returncode}): {p.stderr.strip()}", pytrace=False)


def _userdel(name):
    for _ in range(40):
        p = subprocess.run(["userdel", name], capture_output=True, text=True, timeout=60)
        if p.returncode == 0 or subprocess.run(["id", name], capture_output=True).returncode != 0:
            return
        time.sleep(0.5)
    raise AssertionError(f"userdel {name} failed: {p.stderr.strip()}")


@pytest.fixture
def tenants():
    """tenants() -> a new Tenant (a real user, no home, no shell), removed
    after the test whatever happens."""
    if os.geteuid() != 0:
        pytest.skip("creating users needs root")
    for tool in ("useradd", "userdel", "setpriv"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    made = []

    def new():
        name = "mtt" + secrets.token_hex(5)
        _useradd(name)
        made.append(name)
        p = subprocess.run(["id", "-u", name], capture_output=True, text=True, timeout=30)
        g = subprocess.run(["id", "-g", name], capture_output=True, text=True, timeout=30)
        return Tenant(name, int(p.stdout), int(g.stdout))

    try:
        yield new
    finally:
        errors = []
        for name in made:
            try:
                _userdel(name)
            except AssertionError as e:
                errors.append(str(e))
        assert not errors, errors


@pytest.fixture
def base():
    """A root-owned 0755 directory under /tmp (pytest's tmp_path is 0700:
    the tenants could not reach their own directories in it)."""
    d = tempfile.mkdtemp(prefix="maintd-tenant-", dir="/tmp")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def processes():
    """processes(argv) -> Popen, killed (by pid) at teardown."""
    started = []

    def start(argv, **kw):
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, **kw)
        started.append(p)
        return p

    yield start
    for p in started:
        if p.poll() is None:
            p.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(timeout=15)


# A fragmented rollback database, made under a name no glob matches and
# renamed into place, so the daemon never sees it half made. argv: the
# final path (bytes are fine), the number of rows (one 3000-byte blob a
# page), the share of rows deleted in percent, and optionally "index": a
# table kv with an index, for ANALYZE.
MAKE_DB = r"""
import os, sqlite3, sys
final = os.fsencode(sys.argv[1])
rows, pct = int(sys.argv[2]), int(sys.argv[3])
tmp = os.path.join(os.path.dirname(final), b".making-%d" % os.getpid())
con = sqlite3.connect(tmp, isolation_level=None)
assert con.execute("PRAGMA journal_mode=DELETE").fetchone()[0] == "delete"
con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB)")
con.execute("BEGIN")
con.executemany("INSERT INTO t VALUES(?, randomblob(3000))", [(i,) for i in range(1, rows + 1)])
con.execute("COMMIT")
if pct:
    con.execute(f"DELETE FROM t WHERE id % 100 < {pct}")
if sys.argv[4:] == ["index"]:
    con.execute("CREATE TABLE kv(k INTEGER, v TEXT)")
    con.execute("CREATE INDEX kv_k ON kv(k)")
    con.executemany("INSERT INTO kv VALUES(?, ?)", [(i % 50, f"v{i}") for i in range(2000)])
con.close()
os.rename(tmp, final)
"""

# Text files that end in .db: argv: directory, how many, name prefix.
MAKE_JUNK = r"""
import os, sys
d, n, prefix = os.fsencode(sys.argv[1]), int(sys.argv[2]), os.fsencode(sys.argv[3])
for i in range(n):
    with open(os.path.join(d, prefix + b"%05d.db" % i), "wb") as f:
        f.write(b"not a database, just text that ends in .db\n" * 5)
"""

# Small databases (one table, three rows): argv: directory, first number, last number.
MAKE_SMALL_DBS = r"""
import os, sqlite3, sys
d, a, b = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(a, b + 1):
    tmp, final = os.path.join(d, ".making"), os.path.join(d, "m%02d.db" % i)
    con = sqlite3.connect(tmp, isolation_level=None)
    con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB)")
    con.execute("INSERT INTO t VALUES(1, 'a'), (2, 'b'), (3, 'c')")
    con.close()
    os.rename(tmp, final)
"""


def tenant_db(tenant, path, rows=300, pct=50, index=False):
    tenant.python(MAKE_DB, os.fsencode(path), rows, pct, *(["index"] if index else []))
    st = os.lstat(path)
    assert st.st_uid == tenant.uid and stat.S_ISREG(st.st_mode), (path, st)
    return path


def fragmentation(path):
    con = sqlite3.connect(b"file:" + os.fsencode(path).replace(b"?", b"%3f").replace(b"#", b"%23")
                          + b"?mode=ro", uri=True)
    try:
        fl = con.execute("PRAGMA freelist_count").fetchone()[0]
        pc = con.execute("PRAGMA page_count").fetchone()[0]
    finally:
        con.close()
    return 100.0 * fl / pc


def escape(name):
    """util_escape() in Python: what the daemon and sqlite-maintctl print
    for a file name (bytes) in STATUS=, console lines and human output."""
    out = []
    s = name.decode("utf-8", "surrogateescape")
    for ch in s:
        c = ord(ch)
        if 0xdc80 <= c <= 0xdcff:  # a byte that is not UTF-8
            out.append(f"\\x{c - 0xdc00:02x}")
        elif ch in "\n\t\r\\":
            out.append({"\n": "\\n", "\t": "\\t", "\r": "\\r", "\\": "\\\\"}[ch])
        elif terminal_unsafe(c):
            out.append("".join(f"\\x{b:02x}" for b in ch.encode()))
        else:
            out.append(ch)
    return "".join(out)


# Code points a terminal or a line-oriented reader acts on (src/util.c
# util_terminal_unsafe): C0, DEL, C1, the line and paragraph separators
# (U+2028, U+2029), the bidi marks (U+061C, U+200E, U+200F) and the bidi
# overrides and isolates that reorder what is shown.
def terminal_unsafe(c):
    return c < 0x20 or c == 0x7f or 0x80 <= c <= 0x9f or c in (0x061c, 0x200e, 0x200f, 0x2028, 0x2029) \
        or 0x202a <= c <= 0x202e or 0x2066 <= c <= 0x2069


def unsafe_characters(data):
    """The characters of data (bytes) a terminal would act on, and whether
    it is valid UTF-8 at all."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        return [f"invalid UTF-8 at byte {e.start}: {data[max(0, e.start - 40):e.start + 10]!r}"]
    bad = []
    for i, ch in enumerate(text):
        c = ord(ch)
        if terminal_unsafe(c) and ch != "\n":
            bad.append(f"U+{c:04X} in {text[max(0, i - 40):i + 10]!r}")
    return bad


def raw_entries(pid, since_us):
    """The journal entries of pid as journalctl -o json gives them, the
    values as bytes (journalctl gives a byte array for a value with a
    control character other than a newline, or one that is not UTF-8)."""
    subprocess.run(["journalctl", "--sync"], capture_output=True, timeout=30)
    p = subprocess.run(["journalctl", "-o", "json", "--no-pager", f"--since=@{since_us // 1000000 - 1}",
                        f"_PID={pid}"], capture_output=True, timeout=60)
    out = []
    for line in p.stdout.splitlines():
        if not line.startswith(b"{"):
            continue
        e = json.loads(line)
        raw = {"_ARRAYS": set()}
        for k, v in e.items():
            if isinstance(v, list) and v and all(isinstance(x, int) for x in v):
                raw[k] = bytes(v)
                raw["_ARRAYS"].add(k)
            elif isinstance(v, str):
                raw[k] = v.encode()
            else:
                raw[k] = v
        out.append(raw)
    return out


def read(path):
    with open(path, "rb") as f:
        return f.read()


def wait_until(what, predicate, timeout=LONG_WAIT, interval=0.2, describe=None):
    deadline = time.monotonic() + timeout
    while True:
        v = predicate()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s" + (f"\n{describe()}" if describe else ""))
        time.sleep(interval)


# --------------------------------------------------------------------------
# 1. sd_notify: a file name cannot add assignments

# Datagrams as the daemon means them, one assignment a line.
NOTIFY_SHAPES = [
    [r"READY=1"],
    [r"STATUS=[^\n]*"],
    [r"WATCHDOG=1"],
    [r"RELOADING=1", r"MONOTONIC_USEC=\d+"],
    [r"STOPPING=1"],
]


def shape_ok(text):
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines = lines[:-1]
    return any(len(lines) == len(s) and all(re.fullmatch(p, l) for p, l in zip(s, lines)) for s in NOTIFY_SHAPES)


def test_sd_notify_injection(base, tenants, daemon, processes):
    tenant = tenants()
    tdir = tenant.mkdir(os.path.join(base, tenant.name))
    sleeper = processes(["sleep", "1000"])
    names = [f"x\nMAINPID={sleeper.pid}\nWATCHDOG=trigger\n.db",
             "x\nSTOPPING=1\n.db",
             "x\nWATCHDOG_USEC=1\n.db",
             "x\nEXTEND_TIMEOUT_USEC=1\n.db",
             "x\nREADY=1\n.db",
             "x\rSTATUS=forged\n.db"]
    paths = [os.path.join(tdir, n) for n in names]
    for p in paths:
        tenant_db(tenant, p)
        assert fragmentation(p) >= 30  # urgent: vacuumed whatever the window
    cfg = config_text(os.path.join(base, "state"), [os.path.join(tdir, "*.db")])
    # the watchdog on: WATCHDOG=1 datagrams are among those checked
    d = daemon.start(cfg, env={"WATCHDOG_USEC": 2_000_000})
    for p in paths:
        e = d.wait_for_entry(msgid="VACUUM_DONE", DB_PATH=p, timeout=LONG_WAIT)
        assert e["PRIORITY"] == "6"
        assert fragmentation(p) == 0.0
        # STATUS= names it (escaped or not: the shapes are checked below)
        esc, rawname = escape(os.fsencode(p)), p
        _, m = d.notify.wait_for(lambda m: m.pid == d.pid and (esc in m.text or rawname in m.text),
                                 timeout=LONG_WAIT, what=f"a datagram naming {p!r}")
        check_datagrams(d.notify.snapshot(), d.pid)
        # named while it runs (now: VACUUM of ...) or once done (last: vacuumed ...)
        assert m.value("STATUS") and (f"last: vacuumed {esc} (" in m.value("STATUS") or
                                      f"now: VACUUM of {esc}: " in m.value("STATUS")), m.text
    d.wait_notify("WATCHDOG=1")
    d.signal(signal.SIGHUP)  # a reload: RELOADING=1 and MONOTONIC_USEC= are checked too
    d.wait_for_entry(msgid="RELOADED")
    assert d.stop() == 0, d.describe()

    got = d.notify.snapshot()
    check_datagrams(got, d.pid)
    for a in ("READY=1", "WATCHDOG=1", "RELOADING=1", "STOPPING=1"):
        assert any(m.has(a) for m in got), f"no {a} datagram: {[m.text for m in got]}"
    assert sleeper.poll() is None, "the sleep process named in a forged MAINPID= is gone"

    # The journal keeps the exact bytes of each name.
    raw = raw_entries(d.pid, d.since_us)
    done = [e for e in raw if e.get("MESSAGE_ID") == MSGID["VACUUM_DONE"].encode()]
    assert sorted(e["DB_PATH"] for e in done) == sorted(os.fsencode(p) for p in paths), \
        [e.get("DB_PATH") for e in done]
    # (journalctl gives a value with \r as a byte array, one with \n as a string)
    assert any("DB_PATH" in e["_ARRAYS"] for e in done), [e["DB_PATH"] for e in done]


def check_datagrams(got, pid):
    """Every datagram on the socket: from the daemon itself, each exactly
    an assignment it means to send, one a line; STATUS= printable."""
    assert got, "no datagram at all"
    for m in got:
        assert m.pid == pid, f"a datagram from pid {m.pid}, not the daemon ({pid}): {m.text!r}"
        assert shape_ok(m.text), f"a datagram the daemon does not mean to send: {m.text!r}"
        for line in m.assignments():
            assert not re.match(r"(MAINPID|WATCHDOG_USEC|EXTEND_TIMEOUT_USEC|FDSTORE|ERRNO|BUSERROR)=", line), m.text
        v = m.value("STATUS")
        if v is not None:
            assert not unsafe_characters(v.encode()), (v, unsafe_characters(v.encode()))


# --------------------------------------------------------------------------
# 2. The console and the terminal

# A forged line: after the newline, what the daemon prints for a corrupt
# database (with U+2215 DIVISION SLASH, as a file name cannot hold "/").
FORGED = ("ok\ncritical: \u2215srv\u2215other.db: DATABASE CORRUPT, not vacuumed: "
          "database disk image is malformed\nz.db")
FORGED_TAIL = "\u2215srv\u2215other.db: DATABASE CORRUPT"
# Terminal controls, valid UTF-8: clear screen and home, OSC 52 (set the
# clipboard), C1 CSI (U+009B), a right-to-left override, DEL, backspace,
# carriage return, tab.
TERMINAL = "t\x1b[2J\x1b[H\x1b]52;c;cHduZWQ=\x07\u009b31m\u202egnp.exe\x7f\x08\r\t.db"
# Bytes that are not UTF-8: an 8-bit C1 CSI, 0xff 0xfe, an overlong "/".
RAWBYTES = b"r\x9b31m\xff\xfe\xc0\xaf.db"
# Not a database: its failure is reported too.
NOTDB = "n\x1b[31mred\x1b]0;title\x07.db"


def hostile_set(tenant, tdir):
    """The tenant's files: three fragmented databases (about 1.6 MiB to
    reclaim each: above the default min_reclaim) and a text file."""
    d = os.fsencode(tdir)
    dbs = [os.path.join(d, FORGED.encode()), os.path.join(d, TERMINAL.encode()), os.path.join(d, RAWBYTES)]
    for p in dbs:
        tenant_db(tenant, p, rows=800)
    notdb = os.path.join(d, NOTDB.encode())
    tenant.python("import sys, os\nopen(os.fsencode(sys.argv[1]), 'wb').write(b'text, not SQLite\\n' * 20)", notdb)
    return dbs, notdb


def assert_terminal_safe(data, what):
    """No character a terminal acts on, and each forged tail only inside
    the line of its escaped name."""
    bad = unsafe_characters(data)
    assert not bad, f"{what}: raw control characters from a file name:\n" + "\n".join(bad[:20]) + \
        f"\n--- output ---\n{data.decode('utf-8', 'replace')[-6000:]}"
    for line in data.decode().split("\n"):
        if FORGED_TAIL in line:
            assert escape(FORGED.encode()) in line, f"{what}: a forged line: {line!r}"
        assert not line.startswith("critical: "), f"{what}: a critical line nobody meant: {line!r}"


def test_console_lines_escaped(base, tenants, daemon):
    tenant = tenants()
    tdir = tenant.mkdir(os.path.join(base, tenant.name))
    dbs, notdb = hostile_set(tenant, tdir)
    cfg = config_text(os.path.join(base, "state"), [os.path.join(tdir, "*.db")])
    d = daemon.start(cfg, "--log-target=console")
    # each on the console (escaped or not: that is checked after)
    for p, what in [(p, b": VACUUM done") for p in dbs] + [(notdb, b": not an SQLite database")]:
        wait_until(f"the console line about {p!r}",
                   lambda: any(n + what in read(d.err_path) for n in (escape(p).encode(), p)),
                   describe=d.describe)
    assert d.stop() == 0, d.describe()
    err = read(d.err_path)
    assert_terminal_safe(err, "the daemon's stderr")
    for p in dbs:
        assert f"{escape(p)}: VACUUM done".encode() in err, (escape(p), err.decode("utf-8", "replace"))
        assert fragmentation(p) == 0.0
    check_datagrams(d.notify.snapshot(), d.pid)
    assert not [e for e in d.entries() if e.get("DB_PATH")], "console target, yet journal entries"


def ctl_raw(*args, timeout=120):
    """sqlite-maintctl with args (bytes allowed), as root: (rc, stdout, stderr) as bytes."""
    p = subprocess.run([MAINTCTL_BIN] + [a if isinstance(a, bytes) else str(a) for a in args],
                       capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    assert p.returncode >= 0, f"sqlite-maintctl killed by signal {-p.returncode}: {p.stderr!r}"
    return p.returncode, p.stdout, p.stderr


def test_ctl_human_output_escaped_json_exact(base, tenants):
    tenant = tenants()
    tdir = tenant.mkdir(os.path.join(base, tenant.name))
    dbs, notdb = hostile_set(tenant, tdir)
    every = dbs + [notdb]

    # JSON first, while they are fragmented: the exact names (JSON is
    # Unicode: a byte that is not UTF-8 becomes U+FFFD, as documented)
    for cmd in (["stats"], ["check"]):
        rc, out, err = ctl_raw("--json", *cmd, *every)
        assert rc == 1, (cmd, rc, out, err)  # the text file
        objs = [json.loads(line) for line in out.decode().splitlines()]
        assert [o["path"] for o in objs] == [p.decode("utf-8", "replace") for p in every], objs
        assert [o["status"] for o in objs] == ["ok"] * 3 + ["not_a_database"], objs
        # JSON allows no raw C0 control character in a string
        assert not [b for b in out if b < 0x20 and b != 0x0a], out
    for p in dbs[:2]:
        rc, out, err = ctl_raw("--json", "stats", p)
        assert rc == 0 and json.loads(out)["path"] == p.decode(), out

    for cmd in (["stats"], ["check"], ["check", "--full"], ["vacuum"], ["vacuum", "--force"], ["analyze"]):
        rc, out, err = ctl_raw(*cmd, *every)
        assert rc == 1, (cmd, rc, out, err)
        assert_terminal_safe(out, f"sqlite-maintctl {' '.join(cmd)}: stdout")
        assert_terminal_safe(err, f"sqlite-maintctl {' '.join(cmd)}: stderr")
        # each name is there, escaped: on stdout, the text file's on stderr
        for p in dbs:
            assert escape(p).encode() in out, (cmd, escape(p), out)
        assert f"sqlite-maintctl: {escape(notdb)}: not_a_database".encode() in err, (cmd, err)
        if cmd == ["vacuum"]:
            assert out.count(b": vacuumed: fragmentation") == 3, out
    for p in dbs:
        assert fragmentation(p) == 0.0


# A writer killed (SIGKILL) inside its transaction after its page cache
# spilled: a synced -journal and changed pages in the file. argv: the path.
HOT_WRITER = r"""
import sqlite3, sys, time
con = sqlite3.connect(sys.argv[1], isolation_level=None)
con.execute("PRAGMA cache_size=10")
con.execute("BEGIN")
con.execute("UPDATE t SET b = randomblob(3000)")
print("mid-transaction", flush=True)
time.sleep(600)
"""


def make_hot_journal(tenant, path):
    """A fragmented database of the tenant's with a hot journal beside it."""
    tenant_db(tenant, path, rows=400)
    w = subprocess.Popen(tenant.argv([PYTHON, "-c", HOT_WRITER, path]), stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd="/")
    try:
        line = w.stdout.readline()
        assert line.strip() == b"mid-transaction", (line, w.stderr.read() if w.poll() is not None else b"")
    finally:
        w.kill()
        w.wait(timeout=15)
        w.stdout.close()
        w.stderr.close()
    with open(path + b"-journal", "rb") as f:
        assert f.read(8) == bytes.fromhex("d9d505f920a163d7"), "the journal is not hot"


def test_ctl_hot_journal_line_escaped(base, tenants):
    """The line sqlite-maintctl adds when it rolled back a hot journal
    names the file like every other line: escaped."""
    tenant = tenants()
    tdir = tenant.mkdir(os.path.join(base, tenant.name))
    p = os.path.join(os.fsencode(tdir), TERMINAL.encode())
    make_hot_journal(tenant, p)
    rc, out, err = ctl_raw("vacuum", "--force", p)
    assert rc == 0, (rc, out, err)
    assert b"rolled back a hot journal" in out, out
    assert b": vacuumed: fragmentation" in out, out
    assert not os.path.exists(p + b"-journal")
    with known_bug():
        assert_terminal_safe(out, "sqlite-maintctl vacuum of a database with a hot journal: stdout")
    assert_terminal_safe(err, "sqlite-maintctl vacuum of a database with a hot journal: stderr")


# The line and paragraph separators and the bidi marks, valid UTF-8 and no
# C0 or C1 control: a reader that splits lines on U+2028/U+2029 (JavaScript,
# some log viewers) sees a forged line; the marks reorder what is shown.
SEPARATORS = "s\u2028critical: forged\u2029p\u200eq\u200fr\u061cz.db"
SEPARATOR_JSON = [b"\\u2028", b"\\u2029", b"\\u200e", b"\\u200f", b"\\u061c"]


def test_separators_and_bidi_marks_escaped(base, tenants, daemon):
    """A database named with U+2028, U+2029, U+200E, U+200F and U+061C:
    the journal's DB_PATH keeps the exact bytes; escaped (as the bytes of
    each, \\xe2\\x80\\xa8...) in the daemon's console lines and STATUS=, and
    in sqlite-maintctl's human output; \\uXXXX in its JSON."""
    tenant = tenants()
    tdir = tenant.mkdir(os.path.join(base, tenant.name))
    p = tenant_db(tenant, os.path.join(os.fsencode(tdir), SEPARATORS.encode()), rows=800)
    esc = escape(p)
    assert "\\xe2\\x80\\xa8critical: forged\\xe2\\x80\\xa9" in esc and "\\xd8\\x9c" in esc, esc
    cfg = config_text(os.path.join(base, "state"), [os.path.join(tdir, "*.db")])

    # the journal: DB_PATH holds the exact bytes (a field of its own)
    d = daemon.start(config_text(os.path.join(base, "state-journal"), [os.path.join(tdir, "*.db")]))
    d.wait_for_entry(msgid="VACUUM_DONE", DB_PATH=p.decode(), timeout=LONG_WAIT)
    assert d.stop() == 0, d.describe()
    named = [e["DB_PATH"] for e in raw_entries(d.pid, d.since_us) if "DB_PATH" in e]
    assert named and all(n == p for n in named), named

    # the daemon: a console line and STATUS= name it escaped
    tenant_db(tenant, p, rows=800)  # fragmented again
    d = daemon.start(cfg, "--log-target=console")
    wait_until(f"the console line about {p!r}",
               lambda: any(n + b": VACUUM done" in read(d.err_path) for n in (esc.encode(), p)), describe=d.describe)
    d.notify.wait_for(lambda m: m.pid == d.pid and (esc in m.text or SEPARATORS in m.text), timeout=LONG_WAIT,
                      what=f"a datagram naming {p!r}")
    assert d.stop() == 0, d.describe()
    err = read(d.err_path)
    assert_terminal_safe(err, "the daemon's stderr")
    assert f"{esc}: VACUUM done".encode() in err, err.decode()
    check_datagrams(d.notify.snapshot(), d.pid)
    assert fragmentation(p) == 0.0

    # sqlite-maintctl: human output escaped, JSON with \\u escapes
    for cmd in (["stats"], ["check"], ["vacuum", "--force"]):
        rc, out, err = ctl_raw(*cmd, p)
        assert rc == 0, (cmd, rc, out, err)
        assert_terminal_safe(out, f"sqlite-maintctl {' '.join(cmd)}: stdout")
        assert_terminal_safe(err, f"sqlite-maintctl {' '.join(cmd)}: stderr")
        assert esc.encode() in out, (cmd, esc, out)
    rc, out, err = ctl_raw("--json", "stats", p)
    assert rc == 0, (rc, out, err)
    assert all(u in out for u in SEPARATOR_JSON), out
    assert not unsafe_characters(out), unsafe_characters(out)
    assert json.loads(out)["path"] == p.decode(), out



# --------------------------------------------------------------------------
# 3. Whoever can write the configuration or the state directory

@dataclasses.dataclass
class Setup:
    base: str
    tenant: Tenant
    cfg: str          # the configuration's path
    dbdir: str        # the tenant's directory of databases
    state: str


def trusted_setup(base, tenant, cfg_dir="etc"):
    """A root-owned 0644 configuration in a root-owned directory, watching
    the tenant's directory of databases."""
    s = Setup(base, tenant, os.path.join(base, cfg_dir, "maintd.yaml"), os.path.join(base, tenant.name),
              os.path.join(base, "state"))
    os.makedirs(os.path.dirname(s.cfg), exist_ok=True)
    tenant.mkdir(s.dbdir)
    with open(s.cfg, "w") as f:
        f.write(config_text(s.state, [os.path.join(s.dbdir, "*.db")]))
    os.chmod(s.cfg, 0o644)
    return s


# How each case makes the configuration writable by the tenant, in place,
# and the path the refusal must name.
def untrust(case, s):
    t = s.tenant
    if case == "world-writable":
        os.chmod(s.cfg, 0o666)
        return s.cfg, "is writable by every user"
    if case == "tenant-directory":
        os.chown(os.path.dirname(s.cfg), t.uid, t.gid)
        return os.path.dirname(s.cfg), f"belongs to user {t.uid}"
    if case == "group-writable":
        os.chown(s.cfg, 0, t.gid)
        os.chmod(s.cfg, 0o664)
        return s.cfg, f"is writable by group {t.gid}"
    if case == "tenant-owned":
        os.chown(s.cfg, t.uid, t.gid)
        return s.cfg, f"belongs to user {t.uid}"
    # a POSIX ACL entry granting the tenant write: the mode alone looks safe
    # (its group bits, the ACL's mask, are root's group's)
    if case == "acl-file":
        helpers.setfacl(s.cfg, f"u:{t.uid}:rw")
        return s.cfg, f"is writable by user {t.uid} (an ACL entry)"
    if case == "acl-directory":
        helpers.setfacl(os.path.dirname(s.cfg), f"u:{t.uid}:rwx")
        return os.path.dirname(s.cfg), f"is writable by user {t.uid} (an ACL entry)"
    raise AssertionError(case)


UNTRUSTED = ["world-writable", "tenant-directory", "group-writable", "tenant-owned", "acl-file", "acl-directory"]


def refusal(named, why):
    return f"refusing the configuration: {named} {why}"


def run_maintd(*args, timeout=60):
    p = subprocess.run([MAINTD_BIN] + [str(a) for a in args], capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL, env={k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"})
    return p


def no_ready(d):
    """The daemon d has exited: every datagram it sent is on the socket
    before one sent now (a datagram socket keeps their order). True when
    none of them was READY=1."""
    assert not d.alive()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        s.sendto(b"X-TEST-SENTINEL=1", d.notify.path)
    finally:
        s.close()
    d.notify.wait_for(lambda m: m.has("X-TEST-SENTINEL=1"), what="the test's own sentinel datagram")
    return not [m for m in d.notify.snapshot() if m.pid == d.pid and m.has("READY=1")]


@pytest.mark.parametrize("case", UNTRUSTED)
def test_untrusted_configuration_refused(base, tenants, daemon, case):
    tenant = tenants()
    s = trusted_setup(base, tenant)
    db = tenant_db(tenant, os.path.join(s.dbdir, "a.db"))
    named, why = untrust(case, s)
    want = refusal(named, why)

    # at start: exit 78 before READY=1, the reason on the console
    d = daemon.start(s.cfg, "--log-target=console", wait_ready=False)
    assert d.wait(60) == 78, d.describe()
    assert want in read(d.err_path).decode(), d.describe()
    assert no_ready(d), d.describe()
    assert not os.path.exists(s.state), "a refused configuration's state_dir was made"

    # --check-config
    p = run_maintd("--check-config", "-c", s.cfg)
    assert p.returncode == 78 and want in p.stderr and "configuration OK" not in p.stdout, (p.stdout, p.stderr)

    # sqlite-maintctl -c: a usage error
    r = helpers.run_ctl("-c", s.cfg, "stats", db)
    assert r.rc == 2 and want in r.err, r.describe()
    assert r.out.strip() == "", r.describe()
    assert fragmentation(db) > 30, "a database was touched under a refused configuration"


@pytest.mark.parametrize("case", UNTRUSTED)
def test_untrusted_configuration_refused_at_reload(base, tenants, daemon, case):
    """SIGHUP with a configuration the tenant can now write (and did): a
    RELOAD_FAILED entry naming why, and the old configuration goes on."""
    tenant = tenants()
    s = trusted_setup(base, tenant)
    first = tenant_db(tenant, os.path.join(s.dbdir, "first.db"))
    d = daemon.start(s.cfg)
    d.wait_for_entry(msgid="VACUUM_DONE", DB_PATH=first, timeout=LONG_WAIT)

    named, why = untrust(case, s)
    # the tenant writes the configuration it was given: other databases
    # (for the directory case: a file of its own renamed over it)
    other = os.path.join(s.dbdir, "other")
    tenant.mkdir(other)
    text = config_text(s.state, [os.path.join(other, "*.sqlite")], vacuum={"threshold": "1%"})
    if case in ("tenant-directory", "acl-directory"):
        tenant.python("import os, sys\nopen(sys.argv[1] + '.new', 'w').write(sys.argv[2])\n"
                      "os.rename(sys.argv[1] + '.new', sys.argv[1])", s.cfg, text)
    else:
        tenant.python("import sys\nopen(sys.argv[1], 'w').write(sys.argv[2])", s.cfg, text)
    assert read(s.cfg).decode() == text
    d.signal(signal.SIGHUP)
    e = d.wait_for_entry(M("RELOAD_FAILED", message="refusing the configuration: "))
    assert e["PRIORITY"] == "3", e
    # the directory case: the file is the tenant's now, named first
    assert re.search(rf"refusing the configuration: ({re.escape(named)}|{re.escape(s.cfg)}) "
                     rf"(belongs to user {tenant.uid}|is writable by (every user|group {tenant.gid}|"
                     rf"user {tenant.uid} \(an ACL entry\)))",
                     e["MESSAGE"]), e["MESSAGE"]
    summary = d.wait_for_entry(M("RELOAD_FAILED", CONFIG_FILE=s.cfg))
    assert "keeping the old configuration" in summary["MESSAGE"], summary
    assert d.alive()

    # the old configuration goes on: a new database under its glob is vacuumed
    later = tenant_db(tenant, os.path.join(s.dbdir, "later.db"))
    d.wait_for_entry(msgid="VACUUM_DONE", DB_PATH=later, timeout=LONG_WAIT)
    assert not d.entries(msgid="RELOADED"), format_entries(d.entries())
    assert d.stop() == 0, d.describe()


def test_configuration_in_sticky_directory_accepted(base, tenants, daemon):
    """A root-owned 0644 file in a sticky world-writable directory (as
    /tmp) is the admin's: others cannot replace or change it."""
    tenant = tenants()
    s = trusted_setup(base, tenant, cfg_dir="sticky")
    os.chmod(os.path.dirname(s.cfg), 0o1777)
    # the tenant has a file there too: nothing to do with ours
    tenant.python("open('%s', 'w').write('mine')" % os.path.join(os.path.dirname(s.cfg), "tenant-file"))
    p = run_maintd("--check-config", "-c", s.cfg)
    assert p.returncode == 0 and p.stdout.strip() == "configuration OK", (p.stdout, p.stderr)
    db = tenant_db(tenant, os.path.join(s.dbdir, "a.db"))
    r = helpers.run_ctl("-c", s.cfg, "--json", "stats", db)
    assert r.rc == 0 and r.one()["status"] == "ok", r.describe()
    d = daemon.start(s.cfg)
    d.wait_for_entry(msgid="VACUUM_DONE", DB_PATH=db, timeout=LONG_WAIT)
    assert d.stop() == 0, d.describe()


def test_configuration_through_tenant_symlink_refused(base, tenants):
    tenant = tenants()
    s = trusted_setup(base, tenant)
    tconf = tenant.mkdir(os.path.join(base, "tenant-conf"))
    link = os.path.join(tconf, "maintd.yaml")
    tenant.run(["ln", "-s", s.cfg, link])
    assert os.path.islink(link) and os.lstat(link).st_uid == tenant.uid
    p = run_maintd("--check-config", "-c", link)
    with known_bug():
        assert p.returncode == 78, (p.returncode, p.stdout, p.stderr)
    assert refusal(tconf, f"belongs to user {tenant.uid}") in p.stderr, p.stderr


def test_check_config_output_escaped(base, tenants):
    tenant = tenants()
    tconf = tenant.mkdir(os.path.join(base, "tenant-conf"))
    evil = os.path.join(tconf, "c\x1b]52;c;cHduZWQ=\x07\x1b[2J.yaml")
    tenant.python("import sys\nopen(sys.argv[1], 'w').write('poll_interval: 1s\\n')", evil)
    link = os.path.join(tconf, "maintd.yaml")
    tenant.run(["ln", "-s", evil, link])
    p = subprocess.run([MAINTD_BIN, "--check-config", "-c", link], capture_output=True, timeout=60)
    assert p.returncode == 78, p
    assert b"refusing the configuration" in p.stderr, p.stderr
    with known_bug():
        assert_terminal_safe(p.stderr, "sqlite-maintd --check-config: stderr")


# How each case makes the state directory the tenant's to write, and what
# the refusal says: (state_dir, the path named, why).
def untrusted_state(case, base, tenant):
    state = os.path.join(base, "state")
    if case == "tenant-owned":
        tenant.mkdir(state, 0o700)
        return state, state, f"belongs to user {tenant.uid}"
    if case == "world-writable":
        os.mkdir(state)
        os.chmod(state, 0o777)
        return state, state, "is writable by every user"
    if case == "sticky-world-writable":
        # sticky protects what is in it, not the name state.db before it exists
        os.mkdir(state)
        os.chmod(state, 0o1777)
        return state, state, "is writable by every user"
    if case == "group-writable":
        os.mkdir(state)
        os.chown(state, 0, tenant.gid)
        os.chmod(state, 0o770)
        return state, state, f"is writable by group {tenant.gid}"
    if case == "in-tenant-directory":
        parent = tenant.mkdir(os.path.join(base, "tenant-var"))
        state = os.path.join(parent, "state")  # root's, made by the daemon: the tenant can rename it
        return state, parent, f"belongs to user {tenant.uid}"
    if case == "symlink":
        real = os.path.join(base, "real-state")
        os.mkdir(real, 0o700)
        os.symlink(real, state)
        return state, state, "not a directory"
    raise AssertionError(case)


STATE_CASES = ["tenant-owned", "world-writable", "sticky-world-writable", "group-writable", "in-tenant-directory",
               "symlink"]


def start_with_state(base, tenant, daemon, case):
    """The daemon started with an untrusted state_dir: (Daemon, exit status,
    stderr, state_dir, the path the refusal must name, why, a database)."""
    state, named, why = untrusted_state(case, base, tenant)
    dbdir = tenant.mkdir(os.path.join(base, tenant.name))
    db = tenant_db(tenant, os.path.join(dbdir, "a.db"))
    cfg = os.path.join(base, "maintd.yaml")
    with open(cfg, "w") as f:
        f.write(config_text(state, [os.path.join(dbdir, "*.db")]))
    d = daemon.start(cfg, "--log-target=console", wait_ready=False)
    rc = d.wait(60)
    return d, rc, read(d.err_path).decode(), state, named, why, db


@pytest.mark.parametrize("case", STATE_CASES)
def test_untrusted_state_directory_refused(base, tenants, daemon, case):
    d, rc, err, state, named, why, db = start_with_state(base, tenants(), daemon, case)
    assert rc == 1, d.describe()  # the configuration is fine (not 78); the state directory is not
    assert f"cannot open the state file in {state}: refusing the state directory: " in err, d.describe()
    assert no_ready(d), d.describe()
    assert not os.path.exists(os.path.join(state, "state.db")), "state.db made in a refused directory"
    assert fragmentation(db) > 30, "a database was vacuumed by a daemon that refused to start"


@pytest.mark.parametrize("case", STATE_CASES)
def test_untrusted_state_directory_refusal_says_why(base, tenants, daemon, case):
    d, rc, err, state, named, why, db = start_with_state(base, tenants(), daemon, case)
    assert rc == 1, d.describe()
    with known_bug():
        assert f"refusing the state directory: {named} {why}" in err or \
            (why == "not a directory" and "refusing the state directory: not a directory" in err), d.describe()


def test_state_db_symlink_refused(base, daemon):
    """A symbolic link planted as state_dir/state.db, to a root-only file:
    the daemon does not start, and the file is left exactly as it was."""
    secret_dir = os.path.join(base, "root-only")
    os.mkdir(secret_dir, 0o700)
    secret = os.path.join(secret_dir, "shadow")
    with open(secret, "wb") as f:
        f.write(b"root:$6$not-a-real-hash:19000:0:99999:7:::\n")
    os.chmod(secret, 0o600)
    before = os.stat(secret)
    content = read(secret)
    state = os.path.join(base, "state")
    os.mkdir(state, 0o700)
    os.symlink(secret, os.path.join(state, "state.db"))
    cfg = os.path.join(base, "maintd.yaml")
    with open(cfg, "w") as f:
        f.write(config_text(state, [os.path.join(base, "dbs", "*.db")]))

    d = daemon.start(cfg, "--log-target=console", wait_ready=False)
    rc = d.wait(60)
    assert rc == 1, d.describe()
    assert f"cannot open the state file in {state}: " in read(d.err_path).decode(), d.describe()
    assert no_ready(d), d.describe()
    after = os.stat(secret)
    assert read(secret) == content, "the symlink's target was written"
    assert (after.st_uid, after.st_gid, stat.S_IMODE(after.st_mode), after.st_size, after.st_mtime_ns) == \
        (before.st_uid, before.st_gid, stat.S_IMODE(before.st_mode), before.st_size, before.st_mtime_ns)
    assert sorted(os.listdir(secret_dir)) == ["shadow"], os.listdir(secret_dir)  # no -wal, -shm, -journal
    assert os.path.islink(os.path.join(state, "state.db"))
    assert sorted(os.listdir(state)) == ["state.db"], os.listdir(state)


# --------------------------------------------------------------------------
# 4. Bounded growth

def source_define(path, name):
    """An integer #define of the source (e.g. src/log.c FLOOD_PER_DIR), so
    the tests never hold a stale copy; products like (10 * 60 * 1000) too."""
    with open(os.path.join(SOURCE_ROOT, path)) as f:
        m = re.search(rf"^#define\s+{name}\s+([0-9*() ]+?)\s*(/\*.*)?$", f.read(), re.M)
    assert m, f"no #define {name} in {path}"
    return int(eval(m.group(1), {"__builtins__": {}}))  # digits, *, ( and ) only


def max_matches_daemon(base, tenant, daemon):
    """12 small databases of the tenant's under an entry with
    limits.max_matches: 5; the daemon started: (Daemon, directory, glob)."""
    tdir = tenant.mkdir(os.path.join(base, tenant.name))
    tenant.python(MAKE_SMALL_DBS, tdir, 0, 11)
    glob = os.path.join(tdir, "*.db")
    cfg = config_text(os.path.join(base, "state"), [{"path": glob, "limits": {"max_matches": 5}}])
    return daemon.start(cfg), tdir, glob


def watched(d):
    """The paths of the daemon's first expansion ("watching ..." entries)."""
    return {e["MESSAGE"].split("watching ", 1)[1] for e in d.entries(message="watching ")
            if e["MESSAGE"].startswith("watching ")}


def test_max_matches(base, tenants, daemon):
    """limits.max_matches: 5 and 12 matching files: 5 watched, one
    PATH_REFUSED warning about the entry (no DB_PATH: no database is
    meant), and still 5 after more files come."""
    tenant = tenants()
    d, tdir, glob = max_matches_daemon(base, tenant, daemon)
    started = d.wait_for_entry(msgid="STARTED")
    assert started["DATABASES"] == "5", started
    refused = d.wait_for_entry(msgid="PATH_REFUSED")
    assert "DB_PATH" not in refused, refused
    assert refused["CONFIG_PATH"] == glob and refused["PRIORITY"] == "4", refused
    assert glob in refused["MESSAGE"] and "max_matches (5)" in refused["MESSAGE"], refused["MESSAGE"]
    w = watched(d)
    assert len(w) == 5 and all(os.path.dirname(p) == tdir for p in w), w

    # more files: still 5, and the warning is not repeated at every poll
    tenant.python(MAKE_SMALL_DBS, tdir, 12, 19)
    n = len(d.entries(message="poll: "))
    d.wait_for_entries(n + 3, M(message="poll: "), timeout=LONG_WAIT)
    polls = d.entries(message="poll: ")
    assert all(e["MESSAGE"].startswith("poll: 5 databases") for e in polls), [e["MESSAGE"] for e in polls]
    assert len(d.entries(msgid="PATH_REFUSED")) == 1, format_entries(d.entries())
    status = [m.value("STATUS") for m in d.notifications() if m.value("STATUS")]
    assert status and status[-1].startswith("Watching 5 databases"), status
    assert d.stop() == 0, d.describe()


def test_max_matches_keeps_the_watched(base, tenants, daemon):
    tenant = tenants()
    d, tdir, glob = max_matches_daemon(base, tenant, daemon)
    d.wait_for_entry(msgid="PATH_REFUSED")
    first = watched(d)
    assert len(first) == 5, first
    # 100 more: the chance that none comes before a watched one in
    # readdir (hash) order is below 1e-5
    tenant.python(MAKE_SMALL_DBS, tdir, 12, 111)
    n = len(d.entries(message="poll: "))
    d.wait_for_entries(n + 3, M(message="poll: "), timeout=LONG_WAIT)
    churn = d.entries(msgid="DB_REMOVED") + d.entries(msgid="DB_ADDED")
    with known_bug():
        assert not churn, "the watched databases changed as the tenant made files:\n" + format_entries(churn)


def make_empty_files(d, names):
    os.makedirs(d, exist_ok=True)
    for name in names:
        os.close(os.open(os.path.join(d, name), os.O_WRONLY | os.O_CREAT, 0o644))


def vm_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


@pytest.mark.skipif("detect_leaks" in os.environ.get("ASAN_OPTIONS", "") or "ASAN_OPTIONS" in os.environ,
                    reason="AddressSanitizer's shadow memory says nothing of the daemon's own")
def test_max_matches_bounds_what_a_walk_keeps(base, daemon):
    """A directory of 100,000 files under an entry with limits.max_matches:
    10: the walk keeps at most twice the limit of them, so the daemon's
    peak memory stays far below what 100,000 paths take (they were all
    kept until the walk was applied); the same 10 stay watched, poll after
    poll."""
    tdir = os.path.join(base, "many")
    make_empty_files(tdir, (f"f{i:06d}.db" for i in range(100000)))
    glob = os.path.join(tdir, "*.db")
    d = daemon.start(config_text(os.path.join(base, "state"), [{"path": glob, "limits": {"max_matches": 10}}]))
    assert d.wait_for_entry(msgid="STARTED")["DATABASES"] == "10"
    d.wait_for_poll_rounds(3, timeout=LONG_WAIT)
    # about 5.5 MiB here; 26 MiB when every match was kept
    peak = vm_kib(d.pid, "VmHWM")
    assert peak < 14 * 1024, f"peak RSS {peak} KiB with 100,000 files and max_matches 10"
    assert not d.entries(msgid="DB_REMOVED"), format_entries(d.entries(msgid="DB_REMOVED"))
    assert len(d.entries(msgid="PATH_REFUSED")) == 1, format_entries(d.entries(msgid="PATH_REFUSED"))
    assert d.stop() == 0, d.describe()


def test_walk_never_holds_a_second_descriptor_of_a_directory(base, daemon):
    """300 directories of one database each, and a descriptor limit that
    leaves room for them once but not twice: every poll's walk finds the
    directories the daemon holds already and opens none again, so no
    database is ever dropped as missing while it is there."""
    top = os.path.join(base, "dirs")
    for i in range(300):
        make_empty_files(os.path.join(top, f"d{i:03d}"), ["x.db"])
    d = daemon.start(config_text(os.path.join(base, "state"), [os.path.join(top, "*", "*.db")]))
    assert d.wait_for_entry(msgid="STARTED")["DATABASES"] == "300"
    held = len(os.listdir(f"/proc/{d.pid}/fd"))
    subprocess.run(["prlimit", f"--pid={d.pid}", f"--nofile={held + 100}:{held + 100}"], check=True)
    d.wait_for_poll_rounds(3, timeout=LONG_WAIT)
    assert not d.entries(msgid="DB_REMOVED"), format_entries(d.entries(msgid="DB_REMOVED")[:5])
    assert not d.entries(message="cannot expand"), format_entries(d.entries(message="cannot expand"))
    assert d.stop() == 0, d.describe()


def test_max_matches_counts_no_file_an_earlier_entry_claims(base, daemon):
    """An earlier entry claims 300 files of a directory; a later entry over
    the same directory with limits.max_matches 10 watches the 5 left to it,
    all of them, and is not over its limit (the claimed ones do not count,
    not even toward what its walk keeps)."""
    d_ = os.path.join(base, "mixed")
    make_empty_files(d_, [f"big{i:03d}.db" for i in range(300)] + [f"own{i}.db" for i in range(5)])
    d = daemon.start(config_text(os.path.join(base, "state"),
                                 [os.path.join(d_, "big*.db"),
                                  {"path": os.path.join(d_, "*.db"), "limits": {"max_matches": 10}}]))
    assert d.wait_for_entry(msgid="STARTED")["DATABASES"] == "305"
    d.wait_for_poll_rounds(3, timeout=LONG_WAIT)
    assert not d.entries(msgid="PATH_REFUSED"), format_entries(d.entries(msgid="PATH_REFUSED"))
    assert not d.entries(msgid="DB_REMOVED"), format_entries(d.entries(msgid="DB_REMOVED")[:5])
    assert all(e["MESSAGE"].startswith("poll: 305 databases") for e in d.entries(message="poll: "))
    assert d.stop() == 0, d.describe()


def test_max_matches_keeps_the_watched_across_a_reload(base, daemon):
    """An entry with max_matches 10 watching 10 files, then 200 more in its
    directory (more than its walk keeps) and a reload of the same
    configuration: the same 10 stay watched."""
    d_ = os.path.join(base, "capped")
    make_empty_files(d_, [f"w{i:02d}.db" for i in range(10)])
    d = daemon.start(config_text(os.path.join(base, "state"),
                                 [{"path": os.path.join(d_, "*.db"), "limits": {"max_matches": 10}}]))
    assert d.wait_for_entry(msgid="STARTED")["DATABASES"] == "10"
    make_empty_files(d_, [f"n{i:03d}.db" for i in range(200)])
    d.wait_for_poll_rounds(2, timeout=LONG_WAIT)
    d.signal(signal.SIGHUP)
    d.wait_for_entry(msgid="RELOADED")
    d.wait_for_poll_rounds(2, timeout=LONG_WAIT)
    assert not d.entries(msgid="DB_REMOVED"), format_entries(d.entries(msgid="DB_REMOVED")[:5])
    assert not d.entries(msgid="DB_ADDED"), format_entries(d.entries(msgid="DB_ADDED")[:5])
    assert d.stop() == 0, d.describe()


def test_directories_swapped_between_polls(base, daemon):
    """Two watched directories swap names between polls (a held directory
    now under the other's path): the next walks find both, no database is
    dropped, no expansion fails."""
    top = os.path.join(base, "swap")
    for name in ("a", "b"):
        make_empty_files(os.path.join(top, name), ["x.db"])
    d = daemon.start(config_text(os.path.join(base, "state"), [os.path.join(top, "*", "x.db")]))
    assert d.wait_for_entry(msgid="STARTED")["DATABASES"] == "2"
    for _ in range(3):
        d.wait_for_poll_rounds(1, timeout=LONG_WAIT)
        os.rename(os.path.join(top, "a"), os.path.join(top, "t"))
        os.rename(os.path.join(top, "b"), os.path.join(top, "a"))
        os.rename(os.path.join(top, "t"), os.path.join(top, "b"))
    d.wait_for_poll_rounds(2, timeout=LONG_WAIT)
    assert not d.entries(message="cannot expand"), format_entries(d.entries(message="cannot expand"))
    assert not d.entries(msgid="DB_REMOVED"), format_entries(d.entries(msgid="DB_REMOVED"))
    assert d.stop() == 0, d.describe()


def test_no_descriptor_for_the_walk_drops_nothing(base, daemon):
    """A descriptor limit that leaves the walk none: the daemon says once
    that it cannot expand the paths, keeps polling the databases it
    watches (deep in their directories), drops none, and says so when the
    limit allows again."""
    top = os.path.join(base, "deep")
    for t in range(6):
        make_empty_files(os.path.join(top, f"t{t}", "a", "b", "c", "d"), ["x.db"])
    d = daemon.start(config_text(os.path.join(base, "state"), [os.path.join(top, "*", "a", "b", "c", "d", "*.db")]))
    assert d.wait_for_entry(msgid="STARTED")["DATABASES"] == "6"
    held = len(os.listdir(f"/proc/{d.pid}/fd"))
    subprocess.run(["prlimit", f"--pid={d.pid}", f"--nofile={held}:{held + 1000}"], check=True)
    # a new database: the paths are walked again (nothing else asks for a walk)
    make_empty_files(os.path.join(top, "t0", "a", "b", "c", "d"), ["new.db"])
    d.wait_for_entry(message="cannot expand the database paths")
    d.wait_for_poll_rounds(2, timeout=LONG_WAIT)
    subprocess.run(["prlimit", f"--pid={d.pid}", f"--nofile={held + 100}:{held + 1000}"], check=True)
    d.wait_for_entry(message="the database paths are expanded again")
    assert len(d.entries(message="cannot expand the database paths")) == 1, format_entries(d.entries())
    assert not d.entries(msgid="DB_REMOVED"), format_entries(d.entries(msgid="DB_REMOVED"))
    assert d.stop() == 0, d.describe()


def test_same_directory_through_a_read_only_and_a_writable_bind_mount(base, daemon):
    """A directory seen through a read-only bind mount (watched, never due)
    and, from a later moment, through a writable one whose entry comes
    first: the database there is vacuumed through the writable mount, not
    refused as read-only (one directory's descriptor is never lent to
    another mount of it)."""
    src, ro, rw = (os.path.join(base, n) for n in ("src", "ro", "rw"))
    for p in (src, ro, rw):
        os.makedirs(p)
    db = os.path.join(src, "x.db")
    helpers.make_db(db, 40)
    mounted = []
    try:
        for argv in (["mount", "--bind", src, ro], ["mount", "-o", "remount,bind,ro", ro]):
            if subprocess.run(argv, capture_output=True).returncode != 0:
                pytest.skip("cannot bind-mount here")
            if argv[1] == "--bind":
                mounted.append(ro)
        d = daemon.start(config_text(os.path.join(base, "state"), [
            os.path.join(rw, "*.db"),
            {"path": os.path.join(ro, "*.db"), "vacuum": {"threshold": "100%", "urgent_threshold": "100%"}}]))
        assert d.wait_for_entry(msgid="STARTED")["DATABASES"] == "1"
        d.wait_for_poll_rounds(1, timeout=LONG_WAIT)
        subprocess.run(["mount", "--bind", src, rw], check=True)
        mounted.append(rw)
        done = d.wait_for_entry(msgid="VACUUM_DONE", DB_PATH=os.path.join(rw, "x.db"), timeout=LONG_WAIT)
        assert float(done["FRAGMENTATION_AFTER"]) == 0.0, done
        assert not d.entries(msgid="JOB_FAILED"), format_entries(d.entries(msgid="JOB_FAILED"))
        assert d.stop() == 0, d.describe()
    finally:
        for p in reversed(mounted):
            subprocess.run(["umount", p], capture_output=True)
            subprocess.run(["umount", "-l", p], capture_output=True)


def test_max_matches_a_file_another_entry_watches_is_a_newcomer(base, daemon):
    """Two entries over one directory of two fragmented databases: the
    first (max_matches 1, its window always open) takes one, the second
    (its window closed) the other, which waits for its window. It never
    moves to the first entry, whose limit is reached: one VACUUM, poll
    after poll."""
    d_ = os.path.join(base, "two")
    os.makedirs(d_)
    for name in ("a.db", "b.db"):
        helpers.make_db(os.path.join(d_, name), 25)  # due, not urgent: the window decides
    d = daemon.start(config_text(os.path.join(base, "state"), [
        {"path": os.path.join(d_, "*.db"), "limits": {"max_matches": 1}, "vacuum": {"window": "always"}},
        {"path": os.path.join(d_, "?.db")}]))
    d.wait_for_entry(msgid="VACUUM_DONE")
    waiting = d.wait_for_entry(message="VACUUM waits for the window")
    d.wait_for_poll_rounds(3, timeout=LONG_WAIT)
    done = d.entries(msgid="VACUUM_DONE")
    assert len(done) == 1 and done[0]["DB_PATH"] != waiting["DB_PATH"], format_entries(d.entries())
    assert d.stop() == 0, d.describe()


def test_glob_with_a_plain_last_name_watches_only_what_is_there(base, daemon):
    """DIR/*/x.db with DIR/a/x.db present and DIR/b/ empty: one database,
    and no made-up DIR/b/x.db coming and going at every poll."""
    top = os.path.join(base, "plainlast")
    make_empty_files(os.path.join(top, "a"), ["x.db"])
    os.makedirs(os.path.join(top, "b"))
    d = daemon.start(config_text(os.path.join(base, "state"), [os.path.join(top, "*", "x.db")]))
    assert d.wait_for_entry(msgid="STARTED")["DATABASES"] == "1"
    d.wait_for_poll_rounds(3, timeout=LONG_WAIT)
    assert not d.entries(msgid="DB_REMOVED") and not d.entries(msgid="DB_ADDED"), format_entries(d.entries())
    assert d.stop() == 0, d.describe()


def lowest_free_fd(pid):
    used = {int(n) for n in os.listdir(f"/proc/{pid}/fd")}
    return next(i for i in range(len(used) + 1) if i not in used)


def test_reload_whose_walk_fails_keeps_the_watched(base, daemon):
    """A reload when one descriptor is left (enough to read the
    configuration, not to walk): the walk fails, says so, and every
    database stays watched under the new configuration."""
    top = os.path.join(base, "deepreload")
    for t in range(4):
        make_empty_files(os.path.join(top, f"t{t}", "a", "b"), ["x.db"])
    cfg = config_text(os.path.join(base, "state"), [os.path.join(top, "*", "a", "b", "*.db")], poll_interval="1h")
    d = daemon.start(cfg)
    assert d.wait_for_entry(msgid="STARTED")["DATABASES"] == "4"
    free = lowest_free_fd(d.pid)
    subprocess.run(["prlimit", f"--pid={d.pid}", f"--nofile={free + 1}:{free + 1000}"], check=True)
    d.signal(signal.SIGHUP)
    reloaded = d.wait_for_entry(msgid="RELOADED")
    assert d.entries(message="cannot expand the database paths"), format_entries(d.entries())
    assert "4 databases watched" in reloaded["MESSAGE"], reloaded["MESSAGE"]
    assert not d.entries(msgid="DB_REMOVED"), format_entries(d.entries(msgid="DB_REMOVED"))
    subprocess.run(["prlimit", f"--pid={d.pid}", f"--nofile={free + 100}:{free + 1000}"], check=True)
    assert d.stop() == 0, d.describe()


def test_capped_entry_holds_only_the_directories_it_watches(base, daemon):
    """Six directories of one database each under an entry with
    max_matches 2: the daemon holds the two directories whose databases
    it watches, not those of the files it refused."""
    top = os.path.join(base, "capdirs")
    for t in range(6):
        make_empty_files(os.path.join(top, f"t{t}"), ["x.db"])
    d = daemon.start(config_text(os.path.join(base, "state"),
                                 [{"path": os.path.join(top, "*", "*.db"), "limits": {"max_matches": 2}}]))
    assert d.wait_for_entry(msgid="STARTED")["DATABASES"] == "2"
    d.wait_for_poll_rounds(2, timeout=LONG_WAIT)
    fds = os.listdir(f"/proc/{d.pid}/fd")
    held = [p for p in (os.readlink(f"/proc/{d.pid}/fd/{n}") for n in fds if os.path.exists(f"/proc/{d.pid}/fd/{n}"))
            if p.startswith(top + "/")]
    assert len(held) == 2, held
    assert d.stop() == 0, d.describe()


def test_refused_links_count_toward_what_a_walk_keeps(base, daemon):
    """A directory of one database and 2,000 symbolic links named *.db,
    under max_matches 1: the links count as matches would, so the walk
    stops early and at most two of them are named."""
    d_ = os.path.join(base, "links")
    make_empty_files(d_, ["real.db"])
    for i in range(2000):
        os.symlink("/etc/passwd", os.path.join(d_, f"l{i:04d}.db"))
    d = daemon.start(config_text(os.path.join(base, "state"),
                                 [{"path": os.path.join(d_, "*.db"), "limits": {"max_matches": 1}}]))
    d.wait_for_entry(msgid="STARTED")
    d.wait_for_poll_rounds(2, timeout=LONG_WAIT)
    named = [e for e in d.entries(msgid="PATH_REFUSED") if "DB_PATH" in e]
    assert len(named) <= 2, len(named)
    assert d.stop() == 0, d.describe()


def dropped_summaries(d):
    """{directory: count} of the daemon's "were dropped" warnings."""
    out = {}
    for e in d.entries(message=" were dropped in the last "):
        m = re.match(r"(\d+) journal entries about databases in (.*) were dropped in the last \d+ s", e["MESSAGE"])
        if m:
            assert e["PRIORITY"] == "4" and "DB_PATH" not in e, e
            out[m.group(2)] = out.get(m.group(2), 0) + int(m.group(1))
    return out


def make_victim(base, tenant, ddir, name="victim.db"):
    """A corrupt, fragmented database of tenant's, renamed into ddir."""
    staging = os.path.join(base, "staging")
    os.makedirs(staging, exist_ok=True)
    tmp = os.path.join(staging, name)
    make_corrupt_db(tmp)
    os.chown(tmp, tenant.uid, tenant.gid)
    final = os.path.join(ddir, name)
    os.rename(tmp, final)
    return final


def journal_socket_id():
    """(device, inode) of journald's socket: another one after a restart."""
    with contextlib.suppress(FileNotFoundError):
        st = os.stat(JOURNAL_SOCKET)
        return st.st_dev, st.st_ino
    return None


def with_journal_retry(scenario, attempts=3):
    """scenario(attempt) again when it failed while journald was replaced.
    Other test sessions on the machine stop the journald they started,
    which may be the one in use here; the daemon's entries of the gap go to
    its stderr, and an entry a test waits for is lost with them."""
    for attempt in range(attempts):
        before = journal_socket_id()
        try:
            return scenario(attempt)
        except ProductBug:
            raise
        except AssertionError:
            if attempt + 1 == attempts or (before is not None and journal_socket_id() == before):
                raise


def test_journal_flood_bounded(base, tenants, daemon):
    """One tenant makes 2000 text files named *.db (each a new database
    that fails); another has a corrupt database. The corruption report is
    in the journal, the flood's entries are bounded per directory and
    window, and the drops are said in a warning."""
    with_journal_retry(lambda attempt: journal_flood(os.path.join(base, str(attempt)), tenants, daemon))


def journal_flood(base, tenants, daemon):
    os.mkdir(base, 0o755)
    per_dir = source_define("src/log.c", "FLOOD_PER_DIR")
    window_s = source_define("src/log.c", "FLOOD_WINDOW_MS") / 1000
    flooder, victim = tenants(), tenants()
    fdir = flooder.mkdir(os.path.join(base, flooder.name))
    vdir = victim.mkdir(os.path.join(base, victim.name))
    cfg = config_text(os.path.join(base, "state"), [os.path.join(fdir, "*.db"), os.path.join(vdir, "*.db")])
    d = daemon.start(cfg, log_level="info")  # debug entries are not budgeted: not asked for here
    t0 = time.monotonic()

    def about(dirname):
        return [e for e in d.entries() if os.path.dirname(e.get("DB_PATH", "")) == dirname]

    flooder.python(MAKE_JUNK, fdir, 2000, "junk")
    # the budget of the flooder's directory is spent (a positive sign the
    # flood is on), then the victim's database comes
    d.wait_for_entries(per_dir, lambda e: os.path.dirname(e.get("DB_PATH", "")) == fdir, timeout=LONG_WAIT)
    bad = make_victim(base, victim, vdir)
    crit = d.wait_for_entry(msgid="CORRUPT", DB_PATH=bad, timeout=LONG_WAIT)
    assert crit["PRIORITY"] == "2", crit

    # the drops are said when the next window begins: that is, at the
    # next budgeted entry; the flooder goes on making a file now and then
    deadline = time.monotonic() + 4 * window_s + LONG_WAIT
    k = 0
    while fdir not in dropped_summaries(d):
        assert time.monotonic() < deadline, "no 'were dropped' warning\n" + format_entries(d.entries()[-30:])
        flooder.python(MAKE_JUNK, fdir, 1, f"late{k:03d}-")
        k += 1
        time.sleep(2)
    elapsed = time.monotonic() - t0
    flood = about(fdir)
    windows = 2 + int(elapsed // window_s)  # every window the daemon's life touched
    assert len(flood) <= per_dir * windows, f"{len(flood)} entries about {fdir} in {elapsed:.0f}s"
    summary = dropped_summaries(d)
    assert summary[fdir] > 0, summary
    # nothing of the victim's directory was dropped
    assert vdir not in summary, summary
    assert len(about(vdir)) >= 2, format_entries(about(vdir))  # DB_ADDED, CORRUPT
    assert d.stop() == 0, d.describe()
    assert helpers.quick_check(bad) != ["ok"]  # the corrupt one was not vacuumed


def test_journal_flood_summary_without_later_entries(base, tenants, daemon):
    with_journal_retry(lambda attempt: quiet_flood(os.path.join(base, str(attempt)), tenants, daemon))


def quiet_flood(base, tenants, daemon):
    os.mkdir(base, 0o755)
    per_dir = source_define("src/log.c", "FLOOD_PER_DIR")
    window_s = source_define("src/log.c", "FLOOD_WINDOW_MS") / 1000
    flooder = tenants()
    fdir = flooder.mkdir(os.path.join(base, flooder.name))
    d = daemon.start(config_text(os.path.join(base, "state"), [os.path.join(fdir, "*.db")]), log_level="info")
    flooder.python(MAKE_JUNK, fdir, per_dir, "junk")  # two entries each: half are dropped
    d.wait_for_entries(per_dir, lambda e: os.path.dirname(e.get("DB_PATH", "")) == fdir, timeout=LONG_WAIT)
    with known_bug():
        wait_until("a 'were dropped' warning after the window", lambda: fdir in dropped_summaries(d),
                   timeout=2.5 * window_s, interval=1, describe=lambda: format_entries(d.entries()[-10:]))


CONF_MAX = 1024 * 1024   # src/conf.h CONF_MAX_FILE_SIZE
PARSE_BOUND = 60         # seconds: bounds a hang, says nothing of speed


def entries_config(state, size):
    """A configuration of many database entries, exactly size bytes."""
    parts = [f"# many entries\npoll_interval: 10s\nstate_dir: {state}\ndatabases:\n"]
    n, i = len(parts[0]), 0
    while True:
        line = f"  - path: /srv/tenant{i:07d}/*.db\n"
        if n + len(line) > size:
            break
        parts.append(line)
        n += len(line)
        i += 1
    text = "".join(parts)
    pad = size - len(text.encode())
    text += "#" * (pad - 1) + "\n" if pad >= 1 else ""  # a lone "\n" when one byte is left
    return text, i


def alias_config(state, k):
    """Aliases fanning out: x-f expands to 1 + k * 101111 nodes, the whole
    document to about 112350 more."""
    return (f"state_dir: {state}\n"
            "x-a: &a [0, 0, 0, 0, 0, 0, 0, 0, 0]\n"
            "x-b: &b [" + ", ".join(["*a"] * 10) + "]\n"
            "x-c: &c [" + ", ".join(["*b"] * 10) + "]\n"
            "x-d: &d [" + ", ".join(["*c"] * 10) + "]\n"
            "x-e: &e [" + ", ".join(["*d"] * 10) + "]\n"
            "x-f: [" + ", ".join(["*e"] * k) + "]\n"
            "databases:\n  - path: /srv/app/db.sqlite\n")


def merge_config(state, n):
    """n database entries, each merging an anchored map of every section:
    63 nodes an entry once expanded (the map, "<<", the 59 nodes of the
    anchored map, path and its value), and 65 for the rest."""
    common = ("x-common: &common\n"
              "  vacuum: {threshold: 20%, urgent_threshold: 40%, window: \"01:00-05:00\", min_interval: 6h,\n"
              "           min_reclaim: 1MiB, disk_space_factor: 2.0, integrity: quick, mode: full,\n"
              "           allow_rowid_change: false}\n"
              "  analyze: {interval: 1d, analysis_limit: 1000, threshold: 500, scale_factor: 10%,\n"
              "            large_table_rows: 1000000}\n"
              "  retry: {busy_timeout: 1s, max_attempts: 5, initial_backoff: 1s, max_backoff: 30s}\n"
              "  checkpoint: {wal_size_limit: 64MiB, wal_size_ratio: 50%, warn_after: 1h}\n"
              "  limits: {job_timeout: 1h, vacuum_timeout_per_gib: 10m, max_matches: 1000}\n")
    return (f"state_dir: {state}\n" + common + "databases:\n"
            + "".join(f"  - {{<<: *common, path: /srv/t{i:06d}/*.db}}\n" for i in range(n)))


def check_config_bounded(path):
    try:
        return subprocess.run([MAINTD_BIN, "--check-config", "-c", path], capture_output=True, text=True,
                              timeout=PARSE_BOUND, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"--check-config of {path} ({os.path.getsize(path)} bytes) still running after "
                             f"{PARSE_BOUND}s") from None


def test_configuration_parser_bounded(tmp_path, daemon):
    state = str(tmp_path / "state")
    # 1 MiB of entries: loads (sqlite-maintd --check-config, the daemon,
    # sqlite-maintctl -c)
    text, n = entries_config(state, CONF_MAX)
    assert len(text.encode()) == CONF_MAX and n > 20000
    big = tmp_path / "entries.yaml"
    big.write_text(text)
    p = check_config_bounded(str(big))
    assert p.returncode == 0 and p.stdout.strip() == "configuration OK", (p.stdout, p.stderr[-2000:])
    db = tmp_path / "a.db"
    helpers.make_fragmented_db(db, rows=20, delete_fraction=0)
    r = helpers.run_ctl("-c", big, "--json", "stats", db, timeout=PARSE_BOUND)
    assert r.rc == 0 and r.one()["status"] == "ok", r.describe()
    d = daemon.start(str(big), wait_ready=False, log_level="info")
    d.wait_ready(timeout=PARSE_BOUND)
    assert d.wait_for_entry(msgid="STARTED")["DATABASES"] == "0"  # globs whose directories do not exist
    assert d.stop() == 0, d.describe()

    # one byte more: refused, saying why
    text, _ = entries_config(state, CONF_MAX + 1)
    over = tmp_path / "over.yaml"
    over.write_text(text)
    assert os.path.getsize(over) == CONF_MAX + 1
    p = check_config_bounded(str(over))
    assert p.returncode == 78 and "configuration too large" in p.stderr and "1 MiB" in p.stderr, p.stderr

    # aliases fanning out to about 921000 nodes: loads
    ok = tmp_path / "aliases.yaml"
    ok.write_text(alias_config(state, 8))
    p = check_config_bounded(str(ok))
    assert p.returncode == 0 and p.stdout.strip() == "configuration OK", (p.stdout, p.stderr[-2000:])
    # about 1022000: refused, saying why
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(alias_config(state, 9))
    p = check_config_bounded(str(bomb))
    assert p.returncode == 78 and "aliases expand to more than 1000000 nodes" in p.stderr, p.stderr[-2000:]
    # every entry merging one anchored map of every section, walked and
    # applied entry by entry: 15871 entries are 999938 nodes, one more is
    # past 1000000
    merged = tmp_path / "merged.yaml"
    merged.write_text(merge_config(state, 15871))
    p = check_config_bounded(str(merged))
    assert p.returncode == 0 and p.stdout.strip() == "configuration OK", (p.stdout, p.stderr[-2000:])
    r = helpers.run_ctl("-c", merged, "--json", "stats", db, timeout=PARSE_BOUND)
    assert r.rc == 0 and r.one()["status"] == "ok", r.describe()
    merged.write_text(merge_config(state, 15872))
    p = check_config_bounded(str(merged))
    assert p.returncode == 78 and "aliases expand to more than 1000000 nodes" in p.stderr, p.stderr[-2000:]

    # a reload refuses the bomb too, and goes on
    d = daemon.start(str(ok))
    ok.write_text(alias_config(state, 9))
    d.signal(signal.SIGHUP)
    e = d.wait_for_entry(M("RELOAD_FAILED", message="aliases expand to more than"), timeout=PARSE_BOUND)
    assert e["PRIORITY"] == "3"
    assert d.stop() == 0, d.describe()




def state_rows(state):
    """{table: sorted paths} of state_dir/state.db, read after the daemon ended."""
    con = sqlite3.connect(f"file:{os.path.join(state, 'state.db')}?mode=ro", uri=True)
    try:
        return {t: sorted(r[0] for r in con.execute(f"SELECT DISTINCT path FROM {t}"))
                for t in ("history", "analyzed")}
    finally:
        con.close()


def test_state_pruned_of_vanished_databases(base, tenants, daemon):
    """The rows of databases whose files are gone leave state.db when the
    daemon prunes it (10 min after start, daily, and at each reload: the
    test reloads); the rows of those still there stay."""
    tenant = tenants()
    tdir = tenant.mkdir(os.path.join(base, tenant.name))
    keep, gone1, gone2 = (tenant_db(tenant, os.path.join(tdir, n), index=True)
                          for n in ("keep.db", "gone1.db", "gone2.db"))
    state = os.path.join(base, "state")
    cfg = config_text(state, [os.path.join(tdir, "*.db")], analyze={"interval": "1s"})
    d = daemon.start(cfg)
    for p in (keep, gone1, gone2):
        d.wait_for_entry(msgid="VACUUM_DONE", DB_PATH=p, timeout=LONG_WAIT)
        d.wait_for_entry(msgid="ANALYZE_DONE", DB_PATH=p, timeout=LONG_WAIT)
    assert d.stop() == 0, d.describe()
    rows = state_rows(state)
    assert rows == {"history": sorted([keep, gone1, gone2]), "analyzed": sorted([keep, gone1, gone2])}, rows

    tenant.run(["rm", gone1, gone2])
    d = daemon.start(cfg)
    d.wait_for_entry(msgid="STARTED", timeout=LONG_WAIT)
    d.signal(signal.SIGHUP)  # a reload prunes the state file
    e = d.wait_for_entry(message="state file: forgot ", timeout=LONG_WAIT)
    assert e["MESSAGE"].startswith("state file: forgot 2 databases whose files are gone"), e
    assert d.stop() == 0, d.describe()
    assert state_rows(state) == {"history": [keep], "analyzed": [keep]}
