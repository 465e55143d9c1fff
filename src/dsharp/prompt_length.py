"""Prompts longer than a model's text encoder reads.

The tokenizers cut a prompt at ``model_max_length`` tokens (as the diffusers pipelines do),
so the words past it change nothing in the image; the commands say so rather than let a
user tune words that are never read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple


class Overlong(NamedTuple):
    """A prompt, how many tokens it is (start and end tokens counted) and how many are read."""

    prompt: str
    tokens: int
    read: int


def overlong_prompts(model: Any, prompts: Sequence[str]) -> list[Overlong]:
    """Each distinct prompt of ``prompts`` that a tokenizer of ``model`` (SDXL: either of its
    two) cuts, in the order given; a model without tokenizers cuts none."""
    tokenizers = [
        tok
        for tok in (getattr(model, "tokenizer", None), getattr(model, "tokenizer_2", None))
        if tok is not None
    ]
    found = []
    for prompt in dict.fromkeys(prompts):
        for tokenizer in tokenizers:
            # verbose=False: transformers would log its own warning for the long sequence
            count = len(tokenizer(prompt, truncation=False, verbose=False).input_ids)
            if count > tokenizer.model_max_length:
                found.append(Overlong(prompt, count, int(tokenizer.model_max_length)))
                break
    return found
