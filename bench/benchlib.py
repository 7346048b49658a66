# SPDX-License-Identifier: MIT
"""What both benchmarks need to name the binary they measured."""
import os
import subprocess


def git_revision(root):
    """HEAD of the tree at root, marked when it has uncommitted changes."""
    try:
        rev = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return rev + (" with uncommitted changes" if dirty else "")


def binary_revision(binary, fallback):
    """What the binary was built from: BUILD/REVISION written by
    bench/build.sh, else the working tree now (which may have moved on)."""
    try:
        with open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(binary))), "REVISION")) as f:
            return f.read().strip()
    except OSError:
        return fallback + " (the working tree at the end of the run; no REVISION file beside the binary)"
