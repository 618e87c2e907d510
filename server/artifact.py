"""The artifact directory contract shared by export (writer) and server (reader).

An artifact directory holds `model.onnx`, `tokenizer.json` and `ortserve.json`. `ortserve.json` is described by
`ArtifactManifest`; export writes it last, so a directory with a valid manifest is complete.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from .errors import ArtifactError

MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
MANIFEST_FILE = "ortserve.json"
ARTIFACT_FILES = (MODEL_FILE, TOKENIZER_FILE, MANIFEST_FILE)
#: Where a model logged with MLflow's onnx flavor keeps its `extra_files`: export logs tokenizer.json and
#: ortserve.json there, next to model.onnx at the root of the logged model.
EXTRA_FILES_DIR = "extra_files"

#: Version of the manifest layout; bumped on incompatible changes so a server can refuse what it cannot read.
MANIFEST_FORMAT = 1

ProblemType = Literal["single_label_classification", "multi_label_classification"]
PROBLEM_TYPES: tuple[str, ...] = ("single_label_classification", "multi_label_classification")


@dataclass
class ArtifactManifest:
    """What a server needs to know about an exported classifier besides the graph and the tokenizer.

    Fields beyond the first five are informational (lineage, export options, parity figures) and are carried
    through as written by export.
    """

    labels: list[str]
    """Label names in class-id order: the model's output column i is `labels[i]`."""
    problem_type: ProblemType
    """`single_label_classification` (softmax over labels) or `multi_label_classification` (sigmoid per label)."""
    max_length: int
    """Longest input in tokens, special tokens included; longer texts are truncated to it."""
    input_names: list[str]
    """Graph inputs in the order the model expects them, e.g. `input_ids`, `attention_mask`, `token_type_ids`."""
    pad_token_id: int = 0
    """Id of the padding token in the tokenizer vocabulary; batches are padded with it to their longest text."""
    version: str = ""
    """The artifact's own version label, used when the server loads it from a local directory."""
    format: int = MANIFEST_FORMAT
    """Layout version of this file."""
    source: dict[str, Any] = field(default_factory=dict)
    """Lineage: where the model came from (path or registry name, version, run)."""
    export: dict[str, Any] = field(default_factory=dict)
    """Export options and tool versions (opset, optimization, quantization, optimum/onnx/onnxruntime versions)."""
    parity: dict[str, Any] = field(default_factory=dict)
    """Parity figures of the exported model against its source model."""

    @property
    def multi_label(self) -> bool:
        return self.problem_type == "multi_label_classification"

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=False) + "\n"

    def write(self, directory: Path) -> Path:
        """Write `ortserve.json` into `directory` (write it last: its presence marks the directory complete)."""
        path = Path(directory) / MANIFEST_FILE
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(self.to_json(), encoding="utf-8")
        tmp.replace(path)
        return path

    @classmethod
    def from_dict(cls, data: dict[str, Any], origin: str = MANIFEST_FILE) -> ArtifactManifest:
        known = {f for f in cls.__dataclass_fields__}
        missing = [name for name in ("labels", "problem_type", "max_length", "input_names") if name not in data]
        if missing:
            raise ArtifactError(f"{origin} lacks required field(s) {', '.join(missing)}")
        if data.get("format", MANIFEST_FORMAT) > MANIFEST_FORMAT:
            raise ArtifactError(
                f"{origin} has format {data['format']}, newer than this server reads ({MANIFEST_FORMAT}); "
                "upgrade ortserve"
            )
        if data["problem_type"] not in PROBLEM_TYPES:
            raise ArtifactError(f"{origin}: problem_type must be one of {PROBLEM_TYPES}, got {data['problem_type']!r}")
        if not data["labels"]:
            raise ArtifactError(f"{origin}: labels is empty")
        if int(data["max_length"]) < 2:
            raise ArtifactError(f"{origin}: max_length must be at least 2, got {data['max_length']}")
        return cls(**{key: value for key, value in data.items() if key in known})

    @classmethod
    def read(cls, directory: Path) -> ArtifactManifest:
        """Read and validate `ortserve.json` of an artifact directory."""
        path = Path(directory) / MANIFEST_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ArtifactError(f"{directory} is not an ortserve artifact: {MANIFEST_FILE} is missing") from None
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"cannot read {path}: {exc}") from None
        if not isinstance(data, dict):
            raise ArtifactError(f"{path} must hold a JSON object")
        return cls.from_dict(data, origin=str(path))


def artifact_digest(model_file: Path) -> str:
    """A short content hash of a model file, used as the version of an artifact that has no registry version."""
    digest = hashlib.sha256()
    with Path(model_file).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return "sha256-" + digest.hexdigest()[:12]


def check_artifact_dir(directory: Path) -> None:
    """Raise `ArtifactError` unless `directory` holds every file of an artifact."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ArtifactError(f"artifact directory {directory} does not exist")
    missing = [name for name in ARTIFACT_FILES if not (directory / name).is_file()]
    if missing:
        raise ArtifactError(f"artifact directory {directory} is incomplete: missing {', '.join(missing)}")
