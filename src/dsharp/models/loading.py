"""``load_model``: a model name, folder or hub id to a :class:`DiffusionModel`.

The family comes from the folder's ``model_index.json``: ``StableDiffusionXLPipeline`` is
SDXL; a pipeline without a VAE is the pixel-space mini family; anything else with a UNet and
a CLIP text encoder is SD. Components load through ``from_pretrained``, so
``HF_HUB_OFFLINE=1`` and the hub cache work as in diffusers.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from dsharp.hub import user_path
from dsharp.model_names import (  # noqa: F401 (builtin_near_miss: imported from here)
    EMBEDDED,
    MINI_INITS,
    MODEL_DOWNLOAD_HINT,
    builtin_near_miss,
    missing_model,
    offline_uncached_model,
)
from dsharp.models.base import DiffusionModel
from dsharp.models.mini import ensure_mini_init

FAMILIES = ("auto", "sd", "sdxl", "mini")


def assets_dir() -> Path:
    """The package's ``assets`` folder, where the embedded models' files ship."""
    return Path(__file__).resolve().parent.parent / "assets"


def resolve_pretrained(pretrained: str) -> str:
    """The folder or hub id that ``pretrained`` names: embedded model names map to their
    folder in the package, ``dsharp-mini-init[-binding]`` to its cached folder (built if
    missing), an existing path to itself, anything else is a hub id."""
    if pretrained in MINI_INITS:
        return str(ensure_mini_init(text_encoder=MINI_INITS[pretrained]))
    if pretrained in EMBEDDED:
        folder = assets_dir() / EMBEDDED[pretrained]
        if not (folder / "model_index.json").is_file():
            raise FileNotFoundError(
                f"the embedded model {pretrained!r} is not built: {folder} has no model_index.json"
            )
        return str(folder)
    path = user_path(pretrained)
    if path.exists():
        return str(path)
    problem = missing_model(pretrained)  # the rule `dsharp eval`/`sample` check first
    if problem is not None:
        raise FileNotFoundError(problem)
    return pretrained


def read_model_index(source: str, revision: str | None = None) -> dict[str, Any]:
    """``model_index.json`` of a diffusers folder or hub id, or a one-line ValueError."""
    path = Path(source)
    if path.exists() and not (path / "model_index.json").is_file():
        raise ValueError(f"{source} is not a diffusers model folder (no model_index.json)")
    if not path.exists() and revision is None:
        # A hub id that is not cached: with HF_HUB_OFFLINE set it cannot load, said before
        # diffusers (and transformers) import, seconds; else ask the hub once, so that a
        # machine with no network fails now, not after the hub client's retries (about 25 s).
        from dsharp.hub import hub_fetch_blocked

        offline = offline_uncached_model(source)
        if offline is not None:
            raise ValueError(offline)
        reason = hub_fetch_blocked(source, ["model_index.json"])
        if reason is not None:
            raise ValueError(_unreachable_message(source, reason))
    from diffusers import DiffusionPipeline

    try:
        with warnings.catch_warnings():  # diffusers passes an argument huggingface_hub retired
            warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks.*")
            return dict(DiffusionPipeline.load_config(source, revision=revision))
    except Exception as error:  # hub and file errors come in many classes
        if _hub_unreachable(error):
            raise ValueError(_unreachable_message(source)) from error
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"{source} is not a loadable diffusers model: {reason}") from error


def _hub_unreachable(error: BaseException) -> bool:
    """Whether ``error`` comes down to "not cached, and the hub could not be asked" (offline
    mode or no network): diffusers words that as "does not appear to have a file named
    model_index.json", which sends users looking for a typo in the id."""
    from huggingface_hub.errors import LocalEntryNotFoundError

    from dsharp.hub import exception_chain

    return any(isinstance(seen, LocalEntryNotFoundError) for seen in exception_chain(error))


def _unreachable_message(source: str, reason: str | None = None) -> str:
    from dsharp.hub import hub_offline

    why = "HF_HUB_OFFLINE is set" if hub_offline() else "the hub could not be reached"
    if reason is not None:
        why = f"the hub could not be reached ({reason})"
    return f"{source}: not in the local Hugging Face cache, and {why}; {MODEL_DOWNLOAD_HINT}"


def detect_family(config: dict[str, Any]) -> str:
    """``"sdxl"``, ``"mini"`` or ``"sd"`` from a model_index.json dict; a ValueError for an
    SDXL refiner, which only one text encoder and an aesthetic-score condition make (its UNet
    takes 5 time ids where the base takes 6, so it would fail at the first UNet call)."""
    if config.get("_class_name", "").startswith("StableDiffusionXL"):
        text_encoder = config.get("text_encoder")
        if config.get("requires_aesthetics_score") or not text_encoder or text_encoder[0] is None:
            raise ValueError(
                "this is an SDXL refiner (image-to-image, one text encoder, conditioned on an "
                "aesthetic score): dsharp fine-tunes and samples text-to-image models; give "
                "the SDXL base model instead"
            )
        return "sdxl"
    vae = config.get("vae")
    if not vae or vae[0] is None:
        return "mini"
    return "sd"


def load_model(
    pretrained: str,
    *,
    family: str = "auto",
    lora_rank: int = 0,
    lora_alpha: float | None = None,
    gradient_checkpointing: bool = False,
    device: torch.device | str = "cpu",
    weight_dtype: torch.dtype = torch.float32,
    unet_dtype: torch.dtype | None = None,
    revision: str | None = None,
    variant: str | None = None,
) -> DiffusionModel:
    """Load ``pretrained`` (``"dsharp-mini"``, a diffusers folder or a hub id).

    ``family="auto"`` reads it from model_index.json; naming one checks it matches.
    ``lora_rank=0`` trains the whole UNet, ``> 0`` only a LoRA (``lora_alpha`` defaults to
    the rank). ``weight_dtype`` applies to frozen parts; see
    :class:`~dsharp.models.sd.StableDiffusionModel` for ``unet_dtype``.
    """
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {', '.join(FAMILIES)}, got {family!r}")
    source = resolve_pretrained(pretrained)
    config = read_model_index(source, revision=revision)
    if "unet" not in config:
        raise ValueError(f"{pretrained} is not a UNet text-to-image model (no unet in model_index)")
    try:
        detected = detect_family(config)
    except ValueError as error:
        raise ValueError(f"{pretrained}: {error}") from None
    if family != "auto" and family != detected:
        raise ValueError(f"{pretrained} is a {detected!r} model, not {family!r}")
    options = dict(
        lora_rank=lora_rank,
        lora_alpha=lora_alpha,
        gradient_checkpointing=gradient_checkpointing,
        device=device,
        weight_dtype=weight_dtype,
        unet_dtype=unet_dtype,
        revision=revision,
        variant=variant,
        pipeline_config=config,
    )
    if detected == "sdxl":
        from dsharp.models.sdxl import StableDiffusionXLModel

        return StableDiffusionXLModel(source, **options)
    from dsharp.models.sd import StableDiffusionModel

    return StableDiffusionModel(source, **options)
