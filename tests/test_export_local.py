"""`ortserve export` of local Hugging Face directories: every architecture family, optimization, quantization and the
accuracy gate, checked through the server's own runtime."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from fixtures.tiny_sentencepiece import build_sentencepiece_classifier
from ortserve.cli.export import main as export_cli
from ortserve.export import ExportError, export_model
from ortserve.export.huggingface import inspect_model_dir, load_torch_model
from ortserve.export.parity import torch_probabilities
from ortserve.server.runtime import OnnxClassifier

from .export_helpers import TEXTS, assert_answers_like, build_slow_only_tokenizer_model, last_error_line, run_cli

pytestmark = [pytest.mark.slow, pytest.mark.torch]


@pytest.fixture(scope="session")
def local_models(model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The shared tiny models plus an ALBERT whose tokenizer is a real SentencePiece model saved in its slow form."""
    sentencepiece = build_sentencepiece_classifier(tmp_path_factory.mktemp("albert-spm") / "model", seed=7)
    return {**model_dirs, "albert-sentencepiece": sentencepiece}


@pytest.mark.parametrize("name", ["bert", "distilbert", "roberta", "albert-sentencepiece", "multilabel"])
def test_architectures_export_optimize_and_answer_like_pytorch(
    name: str, local_models: dict[str, Path], tmp_path: Path
):
    source = local_models[name]
    report = export_model(str(source), output=tmp_path / "artifact")
    assert report.registered_name is None, "a local directory is registered only with --register-as"
    assert report.optimization == "ort-basic+transformer-fusion", report.notes
    fp32 = report.parity["fp32"]
    assert fp32["max_abs_diff"] <= 1e-4 and fp32["top1_agreement"] == 1.0
    assert "int8" in report.parity
    if not report.quantized:  # random tiny heads sit near ties; int8 may lose top-1 there and must say so
        assert any("serving fp32 instead" in note for note in report.notes)

    classifier = OnnxClassifier.load(report.output)
    manifest = classifier.manifest
    assert manifest.source == {"path": str(source.resolve())}
    assert manifest.export["quantization"] in (("dynamic-int8", "static-int8-qdq") if report.quantized else ("none",))
    hf = inspect_model_dir(source)
    expected = torch_probabilities(load_torch_model(source, name), hf.tokenizer, TEXTS, hf.max_length, hf.multi_label)
    answered = classifier.probabilities(TEXTS)
    assert_answers_like(answered, expected, report.quantized, hf.multi_label)
    if name == "multilabel":
        assert manifest.multi_label and not np.allclose(answered.sum(axis=1), 1.0)


def test_sentencepiece_tokenizer_is_converted_to_its_fast_form(local_models: dict[str, Path], tmp_path: Path):
    source = local_models["albert-sentencepiece"]
    assert (source / "spiece.model").is_file() and not (source / "tokenizer.json").exists()
    report = export_model(str(source), output=tmp_path / "artifact", quantize=False)
    tokenizer = json.loads((report.output / "tokenizer.json").read_text())
    assert tokenizer["model"]["type"] == "Unigram"


def test_no_optimize_keeps_the_plain_graph_and_validation_texts_file(
    local_models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    texts = tmp_path / "texts.txt"
    texts.write_text("good news for markets\n\nrain all weekend\nthe team won\n")
    code = export_cli(
        [
            str(local_models["bert"]),
            "--output",
            str(tmp_path / "out"),
            "--no-optimize",
            "--no-quantize",
            "--validation-texts",
            str(texts),
        ]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["optimization"] == "none" and not report["quantized"]
    assert report["parity"]["texts"] == 3 and "int8" not in report["parity"]
    assert report["registered_name"] is None


def test_local_failures(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    model, tokenizer = build_slow_only_tokenizer_model(tmp_path / "ctrl")
    model.save_pretrained(tmp_path / "slow")
    tokenizer.save_pretrained(tmp_path / "slow")
    (tmp_path / "empty").mkdir()
    cases = [
        ([str(tmp_path / "slow"), "--output", str(tmp_path / "o1")], "tokenizer CTRLTokenizer has no fast form"),
        ([str(tmp_path / "empty"), "--output", str(tmp_path / "o2")], "config.json is missing"),
        ([str(tmp_path / "missing")], "is not a directory"),
        # A Hugging Face Hub id (or its URL) is not read from the Hub: the message says to download it first.
        (["distilbert-base-uncased-finetuned-sst-2-english"], "hf download distilbert-base-uncased-finetuned-sst-2"),
        (["cardiffnlp/twitter-roberta-base-sentiment"], "looks like a Hugging Face Hub model id"),
        (["https://huggingface.co/cardiffnlp/twitter-roberta-base-sentiment"], "hf download cardiffnlp/twitter-rob"),
        ([str(tmp_path / "empty"), "--alias", "production"], "--alias needs --register-as"),
        ([str(tmp_path / "empty"), "--validation-texts", str(tmp_path / "none.txt")], "cannot read --validation-texts"),
    ]
    for args, expected in cases:
        assert export_cli(args) == 2, args
        assert expected in last_error_line(capsys.readouterr().err)
    with pytest.raises(ExportError):
        export_model(str(tmp_path / "slow"), output=tmp_path / "o3")


def test_third_party_noise_is_silenced_unless_verbose(model_dirs: dict[str, Path], tmp_path: Path):
    """stderr of `ortserve export` holds ortserve's own lines only; --verbose brings back what the libraries print
    (torch's TracerWarning, transformers' deprecations, optimum's and the quantizer's advice)."""
    ortserve_line = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (INFO|WARNING) ")
    args = [str(model_dirs["bert"]), "--int8", "dynamic", "--output"]
    quiet = run_cli(*args, str(tmp_path / "quiet"), cwd=tmp_path)
    assert quiet.returncode == 0, quiet.stderr
    lines = quiet.stderr.splitlines()
    assert lines and all(ortserve_line.match(line) for line in lines), quiet.stderr
    for noise in ("Warning", "deprecated", "accelerate", "pre-processing"):
        assert noise not in quiet.stderr
    verbose = run_cli(*args, str(tmp_path / "verbose"), "--verbose", cwd=tmp_path)
    assert verbose.returncode == 0, verbose.stderr
    assert "TracerWarning" in verbose.stderr
