"""The client's error: a failed call with its gRPC status code and the server's message."""

from __future__ import annotations

import grpc


class InferenceError(Exception):
    """A call to the ortserve server failed.

    `code` is the gRPC status: NOT_FOUND (unknown model), INVALID_ARGUMENT (bad input), UNAVAILABLE (server or model
    not ready), RESOURCE_EXHAUSTED (server overloaded: back off), DEADLINE_EXCEEDED (timeout).
    """

    def __init__(self, code: grpc.StatusCode, details: str):
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> InferenceError:
        code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
        details = error.details() if hasattr(error, "details") else str(error)
        return cls(code, details or "")
