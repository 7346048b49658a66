# SPDX-License-Identifier: MIT
"""VACUUM and rowids: which tables a plain VACUUM renumbers (pinned by
experiment on the libsqlite3 the tool uses), the guard that refuses such a
VACUUM (sqlite-maintctl exit 6, the daemon's ROWID_GUARD entry and hold),
the issue's case (an external-content FTS5 index over a table without an
INTEGER PRIMARY KEY or index), and a property test over random schemas.

The rule, from SQLite 3.40.1's source: vacuum.c (sqlite3RunVacuum, lines
283-306) creates the tables and their indexes in vacuum_db, then copies
every table with "INSERT INTO vacuum_db.t SELECT*FROM main.t", and only then
the triggers (so no trigger stops the transfer optimization, insert.c line
820). insert.c xferOptimization() copies a rowid table's rows keeping their
rowids (OP_Rowid, lines 3044 and 3056) when the table has an INTEGER PRIMARY
KEY (pDest->iPKey >= 0) or any index (pDest->pIndex: its own, or the
automatic one of a PRIMARY KEY or UNIQUE constraint), and gives them new
rowids 1..N in rowid order otherwise (OP_NewRowid, line 3054). So VACUUM
changes the rowids of exactly the rowid tables with neither, and only when
their rowids are not already 1..N. The tests below check that by
experiment rather than trust it."""

import dataclasses
import hashlib
import json
import os
import random
import re
import shlex
import shutil
import signal
import sqlite3
import subprocess
import time

import pytest

import helpers
from daemon_fixtures import (  # noqa: F401  (fixtures are used by name)
    M, config_text, daemon, entry_matches, format_entries, journald)
from helpers import fragmentation, freelist_count

ROWIDS_REFUSED = 6   # sqlite-maintctl's exit status for rowids_would_change

# The property test: how many random databases one run builds. Each costs a
# few tens of milliseconds (build, a plain VACUUM of a copy, one
# sqlite-maintctl run): 150 take about 6 s on a 2-core machine.
PROPERTY_DATABASES = 150


# --------------------------------------------------------------------------
# Names and rows

def q(name):
    """name as an SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def qs(text):
    """text as an SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


VOCAB = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot")


def token(key):
    """A word only the row of this key has ("k-5" would be two tokens)."""
    return f"k{key}".replace("-", "m")


def connect(path):
    return sqlite3.connect(str(path), isolation_level=None)


def rowid_name(con, table):
    """A name SQL reaches the table's rowid by, or None (every one taken by a column)."""
    cols = {r[0].lower() for r in con.execute("SELECT name FROM pragma_table_xinfo(?)", (table,))}
    return next((n for n in ("rowid", "_rowid_", "oid") if n not in cols), None)


def main_tables(con):
    """{name: kind} of every table of main: "rowid" (ordinary and shadow
    rowid tables), "without_rowid", "virtual", "sqlite" (SQLite's own)."""
    out = {}
    for name, typ, wr in con.execute(
            "SELECT name, type, wr FROM pragma_table_list WHERE schema = 'main' "
            "AND type IN ('table', 'shadow', 'virtual') AND name <> 'sqlite_schema'"):
        if name.lower().startswith("sqlite_"):
            out[name] = "sqlite"
        elif typ == "virtual":
            out[name] = "virtual"
        else:
            out[name] = "without_rowid" if wr else "rowid"
    return out


@dataclasses.dataclass
class Snapshot:
    """Every (table, rowid, row) of a database, shadow tables included."""
    kind: dict     # table -> main_tables() kind
    rows: dict     # table -> rows: (rowid, *columns) in rowid order, or sorted rows
    matches: dict  # (full-text table, word) -> rowids it matches

    def differences(self, other):
        """The tables (and full-text searches) whose contents differ."""
        diff = sorted(t for t in set(self.rows) | set(other.rows) if self.rows.get(t) != other.rows.get(t))
        diff += sorted(f"{t} MATCH {w}" for (t, w) in set(self.matches) | set(other.matches)
                       if self.matches.get((t, w)) != other.matches.get((t, w)))
        return diff


def snapshot(path):
    con = connect(path)
    try:
        kind = main_tables(con)
        rows, matches = {}, {}
        for t, k in kind.items():
            if k == "rowid":
                rid = rowid_name(con, t)
                assert rid, f"{path}: table {t} has no name left for its rowid"
                rows[t] = con.execute(f"SELECT {rid}, * FROM {q(t)} ORDER BY {rid}").fetchall()
            elif k == "virtual":
                # An external-content full-text table reads its content
                # table by rowid: renumbered content makes this fail.
                try:
                    rows[t] = con.execute(f"SELECT rowid, * FROM {q(t)} ORDER BY rowid").fetchall()
                except sqlite3.DatabaseError as e:
                    rows[t] = [("error", str(e))]
                sql = con.execute("SELECT sql FROM sqlite_schema WHERE name = ?", (t,)).fetchone()[0]
                if re.search(r"using\s+fts[345]\b", sql, re.IGNORECASE):
                    for w in VOCAB:
                        matches[(t, w)] = [r[0] for r in con.execute(
                            f"SELECT rowid FROM {q(t)} WHERE {q(t)} MATCH ? ORDER BY rowid", (w,))]
            else:
                # WITHOUT ROWID tables have no rowid; SQLite's own tables
                # (sqlite_sequence) are compared by content alone.
                rows[t] = sorted(con.execute(f"SELECT * FROM {q(t)}").fetchall(), key=repr)
        return Snapshot(kind, rows, matches)
    finally:
        con.close()


def vacuum_copy(path, scratch):
    """A plain SQLite VACUUM of a copy of path (SQLite alone, no product
    code); returns the copy's path."""
    for s in ("-journal", "-wal"):
        assert not os.path.exists(f"{path}{s}"), f"{path}{s} exists: the copy would miss it"
    shutil.copyfile(path, scratch)
    con = connect(scratch)
    try:
        con.execute("PRAGMA synchronous=OFF")
        con.execute("VACUUM")
    finally:
        con.close()
    return scratch


def renumbered_by_vacuum(before, after):
    """The tables whose rowids a VACUUM changed (before/after: snapshots
    of the database and of its vacuumed copy). Asserts that VACUUM kept
    every row of every table, whatever their rowids."""
    assert set(before.kind) == set(after.kind), (before.kind, after.kind)
    changed = set()
    for t, k in before.kind.items():
        if k == "rowid":
            assert sorted((r[1:] for r in before.rows[t]), key=repr) == \
                sorted((r[1:] for r in after.rows[t]), key=repr), f"VACUUM changed the rows of {t}"
            if before.rows[t] != after.rows[t]:
                changed.add(t)
        elif k != "virtual":
            assert before.rows[t] == after.rows[t], f"VACUUM changed the rows of {t} ({k})"
    return changed


def rowid_figures(path, table):
    """(rows, min rowid, max rowid) of a table, as a user would ask."""
    con = connect(path)
    try:
        rid = rowid_name(con, table)
        return con.execute(f"SELECT count(*), min({rid}), max({rid}) FROM {q(table)}").fetchone()
    finally:
        con.close()


def assert_untouched(path, digest, res):
    assert helpers.sha256(path) == digest, f"{path} changed although the VACUUM was refused\n" + res.describe()
    assert helpers.side_files(str(path)) == [], helpers.side_files(str(path))


# --------------------------------------------------------------------------
# Kinds of tables

@dataclasses.dataclass(frozen=True)
class Kind:
    """One kind of table. ddl: statements with {t} (the table), {i}, {log},
    {tr}, {docs} (its other objects) and {docs_s} (the content table's
    name as a string). key: where a row's key goes: "rowid" (the implicit
    rowid), "id" (an INTEGER PRIMARY KEY column), "rowid+id" (both), "pk"
    (the PRIMARY KEY of a WITHOUT ROWID table), "fts", "fts_contentless",
    "rtree" (the virtual table's rowid), "external:<rowid column>" (the rowid
    of the content table {docs} of an external-content FTS5 table).
    renumbers: the tables VACUUM gives new rowids when the keys are not
    1..N, as suffixes of the table's name ("" the table itself)."""
    name: str
    ddl: tuple
    key: str
    renumbers: tuple = ()
    cols: tuple = ("a", "b", "p")


def _fts5_external(name, content_ddl, rid, renumbers):
    return Kind(name, content_ddl + (
        "CREATE VIRTUAL TABLE {t} USING fts5(b, content={docs_s}" +
        (", content_rowid='id'" if rid == "id" else "") + ")",
        "CREATE TRIGGER {tr} AFTER INSERT ON {docs} BEGIN "
        f"INSERT INTO {{t}}(rowid, b) VALUES (new.{rid}, new.b); END",
        "CREATE TRIGGER {tr2} AFTER DELETE ON {docs} BEGIN "
        f"INSERT INTO {{t}}({{t}}, rowid, b) VALUES ('delete', old.{rid}, old.b); END"),
        f"external:{rid}", renumbers)


KINDS = {k.name: k for k in (
    # rowid aliases: the rowid is the key, always kept
    Kind("integer_primary_key", ("CREATE TABLE {t}(id INTEGER PRIMARY KEY, a, b, p)",), "id"),
    Kind("autoincrement", ("CREATE TABLE {t}(id INTEGER PRIMARY KEY AUTOINCREMENT, a, b, p)",), "id"),
    # a table constraint PRIMARY KEY(x DESC) on an INTEGER column is a rowid alias
    Kind("pk_desc_table_constraint", ("CREATE TABLE {t}(id INTEGER, a, b, p, PRIMARY KEY(id DESC))",), "id"),
    # the column constraint INTEGER PRIMARY KEY DESC is not (lang_createtable.html,
    # "This quirk is not by design"): it gets an automatic index, which keeps rowids too
    Kind("integer_pk_desc_column", ("CREATE TABLE {t}(id INTEGER PRIMARY KEY DESC, a, b, p)",), "rowid+id"),
    # any index keeps the rowids, even one that holds no row
    Kind("index", ("CREATE TABLE {t}(a, b, p)", "CREATE INDEX {i} ON {t}(b)"), "rowid"),
    Kind("partial_index", ("CREATE TABLE {t}(a, b, p)", "CREATE INDEX {i} ON {t}(a) WHERE a > 1000000000"),
         "rowid"),
    Kind("expression_index", ("CREATE TABLE {t}(a, b, p)", "CREATE INDEX {i} ON {t}(a * 2 + 1)"), "rowid"),
    Kind("json_index", ("CREATE TABLE {t}(a, b, p, j)", "CREATE INDEX {i} ON {t}(json_extract(j, '$.a'))"),
         "rowid", cols=("a", "b", "p", "j")),
    Kind("unique", ("CREATE TABLE {t}(a UNIQUE, b, p)",), "rowid"),
    Kind("text_primary_key", ("CREATE TABLE {t}(a TEXT PRIMARY KEY, b, p)",), "rowid"),
    Kind("int_primary_key", ("CREATE TABLE {t}(a INT PRIMARY KEY, b, p)",), "rowid"),  # INT: not an alias
    Kind("generated_column_indexed",
         ("CREATE TABLE {t}(a, b, p, g AS (a * 2) VIRTUAL, s AS (length(b)) STORED)",
          "CREATE INDEX {i} ON {t}(s)"), "rowid"),
    # no INTEGER PRIMARY KEY and no index: renumbered 1..N
    Kind("no_index", ("CREATE TABLE {t}(a, b, p)",), "rowid", ("",)),
    Kind("column_named_rowid", ("CREATE TABLE {t}(rowid, a, b, p)",), "rowid", ("",),
         cols=("rowid", "a", "b", "p")),
    Kind("generated_columns", ("CREATE TABLE {t}(a, b, p, g AS (a * 2) VIRTUAL, s AS (length(b)) STORED)",),
         "rowid", ("",)),
    Kind("check", ("CREATE TABLE {t}(a CHECK (a > -1000000000), b, p)",), "rowid", ("",)),
    Kind("strict", ("CREATE TABLE {t}(a INTEGER, b TEXT, p BLOB) STRICT",), "rowid", ("",)),
    # triggers do not matter (VACUUM copies them after the rows); the log
    # table they fill keeps its rowids because they are 1..N already
    Kind("trigger", ("CREATE TABLE {t}(a, b, p)", "CREATE TABLE {log}(op, a)",
                     "CREATE TRIGGER {tr} AFTER INSERT ON {t} BEGIN "
                     "INSERT INTO {log} VALUES ('insert', new.a); END",
                     "CREATE TRIGGER {tr2} AFTER DELETE ON {t} BEGIN "
                     "INSERT INTO {log} VALUES ('delete', old.a); END"), "rowid", ("",)),
    # no rowid at all
    Kind("without_rowid", ("CREATE TABLE {t}(a INTEGER PRIMARY KEY, b, p) WITHOUT ROWID",), "pk"),
    # virtual tables: their shadow tables all have an INTEGER PRIMARY KEY or
    # a PRIMARY KEY (or are WITHOUT ROWID)
    Kind("fts3", ("CREATE VIRTUAL TABLE {t} USING fts3(b)",), "fts"),
    Kind("fts4", ("CREATE VIRTUAL TABLE {t} USING fts4(b)",), "fts"),
    Kind("fts5", ("CREATE VIRTUAL TABLE {t} USING fts5(b)",), "fts"),
    Kind("fts5_contentless", ("CREATE VIRTUAL TABLE {t} USING fts5(b, content='')",), "fts_contentless"),
    Kind("rtree", ("CREATE VIRTUAL TABLE {t} USING rtree(id, x0, x1)",), "rtree"),
    # external content: the content table is what matters
    _fts5_external("fts5_external_no_index", ("CREATE TABLE {docs}(a, b, p)",), "rowid", ("_docs",)),
    _fts5_external("fts5_external_index", ("CREATE TABLE {docs}(a, b, p)", "CREATE INDEX {i} ON {docs}(a)"),
                   "rowid", ()),
    _fts5_external("fts5_external_integer_primary_key",
                   ("CREATE TABLE {docs}(id INTEGER PRIMARY KEY, a, b, p)",), "id", ()),
)}


def _names(name):
    return dict(t=q(name), i=q(name + "_i"), log=q(name + "_log"), tr=q(name + "_tr"), tr2=q(name + "_tr2"),
                docs=q(name + "_docs"), docs_s=qs(name + "_docs"))


def _value(col, key, rng):
    if col == "a":
        return key
    if col == "b":
        return " ".join(rng.choice(VOCAB) for _ in range(rng.randint(1, 4))) + " " + token(key)
    if col == "p":
        return rng.randbytes(rng.randint(20, 700))
    if col == "j":
        return f'{{"a": {key}, "n": "{token(key)}"}}'
    if col == "rowid":  # a column of that name, not the rowid
        return key * 7
    raise AssertionError(col)


class Table:
    """A table of one kind, made in a database and filled by key."""

    def __init__(self, con, name, kind):
        self.con, self.name, self.kind = con, name, kind
        self.n = _names(name)
        self.b = {}  # key -> b, which a contentless full-text delete must repeat
        for stmt in kind.ddl:
            con.execute(stmt.format(**self.n))

    def insert(self, keys, rng):
        k, t = self.kind.key, self.n["t"]
        for key in keys:
            b = self.b[key] = _value("b", key, rng)
            if k in ("fts", "fts_contentless"):
                self.con.execute(f"INSERT INTO {t}(rowid, b) VALUES (?, ?)", (key, b))
            elif k == "rtree":
                self.con.execute(f"INSERT INTO {t}(id, x0, x1) VALUES (?, ?, ?)", (key, key, key + 10))
            else:
                cols = list(self.kind.cols)
                vals = [b if c == "b" else _value(c, key, rng) for c in cols]
                target = t
                if k == "rowid":
                    cols.insert(0, "_rowid_")
                    vals.insert(0, key)
                elif k in ("id", "rowid+id", "external:id"):
                    cols.insert(0, "id")
                    vals.insert(0, key)
                    if k == "rowid+id":
                        cols.insert(0, "_rowid_")
                        vals.insert(0, key)
                elif k == "external:rowid":
                    cols.insert(0, "_rowid_")
                    vals.insert(0, key)
                if k.startswith("external:"):
                    target = self.n["docs"]
                self.con.execute(f"INSERT INTO {target}({', '.join(q(c) for c in cols)}) "
                                 f"VALUES ({', '.join('?' * len(vals))})", vals)

    def delete(self, keys):
        k, t = self.kind.key, self.n["t"]
        for key in keys:
            if k == "fts_contentless":
                self.con.execute(f"INSERT INTO {t}({t}, rowid, b) VALUES ('delete', ?, ?)", (key, self.b[key]))
            elif k.startswith("external:"):
                self.con.execute(f"DELETE FROM {self.n['docs']} WHERE {k.split(':')[1]} = ?", (key,))
            else:
                col = {"rowid": "_rowid_", "rowid+id": "_rowid_", "id": "id", "pk": "a"}.get(k, "rowid")
                self.con.execute(f"DELETE FROM {t} WHERE {col} = ?", (key,))

    def renumbered_names(self):
        return {self.name + s for s in self.kind.renumbers}


# --------------------------------------------------------------------------
# 1. The rule, pinned by experiment, and the guard's agreement with it

# (kind, keys kept): 200 rows of keys 1..200, then the first 100 deleted
# (keys 101..200 stay, not 1..N), or the last 100 (1..100 stay).
KEYS_101_200, KEYS_1_100 = "101..200", "1..100"
RULE_CASES = [(name, KEYS_101_200) for name in KINDS] + [("no_index", KEYS_1_100), ("trigger", KEYS_1_100)]


def _rule_db(path, kind_name, kept):
    """A database with one table of that kind, named after it."""
    name = f"k_{kind_name}"
    con = connect(path)
    try:
        t = Table(con, name, KINDS[kind_name])
        rng = random.Random(kind_name)
        con.execute("BEGIN")
        t.insert(range(1, 201), rng)
        t.delete(range(1, 101) if kept == KEYS_101_200 else range(101, 201))
        con.execute("COMMIT")
    finally:
        con.close()
    # the case's expected answer
    return name, (t.renumbered_names() if kept == KEYS_101_200 else set())


@pytest.mark.parametrize("kind,kept", RULE_CASES, ids=[f"{k}-{v}" for k, v in RULE_CASES])
def test_plain_vacuum_renumbers_exactly_the_unindexed_tables(tmp_path, kind, kept):
    """SQLite alone: a plain VACUUM changes the rowids of exactly the tables
    the rule names, and keeps every row."""
    db = tmp_path / "rule.db"
    name, expected = _rule_db(db, kind, kept)
    before = snapshot(db)
    after = snapshot(vacuum_copy(db, tmp_path / "copy.db"))
    changed = renumbered_by_vacuum(before, after)
    assert changed == expected, f"{kind} ({kept}): VACUUM changed the rowids of {changed}, expected {expected}"
    for t in changed:
        # renumbered 1..N in rowid order
        assert [r[0] for r in after.rows[t]] == list(range(1, len(after.rows[t]) + 1)), t
        assert [r[1:] for r in after.rows[t]] == [r[1:] for r in before.rows[t]], t
    if not changed:
        assert before.differences(after) == [], f"{kind}: VACUUM changed {before.differences(after)}"
    con = connect(db)
    try:
        autoindexes = con.execute("SELECT count(*) FROM pragma_index_list(?) WHERE origin = 'pk'",
                                  (name,)).fetchone()[0]
    finally:
        con.close()
    # The two DESC spellings: only the column constraint gets an index.
    if kind == "integer_pk_desc_column":
        assert autoindexes == 1, "INTEGER PRIMARY KEY DESC (column constraint) should not be a rowid alias"
    if kind == "pk_desc_table_constraint":
        assert autoindexes == 0, "PRIMARY KEY(id DESC) on an INTEGER column should be a rowid alias"


@pytest.mark.parametrize("kind,kept", RULE_CASES, ids=[f"{k}-{v}" for k, v in RULE_CASES])
def test_guard_refuses_exactly_the_renumbering_vacuums(tmp_path, kind, kept):
    """sqlite-maintctl vacuum --force --json refuses the VACUUMs that would
    change rowids (naming the table and its rowids, leaving the file as it
    was) and runs the others, which keep every table's rows and rowids."""
    db = tmp_path / "rule.db"
    name, expected = _rule_db(db, kind, kept)
    before, digest = snapshot(db), helpers.sha256(db)
    res = helpers.run_ctl("vacuum", "--force", "--json", db)
    o = res.one()
    if expected:
        assert res.rc == ROWIDS_REFUSED and o["status"] == "rowids_would_change", res.describe()
        want = []
        for t in sorted(expected):
            rows, lo, hi = rowid_figures(db, t)
            assert (rows, lo, hi) == (100, 101, 200)
            want.append({"name": t, "rows": rows, "rowid_min": lo, "rowid_max": hi})
        assert o["renumbered_tables"] == want, res.describe()
        for t in expected:
            assert f"{t} (100 rows, rowids 101..200)" in o["error"], o["error"]
        assert_untouched(db, digest, res)
    else:
        assert res.rc == 0 and o["status"] == "ok", res.describe()
        assert "renumbered_tables" not in o, res.describe()
        assert o["freelist_count"] == 0, res.describe()
        after = snapshot(db)
        assert before.differences(after) == [], f"{kind}: the VACUUM changed {before.differences(after)}"
        assert helpers.quick_check(str(db)) == ["ok"]


# --------------------------------------------------------------------------
# 2. The case: notes and its external-content FTS5 index

NOTES_SCHEMA = """
CREATE TABLE notes(title, body);
CREATE VIRTUAL TABLE notes_fts USING fts5(title, body, content='notes');
CREATE TRIGGER notes_ai AFTER INSERT ON notes BEGIN
  INSERT INTO notes_fts(rowid, title, body) VALUES (new.rowid, new.title, new.body);
END;
CREATE TRIGGER notes_ad AFTER DELETE ON notes BEGIN
  INSERT INTO notes_fts(notes_fts, rowid, title, body) VALUES ('delete', old.rowid, old.title, old.body);
END;
CREATE TRIGGER notes_au AFTER UPDATE ON notes BEGIN
  INSERT INTO notes_fts(notes_fts, rowid, title, body) VALUES ('delete', old.rowid, old.title, old.body);
  INSERT INTO notes_fts(rowid, title, body) VALUES (new.rowid, new.title, new.body);
END;
"""

# Long words: the notes are large next to their full-text index, so the
# deleted half frees about 40% of the pages.
FILLER = ("incomprehensibilities", "counterrevolutionaries", "electroencephalograph",
          "uncharacteristically", "internationalization")


def make_notes_db(path, mode="delete"):
    """notes(title, body) with no INTEGER PRIMARY KEY and no index, an
    external-content FTS5 index kept in sync by triggers, 4,000 notes, the
    oldest 2,000 deleted. Only note i has the word uniq<i>x. Returns the
    fragmentation percent.

    mode "wal": in WAL mode, and the deletes are made by an application in
    another process that stays connected (wal_autocheckpoint=0), so they
    stay in the -wal; returns (fragmentation, the helpers.AppProcess), which
    the caller must close."""
    rng = random.Random(4000)
    con = connect(path)
    try:
        if mode == "wal":
            assert con.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
        con.executescript(NOTES_SCHEMA)
        con.execute("BEGIN")
        con.executemany("INSERT INTO notes(title, body) VALUES (?, ?)",
                        [(f"note {i}", f"uniq{i}x " + " ".join(rng.choice(FILLER) for _ in range(40)))
                         for i in range(1, 4001)])
        con.execute("COMMIT")
        if mode != "wal":
            con.execute("DELETE FROM notes WHERE rowid <= 2000")
    finally:
        con.close()
    app = None
    if mode == "wal":
        app = helpers.AppProcess(path)
        app.sql("DELETE FROM notes WHERE rowid <= 2000")
        assert os.path.getsize(f"{path}-wal") > 0
    frag = fragmentation(path)
    # above the urgent threshold (30%), so the daemon wants it at once
    assert frag >= 35, f"{path}: only {frag:.2f}% free pages"
    return (frag, app) if mode == "wal" else frag


def files_digest(path):
    """sha256 of the database and its -wal (None when absent): what a
    refused VACUUM must leave as it was. (The -shm is shared memory the
    application's own reads may touch.)"""
    return {s: helpers.sha256(f"{path}{s}") if os.path.exists(f"{path}{s}") else None for s in ("", "-wal")}


def notes_rowids(path):
    con = connect(path)
    try:
        return con.execute("SELECT count(*), min(rowid), max(rowid) FROM notes").fetchone()
    finally:
        con.close()


def search(path, word):
    """What the application's search shows: (rowid, title) of the matches."""
    con = connect(path)
    try:
        return con.execute("SELECT rowid, title FROM notes_fts WHERE notes_fts MATCH ?", (word,)).fetchall()
    finally:
        con.close()


def assert_search_works(path):
    assert search(path, "uniq3000x") == [(3000, "note 3000")]
    assert search(path, "uniq1000x") == []  # deleted


def assert_search_broken(path):
    """What a renumbering VACUUM does to the notes and their index (SQLite
    3.40.1): the rows are 1..2000 now, the index still says 2001..4000."""
    assert notes_rowids(path) == (2000, 1, 2000)
    con = connect(path)
    try:
        # the note itself is intact, under a new rowid
        assert con.execute("SELECT rowid FROM notes WHERE title = 'note 3000'").fetchall() == [(1000,)]
        # the index still finds rowid 3000, which no note has any more
        assert con.execute("SELECT rowid FROM notes_fts WHERE notes_fts MATCH 'uniq3000x'").fetchall() == [(3000,)]
        # so the application's join finds nothing
        assert con.execute("SELECT n.rowid, n.title FROM notes_fts f JOIN notes n ON n.rowid = f.rowid "
                           "WHERE notes_fts MATCH 'uniq3000x'").fetchall() == []
        # and reading the match's columns through the index fails
        with pytest.raises(sqlite3.DatabaseError, match="malformed"):
            con.execute("SELECT title FROM notes_fts WHERE notes_fts MATCH 'uniq3000x'").fetchall()
        # while neither SQLite's check nor the FTS5 check sees a problem
        assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        con.execute("INSERT INTO notes_fts(notes_fts) VALUES ('integrity-check')")
    finally:
        con.close()


NOTES_REFUSED = [{"name": "notes", "rows": 2000, "rowid_min": 2001, "rowid_max": 4000}]


def test_ctl_refuses_to_renumber_notes(tmp_path):
    db = tmp_path / "notes.db"
    make_notes_db(db)
    assert_search_works(db)
    digest = helpers.sha256(db)
    res = helpers.run_ctl("--json", "vacuum", db)
    o = res.one()
    assert res.rc == ROWIDS_REFUSED, res.describe()
    assert o["status"] == "rowids_would_change", res.describe()
    assert o["renumbered_tables"] == NOTES_REFUSED, res.describe()
    assert "notes (2000 rows, rowids 2001..4000)" in o["error"], o["error"]
    assert_untouched(db, digest, res)
    assert notes_rowids(db) == (2000, 2001, 4000)
    assert_search_works(db)
    # the human form says the same on stderr
    res = helpers.run_ctl("vacuum", db)
    assert res.rc == ROWIDS_REFUSED and res.out == "", res.describe()
    assert "rowids_would_change" in res.err and "notes (2000 rows, rowids 2001..4000)" in res.err, res.describe()
    assert_untouched(db, digest, res)


@pytest.mark.parametrize("how", ["flag", "config"])
def test_ctl_allowed_renumbering_breaks_the_index(tmp_path, how):
    """--allow-rowid-change (or vacuum.allow_rowid_change in the config)
    runs the VACUUM, names the table renumbered, and the index then points
    at rowids no note has: what the guard is there to prevent."""
    db = tmp_path / "notes.db"
    make_notes_db(db)
    if how == "flag":
        res = helpers.run_ctl("--json", "vacuum", "--allow-rowid-change", db)
    else:
        cfg = tmp_path / "maintd.yaml"
        cfg.write_text(config_text(tmp_path / "state", [{"path": db, "vacuum": {"allow_rowid_change": True}}]))
        res = helpers.run_ctl("--json", "-c", cfg, "vacuum", db)
    o = res.one()
    assert res.rc == 0 and o["status"] == "ok", res.describe()
    assert o["renumbered_tables"] == NOTES_REFUSED, res.describe()
    assert o["freelist_count"] == 0
    assert_search_broken(db)


def test_ctl_reports_corruption_before_rowids(tmp_path):
    """A corrupt database whose table would also be renumbered is reported
    as corrupt (exit 3), not refused for its rowids."""
    db = tmp_path / "corrupt.db"
    con = connect(db)
    try:
        con.execute("CREATE TABLE n(a, b)")
        con.execute("BEGIN")
        con.executemany("INSERT INTO n VALUES (?, randomblob(1500))", [(i,) for i in range(1200)])
        con.execute("COMMIT")
        con.execute("DELETE FROM n WHERE rowid % 5 < 2")
        ps = con.execute("PRAGMA page_size").fetchone()[0]
        leaves = [r[0] for r in con.execute(
            "SELECT pageno FROM dbstat WHERE name = 'n' AND pagetype = 'leaf' ORDER BY pageno")]
    finally:
        con.close()
    with open(db, "r+b") as f:  # overwrite the cell pointers of a few leaves
        for p in leaves[len(leaves) // 2:len(leaves) // 2 + 3]:
            f.seek((p - 1) * ps)
            hdr = f.read(8)
            assert hdr[0] == 0x0D
            f.seek((p - 1) * ps + 8)
            f.write(b"\xff" * 2 * max(int.from_bytes(hdr[3:5], "big"), 1))
    assert helpers.quick_check(str(db)) != ["ok"]
    digest = helpers.sha256(db)
    res = helpers.run_ctl("--json", "vacuum", "--force", db)
    o = res.one()
    assert res.rc == 3 and o["status"] == "corrupt", res.describe()
    assert "renumbered_tables" not in o, res.describe()
    assert_untouched(db, digest, res)


def make_many_tables_db(path, count):
    """count tables without an index, rowids 16..30 each (one row a page,
    half of them free): every one would be renumbered. Returns their names."""
    names = [f"application_table_number_{i:02d}" for i in range(count)]
    con = connect(path)
    try:
        con.execute("BEGIN")
        for n in names:
            con.execute(f"CREATE TABLE {n}(a, b)")
            con.executemany(f"INSERT INTO {n} VALUES (?, randomblob(2000))", [(i,) for i in range(30)])
        for n in names:  # after every insert, so the freed pages stay free
            con.execute(f"DELETE FROM {n} WHERE rowid <= 15")
        con.execute("COMMIT")
    finally:
        con.close()
    return names


def test_ctl_error_names_every_table(tmp_path):
    db = tmp_path / "many.db"
    names = make_many_tables_db(db, 12)
    res = helpers.run_ctl("--json", "vacuum", "--force", db)
    o = res.one()
    assert res.rc == ROWIDS_REFUSED, res.describe()
    # the JSON names them all (this part holds)
    assert [t["name"] for t in o["renumbered_tables"]] == names, res.describe()
    missing = [n for n in names if f"{n} (15 rows, rowids 16..30)" not in o["error"]]
    assert missing == [], f"the error text does not name {missing}: {o['error']!r}"


def _waiting_to_write(pid, path):
    """True when process pid, or its job process (jobproc.h), has path open
    read-write (its write connection: the read-only look opens it
    read-only) and sleeps in a nanosleep (SQLite's busy handler): it waits
    for the application's lock."""
    for p in helpers.process_tree(pid):
        try:
            with open(f"/proc/{p}/syscall") as f:
                syscall = f.read().split()[0]
            with open(f"/proc/{p}/wchan") as f:
                sleeping = syscall in ("35", "230") or "nanosleep" in f.read()  # x86-64 numbers, or any arch
            for fd in os.listdir(f"/proc/{p}/fd"):
                if os.readlink(f"/proc/{p}/fd/{fd}") != str(path):
                    continue
                with open(f"/proc/{p}/fdinfo/{fd}") as f:
                    flags = int(next(x for x in f if x.startswith("flags:")).split()[1], 8)
                if flags & os.O_ACCMODE == os.O_RDWR and sleeping:
                    return True
        except (FileNotFoundError, ProcessLookupError, StopIteration):
            pass
    return False


def test_ctl_guard_holds_for_what_commits_while_vacuum_waits(tmp_path):
    """A queue-like table without an index, rowids 1..400 (VACUUM keeps
    them): the application is deleting the oldest 200 in a transaction
    when the VACUUM starts, and commits while the VACUUM waits for its
    lock. The VACUUM must not then renumber 201..400 to 1..200 unasked."""
    db = tmp_path / "queue.db"
    con = connect(db)
    try:
        con.execute("CREATE TABLE q(a, b)")
        con.execute("BEGIN")
        con.executemany("INSERT INTO q VALUES (?, randomblob(2000))", [(i,) for i in range(1, 401)])
        con.execute("COMMIT")
    finally:
        con.close()
    cfg = tmp_path / "maintd.yaml"
    cfg.write_text(config_text(tmp_path / "state", [db], retry={"busy_timeout": "20s"}))
    app = helpers.LockHolder(db, "BEGIN IMMEDIATE", ["DELETE FROM q WHERE rowid <= 200"])
    try:
        ctl = subprocess.Popen([helpers.MAINTCTL_BIN, "--json", "-c", str(cfg), "vacuum", "--force", str(db)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 15
            while not _waiting_to_write(ctl.pid, db):
                assert ctl.poll() is None, f"sqlite-maintctl ended before waiting: {ctl.communicate()}"
                assert time.monotonic() < deadline, "sqlite-maintctl never waited for the lock"
                time.sleep(0.002)
            app.release("COMMIT")
            out, err = ctl.communicate(timeout=60)
        finally:
            if ctl.poll() is None:
                ctl.kill()
                ctl.wait()
    finally:
        app.close()
        app.kill()
    o = json.loads(out)
    assert rowid_figures(db, "q") == (200, 201, 400), \
        f"VACUUM renumbered q unasked (exit {ctl.returncode}): {o}"
    assert o["status"] == "rowids_would_change", o


@pytest.mark.parametrize("mode", ["delete", "wal"])
def test_ctl_vacuum_goes_through_continuous_commits(tmp_path, mode):
    """An application commits small transactions one after another (busy
    timeout 10 s), from before sqlite-maintctl starts until after it ends.
    Every table has an INTEGER PRIMARY KEY or an index, so no commit
    between the checks and the VACUUM can make it renumber a rowid: one
    attempt is enough, and the application sees no error. Then the
    application's schema gains a table with neither, rowids 11..40: that
    VACUUM is refused, commits or not."""
    db = tmp_path / "busy.db"
    # big enough that the checks outlast many of the application's commits
    helpers.make_db(db, 35, mode, 4000, index=True)
    initial = _blob_digests(db)
    cfg = tmp_path / "maintd.yaml"
    cfg.write_text(config_text(tmp_path / "state", [db], retry={"busy_timeout": "10s"}))
    stop = tmp_path / "stop-writing"
    # no mass deletes, no long transactions: small commits, as fast as it goes
    writer = helpers.Script(helpers.WRITER_SCRIPT, db, stop, 1e9, 1e9, 0, 600)
    try:
        _wait_for_commits(db, 1, writer)
        t0 = time.time()
        res = helpers.run_ctl("-c", cfg, "--json", "--attempts", "1", "vacuum", "--force", db, timeout=120)
        t1 = time.time()
        # the application goes on after the VACUUM
        _wait_for_commits(db, _commits(db) + 1, writer)

        # a queue-like table without an index; its oldest ten rows consumed
        con = connect(db)
        try:
            con.execute("PRAGMA busy_timeout = 10000")
            con.execute("BEGIN IMMEDIATE")
            con.execute("CREATE TABLE q(a, b)")
            con.executemany("INSERT INTO q VALUES (?, randomblob(100))", [(i,) for i in range(1, 41)])
            con.execute("DELETE FROM q WHERE rowid <= 10")
            con.execute("COMMIT")
        finally:
            con.close()
        refused = helpers.run_ctl("-c", cfg, "--json", "--attempts", "1", "vacuum", "--force", db, timeout=120)
        _wait_for_commits(db, _commits(db) + 1, writer)
        stop.touch()
        rep = writer.result()
    finally:
        stop.touch()
        writer.kill()

    o = res.one()
    assert rep["errors"] == 0, f"the application saw errors: {rep['error_texts']}"
    assert res.rc == 0 and o["status"] == "ok", res.describe()
    assert any(t0 <= c <= t1 for c in rep["commits"]), \
        "the application committed nothing while sqlite-maintctl ran: the test proves nothing"
    # the pages are packed; the file system gets them back once the -wal is
    # truncated, which an application committing all the time may delay
    # (checkpoint_busy: the -wal still holds the new pages)
    assert o["freelist_count"] == 0 and o["page_bytes_reclaimed"] > 0, res.describe()
    assert o["bytes_reclaimed"] > 0 or o["checkpoint_busy"], res.describe()
    o = refused.one()
    assert refused.rc == ROWIDS_REFUSED and o["status"] == "rowids_would_change", refused.describe()
    assert o["renumbered_tables"] == [{"name": "q", "rows": 30, "rowid_min": 11, "rowid_max": 40}], refused.describe()
    assert rowid_figures(db, "q") == (30, 11, 40)
    # every row the application committed is there, with its bytes
    problems, _, _, _ = helpers.open_and_verify(db)
    assert problems == ["ok"], problems
    now = _blob_digests(db)
    assert sorted(now) == rep["ids"], "the rows of t are not what the application committed"
    for i, h in now.items():
        assert h == initial.get(i, hashlib.sha256(helpers.writer_blob(i)).digest()), f"row {i} changed"
    assert _commits(db) == rep["write_tx"]


def _blob_digests(path):
    con = connect(path)
    try:
        return {i: hashlib.sha256(b).digest() for i, b in con.execute("SELECT id, b FROM t")}
    finally:
        con.close()


def _commits(path):
    """The application's write transactions so far: one row of app each."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return con.execute("SELECT count(*) FROM app").fetchone()[0]
    finally:
        con.close()


def _wait_for_commits(path, n, writer, timeout=60):
    deadline = time.monotonic() + timeout
    while _commits(path) < n:
        assert writer.proc.poll() is None, f"the application ended: {writer.proc.stderr.read()}"
        assert time.monotonic() < deadline, f"the application did not reach {n} commits in {timeout}s"
        time.sleep(0.01)


GDB = shutil.which("gdb")
# The work is done in a job process (fork, then exec of the same program:
# jobproc.h): gdb follows the tool there, and through its exec.
FOLLOW_JOB = ["set follow-fork-mode child", "set detach-on-fork on", "set follow-exec-mode same"]

# The application's commit between sqlite-maintctl's checks and its VACUUM:
# a row, or a new table without key or index whose rowids are 11..40.
COMMIT_BETWEEN = r"""
import sqlite3, sys
con = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=10)
con.execute("BEGIN IMMEDIATE")
if sys.argv[2] == "schema":
    con.execute("CREATE TABLE q(a, b)")
    con.executemany("INSERT INTO q VALUES (?, 'x')", [(i,) for i in range(1, 41)])
    con.execute("DELETE FROM q WHERE rowid <= 10")
else:
    con.execute("INSERT INTO app(note) VALUES ('between the checks and the VACUUM')")
con.execute("COMMIT")
con.close()
"""

# Another connection of the application while the VACUUM holds its lock:
# a write (no busy timeout) that must be refused, then its close.
WRITE_DURING = r"""
import sqlite3, sys
con = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=0)
try:
    con.execute("INSERT INTO app(note) VALUES ('during the VACUUM')")
    res = "wrote"
except sqlite3.OperationalError as e:
    res = str(e)
con.close()
with open(sys.argv[2], "w") as f:
    f.write(res)
"""


def vacuum_under_gdb(tmp_path, cfg, db, commands, attempts=None):
    """sqlite-maintctl --json vacuum --force db (with --attempts when
    given) run under gdb with these commands: gdb's completed process."""
    script = tmp_path / "gdb.cmd"
    # the program's stdout to a file of its own: gdb's "[New process N]"
    # lines, written to the same pipe, could land inside its JSON line
    out = tmp_path / "gdb-program.out"
    args = ["-c", str(cfg), "--json"] + (["--attempts", str(attempts)] if attempts else []) + ["vacuum", "--force", str(db)]
    # "run ARGS > FILE" sets the arguments anew: all of them, quoted for gdb's shell
    run = "run " + " ".join(shlex.quote(a) for a in args) + f" > {shlex.quote(str(out))}"
    script.write_text("\n".join(run if c == "run" else c for c in commands) + "\n")
    argv = [GDB, "-q", "-batch", "-nx", "-x", str(script), "--args", helpers.MAINTCTL_BIN] + args
    p = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    program = out.read_text() if out.exists() else ""
    # its lines first, then gdb's: callers read the JSON lines of either
    return subprocess.CompletedProcess(p.args, p.returncode, program + p.stdout, p.stderr)


@pytest.mark.parametrize("mode", ["delete", "wal"])
@pytest.mark.parametrize("commit", ["row", "schema"])
def test_ctl_commit_between_checks_and_vacuum(tmp_path, mode, commit):
    """The order made certain with gdb: sqlite-maintctl is stopped once its
    checks are done and its VACUUM is next, the application commits, and
    the VACUUM starts. No table could be renumbered by the checks' sight:
    a committed row changes nothing they decided, and the VACUUM goes on;
    a new table whose rowids VACUUM would renumber refuses it. While the
    guard looks again (the VACUUM holding its write lock), it must not
    let that lock go: another connection of the application cannot write,
    and its close leaves the -wal and -shm (it would checkpoint and remove
    them if it could take the EXCLUSIVE lock of the last connection)."""
    if GDB is None:
        pytest.skip("gdb is not installed")
    db = tmp_path / "x.db"
    helpers.make_db(db, 35, mode, 600, index=True)
    cfg = tmp_path / "maintd.yaml"
    cfg.write_text(config_text(tmp_path / "state", [db], retry={"busy_timeout": "1s"}))
    between, during = tmp_path / "between.py", tmp_path / "during.py"
    between.write_text(COMMIT_BETWEEN)
    during.write_text(WRITE_DURING)
    tried, sides = tmp_path / "during.out", tmp_path / "sides.out"
    g = vacuum_under_gdb(tmp_path, cfg, db, [
        "set pagination off",
        "set confirm off",
        *FOLLOW_JOB,
        "break sqlite3_set_authorizer",      # checked; the VACUUM's connection open, the VACUUM next
        "run",
        f"shell {helpers.PYTHON} {between} {db} {commit}",
        "delete",
        "break schema_unchanged",            # the guard sees the commit and looks at the schema again
        "continue",
        "finish",
        f"shell {helpers.PYTHON} {during} {db} {tried}",
        f"shell ls {tmp_path} > {sides}",
        "delete",
        "continue",
        "quit",
    ], attempts=1)
    assert re.search(r"Breakpoint 2(\.\d+)?, schema_unchanged", g.stdout), "the guard never looked at the schema again\n" \
        + g.stdout + g.stderr
    o = helpers.ctl_json_in(g.stdout)
    assert tried.read_text() == "database is locked", \
        f"the application wrote while the VACUUM held its lock: {tried.read_text()!r}"
    if mode == "wal":
        assert {"x.db-wal", "x.db-shm"} <= set(sides.read_text().split()), \
            f"the -wal and -shm were removed under the VACUUM: {sides.read_text().split()}"
    if commit == "row":
        assert o["status"] == "ok" and o["freelist_count"] == 0, o
    else:
        assert o["status"] == "busy" and "a commit came between" in o["error"], o
        assert rowid_figures(db, "q") == (30, 11, 40)
    problems, _, _, _ = helpers.open_and_verify(db)
    assert problems == ["ok"], problems
    con = connect(db)
    try:
        assert con.execute("SELECT note FROM app").fetchall() == \
            ([("between the checks and the VACUUM",)] if commit == "row" else [])
    finally:
        con.close()


def test_ctl_database_renamed_over_between_checks_and_vacuum(tmp_path):
    """An application replaces its database by renaming a new file over it
    (an atomic update) after sqlite-maintctl has checked the old one and
    before its VACUUM: the new file, whose table without key or index has
    rowids 201..400, was never checked. It must not be vacuumed as the
    old one was judged: the next attempt checks it and refuses."""
    if GDB is None:
        pytest.skip("gdb is not installed")
    db, new = tmp_path / "x.db", tmp_path / "new.db"
    helpers.make_db(db, 35, "delete", 600, index=True)
    con = connect(new)
    try:
        con.execute("CREATE TABLE q(a, b)")
        con.execute("BEGIN")
        con.executemany("INSERT INTO q VALUES (?, randomblob(2000))", [(i,) for i in range(1, 401)])
        con.execute("COMMIT")
        con.execute("DELETE FROM q WHERE rowid <= 200")
    finally:
        con.close()
    cfg = tmp_path / "maintd.yaml"
    cfg.write_text(config_text(tmp_path / "state", [db], retry={"busy_timeout": "1s", "initial_backoff": "100ms"}))
    g = vacuum_under_gdb(tmp_path, cfg, db, [
        "set pagination off",
        "set confirm off",
        *FOLLOW_JOB,
        "break db_open_write",               # checked; the VACUUM's connection next
        "run",
        f"shell mv {new} {db}",
        "delete",
        "continue",
        "quit",
    ])
    assert re.search(r"Breakpoint 1(\.\d+)?, db_open_write", g.stdout), g.stdout + g.stderr
    o = helpers.ctl_json_in(g.stdout)
    assert rowid_figures(db, "q") == (200, 201, 400), f"the unchecked file was vacuumed: {o}"
    assert o["status"] == "rowids_would_change", o
    assert o["renumbered_tables"] == [{"name": "q", "rows": 200, "rowid_min": 201, "rowid_max": 400}], o


# An application that takes its write lock as a commit does (BEGIN
# EXCLUSIVE: no reader either, in rollback mode), says so in the file
# argv[2], holds it until the file argv[3] appears, then lets it go and
# says so in argv[4].
HOLD_EXCLUSIVE = r"""
import os, sqlite3, sys, time
con = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=10)
con.execute("BEGIN EXCLUSIVE")
open(sys.argv[2], "w").close()
while not os.path.exists(sys.argv[3]):
    time.sleep(0.01)
con.execute("COMMIT")
con.close()
open(sys.argv[4], "w").close()
"""


@pytest.mark.parametrize("hold", ["short", "long"])
def test_ctl_vacuum_done_though_the_check_after_meets_a_lock(tmp_path, hold):
    """The VACUUM has committed and the application takes its write lock
    before the check after it can read (gdb holds sqlite-maintctl there
    until the application has the lock). A lock conflict now is no reason to
    call the job busy, which would have it done again: the check waits for
    the application (a short hold: it runs, and says nothing), and if the
    lock outlasts its tries the VACUUM is reported done, with the note that
    the check after did not run; the database is vacuumed and intact either
    way."""
    if GDB is None:
        pytest.skip("gdb is not installed")
    db = tmp_path / "x.db"
    helpers.make_db(db, 35, "delete", 600, index=True)
    cs = helpers.checksum(db)
    cfg = tmp_path / "maintd.yaml"
    cfg.write_text(config_text(tmp_path / "state", [db], retry={"busy_timeout": "50ms"}))
    holder, ready = tmp_path / "hold.py", tmp_path / "locked"
    release, released = tmp_path / "release", tmp_path / "released"
    holder.write_text(HOLD_EXCLUSIVE)
    # short: let go once the check has met the lock (the job stopped at its
    # first wait); long: only after sqlite-maintctl has ended
    short = [
        "delete",
        "break util_sleep_ms",               # the check met the lock and waits
        "continue",
        f"shell touch {release}; while [ ! -e {released} ]; do sleep 0.01; done",
    ] if hold == "short" else []
    g = vacuum_under_gdb(tmp_path, cfg, db, [
        "set pagination off",
        "set confirm off",
        *FOLLOW_JOB,
        "break after_vacuum",                # the VACUUM committed; its check next
        "run",
        # not on gdb's output: the pipe's end would wait for the holder
        f"shell {helpers.PYTHON} {holder} {db} {ready} {release} {released} >/dev/null 2>&1 & "
        f"while [ ! -e {ready} ]; do sleep 0.01; done",
        *short,
        "delete",
        "continue",
        "quit",
    ], attempts=1)
    release.touch()
    assert re.search(r"Breakpoint 1(\.\d+)?, after_vacuum", g.stdout), g.stdout + g.stderr
    if hold == "short":
        assert re.search(r"Breakpoint 2(\.\d+)?, util_sleep_ms", g.stdout), g.stdout + g.stderr
    o = helpers.ctl_json_in(g.stdout)
    assert o["status"] == "ok", o
    if hold == "short":
        assert "check_after" not in o, o
    else:
        assert "did not run" in o["check_after"], o
    deadline = time.monotonic() + 60
    while not released.exists():  # the application's lock gone
        assert time.monotonic() < deadline, "the application never let its lock go"
        time.sleep(0.05)
    assert helpers.quick_check(db, "integrity_check") == ["ok"]
    con = sqlite3.connect(db)
    try:
        assert con.execute("PRAGMA freelist_count").fetchone()[0] == 0
    finally:
        con.close()
    assert helpers.checksum(db) == cs, "the rows changed"


# --------------------------------------------------------------------------
# The daemon

def _after(entry):
    """A predicate: entries written after this one."""
    t = int(entry["__REALTIME_TIMESTAMP"])
    return lambda e: int(e["__REALTIME_TIMESTAMP"]) > t


def _held_poll(db):
    """The debug line of a poll that found the VACUUM held for rowids."""
    def held(e):
        m = str(e.get("MESSAGE", ""))
        return m.startswith(f"{db}: fragmentation ") and \
            m.endswith("VACUUM held: it would renumber rowids (schema unchanged)")
    return held


def _of(d, db, name):
    return [e for e in d.entries() if entry_matches(e, name, DB_PATH=db)]


def _wait_held_polls(d, db, since, count=3):
    """Wait for count polls after entry since that held the VACUUM back:
    the positive sign that the daemon looked again and did not retry."""
    held = _held_poll(db)
    after = _after(since)
    d.wait_for_entries(count, lambda e: after(e) and held(e), timeout=30)


@pytest.mark.parametrize("mode", ["delete", "wal"])
def test_daemon_rowid_guard_holds_until_the_schema_changes(tmp_path, daemon, mode):
    """ROWID_GUARD, then no retry across later polls, again after a reload,
    and a VACUUM keeping the rowids once the application adds an index.
    In WAL mode the application stays connected and its changes (the
    deletes, the index) stay in the -wal, where the daemon must see the
    schema change."""
    dbs = tmp_path / "dbs"
    dbs.mkdir()
    db = dbs / "notes.db"
    if mode == "wal":
        frag, app = make_notes_db(db, "wal")
    else:
        frag = make_notes_db(db)
        app = helpers.AppProcess(db)  # the application, idle, for its schema change
    try:
        _daemon_hold_then_schema_change(tmp_path, daemon, db, frag, app, mode)
    finally:
        app.close()
        app.kill()


def _daemon_hold_then_schema_change(tmp_path, daemon, db, frag, app, mode):
    digest = files_digest(db)
    d = daemon.start(config_text(tmp_path / "state", [db], poll_interval="1s"))

    guard = d.wait_for_entry(msgid="ROWID_GUARD", DB_PATH=db)
    assert guard["PRIORITY"] == "4", guard
    assert guard["OPERATION"] == "vacuum", guard
    assert guard["TABLES"] == "notes", guard
    assert abs(float(guard["FRAGMENTATION_BEFORE"]) - frag) <= 0.01, (guard["FRAGMENTATION_BEFORE"], frag)
    assert "notes (2000 rows, rowids 2001..4000)" in guard["MESSAGE"], guard["MESSAGE"]

    # Three later polls saw the database and held the VACUUM back ...
    _wait_held_polls(d, db, guard)
    # ... and nothing was tried meanwhile: the files are as they were.
    assert len(_of(d, db, "ROWID_GUARD")) == 1, format_entries(d.entries())
    assert _of(d, db, "VACUUM_DONE") == [] and _of(d, db, "JOB_FAILED") == [], format_entries(d.entries())
    assert files_digest(db) == digest
    if mode == "delete":
        assert helpers.side_files(str(db)) == []
    assert_search_works(db)

    # A reload forgets the hold: refused once more, then held again.
    d.signal(signal.SIGHUP)
    guard2 = d.wait_for_entries(2, M("ROWID_GUARD", DB_PATH=db))[1]
    assert guard2["TABLES"] == "notes", guard2
    _wait_held_polls(d, db, guard2)
    assert len(_of(d, db, "ROWID_GUARD")) == 2 and _of(d, db, "VACUUM_DONE") == [], format_entries(d.entries())
    assert files_digest(db) == digest

    # The application indexes notes (a schema change): the rowids are safe
    # now, and the daemon vacuums at its next poll, keeping them.
    app.sql("CREATE INDEX notes_title ON notes(title)")
    assert fragmentation(db) >= 30, "no longer urgent after the index: the test needs it urgent"
    done = d.wait_for_entry(msgid="VACUUM_DONE", DB_PATH=db)
    assert "RENUMBERED_TABLES" not in done, done
    assert len(_of(d, db, "ROWID_GUARD")) == 2, format_entries(d.entries())
    assert freelist_count(db) == 0
    assert notes_rowids(db) == (2000, 2001, 4000)
    assert_search_works(db)
    # the application's own connection sees the same
    assert app.query("SELECT rowid, title FROM notes_fts WHERE notes_fts MATCH 'uniq3000x'") == [(3000, "note 3000")]
    assert helpers.quick_check(str(db), "integrity_check") == ["ok"]
    assert d.stop() == 0, d.describe()


def test_daemon_allowed_renumbering_is_logged(tmp_path, daemon):
    dbs = tmp_path / "dbs"
    dbs.mkdir()
    db = dbs / "notes.db"
    frag = make_notes_db(db)
    d = daemon.start(config_text(tmp_path / "state", [{"path": db, "vacuum": {"allow_rowid_change": True}}],
                                 poll_interval="1s"))
    done = d.wait_for_entry(msgid="VACUUM_DONE", DB_PATH=db)
    assert done["RENUMBERED_TABLES"] == "notes", done
    assert abs(float(done["FRAGMENTATION_BEFORE"]) - frag) <= 0.01, done
    assert "rowids renumbered 1..N (allowed) in notes" in done["MESSAGE"], done["MESSAGE"]
    assert _of(d, db, "ROWID_GUARD") == [], format_entries(d.entries())
    assert_search_broken(db)
    assert d.stop() == 0, d.describe()


def test_daemon_rowid_guard_names_every_table(tmp_path, daemon):
    dbs = tmp_path / "dbs"
    dbs.mkdir()
    db = dbs / "many.db"
    names = make_many_tables_db(db, 40)
    assert fragmentation(db) >= 30
    d = daemon.start(config_text(tmp_path / "state", [db], poll_interval="1s"))
    guard = d.wait_for_entry(msgid="ROWID_GUARD", DB_PATH=db)
    assert guard["TABLES"].split(", ") == names, guard["TABLES"]


# --------------------------------------------------------------------------
# 3. Property test: random schemas, the guard against a real VACUUM

KEY_PLANS = ("sequential", "gaps", "negative")
DELETE_PLANS = ("random", "suffix", "none")
NAME_STYLES = ("t{i}", "Mixed Case {i}", 'dq"{i}', "sq'{i}", "ü{i}", "select{i}")


def _keys(rng, plan, n):
    if plan == "sequential":
        return list(range(1, n + 1))
    if plan == "gaps":
        return sorted(rng.sample(range(1, 20 * n + 2), n))
    return sorted(rng.sample(range(-10 * n - 1, 10 * n + 1), n))  # negative, zero, positive


def _doomed(rng, plan, keys):
    if plan == "none" or not keys:
        return []
    if plan == "suffix":
        return keys[len(keys) - rng.randint(0, len(keys)):]
    return rng.sample(keys, rng.randint(0, len(keys)))


def build_random_db(path, rng):
    """A database of 1-5 tables of random kinds, keys and deletes; returns
    its description (for failure messages)."""
    wal = rng.random() < 0.25
    desc = [f"journal_mode={'wal' if wal else 'delete'}"]
    con = connect(path)
    try:
        # the test's own writes need no fsync (a few per table add seconds on a busy disk)
        con.execute("PRAGMA synchronous=OFF")
        if wal:
            assert con.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
        for i in range(rng.randint(1, 5)):
            kind = KINDS[rng.choice(sorted(KINDS))]
            name = rng.choice(NAME_STYLES).format(i=i)
            t = Table(con, name, kind)
            kplan, dplan = rng.choice(KEY_PLANS), rng.choice(DELETE_PLANS)
            keys = _keys(rng, kplan, rng.choice((0, 1, rng.randint(2, 120))))
            doomed = _doomed(rng, dplan, keys)
            con.execute("BEGIN")
            t.insert(keys, rng)
            con.execute("COMMIT")
            con.execute("BEGIN")
            t.delete(doomed)
            con.execute("COMMIT")
            desc.append(f"{name!r}: {kind.name}, {len(keys)} rows keyed {kplan}, {len(doomed)} deleted ({dplan})")
    finally:
        con.close()
    return desc


def _check_one(db, scratch, rng):
    """Build a random database and hold the guard to the truth; returns
    (status, problems)."""
    desc = build_random_db(db, rng)
    before = snapshot(db)
    truth = renumbered_by_vacuum(before, snapshot(vacuum_copy(db, scratch)))
    digest = helpers.sha256(db)
    res = helpers.run_ctl("--json", "vacuum", "--force", db)
    o = res.one()
    problems = []
    if o["status"] == "ok" and res.rc == 0:
        if truth:
            problems.append(f"VACUUM allowed, yet a plain VACUUM renumbers {sorted(truth)}")
        if "renumbered_tables" in o:
            problems.append(f"renumbered_tables without --allow-rowid-change: {o['renumbered_tables']}")
        diff = before.differences(snapshot(db))
        if diff:
            problems.append(f"the VACUUM changed {diff}")
        if helpers.quick_check(str(db)) != ["ok"]:
            problems.append("quick_check fails after the VACUUM")
    elif o["status"] == "rowids_would_change" and res.rc == ROWIDS_REFUSED:
        named = {t["name"] for t in o["renumbered_tables"]}
        if named != truth:
            problems.append(f"refused naming {sorted(named)}; a plain VACUUM renumbers {sorted(truth)}")
        for t in o["renumbered_tables"]:
            if t["name"] in truth:
                got = (t["rows"], t["rowid_min"], t["rowid_max"])
                if got != rowid_figures(db, t["name"]):
                    problems.append(f"{t['name']}: (rows, min, max) {got}, really {rowid_figures(db, t['name'])}")
        if helpers.sha256(db) != digest or helpers.side_files(str(db)):
            problems.append("the file changed although the VACUUM was refused")
    else:
        problems.append("unexpected outcome")
    if problems:
        problems += desc + [res.describe()]
    return o["status"], problems


def test_property_vacuum_keeps_rowids_or_refuses(tmp_path):
    """For random schemas: every VACUUM the guard allows keeps every
    (table, rowid, row), shadow tables included; every refusal names
    exactly the tables a plain VACUUM renumbers. A fresh seed each run
    (ROWIDS_SEED=<seed> replays one, named in the failure message)."""
    seed = os.environ.get("ROWIDS_SEED") or str(random.SystemRandom().randrange(10 ** 9))
    outcomes, failures = {}, []
    for n in range(PROPERTY_DATABASES):
        db = tmp_path / f"p{n}.db"
        try:
            status, problems = _check_one(db, tmp_path / "copy.db", random.Random(f"{seed}:{n}"))
        except (AssertionError, sqlite3.Error) as e:
            status, problems = "exception", [f"{type(e).__name__}: {e}"]
        outcomes[status] = outcomes.get(status, 0) + 1
        if problems:
            failures.append(f"database #{n} ({db}):\n  " + "\n  ".join(problems))
        else:
            os.unlink(db)
    replay = f"replay with ROWIDS_SEED={seed}"
    assert not failures, f"{len(failures)} of {PROPERTY_DATABASES} databases failed ({replay}):\n\n" + \
        "\n\n".join(failures[:5])
    # both outcomes were exercised
    assert outcomes.get("ok", 0) > 0 and outcomes.get("rowids_would_change", 0) > 0, (outcomes, replay)


# An application inside a write transaction with synchronous=FULL: its
# -journal's header is zeros until the commit's sync (pager.c
# writeJournalHdr()), which a left-over PERSIST journal also has. It holds
# the transaction until the file argv[2] appears, then commits and says so.
HOLD_UNTIL = r"""
import os, sqlite3, sys, time
con = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
con.execute("PRAGMA synchronous=FULL")
con.execute("BEGIN IMMEDIATE")
con.executemany("INSERT INTO app(note) VALUES (?)", [("x" * 500,) for _ in range(50)])
print("held", flush=True)
while not os.path.exists(sys.argv[2]):
    time.sleep(0.01)
con.execute("COMMIT")
open(sys.argv[2] + ".done", "w").close()
"""


def test_ctl_vacuum_keeps_delete_mode_beside_a_live_transaction(tmp_path):
    """The VACUUM's connection keeps the application's journal mode, as
    its files show it; a live transaction's -journal (the application
    holds the RESERVED lock, its header still zeros) shows none: the
    VACUUM runs in DELETE mode and leaves no -journal, whatever it looked
    like when the connection was opened (gdb stops sqlite-maintctl there,
    the application commits, the VACUUM goes on)."""
    if GDB is None:
        pytest.skip("gdb is not installed")
    db = tmp_path / "x.db"
    helpers.make_db(db, 35, "delete", 600, index=True)
    cfg = tmp_path / "maintd.yaml"
    cfg.write_text(config_text(tmp_path / "state", [db], retry={"busy_timeout": "5s"}))
    hold, go = tmp_path / "hold.py", tmp_path / "go"
    hold.write_text(HOLD_UNTIL)
    app = subprocess.Popen([helpers.PYTHON, str(hold), str(db), str(go)], stdout=subprocess.PIPE, text=True)
    try:
        assert app.stdout.readline().strip() == "held"
        with open(f"{db}-journal", "rb") as f:
            assert f.read(8) == bytes(8), "the live journal's header should be zeros: the scenario proves nothing"
        release = tmp_path / "release.py"
        release.write_text(f"import os, time\nopen({str(go)!r}, 'w').close()\n"
                           f"while not os.path.exists({str(go) + '.done'!r}):\n    time.sleep(0.01)\n")
        g = vacuum_under_gdb(tmp_path, cfg, db, [
            "set pagination off",
            "set confirm off",
            *FOLLOW_JOB,
            "break sqlite3_set_authorizer",  # the VACUUM's connection open, its journal mode set
            "run",
            f"shell {helpers.PYTHON} {release}",
            "delete",
            "continue",
        ])
        assert app.wait(timeout=60) == 0
    finally:
        if app.poll() is None:
            app.kill()
    out = [json.loads(line) for line in g.stdout.splitlines() if line.startswith("{")]
    assert out and out[-1]["status"] == "ok", g.stdout + g.stderr
    assert out[-1]["journal_mode"] == "delete", out[-1]
    assert not os.path.exists(f"{db}-journal"), "the VACUUM left a -journal"
