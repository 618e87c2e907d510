"""What a route handler receives and returns, and how a route is declared (path template, protocol, docs)."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ErrorStatus, InvalidInputError
from ..observability.call_context import MAX_CALLER_VALUE_CHARS, current_call
from ..security.bearer_tokens import TokenGrant
from ..service import CANARY_KEY, check_model_name

JSON_TYPE = "application/json"


@dataclass
class HttpRequest:
    """One HTTP request, read and checked by the app before its route's handler runs."""

    method: str
    path: str
    path_params: dict[str, str]
    headers: Mapping[str, str]
    """Header names in lower case; a repeated header keeps its first value."""
    body: bytes = b""
    deadline: float | None = None
    """Absolute `time.monotonic()` by which the answer is due (from the deadline header), or None."""
    grant: TokenGrant | None = None
    """What the caller's token may do; None without authentication."""

    def use_model(self, name: str) -> None:
        """For routes that name the model in the body or answer for a default one (the app does this for a `{name}`
        in the path): `PermissionDeniedError` (403) unless the caller's token may use model `name`, and the call's
        record (logs, metrics, spans) names it."""
        if self.grant is not None:
            self.grant.check_model(name)
        record = current_call()
        if record is not None:
            record.model = name[:MAX_CALLER_VALUE_CHARS]

    def json(self) -> Any:
        """The body as JSON; `InvalidInputError` (400) for anything that is not."""
        if not self.body:
            raise InvalidInputError("the request body is empty: send a JSON object")
        try:
            return json.loads(self.body)
        except RecursionError:
            raise InvalidInputError("the request body is JSON nested too deeply") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidInputError(f"the request body is not valid JSON ({_json_reason(exc)})") from None

    def json_object(self) -> dict[str, Any]:
        value = self.json()
        if not isinstance(value, dict):
            raise InvalidInputError(f"the request body must be a JSON object, not {json_type(value)}")
        return value

    @property
    def canary_key(self) -> str | None:
        """The caller's canary key (header `x-ortserve-canary-key`, as gRPC metadata): one key, one version."""
        return self.headers.get(CANARY_KEY) or None

    def content_type(self) -> str:
        """The media type of the body, lower case, without parameters ('' when absent)."""
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def _json_reason(exc: Exception) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at line {exc.lineno} column {exc.colno}"
    return "not UTF-8" if isinstance(exc, UnicodeDecodeError) else "unreadable"


def json_type(value: Any) -> str:
    """The JSON type of a parsed value, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


@dataclass
class HttpResponse:
    status: int = 200
    body: bytes = b""
    content_type: str = JSON_TYPE
    headers: list[tuple[str, str]] = field(default_factory=list)
    model_version: str = ""
    """The version that answered: for the call's record (logs, metrics, spans) and the `x-ortserve-model-version`
    header."""

    @classmethod
    def json(cls, value: Any, status: int = 200, model_version: str = "") -> HttpResponse:
        return cls(status, dump_json(value), model_version=model_version)


def dump_json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


Handler = Callable[[HttpRequest], Awaitable[HttpResponse]]
#: Renders an error in a protocol's own shape: (status, caller-safe message, request id) → response.
ErrorRenderer = Callable[[ErrorStatus, str, str], HttpResponse]


@dataclass(frozen=True)
class RouteDocs:
    """What the OpenAPI document says about a route."""

    summary: str
    tag: str
    request_schema: dict[str, Any] | None = None
    request_example: Any = None
    request_content_types: tuple[str, ...] = (JSON_TYPE,)
    response_schema: dict[str, Any] | None = None
    response_example: Any = None
    error_schema: dict[str, Any] | None = None


_PARAMETER = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class Route:
    """One method on one path template, e.g. `POST /v2/models/{name}/infer`. `{name}` takes one path segment."""

    method: str
    template: str
    handler: Handler
    errors: ErrorRenderer
    docs: RouteDocs
    open: bool = False
    """Health and liveness: answered without a token unless `auth_health` is set."""
    reads_body: bool = False
    pattern: re.Pattern[str] = field(init=False, compare=False)

    def __post_init__(self) -> None:
        parts = _PARAMETER.split(self.template)  # literal, name, literal, name, ..., literal
        regex = "".join(re.escape(part) if i % 2 == 0 else f"(?P<{part}>[^/]+)" for i, part in enumerate(parts))
        object.__setattr__(self, "pattern", re.compile(f"^{regex}$"))

    @property
    def parameters(self) -> list[str]:
        return _PARAMETER.findall(self.template)


def model_parameter(request: HttpRequest, key: str = "name") -> str:
    """A model name from the path, checked for length like every model name a caller sends."""
    name = request.path_params[key]
    check_model_name(name)
    return name
