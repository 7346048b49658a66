# SPDX-License-Identifier: MIT
"""Kill at any moment: sqlite-maintd and sqlite-maintctl are SIGKILLed at
random moments (a seeded RNG; set MAINTD_CRASH_SEED to replay a run) while
they VACUUM, incrementally vacuum, ANALYZE and check real databases in both
journal modes, and after every kill each database is opened as the
application would open it (a normal connection: hot journal rolled back,
WAL recovered) and must pass PRAGMA integrity_check with exactly the rows
it had. Some kills are aimed, each at the moment the test sees it come
(never after a time tuned to the machine): when the big database is first
opened, when its VACUUM starts building its copy, when its copy-back has
synced the rollback journal and started overwriting the database, when it
is done, when a WAL database's VACUUM is filling the -wal. The rounds go
on until the kills have landed in each of those phases. After half of the
kills the files are checked on a copy and left as the kill left them (hot
journal, partial WAL), so the next run of the daemon or the tool must
recover them itself.

Then: a daemon killed right after a completed VACUUM and ANALYZE, started
again with the same state_dir, does not do them again."""

import json
import os
import random
import shutil
import subprocess
import time


import helpers
from daemon_fixtures import (  # noqa: F401  (fixtures are used by name)
    MSGID, config_text, daemon, format_entries, journald)
from helpers import MAINTCTL_BIN

SEED = int(os.environ.get("MAINTD_CRASH_SEED", "20240611"))
SANITIZED = helpers.sanitized()
KILLS = 20 if SANITIZED else 36          # at least 30 in the plain build
MAX_ROUNDS = KILLS + 40                  # bounds the rounds that end without a kill or miss a phase
ANCHOR_WAIT = 20                         # bounds the wait for an aimed moment, should it never come
MiB = 1024 * 1024

# The phases of the big database's VACUUM the kills must land in (else
# this test proves little); besides, one kill must leave an unfinished
# VACUUM in a -wal.
PHASES = ("before the VACUUM of big.db", "VACUUM of big.db building its copy",
          "VACUUM of big.db copying back (hot journal rolled back)", "after the VACUUM of big.db")

# name, journal mode, pages, fragmentation %, auto_vacuum. big.db is the
# most fragmented, so the daemon and the tool both vacuum it first; it is
# big enough (~30 MB) that its VACUUM takes a few hundred ms.
DATABASES = [
    ("big.db", "delete", 7500, 45, "none"),
    ("wal.db", "wal", 3000, 42, "none"),
    ("incr.db", "delete", 1500, 40, "incremental"),
    ("incr-wal.db", "wal", 1000, 38, "incremental"),
    ("small.db", "delete", 300, 36, "none"),
]
REFRAGMENT_BELOW = 30  # the urgent threshold: below it a round would have nothing to vacuum


def _config(state, paths, **over):
    entries = []
    for (name, _, _, _, av), p in zip(DATABASES, paths):
        entries.append({"path": str(p), "vacuum": {"mode": "incremental"}} if av == "incremental" else str(p))
    kw = dict(poll_interval="200ms", max_concurrent_jobs=1,
              vacuum={"window": "always", "min_interval": 0, "min_reclaim": 0, "integrity": "quick",
                      "threshold": "20%", "urgent_threshold": "30%"},
              analyze={"interval": "1s"},
              retry={"busy_timeout": "50ms", "max_attempts": 8, "initial_backoff": "100ms",
                     "max_backoff": "1s"})
    kw.update(over)
    return config_text(state, entries, **kw)


class Round:
    """One start of the daemon or the tool, and its kill."""

    def __init__(self, n, tool, plan):
        self.n, self.tool, self.plan = n, tool, plan
        self.killed = False
        self.at = None          # seconds after the start
        self.seen = None        # what the frozen process had open
        self.phase = None
        self.notes = []


def _spawn(tool, daemon, cfg, paths, sqltmp, out_path):
    """Start the daemon (as its own process, no waiting for READY: a kill
    may land during startup) or sqlite-maintctl on every database."""
    env = {"SQLITE_TMPDIR": sqltmp}
    if tool == "daemon":
        d = daemon.start(cfg, env=env, log_level="info", wait_ready=False)
        return d.proc, d
    args = {"ctl-vacuum": ["vacuum", "--force"], "ctl-analyze": ["analyze"],
            "ctl-check": ["check", "--full"]}[tool]
    e = dict(os.environ)
    e.update(env)
    with open(out_path, "wb") as out:
        proc = subprocess.Popen([MAINTCTL_BIN, "-c", cfg, "--json"] + args + [str(p) for p in paths],
                                env=e, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    return proc, None


def _wait_anchor(proc, cond, timeout):
    """Poll cond() every ~1 ms until it holds; False if the process ended or
    the time ran out first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if cond():
            return True
        time.sleep(0.001)
    return False


# A journal SQLite ignores: none, or one killed before its header was
# written (empty) or synced (still zero).
NOT_HOT = (None, b"", bytes(8))


def _journal_magic(path):
    """The first 8 bytes of path's rollback journal, None without one."""
    try:
        with open(str(path) + "-journal", "rb") as f:
            return f.read(8)
    except FileNotFoundError:
        return None


def _journal_id(path):
    """(size, mtime) of path's rollback journal, None without one."""
    try:
        st = os.stat(str(path) + "-journal")
    except FileNotFoundError:
        return None
    return st.st_size, st.st_mtime_ns


def _header_freelist(path):
    """The freelist count in the database header, read as bytes (no lock)."""
    with open(path, "rb") as f:
        f.seek(36)
        return int.from_bytes(f.read(4), "big")


def _partial_wal(rounds):
    return [r for r in rounds if any("unfinished VACUUM" in x for x in r.notes)]


def _missing(rounds):
    """What the kills so far have not covered."""
    landed = {r.phase for r in rounds if r.killed}
    out = [p for p in PHASES if p not in landed]
    if not _partial_wal(rounds):
        out.append("an unfinished VACUUM in a -wal")
    return out


def test_sigkill_at_any_moment_loses_nothing(tmp_path, daemon):
    """SIGKILL the daemon or sqlite-maintctl (vacuum --force, analyze,
    check --full) at a random moment, again and again; after each kill every
    database passes integrity_check and holds exactly its rows."""
    rng = random.Random(SEED)
    dbs = tmp_path / "dbs"
    dbs.mkdir()
    sqltmp = str(tmp_path / "sqltmp")
    os.mkdir(sqltmp)
    state = tmp_path / "state"
    check_dir = tmp_path / "check"
    paths = [dbs / d[0] for d in DATABASES]
    big, wal = str(paths[0]), str(paths[1])
    for (name, mode, pages, frag, av), p in zip(DATABASES, paths):
        helpers.make_db(p, frag, mode, pages, index=True, auto_vacuum=av)
    expected, frag_now, free_now = {}, {}, {}
    for (name, _, _, frag, _), p in zip(DATABASES, paths):
        problems, cs, fl, pc = helpers.open_and_verify(p)
        assert problems == ["ok"], (p, problems)
        expected[str(p)], frag_now[str(p)], free_now[str(p)] = cs, 100.0 * fl / pc, fl
    cfg = daemon.config(_config(state, paths), name="chaos.yaml")

    tools = ["daemon"] * 11 + ["ctl-vacuum"] * 5 + ["ctl-analyze"] * 2 + ["ctl-check"] * 2
    plans = ["uniform", "early", "vacuum-start", "journal-start", "check-start", "wal-start", "late"]
    rounds, kills, vacuum_rounds = [], 0, 0
    log = [f"seed {SEED}, {'sanitizer' if SANITIZED else 'plain'} build, {KILLS} kills wanted"]

    while kills < KILLS or _missing(rounds):
        n = len(rounds)
        assert n < MAX_ROUNDS, f"{MAX_ROUNDS} rounds and still {kills} kills, not landed: {_missing(rounds)}\n" \
            + "\n".join(log)
        # Something to do in every round: what the last round vacuumed is
        # fragmented again (new rows in, old rows out: a new checksum).
        for (name, _, _, frag, _), p in zip(DATABASES, paths):
            if frag_now[str(p)] < REFRAGMENT_BELOW:
                helpers.refragment(p, frag)
                problems, expected[str(p)], fl, pc = helpers.open_and_verify(p)
                assert problems == ["ok"], problems
                frag_now[str(p)], free_now[str(p)] = 100.0 * fl / pc, fl
        before = {str(p): helpers.side_file_sizes(p) for p in paths}
        hot_left = {str(p): _journal_magic(p) not in NOT_HOT for p in paths}

        tool = rng.choice(tools)
        if tool in ("daemon", "ctl-vacuum"):
            plan = plans[vacuum_rounds % len(plans)]
            vacuum_rounds += 1
        else:
            plan = "uniform"
        r = Round(n, tool, plan)
        rounds.append(r)

        proc, d = _spawn(tool, daemon, cfg, paths, sqltmp, str(tmp_path / f"ctl-{n}.out"))
        t0 = time.monotonic()
        pid = proc.pid

        def big_open():
            return any(f == big for f, _ in helpers.open_files(pid))

        def temp_open():
            return any(f.startswith(sqltmp + "/") and s > 0 for f, s in helpers.open_files(pid))

        wal_at_start = before[wal].get("-wal", 0)
        journal_at_start = _journal_id(big)
        written_under = []  # big.db's mtime when its new journal was first seen hot

        def copying_back():
            """A new rollback journal of big.db, synced (hot: a kill now leaves
            something to roll back), and big.db written since: the copy-back
            is overwriting the database."""
            magic = _journal_magic(big)
            if _journal_id(big) in (None, journal_at_start) or not magic or not any(magic):
                return False
            mtime = os.stat(big).st_mtime_ns
            if not written_under:
                written_under.append(mtime)
            return mtime != written_under[0]

        if plan == "uniform":
            # a moment anywhere in the run; where it lands is only counted
            span = {"daemon": 1.6, "ctl-vacuum": 1.0, "ctl-analyze": 0.08}.get(tool, 0.25)
            time.sleep(rng.uniform(0, span))
        elif plan == "early":
            # startup, the first poll, the check before the VACUUM
            time.sleep(rng.uniform(0, 0.03))
        else:
            cond = {
                # big.db is open: statistics, the integrity check before the VACUUM
                "check-start": big_open,
                # the VACUUM of big.db has started writing its temp copy
                "vacuum-start": lambda: temp_open() and big_open(),
                # its copy-back is overwriting big.db under a hot journal (not
                # one an earlier kill may have left)
                "journal-start": copying_back,
                # the VACUUM of wal.db is appending the new database to the -wal
                "wal-start": lambda: helpers.side_file_sizes(wal).get("-wal", 0) > wal_at_start + 256 * 1024,
                # the VACUUM of big.db is committed: its journal is gone, its
                # header lists no free page
                "late": lambda: _journal_id(big) is None and _header_freelist(big) == 0,
            }[plan]
            hit = _wait_anchor(proc, cond, ANCHOR_WAIT)
            r.notes.append("anchor seen" if hit else "anchor missed")
            if hit and plan == "late":
                # anywhere after it: the VACUUMs of the others, ANALYZE, idle
                time.sleep(rng.uniform(0, 1.0))

        def look():
            files = helpers.open_files(pid)
            return {
                "open": {f for f, _ in files},
                "temp": [(f, s) for f, s in files if f.startswith(sqltmp + "/")],
                "sides": {str(p): helpers.side_file_sizes(p) for p in paths},
                "journal": _journal_id(big),
            }

        r.at = time.monotonic() - t0
        r.killed, r.seen = helpers.freeze_and_kill(proc, look)
        if d is not None:
            d.close()
        if not r.killed:
            rc = proc.returncode
            # the daemon never ends on its own; the tool may finish first
            assert tool != "daemon", f"the daemon exited by itself (status {rc})\n" + d.describe()
            out = open(tmp_path / f"ctl-{n}.out").read()
            # check never writes, so it cannot read a database whose hot
            # journal an earlier kill left: it says so (exit 1), and only that
            failed = {o["path"]: o["status"] for o in map(json.loads, out.splitlines()) if o["status"] != "ok"}
            left_hot = {str(p) for p in paths if hot_left.get(str(p))}
            assert rc == 0 or (tool == "ctl-check" and rc == 1 and failed and
                               all(s == "hot_journal" and p in left_hot for p, s in failed.items())), \
                f"sqlite-maintctl {tool} failed (status {rc}):\n{out}"
            r.phase = "finished before the kill"
        else:
            kills += 1

        # After the kill: the files as the kill left them. Every other
        # round they are checked on a copy and left alone, so the next
        # daemon or tool run finds the hot journal or partial WAL itself.
        leave = n % 2 == 1
        after, hot = {}, {}
        if check_dir.exists():
            shutil.rmtree(check_dir)
        check_dir.mkdir()
        for (name, mode, _, frag, _), p in zip(DATABASES, paths):
            target = str(p)
            sides = helpers.side_file_sizes(p)
            hot[str(p)] = _journal_magic(p) not in NOT_HOT
            if hot[str(p)]:
                r.notes.append(f"{name}: hot journal")
            if leave:
                target = str(check_dir / name)
                shutil.copyfile(p, target)
                for s in sides:  # not -shm: a lone opener rebuilds it from the -wal
                    shutil.copyfile(str(p) + s, target + s)
            problems, cs, fl, pc = helpers.open_and_verify(target)
            ctx = (f"round {n} ({tool}, plan {plan}, killed {r.at:.3f}s after start, "
                   f"side files at the kill {sides}, checked {'a copy' if leave else 'in place'})")
            assert problems == ["ok"], f"{p}: integrity_check after the kill: {problems[:10]}\n{ctx}\n" + \
                "\n".join(log)
            assert cs == expected[str(p)], f"{p}: rows changed by the kill\n{ctx}\n" + "\n".join(log)
            # A hot journal is rolled back and deleted by that open. One
            # left is one SQLite ignores by design: killed before its first
            # sync, its header is still zero, and the database file was not
            # written yet.
            left = _journal_magic(target)
            assert left in NOT_HOT, f"{target}: a hot journal was not rolled back\n{ctx}"
            after[str(p)] = (fl, pc, sides)
            if 0 < fl < free_now[str(p)] and name.startswith("incr"):
                r.notes.append(f"{name}: incremental vacuum stopped part way, {fl} of {free_now[str(p)]} "
                               "free pages left")
            frag_now[str(p)], free_now[str(p)] = 100.0 * fl / pc, fl

        if r.killed:
            big_fl, _, big_sides = after[big]
            wal_fl, _, wal_sides = after[wal]
            if tool in ("ctl-analyze", "ctl-check"):
                r.phase = tool[4:]
            elif big_fl == 0:
                r.phase = "after the VACUUM of big.db"
            else:
                building = big in r.seen["open"] and any(s > 0 for _, s in r.seen["temp"])
                journal = big_sides.get("-journal", 0) if r.seen["journal"] != journal_at_start else 0
                synced = "hot journal rolled back" if hot[big] else "journal not synced yet"
                if journal and (building or journal > MiB):
                    r.phase = f"VACUUM of big.db copying back ({synced})"
                elif journal:
                    r.phase = f"a small write to big.db, ANALYZE ({synced})"
                elif building:
                    r.phase = "VACUUM of big.db building its copy"
                else:
                    r.phase = "before the VACUUM of big.db"
                    if big in r.seen["open"]:
                        r.notes.append("big.db open: statistics or the check before the VACUUM")
            if wal_fl > 0 and wal_sides.get("-wal", 0) > wal_at_start + 64 * 1024:
                r.notes.append(f"wal.db: {wal_sides['-wal']} bytes of -wal from an unfinished VACUUM discarded")
            for (name, _, _, _, _), p in zip(DATABASES, paths):
                if any(after[str(p)][2].values()):
                    r.notes.append(f"{name}: side files {after[str(p)][2]}")
        if r.killed:
            log.append(f"#{n:02d} {tool:11s} {plan:13s} kill at {r.at:5.3f}s: {r.phase}"
                       + (f" [{'; '.join(r.notes)}]" if r.notes else "")
                       + (" (left for the next run)" if leave else ""))
        else:
            log.append(f"#{n:02d} {tool:11s} {plan:13s} finished by itself before the kill")

    # The last round may have left a hot journal: open every file in place.
    for (name, _, _, _, _), p in zip(DATABASES, paths):
        problems, cs, fl, pc = helpers.open_and_verify(p)
        assert problems == ["ok"] and cs == expected[str(p)], f"{p} at the end: {problems[:5]}\n" + "\n".join(log)
    st = helpers.open_and_verify(state / "state.db")[0]
    assert st == ["ok"], f"the daemon's state.db: {st}"

    phases = {}
    for r in rounds:
        if r.killed:
            phases[r.phase] = phases.get(r.phase, 0) + 1
    log.append(f"{kills} kills in {len(rounds)} rounds; by phase: {phases}")
    log.append("kills after which there was a hot journal: {}, an unfinished VACUUM in a -wal: {}, "
               "an incremental vacuum part way: {}".format(*(sum(any(k in x for x in r.notes) for r in rounds)
                                             for k in ("hot journal", "unfinished VACUUM", "part way"))))
    print("\n".join(log))
    # The kills really landed where they matter (else this test proves little).
    for phase in PHASES:
        assert phases.get(phase, 0) >= 1, f"no kill landed {phase!r}\n" + "\n".join(log)
    assert _partial_wal(rounds), "no kill left an unfinished VACUUM in a -wal\n" + "\n".join(log)


def test_restart_after_completed_work_does_not_repeat_it(tmp_path, daemon):
    """A daemon killed (SIGKILL: no clean shutdown) right after a VACUUM
    and an ANALYZE completed, started again with the same state_dir and
    min_interval 1h / analyze interval 1h, sees the databases fragmented
    again yet does neither again; a database it never saw is maintained as
    usual, so the second daemon is not simply idle."""
    dbs = tmp_path / "dbs"
    dbs.mkdir()
    state = tmp_path / "state"
    a, w, fresh = dbs / "a.db", dbs / "w.db", dbs / "fresh.db"
    helpers.make_db(a, 35, "delete", 1200, index=True)
    helpers.make_db(w, 35, "wal", 800, index=True)
    cs = {str(p): helpers.checksum(p) for p in (a, w)}
    cfg = daemon.config(config_text(state, [dbs / "*.db"], poll_interval="200ms",
                                    vacuum={"window": "always", "min_interval": "1h", "min_reclaim": 0},
                                    analyze={"interval": "1h"}), name="restart.yaml")

    first = daemon.start(cfg)
    for p in (a, w):
        first.wait_for_entry(msgid="VACUUM_DONE", DB_PATH=p)
        first.wait_for_entry(msgid="ANALYZE_DONE", DB_PATH=p)
    killed, _ = helpers.freeze_and_kill(first.proc)
    assert killed, first.describe()
    for p in (a, w):
        problems, got, fl, pc = helpers.open_and_verify(p)
        assert problems == ["ok"] and got == cs[str(p)], (p, problems)
        assert fl == 0, f"{p}: VACUUM_DONE was logged, yet {fl} pages are free"

    # fragmented again: without its history the daemon would vacuum both now
    for p in (a, w):
        helpers.refragment(p, 35)
    freelists = {str(p): helpers.freelist_count(p) for p in (a, w)}
    helpers.make_db(str(fresh) + ".making", 35, "delete", 600, index=True)
    os.rename(str(fresh) + ".making", fresh)

    second = daemon.start(cfg)
    for p in (a, w):
        held = second.wait_for_entry(msgid="SCHEDULED", DB_PATH=p, REASON="min-interval")
        assert float(held["FRAGMENTATION_BEFORE"]) >= 30, held
    second.wait_for_entry(msgid="VACUUM_DONE", DB_PATH=fresh)
    second.wait_for_entry(msgid="ANALYZE_DONE", DB_PATH=fresh)
    second.wait_for_polls([a, w], 5)
    es = second.entries()
    for p in (a, w):
        again = [e for e in es if e.get("DB_PATH") == str(p) and e.get("MESSAGE_ID") in (
            MSGID["VACUUM_DONE"], MSGID["ANALYZE_DONE"])]
        assert not again, f"{p}: finished work done again after the restart\n" + format_entries(es)
        # a deep scan the first daemon never got to is new work, not work repeated
        sched = [e for e in es if e.get("DB_PATH") == str(p) and e.get("MESSAGE_ID") == MSGID["SCHEDULED"]
                 and e.get("REASON") in ("urgent", "threshold", "timer") and e.get("OPERATION") != "deep_scan"]
        assert not sched, f"{p}: work scheduled again after the restart\n" + format_entries(es)
        assert helpers.freelist_count(p) == freelists[str(p)], f"{p} was vacuumed again"
    assert second.stop() == 0, second.describe()

