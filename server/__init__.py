"""ortserve server: serves exported ONNX text classifiers over gRPC (install with `pip install 'ortserve[server]'`)."""

from .app import OrtServer, serve
from .artifact import ArtifactManifest
from .runtime import OnnxClassifier, SessionConfig
from .settings import ModelSpec, ServerSettings

__all__ = ["ArtifactManifest", "ModelSpec", "OnnxClassifier", "OrtServer", "ServerSettings", "SessionConfig", "serve"]
