# SPDX-License-Identifier: MIT
"""Fixtures for the sqlite-maintctl integration tests.

Environment: MAINTCTL_BIN, MAINTD_BIN (the built programs; default
MAINTD_BUILD_ROOT/src/..., MAINTD_BUILD_ROOT defaulting to build/ in the
source tree), MAINTD_SOURCE_ROOT (the source tree)."""

import os
import shutil
import subprocess
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.dirname(__file__))

import helpers  # noqa: E402


@pytest.fixture(scope="session")
def ctl_bin():
    # A missing binary must fail loudly, not turn every test into a skip.
    b = helpers.MAINTCTL_BIN
    if not (os.path.isfile(b) and os.access(b, os.X_OK)):
        pytest.fail(f"sqlite-maintctl not built: {b} (set MAINTCTL_BIN)", pytrace=False)
    return b


@pytest.fixture
def run_ctl(ctl_bin):
    """run_ctl(*args, env=, cwd=, user=) -> CtlResult (.rc, .out, .err, .json)."""
    return helpers.run_ctl


@pytest.fixture
def make_fragmented_db():
    """make_fragmented_db(path, mode='delete'|'wal', rows, delete_fraction,
    auto_vacuum=, keep_open=) -> with keep_open an AppProcess (the
    application's connection in another process, idle), else None.
    Processes kept open are ended at teardown."""
    apps = []

    def make(path, *a, **kw):
        app = helpers.make_fragmented_db(path, *a, **kw)
        if app is not None:
            apps.append(app)
        return app

    yield make
    for app in apps:
        app.close()
        app.kill()


@pytest.fixture
def lock_holder():
    """lock_holder(path, begin='BEGIN EXCLUSIVE', stmts=(), user=None) ->
    LockHolder: a second process that holds the lock until .release()."""
    holders = []

    def start(path, begin="BEGIN EXCLUSIVE", stmts=(), user=None):
        h = helpers.LockHolder(path, begin, stmts, user)
        holders.append(h)
        return h

    yield start
    for h in holders:
        h.close()
        h.kill()


def _require_root(what):
    if os.geteuid() != 0:
        pytest.skip(f"{what} needs root (running as uid {os.geteuid()})")


@pytest.fixture
def tmpfs(tmp_path):
    """tmpfs(size='8m') -> path of a freshly mounted tmpfs of that size,
    unmounted at teardown. Skips when not root or when mount fails."""
    _require_root("mounting a small tmpfs")
    mounts = []

    def mount(size="8m", name=None):
        d = tmp_path / (name or f"tmpfs{len(mounts)}")
        d.mkdir()
        p = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(d)],
                           capture_output=True, text=True, timeout=30)
        if p.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {p.stderr.strip()}")
        mounts.append(d)
        return d

    yield mount
    for d in reversed(mounts):
        p = subprocess.run(["umount", str(d)], capture_output=True, timeout=30)
        if p.returncode != 0:
            subprocess.run(["umount", "-l", str(d)], capture_output=True, timeout=30)


@pytest.fixture
def nobody_dir():
    """A directory user nobody can reach (pytest's tmp_path sits under a
    0700 directory), removed at teardown."""
    _require_root("running the tool as user nobody")
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    d = tempfile.mkdtemp(prefix="maintctl-test-", dir="/tmp")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)
