"""Configuration loading: shipped files validate, mistakes stop the run with the key named.

Pure Python (no Spark): ``load_config`` must reject a bad config before any Spark work starts.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from recbatch.config import PROJECT_ROOT, ConfigError, RecbatchConfig, load_config, parse_override

LOCAL = PROJECT_ROOT / "conf" / "local.yaml"
CLUSTER = PROJECT_ROOT / "conf" / "cluster.yaml"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "conf.yaml"
    path.write_text(text)
    return path


# --- shipped files ------------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "env"), [(LOCAL, "local"), (CLUSTER, "cluster")])
def test_shipped_configs_validate(path: Path, env: str) -> None:
    cfg = load_config(path)
    assert isinstance(cfg, RecbatchConfig)
    assert cfg.env == env
    assert cfg.ingest.window_start == datetime(2026, 1, 1, tzinfo=UTC)
    assert cfg.ingest.window_end == datetime(2026, 3, 1, tzinfo=UTC)
    assert cfg.generator.start.tzinfo is not None


def test_cluster_config_is_sized_for_a_cluster() -> None:
    cfg = load_config(CLUSTER)
    assert cfg.spark.master.startswith("spark://")
    assert cfg.spark.shuffle_partitions == 200
    assert cfg.spark.extra_conf["spark.executor.cores"] == "4"
    assert cfg.generator.output_format == "parquet" and cfg.ingest.input_format == "parquet"


def test_default_path_is_the_local_config() -> None:
    assert load_config() == load_config(LOCAL)


# --- unknown keys -------------------------------------------------------------------------------


def test_unknown_top_level_key_is_named(tmp_path: Path) -> None:
    path = _write(tmp_path, LOCAL.read_text() + "\nfeature_store: {}\n")
    with pytest.raises(ConfigError, match=r"feature_store: Extra inputs are not permitted"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"\bbogus\b"):
        load_config(LOCAL, ["bogus=1"])


def test_unknown_nested_key_is_named_with_its_section(tmp_path: Path) -> None:
    text = LOCAL.read_text().replace("  shuffle_partitions: 8", "  shuffle_partitons: 8")
    assert "shuffle_partitons" in text
    with pytest.raises(ConfigError, match=r"spark\.shuffle_partitons: Extra inputs"):
        load_config(_write(tmp_path, text))
    with pytest.raises(ConfigError, match=r"ingest\.max_reject_rate\b"):
        load_config(LOCAL, ["ingest.max_reject_rate=0.2"])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["graph.source=edge_list"], "graph.source=edge_list needs graph.edge_list_path"),
        (
            ["graph.source=edge_list", "graph.edge_list_path=e.tsv", "graph.split=time"],
            "graph.split=time needs edge times",
        ),
        (["graph.val_fraction=0.5", "graph.test_fraction=0.5"], "must be below 1"),
        (["sampling.k_min=30", "sampling.k_max=10"], "k_min must not exceed"),
        (["sampling.hops=1"], r"sampling\.hops"),
        (["sampling.exponent=-1"], "budgets decrease with degree"),
    ],
)
def test_graph_and_sampling_settings_are_checked(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(LOCAL, overrides)


def test_every_problem_is_listed_at_once() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(LOCAL, ["spark.nope=1", "paths.nope=2", "generator.days=0"])
    message = str(err.value)
    assert "spark.nope" in message and "paths.nope" in message and "generator.days" in message


# --- overrides ----------------------------------------------------------------------------------


def test_overrides_apply_with_yaml_typing() -> None:
    cfg = load_config(
        LOCAL,
        [
            "ingest.max_reject_ratio=0.2",
            "spark.shuffle_partitions=3",
            "spark.ui_enabled=true",
            "spark.master=local[1]",
            "generator.start=2026-01-05T06:00:00+02:00",
            "run_date=2026-02-01",
            "ingest.input_path=",
        ],
    )
    assert cfg.ingest.max_reject_ratio == 0.2
    assert cfg.spark.shuffle_partitions == 3
    assert cfg.spark.ui_enabled is True
    assert cfg.spark.master == "local[1]"
    assert cfg.generator.start == datetime(2026, 1, 5, 4, tzinfo=UTC)
    assert cfg.generator.start.utcoffset() == timedelta(hours=2)
    assert cfg.run_date == date(2026, 2, 1)
    assert cfg.ingest.input_path is None
    # Untouched keys keep the file's values.
    assert cfg.ingest.max_clock_skew_minutes == 10
    assert load_config(LOCAL, ["run_date='2026-02-01'"]).run_date == date(2026, 2, 1)


def test_later_override_wins_and_fingerprint_follows_the_effective_config() -> None:
    base = load_config(LOCAL)
    cfg = load_config(LOCAL, ["ingest.max_reject_ratio=0.2", "ingest.max_reject_ratio=0.3"])
    assert cfg.ingest.max_reject_ratio == 0.3
    assert load_config(LOCAL).fingerprint() == base.fingerprint()
    assert cfg.fingerprint() != base.fingerprint()
    same = load_config(LOCAL, [f"ingest.max_reject_ratio={base.ingest.max_reject_ratio}"])
    assert same.fingerprint() == base.fingerprint()


def test_parse_override(tmp_path: Path) -> None:
    assert parse_override("ingest.max_reject_ratio=0.2") == (["ingest", "max_reject_ratio"], 0.2)
    assert parse_override(" spark.master = local[2]") == (["spark", "master"], "local[2]")
    assert parse_override("spark.app_name=a=b") == (["spark", "app_name"], "a=b")
    assert parse_override("spark.app_name='007'") == (["spark", "app_name"], "007")
    assert parse_override("ingest.input_path=") == (["ingest", "input_path"], None)
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_override("ingest.max_reject_ratio")
    with pytest.raises(ConfigError, match="empty key"):
        parse_override("=3")
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_override("spark.master=[unclosed")
    with pytest.raises(ConfigError, match="'spark' is not a section"):
        load_config(_write(tmp_path, "spark: 3\n"), ["spark.master=local[1]"])


# --- bad values ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("spark.shuffle_partitions=many", "spark.shuffle_partitions"),
        ("spark.shuffle_partitions=0", "spark.shuffle_partitions"),
        ("ingest.max_reject_ratio=1.5", "ingest.max_reject_ratio"),
        ("spark.log_level=LOUD", "spark.log_level"),
        ("generator.output_format=orc", "generator.output_format"),
        ("run_date=yesterday", "run_date"),
        ("spark=3", "spark"),
    ],
)
def test_bad_value_names_the_field(override: str, field: str) -> None:
    with pytest.raises(ConfigError, match=rf"invalid configuration: {field}: "):
        load_config(LOCAL, [override])


def test_bad_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(_write(tmp_path, "spark: [unclosed\n"))
    with pytest.raises(ConfigError, match="mapping of sections"):
        load_config(_write(tmp_path, "- a\n- b\n"))
    assert load_config(_write(tmp_path, "")) == RecbatchConfig()


# --- ingest window ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        # Both ends naive, so the order check passes and only the missing offset is wrong.
        ["ingest.window_start=2026-01-01T00:00:00", "ingest.window_end=2026-03-01T00:00:00"],
        ["ingest.now=2026-02-01T00:00:00"],
    ],
    ids=["window", "now"],
)
def test_naive_ingest_datetimes_are_rejected(overrides: list[str]) -> None:
    name = overrides[0].split("=")[0]
    with pytest.raises(ConfigError, match=rf"{name} needs a UTC offset"):
        load_config(LOCAL, overrides)


@pytest.mark.parametrize("name", ["window_start", "window_end"])
def test_one_naive_window_end_is_a_config_error(name: str) -> None:
    # conf/local.yaml gives both ends with +00:00; make one of them naive.
    with pytest.raises(ConfigError, match=rf"ingest\.{name} needs a UTC offset"):
        load_config(LOCAL, [f"ingest.{name}=2026-02-01T00:00:00"])


def test_window_must_be_ordered_and_offsets_are_kept() -> None:
    with pytest.raises(ConfigError, match="window_start must be before ingest.window_end"):
        load_config(LOCAL, ["ingest.window_start=2026-03-01T00:00:00+00:00"])
    cfg = load_config(LOCAL, ["ingest.window_start=2025-12-31T20:00:00-04:00"])
    assert cfg.ingest.window_start == datetime(2026, 1, 1, tzinfo=UTC)
    assert cfg.ingest.window_start.utcoffset() == timedelta(hours=-4)


# --- paths --------------------------------------------------------------------------------------


def test_relative_paths_resolve_under_project_root_and_data_root() -> None:
    cfg = load_config(LOCAL)
    root = PROJECT_ROOT / "var" / "local"
    assert cfg.path("data_root") == str(root)
    assert cfg.path("raw_events") == str(root / "raw" / "events")
    assert cfg.path("checkpoints") == str(root / "checkpoints")
    assert cfg.table_path("events") == str(root / "tables" / "events")


def test_absolute_paths_are_kept(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere" / "ckpt"
    cfg = load_config(LOCAL, [f"paths.data_root={tmp_path}", f"paths.checkpoints={elsewhere}"])
    assert cfg.path("data_root") == str(tmp_path)
    assert cfg.path("checkpoints") == str(elsewhere)
    assert cfg.path("tables") == str(tmp_path / "tables")
    assert cfg.table_path("quarantine") == str(tmp_path / "tables" / "quarantine")


def test_uris_are_kept_and_joined_with_slashes() -> None:
    cfg = load_config(CLUSTER)
    assert cfg.path("data_root") == "file:///shared/recbatch"
    assert cfg.path("tables") == "file:///shared/recbatch/tables"
    assert cfg.table_path("events") == "file:///shared/recbatch/tables/events"

    cfg = load_config(
        LOCAL, ["paths.data_root=hdfs://nn:8020/recbatch/", "paths.raw_events=s3a://bucket/raw"]
    )
    assert cfg.path("tables") == "hdfs://nn:8020/recbatch/tables"
    assert cfg.path("raw_events") == "s3a://bucket/raw"
    assert cfg.table_path("events") == "hdfs://nn:8020/recbatch/tables/events"


def test_spark_extra_conf_keys_with_dots_can_be_overridden() -> None:
    cfg = load_config(
        LOCAL,
        ["spark.extra_conf.spark.executor.memory=8g", "spark.extra_conf.spark.executor.cores=4"],
    )
    assert cfg.spark.extra_conf == {"spark.executor.memory": "8g", "spark.executor.cores": "4"}


def test_naive_generator_start_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"generator\.start needs a UTC offset"):
        load_config(LOCAL, ["generator.start=2026-01-01T00:00:00"])
