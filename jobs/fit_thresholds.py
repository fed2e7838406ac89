"""Fit, certify and store one score threshold per uncertainty bucket (and the single baseline).

./spark-submit.sh fit_thresholds   (needs the run date's scores: run score_uncertainty first)

Writes the Delta thresholds table (the run's rows replaced) and prints the overall figures on the
evaluation split for both methods.
"""

from recbatch.cli import run_job
from recbatch.session import build_session
from recbatch.thresholds.stage import thresholds_stage


def main(cfg, args) -> None:
    spark = build_session(cfg)
    summary = thresholds_stage(spark, cfg)
    print(f"model version: {summary.pop('model_version')}")
    for method, figures in summary.items():
        print(f"{method}: {figures}")


if __name__ == "__main__":
    run_job(main, __doc__)
