"""The `ml_training` DAG (deploy/airflow) run for real: `airflow dags test` in Airflow's own venv (.venv-airflow,
`make airflow-venv`), SQLite for Airflow and for the MLflow registry, training and `ortserve export` in this venv,
while an `ortserve serve` process follows `models:/sentiment-analysis-onnx@production` and is called all along.

A run whose gate passes moves the alias and the server picks the new version up with no failed call; a run whose gate
fails leaves the alias where it was and fails the gate task with a message that says so.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fixtures.tiny_models import build_tiny_classifier
from ortserve.client import InferenceClient, InferenceError
from ortserve.export.pipeline import ExportOptions, export_local_model
from ortserve.server.healthcheck import wait_until_serving

from .helpers import free_port, serve_command
from .registry_helpers import register_artifact

ROOT = Path(__file__).resolve().parent.parent
AIRFLOW = ROOT / os.environ.get("AIRFLOW_VENV", ".venv-airflow") / "bin" / "airflow"
DAG_ID = "ml_training"
SOURCE = "sentiment-analysis"
SERVED = f"{SOURCE}-onnx"
RUN_TIMEOUT_S = 900  # generous bound for a DAG run on a loaded 2-core machine, never a performance claim

pytestmark = pytest.mark.slow


class Registry:
    """The SQLite MLflow registry the DAG writes and the server reads."""

    def __init__(self, path: Path):
        self.uri = f"sqlite:///{path}"

    def heldout_accuracy(self, name: str, version: str) -> float:
        """The accuracy the training run of `name` `version` logged."""
        import mlflow

        client = mlflow.MlflowClient(self.uri)
        return float(client.get_run(client.get_model_version(name, version).run_id).data.metrics["heldout_accuracy"])

    def production_version(self, name: str) -> str:
        import mlflow

        return str(mlflow.MlflowClient(self.uri).get_model_version_by_alias(name, "production").version)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("airflow")


@pytest.fixture(scope="module")
def registry(workdir: Path) -> Registry:
    """Version 1 of the served model, as an earlier run of the DAG would have left it (alias production)."""
    registry = Registry(workdir / "mlflow.db")
    hf = build_tiny_classifier(workdir / "hf", "bert", ["negative", "positive"])
    artifact = export_local_model(hf, workdir / "artifact", ExportOptions(quantize=False)).output
    assert register_artifact(registry.uri, SERVED, artifact, alias="production") == "1"
    return registry


@pytest.fixture(scope="module")
def airflow_env(workdir: Path, registry: Registry) -> dict[str, str]:
    """AIRFLOW_HOME in a temporary directory with a SQLite metadata database, migrated; the DAG folder is deploy/."""
    if not AIRFLOW.exists():
        pytest.fail(f"{AIRFLOW.relative_to(ROOT)} is missing: `make airflow-venv` installs Airflow (`make test` does)")
    home = workdir / "airflow-home"
    home.mkdir()
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "deploy" / "airflow"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "ORTSERVE_TRAINING_PYTHON": sys.executable,
        "MLFLOW_TRACKING_URI": registry.uri,
        "TOKENIZERS_PARALLELISM": "false",
    }
    migrate = subprocess.run([str(AIRFLOW), "db", "migrate"], env=env, capture_output=True, text=True, timeout=600)
    assert migrate.returncode == 0, migrate.stdout[-3000:] + migrate.stderr[-3000:]
    return env


def run_dag(env: dict[str, str], **conf: object) -> tuple[subprocess.CompletedProcess[str], dict[str, str]]:
    """`airflow dags test ml_training --conf ...`; returns the run and its task states from Airflow's database."""
    run = subprocess.run(
        [str(AIRFLOW), "dags", "test", DAG_ID, "--conf", json.dumps(conf)],
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    database = env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].removeprefix("sqlite:///")
    with sqlite3.connect(database) as connection:
        (run_id,) = connection.execute("SELECT run_id FROM dag_run ORDER BY id DESC LIMIT 1").fetchone()
        states = dict(connection.execute("SELECT task_id, state FROM task_instance WHERE run_id = ?", (run_id,)))
    return run, states


class Callers:
    """Calls the served model in a loop from two threads, recording every outcome and the versions that answered."""

    def __init__(self, target: str):
        self.target = target
        self.failures: list[str] = []
        self.versions: list[str] = []
        self.calls = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._call, daemon=True) for _ in range(2)]

    def _call(self) -> None:
        with InferenceClient(self.target, timeout=30) as client:
            while not self._stop.is_set():
                try:
                    (answer,) = client.classify("sentiment", ["what a wonderful concert"])
                    outcome = answer.model_version
                except InferenceError as error:
                    outcome = f"FAILED {error.code.name}: {error.details}"
                with self._lock:
                    self.calls += 1
                    if outcome.startswith("FAILED"):
                        self.failures.append(outcome)
                    elif not self.versions or self.versions[-1] != outcome:
                        self.versions.append(outcome)
                self._stop.wait(0.05)

    def __enter__(self) -> Callers:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def serving(self) -> str:
        with self._lock:
            return self.versions[-1] if self.versions else ""


@pytest.fixture(scope="module")
def server(workdir: Path, registry: Registry) -> Iterator[str]:
    """`ortserve serve` following the production alias (polled every second), on a free loopback port."""
    port = free_port()
    process = subprocess.Popen(
        serve_command(
            port,
            "--model",
            f"sentiment=models:/{SERVED}@production",
            "--poll-interval",
            "1",
            "--cache-dir",
            str(workdir / "cache"),
            "--drain-period-s",
            "0",
        ),  # fmt: skip
        env={**os.environ, "MLFLOW_TRACKING_URI": registry.uri},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until_serving(f"127.0.0.1:{port}", process, timeout=120)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.communicate(timeout=60)


def wait_for_version(callers: Callers, version: str, timeout: float = 120) -> None:
    """Until the callers get answers from `version` (or `timeout` passes: the assertions after it then fail)."""
    deadline = time.monotonic() + timeout
    while callers.serving() != version and time.monotonic() < deadline:
        time.sleep(0.2)


def test_a_passing_run_moves_the_alias_and_the_server_follows_with_no_failed_call(
    airflow_env: dict[str, str], registry: Registry, server: str
) -> None:
    with Callers(server) as callers:
        wait_for_version(callers, "1")
        run, states = run_dag(airflow_env, model_name=SOURCE, min_accuracy=0.6)
        assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-5000:]
        assert registry.production_version(SERVED) == "2"
        wait_for_version(callers, "2")
    accuracy = registry.heldout_accuracy(SOURCE, "1")
    print(f"\nml_training (gate passes, held-out accuracy {accuracy:.3f}): task states {states}; served versions "
          f"{callers.versions}; {callers.calls} calls, {len(callers.failures)} failed")  # fmt: skip
    assert states == {"train": "success", "accuracy_gate": "success", "export": "success"}
    assert callers.versions == ["1", "2"]
    assert callers.failures == []


def test_a_failing_gate_fails_its_task_and_leaves_the_alias(airflow_env: dict[str, str], registry: Registry) -> None:
    before = registry.production_version(SERVED)
    run, states = run_dag(airflow_env, model_name=SOURCE, min_accuracy=1.01)
    output = run.stdout + run.stderr
    refusal = next((line for line in output.splitlines() if "is below the gate" in line), "")
    print(f"\nml_training (gate fails): task states {states}; production stays at version {before}; {refusal[-250:]}")
    assert states == {"train": "success", "accuracy_gate": "failed", "export": "upstream_failed"}
    assert "held-out accuracy" in output and "is below the gate 1.010" in output, output[-5000:]
    assert f"the production alias of {SERVED} was not moved" in output
    assert registry.production_version(SERVED) == before
