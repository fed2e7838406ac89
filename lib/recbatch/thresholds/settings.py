"""Settings of the uncertainty-aware thresholds (docs/thresholds.md).

A section of the recbatch config (``thresholds:``); every function of ``recbatch.thresholds`` takes
this object or plain arguments, so a run is fully described by its config.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from recbatch.config import _Section


class ThresholdSettings(_Section):
    """Per-uncertainty-bucket score thresholds that keep precision >= target on fresh data.

    The labelled scores are split three ways by a seeded hash: *calibration* (bucket edges, score
    bins, isotonic fits, the candidate thresholds), *selection* (the Clopper-Pearson test that picks
    the final cutoff) and *evaluation* (the precision and recall reported in the table). The splits
    must be disjoint for the guarantee: a test on the rows that built its candidates is optimistic.
    """

    n_buckets: int = Field(
        5,
        ge=1,
        description="uncertainty buckets before merging: edges at the calibration split's "
        "uncertainty quantiles 1/n .. (n-1)/n",
    )
    min_bucket_support: int = Field(
        2000,
        ge=1,
        description="calibration rows a bucket needs; smaller buckets are merged into a neighbour, "
        "because an isotonic fit on a few rows gives thresholds that do not hold on fresh data",
    )
    score_bins: int = Field(
        200,
        ge=2,
        description="score bins (edges at calibration score quantiles): the thresholds' resolution; "
        "the histogram has splits x buckets x bins rows, which is all the driver ever receives",
    )
    quantile_accuracy: int = Field(
        10_000,
        ge=1,
        description="percentile_approx accuracy (relative error 1/accuracy) of the bucket and bin "
        "edges; edges only need to be reproducible, not exact quantiles",
    )
    target_precision: float = Field(
        0.8, gt=0, lt=1, description="precision the accepted scores must reach"
    )
    delta: float = Field(
        0.1,
        gt=0,
        lt=1,
        description="allowed probability that the certified rule's precision on fresh data is "
        "below target (family-wise, over the whole scan of cutoffs)",
    )
    interval_level: float = Field(
        0.95,
        gt=0,
        lt=1,
        description="two-sided Clopper-Pearson level of the reported precision/recall intervals",
    )
    calibration_fraction: float = Field(0.5, gt=0, lt=1, description="share of rows to fit")
    selection_fraction: float = Field(
        0.25, gt=0, lt=1, description="share of rows to certify the cutoff; the rest evaluates"
    )
    sequence_start: Literal["calibration_best", "strictest"] = Field(
        "calibration_best",
        description="where fixed-sequence testing starts: at the strictest candidate, or at the "
        "candidate the calibration split predicts is easiest to certify (both chosen without the "
        "selection split, so both keep the guarantee; the second does not stall on tiny strict "
        "candidates)",
    )
    seed: int = Field(7, ge=0, description="seed of the split hash")
    max_invalid_ratio: float = Field(
        0.0,
        ge=0,
        le=1,
        description="share of rows with a null/NaN/infinite score or uncertainty, or a label not "
        "0/1, that is tolerated: they are then excluded and counted by reason; above it the fit "
        "fails with the counts",
    )

    @model_validator(mode="after")
    def _splits_leave_evaluation(self) -> ThresholdSettings:
        if self.calibration_fraction + self.selection_fraction >= 1:
            raise ValueError(
                "thresholds.calibration_fraction + thresholds.selection_fraction must be < 1 "
                "(the rest is the evaluation split)"
            )
        return self

    @property
    def evaluation_fraction(self) -> float:
        """The share of rows left for evaluation."""
        return 1.0 - self.calibration_fraction - self.selection_fraction
