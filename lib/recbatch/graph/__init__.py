"""The directed product graph and its degree-aware neighbourhood samples.

One file per step, data flowing one way:

* ``build``    events (co-purchases) or a TSV edge list -> cleaned, weighted directed edges
* ``stats``    GraphFrame degrees, weakly connected components, reciprocity, power-law fit
* ``split``    train / val / test edges (connected random split, or a time split)
* ``budget``   the degree law k(d) and the neighbour probabilities
* ``sampling`` weighted sampling without replacement, hop by hop, for both roles
* ``samples``  fixed-shape rows (Parquet for Petastorm, Delta for SQL)
* ``stage``    the ``graph`` and ``samples`` pipeline stages
"""
