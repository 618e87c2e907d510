"""Builds the ONNX graph of a text classifier with optimum's exporter (optimization and quantization: optimize.py)."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from .errors import ExportError

log = logging.getLogger(__name__)


def export_onnx(model_dir: Path, destination: Path, opset: int | None = None, label: str | None = None) -> Path:
    """Export `model_dir` with optimum for the text-classification task; return the written `model.onnx`.

    `label` names the source in error messages (defaults to `model_dir`).
    """
    label = label or str(model_dir)
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
            raise ExportError(f"{label}: optimum cannot export this model to ONNX: {exc}") from None
        exported = Path(scratch) / "model.onnx"
        if not exported.is_file():
            raise ExportError(f"{label}: optimum wrote no model.onnx")
        if any(Path(scratch).glob("*.onnx_data")) or any(Path(scratch).glob("*.onnx.data")):
            raise ExportError(f"{label}: the model exceeds 2 GB and needs external ONNX data, not supported yet")
        destination.parent.mkdir(parents=True, exist_ok=True)
        exported.replace(destination)
    return destination
