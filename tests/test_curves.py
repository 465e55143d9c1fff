"""Training curves: metrics.jsonl drawn as training_curves.png, one panel per logged kind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from drawn_figures import drawn_figures
from dsharp.curves import moving_average, plot_training_curves


def _write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_moving_average_is_centred_and_shrinks_at_the_ends():
    assert moving_average([1.0, 2.0, 3.0, 4.0, 5.0], 3, centred=True) == pytest.approx(
        [1.5, 2, 3, 4, 4.5]
    )
    assert moving_average([2.0, 4.0], 1, centred=True) == [2.0, 4.0]
    assert moving_average([], 5, centred=True) == []


def test_curves_draw_the_logged_panels_and_skip_non_finite_values(tmp_path, monkeypatch):
    import matplotlib.figure

    rows = [
        {"step": i, "loss": 0.7 - 0.01 * i, "reward": 0.5, "implicit_acc": float("nan")}
        for i in range(1, 11)
    ]
    rows[3]["implicit_acc"] = 0.5
    drawn: list[list[str]] = []
    real_savefig = matplotlib.figure.Figure.savefig

    def spy(fig, *args, **kwargs):
        drawn.append([ax.get_title() for ax in fig.axes])
        return real_savefig(fig, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", spy)
    out = plot_training_curves(_write_rows(tmp_path / "m.jsonl", rows), tmp_path / "c.png")
    assert out == tmp_path / "c.png"
    assert out.read_bytes().startswith(b"\x89PNG")
    assert drawn == [["loss", "reward", "implicit accuracy"]]


def test_curves_without_any_plotted_key_write_nothing(tmp_path):
    metrics = _write_rows(tmp_path / "m.jsonl", [{"step": 1, "lr": 1e-5}])
    assert plot_training_curves(metrics, tmp_path / "c.png") is None
    assert not (tmp_path / "c.png").exists()
    assert plot_training_curves(tmp_path / "missing.jsonl", tmp_path / "c.png") is None


def test_curve_legends_name_the_steps_the_centred_mean_spans(tmp_path, monkeypatch):
    """sqrt(4) = 2, but a centred mean spans an odd number of steps: the label says 3."""
    import dsharp.curves as curves

    figures = drawn_figures(monkeypatch, curves)
    rows = [{"step": i, "loss": 1.0 / i, "reward": 0.1 * i} for i in range(1, 5)]
    plot_training_curves(_write_rows(tmp_path / "m.jsonl", rows), tmp_path / "c.png")
    (fig,) = figures
    labels = [t.get_text() for ax in fig.axes for t in ax.get_legend().get_texts()]
    assert labels == ["loss (mean of 3 steps)", "reward (mean of 3 steps)"]
    fig.canvas.draw()
    ticks = [t for ax in fig.axes for t in ax.get_xticks()]
    assert ticks and all(float(t).is_integer() for t in ticks)  # steps, never 1.5


def test_a_one_step_run_draws_its_values_as_dots_at_a_whole_step(tmp_path, monkeypatch):
    """A line through one point draws nothing: training_curves.png of a 1-step run was
    empty panels with step ticks 0.945 ... 1.050."""
    import dsharp.curves as curves

    figures = drawn_figures(monkeypatch, curves)
    rows = [{"step": 1, "loss": 0.69, "reward": 0.5, "implicit_acc": 0.0}]
    plot_training_curves(_write_rows(tmp_path / "m.jsonl", rows), tmp_path / "c.png")
    (fig,) = figures
    for ax in fig.axes:
        shown = [line for line in ax.get_lines() if line.get_marker() not in (None, "None", "")]
        assert shown and all(line.get_alpha() in (None, 1) for line in shown), ax.get_title()
    fig.canvas.draw()
    ticks = [t for ax in fig.axes for t in ax.get_xticks()]
    assert 1 in ticks and all(float(t).is_integer() for t in ticks)


def test_every_panel_says_what_its_y_axis_is(tmp_path, monkeypatch):
    """The panels had no y label: an axis of 0.6 .. 0.9 did not say reward, share or loss."""
    import dsharp.curves as curves

    figures = drawn_figures(monkeypatch, curves)
    rows = [{"step": i, "loss": 0.7, "reward": 0.5, "implicit_acc": 0.5} for i in range(1, 4)]
    plot_training_curves(_write_rows(tmp_path / "m.jsonl", rows), tmp_path / "c.png")
    (fig,) = figures
    assert [ax.get_ylabel() for ax in fig.axes] == [
        "training loss (the method's)",
        "reward (the recipe's rewards)",
        "share of pairs ranked right",
    ]
    fig.tight_layout()  # as atomic_save_png lays it out
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for left, right in zip(fig.axes, fig.axes[1:], strict=False):
        label = right.yaxis.label.get_window_extent(renderer)
        assert label.x0 > left.get_window_extent(renderer).x1  # not on the panel beside it
