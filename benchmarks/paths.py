"""Where the benchmarks write: everything under `benchmarks/work/` (gitignored), relative to the directory they run
from (the repository root, as `make bench` runs them). Nothing a run writes lands in the source tree; the summary
that is kept is BENCHMARKS.md, written by hand from a run's results."""

from __future__ import annotations

from pathlib import Path

#: Models, exports, registries, caches and server logs.
WORK = Path("benchmarks/work")
#: Each module's results (JSON, Markdown, plots), unless `--out` says otherwise.
RESULTS = WORK / "results"
