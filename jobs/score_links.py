"""Score held-out edges against sampled non-edges with BLADE's link score and its uncertainty.

./spark-submit.sh score_links                   (needs recommend for the date)
./spark-submit.sh score_links --set link_uncertainty.method=heads

Replaces the run date's model='link' rows of the Delta scores table.
"""

from recbatch.cli import run_job
from recbatch.links.stage import link_scores_stage
from recbatch.session import build_session


def main(cfg, args) -> None:
    spark = build_session(cfg)
    print(link_scores_stage(spark, cfg))


if __name__ == "__main__":
    run_job(main, __doc__)
