# SPDX-License-Identifier: MIT
"""sqlite-maintctl's command line, as a table of (arguments, exit code,
text expected on stdout / stderr)."""

import json
import os
import re

import pytest

from helpers import db_stats, make_fragmented_db, project_version, sha256

# Placeholders in the table: {db} a healthy fragmented database, {db2} a
# second one, {missing} a path that does not exist, {conf} a valid config
# file, {badconf} a config with an unknown key.
CASES = [
    # (id, args, exit code, stdout regexes, stderr regexes)
    ("help", ["--help"], 0, [r"\bstats\b", r"\bvacuum\b", r"\banalyze\b", r"\bcheck\b",
                             r"--json", r"--force", r"--full", r"--attempts",
                             r"else its defaults\); without it, built-in\s+defaults\n"], []),
    ("version", ["--version"], 0, [r"^sqlite-maintctl {version}\n?$"], []),
    ("no-arguments", [], 2, [], [r"\S"]),
    ("unknown-command", ["frobnicate", "{db}"], 2, [], [r"frobnicate"]),
    ("unknown-option", ["--bogus", "stats", "{db}"], 2, [], [r"bogus"]),
    ("unknown-option-after-command", ["stats", "--bogus", "{db}"], 2, [], [r"bogus"]),
    ("stats-without-db", ["stats"], 2, [], [r"\S"]),
    ("vacuum-without-db", ["vacuum", "--force"], 2, [], [r"\S"]),
    ("check-full-without-db", ["check", "--full"], 2, [], [r"\S"]),
    ("json-without-command", ["--json"], 2, [], [r"\S"]),
    ("attempts-not-a-number", ["--attempts", "many", "stats", "{db}"], 2, [], [r"\S"]),
    ("attempts-missing-value", ["stats", "{db}", "--attempts"], 2, [], [r"\S"]),
    ("check-full-healthy", ["check", "--full", "{db}"], 0, ["{db}"], []),
    ("check-healthy", ["check", "{db}"], 0, ["{db}"], []),
    ("analyze-healthy", ["analyze", "{db}"], 0, ["{db}"], []),
    ("stats-table", ["stats", "{db}", "{db2}"], 0,
     [r"PATH", r"FRAG", "{db}", "{db2}"], []),
    ("vacuum-skipped-human", ["vacuum", "{db2}"], 0, ["{db2}"], []),
    ("missing-human", ["check", "{missing}"], 1, [],
     [r"^sqlite-maintctl: " + "{missing}" + r": \S"]),
    ("good-and-missing-human", ["check", "{db}", "{missing}"], 1, ["{db}"],
     [r"^sqlite-maintctl: " + "{missing}" + r": \S"]),
    ("config-ok", ["-c", "{conf}", "check", "{db}"], 0, ["{db}"], []),
]


@pytest.fixture
def paths(tmp_path):
    db, db2 = tmp_path / "one.db", tmp_path / "two.db"
    make_fragmented_db(db, rows=400, delete_fraction=0.4)
    make_fragmented_db(db2, rows=400, delete_fraction=0.05, seed=2)
    conf = tmp_path / "maintd.yaml"
    conf.write_text("defaults:\n  vacuum:\n    threshold: 25%\n"
                    f"databases:\n  - path: {json.dumps(str(tmp_path / 'unrelated.db'))}\n")
    return {"db": str(db), "db2": str(db2), "missing": str(tmp_path / "missing.db"),
            "conf": str(conf), "version": project_version() or "?"}


def _fill(s, paths, escape=False):
    """Put the fixture's paths in place of the placeholders (escaped for a regex)."""
    for k, v in paths.items():
        s = s.replace("{" + k + "}", re.escape(v) if escape else v)
    return s


@pytest.mark.parametrize("args,rc,out_res,err_res",
                         [pytest.param(*c[1:], id=c[0]) for c in CASES])
def test_cli_table(run_ctl, paths, args, rc, out_res, err_res):
    args = [_fill(a, paths) for a in args]
    digests = {k: sha256(paths[k]) for k in ("db", "db2")}
    r = run_ctl(*args)
    assert r.rc == rc, r.describe()
    for pat in out_res:
        assert re.search(_fill(pat, paths, True), r.out, re.M), f"stdout lacks /{pat}/\n" + r.describe()
    for pat in err_res:
        assert re.search(_fill(pat, paths, True), r.err, re.M), f"stderr lacks /{pat}/\n" + r.describe()
    if rc == 2:
        # a usage error does nothing and says so on stderr, not stdout
        assert r.out == "", r.describe()
        assert {k: sha256(paths[k]) for k in ("db", "db2")} == digests
    assert not os.path.exists(paths["missing"])


def test_bad_config_is_not_ignored(run_ctl, paths, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("defaults:\n  vacuum:\n    treshold: 5%\n"
                   f"databases:\n  - path: {json.dumps(paths['db'])}\n")
    digest = sha256(paths["db"])
    r = run_ctl("-c", bad, "--json", "vacuum", paths["db"])
    assert r.rc == 2, r.describe()  # a -c file that cannot be loaded is a usage error
    assert "treshold" in r.err and str(bad) in r.err, r.describe()
    assert sha256(paths["db"]) == digest
    r = run_ctl("-c", tmp_path / "nonexistent.yaml", "--json", "vacuum", paths["db"])
    assert r.rc == 2, r.describe()  # a -c file that cannot be loaded is a usage error
    assert "nonexistent.yaml" in r.err, r.describe()
    assert sha256(paths["db"]) == digest


@pytest.mark.parametrize("cmd", [["stats"], ["vacuum"], ["analyze"], ["check"], ["check", "--full"]],
                         ids=["stats", "vacuum", "analyze", "check", "check-full"])
def test_json_one_object_per_line_per_database(run_ctl, paths, cmd):
    r = run_ctl("--json", *cmd, paths["db"], paths["db2"], paths["missing"])
    assert r.rc == 1, r.describe()
    lines = [l for l in r.out.splitlines() if l.strip()]
    assert len(lines) == 3, r.describe()
    objs = [json.loads(l) for l in lines]
    assert [o["path"] for o in objs] == [paths["db"], paths["db2"], paths["missing"]]
    # without --force neither is worth a VACUUM (one.db: too little to
    # reclaim; two.db: below the threshold)
    first = "skipped" if cmd == ["vacuum"] else "ok"
    assert [o["status"] for o in objs] == [first, first, "missing"], r.describe()
    for o in objs:
        if cmd[0] != "stats":
            assert o["operation"] == cmd[0], o
    assert objs[2]["status"] == "missing" and objs[2]["error"]
    # in --json mode every object is on stdout; stderr carries no object
    assert not any(l.lstrip().startswith("{") for l in r.err.splitlines()), r.describe()


def test_options_after_command_and_relative_paths(run_ctl, paths, tmp_path):
    """Options may follow the command; a relative path is made absolute
    against the working directory."""
    r = run_ctl("stats", "one.db", "--json", cwd=tmp_path)
    assert r.rc == 0, r.describe()
    o = r.one()
    assert o["path"] == paths["db"], r.describe()
    assert o["page_count"] == db_stats(paths["db"])["page_count"]
    r = run_ctl("vacuum", "./one.db", "--attempts", "2", "--force", "--json", cwd=tmp_path)
    assert r.rc == 0, r.describe()
    assert os.path.normpath(r.one()["path"]) == paths["db"], r.describe()
    assert os.path.isabs(r.one()["path"])
    assert r.one()["status"] == "ok", r.describe()
    assert db_stats(paths["db"])["freelist_count"] == 0


def test_relative_symlink_is_refused(run_ctl, paths, tmp_path):
    os.symlink("one.db", tmp_path / "alias.db")
    digest = sha256(paths["db"])
    r = run_ctl("--json", "vacuum", "--force", "alias.db", cwd=tmp_path)
    assert r.rc == 1, r.describe()
    o = r.one()
    assert o["path"] == str(tmp_path / "alias.db")
    assert o["status"] == "permission_denied", r.describe()
    assert sha256(paths["db"]) == digest
