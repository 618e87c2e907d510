"""Champion and challenger: a second version of a served model, compared with it on live traffic (shadow) or given
a share of its calls (canary), its agreement written back to the registry.

Configured per model (`settings.ROLLOUT_SETTINGS`): `--model 'sentiment=models:/s@champion?challenger=models:/s@
challenger&shadow=0.1&canary=0.05'`. The design:

- The challenger is a `ServedModel` of its own (named `NAME@challenger`) in a second `ModelTable`, with its own
  source, batcher and `ChallengerWatcher`: it is loaded, warmed up, followed and swapped exactly like the champion,
  and a failure of it never touches the champion's state or health.
- Shadow: after the champion answered a call, a `shadow` share of its texts is offered, with the champion's rows, to
  the `ShadowFeeder`: a bounded queue (`shadow_queue_texts`, the oldest dropped first) and one task that submits to
  the challenger's batcher only while the champion is idle enough (its queue empty, its calls in flight within one
  batch), so no caller's text waits behind shadow work; at most one small challenger batch of shadow texts
  (`SHADOW_BATCH_TEXTS`) runs at a time, gathered until it is full or its oldest text has waited `SHADOW_GATHER_S`
  (one run per 8 shadow texts rather than one per call: a run overlaps far fewer calls, and costs less per text).
- A challenger that only shadows (no canary share) answers no caller, so it runs in the background: its ONNX Runtime
  runs on a thread of its own at a low OS priority (`shadow_nice`), with one intra-op thread, so the whole inference
  is on that thread (pool threads would be created, at normal priority, by the thread that loads the session). The
  kernel then gives the champion's runs the cores whenever both want them, and the shadow runs use what they leave.
  The rest of a shadow run (tokenizing, padding, ranking) holds Python's GIL, so it runs on a second thread of its
  own at the model threads' priority: a low-priority thread that holds the GIL and waits behind everything else for
  a core would stall the event loop and every champion run with it (`OnnxClassifier.inference_executor`). With a
  canary share the challenger answers callers and runs like its champion (the shared executor, its threads).
  Shadow work is dropped, and counted by reason, when the shadow queue is full (`queue`), the challenger's admission
  refuses it (`admission`), it waited longer than `SHADOW_DEADLINE_S` (`deadline`), or nothing is compared now
  (`inactive`).
- Canary: `Challenger.answers(key)` picks the challenger for a `canary` share of calls, by a hash of the caller's key
  (sticky: one key, one side) or at random without one; the answer carries the challenger's version.
- The comparison (`comparison.Comparison`) stops while the challenger is not loaded, while its URI does not resolve
  (alias removed, registry unreachable) or when it resolves to the champion's own version; it starts over whenever
  either side swaps version.
- `RegistryWriteBack` writes the comparison as tags on the challenger's registry model version every
  `challenger_report_interval_s`, and once more at shutdown, so a training pipeline can promote from the registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import random
import time
from collections import deque
from collections.abc import Iterable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime, timezone

from .comparison import CHALLENGER, ChallengerDescription, Comparison, ComparisonReport
from .errors import DeadlineExceededError, ModelNotReadyError, OrtServeError, OverloadedError
from .model_table import ModelTable, ServedModel
from .settings import ServerSettings
from .sources.open_source import open_source
from .thread_priority import PER_THREAD_PRIORITY, model_thread_pool, thread_pool_at_nice
from .types import Classification
from .watcher import VersionWatcher

log = logging.getLogger(__name__)

#: Shadow work that could not run within this many seconds of the champion's answer is dropped (`deadline`).
SHADOW_DEADLINE_S = 5.0
#: Most texts the feeder hands the challenger at a time (one small run): a caller that arrives while shadow work runs
#: waits behind a small run at most, and the challenger's buffers stay those of a small batch.
SHADOW_BATCH_TEXTS = 8
#: How long the feeder waits for a batch of shadow texts to fill before it runs the texts it has.
SHADOW_GATHER_S = 0.5
#: How often the feeder looks again whether the champion's queue has emptied, while it has not.
IDLE_POLL_S = 0.002
#: Why shadow texts were dropped (the `reason` label of `ortserve_shadow_dropped_texts`).
DROP_REASONS = ("queue", "admission", "deadline", "inactive")
#: Suffix of the challenger's own `ServedModel` name (logs, batch metrics of canary calls).
CHALLENGER_SUFFIX = "@challenger"
#: How long the write-back at shutdown may take.
FINAL_WRITE_TIMEOUT_S = 15.0
#: Prefix of the tags written on the challenger's registry model version.
TAG_PREFIX = "ortserve.challenger."


@dataclass
class _ShadowJob:
    texts: list[str]
    champion_rows: list[Classification]
    champion_version: str
    champion_s: float
    enqueued: float


class Challenger:
    """The challenger of one served model (the champion): its `ServedModel`, traffic shares and comparison."""

    def __init__(
        self,
        champion: ServedModel,
        model: ServedModel,
        shadow: float,
        canary: float,
        shadow_queue_texts: int,
        background: ThreadPoolExecutor | None = None,
        runs: ThreadPoolExecutor | None = None,
    ):
        self.champion = champion
        self.model = model
        self.shadow = shadow
        self.canary = canary
        self.comparison = Comparison()
        self.feeder = ShadowFeeder(self, shadow_queue_texts)
        self.canary_calls = 0
        self.resolves = True
        """Whether the challenger's URI resolved at the watcher's last check (false: alias removed, or outage)."""
        self.background = background
        """The low-priority thread of the challenger's ONNX Runtime runs when it only shadows (None: in its runs)."""
        self.runs = runs
        """The thread of the challenger's runs when it only shadows (None: the shared executor)."""
        self._random = random.Random()

    def close(self) -> None:
        """Stop the challenger's own threads, if it has them (after its batcher has closed)."""
        for pool in (self.runs, self.background):  # the runs first: they hand their inference to the background
            if pool is not None:
                pool.shutdown(wait=True)

    def stopped_reason(self) -> str:
        """Why the two versions are not compared now; empty while they are."""
        if self.model.current is None:
            return f"the challenger is not loaded ({self.model.state.value})"
        if self.champion.current is None:
            return "the champion is not loaded"
        if not self.resolves:
            return "the challenger's URI does not resolve now (alias removed, or registry unreachable)"
        if _identity(self.model) == _identity(self.champion):
            return "the challenger's version is the champion's"
        return ""

    @property
    def comparing(self) -> bool:
        return not self.stopped_reason()

    def answers(self, key: str | None) -> bool:
        """Whether the challenger answers this call (canary): for a `canary` share of keys, or of calls without one."""
        if self.canary <= 0 or not self.comparing:
            return False
        if key:
            digest = hashlib.blake2b(f"{self.champion.name}\0{key}".encode(), digest_size=8).digest()
            return int.from_bytes(digest, "big") / 2**64 < self.canary
        return self._random.random() < self.canary

    def after_answer(
        self, texts: Sequence[str], rows: Sequence[Classification], version: str, champion_s: float
    ) -> None:
        """Offer the `shadow` share of a call the champion answered (`rows`: every label, ranked) to the feeder."""
        if self.shadow <= 0:
            return
        picked = range(len(texts)) if self.shadow >= 1 else [i for i in range(len(texts)) if self._sampled()]
        if not picked:
            return
        job = _ShadowJob([texts[i] for i in picked], [rows[i] for i in picked], version, champion_s, time.monotonic())
        self.feeder.offer(job)

    def _sampled(self) -> bool:
        return self._random.random() < self.shadow

    def report(self) -> ComparisonReport:
        """The comparison of the versions served now: it starts over as soon as either side has swapped."""
        champion, challenger = self.champion.current, self.model.current
        if champion is not None and challenger is not None:
            self.comparison.observe_versions(champion.version, challenger.version)
        return self.comparison.report()

    def describe(self) -> ChallengerDescription:
        loaded = self.model.current
        return ChallengerDescription(
            source_uri=self.model.source.uri,
            version=loaded.version if loaded else "",
            comparing=self.comparing,
            stopped_reason=self.stopped_reason(),
            shadow=self.shadow,
            canary=self.canary,
            canary_calls=self.canary_calls,
            shadow_dropped=dict(self.feeder.dropped),
            comparison=self.report(),
        )


class ShadowFeeder:
    """The shadow queue of one challenger and the task that feeds it to the challenger's batcher at low priority
    (see the module docstring)."""

    def __init__(self, challenger: Challenger, max_texts: int):
        self.challenger = challenger
        self.max_texts = max_texts
        self.dropped = dict.fromkeys(DROP_REASONS, 0)
        """Texts dropped, by reason."""
        self._jobs: deque[_ShadowJob] = deque()
        self._texts = 0
        self._running = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def queued_texts(self) -> int:
        return self._texts

    @property
    def pending_texts(self) -> int:
        """Texts offered and not yet compared or dropped: queued, or in the shadow run in progress."""
        return self._texts + self._running

    def offer(self, job: _ShadowJob) -> None:
        self._jobs.append(job)
        self._texts += len(job.texts)
        while self._texts > self.max_texts:  # the oldest go first: the newest texts are the most telling
            self._drop(self._jobs.popleft(), "queue")
        if len(self._jobs) == 1 or self._texts >= self._batch_texts:  # the feeder waits for the first, or a full run
            self._wake.set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._feed(), name=f"shadow-{self.challenger.model.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        while self._jobs:
            self._drop(self._jobs.popleft(), "inactive")

    def _drop(self, job: _ShadowJob, reason: str, dequeued: bool = True) -> None:
        if dequeued:
            self._texts -= len(job.texts)
        self.dropped[reason] += len(job.texts)

    async def _feed(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._jobs:
                self._drop_expired()
                if not self._jobs:
                    break
                gathering = self._jobs[0].enqueued + SHADOW_GATHER_S - time.monotonic()
                if self._texts < self._batch_texts and gathering > 0:  # wait for a fuller batch, or for its time
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), gathering)
                    self._wake.clear()
                    continue
                if not self._champion_idle_enough():  # callers come first: shadow work waits (and may expire)
                    await asyncio.sleep(IDLE_POLL_S)
                    continue
                batch = self._take(self._batch_texts)
                self._running = sum(len(job.texts) for job in batch)
                try:
                    await self._shadow(batch)
                finally:
                    self._running = 0

    @property
    def _batch_texts(self) -> int:
        """Texts of one shadow run: `SHADOW_BATCH_TEXTS`, within the challenger's batch and the queue's bounds."""
        return min(SHADOW_BATCH_TEXTS, self.challenger.model.batcher.limits.max_batch_size, self.max_texts)

    def _champion_idle_enough(self) -> bool:
        """No caller's text is queued for the champion, and its calls in flight fit in one run: under overload
        (hundreds of calls in flight) the champion's queue empties for instants between runs, and shadow work
        started then would take cores from the next run."""
        champion = self.challenger.champion.batcher
        return champion.queued_texts == 0 and champion.calls_in_flight <= champion.limits.max_batch_size

    def _drop_expired(self) -> None:
        now = time.monotonic()
        while self._jobs and now - self._jobs[0].enqueued > SHADOW_DEADLINE_S:
            self._drop(self._jobs.popleft(), "deadline")

    def _take(self, max_texts: int) -> list[_ShadowJob]:
        """The oldest jobs up to `max_texts` texts (at least one job): one challenger batch."""
        batch: list[_ShadowJob] = []
        texts = 0
        while self._jobs and (not batch or texts + len(self._jobs[0].texts) <= max_texts):
            job = self._jobs.popleft()
            self._texts -= len(job.texts)
            texts += len(job.texts)
            batch.append(job)
        return batch

    async def _shadow(self, batch: list[_ShadowJob]) -> None:
        """Run the texts of `batch` through the challenger as one call (one run), and compare each job's rows."""
        challenger = self.challenger
        champion = challenger.champion.current
        jobs = []
        for job in batch:
            if not challenger.comparing or champion is None or champion.version != job.champion_version:
                self._drop(job, "inactive", dequeued=False)
            else:
                jobs.append(job)
        if not jobs:
            return
        started = time.monotonic()
        try:
            texts = [text for job in jobs for text in job.texts]
            output = await challenger.model.batcher.submit(texts, jobs[0].enqueued + SHADOW_DEADLINE_S)
        except (OverloadedError, DeadlineExceededError, ModelNotReadyError) as exc:
            reason = "admission" if isinstance(exc, OverloadedError) else "deadline"
            for job in jobs:
                self._drop(job, "inactive" if isinstance(exc, ModelNotReadyError) else reason, dequeued=False)
            return
        except Exception as exc:  # the challenger's run failed: counted against it, the champion is not concerned
            log.warning("model %s: a shadow run failed: %s", challenger.model.name, type(exc).__name__)
            for _ in jobs:  # one error per shadowed call, as a call that failed alone would count
                challenger.comparison.record_error(CHALLENGER)
            return
        current = challenger.model.current
        if current is None or current.version != output.version:  # swapped meanwhile: a pair no longer compared
            for job in jobs:
                self._drop(job, "inactive", dequeued=False)
            return
        seconds = time.monotonic() - started
        challenger.comparison.observe_versions(jobs[0].champion_version, output.version)
        offset = 0
        for job in jobs:
            rows = output.rows[offset : offset + len(job.texts)]
            offset += len(job.texts)
            challenger.comparison.record(job.champion_rows, rows, job.champion_s, seconds)


class ChallengerWatcher(VersionWatcher):
    """A `VersionWatcher` over the challengers' table that also tells each challenger whether its URI still resolves
    (a removed alias stops the comparison; the version loaded stays, and is swapped when the alias comes back)."""

    def __init__(self, table: ModelTable, poll_interval: float, challengers: Iterable[Challenger]):
        super().__init__(table, poll_interval)
        self._challengers = {challenger.model.name: challenger for challenger in challengers}

    async def check(self, model: ServedModel) -> bool:
        ok = await super().check(model)
        challenger = self._challengers.get(model.name)
        if challenger is not None:
            challenger.resolves = ok
        return ok


def registry_tags(champion: str, report: ComparisonReport) -> dict[str, str]:
    """The tags written on the challenger's model version: the comparison, with no text in it. `texts_compared` comes
    last: tags are written one by one, so a reader that sees a new count sees the figures that go with it."""
    return {
        f"{TAG_PREFIX}model": champion,
        f"{TAG_PREFIX}champion_version": report.champion_version,
        f"{TAG_PREFIX}agreements": str(report.agreements),
        f"{TAG_PREFIX}agreement": f"{report.agreement:.6f}",
        f"{TAG_PREFIX}label_flips": json.dumps(report.flips_by_name()),
        f"{TAG_PREFIX}score_delta_mean": f"{report.score_delta_mean:.6f}",
        f"{TAG_PREFIX}score_delta_p99": f"{report.score_delta_p99:.6f}",
        f"{TAG_PREFIX}latency_ms": json.dumps(
            {
                role: {"p50": round(p50 * 1000, 3), "p95": round(p95 * 1000, 3)}
                for role, (p50, p95) in report.latency_s.items()
            }
        ),
        f"{TAG_PREFIX}errors": json.dumps(report.errors),
        f"{TAG_PREFIX}updated_at": datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
        f"{TAG_PREFIX}texts_compared": str(report.texts_compared),
    }


class RegistryWriteBack:
    """Writes each challenger's comparison to its registry model version every `interval_s` seconds (and at
    `stop`). Sources without a registry (artifact directories) are skipped; a failed write is logged and retried at
    the next round, serving goes on."""

    def __init__(self, challengers: Sequence[Challenger], interval_s: float):
        self.challengers = list(challengers)
        self.interval_s = interval_s
        self.writes = 0
        self.failures = 0
        self._written: dict[str, tuple[str, int]] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.interval_s > 0 and self.challengers:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="challenger-write-back")

    async def stop(self) -> None:
        if self._task is None:
            return
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None
        try:  # the last figures, bounded: a registry that does not answer must not hold up the shutdown
            await asyncio.wait_for(self.write_all(), FINAL_WRITE_TIMEOUT_S)
        except asyncio.TimeoutError:
            log.warning("the last challenger comparison was not written: the registry did not answer in time")

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.write_all()

    async def write_all(self) -> None:
        for challenger in self.challengers:
            write = getattr(challenger.model.source, "set_version_tags", None)
            report = challenger.report()
            if write is None or not report.texts_compared or not report.challenger_version:
                continue
            if self._written.get(challenger.model.name) == (report.challenger_version, report.texts_compared):
                continue  # nothing new since the last write
            try:
                await asyncio.to_thread(
                    write, report.challenger_version, registry_tags(challenger.champion.name, report)
                )
            except OrtServeError as exc:
                self.failures += 1
                log.warning("model %s: cannot write the comparison to the registry: %s", challenger.model.name, exc)
                continue
            self.writes += 1
            self._written[challenger.model.name] = (report.challenger_version, report.texts_compared)


def _identity(model: ServedModel) -> tuple[str, str]:
    """(registered model or URI, version) of what `model` serves: two sides of one registered version are equal."""
    parsed = getattr(model.source, "parsed", None)
    name = getattr(parsed, "name", None) or model.source.uri
    return str(name), model.current.version if model.current else ""


def build_challengers(
    settings: ServerSettings, champions: ModelTable, executor: Executor
) -> tuple[ModelTable, list[Challenger]]:
    """The challengers of the models of `settings` that name one, in a table of their own (no health listener: a
    challenger's state never changes the server's readiness). Each batcher has its champion's limits; a challenger
    that only shadows runs in the background (see the module docstring), unless `shadow_nice` is 0."""
    challengers = []
    for spec in settings.models:
        uri, shadow, canary = settings.rollout(spec)
        if uri is None:
            continue
        name = spec.name + CHALLENGER_SUFFIX
        session_config = settings.session_config(spec)  # its champion's window (max_length)
        background = runs = None
        if canary <= 0 and settings.shadow_nice > 0:
            background = background_executor(name, settings.shadow_nice)
            # The runs' own thread (tokenize, rank: the GIL's part) at the model threads' priority, not the shared
            # executor's: a shadow run that waits for its low-priority ONNX Runtime part never holds a champion's slot.
            runs = model_thread_pool(1, f"ortserve-shadow-runs-{name}", settings.model_thread_nice)
            session_config = replace(session_config, intra_op_threads=1)
        model = ServedModel(
            name,
            open_source(uri, settings.cache_dir, settings.tracking_uri),
            runs or executor,
            settings.batch_limits(spec),
            session_config,
            inference_executor=background,
        )
        challengers.append(
            Challenger(champions.get(spec.name), model, shadow, canary, settings.shadow_queue_texts, background, runs)
        )
    return ModelTable([challenger.model for challenger in challengers]), challengers


def background_executor(name: str, nice: int) -> ThreadPoolExecutor:
    """One thread at OS nice value `nice` (at least the process's own): a shadow-only challenger's runs. Where a
    thread's own priority cannot be set (not Linux), the shadow runs rely on the feeder's idle check alone."""
    if not PER_THREAD_PRIORITY:
        log.warning("cannot lower the priority of the shadow thread (not Linux): it runs at normal priority")
    return thread_pool_at_nice(1, f"ortserve-shadow-{name}", nice)
