"""The look-ahead's arithmetic, checked against a perfect denoiser: with a model that
predicts exactly the noise leading back to ``x0``, deterministic DDIM stays on the line
``sqrt(abar) x0 + sqrt(1 - abar) noise``, so every state, label, scored prediction and
regression target is known in closed form."""

from __future__ import annotations

import torch
from diffusers import DDIMScheduler

from dsharp.methods.trajectory import roll_out
from dsharp.sampling import DDIMTables, eps_from_x0


class PerfectDenoiser:
    """Predicts the noise that takes each state back to one fixed clean sample ``x0``."""

    def __init__(self, tables: DDIMTables, x0: torch.Tensor):
        self.tables, self.x0 = tables, x0

    def predict_noise(self, x, t, cond, unet=None):
        return eps_from_x0(self.tables, x, self.x0, t)


def test_a_rollout_with_a_perfect_denoiser_keeps_x0_and_the_noise_at_every_step():
    tables = DDIMTables.from_scheduler(DDIMScheduler(clip_sample=False))
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(4, 4, 8, 8, generator=gen)
    noise = torch.randn(4, 4, 8, 8, generator=gen)
    t = torch.tensor([999, 760, 520, 300])
    stride, m = 100, 3
    rollout = roll_out(PerfectDenoiser(tables, x0), tables, x0, noise, t, None, m, stride)
    assert bool(rollout.valid.all())
    for j in range(m):
        # step j is labelled t - j * stride ...
        assert rollout.timesteps[j].tolist() == (t - j * stride).tolist()
        # ... and its state is x0 noised to that timestep (a wrong stride drifts off it)
        abar = tables.abar(rollout.timesteps[j]).view(-1, 1, 1, 1)
        expected = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
        torch.testing.assert_close(rollout.states[j], expected, atol=1e-4, rtol=1e-4)
        # what is decoded and scored is the predicted clean sample, not the next state
        torch.testing.assert_close(rollout.pred_x0[j], x0, atol=1e-3, rtol=1e-3)
        # the consistent target of every step is the drawn noise (at the step's own t)
        steps, trajectories = torch.full((4,), j), torch.arange(4)
        targets = rollout.targets_at("consistent", tables, steps, trajectories)
        torch.testing.assert_close(targets, noise, atol=1e-3, rtol=1e-3)
