"""Degree-aware neighbourhood samples of every node, as a source and as a target.

./spark-submit.sh sample_neighbourhoods                              (needs the run date's graph)
./spark-submit.sh sample_neighbourhoods --set sampling.law=constant  (the fixed fan-out baseline)

Publishes Parquet for the torch workers under paths.samples/<run date>/<law> (one atomic swap) and the
Delta graph_samples table (the run date's rows replaced).
"""

from recbatch.cli import run_job
from recbatch.graph.stage import samples_stage
from recbatch.session import build_session


def main(cfg, args) -> None:
    spark = build_session(cfg)
    print(samples_stage(spark, cfg))


if __name__ == "__main__":
    run_job(main, __doc__)
