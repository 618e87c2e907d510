"""Champion and challenger on a real server: settings, shadow with exact agreement counts, canary share and
stickiness, the GetModel fields, the metrics and the CLI report (registry side: test_challenger_registry.py)."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import grpc
import numpy as np
import pytest

from fixtures.tiny_models import SENTIMENT_LABELS, build_tiny_classifier
from ortserve.export.pipeline import ExportOptions, export_local_model
from ortserve.server.artifact import MANIFEST_FILE, MODEL_FILE, TOKENIZER_FILE
from ortserve.server.model_table import ServedModel
from ortserve.server.settings import ModelSpec, ServerSettings
from ortserve.v1 import inference_pb2 as pb
from ortserve.v1 import inference_pb2_grpc as pb_grpc

from .helpers import RunningServer, running_server

TEXTS = [
    f"{subject} {verb} {tail}"
    for subject in ("Shares", "The team", "Investors", "Critics", "The weather", "Sales")
    for verb in ("rallied", "collapsed", "surprised everyone", "stayed flat", "disappointed")
    for tail in ("today.", "after the report", "again this week")
]

#: Tests of the challenger artifact: a tiny Hugging Face model initialised with another seed and exported, with torch.
needs_torch = pytest.mark.torch


@pytest.fixture(scope="module")
def challenger_artifact(tmp_path_factory: pytest.TempPathFactory, artifacts: dict[str, Path]) -> Path:
    """A sentiment model like the `bert` fixture, initialised differently (another seed), whose classifier bias puts
    the decision boundary amid `TEXTS` (a tiny random model answers nearly one label): half of them get each label,
    with a margin from the boundary, so both versions agree on some texts and not on others."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    root = tmp_path_factory.mktemp("challenger")
    directory = build_tiny_classifier(root / "hf", "bert", SENTIMENT_LABELS, seed=1234)
    model = AutoModelForSequenceClassification.from_pretrained(directory).eval()
    tokenizer = AutoTokenizer.from_pretrained(directory)
    # The boundary is between the champion's most frequent label and another one; the third label never wins.
    mine = SENTIMENT_LABELS.index(Counter(offline_top_labels(artifacts["bert"], TEXTS)).most_common(1)[0][0])
    other, third = (i for i in range(len(SENTIMENT_LABELS)) if i != mine)
    with torch.no_grad():
        logits = model(**tokenizer(TEXTS, padding=True, return_tensors="pt")).logits
        differences = sorted((logits[:, mine] - logits[:, other]).tolist())
        middle = len(differences) // 2
        model.classifier.bias[mine] -= (differences[middle - 1] + differences[middle]) / 2
        scale = min(100.0, 1.0 / max(1e-6, differences[middle] - differences[middle - 1]))
        model.classifier.weight.mul_(scale)
        model.classifier.bias.mul_(scale)
        model.classifier.bias[third] -= 1000.0
    model.save_pretrained(directory)
    return export_local_model(directory, root / "artifact", ExportOptions(quantize=False)).output


def offline_top_labels(artifact: Path, texts: Sequence[str]) -> list[str]:
    """Top-1 labels through raw ONNX Runtime and the artifact's tokenizer, one text at a time (no ortserve code)."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    manifest = json.loads((artifact / MANIFEST_FILE).read_text())
    tokenizer = Tokenizer.from_file(str(artifact / TOKENIZER_FILE))
    tokenizer.enable_truncation(int(manifest["max_length"]))
    tokenizer.no_padding()
    session = ort.InferenceSession(str(artifact / MODEL_FILE), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    labels = manifest["labels"]
    tops = []
    for text in texts:
        encoding = tokenizer.encode(text)
        feeds = {
            "input_ids": np.array([encoding.ids], dtype=np.int64),
            "attention_mask": np.array([encoding.attention_mask], dtype=np.int64),
            "token_type_ids": np.array([encoding.type_ids], dtype=np.int64),
        }
        (logits,) = session.run(None, {k: v for k, v in feeds.items() if k in names})
        tops.append(labels[int(np.argmax(logits[0]))])
    return tops


def get_model(target: str, name: str) -> pb.ModelInfo:
    with grpc.insecure_channel(target) as channel:
        return pb_grpc.InferenceStub(channel).GetModel(pb.GetModelRequest(name=name), timeout=10)


def classify(target: str, model: str, texts: Sequence[str], key: str | None = None) -> pb.ClassifyResponse:
    metadata = [("x-ortserve-canary-key", key)] if key else None
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.InferenceStub(channel)
        return stub.Classify(pb.ClassifyRequest(model=model, texts=list(texts)), timeout=30, metadata=metadata)


def wait_for(condition: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


# --- settings ----------------------------------------------------------------------------------------------------


def test_a_spec_names_its_challenger_and_shares(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORTSERVE_MODEL_TOPIC_CANARY", "0.05")
    settings = ServerSettings(
        models=["sentiment=models:/s@champion?challenger=models:/s@challenger&shadow=0.1", "topic=/a?challenger=/b"]
    )
    sentiment, topic = settings.models
    assert settings.rollout(sentiment) == ("models:/s@challenger", 0.1, 0.0)
    assert settings.rollout(topic) == ("/b", 0.0, 0.05)
    assert settings.batch_limits(sentiment).max_batch_size == 32  # rollout keys are no batcher settings


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("a=/x?shadow=1.5", "shadow='1.5': Input should be less than or equal to 1"),
        ("a=/x?canary=-0.1", "canary='-0.1'"),
        ("a=/x?shadow=0.1", "shadow and canary need a challenger=URI"),
        ("a=/x?challenger=", "challenger=''"),
    ],
)
def test_a_wrong_rollout_setting_is_refused_naming_it(spec: str, message: str) -> None:
    with pytest.raises(ValueError) as refusal:
        ServerSettings(models=[spec])
    assert message in str(refusal.value)


def test_the_challenger_settings_come_from_the_environment_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORTSERVE_MODEL_SENTIMENT_CHALLENGER", "models:/s@challenger")
    monkeypatch.setenv("ORTSERVE_MODEL_SENTIMENT_SHADOW", "1")
    (spec,) = ServerSettings(models=["sentiment=models:/s@champion"]).models
    assert ServerSettings(models=[spec]).rollout(spec) == ("models:/s@challenger", 1.0, 0.0)
    assert ModelSpec.parse("a=/x?challenger=/y").settings == {"challenger": "/y"}


# --- shadow ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shadowed(artifacts: dict[str, Path], challenger_artifact: Path) -> Iterator[RunningServer]:
    with running_server(
        models=[f"sentiment={artifacts['bert']}?challenger={challenger_artifact}&shadow=1"],
        metrics_port=0,
        metrics_host="127.0.0.1",
        http_port=0,
    ) as server:
        yield server


@needs_torch
def test_shadow_counts_equal_an_offline_comparison_through_onnx_runtime(
    shadowed: RunningServer, artifacts: dict[str, Path], challenger_artifact: Path
) -> None:
    before = get_model(shadowed.target, "sentiment")
    for start in range(0, len(TEXTS), 7):  # calls of several texts, as callers send them
        response = classify(shadowed.target, "sentiment", TEXTS[start : start + 7])
        assert response.model_version == before.version  # shadow never answers
    wait_for(lambda: get_model(shadowed.target, "sentiment").challenger.texts_compared >= len(TEXTS))
    info = get_model(shadowed.target, "sentiment").challenger

    champion = offline_top_labels(artifacts["bert"], TEXTS)
    challenger = offline_top_labels(challenger_artifact, TEXTS)
    expected_pairs = Counter(zip(champion, challenger, strict=True))
    assert info.comparing and info.stopped_reason == ""
    assert info.texts_compared == len(TEXTS)
    assert info.agreements == sum(a == b for a, b in zip(champion, challenger, strict=True))
    assert {(p.champion_label, p.challenger_label): p.texts for p in info.label_pairs} == dict(expected_pairs)
    assert 0 < info.agreements < len(TEXTS), "the two versions should disagree on some texts"
    assert info.agreement == pytest.approx(info.agreements / len(TEXTS))
    assert 0 < info.score_delta_mean <= info.score_delta_p99 <= 1
    assert info.champion_latency_p50_s > 0 and info.challenger_latency_p95_s >= info.challenger_latency_p50_s > 0
    assert (info.champion_errors, info.challenger_errors) == (0, 0)
    assert sum(info.shadow_dropped.values()) == 0
    assert info.version and info.version != before.version and info.champion_version == before.version

    metrics = scrape(shadowed)
    flips = {k: v for k, v in expected_pairs.items() if k[0] != k[1]}
    for (a, b), count in flips.items():
        labels = f'{{challenger_label="{b}",champion_label="{a}",model="sentiment"}} {float(count)}'
        assert f"ortserve_challenger_label_pairs_total{labels}" in metrics
        assert f"ortserve_challenger_label_flips_total{labels}" in metrics
    assert f'ortserve_challenger_texts_compared_total{{model="sentiment"}} {float(len(TEXTS))}' in metrics
    assert 'ortserve_shadow_dropped_texts_total{model="sentiment",reason="queue"} 0.0' in metrics


@needs_torch
def test_v2_model_metadata_carries_the_comparison_as_parameters(shadowed: RunningServer) -> None:
    from ortserve.v2 import grpc_predict_v2_pb2 as pb_v2
    from ortserve.v2 import grpc_predict_v2_pb2_grpc as pb_v2_grpc

    classify(shadowed.target, "sentiment", TEXTS[:3])
    wait_for(lambda: get_model(shadowed.target, "sentiment").challenger.texts_compared >= 3)
    info = get_model(shadowed.target, "sentiment").challenger
    with grpc.insecure_channel(shadowed.target) as channel:
        stub = pb_v2_grpc.GRPCInferenceServiceStub(channel)
        metadata = stub.ModelMetadata(pb_v2.ModelMetadataRequest(name="sentiment"), timeout=10)
    parameters = metadata.parameters
    assert parameters["challenger_version"].string_param == info.version
    assert parameters["challenger_comparing"].bool_param is True
    assert parameters["challenger_texts_compared"].int64_param == info.texts_compared
    flips = {f"{p.champion_label}->{p.challenger_label}": p.texts for p in info.label_pairs}
    assert json.loads(parameters["challenger_label_flips"].string_param).items() <= flips.items()

    # The HTTP door reports the same, through the same code: V2 REST metadata `parameters`, and GetModel as JSON.
    assert shadowed.server is not None
    base = f"http://127.0.0.1:{shadowed.server.http_port}"
    with urllib.request.urlopen(f"{base}/v2/models/sentiment", timeout=10) as response:
        rest = json.loads(response.read())["parameters"]
    assert rest["challenger_version"] == info.version and rest["challenger_comparing"] is True
    assert rest["challenger_texts_compared"] >= info.texts_compared
    assert set(rest) == set(parameters)
    request = urllib.request.Request(
        f"{base}/ortserve.v1.Inference/GetModel",
        data=json.dumps({"name": "sentiment"}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        native = json.loads(response.read())["challenger"]
    assert native["version"] == info.version and native["comparing"] is True


@needs_torch
@pytest.mark.slow  # a real Prometheus scraping the server
def test_prometheus_reads_the_flip_matrix(shadowed: RunningServer, tmp_path: Path) -> None:
    from .observability_helpers import prometheus_binary
    from .test_metrics_prometheus import Prometheus

    binary = prometheus_binary("prometheus")
    assert shadowed.server is not None
    (challenger,) = shadowed.server.challengers
    wait_for(lambda: challenger.feeder.pending_texts == 0)  # the earlier tests' shadow work, still gathering
    before = get_model(shadowed.target, "sentiment").challenger.texts_compared
    classify(shadowed.target, "sentiment", TEXTS)
    wait_for(lambda: get_model(shadowed.target, "sentiment").challenger.texts_compared == before + len(TEXTS))
    info = get_model(shadowed.target, "sentiment").challenger
    flips = {
        (p.champion_label, p.challenger_label): float(p.texts)
        for p in info.label_pairs
        if p.champion_label != p.challenger_label
    }
    assert flips, "the two versions should flip some labels"
    assert shadowed.server is not None and shadowed.server.metrics_endpoint is not None
    prometheus = Prometheus(binary, tmp_path, f"127.0.0.1:{shadowed.server.metrics_endpoint.port}")
    query = 'sum by (champion_label, challenger_label) (ortserve_challenger_label_flips_total{model="sentiment"})'
    read: dict[tuple[str, str], float] = {}
    try:
        prometheus.wait_ready()
        deadline = time.monotonic() + 60
        while read != flips and time.monotonic() < deadline:  # scrapes are 1 s apart
            time.sleep(0.5)
            result = prometheus.query(query)
            read = {
                (r["metric"]["champion_label"], r["metric"]["challenger_label"]): float(r["value"][1]) for r in result
            }
    finally:
        prometheus.stop()
    assert read == flips


def scrape(server: RunningServer) -> str:
    assert server.server is not None and server.server.metrics_endpoint is not None
    url = f"http://127.0.0.1:{server.server.metrics_endpoint.port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


@needs_torch
def test_the_cli_reports_the_comparison_as_text_and_json(shadowed: RunningServer) -> None:
    classify(shadowed.target, "sentiment", TEXTS[:5])
    wait_for(lambda: get_model(shadowed.target, "sentiment").challenger.texts_compared >= 5)
    info = get_model(shadowed.target, "sentiment").challenger
    command = [sys.executable, "-m", "ortserve.cli.main", "challenger", "report", "--target", shadowed.target]
    text = subprocess.run([*command, "--model", "sentiment"], capture_output=True, text=True, timeout=60)
    assert text.returncode == 0, text.stderr
    assert "top-1 agreement" in text.stdout and f"challenger version {info.version}" in text.stdout
    as_json = subprocess.run([*command, "--model", "sentiment", "--json"], capture_output=True, text=True, timeout=60)
    report = json.loads(as_json.stdout)
    assert report["texts_compared"] >= info.texts_compared and report["challenger_version"] == info.version
    assert sum(p["texts"] for p in report["label_pairs"]) == report["texts_compared"]
    missing = subprocess.run([*command, "--model", "nope"], capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and "NOT_FOUND" in missing.stderr and "Traceback" not in missing.stderr


@needs_torch
def test_shadow_work_beyond_its_queue_is_dropped_and_counted(
    artifacts: dict[str, Path], challenger_artifact: Path
) -> None:
    with running_server(
        models=[f"sentiment={artifacts['bert']}?challenger={challenger_artifact}&shadow=1"], shadow_queue_texts=4
    ) as server:
        assert server.server is not None
        (challenger,) = server.server.challengers
        # Offered faster than anything can run (on the server's loop, in one step): the oldest beyond 4 texts go.
        rows = classify(server.target, "sentiment", TEXTS[:1])  # a real answer's shape
        assert rows.model_version
        wait_for(lambda: challenger.comparison.report().texts_compared == 1)  # its shadow run, once gathered

        async def offer_many() -> None:
            assert server.server is not None
            served = server.server.table.get("sentiment")
            output = await served.batcher.submit(TEXTS[:16])
            for text, row in zip(TEXTS[:16], output.rows, strict=True):  # 16 calls of one text, in one go
                challenger.after_answer([text], [row], output.version, 0.001)

        server.call(offer_many())
        wait_for(lambda: challenger.feeder.queued_texts == 0)
        assert challenger.feeder.dropped["queue"] == 12
        wait_for(lambda: challenger.comparison.report().texts_compared == 1 + 4)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a thread's own nice value is a Linux feature")
def test_a_shadow_only_challenger_runs_on_a_low_priority_thread_with_one_onnx_runtime_thread(
    artifacts: dict[str, Path], tmp_path: Path
) -> None:
    bert = artifacts["bert"]
    copy = shutil.copytree(bert, tmp_path / "copy")  # a version of its own: the two sides are compared
    with running_server(
        models=[f"quiet={bert}?challenger={copy}&shadow=1", f"canary={bert}?challenger={bert}&shadow=0.5&canary=0.1"]
    ) as server:
        assert server.server is not None
        shadow_only, with_canary = server.server.challengers

        def intra_op_threads(model: ServedModel) -> int:
            assert model.current is not None
            return int(model.current.classifier._session.get_session_options().intra_op_num_threads)

        def own_nice() -> int:
            return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

        assert shadow_only.background is not None and shadow_only.runs is not None
        assert shadow_only.model.current is not None
        assert shadow_only.model.current.classifier.inference_executor is shadow_only.background
        assert shadow_only.background.submit(own_nice).result(timeout=30) == 19
        # Tokenizing and ranking (they hold the GIL) on a thread of their own at the model threads' priority.
        assert shadow_only.model.batcher._executor is shadow_only.runs
        assert shadow_only.runs.submit(own_nice).result(timeout=30) == server.server.settings.model_thread_nice
        assert intra_op_threads(shadow_only.model) == 1
        assert own_nice() == os.getpriority(os.PRIO_PROCESS, 0)  # the rest of the server keeps its priority
        # ONNX Runtime's run itself executes on the low-priority thread: record the thread of each run.
        session = shadow_only.model.current.classifier._session
        run_threads: list[int] = []
        real_run = session.run

        def recording_run(*args: object, **kwargs: object) -> object:
            run_threads.append(threading.get_native_id())
            return real_run(*args, **kwargs)

        session.run = recording_run  # type: ignore[method-assign]
        for _ in range(20):
            classify(server.target, "quiet", ["steady as she goes", "the market fell"])
        deadline = time.monotonic() + 30
        while not run_threads and time.monotonic() < deadline:
            time.sleep(0.05)
        assert run_threads, "no shadow run within 30 s"
        assert all(os.getpriority(os.PRIO_PROCESS, thread) == 19 for thread in set(run_threads))
        # With a canary share the challenger answers callers: it runs like its champion.
        assert with_canary.background is None and with_canary.runs is None
        assert with_canary.model.current is not None and with_canary.model.current.classifier.inference_executor is None
        assert intra_op_threads(with_canary.model) == intra_op_threads(with_canary.champion)
    for pool in (shadow_only.background, shadow_only.runs):  # stopped with the server
        with pytest.raises(RuntimeError):
            pool.submit(own_nice)


# --- canary ------------------------------------------------------------------------------------------------------


@needs_torch
def test_canary_share_is_within_its_binomial_interval_and_a_key_is_sticky(
    artifacts: dict[str, Path], challenger_artifact: Path
) -> None:
    share, calls = 0.3, 400
    with running_server(
        models=[f"sentiment={artifacts['bert']}?challenger={challenger_artifact}&canary={share}"], http_port=0
    ) as server:
        champion = get_model(server.target, "sentiment")
        challenger_version = champion.challenger.version
        answered = [classify(server.target, "sentiment", ["steady"]).model_version for _ in range(calls)]
        assert set(answered) <= {champion.version, challenger_version}
        observed = answered.count(challenger_version)
        # The binomial 99 % interval (normal approximation, z = 2.576) around the configured share.
        half_width = 2.576 * math.sqrt(share * (1 - share) * calls)
        assert abs(observed - share * calls) <= half_width, (observed, share * calls, half_width)

        by_key = {}
        for key in (f"article-{i}" for i in range(40)):
            versions = {classify(server.target, "sentiment", ["steady"], key=key).model_version for _ in range(3)}
            assert len(versions) == 1, f"key {key} got {versions}"
            by_key[key] = versions.pop()
        assert set(by_key.values()) == {champion.version, challenger_version}  # both sides get some keys
        # Over HTTP the key is the header of the same name, and gets the same side as over gRPC.
        assert server.server is not None
        infer = f"http://127.0.0.1:{server.server.http_port}/v2/models/sentiment/infer"
        body = json.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["steady"]}]})
        over_http = 0
        for key in list(by_key)[:10]:
            request = urllib.request.Request(
                infer, data=body.encode(), headers={"Content-Type": "application/json", "x-ortserve-canary-key": key}
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                assert json.loads(response.read())["model_version"] == by_key[key], key
            over_http += by_key[key] == challenger_version
        assert get_model(server.target, "sentiment").challenger.canary_calls == observed + over_http + 3 * sum(
            v == challenger_version for v in by_key.values()
        )


def test_a_challenger_that_cannot_load_leaves_the_champion_serving(artifacts: dict[str, Path], tmp_path: Path) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    # A directory with no model in it (a missing directory stops the start, as it does for a champion).
    broken = tmp_path / "not-an-artifact"
    broken.mkdir()
    with running_server(models=[f"sentiment={artifacts['bert']}?challenger={broken}&shadow=1&canary=0.5"]) as server:
        with grpc.insecure_channel(server.target) as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        champion = get_model(server.target, "sentiment")
        versions = {classify(server.target, "sentiment", ["steady"], key=f"k{i}").model_version for i in range(20)}
        assert versions == {champion.version}  # no canary while the challenger is not loaded
        info = get_model(server.target, "sentiment").challenger
        assert not info.comparing and "not loaded" in info.stopped_reason and info.version == ""
        assert str(tmp_path) not in str(info)  # no path reaches a caller
        # Shadow work offered meanwhile is dropped as inactive, and counted.
        wait_for(lambda: get_model(server.target, "sentiment").challenger.shadow_dropped["inactive"] == 20)
