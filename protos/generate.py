"""Regenerate the Python stubs of protos/ with a pinned, old grpcio-tools: `python protos/generate.py [--out DIR]`.

The generated modules (`*_pb2.py`, `*_pb2.pyi`, `*_pb2_grpc.py`) are written next to their `.proto` files, where they
install as `ortserve.*` packages. They are never edited by hand; tests/test_protos.py fails when they are stale.

Why an old code generator: the stubs are part of the client, which Spark executors, Airflow workers and ML images
install beside whatever protobuf and grpcio they pin (often protobuf 4.x or 5.x). Stubs from grpcio-tools >= 1.63
refuse to import under an older grpcio (`GRPC_GENERATED_VERSION`) and those of protobuf >= 5.26 under an older
protobuf (`ValidateProtobufRuntimeVersion`). grpcio-tools 1.62.3 emits protobuf 4.25 gencode with neither check,
and newer runtimes keep loading it (tests/test_client_compat.py proves the range stated in pyproject.toml).
That generator needs protobuf < 5, which cannot share the project's venv, so it is installed on first use into a
private folder (`--tools-dir`, default under ~/.cache) and run in a subprocess.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
#: The code generator and the protobuf it runs on; changing either changes every generated file.
GRPCIO_TOOLS = "grpcio-tools==1.62.3"
GENERATOR_PROTOBUF = "protobuf==4.25.8"
DEFAULT_TOOLS_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ortserve" / "grpcio-tools-1.62.3"


def ensure_tools(tools_dir: Path) -> Path:
    """Install the pinned generator into `tools_dir` unless it is there already; return the folder."""
    marker = tools_dir / ".installed"
    if marker.is_file() and marker.read_text() == f"{GRPCIO_TOOLS} {GENERATOR_PROTOBUF}":
        return tools_dir
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            "--upgrade",
            "--target",
            str(tools_dir),
            GRPCIO_TOOLS,
            GENERATOR_PROTOBUF,
        ],
        check=True,
    )
    marker.write_text(f"{GRPCIO_TOOLS} {GENERATOR_PROTOBUF}")
    return tools_dir


def generate(out_dir: Path, tools_dir: Path = DEFAULT_TOOLS_DIR) -> None:
    """Generate stubs for every `.proto` under protos/ into `out_dir` (mirroring the package folders)."""
    tools = ensure_tools(tools_dir)
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    out_dir.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{tools / 'grpc_tools' / '_proto'}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *protos,
    ]
    # -S (no site-packages) keeps the project's own protobuf and grpcio-tools out of the generator's process;
    # PYTHONPATH brings the pinned ones.
    command.insert(1, "-S")
    env = {**os.environ, "PYTHONPATH": str(tools)}
    if subprocess.run(command, env=env).returncode != 0:
        raise SystemExit(f"protoc failed on {protos}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=PROTO_ROOT, help="output root (default: next to the protos)")
    parser.add_argument("--tools-dir", type=Path, default=DEFAULT_TOOLS_DIR, help="where the generator is installed")
    args = parser.parse_args()
    generate(args.out, args.tools_dir)


if __name__ == "__main__":
    sys.exit(main())
