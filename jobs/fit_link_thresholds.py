"""Per-uncertainty-bucket thresholds of the link scores, certified on fresh pairs.

./spark-submit.sh fit_link_thresholds           (needs score_links for the date)
./spark-submit.sh fit_link_thresholds --set link_thresholds.target_precision=0.9

Replaces the run's link rows of the Delta thresholds table.
"""

from recbatch.cli import run_job
from recbatch.links.stage import link_thresholds_stage
from recbatch.session import build_session


def main(cfg, args) -> None:
    spark = build_session(cfg)
    print(link_thresholds_stage(spark, cfg))


if __name__ == "__main__":
    run_job(main, __doc__)
