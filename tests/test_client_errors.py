"""Client errors that name the fix: TLS mismatches, a missing client certificate, a URL or a portless target,
nothing listening, compat calls without ORTSERVE_TARGET; `ortserve predict` and the compat module with a client
certificate. Real servers on 127.0.0.1 (plaintext, TLS, mutual TLS) with certificates made by trustme."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from ortserve.cli.predict import main as predict_cli
from ortserve.client import AsyncInferenceClient, InferenceClient, InferenceError, compat
from ortserve.client import base as client_base
from ortserve.client.shared import close_shared_clients

from .helpers import RunningServer, free_port, running_server
from .security_helpers import Issued, TestPki

#: A fresh connection per client, so each test makes its own handshake; no retries, so failures come back at once.
QUICK = {"retry": None, "timeout": 5, "channel_options": [("grpc.use_local_subchannel_pool", 1)]}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return TestPki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def server_cert(pki: TestPki) -> Issued:
    return pki.issue("server")


@pytest.fixture(scope="module")
def client_cert(pki: TestPki) -> Issued:
    return pki.issue("client")


@pytest.fixture(scope="module")
def model(artifacts: dict[str, Path]) -> list[str]:
    return [f"bert={artifacts['bert']}"]


@pytest.fixture(scope="module")
def plaintext_server(model: list[str]) -> Iterator[RunningServer]:
    with running_server(models=model) as running:
        yield running


@pytest.fixture(scope="module")
def tls_server(model: list[str], server_cert: Issued) -> Iterator[RunningServer]:
    with running_server(models=model, tls_cert_file=server_cert.cert, tls_key_file=server_cert.key) as running:
        yield running


@pytest.fixture(scope="module")
def mtls_server(model: list[str], server_cert: Issued, pki: TestPki) -> Iterator[RunningServer]:
    with running_server(
        models=model, tls_cert_file=server_cert.cert, tls_key_file=server_cert.key, tls_client_ca_file=pki.ca
    ) as running:
        yield running


def failure(target: str, **options: object) -> InferenceError:
    with InferenceClient(target, **QUICK, **options) as client, pytest.raises(InferenceError) as raised:  # type: ignore[arg-type]
        client.classify("bert", ["fine"])
    assert raised.value.code is grpc.StatusCode.UNAVAILABLE
    return raised.value


def test_plaintext_to_a_tls_port_names_the_root_certificates(tls_server: RunningServer) -> None:
    error = failure(tls_server.target)
    assert error.hint and "speaks TLS and this client plaintext" in error.hint
    assert "--root-certificates" in str(error) and "client certificate" not in str(error)
    assert "Socket closed" in error.details  # gRPC's own words stay available


def test_plaintext_to_a_mutual_tls_port_names_both_fixes(mtls_server: RunningServer) -> None:
    error = failure(mtls_server.target)
    assert error.hint and "speaks TLS" in error.hint and "--client-certificate and --client-key" in error.hint


def test_mutual_tls_without_a_client_certificate(mtls_server: RunningServer, pki: TestPki) -> None:
    error = failure(mtls_server.target, root_certificates=pki.ca)
    assert str(error).startswith("UNAVAILABLE: the server at 127.0.0.1:")
    assert "requires a client certificate (mutual TLS)" in str(error) and "ORTSERVE_CLIENT_CERTIFICATE" in str(error)


def test_tls_to_a_plaintext_port(plaintext_server: RunningServer, pki: TestPki) -> None:
    error = failure(plaintext_server.target, root_certificates=pki.ca)
    assert error.hint and "speaks plaintext and this client TLS" in error.hint


def test_a_server_certificate_from_another_ca(tls_server: RunningServer, tmp_path: Path) -> None:
    other = TestPki(tmp_path, "other")
    error = failure(tls_server.target, root_certificates=other.ca)
    assert error.hint and "not signed by the root certificates this client trusts" in error.hint


def test_nothing_listening() -> None:
    error = failure(f"127.0.0.1:{free_port()}")
    assert error.hint and "nothing listens on 127.0.0.1:" in error.hint and "ORTSERVE_TARGET" in error.hint


def test_the_async_client_explains_too(mtls_server: RunningServer, pki: TestPki) -> None:
    async def call() -> InferenceError:
        async with AsyncInferenceClient(mtls_server.target, root_certificates=pki.ca, **QUICK) as client:  # type: ignore[arg-type]
            with pytest.raises(InferenceError) as raised:
                await client.classify("bert", ["fine"])
            return raised.value

    error = asyncio.run(call())
    assert error.hint and "requires a client certificate" in error.hint


def test_a_working_connection_gets_no_hint(mtls_server: RunningServer, pki: TestPki, client_cert: Issued) -> None:
    options = {"root_certificates": pki.ca, "client_certificate": client_cert.cert, "client_key": client_cert.key}
    with InferenceClient(mtls_server.target, **QUICK, **options) as client:  # type: ignore[arg-type]
        assert client.classify("bert", ["fine"])[0].labels
        with pytest.raises(InferenceError) as raised:
            client.classify("no-such-model", ["fine"])
    assert raised.value.code is grpc.StatusCode.NOT_FOUND and raised.value.hint is None


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("http://127.0.0.1:50051", "is a URL, but gRPC targets have no http:// scheme: give '127.0.0.1:50051'"),
        ("https://models.example.com:443/", "give 'models.example.com:443' and TLS on"),
        ("grpc://localhost:50051", "no grpc:// scheme"),
        ("localhost", "names no port: give HOST:PORT, e.g. localhost:50051"),
        ("dns:///ortserve-headless.ml.svc.cluster.local", "names no port"),
        ("ipv4:127.0.0.1:50051,127.0.0.2", "names no port"),
        ("::1", "e.g. [::1]:50051"),
    ],
)
def test_targets_gRPC_would_misread_are_refused_at_once(target: str, expected: str) -> None:
    with pytest.raises(ValueError, match="gRPC would quietly dial 443|gRPC targets have no") as raised:
        InferenceClient(target)
    assert expected in str(raised.value)


@pytest.mark.parametrize(
    "target",
    [
        "localhost:50051",
        "dns:///localhost:50051",
        "dns://127.0.0.1:53/localhost:50051",
        "ipv4:127.0.0.1:1,127.0.0.1:2",
        "127.0.0.1:1,127.0.0.1:2",
        "[::1]:50051",
        "ipv6:[::1]:50051",
        "unix:/tmp/ortserve.sock",
    ],
)
def test_targets_gRPC_reads_are_accepted(target: str) -> None:
    InferenceClient(target).close()


# --- `ortserve predict` and the compat module with client certificates


def test_predict_takes_a_client_certificate(
    mtls_server: RunningServer, pki: TestPki, client_cert: Issued, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["--model", "bert", "--target", mtls_server.target, "--root-certificates", str(pki.ca), "fine"]
    assert (
        predict_cli([*common, "--client-certificate", str(client_cert.cert), "--client-key", str(client_cert.key)]) == 0
    )
    assert '"model": "bert"' in capsys.readouterr().out
    assert predict_cli(common) == 1
    assert "requires a client certificate (mutual TLS): pass --client-certificate" in capsys.readouterr().err


def test_predict_takes_the_client_certificate_from_the_environment(
    mtls_server: RunningServer, pki: TestPki, client_cert: Issued, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORTSERVE_ROOT_CERTIFICATES", str(pki.ca))
    monkeypatch.setenv("ORTSERVE_CLIENT_CERTIFICATE", str(client_cert.cert))
    monkeypatch.setenv("ORTSERVE_CLIENT_KEY", str(client_cert.key))
    ortserve = str(Path(sys.executable).parent / "ortserve")
    run = subprocess.run(
        [ortserve, "predict", "--model", "bert", "--target", mtls_server.target, "fine"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert '"model": "bert"' in run.stdout


def test_predict_with_a_url_target_says_how_to_write_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert predict_cli(["--model", "bert", "--target", "http://127.0.0.1:50051", "fine"]) == 1
    err = capsys.readouterr().err
    assert "give '127.0.0.1:50051'" in err and "Traceback" not in err


@pytest.fixture
def compat_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for name in ("ORTSERVE_TARGET", "ORTSERVE_TOKEN", "ORTSERVE_ROOT_CERTIFICATES", "ORTSERVE_CLIENT_CERTIFICATE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("ORTSERVE_CLIENT_KEY", raising=False)
    monkeypatch.setenv("ORTSERVE_SENTIMENT_MODEL", "bert")
    yield monkeypatch
    close_shared_clients()


def test_compat_with_a_client_certificate_from_the_environment(
    compat_env: pytest.MonkeyPatch, mtls_server: RunningServer, pki: TestPki, client_cert: Issued
) -> None:
    compat_env.setenv("ORTSERVE_TARGET", mtls_server.target)
    compat_env.setenv("ORTSERVE_ROOT_CERTIFICATES", str(pki.ca))
    compat_env.setenv("ORTSERVE_CLIENT_CERTIFICATE", str(client_cert.cert))
    compat_env.setenv("ORTSERVE_CLIENT_KEY", str(client_cert.key))
    assert compat.predict_sentiment("fine")
    compat_env.delenv("ORTSERVE_CLIENT_KEY")
    with pytest.raises(ValueError, match="client_certificate and client_key go together.*ORTSERVE_CLIENT_KEY"):
        compat.predict_sentiment("fine")


def test_compat_without_ortserve_target_says_so(compat_env: pytest.MonkeyPatch) -> None:
    # The default target, moved to a port where nothing listens (a real localhost:50051 may be busy on this machine).
    unused = f"127.0.0.1:{free_port()}"
    compat_env.setattr(client_base, "DEFAULT_TARGET", unused)
    compat_env.setattr(compat, "DEFAULT_TARGET", unused)
    with pytest.raises(InferenceError) as raised:
        compat.predict_sentiment("fine")
    message = str(raised.value)
    assert message.startswith(f"UNAVAILABLE: ORTSERVE_TARGET is not set, so {unused} was called: set it to")
    assert "nothing listens on" in message


# --- the container healthcheck (deploy/kubernetes/components/tls-auth's exec probes) under mutual TLS


def test_healthcheck_probe_speaks_mutual_tls(mtls_server: RunningServer, pki: TestPki, client_cert: Issued) -> None:
    probe = [
        sys.executable,
        "-m",
        "ortserve.server.healthcheck",
        "--target",
        mtls_server.target,
        "--ca-file",
        str(pki.ca),
    ]
    with_cert = [*probe, "--cert-file", str(client_cert.cert), "--key-file", str(client_cert.key)]
    run = subprocess.run([*with_cert, "--server-name", "localhost"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and "SERVING" in run.stdout, run.stderr
    refused = subprocess.run(probe, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
