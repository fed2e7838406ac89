"""recbatch: a Spark batch system that refreshes product recommendations and their thresholds.

Packages by concern:
    config      YAML configuration, validated; command-line overrides
    session     the one place a SparkSession is built
    events      the event log: schema, readers, generator, validation and ingestion
    io          Delta Lake table helpers shared by all stages
"""

__version__ = "0.1.0"
