"""Helpers for tests and examples: tiny random models built from the real classes.

The names load :mod:`dsharp.testing.tiny` on first use, so that ``python -m
dsharp.testing.tiny`` does not find that module already imported by its package."""

from __future__ import annotations

from typing import Any

__all__ = ["TINY_RESOLUTION", "make_tiny_sd", "make_tiny_sdxl"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from dsharp.testing import tiny

        return getattr(tiny, name)
    raise AttributeError(f"module 'dsharp.testing' has no attribute {name!r}")
