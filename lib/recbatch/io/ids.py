"""Product, user and category ids as they arrive: integers, or any text (``B000000NGH``).

``ingest.ids`` says which, once for every input (events, edge lists, node lists):

* ``integer``: the text is trimmed and read as a non-negative long, so ``"007"`` and ``"7"`` are
  one product; anything else is a bad id. Tables keep ``long`` id columns.
* ``string``: the trimmed text *is* the id (``"007"`` and ``"7"`` are two products, and
  ``SKU-123-XL`` is as good as ``42``); only a blank one is bad. Tables keep ``string`` id
  columns, so every output reads in the ids the catalogue uses.

Either way the models never see an id: the graph stage gives every product a dense
``node_index`` (0..N-1) and the id is joined back onto each output row.
"""

from __future__ import annotations

from typing import Literal

from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql.types import DataType, LongType, StringType

IdKind = Literal["integer", "string"]
ID_KINDS: tuple[IdKind, ...] = ("integer", "string")


def id_type(kind: IdKind) -> DataType:
    """The Spark type of id columns in the tables, for ids of ``kind``."""
    return LongType() if kind == "integer" else StringType()


def parse_id(text: Column, kind: IdKind) -> Column:
    """The id in ``text`` (a string column), or null where it is not a valid id of ``kind``."""
    trimmed = F.trim(text)
    if kind == "string":
        return F.when(trimmed != "", trimmed)
    number = trimmed.try_cast("long")
    return F.when(number >= 0, number)
