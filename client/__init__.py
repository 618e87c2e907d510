"""ortserve client: call an ortserve server from Python with only grpcio and protobuf installed.

`pip install ortserve` installs this package and nothing heavier (no torch, no onnxruntime).

- `InferenceClient` (blocking, thread-safe) and `AsyncInferenceClient` (asyncio): any number of texts per call.
- `ortserve.client.compat`: drop-in `predict_topic(text)` and `predict_sentiment(text)`.
- `ortserve.client.spark`: `classify_udf(...)`, a pandas UDF (`pip install 'ortserve[spark]'`).

Fork safety: gRPC's C core keeps threads and sockets that a child process of `fork()` does not get; a child that
makes a new channel can then hang or fail ("Wrong file descriptor generation"). gRPC cleans up in the child only
with `GRPC_ENABLE_FORK_SUPPORT=1` set before `grpc` is first imported, so importing this package first sets it,
unless it is set already (set it to `0` to opt out) or `grpc` was imported earlier (then set it yourself).
"""

import os as _os
import sys as _sys

if "grpc" not in _sys.modules:
    _os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "1")

from .async_client import AsyncInferenceClient  # noqa: E402 - after the fork-support default, before grpc loads
from .base import DEFAULT_TARGET, default_target  # noqa: E402
from .channel import ChannelConfig, RetryPolicy  # noqa: E402
from .errors import InferenceError  # noqa: E402
from .shared import shared_client  # noqa: E402
from .sync_client import DEFAULT_TIMEOUT_S, InferenceClient  # noqa: E402
from .types import Classification, LabelScore, ModelInfo  # noqa: E402

__all__ = [
    "DEFAULT_TARGET",
    "DEFAULT_TIMEOUT_S",
    "AsyncInferenceClient",
    "ChannelConfig",
    "Classification",
    "InferenceClient",
    "InferenceError",
    "LabelScore",
    "ModelInfo",
    "RetryPolicy",
    "default_target",
    "shared_client",
]
