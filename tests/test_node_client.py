"""The proto works outside Python: a Node.js client (@grpc/grpc-js + @grpc/proto-loader, loading protos/ at run
time) calls Classify on a real server and gets the answers the Python client gets."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from ortserve.client import InferenceClient

from .helpers import RunningServer

NODE_DIR = Path(__file__).resolve().parent / "node"


@pytest.fixture(scope="module")
def node_client() -> Path:
    """tests/node with its npm dependencies installed from package-lock.json (`npm ci`, only when stale)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are not installed")
    installed = NODE_DIR / "node_modules" / ".package-lock.json"
    lock = NODE_DIR / "package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
        run = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=NODE_DIR,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert run.returncode == 0, f"npm ci failed:\n{run.stderr}"
    return NODE_DIR / "classify.js"


def node_classify(script: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["node", str(script), *args], capture_output=True, text=True, timeout=60)


def test_node_client_classifies_like_the_python_client(node_client: Path, server: RunningServer) -> None:
    texts = ["Shares rallied after a strong quarter.", "Heavy rain cancelled the match."]
    run = node_classify(node_client, server.target, "roberta", "2", *texts)
    assert run.returncode == 0, run.stderr
    response = json.loads(run.stdout)
    with InferenceClient(server.target) as client:
        expected = client.classify("roberta", texts, top_k=2)
    assert response["model"] == "roberta"
    assert response["model_version"] == expected[0].model_version
    assert len(response["results"]) == len(texts)
    for result, want in zip(response["results"], expected, strict=True):
        assert [s["label"] for s in result["labels"]] == [s.label for s in want.labels]
        assert [s["score"] for s in result["labels"]] == pytest.approx([s.score for s in want.labels], abs=1e-6)


def test_node_client_sees_grpc_status_codes(node_client: Path, server: RunningServer) -> None:
    run = node_classify(node_client, server.target, "no-such-model", "0", "text")
    assert run.returncode == 1
    assert json.loads(run.stderr.strip().splitlines()[-1])["code"] == "NOT_FOUND"
