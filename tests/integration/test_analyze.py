# SPDX-License-Identifier: MIT
"""ANALYZE only where statistics are missing or stale, with real databases
and a real daemon (and sqlite-maintctl analyze).

The case behind it: a 200,000-row table whose two-column index holds one
value for every row; the application ran a full ANALYZE (sqlite_stat1 says
"200000 200000 200000"); a sampled ANALYZE (analysis_limit 1000) writes
something like "107944 1001 1001" and the planner then walks the whole
useless index. The tests show that harm on a copy, then that the daemon's
timer leaves such statistics alone, analyzes exactly the tables that are
stale, never re-reads an unchanged database, samples only large tables and
remembers the exact count behind its own sample.

What a user would check: sqlite_stat1 byte for byte, EXPLAIN QUERY PLAN,
the files' sha256, the journal's ANALYZE_DONE entries (TABLES_ANALYZED,
TABLES_SKIPPED, priority), the ctl's JSON and exit status. No figure here
depends on the machine's speed, and "nothing happened" is only concluded
after a positive sign that the daemon looked (an entry that came later)."""

import os
import re
import shutil
import sqlite3
import subprocess
import time

import pytest

from daemon_fixtures import (  # noqa: F401  (fixtures are used by name)
    M, MSGID, config_text, daemon, format_entries, journald)
from helpers import PYTHON, AppProcess, header_field, LockHolder, run_ctl, sha256, snapshot

# Every wait is bounded by this: a hang must fail, a slow machine must not.
SLOW = 90

# The application's query: a few rows by a range of c. Its good plan is the
# selective index on c; with sampled statistics the planner prefers the
# equality on (a, b), an index holding one value for every row.
APP_QUERY = "SELECT count(*), sum(length(payload)) FROM events WHERE a = 1 AND b = 1 AND c BETWEEN ? AND ?"
APP_ARGS = (1000, 1010)
EVENTS_ROWS = 200_000


# --------------------------------------------------------------------------
# Databases and what a user would ask SQLite about them

def _reader(path):
    """A connection that never writes, locks or creates a file (immutable):
    the tests look while the daemon works, and an ordinary open of a WAL
    database would create and remove a -wal and -shm under its eyes. Only
    for databases with no -wal and no writer at the moment."""
    return sqlite3.connect(f"file:{path}?immutable=1", uri=True)


def stat1(path, table=None):
    """Every row of sqlite_stat1 (tbl, idx, stat), sorted; [] when there is
    no sqlite_stat1."""
    con = _reader(path)
    try:
        if not con.execute("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1'").fetchall():
            return []
        rows = con.execute("SELECT tbl, idx, stat FROM sqlite_stat1").fetchall()
    finally:
        con.close()
    return sorted((r for r in rows if table is None or r[0] == table), key=repr)


def stat1_count(path, table):
    """The row count the statistics of table describe (the first number of
    its sqlite_stat1 rows, the largest when they differ), None when none."""
    rows = stat1(path, table)
    return max(int(s.split()[0]) for _, _, s in rows) if rows else None


def row_count(path, table):
    con = _reader(path)
    try:
        return con.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
    finally:
        con.close()


def query_plan(path, sql=APP_QUERY, args=APP_ARGS):
    """EXPLAIN QUERY PLAN of sql on a fresh connection (which loads the
    statistics as the application's next connection would)."""
    con = _reader(path)
    try:
        return [r[3] for r in con.execute("EXPLAIN QUERY PLAN " + sql, args)]
    finally:
        con.close()


def query_work(path, sql=APP_QUERY, args=APP_ARGS):
    """(result, VDBE instructions / 100) of running sql once: how much work
    the plan makes SQLite do, counted rather than timed."""
    con = _reader(path)
    steps = [0]

    def tick():
        steps[0] += 1
        return 0

    try:
        con.set_progress_handler(tick, 100)
        result = con.execute(sql, args).fetchall()
    finally:
        con.close()
    return result, steps[0]


def change_counter(path):
    """The file change counter (header offset 24): every write transaction
    that commits to the main file increments it."""
    return header_field(str(path), 24)


def app_run(path, *statements, mode=None):
    """An application's connection: runs the statements, closes."""
    con = sqlite3.connect(str(path), isolation_level=None)
    try:
        if mode:
            assert con.execute(f"PRAGMA journal_mode={mode}").fetchone()[0] == mode.lower()
        for s in statements:
            if isinstance(s, tuple):
                con.executemany(*s)
            else:
                con.execute(s).fetchall()
    finally:
        con.close()


def make_events_db(path, mode="delete", rows=EVENTS_ROWS):
    """The harmful case: events(a, b) is 1 everywhere, c is unique; index
    events_ab on (a, b), events_c on c; the application's full ANALYZE."""
    app_run(path,
            "CREATE TABLE events(id INTEGER PRIMARY KEY, a INT, b INT, c INT, payload TEXT)",
            "BEGIN",
            ("INSERT INTO events(a, b, c, payload) VALUES(1, 1, ?, ?)",
             ((i, f"payload {i:08d}") for i in range(rows))),
            "COMMIT",
            "CREATE INDEX events_ab ON events(a, b)",
            "CREATE INDEX events_c ON events(c)",
            "ANALYZE",
            mode=mode)
    for s in ("-journal", "-wal", "-shm"):
        assert not os.path.exists(str(path) + s), f"{path}{s} left behind"


def files_present(path):
    return {s: os.path.exists(str(path) + s) for s in ("-journal", "-wal", "-shm")}


# --------------------------------------------------------------------------
# The journal

def analyze_entries(d, path):
    return d.entries(msgid="ANALYZE_DONE", DB_PATH=path)


def is_job(e):
    """An ANALYZE job's entry: it looked at the tables (TABLES_SKIPPED)."""
    return e.get("MESSAGE_ID") == MSGID["ANALYZE_DONE"] and "TABLES_SKIPPED" in e


def is_unchanged_shortcut(e):
    """The timer came, the files were as the last ANALYZE left them, the
    database was not even opened."""
    return (e.get("MESSAGE_ID") == MSGID["ANALYZE_DONE"] and e.get("REASON") == "unchanged"
            and "TABLES_SKIPPED" not in e and "unchanged since the last one" in e.get("MESSAGE", ""))


def after(t_us):
    def pred(e):
        return int(e.get("__REALTIME_TIMESTAMP", "0")) >= t_us
    return pred


def names(field):
    """"a, b" -> ["a", "b"]; "" -> []."""
    return [n for n in (field or "").split(", ") if n]


def skipped(e):
    """TABLES_SKIPPED "unchanged: a, b; no rows: c" -> {"unchanged": [a, b], "no rows": [c]}."""
    out = {}
    for part in (e.get("TABLES_SKIPPED") or "").split("; "):
        if part:
            why, _, tables = part.partition(": ")
            out[why] = names(tables)
    return out


def wait(d, pred, count=1, timeout=SLOW):
    try:
        return d.wait_for_entries(count, pred, timeout=timeout)
    except AssertionError as e:
        raise AssertionError(f"{e}\n{d.describe()}") from None


def for_db(path, *preds):
    """A predicate: an ANALYZE_DONE entry of path matching every one of preds."""
    m = M("ANALYZE_DONE", DB_PATH=path)

    def pred(e):
        return m(e) and all(p(e) for p in preds)
    pred.__name__ = f"ANALYZE_DONE of {path} matching {[getattr(p, '__name__', p) for p in preds]}"
    return pred


def now_us():
    return time.time_ns() // 1000


def _dirs(tmp_path):
    dbs = tmp_path / "dbs"
    dbs.mkdir(exist_ok=True)
    return dbs, tmp_path / "state"


# --------------------------------------------------------------------------
# 1. The harmful case: the application's full statistics stay in force

@pytest.mark.parametrize("mode", ["delete", "wal"])
def test_full_statistics_of_a_skewed_index_survive_the_timer(tmp_path, daemon, mode):
    dbs, state = _dirs(tmp_path)
    db = dbs / "app.db"
    make_events_db(db, mode=mode)
    good_stat = stat1(db)
    assert ("events", "events_ab", f"{EVENTS_ROWS} {EVENTS_ROWS} {EVENTS_ROWS}") in good_stat, good_stat
    good_plan = query_plan(db)
    assert any("USING INDEX events_c" in p for p in good_plan), good_plan
    good_result, good_work = query_work(db)

    # The old behaviour, on a copy: a sampled ANALYZE really is harmful.
    copy = tmp_path / "copy.db"
    shutil.copyfile(db, copy)
    app_run(copy, "PRAGMA analysis_limit=1000", "ANALYZE")
    bad_stat = stat1(copy)
    assert bad_stat != good_stat
    ab = [s for _, i, s in bad_stat if i == "events_ab"][0]
    assert ab.split()[1:] != [str(EVENTS_ROWS)] * 2, ab   # "N 1001 1001"-like: a sample
    bad_plan = query_plan(copy)
    assert bad_plan != good_plan and any("USING INDEX events_ab" in p for p in bad_plan), bad_plan
    bad_result, bad_work = query_work(copy)
    assert bad_result == good_result
    # the plan over the whole (a, b) index does at least a hundred times the work
    assert bad_work >= 100 * max(good_work, 1), (good_work, bad_work)

    digest = snapshot([db])
    d = daemon.start(config_text(state, [db], analyze={"interval": "1s"}))

    # The timer's first job looks at the table and leaves it alone...
    first = wait(d, for_db(db, is_job))[0]
    assert first["PRIORITY"] == "7", first
    assert first["REASON"] == "unchanged", first
    assert first["TABLES_ANALYZED"] == "", first
    assert skipped(first) == {"unchanged": ["events"]}, first
    # ...and the timer keeps coming: the files are unchanged, not reopened.
    wait(d, for_db(db, is_unchanged_shortcut), count=3)
    assert snapshot([db]) == digest, "the database or a side file changed"
    assert stat1(db) == good_stat
    assert query_plan(db) == good_plan

    # The application goes on writing: 1000 more rows (0.5%), far below the
    # threshold. The next timer reads the database again and still finds
    # the statistics current.
    t = now_us()
    app_run(db, "BEGIN",
            ("INSERT INTO events(a, b, c, payload) VALUES(1, 1, ?, 'more')",
             ((EVENTS_ROWS + i,) for i in range(1000))),
            "COMMIT")
    assert not any(files_present(db).values()), files_present(db)
    look = wait(d, for_db(db, is_job, after(t)))[0]
    assert skipped(look) == {"unchanged": ["events"]}, look
    assert look["PRIORITY"] == "7" and look["TABLES_ANALYZED"] == "", look
    wait(d, for_db(db, is_unchanged_shortcut, after(int(look["__REALTIME_TIMESTAMP"]) + 1)))
    assert stat1(db) == good_stat
    assert query_plan(db) == good_plan

    es = analyze_entries(d, db)
    assert not [e for e in es if e["PRIORITY"] != "7"], format_entries(es)
    assert d.stop() == 0, d.describe()
    assert stat1(db) == good_stat


# --------------------------------------------------------------------------
# 2. One job: the stale tables analyzed, the others left alone

def test_only_stale_or_missing_statistics_are_rewritten(tmp_path, daemon):
    dbs, state = _dirs(tmp_path)
    db = dbs / "shop.db"
    app_run(db,
            "CREATE TABLE grown(id INTEGER PRIMARY KEY, k INT, v TEXT)",
            "CREATE INDEX grown_k ON grown(k)",
            "CREATE TABLE steady(id INTEGER PRIMARY KEY, k INT, v TEXT)",
            "CREATE INDEX steady_k ON steady(k)",
            "CREATE TABLE log(line TEXT)",   # no index: sqlite_stat1 holds its count only
            "BEGIN",
            ("INSERT INTO grown(k, v) VALUES(?, 'g')", ((i % 10,) for i in range(1000))),
            ("INSERT INTO steady(k, v) VALUES(?, 's')", ((i % 10,) for i in range(1000))),
            ("INSERT INTO log VALUES(?)", ((f"line {i}",) for i in range(500))),
            "COMMIT",
            "ANALYZE",
            # after the application's ANALYZE: a table without statistics,
            # an empty one, tenfold growth, and a little growth
            "CREATE TABLE fresh(id INTEGER PRIMARY KEY, k INT)",
            "CREATE INDEX fresh_k ON fresh(k)",
            "CREATE TABLE vacant(id INTEGER PRIMARY KEY, k INT)",
            "CREATE INDEX vacant_k ON vacant(k)",
            "BEGIN",
            ("INSERT INTO grown(k, v) VALUES(?, 'g')", ((i % 10,) for i in range(9000))),
            ("INSERT INTO log VALUES(?)", ((f"line {i}",) for i in range(4500))),
            ("INSERT INTO steady(k, v) VALUES(?, 's')", ((i % 10,) for i in range(40))),
            ("INSERT INTO fresh(k) VALUES(?)", ((i % 3,) for i in range(300))),
            "COMMIT")
    before = stat1(db)
    assert stat1_count(db, "grown") == 1000 and row_count(db, "grown") == 10000
    assert stat1_count(db, "log") == 500 and row_count(db, "log") == 5000
    assert stat1_count(db, "steady") == 1000 and row_count(db, "steady") == 1040
    assert stat1(db, "fresh") == [] and stat1(db, "vacant") == []

    d = daemon.start(config_text(state, [db], analyze={"interval": "1h"}))
    e = wait(d, for_db(db, M(PRIORITY=6)))[0]
    assert e["REASON"] == "timer", e
    assert sorted(names(e["TABLES_ANALYZED"])) == ["fresh", "grown", "log"], e
    assert e["TABLES_SKIPPED"] == "unchanged: steady; no rows: vacant", e
    assert re.search(r"analyzed 3 tables in \d+ ms", e["MESSAGE"]), e["MESSAGE"]
    assert "analysis_limit" not in e["MESSAGE"], e["MESSAGE"]   # all below large_table_rows

    after_stat = stat1(db)
    # new statistics, in full: the counts are exact
    assert stat1(db, "grown") == [("grown", "grown_k", "10000 1000")], after_stat
    assert stat1(db, "log") == [("log", None, "5000")], after_stat
    assert stat1(db, "fresh") == [("fresh", "fresh_k", "300 100")], after_stat
    # left alone: byte for byte what the application's ANALYZE wrote
    assert stat1(db, "steady") == [r for r in before if r[0] == "steady"], after_stat
    assert stat1(db, "vacant") == []

    # the job ran once (interval 1h): nothing else came for this database
    es = analyze_entries(d, db)
    assert len(es) == 1, format_entries(es)
    assert d.stop() == 0, d.describe()


# --------------------------------------------------------------------------
# 3. An unchanged database is not even opened

@pytest.mark.parametrize("mode", ["delete", "wal-in-use"])
def test_unchanged_database_is_not_reanalyzed(tmp_path, daemon, mode):
    dbs, state = _dirs(tmp_path)
    db = dbs / "quiet.db"
    app_run(db,
            "CREATE TABLE t(id INTEGER PRIMARY KEY, k INT)",
            "CREATE INDEX t_k ON t(k)",
            ("INSERT INTO t(k) VALUES(?)", ((i % 7,) for i in range(700))),
            mode="WAL" if mode == "wal-in-use" else "DELETE")
    app = None
    if mode == "wal-in-use":
        # The application keeps its connection open (wal_autocheckpoint=0):
        # its ANALYZE stays in the -wal, and the -shm is live.
        app = AppProcess(str(db))
        app.sql("INSERT INTO t(k) VALUES(1)")
        app.sql("ANALYZE")
        assert files_present(db)["-wal"] and os.path.getsize(str(db) + "-wal") > 0
        stat = app.query("SELECT tbl, idx, stat FROM sqlite_stat1 ORDER BY tbl, idx")
    else:
        app_run(db, "ANALYZE")
        stat = [tuple(r) for r in stat1(db)]
    assert len(stat) == 1 and stat[0][:2] == ("t", "t_k") and stat[0][2].split()[0] == str(701 if app else 700), stat
    digest = snapshot([db])
    try:
        d = daemon.start(config_text(state, [db], analyze={"interval": "1s"}))
        job = wait(d, for_db(db, is_job))[0]
        assert skipped(job) == {"unchanged": ["t"]} and job["PRIORITY"] == "7", job
        assert snapshot([db]) == digest
        # at least three timers, each a positive sign that the daemon decided
        seen = 0
        while seen < 3:
            got = wait(d, for_db(db, is_unchanged_shortcut), count=seen + 1)
            seen = len(got)
            assert snapshot([db]) == digest, f"a file changed after {seen} timer(s)"
        es = analyze_entries(d, db)
        assert [e for e in es if is_job(e)] == [job], "the database was looked at again\n" + format_entries(es)
        assert all(e["PRIORITY"] == "7" for e in es), format_entries(es)
        if app:
            assert app.query("SELECT tbl, idx, stat FROM sqlite_stat1 ORDER BY tbl, idx") == stat
        else:
            assert stat1(db) == stat
        assert d.stop() == 0, d.describe()
        assert snapshot([db]) == digest
    finally:
        if app:
            app.close()


# --------------------------------------------------------------------------
# 4. Large tables: sampled, and the exact count behind the sample remembered

def _make_big_small(path):
    app_run(path,
            "CREATE TABLE big(id INTEGER PRIMARY KEY, k INT, v TEXT)",
            "CREATE INDEX big_k ON big(k)",
            "CREATE TABLE small(id INTEGER PRIMARY KEY, k INT)",
            "CREATE INDEX small_k ON small(k)",
            "BEGIN",
            ("INSERT INTO big(k, v) VALUES(?, ?)", ((i % 97, f"v{i}") for i in range(20000))),
            ("INSERT INTO small(k) VALUES(?)", ((i % 7,) for i in range(500))),
            "COMMIT")


def test_large_table_sampled_then_left_alone(tmp_path, daemon):
    dbs, state = _dirs(tmp_path)
    db = dbs / "large.db"
    _make_big_small(db)
    conf_text = config_text(state, [db], analyze={"interval": "1s", "large_table_rows": 1000})

    # sqlite-maintctl with the same settings, on a copy: big is sampled
    pristine = tmp_path / "pristine.db"
    shutil.copyfile(db, pristine)
    conf = tmp_path / "ctl.yaml"
    conf.write_text(conf_text)
    r = run_ctl("-c", conf, "--json", "analyze", pristine)
    assert r.rc == 0, r.describe()
    verdicts = {t["name"]: t["verdict"] for t in r.one()["tables"]}
    assert verdicts == {"big": "analyzed_limited", "small": "analyzed"}, r.describe()

    d = daemon.start(conf_text)
    e = wait(d, for_db(db, M(PRIORITY=6)))[0]
    assert sorted(names(e["TABLES_ANALYZED"])) == ["big", "small"], e
    assert "under analysis_limit: big" in e["MESSAGE"], e["MESSAGE"]
    assert e["TABLES_SKIPPED"] == "", e
    sampled = stat1(db, "big")
    est = stat1_count(db, "big")
    assert stat1(db, "small") == [("small", "small_k", "500 72")]
    # The premise: the sample's count is an estimate so far from the truth
    # that, judged by sqlite_stat1 alone, big would be stale at every timer
    # (threshold 50 + 10% of the estimate).
    assert abs(est - 20000) > 50 + 0.1 * est, sampled
    # what the daemon remembered: the exact count behind the statistics it wrote
    st = sqlite3.connect(f"file:{state}/state.db?mode=ro", uri=True)
    try:
        kept = st.execute("SELECT tbl, rows FROM analyzed WHERE path = ? ORDER BY tbl", (str(db),)).fetchall()
    finally:
        st.close()
    assert kept == [("big", 20000), ("small", 500)], kept

    # The timer comes back; the files are as the job left them.
    wait(d, for_db(db, is_unchanged_shortcut, after(int(e["__REALTIME_TIMESTAMP"]) + 1)))
    # The application updates a row (no row count moves): the next timer
    # must read the tables again, and finds them current, big included.
    t = now_us()
    app_run(db, "UPDATE big SET v = 'changed' WHERE id = 1")
    look = wait(d, for_db(db, is_job, after(t)))[0]
    assert look["PRIORITY"] == "7", look
    assert look["TABLES_ANALYZED"] == "", look
    assert skipped(look) == {"unchanged": ["big", "small"]}, look
    wait(d, for_db(db, is_unchanged_shortcut, after(int(look["__REALTIME_TIMESTAMP"]) + 1)))
    assert stat1(db, "big") == sampled
    es = analyze_entries(d, db)
    assert [x for x in es if x["PRIORITY"] != "7"] == [e], format_entries(es)
    assert d.stop() == 0, d.describe()

    # Without the state file (sqlite-maintctl), the estimate alone makes
    # big look stale: what the remembered count saved the daemon from. Nor
    # can the tool tell those statistics are a sample: it gathers them in
    # full (sampled statistics never replace others), once: then they hold
    # the exact count, and the next run leaves them alone.
    copy = tmp_path / "copy.db"
    shutil.copyfile(db, copy)
    r = run_ctl("-c", conf, "--json", "analyze", copy)
    big = [x for x in r.one()["tables"] if x["name"] == "big"][0]
    assert big == {"name": "big", "verdict": "analyzed", "rows": 20000, "statistics_rows": est}, r.describe()
    assert stat1(copy, "big")[0][2].split()[0] == "20000", stat1(copy, "big")
    r = run_ctl("-c", conf, "--json", "analyze", copy)
    assert _tables(r)["big"] == ("unchanged", 20000, 20000), r.describe()


# --------------------------------------------------------------------------
# 4b. A write that lands between the job's look and its end

GDB = shutil.which("gdb")

GROW = """
import sqlite3, sys
con = sqlite3.connect(sys.argv[1], isolation_level=None)
con.execute("BEGIN")
con.executemany("INSERT INTO s(k) VALUES(?)", ((i % 10,) for i in range(9000)))
con.execute("COMMIT")
"""

TOUCH = """
import sqlite3, sys
con = sqlite3.connect(sys.argv[1], isolation_level=None)
con.execute("UPDATE s SET k = k WHERE id = 1")
"""


def test_write_during_the_look_is_not_forgotten(tmp_path, daemon):
    """The application grows s tenfold while an ANALYZE job is between
    its look (the counts) and its end. The daemon must look again at a
    later timer. gdb follows the daemon into the job's process (fork, then
    exec of the same program: jobproc.h) and holds it at the end of the
    look, so the order of events is certain."""
    if GDB is None:
        pytest.skip("gdb is not installed")
    dbs, state = _dirs(tmp_path)
    db = dbs / "race.db"
    app_run(db,
            "CREATE TABLE s(id INTEGER PRIMARY KEY, k INT)",
            "CREATE INDEX s_k ON s(k)",
            ("INSERT INTO s(k) VALUES(?)", ((i % 10,) for i in range(1000))),
            "ANALYZE")
    d = daemon.start(config_text(state, [db], analyze={"interval": "1s"}))
    wait(d, for_db(db, is_job))
    wait(d, for_db(db, is_unchanged_shortcut))

    script = tmp_path / "gdb.cmd"
    grow, touch = tmp_path / "grow.py", tmp_path / "touch.py"
    grow.write_text(GROW)
    touch.write_text(TOUCH)
    script.write_text("\n".join([
        "set pagination off",
        "set confirm off",
        # the work is done in a job process: follow the next fork there
        # (the daemon itself goes on, detached) and through its exec
        "set follow-fork-mode child",
        "set detach-on-fork on",
        "set follow-exec-mode same",
        "break look_before_analyze",
        # with the daemon stopped: a write that makes the next timer look
        f"shell {PYTHON} {touch} {db}",
        "continue",
        "finish",                                   # the look has counted s: 1000 rows
        f"shell {PYTHON} {grow} {db}",   # now 10000
        "delete",
        "detach",
        "quit",
    ]) + "\n")
    t = now_us()
    g = subprocess.run([GDB, "-q", "-batch", "-nx", "-p", str(d.pid), "-x", str(script)],
                       capture_output=True, text=True, timeout=SLOW)
    assert re.search(r"Breakpoint 1(\.\d+)?, look_before_analyze", g.stdout), g.stdout + g.stderr
    assert row_count(db, "s") == 10000
    assert stat1_count(db, "s") == 1000
    looked = wait(d, for_db(db, is_job, after(t)))[0]
    assert skipped(looked) == {"unchanged": ["s"]}, looked   # it counted before the growth

    # Either a later job analyzes s, or the timer keeps saying "unchanged":
    # wait for whichever comes (a positive sign either way), then judge.
    t2 = int(looked["__REALTIME_TIMESTAMP"]) + 1

    def verdict(e):
        return for_db(db, after(t2))(e) and (e["PRIORITY"] == "6" or is_unchanged_shortcut(e))
    wait(d, verdict, count=3)
    es = [e for e in analyze_entries(d, db) if after(t2)(e)]
    done = [e for e in es if e["PRIORITY"] == "6"]
    assert done and names(done[0]["TABLES_ANALYZED"]) == ["s"], \
        "s grew tenfold and was never analyzed:\n" + format_entries(es)
    assert stat1_count(db, "s") == 10000
    assert d.stop() == 0, d.describe()


# --------------------------------------------------------------------------
# 5. sqlite-maintctl analyze

def _make_mixed(path):
    """stale (1000 analyzed, now 2000), missing (no statistics), current
    (1000 analyzed, now 1150: exactly threshold 50 + 10%, not more), over
    (1000 analyzed, now 1151), shrunk (1000 analyzed, now 849), empty (no
    rows, no statistics) and a table whose name needs quoting."""
    app_run(path,
            "CREATE TABLE stale(id INTEGER PRIMARY KEY, k INT)",
            "CREATE INDEX stale_k ON stale(k)",
            "CREATE TABLE current(id INTEGER PRIMARY KEY, k INT)",
            "CREATE INDEX current_k ON current(k)",
            "CREATE TABLE over(id INTEGER PRIMARY KEY, k INT)",
            "CREATE INDEX over_k ON over(k)",
            "CREATE TABLE shrunk(id INTEGER PRIMARY KEY, k INT)",
            "CREATE INDEX shrunk_k ON shrunk(k)",
            'CREATE TABLE "we""ird, name"(x INT)',
            "BEGIN",
            *[(f"INSERT INTO {t}(k) VALUES(?)", ((i % 10,) for i in range(1000)))
              for t in ("stale", "current", "over", "shrunk")],
            ('INSERT INTO "we""ird, name" VALUES(?)', ((i,) for i in range(30))),
            "COMMIT",
            "ANALYZE",
            "CREATE TABLE missing(id INTEGER PRIMARY KEY, k INT)",
            "CREATE TABLE empty(id INTEGER PRIMARY KEY, k INT)",
            "CREATE INDEX empty_k ON empty(k)",
            "BEGIN",
            ("INSERT INTO stale(k) VALUES(?)", ((i % 10,) for i in range(1000))),
            ("INSERT INTO current(k) VALUES(?)", ((i % 10,) for i in range(150))),
            ("INSERT INTO over(k) VALUES(?)", ((i % 10,) for i in range(151))),
            "DELETE FROM shrunk WHERE id > 849",
            ("INSERT INTO missing(k) VALUES(?)", ((i,) for i in range(20))),
            "COMMIT")


def test_index_without_statistics_is_analyzed(tmp_path):
    """The application drops and recreates events_ab after its ANALYZE (a
    schema migration): the new index has no sqlite_stat1 row, the planner
    takes it on default estimates (the slow plan), and its statistics are
    missing, so an ANALYZE of events is due whatever the row count says."""
    db = tmp_path / "migrated.db"
    make_events_db(db)
    app_run(db, "DROP INDEX events_ab", "CREATE INDEX events_ab ON events(a, b)")
    assert stat1(db) == [("events", "events_c", f"{EVENTS_ROWS} 1")]
    assert any("USING INDEX events_ab" in p for p in query_plan(db))   # the harm, already there
    r = run_ctl("--json", "analyze", db)
    assert r.rc == 0, r.describe()
    assert _tables(r) == {"events": ("analyzed", EVENTS_ROWS, EVENTS_ROWS)}, r.describe()
    assert ("events", "events_ab", f"{EVENTS_ROWS} {EVENTS_ROWS} {EVENTS_ROWS}") in stat1(db)
    assert any("USING INDEX events_c" in p for p in query_plan(db))


def _tables(r):
    return {t["name"]: (t["verdict"], t["rows"], t["statistics_rows"]) for t in r.one()["tables"]}


def test_ctl_analyze_stale_only_then_force(tmp_path):
    db = tmp_path / "mixed.db"
    _make_mixed(db)
    weird = 'we"ird, name'
    before = stat1(db)
    counter = change_counter(db)

    r = run_ctl("--json", "analyze", db)
    assert r.rc == 0 and r.err == "", r.describe()
    o = r.one()
    assert o["status"] == "ok" and o["operation"] == "analyze", r.describe()
    assert _tables(r) == {
        "stale": ("analyzed", 2000, 1000),
        "current": ("unchanged", 1150, 1000),
        "over": ("analyzed", 1151, 1000),
        "shrunk": ("analyzed", 849, 1000),
        weird: ("unchanged", 30, 30),
        "missing": ("analyzed", 20, 0),
        "empty": ("empty", 0, 0),
    }, r.describe()
    # the tables in schema order, as the daemon lists them
    assert [t["name"] for t in o["tables"]] == ["stale", "current", "over", "shrunk", weird, "missing", "empty"]
    after_stat = stat1(db)
    assert stat1(db, "stale") == [("stale", "stale_k", "2000 200")]
    assert stat1(db, "over") == [("over", "over_k", "1151 116")]
    assert stat1(db, "shrunk") == [("shrunk", "shrunk_k", "849 85")]
    assert stat1(db, "missing") == [("missing", None, "20")]
    for t in ("current", weird):
        assert stat1(db, t) == [x for x in before if x[0] == t], after_stat
    assert stat1(db, "empty") == []
    assert change_counter(db) > counter

    # Again: nothing is stale now, and nothing is written.
    digest = sha256(str(db))
    r = run_ctl("--json", "analyze", db)
    assert r.rc == 0, r.describe()
    assert {n: v[0] for n, v in _tables(r).items()} == {
        "stale": "unchanged", "current": "unchanged", "over": "unchanged", "shrunk": "unchanged",
        weird: "unchanged", "missing": "unchanged", "empty": "empty"}, r.describe()
    assert sha256(str(db)) == digest
    assert not any(files_present(db).values())

    # The human form says the same.
    r = run_ctl("analyze", db)
    assert r.rc == 0, r.describe()
    assert re.match(rf"^{re.escape(str(db))}: analyzed 0 of 7 tables in \d+ ms: ", r.out), r.out
    assert "stale (unchanged, 2000 rows)" in r.out and "empty (empty, 0 rows)" in r.out, r.out
    assert sha256(str(db)) == digest

    # --force: every table with rows, stale or not, in full (all small).
    counter = change_counter(db)
    r = run_ctl("--json", "analyze", "--force", db)
    assert r.rc == 0, r.describe()
    assert {n: v[0] for n, v in _tables(r).items()} == {
        "stale": "analyzed", "current": "analyzed", "over": "analyzed", "shrunk": "analyzed",
        weird: "analyzed", "missing": "analyzed", "empty": "empty"}, r.describe()
    assert change_counter(db) > counter
    assert stat1(db, "current") == [("current", "current_k", "1150 115")]
    assert stat1(db, weird) == [(weird, None, "30")]
    r = run_ctl("analyze", "--force", db)
    assert r.rc == 0 and re.match(rf"^{re.escape(str(db))}: analyzed 6 of 7 tables", r.out), r.describe()


def test_ctl_analyze_force_samples_only_what_has_no_full_statistics(tmp_path):
    """--force analyzes every table; a large one under analysis_limit only
    when no full statistics would be replaced by the sample."""
    db = tmp_path / "large.db"
    _make_big_small(db)
    conf = tmp_path / "c.yaml"
    conf.write_text(config_text(tmp_path / "state", [tmp_path / "*.db"],
                                analyze={"large_table_rows": 1000}))
    app_run(db, "ANALYZE")   # the application's full statistics: nothing is stale
    full = stat1(db)
    r = run_ctl("-c", conf, "--json", "analyze", db)
    assert _tables(r) == {"big": ("unchanged", 20000, 20000), "small": ("unchanged", 500, 500)}, r.describe()
    assert stat1(db) == full
    # --force analyzes every table; big's full statistics are replaced by
    # full ones, never by a sample
    r = run_ctl("-c", conf, "--json", "analyze", "--force", db)
    assert r.rc == 0, r.describe()
    assert _tables(r) == {"big": ("analyzed", 20000, 20000), "small": ("analyzed", 500, 500)}, r.describe()
    assert stat1(db) == full
    # a large table without statistics is sampled
    app_run(db, "DELETE FROM sqlite_stat1 WHERE tbl = 'big'")
    r = run_ctl("-c", conf, "--json", "analyze", "--force", db)
    assert r.rc == 0, r.describe()
    assert _tables(r) == {"big": ("analyzed_limited", 20000, 0), "small": ("analyzed", 500, 500)}, r.describe()
    assert stat1(db, "small") == [x for x in full if x[0] == "small"]
    assert stat1(db, "big") and stat1(db, "big") != [x for x in full if x[0] == "big"]   # a sample now
    # without the config: large_table_rows is 1000000, big is analyzed in full again
    r = run_ctl("--json", "analyze", "--force", db)
    assert _tables(r)["big"][0] == "analyzed", r.describe()
    assert stat1(db) == full


def test_ctl_analyze_no_tables_and_empty_file(tmp_path):
    none = tmp_path / "none.db"
    app_run(none, "PRAGMA user_version=1")   # one page, no table
    r = run_ctl("--json", "analyze", none)
    assert r.rc == 0 and r.one()["status"] == "ok", r.describe()
    assert r.one().get("tables", []) == [], r.describe()
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    r = run_ctl("--json", "analyze", empty)
    assert r.rc == 0 and r.one()["status"] == "skipped", r.describe()
    assert empty.stat().st_size == 0 and not any(files_present(empty).values())


@pytest.mark.parametrize("case", ["ok", "missing", "not-a-database", "locked", "wal-writer-nothing-stale",
                                  "wal-writer-stale", "mixed", "usage-full", "usage-no-db",
                                  "usage-no-space-check", "usage-rowid"])
def test_ctl_analyze_exit_status(tmp_path, case):
    good = tmp_path / "good.db"
    _make_big_small(good)
    app_run(good, "ANALYZE")
    missing = tmp_path / "missing.db"
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database, just some text " * 200)
    holder = None
    try:
        if case == "ok":
            args, rc, status = [good], 0, ["ok"]
        elif case == "missing":
            args, rc, status = [missing], 1, ["missing"]
        elif case == "not-a-database":
            args, rc, status = [junk], 1, ["not_a_database"]
        elif case == "locked":
            # rollback mode: an exclusive lock keeps even the read-only look out
            holder = LockHolder(str(good), "BEGIN EXCLUSIVE", ["INSERT INTO small(k) VALUES(9)"])
            args, rc, status = ["--attempts", "1", good], 5, ["busy"]
        elif case.startswith("wal-writer"):
            app_run(good, mode="WAL")
            if case == "wal-writer-stale":
                app_run(good, ("INSERT INTO small(k) VALUES(?)", ((i,) for i in range(1000))))
            # an application's write transaction: readers go on, writers wait
            holder = LockHolder(str(good), "BEGIN IMMEDIATE", ["INSERT INTO big(k, v) VALUES(1, 'x')"])
            if case == "wal-writer-nothing-stale":
                args, rc, status = ["--attempts", "1", good], 0, ["ok"]
            else:
                args, rc, status = ["--attempts", "1", good], 5, ["busy"]
        elif case == "mixed":
            args, rc, status = [good, missing, junk, good], 1, ["ok", "missing", "not_a_database", "ok"]
        elif case == "usage-full":
            args, rc, status = ["--full", good], 2, None
        elif case == "usage-no-db":
            args, rc, status = [], 2, None
        elif case == "usage-no-space-check":
            args, rc, status = ["--no-space-check", good], 2, None
        else:
            args, rc, status = ["--allow-rowid-change", good], 2, None
        full = stat1(good)   # committed and checkpointed: the holder's row is not in it
        r = run_ctl("--json", "analyze", *args, timeout=120)
        assert r.rc == rc, r.describe()
        if status is None:
            assert r.out == "" and r.err.strip(), r.describe()
        else:
            assert [o["status"] for o in r.json] == status, r.describe()
            for o in r.json:
                assert (o["status"] in ("ok", "skipped")) == ("error" not in o), o
        if case == "wal-writer-stale":
            o = r.one()
            assert "locked" in o["error"] or "busy" in o["error"], o
        if case == "wal-writer-nothing-stale":
            assert {t["verdict"] for t in r.one()["tables"]} == {"unchanged"}, r.describe()
        if holder:
            holder.release("ROLLBACK")
            holder.close()
            holder = None
        assert stat1(good) == full
    finally:
        if holder:
            holder.close()
            holder.kill()


# --------------------------------------------------------------------------
# 6. Statistics under the names SQLite reads them by

def _make_without_rowid(path):
    """kv: a WITHOUT ROWID table (composite PRIMARY KEY) with a secondary
    index, and the application's full ANALYZE. The statistics of the
    PRIMARY KEY are the row ("kv", "kv", ...): under the table's name, not
    under its index's (sqlite_autoindex_kv_1)."""
    app_run(path,
            "CREATE TABLE kv(a INT, b INT, v TEXT, PRIMARY KEY(a, b)) WITHOUT ROWID",
            "CREATE INDEX kv_v ON kv(v)",
            "BEGIN",
            ("INSERT INTO kv VALUES(?, ?, ?)", ((i % 50, i, f"v{i % 20}") for i in range(3000))),
            "COMMIT",
            "ANALYZE")
    assert stat1(path) == [("kv", "kv", "3000 60 1"), ("kv", "kv_v", "3000 150")], stat1(path)


def test_without_rowid_statistics_are_current(tmp_path, daemon):
    dbs, state = _dirs(tmp_path)
    db = dbs / "wr.db"
    _make_without_rowid(db)
    full = stat1(db)
    digest = snapshot([db])
    for _ in range(2):
        r = run_ctl("--json", "analyze", db)
        assert r.rc == 0, r.describe()
        assert _tables(r) == {"kv": ("unchanged", 3000, 3000)}, r.describe()
        assert stat1(db) == full
        assert snapshot([db]) == digest, "sqlite-maintctl analyze wrote to the database"

    # The daemon, which samples any table above 100 rows it analyzes: the
    # timer comes again and again, and never rewrites the statistics.
    d = daemon.start(config_text(state, [db], analyze={"interval": "1s", "large_table_rows": 100}))
    job = wait(d, for_db(db, is_job))[0]
    assert job["PRIORITY"] == "7" and job["TABLES_ANALYZED"] == "", job
    assert skipped(job) == {"unchanged": ["kv"]}, job
    wait(d, for_db(db, is_unchanged_shortcut), count=2)
    assert snapshot([db]) == digest
    # a write that moves no row count: the next timer reads the table again
    t = now_us()
    app_run(db, "UPDATE kv SET v = 'changed' WHERE a = 0 AND b = 0")
    look = wait(d, for_db(db, is_job, after(t)))[0]
    assert look["PRIORITY"] == "7" and look["TABLES_ANALYZED"] == "", look
    assert skipped(look) == {"unchanged": ["kv"]}, look
    wait(d, for_db(db, is_unchanged_shortcut, after(int(look["__REALTIME_TIMESTAMP"]) + 1)))
    assert stat1(db) == full
    es = analyze_entries(d, db)
    assert all(e["PRIORITY"] == "7" for e in es), format_entries(es)
    assert d.stop() == 0, d.describe()
    assert stat1(db) == full


def test_statistics_under_another_case_are_current(tmp_path):
    """sqlite_stat1 rows written by hand, "NOTES" and "NOTES_K" for table
    Notes and index Notes_k, with the right count: SQLite finds table and
    index names without regard to case, so these are Notes' statistics."""
    db = tmp_path / "notes.db"
    app_run(db,
            "CREATE TABLE Notes(id INTEGER PRIMARY KEY, k INT, body TEXT)",
            "CREATE INDEX Notes_k ON Notes(k)",
            "BEGIN",
            ("INSERT INTO Notes(k, body) VALUES(?, ?)", ((i % 30, f"note {i}") for i in range(300))),
            "COMMIT",
            "ANALYZE",
            "DELETE FROM sqlite_stat1",
            "INSERT INTO sqlite_stat1 VALUES('NOTES', 'NOTES_K', '300 10')")
    hand = stat1(db)
    assert hand == [("NOTES", "NOTES_K", "300 10")], hand
    digest = snapshot([db])
    r = run_ctl("--json", "analyze", db)
    assert r.rc == 0, r.describe()
    assert _tables(r) == {"Notes": ("unchanged", 300, 300)}, r.describe()
    assert stat1(db) == hand, "a second row was added"
    assert snapshot([db]) == digest


# --------------------------------------------------------------------------
# 7. A sample never replaces full statistics

def test_full_statistics_of_a_large_table_are_replaced_in_full(tmp_path):
    """large_table_rows 1000, analysis_limit 100: grown (5000 rows, an
    index on a column of five values) has the application's full
    statistics and grows 30%; nostats (5000 rows) never had any. grown is
    analyzed in full again (its new count exact); only nostats is sampled."""
    db = tmp_path / "big.db"
    app_run(db,
            "CREATE TABLE grown(id INTEGER PRIMARY KEY, k INT, v TEXT)",
            "CREATE INDEX grown_k ON grown(k)",
            "BEGIN",
            ("INSERT INTO grown(k, v) VALUES(?, ?)", ((i % 5, f"v{i}") for i in range(5000))),
            "COMMIT",
            "ANALYZE",
            "CREATE TABLE nostats(id INTEGER PRIMARY KEY, k INT)",
            "CREATE INDEX nostats_k ON nostats(k)",
            "BEGIN",
            ("INSERT INTO grown(k, v) VALUES(?, ?)", ((i % 5, f"w{i}") for i in range(1500))),
            ("INSERT INTO nostats(k) VALUES(?)", ((i % 5,) for i in range(5000))),
            "COMMIT")
    assert stat1(db) == [("grown", "grown_k", "5000 1000")], stat1(db)
    conf = tmp_path / "c.yaml"
    conf.write_text(config_text(tmp_path / "state", [tmp_path / "*.db"],
                                analyze={"large_table_rows": 1000, "analysis_limit": 100}))
    # the premise: under analysis_limit 100 the count is an estimate
    copy = tmp_path / "copy.db"
    shutil.copyfile(db, copy)
    app_run(copy, "PRAGMA analysis_limit=100", "ANALYZE")
    assert stat1_count(copy, "grown") != 6500 and stat1_count(copy, "nostats") != 5000, stat1(copy)

    r = run_ctl("-c", conf, "--json", "analyze", db)
    assert r.rc == 0, r.describe()
    assert _tables(r) == {"grown": ("analyzed", 6500, 5000), "nostats": ("analyzed_limited", 5000, 0)}, \
        r.describe()
    assert stat1(db, "grown") == [("grown", "grown_k", "6500 1300")], stat1(db)
    assert stat1_count(db, "nostats") != 5000, stat1(db)   # a sample
