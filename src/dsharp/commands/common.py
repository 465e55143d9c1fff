"""Pieces several commands share."""

from __future__ import annotations

from pathlib import Path

import torch

from dsharp.models.base import DiffusionModel


def pick_device(device: str) -> torch.device:
    """``--device``: ``auto`` (CUDA when available, else CPU) or a torch device name."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"--device: expected auto, cpu or cuda[:N], got {device!r}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available here (use cpu or auto)")
    return resolved


def load_model_for_inference(
    model: str | None, checkpoint: Path | None, device: str
) -> DiffusionModel:
    """A base model (``--model``) or a run's fine-tuned model (``--checkpoint``), in eval mode."""
    from dsharp.builders import load_run_model
    from dsharp.models import load_model

    dev = pick_device(device)
    if checkpoint is not None:
        diffusion, _ = load_run_model(checkpoint, dev)
    else:
        diffusion = load_model(model, device=dev)
    diffusion.unet.eval()
    return diffusion
