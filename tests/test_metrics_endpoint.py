"""The metrics endpoint holds under a scrape flood and can leave the pod (issue 25): the page is rendered at most once
per RENDER_CACHE_S, at most SCRAPE_THREADS connections are served at once (the rest wait in the backlog, costing the
process nothing), and a scrape can require TLS and basic auth."""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from ortserve.server.errors import ServerStartError
from ortserve.server.observability import metrics_endpoint

from .helpers import RunningServer, running_server
from .observability_helpers import classify, scrape
from .security_helpers import TestPki

SCRAPER = "prometheus:scr4pe'\"pw"


@pytest.fixture(scope="module")
def plain(artifacts: dict[str, Path]) -> Iterator[RunningServer]:
    with running_server(models=[f"bert={artifacts['bert']}"], metrics_port=0) as running:
        yield running


def metrics_port(server: RunningServer) -> int:
    assert server.server is not None and server.server.metrics_endpoint is not None
    return server.server.metrics_endpoint.port


def calls_counted(page: str) -> float:
    lines = [line for line in page.splitlines() if line.startswith("ortserve_requests_total{") and 'code="OK"' in line]
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines)


def test_scrapes_within_the_cache_time_share_one_render(plain: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics_endpoint, "RENDER_CACHE_S", 3600.0)
    port = metrics_port(plain)
    assert classify(plain.target, "bert", ["one"]) is grpc.StatusCode.OK
    time.sleep(0.1)
    first = scrape(port)
    assert classify(plain.target, "bert", ["two"]) is grpc.StatusCode.OK
    time.sleep(0.1)
    assert scrape(port) == first  # the same bytes: no render for this scrape
    monkeypatch.setattr(metrics_endpoint, "RENDER_CACHE_S", 0.0)
    assert calls_counted(scrape(port)) == calls_counted(first) + 1  # a render when the cache is old


def test_a_connection_flood_holds_at_most_scrape_threads(plain: RunningServer) -> None:
    port = metrics_port(plain)
    threads_before = threading.active_count()
    idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(40)]  # connect, send nothing
    try:
        time.sleep(1.0)
        grown = threading.active_count() - threads_before
        assert grown <= metrics_endpoint.SCRAPE_THREADS, grown  # not one thread per connection
    finally:
        for connection in idle:
            connection.close()
    # Once the idle connections are gone (closed, or dropped after CONNECTION_TIMEOUT_S), scrapes are served again.
    deadline = time.monotonic() + 60
    while True:
        try:
            assert "ortserve_requests_total" in scrape(port)
            break
        except (OSError, urllib.error.URLError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_a_slow_client_is_dropped_and_frees_its_slot(plain: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:
    port = metrics_port(plain)
    held = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(metrics_endpoint.SCRAPE_THREADS)]
    try:
        started = time.monotonic()
        assert "ortserve_requests_total" in scrape_with_timeout(port, 60)  # waits for the held slots to time out
        assert time.monotonic() - started >= metrics_endpoint.CONNECTION_TIMEOUT_S / 2
        for connection in held:  # the server hung up on them
            assert connection.recv(1) == b""
    finally:
        for connection in held:
            connection.close()


def scrape_with_timeout(port: int, timeout: float) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as response:
        text: str = response.read().decode()
        return text


@contextlib.contextmanager
def protected_server(
    artifacts: dict[str, Path], pki: TestPki, monkeypatch: pytest.MonkeyPatch
) -> Iterator[RunningServer]:
    """A server whose metrics need TLS (a certificate of `pki`) and basic auth with SCRAPER."""
    issued = pki.issue("server")
    monkeypatch.setenv("ORTSERVE_TEST_SCRAPER", SCRAPER)
    with running_server(
        models=[f"bert={artifacts['bert']}"],
        metrics_port=0,
        metrics_tls=True,
        metrics_auth_env="ORTSERVE_TEST_SCRAPER",
        tls_cert_file=issued.cert,
        tls_key_file=issued.key,
    ) as server:
        yield server


def test_tls_and_basic_auth_on_the_scrape(
    artifacts: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pki = TestPki(tmp_path)
    with protected_server(artifacts, pki, monkeypatch) as server:
        url = f"https://127.0.0.1:{metrics_port(server)}/metrics"
        context = ssl.create_default_context(cafile=str(pki.ca))

        def get(credentials: str | None) -> int:
            request = urllib.request.Request(url)
            if credentials is not None:
                request.add_header("Authorization", "Basic " + base64.b64encode(credentials.encode()).decode())
            try:
                with urllib.request.urlopen(request, timeout=10, context=context) as response:
                    assert b"ortserve_requests_total" in response.read()
                    return int(response.status)
            except urllib.error.HTTPError as refused:
                return refused.code

        assert get(SCRAPER) == 200
        assert get(None) == 401
        assert get("prometheus:wrong") == 401
        with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):  # plaintext to a TLS port
            scrape(metrics_port(server))


def test_metrics_tls_needs_the_servers_certificate() -> None:
    from ortserve.server.settings import ServerSettings

    with pytest.raises(ValueError, match="metrics_tls"):
        ServerSettings(metrics_port=0, metrics_tls=True)


def test_a_missing_scrape_credential_is_a_clear_start_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ORTSERVE_TEST_NO_SUCH_VAR", raising=False)
    with pytest.raises(ServerStartError, match="ORTSERVE_TEST_NO_SUCH_VAR"):
        metrics_endpoint.ScrapeSecurity.chosen(False, None, None, "ORTSERVE_TEST_NO_SUCH_VAR")
    monkeypatch.setenv("ORTSERVE_TEST_NO_SUCH_VAR", "no-colon")
    with pytest.raises(ServerStartError, match="USER:PASSWORD"):
        metrics_endpoint.ScrapeSecurity.chosen(False, None, None, "ORTSERVE_TEST_NO_SUCH_VAR")


@pytest.mark.slow
def test_a_real_prometheus_scrapes_over_tls_with_basic_auth(
    artifacts: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from .observability_helpers import prometheus_binary
    from .test_metrics_prometheus import Prometheus

    pki = TestPki(tmp_path)
    user, password = SCRAPER.split(":", 1)
    with protected_server(artifacts, pki, monkeypatch) as server:
        settings = (
            f"scheme: https, tls_config: {{ca_file: {json.dumps(str(pki.ca))}}}, "
            f"basic_auth: {{username: {json.dumps(user)}, password: {json.dumps(password)}}}"
        )
        work = tmp_path / "prometheus"
        work.mkdir()
        prometheus = Prometheus(prometheus_binary("prometheus"), work, f"127.0.0.1:{metrics_port(server)}", settings)
        try:
            prometheus.wait_ready()
            prometheus.wait_for('up{job="ortserve"}', 1)
            prometheus.wait_for('ortserve_model_state{job="ortserve",model="bert",state="serving"}', 1)
        finally:
            prometheus.stop()
