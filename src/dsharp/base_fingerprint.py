"""A cheap fingerprint of a base model's weights (UNet and text encoder(s)), kept in
each checkpoint's ``trainer_state.json``, so that a checkpoint applied to other base weights
of the same shapes is refused rather than loaded silently.

Why: the shape checks of :mod:`dsharp.trained_fit` pass for a run folder whose
``recipe.yaml`` was edited to another base of the same architecture (or whose base folder
was replaced on disk, or whose ``model.revision`` changed); a LoRA, or a full fine-tuning's
reference and merge base, then applies to weights it was not trained from, and nothing says
so. The text encoders count too: a base with the same UNet and another encoder conditions
the trained UNet on other embeddings. The VAE does not: swapping in a fine-tuned decoder of
the same latent space (``sd-vae-ft-mse``, ``sdxl-vae-fp16-fix``) is a common, sound choice
for a trained UNet, which a refusal would rule out.

What is sampled, per component (``unet``, ``text_encoder``, ``text_encoder_2``, those the
model has): two values (at a third and two thirds of the flattened tensor) of up to 32
weight tensors (2-D and up: convolutions, linear layers and embeddings, whose values differ
between trainings; norms and biases start at constants), spread evenly over the component's
parameter names sorted. Names are taken as the full model has them: a LoRA's ``lora_*``
tensors are left out and peft's ``.base_layer`` is dropped, so a LoRA run and a full one of
one base sample the same values; a leading ``text_model.`` is dropped, which transformers
4 has on ``CLIPTextModel``'s names and 5 does not. At most 192 single elements: cheap on
any device and size (SDXL included), and the same in every process and on every device.

Formats: ``base-sample-v2`` (``{"scheme", "pretrained", "revision", "components": {name:
{"param[i]": value}}}``); ``unet-sample-v1`` (saved before: ``"values"``, the UNet's alone,
the same sample as v2's ``unet``) is compared on the UNet. A checkpoint with neither loads
unchecked.

Why values compared within a tolerance, not a hash: the recipe may hold the base in fp16 or
bf16 (``model.weight_dtype``, ``model.variant``), and no exact digest survives those casts.
A hash of values cast to the coarsest dtype first does not either: fp32 -> fp16 -> bf16
rounds about one value in sixteen differently from fp32 -> bf16. Each sampled value is
stored (as float32 reads it) and compared within ``2**-6`` relative (a bf16 cast moves a
value by at most ``2**-8``, fp16 by ``2**-11``) plus ``2**-20`` absolute (fp16's smallest
values). Another base, even a fine-tuning of the same one, moves some of 64 weights by far
more.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from dsharp.trained_fit import TrainedMisfit

#: The ``trainer_state.json`` key that holds the fingerprint.
STATE_KEY = "base_fingerprint"
#: What the sample is (the choice above); a fingerprint of another scheme is not compared.
SCHEME = "base-sample-v2"
#: The UNet-only scheme checkpoints were saved with before: compared on the UNet.
UNET_SCHEME = "unet-sample-v1"
#: The model's components sampled (attribute name: how messages name it), in this order.
COMPONENTS = {
    "unet": "UNet",
    "text_encoder": "text encoder",
    "text_encoder_2": "second text encoder",
}
TENSORS = 32
PER_TENSOR = 2
RELATIVE_TOLERANCE = 2.0**-6
ABSOLUTE_TOLERANCE = 2.0**-20


def parameter_name(name: str) -> str:
    """``name`` as the fingerprint keys it: the full model's name, without LoRA's wrapper
    or transformers 4's ``text_model.`` prefix."""
    return name.replace(".base_layer", "").removeprefix("text_model.")


def _sampled_parameters(module: Any) -> dict[str, Any]:
    """The module's weight tensors (2-D and up) by their fingerprint name, LoRA's left out."""
    found = {}
    for name, param in module.named_parameters():
        if "lora_" in name or param.dim() < 2:
            continue
        found[parameter_name(name)] = param
    return found


def sample_positions(size: int) -> list[int]:
    """The flat positions sampled in a tensor of ``size`` elements."""
    return sorted({size * (j + 1) // (PER_TENSOR + 1) for j in range(PER_TENSOR)})


def module_sample(module: Any) -> dict[str, float]:
    """``{"name[i]": value}`` of ``module``'s weights as they are now."""
    import torch

    params = _sampled_parameters(module)
    names = sorted(params)
    count = min(TENSORS, len(names))
    picked = [names[i * len(names) // count] for i in range(count)]
    values: dict[str, float] = {}
    with torch.no_grad():
        for name in picked:
            flat = params[name].detach().reshape(-1)
            positions = sample_positions(flat.numel())
            index = torch.tensor(positions, device=flat.device)
            sampled = flat[index].float().cpu().tolist()
            for position, value in zip(positions, sampled, strict=True):
                values[f"{name}[{position}]"] = value
    return values


def base_fingerprint(
    model: Any, pretrained: str | None = None, revision: str | None = None
) -> dict[str, Any]:
    """The fingerprint of ``model``'s weights as they are now: call it on the base model,
    before training or a checkpoint changes them. JSON-ready; ``pretrained`` and
    ``revision`` (the recipe's, kept to say what changed and which model to go back to) are
    not compared."""
    components = {}
    for attribute in COMPONENTS:
        module = getattr(model, attribute, None)
        if module is not None:
            components[attribute] = module_sample(module)
    return {
        "scheme": SCHEME,
        "pretrained": pretrained,
        "revision": revision,
        "components": components,
    }


def saved_components(saved: Any) -> dict[str, dict[str, Any]] | None:
    """The sampled values of a saved fingerprint by component (a v1 one: its UNet's); None
    when there is nothing to compare (none saved, another scheme, a damaged entry)."""
    if not isinstance(saved, dict):
        return None
    if saved.get("scheme") == UNET_SCHEME:
        values = saved.get("values")
        return {"unet": values} if isinstance(values, dict) else None
    if saved.get("scheme") != SCHEME or not isinstance(saved.get("components"), dict):
        return None
    return {k: v for k, v in saved["components"].items() if isinstance(v, dict)}


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _close(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= RELATIVE_TOLERANCE * max(abs(a), abs(b)) + ABSOLUTE_TOLERANCE


def fingerprint_difference(saved: Any, now: dict[str, Any]) -> str | None:
    """How the base a checkpoint was trained on (``saved``) differs from the one loaded now
    (``now``), in a few words; None when they agree, or when ``saved`` cannot be compared
    (none saved, another scheme, a damaged entry, no sampled name in common). Components
    that only one side has are not compared."""
    then = saved_components(saved)
    if then is None:
        return None
    counts, examples = [], []
    for component, label in COMPONENTS.items():
        old, new = then.get(component), now["components"].get(component)
        if old is None or new is None:
            continue
        common = [k for k in new if _number(old.get(k))]
        differing = [k for k in common if not _close(float(old[k]), new[k])]
        if differing:
            counts.append(f"{len(differing)} of {len(common)} sampled {label} weights")
            first = differing[0]
            examples.append(
                (label, f"{first}: {float(old[first]):.6g} when trained, {new[first]:.6g} now")
            )
    if not counts:
        return None
    label, example = examples[0]
    where = f"{label} " if len(counts) > 1 else ""
    return f"{', '.join(counts)} differ, e.g. {where}{example}"


class BaseMismatch(TrainedMisfit):
    """A checkpoint trained on other base weights than those loaded (same shapes): every
    checkpoint of the run is affected alike, so an older one is no way on."""


def _revision_words(revision: str | None) -> str:
    return "the default revision" if revision is None else f"revision {revision}"


def _is_folder(pretrained: str) -> bool:
    """Whether ``pretrained`` names a local model folder (not a built-in name, a hub id)."""
    from dsharp.hub import user_path
    from dsharp.model_names import is_builtin

    return not is_builtin(pretrained) and user_path(pretrained).is_dir()


def _same_name_cause(saved: dict, pretrained: str, revision: str | None) -> str:
    """What changed, and what to do, when the checkpoint's base has the name the recipe
    gives: a folder's files, the revision, or (not told apart) the weights behind the name."""
    if _is_folder(pretrained):
        return (
            "that model's files were replaced since the run trained; restore them, or set "
            "model.pretrained to a copy of them"
        )
    if "revision" in saved and saved["revision"] != revision:  # v2 records it
        then = saved["revision"]
        back = f"set model.revision back to {then}" if then else "remove model.revision"
        return f"the run was trained on {_revision_words(then)} of it; {back}"
    return (
        "the weights under that name changed since the run trained; set model.pretrained "
        "and model.revision to the weights the run was trained from"
    )


def check_base_fingerprint(
    checkpoint: Path,
    fingerprint: dict[str, Any],
    pretrained: str,
    recipe_path: Path | str,
    *,
    branch: bool = False,
    revision: str | None = None,
) -> None:
    """:class:`BaseMismatch`, one line naming the run, the base that ``recipe_path`` names
    (``pretrained`` at ``revision``) and what to do, when ``checkpoint`` saved a fingerprint
    that ``fingerprint`` (the base loaded now, or read from its files) does not match. A
    checkpoint saved without one (before dsharp kept it), or whose ``trainer_state.json``
    cannot be read, passes quietly: nothing to compare. ``branch``: the recipe is another
    run's that starts from the checkpoint."""
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
    named = pretrained
    if revision is not None and not _is_folder(pretrained):
        named = f"{pretrained} ({_revision_words(revision)})"
    trained_from = saved.get("pretrained")
    known = isinstance(trained_from, str) and trained_from != ""
    same = known and trained_from in (pretrained, absolute_model_source(pretrained))
    then = saved.get("revision")
    back = ""
    if known and isinstance(then, str):
        back = f" (model.revision: {then})"
    elif known and "revision" in saved and then is None and revision is not None:
        back = " (no model.revision)"  # v2 kept it: the run trained on the default one
    if branch:
        what = f"{checkpoint}: trained on other base weights than {named}, the base model"
        if same:
            raise BaseMismatch(
                f"{what} {recipe_path} names ({difference}): "
                f"{_same_name_cause(saved, pretrained, revision)}"
            )
        model = trained_from if known else f"the model that the run {run} was trained from"
        raise BaseMismatch(
            f"{what} {recipe_path} names ({difference}): set model.pretrained to {model}{back}"
        )
    head = f"{run}: its checkpoint {Path(checkpoint).name} was trained on other base weights"
    if same:
        raise BaseMismatch(
            f"{head} than {named} holds now, the base model {recipe_path} names "
            f"({difference}): {_same_name_cause(saved, pretrained, revision)}"
        )
    if known:
        raise BaseMismatch(
            f"{head} than {named}, the base model {recipe_path} names ({difference}): "
            f"set model.pretrained back to {trained_from}{back}, the base the run was "
            "trained from"
        )
    raise BaseMismatch(
        f"{head} than {named}, the base model {recipe_path} names ({difference}; its "
        "recipe.yaml was changed, or that model's files were replaced): set model.pretrained "
        "back to the model the run was trained from"
    )
