"""Domain errors of the server, raised where a problem is known, and the one table (`ERROR_STATUS`) that gives each
its gRPC status code and its HTTP status.

The interceptor chain (`ortserve.server.interceptors`) and the HTTP app (`ortserve.server.http`) both map through
`ERROR_STATUS`; anything that is not an `OrtServeError` becomes INTERNAL / 500 with a generic message, so internals
never leak to callers.
"""

from __future__ import annotations

import errno
import re
from dataclasses import dataclass

from ortserve.contract.redact import redact_text

#: Longest message a caller is sent; a domain message is never this long, a library's error text might be.
MAX_CALLER_MESSAGE = 400


class OrtServeError(Exception):
    """Base of every error whose message is safe and useful to show to a caller.

    `str(exc)` is what a caller may see: short, and free of paths, hosts, secrets and exception class names.
    `detail` is for the server log only (the full cause, paths included); it is logged under the call's request id.
    """

    def __init__(self, message: str = "", *, detail: str = "", retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.detail = detail
        self.retry_after_s = retry_after_s
        """When the caller may usefully send the call again, in seconds from now (a refusal under load), or None:
        sent as gRPC's `grpc-retry-pushback-ms` trailer and HTTP's `Retry-After` header."""


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


class PayloadTooLargeError(InvalidInputError):
    """The HTTP request body is over the size limit: 413 (gRPC has its own message size limit)."""


class UnsupportedMediaTypeError(InvalidInputError):
    """The HTTP request's content type is not one the route reads: 415."""


class ArtifactError(OrtServeError):
    """An artifact directory is missing, incomplete or inconsistent; raised at load time."""


class ModelWarmupError(OrtServeError):
    """A model loaded but its first inference failed."""


class ServerStartError(OrtServeError):
    """The server cannot start (for example, its port is taken, or its TLS files cannot be read). Raised before any
    call is answered: `ortserve serve` turns it into a message and an exit code, never a status."""

    @classmethod
    def cannot_bind(cls, what: str, host: str, port: int, flag: str, error: OSError) -> ServerStartError:
        """`what` (e.g. "listen for HTTP") failed to bind `host`:`port`: the message names the port and the fix."""
        if error.errno == errno.EADDRINUSE:
            reason = "it is in use by another process; stop that process, or pass"
        elif error.errno == errno.EADDRNOTAVAIL:
            reason = "the address is not this machine's; pass --host with one of its addresses, or change"
        else:
            reason = f"{error.strerror or error}; check"
        return cls(f"cannot {what} on port {port} of {host}: {reason} {flag} with a free port ({flag} 0 picks one)")


class ModelConfigError(ServerStartError):
    """A `--model` that cannot load as written, however long the server waits (a malformed URI, an unknown scheme, a
    missing directory, a `models:/` URI with no registry configured): the start stops (`ortserve serve` exits 2)."""


@dataclass(frozen=True)
class ErrorStatus:
    """How one domain error is reported at each door."""

    grpc_code: str
    """Name of the `grpc.StatusCode` (kept as a name so that this module needs no grpc import)."""
    http_status: int


#: The one place where domain errors become statuses, for gRPC and HTTP alike. Subclasses come before their base
#: (the first match wins).
ERROR_STATUS: dict[type[OrtServeError], ErrorStatus] = {
    PayloadTooLargeError: ErrorStatus("INVALID_ARGUMENT", 413),
    UnsupportedMediaTypeError: ErrorStatus("INVALID_ARGUMENT", 415),
    InvalidInputError: ErrorStatus("INVALID_ARGUMENT", 400),
    ModelNotFoundError: ErrorStatus("NOT_FOUND", 404),
    ModelNotReadyError: ErrorStatus("UNAVAILABLE", 503),
    ArtifactError: ErrorStatus("UNAVAILABLE", 503),
    ModelWarmupError: ErrorStatus("UNAVAILABLE", 503),
    OverloadedError: ErrorStatus("RESOURCE_EXHAUSTED", 429),
    DeadlineExceededError: ErrorStatus("DEADLINE_EXCEEDED", 504),
    UnauthenticatedError: ErrorStatus("UNAUTHENTICATED", 401),
    PermissionDeniedError: ErrorStatus("PERMISSION_DENIED", 403),
}
#: Anything else: the caller learns only that it failed.
INTERNAL_STATUS = ErrorStatus("INTERNAL", 500)
INTERNAL_MESSAGE = "internal error"


def retry_after_s(exc: BaseException) -> float | None:
    """Seconds after which the caller of a refused call may usefully send it again, if the server knows (gRPC's
    `grpc-retry-pushback-ms` trailer and HTTP's `Retry-After` header are both read from here)."""
    return exc.retry_after_s if isinstance(exc, OrtServeError) else None


def error_status(exc: BaseException) -> tuple[ErrorStatus, str]:
    """The status of `exc` and the message a caller may see (generic for anything but a domain error)."""
    for error_type, status in ERROR_STATUS.items():
        if isinstance(exc, error_type):
            return status, caller_message(str(exc))
    return INTERNAL_STATUS, INTERNAL_MESSAGE


# Anything that looks like a filesystem path, a URL, a host:port or an exception class is cut from what a caller
# sees. Domain messages are meant to carry none already; this is the net under them (a library's error text).
# Each pattern starts only where a token starts (the lookbehinds): a long run of letters or dots from a caller would
# otherwise be rescanned from every position (quadratic: 8 s for 60,000 letters in one message).
_URL = re.compile(r"(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"()<>\[\]]*")
# A `models:/NAME@ALIAS` URI is no path: it names the model as `--model` and GetModel's source URI do, and the message
# that names it ("models:/topic-onnx@production not found in the registry") tells the caller what to fix.
_PATH = re.compile(r"(?:^|(?<=[\s'\"(\[=,:]))(?<!models:)~?/[^\s'\"()\[\],;]+")
_HOST_PORT = re.compile(
    r"(?<![A-Za-z0-9.-])(?:\d{1,3}(?:\.\d{1,3}){3}|localhost|[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+):\d{1,5}\b"
)
_IPV4 = re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}\b")
_EXCEPTION_CLASS = re.compile(r"<class [^>]*>|\b\w*(?:Error|Exception)\b")


def caller_message(message: str) -> str:
    """`message` without paths, URLs, hosts or exception class names, on one line, at most `MAX_CALLER_MESSAGE`
    characters."""
    # Past this length nothing is shown anyway; the cut also bounds the work on a caller's very long input.
    message = redact_text(message[: 8 * MAX_CALLER_MESSAGE])  # the configured credentials, whatever they hold
    message = _URL.sub("<uri>", message)
    message = _HOST_PORT.sub("<host>", message)
    message = _IPV4.sub("<host>", message)
    message = _PATH.sub("<path>", message)
    message = _EXCEPTION_CLASS.sub("<error>", message)
    message = " ".join(message.split())
    if len(message) > MAX_CALLER_MESSAGE:
        message = message[: MAX_CALLER_MESSAGE - 1] + "…"
    return message
