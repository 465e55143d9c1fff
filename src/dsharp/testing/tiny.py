"""Tiny random-initialised SD and SDXL models saved as real diffusers folders.

Tests cannot download weights, so they build the real classes (UNet2DConditionModel,
AutoencoderKL, CLIPTextModel, ...) at toy sizes, save them with the real pipeline's
``save_pretrained`` and load them back through ``from_pretrained``: the whole loading path is
exercised, only the sizes are fake. Both models take 64x64-pixel images: the VAE downsamples
x8 like the real ones, so latents are ``(4, 8, 8)``.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from diffusers import DDIMScheduler
    from transformers import CLIPTokenizer

TINY_RESOLUTION = 64
"""Image side (pixels) the tiny models are built for: UNet sample_size 8 x VAE factor 8."""

_TEXT_HIDDEN = 32
_MAX_LENGTH = 77
_MERGES = ["t h", "th e</w>", "a n", "i n", "o n", "e r", "r e", "a t", "c a", "d o"]


def _byte_alphabet() -> list[str]:
    """The 256 printable stand-ins that byte-level BPE uses for raw bytes (GPT-2 / CLIP)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            chars.append(256 + extra)
            extra += 1
    return [chr(c) for c in chars]


def _write_tokenizer_files(folder: Path) -> None:
    """vocab.json + merges.txt: every byte symbol, its end-of-word form, a few merges, specials."""
    alphabet = _byte_alphabet()
    tokens = alphabet + [a + "</w>" for a in alphabet]
    for merge in _MERGES:
        merged = merge.replace(" ", "")
        if merged not in tokens:
            tokens.append(merged)
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(_MERGES) + "\n", "utf-8")


def make_tiny_tokenizer() -> CLIPTokenizer:
    """A CLIPTokenizer over a self-written byte-level vocabulary: any ASCII prompt tokenises."""
    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        _write_tokenizer_files(Path(tmp))
        return CLIPTokenizer.from_pretrained(tmp, model_max_length=_MAX_LENGTH)


def make_tiny_scheduler() -> DDIMScheduler:
    """A DDIMScheduler configured like Stable Diffusion's."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        timestep_spacing="leading",
    )


def _text_config(tokenizer, **extra):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=_TEXT_HIDDEN,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=_MAX_LENGTH,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **extra,
    )


def _tiny_vae():
    from diffusers import AutoencoderKL

    # Four blocks: three downsamplings, x8 like the real SD VAE.
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 16, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=TINY_RESOLUTION,
    )


def _tiny_unet(**extra):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=TINY_RESOLUTION // 8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=32,
        attention_head_dim=(2, 4),
        **extra,
    )


def make_tiny_sd(folder: Path, seed: int = 0) -> Path:
    """Build a tiny Stable Diffusion 1.x-style model and save it as a diffusers folder."""
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPTextModel

    folder = Path(folder)
    torch.manual_seed(seed)
    tokenizer = make_tiny_tokenizer()
    pipe = StableDiffusionPipeline(
        vae=_tiny_vae(),
        text_encoder=CLIPTextModel(_text_config(tokenizer)),
        tokenizer=tokenizer,
        unet=_tiny_unet(cross_attention_dim=_TEXT_HIDDEN),
        scheduler=make_tiny_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder)
    return folder


def make_tiny_sdxl(folder: Path, seed: int = 0) -> Path:
    """Build a tiny SDXL-style model (two text encoders, text_time embedding) and save it."""
    from diffusers import StableDiffusionXLPipeline
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    folder = Path(folder)
    torch.manual_seed(seed)
    tokenizer = make_tiny_tokenizer()
    projection_dim = 32
    time_embed_dim = 8
    text_encoder = CLIPTextModel(_text_config(tokenizer))
    text_encoder_2 = CLIPTextModelWithProjection(
        _text_config(tokenizer, projection_dim=projection_dim)
    )
    unet = _tiny_unet(
        cross_attention_dim=2 * _TEXT_HIDDEN,
        addition_embed_type="text_time",
        addition_time_embed_dim=time_embed_dim,
        projection_class_embeddings_input_dim=6 * time_embed_dim + projection_dim,
        use_linear_projection=True,
    )
    pipe = StableDiffusionXLPipeline(
        vae=_tiny_vae(),
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=make_tiny_tokenizer(),
        unet=unet,
        scheduler=make_tiny_scheduler(),
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )
    pipe.save_pretrained(folder)
    return folder


def main(argv: list[str] | None = None) -> None:
    """``python -m dsharp.testing.tiny {sd,sdxl} FOLDER``: write a tiny random model folder
    (for smoke runs and tests; its images are noise)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m dsharp.testing.tiny", description=main.__doc__)
    parser.add_argument("family", choices=["sd", "sdxl"])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    make = make_tiny_sd if args.family == "sd" else make_tiny_sdxl
    print(make(args.folder, seed=args.seed))


if __name__ == "__main__":
    main()
