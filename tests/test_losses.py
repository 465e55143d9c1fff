"""Diffusion-Sharpening losses and selection against hand-computed values."""

import math

import pytest
import torch

from dsharp.methods.losses import (
    path_rewards,
    per_step_mse,
    rlhf_sharpening_loss,
    select_per_prompt,
    sft_sharpening_loss,
    trajectory_errors,
)

NAN = float("nan")


def test_path_rewards_mean_of_valid_steps_only():
    # 3 steps x 2 trajectories; trajectory 1 has only its first two steps valid.
    r = torch.tensor([[1.0, 4.0], [2.0, 6.0], [3.0, 100.0]])
    valid = torch.tensor([[True, True], [True, True], [True, False]])
    assert path_rewards(r, valid).tolist() == [2.0, 5.0]


def test_path_rewards_missing_score_poisons_trajectory():
    r = torch.tensor([[1.0, 2.0], [NAN, 3.0]])
    valid = torch.ones(2, 2, dtype=torch.bool)
    out = path_rewards(r, valid)
    assert math.isnan(out[0]) and out[1] == 2.5
    # a NaN at an invalid step does not count
    valid[1, 0] = False
    assert path_rewards(r, valid).tolist() == [1.0, 2.5]


def test_select_per_prompt_never_mixes_prompts():
    # Two prompts, n = 3. A global argmax would pick index 1 (9.0) for both prompts.
    returns = torch.tensor([0.5, 9.0, 0.1, 0.3, 0.2, 0.4])
    best, worst, usable = select_per_prompt(returns, n=3)
    assert best.tolist() == [1, 5]
    assert worst.tolist() == [2, 4]
    assert usable.tolist() == [True, True]


def test_select_per_prompt_skips_missing():
    returns = torch.tensor([NAN, 0.2, 0.7, NAN, NAN, NAN])
    best, worst, usable = select_per_prompt(returns, n=3)
    assert best[0].item() == 2 and worst[0].item() == 1
    assert usable.tolist() == [True, False]


def test_select_rejects_ragged_input():
    with pytest.raises(ValueError, match="returns must be flat with a multiple of n=3 entries"):
        select_per_prompt(torch.zeros(5), n=3)
    with pytest.raises(ValueError, match="returns must be flat"):
        select_per_prompt(torch.zeros(2, 3), n=3)


def test_per_step_mse_and_trajectory_errors():
    pred = torch.tensor([[1.0, 1.0], [0.0, 2.0], [3.0, 3.0]])
    target = torch.zeros(3, 2)
    mse = per_step_mse(pred, target)
    assert mse.tolist() == [1.0, 2.0, 9.0]
    # pairs 0 and 1 belong to trajectory 0, pair 2 to trajectory 1
    owner = torch.tensor([0, 0, 1])
    assert trajectory_errors(mse, owner, 2).tolist() == [1.5, 9.0]


def test_sft_loss_is_mean_of_winner_errors():
    assert sft_sharpening_loss(torch.tensor([1.5, 2.5])).item() == 2.0


def test_rlhf_loss_hand_computed():
    beta = 2.0
    # prompt 0: policy improved the winner relative to the reference
    pb, pw = torch.tensor([0.10]), torch.tensor([0.30])
    rb, rw = torch.tensor([0.20]), torch.tensor([0.25])
    # logits = beta * ((0.20 - 0.25) - (0.10 - 0.30)) = 2 * 0.15 = 0.3
    expected = -math.log(1 / (1 + math.exp(-0.3)))
    got = rlhf_sharpening_loss(pb, pw, rb, rw, beta)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_rlhf_loss_at_reference_is_log2_and_has_gradient():
    policy = torch.tensor([0.4, 0.6], requires_grad=True)
    ref = torch.tensor([0.4, 0.6])
    loss = rlhf_sharpening_loss(policy[:1], policy[1:], ref[:1], ref[1:], beta=2500.0)
    assert loss.item() == pytest.approx(math.log(2))
    loss.sum().backward()
    # lowering the winner's error (and raising the loser's) lowers the loss
    assert policy.grad[0] > 0 and policy.grad[1] < 0
    assert policy.grad[0].item() == pytest.approx(2500.0 * 0.5)


def test_masked_mean_averages_where_the_mask_holds_and_is_nan_where_it_holds_nowhere():
    from dsharp.methods.losses import masked_mean

    values = torch.tensor([1.0, float("nan"), 3.0])
    assert masked_mean(values, torch.tensor([True, False, True])) == 2.0
    assert masked_mean(torch.tensor([True, False, True]), torch.tensor([True, True, False])) == 0.5
    assert math.isnan(masked_mean(values, torch.zeros(3, dtype=torch.bool)))
