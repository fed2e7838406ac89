"""Errors of the run report: each message says which table or folder was wrong."""

from __future__ import annotations

from recbatch.errors import RecbatchError


class ReportError(RecbatchError):
    """The report cannot be written (a table with an unexpected layout, an unusable data root).

    Raised before the new report is published, so the previous report of the date stays."""
