"""Outputs that show scores say what the score is: compare.png names the rewards and bench
(or says the sources differ), an evaluation's grid.png names the rewards behind each
image's number, and a study's table.md the seeds and sampling its numbers were measured
with. No model: evaluations are written by hand, or sampled by a stand-in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from drawn_figures import drawn_figures
from dsharp import compare_plot, sheets
from dsharp.cli import app
from dsharp.score_words import reward_words, weighted_words
from study_files import write_study
from study_rows import finish_rows


def _evaluation(reward: str = "shapes", bench: str | None = "shapes", **extra) -> dict:
    """An evaluation as `dsharp eval` records it, cut to what compare reads."""
    images = [{"prompt": p, "seed": 0, "score": 0.5} for p in ("a red square", "a blue circle")]
    return {
        "bench": bench,
        "rewards": [reward],
        "overall": 0.5,
        "n_images": 2,
        "n_scored": 2,
        "n_prompts": 2,
        "seeds": [0],
        "metrics": {reward: {"mean": 0.5, "std": 0.0, "ci95": 0.0, "n": 2}},
        "reward_weights": {reward: 1.0},
        "reward_specs": {reward: {"name": reward, "weight": 1.0, "options": {}}},
        "nfe_per_image": 5.0,
        "sample": {"method": "default", "steps": 5, "guidance": 5.0, "eta": 0.0},
        "images": images,
        **extra,
    }


@pytest.fixture
def figures(monkeypatch):
    """The figures compare.png and grid.png would be written from."""
    return drawn_figures(monkeypatch, compare_plot, sheets)


def _compare(tmp_path: Path, docs: dict[str, dict], *flags: str) -> None:
    paths = []
    for name, doc in docs.items():
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(doc))
    args = ["compare", *map(str, paths), "--out", str(tmp_path / "cmp"), *flags]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output


def test_compare_png_names_the_reward_and_bench_of_its_scores(tmp_path, figures):
    _compare(tmp_path, {"base": _evaluation(), "tuned": _evaluation()})
    (ax,) = figures[0].axes
    assert ax.get_title() == "dsharp compare: shapes on bench shapes"


def test_compare_png_says_where_the_sources_rewards_differ(tmp_path, figures):
    soft = _evaluation("shapes_soft")
    _compare(tmp_path, {"base": _evaluation(), "soft": soft})
    title = figures[0].axes[0].get_title().replace("\n", " ")
    assert "rewards differ (base: shapes; soft: shapes_soft)" in title
    assert "bench shapes" in title
    other = _evaluation(bench=None, prompts_file="mine.txt")
    _compare(tmp_path, {"base": _evaluation(), "mine": other})
    title = figures[1].axes[0].get_title().replace("\n", " ")
    assert "shapes; prompts differ (base: bench shapes; mine: prompts mine.txt)" in title


def test_paired_compare_png_names_the_reward(tmp_path, figures):
    _compare(tmp_path, {"base": _evaluation(), "tuned": _evaluation()}, "--paired")
    title = figures[0].axes[0].get_title().replace("\n", " ")
    assert title.startswith("dsharp compare --paired: shapes on bench shapes")


def test_weighted_rewards_are_named_with_their_share_of_the_score():
    assert (
        weighted_words({"clip": 0.7, "aesthetic": 0.3, "seen": 0.0}) == "0.7 clip + 0.3 aesthetic"
    )
    assert weighted_words({"clip": 1.0, "aesthetic": 1.0}) == "mean of clip, aesthetic"
    assert weighted_words({"clip": 1.0, "nsfw": -1.0}) == "0.5 clip - 0.5 nsfw"
    assert reward_words({"rewards": ["shapes"]}) == "shapes"  # an older file: no weights
    assert reward_words({}) is None


def test_eval_grid_names_the_reward_of_each_images_score(tmp_path, figures, monkeypatch):
    import dsharp.evaluate as evaluate_module
    from dsharp.generate import Generated

    def stand_in(model, prompts, seeds, settings, **kwargs):
        return Generated(torch.rand(len(prompts), 3, 8, 8), 5.0)

    monkeypatch.setattr(evaluate_module, "generate", stand_in)
    from dsharp.config import RewardSpec

    specs = [RewardSpec(name="shapes")]
    kept = tmp_path / "kept"
    evaluate_module.evaluate(None, ["a red square"], specs, num_seeds=2, images_dir=kept)
    (sheet,) = figures
    assert sheet._suptitle.get_text() == "above each image: its seed and its score by shapes"
    assert [ax.get_title().split(":")[0] for ax in sheet.axes] == ["seed 0", "seed 1"]


def test_sheet_without_scores_has_no_score_heading(tmp_path, figures):
    images = torch.rand(2, 3, 8, 8)
    sheets.save_contact_sheet(images, ["a", "a"], [0, 1], tmp_path / "g.png")
    assert figures[0]._suptitle is None


def _table_study(tmp_path: Path) -> Path:
    rows = [{"label": "base", "train": False}, {"label": "tuned"}]
    return write_study(
        tmp_path, rows, name="mine", evaluate={"bench": "shapes", "limit": 1, "seeds": 2}
    )


def test_study_table_md_says_what_its_numbers_were_measured_with(tmp_path):
    from dsharp.study import load_study
    from dsharp.study_outputs import write_outputs

    loaded = load_study(_table_study(tmp_path))
    sample = {"method": "default", "steps": 5, "guidance": 5.0, "eta": 0.0}
    sample |= {"height": 32, "width": 32}
    doc = _evaluation(seeds=[0, 1], n_prompts=5, sample=sample)
    finish_rows(loaded, result=lambda i, plan: doc)
    write_outputs(loaded, echo=lambda _: None)
    markdown = (tmp_path / "out" / "table.md").read_text()
    assert "- scoring: shapes on bench shapes\n" in markdown
    assert "- images: 5 prompts x seeds 0, 1\n" in markdown
    assert "- sampling: 5 DDIM steps, guidance 5.0, eta 0.0, 32x32\n" in markdown
    assert "- method: DDIM\n" in markdown


def test_study_table_md_lists_each_rows_settings_where_they_differ(tmp_path):
    from dsharp.study import load_study
    from dsharp.study_outputs import write_outputs

    loaded = load_study(_table_study(tmp_path))
    demon = {"method": "demon", "steps": 5, "guidance": 5.0, "eta": 0.0, "options": {"K": 2}}
    demon["reward"] = [{"name": "shapes"}]
    docs = [_evaluation(), _evaluation(seeds=[0, 1], sample=demon)]
    finish_rows(loaded, result=lambda i, plan: docs[i])
    write_outputs(loaded, echo=lambda _: None)
    markdown = (tmp_path / "out" / "table.md").read_text()
    assert "- scoring: shapes on bench shapes\n" in markdown
    each = "base: 2 prompts x seed 0; tuned: 2 prompts x seeds 0, 1"
    assert f"- images differ by row ({each})\n" in markdown
    assert "- sampling: 5 DDIM steps, guidance 5.0, eta 0.0\n" in markdown
    assert "- method differs by row (base: DDIM; tuned: demon K=2 (verifier: shapes))\n" in markdown


def test_nfe_figure_says_what_its_points_were_measured_with(tmp_path, monkeypatch):
    from dsharp import study_outputs
    from dsharp.study import PlotSpec

    drawn = drawn_figures(monkeypatch, study_outputs)
    sample = {"method": "default", "steps": 5, "guidance": 5.0, "eta": 0.0}
    demon = {**sample, "method": "demon", "options": {"K": 2}}
    points = [
        ("DDIM", "DDIM", _evaluation(sample=sample)),
        ("Demon", "demon K=2", _evaluation(sample=demon, nfe_per_image=60.0)),
    ]
    spec = PlotSpec(x="nfe", y="overall")
    study_outputs.plot_nfe(points, spec, "Figure 5", tmp_path / "f.png", tmp_path / "f.csv")
    title = drawn[0].axes[0].get_title().replace("\n", " ")
    # the method is each series' own: not repeated above the points
    expected = "shapes on bench shapes; 2 prompts x seed 0; 5 DDIM steps, guidance 5.0, eta 0.0"
    assert title == f"Figure 5 {expected}"
