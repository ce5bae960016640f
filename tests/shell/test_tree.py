"""The source tree itself: no file carries a merge's conflict markers."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MARKER = re.compile(rb"^(<{7}|>{7}) ", re.M)


def test_no_tracked_file_holds_conflict_markers() -> None:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout.split(b"\0")
    hits = [name.decode() for name in files if name and MARKER.search((REPO / name.decode()).read_bytes())]
    assert hits == []
