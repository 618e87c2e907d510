"""Champion and challenger from a real `mlflow server`: both aliases followed, the comparison stopping and starting
over as either side moves, and the write-back of the comparison as tags on the challenger's model version."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from pathlib import Path

import pytest

from .helpers import running_server
from .mlflow_server import MlflowServer
from .registry_helpers import register_artifact
from .test_challenger import TEXTS, classify, get_model, offline_top_labels, wait_for
from .test_challenger import challenger_artifact as challenger_artifact_fixture

#: The differently initialised sentiment version of test_challenger.py, as a fixture of this module too.
challenger = challenger_artifact_fixture

POLL = 0.5

pytestmark = [pytest.mark.torch, pytest.mark.registry]  # the challenger is exported with torch; MLflow registries


def test_both_aliases_are_followed_and_the_comparison_is_written_back(
    mlflow_server: MlflowServer, artifacts: dict[str, Path], challenger: Path, tmp_path: Path
) -> None:
    import mlflow

    registry = mlflow_server.tracking_uri
    name = f"sentiment-{uuid.uuid4().hex[:8]}"
    v1 = register_artifact(registry, name, artifacts["bert"], alias="champion")
    v2 = register_artifact(registry, name, challenger, alias="challenger")
    v3 = register_artifact(registry, name, artifacts["distilbert"])
    client = mlflow.MlflowClient(registry)
    spec = f"sentiment=models:/{name}@champion?challenger=models:/{name}@challenger&shadow=1"
    with running_server(
        models=[spec],
        tracking_uri=registry,
        cache_dir=tmp_path / "cache",
        poll_interval=POLL,
        challenger_report_interval_s=0.5,
    ) as server:
        target = server.target
        classify(target, "sentiment", TEXTS[:20])
        wait_for(lambda: get_model(target, "sentiment").challenger.texts_compared == 20)
        info = get_model(target, "sentiment").challenger
        assert (info.champion_version, info.version, info.comparing) == (v1, v2, True)
        # Exact: the counts are those of the same texts through raw ONNX Runtime, version by version.
        champion_labels = offline_top_labels(artifacts["bert"], TEXTS[:20])
        challenger_labels = offline_top_labels(challenger, TEXTS[:20])
        pairs = Counter(zip(champion_labels, challenger_labels, strict=True))
        assert {(p.champion_label, p.challenger_label): p.texts for p in info.label_pairs} == dict(pairs)
        assert info.agreements == sum(n for (a, b), n in pairs.items() if a == b)

        def tags(version: str) -> dict[str, str]:
            return dict(client.get_model_version(name, version).tags)

        wait_for(lambda: tags(v2).get("ortserve.challenger.texts_compared") == "20", timeout=30)
        written = tags(v2)
        assert written["ortserve.challenger.champion_version"] == v1
        assert written["ortserve.challenger.agreements"] == str(info.agreements)
        assert float(written["ortserve.challenger.agreement"]) == pytest.approx(info.agreement, abs=1e-6)
        flips = {
            f"{p.champion_label}->{p.challenger_label}": p.texts
            for p in info.label_pairs
            if p.champion_label != p.challenger_label
        }
        assert json.loads(written["ortserve.challenger.label_flips"]) == flips
        assert not any(text in value for value in written.values() for text in TEXTS)  # no text is stored

        # The challenger alias moves: the new version is swapped in and the comparison starts over.
        client.set_registered_model_alias(name, "challenger", v3)
        wait_for(lambda: get_model(target, "sentiment").challenger.version == v3)
        assert get_model(target, "sentiment").challenger.texts_compared == 0
        classify(target, "sentiment", TEXTS[:5])
        wait_for(lambda: get_model(target, "sentiment").challenger.texts_compared == 5)

        # The champion alias moves: the comparison is of the new pair.
        client.set_registered_model_alias(name, "champion", v2)
        wait_for(lambda: get_model(target, "sentiment").version == v2)
        classify(target, "sentiment", TEXTS[:3])
        wait_for(lambda: get_model(target, "sentiment").challenger.champion_version == v2)
        wait_for(lambda: get_model(target, "sentiment").challenger.texts_compared == 3)

        # The challenger points at the champion's version: nothing is compared.
        client.set_registered_model_alias(name, "challenger", v2)
        wait_for(lambda: not get_model(target, "sentiment").challenger.comparing)
        assert "champion's" in get_model(target, "sentiment").challenger.stopped_reason

        # The challenger alias is removed: nothing is compared, the champion answers every call.
        client.set_registered_model_alias(name, "challenger", v3)
        wait_for(lambda: get_model(target, "sentiment").challenger.comparing)
        client.delete_registered_model_alias(name, "challenger")
        wait_for(lambda: not get_model(target, "sentiment").challenger.comparing)
        assert "does not resolve" in get_model(target, "sentiment").challenger.stopped_reason
        assert classify(target, "sentiment", TEXTS[:2]).model_version == v2


def test_the_write_back_to_a_sqlite_registry_goes_through_the_registry_worker(
    artifacts: dict[str, Path], tmp_path: Path
) -> None:
    import mlflow

    from ortserve.server.challenger import TAG_PREFIX
    from ortserve.server.sources.registry_source import RegistrySource

    registry = f"sqlite:///{tmp_path / 'mlflow.db'}"
    version = register_artifact(registry, "sentiment", artifacts["bert"], alias="challenger")
    source = RegistrySource("models:/sentiment@challenger", tmp_path / "cache", tracking_uri=registry)
    assert source.rest is None  # not an http registry: the MLflow client runs in a child
    source.set_version_tags(version, {f"{TAG_PREFIX}texts_compared": "7", f"{TAG_PREFIX}agreement": "0.5"})
    tags = mlflow.MlflowClient(registry).get_model_version("sentiment", version).tags
    assert (tags[f"{TAG_PREFIX}texts_compared"], tags[f"{TAG_PREFIX}agreement"]) == ("7", "0.5")
