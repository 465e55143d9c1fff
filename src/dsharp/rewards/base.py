"""The reward contract shared by built-in rewards and third-party plugins.

A plugin registers :class:`RewardInfo` records (name, description, differentiable, factory).
Nothing heavy is imported until ``factory(**options)`` builds the reward, so that listing
rewards stays fast. The built reward is a batched callable::

    scores, info = reward(images, prompts, metadata)

where ``images`` is a :class:`RewardImages` (float tensor in ``[0, 1]`` and PIL views of it),
``prompts`` one string per image, ``metadata`` one dict per image; ``scores`` is a float
tensor ``(B,)`` on the images' device (NaN marks a sample the reward could not score, only
when that reward was told to mark failures missing), and ``info`` a JSON-able dict.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # torch and PIL load only when images are handled: listing stays fast
    import torch
    from PIL import Image


class RewardError(RuntimeError):
    """A reward could not score its input (bad option, failing server, unparsable reply)."""


class UnscoredError(RewardError):
    """Samples a reward could not score stopped the work because its ``on_error`` is
    ``raise``: ``on_error: missing`` would have left them unscored instead, so a command can
    say how to go on (a fault in the reward is a plain ``RewardError``, whatever on_error).
    ``key``: the reward's key in its combined reward (``name``, ``name#1`` on a repeat)."""

    def __init__(self, message: str, key: str | None = None):
        super().__init__(message)
        self.key = key


class UnscoredCandidateError(UnscoredError):
    """A candidate of an inference-time method's search that its verifier could not score
    stopped sampling: a command then says how to pass over such candidates, not how to
    leave images unscored."""


class RewardImages:
    """A batch of decoded images, as a float tensor ``(B, 3, H, W)`` in ``[0, 1]`` and,
    computed on first use, as a list of RGB PIL images."""

    def __init__(self, tensor: torch.Tensor):
        if tensor.ndim != 4 or tensor.shape[1] != 3:
            raise ValueError(f"expected images (B, 3, H, W), got {tuple(tensor.shape)}")
        self.tensor = tensor
        self._pil: list[Image.Image] | None = None

    def __len__(self) -> int:
        return self.tensor.shape[0]

    @property
    def pil(self) -> list[Image.Image]:
        """The images as RGB PIL images (rounded to 8 bits), made once and shared by every
        reward of a combined batch that needs them."""
        import torch
        from PIL import Image

        if self._pil is None:
            arr = (self.tensor.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
            arr = arr.permute(0, 2, 3, 1).cpu().numpy()
            self._pil = [Image.fromarray(a, mode="RGB") for a in arr]
        return self._pil

    @classmethod
    def from_pil(cls, images: Sequence[Image.Image]) -> RewardImages:
        """A batch from image files (``dsharp rewards score``); keeps the PIL images as given,
        so a reward that reads them sees the files' exact pixels."""
        import numpy as np
        import torch

        arrays = [np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0 for im in images]
        sizes = {a.shape for a in arrays}
        if len(sizes) != 1:
            raise ValueError(f"images in one batch must share a size, got {sorted(sizes)}")
        tensor = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
        out = cls(tensor)
        out._pil = [im.convert("RGB") for im in images]
        return out


@runtime_checkable
class Reward(Protocol):
    """A built reward: batched, returns one score per image plus JSON-able info."""

    differentiable: bool

    def __call__(
        self, images: RewardImages, prompts: Sequence[str], metadata: Sequence[dict[str, Any]]
    ) -> tuple[torch.Tensor, dict[str, Any]]: ...


@dataclass(frozen=True)
class RewardInfo:
    """What a plugin registers: metadata plus a lazy factory ``factory(**options) -> Reward``.

    ``secret_options`` names options whose values must never be logged or saved.
    ``check_prompt(prompt, options)``, where given, raises ``ValueError`` saying why the reward
    built with ``options`` cannot score ``prompt``, so that commands refuse such a prompt
    before any image is drawn rather than after. ``check_options(options)``, where given,
    raises ``ValueError`` (or ``RewardError``) for an option value the factory would refuse,
    without building the reward (no weights, network or environment), so that ``dsharp
    recipes validate`` refuses it too.
    """

    name: str
    factory: Callable[..., Reward]
    description: str = ""
    differentiable: bool = False
    secret_options: tuple[str, ...] = ()
    check_prompt: Callable[[str, Mapping[str, Any]], None] | None = None
    check_options: Callable[[Mapping[str, Any]], None] | None = None
    extras: dict[str, Any] = field(default_factory=dict)
