"""ortserve export: turn Hugging Face text classifiers into validated ONNX artifacts and register them in MLflow.

Needs `pip install 'ortserve[export]'`. The entry point for batch jobs (Airflow tasks) is `export_model`; the names
below import lazily, so that `import ortserve.export` stays cheap and does not pull torch in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .errors import ExportError, ParityError
    from .job import export_model
    from .parity import GateThresholds
    from .pipeline import ExportOptions, ExportReport, export_local_model

__all__ = [
    "ExportError",
    "ExportOptions",
    "ExportReport",
    "GateThresholds",
    "ParityError",
    "export_local_model",
    "export_model",
]

_LOCATIONS = {
    "ExportError": "errors",
    "ParityError": "errors",
    "export_model": "job",
    "GateThresholds": "parity",
    "ExportOptions": "pipeline",
    "ExportReport": "pipeline",
    "export_local_model": "pipeline",
}


def __getattr__(name: str) -> Any:
    if name in _LOCATIONS:
        import importlib

        return getattr(importlib.import_module(f".{_LOCATIONS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
