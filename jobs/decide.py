"""Accept or reject each score by the stored threshold of its uncertainty bucket.

./spark-submit.sh decide   (needs the run date's scores and thresholds)

Writes the Delta decisions table (the run date's rows replaced): bucket, threshold, accepted.
"""

from recbatch.cli import run_job
from recbatch.session import build_session
from recbatch.thresholds.stage import decisions_stage


def main(cfg, args) -> None:
    spark = build_session(cfg)
    print(decisions_stage(spark, cfg))


if __name__ == "__main__":
    run_job(main, __doc__)
