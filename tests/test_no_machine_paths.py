"""No file of the repository names a path of the machine it was written on (a checkout, a home directory): commands
in docs must work from any checkout. Paths inside the container image (`/home/ortserve`) are the image's own."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: An absolute path into a developer's or builder's machine: a checkout under /work, a home directory, /root, /Users.
MACHINE_PATH = re.compile(r"(?<![\w.~-])/(?:work|root|Users|home/(?!ortserve\b)[\w.-]+)/")


def test_no_tracked_file_names_a_machine_path() -> None:
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    found = []
    for name in tracked.splitlines():
        path = ROOT / name
        if not path.is_file() or path.stat().st_size > 2_000_000:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # a binary file
        found += [f"{name}:{number}" for number, line in enumerate(text.splitlines(), 1) if MACHINE_PATH.search(line)]
    assert found == [], found
