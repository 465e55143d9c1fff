"""The built-in model names and how a recipe's ``model.pretrained`` is written down, without
importing torch: ``dsharp runs``, recipe comparisons and preflight checks read them.
"""

from __future__ import annotations

import os

from dsharp.hub import user_path

EMBEDDED = {"dsharp-mini": "dsharp-mini"}
"""Model names that resolve to folders shipped inside the package (``dsharp/assets``)."""

MINI_INIT_NAMES = {"plain": "dsharp-mini-init", "binding": "dsharp-mini-init-binding"}
"""The ``model.pretrained`` name of the untrained dsharp-mini with each text-encoder kind:
``plain``, the shipped dsharp-mini's encoder (no layers, each word read on its own), and
``binding``, one hand-set layer that adds the previous two words to each word (see
:func:`dsharp.models.mini.make_binding_text_encoder`)."""

MINI_INITS = {name: kind for kind, name in MINI_INIT_NAMES.items()}
"""The untrained dsharp-mini (what ``recipes/mini/pretrain.yaml`` trains) by name, to its
text-encoder kind: built on first use in the user cache (see
:func:`dsharp.models.mini.ensure_mini_init`)."""


def is_builtin(pretrained: str) -> bool:
    """Whether ``pretrained`` names a built-in model (these win over a folder of that name)."""
    return pretrained in EMBEDDED or pretrained in MINI_INITS


def absolute_model_source(pretrained: str) -> str:
    """``pretrained`` as an absolute path when it names a local folder by a relative one, so
    that a run's saved recipe finds its base model from any folder (``dsharp eval
    --checkpoint RUN`` run elsewhere); built-in names and hub ids unchanged."""
    if is_builtin(pretrained):
        return pretrained
    path = user_path(pretrained)
    return os.path.abspath(path) if path.exists() else pretrained


def resolved_model_source(pretrained: str) -> str:
    """``pretrained`` as one name per model, to compare with: a local folder as its resolved
    path (``./m``, ``./m/``, ``~/x/m`` and a link to it are one folder); built-in names and
    hub ids as typed."""
    if is_builtin(pretrained):
        return pretrained
    path = user_path(pretrained)
    return str(path.resolve()) if path.exists() else pretrained


def builtin_near_miss(pretrained: str) -> str | None:
    """``'dsharp-mni' is neither ...; did you mean 'dsharp-mini'?`` where a slash-free,
    unknown ``pretrained`` is probably a typo of a built-in model name, else None. Hub ids of
    diffusers models name an owner (``org/name``), so a bare near-miss would only send the
    user to the hub for a model that is not there."""
    import difflib

    names = [*EMBEDDED, *MINI_INITS]
    if "/" in pretrained or pretrained in names or user_path(pretrained).exists():
        return None
    match = difflib.get_close_matches(pretrained, names, n=1, cutoff=0.75)
    if not match:
        return None
    return f"{pretrained!r} is neither a built-in model nor a folder; did you mean {match[0]!r}?"


#: What a message about a model that cannot be had from the hub tells the user to do.
MODEL_DOWNLOAD_HINT = (
    "download it where there is network (it is then cached) or give a local diffusers folder"
)


def offline_uncached_model(pretrained: str, revision: str | None = None) -> str | None:
    """``X: not in the local Hugging Face cache, and HF_HUB_OFFLINE is set; ...`` for a hub
    id whose ``model_index.json`` is not cached while ``HF_HUB_OFFLINE`` is set: its load
    cannot succeed, and the hub cache says so without diffusers (seconds to import) or the
    rewards' weights (an id that no hub id can be is said as such). None otherwise: a
    built-in name, a local path, a cached or online id. ``revision`` (a recipe's
    ``model.revision``; None: main) is the one looked for: a branch or commit cached alone
    loads offline."""
    if is_builtin(pretrained) or user_path(pretrained).exists():
        return None
    from dsharp.hub import NOT_CACHED_OFFLINE, offline_not_cached

    if not offline_not_cached(pretrained, ["model_index.json"], revision):
        return None
    return (
        invalid_hub_id(pretrained) or f"{pretrained}: {NOT_CACHED_OFFLINE}; {MODEL_DOWNLOAD_HINT}"
    )


def looks_like_model_path(pretrained: str) -> bool:
    """A local path rather than a hub id (``org/name``) or a built-in name."""
    return pretrained.startswith(("/", "./", "../", "~")) or pretrained.count("/") > 1


def missing_model(pretrained: str, *, subject: str = "model") -> str | None:
    """``model folder not found: X``, a built-in name's near miss or an invalid hub id, from
    the name alone and the files it names: what loading the model would find first, said
    before any download or heavy work (``dsharp eval``, ``sample``, ``train``); None
    otherwise. ``subject`` opens the two messages that quote the name (``model 'a b/c':
    ...``); ``""`` where the caller's own label already says what it is
    (``model.pretrained: 'a b/c': ...``)."""
    if is_builtin(pretrained) or user_path(pretrained).exists():
        return None
    if looks_like_model_path(pretrained):
        return f"model folder not found: {pretrained}"
    near = builtin_near_miss(pretrained)
    if near is not None:
        return f"{subject} {near}".lstrip()
    return invalid_hub_id(pretrained, subject=subject)


def invalid_hub_id(pretrained: str, *, subject: str = "model") -> str | None:
    """``model 'a b/c': not a local folder, ...`` (``subject`` first, see
    :func:`missing_model`) where ``pretrained`` (no built-in name, no path that exists)
    cannot be a hub id by huggingface_hub's own rule: it would otherwise be looked up in the
    cache and on the hub, and reported as not cached or not found."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(pretrained)
    except HFValidationError:
        return (
            f"{subject} {pretrained!r}: not a local folder, a built-in model or a valid "
            "Hugging Face model id (org/name of letters, digits, '-', '_' and '.')"
        ).lstrip()
    return None


def not_a_model_folder(pretrained: str) -> str | None:
    """``X: a folder without model_index.json, not a diffusers model folder`` (or a file)
    for a local path that is there but holds no diffusers model; None otherwise."""
    path = user_path(pretrained)
    if is_builtin(pretrained) or not path.exists() or (path / "model_index.json").is_file():
        return None
    what = "a file" if path.is_file() else "a folder without model_index.json"
    return f"{pretrained}: {what}, not a diffusers model folder"
