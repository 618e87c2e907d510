"""The export's side of the MLflow Model Registry: which version a source names, whether an equivalent export is
registered already (and fetching it), logging an artifact directory as an `onnx`-flavor model, registering it as a
tagged version and pointing an alias at it. Lookups, error mapping and downloads are the contract's
(`ortserve.contract`), shared with the server.

The registered version's artifact directory (what `mlflow.artifacts.download_artifacts("models:/NAME/VERSION")`
returns) is the contract the server's registry loader reads:

    MLmodel                      onnx flavor; `mlflow.onnx.load_model` reads it too
    model.onnx                   the graph, weights inside (no external data)
    extra_files/tokenizer.json   the fast tokenizer
    extra_files/ortserve.json    the `ArtifactManifest`, with `source` lineage filled in

Every version carries the `TAG_*` tags below; `TAG_EXPORT_KEY` identifies "this source, these options", so that
exporting again finds the existing version instead of registering a duplicate.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ortserve.contract.artifact import MANIFEST_FILE, MODEL_FILE, TAG_MODEL_SHA256, TOKENIZER_FILE, ArtifactManifest
from ortserve.contract.cache import fetch_registered_artifact
from ortserve.contract.errors import ContractError, first_line
from ortserve.contract.redact import redact_text, redact_uri
from ortserve.contract.registry import VersionNotFoundError, filter_literal, is_not_found, resolve_version
from ortserve.contract.uri import RegistryUri

from .errors import ExportError
from .tracking import experiment_id_for

log = logging.getLogger(__name__)

#: Experiment of the runs created for sources that have no run of their own (local directories).
EXPORT_EXPERIMENT = "ortserve-export"

TAG_EXPORT_KEY = "ortserve.export_key"
"""Digest of source identity and export options; equal keys mean an equivalent export."""
TAG_SOURCE_URI = "ortserve.source_uri"
"""The SOURCE as given (e.g. `models:/topic@production`)."""
TAG_SOURCE_MODEL = "ortserve.source_model"
"""Registered model name of the source."""
TAG_SOURCE_VERSION = "ortserve.source_version"
"""Registered model version of the source (the version the alias or stage pointed at)."""
TAG_SOURCE_RUN_ID = "ortserve.source_run_id"
"""Run that produced the source model."""
TAG_ARTIFACT_VERSION = "ortserve.artifact_version"
"""Digest of `model.onnx` (`ArtifactManifest.version`)."""
TAG_QUANTIZATION = "ortserve.quantization"
"""`dynamic-int8`, `static-int8-qdq` or `none`."""
TAG_OPTIMIZATION = "ortserve.optimization"
"""Graph optimization saved in the model, e.g. `ort-basic+transformer-fusion` or `none`."""
TAG_OPSET = "ortserve.opset"
"""ONNX opset of the graph."""
# TAG_MODEL_SHA256 (the sha256 of model.onnx, checked on every download) is the contract's: the server reads it.


@dataclass(frozen=True)
class RegisteredExport:
    """A registered ONNX model version."""

    name: str
    version: str
    reused: bool
    """True if an equivalent export was already registered and was returned instead of a new version."""
    tags: dict[str, str]

    @property
    def model_uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def version_tags(manifest: ArtifactManifest, export_key: str) -> dict[str, str]:
    """Tags of a registered version: lineage, tool versions, export options and parity figures (all strings)."""
    source, export, parity = manifest.source, manifest.export, manifest.parity
    tags = {
        TAG_EXPORT_KEY: export_key,
        TAG_ARTIFACT_VERSION: manifest.version,
        TAG_MODEL_SHA256: manifest.digests.get(MODEL_FILE),
        TAG_SOURCE_URI: source.get("uri") or source.get("path"),
        TAG_SOURCE_MODEL: source.get("registered_model"),
        TAG_SOURCE_VERSION: source.get("version"),
        TAG_SOURCE_RUN_ID: source.get("run_id"),
        TAG_QUANTIZATION: export.get("quantization"),
        TAG_OPTIMIZATION: export.get("optimization"),
        TAG_OPSET: export.get("opset"),
        "ortserve.model_type": export.get("model_type"),
        "ortserve.problem_type": manifest.problem_type,
        "ortserve.labels": ",".join(manifest.labels),
    }
    for package in ("optimum_onnx", "optimum", "onnx", "onnxruntime", "transformers", "torch"):
        tags[f"ortserve.{package}_version"] = export.get(package)
    tags["ortserve.parity_texts"] = parity.get("texts")
    for precision in ("fp32", "int8"):
        figures = parity.get(precision) or {}
        for figure in ("max_abs_diff", "mean_abs_diff", "top1_agreement", "decision_agreement"):
            tags[f"ortserve.parity_{precision}_{figure}"] = figures.get(figure)
    int8 = export.get("int8") or {}  # what --int8 asked for, measured and decided (see ExportOptions.int8)
    tags["ortserve.int8_requested"] = int8.get("requested")
    tags["ortserve.int8_decision"] = int8.get("decision")
    for method, figures in (int8.get("candidates") or {}).items():
        for figure in ("passed", "top1_agreement", "max_abs_diff", "one_text_ms", "batch32_ms"):
            tags[f"ortserve.int8_{method}_{figure}"] = figures.get(figure)
    return {key: str(value) for key, value in tags.items() if value is not None and value != ""}


def find_registered_export(client: Any, name: str, export_key: str) -> Any | None:
    """The earliest READY version of `name` tagged with `export_key`, or None."""
    try:
        client.get_registered_model(name)
    except Exception as exc:
        if is_not_found(exc):
            return None
        raise ExportError(f"cannot read registered model {name!r}: {_mlflow_text(exc)}") from None
    query = f"name = {filter_literal(name)} and tags.`{TAG_EXPORT_KEY}` = {filter_literal(export_key)}"
    try:
        versions = client.search_model_versions(query)
    except Exception:  # stores that cannot filter on tags: scan the versions of the name instead
        versions = [
            v
            for v in client.search_model_versions(f"name = {filter_literal(name)}")
            if (v.tags or {}).get(TAG_EXPORT_KEY) == export_key
        ]
    ready = [v for v in versions if str(v.status).upper().endswith("READY")]
    return min(ready, key=lambda v: int(v.version)) if ready else None


def log_and_register(
    client: Any,
    artifact_dir: Path,
    name: str,
    tags: dict[str, str],
    run_id: str | None = None,
    alias: str | None = None,
) -> RegisteredExport:
    """Log `artifact_dir` as an onnx-flavor model in `run_id` (or a new run of `EXPORT_EXPERIMENT`), register it as
    a new version of `name` with `tags`, and point `alias` at it."""
    import mlflow
    import onnx

    artifact_dir = Path(artifact_dir)
    created_run = None
    if run_id is None:
        experiment_id = experiment_id_for(client, EXPORT_EXPERIMENT)
        created_run = client.create_run(experiment_id, tags={"mlflow.runName": f"export {name}"})
        run_id = created_run.info.run_id
    try:
        # Created up front so that the model lands in the run's experiment: log_model given only a run id would file
        # it under the current (default) experiment, where `runs:/` URIs do not find it.
        logged = client.create_logged_model(
            experiment_id=client.get_run(run_id).info.experiment_id,
            name=name,
            source_run_id=run_id,
            tags={TAG_EXPORT_KEY: tags[TAG_EXPORT_KEY]},
        )
        info = mlflow.onnx.log_model(
            onnx.load(str(artifact_dir / MODEL_FILE)),
            name=name,
            model_id=logged.model_id,
            run_id=run_id,
            extra_files=[str(artifact_dir / TOKENIZER_FILE), str(artifact_dir / MANIFEST_FILE)],
            save_as_external_data=False,  # the contract: model.onnx holds its weights
            onnx_execution_providers=["CPUExecutionProvider"],
            # Explicit requirements: inferring them runs the model in a subprocess, slow for nothing.
            pip_requirements=_pip_requirements(),
        )
        version = mlflow.register_model(info.model_uri, name, tags=tags, await_registration_for=300)
    except ExportError:
        raise
    except Exception as exc:  # MlflowException, network errors from the artifact store
        raise ExportError(f"cannot log or register the ONNX model as {name!r}: {_mlflow_text(exc)}") from None
    finally:
        if created_run is not None:
            client.set_terminated(created_run.info.run_id)
    if alias:
        set_alias(client, name, str(version.version), alias)
    return RegisteredExport(name, str(version.version), False, tags)


def set_alias(client: Any, name: str, version: str, alias: str) -> None:
    try:
        client.set_registered_model_alias(name, alias, version)
    except Exception as exc:
        raise ExportError(f"cannot set alias {alias!r} of {name!r} to version {version}: {_mlflow_text(exc)}") from None
    log.info("models:/%s@%s -> version %s", name, alias, version)


def _pip_requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    requirements = []
    for package in ("onnx", "onnxruntime", "tokenizers"):
        try:
            requirements.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            requirements.append(package)
    return requirements


#: What to do when a part of a models:/ URI is missing, by `VersionNotFoundError.missing`.
_ADVICE = {
    "alias": "set it with MlflowClient().set_registered_model_alias or pick a version",
    "stage": "transition one to it or use models:/NAME@ALIAS or models:/NAME/VERSION",
    "versions": "register one first",
}


def resolve_registered_version(uri: str, parsed: RegistryUri, client: Any) -> Any:
    """The `ModelVersion` that registry SOURCE `uri` names now; `ExportError` naming what is missing and the fix."""
    try:
        return resolve_version(client, parsed)
    except VersionNotFoundError as exc:
        if exc.missing == "model":
            raise ExportError(
                f"{uri}: {exc.reason} in the MLflow store at {redact_uri(str(client.tracking_uri))}; check the "
                "registered model's name, and --tracking-uri / MLFLOW_TRACKING_URI"
            ) from None
        advice = _ADVICE.get(exc.missing)
        raise ExportError(f"{uri}: {exc.reason}" + (f"; {advice}" if advice else "")) from None
    except ContractError as exc:
        raise ExportError(f"{uri}: the MLflow store failed: {exc.detail or exc}") from None


def resolve_run(uri: str, run_id: str, client: Any) -> Any:
    """The MLflow run of a runs:/ SOURCE; `ExportError` naming the run and the store when there is none."""
    try:
        return client.get_run(run_id)
    except Exception as exc:
        if not is_not_found(exc):
            raise ExportError(f"{uri}: the MLflow store failed: {_mlflow_text(exc)}") from None
        raise ExportError(
            f"{uri}: no run {run_id!r} in the MLflow store at {redact_uri(str(client.tracking_uri))}; check the "
            "run's name or id, and --tracking-uri / MLFLOW_TRACKING_URI"
        ) from None


def logged_model_id(client: Any, run: Any, name: str | None) -> str | None:
    """Id of the model named `name` that `run` logged (MLflow 3 LoggedModel), or None (MLflow 2 run artifacts)."""
    outputs = getattr(getattr(run, "outputs", None), "model_outputs", None) or []
    for output in outputs:
        try:
            model = client.get_logged_model(output.model_id)
        except Exception:  # a deleted model or an older server: fall back to the run's artifacts
            continue
        if model.name == name:
            return str(model.model_id)
    return None


def fetch_registered_export(client: Any, source: str, name: str, version: str, destination: Path) -> ArtifactManifest:
    """Download registered export `name`/`version` as an artifact directory at `destination` (verified against the
    digests export recorded; no cache marker); `ExportError` naming `source` if it cannot be read."""
    try:
        return fetch_registered_artifact(client, name, version, destination, client.tracking_uri, marker=False)
    except ContractError as exc:
        reason = f"{exc} ({exc.detail})" if exc.detail else str(exc)
        raise ExportError(f"{source}: cannot read the registered export models:/{name}/{version}: {reason}") from None


def _mlflow_text(exc: BaseException) -> str:
    """One line of an MLflow error, with the credentials of any URI in it redacted."""
    return redact_text(first_line(exc))
