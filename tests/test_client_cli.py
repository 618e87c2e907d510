"""`ortserve predict` as a user runs it: the console script against a real server, texts from arguments and stdin."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from .helpers import RunningServer

ORTSERVE = str(Path(sys.executable).parent / "ortserve")


def predict(
    *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ORTSERVE, "predict", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_arguments_give_one_json_line_each_in_order(server: RunningServer) -> None:
    run = predict("--target", server.target, "--model", "roberta", "--top-k", "2", "markets rallied", "rain again")
    assert run.returncode == 0, run.stderr
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    assert [line["text"] for line in lines] == ["markets rallied", "rain again"]
    for line in lines:
        assert line["model"] == "roberta" and line["model_version"].startswith("sha256-")
        assert len(line["labels"]) == 2 and line["labels"][0]["score"] >= line["labels"][1]["score"]


def test_stdin_over_several_requests_skips_blank_lines(server: RunningServer) -> None:
    texts = [f"line {i} about the weather" for i in range(50)]
    stdin = "\n".join(texts[:10]) + "\n\n   \r\n" + "\r\n".join(texts[10:]) + "\n"
    run = predict("--model", "bert", "--chunk-size", "16", stdin=stdin, env={"ORTSERVE_TARGET": server.target})
    assert run.returncode == 0, run.stderr
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    assert [line["text"] for line in lines] == texts
    assert all(len(line["labels"]) == 3 for line in lines)


def test_errors_exit_1_with_a_message_naming_the_model(server: RunningServer) -> None:
    run = predict("--target", server.target, "--model", "nope", "a text")
    assert run.returncode == 1
    assert "'nope'" in run.stderr and "NOT_FOUND" in run.stderr and "Traceback" not in run.stderr
    usage = predict("--target", server.target, "--model", "bert", "--top-k", "-1", "a")
    assert usage.returncode == 2 and "--top-k" in usage.stderr


def test_model_may_come_from_the_environment(server: RunningServer) -> None:
    run = predict("hello", env={"ORTSERVE_TARGET": server.target, "ORTSERVE_MODEL": "distilbert"})
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["model"] == "distilbert"
