"""Feed Spark-written Parquet to torch through Petastorm, one disjoint shard per trainer.

Why Petastorm: features are written by Spark as plain Parquet and models are trained in torch.
``petastorm.make_batch_reader`` reads plain Parquet (no Petastorm metadata needed) one row group at
a time and shards *by row group*, so N trainers each read a disjoint part of the data with no
coordinator and no copy of the data set.

What this module adds on top of it:

* local paths become the ``file://`` URLs Petastorm insists on (it rejects scheme-less paths);
* sharding is deterministic, so a retried training task re-reads exactly the rows it had, and
  the order is file order (no shuffle) or a shuffle reproducible from a seed;
* row groups, whatever size Spark wrote them, are re-cut into fixed ``batch_size`` batches;
* numpy columns become torch tensors, fixed-length list columns (Spark ``array<float>``) become
  2-D tensors, and anything torch cannot hold (strings, nulls, timestamps) fails with the column
  named instead of deep inside torch;
* every finite read is checked against the row counts in the Parquet footers, so a reader that
  returns fewer rows fails loudly instead of training on part of the data.

That check and the reader pool choice exist because Petastorm 0.13.1's ``'thread'`` reader pool
silently drops row groups: its end-of-data test reads "all workers idle" and then "ventilator
finished", so row groups handed out between the two reads are never returned. It can happen
whenever a reader has more row groups than its ventilation queue (``4 * workers_count``) holds;
on this project's test data (12 row groups, 2 workers) a third of the rows went missing in 5 to
9 runs out of 30. This module therefore reads through Petastorm's ``'dummy'`` pool (row groups
decoded by the thread that iterates; its end-of-data test has the same shape with a far smaller
window, which the footer check covers) and gets read-ahead from one background thread of its own
(``prefetch``). The dummy pool polls every 0.1 s when it gets ahead of Petastorm's ventilator,
which costs time only with tiny row groups.

A Spark output folder is read as it is: Petastorm 0.13 lists files through pyarrow's legacy
dataset discovery, which skips ``_SUCCESS``, ``_committed_*``/``_started_*``, hidden files and
``*.crc`` checksums.

Constraints to plan the writing side for (Petastorm 0.13.1 with pyarrow 14):

* a shard is a set of whole row groups: the data needs at least ``shard_count`` row groups
  (Petastorm raises ``NoDataAvailableError`` otherwise), and shards are only as balanced as the
  row groups are. Spark writes one file per partition and a row group per ~128 MB
  (``parquet.block.size``): repartition before writing so there are several per trainer;
* columns must be numeric, boolean, or fixed-length arrays of those, without nulls;
* Petastorm emits ``FutureWarning`` messages about pyarrow's legacy dataset API on first use;
  they are harmless with the pinned pyarrow 14 (setup.py says why it is pinned).
"""

from __future__ import annotations

import os
import queue
import re
import threading
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
import pyarrow.parquet as pq
import torch
from petastorm import make_batch_reader
from petastorm.etl.dataset_metadata import load_row_groups
from petastorm.fs_utils import get_filesystem_and_path_or_paths
from petastorm.reader import Reader
from torch.utils.data import IterableDataset, get_worker_info


def quiet_petastorm_warnings() -> None:
    """Ignore the warnings Petastorm 0.13 raises on every reader it opens.

    Why: it drives pyarrow 14's legacy dataset API (why pyarrow is pinned: setup.py), which
    deprecates what it calls, and it leaves each Parquet file handle to the garbage collector.
    Both are known and harmless, and a pipeline run printed 13,000 of them from its torch
    workers, burying the training log. Called at import and again whenever a reader opens:
    ``filterwarnings`` moves an existing filter back to the front, so a filter some library
    inserted since (many reset them inside ``catch_warnings``, as pytest does around every test)
    cannot override these.
    """
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"petastorm(\.|$)")
    warnings.filterwarnings(
        "ignore",
        category=FutureWarning,
        message=r".*(use_legacy_dataset|ParquetDataset|pyarrow\.localfs|metadata_nthreads).*",
    )
    warnings.filterwarnings(
        "ignore", category=ResourceWarning, message=r"unclosed file .*\.parquet"
    )


quiet_petastorm_warnings()

DEFAULT_SEED = 7
"""Shuffle seed when none is given. Never 0: Petastorm reads a seed of 0 as "random every run"."""

# A URI has a scheme of two or more characters before ':/' ("file:/x" as Hadoop prints it,
# "hdfs://nn/x", "s3://b/x"); one-letter schemes would be Windows drive letters.
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/")

Batch = dict[str, np.ndarray]
_T = TypeVar("_T")


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


def count_rows(
    path: str | os.PathLike[str], *, shard: int | None = None, shard_count: int | None = None
) -> int:
    """Rows in one shard of a Parquet folder (one epoch), from the footers, without reading data.

    Useful to size an epoch (steps per epoch, learning-rate schedules). Uses Petastorm's own
    row-group listing, so the numbering, and hence the shard, is the one the reader uses.
    """
    _check_shard(shard, shard_count)
    quiet_petastorm_warnings()
    filesystem, dataset_path = get_filesystem_and_path_or_paths(parquet_url(path))
    dataset = pq.ParquetDataset(dataset_path, filesystem=filesystem, validate_schema=False)
    row_groups = load_row_groups(dataset)
    if shard_count is not None and len(row_groups) < shard_count:
        raise ValueError(
            f"{path} has {len(row_groups)} row groups, fewer than {shard_count} shards: "
            "write it with more files or smaller row groups"
        )
    files: dict[str, list[int]] = {}
    for index, piece in enumerate(row_groups):
        if shard_count is None or index % shard_count == shard:
            files.setdefault(piece.path, []).append(piece.row_group)
    total = 0
    for file_path, groups in files.items():
        with dataset.fs.open(file_path) as handle:
            metadata = pq.ParquetFile(handle).metadata
        total += sum(metadata.row_group(group).num_rows for group in groups)
    return total


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
    prefetch: int = 2,
) -> Iterator[dict[str, torch.Tensor]]:
    """Batches of ``batch_size`` rows of one shard of a Parquet folder, as ``{column: tensor}``.

    Args:
        path: a Parquet folder (e.g. a Spark output folder) as a local path or URI.
        batch_size: rows per batch. Batches run across row-group and epoch boundaries; only the
            last one may be smaller (``drop_last=True`` drops it, for models that need constant
            shapes).
        shard: this reader's shard, in ``[0, shard_count)``; ``None`` reads everything.
        shard_count: how many readers split the data. Row group ``i`` (files in name order, row
            groups in file order) belongs to shard ``i % shard_count``: stable across runs and
            machines, independent of ``shuffle`` and ``seed``.
        columns: column names to read, in the order the batches should have them (exact names,
            not Petastorm's regular expressions); ``None`` reads all, in file order.
        num_epochs: passes over the shard; ``None`` repeats forever (and skips the row check).
        shuffle: shuffle the order of row groups and the rows inside each row group,
            reproducibly from ``seed`` (the same seed gives the same order every run). Rows never
            move between row groups, so this is a cheap local shuffle, not a global one. Off,
            rows come in file order.
        seed: the shuffle seed; must not be 0, which Petastorm reads as "random every run".
        prefetch: row groups read and converted ahead by a background thread while the caller
            trains on the current batch; 0 reads in the calling thread.

    Raises:
        RuntimeError: after the last batch, if the reader returned fewer or more rows than the
            Parquet footers hold for this shard and number of epochs.

    The reader is closed when the iterator is exhausted, closed or garbage-collected.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if prefetch < 0:
        raise ValueError(f"prefetch must be >= 0, got {prefetch}")
    _check_shard(shard, shard_count)
    if shuffle and seed == 0:
        raise ValueError("seed=0 makes Petastorm shuffle differently on every run; use another")
    if columns is not None and not columns:
        raise ValueError("columns must name at least one column (or be None for all)")
    # Checked now, not at the first next(): the reader is opened by the generator, so that one
    # that is never iterated holds no threads. Unknown columns are reported at the first next().
    return _iter_torch_batches(
        path,
        batch_size=batch_size,
        reader_options={
            "shard": shard,
            "shard_count": shard_count,
            "columns": columns,
            "num_epochs": num_epochs,
            "shuffle": shuffle,
            "seed": seed,
        },
        drop_last=drop_last,
        prefetch=prefetch,
    )


def _iter_torch_batches(
    path: str | os.PathLike[str],
    *,
    batch_size: int,
    reader_options: dict[str, Any],
    drop_last: bool,
    prefetch: int,
) -> Iterator[dict[str, torch.Tensor]]:
    reader = _open_reader(path, **reader_options)
    columns = reader_options["columns"]
    names = list(dict.fromkeys(columns)) if columns else list(reader.schema.fields)
    row_groups = _Prefetcher(_row_groups(reader, names), prefetch)
    rows_read = 0

    def counted(chunks: Iterator[Batch]) -> Iterator[Batch]:
        nonlocal rows_read
        for chunk in chunks:
            rows_read += _num_rows(chunk)
            yield chunk

    try:
        for batch in _rebatch(counted(row_groups), batch_size, drop_last):
            yield columns_to_tensors(batch)
        epochs = reader_options["num_epochs"]
        if epochs is not None:
            shard, shard_count = reader_options["shard"], reader_options["shard_count"]
            expected = count_rows(path, shard=shard, shard_count=shard_count) * epochs
            if rows_read != expected:
                raise RuntimeError(
                    f"Petastorm returned {rows_read} rows of {path} (shard {shard} of "
                    f"{shard_count}, {epochs} epoch(s)) but the Parquet footers hold {expected}"
                )
    finally:
        row_groups.close()
        reader.stop()
        reader.join()


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
        prefetch: int = 2,
    ) -> None:
        super().__init__()
        _check_shard(shard, shard_count)
        self.path = parquet_url(path)
        self.shard = shard
        self.shard_count = shard_count
        self.seed = seed
        self.epoch = 0
        self.options: dict[str, Any] = {
            "batch_size": batch_size,
            "columns": columns,
            "shuffle": shuffle,
            "drop_last": drop_last,
            "prefetch": prefetch,
        }

    def set_epoch(self, epoch: int) -> None:
        """Shuffle each epoch differently (still reproducibly) when ``shuffle=True``."""
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
    """The shard a DataLoader worker reads so that the workers split ``shard`` between them.

    Worker ``w`` of ``W`` takes shard ``shard + w * shard_count`` of ``shard_count * W``: row
    group ``i`` lands there only if ``i % shard_count == shard``, so the workers together read
    exactly the row groups of the undivided shard, each once.
    """
    if num_workers <= 1:
        return shard, shard_count
    base, count = (0, 1) if shard is None or shard_count is None else (shard, shard_count)
    return base + worker_id * count, count * num_workers


def column_to_tensor(name: str, values: np.ndarray) -> torch.Tensor:
    """One column of a batch as a tensor; list columns become ``(rows, length, ...)`` tensors.

    Petastorm already stacks fixed-length list columns into 2-D arrays; lists it did not stack
    (an object array of per-row arrays) are stacked here. Unsigned types torch supports poorly
    are widened to signed ones.
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
        values = np.array(values, order="C", copy=True)
    return torch.from_numpy(values)


def columns_to_tensors(batch: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """A batch of numpy columns (e.g. a Petastorm row group) as torch tensors, same keys."""
    return {name: column_to_tensor(name, np.asarray(values)) for name, values in batch.items()}


def _check_shard(shard: int | None, shard_count: int | None) -> None:
    if (shard is None) != (shard_count is None):
        raise ValueError("give both shard and shard_count, or neither")
    if shard is not None and shard_count is not None and not 0 <= shard < shard_count:
        raise ValueError(f"shard must be in [0, {shard_count}), got {shard}")


def _open_reader(
    path: str | os.PathLike[str],
    *,
    shard: int | None,
    shard_count: int | None,
    columns: Sequence[str] | None,
    num_epochs: int | None,
    shuffle: bool,
    seed: int,
) -> Reader:
    """A Petastorm batch reader (one item per row group) on the calling thread's 'dummy' pool."""
    _check_shard(shard, shard_count)
    if shuffle and seed == 0:
        raise ValueError("seed=0 makes Petastorm shuffle differently on every run; use another")
    wanted = list(dict.fromkeys(columns)) if columns is not None else None
    if wanted is not None and not wanted:
        raise ValueError("columns must name at least one column (or be None for all)")
    quiet_petastorm_warnings()
    reader = make_batch_reader(
        parquet_url(path),
        # Anchored, escaped patterns: Petastorm takes regular expressions, and "id" alone would
        # also select "id_hash" under its older prefix-matching rule (it warns about the change).
        schema_fields=[re.escape(name) + "$" for name in wanted] if wanted else None,
        # Not 'thread': it drops row groups (module docstring). 'dummy' decodes on the thread
        # that iterates, which _Prefetcher moves off the training thread.
        reader_pool_type="dummy",
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
            # Not ``with reader``: its __exit__ also prints "Cache cleanup complete." to stdout.
            reader.stop()
            reader.join()
            raise ValueError(
                f"columns not in {path}: {', '.join(missing)} "
                f"(it has: {', '.join(reader.schema.fields)})"
            )
    return reader


def _row_groups(reader: Reader, names: list[str]) -> Iterator[Batch]:
    """The reader's row groups as ``{column: array}`` in ``names`` order, list columns stacked."""
    for row_group in reader:
        raw = row_group._asdict()
        batch = {name: _as_array(name, raw[name]) for name in names}
        if _num_rows(batch):
            yield batch


def _rebatch(chunks: Iterator[Batch], batch_size: int, drop_last: bool) -> Iterator[Batch]:
    """Re-cut chunks of any size into ``batch_size`` rows (the last one may be short)."""
    pending: list[Batch] = []
    pending_rows = 0
    for chunk in chunks:
        pending.append(chunk)
        pending_rows += _num_rows(chunk)
        if pending_rows < batch_size:
            continue
        # Join what is pending once, then cut as many full batches from it as it holds.
        merged = _concat(pending)
        start = 0
        while pending_rows - start >= batch_size:
            yield _slice(merged, start, start + batch_size)
            start += batch_size
        pending = [_slice(merged, start, pending_rows)] if start < pending_rows else []
        pending_rows -= start
    if pending_rows and not drop_last:
        yield _concat(pending)


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


_DONE = object()


class _Prefetcher(Generic[_T]):
    """Iterate ``source`` on a daemon thread, up to ``depth`` items ahead (0: on the caller's).

    Errors in the source are re-raised to the consumer. ``close()`` stops the thread after the
    item it is producing and waits for it, so the source's resources can then be released.
    """

    def __init__(self, source: Iterator[_T], depth: int) -> None:
        self._source = source
        self._thread: threading.Thread | None = None
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(depth, 1))
        self._stop = threading.Event()
        if depth > 0:
            self._thread = threading.Thread(
                target=self._produce, name="recbatch-parquet-prefetch", daemon=True
            )
            self._thread.start()

    def _produce(self) -> None:
        try:
            for item in self._source:
                if not self._put(item):
                    return
            self._put(_DONE)
        except BaseException as error:  # handed to the consumer, which re-raises it
            self._put(_Failed(error))

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> _Prefetcher[_T]:
        return self

    def __next__(self) -> _T:
        if self._thread is None:
            return next(self._source)
        item = self._queue.get()
        if item is _DONE or isinstance(item, _Failed):
            self._queue.put(item)  # stay exhausted (or failed) on later calls
            if item is _DONE:
                raise StopIteration
            raise item.error
        return item

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        close = getattr(self._source, "close", None)
        if close is not None:
            close()


def _as_array(name: str, values: Any) -> np.ndarray:
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


def _num_rows(batch: Batch) -> int:
    return len(next(iter(batch.values())))


def _concat(chunks: list[Batch]) -> Batch:
    if len(chunks) == 1:
        return chunks[0]
    return {name: np.concatenate([chunk[name] for chunk in chunks]) for name in chunks[0]}


def _slice(batch: Batch, start: int, stop: int) -> Batch:
    return {name: values[start:stop] for name, values in batch.items()}
