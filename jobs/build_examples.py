"""Build the Delta ``examples`` table (first views, signals, conversions, features) from ``events``.

./spark-submit.sh build_examples [--config conf/local.yaml] [--set feedback.attribution_window_hours=72]
"""

from recbatch.cli import run_job
from recbatch.feedback.examples import examples_stage
from recbatch.session import build_session


def main(cfg, args) -> None:
    spark = build_session(cfg)
    counts = examples_stage(spark, cfg)
    print(", ".join(f"{name}={value}" for name, value in counts.items()))


if __name__ == "__main__":
    run_job(main, __doc__)
