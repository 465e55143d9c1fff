"""Model adapters: every text-to-image model sits behind :class:`DiffusionModel`."""

from dsharp.models.base import Conditioning, DiffusionModel
from dsharp.models.loading import load_model, resolve_pretrained

__all__ = ["Conditioning", "DiffusionModel", "load_model", "resolve_pretrained"]
