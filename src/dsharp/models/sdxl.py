"""Stable Diffusion XL behind :class:`DiffusionModel`.

Differs from SD only on the text side: two CLIP encoders whose penultimate hidden states are
concatenated, the second encoder's projected pooled output as ``text_embeds``, and the
micro-conditioning ``time_ids = (H, W, 0, 0, H, W)`` (original size, crop corner, target
size), all as ``StableDiffusionXLPipeline`` builds them. The VAE honours ``force_upcast``
(kept and run in float32), as the SDXL pipeline does when decoding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from dsharp.models.base import Conditioning
from dsharp.models.sd import StableDiffusionModel, _frozen, _load_component


class StableDiffusionXLModel(StableDiffusionModel):
    """A diffusers SDXL folder or hub id (family ``"sdxl"``); options as for SD."""

    _latent_family = "sdxl"
    _upcast_vae = True

    def _load_text(self, load: dict[str, Any]) -> None:
        from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

        self.tokenizer = self.text_encoder = None
        entry = self.pipeline_config.get("text_encoder")
        if entry and entry[0] is not None:  # the refiner has only the second encoder
            self.tokenizer = _load_component(
                CLIPTokenizer, self.source, "tokenizer", revision=load["revision"]
            )
            encoder = _load_component(
                CLIPTextModel, self.source, "text_encoder", dtype=self.weight_dtype, **load
            )
            self.text_encoder = _frozen(encoder, self._target_device)
        self.tokenizer_2 = _load_component(
            CLIPTokenizer, self.source, "tokenizer_2", revision=load["revision"]
        )
        encoder_2 = _load_component(
            CLIPTextModelWithProjection,
            self.source,
            "text_encoder_2",
            dtype=self.weight_dtype,
            **load,
        )
        self.text_encoder_2 = _frozen(encoder_2, self._target_device)

    @property
    def force_zeros_for_empty_prompt(self) -> bool:
        """The pipeline's flag from model_index.json (the SDXL pipeline defaults it to True)."""
        return bool(self.pipeline_config.get("force_zeros_for_empty_prompt", True))

    @torch.no_grad()
    def encode_prompt(self, prompts: Sequence[str], height: int, width: int) -> Conditioning:
        if isinstance(prompts, str):
            raise TypeError("prompts must be a sequence of strings, not one string")
        pairs = [(self.tokenizer_2, self.text_encoder_2)]
        if self.text_encoder is not None:
            pairs.insert(0, (self.tokenizer, self.text_encoder))
        hidden = []
        pooled = None
        for tokenizer, encoder in pairs:
            tokens = self._tokens(tokenizer, prompts, tokenizer.model_max_length)
            out = encoder(tokens.input_ids.to(encoder.device), output_hidden_states=True)
            hidden.append(out.hidden_states[-2])
            if encoder is self.text_encoder_2:
                pooled = out.text_embeds
        embeds = torch.cat(hidden, dim=-1).to(self.text_encoder_2.dtype)
        time_ids = torch.tensor(
            [[height, width, 0, 0, height, width]], dtype=embeds.dtype, device=embeds.device
        ).repeat(len(prompts), 1)
        return Conditioning(embeds, {"text_embeds": pooled, "time_ids": time_ids})

    def _negative_row(self, height: int, width: int) -> Conditioning:
        """Zeros shaped like an encoding when ``force_zeros_for_empty_prompt``, else the
        encoding of "" by both encoders; time_ids as for the prompt (pipeline default)."""
        empty = self.encode_prompt([""], height, width)
        if not self.force_zeros_for_empty_prompt:
            return empty
        return Conditioning(
            torch.zeros_like(empty.prompt_embeds),
            {
                "text_embeds": torch.zeros_like(empty.added["text_embeds"]),
                "time_ids": empty.added["time_ids"],
            },
        )
