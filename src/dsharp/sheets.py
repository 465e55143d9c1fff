"""A contact sheet of sampled images: one row per prompt, one column per image of it.

`dsharp sample` writes one beside its PNGs, since a few dozen small files (dsharp-mini's are
32x32) are easier to judge side by side in one picture than one by one.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import torch

from dsharp.io import atomic_save_png, pyplot

SHEET_PNG = "grid.png"
MAX_ROWS = 32  # prompts shown; a sheet of more rows is too tall to read
MAX_COLUMNS = 16  # images per prompt shown
CAPTION_WIDTH = 24  # characters per line of a row's prompt


def save_contact_sheet(
    images: torch.Tensor,
    prompts: list[str],
    seeds: list[int],
    path: Path,
    scores: list[float] | None = None,
    score_name: str | None = None,
    heading: str | None = None,
) -> int:
    """Write ``images`` ``(B, 3, H, W)`` in ``[0, 1]`` (image ``i`` drawn for ``prompts[i]``
    with ``seeds[i]``) as a sheet whose rows are the distinct prompts in first-seen order;
    each image is titled with its seed, and with its score where ``scores`` are given;
    ``score_name`` (the rewards that gave them: ``shapes``) heads the sheet, since a bare
    number cannot say what it scores. ``heading`` (what drew the images: the method, its
    options and verifier, the sampling) heads it first, as a demon sheet otherwise looks
    just like a DDIM one.

    Shows at most ``MAX_ROWS`` prompts and ``MAX_COLUMNS`` images of each; returns how many
    images it shows, so that a caller can say what was left out.
    """
    if images.ndim != 4 or images.shape[0] != len(prompts) or len(prompts) != len(seeds):
        raise ValueError(
            f"contact sheet: {tuple(images.shape)} images for {len(prompts)} prompts and "
            f"{len(seeds)} seeds"
        )
    if not prompts:
        raise ValueError("contact sheet: no images")
    if scores is not None and len(scores) != len(prompts):
        raise ValueError(f"contact sheet: {len(scores)} scores for {len(prompts)} images")
    rows: dict[str, list[int]] = {}
    for i, prompt in enumerate(prompts):
        rows.setdefault(prompt, []).append(i)
    shown = list(rows.items())[:MAX_ROWS]
    n_cols = min(MAX_COLUMNS, max(len(indices) for _, indices in shown))

    captions = [textwrap.wrap(prompt, CAPTION_WIDTH) for prompt, _ in shown]
    # a row as tall as its longest caption needs: the whole prompt, never cut at the edge
    row_height = max(1.4, 0.3 + 0.13 * max(len(lines) for lines in captions))
    plt = pyplot()

    fig_width = 1.3 * n_cols + 1.8
    sheet_title = _heading_text(heading, scores is not None, score_name, fig_width)
    # room for the heading's lines, so that it does not squeeze the rows
    extra = 0.15 * len(_wrapped_lines(heading, fig_width)) if heading else 0.0
    fig, axes = plt.subplots(
        len(shown), n_cols, figsize=(fig_width, row_height * len(shown) + extra), squeeze=False
    )
    if sheet_title:
        fig.suptitle(sheet_title, fontsize=8)
    for r, (_, indices) in enumerate(shown):
        for c in range(n_cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(indices):
                ax.axis("off")
                continue
            i = indices[c]
            ax.imshow(
                images[i].permute(1, 2, 0).clamp(0, 1).float().cpu().numpy(),
                interpolation="nearest",
            )
            title = f"seed {seeds[i]}"
            if scores is not None:
                title += " (unscored)" if math.isnan(scores[i]) else f": {scores[i]:.2f}"
            ax.set_title(title, fontsize=6)
            if c == 0:  # level, beside the row: a long prompt turned on its side ran off
                ax.set_ylabel(
                    "\n".join(captions[r]), fontsize=7, rotation=0, ha="right", va="center"
                )
    atomic_save_png(fig, Path(path))
    return sum(min(len(indices), n_cols) for _, indices in shown)


def _heading_text(
    heading: str | None, scored: bool, score_name: str | None, width: float
) -> str | None:
    """The sheet's heading: what drew it, then what the number above each image is."""
    lines = []
    if heading:
        lines += _wrapped_lines(heading, width)
    if scored:
        what = f"score by {score_name}" if score_name else "score"
        lines += _wrapped_lines(f"above each image: its seed and its {what}", width)
    return "\n".join(lines) or None


def _wrapped_lines(text: str, width: float) -> list[str]:
    from dsharp.score_words import wrapped

    return wrapped(text, width, 8).split("\n")
