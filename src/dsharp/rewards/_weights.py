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
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from dsharp.hub import (  # noqa: F401 (re-exported: the reward modules import them here)
    error_line,
    exception_chain,
    hub_cached,
    hub_fetch_blocked,
    hub_offline,
    hub_unreachable,
    looks_local,
)
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


def resolve_device(reward: str, device: Any) -> torch.device:
    """``"auto"``: CUDA when available, else CPU; any other value must be a torch device."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(device, torch.device):
        return device
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(
            f"{reward} reward option 'device' must be 'auto' or a torch device, got {device!r}"
        ) from e
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise RewardError(
            f"{reward} reward option 'device' is {device!r} but CUDA is not available"
        )
    return resolved


def resolve_file(reward: str, option: str, source: str, filename: str | None = None) -> Path:
    """A weights file from a local file, a local folder + ``filename``, or hub id + ``filename``."""
    source = check_str(reward, option, source)
    path = Path(source).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        if filename and (path / filename).is_file():
            return path / filename
        what = f"no {filename} in folder" if filename else "a folder, expected a file:"
        raise RewardError(f"{reward} reward option {option!r}: {what} {path}")
    if looks_local(source) or not filename:
        raise RewardError(f"{reward} reward option {option!r}: file not found: {path}")
    return Path(hub_download(reward, option, source, filename))


def _fail_if_unreachable(
    reward: str, option: str, repo_id: str, filenames: Sequence[str], what: str, local: str
) -> None:
    """A one-line ``RewardError`` now, when ``filenames`` of ``repo_id`` are not cached and
    the hub cannot be reached (:func:`hub_fetch_blocked`): ``{what} {repo_id!r}: the hub
    could not be reached (...)``, saying to give a local ``local`` or to work offline."""
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


def from_pretrained(
    reward: str,
    option: str,
    loader: Callable[..., T],
    source: str,
    *,
    files: Sequence[str] = MODEL_FILES,
    **kwargs: Any,
) -> T:
    """``loader(source, **kwargs)`` for a local folder or a hub id, honouring
    ``HF_HUB_OFFLINE``; a missing local folder or a failed load is a one-line ``RewardError``.

    A hub id none of whose ``files`` (see :data:`MODEL_FILES`) is cached fails at once when
    the hub cannot be reached (:func:`hub_fetch_blocked`), rather than after the hub client's
    retries of each file the loader asks for (minutes for a processor). A cached one is
    loaded from the cache alone when the hub cannot be reached (one request tells): the
    loader would otherwise retry each optional file the cache does not record as missing."""
    source = check_str(reward, option, source)
    path = Path(source).expanduser()
    if looks_local(source) and not path.exists():
        raise RewardError(f"{reward} reward option {option!r}: folder not found: {path}")
    target = str(path) if path.exists() else source
    offline = hub_offline()
    cache_only = offline and not path.exists()
    if not path.exists():
        _fail_if_unreachable(reward, option, source, files, "cannot load hub repo", "folder")
        # Not cached, the hub answered above; cached, it is asked here (once, no retries).
        if not offline and hub_cached(source, files) and hub_unreachable(source, files[-1]):
            cache_only = True
    if cache_only:
        kwargs.setdefault("local_files_only", True)
    try:
        return loader(target, **kwargs)
    except Exception as e:
        if offline:
            hint = " (HF_HUB_OFFLINE is set and it is not in the hub cache)"
        elif cache_only:
            hint = " (the hub could not be reached and the hub cache lacks some of it)"
        else:
            hint = ""
        raise RewardError(
            f"{reward} reward option {option!r}: cannot load {target!r}{hint} ({error_line(e)})"
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
