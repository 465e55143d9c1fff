"""Stable Diffusion 1.x/2.x (and the pixel-space dsharp-mini) behind :class:`DiffusionModel`.

One class serves two families read from the same diffusers folder layout:

- ``"sd"``: CLIP text encoder + UNet + AutoencoderKL; latents are the VAE's scaled latents.
- ``"mini"``: the same folder without a ``vae``: the UNet works on pixels in ``[-1, 1]``
  (``in_channels == 3``), so decoding is ``x / 2 + 0.5`` and encoding ``2 x - 1``.

Everything the trainer touches (LoRA, reference model, saving what training changed) lives
here too; :class:`~dsharp.models.sdxl.StableDiffusionXLModel` only changes the text side.
"""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from dsharp.library_bars import library_bars_off
from dsharp.models.base import Conditioning, DiffusionModel
from dsharp.sampling import DDIMTables, check_scheduler, eps_from_v, v_target
from dsharp.trained_fit import (
    MISMATCH_CAUSE,
    TrainedMisfit,
    state_dict_difference,
    unet_config_difference,
)

LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
LORA_WEIGHTS = "pytorch_lora_weights.safetensors"
LORA_CONFIG = "lora_config.json"
_UNET_PREFIX = "unet."


def _load_component(
    cls: Any, source: str, subfolder: str, dtype: torch.dtype | None = None, **kwargs: Any
) -> Any:
    """``cls.from_pretrained(source, subfolder=...)`` with None-valued options dropped; the
    dtype is applied while loading (diffusers' ``torch_dtype``, transformers' ``dtype``)."""
    _require_subfolder(source, subfolder)
    options = {k: v for k, v in kwargs.items() if v is not None}
    if "variant" in options:
        _require_variant(source, subfolder, options["variant"])
    if dtype is not None:
        key = "dtype" if cls.__module__.startswith("transformers") else "torch_dtype"
        options[key] = dtype
    with library_bars_off():  # one load's bars, noise beside dsharp's own
        component = cls.from_pretrained(source, subfolder=subfolder, **options)
    if subfolder.startswith("tokenizer") and not 0 < component.model_max_length < 10**6:
        # transformers builds an empty tokenizer (no vocabulary, no length) from a folder
        # without tokenizer files, which fails only at the first prompt, with an OverflowError
        raise ValueError(f"{source}: {subfolder}/ holds no CLIP tokenizer files")
    return component


def _require_subfolder(source: str, subfolder: str) -> None:
    """A one-line ``FileNotFoundError`` naming a component that a local model folder lacks
    (diffusers would name the model folder, and transformers would load an empty tokenizer)."""
    folder = Path(source)
    if folder.is_dir() and not (folder / subfolder).is_dir():
        raise FileNotFoundError(
            f"{source}: the model folder has no {subfolder}/ (model_index.json lists it)"
        )


def _require_variant(source: str, subfolder: str, variant: str) -> None:
    """A one-line ``FileNotFoundError`` naming the component of a local model folder that has
    no ``variant`` weights (diffusers and transformers name only the model folder)."""
    folder = Path(source) / subfolder
    if folder.is_dir() and not any(f".{variant}." in path.name for path in folder.iterdir()):
        raise FileNotFoundError(
            f"{source}: {subfolder}/ has no {variant!r} variant of its weights "
            f"(model.variant: {variant}); leave model.variant unset to load the default weights"
        )


def _frozen(module: torch.nn.Module, device: Any) -> torch.nn.Module:
    module.requires_grad_(False)
    return module.to(device=device).eval()


def _vae_precision(vae: torch.nn.Module, device: torch.device) -> Any:
    """Turns fp16 autocast off while a VAE held in higher precision runs, so that it runs in
    the dtype it was loaded in. Training steps run under ``train.mixed_precision``'s autocast,
    and in fp16 an fp32 VAE's activations overflow (SDXL's VAE is kept fp32 for that reason,
    ``force_upcast``), giving NaN images that no reward can score. bf16 autocast keeps fp32's
    range and stays on (it is the faster decoder)."""
    kind = device.type
    if (
        vae.dtype != torch.float16
        and torch.is_autocast_enabled(kind)
        and torch.get_autocast_dtype(kind) == torch.float16
    ):
        return torch.autocast(kind, enabled=False)
    return contextlib.nullcontext()


def _param_versions(module: torch.nn.Module) -> int:
    """Sum of in-place modification counters of ``module``'s parameters (optimizer steps,
    ``load_state_dict`` and DDP broadcasts all bump them)."""
    return sum(p._version for p in module.parameters())


class StableDiffusionModel(DiffusionModel):
    """A diffusers SD-layout folder or hub id (families ``"sd"`` and ``"mini"``).

    ``weight_dtype`` is the dtype of the frozen parts (text encoders, VAE, and the base UNet
    under LoRA). The UNet being fully fine-tuned stays float32 unless ``unet_dtype`` says
    otherwise; LoRA weights are always float32. ``lora_rank > 0`` adds a peft LoRA on the
    attention projections and trains only it; ``lora_rank == 0`` trains the whole UNet.
    """

    _latent_family = "sd"  # family name when the folder has a VAE
    _upcast_vae = False  # the SD pipeline decodes in the VAE's own dtype

    def __init__(
        self,
        source: str,
        *,
        lora_rank: int = 0,
        lora_alpha: float | None = None,
        gradient_checkpointing: bool = False,
        device: torch.device | str = "cpu",
        weight_dtype: torch.dtype = torch.float32,
        unet_dtype: torch.dtype | None = None,
        revision: str | None = None,
        variant: str | None = None,
        pipeline_config: dict[str, Any] | None = None,
    ):
        from diffusers import DDIMScheduler, UNet2DConditionModel

        if lora_rank < 0:
            raise ValueError(f"lora_rank must be >= 0, got {lora_rank}")
        self.source = str(source)
        self.weight_dtype = weight_dtype
        self._target_device = torch.device(device)
        if pipeline_config is None:
            from dsharp.models.loading import read_model_index

            pipeline_config = read_model_index(self.source, revision=revision)
        self.pipeline_config = pipeline_config
        load = {"revision": revision, "variant": variant}

        self.scheduler = _load_component(DDIMScheduler, self.source, "scheduler", revision=revision)
        if "clip_sample" in (self.scheduler.config.get("_use_default_values") or ()):
            # saved by a class that never clips (Euler, DPM-Solver, PNDM without the legacy
            # key): DDIM's default, clip_sample=True, would clamp every x0 to [-1, 1]
            self.scheduler = DDIMScheduler.from_config(self.scheduler.config, clip_sample=False)
        try:
            check_scheduler(self.scheduler)
        except ValueError as error:
            raise ValueError(f"{self.source}: {error}") from None
        self.prediction_type = str(self.scheduler.config.prediction_type)
        self._tables: DDIMTables | None = None
        self._load_text(load)
        self.vae = self._load_vae(load)
        self.family = "mini" if self.vae is None else self._latent_family
        self._negative_cache: dict[tuple[str, int, int], Conditioning] = {}

        self.lora_rank = 0
        self.lora_alpha: float | None = None
        self.lora_targets: tuple[str, ...] = LORA_TARGETS
        self._unet_dtype = unet_dtype or (weight_dtype if lora_rank > 0 else torch.float32)
        unet = _load_component(
            UNet2DConditionModel, self.source, "unet", dtype=self._unet_dtype, **load
        )
        self.unet = unet.to(self._target_device)
        if lora_rank > 0:
            self._add_lora(lora_rank, lora_alpha, LORA_TARGETS)
        else:
            self.unet.requires_grad_(True)
        if gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()
        self._reference_unet: torch.nn.Module | None = None
        self._reference_depth = 0
        self._base_versions = _param_versions(self.unet)

    # -- loading ------------------------------------------------------------------------
    def _load_text(self, load: dict[str, Any]) -> None:
        from transformers import CLIPTextModel, CLIPTokenizer

        self.tokenizer = _load_component(
            CLIPTokenizer, self.source, "tokenizer", revision=load["revision"]
        )
        encoder = _load_component(
            CLIPTextModel, self.source, "text_encoder", dtype=self.weight_dtype, **load
        )
        self.text_encoder = _frozen(encoder, self._target_device)

    def _load_vae(self, load: dict[str, Any]) -> torch.nn.Module | None:
        from diffusers import AutoencoderKL

        entry = self.pipeline_config.get("vae")
        if not entry or entry[0] is None:
            return None
        _require_subfolder(self.source, "vae")
        config = AutoencoderKL.load_config(self.source, subfolder="vae", revision=load["revision"])
        upcast = self._upcast_vae and bool(config.get("force_upcast", True))
        dtype = torch.float32 if upcast else self.weight_dtype
        vae = _load_component(AutoencoderKL, self.source, "vae", dtype=dtype, **load)
        return _frozen(vae, self._target_device)

    # -- geometry -----------------------------------------------------------------------
    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent cell along a side; 1 for a model without a VAE (pixel space)."""
        if self.vae is None:
            return 1
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def default_resolution(self) -> int:
        size = self.unet.config.sample_size
        size = size if isinstance(size, int) else size[0]
        return int(size) * self.vae_scale_factor

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        factor = self.vae_scale_factor
        for name, value in (("height", height), ("width", width)):
            if value <= 0 or value % factor:
                raise ValueError(
                    f"{name} {value} must be a positive multiple of {factor} for {self.family}"
                )
        return (int(self.unet.config.in_channels), height // factor, width // factor)

    # -- text ---------------------------------------------------------------------------
    def _tokens(self, tokenizer: Any, prompts: Sequence[str], max_length: int) -> Any:
        return tokenizer(
            list(prompts),
            padding="max_length",
            max_length=max_length,
            truncation=True,
            return_tensors="pt",
        )

    @torch.no_grad()
    def _encode_sd(self, prompts: Sequence[str]) -> torch.Tensor:
        """Last hidden state of the text encoder, as StableDiffusionPipeline.encode_prompt."""
        encoder = self.text_encoder
        tokens = self._tokens(self.tokenizer, prompts, self.tokenizer.model_max_length)
        device = encoder.device
        mask = None
        if getattr(encoder.config, "use_attention_mask", False):
            mask = tokens.attention_mask.to(device)
        return encoder(tokens.input_ids.to(device), attention_mask=mask)[0]

    def encode_prompt(self, prompts: Sequence[str], height: int, width: int) -> Conditioning:
        if isinstance(prompts, str):
            raise TypeError("prompts must be a sequence of strings, not one string")
        return Conditioning(self._encode_sd(prompts))

    def encode_negative(self, batch_size: int, height: int, width: int) -> Conditioning:
        key = (str(self.device), height, width)
        if key not in self._negative_cache:
            self._negative_cache[key] = self._negative_row(height, width)
        row = self._negative_cache[key]
        return Conditioning(
            row.prompt_embeds.repeat(batch_size, 1, 1),
            {k: v.repeat(batch_size, *([1] * (v.ndim - 1))) for k, v in row.added.items()},
        )

    def _negative_row(self, height: int, width: int) -> Conditioning:
        """Conditioning of one empty negative prompt (the SD pipeline encodes "")."""
        return self.encode_prompt([""], height, width)

    # -- networks -----------------------------------------------------------------------
    def _schedule(self, like: torch.Tensor) -> DDIMTables:
        """The scheduler's tables on ``like``'s device (built once per device)."""
        if self._tables is None or self._tables.alphas_cumprod.device != like.device:
            self._tables = DDIMTables.from_scheduler(self.scheduler, device=like.device)
        return self._tables

    def predict_noise(
        self,
        latents: torch.Tensor,
        timesteps: torch.Tensor,
        cond: Conditioning,
        unet: torch.nn.Module | None = None,
    ) -> torch.Tensor:
        out = self.predict_native(latents, timesteps, cond, unet=unet)
        if self.prediction_type == "v_prediction":
            t = torch.as_tensor(timesteps, device=latents.device)
            t = t.expand(latents.shape[0]) if t.ndim == 0 else t
            return eps_from_v(self._schedule(latents), latents, out, t)
        return out

    def native_target(
        self, x0: torch.Tensor, eps: torch.Tensor, timesteps: torch.Tensor
    ) -> torch.Tensor:
        if self.prediction_type == "v_prediction":
            return v_target(self._schedule(x0), x0, eps, timesteps)
        return eps

    def predict_native(
        self,
        latents: torch.Tensor,
        timesteps: torch.Tensor,
        cond: Conditioning,
        unet: torch.nn.Module | None = None,
    ) -> torch.Tensor:
        if self._reference_depth and self._reference_unet is not None:
            net = self._reference_unet
        else:
            net = unet if unet is not None else self.unet
        batch = latents.shape[0]
        timesteps = torch.as_tensor(timesteps, device=latents.device)
        if timesteps.ndim == 0:
            timesteps = timesteps.expand(batch)
        if len(cond) != batch or timesteps.shape != (batch,):
            raise ValueError(
                f"batch mismatch: latents {batch}, timesteps {tuple(timesteps.shape)}, "
                f"conditioning {len(cond)}"
            )
        dtype = self._unet_dtype
        added = {k: v.to(dtype) for k, v in cond.added.items()} or None
        out = net(
            latents.to(dtype),
            timesteps,
            encoder_hidden_states=cond.prompt_embeds.to(dtype),
            added_cond_kwargs=added,
            return_dict=False,
        )[0]
        return out.to(latents.dtype)

    def _latents_stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        config = self.vae.config
        mean = getattr(config, "latents_mean", None)
        std = getattr(config, "latents_std", None)
        if mean is None or std is None:
            return None
        shape = (1, len(mean), 1, 1)
        as_tensor = lambda v: torch.tensor(v).view(shape).to(like.device, like.dtype)  # noqa: E731
        return as_tensor(mean), as_tensor(std)

    def to_data_range(self, latents: torch.Tensor) -> torch.Tensor:
        return latents.clamp(-1, 1) if self.vae is None else latents

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        if self.vae is None:
            return (latents.float() / 2 + 0.5).clamp(0, 1)
        z = latents.to(self.vae.dtype)
        scale = self.vae.config.scaling_factor
        stats = self._latents_stats(z)
        z = z * stats[1] / scale + stats[0] if stats else z / scale
        with _vae_precision(self.vae, z.device):
            images = self.vae.decode(z, return_dict=False)[0]
        return (images.float() / 2 + 0.5).clamp(0, 1)

    @torch.no_grad()
    def encode_images(
        self, images: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W) in [0, 1], got {tuple(images.shape)}")
        pixels = images.to(self.device).float() * 2 - 1
        if self.vae is None:
            return pixels
        with _vae_precision(self.vae, pixels.device):
            dist = self.vae.encode(pixels.to(self.vae.dtype)).latent_dist
        z = dist.sample(generator=generator)
        scale = self.vae.config.scaling_factor
        stats = self._latents_stats(z)
        z = (z - stats[0]) * scale / stats[1] if stats else z * scale
        return z.float()

    # -- LoRA ---------------------------------------------------------------------------
    def _add_lora(self, rank: int, alpha: float | None, targets: Sequence[str]) -> None:
        from peft import LoraConfig

        self.unet.requires_grad_(False)
        config = LoraConfig(
            r=rank,
            lora_alpha=alpha if alpha is not None else rank,
            init_lora_weights="gaussian",
            target_modules=list(targets),
        )
        self.unet.add_adapter(config)
        for name, param in self.unet.named_parameters():
            if "lora_" in name:
                param.data = param.data.float()  # LoRA trains in fp32 over a low-precision base
        self.lora_rank = rank
        self.lora_alpha = float(config.lora_alpha)
        self.lora_targets = tuple(targets)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        if self.lora_rank > 0:
            return [p for n, p in self.unet.named_parameters() if "lora_" in n]
        return list(self.unet.parameters())

    # -- reference model ----------------------------------------------------------------
    def prepare_reference(self) -> None:
        """Make the frozen reference now (full fine-tuning only; LoRA needs no copy).

        Call it before the first optimizer step and before wrapping the UNet for DDP. The copy
        costs one more UNet in memory at the UNet's dtype (SD 1.5 fp32: ~3.4 GB; SDXL fp32:
        ~10 GB). Raises if the UNet already changed since loading, since the copy would then
        not be the pretrained model.
        """
        if self.lora_rank > 0 or self._reference_unet is not None:
            return
        if _param_versions(self.unet) != self._base_versions:
            raise RuntimeError(
                "the UNet changed since loading, so a reference copy would not be the base "
                "model: call model.prepare_reference() before training or load_trained()"
            )
        reference = copy.deepcopy(self.unet)
        reference.requires_grad_(False)
        self._reference_unet = reference.eval()

    @contextlib.contextmanager
    def reference(self) -> Iterator[None]:
        """``predict_noise`` uses the frozen base model inside this context.

        LoRA: the adapters of the same UNet are disabled (no copy) and re-enabled after, with
        their ``requires_grad`` flags restored. Full fine-tuning: a frozen deep copy of the UNet,
        made on first use (see :meth:`prepare_reference` for its memory cost and timing).
        """
        if self.lora_rank == 0:
            self.prepare_reference()
            self._reference_depth += 1
            try:
                yield
            finally:
                self._reference_depth -= 1
            return
        if self._reference_depth:  # already disabled by an enclosing context
            self._reference_depth += 1
            try:
                yield
            finally:
                self._reference_depth -= 1
            return
        flags = [(p, p.requires_grad) for p in self.trainable_parameters()]
        self.unet.disable_adapters()
        self._reference_depth += 1
        try:
            yield
        finally:
            self._reference_depth -= 1
            self.unet.enable_adapters()
            for param, flag in flags:
                param.requires_grad_(flag)

    # -- saving what training changed -----------------------------------------------------
    def save_trained(self, folder: Path) -> None:
        """Full fine-tuning: ``folder/unet`` (diffusers format). LoRA: ``folder/`` gets
        ``pytorch_lora_weights.safetensors`` (keys ``unet.*``, loadable by a diffusers
        pipeline's ``load_lora_weights``) and ``lora_config.json`` (rank, alpha, targets)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if self.lora_rank == 0:
            self.unet.save_pretrained(folder / "unet")
            return
        from peft.utils import get_peft_model_state_dict

        from dsharp.io import atomic_write_bytes
        from dsharp.safetensors_bytes import safetensors_bytes

        state = get_peft_model_state_dict(self.unet)
        tensors = {_UNET_PREFIX + k: v.detach().cpu().contiguous() for k, v in state.items()}
        # the same weights, the same bytes: safetensors' own save_file orders the metadata
        # differently from one save to the next
        data = safetensors_bytes(tensors, self._lora_file_metadata())
        atomic_write_bytes(folder / LORA_WEIGHTS, data)
        config = {"rank": self.lora_rank, "alpha": self.lora_alpha, "targets": self.lora_targets}
        (folder / LORA_CONFIG).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")

    def _lora_file_metadata(self) -> dict[str, str]:
        """The weights file's metadata: the adapter's rank, alpha and target modules under
        diffusers' ``lora_adapter_metadata`` key (``unet.``-prefixed), so that
        ``load_lora_weights`` applies ``alpha / rank`` as trained (without it diffusers
        infers scale 1). Only these keys: diffusers builds a ``LoraConfig`` from them, and a
        key an older peft does not know would make the file unloadable there."""
        adapter = {
            _UNET_PREFIX + "r": self.lora_rank,
            _UNET_PREFIX + "lora_alpha": self.lora_alpha,
            _UNET_PREFIX + "target_modules": list(self.lora_targets),
        }
        return {"format": "pt", "lora_adapter_metadata": json.dumps(adapter, sort_keys=True)}

    def load_trained(self, folder: Path) -> None:
        """Load what :meth:`save_trained` wrote; a LoRA folder adds the adapter if missing."""
        folder = Path(folder)
        if (folder / LORA_CONFIG).is_file():
            self._load_lora(folder)
        elif (folder / "unet" / "config.json").is_file():
            self._load_full(folder / "unet")
        else:
            raise FileNotFoundError(
                f"{folder} holds no trained weights (expected {LORA_CONFIG} or unet/config.json)"
            )

    def _load_full(self, unet_folder: Path) -> None:
        from diffusers import UNet2DConditionModel

        if self.lora_rank > 0:
            raise TrainedMisfit(
                f"{unet_folder} holds a fully fine-tuned UNet but this model has a LoRA "
                f"(rank {self.lora_rank}); load the model with lora_rank=0"
            )
        _check_unet_weights(unet_folder)
        self._check_unet_config(unet_folder)
        try:
            with library_bars_off():
                trained = UNet2DConditionModel.from_pretrained(unet_folder)
        except OSError as err:  # diffusers words a damaged file as "unable to load"
            raise _unreadable_weights(unet_folder, err) from err
        state = trained.state_dict()
        self._refuse_misfit(unet_folder, state_dict_difference(state, self.unet.state_dict()))
        self.unet.load_state_dict(state, strict=True)

    def _check_unet_config(self, unet_folder: Path) -> None:
        """Refuse a trained UNet whose config differs in shape from this model's, before its
        weights load."""
        try:
            trained = json.loads((unet_folder / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return  # from_pretrained names the damaged file
        if isinstance(trained, dict):
            self._refuse_misfit(unet_folder, unet_config_difference(trained, self.unet.config))

    def _refuse_misfit(self, folder: Path, difference: str | None) -> None:
        """One line naming ``folder`` and the first difference, where torch's
        ``load_state_dict`` would list every differing tensor."""
        if difference is not None:
            raise TrainedMisfit(
                f"{folder}: trained weights that do not fit the base model {self.source} "
                f"({difference}; {MISMATCH_CAUSE})"
            )

    def _load_lora(self, folder: Path) -> None:
        from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
        from safetensors.torch import load_file

        config = json.loads((folder / LORA_CONFIG).read_text(encoding="utf-8"))
        rank, alpha, targets = int(config["rank"]), float(config["alpha"]), config["targets"]
        if self.lora_rank == 0:
            self._add_lora(rank, alpha, targets)
        elif (self.lora_rank, self.lora_alpha, tuple(self.lora_targets)) != (
            rank,
            alpha,
            tuple(targets),
        ):
            raise TrainedMisfit(
                f"{folder} holds a LoRA (rank {rank}, alpha {alpha}) that differs from this "
                f"model's (rank {self.lora_rank}, alpha {self.lora_alpha})"
            )
        if not (folder / LORA_WEIGHTS).is_file():  # a partial copy: not a damaged file
            raise FileNotFoundError(f"{folder}: no {LORA_WEIGHTS} (the LoRA's weights)")
        try:
            tensors = load_file(str(folder / LORA_WEIGHTS))
        except Exception as err:  # safetensors' own error type: a damaged or truncated file
            raise _unreadable_weights(folder, err) from err
        state = {k.removeprefix(_UNET_PREFIX): v for k, v in tensors.items()}
        expected = get_peft_model_state_dict(self.unet)
        self._refuse_misfit(folder, state_dict_difference(state, expected, lora_only=True))
        result = set_peft_model_state_dict(self.unet, state)
        unexpected = list(getattr(result, "unexpected_keys", None) or [])
        missing = [k for k in getattr(result, "missing_keys", None) or [] if "lora_" in k]
        if unexpected or missing:
            raise TrainedMisfit(
                f"{folder}: LoRA weights do not fit this UNet "
                f"(unexpected {unexpected[:2]}, missing {missing[:2]})"
            )


#: How ``save_pretrained`` writes a UNet's weights: one file, or shards listed by an index
#: (an SDXL UNet in fp32 is over diffusers' 10 GB shard size).
_UNET_WEIGHTS = "diffusion_pytorch_model.safetensors"
_UNET_WEIGHT_FILES = (_UNET_WEIGHTS, "diffusion_pytorch_model.bin")
_UNET_INDEXES = tuple(f"{name}.index.json" for name in _UNET_WEIGHT_FILES)


def _unreadable_weights(folder: Path, error: BaseException) -> ValueError:
    """One line for trained weights that are there but cannot be read (a checkpoint cut
    short by a full disk or a killed copy): the innermost error says why; diffusers' own
    message names only the file, twice."""
    from dsharp.hub import exception_chain

    error = exception_chain(error)[-1]
    reason = " ".join(str(error).split()) or type(error).__name__
    return ValueError(
        f"{folder}: cannot read the trained weights ({reason}): the checkpoint is damaged or "
        "truncated; use another checkpoint folder of the run"
    )


def _check_unet_weights(unet_folder: Path) -> None:
    """``FileNotFoundError`` naming the weights a trained UNet folder lacks (a partial copy):
    diffusers would log a line and name the ``.bin`` it fell back to."""
    import json

    if any((unet_folder / name).is_file() for name in _UNET_WEIGHT_FILES):
        return
    for index in _UNET_INDEXES:
        if (unet_folder / index).is_file():
            shards = set(json.loads((unet_folder / index).read_text())["weight_map"].values())
            missing = sorted(name for name in shards if not (unet_folder / name).is_file())
            if missing:
                raise FileNotFoundError(f"{unet_folder / missing[0]} is missing (a shard)")
            return
    raise FileNotFoundError(f"{unet_folder / _UNET_WEIGHTS} is missing")
