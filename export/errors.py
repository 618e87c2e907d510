"""The export job's error: one line that names the source and what to do, mapped to a non-zero exit code."""

from __future__ import annotations


class ExportError(Exception):
    """Export cannot proceed. The message names the source and the fix; `exit_code` is the CLI's exit status."""

    exit_code = 2


class ParityError(ExportError):
    """The exported model does not match its source within the accuracy gate; nothing was registered."""

    exit_code = 3
