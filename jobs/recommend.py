"""Exact top-K related products of every product from the run date's BLADE embeddings.

./spark-submit.sh recommend                                   (needs train_blade for the date)
./spark-submit.sh recommend --set recommendations.top_k=100 --set recommendations.exclude_known=false

Replaces the run date's rows of the Delta recommendations table.
"""

from recbatch.blade.stage import recommendations_stage
from recbatch.cli import run_job
from recbatch.session import build_session


def main(cfg, args) -> None:
    spark = build_session(cfg)
    print(recommendations_stage(spark, cfg))


if __name__ == "__main__":
    run_job(main, __doc__)
