"""Train the conversion model under each delayed-feedback weighting method and compare them.

./spark-submit.sh train_conversion   (needs the examples table: run build_examples or pipeline)

Writes the Delta conversion_metrics table (rows of the run date replaced) and prints it.
"""

from recbatch.cli import run_job
from recbatch.feedback.conversion import conversion_stage, format_table
from recbatch.session import build_session


def main(cfg, args) -> None:
    spark = build_session(cfg)
    print(format_table(conversion_stage(spark, cfg)))


if __name__ == "__main__":
    run_job(main, __doc__)
