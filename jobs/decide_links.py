"""Probability, uncertainty and accept/reject of every recommendation under the stored link thresholds.

./spark-submit.sh decide_links                  (needs fit_link_thresholds for the date)

Replaces the run date's rows of the Delta recommendations table, decisions added.
"""

from recbatch.cli import run_job
from recbatch.links.stage import link_decisions_stage
from recbatch.session import build_session


def main(cfg, args) -> None:
    spark = build_session(cfg)
    print(link_decisions_stage(spark, cfg))


if __name__ == "__main__":
    run_job(main, __doc__)
