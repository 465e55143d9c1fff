"""A cheap fingerprint of a base model's UNet weights, kept in each checkpoint's
``trainer_state.json``, so that a checkpoint applied to other base weights of the same
shapes is refused rather than loaded silently.

Why: the shape checks of :mod:`dsharp.trained_fit` pass for a run folder whose
``recipe.yaml`` was edited to another base of the same architecture (or whose base folder
was replaced on disk); a LoRA, or a full fine-tuning's reference and merge base, then
applies to weights it was not trained from, and nothing says so.

What is sampled: two values (at a third and two thirds of the flattened tensor) of 32
weight tensors (2-D and up: convolutions and linear layers, whose values differ between
trainings; norms and biases start at constants), spread evenly over the UNet's parameter
names sorted. Names are taken as the full model has them: a LoRA's ``lora_*`` tensors are
left out and peft's ``.base_layer`` is dropped, so a LoRA run and a full one of one base
sample the same values. 64 single elements: cheap on any device and size (SDXL included),
and the same in every process and on every device (names and positions depend only on the
architecture).

Why values compared within a tolerance, not a hash: the recipe may hold the base UNet in
fp16 or bf16 (``model.weight_dtype`` under LoRA, ``model.variant``), and no exact digest
survives those casts. A hash of values cast to the coarsest dtype first does not either:
fp32 -> fp16 -> bf16 rounds about one value in sixteen differently from fp32 -> bf16. Each
sampled value is stored (as float32 reads it) and compared within ``2**-6`` relative (a
bf16 cast moves a value by at most ``2**-8``, fp16 by ``2**-11``) plus ``2**-20`` absolute
(fp16's smallest values). Another base, even a fine-tuning of the same one, moves some of
64 weights by far more.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from dsharp.trained_fit import TrainedMisfit

#: The ``trainer_state.json`` key that holds the fingerprint.
STATE_KEY = "base_fingerprint"
#: What the sample is (the choice above); a fingerprint of another scheme is not compared.
SCHEME = "unet-sample-v1"
TENSORS = 32
PER_TENSOR = 2
RELATIVE_TOLERANCE = 2.0**-6
ABSOLUTE_TOLERANCE = 2.0**-20


def _sampled_parameters(unet: Any) -> dict[str, Any]:
    """The UNet's weight tensors (2-D and up) by their full-model name, LoRA's left out."""
    found = {}
    for name, param in unet.named_parameters():
        if "lora_" in name or param.dim() < 2:
            continue
        found[name.replace(".base_layer", "")] = param
    return found


def unet_fingerprint(unet: Any, pretrained: str | None = None) -> dict[str, Any]:
    """The fingerprint of ``unet``'s weights as they are now: call it on the base model,
    before training or a checkpoint changes them. ``{"scheme": ..., "pretrained": ...,
    "values": {"name[i]": value}}``, JSON-ready; ``pretrained`` (the base's name, kept only
    to say which model to go back to) is not compared."""
    import torch

    params = _sampled_parameters(unet)
    names = sorted(params)
    count = min(TENSORS, len(names))
    picked = [names[i * len(names) // count] for i in range(count)]
    values: dict[str, float] = {}
    with torch.no_grad():
        for name in picked:
            flat = params[name].detach().reshape(-1)
            size = flat.numel()
            positions = sorted({size * (j + 1) // (PER_TENSOR + 1) for j in range(PER_TENSOR)})
            index = torch.tensor(positions, device=flat.device)
            sampled = flat[index].float().cpu().tolist()
            for position, value in zip(positions, sampled, strict=True):
                values[f"{name}[{position}]"] = value
    return {"scheme": SCHEME, "pretrained": pretrained, "values": values}


def _close(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= RELATIVE_TOLERANCE * max(abs(a), abs(b)) + ABSOLUTE_TOLERANCE


def fingerprint_difference(saved: Any, now: dict[str, Any]) -> str | None:
    """How the base a checkpoint was trained on (``saved``) differs from the one loaded now
    (``now``), in a few words; None when they agree, or when ``saved`` cannot be compared
    (none saved, another scheme, a damaged entry, no sampled name in common)."""
    if not isinstance(saved, dict) or saved.get("scheme") != now["scheme"]:
        return None
    then = saved.get("values")
    if not isinstance(then, dict):
        return None
    numbers = (int, float)
    common = [
        k
        for k in now["values"]
        if isinstance(then.get(k), numbers) and not isinstance(then[k], bool)
    ]
    differing = [k for k in common if not _close(float(then[k]), now["values"][k])]
    if not differing:
        return None
    first = differing[0]
    return (
        f"{len(differing)} of {len(common)} sampled UNet weights differ, e.g. {first}: "
        f"{float(then[first]):.6g} when trained, {now['values'][first]:.6g} now"
    )


class BaseMismatch(TrainedMisfit):
    """A checkpoint trained on other base weights than those loaded (same shapes): every
    checkpoint of the run is affected alike, so an older one is no way on."""


def check_base_fingerprint(
    checkpoint: Path,
    fingerprint: dict[str, Any],
    pretrained: str,
    recipe_path: Path | str,
    *,
    branch: bool = False,
) -> None:
    """:class:`BaseMismatch`, one line naming the run, the base that ``recipe_path`` names
    and what to do, when ``checkpoint`` saved a fingerprint that ``fingerprint`` (the base
    loaded now) does not match. A checkpoint saved without one (before dsharp kept it), or
    whose ``trainer_state.json`` cannot be read, passes quietly: nothing to compare.
    ``branch``: the recipe is another run's that starts from the checkpoint."""
    from dsharp.checkpoints import read_trainer_state, run_dir_of
    from dsharp.model_names import absolute_model_source

    try:
        saved = read_trainer_state(checkpoint).get(STATE_KEY)
    except (OSError, ValueError):
        return  # the step read (or the load) names the damaged file
    difference = fingerprint_difference(saved, fingerprint)
    if difference is None:
        return
    run = run_dir_of(checkpoint)
    trained_from = saved.get("pretrained")
    known = isinstance(trained_from, str) and trained_from != ""
    if branch:
        model = trained_from if known else f"the model that the run {run} was trained from"
        raise BaseMismatch(
            f"{checkpoint}: trained on other base weights than {pretrained}, the base model "
            f"{recipe_path} names ({difference}): set model.pretrained to {model}"
        )
    head = f"{run}: its checkpoint {Path(checkpoint).name} was trained on other base weights"
    if known and trained_from in (pretrained, absolute_model_source(pretrained)):
        raise BaseMismatch(  # the same name: its files changed
            f"{head} than {pretrained} holds now, the base model {recipe_path} names "
            f"({difference}): that model's files were replaced since the run trained; "
            "restore them, or set model.pretrained to a copy of them"
        )
    if known:
        raise BaseMismatch(
            f"{head} than {pretrained}, the base model {recipe_path} names ({difference}): "
            f"set model.pretrained back to {trained_from}, the base the run was trained from"
        )
    raise BaseMismatch(
        f"{head} than {pretrained}, the base model {recipe_path} names ({difference}; its "
        "recipe.yaml was changed, or that model's files were replaced): set model.pretrained "
        "back to the model the run was trained from"
    )
