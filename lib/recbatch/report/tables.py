"""What the report reads: the configured data root's Delta tables, sliced to the run date.

A table that does not exist is normal (the pipeline may have stopped early, or a stage is not
built yet): ``ReportContext.table`` returns None and the section writes a note. A table that
exists without a column the report needs is not normal: ``ReportError`` stops the report before
anything is published, so the previous report stays instead of a misleading new one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import DateType

from recbatch.config import RecbatchConfig
from recbatch.io.delta import is_delta_table
from recbatch.report.errors import ReportError


@dataclass(frozen=True)
class ReportContext:
    """Everything a section needs: Spark, the config, the run date and the folder being written."""

    spark: SparkSession
    cfg: RecbatchConfig
    run_date: date
    out_dir: Path

    def table_path(self, name: str) -> str:
        return self.cfg.table_path(name)

    def table(self, name: str, required: Sequence[str] = ()) -> DataFrame | None:
        """The Delta table ``name`` of the data root, or None when there is none.

        ``required`` columns are checked up front so a changed layout fails with the table's
        name instead of a Spark analysis error in the middle of a plot."""
        path = self.table_path(name)
        if not is_delta_table(self.spark, path):
            return None
        frame = self.spark.read.format("delta").load(path)
        missing = [c for c in required if c not in frame.columns]
        if missing:
            raise ReportError(
                f"the {name} table at {path} lacks the column(s) {', '.join(missing)} the report "
                f"reads (it has: {', '.join(frame.columns)})"
            )
        return frame

    def png(self, name: str) -> Path:
        """Where a plot of this report is written; the page refers to it by ``name`` alone."""
        return self.out_dir / name


def run_date_filter(frame: DataFrame, run_date: date, column: str = "run_date") -> Column:
    """``run_date`` equals the report's date, whether the column is a date or a string.

    A date column is compared with a date literal so Delta can skip files and partitions; the
    quarantine (and the runs table, still being written) keep the date as text."""
    if isinstance(frame.schema[column].dataType, DateType):
        return F.col(column) == F.lit(run_date)
    return F.col(column).cast("string") == F.lit(run_date.isoformat())


def for_run_date(frame: DataFrame, run_date: date) -> DataFrame:
    return frame.where(run_date_filter(frame, run_date))


def latest_run_date(frame: DataFrame) -> str | None:
    """The newest run date in a table (one aggregation), for the 'no rows for this date' note."""
    value = frame.agg(F.max(F.col("run_date").cast("string"))).head()[0]
    return None if value is None else str(value)
