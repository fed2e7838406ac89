"""Held-out Hits@20/50/100, MRR and direction AUC by degree bucket, per model variant.

./spark-submit.sh evaluate_blade
./spark-submit.sh evaluate_blade --set 'evaluation.variants=[blade,fixed_fanout,single,popularity]'

Variants not yet trained for the run date are trained first (fixed_fanout samples with
sampling.law=constant on demand). Replaces the variants' rows of the Delta eval_metrics table.
"""

from recbatch.blade.stage import evaluation_stage
from recbatch.cli import run_job
from recbatch.session import build_session


def main(cfg, args) -> None:
    spark = build_session(cfg)
    result = evaluation_stage(spark, cfg)
    for row in result["metrics"]:
        print(
            f"{row['variant']:13s} Hits@20 {row['hits_20']:.4f} Hits@50 {row['hits_50']:.4f} "
            f"Hits@100 {row['hits_100']:.4f} MRR {row['mrr']:.4f} "
            f"direction AUC {row['direction_auc']:.4f} ({row['edges']} edges)"
        )


if __name__ == "__main__":
    run_job(main, __doc__)
