"""Which torch device a model runs on, from a user's word for it: library code (the Python
API, the post-training report, studies) and the commands pick it the same way."""

from __future__ import annotations

import torch

#: Device types dsharp runs on; another torch type (``xla``, ``meta``) is a bad value.
DEVICE_TYPES = ("cpu", "cuda", "mps", "xpu")


def pick_device(device: str, label: str = "device") -> torch.device:
    """``auto`` (CUDA when available, else CPU) or a torch device name. ``label`` names the
    input in errors (``--device`` for the commands). A name that is no device is a bad value
    (``RecipeError``); a device this machine lacks is a ``ValueError``."""
    from dsharp.recipe_errors import RecipeError

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        resolved = None
    if resolved is None or resolved.type not in DEVICE_TYPES:
        raise RecipeError(f"{label}: expected auto, cpu, cuda[:N], mps or xpu, got {device!r}")
    if resolved.type == "cpu":
        return resolved
    name = resolved.type.upper()
    if not _available(resolved.type):
        raise ValueError(f"{label} {device}: {name} is not available here (use cpu or auto)")
    count = _device_count(resolved.type)
    if resolved.index is not None and resolved.index >= count:
        # caught here, not at the first tensor moved there ("invalid device ordinal"), which
        # comes after the model (or a reward model) has loaded
        kind = resolved.type
        valid = f"{kind}:0" if count == 1 else f"{kind}:0 to {kind}:{count - 1}"
        raise ValueError(f"{label} {device}: this machine has {count} {name} device(s), {valid}")
    return resolved


def _available(device_type: str) -> bool:
    """Whether this machine has a device of ``device_type`` (cuda, mps, xpu)."""
    backend = torch.backends.mps if device_type == "mps" else getattr(torch, device_type, None)
    return bool(backend is not None and backend.is_available())


def _device_count(device_type: str) -> int:
    """How many devices of an available ``device_type`` this machine has (MPS: one)."""
    if device_type == "mps":
        return 1
    return int(getattr(torch, device_type).device_count())
