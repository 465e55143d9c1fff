"""`compare.png`: the table `dsharp compare` writes, as grouped bars (one colour per run).

Several runs' scores per category are read faster from bars than from a table of
four-decimal numbers; the table stays the record.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from dsharp.io import atomic_save_png, pyplot

COMPARE_PNG = "compare.png"
# budgets and image counts, not scores: other units, other scales
_COSTS = ("nfe/image", "reward evals (total)", "images", "images scored")
MAX_METRICS = 16
#: Written where a run has no value (NaN, missing): an empty slot would read as 0.
MISSING_BAR = "n/a"


def series_colours(count: int) -> list[Any]:
    """One distinct colour per run: matplotlib's default cycle repeats after ten, which
    would give two runs of a larger comparison the same colour."""
    import matplotlib
    import numpy as np

    if count <= 10:
        return [f"C{i}" for i in range(count)]
    if count <= 20:
        return [matplotlib.colormaps["tab20"](i) for i in range(count)]
    return [matplotlib.colormaps["turbo"](v) for v in np.linspace(0.05, 0.95, count)]


def _bar_metrics(columns: list[str], rows: list[list[Any]]) -> list[str]:
    """Score columns worth a bar: numeric in every row, not a cost, and not a copy of
    ``overall`` (a run's single reward's mean is its overall score)."""

    def values(col: str) -> list[Any]:
        return [row[columns.index(col)] for row in rows]

    def numeric(col: str) -> bool:
        return all(isinstance(v, int | float) and not isinstance(v, bool) for v in values(col))

    picked = [c for c in columns[1:] if c not in _COSTS and numeric(c)]
    if "overall" in picked:
        overall = values("overall")
        picked = [c for c in picked if c == "overall" or values(c) != overall]
    return picked[:MAX_METRICS]


def plot_compare(
    columns: list[str], rows: list[list[Any]], path: Path, scored_by: str | None = None
) -> bool:
    """Grouped bars of a `dsharp compare` table (runs as rows); False when it has no score
    column to draw. ``scored_by`` (:func:`scored_by`) goes in the title: a bar of "score"
    means nothing without the rewards and prompts behind it."""
    metrics = _bar_metrics(columns, rows)
    if not metrics or not rows:
        return False
    series = [(str(row[0]), [row[columns.index(m)] for m in metrics]) for row in rows]
    _grouped_bars(metrics, series, None, "score", _titled("dsharp compare", scored_by), path)
    return True


def scored_by(named: list[tuple[str, dict[str, Any]]]) -> str | None:
    """What the compared evaluations' scores are: ``shapes on bench shapes``, where they
    all agree; otherwise each source's, briefly (``rewards differ (a: shapes; b: clip)``)."""
    from dsharp.score_words import prompt_words, reward_words, scored_words, shared_or_each

    whole = {scored_words(result) for _, result in named}
    if len(whole) == 1:  # one text for all (None: none records its rewards or prompts)
        return whole.pop()
    parts = [
        shared_or_each(named, reward_words, "rewards differ", 30),
        shared_or_each(named, prompt_words, "prompts differ", 30),
    ]
    return "; ".join(p for p in parts if p) or None


def _titled(title: str, scored: str | None) -> str:
    return title if scored is None else f"{title}: {scored}"


def plot_paired(
    columns: list[str], rows: list[list[Any]], path: Path, scored_by: str | None = None
) -> bool:
    """Each run's paired delta against the baseline, overall (with its 95% interval) and
    per category; False when the table has no rows. ``scored_by`` as for
    :func:`plot_compare`."""
    if not rows:
        return False
    categories = [c for c in columns if c.startswith("delta:")]
    labels = ["overall", *(c.removeprefix("delta:") for c in categories)]
    series, errors = [], []
    for row in rows:
        get = dict(zip(columns, row, strict=True)).get
        series.append((str(row[0]), [get("delta"), *(get(c) for c in categories)]))
        errors.append([get("ci95"), *([math.nan] * len(categories))])
    ylabel = f"delta vs {rows[0][columns.index('baseline')]}"
    title = _titled("dsharp compare --paired", scored_by)
    title += " (overall: 95% interval over prompts)"
    _grouped_bars(labels, series, errors, ylabel, title, path)
    return True


def _missing_label_side(series: list[tuple[str, list[Any]]]) -> str:
    """Where a missing value's label goes from the zero line: up ("bottom") where the bars
    reach at least as far above zero as below, else down ("top"). Why: bars stop the axis
    at zero, so with every bar negative a label drawn upwards sat above the axes, on the
    title."""
    finite = [float(v) for _, values in series for v in values if v is not None]
    finite = [v for v in finite if math.isfinite(v)]
    above, below = max([0.0, *finite]), -min([0.0, *finite])
    return "bottom" if above >= below else "top"


def _grouped_bars(
    groups: list[str],
    series: list[tuple[str, list[float]]],
    errors: list[list[float]] | None,
    ylabel: str,
    title: str,
    path: Path,
) -> None:
    plt = pyplot()
    import numpy as np

    x = np.arange(len(groups))
    width = 0.8 / len(series)
    colours = series_colours(len(series))
    fig_width = min(14.0, max(5.0, 0.3 * len(groups) * (len(series) + 1))) + 1.8  # + legend
    fig, ax = plt.subplots(figsize=(fig_width, 4))
    missing_va = _missing_label_side(series)
    for i, (label, values) in enumerate(series):
        heights = [math.nan if v is None else float(v) for v in values]
        offset = (i - (len(series) - 1) / 2) * width
        ax.bar(x + offset, heights, width, label=label, color=colours[i])
        for j in [j for j, h in enumerate(heights) if math.isnan(h)]:
            # no bar reads as a score of 0: say the value is missing, as the table's '-'
            ax.text(
                x[j] + offset,
                0,
                MISSING_BAR,
                rotation=90,
                ha="center",
                va=missing_va,
                fontsize=7,
                color=colours[i],
            )
        if errors is not None:  # only where there is an interval: no zero-length caps
            shown = [j for j, e in enumerate(errors[i]) if e is not None and not math.isnan(e)]
            ax.errorbar(
                [x[j] + offset for j in shown],
                [heights[j] for j in shown],
                yerr=[errors[i][j] for j in shown],
                fmt="none",
                ecolor="black",
                capsize=3,
            )
    ax.axhline(0, color="black", linewidth=0.6)
    # every group's slot: a missing last value (no bar) fell beyond the autoscaled x range
    ax.set_xlim(-0.5, len(groups) - 0.5)
    ax.set_xticks(x, groups, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    from dsharp.score_words import wrapped

    ax.set_title(wrapped(title, fig_width - 1.8, 9), fontsize=9)
    # beside the bars: inside, even a two-run legend sat on the tallest group's bars
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(axis="y", alpha=0.3)
    atomic_save_png(fig, Path(path))
