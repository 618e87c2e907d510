"""TLS root certificates, bearer tokens and gRPC retries, against a stand-in Inference server.

The ortserve server itself listens in plaintext (TLS and authentication belong to the mesh or proxy in front of it),
so this test serves the same generated service from a small servicer that records what arrives and can fail on
purpose. Everything else is real: certificates made by openssl, a TLS listener, and the client's own channel.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from ortserve.client import AsyncInferenceClient, InferenceClient, InferenceError, RetryPolicy
from ortserve.v1 import inference_pb2 as pb
from ortserve.v1 import inference_pb2_grpc as pb_grpc

SERVER_NAME = "ortserve.test"


class RecordingInference(pb_grpc.InferenceServicer):
    """Answers `label=<text>`; fails the first `failures` attempts of each text `flaky` with UNAVAILABLE."""

    def __init__(self, failures: int):
        self.failures = failures
        self.attempts = 0
        self.authorizations: list[str | None] = []
        self._lock = threading.Lock()

    def Classify(self, request: pb.ClassifyRequest, context: grpc.ServicerContext) -> pb.ClassifyResponse:
        with self._lock:
            self.authorizations.append(dict(context.invocation_metadata()).get("authorization"))
            if list(request.texts) == ["flaky"]:
                self.attempts += 1
                if self.attempts <= self.failures:
                    context.abort(grpc.StatusCode.UNAVAILABLE, "restarting")
        return pb.ClassifyResponse(
            model=request.model,
            model_version="1",
            results=[pb.Classification(labels=[pb.LabelScore(label=t, score=1.0)]) for t in request.texts],
        )


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    folder = tmp_path_factory.mktemp("tls")
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-subj",
            f"/CN={SERVER_NAME}",
            "-addext",
            f"subjectAltName=DNS:{SERVER_NAME}",
        ],
        check=True,
        capture_output=True,
    )
    return key, cert


@pytest.fixture
def tls_server(certificate: tuple[Path, Path]) -> Iterator[tuple[str, RecordingInference]]:
    key, cert = certificate
    servicer = RecordingInference(failures=2)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_InferenceServicer_to_server(servicer, server)
    credentials = grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())])
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    try:
        yield f"127.0.0.1:{port}", servicer
    finally:
        server.stop(0)


def test_tls_with_bearer_token_and_retried_unavailable(
    tls_server: tuple[str, RecordingInference], certificate: tuple[Path, Path]
) -> None:
    target, servicer = tls_server
    _, cert = certificate
    with InferenceClient(target, root_certificates=cert, tls_server_name=SERVER_NAME, token="s3cret") as client:
        assert [r.top.label for r in client.classify("m", ["a", "b", "c"])] == ["a", "b", "c"]
        # Two UNAVAILABLE answers, then success: gRPC retried from the service config, the caller saw nothing.
        assert client.classify("m", ["flaky"])[0].top.label == "flaky"
    assert servicer.attempts == 3
    assert set(servicer.authorizations) == {"Bearer s3cret"}


def test_retries_stop_at_max_attempts(
    tls_server: tuple[str, RecordingInference], certificate: tuple[Path, Path]
) -> None:
    target, servicer = tls_server
    _, cert = certificate
    client = InferenceClient(
        target, root_certificates=cert.read_bytes(), tls_server_name=SERVER_NAME, retry=RetryPolicy(max_attempts=2)
    )
    with client, pytest.raises(InferenceError) as failure:
        client.classify("m", ["flaky"])
    assert failure.value.code is grpc.StatusCode.UNAVAILABLE and servicer.attempts == 2


def test_async_client_over_tls_sends_the_token(
    tls_server: tuple[str, RecordingInference], certificate: tuple[Path, Path]
) -> None:
    target, servicer = tls_server
    _, cert = certificate

    async def main() -> list[str]:
        async with AsyncInferenceClient(
            target, root_certificates=str(cert), tls_server_name=SERVER_NAME, token="t0ken", chunk_size=2
        ) as client:
            return [r.top.label for r in await client.classify("m", ["a", "b", "c", "flaky"])]

    assert asyncio.run(main()) == ["a", "b", "c", "flaky"]
    assert set(servicer.authorizations) == {"Bearer t0ken"}


def test_plaintext_client_cannot_talk_to_a_tls_server(tls_server: tuple[str, RecordingInference]) -> None:
    target, _ = tls_server
    with InferenceClient(target, timeout=3, retry=None) as client, pytest.raises(InferenceError) as failure:
        client.classify("m", ["a"])
    assert failure.value.code is grpc.StatusCode.UNAVAILABLE
