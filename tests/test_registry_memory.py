"""Registry access stays out of the serving process (issue 15): a server following a `models:/` alias on a real
`mlflow server` never imports the MLflow client; short-lived children resolve and download for it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

from ortserve.client import InferenceClient, InferenceError

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
    from ortserve.server import registry_worker
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
    settings = {"models": [f"m=models:/{name}@production"], "tracking_uri": registry, "host": "127.0.0.1",
                "port": 0, "cache_dir": str(tmp_path / "cache"), "poll_interval": 0.5}
    process = subprocess.Popen([sys.executable, "-c", SERVER_PROCESS, json.dumps(settings)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
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
    assert report["children"] >= 2  # start-up and at least one poll round ran in children
