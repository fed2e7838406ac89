"""BLADE's training step at catalogue scale: 10k, 100k and 1M products, dense and sparse ID rows.

    .venv/bin/python bench/blade_scale.py [--sizes 10000,100000,1000000] [--edges-per-node 10]
        [--steps 15] [--row-updates dense,auto] [--profile 1000000]

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


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--edges-per-node", type=int, default=10)
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--row-updates", default="dense,auto")
    ap.add_argument("--profile", type=int, default=0, help="products to profile (no table)")
    args = ap.parse_args()
    context = mp.get_context("spawn")
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
