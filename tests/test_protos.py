"""The committed Python stubs are what `make protos` generates from the .proto files today."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GENERATED = ROOT / "protos" / "ortserve" / "v1"


def test_committed_stubs_are_fresh(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(ROOT / "protos" / "generate.py"), "--out", str(tmp_path)], check=True)
    fresh = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert [p.name for p in fresh] == ["inference_pb2.py", "inference_pb2.pyi", "inference_pb2_grpc.py"]
    stale = [str(p) for p in fresh if not filecmp.cmp(tmp_path / p, ROOT / "protos" / p, shallow=False)]
    assert not stale, f"stale generated stubs {stale}: run `make protos` and commit the result"


def test_every_message_and_field_is_commented() -> None:
    lines = (GENERATED / "inference.proto").read_text().splitlines()
    for index, line in enumerate(lines):
        stripped = line.strip()
        declares = stripped.startswith(("message ", "enum ", "rpc ", "service ")) or (
            stripped.endswith(";") and "=" in stripped and not stripped.startswith(("option", "syntax", "//"))
        )
        if declares:
            assert lines[index - 1].strip().startswith("//"), f"line {index + 1} has no comment: {stripped}"
