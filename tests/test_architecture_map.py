"""`docs/architecture.md` is the map of the source: every source file has its line, and every file it names exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAP = ROOT / "docs" / "architecture.md"
#: Folders of installed and shared code the map covers (tests/, benchmarks/, scripts/ and examples/ are not mapped).
MAPPED = ("server", "client", "contract", "export", "cli", "fixtures")


def source_files() -> set[str]:
    files = {str(p.relative_to(ROOT)) for folder in MAPPED for p in (ROOT / folder).rglob("*.py")}
    files |= {str(p.relative_to(ROOT)) for p in (ROOT / "protos").rglob("*.proto")}
    return files | {"protos/generate.py"}


def test_every_source_file_is_on_the_map() -> None:
    text = MAP.read_text()
    missing = sorted(f for f in source_files() if f"`{f}`" not in text)
    assert missing == [], f"add these to docs/architecture.md: {missing}"


def test_every_file_on_the_map_exists() -> None:
    named = set(
        re.findall(r"`((?:server|client|contract|export|cli|fixtures|protos)/[\w/]+\.(?:py|proto))`", MAP.read_text())
    )
    assert sorted(f for f in named if not (ROOT / f).exists()) == []


def test_nothing_on_the_map_is_planned() -> None:
    assert "planned" not in MAP.read_text().lower()
