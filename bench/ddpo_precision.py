"""Time DDPO under bf16 with and without its float32 log-prob passes, and what each buys.

Under ``train.mixed_precision=bf16`` DDPO samples and recomputes the log-probs its PPO
ratio compares in a float32 UNet pass (``method.options.fp32_log_probs: true``, the
default), because bf16 rounding alone moves the ratio past its 1e-4 clip. This runs the
same short DDPO training four ways in one process and prints, for each, the median
seconds per engine step (first step left out as warm-up), the mean ``approx_kl`` and
``clipfrac`` of the steps that reuse a round's samples (where the ratio can leave 1), and
its time against the bf16 run without float32 passes:

- ``no``: no autocast (float32 throughout; on CUDA cuDNN may still use TF32);
- ``bf16 fp32_log_probs=true``; the same with cuDNN/matmul TF32 off during the whole run,
  since a "float32" convolution on CUDA runs in TF32 by default;
- ``bf16 fp32_log_probs=false``.

    python bench/ddpo_precision.py                 # dsharp-mini on whatever device accelerate picks
    python bench/ddpo_precision.py --small         # a CPU-sized check of the script itself
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

import dsharp
from dsharp.commands.errors import require_counts, run_script

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "mini" / "ddpo.yaml"

#: (label, mixed_precision, fp32_log_probs, tf32 allowed)
SETTINGS = (
    ("no autocast (fp32)", "no", True, True),
    ("bf16, fp32 log-probs", "bf16", True, True),
    ("bf16, fp32 log-probs, TF32 off", "bf16", True, False),
    ("bf16, bf16 log-probs", "bf16", False, True),
)


@contextmanager
def tf32_allowed(allowed: bool) -> Iterator[None]:
    """cuDNN convolutions and CUDA matmuls may use TF32 only if ``allowed``; restored after."""
    before = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = allowed
    torch.backends.cuda.matmul.allow_tf32 = allowed and before[1]
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def run_once(scratch: Path, label: str, overrides: list[str]) -> dict[str, float]:
    """Train with ``overrides``; the per-step metrics of its ``metrics.jsonl``, summarised."""
    folder = scratch / label.replace(" ", "-").replace(",", "")
    recipe = dsharp.load_recipe(RECIPE, [*overrides, f"output_dir={folder}"])
    run_dir = dsharp.train(recipe, progress=False, report=False)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rows = [row for row in rows if "step_time_s" in row]
    reused = [row for row in rows if not row.get("new_round")]
    times = [row["step_time_s"] for row in rows[1:]] or [rows[0]["step_time_s"]]
    return {
        "seconds_per_step": statistics.median(times),
        "approx_kl": statistics.fmean(row["approx_kl"] for row in reused) if reused else 0.0,
        "clipfrac": statistics.fmean(row["clipfrac"] for row in reused) if reused else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8, help="engine steps (2 per round)")
    parser.add_argument("--infer-steps", type=int, default=10, help="DDIM steps per sample")
    parser.add_argument(
        "--small", action="store_true", help="2 steps, 4 DDIM steps, n 2, 3 prompts, LoRA 4"
    )
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = parser.parse_args()
    require_counts({"--steps": args.steps, "--infer-steps": args.infer_steps})
    steps, infer, n = (2, 4, 2) if args.small else (args.steps, args.infer_steps, 4)
    common = [
        f"train.max_steps={steps}",
        f"method.infer_steps={infer}",
        f"method.n={n}",
        "train.checkpoint_every=0",
        "train.seed=1",
    ]
    if args.small:  # seed 1's 3 prompts have unequal rewards: the update moves the weights
        common += ["train.batch_size=3", "model.lora_rank=4"]
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        for label, precision, fp32, tf32 in SETTINGS:
            overrides = [
                *common,
                f"train.mixed_precision={precision}",
                f"method.options.fp32_log_probs={'true' if fp32 else 'false'}",
            ]
            with tf32_allowed(tf32):
                results[label] = run_once(Path(scratch), label, overrides)
    base = results["bf16, bf16 log-probs"]["seconds_per_step"]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"DDPO on dsharp-mini, {steps} steps, {infer} DDIM steps, n {n}, device {device}")
    for label, row in results.items():
        row["time_vs_bf16_log_probs"] = row["seconds_per_step"] / base
        print(
            f"{label:32s} {row['seconds_per_step']:.4f} s/step  "
            f"x{row['time_vs_bf16_log_probs']:.2f}  approx_kl {row['approx_kl']:.3g}  "
            f"clipfrac {row['clipfrac']:.3f}"
        )
    if args.out is not None:
        tmp = args.out.with_name(f".{args.out.name}.tmp")
        tmp.write_text(json.dumps(results, indent=2) + "\n")
        tmp.replace(args.out)


if __name__ == "__main__":
    run_script(main)
