# SPDX-License-Identifier: MIT
"""meson install into a DESTDIR: the layout a package or an admin gets, the
paths substituted into the unit, the unit's hardening and validity as
systemd-analyze judges them, and man pages that render without warnings."""
import json
import os
import re
import shutil
import stat
import subprocess

import pytest

ROOT = os.environ.get("MAINTD_SOURCE_ROOT", os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("MAINTD_BUILD_ROOT", os.path.join(ROOT, "build"))
MAX_EXPOSURE = 1.5  # systemd-analyze's "OK" or better, and no worse than the unit is now
# The daemon reads as root past file modes (DAC_READ_SEARCH); its job
# processes become each database's owner (SETUID, SETGID); a job that will not
# end past its time limit is killed (KILL). Nothing else.
CAPABILITIES = {"CAP_DAC_READ_SEARCH", "CAP_SETUID", "CAP_SETGID", "CAP_KILL"}

MAN_PAGES = ["usr/share/man/man8/sqlite-maintd.8", "usr/share/man/man5/sqlite-maintd.yaml.5",
             "usr/share/man/man1/sqlite-maintctl.1"]


def run(*argv, **kw):
    kw.setdefault("timeout", 120)
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, **kw)


def build_options():
    p = run("meson", "introspect", "--buildoptions", BUILD, check=True)
    return {o["name"]: o["value"] for o in json.loads(p.stdout)}


@pytest.fixture(scope="module")
def destdir(tmp_path_factory):
    if not os.path.exists(os.path.join(BUILD, "build.ninja")):
        pytest.skip(f"no meson build directory at {BUILD}")
    d = tmp_path_factory.mktemp("destdir")
    p = run("meson", "install", "-C", BUILD, "--no-rebuild", "--destdir", d, "--quiet")
    assert p.returncode == 0, p.stdout + p.stderr
    return d


@pytest.fixture(scope="module")
def paths():
    o = build_options()
    prefix = o["prefix"]
    sysconf = "/etc" if prefix == "/usr" else os.path.join(prefix, o["sysconfdir"])

    def pc(var):
        p = run("pkg-config", f"--variable={var}", "systemd")
        return p.stdout.strip() if p.returncode == 0 else None

    return {
        "sbin": os.path.join(prefix, o["sbindir"], "sqlite-maintd"),
        "bin": os.path.join(prefix, o["bindir"], "sqlite-maintctl"),
        "unit": os.path.join(o["systemdsystemunitdir"] or pc("systemdsystemunitdir") or "/lib/systemd/system",
                             "sqlite-maintd.service"),
        "catalog": os.path.join(o["catalogdir"] or pc("catalogdir") or os.path.join(prefix, "lib/systemd/catalog"),
                                "sqlite-maintd.catalog"),
        "config": os.path.join(sysconf, "sqlite-maintd", "sqlite-maintd.yaml"),
        "man": [os.path.join(prefix, p.split("usr/", 1)[1]) if prefix != "/usr" else "/" + p for p in MAN_PAGES],
    }


def inside(destdir, path):
    return destdir / path.lstrip("/")


def test_layout(destdir, paths):
    for key in ("sbin", "bin"):
        f = inside(destdir, paths[key])
        assert f.is_file(), f
        assert os.stat(f).st_mode & stat.S_IXUSR, f"{f} is not executable"
    for key in ("unit", "catalog", "config"):
        assert inside(destdir, paths[key]).is_file(), paths[key]
    for m in paths["man"]:
        assert inside(destdir, m).is_file(), m
    if build_options()["prefix"] == "/usr":
        assert paths["config"] == "/etc/sqlite-maintd/sqlite-maintd.yaml"
        assert paths["sbin"] == "/usr/sbin/sqlite-maintd"


def test_installed_programs_run(destdir, paths):
    p = run(inside(destdir, paths["sbin"]), "--check-config", "-c", inside(destdir, paths["config"]))
    assert p.returncode == 0 and p.stdout.strip() == "configuration OK", p.stdout + p.stderr
    p = run(inside(destdir, paths["bin"]), "--version")
    assert p.returncode == 0 and p.stdout.startswith("sqlite-maintctl "), p.stdout


def test_unit_paths_substituted(destdir, paths):
    unit = inside(destdir, paths["unit"]).read_text()
    assert not re.search(r"@[A-Z_]+@", unit), "an @VARIABLE@ was left in the unit"
    assert re.search(rf"^ExecStart={re.escape(paths['sbin'])}$", unit, re.M), unit
    assert re.search(rf"^ExecReload={re.escape(paths['sbin'])} --check-config$", unit, re.M)
    assert re.search(r"^ExecReload=/bin/kill -HUP \$MAINPID$", unit, re.M)
    for line in ("Type=notify", "StateDirectory=sqlite-maintd", "ConfigurationDirectory=sqlite-maintd",
                 "Restart=on-failure", "RestartPreventExitStatus=78", "ProtectSystem=strict",
                 "Documentation=man:sqlite-maintd(8)"):
        assert re.search(rf"^{re.escape(line)}", unit, re.M), line
    assert re.search(r"^WatchdogSec=\S+", unit, re.M) and re.search(r"^TimeoutStopSec=\S+", unit, re.M)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_unit_security_exposure(destdir, paths):
    p = run("systemd-analyze", "security", "--offline=true", inside(destdir, paths["unit"]))
    out = p.stdout + p.stderr
    m = re.search(r"Overall exposure level for sqlite-maintd\.service: ([0-9.]+) (\w+)", out)
    assert m, out
    assert float(m.group(1)) <= MAX_EXPOSURE, out
    assert m.group(2) in ("OK", "SAFE"), out


def unit_capabilities(text):
    """The capability bounding set the unit's CapabilityBoundingSet= lines
    give, as systemd combines them (an empty one resets; none inverted)."""
    caps = None
    for m in re.finditer(r"^CapabilityBoundingSet=(.*)$", text, re.M):
        value = m.group(1).split()
        assert not value or not value[0].startswith("~"), f"an inverted bounding set: {m.group(0)}"
        caps = set(value) if not value else (caps or set()) | set(value)
    return caps


def test_unit_capabilities(destdir, paths):
    unit = inside(destdir, paths["unit"]).read_text()
    assert unit_capabilities(unit) == CAPABILITIES, unit_capabilities(unit)
    assert not re.search(r"^AmbientCapabilities=\s*\S", unit, re.M), "ambient capabilities granted"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_unit_verifies(destdir, paths, tmp_path):
    """verify checks that ExecStart/ExecReload exist and that the man pages of
    Documentation= resolve: point both at the DESTDIR tree."""
    unit = inside(destdir, paths["unit"]).read_text()
    sbin_dir = os.path.dirname(paths["sbin"])
    unit = unit.replace(sbin_dir + "/", str(inside(destdir, sbin_dir)) + "/")
    (tmp_path / "sqlite-maintd.service").write_text(unit)
    env = dict(os.environ, MANPATH=str(inside(destdir, os.path.dirname(os.path.dirname(paths["man"][0])))))
    p = run("systemd-analyze", "verify", tmp_path / "sqlite-maintd.service", env=env)
    assert p.returncode == 0 and p.stdout.strip() == "" and p.stderr.strip() == "", p.stdout + p.stderr


@pytest.mark.skipif(shutil.which("man") is None or shutil.which("groff") is None, reason="man-db/groff missing")
@pytest.mark.parametrize("page", range(len(MAN_PAGES)))
def test_man_page_renders_without_warnings(destdir, paths, page):
    f = inside(destdir, paths["man"][page])
    p = run("man", "--warnings", "-l", f, env=dict(os.environ, MANWIDTH="80"))
    assert p.returncode == 0 and p.stderr == "", p.stderr
    assert "NAME" in p.stdout and "SYNOPSIS" in p.stdout and "SEE ALSO" in p.stdout
    p = run("groff", "-man", "-ww", "-z", f)
    assert p.returncode == 0 and p.stderr == "", p.stderr


def test_meson_runs_every_integration_file():
    """tests/meson.build names each integration file (meson has no glob):
    a new file that is not listed would never run."""
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(ROOT, "tests", "meson.build")) as f:
        listed = set(re.findall(r"'(test_\w+)' :", f.read()))
    present = {n[:-3] for n in os.listdir(here) if n.startswith("test_") and n.endswith(".py")}
    assert present == listed, f"not listed: {sorted(present - listed)}; listed, no file: {sorted(listed - present)}"
