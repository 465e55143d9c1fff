"""Inference-time scaling by search over initial noises with a verifier."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from dsharp.inference.base import ImageContext, best_index, check_at_least
from dsharp.rewards.base import RewardError


@dataclass(frozen=True)
class InferenceScalingOptions:
    """``sample.options`` of inference_scaling.

    - ``search``: ``random`` (best of ``N`` full samples), ``zero_order`` (``rounds`` rounds of
      ``N`` neighbours of a pivot noise; the best seen becomes the pivot), or ``paths``
      (search over denoising paths: not implemented).
    - ``distance``: neighbourhood size (the paper's lambda): a neighbour of pivot ``n`` is
      ``(n + distance * z) / sqrt(1 + distance^2)`` with ``z ~ N(0, I)``, itself ``N(0, I)``.
    """

    KEY_OPTIONS: ClassVar[tuple[str, ...]] = ("search", "N")  # named in a grid's heading

    search: Literal["random", "zero_order", "paths"] = "random"
    N: int = 4
    rounds: int = 2
    distance: float = 0.5

    def __post_init__(self) -> None:
        check_at_least("N", self.N, 1)
        check_at_least("rounds", self.rounds, 1)
        check_at_least("distance", self.distance, 0, strict=True)
        if self.search == "paths":
            raise NotImplementedError(
                "sample.options.search: 'paths' (search over denoising paths) is not "
                "implemented; use 'random' or 'zero_order'"
            )


def _sample_and_score(ctx: ImageContext, noises: torch.Tensor, generators=None, **meta):
    """Full DDIM samples from initial latents ``noises`` (row ``i``'s step noise from
    ``generators[i]`` where given) and their verifier scores."""
    images = ctx.decode(ctx.denoise(noises, generators))
    return images, ctx.score_images(images, **meta)


@torch.no_grad()
def inference_scaling(ctx: ImageContext, opts: InferenceScalingOptions) -> torch.Tensor:
    """Inference-time scaling (Ma et al. 2025, arXiv 2501.09732): search the initial noise
    with a verifier; costs ``N`` (random) or ``1 + rounds * N`` (zero-order) full samples.

    The first sample searched is ``default``'s for this seed (its initial noise and, with
    ``sample.eta > 0``, its step noise too: each candidate draws its step noise from its own
    generator), so the result scores at least as well as plain DDIM's image under a
    deterministic verifier. A sample the verifier could not score (NaN, ``on_error:
    missing``) is never chosen while any other scored; where none did, it raises.
    """
    if opts.search == "random":
        noises, streams = ctx.initial_noise(opts.N), ctx.candidate_generators(opts.N)
        images, scores = _sample_and_score(ctx, noises, streams, round=0)
        best = best_index(scores)
        return images[best : best + 1].cpu()
    pivot = ctx.initial_noise(1)  # then its step noise from the same generator: default's
    image, score = _sample_and_score(ctx, pivot, round=0)
    score = float(score[0])
    shrink = 1.0 / math.sqrt(1.0 + opts.distance**2)
    for r in range(1, opts.rounds + 1):
        neighbours = (pivot + opts.distance * ctx.initial_noise(opts.N)) * shrink
        images, scores = _sample_and_score(ctx, neighbours, round=r)
        if bool(torch.isnan(scores).all()):
            continue  # no neighbour scored (on_error: missing): none beats the pivot
        k = best_index(scores, "neighbour")
        if math.isnan(score) or float(scores[k]) > score:
            pivot, image, score = neighbours[k : k + 1], images[k : k + 1], float(scores[k])
    if math.isnan(score):
        raise RewardError("the verifier could not score any candidate (every score is NaN)")
    return image.cpu()
