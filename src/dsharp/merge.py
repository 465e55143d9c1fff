"""Merge full fine-tuning runs of one base model: base + scale x their mean weight change.

Why: runs of one recipe with different training seeds move the weights in nearly unrelated
directions (on dsharp-mini's quickstart, a mean pairwise cosine of about 0.1), and what they
share is what the reward taught. Averaging the changes keeps the shared part and shrinks the
rest (``scale: 1``, a model soup); scaling the mean up (``scale: 2``) extrapolates along the
shared part. The result is written as a run folder, so ``--checkpoint OUT`` works wherever a
run does.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dsharp.base_files import files_fingerprint
from dsharp.base_fingerprint import STATE_KEY as BASE_FINGERPRINT
from dsharp.base_fingerprint import base_fingerprint, check_base_fingerprint
from dsharp.checkpoints import (
    MERGE_JSON,
    checkpoint_dir,
    checkpoint_step,
    find_model_checkpoint,
    run_dir_of,
)
from dsharp.io import atomic_directory, atomic_write_json, atomic_write_text
from dsharp.trained_fit import check_checkpoint_fits, state_dict_difference

UNET_WEIGHTS = Path("model") / "unet" / "diffusion_pytorch_model.safetensors"
#: What ``save_pretrained`` writes instead for a UNet over diffusers' shard size (10 GB: an
#: SDXL UNet in fp32): an index whose ``weight_map`` names the shard of each tensor.
UNET_INDEX = UNET_WEIGHTS.with_name(UNET_WEIGHTS.name + ".index.json")
#: The ``model`` keys that decide which base weights a run started from.
BASE_MODEL_KEYS = ("pretrained", "family", "revision", "variant")


@dataclass(frozen=True)
class MergeSource:
    """One run to merge: the checkpoint used, its step and its run's recipe."""

    given: Path
    checkpoint: Path
    step: int
    recipe: Any
    weights: tuple[Path, ...] = ()  # the files of its UNet: one, or its shards


def unet_weight_files(checkpoint: Path, label: str) -> tuple[Path, ...]:
    """The files that hold a full fine-tuning checkpoint's UNet: its one weights file, or
    every shard that its index lists; ``FileNotFoundError`` / ``ValueError`` naming ``label``
    (the run as given) and the file for one that is missing or an index that cannot be read."""
    single = checkpoint / UNET_WEIGHTS
    if single.is_file():
        return (single,)
    index = checkpoint / UNET_INDEX
    if not index.is_file():
        raise FileNotFoundError(f"{label}: {single} is missing")
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        names = sorted(set(weight_map.values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"{label}: {index}: not a weights index ({err})") from None
    if not names or not all(isinstance(n, str) and n and Path(n).name == n for n in names):
        raise ValueError(f"{label}: {index}: not a weights index (no shard file names)")
    missing = [name for name in names if not (index.parent / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{label}: {index.parent / missing[0]} is missing (a shard that {index.name} lists)"
        )
    return tuple(index.parent / name for name in names)


def check_weights_readable(files: Sequence[Path], label: str) -> None:
    """Each file's safetensors header read (not its tensors): a file cut short (a full disk,
    a copy stopped halfway) is refused in a second, not after the base model and the runs
    before it have loaded; ``ValueError`` naming ``label`` and the file."""
    from safetensors import safe_open

    for path in files:
        try:
            with safe_open(str(path), framework="pt"):
                pass
        except Exception as err:  # safetensors' own error type: a damaged or truncated file
            raise ValueError(f"{label}: {path}: cannot read weights ({err})") from None


def check_base_model_there(source: MergeSource) -> None:
    """The runs' base model findable from its name and local files alone (a folder not
    there or without a diffusers model, a hub id not cached with ``HF_HUB_OFFLINE`` set),
    said naming the run's recipe before the load would fail on it."""
    from dsharp.model_names import missing_model, not_a_model_folder, offline_uncached_model

    model = _base_model(source)
    pretrained = model["pretrained"]
    missing = missing_model(pretrained, subject="")
    if missing is not None:
        raise FileNotFoundError(f"{source.given}: model.pretrained: {missing}")
    problem = not_a_model_folder(pretrained) or offline_uncached_model(
        pretrained, model["revision"]
    )
    if problem is not None:
        raise ValueError(f"{source.given}: model.pretrained: {problem}")


def read_sources(paths: Sequence[Path]) -> list[MergeSource]:
    """Resolve run or checkpoint folders and check they can be merged, before any weights load:
    every run a full fine-tuning of the same base model, which is there, with its UNet
    weights present and readable."""
    from dsharp.checkpoints import read_run_recipe
    from dsharp.models.sd import LORA_CONFIG
    from dsharp.recipe_errors import RecipeError

    if not paths:
        raise RecipeError("merge: give at least one run folder")
    sources = []
    for path in paths:
        if not Path(path).exists():
            raise FileNotFoundError(f"{path}: no such folder")
        try:
            ckpt = find_model_checkpoint(Path(path))
        except FileNotFoundError:
            raise FileNotFoundError(
                f"{path}: no checkpoint found (expected a run folder or a checkpoint folder)"
            ) from None
        twice = [s.given for s in sources if s.checkpoint.resolve() == ckpt.resolve()]
        if twice:  # it would weigh that run double in the mean; a doubled input: exit 2
            raise RecipeError(f"{path}: the same checkpoint as {twice[0]}: give each run once")
        recipe = read_run_recipe(ckpt, label=str(path))
        if recipe.model.lora_rank or (ckpt / "model" / LORA_CONFIG).is_file():
            rank = recipe.model.lora_rank
            why = f"model.lora_rank: {rank}" if rank else "its checkpoint holds LoRA weights"
            raise ValueError(
                f"{path}: a LoRA run ({why}); merge averages full fine-tuning runs "
                "(model.lora_rank: 0)"
            )
        check_checkpoint_fits(ckpt, recipe.model, run_dir_of(ckpt) / "recipe.yaml")
        weights = unet_weight_files(ckpt, str(path))
        check_weights_readable(weights, str(path))
        step = checkpoint_step(ckpt) or 0
        sources.append(MergeSource(Path(path), ckpt, step, recipe, weights))
    first = sources[0]
    for other in sources[1:]:
        a, b = _base_model(first), _base_model(other)
        differing = [k for k in BASE_MODEL_KEYS if a[k] != b[k]]
        if differing:
            key = differing[0]
            raise ValueError(
                f"{other.given}: another base model than {first.given} "
                f"(model.{key}: {b[key]!r} vs {a[key]!r}); merge needs runs of one base"
            )
    check_base_model_there(first)  # one base for all of them, as just checked
    return sources


def _base_model(source: MergeSource) -> dict[str, Any]:
    """The run's model section, with a local folder named absolutely: runs saved before
    run folders did so name it relative to where they trained."""
    from dsharp.model_names import absolute_model_source

    model = source.recipe.model.model_dump()
    model["pretrained"] = absolute_model_source(model["pretrained"])
    return model


def merged_state(
    base: dict[str, torch.Tensor], runs: Iterable[dict[str, torch.Tensor]], scale: float
) -> dict[str, torch.Tensor]:
    """``base + scale * mean(run - base)`` per tensor, computed in float32, in base's dtypes.

    ``runs`` is consumed one at a time (a generator keeps one run's weights in memory), the
    changes summed into a float32 total."""
    total = {key: torch.zeros_like(value, dtype=torch.float32) for key, value in base.items()}
    count = 0
    for run in runs:
        for key, value in base.items():
            total[key] += run[key].float() - value.float()
        count += 1
    if not count:
        raise ValueError("merge: no run to merge")
    return {
        key: (value.float() + scale * total[key] / count).to(value.dtype).contiguous()
        for key, value in base.items()
    }


def _load_run_weights(
    source: MergeSource, base: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """The run's UNet tensors, from its one weights file or from all of its shards; a
    ``ValueError`` naming the run for a tensor that the base lacks or has in another shape."""
    from safetensors.torch import load_file

    weights: dict[str, torch.Tensor] = {}
    for path in source.weights or unet_weight_files(source.checkpoint, str(source.given)):
        try:
            weights.update(load_file(str(path)))
        except Exception as err:  # safetensors' own error type: a damaged or truncated file
            raise ValueError(f"{source.given}: {path}: cannot read weights ({err})") from None
    keys = set(base)
    if set(weights) != keys:
        missing = sorted(keys - set(weights)) or sorted(set(weights) - keys)
        raise ValueError(
            f"{source.given}: its UNet does not match the base model's ({len(weights)} tensors "
            f"vs {len(keys)}; e.g. {missing[0]})"
        )
    difference = state_dict_difference(weights, base)
    if difference is not None:
        raise ValueError(f"{source.given}: its UNet does not match the base model's ({difference})")
    return weights


def _check_bases(
    sources: Sequence[MergeSource], fingerprint_for: Callable[[MergeSource], dict | None]
) -> None:
    """Each run trained on the base weights ``fingerprint_for`` gives (None: not told),
    before any run's weights are read."""
    for source in sources:
        fingerprint = fingerprint_for(source)
        if fingerprint is None:
            continue
        model = source.recipe.model
        recipe_path = run_dir_of(source.checkpoint) / "recipe.yaml"
        check_base_fingerprint(
            source.checkpoint, fingerprint, model.pretrained, recipe_path, revision=model.revision
        )


def merge_runs(paths: Sequence[Path], out: Path, scale: float = 1.0) -> list[MergeSource]:
    """Write ``out``, a run folder whose one checkpoint holds base + scale x the mean change
    of the runs' UNets, with the first run's recipe (its ``output_dir`` set to ``out``) and a
    ``merge.json`` saying what was merged. The folder appears whole or not at all (built
    under a temp name, then renamed).
    Returns the runs as merged (checkpoint, step, recipe)."""
    from dsharp.builders import build_model
    from dsharp.preflight import check_output_folder
    from dsharp.recipe_errors import RecipeError

    out = Path(out)
    if out.exists():
        raise FileExistsError(f"--out {out}: exists; merge writes a new run folder")
    if not math.isfinite(scale):  # a bad flag value: exit 2, as a bad setting
        raise RecipeError(f"--scale must be a finite number, got {scale}")
    check_output_folder(out, "--out")  # before any weights load, not at the end
    sources = read_sources(paths)
    base_model = sources[0].recipe.model
    _check_bases(sources, lambda s: files_fingerprint(s.checkpoint, base_model))  # unloaded
    model = build_model(base_model, "cpu")
    # of the base, before the merge changes it
    pretrained = _base_model(sources[0])["pretrained"]
    fingerprint = base_fingerprint(model, pretrained, base_model.revision)
    _check_bases(sources, lambda s: fingerprint)
    base = model.unet.state_dict()  # read before load_state_dict writes the merged weights
    runs = (_load_run_weights(s, base) for s in sources)
    model.unet.load_state_dict(merged_state(base, runs, scale))

    step = max(s.step for s in sources)
    with atomic_directory(out) as tmp:
        ckpt = checkpoint_dir(tmp, step)
        model.save_trained(ckpt / "model")
        from dsharp.recipe_io import recipe_to_yaml

        recipe = sources[0].recipe.model_copy(deep=True)  # its base named as new runs name it
        recipe.model.pretrained = _base_model(sources[0])["pretrained"]
        recipe.output_dir = str(out)  # this folder's, not the first run's
        atomic_write_text(tmp / "recipe.yaml", recipe_to_yaml(recipe))
        # absolute: the record must name the runs wherever it is read from
        merged_from = [str(s.checkpoint.resolve()) for s in sources]
        atomic_write_json(
            ckpt / "trainer_state.json",
            {
                "step": step,
                "method": sources[0].recipe.method.name,
                "merged_from": merged_from,
                BASE_FINGERPRINT: fingerprint,  # its loads compare it, as a run's
            },
        )
        atomic_write_json(
            tmp / MERGE_JSON,
            {
                "scale": scale,
                "base_model": recipe.model.pretrained,
                "runs": [
                    {"checkpoint": path, "step": s.step}
                    for path, s in zip(merged_from, sources, strict=True)
                ],
            },
        )
    return sources
