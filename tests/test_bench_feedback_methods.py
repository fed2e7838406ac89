"""bench/feedback_methods.py's check on its own table: a method whose model seeds disagree, or
that ranks worse than chance, is flagged and left out of the means instead of averaged in."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "feedback_methods.py"
_spec = importlib.util.spec_from_file_location("feedback_methods", _SCRIPT)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def _table(aucs: dict[str, list[float]]) -> list[list[dict]]:
    """Per replicate, one row per method (the other metrics fixed)."""
    replicates = len(next(iter(aucs.values())))
    return [
        [
            {
                "method": m,
                "auc": v[i],
                "pr_auc": 0.04,
                "log_loss": 0.07,
                "pcoc": 1.0,
                "ri_auc": None,
            }
            for m, v in aucs.items()
        ]
        for i in range(replicates)
    ]


def test_disagreeing_seeds_and_worse_than_chance_are_flagged_and_not_averaged() -> None:
    per_seed = _table(
        {
            "vanilla": [0.6414, 0.6413, 0.6414],
            "oracle": [0.674, 0.634, 0.701],  # issue 31's spread on one data set
            "waiting_window": [0.68, 0.389, 0.69],  # worse than chance once
        }
    )
    methods = ["vanilla", "oracle", "waiting_window"]
    flags = bench.flag_methods(per_seed, methods, max_sd=0.001)
    assert set(flags) == {"oracle", "waiting_window"}
    assert "sd of AUC 0.0337 > 0.001" in flags["oracle"]
    assert "below 0.5" in flags["waiting_window"]
    table = bench.summarise(per_seed, methods, 0.002, flags)
    assert "oracle               FLAGGED, not averaged" in table
    assert "0.6414" in table.splitlines()[1], "vanilla is averaged"
    paired = table[table.index("paired by seed") :]
    assert "oracle" not in paired and "waiting_window" not in paired


def test_seed_spread_is_not_checked_across_data_seeds() -> None:
    """Generated data: each seed is a new data set, whose spread is the data's, not training
    noise; only an AUC below 0.5 is flagged then."""
    per_seed = _table({"vanilla": [0.62, 0.70, 0.66]})
    assert bench.flag_methods(per_seed, ["vanilla"], max_sd=None) == {}
