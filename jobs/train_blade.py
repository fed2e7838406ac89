"""Train BLADE (dual source/target embeddings) on the run date's degree-aware samples.

./spark-submit.sh train_blade                                  (needs the graph and samples stages)
./spark-submit.sh train_blade --set blade.epochs=60 --set blade.num_processes=4

Trains in torch DDP processes (TorchDistributor), resumes from paths.checkpoints after a kill, and
replaces the run date's rows of the Delta embeddings table; exports node/source/target Parquet for
../shared/linkpred under paths.exports/embeddings/<date>/blade.
"""

from recbatch.blade.stage import blade_stage
from recbatch.cli import run_job
from recbatch.session import build_session


def main(cfg, args) -> None:
    spark = build_session(cfg)
    print(blade_stage(spark, cfg))


if __name__ == "__main__":
    run_job(main, __doc__)
