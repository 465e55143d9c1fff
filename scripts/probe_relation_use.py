"""Does a shapes-world model read the relation word of a prompt at all?
(the notes' "Relations" trials report its tables)

Sampled images tell whether relations come out right; this probe asks the cheaper question
below it. It renders exact scenes of spatial train prompts, noises them to a timestep t and
compares the model's denoising loss (in its own prediction space, as pretraining weighs it)
under three captions: the true one, the same with its relation reversed ("to the left of"
becomes "to the right of", "above" becomes "below"), and the empty one. A model that ignores
relation words scores the reversed caption exactly as the true one; one that uses them loses
more with the reversed caption, most at the noisy timesteps where layout is decided.

    python scripts/probe_relation_use.py [--model dsharp-mini | --checkpoint RUN] [--prompts 96]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from dsharp.commands.errors import require_counts, run_script
from dsharp.models import load_model
from dsharp.models.base import DiffusionModel
from dsharp.sampling import DDIMTables, add_noise
from dsharp.shapes.grammar import OPPOSITE, Constraints, Relation, parse
from dsharp.shapes.prompts import prompt_sets
from dsharp.shapes.world import render, sample_scene

TIMESTEPS = (300, 500, 700, 800, 900, 950)


def reversed_relation(prompt: str) -> str:
    """``prompt`` with its first relation turned into the opposite one."""
    c = parse(prompt)
    first = c.relations[0]
    flipped = Relation(first.left, first.right, OPPOSITE[first.kind])
    return Constraints(c.groups, (flipped, *c.relations[1:])).to_prompt()


@torch.no_grad()
def losses(
    model: DiffusionModel, x0: torch.Tensor, captions: dict[str, list[str]], t: int
) -> dict[str, torch.Tensor]:
    """Per-image denoising loss at ``t`` under each caption list (same noise for all)."""
    tables = DDIMTables.from_scheduler(model.scheduler)
    steps = torch.full((len(x0),), t)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(t))
    x_t = add_noise(tables, x0, noise, steps)
    target = model.native_target(x0, noise, steps)
    side = x0.shape[-1]
    out = {}
    for name, prompts in captions.items():
        pred = model.predict_native(x_t, steps, model.encode_prompt(prompts, side, side))
        out[name] = ((pred - target) ** 2).mean(dim=(1, 2, 3))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", default="dsharp-mini", help="model name or folder")
    source.add_argument("--checkpoint", type=Path, help="a dsharp run folder or checkpoint")
    parser.add_argument("--prompts", type=int, default=96, help="spatial train prompts used")
    args = parser.parse_args()
    require_counts({"--prompts": args.prompts})
    if args.checkpoint is not None:
        from dsharp.builders import load_run_model

        model, _ = load_run_model(args.checkpoint)
    else:
        model = load_model(args.model)
    model.unet.eval()
    prompts = prompt_sets("train")["spatial"][: args.prompts]
    rng = np.random.default_rng(0)
    side = model.default_resolution
    images = np.stack([render(sample_scene(p, rng), side) for p in prompts])
    x0 = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    captions = {
        "true": prompts,
        "reversed": [reversed_relation(p) for p in prompts],
        "empty": [""] * len(prompts),
    }
    print(f"{len(prompts)} renders of spatial train prompts; denoising loss per caption")
    print(
        "| t | true | reversed | empty | reversed - true (95% interval) "
        "| images where true < reversed |"
    )
    print("|---|---|---|---|---|---|")
    for t in TIMESTEPS:
        out = losses(model, x0, captions, t)
        gap = out["reversed"] - out["true"]
        half = 1.96 * float(gap.std()) / len(gap) ** 0.5
        print(
            f"| {t} | {out['true'].mean():.4f} | {out['reversed'].mean():.4f} "
            f"| {out['empty'].mean():.4f} | {gap.mean():+.5f} +- {half:.5f} "
            f"| {(gap > 0).float().mean():.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    run_script(main)
