"""The run report: one HTML page with PNG plots per run date, built from the Delta tables.

``report_stage(spark, cfg)`` reads only the configured data root's Delta tables for
``cfg.run_date``, aggregates them in Spark (only small aggregates reach the driver) and writes
``<data_root>/reports/<run_date>/index.html`` with its PNGs beside it, replacing the folder by a
rename so a failed run keeps the previous report. A section whose table is missing says so in
one line instead of failing, so the report also works on a partial pipeline.

* ``tables``: the report context and table access (missing tables, run-date slices);
* ``aggregates``: the Spark aggregations, each returning a small driver-side result;
* ``plots``: matplotlib (Agg canvas, no pyplot state) figures written as PNG;
* ``html``: the page, tables and notes (inline CSS, no JavaScript);
* ``sections``: the six sections; ``stage``: ``report_stage`` and the atomic publish.
"""

from __future__ import annotations

from recbatch.report.errors import ReportError
from recbatch.report.stage import publish_report, report_dir, report_stage

__all__ = ["ReportError", "publish_report", "report_dir", "report_stage"]
