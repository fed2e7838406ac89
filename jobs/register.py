"""Register the output tables by name in the catalog (the pipeline's ``register`` stage alone).

With ``catalog.metastore: hive`` this writes the names to the shared metastore (idempotent: a
name already pointing at its table is left alone, one pointing at an old location is
re-pointed); with ``session`` it checks that every table registers and says which exist.

    ./spark-submit.sh register --config conf/cluster.yaml
"""

from recbatch.catalog import register_stage
from recbatch.cli import run_job
from recbatch.session import build_session


def main(cfg, args) -> None:
    spark = build_session(cfg)
    summary = register_stage(spark, cfg)
    print(f"catalog {cfg.catalog.database}: {summary}")


if __name__ == "__main__":
    run_job(main, __doc__)
