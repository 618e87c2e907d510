"""`export_model`, the entry point of `ortserve export` and of Airflow tasks: SOURCE in, a registered version out.

It resolves the source (`.sources`), reuses an equivalent registered export or runs the local export pipeline
(`.pipeline`) on a downloaded copy, and registers the result (`.registry`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ortserve.contract.artifact import MODEL_FILE, ArtifactManifest
from ortserve.contract.settings import huggingface_offline

from .errors import AliasNotMovedError, ExportError, ParityError
from .optimize import DEFAULT_INT8, Int8Choice
from .parity import GateThresholds
from .pipeline import ExportOptions, ExportReport, check_output_dir, export_local_model, int8_methods, replace_dir
from .progress import StepTimer
from .registry import fetch_registered_export, find_registered_export, log_and_register, set_alias, version_tags
from .sources import ResolvedSource, SourceRef, materialize, parse_source, resolve_source
from .tracking import tracking

log = logging.getLogger(__name__)

#: Bumped when an export of the same source with the same options would produce a different artifact, so that
#: re-exporting registers a new version instead of reusing one made by an older ortserve.
EXPORT_KEY_FORMAT = 1


def export_model(
    source: str,
    *,
    register_as: str | None = None,
    alias: str | None = None,
    output: str | os.PathLike[str] | None = None,
    quantize: bool = True,
    optimize: bool = True,
    validation_texts: Sequence[str] | None = None,
    opset: int | None = None,
    thresholds: GateThresholds | None = None,
    tracking_uri: str | None = None,
    int8: Int8Choice = DEFAULT_INT8,
    allow_fp32: bool = False,
) -> ExportReport:
    """Export SOURCE to a validated ONNX artifact and register it in MLflow; return the report.

    `source` is `models:/NAME@ALIAS`, `models:/NAME/VERSION`, `models:/NAME/STAGE`, `runs:/RUN_ID/PATH` or a local
    Hugging Face model directory. What is registered: with `register_as`, the export under that name; without it, a
    registry source under `<NAME>-onnx` unless `output` is given (then only the directory is written); run sources
    and local directories only with `register_as` (or `output` alone, to write the directory). `alias` is pointed at
    the registered version. The report's `registered_name`, `registered_version` and `model_uri` say what was
    registered; `reused` is True when an export of the same source version with the same options was already
    registered (nothing new is logged then).

    The alias is moved only to what was asked for: when int8 was asked for (`quantize`, the default) and no int8
    graph passed the gate, the fp32 export is registered but the alias stays where it was and `AliasNotMovedError`
    (exit code 4) says so and how to judge int8 on better texts (`validation_texts`); `allow_fp32=True` moves the
    alias to the fp32 export anyway. The report's `alias_moved` says whether the alias was moved.

    `output` keeps the artifact directory (model.onnx, tokenizer.json, ortserve.json) on disk; by default it is
    written to a temporary directory that is removed after upload. When the accuracy gate fails, `ParityError` is
    raised, nothing is registered and the failed export with `parity-report.json` stays in `output` (or in a kept
    temporary directory that the message names). Every other failure raises `ExportError` with a one-line message
    naming the source and what to do.

    `int8` picks the int8 method when `quantize` is on: "dynamic", "static" (QDQ, calibrated on the validation
    texts) or "auto" (both, the fastest that passes the gate is kept; see `ExportOptions.int8`).
    """
    huggingface_offline()  # offline by construction, before transformers is first imported
    options = ExportOptions(
        quantize=quantize,
        optimize=optimize,
        opset=opset,
        validation_texts=list(validation_texts) if validation_texts is not None else None,
        thresholds=thresholds or GateThresholds(),
        int8=int8,
    )
    int8_methods(int8)  # an unknown method fails here, before anything is downloaded
    ref = parse_source(source)
    # --output alone writes only the directory: a registry source is registered under its default name only when
    # there is no output directory to write instead.
    registers = bool(register_as) or (ref.kind == "registry" and output is None)
    if alias and not registers:
        if ref.kind == "local":
            raise ExportError(f"{source}: --alias needs --register-as for a local directory (nothing is registered)")
        raise ExportError(
            f"{source}: --alias needs --register-as when --output is given (with --output alone only the directory "
            "is written; nothing is registered)"
        )
    if ref.kind == "run" and not registers and output is None:
        raise ExportError(
            f"{source}: a run's model has no registered name; pass --register-as NAME (or --output DIR to only write "
            "the artifact directory)"
        )
    if not registers:
        if ref.kind == "local":
            return _export(ref, resolve_source(ref, None), options, output)
        with tracking(tracking_uri, source) as client:
            return _export(ref, resolve_source(ref, client), options, output)
    with tracking(tracking_uri, source) as client:
        resolved = resolve_source(ref, client)
        name = register_as or resolved.default_register_name
        assert name is not None
        key = export_key(resolved, options)
        existing = find_registered_export(client, name, key)
        if existing is not None:
            log.info(
                "%s was already exported with these options as models:/%s/%s; reusing it",
                source,
                name,
                existing.version,
            )
            report = _reused_report(client, source, name, str(existing.version), output)
        else:
            report = _export(ref, resolved, options, output, keep_output=True)
            report = _register(client, report, resolved, name, key, temporary_output=output is None)
        if alias:
            _point_alias(client, report, alias, allow_fp32)
        return report


def _point_alias(client: Any, report: ExportReport, alias: str, allow_fp32: bool) -> None:
    """Point `alias` at the registered version, unless int8 was asked for and missed the gate (see `export_model`)."""
    assert report.registered_name is not None and report.registered_version is not None
    if report.int8_missed and not allow_fp32:
        raise AliasNotMovedError(
            f"{report.source}: no int8 graph passed the accuracy gate on {_gate_texts(report)}, so the export is fp32 "
            f"(slower); registered it as {report.model_uri} but did not move alias {alias!r}. Pass --validation-texts "
            "FILE with texts like the model's traffic (one per line) to judge int8 on them, or --allow-fp32 to move "
            "the alias to fp32 anyway (--no-quantize asks for fp32 from the start)",
            report,
        )
    set_alias(client, report.registered_name, report.registered_version, alias)
    report.alias_moved = True


def _gate_texts(report: ExportReport) -> str:
    """How many validation texts the int8 gate judged, and the best agreement an int8 graph reached."""
    int8 = report.parity.get("int8") or {}
    agreement = min(int8.get("top1_agreement", 0.0), int8.get("decision_agreement", 1.0))
    threshold = (report.parity.get("thresholds") or {}).get("int8_min_top1_agreement")
    figures = f" (int8 kept {agreement:.1%} of top labels" + (f", gate {threshold:.0%})" if threshold else ")")
    return f"{report.parity.get('texts', 'the')} validation texts{figures}"


def export_key(source: ResolvedSource, options: ExportOptions) -> str:
    """Digest of what determines an export: the pinned source and every option that changes the artifact."""
    texts = options.validation_texts
    payload = {
        "format": EXPORT_KEY_FORMAT,
        "source": source.identity,
        "quantize": options.quantize,
        "optimize": options.optimize,
        "opset": options.opset,
        "thresholds": asdict(options.thresholds),
        "validation_texts": hashlib.sha256("\n".join(texts).encode()).hexdigest() if texts is not None else None,
    }
    if options.quantize and options.int8 != "dynamic":  # absent for dynamic: keys of earlier exports still match
        payload["int8"] = options.int8
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


def _export(
    ref: SourceRef,
    resolved: ResolvedSource,
    options: ExportOptions,
    output: str | os.PathLike[str] | None,
    keep_output: bool = False,
) -> ExportReport:
    """Materialize the source as a Hugging Face directory and run the local export into `output` (or a temp dir)."""
    target = Path(output) if output is not None else Path(tempfile.mkdtemp(prefix="ortserve-export-")) / "artifact"
    try:
        with tempfile.TemporaryDirectory(prefix="ortserve-source-") as scratch:
            timer = StepTimer()
            with timer.step("download"):
                model_dir = materialize(resolved, Path(scratch))
            report = export_local_model(model_dir, target, options, lineage=resolved.lineage, label=ref.uri)
            report.seconds = {**timer.seconds, **report.seconds}
    except ParityError:
        raise  # the failed export and its report stay on disk, at the path the message names
    except BaseException:
        if output is None:
            shutil.rmtree(target.parent, ignore_errors=True)
        raise
    if output is None and not keep_output:
        # A local export without an output directory has nowhere else to go: keep it, and say where.
        log.info("artifact written to %s", target)
    return report


def _register(
    client: Any,
    report: ExportReport,
    resolved: ResolvedSource,
    name: str,
    key: str,
    temporary_output: bool,
) -> ExportReport:
    """Publish: log and register the exported artifact (in the source version's run), then drop a temporary
    output directory."""
    assert report.output is not None
    try:
        timer = StepTimer()
        with timer.step("upload"):
            manifest = ArtifactManifest.read(report.output)
            registered = log_and_register(
                client, report.output, name, version_tags(manifest, key), run_id=resolved.run_id
            )
        report.seconds.update(timer.seconds)
    finally:
        if temporary_output:
            shutil.rmtree(report.output.parent, ignore_errors=True)
            report.output = None
    report.registered_name, report.registered_version = registered.name, registered.version
    log.info("registered %s", registered.model_uri)
    return report


def _reused_report(
    client: Any, source: str, name: str, version: str, output: str | os.PathLike[str] | None
) -> ExportReport:
    """Report of an already registered export; its artifact is fetched into `output` when one is asked for."""
    target = Path(output) if output is not None else None
    if target is not None:
        check_output_dir(target)
        target.parent.mkdir(parents=True, exist_ok=True)
    # Fetched next to the output, so that the finished directory is moved into place by a rename.
    with tempfile.TemporaryDirectory(prefix=".ortserve-registered-", dir=target.parent if target else None) as scratch:
        staging = Path(scratch) / "artifact"
        manifest = fetch_registered_export(client, source, name, version, staging)
        model_bytes = (staging / MODEL_FILE).stat().st_size
        if target is not None:
            replace_dir(staging, target)
    return ExportReport(
        source=source,
        output=target,
        version=manifest.version,
        quantized=manifest.export.get("quantization", "none") != "none",
        model_bytes=model_bytes,
        parity=manifest.parity,
        seconds={},
        notes=[f"models:/{name}/{version} already holds this export (same source version and options); reused it"],
        optimization=str(manifest.export.get("optimization", "none")),
        registered_name=name,
        registered_version=version,
        reused=True,
    )
