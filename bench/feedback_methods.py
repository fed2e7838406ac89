"""The conversion-model metric table (every weighting method) over several seeds, with intervals.

    .venv/bin/python bench/feedback_methods.py [--config FILE] [--set key=value ...]
        [--seeds 1,2,3] [--seed-keys generator.seed,conversion.seed] [--no-generate]
        [--cutoffs T1,T2,...] [--model-seeds N]

For each seed: the seed is written into every ``--seed-keys`` setting, then (unless
``--no-generate``) a log is generated, ingested and turned into examples under
``<paths.data_root>/bench/feedback_methods/seed=<s>``, and ``conversion.evaluate_methods`` trains
and scores one model per method exactly as the pipeline's conversion stage does. With
``--no-generate`` (real data, e.g. ``conf/taobao.yaml``) the input is ingested once per seed into
one folder once and only the model seeds vary: the spread then says how much of a difference
between methods is training noise. ``--model-seeds N`` (real data) trains those N replicates of
every method in one distributed run per cutoff, as ``conversion.model_seeds`` does in the
pipeline: the same models, with one flip fit and one worker start-up per cutoff instead of one
per seed.

``--cutoffs`` (ISO times) runs the protocol at several cutoffs T (rolling evaluation, as the
field does): per seed, one model per method and cutoff (``feedback.cutoff = T``; the training
and test windows come from ``conversion.train_days`` / ``test_days``), and the seed's metrics are
the means over the cutoffs weighted by their test rows. The Taobao dev protocol of
bench/README.md:

    .venv/bin/python bench/feedback_methods.py --config conf/taobao.yaml --no-generate \
        --seed-keys conversion.seed --seeds 1,2,3,4,5 \
        --cutoffs 2017-11-27T00:00:00+08:00,2017-11-28T00:00:00+08:00,2017-11-29T00:00:00+08:00 \
        --set feedback.attribution_window_hours=24 --set conversion.train_days=1 \
        --set conversion.test_days=1

Prints the table of each seed, then per method the mean and a 95% t-interval of AUC, PR-AUC,
log loss and RI-AUC over the seeds (RI-AUC of a seed needs its oracle to beat its vanilla by more
than ``--min-gap`` AUC; other seeds are left out of the RI-AUC mean and counted).

Suggested settings where delayed feedback matters (longer delays that differ by category):

    --set generator.delay_median_hours=36 --set generator.delay_sigma=1.0 \\
    --set generator.category_delay_spread=1.0
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

import numpy as np  # noqa: E402

from recbatch.config import PROJECT_ROOT, load_config  # noqa: E402
from recbatch.events.generator import generate  # noqa: E402
from recbatch.events.ingest import ingest_events  # noqa: E402
from recbatch.feedback.comparison import seed_interval  # noqa: E402
from recbatch.feedback.conversion import (  # noqa: E402
    METHODS,
    data_end,
    evaluate_methods,
    format_table,
    relative_improvement,
)
from recbatch.feedback.examples import examples_stage  # noqa: E402
from recbatch.log import configure_logging  # noqa: E402
from recbatch.session import build_session  # noqa: E402

METRICS = ("auc", "pr_auc", "log_loss", "pcoc", "ri_auc")
WEIGHTED = ("auc", "pr_auc", "log_loss", "pcoc")
"""Metrics averaged over cutoffs by test rows (RI-AUC is recomputed from the averaged AUCs)."""
_PREPARED: set[str] = set()
"""Data folders whose examples this process has built (real data: once for every seed)."""


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(PROJECT_ROOT / "conf" / "local.yaml"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="K=V")
    parser.add_argument("--seeds", default="1,2,3", help="comma-separated seeds")
    parser.add_argument("--seed-keys", default="generator.seed,conversion.seed")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--no-generate", action="store_true", help="ingest the configured input")
    parser.add_argument("--cutoffs", default="", help="comma-separated ISO cutoffs T (rolling)")
    parser.add_argument(
        "--model-seeds",
        type=int,
        default=0,
        help="real data (--no-generate): N model seeds from the first --seeds value, all trained "
        "in one distributed run per cutoff (one flip fit and one worker start-up per cutoff "
        "instead of one per seed); each model seed is a replicate",
    )
    parser.add_argument("--min-gap", type=float, default=0.002, help="oracle - vanilla AUC")
    parser.add_argument(
        "--max-seed-sd",
        type=float,
        default=None,
        help="model-seed replicates (--model-seeds): flag a method whose AUC sd over the seeds "
        "exceeds this (default: 0.001 for the logistic model, 0.005 with hidden layers)",
    )
    parser.add_argument("--log-level", default="WARNING")
    return parser.parse_args(argv)


def interval(values: list[float]) -> str:
    """``mean ± half-width (sd)`` of a 95% t-interval (just the value for one seed)."""
    if not values:
        return "n/a"
    spread = seed_interval(values)
    return str(spread) if spread.sd is None else f"{spread} (sd {spread.sd:.4f})"


def run_seed(
    args: argparse.Namespace, seed: int, methods: list[str], spark=None, model_seeds: int = 1
):
    """One seed end to end; returns one list of metric rows per model seed (the replicates) and
    the (possibly new) session."""
    seeded = [f"conversion.model_seeds={model_seeds}"]
    seeded += [f"{key}={seed}" for key in args.seed_keys.split(",") if key]
    base = load_config(args.config, args.overrides)
    folder = "shared" if args.no_generate else f"seed={seed}"
    root = Path(base.path("data_root")) / "bench" / "feedback_methods" / folder
    cfg = load_config(args.config, [*args.overrides, *seeded, f"paths.data_root={root}"])
    spark = spark or build_session(cfg)
    start = time.monotonic()
    if str(root) not in _PREPARED:
        if not args.no_generate:
            generate(spark, cfg.generator, cfg.path("raw_events"), cfg.path("ground_truth"))
        ingest_events(spark, cfg)
        counts = examples_stage(spark, cfg)
        print(f"\n{counts['examples']} examples, {counts['converted']} converted", flush=True)
        _PREPARED.add(str(root))
    examples = spark.read.format("delta").load(cfg.table_path("examples"))
    cutoffs = [c for c in args.cutoffs.split(",") if c]
    per_cutoff = []
    for cutoff in cutoffs or [None]:
        at = (
            cfg
            if cutoff is None
            else load_config(
                args.config,
                [*args.overrides, *seeded, f"paths.data_root={root}", f"feedback.cutoff={cutoff}"],
            )
        )
        rows = evaluate_methods(spark, examples, at, methods, end=data_end(spark, at, examples))
        print(f"\nseed {seed}, cutoff {rows[0]['cutoff']}:", flush=True)
        print(format_table(rows), flush=True)
        per_cutoff.append(rows)
    print(f"seed {seed}: {time.monotonic() - start:.0f}s", flush=True)
    replicates = []
    for model_seed in sorted({r["model_seed"] for r in per_cutoff[0]}):
        mine = [[r for r in rows if r["model_seed"] == model_seed] for rows in per_cutoff]
        replicates.append(mine[0] if len(mine) == 1 else pooled(mine))
    return replicates, spark


def pooled(per_cutoff: list[list[dict]]) -> list[dict]:
    """Per method, the metrics over the cutoffs weighted by test rows; RI-AUC from those AUCs."""
    rows = []
    for method_rows in zip(*per_cutoff, strict=True):
        n = np.array([r["test_rows"] for r in method_rows], dtype=float)
        row = {"method": method_rows[0]["method"], "test_rows": int(n.sum())}
        for metric in WEIGHTED:
            values = [r[metric] for r in method_rows]
            row[metric] = (
                None if any(v is None for v in values) else float(np.dot(n, values) / n.sum())
            )
        rows.append(row)
    auc = {r["method"]: r["auc"] for r in rows}
    for r in rows:
        r["ri_auc"] = (
            relative_improvement(r["auc"], auc["vanilla"], auc["oracle"])
            if "vanilla" in auc and "oracle" in auc
            else None
        )
    return rows


def flag_methods(
    per_seed: list[list[dict]], methods: list[str], max_sd: float | None
) -> dict[str, str]:
    """``{method: why}`` for the methods whose numbers cannot be averaged into the table: an
    AUC below 0.5 on any seed (worse than chance: a training failure, not a method's merit) or,
    for model-seed replicates (``max_sd`` given), seeds that disagree by more than ``max_sd``
    (the same rows gave different models: training noise, not a difference between methods)."""
    flags = {}
    for method in methods:
        aucs = [r["auc"] for rows in per_seed for r in rows if r["method"] == method]
        below = [i for i, auc in enumerate(aucs) if auc < 0.5]
        if below:
            flags[method] = f"AUC below 0.5 on replicate(s) {below}: {[aucs[i] for i in below]}"
        elif max_sd is not None and len(aucs) > 1 and float(np.std(aucs, ddof=1)) > max_sd:
            flags[method] = f"model-seed sd of AUC {np.std(aucs, ddof=1):.4f} > {max_sd}"
    return flags


def default_max_seed_sd(args: argparse.Namespace) -> float | None:
    """The seed-spread bound of a replicate run: issue 31's goals, by the configured model."""
    if not args.model_seeds:
        return None
    if args.max_seed_sd is not None:
        return args.max_seed_sd
    convex = not load_config(args.config, args.overrides).conversion.hidden_sizes
    return 0.001 if convex else 0.005


def summarise(
    per_seed: list[list[dict]],
    methods: list[str],
    min_gap: float,
    flags: dict[str, str] | None = None,
) -> str:
    valid = []
    for rows in per_seed:
        auc = {r["method"]: r["auc"] for r in rows}
        valid.append(
            "oracle" in auc and "vanilla" in auc and auc["oracle"] - auc["vanilla"] > min_gap
        )
    lines = [
        f"{'method':<20} {'AUC':>28} {'AP':>28} {'log loss':>28} {'PCOC':>28} {'RI-AUC':>28}",
    ]
    flags = flags or {}
    for method in methods:
        if method in flags:
            lines.append(f"{method:<20} FLAGGED, not averaged: {flags[method]}")
            continue
        cells = []
        for metric in METRICS:
            values = [
                r[metric]
                for rows, ok in zip(per_seed, valid, strict=True)
                for r in rows
                if r["method"] == method and r[metric] is not None and (metric != "ri_auc" or ok)
            ]
            cells.append(f"{interval(values):>28}")
        lines.append(f"{method:<20} " + " ".join(cells))
    lines.append(
        f"RI-AUC over {sum(valid)} of {len(valid)} seeds (those whose oracle beats vanilla by "
        f"more than {min_gap} AUC)"
    )
    lines += ["", "paired by seed: method - vanilla (mean ± 95% t-interval; wins = seeds better)"]
    lines.append(f"{'method':<20} {'AUC':>28} {'wins':>5} {'log loss':>28} {'wins':>5}")
    for method in [m for m in methods if m != "vanilla" and m not in flags]:
        cells = []
        for metric, better in (("auc", 1.0), ("log_loss", -1.0)):
            diffs = paired_differences(per_seed, method, metric)
            wins = sum(better * d > 0 for d in diffs)
            cells.append(f"{interval(diffs):>28} {wins:>2}/{len(diffs):<2}")
        lines.append(f"{method:<20} " + " ".join(cells))
    return "\n".join(lines)


def paired_differences(per_seed: list[list[dict]], method: str, metric: str) -> list[float]:
    """``metric(method) - metric(vanilla)`` per seed: the seed's data and split are shared, so the
    paired difference removes the (large) seed-to-seed variation of the data itself."""
    diffs = []
    for rows in per_seed:
        by = {r["method"]: r[metric] for r in rows}
        if method in by and "vanilla" in by:
            diffs.append(by[method] - by["vanilla"])
    return diffs


def main(argv=None) -> None:
    args = parse_args(argv)
    configure_logging(args.log_level)
    methods = [m for m in args.methods.split(",") if m]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    if args.model_seeds and not args.no_generate:
        raise SystemExit(
            "--model-seeds replicates models on one data set: use it with --no-generate"
        )
    per_seed, spark = [], None
    if args.model_seeds:
        per_seed, spark = run_seed(args, seeds[0], methods, model_seeds=args.model_seeds)
        label = f"model seeds {seeds[0]}..{seeds[0] + args.model_seeds - 1}"
    else:
        for seed in seeds:
            replicates, spark = run_seed(args, seed, methods, spark)
            per_seed.extend(replicates)
        label = f"seeds ({args.seed_keys})"
    flags = flag_methods(per_seed, methods, default_max_seed_sd(args))
    print(f"\nover {len(per_seed)} {label}: mean ± 95% t-interval")
    print(summarise(per_seed, methods, args.min_gap, flags))
    for method, why in flags.items():
        print(f"FLAGGED {method}: {why}")
    if spark is not None:
        spark.stop()


if __name__ == "__main__":
    main()
