"""Triton's protocol extensions that tritonclient calls, for both doors: the repository index, model statistics and
model configuration (read-only), each built once here as the JSON object of Triton's REST API. The REST routes
(`http.routes_v2`) send it as it is; the gRPC servicer (`transport_v2`) parses it into its proto message, whose field
names and types it follows exactly (a field that is not in the proto fails the parse, and the gRPC tests)."""

from __future__ import annotations

import json
from typing import Any

from .errors import caller_message
from .model_statistics import Duration, StatisticsSnapshot
from .open_inference import (
    INPUT_TEXT,
    OUTPUT_ERRORS,
    OUTPUT_LABELS,
    OUTPUT_PROBABILITIES,
    OUTPUT_TOP_LABELS,
    OUTPUT_TOP_SCORES,
    OUTPUT_TRUNCATED,
    OUTPUT_WINDOWS,
    PLATFORM,
    described,
    model_tensors,
)
from .service import InferenceService
from .types import ModelDescription, ModelState

#: Triton's model states of the repository index, from ours.
REPOSITORY_STATES = {ModelState.SERVING: "READY", ModelState.LOADING: "LOADING", ModelState.FAILED: "UNAVAILABLE"}

#: The model configuration's element type of each datatype of the protocol.
CONFIG_TYPES = {"BYTES": "TYPE_STRING", "FP32": "TYPE_FP32", "BOOL": "TYPE_BOOL", "INT32": "TYPE_INT32"}


def repository_index(service: InferenceService, ready_only: bool = False) -> list[dict[str, str]]:
    """Every served model with its version, Triton state and the reason of that state (caller-safe); only the
    models ready for inference if `ready_only`."""
    models = service.list_models()
    if ready_only:
        models = [d for d in models if d.state is ModelState.SERVING]
    return [
        {
            "name": d.name,
            "version": d.version,
            "state": REPOSITORY_STATES[d.state],
            "reason": caller_message(d.last_error),
        }
        for d in models
    ]


def model_statistics(service: InferenceService, name: str = "", version: str = "") -> dict[str, Any]:
    """`{"model_stats": [...]}` for the model `name` (every model if ""); a version other than the served one is
    NOT_FOUND, as for every call that names one."""
    if name:
        described(service, name, version)
    return {"model_stats": [_statistics(d, s) for d, s in service.model_statistics(name)]}


def _statistics(description: ModelDescription, stats: StatisticsSnapshot) -> dict[str, Any]:
    def duration(value: Duration) -> dict[str, int]:
        return {"count": value.count, "ns": value.ns}

    return {
        "name": description.name,
        "version": description.version,
        "last_inference": stats.last_call_ms,
        "inference_count": stats.texts,
        "execution_count": stats.runs,
        "inference_stats": {
            "success": duration(stats.success),
            "fail": duration(stats.fail),
            "queue": duration(Duration()),  # not measured here: the queue wait is in the Prometheus metrics
            "compute_input": duration(stats.tokenize),
            "compute_infer": duration(stats.infer),
            "compute_output": duration(stats.rank),
        },
    }


def model_config(service: InferenceService, name: str, version: str = "") -> dict[str, Any]:
    """The model's configuration in Triton's terms (its `ModelConfig` message as JSON). Shapes leave out the batch
    dimension (one row per text); labels, max length and the served version are string parameters."""
    described(service, name, version)
    config = service.model_config(name)
    description = config.description
    labels = len(description.labels) or -1  # -1 (unknown) until a version is loaded
    batch_free_dims = {
        OUTPUT_PROBABILITIES: [labels],
        OUTPUT_LABELS: [labels],
        OUTPUT_TOP_LABELS: [-1],
        OUTPUT_TOP_SCORES: [-1],
        OUTPUT_TRUNCATED: [1],
        OUTPUT_ERRORS: [1],
        OUTPUT_WINDOWS: [1],
    }
    _, outputs = model_tensors(description)
    parameters = {
        "labels": json.dumps(description.labels),
        "max_length": str(description.max_length),
        "multi_label": json.dumps(description.multi_label),
        "version": description.version,
        "source_uri": description.source_uri,
        "state": description.state.value,
    }
    return {
        "name": description.name,
        "platform": PLATFORM,
        "backend": "onnxruntime",
        "max_batch_size": config.max_texts_per_request,
        "input": [{"name": INPUT_TEXT, "data_type": "TYPE_STRING", "dims": [1]}],
        "output": [
            {"name": o.name, "data_type": CONFIG_TYPES[o.datatype], "dims": batch_free_dims[o.name]} for o in outputs
        ],
        "dynamic_batching": {
            "preferred_batch_size": [config.max_batch_size],
            "max_queue_delay_microseconds": int(config.max_batch_delay_ms * 1000),
        },
        "parameters": {key: {"string_value": value} for key, value in parameters.items()},
    }
