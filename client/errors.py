"""The client's error: a failed call with its gRPC status code, the server's message and, where the client can tell,
what to change."""

from __future__ import annotations

import grpc


class InferenceError(Exception):
    """A call to the ortserve server failed.

    `code` is the gRPC status: NOT_FOUND (unknown model), INVALID_ARGUMENT (bad input), UNAVAILABLE (server or model
    not ready, or no connection), RESOURCE_EXHAUSTED (server overloaded: back off), DEADLINE_EXCEEDED (timeout).
    `details` is gRPC's message as received. `hint`, set when the connection itself failed and the client could tell
    why (plaintext to a TLS port, a missing client certificate, nothing listening...), names the fix; the message
    puts it first.

    `retry_after_s` is the server's retry pushback (its `grpc-retry-pushback-ms` trailer), in seconds, or None: how
    long to wait before sending the call again. gRPC already waited it between its own attempts of a
    RESOURCE_EXHAUSTED (see `RetryPolicy`); a DEADLINE_EXCEEDED is never retried by the client (the call's time is
    spent, and only the caller knows whether a later answer is still of use), so a caller that sends the call again
    should first wait `retry_after_s` when it is set (a model refused the call for the work queued ahead of it and
    said when to come back), else back off on its own (jittered, growing). Coming back sooner only meets another
    refusal, which costs the server and the caller CPU that answers need.
    """

    def __init__(
        self, code: grpc.StatusCode, details: str, hint: str | None = None, retry_after_s: float | None = None
    ):
        message = f"{code.name}: {hint} (gRPC: {details})" if hint else f"{code.name}: {details}"
        super().__init__(message)
        self.code = code
        self.details = details
        self.hint = hint
        self.retry_after_s = retry_after_s

    def __reduce__(
        self,
    ) -> tuple[type[InferenceError], tuple[grpc.StatusCode, str, str | None, float | None]]:
        # Picklable across processes (Spark, multiprocessing) with every field, not only the message.
        return (type(self), (self.code, self.details, self.hint, self.retry_after_s))

    def replaced(self, details: str | None = None, hint: str | None = None) -> InferenceError:
        """This error with other `details` or `hint`, its code and retry pushback kept."""
        return type(self)(
            self.code,
            self.details if details is None else details,
            self.hint if hint is None else hint,
            self.retry_after_s,
        )

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> InferenceError:
        code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
        details = error.details() if hasattr(error, "details") else str(error)
        return cls(code, details or "", retry_after_s=retry_pushback_s(error))


#: gRPC's retry pushback trailer (gRFC A6): milliseconds the server asks a caller to wait before trying again.
PUSHBACK_TRAILER = "grpc-retry-pushback-ms"


def retry_pushback_s(error: grpc.RpcError) -> float | None:
    """The `grpc-retry-pushback-ms` trailer of a failed call, in seconds; None without one (or one that is not a
    non-negative number of milliseconds: gRPC reads that as "do not retry")."""
    trailing = getattr(error, "trailing_metadata", None)
    for key, value in (trailing() if callable(trailing) else None) or ():
        if key == PUSHBACK_TRAILER:
            text = value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
            return int(text) / 1000 if text.isdigit() else None
    return None
