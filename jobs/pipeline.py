"""Run the whole refresh for one run date on the configured data.

./spark-submit.sh pipeline                       # embedded default: generate, then ingest
./spark-submit.sh pipeline --no-generate --config conf/cluster.yaml
"""

from recbatch.cli import run_job
from recbatch.pipeline import query_guide, run_pipeline
from recbatch.session import build_session


def add_arguments(parser) -> None:
    parser.add_argument(
        "--no-generate",
        action="store_true",
        help="ingest the raw events already at paths.raw_events instead of generating them",
    )


def main(cfg, args) -> None:
    spark = build_session(cfg)
    report = run_pipeline(spark, cfg, generate_input=not args.no_generate)
    print(query_guide(spark, cfg, report))


if __name__ == "__main__":
    run_job(main, __doc__, add_arguments=add_arguments)
