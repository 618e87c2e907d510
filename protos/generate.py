"""Regenerate the Python stubs of protos/ with grpcio-tools: `python protos/generate.py [--out DIR]`.

The generated modules (`*_pb2.py`, `*_pb2.pyi`, `*_pb2_grpc.py`) are written next to their `.proto` files, where they
install as the `ortserve.v1` package. They are never edited by hand; tests/test_protos.py fails when they are stale.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from grpc_tools import protoc

PROTO_ROOT = Path(__file__).resolve().parent


def generate(out_dir: Path) -> None:
    """Generate stubs for every `.proto` under protos/ into `out_dir` (mirroring the package folders)."""
    import grpc_tools

    include = Path(grpc_tools.__file__).parent / "_proto"
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    out_dir.mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit(f"protoc failed on {protos}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=PROTO_ROOT, help="output root (default: next to the protos)")
    generate(parser.parse_args().out)


if __name__ == "__main__":
    sys.exit(main())
