"""The contract's own errors: what went wrong with an artifact, a `models:/` URI or the registry.

The message (`str(exc)`) is short and safe to show to anyone: it names the model URI or the file, never an
absolute path, a host or a credential. `detail` carries what an operator needs in the log (paths, the MLflow
error text with credentials redacted). Server and export each map these onto their own error types.
"""

from __future__ import annotations


class ContractError(Exception):
    """Base of the contract's errors: a safe message plus a `detail` for the log only."""

    def __init__(self, message: str, *, detail: str = ""):
        super().__init__(message)
        self.detail = detail


class ArtifactInvalidError(ContractError):
    """An artifact directory or its manifest is missing, incomplete or unreadable."""


class IntegrityError(ArtifactInvalidError):
    """A file does not hold the bytes its digest says (completeness marker or export-recorded digest)."""


class ModelUriError(ContractError):
    """A `models:/` URI is malformed."""


class RegistryError(ContractError):
    """The registry answered with an error that is neither "not found" nor an outage (e.g. permission denied)."""


class RegistryNotFoundError(RegistryError):
    """The registry answered: no such registered model, version, alias or stage."""


class RegistryUnavailableError(RegistryError):
    """The registry could not be asked (down, refused, timed out, overloaded)."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (or its type name): enough for a one-line error or log entry."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
