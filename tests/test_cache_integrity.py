"""A cache that proves what it serves (issue 9): every file of a cached version is checked against the sha256 of its
completeness marker (and the digests export recorded) before it is loaded; what fails is moved aside, logged and
fetched again; scratch directories of killed downloads are removed at start. Real `mlflow server`, real sessions."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from ortserve.client import InferenceClient

from .helpers import running_server
from .mlflow_server import MlflowServer
from .registry_helpers import register_artifact

TEXTS = ["Shares rallied after a strong quarter.", "Rain all weekend.", "The home team won."]
CORRUPT = 4096


@pytest.fixture
def registered(mlflow_server: MlflowServer, artifacts: dict[str, Path]) -> tuple[str, str]:
    """A fresh registered model (alias production -> version 1): (tracking URI, name)."""
    name = f"integrity-{uuid.uuid4().hex[:8]}"
    register_artifact(mlflow_server.tracking_uri, name, artifacts["bert"], alias="production")
    return mlflow_server.tracking_uri, name


def serve_once(registry: str, name: str, cache: Path) -> tuple[list[list[tuple[str, float]]], str, str]:
    """Start a server on the cache, classify TEXTS, stop; return (scores, version, state)."""
    with running_server(
        models=[f"m=models:/{name}@production"], tracking_uri=registry, cache_dir=cache, poll_interval=0
    ) as server:
        with InferenceClient(server.target) as client:
            info = client.get_model("m")
            results = client.classify("m", TEXTS) if info.state == "serving" else []
    scores = [[(s.label, s.score) for s in result.labels] for result in results]
    return scores, info.version, info.state


def overwrite(path: Path, offset: int, size: int = CORRUPT) -> None:
    """Overwrite `size` bytes at `offset` with other bytes; the file keeps its size (what a size check misses)."""
    with path.open("r+b") as handle:
        handle.seek(offset)
        original = handle.read(size)
        handle.seek(offset)
        handle.write(bytes((b + 1) % 256 for b in original))
    assert path.stat().st_size > offset + size


@pytest.mark.parametrize("where", ["weights", "header"])
def test_corrupted_cached_model_is_moved_aside_and_fetched_again(
    registered: tuple[str, str], tmp_path: Path, where: str, caplog: pytest.LogCaptureFixture
) -> None:
    registry, name = registered
    cache = tmp_path / "cache"
    original, version, _ = serve_once(registry, name, cache)
    cached = cache / name / version / "model.onnx"
    size = cached.stat().st_size
    overwrite(cached, 0 if where == "header" else size // 2)

    caplog.set_level(logging.WARNING)
    scores, again, state = serve_once(registry, name, cache)

    assert (state, again) == ("serving", version)  # not FAILED: the corrupt entry was fetched again
    assert scores == original  # the served scores are those of the registered model, not of the corrupt bytes
    moved = [p for p in (cache / name).iterdir() if p.name.startswith(".corrupt-")]
    assert len(moved) == 1 and (moved[0] / "model.onnx").stat().st_size == size  # kept for inspection
    assert "failed verification" in caplog.text and "moved aside" in caplog.text


def test_scratch_directory_of_a_killed_download_is_removed_at_start(
    registered: tuple[str, str], tmp_path: Path
) -> None:
    registry, name = registered
    cache = tmp_path / "cache"
    model_dir = cache / name
    # A process that dies by SIGKILL in the middle of a download: its scratch directory stays behind.
    killed = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    killed.kill()
    killed.wait()
    scratch = model_dir / f".partial-1-{killed.pid}-k1ll3d"
    (scratch / "download").mkdir(parents=True)
    (scratch / "download" / "model.onnx").write_bytes(os.urandom(1000))
    legacy = model_dir / ".1.h4lfw4y"  # what earlier releases left: `.<version>.<random>`
    (legacy / "artifact").mkdir(parents=True)

    _, version, state = serve_once(registry, name, cache)

    assert (state, version) == ("serving", "1")
    assert not scratch.exists() and not legacy.exists()
    assert sorted(p.name for p in model_dir.iterdir()) == ["1", "resolved"]


def test_an_unusable_cache_fails_the_model_without_naming_its_path(registered: tuple[str, str], tmp_path: Path) -> None:
    registry, name = registered
    cache = tmp_path / "not-a-directory"
    cache.write_text("a file where the cache should be")
    with running_server(
        models=[f"m=models:/{name}@production"], tracking_uri=registry, cache_dir=cache, poll_interval=0
    ) as server:
        with InferenceClient(server.target) as client:
            info = client.get_model("m")
    assert info.state == "failed" and "the cache cannot be used" in info.last_error
    assert str(tmp_path) not in info.last_error


def test_entries_moved_aside_are_bounded_to_the_newest_few(tmp_path: Path) -> None:
    from ortserve.contract.cache import KEEP_QUARANTINED, quarantine

    model_dir = tmp_path / "topic"
    moved = []
    for attempt in range(KEEP_QUARANTINED + 4):  # a cache that keeps failing verification
        entry = model_dir / "1"
        entry.mkdir(parents=True)
        (entry / "model.onnx").write_bytes(b"x" * 1024)
        (entry / "attempt").write_text(str(attempt))
        moved.append(quarantine(entry))
    kept = sorted(p for p in model_dir.iterdir() if p.name.startswith(".corrupt-"))
    assert 1 <= KEEP_QUARANTINED <= 5
    assert kept == sorted(moved[-KEEP_QUARANTINED:])  # the newest, for inspection; the older ones are gone
    assert {(p / "attempt").read_text() for p in kept} == {str(n) for n in range(4, KEEP_QUARANTINED + 4)}
