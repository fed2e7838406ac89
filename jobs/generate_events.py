"""Generate a synthetic event log and its ground truth (see recbatch.events.generator).

    ./spark-submit.sh generate_events [--config FILE] [--set generator.n_users=100000 ...]

Writes the raw log to ``paths.raw_events``, the product catalogue to ``paths.raw_catalog`` and
the ground truth to ``paths.ground_truth``.
"""

from recbatch.cli import run_job
from recbatch.config import RecbatchConfig
from recbatch.events.generator import generate
from recbatch.log import get_logger
from recbatch.session import build_session

log = get_logger("jobs.generate_events")


def main(cfg: RecbatchConfig, args: object) -> None:
    spark = build_session(cfg)
    events_path, truth_path = cfg.path("raw_events"), cfg.path("ground_truth")
    counts = generate(
        spark, cfg.generator, events_path, truth_path, catalog_path=cfg.path("raw_catalog")
    )
    log.info(
        "wrote %d events (%s) as %s to %s; ground truth to %s",
        sum(counts.values()),
        ", ".join(f"{kind}={n}" for kind, n in counts.items()),
        cfg.generator.output_format,
        events_path,
        truth_path,
    )


if __name__ == "__main__":
    run_job(main, __doc__)
