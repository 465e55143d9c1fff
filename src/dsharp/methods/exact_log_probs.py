"""Float32 UNet passes for the log-probs that DDPO-IS and D3PO compare, under bf16/fp16 autocast.

Why: those methods compare log-probs of one stored transition under two sets of weights
(``p_theta / p_old``, ``pi_theta / pi_ref``) against tight bands (DDPO clip 1e-4, D3PO eps
0.1). A bf16 UNet output carries ~1% rounding error, and that error is not a smooth
function of the weights: one AdamW step of 3e-5 reshuffles it. The DDIM log-prob divides
the error of the mean by the step's std, which is ~0.01 at the last stochastic steps, so a
bf16 log-prob moves by ~0.4 when the weights barely move (fp32: ~1e-3), and the ratio
clips on noise (measured on dsharp-mini, LoRA 4, 4 steps; the batch layout and the
log-prob arithmetic, already float32, add nothing).

What stays in bf16: the pass that carries gradients (its activations are what costs
memory). Its gradient is applied at the float32 mean (see :func:`exact_noise`), so the
coefficient ``(x_prev - mean) / std^2`` is not swamped by the same noise either. The cost:
sampling (no grad) runs in float32, and each trained chunk takes one more, no-grad,
float32 UNet pass (the reference's pass is float32 instead of bf16).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from dsharp.models.base import DiffusionModel


def _autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The dtype autocast computes in on ``device``'s type, or None when it is off."""
    kind = device.type
    if not torch.is_autocast_enabled(kind):
        return None
    return torch.get_autocast_dtype(kind)


def needs_float32_pass(model: DiffusionModel) -> bool:
    """Whether log-probs would come from a reduced-precision UNet pass that a float32 pass
    can replace: autocast is on in bf16/fp16 and the UNet's weights are float32. A LoRA over
    a bf16/fp16 base (``model.weight_dtype``) has no float32 weights to run: its pass would
    need a float32 copy of the UNet, the memory that setting saves, so its ratios keep the
    rounding (dsharp-mini, LoRA 4, DDPO step 2: approx_kl 0.057, clipfrac 1.0)."""
    dtype = _autocast_dtype(model.device)
    if dtype is None or dtype == torch.float32:
        return False
    return all(p.dtype == torch.float32 for p in model.unet.parameters())


@contextlib.contextmanager
def float32_forward(model: DiffusionModel) -> Iterator[None]:
    """Run ``model``'s UNet (policy or reference) in float32 inside this context.

    Turns autocast off, and undoes for the duration the autocast wrapper that
    ``accelerate.prepare`` puts on the UNet's ``forward`` (it keeps the plain one as
    ``_original_forward``), which would otherwise turn autocast back on inside the call.
    """
    unet = model.unet
    patched = "_original_forward" in vars(unet) and "forward" in vars(unet)
    wrapped = vars(unet).get("forward")
    if patched:
        unet.forward = unet._original_forward
    try:
        with torch.autocast(model.device.type, enabled=False):
            yield
    finally:
        if patched:
            unet.forward = wrapped


def exact_noise(value: torch.Tensor, grad: torch.Tensor | None) -> torch.Tensor:
    """``value`` (float32 pass, no grad) carrying the gradient of ``grad`` (the reduced-
    precision pass): equal to ``value`` bit for bit, since ``grad - grad.detach()`` is 0, and
    a log-prob of it differentiates as ``d lp / d eps`` at ``value`` times ``d grad / d theta``."""
    if grad is None or not grad.requires_grad:
        return value
    return value + (grad - grad.detach())
