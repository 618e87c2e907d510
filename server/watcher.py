"""Follows aliases and stages: polls the registry and swaps in each newly promoted version, never stopping serving."""

from __future__ import annotations

import asyncio
import logging

from .errors import OrtServeError
from .model_table import ModelTable, ServedModel

log = logging.getLogger(__name__)

#: Consecutive failures stretch the wait up to this many poll intervals, so an outage is not hammered.
MAX_BACKOFF_FACTOR = 8


class VersionWatcher:
    """One polling task per model whose source can change (alias, stage) or that has not loaded yet.

    Every `poll_interval` seconds it asks the source which version it points at. A new version is downloaded,
    loaded and warmed up off the event loop, then swapped in (`ModelTable.update`). Registry errors and failed
    versions are logged, counted and retried with a growing interval; the serving version keeps answering.
    """

    def __init__(self, table: ModelTable, poll_interval: float):
        self.table = table
        self.poll_interval = poll_interval
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        if self.poll_interval <= 0:
            return
        for model in self.table:
            if model.source.follows_updates or model.current is None:
                task = asyncio.get_running_loop().create_task(self._follow(model), name=f"watch-{model.name}")
                self._tasks.append(task)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    async def _follow(self, model: ServedModel) -> None:
        failures = 0
        while True:
            await asyncio.sleep(self.poll_interval * min(2**failures, MAX_BACKOFF_FACTOR))
            try:
                ok = await self.check(model)
            except Exception:  # the watcher must outlive any surprise; serving goes on regardless
                log.exception("model %s: unexpected error while checking for a new version", model.name)
                ok = False
            failures = 0 if ok else failures + 1
            if model.current is not None and not model.source.follows_updates:
                return  # a pinned version that finally loaded needs no more polling

    async def check(self, model: ServedModel) -> bool:
        """One poll: load the model if it never loaded, or swap in a new version. False if something failed."""
        if model.current is None:
            return await self.table.load(model)
        try:
            latest = await asyncio.to_thread(model.source.latest_version)
        except OrtServeError as exc:
            model.polls.record(ok=False)  # observability
            log.warning("model %s: cannot check %s for a new version: %s", model.name, model.source.uri, exc)
            return False
        model.polls.record(ok=True)  # observability
        if latest == model.current.version:
            return True
        return await self.table.update(model, latest)
