"""Fork safety: a client made (and used) in a parent process works in children made by `fork()`, as in gunicorn
with --preload, multiprocessing's fork start method, or Spark's Python worker daemon."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from .helpers import RunningServer

# The scenario runs in its own interpreter: the parent imports ortserve.client first (as an application would),
# uses its client, then forks; the test process itself runs the server and must not be forked.
SCENARIO = textwrap.dedent(
    """
    import json, os, sys, time
    from ortserve.client import InferenceClient
    from ortserve.client.compat import predict_sentiment

    target, texts = sys.argv[1], ["the market rallied today", "what a terrible cold day"]
    client = InferenceClient(target)
    before = [r.as_dict() for r in client.classify("bert", texts)]
    predict_sentiment(texts[0])  # warms the shared client of the compat functions too
    time.sleep(0.5)  # let the parent's channel settle into idle: the case where an inherited channel misbehaves
    children = []
    for _ in range(2):
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read)
            try:
                answer = {"pid": os.getpid(), "client": [r.as_dict() for r in client.classify("bert", texts)],
                          "compat": predict_sentiment(texts[0])}
            except BaseException as exc:
                answer = {"error": repr(exc)}
            os.write(write, json.dumps(answer).encode())
            os._exit(0)
        os.close(write)
        children.append((pid, read))
    answers = []
    for pid, read in children:
        with os.fdopen(read) as pipe:
            answers.append(json.loads(pipe.read()))
        os.waitpid(pid, 0)
    after = [r.as_dict() for r in client.classify("bert", texts)]
    print(json.dumps({"before": before, "after": after, "children": answers, "parent": os.getpid()}))
    """
)


def test_children_forked_after_use_classify_with_the_parents_client(server: RunningServer) -> None:
    run = subprocess.run(
        [sys.executable, "-c", SCENARIO, server.target],
        capture_output=True,
        text=True,
        timeout=120,
        env={**_clean_env(), "ORTSERVE_TARGET": server.target, "ORTSERVE_SENTIMENT_MODEL": "bert"},
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert _same(report["after"], report["before"])
    assert len(report["children"]) == 2
    for child in report["children"]:
        assert "error" not in child, child
        assert child["pid"] != report["parent"]
        assert _same(child["client"], report["before"])
        assert _same([child["compat"]], report["before"][:1])


def _same(got: list[dict[str, float]], want: list[dict[str, float]]) -> bool:
    # The children call at the same time, so the server may batch (and pad) their texts together: equal to 1e-5.
    return len(got) == len(want) and all(g == pytest.approx(w, abs=1e-5) for g, w in zip(got, want, strict=True))


def _clean_env() -> dict[str, str]:
    import os

    # The scenario must show what the package does on its own, not inherit a setting from this process.
    return {k: v for k, v in os.environ.items() if k != "GRPC_ENABLE_FORK_SUPPORT"}
