"""At which timesteps can a reward see shapes, and where does dsharp-mini decide them?
(docs/dsharp-mini-notes.md, "Where shapes are decided", reports both tables)

Trajectory-level methods score the model's predicted clean sample at intermediate steps and
train where their trajectories start, so both answers bound a recipe's timestep range. The
probe noises exact renders of single-object prompts to a timestep t and

1. scores the model's one-step predicted clean sample there with the exact verifier (is the
   reward readable at t?), and
2. denoises them from t with the evaluation sampler (DDIM 25 steps, guidance 5) and scores
   the result (does the model keep the rendered shape, or redraw it?), for colour-shape
   pairs seen in pretraining and for the held-out pairs of the val split.

    python scripts/probe_timesteps.py [--model dsharp-mini] [--per-prompt 12]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from dsharp.commands.errors import require_counts, run_script
from dsharp.models import load_model
from dsharp.models.base import DiffusionModel
from dsharp.sampling import (
    DDIMTables,
    add_noise,
    ddim_step,
    guided_noise,
    inference_timesteps,
    pred_x0_from_eps,
    previous_timesteps,
)
from dsharp.shapes.prompts import HELD_OUT_PAIRS
from dsharp.shapes.verifier import verify_batch
from dsharp.shapes.world import COLOURS, SHAPES, render, sample_scene

TIMESTEPS = (200, 400, 600, 700, 800, 900)
EVAL_STEPS, EVAL_GUIDANCE = 25, 5.0


def single_prompts(held_out: bool) -> list[str]:
    """``a <colour> <shape>`` for every pair that is (or is not) held out of pretraining."""
    return [
        f"a {colour} {shape}"
        for colour in COLOURS
        for shape in SHAPES
        if ((colour, shape) in HELD_OUT_PAIRS) == held_out
    ]


def renders(prompts: list[str], rng: np.random.Generator) -> torch.Tensor:
    images = np.stack([render(sample_scene(p, rng), 32) for p in prompts])
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1


def score(x: torch.Tensor, prompts: list[str]) -> float:
    images = ((x.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).numpy()
    return float(verify_batch(images, prompts)[0].mean())


@torch.no_grad()
def predicted_clean_score(
    model: DiffusionModel, prompts: list[str], x0: torch.Tensor, t: int, guidance: float
) -> float:
    tables = DDIMTables.from_scheduler(model.scheduler)
    steps = torch.full((len(prompts),), t)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    x_t = add_noise(tables, x0, noise, steps)
    cond = model.encode_prompt(prompts, 32, 32)
    uncond = model.encode_negative(len(prompts), 32, 32)
    eps = guided_noise(model, x_t, steps, cond, uncond, guidance)
    return score(pred_x0_from_eps(tables, x_t, eps, steps), prompts)


@torch.no_grad()
def denoised_score(model: DiffusionModel, prompts: list[str], x0: torch.Tensor, t: int) -> float:
    """Noise to the last evaluation timestep below ``t``, then sample as evaluation does."""
    tables = DDIMTables.from_scheduler(model.scheduler)
    full = inference_timesteps(model.scheduler, EVAL_STEPS)
    kept = full < t
    schedule, nexts = full[kept], previous_timesteps(full, tables.num_train_timesteps)[kept]
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    x = add_noise(tables, x0, noise, torch.full((len(prompts),), int(schedule[0])))
    cond = model.encode_prompt(prompts, 32, 32)
    uncond = model.encode_negative(len(prompts), 32, 32)
    for step, step_next in zip(schedule, nexts, strict=True):
        t_vec = step.expand(len(prompts))
        eps = guided_noise(model, x, t_vec, cond, uncond, EVAL_GUIDANCE)
        t_prev = step_next.expand(len(prompts))
        x = ddim_step(tables, x, eps, t_vec, t_prev).prev_sample
    return score(x, prompts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="dsharp-mini", help="model name or folder")
    parser.add_argument("--per-prompt", type=int, default=12, help="renders per prompt")
    args = parser.parse_args()
    require_counts({"--per-prompt": args.per_prompt})
    model = load_model(args.model)
    model.unet.eval()
    rng = np.random.default_rng(0)
    seen = [p for p in single_prompts(held_out=False) for _ in range(args.per_prompt)]
    held = [p for p in single_prompts(held_out=True) for _ in range(args.per_prompt)]
    seen_x0, held_x0 = renders(seen, rng), renders(held, rng)
    print(f"{len(seen)} renders of seen pairs, {len(held)} of held-out pairs")
    print("\npredicted clean sample of renders noised to t (seen pairs), exact shapes score")
    print("| t | no guidance | guidance 5 |\n|---|---|---|")
    for t in TIMESTEPS:
        plain = predicted_clean_score(model, seen, seen_x0, t, 1.0)
        guided = predicted_clean_score(model, seen, seen_x0, t, EVAL_GUIDANCE)
        print(f"| {t} | {plain:.3f} | {guided:.3f} |", flush=True)
    print("\nrenders noised to t, then sampled (DDIM 25 steps, guidance 5), exact shapes score")
    print("| t | seen pairs | held-out pairs |\n|---|---|---|")
    for t in (*TIMESTEPS, 1000):
        print(
            f"| {t} | {denoised_score(model, seen, seen_x0, t):.3f} "
            f"| {denoised_score(model, held, held_x0, t):.3f} |",
            flush=True,
        )


if __name__ == "__main__":
    run_script(main)
