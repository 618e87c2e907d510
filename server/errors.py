"""Domain errors of the server, raised where a problem is known and mapped to gRPC status codes once.

The interceptor chain (`ortserve.server.interceptors`) maps each class to its status code; anything that is not an
`OrtServeError` becomes INTERNAL with a generic message, so internals never leak to callers.
"""

from __future__ import annotations


class OrtServeError(Exception):
    """Base of every error whose message is safe and useful to show to a caller.

    `str(exc)` is what a caller may see: short, and free of paths, hosts, secrets and exception class names.
    `detail` is for the server log only (the full cause, paths included); it is logged under the call's request id.
    """

    def __init__(self, message: str = "", *, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail


class InvalidInputError(OrtServeError):
    """The request itself is wrong (no texts, an empty text, a limit exceeded, undecodable bytes): INVALID_ARGUMENT."""


class ModelNotFoundError(OrtServeError):
    """No model is configured under the requested name: NOT_FOUND."""


class ModelNotReadyError(OrtServeError):
    """The model exists but cannot answer now (loading, or failed to load): UNAVAILABLE."""


class OverloadedError(OrtServeError):
    """The model's queue is full; the caller should back off and retry: RESOURCE_EXHAUSTED."""


class DeadlineExceededError(OrtServeError):
    """The caller's deadline passed before the model could run its texts: DEADLINE_EXCEEDED."""


class UnauthenticatedError(OrtServeError):
    """The call carries no bearer token, or one the server does not know: UNAUTHENTICATED."""


class PermissionDeniedError(OrtServeError):
    """The call's token is valid but not for the model it names: PERMISSION_DENIED."""


class ArtifactError(OrtServeError):
    """An artifact directory is missing, incomplete or inconsistent; raised at load time."""


class RegistryUnreachableError(ArtifactError):
    """The tracking server could not be asked (down, refused, timed out)."""


class ModelWarmupError(OrtServeError):
    """A model loaded but its first inference failed."""


class ServerStartError(OrtServeError):
    """The server cannot start (for example, its port is taken, or its TLS files cannot be read)."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (or its type name): enough for a one-line error or log entry."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
