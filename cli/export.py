"""`ortserve export`: a source model in, a validated ONNX artifact directory out."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from ortserve.export.errors import ExportError
from ortserve.export.pipeline import ExportOptions, export_local_model


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ortserve export",
        description="Export a Hugging Face text classifier to ONNX, check it against the source model and write an "
        "ortserve artifact directory (model.onnx, tokenizer.json, ortserve.json).",
    )
    parser.add_argument("source", help="models:/ URI, runs:/ URI or a local Hugging Face model directory")
    parser.add_argument("--output", type=Path, help="artifact directory to write (default ./<source name>-onnx)")
    parser.add_argument("--register-as", help="registered model name for the ONNX artifact")
    parser.add_argument("--alias", help="alias to point at the registered version (e.g. production)")
    parser.add_argument(
        "--quantize", action=argparse.BooleanOptionalAction, default=True,
        help="try dynamic int8 quantization and keep it where it passes the accuracy gate (default: on)",
    )
    parser.add_argument("--validation-texts", type=Path, help="file of texts for the accuracy gate, one per line")
    parser.add_argument("--opset", type=int, help="ONNX opset (default: optimum's choice for the architecture)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI)")
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    return parser


def _read_texts(path: Path) -> list[str]:
    try:
        texts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except OSError as exc:
        raise ExportError(f"cannot read --validation-texts {path}: {exc.strerror}") from None
    if not texts:
        raise ExportError(f"--validation-texts {path} holds no texts")
    return texts


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)
    # Root at WARNING: onnxruntime's quantizer logs every tensor at INFO on the root logger.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    logging.getLogger("ortserve").setLevel(args.log_level.upper())
    try:
        if args.source.startswith(("models:/", "runs:/")) or args.register_as or args.alias:
            raise ExportError(f"{args.source}: MLflow registry sources and registration are not available yet")
        source = Path(args.source)
        if not source.is_dir():
            raise ExportError(f"{source} is not a directory, a models:/ URI or a runs:/ URI")
        options = ExportOptions(
            quantize=args.quantize,
            opset=args.opset,
            validation_texts=_read_texts(args.validation_texts) if args.validation_texts else None,
        )
        output = args.output or Path.cwd() / f"{source.resolve().name}-onnx"
        report = export_local_model(source, output, options)
    except ExportError as exc:
        print(f"ortserve export: {exc}", file=sys.stderr)
        return exc.exit_code
    summary = {
        "output": str(report.output),
        "version": report.version,
        "quantized": report.quantized,
        "model_bytes": report.model_bytes,
        "parity": report.parity,
        "seconds": report.seconds,
        "notes": report.notes,
    }
    print(json.dumps(summary, indent=2))
    return 0
