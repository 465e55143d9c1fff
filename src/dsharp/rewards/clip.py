"""The ``clip`` reward (CLIP score) and the open_clip helpers that ``aesthetic`` and ``hpsv2``
share: model loading and differentiable preprocessing.

CLIP score is the cosine of the CLIP image and text embeddings, times ``scale``. The paper
reports it as a plain cosine (about 0.32 for SD 1.5); the reward code of the paper used
ViT-L/14 and multiplied by 100, which ``scale=100`` reproduces.

Preprocessing is written as tensor operations on ``images.tensor`` (resize, crop or pad,
normalise with the model's mean and std) rather than PIL transforms, so gradients reach the
pixels: methods that back-propagate the reward into the generator (ReFL-style) need that.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import logging.handlers
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from dsharp.hub import exception_chain, user_path
from dsharp.rewards._weights import (
    NOT_CACHED_OFFLINE,
    check_batch,
    check_choice,
    check_local,
    check_number,
    check_str,
    error_line,
    hub_fetch_blocked,
    hub_offline,
    offline_not_cached,
    resolve_device,
    unique_prompts,
)
from dsharp.rewards.base import RewardError, RewardImages
from dsharp.rewards.open_clip_tags import pretrained_cfg, pretrained_tags

RESIZE_MODES = ("shortest", "longest", "squash")


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    height, width = (int(s) for s in size)
    return height, width


def preprocess_pixels(
    pixels: torch.Tensor,
    size: int | Sequence[int],
    mean: Sequence[float],
    std: Sequence[float],
    resize_mode: str = "shortest",
    interpolation: str = "bicubic",
) -> torch.Tensor:
    """Images ``(B, 3, H, W)`` in ``[0, 1]`` -> normalised model input, differentiably.

    ``resize_mode``: ``"shortest"`` scales the short side to ``size`` and centre-crops (CLIP's
    eval transform); ``"longest"`` scales the long side and pads with black (HPSv2's);
    ``"squash"`` resizes to ``size`` ignoring the aspect ratio (BLIP's). Resampling uses
    antialiased bicubic interpolation and clamps to ``[0, 1]`` as an 8-bit image would be.
    """
    if resize_mode not in RESIZE_MODES:
        raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {resize_mode!r}")
    target_h, target_w = _pair(size)
    height, width = pixels.shape[-2:]
    x = pixels.float()

    def resize(h: int, w: int) -> torch.Tensor:
        if (h, w) == (height, width):
            return x
        mode = interpolation if interpolation in ("bicubic", "bilinear") else "bicubic"
        out = F.interpolate(x, size=(h, w), mode=mode, antialias=True, align_corners=False)
        return out.clamp(0.0, 1.0)

    if resize_mode == "squash":
        x = resize(target_h, target_w)
    elif resize_mode == "shortest":
        scale = max(target_h / height, target_w / width)
        new_h, new_w = max(target_h, round(height * scale)), max(target_w, round(width * scale))
        x = resize(new_h, new_w)
        top, left = round((new_h - target_h) / 2), round((new_w - target_w) / 2)
        x = x[..., top : top + target_h, left : left + target_w]
    else:
        scale = min(target_h / height, target_w / width)
        new_h, new_w = min(target_h, round(height * scale)), min(target_w, round(width * scale))
        x = resize(new_h, new_w)
        pad_h, pad_w = target_h - new_h, target_w - new_w
        x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
    mean_t = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - mean_t) / std_t


# --------------------------------------------------------------------------- open_clip


@functools.cache
def _register_config(path: str) -> str:
    import open_clip

    open_clip.add_model_config(path)
    return Path(path).stem


def open_clip_model_name(reward: str, option: str, model: str) -> str:
    """A built-in open_clip model name, ``hf-hub:``/``local-dir:`` name, or a path to an
    open_clip model config ``.json`` (registered under its file stem)."""
    model = check_str(reward, option, model)
    check_local(reward, option, model, "open_clip model")
    if model.endswith(".json"):
        return _register_config(str(user_path(model).resolve()))
    return model


def load_open_clip(
    reward: str,
    model: str,
    pretrained: str | None,
    device: torch.device,
    *,
    model_option: str = "model",
    pretrained_option: str = "pretrained",
) -> tuple[Any, Any, dict[str, Any]]:
    """An eval-mode, frozen open_clip model, its tokenizer and its preprocessing config.

    ``pretrained`` is an open_clip tag (weights through the hub cache) or a checkpoint file
    (an open_clip state dict, optionally wrapped in ``{"state_dict": ...}``). A tag trained
    with QuickGELU (``openai``) builds the model with QuickGELU, as those weights need.
    Hub weights that are not cached and cannot be fetched (``HF_HUB_OFFLINE`` set, or one
    request without retries finds the hub unreachable) fail at once, in one line that says
    how to work offline and which option takes a local file.
    """
    name = open_clip_model_name(reward, model_option, model)
    pretrained = check_str(reward, pretrained_option, pretrained, allow_none=True)
    if pretrained is not None:  # as `recipes validate`, and before open_clip imports
        check_local(reward, pretrained_option, pretrained, "file")
    quick_gelu = False
    tag: dict[str, Any] | None = None
    if pretrained is not None and not name.startswith(("hf-hub:", "local-dir:")):
        path = user_path(pretrained)
        tag = pretrained_cfg(name, pretrained)  # open_clip's table, open_clip not imported
        if tag:
            quick_gelu = bool(tag.get("quick_gelu", False))
        elif path.is_file():
            pretrained = str(path)
        else:
            tags = ", ".join(pretrained_tags(name)) or "none"
            raise RewardError(
                f"{reward} reward option {pretrained_option!r}: {pretrained!r} is neither a "
                f"checkpoint file nor a pretrained tag of {name!r} (tags: {tags})"
            )
    hub = _hub_source(name, tag)
    if hub is not None:
        what = f"open_clip weights {pretrained!r} of {name!r} (hub repo {hub[0]})"
        if name.startswith("hf-hub:"):
            what = f"open_clip model {name!r}"
            local = f"give option {model_option!r} a 'local-dir:' folder (config and weights)"
        else:
            local = f"give option {pretrained_option!r} a local checkpoint file"
        if offline_not_cached(*hub):  # fail now, not after building the model
            raise RewardError(_offline_not_cached(reward, what, local))
        reason = hub_fetch_blocked(*hub)  # fail now, not after the hub's retries
        if reason is not None:
            raise RewardError(_download_failed(reward, what, reason, local))
    import open_clip  # seconds: only once the weights are known to be there to load

    try:
        with _root_log_held():
            net = open_clip.create_model(
                name, pretrained=pretrained, device=device, force_quick_gelu=quick_gelu
            )
    except Exception as e:  # its log line says what the error below says: dropped
        if hub is not None and _not_cached(e):
            if hub_offline():
                raise RewardError(_offline_not_cached(reward, what, local)) from e
            raise RewardError(_download_failed(reward, what, error_line(_root(e)), local)) from e
        raise RewardError(
            f"{reward} reward: cannot load open_clip model {name!r} with weights "
            f"{pretrained!r}: {error_line(e, limit=300)}"
        ) from e
    net.eval().requires_grad_(False)
    tokenizer = open_clip.get_tokenizer(name)
    cfg = dict(open_clip.get_model_preprocess_cfg(net))
    cfg.setdefault("size", net.visual.image_size)
    cfg.setdefault("mean", open_clip.OPENAI_DATASET_MEAN)
    cfg.setdefault("std", open_clip.OPENAI_DATASET_STD)
    cfg.setdefault("interpolation", "bicubic")
    cfg.setdefault("resize_mode", "shortest")
    return net, tokenizer, cfg


def _hub_source(name: str, tag: dict[str, Any] | None) -> tuple[str, list[str]] | None:
    """The hub repo that open_clip loads ``name`` (with pretrained tag config ``tag``) from
    and the files it asks for, last the one it falls back to; ``None`` when nothing comes from
    the hub (a checkpoint file, a ``local-dir:`` model, a tag with only a URL)."""
    if name.startswith("hf-hub:"):
        return name.removeprefix("hf-hub:"), ["open_clip_config.json"]
    if not tag or tag.get("file") or not tag.get("hf_hub"):
        return None
    repo, filename = os.path.split(tag["hf_hub"])
    filename = filename or "open_clip_pytorch_model.bin"
    stem, suffix = os.path.splitext(filename)  # open_clip tries a .safetensors twin first
    if filename == "open_clip_pytorch_model.bin":
        return repo, ["open_clip_model.safetensors", filename]
    return repo, [stem + ".safetensors", filename] if suffix in (".bin", ".pth") else [filename]


def _not_cached(error: BaseException) -> bool:
    """Whether the hub client gave up on a file it neither had cached nor could download:
    offline, no network, or a download that failed (open_clip wraps that error)."""
    from huggingface_hub.errors import LocalEntryNotFoundError

    return any(isinstance(e, LocalEntryNotFoundError) for e in exception_chain(error))


def _root(error: BaseException) -> BaseException:
    """The first error of a chain (open_clip and the hub client each wrap the one before)."""
    return exception_chain(error)[-1]


def _offline_not_cached(reward: str, what: str, local: str) -> str:
    return (
        f"{reward} reward: {what}: {NOT_CACHED_OFFLINE}; download them where there is network "
        f"(they are then cached) or {local}"
    )


def _download_failed(reward: str, what: str, reason: str, local: str) -> str:
    return (
        f"{reward} reward: {what}: cannot download from the Hugging Face hub ({reason}); to "
        "work offline, download them where there is network and set HF_HUB_OFFLINE=1 (the "
        f"cache is then used), or {local}"
    )


@contextlib.contextmanager
def _root_log_held() -> Iterator[None]:
    """Hold the root logger's records while open_clip loads. It reports a failed download
    with ``logging.error`` on the root logger, which prints an ``ERROR:root:`` line before
    dsharp's own one-line error says the same. The hub client's retry warnings (its own
    handler prints them) are held too: the error line keeps their reason. When the load
    succeeds, each held record goes to the handlers it missed, once."""
    root, hub = logging.getLogger(), logging.getLogger("huggingface_hub")
    buffer = logging.handlers.BufferingHandler(capacity=1_000_000)
    saved, saved_hub = root.handlers[:], hub.handlers[:]
    root.handlers = [buffer]  # with a handler set, logging.error() adds no console handler
    hub.handlers = []  # its records still reach the root logger's buffer
    try:
        yield
    finally:
        root.handlers, hub.handlers = saved, saved_hub
    for record in buffer.buffer:  # loaded: what was logged is news (not after an error)
        from_hub = record.name == hub.name or record.name.startswith(hub.name + ".")
        for handler in [*saved_hub, *saved] if from_hub else saved:
            if record.levelno >= handler.level:
                handler.handle(record)


class OpenClipEncoder:
    """Image and text embeddings of an open_clip model, L2-normalised, with differentiable
    image preprocessing. Shared by ``clip``, ``aesthetic`` and ``hpsv2``."""

    def __init__(self, net: Any, tokenizer: Any, cfg: dict[str, Any], device: torch.device):
        self.net, self.tokenizer, self.cfg, self.device = net, tokenizer, cfg, device

    def image(self, pixels: torch.Tensor, resize_mode: str | None = None) -> torch.Tensor:
        x = preprocess_pixels(
            pixels.to(self.device),
            self.cfg["size"],
            self.cfg["mean"],
            self.cfg["std"],
            resize_mode or self.cfg["resize_mode"],
            self.cfg["interpolation"],
        )
        return F.normalize(self.net.encode_image(x).float(), dim=-1)

    def text(self, prompts: list[str]) -> torch.Tensor:
        """Embeddings of each prompt (distinct prompts encoded once; never differentiable)."""
        order, index = unique_prompts(prompts)
        with torch.no_grad():
            tokens = self.tokenizer(order).to(self.device)
            feats = F.normalize(self.net.encode_text(tokens).float(), dim=-1)
        return feats[torch.tensor(index, device=feats.device)]


def grad_context(pixels: torch.Tensor) -> Any:
    """Build a graph only when the caller wants gradients of the pixels."""
    return torch.set_grad_enabled(torch.is_grad_enabled() and pixels.requires_grad)


# --------------------------------------------------------------------------- the reward


class ClipScoreReward:
    """``scale * cos(image embedding, text embedding)``; differentiable in the pixels."""

    differentiable = True

    def __init__(self, encoder: OpenClipEncoder, scale: float, description: dict[str, Any]):
        self.encoder, self.scale, self.description = encoder, scale, description

    def __call__(
        self, images: RewardImages, prompts: Sequence[str], metadata: Sequence[dict[str, Any]]
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        prompts = check_batch("clip", len(images), prompts)
        with grad_context(images.tensor):
            cosine = (self.encoder.image(images.tensor) * self.encoder.text(prompts)).sum(-1)
            scores = self.scale * cosine
        return scores.float().to(images.tensor.device), dict(self.description)


def build_clip_reward(
    *,
    model: str = "ViT-L-14",
    pretrained: str = "openai",
    scale: float = 1.0,
    device: str = "auto",
) -> ClipScoreReward:
    """CLIP score with open_clip.

    ``model``: open_clip model name (or a model config ``.json`` path); ``pretrained``: an
    open_clip pretrained tag or a local checkpoint file; ``scale``: multiplier of the cosine
    (1 = plain cosine as papers report; the paper's reward code used 100); ``device``:
    ``"auto"`` (CUDA when available) or a torch device.
    """
    scale = check_number("clip", "scale", scale, positive=True)
    dev = resolve_device("clip", device)
    net, tokenizer, cfg = load_open_clip("clip", model, pretrained, dev)
    check_choice("clip", "resize_mode", cfg["resize_mode"], RESIZE_MODES)
    description = {"model": model, "pretrained": pretrained, "scale": scale}
    return ClipScoreReward(OpenClipEncoder(net, tokenizer, cfg, dev), scale, description)
