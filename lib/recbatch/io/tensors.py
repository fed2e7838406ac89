"""Feed Spark-written Parquet to torch through Petastorm, one disjoint shard per trainer.

Why Petastorm: features are written by Spark as plain Parquet and models are trained in torch.
``petastorm.make_batch_reader`` reads plain Parquet (no Petastorm metadata needed) one row group at
a time and shards *by row group*, so N trainers each read a disjoint part of the data with no
coordinator and no copy of the data set.

What this module adds on top of it:

* local paths become the ``file://`` URLs Petastorm insists on (it rejects scheme-less paths);
* sharding is deterministic and the order is deterministic (no shuffle) or reproducible from a
  seed, so a failed training task re-reads exactly the rows it had;
* row groups, whatever size Spark wrote them, are re-cut into fixed ``batch_size`` batches;
* numpy columns become torch tensors, fixed-length list columns (Spark ``array<float>``) become
  2-D tensors, and anything torch cannot hold (strings, nulls, timestamps) fails with the column
  named instead of deep inside torch.

A Spark output folder is read as it is: Petastorm 0.13 lists files through pyarrow's legacy
dataset discovery, which skips ``_SUCCESS``, ``_committed_*``/``_started_*``, hidden files and
``*.crc`` checksums.

Constraints to plan the writing side for (Petastorm 0.13.1 with pyarrow 14):

* a shard is a set of whole row groups: the data needs at least ``shard_count`` row groups
  (Petastorm raises ``NoDataAvailableError`` otherwise), and shards are only as balanced as the
  row groups are. Spark writes one file per partition and a row group per ~128 MB
  (``parquet.block.size``): repartition before writing so there are several per trainer;
* columns must be numeric, boolean, or fixed-length arrays of those, without nulls;
* Petastorm emits ``FutureWarning``\\ s about pyarrow's legacy dataset API on first use; they are
  harmless with the pinned pyarrow 14 (see setup.py for why it is pinned).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from petastorm import make_batch_reader
from petastorm.reader import Reader
from torch.utils.data import IterableDataset, get_worker_info

DEFAULT_SEED = 7
"""Seed for shuffling when none is given. Never 0: Petastorm treats a seed of 0 as "no seed"."""

# A URI has a scheme of two or more characters before ':/' ("file:/x" as Hadoop prints it,
# "hdfs://nn/x", "s3://b/x"); one-letter schemes would be Windows drive letters.
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/")


def parquet_url(path: str | os.PathLike[str]) -> str:
    """The URL Petastorm needs for ``path``: local paths become absolute ``file://`` URLs.

    URIs (``file://``, ``hdfs://``, ``s3://``...) are returned unchanged, so the value of
    ``RecbatchConfig.path(...)`` can be passed whether the config points at local disk or at
    cluster storage. The path is not percent-encoded: Petastorm uses the URL's path verbatim.
    """
    text = os.fspath(path)
    if _URI.match(text):
        return text
    if "#" in text or "?" in text:
        # urlparse would cut the path at these characters and Petastorm would read elsewhere.
        raise ValueError(f"Petastorm cannot address a local path containing '#' or '?': {text}")
    return "file://" + str(Path(text).expanduser().resolve())


def open_batch_reader(
    path: str | os.PathLike[str],
    *,
    shard: int | None = None,
    shard_count: int | None = None,
    columns: Sequence[str] | None = None,
    num_epochs: int | None = 1,
    shuffle: bool = False,
    seed: int = DEFAULT_SEED,
    workers_count: int = 2,
) -> Reader:
    """Open a Petastorm batch reader on a Parquet folder; each item is one row group's columns.

    Prefer :func:`iter_torch_batches`, which closes the reader and yields torch tensors; use this
    when you need Petastorm's own objects (e.g. ``petastorm.pytorch.BatchedDataLoader``).
    Close the reader with ``reader.stop(); reader.join()`` (its context manager also prints a
    line about its cache to stdout).

    Args:
        path: a Parquet folder (e.g. a Spark output folder) as a local path or URI.
        shard: this reader's shard, in ``[0, shard_count)``; ``None`` reads everything.
        shard_count: how many readers split the data. Row group ``i`` (files in name order, row
            groups in file order) belongs to shard ``i % shard_count``: stable across runs and
            machines, independent of ``shuffle`` and ``seed``.
        columns: column names to read (exact names, not Petastorm's regular expressions);
            ``None`` reads all columns.
        num_epochs: passes over the shard; ``None`` repeats forever.
        shuffle: shuffle the order of row groups and the rows inside each row group,
            reproducibly from ``seed``. Rows never move between row groups, so this is a cheap
            local shuffle, not a global one. Off, rows come in file order.
        seed: the shuffle seed (must not be 0, which Petastorm reads as "random every run").
        workers_count: reader threads decoding row groups ahead of the consumer; 0 decodes in
            the calling thread. Petastorm hands results back round-robin, so the order does not
            depend on thread timing.
    """
    if (shard is None) != (shard_count is None):
        raise ValueError("give both shard and shard_count, or neither")
    if shard_count is not None and shard is not None and not 0 <= shard < shard_count:
        raise ValueError(f"shard must be in [0, {shard_count}), got {shard}")
    if shuffle and seed == 0:
        raise ValueError("seed=0 makes Petastorm shuffle differently on every run; use another")
    if workers_count < 0:
        raise ValueError(f"workers_count must be >= 0, got {workers_count}")
    wanted = list(dict.fromkeys(columns)) if columns is not None else None
    if wanted is not None and not wanted:
        raise ValueError("columns must name at least one column (or be None for all)")
    reader = make_batch_reader(
        parquet_url(path),
        # Anchored, escaped patterns: Petastorm takes regular expressions, and "id" alone would
        # also select "id_hash" under its older prefix-matching rule (it warns about the change).
        schema_fields=[re.escape(name) + "$" for name in wanted] if wanted else None,
        reader_pool_type="thread" if workers_count else "dummy",
        workers_count=max(workers_count, 1),
        results_queue_size=max(2 * workers_count, 2),
        seed=seed,
        shuffle_rows=shuffle,
        shuffle_row_groups=shuffle,
        num_epochs=num_epochs,
        cur_shard=shard,
        shard_count=shard_count,
    )
    if wanted:
        missing = [name for name in wanted if name not in reader.schema.fields]
        if missing:
            _close(reader)
            raise ValueError(
                f"columns not in {path}: {', '.join(missing)} "
                f"(it has: {', '.join(reader.schema.fields)})"
            )
    return reader


def column_to_tensor(name: str, values: np.ndarray) -> torch.Tensor:
    """One column of a batch as a tensor; list columns become ``(rows, length, ...)`` tensors.

    Petastorm already stacks fixed-length list columns into 2-D arrays; lists it could not stack
    (nested lists, or a reader without that step) arrive as an object array of arrays and are
    stacked here. Unsigned types torch handles poorly are widened to signed ones.
    """
    if values.dtype == object:
        values = _stack_object_column(name, values)
    kind = values.dtype.kind
    if kind in "USO":
        raise TypeError(
            f"column '{name}' holds {values.dtype} values, which torch cannot hold: "
            "encode it as numbers in Spark (e.g. an index) or leave it out with columns=[...]"
        )
    if kind in "mM":
        raise TypeError(
            f"column '{name}' is a {values.dtype} column: cast it to a number in Spark "
            "(e.g. unix_micros(ts)) before writing"
        )
    if values.dtype in (np.uint16, np.uint32):
        values = values.astype(np.int32 if values.dtype == np.uint16 else np.int64)
    elif values.dtype == np.uint64:
        if values.size and values.max() > np.iinfo(np.int64).max:
            raise TypeError(f"column '{name}' has uint64 values beyond int64")
        values = values.astype(np.int64)
    if not values.flags.writeable or not values.flags.c_contiguous:
        # Arrow hands out read-only views; torch.from_numpy would share (and warn about) them.
        values = np.ascontiguousarray(values).copy()
    return torch.from_numpy(values)


def columns_to_tensors(batch: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """A batch of numpy columns (e.g. a Petastorm row group) as torch tensors, same keys."""
    return {name: column_to_tensor(name, np.asarray(values)) for name, values in batch.items()}


def iter_torch_batches(
    path: str | os.PathLike[str],
    *,
    batch_size: int,
    shard: int | None = None,
    shard_count: int | None = None,
    columns: Sequence[str] | None = None,
    num_epochs: int | None = 1,
    shuffle: bool = False,
    seed: int = DEFAULT_SEED,
    drop_last: bool = False,
    workers_count: int = 2,
) -> Iterator[dict[str, torch.Tensor]]:
    """Batches of ``batch_size`` rows of one shard of a Parquet folder, as ``{column: tensor}``.

    Every batch has ``batch_size`` rows except possibly the last one (dropped with
    ``drop_last=True``, e.g. when a model needs constant shapes); batches run across row-group
    and epoch boundaries. Shard, order and shuffle rules are those of :func:`open_batch_reader`.
    The reader's threads are stopped when the iterator is exhausted, closed or garbage-collected.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    reader = open_batch_reader(
        path,
        shard=shard,
        shard_count=shard_count,
        columns=columns,
        num_epochs=num_epochs,
        shuffle=shuffle,
        seed=seed,
        workers_count=workers_count,
    )
    order = list(dict.fromkeys(columns)) if columns else list(reader.schema.fields)
    try:
        pending: list[dict[str, np.ndarray]] = []
        pending_rows = 0
        for row_group in reader:
            raw = row_group._asdict()
            chunk = {name: _as_batch_array(name, raw[name]) for name in order}
            rows = len(next(iter(chunk.values())))
            if rows == 0:
                continue
            pending.append(chunk)
            pending_rows += rows
            if pending_rows < batch_size:
                continue
            # Join what is pending once, then cut as many full batches from it as it holds.
            merged = _concat(pending)
            start = 0
            while pending_rows - start >= batch_size:
                yield columns_to_tensors(_slice(merged, start, start + batch_size))
                start += batch_size
            pending = [_slice(merged, start, pending_rows)] if start < pending_rows else []
            pending_rows -= start
        if pending_rows and not drop_last:
            yield columns_to_tensors(_concat(pending))
    finally:
        _close(reader)


class ParquetBatches(IterableDataset):
    """A re-iterable torch dataset over :func:`iter_torch_batches`: one epoch per ``iter()``.

    Use it with ``DataLoader(ParquetBatches(...), batch_size=None)`` (batches come already made).
    With ``num_workers > 1`` each loader worker reads its own part of this dataset's shard, so no
    row is read twice; the data then needs ``shard_count * num_workers`` row groups.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        batch_size: int,
        shard: int | None = None,
        shard_count: int | None = None,
        columns: Sequence[str] | None = None,
        shuffle: bool = False,
        seed: int = DEFAULT_SEED,
        drop_last: bool = False,
        workers_count: int = 2,
    ) -> None:
        super().__init__()
        self.path = parquet_url(path)
        self.options: dict[str, Any] = {
            "batch_size": batch_size,
            "columns": columns,
            "shuffle": shuffle,
            "drop_last": drop_last,
            "workers_count": workers_count,
        }
        self.shard = shard
        self.shard_count = shard_count
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Vary the shuffle per epoch (reproducibly) when ``shuffle=True``; like DistributedSampler."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        shard, shard_count = loader_worker_shard(
            self.shard, self.shard_count, info.id if info else 0, info.num_workers if info else 1
        )
        seed = self.seed + self.epoch
        yield from iter_torch_batches(
            self.path,
            shard=shard,
            shard_count=shard_count,
            num_epochs=1,
            seed=seed if seed != 0 else DEFAULT_SEED,
            **self.options,
        )


def loader_worker_shard(
    shard: int | None, shard_count: int | None, worker_id: int, num_workers: int
) -> tuple[int | None, int | None]:
    """The shard a DataLoader worker reads so that its workers split ``shard`` between them.

    Worker ``w`` of ``W`` takes shard ``shard + w * shard_count`` of ``shard_count * W``: row
    group ``i`` lands there only if ``i % shard_count == shard``, so the workers together read
    exactly the row groups of the undivided shard, each once.
    """
    if num_workers <= 1:
        return shard, shard_count
    base, count = (0, 1) if shard is None or shard_count is None else (shard, shard_count)
    return base + worker_id * count, count * num_workers


def _as_batch_array(name: str, values: Any) -> np.ndarray:
    array = np.asarray(values)
    return _stack_object_column(name, array) if array.dtype == object else array


def _stack_object_column(name: str, values: np.ndarray) -> np.ndarray:
    """Stack an object array of per-row arrays (a list column) into one ``(rows, ...)`` array."""
    if len(values) == 0:
        return values
    if any(value is None for value in values):
        raise TypeError(f"column '{name}' has nulls: fill or filter them in Spark before writing")
    rows = [np.asarray(value) for value in values]
    shapes = {row.shape for row in rows}
    if len(shapes) != 1:
        raise TypeError(
            f"column '{name}' has lists of different lengths {sorted(shapes)[:5]}: "
            "pad or truncate them to one length in Spark"
        )
    stacked = np.stack(rows)
    if stacked.dtype == object:
        raise TypeError(f"column '{name}' holds Python objects (e.g. decimals), not numbers")
    return stacked


def _concat(chunks: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if len(chunks) == 1:
        return chunks[0]
    return {name: np.concatenate([chunk[name] for chunk in chunks]) for name in chunks[0]}


def _slice(batch: dict[str, np.ndarray], start: int, stop: int) -> dict[str, np.ndarray]:
    return {name: values[start:stop] for name, values in batch.items()}


def _close(reader: Reader) -> None:
    # Not ``with reader``: its __exit__ also prints "Cache cleanup complete." to stdout.
    reader.stop()
    reader.join()
