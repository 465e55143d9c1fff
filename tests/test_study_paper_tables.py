"""A study's table beside the paper, its plan statuses, its reward-evaluation column and its
NFE figure, on row folders made by hand (no model)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from dsharp.config import RecipeError, save_recipe
from dsharp.study import load_study, paper_row_of, plan_study
from dsharp.study_outputs import write_outputs
from study_files import write_study
from study_rows import finish_rows

ROOT = Path(__file__).resolve().parent.parent


def _study(tmp_path: Path, name: str, rows: list[dict], **extra) -> Path:
    return write_study(tmp_path, rows, name=name, **extra)


def _finish(loaded, result, metrics: list[dict] | None = None) -> None:
    """Make each row's folder look finished: recipe, final checkpoint, metrics of a trained
    row, eval.json."""

    def rows(i, plan):
        if not plan.trained:
            return None
        return metrics or [{"step": plan.recipe.train.max_steps, "loss": 0.1}]

    finish_rows(loaded, metrics=rows, result=lambda i, plan: result(plan))


def _csv(path: Path) -> list[list[str]]:
    with open(path, newline="") as fh:
        return list(csv.reader(fh))


def _clip(value: float) -> dict:
    return {"overall": value, "metrics": {"clip": {"mean": value}}}


@pytest.mark.parametrize(("table", "expected"), [("table2", 3), ("table3", 2)])
def test_a_trained_rows_paper_row_is_its_n_or_m(tmp_path: Path, table: str, expected: int):
    """Table 2 varies method.n, Table 3 method.m."""
    rows = [{"label": "row", "overrides": ["method.m=2", "method.n=3"]}]
    (plan,) = load_study(_study(tmp_path, table, rows)).rows
    assert paper_row_of(table, plan) == expected


def test_table2_study_beside_the_paper_with_metrics_the_paper_partly_has(
    tmp_path: Path,
):
    """Rows with clip but no image_reward or mllm are still shown
    beside the paper. The untrained base row has no n, so Table 2 leaves it out."""
    rows = [
        {"label": "base", "train": False},
        {"label": "n=2", "overrides": ["method.n=2"]},
    ]
    loaded = load_study(_study(tmp_path, "table2", rows))
    _finish(loaded, lambda plan: _clip(0.33))
    outcome = write_outputs(loaded, echo=lambda _: None)
    paper_csv = tmp_path / "out" / "table-paper.csv"
    assert paper_csv in outcome.outputs
    got = _csv(paper_csv)
    assert got[0] == ["row", "clip_score", "image_reward", "mllm"]
    assert [r[0] for r in got[1:]] == ["paper:2", "ours:n=2", "delta:n=2"]
    assert float(got[3][1]) == pytest.approx(0.33 - 0.336) and got[3][2] == ""


def test_study_csvs_leave_a_missing_value_empty_where_the_markdown_shows_a_dash(
    tmp_path: Path,
):
    """table.md shows a missing value as '-'; table.csv and table-paper.csv wrote 'nan'
    and '-', text to pandas and spreadsheets, where an empty cell reads as missing."""
    pandas = pytest.importorskip("pandas")
    rows = [{"label": "base", "train": False}, {"label": "n=2", "overrides": ["method.n=2"]}]
    loaded = load_study(_study(tmp_path, "table2", rows))

    def result(plan) -> dict:
        extra = {} if plan.trained else {"aesthetic": {"mean": 5.5}}
        return {"overall": 0.33, "metrics": {"clip": {"mean": 0.33}, **extra}}

    _finish(loaded, result)
    write_outputs(loaded, echo=lambda _: None)
    out = tmp_path / "out"
    markdown = (out / "table.md").read_text()
    assert "| - |" in markdown and "nan" not in markdown
    table = pandas.read_csv(out / "table.csv").set_index("row")
    assert table.loc["base", "aesthetic"] == 5.5
    assert pandas.isna(table.loc["n=2", "aesthetic"])
    assert "nan" not in (out / "table.csv").read_text()
    paper = pandas.read_csv(out / "table-paper.csv").set_index("row")
    assert paper.loc["ours:n=2", "clip_score"] == pytest.approx(0.33)
    assert pandas.isna(paper.loc["ours:n=2", "image_reward"])
    assert pandas.isna(paper.loc["delta:n=2", "mllm"])


def test_table1_study_compares_every_row_by_its_label(tmp_path: Path):
    """Table 1 matches a row by its label, else the base model, unless the row names its
    paper row; rows without a paper_row are kept."""
    rows = [
        {"label": "sdxl", "train": False},
        {"label": "rlhf sharpening"},
        {"label": "mine", "paper_row": "ddpo"},
    ]
    loaded = load_study(_study(tmp_path, "table1", rows))
    _finish(loaded, lambda plan: _clip(0.33))
    write_outputs(loaded, echo=lambda _: None)
    got = _csv(tmp_path / "out" / "table-paper.csv")
    assert [r[0] for r in got[1::3]] == [
        "paper:sdxl",
        "paper:rlhf_sharpening",
        "paper:ddpo",
    ]
    assert [r[0] for r in got[2::3]] == [
        "ours:sdxl",
        "ours:rlhf sharpening",
        "ours:mine",
    ]


def test_an_evaluation_of_the_other_kind_of_row_is_a_conflict_and_left_out(
    tmp_path: Path,
):
    """A trained row's eval.json in a `train: false` row's folder is not that row's
    evaluation, and a row in conflict is not shown."""
    rows = [{"label": "base", "train": False}, {"label": "tuned"}]
    loaded = load_study(_study(tmp_path, "mine", rows))
    _finish(loaded, lambda plan: _clip(0.5))
    base = loaded.rows[0]
    base.eval_path.write_text(json.dumps({"label": "base", "trained": True, **_clip(0.9)}))
    plans = plan_study(loaded)
    assert "is the evaluation of a trained row" in (plans[0].conflict or "")
    assert plans[1].conflict is None
    said: list[str] = []
    outcome = write_outputs(loaded, echo=said.append)
    assert outcome.shown == ["tuned"] and outcome.missing == ["base"]
    assert [r[0] for r in _csv(tmp_path / "out" / "table.csv")[1:]] == ["tuned"]


def test_an_interrupted_row_says_it_resumes_from_its_newest_checkpoint(tmp_path: Path):
    """The plan names the newest checkpoint, which resume uses."""
    loaded = load_study(
        _study(
            tmp_path,
            "mine",
            [{"label": "row"}],
            overrides=["model.pretrained=dsharp-mini", "train.max_steps=8"],
        )
    )
    (plan,) = loaded.rows
    save_recipe(plan.recipe, plan.run_dir / "recipe.yaml")
    for step in (2, 4):
        ckpt = plan.run_dir / "checkpoints" / f"step-{step:06d}"
        ckpt.mkdir(parents=True)
        (ckpt / "trainer_state.json").write_text(json.dumps({"step": step}))
    (plan,) = plan_study(loaded)
    assert plan.status == "resume from step 4"


def test_table_counts_the_reward_evaluations_a_trained_row_spent(tmp_path: Path):
    """A trained row's table line adds its training's reward evaluations (from
    metrics.jsonl) to the search's; an untrained row has only the search's."""
    rows = [{"label": "base", "train": False}, {"label": "tuned"}]
    loaded = load_study(_study(tmp_path, "mine", rows))
    metrics = [
        {"step": 1, "loss": 0.1, "reward_evals": 6},
        {"step": 2, "reward_evals": 12},
    ]
    result = {**_clip(0.5), "reward_evals_per_image": 2, "n_images": 3}
    _finish(loaded, lambda plan: result, metrics)
    write_outputs(loaded, echo=lambda _: None)
    got = _csv(tmp_path / "out" / "table.csv")
    col = got[0].index("reward evals (total)")
    assert {r[0]: r[col] for r in got[1:]} == {"base": "6", "tuned": "18"}


def test_nfe_figure_joins_a_series_in_nfe_order_whatever_the_row_order(tmp_path: Path):
    """Points of one series are listed and joined by NFE."""
    rows = [
        {
            "label": f"search N={n}",
            "train": False,
            "series": "search",
            "overrides": ["sample.method=inference_scaling", f"sample.options.N={n}"],
        }
        for n in (4, 2)
    ]
    figure = {"kind": "figure", "name": "fig5", "plot": {"x": "nfe", "y": "overall"}}
    overrides = ["model.pretrained=dsharp-mini"]
    path = write_study(tmp_path, rows, **figure, overrides=overrides, file="fig.yaml")
    loaded = load_study(path)
    nfe = {"search N=4": 32, "search N=2": 16}
    _finish(
        loaded,
        lambda plan: {
            "overall": nfe[plan.label] / 100,
            "nfe_per_image": nfe[plan.label],
        },
    )
    write_outputs(loaded, echo=lambda _: None)
    got = _csv(tmp_path / "out" / "fig5.csv")
    assert [(r[1], r[2]) for r in got[1:]] == [
        ("search N=2", "16.0"),
        ("search N=4", "32.0"),
    ]


def test_band_columns_hold_the_raw_band_then_its_smoothed_value(tmp_path: Path):
    """The CSV beside figure 6 holds each band in its own column (band, band_smooth)."""
    from dsharp.study import PlotSpec
    from dsharp.study_outputs import plot_steps

    rows = [{"step": s, "reward": 0.1 * s, "reward_std": float(s % 2)} for s in range(1, 6)]
    spec = PlotSpec(x="step", y="reward", band="reward_std", smooth=3)
    plot_steps([("rlhf", rows)], spec, "t", tmp_path / "f.png", tmp_path / "f.csv")
    got = _csv(tmp_path / "f.csv")
    assert got[0] == [
        "series",
        "step",
        "reward",
        "reward_smooth",
        "reward_std",
        "reward_std_smooth",
    ]
    third = got[3]  # step 3: its own band 1, smoothed over steps 1-3 to 2/3
    assert float(third[4]) == 1.0 and float(third[5]) == pytest.approx(2 / 3)


def test_overrides_given_with_the_study_win_over_the_studys_own(tmp_path: Path):
    """`dsharp recipes validate STUDY key=value` checks the study as changed by
    key=value, so its overrides come after the study's."""
    loaded = load_study(_study(tmp_path, "mine", [{"label": "row"}]), ["train.max_steps=5"])
    assert loaded.rows[0].recipe.train.max_steps == 5


def test_a_table1_label_that_names_no_paper_row_is_refused_when_the_study_loads(tmp_path: Path):
    """It was paired with SDXL, the table's default row, without a word (a misspelled
    label's delta was a difference against SDXL)."""
    from typer.testing import CliRunner

    from dsharp.cli import app

    rows = [{"label": "sdxl", "train": False}, {"label": "rlhf_sharpenning"}]
    study = _study(tmp_path, "table1", rows)
    with pytest.raises(RecipeError) as caught:
        load_study(study)
    assert caught.value.field == "rows.1 (rlhf_sharpenning)"
    assert "no row of table1 is named 'rlhf_sharpenning' (rows: sdxl, " in caught.value.reason
    for command in (["recipes", "validate", str(study)], ["reproduce", str(study), "--dry-run"]):
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 2, result.output
        assert len(result.stderr.strip().splitlines()) == 1
        assert "no row of table1 is named 'rlhf_sharpenning'" in result.stderr
    assert not (tmp_path / "out").exists()
    rows[1]["paper_row"] = "rlhf_sharpening"  # named: compared with the row it names
    (_, plan) = load_study(_study(tmp_path, "table1", rows)).rows
    assert paper_row_of("table1", plan) == "rlhf_sharpening"


@pytest.mark.parametrize(
    ("plot", "expected"),
    [
        (
            {"x": "nfe", "y": "overal"},
            "plot.y: 'overal' is not a metric of the evaluation of row 'a', did you mean "
            "'overall'? (known: overall, strict, nfe_per_image, clip, clip_score)",
        ),
        (
            {"x": "step", "y": "rewardd", "band": "reward_std"},
            "plot.y: 'rewardd' is not a metrics.jsonl column of rlhf_sharpening (row 'a'), did "
            "you mean 'reward'?",
        ),
        ({"x": "step", "y": "reward", "band": "reward_sd"}, "plot.band: 'reward_sd' is not a"),
    ],
)
def test_a_plot_y_no_row_has_fails_when_the_study_loads(tmp_path: Path, plot, expected):
    """It failed only after every row had trained and been evaluated."""
    from typer.testing import CliRunner

    from dsharp.cli import app

    study = _study(tmp_path, "fig", [{"label": "a"}], plot=plot)
    study.write_text(study.read_text().replace("kind: table", "kind: figure"))
    evaluate = {"prompts": ["a red circle"], "rewards": [{"name": "clip"}]}
    data = yaml.safe_load(study.read_text()) | {"evaluate": evaluate}
    study.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(RecipeError, match="plot"):
        load_study(study)
    for command in (["recipes", "validate", str(study)], ["reproduce", str(study), "--dry-run"]):
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 2, result.output
        (line,) = result.stderr.strip().splitlines()
        assert expected in line
    good = {"x": "nfe", "y": "clip_score"} if plot["x"] == "nfe" else {"x": "step", "y": "loss"}
    data["plot"] = good
    study.write_text(yaml.safe_dump(data, sort_keys=False))
    assert load_study(study).study.plot.y == good["y"]


def test_a_table_without_a_paper_comparison_removes_the_old_one_and_says_why(tmp_path: Path):
    """After `--only base` with the trained rows' evaluations gone, table-paper.csv still
    held their numbers, table.md blamed the metrics, and named no row left out."""
    rows = [{"label": "base", "train": False}, {"label": "n=2", "overrides": ["method.n=2"]}]
    loaded = load_study(_study(tmp_path, "table2", rows))
    _finish(loaded, lambda plan: _clip(0.33))
    out = tmp_path / "out"
    write_outputs(loaded, echo=lambda _: None)
    assert (out / "table-paper.csv").exists()
    assert (
        "No paper row (untrained or not rlhf_sharpening, no paper_row): base."
        in (out / "table.md").read_text()
    )

    loaded.rows[1].eval_path.unlink()  # n=2 is no longer finished
    said: list[str] = []
    outcome = write_outputs(loaded, echo=said.append)
    assert not (out / "table-paper.csv").exists()
    assert out / "table-paper.csv" not in outcome.outputs
    table_md = (out / "table.md").read_text()
    assert "Not finished, left out: n=2." in table_md
    why = (
        "none of the rows shown has a paper row "
        "(base: untrained or not rlhf_sharpening, no paper_row)"
    )
    assert f"Not beside the paper's table2: {why}." in table_md
    assert "No metric of these rows maps" not in table_md
    assert said == ["not finished, left out: n=2", f"not beside the paper's table2: {why}"]


@pytest.mark.parametrize("table", ["table2", "table3"])
def test_a_study_row_of_another_method_has_no_row_of_tables_2_and_3(tmp_path: Path, table: str):
    """A DDPO row's method.n is its samples per prompt and its m unused: not the n or m of
    the paper's RLHF sharpening rows, so it is left out unless it names a paper_row; so is
    an SFT sharpening row (the tables' n = 3 and m = 3 rows are Table 1's RLHF numbers)."""
    ddpo = str(ROOT / "recipes" / "mini" / "ddpo.yaml")
    sft = str(ROOT / "recipes" / "mini" / "sft.yaml")
    rows = [
        {"label": "ddpo", "base": ddpo},
        {"label": "ddpo named", "base": ddpo, "paper_row": 2},
        {"label": "sft", "base": sft},
        {"label": "n=4", "overrides": ["method.n=4", "method.m=4"]},
    ]
    plans = load_study(_study(tmp_path, table, rows)).rows
    assert [paper_row_of(table, plan) for plan in plans] == [None, 2, None, 4]


def test_a_rows_quick_t2i_compbench_look_is_noted_beside_the_paper(tmp_path: Path):
    """A T2I-CompBench evaluation written into a row folder (as recipes/paper/table1.yaml
    says to) joins the row; one of 2 prompts per category and 1 image per prompt printed
    its delta beside the paper's full-protocol numbers with no word."""
    loaded = load_study(_study(tmp_path, "table1", [{"label": "sdxl", "train": False}]))
    _finish(loaded, lambda plan: _clip(0.33))
    t2i = {
        "bench": "t2i-compbench",
        "split": "val",
        "overall": 0.5,
        "metrics": {"t2i_color": {"mean": 0.5}},
        "t2i_compbench": {"color": {"n_prompts": 2}},
        "images_per_prompt": 1,
        "limit": 2,
        "data": {"files": {"color_val.txt": {"matches_snapshot": True, "n": 300}}},
        "substitutions": [],
    }
    (loaded.rows[0].run_dir / "eval-t2i-compbench.json").write_text(json.dumps(t2i))
    write_outputs(loaded, echo=lambda _: None)
    markdown = (tmp_path / "out" / "table.md").read_text()
    assert (
        "Note: sdxl: its T2I-CompBench columns were measured with prompts per category "
        "color 2 of 300 (--limit 2); 1 image per prompt, not 10;" in markdown
    )
