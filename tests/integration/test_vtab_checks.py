# SPDX-License-Identifier: MIT
"""A full check looks inside the full-text (FTS3/4/5) and R*Tree indexes,
which PRAGMA integrity_check does not: each such table is checked on its
own ('integrity-check', rtreecheck()), through `sqlite-maintctl --json
check --full` and through `vacuum --force` under `vacuum: {integrity:
full}`. Every database here is a real file made by the test and damaged
behind SQLite's back (an UPDATE of a shadow table, a schema rewritten with
writable_schema, bytes overwritten in the file).

What an admin expects: a damaged index, or one whose shadow table is gone,
is "corrupt" (exit 3) and named in "problems"; a table SQLite cannot check
here (contentless FTS4, a tokenizer, option or compress function this SQLite
lacks, a content table that is missing or a view, which is never run, FTS5
out of memory on a damaged index) is "cannot_maintain" (exit 1) with the
reason, and never passes for "ok"; the auxiliary modules (fts5vocab, fts4aux,
fts3tokenize) are not indexes and stop nothing; and a VACUUM under
integrity: full never touches a database it could not fully check (its
bytes are unchanged)."""

import json
import os
import shutil
import sqlite3
import struct
import zlib

import pytest

from daemon_fixtures import (  # noqa: F401  (fixtures are used by name)
    M, MSGID, config_text, daemon, format_entries, journald)
from helpers import SOURCE_ROOT, checksum, db_stats, quick_check, sha256, write_config

WORDS = ["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "lambda", "theta", "zeta"]


# --------------------------------------------------------------------------
# Databases

def _text(i, n=12):
    return " ".join(WORDS[(i * 7 + k * 3) % len(WORDS)] + str((i + k) % 17) for k in range(n))


def _q(name):
    """name as an SQL identifier"""
    return '"' + name.replace('"', '""') + '"'


def _connect(db):
    return sqlite3.connect(str(db), isolation_level=None)


def _add_pad(con, name="pad", rows=300):
    """A plain table with every other row deleted: the VACUUM has pages to
    give back, so whether it ran shows in the file."""
    con.execute(f"CREATE TABLE {name}(id INTEGER PRIMARY KEY, b BLOB)")
    con.execute("BEGIN")
    con.executemany(f"INSERT INTO {name}(id, b) VALUES (?, zeroblob(3000))", [(i,) for i in range(1, rows + 1)])
    con.execute("COMMIT")
    con.execute(f"DELETE FROM {name} WHERE id % 2 = 0")


def _fill_fts(con, table, rows=150, rowid="rowid"):
    con.execute("BEGIN")
    con.executemany(f"INSERT INTO {_q(table)}({rowid}, body) VALUES (?, ?)",
                    [(i, _text(i)) for i in range(1, rows + 1)])
    con.execute("COMMIT")


def _fill_rtree(con, table, rows=300, dims=2):
    cols = ", ".join("?" for _ in range(1 + 2 * dims))
    con.execute("BEGIN")
    for i in range(1, rows + 1):
        coords = []
        for d in range(dims):
            lo = (i * (d + 3)) % 1000
            coords += [lo, lo + 1 + i % 5]
        con.execute(f"INSERT INTO {_q(table)} VALUES ({cols})", (i, *coords))
    con.execute("COMMIT")


def _rewrite_schema(con, name, sql):
    """Store sql as the table's statement, as a newer SQLite or an
    application with its own extension would have left it."""
    con.execute("PRAGMA writable_schema=ON")
    n = con.execute("UPDATE sqlite_schema SET sql = ? WHERE name = ?", (sql, name)).rowcount
    con.execute("PRAGMA writable_schema=OFF")
    assert n == 1, name


def _damage_fts4(con, table, docid=5):
    """Change a document in %_content behind the index's back: the index no
    longer matches the content."""
    n = con.execute(f"UPDATE {_q(table + '_content')} SET c0body = ? WHERE docid = ?",
                    ("nothing like the indexed words", docid)).rowcount
    assert n == 1


def _damage_fts5(con, table, rowid=5):
    n = con.execute(f"UPDATE {_q(table + '_content')} SET c0 = ? WHERE id = ?",
                    ("nothing like the indexed words", rowid)).rowcount
    assert n == 1


def _damage_rtree(con, table, rowid=10):
    """Point a row at a node that does not exist."""
    n = con.execute(f"UPDATE {_q(table + '_rowid')} SET nodeno = 99 WHERE rowid = ?", (rowid,)).rowcount
    assert n == 1


def _fts_check(con, table, fts5):
    """SQLite's own verdict, as the test sees it: None or the error."""
    t = _q(table)
    sql = (f"INSERT INTO {t}({t}, rank) VALUES ('integrity-check', 1)" if fts5
           else f"INSERT INTO {t}({t}) VALUES ('integrity-check')")
    try:
        con.execute(sql)
        return None
    except sqlite3.DatabaseError as e:
        return str(e)


def _rtreecheck(db, table):
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return con.execute("SELECT rtreecheck(?)", (table,)).fetchone()[0]
    finally:
        con.close()


def _real_tables_digest(db):
    """The rows of every real table (shadow tables included) and the
    schema, without loading a module: a VACUUM must leave them unchanged."""
    return checksum(db, virtual=False, stat=True)


# --------------------------------------------------------------------------
# Running the tool

@pytest.fixture
def full_conf(tmp_path):
    """A config whose defaults run integrity_check and the full-text and
    R*Tree checks before (and after) a VACUUM."""
    return write_config(tmp_path / "full.yaml",
                        "defaults:\n  vacuum:\n    integrity: full\n"
                        f"databases:\n  - path: {json.dumps(str(tmp_path / 'unrelated.db'))}\n")


def _check(run_ctl, db):
    r = run_ctl("--json", "check", "--full", db)
    return r, r.one()


def _vtabs(o):
    return {v["name"]: v for v in o.get("virtual_tables", [])}


def _assert_check_ok(r, o, db, expect):
    """expect: {name: kind} of every full-text and R*Tree table."""
    assert r.rc == 0, r.describe()
    assert o["status"] == "ok", r.describe()
    assert o.get("problems", []) == [], r.describe()
    vt = _vtabs(o)
    assert set(vt) == set(expect), r.describe()
    for name, kind in expect.items():
        assert vt[name]["kind"] == kind, r.describe()
        assert vt[name]["verdict"] == "ok", r.describe()
        assert "error" not in vt[name] and "reason" not in vt[name], r.describe()


def _assert_corrupt(r, o, names):
    """corrupt, exit 3; each damaged table named in problems (each finding once)."""
    assert r.rc == 3, r.describe()
    assert o["status"] == "corrupt", r.describe()
    problems = o.get("problems", [])
    assert problems, r.describe()
    assert len(problems) == len(set(problems)), f"a finding listed twice\n{r.describe()}"
    vt = _vtabs(o)
    for name in names:
        assert vt.get(name, {}).get("verdict") == "corrupt", f"{name} not corrupt\n{r.describe()}"
        assert vt[name].get("error"), r.describe()
        assert any(name in p for p in problems), f"{name} not named in problems\n{r.describe()}"
        assert name in o["error"], f"{name} not named in the message\n{r.describe()}"
    return problems


def _assert_vacuumed(r, db, before, digest):
    assert r.rc == 0, r.describe()
    o = r.one()
    assert o["status"] == "ok", r.describe()
    after = db_stats(db)
    assert after["freelist_count"] == 0, after
    assert after["page_count"] < before["page_count"], (before, after)
    assert _real_tables_digest(db) == digest
    assert quick_check(db, "integrity_check") == ["ok"]
    return o


def _assert_refused(r, db, digest, status, rc):
    assert r.rc == rc, r.describe()
    o = r.one()
    assert o["status"] == status, r.describe()
    assert sha256(db) == digest, "the database was written although the VACUUM was refused"
    assert o["bytes_reclaimed"] == 0 and o["page_bytes_reclaimed"] == 0, r.describe()
    return o


def _vacuum(run_ctl, conf, db):
    return run_ctl("-c", conf, "--json", "vacuum", "--force", db)


# --------------------------------------------------------------------------
# (a) the auxiliary modules are no indexes

def _make_aux_db(db):
    con = _connect(db)
    con.execute("CREATE VIRTUAL TABLE docs USING fts5(body)")
    con.execute("CREATE VIRTUAL TABLE docs_rows USING fts5vocab(docs, 'row')")
    con.execute("CREATE VIRTUAL TABLE docs_cols USING fts5vocab('docs', 'col')")
    con.execute("CREATE VIRTUAL TABLE docs_inst USING fts5vocab(docs, instance)")
    con.execute("CREATE VIRTUAL TABLE notes USING fts4(body)")
    con.execute("CREATE VIRTUAL TABLE notes_terms USING fts4aux(notes)")
    con.execute("CREATE VIRTUAL TABLE tok USING fts3tokenize('porter')")
    con.execute("CREATE VIRTUAL TABLE old USING fts3(body)")
    _fill_fts(con, "docs")
    _fill_fts(con, "notes", rowid="docid")
    _fill_fts(con, "old", rows=40, rowid="docid")
    # the auxiliary tables work, as an application uses them
    assert con.execute("SELECT count(*) FROM docs_rows").fetchone()[0] > 10
    assert con.execute("SELECT count(*) FROM notes_terms").fetchone()[0] > 10
    assert con.execute("SELECT token FROM tok WHERE input = 'running fast'").fetchall() == [("run",), ("fast",)]
    _add_pad(con)
    con.close()


def test_auxiliary_tables_beside_healthy_fts(tmp_path, run_ctl, full_conf):
    db = tmp_path / "aux.db"
    _make_aux_db(db)
    digest = sha256(db)

    r, o = _check(run_ctl, db)
    # docs_rows, docs_cols, docs_inst, notes_terms and tok have no index of
    # their own: not listed, nothing "not checked"
    _assert_check_ok(r, o, db, {"docs": "full_text", "notes": "full_text", "old": "full_text"})
    assert sha256(db) == digest

    before, rows = db_stats(db), _real_tables_digest(db)
    r = _vacuum(run_ctl, full_conf, db)
    _assert_vacuumed(r, db, before, rows)
    con = _connect(db)
    try:
        assert _fts_check(con, "docs", True) is None
        assert _fts_check(con, "notes", False) is None
        assert con.execute("SELECT count(*) FROM docs WHERE docs MATCH 'alpha0'").fetchone()[0] > 0
        assert con.execute("SELECT count(*) FROM docs_rows").fetchone()[0] > 10
    finally:
        con.close()


# --------------------------------------------------------------------------
# (b) tables SQLite cannot check here: cannot_maintain, and no VACUUM

UNCHECKABLE = {
    # content='' keeps no content: FTS4's integrity-check has nothing to compare
    "contentless_fts4": ("CREATE VIRTUAL TABLE cl USING fts4(body, content=\"\")", None, "cl", "contentless"),
    # the tokenizer of an application's extension, not loaded here
    "custom_tokenizer_fts5": ("CREATE VIRTUAL TABLE tk USING fts5(body)",
                              "CREATE VIRTUAL TABLE tk USING fts5(body, tokenize=\"mytok\")", "tk",
                              "no such tokenizer: mytok"),
    "custom_tokenizer_fts4": ("CREATE VIRTUAL TABLE tk4 USING fts4(body)",
                              "CREATE VIRTUAL TABLE tk4 USING fts4(body, tokenize=mytok)", "tk4", "mytok"),
    # an option of a newer SQLite (3.43's contentless_delete)
    "newer_option_fts5": ("CREATE VIRTUAL TABLE nw USING fts5(body)",
                          "CREATE VIRTUAL TABLE nw USING fts5(body, contentless_delete=1)", "nw",
                          "unrecognized option"),
}


def _make_uncheckable_db(db, create, rewrite, name):
    con = _connect(db)
    con.execute("CREATE VIRTUAL TABLE docs USING fts5(body)")
    _fill_fts(con, "docs")
    con.execute(create)
    _fill_fts(con, name, rows=60, rowid="rowid")
    if rewrite:
        _rewrite_schema(con, name, rewrite)
    con.execute("CREATE VIRTUAL TABLE geo USING rtree(id, x0, x1, y0, y1)")
    _fill_rtree(con, "geo")
    _add_pad(con)
    con.close()


@pytest.mark.parametrize("case", sorted(UNCHECKABLE))
def test_uncheckable_table_is_cannot_maintain(tmp_path, run_ctl, full_conf, case):
    create, rewrite, name, reason = UNCHECKABLE[case]
    db = tmp_path / f"{case}.db"
    _make_uncheckable_db(db, create, rewrite, name)
    digest = sha256(db)

    r, o = _check(run_ctl, db)
    assert r.rc == 1, r.describe()
    assert o["status"] == "cannot_maintain", r.describe()
    assert o.get("problems", []) == [], r.describe()
    vt = _vtabs(o)
    assert vt[name]["verdict"] == "cannot_check", r.describe()
    assert vt[name]["kind"] == "full_text", r.describe()
    assert reason in vt[name]["reason"], r.describe()
    # the others were checked and are fine
    assert vt["docs"]["verdict"] == "ok" and vt["geo"]["verdict"] == "ok", r.describe()
    # the message names the table and why
    assert name in o["error"] and reason in o["error"], r.describe()
    assert sha256(db) == digest

    r = _vacuum(run_ctl, full_conf, db)
    o = _assert_refused(r, db, digest, "cannot_maintain", 1)
    assert name in o["error"] and reason in o["error"], r.describe()
    assert not (tmp_path / f"{case}.db-journal").exists()


def test_contentless_fts5_is_checked(tmp_path, run_ctl, full_conf):
    """FTS5's integrity-check works without content (fts5.html): a
    contentless FTS5 table is checked, not "cannot check"."""
    db = tmp_path / "c5.db"
    con = _connect(db)
    con.execute("CREATE VIRTUAL TABLE c5 USING fts5(body, content='')")
    _fill_fts(con, "c5")
    _add_pad(con)
    con.close()
    r, o = _check(run_ctl, db)
    _assert_check_ok(r, o, db, {"c5": "full_text"})
    before, rows = db_stats(db), _real_tables_digest(db)
    _assert_vacuumed(_vacuum(run_ctl, full_conf, db), db, before, rows)


# --------------------------------------------------------------------------
# (c), (d) damage after a table the loop must step over

def test_damaged_fts4_after_fts5vocab(tmp_path, run_ctl, full_conf):
    db = tmp_path / "vocab-then-damaged.db"
    con = _connect(db)
    con.execute("CREATE VIRTUAL TABLE docs USING fts5(body)")
    con.execute("CREATE VIRTUAL TABLE docs_vocab USING fts5vocab(docs, 'row')")
    con.execute("CREATE VIRTUAL TABLE notes USING fts4(body)")   # after the vocab table in sqlite_schema
    _fill_fts(con, "docs")
    _fill_fts(con, "notes", rowid="docid")
    _damage_fts4(con, "notes")
    assert _fts_check(con, "notes", False) is not None
    assert _fts_check(con, "docs", True) is None
    _add_pad(con)
    con.close()
    assert quick_check(db, "integrity_check") == ["ok"]   # the b-trees are fine: only the index check sees it
    digest = sha256(db)

    r, o = _check(run_ctl, db)
    problems = _assert_corrupt(r, o, ["notes"])
    assert len([p for p in problems if "notes" in p]) == 1, r.describe()
    vt = _vtabs(o)
    assert vt["docs"]["verdict"] == "ok" and "docs_vocab" not in vt, r.describe()
    assert sha256(db) == digest

    r = _vacuum(run_ctl, full_conf, db)
    o = _assert_refused(r, db, digest, "corrupt", 3)
    assert any("notes" in p for p in o.get("problems", [])), r.describe()


def test_damaged_fts4_after_custom_tokenizer(tmp_path, run_ctl, full_conf):
    db = tmp_path / "tokenizer-then-damaged.db"
    con = _connect(db)
    con.execute("CREATE VIRTUAL TABLE custom USING fts5(body)")
    _fill_fts(con, "custom")
    _rewrite_schema(con, "custom", 'CREATE VIRTUAL TABLE custom USING fts5(body, tokenize="mytok")')
    con.close()
    con = _connect(db)   # a fresh connection sees the rewritten schema
    con.execute("CREATE VIRTUAL TABLE notes USING fts4(body)")
    _fill_fts(con, "notes", rowid="docid")
    _damage_fts4(con, "notes")
    _add_pad(con)
    with pytest.raises(sqlite3.OperationalError, match="mytok"):
        con.execute("SELECT count(*) FROM custom").fetchone()
    con.close()
    digest = sha256(db)

    r, o = _check(run_ctl, db)
    _assert_corrupt(r, o, ["notes"])
    # the worst wins, and what could not be checked is still said
    vt = _vtabs(o)
    assert vt["custom"]["verdict"] == "cannot_check", r.describe()
    assert "mytok" in vt["custom"]["reason"], r.describe()
    assert "custom" in o["error"] and "mytok" in o["error"], r.describe()
    assert not any("custom" in p for p in o["problems"]), "a table not checked is no finding\n" + r.describe()
    assert sha256(db) == digest

    r = _vacuum(run_ctl, full_conf, db)
    o = _assert_refused(r, db, digest, "corrupt", 3)
    assert "custom" in o["error"], r.describe()


# --------------------------------------------------------------------------
# (e) external content

@pytest.mark.parametrize("module", ["fts5", "fts4"])
def test_external_content(tmp_path, run_ctl, full_conf, module):
    """An index over an application's own table (content=docs): healthy it
    is ok and vacuumed; out of sync with the table it indexes, corrupt."""
    db = tmp_path / f"external-{module}.db"
    con = _connect(db)
    con.execute("CREATE TABLE docs(id INTEGER PRIMARY KEY, body TEXT)")
    if module == "fts5":
        con.execute("CREATE VIRTUAL TABLE docs_idx USING fts5(body, content=docs, content_rowid=id)")
    else:
        con.execute("CREATE VIRTUAL TABLE docs_idx USING fts4(body, content=\"docs\")")
    con.execute("BEGIN")
    con.executemany("INSERT INTO docs(id, body) VALUES (?, ?)", [(i, _text(i)) for i in range(1, 201)])
    con.execute("COMMIT")
    con.execute("INSERT INTO docs_idx(docs_idx) VALUES ('rebuild')")
    _add_pad(con)
    con.close()

    r, o = _check(run_ctl, db)
    _assert_check_ok(r, o, db, {"docs_idx": "full_text"})
    before, rows = db_stats(db), _real_tables_digest(db)
    _assert_vacuumed(_vacuum(run_ctl, full_conf, db), db, before, rows)

    # the application changes its table without telling the index
    con = _connect(db)
    con.execute("UPDATE docs SET body = 'completely different words' WHERE id = 7")
    con.execute("DELETE FROM docs WHERE id = 9")
    assert _fts_check(con, "docs_idx", module == "fts5") is not None
    _add_pad(con, "pad2", rows=100)
    con.close()
    assert quick_check(db, "integrity_check") == ["ok"]
    digest = sha256(db)

    r, o = _check(run_ctl, db)
    _assert_corrupt(r, o, ["docs_idx"])
    _assert_refused(_vacuum(run_ctl, full_conf, db), db, digest, "corrupt", 3)


# --------------------------------------------------------------------------
# (f) R*Tree

def test_rtree_healthy_then_damaged(tmp_path, run_ctl, full_conf):
    db = tmp_path / "rtree.db"
    con = _connect(db)
    con.execute("CREATE VIRTUAL TABLE boxes USING rtree(id, x0, x1, y0, y1)")
    con.execute("CREATE VIRTUAL TABLE spans USING rtree_i32(id, lo, hi)")
    _fill_rtree(con, "boxes", rows=600, dims=2)
    _fill_rtree(con, "spans", rows=600, dims=1)
    _add_pad(con)
    con.close()

    r, o = _check(run_ctl, db)
    _assert_check_ok(r, o, db, {"boxes": "rtree", "spans": "rtree"})
    before, rows = db_stats(db), _real_tables_digest(db)
    _assert_vacuumed(_vacuum(run_ctl, full_conf, db), db, before, rows)

    # boxes: a row points at a node that does not exist; spans: a leaf
    # node's cells zeroed (the node blob damaged)
    con = _connect(db)
    _damage_rtree(con, "boxes")
    leaf = con.execute("SELECT nodeno FROM spans_node WHERE nodeno <> 1 ORDER BY nodeno DESC LIMIT 1").fetchone()[0]
    con.execute("UPDATE spans_node SET data = substr(data, 1, 4) || zeroblob(length(data) - 4) WHERE nodeno = ?",
                (leaf,))
    _add_pad(con, "pad2")
    con.close()
    expected = {t: _rtreecheck(db, t) for t in ("boxes", "spans")}
    assert all(v != "ok" for v in expected.values()), expected
    digest = sha256(db)

    r, o = _check(run_ctl, db)
    problems = _assert_corrupt(r, o, ["boxes", "spans"])
    vt = _vtabs(o)
    for t, text in expected.items():
        # rtreecheck()'s own words, each of its lines once
        assert vt[t]["error"] == text, r.describe()
        for line in text.splitlines():
            assert len([p for p in problems if t in p and p.endswith(line)]) == 1, (t, line, r.describe())
    assert sha256(db) == digest
    _assert_refused(_vacuum(run_ctl, full_conf, db), db, digest, "corrupt", 3)


# A GeoPackage (OGC 12-128r18) as GDAL writes one: metadata tables, a
# feature table with GeoPackage binary geometries, and its spatial index,
# the R*Tree rtree_<table>_<column>, kept by triggers that call the
# GeoPackage SQL functions (ST_MinX, ...), which only the application's
# library provides. Here Python provides them to build the file.

def _gpkg_point(x, y, srs=4326):
    envelope = struct.pack("<4d", x, x, y, y)
    wkb = struct.pack("<BIdd", 1, 1, x, y)
    return b"GP" + bytes([0, 0b00000011]) + struct.pack("<i", srs) + envelope + wkb


def _gpkg_envelope(blob):
    if blob is None or len(blob) < 40:
        return None
    return struct.unpack("<4d", blob[8:40])   # minx, maxx, miny, maxy


GPKG_SCHEMA = """
PRAGMA application_id = 1196444487;
PRAGMA user_version = 10300;
CREATE TABLE gpkg_spatial_ref_sys (srs_name TEXT NOT NULL, srs_id INTEGER NOT NULL PRIMARY KEY,
  organization TEXT NOT NULL, organization_coordsys_id INTEGER NOT NULL, definition TEXT NOT NULL,
  description TEXT);
CREATE TABLE gpkg_contents (table_name TEXT NOT NULL PRIMARY KEY, data_type TEXT NOT NULL,
  identifier TEXT UNIQUE, description TEXT DEFAULT '', last_change DATETIME NOT NULL DEFAULT
  (strftime('%Y-%m-%dT%H:%M:%fZ','now')), min_x DOUBLE, min_y DOUBLE, max_x DOUBLE, max_y DOUBLE,
  srs_id INTEGER, CONSTRAINT fk_gc_r_srs_id FOREIGN KEY (srs_id) REFERENCES gpkg_spatial_ref_sys(srs_id));
CREATE TABLE gpkg_geometry_columns (table_name TEXT NOT NULL, column_name TEXT NOT NULL,
  geometry_type_name TEXT NOT NULL, srs_id INTEGER NOT NULL, z TINYINT NOT NULL, m TINYINT NOT NULL,
  CONSTRAINT pk_geom_cols PRIMARY KEY (table_name, column_name));
CREATE TABLE gpkg_extensions (table_name TEXT, column_name TEXT, extension_name TEXT NOT NULL,
  definition TEXT NOT NULL, scope TEXT NOT NULL, CONSTRAINT ge_tce UNIQUE (table_name, column_name,
  extension_name));
INSERT INTO gpkg_spatial_ref_sys VALUES ('WGS 84 geodetic', 4326, 'EPSG', 4326, 'GEOGCS["WGS 84"]', NULL);
CREATE TABLE "features" ("fid" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, "geom" POINT, "name" TEXT);
INSERT INTO gpkg_contents (table_name, data_type, identifier, srs_id) VALUES ('features', 'features',
  'features', 4326);
INSERT INTO gpkg_geometry_columns VALUES ('features', 'geom', 'POINT', 4326, 0, 0);
INSERT INTO gpkg_extensions VALUES ('features', 'geom', 'gpkg_rtree_index',
  'http://www.geopackage.org/spec120/#extension_rtree', 'write-only');
CREATE VIRTUAL TABLE "rtree_features_geom" USING rtree(id, minx, maxx, miny, maxy);
CREATE TRIGGER "rtree_features_geom_insert" AFTER INSERT ON "features" WHEN (new."geom" NOT NULL AND
  NOT ST_IsEmpty(NEW."geom")) BEGIN INSERT OR REPLACE INTO "rtree_features_geom" VALUES (NEW."fid",
  ST_MinX(NEW."geom"), ST_MaxX(NEW."geom"), ST_MinY(NEW."geom"), ST_MaxY(NEW."geom")); END;
CREATE TRIGGER "rtree_features_geom_delete" AFTER DELETE ON "features" WHEN old."geom" NOT NULL
  BEGIN DELETE FROM "rtree_features_geom" WHERE id = OLD."fid"; END;
"""


def _make_gpkg(path, points=800):
    con = _connect(path)
    con.create_function("ST_IsEmpty", 1, lambda g: int(_gpkg_envelope(g) is None), deterministic=True)
    for i, name in enumerate(("ST_MinX", "ST_MaxX", "ST_MinY", "ST_MaxY")):
        con.create_function(name, 1, lambda g, i=i: (_gpkg_envelope(g) or (None,) * 4)[i], deterministic=True)
    con.executescript(GPKG_SCHEMA)
    con.execute("BEGIN")
    for i in range(1, points + 1):
        con.execute('INSERT INTO "features"(geom, name) VALUES (?, ?)',
                    (_gpkg_point((i * 37) % 360 - 180.0, (i * 11) % 180 - 90.0), f"feature {i}"))
    con.execute("COMMIT")
    con.execute('DELETE FROM "features" WHERE fid % 3 = 0')   # the trigger keeps the index in step
    assert con.execute('SELECT count(*) FROM "rtree_features_geom"').fetchone()[0] == \
        con.execute('SELECT count(*) FROM "features"').fetchone()[0]
    _add_pad(con)
    con.close()


def test_geopackage_spatial_index(tmp_path, run_ctl, full_conf):
    db = tmp_path / "places.gpkg"
    _make_gpkg(db)
    assert _rtreecheck(db, "rtree_features_geom") == "ok"

    r, o = _check(run_ctl, db)
    _assert_check_ok(r, o, db, {"rtree_features_geom": "rtree"})
    before, rows = db_stats(db), _real_tables_digest(db)
    _assert_vacuumed(_vacuum(run_ctl, full_conf, db), db, before, rows)
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        assert con.execute("PRAGMA application_id").fetchone()[0] == 1196444487
    finally:
        con.close()

    con = _connect(db)
    _damage_rtree(con, "rtree_features_geom", rowid=con.execute(
        'SELECT min(id) FROM "rtree_features_geom"').fetchone()[0])
    con.close()
    text = _rtreecheck(db, "rtree_features_geom")
    assert text != "ok"
    r, o = _check(run_ctl, db)
    _assert_corrupt(r, o, ["rtree_features_geom"])
    assert _vtabs(o)["rtree_features_geom"]["error"] == text, r.describe()


# --------------------------------------------------------------------------
# (g) the spellings SQLite accepts

# (name, statement as an application writes it, kind, damage)
SPELLINGS = [
    ("MixedFts", "CREATE VIRTUAL TABLE MixedFts USING FtS5(body)", "fts5"),
    ("Upper Rtree", 'create virtual table "Upper Rtree" using RTREE(id, x0, x1, y0, y1)', "rtree"),
    ('q "quoted" name', 'CREATE VIRTUAL TABLE "q ""quoted"" name" USING fts4(body)', "fts4"),
    ("bracket name", "CREATE VIRTUAL TABLE [bracket name] USING Fts5 (body)", "fts5"),
    ("tick name", "CREATE VIRTUAL TABLE `tick name` USING Rtree_I32(id, lo, hi)", "rtree1"),
    ("single q", "CREATE VIRTUAL TABLE 'single q' USING FTS4(body)", "fts4"),
    ("commented", "CREATE VIRTUAL TABLE\n  commented -- the notes' index\n  USING /* full (text) */\n"
                  "  fts4 (\n    body, -- it's the text\n    tokenize=porter\n  )", "fts4"),
    ("maybe", "create virtual table if not exists maybe using fts5(body)", "fts5"),
    ("schema_qualified", "CREATE VIRTUAL TABLE main.schema_qualified USING fts5(body)", "fts5"),
    ("utf8 naïve", 'CREATE VIRTUAL TABLE "utf8 naïve" USING fts5(body)', "fts5"),
]

# SQLite stores "CREATE VIRTUAL TABLE " and the text from the name on, so
# IF NOT EXISTS never reaches sqlite_schema from a CREATE; a schema written
# otherwise (another tool, writable_schema) can still carry it, with any
# spelling of the keywords and comments between them.
VERBATIM = {
    "verbatim_ine": "create /* c */ Virtual\n\tTABLE If  Not\nExists \"verbatim_ine\" -- x\n USING fts4(body)",
}


def _make_spellings_db(db):
    con = _connect(db)
    for name, sql, kind in SPELLINGS:
        con.execute(sql)
        if kind.startswith("fts"):
            _fill_fts(con, name, rows=60, rowid="docid" if kind == "fts4" else "rowid")
        else:
            _fill_rtree(con, name, rows=300, dims=2 if kind == "rtree" else 1)
    for name, sql in VERBATIM.items():
        con.execute(f"CREATE VIRTUAL TABLE {_q(name)} USING fts4(body)")
        _fill_fts(con, name, rows=60, rowid="docid")
        _rewrite_schema(con, name, sql)
    _add_pad(con)
    con.close()
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        stored = dict(con.execute("SELECT name, sql FROM sqlite_schema WHERE rootpage = 0"))
    finally:
        con.close()
    assert stored["verbatim_ine"] == VERBATIM["verbatim_ine"]
    assert "-- the notes' index" in stored["commented"] and "USING FtS5" in stored["MixedFts"]
    return {**{n: k for n, _, k in SPELLINGS}, **{n: "fts4" for n in VERBATIM}}


def test_schema_spellings_found_and_checked(tmp_path, run_ctl):
    db = tmp_path / "spellings.db"
    kinds = _make_spellings_db(db)
    expect = {n: ("rtree" if k.startswith("rtree") else "full_text") for n, k in kinds.items()}

    r, o = _check(run_ctl, db)
    _assert_check_ok(r, o, db, expect)

    # every one of them damaged: every one reported
    con = _connect(db)
    for name, kind in kinds.items():
        if kind == "fts4":
            _damage_fts4(con, name)
        elif kind == "fts5":
            _damage_fts5(con, name)
        else:
            _damage_rtree(con, name)
    con.close()
    r, o = _check(run_ctl, db)
    _assert_corrupt(r, o, sorted(kinds))
    assert sorted(n for n, v in _vtabs(o).items() if v["verdict"] == "corrupt") == sorted(kinds), r.describe()


# --------------------------------------------------------------------------
# (h) integrity_check's findings, one per line

def _make_btree_damage(db):
    """Damage integrity_check reports in two ways: b-tree problems (pages of
    the freelist no longer on it: one row, many lines, under the "*** in
    database main ***" header) and index entries that no longer match their
    rows (a row each). No statement error: the check runs to its end."""
    con = _connect(db)
    con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, a TEXT, b TEXT)")
    con.execute("CREATE INDEX t_a ON t(a)")
    con.execute("CREATE INDEX t_b ON t(b)")
    con.execute("BEGIN")
    con.executemany("INSERT INTO t(a, b) VALUES (?, ?)", [(f"a{i:05d}", f"b{i:05d}") for i in range(3000)])
    con.execute("COMMIT")
    con.execute("CREATE TABLE gone(x)")
    con.executemany("INSERT INTO gone VALUES (zeroblob(3000))", [()] * 6)
    con.execute("DROP TABLE gone")
    free = con.execute("PRAGMA freelist_count").fetchone()[0]
    ps = con.execute("PRAGMA page_size").fetchone()[0]
    leaves = {n: [p for (p,) in con.execute(
        "SELECT pageno FROM dbstat WHERE name = ? AND pagetype = 'leaf' ORDER BY pageno", (n,))]
        for n in ("t_a", "t_b")}
    con.close()
    assert free >= 5
    with open(db, "r+b") as f:
        f.seek(32)
        f.write(b"\0" * 8)   # first freelist trunk page and count: the free pages are lost
        for name, pat, rep in (("t_a", b"a0", b"q0"), ("t_b", b"b0", b"r0")):
            p = leaves[name][len(leaves[name]) // 2]
            f.seek((p - 1) * ps)
            page = bytearray(f.read(ps))
            i = page.rfind(pat)
            assert i > 100
            page[i:i + 2] = rep   # a key changed in place: same length, same structure
            f.seek((p - 1) * ps)
            f.write(page)


def test_integrity_check_findings_one_per_line(tmp_path, run_ctl, full_conf):
    db = tmp_path / "btree.db"
    _make_btree_damage(db)
    rows = quick_check(db, "integrity_check(100)")
    assert not rows[0].startswith("error:"), rows
    assert rows[0].startswith("*** in database main ***\n") and rows[0].count("\n") >= 5, rows
    assert len(rows) >= 3, rows
    # what SQLite found, one finding a line, the header dropped
    findings = [line for row in rows for line in row.split("\n") if line and not line.startswith("*** in database")]
    digest = sha256(db)

    r, o = _check(run_ctl, db)
    assert r.rc == 3, r.describe()
    assert o["status"] == "corrupt", r.describe()
    problems = o["problems"]
    assert problems == findings, r.describe()
    assert len(problems) == len(set(problems)), r.describe()
    assert not any("\n" in p or "*** in database" in p for p in problems), r.describe()
    assert f"integrity_check found {len(problems)} problems" in o["error"], r.describe()
    assert "*** in database" not in o["error"], r.describe()
    for p in problems:
        assert o["error"].count(p) <= 1, r.describe()
    assert any(p.startswith("Page ") and p.endswith("never used") for p in problems), r.describe()
    assert any("missing from index t_a" in p for p in problems), r.describe()
    assert any("missing from index t_b" in p for p in problems), r.describe()

    # human output: the same message, the findings below it, each once
    r2 = run_ctl("check", "--full", db)
    assert r2.rc == 3, r2.describe()
    assert f"integrity_check found {len(problems)} problems" in r2.err, r2.describe()
    assert "*** in database" not in r2.err, r2.describe()

    o = _assert_refused(_vacuum(run_ctl, full_conf, db), db, digest, "corrupt", 3)
    assert o["problems"] == findings, o
    assert f"found {len(findings)} problems" in o["error"], o


# --------------------------------------------------------------------------
# the daemon, with vacuum.integrity: full

def test_daemon_full_integrity(tmp_path, daemon):
    """Three databases past the urgent threshold: a damaged FTS4 index is
    reported CORRUPT (the table among the PROBLEMS), a contentless FTS4
    table CANNOT_MAINTAIN (named, with the reason), and neither file is
    written; the healthy one beside them is vacuumed."""
    dbs, state = tmp_path / "dbs", tmp_path / "state"
    dbs.mkdir()
    damaged, contentless, healthy = dbs / "damaged.db", dbs / "contentless.db", dbs / "healthy.db"
    for p in (damaged, contentless, healthy):
        con = _connect(str(p) + ".making")
        con.execute("CREATE VIRTUAL TABLE docs USING fts5(body)")
        con.execute("CREATE VIRTUAL TABLE docs_vocab USING fts5vocab(docs, 'row')")
        con.execute("CREATE VIRTUAL TABLE notes USING fts4(body%s)" % (", content=''" if p == contentless else ""))
        _fill_fts(con, "docs")
        _fill_fts(con, "notes", rowid="docid")
        if p == damaged:
            _damage_fts4(con, "notes")
        _add_pad(con)
        con.close()
        (dbs / (p.name + ".making")).rename(p)
    digests = {p: sha256(p) for p in (damaged, contentless)}
    rows = _real_tables_digest(healthy)

    d = daemon.start(config_text(state, [dbs / "*.db"], vacuum={
        "window": "always", "integrity": "full", "min_reclaim": 0}))
    bad = d.wait_for_entry(msgid="CORRUPT", DB_PATH=damaged)
    assert bad["PRIORITY"] == "2", bad
    assert "notes" in bad["PROBLEMS"] and "notes" in bad["SQLITE_ERROR"], bad
    # found by the check before a VACUUM: that VACUUM's words
    assert bad["MESSAGE"].startswith(f"{damaged}: DATABASE CORRUPT, not vacuumed: "), bad
    cannot = d.wait_for_entry(msgid="CANNOT_MAINTAIN", DB_PATH=contentless)
    assert "notes" in cannot["SQLITE_ERROR"] and "contentless" in cannot["SQLITE_ERROR"], cannot
    d.wait_for_entry(msgid="VACUUM_DONE", DB_PATH=healthy, timeout=30)
    assert _real_tables_digest(healthy) == rows and db_stats(healthy)["freelist_count"] == 0
    es = d.entries()
    for p, digest in digests.items():
        assert sha256(p) == digest, f"{p} was written"
        assert not [e for e in es if e.get("DB_PATH") == str(p) and e.get("MESSAGE_ID") == MSGID["VACUUM_DONE"]], \
            format_entries(es)
    assert d.stop() == 0, d.describe()


# --------------------------------------------------------------------------
# (i) FTS5 out of memory on a damaged index: that table's cannot_check

CORPUS_DB = os.path.normpath(os.path.join(SOURCE_ROOT, "..", "shared", "corpus", "sqlite-testsuite", "db"))

OOM = "ran out of memory"


def _corpus_copy(tmp_path, name):
    src = os.path.join(CORPUS_DB, name + ".db")
    if not os.path.exists(src):
        pytest.skip(f"corpus not found at {CORPUS_DB}")
    dest = tmp_path / (name + ".db")
    shutil.copyfile(src, dest)
    return dest


def test_fts5_out_of_memory_with_btree_damage(tmp_path, run_ctl):
    """fts5corruptB-1 (SQLite's fts5corruptB.test): the freelist is damaged
    and the FTS5 table t answers SQLITE_NOMEM to its integrity-check (a size
    read from the damaged index). The b-tree findings make it corrupt (exit
    3); t is listed as not checked, out of memory, not the end of the check
    ("error", exit 1, before)."""
    db = _corpus_copy(tmp_path, "fts5corruptB-1")
    findings = [line for row in quick_check(db, "integrity_check") for line in row.split("\n")
                if line and not line.startswith("*** in database")]
    assert findings and findings != ["ok"], findings
    digest = sha256(db)

    r, o = _check(run_ctl, db)
    assert r.rc == 3, r.describe()
    assert o["status"] == "corrupt", r.describe()
    assert o["problems"] == findings, r.describe()
    vt = _vtabs(o)
    assert vt["t"]["verdict"] == "cannot_check" and vt["t"]["kind"] == "full_text", r.describe()
    assert OOM in vt["t"]["reason"], r.describe()
    assert not any(p.startswith("full-text index t") for p in o["problems"]), r.describe()
    assert "not checked: full-text index t" in o["error"] and OOM in o["error"], r.describe()
    assert sha256(db) == digest


def test_fts5_out_of_memory_alone_is_cannot_maintain(tmp_path, run_ctl):
    """fts5corrupt5-14: the b-trees are intact and FTS5 runs out of memory
    in the check of t: cannot_maintain (exit 1, a table that cannot be
    checked), t named with the reason."""
    db = _corpus_copy(tmp_path, "fts5corrupt5-14")
    assert quick_check(db, "integrity_check") == ["ok"]
    digest = sha256(db)

    r, o = _check(run_ctl, db)
    assert r.rc == 1, r.describe()
    assert o["status"] == "cannot_maintain", r.describe()
    assert o.get("problems", []) == [], r.describe()
    vt = _vtabs(o)
    assert vt["t"]["verdict"] == "cannot_check" and OOM in vt["t"]["reason"], r.describe()
    assert "full-text index t" in o["error"] and OOM in o["error"], r.describe()
    assert sha256(db) == digest


# --------------------------------------------------------------------------
# (j) to fts3, content='' is a column

def test_fts3_content_option_is_a_column(tmp_path, run_ctl):
    """fts3 reads no options (only fts4 does, fts3.c fts3InitVtab):
    "content=''" declares a column named content, and the table keeps its
    content like any other. It is checked: ok intact, corrupt once its
    %_content no longer matches the index. The contentless FTS4 table
    beside it stays cannot_check."""
    db = tmp_path / "fts3-content.db"
    con = _connect(db)
    con.execute("CREATE VIRTUAL TABLE f3 USING fts3(content='', body)")
    con.execute("BEGIN")
    con.executemany("INSERT INTO f3(docid, content, body) VALUES (?, ?, ?)",
                    [(i, _text(i, 4), _text(i + 1)) for i in range(1, 81)])
    con.execute("COMMIT")
    cols = [c[1] for c in con.execute("PRAGMA table_info(f3_content)")]
    assert cols == ["docid", "c0content", "c1body"], cols
    assert con.execute("SELECT count(*) FROM f3 WHERE content MATCH 'alpha0'").fetchone()[0] > 0
    assert _fts_check(con, "f3", False) is None
    con.close()

    r, o = _check(run_ctl, db)
    _assert_check_ok(r, o, db, {"f3": "full_text"})

    con = _connect(db)
    assert con.execute("UPDATE f3_content SET c0content = 'different words' WHERE docid = 1").rowcount == 1
    assert _fts_check(con, "f3", False) is not None
    con.close()
    r, o = _check(run_ctl, db)
    _assert_corrupt(r, o, ["f3"])

    # the FTS4 table with the same words is contentless, and named so
    con = _connect(db)
    con.execute("CREATE VIRTUAL TABLE f4 USING fts4(body, content='')")
    _fill_fts(con, "f4", rows=20, rowid="docid")
    con.close()
    r, o = _check(run_ctl, db)
    assert r.rc == 3 and o["status"] == "corrupt", r.describe()   # the worst wins
    vt = _vtabs(o)
    assert vt["f3"]["verdict"] == "corrupt", r.describe()
    assert vt["f4"]["verdict"] == "cannot_check" and "contentless" in vt["f4"]["reason"], r.describe()
    assert "f4" in o["error"], r.describe()


# --------------------------------------------------------------------------
# (k) content that is a view: never run

VIEW_REASON = "its content table v is a view, and sqlite-maintd does not run the views a database file defines"

# A view over a real table, as an application may index one; and a hostile
# one: a recursive CTE without end that yields no row, so that whoever runs
# it never gets an answer.
CONTENT_VIEWS = {
    "plain": "CREATE VIEW v AS SELECT id, body FROM docs",
    "endless": "CREATE VIEW v AS WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) "
               "SELECT i AS id, 'w' AS body FROM n WHERE i < 0",
}


def _make_view_content_db(db, view):
    con = _connect(db)
    con.execute("CREATE TABLE docs(id INTEGER PRIMARY KEY, body TEXT)")
    con.execute("BEGIN")
    con.executemany("INSERT INTO docs(id, body) VALUES (?, ?)", [(i, _text(i)) for i in range(1, 101)])
    con.execute("COMMIT")
    con.execute(CONTENT_VIEWS[view])
    con.execute("CREATE VIRTUAL TABLE x USING fts5(body, content=v, content_rowid=id)")
    # the index written directly, as an application's triggers would
    con.execute("BEGIN")
    con.executemany("INSERT INTO x(rowid, body) VALUES (?, ?)", [(i, _text(i)) for i in range(1, 101)])
    con.execute("COMMIT")
    _add_pad(con)
    con.close()


@pytest.mark.parametrize("view", sorted(CONTENT_VIEWS))
def test_fts5_content_view_is_not_run(tmp_path, run_ctl, full_conf, view):
    db = tmp_path / f"view-{view}.db"
    _make_view_content_db(db, view)
    digest = sha256(db)

    # generous bounds: only a hang (the endless view run) would reach them
    r = run_ctl("--json", "check", "--full", db, timeout=60)
    o = r.one()
    assert r.rc == 1, r.describe()
    assert o["status"] == "cannot_maintain", r.describe()
    assert o.get("problems", []) == [], r.describe()
    vt = _vtabs(o)
    assert vt["x"]["verdict"] == "cannot_check" and vt["x"]["reason"] == VIEW_REASON, r.describe()
    assert VIEW_REASON in o["error"] and "full-text index x" in o["error"], r.describe()
    assert sha256(db) == digest

    r = run_ctl("-c", full_conf, "--json", "vacuum", "--force", db, timeout=60)
    o = _assert_refused(r, db, digest, "cannot_maintain", 1)
    assert VIEW_REASON in o["error"], r.describe()


def test_daemon_content_view_not_vacuumed(tmp_path, daemon):
    """With vacuum.integrity: full, the daemon does not vacuum a database
    whose FTS5 content is a view (the endless one): CANNOT_MAINTAIN says
    why, and the file is not written; the healthy one beside it is."""
    dbs, state = tmp_path / "dbs", tmp_path / "state"
    dbs.mkdir()
    viewed, healthy = dbs / "viewed.db", dbs / "healthy.db"
    _make_view_content_db(tmp_path / "viewed.making", "endless")
    (tmp_path / "viewed.making").rename(viewed)
    con = _connect(tmp_path / "healthy.making")
    con.execute("CREATE VIRTUAL TABLE docs USING fts5(body)")
    _fill_fts(con, "docs")
    _add_pad(con)
    con.close()
    (tmp_path / "healthy.making").rename(healthy)
    digest = sha256(viewed)

    d = daemon.start(config_text(state, [dbs / "*.db"], vacuum={
        "window": "always", "integrity": "full", "min_reclaim": 0}))
    cannot = d.wait_for_entry(msgid="CANNOT_MAINTAIN", DB_PATH=viewed, timeout=60)
    assert VIEW_REASON in cannot["SQLITE_ERROR"] and "full-text index x" in cannot["SQLITE_ERROR"], cannot
    assert VIEW_REASON in cannot["MESSAGE"], cannot
    d.wait_for_entry(msgid="VACUUM_DONE", DB_PATH=healthy, timeout=60)
    es = d.entries()
    assert not [e for e in es if M("VACUUM_DONE", DB_PATH=viewed)(e)], format_entries(es)
    assert sha256(viewed) == digest, "the database was written"
    assert d.stop() == 0, d.describe()


# --------------------------------------------------------------------------
# (l) shadow tables and content tables gone, content through functions

# (module statement, fill, shadow table dropped)
MISSING_SHADOW = {
    "rtree_node": ("CREATE VIRTUAL TABLE r USING rtree(id, x0, x1, y0, y1)", "r", "r_node"),
    "fts5_idx": ("CREATE VIRTUAL TABLE r USING fts5(body)", "r", "r_idx"),
    "fts4_segdir": ("CREATE VIRTUAL TABLE r USING fts4(body)", "r", "r_segdir"),
}


@pytest.mark.parametrize("case", sorted(MISSING_SHADOW))
def test_missing_shadow_table_is_corrupt(tmp_path, run_ctl, full_conf, case):
    """A shadow table dropped: the index cannot be read at all. corrupt,
    exit 3, the table named ("its shadow table ... is missing"), not "SQL
    logic error" as cannot_check (before)."""
    create, name, shadow = MISSING_SHADOW[case]
    db = tmp_path / f"{case}.db"
    con = _connect(db)
    con.execute(create)
    if case.startswith("rtree"):
        _fill_rtree(con, name)
    else:
        _fill_fts(con, name, rowid="docid" if "fts4" in case else "rowid")
    con.execute(f"DROP TABLE {shadow}")
    _add_pad(con)
    con.close()
    assert quick_check(db, "integrity_check") == ["ok"]
    digest = sha256(db)

    r, o = _check(run_ctl, db)
    problems = _assert_corrupt(r, o, [name])
    text = f"its shadow table {shadow} is missing"
    assert text in _vtabs(o)[name]["error"], r.describe()
    assert len([p for p in problems if text in p]) == 1, r.describe()
    assert sha256(db) == digest
    o = _assert_refused(_vacuum(run_ctl, full_conf, db), db, digest, "corrupt", 3)
    assert any(text in p for p in o["problems"]), o


def test_fts5_content_table_dropped(tmp_path, run_ctl):
    db = tmp_path / "content-gone.db"
    con = _connect(db)
    con.execute("CREATE TABLE c(id INTEGER PRIMARY KEY, body TEXT)")
    con.executemany("INSERT INTO c(id, body) VALUES (?, ?)", [(i, _text(i)) for i in range(1, 51)])
    con.execute("CREATE VIRTUAL TABLE x USING fts5(body, content=c, content_rowid=id)")
    con.execute("INSERT INTO x(x) VALUES ('rebuild')")
    con.execute("DROP TABLE c")
    con.close()
    r, o = _check(run_ctl, db)
    assert r.rc == 1, r.describe()
    assert o["status"] == "cannot_maintain", r.describe()
    vt = _vtabs(o)
    assert vt["x"]["verdict"] == "cannot_check", r.describe()
    assert vt["x"]["reason"] == "its content table c does not exist", r.describe()
    assert "full-text index x (its content table c does not exist)" in o["error"], r.describe()


def test_fts4_compress_functions_named(tmp_path, run_ctl):
    """compress=zip, uncompress=unzip: the content is read through functions
    only the application defines (here Python's, to build the file)."""
    db = tmp_path / "zipped.db"
    con = _connect(db)
    con.create_function("zip", 1, lambda s: zlib.compress(s.encode()), deterministic=True)
    con.create_function("unzip", 1, lambda b: zlib.decompress(b).decode(), deterministic=True)
    con.execute("CREATE VIRTUAL TABLE z USING fts4(body, compress=zip, uncompress=unzip)")
    _fill_fts(con, "z", rows=50, rowid="docid")
    assert _fts_check(con, "z", False) is None   # with the functions, the table is fine
    assert con.execute("SELECT count(*) FROM z WHERE z MATCH 'alpha0'").fetchone()[0] > 0
    con.close()
    digest = sha256(db)

    r, o = _check(run_ctl, db)
    assert r.rc == 1, r.describe()
    assert o["status"] == "cannot_maintain", r.describe()
    vt = _vtabs(o)
    assert vt["z"]["verdict"] == "cannot_check" and "zip, unzip" in vt["z"]["reason"], r.describe()
    assert "full-text index z" in o["error"] and "zip, unzip" in o["error"], r.describe()
    assert sha256(db) == digest
