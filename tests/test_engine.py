"""The training engine and the Diffusion-Sharpening methods, on tiny SD models on the CPU.

Method mechanics are checked with a deterministic fake reward (mean image brightness)
registered through the real plugin manager: which trajectories win, which UNet calls carry
gradients, how often the reward runs, the loss value at the reference, regression targets
and missing scores. Engine tests cover resume (bit-for-bit against an uninterrupted run),
checkpoints, LoRA runs and the learning-rate schedule.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from dsharp.config import RewardSpec, load_recipe
from dsharp.file_records import RECORD_NAME
from dsharp.io import read_jsonl
from dsharp.methods import sharpening
from dsharp.methods.base import Batch
from dsharp.methods.sharpening import RLHFSharpening, SFTSharpening
from dsharp.models import load_model
from dsharp.rewards.base import RewardError
from dsharp.rewards.combine import CombinedReward
from fake_rewards import brightness_registered
from spying import record_calls

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
PROMPTS = ["a red square", "a blue circle"]
N = 3  # trajectories per prompt in the method tests
STRIDE = 250  # timesteps between trajectory steps (1000 // 4, as in the tiny recipes)


# --------------------------------------------------------------------------- fake reward


@pytest.fixture
def brightness():
    """The ``test_brightness`` reward, registered for one test; yields its recorded calls."""
    with brightness_registered() as calls:
        yield calls


def _reward(on_error: str = "raise", **options: Any) -> CombinedReward:
    return CombinedReward([RewardSpec(name="test_brightness", on_error=on_error, options=options)])


# --------------------------------------------------------------------------- spies


class UNetSpy:
    """Forward-pre-hook on ``model.unet``: records grad mode and inputs of each call."""

    def __init__(self, unet: torch.nn.Module):
        self.calls: list[tuple[bool, torch.Tensor, torch.Tensor]] = []
        self.handle = unet.register_forward_pre_hook(self._hook)

    def _hook(self, module, args):
        sample, timestep = args[0], args[1]
        self.calls.append((torch.is_grad_enabled(), sample.detach().clone(), timestep.clone()))

    @property
    def grad_calls(self) -> list[tuple[bool, torch.Tensor, torch.Tensor]]:
        return [c for c in self.calls if c[0]]

    def remove(self) -> None:
        self.handle.remove()


@pytest.fixture
def captured(monkeypatch):
    """Capture the rollout and the per-prompt selection of one ``compute_loss`` (any model)."""
    seen: dict[str, Any] = {}
    roll_out, select = sharpening.roll_out, sharpening.select_per_prompt

    def spy_roll_out(*args, **kwargs):
        seen["rollout"] = roll_out(*args, **kwargs)
        return seen["rollout"]

    def spy_select(returns, n):
        best, worst, usable = select(returns, n)
        seen.update(returns=returns.clone(), best=best, worst=worst, usable=usable)
        return best, worst, usable

    monkeypatch.setattr(sharpening, "roll_out", spy_roll_out)
    monkeypatch.setattr(sharpening, "select_per_prompt", spy_select)
    return seen


@pytest.fixture
def spies(sd_model, captured):
    """:func:`captured`, plus every call of the tiny SD model's UNet."""
    spy = UNetSpy(sd_model.unet)
    captured["unet"] = spy
    try:
        yield captured
    finally:
        spy.remove()
        sd_model.unet.zero_grad(set_to_none=True)


def _batch() -> Batch:
    return Batch(
        prompts=list(PROMPTS),
        cond_prompts=list(PROMPTS),
        metadata=[{"prompt_index": i} for i in range(len(PROMPTS))],
    )


def _image_batch() -> Batch:
    # Left half dark, right half bright, different per prompt: a stand-in for data images.
    images = torch.zeros(len(PROMPTS), 3, 64, 64)
    images[0, :, :, 32:] = 0.8
    images[1, :, 16:48, 16:48] = 0.6
    batch = _batch()
    batch.images = images
    return batch


def _rlhf(model, reward, t_range=(500, 1000), **kwargs) -> RLHFSharpening:
    options = dict(n=N, m=2, stride=STRIDE, infer_steps=2, beta=2500.0, guidance=5.0)
    options.update(kwargs)
    return RLHFSharpening(
        model, reward, 64, 64, timestep_min=t_range[0], timestep_max=t_range[1], **options
    )


def _sft(model, reward, t_range=(500, 1000), **kwargs) -> SFTSharpening:
    options = dict(n=N, m=2, stride=STRIDE)
    options.update(kwargs)
    return SFTSharpening(
        model, reward, 64, 64, timestep_min=t_range[0], timestep_max=t_range[1], **options
    )


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _chosen_pairs(rollout, trajectories: torch.Tensor) -> Counter:
    """(step, trajectory) pairs that a recompute of ``trajectories`` must cover."""
    return Counter(
        (j, int(k))
        for k in trajectories.tolist()
        for j in range(rollout.m)
        if bool(rollout.valid[j, k])
    )


def _matched_pairs(rollout, sample: torch.Tensor, timestep: torch.Tensor) -> Counter:
    """Which rollout state each row of a UNet call's input is (exact equality)."""
    found: Counter = Counter()
    for row, t in zip(sample, timestep, strict=True):
        hits = [
            (j, k)
            for j in range(rollout.m)
            for k in range(rollout.states.shape[1])
            if torch.equal(rollout.states[j, k], row) and int(rollout.timesteps[j, k]) == int(t)
        ]
        assert hits, "a grad-enabled UNet input is not a state of the rollout"
        found[hits[0]] += 1
    return found


def _path_returns(calls: list[dict[str, Any]], num_prompts: int, n: int) -> torch.Tensor:
    """Mean step reward per trajectory, rebuilt from what the reward was called with."""
    sums, counts = torch.zeros(num_prompts * n), torch.zeros(num_prompts * n)
    for call in calls:
        for score, meta in zip(call["scores"], call["metadata"], strict=True):
            idx = meta["prompt_index"] * n + meta["trajectory"]
            sums[idx] += score
            counts[idx] += 1
    return sums / counts


# --------------------------------------------------------------------------- method mechanics


@pytest.mark.parametrize(("t_range", "steps"), [((0, STRIDE), 1), ((500, 1000), 2)])
def test_rlhf_selects_per_prompt_and_recomputes_only_the_chosen_pair(
    sd_model, brightness, spies, t_range, steps
):
    method = _rlhf(sd_model, _reward(), t_range=t_range)
    loss, metrics = method.compute_loss(_batch(), sd_model.unet, _gen())
    rollout, returns = spies["rollout"], spies["returns"]
    best, worst = spies["best"], spies["worst"]

    # the reward ran once per trajectory step that has a valid sample, over all trajectories
    assert int(rollout.valid.any(1).sum()) == steps
    assert len(brightness) == steps
    assert [len(c["prompts"]) for c in brightness] == [len(PROMPTS) * N] * steps
    assert sorted(c["metadata"][0]["trajectory_step"] for c in brightness) == list(range(steps))
    # path rewards are the mean of the step rewards, laid out prompt-major
    torch.testing.assert_close(returns, _path_returns(brightness, len(PROMPTS), N))
    # winner and loser of each prompt are among that prompt's own trajectories
    for i in range(len(PROMPTS)):
        block = returns[i * N : (i + 1) * N]
        assert i * N <= int(best[i]) < (i + 1) * N and i * N <= int(worst[i]) < (i + 1) * N
        assert returns[best[i]] == block.max() and returns[worst[i]] == block.min()
    assert metrics["reward_best"] == pytest.approx(returns[best].mean().item())
    assert metrics["reward_worst"] == pytest.approx(returns[worst].mean().item())

    # generation (2 DDIM steps) and the m-step rollout run without grad; then exactly one
    # grad-enabled call covers every valid step of the best and worst trajectories
    calls = spies["unet"].calls
    assert len(calls) == 2 + 2 + 1
    grad = spies["unet"].grad_calls
    assert len(grad) == 1
    _, sample, timestep = grad[0]
    chosen = torch.cat([best, worst])
    assert _matched_pairs(rollout, sample, timestep) == _chosen_pairs(rollout, chosen)
    assert loss.requires_grad and math.isfinite(loss.item())


def test_rlhf_loss_at_the_reference_is_log2_without_a_reward_margin(sd_model, brightness, spies):
    """With the policy equal to the reference, every usable pair's DPO loss is log 2: the
    public code's constant reward-margin term (R_b - R_w) must not be there."""
    method = _rlhf(sd_model, _reward())
    loss, metrics = method.compute_loss(_batch(), sd_model.unet, _gen(1))
    returns, best, worst = spies["returns"], spies["best"], spies["worst"]
    assert metrics["pairs"] == len(PROMPTS)
    assert (returns[best] - returns[worst] > 0).all()  # a margin term would show up
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6)
    assert metrics["implicit_acc"] == 0.0  # zero margin everywhere
    loss.backward()
    grads = [p.grad for p in sd_model.unet.parameters() if p.grad is not None]
    assert grads and sum(float(g.abs().sum()) for g in grads) > 0


def test_rlhf_winner_weight_adds_the_winners_error_to_the_dpo_loss(sd_model, brightness, spies):
    """At the reference the DPO part is log 2, so the loss is log 2 + w * the winner's error."""
    method = _rlhf(sd_model, _reward(), winner_weight=0.5)
    loss, metrics = method.compute_loss(_batch(), sd_model.unet, _gen(1))
    assert metrics["pairs"] == len(PROMPTS)
    expected = math.log(2) + 0.5 * metrics["winner_mse"]
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert metrics["winner_mse"] > 0
    with pytest.raises(ValueError, match="winner_weight: must be >= 0"):
        _rlhf(sd_model, _reward(), winner_weight=-1.0)


def test_rlhf_sample_weight_mixes_each_samples_reward_into_its_return(sd_model, brightness, spies):
    """Returns are (1 - a) * mean step reward + a * the online sample's own reward."""
    method = _rlhf(sd_model, _reward(), sample_weight=0.25)
    _, metrics = method.compute_loss(_batch(), sd_model.unet, _gen(3))
    step_calls = [c for c in brightness if "trajectory_step" in c["metadata"][0]]
    sample_calls = [c for c in brightness if "trajectory_step" not in c["metadata"][0]]
    assert len(step_calls) == 2 and len(sample_calls) == 1  # every step valid for t >= 500
    with torch.no_grad():
        decoded = sd_model.decode(spies["rollout"].x0)
    sample = sample_calls[0]["scores"]
    assert torch.allclose(sample, decoded.float().mean(dim=(1, 2, 3)))
    path = (step_calls[0]["scores"] + step_calls[1]["scores"]) / 2
    assert torch.allclose(spies["returns"], 0.75 * path + 0.25 * sample, atol=1e-6)
    assert metrics["sample_reward"] == pytest.approx(sample.mean().item(), rel=1e-5)


def test_rlhf_sample_weight_skips_unscored_samples_and_rejects_bad_values(
    sd_model, brightness, spies
):
    """A sample the reward could not score makes its trajectory NaN even with scored steps."""
    reward = _reward(on_error="missing", nan_sample_trajectory=1)
    method = _rlhf(sd_model, reward, sample_weight=0.5)
    method.compute_loss(_batch(), sd_model.unet, _gen(4))
    step_calls = [c for c in brightness if "trajectory_step" in c["metadata"][0]]
    assert not any(torch.isnan(c["scores"]).any() for c in step_calls)
    returns = spies["returns"].view(len(PROMPTS), N)
    assert torch.isnan(returns[:, 1]).all() and not torch.isnan(returns[:, [0, 2]]).any()
    assert (spies["best"] % N != 1).all() and (spies["worst"] % N != 1).all()
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="sample_weight: must be in"):
            _rlhf(sd_model, _reward(), sample_weight=bad)
    with pytest.raises(ValueError, match="sample_weight: expected a number"):
        _rlhf(sd_model, _reward(), sample_weight="half")


@pytest.mark.parametrize(
    ("spacing", "schedule"),
    [(None, [501, 1]), ("trailing", [999, 499]), ("linspace", [999, 0])],
)
def test_rlhf_sample_spacing_sets_where_online_samples_start(
    sd_model, brightness, spies, spacing, schedule
):
    """Two-step online samples run at t = 501, 1 with the tiny model's leading spacing, at
    999, 499 with sample_spacing: trailing and at 999, 0 with linspace (whose second step
    diffusers' DDIM rule, 999 - 500, would miss); the trajectories are unaffected by it."""
    method = _rlhf(sd_model, _reward(), sample_spacing=spacing)
    method.compute_loss(_batch(), sd_model.unet, _gen(5))
    sampler_timesteps = [int(c[2].flatten()[0]) for c in spies["unet"].calls[:2]]
    assert sampler_timesteps == schedule
    with pytest.raises(ValueError, match="sample_spacing: unknown 'sideways'"):
        _rlhf(sd_model, _reward(), sample_spacing="sideways")


def test_rlhf_sample_from_reference_draws_samples_and_trajectories_off_policy(
    sd_model, brightness, spies
):
    """With sample_from: reference the trained UNet runs once (the loss, with gradients);
    the sampler and the rollout run on the frozen copy, which still equals the policy here,
    so the loss is the default's to the last digit."""
    on_policy, _ = _rlhf(sd_model, _reward()).compute_loss(_batch(), sd_model.unet, _gen(6))
    default_calls = len(spies["unet"].calls)
    spies["unet"].calls.clear()
    method = _rlhf(sd_model, _reward(), sample_from="reference")
    off_policy, _ = method.compute_loss(_batch(), sd_model.unet, _gen(6))
    calls = spies["unet"].calls
    assert default_calls == 5  # 2 sampler steps, 2 trajectory steps, 1 recompute
    assert len(calls) == 1 and calls[0][0]
    assert off_policy.item() == pytest.approx(on_policy.item(), rel=1e-6)
    with pytest.raises(ValueError, match="sample_from: unknown 'elsewhere'"):
        _rlhf(sd_model, _reward(), sample_from="elsewhere")


def test_sft_recomputes_only_the_winners_with_one_grad_call(sd_model, brightness, spies):
    method = _sft(sd_model, _reward())
    loss, metrics = method.compute_loss(_image_batch(), sd_model.unet, _gen(2))
    rollout, best = spies["rollout"], spies["best"]
    assert len(brightness) == int(rollout.valid.any(1).sum())
    calls = spies["unet"].calls
    assert len(calls) == 2 + 1  # m rollout steps without grad, one recompute with grad
    assert [c[0] for c in calls] == [False, False, True]
    _, sample, timestep = calls[-1]
    assert _matched_pairs(rollout, sample, timestep) == _chosen_pairs(rollout, best)
    assert loss.item() == pytest.approx(metrics["winner_mse"], rel=1e-5)
    # trajectories start from the encoded data latents, n per image
    assert rollout.x0.shape == (len(PROMPTS) * N, 4, 8, 8)
    torch.testing.assert_close(rollout.x0[0], rollout.x0[N - 1])


@pytest.mark.parametrize("error_space", ["epsilon", "native", "x0"])
def test_error_space_picks_epsilon_v_or_clean_sample_errors(brightness, captured, error_space):
    """On a v-prediction model (dsharp-mini) the winner's error is the epsilon MSE by
    default, the v MSE (the loss the model was pretrained with) with ``native`` and the MSE
    of the predicted clean sample to the trajectory's x0 with ``x0``; at the noisy states
    t >= 500 the epsilon error (abar * v error) is far smaller."""
    model = load_model("dsharp-mini")
    method = SFTSharpening(
        model,
        _reward(),
        32,
        32,
        n=2,
        m=2,
        stride=STRIDE,
        timestep_min=500,
        timestep_max=1000,
        error_space=error_space,
    )
    batch = _batch()
    batch.images = torch.rand(len(PROMPTS), 3, 32, 32)
    with torch.no_grad():
        loss = method.compute_loss(batch, model.unet, _gen(6))[0].item()
    rollout, best = captured["rollout"], captured["best"]
    cond = model.encode_prompt(PROMPTS, 32, 32).repeat_interleave(2)
    abar = method.tables.abar
    errors = {"native": [], "epsilon": [], "x0": []}
    for k in best.tolist():
        step_errors = {"native": [], "epsilon": [], "x0": []}
        for j in range(rollout.m):
            step, traj = torch.tensor([j]), torch.tensor([k])
            eps = rollout.targets_at("consistent", method.tables, step, traj)
            state, t = rollout.states[j, k][None], rollout.timesteps[j, k][None]
            with torch.no_grad():
                v_pred = model.predict_native(state, t, cond.index(traj))
                eps_pred = model.predict_noise(state, t, cond.index(traj))
            v_tgt = model.native_target(rollout.x0[k][None], eps, t)
            a = abar(t).item()
            x0_pred = a**0.5 * state - (1 - a) ** 0.5 * v_pred
            step_errors["native"].append(((v_pred - v_tgt) ** 2).mean().item())
            step_errors["epsilon"].append(((eps_pred - eps) ** 2).mean().item())
            step_errors["x0"].append(((x0_pred - rollout.x0[k]) ** 2).mean().item())
        for space, values in step_errors.items():
            errors[space].append(sum(values) / len(values))
    mean = {space: sum(values) / len(values) for space, values in errors.items()}
    assert loss == pytest.approx(mean[error_space], rel=1e-4)
    assert mean["epsilon"] < 0.5 * mean["native"]
    with pytest.raises(ValueError, match="error_space: unknown 'v'"):
        SFTSharpening(model, _reward(), 32, 32, error_space="v")


def test_consistent_and_original_targets_agree_at_step_zero_only(sd_model, brightness, spies):
    method = _sft(sd_model, _reward(), t_range=(500, 1000))
    method.compute_loss(_image_batch(), sd_model.unet, _gen(3))
    rollout = spies["rollout"]
    assert bool(rollout.valid.all())  # t >= 500 and stride 250: both steps valid
    traj = torch.arange(rollout.states.shape[1])
    for j in range(rollout.m):
        step = torch.full_like(traj, j)
        original = rollout.targets_at("original", method.tables, step, traj)
        consistent = rollout.targets_at("consistent", method.tables, step, traj)
        if j == 0:
            torch.testing.assert_close(consistent, original, rtol=0, atol=1e-4)
        else:
            assert (consistent - original).abs().max() > 0.1
    with pytest.raises(ValueError, match="unknown regression target"):
        rollout.targets_at("nope", method.tables, traj, traj)


@pytest.mark.parametrize(("t_range", "same"), [((0, STRIDE), True), ((500, 1000), False)])
def test_target_option_changes_the_loss_only_past_step_zero(sd_model, brightness, t_range, same):
    losses = {}
    for target in ("consistent", "original"):
        method = _sft(sd_model, _reward(), t_range=t_range, target=target)
        with torch.no_grad():
            losses[target] = method.compute_loss(_image_batch(), sd_model.unet, _gen(4))[0].item()
    if same:  # t < stride: one step only, where both targets are the drawn noise
        assert losses["consistent"] == pytest.approx(losses["original"], rel=1e-4)
    else:
        assert abs(losses["consistent"] - losses["original"]) > 1e-4 * losses["original"]


def test_missing_rewards_never_win_and_are_counted(sd_model, brightness, spies):
    reward = _reward(on_error="missing", nan_trajectory=0, nan_prompt=PROMPTS[1])
    method = _rlhf(sd_model, reward)
    loss, metrics = method.compute_loss(_batch(), sd_model.unet, _gen(5))
    returns, best, worst, usable = (spies[k] for k in ("returns", "best", "worst", "usable"))
    # prompt 0 lost trajectory 0; prompt 1 lost all three
    assert torch.isnan(returns).tolist() == [True, False, False, True, True, True]
    assert metrics["reward_missing"] == 4
    assert int(best[0]) in (1, 2) and int(worst[0]) in (1, 2) and best[0] != worst[0]
    assert usable.tolist() == [True, False]
    assert metrics["pairs"] == 1
    assert math.isfinite(metrics["reward"]) and math.isfinite(loss.item())
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6)  # only the usable pair counts


def test_a_prompt_whose_trajectories_tie_is_left_out_of_the_rlhf_loss(
    sd_model, brightness, spies, monkeypatch
):
    losses = record_calls(monkeypatch, sharpening, "rlhf_sharpening_loss")
    method = _rlhf(sd_model, _reward(constant_prompt=PROMPTS[1]), winner_weight=1.0)
    loss, metrics = method.compute_loss(_batch(), sd_model.unet, _gen(5))
    policy_best = losses[-1].args[0].detach()
    assert spies["returns"][N:].tolist() == [0.5] * N  # prompt 1's trajectories tie
    assert metrics["pairs"] == 1
    # at the reference each pair's DPO term is log 2; only prompt 0 counts, with its winner term
    expected = math.log(2) + float(policy_best[0])
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert metrics["winner_mse"] == pytest.approx(float(policy_best[0]), rel=1e-5)
    # every prompt tied: nothing was ranked, so no winner's error is reported
    method = _rlhf(sd_model, _reward(constant_prompt=PROMPTS[0]), winner_weight=1.0)
    _, metrics = method.compute_loss(
        Batch(prompts=PROMPTS[:1], cond_prompts=PROMPTS[:1]), sd_model.unet, _gen(5)
    )
    assert metrics["pairs"] == 0 and math.isnan(metrics["winner_mse"])


def test_sft_loss_is_the_mean_winner_error_of_the_prompts_that_were_scored(
    sd_model, brightness, spies, monkeypatch
):
    errors = record_calls(monkeypatch, SFTSharpening, "_errors")
    reward = _reward(on_error="missing", nan_prompt=PROMPTS[1])
    loss, _ = _sft(sd_model, reward).compute_loss(_image_batch(), sd_model.unet, _gen(3))
    assert spies["usable"].tolist() == [True, False]
    assert loss.item() == pytest.approx(float(errors[-1].result.detach()[0]), rel=1e-5)


@pytest.mark.parametrize("t_range", [(0, None), (700, None), (200, 400)])
def test_finetune_draws_timesteps_in_the_recipe_range(sd_model, spies, t_range):
    from dsharp.config import MethodConfig
    from dsharp.methods.factory import build_method

    low, high = t_range
    cfg = MethodConfig(name="finetune", timestep_min=low, timestep_max=high)
    method = build_method(cfg, sd_model, None, 64, 64)
    for seed in range(8):
        method.compute_loss(_image_batch(), sd_model.unet, _gen(seed))
    drawn = torch.cat([c[2].flatten() for c in spies["unet"].grad_calls])
    assert drawn.numel() == 8 * len(PROMPTS)
    assert drawn.min() >= low and drawn.max() < (high or sd_model.num_train_timesteps)
    if low == 0 and high is None:
        assert drawn.max() - drawn.min() > 300  # the whole range, as before


def test_finetunes_logged_reward_pools_by_the_samples_it_scored(sd_model, brightness):
    """A batch that scored one of its two predictions weighs half as much in the step's
    reward as one that scored both (finetune logs no std, so it says its count)."""
    from dsharp.methods.finetune import FineTune
    from dsharp.reward_moments import SCORED
    from dsharp.step_metrics import pool_rows

    rows = []
    for reward in (_reward(on_error="missing", nan_prompt=PROMPTS[1]), _reward()):
        method = FineTune(sd_model, reward, 64, 64)
        rows.append(method.compute_loss(_image_batch(), sd_model.unet, _gen(3))[1])
    assert [r[SCORED] for r in rows] == [1, 2]
    rewards = [r["reward"] for r in rows]
    assert pool_rows(rows)["reward"] == pytest.approx((rewards[0] + 2 * rewards[1]) / 3)


def test_finetune_refuses_an_empty_timestep_range_and_fields_it_does_not_use(sd_model):
    from dsharp.config import MethodConfig
    from dsharp.methods.factory import build_method
    from dsharp.methods.finetune import FineTune

    with pytest.raises(ValueError, match="method.timestep_min/max"):
        FineTune(sd_model, None, 64, 64, timestep_min=900, timestep_max=900)
    with pytest.raises(ValueError, match=r"method.beta: not used by finetune"):
        build_method(MethodConfig(name="finetune", beta=5.0), sd_model, None, 64, 64)


def test_sharpening_refuses_more_inference_steps_than_timesteps(sd_model):
    """The default stride T // infer_steps would be 0: every trajectory step one timestep."""
    from dsharp.methods.sharpening import RLHFSharpening

    too_many = sd_model.num_train_timesteps + 1
    with pytest.raises(ValueError, match=f"method.infer_steps: {too_many} is more than"):
        RLHFSharpening(sd_model, None, 64, 64, infer_steps=too_many)


def test_nan_reward_with_on_error_raise_stops(sd_model, brightness):
    method = _rlhf(sd_model, _reward(nan_trajectory=1))
    with pytest.raises(RewardError, match="NaN"):
        method.compute_loss(_batch(), sd_model.unet, _gen(6))


# --------------------------------------------------------------------------- the engine


# The smallest RLHF run that still has a best/worst pair: one prompt, two trajectories.
SMALL = ("train.batch_size=1", "method.n=2")


def _recipe(name: str, model_dir: Path, out: Path, *overrides: str):
    return load_recipe(
        RECIPES / "tiny" / f"{name}.yaml",
        [f"model.pretrained={model_dir}", f"output_dir={out}", *overrides],
    )


def _train(recipe):
    from dsharp.engine import Trainer

    trainer = Trainer(recipe, progress=False)
    trainer.run()
    return trainer


def _unet_weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return load_file(str(checkpoint / "model" / "unet" / "diffusion_pytorch_model.safetensors"))


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


@pytest.mark.slow
def test_resume_continues_exactly_like_an_uninterrupted_run(tiny_sd_dir, brightness, tmp_path):
    # lr high enough that a wrong optimizer, scheduler or RNG state shows; a warmup so that
    # a scheduler restarted from zero would change steps 3 and 4; a reward without ties, so
    # that every step has a preference pair to learn from
    common = (
        "train.lr=1e-3",
        "train.warmup_steps=2",
        "rewards.0.name=test_brightness",
        *SMALL,
    )
    resumed, straight = tmp_path / "resumed", tmp_path / "straight"
    _train(_recipe("rlhf_sharpening", tiny_sd_dir, resumed, *common, "train.max_steps=2"))
    after_two = _unet_weights(resumed / "checkpoints" / "step-000002")

    # a crash while writing checkpoint 3 left its temp folder behind, complete-looking, and
    # the metrics row of step 3 (logged before the checkpoint)
    stale = resumed / "checkpoints" / ".step-000003.tmp"
    (stale / "model").mkdir(parents=True)
    (stale / "trainer_state.json").write_text(json.dumps({"step": 3}))
    with open(resumed / "metrics.jsonl", "a") as fh:
        fh.write(json.dumps({"step": 3, "reward": -1.0, "loss": -1.0}) + "\n")

    trainer = _train(
        _recipe(
            "rlhf_sharpening",
            tiny_sd_dir,
            resumed,
            *common,
            "train.max_steps=4",
            "train.resume=latest",
        )
    )
    assert trainer.start_step == 2
    _train(
        _recipe(
            "rlhf_sharpening",
            tiny_sd_dir,
            straight,
            *common,
            "train.max_steps=4",
            "train.checkpoint_every=0",
        )
    )

    rows = read_jsonl(resumed / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    names = sorted(p.name for p in (resumed / "checkpoints").iterdir())
    assert names == [f"step-{s:06d}" for s in (1, 2, 3, 4)]  # the stale temp folder is gone
    # checkpoint_every=0: no periodic checkpoints, but the final model is saved
    assert sorted(p.name for p in (straight / "checkpoints").iterdir()) == ["step-000004"]

    final_resumed = _unet_weights(resumed / "checkpoints" / "step-000004")
    final_straight = _unet_weights(straight / "checkpoints" / "step-000004")
    assert _max_diff(final_resumed, after_two) > 5e-4  # steps 3 and 4 did change weights
    assert _max_diff(final_resumed, final_straight) <= 1e-6
    # the same batches, noises, rewards and learning rates, step by step
    straight_rows = read_jsonl(straight / "metrics.jsonl")
    for ours, theirs in zip(rows, straight_rows, strict=True):
        for key in ("reward", "loss", "lr", "reward_best", "reward_worst", "reward_evals"):
            assert ours[key] == pytest.approx(theirs[key], rel=1e-6, abs=1e-9), (ours, key)
    assert [r["lr"] for r in rows] == pytest.approx([0.0, 5e-4, 1e-3, 1e-3])


@pytest.mark.slow
def test_training_a_run_on_lays_its_decaying_schedule_out_over_the_new_length(
    tiny_sd_dir, brightness, tmp_path, capsys
):
    """Raising train.max_steps on resume: load_state restores the rate the old schedule had
    left (0 after the last step of a linear one), but the schedule is built for the new
    length; the first resumed step must train at the new schedule's rate, as a fresh run of
    the new length does at that step, and say so."""
    common = ("train.lr=1e-3", "train.lr_scheduler=linear", "train.checkpoint_every=1")
    common += ("rewards.0.name=test_brightness", *SMALL)
    run = tmp_path / "run"
    _train(_recipe("rlhf_sharpening", tiny_sd_dir, run, *common, "train.max_steps=2"))
    state = json.loads((run / "checkpoints" / "step-000002" / "trainer_state.json").read_text())
    assert state["max_steps"] == 2
    capsys.readouterr()
    resumed = ("train.max_steps=4", "train.resume=latest")
    _train(_recipe("rlhf_sharpening", tiny_sd_dir, run, *common, *resumed))
    # a fresh 4-step linear run: 1e-3, 7.5e-4, 5e-4, 2.5e-4
    lrs = [r["lr"] for r in read_jsonl(run / "metrics.jsonl")]
    assert lrs == pytest.approx([1e-3, 5e-4, 5e-4, 2.5e-4], rel=1e-9, abs=0)
    step = {s: _unet_weights(run / "checkpoints" / f"step-{s:06d}") for s in (2, 3)}
    assert _max_diff(step[3], step[2]) > 0  # step 3 trained
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert notes == [
        "note: train.max_steps is 4, the checkpoint's run planned 2: its linear learning-rate "
        "schedule is now laid out over 4 steps, so step 3 trains at lr 0.0005"
    ]


def test_fresh_run_into_a_folder_with_checkpoints_is_refused(tiny_sd_dir, tmp_path):
    from dsharp.engine import Trainer

    run = tmp_path / "run"
    (run / "checkpoints" / "step-000002").mkdir(parents=True)
    (run / "checkpoints" / "step-000002" / "trainer_state.json").write_text('{"step": 2}')
    with pytest.raises(ValueError, match=r"already holds checkpoints \(step 2\) of a run without"):
        Trainer(_recipe("rlhf_sharpening", tiny_sd_dir, run), progress=False)


def test_resume_from_a_folder_that_is_not_a_checkpoint_fails(tiny_sd_dir, tmp_path):
    from dsharp.engine import Trainer

    recipe = _recipe("rlhf_sharpening", tiny_sd_dir, tmp_path / "run", f"train.resume={tmp_path}")
    with pytest.raises(FileNotFoundError, match="not a checkpoint folder"):
        Trainer(recipe, progress=False)


def test_runs_of_other_mixed_precisions_train_one_after_another_in_one_process(
    tiny_sd_dir, brightness, tmp_path
):
    """`dsharp reproduce` trains a study's rows in one process: accelerate kept the first
    run's mixed precision process-wide and refused a later run's other one with a
    ValueError ("AcceleratorState has already been initialized")."""
    common = ("rewards.0.name=test_brightness", *SMALL, "train.max_steps=1")
    runs = {}
    for name, precision in (("first", "no"), ("second", "bf16"), ("third", "no")):
        overrides = (*common, f"train.mixed_precision={precision}", "model.weight_dtype=bf16")
        trainer = _train(_recipe("rlhf_sharpening", tiny_sd_dir, tmp_path / name, *overrides))
        assert trainer.accelerator.mixed_precision == precision
        runs[name] = read_jsonl(tmp_path / name / "metrics.jsonl")[0]
    # under bf16 autocast the policy and its frozen reference copy run alike: the first
    # step's DPO loss is log 2, and it trains
    assert runs["second"]["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert math.isfinite(runs["second"]["grad_norm"]) and runs["second"]["grad_norm"] > 0
    assert runs["third"]["grad_norm"] == pytest.approx(runs["first"]["grad_norm"], rel=1e-6)
    assert runs["second"]["grad_norm"] != pytest.approx(runs["first"]["grad_norm"], rel=1e-6)


@pytest.mark.slow
def test_lora_run_grad_accum_schedule_and_sampling_from_the_checkpoint(
    tiny_sd_dir, brightness, tmp_path
):
    run = tmp_path / "lora"
    recipe = _recipe(
        "rlhf_sharpening",
        tiny_sd_dir,
        run,
        "rewards.0.name=test_brightness",
        *SMALL,
        "model.lora_rank=4",
        "train.lr=1e-2",
        "train.grad_accum=2",
        "train.lr_scheduler=linear",
        "train.checkpoint_every=1",
        "train.keep_checkpoints=1",
    )
    trainer = _train(recipe)
    model = trainer.model
    # the schedule advanced once per optimizer step, not once per micro-batch
    rows = read_jsonl(run / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    assert [r["lr"] for r in rows] == pytest.approx([1e-2, 5e-3])
    assert all("grad_norm" in r and r["grad_norm"] > 0 for r in rows)
    # only LoRA weights are trained and saved
    assert all("lora_" in n for n, p in model.unet.named_parameters() if p.requires_grad)
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step-000002"]  # pruned
    saved = run / "checkpoints" / "step-000002" / "model"
    assert sorted(p.name for p in saved.iterdir()) == [
        "lora_config.json",
        "pytorch_lora_weights.safetensors",
    ]
    tensors = load_file(str(saved / "pytorch_lora_weights.safetensors"))
    assert tensors and all(k.startswith("unet.") and "lora_" in k for k in tensors)
    assert json.loads((saved / "lora_config.json").read_text())["rank"] == 4

    # reference() disables the adapters: it predicts what the base model predicts
    base = load_model(str(tiny_sd_dir))
    x = torch.randn(2, 4, 8, 8, generator=_gen(7))
    t = torch.tensor([900, 400])
    cond = base.encode_prompt(PROMPTS, 64, 64)
    with torch.no_grad():
        expected = base.predict_noise(x, t, cond)
        with model.reference():
            as_reference = model.predict_noise(x, t, cond)
        tuned = model.predict_noise(x, t, cond)
    torch.testing.assert_close(as_reference, expected, rtol=0, atol=1e-5)
    assert (tuned - expected).abs().max() > 1e-4
    assert all(p.requires_grad for n, p in model.unet.named_parameters() if "lora_" in n)

    # `dsharp sample --checkpoint RUN` loads the LoRA and writes PNGs
    from dsharp.cli import app

    out = tmp_path / "samples"
    args = ["sample", "--checkpoint", str(run), "--prompt", "a red square", "-n", "2"]
    args += ["--steps", "2", "--seed", "5", "--out", str(out), "--device", "cpu", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert [Path(p).name for p in summary["images"]] == [
        "0000-seed5-a-red-square.png",
        "0001-seed6-a-red-square.png",
    ]
    written = sorted(Path(p).name for p in [*summary["images"], summary["grid"]])
    assert sorted(p.name for p in out.iterdir()) == [RECORD_NAME, *written]


def test_training_curves_follow_checkpoints_and_a_drawing_failure_only_warns(
    tiny_sd_dir, brightness, tmp_path, monkeypatch
):
    import dsharp.engine

    run = tmp_path / "run"
    recipe = _recipe(
        "rlhf_sharpening", tiny_sd_dir, run, *SMALL, "train.max_steps=1", "train.lr=1e-5"
    )
    _train(recipe)
    assert (run / "training_curves.png").read_bytes().startswith(b"\x89PNG")

    def broken(*args, **kwargs):
        raise RuntimeError("no display")

    monkeypatch.setattr(dsharp.engine, "plot_training_curves", broken)
    other = tmp_path / "other"
    with pytest.warns(UserWarning, match="training curves not drawn: no display"):
        _train(_recipe("rlhf_sharpening", tiny_sd_dir, other, *SMALL, "train.max_steps=1"))
    assert (other / "checkpoints" / "step-000001" / "trainer_state.json").is_file()
    assert not (other / "training_curves.png").exists()


def test_the_metrics_row_of_a_checkpoint_step_is_written_durably(
    tiny_sd_dir, brightness, tmp_path, monkeypatch
):
    """A checkpoint's step's row reaches the disk before the checkpoint (periodic, final,
    or the one a stop saves), or a power cut could keep the checkpoint and lose the row,
    which a resume from it never writes again."""
    import signal

    import dsharp.engine
    from dsharp.engine import Trainer

    order = []
    real_sync, real_finalize = dsharp.engine.sync_file, dsharp.engine.ckpts.finalize_checkpoint

    def sync(path):
        order.append(f"synced to step {read_jsonl(path)[-1]['step']}")
        real_sync(path)

    def finalize(run_dir, step, *args, **kwargs):
        order.append(f"checkpoint {step}")
        return real_finalize(run_dir, step, *args, **kwargs)

    monkeypatch.setattr(dsharp.engine, "sync_file", sync)
    monkeypatch.setattr(dsharp.engine.ckpts, "finalize_checkpoint", finalize)
    steps = ("train.max_steps=3", "train.checkpoint_every=2", "train.log_every=1")
    _train(_recipe("rlhf_sharpening", tiny_sd_dir, tmp_path / "run", *SMALL, *steps))
    assert order == [  # step 3 is the final checkpoint; step 1's row is not synced
        "synced to step 2",
        "checkpoint 2",
        "synced to step 3",
        "checkpoint 3",
    ]

    # a stop between checkpoints: the row already written is synced before the checkpoint
    order.clear()
    real_step = Trainer.train_step

    def step_then_stop(self, step):
        metrics = real_step(self, step)
        signal.raise_signal(signal.SIGINT)
        return metrics

    monkeypatch.setattr(Trainer, "train_step", step_then_stop)
    stopped = tmp_path / "stopped"
    with pytest.raises(dsharp.engine.TrainingInterrupted):
        _train(_recipe("rlhf_sharpening", tiny_sd_dir, stopped, *SMALL, *steps))
    assert order == ["synced to step 1", "checkpoint 1"]


def test_a_relative_model_folder_is_saved_absolute_so_the_run_loads_from_anywhere(
    tiny_sd_dir, brightness, tmp_path, monkeypatch
):
    import shutil

    from dsharp.builders import load_run_model
    from dsharp.recipe_diff import first_difference, saved_recipe_data

    shutil.copytree(tiny_sd_dir, tmp_path / "models" / "tiny")
    monkeypatch.chdir(tmp_path)
    recipe = _recipe("rlhf_sharpening", "./models/tiny", tmp_path / "run", *SMALL)
    _train(recipe)
    saved = saved_recipe_data(tmp_path / "run" / "recipe.yaml")
    assert saved["model"]["pretrained"] == str(tmp_path / "models" / "tiny")
    monkeypatch.chdir(tmp_path / "run")  # elsewhere: ./models/tiny is not here
    model, _ = load_run_model(tmp_path / "run")
    assert model.family == "sd"
    # a run saved before paths were made absolute is the same model named relatively
    monkeypatch.chdir(tmp_path)
    old = {**saved, "model": {**saved["model"], "pretrained": "./models/tiny"}}
    assert first_difference(old, saved) is None
    moved = {**saved, "model": {**saved["model"], "pretrained": "./models/other"}}
    assert first_difference(moved, saved) == (
        "model.pretrained",
        "./models/other",
        str(tmp_path / "models" / "tiny"),
    )


@pytest.mark.slow
def test_ctrl_c_stops_at_a_step_with_a_checkpoint_that_resumes_exactly(
    tiny_sd_dir, brightness, tmp_path, monkeypatch
):
    import signal

    from dsharp.cli import app
    from dsharp.engine import Trainer

    common = ("train.lr=1e-3", "rewards.0.name=test_brightness", "train.checkpoint_every=0")
    common += SMALL
    real_step = Trainer.train_step

    def step_then_ctrl_c(self, step):
        metrics = real_step(self, step)
        if step == 2:
            signal.raise_signal(signal.SIGINT)  # as a terminal's Ctrl-C, mid-run
        return metrics

    monkeypatch.setattr(Trainer, "train_step", step_then_ctrl_c)
    # what was there before (a shell that starts a job in the background ignores SIGINT)
    handler_before = signal.getsignal(signal.SIGINT)
    stopped = tmp_path / "stopped"
    recipe = RECIPES / "tiny" / "rlhf_sharpening.yaml"
    args = [str(recipe), f"model.pretrained={tiny_sd_dir}", f"output_dir={stopped}", *common]
    result = CliRunner().invoke(app, ["train", *args, "train.max_steps=4", "--no-progress"])
    assert result.exit_code == 130, result.output
    assert "stopped after step 2 of 4" in result.stderr
    assert f"output_dir={stopped} train.resume=latest" in result.stderr
    assert signal.getsignal(signal.SIGINT) is handler_before  # handler restored
    # checkpoint_every=0 saves only the final model, yet the stop saved step 2
    assert [p.name for p in (stopped / "checkpoints").iterdir()] == ["step-000002"]
    assert [r["step"] for r in read_jsonl(stopped / "metrics.jsonl")] == [1, 2]

    monkeypatch.setattr(Trainer, "train_step", real_step)
    resumed = _recipe("rlhf_sharpening", tiny_sd_dir, stopped, *common, "train.max_steps=4")
    resumed.train.resume = "latest"
    assert _train(resumed).start_step == 2
    straight = tmp_path / "straight"
    _train(_recipe("rlhf_sharpening", tiny_sd_dir, straight, *common, "train.max_steps=4"))
    final = [_unet_weights(d / "checkpoints" / "step-000004") for d in (stopped, straight)]
    assert _max_diff(*final) <= 1e-6
    # the environment the run started in is kept; the resume's is added beside it
    environment = json.loads((stopped / "environment.json").read_text())
    assert [r["step"] for r in environment["resumed"]] == [2]
    assert environment["packages"] == environment["resumed"][0]["packages"]
    assert "resumed" not in json.loads((straight / "environment.json").read_text())


def test_a_resume_keeps_the_environment_the_run_started_in(tmp_path):
    from dsharp.environment import run_environment

    path = tmp_path / "environment.json"
    first, later = {"device": "NVIDIA H100"}, {"device": "cpu"}
    assert run_environment(path, first, None) == first  # a new run
    assert run_environment(path, later, 7) == later  # no record to keep
    path.write_text(json.dumps(first))
    once = run_environment(path, later, 7)
    assert once == {"device": "NVIDIA H100", "resumed": [{"step": 7, "device": "cpu"}]}
    path.write_text(json.dumps(once))
    twice = run_environment(path, first, 9)["resumed"]
    assert [(r["step"], r["device"]) for r in twice] == [(7, "cpu"), (9, "NVIDIA H100")]
    path.write_text("{torn")
    assert run_environment(path, later, 9) == later


def test_resume_from_an_older_checkpoint_of_the_same_run_is_refused(tmp_path):
    """Its newer checkpoints would stay beside a different history, and `latest` would later
    pick one of them; a checkpoint of another folder (a branch) is fine."""
    from dsharp.checkpoints import resolve_resume

    run = tmp_path / "run"
    for step in (2, 4):
        folder = run / "checkpoints" / f"step-{step:06d}"
        folder.mkdir(parents=True)
        (folder / "trainer_state.json").write_text(json.dumps({"step": step}))
    older = run / "checkpoints" / "step-000002"
    with pytest.raises(ValueError, match="older than this run's newest checkpoint"):
        resolve_resume(run, str(older))
    assert resolve_resume(run, str(run / "checkpoints" / "step-000004")).name == "step-000004"
    assert resolve_resume(tmp_path / "branch", str(older)) == older
    # a branch into a folder that holds another run's checkpoints would mix the two runs
    other = tmp_path / "other"
    (other / "checkpoints" / "step-000006").mkdir(parents=True)
    (other / "checkpoints" / "step-000006" / "trainer_state.json").write_text('{"step": 6}')
    with pytest.raises(ValueError, match=f"output_dir: {other} already holds checkpoints"):
        resolve_resume(other, str(older))


def _checkpoint_at_step_2(run: Path) -> Path:
    """A bare step-2 checkpoint folder of ``run``: what resume checks read, no weights."""
    checkpoint = run / "checkpoints" / "step-000002"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text(json.dumps({"step": 2}))
    return checkpoint


def _saved_two_step_run(tiny_sd_dir: Path, run: Path) -> Path:
    """``run`` as a 2-step run leaves it for resume checks: its recipe.yaml and step-2
    checkpoint (no weights); returns the checkpoint."""
    from dsharp.config import recipe_to_yaml
    from dsharp.methods.factory import with_method_defaults

    first = _recipe("rlhf_sharpening", tiny_sd_dir, run, "train.max_steps=2")
    checkpoint = _checkpoint_at_step_2(run)
    (run / "recipe.yaml").write_text(recipe_to_yaml(with_method_defaults(first)))
    return checkpoint


def test_a_resume_must_continue_the_run_it_resumes(tiny_sd_dir, tmp_path):
    """Another lr or seed would train a mix of two runs under the first one's recipe.yaml;
    a checkpoint past max_steps would train nothing. Both are refused before any model
    loads; a longer max_steps (or other checkpointing, eval, sample) is how one resumes."""
    from dsharp.engine import Trainer
    from dsharp.resume import check_resume

    run = tmp_path / "run"
    checkpoint = _saved_two_step_run(tiny_sd_dir, run)

    def resumed(*overrides: str):
        return _recipe("rlhf_sharpening", tiny_sd_dir, run, "train.resume=latest", *overrides)

    check_resume(resumed("train.max_steps=4", "train.checkpoint_every=1"), checkpoint)
    # a run saved before a field existed: that field, at its default, is no difference
    older = yaml.safe_load((run / "recipe.yaml").read_text())
    del older["train"]["weight_decay"], older["method"]["target"]
    (run / "recipe.yaml").write_text(yaml.safe_dump(older))
    check_resume(resumed("train.max_steps=4"), checkpoint)
    with pytest.raises(ValueError, match=r"^train\.lr: 0\.5 differs from .* the run being resumed"):
        Trainer(resumed("train.max_steps=4", "train.lr=0.5"), progress=False)
    with pytest.raises(ValueError, match=r"train\.max_steps: 1, but the checkpoint .* step 2"):
        Trainer(resumed("train.max_steps=1"), progress=False)


def test_a_resume_named_from_inside_the_runs_checkpoints_folder_is_still_checked(
    tiny_sd_dir, tmp_path, monkeypatch
):
    """``train.resume=step-000002`` from inside ``run/checkpoints``: its run folder was read
    as ``.`` (no recipe.yaml there), so the resume was taken for a branch and a changed
    train.lr trained on under the run's name."""
    from dsharp.resume import check_resume

    run = tmp_path / "run"
    _saved_two_step_run(tiny_sd_dir, run)
    monkeypatch.chdir(run / "checkpoints")
    for given in ("step-000002", "../checkpoints/step-000002"):
        changed = _recipe(
            "rlhf_sharpening",
            tiny_sd_dir,
            run,
            "train.max_steps=4",
            "train.lr=0.5",
            f"train.resume={given}",
        )
        with pytest.raises(ValueError, match=r"^train\.lr: 0\.5 differs from .* being resumed"):
            check_resume(changed, Path(given))


def _must_not_load(*args, **kwargs):
    raise AssertionError("the model was loaded before the recipe error")


def test_a_resume_its_run_s_recipe_cannot_vouch_for_is_refused(tiny_sd_dir, tmp_path):
    """A recipe.yaml torn or deleted must not let a resume continue under another recipe
    (and overwrite the evidence); a checkpoint kept without its run may still be branched."""
    from dsharp.resume import planned_resume

    run = tmp_path / "run"
    checkpoint = _checkpoint_at_step_2(run)
    resumed = _recipe("rlhf_sharpening", tiny_sd_dir, run, "train.resume=latest")
    (run / "recipe.yaml").write_text("model: [\n")
    with pytest.raises(ValueError, match=r"recipe\.yaml: cannot be read as a recipe, so this"):
        planned_resume(resumed)
    (run / "recipe.yaml").unlink()
    with pytest.raises(ValueError, match=r"holds checkpoints but no recipe\.yaml"):
        planned_resume(resumed)
    branch = _recipe("rlhf_sharpening", tiny_sd_dir, tmp_path / "b", f"train.resume={checkpoint}")
    assert planned_resume(branch) == checkpoint
    (run / "recipe.yaml").write_text("model: [\n")  # the advice holds: a branch may start
    assert planned_resume(branch) == checkpoint


def test_train_refuses_a_run_folder_s_problems_as_recipe_errors_before_loading(
    tiny_sd_dir, tmp_path, monkeypatch
):
    import dsharp.engine
    from dsharp.cli import app

    monkeypatch.setattr(dsharp.engine, "build_model", _must_not_load)
    recipe = RECIPES / "tiny" / "rlhf_sharpening.yaml"
    run = tmp_path / "run"
    _checkpoint_at_step_2(run)
    (run / "recipe.yaml").write_text("model: [\n")
    args = ["train", str(recipe), f"model.pretrained={tiny_sd_dir}", f"output_dir={run}"]
    for extra, expected in [
        ([], f"{recipe}: output_dir: {run} already holds checkpoints (step 2) of a run without"),
        (["train.resume=earliest"], f"{recipe}: train.resume: not a checkpoint folder: earliest"),
        (["train.resume=latest"], f"{recipe}: train.resume: {run / 'recipe.yaml'}: cannot be"),
    ]:
        result = CliRunner().invoke(app, [*args, *extra])
        assert result.exit_code == 2, result.output
        assert result.stderr.startswith(f"recipe error: {expected}"), result.stderr
    assert (run / "recipe.yaml").read_text() == "model: [\n"  # the evidence is kept

    # a run writing the folder now: the lock's refusal, not "another run's checkpoints"
    import fcntl

    with open(run / ".dsharp.lock", "a+", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    assert "another dsharp process is writing to it" in result.stderr

    # a checkpoints folder this user cannot list: one line at output_dir, not a traceback
    import dsharp.checkpoints

    def unreadable(run_dir):
        raise PermissionError(13, "Permission denied", str(run / "checkpoints"))

    monkeypatch.setattr(dsharp.checkpoints, "list_checkpoints", unreadable)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == (
        f"recipe error: {recipe}: output_dir: {run / 'checkpoints'}: Permission denied"
    )


def test_a_report_size_the_model_cannot_draw_is_refused_before_training(
    tmp_path, tiny_sd_dir, monkeypatch
):
    """Where the model's config could not be read before loading (a hub id not cached),
    the loaded model refuses the size, still before training."""
    import dsharp.preflight
    from dsharp.cli import app

    monkeypatch.setattr(dsharp.preflight, "image_size_factor", lambda model: 1)

    recipe = Path(__file__).resolve().parents[1] / "recipes" / "tiny" / "rlhf_sharpening.yaml"
    run = tmp_path / "run"
    args = ["train", str(recipe), f"model.pretrained={tiny_sd_dir}", f"output_dir={run}"]
    args += ["train.max_steps=1", "sample.height=100", "eval.bench=shapes", "eval.limit=1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    last = result.stderr.strip().splitlines()[-1]
    assert last == "error: height 100 must be a positive multiple of 8 for sd"
    assert not run.exists()


def test_a_resume_inside_a_round_of_samples_says_the_run_goes_on_differently():
    """DDPO and D3PO keep their round in memory only; a checkpoint between rounds resumes
    exactly, one inside a round samples a fresh one."""
    from types import SimpleNamespace

    from dsharp.engine import mid_round_note
    from dsharp.methods.ddpo import calls_per_round

    per_round = calls_per_round(4, 1.0, 2, 1)  # 4 timesteps, 2 per call, one epoch
    ddpo = SimpleNamespace(name="ddpo", calls_per_round=per_round)
    assert per_round == 2
    assert mid_round_note(ddpo, 2, 1) is None and mid_round_note(ddpo, 1, 2) is None
    note = mid_round_note(ddpo, 3, 1)
    assert note.startswith("step 3 falls inside one of ddpo's rounds of samples (2 training")
    assert mid_round_note(SimpleNamespace(name="rlhf_sharpening"), 3, 1) is None


def test_a_report_only_rerun_changes_no_record_and_a_fresh_run_ignores_a_failed_start(
    tiny_sd_dir, tmp_path
):
    """Writing a finished run's report resumes at max_steps and trains nothing: the run's
    environment gains no resume. A fresh run starts its metrics anew without reading what a
    start that failed left (a damaged file would otherwise stop it)."""
    run = tmp_path / "run"
    (run).mkdir()
    (run / "metrics.jsonl").write_text('{"step": 1}\n42\n{"step": 2}\n')  # damaged mid-file
    _train(_recipe("rlhf_sharpening", tiny_sd_dir, run, *SMALL, "train.max_steps=1"))
    assert [r["step"] for r in read_jsonl(run / "metrics.jsonl")] == [1]
    before = (run / "environment.json").read_text()
    again = _recipe("rlhf_sharpening", tiny_sd_dir, run, *SMALL, "train.max_steps=1")
    again.train.resume = "latest"
    assert _train(again).start_step == 1
    assert (run / "environment.json").read_text() == before


def test_a_resume_on_another_number_of_processes_says_the_run_goes_on_differently():
    from dsharp.engine import processes_note

    assert processes_note(2, 2, 4) is None
    assert processes_note(None, 2, 4) is None  # a checkpoint from before the count was kept
    assert processes_note(2, 1, 4) == (
        "the checkpoint's run trained on 2 processes, this one on 1 process: each step now "
        "averages the gradients of 1 batch (not 2) of train.batch_size 4, drawn otherwise, "
        "so the run differs from an uninterrupted one from here on (resume on 2 processes to "
        "continue it)"
    )
    # the batch size equal to the old count: "train.batch_size 2, not 2" read as a contradiction
    assert "of 1 batch (not 2) of train.batch_size 2, drawn" in processes_note(2, 1, 2)


@pytest.mark.slow
def test_checkpoints_keep_the_number_of_processes_and_a_resume_on_another_notes_it(
    tiny_sd_dir, brightness, tmp_path, capsys
):
    common = ("rewards.0.name=test_brightness", "train.checkpoint_every=1", *SMALL)
    run = tmp_path / "run"
    _train(_recipe("rlhf_sharpening", tiny_sd_dir, run, *common, "train.max_steps=1"))
    state_file = run / "checkpoints" / "step-000001" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    assert state["processes"] == 1
    # as a two-process launch would have written it
    state_file.write_text(json.dumps({**state, "processes": 2}))
    capsys.readouterr()
    resumed = ("train.max_steps=2", "train.resume=latest")
    _train(_recipe("rlhf_sharpening", tiny_sd_dir, run, *common, *resumed))
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert notes == [
        "note: the checkpoint's run trained on 2 processes, this one on 1 process: each step "
        "now averages the gradients of 1 batch (not 2) of train.batch_size 1, drawn "
        "otherwise, so the run differs from an uninterrupted one from here on (resume on 2 "
        "processes to continue it)"
    ]


@pytest.mark.slow
def test_a_steps_means_over_pairs_weigh_each_micro_batch_by_its_pairs(
    tiny_sd_dir, brightness, tmp_path
):
    """Of two micro-batches, one trains on two pairs and the other on one (its other
    prompt's trajectories tie): the step's winner_mse is the mean over its three pairs, not
    the mean of the two batches' means; its pairs are their sum."""
    from dsharp.engine import Trainer

    tied = "a blue circle"
    run = tmp_path / "run"
    recipe = _recipe(
        "rlhf_sharpening",
        tiny_sd_dir,
        run,
        "rewards.0.name=test_brightness",
        f"rewards.0.options.constant_prompt={tied}",
        "data.generator=none",
        f"data.prompts=[a red square, {tied}]",
        "method.n=2",
        "train.grad_accum=2",
        "train.max_steps=1",
        "train.seed=5",  # micro-batches of 2 and 1 untied prompts
    )
    trainer = Trainer(recipe, progress=False)
    raw: list[dict[str, float]] = []
    compute_loss = trainer.method.compute_loss

    def recorded(*args, **kwargs):
        loss, metrics = compute_loss(*args, **kwargs)
        raw.append(dict(metrics))
        return loss, metrics

    trainer.method.compute_loss = recorded
    trainer.run()
    row = read_jsonl(run / "metrics.jsonl")[0]
    pairs = [r["pairs"] for r in raw]
    assert pairs == [2, 1] and row["pairs"] == 3
    mse = [r["winner_mse"] for r in raw]
    assert row["winner_mse"] == pytest.approx((2 * mse[0] + mse[1]) / 3, rel=1e-6)
    assert row["winner_mse"] != pytest.approx((mse[0] + mse[1]) / 2, rel=1e-6)
