"""The README Security section works verbatim: its recipe makes the `tls/` files and the token file, the server starts
with the flags it shows (model and port substituted), and its grpcurl commands, `ortserve predict` line and Python
client reach that server over mutual TLS with the token."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ortserve.client import InferenceClient

from .helpers import GRPCURL, RunningServer, running_server

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "s3cr3t-demo-token"


def security_grpcurl_commands() -> list[str]:
    return [line for line in security_section().splitlines() if line.startswith(".venv/bin/grpcurl ")]


def test_the_security_section_shows_tls_client_certificates_and_tokens() -> None:
    commands = " ".join(security_grpcurl_commands())
    for needed in [
        "-cacert ",
        "-cert ",
        "-key ",
        f"-H 'authorization: Bearer {TOKEN}'",
        "Inference/Classify",
        "Health/Check",
        " list",
    ]:
        assert needed in commands


def security_section() -> str:
    text = (ROOT / "README.md").read_text()
    return text.split("\n## Security\n", 1)[1].split("\n## ", 1)[0]


def fenced_blocks(section: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", section, re.S)


def recipe_block() -> str:
    (block,) = [b for b in fenced_blocks(security_section(), "bash") if "trustme" in b]
    return block


def serve_settings(folder: Path) -> dict[str, object]:
    """The settings of the section's `ortserve serve` command (its flags, files resolved in `folder`), model aside."""
    (block,) = [b for b in fenced_blocks(security_section(), "bash") if b.startswith("ortserve serve ")]
    argv = shlex.split(block.replace("\\\n", " "))
    flags = dict(zip(argv[2::2], argv[3::2], strict=True))
    assert flags.pop("--model").startswith("sentiment=models:/")
    return {flag.removeprefix("--").replace("-", "_"): folder / value for flag, value in flags.items()}


@pytest.fixture(scope="module")
def workdir(
    artifacts: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, RunningServer]]:
    folder = tmp_path_factory.mktemp("readme-security")
    (folder / ".venv").symlink_to(ROOT / ".venv")  # the recipe runs .venv/bin/python, from the checkout
    recipe = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", recipe_block()], cwd=folder, capture_output=True, text=True, timeout=60
    )
    assert recipe.returncode == 0, recipe.stderr
    settings = serve_settings(folder)
    for path in settings.values():
        assert isinstance(path, Path) and path.is_file(), f"the recipe did not make {path}"
    with running_server(models=[f"sentiment={artifacts['bert']}"], **settings) as server:
        yield folder, server


def run(command: str, folder: Path, server: RunningServer) -> subprocess.CompletedProcess[str]:
    if not GRPCURL.exists():
        pytest.skip("grpcurl is installed by `make test` into .venv")
    argv = shlex.split(command.replace("localhost:50051", server.target))
    argv[0] = str(GRPCURL)
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd=folder)


@pytest.mark.parametrize("command", security_grpcurl_commands())
def test_security_grpcurl_command_works(command: str, workdir: tuple[Path, RunningServer]) -> None:
    folder, server = workdir
    result = run(command, folder, server)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


def test_the_commands_fail_without_token_or_client_certificate(workdir: tuple[Path, RunningServer]) -> None:
    folder, server = workdir
    classify = next(c for c in security_grpcurl_commands() if "Inference/Classify" in c)
    without_token = run(classify.replace(f"-H 'authorization: Bearer {TOKEN}' ", ""), folder, server)
    without_cert = run(classify.replace("-cert tls/client.pem -key tls/client.key ", ""), folder, server)
    assert without_token.returncode != 0 and "Unauthenticated" in without_token.stderr
    assert without_cert.returncode != 0


def test_the_recipe_makes_every_file_the_commands_name(workdir: tuple[Path, RunningServer]) -> None:
    folder, _ = workdir
    named = set(re.findall(r"\b(?:tls/[\w.]+|tokens\.txt)", security_section()))
    assert named >= {"tls/ca.pem", "tls/server.pem", "tls/server.key", "tls/client.pem", "tls/client.key"}
    assert all((folder / name).is_file() for name in named), named


def test_the_predict_line_works(workdir: tuple[Path, RunningServer]) -> None:
    folder, server = workdir
    (line,) = [b.strip() for b in fenced_blocks(security_section(), "bash") if b.startswith("ortserve predict ")]
    argv = shlex.split(line.replace("localhost:50051", server.target))
    argv[0] = str(Path(sys.executable).parent / "ortserve")
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=folder)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["model"] == "sentiment"


def test_the_python_client_snippet_works(workdir: tuple[Path, RunningServer], monkeypatch: pytest.MonkeyPatch) -> None:
    folder, server = workdir
    (snippet,) = [b for b in fenced_blocks(security_section(), "python") if "client_certificate" in b]
    monkeypatch.chdir(folder)
    monkeypatch.setenv("ORTSERVE_TOKEN", TOKEN)
    namespace: dict[str, object] = {"os": os, "InferenceClient": InferenceClient}
    exec(snippet.replace("localhost:50051", server.target), namespace)
    with namespace["client"] as client:  # type: ignore[attr-defined]
        assert client.classify("sentiment", ["Shares rallied"])[0].labels
