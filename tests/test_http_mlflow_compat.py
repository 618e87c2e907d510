"""ortserve as a drop-in for `mlflow models serve`: one registry model (a transformers text-classification pipeline,
logged as users log it) is served by `mlflow models serve` and, exported to ONNX, by ortserve; the same good and bad
requests get the same statuses, the same error codes and the same predictions from both. MLflow's own
`ScoringServerClient` works against ortserve unchanged."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fixtures.registry_seed import SEED_MODELS, log_classifier
from ortserve.export import export_model

from .helpers import free_port, running_server
from .mlflow_server import MlflowServer

pytestmark = pytest.mark.slow

MODEL = "http-compat-topic"
TEXTS = ["The central bank raised interest rates again.", "A late goal won the cup final.", "ok"]

#: (name, content type, body): what a caller of `mlflow models serve` may post to /invocations.
REQUESTS: list[tuple[str, str, bytes]] = [
    ("inputs", "application/json", json.dumps({"inputs": TEXTS}).encode()),
    ("one input", "application/json", json.dumps({"inputs": TEXTS[0]}).encode()),
    ("instances", "application/json", json.dumps({"instances": TEXTS}).encode()),
    (
        "dataframe_split",
        "application/json",
        json.dumps({"dataframe_split": {"columns": ["text"], "data": [[t] for t in TEXTS]}}).encode(),
    ),
    ("dataframe_records", "application/json", json.dumps({"dataframe_records": [{"text": t} for t in TEXTS]}).encode()),
    ("csv", "text/csv", ("text\n" + "".join(f'"{t}"\n' for t in TEXTS)).encode()),
    ("json with charset", "application/json; charset=utf-8", json.dumps({"inputs": TEXTS}).encode()),
    ("not json", "application/json", b"{not json"),
    ("a list", "application/json", b'["a", "b"]'),
    ("no format key", "application/json", b'{"data": ["a"]}'),
    ("two format keys", "application/json", json.dumps({"inputs": ["a"], "instances": ["b"]}).encode()),
    ("plain text", "text/plain", b"hello"),
    ("xml", "application/xml", b"<a/>"),
    ("latin-1", "application/json; charset=latin-1", json.dumps({"inputs": TEXTS}).encode()),
    ("unknown parameter", "application/json; format=pandas-split", json.dumps({"inputs": TEXTS}).encode()),
]


@pytest.fixture(scope="module")
def registered(mlflow_server: MlflowServer, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A text-classification pipeline registered as MODEL@production; its tracking URI."""
    spec = dataclasses.replace(SEED_MODELS["topic-classification"], name=MODEL)
    log_classifier(spec, tmp_path_factory.mktemp("compat") / "hf", mlflow_server.tracking_uri, alias="production")
    return mlflow_server.tracking_uri


@pytest.fixture(scope="module")
def mlflow_serve(registered: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`mlflow models serve` of MODEL@production; its base URL."""
    port = free_port()
    mlflow = Path(sys.executable).parent / "mlflow"
    # It runs `uvicorn` by name: the venv's bin must be on PATH, as it is for a user whose venv is active.
    path = f"{mlflow.parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": registered, "PATH": path}
    log = (tmp_path_factory.mktemp("mlflow-serve") / "serve.log").open("w")
    process = subprocess.Popen(
        [str(mlflow), "models", "serve", "-m", f"models:/{MODEL}@production", "--env-manager", "local"]
        + ["-h", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            assert process.poll() is None, f"mlflow models serve exited: {Path(log.name).read_text()[-2000:]}"
            try:
                if httpx.get(f"{url}/ping", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "mlflow models serve did not answer /ping"
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(process.pid, 15)
        process.wait(30)
        log.close()


@pytest.fixture(scope="module")
def ortserve_url(registered: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """ortserve serving the same registry model exported to ONNX (fp32: the same arithmetic as PyTorch's) and
    registered beside it, as `ortserve export` does."""
    exported = export_model(f"models:/{MODEL}@production", quantize=False, tracking_uri=registered)
    assert exported.model_uri
    cache = tmp_path_factory.mktemp("compat-cache")
    with running_server(
        models=[f"topic={exported.model_uri}"], http_port=0, tracking_uri=registered, cache_dir=cache
    ) as server:
        assert server.server is not None
        yield f"http://127.0.0.1:{server.server.http_port}"


def post(url: str, content_type: str, body: bytes) -> httpx.Response:
    return httpx.post(f"{url}/invocations", content=body, headers={"Content-Type": content_type}, timeout=60)


@pytest.mark.parametrize("name, content_type, body", REQUESTS, ids=[r[0] for r in REQUESTS])
def test_same_answer_as_mlflow_models_serve(
    mlflow_serve: str, ortserve_url: str, name: str, content_type: str, body: bytes
) -> None:
    theirs, ours = post(mlflow_serve, content_type, body), post(ortserve_url, content_type, body)
    record_side_by_side(name, theirs, ours)
    assert ours.status_code == theirs.status_code, (theirs.text[:300], ours.text[:300])
    assert ours.headers["content-type"].split(";")[0] == theirs.headers["content-type"].split(";")[0]
    if theirs.status_code == 200:
        expected, answered = theirs.json()["predictions"], ours.json()["predictions"]
        assert [p["label"] for p in answered] == [p["label"] for p in expected]
        assert [p["score"] for p in answered] == pytest.approx([p["score"] for p in expected], abs=1e-4)
        assert list(ours.json()) == ["predictions"] and all(set(p) == {"label", "score"} for p in answered)
    elif theirs.headers["content-type"].startswith("application/json"):
        assert set(ours.json()) == {"error_code", "message"}
        assert ours.json()["error_code"] == theirs.json()["error_code"]


def test_health_and_version_routes_answer_like_mlflow(mlflow_serve: str, ortserve_url: str) -> None:
    for path in ("/ping", "/health"):
        theirs, ours = httpx.get(mlflow_serve + path), httpx.get(ortserve_url + path)
        assert (ours.status_code, ours.text) == (theirs.status_code, theirs.text)
    assert httpx.get(f"{ortserve_url}/version").text == httpx.get(f"{mlflow_serve}/version").text


def test_mlflows_own_scoring_server_client(ortserve_url: str) -> None:
    import pandas as pd
    from mlflow.pyfunc.scoring_server.client import ScoringServerClient

    host, port = ortserve_url.removeprefix("http://").split(":")
    client = ScoringServerClient(host, int(port))
    client.wait_server_ready(timeout=30)
    assert client.get_version()
    for data in (TEXTS, pd.DataFrame({"text": TEXTS})):
        predictions = client.invoke(data).get_predictions()
        assert list(predictions.columns) == ["label", "score"] and len(predictions) == len(TEXTS)
    # Bad bodies get MLflow's 400s (test_side_by_side_answers_match). A text with nothing to classify is answered
    # per text (null label, its error), not by failing the call.
    blank = client.invoke(pd.DataFrame({"text": ["   ", TEXTS[0]]})).get_predictions()
    assert blank["label"].isna().tolist() == [True, False]


SIDE_BY_SIDE: list[dict[str, Any]] = []


def record_side_by_side(name: str, theirs: httpx.Response, ours: httpx.Response) -> None:
    """Both answers, written as JSON to ORTSERVE_MLFLOW_COMPAT_REPORT when that names a file (for the record)."""
    SIDE_BY_SIDE.append(
        {
            "request": name,
            "mlflow models serve": [theirs.status_code, theirs.text[:200]],
            "ortserve": [ours.status_code, ours.text[:200]],
        }
    )
    report = os.environ.get("ORTSERVE_MLFLOW_COMPAT_REPORT")
    if report:
        Path(report).write_text(json.dumps(SIDE_BY_SIDE, indent=1, ensure_ascii=False))
