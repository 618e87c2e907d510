"""Property-based fuzzing of the real server: every request field, request ids, and raw bytes on every method.

Whatever arrives, the answer is a fitting status (never UNKNOWN or INTERNAL) whose message holds no path, host,
traceback or exception class name. What the caller sent itself (a model name, a request id) may come back; it is
taken out of the message before the check.

The default run is small enough for `make test`. A long run, with a status histogram written as JSON:

    ORTSERVE_FUZZ_EXAMPLES=1300 ORTSERVE_FUZZ_REPORT=fuzz.json .venv/bin/python -m pytest tests/test_fuzz.py -q
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ortserve.v1 import inference_pb2 as pb

from .helpers import RunningServer, running_server

#: Examples per test below (five tests, so the requests sent are about five times this).
EXAMPLES = int(os.environ.get("ORTSERVE_FUZZ_EXAMPLES", "250"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,  # no .hypothesis folder in the tree; failures print their example
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

METHODS = {
    "/ortserve.v1.Inference/Classify": pb.ClassifyRequest,
    "/ortserve.v1.Inference/GetModel": pb.GetModelRequest,
    "/ortserve.v1.Inference/ListModels": pb.ListModelsRequest,
    "/grpc.health.v1.Health/Check": health_pb2.HealthCheckRequest,
}
REQUEST_ID_KEY = "x-request-id"
FORBIDDEN_CODES = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}
LEAKS = {
    "path": re.compile(r"(?:^|[\s'\"(\[=,:])~?/[^\s/]"),
    "url": re.compile(r"\w://"),
    "host": re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}\b|\blocalhost\b|\b[\w-]+(?:\.[\w-]+)+:\d+"),
    "traceback": re.compile(r"Traceback|File \"|line \d+, in "),
    "exception class": re.compile(r"<class |\b\w*(?:Error|Exception)\b"),
}

STATUSES: Counter[str] = Counter()
LEAKING: list[str] = []


@pytest.fixture(scope="module")
def fuzz_server(artifacts: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One serving model and one that failed to load (its error names a path inside the server)."""
    broken = tmp_path_factory.mktemp("fuzz") / "broken"
    shutil.copytree(artifacts["bert"], broken)
    (broken / "model.onnx").write_bytes(b"\x08\x07 not a graph")
    with running_server(
        models=[f"bert={artifacts['bert']}", f"broken={broken}"], max_texts_per_request=8, max_text_chars=200
    ) as server:
        yield server
    report = os.environ.get("ORTSERVE_FUZZ_REPORT")
    if report:
        Path(report).write_text(
            json.dumps(
                {
                    "requests": sum(STATUSES.values()),
                    "statuses": dict(STATUSES.most_common()),
                    "leaking_messages": len(LEAKING),
                    "examples_of_leaks": LEAKING[:10],
                },
                indent=2,
            )
        )


@pytest.fixture(scope="module")
def channel(fuzz_server: RunningServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(fuzz_server.target) as channel:
        yield channel


def check(channel: grpc.Channel, method: str, payload: bytes, echoed: list[str], request_id: str | None) -> None:
    """Send raw bytes to `method`; assert a fitting status and a message without leaks; count the status."""
    metadata = [(REQUEST_ID_KEY, request_id)] if request_id is not None else []
    call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
    try:
        answer = call(payload, metadata=metadata, timeout=10)
    except grpc.RpcError as exc:
        code, message = exc.code(), exc.details() or ""
    else:
        code, message = grpc.StatusCode.OK, _errors_in_answer(method, answer)
    STATUSES[code.name] += 1
    assert code not in FORBIDDEN_CODES, (method, payload, code, message)
    from ortserve.server.errors import caller_message

    own = message
    for value in [*echoed, *([request_id] if request_id else [])]:
        for form in (repr(value), caller_message(repr(value)), value):
            if form:
                own = own.replace(form, "")
    leaks = [name for name, pattern in LEAKS.items() if pattern.search(own)]
    if leaks:
        LEAKING.append(f"{method} {code.name}: {message!r} ({', '.join(leaks)})")
    assert not leaks, (method, code, message, leaks)


def _errors_in_answer(method: str, answer: bytes) -> str:
    """The error texts a successful answer carries: a model's `last_error` and `note` (GetModel, ListModels)."""
    if method.endswith("/GetModel"):
        models = [pb.ModelInfo.FromString(answer)]
    elif method.endswith("/ListModels"):
        models = list(pb.ListModelsResponse.FromString(answer).models)
    else:
        return ""
    return " ".join(f"{m.last_error} {m.note}" for m in models)


model_names = st.one_of(
    st.just("broken"),
    st.sampled_from(["bert", "broken", "", "BERT", "bert ", "../bert", "/etc/passwd", "localhost:50051"]),
    st.text(max_size=40),
    st.text(min_size=120, max_size=400),
)
texts = st.lists(
    st.one_of(
        st.text(max_size=60),
        st.text(min_size=150, max_size=260),
        st.sampled_from(["\u200b", " ", "\ufeff\u200d", "ok"]),
    ),
    max_size=10,
)
request_ids = st.one_of(
    st.none(),
    st.from_regex(r"[A-Za-z0-9_-]{1,70}", fullmatch=True),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80),
)


@FUZZ
@given(model=model_names, texts=texts, top_k=st.integers(0, 2**32 - 1), request_id=request_ids)
def test_classify_fields(
    channel: grpc.Channel, model: str, texts: list[str], top_k: int, request_id: str | None
) -> None:
    request = pb.ClassifyRequest(model=model, texts=texts, top_k=top_k)
    check(channel, "/ortserve.v1.Inference/Classify", request.SerializeToString(), [model], request_id)


@FUZZ
@given(name=model_names, request_id=request_ids)
def test_get_model_and_health_fields(channel: grpc.Channel, name: str, request_id: str | None) -> None:
    check(
        channel,
        "/ortserve.v1.Inference/GetModel",
        pb.GetModelRequest(name=name).SerializeToString(),
        [name],
        request_id,
    )
    check(
        channel,
        "/grpc.health.v1.Health/Check",
        health_pb2.HealthCheckRequest(service=name).SerializeToString(),
        [name],
        request_id,
    )


@FUZZ
@given(method=st.sampled_from(sorted(METHODS)), payload=st.binary(max_size=300))
def test_raw_bytes(channel: grpc.Channel, method: str, payload: bytes) -> None:
    check(channel, method, payload, [], None)


def _string_field(field: int, raw: bytes) -> bytes:
    return bytes([field << 3 | 2, len(raw)]) + raw


@FUZZ
@given(
    method=st.sampled_from(sorted(METHODS)),
    field=st.integers(1, 3),
    raw=st.binary(max_size=100),
    prefix=st.sampled_from([b"", b"\x0a\x04bert"]),
)
def test_string_fields_that_are_not_utf8(
    channel: grpc.Channel, method: str, field: int, raw: bytes, prefix: bytes
) -> None:
    """Well-formed protobuf framing around bytes that are often not UTF-8 (or a field of the wrong type)."""
    payload = prefix + _string_field(field, raw)
    echoed: list[str] = []
    try:  # when it does decode, what the server may echo is the decoded model/name
        decoded: Any = METHODS[method].FromString(payload)
        echoed = [str(getattr(decoded, f, "")) for f in ("model", "name", "service")]
    except Exception:
        pass
    check(channel, method, payload, echoed, None)


@FUZZ
@given(payload=st.binary(min_size=1, max_size=64), repeat=st.integers(1, 40))
def test_repeated_garbage_on_classify(channel: grpc.Channel, payload: bytes, repeat: int) -> None:
    check(channel, "/ortserve.v1.Inference/Classify", payload * repeat, [], None)
