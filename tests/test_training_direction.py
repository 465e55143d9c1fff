"""Each training method trains toward the better sample, not away from it.

A preference or policy-gradient loss evaluated where the policy equals the reference (log 2,
or -mean(A) at ratio 1) has the same value whichever way its arguments are ordered, and a
gradient that is merely non-zero cannot show a sign. So these tests watch what each method
hands its loss function: the policy's terms carry gradients and the reference's do not, the
preferred sample's terms come first, and the advantages are the round's own."""

from __future__ import annotations

import pytest
import torch

from dsharp.methods.base import Batch
from fake_rewards import brightness_registered
from spying import record_calls

PROMPTS = ["a red square", "a blue circle"]


class MeanPixelScore:
    """Differentiable reward: each image's mean pixel value, with the scores kept."""

    differentiable = True

    def __call__(self, images, prompts, metadata):
        return images.tensor.float().mean(dim=(1, 2, 3)), {}


def _batch() -> Batch:
    return Batch(prompts=PROMPTS, cond_prompts=PROMPTS)


def test_rlhf_sharpening_passes_the_best_trajectorys_policy_errors_first(sd_model, monkeypatch):
    from dsharp.config import RewardSpec
    from dsharp.methods import sharpening
    from dsharp.rewards.combine import CombinedReward

    losses = record_calls(monkeypatch, sharpening, "rlhf_sharpening_loss")
    selections = record_calls(monkeypatch, sharpening, "select_per_prompt")
    errors_calls = record_calls(monkeypatch, sharpening.RLHFSharpening, "_errors")
    batch = Batch(prompts=PROMPTS, cond_prompts=PROMPTS, metadata=[{}, {}])
    with brightness_registered():
        reward = CombinedReward([RewardSpec(name="test_brightness", on_error="raise", options={})])
        method = sharpening.RLHFSharpening(
            sd_model, reward, 64, 64, n=3, m=2, stride=250, infer_steps=2,
            timestep_min=500, timestep_max=1000,
        )  # fmt: skip
        method.compute_loss(batch, sd_model.unet, torch.Generator().manual_seed(1))
    policy_best, policy_worst, ref_best, ref_worst = losses[-1].args[:4]
    assert policy_best.requires_grad and policy_worst.requires_grad
    assert not ref_best.requires_grad and not ref_worst.requires_grad
    # _errors(self, rollout, trajectories, cond, unet): the policy's call passes a unet
    (policy,) = [c for c in errors_calls if c.args[4] is not None]
    by_trajectory = dict(zip(policy.args[2].tolist(), policy.result.tolist(), strict=True))
    best_index, worst_index, _ = selections[-1].result
    best = [by_trajectory[i] for i in best_index.tolist()]
    worst = [by_trajectory[i] for i in worst_index.tolist()]
    assert policy_best.detach().tolist() == pytest.approx(best)
    assert policy_worst.detach().tolist() == pytest.approx(worst)


def test_diffusion_dpo_puts_the_preferred_sample_first_with_one_shared_noise(sd_model, monkeypatch):
    from dsharp.methods import dpo

    losses = record_calls(monkeypatch, dpo, "diffusion_dpo_loss")
    noisings = record_calls(monkeypatch, dpo, "add_noise")  # add_noise(tables, x0, eps, t)
    method = dpo.DiffusionDPO(sd_model, MeanPixelScore(), 64, 64, pairs="online", infer_steps=2)
    method.compute_loss(_batch(), sd_model.unet, torch.Generator().manual_seed(6))
    policy_w, policy_l, ref_w, ref_l = losses[-1].args[:4]
    x0, eps = noisings[-1].args[1:3]
    assert policy_w.requires_grad and policy_l.requires_grad
    assert not ref_w.requires_grad and not ref_l.requires_grad
    with torch.no_grad():  # the first half of the trained samples are the preferred ones
        scores = sd_model.decode(x0).float().mean(dim=(1, 2, 3))
    assert (scores[:2] > scores[2:]).all()
    # winner and loser of a pair are noised with the same noise (and timestep)
    torch.testing.assert_close(eps[:2], eps[2:], rtol=0, atol=0)


def test_d3po_passes_the_winners_log_probs_first(sd_model, monkeypatch):
    from dsharp.methods import d3po

    losses = record_calls(monkeypatch, d3po, "d3po_loss")
    log_prob_calls = record_calls(monkeypatch, d3po, "transition_log_probs")
    method = d3po.D3PO(sd_model, MeanPixelScore(), 64, 64, infer_steps=3)
    method.compute_loss(_batch(), sd_model.unet, torch.Generator().manual_seed(5))
    winners, _losers, _ = method._pairs
    # transition_log_probs(model, tables, round, rows, steps, unet=...): the pass with grads
    (policy,) = [c for c in log_prob_calls if c.kwargs.get("unet") is not None]
    winner_rows = torch.isin(policy.args[3], winners.cpu())
    log_p_w, log_p_l = losses[-1].args[:2]
    torch.testing.assert_close(log_p_w.detach(), policy.result.detach()[winner_rows])
    torch.testing.assert_close(log_p_l.detach(), policy.result.detach()[~winner_rows])


@pytest.mark.parametrize("variant", ["is", "sf"])
def test_ddpo_trains_the_current_log_probs_on_the_rounds_advantages(sd_model, monkeypatch, variant):
    from dsharp.methods import ddpo

    clipped = record_calls(monkeypatch, ddpo, "ppo_clip_loss")  # (log_probs, old, adv, c)
    reinforced = record_calls(monkeypatch, ddpo, "reinforce_loss")  # (log_probs, adv)
    epochs = 2 if variant == "is" else 1
    method = ddpo.DDPO(
        sd_model, MeanPixelScore(), 64, 64, n=2, infer_steps=3, variant=variant, inner_epochs=epochs
    )
    method.compute_loss(_batch(), sd_model.unet, torch.Generator().manual_seed(1))
    (call,) = clipped if variant == "is" else reinforced
    log_probs, adv = call.args[0], call.args[2 if variant == "is" else 1]
    assert log_probs.requires_grad
    if variant == "is":  # the ratio is new over old, and old is the sampling policy's
        assert not call.args[1].requires_grad
    advantages = torch.nan_to_num(method._advantages, nan=0.0)
    torch.testing.assert_close(adv.reshape(-1), advantages)


def test_iterpo_scores_the_predicted_clean_sample_of_its_gradient_step(sd_model, monkeypatch):
    from dsharp.methods import iterpo

    steps = record_calls(monkeypatch, iterpo, "ddim_step")
    decoded = record_calls(monkeypatch, sd_model, "decode")
    method = iterpo.IterPO(sd_model, MeanPixelScore(), 64, 64, infer_steps=4, loss_scale=1e-3)
    method.compute_loss(_batch(), sd_model.unet, torch.Generator().manual_seed(2))
    (decode,) = decoded
    scored = decode.args[0]
    assert scored is steps[-1].result.pred_x0 and scored.requires_grad  # ReFL: x0_hat, grads
