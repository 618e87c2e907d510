"""The table of served models: each name's source, serving version, state and batcher, and version swaps."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime, timezone

from .batcher import AdaptiveBatcher, BatchLimits, BatchOutput, RunReport
from .errors import ModelNotFoundError, ModelNotReadyError, ModelWarmupError, OrtServeError
from .model_statistics import ModelStatistics
from .observability.call_context import CallRecord, observe_batch
from .runtime import OnnxClassifier, SessionConfig
from .sources.model_source import FetchedArtifact, ModelSource
from .stage_timings import BatchStages, MeasuredRun, fastest_seconds
from .text_cost import estimate_tokens
from .types import Classification, ModelDescription, ModelState, PollStats, TruncatedClassification

log = logging.getLogger(__name__)

#: Awaited with (model name, new state) whenever a model's state changes; wired to the gRPC health service.
StateListener = Callable[[str, ModelState], Awaitable[None]]

WARMUP_TEXT = "ortserve warm-up"

#: Max length assumed for estimates before a model is loaded.
DEFAULT_MAX_LENGTH = 512

#: Widths (tokens per text) at which a version's warm-up times runs for the cost model, with its max length: enough
#: to separate the fixed cost, the cost per token and attention's growth with the width (see `admission.RunCost`).
CALIBRATION_WIDTHS = (8, 64, 256)
#: Seconds after which the warm-up's timing stops repeating runs that disagree (it always times each shape twice):
#: issue 27's target is at most 0.5 s added to start-up for the demo's models, about 0.13 s of which the runs after a
#: pause take (`CALIBRATION_PAUSE_S`), and a busy machine would otherwise repeat its widest runs up to 8 times.
CALIBRATION_BUDGET_S = 0.25
#: Rows of one extra run at the narrowest width: a second narrow run, so that one disturbed timing cannot set the fixed
#: cost alone (measured on 2 busy cores: without it, 3 of 6 fresh servers over-estimated width 8 by 3.7-6×, with it
#: 3 of 11 by 2.3-3.6×), and the same tokens as a one-text run 8× as wide without attention's growth.
CALIBRATION_ROWS = 8
#: Seconds of idleness before each of `CALIBRATION_IDLE_RUNS` timed runs of the narrowest one-text shape. A run that
#: follows a pause costs more than one that follows a run (the cores' wake-up, caches refilled after other work), and
#: a call at a quiet server starts its run after a pause. Measured on the demo's topic model, one text of 8 tokens
#: (fastest of 15): 1.60 ms back-to-back, 1.73 after 5 ms, 2.07 after 10, 2.15 after 50, 2.20 after 200; the batcher's
#: own run time of one-text calls 20 ms apart 1.87 ms, 0.2 s apart 2.35, 1 s apart 2.30 (fastest of 8; the 4-layer
#: test model 1.53, 1.68, 1.64). The warm-up's other runs follow each other, as runs of a busy server do; the difference
#: is paid once a run, so it is added to every warm-up run (a fixed cost, which the fit then reads as one).
CALIBRATION_PAUSE_S = 0.04
CALIBRATION_IDLE_RUNS = 3


@dataclass(frozen=True)
class LoadedVersion:
    """One version of a model, loaded and warmed up."""

    version: str
    classifier: OnnxClassifier
    loaded_at: datetime
    note: str = ""
    calibration: tuple[MeasuredRun, ...] = ()
    """Runs timed by the warm-up, which the batcher's cost model is fitted to when this version is swapped in."""


class ServedModel:
    """One name of the model table.

    Batches run on `current`. Replacing `current` swaps versions atomically: a batch that already took the old
    version finishes on it, and the old session is released when the last such batch drops its reference.
    """

    def __init__(
        self,
        name: str,
        source: ModelSource,
        executor: Executor,
        limits: BatchLimits,
        session_config: SessionConfig,
        inference_executor: Executor | None = None,
    ):
        """`executor` runs the batcher's runs (tokenize, run, rank); `inference_executor`, if given, the ONNX
        Runtime run inside each (`OnnxClassifier.inference_executor`)."""
        self.name = name
        self.source = source
        self.state = ModelState.LOADING
        self.last_error = ""
        self.failed_updates = 0
        self.polls = PollStats()  # observability: registry polls of the watcher
        self.statistics = ModelStatistics()  # counts and times of calls and runs (V2 ModelStatistics)
        self.current: LoadedVersion | None = None
        self._session_config = session_config
        self._executor = executor
        self._inference_executor = inference_executor
        # The batcher enforces `limits` where it forms runs; a run gets texts that already respect them.
        self.batcher: AdaptiveBatcher[Classification] = AdaptiveBatcher(
            name,
            self._run_batch,
            executor,
            limits,
            text_cost=self.estimate_tokens,
            on_run=_observe_run,
            current_pin=lambda: self.current,
        )

    def estimate_tokens(self, text: str) -> int:
        """Tokens `text` will take, estimated from its length before it is tokenized (for admission and run
        forming): at most the serving version's max length, as the runtime cuts every text there."""
        loaded = self.current
        max_length = loaded.classifier.max_length if loaded else DEFAULT_MAX_LENGTH
        return estimate_tokens(text, max_length)

    def _run_batch(self, texts: list[str], pin: object = None) -> BatchOutput[Classification]:
        """Run one batch formed by the batcher, on the version `pin` (a `LoadedVersion` from an earlier run of the
        same call) or, for calls not pinned yet, on `current` read once: a swap meanwhile does not split a batch."""
        loaded = pin if isinstance(pin, LoadedVersion) else self.current
        if loaded is None:
            raise ModelNotReadyError(f"model {self.name!r} is not loaded ({self.state.value})")
        stages = BatchStages(texts=len(texts))  # the classifier times tokenization and inference into it
        rows, rank_s = classify_run(loaded.classifier, texts, stages)
        self.statistics.record_run(stages.tokenize_s, stages.inference_s, rank_s)
        return BatchOutput(loaded.version, rows, pin=loaded, stages=stages)

    def load_version(self, version: str | None = None) -> LoadedVersion:
        """Fetch, load and warm up `version` (default: what the source points at now). Blocking: run it off the
        event loop. Raises `OrtServeError` (usually `ArtifactError`) naming what failed."""
        probable = self.source.probable_version() if version is None else None
        if probable is None:
            return self._load(self.source.fetch(version))
        # Start-up from a warm cache: asking the registry takes about as long as loading a model (a child process
        # imports the MLflow client), so load the version the URI last resolved to meanwhile, and keep it only if
        # the registry still names it. Nothing serves before the answer, so what is served is unchanged.
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"ortserve-early-{self.name}")
        try:
            early = pool.submit(lambda: self._load(self.source.fetch(probable)))
            fetched = self.source.fetch()
            if fetched.version == probable:
                with contextlib.suppress(Exception):  # if it failed, loading it again below raises the real error
                    return replace(early.result(), note=fetched.note)
        finally:
            pool.shutdown(wait=False)  # a superseded early load finishes in the background and is dropped
        return self._load(fetched)

    def _load(self, fetched: FetchedArtifact) -> LoadedVersion:
        classifier = OnnxClassifier.load(fetched.directory, self._session_config, self._inference_executor)
        try:
            classifier.probabilities([WARMUP_TEXT])  # first run allocates and plans; pay for it before serving
            started = time.perf_counter()
            calibration = calibration_runs(classifier, self._executor)
        except Exception as exc:  # a graph that loads but cannot run must never be swapped in
            raise ModelWarmupError(f"version {fetched.version} failed its warm-up inference: {exc}") from exc
        log.info(
            "model %s: version %s: cost model calibrated from %d warm-up runs in %.0f ms",
            self.name,
            fetched.version,
            len(calibration),
            (time.perf_counter() - started) * 1000,
        )
        return LoadedVersion(fetched.version, classifier, datetime.now(timezone.utc), fetched.note, calibration)

    def serve(self, loaded: LoadedVersion) -> None:
        """Swap `loaded` in: runs formed from now on take it, and the cost model is fitted to its warm-up runs."""
        self.batcher.run_cost.calibrate(loaded.calibration)
        self.current = loaded

    def describe(self) -> ModelDescription:
        loaded = self.current
        manifest = loaded.classifier.manifest if loaded else None
        return ModelDescription(
            name=self.name,
            version=loaded.version if loaded else "",
            source_uri=self.source.uri,
            state=self.state,
            labels=list(manifest.labels) if manifest else [],
            max_length=manifest.max_length if manifest else 0,
            multi_label=manifest.multi_label if manifest else False,
            last_error=self.last_error,
            loaded_at=loaded.loaded_at.isoformat(timespec="seconds").replace("+00:00", "Z") if loaded else "",
            note=loaded.note if loaded else "",
            failed_updates=self.failed_updates,
        )


class ModelTable:
    """Every configured model by name; loads them at start-up and swaps in new versions."""

    def __init__(self, models: list[ServedModel], listener: StateListener | None = None):
        self._models = {model.name: model for model in models}
        self._listener = listener

    def __iter__(self) -> Iterator[ServedModel]:
        return iter(self._models.values())

    def get(self, name: str) -> ServedModel:
        try:
            return self._models[name]
        except KeyError:
            known = ", ".join(sorted(self._models)) or "none"
            raise ModelNotFoundError(f"no model named {name!r} is served here (served: {known})") from None

    async def set_state(self, model: ServedModel, state: ModelState, error: str = "") -> None:
        model.state = state
        model.last_error = error
        if self._listener is not None:
            await self._listener(model.name, state)

    async def load_all(self) -> None:
        """Load every model concurrently; a model that fails is marked FAILED and the others still serve."""
        await asyncio.gather(*(self.load(model) for model in self._models.values()))

    async def load(self, model: ServedModel) -> bool:
        """First load of a model (or a retry after it FAILED); True once it serves."""
        if model.state is not ModelState.LOADING:
            await self.set_state(model, ModelState.LOADING, model.last_error)
        try:
            loaded = await asyncio.to_thread(model.load_version)
        except Exception as exc:
            await self.set_state(model, ModelState.FAILED, _describe_failure(model, exc))
            return False
        model.serve(loaded)
        suffix = f" ({loaded.note})" if loaded.note else ""
        log.info("model %s: serving version %s from %s%s", model.name, loaded.version, model.source.uri, suffix)
        await self.set_state(model, ModelState.SERVING)
        return True

    async def update(self, model: ServedModel, version: str) -> bool:
        """Load `version` in the background and swap it in; on failure the serving version stays. True if swapped."""
        old = model.current
        log.info("model %s: loading version %s (serving %s)", model.name, version, old.version if old else "none")
        try:
            loaded = await asyncio.to_thread(model.load_version, version)
        except Exception as exc:
            model.failed_updates += 1
            serving = f"; still serving version {old.version}" if old else ""
            reason = _describe_failure(model, exc, f"version {version}")
            model.last_error = f"version {version} not swapped in: {reason}{serving}"
            return False
        model.serve(loaded)  # the swap: new batches take the new version from here on
        model.last_error = ""
        log.info("model %s: swapped version %s -> %s", model.name, old.version if old else "none", loaded.version)
        if model.state is not ModelState.SERVING:
            await self.set_state(model, ModelState.SERVING)
        return True

    async def close(self) -> None:
        await asyncio.gather(*(model.batcher.close() for model in self._models.values()))


def classify_run(
    classifier: OnnxClassifier, texts: list[str], stages: BatchStages
) -> tuple[list[Classification], float]:
    """One model run as the server runs it: tokenize, run (grouped by length), rank. Returns the rows and the
    seconds spent ranking; `stages` receives the tokenization and inference times."""
    # The batch already respects the limits; grouping by length only saves padding inside it.
    truncated: list[bool] = []
    probabilities = classifier.probabilities(texts, by_length=True, stages=stages, truncated=truncated)
    # Rank here, in the worker thread, with the labels of the version that actually ran.
    ranking = time.monotonic()
    rows = [
        TruncatedClassification(row) if cut else row
        for row, cut in zip(classifier.rank(probabilities), truncated, strict=True)
    ]
    return rows, time.monotonic() - ranking


def calibration_runs(classifier: OnnxClassifier, executor: Executor) -> tuple[MeasuredRun, ...]:
    """Time runs of `classifier` as the server runs them, for the cost model: `classify_run` on texts of
    `CALIBRATION_WIDTHS` tokens and of its max length (one text each, and `CALIBRATION_ROWS` texts at the narrowest
    width), each handed to `executor` and waited for, as the batcher does, so that a run's fixed cost includes the
    tokenizer, the ranking and the thread hop, not only ONNX Runtime's. Each shape's fastest run is kept
    (`fastest_seconds`: twice on a quiet machine, more on a busy one), plus what a run after a pause pays over one
    after a run (`CALIBRATION_PAUSE_S`): the runs are timed back to back, and a call at a quiet server starts a run
    after a pause."""
    widths = sorted({w for w in CALIBRATION_WIDTHS if w < classifier.max_length} | {classifier.max_length})
    shapes = [(1, width) for width in widths] + [(CALIBRATION_ROWS, widths[0])]
    batches = [[calibration_text(classifier, width)] * rows for rows, width in shapes]

    def run(texts: list[str]) -> Callable[[], object]:
        return lambda: executor.submit(classify_run, classifier, texts, BatchStages(texts=len(texts))).result()

    seconds = fastest_seconds([run(texts) for texts in batches], budget_s=CALIBRATION_BUDGET_S)
    after_pause = fastest_seconds(
        [run(batches[0])], repeats=CALIBRATION_IDLE_RUNS, most=CALIBRATION_IDLE_RUNS, pause_s=CALIBRATION_PAUSE_S
    )[0]
    waking = max(0.0, after_pause - seconds[0])
    measured = [
        MeasuredRun(len(texts), classifier.count_tokens(texts[0]), spent + waking)
        for texts, spent in zip(batches, seconds, strict=True)
    ]
    return tuple(measured)


def calibration_text(classifier: OnnxClassifier, width: int) -> str:
    """A text of at most `width` tokens (special tokens included), and about as many, for `classifier`'s tokenizer:
    the warm-up text's words, repeated as often as that width takes; from the max length on, a text the tokenizer
    cuts there, so that the widest run is exactly as wide as the widest a caller can send."""
    words = WARMUP_TEXT.split()
    special = classifier.count_tokens("")
    per_word = max(1.0, (classifier.count_tokens(" ".join(words * 8)) - special) / (8 * len(words)))
    count = max(1, int((width - special) / per_word))
    if width >= classifier.max_length:
        count += 2 * len(words)  # past the max length: the tokenizer truncates exactly there
    while True:
        text = " ".join(words[i % len(words)] for i in range(count))
        if count == 1 or classifier.count_tokens(text) <= width:
            return text
        count -= 1


def _observe_run(
    model: str,
    calls: Sequence[tuple[CallRecord | None, float]],
    output: BatchOutput[Classification],
    run: RunReport,
) -> None:
    """The batcher's run hook: hands the run's stage timings to its calls' records and the metrics."""
    observe_batch(model, calls, output.stages, run.width, run.estimated_s, run.seconds)


def _describe_failure(model: ServedModel, exc: BaseException, what: str = "") -> str:
    subject = f"{model.source.uri} {what}".strip()
    if isinstance(exc, OrtServeError):
        log.error("model %s: cannot load %s: %s", model.name, subject, exc)
        return str(exc)
    log.exception("model %s: unexpected error loading %s", model.name, subject)
    return f"unexpected error loading {subject}: {type(exc).__name__}: {exc}"
