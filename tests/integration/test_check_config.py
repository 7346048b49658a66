# SPDX-License-Identifier: MIT
"""sqlite-maintd --check-config: every good configuration file is accepted
with "configuration OK", every bad one refused with each error its
"# expect: LINE:COLUMN: text" header lines name, as FILE:LINE:COLUMN: on
stderr; and files that are not configurations at all (missing, a directory,
a FIFO, over 1 MiB, empty) are refused with a clear message.

Environment: MAINTD_BIN (the built daemon), MAINTD_SOURCE_ROOT (the source
tree, for tests/unit/data and conf/sqlite-maintd.yaml)."""

import os
import re
import subprocess

import pytest

from helpers import MAINTD_BIN, SOURCE_ROOT

DATA_DIR = os.path.join(SOURCE_ROOT, "tests", "unit", "data")
SHIPPED = os.path.join(SOURCE_ROOT, "conf", "sqlite-maintd.yaml")
MAX_SIZE = 1024 * 1024  # CONF_MAX_FILE_SIZE in src/conf.h

EXPECT_RE = re.compile(r"^# expect: (\d+):(\d+): (.*?)\s*$")


def _yaml_files(sub):
    d = os.path.join(DATA_DIR, sub)
    return sorted(os.path.join(d, f) for f in os.listdir(d) if f.endswith(".yaml"))


GOOD = _yaml_files("good") + [SHIPPED]
BAD = _yaml_files("bad")


def _expectations(path):
    """The (line, column, text) of each "# expect:" line heading path."""
    out = []
    with open(path, "rb") as f:
        for raw in f:
            m = EXPECT_RE.match(raw.decode("utf-8", "replace"))
            if not m:
                break
            out.append((int(m.group(1)), int(m.group(2)), m.group(3)))
    return out


@pytest.fixture(scope="module")
def maintd():
    # A missing binary must fail loudly, not turn every test into a skip.
    if not (os.path.isfile(MAINTD_BIN) and os.access(MAINTD_BIN, os.X_OK)):
        pytest.fail(f"sqlite-maintd not built: {MAINTD_BIN} (set MAINTD_BIN)", pytrace=False)

    def run(path):
        return subprocess.run([MAINTD_BIN, "--check-config", "-c", str(path)],
                              capture_output=True, text=True, errors="replace", timeout=60)
    return run


def _valid_yaml_of_size(size):
    """A valid configuration padded with a comment to exactly size bytes."""
    head = b"databases:\n  - path: /var/lib/app/main.db\n# "
    body = head + b"x" * (size - len(head) - 1) + b"\n"
    assert len(body) == size
    return body


@pytest.mark.parametrize("path", GOOD, ids=[os.path.relpath(p, SOURCE_ROOT) for p in GOOD])
def test_good_file_is_accepted(maintd, path):
    p = maintd(path)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "configuration OK"
    assert p.stderr == ""


def test_there_are_enough_bad_files():
    assert len(BAD) >= 25


@pytest.mark.parametrize("path", BAD, ids=[os.path.basename(p) for p in BAD])
def test_bad_file_is_refused_with_each_error(maintd, path):
    expects = _expectations(path)
    assert expects, f"{path}: no '# expect: LINE:COLUMN: text' first line"
    p = maintd(path)
    assert p.returncode == 78, (p.returncode, p.stderr)  # EX_CONFIG
    assert "configuration OK" not in p.stdout
    lines = p.stderr.splitlines()
    for line, column, text in expects:
        prefix = f"{path}:{line}:{column}:"
        assert any(l.startswith(prefix) and text in l[len(prefix):] for l in lines), \
            f"no stderr line '{prefix} ...{text}...' in:\n{p.stderr}"


def test_errors_come_in_file_order(maintd):
    path = os.path.join(DATA_DIR, "bad", "many-errors.yaml")
    p = maintd(path)
    assert p.returncode == 78, (p.returncode, p.stderr)  # EX_CONFIG
    positions = []
    for l in p.stderr.splitlines():
        m = re.match(re.escape(path) + r":(\d+):(\d+): ", l)
        if m:
            positions.append((int(m.group(1)), int(m.group(2))))
    assert len(positions) == len(_expectations(path))
    assert positions == sorted(positions)


def test_missing_file(maintd, tmp_path):
    path = tmp_path / "nonexistent.yaml"
    p = maintd(path)
    assert p.returncode == 78, (p.returncode, p.stderr)  # EX_CONFIG
    assert "configuration OK" not in p.stdout
    assert str(path) in p.stderr
    assert "no such file" in p.stderr.lower()


def test_directory(maintd, tmp_path):
    p = maintd(tmp_path)
    assert p.returncode == 78, (p.returncode, p.stderr)  # EX_CONFIG
    assert "configuration OK" not in p.stdout
    assert str(tmp_path) in p.stderr
    assert "not a regular file" in p.stderr


def test_fifo_is_refused_without_hanging(maintd, tmp_path):
    path = tmp_path / "fifo.yaml"
    os.mkfifo(path)
    p = maintd(path)  # nobody ever writes: reading it would block forever
    assert p.returncode == 78, (p.returncode, p.stderr)  # EX_CONFIG
    assert "not a regular file" in p.stderr


def test_over_one_mib_is_refused(maintd, tmp_path):
    path = tmp_path / "big.yaml"
    path.write_bytes(_valid_yaml_of_size(MAX_SIZE + 1))
    p = maintd(path)
    assert p.returncode == 78, (p.returncode, p.stderr)  # EX_CONFIG
    assert "configuration OK" not in p.stdout
    assert str(path) in p.stderr
    assert "too large" in p.stderr
    assert "1 MiB" in p.stderr


def test_exactly_one_mib_is_accepted(maintd, tmp_path):
    path = tmp_path / "limit.yaml"
    path.write_bytes(_valid_yaml_of_size(MAX_SIZE))
    p = maintd(path)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "configuration OK"


def test_empty_file(maintd, tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_bytes(b"")
    p = maintd(path)
    assert p.returncode == 78, (p.returncode, p.stderr)  # EX_CONFIG
    assert f"{path}:1:1: empty configuration" in p.stderr
