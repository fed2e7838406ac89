"""The (uncertainty bucket x score bin) histograms everything on the driver works from.

Why histograms: the optimisation only needs, per bucket and score bin, how many positives and
negatives there are. Those counts are the sufficient statistic of every threshold whose cut falls on
a bin edge, so the rows stay in Spark and the driver receives ``splits x buckets x bins`` numbers.

Bins are half-open ``[edge_j, edge_{j+1})`` with ``-inf`` and ``+inf`` at the ends: bin ``j`` holds
the scores with exactly ``j`` internal edges ``<= score``. Accepting bins ``>= c`` of a bucket is
therefore the same as accepting ``score >= edge_c``, which is how a stored threshold is applied.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SPLITS = ("calibration", "selection", "evaluation")


@dataclass(frozen=True)
class Histogram:
    """Positives and negatives per (bucket, score bin) of one split, shape ``(buckets, bins)``."""

    positives: np.ndarray
    negatives: np.ndarray
    score_sum: np.ndarray | None = None
    """Sum of the scores per cell (reliability plots); None for hand-made histograms."""

    def __post_init__(self) -> None:
        pos = np.asarray(self.positives, dtype=np.int64)
        neg = np.asarray(self.negatives, dtype=np.int64)
        if pos.ndim != 2 or pos.shape != neg.shape:
            raise ValueError(f"positives {pos.shape} and negatives {neg.shape} must be equal 2-D")
        if (pos < 0).any() or (neg < 0).any():
            raise ValueError("histogram counts must be non-negative")
        object.__setattr__(self, "positives", pos)
        object.__setattr__(self, "negatives", neg)

    @property
    def n_buckets(self) -> int:
        return self.positives.shape[0]

    @property
    def n_bins(self) -> int:
        return self.positives.shape[1]

    @property
    def rows(self) -> np.ndarray:
        return self.positives + self.negatives

    def tails(self) -> tuple[np.ndarray, np.ndarray]:
        """``(tp, n)`` of shape ``(buckets, bins + 1)``: positives and rows in bins ``>= c``.

        Column ``bins`` (past the last bin) is 0: the cut that accepts nothing.
        """
        zeros = np.zeros((self.n_buckets, 1), dtype=np.int64)
        tp = np.hstack([np.cumsum(self.positives[:, ::-1], axis=1)[:, ::-1], zeros])
        n = np.hstack([np.cumsum(self.rows[:, ::-1], axis=1)[:, ::-1], zeros])
        return tp, n

    def counts_at(self, cut_bins: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """True positives and accepted rows of cut vectors ``cut_bins`` (``(..., buckets)``),
        summed over buckets; a cut of ``bins`` accepts nothing in that bucket."""
        cut_bins = np.asarray(cut_bins, dtype=np.int64)
        tp_tail, n_tail = self.tails()
        rows = np.arange(self.n_buckets)
        return tp_tail[rows, cut_bins].sum(axis=-1), n_tail[rows, cut_bins].sum(axis=-1)

    def merge_buckets(self, groups: list[list[int]]) -> Histogram:
        """Sum the rows of each group of buckets (groups of adjacent bucket indices)."""

        def merged(values: np.ndarray | None) -> np.ndarray | None:
            if values is None:
                return None
            return np.stack([values[g].sum(axis=0) for g in groups])

        return Histogram(merged(self.positives), merged(self.negatives), merged(self.score_sum))

    def pooled(self) -> Histogram:
        """All buckets as one: the histogram of the single-threshold baseline."""
        return self.merge_buckets([list(range(self.n_buckets))])


@dataclass(frozen=True)
class SplitHistograms:
    """The three splits' histograms on one bucket and bin structure, and what was excluded."""

    score_edges: np.ndarray
    """Internal score bin edges, strictly increasing; ``len(score_edges) + 1`` bins."""
    uncertainty_edges: np.ndarray
    """Internal edges of the (merged) uncertainty buckets; ``len + 1`` buckets."""
    calibration: Histogram
    selection: Histogram
    evaluation: Histogram
    invalid: dict[str, int] = field(default_factory=dict)
    """Rows excluded, by reason (``missing_score``, ``bad_label``, ...)."""
    rows: int = 0
    """All rows read, valid or not."""

    def __post_init__(self) -> None:
        shapes = {h.positives.shape for h in (self.calibration, self.selection, self.evaluation)}
        expected = (len(self.uncertainty_edges) + 1, len(self.score_edges) + 1)
        if shapes != {expected}:
            raise ValueError(f"histogram shapes {shapes} do not match the edges {expected}")

    def split(self, name: str) -> Histogram:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {SPLITS}")
        return getattr(self, name)

    def pooled(self) -> SplitHistograms:
        """The same rows with one uncertainty bucket (the raw-score baseline)."""
        return SplitHistograms(
            self.score_edges,
            np.array([], dtype=float),
            self.calibration.pooled(),
            self.selection.pooled(),
            self.evaluation.pooled(),
            dict(self.invalid),
            self.rows,
        )


def merge_small_buckets(support: np.ndarray, min_support: int) -> list[list[int]]:
    """Groups of adjacent buckets such that each group has ``min_support`` rows (if the total does).

    Repeatedly merges the smallest bucket into its smaller neighbour: a deterministic rule that
    keeps the well-supported buckets apart and never merges more than needed.
    """
    groups = [[i] for i in range(len(support))]
    sizes = [int(s) for s in support]
    while len(groups) > 1 and min(sizes) < min_support:
        i = int(np.argmin(sizes))
        if i == 0:
            j = 1
        elif i == len(groups) - 1:
            j = i - 1
        else:
            j = i - 1 if sizes[i - 1] <= sizes[i + 1] else i + 1
        lo, hi = min(i, j), max(i, j)
        groups[lo : hi + 1] = [groups[lo] + groups[hi]]
        sizes[lo : hi + 1] = [sizes[lo] + sizes[hi]]
    return groups


def merged_edges(edges: np.ndarray, groups: list[list[int]]) -> np.ndarray:
    """The internal edges that remain between groups of adjacent buckets."""
    return np.asarray([edges[g[-1]] for g in groups[:-1]], dtype=float)
