"""Torch training on Spark: the one path by which recbatch runs torch workers (``distributed``)."""
