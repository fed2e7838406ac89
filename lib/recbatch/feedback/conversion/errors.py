"""The conversion package's error."""

from __future__ import annotations

from recbatch.errors import RecbatchError


class ConversionInputError(RecbatchError):
    """The data cannot support the conversion model (no examples, empty training or test set)."""
