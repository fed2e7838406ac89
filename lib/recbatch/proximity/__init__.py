"""Training-free proximity on the directed training graph (docs/blade.md, "The floor").

* ``graph``: the training graph as sparse matrices, broadcast to the tasks that score pairs;
* ``ppr``: personalised PageRank rows for a block of sources (power iteration);
* ``features``: BLADE's pair features (PPR, two-hop paths per direction, degrees);
* ``scorers``: pair scorers (a dot product, ppr, ppr_potential, adamic_adar) that score
  ``(u, v)`` arrays inside a task.
"""

# ``recbatch.config`` first: it holds the ``proximity:`` section, defined in ``settings`` on its
# ``_Section``; a Spark task that unpickles a scorer imports this package before anything else.
import recbatch.config  # noqa: F401, E402
