"""`ortserve export --int8 {auto,dynamic,static}`: static int8 (QDQ, calibrated on the validation texts) beside dynamic
int8, `auto` choosing between them by a measurement it records, and the int8 gate's fallback to fp32."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import onnx
import pytest

from ortserve.cli.export import main as export_cli
from ortserve.contract.artifact import ArtifactManifest
from ortserve.export import ExportError, GateThresholds, export_model
from ortserve.export import job as export_job
from ortserve.export.huggingface import inspect_model_dir, load_torch_model
from ortserve.export.parity import torch_probabilities
from ortserve.export.registry import TAG_QUANTIZATION, version_tags
from ortserve.server.runtime import OnnxClassifier

from .export_helpers import TEXTS, assert_answers_like

pytestmark = [pytest.mark.slow, pytest.mark.torch]


def _op_counts(artifact: Path) -> Counter[str]:
    return Counter(node.op_type for node in onnx.load(str(artifact / "model.onnx")).graph.node)


def test_static_int8_is_a_qdq_graph_that_the_server_runtime_serves_within_the_gate(
    model_dirs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    source = model_dirs["bert"]
    assert export_cli([str(source), "--output", str(tmp_path / "static"), "--int8", "static"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["quantized"], summary["notes"]
    assert summary["parity"]["int8"]["top1_agreement"] >= 0.99

    ops = _op_counts(tmp_path / "static")
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > 0, ops  # activations quantized, not weights only
    classifier = OnnxClassifier.load(tmp_path / "static")
    export = classifier.manifest.export
    assert export["quantization"] == "static-int8-qdq"
    assert export["int8_static"]["format"] == "QDQ" and export["int8_static"]["calibration_texts"] == 64
    assert export["int8"]["requested"] == "static" and export["int8"]["chosen"] == "static"

    hf = inspect_model_dir(source)
    expected = torch_probabilities(load_torch_model(source, "bert"), hf.tokenizer, TEXTS, hf.max_length, False)
    assert_answers_like(classifier.probabilities(TEXTS), expected, quantized=True, multi_label=False)


def test_auto_tries_both_methods_and_records_the_measured_decision(model_dirs: dict[str, Path], tmp_path: Path):
    report = export_model(str(model_dirs["bert"]), output=tmp_path / "auto", int8="auto")
    assert report.quantized, report.notes
    manifest = ArtifactManifest.read(tmp_path / "auto")
    record = manifest.export["int8"]
    assert record["requested"] == "auto"
    assert set(record["candidates"]) == {"dynamic", "static"}
    for figures in record["candidates"].values():
        assert figures["passed"] and figures["one_text_ms"] > 0 and figures["batch32_ms"] > 0
    assert report.quantized and record["chosen"] in ("dynamic", "static")
    assert manifest.export["quantization"] == {"dynamic": "dynamic-int8", "static": "static-int8-qdq"}[record["chosen"]]
    assert record["decision"].startswith(record["chosen"] + ":") and "ms/batch of 32" in record["decision"]
    assert report.seconds["time int8"] > 0

    tags = version_tags(manifest, "key")
    assert tags["ortserve.int8_requested"] == "auto" and tags["ortserve.int8_decision"] == record["decision"]
    assert tags[TAG_QUANTIZATION] == manifest.export["quantization"]
    assert float(tags["ortserve.int8_static_batch32_ms"]) > 0


def test_static_int8_under_the_gate_falls_back_to_fp32_like_dynamic(
    model_dirs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
):
    # No int8 graph can keep more than 100 % of the top-1 labels: the int8 gate fails, the export still succeeds.
    monkeypatch.setattr(export_job, "GateThresholds", lambda: GateThresholds(int8_min_top1_agreement=1.01))
    assert export_cli([str(model_dirs["bert"]), "--output", str(tmp_path / "out"), "--int8", "static"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert not summary["quantized"] and "int8" in summary["parity"]
    assert any(note.startswith("static int8 kept top-1 labels") for note in summary["notes"])
    assert any("serving fp32 instead" in note for note in summary["notes"])
    export = ArtifactManifest.read(tmp_path / "out").export
    assert export["quantization"] == "none" and export["int8"]["chosen"] == "none"
    assert _op_counts(tmp_path / "out")["QuantizeLinear"] == 0


def test_unknown_int8_method_is_a_usage_error(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as exited:
        export_cli(["some/dir", "--int8", "fp8"])
    assert exited.value.code == 2
    assert "invalid choice: 'fp8'" in capsys.readouterr().err
    with pytest.raises(ExportError, match="unknown int8 method 'fp8'"):
        export_model("some/dir", int8="fp8")  # type: ignore[arg-type]


def test_export_key_keeps_dynamic_keys_and_separates_the_other_methods():
    from ortserve.export.job import export_key
    from ortserve.export.pipeline import ExportOptions
    from ortserve.export.sources import ResolvedSource, parse_source

    source = ResolvedSource(parse_source("models:/sentiment/3"), download_uri="models:/sentiment/3", version="3")
    keys = {int8: export_key(source, ExportOptions(int8=int8)) for int8 in ("dynamic", "static", "auto")}
    assert len(set(keys.values())) == 3, "a static or auto export must not reuse a dynamic one"
    assert export_key(source, ExportOptions()) == keys["auto"], "auto is the default"
    assert export_key(source, ExportOptions(quantize=False, int8="static")) == export_key(
        source, ExportOptions(quantize=False)
    )
