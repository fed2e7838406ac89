"""Build the directed product graph of the run date.

./spark-submit.sh build_graph                       (co-purchases from the events table)
./spark-submit.sh build_graph --set graph.source=edge_list \
    --set graph.edge_list_path=../shared/data/wiki_vote_edges.tsv

Writes the Delta graph_nodes, graph_edges (with the train/val/test split), graph_stats and
graph_quarantine tables (the run date's rows replaced).
"""

from recbatch.cli import run_job
from recbatch.graph.stage import graph_stage
from recbatch.session import build_session


def main(cfg, args) -> None:
    spark = build_session(cfg)
    print(graph_stage(spark, cfg))


if __name__ == "__main__":
    run_job(main, __doc__)
