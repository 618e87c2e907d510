"""Long texts read in windows (`long_text=chunk`): windows, stride, aggregation, the caps, one submission per call
(one version, one deadline, every window counted by admission), and every door."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest

from ortserve.client import AsyncInferenceClient, InferenceClient, InferenceError
from ortserve.client.compat import predict_topic
from ortserve.server.runtime import OnnxClassifier, SessionConfig
from ortserve.server.text_cost import windows_char_budget
from ortserve.server.windows import LongTextPolicy, LongTextRequest, aggregate_scores
from ortserve.v1 import inference_pb2 as pb
from ortserve.v1 import inference_pb2_grpc as pb_grpc
from ortserve.v2 import grpc_predict_v2_pb2 as v2
from ortserve.v2 import grpc_predict_v2_pb2_grpc as v2_grpc

from .helpers import RunningServer, running_server

SENTENCE = "Shares of the regional bank rallied after a strong quarter, while bond yields slipped. "
ARTICLE = SENTENCE * 12
#: The window the tests serve at (tokens, special tokens included), its stride and its cap.
WINDOW, STRIDE, CAP = 16, 4, 8
ORTSERVE = str(Path(sys.executable).parent / "ortserve")


@pytest.fixture(scope="module")
def windowed(artifacts: dict[str, Path]) -> OnnxClassifier:
    """The tiny BERT as the server below serves it: a window of `WINDOW` tokens."""
    return OnnxClassifier.load(artifacts["bert"], SessionConfig(max_length=WINDOW))


@pytest.fixture(scope="module")
def long_server(artifacts: dict[str, Path]) -> Iterator[RunningServer]:
    """`bert` at a 16-token window (truncate by default), `chunked` the same model reading long texts in windows by
    default, and `multi` the multi-label model in windows; with HTTP."""
    window = f"max_length={WINDOW}&chunk_stride={STRIDE}&max_chunks={CAP}"
    with running_server(
        models=[
            f"bert={artifacts['bert']}?{window}",
            f"chunked={artifacts['bert']}?{window}&long_text=chunk&chunk_aggregate=max",
            f"multi={artifacts['multilabel']}?{window}",
            f"pinned={artifacts['bert']}?{window}&max_batch_size=1&concurrent_runs=1",
        ],
        http_port=0,
    ) as running:
        yield running


def http_port(server: RunningServer) -> int:
    assert server.server is not None and server.server.http is not None
    return server.server.http.port


# --- the windows of a text ---------------------------------------------------------------------------------------


def test_a_text_that_fits_one_window_is_its_own_window(windowed: OnnxClassifier) -> None:
    (only,) = windowed.windows(["bank rallied"], CAP, STRIDE)
    assert only.windows == ["bank rallied"] and not only.cut


def test_windows_hold_at_most_a_window_overlap_by_the_stride_and_cover_the_text(windowed: OnnxClassifier) -> None:
    text = SENTENCE * 3
    (split,) = windowed.windows([text], 100, STRIDE)
    assert len(split.windows) > 3 and not split.cut
    tokenizer = windowed._untruncated_tokenizer()
    content = [tokenizer.encode(w, add_special_tokens=False).tokens for w in split.windows]
    assert all(len(tokens) <= windowed.window_capacity for tokens in content)  # a window re-tokenizes within it
    for before, after in zip(content, content[1:], strict=False):  # consecutive windows share tokens (the stride)
        shared = next(n for n in range(min(len(before), len(after)), -1, -1) if before[len(before) - n :] == after[:n])
        assert 1 <= shared <= STRIDE + max(len(t) for t in content)  # at least one token, about the stride
    words = text.split()
    assert split.windows[0].split()[0] == words[0] and split.windows[-1].split()[-1] == words[-1]
    assert all(window.split()[0] in words and window.split()[-1] in words for window in split.windows)  # whole words


def test_max_chunks_caps_the_windows_and_marks_the_text_cut(windowed: OnnxClassifier) -> None:
    (split,) = windowed.windows([ARTICLE], 3, STRIDE)
    assert len(split.windows) == 3 and split.cut


def test_the_cut_before_tokenizing_grows_to_max_chunks_windows_and_no_further(windowed: OnnxClassifier) -> None:
    huge = SENTENCE * 2000  # 170,000 characters
    read: list[int] = []
    real = windowed._untruncated_tokenizer()

    class Counting:
        def encode_batch(self, texts: list[str], add_special_tokens: bool = True) -> Any:
            read.append(sum(map(len, texts)))
            return real.encode_batch(texts, add_special_tokens=add_special_tokens)

    windowed._window_tokenizer = Counting()  # type: ignore[assignment]
    try:
        (split,) = windowed.windows([huge], CAP, STRIDE)
    finally:
        windowed._window_tokenizer = real
    assert len(split.windows) == CAP and split.cut
    assert sum(read) <= windows_char_budget(windowed.window_capacity, CAP, STRIDE) < len(huge)


def test_the_serve_time_max_length_is_checked_against_what_the_model_reads(artifacts: dict[str, Path]) -> None:
    from ortserve.server.errors import ArtifactError

    assert OnnxClassifier.load(artifacts["bert"], SessionConfig(max_length=WINDOW)).manifest.max_length == WINDOW
    with pytest.raises(ArtifactError, match="max_length=4096 is over the 128 tokens"):
        OnnxClassifier.load(artifacts["bert"], SessionConfig(max_length=4096))


def test_long_text_settings_per_model_from_spec_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from ortserve.server.settings import ServerSettings

    monkeypatch.setenv("ORTSERVE_MODEL_TOPIC_LONG_TEXT", "chunk")
    settings = ServerSettings(models=["topic=/m?max_chunks=4&max_length=128", "other=/n"], chunk_aggregate="max")
    topic, other = settings.models
    assert settings.long_text_policy(topic) == LongTextPolicy("chunk", "max", max_chunks=4, stride=16)
    assert settings.long_text_policy(other) == LongTextPolicy("truncate", "max", max_chunks=16, stride=16)
    assert (settings.session_config(topic).max_length, settings.session_config(other).max_length) == (128, 0)
    with pytest.raises(ValueError, match="long_text='everything'"):
        ServerSettings(models=["topic=/m?long_text=everything"])


# --- aggregation and the call's choice ---------------------------------------------------------------------------


def test_mean_and_max_aggregation() -> None:
    rows = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    np.testing.assert_allclose(aggregate_scores(rows, "mean", normalize=True), [0.4, 0.25, 0.35])
    np.testing.assert_allclose(aggregate_scores(rows, "max", normalize=False), [0.7, 0.3, 0.6])
    np.testing.assert_allclose(aggregate_scores(rows, "max", normalize=True), np.array([0.7, 0.3, 0.6]) / 1.6)


def test_a_call_may_ask_fewer_windows_than_the_model_allows_not_more() -> None:
    policy = LongTextPolicy("truncate", "mean", max_chunks=8, stride=4)
    assert policy.resolved(LongTextRequest("chunk", "", 3)) == LongTextPolicy("chunk", "mean", 3, 4)
    assert policy.resolved(LongTextRequest("chunk", "max", 100)).max_chunks == 8
    assert policy.resolved(None) is policy
    from ortserve.server.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="long_text must be one of truncate, chunk"):
        LongTextRequest("all").checked()
    with pytest.raises(InvalidInputError, match="aggregate must be one of mean, max"):
        LongTextRequest("chunk", "median").checked()


# --- through the server ----------------------------------------------------------------------------------------


def _scores(result: pb.Classification) -> dict[str, float]:
    return {score.label: score.score for score in result.labels}


def test_chunk_answers_the_mean_of_its_windows_answers(long_server: RunningServer, windowed: OnnxClassifier) -> None:
    (split,) = windowed.windows([ARTICLE], CAP, STRIDE)
    stub = pb_grpc.InferenceStub(grpc.insecure_channel(long_server.target))
    per_window = stub.Classify(pb.ClassifyRequest(model="bert", texts=split.windows), timeout=30).results
    answer = stub.Classify(pb.ClassifyRequest(model="bert", texts=[ARTICLE], long_text="chunk"), timeout=30)
    (result,) = answer.results
    assert result.windows == len(split.windows) == CAP and result.truncated  # the cap cut the article
    expected = {label: np.mean([_scores(r)[label] for r in per_window]) for label in _scores(per_window[0])}
    assert _scores(result) == pytest.approx(expected, abs=1e-5)
    assert [s.score for s in result.labels] == sorted((s.score for s in result.labels), reverse=True)
    maximum = stub.Classify(
        pb.ClassifyRequest(model="bert", texts=[ARTICLE], long_text="chunk", aggregate="max", max_chunks=2),
        timeout=30,
    ).results[0]
    pooled = {label: max(_scores(r)[label] for r in per_window[:2]) for label in expected}
    total = sum(pooled.values())
    assert maximum.windows == 2 and _scores(maximum) == pytest.approx({k: v / total for k, v in pooled.items()})


def test_truncate_stays_the_default_and_reports_no_windows(long_server: RunningServer) -> None:
    stub = pb_grpc.InferenceStub(grpc.insecure_channel(long_server.target))
    answer = stub.Classify(pb.ClassifyRequest(model="bert", texts=[ARTICLE, "bank rallied"]), timeout=30)
    assert [r.windows for r in answer.results] == [0, 0] and answer.results[0].truncated
    chunked = stub.Classify(pb.ClassifyRequest(model="bert", texts=["bank rallied"], long_text="chunk"), timeout=30)
    assert chunked.results[0].windows == 1 and not chunked.results[0].truncated
    assert _scores(chunked.results[0]) == pytest.approx(_scores(answer.results[1]))  # one window: the same answer


def test_a_model_may_read_long_texts_in_windows_by_default(long_server: RunningServer) -> None:
    stub = pb_grpc.InferenceStub(grpc.insecure_channel(long_server.target))
    default = stub.Classify(pb.ClassifyRequest(model="chunked", texts=[ARTICLE, "  "]), timeout=30)
    assert default.results[0].windows == CAP and default.results[1].windows == 0 and default.results[1].error
    truncated = stub.Classify(pb.ClassifyRequest(model="chunked", texts=[ARTICLE], long_text="truncate"), timeout=30)
    assert truncated.results[0].windows == 0


def test_multi_label_scores_are_not_renormalized(long_server: RunningServer) -> None:
    stub = pb_grpc.InferenceStub(grpc.insecure_channel(long_server.target))
    request = pb.ClassifyRequest(model="multi", texts=[ARTICLE], long_text="chunk", aggregate="max")
    (result,) = stub.Classify(request, timeout=30).results
    assert result.windows == CAP and sum(_scores(result).values()) != pytest.approx(1.0)


def test_a_bad_choice_is_invalid_argument(long_server: RunningServer) -> None:
    stub = pb_grpc.InferenceStub(grpc.insecure_channel(long_server.target))
    with pytest.raises(grpc.RpcError) as failure:
        stub.Classify(pb.ClassifyRequest(model="bert", texts=["x"], long_text="everything"), timeout=30)
    assert failure.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "long_text must be one of truncate, chunk" in (failure.value.details() or "")


def test_every_window_of_a_call_is_one_submission(long_server: RunningServer, windowed: OnnxClassifier) -> None:
    """One `submit` per call: the batcher's admission counts every window as a row, one version answers them all
    (the batcher's guarantee for a call) and the call's deadline covers them all."""
    assert long_server.server is not None
    served = long_server.server.table.get("bert")
    submitted: list[tuple[int, float | None]] = []
    real_submit = served.batcher.submit

    async def spying(texts: Any, deadline: float | None = None, record: Any = None) -> Any:
        submitted.append((len(texts), deadline))
        return await real_submit(texts, deadline, record)

    served.batcher.submit = spying  # type: ignore[method-assign]
    try:
        stub = pb_grpc.InferenceStub(grpc.insecure_channel(long_server.target))
        answer = stub.Classify(
            pb.ClassifyRequest(model="bert", texts=[ARTICLE, SENTENCE * 2, "short"], long_text="chunk"), timeout=30
        )
    finally:
        del served.batcher.submit
    windows = [r.windows for r in answer.results]
    assert len(submitted) == 1 and submitted[0][0] == sum(windows) and windows[0] == CAP and windows[2] == 1
    assert submitted[0][1] is not None  # the caller's deadline
    assert answer.model_version == served.current.version  # type: ignore[union-attr]


def test_the_windows_of_a_call_are_answered_by_one_version_across_a_swap(long_server: RunningServer) -> None:
    """One window per run: a version swapped in after the first window ran does not answer the call's other
    windows; the next call gets it."""
    assert long_server.server is not None
    service, served = long_server.server.service, long_server.server.table.get("pinned")
    first = served.current
    assert first is not None

    async def scenario() -> tuple[str, bool, str]:
        runs = served.statistics.snapshot().runs
        call = asyncio.ensure_future(service.classify("pinned", [ARTICLE], long_text=LongTextRequest("chunk")))
        while served.statistics.snapshot().runs == runs:  # until the first window has run
            await asyncio.sleep(0.001)
        served.serve(dataclasses.replace(first, version="swapped"))
        pending = not call.done()
        answer = await call
        after = await service.classify("pinned", ["short"])
        return answer.model_version, pending and answer.windows == [CAP], after.model_version

    try:
        version, pinned_across_runs, after = long_server.call(scenario())
    finally:
        long_server.call(_serve(served, first))
    assert pinned_across_runs and version == first.version and after == "swapped"


async def _serve(served: Any, loaded: Any) -> None:
    served.serve(loaded)


def test_admission_counts_every_window(artifacts: dict[str, Path]) -> None:
    """With a call waiting in the queue (a long batch delay keeps it there), an article of more windows than the
    queue has room for is refused at once, while the same article truncated (one row) is admitted."""
    model = f"bert={artifacts['bert']}?max_length={WINDOW}&max_chunks={CAP}&max_queue_texts=6&max_batch_delay_ms=1500"
    with running_server(models=[model]) as server:

        async def scenario() -> tuple[str, int]:
            service = server.server.service  # type: ignore[union-attr]
            waiting = asyncio.ensure_future(service.classify("bert", ["short"]))
            await asyncio.sleep(0.1)  # queued behind the batch delay
            try:
                await service.classify("bert", [ARTICLE], long_text=LongTextRequest("chunk"))
                refused = ""
            except Exception as exc:  # OverloadedError, RESOURCE_EXHAUSTED to callers
                refused = f"{type(exc).__name__}: {exc}"
            truncated = await service.classify("bert", [ARTICLE])
            await waiting
            return refused, len(truncated.results)

        refused, answered = server.call(scenario())
    assert refused.startswith("OverloadedError") and "max_queue_texts=6" in refused
    assert answered == 1


# --- every door ----------------------------------------------------------------------------------------------------


def test_v2_grpc_parameters_and_windows_output(long_server: RunningServer) -> None:
    stub = v2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(long_server.target))
    request = v2.ModelInferRequest(model_name="bert")
    request.inputs.add(name="text", datatype="BYTES", shape=[2]).contents.bytes_contents.extend(
        [ARTICLE.encode(), b"short"]
    )
    request.parameters["long_text"].string_param = "chunk"
    request.parameters["max_chunks"].int64_param = 3
    request.outputs.add(name="windows")
    request.outputs.add(name="truncated")
    response = stub.ModelInfer(request, timeout=30)
    outputs = {o.name: o for o in response.outputs}
    assert list(outputs["windows"].contents.int_contents) == [3, 1]
    assert list(outputs["truncated"].contents.bool_contents) == [True, False]
    request.raw_input_contents.append(struct.pack("<I", 5) + b"short")
    request.inputs[0].ClearField("contents")
    request.inputs[0].shape[:] = [1]
    raw = stub.ModelInfer(request, timeout=30)
    assert np.frombuffer(raw.raw_output_contents[0], "<i4").tolist() == [1]
    request.parameters["long_text"].int64_param = 1
    with pytest.raises(grpc.RpcError) as failure:
        stub.ModelInfer(request, timeout=30)
    assert failure.value.code() is grpc.StatusCode.INVALID_ARGUMENT


def test_http_v2_and_native_routes(long_server: RunningServer) -> None:
    with httpx.Client(base_url=f"http://127.0.0.1:{http_port(long_server)}", timeout=30) as http:
        body = {
            "inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [ARTICLE]}],
            "parameters": {"long_text": "chunk", "aggregate": "max", "max_chunks": 2},
            "outputs": [{"name": "windows"}, {"name": "top_labels"}],
        }
        answer = http.post("/v2/models/bert/infer", json=body)
        assert answer.status_code == 200, answer.text
        assert answer.json()["outputs"][0] == {"name": "windows", "datatype": "INT32", "shape": [1], "data": [2]}
        body["parameters"] = {"long_text": "paragraphs"}
        refused = http.post("/v2/models/bert/infer", json=body)
        assert refused.status_code == 400 and "long_text must be one of" in refused.text
        native = http.post(
            "/ortserve.v1.Inference/Classify", json={"model": "bert", "texts": [ARTICLE], "longText": "chunk"}
        )
        assert native.status_code == 200 and native.json()["results"][0]["windows"] == CAP
        mlflow = http.post(
            "/models/bert/invocations", json={"inputs": [ARTICLE, "short"], "params": {"long_text": "chunk"}}
        )
        assert mlflow.status_code == 200, mlflow.text
        assert [p["windows"] for p in mlflow.json()["predictions"]] == [CAP, 1]
        plain = http.post("/models/bert/invocations", json={"inputs": [ARTICLE]}).json()["predictions"][0]
        assert set(plain) == {"label", "score"}


def test_python_clients_and_compat(long_server: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:
    with InferenceClient(long_server.target) as client:
        results = client.classify("bert", [ARTICLE, "short"], long_text="chunk", max_chunks=4)
        assert [r.windows for r in results] == [4, 1] and results[0].truncated
        assert client.classify("bert", [ARTICLE])[0].windows == 0
        with pytest.raises(ValueError, match="long_text must be one of truncate, chunk"):
            client.classify("bert", [ARTICLE], long_text="all")

    async def asynchronous() -> list[int]:
        async with AsyncInferenceClient(long_server.target) as client:
            return [r.windows for r in await client.classify("bert", [ARTICLE], long_text="chunk", aggregate="max")]

    assert asyncio.run(asynchronous()) == [CAP]
    monkeypatch.setenv("ORTSERVE_TARGET", long_server.target)
    monkeypatch.setenv("ORTSERVE_TOPIC_MODEL", "bert")
    assert predict_topic(ARTICLE, long_text="chunk")["windows"] == CAP
    assert "windows" not in predict_topic(ARTICLE)


def test_many_long_texts_go_out_in_requests_of_few_texts(long_server: RunningServer) -> None:
    with InferenceClient(long_server.target, chunk_size=128) as client:
        results = client.classify("bert", [ARTICLE] * 40, long_text="chunk")
    assert [r.windows for r in results] == [CAP] * 40


def test_cli_predict_long_text(long_server: RunningServer) -> None:
    run = subprocess.run(
        [ORTSERVE, "predict", "--target", long_server.target, "--model", "bert", "--long-text", "chunk", ARTICLE],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ),
    )
    assert run.returncode == 0, run.stderr
    line = json.loads(run.stdout)
    assert line["windows"] == CAP and line["truncated"] is True
    bad = subprocess.run(
        [ORTSERVE, "predict", "--target", long_server.target, "--model", "bert", "--long-text", "all", "x"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "--long-text" in bad.stderr and "Traceback" not in bad.stderr


def test_spark_batch_function_reads_windows(long_server: RunningServer) -> None:
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyspark", reason="the [spark] extra is not installed")
    from ortserve.client.spark import classify_series, classify_udf

    with InferenceClient(long_server.target) as client:
        frame = classify_series(
            client, "bert", pd.Series([ARTICLE, None, "short"]), 1, False, long_text="chunk", aggregate="mean"
        )
    assert frame["windows"].tolist() == [CAP, None, 1]
    with pytest.raises(ValueError, match="aggregate must be one of mean, max"):
        classify_udf("bert", long_text="chunk", aggregate="median")


def test_client_refuses_a_bad_server_answer_not_the_choice(long_server: RunningServer) -> None:
    with InferenceClient(long_server.target) as client, pytest.raises(InferenceError) as failure:
        client.classify("nope", [ARTICLE], long_text="chunk")
    assert failure.value.code is grpc.StatusCode.NOT_FOUND
