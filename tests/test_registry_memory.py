"""Registry access stays out of the serving process (issue 15): a server following a `models:/` alias on a real
`mlflow server` never imports the MLflow client; over HTTP it resolves and downloads over REST (issue 26)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from ortserve.client import InferenceClient, InferenceError
from ortserve.contract.errors import ContractError, RegistryUnavailableError
from ortserve.contract.registry import resolve_version
from ortserve.contract.uri import RegistryUri
from ortserve.server.sources.registry_rest import RestRegistryClient, rest_registry_client

from .helpers import free_port
from .mlflow_server import MlflowServer
from .registry_helpers import register_artifact

#: Runs in its own process: starts a server with the settings in argv[1], prints its port, and on a line on stdin
#: prints the MLflow modules it has imported and how many registry children it started, then stops.
SERVER_PROCESS = """
import asyncio, json, sys
from ortserve.server.app import OrtServer
from ortserve.server.settings import ServerSettings

async def main():
    server = OrtServer(ServerSettings(**json.loads(sys.argv[1])))
    print(json.dumps({"port": await server.start()}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    from ortserve.server.sources import registry_worker
    children = sum(w.children_started for w in registry_worker._WORKERS.values())
    mlflow = sorted(m for m in sys.modules if m == "mlflow" or m.startswith("mlflow."))
    print(json.dumps({"mlflow_modules": mlflow, "children": children}), flush=True)
    await server.stop(0)

asyncio.run(main())
"""


def classify_version(target: str) -> str:
    with InferenceClient(target, timeout=10) as client:
        return client.classify("m", ["markets rallied today"])[0].model_version


def test_server_follows_an_alias_without_importing_mlflow(
    mlflow_server: MlflowServer, artifacts: dict[str, Path], tmp_path: Path
) -> None:
    import mlflow

    registry = mlflow_server.tracking_uri
    name = f"memory-{uuid.uuid4().hex[:8]}"
    register_artifact(registry, name, artifacts["bert"], alias="production")
    register_artifact(registry, name, artifacts["distilbert"])
    settings = {
        "models": [f"m=models:/{name}@production"],
        "tracking_uri": registry,
        "host": "127.0.0.1",
        "port": 0,
        "cache_dir": str(tmp_path / "cache"),
        "poll_interval": 0.5,
    }
    process = subprocess.Popen(
        [sys.executable, "-c", SERVER_PROCESS, json.dumps(settings)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        target = f"127.0.0.1:{json.loads(process.stdout.readline())['port']}"
        first = classify_version(target)
        mlflow.MlflowClient(registry).set_registered_model_alias(name, "production", "2")
        deadline = time.monotonic() + 90
        seen = first
        while seen != "2" and time.monotonic() < deadline:
            time.sleep(0.2)
            try:
                seen = classify_version(target)
            except InferenceError:
                pass
        process.stdin.write("report\n")
        process.stdin.flush()
        report = json.loads(process.stdout.readline())
        process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert (first, seen) == ("1", "2")  # the alias move was followed...
    assert report["mlflow_modules"] == []  # ...with no MLflow module in the serving process
    assert report["children"] == 0  # resolution and both downloads went over REST: no child, no MLflow import


def test_rest_resolution_answers_as_the_mlflow_client_does(
    mlflow_server: MlflowServer, artifacts: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    registry = mlflow_server.tracking_uri
    name = f"rest-{uuid.uuid4().hex[:8]}"
    register_artifact(registry, name, artifacts["bert"], alias="production")
    register_artifact(registry, name, artifacts["bert"])
    MlflowClient(registry).transition_model_version_stage(name, "1", "Staging")
    clients = {"mlflow": MlflowClient(registry), "rest": RestRegistryClient(registry)}

    def answer(client: object, uri: str) -> str:
        try:
            return str(resolve_version(client, RegistryUri.parse(uri)).version)
        except ContractError as exc:
            return f"{type(exc).__name__}: {exc}"

    uris = [f"models:/{name}{ref}" for ref in ("@production", "/2", "/staging", "/latest", "@nope", "/7", "/Archived")]
    uris.append(f"models:/{name}-absent@production")
    answers = {kind: [answer(client, uri) for uri in uris] for kind, client in clients.items()}
    assert answers["rest"] == answers["mlflow"]
    assert answers["rest"][:4] == ["1", "2", "1", "2"]
    assert "has no alias 'nope' (aliases: production)" in answers["rest"][4]

    down = RestRegistryClient(f"http://alice:s3cr3tPW@127.0.0.1:{free_port()}")
    down.max_retries = 0
    with pytest.raises(RegistryUnavailableError) as caught:
        resolve_version(down, RegistryUri.parse(f"models:/{name}@production"))
    assert "s3cr3tPW" not in caught.value.detail and "registry unreachable" in str(caught.value)
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "t0ken")  # a token the server does not check: still answers
    assert answer(RestRegistryClient(registry), f"models:/{name}/1") == "1"
    assert rest_registry_client("sqlite:///x.db") is None and rest_registry_client(registry) is not None
    monkeypatch.setenv("MLFLOW_TRACKING_AUTH", "some-plugin")  # only the MLflow client knows it: use the child
    assert rest_registry_client(registry) is None


def test_shared_arena_sessions_answer_as_separate_ones(artifacts: dict[str, Path]) -> None:
    from ortserve.server.memory import register_shared_cpu_arena
    from ortserve.server.runtime import OnnxClassifier, SessionConfig

    texts = ["markets rallied today", "a much longer text about the weather " * 8]
    alone = {name: OnnxClassifier.load(artifacts[name]).probabilities(texts) for name in ("bert", "roberta")}
    register_shared_cpu_arena()  # what the server does at start (--shared-arena, on by default)
    assert SessionConfig().session_options().get_session_config_entry("session.use_env_allocators") == "1"
    without_arena = SessionConfig(enable_cpu_mem_arena=False).session_options()
    with pytest.raises(RuntimeError):  # no such entry: a session without an arena allocates on its own
        without_arena.get_session_config_entry("session.use_env_allocators")
    for name, expected in alone.items():
        shared = OnnxClassifier.load(artifacts[name]).probabilities(texts)
        assert abs(shared - expected).max() < 1e-6


def test_a_start_from_a_sqlite_store_runs_one_child_for_every_model(artifacts: dict[str, Path], tmp_path: Path) -> None:
    from ortserve.server.sources.registry_worker import registry_worker

    from .helpers import running_server

    registry = f"sqlite:///{tmp_path / 'mlflow.db'}"
    register_artifact(registry, "first", artifacts["bert"], alias="production")
    register_artifact(registry, "second", artifacts["roberta"], alias="production")
    worker = registry_worker(registry)
    models = ["a=models:/first@production", "b=models:/second@production"]
    started: list[int] = []
    for _ in ("empty cache", "warm cache"):
        before = worker.children_started
        with running_server(
            models=models, tracking_uri=registry, cache_dir=tmp_path / "cache", poll_interval=0
        ) as server:
            with InferenceClient(server.target, timeout=10) as client:
                states = [client.get_model(name).state for name in ("a", "b")]
                versions = [client.classify(name, ["markets rallied today"])[0].model_version for name in ("a", "b")]
        started.append(worker.children_started - before)
        assert (states, versions) == (["serving", "serving"], ["1", "1"])
    # One child resolved and downloaded both models; from a warm cache one child only resolved (the server verified).
    assert started == [1, 1]
