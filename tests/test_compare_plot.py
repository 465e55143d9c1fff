"""compare.png: `dsharp compare` tables drawn as grouped bars."""

import math

import pytest

from drawn_figures import drawn_figures
from dsharp import compare_plot


def test_bars_are_scores_only_without_costs_text_or_copies_of_overall():
    columns = [
        "run",
        "overall",
        "shapes",
        "cat:single",
        "nfe/image",
        "reward evals (total)",
        "images",
        "images scored",
        "note",
    ]
    rows = [
        ["base", 0.5, 0.5, 0.25, 50.0, 0, 6, 4, "x"],
        ["tuned", 0.75, 0.75, 1.0, 50.0, 960, 6, 5, "y"],
    ]
    assert compare_plot._bar_metrics(columns, rows) == ["overall", "cat:single"]
    rows[1][2] = 0.7  # a reward whose mean is not the overall score is kept
    assert compare_plot._bar_metrics(columns, rows) == ["overall", "shapes", "cat:single"]


@pytest.fixture
def drawn(monkeypatch):
    return drawn_figures(monkeypatch, compare_plot)


def test_compare_plot_draws_one_bar_per_run_and_score(drawn, tmp_path):
    columns = ["run", "overall", "cat:single"]
    rows = [["base", 0.5, 0.25], ["tuned", 0.75, 1.0]]
    assert compare_plot.plot_compare(columns, rows, tmp_path / "c.png")
    (ax,) = drawn[0].axes
    heights = [round(bar.get_height(), 6) for bar in ax.patches]
    assert heights == [0.5, 0.25, 0.75, 1.0]  # base's bars, then tuned's
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["base", "tuned"]
    # beside the bars, not over them (a legend inside covered tuned's tallest bar)
    assert ax.get_legend().get_bbox_to_anchor().x0 > ax.get_window_extent().x1 - 1
    assert not compare_plot.plot_compare(["run", "note"], [["a", "x"]], tmp_path / "d.png")
    assert len(drawn) == 1


def test_paired_plot_shows_deltas_with_an_interval_on_overall_only(drawn, tmp_path):
    columns = ["run", "baseline", "images", "baseline score", "score", "delta", "ci95"]
    columns += ["share better", "share worse", "delta:single", "delta:spatial"]
    rows = [["tuned", "base", 400, 0.5, 0.6, 0.1, 0.03, 0.2, 0.1, 0.25, math.nan]]
    assert compare_plot.plot_paired(columns, rows, tmp_path / "p.png")
    (ax,) = drawn[0].axes
    assert [round(b.get_height(), 6) for b in ax.patches[:2]] == [0.1, 0.25]
    assert math.isnan(ax.patches[2].get_height())  # a category the pair lacks: no bar
    assert [t.get_text() for t in ax.get_xticklabels()] == ["overall", "single", "spatial"]
    (caps,) = [c for c in ax.containers if hasattr(c, "has_yerr")]  # one error bar
    (segments,) = caps.lines[2]
    (low, high) = segments.get_segments()[0][:, 1]
    assert (low, high) == pytest.approx((0.07, 0.13))
    assert ax.get_ylabel() == "delta vs base"


def test_a_dozen_runs_get_a_dozen_colours_and_a_legend_beside_the_bars(drawn, tmp_path):
    columns = ["run", "overall"]
    rows = [[f"run{i}", 0.5 + i / 100] for i in range(12)]
    assert compare_plot.plot_compare(columns, rows, tmp_path / "c.png")
    (ax,) = drawn[0].axes
    colours = {tuple(bar.get_facecolor()) for bar in ax.patches}
    assert len(colours) == 12  # the default cycle would repeat two of them
    assert ax.get_legend().get_bbox_to_anchor().x0 > ax.get_window_extent().x1 - 1
    assert len(set(map(str, compare_plot.series_colours(30)))) == 30


def test_a_missing_value_is_marked_not_drawn_as_a_zero_bar(drawn, tmp_path):
    """A run without a category's score (NaN, '-' in the table) left an empty slot that
    read as a score of 0 beside a real 0."""
    columns = ["run", "overall", "cat:single", "met:relation"]
    rows = [["base", 0.5, 0.25, 0.0], ["tuned", 0.75, math.nan, 0.0]]
    assert compare_plot.plot_compare(columns, rows, tmp_path / "c.png")
    (ax,) = drawn[0].axes
    marks = [(t.get_text(), round(t.get_position()[0], 6)) for t in ax.texts]
    assert marks == [(compare_plot.MISSING_BAR, round(ax.patches[4].get_x() + 0.2, 6))]


@pytest.mark.parametrize(
    "values",
    [
        [-0.5, -0.25, math.nan],  # every bar below zero: the axes end at 0
        [-0.5, 0.02, math.nan],  # mixed, mostly below
        [0.5, -0.02, math.nan],  # mixed, mostly above
        [0.5, 0.25, math.nan],
    ],
)
def test_a_missing_values_label_stays_inside_the_axes_on_the_side_with_room(
    drawn, tmp_path, values
):
    """With every bar negative the 'n/a' label rose from y=0, above the axes, onto the
    title: it now goes from the zero line towards the side the bars have room on. A last
    group without any bar was cut off at the axes' right edge."""
    columns = ["run", "overall", "cat:a", "cat:b"]
    rows = [["base", *values], ["tuned", *(v * 0.9 for v in values)]]
    assert compare_plot.plot_compare(columns, rows, tmp_path / "c.png")
    (fig,) = drawn
    (ax,) = fig.axes
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    inside = ax.get_window_extent(renderer)
    title = ax.title.get_window_extent(renderer)
    assert len(ax.texts) == 2
    for text in ax.texts:
        assert text.get_text() == compare_plot.MISSING_BAR
        box = text.get_window_extent(renderer)
        assert inside.y0 <= box.y0 and box.y1 <= inside.y1, (values, box, inside)
        # the last group's slot too: without bars there, autoscaling left it outside
        assert inside.x0 <= box.x0 and box.x1 <= inside.x1, (values, box, inside)
        assert not box.overlaps(title)
