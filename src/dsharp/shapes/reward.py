"""The ``shapes`` reward: the exact shapes-world verifier behind the reward contract.

Registered by ``dsharp.rewards.builtin``, which imports this module lazily.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch

from dsharp.rewards.base import RewardError, RewardImages
from dsharp.shapes.grammar import ShapesGrammarError, parse
from dsharp.shapes.verifier import verify_batch


def check_shapes_options(options: Mapping[str, Any]) -> None:
    """``ValueError`` for an option value the ``shapes`` reward refuses: checked by
    ``recipes validate`` and before a model loads, and again when the reward is built."""
    binary = options.get("binary", False)
    if not isinstance(binary, bool):
        raise ValueError(f"shapes reward option 'binary' must be true or false, got {binary!r}")
    on_error = options.get("on_error", "raise")
    if on_error not in ("raise", "missing"):
        raise ValueError(f"shapes reward on_error must be 'raise' or 'missing', got {on_error!r}")


class ShapesReward:
    """Fraction of the prompt's constraints an image meets (with ``binary``: 1 when all are
    met, else 0). Not differentiable: the verifier thresholds pixels.

    A prompt outside the shapes grammar raises :class:`RewardError`, or with
    ``on_error="missing"`` scores NaN for that sample only (its error is in ``info["errors"]``).
    """

    differentiable = False

    def __init__(self, binary: bool = False, on_error: Literal["raise", "missing"] = "raise"):
        check_shapes_options({"binary": binary, "on_error": on_error})
        self.binary = binary
        self.on_error = on_error

    def __call__(
        self, images: RewardImages, prompts: Sequence[str], metadata: Sequence[dict[str, Any]]
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        if isinstance(prompts, str) or len(prompts) != len(images):
            raise ValueError(f"shapes reward got {len(images)} images but {len(prompts)} prompts")
        errors: list[str | None] = []
        for p in prompts:
            try:
                parse(p)
                errors.append(None)
            except ShapesGrammarError as err:
                if self.on_error == "raise":
                    raise RewardError(f"shapes reward: {err}") from err
                errors.append(str(err))
        ok = [i for i, e in enumerate(errors) if e is None]
        arr = images.tensor.detach().float().permute(0, 2, 3, 1).cpu().numpy()
        scores, infos = verify_batch(arr[ok], [prompts[i] for i in ok])
        values = [math.nan] * len(prompts)
        strict: list[bool | None] = [None] * len(prompts)  # None: not scored
        constraints: list[list[dict[str, Any]]] = [[] for _ in prompts]
        for i, score, info in zip(ok, scores.tolist(), infos, strict=True):
            strict[i] = bool(info["strict"])
            values[i] = float(strict[i]) if self.binary else score
            constraints[i] = info["constraints"]
        out: dict[str, Any] = {"strict": strict, "constraints": constraints}
        if len(ok) < len(prompts):
            out["errors"] = errors
        tensor = torch.tensor(values, dtype=torch.float32, device=images.tensor.device)
        return tensor, out


def build_shapes_reward(
    *, binary: bool = False, on_error: Literal["raise", "missing"] = "raise"
) -> ShapesReward:
    """Build the shapes reward. ``binary``: score 1 only when every constraint is met;
    ``on_error``: "missing" scores a prompt outside the grammar NaN instead of raising."""
    return ShapesReward(binary=binary, on_error=on_error)
