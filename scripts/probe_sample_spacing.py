"""How good are RLHF's few-step online samples with each timestep spacing?
(the README's quickstart section reports the numbers)

``rlhf_sharpening`` learns from its own online samples (``method.infer_steps`` DDIM steps with
``method.guidance``). The probe draws the same prompts and the same initial noise for each
spacing, samples with the recipe's model, steps and guidance, and prints the mean reward per
category of the shapes world. No training.

    python scripts/probe_sample_spacing.py [--recipe recipes/quickstart.yaml] [--prompts 20]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from dsharp.builders import build_model, build_reward, resolution
from dsharp.commands.errors import require_counts, run_script
from dsharp.config import load_recipe
from dsharp.methods.online import generate_latents
from dsharp.rewards.base import RewardImages
from dsharp.sampling import TIMESTEP_SPACINGS, inference_timesteps
from dsharp.shapes import grammar_prompt_sets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", default="recipes/quickstart.yaml")
    parser.add_argument("--prompts", type=int, default=20, help="random pool prompts per category")
    parser.add_argument("--samples", type=int, default=4, help="samples per prompt")
    parser.add_argument(
        "--spacings", nargs="+", choices=TIMESTEP_SPACINGS, default=["leading", "trailing"]
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    require_counts({"--prompts": args.prompts, "--samples": args.samples})

    recipe = load_recipe(args.recipe)
    model = build_model(recipe.model)
    reward = build_reward(recipe.rewards)
    height, width = resolution(model, None, None)
    steps, guidance = recipe.method.infer_steps, recipe.method.guidance
    rng = np.random.default_rng(args.seed)
    prompts: list[tuple[str, str]] = []
    for category, pool in grammar_prompt_sets().items():
        picks = rng.choice(len(pool), min(args.prompts, len(pool)), replace=False)
        prompts += [(category, pool[i]) for i in picks]
    texts = [p for _, p in prompts for _ in range(args.samples)]
    categories = [c for c, _ in prompts for _ in range(args.samples)]

    print(f"{len(prompts)} prompts x {args.samples} samples, {steps} steps, guidance {guidance}")
    for spacing in args.spacings:
        scores = []
        for start in range(0, len(texts), 32):
            chunk = texts[start : start + 32]
            with torch.no_grad():
                cond = model.encode_prompt(chunk, height, width)
                x0 = generate_latents(
                    model,
                    cond,
                    steps=steps,
                    guidance=guidance,
                    height=height,
                    width=width,
                    generator=torch.Generator().manual_seed(args.seed * 100_003 + start),
                    timestep_spacing=spacing,
                )
                got, _ = reward(RewardImages(model.decode(x0)), chunk, [{} for _ in chunk])
            scores.append(got.float())
        score = torch.cat(scores)
        first = int(inference_timesteps(model.scheduler, steps, spacing)[0])
        per_category = {
            c: round(score[[i for i, k in enumerate(categories) if k == c]].mean().item(), 3)
            for c in dict.fromkeys(categories)
        }
        print(f"  {spacing:8s} (first step t = {first}): {score.mean().item():.3f} {per_category}")


if __name__ == "__main__":
    run_script(main)
