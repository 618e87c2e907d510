"""What gRPC guarantees, the HTTP port guarantees too, from the same settings: TLS and mutual TLS, bearer tokens with
per-model scopes (health open unless auth_health), x-request-id in and out, a body-size limit (413), the deadline
header mapped to the batcher's deadline (504), 429 with Retry-After when admission refuses, the SIGTERM drain
(ready routes 503, calls in flight finish), metrics by protocol and route, JSON logs and trace spans."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from ortserve.server.batcher import BatchLimits
from ortserve.server.observability.logs import configure_logging
from ortserve.server.stage_timings import MeasuredRun

from .helpers import RunningServer, running_server
from .observability_helpers import scrape
from .security_helpers import TestPki
from .test_batcher import WAIT_S, GatedRun
from .test_tracing import exporter  # noqa: F401  (the process's tracer provider with an in-memory exporter)

INFER_BODY = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["the market rallied"]}]}


def base_url(server: RunningServer, scheme: str = "http") -> str:
    assert server.server is not None
    return f"{scheme}://127.0.0.1:{server.server.http_port}"


@pytest.fixture(scope="module")
def plain(artifacts: dict[str, Path]) -> Iterator[RunningServer]:
    with running_server(models=[f"bert={artifacts['bert']}"], http_port=0, http_max_body_bytes=2048) as running:
        yield running


# --- TLS -----------------------------------------------------------------------------------------------------------


def test_https_and_mutual_tls_use_the_grpc_tls_files_and_follow_renewals(
    artifacts: dict[str, Path], tmp_path: Path
) -> None:
    pki = TestPki(tmp_path)
    server_cert, client_cert = pki.issue("server"), pki.issue("client")
    settings = {"models": [f"bert={artifacts['bert']}"], "http_port": 0}
    with running_server(**settings, tls_cert_file=server_cert.cert, tls_key_file=server_cert.key) as server:
        with httpx.Client(base_url=base_url(server, "https"), verify=str(pki.ca)) as client:
            assert client.post("/v2/models/bert/infer", json=INFER_BODY).status_code == 200
        with pytest.raises(httpx.HTTPError):  # plaintext to a TLS port
            httpx.get(f"{base_url(server)}/v2/health/live", timeout=5)
        # A renewed certificate (here from another CA) is used by the next connection, with no restart.
        renewed_pki = TestPki(tmp_path / "renewed", "ca2")
        renewed = renewed_pki.issue("server")
        server_cert.key.write_bytes(renewed.key.read_bytes())
        server_cert.cert.write_bytes(renewed.cert.read_bytes())
        with httpx.Client(base_url=base_url(server, "https"), verify=str(renewed_pki.ca)) as client:
            assert client.get("/v2/health/live").status_code == 200
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"{base_url(server, 'https')}/v2/health/live", verify=str(pki.ca), timeout=5)
        server_cert = pki.issue("server")  # the original for the mutual TLS server below
    mutual = {"tls_cert_file": server_cert.cert, "tls_key_file": server_cert.key, "tls_client_ca_file": pki.ca}
    with running_server(**settings, **mutual) as server:
        context = ssl.create_default_context(cafile=str(pki.ca))
        with pytest.raises(httpx.HTTPError), httpx.Client(base_url=base_url(server, "https"), verify=context) as client:
            client.get("/v2/health/live")  # no client certificate
        context.load_cert_chain(str(client_cert.cert), str(client_cert.key))
        with httpx.Client(base_url=base_url(server, "https"), verify=context) as client:
            assert client.post("/invocations", json={"inputs": ["a"]}).status_code == 200


# --- tokens --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("auth_health", [False, True])
def test_bearer_tokens_and_model_scopes(artifacts: dict[str, Path], tmp_path: Path, auth_health: bool) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("every-model\nonly-roberta models=roberta\n")
    models = [f"bert={artifacts['bert']}", f"roberta={artifacts['roberta']}"]
    with (
        running_server(
            models=models, http_port=0, auth_token_file=tokens, auth_health=auth_health, http_default_model="bert"
        ) as server,
        httpx.Client(base_url=base_url(server)) as client,
    ):

        def post(path: str, body: object, token: str | None) -> httpx.Response:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            return client.post(path, json=body, headers=headers)

        for path, body in [
            ("/v2/models/bert/infer", INFER_BODY),
            ("/invocations", {"inputs": ["a"]}),
            ("/models/bert/invocations", {"inputs": ["a"]}),
            ("/ortserve.v1.Inference/Classify", {"model": "bert", "texts": ["a"]}),
            ("/ortserve.v1.Inference/GetModel", {"name": "bert"}),
        ]:
            assert post(path, body, None).status_code == 401, path
            assert post(path, body, "wrong").status_code == 401, path
            assert post(path, body, "every-model").status_code == 200, path
            refused = post(path, body, "only-roberta")
            assert refused.status_code == 403, path
            assert "bert" not in refused.text  # the name is the caller's own; never echoed in a refusal
        assert post("/v2/models/roberta/infer", INFER_BODY, "only-roberta").status_code == 200
        for path in ("/v2/health/live", "/v2/health/ready", "/ping"):
            assert client.get(path).status_code == (401 if auth_health else 200), path
        # A model's own health needs a token either way: open, it would tell anyone which models are served.
        for path in ("/models/bert/health", "/models/bert/ping", "/v2/models/bert/ready", "/v2/models/nope/ready"):
            assert client.get(path).status_code == 401, path
            assert client.get(path, headers={"Authorization": "Bearer only-roberta"}).status_code == 403, path
        assert client.get("/v2/models/bert/ready", headers={"Authorization": "Bearer every-model"}).status_code == 200
        assert client.get("/v2/models/bert").status_code == 401  # metadata is not health


# --- request id, body size, bad shapes -----------------------------------------------------------------------------


def test_request_id_in_and_out(plain: RunningServer) -> None:
    with httpx.Client(base_url=base_url(plain)) as client:
        chosen = client.post("/v2/models/bert/infer", json=INFER_BODY, headers={"x-request-id": "my-call-1"})
        assert chosen.headers["x-request-id"] == "my-call-1"
        for header in ({"x-request-id": "not sane!"}, {}):
            made = client.post("/v2/models/nope/infer", json=INFER_BODY, headers=header)
            assert made.status_code == 404 and re.fullmatch(r"[0-9a-f]{32}", made.headers["x-request-id"])


@pytest.mark.parametrize(
    "path, error_key",
    [("/v2/models/bert/infer", "error"), ("/invocations", "error_code"), ("/ortserve.v1.Inference/Classify", "code")],
)
def test_bodies_over_the_limit_are_413_in_each_protocols_shape(plain: RunningServer, path: str, error_key: str) -> None:
    big = json.dumps({"inputs": ["x" * 4000]}).encode()
    with httpx.Client(base_url=base_url(plain)) as client:
        response = client.post(path, content=big, headers={"Content-Type": "application/json"})
        assert response.status_code == 413 and error_key in response.json()

        def chunks() -> Iterator[bytes]:  # no content-length: counted as it arrives
            yield big[:1500]
            yield big[1500:]

        streamed = client.post(path, content=chunks(), headers={"Content-Type": "application/json"})
        assert streamed.status_code == 413


@pytest.mark.parametrize("value", ["soon", "-5", "0", "nan", "1e12"])
def test_a_bad_deadline_header_is_400(plain: RunningServer, value: str) -> None:
    response = httpx.post(f"{base_url(plain)}/v2/models/bert/infer", json=INFER_BODY, headers={"x-timeout-ms": value})
    assert response.status_code == 400 and "x-timeout-ms" in response.json()["error"]


# --- admission and deadline ----------------------------------------------------------------------------------------


def test_admission_refusals_are_429_with_retry_after_and_hopeless_deadlines_504(artifacts: dict[str, Path]) -> None:
    """The same admission as gRPC's (tests/test_load_batching.py), seen over HTTP."""
    with running_server(models=[f"bert={artifacts['bert']}"], http_port=0) as server:
        assert server.server is not None
        batcher = server.server.table.get("bert").batcher
        gate = GatedRun(wrapped=batcher._run_batch)
        batcher._run_batch = gate  # type: ignore[assignment]
        batcher.limits = BatchLimits(max_calls_in_flight=3)
        # As if the warm-up had measured one second per token: a short deadline is hopeless.
        batcher.run_cost.calibrate([MeasuredRun(1, 1, 1.0), MeasuredRun(1, 100, 100.0), MeasuredRun(4, 10, 40.0)])
        gate.hold()
        submitted = [asyncio.run_coroutine_threadsafe(batcher.submit(["the market rallied"]), server.loop)]
        gate.wait_started()
        submitted.append(asyncio.run_coroutine_threadsafe(batcher.submit(["stocks fell"]), server.loop))
        end = time.monotonic() + WAIT_S
        while batcher.queued_texts < 1:
            assert time.monotonic() < end
            time.sleep(0.005)
        with httpx.Client(base_url=base_url(server), timeout=WAIT_S) as client:
            deadline = {"x-timeout-ms": "2000"}
            hopeless = client.post("/v2/models/bert/infer", json=INFER_BODY, headers=deadline)
            assert hopeless.status_code == 504, hopeless.text
            hopeless = client.post("/invocations", json={"inputs": ["short"]}, headers=deadline)
            assert hopeless.status_code == 504 and hopeless.json()["error_code"] == "DEADLINE_EXCEEDED"
            submitted.append(asyncio.run_coroutine_threadsafe(batcher.submit(["rates rose"]), server.loop))
            while batcher.calls_in_flight < 3:
                assert time.monotonic() < end
                time.sleep(0.005)
            for path, body in [("/v2/models/bert/infer", INFER_BODY), ("/invocations", {"inputs": ["a"]})]:
                refused = client.post(path, json=body)
                assert refused.status_code == 429, refused.text
                assert refused.headers["retry-after"] == "1"
            gate.release()
            for call in submitted:
                call.result(WAIT_S)
            assert client.post("/v2/models/bert/infer", json=INFER_BODY).status_code == 200


# --- drain ---------------------------------------------------------------------------------------------------------


def test_sigterm_drain_turns_ready_routes_503_and_lets_calls_in_flight_finish(artifacts: dict[str, Path]) -> None:
    with running_server(models=[f"bert={artifacts['bert']}"], http_port=0) as server:
        assert server.server is not None
        url = base_url(server)
        batcher = server.server.table.get("bert").batcher
        gate = GatedRun(wrapped=batcher._run_batch)
        batcher._run_batch = gate  # type: ignore[assignment]
        gate.hold()
        answers: list[httpx.Response] = []
        in_flight = threading.Thread(
            target=lambda: answers.append(httpx.post(f"{url}/v2/models/bert/infer", json=INFER_BODY, timeout=WAIT_S))
        )
        in_flight.start()
        gate.wait_started()
        stopping = asyncio.run_coroutine_threadsafe(server.server.stop(grace=WAIT_S, drain=1.0), server.loop)
        time.sleep(0.2)
        with httpx.Client(base_url=url) as client:  # draining: still answering, but not ready
            assert client.get("/v2/health/ready").status_code == 503
            assert client.get("/ping").status_code == 503
            assert client.get("/v2/models/bert/ready").status_code == 503
            assert client.get("/v2/health/live").status_code == 200
        time.sleep(1.0)  # the drain is over: new connections are refused, the call in flight is still held
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{url}/v2/health/live", timeout=2)
        gate.release()
        in_flight.join(WAIT_S)
        stopping.result(WAIT_S)
        assert answers and answers[0].status_code == 200
        server.server = None  # stopped already


# --- observability -------------------------------------------------------------------------------------------------


def test_metrics_by_protocol_and_route_json_logs_and_spans_from_traceparent(
    artifacts: dict[str, Path],
    exporter: InMemorySpanExporter,  # noqa: F811  (the fixture imported from test_tracing)
) -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    configure_logging("INFO", "json", stream)
    try:
        with running_server(
            models=[f"bert={artifacts['bert']}"], http_port=0, metrics_port=0, tracing=True, log_format="json"
        ) as server:
            assert server.server is not None and server.server.metrics_endpoint is not None
            trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
            with httpx.Client(base_url=base_url(server)) as client:
                traced = {"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01", "x-request-id": "traced-1"}
                assert client.post("/v2/models/bert/infer", json=INFER_BODY, headers=traced).status_code == 200
                assert (
                    client.post("/ortserve.v1.Inference/Classify", json={"model": "bert", "texts": []}).status_code
                    == 400
                )
                assert client.post("/invocations", json={"inputs": ["a"]}, headers={"x-request-id": "logged-1"})
                assert client.post(
                    "/invocations",
                    content=b"{",
                    headers={"x-request-id": "failed-1", "content-type": "application/json"},
                ).status_code
                assert client.get("/nowhere").status_code == 404
            samples = {
                (sample.name, frozenset(sample.labels.items())): sample.value
                for family in text_string_to_metric_families(scrape(server.server.metrics_endpoint.port))
                for sample in family.samples
            }

            def count(**labels: str) -> float:
                return samples.get(("ortserve_requests_total", frozenset(labels.items())), 0.0)

            http = {"protocol": "http"}
            assert count(model="bert", rpc="POST /v2/models/{name}/infer", code="OK", **http) == 1
            assert count(model="bert", rpc="POST /ortserve.v1.Inference/Classify", code="INVALID_ARGUMENT", **http) == 1
            assert count(model="bert", rpc="POST /invocations", code="OK", **http) == 1
            assert count(model="_none", rpc="_unrouted", code="NOT_FOUND", **http) == 1
            spans = [span for span in exporter.get_finished_spans() if span.context.trace_id == int(trace_id, 16)]
            server_span = next(span for span in spans if span.name == "POST /v2/models/{name}/infer")
            assert server_span.parent is not None and server_span.parent.span_id == int("00f067aa0ba902b7", 16)
            assert server_span.attributes["ortserve.request_id"] == "traced-1"
            assert server_span.attributes["http.response.status_code"] == 200
            assert {"queue wait", "tokenization", "inference"} <= {span.name for span in spans}
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    failed = [line for line in lines if line.get("request_id") == "failed-1"]
    assert failed and all(line["model"] == "bert" for line in failed)
    assert any("400" in line["message"] for line in failed)
