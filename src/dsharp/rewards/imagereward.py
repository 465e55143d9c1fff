"""The ``imagereward`` reward: ImageReward-v1.0 (Xu et al. 2023), implemented natively.

The ``image-reward`` package pins ``timm==0.6.13`` (and ``fairscale``) and its BLIP text
model imports transformers internals that no longer exist, so it cannot be installed next to
dsharp's dependencies. The model is small to restate with transformers' BLIP classes:

* image: BLIP ViT-L/16 at 224 px (``BlipVisionModel``; layer-norm eps 1e-6 as in BLIP's ViT);
* text: BERT-base with cross-attention to the image tokens (``BlipTextModel``), prompt
  tokenised by ``bert-base-uncased`` (padded to 35 tokens, ``[CLS]`` first);
* head: the ``[CLS]`` output through ``768 -> 1024 -> 128 -> 64 -> 16 -> 1`` linear layers
  (:class:`~dsharp.rewards.aesthetic.LinearHead`);
* score: ``(raw - 0.16717362830052426) / 1.0333394966054072``, the published normalisation.

Weights load from two formats:

* the published ``ImageReward.pt`` (a file, a folder holding it, or hub repo
  ``THUDM/ImageReward``): its keys use the original BLIP names (``blip.visual_encoder.*``,
  ``blip.text_encoder.*``, ``mlp.layers.*``) and are renamed by
  :func:`convert_original_state_dict`; the renaming was checked against the key names and
  outputs of the original BLIP modules, not against the downloaded file itself;
* dsharp's own folder (:func:`save_imagereward`): ``imagereward.json`` (BLIP config and
  normalisation), ``model.safetensors`` and the tokenizer files.

Images are preprocessed as ImageReward does (short side to 224, centre crop, CLIP mean/std),
as tensor operations, so the score is differentiable in the pixels (ReFL trains through it).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dsharp.hub import user_path
from dsharp.rewards._weights import (
    TOKENIZER_FILES,
    check_batch,
    check_local,
    check_str,
    error_line,
    from_pretrained,
    load_state_dict,
    locate,
    resolve_device,
    resolve_file,
    strip_prefix,
    unique_prompts,
)
from dsharp.rewards.aesthetic import LinearHead
from dsharp.rewards.base import RewardError, RewardImages
from dsharp.rewards.clip import grad_context, preprocess_pixels

MEAN = 0.16717362830052426
STD = 1.0333394966054072
HUB_REPO = "THUDM/ImageReward"
CHECKPOINT_FILE = "ImageReward.pt"
TOKENIZER = "bert-base-uncased"
CONFIG_FILE = "imagereward.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT = "dsharp-imagereward"
MAX_LENGTH = 35
IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)
IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)


def v1_config() -> Any:
    """The BLIP configuration of ImageReward-v1.0 (BLIP ViT-L + BERT-base, 224 px)."""
    from transformers import BlipConfig

    return BlipConfig(
        vision_config={
            "hidden_size": 1024,
            "intermediate_size": 4096,
            "num_hidden_layers": 24,
            "num_attention_heads": 16,
            "image_size": 224,
            "patch_size": 16,
            "layer_norm_eps": 1e-6,
            "hidden_act": "gelu",
        },
        text_config={
            "vocab_size": 30524,
            "hidden_size": 768,
            "encoder_hidden_size": 1024,
            "intermediate_size": 3072,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "max_position_embeddings": 512,
            "layer_norm_eps": 1e-12,
            "hidden_act": "gelu",
            "pad_token_id": 0,
            "bos_token_id": 30522,
            "sep_token_id": 102,
        },
    )


class ImageRewardModel(nn.Module):
    """BLIP image encoder + image-grounded text encoder + linear head -> raw reward ``(B,)``."""

    def __init__(self, config: Any):
        from transformers.models.blip.modeling_blip import BlipVisionModel
        from transformers.models.blip.modeling_blip_text import BlipTextModel

        super().__init__()
        self.config = config
        self.vision_model = BlipVisionModel(config.vision_config)
        self.text_encoder = BlipTextModel(config.text_config, add_pooling_layer=False)
        self.mlp = LinearHead(config.text_config.hidden_size)

    def forward(
        self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        image_embeds = self.vision_model(pixel_values=pixel_values).last_hidden_state
        image_mask = torch.ones(
            image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device
        )
        text = self.text_encoder(
            input_ids=input_ids,
            attention_mask=attention_mask,
            encoder_hidden_states=image_embeds,
            encoder_attention_mask=image_mask,
        ).last_hidden_state
        return self.mlp(text[:, 0, :].float()).squeeze(-1)


# --------------------------------------------------------------------------- key mapping

_VISION_RULES = [
    (re.compile(r"^cls_token$"), "embeddings.class_embedding"),
    (re.compile(r"^pos_embed$"), "embeddings.position_embedding"),
    (re.compile(r"^patch_embed\.proj\.(weight|bias)$"), r"embeddings.patch_embedding.\1"),
    (re.compile(r"^blocks\.(\d+)\.norm1\.(weight|bias)$"), r"encoder.layers.\1.layer_norm1.\2"),
    (re.compile(r"^blocks\.(\d+)\.norm2\.(weight|bias)$"), r"encoder.layers.\1.layer_norm2.\2"),
    (
        re.compile(r"^blocks\.(\d+)\.attn\.qkv\.(weight|bias)$"),
        r"encoder.layers.\1.self_attn.qkv.\2",
    ),
    (
        re.compile(r"^blocks\.(\d+)\.attn\.proj\.(weight|bias)$"),
        r"encoder.layers.\1.self_attn.projection.\2",
    ),
    (re.compile(r"^blocks\.(\d+)\.mlp\.(fc1|fc2)\.(weight|bias)$"), r"encoder.layers.\1.mlp.\2.\3"),
    (re.compile(r"^norm\.(weight|bias)$"), r"post_layernorm.\1"),
]
# Parts of the original checkpoint that scoring does not use (contrastive projections,
# BERT's position-id buffer).
_UNUSED = re.compile(r"^blip\.(vision_proj|text_proj)\.|position_ids$")


def _vision_key(key: str) -> str | None:
    for pattern, replacement in _VISION_RULES:
        if pattern.match(key):
            return pattern.sub(replacement, key)
    return None


def convert_original_state_dict(state: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Rename an original ImageReward state dict to :class:`ImageRewardModel`'s keys.

    Returns the renamed dict and the keys left out because scoring does not use them. A key
    that is neither mapped nor known to be unused raises ``RewardError``.
    """
    state = strip_prefix(state, "module.")
    out: dict[str, Any] = {}
    skipped: list[str] = []
    unknown: list[str] = []
    for key, value in state.items():
        if _UNUSED.search(key):
            skipped.append(key)
        elif key.startswith("blip.visual_encoder."):
            new = _vision_key(key[len("blip.visual_encoder.") :])
            if new is None:
                unknown.append(key)
            else:
                out[f"vision_model.{new}"] = value
        elif key.startswith("blip.text_encoder."):
            out["text_encoder." + key[len("blip.text_encoder.") :]] = value
        elif key.startswith("mlp.layers."):
            out[key] = value
        else:
            unknown.append(key)
    if unknown:
        shown = ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        raise RewardError(f"imagereward: not an ImageReward checkpoint: unknown keys {shown}")
    return out, skipped


def _load_strict(model: nn.Module, state: Mapping[str, Any], what: str) -> None:
    result = model.load_state_dict(dict(state), strict=False)
    if result.missing_keys or result.unexpected_keys:
        missing = ", ".join(result.missing_keys[:5])
        unexpected = ", ".join(result.unexpected_keys[:5])
        raise RewardError(
            f"imagereward: {what} does not fit the model (missing: {missing or 'none'}; "
            f"unexpected: {unexpected or 'none'})"
        )


# --------------------------------------------------------------------------- formats


def save_imagereward(
    model: ImageRewardModel, tokenizer: Any, folder: Path, mean: float = MEAN, std: float = STD
) -> Path:
    """Save in dsharp's format: ``imagereward.json``, ``model.safetensors``, tokenizer files.

    Written in a temp folder renamed into place: a save that fails or is killed half way
    leaves no folder that looks like a model (its config) but holds no weights."""
    from safetensors.torch import save_file

    from dsharp.io import atomic_directory

    folder = Path(folder)
    if folder.is_dir() and any(folder.iterdir()) and not (folder / CONFIG_FILE).is_file():
        # replaced whole: never a folder of other files, which the rename would delete
        raise FileExistsError(f"{folder}: not empty and not a saved ImageReward folder")
    meta = {"format": FORMAT, "blip": model.config.to_dict(), "mean": mean, "std": std}
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    with atomic_directory(folder) as tmp:
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=1), encoding="utf-8")
        save_file(state, str(tmp / WEIGHTS_FILE))
        tokenizer.save_pretrained(tmp)
    return folder


def _read_dsharp_config(folder: Path) -> tuple[dict[str, Any], float, float]:
    """The BLIP config (a mapping), mean and std of a dsharp folder, checked before
    transformers is imported, so that a bad (hand-edited) config is one fast line."""
    path = folder / CONFIG_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise RewardError(f"imagereward reward option 'model': bad {path}: {e}") from None
    if not isinstance(meta, dict):
        reason = f"expected a JSON object, got {type(meta).__name__}"
    elif meta.get("format") != FORMAT:
        reason = f"format is {meta.get('format')!r}, expected {FORMAT!r}"
    elif not isinstance(meta.get("blip"), dict):
        reason = "'blip' must be a mapping (the BLIP config)"
    else:
        mean, std = meta.get("mean"), meta.get("std")
        numbers = all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            for v in (mean, std)
        )
        if numbers and std > 0:
            return meta["blip"], float(mean), float(std)
        reason = f"'mean' and 'std' must be finite numbers, std > 0 (got {mean!r}, {std!r})"
    raise RewardError(f"imagereward reward option 'model': bad {path}: {reason}")


def _load_dsharp_format(folder: Path) -> tuple[ImageRewardModel, Any, float, float]:
    blip, mean, std = _read_dsharp_config(folder)
    state = load_state_dict("imagereward", "model", folder / WEIGHTS_FILE)  # before the model
    from transformers import BertTokenizer, BlipConfig

    try:  # a hand-edited config fails in transformers' own ways (its dataclass checks too)
        model = ImageRewardModel(BlipConfig.from_dict(blip))
    except Exception as e:
        reason = error_line(e, limit=300)
        raise RewardError(
            f"imagereward reward option 'model': bad {folder / CONFIG_FILE}: its 'blip' config "
            f"makes no model ({reason})"
        ) from e
    _load_strict(model, state, "weights")
    # the folder's own tokenizer, which option 'model' names ('tokenizer' is not used here)
    tokenizer = from_pretrained("imagereward", "model", BertTokenizer.from_pretrained, str(folder))
    return model, tokenizer, mean, std


def _load_original(path: Path, tokenizer: str) -> tuple[ImageRewardModel, Any, float, float]:
    # The tokenizer first: one that cannot be had fails before the checkpoint is read (and
    # before transformers imports).
    source = locate("imagereward", "tokenizer", tokenizer, files=TOKENIZER_FILES)
    from transformers import BertTokenizer

    tok = from_pretrained("imagereward", "tokenizer", BertTokenizer.from_pretrained, source)
    state, _ = convert_original_state_dict(load_state_dict("imagereward", "model", path))
    model = ImageRewardModel(v1_config())
    _load_strict(model, state, f"checkpoint {path.name}")
    return model, tok, MEAN, STD


def load_imagereward(
    model: str, checkpoint_file: str = CHECKPOINT_FILE, tokenizer: str = TOKENIZER
) -> tuple[ImageRewardModel, Any, float, float]:
    """Model, tokenizer, mean and std from dsharp's folder or the published checkpoint."""
    check_local("imagereward", "model", model, "file or folder")
    check_local("imagereward", "tokenizer", tokenizer, "folder")  # used or not, as validate
    path = user_path(model)
    if path.is_dir() and (path / CONFIG_FILE).is_file():
        return _load_dsharp_format(path)
    checkpoint = resolve_file("imagereward", "model", model, checkpoint_file)
    return _load_original(checkpoint, tokenizer)


# --------------------------------------------------------------------------- the reward


class ImageRewardReward:
    """ImageReward-v1.0 score, normalised as published."""

    differentiable = True

    def __init__(
        self,
        model: ImageRewardModel,
        tokenizer: Any,
        mean: float,
        std: float,
        device: torch.device,
        description: dict[str, Any],
    ):
        self.model, self.tokenizer, self.device = model, tokenizer, device
        self.mean, self.std, self.description = mean, std, description
        self.image_size = int(model.config.vision_config.image_size)

    def tokens(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and mask, padded to 35 tokens as ImageReward does."""
        out = self.tokenizer(
            prompts,
            padding="max_length",
            truncation=True,
            max_length=MAX_LENGTH,
            return_tensors="pt",
        )
        return out["input_ids"].to(self.device), out["attention_mask"].to(self.device)

    def raw(self, pixels: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """The head's output before normalisation, one per image."""
        x = preprocess_pixels(pixels.to(self.device), self.image_size, IMAGE_MEAN, IMAGE_STD)
        order, index = unique_prompts(prompts)
        ids, mask = self.tokens(order)
        select = torch.tensor(index, device=self.device)
        return self.model(x, ids[select], mask[select])

    def __call__(
        self, images: RewardImages, prompts: Sequence[str], metadata: Sequence[dict[str, Any]]
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        prompts = check_batch("imagereward", len(images), prompts)
        with grad_context(images.tensor):
            scores = (self.raw(images.tensor, prompts) - self.mean) / self.std
        return scores.float().to(images.tensor.device), dict(self.description)


def build_imagereward_reward(
    *,
    model: str = HUB_REPO,
    checkpoint_file: str = CHECKPOINT_FILE,
    tokenizer: str = TOKENIZER,
    device: str = "auto",
) -> ImageRewardReward:
    """ImageReward-v1.0.

    ``model``: the published ``ImageReward.pt``, a folder or hub repo holding
    ``checkpoint_file`` (default ``THUDM/ImageReward``), or a folder saved by
    :func:`save_imagereward`; ``tokenizer``: BERT tokenizer for the published checkpoint
    (folder or hub id, default ``bert-base-uncased``; a dsharp folder carries its own);
    ``device``: ``"auto"`` or a torch device.
    """
    model = check_str("imagereward", "model", model)
    checkpoint_file = check_str("imagereward", "checkpoint_file", checkpoint_file)
    tokenizer = check_str("imagereward", "tokenizer", tokenizer)
    dev = resolve_device("imagereward", device)
    net, tok, mean, std = load_imagereward(model, checkpoint_file, tokenizer)
    net = net.to(dev).eval().requires_grad_(False)
    description = {"model": model, "mean": mean, "std": std}
    return ImageRewardReward(net, tok, mean, std, dev, description)
