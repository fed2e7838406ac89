"""Storage helpers shared by all stages: Delta tables and Petastorm tensor readers."""
