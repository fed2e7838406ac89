"""The degree law k(d) and the neighbour probabilities of the sampler (sampling settings).

Why the budget falls with degree (BLADE, WSDM 2023): a hub's few sampled neighbours already say
much about it, while a node with one or two links needs a larger, farther-reaching neighbourhood
to get any signal at all. Why the default probability is the inverse of the neighbour's degree:
a uniform draw from a node's neighbours mostly returns the same few hubs, which every node then
shares; down-weighting them keeps neighbourhoods specific to the node.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from recbatch.graph.errors import GraphError
from recbatch.graph.settings import SamplingSettings
from recbatch.graph.stats import PowerLawFit

SOURCE, TARGET = "source", "target"
ROLES = (SOURCE, TARGET)
"""A node samples as a source along out-edges (u -> v: v is a target of u), as a target along
in-edges (w -> u: w is a source of u)."""


@dataclass(frozen=True)
class DegreeLaw:
    """k(d) = k_min + (k_max - k_min) * max(d, 1)^(-exponent), rounded; constant when exponent 0."""

    k_min: int
    k_max: int
    exponent: float

    def budget(self, degree: Column) -> Column:
        """The budget of each row's node from its degree in the role's direction (int)."""
        if self.exponent == 0:
            return F.lit(self.k_max)
        d = F.greatest(degree.cast("double"), F.lit(1.0))
        k = F.lit(float(self.k_min)) + F.lit(float(self.k_max - self.k_min)) * F.pow(
            d, F.lit(-self.exponent)
        )
        return F.round(k).cast("int")

    def value(self, degree: int) -> int:
        """The same law in Python (reports, the degree-law table)."""
        if self.exponent == 0:
            return self.k_max
        k = self.k_min + (self.k_max - self.k_min) * max(degree, 1) ** (-self.exponent)
        return int(k + 0.5)  # Spark's round() is half-up


def degree_law(settings: SamplingSettings, fit: PowerLawFit | None) -> DegreeLaw:
    """The law of one role: constant, a given exponent, or alpha - 1 of that role's degree fit."""
    if settings.law == "constant":
        if settings.constant_k == "mean_budget":
            raise GraphError(
                "sampling.constant_k=mean_budget depends on the graph's degrees: resolve it "
                "with equal_cost_law"
            )
        k = settings.constant_k or settings.k_max
        return DegreeLaw(k, k, 0.0)
    if settings.exponent == "fitted":
        if fit is None:
            raise GraphError(
                "sampling.exponent=fitted needs a power-law fit of the degrees, but the graph's "
                "degree tail is too small to fit; set sampling.exponent to a number"
            )
        return DegreeLaw(settings.k_min, settings.k_max, fitted_exponent(fit))
    return DegreeLaw(settings.k_min, settings.k_max, float(settings.exponent))


def fitted_exponent(fit: PowerLawFit) -> float:
    """1 / (alpha - 1), capped at 1: the budget falls as d^(-1/(alpha-1)).

    BLADE's exact size law is not public; this ties it to the degree tail. In a power-law graph
    the largest degree grows like N^(1/(alpha-1)), so this exponent makes the budget of the
    biggest hub shrink like N^(-1/(alpha-1)^2): a heavy tail (alpha near 2, many hubs) gives a
    steep law (about 1/d), a light tail (alpha large, hubs rare) a flat one.
    """
    return min(1.0, 1.0 / max(fit.alpha - 1.0, 1e-9))


def neighbour_weight(settings: SamplingSettings, edge_weight: Column, nbr_degree: Column) -> Column:
    """Unnormalised draw weight of a neighbour (> 0): edge weight, 1 / its degree, or 1."""
    if settings.probability == "weight":
        return edge_weight.cast("double")
    if settings.probability == "inverse_degree":
        return F.lit(1.0) / F.greatest(nbr_degree.cast("double"), F.lit(1.0))
    return F.lit(1.0)


def equal_cost_law(power: DegreeLaw, degrees: DataFrame, degree: str) -> DegreeLaw:
    """The constant law whose fan-out is the mean budget of ``power`` over ``degrees`` (every
    node's ``degree`` in the role's direction): a fixed fan-out that spends the same number of
    sampled slots per hop as the degree-aware law, so that the two differ only in how they
    spread them (BLADE's claim is a redistribution, not a larger sample)."""
    mean = degrees.agg(F.avg(power.budget(F.col(degree)))).head()[0]
    k = max(1, int(round(float(mean or power.k_max))))
    return DegreeLaw(k, k, 0.0)
