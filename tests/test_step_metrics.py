"""A step's metrics pool its micro-batches' rows (from every process) exactly: a mean over
items weighs each batch by the items it kept, counts add up, the loss is the mean the
gradient takes, and a round that several calls train on counts once."""

from __future__ import annotations

import math

import pytest
import torch

from dsharp.methods.losses import masked_mean, nan_mean
from dsharp.reward_moments import scored_mean, scored_summary
from dsharp.step_metrics import ROUND, Mean, once_per_round, pool_rows

NAN = float("nan")


def test_a_mean_over_items_is_weighted_by_the_items_each_batch_kept():
    """Three batches kept 3, 1 and 0 pairs: the step's reward_w is the mean over its four
    pairs, not the mean of the two batch means; the loss is the plain mean the optimizer's
    gradient takes; the pair count is the sum."""
    rows = [
        {"loss": 0.5, "pairs": 3, "reward_w": Mean(1.0, 3)},
        {"loss": 1.5, "pairs": 1, "reward_w": Mean(0.0, 1)},
        {"loss": 1.0, "pairs": 0, "reward_w": Mean(NAN, 0)},
    ]
    assert pool_rows(rows) == {"loss": 1.0, "pairs": 4, "reward_w": 0.75}


def test_masked_and_nan_means_carry_the_count_they_are_over():
    values = torch.tensor([1.0, 2.0, 3.0])
    mean = masked_mean(values, torch.tensor([True, False, True]))
    assert (mean, mean.count) == (2.0, 2)
    empty = masked_mean(values, torch.zeros(3, dtype=torch.bool))
    assert math.isnan(empty) and empty.count == 0
    rewards = torch.tensor([NAN, 0.25, NAN, 0.75])
    assert (nan_mean(rewards), nan_mean(rewards).count) == (0.5, 2)


def test_equal_batches_pool_to_the_plain_mean_and_one_row_comes_back_as_logged():
    """The digits of runs whose batches kept as many items alike do not change."""
    values = [0.1, 0.2, 0.7]
    rows = [{"winner_mse": Mean(v, 4), "loss": v} for v in values]
    out = pool_rows(rows)
    assert out["winner_mse"] == sum(values) / 3 == out["loss"]
    one = pool_rows([{"winner_mse": Mean(0.3, 2), "pairs": 2, "reward": 0.125}])
    assert one == {"winner_mse": 0.3, "pairs": 2, "reward": 0.125}
    assert type(one["winner_mse"]) is float


def test_a_column_without_items_anywhere_keeps_its_value_and_a_missing_one_is_nan():
    """DDPO's approx_kl is 0.0 over no transitions: with none anywhere it stays 0.0; a column
    that only some rows have (grad_norm) pools over those; NaN everywhere stays NaN."""
    rows = [
        {"approx_kl": Mean(0.0, 0), "pairs": NAN},
        {"approx_kl": Mean(0.0, 0), "grad_norm": 4.0, "pairs": NAN},
    ]
    out = pool_rows(rows)
    assert out["approx_kl"] == 0.0 and out["grad_norm"] == 4.0 and math.isnan(out["pairs"])
    rows = [{"approx_kl": Mean(0.0, 0)}, {"approx_kl": Mean(0.5, 10)}]
    assert pool_rows(rows)["approx_kl"] == 0.5


def test_a_reward_without_a_std_is_pooled_over_the_samples_scored():
    """finetune and offline Diffusion-DPO log a reward mean: it pools by the count scored."""
    rows = [scored_mean(torch.tensor([1.0, NAN, NAN])), scored_mean(torch.tensor([0.0, 0.0]))]
    assert pool_rows(rows) == {"reward": pytest.approx(1 / 3)}


def test_a_round_trained_on_by_several_calls_counts_once():
    """DDPO/D3PO log a round's columns on each of its calls: a step that trains on the round
    twice and on a second round once has the two rounds' pairs and rewards, each once."""

    def call(number: int, rewards: list[float], pairs: int, clipfrac: float) -> dict:
        round_columns = {**scored_summary(torch.tensor(rewards)), "pairs": pairs}
        return {
            "clipfrac": clipfrac,
            **round_columns,
            ROUND: (number, tuple(round_columns)),
        }

    rows = [call(1, [0.0, NAN], 1, 0.25), call(1, [0.0, NAN], 1, 0.75), call(2, [3.0], 2, 0.5)]
    out = pool_rows(once_per_round(rows))
    assert out["pairs"] == 3 and out["reward_missing"] == 1
    assert out["reward"] == 1.5 and out["reward_std"] == 1.5  # of {0, 3}, not {0, 0, 3}
    assert out["clipfrac"] == 0.5  # a per-call column: every call
    assert all(ROUND not in r for r in rows)


def test_a_methods_tensor_metrics_become_plain_numbers_before_the_gather():
    import pickle

    import torch

    from dsharp.step_metrics import ROUND, Mean, plain_row

    row = plain_row(
        {"loss": torch.tensor(0.5), "winner_mse": Mean(2.0, 3), "pairs": 2, ROUND: (1, ("pairs",))}
    )
    assert type(row["loss"]) is float and row["loss"] == 0.5
    assert isinstance(row["winner_mse"], Mean) and row["winner_mse"].count == 3
    assert row["pairs"] == 2 and type(row["pairs"]) is int
    assert row[ROUND] == (1, ("pairs",))
    assert b"torch" not in pickle.dumps(row)
    import numpy as np

    assert plain_row({"pairs": np.int64(3)}) == {"pairs": 3}
    assert type(plain_row({"pairs": np.int64(3)})["pairs"]) is int
