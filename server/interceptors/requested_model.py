"""The model a request names, read the same way by authentication, metrics, logs and traces."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

#: Request fields that name the model a call is about, in every service (ortserve.v1, Open Inference Protocol V2).
MODEL_FIELDS = ("model", "model_name", "name")


def requested_model(request: Any) -> str | None:
    """The model a request names (its first string field called one of `MODEL_FIELDS`), or None."""
    descriptor = getattr(request, "DESCRIPTOR", None)
    if descriptor is None:
        return None
    for name in MODEL_FIELDS:
        field = descriptor.fields_by_name.get(name)
        if field is not None and field.type == field.TYPE_STRING and not _is_repeated(field):
            value: str = getattr(request, name)
            return value
    return None


def _is_repeated(field: Any) -> bool:
    repeated = getattr(field, "is_repeated", None)  # protobuf >= 5.28; `label` is deprecated there
    return bool(repeated) if repeated is not None else field.label == field.LABEL_REPEATED
