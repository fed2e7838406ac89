"""The report's figures, drawn from small driver-side aggregates and written as PNG.

Figures are built as ``matplotlib.figure.Figure`` on an explicit Agg canvas, never through
``pyplot``: no global figure registry, no interactive backend picked from the environment, and
nothing left open when a plot fails halfway. The style is set per figure (``rc_context``), so the
report does not change matplotlib's settings for the rest of the process.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.axis import Axis
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogFormatter

from recbatch.report.aggregates import BucketRange, OperatingPoint

STYLE = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e3e3e3",
    "grid.linewidth": 0.6,
    "axes.axisbelow": True,
    "legend.frameon": False,
    "legend.fontsize": 8,
}
DPI = 110
SIGNAL_ORDER = ("none", "revisit", "fav", "cart")
"""Signal states weakest to strongest (feedback.labels.SIGNAL_STATES), so colours read in order."""
SIGNAL_COLOURS = {"none": "#8c8c8c", "revisit": "#4c78a8", "fav": "#f58518", "cart": "#e45756"}
RULE_STYLE = {"single": ("#4c78a8", "s"), "per_bucket": ("#e45756", "o")}


@contextmanager
def styled_figure(path: Path, width: float, height: float, **kwargs) -> Iterator[Figure]:
    """A styled figure saved to ``path`` as PNG when the block ends without an error (the
    report's figures, and the benchmarks' that should look like them)."""
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained", **kwargs)
        FigureCanvasAgg(fig)
        yield fig
        fig.savefig(path, format="png", dpi=DPI, metadata={"Software": None})


def hours_label(hours: float) -> str:
    """``0.25 -> 15m``, ``4 -> 4h``, ``48 -> 2d``: elapsed-time ticks people read at a glance."""
    if hours < 1:
        return f"{hours * 60:g}m"
    if hours < 48 or hours % 24:
        return f"{hours:g}h"
    return f"{hours / 24:g}d"


def _bucket_x(lo: float, hi: float) -> float:
    """Where a bucket ``[lo, hi)`` sits on a log axis: its geometric middle (``hi/2`` from 0)."""
    return math.sqrt(lo * hi) if lo > 0 else hi / 2


def _signal_states(states: Sequence[str]) -> list[str]:
    known = [s for s in SIGNAL_ORDER if s in set(states)]
    return known + sorted(set(states) - set(SIGNAL_ORDER))


def plot_flip_model(cells: pd.DataFrame, path: Path) -> None:
    """Left: ``z`` per elapsed bucket, one line per signal state (log-log, marker area ~ the
    negatives behind the cell). Right: the delay CDF at each bucket's upper edge."""
    with styled_figure(path, 9.5, 3.8) as fig:
        flip, delay = fig.subplots(1, 2, width_ratios=[1.6, 1])
        frame = cells.assign(
            x=[
                _bucket_x(lo, hi)
                for lo, hi in zip(cells.bucket_lo_hours, cells.bucket_hi_hours, strict=True)
            ]
        )
        biggest = max(float(frame["negatives"].max()), 1.0)
        for state in _signal_states(frame["signal_state"].tolist()):
            rows = frame[frame["signal_state"] == state].sort_values("x")
            colour = SIGNAL_COLOURS.get(state)
            flip.plot(rows["x"], rows["z"], color=colour, linewidth=1.4, label=state)
            sizes = 12 + 110 * np.sqrt(rows["negatives"].to_numpy(dtype=float) / biggest)
            flip.scatter(rows["x"], rows["z"], s=sizes, color=colour, alpha=0.55, linewidths=0)
        flip.set_xscale("log")
        if (frame["z"] > 0).all():
            flip.set_yscale("log")
            # 0.001 rather than 10^-3: plain numbers (and no mathtext) read faster.
            flip.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        edges = sorted(set(frame["bucket_hi_hours"].tolist()))
        flip.set_xticks(edges, [hours_label(h) for h in edges], rotation=45)
        flip.minorticks_off()
        flip.set_xlabel("time since the view (elapsed bucket)")
        flip.set_ylabel("flip probability z")
        flip.set_title("P(observed negative still converts)")
        flip.legend(title="signal seen", loc="best")

        cdf = frame.drop_duplicates("elapsed_bucket").sort_values("bucket_hi_hours")
        delay.plot(cdf["bucket_hi_hours"], cdf["s_upper"], "o-", color="#54a24b", markersize=3.5)
        delay.set_xscale("log")
        delay.set_xticks(edges, [hours_label(h) for h in edges], rotation=45)
        delay.minorticks_off()
        delay.set_ylim(0, 1.02)
        delay.set_xlabel("time since the view")
        delay.set_ylabel("share of conversions already seen")
        delay.set_title("Delay CDF s")


def plot_flip_calibration(calibration: pd.DataFrame, path: Path) -> None:
    """Predicted vs observed flip rate per scope (all, then each signal state), ECE on top."""
    with styled_figure(path, 7.0, 3.2) as fig:
        axes = fig.subplots()
        scopes = calibration["scope"].tolist()
        x = np.arange(len(scopes))
        axes.bar(x - 0.2, calibration["mean_predicted"], 0.38, color="#4c78a8", label="mean z")
        axes.bar(x + 0.2, calibration["observed_rate"], 0.38, color="#f58518", label="observed")
        tops = np.fmax(calibration["mean_predicted"], calibration["observed_rate"]).fillna(0)
        for i, (top, ece, n) in enumerate(
            zip(tops, calibration["ece"], calibration["n"], strict=True)
        ):
            text = f"ECE {ece:.4f}\nn={int(n):,}" if ece is not None and not pd.isna(ece) else ""
            axes.annotate(
                text,
                (i, top),
                xytext=(0, 3),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=7,
            )
        axes.set_xticks(x, scopes)
        axes.set_ylim(0, float(tops.max() or 1.0) * 1.35)
        axes.set_ylabel("flip rate of observed negatives")
        axes.set_title("Held-out calibration of z")
        axes.legend(loc="upper left")


def rate_with_error_bars(
    axes: Axes,
    x: Sequence[float],
    rate: np.ndarray,
    pairs: np.ndarray,
    colour,
    label: str,
    *,
    markersize: float = 3.5,
    linewidth: float = 1.3,
    elinewidth: float = 0.7,
) -> np.ndarray:
    """A positive rate per point with ~95% binomial (Wald) error bars from its ``pairs``, the
    reliability curves' line; returns the half-widths (callers fit their axes to them)."""
    error = 1.96 * np.sqrt(rate * (1 - rate) / pairs)
    axes.errorbar(
        x,
        rate,
        yerr=error,
        color=colour,
        marker="o",
        markersize=markersize,
        linewidth=linewidth,
        capsize=2,
        elinewidth=elinewidth,
        label=label,
    )
    return error


def plot_reliability(bins: pd.DataFrame, buckets: Sequence[BucketRange], path: Path) -> None:
    """Observed positive rate against mean score per score decile, one line per uncertainty
    bucket (darker: more uncertain), with ~95% binomial error bars and the diagonal."""
    with styled_figure(path, 7.5, 5.0) as fig:
        axes = fig.subplots()
        colours = matplotlib.colormaps["viridis_r"](np.linspace(0.15, 0.95, max(len(buckets), 1)))
        top = 0.0
        for colour, bucket in zip(colours, buckets, strict=False):
            rows = bins[bins["bucket"] == bucket.bucket].sort_values("mean_score")
            if rows.empty:
                continue
            rate = rows["positive_rate"].to_numpy(float)
            label = f"{bucket.bucket}: u ∈ {_range(bucket.lo, bucket.hi)}, thr {_number(bucket.threshold)}"
            error = rate_with_error_bars(
                axes, rows["mean_score"], rate, rows["rows"].to_numpy(float), colour, label
            )
            top = max(top, float(rows["mean_score"].max()), float(np.nanmax(rate + error)))
        top = min(1.0, top * 1.05) if top > 0 else 1.0
        axes.plot(
            [0, top],
            [0, top],
            linestyle="--",
            color="#999999",
            linewidth=1,
            label="calibrated (y = x)",
        )
        axes.set_xlim(0, top)
        axes.set_ylim(0, top)
        axes.set_xlabel("mean score in the decile")
        axes.set_ylabel("observed positive rate")
        axes.set_title("Reliability per uncertainty bucket")
        axes.legend(title="bucket: uncertainty range, stored threshold", loc="upper left")


def plot_pr(
    curve: pd.DataFrame,
    points: Sequence[OperatingPoint],
    target: float | None,
    prevalence: float,
    path: Path,
) -> None:
    """The raw score's PR curve, the stored rules' operating points, the target precision."""
    with styled_figure(path, 7.5, 5.0) as fig:
        axes = fig.subplots()
        axes.plot(
            curve["recall"],
            curve["precision"],
            color="#333333",
            linewidth=1.4,
            label="raw score, every threshold",
        )
        axes.axhline(
            prevalence,
            color="#aaaaaa",
            linestyle=":",
            linewidth=1,
            label=f"positive rate {prevalence:.3f}",
        )
        if target is not None:
            axes.axhline(
                target,
                color="#54a24b",
                linestyle="--",
                linewidth=1.2,
                label=f"target precision {target:g}",
            )
        for point in points:
            colour, marker = RULE_STYLE.get(point.method, ("#b279a2", "D"))
            if point.precision is None:
                axes.plot(
                    [],
                    [],
                    marker=marker,
                    color=colour,
                    linestyle="none",
                    label=f"{point.method}: accepts nothing",
                )
                continue
            label = f"{point.method}: P {point.precision:.3f}, R {point.recall:.3f}"
            axes.plot(
                point.recall,
                point.precision,
                marker=marker,
                markersize=9,
                color=colour,
                linestyle="none",
                markeredgecolor="white",
                label=label,
            )
        ceiling = max(
            [float(curve["precision"].max()), target or 0.0, *[p.precision or 0 for p in points]]
        )
        axes.set_xlim(0, 1.0)
        axes.set_ylim(0, min(1.0, ceiling * 1.1) if ceiling > 0 else 1.0)
        axes.set_xlabel("recall")
        axes.set_ylabel("precision")
        axes.set_title("Precision-recall: one threshold vs per-bucket thresholds")
        axes.legend(loc="upper right")


def _number(value: float) -> str:
    if math.isinf(value):
        return "+inf" if value > 0 else "-inf"
    return f"{value:.4g}"


def _range(lo: float, hi: float) -> str:
    return f"[{_number(lo)}, {_number(hi)})"


ROLE_COLOURS = {"source": "#4c78a8", "target": "#f58518"}
ROLE_DEGREE = {"source": "out-degree", "target": "in-degree"}
"""The degree a role's budget is drawn from: sources sample along out-edges, targets along in."""
DIRECTION_STYLE = {"out": ("#4c78a8", "o", "out-degree"), "in": ("#f58518", "s", "in-degree")}


def _plain_log_axis(axis: Axis) -> None:
    """Plain numbers (1, 10, 100) on a log axis rather than powers of ten (and no mathtext),
    the minor ticks labelled too when the axis spans less than a decade."""
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(LogFormatter(labelOnlyBase=False))


def plot_degree_distribution(histogram: pd.DataFrame, path: Path) -> None:
    """Nodes per out-degree and per in-degree of the training graph, log-log (degree >= 1: a
    log axis has no 0; the section says how many nodes have none)."""
    with styled_figure(path, 7.5, 4.5) as fig:
        axes = fig.subplots()
        for direction, (colour, marker, label) in DIRECTION_STYLE.items():
            rows = histogram[(histogram["direction"] == direction) & (histogram["degree"] > 0)]
            if rows.empty:
                continue
            axes.plot(
                rows["degree"],
                rows["nodes"],
                marker=marker,
                markersize=3.5,
                linestyle="none",
                color=colour,
                alpha=0.8,
                label=f"{label} ({int(rows['nodes'].sum()):,} nodes with one or more)",
            )
        axes.set_xscale("log")
        axes.set_yscale("log")
        _plain_log_axis(axes.xaxis)
        _plain_log_axis(axes.yaxis)
        axes.set_xlabel("degree in the training graph")
        axes.set_ylabel("nodes with that degree")
        axes.set_title("Degree distribution (training edges)")
        axes.legend(loc="upper right")


def plot_sample_budgets(per_degree: pd.DataFrame, roles: Sequence[str], path: Path) -> None:
    """One panel per role: the mean budget k(d) and the mean filled slots (all hops) per degree
    (log x, so degree >= 1; the section's bucket table has the isolated nodes)."""
    with styled_figure(path, 9.5, 3.8) as fig:
        panels = np.atleast_1d(fig.subplots(1, max(len(roles), 1), sharey=True))
        for axes, role in zip(panels, roles, strict=False):
            rows = per_degree[(per_degree["role"] == role) & (per_degree["degree"] > 0)]
            rows = rows.sort_values("degree")
            colour = ROLE_COLOURS.get(role, "#54a24b")
            x = rows["degree"].to_numpy(dtype=float)
            nodes = rows["nodes"].to_numpy(dtype=float)
            axes.plot(
                x,
                rows["budget"] / nodes,
                color=colour,
                linewidth=1.5,
                label="mean budget k(d), per hop",
            )
            axes.plot(
                x,
                rows["filled"] / nodes,
                color=colour,
                linewidth=1.2,
                linestyle="--",
                marker="o",
                markersize=2.5,
                label="mean filled slots, all hops",
            )
            axes.set_xscale("log")
            _plain_log_axis(axes.xaxis)
            axes.set_ylim(bottom=0)
            axes.set_xlabel(f"{ROLE_DEGREE.get(role, 'degree')} of the node (training graph)")
            axes.set_title(f"{role} role")
            axes.legend(loc="upper right")
        panels[0].set_ylabel("neighbour slots per node")


def plot_bucket_bars(metrics: pd.DataFrame, path: Path) -> None:
    """Hits@100 by degree bucket of the query node, one bar per variant."""
    buckets = ["low", "mid", "high", "all"]
    variants = list(dict.fromkeys(metrics["variant"]))
    width = 0.8 / max(len(variants), 1)
    with styled_figure(path, 7.5, 4.5) as fig:
        axes = fig.subplots()
        colours = matplotlib.colormaps["tab10"](np.arange(len(variants)))
        for i, (variant, colour) in enumerate(zip(variants, colours, strict=True)):
            rows = metrics[metrics["variant"] == variant].set_index("bucket")
            heights = [float(rows["hits_100"].get(b, np.nan)) for b in buckets]
            axes.bar(
                np.arange(len(buckets)) + i * width, heights, width, color=colour, label=variant
            )
        axes.set_xticks(np.arange(len(buckets)) + width * (len(variants) - 1) / 2, buckets)
        axes.set_ylim(0, 1)
        axes.set_xlabel("degree bucket of the query product (training out-degree)")
        axes.set_ylabel("Hits@100 among sampled targets")
        axes.set_title("Held-out edges: quality by degree bucket")
        axes.legend(loc="upper left")
