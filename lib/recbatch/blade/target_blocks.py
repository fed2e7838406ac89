"""The target matrix in blocks on storage: top-K over a catalogue of any size, no broadcast.

Every task of the top-K needs every target vector. Broadcasting the ``n x d`` matrix holds all
of it in every executor at once (256 MB a million products at d = 64) and stops where that no
longer fits. Instead, one Spark job cuts the targets into blocks of ``target_block_rows``
consecutive node indices and writes each block as one ``.npy`` file under the run's work
folder. A top-K task then reads the blocks one at a time and keeps a running top K of its
sources (``recbatch.blade.recommend``): it never holds more than one block, and the blocks
live wherever the work folder does (local disk, HDFS, S3: anything ``pyarrow.fs`` opens).

With ``recommendations.search = ivf`` the same job also builds a faiss inverted-file index
(``IndexIVFFlat``, inner product) over each block and writes it beside the block. An IVF index
scans only the ``ivf_probes`` lists of its ``ivf_lists`` whose centroids are nearest the
query: approximate, and faster than the exact multiply once a block has enough rows that the
scanned share is small (``bench/blade_scale.py --top-k`` measures recall and speed).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from pyarrow import fs
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from recbatch.io.tensors import parquet_url
from recbatch.log import get_logger
from recbatch.proximity.graph import require_columns

log = get_logger(__name__)

TARGET_COLUMNS = ("node_index", "target")
MIN_POINTS_PER_LIST = 39
"""faiss warns below 39 training points a centroid: k-means has too little to place it."""


@dataclass(frozen=True)
class TargetBlocks:
    """Where a target matrix's blocks are and how they are cut; small, so tasks take a copy.

    Block ``b`` holds the targets ``b * block_rows ..`` up to ``(b + 1) * block_rows - 1``
    (the last block may be shorter): row ``i`` of its matrix is node index
    ``b * block_rows + i``."""

    url: str
    num_targets: int
    dim: int
    block_rows: int
    search: str = "exact"

    @property
    def num_blocks(self) -> int:
        return -(-self.num_targets // self.block_rows)

    def first_index(self, block: int) -> int:
        return block * self.block_rows

    def read(self, block: int) -> np.ndarray:
        """Block ``block``'s ``[rows, dim]`` float32 matrix."""
        return np.load(io.BytesIO(_read_bytes(self._file(block, "npy"))), allow_pickle=False)

    def read_index(self, block: int):
        """Block ``block``'s faiss IVF index (``search = ivf`` only)."""
        import faiss

        raw = np.frombuffer(_read_bytes(self._file(block, "faiss")), dtype=np.uint8)
        return faiss.deserialize_index(raw)

    def clear(self) -> None:
        """Create the folder, or empty it of an earlier run's blocks."""
        filesystem, path = fs.FileSystem.from_uri(self.url)
        filesystem.create_dir(path, recursive=True)
        filesystem.delete_dir_contents(path)

    def write(self, block: int, matrix: np.ndarray) -> None:
        """Store block ``block``'s matrix (rows in node-index order)."""
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(matrix, dtype=np.float32), allow_pickle=False)
        _write_bytes(self._file(block, "npy"), buffer.getvalue())

    def write_index(self, block: int, index) -> None:
        """Store block ``block``'s faiss index."""
        import faiss

        _write_bytes(self._file(block, "faiss"), faiss.serialize_index(index).tobytes())

    def _file(self, block: int, suffix: str) -> str:
        return f"{self.url.rstrip('/')}/block-{block:05d}.{suffix}"


def ivf_lists_for(rows: int, lists: int) -> int:
    """The inverted lists of a block of ``rows`` targets: ``lists`` when set, else about
    4 sqrt(rows) (faiss' guide: 4-16 sqrt(n)); never more than k-means can place."""
    wanted = lists if lists > 0 else round(4 * np.sqrt(rows))
    return int(max(1, min(wanted, rows // MIN_POINTS_PER_LIST)))


def write_target_blocks(
    embeddings: DataFrame,
    path: str,
    *,
    block_rows: int,
    search: str = "exact",
    ivf_lists: int = 0,
    seed: int = 0,
) -> TargetBlocks:
    """Write ``embeddings``' target vectors as blocks under ``path`` (replacing what is there).

    ``embeddings``: ``node_index`` (0..n-1, each once) and ``target`` (array of float)."""
    require_columns(embeddings, TARGET_COLUMNS, "write_target_blocks")
    # One pass: every block is written and reports its shape; the checks run on the reports.
    # The folder's address, the cut and the search are all a block's write needs.
    layout = TargetBlocks(parquet_url(path), 0, 0, block_rows, search)
    layout.clear()

    def write_block(frame: pd.DataFrame) -> pd.DataFrame:
        block = int(frame["block"].iloc[0])
        order = frame["node_index"].to_numpy(np.int64) - layout.first_index(block)
        widths = frame["target"].map(len).to_numpy()
        report = {"block": [block], "rows": [len(frame)], "dim": [int(widths.max())]}
        one_per_index = (
            order.min() >= 0
            and order.max() == len(frame) - 1
            and len(np.unique(order)) == len(frame)
        )
        same_width = bool(widths.min() == widths.max())
        if not one_per_index or not same_width:
            return pd.DataFrame({**report, "valid": [False], "same_width": [same_width]})
        matrix = np.empty((len(frame), int(widths.max())), dtype=np.float32)
        matrix[order] = np.stack(frame["target"].to_numpy()).astype(np.float32)
        layout.write(block, matrix)
        if search == "ivf":
            layout.write_index(block, ivf_index(matrix, ivf_lists, seed + block))
        return pd.DataFrame({**report, "valid": [True], "same_width": [True]})

    reports = (
        embeddings.select(
            (F.col("node_index") / block_rows).cast("long").alias("block"), *TARGET_COLUMNS
        )
        .groupBy("block")
        .applyInPandas(
            write_block, "block long, rows long, dim long, valid boolean, same_width boolean"
        )
        .toPandas()
        .sort_values("block")
    )
    rows = int(reports["rows"].sum())
    blocks = replace(layout, num_targets=rows, dim=int(reports["dim"].max() if rows else 0))
    if not reports["same_width"].all() or reports["dim"].nunique() > 1:
        raise ValueError("every target vector must have the same length")
    # Every block but the last full, each with one row per index: exactly the indices 0..n-1.
    if (
        rows == 0
        or not reports["valid"].all()
        or reports["block"].tolist() != list(range(blocks.num_blocks))
        or not (reports["rows"].iloc[:-1] == block_rows).all()
    ):
        raise ValueError("embeddings must have one row per node index 0..n-1")
    log.info(
        "target blocks: %d targets x %d in %d block(s) of up to %d rows (%s) at %s",
        rows,
        blocks.dim,
        blocks.num_blocks,
        block_rows,
        search,
        blocks.url,
    )
    return blocks


def ivf_index(matrix: np.ndarray, lists: int, seed: int = 0):
    """An inner-product IVF index over one block (k-means on the block itself)."""
    import faiss

    faiss.omp_set_num_threads(1)  # one Spark task, one core
    nlist = ivf_lists_for(len(matrix), lists)
    quantizer = faiss.IndexFlatIP(matrix.shape[1])
    index = faiss.IndexIVFFlat(quantizer, matrix.shape[1], nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = seed
    index.train(matrix)
    index.add(matrix)
    return index


def _write_bytes(url: str, data: bytes) -> None:
    filesystem, path = fs.FileSystem.from_uri(url)
    with filesystem.open_output_stream(path) as out:
        out.write(data)


def _read_bytes(url: str) -> bytes:
    filesystem, path = fs.FileSystem.from_uri(url)
    with filesystem.open_input_stream(path) as stream:
        return stream.read()
