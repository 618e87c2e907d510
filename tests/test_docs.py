"""The docs agree with the code and their commands run: docs/other-languages.md (service config, retried codes,
authentication, the TypeScript generation command) and the README's client section and Open Inference Protocol
remarks."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ortserve.client import RetryPolicy
from ortserve.client.channel import ChannelConfig, service_config

from .helpers import RunningServer, running_server
from .test_node_client import node_client  # noqa: F401 - the fixture (npm ci of tests/node), shared

ROOT = Path(__file__).resolve().parent.parent
OTHER_LANGUAGES = (ROOT / "docs" / "other-languages.md").read_text()
README = (ROOT / "README.md").read_text()


def section(text: str, title: str) -> str:
    return text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def fenced(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, re.S)


def _durations(value: Any) -> Any:
    """The config with "0.1s"-style durations as numbers, so that "2s" and "2.0s" compare equal."""
    if isinstance(value, dict):
        return {key: _durations(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_durations(item) for item in value]
    if isinstance(value, str) and re.fullmatch(r"\d+(\.\d+)?s", value):
        return float(value[:-1])
    return value


def test_other_languages_service_config_is_the_python_clients() -> None:
    (documented,) = fenced(OTHER_LANGUAGES, "json")
    assert _durations(json.loads(documented)) == _durations(service_config(ChannelConfig("localhost:50051")))


def test_other_languages_says_what_the_server_does() -> None:
    (retry_row,) = [line for line in OTHER_LANGUAGES.splitlines() if line.startswith("| retry ")]
    for code in RetryPolicy().retryable_status_codes:
        assert f"`{code}`" in retry_row.split("|")[1], retry_row
    assert "does not authenticate" not in OTHER_LANGUAGES
    for flag in ("--auth-token-file", "--tls-client-ca-file", "UNAUTHENTICATED"):
        assert flag in OTHER_LANGUAGES


def test_typescript_generation_command_runs_verbatim(node_client: Path, tmp_path: Path) -> None:  # noqa: F811
    (block,) = [b for b in fenced(OTHER_LANGUAGES, "bash") if "proto-loader-gen-types" in b]
    command = " ".join(
        line.rstrip("\\").strip()
        for line in block.split("npx proto-loader-gen-types", 1)[1].splitlines()
        if not line.lstrip().startswith("#")
    )
    (tmp_path / "protos").symlink_to(ROOT / "protos")
    (tmp_path / "node_modules").symlink_to(node_client.parent / "node_modules")  # what `npm install` would make
    run = subprocess.run(
        ["npx", "--no-install", "proto-loader-gen-types", *shlex.split(command)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "gen" / "ts" / "inference.ts").is_file()
    assert "Classify" in (tmp_path / "gen" / "ts" / "ortserve" / "v1" / "Inference.ts").read_text()


# --- the README's client section, run against a server like the demo's


@pytest.fixture(scope="module")
def server(artifacts: dict[str, Path]) -> Iterator[RunningServer]:
    with running_server(models=[f"sentiment={artifacts['bert']}"]) as running:
        yield running


def test_readme_python_client_example_runs(server: RunningServer) -> None:
    (snippet,) = fenced(section(README, "Call it from Python"), "python")
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        exec(snippet.replace("localhost:50051", server.target), {})
    label, score, version = output.getvalue().split()
    assert label in ("negative", "neutral", "positive") and 0 < float(score) <= 1 and version


def test_readme_predict_line_runs(server: RunningServer) -> None:
    (line,) = [b.strip() for b in fenced(section(README, "Call it from Python"), "bash")]
    argv = shlex.split(line.replace("localhost:50051", server.target))
    argv[0] = str(Path(sys.executable).parent / "ortserve")
    run = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert [json.loads(out)["text"] for out in run.stdout.splitlines()] == [
        "Shares rallied",
        "Rain cancelled the match",
    ]


def test_readme_open_inference_protocol_remarks_match_the_demo() -> None:
    text = section(README, "Open Inference Protocol")
    assert "random" not in text, "the demo trains real models: its answers are not those of random weights"
    (output,) = re.findall(r"\n```\n(ready:.*?)```", text, re.S)
    ready, answer, labels = output.strip().splitlines()
    # The demo registers its ONNX models from trained ones: a real sentiment model ranks these two texts apart.
    top = re.fullmatch(r"\d+ \(2, 3\) \[\[b'(\w+)'\], \[b'(\w+)'\]\]", answer)
    assert top, answer
    assert top[1] == "positive" and top[2] == "negative", answer
    assert labels == "[b'negative', b'neutral', b'positive']"
