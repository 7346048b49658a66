# SPDX-License-Identifier: MIT
"""The journal catalog explains every MESSAGE_ID the daemon logs, and
journalctl accepts it."""
import os
import re
import shutil
import subprocess

import pytest

ROOT = os.environ.get("MAINTD_SOURCE_ROOT", os.path.join(os.path.dirname(__file__), "..", ".."))


def msgids():
    text = open(os.path.join(ROOT, "src", "msgid.h")).read()
    return dict(re.findall(r'#define MSGID_(\w+) "([0-9a-f]{32})"', text))


def test_ids_are_unique_128_bit():
    ids = msgids()
    assert len(ids) >= 10
    assert len(set(ids.values())) == len(ids)


def test_every_id_has_a_catalog_entry():
    catalog = open(os.path.join(ROOT, "systemd", "sqlite-maintd.catalog")).read()
    entries = re.findall(r"^-- ([0-9a-f]{32})$", catalog, re.M)
    assert sorted(entries) == sorted(msgids().values())
    for block in catalog.split("\n-- ")[1:]:
        assert "\nSubject: " in block and "\nSupport: man:sqlite-maintd(8)" in block


@pytest.mark.skipif(shutil.which("journalctl") is None, reason="journalctl not installed")
def test_journalctl_compiles_the_catalog(tmp_path):
    cat_dir = tmp_path / "usr/lib/systemd/catalog"
    cat_dir.mkdir(parents=True)
    shutil.copy(os.path.join(ROOT, "systemd", "sqlite-maintd.catalog"), cat_dir)
    subprocess.run(["journalctl", f"--root={tmp_path}", "--update-catalog"], check=True, timeout=30)
    listed = subprocess.run(["journalctl", f"--root={tmp_path}", "--list-catalog"], check=True,
                            capture_output=True, text=True, timeout=30).stdout
    for name, mid in msgids().items():
        assert mid in listed, name
    corrupt = msgids()["CORRUPT"]
    shown = subprocess.run(["journalctl", f"--root={tmp_path}", "--dump-catalog", corrupt], check=True,
                           capture_output=True, text=True, timeout=30).stdout
    assert "DATABASE CORRUPTION FOUND" in shown and "NOT vacuumed" in shown
