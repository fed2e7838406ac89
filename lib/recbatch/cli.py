"""Command-line plumbing shared by every job in ``jobs/``: parse, validate, run, report.

A job is ``main(cfg, args) -> None``; ``run_job`` turns config errors and the library's own
well-explained failures into one clear line and a non-zero exit instead of a bare stack trace.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from recbatch.config import ConfigError, RecbatchConfig, load_config
from recbatch.errors import RecbatchError
from recbatch.log import configure_logging, get_logger

log = get_logger("cli")


def argument_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", help="YAML config file (default: conf/local.yaml)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config key, e.g. --set ingest.max_reject_ratio=0.1 (repeatable)",
    )
    parser.add_argument("--log-level", default="INFO", help="recbatch log level (default INFO)")
    return parser


def config_from_args(args: argparse.Namespace) -> RecbatchConfig:
    cfg = load_config(args.config, args.overrides)
    if cfg.run_date is None:
        cfg = cfg.model_copy(update={"run_date": datetime.now(UTC).date()})
    return cfg


def run_job(
    main: Callable[[RecbatchConfig, argparse.Namespace], None],
    description: str,
    argv: Sequence[str] | None = None,
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
) -> None:
    """Entry point of every job: config first (fails before Spark), then the job itself."""
    parser = argument_parser(description)
    if add_arguments:
        add_arguments(parser)
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    try:
        cfg = config_from_args(args)
        log.info("config %s (env=%s, run_date=%s)", cfg.fingerprint(), cfg.env, cfg.run_date)
        main(cfg, args)
    except (ConfigError, RecbatchError) as err:
        log.error("%s", err)
        # An error class may name its own status (e.g. 75, "try later", for a held run lock).
        sys.exit(2 if isinstance(err, ConfigError) else getattr(err, "exit_code", 1))


def _launch_args_main(argv: Sequence[str] | None = None) -> None:
    """Print spark-submit launch options for a config, one per line (used by spark-submit.sh)."""
    from recbatch.session import JarsUnavailable, all_jars, require_library

    # The job's own arguments (a SQL statement, --no-generate) are the job's business: skip them.
    args, _ = argument_parser("spark-submit launch options for a config").parse_known_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        for library in ("delta", "graphframes"):
            require_library(cfg, library)
    except (ConfigError, JarsUnavailable) as err:
        print(f"recbatch: {err}", file=sys.stderr)
        sys.exit(2)
    print(f"--master\n{cfg.spark.master}")
    print(f"--driver-memory\n{cfg.spark.driver_memory}")
    print(f"--jars\n{','.join(str(p) for p in all_jars(cfg))}")


if __name__ == "__main__":
    _launch_args_main()
