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
    ``data.dataset`` or ``data.generator``), ``"prompts"`` (``data.prompts`` or
    ``data.prompts_file``) or ``"any"`` (the method's options decide which; the engine's
    data loader reports a missing source when training starts). ``needs_reward`` says
    whether ``rewards`` may be empty.
    ``needs_differentiable_reward``: the method back-propagates through the reward, so every
    reward with a non-zero weight must be registered ``differentiable`` (the method also
    checks it when it is built, before training).
    ``min_n``: the fewest trajectories per prompt (``method.n``) the method can learn from.
    """

    name: str
    description: str
    data: Literal["dataset", "prompts", "any"]
    needs_reward: bool = True
    needs_differentiable_reward: bool = False
    min_n: int = 1


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
        min_n=2,  # a best and a worst trajectory
    ),
    MethodSpec(
        "diffusion_dpo",
        "Diffusion-DPO (Wallace et al.): DPO on offline preference pairs or reward-labelled "
        "pairs of self-generated samples (options.pairs: online)",
        data="any",  # offline: data.dataset; online: prompts
    ),
    MethodSpec(
        "ddpo",
        "DDPO (Black et al.): policy gradient on the denoising MDP, REINFORCE or PPO-clip "
        "(options.variant: sf | is)",
        data="prompts",
    ),
    MethodSpec(
        "d3po",
        "D3PO (Yang et al.): DPO at every denoising step of two trajectories from one noise",
        data="prompts",
    ),
    MethodSpec(
        "iterpo",
        "IterPO (IterComp's ReFL): back-propagate differentiable rewards of x0_hat at one "
        "late denoising step",
        data="prompts",
        needs_differentiable_reward=True,
    ),
)


def method_specs() -> dict[str, MethodSpec]:
    """Every known method by name."""
    return {m.name: m for m in METHODS}


def method_names() -> dict[str, str]:
    """Every known method name with its one-line description."""
    return {m.name: m.description for m in METHODS}
