"""How much does each step of a Sharpening trajectory weigh in its error, per target?
(docs/methods.md, "The shared rollout", reports the numbers)

Renders clean shapes scenes, noises them to a training timestep ``t``, rolls out ``m`` DDIM
steps with dsharp-mini as ``sft_sharpening`` does, and prints each step's epsilon-space MSE
against the ``consistent`` target (the noise the state implies given the clean image) and the
``original`` one (the first step's noise). No training.

    python scripts/probe_target_steps.py [--m 3] [--stride 40] [--t 85 100 400 950]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from dsharp.commands.errors import require_counts, run_script
from dsharp.methods.losses import per_step_mse
from dsharp.methods.trajectory import roll_out
from dsharp.models.loading import load_model
from dsharp.sampling import DDIMTables, eps_from_x0
from dsharp.shapes.world import render, sample_scene

PROMPTS = ["a red circle", "a blue square", "a green triangle", "two yellow circles"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--m", type=int, default=3, help="trajectory steps")
    parser.add_argument("--stride", type=int, default=40, help="timesteps per step")
    parser.add_argument("--t", type=int, nargs="+", default=[85, 100, 400, 950])
    parser.add_argument("--images", type=int, default=16)
    args = parser.parse_args()
    require_counts({"--m": args.m, "--stride": args.stride, "--images": args.images})

    torch.manual_seed(0)
    model = load_model("dsharp-mini")
    tables = DDIMTables.from_scheduler(model.scheduler)
    rng = np.random.default_rng(0)
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(args.images)]
    pixels = [torch.from_numpy(render(sample_scene(p, rng))) for p in prompts]
    x0 = model.encode_images(torch.stack([p.permute(2, 0, 1).float() / 255 for p in pixels]))
    cond = model.encode_prompt(prompts, 32, 32)
    generator = torch.Generator().manual_seed(1)
    print(f"{'t':>4} {'step':>4} {'t_j':>4} {'consistent':>11} {'original':>9}")
    for t0 in args.t:
        t = torch.full((len(prompts),), t0)
        noise = torch.randn(x0.shape, generator=generator)
        with torch.no_grad():
            rollout = roll_out(model, tables, x0, noise, t, cond, m=args.m, stride=args.stride)
            for j in range(args.m):
                state, t_j = rollout.states[j], rollout.timesteps[j]
                eps_hat = model.predict_noise(state, t_j, cond)
                consistent = per_step_mse(eps_hat, eps_from_x0(tables, state, x0, t_j)).mean()
                original = per_step_mse(eps_hat, noise).mean()
                print(f"{t0:4d} {j:4d} {int(t_j[0]):4d} {consistent:11.4f} {original:9.4f}")


if __name__ == "__main__":
    run_script(main)
