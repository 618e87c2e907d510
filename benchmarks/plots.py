"""What the reports' plots share: axes of concurrent callers on a log₂ scale, and saving the figure."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any


def finish_caller_plot(fig: Any, axes: Iterable[Any], callers: Sequence[int], path: Path) -> None:
    """Label every axis as concurrent callers (log₂, a tick per level), add grid and legend, save `fig` to `path`."""
    import matplotlib.pyplot as plt

    for axis in axes:
        axis.set_xscale("log", base=2)
        axis.set_xticks(list(callers), [str(c) for c in callers])
        axis.set_xlabel("concurrent callers")
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
