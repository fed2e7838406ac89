"""How far a held-out edge's target lies from its source, and what that leaves to win there.

    .venv/bin/python bench/blade_reach.py --split var/bench/blade/splits/cora_ml/seed0 \\
        [--export blade=PATH --export fixed_fanout=PATH ...] [--max-hops 4] [--gain-over fixed_fanout]

Why: the BLADE issue asks degree-aware samples to beat a fixed fan-out by 10% relative Hits@100 on
the low-degree bucket. A sampler can only help a source with what lies within its reach, so this
prints, per degree bucket of the source (the referee's buckets: train out-degree cut-offs in the
split's meta.json), the share of test targets within 1..H hops of the source in the *undirected*
training graph, and each scorer's Hits@100 among the targets at each distance:

* every ``--export`` (the referee's ``node, source, target`` Parquet; score = source . target),
* ``popularity`` (train in-degree of the target: what no path is needed for), and
* ``ppr``: personalised PageRank on the undirected training graph (restart 0.15), a path-counting
  heuristic with no sampling at all: how much of a bucket proximity alone can reach.

Ranks follow the referee's protocol (each test edge among its own sampled targets of the same
source, ties at their expected rank), so an export's bucket figures equal the referee's. With
``--gain-over V`` it prints the low bucket's Hits@100 that +10% over V means and an optimistic bound
on what any scorer gets there: every target within ``--max-hops`` a hit, the rest at the best rate
any scorer reaches on them. Reads the split's files only (the referee is never imported); numpy and
scipy, no Spark: the dev graphs have a few thousand nodes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

K = 100
BUCKETS = ("low", "mid", "high")


def load_split(folder: Path) -> dict:
    """Training adjacency, test edges, their negatives and the buckets of their sources."""
    meta = json.loads((folder / "meta.json").read_text())
    n = meta["num_nodes"]
    train = pd.read_csv(folder / "train.tsv", sep="\t")
    test = pd.read_csv(folder / "test.tsv", sep="\t")
    adjacency = sp.csr_matrix(
        (np.ones(len(train)), (train["src"].to_numpy(), train["dst"].to_numpy())), shape=(n, n)
    )
    adjacency.data[:] = 1.0
    out_degree = np.asarray(adjacency.sum(1)).ravel()
    low_cut, mid_cut = meta["bucket_cutoffs_train_outdeg"]
    src, dst = test["src"].to_numpy(), test["dst"].to_numpy()
    degree = out_degree[src]
    bucket = np.where(degree <= low_cut, 0, np.where(degree <= mid_cut, 1, 2))
    return {
        "n": n,
        "adjacency": adjacency,
        "src": src,
        "dst": dst,
        "negatives": np.load(folder / "test_neg.npy"),
        "bucket": bucket,
    }


def undirected(adjacency: sp.csr_matrix) -> sp.csr_matrix:
    """The training graph with every edge both ways, unweighted (reach ignores direction)."""
    return ((adjacency + adjacency.T) > 0).astype(np.float64).tocsr()


def hop_distance(
    adjacency: sp.csr_matrix, src: np.ndarray, dst: np.ndarray, hops: int
) -> np.ndarray:
    """Undirected distance from each source to its target, capped at ``hops + 1`` (beyond)."""
    both_ways = undirected(adjacency)
    sources, where = np.unique(src, return_inverse=True)
    frontier = sp.csr_matrix(
        (np.ones(len(sources)), (np.arange(len(sources)), sources)),
        shape=(len(sources), both_ways.shape[0]),
    )
    reached = frontier.copy()
    distance = np.full(len(src), hops + 1)
    for h in range(1, hops + 1):
        frontier = frontier @ both_ways
        frontier.data[:] = 1.0
        reached = reached + frontier
        reached.data[:] = 1.0
        hit = np.asarray(reached[where, dst]).ravel() > 0
        distance = np.where((distance > hops) & hit, h, distance)
    return distance


def personalised_pagerank(
    adjacency: sp.csr_matrix, sources: np.ndarray, restart: float = 0.15
) -> np.ndarray:
    """PPR vectors of ``sources`` on the undirected graph ([sources, nodes]), 30 power steps."""
    both_ways = undirected(adjacency)
    degree = np.maximum(np.asarray(both_ways.sum(1)).ravel(), 1.0)
    step = sp.diags(1.0 / degree) @ both_ways  # row-stochastic
    start = np.zeros((len(sources), adjacency.shape[0]))
    start[np.arange(len(sources)), sources] = 1.0
    x = start.copy()
    for _ in range(30):
        x = (1.0 - restart) * (step.T @ x.T).T + restart * start
    return x


def hits_at_k(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """Per edge, the referee's expected Hits@K (ties at their expected rank)."""
    greater = (neg > pos[:, None]).sum(1)
    ties = (neg == pos[:, None]).sum(1)
    return np.clip((K - greater) / (ties + 1.0), 0.0, 1.0)


def export_scores(path: str, n: int, src: np.ndarray, dst: np.ndarray, neg: np.ndarray):
    """(positive, negative) scores, source_u . target_v, from a referee export.

    The negatives are scored a few hundred edges at a time: gathering every negative's target
    vector at once would take [edges, 1000, d] floats (24 GB for wiki_vote's test edges)."""
    table = pd.read_parquet(path)
    source = np.zeros((n, len(table["source"].iloc[0])))
    target = np.zeros_like(source)
    nodes = table["node"].to_numpy().astype(np.int64)
    source[nodes] = np.stack(table["source"].to_numpy())
    target[nodes] = np.stack(table["target"].to_numpy())
    positive = np.einsum("ed,ed->e", source[src], target[dst])
    negative = np.empty(neg.shape)
    for start in range(0, len(src), 256):
        rows = slice(start, start + 256)
        negative[rows] = np.einsum("ed,ekd->ek", source[src[rows]], target[neg[rows]])
    return positive, negative


def per_edge_hits(split: dict, exports: dict[str, str]) -> dict[str, np.ndarray]:
    """Hits@K of every test edge for each scorer."""
    src, dst, neg = split["src"], split["dst"], split["negatives"]
    in_degree = np.asarray(split["adjacency"].sum(0)).ravel()
    sources, where = np.unique(src, return_inverse=True)
    ppr = personalised_pagerank(split["adjacency"], sources)
    # a whisker of popularity breaks the many exact zeros of far targets
    ppr_score = ppr + 1e-12 * in_degree[None, :]
    scores = {
        "popularity": (in_degree[dst], in_degree[neg]),
        "ppr": (ppr_score[where, dst], ppr_score[where[:, None], neg]),
    }
    for name, path in exports.items():
        scores[name] = export_scores(path, split["n"], src, dst, neg)
    return {name: hits_at_k(pos, negs) for name, (pos, negs) in scores.items()}


def _hops_label(first: int, last: int) -> str:
    return f"{first} hops" if first == last else f"{first}..{last} hops"


def _mean_and_count(values: np.ndarray, rows: np.ndarray) -> str:
    return f"{values[rows].mean():.3f} ({int(rows.sum())})" if rows.any() else "- (0)"


def report(split: dict, hits: dict[str, np.ndarray], max_hops: int, gain_over: str | None) -> None:
    distance = hop_distance(split["adjacency"], split["src"], split["dst"], max_hops)
    bands = [
        ("<= 2 hops", distance <= 2),
        (_hops_label(3, max_hops), (distance > 2) & (distance <= max_hops)),
        (f"> {max_hops} hops", distance > max_hops),
    ]
    within = " / ".join(str(h) for h in range(1, max_hops + 1))
    print(
        f"| bucket | edges | within {within} hops | scorer | H@100 | "
        + " | ".join(f"H@100 at {b} (edges)" for b, _ in bands)
        + " |"
    )
    print("|---|---|---|---|---|" + "---|" * len(bands))
    for b, name in enumerate(BUCKETS):
        rows = split["bucket"] == b
        reach = " / ".join(f"{(distance[rows] <= h).mean():.3f}" for h in range(1, max_hops + 1))
        for scorer, values in hits.items():
            at = " | ".join(_mean_and_count(values, rows & band) for _, band in bands)
            print(
                f"| {name} | {int(rows.sum())} | {reach} | {scorer} | {values[rows].mean():.3f} | {at} |"
            )
    if gain_over is None:
        return
    low = split["bucket"] == 0
    far = low & (distance > max_hops)
    needed = 1.10 * hits[gain_over][low].mean()
    best_far = max(values[far].mean() for values in hits.values()) if far.any() else 0.0
    bound = ((low & ~far).sum() + best_far * far.sum()) / low.sum()
    print(
        f"\nlow bucket: +10% over {gain_over} needs Hits@100 {needed:.3f}; every target within "
        f"{max_hops} hops a hit and the {int(far.sum())} farther ones at the best rate any scorer "
        f"gets on them ({best_far:.3f}) gives {bound:.3f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--split", required=True, type=Path)
    ap.add_argument("--export", action="append", default=[], help="NAME=PATH of a referee export")
    ap.add_argument("--max-hops", type=int, default=4)
    ap.add_argument("--gain-over", default=None, help="an --export NAME: the fixed fan-out variant")
    args = ap.parse_args()
    if args.max_hops < 3:
        ap.error("--max-hops must be at least 3 (the bands are <= 2, 3..H and > H hops)")
    exports = dict(item.split("=", 1) for item in args.export)
    if args.gain_over is not None and args.gain_over not in exports:
        ap.error(f"--gain-over {args.gain_over} is not among the --export names")
    split = load_split(args.split)
    report(split, per_edge_hits(split, exports), args.max_hops, args.gain_over)


if __name__ == "__main__":
    main()
