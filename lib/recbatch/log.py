"""Logging that says what happened: one format for jobs, tests and the library."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

_FORMAT = "%(asctime)s %(levelname)-7s %(name)s | %(message)s"


def configure_logging(level: str = "INFO") -> None:
    """Route recbatch's loggers to stderr once; Spark's own log4j output stays separate."""
    root = logging.getLogger("recbatch")
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(_FORMAT, "%H:%M:%S"))
        root.addHandler(handler)
        root.propagate = False
    root.setLevel(level)
    # PySpark logs every failed SQL analysis as a JSON blob with the JVM stack; recbatch reports
    # the error itself in one line.
    logging.getLogger("SQLQueryContextLogger").setLevel(logging.CRITICAL)


def get_logger(name: str) -> logging.Logger:
    """Logger under the ``recbatch`` namespace, e.g. ``get_logger(__name__)``."""
    return logging.getLogger(name if name.startswith("recbatch") else f"recbatch.{name}")


@contextmanager
def timed(logger: logging.Logger, what: str) -> Iterator[None]:
    """Log the start and the duration of a long step, so a nightly log shows where time went."""
    logger.info("%s ...", what)
    start = time.monotonic()
    yield
    logger.info("%s done in %.1fs", what, time.monotonic() - start)
