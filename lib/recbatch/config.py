"""Configuration: one YAML file per environment, validated, with command-line overrides.

Why pydantic with ``extra="forbid"``: a misspelt key in a nightly job's config must stop the run
before any Spark work, not fall back to a silent default.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from recbatch.io.ids import IdKind

PROJECT_ROOT = Path(os.environ.get("RECBATCH_HOME") or Path(__file__).resolve().parents[2])
"""The project checkout. spark-submit.sh sets RECBATCH_HOME, because under spark-submit this module
is imported from the --py-files zip, whose location says nothing about the project."""


class ConfigError(ValueError):
    """A configuration file or override is invalid; raised before any Spark work starts."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# After _Section: the thresholds package defines its own section on it (settings.py imports it).
from recbatch.blade.settings import (  # noqa: E402
    BladeSettings,
    EvaluationSettings,
    RecommendationSettings,
    RerankSettings,
)
from recbatch.graph.settings import GraphSettings, SamplingSettings  # noqa: E402
from recbatch.links.settings import LinkUncertaintySettings  # noqa: E402
from recbatch.proximity.settings import ProximitySettings  # noqa: E402
from recbatch.thresholds.settings import ThresholdSettings  # noqa: E402


def _require_offset(value: datetime | None, section: str, info: ValidationInfo) -> datetime | None:
    """Times in config are instants: a naive one would silently mean the machine's time zone."""
    if value is not None and value.tzinfo is None:
        raise ValueError(
            f"{section}.{info.field_name} needs a UTC offset, e.g. 2017-11-25T00:00:00+08:00"
        )
    return value


class SparkSettings(_Section):
    master: str = "local[2]"
    app_name: str = "recbatch"
    shuffle_partitions: int = Field(8, ge=1, description="spark.sql.shuffle.partitions")
    driver_memory: str = "4g"
    ui_enabled: bool = False
    log_level: Literal["ERROR", "WARN", "INFO", "DEBUG"] = "WARN"
    jars_dir: str = ".jars"
    extra_conf: dict[str, str] = Field(default_factory=dict, description="any other spark.* keys")

    @field_validator("extra_conf", mode="before")
    @classmethod
    def _values_as_text(cls, value: object) -> object:
        """Spark settings are text; YAML turns ``4`` or ``true`` into numbers and booleans."""
        if isinstance(value, dict):
            return {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in value.items()}
        return value


class PathSettings(_Section):
    """Where data lives. Relative paths are under ``data_root``; a relative ``data_root`` is under
    the project root. URIs (``hdfs://``, ``s3a://``, ``file://``) are used as they are."""

    data_root: str = "var/local"
    raw_events: str = "raw/events"
    raw_catalog: str = Field(
        "raw/catalog", description="product catalogue read when ingest.catalog_path is unset"
    )
    ground_truth: str = "raw/ground_truth"
    tables: str = "tables"
    checkpoints: str = "checkpoints"
    work: str = "work"
    samples: str = Field("samples", description="neighbourhood samples (Parquet), per run date")
    exports: str = Field(
        "exports", description="files for outside tools (embeddings for ../shared/linkpred)"
    )


class GeneratorSettings(_Section):
    """A synthetic but realistic event log with its ground truth (see events/generator.py)."""

    seed: int = Field(7, ge=0)
    n_users: int = Field(20_000, ge=1)
    n_items: int = Field(5_000, ge=2)
    n_categories: int = Field(40, ge=2)
    start: datetime = datetime.fromisoformat("2026-01-01T00:00:00+00:00")
    days: int = Field(30, ge=1)
    popularity_exponent: float = Field(1.1, gt=0, description="Zipf exponent of item popularity")
    complements_per_category: int = Field(2, ge=0, description="outgoing category relations")
    complements_per_item: int = Field(5, ge=1, description="true related targets per item")
    sessions_per_user: float = Field(3.0, gt=0, description="mean anchor views per user")
    views_per_session: float = Field(3.0, ge=1, description="mean views per session (browsing)")
    fav_rate: float = Field(0.04, ge=0, le=1)
    cart_rate: float = Field(0.08, ge=0, le=1)
    buy_base_logit: float = Field(-4.6, description="logit of buying a viewed item, no signal")
    item_quality_sd: float = Field(0.5, ge=0, description="sd of an item's purchase-logit term")
    user_propensity_sd: float = Field(
        0.0,
        ge=0,
        description="sd of a user's purchase-logit term; the user's favourite and add-to-cart "
        "rates scale with exp(term / 2), so the user's history shows it (0: all users alike)",
    )
    buy_cart_logit: float = Field(3.2, description="logit added by an add-to-cart")
    buy_fav_logit: float = Field(1.0, description="logit added by a favourite")
    delay_median_hours: float = Field(3.0, gt=0, description="median view-to-buy delay")
    delay_sigma: float = Field(1.8, gt=0, description="log-normal spread of the delay")
    category_delay_spread: float = Field(
        0.0, ge=0, description="sd of a per-category shift of the log delay (0: one delay law)"
    )
    follow_up_rate: float = Field(0.5, ge=0, le=1, description="P(view a complement after a buy)")
    follow_up_buy_logit: float = Field(2.5, description="logit added for a true complement")
    follow_up_mean_days: float = Field(4.0, gt=0, description="mean gap buy -> complement view")
    lines: int = Field(
        0,
        ge=0,
        description="latent product lines (brand, model, style) shared across categories: an "
        "item's complements are drawn from its line's items in the complement categories, one "
        "target pool per category and line, so items that share buyers share targets (0: each "
        "item's complements drawn independently)",
    )
    line_loyalty: float = Field(
        0.0,
        ge=0,
        le=1,
        description="share of a user's item draws (anchors and browsing) taken from the user's "
        "own line (needs lines > 0): buyers of a line buy more of it",
    )
    partitions: int = Field(8, ge=1)
    output_format: Literal["csv", "parquet"] = "csv"

    @field_validator("start")
    @classmethod
    def _start_has_offset(cls, value: datetime, info: ValidationInfo) -> datetime:
        return _require_offset(value, "generator", info)

    @model_validator(mode="after")
    def _loyalty_needs_lines(self) -> GeneratorSettings:
        if self.line_loyalty > 0 and self.lines == 0:
            raise ValueError("generator.line_loyalty needs generator.lines > 0")
        return self


class IngestSettings(_Section):
    """Validation of raw events into the Delta ``events`` and ``quarantine`` tables."""

    input_path: str | None = Field(
        None, description="raw input; relative to the project root; default paths.raw_events"
    )
    input_format: Literal["csv", "parquet", "taobao"] = "csv"
    catalog_path: str | None = Field(
        None,
        description="product catalogue (product_id, category_id, attribute columns...); "
        "relative to the project root; default paths.raw_catalog when it exists, else none",
    )
    catalog_format: Literal["csv", "parquet"] = "csv"
    ids: IdKind = Field(
        "integer",
        description="product, user and category ids of every input (events, edge lists, node "
        "lists): integer ('007' = 7, long columns) or string (as they arrived, trimmed: "
        "B000000NGH, SKU-123-XL; '007' and '7' differ); io/ids.py",
    )
    window_start: datetime | None = None
    window_end: datetime | None = None
    max_clock_skew_minutes: float = Field(10.0, ge=0, description="tolerated future timestamps")
    max_reject_ratio: float = Field(0.05, ge=0, le=1)
    now: datetime | None = Field(None, description="reference 'now' (tests, backfills)")

    @field_validator("window_start", "window_end", "now")
    @classmethod
    def _times_have_offsets(cls, value: datetime | None, info: ValidationInfo) -> datetime | None:
        return _require_offset(value, "ingest", info)

    @model_validator(mode="after")
    def _window_is_ordered(self) -> IngestSettings:
        if self.window_start and self.window_end and self.window_start >= self.window_end:
            raise ValueError("ingest.window_start must be before ingest.window_end")
        return self


class FeedbackSettings(_Section):
    """Delayed feedback: examples, label-flip probabilities and importance weights (docs/delayed_feedback.md)."""

    attribution_window_hours: float = Field(
        168.0, gt=0, description="W: a buy within W of the view"
    )
    cutoff: datetime | None = Field(
        None,
        description="cutoff T of every stage: the flip weights' snapshot and the conversion "
        "evaluation's train/test boundary; default: the last event time for the weights, the "
        "latest T with mature test labels for the evaluation",
    )
    counterfactual_delay_hours: float | None = Field(
        None, gt=0, description="CD: flip model learns at T - CD what happened by T; default W"
    )
    counterfactual_cutoffs: int = Field(4, ge=1, description="rolling counterfactual cutoffs")
    counterfactual_step_hours: float = Field(24.0, gt=0, description="spacing of those cutoffs")
    elapsed_buckets_hours: list[float] = Field(
        default_factory=lambda: [0.25, 0.5, 1, 2, 4, 8, 12, 24, 48, 72, 120],
        description="upper edges of elapsed-time buckets (a last bucket runs to W)",
    )
    prior_strength: float = Field(20.0, ge=0, description="Beta smoothing of sparse hazard cells")
    flip_learner: Literal["logistic", "boosted", "hazard"] = Field(
        "logistic",
        description="logistic: MLlib logistic regression on the features, signal state and "
        "elapsed bucket; boosted: MLlib gradient-boosted trees (needs hundreds of flips, costs "
        "minutes); both recalibrated per signal state; hazard: z per (signal state, elapsed "
        "bucket) cell (docs/delayed_feedback.md)",
    )
    flip_trees: int = Field(40, ge=1, description="boosted: trees")
    flip_tree_depth: int = Field(4, ge=1, le=10, description="boosted: depth of each tree")
    flip_calibration_share: float = Field(
        0.25,
        gt=0,
        lt=1,
        description="share of the counterfactual examples (by example id) kept out of the "
        "logistic or boosted learner to recalibrate its z per signal state",
    )
    flip_seed: int = Field(0, description="boosted: seed of the trees' row subsampling")
    weighting: Literal["importance_sampling", "label_correction"] = "label_correction"
    max_weight: float = Field(10.0, ge=1, description="clip of 1/s for observed positives")
    importance_normalisation: Literal["expected_positives", "none"] = Field(
        "expected_positives",
        description="importance sampling: expected_positives scales the positives' 1/s weights "
        "to add up to the flip model's expected conversions (observed + sum of z), so the "
        "weighted base rate is the flip model's; none: 1/s as clipped (feedback/weights.py)",
    )
    max_flip_probability: float = Field(0.95, gt=0, le=1, description="clip of z")
    feature_lookback_days: int = Field(30, ge=1, description="history window of the features")
    recent_activity_hours: float = Field(
        1.0, gt=0, description="span of the user's recent views (feature f_user_recent_views)"
    )
    examples_refresh: Literal["incremental", "full"] = Field(
        "incremental",
        description="incremental: rebuild only the examples new events can change "
        "(feedback/refresh.py); full: rebuild every example",
    )

    @field_validator("cutoff")
    @classmethod
    def _cutoff_has_offset(cls, value: datetime | None, info: ValidationInfo) -> datetime | None:
        return _require_offset(value, "feedback", info)

    @field_validator("elapsed_buckets_hours")
    @classmethod
    def _buckets_increase(cls, value: list[float]) -> list[float]:
        if (
            not value
            or any(b <= a for a, b in zip(value, value[1:], strict=False))
            or value[0] <= 0
        ):
            raise ValueError("feedback.elapsed_buckets_hours must be positive and increasing")
        return value

    @model_validator(mode="after")
    def _recent_within_lookback(self) -> FeedbackSettings:
        if self.recent_activity_hours > self.feature_lookback_days * 24:
            raise ValueError(
                "feedback.recent_activity_hours must not exceed feature_lookback_days * 24 "
                "(an incremental refresh reads events back to the lookback only)"
            )
        return self


class ConversionSettings(_Section):
    """The conversion model (feedback/conversion/): torch MLP trained on Petastorm tensors."""

    epochs: int = Field(
        40, ge=1, description="at most this many passes (early stopping usually ends sooner)"
    )
    min_steps: int = Field(
        300, ge=1, description="at least this many optimizer steps per trainer, whatever the size"
    )
    patience: int = Field(
        4, ge=1, description="stop after this many epochs without a better validation loss"
    )
    validation_fraction: float = Field(
        0.1, ge=0, lt=0.5, description="training rows held out for early stopping (0: none)"
    )
    batch_size: int = Field(256, ge=1)
    learning_rate: float = Field(0.01, gt=0)
    hidden_sizes: tuple[int, ...] = Field(
        (32, 16),
        description="widths of the hidden ReLU layers; [] is a logistic regression on the "
        "features (the same weighted loss), the steadier model for a few thousand rows a day",
    )
    dropout: float = Field(0.0, ge=0, lt=1, description="after each hidden layer")
    heads: int = Field(1, ge=1, description="output heads, each on its own bootstrap weights")
    num_processes: int = Field(2, ge=1, description="torch workers (TorchDistributor processes)")
    test_days: float = Field(3.0, gt=0, description="days of views after the cutoff T tested on")
    train_days: float | None = Field(
        None, gt=0, description="days of views before T trained on (default: all before T)"
    )
    test_labels: Literal["mature", "censored"] = Field(
        "mature",
        description="mature: every test view's label window must close by the data end; "
        "censored: labels as far as the data reach (the censored share is recorded)",
    )
    waiting_hours: float = Field(6.0, ge=0, description="waiting-window baseline: drop younger")
    row_groups_per_trainer: int = Field(4, ge=1)
    seed: int = Field(7, ge=1)
    l2_grid: tuple[float, ...] = Field(
        (1e-6, 1e-5, 1e-4, 1e-3, 1e-2),
        min_length=1,
        description="logistic model (hidden_sizes []): L2 penalties tried; the one with the least "
        "cv_folds-fold cross-validated weighted loss is used (feedback/conversion/convex.py)",
    )
    cv_folds: int = Field(5, ge=2, description="folds of that cross-validation (by example_id)")
    lbfgs_max_iterations: int = Field(
        500, ge=1, description="logistic model: L-BFGS iterations per fit at most"
    )
    fnw_rounds: int = Field(
        5, ge=1, description="logistic model with FNW: fixed-point rounds of its moving weights"
    )
    min_validation_positives: float = Field(
        50.0,
        ge=0,
        description="MLP: the hidden layers are judged on the validation slice only when it "
        "holds this much positive weight; below it the model is its logistic part (with "
        "dropout > 0: the hidden layers train for the step budget alone)",
    )
    model_seeds: int = Field(
        1,
        ge=1,
        description="models per method, seeds seed .. seed + n - 1 on the same rows: the metric "
        "table and the report give their mean and a 95% interval (a gap between methods smaller "
        "than the seed-to-seed spread is noise)",
    )

    def seeds(self) -> list[int]:
        """The model seeds of one comparison (``seed`` first)."""
        return [self.seed + i for i in range(self.model_seeds)]

    @field_validator("l2_grid")
    @classmethod
    def _non_negative_penalties(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(v < 0 for v in value):
            raise ValueError("conversion.l2_grid must hold penalties >= 0")
        return value

    @field_validator("hidden_sizes")
    @classmethod
    def _positive_sizes(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(h < 1 for h in value):
            raise ValueError("conversion.hidden_sizes must be positive layer widths (or [])")
        return value


class UncertaintySettings(_Section):
    """Scores with uncertainty (uncertainty/): which estimator, and the production model's shape.

    The scored model is the conversion model trained with ``feedback.weighting``; ``heads``
    (multi-head bootstrap ensemble, one forward pass) or ``mc_dropout`` (``mc_samples`` passes
    with dropout on) decide how its uncertainty is measured.
    """

    method: Literal["heads", "mc_dropout"] = "heads"
    heads: int = Field(8, ge=2, description="ensemble heads (method 'heads')")
    dropout: float = Field(0.2, gt=0, lt=1, description="dropout rate (method 'mc_dropout')")
    mc_samples: int = Field(30, ge=2, description="stochastic passes (method 'mc_dropout')")
    seed: int = Field(11, ge=0, description="MC-dropout sampling seed")


class RunSettings(_Section):
    """Run records and the per-run-date lock of the pipeline (recbatch/runs.py, docs/operations.md)."""

    lock_dir: str | None = Field(
        None,
        description="POSIX directory every submitting machine sees; relative to data_root; "
        "default <data_root>/locks",
    )
    lock_ttl_minutes: float = Field(
        30.0, gt=0, description="a lock whose owner has not refreshed it this long is stale"
    )


class CatalogSettings(_Section):
    """Names for the output tables in SQL (recbatch/catalog.py, docs/operations.md#sql).

    ``session``: no shared catalog. The Delta tables under ``paths.tables`` are the truth; every
    SQL session recbatch opens (the ``sql`` job, ``./spark-submit.sh spark-sql``) registers the
    ones that exist in its own in-memory catalog, so there is no metastore lock to contend for
    and nothing to drift. ``hive``: a shared Hive metastore (a metastore service given by
    ``spark.hadoop.hive.metastore.uris`` in ``spark.extra_conf``, or a metastore database by
    ``spark.hadoop.javax.jdo.option.ConnectionURL``; with neither, an embedded Derby database
    at ``<data_root>/metastore_db``, which admits one process at a time); the pipeline's
    ``register`` stage creates or repairs the entries, idempotently.
    """

    database: str = Field(
        "recbatch", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="the tables' database"
    )
    metastore: Literal["session", "hive"] = "session"


class RecbatchConfig(_Section):
    env: str = "local"
    run_date: date | None = Field(None, description="YYYY-MM-DD; defaults to today (UTC)")
    spark: SparkSettings = SparkSettings()
    paths: PathSettings = PathSettings()
    generator: GeneratorSettings = GeneratorSettings()
    ingest: IngestSettings = IngestSettings()
    feedback: FeedbackSettings = FeedbackSettings()
    conversion: ConversionSettings = ConversionSettings()
    uncertainty: UncertaintySettings = UncertaintySettings()
    thresholds: ThresholdSettings = ThresholdSettings()
    graph: GraphSettings = GraphSettings()
    sampling: SamplingSettings = SamplingSettings()
    blade: BladeSettings = BladeSettings()
    rerank: RerankSettings = RerankSettings()
    proximity: ProximitySettings = ProximitySettings()
    recommendations: RecommendationSettings = RecommendationSettings()
    evaluation: EvaluationSettings = EvaluationSettings()
    link_uncertainty: LinkUncertaintySettings = LinkUncertaintySettings()
    link_thresholds: ThresholdSettings = Field(
        ThresholdSettings(target_precision=0.8),
        description="thresholds of the link scores (recbatch.links); precision at "
        "link_uncertainty.negatives_per_edge sampled non-edges per held-out edge",
    )
    runs: RunSettings = RunSettings()
    catalog: CatalogSettings = CatalogSettings()

    @model_validator(mode="after")
    def _link_dropout_has_dropout(self) -> RecbatchConfig:
        if self.link_uncertainty.method == "mc_dropout" and self.blade.dropout == 0:
            raise ValueError(
                "link_uncertainty.method=mc_dropout draws dropout masks of BLADE's GNNs: set "
                "blade.dropout > 0, or link_uncertainty.method=heads"
            )
        return self

    def effective_run_date(self) -> date:
        """``run_date``, or today (UTC) when it is not set."""
        return self.run_date or datetime.now(UTC).date()

    def path(self, name: str) -> str:
        """Absolute location of a ``paths`` entry, resolved as documented on PathSettings."""
        value = getattr(self.paths, name)
        if name == "data_root":
            return _resolve(value, PROJECT_ROOT)
        return _resolve(value, self.path("data_root"))

    def ingest_input(self) -> str:
        """The raw input to ingest: ``ingest.input_path`` (relative to the project root) or, when
        unset, ``paths.raw_events`` (where the generator writes)."""
        if self.ingest.input_path:
            return _resolve(self.ingest.input_path, PROJECT_ROOT)
        return self.path("raw_events")

    def project_file(self, value: str) -> str:
        """An input file named in config (an edge list, a node list): relative to the project
        root, URIs and absolute paths as they are."""
        return _resolve(value, PROJECT_ROOT)

    def table_path(self, table: str) -> str:
        """Location of a Delta table by name, e.g. ``table_path("events")``."""
        return _join(self.path("tables"), table)

    def fingerprint(self) -> str:
        """Stable short hash of the effective config, recorded with each run."""
        payload = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _is_uri(path: str) -> bool:
    return "://" in path


def local_path(location: str) -> Path | None:
    """A local path or ``file:`` URI as a local path; None for other URIs (``hdfs://``, ``s3a://``).

    For the things that must be plain files every submitting machine sees: the report, the run
    lock, an embedded metastore, the spark-sql shell's view of the tables."""
    if location.startswith("file:"):
        return Path(urlparse(location).path)
    return None if _is_uri(location) else Path(location)


def _join(base: str, child: str) -> str:
    return f"{base.rstrip('/')}/{child}" if _is_uri(base) else str(Path(base) / child)


def _resolve(value: str, base: str | Path) -> str:
    if _is_uri(value) or Path(value).is_absolute():
        return value
    joined = _join(str(base), value)
    return joined if _is_uri(joined) else os.path.normpath(joined)


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into a key path and a YAML-typed value."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like section.key=value")
    key, raw = text.split("=", 1)
    keys = [k for k in key.strip().split(".") if k]
    if not keys:
        raise ConfigError(f"override '{text}' has an empty key")
    if keys[:2] == ["spark", "extra_conf"] and len(keys) > 2:
        # Spark's own keys contain dots: spark.extra_conf.spark.executor.memory=8g
        keys = [*keys[:2], ".".join(keys[2:])]
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except (yaml.YAMLError, ValueError) as err:  # PyYAML raises a bare ValueError for 2026-02-30
        raise ConfigError(f"override '{text}': value is not valid YAML ({err})") from err
    return keys, value


def _apply_override(tree: dict[str, Any], keys: list[str], value: Any) -> None:
    node = tree
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {'.'.join(keys)}: '{key}' is not a section")
        node = child
    node[keys[-1]] = value


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None
) -> RecbatchConfig:
    """Load a YAML config (default ``conf/local.yaml``), apply ``key=value`` overrides, validate.

    Raises ConfigError with every problem listed, so a bad config fails before Spark starts.
    """
    path = Path(path) if path else PROJECT_ROOT / "conf" / "local.yaml"
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, ValueError) as err:  # e.g. an impossible date such as 2026-02-30
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    for text in overrides or []:
        _apply_override(tree, *parse_override(text))
    try:
        return RecbatchConfig.model_validate(tree)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in err.errors()
        )
        raise ConfigError(f"{path}: invalid configuration: {problems}") from err
