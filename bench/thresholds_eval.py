"""Per-uncertainty-bucket thresholds against one raw-score threshold, on data with a planted effect.

    .venv/bin/python bench/thresholds_eval.py --plot PATH.png [--rows 200000] [--repeats 20]
        [--targets 0.7 0.8 0.9] [--effect 2.0] [--config FILE] [--set key=value ...]
        [--work-dir DIR]

Data (``recbatch.thresholds.synthetic``): score and uncertainty uniform on [0, 1), true positive
rate ``score ** (1 + effect * uncertainty)``: calibrated when certain, lower at the same score the
more uncertain. Each repeat draws a fresh sample (and a fresh split seed), builds the histograms in
Spark (quantile pass + one aggregation) and fits both methods at every target with the same
guarantee machinery (``thresholds.delta``). It prints, per target and method:

* recall and precision on the evaluation split (mean over repeats; recall's standard deviation);
* ``eval miss``: repeats whose evaluation-split precision is below the target (a finite fresh
  sample: expected to happen even when the rule's true precision is above the target);
* ``true prec`` / ``true miss``: the rule's population precision from the planted law (exact in
  the score, numeric in the uncertainty) and the repeats where it is below the target: the
  guarantee says at most ``delta`` of them, in expectation;
* ``true recall``: population recall; the ``oracle`` row thresholds the true rate itself (the best
  any rule using score and uncertainty can do) at the target precision;
* ``none``: repeats where nothing could be certified.

The first repeat also writes the Delta ``thresholds`` table (under ``--work-dir``), applies the
stored thresholds to the evaluation split with ``apply_thresholds`` and checks the accepted counts
against the table, prints the stored per-bucket rows, and draws the reliability plot per bucket
(evaluation-split positive rate by score, the isotonic calibration from the calibration split, the
true curve and the threshold) to ``--plot``.

``--set thresholds.KEY=VALUE`` sets a ThresholdSettings field (e.g. ``thresholds.n_buckets=8``);
other ``--set`` keys go to the recbatch config (``spark.*`` for the session).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

import matplotlib  # noqa: E402

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402

from recbatch.config import load_config  # noqa: E402
from recbatch.log import configure_logging  # noqa: E402
from recbatch.session import build_session  # noqa: E402
from recbatch.thresholds import (  # noqa: E402
    ThresholdSettings,
    apply_thresholds,
    build_histograms,
    fit_from_histograms,
    read_thresholds,
    split_column,
    thresholds_table,
    write_thresholds,
)
from recbatch.thresholds.calibrate import calibrated_rates  # noqa: E402
from recbatch.thresholds.synthetic import (  # noqa: E402
    planted_rate,
    planted_scores,
    population_precision_recall,
)

METHODS = ("per_bucket", "single")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--plot", required=True, help="reliability plot PNG to write")
    parser.add_argument("--rows", type=int, default=200_000, help="rows per repeat")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--targets", type=float, nargs="+", default=[0.7, 0.8, 0.9])
    parser.add_argument("--effect", type=float, default=2.0, help="planted uncertainty effect")
    parser.add_argument("--seed", type=int, default=1, help="data seed of the first repeat")
    parser.add_argument("--config", help="YAML config (default conf/local.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="K=V")
    parser.add_argument("--work-dir", help="Delta table location (default <data_root>/bench/...)")
    parser.add_argument("--log-level", default="WARNING")
    return parser.parse_args(argv)


def threshold_settings(cfg, overrides: list[str]) -> ThresholdSettings:
    """The config's ``thresholds`` section once it is wired in, else the defaults, with
    ``thresholds.*`` overrides applied."""
    base = getattr(cfg, "thresholds", None) or ThresholdSettings()
    values = base.model_dump()
    for text in overrides:
        key, raw = text.split("=", 1)
        values[key.removeprefix("thresholds.")] = yaml.safe_load(raw)
    return ThresholdSettings.model_validate(values)


def oracle(target: float, effect: float) -> tuple[float, float]:
    """Population precision and recall of accepting ``true rate >= c``, with ``c`` the loosest
    cutoff whose precision reaches the target (bisection on the continuous law)."""
    grid = 4000
    u = (np.arange(grid) + 0.5) / grid

    def at(c: float) -> tuple[float | None, float]:
        t = c ** (1.0 / (1.0 + effect * u))  # per-u score threshold of rate >= c
        edges = (u[1:] + u[:-1]) / 2
        return population_precision_recall(edges, t, effect=effect, grid=grid)

    lo, hi = 0.0, 1.0
    for _ in range(50):
        mid = (lo + hi) / 2
        precision, _ = at(mid)
        lo, hi = (lo, mid) if precision is not None and precision >= target else (mid, hi)
    return at(hi)


def run_repeat(spark, args, settings: ThresholdSettings, r: int) -> tuple[list[dict], object]:
    df = planted_scores(spark, args.rows, seed=args.seed + 1000 * r, effect=args.effect)
    settings = settings.model_copy(update={"seed": settings.seed + r})
    hists = build_histograms(df, settings, key_cols=["id"])
    records, fits = [], {}
    for target in args.targets:
        fit = fit_from_histograms(hists, settings.model_copy(update={"target_precision": target}))
        fits[target] = fit
        for method in METHODS:
            rule = fit.rule(method)
            true_p, true_r = population_precision_recall(
                rule.uncertainty_edges, rule.score_thresholds, effect=args.effect
            )
            records.append(
                {
                    "repeat": r,
                    "target": target,
                    "method": method,
                    "recall": rule.overall["recall"],
                    "precision": rule.overall["precision"],
                    "true_precision": true_p,
                    "true_recall": true_r,
                    "certified": rule.certified_lower_bound is not None,
                    "buckets": len(rule.score_thresholds),
                }
            )
    return records, (df, hists, fits)


def summarise(records: pd.DataFrame, args) -> pd.DataFrame:
    rows = []
    for (target, method), g in records.groupby(["target", "method"], sort=True):
        certified = g[g.certified]
        rows.append(
            {
                "target": target,
                "method": method,
                "buckets": f"{g.buckets.min()}-{g.buckets.max()}",
                "recall": g.recall.mean(),
                "recall_sd": g.recall.std(ddof=1) if len(g) > 1 else float("nan"),
                "precision": certified.precision.mean(),
                "eval_miss": f"{int((certified.precision < target).sum())}/{len(g)}",
                "true_prec": certified.true_precision.mean(),
                "true_prec_min": certified.true_precision.min(),
                "true_miss": f"{int((certified.true_precision < target).sum())}/{len(g)}",
                "true_recall": g.true_recall.mean(),
                "none": f"{int((~g.certified).sum())}/{len(g)}",
            }
        )
        if method == METHODS[-1]:
            precision, recall = oracle(target, args.effect)
            rows.append(
                {
                    "target": target,
                    "method": "oracle",
                    "true_prec": precision,
                    "true_recall": recall,
                }
            )
    return pd.DataFrame(rows)


def check_table_and_apply(spark, df, fit, work_dir: str) -> pd.DataFrame:
    """Write the Delta table, read it back, apply it to the evaluation split and compare counts."""
    path = f"{work_dir.rstrip('/')}/thresholds"
    run_date, version = date(2026, 1, 1), f"planted-p{fit.settings.target_precision}"
    rows = thresholds_table(spark, fit, model_version=version, run_date=run_date)
    write_thresholds(spark, rows, path, model_version=version, run_date=run_date)
    stored = read_thresholds(spark, path, model_version=version, run_date=run_date)
    evaluation = df.where(split_column(fit.settings, ["id"]) == "evaluation")
    table = stored.toPandas().sort_values(["method", "bucket"])
    for method in METHODS:
        got = (
            apply_thresholds(evaluation, stored, method=method)
            .groupBy("bucket")
            .agg(
                F.sum(F.col("accepted").cast("long")).alias("accepted"),
                F.sum((F.col("accepted") & (F.col("label") == 1)).cast("long")).alias("tp"),
            )
            .toPandas()
            .sort_values("bucket")
        )
        want = table[table.method == method]
        same = (
            got.accepted.tolist() == want.eval_accepted.tolist()
            and got.tp.tolist() == want.eval_true_positives.tolist()
        )
        print(
            f"apply check ({method}): applying the stored thresholds to the evaluation split "
            f"gives the table's accepted/true-positive counts: {'OK' if same else 'MISMATCH'}"
        )
        if not same:
            raise SystemExit(f"apply check failed:\n{got}\n{want}")
    print(f"\n== stored thresholds ({path}, {version}, {run_date})")
    cols = [
        "method",
        "bucket",
        "uncertainty_lo",
        "uncertainty_hi",
        "score_threshold",
        "expected_precision",
        "expected_precision_lo",
        "expected_precision_hi",
        "expected_recall",
        "support",
    ]
    print(table[cols].to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    return table


def reliability_plot(fit, effect: float, path: str, groups: int = 20) -> None:
    """Per bucket: evaluation-split positive rate against score (bins pooled into ``groups``),
    the isotonic calibration (calibration split), the true curve and the certified threshold."""
    rule, hists = fit.per_bucket, fit.histograms
    cal, ev = hists.calibration, hists.evaluation
    iso = calibrated_rates(cal)
    bounds = [0.0, *rule.uncertainty_edges, 1.0]
    n = cal.n_buckets
    cols = min(n, 3)
    fig, axes = plt.subplots(
        math.ceil(n / cols), cols, figsize=(4.2 * cols, 3.8 * math.ceil(n / cols)), squeeze=False
    )
    s_grid = np.linspace(0.001, 0.999, 200)
    for b, ax in enumerate(axes.ravel()):
        if b >= n:
            ax.axis("off")
            continue
        rows, pos, ssum = ev.rows[b], ev.positives[b], ev.score_sum[b]
        parts = np.array_split(np.arange(len(rows)), groups)
        n_g = np.array([rows[p].sum() for p in parts])
        keep = n_g > 0
        x = np.array([ssum[p].sum() for p in parts])[keep] / n_g[keep]
        y = np.array([pos[p].sum() for p in parts])[keep] / n_g[keep]
        ax.plot([0, 1], [0, 1], color="0.8", lw=1, label="score = rate")
        u = np.linspace(bounds[b], bounds[b + 1], 50)
        truth = planted_rate(s_grid[:, None], u[None, :], effect).mean(axis=1)
        ax.plot(s_grid, truth, color="tab:green", lw=1.5, label="true rate")
        nonempty = cal.rows[b] > 0
        cal_x = (cal.score_sum[b][nonempty] / cal.rows[b][nonempty]) if nonempty.any() else []
        ax.step(cal_x, iso[b][nonempty], where="mid", color="tab:blue", lw=1.5, label="isotonic")
        ax.plot(x, y, "o", ms=3.5, color="black", label="evaluation rate")
        t = rule.score_thresholds[b]
        if np.isfinite(t):
            ax.axvline(t, color="tab:red", ls="--", lw=1.2, label=f"threshold {t:.3f}")
        else:
            ax.text(0.05, 0.9, "accepts nothing" if t > 0 else "accepts all", color="tab:red")
        ax.set_title(f"uncertainty [{bounds[b]:.2f}, {bounds[b + 1]:.2f})", fontsize=10)
        ax.set_xlabel("score")
        ax.set_ylabel("positive rate")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(
        f"Reliability per uncertainty bucket (target precision {fit.settings.target_precision})"
    )
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    args = parse_args(argv)
    configure_logging(args.log_level)
    mine = [o for o in args.overrides if o.startswith("thresholds.")]
    cfg = load_config(args.config, [o for o in args.overrides if o not in mine])
    settings = threshold_settings(cfg, mine)
    spark = build_session(cfg)
    work_dir = args.work_dir or f"{cfg.path('data_root')}/bench/thresholds_eval"
    print(
        f"{args.repeats} repeats x {args.rows} rows, effect {args.effect}, delta {settings.delta}, "
        f"{settings.n_buckets} buckets (min support {settings.min_bucket_support}), "
        f"{settings.score_bins} score bins, splits {settings.calibration_fraction}/"
        f"{settings.selection_fraction}/{settings.evaluation_fraction:.2f}"
    )
    start = time.monotonic()
    records = []
    for r in range(args.repeats):
        rec, (df, _, fits) = run_repeat(spark, args, settings, r)
        records += rec
        if r == 0:
            middle = fits[sorted(fits)[len(fits) // 2]]
            check_table_and_apply(spark, df, middle, work_dir)
            reliability_plot(middle, args.effect, args.plot)
            print(f"reliability plot: {args.plot}")
    table = summarise(pd.DataFrame(records), args)
    print(
        f"\n== recall at target precision, evaluation split ({args.repeats} repeats, "
        f"{time.monotonic() - start:.0f}s)"
    )
    print(table.to_string(index=False, na_rep="", float_format=lambda x: f"{x:.4f}"))


if __name__ == "__main__":
    main()
