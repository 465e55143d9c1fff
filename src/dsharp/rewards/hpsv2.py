"""The ``hpsv2`` reward: Human Preference Score v2 (an OpenCLIP ViT-H/14 fine-tuned on human
preferences between generated images).

The score is the cosine of the image and prompt embeddings of the HPSv2 model (about 0.2..0.35
for real images; ``scale=100`` gives the percentages some papers print). Images are
preprocessed as HPSv2 evaluates them: the long side is resized to 224 and the rest padded
with black (``resize_mode="longest"``). The checkpoint (``HPS_v2.1_compressed.pt`` or
``HPS_v2_compressed.pt``) is an open_clip state dict under ``"state_dict"``, loaded into the
open_clip ``ViT-H-14`` architecture. Differentiable in the pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from dsharp.rewards._weights import (
    check_batch,
    check_choice,
    check_number,
    check_str,
    resolve_device,
    resolve_file,
)
from dsharp.rewards.base import RewardImages
from dsharp.rewards.clip import RESIZE_MODES, OpenClipEncoder, grad_context, load_open_clip

HUB_REPO = "xswu/HPSv2"
CHECKPOINT_FILE = "HPS_v2.1_compressed.pt"


class HPSv2Reward:
    """``scale * cos(image, prompt)`` under the HPSv2 model."""

    differentiable = True

    def __init__(self, encoder: OpenClipEncoder, scale: float, resize_mode: str, description: dict):
        self.encoder, self.scale, self.resize_mode = encoder, scale, resize_mode
        self.description = description

    def __call__(
        self, images: RewardImages, prompts: Sequence[str], metadata: Sequence[dict[str, Any]]
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        prompts = check_batch("hpsv2", len(images), prompts)
        with grad_context(images.tensor):
            image = self.encoder.image(images.tensor, self.resize_mode)
            scores = self.scale * (image * self.encoder.text(prompts)).sum(-1)
        return scores.float().to(images.tensor.device), dict(self.description)


def build_hpsv2_reward(
    *,
    checkpoint: str = HUB_REPO,
    checkpoint_file: str = CHECKPOINT_FILE,
    model: str = "ViT-H-14",
    scale: float = 1.0,
    resize_mode: str = "longest",
    device: str = "auto",
) -> HPSv2Reward:
    """HPSv2 preference score.

    ``checkpoint``: the checkpoint file, a folder holding ``checkpoint_file``, or a hub repo id
    (default ``xswu/HPSv2``; ``checkpoint_file="HPS_v2_compressed.pt"`` selects v2.0);
    ``model``: the open_clip architecture (or a config ``.json``); ``scale``: multiplier of
    the cosine; ``resize_mode``: ``"longest"`` (HPSv2's pad-to-square), ``"shortest"``
    (centre crop) or ``"squash"``; ``device``: ``"auto"`` or a torch device.
    """
    scale = check_number("hpsv2", "scale", scale, positive=True)
    resize_mode = check_choice("hpsv2", "resize_mode", resize_mode, RESIZE_MODES)
    checkpoint_file = check_str("hpsv2", "checkpoint_file", checkpoint_file)
    dev = resolve_device("hpsv2", device)
    path = resolve_file("hpsv2", "checkpoint", checkpoint, checkpoint_file)
    net, tokenizer, cfg = load_open_clip(
        "hpsv2", model, str(path), dev, pretrained_option="checkpoint"
    )
    description = {"model": model, "checkpoint": checkpoint, "scale": scale}
    return HPSv2Reward(OpenClipEncoder(net, tokenizer, cfg, dev), scale, resize_mode, description)
