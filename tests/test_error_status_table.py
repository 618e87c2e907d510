"""Every domain error of the server maps to a deliberate gRPC status: none falls through to INTERNAL by accident.

Classes are found by walking every module of `ortserve.server`, so an error class added anywhere later must be given
a status here (and in `STATUS_FOR_ERROR`) or be declared start-only."""

from __future__ import annotations

import importlib
import pkgutil

import grpc
import pytest

import ortserve.server
from ortserve.server.errors import ERROR_STATUS, INTERNAL_STATUS, OrtServeError, ServerStartError, error_status
from ortserve.server.interceptors.error_status import STATUS_FOR_ERROR, status_for

#: The table as designed: what each error means to a caller.
EXPECTED = {
    "InvalidInputError": grpc.StatusCode.INVALID_ARGUMENT,
    "ModelNotFoundError": grpc.StatusCode.NOT_FOUND,
    "ModelNotReadyError": grpc.StatusCode.UNAVAILABLE,
    "ArtifactError": grpc.StatusCode.UNAVAILABLE,
    "ModelWarmupError": grpc.StatusCode.UNAVAILABLE,
    "OverloadedError": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "DeadlineExceededError": grpc.StatusCode.DEADLINE_EXCEEDED,
    "UnauthenticatedError": grpc.StatusCode.UNAUTHENTICATED,
    "PermissionDeniedError": grpc.StatusCode.PERMISSION_DENIED,
    # Raised by the HTTP port only (gRPC has its own message size limit and one content type).
    "PayloadTooLargeError": grpc.StatusCode.INVALID_ARGUMENT,
    "UnsupportedMediaTypeError": grpc.StatusCode.INVALID_ARGUMENT,
}
#: The same table's HTTP statuses (`errors.ERROR_STATUS`, which both doors map through).
EXPECTED_HTTP = {
    "InvalidInputError": 400,
    "ModelNotFoundError": 404,
    "ModelNotReadyError": 503,
    "ArtifactError": 503,
    "ModelWarmupError": 503,
    "OverloadedError": 429,
    "DeadlineExceededError": 504,
    "UnauthenticatedError": 401,
    "PermissionDeniedError": 403,
    "PayloadTooLargeError": 413,
    "UnsupportedMediaTypeError": 415,
}


def every_error_class() -> list[type[OrtServeError]]:
    for module in pkgutil.walk_packages(ortserve.server.__path__, "ortserve.server."):
        importlib.import_module(module.name)
    found: list[type[OrtServeError]] = []
    pending: list[type[OrtServeError]] = [OrtServeError]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return [cls for cls in found if cls is not OrtServeError]


@pytest.mark.parametrize("error_class", every_error_class(), ids=lambda cls: cls.__name__)
def test_every_error_class_has_a_deliberate_status(error_class: type[OrtServeError]) -> None:
    if issubclass(error_class, ServerStartError):
        return  # raised before any call: an exit code and a message (cli/serve.py), never a status
    assert error_class.__name__ in EXPECTED, f"{error_class.__name__} has no status in the designed table"
    code, message = status_for(error_class("model 'x' at /srv/models/x on 10.0.0.7:5000 failed"))
    assert code == EXPECTED[error_class.__name__]
    assert "/srv" not in message and "10.0.0.7" not in message  # caller-safe whatever the message carried


def test_the_table_holds_exactly_the_designed_rows() -> None:
    assert {cls.__name__: code for cls, code in STATUS_FOR_ERROR.items()} == EXPECTED


def test_http_statuses_come_from_the_same_table() -> None:
    assert {cls.__name__: status.http_status for cls, status in ERROR_STATUS.items()} == EXPECTED_HTTP
    assert {cls: grpc.StatusCode[status.grpc_code] for cls, status in ERROR_STATUS.items()} == STATUS_FOR_ERROR
    assert error_status(ValueError("secret at /etc/passwd")) == (INTERNAL_STATUS, "internal error")
    assert INTERNAL_STATUS.http_status == 500


def test_anything_else_is_internal_with_a_generic_message() -> None:
    assert status_for(ValueError("secret at /etc/passwd")) == (grpc.StatusCode.INTERNAL, "internal error")
    assert status_for(ServerStartError("port 50051 in use")) == (grpc.StatusCode.INTERNAL, "internal error")
