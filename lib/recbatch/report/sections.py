"""The report's seven sections, each from its own tables; a missing table becomes a one-line note.

A section builder takes the ``ReportContext`` and returns a ``Section``; it writes its PNGs into
the context's folder and refers to them by file name. Sections 4 and 5 share one ``ScoredRun``
(the run date's scores, their model version and the matching stored thresholds), so the scores'
model version is looked up once.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from recbatch.feedback.flip import CALIBRATION_COLUMNS as HELD_OUT_COLUMNS
from recbatch.graph.stage import STATS_SCHEMA
from recbatch.graph.truth import planted_relations
from recbatch.report import aggregates as agg
from recbatch.report import html, plots
from recbatch.report.html import Section
from recbatch.report.tables import ReportContext, for_run_date, latest_run_date

TITLES = {
    "counts": "1. Pipeline row counts and quarantine",
    "feedback": "2. Delayed feedback: flip probability by elapsed time",
    "conversion": "3. Conversion model by weighting method",
    "reliability": "4. Reliability per uncertainty bucket",
    "pr": "5. Precision-recall: one threshold vs per-bucket thresholds",
    "graph": "6. Product graph and neighbourhood samples",
    "blade": "7. BLADE: degree-bucket quality, link thresholds and decisions",
}

STAGE_TABLES = (
    ("ingest", "events"),
    ("ingest", "quarantine"),
    ("products", "products"),
    ("examples", "examples"),
    ("flip model + weights", "training_weights"),
    ("scores", "scores"),
    ("decisions", "decisions"),
)
OPTIONAL_TABLES = frozenset({"products"})
"""Tables of optional inputs (a product catalogue): left out of the counts when absent."""

FLIP_COLUMNS = (
    "run_date",
    "signal_state",
    "elapsed_bucket",
    "bucket_lo_hours",
    "bucket_hi_hours",
    "negatives",
    "flips",
    "z",
    "s_upper",
    "s",
    "learner",
    "cutoff",
)
CALIBRATION_COLUMNS = ("run_date", *HELD_OUT_COLUMNS)
METRIC_COLUMNS = (
    "run_date",
    "method",
    "train_rows",
    "test_rows",
    "test_positives",
    "auc",
    "pr_auc",
    "log_loss",
    "ri_auc",
    "train_seconds",
)
SCORE_COLUMNS = ("run_date", "model_version", "score", "uncertainty", "label")
THRESHOLD_COLUMNS = (
    "model_version",
    "run_date",
    "method",
    "bucket",
    "uncertainty_lo",
    "uncertainty_hi",
    "score_threshold",
    "target_precision",
    "certified_precision_lb",
    "expected_precision",
    "expected_precision_lo",
    "expected_precision_hi",
    "expected_recall",
    "expected_recall_lo",
    "expected_recall_hi",
    "eval_rows",
    "eval_positives",
    "eval_accepted",
    "eval_true_positives",
)
GRAPH_STATS_COLUMNS = tuple(field.split()[0] for field in STATS_SCHEMA.split(","))
"""The columns of ``graph_stats``, in the stage's order."""
GRAPH_NODE_COLUMNS = ("run_date", "out_degree", "in_degree")
GRAPH_SAMPLE_COLUMNS = ("run_date", "law", "role", "degree", "budget", "hop_counts")


def missing_note(ctx: ReportContext, name: str) -> str:
    return html.note(f"Skipped: no {name} table at {ctx.table_path(name)} (its stage has not run).")


def no_rows_note(ctx: ReportContext, name: str, frame: DataFrame) -> str:
    """Say which run date the table does have, so a date mix-up is visible at once."""
    latest = latest_run_date(frame)
    found = f"latest run date in it: {latest}" if latest else "the table is empty"
    return html.note(
        f"Skipped: the {name} table has no rows for run date {ctx.run_date.isoformat()} ({found})."
    )


def run_table(
    ctx: ReportContext,
    name: str,
    required: tuple[str, ...],
    columns: list[str | Column],
    order: list[str | Column],
) -> pd.DataFrame | str:
    """The run date's rows of a small table, collected in one job, or the note that replaces
    the part that needs them (no table, or no rows for the date)."""
    frame = ctx.table(name, required)
    if frame is None:
        return missing_note(ctx, name)
    rows = agg.small_table(for_run_date(frame, ctx.run_date), columns, order)
    return no_rows_note(ctx, name, frame) if rows.empty else rows


# --- 1. row counts, quarantine, the latest run ----------------------------------------------------


def counts_section(ctx: ReportContext) -> Section:
    counts = []
    for stage, name in STAGE_TABLES:
        frame = ctx.table(name)
        if frame is None and name in OPTIONAL_TABLES:
            continue
        if frame is None:
            counts.append(agg.RowCount(stage, name, None, None, present=False))
            continue
        total, of_run = agg.count_rows(frame, ctx.run_date)
        counts.append(agg.RowCount(stage, name, total, of_run, present=True))
    body = [
        html.paragraph(
            "Rows in each stage's Delta table. <em>Run date</em> counts the rows written for "
            f"{ctx.run_date.isoformat()}; events and examples accumulate across runs and have no "
            "run date, and products is the catalogue as of the last run, so their bar shows the "
            "whole table."
        ),
        _counts_table(counts),
        "<h3>Quarantine by reason</h3>",
        _quarantine(ctx),
        "<h3>Latest run: stage timeline</h3>",
        _timeline(ctx),
    ]
    return html.Section("counts", TITLES["counts"], "\n".join(body))


def _counts_table(counts: list[agg.RowCount]) -> str:
    shown = [c.run_rows if c.run_rows is not None else c.rows for c in counts]
    top = max([s for s in shown if s] or [1])
    rows = []
    for count, value in zip(counts, shown, strict=True):
        if not count.present:
            rows.append([html.text(count.stage), html.text(count.table), "—", "—", "table missing"])
            continue
        rows.append(
            [
                html.text(count.stage),
                html.text(count.table),
                html.number(count.run_rows),
                html.number(count.rows),
                html.bar((value or 0) / top),
            ]
        )
    columns = ["stage", "table", "rows (run date)", "rows (whole table)", ""]
    return html.table(columns, rows, numeric=columns[2:4])


def _quarantine(ctx: ReportContext) -> str:
    quarantine = ctx.table("quarantine", ("reason", "run_date"))
    if quarantine is None:
        return missing_note(ctx, "quarantine")
    reasons = agg.quarantine_reasons(quarantine, ctx.run_date)
    if reasons.empty:
        return html.paragraph("No row has been quarantined: every ingested row was valid.")
    total = int(reasons["rows"].sum())
    rows = [
        [
            html.text(r.reason),
            html.number(int(r.rows)),
            html.number(int(r.run_rows)),
            html.number(r.rows / total, 3),
        ]
        for r in reasons.itertuples()
    ]
    columns = ["reason", "rows", "of which this run date", "share"]
    return html.table(columns, rows, numeric=columns[1:])


def _timeline(ctx: ReportContext) -> str:
    """The latest run's stages from the optional ``runs`` table. Its layout is still settling,
    so a missing column is a note here, not a failure of the whole report."""
    runs = ctx.table("runs")
    if runs is None:
        return html.note(
            "Skipped: no runs table yet (the stage timeline appears once the pipeline records its runs)."
        )
    missing = [c for c in agg.RUN_COLUMNS if c not in runs.columns]
    if missing:
        return html.note(
            f"Skipped: the runs table lacks {', '.join(missing)} (has: {', '.join(runs.columns)})."
        )
    latest = agg.latest_run(runs, ctx.run_date)
    if latest is None:
        return no_rows_note(ctx, "runs", runs)
    run_id, stages = latest
    return html.paragraph(
        f"Run <code>{html.text(run_id)}</code>, stages in start order."
    ) + _stage_rows(stages)


def _stage_rows(stages: pd.DataFrame) -> str:
    starts = stages["start_s"].dropna()
    ends = pd.concat([stages["end_s"].dropna(), starts])
    origin = float(starts.min()) if len(starts) else 0.0
    length = max(float(ends.max()) - origin, 1e-9) if len(ends) else 1.0
    optional = [c for c in ("status", "seconds", "rows_in", "rows_out") if c in stages.columns]
    rows = []
    for stage in stages.to_dict("records"):
        start, end = stage["start_s"], stage["end_s"]
        if pd.isna(end):  # still running, or a layout without ended_at: its seconds, if any
            seconds = stage.get("seconds")
            end = start + float(seconds) if seconds is not None and not pd.isna(seconds) else start
        timeline = (
            ""
            if pd.isna(start)
            else html.span((start - origin) / length, (end - start) / length, stage.get("status"))
        )
        cells = [html.text(stage["stage"])]
        for column in optional:
            value = stage[column]
            css = (
                ' class="status-failed"'
                if column == "status" and str(value).lower() in ("failed", "error")
                else ""
            )
            cells.append(
                f"<span{css}>{html.text(value)}</span>"
                if column == "status"
                else html.number(value, 1)
            )
        cells += [html.text(stage["started"]), html.text(stage["ended"]), timeline]
        if "error" in stages.columns:
            error = stage["error"]
            cells.append(html.text(None if error is None or pd.isna(error) else str(error)[:300]))
        rows.append(cells)
    labels = [c.replace("_", " ") for c in optional]
    columns = ["stage", *labels, "started (UTC)", "ended", "timeline"]
    columns += ["error"] if "error" in stages.columns else []
    return html.table(columns, rows, numeric=[c for c in labels if c != "status"])


# --- 2. flip model and its calibration -----------------------------------------------------------


def feedback_section(ctx: ReportContext) -> Section:
    parts = [_flip_model(ctx), "<h3>Held-out calibration of z</h3>", _flip_calibration(ctx)]
    return html.Section("feedback", TITLES["feedback"], "\n".join(parts))


def _flip_model(ctx: ReportContext) -> str:
    columns: list[str | Column] = list(FLIP_COLUMNS[1:-1])
    columns.append(F.date_format("cutoff", "yyyy-MM-dd HH:mm").alias("cutoff"))
    cells = run_table(ctx, "flip_model", FLIP_COLUMNS, columns, ["signal_state", "elapsed_bucket"])
    if isinstance(cells, str):
        return cells
    plots.plot_flip_model(cells, ctx.png("flip_model.png"))
    cutoff = cells["cutoff"].max()
    flips, negatives = int(cells["flips"].sum()), int(cells["negatives"].sum())
    learner = html.text(", ".join(sorted(set(cells["learner"].dropna()))) or "hazard")
    return html.paragraph(
        f"Learnt at cutoff {html.text(cutoff)} UTC by the <em>{learner}</em> learner from "
        f"{negatives:,} counterfactual negatives, {flips:,} of which converted later (z of a "
        "cell: the mean z of its negatives)."
    ) + html.figure(
        "flip_model.png",
        "flip probability z by elapsed time and signal state",
        "Left: each line is a pre-conversion signal; read it left to right to see how the chance "
        "that a view still converts falls as time passes without a purchase (bigger markers: more "
        "negatives behind the value; ticks mark the bucket edges). Right: the share of eventual "
        "conversions already observed after that much time.",
    )


def _flip_calibration(ctx: ReportContext) -> str:
    table = run_table(
        ctx, "flip_calibration", CALIBRATION_COLUMNS, list(CALIBRATION_COLUMNS[1:]), ["scope"]
    )
    if isinstance(table, str):
        return table
    order = {scope: i for i, scope in enumerate(("all", *plots.SIGNAL_ORDER))}
    table = table.sort_values("scope", key=lambda s: s.map(lambda v: (order.get(v, len(order)), v)))
    plots.plot_flip_calibration(table, ctx.png("flip_calibration.png"))
    cells = [
        [
            html.text(r.scope),
            html.number(int(r.n)),
            html.number(None if pd.isna(r.flips) else int(r.flips)),
            html.number(r.mean_predicted),
            html.number(r.observed_rate),
            html.number(r.ece),
            html.number(None if pd.isna(r.auc) else r.auc),
        ]
        for r in table.itertuples()
    ]
    columns = [
        "scope",
        "held-out negatives",
        "flips",
        "mean z",
        "observed flip rate",
        "ECE",
        "AUC of z",
    ]
    return html.figure(
        "flip_calibration.png",
        "predicted vs observed flip rate per signal state",
        "Each pair of bars compares the mean predicted z with the flip rate observed on a held-out "
        "cutoff; equal bars (small ECE) mean the weights are trustworthy for that signal.",
    ) + html.table(columns, cells, numeric=columns[1:])


# --- 3. conversion metrics --------------------------------------------------------------------------


def conversion_section(ctx: ReportContext) -> Section:
    frame = ctx.table("conversion_metrics", METRIC_COLUMNS)
    optional = [c for c in ("model_seed", "pcoc") if frame is not None and c in frame.columns]
    metrics = run_table(
        ctx,
        "conversion_metrics",
        METRIC_COLUMNS,
        [*METRIC_COLUMNS[1:], *optional],
        ["method", *optional[:1]],
    )
    if isinstance(metrics, str):
        return html.Section("conversion", TITLES["conversion"], metrics)
    summary = agg.method_summary(metrics)
    seeds = max(s.seeds for s in summary)
    contenders = [s for s in summary if s.method != "oracle"]
    best = {
        "auc": max(s.auc.mean for s in contenders) if contenders else None,
        "pr_auc": max(s.pr_auc.mean for s in contenders) if contenders else None,
        "log_loss": min(s.log_loss.mean for s in contenders) if contenders else None,
    }

    def cell(summary_row: agg.MethodSummary, column: str) -> str:
        value = getattr(summary_row, column)
        shown = html.text(value) if seeds > 1 else html.number(value.mean, 4)
        is_best = best[column] == value.mean and summary_row.method != "oracle"
        return f'<span class="best">{shown}</span>' if is_best else shown

    def paired(value) -> str:
        return "—" if value is None else html.text(f"{value.mean:+.4f}" if seeds < 2 else value)

    cells = [
        [
            html.text(s.method),
            html.number(s.train_rows),
            html.number(s.test_rows),
            html.number(s.test_positives),
            cell(s, "auc"),
            cell(s, "pr_auc"),
            cell(s, "log_loss"),
            "—" if s.pcoc is None else html.number(s.pcoc, 3),
            html.number(s.ri_auc, 3),
            paired(s.auc_vs_vanilla),
            paired(s.log_loss_vs_vanilla),
            html.number(s.train_seconds, 1),
        ]
        for s in summary
    ]
    columns = [
        "method",
        "train rows",
        "test rows",
        "test positives",
        "AUC",
        "PR-AUC",
        "log loss",
        "PCOC",
        "RI-AUC",
        "AUC − vanilla",
        "log loss − vanilla",
        "train s",
    ]
    spread = (
        f"Each method was trained {seeds} times (model seeds, same rows): a cell is the mean "
        "± the half-width of its 95% t-interval over the seeds, and the two columns against "
        "vanilla pair each seed with vanilla's model of the same seed (what the methods share, "
        "the data and its noise, cancels). A difference whose interval holds 0 is not "
        "established by this run."
        if seeds > 1
        else "One model per method (<code>conversion.model_seeds</code> = 1): differences "
        "smaller than the seed-to-seed spread (bench/feedback_methods.py measures it) are noise."
    )
    body = html.paragraph(
        "The same model trained per weighting method and scored on a later test window with "
        "the true labels. RI-AUC = (AUC − AUC<sub>vanilla</sub>) / "
        "(AUC<sub>oracle</sub> − AUC<sub>vanilla</sub>) of the mean AUCs: 0 is no gain over "
        "vanilla, 1 reaches the oracle. PCOC: predicted over observed conversions (1 is "
        "calibrated; vanilla, trained on labels still immature at the cutoff, reads below 1). "
        "Bold: the best method other than the oracle (which reads the future). " + spread
    ) + html.table(columns, cells, numeric=columns[1:])
    return html.Section("conversion", TITLES["conversion"], body)


# --- 4 and 5. scores and thresholds -----------------------------------------------------------------


@dataclass(frozen=True)
class ScoredRun:
    """The run date's scores and the stored thresholds of the same model version (as a lazy
    DataFrame for aggregations, and its few rows collected); where one is unavailable, the note
    that replaces what needs it."""

    scores: DataFrame | None
    thresholds: DataFrame | None
    stored: pd.DataFrame | None
    scores_note: str = ""
    thresholds_note: str = ""
    model_version: str | None = None


def scored_run(ctx: ReportContext, model: str = agg.SCORED_MODEL) -> ScoredRun:
    """Match thresholds to scores by model version, as ``decisions`` does: a re-run with another
    config keeps the old version's thresholds in the table, and those must not be mixed in.
    ``model``: the conversion model's scores, or the link scores'."""
    scores_all = ctx.table("scores", SCORE_COLUMNS)
    thresholds_all = ctx.table("thresholds", THRESHOLD_COLUMNS)
    scores, version, scores_note = None, None, ""
    if scores_all is None:
        scores_note = missing_note(ctx, "scores")
    else:
        scores = agg.run_scores(scores_all, ctx.run_date, model)
        versions = agg.model_versions(scores)
        if len(versions) == 1:
            version = versions[0]
        else:
            scores_note = (
                no_rows_note(ctx, "scores", scores_all)
                if not versions
                else html.note(
                    f"Skipped: the run date's scores have {len(versions)} model versions "
                    f"({', '.join(versions)}); expected one."
                )
            )
            scores = None
    if thresholds_all is None:
        return ScoredRun(scores, None, None, scores_note, missing_note(ctx, "thresholds"), version)
    thresholds = for_run_date(thresholds_all, ctx.run_date)
    if version is not None:
        thresholds = thresholds.where(F.col("model_version") == version)
    stored = agg.small_table(
        thresholds, list(THRESHOLD_COLUMNS), ["model_version", "method", "bucket"]
    )
    stored_versions = sorted(set(stored["model_version"]))
    if not stored_versions:
        which = f" and model version {version}" if version else ""
        note = html.note(
            f"Skipped: the thresholds table has no rows for run date {ctx.run_date.isoformat()}"
            f"{which} (run the thresholds stage)."
        )
        return ScoredRun(scores, None, None, scores_note, note, version)
    if len(stored_versions) > 1:  # only without scores to pick the version from
        note = html.note(
            f"Skipped: the run date's thresholds have {len(stored_versions)} model versions "
            f"({', '.join(stored_versions)}) and no scores say which one is current."
        )
        return ScoredRun(scores, None, None, scores_note, note, version)
    return ScoredRun(scores, thresholds, stored, scores_note, "", version or stored_versions[0])


def reliability_section(ctx: ReportContext, run: ScoredRun) -> Section:
    if run.scores is None or run.stored is None:
        body = run.scores_note if run.scores is None else run.thresholds_note
        return html.Section("reliability", TITLES["reliability"], body)
    buckets = agg.bucket_ranges(run.stored, "per_bucket")
    if not buckets:
        note = html.note("Skipped: the stored thresholds have no per_bucket rule for this run.")
        return html.Section("reliability", TITLES["reliability"], note)
    bins, excluded = agg.reliability_bins(run.scores, buckets)
    plots.plot_reliability(bins, buckets, ctx.png("reliability.png"))
    rows = bins.groupby("bucket").agg(rows=("rows", "sum"))
    counts = ", ".join(f"bucket {b}: {int(n):,}" for b, n in rows["rows"].items())
    body = html.paragraph(
        f"Scores of model <code>{html.text(run.model_version)}</code>, split into the stored "
        f"uncertainty buckets of the per-bucket rule and, within each, into score deciles "
        f"(rows: {html.text(counts)}"
        + (
            f"; {excluded:,} rows without a finite score/uncertainty or 0/1 label left out"
            if excluded
            else ""
        )
        + ")."
    ) + html.figure(
        "reliability.png",
        "observed positive rate vs mean score per uncertainty bucket",
        "Each point is a score decile of one uncertainty bucket: points on the dashed diagonal are "
        "calibrated, and a line lying lower than another at the same score means that bucket's "
        "scores convert less often, which is why it gets a stricter threshold.",
    )
    return html.Section("reliability", TITLES["reliability"], body)


def pr_section(ctx: ReportContext, run: ScoredRun) -> Section:
    parts = []
    points = agg.operating_points(run.thresholds) if run.thresholds is not None else []
    target = next((p.target_precision for p in points if p.target_precision is not None), None)
    if run.scores is None:
        parts.append(run.scores_note)
    else:
        parts.append(_pr_figure(ctx, run.scores, points, target))
    if run.stored is None:
        parts.append(run.thresholds_note)
    else:
        parts += ["<h3>Stored rules</h3>", _points_table(points), _thresholds_table(run.stored)]
    return html.Section("pr", TITLES["pr"], "\n".join(parts))


def _pr_figure(
    ctx: ReportContext,
    scores: DataFrame,
    points: list[agg.OperatingPoint],
    target: float | None,
    name: str = "pr_curve.png",
) -> str:
    histogram, excluded = agg.score_histogram(scores)
    curve = agg.pr_curve(histogram)
    if curve.empty:
        return html.note("Skipped the PR curve: the run date's scores have no positive label.")
    prevalence = float(curve["precision"].iloc[-1])
    plots.plot_pr(curve, points, target, prevalence, ctx.png(name))
    ap = agg.average_precision(curve)
    left_out = f" {excluded:,} invalid rows left out." if excluded else ""
    return html.paragraph(
        f"{int(histogram['rows'].sum()):,} scored examples of the run date, "
        f"{int(histogram['positives'].sum()):,} positive; average precision of the raw score "
        f"{ap:.4f}.{left_out}"
    ) + html.figure(
        name,
        "precision-recall curve with the stored rules' operating points",
        "The line is every threshold on the raw score over all of the run date's scores; the "
        "markers are the stored rules measured on their evaluation split: a marker further right "
        "at or above the dashed target line keeps the target precision with more recall.",
    )


def _points_table(points: list[agg.OperatingPoint]) -> str:
    rows = [
        [
            html.text(p.method),
            html.number(p.buckets),
            html.number(p.accepted),
            html.number(p.true_positives),
            html.number(p.positives),
            html.number(p.precision),
            html.number(p.recall),
            html.number(p.target_precision, 3),
            html.number(p.certified_precision_lb),
        ]
        for p in points
    ]
    columns = [
        "rule",
        "buckets",
        "accepted",
        "true positives",
        "positives",
        "precision",
        "recall",
        "target",
        "certified lower bound",
    ]
    return html.paragraph(
        "Evaluation-split counts summed over each rule's buckets: precision = true positives / "
        "accepted, recall = true positives / positives (— when a rule accepts nothing)."
    ) + html.table(columns, rows, numeric=columns[1:])


def _thresholds_table(table: pd.DataFrame) -> str:
    def interval(value: object, lo: object, hi: object) -> str:
        if value is None or pd.isna(value):
            return "—"
        return f"{html.number(value, 3)} [{html.number(lo, 3)}, {html.number(hi, 3)}]"

    rows = [
        [
            html.text(r["method"]),
            html.number(r["bucket"]),
            f"[{html.number(r['uncertainty_lo'], 5)}, {html.number(r['uncertainty_hi'], 5)})",
            html.number(r["score_threshold"]),
            interval(
                r["expected_precision"], r["expected_precision_lo"], r["expected_precision_hi"]
            ),
            interval(r["expected_recall"], r["expected_recall_lo"], r["expected_recall_hi"]),
            html.number(r["eval_accepted"]),
            html.number(r["eval_rows"]),
        ]
        for r in table.to_dict("records")
    ]
    columns = [
        "rule",
        "bucket",
        "uncertainty",
        "score threshold",
        "precision [interval]",
        "recall [interval]",
        "accepted",
        "eval rows",
    ]
    return html.table(columns, rows, numeric=["bucket", "score threshold", "accepted", "eval rows"])


# --- 6. product graph and neighbourhood samples ---------------------------------------------------


def graph_section(ctx: ReportContext) -> Section:
    """What the BLADE model will train on: the graph's shape, then the budgets it was sampled
    with. Each part reads its own table, so a run with the graph but not the samples still
    shows the graph."""
    parts = [
        _graph_stats(ctx),
        "<h3>Quarantined edge rows</h3>",
        _graph_quarantine(ctx),
        "<h3>Degree distribution</h3>",
        _degree_distribution(ctx),
        "<h3>Neighbourhood budget by degree</h3>",
        _sample_budgets(ctx),
    ]
    return html.Section("graph", TITLES["graph"], "\n".join(parts))


def _graph_stats(ctx: ReportContext) -> str:
    table = run_table(
        ctx, "graph_stats", GRAPH_STATS_COLUMNS, list(GRAPH_STATS_COLUMNS[1:]), ["source"]
    )
    if isinstance(table, str):
        return table
    row = table.iloc[0]  # one row per run date (the stage replaces the date's row)

    def fit(prefix: str) -> str:
        alpha = row[f"{prefix}_alpha"]
        if alpha is None or pd.isna(alpha):
            return "— (tail too small to fit)"
        d_min = row[f"{prefix}_dmin"]
        d_min = None if d_min is None or pd.isna(d_min) else int(d_min)
        return f"{html.number(alpha, 3)} (d<sub>min</sub> {html.number(d_min)})"

    rows = [
        ["edge source", html.text(row["source"])],
        ["nodes", html.number(row["nodes"])],
        ["edges (directed)", html.number(row["edges"])],
        [
            "reciprocity (edges whose reverse is an edge)",
            f"{html.number(row['reciprocity'], 3)} ({html.number(row['reciprocated_edges'])} edges)",
        ],
        [
            "weakly connected components / nodes in the largest",
            f"{html.number(row['components'])} / {html.number(row['largest_component_nodes'])}",
        ],
        ["power-law α of the out-degrees", fit("out")],
        ["power-law α of the in-degrees", fit("in")],
        [
            "train / val / test edges",
            " / ".join(html.number(row[f"{split}_edges"]) for split in ("train", "val", "test")),
        ],
        ["quarantined input rows", html.number(row["quarantined"])],
    ]
    if row["truth_relations"] is not None and not pd.isna(row["truth_relations"]):
        rows.append(
            [
                "planted relations (generated data): edges along one / against one",
                f"{html.number(row['truth_relations'])}: {html.number(row['edges_in_truth'])} / "
                f"{html.number(row['edges_reversed_in_truth'])}",
            ]
        )
    return html.paragraph(
        "The run date's directed product graph (from co-purchases, u → v when v was bought "
        "after u, or from an edge list). The degree fits and the sampler see the training "
        "edges only; the validation and test edges are held out for the BLADE comparison."
    ) + html.table(["", "value"], [[html.text(label), value] for label, value in rows])


def _graph_quarantine(ctx: ReportContext) -> str:
    quarantine = ctx.table("graph_quarantine", ("run_date", "reason"))
    if quarantine is None:
        return missing_note(ctx, "graph_quarantine")
    reasons = agg.reason_counts(for_run_date(quarantine, ctx.run_date))
    if reasons.empty:
        return html.paragraph("No input row was set aside: every edge row was valid.")
    total = int(reasons["rows"].sum())
    rows = [
        [html.text(r.reason), html.number(int(r.rows)), html.number(r.rows / total, 3)]
        for r in reasons.itertuples()
    ]
    columns = ["reason", "rows", "share"]
    return html.table(columns, rows, numeric=columns[1:])


def _degree_distribution(ctx: ReportContext) -> str:
    nodes = ctx.table("graph_nodes", GRAPH_NODE_COLUMNS)
    if nodes is None:
        return missing_note(ctx, "graph_nodes")
    histogram = agg.degree_histogram(for_run_date(nodes, ctx.run_date))
    if histogram.empty:
        return no_rows_note(ctx, "graph_nodes", nodes)
    if not (histogram["degree"] > 0).any():
        return html.note("Skipped the degree plot: no node of the training graph has an edge.")
    plots.plot_degree_distribution(histogram, ctx.png("degree_distribution.png"))
    isolated = histogram[histogram["degree"] == 0].set_index("direction")["nodes"]
    total = int(histogram.loc[histogram["direction"] == "out", "nodes"].sum())
    return html.paragraph(
        f"{total:,} nodes; without an outgoing training edge: {int(isolated.get('out', 0)):,}, "
        f"without an incoming one: {int(isolated.get('in', 0)):,} (degree 0, off the log axes)."
    ) + html.figure(
        "degree_distribution.png",
        "nodes per out-degree and per in-degree, log-log",
        "Each point is the number of nodes with that many outgoing (blue) or incoming (orange) "
        "training edges. A roughly straight falling cloud is a heavy tail: most products have "
        "one or two links, a few hubs have hundreds, which is why a fixed fan-out fits neither.",
    )


def _sample_budgets(ctx: ReportContext) -> str:
    samples = ctx.table("graph_samples", GRAPH_SAMPLE_COLUMNS)
    if samples is None:
        return missing_note(ctx, "graph_samples")
    # The configured law's sample; a fixed fan-out baseline of the same date may sit beside it.
    mine = for_run_date(samples, ctx.run_date).where(F.col("law") == ctx.cfg.sampling.law)
    shape = agg.sample_shape(mine)
    if shape.rows == 0:
        return no_rows_note(ctx, "graph_samples", samples)
    per_degree = agg.budget_by_degree(mine, shape.hops)
    roles = [r for r in agg.GRAPH_ROLES if r in set(per_degree["role"])]
    roles += sorted(set(per_degree["role"]) - set(agg.GRAPH_ROLES))
    plots.plot_sample_budgets(per_degree, roles, ctx.png("sample_budgets.png"))
    buckets = agg.degree_buckets(per_degree, shape.hops)
    laws = ", ".join(shape.laws) or "—"
    parts = [
        html.paragraph(
            f"{shape.rows:,} sample rows (one per node and role), {shape.hops} hops, degree law "
            f"<code>{html.text(laws)}</code>. A node's budget k(d) is the number of neighbours "
            "it may draw per hop; it falls with the degree, so a node with few links reaches "
            "farther and a hub needs only a few of its many."
        ),
        html.figure(
            "sample_budgets.png",
            "mean budget and mean filled neighbour slots per degree, per role",
            "Solid: the mean budget of the nodes with that degree (neighbours per hop); dashed: "
            "the neighbour slots actually filled, summed over the hops. Filled slots well under "
            "hops × budget mean the node's neighbourhood had fewer candidates than its budget "
            "allowed, as for most low-degree nodes; the tables below show each hop.",
        ),
    ]
    for role in roles:
        parts.append(_bucket_table(role, buckets[buckets["role"] == role], shape.hops))
    return "\n".join(parts)


def _bucket_table(role: str, buckets: pd.DataFrame, hops: int) -> str:
    degree = plots.ROLE_DEGREE.get(role, "degree")
    rows = [
        [
            html.text(r["label"]),
            html.number(int(r["nodes"])),
            html.number(r["mean_budget"], 2),
            *[html.number(r[f"mean_hop_{h + 1}"], 2) for h in range(hops)],
            html.number(r["mean_filled"], 2),
        ]
        for r in buckets.to_dict("records")
    ]
    columns = [
        degree,
        "nodes",
        "mean budget",
        *[f"filled, hop {h + 1}" for h in range(hops)],
        "filled, all hops",
    ]
    return html.paragraph(
        f"<strong>{html.text(role)}</strong> role, by {html.text(degree)} bucket (mean per node)."
    ) + html.table(columns, rows, numeric=columns[1:])


# --- 7. BLADE placeholder -------------------------------------------------------------------------


EVAL_COLUMNS = (
    "run_date",
    "variant",
    "split",
    "bucket",
    "edges",
    "hits_100",
    "mrr",
    "direction_auc",
)
RECOMMENDATION_COLUMNS = (
    "run_date",
    "product",
    "rank",
    "recommended_product",
    "score",
    "probability",
    "uncertainty",
    "accepted",
)


def blade_section(ctx: ReportContext) -> Section:
    """BLADE against its baselines by degree bucket, the link thresholds (reliability per
    uncertainty bucket, one vs per-bucket thresholds) and a sample of decided recommendations."""
    parts = [
        "<h3>Held-out edges by degree bucket</h3>",
        _blade_buckets(ctx),
        "<h3>Recommendations against the planted relations</h3>",
        _planted(ctx),
    ]
    link = scored_run(ctx, "link")
    parts.append("<h3>Link scores: reliability per uncertainty bucket</h3>")
    if link.scores is None or link.stored is None:
        parts.append(link.scores_note if link.scores is None else link.thresholds_note)
    else:
        buckets = agg.bucket_ranges(link.stored, "per_bucket")
        bins, _ = agg.reliability_bins(link.scores, buckets)
        plots.plot_reliability(bins, buckets, ctx.png("link_reliability.png"))
        parts.append(
            html.figure(
                "link_reliability.png",
                "link scores: observed edge rate vs mean score per uncertainty bucket",
                "Held-out edges against sampled non-edges of the same source (link_uncertainty."
                "negatives_per_edge per edge): a bucket whose line lies lower at the same score "
                "holds fewer real edges there and gets a stricter threshold.",
            )
        )
        points = agg.operating_points(link.thresholds)
        target = next((p.target_precision for p in points if p.target_precision is not None), None)
        parts += [
            "<h3>Link scores: one threshold vs per-bucket thresholds</h3>",
            _pr_figure(ctx, link.scores, points, target, "link_pr_curve.png"),
            _points_table(points),
        ]
    parts += ["<h3>A sample of recommendations and their decisions</h3>", _sample(ctx)]
    return html.Section("blade", TITLES["blade"], "\n".join(parts))


def _blade_buckets(ctx: ReportContext) -> str:
    frame = ctx.table("eval_metrics", EVAL_COLUMNS)
    if frame is None:
        return missing_note(ctx, "eval_metrics")
    mine = for_run_date(frame, ctx.run_date).where(F.col("split").isin("test", "val"))
    metrics = agg.small_table(mine, list(EVAL_COLUMNS[1:]), ["variant", "bucket"])
    if metrics.empty:
        return no_rows_note(ctx, "eval_metrics", frame)
    plots.plot_bucket_bars(metrics, ctx.png("blade_buckets.png"))
    rows = [
        [html.text(r.variant), html.text(r.bucket), html.number(r.edges), html.number(r.hits_100, 3),
         html.number(r.mrr, 3), html.number(r.direction_auc, 3)]
        for r in metrics.itertuples()
    ]  # fmt: skip
    columns = ["variant", "bucket", "held-out edges", "Hits@100", "MRR", "direction AUC"]
    return html.figure(
        "blade_buckets.png",
        "Hits@100 by degree bucket per variant",
        "Each held-out edge ranked among sampled targets of its source; buckets by the source's "
        "training out-degree (low / mid / high thirds).",
    ) + html.table(columns, rows, numeric=columns[2:])


def _planted(ctx: ReportContext, top: int = 10) -> str:
    """BLADE's lists and popularity's against the generator's truth (generated data only)."""
    truth = planted_relations(ctx.spark, ctx.cfg)
    if truth is None:
        return html.note("Skipped: no planted relations (the input is not generated data).")
    recommendations = ctx.table("recommendations", RECOMMENDATION_COLUMNS)
    nodes = ctx.table("graph_nodes", ("run_date", "node_id", "in_degree"))
    edges = ctx.table("graph_edges", ("run_date", "src", "dst", "split"))
    for name, frame in (
        ("recommendations", recommendations),
        ("graph_nodes", nodes),
        ("graph_edges", edges),
    ):
        if frame is None:
            return missing_note(ctx, name)
    known = None
    if ctx.cfg.recommendations.exclude_known:
        known = for_run_date(edges, ctx.run_date).where(F.col("split") == "train")
    k = min(top, ctx.cfg.recommendations.top_k)
    quality = agg.planted_quality(
        for_run_date(recommendations, ctx.run_date),
        for_run_date(nodes, ctx.run_date),
        truth,
        k,
        known,
    )
    if not quality["products"].any():
        return html.note("Skipped: no product of the run's graph has a planted relation to list.")
    rows = [
        [html.text(r.list), html.number(r.products), html.number(r.pairs), html.number(r.planted),
         html.number(r.precision, 3), html.number(r.recall, 3)]
        for r in quality.itertuples()
    ]  # fmt: skip
    columns = list(agg.PLANTED_COLUMNS)
    return html.paragraph(
        f"Each product's top {k} (and the accepted recommendations, any rank) against the "
        "relations the generator planted (buyers of u later buy v), over the products of the "
        "run's graph that have one to another product of the graph"
        + (", leaving out the training edges, which no list repeats" if known is not None else "")
        + ". Popularity is the same list for every product: the most bought-after products."
    ) + html.table(columns, rows, numeric=columns[1:])


def _sample(ctx: ReportContext, products: int = 3, top: int = 5) -> str:
    frame = ctx.table("recommendations", RECOMMENDATION_COLUMNS)
    if frame is None:
        return missing_note(ctx, "recommendations")
    mine = for_run_date(frame, ctx.run_date)
    chosen = (
        mine.groupBy("product")
        .agg(F.sum(F.col("accepted").cast("int")).alias("accepted"))
        .orderBy(F.desc("accepted"), "product")
        .limit(products)
    )
    sample = agg.small_table(
        mine.join(chosen.select("product"), "product").where(F.col("rank") <= top),
        list(RECOMMENDATION_COLUMNS[1:]),
        ["product", "rank"],
    )
    if sample.empty:
        return no_rows_note(ctx, "recommendations", frame)
    rows = [
        [html.text(r.product), html.number(r.rank), html.text(r.recommended_product),
         html.number(r.score, 3), html.number(r.probability, 3), html.number(r.uncertainty, 4),
         html.text("yes" if r.accepted else "no")]
        for r in sample.itertuples()
    ]  # fmt: skip
    columns = ["product", "rank", "recommended", "score", "probability", "uncertainty", "accepted"]
    return html.paragraph(
        f"The top {top} of the {products} products with the most accepted recommendations."
    ) + html.table(columns, rows, numeric=columns[1:6])
