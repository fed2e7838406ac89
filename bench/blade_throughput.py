"""BLADE throughput: training edges/s, the Petastorm loader alone, and top-K against the matmul peak.

    .venv/bin/python bench/blade_throughput.py [--nodes 100000] [--edges 1000000] [--dim 64]
        [--epochs 2] [--batch-size 1024] [--topk-sources 20000] [--k 50] [--spark]
        [--work-dir DIR] [--top-k-only] [--target-block-rows N]

Inputs are synthetic, written as the stages write them (Parquet with the samples layout of
``recbatch.graph.samples`` and the training-edge columns of ``recbatch.blade.data``): ``--edges``
edges with Zipf-distributed targets over ``--nodes`` nodes, and samples of 2 hops x 20 slots with
the real neighbours of each node (out-neighbours as source, in-neighbours as target; hop 2 left
for what hop 1 did not fill). Printed:

1. **loader alone**: edges/s of ``edge_batches`` over one shard (what a rank reads), no model;
2. **training**: edges/s of ``train_blade`` in one process (this is what a step consumes), and
   the ratio loader / training (goal >= 3: the loader is never the bottleneck);
3. **top-K**: the machine's float32 matmul GFLOP/s measured on the top-K's own shapes
   (``[block_rows, d] x [d, n]``), then ``TopK`` pairs/s over ``--topk-sources`` sources
   against all nodes, its effective GFLOP/s (2 d flops per pair) and the share of the matmul rate
   (goal >= 50%); with ``--spark``, ``top_k_recommendations`` end to end on local Spark (the
   target blocks written, then read by the tasks; ``--target-block-rows`` sets their size).

Wall clock on this (shared) machine; the load average is printed beside each figure.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from recbatch.blade.data import edge_batches, edge_dataset  # noqa: E402
from recbatch.blade.recommend import TopK  # noqa: E402
from recbatch.blade.settings import BladeSettings  # noqa: E402
from recbatch.blade.train import TrainJob, train_blade  # noqa: E402

WIDTH, HOPS = 20, 2


def load() -> str:
    return f"load {os.getloadavg()[0]:.1f}"


def synthetic_edges(nodes: int, edges: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    src = rng.integers(0, nodes, size=int(edges * 1.2))
    ranks = np.minimum(rng.zipf(1.8, size=len(src)) - 1, nodes - 1)
    dst = (ranks * 2_654_435_761 + 12345) % nodes
    pairs = np.unique(np.stack([src, dst], 1)[src != dst], axis=0)
    return pairs[rng.permutation(len(pairs))[:edges]]


def write_edges(pairs: np.ndarray, folder: Path, files: int = 8) -> None:
    folder.mkdir(parents=True)
    for part, rows in enumerate(np.array_split(np.arange(len(pairs)), files)):
        table = pa.table(
            {
                "src_index": pairs[rows, 0].astype(np.int64),
                "dst_index": pairs[rows, 1].astype(np.int64),
                "weight": np.ones(len(rows), np.float32),
                "one_way": np.ones(len(rows), bool),
            }
        )
        pq.write_table(table, folder / f"part-{part}.parquet")


def role_slots(pairs: np.ndarray, nodes: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per role (source: out-neighbours, target: in-neighbours), every node's sample slots
    (hop 1: its first WIDTH neighbours, hop 2 empty, -1 where empty) and its degree."""
    roles = []
    for key, other in ((0, 1), (1, 0)):
        order = np.lexsort((pairs[:, other], pairs[:, key]))
        keys, nbrs = pairs[order, key], pairs[order, other]
        starts = np.searchsorted(keys, np.arange(nodes))
        position = np.arange(len(keys)) - starts[keys]
        keep = position < WIDTH
        slots = np.full((nodes, HOPS * WIDTH), -1, dtype=np.int64)
        slots[keys[keep], position[keep]] = nbrs[keep]
        roles.append((slots, np.bincount(keys, minlength=nodes).astype(np.int64)))
    return roles


def write_samples(pairs: np.ndarray, nodes: int, folder: Path, files: int = 8) -> None:
    """The samples of ``role_slots`` as the samples stage writes them."""
    folder.mkdir(parents=True)
    frames = [
        pd.DataFrame(
            {
                "role_id": role_id,
                "node_index": np.arange(nodes),
                "degree": degree,
                "neighbour_index": list(slots),
                "neighbour_mask": list(slots >= 0),
            }
        )
        for role_id, (slots, degree) in enumerate(role_slots(pairs, nodes))
    ]
    frame = pd.concat(frames, ignore_index=True)
    for part, rows in enumerate(np.array_split(np.arange(len(frame)), files)):
        pq.write_table(
            pa.Table.from_pandas(frame.iloc[rows].reset_index(drop=True)),
            folder / f"part-{part}.parquet",
        )


def bench_loader(edges_path: str, batch_size: int) -> float:
    dataset = edge_dataset(edges_path, batch_size=batch_size, shard=0, shard_count=1, seed=0)
    rows, start = 0, time.monotonic()
    for batch in edge_batches(dataset, 0):
        rows += len(batch)
    return rows / (time.monotonic() - start)


def matmul_gflops(block: int, dim: int, n: int, repeats: int = 5) -> float:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(block, dim)).astype(np.float32)
    b = rng.normal(size=(n, dim)).astype(np.float32)
    a @ b.T  # warm-up
    start = time.monotonic()
    for _ in range(repeats):
        a @ b.T
    return 2 * block * dim * n * repeats / (time.monotonic() - start) / 1e9


def bench_top_k(nodes: int, dim: int, sources: int, k: int, block: int) -> tuple[float, float]:
    """Pairs/s and effective GFLOP/s of one ``TopK`` over ``sources`` in blocks, as a Spark
    partition of ``top_k_recommendations`` runs it (one target matrix, one reused buffer)."""
    rng = np.random.default_rng(1)
    targets = rng.normal(size=(nodes, dim)).astype(np.float32)
    queries = rng.normal(size=(sources, dim)).astype(np.float32)
    start = time.monotonic()
    top_k = TopK(targets, k, block_rows=block)
    for first in range(0, sources, block):
        top_k(queries[first : first + block], np.arange(first, min(first + block, sources)))
    seconds = time.monotonic() - start
    pairs = sources * nodes / seconds
    return pairs, pairs * 2 * dim / 1e9


def bench_spark_top_k(
    nodes: int, dim: int, k: int, block: int, target_block_rows: int | None = None
) -> float:
    from recbatch.blade.recommend import top_k_recommendations
    from recbatch.config import load_config
    from recbatch.session import build_session

    cfg = load_config(ROOT / "conf" / "local.yaml", ["spark.driver_memory=6g"])
    spark = build_session(cfg)
    rng = np.random.default_rng(2)
    frame = pd.DataFrame(
        {
            "node_index": np.arange(nodes),
            "source": list(rng.normal(size=(nodes, dim)).astype(np.float32)),
            "target": list(rng.normal(size=(nodes, dim)).astype(np.float32)),
        }
    )
    embeddings = spark.createDataFrame(
        frame, "node_index long, source array<float>, target array<float>"
    )
    embeddings = embeddings.localCheckpoint()
    start = time.monotonic()
    settings = cfg.recommendations.model_copy(
        update={
            "block_rows": block,
            "partitions": 4,
            "target_block_rows": target_block_rows or cfg.recommendations.target_block_rows,
        }
    )
    with tempfile.TemporaryDirectory() as blocks_path:
        top = top_k_recommendations(
            spark, embeddings, None, k=k, settings=settings, blocks_path=blocks_path
        )
        rows = top.count()
    seconds = time.monotonic() - start
    assert rows == nodes * k
    return nodes * nodes / seconds


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--nodes", type=int, default=100_000)
    ap.add_argument("--edges", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--topk-sources", type=int, default=20_000)
    ap.add_argument("--k", type=int, default=50)
    ap.add_argument("--block-rows", type=int, default=2048)
    ap.add_argument("--spark", action="store_true")
    ap.add_argument(
        "--target-block-rows",
        type=int,
        default=None,
        help="--spark: targets per block (default: recommendations.target_block_rows)",
    )
    ap.add_argument("--work-dir", default=None)
    ap.add_argument(
        "--top-k-only",
        action="store_true",
        help="only the matmul rate and the top-K (minutes instead of a training run)",
    )
    args = ap.parse_args()
    if args.top_k_only:
        report_top_k(args)
        return
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="blade_throughput_"))
    try:
        pairs = synthetic_edges(args.nodes, args.edges)
        write_edges(pairs, work / "edges")
        write_samples(pairs, args.nodes, work / "samples")
        print(f"graph: {args.nodes} nodes, {len(pairs)} edges; samples {HOPS} x {WIDTH} slots")
        loader = bench_loader(str(work / "edges"), args.batch_size)
        print(f"loader alone: {loader:,.0f} edges/s ({load()})", flush=True)
        settings = BladeSettings(
            dim=args.dim,
            epochs=args.epochs,
            batch_size=args.batch_size,
            num_processes=1,
            dropout=0.3,
        )
        job = TrainJob(
            str(work / "samples"),
            str(work / "edges"),
            str(work / "ckpt"),
            str(work / "emb"),
            args.nodes,
            HOPS,
            settings,
            "bench",
        )
        result = train_blade(job)
        train_rate = float(np.mean([e["rows_per_s"] for e in result["epochs"]]))
        print(
            f"training (1 process, dim {args.dim}, batch {args.batch_size}, "
            f"{settings.negatives} negatives): {train_rate:,.0f} edges/s ({load()})"
        )
        print(f"loader / training: {loader / train_rate:.1f}x (goal >= 3x)", flush=True)
        report_top_k(args)
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)


def report_top_k(args: argparse.Namespace) -> None:
    """The matmul rate on the top-K's shapes, measured just before the top-K itself (so both
    see the same machine load), then the top-K against it; with ``--spark`` the Spark path."""
    peak = matmul_gflops(args.block_rows, args.dim, args.nodes)
    pairs_s, effective = bench_top_k(
        args.nodes, args.dim, args.topk_sources, args.k, args.block_rows
    )
    print(f"matmul [{args.block_rows}x{args.dim}] x [{args.dim}x{args.nodes}]: {peak:.1f} GFLOP/s")
    print(
        f"top-{args.k} (numpy blocks): {pairs_s / 1e6:,.1f}M pairs/s = {effective:.1f} GFLOP/s, "
        f"{effective / peak:.0%} of the matmul rate (goal >= 50%) ({load()})",
        flush=True,
    )
    if args.spark:
        n = min(args.nodes, 50_000)
        rate = bench_spark_top_k(n, args.dim, args.k, args.block_rows, args.target_block_rows)
        blocks = -(-n // (args.target_block_rows or n))
        print(
            f"top-{args.k} on local Spark ({n} x {n} pairs, 4 tasks, {blocks} target block(s)): "
            f"{rate / 1e6:,.1f}M pairs/s "
            f"= {rate * 2 * args.dim / 1e9:.1f} GFLOP/s ({load()})"
        )


if __name__ == "__main__":
    main()
