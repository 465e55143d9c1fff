"""Training curves of a run: ``metrics.jsonl`` drawn as ``training_curves.png``.

Why: a run's step rows are noisy (each step scores a few prompts), and whether the loss or
the reward moved over a run is quicker to see on a smoothed curve than to read off rows.
The series and smoothing helpers here also draw the study figures (``dsharp.study``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dsharp.io import atomic_save_png, pyplot, read_jsonl

CURVES_PNG = "training_curves.png"  # the file name in a run folder

#: Up to this many steps a curve's values are also drawn as dots: one step's line is invisible.
FEW_STEPS = 20

# One panel per entry (title, y axis label, keys), in this order; a panel is drawn when at
# least one of its keys was logged. The y label says what the numbers are: a bare axis of
# 0.6 .. 0.9 does not say whether it is a reward, a share or a loss.
PANELS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("loss", "training loss (the method's)", ("loss",)),
    (
        "reward",
        "reward (the recipe's rewards)",
        ("reward", "reward_best", "reward_worst", "sample_reward"),
    ),
    ("implicit accuracy", "share of pairs ranked right", ("implicit_acc",)),
)


def finite_number(value: Any) -> float | None:
    """``value`` as a float when it is a finite int or float (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return None if math.isnan(value) or math.isinf(value) else value


def moving_average(values: Sequence[float], window: int, *, centred: bool = False) -> list[float]:
    """Mean over ``window`` values, same length as ``values``, fewer values at the ends.

    Trailing (the default: the last ``window`` values), so a smoothed curve starts where the
    raw one does; ``centred`` (``window // 2`` on each side), so it does not lag the raw curve
    by half a window.
    """
    before, after = (window // 2, window // 2) if centred else (max(0, window - 1), 0)
    prefix = [0.0]
    for v in values:
        prefix.append(prefix[-1] + v)
    out = []
    for i in range(len(values)):
        lo, hi = max(0, i - before), min(len(values), i + after + 1)
        out.append((prefix[hi] - prefix[lo]) / (hi - lo))
    return out


def step_series(
    rows: Sequence[dict[str, Any]], y: str, band: str | None = None, smooth: int = 1
) -> list[dict[str, float]]:
    """Points of one training curve from metrics.jsonl rows: step, y, smoothed y (trailing
    mean) and (with ``band``) the smoothed band half-width; rows without a number for ``y``
    are skipped."""
    points = []
    for row in rows:
        step, value = finite_number(row.get("step")), finite_number(row.get(y))
        if step is None or value is None:
            continue
        width = finite_number(row.get(band)) if band else None
        points.append({"step": step, "y": value, "band": width if width is not None else 0.0})
    ys = moving_average([p["y"] for p in points], smooth)
    widths = moving_average([p["band"] for p in points], smooth)
    for point, ys_i, w_i in zip(points, ys, widths, strict=True):
        point["y_smooth"], point["band_smooth"] = ys_i, w_i
    return points


def plot_training_curves(metrics: Path, out: Path) -> Path | None:
    """Draw ``metrics`` (a run's metrics.jsonl) into the PNG ``out``, written atomically.

    Each panel shows the raw step values faintly and a centred mean over about sqrt(steps)
    steps (7 of 50, 77 of 6000): smooth enough to read, narrow enough to keep the shape; up
    to FEW_STEPS steps the values are dots as well (a line through one step draws nothing).
    Returns ``out``, or None when no step logged a plotted key.
    """
    rows = read_jsonl(metrics)
    panels = []
    for title, ylabel, keys in PANELS:
        lines = [(key, step_series(rows, key)) for key in keys]
        lines = [(key, points) for key, points in lines if points]
        if lines:
            panels.append((title, ylabel, lines))
    if not panels:
        return None

    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    height = 3.2 + (0.6 if any(len(lines) > 1 for *_, lines in panels) else 0.0)  # legend below
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), height), squeeze=False)
    for ax, (title, ylabel, lines) in zip(axes[0], panels, strict=True):
        for key, points in lines:
            steps, values = [p["step"] for p in points], [p["y"] for p in points]
            # odd: a centred mean of ``window // 2`` steps each side spans ``window`` steps
            window = max(1, round(math.sqrt(len(values)))) | 1
            # a line through one point draws nothing: few steps are drawn as dots as well
            dots = {"marker": "o", "markersize": 3} if len(values) <= FEW_STEPS else {}
            if window == 1:  # nothing smoothed: the values themselves, fully drawn
                ax.plot(steps, values, label=key, **dots)
                continue
            (raw,) = ax.plot(steps, values, linewidth=0.6, alpha=0.3, **dots)
            smooth = moving_average(values, window, centred=True)
            label = f"{key} (mean of {window} steps)"
            ax.plot(steps, smooth, color=raw.get_color(), label=label)
        values_all = [p["y"] for _, points in lines for p in points]
        if title == "loss" and min(values_all) > 0 and max(values_all) > 20 * min(values_all):
            ax.set_yscale("log")  # e.g. a pretraining loss falling by orders of magnitude
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        steps_all = {p["step"] for _, points in lines for p in points}
        if len(steps_all) == 1:  # one step: ticks either side of it, not 0.95, 0.96, ...
            (only,) = steps_all
            ax.set_xlim(only - 1, only + 1)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no step 1.5 on a short run
        ax.grid(alpha=0.3)
        if len(lines) > 1:  # several entries inside the axes would hide the curves
            ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.24), ncol=2)
        else:
            ax.legend(fontsize=7)
    atomic_save_png(fig, out, dpi=110)
    return out
