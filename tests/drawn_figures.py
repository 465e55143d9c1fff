"""Figures kept instead of saved, for tests that read what a PNG would show (titles, axes,
labels) without writing or decoding an image."""

from __future__ import annotations

from types import ModuleType

import pytest
from matplotlib.figure import Figure


def drawn_figures(monkeypatch: pytest.MonkeyPatch, *modules: ModuleType) -> list[Figure]:
    """The list that each figure ``modules`` save with their ``atomic_save_png`` is appended
    to, in the order drawn; no file is written."""
    drawn: list[Figure] = []

    def keep(fig: Figure, path: object, dpi: object = None) -> None:
        drawn.append(fig)

    for module in modules:
        monkeypatch.setattr(module, "atomic_save_png", keep)
    return drawn
