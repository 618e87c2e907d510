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
    """

    def __init__(self, code: grpc.StatusCode, details: str, hint: str | None = None):
        message = f"{code.name}: {hint} (gRPC: {details})" if hint else f"{code.name}: {details}"
        super().__init__(message)
        self.code = code
        self.details = details
        self.hint = hint

    def __reduce__(self) -> tuple[type[InferenceError], tuple[grpc.StatusCode, str, str | None]]:
        # Picklable across processes (Spark, multiprocessing) with every field, not only the message.
        return (type(self), (self.code, self.details, self.hint))

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> InferenceError:
        code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
        details = error.details() if hasattr(error, "details") else str(error)
        return cls(code, details or "")
