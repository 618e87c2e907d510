"""No text is a poison pill: a text over `max_text_chars` is cut and marked, a text with nothing to classify is
answered on its own with an error, and neither fails the other texts of its call (ortserve.v1, V2 and
`ortserve predict`). What refuses a call is the size of the whole request (`max_request_chars`)."""

from __future__ import annotations

import json
import os
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from ortserve.client import InferenceClient
from ortserve.server.runtime import cut_text
from ortserve.v1 import inference_pb2 as pb
from ortserve.v1 import inference_pb2_grpc as pb_grpc
from ortserve.v2 import grpc_predict_v2_pb2 as v2
from ortserve.v2 import grpc_predict_v2_pb2_grpc as v2_grpc

from .helpers import ORTSERVE, RunningServer, running_server

MAX_TEXT_CHARS = 500
MAX_REQUEST_CHARS = 3000
ZERO_WIDTH = "\u200b\u200d\ufeff"
LONG = "markets rallied on the news " * 40  # 1,120 characters: over MAX_TEXT_CHARS


@pytest.fixture(scope="module")
def strict_server(artifacts: dict[str, Path]) -> Iterator[RunningServer]:
    with running_server(
        models=[f"bert={artifacts['bert']}"], max_text_chars=MAX_TEXT_CHARS, max_request_chars=MAX_REQUEST_CHARS
    ) as running:
        yield running


def test_a_long_text_is_cut_and_marked_and_an_empty_one_answered_alone(strict_server: RunningServer) -> None:
    with grpc.insecure_channel(strict_server.target) as channel:
        response = pb_grpc.InferenceStub(channel).Classify(
            pb.ClassifyRequest(model="bert", texts=["fine", LONG, ZERO_WIDTH, "also fine"]), timeout=10
        )
    fine, long, empty, also = response.results
    assert [r.truncated for r in response.results] == [False, True, False, False]
    assert fine.labels and long.labels and also.labels and not (fine.error or long.error or also.error)
    assert not empty.labels and "no visible character" in empty.error
    with InferenceClient(strict_server.target) as client:
        (alone,) = client.classify("bert", [cut_text(LONG, MAX_TEXT_CHARS)])  # what was read: the text's beginning
        results = client.classify("bert", ["fine", LONG, ZERO_WIDTH])
    assert [s.label for s in results[1].labels] == [s.label for s in alone.labels]
    np.testing.assert_allclose([s.score for s in results[1].labels], [s.score for s in alone.labels], atol=1e-5)
    assert results[1].truncated and not results[0].truncated
    assert not results[2].ok and results[2].labels == ()
    with pytest.raises(ValueError, match="no visible character"):
        _ = results[2].top


def test_only_the_size_of_the_whole_request_refuses_a_call(strict_server: RunningServer) -> None:
    with grpc.insecure_channel(strict_server.target) as channel, pytest.raises(grpc.RpcError) as caught:
        pb_grpc.InferenceStub(channel).Classify(pb.ClassifyRequest(model="bert", texts=[LONG] * 3), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"max_request_chars={MAX_REQUEST_CHARS}" in caught.value.details()


def test_v2_reports_the_marks_per_text(strict_server: RunningServer) -> None:
    texts = [b"fine", LONG.encode(), ZERO_WIDTH.encode()]
    request = v2.ModelInferRequest(model_name="bert")
    request.inputs.add(name="text", datatype="BYTES", shape=[len(texts)])
    request.raw_input_contents.append(b"".join(struct.pack("<I", len(t)) + t for t in texts))
    with grpc.insecure_channel(strict_server.target) as channel:
        response = v2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=10)
    index = {output.name: i for i, output in enumerate(response.outputs)}
    truncated = np.frombuffer(response.raw_output_contents[index["truncated"]], np.bool_)
    assert truncated.tolist() == [False, True, False]
    probabilities = np.frombuffer(response.raw_output_contents[index["probabilities"]], "<f4").reshape(3, -1)
    np.testing.assert_allclose(probabilities[:2].sum(axis=1), 1.0, atol=1e-5)
    assert (probabilities[2] == 0).all()
    errors_raw = response.raw_output_contents[index["errors"]]
    errors, offset = [], 0
    while offset < len(errors_raw):
        (length,) = struct.unpack_from("<I", errors_raw, offset)
        errors.append(errors_raw[offset + 4 : offset + 4 + length].decode())
        offset += 4 + length
    assert errors[:2] == ["", ""] and "no visible character" in errors[2]


def test_predict_reports_each_line_and_goes_on(strict_server: RunningServer) -> None:
    huge = "rain " * 700  # 3,500 characters: over the request limit even alone
    lines = ["first line", ZERO_WIDTH, LONG, huge, "last line"]
    run = subprocess.run(
        [ORTSERVE, "predict", "--model", "bert", "--target", strict_server.target],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ},
    )
    assert run.returncode == 1, run.stderr
    out = [json.loads(line) for line in run.stdout.splitlines()]
    assert [o["text"] for o in out] == lines
    assert [bool(o.get("labels")) for o in out] == [True, False, True, False, True]
    assert "no visible character" in out[1]["error"] and "max_request_chars" in out[3]["error"]
    assert out[2]["truncated"] is True and "truncated" not in out[0]
    assert "2 text(s) not classified" in run.stderr and "Traceback" not in run.stderr


def test_a_text_longer_than_the_model_reads_is_marked_truncated(strict_server: RunningServer) -> None:
    over_tokens = "a " * 200  # 400 characters, under max_text_chars, but 200 tokens: over the model's 128
    with InferenceClient(strict_server.target) as client:
        info = client.get_model("bert")
        short, long, exact = client.classify("bert", ["a " * 20, over_tokens, "a " * (info.max_length - 2)])
    assert info.max_length == 128 and len(over_tokens) < MAX_TEXT_CHARS
    assert (short.truncated, long.truncated, exact.truncated) == (False, True, False)
    assert long.labels and not long.error
