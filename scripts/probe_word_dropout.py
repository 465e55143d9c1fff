"""Does dropping colour words from pretraining captions help dsharp-mini draw new pairs?

dsharp-mini draws a held-out colour-shape pair (e.g. "a yellow triangle") with the right
colour and a shape that colour was trained with: the colour word decides the shape. This
probe continues the pretraining of a model on rendered train-split scenes for a few hundred
steps, with captions as they are (``--drop none``, the control) or with each colour word
(``colour``) or shape word (``shape``) removed with probability ``--p`` ("a circle below a
blue square"), so that the other word alone must carry its attribute, then scores the val
prompts (every one holds a held-out pair; one image each, 25 DDIM steps, guidance 5).

    python scripts/probe_word_dropout.py --drop none
    python scripts/probe_word_dropout.py --drop colour
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections.abc import Callable

import numpy as np
import torch

from dsharp.commands.errors import require_counts, run_script
from dsharp.generate import SampleSettings, generate
from dsharp.methods.base import Batch
from dsharp.methods.finetune import FineTune
from dsharp.models import load_model
from dsharp.models.base import DiffusionModel
from dsharp.recipe_errors import RecipeError
from dsharp.rewards.base import RewardImages
from dsharp.shapes.data import generate_pairs
from dsharp.shapes.grammar import COLOURS, SHAPES
from dsharp.shapes.prompts import prompt_sets
from dsharp.shapes.reward import ShapesReward

EMPTY_PROMPT_PROB = 0.1  # as in recipes/mini/pretrain.yaml


def word_dropper(kind: str, p: float, seed: int = 7) -> Callable[[str], str]:
    """A function that removes each colour (or shape) word of a caption with probability p."""
    rng = np.random.default_rng(seed)
    if kind == "none":
        return lambda caption: caption
    if kind == "colour":
        pattern = re.compile(r"\b(" + "|".join(COLOURS) + r")\b ?")
    else:
        pattern = re.compile(r" \b(" + "|".join(s + "s?" for s in SHAPES) + r")\b")
    return lambda caption: pattern.sub(lambda m: "" if rng.random() < p else m.group(0), caption)


def continue_pretraining(
    model: DiffusionModel, drop: Callable[[str], str], args: argparse.Namespace
) -> None:
    """dsharp's ``finetune`` loss on freshly rendered train-split scenes, AdamW at a
    constant learning rate."""
    method = FineTune(model, None, 32, 32)
    optimizer = torch.optim.AdamW(model.unet.parameters(), lr=args.lr, weight_decay=0)
    generator = torch.Generator().manual_seed(1)
    model.unet.train()
    for step in range(args.steps):
        pairs = generate_pairs(args.batch_size, seed=1000 + step, split="train")
        images = np.stack([image for image, _, _ in pairs])
        images = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
        captions = [drop(caption) for _, caption, _ in pairs]
        empty = torch.rand(args.batch_size, generator=generator) < EMPTY_PROMPT_PROB
        cond = ["" if e else c for c, e in zip(captions, empty.tolist(), strict=True)]
        batch = Batch(prompts=captions, cond_prompts=cond, images=images)
        loss, _ = method.compute_loss(batch, model.unet, generator)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.unet.parameters(), 1.0)
        optimizer.step()
    model.unet.eval()


def val_scores(model: DiffusionModel) -> dict[str, float]:
    """Mean exact shapes score per val category and overall, one image per prompt."""
    reward, settings = ShapesReward(), SampleSettings("default", 25, 5.0, 0.0)
    out, every = {}, []
    for category, prompts in prompt_sets("val").items():
        images = generate(model, prompts, [0] * len(prompts), settings, batch_size=50).images
        scores, _ = reward(RewardImages(images), prompts, [{}] * len(prompts))
        out[category] = round(float(scores.mean()), 4)
        every += scores.tolist()
    out["overall"] = round(float(np.mean(every)), 4)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="dsharp-mini", help="model to continue from")
    parser.add_argument("--drop", choices=("none", "colour", "shape"), default="none")
    parser.add_argument("--p", type=float, default=0.5, help="share of those words removed")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    require_counts({"--steps": args.steps, "--batch-size": args.batch_size})
    if not 0 <= args.p <= 1:
        raise RecipeError(f"--p must be between 0 and 1, got {args.p}")
    torch.manual_seed(0)
    drop = word_dropper(args.drop, args.p)
    model = load_model(args.model)
    start = time.time()
    continue_pretraining(model, drop, args)
    result = {"args": vars(args), "train_s": round(time.time() - start)}
    print(json.dumps({**result, **val_scores(model)}))


if __name__ == "__main__":
    run_script(main)
