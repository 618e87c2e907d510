"""Issue 25: memory taken by a burst of long texts goes back to the system once it is over (`arena_shrink_width`).

Each case runs in its own process (an arena, once grown, stays with its process) and reads its resident memory
before and after bursts of 16 texts at the model's 512-token limit, on a model wide enough to need a large arena.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fixtures.tiny_models import TOPIC_LABELS, build_tiny_classifier
from ortserve.export.pipeline import ExportOptions, export_local_model
from ortserve.server.memory import ArenaShrinkAfterBursts

MEASURE = """
import json, sys, time
from ortserve.server.memory import ARENA_SHRINK_IDLE_S
from ortserve.server.model_table import calibration_text
from ortserve.server.runtime import OnnxClassifier, SessionConfig

def rss_mb():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024

classifier = OnnxClassifier.load(sys.argv[1], SessionConfig(arena_shrink_width=int(sys.argv[2])))
short = classifier.tokenize([calibration_text(classifier, 16)])
classifier.run(short)
idle = rss_mb()
wide = classifier.tokenize([calibration_text(classifier, 512)] * 16)
for _ in range(3):
    classifier.run(wide)
during_burst = rss_mb()  # runs back to back keep their memory: the next would fault it in again
time.sleep(ARENA_SHRINK_IDLE_S + 1.5)  # the burst is over: the arena gives its memory back
classifier.run(short)  # a narrow run afterwards must not grow it back
print(json.dumps({"idle": idle, "after": rss_mb(), "during_burst": during_burst, "width": max(wide.lengths)}))
"""


@pytest.fixture(scope="module")
def wide_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("arena")
    source = build_tiny_classifier(
        root / "hf", "bert", TOPIC_LABELS, hidden_size=256, layers=4, max_position_embeddings=512, seed=5
    )
    return export_local_model(source, root / "artifact", ExportOptions(quantize=False)).output


def _growth_mb(model: Path, shrink_width: int) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, str(model), str(shrink_width)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.torch
def test_a_burst_of_long_texts_gives_its_memory_back(wide_model: Path) -> None:
    kept = _growth_mb(wide_model, shrink_width=0)
    shrunk = _growth_mb(wide_model, shrink_width=256)
    assert kept["width"] == shrunk["width"] == 512
    kept_growth = kept["after"] - kept["idle"]
    shrunk_growth = shrunk["after"] - shrunk["idle"]
    # Without shrinkage the arena keeps what the widest run took (417 MB here, 0.3 MB with it); with it, little is left
    # once the burst is over, and all of it while the burst goes on.
    assert kept_growth > 60, kept
    assert shrunk_growth < kept_growth / 3, (shrunk, kept)
    assert shrunk["during_burst"] - shrunk["idle"] > 60, shrunk


class _Recorder:
    def __init__(self) -> None:
        self.shrinks: list[float] = []

    def __call__(self) -> None:
        self.shrinks.append(time.monotonic())


def _wait_for(shrink: _Recorder, count: int) -> None:
    deadline = time.monotonic() + 30  # generous: a bound for "it happens", not a timing claim
    while len(shrink.shrinks) < count and time.monotonic() < deadline:
        time.sleep(0.05)


def test_a_burst_keeps_its_arena_until_it_is_over_then_shrinks_once() -> None:
    shrink = _Recorder()
    bursts = ArenaShrinkAfterBursts(shrink, idle_s=0.2)
    for _ in range(6):  # wide runs 0.1 s apart, closer than the idle time: one burst
        bursts.wide_run_started()
        bursts.wide_run_ended()
        time.sleep(0.1)
    assert shrink.shrinks == []
    ended = time.monotonic()
    _wait_for(shrink, 1)
    assert len(shrink.shrinks) == 1 and shrink.shrinks[0] - ended >= 0.1
    time.sleep(0.5)
    assert len(shrink.shrinks) == 1  # once per burst


def test_no_shrink_while_a_wide_run_is_in_progress() -> None:
    shrink = _Recorder()
    bursts = ArenaShrinkAfterBursts(shrink, idle_s=0.1)
    bursts.wide_run_started()
    bursts.wide_run_ended()
    bursts.wide_run_started()  # a long run begins before the burst was over
    time.sleep(0.4)
    assert shrink.shrinks == []
    bursts.wide_run_ended()
    _wait_for(shrink, 1)
    assert len(shrink.shrinks) == 1
