"""Exact network-evaluation (NFE) counting: every UNet forward, per image.

Methods never report their own cost: :class:`NFECounter` wraps ``model.predict_noise`` while
it is active and adds the batch size of every call, so a classifier-free-guidance call on
``[uncond, cond]`` counts 2 per image, a lookahead on ``K`` candidates counts ``K`` (or ``2K``),
and whatever a method does, the count is what the UNet actually ran.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from dsharp.models.base import DiffusionModel

if TYPE_CHECKING:
    import torch


class NFECounter:
    """Counts UNet rows (one row = one image's forward pass) through ``model.predict_noise``.

    Use as a context manager; counters nest (each restores what it replaced). ``rows`` is
    the total; :meth:`per_image` divides by the number of images generated.
    """

    def __init__(self, model: DiffusionModel, on_rows: Callable[[int], None] | None = None):
        self.model = model
        self.rows = 0
        self.calls = 0
        self.on_rows = on_rows  # told the rows of each call once it ran (a progress bar)
        self._saved: tuple[bool, Any] | None = None

    def __enter__(self) -> NFECounter:
        if self._saved is not None:
            raise RuntimeError("this NFECounter is already active")
        own = vars(self.model)
        self._saved = ("predict_noise" in own, own.get("predict_noise"))
        inner = self.model.predict_noise

        def counted(latents: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            self.rows += int(latents.shape[0])
            self.calls += 1
            out = inner(latents, *args, **kwargs)
            if self.on_rows is not None:
                self.on_rows(int(latents.shape[0]))
            return out

        self.model.predict_noise = counted  # type: ignore[method-assign]
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        had, previous = self._saved  # type: ignore[misc]
        if had:
            self.model.predict_noise = previous  # type: ignore[method-assign]
        else:
            del self.model.predict_noise
        self._saved = None

    def per_image(self, images: int) -> float:
        """UNet forwards per image for ``images`` generated images."""
        if images < 1:
            raise ValueError(f"images must be >= 1, got {images}")
        return self.rows / images


def count_nfe(model: DiffusionModel, on_rows: Callable[[int], None] | None = None) -> NFECounter:
    """``with count_nfe(model) as counter: ...``; then ``counter.rows`` UNet rows ran.
    ``on_rows`` is called with the rows of each UNet call after it ran."""
    return NFECounter(model, on_rows)
