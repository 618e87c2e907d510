"""MLflow's scoring protocol, as `mlflow models serve` speaks it for a text classifier (a transformers
text-classification pipeline): `POST /invocations`, `GET /ping`, `/health`, `/version` at the root for the default
model, and the same under `/models/{name}/` for every model. A caller that posts to `$URL/invocations` changes at
most its URL.

Accepted bodies, as MLflow accepts them: JSON with exactly one of `inputs`, `instances`, `dataframe_split`,
`dataframe_records` (plus an optional `params` object, which may choose how long texts are read:
`{"long_text": "chunk", "aggregate": "mean", "max_chunks": 8}`), or `text/csv` with a header row. The answer is
`{"predictions": [{"label": ..., "score": ...}, ...]}`: the best label of each text and its probability. Errors are
`{"error_code": ..., "message": ...}` (400 for a bad body), and 415 in plain text for a content type MLflow would
refuse too.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from typing import Any

from ..errors import ErrorStatus, InvalidInputError, ModelNotFoundError, UnsupportedMediaTypeError
from ..open_inference import long_text_parameters
from ..service import InferenceService
from ..types import ClassifyResult, ModelState
from .messages import HttpRequest, HttpResponse, Route, RouteDocs, json_type, model_parameter

TAG = "MLflow scoring protocol"
JSON_TYPE, CSV_TYPE = "application/json", "text/csv"
CONTENT_TYPES = [CSV_TYPE, JSON_TYPE]
FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
#: The column a dataframe's texts are taken from when it has several (MLflow's transformers flavour names it so).
TEXT_COLUMN = "text"

#: MLflow's error codes (its `databricks_pb2.ErrorCode` names) for our HTTP statuses.
MLFLOW_ERROR_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "RESOURCE_DOES_NOT_EXIST",
    413: "BAD_REQUEST",
    429: "REQUEST_LIMIT_EXCEEDED",
    503: "TEMPORARILY_UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

ERROR_SCHEMA = {
    "type": "object",
    "properties": {"error_code": {"type": "string"}, "message": {"type": "string"}},
    "required": ["error_code", "message"],
}
INVOCATIONS_SCHEMA = {
    "type": "object",
    "description": "exactly one of inputs, instances, dataframe_split, dataframe_records; params is optional",
    "properties": {
        "inputs": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
        "instances": {"type": "array", "items": {"type": "string"}},
        "dataframe_split": {
            "type": "object",
            "properties": {
                "columns": {"type": "array", "items": {"type": "string"}},
                "data": {"type": "array", "items": {"type": "array", "items": {"type": "string"}}},
            },
        },
        "dataframe_records": {"type": "array", "items": {"type": "object"}},
        "params": {"type": "object"},
    },
}
PREDICTIONS_SCHEMA = {
    "type": "object",
    "properties": {
        "predictions": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"label": {"type": "string"}, "score": {"type": "number"}},
            },
        }
    },
}
INVOCATIONS_EXAMPLE = {"inputs": ["The central bank raised rates.", "A late goal won the cup final."]}


def render_error(status: ErrorStatus, message: str, request_id: str) -> HttpResponse:
    """Errors as `mlflow models serve` gives them: a JSON `MlflowException`, or plain text for 415."""
    if status.http_status == 415:
        return HttpResponse(415, message.encode("utf-8"), "text/plain; charset=utf-8")
    code = MLFLOW_ERROR_CODES.get(status.http_status, "INTERNAL_ERROR")
    return HttpResponse.json({"error_code": code, "message": message}, status.http_status)


def mlflow_routes(
    service: InferenceService, accepting: Callable[[], bool], default_model: str | None, mlflow_version: str
) -> list[Route]:
    """The scoring routes over `service`. `default_model` answers the root routes (None: the only served model,
    if there is exactly one)."""

    def root_model() -> str:
        if default_model is not None:
            return default_model
        names = [description.name for description in service.list_models()]
        if len(names) == 1:
            return names[0]
        raise ModelNotFoundError(
            f"this server serves {len(names)} models: post to /models/NAME/invocations, or set http_default_model "
            "to answer /invocations"
        )

    async def ping(request: HttpRequest) -> HttpResponse:
        name = model_parameter(request) if "name" in request.path_params else root_model()
        ready = accepting() and service.get_model(name).state is ModelState.SERVING
        return HttpResponse(200 if ready else 503, b"\n")

    async def version(request: HttpRequest) -> HttpResponse:
        if "name" in request.path_params:
            service.get_model(model_parameter(request))  # 404 for a model that is not served
        return HttpResponse(200, mlflow_version.encode())

    async def invocations(request: HttpRequest) -> HttpResponse:
        if "name" in request.path_params:
            name = model_parameter(request)
        else:
            name = root_model()
            request.use_model(name)
        service.get_model(name)  # 404 before any complaint about the body
        params: dict[str, Any] = {}
        texts = texts_of(request, params)
        long_text = long_text_parameters(params)  # `params`: {"long_text": "chunk"}, as the V2 parameters
        result = await service.classify(name, texts, 1, request.deadline, request.canary_key, long_text)
        predictions = [prediction(result, row) for row in range(len(result.results))]
        return HttpResponse.json({"predictions": predictions}, model_version=result.model_version)

    def prediction(result: ClassifyResult, row: int) -> dict[str, Any]:
        """`mlflow models serve`'s answer for one text; a text that could not be classified (no visible character,
        invalid Unicode) gets null label and score and its `error`, and the other texts are answered as usual. With
        `long_text` `chunk`, the windows read (`windows`) too."""
        ranked = result.results[row]
        if not ranked:
            return {"label": None, "score": None, "error": result.error_at(row)}
        answer: dict[str, Any] = {"label": ranked[0].label, "score": ranked[0].score}
        if result.windows:
            answer["windows"] = result.windows_at(row)
        return answer

    def docs(summary: str, **more: Any) -> RouteDocs:
        return RouteDocs(summary, TAG, error_schema=ERROR_SCHEMA, **more)

    invocation_docs = docs(
        "Classify texts (MLflow scoring protocol)",
        request_schema=INVOCATIONS_SCHEMA,
        request_example=INVOCATIONS_EXAMPLE,
        request_content_types=(JSON_TYPE, CSV_TYPE),
        response_schema=PREDICTIONS_SCHEMA,
    )
    routes = []
    for prefix in ("", "/models/{name}"):
        routes += [
            Route("POST", f"{prefix}/invocations", invocations, render_error, invocation_docs, reads_body=True),
            # Open without a token at the root only: a model's own health would tell anyone which models are served.
            Route("GET", f"{prefix}/ping", ping, render_error, docs("Health (503 while not ready)"), open=not prefix),
            Route("GET", f"{prefix}/health", ping, render_error, docs("Health (same as ping)"), open=not prefix),
            Route("GET", f"{prefix}/version", version, render_error, docs("Version of the MLflow protocol")),
        ]
    return routes


def texts_of(request: HttpRequest, params_out: dict[str, Any] | None = None) -> list[str]:
    """The texts of an invocation body, in any form MLflow accepts for a text classifier; its `params` object, if
    any, into `params_out`."""
    media_type, _, parameters = request.headers.get("content-type", "").partition(";")
    media_type = media_type.strip().lower()
    charset = ""
    for pair in parameters.split(";"):
        key, _, value = pair.strip().partition("=")
        if not key:
            continue
        if key.lower() != "charset":
            raise UnsupportedMediaTypeError(f"Unrecognized content type parameters: {key[:40]}.")
        charset = value.strip().strip('"').lower()
    if charset not in ("", "utf-8"):
        raise UnsupportedMediaTypeError("The scoring server only supports UTF-8")
    if media_type == CSV_TYPE:
        return csv_texts(request.body)
    if media_type != JSON_TYPE:
        shown = request.headers.get("content-type", "")[:80]
        raise UnsupportedMediaTypeError(
            f"This predictor only supports the following content types: Types: {CONTENT_TYPES}. Got '{shown}'."
        )
    body = request.json()
    if isinstance(body, list):
        raise InvalidInputError(f"{required_format()}. Received a list.")
    if not isinstance(body, dict):
        raise InvalidInputError(f"{required_format()}. Received {json_type(body)}.")
    params = body.get("params")
    if params is not None and not isinstance(params, dict):
        raise InvalidInputError(f'"params" must be an object, not {json_type(params)}')
    if params is not None and params_out is not None:
        params_out.update(params)
    formats = [key for key in FORMATS if key in body]
    if len(formats) != 1:
        raise InvalidInputError(f"{required_format()}. Received dictionary with input fields: {sorted(body)[:8]}.")
    value = body[formats[0]]
    if formats[0] == "dataframe_split":
        return split_texts(value)
    if formats[0] == "dataframe_records":
        return record_texts(value)
    return tensor_texts(formats[0], value)


def required_format() -> str:
    return f"The input must be a JSON dictionary with exactly one of the input fields {set(FORMATS)}"


def tensor_texts(key: str, value: Any) -> list[str]:
    """`inputs` / `instances`: a text, a list of texts, `{"text": ...}` or a list of `{"text": ...}`."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return tensor_texts(key, _text_field(value, key))
    if isinstance(value, list):
        return [item if isinstance(item, str) else _string(_text_field(item, key), key) for item in value]
    raise InvalidInputError(f'"{key}" must be a text or a list of texts, not {json_type(value)}')


def _text_field(item: Any, key: str) -> Any:
    if isinstance(item, dict) and TEXT_COLUMN in item:
        return item[TEXT_COLUMN]
    if isinstance(item, dict) and len(item) == 1:
        return next(iter(item.values()))
    raise InvalidInputError(f'"{key}" holds {json_type(item)}; send texts, or objects with a "{TEXT_COLUMN}" field')


def _string(value: Any, key: str) -> str:
    if isinstance(value, str):
        return value
    raise InvalidInputError(f'"{key}" holds {json_type(value)} where a text was expected')


def split_texts(value: Any) -> list[str]:
    if not isinstance(value, dict) or not isinstance(value.get("data"), list):
        raise InvalidInputError('"dataframe_split" must be an object with "data" (rows) and optionally "columns"')
    column = _column_index(value.get("columns"))
    texts = []
    for row in value["data"]:
        cell = row[column] if isinstance(row, list) and len(row) > column else row
        texts.append(_string(cell, "dataframe_split"))
    return texts


def _column_index(columns: Any) -> int:
    if columns is None:
        return 0
    if not isinstance(columns, list) or not all(isinstance(name, str) for name in columns) or not columns:
        raise InvalidInputError('"dataframe_split.columns" must be a non-empty list of column names')
    if TEXT_COLUMN in columns:
        return columns.index(TEXT_COLUMN)
    if len(columns) == 1:
        return 0
    raise InvalidInputError(f'"dataframe_split" has several columns and none is named "{TEXT_COLUMN}"')


def record_texts(value: Any) -> list[str]:
    if not isinstance(value, list):
        raise InvalidInputError('"dataframe_records" must be a list of objects (one per row)')
    return [_string(_text_field(record, "dataframe_records"), "dataframe_records") for record in value]


def csv_texts(body: bytes) -> list[str]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInputError("Ensure that input is a valid UTF-8 encoded string.") from None
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        raise InvalidInputError(f"Failed to parse input as CSV: {exc}") from None
    if not rows:
        raise InvalidInputError("the CSV body is empty: send a header row, then one text per row")
    column = _column_index(rows[0])
    return [row[column] if len(row) > column else "" for row in rows[1:]]
