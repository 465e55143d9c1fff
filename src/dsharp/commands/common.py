"""Pieces several commands share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from dsharp import devices
from dsharp.models.base import DiffusionModel


def pick_device(device: str) -> torch.device:
    """``--device``: :func:`dsharp.devices.pick_device`, its errors naming the flag. A name
    that is no device is a bad value (``RecipeError``, exit 2); a device this machine lacks
    is another error (exit 1)."""
    return devices.pick_device(device, "--device")


def parse_reward_sets(items: list[str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` reward options, each value read as YAML as a recipe reads it.
    A malformed item is a bad setting (``RecipeError``, exit 2), as a bad ``--option`` is."""
    from dsharp.recipe_errors import RecipeError
    from dsharp.recipe_yaml import parse_yaml
    from dsharp.redaction import sensitive_setting, shown_setting

    options: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        label = f"--set {shown_setting(item)!r}"
        if not sep or not key.strip():
            raise RecipeError(f"{label}: expected KEY=VALUE")
        try:
            options[key.strip()] = parse_yaml(raw, label)
        except RecipeError:
            if not sensitive_setting(item):
                raise
            # the parser's detail quotes the value, a secret here
            raise RecipeError(f"{label}: value is not valid YAML") from None
    return options


def check_on_error_flag(on_error: str | None) -> None:
    """``--on-error`` (``dsharp eval``, ``sample``, ``rewards score``) takes what a reward's
    ``on_error`` does; ``ValueError`` otherwise (None: not given)."""
    from typing import get_args

    from dsharp.config import RewardSpec

    choices = get_args(RewardSpec.model_fields["on_error"].annotation)
    if on_error is not None and on_error not in choices:
        expected = " or ".join(repr(c) for c in choices)
        raise ValueError(f"--on-error: expected {expected}, got {on_error!r}")


def check_on_error_settings(on_error: str | None, reward_options: dict[str, Any]) -> None:
    """``--on-error`` is raise or missing; ``on_error`` given as a ``--set`` reward option is
    refused, naming the flag (it is a setting of the reward, not one of its options)."""
    from dsharp.commands.errors import settings_errors
    from dsharp.recipe_errors import RecipeError

    with settings_errors():
        check_on_error_flag(on_error)
    if "on_error" in reward_options:
        value = reward_options["on_error"]
        raise RecipeError(
            f"--set on_error={value}: on_error is not a reward option; use --on-error {value}"
        )


def with_on_error(specs: list[Any], on_error: str | None) -> list[Any]:
    """``specs`` (``RewardSpec``) with ``--on-error`` applied to each, where it was given."""
    if on_error is None:
        return list(specs)
    return [spec.model_copy(update={"on_error": on_error}) for spec in specs]


def check_reward_settings(specs: list[Any]) -> None:
    """Option names and values of every reward (``--set``, a recipe's), checked without
    building it: ``ValueError`` for a refused option (a bad setting under
    ``settings_errors``, exit 2), not the ``RewardError`` of a reward that failed to score."""
    from dsharp.rewards.base import RewardError
    from dsharp.rewards.plugins import check_reward_options

    for spec in specs:
        try:
            check_reward_options(spec)
        except RewardError as err:
            raise ValueError(str(err)) from None


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
