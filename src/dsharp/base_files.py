"""A checkpoint's base fingerprint read from the base model's weight files, before the
model loads, so that a checkpoint trained on other base weights is refused in a second
rather than after loading an SDXL base (a minute, many GB).

Only the sampled values are read (``safetensors``' ``get_slice``: the file's header and a
few bytes per value), and only where the file is certainly the one the load will read:

- a local folder's ``{component}/diffusion_pytorch_model[.variant].safetensors`` (diffusers)
  or ``model[.variant].safetensors`` (transformers), unsharded (no ``*.index[.variant].json``
  beside);
- the same file of a hub id from the Hugging Face cache, only where the load reads that
  snapshot too: ``HF_HUB_OFFLINE`` set, or ``model.revision`` a full commit hash (online,
  a branch may have moved on the hub since the cache was filled). Nothing is downloaded.

Anything else (``.bin`` weights, shards, a name missing from the file, a file that cannot
be read) gives no values for that component, and the check after the load decides. So this
can only refuse earlier what that check would refuse: it compares the same sampled names
with the same tolerance, and says the same line.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from dsharp.base_fingerprint import (
    SCHEME,
    STATE_KEY,
    parameter_name,
    saved_components,
)

_DIFFUSERS_WEIGHTS = "diffusion_pytorch_model"
_TRANSFORMERS_WEIGHTS = "model"
_FILE_STEMS = {
    "unet": _DIFFUSERS_WEIGHTS,
    "text_encoder": _TRANSFORMERS_WEIGHTS,
    "text_encoder_2": _TRANSFORMERS_WEIGHTS,
}
_KEY = re.compile(r"(?P<name>.+)\[(?P<position>\d+)\]")
_COMMIT = re.compile(r"[0-9a-f]{40}")


def _cached_file(source: str, revision: str | None, filename: str) -> Path | None:
    """The cached hub file that a load of ``source`` at ``revision`` reads, where that is
    certain without asking the hub; else None."""
    from dsharp.hub import hub_offline

    if not (hub_offline() or (revision is not None and _COMMIT.fullmatch(revision))):
        return None
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(source, filename, revision=revision)
    return Path(found) if isinstance(found, str) else None


def _weights_file(
    source: str, revision: str | None, variant: str | None, component: str
) -> Path | None:
    """The one unsharded safetensors file a load reads ``component``'s weights from."""
    stem = _FILE_STEMS[component]
    name = f"{component}/{stem}{f'.{variant}' if variant else ''}.safetensors"
    folder = Path(source)
    path = folder / name if folder.is_dir() else _cached_file(source, revision, name)
    if path is None or not path.is_file():
        return None
    if any(_is_index(p.name, variant) for p in path.parent.iterdir()):
        return None  # sharded beside it: which one loads is the library's choice
    return path


def _is_index(name: str, variant: str | None) -> bool:
    """Whether ``name`` is a shard index: ``NAME.index.json``, or a variant's
    ``NAME.index.VARIANT.json`` (as diffusers and transformers name it)."""
    return name.endswith(".index.json") or (
        variant is not None and name.endswith(f".index.{variant}.json")
    )


def _unravel(position: int, shape: list[int]) -> tuple[int, ...]:
    index = []
    for size in reversed(shape):
        index.append(position % size)
        position //= size
    return tuple(reversed(index))


def _read_values(path: Path, keys: list[str]) -> dict[str, float] | None:
    """``{"name[i]": value}`` for ``keys`` read from ``path``; None when any cannot be."""
    from safetensors import safe_open

    values = {}
    with safe_open(str(path), framework="pt") as weights:
        stored = {parameter_name(k): k for k in weights.keys()}  # noqa: SIM118 (not a dict)
        for key in keys:
            match = _KEY.fullmatch(key)
            if match is None or match["name"] not in stored:
                return None
            part = weights.get_slice(stored[match["name"]])
            shape = list(part.get_shape())
            position = int(match["position"])
            if len(shape) < 2 or position >= math.prod(shape):
                return None
            index = _unravel(position, shape)
            value = part[tuple(slice(i, i + 1) for i in index)]
            values[key] = float(value.reshape(-1)[0].float())
    return values


def files_fingerprint(checkpoint: Path, model: Any) -> dict[str, Any] | None:
    """The base fingerprint of ``model`` (a recipe's model section) for the values that
    ``checkpoint`` saved, read from the base's files without loading it; only components
    whose values could all be read. None when there is nothing to compare."""
    from dsharp.checkpoints import read_trainer_state
    from dsharp.models.loading import resolve_pretrained

    try:
        saved = saved_components(read_trainer_state(checkpoint).get(STATE_KEY))
        if not saved:
            return None
        source = resolve_pretrained(model.pretrained)
    except Exception:  # noqa: BLE001 (the load that follows says what is wrong)
        return None
    components = {}
    for component, keys in saved.items():
        if component not in _FILE_STEMS:
            continue
        try:
            path = _weights_file(source, model.revision, model.variant, component)
            values = None if path is None else _read_values(path, list(keys))
        except Exception:  # noqa: BLE001 (a damaged file: the load names it)
            values = None
        if values:
            components[component] = values
    if not components:
        return None
    return {
        "scheme": SCHEME,
        "pretrained": model.pretrained,
        "revision": model.revision,
        "components": components,
    }
