"""TLS and mutual TLS on the real server, with the project's client, grpcurl and the Node client; certificates
made in the test (trustme) and rotated while the server runs."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ortserve.client import InferenceClient, InferenceError

from .helpers import GRPCURL, RunningServer, running_server
from .security_helpers import Issued, TestPki
from .test_node_client import node_classify, node_client  # noqa: F401 - the fixture, shared

#: A fresh subchannel per client, so every client below makes its own TLS handshake.
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return TestPki(tmp_path_factory.mktemp("pki"))


def classify(target: str, ca: Path, client: Issued | None = None) -> str:
    """The top label of one text, or the status name of the failure."""
    extra = {"client_certificate": client.cert, "client_key": client.key} if client else {}
    try:
        with InferenceClient(
            target, root_certificates=ca, retry=None, timeout=5, channel_options=OWN_CONNECTION, **extra
        ) as inference:
            return inference.classify("bert", ["what a lovely day"])[0].top.label
    except InferenceError as exc:
        return exc.code.name


def plaintext_classify(target: str) -> str:
    try:
        with InferenceClient(target, retry=None, timeout=2, channel_options=OWN_CONNECTION) as inference:
            return inference.classify("bert", ["what a lovely day"])[0].top.label
    except InferenceError as exc:
        return exc.code.name


def grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
    if not GRPCURL.exists():
        pytest.skip("grpcurl is installed by `make test` into .venv")
    return subprocess.run([str(GRPCURL), *args], capture_output=True, text=True, timeout=30)


CLASSIFY_ARGS = ("-d", '{"model": "bert", "texts": ["fine"]}')


def test_tls_serves_the_client_and_grpcurl_and_refuses_plaintext(artifacts: dict[str, Path], pki: TestPki) -> None:
    server_cert = pki.issue("tls-server")
    with running_server(
        models=[f"bert={artifacts['bert']}"], tls_cert_file=server_cert.cert, tls_key_file=server_cert.key
    ) as server:
        assert classify(server.target, pki.ca) not in {"UNAVAILABLE", "UNAUTHENTICATED"}
        assert plaintext_classify(server.target) == "UNAVAILABLE"
        ok = grpcurl("-cacert", str(pki.ca), *CLASSIFY_ARGS, server.target, "ortserve.v1.Inference/Classify")
        plain = grpcurl("-plaintext", "-max-time", "3", *CLASSIFY_ARGS, server.target, "ortserve.v1.Inference/Classify")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["model"] == "bert"
    assert plain.returncode != 0


@pytest.fixture(scope="module")
def mtls_server(artifacts: dict[str, Path], pki: TestPki) -> Iterator[RunningServer]:
    server_cert = pki.issue("mtls-server")
    with running_server(
        models=[f"bert={artifacts['bert']}"],
        tls_cert_file=server_cert.cert,
        tls_key_file=server_cert.key,
        tls_client_ca_file=pki.ca,
    ) as server:
        yield server


def test_mutual_tls_requires_a_client_certificate_of_the_ca(
    mtls_server: RunningServer, pki: TestPki, tmp_path: Path
) -> None:
    client = pki.issue("client", "client.ortserve.test")
    rogue = TestPki(tmp_path / "rogue", "rogue").issue("rogue-client", "client.ortserve.test")
    assert classify(mtls_server.target, pki.ca, client) not in {"UNAVAILABLE", "UNAUTHENTICATED"}
    assert classify(mtls_server.target, pki.ca) == "UNAVAILABLE"  # no client certificate: handshake refused
    assert classify(mtls_server.target, pki.ca, rogue) == "UNAVAILABLE"  # signed by another CA
    ok = grpcurl(
        "-cacert",
        str(pki.ca),
        "-cert",
        str(client.cert),
        "-key",
        str(client.key),
        *CLASSIFY_ARGS,
        mtls_server.target,
        "ortserve.v1.Inference/Classify",
    )
    refused = grpcurl("-cacert", str(pki.ca), *CLASSIFY_ARGS, mtls_server.target, "ortserve.v1.Inference/Classify")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["results"]
    assert refused.returncode != 0


def test_node_client_over_mutual_tls(node_client: Path, mtls_server: RunningServer, pki: TestPki) -> None:  # noqa: F811
    client = pki.issue("node-client", "node.ortserve.test")
    env = {
        "ORTSERVE_ROOT_CERTIFICATES": str(pki.ca),
        "ORTSERVE_CLIENT_CERTIFICATE": str(client.cert),
        "ORTSERVE_CLIENT_KEY": str(client.key),
    }
    ok = _node(node_client, mtls_server.target, env)
    without_cert = _node(node_client, mtls_server.target, {"ORTSERVE_ROOT_CERTIFICATES": str(pki.ca)})
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["model"] == "bert"
    assert without_cert.returncode == 1
    assert json.loads(without_cert.stderr.strip().splitlines()[-1])["code"] == "UNAVAILABLE"


def _node(script: Path, target: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["node", str(script), target, "bert", "1", "a fine text"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
    )


def test_certificates_are_reloaded_when_the_files_change(artifacts: dict[str, Path], tmp_path: Path) -> None:
    old_ca, new_ca = TestPki(tmp_path / "old", "old"), TestPki(tmp_path / "new", "new")
    old, new = old_ca.issue("server"), new_ca.issue("server")
    live = Issued(tmp_path / "live.pem", tmp_path / "live.key")
    shutil.copy(old.cert, live.cert)
    shutil.copy(old.key, live.key)
    with running_server(models=[f"bert={artifacts['bert']}"], tls_cert_file=live.cert, tls_key_file=live.key) as server:
        before = (classify(server.target, old_ca.ca), classify(server.target, new_ca.ca))
        # Half a renewal: the new certificate beside the old key. It is not used; the old pair keeps serving.
        _replace(new.cert, live.cert)
        half = classify(server.target, old_ca.ca)
        _replace(new.key, live.key)
        after = (classify(server.target, old_ca.ca), classify(server.target, new_ca.ca))
    assert before[0] not in {"UNAVAILABLE"} and before[1] == "UNAVAILABLE"
    assert half == before[0]
    assert after[0] == "UNAVAILABLE" and after[1] == before[0]


def _replace(source: Path, target: Path) -> None:
    """Replace `target` atomically, as renewal tools (cert-manager, certbot) do."""
    staged = target.with_suffix(target.suffix + ".new")
    shutil.copy(source, staged)
    os.replace(staged, target)


def test_tls_settings_must_come_in_pairs(pki: TestPki) -> None:
    from pydantic import ValidationError

    from ortserve.server.settings import ServerSettings

    with pytest.raises(ValidationError, match="go together"):
        ServerSettings(tls_cert_file=pki.ca)
    with pytest.raises(ValidationError, match="needs tls_cert_file"):
        ServerSettings(tls_client_ca_file=pki.ca)


def test_unusable_tls_files_stop_the_start_with_one_line(pki: TestPki, tmp_path: Path) -> None:
    from ortserve.server.app import OrtServer
    from ortserve.server.errors import ServerStartError
    from ortserve.server.settings import ServerSettings

    async def create(settings: ServerSettings) -> OrtServer:
        return OrtServer(settings)  # grpc.aio.server() wants a running loop

    mismatched = pki.issue("mismatch")
    other = pki.issue("other")
    with pytest.raises(ServerStartError, match="TLS files cannot be used"):
        asyncio.run(create(ServerSettings(tls_cert_file=mismatched.cert, tls_key_file=other.key)))
    with pytest.raises(ServerStartError, match="No such file"):
        asyncio.run(create(ServerSettings(tls_cert_file=tmp_path / "missing.pem", tls_key_file=other.key)))
