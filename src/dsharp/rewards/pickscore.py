"""The ``pickscore`` reward: PickScore (a CLIP ViT-H/14 fine-tuned on Pick-a-Pic preferences).

Score = ``logit_scale.exp() * cos(image, prompt)`` with the transformers ``CLIPModel`` of
``yuvalkirstain/PickScore_v1`` (about 18..23 for real images; the logit scale is ~100), and
the processor of ``laion/CLIP-ViT-H-14-laion2B-s32B-b79K`` as the PickScore authors use it. The
processor's tokenizer is used as is; its image settings (resize, centre crop, mean, std) are
applied as tensor operations so that the score is differentiable in the pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from dsharp.rewards._weights import (
    PROCESSOR_FILES,
    check_batch,
    from_pretrained,
    locate,
    resolve_device,
    unique_prompts,
)
from dsharp.rewards.base import RewardError, RewardImages
from dsharp.rewards.clip import grad_context, preprocess_pixels

MODEL = "yuvalkirstain/PickScore_v1"
PROCESSOR = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"


def _side(value: Any, *keys: str) -> int | None:
    if isinstance(value, int):
        return value
    for key in keys:  # a dict, or the SizeDict of fast image processors
        side = value.get(key) if isinstance(value, dict) else getattr(value, key, None)
        if side:
            return int(side)
    return None


def image_settings(image_processor: Any) -> dict[str, Any]:
    """Resize side, crop side, mean and std of a transformers CLIP-style image processor."""
    size = getattr(image_processor, "size", None)
    crop = getattr(image_processor, "crop_size", None)
    resize_side = _side(size, "shortest_edge", "height")
    crop_side = _side(crop, "height") if getattr(image_processor, "do_center_crop", True) else None
    if resize_side is None and crop_side is None:
        raise RewardError(f"pickscore reward: unsupported image processor size {size!r}")
    return {
        "resize": resize_side or crop_side,
        "crop": crop_side or resize_side,
        "mean": tuple(image_processor.image_mean),
        "std": tuple(image_processor.image_std),
    }


class HFClipEncoder:
    """L2-normalised image and text embeddings of a transformers ``CLIPModel``."""

    def __init__(self, model: Any, tokenizer: Any, settings: dict[str, Any], device: torch.device):
        self.model, self.tokenizer, self.settings, self.device = model, tokenizer, settings, device
        self.max_length = min(int(model.config.text_config.max_position_embeddings), 77)

    def image(self, pixels: torch.Tensor) -> torch.Tensor:
        """Embeddings of ``(B, 3, H, W)`` pixels in ``[0, 1]``, preprocessed in torch (as the
        processor would) so that gradients reach the pixels."""
        s = self.settings
        x = preprocess_pixels(pixels.to(self.device), s["resize"], s["mean"], s["std"])
        if s["crop"] < s["resize"]:
            top = (s["resize"] - s["crop"]) // 2
            x = x[..., top : top + s["crop"], top : top + s["crop"]]
        pooled = self.model.vision_model(pixel_values=x).pooler_output
        return F.normalize(self.model.visual_projection(pooled).float(), dim=-1)

    def text(self, prompts: list[str]) -> torch.Tensor:
        """Embeddings of ``prompts``, each distinct prompt encoded once."""
        order, index = unique_prompts(prompts)
        tokens = self.tokenizer(
            order,
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        ).to(self.device)
        with torch.no_grad():
            pooled = self.model.text_model(
                input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]
            ).pooler_output
            feats = F.normalize(self.model.text_projection(pooled).float(), dim=-1)
        return feats[torch.tensor(index, device=feats.device)]


class PickScoreReward:
    """``logit_scale.exp() * cos(image, prompt)`` under a CLIP preference model."""

    differentiable = True

    def __init__(self, encoder: HFClipEncoder, description: dict[str, Any]):
        self.encoder, self.description = encoder, description
        self.logit_scale = float(encoder.model.logit_scale.detach().exp())

    def __call__(
        self, images: RewardImages, prompts: Sequence[str], metadata: Sequence[dict[str, Any]]
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        prompts = check_batch("pickscore", len(images), prompts)
        with grad_context(images.tensor):
            cosine = (self.encoder.image(images.tensor) * self.encoder.text(prompts)).sum(-1)
            scores = self.logit_scale * cosine
        info = {**self.description, "logit_scale": self.logit_scale}
        return scores.float().to(images.tensor.device), info


def build_pickscore_reward(
    *, model: str = MODEL, processor: str = PROCESSOR, device: str = "auto"
) -> PickScoreReward:
    """PickScore.

    ``model``: a transformers ``CLIPModel`` folder or hub id (default
    ``yuvalkirstain/PickScore_v1``); ``processor``: the ``CLIPProcessor`` folder or hub id whose
    tokenizer and image settings are used (default the LAION ViT-H/14 one); ``device``:
    ``"auto"`` or a torch device.
    """
    dev = resolve_device("pickscore", device)
    # both checked before transformers imports (seconds): a missing one fails at once
    proc_source = locate("pickscore", "processor", processor, files=PROCESSOR_FILES)
    model_source = locate("pickscore", "model", model)
    from transformers import AutoProcessor, CLIPModel

    proc = from_pretrained("pickscore", "processor", AutoProcessor.from_pretrained, proc_source)
    tokenizer = getattr(proc, "tokenizer", None)
    image_processor = getattr(proc, "image_processor", None)
    if tokenizer is None or image_processor is None:
        raise RewardError(
            f"pickscore reward option 'processor': {processor!r} is not a CLIP processor "
            "(needs a tokenizer and an image processor)"
        )
    net = from_pretrained("pickscore", "model", CLIPModel.from_pretrained, model_source)
    net = net.to(dev).eval().requires_grad_(False)
    encoder = HFClipEncoder(net, tokenizer, image_settings(image_processor), dev)
    return PickScoreReward(encoder, {"model": model, "processor": processor})
