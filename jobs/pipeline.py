"""Run the whole refresh for one run date on the configured data.

./spark-submit.sh pipeline                       # embedded default: generate, then ingest
./spark-submit.sh pipeline --no-generate --config conf/cluster.yaml
./spark-submit.sh pipeline --force-stage thresholds   # redo thresholds (and what follows)

Stages already done for the run date under the same config are skipped (see the ``runs``
table); a second refresh of the same date while one runs exits with status 75 (docs/operations.md).
"""

from recbatch.cli import run_job
from recbatch.pipeline import STAGE_NAMES, pipeline_stages, query_guide, run_pipeline
from recbatch.runs import RunLock, StageSelection, lock_dir
from recbatch.session import build_session


def add_arguments(parser) -> None:
    parser.add_argument(
        "--no-generate",
        action="store_true",
        help="ingest the raw events already at paths.raw_events instead of generating them",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="run every stage even if it already succeeded for this run date and config",
    )
    parser.add_argument(
        "--force-stage",
        action="append",
        default=[],
        choices=STAGE_NAMES,
        metavar="NAME",
        help=f"run this stage (and the stages after it) again; repeatable. One of: "
        f"{', '.join(STAGE_NAMES)}",
    )
    parser.add_argument(
        "--from-stage",
        choices=STAGE_NAMES,
        metavar="NAME",
        help="skip the stages before NAME without looking at their records; run NAME and after",
    )


def main(cfg, args) -> None:
    generate_input = not args.no_generate
    selection = StageSelection(
        force=args.force,
        force_stages=tuple(args.force_stage),
        from_stage=args.from_stage,
    )
    # Everything that can be wrong with the request fails here, before Spark starts: the stage
    # names, the lock location, and a refresh of the same date already running.
    selection.check(pipeline_stages(generate_input=generate_input))
    lock_dir(cfg)
    with RunLock.for_run(cfg) as lock:
        spark = build_session(cfg)
        run = run_pipeline(
            spark, cfg, generate_input=generate_input, selection=selection, lock=lock
        )
        print(query_guide(spark, cfg, run))


if __name__ == "__main__":
    run_job(main, __doc__, add_arguments=add_arguments)
