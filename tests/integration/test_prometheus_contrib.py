# SPDX-License-Identifier: MIT
"""contrib/: the Prometheus alerting rules pass promtool's check and their own
unit tests, the Grafana dashboard's PromQL parses, and both use only the
metrics (and labels) docs/METRICS.md names, the dashboard through its
templated data source alone. promtool comes with Debian's prometheus package,
which scripts/test installs: without it these tests fail."""
import json
import os
import re
import shutil
import subprocess

import pytest
import yaml

ROOT = os.environ.get("MAINTD_SOURCE_ROOT", os.path.join(os.path.dirname(__file__), "..", ".."))
METRICS_DOC = os.path.join(ROOT, "docs", "METRICS.md")
RULES = os.path.join(ROOT, "contrib", "prometheus", "sqlite-maintd.rules.yml")
RULES_TEST = os.path.join(ROOT, "contrib", "prometheus", "sqlite-maintd.rules.test.yml")
DASHBOARD = os.path.join(ROOT, "contrib", "grafana", "sqlite-maintd-dashboard.json")

# The alerts asked for, and their severities.
ALERTS = {
    "SqliteMaintdDatabaseCorrupt": "critical",
    "SqliteMaintdDatabaseNotVacuumed": "warning",
    "SqliteMaintdDatabaseJobsFailing": "warning",
    "SqliteMaintdVacuumFailing": "warning",
    "SqliteMaintdWalOversized": "warning",
    "SqliteMaintdPollStalled": "critical",
    "SqliteMaintdAbsent": "warning",
}
# Labels every scraped series has, besides those METRICS.md lists.
TARGET_LABELS = {"instance", "job"}
TEMPLATED_DS = {"type": "prometheus", "uid": "${datasource}"}
# Grafana's interval variables, as values PromQL accepts.
GRAFANA_INTERVALS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1d"}
PROMQL_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
                   "group_left", "group_right", "inf", "nan", "atan2"}
GROUPING = r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)"


def promtool():
    path = shutil.which("promtool")
    assert path, "promtool is missing: install Debian's prometheus package (scripts/test does)"
    return path


def run(*argv, **kw):
    kw.setdefault("timeout", 120)
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, **kw)


def documented():
    """(metric names, label names) of docs/METRICS.md's tables."""
    metrics, labels = set(), {"db"}   # the per-database table's label, named in its heading
    for line in open(METRICS_DOC, encoding="utf-8"):
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else []
        m = re.fullmatch(r"`(sqlite_maintd_\w+)`", cells[0]) if cells else None
        if not m:
            continue
        metrics.add(m.group(1))
        if len(cells) == 4:       # the daemon's table: metric | type | labels | meaning
            labels.update(re.findall(r"`(\w+)`", cells[2]))
    return metrics, labels


def rules():
    with open(RULES, encoding="utf-8") as f:
        return yaml.safe_load(f)


def alert_rules():
    return [r for g in rules()["groups"] for r in g["rules"] if "alert" in r]


def dashboard():
    with open(DASHBOARD, encoding="utf-8") as f:
        return json.load(f)


def as_promql(expr):
    """A dashboard expression with Grafana's variables replaced by values PromQL
    accepts: intervals by durations, the template variables (inside label
    matchers' regexes) by `.*`."""
    for var, value in GRAFANA_INTERVALS.items():
        expr = expr.replace(var, value)
    return re.sub(r"\$\{?\w+\}?", ".*", expr)


def strip_strings(expr):
    return re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)


def metric_names(expr):
    """Every metric name an expression selects: the identifiers left once strings,
    label matchers, ranges, grouping clauses, numbers, function calls and
    keywords are taken away."""
    e = strip_strings(expr)
    e = re.sub(r"\{[^}]*\}", " ", e)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    e = re.sub(GROUPING, " ", e)
    e = re.sub(r"(?<![\w:.])\d+(?:\.\d+)?(?:[eE][+-]?\d+)?(?:[smhdwy]|ms)?(?![\w:])", " ", e)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", e):
        if re.match(r"\s*\(", e[m.end():]) or m.group().lower() in PROMQL_KEYWORDS:
            continue
        names.add(m.group())
    return names


def label_names(expr):
    """Label names an expression matches on or groups by."""
    e = strip_strings(expr)
    names = set()
    for body in re.findall(r"\{([^}]*)\}", e):
        names.update(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", body))
    for body in re.findall(GROUPING, e):
        names.update(n.strip() for n in body.split(",") if n.strip())
    return names


def dashboard_exprs(d):
    """(where, PromQL) of every panel target and every query variable."""
    out = []
    for p in d["panels"]:
        for t in p.get("targets", []):
            out.append((f"panel {p['title']!r} {t['refId']}", t["expr"]))
    for v in d["templating"]["list"]:
        if v["type"] != "query":
            continue
        q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        m = re.fullmatch(r"label_values\((?:(.+),\s*)?(\w+)\)", q.strip())
        assert m, f"variable {v['name']}: not a label_values() query: {q}"
        assert m.group(1), f"variable {v['name']}: label_values() of no metric, over all of Prometheus: {q}"
        out.append((f"variable {v['name']}", m.group(1)))
    return out


def walk(node, path="$"):
    """(path, dict) of every object in a JSON document."""
    if isinstance(node, dict):
        yield path, node
        for k, v in node.items():
            yield from walk(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk(v, f"{path}[{i}]")


def test_metrics_doc_tables_parse():
    metrics, labels = documented()
    # 16 of the daemon, 12 of each database
    assert len(metrics) >= 28, sorted(metrics)
    assert {"sqlite_maintd_build_info", "sqlite_maintd_database_corrupt"} <= metrics
    assert {"version", "operation", "result", "db"} <= labels


def test_promtool_check_rules():
    p = run(promtool(), "check", "rules", RULES)
    assert p.returncode == 0, p.stdout + p.stderr
    n = sum(len(g["rules"]) for g in rules()["groups"])
    assert f"SUCCESS: {n} rules found" in p.stdout, p.stdout


def test_promtool_test_rules(tmp_path):
    # From another directory: the test file names the rules relative to itself.
    p = run(promtool(), "test", "rules", RULES_TEST, cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "SUCCESS" in p.stdout, p.stdout


def test_promtool_test_rules_installed_layout(tmp_path):
    # meson installs both files into one directory, as they are here.
    for f in (RULES, RULES_TEST):
        shutil.copy(f, tmp_path)
    p = run(promtool(), "test", "rules", os.path.basename(RULES_TEST), cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr


def test_every_alert_is_tested_firing():
    with open(RULES_TEST, encoding="utf-8") as f:
        tests = yaml.safe_load(f)
    assert tests["rule_files"] == [os.path.basename(RULES)]
    fired, silent = set(), set()
    for t in tests["tests"]:
        for a in t.get("alert_rule_test", []):
            (fired if a.get("exp_alerts") else silent).add(a["alertname"])
    assert fired == set(ALERTS), f"alerts never shown firing: {set(ALERTS) - fired}"
    # The tests of those with a "for" also show them silent before it is over.
    for r in alert_rules():
        if r.get("for"):
            assert r["alert"] in silent, f"{r['alert']}: no test shows it silent"


def test_rules_shape():
    doc = rules()
    assert [g["name"] for g in doc["groups"]] == ["sqlite-maintd"]
    found = {r["alert"]: r for r in alert_rules()}
    assert set(found) == set(ALERTS)
    for name, r in found.items():
        assert r["labels"]["severity"] == ALERTS[name], name
        ann = r["annotations"]
        assert ann.get("summary") and ann.get("description"), name
        text = ann["summary"] + ann["description"]
        if "absent(" not in r["expr"]:
            assert "{{ $labels.instance }}" in ann["summary"], name
        if "sqlite_maintd_database_" in r["expr"]:
            assert "{{ $labels.db }}" in ann["summary"] and "{{ $labels.db }}" in ann["description"], name
        for label in re.findall(r"\$labels\.(\w+)", text):
            assert label in label_names(r["expr"]) | TARGET_LABELS | {"db"}, (name, label)
    assert "for" not in found["SqliteMaintdDatabaseCorrupt"]
    assert found["SqliteMaintdDatabaseNotVacuumed"]["for"] == "6h"
    assert found["SqliteMaintdWalOversized"]["for"] == "1h"
    assert found["SqliteMaintdPollStalled"]["for"] == "10m"
    absent = found["SqliteMaintdAbsent"]
    assert absent["expr"].strip() == "absent(sqlite_maintd_build_info)"
    assert "per Prometheus server" in absent["annotations"]["description"]
    assert "up == 0" in absent["annotations"]["description"]


def test_rules_use_documented_metrics_and_labels():
    metrics, labels = documented()
    for r in alert_rules():
        used = metric_names(r["expr"])
        assert used, r["alert"]
        assert used <= metrics, f"{r['alert']}: not in docs/METRICS.md: {used - metrics}"
        assert label_names(r["expr"]) <= labels | TARGET_LABELS, r["alert"]
        # Two metrics combined: matched on exactly the series' identity.
        for body in re.findall(r"\b(?:on|ignoring)\s*\(([^)]*)\)", r["expr"]):
            got = {n.strip() for n in body.split(",")}
            assert got in ({"instance", "job"}, {"instance", "job", "db"}), (r["alert"], got)


def test_dashboard_parses():
    d = dashboard()
    assert d["title"] == "sqlite-maintd" and d["uid"]
    assert 30 <= d["schemaVersion"] <= 40
    assert d["panels"] and all(p["targets"] for p in d["panels"])
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for p in d["panels"]:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        assert len({t["refId"] for t in p["targets"]}) == len(p["targets"]), p["title"]


def test_dashboard_uses_documented_metrics_and_labels():
    metrics, labels = documented()
    used = set()
    for where, expr in dashboard_exprs(dashboard()):
        names = metric_names(as_promql(expr))
        assert names, where
        assert names <= metrics, f"{where}: not in docs/METRICS.md: {names - metrics}"
        assert label_names(as_promql(expr)) <= labels | TARGET_LABELS, where
        used |= names
    for p in dashboard()["panels"]:
        for t in p["targets"]:
            for label in re.findall(r"\{\{\s*(\w+)\s*\}\}", t.get("legendFormat", "")):
                assert label in labels | TARGET_LABELS, (p["title"], label)
    # what the dashboard is for
    for m in ("databases_watched", "jobs_running", "jobs_queued", "jobs_total", "reclaimed_bytes_total",
              "poll_duration_seconds", "loop_lag_p99_seconds", "loop_lag_max_seconds",
              "last_poll_timestamp_seconds", "database_freelist_ratio", "database_wal_size_bytes",
              "database_wal_size_limit_bytes", "database_corrupt", "database_last_vacuum_timestamp_seconds",
              "database_last_analyze_timestamp_seconds"):
        assert f"sqlite_maintd_{m}" in used, m


def test_dashboard_promql_parses(tmp_path):
    # promtool has no expression checker of its own: each expression becomes a
    # recording rule, which `promtool check rules` parses.
    exprs = dashboard_exprs(dashboard())
    doc = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"sqlite_maintd_dashboard:expr_{i}", "expr": as_promql(e)} for i, (_, e) in enumerate(exprs)]}]}
    f = tmp_path / "dashboard.rules.yml"
    f.write_text(yaml.safe_dump(doc, sort_keys=False))
    p = run(promtool(), "check", "rules", f)
    assert p.returncode == 0, p.stdout + p.stderr + "\n" + "\n".join(f"{i}: {w}" for i, (w, _) in enumerate(exprs))
    assert f"SUCCESS: {len(exprs)} rules found" in p.stdout, p.stdout


def test_dashboard_datasources_are_templated():
    d = dashboard()
    refs = [(path, node["datasource"]) for path, node in walk(d) if "datasource" in node]
    assert refs
    for path, ds in refs:
        assert ds == TEMPLATED_DS, f"{path}: {ds}"
    for p in d["panels"]:
        assert p.get("datasource") == TEMPLATED_DS, p["title"]
        for t in p["targets"]:
            assert t.get("datasource") == TEMPLATED_DS, (p["title"], t["refId"])
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert [i["name"] for i in d["__inputs"]] == ["DS_PROMETHEUS"]
    # ${DS_PROMETHEUS} (filled in at import) only as the variable's default
    text = json.dumps(d)
    assert text.count("${DS_PROMETHEUS}") == json.dumps(variables["datasource"]).count("${DS_PROMETHEUS}") > 0
    for name in ("instance", "db"):
        assert variables[name]["type"] == "query" and variables[name]["datasource"] == TEMPLATED_DS, name
        assert variables[name]["query"]["query"].startswith("label_values("), name
        assert variables[name]["query"]["query"].endswith(f", {name})"), name
    # every expression is limited to the chosen hosts
    for where, expr in dashboard_exprs(d):
        if where != "variable instance":
            assert 'instance=~"$instance"' in expr, where
