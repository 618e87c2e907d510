"""Replays the Dockerfile's server image without a container engine: wheel → fresh venv → the `[server]` extra only →
serve as a non-root user → the image's HEALTHCHECK command passes → SIGTERM exits 0."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import venv
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ortserve.server.healthcheck import wait_until_serving

from .helpers import free_port

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = (ROOT / "Dockerfile").read_text()
RUNTIME_STAGE = DOCKERFILE.split(" AS runtime", 1)[1]
NOBODY = 65534
SETPRIV = shutil.which("setpriv")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.geteuid() != 0 or SETPRIV is None, reason="switching to a non-root user needs root and setpriv (util-linux)"
    ),
]


def test_runtime_stage_is_the_server_extra_as_a_non_root_user() -> None:
    assert re.search(r'pip install "\$\{WHEEL\}\[server\]"', RUNTIME_STAGE)
    assert "torch" not in RUNTIME_STAGE
    (user,) = re.findall(r"^USER (\S+)$", RUNTIME_STAGE, re.M)
    assert user not in {"root", "0"}
    assert DOCKERFILE.rstrip().splitlines()[-1] == 'ENTRYPOINT ["ortserve", "serve"]'  # the default (last) stage


@pytest.fixture(scope="module")
def image_root() -> Iterator[Path]:
    """A world-readable directory standing in for the image's filesystem (pytest's tmp dirs are root-only)."""
    root = Path(tempfile.mkdtemp(prefix="ortserve-image-"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def server_venv(image_root: Path) -> Path:
    """`python -m build --wheel`, then `python -m venv /opt/ortserve && pip install "${WHEEL}[server]"`."""
    dist = image_root / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), str(ROOT)],
        check=True,
        capture_output=True,
        text=True,
    )
    (wheel,) = dist.glob("ortserve-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    v2_files = ["grpc_predict_v2_pb2_grpc.py", "grpc_predict_v2.proto", "NOTICE"]
    assert {f"ortserve/v2/{name}" for name in v2_files} <= names
    env_dir = image_root / "opt" / "ortserve"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    install = subprocess.run(
        [str(env_dir / "bin" / "pip"), "install", "--quiet", f"{wheel}[server]"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert install.returncode == 0, install.stderr
    return env_dir


def as_nobody(argv: list[str]) -> list[str]:
    assert SETPRIV is not None
    return [SETPRIV, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--", *argv]


def test_server_image_serves_as_non_root_and_passes_its_healthcheck(
    server_venv: Path, image_root: Path, artifacts: dict[str, Path]
) -> None:
    models = image_root / "models"
    shutil.copytree(artifacts["bert"], models / "sentiment")  # the `-v /srv/models:/models` of the Dockerfile's header
    for writable in ["cache", "home"]:
        (image_root / writable).mkdir()
        os.chown(image_root / writable, NOBODY, NOBODY)
    port = free_port()
    env = {
        "PATH": f"{server_venv / 'bin'}:/usr/bin:/bin",
        "HOME": str(image_root / "home"),
        "PYTHONUNBUFFERED": "1",
        "ORTSERVE_HOST": "127.0.0.1",  # the image binds 0.0.0.0; a test listens on loopback only
        "ORTSERVE_PORT": str(port),
        "ORTSERVE_CACHE_DIR": str(image_root / "cache"),
        "ORTSERVE_MODELS": f"sentiment={models / 'sentiment'}",
    }
    entrypoint = json.loads(re.findall(r"^ENTRYPOINT (\[.*\])$", RUNTIME_STAGE, re.M)[0])
    server = subprocess.Popen(
        as_nobody(entrypoint), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        wait_until_serving(f"127.0.0.1:{port}", server, timeout=120)
        status = Path(f"/proc/{server.pid}/status").read_text()
        assert re.search(rf"^Uid:\s+{NOBODY}\s", status, re.M), status
        healthcheck = json.loads(re.search(r"HEALTHCHECK [^\n]*\\\n\s*CMD (\[.*\])", RUNTIME_STAGE).group(1))  # type: ignore[union-attr]
        check = subprocess.run(as_nobody(healthcheck), env=env, capture_output=True, text=True, timeout=60)
        assert check.returncode == 0, check.stdout + check.stderr
        assert check.stdout.strip() == f"127.0.0.1:{port} (server): SERVING"
        probe = subprocess.run(
            as_nobody([*healthcheck, "--service", "liveness"]), env=env, capture_output=True, text=True, timeout=60
        )
        assert probe.returncode == 0, probe.stderr
    finally:
        server.send_signal(signal.SIGTERM)
        output, _ = server.communicate(timeout=60)
    assert server.returncode == 0, output
    assert "stopped" in output
