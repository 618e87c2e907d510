"""The README Security section's grpcurl commands work verbatim (port substituted) against a server with mutual TLS
and the token they show, run in a folder holding the `tls/` files they name."""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .helpers import GRPCURL, RunningServer, running_server
from .security_helpers import TestPki

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "s3cr3t-demo-token"


def security_grpcurl_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Security\n", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith(".venv/bin/grpcurl ")]


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


@pytest.fixture(scope="module")
def workdir(
    artifacts: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, RunningServer]]:
    folder = tmp_path_factory.mktemp("readme-security")
    pki = TestPki(folder / "tls", "ca")
    server_cert, client_cert = pki.issue("server"), pki.issue("client", "client.example")
    (folder / "tokens.txt").write_text(f"{TOKEN}\n")
    with running_server(
        models=[f"sentiment={artifacts['bert']}"],
        tls_cert_file=server_cert.cert,
        tls_key_file=server_cert.key,
        tls_client_ca_file=pki.ca,
        auth_token_file=folder / "tokens.txt",
    ) as server:
        assert client_cert.cert == folder / "tls" / "client.pem"
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
