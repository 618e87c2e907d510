"""The Dockerfile read with no container engine: what each stage installs, that the final image keeps neither pip nor
the wheel, that its HEALTHCHECK and entrypoint exist in the package, and that the build context has what it COPYs.

The image itself is built by `make image` and run under runc by `make image-test` (tests/test_image.py); the wheel it
installs is built here the same way (`python -m build --wheel`) and checked for what the image serves with.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def stage(name: str) -> str:
    """The instructions of the stage `FROM ... AS name`, up to the next FROM."""
    match = re.search(rf"^FROM \S+ AS {name}$(.*?)(?=^FROM |\Z)", DOCKERFILE, re.M | re.S)
    assert match, f"the Dockerfile has no stage {name}"
    return match.group(1)


def test_the_server_venv_installs_one_server_extra_and_drops_pip() -> None:
    venv = stage("server-venv")
    (default,) = re.findall(r"^ARG SERVER_EXTRA=(\S+)$", venv, re.M)
    assert default == "server"  # the default image reads every registry MLflow reads
    assert re.search(r'extra_requirements\.py /tmp/requirements/pyproject\.toml "\$\{SERVER_EXTRA\}"', venv)
    assert re.search(r'pip install --no-cache-dir --no-deps "\$\{WHEEL\}\[\$\{SERVER_EXTRA\}\]"', venv)
    assert "pip check" in venv
    assert re.search(r"pip uninstall --yes --quiet pip setuptools", venv)
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert {"server", "server-slim"} <= set(extras)
    assert "ortserve[server-slim]" in extras["server"]  # the slim extra is the server minus MLflow, not a second list
    assert not any(re.match(r"(mlflow|sqlalchemy|alembic)\b", dep) for dep in extras["server-slim"])
    assert not any("torch" in dep for dep in extras["server-slim"] + extras["server"])


def test_the_runtime_stage_is_the_venv_alone_as_a_non_root_user() -> None:
    runtime = stage("runtime")
    assert "COPY --from=server-venv /opt/ortserve /opt/ortserve" in runtime
    assert "pip install" not in runtime and ".whl" not in runtime and "torch" not in runtime
    (user,) = re.findall(r"^USER (\S+)$", runtime, re.M)
    assert user not in {"root", "0"}
    assert re.search(rf"useradd --create-home --uid {user} ortserve", runtime)
    assert re.search(r"install -d -o ortserve -g ortserve /var/cache/ortserve", runtime)
    assert DOCKERFILE.rstrip().splitlines()[-1] == 'ENTRYPOINT ["ortserve", "serve"]'  # the default (last) stage


def test_the_healthcheck_is_exec_form_on_a_module_that_exists() -> None:
    match = re.search(r"HEALTHCHECK [^\n]*\\\n\s*CMD (\[.*\])", stage("runtime"))
    assert match, "the Dockerfile has no exec-form HEALTHCHECK CMD"
    command = json.loads(match.group(1))
    assert command[:2] == ["python", "-m"]
    module = command[2].removeprefix("ortserve.server.")
    assert (ROOT / "server" / f"{module}.py").is_file()


def test_the_export_stage_takes_torch_from_a_build_argument() -> None:
    export = stage("export")
    assert re.search(r"^ARG TORCH_INDEX_URL=https://download\.pytorch\.org/whl/cpu$", export, re.M)
    assert '--index-url "${TORCH_INDEX_URL}" "torch==' in export


def test_the_build_context_holds_what_the_dockerfile_copies() -> None:
    """.dockerignore lets in only what the Dockerfile COPYs (a context with .venv would be gigabytes)."""
    ignore = (ROOT / ".dockerignore").read_text().split()
    allowed = {line.removeprefix("!") for line in ignore if line.startswith("!")}
    copied = {source for line in re.findall(r"^COPY (?!--from)(.+)$", DOCKERFILE, re.M) for source in line.split()[:-1]}
    assert copied and copied == allowed
    assert "*" in ignore


@pytest.mark.slow
def test_the_wheel_carries_what_the_image_serves_with(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
        text=True,
    )
    (wheel,) = tmp_path.glob("ortserve-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    v2_files = ["grpc_predict_v2_pb2_grpc.py", "grpc_predict_v2.proto", "NOTICE"]
    assert {f"ortserve/v2/{name}" for name in v2_files} <= names
    assert "ortserve/server/healthcheck.py" in names


def test_the_dependency_layer_lists_what_the_wheel_asks_for() -> None:
    """scripts/image/extra_requirements.py (the layer before the wheel) expands ortserve[...] self-references."""

    def listed(extra: str) -> list[str]:
        script = ROOT / "scripts" / "image" / "extra_requirements.py"
        run = subprocess.run([sys.executable, str(script), str(ROOT / "pyproject.toml"), extra], capture_output=True,
                             text=True, check=True)  # fmt: skip
        return run.stdout.split()

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    slim, server = listed("server-slim"), listed("server")
    assert slim == project["dependencies"] + extras["server-slim"]
    assert server == slim + [dep for dep in extras["server"] if not dep.startswith("ortserve[")]
    assert not any(dep.startswith("ortserve") for dep in server)
