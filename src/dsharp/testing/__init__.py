"""Helpers for tests and examples: tiny random models built from the real classes."""

from dsharp.testing.tiny import TINY_RESOLUTION, make_tiny_sd, make_tiny_sdxl

__all__ = ["TINY_RESOLUTION", "make_tiny_sd", "make_tiny_sdxl"]
