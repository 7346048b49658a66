# SPDX-License-Identifier: MIT
"""What the benchmarks share: the binary they measured, timed runs, the page cache."""
import os
import subprocess


def git_revision(root):
    """HEAD of the tree at root, marked when it has uncommitted changes."""
    try:
        rev = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return rev + (" with uncommitted changes" if dirty else "")


def binary_revision(binary, fallback):
    """What the binary was built from: BUILD/REVISION written by
    bench/build.sh, else the working tree now (which may have moved on)."""
    try:
        with open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(binary))), "REVISION")) as f:
            return f.read().strip()
    except OSError:
        return fallback + " (the working tree at the end of the run; no REVISION file beside the binary)"


def notify_socket(workdir, tag):
    """A NOTIFY_SOCKET of our own in workdir (the daemon's sd_notify
    datagrams: READY=1, STATUS=...): (its path, the bound socket)."""
    import socket

    path = os.path.join(workdir, f"notify-{tag}.sock")
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    return path, sock


def loadavg():
    """The 1, 5 and 15 minute load averages, as /proc/loadavg gives them."""
    with open("/proc/loadavg") as f:
        return f.read().split()[:3]


def run_timed(argv, timeout=3600, rss=False, check=True, stdout=True, wrapper=None, text_from="stdout"):
    """Run argv; (wall s, user s, sys s, max RSS KiB, exit status, text):
    text is its stdout, or with text_from="stderr" its stderr.

    CPU times come from wait4(): the process and every child it waited for
    (a job process is the child of sqlite-maintctl or sqlite-maintd, which
    reaps it, so its time is counted). With rss, argv runs under
    /usr/bin/time, whose %M is the peak RSS of the largest process of the
    tree (ru_maxrss of a waited-for child counts its own children); the
    child's own ru_maxrss, seen from here, would count this Python
    process's memory, which the child has until exec(). Without rss the
    RSS is 0. wrapper: another prefix for argv (valgrind), instead of
    /usr/bin/time."""
    import tempfile
    import time

    out = tempfile.TemporaryFile()
    err = tempfile.TemporaryFile()
    rssfile = tempfile.NamedTemporaryFile(prefix="bench-rss-") if rss else None
    if wrapper is None:
        wrapper = ["/usr/bin/time", "-f", "%M", "-o", rssfile.name] if rss else []
    t = time.monotonic()
    p = subprocess.Popen(list(wrapper) + list(argv), stdin=subprocess.DEVNULL,
                         stdout=out if stdout else subprocess.DEVNULL, stderr=err)
    deadline = t + timeout
    while True:
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            p.kill()
            pid, status, ru = os.wait4(p.pid, 0)
            break
        time.sleep(0.0005)
    wall = time.monotonic() - t
    p.returncode = os.waitstatus_to_exitcode(status)
    out.seek(0)
    err.seek(0)
    text = out.read().decode("utf-8", "replace")
    etext = err.read().decode("utf-8", "replace")
    maxrss = 0
    if rssfile is not None:
        try:
            maxrss = int(open(rssfile.name).read().split()[-1])
        except (ValueError, IndexError):
            maxrss = 0
        rssfile.close()
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit status {p.returncode}: {etext[-500:]}")
    return wall, ru.ru_utime, ru.ru_stime, maxrss, p.returncode, etext if text_from == "stderr" else text


def drop_caches():
    """sync; echo 3 > /proc/sys/vm/drop_caches (root only): the guest's
    page cache, not the host's. False when it cannot."""
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def med_range(values, scale=1.0, digits=1):
    """{"median", "min", "max"} of values times scale, rounded."""
    import statistics

    v = [x * scale for x in values]
    return {"median": round(statistics.median(v), digits), "min": round(min(v), digits),
            "max": round(max(v), digits)}


def make_template(dirname, layout, seed, name=None):
    """A small database (20 rows, a few 4 KiB pages, no free pages) as
    dirname/template-NAME.db. For "wal", its rows stay in the -wal
    (autocheckpoint off) while the connection is open: (path, connection)
    is returned and the caller closes it after copying; else (path, None)."""
    import random
    import sqlite3

    rng = random.Random(seed)
    path = os.path.join(dirname, f"template-{name or layout}.db")
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA page_size=4096")
    if layout == "wal":
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA wal_autocheckpoint=0")
    con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, v BLOB)")
    con.execute("CREATE INDEX t_name ON t(name)")
    con.execute("BEGIN")
    con.executemany("INSERT INTO t(name, v) VALUES(?, ?)",
                    [(f"n{rng.randrange(10**6)}", rng.randbytes(200)) for _ in range(20)])
    con.execute("COMMIT")
    if layout == "wal":
        assert os.path.getsize(path + "-wal") > 0
        return path, con
    con.close()
    return path, None


def copy_set(template, wal, dest, n):
    """n copies of template (and of its -wal) as dest/dbNNNNN.db; without
    wal, any -wal and -shm of those names removed."""
    import shutil

    os.makedirs(dest, exist_ok=True)
    for i in range(n):
        p = os.path.join(dest, f"db{i:05d}.db")
        shutil.copyfile(template, p)
        if wal:
            shutil.copyfile(template + "-wal", p + "-wal")
        else:
            for side in ("-wal", "-shm"):
                try:
                    os.unlink(p + side)
                except FileNotFoundError:
                    pass


def write_watch_config(path, glob, state_dir, poll_interval, by):
    """A configuration watching glob with nothing due (thresholds not
    reached by the benchmarks' databases, ANALYZE and deep scans off): what
    the daemon costs when it only looks. by: the script, for the header."""
    with open(path, "w") as f:
        f.write(f"""# written by {by}
poll_interval: {poll_interval}
max_concurrent_jobs: 1
state_dir: {state_dir}
defaults:
  vacuum:
    threshold: 20%
    urgent_threshold: 30%
    window: always
  analyze:
    interval: never
  deep_scan:
    interval: never
databases:
  - path: {glob}
""")


def finish(result, json_out, loads=True):
    """The load averages of the run (when recorded) and the JSON output."""
    import json

    if loads:
        print(f"load average: {' '.join(result['loadavg_at_start'])} at the start, "
              f"{' '.join(result['loadavg_at_end'])} at the end")
    if json_out:
        with open(json_out, "w") as f:
            json.dump(result, f, indent=2)
        print(f"JSON: {json_out}")
