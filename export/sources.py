"""What `ortserve export SOURCE` reads: a registry or run URI, or a local directory, turned into a local Hugging Face
model directory plus its lineage.

Registry and run sources are models logged with `mlflow.transformers.log_model`, either of a text-classification
pipeline or of a components dict `{"model": ..., "tokenizer": ...}`. Both are read the same way: MLflow's own loader
rebuilds model and tokenizer (whatever layout the MLflow version wrote) and they are saved again with
`save_pretrained`, so the rest of the export sees an ordinary Hugging Face directory. Everything runs offline.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ortserve.contract.errors import ModelUriError, first_line
from ortserve.contract.redact import redact_text
from ortserve.contract.settings import huggingface_offline
from ortserve.contract.uri import RegistryUri

from .errors import ExportError
from .registry import logged_model_id, resolve_registered_version, resolve_run

log = logging.getLogger(__name__)

SourceKind = Literal["registry", "run", "local"]

#: Pipeline tasks that are text classification (MLflow records the task the pipeline was built with).
TEXT_CLASSIFICATION_TASKS = frozenset({"text-classification", "sentiment-analysis"})


@dataclass(frozen=True)
class SourceRef:
    """A parsed SOURCE argument, before any registry lookup."""

    uri: str
    kind: SourceKind
    name: str | None = None
    """Registered model name (registry sources)."""
    selector: str | None = None
    """What the registry URI selects: a version number, `latest`, an alias or a stage name."""
    selector_kind: Literal["version", "latest", "alias", "stage"] | None = None
    run_id: str | None = None
    """Run id (runs:/ sources)."""
    artifact_path: str | None = None
    """Model path inside the run (runs:/ sources)."""


@dataclass(frozen=True)
class ResolvedSource:
    """A source pinned to what it points at now: one registry version, one run's model, or one directory."""

    ref: SourceRef
    download_uri: str | None
    """Immutable URI to download (`models:/name/<version>` or the runs:/ URI); None for local directories."""
    registered_name: str | None = None
    version: str | None = None
    run_id: str | None = None
    local_dir: Path | None = None
    lineage: dict[str, Any] = field(default_factory=dict)
    """What goes into `ortserve.json`'s `source` and the registered version's tags."""

    @property
    def uri(self) -> str:
        return self.ref.uri

    @property
    def default_register_name(self) -> str | None:
        """`<source name>-onnx` for registry sources; other sources register only under an explicit name."""
        return f"{self.registered_name}-onnx" if self.registered_name else None

    @property
    def identity(self) -> str:
        """What makes two exports "of the same source": the pinned version, the run's model or the directory."""
        if self.download_uri:
            return self.download_uri
        assert self.local_dir is not None
        return f"file:{self.local_dir}#{directory_digest(self.local_dir)}"


def directory_digest(directory: Path) -> str:
    """Digest of every file under `directory` (names and bytes): a local model's identity, since its path's
    content can change between exports."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and not p.name.startswith(".")):
        digest.update(str(path.relative_to(directory)).encode() + b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


_RUNS = re.compile(r"^runs:/(?P<run>[^/]+)/(?P<path>.+)$")


def parse_source(source: str) -> SourceRef:
    """Parse SOURCE; raise `ExportError` with the accepted forms if it is none of them."""
    forms = "models:/NAME@ALIAS, models:/NAME/VERSION, models:/NAME/STAGE, runs:/RUN_ID/PATH or a local directory"
    if source.startswith("models:/"):
        try:
            parsed = RegistryUri.parse(source)  # the contract's parser: server and export read models:/ the same way
        except ModelUriError:
            raise ExportError(f"{source} is not a registry URI ortserve can read; use one of {forms}") from None
        if parsed.alias:
            return SourceRef(source, "registry", parsed.name, parsed.alias, "alias")
        if parsed.version:
            return SourceRef(source, "registry", parsed.name, parsed.version, "version")
        if parsed.latest:
            return SourceRef(source, "registry", parsed.name, "latest", "latest")
        return SourceRef(source, "registry", parsed.name, parsed.stage, "stage")
    if source.startswith("runs:/"):
        if match := _RUNS.match(source):
            return SourceRef(source, "run", run_id=match["run"], artifact_path=match["path"].strip("/"))
        raise ExportError(f"{source} is not a run URI ortserve can read; use one of {forms}")
    hub_id = hugging_face_hub_id(source)
    if hub_id is not None:
        raise ExportError(
            f"{source} is not a local directory but looks like a Hugging Face Hub model id, and the export never "
            f"downloads from the Hub: download it first, e.g. `hf download {hub_id} --local-dir "
            f"{hub_id.split('/')[-1]}` (huggingface_hub), and pass that directory"
        )
    if "://" in source or source.startswith(("models:", "runs:")):
        raise ExportError(f"{source}: unsupported source; use one of {forms}")
    path = Path(source).expanduser()
    if not path.is_dir():
        raise ExportError(f"{source} is not a directory; use one of {forms}")
    return SourceRef(source, "local")


#: `ORG/NAME` or `NAME` as the Hugging Face Hub spells model ids.
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")
_HUB_URL = re.compile(r"^(?:hf://|https?://(?:www\.)?huggingface\.co/)(?:models/)?(?P<id>[^?#]+?)/?$")


def hugging_face_hub_id(source: str) -> str | None:
    """The Hub model id SOURCE names (`org/name`, `hf://org/name`, `https://huggingface.co/org/name`) when it is not
    an existing path, else None."""
    if url := _HUB_URL.match(source):
        return url["id"]
    if Path(source).expanduser().exists() or not _HUB_ID.fullmatch(source) or source.startswith("."):
        return None
    return source if "/" in source or "-" in source else None


def resolve_source(ref: SourceRef, client: Any | None) -> ResolvedSource:
    """Pin `ref` to one registry version or run (looked up with the `MlflowClient`), or a resolved directory."""
    if ref.kind == "local":
        directory = Path(ref.uri).expanduser().resolve()
        return ResolvedSource(ref, None, local_dir=directory, lineage={"path": str(directory)})
    assert client is not None, "registry and run sources need an MlflowClient"
    if ref.kind == "run":
        assert ref.run_id is not None
        run = resolve_run(ref.uri, ref.run_id, client)
        lineage = {"uri": ref.uri, "run_id": run.info.run_id, "artifact_path": ref.artifact_path}
        model_id = logged_model_id(client, run, ref.artifact_path)
        if model_id:
            lineage["model_id"] = model_id
        # MLflow 3 keeps a model logged in a run apart from the run's artifacts, as a LoggedModel; download that.
        download_uri = f"models:/{model_id}" if model_id else ref.uri
        return ResolvedSource(ref, download_uri, run_id=run.info.run_id, lineage=lineage)
    assert ref.name is not None and ref.selector is not None
    version = resolve_registered_version(ref.uri, RegistryUri.parse(ref.uri), client)
    lineage = {
        "uri": ref.uri,
        "registered_model": ref.name,
        "version": str(version.version),
        "run_id": version.run_id or None,
        "model_uri": f"models:/{ref.name}/{version.version}",
    }
    if ref.selector_kind in ("alias", "stage"):
        lineage[ref.selector_kind] = ref.selector
    return ResolvedSource(
        ref,
        f"models:/{ref.name}/{version.version}",
        registered_name=ref.name,
        version=str(version.version),
        run_id=version.run_id or None,
        lineage=lineage,
    )


def materialize(source: ResolvedSource, workdir: Path) -> Path:
    """Return a local Hugging Face model directory for `source`, downloading and re-saving registry and run models
    under `workdir`. Raise `ExportError` if the model is not a transformers text classifier."""
    if source.local_dir is not None:
        return source.local_dir
    import mlflow
    from mlflow.models import Model

    assert source.download_uri is not None
    try:
        downloaded = Path(mlflow.artifacts.download_artifacts(source.download_uri, dst_path=str(workdir / "download")))
        flavors = Model.load(str(downloaded / "MLmodel")).flavors
    except Exception as exc:  # MLflow raises MlflowException or OSError for missing artifacts
        raise ExportError(f"{source.uri}: cannot download the model: {redact_text(first_line(exc))}") from None
    conf = flavors.get("transformers")
    if conf is None:
        raise ExportError(
            f"{source.uri} is not a transformers model (flavors: {', '.join(sorted(flavors)) or 'none'}); ortserve "
            "export reads text classifiers logged with mlflow.transformers.log_model"
        )
    task = conf.get("task")
    if task not in TEXT_CLASSIFICATION_TASKS:
        raise ExportError(
            f"{source.uri} is a transformers {task or 'unknown-task'} model, not a text classifier; ortserve exports "
            "models logged for the text-classification task"
        )
    if not conf.get("model_binary"):
        raise ExportError(
            f"{source.uri} was logged without its weights (save_pretrained=False: they are on the Hugging Face Hub, "
            "which the export does not reach); log it again with save_pretrained=True"
        )
    components = _load_components(source.uri, downloaded)
    model, tokenizer = components.get("model"), components.get("tokenizer")
    if model is None or tokenizer is None:
        missing = "a model" if model is None else "a tokenizer"
        raise ExportError(
            f"{source.uri} was logged without {missing}; log a pipeline or a dict with model and tokenizer"
        )
    directory = workdir / "huggingface"
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def _load_components(uri: str, downloaded: Path) -> dict[str, Any]:
    huggingface_offline()  # never reach the Hub; transformers reads this when first imported
    import mlflow

    try:
        components: dict[str, Any] = mlflow.transformers.load_model(str(downloaded), return_type="components")
    except Exception as exc:  # MLflow and transformers raise assorted errors for models they cannot rebuild
        raise ExportError(
            f"{uri}: MLflow cannot load this transformers model: {redact_text(first_line(exc))}"
        ) from None
    return components
