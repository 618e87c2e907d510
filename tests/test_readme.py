"""The README's grpcurl commands work verbatim against a server like the demo's (port substituted)."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest

from .helpers import GRPCURL, running_server

ROOT = Path(__file__).resolve().parent.parent


def readme_grpcurl_commands() -> list[str]:
    lines = (ROOT / "README.md").read_text().splitlines()
    # The Security section's commands need TLS files and a token: tests/test_security_readme.py runs those.
    return [line for line in lines if line.startswith(".venv/bin/grpcurl ") and " -cacert " not in line]


def test_readme_shows_the_grpcurl_commands() -> None:
    verbs = " ".join(readme_grpcurl_commands())
    for needed in [" list", "describe ", "Inference/Classify", "Health/Check"]:
        assert needed in verbs


@pytest.mark.parametrize("command", readme_grpcurl_commands())
def test_readme_grpcurl_command_works(command: str, artifacts: dict[str, Path]) -> None:
    if not GRPCURL.exists():
        pytest.skip("grpcurl is installed with the `test` extra (`make test`, `make test-fast`)")
    with running_server(models=[f"sentiment={artifacts['bert']}"]) as server:
        argv = shlex.split(command.replace("localhost:50051", server.target))
        argv[0] = str(GRPCURL)
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
