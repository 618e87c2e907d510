"""The table of served models: each name's source, loaded version, state and batcher."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import datetime, timezone

from .batcher import AdaptiveBatcher, BatchLimits, BatchOutput
from .errors import ModelNotFoundError, ModelNotReadyError, OrtServeError
from .runtime import OnnxClassifier, SessionConfig
from .sources import ModelSource
from .types import Classification, ModelDescription, ModelState

log = logging.getLogger(__name__)

#: Awaited with (model name, new state) whenever a model's state changes; wired to the gRPC health service.
StateListener = Callable[[str, ModelState], Awaitable[None]]

WARMUP_TEXT = "ortserve warm-up"


@dataclass(frozen=True)
class LoadedVersion:
    """One version of a model, loaded and warmed up."""

    version: str
    classifier: OnnxClassifier
    loaded_at: datetime


class ServedModel:
    """One name of the model table. Calls run on `current`; replacing it swaps versions atomically (a batch that
    already took the old version finishes on it)."""

    def __init__(
        self,
        name: str,
        source: ModelSource,
        executor: Executor,
        limits: BatchLimits,
        session_config: SessionConfig,
        max_batch_tokens: int = 0,
    ):
        self.name = name
        self.source = source
        self.state = ModelState.LOADING
        self.last_error = ""
        self.note = ""
        self.current: LoadedVersion | None = None
        self._session_config = session_config
        self._max_batch_tokens = max_batch_tokens
        self.batcher: AdaptiveBatcher[Classification] = AdaptiveBatcher(name, self._run_batch, executor, limits)

    def _run_batch(self, texts: list[str]) -> BatchOutput[np.ndarray]:
        loaded = self.current  # read once: the whole batch runs on one version even if a swap happens meanwhile
        if loaded is None:
            raise ModelNotReadyError(f"model {self.name!r} is not loaded ({self.state.value})")
        classifier = loaded.classifier
        probabilities = classifier.probabilities(
            texts, max_batch_size=self.batcher.limits.max_batch_size, max_batch_tokens=self._max_batch_tokens
        )
        # Rank here, in the worker thread, with the labels of the version that actually ran.
        return BatchOutput(loaded.version, classifier.rank(probabilities))

    def load_version(self) -> LoadedVersion:
        """Fetch, load and warm up the version the source points at now (blocking; run it off the event loop)."""
        fetched = self.source.fetch()
        classifier = OnnxClassifier.load(fetched.directory, self._session_config)
        classifier.probabilities([WARMUP_TEXT])  # first run allocates and plans; pay for it before serving
        self.note = fetched.note
        return LoadedVersion(fetched.version, classifier, datetime.now(timezone.utc))

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
        )


class ModelTable:
    """Every configured model by name, and their loading at start-up."""

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

    async def load(self, model: ServedModel) -> None:
        await self.set_state(model, ModelState.LOADING)
        model.batcher.start()
        try:
            model.current = await asyncio.to_thread(model.load_version)
        except OrtServeError as exc:
            log.error("model %s: cannot load %s: %s", model.name, model.source.uri, exc)
            await self.set_state(model, ModelState.FAILED, str(exc))
            return
        except Exception as exc:  # keep serving the other models; report the failure through GetModel/health
            log.exception("model %s: unexpected error loading %s", model.name, model.source.uri)
            await self.set_state(model, ModelState.FAILED, f"unexpected error: {exc!r}")
            return
        log.info("model %s: serving version %s from %s", model.name, model.current.version, model.source.uri)
        await self.set_state(model, ModelState.SERVING)

    async def close(self) -> None:
        await asyncio.gather(*(model.batcher.close() for model in self._models.values()))
