"""The Open Inference Protocol (KServe V2) over REST: JSON ⇄ `open_inference` calls, as `transport_v2` does for
gRPC. Also speaks Triton's binary tensor data extension (what `tritonclient.http` sends by default): a request or
response body is a JSON header of `Inference-Header-Content-Length` bytes followed by raw tensors.

Besides, Triton's REST extensions that tritonclient calls, built by `open_inference_extensions` as gRPC's are:
`POST /v2/repository/index`, `GET /v2/models[/{name}[/versions/{version}]]/stats` and
`GET /v2/models/{name}[/versions/{version}]/config`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import ErrorStatus, InvalidInputError, UnsupportedMediaTypeError
from ..open_inference import (
    AGGREGATE_PARAMETER,
    EXTENSIONS,
    LONG_TEXT_PARAMETER,
    MAX_CHUNKS_PARAMETER,
    OUTPUT_TOP_LABELS,
    OUTPUT_TOP_SCORES,
    OUTPUTS,
    PLATFORM,
    SERVER_NAME,
    TOP_K_PARAMETER,
    InferAnswer,
    check_input_count,
    check_output_count,
    check_outputs,
    check_request_id,
    check_text_input,
    decode_raw_bytes,
    described,
    encode_raw,
    infer,
    long_text_parameters,
    model_parameters,
    model_ready,
    model_tensors,
    server_version,
)
from ..open_inference_extensions import REPOSITORY_STATES, model_config, model_statistics, repository_index
from ..service import InferenceService
from ..types import ModelDescription
from .messages import HttpRequest, HttpResponse, Route, RouteDocs, dump_json, json_type, model_parameter

#: Header of the binary tensor data extension: the length of the JSON part of the body.
HEADER_LENGTH = "inference-header-content-length"
TAG = "Open Inference Protocol (V2)"

ERROR_SCHEMA = {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}
TENSOR_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "datatype": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer"}},
        "data": {"type": "array", "items": {}},
        "parameters": {"type": "object"},
    },
    "required": ["name", "datatype", "shape"],
}
INFER_REQUEST_SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "parameters": {
            "type": "object",
            "properties": {
                TOP_K_PARAMETER: {"type": "integer", "minimum": 0},
                LONG_TEXT_PARAMETER: {"type": "string", "enum": ["truncate", "chunk"]},
                AGGREGATE_PARAMETER: {"type": "string", "enum": ["mean", "max"]},
                MAX_CHUNKS_PARAMETER: {"type": "integer", "minimum": 0},
            },
        },
        "inputs": {"type": "array", "items": TENSOR_SCHEMA, "minItems": 1, "maxItems": 1},
        "outputs": {
            "type": "array",
            "items": {"type": "object", "properties": {"name": {"type": "string", "enum": list(OUTPUTS)}}},
        },
    },
    "required": ["inputs"],
}
INFER_EXAMPLE = {
    "inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["The central bank raised rates."]}],
    "parameters": {TOP_K_PARAMETER: 1},
    "outputs": [{"name": OUTPUT_TOP_LABELS}, {"name": OUTPUT_TOP_SCORES}],
}
INFER_RESPONSE_SCHEMA = {
    "type": "object",
    "properties": {
        "model_name": {"type": "string"},
        "model_version": {"type": "string"},
        "id": {"type": "string"},
        "outputs": {"type": "array", "items": TENSOR_SCHEMA},
    },
}
METADATA_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "versions": {"type": "array", "items": {"type": "string"}},
        "platform": {"type": "string"},
        "inputs": {"type": "array", "items": TENSOR_SCHEMA},
        "outputs": {"type": "array", "items": TENSOR_SCHEMA},
        "parameters": {"type": "object", "description": "a model with a challenger: its comparison (challenger_*)"},
    },
}
INDEX_REQUEST_SCHEMA = {"type": "object", "properties": {"ready": {"type": "boolean"}}}
INDEX_SCHEMA = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "version": {"type": "string"},
            "state": {"type": "string", "enum": sorted(set(REPOSITORY_STATES.values()))},
            "reason": {"type": "string"},
        },
    },
}
DURATION_SCHEMA = {"type": "object", "properties": {"count": {"type": "integer"}, "ns": {"type": "integer"}}}
STATS_SCHEMA = {
    "type": "object",
    "properties": {
        "model_stats": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "version": {"type": "string"},
                    "last_inference": {"type": "integer", "description": "milliseconds since the epoch"},
                    "inference_count": {"type": "integer", "description": "texts classified"},
                    "execution_count": {"type": "integer", "description": "ONNX Runtime runs"},
                    "inference_stats": {"type": "object", "additionalProperties": DURATION_SCHEMA},
                },
            },
        }
    },
}
CONFIG_SCHEMA = {
    "type": "object",
    "description": "Triton's ModelConfig as JSON (the fields ortserve fills)",
    "properties": {
        "name": {"type": "string"},
        "platform": {"type": "string"},
        "backend": {"type": "string"},
        "max_batch_size": {"type": "integer"},
        "input": {"type": "array", "items": {"type": "object"}},
        "output": {"type": "array", "items": {"type": "object"}},
        "dynamic_batching": {"type": "object"},
        "parameters": {"type": "object"},
    },
}


def render_error(status: ErrorStatus, message: str, request_id: str) -> HttpResponse:
    """Errors as KServe's and Triton's REST servers give them: `{"error": "..."}`."""
    return HttpResponse.json({"error": message}, status.http_status)


def v2_routes(service: InferenceService, accepting: Callable[[], bool]) -> list[Route]:
    """The V2 routes over `service`; `accepting()` is false while the server drains (ready routes answer 503)."""
    version = server_version()

    async def server_metadata(request: HttpRequest) -> HttpResponse:
        return HttpResponse.json({"name": SERVER_NAME, "version": version, "extensions": list(EXTENSIONS)})

    async def live(request: HttpRequest) -> HttpResponse:
        return HttpResponse.json({"live": True})

    async def ready(request: HttpRequest) -> HttpResponse:
        is_ready = accepting() and service.all_serving()
        return HttpResponse.json({"ready": is_ready}, 200 if is_ready else 503)

    async def model_metadata(request: HttpRequest) -> HttpResponse:
        name = model_parameter(request)
        return HttpResponse.json(metadata_json(described(service, name, request.path_params.get("version", ""))))

    async def ready_model(request: HttpRequest) -> HttpResponse:
        name = model_parameter(request)
        is_ready = model_ready(service, name, request.path_params.get("version", ""), accepting())
        return HttpResponse.json({"name": name, "ready": is_ready}, 200 if is_ready else 503)

    async def model_infer(request: HttpRequest) -> HttpResponse:
        name = model_parameter(request)
        model_version = request.path_params.get("version", "")
        described(service, name, model_version)  # NOT_FOUND before input errors, as over gRPC
        body, binary = split_body(request)
        request_id = request_id_of(body)
        texts = request_texts(body, binary)
        top_k = top_k_of(body.get("parameters"))
        long_text = long_text_parameters(body.get("parameters") or {})
        wanted, binary_outputs = requested_outputs(body)
        text_format = any(output not in binary_outputs for output in wanted)
        answer = await infer(
            service,
            name,
            model_version,
            texts,
            top_k,
            request.deadline,
            wanted,
            text_format,
            request.canary_key,
            long_text,
        )
        return infer_response(answer, request_id, wanted, binary_outputs)

    async def index(request: HttpRequest) -> HttpResponse:
        return HttpResponse.json(repository_index(service, ready_only_of(request)))

    async def statistics(request: HttpRequest) -> HttpResponse:
        name = model_parameter(request) if "name" in request.path_params else ""
        return HttpResponse.json(model_statistics(service, name, request.path_params.get("version", "")))

    async def config(request: HttpRequest) -> HttpResponse:
        name = model_parameter(request)
        return HttpResponse.json(model_config(service, name, request.path_params.get("version", "")))

    def docs(summary: str, response: dict[str, Any] | None = None, **more: Any) -> RouteDocs:
        return RouteDocs(summary, TAG, response_schema=response, error_schema=ERROR_SCHEMA, **more)

    ready_schema = {"type": "object", "properties": {"ready": {"type": "boolean"}}}
    routes = [
        Route("GET", "/v2", server_metadata, render_error, docs("Server metadata")),
        Route("GET", "/v2/health/live", live, render_error, docs("Liveness", ready_schema), open=True),
        Route("GET", "/v2/health/ready", ready, render_error, docs("Readiness (503 while not ready)"), open=True),
        Route(
            "POST",
            "/v2/repository/index",
            index,
            render_error,
            docs(
                "Every model, its version and state (Triton's repository index; the body may be empty)",
                INDEX_SCHEMA,
                request_schema=INDEX_REQUEST_SCHEMA,
                request_example={"ready": False},
            ),
            reads_body=True,
        ),
        Route("GET", "/v2/models/stats", statistics, render_error, docs("Every model's statistics", STATS_SCHEMA)),
    ]
    infer_docs = docs(
        "Classify texts (input `text`, BYTES)",
        INFER_RESPONSE_SCHEMA,
        request_schema=INFER_REQUEST_SCHEMA,
        request_example=INFER_EXAMPLE,
    )
    for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        routes += [
            Route("GET", prefix, model_metadata, render_error, docs("Model metadata", METADATA_SCHEMA)),
            Route("GET", f"{prefix}/ready", ready_model, render_error, docs("Model readiness")),  # token: see ping
            Route("POST", f"{prefix}/infer", model_infer, render_error, infer_docs, reads_body=True),
            Route("GET", f"{prefix}/stats", statistics, render_error, docs("Model statistics", STATS_SCHEMA)),
            Route(
                "GET", f"{prefix}/config", config, render_error, docs("Model configuration (read-only)", CONFIG_SCHEMA)
            ),
        ]
    return routes


def ready_only_of(request: HttpRequest) -> bool:
    """The repository index request's `ready` flag; tritonclient sends no body at all."""
    if not request.body.strip():
        return False
    ready = request.json_object().get("ready", False)
    if not isinstance(ready, bool):
        raise InvalidInputError(f'"ready" must be a boolean, not {json_type(ready)}')
    return ready


def metadata_json(description: ModelDescription) -> dict[str, Any]:
    inputs, outputs = model_tensors(description)
    metadata: dict[str, Any] = {
        "name": description.name,
        "versions": [description.version] if description.version else [],
        "platform": PLATFORM,
        "inputs": [vars(tensor) for tensor in inputs],
        "outputs": [vars(tensor) for tensor in outputs],
    }
    parameters = model_parameters(description)
    if parameters:  # a model with a challenger: its comparison, as over gRPC
        metadata["parameters"] = parameters
    return metadata


def split_body(request: HttpRequest) -> tuple[dict[str, Any], bytes]:
    """The JSON part of the body as an object, and the binary part (empty without the binary extension)."""
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise UnsupportedMediaTypeError(f"content-encoding {encoding[:40]!r} is not supported; send the body as is")
    length = request.headers.get(HEADER_LENGTH)
    if length is None:
        return request.json_object(), b""
    if not length.strip().isdigit() or int(length) > len(request.body):
        raise InvalidInputError(f"header {HEADER_LENGTH} must be the length of the JSON part of the body")
    json_part, binary = request.body[: int(length)], request.body[int(length) :]
    return HttpRequest(request.method, request.path, {}, {}, json_part).json_object(), binary


def request_texts(body: dict[str, Any], binary: bytes) -> list[str]:
    inputs = body.get("inputs")
    if not isinstance(inputs, list):
        raise InvalidInputError('"inputs" must be an array with one tensor named "text"')
    check_input_count(len(inputs))
    tensor = inputs[0]
    if not isinstance(tensor, dict):
        raise InvalidInputError(f'"inputs[0]" must be an object, not {json_type(tensor)}')
    name, datatype, shape = tensor.get("name"), tensor.get("datatype"), tensor.get("shape")
    if not isinstance(name, str) or not isinstance(datatype, str):
        raise InvalidInputError('"inputs[0]" needs "name" and "datatype" strings')
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise InvalidInputError('"inputs[0].shape" must be an array of integers')
    parameters = tensor.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise InvalidInputError('"inputs[0].parameters" must be an object')
    size = parameters.get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0 or size != len(binary):
            raise InvalidInputError("binary_data_size must be the length of the binary part of the body")
        if "data" in tensor:
            raise InvalidInputError('send "inputs[0]" either as "data" or as binary data, not both')
        elements = decode_raw_bytes(binary) if datatype == "BYTES" else []
    else:
        if binary:
            raise InvalidInputError("the body has binary data but no input says binary_data_size")
        elements = [text.encode("utf-8", "surrogatepass") for text in flat_strings(tensor.get("data"))]
    return check_text_input(name, datatype, shape, elements)


def flat_strings(data: Any) -> list[str]:
    """The elements of a (possibly nested, row-major) JSON array of strings."""
    if not isinstance(data, list):
        raise InvalidInputError('"inputs[0].data" must be an array of strings (the texts)')
    flat: list[str] = []
    stack: list[Any] = [iter(data)]
    while stack:
        item = next(stack[-1], StopIteration)
        if item is StopIteration:
            stack.pop()
        elif isinstance(item, list):
            stack.append(iter(item))
        elif isinstance(item, str):
            flat.append(item)
        else:
            raise InvalidInputError(f'"inputs[0].data" holds {json_type(item)}; a BYTES tensor holds strings')
    return flat


def request_id_of(body: dict[str, Any]) -> str:
    """The request's `id` ("" when absent), bounded as over gRPC (`check_request_id`)."""
    request_id = body.get("id", "")
    if not isinstance(request_id, str):
        raise InvalidInputError('"id" must be a string')
    return check_request_id(request_id)


def top_k_of(parameters: Any) -> int:
    if parameters is None:
        return 0
    if not isinstance(parameters, dict):
        raise InvalidInputError('"parameters" must be an object')
    value = parameters.get(TOP_K_PARAMETER, 0)
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidInputError(f"parameter {TOP_K_PARAMETER!r} must be an integer (0 = every label)")
    return value


def requested_outputs(body: dict[str, Any]) -> tuple[list[str], set[str]]:
    """The outputs asked for, and which of them go back as binary data."""
    outputs = body.get("outputs", [])
    parameters = body.get("parameters") or {}
    all_binary = isinstance(parameters, dict) and parameters.get("binary_data_output") is True
    if isinstance(outputs, list):
        check_output_count(len(outputs))
    named = isinstance(outputs, list) and all(isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs)
    if not named:
        raise InvalidInputError('"outputs" must be an array of objects with a "name"')
    wanted = check_outputs([output["name"] for output in outputs])
    binary = {name for name in wanted if all_binary}
    for output in outputs:
        output_parameters = output.get("parameters") or {}
        if not isinstance(output_parameters, dict):
            raise InvalidInputError('"outputs[].parameters" must be an object')
        if output_parameters.get("binary_data") is True:
            binary.add(output["name"])
    return wanted, binary


def infer_response(answer: InferAnswer, request_id: str, wanted: list[str], binary: set[str]) -> HttpResponse:
    result = answer.result
    body: dict[str, Any] = {"model_name": result.model, "model_version": result.model_version}
    if request_id:
        body["id"] = request_id
    outputs, blobs = [], []
    for name in wanted:
        datatype, shape, values = answer.tensors[name]
        output: dict[str, Any] = {"name": name, "datatype": datatype, "shape": shape}
        if name in binary:
            blob = encode_raw(datatype, values)
            output["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        elif datatype == "BYTES":
            output["data"] = [value.decode("utf-8") for value in values if isinstance(value, bytes)]
        else:
            output["data"] = values
        outputs.append(output)
    body["outputs"] = outputs
    header = dump_json(body)
    if not blobs:
        return HttpResponse(200, header, model_version=result.model_version)
    response = HttpResponse(
        200, header + b"".join(blobs), "application/octet-stream", model_version=result.model_version
    )
    response.headers.append((HEADER_LENGTH, str(len(header))))
    return response
