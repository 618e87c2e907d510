"""The README's curl lines (section "HTTP") work verbatim against a server like the demo's (port substituted)."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .helpers import RunningServer, running_server

ROOT = Path(__file__).resolve().parent.parent


def readme_curl_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = re.search(r"\n## HTTP\n(.*?)\n## ", readme, re.S)
    assert section, "README has no HTTP section"
    return [line for line in section.group(1).splitlines() if line.startswith("curl ")]


@pytest.fixture(scope="module")
def demo_like(artifacts: dict[str, Path]) -> Iterator[RunningServer]:
    with running_server(
        models=[f"sentiment={artifacts['bert']}", f"topic={artifacts['roberta']}"], http_port=0
    ) as server:
        yield server


def test_readme_shows_every_protocol() -> None:
    commands = " ".join(readme_curl_commands())
    for route in ("/v2/health/ready", "/v2/models/sentiment/infer", "/invocations", "/ortserve.v1.Inference/Classify"):
        assert route in commands


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
@pytest.mark.parametrize("command", readme_curl_commands())
def test_readme_curl_command_works(command: str, demo_like: RunningServer) -> None:
    assert demo_like.server is not None
    argv = [arg.replace("localhost:8080", f"127.0.0.1:{demo_like.server.http_port}") for arg in shlex.split(command)]
    run = subprocess.run([*argv, "--fail-with-body"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, (run.stdout, run.stderr)
    answer = json.loads(run.stdout)
    if "/v2/health/ready" in command:
        assert answer == {"ready": True}
    elif "/infer" in command:
        assert answer["model_name"] == "sentiment" and answer["outputs"][0]["name"] == "top_labels"
        assert answer["outputs"][0]["shape"] == [1, 1]
    elif "/stats" in command:
        (stats,) = answer["model_stats"]
        assert stats["name"] == "sentiment" and set(stats["inference_stats"]) >= {"success", "compute_infer"}
    elif "/invocations" in command:
        assert set(answer["predictions"][0]) == {"label", "score"}
    else:
        assert answer["model"] == "sentiment" and len(answer["results"][0]["labels"]) == 2
