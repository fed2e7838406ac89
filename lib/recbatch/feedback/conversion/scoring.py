"""Scoring with a trained conversion model in Spark (``mapInPandas``, weights broadcast once)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from torch import nn

from recbatch.config import ConversionSettings
from recbatch.feedback.conversion.model import build_model


def map_model(
    rows: DataFrame,
    state_dict: dict[str, torch.Tensor],
    settings: ConversionSettings,
    predict: Callable[[nn.Module, torch.Tensor], dict[str, np.ndarray]],
    keep: Sequence[str],
    schema: str,
) -> DataFrame:
    """``keep`` columns of ``rows`` plus the columns ``predict(model, features)`` returns, computed
    in ``mapInPandas`` by the model rebuilt once per task from the broadcast weights.

    One scaffold for every scorer (plain probability here, score + uncertainty in
    ``recbatch.uncertainty.scores``): the weights travel once, each Python worker builds the
    model once, and rows go through it one Arrow batch at a time.
    """
    weights = {k: v.numpy() for k, v in state_dict.items()}
    n_features = int(weights["net.0.weight"].shape[1])
    shared = rows.sparkSession.sparkContext.broadcast(weights)
    kept = list(keep)

    def run(frames: Iterator[Any]) -> Iterator[Any]:
        import pandas as pd

        torch.set_num_threads(1)
        model = build_model(n_features, settings)
        model.load_state_dict({k: torch.from_numpy(v) for k, v in shared.value.items()})
        model.eval()
        for frame in frames:
            if not len(frame):
                continue
            x = torch.from_numpy(np.stack(frame["features"].to_numpy()).astype(np.float32))
            yield pd.DataFrame({**{c: frame[c] for c in kept}, **predict(model, x)})

    return rows.select(*kept, "features").mapInPandas(run, schema)


def _mean_probability(model: nn.Module, x: torch.Tensor) -> dict[str, np.ndarray]:
    with torch.no_grad():
        p = torch.sigmoid(model(x)).mean(-1)
    return {"probability": p.numpy().astype(np.float64)}


def score(
    rows: DataFrame, state_dict: dict[str, torch.Tensor], settings: ConversionSettings
) -> DataFrame:
    """``example_id``, ``label`` (double) and ``probability`` (mean over the heads) of ``rows``
    (with ``features``)."""
    typed = rows.select(F.col("example_id").cast("long"), F.col("label").cast("double"), "features")
    return map_model(
        typed,
        state_dict,
        settings,
        _mean_probability,
        ["example_id", "label"],
        "example_id long, label double, probability double",
    )


def score_models(
    rows: DataFrame, state_dicts: Sequence[dict[str, torch.Tensor]], settings: ConversionSettings
) -> DataFrame:
    """``example_id``, ``label`` and ``probability_<i>`` of model ``i`` for every row, in one
    ``mapInPandas`` pass: a comparison of many models (methods x seeds) reads the test set and
    starts its Python workers once, not once per model."""
    weights = [{k: v.numpy() for k, v in state.items()} for state in state_dicts]
    n_features = int(weights[0]["net.0.weight"].shape[1])
    shared = rows.sparkSession.sparkContext.broadcast(weights)
    columns = [f"probability_{i}" for i in range(len(weights))]
    schema = "example_id long, label double, " + ", ".join(f"{c} double" for c in columns)
    typed = rows.select(F.col("example_id").cast("long"), F.col("label").cast("double"), "features")

    def run(frames: Iterator[Any]) -> Iterator[Any]:
        import pandas as pd

        torch.set_num_threads(1)
        models = []
        for state in shared.value:
            model = build_model(n_features, settings)
            model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
            models.append(model.eval())
        for frame in frames:
            if not len(frame):
                continue
            x = torch.from_numpy(np.stack(frame["features"].to_numpy()).astype(np.float32))
            out = {"example_id": frame["example_id"], "label": frame["label"]}
            for column, model in zip(columns, models, strict=True):
                out[column] = _mean_probability(model, x)["probability"]
            yield pd.DataFrame(out)

    return typed.mapInPandas(run, schema)
