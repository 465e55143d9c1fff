"""The ``aesthetic`` reward: the LAION aesthetic predictor v2.

An MLP on the L2-normalised CLIP ViT-L/14 image embedding, trained on SAC + LOGOS + AVA
ratings; scores are roughly 1..10. The MLP's layers are linear with dropout between them
(the published model has no activations), and its state dict keys (``layers.0.weight`` ...
``layers.7.bias``) match the published ``sac+logos+ava1-l14-linearMSE.pth``, which this
reward loads as is. Nothing is downloaded from outside the hub: give the ``.pth`` file's path
(or a hub repo holding it). Differentiable in the pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from dsharp.rewards._weights import (
    check_batch,
    check_str,
    load_state_dict,
    resolve_device,
    resolve_file,
)
from dsharp.rewards.base import RewardError, RewardImages
from dsharp.rewards.clip import OpenClipEncoder, grad_context, load_open_clip

WEIGHTS_FILE = "sac+logos+ava1-l14-linearMSE.pth"


class LinearHead(nn.Module):
    """``input_dim -> 1024 -> 128 -> 64 -> 16 -> 1`` linear layers with dropout 0.2, 0.2, 0.1:
    the head of the LAION aesthetic predictor v2 and of ImageReward (same layout, same keys)."""

    def __init__(self, input_dim: int = 768):
        super().__init__()
        self.input_dim = input_dim
        self.layers = nn.Sequential(
            nn.Linear(input_dim, 1024),
            nn.Dropout(0.2),
            nn.Linear(1024, 128),
            nn.Dropout(0.2),
            nn.Linear(128, 64),
            nn.Dropout(0.1),
            nn.Linear(64, 16),
            nn.Linear(16, 1),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)

    @classmethod
    def from_state_dict(cls, reward: str, option: str, state: dict[str, Any]) -> LinearHead:
        """A head sized by ``layers.0.weight`` and loaded strictly (a clear error otherwise)."""
        first = state.get("layers.0.weight")
        if not isinstance(first, torch.Tensor) or first.ndim != 2:
            raise RewardError(
                f"{reward} reward option {option!r}: not an MLP head state dict "
                f"(no 2-D 'layers.0.weight'; keys: {', '.join(sorted(state)[:6])} ...)"
            )
        head = cls(int(first.shape[1]))
        try:
            head.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise RewardError(
                f"{reward} reward option {option!r}: weights do not fit the MLP head: "
                f"{' '.join(str(e).split())}"
            ) from e
        return head.eval().requires_grad_(False)


class AestheticReward:
    """LAION aesthetic predictor v2 score of each image (the prompt is not used)."""

    differentiable = True

    def __init__(self, encoder: OpenClipEncoder, head: LinearHead, description: dict[str, Any]):
        self.encoder, self.head, self.description = encoder, head, description

    def __call__(
        self, images: RewardImages, prompts: Sequence[str], metadata: Sequence[dict[str, Any]]
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        check_batch("aesthetic", len(images), prompts)
        with grad_context(images.tensor):
            embedding = self.encoder.image(images.tensor)
            scores = self.head(embedding).squeeze(-1)
        return scores.float().to(images.tensor.device), dict(self.description)


def build_aesthetic_reward(
    *,
    weights: str | None = None,
    weights_file: str = WEIGHTS_FILE,
    model: str = "ViT-L-14",
    pretrained: str = "openai",
    device: str = "auto",
) -> AestheticReward:
    """LAION aesthetic predictor v2.

    ``weights``: path to ``sac+logos+ava1-l14-linearMSE.pth`` (or a folder or hub repo id
    holding ``weights_file``); required. ``model``/``pretrained``: the CLIP image encoder
    (open_clip name and tag or checkpoint file; the predictor was trained on ViT-L/14
    ``openai``); ``device``: ``"auto"`` or a torch device.
    """
    if weights is None:
        raise RewardError(
            "aesthetic reward needs option 'weights': the path of "
            f"{WEIGHTS_FILE} (LAION aesthetic predictor v2) or a hub repo id holding it"
        )
    weights_file = check_str("aesthetic", "weights_file", weights_file)
    dev = resolve_device("aesthetic", device)
    path = resolve_file("aesthetic", "weights", weights, weights_file)
    head = LinearHead.from_state_dict(
        "aesthetic", "weights", load_state_dict("aesthetic", "weights", path)
    )
    net, tokenizer, cfg = load_open_clip("aesthetic", model, pretrained, dev)
    embed_dim = getattr(net.visual, "output_dim", None)
    if embed_dim is not None and int(embed_dim) != head.input_dim:
        raise RewardError(
            f"aesthetic reward: weights expect {head.input_dim}-d CLIP embeddings but model "
            f"{model!r} gives {embed_dim}-d (the predictor v2 was trained on ViT-L-14)"
        )
    description = {"model": model, "pretrained": pretrained, "weights": str(weights)}
    return AestheticReward(OpenClipEncoder(net, tokenizer, cfg, dev), head.to(dev), description)
