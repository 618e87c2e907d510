"""Serving from a real `mlflow server` on 127.0.0.1: resolution, cache, following aliases, outages."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ortserve.client import InferenceClient, InferenceError
from ortserve.server.sources.registry_source import COMPLETE_MARKER, RegistryUri

from .helpers import RunningServer, running_server
from .mlflow_server import MlflowServer
from .registry_helpers import register_artifact, register_corrupt_version

POLL = 0.5


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class SteadyCaller:
    """Sends one call after another from a thread, recording each answer's version or failure."""

    def __init__(self, target: str, model: str):
        self.target, self.model = target, model
        self.versions: list[tuple[float, str]] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with InferenceClient(self.target, timeout=10) as client:
            while not self._stop.is_set():
                try:
                    (result,) = client.classify(self.model, ["markets rallied today"])
                    self.versions.append((time.monotonic(), result.model_version))
                except InferenceError as exc:
                    self.failures.append(str(exc))
                time.sleep(0.005)

    def __enter__(self) -> SteadyCaller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def wait_for_version(self, version: str, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for at, seen in self.versions:
                if seen == version:
                    return at
            time.sleep(0.02)
        raise AssertionError(f"no answer from version {version} within {timeout}s; saw {self.versions[-3:]}")


@pytest.fixture
def registry(mlflow_server: MlflowServer) -> str:
    return mlflow_server.tracking_uri


def serve_registry(registry: str, uri: str, cache: Path, **extra: object) -> Iterator[RunningServer]:
    return running_server(models=[f"m={uri}"], tracking_uri=registry, cache_dir=cache, poll_interval=POLL, **extra)


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("models:/topic@production", RegistryUri("topic", alias="production")),
        ("models:/topic/3", RegistryUri("topic", version="3")),
        ("models:/topic/Production", RegistryUri("topic", stage="Production")),
        ("models:/topic/latest", RegistryUri("topic", latest=True)),
    ],
)
def test_registry_uris_parse(uri: str, expected: RegistryUri) -> None:
    assert RegistryUri.parse(uri) == expected
    assert expected.follows_updates == (expected.version is None)


def test_alias_move_swaps_versions_with_no_failed_call(
    registry: str, artifacts: dict[str, Path], tmp_path: Path
) -> None:
    name = unique("swap")
    register_artifact(registry, name, artifacts["bert"], alias="production")
    register_artifact(registry, name, artifacts["distilbert"])
    with serve_registry(registry, f"models:/{name}@production", tmp_path / "cache") as server:
        with InferenceClient(server.target) as client:
            info = client.get_model("m")
        assert (info.version, info.state, info.source_uri) == ("1", "serving", f"models:/{name}@production")
        with SteadyCaller(server.target, "m") as caller:
            time.sleep(0.5)
            import mlflow

            moved_at = time.monotonic()
            mlflow.MlflowClient(registry).set_registered_model_alias(name, "production", "2")
            first_new = caller.wait_for_version("2", timeout=30)
            time.sleep(0.3)
        with InferenceClient(server.target) as client:
            info = client.get_model("m")
    print(
        f"alias move -> first answer from the new version: {first_new - moved_at:.2f}s "
        f"(poll interval {POLL}s); calls: {len(caller.versions)}, failed: {len(caller.failures)}"
    )
    assert caller.failures == []
    after_swap = {version for at, version in caller.versions if at >= first_new}
    assert after_swap == {"2"}  # once the new version answered, the old one never answered again
    assert info.version == "2" and info.last_error == "" and info.failed_updates == 0


def test_corrupt_new_version_is_not_swapped_in(registry: str, artifacts: dict[str, Path], tmp_path: Path) -> None:
    name = unique("corrupt")
    register_artifact(registry, name, artifacts["bert"], alias="production")
    bad = register_corrupt_version(registry, name, artifacts["bert"])
    with serve_registry(registry, f"models:/{name}@production", tmp_path / "cache") as server:
        with SteadyCaller(server.target, "m") as caller:
            import mlflow

            mlflow.MlflowClient(registry).set_registered_model_alias(name, "production", bad)
            deadline = time.monotonic() + 30
            with InferenceClient(server.target) as client:
                while (info := client.get_model("m")).failed_updates == 0 and time.monotonic() < deadline:
                    time.sleep(0.1)
            time.sleep(POLL * 2)
        with grpc.insecure_channel(server.target) as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="m"), timeout=5)
    assert caller.failures == []
    assert {v for _, v in caller.versions} == {"1"}
    assert info.version == "1" and info.state == "serving" and info.failed_updates >= 1
    assert f"version {bad}" in info.last_error and "still serving version 1" in info.last_error
    assert health.status == health_pb2.HealthCheckResponse.SERVING


def test_stage_and_pinned_version(registry: str, artifacts: dict[str, Path], tmp_path: Path) -> None:
    import mlflow

    name = unique("stage")
    register_artifact(registry, name, artifacts["bert"])
    register_artifact(registry, name, artifacts["distilbert"])
    mlflow.MlflowClient(registry).transition_model_version_stage(name, "2", "Production")
    with running_server(
        models=[f"staged=models:/{name}/Production", f"pinned=models:/{name}/1"],
        tracking_uri=registry,
        cache_dir=tmp_path / "cache",
        poll_interval=0,
    ) as server:
        with InferenceClient(server.target) as client:
            staged = client.classify("staged", ["hello"])[0].model_version
            pinned = client.classify("pinned", ["hello"])[0].model_version
    assert (staged, pinned) == ("2", "1")


def test_unknown_registry_model_fails_that_model_only(
    registry: str, artifacts: dict[str, Path], tmp_path: Path
) -> None:
    with running_server(
        models=[f"ok={artifacts['bert']}", f"missing=models:/{unique('nope')}@production"],
        tracking_uri=registry,
        cache_dir=tmp_path / "cache",
        poll_interval=0,
    ) as server:
        with InferenceClient(server.target) as client:
            assert client.classify("ok", ["fine"])[0].labels
            info = client.get_model("missing")
            with pytest.raises(InferenceError) as caught:
                client.classify("missing", ["x"])
        with grpc.insecure_channel(server.target) as channel:
            overall = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status
    assert info.state == "failed" and "not found in the registry" in info.last_error
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert overall == health_pb2.HealthCheckResponse.NOT_SERVING


def test_partial_cache_directory_is_downloaded_again(registry: str, artifacts: dict[str, Path], tmp_path: Path) -> None:
    name = unique("partial")
    register_artifact(registry, name, artifacts["bert"], alias="production")
    cache = tmp_path / "cache"
    partial = cache / name / "1"
    partial.mkdir(parents=True)
    (partial / "model.onnx").write_bytes(b"half a file")  # as a download killed half way would leave it
    with serve_registry(registry, f"models:/{name}@production", cache) as server:
        with InferenceClient(server.target) as client:
            result = client.classify("m", ["hello"])[0]
    assert result.model_version == "1"
    assert (partial / COMPLETE_MARKER).exists()
    assert (partial / "model.onnx").read_bytes() == (artifacts["bert"] / "model.onnx").read_bytes()


def test_restart_serves_the_new_version_when_the_alias_moved_while_stopped(
    registry: str, artifacts: dict[str, Path], tmp_path: Path
) -> None:
    """A restart loads the version it last served early, from its cache, while it asks the registry; the registry's
    answer wins: after the alias moved, the new version serves from the first call, never the remembered one."""
    import mlflow

    name = unique("restart")
    register_artifact(registry, name, artifacts["bert"], alias="production")
    cache = tmp_path / "cache"
    with serve_registry(registry, f"models:/{name}@production", cache) as server:
        with InferenceClient(server.target) as client:
            assert client.classify("m", ["before"])[0].model_version == "1"
    second = register_artifact(registry, name, artifacts["distilbert"])
    mlflow.MlflowClient(registry).set_registered_model_alias(name, "production", second)
    with serve_registry(registry, f"models:/{name}@production", cache) as server:
        with InferenceClient(server.target) as client:
            first_answer = client.classify("m", ["after"])[0].model_version
            info = client.get_model("m")
    assert first_answer == second == info.version and info.note == ""
    with serve_registry(registry, f"models:/{name}@production", cache) as server:
        with InferenceClient(server.target) as client:  # unchanged alias: the early-loaded version is the one kept
            assert client.classify("m", ["again"])[0].model_version == second


@pytest.mark.registry
def test_registry_outage_keeps_serving_and_restarts_from_cache(artifacts: dict[str, Path], tmp_path: Path) -> None:
    mlflow_server = MlflowServer(tmp_path / "mlflow").start()  # our own: this test stops it
    try:
        name = unique("outage")
        register_artifact(mlflow_server.tracking_uri, name, artifacts["bert"], alias="production")
        cache = tmp_path / "cache"
        with serve_registry(mlflow_server.tracking_uri, f"models:/{name}@production", cache) as server:
            with SteadyCaller(server.target, "m") as caller:
                mlflow_server.stop()
                time.sleep(POLL * 6)  # several failed polls while calls go on
            assert caller.failures == [] and len(caller.versions) > 10
        # Restart ortserve with the registry still down: it starts from the cache and says so.
        with serve_registry(mlflow_server.tracking_uri, f"models:/{name}@production", cache) as server:
            with InferenceClient(server.target) as client:
                result = client.classify("m", ["hello"])[0]
                info = client.get_model("m")
        assert result.model_version == "1"
        assert info.state == "serving" and "registry unreachable" in info.note and "from the cache" in info.note
    finally:
        mlflow_server.stop()
