"""How well each flip learner's z ranks and matches the realised flips, where the weights use it.

    .venv/bin/python bench/flip_model.py [--config FILE] [--set key=value ...]
        [--learners hazard,logistic,boosted] [--cutoffs T1,T2,...] [--train-days 1]
        [--data-root DIR]

For each cutoff T and learner (``feedback.flip_learner``): the flip model is fitted on the
history before T exactly as the stages fit it (``fit_flip_model``: counterfactual cutoffs before
T, mature labels only), then scores the views of the ``--train-days`` before T as observed at T
(the conversion model's training window). Its z is graded on those views' observed negatives that
are not yet mature, against whether they convert within W (the log must reach T + W): per signal
state, negatives, realised flips, predicted / realised flips and the AUC of z against the flips
(``flip.calibration_at_cutoff``). Also the held-out counterfactual cutoff that the
``flip_weights`` stage reports (``flip_calibration``), for comparison.

The examples are read from ``--data-root`` (default: the folder ``bench/feedback_methods.py``
ingests real data into, ``<paths.data_root>/bench/feedback_methods/shared``; run that once, or
``--build`` here to ingest the configured input and build the examples first). The Taobao dev
protocol of issue 15 (W = 1 day, cutoffs 11-27/28/29 China time):

    .venv/bin/python bench/flip_model.py --config conf/taobao.yaml \\
        --set feedback.attribution_window_hours=24 \\
        --cutoffs 2017-11-27T00:00:00+08:00,2017-11-28T00:00:00+08:00,2017-11-29T00:00:00+08:00

Goals (issue 15): AUC of z >= 0.80; predicted / realised flips within 0.8-1.25 for every signal
state with >= 20 flips.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

import pandas as pd  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402
from pyspark.storagelevel import StorageLevel  # noqa: E402

from recbatch.config import PROJECT_ROOT, load_config  # noqa: E402
from recbatch.events.ingest import ingest_events  # noqa: E402
from recbatch.feedback.examples import examples_stage  # noqa: E402
from recbatch.feedback.flip import (  # noqa: E402
    calibration,
    calibration_at_cutoff,
    counterfactual_training_set,
    fit_flip_model,
    fit_learner,
    score_at_cutoff,
    split_holdout,
)
from recbatch.log import configure_logging  # noqa: E402
from recbatch.session import build_session  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(PROJECT_ROOT / "conf" / "local.yaml"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="K=V")
    parser.add_argument("--learners", default="hazard,logistic,boosted")
    parser.add_argument("--cutoffs", default="", help="comma-separated ISO cutoffs T")
    parser.add_argument("--train-days", type=float, default=1.0)
    parser.add_argument("--data-root", default="")
    parser.add_argument("--build", action="store_true", help="ingest and build the examples")
    parser.add_argument("--log-level", default="WARNING")
    return parser.parse_args(argv)


def graded(table, learner: str, cutoff: str, where: str) -> pd.DataFrame:
    frame = table.toPandas()
    frame["predicted_to_realised"] = frame.mean_predicted / frame.observed_rate
    return frame.assign(learner=learner, cutoff=cutoff, graded_on=where)


def main(argv=None) -> None:
    args = parse_args(argv)
    configure_logging(args.log_level)
    base = load_config(args.config, args.overrides)
    root = args.data_root or str(
        Path(base.path("data_root")) / "bench" / "feedback_methods" / "shared"
    )
    cfg = load_config(args.config, [*args.overrides, f"paths.data_root={root}"])
    spark = build_session(cfg)
    if args.build:
        ingest_events(spark, cfg)
        examples_stage(spark, cfg)
    examples = spark.read.format("delta").load(cfg.table_path("examples"))
    examples = examples.persist(StorageLevel.MEMORY_AND_DISK)
    cutoffs = [datetime.fromisoformat(c) for c in args.cutoffs.split(",") if c]
    if not cutoffs:
        raise SystemExit("give --cutoffs (ISO times with an offset)")
    frames = []
    for cutoff in cutoffs:
        history = examples.where(F.col("view_ts") < F.lit(cutoff))
        window = examples.where(
            (F.col("view_ts") >= F.lit(cutoff - timedelta(days=args.train_days)))
            & (F.col("view_ts") < F.lit(cutoff))
        )
        for learner in args.learners.split(","):
            settings = cfg.feedback.model_copy(update={"flip_learner": learner})
            start = time.monotonic()
            training = counterfactual_training_set(history, cutoff, settings).persist()
            model = fit_flip_model(history, cutoff, settings, training)
            fit_seconds = time.monotonic() - start
            scored = score_at_cutoff(window, cutoff, model, settings)
            frames.append(
                graded(calibration_at_cutoff(scored), model.learner, str(cutoff), "window at T")
            )
            fit_rows, heldout = split_holdout(training)
            check = fit_learner(fit_rows, model.observation, settings)
            frames.append(
                graded(
                    calibration(check.apply(heldout, settings)),
                    model.learner,
                    str(cutoff),
                    "held-out T'",
                )
            )
            training.unpersist()
            print(
                f"{cutoff} {learner}: fitted in {fit_seconds:.0f}s\n"
                + frames[-2].to_string(index=False, float_format="%.3f"),
                flush=True,
            )
    table = pd.concat(frames)
    print("\n## per learner, pooled over cutoffs (window at T, negatives-weighted)")
    at_t = table[table.graded_on == "window at T"]
    rows = []
    for (learner, scope), g in at_t.groupby(["learner", "scope"], sort=False):
        n, flips = g.n.sum(), g.flips.sum()
        predicted = (g.mean_predicted * g.n).sum()
        rows.append(
            {
                "learner": learner,
                "scope": scope,
                "negatives": int(n),
                "flips": int(flips),
                "predicted_to_realised": predicted / flips if flips else float("nan"),
                "auc_mean_over_cutoffs": g.auc.mean(),
                "auc_by_cutoff": " / ".join(f"{a:.3f}" for a in g.auc),
            }
        )
    print(pd.DataFrame(rows).to_string(index=False, float_format="%.3f"))
    held = table[(table.graded_on == "held-out T'") & (table.scope == "all")]
    print("\n## held-out counterfactual cutoff (what flip_calibration reports), scope all")
    print(
        held[["learner", "cutoff", "n", "flips", "predicted_to_realised", "ece", "auc"]].to_string(
            index=False, float_format="%.3f"
        )
    )


if __name__ == "__main__":
    main()
