"""MLflow Model Registry sources: resolve `models:/` URIs, download each version once into a verified local cache.

Cache layout under `--cache-dir`:
    <name>/<version>/            one complete artifact directory (model.onnx, tokenizer.json, ortserve.json)
    <name>/<version>/.complete   written last; lists every file with its size (a directory without it is partial)
    <name>/resolved/<ref>.json   the last version each alias or stage resolved to (used when the registry is down)
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .artifact import (
    ARTIFACT_FILES,
    EXTRA_FILES_DIR,
    MANIFEST_FILE,
    MODEL_FILE,
    ArtifactManifest,
    check_artifact_dir,
)
from .errors import ArtifactError, RegistryUnreachableError, first_line
from .sources import FetchedArtifact, ModelSource

log = logging.getLogger(__name__)

COMPLETE_MARKER = ".complete"

_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<ref>[^/@]+))$")
#: MLflow error codes that mean "the registry answered: no such model, version or alias" (not an outage).
NOT_FOUND_ERROR_CODES = frozenset({"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"})


def filter_literal(value: str) -> str:
    """`value` quoted for an MLflow search filter (`name = '...'`)."""
    return "'" + value.replace("'", "\\'") + "'"


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/ortserve`, else `~/.cache/ortserve`."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ortserve"


@dataclass(frozen=True)
class RegistryUri:
    """A parsed `models:/` URI: exactly one of alias, version or stage is set, or `latest` (`models:/NAME/latest`,
    the highest version) is True."""

    name: str
    alias: str | None = None
    version: str | None = None
    stage: str | None = None
    latest: bool = False

    @classmethod
    def parse(cls, uri: str) -> RegistryUri:
        match = _URI.match(uri)
        if not match:
            raise ArtifactError(
                f"{uri!r} is not a registry model URI; use models:/NAME@ALIAS, models:/NAME/VERSION or "
                "models:/NAME/STAGE"
            )
        name, alias, ref = match["name"], match["alias"], match["ref"]
        if alias:
            return cls(name, alias=alias)
        if ref.isdigit():
            return cls(name, version=ref)
        if ref.lower() == "latest":
            return cls(name, latest=True)
        return cls(name, stage=ref)

    @property
    def follows_updates(self) -> bool:
        return self.version is None

    @property
    def reference(self) -> str:
        """What the URI names besides the model: `@alias`, a version number or a stage."""
        return f"@{self.alias}" if self.alias else (self.version or self.stage or "latest")


class RegistrySource(ModelSource):
    """A `models:/` URI served through the MLflow client, with a local cache keyed by registered name and version."""

    def __init__(self, uri: str, cache_dir: Path, tracking_uri: str | None = None):
        super().__init__(uri)
        self.parsed = RegistryUri.parse(uri)
        self.cache_dir = Path(cache_dir)
        self.tracking_uri = tracking_uri
        self._client_lock = threading.Lock()
        self._client: Any = None

    @property
    def follows_updates(self) -> bool:
        return self.parsed.follows_updates

    def _mlflow(self) -> Any:
        with self._client_lock:
            if self._client is None:
                from mlflow import MlflowClient

                self._client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
            return self._client

    def latest_version(self) -> str:
        """Ask the registry which version the URI points at now."""
        parsed = self.parsed
        try:
            if parsed.version:
                return str(self._mlflow().get_model_version(parsed.name, parsed.version).version)
            if parsed.alias:
                return str(self._mlflow().get_model_version_by_alias(parsed.name, parsed.alias).version)
            if parsed.latest:
                versions = self._mlflow().search_model_versions(f"name = {filter_literal(parsed.name)}")
            else:
                versions = self._mlflow().get_latest_versions(parsed.name, stages=[parsed.stage])
        except Exception as exc:  # MlflowException or a requests error; classified below
            raise _classify(self.uri, exc) from None
        if not versions:
            where = "has no versions" if parsed.latest else f"has no version in stage {parsed.stage!r}"
            raise ArtifactError(f"{self.uri}: registered model {parsed.name!r} {where}")
        return str(max(int(v.version) for v in versions))

    def fetch(self, version: str | None = None) -> FetchedArtifact:
        """Resolve (unless `version` is given), then return the cached directory, downloading it first if needed.

        If the registry cannot be reached, the version this URI last resolved to is served from the cache.
        """
        note = ""
        if version is None:
            try:
                version = self.latest_version()
            except RegistryUnreachableError as exc:
                version, note = self._last_resolved_or_raise(exc)
            else:
                self._remember_resolved(version)
        directory = self._version_dir(version)
        if not _is_complete(directory):
            if directory.exists():
                log.warning("%s: cache entry %s is incomplete; downloading it again", self.uri, directory)
            self._download(version, directory)
        return FetchedArtifact(version, directory, note)

    # --- cache ----------------------------------------------------------------------------------------------------

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
        tmp.write_text(json.dumps({"uri": self.uri, "version": version,
                                   "resolved_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}))
        tmp.replace(record)

    def _last_resolved_or_raise(self, error: RegistryUnreachableError) -> tuple[str, str]:
        try:
            record = json.loads(self._resolved_record().read_text())
        except (OSError, ValueError):
            raise ArtifactError(f"{error} and no version of it is cached in {self.cache_dir}") from None
        version = str(record["version"])
        if not _is_complete(self._version_dir(version)):
            raise ArtifactError(f"{error} and the cached version {version} is incomplete") from None
        note = (f"registry unreachable; serving version {version} from the cache "
                f"(resolved {record.get('resolved_at', 'earlier')})")
        log.warning("%s: %s", self.uri, note)
        return version, note

    def _download(self, version: str, destination: Path) -> None:
        import mlflow.artifacts

        destination.parent.mkdir(parents=True, exist_ok=True)
        # Download next to the destination and rename into place: a crash never leaves a half-written version dir.
        with tempfile.TemporaryDirectory(prefix=f".{version}.", dir=destination.parent) as scratch:
            log.info("%s: downloading version %s", self.uri, version)
            try:
                # Ask the registry for the version's artifact location, then download from there: resolving
                # models:/ inside download_artifacts ignores an explicit registry URI in some MLflow releases.
                location = self._mlflow().get_model_version_download_uri(self.parsed.name, version)
                downloaded = Path(mlflow.artifacts.download_artifacts(
                    artifact_uri=location, dst_path=scratch, tracking_uri=self.tracking_uri
                ))
            except Exception as exc:
                raise _classify(f"{self.uri} (version {version})", exc) from None
            staging = Path(scratch) / "artifact"
            assemble_artifact(downloaded, staging, f"{self.uri} version {version}")
            _write_marker(staging)
            if destination.exists():
                shutil.rmtree(destination)
            staging.rename(destination)


def assemble_artifact(downloaded: Path, staging: Path, what: str) -> None:
    """Lay a downloaded MLflow model out as a new artifact directory `staging` (its files taken from the root or
    from extra_files/, ortserve.json moved last); raise `ArtifactError` naming `what` if a file is missing."""
    staging.mkdir()
    for name in ARTIFACT_FILES:
        candidates = [downloaded / name, downloaded / EXTRA_FILES_DIR / name]
        found = next((path for path in candidates if path.is_file()), None)
        if found is None:
            raise ArtifactError(f"{what} is not an ortserve ONNX artifact: {name} is missing (export it with "
                                "`ortserve export`)")
        shutil.move(str(found), staging / name)
    for extra in downloaded.glob("*.onnx*data"):  # external tensor data of a large model stays beside model.onnx
        shutil.move(str(extra), staging / extra.name)
    ArtifactManifest.read(staging)  # refuse a manifest this server cannot read before it enters the cache


def _write_marker(directory: Path) -> None:
    sizes = {p.name: p.stat().st_size for p in sorted(directory.iterdir()) if p.is_file()}
    (directory / COMPLETE_MARKER).write_text(json.dumps(sizes, indent=1))


def _is_complete(directory: Path) -> bool:
    """True if `directory` holds every file its marker lists, at the listed sizes."""
    try:
        sizes = json.loads((directory / COMPLETE_MARKER).read_text())
        check_artifact_dir(directory)
    except (OSError, ValueError, ArtifactError):
        return False
    return all((directory / name).is_file() and (directory / name).stat().st_size == size
               for name, size in sizes.items()) and MODEL_FILE in sizes and MANIFEST_FILE in sizes


def _classify(what: str, exc: Exception) -> ArtifactError:
    """Tell 'the registry says no' (not found) from 'the registry cannot be reached'."""
    code = getattr(exc, "error_code", None)
    message = first_line(exc)
    if code in NOT_FOUND_ERROR_CODES:
        return ArtifactError(f"{what}: not found in the registry: {message}")
    if code is not None and code not in {"INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED"}:
        return ArtifactError(f"{what}: registry error {code}: {message}")
    return RegistryUnreachableError(f"{what}: registry unreachable: {message}")


def open_registry_source(uri: str, cache_dir: Path | None = None, tracking_uri: str | None = None) -> RegistrySource:
    """A `RegistrySource` for `uri`; fails fast (as ArtifactError) on a malformed URI."""
    return RegistrySource(uri, cache_dir or default_cache_dir(), tracking_uri)
