"""Per-uncertainty-bucket thresholds against one threshold, on BLADE's link scores.

    .venv/bin/python bench/link_thresholds.py [--datasets cora_ml,wiki_vote] [--seeds 0,1]
        [--methods mc_dropout,heads] [--targets 0.7,0.8,0.9] [--resamples 20]
        [--work-dir var/bench/blade] [--alternatives] [--cost-pairs 1000000] [--plots DIR]
        [--set key=value ...]
    .venv/bin/python bench/link_thresholds.py --embedded [--config conf/local.yaml]

For each referee split (``../shared/linkpred``, as ``bench/blade_eval.py``: BLADE trained on its
``train.tsv``, reusing that script's work dir and checkpoints) and each estimator
(``link_uncertainty.method``):

1. the labelled pairs are the split's test edges against the first ``negatives_per_edge`` of the
   referee's own sampled targets of the same source (base rate 1 / (1 + r): precision is "share
   of accepted pairs that are real edges at r sampled non-edges per real edge");
2. the scorer's heads are fitted on training pairs (``recbatch.links``), the pairs scored with
   their uncertainty in Spark; ``--cost-pairs N`` times scoring N random pairs alone (no-op
   sink, ``local[2]``) and prints seconds per 1M pairs;
3. one histogram pass, then both rules at every target precision, over ``--resamples`` reseeded
   three-way splits (calibration / selection / evaluation): mean evaluation recall of the
   per-bucket rule and of the single threshold, their ratio (``gain``), their mean evaluation
   precision (over the resamples that accepted something), ``gain_matched`` (the per-bucket
   recall against one threshold at the per-bucket rule's own evaluation precision: the
   certified single threshold lands above its target, and part of ``gain`` is that slack
   spent), and how often the certified rule misses the target on the evaluation split (goal: at
   most ``delta`` of the resamples), counted two ways: evaluation precision below the target
   (``miss_*``: over-counts, a rule just above the target lands below it by sampling noise
   about half the time), and the evaluation split's own ``1 - delta`` upper bound below the
   target (``clear_miss``, per-bucket/single: a miss the evaluation split shows at level
   ``delta``);
4. reliability: per uncertainty quintile, the mean score and the positive rate of the pairs, and
   the positive rate at equal score (pairs scoring in the top score quintile), which must fall
   with uncertainty for per-bucket thresholds to win; ``--plots DIR`` draws it (one PNG per
   graph, seed and estimator, with the scored pairs beside it as Parquet): the positive rate
   per score band (twentiles of the pairs, the top one cut in five), left per uncertainty
   quintile (what per-bucket thresholds see), right per third of uncertainty within the band
   (MIST's premise: at equal score, the more uncertain third has fewer positives).

``--alternatives`` repeats steps 3-4 with other uncertainties of the same pairs, to see which
gives per-bucket thresholds the most: the spread of the members' *logits* instead of their
probabilities (not squashed towards 0 at low scores), and node evidence (``1/sqrt(1 + degree)``
of the source's out-degree, the target's in-degree, the smaller total degree of the two, and the
sum over both ends), and each of these (and the production uncertainty) *at equal score*: its
percentile among pairs in the same score twentile, so that buckets span every score. The pairs'
member logits are computed on the driver (a bench-sized test set).

``--embedded`` does steps 3-4 on the ``scores`` (``model = 'link'``) of a pipeline run of the
config (the embedded default: run ``./spark-submit.sh pipeline`` first).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from blade_eval import RUN_DATE, config_for, referee_split, to_graph_indices  # noqa: E402
from pyspark.sql import DataFrame, SparkSession  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402
from pyspark.storagelevel import StorageLevel  # noqa: E402
from scipy.stats import beta as beta_dist  # noqa: E402

from recbatch.blade.heldout import held_out_from_linkpred  # noqa: E402
from recbatch.blade.stage import train_variant  # noqa: E402
from recbatch.config import RecbatchConfig, load_config  # noqa: E402
from recbatch.graph.stage import graph_stage, samples_stage  # noqa: E402
from recbatch.links.members import LinkMembers  # noqa: E402
from recbatch.links.scorer import ScorerHeads, score_pairs  # noqa: E402
from recbatch.links.stage import fit_scorer, link_members  # noqa: E402
from recbatch.log import configure_logging  # noqa: E402
from recbatch.session import build_session  # noqa: E402
from recbatch.thresholds import build_histograms, fit_from_histograms  # noqa: E402
from recbatch.thresholds.settings import ThresholdSettings  # noqa: E402

BENCH_THRESHOLDS = (
    "link_thresholds.n_buckets=5",
    "link_thresholds.min_bucket_support=1000",
    "link_thresholds.score_bins=200",
)


def test_pairs(held: DataFrame, negatives: int) -> DataFrame:
    """Each test edge (label 1) and the first ``negatives`` referee targets of its source."""
    stride = F.lit(negatives + 1)
    positives = held.select(
        (F.col("edge_id") * stride).alias("pair_id"),
        "src_index",
        "dst_index",
        F.lit(1).alias("label"),
    )
    drawn = held.select(
        "edge_id", "src_index", F.posexplode(F.slice("negatives", 1, negatives)).alias("j", "w")
    ).select(
        (F.col("edge_id") * stride + F.col("j") + 1).alias("pair_id"),
        "src_index",
        F.col("w").alias("dst_index"),
        F.lit(0).alias("label"),
    )
    return positives.unionByName(drawn)


def threshold_table(
    scores: DataFrame, settings: ThresholdSettings, targets: list[float], resamples: int
) -> pd.DataFrame:
    """Mean evaluation recall per rule and target over reseeded splits, and the miss counts."""
    records = []
    for r in range(resamples):
        reseeded = settings.model_copy(update={"seed": settings.seed + r})
        hists = build_histograms(scores, reseeded, key_cols=["pair_id"])
        for target in targets:
            fit = fit_from_histograms(
                hists, reseeded.model_copy(update={"target_precision": target})
            )
            for method in ("per_bucket", "single"):
                rule = fit.rule(method)
                precision = rule.overall["precision"]
                accepted, hits = rule.overall["eval_accepted"], rule.overall["eval_true_positives"]
                records.append(
                    {
                        "target": target,
                        "method": method,
                        "buckets": len(rule.score_thresholds),
                        "recall": rule.overall["recall"],
                        "precision": np.nan if precision is None else precision,
                        "certified": rule.certified_lower_bound is not None,
                        "missed": precision is not None and precision < target,
                        "missed_clearly": bool(
                            accepted
                            and precision_upper_bound(hits, accepted, settings.delta) < target
                        ),
                    }
                )
    frame = pd.DataFrame(records)
    rows = []
    for target, group in frame.groupby("target"):
        per, one = group[group.method == "per_bucket"], group[group.method == "single"]
        rows.append(
            {
                "target": target,
                "buckets": f"{per.buckets.min()}-{per.buckets.max()}",
                "recall_per_bucket": per.recall.mean(),
                "recall_single": one.recall.mean(),
                "gain": per.recall.mean() / one.recall.mean() - 1 if one.recall.mean() else np.nan,
                "precision_per_bucket": per.precision.mean(),
                "precision_single": one.precision.mean(),
                "miss_per_bucket": f"{int(per.missed.sum())}/{resamples}",
                "miss_single": f"{int(one.missed.sum())}/{resamples}",
                "clear_miss": f"{int(per.missed_clearly.sum())}/{int(one.missed_clearly.sum())}",
                "certified": f"{int(per.certified.sum())}/{int(one.certified.sum())}",
            }
        )
    return pd.DataFrame(rows)


def precision_upper_bound(hits: int, accepted: int, delta: float) -> float:
    """One-sided ``1 - delta`` Clopper-Pearson upper bound of a precision of ``hits`` in
    ``accepted``: below the target, the evaluation split itself is evidence (at level ``delta``)
    that the rule's population precision misses it. A plain "evaluation precision < target" also
    counts rules that sit just above the target and land below it by sampling noise alone."""
    return 1.0 if hits >= accepted else float(beta_dist.ppf(1 - delta, hits + 1, accepted - hits))


def reliability(frame: pd.DataFrame) -> pd.DataFrame:
    """Per uncertainty quintile: pairs, mean score, positive rate, and the positive rate of the
    pairs in the overall top score quintile (the same scores, different uncertainty)."""
    frame = frame.assign(u_q=pd.qcut(frame.uncertainty.rank(method="first"), 5, labels=False))
    top = frame.score >= frame.score.quantile(0.8)
    rows = []
    for q, group in frame.groupby("u_q"):
        high = group[top.loc[group.index]]
        rows.append(
            {
                "uncertainty_quintile": int(q),
                "uncertainty_max": group.uncertainty.max(),
                "pairs": len(group),
                "mean_score": group.score.mean(),
                "positive_rate": group.label.mean(),
                "top_score_pairs": len(high),
                "top_score_mean": high.score.mean(),
                "top_score_positive_rate": high.label.mean() if len(high) else np.nan,
            }
        )
    return pd.DataFrame(rows)


SCORE_BANDS = np.concatenate([np.arange(0.0, 0.95, 0.05), np.arange(0.95, 1.0, 0.01)])
"""Lower edges of the score bands of ``--plots``, as score percentiles: twentiles, the top one
cut in five (most real edges score in the top 5-10% of the pairs)."""
MIN_POINT_PAIRS = 30
LOGIT_TICKS = [0.0001, 0.001, 0.01, 0.1, 0.5, 0.9, 0.99, 0.999, 0.9999]


def reliability_curves(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The two views of ``--plots`` over the same score bands (``SCORE_BANDS``): per overall
    uncertainty quintile, and per uncertainty third *within* the band (at equal score). Columns
    ``group``, ``band``, ``mean_score``, ``positive_rate``, ``pairs``; points of fewer than
    ``MIN_POINT_PAIRS`` pairs are left out."""
    percentile = (frame.score.rank(method="first") - 1) / len(frame)
    band = np.searchsorted(SCORE_BANDS, percentile.to_numpy(), side="right") - 1
    frame = frame.assign(
        band=band,
        u_quintile=pd.qcut(frame.uncertainty.rank(method="first"), 5, labels=False),
    )
    frame["u_third"] = frame.groupby("band").uncertainty.transform(
        lambda u: pd.qcut(u.rank(method="first"), 3, labels=False)
    )

    def curves(group: str) -> pd.DataFrame:
        points = (
            frame.groupby([group, "band"])
            .agg(
                mean_score=("score", "mean"),
                positive_rate=("label", "mean"),
                pairs=("label", "size"),
            )
            .reset_index()
            .rename(columns={group: "group"})
        )
        return points[points.pairs >= MIN_POINT_PAIRS]

    return curves("u_quintile"), curves("u_third")


def one_threshold_at(frame: pd.DataFrame, precision: float) -> tuple[float, float] | None:
    """Score and recall of the lowest single threshold whose pairs at or above it reach
    ``precision`` over all of ``frame``; None if none does. In-sample and uncertified, so it
    flatters one threshold."""
    ordered = frame.sort_values("score", ascending=False)
    hits = ordered.label.cumsum().to_numpy()
    reached = np.flatnonzero(hits / np.arange(1, len(ordered) + 1) >= precision)
    if not len(reached) or not hits[-1]:
        return None
    return float(ordered.score.iloc[reached[-1]]), float(hits[reached[-1]] / hits[-1])


def plot_reliability_views(
    frame: pd.DataFrame, title: str, path: Path, precision: float = 0.8
) -> None:
    """``reliability_curves`` as two panels with ~95% binomial error bars, the diagonal and the
    score where one threshold reaches ``precision``: curves on top of each other right of that
    line mean the uncertainty has nothing to add to the score there."""
    import matplotlib

    from recbatch.report.plots import rate_with_error_bars, styled_figure

    by_bucket, at_equal = reliability_curves(frame)
    cut = (one_threshold_at(frame, precision) or (None, None))[0]
    panels = (
        (
            by_bucket,
            "uncertainty quintile",
            "as bucketed: each uncertainty quintile per score band",
        ),
        (at_equal, "uncertainty third", "at equal score: uncertainty thirds within each band"),
    )
    with styled_figure(path, 12, 5) as fig:
        fig.suptitle(title)
        for axes, (curves, legend, subtitle) in zip(fig.subplots(1, 2), panels, strict=True):
            groups = sorted(curves.group.unique())
            colours = matplotlib.colormaps["viridis_r"](np.linspace(0.15, 0.95, len(groups)))
            for colour, group in zip(colours, groups, strict=True):
                rows = curves[curves.group == group].sort_values("mean_score")
                rate_with_error_bars(
                    axes,
                    rows.mean_score.clip(1e-4, 1 - 1e-4),
                    rows.positive_rate.to_numpy(float),
                    rows.pairs.to_numpy(float),
                    colour,
                    f"{legend} {group + 1}" + (" (most certain)" if group == 0 else ""),
                    markersize=3,
                    linewidth=1.2,
                    elinewidth=0.6,
                )
            if cut is not None:
                axes.axvline(
                    np.clip(cut, 1e-4, 1 - 1e-4),
                    color="#c0392b",
                    linestyle=":",
                    label=f"one threshold at precision {precision:g}",
                )
            diagonal = np.linspace(1e-4, 1 - 1e-4, 200)
            axes.plot(diagonal, diagonal, linestyle="--", color="#999999", linewidth=1)
            axes.set_xscale("logit")  # scores pile up near 0: log-odds spread both ends
            axes.set_xlim(1e-4, 1 - 1e-4)
            axes.set_xticks(LOGIT_TICKS, [f"{t:g}" for t in LOGIT_TICKS], minor=False)
            axes.set_xticks([], minor=True)
            axes.set_ylim(0, 1)
            axes.set_xlabel("mean link probability in the score band (log-odds scale)")
            axes.set_ylabel("share of real edges")
            axes.set_title(subtitle, fontsize=10)
            axes.legend(loc="lower right", fontsize=8)


def redraw(folder: Path) -> None:
    """Every plot of ``folder`` again from the scored pairs saved beside it (``--redraw``)."""
    for pairs in sorted(folder.glob("*.parquet")):
        frame = pd.read_parquet(pairs)
        plot_reliability_views(
            frame, frame.attrs.get("title", pairs.stem), pairs.with_suffix(".png")
        )
        print(f"reliability plot: {pairs.with_suffix('.png')}", flush=True)


def with_matched_gain(table: pd.DataFrame, frame: pd.DataFrame) -> pd.DataFrame:
    """``table`` with ``gain_matched``: the per-bucket recall against one threshold at the
    per-bucket rule's own mean evaluation precision (``one_threshold_at``). The certified
    single threshold lands above its target (cora_ml, 0.8: at 0.87-0.89), so part of ``gain``
    is precision slack that the per-bucket rule spends; ``gain_matched`` leaves that out and,
    the reference being in-sample, errs against per-bucket thresholds."""
    matched = [
        (one_threshold_at(frame, p) or (np.nan, np.nan))[1] if np.isfinite(p) else np.nan
        for p in table.precision_per_bucket
    ]
    return table.assign(gain_matched=table.recall_per_bucket / np.array(matched) - 1)


def report(name: str, scores: DataFrame, settings: ThresholdSettings, args) -> None:
    # the labelled pairs (13.6k on cora_ml, 171k on wiki_vote) collected once for every view
    frame = scores.select("score", "uncertainty", "label").toPandas()
    rows, positives = len(frame), int(frame.label.sum())
    print(f"\n### {name}: {rows} labelled pairs, {positives} real edges", flush=True)
    table = threshold_table(scores, settings, args.targets, args.resamples)
    print(with_matched_gain(table, frame).to_string(index=False, float_format="%.3f"), flush=True)
    print(reliability(frame).to_string(index=False, float_format="%.3f"), flush=True)
    if args.plots:
        path = Path(args.plots) / (re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") + ".png")
        frame.attrs["title"] = f"{name}: {rows:,} labelled pairs, {positives / rows:.1%} real edges"
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(path.with_suffix(".parquet"))  # --redraw draws it again without Spark
        plot_reliability_views(frame, frame.attrs["title"], path)
        print(f"reliability plot: {path}", flush=True)


def alternative_uncertainties(
    spark: SparkSession, scored: DataFrame, members, heads, nodes: DataFrame
) -> dict[str, DataFrame]:
    """Other uncertainties of the scored pairs (module docstring ``--alternatives``), each a
    frame of ``pair_id``, ``label``, ``score``, ``uncertainty``."""
    import torch

    from recbatch.links.scorer import LinkScorer

    frame = scored.select(
        "pair_id", "src_index", "dst_index", "label", "score", "uncertainty"
    ).toPandas()
    deg = nodes.select("node_index", "in_degree", "out_degree").toPandas().sort_values("node_index")
    indeg, outdeg = deg.in_degree.to_numpy(), deg.out_degree.to_numpy()
    src, dst = frame.src_index.to_numpy(), frame.dst_index.to_numpy()
    with torch.no_grad():
        index = torch.as_tensor(np.stack([src, dst], 1), dtype=torch.long)
        logits = LinkScorer(members, heads)(index).double().numpy()
    total_src, total_dst = outdeg[src] + indeg[src], outdeg[dst] + indeg[dst]
    variants = {
        "logit_sd": logits.std(1),
        "evidence_source_out": 1 / np.sqrt(1 + outdeg[src]),
        "evidence_target_in": 1 / np.sqrt(1 + indeg[dst]),
        "evidence_min_degree": 1 / np.sqrt(1 + np.minimum(total_src, total_dst)),
        "evidence_sum": 1 / np.sqrt(1 + total_src) + 1 / np.sqrt(1 + total_dst),
    }
    score = frame.score.to_numpy()
    for name, values in [("production", frame.uncertainty.to_numpy()), *list(variants.items())]:
        variants[f"{name}_at_equal_score"] = at_equal_score(score, values)
    base = frame[["pair_id", "label", "score"]]
    return {
        name: spark.createDataFrame(base.assign(uncertainty=values.astype(float)))
        for name, values in variants.items()
    }


def at_equal_score(score: np.ndarray, uncertainty: np.ndarray, bands: int = 20) -> np.ndarray:
    """The uncertainty's percentile among pairs of about the same score (``bands`` score
    quantiles): what is left of it once the score level is taken out. Buckets on it each span
    every score, so a threshold per bucket is a different rule only if, at equal score, the
    positive rate moves with the uncertainty (MIST's premise)."""
    band = pd.qcut(pd.Series(score).rank(method="first"), bands, labels=False)
    return pd.Series(uncertainty).groupby(band).rank(pct=True, method="first").to_numpy()


def scoring_cost(spark: SparkSession, members, heads, num_nodes: int, pairs: int) -> float:
    """Seconds per 1M pairs to score ``pairs`` random (source, target) pairs with their
    uncertainty in Spark (``mapInPandas``, written to the no-op sink: compute only)."""
    random_pairs = spark.range(pairs).select(
        "id",
        F.pmod(F.xxhash64("id", F.lit(1)), F.lit(num_nodes)).cast("int").alias("src_index"),
        F.pmod(F.xxhash64("id", F.lit(2)), F.lit(num_nodes)).cast("int").alias("dst_index"),
    )
    scored = score_pairs(spark, random_pairs, members, heads, keep=["id"])
    start = time.monotonic()
    scored.write.format("noop").mode("overwrite").save()
    return (time.monotonic() - start) / pairs * 1e6


def scored_split(
    spark: SparkSession, cfg: RecbatchConfig, split: Path, nodes: DataFrame, edges: DataFrame
) -> tuple[DataFrame, float, LinkMembers, ScorerHeads]:
    """The split's labelled test pairs with score and uncertainty, the seconds their scoring
    took (job start-up and the members' draw included: not a rate, ``--cost-pairs`` is), the
    scorer's members and heads."""
    unc = cfg.link_uncertainty
    num_nodes = nodes.count()
    held = to_graph_indices(held_out_from_linkpred(spark, str(split), "test"), nodes)
    pairs = test_pairs(held, unc.negatives_per_edge).persist(StorageLevel.MEMORY_AND_DISK)
    pairs.count()
    members = link_members(spark, cfg, nodes)
    heads, _ = fit_scorer(edges, members, unc, num_nodes)
    scored = score_pairs(
        spark, pairs, members, heads, keep=["pair_id", "label", "src_index", "dst_index"]
    )
    start = time.monotonic()
    scored = scored.persist(StorageLevel.MEMORY_AND_DISK)
    scored.count()
    seconds = time.monotonic() - start
    pairs.unpersist()
    return scored, seconds, members, heads


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--datasets", default="cora_ml,wiki_vote")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--methods", default="mc_dropout,heads")
    ap.add_argument("--targets", default="0.7,0.8,0.9")
    ap.add_argument("--resamples", type=int, default=20)
    ap.add_argument("--work-dir", default=str(ROOT / "var" / "bench" / "blade"))
    ap.add_argument("--config", default=str(ROOT / "conf" / "local.yaml"))
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--embedded", action="store_true")
    ap.add_argument("--alternatives", action="store_true", help="other uncertainties too")
    ap.add_argument("--cost-pairs", type=int, default=0, help="time scoring this many pairs")
    ap.add_argument("--plots", default="", help="write the reliability plots into this folder")
    ap.add_argument(
        "--redraw", action="store_true", help="redraw --plots from its Parquet files, no Spark"
    )
    args = ap.parse_args()
    if args.redraw and not args.plots:
        ap.error("--redraw needs --plots DIR: the folder whose Parquet files to draw again")
    if args.redraw:
        redraw(Path(args.plots))
        return
    args.targets = [float(t) for t in args.targets.split(",")]
    if not args.embedded:  # the dev graphs' test pairs: 13k (cora_ml) to 160k (wiki_vote)
        args.set = [*BENCH_THRESHOLDS, *args.set]
    configure_logging("WARNING")
    if args.embedded:
        cfg = load_config(Path(args.config), args.set)
        spark = build_session(cfg)
        scores = (
            spark.read.format("delta")
            .load(cfg.table_path("scores"))
            .where(
                (F.col("model") == "link") & (F.col("run_date") == F.lit(cfg.effective_run_date()))
            )
            .withColumnRenamed("example_id", "pair_id")
        )
        report(
            f"embedded default ({cfg.link_uncertainty.method})", scores, cfg.link_thresholds, args
        )
        return
    first = Path(args.work_dir)
    datasets, seeds = args.datasets.split(","), [int(s) for s in args.seeds.split(",")]
    spark = None
    for dataset in datasets:
        for seed in seeds:
            split = referee_split(dataset, seed, first)
            for method in args.methods.split(","):
                cfg = config_for(args, dataset, seed, split)
                unc = cfg.link_uncertainty.model_copy(update={"method": method})
                cfg = cfg.model_copy(update={"link_uncertainty": unc})
                if spark is None:
                    spark = build_session(cfg)
                graph_stage(spark, cfg)
                samples_stage(spark, cfg)
                train_variant(
                    spark, cfg, "blade"
                )  # reuses trained GNNs; writes MC draws if missing
                nodes = (
                    spark.read.format("delta")
                    .load(cfg.table_path("graph_nodes"))
                    .where(F.col("run_date") == F.lit(RUN_DATE))
                )
                edges = (
                    spark.read.format("delta")
                    .load(cfg.table_path("graph_edges"))
                    .where(F.col("run_date") == F.lit(RUN_DATE))
                )
                scored, seconds, members, heads = scored_split(spark, cfg, split, nodes, edges)
                print(
                    f"\n## {dataset} seed {seed} {method}: pairs scored in {seconds:.1f} s "
                    "(start-up included; --cost-pairs for a rate)",
                    flush=True,
                )
                report(f"{dataset} seed {seed} {method}", scored, cfg.link_thresholds, args)
                if args.cost_pairs:
                    cost = scoring_cost(spark, members, heads, nodes.count(), args.cost_pairs)
                    print(
                        f"scoring cost ({method}, {members.count} member(s) x "
                        f"{heads.weight.shape[0]} head(s)): {cost:.1f} s per 1M pairs over "
                        f"{args.cost_pairs:,} random pairs",
                        flush=True,
                    )
                if args.alternatives:
                    for name, frame in alternative_uncertainties(
                        spark, scored, members, heads, nodes
                    ).items():
                        report(
                            f"{dataset} seed {seed} {method}, uncertainty {name}",
                            frame,
                            cfg.link_thresholds,
                            args,
                        )
                scored.unpersist()


if __name__ == "__main__":
    main()
