"""MLflow Model Registry sources: resolve `models:/` URIs, keep each version once in a verified local cache.

Resolution, downloads, the integrity marker and MLflow error mapping are the contract's (`ortserve.contract`).
An http(s) registry is asked over REST in this process, for resolution (`registry_rest`) and downloads
(`registry_rest_artifacts`); other registries (SQLite, file stores, artifacts in `s3://` and the like) through the
MLflow client in a short-lived child process (`registry_worker`), one child resolving and downloading together, so
that the MLflow client never stays resident in the server. This module adds the server's cache policy (verification,
quarantine, the last resolved versions, at most MAX_CONCURRENT_DOWNLOADS at once). Cache layout under `--cache-dir`:
    <name>/<version>/            one complete artifact directory (model.onnx, tokenizer.json, ortserve.json)
    <name>/<version>/.complete   written last; every file with its size and sha256, verified before each load
    <name>/resolved/<ref>.json   the last version each alias or stage resolved to (used when the registry is down)
    <name>/.partial-*            scratch of a download in progress (left by a killed one: removed at start)
    <name>/.corrupt-*            entries that failed verification, moved aside (and logged) before a new download;
                                 only the newest 3 are kept (`contract.cache.KEEP_QUARANTINED`)
"""

from __future__ import annotations

import json
import logging
import os
import threading
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote

from ortserve.contract.cache import (
    COMPLETE_MARKER,
    quarantine,
    remove_stale_scratch,
    verify_cached_artifact,
)
from ortserve.contract.errors import (
    ArtifactInvalidError,
    ContractError,
    IntegrityError,
    RegistryUnavailableError,
)
from ortserve.contract.redact import redact_uri, register_secret_uri
from ortserve.contract.registry import mlflow_error, resolve_version
from ortserve.contract.settings import SERVER_HTTP, configure_mlflow_client
from ortserve.contract.uri import RegistryUri

from ..artifact import as_server_error
from ..errors import ArtifactError
from .model_source import FetchedArtifact, ModelSource
from .registry_rest import RestRegistryClient, RestRegistryError, rest_registry_client
from .registry_rest_artifacts import RestArtifactsUnsupported, fetch_version_over_rest
from .registry_worker import RegistryWorker, registry_worker

__all__ = ["COMPLETE_MARKER", "RegistrySource", "RegistryUri", "default_cache_dir", "open_registry_source"]

log = logging.getLogger(__name__)

#: Downloads over REST at once in this process (several models at start): enough to overlap one model's latency with
#: another's transfer, few enough that a start with many models does not flood the registry or the disk.
MAX_CONCURRENT_DOWNLOADS = 4
_DOWNLOAD_SLOTS = threading.BoundedSemaphore(MAX_CONCURRENT_DOWNLOADS)


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/ortserve`, else `~/.cache/ortserve`."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ortserve"


class RegistrySource(ModelSource):
    """A `models:/` URI served through the MLflow client, with a local cache keyed by registered name and version.

    Resolution and downloads go over MLflow's REST API in this process when the registry is an http(s) tracking
    server; otherwise (and for files the server does not serve) the registry is asked through `worker` (default: the
    process's shared `RegistryWorker` of `tracking_uri`, which runs the MLflow client in short-lived child processes).
    Creating one removes the scratch directories that killed downloads of this model left in the cache.
    """

    def __init__(
        self, uri: str, cache_dir: Path, tracking_uri: str | None = None, worker: RegistryWorker | None = None
    ):
        super().__init__(uri)
        try:
            self.parsed = RegistryUri.parse(uri)
        except ContractError as exc:
            raise as_server_error(exc) from None
        self.cache_dir = Path(cache_dir)
        self.tracking_uri = tracking_uri
        register_secret_uri(tracking_uri)  # its credentials are removed by value from every message and log line
        self.worker = worker or registry_worker(tracking_uri)
        configure_mlflow_client(SERVER_HTTP)  # environment only: the REST client and the worker's children read it
        self.rest: RestRegistryClient | None = rest_registry_client(tracking_uri)
        if self.rest is None:  # the first fetch needs a child: let it import the MLflow client while the server starts
            self.worker.prepare()
        for removed in remove_stale_scratch(self._model_dir()):
            log.warning("%s: removed %s, left by an interrupted download", uri, removed.name)

    @property
    def follows_updates(self) -> bool:
        return self.parsed.follows_updates

    def latest_version(self) -> str:
        """Ask the registry which version the URI points at now."""
        try:
            return self._resolve()
        except ContractError as exc:
            raise self._server_error(exc) from None

    def fetch(self, version: str | None = None) -> FetchedArtifact:
        """Resolve (unless `version` is given), then return the verified cached directory, downloading it first if
        it is missing, partial or fails verification.

        If the registry cannot be reached, the version this URI last resolved to is served from the cache.
        """
        note, downloaded = "", False
        try:
            if version is None:
                try:
                    version, downloaded = self._resolve_and_download()
                except RegistryUnavailableError as exc:
                    version, note = self._last_resolved_or_raise(exc)
                else:
                    self._remember_resolved(version)
            directory = self._version_dir(version)
            if not downloaded:
                self._ensure_cached(version, directory)
        except ContractError as exc:
            raise self._server_error(exc) from None
        except OSError as exc:  # the cache directory itself: its path belongs in the log, not in the message
            error = ArtifactInvalidError(f"{self.uri}: the cache cannot be used", detail=str(exc))
            raise self._server_error(error) from None
        return FetchedArtifact(version, directory, note)

    def probable_version(self) -> str | None:
        """The pinned version, or the one this URI last resolved to, if its cache entry exists (it is verified when
        fetched, like any other)."""
        version = self.parsed.version
        if version is None:
            try:
                version = str(json.loads(self._resolved_record().read_text())["version"])
            except (OSError, ValueError, KeyError, TypeError):
                return None
        return version if self._version_dir(version).is_dir() else None

    def set_version_tags(self, version: str, tags: dict[str, str]) -> None:
        """Set `tags` on `version` of this registered model (the challenger write-back): over REST for an http(s)
        registry, else through the worker. Raises `ArtifactError` naming the URI."""
        try:
            if self.rest is not None:
                for key, value in tags.items():
                    try:
                        self.rest.set_model_version_tag(self.parsed.name, version, key, value)
                    except RestRegistryError as exc:
                        raise mlflow_error(self.uri, exc) from None
            else:
                self.worker.set_tags(self.parsed.name, version, tags)
        except ContractError as exc:
            raise self._server_error(exc) from None

    def _resolve(self) -> str:
        if self.rest is not None:
            return str(resolve_version(self.rest, self.parsed).version)
        return self.worker.resolve(self.uri)

    def _resolve_and_download(self) -> tuple[str, bool]:
        """The version the URI points at now, and True if its cache entry was just downloaded (complete, marked).

        Over REST this only resolves (milliseconds; the download follows in this process). Through the worker, one
        child resolves and, when the version has no marked cache entry yet, downloads it too: the MLflow client's
        import is paid once per start, not once for each step."""
        if self.rest is not None:
            return self._resolve(), False
        try:
            return self.worker.fetch(self.uri, self._model_dir())
        except (ContractError, OSError):
            remove_stale_scratch(self._model_dir())  # a killed child leaves its scratch directory behind
            raise

    def _server_error(self, exc: ContractError) -> ArtifactError:
        # The log gets the detail (redacted MLflow text, paths); the caller only the safe message.
        log.warning("%s: %s%s", self.uri, exc, f" [{exc.detail}]" if exc.detail else "")
        return as_server_error(exc)

    # --- cache ----------------------------------------------------------------------------------------------------

    def _ensure_cached(self, version: str, directory: Path) -> None:
        """Verify the cache entry of `version`; if it is missing, partial or corrupt, move what is there aside
        (logged, kept for inspection) and download it."""
        with _entry_lock(directory):  # two names may serve one version: one verifies or downloads at a time
            if directory.exists():
                try:
                    verify_cached_artifact(directory)
                    return
                except ArtifactInvalidError as exc:  # IntegrityError included: bytes that differ from the marker
                    moved = quarantine(directory)
                    what = "failed verification" if isinstance(exc, IntegrityError) else "is incomplete"
                    log.warning(
                        "%s: cached version %s %s (%s) [%s]; moved aside to %s, fetching it again",
                        self.uri,
                        version,
                        what,
                        exc,
                        exc.detail,
                        moved.name,
                    )
            log.info("%s: downloading version %s", self.uri, version)
            try:
                self._download(version, directory)
            except (ContractError, OSError):
                remove_stale_scratch(self._model_dir())  # a killed child leaves its scratch directory behind
                raise

    def _download(self, version: str, directory: Path) -> None:
        """Download `version` into `directory` (verified, marked): over REST when the tracking server serves its
        files, else through the worker's MLflow client."""
        if self.rest is not None:
            try:
                with _DOWNLOAD_SLOTS:
                    fetch_version_over_rest(self.rest, self.parsed.name, version, directory)
                return
            except RestArtifactsUnsupported as exc:
                log.info("%s: %s; the MLflow client downloads version %s", self.uri, exc, version)
        self.worker.download(self.parsed.name, version, directory)

    def _model_dir(self) -> Path:
        return self.cache_dir / quote(self.parsed.name, safe="")

    def _version_dir(self, version: str) -> Path:
        return self._model_dir() / version

    def _resolved_record(self) -> Path:
        return self._model_dir() / "resolved" / (quote(self.parsed.reference, safe="") + ".json")

    def _remember_resolved(self, version: str) -> None:
        record = self._resolved_record()
        record.parent.mkdir(parents=True, exist_ok=True)
        tmp = record.with_suffix(".tmp")
        tmp.write_text(
            json.dumps(
                {
                    "uri": self.uri,
                    "version": version,
                    "resolved_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                }
            )
        )
        tmp.replace(record)

    def _last_resolved_or_raise(self, error: RegistryUnavailableError) -> tuple[str, str]:
        try:
            record = json.loads(self._resolved_record().read_text())
            version = str(record["version"])
        except (OSError, ValueError, KeyError, TypeError):
            raise RegistryUnavailableError(
                f"{error}, and no version of it is cached",
                detail=f"{error.detail}; no record under {self._model_dir()}",
            ) from None
        note = (
            f"registry unreachable; serving version {version} from the cache "
            f"(resolved {record.get('resolved_at', 'earlier')})"
        )
        log.warning("%s: %s [%s]", self.uri, note, error.detail)
        return version, note


_ENTRY_LOCKS: dict[Path, threading.Lock] = {}
_ENTRY_LOCKS_GUARD = threading.Lock()


def _entry_lock(directory: Path) -> threading.Lock:
    """The lock of one cache entry, shared by every source of this process."""
    with _ENTRY_LOCKS_GUARD:
        return _ENTRY_LOCKS.setdefault(directory.resolve(), threading.Lock())


def open_registry_source(uri: str, cache_dir: Path | None = None, tracking_uri: str | None = None) -> RegistrySource:
    """A `RegistrySource` for `uri`; fails fast (as ArtifactError) on a malformed URI."""
    source = RegistrySource(uri, cache_dir or default_cache_dir(), tracking_uri)
    log.debug("%s: registry %s, cache %s", uri, redact_uri(tracking_uri or "(MLflow default)"), source.cache_dir)
    return source
