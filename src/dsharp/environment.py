"""What a run was made with: package versions, the machine, and which plugin distribution
supplied each reward. Written into every run folder (``environment.json``), because a score
is only reproducible with the code that produced it."""

from __future__ import annotations

import json
import platform
from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

#: The packages whose versions decide what a run computes.
PACKAGES = ("dsharp", "torch", "diffusers", "transformers", "accelerate", "peft", "open_clip_torch")


def package_version(name: str) -> str | None:
    """The installed version of ``name``, or None when it is not installed."""
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def environment_record(reward_names: Iterable[str]) -> dict[str, Any]:
    """Versions, machine and device, and each named reward's plugin and distribution."""
    import torch

    from dsharp.rewards.plugins import reward_registry

    registry = reward_registry()
    rewards = {}
    for name in dict.fromkeys(reward_names):  # each once, in order
        found = registry.get(name)
        rewards[name] = (
            {"plugin": found.plugin, "distribution": found.distribution, "version": found.version}
            if found is not None
            else None
        )
    cuda = torch.cuda.is_available()
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {name: package_version(name) for name in PACKAGES},
        "cuda": torch.version.cuda if cuda else None,
        "device": torch.cuda.get_device_name(0) if cuda else platform.processor() or "cpu",
        "rewards": rewards,
    }


def run_environment(path: Path, record: dict[str, Any], resumed_at: int | None) -> dict[str, Any]:
    """What a run folder's ``environment.json`` should hold now: ``record`` for a new run; for
    a resume, the environment the run started in with this one added under ``resumed`` (the
    step it resumed at first), so that a run continued on another machine or torch version
    keeps the record of what trained its first part. An unreadable file is replaced."""
    if resumed_at is None:
        return record
    try:
        first = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return record
    if not isinstance(first, dict) or not isinstance(first.get("resumed", []), list):
        return record
    return {**first, "resumed": [*first.get("resumed", []), {"step": resumed_at, **record}]}
