"""The local export pipeline: a Hugging Face model directory in, a checked artifact directory out.

`export_local_model` runs the steps below in order, each a small function on one `ExportRun`:
load → export → optimize → check (fp32) → quantize → check (int8) → [time int8] → choose int8 → publish.
Quantization makes one candidate per int8 method (`--int8`: dynamic, static or both with `auto`); each is checked
against the gate, and when several pass they are timed side by side and the fastest is kept.
The registry side (resolving a SOURCE, registering the result) is `ortserve.export.job` and `.registry`.
"""

from __future__ import annotations

import json
import logging
import shutil
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ortserve.contract.artifact import MANIFEST_FILE, MODEL_FILE, TOKENIZER_FILE, ArtifactManifest, file_digests
from ortserve.server.runtime import OnnxClassifier, SessionConfig

from .errors import ExportError, ParityError
from .huggingface import HuggingFaceClassifier, inspect_model_dir, load_torch_model
from .onnx_build import export_onnx
from .optimize import (
    DEFAULT_INT8,
    INT8_METHODS,
    INT8_PER_CHANNEL,
    STATIC_REDUCE_RANGE,
    Int8Choice,
    fuse_transformer_graph,
    quantize_dynamic_int8,
    quantize_static_int8,
)
from .parity import GateThresholds, ParityReport, compare, default_validation_texts, torch_probabilities
from .progress import StepTimer

log = logging.getLogger(__name__)

PARITY_REPORT_FILE = "parity-report.json"
#: `export.optimization` of a graph saved with ONNX Runtime's basic optimizations and transformer fusions.
OPTIMIZATION_FUSED = "ort-basic+transformer-fusion"
#: `export.quantization` of each int8 method (and of an fp32 artifact, "none").
QUANTIZATION_LABELS = {"dynamic": "dynamic-int8", "static": "static-int8-qdq"}

#: With `int8="auto"`, a later candidate replaces the first one that passed only if it is at least this much faster
#: (timings on a shared machine wander by a few percent; a tie keeps dynamic int8, which needs no calibration).
AUTO_MIN_SPEEDUP = 1.05
#: Interleaved timing rounds per candidate with `int8="auto"`; each round is 5 one-text calls and one batch of 32.
AUTO_TIMING_ROUNDS = 3


@dataclass(frozen=True)
class ExportOptions:
    """How to export; every field is also a flag of `ortserve export`."""

    quantize: bool = True
    """Try int8 quantization (by the `int8` method) and keep it if it passes the int8 gate; else keep fp32."""
    optimize: bool = True
    """Fuse attention, GELU and LayerNorm with ONNX Runtime's transformer optimizer where the architecture allows
    (kept only if the fused fp32 graph passes the fp32 gate). Quantization then starts from the fused graph.

    Default chosen by measurement (6-layer, 768-wide BERT, 2 cores, scripts/measure_export.py): fused and plain
    int8 answer an 18-token text equally fast (12.3 ms both), fused fp32 is faster than plain fp32 (18.6 vs
    22.1 ms; 90 vs 71 texts/s in batches of 32), for ~7 s more export time. Runs on a busy machine varied by ±20%."""
    opset: int | None = None
    """ONNX opset; None lets optimum choose the one it validates for the architecture."""
    validation_texts: Sequence[str] | None = None
    """Texts for the accuracy gate; None builds them from the tokenizer's vocabulary."""
    thresholds: GateThresholds = field(default_factory=GateThresholds)
    """Accuracy gate thresholds."""
    int8: Int8Choice = DEFAULT_INT8
    """Int8 method when `quantize` is on: "dynamic" (activations quantized per call), "static" (QDQ graph with
    activation scales calibrated on the validation texts) or "auto" (make both, keep the fastest that passes the
    int8 gate, timed side by side during the export; the figures and the decision go into the manifest's
    `export.int8` and the registered version's tags)."""


@dataclass
class ExportReport:
    """What an export produced and measured."""

    source: str
    output: Path | None
    """The artifact directory on disk; None when it was only uploaded (registry exports without an output)."""
    version: str
    quantized: bool
    model_bytes: int
    parity: dict[str, Any]
    seconds: dict[str, float]
    notes: list[str] = field(default_factory=list)
    optimization: str = "none"
    registered_name: str | None = None
    registered_version: str | None = None
    reused: bool = False
    """True if an equivalent export was already registered and was returned instead of a new one."""
    alias_moved: bool = False
    """True if the requested alias now points at the registered version."""

    @property
    def int8_missed(self) -> bool:
        """True if int8 was asked for (quantize on) but no int8 graph passed the gate, so the artifact is fp32."""
        return bool(self.parity.get("int8")) and not self.quantized

    @property
    def model_uri(self) -> str | None:
        """`models:/NAME/VERSION` of the registered ONNX model, if it was registered."""
        if self.registered_name and self.registered_version:
            return f"models:/{self.registered_name}/{self.registered_version}"
        return None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (what `ortserve export` prints, and what an Airflow task can push to XCom)."""
        return {
            "source": self.source,
            "registered_name": self.registered_name,
            "registered_version": self.registered_version,
            "model_uri": self.model_uri,
            "reused": self.reused,
            "alias_moved": self.alias_moved,
            "output": str(self.output) if self.output is not None else None,
            "version": self.version,
            "optimization": self.optimization,
            "quantized": self.quantized,
            "model_bytes": self.model_bytes,
            "parity": self.parity,
            "seconds": self.seconds,
            "notes": self.notes,
        }


@dataclass
class ExportRun:
    """What the steps of one export share: the source, where they work, and what they decided so far."""

    model_dir: Path
    label: str
    """Names the source in messages (e.g. the models:/ URI a temporary `model_dir` was downloaded from)."""
    output: Path
    work: Path
    """Scratch directory beside `output`, removed at the end."""
    options: ExportOptions
    source: HuggingFaceClassifier
    torch_model: Any
    timer: StepTimer
    manifest: ArtifactManifest | None = None
    texts: list[str] = field(default_factory=list)
    reference: Any = None
    """The PyTorch model's probabilities on `texts`: what every candidate graph is checked against."""
    parity: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    fused: bool = False
    quantized: bool = False
    int8_method: str = ""
    """The int8 method of the kept graph ("" while fp32 is kept)."""
    int8_record: dict[str, Any] = field(default_factory=dict)
    """What the int8 steps tried, measured and decided (becomes the manifest's `export.int8`)."""

    def note(self, text: str, warn: bool = False) -> None:
        self.notes.append(text)
        (log.warning if warn else log.info)(text)


def export_local_model(
    model_dir: str | Path,
    output: str | Path,
    options: ExportOptions | None = None,
    lineage: dict[str, Any] | None = None,
    label: str | None = None,
) -> ExportReport:
    """Export a local Hugging Face text classifier into an artifact directory at `output`.

    The artifact is complete only when it passes the accuracy gate: on failure `output` holds the ONNX files and
    `parity-report.json` but no `ortserve.json`, so no server will load it, and `ParityError` is raised.
    `label` names the source in messages (e.g. the models:/ URI a temporary `model_dir` was downloaded from).
    """
    model_dir, output = Path(model_dir), Path(output)
    check_output_dir(output)
    run = load(model_dir, output, options or ExportOptions(), label or str(model_dir))
    try:
        plain = export_graph(run, lineage or {"path": str(model_dir.resolve())})
        fused = optimize_graph(run, plain) if run.options.optimize else None
        chosen = check_fp32(run, plain, fused)
        if run.options.quantize:
            candidates = [quantize_graph(run, chosen, method) for method in int8_methods(run.options.int8)]
            passed = [candidate for candidate in candidates if candidate is not None and check_int8(run, candidate)]
            if len(passed) > 1:
                time_int8(run, passed)
            chosen = choose_int8(run, passed, chosen)
        model_bytes = publish(run, chosen)
    finally:
        shutil.rmtree(run.work, ignore_errors=True)
    assert run.manifest is not None
    return ExportReport(
        source=run.label,
        output=output,
        version=run.manifest.version,
        quantized=run.quantized,
        model_bytes=model_bytes,
        parity=run.parity,
        seconds=run.timer.seconds,
        notes=run.notes,
        optimization=run.manifest.export["optimization"],
    )


# --- the steps --------------------------------------------------------------------------------------------------


def load(model_dir: Path, output: Path, options: ExportOptions, label: str) -> ExportRun:
    """Load: the config, the fast tokenizer and the PyTorch model; a scratch directory beside `output`."""
    timer = StepTimer()
    with timer.step("load"):
        source = inspect_model_dir(model_dir, label)
        torch_model = load_torch_model(model_dir, label)
    output.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    return ExportRun(model_dir, label, output, work, options, source, torch_model, timer)


def export_graph(run: ExportRun, lineage: dict[str, Any]) -> Path:
    """Export: the plain ONNX graph (optimum) and the fast tokenizer; start the manifest and the gate's texts."""
    with run.timer.step("export"):
        plain = export_onnx(run.model_dir, run.work / "model.fp32.onnx", run.options.opset, run.label)
        run.source.tokenizer.backend_tokenizer.save(str(run.work / TOKENIZER_FILE))
    run.manifest = _manifest(run.source, plain, lineage)
    run.texts = list(run.options.validation_texts or default_validation_texts(run.source.tokenizer))
    return plain


def optimize_graph(run: ExportRun, plain: Path) -> Path | None:
    """Optimize: fuse attention, GELU and LayerNorm where the architecture allows; None if nothing fused."""
    with run.timer.step("optimize"):
        fusion = fuse_transformer_graph(plain, run.work / "model.fused.onnx", run.source.config)
    if not fusion.applied:
        run.note(fusion.note)
        return None
    log.info("fused ops: %s", fusion.fused_ops)
    return run.work / "model.fused.onnx"


def check_fp32(run: ExportRun, plain: Path, fused: Path | None) -> Path:
    """Check: the fp32 graph (fused if there is one) against PyTorch; a fused graph that misses the gate is
    dropped for the plain one. Returns the fp32 graph to keep; raises `ParityError` (after writing the failed
    export and its report to `output`) if even the plain graph misses the gate."""
    thresholds = run.options.thresholds
    with run.timer.step("validate"):
        source = run.source
        run.reference = torch_probabilities(
            run.torch_model, source.tokenizer, run.texts, source.max_length, source.multi_label
        )
        chosen = fused or plain
        fp32 = _parity(run, chosen)
        if fused is not None and not _passes_fp32(fp32, thresholds):
            # A fusion that changes the numbers is not worth serving: fall back to the plain graph.
            run.note(
                f"the fused graph missed the fp32 gate (max |Δp| {fp32.max_abs_diff:.2e}, top-1 "
                f"{fp32.top1_agreement:.1%}): kept the unfused graph",
                warn=True,
            )
            chosen = plain
            fp32 = _parity(run, chosen)
    run.fused = chosen == fused
    run.parity = {"texts": len(run.texts), "thresholds": asdict(thresholds), "fp32": fp32.as_dict()}
    if not _passes_fp32(fp32, thresholds):
        _publish_failed(run, chosen)
        raise ParityError(
            f"{run.label}: the ONNX export differs from the PyTorch model (max |Δp| {fp32.max_abs_diff:.2e}, "
            f"top-1 agreement {fp32.top1_agreement:.1%}; gate {thresholds.fp32_max_abs_diff:g} and "
            f"{thresholds.fp32_min_top1_agreement:.0%}); nothing was registered; report in "
            f"{run.output / PARITY_REPORT_FILE}"
        )
    return chosen


@dataclass
class Int8Candidate:
    """One int8 graph the quantize step made, with what was measured of it."""

    method: str
    path: Path
    parity: ParityReport | None = None
    one_text_ms: float | None = None
    """Median latency of one validation text (set when candidates are timed)."""
    batch32_ms: float | None = None
    """Median latency of a batch of 32 validation texts (set when candidates are timed)."""

    @property
    def cost_ms(self) -> float:
        """Time to answer 32 texts one by one plus 32 in one batch: what `auto` minimizes."""
        assert self.one_text_ms is not None and self.batch32_ms is not None
        return 32 * self.one_text_ms + self.batch32_ms


def int8_methods(choice: Int8Choice) -> list[str]:
    """The int8 methods to try for `ExportOptions.int8`, the incumbent (dynamic) first."""
    if choice == "auto":
        return list(INT8_METHODS)
    if choice not in INT8_METHODS:
        raise ExportError(f"unknown int8 method {choice!r}; choose auto, dynamic or static")
    return [choice]


def quantize_graph(run: ExportRun, fp32: Path, method: str) -> Int8Candidate | None:
    """Quantize: an int8 graph of the kept fp32 graph by `method`. Static int8 is calibrated on the gate's texts,
    tokenized by the server's runtime one text at a time (no padding in the ranges). With `auto`, a method that
    fails is noted and skipped (dynamic still raises, as it did before there was a choice)."""
    destination = run.work / f"model.int8-{method}.onnx"
    with run.timer.step("quantize" if method == "dynamic" else f"quantize {method}"):
        try:
            if method == "static":
                tokenizing = _load_candidate(run, fp32)
                feeds = [tokenizing.tokenize([text]).inputs for text in run.texts]
                quantize_static_int8(fp32, destination, feeds)
            else:
                quantize_dynamic_int8(fp32, destination)
        except ExportError as exc:
            if run.options.int8 != "auto" or method == "dynamic":
                raise
            run.note(f"{exc}; tried the other int8 methods only", warn=True)
            run.int8_record.setdefault("candidates", {})[method] = {"error": str(exc)}
            return None
    return Int8Candidate(method, destination)


def check_int8(run: ExportRun, candidate: Int8Candidate) -> bool:
    """Check: an int8 candidate against PyTorch; True if it holds the int8 gate, else say why."""
    with run.timer.step("validate int8" if candidate.method == "dynamic" else f"validate int8 {candidate.method}"):
        candidate.parity = report = _parity(run, candidate.path)
    kept = min(report.top1_agreement, report.decision_agreement)
    gate = run.options.thresholds.int8_min_top1_agreement
    passed = kept >= gate
    run.int8_record.setdefault("candidates", {})[candidate.method] = {"passed": passed, **report.as_dict()}
    run.parity.setdefault("int8", report.as_dict())  # the first candidate's until one is kept
    if not passed:
        what = "label decisions" if report.decision_agreement < report.top1_agreement else "top-1 labels"
        run.note(f"{candidate.method} int8 kept {what} on {kept:.1%} of texts, under the {gate:.0%} gate", warn=True)
    return passed


def time_int8(run: ExportRun, candidates: Sequence[Int8Candidate]) -> None:
    """Time: the candidates that passed, side by side in interleaved rounds through the server's runtime (one
    validation text; a batch of the 32 shortest), so that machine noise hits them alike."""
    one = run.texts[:1]
    batch = sorted(run.texts, key=len)[:32]
    batch = (batch * (32 // len(batch) + 1))[:32]
    with run.timer.step("time int8"):
        loaded = {candidate.method: _load_candidate(run, candidate.path) for candidate in candidates}
        singles: dict[str, list[float]] = {method: [] for method in loaded}
        batches: dict[str, list[float]] = {method: [] for method in loaded}
        for classifier in loaded.values():  # warm-up: first calls allocate and pick kernels
            classifier.probabilities(one)
            classifier.probabilities(batch)
        for _ in range(AUTO_TIMING_ROUNDS):
            for method, classifier in loaded.items():
                for _ in range(5):
                    singles[method].append(_seconds(classifier.probabilities, one))
                batches[method].append(_seconds(classifier.probabilities, batch))
    for candidate in candidates:
        candidate.one_text_ms = round(statistics.median(singles[candidate.method]) * 1e3, 2)
        candidate.batch32_ms = round(statistics.median(batches[candidate.method]) * 1e3, 1)
        run.int8_record["candidates"][candidate.method].update(
            one_text_ms=candidate.one_text_ms, batch32_ms=candidate.batch32_ms
        )


def choose_int8(run: ExportRun, passed: Sequence[Int8Candidate], fp32: Path) -> Path:
    """Choose: the int8 candidate to serve (the fastest that passed; the first if only one was timed), else `fp32`."""
    run.int8_record["requested"] = run.options.int8
    if not passed:
        run.int8_record["chosen"] = "none"
        run.int8_record["decision"] = "no int8 candidate passed the gate; serving fp32"
        texts = "the built-in validation texts" if run.options.validation_texts is None else "the validation texts"
        run.note(
            f"no int8 graph passed the gate on {texts}: serving fp32 instead (judge int8 on texts like the model's "
            "traffic with --validation-texts FILE, one text per line)",
            warn=True,
        )
        return fp32
    chosen = passed[0]
    for challenger in passed[1:]:
        if challenger.cost_ms * AUTO_MIN_SPEEDUP <= chosen.cost_ms:
            chosen = challenger
    run.quantized, run.int8_method = True, chosen.method
    assert chosen.parity is not None
    run.parity["int8"] = chosen.parity.as_dict()
    run.int8_record["chosen"] = chosen.method
    run.int8_record["decision"] = _decision(run, chosen, passed)
    log.info("int8: %s", run.int8_record["decision"])
    return chosen.path


def publish(run: ExportRun, model: Path) -> int:
    """Publish: `model`, the tokenizer and the completed manifest (with the files' digests) as the artifact
    directory at `output`, replacing it by a rename. Returns the size of model.onnx."""
    manifest = run.manifest
    assert manifest is not None
    manifest.export["optimization"] = OPTIMIZATION_FUSED if run.fused else "none"
    manifest.export["quantization"] = QUANTIZATION_LABELS[run.int8_method] if run.quantized else "none"
    if run.quantized:
        manifest.export["int8_weights"] = "per-channel" if INT8_PER_CHANNEL else "per-tensor"
        if run.int8_method == "static":
            manifest.export["int8_static"] = {
                "format": "QDQ",
                "calibration": "minmax",
                "calibration_texts": len(run.texts),
                "reduce_range": STATIC_REDUCE_RANGE,
            }
    if run.int8_record:
        manifest.export["int8"] = run.int8_record
    manifest.export["notes"] = run.notes
    run.parity["served"] = "int8" if run.quantized else "fp32"
    manifest.parity = run.parity
    staging = run.work / "artifact"
    staging.mkdir()
    shutil.move(str(model), staging / MODEL_FILE)
    shutil.copy2(run.work / TOKENIZER_FILE, staging / TOKENIZER_FILE)
    manifest.digests = file_digests(staging)
    manifest.version = "sha256-" + manifest.digests[MODEL_FILE][:12]  # == artifact_digest(model.onnx)
    manifest.write(staging)  # last: a directory with ortserve.json is complete
    replace_dir(staging, run.output)
    return (run.output / MODEL_FILE).stat().st_size


# --- output directories -----------------------------------------------------------------------------------------


def check_output_dir(output: Path) -> None:
    """Refuse to overwrite what is not ours: only an earlier ortserve artifact or an empty directory is replaced."""
    if output.exists() and not output.is_dir():
        raise ExportError(f"output {output} exists and is not a directory")
    if output.is_dir() and any(output.iterdir()):
        ours = (output / MANIFEST_FILE).exists() or (output / PARITY_REPORT_FILE).exists()
        if not ours:
            raise ExportError(
                f"output {output} is a non-empty directory that is not an ortserve artifact; choose another"
            )


def replace_dir(staging: Path, output: Path) -> None:
    """Move the finished directory `staging` to `output`, replacing what was there."""
    if output.exists():
        shutil.rmtree(output)
    staging.rename(output)


# --- helpers of the steps ---------------------------------------------------------------------------------------


def _passes_fp32(report: ParityReport, thresholds: GateThresholds) -> bool:
    return (
        report.max_abs_diff <= thresholds.fp32_max_abs_diff
        and report.top1_agreement >= thresholds.fp32_min_top1_agreement
    )


def _manifest(classifier: HuggingFaceClassifier, onnx_path: Path, lineage: dict[str, Any]) -> ArtifactManifest:
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False)
    opset = next((o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")), None)
    return ArtifactManifest(
        labels=classifier.labels,
        problem_type=classifier.problem_type,  # type: ignore[arg-type]
        max_length=classifier.max_length,
        input_names=[i.name for i in graph.graph.input],
        pad_token_id=int(classifier.tokenizer.pad_token_id or 0),
        source=lineage,
        export={"opset": opset, "model_type": classifier.config.model_type, **_tool_versions()},
    )


def _tool_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for package in ("optimum-onnx", "optimum", "onnx", "onnxruntime", "transformers", "torch"):
        try:
            versions[package.replace("-", "_")] = version(package)
        except PackageNotFoundError:
            pass
    return versions


def _load_candidate(run: ExportRun, onnx_path: Path) -> OnnxClassifier:
    """The candidate graph as the server's own runtime loads it (an artifact directory of symlinks)."""
    assert run.manifest is not None
    candidate_dir = run.work / f"candidate-{onnx_path.stem}"
    if not candidate_dir.exists():
        candidate_dir.mkdir()
        (candidate_dir / MODEL_FILE).symlink_to(onnx_path.resolve())
        (candidate_dir / TOKENIZER_FILE).symlink_to((run.work / TOKENIZER_FILE).resolve())
        run.manifest.write(candidate_dir)
    return OnnxClassifier.load(candidate_dir, SessionConfig())


def _seconds(call: Any, *args: Any) -> float:
    start = time.perf_counter()
    call(*args)
    return time.perf_counter() - start


def _decision(run: ExportRun, chosen: Int8Candidate, passed: Sequence[Int8Candidate]) -> str:
    """One line saying which int8 method is served and why (a registered version's tag)."""
    if len(passed) == 1:
        tried = int8_methods(run.options.int8)
        why = "the only method asked for" if len(tried) == 1 else "the only one that passed the gate"
        return f"{chosen.method}: {why}"
    figures = ", ".join(f"{c.method} {c.one_text_ms} ms/text and {c.batch32_ms} ms/batch of 32" for c in passed)
    fastest = min(passed, key=lambda candidate: candidate.cost_ms)
    if fastest is chosen:
        return f"{chosen.method}: the fastest that passed the gate ({figures})"
    margin = f"{AUTO_MIN_SPEEDUP - 1:.0%}"
    return f"{chosen.method}: {fastest.method} was not {margin} faster, so the first method was kept ({figures})"


def _parity(run: ExportRun, onnx_path: Path) -> ParityReport:
    """Run the candidate through the server's own runtime, so the gate checks exactly what will be served."""
    classifier = _load_candidate(run, onnx_path)
    probabilities = classifier.probabilities(run.texts, max_batch_size=16)
    return compare(run.reference, probabilities, classifier.manifest.multi_label)


def _publish_failed(run: ExportRun, model: Path) -> None:
    staging = run.work / "failed"
    staging.mkdir()
    shutil.copy2(model, staging / MODEL_FILE)
    shutil.copy2(run.work / TOKENIZER_FILE, staging / TOKENIZER_FILE)
    (staging / PARITY_REPORT_FILE).write_text(json.dumps({"passed": False, **run.parity}, indent=2) + "\n")
    replace_dir(staging, run.output)
