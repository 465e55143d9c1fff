"""What a study figure's reader needs written on it: plain NFE numbers, what the lines average
and what the band is, and a legend that leaves the points visible."""

from __future__ import annotations

import pytest

from drawn_figures import drawn_figures
from dsharp import study_outputs
from dsharp.study import PlotSpec


@pytest.fixture
def drawn(monkeypatch):
    return drawn_figures(monkeypatch, study_outputs)


def test_nfe_figure_has_plain_tick_numbers_and_its_legend_beside_the_points(drawn, tmp_path):
    points = [
        ("DDIM", "DDIM", {"nfe_per_image": 50, "overall": 0.4}),
        ("Demon", "demon K=2", {"nfe_per_image": 250, "overall": 0.48}),
        ("Demon", "demon K=4", {"nfe_per_image": 434, "overall": 0.5}),
    ]
    spec = PlotSpec(x="nfe", y="overall", ylabel="shapes score")
    study_outputs.plot_nfe(points, spec, "Figure 5", tmp_path / "f.png", tmp_path / "f.csv")
    (fig,) = drawn
    (ax,) = fig.axes
    fig.canvas.draw()
    labels = [t.get_text() for t in ax.get_xticklabels(which="both") if t.get_text()]
    assert {"50", "100", "200"} <= set(labels)  # not 5x10^1, 10^2, 2x10^2
    assert "90" not in labels  # it ran into 100
    assert ax.get_legend().get_bbox_to_anchor().x0 > ax.get_window_extent().x1 - 1


def test_step_figure_legend_says_how_lines_are_smoothed_and_what_the_band_is(drawn, tmp_path):
    rows = [{"step": i, "reward": 0.1 * i, "reward_std": 0.05} for i in range(1, 9)]
    spec = PlotSpec(x="step", y="reward", band="reward_std", smooth=5)
    study_outputs.plot_steps([("RLHF", rows)], spec, "Figure 6", tmp_path / "f.png", tmp_path / "c")
    (ax,) = drawn[0].axes
    title = ax.get_legend().get_title().get_text()
    assert title == "mean of the last 5 steps; band: +- reward_std"
    plain = PlotSpec(x="step", y="reward")
    study_outputs.plot_steps([("RLHF", rows)], plain, "Fig 4", tmp_path / "g.png", tmp_path / "d")
    assert drawn[1].axes[0].get_legend().get_title().get_text() == ""
    # without a band the raw values are drawn faintly behind: the legend says what they are
    smooth = PlotSpec(x="step", y="loss", smooth=10)
    rows = [{"step": i, "loss": 1 / i} for i in range(1, 9)]
    study_outputs.plot_steps([("FT", rows)], smooth, "Fig 4", tmp_path / "h.png", tmp_path / "e")
    (faint,) = [line for line in drawn[2].axes[0].get_lines() if line.get_alpha() == 0.25]
    title = drawn[2].axes[0].get_legend().get_title().get_text()
    assert title == "mean of the last 10 steps (faint: each step)"


def test_step_figure_has_whole_step_ticks_and_its_legend_beside_the_lines(drawn, tmp_path):
    """A 4-step row's axis read 1.0, 1.5, 2.0, ... and the legend sat inside, on the band."""
    rows = [{"step": i, "reward": 0.1 * i, "reward_std": 0.3} for i in range(1, 5)]
    spec = PlotSpec(x="step", y="reward", band="reward_std", smooth=5)
    study_outputs.plot_steps([("RLHF", rows)], spec, "Figure 6", tmp_path / "f.png", tmp_path / "c")
    (fig,) = drawn
    (ax,) = fig.axes
    fig.canvas.draw()
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks), ticks
    assert ax.get_legend().get_bbox_to_anchor().x0 > ax.get_window_extent().x1 - 1


def test_a_one_step_figure_has_whole_step_ticks_and_shows_its_points(drawn, tmp_path):
    """`dsharp reproduce recipes/mini/fig4_loss.yaml train.max_steps=1`: its axis read 0.945,
    0.960, ... (MaxNLocator gives up whole numbers with fewer than two in range) and each
    row's single point, a line through one point, drew nothing."""
    rows = [{"step": 1, "loss": 0.07}]
    spec = PlotSpec(x="step", y="loss", smooth=10)
    curves = [("FT", rows), ("SFT", rows)]
    study_outputs.plot_steps(curves, spec, "Fig 4", tmp_path / "f.png", tmp_path / "f.csv")
    (fig,) = drawn
    (ax,) = fig.axes
    fig.canvas.draw()
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert 1 in ticks and all(float(t).is_integer() for t in ticks), ticks
    bold = [line for line in ax.get_lines() if line.get_label() in ("FT", "SFT")]
    assert len(bold) == 2 and all(line.get_marker() == "o" for line in bold)
