"""Does RLHF Diffusion-Sharpening's trajectory ranking agree with its samples' own rewards?
(the README's quickstart section reports the counts)

``rlhf_sharpening`` regresses every trajectory toward the online sample it was noised from,
but ranks trajectories by the rewards of their steps' predicted clean images, which at the
quickstart's timesteps are blurry. The probe runs the quickstart recipe's sampling, rollout
and scoring (no training) on random prompts of its pool and counts, over the best/worst
pairs the method would train on, how often the pair's samples themselves are ranked the same
way by the reward, the other way, or tie.

    python scripts/probe_sample_ranking.py [--recipe recipes/quickstart.yaml] [--prompts 64]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from dsharp.builders import build_model, build_reward, resolution
from dsharp.commands.errors import require_counts, run_script
from dsharp.config import load_recipe
from dsharp.methods.base import Batch
from dsharp.methods.factory import build_method
from dsharp.methods.losses import select_per_prompt
from dsharp.methods.online import generate_latents
from dsharp.shapes import grammar_prompt_sets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", default="recipes/quickstart.yaml")
    parser.add_argument("--prompts", type=int, default=64, help="random prompts of the pool")
    parser.add_argument("--batch", type=int, default=16, help="prompts per method call")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    require_counts({"--prompts": args.prompts, "--batch": args.batch})

    recipe = load_recipe(args.recipe)
    model = build_model(recipe.model)
    reward = build_reward(recipe.rewards)
    height, width = resolution(model, None, None)
    method = build_method(recipe.method, model, reward, height, width)
    n = method.n
    pool = [p for group in grammar_prompt_sets().values() for p in group]
    picks = np.random.default_rng(args.seed).choice(len(pool), args.prompts, replace=False)
    prompts = [pool[i] for i in picks]
    generator = torch.Generator().manual_seed(args.seed)

    agree = contradict = tie = 0
    sample_scores, path_scores = [], []
    for start in range(0, len(prompts), args.batch):
        chunk = prompts[start : start + args.batch]
        batch = Batch(prompts=chunk, cond_prompts=chunk, metadata=[{} for _ in chunk])
        with torch.no_grad():
            cond = model.encode_prompt(chunk, height, width)
            x0 = generate_latents(
                model,
                cond.repeat_interleave(n),
                steps=method.infer_steps,
                guidance=method.guidance,
                height=height,
                width=width,
                generator=generator,
                timestep_spacing=method.sample_spacing,
            )
            own = method._sample_rewards(batch, x0)
            _, _, returns, _ = method._rollout_and_score(batch, x0, cond, generator)
        best, worst, _ = select_per_prompt(returns, n)
        trained = returns[best] > returns[worst]  # the pairs the method trains on
        agree += int((trained & (own[best] > own[worst])).sum())
        contradict += int((trained & (own[best] < own[worst])).sum())
        tie += int((trained & (own[best] == own[worst])).sum())
        sample_scores.append(own)
        path_scores.append(returns)
        print(f"{start + len(chunk)}/{len(prompts)} prompts", flush=True)

    pairs = agree + contradict + tie
    own_all, path_all = torch.cat(sample_scores), torch.cat(path_scores)
    corr = np.corrcoef(own_all.numpy(), path_all.numpy())[0, 1]
    print(f"recipe {args.recipe}: {len(prompts)} prompts x {n} samples, {pairs} trained pairs")
    print(f"  the samples' rewards agree with the path ranking: {agree}")
    print(f"  rank them the other way:                          {contradict}")
    print(f"  tie:                                              {tie}")
    print(f"  correlation of sample reward and path reward: {corr:.2f}")


if __name__ == "__main__":
    run_script(main)
