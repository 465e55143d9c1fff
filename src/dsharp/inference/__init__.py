"""Sample methods for `dsharp sample` and `dsharp eval` (``sample.method``): the registry.

``default`` is plain DDIM (batched, pixel-equal to the diffusers pipeline, in
:func:`dsharp.generate.generate`); the inference-time methods of Table 1 spend extra network
evaluations per image to search with a verifier reward, one image at a time. Each is a small
function ``run(ctx, options) -> image (1, 3, H, W)`` in its own module.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from dsharp.inference.base import ImageContext, NoOptions, Verifier, parse_options, reward_specs
from dsharp.inference.demon import DemonOptions, demon
from dsharp.inference.free2guide import Free2GuideOptions, free2guide
from dsharp.inference.inference_scaling import InferenceScalingOptions, inference_scaling
from dsharp.inference.nfe import NFECounter, count_nfe


@dataclass(frozen=True)
class SampleMethod:
    """A ``sample.method``: description, options class, per-image function, reward need."""

    name: str
    description: str
    options: type
    run: Callable[[ImageContext, Any], torch.Tensor] | None = None
    needs_reward: bool = True

    def parse_options(self, options: Mapping[str, Any]) -> Any:
        """The validated options object (one-line ``ValueError`` on a bad option)."""
        return parse_options(self.options, options, self.name)


SAMPLE_METHODS: dict[str, SampleMethod] = {
    m.name: m
    for m in (
        SampleMethod(
            "default", "plain DDIM sampling with classifier-free guidance", NoOptions, None, False
        ),
        SampleMethod(
            "free2guide",
            "Free2Guide (Kim et al. 2024): reward-chosen stochastic steps early in sampling",
            Free2GuideOptions,
            free2guide,
        ),
        SampleMethod(
            "demon",
            "Demon (Yeh et al. 2025): reward-weighted noise at every SDE step",
            DemonOptions,
            demon,
        ),
        SampleMethod(
            "inference_scaling",
            "Inference-time scaling (Ma et al. 2025): verifier search over initial noises",
            InferenceScalingOptions,
            inference_scaling,
        ),
    )
}


def get_sample_method(name: str) -> SampleMethod:
    """The registered method, or a one-line ``ValueError`` listing the known ones."""
    if name not in SAMPLE_METHODS:
        from dsharp.config import unknown_name_message

        raise ValueError(
            "sample.method: " + unknown_name_message("sample method", name, SAMPLE_METHODS)
        )
    return SAMPLE_METHODS[name]


__all__ = [
    "SAMPLE_METHODS",
    "ImageContext",
    "NFECounter",
    "SampleMethod",
    "Verifier",
    "count_nfe",
    "get_sample_method",
    "reward_specs",
]
