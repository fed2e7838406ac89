"""Train the production conversion model and score the test-period examples with uncertainty.

./spark-submit.sh score_uncertainty   (needs the examples table: run build_examples or pipeline)

Writes the Delta scores table (the run date's conversion rows replaced): score, uncertainty and
true label per example; the estimator is uncertainty.method (heads or mc_dropout).
"""

from recbatch.cli import run_job
from recbatch.session import build_session
from recbatch.uncertainty.scores import scores_stage


def main(cfg, args) -> None:
    spark = build_session(cfg)
    summary = scores_stage(spark, cfg)
    print("\n".join(f"{key}: {value}" for key, value in summary.items()))


if __name__ == "__main__":
    run_job(main, __doc__)
