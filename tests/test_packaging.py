"""The wheel: `pip install ortserve` (no extras) gives a working client without onnxruntime or torch."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import venv
import zipfile
from pathlib import Path

import pytest

from .helpers import RunningServer

pytestmark = pytest.mark.slow  # builds the wheel and installs it into fresh venvs

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        text=True,
    )
    (built,) = out.glob("ortserve-*.whl")
    return built


def test_wheel_holds_every_package_under_the_ortserve_namespace(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    for package in ["cli", "client", "server", "export", "v1"]:
        assert f"ortserve/{package}/__init__.py" in names
        assert f"ortserve/{package}/py.typed" in names
    assert "ortserve/v1/inference_pb2.pyi" in names and "ortserve/v1/inference.proto" in names
    top_level = {name.split("/")[0] for name in names}
    assert top_level == {"ortserve", wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1] + ".dist-info"}


def test_wheel_holds_the_contract_and_no_fixtures(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert "ortserve/contract/__init__.py" in names and "ortserve/contract/py.typed" in names
    assert not [name for name in names if "tiny_models" in name or "registry_seed" in name or "fixtures" in name]


#: The oldest and newest protobuf and grpcio the client is proved with (pyproject.toml states the same floors), and
#: one protobuf of each major version between: Spark, Airflow and ML images pin any of them.
CLIENT_RUNTIMES = {
    "oldest": ["protobuf==4.25.1", "grpcio==1.60.0"],
    "protobuf-5": ["protobuf==5.29.6", "grpcio==1.66.2"],
    "protobuf-6": ["protobuf==6.33.6", "grpcio==1.76.0"],
    "newest": ["--upgrade", "protobuf", "grpcio"],
}


@pytest.mark.parametrize("runtime", list(CLIENT_RUNTIMES))
def test_client_only_install_calls_a_server(wheel: Path, server: RunningServer, tmp_path: Path, runtime: str) -> None:
    env_dir = tmp_path / "client-venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    # The project's pip installs into the bare venv (`--python`), which saves bootstrapping pip in every venv.
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--quiet",
            "--disable-pip-version-check",
            str(wheel),
            *CLIENT_RUNTIMES[runtime],
        ],
        capture_output=True,
        text=True,
    )
    assert install.returncode == 0, install.stderr
    script = textwrap.dedent(f"""
        import importlib.util, json
        from importlib.metadata import version
        from ortserve.client import AsyncInferenceClient, InferenceClient
        import asyncio
        absent = [m for m in ("onnxruntime", "torch", "numpy", "transformers", "tokenizers")
                  if importlib.util.find_spec(m) is None]
        with InferenceClient("{server.target}") as client:
            result = client.classify("bert", ["hello from a client-only install"], top_k=1)
            info = client.get_model("bert")

        async def classify_async():
            async with AsyncInferenceClient("{server.target}") as client:
                return await client.classify("bert", ["hello from the async client"])

        async_result = asyncio.run(classify_async())
        print(json.dumps({{"absent": absent, "label": result[0].top.label, "version": info.version,
                          "async_labels": len(async_result[0].labels),
                          "protobuf": version("protobuf"), "grpcio": version("grpcio")}}))
    """)
    run = subprocess.run([str(python), "-c", script], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["absent"] == ["onnxruntime", "torch", "numpy", "transformers", "tokenizers"]
    assert report["label"] and report["version"] and report["async_labels"] == 3
    pins = dict(p.split("==") for p in CLIENT_RUNTIMES[runtime] if "==" in p)
    assert {k: report[k] for k in pins} == pins, "the venv did not get the runtime it was meant to prove"
    cli = subprocess.run([str(env_dir / "bin" / "ortserve"), "serve", "--model", "x=y"], capture_output=True, text=True)
    assert cli.returncode == 2 and "pip install 'ortserve[server]'" in cli.stderr


def test_server_extra_installs_without_torch_or_transformers(wheel: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "server-venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", f"{wheel}[server]"], capture_output=True, text=True
    )
    assert install.returncode == 0, install.stderr
    script = textwrap.dedent("""
        import importlib.util, json
        import ortserve.server.app, ortserve.server.sources.registry_source, mlflow
        print(json.dumps({m: importlib.util.find_spec(m) is not None
                          for m in ("torch", "transformers", "optimum", "onnxruntime", "tokenizers", "sqlalchemy")}))
    """)
    run = subprocess.run([str(python), "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == (
        '{"torch": false, "transformers": false, "optimum": false, "onnxruntime": true, "tokenizers": true, '
        '"sqlalchemy": true}'
    )
    help_text = subprocess.run([str(env_dir / "bin" / "ortserve"), "serve", "--help"], capture_output=True, text=True)
    assert help_text.returncode == 0 and "--poll-interval" in help_text.stdout and "ORTSERVE_MODELS" in help_text.stdout
