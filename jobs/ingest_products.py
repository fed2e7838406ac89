"""Validate the product catalogue into the Delta ``products`` and ``quarantine`` tables.

./spark-submit.sh ingest_products [--set ingest.catalog_path=/data/catalog.csv]
    [--set ingest.catalog_format=parquet] [--set ingest.ids=string]

The catalogue: product_id, category_id, then any attribute columns (recbatch.events.products).
"""

from recbatch.cli import run_job
from recbatch.events.products import products_stage
from recbatch.session import build_session


def main(cfg, args) -> None:
    spark = build_session(cfg)
    print(products_stage(spark, cfg))


if __name__ == "__main__":
    run_job(main, __doc__)
