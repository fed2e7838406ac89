"""Uncertainty of the conversion model: scoring cost per estimator, and per-bucket thresholds
against one raw-score threshold, on the configured examples.

    .venv/bin/python bench/uncertainty_conversion.py [--config FILE] [--set key=value ...]
        [--methods heads,mc_dropout] [--targets 0.045,0.05,0.055,0.06,0.7,0.8,0.9]

Needs the ``examples`` table of the config (run the pipeline first; e.g. the default
``conf/local.yaml`` or ``conf/taobao.yaml``). For each estimator (``uncertainty.method``) it trains
the production conversion model exactly as the ``scores`` stage does (``build_scores``), then:

* **scoring cost**: the test examples scored by ``score_with_uncertainty`` (Spark
  ``mapInPandas``), timed alone (cached input, a ``count`` forcing every row), as rows/s, next to
  the plain one-pass model (``heads=1``, dropout off) on the same rows;
* **thresholds**: one histogram aggregation (``build_histograms``), then both rules at every
  target precision (``fit_from_histograms``): evaluation-split precision and recall of the
  per-bucket and single-threshold rules, and whether anything could be certified.

Targets above the model's reachable precision certify nothing (recall 0): conversion base rates
are a few percent, so the published 0.7-0.9 operating points are only reachable on data like the
planted one of ``bench/thresholds_eval.py``; the low targets are the conversion model's regime.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

import torch  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402
from pyspark.storagelevel import StorageLevel  # noqa: E402

from recbatch.config import PROJECT_ROOT, load_config  # noqa: E402
from recbatch.feedback.conversion import build_model, data_end, score  # noqa: E402
from recbatch.log import configure_logging  # noqa: E402
from recbatch.session import build_session  # noqa: E402
from recbatch.thresholds import build_histograms, fit_from_histograms  # noqa: E402
from recbatch.uncertainty.estimators import predict_with_uncertainty  # noqa: E402
from recbatch.uncertainty.scores import (  # noqa: E402
    build_scores,
    score_with_uncertainty,
    scored_model_settings,
)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(PROJECT_ROOT / "conf" / "local.yaml"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="K=V")
    parser.add_argument("--methods", default="heads,mc_dropout")
    parser.add_argument("--targets", default="0.045,0.05,0.055,0.06,0.7,0.8,0.9")
    parser.add_argument("--log-level", default="WARNING")
    return parser.parse_args(argv)


def timed_rows_per_s(frame) -> tuple[float, int]:
    start = time.monotonic()
    rows = frame.count()
    seconds = time.monotonic() - start
    return rows / seconds if seconds > 0 else float("nan"), rows


def model_compute_rates(state, settings, plain_settings, cfg, rows: int = 200_000):
    """Rows/s of the estimator and of one plain forward pass on random features, in this process
    on one thread: the model's own cost, without Spark's per-task overhead (which dominates the
    Spark figure at these sizes)."""
    torch.set_num_threads(1)
    n_features = int(state["net.0.weight"].shape[1])
    x = torch.randn(rows, n_features, generator=torch.Generator().manual_seed(0))
    model = build_model(n_features, settings)
    model.load_state_dict(state)
    unc = cfg.uncertainty
    start = time.monotonic()
    predict_with_uncertainty(model, x, unc.method, unc.mc_samples, unc.seed)
    estimator = rows / (time.monotonic() - start)
    plain = build_model(n_features, plain_settings).eval()
    start = time.monotonic()
    with torch.no_grad():
        torch.sigmoid(plain(x))
    return estimator, rows / (time.monotonic() - start)


def main(argv=None) -> None:
    args = parse_args(argv)
    configure_logging(args.log_level)
    base = load_config(args.config, args.overrides)
    spark = build_session(base)
    examples = spark.read.format("delta").load(base.table_path("examples"))
    end = data_end(spark, base, examples)
    targets = [float(t) for t in args.targets.split(",") if t]
    cost_lines, fit_lines = [], []
    for method in [m for m in args.methods.split(",") if m]:
        unc = base.uncertainty.model_copy(update={"method": method})
        cfg = base.model_copy(update={"uncertainty": unc})
        start = time.monotonic()
        scores, summary, state, test_rows = build_scores(spark, examples, cfg, end)
        scores = scores.persist(StorageLevel.MEMORY_AND_DISK)
        rows = scores.count()
        setup_s = time.monotonic() - start
        test_rows = test_rows.persist(StorageLevel.MEMORY_AND_DISK)
        test_rows.count()
        settings = scored_model_settings(cfg.conversion, cfg.uncertainty)
        rate, n = timed_rows_per_s(
            score_with_uncertainty(test_rows, state, settings, cfg.uncertainty)
        )
        plain_settings = settings.model_copy(update={"heads": 1, "dropout": 0.0})
        plain = build_model(len(state["net.0.weight"][0]), plain_settings).state_dict()
        plain_rate, _ = timed_rows_per_s(score(test_rows, plain, plain_settings))
        compute, plain_compute = model_compute_rates(state, settings, plain_settings, cfg)
        cost_lines.append(
            f"{method:<11} Spark scoring {n} rows: {rate:>8.0f} rows/s (plain model "
            f"{plain_rate:.0f}); model compute alone: {compute:>10.0f} rows/s (plain "
            f"{plain_compute:.0f}, {plain_compute / compute:.1f}x cheaper); train+score setup "
            f"{setup_s:.0f}s, training {summary['train_rows_per_s']:.0f} rows/s"
        )
        hists = build_histograms(scores, cfg.thresholds, key_cols=["example_id"])
        positives = scores.agg(F.sum("label")).head()[0]
        fit_lines.append(f"{method}: {rows} scored test examples, {positives} positive")
        for target in targets:
            fit = fit_from_histograms(
                hists, cfg.thresholds.model_copy(update={"target_precision": target})
            )
            cells = []
            for rule_name in ("per_bucket", "single"):
                rule = fit.rule(rule_name)
                overall = rule.overall
                precision = overall["precision"]
                cells.append(
                    f"{rule_name}: recall {overall['recall']:.3f} precision "
                    f"{'n/a' if precision is None else f'{precision:.3f}'} "
                    f"({len(rule.score_thresholds)} bucket(s), "
                    f"{'certified' if rule.certified_lower_bound is not None else 'none certified'})"
                )
            fit_lines.append(f"  target {target:<5g} " + " | ".join(cells))
        scores.unpersist()
        test_rows.unpersist()
    print("\nscoring cost (test examples, mapInPandas, local[2]):")
    print("\n".join(cost_lines))
    print("\nthresholds on the evaluation split (per uncertainty bucket vs one raw-score cut):")
    print("\n".join(fit_lines))
    spark.stop()


if __name__ == "__main__":
    main()
