"""Settings of the link-score uncertainty (``link_uncertainty:``); the link thresholds are a
``ThresholdSettings`` section of their own (``link_thresholds:``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from recbatch.config import _Section


class LinkUncertaintySettings(_Section):
    """How a BLADE link score gets its uncertainty, and which labelled pairs calibrate it.

    The classifier thresholded is "is v a real related product of u": each held-out edge
    (u, v) is a positive and ``negatives_per_edge`` sampled targets w of the same source with
    (u, w) an edge in no split are negatives. That ratio sets what precision means: with r
    negatives per edge the base rate is 1 / (1 + r), and a precision target is a share of
    accepted pairs that are real edges *at that ratio* (the report says it).
    """

    method: Literal["mc_dropout", "heads"] = Field(
        "mc_dropout",
        description="mc_dropout: members are Monte-Carlo dropout draws of the GNN channels "
        "(needs blade.dropout > 0); heads: bootstrap heads, diagonal bilinear scorers on the "
        "composite vectors fitted on bootstrap resamples of training pairs",
    )
    members: int = Field(16, ge=2, description="MC-dropout draws of every node's vectors")
    heads: int = Field(8, ge=2, description="bootstrap heads (method heads)")
    negatives_per_edge: int = Field(
        10, ge=1, description="sampled non-edge targets per held-out edge in the labelled pairs"
    )
    splits: list[Literal["val", "test"]] = Field(
        default_factory=lambda: ["val", "test"],
        description="held-out edges of graph_edges that become labelled pairs",
    )
    fit_edges: int = Field(
        50_000,
        ge=100,
        description="training edges sampled (with their negatives) to fit the calibration and "
        "the heads: the only pairs that reach the driver, a bounded sample",
    )
    fit_steps: int = Field(300, ge=1, description="full-batch Adam steps of each head fit")
    seed: int = Field(13, ge=0)
