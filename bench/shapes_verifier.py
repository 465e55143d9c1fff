"""Time the exact `shapes` verifier, a batch at once against one image at a time.

The batch is what the reward calls; both score the same generated images, in one run.

    python bench/shapes_verifier.py                 # 256 images of 32x32
    python bench/shapes_verifier.py --size 64 --images 512
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from dsharp.commands.errors import require_counts, run_script
from dsharp.shapes import generate_pairs, verify, verify_batch


def _seconds(run, repeats: int) -> float:
    """Median wall time of ``repeats`` calls of ``run`` after one warm-up call."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--size", type=int, default=32, help="Image side in pixels.")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    require_counts({f"--{name}": getattr(args, name) for name in ("images", "size", "repeats")})
    pairs = generate_pairs(args.images, seed=0, size=args.size)
    images, prompts = np.stack([p[0] for p in pairs]), [p[1] for p in pairs]
    batched = _seconds(lambda: verify_batch(images, prompts), args.repeats)
    single = _seconds(
        lambda: [verify(image, prompt) for image, prompt in zip(images, prompts, strict=True)],
        args.repeats,
    )
    per_image = 1e3 / args.images
    print(f"{args.images} images of {args.size}x{args.size}, median of {args.repeats} runs")
    print(f"verify_batch:      {batched * per_image:.3f} ms per image")
    print(f"verify, one by one: {single * per_image:.3f} ms per image")
    print(f"speed-up of the batch: {single / batched:.2f}x")


if __name__ == "__main__":
    run_script(main)
