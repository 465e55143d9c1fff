"""The Table-1 training baselines: Diffusion-DPO, DDPO, D3PO and IterPO.

Losses are checked against hand-computed values on small tensors; the methods' mechanics on
the tiny SD model (log-probs of stored transitions, rounds, shared initial noises, the loss
at the reference, gradients through the reward); the factory's option checks; and every
recipe under recipes/mini/ for two steps through ``dsharp train``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner

from dsharp.cli import app
from dsharp.config import MethodConfig, load_recipe, parse_reward_spec
from dsharp.io import read_jsonl
from dsharp.methods.base import Batch
from dsharp.methods.d3po import D3PO, clamped_log_ratio, d3po_loss, preferred_pairs
from dsharp.methods.ddpo import (
    DDPO,
    calls_per_round,
    per_prompt_advantages,
    ppo_clip_loss,
    reinforce_loss,
    timestep_plan,
    transition_log_probs,
)
from dsharp.methods.dpo import DiffusionDPO, PairSource, diffusion_dpo_loss
from dsharp.methods.factory import UnknownOptionError, build_method, resolve_method_kwargs
from dsharp.methods.iterpo import IterPO, grad_step_range, refl_loss
from dsharp.methods.registry import method_specs
from dsharp.models import load_model
from dsharp.rewards.base import RewardError
from dsharp.rewards.combine import CombinedReward
from fake_rewards import brightness_registered

ROOT = Path(__file__).resolve().parent.parent
MINI = ROOT / "recipes" / "mini"
PROMPTS = ["a red square", "a blue circle"]


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- losses


def test_diffusion_dpo_loss_matches_hand_computed_values():
    policy_w, ref_w = torch.tensor([0.50, 0.2]), torch.tensor([0.40, 0.2])
    policy_l, ref_l = torch.tensor([0.30, 0.7]), torch.tensor([0.35, 0.7])
    loss = diffusion_dpo_loss(policy_w, policy_l, ref_w, ref_l, beta=10.0)
    # pair 0: inside = -10/2 * ((0.5 - 0.4) - (0.3 - 0.35)) = -0.75; -log sigmoid(-0.75)
    # pair 1: policy equals reference: -log sigmoid(0) = log 2
    expected = torch.tensor([math.log1p(math.exp(0.75)), math.log(2)])
    torch.testing.assert_close(loss, expected)


def test_ppo_clip_loss_takes_the_pessimistic_branch():
    old = torch.zeros(4)
    log_prob = torch.log(torch.tensor([1.5, 1.5, 0.5, 0.5]))
    adv = torch.tensor([1.0, -1.0, 1.0, -1.0])
    loss = ppo_clip_loss(log_prob, old, adv, clip_range=0.2)
    # ratio 1.5: A>0 -> max(-1.5, -1.2) = -1.2; A<0 -> max(1.5, 1.2) = 1.5
    # ratio 0.5: A>0 -> max(-0.5, -0.8) = -0.5; A<0 -> max(0.5, 0.8) = 0.8
    torch.testing.assert_close(loss, torch.tensor([-1.2, 1.5, -0.5, 0.8]))


def test_ppo_clip_loss_stays_finite_where_the_ratio_overflows_float32():
    """At a log-ratio of 89 exp overflows: A > 0 gave a NaN gradient (the clipped branch's
    zero times exp's inf), A < 0 an infinite loss; below the cap nothing changes."""
    log_prob = torch.tensor([89.0, 89.0, 2.0], requires_grad=True)
    adv = torch.tensor([1.0, -1.0, -1.0])
    loss = ppo_clip_loss(log_prob, torch.zeros(3), adv, clip_range=0.2)
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(log_prob.grad).all()
    expected = torch.tensor([-1.2, math.exp(80.0), math.exp(2.0)])
    torch.testing.assert_close(loss.detach(), expected)
    # clipped (A > 0) and capped (A < 0): no gradient; below the cap d(-A r)/dlp = r
    torch.testing.assert_close(log_prob.grad, torch.tensor([0.0, 0.0, math.exp(2.0)]))


def test_reinforce_loss_is_minus_advantage_times_summed_log_probs():
    log_probs = torch.tensor([[1.0, 2.0], [3.0, -1.0]])
    loss = reinforce_loss(log_probs, torch.tensor([0.5, -2.0]))
    torch.testing.assert_close(loss, torch.tensor([-1.5, 4.0]))


def test_advantages_are_normalised_per_prompt_with_a_batch_fallback():
    prompts = ["a", "a", "b", "b", "c", "a"]
    rewards = torch.tensor([1.0, 3.0, 2.0, 2.0, 5.0, float("nan")])
    adv = per_prompt_advantages(rewards, prompts)
    # a: mean 2, population std 1; b: no spread -> 0; c alone: batch stats of the 5 scored
    batch = torch.tensor([1.0, 3.0, 2.0, 2.0, 5.0])
    c = (5.0 - 2.6) / (batch.std(correction=0).item() + 1e-6)
    torch.testing.assert_close(adv[:5], torch.tensor([-1.0, 1.0, 0.0, 0.0, c]), atol=1e-5, rtol=0)
    assert math.isnan(adv[5])  # unscored: no advantage, and not in the stats of "a"
    with pytest.raises(ValueError, match="rewards for"):
        per_prompt_advantages(rewards, prompts[:2])


def test_advantages_are_normalised_over_the_whole_round_of_every_process():
    """Process 1 of 2, as ddpo-pytorch gathers a round: its prompt "a" was also drawn on
    process 0 ({1, 3} there, {5, 7} here: mean 4), and its lone "c" is normalised by the
    whole round's stats, not by its own batch (alone, it had no spread: advantage 0)."""
    from dsharp.methods.ddpo import round_advantages

    theirs = [("a", 1.0), ("a", 3.0), ("b", 2.0)]

    def two_processes(ours):
        return [*theirs, *ours], len(theirs)

    adv = round_advantages(torch.tensor([5.0, 7.0]), ["a", "a"], gather=two_processes)
    std = 5**0.5  # population std of {1, 3, 5, 7}
    torch.testing.assert_close(adv, torch.tensor([1 / std, 3 / std]), atol=1e-5, rtol=0)
    adv = round_advantages(torch.tensor([4.0]), ["c"], gather=two_processes)
    whole = torch.tensor([1.0, 3.0, 2.0, 4.0])
    expected = (4.0 - 2.5) / (whole.std(correction=0).item() + 1e-6)
    torch.testing.assert_close(adv, torch.tensor([expected]), atol=1e-5, rtol=0)
    # one process: the round is its own batch, as before
    alone = round_advantages(torch.tensor([1.0, 3.0]), ["a", "a"])
    torch.testing.assert_close(alone, torch.tensor([-1.0, 1.0]), atol=1e-5, rtol=0)


def test_d3po_clamps_the_ratio_and_blocks_gradients_outside_the_band():
    ref = torch.zeros(2)
    log_prob = torch.log(torch.tensor([1.5, 0.95])).requires_grad_(True)
    rho = clamped_log_ratio(log_prob, ref, eps=0.1)
    torch.testing.assert_close(rho, torch.log(torch.tensor([1.1, 0.95])))
    rho.sum().backward()
    assert log_prob.grad[0] == 0 and log_prob.grad[1] == pytest.approx(1.0)

    w = torch.log(torch.tensor([1.5]))
    lose = torch.log(torch.tensor([0.95]))
    loss = d3po_loss(w, lose, torch.zeros(1), torch.zeros(1), beta=2.0, eps=0.1)
    inside = 2.0 * (math.log(1.1) - math.log(0.95))
    assert loss.item() == pytest.approx(math.log1p(math.exp(-inside)), rel=1e-6)


def test_d3po_gradient_stays_finite_where_the_ratio_overflows_float32():
    # log-ratio 89: exp(89) is inf in float32; the clamp still holds it at 1 + eps
    w = torch.tensor([89.0], requires_grad=True)
    lose = torch.tensor([0.0], requires_grad=True)
    loss = d3po_loss(w, lose, torch.zeros(1), torch.zeros(1), beta=0.1, eps=0.1)
    loss.backward()
    # inside = beta * log(1 + eps) = 0.1 * log 1.1 = 0.00953102; loss = log(1 + exp(-inside))
    assert loss.item() == pytest.approx(0.688393, abs=1e-6)
    assert w.grad.item() == 0.0  # clamped: no gradient, and not NaN
    # d/d lose of -log sigmoid(beta * (log 1.1 - lose)) = beta * (1 - sigmoid(inside))
    assert lose.grad.item() == pytest.approx(0.0497617, abs=1e-6)


def test_preferred_pairs_skip_ties_and_unscored_pairs():
    rewards = torch.tensor([1.0, 2.0, 3.0, 3.0, float("nan"), 1.0, 5.0, 4.0])
    winners, losers, usable = preferred_pairs(rewards)
    assert winners.tolist()[0] == 1 and losers.tolist()[0] == 0
    assert winners.tolist()[3] == 6 and losers.tolist()[3] == 7
    assert usable.tolist() == [True, False, False, True]


def test_refl_loss_and_the_scaled_grad_step_range():
    scores = torch.tensor([[1.5, 3.0], [0.0, 1.0]])  # (rewards, samples)
    loss = refl_loss(scores, [1.0, 0.5], margin=2.0)
    # sample 0: relu(0.5) + 0.5 relu(2) = 1.5; sample 1: relu(-1) + 0.5 relu(1) = 0.5
    torch.testing.assert_close(loss, torch.tensor([1.5, 0.5]))
    assert grad_step_range(40, 30, 39, 40) == (30, 39)
    assert grad_step_range(10, 30, 39, 40) == (7, 9)
    assert grad_step_range(20, 30, 39, 40) == (15, 19)
    assert grad_step_range(2, 30, 39, 40) == (1, 1)


def test_timestep_plan_covers_distinct_steps_in_chunks():
    chunks = timestep_plan(3, 10, fraction=0.5, per_call=2, epochs=2, generator=_gen())
    assert len(chunks) == calls_per_round(10, 0.5, 2, 2) == 2 * 3
    assert [c.shape for c in chunks] == [(3, 2), (3, 2), (3, 1)] * 2
    for epoch in (chunks[:3], chunks[3:]):
        steps = torch.cat(epoch, dim=1)
        assert all(len(set(row.tolist())) == 5 for row in steps)  # 5 distinct of 10 per group
        assert int(steps.max()) < 10
    # the groups of one round get their own orders
    assert len({tuple(row.tolist()) for row in torch.cat(chunks[:3], dim=1)}) > 1


# --------------------------------------------------------------------------- method mechanics


class MeanPixel:
    """A differentiable reward: mean pixel value; records each call's image count."""

    differentiable = True

    def __init__(self):
        self.calls: list[int] = []

    def __call__(self, images, prompts, metadata):
        self.calls.append(len(images))
        return images.tensor.float().mean(dim=(1, 2, 3)), {}


class NotDifferentiable(MeanPixel):
    differentiable = False


@pytest.fixture
def grad_calls(sd_model):
    """Grad mode of every UNet call (policy and reference) during one test."""
    calls: list[bool] = []
    handles = [
        net.register_forward_pre_hook(lambda m, a: calls.append(torch.is_grad_enabled()))
        for net in (sd_model.unet, sd_model._reference_unet)
    ]
    yield calls
    for h in handles:
        h.remove()
    sd_model.unet.zero_grad(set_to_none=True)


def _batch(prompts=PROMPTS) -> Batch:
    return Batch(prompts=list(prompts), cond_prompts=list(prompts))


class ConstantScore(MeanPixel):
    """Every image scores 0.5: every pair ties."""

    def __call__(self, images, prompts, metadata):
        scores, info = super().__call__(images, prompts, metadata)
        return torch.full_like(scores, 0.5), info


def _has_grad(model) -> bool:
    return any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.unet.parameters())


@pytest.mark.parametrize("variant", ["is", "sf"])
def test_ddpo_recomputes_the_stored_log_probs_and_trains_on_rounds(sd_model, grad_calls, variant):
    reward = MeanPixel()
    epochs = 2 if variant == "is" else 1
    method = DDPO(
        sd_model,
        reward,
        64,
        64,
        n=2,
        infer_steps=3,
        variant=variant,
        inner_epochs=epochs,
        timesteps_per_step=2,
    )
    assert method.calls_per_round == 2 * epochs  # ceil(3 / 2) chunks per epoch
    loss, metrics = method.compute_loss(_batch(), sd_model.unet, _gen(1))
    rnd = method._round
    assert metrics["new_round"] == 1.0 and reward.calls == [4]
    assert rnd.latents.shape == (4, 4, 4, 8, 8) and rnd.log_probs.shape == (3, 4)
    # at the sampling weights the recomputed transitions have the stored log-probs
    assert metrics["approx_kl"] < 1e-8 and metrics["clipfrac"] == 0.0
    # sampling: 3 steps without grad; then one batched grad call on the chunk
    assert grad_calls == [False] * 3 + [True]
    adv = method._advantages
    if variant == "is":  # ratio 1: the loss is -mean(A), zero with per-prompt advantages
        assert loss.item() == pytest.approx(-adv.mean().item(), abs=1e-6)
    loss.backward()
    assert _has_grad(sd_model)
    for _ in range(method.calls_per_round - 1):  # the rest of the round: no new samples
        _, metrics = method.compute_loss(_batch(), sd_model.unet, _gen(2))
        assert metrics["new_round"] == 0.0
    assert reward.calls == [4]
    _, metrics = method.compute_loss(_batch(), sd_model.unet, _gen(3))
    assert metrics["new_round"] == 1.0 and reward.calls == [4, 4]


def test_ddpo_groups_advantages_by_prompt_string(sd_model):
    method = DDPO(sd_model, MeanPixel(), 64, 64, n=2, infer_steps=2)
    with torch.no_grad():
        method.compute_loss(_batch(["x", "y", "x"]), sd_model.unet, _gen(4))
    rnd = method._round
    assert rnd.prompts == ["x", "x", "y", "y", "x", "x"]
    x = torch.tensor([0, 1, 4, 5])  # the four samples of prompt "x" are one group
    expected = torch.empty(6)
    for group in (x, torch.tensor([2, 3])):  # z-scores within each prompt, population std
        r = rnd.rewards[group].double()
        expected[group] = ((r - r.mean()) / (r.std(correction=0) + 1e-6)).float()
    torch.testing.assert_close(method._advantages, expected, rtol=1e-4, atol=1e-5)
    # standardised advantages are O(1); float32 sums differ by CPU (1.6e-5 on an AVX2-only one)
    assert method._advantages[x].mean().abs() < 1e-4
    assert method._advantages[2:4].abs().sum() > 0


def test_ddpo_rejects_bad_settings(sd_model):
    with pytest.raises(ValueError, match="method.eta"):
        DDPO(sd_model, MeanPixel(), 64, 64, eta=0.0)
    with pytest.raises(ValueError, match="on-policy"):
        DDPO(sd_model, MeanPixel(), 64, 64, variant="sf", inner_epochs=2)
    with pytest.raises(ValueError, match="variant"):
        DDPO(sd_model, MeanPixel(), 64, 64, variant="ppo")
    with pytest.raises(ValueError, match="train_timestep_fraction"):
        DDPO(sd_model, MeanPixel(), 64, 64, train_timestep_fraction=0.0)


def test_ddpo_stat_buffer_pools_a_prompt_s_rewards_across_rounds(sd_model):
    """With ``stat_buffer`` a prompt's advantages use its rewards of earlier rounds too
    (ddpo-pytorch's tracker); the buffers are the method's checkpoint state."""
    method = DDPO(sd_model, MeanPixel(), 64, 64, n=2, infer_steps=2, stat_buffer=4)
    with torch.no_grad():
        method.compute_loss(_batch(["x"]), sd_model.unet, _gen(1))
        first = method._round.rewards.clone()
        method._plan.clear()  # end the round early: the next call samples a new one
        method.compute_loss(_batch(["x"]), sd_model.unet, _gen(2))
    second = method._round.rewards
    pooled = torch.cat([first, second]).double()
    expected = (second.double() - pooled.mean()) / (pooled.std(correction=0) + 1e-6)
    torch.testing.assert_close(method._advantages, expected.float(), rtol=1e-4, atol=1e-5)
    state = method.state_dict()
    assert state["buffers"]["x"] == pytest.approx(pooled.tolist())
    fresh = DDPO(sd_model, MeanPixel(), 64, 64, n=2, infer_steps=2, stat_buffer=4)
    fresh.load_state_dict(state)
    assert fresh.state_dict() == state
    # without the option: this round's statistics only, and no state to keep or take
    plain = DDPO(sd_model, MeanPixel(), 64, 64, n=2, infer_steps=2)
    assert plain.state_dict() == {}
    with pytest.raises(ValueError, match="ddpo keeps no state, but the checkpoint holds: buffers"):
        plain.load_state_dict(state)


def test_ddpo_refuses_a_stat_min_count_its_buffer_cannot_reach(sd_model):
    with pytest.raises(ValueError, match="stat_min_count: a buffer of 4 .* never holds 5"):
        DDPO(sd_model, MeanPixel(), 64, 64, stat_buffer=4, stat_min_count=5)
    with pytest.raises(ValueError, match="stat_min_count: counts the rewards of stat_buffer"):
        DDPO(sd_model, MeanPixel(), 64, 64, stat_min_count=2)
    with pytest.raises(ValueError, match="stat_buffer: must be an integer >= 0"):
        DDPO(sd_model, MeanPixel(), 64, 64, stat_buffer=-1)


def test_d3po_pairs_share_their_initial_noise_and_start_at_log2(sd_model, grad_calls):
    method = D3PO(sd_model, MeanPixel(), 64, 64, infer_steps=3)
    loss, metrics = method.compute_loss(_batch(), sd_model.unet, _gen(5))
    rnd = method._round
    torch.testing.assert_close(rnd.latents[0, 0], rnd.latents[0, 1], rtol=0, atol=0)
    torch.testing.assert_close(rnd.latents[0, 2], rnd.latents[0, 3], rtol=0, atol=0)
    assert not torch.equal(rnd.latents[0, 0], rnd.latents[0, 2])
    assert (rnd.latents[-1, 0] - rnd.latents[-1, 1]).abs().max() > 1e-3  # eta 1: they diverge
    # policy == reference: every usable pair's loss is -log sigmoid(0)
    assert metrics["pairs"] == 2
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6)
    assert metrics["reward_w"] > metrics["reward_l"]
    # sampling without grad, then one policy call with grad and one reference call without
    assert grad_calls == [False] * 3 + [True, False]
    loss.backward()
    assert _has_grad(sd_model)


# --------------------------------------------------------------------------- deterministic steps


def _linspace(model):
    """``model`` with SD's scheduler at ``timestep_spacing: linspace`` (``set_alpha_to_one``
    False): its last step, t = 0 -> abar_0, has std 0 whatever eta."""
    from diffusers import DDIMScheduler

    model.scheduler = DDIMScheduler.from_config(model.scheduler.config, timestep_spacing="linspace")
    return model


@pytest.fixture
def linspace_sd(sd_model):
    saved = sd_model.scheduler
    yield _linspace(sd_model)
    sd_model.scheduler = saved
    sd_model.unet.zero_grad(set_to_none=True)


@pytest.mark.parametrize("name", ["ddpo", "d3po"])
def test_a_round_in_progress_is_kept_in_a_file_that_loads_weights_only(sd_model, tmp_path, name):
    """The round file holds tensors and plain values only, so torch's ``weights_only``
    loads it (a checkpoint someone shares cannot run code; it pickled dsharp's classes),
    and a method given it back trains on the rest of the round as the one that kept it."""
    from dsharp import method_rounds
    from dsharp.method_rounds import load_round, round_file, save_round
    from dsharp.step_metrics import Mean

    def method():
        if name == "ddpo":
            return DDPO(sd_model, MeanPixel(), 64, 64, n=2, infer_steps=2, inner_epochs=2)
        return D3PO(sd_model, MeanPixel(), 64, 64, infer_steps=2, inner_epochs=2)

    kept = method()
    with torch.no_grad():
        kept.compute_loss(_batch(), sd_model.unet, _gen(5))  # the first of the round's 2 calls
    save_round(kept, tmp_path, 0)
    plain = torch.load(round_file(tmp_path, 0), map_location="cpu", weights_only=True)
    assert plain["format"] == method_rounds.ROUND_FORMAT
    resumed = method()
    assert load_round(resumed, tmp_path, 0, 1, "cpu")
    with torch.no_grad():
        loss, metrics = kept.compute_loss(_batch(), sd_model.unet, _gen(6))
        # another generator: the call trains on the kept round, it samples nothing
        got_loss, got = resumed.compute_loss(_batch(), sd_model.unet, _gen(7))
    assert metrics["new_round"] == got["new_round"] == 0.0
    assert torch.equal(got_loss, loss) and got == metrics
    means = [k for k, v in metrics.items() if isinstance(v, Mean)]
    assert means and all(isinstance(got[k], Mean) for k in means)
    assert [got[k].count for k in means] == [metrics[k].count for k in means]


def test_timestep_plan_orders_only_the_given_steps():
    chunks = timestep_plan(
        4, torch.tensor([0, 1, 3]), fraction=1.0, per_call=2, epochs=1, generator=_gen()
    )
    assert [c.shape for c in chunks] == [(4, 2), (4, 1)]
    steps = torch.cat(chunks, dim=1)
    assert all(sorted(row.tolist()) == [0, 1, 3] for row in steps)


def test_ddpo_is_averages_its_loss_over_the_stochastic_steps_only(linspace_sd):
    """3 linspace steps: 999 -> 500 -> 0 -> abar_0, the last without noise. At the sampling
    weights r = 1 and dr = dlog p, so the gradient is that of -mean(A log p) over the two
    stochastic steps; training the third (log p = 0, r = 1) made it 2/3 of that."""
    model = linspace_sd
    method = DDPO(model, MeanPixel(), 64, 64, n=2, infer_steps=3, inner_epochs=2, clip_range=1.0)
    loss, _ = method.compute_loss(_batch(), model.unet, _gen(1))
    params = [p for p in model.unet.parameters() if p.requires_grad]
    got = torch.autograd.grad(loss, params)
    rnd, adv = method._round, method._advantages
    rows, steps = torch.arange(len(rnd)).repeat_interleave(2), torch.tensor([0, 1]).repeat(len(rnd))
    kwargs = dict(guidance=method.guidance, eta=method.eta, unet=model.unet)
    log_p = transition_log_probs(model, method.tables, rnd, rows, steps, **kwargs).view(-1, 2)
    want = torch.autograd.grad(-(adv[:, None] * log_p).mean(), params)
    scale = max(w.abs().max().item() for w in want)
    assert scale > 0
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-3, atol=1e-4 * scale)
    assert method.calls_per_round == 2  # one chunk per epoch, the noiseless step left out


def test_round_methods_refuse_a_schedule_with_no_stochastic_step(linspace_sd):
    with pytest.raises(ValueError, match=r"method.infer_steps: all 1 DDIM step\(s\)"):
        DDPO(linspace_sd, MeanPixel(), 64, 64, infer_steps=1)
    with pytest.raises(ValueError, match="method.infer_steps"):
        D3PO(linspace_sd, MeanPixel(), 64, 64, infer_steps=1)


def test_d3po_clipfrac_leaves_out_the_step_without_noise(tiny_sd_dir):
    """A policy far from the reference puts every stochastic step's ratio outside a 1e-6
    band: clipfrac 1. The noiseless last step's ratio is 1 under any weights; counted, it
    made clipfrac 2/3 and added log 2 to every pair's mean."""
    model = _linspace(load_model(str(tiny_sd_dir)))
    model.prepare_reference()
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.unet.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=gen))
    method = D3PO(model, MeanPixel(), 64, 64, infer_steps=3, eps=1e-6)
    _, metrics = method.compute_loss(_batch(), model.unet, _gen(5))
    assert metrics["pairs"] == 2 and metrics["clipfrac"] == 1.0


class TiedForSecondPrompt(MeanPixel):
    """Mean pixel value, but every image of the second prompt scores 0.5: its pair ties."""

    def __call__(self, images, prompts, metadata):
        scores, info = super().__call__(images, prompts, metadata)
        tied = torch.tensor([p == PROMPTS[1] for p in prompts])
        return torch.where(tied, torch.full_like(scores, 0.5), scores), info


def test_d3po_clipfrac_counts_only_the_pairs_it_trains_on(tiny_sd_dir):
    from dsharp.models import load_model

    model = load_model(str(tiny_sd_dir))
    model.prepare_reference()
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():  # a policy far from the reference: every ratio leaves the band
        for p in model.unet.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=gen))
    method = D3PO(model, TiedForSecondPrompt(), 64, 64, infer_steps=2, eps=1e-6)
    _, metrics = method.compute_loss(_batch(), model.unet, _gen(5))
    assert metrics["pairs"] == 1 and metrics["clipfrac"] == 1.0
    all_tied = D3PO(model, ConstantScore(), 64, 64, infer_steps=2, eps=1e-6)
    _, metrics = all_tied.compute_loss(_batch(), model.unet, _gen(5))
    assert metrics["pairs"] == 0 and math.isnan(metrics["clipfrac"])


def test_dpo_online_pairs_start_at_log2_and_offline_pairs_read_the_file(
    sd_model, grad_calls, tmp_path
):
    method = DiffusionDPO(sd_model, MeanPixel(), 64, 64, pairs="online", infer_steps=2)
    assert method.data_kind == "prompts"
    loss, metrics = method.compute_loss(_batch(), sd_model.unet, _gen(6))
    assert metrics["pairs"] == 2 and metrics["reward_w"] > metrics["reward_l"]
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6)
    assert grad_calls == [False] * 2 + [True, False]  # generation, policy, reference
    loss.backward()
    assert _has_grad(sd_model)

    pairs = _pairs_file(tmp_path)
    method = DiffusionDPO(sd_model, MeanPixel(), 64, 64, pairs_file=str(pairs))
    assert method.data_kind == "images" and len(method.source) == 3
    loss, metrics = method.compute_loss(_batch(), sd_model.unet, _gen(7))
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6)
    assert metrics["pairs"] == 2 and math.isfinite(metrics["reward"])
    # the pairs drawn depend only on the generator
    prompts_a, w_a, _ = method.source.draw(4, _gen(8), 64, 64)
    prompts_b, w_b, _ = method.source.draw(4, _gen(8), 64, 64)
    assert prompts_a == prompts_b and torch.equal(w_a, w_b)


def test_dpo_error_space_scales_the_v_error_by_the_noise_level(tmp_path):
    """On a v-prediction model (dsharp-mini) at one timestep t: the epsilon error is
    ``abar_t`` times the v (native) error and the clean-sample error ``1 - abar_t`` times
    it, since eps_hat - eps = sqrt(abar) (v_hat - v) and x0_hat - x0 = -sqrt(1 - abar)
    (v_hat - v); the loss starts at log 2 in every space (policy = reference)."""
    model = load_model("dsharp-mini")
    pairs = str(_pairs_file(tmp_path))
    errors = {}
    for space in ("epsilon", "native", "x0"):
        method = DiffusionDPO(
            model,
            MeanPixel(),
            32,
            32,
            pairs_file=pairs,
            timestep_min=600,
            timestep_max=601,
            error_space=space,
        )
        with torch.no_grad():
            loss, metrics = method.compute_loss(_batch(), model.unet, _gen(3))
        assert loss.item() == pytest.approx(math.log(2), abs=1e-6)
        errors[space] = (metrics["mse_w"], metrics["mse_l"])
    abar = method.tables.abar(torch.tensor([600])).item()
    for k in range(2):
        assert errors["epsilon"][k] == pytest.approx(abar * errors["native"][k], rel=1e-4)
        assert errors["x0"][k] == pytest.approx((1 - abar) * errors["native"][k], rel=1e-4)
    assert errors["native"][0] > 0
    with pytest.raises(ValueError, match="error_space: unknown 'v'"):
        DiffusionDPO(model, MeanPixel(), 32, 32, pairs_file=pairs, error_space="v")


def _pairs_file(folder: Path) -> Path:
    rows = []
    for i in range(3):
        for member, value in (("w", 200), ("l", 40)):
            Image.fromarray(np.full((64, 64, 3), value + i, np.uint8)).save(
                folder / f"{i}{member}.png"
            )
        rows.append({"prompt": PROMPTS[i % 2], "image_w": f"{i}w.png", "image_l": f"{i}l.png"})
    path = folder / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_pair_source_errors_name_the_file_and_line(tmp_path):
    with pytest.raises(FileNotFoundError, match="pairs_file: file not found"):
        PairSource(tmp_path / "nope.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "image_w": "x.png"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:1: bad pair row"):
        PairSource(bad)
    bad.write_text('\n{"prompt": "a", "image_w": "x.png", "image_l": "y.png"}\n')
    with pytest.raises(FileNotFoundError, match=r"bad.jsonl:2: image_w not found: x.png"):
        PairSource(bad)


def test_pair_rows_that_are_no_text_or_images_that_cannot_be_decoded_are_named(tmp_path):
    """A null prompt trained as "None"; a truncated image failed naming no file or row."""
    pairs = _pairs_file(tmp_path)
    bad = tmp_path / "bad.jsonl"
    row = {"prompt": None, "image_w": "0w.png", "image_l": "0l.png"}
    bad.write_text(pairs.read_text().splitlines()[0] + "\n" + json.dumps(row) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:2: prompt holds null, not text"):
        PairSource(bad)
    (tmp_path / "0w.png").write_bytes((tmp_path / "0w.png").read_bytes()[:60])  # truncated
    source = PairSource(pairs)
    with pytest.raises(ValueError, match=r"pairs.jsonl:1: cannot read image .*0w.png"):
        source.draw(8, torch.Generator().manual_seed(0), 32, 32)


def test_pair_image_paths_may_start_at_the_home_directory(tmp_path, monkeypatch):
    """``~/imgs/w.png`` was read as a folder named ``~`` beside the pairs file."""
    home = tmp_path / "home"
    (home / "imgs").mkdir(parents=True)
    for name in ("w.png", "l.png"):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(home / "imgs" / name)
    monkeypatch.setenv("HOME", str(home))
    pairs = tmp_path / "pairs.jsonl"
    row = {"prompt": "a", "image_w": "~/imgs/w.png", "image_l": "~/imgs/l.png"}
    pairs.write_text(json.dumps(row) + "\n")
    assert PairSource(pairs).rows == [("a", home / "imgs" / "w.png", home / "imgs" / "l.png")]


def test_pair_images_are_read_upright(tmp_path):
    """A winner whose EXIF says to rotate it for viewing was read lying on its side."""
    tall = np.zeros((64, 32, 3), np.uint8)
    tall[:, :16] = 255  # stored 64 tall x 32 wide, its left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # view it rotated 90 degrees clockwise: 32 tall x 64 wide, white on top
    Image.fromarray(tall).save(tmp_path / "w.jpg", exif=exif, quality=95)
    Image.fromarray(np.zeros((32, 64, 3), np.uint8)).save(tmp_path / "l.png")
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"prompt": "a", "image_w": "w.jpg", "image_l": "l.png"}) + "\n")
    winner = PairSource(pairs).draw(1, torch.Generator().manual_seed(0), 32, 64)[1][0]
    assert winner.shape == (3, 32, 64)
    assert winner[:, :14].mean() > 0.9 and winner[:, 18:].mean() < 0.1


def test_iterpo_backpropagates_the_reward_through_one_late_step(sd_model, grad_calls):
    reward = CombinedReward([parse_reward_spec({"name": "pixel", "weight": 2.0})], [MeanPixel()])
    method = IterPO(sd_model, reward, 64, 64, infer_steps=4, margin=2.0, loss_scale=1e-3)
    assert method.k_range == (3, 3)
    loss, metrics = method.compute_loss(_batch(), sd_model.unet, _gen(9))
    assert metrics["grad_step"] == 3.0
    assert grad_calls == [False] * 3 + [True]  # 3 steps without grad, step 3 with grad
    # loss = 1e-3 * mean_i 2 * relu(2 - r_i), r in [0, 1]: 1e-3 * 2 * (2 - mean r)
    assert loss.item() == pytest.approx(1e-3 * (4 - metrics["reward"]), rel=1e-5)
    loss.backward()
    assert _has_grad(sd_model)


class DetachedPixel(MeanPixel):
    """Says it is differentiable, but scores through a detached copy (a plugin's slip)."""

    def __call__(self, images, prompts, metadata):
        scores, info = super().__call__(images, prompts, metadata)
        return scores.detach(), info


def test_iterpo_names_a_differentiable_reward_whose_scores_carry_no_gradient(sd_model):
    reward = CombinedReward([parse_reward_spec({"name": "pixel"})], [DetachedPixel()])
    method = IterPO(sd_model, reward, 64, 64, infer_steps=2)
    with pytest.raises(RewardError, match="reward 'pixel' is differentiable but returned scores "):
        method.compute_loss(_batch(), sd_model.unet, _gen(11))


class FailingPixel(MeanPixel):
    """A differentiable reward whose service fails: it raises RewardError for every batch."""

    def __call__(self, images, prompts, metadata):
        raise RewardError("the scoring service is down")


def test_iterpo_with_every_score_missing_learns_nothing_rather_than_blaming_the_gradient(
    sd_model,
):
    """Under on_error: missing the all-NaN scores carry no gradient by design; the check for
    a reward that drops its gradient stopped the run, saying so falsely."""
    spec = parse_reward_spec({"name": "pixel", "on_error": "missing"})
    method = IterPO(sd_model, CombinedReward([spec], [FailingPixel()]), 64, 64, infer_steps=2)
    loss, logs = method.compute_loss(_batch(), sd_model.unet, _gen(11))
    assert float(loss) == 0.0 and logs["reward_missing"] > 0


def test_combined_reward_passes_gradients_to_the_pixels():
    spec = parse_reward_spec({"name": "pixel", "weight": 3.0, "normalize": "batch_zscore"})
    reward = CombinedReward([spec], [MeanPixel()])
    from dsharp.rewards.base import RewardImages

    pixels = torch.rand(3, 3, 4, 4, requires_grad=True)
    total, _ = reward(RewardImages(pixels), ["a"] * 3, [{}] * 3)
    total[0].backward()
    assert pixels.grad is not None and pixels.grad.abs().sum() > 0


def test_iterpo_refuses_a_non_differentiable_reward_unless_its_weight_is_zero(sd_model):
    specs = [parse_reward_spec({"name": "exact"}), parse_reward_spec({"name": "pixel"})]
    with pytest.raises(ValueError, match="reward 'exact' is not"):
        IterPO(sd_model, CombinedReward(specs, [NotDifferentiable(), MeanPixel()]), 64, 64)
    specs[0].weight = 0.0  # reported only: allowed, scored without grad
    method = IterPO(
        sd_model, CombinedReward(specs, [NotDifferentiable(), MeanPixel()]), 64, 64, infer_steps=2
    )
    loss, _ = method.compute_loss(_batch(), sd_model.unet, _gen(10))
    assert loss.requires_grad
    with pytest.raises(ValueError, match="non-zero weight"):
        IterPO(sd_model, CombinedReward(specs[:1], [NotDifferentiable()]), 64, 64)
    assert method_specs()["iterpo"].needs_differentiable_reward


# --------------------------------------------------------------------------- factory


def test_factory_fills_the_authors_defaults_and_checks_options(sd_model):
    cfg = MethodConfig(name="ddpo", options={"variant": "sf"})
    method = build_method(cfg, sd_model, MeanPixel(), 64, 64)
    assert isinstance(method, DDPO) and method.variant == "sf"
    assert (method.infer_steps, method.eta, method.samples_per_prompt) == (50, 1.0, 4)
    assert (cfg.infer_steps, cfg.eta, cfg.n) == (50, 1.0, 4)  # written back for recipe.yaml
    assert resolve_method_kwargs(MethodConfig(name="d3po", eta=0.5), D3PO)["eta"] == 0.5

    with pytest.raises(
        UnknownOptionError, match=r"options.inner_epoch: .*did you mean 'inner_epochs'"
    ):
        build_method(MethodConfig(name="ddpo", options={"inner_epoch": 2}), sd_model, None, 64, 64)
    with pytest.raises(TypeError, match="set it as method.beta"):
        resolve_method_kwargs(MethodConfig(name="d3po", options={"beta": 1.0}), D3PO)
    with pytest.raises(ValueError, match=r"method.m: not used by ddpo"):
        resolve_method_kwargs(MethodConfig(name="ddpo", m=5), DDPO)
    with pytest.raises(ValueError, match="pairs_file"):
        build_method(MethodConfig(name="diffusion_dpo"), sd_model, MeanPixel(), 64, 64)


def test_online_dpo_recipes_may_name_prompts_only(tiny_sd_dir):
    from dsharp.config import recipe_from_dict

    recipe = recipe_from_dict(
        {
            "model": {"pretrained": str(tiny_sd_dir)},
            "method": {"name": "diffusion_dpo", "options": {"pairs": "online"}},
            "rewards": [{"name": "shapes"}],
            "data": {"prompts": ["a red square"]},
        }
    )
    assert recipe.method.name == "diffusion_dpo"


# --------------------------------------------------------------------------- through the CLI


SHRINK = ["train.max_steps=2", "train.batch_size=2", "method.infer_steps=2", "--no-progress"]


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> dict[str, Any]:
    from dsharp.testing.tiny_rewards import make_tiny_open_clip

    return make_tiny_open_clip(tmp_path_factory.mktemp("clip"))


def _train(recipe: Path, *args: str):
    result = CliRunner().invoke(app, ["train", str(recipe), *[str(a) for a in args]])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def _check_run(out: Path, result, reward: bool = True) -> list[dict]:
    assert result.exit_code == 0, result.output
    rows = read_jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    for row in rows:
        assert math.isfinite(row["loss"])
        if reward:
            assert isinstance(row["reward"], float) and math.isfinite(row["reward"])
    assert (out / "checkpoints" / "step-000002").is_dir()
    return rows


@pytest.mark.parametrize("name", ["ddpo", "d3po", "diffusion_dpo"])
def test_mini_recipe_trains_two_steps(tiny_sd_dir, tmp_path, name):
    out = tmp_path / "run"
    with brightness_registered():  # a reward without ties on random images
        result = _train(
            MINI / f"{name}.yaml",
            f"model.pretrained={tiny_sd_dir}",
            f"output_dir={out}",
            "rewards.0.name=test_brightness",
            *SHRINK,
        )
    rows = _check_run(out, result)
    saved = (out / "recipe.yaml").read_text()
    assert f"name: {name}" in saved
    if name == "ddpo":  # 2 inner epochs: a round lasts two steps
        assert [r["new_round"] for r in rows] == [1.0, 0.0]
    else:
        assert all(r["pairs"] == 2 for r in rows)


def test_a_step_that_trains_on_one_round_in_two_calls_counts_its_pairs_once(tiny_sd_dir, tmp_path):
    """D3PO with two inner epochs: the round's two calls are one step (grad_accum 2), and
    each logs the round's columns; the step trained on the round's 2 pairs, not 4."""
    out = tmp_path / "run"
    with brightness_registered():  # no ties: every prompt is a pair
        result = _train(
            MINI / "d3po.yaml",
            f"model.pretrained={tiny_sd_dir}",
            f"output_dir={out}",
            "rewards.0.name=test_brightness",
            "method.options.inner_epochs=2",
            "train.grad_accum=2",
            "train.max_steps=1",
            "train.batch_size=2",
            "method.infer_steps=2",
            "--no-progress",
        )
    assert result.exit_code == 0, result.output
    (row,) = read_jsonl(out / "metrics.jsonl")
    assert row["new_round"] == 0.5  # two calls, the first sampled the round
    assert row["pairs"] == 2 and row["reward_missing"] == 0


def test_ddpo_reward_buffers_survive_a_resume(tiny_sd_dir, tmp_path):
    """The checkpoint keeps the reward buffers, so the round after a resume is normalised as
    in an uninterrupted run (one prompt, so every round adds to the same buffer)."""
    prompts = tmp_path / "one.txt"
    prompts.write_text("a red circle\n")
    common = [
        f"model.pretrained={tiny_sd_dir}",
        "data.generator=none",
        f"data.prompts_file={prompts}",
        "method.n=2",
        "method.options.stat_buffer=8",
        "method.options.stat_min_count=4",
        "train.batch_size=1",
        "method.infer_steps=2",
        "--no-progress",
    ]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    with brightness_registered():
        args = ["rewards.0.name=test_brightness", *common]
        _train(MINI / "ddpo.yaml", f"output_dir={straight}", "train.max_steps=4", *args)
        _train(MINI / "ddpo.yaml", f"output_dir={resumed}", "train.max_steps=2", *args)
        state = json.loads((resumed / "checkpoints/step-000002/trainer_state.json").read_text())
        assert len(state["method_state"]["buffers"]["a red circle"]) == 2
        _train(
            MINI / "ddpo.yaml",
            f"output_dir={resumed}",
            "train.max_steps=4",
            "train.resume=latest",
            *args,
        )
    ours, theirs = read_jsonl(resumed / "metrics.jsonl"), read_jsonl(straight / "metrics.jsonl")
    assert [r["new_round"] for r in theirs] == [1.0, 0.0, 1.0, 0.0]
    # round 2 pools 4 rewards, reaching stat_min_count: a lost buffer would fall back to
    # the round's own 2 rewards, whose advantages are exactly +-1
    assert ours[2]["adv_abs"] == pytest.approx(theirs[2]["adv_abs"], rel=1e-6)
    assert theirs[2]["adv_abs"] != pytest.approx(1.0, abs=1e-3)


def _two_updates_per_round(tiny_sd_dir: Path) -> list[str]:
    """Overrides for a tiny DDPO/D3PO run on the brightness reward whose rounds of samples
    span two engine calls, so that a checkpoint can land inside one."""
    return [
        f"model.pretrained={tiny_sd_dir}",
        "rewards.0.name=test_brightness",
        "method.options.inner_epochs=2",
        "method.infer_steps=3",
        "train.batch_size=1",
        "--no-progress",
    ]


@pytest.mark.parametrize("method", ["ddpo", "d3po"])
def test_a_resume_inside_a_round_of_samples_trains_on_the_same_round(method, tiny_sd_dir, tmp_path):
    """Two updates per round: a checkpoint after the first keeps the round, sampled with
    weights it no longer holds, so the resumed run trains as an uninterrupted one, bit for
    bit (it sampled a fresh round with the updated weights before), and says nothing."""
    from safetensors.torch import load_file

    common = [*_two_updates_per_round(tiny_sd_dir), "train.lr=1e-3"]
    common += ["method.n=2"] if method == "ddpo" else []
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    with brightness_registered():
        _train(MINI / f"{method}.yaml", f"output_dir={straight}", "train.max_steps=3", *common)
        _train(MINI / f"{method}.yaml", f"output_dir={resumed}", "train.max_steps=1", *common)
        result = _train(
            MINI / f"{method}.yaml",
            f"output_dir={resumed}",
            "train.max_steps=3",
            "train.resume=latest",
            *common,
        )
    assert result.exit_code == 0, result.output

    def rows(run: Path) -> list[dict]:
        return [
            {k: v for k, v in r.items() if k != "step_time_s"}
            for r in read_jsonl(run / "metrics.jsonl")
        ]

    assert [r["new_round"] for r in rows(straight)] == [1.0, 0.0, 1.0]
    assert rows(resumed) == rows(straight)
    weights = [
        load_file(
            str(run / "checkpoints/step-000003/model/unet/diffusion_pytorch_model.safetensors")
        )
        for run in (resumed, straight)
    ]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[1])
    assert "rounds of samples" not in result.stderr
    # kept inside a round (step 1), not on a round boundary (step 2)
    assert (resumed / "checkpoints/step-000001/method_round_0.pt").is_file()
    assert not (resumed / "checkpoints/step-000002/method_round_0.pt").exists()


def test_a_round_kept_in_an_older_format_resumes_with_a_fresh_round_and_says_so(
    tiny_sd_dir, tmp_path, monkeypatch
):
    """An older dsharp pickled the round (its classes: loading it could run code): the
    resume leaves it unread, samples a fresh round as for a checkpoint without one, and
    says so in one note; every file it loads, loads weights only."""
    from older_rounds import older_round

    common = [*_two_updates_per_round(tiny_sd_dir), "method.n=2"]
    run = tmp_path / "run"
    kept = run / "checkpoints" / "step-000001" / "method_round_0.pt"
    loads: list[Any] = []
    real_load = torch.load

    def spied_load(*args: Any, **kwargs: Any) -> Any:
        loads.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    with brightness_registered():
        _train(MINI / "ddpo.yaml", f"output_dir={run}", "train.max_steps=1", *common)
        torch.save(older_round(), kept)
        monkeypatch.setattr(torch, "load", spied_load)
        result = _train(
            MINI / "ddpo.yaml",
            f"output_dir={run}",
            "train.max_steps=2",
            "train.resume=latest",
            *common,
        )
    assert result.exit_code == 0, result.output
    notes = [line for line in result.stderr.splitlines() if line.startswith("note: ")]
    assert notes == [
        f"note: {kept} keeps the round in an older dsharp's format, which is not loaded: the "
        "resumed run samples a fresh round, so it differs from an uninterrupted run from here on"
    ]
    assert [r["new_round"] for r in read_jsonl(run / "metrics.jsonl")] == [1.0, 1.0]
    assert loads and all(weights_only is True for weights_only in loads)


def test_a_branch_into_another_round_method_samples_its_own_round(tiny_sd_dir, tmp_path):
    """A DDPO checkpoint inside a round, kept without its run's recipe.yaml, branched into a
    D3PO run: D3PO samples its own round (DDPO's has no pairs; it crashed on it before)."""
    import shutil

    common = _two_updates_per_round(tiny_sd_dir)
    ddpo, d3po = tmp_path / "ddpo", tmp_path / "d3po"
    kept = tmp_path / "kept" / "checkpoints" / "step-000001"
    with brightness_registered():
        _train(MINI / "ddpo.yaml", f"output_dir={ddpo}", "train.max_steps=1", "method.n=2", *common)
        shutil.copytree(ddpo / "checkpoints" / "step-000001", kept)
        assert (kept / "method_round_0.pt").is_file()
        result = _train(
            MINI / "d3po.yaml",
            f"output_dir={d3po}",
            "train.max_steps=2",
            f"train.resume={kept}",
            *common,
        )
    assert result.exit_code == 0, result.output
    assert [r["new_round"] for r in read_jsonl(d3po / "metrics.jsonl")] == [1.0]


def test_offline_dpo_trains_two_steps_from_a_pairs_file(tiny_sd_dir, tmp_path):
    pairs = _pairs_file(tmp_path)
    out = tmp_path / "run"
    result = _train(
        MINI / "diffusion_dpo.yaml",
        f"model.pretrained={tiny_sd_dir}",
        f"output_dir={out}",
        f"data.dataset={pairs}",
        "data.generator=none",
        "data.image_column=image_w",
        "data.caption_column=prompt",
        "method.options.pairs=offline",
        f"method.options.pairs_file={pairs}",
        *SHRINK,
    )
    rows = _check_run(out, result)
    # policy = reference at init, so the margin is 0 up to float error that beta amplifies
    # (1.5e-4 seen on an AVX2-only CPU)
    assert rows[0]["loss"] == pytest.approx(math.log(2), abs=1e-3)
    # the reward only logs x0's score here: no evaluation steered training (Table 1's budget)
    assert "reward_evals" not in rows[-1] and math.isfinite(rows[-1]["reward"])


def test_mini_iterpo_and_finetune_train_two_steps(tiny_sd_dir, tmp_path, tiny_clip):
    # as shipped (the differentiable shapes_soft surrogate), then through a CLIP reward
    clip = (
        "rewards.0.name=clip",
        f"rewards.0.options={{model: {tiny_clip['model']}, pretrained: {tiny_clip['pretrained']}}}",
    )
    for name, extra in (("iterpo-soft", ()), ("iterpo-clip", clip)):
        out = tmp_path / name
        result = _train(
            MINI / "iterpo.yaml",
            f"model.pretrained={tiny_sd_dir}",
            f"output_dir={out}",
            *extra,
            *SHRINK,
        )
        rows = _check_run(out, result)
        assert all(r["grad_step"] == 1.0 for r in rows)  # 30..39 of 40 scaled to 2 steps
        assert rows[-1]["reward_evals"] > 0  # ReFL's reward calls are counted
    out = tmp_path / "finetune"
    result = _train(
        MINI / "finetune.yaml", f"model.pretrained={tiny_sd_dir}", f"output_dir={out}", *SHRINK[:2]
    )
    _check_run(out, result, reward=False)  # finetune's loss uses no reward


def test_iterpo_with_a_non_differentiable_reward_fails_before_training(tiny_sd_dir, tmp_path):
    out = tmp_path / "run"
    result = _train(
        MINI / "iterpo.yaml",
        f"model.pretrained={tiny_sd_dir}",
        f"output_dir={out}",
        "rewards.0.name=shapes",
        "rewards.0.options={}",
        *SHRINK,
    )
    # A recipe error: one line, exit 2, before any model loads.
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs differentiable rewards" in lines[0], result.stderr
    assert "rewards.0.name" in lines[0] and "'shapes'" in lines[0]
    assert not out.exists()


def test_iterpo_with_a_batch_zscored_reward_fails_before_training(tiny_sd_dir, tmp_path):
    """ReFL's relu(margin - z) is linear in z-scores below the margin, and they sum to zero
    over each micro-batch (with one sample per process, each is 0): the loss was a constant,
    and IterPO trained nothing from that reward without a word."""
    pixels = torch.tensor([[0.1, 0.5, 0.3], [0.2, 0.9, 0.4]], requires_grad=True)
    zscored = (pixels - pixels.mean(1, keepdim=True)) / pixels.std(1, correction=0, keepdim=True)
    refl_loss(zscored, [1.0, 1.0], 2.0).mean().backward()  # what IterPO back-propagated
    assert float(pixels.grad.abs().max()) < 1e-6

    out = tmp_path / "run"
    result = _train(
        MINI / "iterpo.yaml",
        f"model.pretrained={tiny_sd_dir}",
        f"output_dir={out}",
        "rewards.0.normalize=batch_zscore",
        *SHRINK,
    )
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "rewards.0.normalize:" in lines[0], result.stderr
    assert "trains nothing" in lines[0]
    assert not out.exists()
    # a z-scored reward of weight 0 is only logged: allowed
    load_recipe(MINI / "iterpo.yaml", ["rewards.0.normalize=batch_zscore", "rewards.0.weight=0"])


def test_iterpo_built_with_a_batch_zscored_reward_is_refused(sd_model):
    spec = parse_reward_spec({"name": "pixel", "normalize": "batch_zscore"})
    with pytest.raises(ValueError, match="normalize: batch_zscore"):
        IterPO(sd_model, CombinedReward([spec], [MeanPixel()]), 64, 64)
    spec.weight = 0.0
    logged = parse_reward_spec({"name": "pixel"})
    rewards = CombinedReward([spec, logged], [MeanPixel(), MeanPixel()])
    IterPO(sd_model, rewards, 64, 64, infer_steps=2)  # only logged: allowed


def test_a_saved_iterpo_run_with_a_batch_zscored_reward_still_loads(tmp_path):
    """A run trained before the refusal keeps its checkpoints: sample, eval and merge read
    its recipe.yaml (validate_files=False), which the refusal made unreadable ('use
    normalize: none' for a run already trained); training it anew is still refused."""
    from dsharp.checkpoints import read_run_recipe

    data = yaml.safe_load((MINI / "iterpo.yaml").read_text())
    data["rewards"][0]["normalize"] = "batch_zscore"
    run = tmp_path / "run"
    (run / "checkpoints" / "step-000001").mkdir(parents=True)
    (run / "recipe.yaml").write_text(yaml.safe_dump(data))
    recipe = read_run_recipe(run / "checkpoints" / "step-000001")
    assert recipe.method.name == "iterpo" and recipe.rewards[0].normalize == "batch_zscore"
    with pytest.raises(ValueError, match="rewards.0.normalize"):  # a RecipeError
        load_recipe(run / "recipe.yaml")
