"""Bearer-token authentication on the real server: missing and bogus tokens, hashed tokens, tokens limited to
models, token file rotation, tokens from the environment, open health, reflection turned off."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ortserve.client import InferenceClient, InferenceError
from ortserve.v1 import inference_pb2 as pb
from ortserve.v1 import inference_pb2_grpc as pb_grpc

from .helpers import GRPCURL, RunningServer, running_server

HASHED_TOKEN = "only-its-hash-is-on-disk"


def write_tokens(path: Path, text: str) -> None:
    """Replace the token file atomically, as a secret mounter or a config tool would."""
    staged = path.with_suffix(".new")
    staged.write_text(text)
    os.replace(staged, path)


@pytest.fixture(scope="module")
def token_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("auth") / "tokens"
    digest = hashlib.sha256(HASHED_TOKEN.encode()).hexdigest()
    write_tokens(
        path, f"# who may call\nall-models-token\nsentiment-only models=bert  # a limited token\nsha256:{digest}\n"
    )
    return path


@pytest.fixture(scope="module")
def auth_server(artifacts: dict[str, Path], token_file: Path) -> Iterator[RunningServer]:
    with running_server(
        models=[f"bert={artifacts['bert']}", f"roberta={artifacts['roberta']}"], auth_token_file=token_file
    ) as server:
        yield server


def call(target: str, method: str, token: str | None, model: str = "bert") -> grpc.StatusCode:
    metadata = [("authorization", f"Bearer {token}")] if token is not None else []
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.InferenceStub(channel)
        try:
            if method == "Classify":
                stub.Classify(pb.ClassifyRequest(model=model, texts=["fine"]), metadata=metadata, timeout=10)
            elif method == "GetModel":
                stub.GetModel(pb.GetModelRequest(name=model), metadata=metadata, timeout=10)
            else:
                stub.ListModels(pb.ListModelsRequest(), metadata=metadata, timeout=10)
        except grpc.RpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


@pytest.mark.parametrize("method", ["Classify", "GetModel", "ListModels"])
def test_no_token_or_a_bogus_one_is_unauthenticated(auth_server: RunningServer, method: str) -> None:
    assert call(auth_server.target, method, None) == grpc.StatusCode.UNAUTHENTICATED
    assert call(auth_server.target, method, "x") == grpc.StatusCode.UNAUTHENTICATED
    assert call(auth_server.target, method, "all-models-token ") == grpc.StatusCode.OK
    assert call(auth_server.target, method, HASHED_TOKEN) == grpc.StatusCode.OK


def test_the_refusal_says_what_is_missing_and_nothing_else(auth_server: RunningServer) -> None:
    with grpc.insecure_channel(auth_server.target) as channel, pytest.raises(grpc.RpcError) as caught:
        pb_grpc.InferenceStub(channel).ListModels(pb.ListModelsRequest(), metadata=[("authorization", "Basic x")])
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert caught.value.details().startswith("malformed authorization metadata: expected 'Bearer TOKEN' (request id ")


def test_undecodable_bytes_without_a_token_are_refused_before_decoding(auth_server: RunningServer) -> None:
    with grpc.insecure_channel(auth_server.target) as channel, pytest.raises(grpc.RpcError) as caught:
        channel.unary_unary("/ortserve.v1.Inference/Classify", request_serializer=None)(b"\xff\xff", timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("method", ["Classify", "GetModel"])
def test_a_token_limited_to_models_is_denied_the_others(auth_server: RunningServer, method: str) -> None:
    assert call(auth_server.target, method, "sentiment-only", model="bert") == grpc.StatusCode.OK
    assert call(auth_server.target, method, "sentiment-only", model="roberta") == grpc.StatusCode.PERMISSION_DENIED
    assert call(auth_server.target, method, "all-models-token", model="roberta") == grpc.StatusCode.OK


def test_the_project_client_sends_its_token(auth_server: RunningServer) -> None:
    with InferenceClient(auth_server.target, token="sentiment-only") as client:
        assert len(client.classify("bert", ["a fine day"])) == 1
        with pytest.raises(InferenceError) as denied:
            client.classify("roberta", ["a fine day"])
    assert denied.value.code is grpc.StatusCode.PERMISSION_DENIED


def test_health_stays_open_for_probes(auth_server: RunningServer) -> None:
    with grpc.insecure_channel(auth_server.target) as channel:
        status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    assert status.status == health_pb2.HealthCheckResponse.SERVING


def health_check(target: str, service: str, token: str | None = None, watch: bool = False) -> grpc.StatusCode:
    """The status code of a health Check (or the first answer of a Watch) of `service`."""
    metadata = [("authorization", f"Bearer {token}")] if token is not None else []
    request = health_pb2.HealthCheckRequest(service=service)
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            if watch:
                next(iter(stub.Watch(request, metadata=metadata, timeout=5)))
            else:
                stub.Check(request, metadata=metadata, timeout=5)
        except grpc.RpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


@pytest.mark.parametrize("watch", [False, True])
def test_a_models_health_needs_a_token_so_that_no_one_enumerates_models(
    auth_server: RunningServer, watch: bool
) -> None:
    target = auth_server.target
    for open_name in ("", "liveness", "ortserve.v1.Inference"):  # probes need no token
        assert health_check(target, open_name, watch=watch) == grpc.StatusCode.OK, open_name
    # Without a token a served model and an unknown name get the same answer: nothing to tell them apart.
    assert health_check(target, "bert", watch=watch) == grpc.StatusCode.UNAUTHENTICATED
    assert health_check(target, "no-such-model", watch=watch) == grpc.StatusCode.UNAUTHENTICATED
    assert health_check(target, "bert", "x", watch=watch) == grpc.StatusCode.UNAUTHENTICATED
    assert health_check(target, "bert", "all-models-token", watch=watch) == grpc.StatusCode.OK
    assert health_check(target, "bert", "sentiment-only", watch=watch) == grpc.StatusCode.OK
    assert health_check(target, "roberta", "sentiment-only", watch=watch) == grpc.StatusCode.PERMISSION_DENIED
    if not watch:  # a Watch of an unknown name waits for it to appear (SERVICE_UNKNOWN), it does not fail
        assert health_check(target, "no-such-model", "all-models-token") == grpc.StatusCode.NOT_FOUND


def test_reflection_needs_a_token_like_everything_else(auth_server: RunningServer) -> None:
    if not GRPCURL.exists():
        pytest.skip("grpcurl is installed by `make test` into .venv")
    anonymous = subprocess.run(
        [str(GRPCURL), "-plaintext", auth_server.target, "list"], capture_output=True, text=True, timeout=30
    )
    with_token = subprocess.run(
        [str(GRPCURL), "-plaintext", "-H", "authorization: Bearer all-models-token", auth_server.target, "list"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert anonymous.returncode != 0 and "Unauthenticated" in anonymous.stderr
    assert with_token.returncode == 0 and "ortserve.v1.Inference" in with_token.stdout


def test_the_token_file_is_reread_when_it_changes(artifacts: dict[str, Path], tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    write_tokens(tokens, "first-token\n")
    with running_server(models=[f"bert={artifacts['bert']}"], auth_token_file=tokens) as server:
        before = (call(server.target, "ListModels", "first-token"), call(server.target, "ListModels", "second"))
        write_tokens(tokens, "second models=bert\n")
        after = (call(server.target, "ListModels", "first-token"), call(server.target, "ListModels", "second"))
        write_tokens(tokens, "second models=bert\nthis line is = not valid\n")  # a broken edit keeps the last tokens
        broken = call(server.target, "ListModels", "second")
    assert before == (grpc.StatusCode.OK, grpc.StatusCode.UNAUTHENTICATED)
    assert after == (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.OK)
    assert broken == grpc.StatusCode.OK


def test_tokens_from_an_environment_variable_and_protected_health(
    artifacts: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORTSERVE_TEST_TOKENS", "env-token-1; env-token-2 models=bert")
    with running_server(
        models=[f"bert={artifacts['bert']}"], auth_token_env="ORTSERVE_TEST_TOKENS", auth_health=True
    ) as server:
        codes = [call(server.target, "ListModels", token) for token in ["env-token-1", "env-token-2", "nope"]]
        with grpc.insecure_channel(server.target) as channel, pytest.raises(grpc.RpcError) as caught:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    assert codes == [grpc.StatusCode.OK, grpc.StatusCode.OK, grpc.StatusCode.UNAUTHENTICATED]
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_reflection_can_be_turned_off(artifacts: dict[str, Path]) -> None:
    if not GRPCURL.exists():
        pytest.skip("grpcurl is installed by `make test` into .venv")
    with running_server(models=[f"bert={artifacts['bert']}"], reflection=False) as server:
        listed = subprocess.run(
            [str(GRPCURL), "-plaintext", server.target, "list"], capture_output=True, text=True, timeout=30
        )
        assert call(server.target, "Classify", None) == grpc.StatusCode.OK
    assert listed.returncode != 0 and "does not support the reflection API" in listed.stderr


def test_token_entries_parse_and_are_kept_as_hashes() -> None:
    from ortserve.server.security.bearer_tokens import parse_tokens, token_hash

    grants = parse_tokens("a\nb models=x,y # note\nsha256:" + "0" * 64, "test")
    assert [g.models for g in grants] == [None, frozenset({"x", "y"}), None]
    assert grants[0].digest == token_hash("a") and grants[2].digest == bytes(32)
    assert all(b"a" != g.digest for g in grants)
    with pytest.raises(ValueError, match="entry 1: unknown option 'model'"):
        parse_tokens("t model=x", "test")
    with pytest.raises(ValueError, match="64 hex digits"):
        parse_tokens("sha256:abc", "test")


def test_a_token_variable_that_is_not_set_stops_the_start(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from ortserve.server.app import OrtServer
    from ortserve.server.errors import ServerStartError
    from ortserve.server.settings import ServerSettings

    async def create() -> OrtServer:
        return OrtServer(ServerSettings(auth_token_env="ORTSERVE_TEST_NO_TOKENS"))

    monkeypatch.delenv("ORTSERVE_TEST_NO_TOKENS", raising=False)
    with pytest.raises(ServerStartError, match="ORTSERVE_TEST_NO_TOKENS, which is not set"):
        asyncio.run(create())
