"""Training curves of a run: ``metrics.jsonl`` drawn as ``training_curves.png``.

Why: a run's step rows are noisy (each step scores a few prompts), and whether the loss or
the reward moved over a run is quicker to see on a smoothed curve than to read off rows.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

from dsharp.io import atomic_write_bytes, read_jsonl

CURVES_PNG = "training_curves.png"  # the file name in a run folder

# One panel per entry, in this order; a panel is drawn when at least one of its keys was logged.
PANELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("loss", ("loss",)),
    ("reward", ("reward", "reward_best", "reward_worst", "sample_reward")),
    ("implicit accuracy", ("implicit_acc",)),
)


def _series(rows: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """Steps and finite values of ``key`` (rows without it, or NaN, are skipped)."""
    steps, values = [], []
    for row in rows:
        value = row.get(key)
        if isinstance(value, int | float) and math.isfinite(value) and "step" in row:
            steps.append(int(row["step"]))
            values.append(float(value))
    return steps, values


def moving_average(values: list[float], window: int) -> list[float]:
    """Centred mean over ``window`` values (fewer at the ends), same length: a trailing
    mean would lag the curve by half a window."""
    half = max(0, window // 2)
    prefix = [0.0]
    for v in values:
        prefix.append(prefix[-1] + v)
    out = []
    for i in range(len(values)):
        lo, hi = max(0, i - half), min(len(values), i + half + 1)
        out.append((prefix[hi] - prefix[lo]) / (hi - lo))
    return out


def plot_training_curves(metrics: Path, out: Path) -> Path | None:
    """Draw ``metrics`` (a run's metrics.jsonl) into the PNG ``out``, written atomically.

    Each panel shows the raw step values faintly and a centred mean over about sqrt(steps)
    steps (7 of 50, 77 of 6000): smooth enough to read, narrow enough to keep the shape.
    Returns ``out``, or None when no step logged a plotted key.
    """
    rows = [r for r in read_jsonl(metrics) if "step" in r]
    panels = []
    for title, keys in PANELS:
        lines = [(k, *_series(rows, k)) for k in keys]
        lines = [line for line in lines if line[1]]
        if lines:
            panels.append((title, lines))
    if not panels:
        return None

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2), squeeze=False)
    for ax, (title, lines) in zip(axes[0], panels, strict=True):
        for key, steps, values in lines:
            window = max(1, round(math.sqrt(len(values))))
            (raw,) = ax.plot(steps, values, linewidth=0.6, alpha=0.3)
            label = key if window == 1 else f"{key} (mean of {window} steps)"
            ax.plot(steps, moving_average(values, window), color=raw.get_color(), label=label)
        values_all = [v for _, _, values in lines for v in values]
        if title == "loss" and min(values_all) > 0 and max(values_all) > 20 * min(values_all):
            ax.set_yscale("log")  # e.g. a pretraining loss falling by orders of magnitude
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(out, buf.getvalue())
    return out
