"""The training methods a recipe may name, with what each needs from the recipe.

Kept free of heavy imports: the recipe schema validates ``method.name`` against this table
while parsing, and parsing must stay fast. Add a row here when a method module lands.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class MethodSpec:
    """One method: its name, a one-line description, and its recipe requirements.

    ``data`` says where training inputs come from: ``"dataset"`` (image-text pairs, from
    ``data.dataset`` or ``data.generator``) or ``"prompts"`` (``data.prompts`` or
    ``data.prompts_file``). ``needs_reward`` says whether ``rewards`` may be empty.
    """

    name: str
    description: str
    data: Literal["dataset", "prompts"]
    needs_reward: bool = True


METHODS: tuple[MethodSpec, ...] = (
    MethodSpec(
        "finetune",
        "Standard fine-tuning: the denoising loss on image-text data (no reward)",
        data="dataset",
        needs_reward=False,
    ),
    MethodSpec(
        "sft_sharpening",
        "Diffusion-Sharpening SFT: regress toward the best-rewarded trajectory of dataset latents",
        data="dataset",
    ),
    MethodSpec(
        "rlhf_sharpening",
        "Diffusion-Sharpening RLHF: DPO on the best/worst trajectories of self-generated samples",
        data="prompts",
    ),
)


def method_specs() -> dict[str, MethodSpec]:
    """Every known method by name."""
    return {m.name: m for m in METHODS}


def method_names() -> dict[str, str]:
    """Every known method name with its one-line description."""
    return {m.name: m.description for m in METHODS}
