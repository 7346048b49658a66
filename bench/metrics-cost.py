#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""What the metrics cost at scale: the Prometheus text of N databases (its
bytes and series), the daemon's CPU for one `sqlite-maintctl metrics`
scrape and the client's wall time, beside a `--once` poll round of the same
databases measured in the same run (the reference).

    bench/build.sh /tmp/bench-build-metrics
    /usr/bin/python3 bench/metrics-cost.py --build /tmp/bench-build-metrics            # N = 10,000
    /usr/bin/python3 bench/metrics-cost.py --build /tmp/bench-build-metrics --quick    # N = 1,000
"""
import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

BY = "bench/metrics-cost.py"


def cpu_s(pid):
    """The process's user+system CPU (s), all its threads, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def status_of(sock):
    """The last STATUS= the daemon sent, or None."""
    last = None
    sock.setblocking(False)
    while True:
        try:
            msg = sock.recv(65536).decode("utf-8", "replace")
        except BlockingIOError:
            return last
        for line in msg.split("\n"):
            if line.startswith("STATUS="):
                last = line[7:]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=10000)
    ap.add_argument("--quick", action="store_true", help="N = 1,000, 3 scrapes")
    ap.add_argument("--scrapes", type=int, default=10)
    ap.add_argument("--build", default="/tmp/bench-build-metrics")
    ap.add_argument("--json-out")
    a = ap.parse_args()
    if a.quick:
        a.count, a.scrapes = 1000, 3
    daemon = os.path.join(a.build, "src", "sqlite-maintd")
    ctl = os.path.join(a.build, "src", "sqlite-maintctl")
    for p in (daemon, ctl):
        if not os.access(p, os.X_OK):
            sys.exit(f"{p} is not built: run bench/build.sh {a.build}")
    root = tempfile.mkdtemp(prefix="maintd-metrics-", dir="/var/tmp")
    proc = None
    try:
        dbs = os.path.join(root, "dbs")
        os.mkdir(dbs)
        tmpl = os.path.join(root, "t.db")
        con = sqlite3.connect(tmpl)
        con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, x)")
        con.commit()
        con.close()
        for i in range(a.count):
            shutil.copyfile(tmpl, os.path.join(dbs, f"db{i:06d}.db"))
        state = os.path.join(root, "state")
        conf = os.path.join(root, "c.yaml")
        benchlib.write_watch_config(conf, os.path.join(dbs, "*.db"), state, "10s", BY)
        sock_path = os.path.join(root, "ctl.sock")
        prom = os.path.join(root, "m.prom")
        with open(conf, "a") as f:
            f.write(f"control_socket: {sock_path}\nmetrics_file: {prom}\n")
        os.makedirs(state, exist_ok=True)
        npath, nsock = benchlib.notify_socket(root, "metrics")
        env = dict(os.environ, NOTIFY_SOCKET=npath)
        proc = subprocess.Popen([daemon, "-c", conf, "--log-target=console", "--log-level=notice"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # the first round done: its figures in STATUS=, the file written after it
        deadline = time.monotonic() + 600
        round_done = False
        while time.monotonic() < deadline:
            st = status_of(nsock)
            round_done |= bool(st and f"last poll: {a.count} read" in st)
            if round_done and os.path.exists(prom):
                break
            time.sleep(0.2)
        else:
            sys.exit("the daemon's first round did not end in 600 s")
        time.sleep(1)  # its file written after the round; not a measurement
        size = os.path.getsize(prom)
        with open(prom) as f:
            series = sum(1 for line in f if line and not line.startswith("#"))
        # the reference: one --once round of the same databases (a process
        # of its own: its CPU from wait4, start and end included)
        once = []
        for _ in range(3):
            _, ut, stime, _, rc, _ = benchlib.run_timed([daemon, "-c", conf, "--once", "--dry-run",
                                                          "--log-target=console", "--log-level=notice"],
                                                         check=False, stdout=False)
            assert rc == 0
            once.append(ut + stime)
        once.sort()
        round_cpu = once[1]
        walls, cpus = [], []
        for _ in range(a.scrapes):
            c0 = cpu_s(proc.pid)
            t0 = time.monotonic()
            out = subprocess.run([ctl, "--socket", sock_path, "metrics"], capture_output=True, timeout=600)
            walls.append(time.monotonic() - t0)
            cpus.append(cpu_s(proc.pid) - c0)
            assert out.returncode == 0, out.stderr
        walls.sort()
        cpus.sort()
        res = {
            "binary": benchlib.binary_revision(daemon, benchlib.git_revision(os.path.dirname(os.path.dirname(
                os.path.abspath(__file__))))),
            "databases": a.count, "metrics_file_bytes": size, "series": series,
            "bytes_per_database": round(size / a.count, 1),
            "scrape_wall_s_median": round(walls[len(walls) // 2], 4),
            "scrape_daemon_cpu_s_median": round(cpus[len(cpus) // 2], 4),
            "once_round_cpu_s_median": round(round_cpu, 4),
            "scrape_over_once_round": round(cpus[len(cpus) // 2] / round_cpu, 3) if round_cpu else None,
            "note": "daemon CPU from /proc/PID/stat in clock ticks (10 ms): medians over the scrapes",
        }
        print(json.dumps(res, indent=1))
        if a.json_out:
            with open(a.json_out, "w") as f:
                json.dump(res, f, indent=1)
    finally:
        if proc and proc.poll() is None:
            proc.terminate()
            proc.wait(60)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
