"""What the engine needs from a training method: a batch type and one loss function."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from dsharp.models.base import DiffusionModel
from dsharp.sampling import DDIMTables


@dataclass
class Batch:
    """One micro-batch of ``B`` prompts for one process.

    ``prompts``: what the reward judges against. ``cond_prompts``: what the model is
    conditioned on (equal to ``prompts`` except where empty-prompt dropout blanked one).
    ``images``: ``(B, 3, H, W)`` in ``[0, 1]`` for methods that learn from data, else None.
    """

    prompts: list[str]
    cond_prompts: list[str]
    images: torch.Tensor | None = None
    metadata: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.metadata:
            self.metadata = [{} for _ in self.prompts]


def timestep_range(
    model: DiffusionModel, timestep_min: int, timestep_max: int | None
) -> tuple[int, int]:
    """The recipe's ``[method.timestep_min, method.timestep_max)`` (None: up to the last
    training timestep), checked against the model's schedule."""
    t_max = timestep_max if timestep_max is not None else model.num_train_timesteps
    if not 0 <= timestep_min < t_max <= model.num_train_timesteps:
        raise ValueError(
            f"method.timestep_min/max: need 0 <= min < max <= {model.num_train_timesteps}"
        )
    return timestep_min, t_max


class TrainingMethod(ABC):
    """A loss over a batch. Gradients flow only through calls that pass ``unet`` (the
    accelerate-wrapped module); everything else runs on ``model.unet`` without grad."""

    name: str = ""
    #: "prompts" (online methods) or "images" (methods that learn from image-text data).
    data_kind: str = "prompts"
    #: Whether the method compares against a frozen reference model.
    needs_reference: bool = False
    #: Whether the reward steers training (False: it is only logged, e.g. finetune), so that
    #: its evaluations count toward the method's reward budget.
    trains_on_reward: bool = True
    #: Whether :meth:`check_schedule` and :meth:`notes_with_accumulation` read the model's
    #: DDIM scheduler: the checks before loading build it from its config (which imports
    #: diffusers) only for such methods.
    uses_schedule: bool = False

    @classmethod
    def check_settings(cls, settings: Mapping[str, Any]) -> None:
        """Refuse a bad value among the method's settings (its constructor keywords, defaults
        filled in) without a model, so that ``dsharp recipes validate`` and ``dsharp train``
        say so before any weights load. Each class checks its own keywords in a
        ``_check_own`` staticmethod, which its constructor calls too."""
        for klass in reversed(cls.__mro__):
            own = vars(klass).get("_check_own")
            if own is not None:
                own.__func__(settings)

    @classmethod
    def check_schedule(cls, settings: Mapping[str, Any], scheduler: Any) -> None:
        """Refuse settings (valid by :meth:`check_settings`) that the model's DDIM
        ``scheduler``, read from its config before any weights load, leaves nothing to do
        with (DDPO with no step that draws noise); most methods take any schedule."""
        return None

    @classmethod
    def notes_with_accumulation(
        cls, settings: Mapping[str, Any], grad_accum: int, scheduler: Any = None
    ) -> list[str]:
        """Notes on settings that defeat their purpose together with the recipe's
        ``train.grad_accum`` (micro-steps per optimizer step); ``scheduler``: the model's,
        where its config could be read without loading (else None). Most methods have none."""
        return []

    def __init__(self, model: DiffusionModel, reward: Any, height: int, width: int):
        self.model = model
        self.reward = reward
        self.height = height
        self.width = width
        self.tables = DDIMTables.from_scheduler(model.scheduler, device=model.device)

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps of the method besides the weights, as JSON values (DDPO's
        reward buffers); most methods keep nothing."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s values on resume (an empty mapping: nothing kept)."""
        if state:
            held = ", ".join(sorted(state))
            raise ValueError(f"{self.name} keeps no state, but the checkpoint holds: {held}")

    @abstractmethod
    def compute_loss(
        self, batch: Batch, unet: torch.nn.Module, generator: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Scalar loss (with grad through ``unet``) and metrics to log."""
