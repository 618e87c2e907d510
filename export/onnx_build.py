"""Builds ONNX graphs: optimum's export for text classification, and dynamic int8 quantization."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from .errors import ExportError

log = logging.getLogger(__name__)


def export_onnx(model_dir: Path, destination: Path, opset: int | None = None) -> Path:
    """Export `model_dir` with optimum for the text-classification task; return the written `model.onnx`."""
    from optimum.exporters.onnx import main_export

    with tempfile.TemporaryDirectory(prefix="ortserve-optimum-") as scratch:
        try:
            main_export(
                model_name_or_path=str(model_dir),
                output=scratch,
                task="text-classification",
                opset=opset,
                do_validation=False,  # ortserve's own gate compares probabilities below, on the server's code path
                local_files_only=True,
            )
        except Exception as exc:  # optimum raises ValueError/KeyError/RuntimeError for unsupported architectures
            raise ExportError(f"{model_dir}: optimum cannot export this model to ONNX: {exc}") from None
        exported = Path(scratch) / "model.onnx"
        if not exported.is_file():
            raise ExportError(f"{model_dir}: optimum wrote no model.onnx")
        if any(Path(scratch).glob("*.onnx_data")) or any(Path(scratch).glob("*.onnx.data")):
            raise ExportError(f"{model_dir}: the model exceeds 2 GB and needs external ONNX data, not supported yet")
        destination.parent.mkdir(parents=True, exist_ok=True)
        exported.replace(destination)
    return destination


def quantize_int8(source: Path, destination: Path) -> Path:
    """Dynamic int8 quantization of the weights (activations stay float, quantized per batch at run time)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(source, destination, weight_type=QuantType.QInt8)
    return destination
