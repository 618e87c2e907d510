"""ortserve client: call an ortserve server from Python with only grpcio and protobuf installed.

`pip install ortserve` installs this package and nothing heavier (no torch, no onnxruntime).
"""

from .errors import InferenceError
from .sync_client import DEFAULT_TIMEOUT_S, InferenceClient
from .types import Classification, LabelScore, ModelInfo

__all__ = ["DEFAULT_TIMEOUT_S", "Classification", "InferenceClient", "InferenceError", "LabelScore", "ModelInfo"]
