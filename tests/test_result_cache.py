"""The result cache: bounded by bytes, least recently used out first, and never an answer of a version that no
longer serves."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import grpc
import pytest

from ortserve.server.model_table import LoadedVersion
from ortserve.server.result_cache import ENTRY_OVERHEAD_BYTES, ResultCache
from ortserve.server.runtime import OnnxClassifier
from ortserve.server.types import LabelScore
from ortserve.v1 import inference_pb2 as pb
from ortserve.v1 import inference_pb2_grpc as pb_grpc

from .helpers import running_server


def _row(score: float) -> list[LabelScore]:
    return [LabelScore("a", score), LabelScore("b", 1 - score)]


def test_lookup_finds_only_the_same_model_version_and_text() -> None:
    cache = ResultCache(1 << 20)
    cache.store("m", "1", ["x", "y"], [_row(0.9), _row(0.2)])
    assert cache.lookup("m", "1", ["y", "x", "z"]) == [_row(0.2), _row(0.9), None]
    assert cache.lookup("m", "2", ["x"]) == [None]
    assert cache.lookup("other", "1", ["x"]) == [None]
    assert (cache.hits, cache.misses) == (2, 3)


def test_size_bound_evicts_least_recently_used() -> None:
    one_entry = ENTRY_OVERHEAD_BYTES + 200
    cache = ResultCache(2 * one_entry)
    cache.store("m", "1", ["first", "second"], [_row(0.1), _row(0.2)])
    cache.lookup("m", "1", ["first"])  # now "second" is the least recently used
    cache.store("m", "1", ["third"], [_row(0.3)])
    assert cache.lookup("m", "1", ["first", "second", "third"]) == [_row(0.1), None, _row(0.3)]
    assert 0 < cache.size_bytes <= cache.max_bytes


def test_disabled_cache_keeps_nothing() -> None:
    cache = ResultCache(0)
    cache.store("m", "1", ["x"], [_row(0.5)])
    assert len(cache) == 0 and cache.lookup("m", "1", ["x"]) == [None]


def test_served_answers_come_from_the_cache_and_never_from_an_old_version(artifacts: dict[str, Path]) -> None:
    with running_server(models=[f"bert={artifacts['bert']}"], result_cache_bytes=1 << 20) as running:
        assert running.server is not None
        cache = running.server.service.cache
        with grpc.insecure_channel(running.target) as channel:
            stub = pb_grpc.InferenceStub(channel)
            texts = ["markets rallied", "markets rallied", "rain all week"]
            first = stub.Classify(pb.ClassifyRequest(model="bert", texts=texts))
            assert (cache.hits, cache.misses, len(cache)) == (0, 3, 2)  # the repeat within the call ran once
            again = stub.Classify(pb.ClassifyRequest(model="bert", texts=["rain all week", "markets rallied"]))
            assert (cache.hits, len(cache)) == (2, 2)
            assert again.results[0] == first.results[2] and again.results[1] == first.results[0]
            assert first.results[0] == first.results[1]

            # Swap in another version (other weights, same labels): the cached answers of version 1 must not serve.
            served = running.server.table.get("bert")
            old_version = served.current.version if served.current else ""
            other_weights = OnnxClassifier.load(artifacts["distilbert"])
            served.current = LoadedVersion("2", other_weights, datetime.now(timezone.utc))
            swapped = stub.Classify(pb.ClassifyRequest(model="bert", texts=["markets rallied"]))
            assert swapped.model_version == "2" != old_version
            assert swapped.results[0] != first.results[0]
            direct = OnnxClassifier.load(artifacts["distilbert"]).probabilities(["markets rallied"])[0]
            scores = {s.label: s.score for s in swapped.results[0].labels}
            labels = OnnxClassifier.load(artifacts["distilbert"]).labels
            assert [scores[label] for label in labels] == pytest.approx(direct.tolist(), abs=1e-6)
