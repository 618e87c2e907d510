"""The export job's error: one line that names the source and what to do, mapped to a non-zero exit code."""

from __future__ import annotations

from typing import Any


class ExportError(Exception):
    """Export cannot proceed. The message names the source and the fix; `exit_code` is the CLI's exit status."""

    exit_code = 2


class ParityError(ExportError):
    """The exported model does not match its source within the accuracy gate; nothing was registered."""

    exit_code = 3


class AliasNotMovedError(ExportError):
    """int8 was asked for but missed the accuracy gate, so the export is fp32: it was registered, but the alias was
    left where it was (an alias is moved only to what was asked for; `allow_fp32=True`, `--allow-fp32`, accepts
    fp32). `report` (an `ExportReport`; typed loosely so that this module imports nothing of the export) says what
    was registered."""

    exit_code = 4

    def __init__(self, message: str, report: Any):
        super().__init__(message)
        self.report = report
