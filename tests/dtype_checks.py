"""Dtype checks shared by the GPU tests and their CPU halves: the dtypes a checkpoint saved,
and where a LoRA's gradients would pass through fp16 tensors (the premise of preflight's
refusal of a LoRA over fp16 weights without fp16 mixed precision and its gradient scaler).

A gradient has the dtype of the forward tensor it belongs to, so an fp16 tensor that requires
grad means an fp16 gradient, which underflows below ~6e-8 without a scaler. The recorder sees
every torch call's result after autocast has picked its dtype."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch.overrides import TorchFunctionMode


def unet_file_dtypes(checkpoint: Path) -> set[str]:
    """The dtypes of a full fine-tuning checkpoint's saved UNet tensors (``F32``, ...)."""
    path = checkpoint / "model" / "unet" / "diffusion_pytorch_model.safetensors"
    with safe_open(str(path), "pt") as f:
        return {str(f.get_slice(key).get_dtype()) for key in f.keys()}  # noqa: SIM118


class HalfGradRecorder(TorchFunctionMode):
    """Counts, by function name, the calls whose result is an fp16 tensor requiring grad."""

    def __init__(self) -> None:
        super().__init__()
        self.fp16_on_grad_path: Counter[str] = Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, tuple | list) else (out,):
            if (
                isinstance(tensor, torch.Tensor)
                and tensor.dtype == torch.float16
                and tensor.requires_grad
            ):
                self.fp16_on_grad_path[getattr(func, "__name__", str(func))] += 1
        return out


def lora_noise_loss(model: Any, seed: int = 0) -> torch.Tensor:
    """A plain noise-prediction loss of ``model`` (64 x 64, two prompts), the UNet call each
    method's loss is made of, without a method's selection (which could pick another
    trajectory when the numbers differ slightly)."""
    generator = torch.Generator().manual_seed(seed)
    shape = (2, *model.latent_shape(64, 64))
    x = torch.randn(shape, generator=generator).to(model.device)
    eps = torch.randn(shape, generator=generator).to(model.device)
    t = torch.tensor([300, 700], device=model.device)
    cond = model.encode_prompt(["a cat", "a red dog"], 64, 64)
    pred = model.predict_noise(x, t, cond)
    return torch.nn.functional.mse_loss(pred.float(), eps)


def lora_grads(model: Any) -> torch.Tensor:
    """The LoRA parameters' gradients, flattened in one fp32 vector."""
    return torch.cat([p.grad.float().flatten() for p in model.trainable_parameters()])
