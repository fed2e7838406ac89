"""BLADE's training step at catalogue scale: 10k, 100k and 1M products, dense and sparse ID rows.

    .venv/bin/python bench/blade_scale.py [--sizes 10000,100000,1000000] [--edges-per-node 10]
        [--steps 15] [--row-updates dense,auto] [--profile 1000000]
        [--top-k [--top-k-sources 2000] [--probes 8,16,32,64]] [--sampling]

For each size, a heavy-tailed graph of about ``--edges-per-node`` edges a product
(``blade_throughput.synthetic_edges``: Zipf targets) and its samples' tensors, built in memory
as ``recbatch.blade.data.load_graph_samples`` returns them (hop 1: the first 20 neighbours of
each role). Then, in a fresh process per (size, mode) so its peak memory is its own, the
production step on the default settings: each channel of the composite (``existence``: single
embedding, ``direction``: directional; ``recbatch.blade.compose.channel_changes``) runs
``--steps`` steps of ``recbatch.blade.train.batch_loss`` and ``RowwiseAdam`` on random
training edges, timed after 3 warm-up steps. ``--row-updates``: ``dense`` (Adam over every ID
row each step, as before ``blade.row_updates``) and ``auto`` (what the blade stage picks:
sparse where the table has more rows than a step can read).

Printed per size and mode: milliseconds a step in forward, backward and the optimizer (both
channels), training edges/s, the rate relative to the smallest size (issue goal at 1M: >= 50%),
one epoch's time extrapolated (edges / rate; an epoch at 1M is hours on 2 cores, so it is not
run), and the process's peak RSS. One process, one thread per process (as a DDP rank runs);
the load average is printed beside each row.

``--top-k``: instead of the training table, top-K at each size. The vectors are generated with
the structure a catalogue's embeddings have: products in communities of about 1,000 (a centre
each, plus noise), norms log-normal (popular products score higher everywhere); d = 64. The
targets are stored as ``recommendations.target_block_rows`` blocks (``recbatch.blade.
target_blocks``) and a sample of ``--top-k-sources`` sources is ranked by
``recbatch.blade.recommend.blocked_top_k`` (the code one Spark task runs; one thread), exactly
and through the blocks' IVF indexes at each of ``--probes``. Printed: the IVF build time, each
search's milliseconds per source, the whole catalogue's time on 2 cores extrapolated from the
sample (the work is linear in sources: every source is ranked against every block) with the
IVF build added, the speed-up of that time over exact and the recall of the exact top 50.

``--sampling``: the sampler's part of the scale table, at the same ``--sizes`` and
``--edges-per-node``: ``bench/sampling_scale.py`` (its own heavy-tailed generator in Spark, the
degree-aware and the fixed fan-out sampler, rows and write, peak memory, growth per 10x; see its
docstring) run from here without the PyG comparison.

``--profile N``: instead of the table, ``torch.profiler`` over ``--steps`` steps of both
channels at N products, once per ``--row-updates`` mode: the operators ranked by their own CPU
time (what dominated the step), and the share of the step in the forward, backward and
optimizer phases.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from blade_throughput import HOPS, role_slots, synthetic_edges  # noqa: E402

from recbatch.blade.compose import channel_changes  # noqa: E402
from recbatch.blade.data import EdgeBatch  # noqa: E402
from recbatch.blade.model import GraphSamples, NodeSamples  # noqa: E402
from recbatch.blade.settings import BladeSettings  # noqa: E402
from recbatch.blade.train import (  # noqa: E402
    RowwiseAdam,
    TrainJob,
    batch_loss,
    build_model,
    sparse_id_rows,
)

WARM_UP = 3


def samples_of(pairs: np.ndarray, nodes: int) -> GraphSamples:
    """Both roles' sample tensors of ``blade_throughput.role_slots``."""
    roles = []
    for slots, degree in role_slots(pairs, nodes):
        index = torch.from_numpy(slots)
        roles.append(NodeSamples(index, index >= 0, HOPS, torch.from_numpy(degree)))
    return GraphSamples(roles[0], roles[1])


def time_steps(
    settings: BladeSettings,
    samples: GraphSamples,
    pairs: np.ndarray,
    steps: int,
    on_step=None,
) -> tuple[np.ndarray, str]:
    """Mean seconds a step in (forward, backward, optimizer) of one GNN, and its row updates.

    ``on_step``: called after every step (the profiler's ``step``)."""
    torch.manual_seed(0)
    nodes = samples.num_nodes
    job = TrainJob("", "", "", "", nodes, HOPS, settings, "bench")
    model = build_model(job, sparse_id_rows(settings, torch.device("cpu"), samples))
    optimizer = RowwiseAdam(model, settings.learning_rate, settings.weight_decay)
    rng = np.random.default_rng(1)
    generator = torch.Generator().manual_seed(2)
    b = settings.batch_size
    timings = []
    for step in range(WARM_UP + steps):
        chosen = torch.from_numpy(pairs[rng.integers(0, len(pairs), b)])
        batch = EdgeBatch(chosen[:, 0], chosen[:, 1], torch.ones(b), torch.ones(b, dtype=bool))
        negatives = torch.randint(0, nodes, (b, settings.negatives), generator=generator)
        start = time.perf_counter()
        terms = batch_loss(model, samples, batch, negatives, settings)
        forward = time.perf_counter()
        optimizer.zero_grad()
        terms.total.backward()
        backward = time.perf_counter()
        optimizer.step()
        done = time.perf_counter()
        if step >= WARM_UP:
            timings.append((forward - start, backward - forward, done - backward))
        if on_step is not None:
            on_step()
    return np.mean(timings, axis=0), optimizer.mode


def measure(nodes: int, edges_per_node: int, steps: int, mode: str, out: mp.Queue) -> None:
    torch.set_num_threads(1)
    pairs = synthetic_edges(nodes, nodes * edges_per_node)
    samples = samples_of(pairs, nodes)
    base = BladeSettings(row_updates=mode)
    total = np.zeros(3)
    modes = []
    for changes in channel_changes(base).values():
        seconds, used = time_steps(base.model_copy(update=changes), samples, pairs, steps)
        total += seconds
        modes.append(used)
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    out.put((len(pairs), total, "/".join(sorted(set(modes))), peak_gib))


def profile(nodes: int, edges_per_node: int, steps: int, mode: str, out: mp.Queue) -> None:
    """``torch.profiler`` over both channels' steps (after the warm-up) at ``nodes`` products."""
    from torch.profiler import ProfilerActivity, schedule
    from torch.profiler import profile as torch_profile

    torch.set_num_threads(1)
    pairs = synthetic_edges(nodes, nodes * edges_per_node)
    samples = samples_of(pairs, nodes)
    base = BladeSettings(row_updates=mode)
    tables = []
    for channel, changes in channel_changes(base).items():
        plan = schedule(wait=0, warmup=WARM_UP, active=steps, repeat=1)
        ranked: list[str] = []

        def keep(done, into=ranked) -> None:
            into.append(done.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))

        with torch_profile(
            activities=[ProfilerActivity.CPU], schedule=plan, on_trace_ready=keep
        ) as prof:
            seconds, used = time_steps(
                base.model_copy(update=changes), samples, pairs, steps, on_step=prof.step
            )
        share = ", ".join(
            f"{name} {part / seconds.sum():.0%}"
            for name, part in zip(("forward", "backward", "optimizer"), seconds, strict=True)
        )
        table = ranked[0] if ranked else "(no profile)"
        tables.append(
            f"### {nodes:,} products, {mode} ({used}), channel {channel}: "
            f"{seconds.sum() * 1e3:.0f} ms a step ({share})\n```\n{table}```"
        )
    out.put("\n\n".join(tables))


def catalogue_vectors(nodes: int, dim: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(sources, targets) ``[nodes, dim]``: communities of ~1,000 products around a centre
    each, plus noise, with log-normal norms (see the module docstring)."""
    rng = np.random.default_rng(seed)
    communities = max(1, nodes // 1000)
    centres = rng.normal(size=(communities, dim)).astype(np.float32)
    member = rng.integers(0, communities, nodes)

    def vectors() -> np.ndarray:
        raw = centres[member] + 0.7 * rng.normal(size=(nodes, dim)).astype(np.float32)
        raw /= np.linalg.norm(raw, axis=1, keepdims=True)
        return (raw * rng.lognormal(0.0, 0.3, size=(nodes, 1))).astype(np.float32)

    return vectors(), vectors()


def measure_top_k(nodes: int, sample: int, probes: list[int], k: int, out: mp.Queue) -> None:
    """Exact and IVF top-K of ``sample`` sources against ``nodes`` targets in blocks."""
    import tempfile
    from dataclasses import replace

    from recbatch.blade.recommend import blocked_top_k
    from recbatch.blade.settings import RecommendationSettings
    from recbatch.blade.target_blocks import TargetBlocks, ivf_index, ivf_lists_for

    torch.set_num_threads(1)
    sources, targets = catalogue_vectors(nodes)
    chosen = np.random.default_rng(1).choice(nodes, min(sample, nodes), replace=False)
    queries, index = sources[chosen], chosen.astype(np.int64)
    settings = RecommendationSettings()
    rows_per_block = settings.target_block_rows
    results = []
    with tempfile.TemporaryDirectory() as folder:
        # One folder: each block's matrix (exact) and its index (ivf) side by side.
        exact_blocks = TargetBlocks(folder, nodes, targets.shape[1], rows_per_block)
        ivf_blocks = replace(exact_blocks, search="ivf")
        build = 0.0
        for block in range(exact_blocks.num_blocks):
            matrix = targets[block * rows_per_block : (block + 1) * rows_per_block]
            exact_blocks.write(block, matrix)
            start = time.perf_counter()
            ivf_blocks.write_index(block, ivf_index(matrix, settings.ivf_lists, block))
            build += time.perf_counter() - start
        start = time.perf_counter()
        exact, _ = blocked_top_k(exact_blocks, settings, k, queries, index)
        exact_s = time.perf_counter() - start
        results.append(("exact", exact_s, 1.0, 0.0))
        lists = ivf_lists_for(min(nodes, rows_per_block), settings.ivf_lists)
        for probe in probes:
            ivf_settings = settings.model_copy(update={"search": "ivf", "ivf_probes": probe})
            start = time.perf_counter()
            approx, _ = blocked_top_k(ivf_blocks, ivf_settings, k, queries, index)
            seconds = time.perf_counter() - start
            found = sum(
                len(np.intersect1d(a[a >= 0], e[e >= 0]))
                for a, e in zip(approx, exact, strict=True)
            )
            results.append((f"ivf {probe}/{lists} lists", seconds, found / exact.size, build))
    out.put((len(queries), exact_blocks.num_blocks, results))


def top_k_table(sizes: list[int], sample: int, probes: list[int], k: int) -> None:
    context = mp.get_context("spawn")
    print(
        "| products | blocks | search | ms / source | catalogue on 2 cores (extrapolated, "
        "with the IVF build) | speed-up | recall of exact top 50 | IVF build s | load |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for nodes in sizes:
        queue = context.Queue()
        worker = context.Process(target=measure_top_k, args=(nodes, sample, probes, k, queue))
        worker.start()
        queries, blocks, results = queue.get()
        worker.join()
        catalogue_exact = None
        for search, seconds, recall, build in results:
            per_source = seconds / queries
            # Both cores: sources split over tasks, one block's index built per task.
            catalogue = (per_source * nodes + build) / 2
            catalogue_exact = catalogue_exact or catalogue
            print(
                f"| {nodes:,} | {blocks} | {search} | {per_source * 1e3:.3f} "
                f"| {catalogue / 60:,.1f} min | {catalogue_exact / catalogue:.1f}x "
                f"| {recall:.3f} | {build:.1f} | {os.getloadavg()[0]:.1f} |",
                flush=True,
            )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--edges-per-node", type=int, default=10)
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--row-updates", default="dense,auto")
    ap.add_argument("--profile", type=int, default=0, help="products to profile (no table)")
    ap.add_argument("--top-k", action="store_true", help="the top-K table (no training)")
    ap.add_argument("--sampling", action="store_true", help="the sampling table (no training)")
    ap.add_argument("--top-k-sources", type=int, default=2000)
    ap.add_argument("--probes", default="8,16,32,64")
    args = ap.parse_args()
    context = mp.get_context("spawn")
    if args.sampling:
        import sampling_scale

        sampling_scale.main(
            ["--nodes", args.sizes, "--edges-per-node", str(args.edges_per_node), "--no-pyg"]
        )
        return
    if args.top_k:
        sizes = [int(x) for x in args.sizes.split(",")]
        probes = [int(x) for x in args.probes.split(",")]
        top_k_table(sizes, args.top_k_sources, probes, k=50)
        return
    if args.profile:
        for mode in args.row_updates.split(","):
            queue = context.Queue()
            worker = context.Process(
                target=profile, args=(args.profile, args.edges_per_node, args.steps, mode, queue)
            )
            worker.start()
            print(queue.get(), flush=True)
            worker.join()
        return
    batch = BladeSettings().batch_size
    print(
        "| products | edges | row updates | forward ms | backward ms | optimizer ms "
        "| edges/s | vs smallest | epoch (extrapolated) | peak RSS GiB | load |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for mode in args.row_updates.split(","):
        smallest = None
        for nodes in (int(x) for x in args.sizes.split(",")):
            queue = context.Queue()
            worker = context.Process(
                target=measure, args=(nodes, args.edges_per_node, args.steps, mode, queue)
            )
            worker.start()
            edges, seconds, used, peak = queue.get()
            worker.join()
            rate = batch / seconds.sum()
            smallest = smallest or rate
            epoch_s = edges / rate
            print(
                f"| {nodes:,} | {edges:,} | {mode} ({used}) | {seconds[0] * 1e3:.0f} "
                f"| {seconds[1] * 1e3:.0f} | {seconds[2] * 1e3:.0f} | {rate:,.0f} "
                f"| {rate / smallest:.0%} | {epoch_s / 60:,.1f} min | {peak:.1f} "
                f"| {os.getloadavg()[0]:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
