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

PROMPTS = ["a red square", "a blue circle"]


class MeanPixelScore:
    """Differentiable reward: each image's mean pixel value, with the scores kept."""

    differentiable = True

    def __call__(self, images, prompts, metadata):
        return images.tensor.float().mean(dim=(1, 2, 3)), {}


@pytest.fixture(scope="module")
def sd_model(tiny_sd_dir):
    from dsharp.models import load_model

    model = load_model(str(tiny_sd_dir))
    model.prepare_reference()
    return model


def _batch() -> Batch:
    return Batch(prompts=PROMPTS, cond_prompts=PROMPTS)


def _spy(monkeypatch, module, name: str, seen: dict, keep):
    """Replace ``module.name`` by a wrapper that records ``keep(args, result)`` in ``seen``."""
    real = getattr(module, name)

    def wrapper(*args, **kwargs):
        result = real(*args, **kwargs)
        keep(seen, args, kwargs, result)
        return result

    monkeypatch.setattr(module, name, wrapper)


def test_rlhf_sharpening_passes_the_best_trajectorys_policy_errors_first(sd_model, monkeypatch):
    from dsharp.config import RewardSpec
    from dsharp.methods import sharpening
    from dsharp.rewards.combine import CombinedReward

    seen: dict = {"errors": []}

    def keep_errors(seen, args, kwargs, out):
        _self, _rollout, trajectories, _cond, unet = args
        seen["errors"].append((trajectories.clone(), out.detach().clone(), unet))

    _spy(
        monkeypatch,
        sharpening,
        "rlhf_sharpening_loss",
        seen,
        lambda s, a, k, r: s.update(loss_args=a[:4]),
    )
    _spy(
        monkeypatch,
        sharpening,
        "select_per_prompt",
        seen,
        lambda s, a, k, r: s.update(best=r[0], worst=r[1]),
    )
    _spy(monkeypatch, sharpening.RLHFSharpening, "_errors", seen, keep_errors)
    batch = Batch(prompts=PROMPTS, cond_prompts=PROMPTS, metadata=[{}, {}])
    with brightness_registered():
        reward = CombinedReward([RewardSpec(name="test_brightness", on_error="raise", options={})])
        method = sharpening.RLHFSharpening(
            sd_model, reward, 64, 64, n=3, m=2, stride=250, infer_steps=2,
            timestep_min=500, timestep_max=1000,
        )  # fmt: skip
        method.compute_loss(batch, sd_model.unet, torch.Generator().manual_seed(1))
    policy_best, policy_worst, ref_best, ref_worst = seen["loss_args"]
    assert policy_best.requires_grad and policy_worst.requires_grad
    assert not ref_best.requires_grad and not ref_worst.requires_grad
    trajectories, errors, _ = next(e for e in seen["errors"] if e[2] is not None)
    by_trajectory = dict(zip(trajectories.tolist(), errors.tolist(), strict=True))
    best = [by_trajectory[i] for i in seen["best"].tolist()]
    worst = [by_trajectory[i] for i in seen["worst"].tolist()]
    assert policy_best.detach().tolist() == pytest.approx(best)
    assert policy_worst.detach().tolist() == pytest.approx(worst)


def test_diffusion_dpo_puts_the_preferred_sample_first_with_one_shared_noise(sd_model, monkeypatch):
    from dsharp.methods import dpo

    seen: dict = {}
    _spy(monkeypatch, dpo, "diffusion_dpo_loss", seen, lambda s, a, k, r: s.update(args=a[:4]))
    _spy(monkeypatch, dpo, "add_noise", seen, lambda s, a, k, r: s.update(x0=a[1], eps=a[2]))
    method = dpo.DiffusionDPO(sd_model, MeanPixelScore(), 64, 64, pairs="online", infer_steps=2)
    method.compute_loss(_batch(), sd_model.unet, torch.Generator().manual_seed(6))
    policy_w, policy_l, ref_w, ref_l = seen["args"]
    assert policy_w.requires_grad and policy_l.requires_grad
    assert not ref_w.requires_grad and not ref_l.requires_grad
    with torch.no_grad():  # the first half of the trained samples are the preferred ones
        scores = sd_model.decode(seen["x0"]).float().mean(dim=(1, 2, 3))
    assert (scores[:2] > scores[2:]).all()
    # winner and loser of a pair are noised with the same noise (and timestep)
    torch.testing.assert_close(seen["eps"][:2], seen["eps"][2:], rtol=0, atol=0)


def test_d3po_passes_the_winners_log_probs_first(sd_model, monkeypatch):
    from dsharp.methods import d3po

    seen: dict = {}

    def keep_log_probs(seen, args, kwargs, out):
        if kwargs.get("unet") is not None:  # the pass with gradients
            seen["rows"], seen["log_probs"] = args[3].clone(), out.detach().clone()

    _spy(monkeypatch, d3po, "d3po_loss", seen, lambda s, a, k, r: s.update(args=a[:2]))
    _spy(monkeypatch, d3po, "transition_log_probs", seen, keep_log_probs)
    method = d3po.D3PO(sd_model, MeanPixelScore(), 64, 64, infer_steps=3)
    method.compute_loss(_batch(), sd_model.unet, torch.Generator().manual_seed(5))
    winners, _losers, _ = method._pairs
    winner_rows = torch.isin(seen["rows"], winners.cpu())
    log_p_w, log_p_l = seen["args"]
    torch.testing.assert_close(log_p_w.detach(), seen["log_probs"][winner_rows])
    torch.testing.assert_close(log_p_l.detach(), seen["log_probs"][~winner_rows])


@pytest.mark.parametrize("variant", ["is", "sf"])
def test_ddpo_trains_the_current_log_probs_on_the_rounds_advantages(sd_model, monkeypatch, variant):
    from dsharp.methods import ddpo

    seen: dict = {}
    _spy(
        monkeypatch,
        ddpo,
        "ppo_clip_loss",
        seen,
        lambda s, a, k, r: s.update(log_probs=a[0], old=a[1], adv=a[2]),
    )
    _spy(
        monkeypatch,
        ddpo,
        "reinforce_loss",
        seen,
        lambda s, a, k, r: s.update(log_probs=a[0], adv=a[1]),
    )
    epochs = 2 if variant == "is" else 1
    method = ddpo.DDPO(
        sd_model, MeanPixelScore(), 64, 64, n=2, infer_steps=3, variant=variant, inner_epochs=epochs
    )
    method.compute_loss(_batch(), sd_model.unet, torch.Generator().manual_seed(1))
    assert seen["log_probs"].requires_grad
    if variant == "is":  # the ratio is new over old, and old is the sampling policy's
        assert not seen["old"].requires_grad
    advantages = torch.nan_to_num(method._advantages, nan=0.0)
    torch.testing.assert_close(seen["adv"].reshape(-1), advantages)


def test_iterpo_scores_the_predicted_clean_sample_of_its_gradient_step(sd_model, monkeypatch):
    from dsharp.methods import iterpo

    steps, decoded = [], []
    _spy(monkeypatch, iterpo, "ddim_step", {}, lambda s, a, k, r: steps.append(r))
    real_decode = sd_model.decode

    def spy_decode(latents):
        decoded.append(latents)
        return real_decode(latents)

    monkeypatch.setattr(sd_model, "decode", spy_decode)
    method = iterpo.IterPO(sd_model, MeanPixelScore(), 64, 64, infer_steps=4, loss_scale=1e-3)
    method.compute_loss(_batch(), sd_model.unet, torch.Generator().manual_seed(2))
    (scored,) = decoded
    assert scored is steps[-1].pred_x0 and scored.requires_grad  # ReFL: x0_hat, with grad
