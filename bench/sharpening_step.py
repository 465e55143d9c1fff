"""Time one SFT Diffusion-Sharpening step: dsharp's formulation vs the public code's.

dsharp rolls out the n x m trajectory steps without grad, decodes and scores them, and
recomputes only the winning trajectory with grad in one batched UNet call. The public code
keeps every trajectory's autograd graph (and decodes with grad) and back-propagates the best.
Both compute the same selection; this prints seconds per step of each, their ratio and the
step's peak memory above the resident weights (CUDA only), measured in one run on the same
model and inputs.

    python bench/sharpening_step.py                       # tiny SD on CPU
    python bench/sharpening_step.py --model /path/to/sdxl --device cuda --size 512 --dtype bf16
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from dsharp.commands.common import pick_device
from dsharp.commands.errors import require_counts, run_script
from dsharp.methods.base import Batch
from dsharp.methods.losses import path_rewards, per_step_mse, select_per_prompt
from dsharp.methods.sharpening import SFTSharpening
from dsharp.models import load_model
from dsharp.rewards.base import RewardImages
from dsharp.sampling import DDIMTables, add_noise, ddim_step


class MeanBrightness:
    """A cheap differentiable stand-in reward, so the timing is the model's."""

    differentiable = True

    def __call__(self, images: RewardImages, prompts, metadata):
        return images.tensor.mean(dim=(1, 2, 3)), {}


def public_code_step(
    model, batch: Batch, n: int, m: int, stride: int, generator: torch.Generator
) -> torch.Tensor:
    """All n trajectories batched, all m steps with grad, decode with grad; returns the
    best's loss, for the caller to back-propagate (outside autocast, as torch advises)."""
    tables = DDIMTables.from_scheduler(model.scheduler, device=model.device)
    x0 = model.encode_images(batch.images.to(model.device)).repeat_interleave(n, 0)
    height, width = batch.images.shape[-2:]  # SDXL conditions on the image size
    cond = model.encode_prompt(batch.cond_prompts, height, width).repeat_interleave(n)
    b = len(batch.prompts)
    t = torch.randint(stride * m, model.num_train_timesteps, (b,), generator=generator)
    t = t.repeat_interleave(n).to(model.device)
    eps = torch.randn(x0.shape, generator=generator).to(model.device)
    x = add_noise(tables, x0, eps, t)
    rewards, losses = [], []
    for j in range(m):
        tj = t - j * stride
        pred = model.predict_noise(x, tj, cond)
        losses.append(per_step_mse(pred, eps))
        out = ddim_step(tables, x, pred, tj, tj - stride)
        rewards.append(MeanBrightness()(RewardImages(model.decode(out.pred_x0)), [], [])[0])
        x = out.prev_sample
    step_rewards = torch.stack(rewards).detach()  # (m, b * n) on the model's device
    returns = path_rewards(step_rewards, torch.ones_like(step_rewards, dtype=torch.bool))
    best, _, _ = select_per_prompt(returns, n)
    return torch.stack(losses).mean(0)[best].mean()


def synchronize(device: torch.device) -> None:
    """Wait for ``device``'s queued kernels, so that wall time covers them: CUDA (the device
    itself, not the current one: ``--device cuda:1``), MPS and XPU run asynchronously."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type in ("mps", "xpu"):
        getattr(torch, device.type).synchronize()


def timed(fn, repeats: int, device: torch.device) -> tuple[float, float]:
    """Median seconds of ``repeats`` calls after one warm-up, and the calls' peak GiB above
    what was allocated before them (CUDA only, else NaN): the model's weights, resident for
    both formulations, would otherwise pull the memory ratio toward 1."""
    fn()
    synchronize(device)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
        resident = torch.cuda.memory_allocated(device)
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    peak = (torch.cuda.max_memory_allocated(device) - resident) / 2**30 if cuda else float("nan")
    return statistics.median(times), peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="diffusers folder (default: a tiny random SD)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda[:N], mps, xpu or auto")
    parser.add_argument("--size", type=int, default=None, help="image side in pixels")
    parser.add_argument("--batch", type=int, default=1, help="prompts per step")
    parser.add_argument("--n", type=int, default=3)
    parser.add_argument("--m", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="autocast dtype")
    args = parser.parse_args()
    counts = ("size", "batch", "n", "m", "repeats")
    require_counts({f"--{name}": getattr(args, name) for name in counts})

    device = pick_device(args.device)  # before any model loads
    if args.model is None:
        from dsharp.testing.tiny import make_tiny_sd

        with tempfile.TemporaryDirectory() as scratch:  # the weights are in memory once loaded
            model = load_model(str(make_tiny_sd(Path(scratch) / "tiny-sd")), device=device)
    else:
        model = load_model(args.model, device=device)
    size = args.size or model.default_resolution
    stride = model.num_train_timesteps // 25
    images = torch.rand(args.batch, 3, size, size)
    prompts = [f"a photo number {i}" for i in range(args.batch)]
    batch = Batch(prompts=prompts, cond_prompts=prompts, images=images)
    method = SFTSharpening(model, MeanBrightness(), size, size, n=args.n, m=args.m, stride=stride)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.dtype == "bf16")

    def dsharp_step():
        with autocast:
            loss, _ = method.compute_loss(batch, model.unet, torch.Generator().manual_seed(0))
        loss.backward()
        model.unet.zero_grad(set_to_none=True)

    def public_step():
        with autocast:
            loss = public_code_step(
                model, batch, args.n, args.m, stride, torch.Generator().manual_seed(0)
            )
        loss.backward()
        model.unet.zero_grad(set_to_none=True)

    ours, ours_mem = timed(dsharp_step, args.repeats, device)
    theirs, theirs_mem = timed(public_step, args.repeats, device)
    source = args.model or "a tiny random SD"
    print(f"model {source} device {device} size {size} batch {args.batch} n {args.n} m {args.m}")
    print(f"public-code formulation: {theirs:.4f} s/step  step peak {_gib(theirs_mem)}")
    print(
        f"dsharp (no-grad rollout, winner recomputed): {ours:.4f} s/step  "
        f"step peak {_gib(ours_mem)}"
    )
    print(f"speed ratio (public / dsharp): {theirs / ours:.2f}x")
    if device.type == "cuda":
        print(f"peak memory ratio (public / dsharp): {theirs_mem / ours_mem:.2f}x")


def _gib(value: float) -> str:
    """A step's peak memory above the resident weights; CPU runs measure none."""
    return "n/a (CUDA only)" if value != value else f"{value:.2f} GiB"


if __name__ == "__main__":
    run_script(main)
