"""Errors of the graph stages: each message says what was wrong and what to change."""

from __future__ import annotations

from recbatch.errors import RecbatchError


class GraphError(RecbatchError):
    """Base of the graph and sampling failures."""


class GraphInputError(GraphError):
    """The graph input cannot be used: missing, wrong columns, empty, or too many bad rows."""
