"""BLADE: dual source/target embeddings learned on degree-aware samples (docs/blade.md).

``recbatch.config`` is imported first: it holds the ``blade:`` sections, which are defined here
on its ``_Section``; a torch worker that unpickles its job imports this package before anything
else, and would otherwise enter the two modules in an order that cannot finish.
"""

import recbatch.config  # noqa: F401
