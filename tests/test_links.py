"""Link-score uncertainty: the scorer's members and heads, through ``recbatch.uncertainty``."""

from __future__ import annotations

import numpy as np
import torch

from recbatch.links.members import LinkMembers
from recbatch.links.scorer import LinkScorer, ScorerHeads, fit_heads
from recbatch.uncertainty.estimators import predict_with_uncertainty


def _uncertainty(members: LinkMembers, heads: ScorerHeads, pairs: list[tuple[int, int]]):
    index = torch.as_tensor(np.array(pairs), dtype=torch.long)
    return predict_with_uncertainty(LinkScorer(members, heads), index, "heads")


def test_dropout_members_spread_a_noisy_pair_more_than_a_clean_one() -> None:
    rng = np.random.default_rng(0)
    draws, n, d = 16, 4, 8
    base = rng.normal(size=(n, d)).astype(np.float32)
    sources = np.repeat(base[None], draws, 0)
    targets = np.repeat(base[None], draws, 0)
    sources[:, 0] += rng.normal(scale=0.8, size=(draws, d)).astype(np.float32)  # noisy node 0
    members = LinkMembers(sources, targets)
    heads = ScorerHeads(np.full((1, d), 0.7), np.array([-0.5]))
    score, spread = _uncertainty(members, heads, [(0, 1), (2, 3)])
    assert spread[0] > 10 * spread[1] and spread[1] < 1e-6
    # the score is the mean member probability of a Platt-scaled dot product
    dots = (sources[:, 0] * targets[:, 1]).sum(1) * 0.7 - 0.5
    assert np.isclose(score[0], (1 / (1 + np.exp(-dots))).mean(), atol=1e-6)


def test_bootstrap_heads_are_seeded_and_spread_where_training_pairs_are_few_and_noisy() -> None:
    rng = np.random.default_rng(1)
    n, d = 2000, 4
    sources = np.zeros((n, d), np.float32)
    targets = np.ones((n, d), np.float32)
    common = rng.normal(size=1800)
    sources[:1800, 0] = common  # many clean pairs: label = sign of the feature
    sources[1800:, 1] = rng.normal(size=200) * 3  # few pairs on another feature, labels random
    labels = np.concatenate([(common > 0).astype(int), rng.integers(0, 2, 200)])
    members = LinkMembers(sources[None], targets[None])
    pairs = np.stack([np.arange(n), np.arange(n)], 1)
    fit = {"method": "heads", "heads": 8, "steps": 300, "seed": 4}
    heads = fit_heads(members, pairs, labels, **fit)
    again = fit_heads(members, pairs, labels, **fit)
    np.testing.assert_array_equal(heads.weight, again.weight)
    assert heads.weight.shape == (8, d)
    # a clean pair and a noisy pair with the same plain dot product
    probe_s = np.array([[1.5, 0, 0, 0], [0, 1.5, 0, 0]], np.float32)
    probe = LinkMembers(probe_s[None], np.ones((1, 2, d), np.float32))
    _, spread = _uncertainty(probe, heads, [(0, 0), (1, 1)])
    assert spread[1] > spread[0], spread
