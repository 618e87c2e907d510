"""`ortserve export`: a source model in, a validated ONNX artifact out, registered in MLflow."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from ortserve.export.errors import AliasNotMovedError, ExportError
from ortserve.export.optimize import DEFAULT_INT8


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ortserve export",
        description="Export a Hugging Face text classifier to ONNX, optimize and quantize it, check it against the "
        "source model, write an ortserve artifact directory (model.onnx, tokenizer.json, ortserve.json) and register "
        "it in the MLflow Model Registry. Exit codes: 0 done, 2 cannot export, 3 accuracy gate failed (nothing "
        "registered), 4 int8 missed the gate so the export is fp32: registered, but --alias not moved (see "
        "--allow-fp32).",
    )
    parser.add_argument(
        "source",
        help="models:/NAME@ALIAS, models:/NAME/VERSION, models:/NAME/STAGE, runs:/RUN_ID/PATH or a local Hugging "
        "Face model directory",
    )
    parser.add_argument(
        "--output",
        type=Path,
        help="write the artifact directory here; given without --register-as, only the directory is written and "
        "nothing is registered (default: ./<source name>-onnx for local directories; a temporary directory, removed "
        "after upload, for registry and run sources)",
    )
    parser.add_argument(
        "--register-as",
        help="registered model name for the ONNX model (default <source name>-onnx for models:/ sources without "
        "--output; needed for runs:/ sources; local directories are registered only with it)",
    )
    parser.add_argument(
        "--alias",
        help="alias to point at the registered version (e.g. production); moved only if the export is what was asked "
        "for: when int8 misses the gate, the fp32 version is registered but the alias is not moved (exit code 4) "
        "unless --allow-fp32",
    )
    parser.add_argument(
        "--allow-fp32",
        action="store_true",
        help="move --alias to the export even when int8 missed the accuracy gate and it is fp32 (slower)",
    )
    parser.add_argument(
        "--quantize",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="try int8 quantization (method: --int8) and keep it where it passes the accuracy gate (default: on)",
    )
    parser.add_argument(
        "--int8",
        choices=["auto", "dynamic", "static"],
        default=DEFAULT_INT8,
        help="int8 method: dynamic (activations quantized per call), static (QDQ graph, activation scales calibrated "
        "on the validation texts) or auto (make both, keep the fastest that passes the gate; the figures are "
        f"recorded in the manifest and the registered version's tags) (default: {DEFAULT_INT8})",
    )
    parser.add_argument(
        "--optimize",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="fuse attention, GELU and LayerNorm with ONNX Runtime's transformer optimizer where the architecture "
        "allows (default: on)",
    )
    parser.add_argument("--validation-texts", type=Path, help="file of texts for the accuracy gate, one per line")
    parser.add_argument("--opset", type=int, help="ONNX opset (default: optimum's choice for the architecture)")
    parser.add_argument(
        "--tracking-uri",
        help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else MLflow's default sqlite:///<cwd>/mlflow.db)",
    )
    parser.add_argument("--log-level", default="INFO", help="level of ortserve's own log lines (default INFO)")
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="also show what transformers, optimum, torch, ONNX Runtime and MLflow print (warnings, progress bars); "
        "silenced by default",
    )
    return parser


#: Loggers of the libraries the export drives; below ERROR they only narrate (deprecations, tracer warnings, "please
#: install accelerate", quantizer advice, MLflow's "Created version" and migrations).
THIRD_PARTY_LOGGERS = ("transformers", "optimum", "torch", "onnxruntime", "onnx", "mlflow", "alembic", "urllib3")


def silence_third_party() -> None:
    """Keep stderr to ortserve's own lines: third-party warnings, library log lines under ERROR, ONNX Runtime's C++
    warnings and MLflow's progress bars are dropped (`--verbose` keeps them). Called before those libraries load,
    so that the settings they read once at import apply."""
    warnings.filterwarnings("ignore")  # TracerWarning, FutureWarning, DeprecationWarning... of the libraries
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.getLogger().setLevel(logging.ERROR)  # libraries that log on the root logger (onnxruntime's quantizer)
    for name in THIRD_PARTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        import onnxruntime

        onnxruntime.set_default_logger_severity(3)  # ERROR: C++ warnings go straight to stderr otherwise
    except ImportError:
        pass


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
    # Before transformers is imported (it reads them once): the export never reaches the Hugging Face Hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if not args.verbose:
        silence_third_party()
    try:
        from ortserve.export.job import export_model

        output = args.output
        is_uri = args.source.startswith(("models:", "runs:"))
        if output is None and not is_uri and not args.register_as:
            output = Path.cwd() / f"{Path(args.source).resolve().name}-onnx"
        report = export_model(
            args.source,
            register_as=args.register_as,
            alias=args.alias,
            output=output,
            quantize=args.quantize,
            optimize=args.optimize,
            validation_texts=_read_texts(args.validation_texts) if args.validation_texts else None,
            opset=args.opset,
            tracking_uri=args.tracking_uri,
            int8=args.int8,
            allow_fp32=args.allow_fp32,
        )
    except AliasNotMovedError as exc:  # registered, but not promoted: the summary still says what was registered
        print(json.dumps(exc.report.to_dict(), indent=2))
        print(f"ortserve export: {exc}", file=sys.stderr)
        return exc.exit_code
    except ExportError as exc:
        print(f"ortserve export: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"ortserve export: {args.source}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug or an error no step anticipated: still one line, with the trace at DEBUG
        logging.getLogger("ortserve.export").debug("unexpected failure", exc_info=True)
        first = (str(exc).strip().splitlines() or [""])[0]
        print(
            f"ortserve export: {args.source}: unexpected {type(exc).__name__}: {first}; run again with "
            "--log-level DEBUG for the trace and report it",
            file=sys.stderr,
        )
        return 1
    print(json.dumps(report.to_dict(), indent=2))
    return 0
