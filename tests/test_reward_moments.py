"""A step's reward and reward_std pool every micro-batch's and process's scored rewards:
the mean weighs each batch by the samples it scored, and the std includes the spread
between batches, as one batch of all of them would log."""

from __future__ import annotations

import math

import pytest
import torch

from dsharp.reward_moments import (
    SCORED,
    combine,
    pooled_metrics,
    scored_summary,
    take_moments,
)

NAN = float("nan")


def test_pooled_reward_and_std_are_those_of_all_the_scored_rewards():
    batches = [torch.tensor([1.0, NAN, NAN, NAN]), torch.tensor([5.0, 7.0, 9.0, 11.0])]
    rows = [scored_summary(b) for b in batches]
    assert [r[SCORED] for r in rows] == [1, 4]

    out = pooled_metrics(take_moments(rows), has_std=True)

    everything = torch.tensor([1.0, 5.0, 7.0, 9.0, 11.0])
    assert out["reward"] == pytest.approx(everything.mean().item())  # 6.6, not (1 + 8) / 2
    assert out["reward_std"] == pytest.approx(everything.std(correction=0).item())
    assert all(SCORED not in r for r in rows)  # taken out: never logged


def test_one_batch_comes_back_as_it_was_and_an_unscored_one_adds_nothing():
    row = scored_summary(torch.tensor([0.25, 0.5, 2.0]))
    unscored = scored_summary(torch.tensor([NAN, NAN]))
    assert unscored[SCORED] == 0 and math.isnan(unscored["reward"])
    n, mean, m2 = combine([take_moments([dict(row)]), take_moments([unscored])])
    assert (n, mean) == (3, row["reward"])
    assert math.sqrt(m2 / n) == pytest.approx(row["reward_std"], rel=1e-12)
    assert pooled_metrics(take_moments([unscored]), has_std=True) == {}  # NaN rows stand


def test_without_a_std_the_mean_is_still_weighted_by_the_count_scored():
    rows = [
        scored_summary(torch.tensor([0.0, NAN]), std=False),
        scored_summary(torch.tensor([1.0, 1.0, 1.0]), std=False),
    ]
    assert "reward_std" not in rows[0]
    assert pooled_metrics(take_moments(rows), has_std=False) == {"reward": pytest.approx(0.75)}
