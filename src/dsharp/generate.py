"""Image generation for `dsharp sample` and `dsharp eval`: batched, seeded, method-aware.

Image ``i`` of a call uses seed ``seeds[i]``; its initial noise is what the diffusers
pipeline draws for ``generator=torch.Generator().manual_seed(seeds[i])``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from dsharp.models.base import DiffusionModel
from dsharp.progress import task_progress
from dsharp.sampling import sample

SAMPLE_METHODS = {"default": "plain DDIM sampling with classifier-free guidance"}


@dataclass
class SampleSettings:
    """How to sample: the `sample` section of a recipe, or the `dsharp sample` flags."""

    method: str = "default"
    steps: int = 25
    guidance: float = 5.0
    eta: float = 0.0
    height: int | None = None
    width: int | None = None

    @classmethod
    def from_config(cls, cfg) -> SampleSettings:
        return cls(cfg.method, cfg.steps, cfg.guidance, cfg.eta, cfg.height, cfg.width)


@dataclass
class Generated:
    images: torch.Tensor  # (N, 3, H, W) in [0, 1], on CPU
    nfe_per_image: float


def generate(
    model: DiffusionModel,
    prompts: Sequence[str],
    seeds: Sequence[int],
    settings: SampleSettings,
    batch_size: int = 8,
    progress: bool = False,
) -> Generated:
    """Generate one image per (prompt, seed) pair, in batches."""
    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
    if settings.method not in SAMPLE_METHODS:
        raise NotImplementedError(
            f"sample.method: '{settings.method}' is not implemented "
            f"(available: {', '.join(SAMPLE_METHODS)})"
        )
    out, nfe = [], 0
    with task_progress("sample", enabled=progress) as bar:
        task = bar.add_task("sample", total=len(prompts))
        for start in range(0, len(prompts), batch_size):
            chunk = slice(start, start + batch_size)
            images, trajectory = sample(
                model,
                list(prompts[chunk]),
                seeds=list(seeds[chunk]),
                steps=settings.steps,
                guidance=settings.guidance,
                height=settings.height,
                width=settings.width,
                eta=settings.eta,
                return_trajectory=True,
            )
            out.append(images.float().cpu())
            nfe += trajectory.nfe * images.shape[0]
            bar.update(task, advance=images.shape[0])
    images = torch.cat(out)
    return Generated(images=images, nfe_per_image=nfe / images.shape[0])
