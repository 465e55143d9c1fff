"""The contact sheet `dsharp sample` writes: rows are prompts, columns their images."""

import numpy as np
import pytest
import torch
from PIL import Image

from drawn_figures import drawn_figures
from dsharp import sheets


def _solid(rgb: tuple[float, float, float], n: int = 1) -> torch.Tensor:
    return torch.tensor(rgb).view(1, 3, 1, 1).expand(n, 3, 8, 8).clone()


def test_sheet_groups_images_by_prompt_and_shows_their_colours(tmp_path):
    images = torch.cat([_solid((1, 0, 0), 2), _solid((0, 0, 1), 3)])
    prompts = ["red"] * 2 + ["blue"] * 3
    path = tmp_path / "grid.png"
    assert sheets.save_contact_sheet(images, prompts, list(range(5)), path) == 5
    pixels = np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3).astype(int)
    pure_red = ((pixels[:, 0] > 200) & (pixels[:, 1] < 40) & (pixels[:, 2] < 40)).sum()
    pure_blue = ((pixels[:, 2] > 200) & (pixels[:, 0] < 40) & (pixels[:, 1] < 40)).sum()
    assert pure_red > 0 and pure_blue > 0
    assert pure_blue == pytest.approx(1.5 * pure_red, rel=0.1)  # three blue cells, two red


def test_sheet_caps_rows_and_columns_and_says_how_many_it_shows(tmp_path, monkeypatch):
    monkeypatch.setattr(sheets, "MAX_ROWS", 2)
    monkeypatch.setattr(sheets, "MAX_COLUMNS", 3)
    prompts = [p for p in "abc" for _ in range(4)]
    shown = sheets.save_contact_sheet(
        _solid((0, 1, 0), 12), prompts, list(range(12)), tmp_path / "g.png"
    )
    assert shown == 6  # prompts a and b, three images each
    assert (tmp_path / "g.png").stat().st_size > 0


def test_sheet_refuses_mismatched_inputs(tmp_path):
    with pytest.raises(ValueError, match="2 prompts"):
        sheets.save_contact_sheet(_solid((1, 1, 1), 3), ["a", "b"], [0, 1], tmp_path / "g.png")
    assert not (tmp_path / "g.png").exists()


def test_sheet_titles_each_image_with_its_seed_and_score(tmp_path, monkeypatch):
    drawn = drawn_figures(monkeypatch, sheets)
    scores = [1.0, float("nan"), 0.5]
    sheets.save_contact_sheet(
        _solid((1, 1, 1), 3), ["a", "a", "b"], [0, 1, 0], tmp_path / "g.png", scores=scores
    )
    titles = [ax.get_title() for ax in drawn[0].axes]
    assert titles == ["seed 0: 1.00", "seed 1 (unscored)", "seed 0: 0.50", ""]
    with pytest.raises(ValueError, match="2 scores for 3 images"):
        sheets.save_contact_sheet(
            _solid((1, 1, 1), 3), ["a", "a", "b"], [0, 1, 0], tmp_path / "g.png", [0.0, 1.0]
        )


def test_a_long_prompt_caption_stays_whole_inside_the_sheet(tmp_path, monkeypatch):
    """A long prompt in the last of three rows: its caption reads level, beside its row,
    every word of it inside the figure (on its side, three lines of it were hard to read)."""
    drawn = drawn_figures(monkeypatch, sheets)
    prompt = "two yellow stars above a purple hexagon and a small orange circle " * 2
    prompts = ["a red circle", "a blue square", prompt]
    sheets.save_contact_sheet(_solid((1, 1, 1), 3), prompts, [0, 1, 2], tmp_path / "g.png")
    (fig,) = drawn
    fig.tight_layout()  # as atomic_save_png lays it out
    fig.canvas.draw()
    label = fig.axes[2].yaxis.label
    assert label.get_text().split() == prompt.split()
    assert label.get_rotation() == 0
    box = label.get_window_extent(fig.canvas.get_renderer())
    assert box.y0 >= 0 and box.x0 >= 0 and box.y1 <= fig.bbox.height
