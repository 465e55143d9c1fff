"""Does fine-tuning dsharp-mini on its own samples help or hurt, and by how much does
reward selection change that? (docs/dsharp-mini-notes.md, "Why RLHF on its own samples
fails here", reports the table)

Every RLHF method learns from the model's own samples. This probe separates the two parts
of that: imitating its own images, and preferring the reward's best of them. It draws a
pool of images for grammar prompts (own samples at a given number of steps and guidance,
or exact renders of the shapes world), fine-tunes a fresh copy of the model on them with
the plain denoising loss, and scores the result on a prompt file with the exact verifier.

    python scripts/probe_self_training.py --prompts heldout.txt --source samples --select best
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from dsharp.commands.errors import require_counts, run_script
from dsharp.generate import SampleSettings, generate
from dsharp.methods.base import Batch
from dsharp.methods.finetune import FineTune
from dsharp.methods.online import generate_latents
from dsharp.models import load_model
from dsharp.models.base import DiffusionModel
from dsharp.models.loading import resolve_pretrained
from dsharp.rewards.base import RewardImages
from dsharp.shapes.prompts import grammar_prompt_sets
from dsharp.shapes.reward import ShapesReward
from dsharp.shapes.world import render, sample_scene

PER_PROMPT = 4  # images per training prompt; `best` keeps the highest-scoring one


def trailing_copy(folder: Path) -> Path:
    """dsharp-mini with `trailing` DDIM spacing: few-step samples start from pure noise."""
    shutil.copytree(resolve_pretrained("dsharp-mini"), folder)
    config = folder / "scheduler" / "scheduler_config.json"
    values = json.loads(config.read_text())
    values["timestep_spacing"] = "trailing"
    config.write_text(json.dumps(values, indent=2))
    return folder


def training_prompts(count: int, seed: int) -> list[str]:
    pool = [p for group in grammar_prompt_sets().values() for p in group]
    picks = np.random.default_rng(seed).choice(len(pool), count, replace=False)
    return [pool[i] for i in picks for _ in range(PER_PROMPT)]


@torch.no_grad()
def own_samples(model: DiffusionModel, prompts: list[str], steps: int, guidance: float):
    generator = torch.Generator().manual_seed(0)
    chunks = []
    for i in range(0, len(prompts), 50):
        cond = model.encode_prompt(prompts[i : i + 50], 32, 32)
        chunks.append(
            generate_latents(
                model,
                cond,
                steps=steps,
                guidance=guidance,
                height=32,
                width=32,
                generator=generator,
            )
        )
    return torch.cat(chunks)


def renders(prompts: list[str]) -> torch.Tensor:
    rng = np.random.default_rng(0)
    images = np.stack([render(sample_scene(p, rng), 32) for p in prompts])
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1


def fine_tune(
    model: DiffusionModel, prompts: list[str], x0: torch.Tensor, args: argparse.Namespace
) -> None:
    """dsharp's `finetune` loss (the plain denoising loss) on random batches of the pool."""
    method = FineTune(model, None, 32, 32, timestep_min=args.timestep_min)
    optimizer = torch.optim.AdamW(model.unet.parameters(), lr=args.lr, weight_decay=0)
    generator = torch.Generator().manual_seed(1)
    model.unet.train()
    for _ in range(args.steps):
        idx = torch.randint(len(prompts), (args.batch_size,), generator=generator)
        empty = torch.rand(args.batch_size, generator=generator) < args.empty_prompt_prob
        batch = Batch(
            prompts=[prompts[i] for i in idx.tolist()],
            cond_prompts=[
                "" if e else prompts[i] for i, e in zip(idx.tolist(), empty.tolist(), strict=True)
            ],
            images=model.decode(x0[idx]),
        )
        loss, _ = method.compute_loss(batch, model.unet, generator)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.unet.parameters(), 1.0)
        optimizer.step()
    model.unet.eval()


def score(model: DiffusionModel, prompts: list[str], reward: ShapesReward) -> float:
    settings = SampleSettings("default", 25, 5.0, 0.0)
    images = generate(model, prompts, [0] * len(prompts), settings, batch_size=50).images
    scores, _ = reward(RewardImages(images), prompts, [{}] * len(prompts))
    return float(scores.mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=Path, required=True, help="evaluation prompt file")
    parser.add_argument("--source", choices=("samples", "renders", "none"), default="samples")
    parser.add_argument(
        "--select",
        choices=("all", "best", "strict"),
        default="all",
        help="all samples, the reward's best of 4 per prompt, or those meeting every constraint",
    )
    parser.add_argument(
        "--max-images", type=int, help="keep this many (random) training images after selection"
    )
    parser.add_argument("--sample-steps", type=int, default=10)
    parser.add_argument("--sample-guidance", type=float, default=1.0)
    parser.add_argument("--train-prompts", type=int, default=200)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-5)
    parser.add_argument("--empty-prompt-prob", type=float, default=0.1)
    parser.add_argument(
        "--timestep-min",
        type=int,
        default=0,
        help="train only at timesteps >= this (where layout is decided, not pixel detail)",
    )
    args = parser.parse_args()
    counts = ("max_images", "sample_steps", "train_prompts", "steps", "batch_size")
    require_counts({"--" + name.replace("_", "-"): getattr(args, name) for name in counts})
    if not args.prompts.is_file():
        raise FileNotFoundError(f"--prompts {args.prompts}: no such file")
    eval_prompts = [line.strip() for line in args.prompts.read_text().splitlines() if line.strip()]
    torch.manual_seed(0)
    reward = ShapesReward()
    with tempfile.TemporaryDirectory() as tmp:
        model = load_model(str(trailing_copy(Path(tmp) / "mini")))
        model.unet.eval()
        prompts = training_prompts(args.train_prompts, seed=0)
        if args.source != "none":
            if args.source == "renders":
                x0 = renders(prompts)
            else:
                x0 = own_samples(model, prompts, args.sample_steps, args.sample_guidance)
            pool_scores, _ = reward(RewardImages(model.decode(x0)), prompts, [{}] * len(prompts))
            keep = torch.arange(len(prompts))
            if args.select == "strict":
                keep = (pool_scores >= 1).nonzero().flatten()
            elif args.select == "best":
                grid = pool_scores.view(-1, PER_PROMPT)
                keep = grid.argmax(1) + torch.arange(grid.shape[0]) * PER_PROMPT
            if args.max_images and len(keep) > args.max_images:
                shuffled = torch.randperm(len(keep), generator=torch.Generator().manual_seed(2))
                keep = keep[shuffled[: args.max_images].sort().values]
            x0, prompts, pool_scores = (
                x0[keep],
                [prompts[i] for i in keep.tolist()],
                pool_scores[keep],
            )
            print(f"training images: {len(prompts)}, mean shapes score {pool_scores.mean():.3f}")
            fine_tune(model, prompts, x0, args)
        print(
            json.dumps(
                {
                    **vars(args),
                    "prompts": str(args.prompts),
                    "score": score(model, eval_prompts, reward),
                }
            )
        )


if __name__ == "__main__":
    run_script(main)
