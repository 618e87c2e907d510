"""Domain errors of the server, raised where a problem is known and mapped to gRPC status codes once.

The transport layer (`ortserve.server.transport`) maps each class to its status code; anything that is not an
`OrtServeError` becomes INTERNAL with a generic message, so internals never leak to callers.
"""

from __future__ import annotations


class OrtServeError(Exception):
    """Base of every error whose message is safe and useful to show to a caller.

    `detail` is for the server log only (paths, hosts, the redacted text of an underlying error).
    """

    def __init__(self, message: str = "", *, detail: str = ""):
        super().__init__(message)
        self.detail = detail


class InvalidInputError(OrtServeError):
    """The request itself is wrong (no texts, an empty text, a limit exceeded): INVALID_ARGUMENT."""


class ModelNotFoundError(OrtServeError):
    """No model is configured under the requested name: NOT_FOUND."""


class ModelNotReadyError(OrtServeError):
    """The model exists but cannot answer now (loading, or failed to load): UNAVAILABLE."""


class OverloadedError(OrtServeError):
    """The model's queue is full; the caller should back off and retry: RESOURCE_EXHAUSTED."""


class DeadlineExceededError(OrtServeError):
    """The caller's deadline passed before the model could run its texts: DEADLINE_EXCEEDED."""


class ArtifactError(OrtServeError):
    """An artifact directory is missing, incomplete or inconsistent; raised at load time."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (or its type name): enough for a one-line error or log entry."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
