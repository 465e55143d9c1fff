"""dsharp: Diffusion-Sharpening and its baselines for text-to-image diffusion models."""

__version__ = "0.1.0.dev0"
