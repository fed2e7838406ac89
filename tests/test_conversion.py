"""The conversion model and the weighting-method harness on a small generated log."""

from __future__ import annotations

import math
from datetime import UTC

import numpy as np
import pytest
import torch
from conftest import make_test_config
from pyspark.sql import functions as F

from recbatch.feedback.conversion import (
    METHODS,
    ConversionInputError,
    ConversionSettings,
    build_model,
    conversion_stage,
    data_end,
    epochs_for_budget,
    evaluate_methods,
    examples_end,
    feature_stats,
    feature_vector,
    fnw_weights,
    relative_improvement,
    train_conversion_model,
    weighted_bce,
    write_tensor_set,
    write_training_sets,
)
from recbatch.train.distributed import is_local_master, run_distributed

SETTINGS = ConversionSettings(
    epochs=5,
    batch_size=64,
    learning_rate=0.02,
    hidden_sizes=(32, 16),
    num_processes=2,
    row_groups_per_trainer=3,
    test_days=4,
)
"""About 2,500 training rows: small batches and a few epochs so the model gets past its start."""


@pytest.fixture(scope="module")
def conv_cfg(small_log_cfg):
    return small_log_cfg


@pytest.fixture(scope="module")
def examples(spark, conv_cfg):
    return spark.read.format("delta").load(conv_cfg.table_path("examples"))


@pytest.fixture(scope="module")
def metric_rows(spark, conv_cfg):
    return conversion_stage(spark, conv_cfg, SETTINGS)


def test_weighted_loss_matches_a_hand_computed_value():
    logits = torch.tensor([0.0, 2.0, -1.0])
    w_pos = torch.tensor([1.0, 0.3, 0.0])
    w_neg = torch.tensor([0.0, 0.7, 2.0])

    def sigmoid(x: float) -> float:
        return 1 / (1 + math.exp(-x))

    expected = (
        1.0 * -math.log(sigmoid(0.0))
        + 0.3 * -math.log(sigmoid(2.0))
        + 0.7 * -math.log(1 - sigmoid(2.0))
        + 2.0 * -math.log(1 - sigmoid(-1.0))
    ) / 3
    assert weighted_bce(logits, w_pos, w_neg).item() == pytest.approx(expected, rel=1e-6)


def test_fnw_weights_are_the_fake_negative_importance_ratios():
    """With p the model's prediction, FNW's biased data has b(1|x) = p/(1+p), b(0|x) = 1/(1+p);
    weighting it by P/b gives back the true expectation p·l1 + (1-p)·l0 for any losses."""
    logits = torch.tensor([-2.0, 0.0, 1.5], requires_grad=True)
    p = torch.sigmoid(logits.detach())
    w_pos, w_neg = fnw_weights(logits, torch.ones(3), torch.ones(3))
    assert torch.allclose(w_pos, 1 + p) and torch.allclose(w_neg, (1 - p) * (1 + p))
    assert not w_pos.requires_grad and not w_neg.requires_grad, "stop-gradient on p"
    l1, l0 = torch.tensor([0.3, 1.1, 2.0]), torch.tensor([1.7, 0.4, 0.9])
    b1, b0 = p / (1 + p), 1 / (1 + p)
    assert torch.allclose(b1 * w_pos * l1 + b0 * w_neg * l0, p * l1 + (1 - p) * l0)
    zero_pos, _ = fnw_weights(logits, torch.zeros(3), torch.ones(3))
    assert torch.equal(zero_pos, torch.zeros(3)), "an observed negative gets no positive term"


def test_local_master_detection():
    assert is_local_master("local[2]") and is_local_master("local")
    assert not is_local_master("spark://host:7077")


def test_two_processes_read_disjoint_shards_and_the_loss_decreases(
    spark, examples, conv_cfg, data_root
):
    stats = feature_stats(examples)
    rows = examples.select(
        "example_id",
        feature_vector(stats),
        F.col("conversion_ts").isNotNull().cast("float").alias("w_pos"),
        F.col("conversion_ts").isNull().cast("float").alias("w_neg"),
        F.col("conversion_ts").isNotNull().cast("float").alias("label"),
    )
    path = str(data_root / "conversion_shards")
    total = write_tensor_set(rows, path, SETTINGS)

    result = run_distributed(
        train_conversion_model,
        path,
        len(stats),
        SETTINGS,
        record_ids=True,
        num_processes=2,
        spark=spark,
    )

    ids = result["ids_per_rank"]
    assert len(ids) == 2 and all(ids), "both processes ran and read rows"
    assert not set(ids[0]) & set(ids[1]), "shards are disjoint"
    every = sorted(r["example_id"] for r in spark.read.parquet(path).collect())
    assert sorted(ids[0] + ids[1]) == every, "together every row exactly once"
    assert sum(result["rows_per_rank"]) == total
    epochs = result["epochs"]
    assert [e["epoch"] for e in epochs] == list(range(SETTINGS.epochs + 1)), "0: linear part"
    assert [e["rows"] for e in epochs] == [total] * (SETTINGS.epochs + 1)
    assert epochs[-1]["loss"] < epochs[1]["loss"]
    assert result["state_dict"]["net.0.weight"].shape == (32, len(stats))
    assert result["state_dict"]["linear.weight"].shape == (1, len(stats))


def test_metric_table_has_every_method_and_ri_auc_follows_its_formula(spark, conv_cfg, metric_rows):
    assert [r["method"] for r in metric_rows] == list(METHODS)
    by = {r["method"]: r for r in metric_rows}
    assert by["vanilla"]["auc"] > 0.5, "the model learnt something from observed labels"
    v, o = by["vanilla"]["auc"], by["oracle"]["auc"]
    assert by["vanilla"]["ri_auc"] == 0.0
    assert by["oracle"]["ri_auc"] == 1.0
    for r in metric_rows:
        assert r["ri_auc"] == pytest.approx((r["auc"] - v) / (o - v))
        assert 0 <= r["pr_auc"] <= 1 and r["log_loss"] > 0
        assert r["test_rows"] == by["vanilla"]["test_rows"] > r["test_positives"] > 0
    assert by["waiting_window"]["train_rows"] < by["vanilla"]["train_rows"]
    assert relative_improvement(0.7, 0.7, 0.7) is None

    table = spark.read.format("delta").load(conv_cfg.table_path("conversion_metrics"))
    assert sorted(r["method"] for r in table.collect()) == sorted(METHODS)


def test_missing_examples_table_is_a_clear_error(spark, data_root):
    cfg = make_test_config(data_root / "conversion_empty")
    with pytest.raises(ConversionInputError, match="no examples table"):
        conversion_stage(spark, cfg, SETTINGS)


def test_empty_training_set_is_a_clear_error(spark, conv_cfg, examples):
    first = examples.agg(F.min("view_ts")).head()[0]
    too_short = examples_end(examples.where(F.col("view_ts") <= F.lit(first)))
    with pytest.raises(ConversionInputError, match="no training examples"):
        evaluate_methods(
            spark, examples, conv_cfg, ["vanilla"], SETTINGS.model_copy(), end=too_short
        )


def test_average_precision_is_sklearns_with_ties(spark):
    from sklearn.metrics import average_precision_score

    from recbatch.feedback.conversion import average_precision

    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 500)
    scores = np.round(rng.random(500) * 0.5 + 0.3 * labels, 2)  # rounded: many tied scores
    frame = spark.createDataFrame(
        [(float(s), int(y)) for s, y in zip(scores, labels, strict=True)],
        "probability double, label int",
    )
    assert average_precision(frame) == pytest.approx(
        average_precision_score(labels, scores), abs=1e-12
    )


def test_epoch_budget_covers_min_steps_whatever_the_size():
    settings = SETTINGS.model_copy(update={"min_steps": 300, "batch_size": 256, "epochs": 40})
    assert epochs_for_budget(6_000, settings, 2) == 25  # 12 steps per epoch and trainer
    assert epochs_for_budget(1_000_000, settings, 2) == 1
    assert epochs_for_budget(100, settings, 2) == 40  # capped by epochs


def _interaction_rows(spark, n: int):
    """A set no linear model separates: the label is ``x0·x1 > 0``."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    y = (x[:, 0] * x[:, 1] > 0).astype(np.float32)
    return spark.createDataFrame(
        [(i, x[i].tolist(), float(y[i]), float(1 - y[i]), float(y[i])) for i in range(n)],
        "example_id long, features array<float>, w_pos double, w_neg double, label double",
    )


def test_hidden_layers_correct_the_logistic_part_and_stop_at_their_best_epoch(spark, data_root):
    """An interaction no linear model holds: the hidden layers beat the logistic part (epoch 0)
    on the validation slice, training stops before its epoch cap, and the weights returned are
    those of the best validation epoch."""
    settings = SETTINGS.model_copy(
        update={
            "epochs": 60,
            "min_steps": 40,
            "patience": 3,
            "batch_size": 32,
            "num_processes": 1,
            "min_validation_positives": 10,
        }
    )
    sets = write_training_sets(_interaction_rows(spark, 1200), str(data_root / "budget"), settings)
    result = run_distributed(
        train_conversion_model,
        sets.train_path,
        3,
        settings,
        val_path=sets.val_path,
        train_rows=sets.train_rows,
        num_processes=1,
        spark=spark,
    )
    history = result["epochs"]
    best = min(e["val_loss"] for e in history)
    assert history[0]["val_loss"] > 0.6 > 0.3 > best, history  # chance is log 2 = 0.69
    assert len(history) < settings.epochs + 1, "stopped early"
    assert history[result["best_epoch"]]["val_loss"] == best and result["best_epoch"] > 0
    model = build_model(3, settings)
    model.load_state_dict(result["state_dict"])
    val = spark.read.parquet(sets.val_path).toPandas()
    with torch.no_grad():
        logits = model(torch.tensor(np.stack(val["features"]), dtype=torch.float32))
        loss = weighted_bce(
            logits,
            torch.tensor(val["w_pos"].to_numpy()).unsqueeze(-1),
            torch.tensor(val["w_neg"].to_numpy()).unsqueeze(-1),
        ).item()
    assert loss == pytest.approx(best, rel=1e-4), "the returned weights are the best epoch's"
    assert sets.val_rows + sets.train_rows == 1200 and 70 < sets.val_rows < 170


def test_a_thin_validation_slice_leaves_the_logistic_part_whatever_the_seed(spark, data_root):
    """Too little positive weight in the slice to judge the hidden layers: none are trained, the
    output of the hidden part stays zero, and two seeds give the same model."""
    settings = SETTINGS.model_copy(
        update={"num_processes": 1, "min_validation_positives": 1e6, "l2_grid": (1e-3,)}
    )
    sets = write_training_sets(_interaction_rows(spark, 400), str(data_root / "thin"), settings)
    models = [
        train_conversion_model(
            sets.train_path,
            3,
            settings.model_copy(update={"seed": seed}),
            val_path=sets.val_path,
            train_rows=sets.train_rows,
        )
        for seed in (1, 2)
    ]
    for result in models:
        assert result["best_epoch"] == 0 and [e["epoch"] for e in result["epochs"]] == [0]
        assert not result["state_dict"]["net.4.weight"].any()
    x = torch.randn(50, 3)
    predictions = []
    for result in models:
        model = build_model(3, settings)
        model.load_state_dict(result["state_dict"])
        with torch.no_grad():
            predictions.append(model(x))
    assert torch.allclose(predictions[0], predictions[1], atol=1e-6)


@pytest.mark.parametrize("hidden_sizes", [(), (8, 4)])
def test_model_seeds_of_one_job_share_the_convex_solve(spark, data_root, monkeypatch, hidden_sizes):
    """The logistic model (or the MLP's linear part) does not depend on the seed with one head:
    the seeds of one job solve it once. With hidden layers the seeds still train them apart."""
    from recbatch.feedback.conversion import training

    settings = SETTINGS.model_copy(
        update={"num_processes": 1, "hidden_sizes": hidden_sizes, "l2_grid": (1e-3,), "epochs": 2}
    )
    folder = str(data_root / f"shared-solve-{len(hidden_sizes)}")
    sets = write_training_sets(_interaction_rows(spark, 400), folder, settings)
    solves = []
    for name in ("solve_linear_part", "train_logistic"):
        solve = getattr(training, name)
        monkeypatch.setattr(
            training,
            name,
            lambda *a, _solve=solve, _name=name, **k: solves.append(_name) or _solve(*a, **k),
        )
    job = training.TrainingJob(sets.train_path, sets.val_path, sets.train_rows)
    ((first, second),) = training.train_conversion_jobs([job], 3, settings, [1, 2])
    assert len(solves) == 1
    convex = "linear.weight" if hidden_sizes else "net.0.weight"  # the logistic model's layer
    assert torch.equal(first["state_dict"][convex], second["state_dict"][convex])
    if hidden_sizes:
        hidden = [r["state_dict"]["net.0.weight"] for r in (first, second)]
        assert not torch.equal(*hidden), "the seed moves the hidden layers"


def test_one_cutoff_and_training_window_reach_every_stage(spark, conv_cfg, examples):
    """feedback.cutoff is T of the evaluation, the scores stage and the flip weights alike;
    conversion.train_days bounds the training rows; censored test labels are counted, and refused
    when mature labels are asked for."""
    from datetime import datetime, timedelta

    from recbatch.config import load_config
    from recbatch.feedback.stage import snapshot_cutoff
    from recbatch.uncertainty.scores import build_scores

    t = datetime(2026, 1, 21, tzinfo=UTC)
    at = load_config(
        None,
        [
            f"paths.data_root={conv_cfg.path('data_root')}",
            "run_date=2026-02-02",
            f"feedback.cutoff={t.isoformat()}",
            "conversion.train_days=7",
            "conversion.test_labels=censored",
        ],
    )
    settings = SETTINGS.model_copy(update={"train_days": 7.0, "test_labels": "censored"})
    end = data_end(spark, at, examples)
    view = F.col("view_ts")
    in_window = examples.where((view >= F.lit(t - timedelta(days=7))) & (view < F.lit(t))).count()
    test = examples.where((view >= F.lit(t)) & (view < F.lit(t + timedelta(days=4))))
    censored = test.where(view > F.lit(end - timedelta(hours=168))).count() / test.count()
    assert 0 < in_window < examples.where(view < F.lit(t)).count() and 0 < censored < 1

    (row,) = evaluate_methods(spark, examples, at, ["vanilla"], settings, end=end)
    assert row["cutoff"] == t and row["train_start"] == t - timedelta(days=7)
    assert row["train_rows"] == in_window and row["test_rows"] == test.count()
    assert row["censored_share"] == pytest.approx(censored)

    scores_cfg = at.model_copy(update={"conversion": settings})
    built = build_scores(spark, examples, scores_cfg, end)
    assert built.summary["cutoff"] == t and built.summary["train_rows"] == in_window
    assert snapshot_cutoff(spark, at) == t, "the flip weights' snapshot is at T too"

    with pytest.raises(ConversionInputError, match="test labels are not mature"):
        evaluate_methods(
            spark,
            examples,
            at,
            ["vanilla"],
            settings.model_copy(update={"test_labels": "mature"}),
            end=end,
        )


def test_model_seeds_train_one_model_per_seed_on_the_same_rows(spark, conv_cfg, examples):
    """``conversion.model_seeds`` = 2: two rows per method, seeds 7 and 8, the same training and
    test rows; RI-AUC pairs each seed with vanilla and oracle of that seed. The seed moves the
    hidden layers only, so they train here whatever the small log's validation slice holds."""
    settings = SETTINGS.model_copy(
        update={"model_seeds": 2, "epochs": 2, "min_validation_positives": 0}
    )
    end = data_end(spark, conv_cfg, examples)
    rows = evaluate_methods(spark, examples, conv_cfg, ["vanilla", "oracle"], settings, end=end)
    assert [(r["method"], r["model_seed"]) for r in rows] == [
        ("vanilla", 7),
        ("vanilla", 8),
        ("oracle", 7),
        ("oracle", 8),
    ]
    assert len({(r["train_rows"], r["test_rows"]) for r in rows}) == 1
    vanilla = [r for r in rows if r["method"] == "vanilla"]
    assert vanilla[0]["log_loss"] != vanilla[1]["log_loss"], "the seeds give different models"
    for r in rows:
        assert r["ri_auc"] == (0.0 if r["method"] == "vanilla" else 1.0)


def test_no_hidden_layers_is_a_logistic_regression():
    """``hidden_sizes: []``: one linear layer from the features to the logit, no nonlinearity;
    negative widths are refused with the setting's name."""
    settings = ConversionSettings(hidden_sizes=())
    model = build_model(5, settings)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 1 and linears[0].in_features == 5 and linears[0].out_features == 1
    x = torch.randn(4, 5)
    expected = x @ linears[0].weight.T + linears[0].bias
    assert torch.allclose(model(x), expected)
    with pytest.raises(ValueError, match="conversion.hidden_sizes"):
        ConversionSettings(hidden_sizes=(8, 0))


def test_training_starts_at_the_weighted_base_rate(spark, data_root):
    """The solver starts from zero weights and a bias of log(sum w_pos / sum w_neg): the
    model's first prediction is the weighted positive rate, not 0.5."""
    from recbatch.feedback.conversion.convex import base_logit, load_shard, start_model

    rows = spark.createDataFrame(
        [(i, [0.0, 1.0], 1.0 if i < 3 else 0.0, 0.0 if i < 3 else 2.0, float(i < 3))
         for i in range(40)],
        "example_id long, features array<float>, w_pos float, w_neg float, label float",
    )  # fmt: skip
    path = str(data_root / "base_rate_shards")
    settings = SETTINGS.model_copy(update={"num_processes": 1, "row_groups_per_trainer": 1})
    write_tensor_set(rows, path, settings)
    logit = base_logit(load_shard([path], settings, torch.device("cpu")))
    assert logit == pytest.approx(math.log(3.0 / 74.0))
    model = start_model(2, 1, logit)
    assert model.bias.item() == pytest.approx(logit) and not model.weight.any()


def _noisy_rows(spark, n: int, signal: float, seed: int):
    """``n`` rows of 4 features whose first one moves the log-odds by ``signal`` (0: noise)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    y = (rng.random(n) < 1 / (1 + np.exp(-(signal * x[:, 0] - 1.5)))).astype(float)
    rows = spark.createDataFrame(
        [(i, x[i].tolist(), float(y[i]), float(1 - y[i]), float(y[i])) for i in range(n)],
        "example_id long, features array<float>, w_pos double, w_neg double, label double",
    )
    return rows, x, y


def test_the_logistic_model_is_the_penalised_optimum_whatever_the_seed(spark, data_root):
    """hidden_sizes []: L-BFGS over both trainers' shards (training set and validation slice)
    reaches scikit-learn's optimum of the same penalised loss, and two seeds give the same model
    (a convex loss has one optimum: issue 31's seed spread came from stopping short of it)."""
    from sklearn.linear_model import LogisticRegression

    rows, x, y = _noisy_rows(spark, 1200, 1.0, seed=1)
    settings = SETTINGS.model_copy(
        update={"hidden_sizes": (), "l2_grid": (1e-3,), "row_groups_per_trainer": 2}
    )
    sets = write_training_sets(rows, str(data_root / "logistic"), settings)
    assert sets.val_rows > 0
    models = [
        run_distributed(
            train_conversion_model,
            sets.train_path,
            4,
            settings.model_copy(update={"seed": seed}),
            val_path=sets.val_path,
            record_ids=True,
            num_processes=2,
            spark=spark,
        )
        for seed in (1, 2)
    ]
    first, second = models
    assert sorted(first["ids_per_rank"][0] + first["ids_per_rank"][1]) == list(range(1200))
    for key, value in first["state_dict"].items():
        assert torch.equal(value, second["state_dict"][key]), key
    reference = LogisticRegression(C=1 / (1e-3 * 1200), tol=1e-12, max_iter=10_000)
    reference.fit(x.astype(np.float64), y)
    got = first["state_dict"]
    assert got["net.0.weight"].numpy()[0] == pytest.approx(reference.coef_[0], abs=1e-4)
    assert got["net.0.bias"].item() == pytest.approx(reference.intercept_[0], abs=1e-4)
    assert first["l2"] == 1e-3 and first["epochs"][0]["rows"] == 1200


@pytest.mark.parametrize(("signal", "chosen"), [(0.0, 10.0), (2.0, 1e-6)])
def test_cross_validation_penalises_noise_and_spares_signal(spark, data_root, signal, chosen):
    """The penalty rule: on features that carry nothing the heavy penalty has the lower
    cross-validated loss; on a strong feature the light one does."""
    from recbatch.feedback.conversion.convex import train_logistic

    rows, _, _ = _noisy_rows(spark, 1500, signal, seed=2)
    settings = SETTINGS.model_copy(update={"hidden_sizes": (), "l2_grid": (1e-6, 10.0)})
    path = str(data_root / f"cv_signal_{signal}")
    write_tensor_set(rows, path, settings)
    result = train_logistic([path], 4, settings)
    assert result["l2"] == chosen, result["cv_loss"]
    assert set(result["cv_loss"]) == {1e-6, 10.0}


def test_the_solved_model_predicts_the_weighted_base_rate_on_average(spark, data_root):
    """At the optimum the bias's gradient is zero: sum (w_pos + w_neg)·p = sum w_pos, so the
    weighted model's mean prediction is the weighted base rate, whatever the weights (why
    self-normalising the importance weights fixes importance sampling's PCOC)."""
    from recbatch.feedback.conversion.convex import train_logistic

    rng = np.random.default_rng(4)
    n = 800
    x = rng.normal(size=(n, 3)).astype(np.float32)
    y = rng.random(n) < 0.2
    w_pos = np.where(y, rng.uniform(1, 5, n), 0.0)  # importance-like weights on positives
    w_neg = np.where(y, 0.0, rng.uniform(0.2, 1, n))
    rows = spark.createDataFrame(
        [(i, x[i].tolist(), float(w_pos[i]), float(w_neg[i]), float(y[i])) for i in range(n)],
        "example_id long, features array<float>, w_pos double, w_neg double, label double",
    )
    path = str(data_root / "calibrated")
    settings = SETTINGS.model_copy(update={"hidden_sizes": (), "l2_grid": (1e-2,)})
    write_tensor_set(rows, path, settings)
    model = build_model(3, settings)
    model.load_state_dict(train_logistic([path], 3, settings)["state_dict"])
    with torch.no_grad():
        p = torch.sigmoid(model(torch.tensor(x))).squeeze(-1).double().numpy()
    weight = w_pos + w_neg
    assert np.dot(weight, p) / weight.sum() == pytest.approx(w_pos.sum() / weight.sum(), rel=1e-5)
