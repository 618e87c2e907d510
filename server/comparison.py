"""The champion/challenger comparison of one model: how two versions agree on the same texts, kept as counts.

Fed by `challenger.ShadowFeeder` with each shadowed text's ranked rows from both versions (never the text: nothing
here holds or logs one) and with the latency of each version on the same texts. Counts are exact (every compared
text counts once); the score deltas and latencies keep a window of the last `WINDOW` values for their percentiles
(their mean is over every text). A comparison is of one pair of versions: when either side swaps to another version,
it starts over (`observe_versions`).
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from collections.abc import Sequence

import numpy as np

from .types import ChallengerDescription, Classification, ComparisonReport

__all__ = ["CHALLENGER", "CHAMPION", "ROLES", "ChallengerDescription", "Comparison", "ComparisonReport"]

#: Most recent values kept per distribution (score deltas, latencies) for the percentiles.
WINDOW = 10_000

#: The two sides of a comparison, as metric labels and report keys.
CHAMPION, CHALLENGER = "champion", "challenger"
ROLES = (CHAMPION, CHALLENGER)


class Comparison:
    """Running counts of one champion/challenger pair. Written on the event loop, read by metric scrapes from
    another thread: a lock guards both (held for microseconds)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reset("", "")

    def _reset(self, champion_version: str, challenger_version: str) -> None:
        self._versions = (champion_version, challenger_version)
        self._compared = 0
        self._agreements = 0
        self._pairs: Counter[tuple[str, str]] = Counter()
        self._delta_sum = 0.0
        self._deltas: deque[float] = deque(maxlen=WINDOW)
        self._latency: dict[str, deque[float]] = {role: deque(maxlen=WINDOW) for role in ROLES}
        self._errors = dict.fromkeys(ROLES, 0)

    def observe_versions(self, champion_version: str, challenger_version: str) -> None:
        """Start over if either side now serves another version than what was compared so far."""
        with self._lock:
            if self._versions != (champion_version, challenger_version):
                self._reset(champion_version, challenger_version)

    def record(
        self,
        champion_rows: Sequence[Classification],
        challenger_rows: Sequence[Classification],
        champion_s: float,
        challenger_s: float,
    ) -> None:
        """Count one shadowed call: its texts' rows from each version (ranked, every label) and each version's time."""
        with self._lock:
            for champion, challenger in zip(champion_rows, challenger_rows, strict=True):
                top = champion[0]
                challenger_top = challenger[0].label
                self._compared += 1
                self._agreements += top.label == challenger_top
                self._pairs[(top.label, challenger_top)] += 1
                same_label = next((s.score for s in challenger if s.label == top.label), 0.0)
                delta = abs(same_label - top.score)
                self._delta_sum += delta
                self._deltas.append(delta)
            self._latency[CHAMPION].append(champion_s)
            self._latency[CHALLENGER].append(challenger_s)

    def record_error(self, role: str) -> None:
        with self._lock:
            self._errors[role] += 1

    def report(self) -> ComparisonReport:
        with self._lock:
            deltas = np.fromiter(self._deltas, dtype=np.float64)
            latency = {
                role: _percentiles(np.fromiter(values, dtype=np.float64)) for role, values in self._latency.items()
            }
            return ComparisonReport(
                champion_version=self._versions[0],
                challenger_version=self._versions[1],
                texts_compared=self._compared,
                agreements=self._agreements,
                label_pairs=dict(self._pairs),
                score_delta_mean=self._delta_sum / self._compared if self._compared else 0.0,
                score_delta_p99=float(np.percentile(deltas, 99)) if deltas.size else 0.0,
                latency_s=latency,
                errors=dict(self._errors),
            )


def _percentiles(values: np.ndarray) -> tuple[float, float]:
    if not values.size:
        return 0.0, 0.0
    p50, p95 = np.percentile(values, [50, 95])
    return float(p50), float(p95)
