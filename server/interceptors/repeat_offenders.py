"""Callers that keep sending requests refused from their bytes (an amplification probe in a loop) are answered later
each time: the first refusal is immediate, the next ones from the same connection wait, so that a closed-loop attacker
sends a few requests a second instead of hundreds, and the calls of everyone else keep the event loop."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

#: Refusals from one peer within this many seconds of its previous one count as repeats.
REPEAT_WINDOW_S = 10.0
#: The wait before the second refusal; it doubles with each repeat, up to `MAX_DELAY_S`.
FIRST_DELAY_S = 0.05
MAX_DELAY_S = 2.0
#: Peers remembered at most (the oldest is forgotten first): the memory is bounded whatever the number of attackers.
MAX_PEERS = 4096


class RepeatOffenders:
    """How long to hold each screened refusal, by the peer (connection) it goes to."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = clock
        self._recent: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def delay_s(self, peer: str) -> float:
        """Record one more refusal for `peer`; the seconds to wait before sending it (0 for the first in a while)."""
        now = self._monotonic()
        repeats, last = self._recent.pop(peer, (0, float("-inf")))
        repeats = repeats + 1 if now - last < REPEAT_WINDOW_S else 0
        self._recent[peer] = (repeats, now)
        if len(self._recent) > MAX_PEERS:
            self._recent.popitem(last=False)
        return 0.0 if repeats == 0 else min(MAX_DELAY_S, FIRST_DELAY_S * 2 ** (repeats - 1))
