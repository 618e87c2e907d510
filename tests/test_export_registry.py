"""`ortserve export` against MLflow: a real `mlflow server` on 127.0.0.1 and the embedded SQLite default.

Models are logged the way users log them (a pipeline, a components dict; alias `production`, legacy stage
`Production`), exported, registered with lineage, and the registered artifact is loaded the way the server loads it.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
import pytest

from fixtures.registry_seed import SEED_MODELS, log_classifier, log_transformers_model, seed_registry
from ortserve.cli.export import main as export_cli
from ortserve.export import ExportError, GateThresholds, ParityError, export_model
from ortserve.export import job as export_job
from ortserve.export import pipeline as export_pipeline
from ortserve.export.errors import AliasNotMovedError
from ortserve.export.registry import (
    TAG_EXPORT_KEY,
    TAG_OPSET,
    TAG_OPTIMIZATION,
    TAG_QUANTIZATION,
    TAG_SOURCE_MODEL,
    TAG_SOURCE_RUN_ID,
    TAG_SOURCE_URI,
    TAG_SOURCE_VERSION,
)
from ortserve.export.tracking import use_tracking_uri

from .export_helpers import (
    TEXTS,
    assert_answers_like,
    build_slow_only_tokenizer_model,
    download_registered,
    last_error_line,
    load_registered,
    run_cli,
    source_probabilities,
    summary,
)
from .helpers import free_port
from .mlflow_server import MlflowServer

pytestmark = [pytest.mark.slow, pytest.mark.torch]


@pytest.fixture(autouse=True)
def _no_store_in_the_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # MLflow's default store is ./mlflow.db: a lookup that misses the test server must not create one in the repo.
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def registry(mlflow_server: MlflowServer, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The real mlflow server, seeded with topic-classification (pipeline) and sentiment-analysis (components)."""
    seed_registry(mlflow_server.tracking_uri, workdir=tmp_path_factory.mktemp("seed"))
    return mlflow_server.tracking_uri


@pytest.fixture(scope="session")
def sentiment_export(registry: str) -> Any:
    """models:/sentiment-analysis@production exported with defaults and --alias production (the issue's example)."""
    return export_model("models:/sentiment-analysis@production", alias="production", tracking_uri=registry)


def _client(uri: str) -> Any:
    import mlflow

    return mlflow.MlflowClient(uri)


def test_components_model_by_alias_registers_with_lineage(registry: str, sentiment_export: Any, tmp_path: Path):
    report, client = sentiment_export, _client(registry)
    assert (report.registered_name, report.reused) == ("sentiment-analysis-onnx", False)
    alias_target = client.get_model_version_by_alias("sentiment-analysis-onnx", "production")
    assert str(alias_target.version) == report.registered_version
    source = client.get_model_version_by_alias("sentiment-analysis", "production")
    version = client.get_model_version("sentiment-analysis-onnx", report.registered_version)
    assert version.run_id == source.run_id, "the ONNX model is logged in the source version's run"
    tags = version.tags
    assert tags[TAG_SOURCE_MODEL] == "sentiment-analysis"
    assert tags[TAG_SOURCE_VERSION] == str(source.version)
    assert tags[TAG_SOURCE_RUN_ID] == source.run_id
    assert tags[TAG_SOURCE_URI] == "models:/sentiment-analysis@production"
    assert tags["ortserve.onnxruntime_version"] == onnxruntime.__version__
    assert tags["ortserve.onnx_version"] == onnx.__version__
    assert tags["ortserve.optimum_onnx_version"]
    assert int(tags[TAG_OPSET]) >= 11
    assert tags[TAG_OPTIMIZATION] == "ort-basic+transformer-fusion"
    assert tags[TAG_QUANTIZATION] in (("dynamic-int8", "static-int8-qdq") if report.quantized else ("none",))
    assert float(tags["ortserve.parity_fp32_max_abs_diff"]) <= 1e-4
    assert float(tags["ortserve.parity_fp32_top1_agreement"]) == 1.0
    assert float(tags["ortserve.parity_int8_top1_agreement"]) >= (0.99 if report.quantized else 0.0)

    classifier = load_registered(registry, "sentiment-analysis-onnx", report.registered_version, tmp_path)
    manifest = classifier.manifest
    assert manifest.source["registered_model"] == "sentiment-analysis"
    assert manifest.source["version"] == str(source.version)
    assert manifest.source["run_id"] == source.run_id
    assert manifest.source["alias"] == "production"
    assert manifest.parity["fp32"]["max_abs_diff"] <= 1e-4
    expected = source_probabilities("models:/sentiment-analysis@production", registry, TEXTS, manifest.max_length)
    assert_answers_like(classifier.probabilities(TEXTS), expected, report.quantized, multi_label=False)


def test_registered_model_loads_with_mlflow_onnx(registry: str, sentiment_export: Any):
    import mlflow

    with use_tracking_uri(registry):
        model = mlflow.onnx.load_model(sentiment_export.model_uri)
    assert {i.name for i in model.graph.input} >= {"input_ids", "attention_mask"}


def test_reexport_reuses_the_registered_version(registry: str, sentiment_export: Any, tmp_path: Path):
    again = export_model(
        "models:/sentiment-analysis/Production",
        register_as="sentiment-analysis-onnx",  # with an output directory, registered only when named
        alias="production",
        tracking_uri=registry,
        output=tmp_path / "out",
    )
    assert again.reused and again.registered_version == sentiment_export.registered_version
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["model.onnx", "ortserve.json", "tokenizer.json"]
    versions = _client(registry).search_model_versions("name = 'sentiment-analysis-onnx'")
    assert len(versions) == 1
    different = export_model("models:/sentiment-analysis@production", quantize=False, tracking_uri=registry)
    assert not different.reused and different.registered_version != sentiment_export.registered_version
    assert different.parity["served"] == "fp32"


def test_pipeline_model_by_stage_through_the_cli(registry: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    # In-process CLI (the subprocess tests below cover the console script itself; imports cost ~10 s per process).
    code = export_cli(
        [
            "models:/topic-classification/Production",
            "--tracking-uri",
            registry,
            "--no-quantize",
            "--register-as",
            "topic-cli-onnx",
            "--alias",
            "production",
        ]
    )
    assert code == 0
    report = summary(capsys.readouterr().out)
    assert report["registered_name"] == "topic-cli-onnx" and report["output"] is None
    client = _client(registry)
    source = client.get_model_version("topic-classification", "1")
    version = client.get_model_version_by_alias("topic-cli-onnx", "production")
    assert version.tags[TAG_SOURCE_VERSION] == "1" and version.tags[TAG_QUANTIZATION] == "none"
    classifier = load_registered(registry, "topic-cli-onnx", str(version.version), tmp_path)
    assert classifier.manifest.source["stage"] == "Production"
    expected = source_probabilities(f"models:/topic-classification/{source.version}", registry, TEXTS, 128)
    assert np.abs(classifier.probabilities(TEXTS) - expected).max() <= 1e-4


def test_run_uri_multi_label_model(registry: str, tmp_path: Path):
    spec = dataclasses.replace(
        SEED_MODELS["topic-classification"], name="tags", architecture="bert", logged_as="components", multi_label=True
    )
    run_uri = log_classifier(spec, tmp_path / "hf", tracking_uri=registry, register=False)
    report = export_model(run_uri, register_as="tags-onnx", tracking_uri=registry)
    version = _client(registry).get_model_version("tags-onnx", report.registered_version)
    assert version.tags[TAG_SOURCE_RUN_ID] == run_uri.split("/")[1] == version.run_id
    classifier = load_registered(registry, "tags-onnx", report.registered_version, tmp_path / "loaded")
    assert classifier.manifest.multi_label
    expected = source_probabilities(run_uri, registry, TEXTS, classifier.manifest.max_length)
    answered = classifier.probabilities(TEXTS)
    assert not np.allclose(answered.sum(axis=1), 1.0), "multi-label scores are independent sigmoids"
    assert_answers_like(answered, expected, report.quantized, multi_label=True)
    assert report.parity["int8"]["decision_agreement"] <= 1.0


def test_gate_refuses_a_broken_export_and_registers_nothing(
    registry: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    real_export = export_pipeline.export_onnx

    def export_with_a_perturbed_weight(*args: Any, **kwargs: Any) -> Path:
        path = real_export(*args, **kwargs)
        graph = onnx.load(str(path))
        weight = max(graph.graph.initializer, key=lambda t: np.prod(t.dims) if "classifier" in t.name else 0)
        values = onnx.numpy_helper.to_array(weight).copy()
        values += np.random.default_rng(0).normal(0, 0.5, values.shape).astype(values.dtype)
        weight.CopyFrom(onnx.numpy_helper.from_array(values, weight.name))
        onnx.save(graph, str(path))
        return path

    monkeypatch.setattr(export_pipeline, "export_onnx", export_with_a_perturbed_weight)
    output = tmp_path / "broken"
    with pytest.raises(ParityError) as raised:
        export_model(
            "models:/topic-classification@production", register_as="broken-onnx", output=output, tracking_uri=registry
        )
    assert raised.value.exit_code == 3 and "nothing was registered" in str(raised.value)
    assert (output / "parity-report.json").is_file() and not (output / "ortserve.json").exists()
    assert _client(registry).search_registered_models("name = 'broken-onnx'") == []
    # The CLI maps it to exit code 3 with the same one-line message.
    assert (
        export_cli(
            [
                "models:/topic-classification@production",
                "--register-as",
                "broken-onnx",
                "--tracking-uri",
                registry,
                "--output",
                str(output),
            ]
        )
        == 3
    )


def test_embedded_sqlite_store_is_the_default(tmp_path: Path):
    seed_registry(f"sqlite:///{tmp_path / 'mlflow.db'}", models=["sentiment-analysis"], workdir=tmp_path / "seed")
    result = run_cli(
        "models:/sentiment-analysis@production",
        "--alias",
        "production",
        cwd=tmp_path,
        env={"MLFLOW_TRACKING_URI": None},
    )  # type: ignore[dict-item]
    assert result.returncode == 0, result.stderr
    # Only ortserve's own lines: MLflow's store migrations, "Created version", progress bars and the export libraries'
    # warnings are silenced without --verbose.
    ortserve_line = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (INFO|WARNING) ")
    assert all(ortserve_line.match(line) for line in result.stderr.splitlines()), result.stderr
    registered = summary(result.stdout)
    assert registered["registered_name"] == "sentiment-analysis-onnx"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    version = _client(uri).get_model_version_by_alias("sentiment-analysis-onnx", "production")
    assert version.tags[TAG_EXPORT_KEY] and version.tags[TAG_SOURCE_MODEL] == "sentiment-analysis"
    download_registered(uri, "sentiment-analysis-onnx", str(version.version), tmp_path / "download")
    assert not (tmp_path / "mlruns").exists() or any((tmp_path / "mlruns").iterdir())


# --- failures: one line naming the source and what to do, a non-zero exit code, no stack trace ---------------


@pytest.fixture(scope="session")
def slow_tokenizer_version(registry: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    model, tokenizer = build_slow_only_tokenizer_model(tmp_path_factory.mktemp("ctrl"))
    return log_transformers_model({"model": model, "tokenizer": tokenizer}, "slow-tokenizer", registry)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("models:/no-such-model@production", "no registered model 'no-such-model'"),
        ("models:/sentiment-analysis@staging", "has no alias 'staging' (aliases: production)"),
        ("models:/sentiment-analysis/42", "has no version 42"),
        ("models:/sentiment-analysis/Archived", "has no version in stage 'Archived'"),
        ("models:/sentiment-analysis-onnx/1", "is not a transformers model (flavors: onnx, python_function)"),
        ("models:/slow-tokenizer/1", "tokenizer CTRLTokenizer has no fast form"),
        ("runs:/0123456789abcdef/model", "no run '0123456789abcdef'"),
        ("models:/sentiment-analysis", "is not a registry URI ortserve can read"),
    ],
)
def test_failures_name_the_source_and_the_fix(
    registry: str,
    sentiment_export: Any,
    slow_tokenizer_version: str,
    source: str,
    expected: str,
    capsys: pytest.CaptureFixture[str],
):
    extra = ["--register-as", "x"] if source.startswith("runs:/") else []
    assert export_cli([source, "--tracking-uri", registry, *extra]) == 2
    line = last_error_line(capsys.readouterr().err)
    assert line.startswith(f"ortserve export: {source}") and expected in line, line


def test_failures_as_a_subprocess(registry: str, tmp_path: Path):
    unreachable = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    cases = [
        (["models:/sentiment-analysis@nope", "--tracking-uri", registry], "has no alias 'nope'"),
        (
            ["models:/sentiment-analysis@production", "--tracking-uri", unreachable],
            f"cannot reach the MLflow tracking server at {unreachable}",
        ),
        (["models:/sentiment-analysis@production"], "there is no MLflow store at sqlite:///"),
    ]
    for args, expected in cases:
        result = run_cli(*args, cwd=tmp_path, env={"MLFLOW_TRACKING_URI": None})  # type: ignore[dict-item]
        assert result.returncode == 2, result.stderr
        assert expected in last_error_line(result.stderr)
        assert not os.path.exists(tmp_path / "mlflow.db"), "a failed export must not create a store"


# --- no surprises: the alias moves only to what was asked for; --output alone registers nothing


#: A gate no int8 graph can pass: what the demo's real models meet on the built-in texts (int8 kept 90-95 %).
UNREACHABLE_INT8_GATE = GateThresholds(int8_min_top1_agreement=1.01)


def test_alias_is_not_moved_to_an_fp32_fallback(
    registry: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    client, name = _client(registry), "topic-gate-onnx"
    source = "models:/topic-classification@production"
    first = export_model(source, register_as=name, alias="production", quantize=False, tracking_uri=registry)
    assert first.alias_moved  # fp32 asked for (--no-quantize), fp32 served: the alias moves
    with pytest.raises(AliasNotMovedError) as raised:
        export_model(
            source, register_as=name, alias="production", int8="dynamic", thresholds=UNREACHABLE_INT8_GATE,
            tracking_uri=registry,
        )  # fmt: skip
    error, report = raised.value, raised.value.report
    assert error.exit_code == 4 and not report.quantized and not report.alias_moved
    message = str(error)
    assert f"registered it as models:/{name}/{report.registered_version} but did not move alias 'production'" in message
    assert "--validation-texts FILE" in message and "--allow-fp32" in message
    assert str(client.get_model_version_by_alias(name, "production").version) == first.registered_version
    assert client.get_model_version(name, report.registered_version).tags[TAG_QUANTIZATION] == "none"

    # The CLI: exit code 4, the summary on stdout, the reason on stderr (the same export, reused).
    monkeypatch.setattr(export_job, "GateThresholds", lambda: UNREACHABLE_INT8_GATE)
    args = [source, "--register-as", name, "--alias", "production", "--int8", "dynamic", "--tracking-uri", registry]
    assert export_cli(args) == 4
    captured = capsys.readouterr()
    assert summary(captured.out)["alias_moved"] is False
    assert "did not move alias 'production'" in last_error_line(captured.err)
    assert str(client.get_model_version_by_alias(name, "production").version) == first.registered_version
    # --allow-fp32 moves it.
    assert export_cli([*args, "--allow-fp32"]) == 0
    assert summary(capsys.readouterr().out)["alias_moved"] is True
    assert str(client.get_model_version_by_alias(name, "production").version) == report.registered_version


def test_output_alone_writes_only_the_directory(registry: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    client = _client(registry)
    before = {(v.name, v.version) for v in client.search_model_versions("")}
    output = tmp_path / "artifact"
    source = "models:/topic-classification@production"
    assert export_cli([source, "--tracking-uri", registry, "--output", str(output), "--no-quantize"]) == 0
    report = summary(capsys.readouterr().out)
    assert report["registered_name"] is None and report["output"] == str(output)
    assert (output / "ortserve.json").is_file()
    assert {(v.name, v.version) for v in client.search_model_versions("")} == before
    # An alias needs a name to register under.
    assert export_cli([source, "--tracking-uri", registry, "--output", str(output), "--alias", "production"]) == 2
    assert "--alias needs --register-as when --output is given" in last_error_line(capsys.readouterr().err)
    with pytest.raises(ExportError, match="nothing is registered"):
        export_model(source, output=output, alias="production", tracking_uri=registry)
