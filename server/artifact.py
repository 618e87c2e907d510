"""The artifact contract (`ortserve.contract.artifact`) as the server reads it: the same names, with the contract's
errors turned into the server's `ArtifactError` (safe message; path and cause in `detail` for the log)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ortserve.contract import artifact as contract
from ortserve.contract.artifact import (
    ARTIFACT_FILES,
    EXTRA_FILES_DIR,
    MANIFEST_FILE,
    MANIFEST_FORMAT,
    MODEL_FILE,
    PROBLEM_TYPES,
    TOKENIZER_FILE,
    ProblemType,
    artifact_digest,
)
from ortserve.contract.errors import ContractError

from .errors import ArtifactError

__all__ = [
    "ARTIFACT_FILES",
    "EXTRA_FILES_DIR",
    "MANIFEST_FILE",
    "MANIFEST_FORMAT",
    "MODEL_FILE",
    "PROBLEM_TYPES",
    "TOKENIZER_FILE",
    "ArtifactManifest",
    "ProblemType",
    "artifact_digest",
    "as_server_error",
    "check_artifact_dir",
]


def as_server_error(exc: ContractError, prefix: str = "") -> ArtifactError:
    """The server's `ArtifactError` for a contract error: its safe message (after `prefix`), its detail."""
    message = f"{prefix}: {exc}" if prefix else str(exc)
    return ArtifactError(message, detail=exc.detail)


class ArtifactManifest(contract.ArtifactManifest):
    """`ortserve.json`, read by the server: validation errors are `ArtifactError`s."""

    @classmethod
    def from_dict(cls, data: Any, origin: str = MANIFEST_FILE) -> ArtifactManifest:
        try:
            manifest = super().from_dict(data, origin)
        except ContractError as exc:
            raise as_server_error(exc) from None
        assert isinstance(manifest, ArtifactManifest)
        return manifest

    @classmethod
    def read(cls, directory: Path) -> ArtifactManifest:
        try:
            manifest = super().read(directory)
        except ContractError as exc:
            raise as_server_error(exc) from None
        assert isinstance(manifest, ArtifactManifest)
        return manifest


def check_artifact_dir(directory: Path) -> None:
    """Raise `ArtifactError` unless `directory` holds every file of an artifact."""
    try:
        contract.check_artifact_dir(directory)
    except ContractError as exc:
        raise as_server_error(exc) from None
