"""Time an SDXL-sized UNet with random weights on one device, training and inference.

The UNet is diffusers' real class with SDXL base's config, built on the device (nothing is
downloaded). A training step is fp32 weights under fp16/bf16 autocast, forward and backward,
as dsharp's full fine-tuning runs it (with gradient checkpointing, `model.gradient_checkpointing`,
unless --no-checkpointing); an inference call is a forward with the weights cast to
fp16/bf16; each at every batch size.

    python bench/unet_step.py --device cuda --out unet_step.json
    python bench/unet_step.py --device cpu --small --repeats 1    # a dry run of the script

Prints one line per case and writes them as JSON (``--out``): median seconds per call,
latent images per second, and the peak memory of the calls (CUDA only); a case that runs out
of memory is recorded as such and the others still run.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from dsharp.commands.errors import require_counts, run_script

#: SDXL base 1.0's UNet (stabilityai/stable-diffusion-xl-base-1.0, unet/config.json): 2.6B
#: parameters, 128 x 128 latents for 1024 x 1024 images, 77 tokens of 2048-wide text states.
SDXL = {
    "sample_size": 128,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "block_out_channels": (320, 640, 1280),
    "layers_per_block": 2,
    "transformer_layers_per_block": (1, 2, 10),
    "attention_head_dim": (5, 10, 20),
    "cross_attention_dim": 2048,
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
}
SDXL_TEXT = {"tokens": 77, "pooled": 1280}
#: The same architecture, small enough for a CPU dry run.
SMALL = {
    **SDXL,
    "sample_size": 16,
    "block_out_channels": (32, 64, 64),
    "transformer_layers_per_block": (1, 1, 1),
    "attention_head_dim": (2, 4, 4),
    "cross_attention_dim": 64,
    "addition_time_embed_dim": 8,
    "projection_class_embeddings_input_dim": 32 + 6 * 8,
}
SMALL_TEXT = {"tokens": 8, "pooled": 32}
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def build_unet(config: dict[str, Any], device: torch.device) -> torch.nn.Module:
    """The UNet with random weights, made on ``device`` (an SDXL-sized one made on the CPU
    takes minutes to initialise)."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    with device:
        return UNet2DConditionModel(**config)


def inputs(config: dict, text: dict, batch: int, device: torch.device) -> dict[str, Any]:
    """One call's arguments: noisy latents, timesteps, text states and SDXL's added
    conditioning (pooled text embeds and the six size/crop numbers)."""
    size = config["sample_size"]
    generator = torch.Generator().manual_seed(batch)
    latents = torch.randn(batch, config["in_channels"], size, size, generator=generator)
    states = torch.randn(batch, text["tokens"], config["cross_attention_dim"], generator=generator)
    pixels = float(size * 8)
    return {
        "sample": latents.to(device),
        "timestep": torch.randint(0, 1000, (batch,), generator=generator).to(device),
        "encoder_hidden_states": states.to(device),
        "added_cond_kwargs": {
            "text_embeds": torch.randn(batch, text["pooled"], generator=generator).to(device),
            "time_ids": torch.tensor([[pixels, pixels, 0.0, 0.0, pixels, pixels]] * batch).to(
                device
            ),
        },
        "return_dict": False,
    }


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, repeats: int, device: torch.device) -> tuple[float, float | None]:
    """Median seconds of ``repeats`` calls after one warm-up, and their peak GiB (CUDA)."""
    fn()
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return statistics.median(times), peak


def train_case(unet, args_, dtype, device, repeats: int) -> tuple[float, float | None]:
    """Forward under autocast, backward outside it (as the engine steps), grads dropped."""

    def step():
        with torch.autocast(device.type, dtype=dtype):
            out = unet(**args_)[0]
        out.float().square().mean().backward()
        unet.zero_grad(set_to_none=True)

    try:
        return timed(step, repeats, device)
    finally:  # a step that ran out of memory mid-backward must not leave its grads to the next
        unet.zero_grad(set_to_none=True)


def infer_case(unet, args_, dtype, device, repeats: int) -> tuple[float, float | None]:
    """A no-grad forward of the UNet with its weights in ``dtype``."""
    cast = dict(args_)
    cast["sample"] = args_["sample"].to(dtype)
    cast["encoder_hidden_states"] = args_["encoder_hidden_states"].to(dtype)
    cast["added_cond_kwargs"] = {k: v.to(dtype) for k, v in args_["added_cond_kwargs"].items()}

    @torch.no_grad()
    def forward():
        unet(**cast)

    return timed(forward, repeats, device)


def run_case(mode: str, fn, batch: int, name: str) -> dict[str, Any]:
    """One case's row; out of memory is a result (the row says so), not the end of the run."""
    row: dict[str, Any] = {"mode": mode, "dtype": name, "batch": batch}
    try:
        seconds, peak = fn()
        row.update(seconds=seconds, images_per_s=batch / seconds, peak_gib=peak)
    except torch.OutOfMemoryError as err:
        row["error"] = f"out of memory: {str(err).splitlines()[0]}"
    except RuntimeError as err:  # an autocast dtype this device lacks, say
        row["error"] = str(err).splitlines()[0]
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return row


def main() -> None:
    from dsharp.commands.common import pick_device

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cpu, cuda[:N] or auto")
    parser.add_argument("--dtypes", default="fp16,bf16", help="comma-separated: fp16, bf16")
    parser.add_argument("--batches", default="1,4", help="comma-separated batch sizes")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--small", action="store_true", help="a tiny UNet (dry run on CPU)")
    parser.add_argument(
        "--no-checkpointing",
        action="store_true",
        help="train without gradient checkpointing (more memory; SDXL at batch 4 may not fit)",
    )
    parser.add_argument("--out", type=Path, help="write the results here as JSON")
    args = parser.parse_args()
    names = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    unknown = [d for d in names if d not in DTYPES]
    if unknown or not names:
        raise ValueError(f"--dtypes: expected fp16 and/or bf16, got {args.dtypes!r}")
    try:
        batches = [int(b) for b in args.batches.split(",")]
    except ValueError:
        said = f"expected comma-separated counts, got {args.batches!r}"
        raise ValueError(f"--batches: {said}") from None
    require_counts({"--repeats": args.repeats, "--batches": min(batches)})
    device = pick_device(args.device)
    config, text = (SMALL, SMALL_TEXT) if args.small else (SDXL, SDXL_TEXT)

    unet = build_unet(config, device)
    params = sum(p.numel() for p in unet.parameters())
    checkpointing = not args.no_checkpointing
    if checkpointing:
        unet.enable_gradient_checkpointing()
    unet.train()
    rows = []

    def cases(mode: str, case, name: str) -> None:
        """Each batch size of one mode and dtype: a row each, printed as it comes."""
        for batch in batches:
            call = inputs(config, text, batch, device)
            rows.append(
                run_case(
                    mode,
                    functools.partial(case, unet, call, DTYPES[name], device, args.repeats),
                    batch,
                    name,
                )
            )
            print(_line(rows[-1]), flush=True)

    for name in names:
        cases("train", train_case, name)
    unet.requires_grad_(False)
    unet.eval()
    for name in names:
        torch.nn.Module.to(unet, DTYPES[name])  # diffusers' own .to warns about fp32 modules
        cases("infer", infer_case, name)
    result = {
        "model": "tiny SDXL-shaped UNet" if args.small else "SDXL-sized UNet (random weights)",
        "parameters": params,
        "latent_side": config["sample_size"],
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "gradient_checkpointing": checkpointing,
        "repeats": args.repeats,
        "cases": rows,
    }
    if args.out is not None:
        from dsharp.io import atomic_write_text

        atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")


def _line(row: dict[str, Any]) -> str:
    head = f"{row['mode']:5s} {row['dtype']} batch {row['batch']}:"
    if "error" in row:
        return f"{head} {row['error']}"
    peak = "n/a" if row["peak_gib"] is None else f"{row['peak_gib']:.1f} GiB"
    return f"{head} {row['seconds']:.4f} s/call, {row['images_per_s']:.2f} images/s, peak {peak}"


if __name__ == "__main__":
    run_script(main)
