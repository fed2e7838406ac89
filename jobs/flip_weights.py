"""Fit the label-flip model on mature history and write the training weights for the run date.

./spark-submit.sh flip_weights [--set feedback.weighting=importance_sampling]
"""

from recbatch.cli import run_job
from recbatch.feedback.stage import flip_weights_stage
from recbatch.session import build_session


def main(cfg, args) -> None:
    spark = build_session(cfg)
    print(flip_weights_stage(spark, cfg))


if __name__ == "__main__":
    run_job(main, __doc__)
