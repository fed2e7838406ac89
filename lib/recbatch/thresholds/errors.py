"""Errors of the thresholds library: each message says what was wrong and what to change."""

from __future__ import annotations

from recbatch.errors import RecbatchError


class ThresholdError(RecbatchError):
    """Base of the thresholds library's failures."""


class ThresholdInputError(ThresholdError):
    """The labelled scores cannot be used: wrong columns or types, no valid rows."""


class InvalidRowsError(ThresholdInputError):
    """Too many rows with a null/NaN/infinite score or uncertainty, or a label that is not 0/1."""


class ThresholdTableError(ThresholdError):
    """A thresholds table (or slice of it) is missing, ambiguous or inconsistent."""


class ProblemTooLarge(ThresholdError):
    """The exact reference optimiser was given more than it can enumerate."""
