"""SQL access to recbatch's Delta tables by name.

Delta resolves ``delta.`path``` only for absolute paths, and the paths differ per environment;
``{events}`` in a statement is expanded to the configured table's absolute location.
"""

from __future__ import annotations

import re

from recbatch.config import RecbatchConfig

_TABLE_REF = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def expand_table_names(statement: str, cfg: RecbatchConfig) -> str:
    """Replace each ``{name}`` with ``delta.`<absolute path of table name>```."""
    return _TABLE_REF.sub(lambda m: f"delta.`{cfg.table_path(m.group(1))}`", statement)
