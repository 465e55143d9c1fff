"""Tiny random-initialised reward models of the real architectures, saved to disk.

Like :mod:`dsharp.testing.tiny`, these build the real classes (open_clip ``CLIP``,
transformers ``CLIPModel``, ``BlipForQuestionAnswering``, ImageReward's BLIP + MLP) at toy
sizes and save them in the format each reward loads, so tests exercise the whole loading path
with fake sizes only. Every builder returns what to pass as the reward's options.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

TINY_IMAGE = 32
"""Image side (pixels) the tiny vision towers take (patch 8: 16 patches)."""

TINY_EMBED = 16
"""Joint embedding width of the tiny CLIP models (the aesthetic MLP's input)."""

TINY_OPEN_CLIP_CONFIG: dict[str, Any] = {
    "embed_dim": TINY_EMBED,
    "vision_cfg": {
        "image_size": TINY_IMAGE,
        "layers": 1,
        "width": 32,
        "head_width": 16,
        "patch_size": 8,
    },
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
"""An open_clip model config at toy size; the vocabulary is open_clip's real BPE one, so its
bundled ``SimpleTokenizer`` works offline."""


def make_tiny_open_clip(folder: Path, name: str = "dsharp-tiny-clip", seed: int = 0) -> dict:
    """An open_clip model config ``{name}.json`` and a random checkpoint ``{name}.pt``.

    Returns ``{"model": config_path, "pretrained": checkpoint_path}``: the ``clip`` reward's
    options. The config is registered with open_clip under ``name`` as the reward would.
    """
    from dsharp.rewards.clip import open_clip_model_name

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / f"{name}.json"
    config.write_text(json.dumps(TINY_OPEN_CLIP_CONFIG, indent=1), encoding="utf-8")
    import open_clip

    torch.manual_seed(seed)
    model = open_clip.create_model(open_clip_model_name("test", "model", str(config)))
    checkpoint = folder / f"{name}.pt"
    torch.save(model.state_dict(), checkpoint)
    return {"model": str(config), "pretrained": str(checkpoint)}


def make_tiny_aesthetic(folder: Path, input_dim: int = TINY_EMBED, seed: int = 0) -> dict:
    """A random LAION-v2-layout MLP saved as the published ``.pth`` is (a bare state dict),
    plus a tiny CLIP. Returns the ``aesthetic`` reward's options."""
    from dsharp.rewards.aesthetic import WEIGHTS_FILE, LinearHead

    folder = Path(folder)
    options = make_tiny_open_clip(folder, seed=seed)
    torch.manual_seed(seed + 1)
    head = LinearHead(input_dim)
    torch.save(head.state_dict(), folder / WEIGHTS_FILE)
    return {**options, "weights": str(folder / WEIGHTS_FILE)}


def make_tiny_hpsv2(folder: Path, seed: int = 0) -> dict:
    """A tiny open_clip model saved as HPSv2 checkpoints are (``{"state_dict": ...}`` with a
    DataParallel ``module.`` prefix). Returns the ``hpsv2`` reward's options."""
    folder = Path(folder)
    options = make_tiny_open_clip(folder, name="dsharp-tiny-hps", seed=seed)
    state = torch.load(options["pretrained"], map_location="cpu", weights_only=True)
    checkpoint = folder / "HPS_v2.1_compressed.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, checkpoint)
    return {"model": options["model"], "checkpoint": str(checkpoint)}


def make_tiny_pickscore(folder: Path, seed: int = 0) -> dict:
    """A tiny transformers ``CLIPModel`` and ``CLIPProcessor`` saved with ``save_pretrained``
    in one folder. Returns the ``pickscore`` reward's options."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from dsharp.testing.tiny import make_tiny_tokenizer

    folder = Path(folder)
    tokenizer = make_tiny_tokenizer()
    config = CLIPConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "max_position_embeddings": 77,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": TINY_IMAGE,
            "patch_size": 8,
        },
        projection_dim=TINY_EMBED,
    )
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(folder)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": TINY_IMAGE}, crop_size={"height": TINY_IMAGE, "width": TINY_IMAGE}
    )
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return {"model": str(folder), "processor": str(folder)}
