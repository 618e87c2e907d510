"""`make image`: builds the server image (and the export image where its torch index answers) with podman.

`podman build --format docker --isolation chroot`: the Docker format keeps the Dockerfile's HEALTHCHECK (the OCI
format has no field for it), chroot isolation needs no namespaces or resource limits from the machine. pip inside
the build uses this machine's pip configuration: `pip config list` is written into one pip.conf mounted read-only at
/etc/pip.conf, with every file and directory it names (CA bundle, constraints, find-links, file:// indexes) mounted
read-only at the same path, so a build behind a TLS-inspecting proxy or with a local wheel mirror works as pip does
here. Nothing of it lands in the image: build-time mounts are not part of any layer.

Usage: python3 scripts/image/build.py [--tag ortserve:0.1.0] [--extra server] [--export-tag ...] [--torch-index-url ...]
Prints the build time and writes it to image-work/build-times.json (what tests/test_image.py reports).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WORK = ROOT / "image-work"
#: pip settings whose values are local paths (or file:// URLs) the build must see.
PATH_SETTINGS = ("cert", "client-cert", "constraint", "find-links", "index-url", "extra-index-url", "requirement")
DEFAULT_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"


def pip_settings() -> dict[str, str]:
    """This machine's effective pip settings (files, then PIP_* variables), as `pip config list` prints them."""
    listed = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=True
    ).stdout
    settings: dict[str, str] = {}
    for line in listed.splitlines():
        match = re.fullmatch(r"[^.]*\.([\w-]+)='(.*)'", line.strip())
        if match:
            settings[match[1]] = match[2]  # later lines (PIP_* variables) win, as in pip
    return settings


def pip_mounts(settings: dict[str, str], conf: Path) -> list[str]:
    """`-v` arguments: the merged pip.conf at /etc/pip.conf and each local path it names, all read-only."""
    conf.write_text("[global]\n" + "".join(f"{key} = {value}\n" for key, value in settings.items()))
    mounts = [f"{conf}:/etc/pip.conf:ro"]
    for key in PATH_SETTINGS:
        for value in settings.get(key, "").split():
            path = Path(value.removeprefix("file://"))
            if key.endswith("index-url"):
                path = path.parent  # a local index's pages link to files beside it (../files/)
            if path.is_absolute() and path.exists():
                mounts.append(f"{path}:{path}:ro")
    return [arg for mount in dict.fromkeys(mounts) for arg in ("-v", mount)]


def reachable(url: str) -> bool:
    try:
        urllib.request.urlopen(url.rstrip("/") + "/torch/", timeout=10).close()
        return True
    except (urllib.error.URLError, OSError):
        return False


def podman_build(target: str, tag: str, build_args: dict[str, str], mounts: list[str], no_cache: bool) -> float:
    """One `podman build` of `target` as `tag`; returns its wall time in seconds."""
    argv = ["podman", "build", "--format", "docker", "--isolation", "chroot", "--target", target, "-t", tag]
    argv += ["--no-cache"] if no_cache else []
    argv += [arg for name, value in build_args.items() for arg in ("--build-arg", f"{name}={value}")]
    start = time.monotonic()
    if subprocess.run([*argv, *mounts, str(ROOT)]).returncode != 0:
        raise SystemExit(f"image: podman build of {tag} (--target {target}) failed: see its output above")
    seconds = time.monotonic() - start
    print(f"image: built {tag} (--target {target}) in {seconds:.1f} s")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tag", default="ortserve:0.1.0")
    parser.add_argument("--slim-tag", default="", help="also build the server-slim extra (no MLflow) with this tag")
    parser.add_argument("--export-tag", default="ortserve-export:0.1.0")
    parser.add_argument("--torch-index-url", default=DEFAULT_TORCH_INDEX)
    parser.add_argument("--no-cache", action="store_true", help="rebuild every layer (to measure a cold build)")
    args = parser.parse_args()
    WORK.mkdir(exist_ok=True)
    times_file = WORK / "build-times.json"
    times = json.loads(times_file.read_text()) if times_file.exists() else {}
    with tempfile.TemporaryDirectory(prefix="ortserve-pip-") as scratch:
        mounts = pip_mounts(pip_settings(), Path(scratch) / "pip.conf")
        servers = {args.tag: "server", args.slim_tag: "server-slim"}
        for tag, extra in servers.items():
            if tag:
                seconds = podman_build("runtime", tag, {"SERVER_EXTRA": extra}, mounts, args.no_cache)
                times.setdefault(f"{tag}{' --no-cache' * args.no_cache}", []).append(round(seconds, 1))
        if reachable(args.torch_index_url):
            torch_index = {"TORCH_INDEX_URL": args.torch_index_url}
            seconds = podman_build("export", args.export_tag, torch_index, mounts, args.no_cache)
            times.setdefault(f"{args.export_tag}{' --no-cache' * args.no_cache}", []).append(round(seconds, 1))
        else:
            print(
                f"image: export image NOT built: its torch index {args.torch_index_url} does not answer from here "
                "(set TORCH_INDEX_URL to a reachable mirror of PyTorch's CPU index)"
            )
    times_file.write_text(json.dumps(times, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
