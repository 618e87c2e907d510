"""Domain errors of the server, raised where a problem is known and mapped to gRPC status codes once.

The interceptor chain (`ortserve.server.interceptors`) maps each class to its status code; anything that is not an
`OrtServeError` becomes INTERNAL with a generic message, so internals never leak to callers.
"""

from __future__ import annotations

import re

#: Longest message a caller is sent; a domain message is never this long, a library's error text might be.
MAX_CALLER_MESSAGE = 400


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


class ModelWarmupError(OrtServeError):
    """A model loaded but its first inference failed."""


class ServerStartError(OrtServeError):
    """The server cannot start (for example, its port is taken, or its TLS files cannot be read). Raised before any
    call is answered: `ortserve serve` turns it into a message and an exit code, never a status."""


# Anything that looks like a filesystem path, a URL, a host:port or an exception class is cut from what a caller
# sees. Domain messages are meant to carry none already; this is the net under them (a library's error text).
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"()<>\[\]]*")
_PATH = re.compile(r"(?:^|(?<=[\s'\"(\[=,:]))~?/[^\s'\"()\[\],;]+")
_HOST_PORT = re.compile(r"\b(?:\d{1,3}(?:\.\d{1,3}){3}|localhost|[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+):\d{1,5}\b")
_IPV4 = re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}\b")
_EXCEPTION_CLASS = re.compile(r"<class [^>]*>|\b\w*(?:Error|Exception)\b")


def caller_message(message: str) -> str:
    """`message` without paths, URLs, hosts or exception class names, on one line, at most `MAX_CALLER_MESSAGE`
    characters."""
    message = _URL.sub("<uri>", message)
    message = _HOST_PORT.sub("<host>", message)
    message = _IPV4.sub("<host>", message)
    message = _PATH.sub("<path>", message)
    message = _EXCEPTION_CLASS.sub("<error>", message)
    message = " ".join(message.split())
    if len(message) > MAX_CALLER_MESSAGE:
        message = message[: MAX_CALLER_MESSAGE - 1] + "…"
    return message
