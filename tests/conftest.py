"""One SparkSession for the whole test session, built by the product's own ``build_session``.

Tests write under a temporary data root; the session is small (local[2], 2 shuffle partitions).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from recbatch.config import PROJECT_ROOT, GeneratorSettings, RecbatchConfig, load_config
from recbatch.graph.settings import GraphSettings
from recbatch.session import build_session

SHARED_DATA = Path(os.environ.get("RECBATCH_SHARED_DATA", PROJECT_ROOT.parent / "shared" / "data"))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: end-to-end runs (few, minutes each)")
    config.addinivalue_line("markers", "cluster: starts a local Spark standalone cluster")
    # Petastorm 0.13 on the pinned pyarrow 14 (setup.py says why): known, harmless deprecations.
    config.addinivalue_line("filterwarnings", "ignore:.*deprecated as of pyarrow.*:FutureWarning")
    config.addinivalue_line("filterwarnings", "ignore::ResourceWarning")
    # matplotlib 3.9 (pinned beside numpy 1.x) calls pyparsing's camelCase names, deprecated in 3.3.
    config.addinivalue_line("filterwarnings", "ignore:.*deprecated - use.*:DeprecationWarning")


DEMO_WORLD = (
    "user_propensity_sd",
    "buy_base_logit",
    "delay_median_hours",
    "delay_sigma",
    "category_delay_spread",
    "follow_up_rate",
    "follow_up_buy_logit",
    "complements_per_item",
    "lines",
    "line_loyalty",
)
"""Generator knobs conf/local.yaml sets to show the techniques at the embedded default's size;
the tests keep the code's defaults for them (the world their statistics are written for)."""
DEMO_GRAPH_FILTERS = ("min_support", "min_lift")
"""The co-purchase filters conf/local.yaml sets for its world; the tests keep the code's
defaults (every co-purchase an edge), so their small graphs keep their edges."""
TEST_WORLD_TARGET = "thresholds.target_precision=0.045"
"""The conversion thresholds' target in that milder world (~4% of test views convert)."""
TEST_NODE_INPUTS = "blade.node_inputs_candidates=[]"
"""BLADE trains ``blade.node_inputs`` alone in the stage tests: choosing among candidates trains
each (``test_blade`` covers the choice)."""
TEST_MODEL_SEEDS = "conversion.model_seeds=1"
"""One conversion model per method in the stage tests (the demo's 3 triple their training);
``test_conversion`` trains several seeds on purpose."""


def code_graph_filters() -> list[str]:
    """``--set`` overrides of the code's co-purchase filters (``DEMO_GRAPH_FILTERS``): what a
    test pipeline run through spark-submit passes, so its graph is the one ``make_test_config``
    describes (the BLADE model's fingerprint reads the graph settings)."""
    graph = GraphSettings()
    return [f"graph.{key}={getattr(graph, key)}" for key in DEMO_GRAPH_FILTERS]


def make_test_config(data_root: Path, *overrides: str) -> RecbatchConfig:
    """The local config, pointed at a test data root and sized for tests."""
    defaults = GeneratorSettings()
    world = [f"generator.{key}={getattr(defaults, key)}" for key in DEMO_WORLD]
    world += code_graph_filters()
    return load_config(
        PROJECT_ROOT / "conf" / "local.yaml",
        [
            f"paths.data_root={data_root}",
            "spark.master=local[2]",
            "spark.shuffle_partitions=2",
            "spark.driver_memory=2g",
            "run_date=2026-02-01",
            *world,
            TEST_WORLD_TARGET,
            TEST_MODEL_SEEDS,
            TEST_NODE_INPUTS,
            *overrides,
        ],
    )


@pytest.fixture(scope="session")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("recbatch")


@pytest.fixture(scope="session")
def cfg(data_root: Path) -> RecbatchConfig:
    return make_test_config(data_root)


@pytest.fixture(scope="session")
def spark(cfg: RecbatchConfig):
    session = build_session(cfg)
    yield session
    session.stop()


@pytest.fixture(scope="session")
def small_log_cfg(spark, data_root: Path) -> RecbatchConfig:
    """A small generated log taken through ingest and examples, built once for the feedback
    tests (they write different tables under it)."""
    from recbatch.events.generator import generate
    from recbatch.events.ingest import ingest_events
    from recbatch.feedback.examples import examples_stage

    cfg = make_test_config(
        data_root / "small_log",
        "generator.n_users=600",
        "generator.n_items=200",
        "generator.n_categories=8",
        "generator.partitions=2",
        "ingest.now=2026-02-15T00:00:00+00:00",
    )
    generate(spark, cfg.generator, cfg.path("raw_events"), cfg.path("ground_truth"))
    ingest_events(spark, cfg)
    examples_stage(spark, cfg)
    return cfg


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared datasets not found at {SHARED_DATA} (set RECBATCH_SHARED_DATA)")
    return SHARED_DATA
