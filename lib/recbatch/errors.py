"""Errors a user can act on: their message is the whole story, so jobs print it without a trace."""


class RecbatchError(RuntimeError):
    """Base of recbatch's well-explained failures (bad input, missing jars, rejected runs)."""
