"""The one adapter interface that every text-to-image model sits behind.

Samplers, methods and the engine only talk to :class:`DiffusionModel`; SD 1.5, SDXL and the
embedded dsharp-mini are implementations of it. Tensors follow diffusers' conventions:
latents are ``(B, C, h, w)``, timesteps are integer tensors ``(B,)`` (one per sample, so that
samples in one batch can sit at different points of the schedule), images are float
``(B, 3, H, W)`` in ``[0, 1]``.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch


@dataclass
class Conditioning:
    """Text conditioning for a batch of ``B`` samples.

    ``prompt_embeds``: ``(B, L, D)`` encoder hidden states fed to the UNet's cross-attention.
    ``added``: extra UNet conditioning keyed as diffusers' ``added_cond_kwargs`` expects
    (SDXL: ``text_embeds`` ``(B, P)`` pooled embeddings and ``time_ids`` ``(B, 6)``
    micro-conditioning); empty for SD 1.5 and dsharp-mini.
    """

    prompt_embeds: torch.Tensor
    added: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.prompt_embeds.shape[0]

    def index(self, idx: torch.Tensor | slice | Sequence[int]) -> Conditioning:
        """Rows ``idx`` of every tensor."""
        return Conditioning(self.prompt_embeds[idx], {k: v[idx] for k, v in self.added.items()})

    def repeat_interleave(self, n: int) -> Conditioning:
        """Each row repeated ``n`` times in place (``[a, b] -> [a, a, b, b]`` for n=2)."""
        return Conditioning(
            self.prompt_embeds.repeat_interleave(n, dim=0),
            {k: v.repeat_interleave(n, dim=0) for k, v in self.added.items()},
        )

    def to_plain(self) -> dict[str, object]:
        """Tensors in a dict, for a file that loads with torch's ``weights_only`` (a round of
        samples kept in a checkpoint): no class of dsharp's is pickled."""
        return {"prompt_embeds": self.prompt_embeds, "added": dict(self.added)}

    @staticmethod
    def from_plain(plain: Mapping[str, object]) -> Conditioning:
        """Back from :meth:`to_plain`."""
        added = plain["added"]
        if not isinstance(plain["prompt_embeds"], torch.Tensor) or not isinstance(added, dict):
            raise ValueError("conditioning: expected prompt_embeds and added tensors")
        return Conditioning(plain["prompt_embeds"], dict(added))

    @staticmethod
    def cat(parts: Sequence[Conditioning]) -> Conditioning:
        """Concatenate along the batch axis."""
        keys = parts[0].added.keys()
        return Conditioning(
            torch.cat([p.prompt_embeds for p in parts]),
            {k: torch.cat([p.added[k] for p in parts]) for k in keys},
        )


class DiffusionModel(ABC):
    """A text-to-image diffusion model: text encoder(s), UNet, optional VAE, DDIM tables.

    Attributes every implementation sets:

    - ``unet``: the trainable ``UNet2DConditionModel`` (possibly with LoRA adapters).
    - ``scheduler``: a diffusers ``DDIMScheduler`` built from the model's scheduler config;
      samplers read its config and ``alphas_cumprod`` but never call its ``step``.
    - ``family``: ``"sd"``, ``"sdxl"`` or ``"mini"``.
    - ``source``: what ``model.pretrained`` resolved to (a folder or hub id).
    - ``prediction_type``: what the UNet outputs, ``"epsilon"`` or ``"v_prediction"``;
      :meth:`predict_noise` always returns epsilon.
    """

    unet: torch.nn.Module
    scheduler: object
    family: str
    source: str
    prediction_type: str = "epsilon"

    # -- geometry -----------------------------------------------------------------------
    @property
    @abstractmethod
    def default_resolution(self) -> int:
        """Image side in pixels the model was trained at (SD 1.5: 512, SDXL: 1024)."""

    @abstractmethod
    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """``(C, h, w)`` of the latent for an image of ``height x width`` pixels."""

    @property
    def num_train_timesteps(self) -> int:
        """Length of the scheduler's training noise schedule (the ``T`` of timestep ranges)."""
        return int(self.scheduler.config.num_train_timesteps)

    @property
    def device(self) -> torch.device:
        """Where the UNet is now (accelerate may have moved it), for new tensors to match."""
        return next(self.unet.parameters()).device

    # -- text --------------------------------------------------------------------------
    @abstractmethod
    def encode_prompt(self, prompts: Sequence[str], height: int, width: int) -> Conditioning:
        """Conditioning for ``prompts`` (no grad through the text encoders)."""

    @abstractmethod
    def encode_negative(self, batch_size: int, height: int, width: int) -> Conditioning:
        """Unconditional conditioning for classifier-free guidance, exactly as the diffusers
        pipeline builds it for an empty negative prompt (SDXL: zeros when the pipeline's
        ``force_zeros_for_empty_prompt`` is set)."""

    # -- networks ----------------------------------------------------------------------
    @abstractmethod
    def predict_noise(
        self,
        latents: torch.Tensor,
        timesteps: torch.Tensor,
        cond: Conditioning,
        unet: torch.nn.Module | None = None,
    ) -> torch.Tensor:
        """UNet epsilon prediction for ``latents`` at per-sample integer ``timesteps``.

        ``unet`` lets the engine pass the accelerate/DDP-wrapped module for passes that
        need gradients; by default ``self.unet`` is used.
        """

    def predict_native(
        self,
        latents: torch.Tensor,
        timesteps: torch.Tensor,
        cond: Conditioning,
        unet: torch.nn.Module | None = None,
    ) -> torch.Tensor:
        """The UNet's own output (epsilon or v, see ``prediction_type``): what the plain
        denoising loss regresses, so a v-prediction model is pretrained with its own loss
        weighting. Epsilon models return :meth:`predict_noise`."""
        return self.predict_noise(latents, timesteps, cond, unet=unet)

    def native_target(
        self, x0: torch.Tensor, eps: torch.Tensor, timesteps: torch.Tensor
    ) -> torch.Tensor:
        """The regression target of :meth:`predict_native` for clean ``x0`` noised by ``eps``."""
        return eps

    def to_data_range(self, latents: torch.Tensor) -> torch.Tensor:
        """``latents`` projected onto the range that encoded data occupies.

        Latent models have no fixed range and return them unchanged; pixel-space models
        clamp to their pixel range (what :meth:`decode` would show).
        """
        return latents

    @abstractmethod
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents to images in ``[0, 1]``, float32 ``(B, 3, H, W)``."""

    @abstractmethod
    def encode_images(
        self, images: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Images in ``[0, 1]`` ``(B, 3, H, W)`` to (scaled) latents, for SFT data."""

    # -- training support ----------------------------------------------------------------
    @abstractmethod
    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """Parameters the optimizer updates: all UNet weights, or only LoRA weights."""

    @contextlib.contextmanager
    def reference(self) -> Iterator[None]:
        """Context in which ``predict_noise`` uses the frozen reference model.

        With LoRA this disables the adapters on the same UNet (no second copy); for full
        fine-tuning the implementation keeps a frozen copy made when training starts.
        """
        raise NotImplementedError(f"{type(self).__name__} has no reference model")
        yield  # pragma: no cover

    @abstractmethod
    def save_trained(self, folder: Path) -> None:
        """Write what training changed (full UNet or LoRA weights) to ``folder``."""

    @abstractmethod
    def load_trained(self, folder: Path) -> None:
        """Load what :meth:`save_trained` wrote on top of the base model."""
