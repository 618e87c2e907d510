"""The artifact directory contract shared by export (writer) and server (reader).

An artifact directory holds `model.onnx`, `tokenizer.json` and `ortserve.json`. `ortserve.json` is one versioned
pydantic model, `ArtifactManifest`, validated once when it is read. Export writes it last, so a directory with a
valid manifest is complete; it records the sha256 of the other files (`digests`) so that a reader can prove it
holds the bytes that were exported and checked.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import ArtifactInvalidError, IntegrityError

MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
MANIFEST_FILE = "ortserve.json"
ARTIFACT_FILES = (MODEL_FILE, TOKENIZER_FILE, MANIFEST_FILE)
#: Files whose sha256 the manifest records (the manifest cannot record its own).
DIGESTED_FILES = (MODEL_FILE, TOKENIZER_FILE)
#: Where a model logged with MLflow's onnx flavor keeps its `extra_files`: export logs tokenizer.json and
#: ortserve.json there, next to model.onnx at the root of the logged model.
EXTRA_FILES_DIR = "extra_files"

#: Registry tag in which export records the sha256 of `model.onnx` (checked on every download).
TAG_MODEL_SHA256 = "ortserve.model_sha256"

#: Version of the manifest layout; bumped on incompatible changes so a reader can refuse what it cannot read.
MANIFEST_FORMAT = 1

ProblemType = Literal["single_label_classification", "multi_label_classification"]
PROBLEM_TYPES: tuple[str, ...] = ("single_label_classification", "multi_label_classification")

_CHUNK = 1 << 20


class ArtifactManifest(BaseModel):
    """What a server needs to know about an exported classifier besides the graph and the tokenizer (`ortserve.json`).

    The first fields drive serving; `source`, `export` and `parity` are informational and carried through as export
    wrote them. Unknown fields are ignored, so that an older reader accepts a newer manifest of the same `format`.
    """

    model_config = ConfigDict(extra="ignore")

    labels: list[str] = Field(min_length=1)
    """Label names in class-id order: the model's output column i is `labels[i]`."""
    problem_type: ProblemType
    """`single_label_classification` (softmax over labels) or `multi_label_classification` (sigmoid per label)."""
    max_length: int = Field(ge=2)
    """Longest input in tokens, special tokens included; longer texts are truncated to it."""
    input_names: list[str] = Field(default_factory=list)
    """Graph inputs as exported (informational: the runtime reads the inputs from the graph itself)."""
    pad_token_id: int = 0
    """Id of the padding token in the tokenizer vocabulary; batches are padded with it to their longest text."""
    version: str = ""
    """The artifact's own version label, used when the server loads it from a local directory."""
    format: int = MANIFEST_FORMAT
    """Layout version of this file."""
    digests: dict[str, str] = Field(default_factory=dict)
    """sha256 (hex) of `model.onnx` and `tokenizer.json` as exported; readers verify the files against it."""
    source: dict[str, Any] = Field(default_factory=dict)
    """Lineage: where the model came from (path or registry name, version, run)."""
    export: dict[str, Any] = Field(default_factory=dict)
    """Export options and tool versions (opset, optimization, quantization, optimum/onnx/onnxruntime versions)."""
    parity: dict[str, Any] = Field(default_factory=dict)
    """Parity figures of the exported model against its source model."""

    @field_validator("format")
    @classmethod
    def _readable_format(cls, value: int) -> int:
        if value > MANIFEST_FORMAT:
            raise ValueError(f"format {value} is newer than this ortserve reads ({MANIFEST_FORMAT}); upgrade ortserve")
        return value

    @property
    def multi_label(self) -> bool:
        return self.problem_type == "multi_label_classification"

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2) + "\n"

    def write(self, directory: Path) -> Path:
        """Write `ortserve.json` into `directory` (write it last: its presence marks the directory complete)."""
        path = Path(directory) / MANIFEST_FILE
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(self.to_json(), encoding="utf-8")
        tmp.replace(path)
        return path

    @classmethod
    def from_dict(cls, data: Any, origin: str = MANIFEST_FILE) -> ArtifactManifest:
        """Validate a parsed manifest; raise `ArtifactInvalidError` naming the first bad field."""
        if not isinstance(data, dict):
            raise ArtifactInvalidError(f"{origin} must hold a JSON object")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "manifest"
            message = str(first["msg"]).removeprefix("Value error, ")
            raise ArtifactInvalidError(f"{origin}: {where}: {message}", detail=str(exc)) from None

    @classmethod
    def read(cls, directory: Path) -> ArtifactManifest:
        """Read and validate `ortserve.json` of an artifact directory. Messages name the file, not the path."""
        path = Path(directory) / MANIFEST_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ArtifactInvalidError(
                f"not an ortserve artifact: {MANIFEST_FILE} is missing", detail=f"no {path}"
            ) from None
        except (OSError, ValueError) as exc:
            raise ArtifactInvalidError(f"cannot read {MANIFEST_FILE}", detail=f"{path}: {exc}") from None
        return cls.from_dict(data)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (hashlib releases the GIL on large updates)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def file_digests(directory: Path, names: tuple[str, ...] = DIGESTED_FILES) -> dict[str, str]:
    """`{name: sha256}` of the files `names` of `directory`."""
    return {name: sha256_file(Path(directory) / name) for name in names}


def artifact_digest(model_file: Path) -> str:
    """A short content hash of a model file, used as the version of an artifact that has no registry version."""
    return "sha256-" + sha256_file(model_file)[:12]


def check_artifact_dir(directory: Path) -> None:
    """Raise `ArtifactInvalidError` unless `directory` holds every file of an artifact."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ArtifactInvalidError("artifact directory does not exist", detail=f"no directory {directory}")
    missing = [name for name in ARTIFACT_FILES if not (directory / name).is_file()]
    if missing:
        raise ArtifactInvalidError(
            f"artifact directory is incomplete: missing {', '.join(missing)}", detail=f"in {directory}"
        )


def verify_recorded_digests(
    directory: Path, manifest: ArtifactManifest, known: dict[str, str] | None = None, expected_model: str = ""
) -> None:
    """Check the files of `directory` against the digests export recorded (manifest `digests`, and the registry
    tag's `expected_model` sha256 of model.onnx when given). `known` holds digests already computed.
    Raises `IntegrityError` on a mismatch; files without a recorded digest pass."""
    recorded = dict(manifest.digests)
    if expected_model:
        recorded.setdefault(MODEL_FILE, expected_model)
        if recorded[MODEL_FILE] != expected_model:
            raise IntegrityError(f"{MODEL_FILE}: the manifest and the registry record different digests")
    for name, expected in recorded.items():
        if name not in DIGESTED_FILES:
            continue
        actual = (known or {}).get(name) or sha256_file(Path(directory) / name)
        if actual != expected:
            raise IntegrityError(
                f"{name} does not match the digest recorded at export",
                detail=f"{Path(directory) / name}: sha256 {actual}, recorded {expected}",
            )


def assemble_artifact(downloaded: Path, staging: Path, what: str) -> ArtifactManifest:
    """Lay a downloaded MLflow model out as a new artifact directory `staging` (its files taken from the root or
    from extra_files/); return its validated manifest. Raises `ArtifactInvalidError` naming `what` (a model URI)
    if a file is missing or the manifest cannot be read."""
    staging.mkdir()
    for name in ARTIFACT_FILES:
        candidates = [downloaded / name, downloaded / EXTRA_FILES_DIR / name]
        found = next((path for path in candidates if path.is_file()), None)
        if found is None:
            raise ArtifactInvalidError(
                f"{what} is not an ortserve ONNX artifact: {name} is missing (export it with `ortserve export`)"
            )
        shutil.move(str(found), staging / name)
    for extra in downloaded.glob("*.onnx*data"):  # external tensor data of a large model stays beside model.onnx
        shutil.move(str(extra), staging / extra.name)
    try:
        return ArtifactManifest.read(staging)  # refuse a manifest this reader cannot read before it is used
    except ArtifactInvalidError as exc:
        raise ArtifactInvalidError(f"{what}: {exc}", detail=exc.detail) from None
