"""Issue 25, item 1: a V2 ModelInfer request cannot make the server build an answer out of proportion to it, on
either door: an output named twice (or unknown) is INVALID_ARGUMENT, the answer's size is computed from the request
before the model runs and refused over `MAX_ANSWER_BYTES`, and a request `id` over `MAX_REQUEST_ID_CHARS` is refused
without being echoed."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from ortserve.server import open_inference
from ortserve.server.healthcheck import wait_until_serving
from ortserve.server.interceptors.error_status import ErrorStatusInterceptor
from ortserve.server.interceptors.repeat_offenders import (
    FIRST_DELAY_S,
    MAX_DELAY_S,
    MAX_PEERS,
    REPEAT_WINDOW_S,
    RepeatOffenders,
)
from ortserve.server.open_inference import MAX_REQUEST_ID_CHARS, OUTPUTS, answer_bytes
from ortserve.server.transport_v2 import REQUEST_SCREENS
from ortserve.v2 import grpc_predict_v2_pb2 as v2
from ortserve.v2 import grpc_predict_v2_pb2_grpc as v2_grpc

from .helpers import RunningServer, free_port, running_server, serve_command

TEXTS = ["the market rallied today", "Terrible service, the food was cold.", "x", " "]


@pytest.fixture(scope="module")
def both_doors(artifacts: dict[str, Path]) -> Iterator[RunningServer]:
    with running_server(models=[f"roberta={artifacts['roberta']}"], http_port=0, max_text_chars=500) as running:
        yield running


@pytest.fixture(scope="module")
def infer(both_doors: RunningServer) -> Iterator[grpc.UnaryUnaryMultiCallable]:
    with grpc.insecure_channel(both_doors.target) as channel:
        yield v2_grpc.GRPCInferenceServiceStub(channel).ModelInfer


@pytest.fixture(scope="module")
def http(both_doors: RunningServer) -> Iterator[httpx.Client]:
    assert both_doors.server is not None
    with httpx.Client(base_url=f"http://127.0.0.1:{both_doors.server.http_port}", timeout=30) as client:
        yield client


def grpc_request(texts: list[str], outputs: list[str], request_id: str = "") -> v2.ModelInferRequest:
    request = v2.ModelInferRequest(model_name="roberta", id=request_id)
    tensor = request.inputs.add(name="text", datatype="BYTES", shape=[len(texts)])
    tensor.contents.bytes_contents.extend(t.encode() for t in texts)
    for name in outputs:
        request.outputs.add(name=name)
    return request


def http_body(texts: list[str], outputs: list[str], request_id: str = "") -> dict[str, object]:
    body: dict[str, object] = {
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": texts}],
        "outputs": [{"name": name} for name in outputs],
    }
    if request_id:
        body["id"] = request_id
    return body


def grpc_refusal(infer: grpc.UnaryUnaryMultiCallable, request: v2.ModelInferRequest) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        infer(request, timeout=30)
    return caught.value.code(), caught.value.details()


def test_an_output_named_twice_is_refused_on_both_doors(infer, http: httpx.Client) -> None:  # type: ignore[no-untyped-def]
    twice = ["top_labels", "probabilities", "probabilities"]
    code, details = grpc_refusal(infer, grpc_request(TEXTS, twice))
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert "'probabilities' is asked for more than once" in details
    response = http.post("/v2/models/roberta/infer", json=http_body(TEXTS, twice))
    assert response.status_code == 400 and "more than once" in response.json()["error"]
    # The probe: one output named 100,000 times is refused on the count, before the names are read.
    amplifying = ["probabilities"] * 100_000
    code, details = grpc_refusal(infer, grpc_request(TEXTS, amplifying))
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "asks for 100000 outputs; there are 7" in details
    response = http.post("/v2/models/roberta/infer", json=http_body(TEXTS, amplifying))
    assert response.status_code == 400 and "100000 outputs" in response.json()["error"]
    # Each output once, in any order, is still answered, once each.
    answer = infer(grpc_request(TEXTS, ["top_scores", "probabilities"]), timeout=30)
    assert [output.name for output in answer.outputs] == ["top_scores", "probabilities"]


def test_an_unknown_output_is_refused_without_echoing_it(infer, http: httpx.Client) -> None:  # type: ignore[no-untyped-def]
    long_name = "logits" + "x" * 10_000
    code, details = grpc_refusal(infer, grpc_request(TEXTS, [long_name]))
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "unknown output" in details
    assert len(details) < 400
    response = http.post("/v2/models/roberta/infer", json=http_body(TEXTS, [long_name]))
    assert response.status_code == 400 and len(response.text) < 400


def test_a_long_request_id_is_refused_and_never_echoed(infer, http: httpx.Client) -> None:  # type: ignore[no-untyped-def]
    at_limit = "i" * MAX_REQUEST_ID_CHARS
    assert infer(grpc_request(TEXTS, [], at_limit), timeout=30).id == at_limit
    assert http.post("/v2/models/roberta/infer", json=http_body(TEXTS, [], at_limit)).json()["id"] == at_limit

    over = "j" * (MAX_REQUEST_ID_CHARS + 1)
    code, details = grpc_refusal(infer, grpc_request(TEXTS, [], over))
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "request id has 257 characters" in details
    assert "jjjj" not in details
    response = http.post("/v2/models/roberta/infer", json=http_body(TEXTS, [], over))
    assert response.status_code == 400 and "jjjj" not in response.text
    not_a_string = http_body(TEXTS, [])
    not_a_string["id"] = 7
    assert http.post("/v2/models/roberta/infer", json=not_a_string).status_code == 400


@pytest.mark.parametrize("top_k", [0, 2])
def test_the_size_estimate_bounds_the_real_answer(  # type: ignore[no-untyped-def]
    both_doors: RunningServer, infer, http: httpx.Client, top_k: int
) -> None:
    """The estimate made before the model runs is never below what is sent, in protobuf or in JSON."""
    with grpc.insecure_channel(both_doors.target) as channel:
        config = v2_grpc.GRPCInferenceServiceStub(channel).ModelConfig(
            v2.ModelConfigRequest(name="roberta"), timeout=30
        )
    labels = json.loads(config.config.parameters["labels"].string_value)
    texts = TEXTS * 8  # classified texts, a truncated one and an empty one (its error is in the answer)
    texts.append("long " * 200)
    request = grpc_request(texts, [])
    request.parameters["top_k"].int64_param = top_k
    answer = infer(request, timeout=30)
    outputs_only = sum(output.ByteSize() for output in answer.outputs) + sum(
        len(raw) for raw in answer.raw_output_contents
    )
    assert answer_bytes(labels, len(texts), top_k, OUTPUTS, text_format=False) >= outputs_only
    body = http_body(texts, [])
    body["parameters"] = {"top_k": top_k}
    response = http.post("/v2/models/roberta/infer", json=body)
    assert response.status_code == 200
    sent = len(json.dumps(response.json()["outputs"]))
    assert answer_bytes(labels, len(texts), top_k, OUTPUTS, text_format=True) >= sent


def test_an_answer_over_the_limit_is_refused_before_it_is_built(  # type: ignore[no-untyped-def]
    infer, http: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(open_inference, "MAX_ANSWER_BYTES", 2048)
    texts = ["a headline"] * 64
    code, details = grpc_refusal(infer, grpc_request(texts, []))
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "over the limit of 2 KiB" in details
    response = http.post("/v2/models/roberta/infer", json=http_body(texts, []))
    assert response.status_code == 400 and "over the limit" in response.json()["error"]
    # Fewer outputs make the same texts fit.
    assert infer(grpc_request(texts, ["truncated"]), timeout=30).outputs[0].shape == [64]


def test_too_many_outputs_are_refused_from_the_bytes_before_the_request_is_parsed() -> None:
    parsed: list[int] = []

    def parse(data: bytes) -> v2.ModelInferRequest:
        parsed.append(len(data))
        return v2.ModelInferRequest.FromString(data)

    (method,) = REQUEST_SCREENS
    handler = grpc.unary_unary_rpc_method_handler(lambda request, context: None, request_deserializer=parse)
    deserialize = ErrorStatusInterceptor(screens=REQUEST_SCREENS).wrap(handler, method).request_deserializer
    refused = deserialize(grpc_request(TEXTS, ["probabilities"] * 100_000).SerializeToString())
    assert parsed == []  # 1.7 MB of outputs never parsed as a request
    assert "asks for 100000 outputs" in str(refused.error())
    wanted = deserialize(grpc_request(TEXTS, ["label", "probabilities"]).SerializeToString())
    assert len(parsed) == 1 and [output.name for output in wanted.outputs] == ["label", "probabilities"]
    # Bytes that are no request at all are left to the request's parser, which says so.
    assert "not a valid protobuf message" in str(deserialize(b"\xff\xff\xff").error())


def test_a_screened_refusal_keeps_no_hold_on_the_request_bytes() -> None:
    # The refusal is raised again by the call's behavior, where it ends up in a reference cycle that only the cyclic
    # garbage collector frees: had it kept its traceback, whose frames hold the bytes, every refused 1.7 MB request
    # would have stayed in memory until that ran (RSS +62 MB under a loop of such requests, before).
    (method,) = REQUEST_SCREENS
    handler = grpc.unary_unary_rpc_method_handler(lambda request, context: None, request_deserializer=bytes)
    deserialize = ErrorStatusInterceptor(screens=REQUEST_SCREENS).wrap(handler, method).request_deserializer
    probe = grpc_request(TEXTS, ["probabilities"] * 100_000).SerializeToString()
    references = sys.getrefcount(probe)
    refused = deserialize(probe)
    assert "asks for 100000 outputs" in str(refused.error())
    assert sys.getrefcount(probe) == references


def test_the_server_screens_model_infer_before_reading_the_request(infer) -> None:  # type: ignore[no-untyped-def]
    # Judged on the outputs' count alone: the unknown model is never read (the servicer would say NOT_FOUND).
    probe = grpc_request(TEXTS, ["probabilities"] * 100_000)
    probe.model_name = "no-such-model"
    code, details = grpc_refusal(infer, probe)
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "asks for 100000 outputs" in details


def test_repeat_offenders_wait_longer_each_time_and_are_forgotten() -> None:
    now = [100.0]
    offenders = RepeatOffenders(clock=lambda: now[0])
    delays = [offenders.delay_s("ipv4:127.0.0.1:5000") for _ in range(9)]
    assert delays[:3] == [0.0, FIRST_DELAY_S, 2 * FIRST_DELAY_S]  # the first refusal is immediate
    assert delays[-1] == MAX_DELAY_S and delays == sorted(delays)
    assert offenders.delay_s("ipv4:127.0.0.1:6000") == 0.0  # another connection is another caller
    now[0] += REPEAT_WINDOW_S
    assert offenders.delay_s("ipv4:127.0.0.1:5000") == 0.0  # quiet for a window: forgotten
    for port in range(MAX_PEERS + 10):
        offenders.delay_s(f"ipv4:10.0.0.1:{port}")
    assert len(offenders._recent) == MAX_PEERS


def test_a_probe_sent_again_on_one_connection_is_refused_later(both_doors: RunningServer) -> None:
    probe = grpc_request(TEXTS, ["probabilities"] * 100_000)
    seconds = []
    with grpc.insecure_channel(both_doors.target) as channel:
        infer = v2_grpc.GRPCInferenceServiceStub(channel).ModelInfer
        for _ in range(3):
            start = time.monotonic()
            code, _ = grpc_refusal(infer, probe)
            seconds.append(time.monotonic() - start)
            assert code is grpc.StatusCode.INVALID_ARGUMENT
    # The third was held at least its delay (a lower bound: a loaded machine only adds to it).
    assert seconds[2] >= 2 * FIRST_DELAY_S - 0.005


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024


def test_refused_probes_leave_the_server_s_memory_where_it_was(artifacts: dict[str, Path]) -> None:
    # A server in its own process (its resident memory is its own), probed from new connections each time (one
    # connection would be held back as a repeat offender). Before: every refused 1.7 MB probe stayed resident until
    # the cyclic garbage collector ran, and glibc kept the freed blocks: +40 MB after 40 probes.
    port = free_port()
    server = subprocess.Popen(
        serve_command(port, "--model", f"roberta={artifacts['roberta']}"), stderr=subprocess.DEVNULL
    )
    target = f"127.0.0.1:{port}"
    probe = grpc_request(TEXTS, ["probabilities"] * 100_000).SerializeToString()

    def refuse_once() -> None:
        with grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
            refuse = channel.unary_unary(
                "/inference.GRPCInferenceService/ModelInfer", request_serializer=None, response_deserializer=None
            )
            with pytest.raises(grpc.RpcError) as refused:
                refuse(probe, timeout=30)
            assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT

    try:
        wait_until_serving(target, server)
        with grpc.insecure_channel(target) as channel:  # the method's first call, as any V2 caller's
            v2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(grpc_request(TEXTS[:1], ["labels"]), timeout=30)
        refuse_once()
        before = _rss_mb(server.pid)
        for _ in range(40):
            refuse_once()
        growth = _rss_mb(server.pid) - before
        assert growth < 12, f"+{growth:.1f} MB"  # measured +3-5 MB now, +25 before
    finally:
        server.kill()
        server.wait()
