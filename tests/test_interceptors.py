"""The interceptor chain every RPC passes: request ids, errors → status codes with caller-safe messages, bad bytes.

Against the real server (`server` fixture) and, for a service the chain must cover without opting in, a real
grpc.aio server built with the same `build_interceptors` and a stand-in service (the V2 service does not exist yet).
"""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from ortserve.client import InferenceClient
from ortserve.server.errors import ModelNotReadyError
from ortserve.server.settings import ServerSettings
from ortserve.v1 import inference_pb2 as pb
from ortserve.v1 import inference_pb2_grpc as pb_grpc

from .helpers import RunningServer, running_server

# New names are imported inside the tests that need them, so that this file runs (and fails) on older code too.
REQUEST_ID_KEY = "x-request-id"
CLASSIFY = "/ortserve.v1.Inference/Classify"
GET_MODEL = "/ortserve.v1.Inference/GetModel"
REQUEST_ID_IN_MESSAGE = re.compile(r"\(request id ([0-9a-f]{32})\)$")


def test_every_call_gets_a_request_id_in_its_trailers(server: RunningServer) -> None:
    with grpc.insecure_channel(server.target) as channel:
        stub = pb_grpc.InferenceStub(channel)
        _, ok = stub.Classify.with_call(pb.ClassifyRequest(model="bert", texts=["fine"]), timeout=10)
        _, mine = stub.ListModels.with_call(
            pb.ListModelsRequest(), metadata=[(REQUEST_ID_KEY, "trace-42_a")], timeout=10
        )
        _, insane = stub.ListModels.with_call(pb.ListModelsRequest(), metadata=[(REQUEST_ID_KEY, "x" * 65)], timeout=10)
    generated = dict(ok.trailing_metadata())[REQUEST_ID_KEY]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    assert dict(mine.trailing_metadata())[REQUEST_ID_KEY] == "trace-42_a"
    assert re.fullmatch(r"[0-9a-f]{32}", dict(insane.trailing_metadata())[REQUEST_ID_KEY])


def test_a_refused_call_names_its_request_id_and_the_log_has_it(
    artifacts: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ortserve")
    # A server of its own: refusal log lines are rate-limited per server, and the shared one may have used up its
    # window on the refusals of the tests before this one.
    with (
        running_server(models=[f"bert={artifacts['bert']}"]) as server,
        grpc.insecure_channel(server.target) as channel,
        pytest.raises(grpc.RpcError) as caught,
    ):
        pb_grpc.InferenceStub(channel).Classify(pb.ClassifyRequest(model="nope", texts=["a"]), timeout=10)
    error = caught.value
    assert error.code() == grpc.StatusCode.NOT_FOUND
    match = REQUEST_ID_IN_MESSAGE.search(error.details())
    assert match, error.details()
    assert dict(error.trailing_metadata())[REQUEST_ID_KEY] == match.group(1)
    logged = [record.getMessage() for record in caplog.records]
    assert any(match.group(1) in line and "NOT_FOUND" in line for line in logged)


def test_undecodable_requests_are_invalid_argument_and_logged_boundedly(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    """1,009 requests of bytes that are no ClassifyRequest (or carry a string that is not UTF-8): each one
    INVALID_ARGUMENT (not UNKNOWN), one log line each at most, rate-limited, and never a traceback."""
    caplog.set_level(logging.INFO)
    bad_utf8 = b"\x0a\x02\xff\xfe"  # field 1 (model), 2 bytes that are not UTF-8
    garbage = [b"\xff" * n for n in range(1, 8)] + [bad_utf8, b"\x12\x03\xc3\x28\x41", b"\x0a\x7f"]
    codes: dict[grpc.StatusCode, int] = {}
    with grpc.insecure_channel(server.target) as channel:
        raw = channel.unary_unary(CLASSIFY, request_serializer=None, response_deserializer=None)
        for i in range(1009):
            with pytest.raises(grpc.RpcError) as caught:
                raw(garbage[i % len(garbage)], timeout=10)
            codes[caught.value.code()] = codes.get(caught.value.code(), 0) + 1
            assert "request is not a valid protobuf message" in caught.value.details()
            assert "DecodeError" not in caught.value.details() and "<class" not in caught.value.details()
    assert codes == {grpc.StatusCode.INVALID_ARGUMENT: 1009}
    lines = [r for r in caplog.records if r.name.startswith(("ortserve", "grpc"))]
    assert len(lines) <= 2 * 21, f"{len(lines)} log lines for 1,009 bad requests"
    assert not any(r.exc_info for r in lines)
    assert "Traceback" not in caplog.text
    assert any("suppressed" in r.getMessage() for r in lines) or len(lines) <= 21


@pytest.mark.parametrize("method", [CLASSIFY, GET_MODEL])
def test_a_16_kb_model_name_is_invalid_argument_and_not_echoed(server: RunningServer, method: str) -> None:
    name = "m" * 16 * 1024
    request = pb.ClassifyRequest(model=name, texts=["a"]) if method == CLASSIFY else pb.GetModelRequest(name=name)
    with grpc.insecure_channel(server.target) as channel, pytest.raises(grpc.RpcError) as caught:
        channel.unary_unary(method, request_serializer=None)(request.SerializeToString(), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "over the limit of 128" in caught.value.details()
    assert len(caught.value.details()) < 200


@pytest.mark.parametrize(
    "text",
    ["\u200b\u200b\u200b", "\ufeff", " \u200b\u2060\u200d ", "\u00a0\u3000", "\u202e\u200e", "\u3164", "\x00\x07"],
)
def test_a_text_without_a_visible_character_is_empty(server: RunningServer, text: str) -> None:
    with grpc.insecure_channel(server.target) as channel:
        response = pb_grpc.InferenceStub(channel).Classify(
            pb.ClassifyRequest(model="bert", texts=["ok", text]), timeout=10
        )
    ok, empty = response.results
    assert ok.labels and not ok.error  # its neighbour is classified
    assert not empty.labels and empty.error.startswith("the text is empty: it has no visible character")


def test_visible_characters_of_any_script_are_text(server: RunningServer) -> None:
    from ortserve.server.service import is_visible

    texts = ["日本", "😀", "\u200bok", "é", "٣"]
    assert all(any(is_visible(c) for c in text) for text in texts)
    with InferenceClient(server.target) as client:
        assert len(client.classify("bert", texts)) == len(texts)


def test_errors_reaching_a_caller_carry_no_path(artifacts: dict[str, Path], tmp_path: Path) -> None:
    """A model whose ONNX file is corrupt fails to load; the UNAVAILABLE message and `last_error` a caller sees say
    so without the server's directories (today: `ONNX Runtime cannot load /…/model.onnx: …`)."""
    broken = tmp_path / "secret-place" / "broken"
    shutil.copytree(artifacts["bert"], broken)
    (broken / "model.onnx").write_bytes(b"not an onnx graph")
    with running_server(models=[f"broken={broken}"]) as running:
        with grpc.insecure_channel(running.target) as channel:
            stub = pb_grpc.InferenceStub(channel)
            with pytest.raises(grpc.RpcError) as caught:
                stub.Classify(pb.ClassifyRequest(model="broken", texts=["a"]), timeout=10)
            info = stub.GetModel(pb.GetModelRequest(name="broken"), timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    for message in [caught.value.details(), info.last_error]:
        assert "not ready" in message or "cannot load" in message, message
        assert str(tmp_path) not in message and "secret-place" not in message, message
        assert not re.search(r"(^|[\s'\"(])/\w", message), message


def test_caller_message_cuts_paths_hosts_and_urls() -> None:
    from ortserve.server.errors import caller_message

    message = caller_message(
        "cannot load /var/cache/ortserve/m/1/model.onnx from http://alice:pw@10.0.0.5:5000/api "
        "(registry at mlflow.internal:5000, 192.168.1.2; file:///x/y) for model 'topic' texts[0]: "
        "[ONNXRuntimeError] : 7 : <class 'google.protobuf.message.DecodeError'>"
    )
    assert message == (
        "cannot load <path> from <uri> (registry at <host>, <host>; <uri>) for model 'topic' texts[0]: "
        "[<error>] : 7 : <error>"
    )
    assert len(caller_message("x" * 5000)) == 400
    registry = "models:/topic-onnx@production: not found in the registry: no registered model 'topic-onnx'"
    assert caller_message(registry) == registry  # a model URI names the model, as GetModel's source_uri does
    assert caller_message("models:/x@y in /srv/cache") == "models:/x@y in <path>"


# --- a service the chain must cover without opting in -------------------------------------------------------------

SERVICE = "ortserve.test.Probe"


async def _leaky(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    raise RuntimeError("boom at /srv/secret/weights.bin via http://10.1.2.3:8080")


async def _not_ready(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    raise ModelNotReadyError("model 'x' is not ready", detail="cache /srv/secret is empty")


async def _fine(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return request


@pytest.fixture(scope="module")
def probe_server() -> Iterator[str]:
    """A grpc.aio server with the ortserve chain and a generic service registered after it, like a new service."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(behavior)
        for name, behavior in {"Leaky": _leaky, "NotReady": _not_ready, "Fine": _fine}.items()
    }

    async def start() -> tuple[grpc.aio.Server, int]:
        from ortserve.server.interceptors.chain import build_interceptors

        server = grpc.aio.server(interceptors=build_interceptors(ServerSettings(), None))
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server, port

    server, port = asyncio.run_coroutine_threadsafe(start(), loop).result(30)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(0), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def _call_probe(target: str, method: str) -> tuple[grpc.RpcError | None, bytes | None]:
    with grpc.insecure_channel(target) as channel:
        try:
            return None, channel.unary_unary(f"/{SERVICE}/{method}")(b"hello", timeout=10)
        except grpc.RpcError as exc:
            return exc, None


def test_a_new_service_gets_request_ids_and_internal_errors_without_opting_in(
    probe_server: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ortserve")
    error, _ = _call_probe(probe_server, "Leaky")
    assert error is not None and error.code() == grpc.StatusCode.INTERNAL
    match = REQUEST_ID_IN_MESSAGE.search(error.details())
    assert match and error.details() == f"internal error (request id {match.group(1)})"
    assert dict(error.trailing_metadata())[REQUEST_ID_KEY] == match.group(1)
    # The log has what the caller does not: the exception and its traceback, under the same request id.
    logged = [r for r in caplog.records if match.group(1) in r.getMessage()]
    assert logged and logged[0].exc_info is not None and "/srv/secret/weights.bin" in str(logged[0].exc_info[1])


def test_a_new_service_gets_domain_errors_mapped_with_detail_only_in_the_log(
    probe_server: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ortserve")
    error, _ = _call_probe(probe_server, "NotReady")
    assert error is not None and error.code() == grpc.StatusCode.UNAVAILABLE
    assert error.details().startswith("model 'x' is not ready (request id ")
    assert "/srv/secret" not in error.details()
    assert any("cache /srv/secret is empty" in r.getMessage() for r in caplog.records)
    error, answer = _call_probe(probe_server, "Fine")
    assert error is None and answer == b"hello"


def test_streaming_methods_pass_the_chain_too(server: RunningServer) -> None:
    """Health's Watch streams responses (written by the servicer itself); reflection streams both ways (grpcurl
    list, in test_grpcurl.py). Both run inside the chain's wrappers."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(server.target) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service="bert"), metadata=[(REQUEST_ID_KEY, "watch-1")], timeout=10
        )
        first = next(watch)
        watch.cancel()
    assert first.status == health_pb2.HealthCheckResponse.SERVING


def test_the_chain_wraps_a_methods_handler_once_and_rewraps_a_new_one() -> None:
    """grpc.aio asks every interceptor for the handler on every call and caches nothing: the chain hands back the
    handler it wrapped for the method while gRPC hands over the same one, and wraps anew when gRPC hands another."""
    import functools
    from collections import namedtuple

    from ortserve.server.interceptors.chain import build_interceptors

    chain = build_interceptors(ServerSettings(), None)
    details = namedtuple("details", "method invocation_metadata")(f"/{SERVICE}/Fine", ())

    async def resolve(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        async def run(interceptors: Iterator[grpc.aio.ServerInterceptor], call_details: object) -> object:
            interceptor = next(interceptors, None)
            if interceptor is None:
                return handler
            return await interceptor.intercept_service(functools.partial(run, interceptors), call_details)

        return await run(iter(chain), details)

    handler = grpc.unary_unary_rpc_method_handler(_fine)
    first, second = asyncio.run(resolve(handler)), asyncio.run(resolve(handler))
    replaced = asyncio.run(resolve(grpc.unary_unary_rpc_method_handler(_fine)))
    assert first is second
    assert replaced is not first and replaced.unary_unary is not first.unary_unary
