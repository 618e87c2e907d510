"""One download of a registered version into a verified local directory, and the completeness/integrity marker.

A downloaded version is assembled in a scratch directory beside its destination, checked against the digests
export recorded (manifest `digests`, registry tag `ortserve.model_sha256`), given its marker and renamed into
place, so that a reader never sees half a version. The marker (`.complete`, written last) lists every file with
its size and sha256; `verify_marker` proves a directory still holds those bytes.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .artifact import (
    MANIFEST_FILE,
    MODEL_FILE,
    TAG_MODEL_SHA256,
    ArtifactManifest,
    assemble_artifact,
    check_artifact_dir,
    sha256_file,
    verify_recorded_digests,
)
from .errors import ArtifactInvalidError, IntegrityError
from .registry import download_version, version_tags

log = logging.getLogger(__name__)

COMPLETE_MARKER = ".complete"
#: Layout of the marker; format 1 (sizes only) proved nothing and is treated as unverifiable.
MARKER_FORMAT = 2
#: Scratch directories of downloads in progress: `.partial-<version>-<pid>-<random>` beside the destination.
SCRATCH_PREFIX = ".partial-"
#: Entries that failed verification are moved aside under this prefix (kept for inspection, never served).
QUARANTINE_PREFIX = ".corrupt-"
#: How many entries moved aside are kept per model, the newest: enough to inspect a failure, while a cache that keeps
#: failing (a bad disk, a tampering neighbour) cannot fill the disk with copies of the model.
KEEP_QUARANTINED = 3
#: Scratch directories of ortserve before the marker recorded digests: `.<version>.<random>`.
_LEGACY_SCRATCH = re.compile(r"^\.\d+\.[A-Za-z0-9_]+$")
#: Scratch directories of downloads running in this process (never stale, even though their pid is ours).
_ACTIVE_SCRATCH: set[Path] = set()


def write_marker(directory: Path, known: dict[str, str] | None = None) -> None:
    """Write the completeness marker of `directory`: every file with its size and sha256 (`known` digests are
    reused instead of hashing those files again)."""
    files = {}
    for path in sorted(p for p in Path(directory).iterdir() if p.is_file() and p.name != COMPLETE_MARKER):
        digest = (known or {}).get(path.name) or sha256_file(path)
        files[path.name] = {"size": path.stat().st_size, "sha256": digest}
    tmp = Path(directory) / (COMPLETE_MARKER + ".tmp")
    tmp.write_text(json.dumps({"format": MARKER_FORMAT, "files": files}, indent=1))
    tmp.replace(Path(directory) / COMPLETE_MARKER)


def verify_marker(directory: Path) -> dict[str, str]:
    """Prove that `directory` holds exactly the bytes its marker lists; return `{file: sha256}`.

    Raises `ArtifactInvalidError` when the marker is missing, unreadable or of the old size-only format (a partial
    or unverifiable entry), `IntegrityError` when a listed file is missing or differs in size or digest.
    """
    directory = Path(directory)
    try:
        marker = json.loads((directory / COMPLETE_MARKER).read_text())
    except FileNotFoundError:
        raise ArtifactInvalidError("cache entry is incomplete (no marker)", detail=str(directory)) from None
    except (OSError, ValueError) as exc:
        raise ArtifactInvalidError("cache entry has an unreadable marker", detail=f"{directory}: {exc}") from None
    verifiable = isinstance(marker, dict) and marker.get("format") == MARKER_FORMAT
    if not verifiable or not isinstance(marker.get("files"), dict):
        raise ArtifactInvalidError("cache entry has no verifiable marker", detail=str(directory))
    files: dict[str, Any] = marker["files"]
    if MODEL_FILE not in files or MANIFEST_FILE not in files:
        raise ArtifactInvalidError("cache entry marker lists no model", detail=str(directory))
    check_artifact_dir(directory)
    digests = {}
    for name, entry in files.items():
        path = directory / name
        try:
            size_ok = path.stat().st_size == entry["size"]
            actual = sha256_file(path) if size_ok else ""
        except OSError as exc:
            raise IntegrityError(f"cached {name} is unreadable", detail=f"{path}: {exc}") from None
        if not size_ok or actual != entry["sha256"]:
            raise IntegrityError(
                f"cached {name} does not match its recorded digest",
                detail=f"{path}: sha256 {actual or 'size differs'}, recorded {entry['sha256']}",
            )
        digests[name] = actual
    return digests


def verify_cached_artifact(directory: Path) -> ArtifactManifest:
    """Verify a cache entry's marker and the digests export recorded in its manifest; return the manifest."""
    digests = verify_marker(directory)
    manifest = ArtifactManifest.read(directory)
    verify_recorded_digests(directory, manifest, digests)
    return manifest


def fetch_registered_artifact(
    client: Any,
    name: str,
    version: str,
    destination: Path,
    tracking_uri: str | None,
    *,
    marker: bool = True,
    download: Callable[[Path], Path] | None = None,
) -> ArtifactManifest:
    """Download registered version `name`/`version` as an artifact directory at `destination` (replacing what is
    there), verified against the digests export recorded; with `marker`, write the completeness marker.

    `download(directory)` puts the version's files into the new `directory` and returns the logged model's root there,
    raising the contract's errors (default: the MLflow client's `download_version`; the server's REST client brings
    its own). `client` answers `get_model_version` (for the tags), as `MlflowClient` does.

    Raises the contract's errors (`IntegrityError` when the registry serves bytes that do not match what export
    recorded). A killed download leaves only a scratch directory, removed by `remove_stale_scratch`.
    """
    what = f"models:/{name}/{version}"
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{version}-{os.getpid()}-", dir=destination.parent))
    _ACTIVE_SCRATCH.add(scratch)
    try:
        if download is None:
            downloaded = download_version(client, name, version, scratch / "download", tracking_uri)
        else:
            downloaded = download(scratch / "download")
        staging = scratch / "artifact"
        manifest = assemble_artifact(downloaded, staging, what)
        digests = {MODEL_FILE: sha256_file(staging / MODEL_FILE)}
        expected = version_tags(client, name, version).get(TAG_MODEL_SHA256, "")
        try:
            verify_recorded_digests(staging, manifest, digests, expected_model=expected)
        except IntegrityError as exc:
            raise IntegrityError(f"{what}: {exc}", detail=exc.detail) from None
        if marker:
            write_marker(staging, digests)
        if destination.exists():
            shutil.rmtree(destination)
        staging.rename(destination)
    finally:
        _ACTIVE_SCRATCH.discard(scratch)
        shutil.rmtree(scratch, ignore_errors=True)
    return manifest


def quarantine(directory: Path) -> Path:
    """Move a cache entry that failed verification aside (`.corrupt-<name>-<time>`), so that it is fetched again
    but stays on disk for inspection. Returns the new location."""
    directory = Path(directory)
    stamp = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
    target = directory.parent / f"{QUARANTINE_PREFIX}{directory.name}-{stamp}"
    directory.rename(target)
    for removed in prune_quarantined(directory.parent):
        log.info("removed %s: only the newest %d entries moved aside are kept", removed.name, KEEP_QUARANTINED)
    return target


def prune_quarantined(parent: Path, keep: int = KEEP_QUARANTINED) -> list[Path]:
    """Remove all but the `keep` newest entries moved aside in `parent` (one model's folder); return the removed."""
    try:
        moved = [entry for entry in Path(parent).iterdir() if entry.name.startswith(QUARANTINE_PREFIX)]
        # Newest first: a rename sets the entry's ctime, the time it was moved aside.
        moved.sort(key=lambda entry: entry.lstat().st_ctime_ns, reverse=True)
    except OSError:
        return []
    for entry in moved[keep:]:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    return moved[keep:]


def remove_stale_scratch(parent: Path) -> list[Path]:
    """Remove scratch directories of downloads that no longer run (their process is gone, or was this process's
    predecessor with the same pid, as in a restarted container); return what was removed."""
    removed: list[Path] = []
    try:
        entries = list(Path(parent).iterdir())
    except OSError:
        return removed
    for entry in entries:
        scratch = _is_stale_scratch(entry.name) or bool(_LEGACY_SCRATCH.match(entry.name))
        if not scratch or entry in _ACTIVE_SCRATCH or not entry.is_dir():
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    return removed


def _is_stale_scratch(name: str) -> bool:
    if not name.startswith(SCRATCH_PREFIX):
        return False
    parts = name[len(SCRATCH_PREFIX) :].split("-")
    try:
        pid = int(parts[1])
    except (IndexError, ValueError):
        return True
    if pid == os.getpid():
        return True  # not one of ours in progress: a predecessor's with the same pid (a restarted container)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    return False
