"""The report stage: build the run date's report in a staging folder, then swap it in.

Why a staging folder and a rename: readers (a browser, a web server, a sync job) must never see a
half-written report, and a failed run must not destroy the last good one. Everything is written
to ``reports/.<run_date>.tmp-<id>`` beside the target; only when the page and every plot are
complete is the previous folder renamed aside, the new one renamed into place (both renames are
atomic on one filesystem) and the old one deleted. Any failure before that deletes the staging
folder and leaves the previous report as it was; if the second rename fails, the first is undone.
Between the two renames, for a moment, there is no folder at all, never a partial one. Folders
left by a killed run are removed by the next successful one (``remove_leftovers``).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path

from pyspark.sql import SparkSession

from recbatch.config import RecbatchConfig, local_path
from recbatch.log import get_logger, timed
from recbatch.report import html, sections
from recbatch.report.errors import ReportError
from recbatch.report.tables import ReportContext

log = get_logger(__name__)

INDEX = "index.html"


def report_dir(cfg: RecbatchConfig, run_date: date) -> Path:
    """``<data_root>/reports/<run_date>``. The report is files for people to open, so the data
    root must be a local or mounted path (``file://`` is accepted); other URIs are refused."""
    root = local_path(cfg.path("data_root"))
    if root is None:
        raise ReportError(
            f"the report is written as local files, but paths.data_root is "
            f"{cfg.path('data_root')}; run it with a data root on a local or mounted filesystem"
        )
    return root / "reports" / run_date.isoformat()


def report_stage(spark: SparkSession, cfg: RecbatchConfig) -> str:
    """Write the report of ``cfg.run_date`` from the data root's Delta tables; return the path
    of its ``index.html``. On any failure the previous report of the date is kept."""
    run_date = cfg.run_date or datetime.now(UTC).date()
    target = report_dir(cfg, run_date)
    target.parent.mkdir(parents=True, exist_ok=True)
    # mkdir (not mkdtemp, which makes it private): the published folder keeps the umask's mode.
    staging = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:12]}"
    staging.mkdir()
    try:
        ctx = ReportContext(spark, cfg, run_date, staging)
        with timed(log, f"report of {run_date.isoformat()}"):
            page = _render(ctx)
        (staging / INDEX).write_text(page, encoding="utf-8")
        publish_report(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    remove_leftovers(target, max_age_s=cfg.runs.lock_ttl_minutes * 60)
    index = target / INDEX
    log.info("report: %s", index)
    return str(index)


def remove_leftovers(target: Path, max_age_s: float) -> list[Path]:
    """Delete the staging and set-aside folders of ``target`` that killed runs left behind.

    Only folders untouched for ``max_age_s`` (the run lock's TTL: a live run of the date would
    hold the lock and be younger) go, and only after this run published its report, so a
    previous report set aside by a run killed between its two renames is never the only copy.
    """
    cutoff = datetime.now(UTC).timestamp() - max_age_s
    removed = []
    for pattern in (f".{target.name}.tmp-*", f".{target.name}.old-*"):
        for leftover in target.parent.glob(pattern):
            if leftover.is_dir() and leftover.stat().st_mtime < cutoff:
                shutil.rmtree(leftover, ignore_errors=True)
                removed.append(leftover)
    if removed:
        log.info(
            "report: removed %d folders left by killed runs: %s",
            len(removed),
            ", ".join(p.name for p in removed),
        )
    return removed


def _render(ctx: ReportContext) -> str:
    built = []
    for name, build in _builders(ctx):
        with timed(log, f"report section {name}"):
            built.append(build())
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    meta = (
        f"Run date <strong>{ctx.run_date.isoformat()}</strong> · generated {generated} · "
        f"tables: <code>{html.text(ctx.cfg.path('tables'))}</code> "
        f"(config {html.text(ctx.cfg.fingerprint())}, env {html.text(ctx.cfg.env)})"
    )
    return html.page(f"recbatch run report {ctx.run_date.isoformat()}", meta, built)


def _builders(ctx: ReportContext) -> list[tuple[str, Callable[[], html.Section]]]:
    """The sections in page order; 4 and 5 share the scores lookup (computed when first used)."""
    shared: dict[str, sections.ScoredRun] = {}

    def scored() -> sections.ScoredRun:
        if "run" not in shared:
            shared["run"] = sections.scored_run(ctx)
        return shared["run"]

    return [
        ("counts", lambda: sections.counts_section(ctx)),
        ("feedback", lambda: sections.feedback_section(ctx)),
        ("conversion", lambda: sections.conversion_section(ctx)),
        ("reliability", lambda: sections.reliability_section(ctx, scored())),
        ("pr", lambda: sections.pr_section(ctx, scored())),
        ("graph", lambda: sections.graph_section(ctx)),
        ("blade", lambda: sections.blade_section(ctx)),
    ]


def publish_report(staging: Path, target: Path) -> None:
    """Put the complete folder ``staging`` at ``target``, replacing what was there.

    Both paths must be on one filesystem (the staging folder is made beside the target), which
    is what makes each rename atomic."""
    previous = None
    if target.exists():
        previous = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:12]}")
        os.rename(target, previous)
    try:
        os.rename(staging, target)
    except OSError:
        if previous is not None:
            os.rename(previous, target)
        raise
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)
