"""Hostile HTTP input against a real server: at least 5,000 requests (random bytes, malformed and deeply nested JSON,
wrong types, huge arrays, bad UTF-8, lone surrogates, wrong content types, odd headers, odd paths and methods, and
malformed HTTP on a raw socket). Every answer is below 500 and no error body holds a path, host, traceback or
exception class name; gRPC Classify keeps answering OK throughout, from another thread. The models all load and every
deadline sent is either malformed (400) or generous, so that no answer has a reason to be 503 or 504: any 5xx is a
bug. (A model that failed to load answers 503 without internals: tests/test_http_protocols.py.)

The status histogram is written as JSON when ORTSERVE_FUZZ_REPORT names a file:

    ORTSERVE_FUZZ_REPORT=http-fuzz.json .venv/bin/python -m pytest tests/test_http_fuzz.py -q
"""

from __future__ import annotations

import json
import os
import random
import re
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ortserve.server.errors import caller_message
from ortserve.v1 import inference_pb2 as pb
from ortserve.v1 import inference_pb2_grpc as pb_grpc

from .helpers import RunningServer, running_server

#: Requests of the seeded mutation run; with the hypothesis run and the raw-socket run the total is over 5,000.
MUTATED = int(os.environ.get("ORTSERVE_HTTP_FUZZ_REQUESTS", "4400"))
HYPOTHESIS_EXAMPLES = int(os.environ.get("ORTSERVE_HTTP_FUZZ_EXAMPLES", "700"))
SEED = int(os.environ.get("ORTSERVE_HTTP_FUZZ_SEED", "19"))
MIN_REQUESTS = 5000

LEAKS = {
    "path": re.compile(r"(?:^|[\s'\"(\[=,:])~?/(?:home|tmp|work|usr|etc|root|var|opt)\b"),
    "url": re.compile(r"\w://"),
    "host": re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}\b|\blocalhost\b"),
    "traceback": re.compile(r"Traceback|File \"|line \d+, in "),
    "exception class": re.compile(r"<class |\b\w+(?:Error|Exception)\b"),
    "source file": re.compile(r"\w\.py\b|site-packages"),
}
STATUSES: Counter[int] = Counter()
SENT = Counter[str]()


@pytest.fixture(scope="module")
def fuzz_server(artifacts: dict[str, Path]) -> Iterator[RunningServer]:
    with running_server(
        models=[f"bert={artifacts['bert']}", f"roberta={artifacts['roberta']}"],
        http_port=0,
        http_default_model="bert",
        http_max_body_bytes=65536,
        max_texts_per_request=8,
        max_text_chars=200,
    ) as server:
        yield server
    report = os.environ.get("ORTSERVE_FUZZ_REPORT")
    if report:
        Path(report).write_text(
            json.dumps({"requests": sum(STATUSES.values()), "statuses": dict(sorted(STATUSES.items()))}, indent=2)
        )


@pytest.fixture(scope="module")
def grpc_keeps_serving(fuzz_server: RunningServer) -> Iterator[Counter[str]]:
    """Classify over gRPC in a loop while the fuzzing runs; the counts of its status codes."""
    codes: Counter[str] = Counter()
    stop = threading.Event()

    def loop() -> None:
        with grpc.insecure_channel(fuzz_server.target) as channel:
            stub = pb_grpc.InferenceStub(channel)
            while not stop.is_set():
                try:
                    stub.Classify(pb.ClassifyRequest(model="bert", texts=["still serving"]), timeout=10)
                    codes["OK"] += 1
                except grpc.RpcError as exc:
                    codes[exc.code().name] += 1
                stop.wait(0.02)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    yield codes
    stop.set()
    thread.join(15)


@pytest.fixture(scope="module")
def client(fuzz_server: RunningServer) -> Iterator[httpx.Client]:
    assert fuzz_server.server is not None
    url = f"http://127.0.0.1:{fuzz_server.server.http_port}"
    with httpx.Client(base_url=url, timeout=30) as http:
        yield http


def check(response: httpx.Response, sent: bytes) -> None:
    """Below 500; an error body holds nothing internal (what the caller sent itself may come back)."""
    STATUSES[response.status_code] += 1
    assert response.status_code < 500, (response.status_code, response.text[:300], sent[:300])
    if response.status_code < 400:
        return
    text = response.text
    own = text
    for piece in re.findall(rb"[\w./:-]{3,}", sent):  # the caller's own words, and their filtered forms
        word = piece.decode("latin-1")
        own = own.replace(caller_message(word), "").replace(word, "")
    leaks = [name for name, pattern in LEAKS.items() if pattern.search(own)]
    assert not leaks, (response.status_code, text[:300], leaks, sent[:200])


# --- the inputs ------------------------------------------------------------------------------------------------------

V2_BODY = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": ["good day", "bad day"]}]}
TARGETS: list[tuple[str, str, Any]] = [
    ("POST", "/v2/models/bert/infer", V2_BODY),
    ("POST", "/v2/models/roberta/versions/1/infer", V2_BODY),
    ("POST", "/invocations", {"inputs": ["good day", "bad day"]}),
    ("POST", "/models/roberta/invocations", {"dataframe_split": {"columns": ["text"], "data": [["a"], ["b"]]}}),
    ("POST", "/models/bert/invocations", {"dataframe_records": [{"text": "a"}]}),
    ("POST", "/ortserve.v1.Inference/Classify", {"model": "bert", "texts": ["good day"], "topK": 1}),
    ("POST", "/ortserve.v1.Inference/GetModel", {"name": "roberta"}),
    ("POST", "/ortserve.v1.Inference/ListModels", {}),
    ("GET", "/v2/models/bert", None),
    ("GET", "/v2/models/roberta/ready", None),
    ("GET", "/v2", None),
    ("GET", "/ping", None),
    ("GET", "/models/roberta/ping", None),
    ("GET", "/openapi.json", None),
]
CONTENT_TYPES = [
    "application/json",
    "application/json; charset=utf-8",
    "application/json; charset=latin-1",
    "application/json; boundary=x",
    "text/csv",
    "text/plain",
    "multipart/form-data; boundary=zz",
    "application/x-www-form-urlencoded",
    "",
    "\x7f/\x01",
    "application/json;;;=",
]
ODD_VALUES: list[Any] = [
    None,
    True,
    -1,
    0,
    2**63,
    1e308,
    -1e-308,
    "",
    " ",
    "\u200b",
    "\ud800",
    "x" * 5000,
    [],
    {},
    [[[]]],
    {"": None},
    ["a"] * 300,
    list(range(2000)),
    {"text": None},
]


def mutate_value(rng: random.Random, value: Any, depth: int = 0) -> Any:
    """`value` with one random part replaced, removed or retyped."""
    if depth > 4 or not isinstance(value, (dict, list)) or not value or rng.random() < 0.25:
        return rng.choice(ODD_VALUES) if rng.random() < 0.8 else nested(rng.randint(1, 200))
    if isinstance(value, dict):
        copy = dict(value)
        key = rng.choice(list(copy))
        roll = rng.random()
        if roll < 0.15:
            del copy[key]
        elif roll < 0.25:
            copy[rng.choice(["bogus", "id", "parameters", "outputs", "params", "inputs", "instances"])] = rng.choice(
                ODD_VALUES
            )
        else:
            copy[key] = mutate_value(rng, copy[key], depth + 1)
        return copy
    copy_list = list(value)
    index = rng.randrange(len(copy_list))
    copy_list[index] = mutate_value(rng, copy_list[index], depth + 1)
    return copy_list


def nested(depth: int) -> Any:
    value: Any = "deep"
    for _ in range(depth):
        value = [value]
    return value


def mutate_bytes(rng: random.Random, body: bytes) -> bytes:
    roll = rng.random()
    if roll < 0.15:
        return bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 300)))
    if roll < 0.3 and body:
        return body[: rng.randrange(len(body))]
    if roll < 0.45 and body:
        data = bytearray(body)
        for _ in range(rng.randint(1, 5)):
            data[rng.randrange(len(data))] = rng.getrandbits(8)
        return bytes(data)
    if roll < 0.55:
        return body.replace(b'"good day"', b'"\xff\xfe bad utf-8"').replace(b'"a"', b'"\\ud800"')
    if roll < 0.62:
        return b"[" * rng.choice([100, 1000, 5000, 60000]) + b"]" * rng.choice([0, 100, 5000])
    if roll < 0.68:
        return b'{"inputs": ' + b"1" * rng.choice([10, 5000, 40000]) + b"}"
    if roll < 0.74:
        return b"\xef\xbb\xbf" + body  # a byte-order mark
    if roll < 0.8:
        return body.replace(b"}", b', "inputs": NaN, "x": Infinity}', 1)
    if roll < 0.86:
        return b"x" * rng.choice([65537, 70000])  # over the body limit
    return body


def odd_path(rng: random.Random, path: str) -> str:
    roll = rng.random()
    if roll < 0.5:
        return path
    names = ["", "x" * 300, "..", "%2e%2e", "nope", "b\u00e9rt", "bert%00", "bert;drop", "a/b", "\u202e", "%ff"]
    if "/bert" in path or "/roberta" in path:
        return re.sub(r"/(bert|roberta)\b", "/" + rng.choice(names), path, count=1)
    return rng.choice([path + "/", path + "x", path.upper(), "//" + path, path + "?" + "q=" * 50])


def odd_headers(rng: random.Random) -> dict[str, str]:
    headers: dict[str, str] = {}
    if rng.random() < 0.8:
        headers["content-type"] = rng.choice(CONTENT_TYPES)
    for name, values in [
        ("x-timeout-ms", ["20000", "-1", "0", "nan", "inf", "1e400", "abc", "99999999999", "60000"]),
        ("x-request-id", ["", "ok-id", "x" * 200, "bad id!", "\u00e9"]),
        ("inference-header-content-length", ["0", "-1", "10", "99999999", "abc", "5"]),
        ("authorization", ["Bearer x", "Basic eA==", "", "Bearer"]),
        ("content-encoding", ["gzip", "identity", "br"]),
        ("traceparent", ["00-zz-zz-01", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "x" * 500]),
    ]:
        if rng.random() < 0.12:
            headers[name] = rng.choice(values)
    return headers


def send(client: httpx.Client, method: str, path: str, body: bytes, headers: dict[str, str]) -> None:
    SENT["requests"] += 1
    content = body if method not in ("GET", "HEAD") or body else None
    raw_headers = {key: value.encode("utf-8") for key, value in headers.items()}  # httpx sends str as ASCII only
    response = client.request(method, path, content=content, headers=raw_headers)
    check(response, path.encode("utf-8", "replace") + body + json.dumps(headers, ensure_ascii=False).encode())


# --- the runs --------------------------------------------------------------------------------------------------------


def test_seeded_mutations_never_get_a_5xx_or_internals(client: httpx.Client, grpc_keeps_serving: Counter[str]) -> None:
    rng = random.Random(SEED)
    for _ in range(MUTATED):
        method, path, value = rng.choice(TARGETS)
        if rng.random() < 0.05:
            method = rng.choice(["PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "GET", "POST"])
        if value is not None and rng.random() < 0.6:
            value = mutate_value(rng, value)
        try:
            body = json.dumps(value).encode() if value is not None else b""
        except (ValueError, RecursionError):
            body = b"[]"
        if rng.random() < 0.35:
            body = mutate_bytes(rng, body)
        headers = odd_headers(rng)
        if method == "POST" and "content-type" not in headers and rng.random() < 0.7:
            headers["content-type"] = "application/json"
        send(client, method, odd_path(rng, path), body, headers)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=10), children, max_size=6),
    max_leaves=30,
)
FIELD_NAMES = st.sampled_from(
    ["inputs", "instances", "dataframe_split", "dataframe_records", "params", "model", "texts", "topK", "name"]
)


@settings(max_examples=HYPOTHESIS_EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(
    target=st.sampled_from([t for t in TARGETS if t[0] == "POST"]),
    body=st.dictionaries(FIELD_NAMES, JSON_VALUES, max_size=4) | JSON_VALUES,
    tensor=st.fixed_dictionaries(
        {"name": st.sampled_from(["text", "x"]), "datatype": st.sampled_from(["BYTES", "FP32", ""])},
        optional={"shape": JSON_VALUES, "data": JSON_VALUES, "parameters": JSON_VALUES},
    ),
)
def test_generated_json_never_gets_a_5xx_or_internals(
    client: httpx.Client, grpc_keeps_serving: Counter[str], target: tuple[str, str, Any], body: Any, tensor: Any
) -> None:
    method, path, _ = target
    if "/v2/" in path:
        body = {"inputs": [tensor], **(body if isinstance(body, dict) else {})}
    send(client, method, path, json.dumps(body).encode(), {"content-type": "application/json"})


RAW_REQUESTS = [
    b"GARBAGE\r\n\r\n",
    b"GET / HTTP/9.9\r\n\r\n",
    b"POST /v2/models/bert/infer HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
    b"POST /v2/models/bert/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nContent-Length: 20\r\n\r\n{}",
    b"POST /invocations HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Bad\x00: y\r\n\r\n",
    b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /v2 HTTP/1.1\r\n" + b"X-Many: y\r\n" * 500 + b"\r\n",
    b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",  # a TLS hello to a plaintext port
]


def test_malformed_http_is_refused_below_500(fuzz_server: RunningServer, grpc_keeps_serving: Counter[str]) -> None:
    assert fuzz_server.server is not None
    for raw in RAW_REQUESTS * 10:
        with socket.create_connection(("127.0.0.1", fuzz_server.server.http_port), timeout=10) as sock:
            SENT["requests"] += 1
            try:
                sock.sendall(raw)
                sock.shutdown(socket.SHUT_WR)
                answer = sock.recv(4096)
            except OSError:  # the server closed the connection without an answer: fine for garbage
                answer = b""
        status = re.match(rb"HTTP/1\.[01] (\d{3})", answer)
        if status:
            STATUSES[int(status.group(1))] += 1
            assert int(status.group(1)) < 500, answer[:200]
        else:
            STATUSES[0] += 1  # connection closed without an answer


def test_over_5000_requests_were_sent_and_grpc_kept_serving(
    client: httpx.Client, grpc_keeps_serving: Counter[str]
) -> None:
    # The default run sends over 5,000; a run made smaller through the environment, what it was asked for.
    assert SENT["requests"] >= min(MIN_REQUESTS, MUTATED + HYPOTHESIS_EXAMPLES), SENT
    assert client.get("/v2/health/ready").status_code == 200
    assert client.post("/v2/models/bert/infer", json=V2_BODY).status_code == 200
    assert grpc_keeps_serving["OK"] > 0 and set(grpc_keeps_serving) == {"OK"}, grpc_keeps_serving
