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
    ``logs``: the ``metrics.jsonl`` columns the method logs, beside the engine's
    (:data:`ENGINE_COLUMNS`): what a figure study's ``plot.y`` may name.
    """

    name: str
    description: str
    data: Literal["dataset", "prompts", "any"]
    needs_reward: bool = True
    needs_differentiable_reward: bool = False
    min_n: int = 1
    logs: tuple[str, ...] = ()


#: The ``metrics.jsonl`` columns every method's run has (``grad_norm`` with
#: ``train.max_grad_norm``, ``reward_evals`` where a reward steers training).
ENGINE_COLUMNS = ("step", "loss", "lr", "grad_norm", "reward_evals", "step_time_s")
#: Columns that count samples or pairs: the step's count is the sum over its micro-batches
#: and processes (the others are means, :mod:`dsharp.step_metrics`), so that it does not
#: shrink as processes are added.
COUNT_COLUMNS = ("reward_missing", "pairs")
_REWARDS = ("reward", "reward_std", "reward_missing")
_PAIRS = ("pairs", "reward_w", "reward_l")
_SHARPENING = (*_REWARDS, "reward_best", "reward_worst", "winner_mse")


METHODS: tuple[MethodSpec, ...] = (
    MethodSpec(
        "finetune",
        "Standard fine-tuning: the denoising loss on image-text data (no reward)",
        data="dataset",
        needs_reward=False,
        logs=("mse", "reward"),
    ),
    MethodSpec(
        "sft_sharpening",
        "Diffusion-Sharpening SFT: regress toward the best-rewarded trajectory of dataset latents",
        data="dataset",
        logs=_SHARPENING,
    ),
    MethodSpec(
        "rlhf_sharpening",
        "Diffusion-Sharpening RLHF: DPO on the best/worst trajectories of self-generated samples",
        data="prompts",
        min_n=2,  # a best and a worst trajectory
        logs=(*_SHARPENING, "sample_reward", "implicit_acc", "pairs"),
    ),
    MethodSpec(
        "diffusion_dpo",
        "Diffusion-DPO (Wallace et al.): DPO on offline preference pairs or reward-labelled "
        "pairs of self-generated samples (options.pairs: online)",
        data="any",  # offline: data.dataset; online: prompts
        logs=("reward", "reward_missing", *_PAIRS, "implicit_acc", "mse_w", "mse_l"),
    ),
    MethodSpec(
        "ddpo",
        "DDPO (Black et al.): policy gradient on the denoising MDP, REINFORCE or PPO-clip "
        "(options.variant: sf | is)",
        data="prompts",
        logs=(*_REWARDS, "adv_abs", "approx_kl", "clipfrac", "new_round"),
    ),
    MethodSpec(
        "d3po",
        "D3PO (Yang et al.): DPO at every denoising step of two trajectories from one noise",
        data="prompts",
        logs=(*_REWARDS, *_PAIRS, "clipfrac", "new_round"),
    ),
    MethodSpec(
        "iterpo",
        "IterPO (IterComp's ReFL): back-propagate differentiable rewards of x0_hat at one "
        "late denoising step",
        data="prompts",
        needs_differentiable_reward=True,
        logs=("reward", "reward_missing", "grad_step"),
    ),
)


def method_specs() -> dict[str, MethodSpec]:
    """Every known method by name."""
    return {m.name: m for m in METHODS}


def step_columns(name: str) -> tuple[str, ...]:
    """The ``metrics.jsonl`` columns a run of method ``name`` logs (the engine's, then the
    method's)."""
    return (*ENGINE_COLUMNS, *method_specs()[name].logs)


def method_names() -> dict[str, str]:
    """Every known method name with its one-line description."""
    return {m.name: m.description for m in METHODS}
