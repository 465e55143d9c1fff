"""``jpeg_compressibility``: how small an image's JPEG is (DDPO's classic toy reward).

Score = ``-(JPEG size in kB)`` at quality 95, with kB = 1000 bytes, as in DDPO (Black et
al., 2023): smoother, simpler images compress better and score higher. Not differentiable.

This module is the whole plugin: the ``dsharp`` entry point in ``pyproject.toml`` names it,
and dsharp calls :func:`register_rewards` with a ``register`` callback. Registering is
cheap; Pillow and torch are imported only when the reward is built and used.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dsharp.rewards import RewardError, RewardImages, RewardInfo, hookimpl

__version__ = "0.1.0"


class JpegCompressibility:
    """The built reward: ``-size_kb`` of each image saved as JPEG at ``quality``."""

    differentiable = False

    def __init__(self, quality: int = 95):
        self.quality = quality

    def __call__(
        self, images: RewardImages, prompts: Sequence[str], metadata: Sequence[dict[str, Any]]
    ) -> tuple[Any, dict[str, Any]]:
        import io

        import torch

        sizes_kb = []
        for image in images.pil:
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=self.quality)
            sizes_kb.append(buffer.tell() / 1000.0)
        scores = torch.tensor([-s for s in sizes_kb], dtype=torch.float32)
        info = {"jpeg_kb": sizes_kb, "quality": self.quality}
        return scores.to(images.tensor.device), info


def check_jpeg_options(options: Mapping[str, Any]) -> None:
    """Refuse a bad option value without building the reward. Registered as
    ``check_options``, so that ``dsharp recipes validate`` and ``train`` refuse it (exit 2)
    before any model loads, as a recipe error rather than a reward failure."""
    quality = options.get("quality", 95)
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        raise ValueError(
            f"jpeg_compressibility: option 'quality': expected an integer 1-100, got {quality!r}"
        )


def build_jpeg_reward(quality: int = 95) -> JpegCompressibility:
    """Factory called with the recipe's ``options`` (``--set quality=...`` on the CLI)."""
    try:
        check_jpeg_options({"quality": quality})
    except ValueError as error:
        raise RewardError(str(error)) from None
    return JpegCompressibility(quality)


@hookimpl
def register_rewards(register: Callable[[RewardInfo], None]) -> None:
    """Tell dsharp about this plugin's rewards (one ``register`` call per reward)."""
    register(
        RewardInfo(
            name="jpeg_compressibility",
            factory=build_jpeg_reward,
            description="-(JPEG size in kB) at quality 95, as in DDPO: simpler images score higher",
            differentiable=False,
            check_options=check_jpeg_options,
        )
    )
