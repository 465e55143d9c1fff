"""Shared helpers of the model-based rewards: where weights come from, which device, options.

Weights are named by a local path or a Hugging Face hub id. A local path that does not exist
is an error naming the option (never a silent hub lookup); a hub id is fetched through the hub
cache, and with ``HF_HUB_OFFLINE=1`` (read when the reward is built, not when the hub library
was imported) only the cache is consulted. Without it, a download or a transformers load
(:func:`from_pretrained`) that is not cached first asks the hub once, without retries: a
machine with no network fails at once rather than after the hub client's retries (about 25 s
a file, minutes for a processor or tokenizer, which ask for several). Every failure is a
one-line :class:`RewardError` that names the reward and the option, so a recipe author knows
what to fix.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from dsharp.hub import (  # noqa: F401 (re-exported: the reward modules import them here)
    NOT_CACHED_OFFLINE,
    PathKind,
    error_line,
    hub_cached,
    hub_fetch_blocked,
    hub_offline,
    hub_unreachable,
    missing_local_path,
    offline_not_cached,
    user_path,
)
from dsharp.library_bars import library_bars_off
from dsharp.rewards.base import RewardError

if TYPE_CHECKING:
    import torch

T = TypeVar("T")


def check_str(reward: str, option: str, value: Any, *, allow_none: bool = False) -> str | None:
    """``value`` as a non-empty string (or ``None`` when allowed); else a ``ValueError``."""
    if value is None and allow_none:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValueError(
            f"{reward} reward option {option!r} must be a non-empty string, got {value!r}"
        )
    return value.strip()


def check_number(reward: str, option: str, value: Any, *, positive: bool = False) -> float:
    """``value`` as a finite float (``> 0`` with ``positive``); else a ``ValueError``."""
    import math

    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(
            f"{reward} reward option {option!r} must be a finite number, got {value!r}"
        )
    if positive and value <= 0:
        raise ValueError(f"{reward} reward option {option!r} must be > 0, got {value!r}")
    return float(value)


def check_choice(reward: str, option: str, value: Any, choices: tuple[str, ...]) -> str:
    """``value`` if it is one of ``choices``; else a ``ValueError`` listing them."""
    if value not in choices:
        listing = ", ".join(repr(c) for c in choices)
        raise ValueError(
            f"{reward} reward option {option!r} must be one of {listing}, got {value!r}"
        )
    return value


def check_device(reward: str, device: Any) -> torch.device | None:
    """``device`` as a torch device (``None`` for ``"auto"``), else a ``ValueError``: what a
    recipe's check can say without asking whether this machine has the device."""
    import torch

    if device == "auto":
        return None
    if isinstance(device, torch.device):
        return device
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(
            f"{reward} reward option 'device' must be 'auto' or a torch device, got {device!r}"
        ) from e


def resolve_device(reward: str, device: Any) -> torch.device:
    """``"auto"``: CUDA when available, else CPU; any other value must be a torch device this
    machine has, checked as ``--device`` is (:func:`dsharp.devices.pick_device`): ``cuda:3``
    on a one-GPU machine fails here, when the reward is built, not at the first image moved
    there after its weights loaded. ``recipes validate`` does not ask (see :func:`check_device`)."""
    import torch

    from dsharp.devices import pick_device

    resolved = check_device(reward, device)
    if resolved is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if resolved.type not in ("cuda", "mps", "xpu"):
        return resolved
    try:
        return pick_device(str(resolved), label=f"{reward} reward option 'device'")
    except ValueError as err:
        raise RewardError(str(err)) from None


def local_path_error(reward: str, option: str, value: str, kind: PathKind) -> str | None:
    """``{reward} reward option {option!r}: file not found: /x.pt`` where ``value`` names a
    local path that is not there as ``kind`` (:func:`dsharp.hub.missing_local_path`), else
    None. ``recipes validate`` refuses options with it before any model loads; the loaders
    below, with :func:`check_local`, when they load."""
    reason = missing_local_path(value, kind)
    return None if reason is None else f"{reward} reward option {option!r}: {reason}"


def check_local(reward: str, option: str, value: str, kind: PathKind) -> None:
    """:func:`local_path_error` as a ``RewardError``."""
    message = local_path_error(reward, option, value, kind)
    if message is not None:
        raise RewardError(message)


def resolve_file(reward: str, option: str, source: str, filename: str | None = None) -> Path:
    """A weights file from a local file, a local folder + ``filename``, or hub id + ``filename``."""
    source = check_str(reward, option, source)
    check_local(reward, option, source, "file or folder")
    path = user_path(source)
    if path.is_file():
        return path
    if path.is_dir():
        if filename and (path / filename).is_file():
            return path / filename
        what = f"no {filename} in folder" if filename else "a folder, expected a file:"
        raise RewardError(f"{reward} reward option {option!r}: {what} {path}")
    if not filename:
        raise RewardError(f"{reward} reward option {option!r}: file not found: {path}")
    return Path(hub_download(reward, option, source, filename))


def _fail_if_unreachable(
    reward: str, option: str, repo_id: str, filenames: Sequence[str], what: str, local: str
) -> None:
    """A one-line ``RewardError`` now, when none of ``filenames`` of ``repo_id`` is cached
    and ``HF_HUB_OFFLINE`` is set, or the hub cannot be reached (:func:`hub_fetch_blocked`):
    ``{what} {repo_id!r}: not in the local Hugging Face cache, and HF_HUB_OFFLINE is set``
    or ``...: the hub could not be reached (...)``, saying to give a local ``local``."""
    if offline_not_cached(repo_id, filenames):  # at once, before any loader is imported
        raise RewardError(
            f"{reward} reward option {option!r}: {what} {repo_id!r}: {NOT_CACHED_OFFLINE}; "
            f"download it where there is network (it is then cached) or give a local {local}"
        )
    reason = hub_fetch_blocked(repo_id, filenames)
    if reason is not None:
        raise RewardError(
            f"{reward} reward option {option!r}: {what} {repo_id!r}: the hub could not be "
            f"reached ({reason}); give a local {local} instead, or download it where there is "
            "network and set HF_HUB_OFFLINE=1 (the cache is then used)"
        )


def hub_download(reward: str, option: str, repo_id: str, filename: str) -> str:
    """``hf_hub_download`` honouring ``HF_HUB_OFFLINE``; errors become one-line ``RewardError``."""
    from huggingface_hub import hf_hub_download

    _fail_if_unreachable(
        reward, option, repo_id, [filename], f"cannot get {filename} from hub repo", "path"
    )
    offline = hub_offline()
    try:
        return hf_hub_download(repo_id=repo_id, filename=filename, local_files_only=offline)
    except Exception as e:  # network, missing repo/file, not cached while offline
        hint = " (HF_HUB_OFFLINE is set and it is not in the hub cache)" if offline else ""
        raise RewardError(
            f"{reward} reward option {option!r}: cannot get {filename} from hub repo "
            f"{repo_id!r}{hint}; give a local path instead ({error_line(e)})"
        ) from e


#: What a transformers loader reads from a hub repo, for :func:`from_pretrained`'s ``files``:
#: it counts as cached when one of them is; the last one is asked for when none is.
MODEL_FILES = ("config.json",)
PROCESSOR_FILES = ("processor_config.json", "tokenizer_config.json", "preprocessor_config.json")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json")


@dataclass(frozen=True)
class Source:
    """Where :func:`from_pretrained` loads from, checked by :func:`locate`."""

    target: str  # a local folder, or a hub id
    offline: bool  # HF_HUB_OFFLINE was set
    cache_only: bool  # a hub id loaded from the cache alone


def locate(reward: str, option: str, source: str, *, files: Sequence[str] = MODEL_FILES) -> Source:
    """Check ``source`` (a local folder or a hub id) before its loader is imported: a
    missing local folder (:func:`check_local`) and, for a hub id none of whose ``files`` (see
    :data:`MODEL_FILES`) is cached, ``HF_HUB_OFFLINE`` or a hub that cannot be reached are
    one-line ``RewardError`` at once, not after seconds of imports or the hub client's
    retries of each file the loader asks for (minutes for a processor). A cached hub id is
    loaded from the cache alone when the hub cannot be reached (one request tells): the
    loader would otherwise retry each optional file the cache does not record as missing."""
    source = check_str(reward, option, source)
    check_local(reward, option, source, "folder")
    path = user_path(source)
    if path.exists():
        return Source(str(path), offline=False, cache_only=False)
    _fail_if_unreachable(reward, option, source, files, "cannot load hub repo", "folder")
    offline = hub_offline()
    # Not cached, the hub answered above; cached, it is asked here (once, no retries).
    cache_only = offline or (hub_cached(source, files) and hub_unreachable(source, files[-1]))
    return Source(source, offline, cache_only=bool(cache_only))


def from_pretrained(
    reward: str,
    option: str,
    loader: Callable[..., T],
    source: str | Source,
    *,
    files: Sequence[str] = MODEL_FILES,
    **kwargs: Any,
) -> T:
    """``loader(source, **kwargs)`` for a local folder or a hub id, honouring
    ``HF_HUB_OFFLINE``; ``source`` is checked by :func:`locate` (give its result to check
    before importing the loader); a failed load is a one-line ``RewardError``."""
    where = source if isinstance(source, Source) else locate(reward, option, source, files=files)
    if where.cache_only:
        kwargs.setdefault("local_files_only", True)
    try:
        with library_bars_off():  # the model's per-load bars, noise beside dsharp's own
            return loader(where.target, **kwargs)
    except Exception as e:
        if where.offline:
            hint = " (HF_HUB_OFFLINE is set and it is not in the hub cache)"
        elif where.cache_only:
            hint = " (the hub could not be reached and the hub cache lacks some of it)"
        else:
            hint = ""
        raise RewardError(
            f"{reward} reward option {option!r}: cannot load {where.target!r}{hint} "
            f"({error_line(e)})"
        ) from e


def load_state_dict(reward: str, option: str, path: Path) -> dict[str, Any]:
    """A state dict from ``.safetensors`` or a torch pickle (``weights_only``); a top-level
    ``{"state_dict": ...}`` wrapper is unwrapped."""
    import torch

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise RewardError(
            f"{reward} reward option {option!r}: cannot read weights {path}: {error_line(e)}"
        ) from e
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(k, str) for k in state):
        raise RewardError(f"{reward} reward option {option!r}: {path} holds no state dict")
    return dict(state)


def strip_prefix(state: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """Keys without a leading ``prefix`` (``module.`` from DataParallel checkpoints)."""
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix) :]: v for k, v in state.items()}
    return dict(state)


def check_batch(reward: str, n_images: int, prompts: Any) -> list[str]:
    """The prompts as a list, one per image; else a ``ValueError``."""
    if isinstance(prompts, str) or len(prompts) != n_images:
        count = 1 if isinstance(prompts, str) else len(prompts)
        raise ValueError(f"{reward} reward got {n_images} images but {count} prompts")
    return [str(p) for p in prompts]


def unique_prompts(prompts: list[str]) -> tuple[list[str], list[int]]:
    """Distinct prompts in first-seen order and each prompt's index among them, so text is
    encoded once per distinct prompt (trajectories of one prompt share it)."""
    order = list(dict.fromkeys(prompts))
    where = {p: i for i, p in enumerate(order)}
    return order, [where[p] for p in prompts]
