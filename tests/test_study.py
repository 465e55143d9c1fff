"""`dsharp reproduce`: study files validate up front, rows run once and are reused, a changed
row is refused, and tables and the three figure types are written."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from dsharp.cli import app
from dsharp.config import RecipeError, save_recipe
from dsharp.curves import moving_average, step_series
from dsharp.study import load_study, run_study
from study_rows import finish_rows

ROOT = Path(__file__).resolve().parent.parent
TINY_RLHF = ROOT / "recipes" / "tiny" / "rlhf_sharpening.yaml"


def _write_study(path: Path, data: dict) -> Path:
    path.write_text("# dsharp reproduce study.yaml\n" + yaml.safe_dump(data, sort_keys=False))
    return path


def _invoke(*args: object):
    return CliRunner().invoke(app, ["reproduce", *[str(a) for a in args]])


# --------------------------------------------------------------------------- end to end


def _table_study(tmp_path: Path, model: Path, n: int = 2) -> dict:
    return {
        "kind": "table",
        "name": "table2",
        "title": "tiny table",
        "base": str(TINY_RLHF),
        "overrides": [
            f"model.pretrained={model}",
            "train.max_steps=1",
            "method.infer_steps=2",
            "sample.steps=2",
        ],
        "rows": [
            {"label": "base", "train": False},
            {"label": "n=2", "overrides": [f"method.n={n}"]},
        ],
        "evaluate": {"prompts": ["a red circle"], "seeds": 1},
        "output_dir": str(tmp_path / "study"),
    }


def test_table_study_runs_reuses_and_refuses_a_changed_row(
    tmp_path: Path, tiny_sd_dir: Path, monkeypatch: pytest.MonkeyPatch
):
    study = _write_study(tmp_path / "study.yaml", _table_study(tmp_path, tiny_sd_dir))
    out = tmp_path / "study"

    result = _invoke(study, "--no-progress")
    assert result.exit_code == 0, result.output
    for row in ("base", "n-2"):
        doc = json.loads((out / row / "eval.json").read_text())
        assert doc["n_images"] == 1 and doc["trained"] == (row != "base")
    assert (out / "n-2" / "checkpoints" / "step-000001" / "trainer_state.json").exists()
    table_md = (out / "table.md").read_text()
    assert "| row | overall |" in table_md and "| n=2 |" in table_md and "| base |" in table_md
    with open(out / "table.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0][:2] == ["row", "overall"] and [r[0] for r in rows[1:]] == ["base", "n=2"]

    # Rerun: nothing is trained or evaluated again.
    import dsharp.engine
    import dsharp.study

    calls: list[str] = []
    monkeypatch.setattr(dsharp.engine, "train", lambda *a, **k: calls.append("train"))
    monkeypatch.setattr(dsharp.study, "_evaluate_row", lambda *a, **k: calls.append("eval"))
    mtime = (out / "n-2" / "eval.json").stat().st_mtime_ns
    again = _invoke(study, "--no-progress")
    assert again.exit_code == 0, again.output
    assert calls == []
    assert (out / "n-2" / "eval.json").stat().st_mtime_ns == mtime
    dry = _invoke(study, "--dry-run")
    assert dry.exit_code == 0 and "reuse" in dry.output and "train " not in dry.output

    # The same label with other settings: an error naming the field, before anything runs.
    _write_study(study, _table_study(tmp_path, tiny_sd_dir, n=3))
    changed = _invoke(study, "--no-progress")
    assert changed.exit_code == 2
    assert "method.n" in changed.output and "delete" in changed.output
    assert calls == []


def test_interrupted_row_resumes_from_its_checkpoint(tmp_path: Path, monkeypatch):
    """A row with checkpoints short of max_steps trains on with train.resume=latest."""
    data = _table_study(tmp_path, Path("dsharp-mini"))
    data["overrides"] = ["train.max_steps=4"]
    data["rows"] = data["rows"][1:]
    loaded = load_study(_write_study(tmp_path / "study.yaml", data))
    plan = loaded.rows[0]
    save_recipe(plan.recipe, plan.run_dir / "recipe.yaml")
    ckpt = plan.run_dir / "checkpoints" / "step-000002"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text('{"step": 2}')

    import dsharp.engine
    import dsharp.study
    import dsharp.study_outputs

    seen = []
    monkeypatch.setattr(dsharp.engine, "train", lambda r, **k: seen.append(r.train.resume))
    monkeypatch.setattr(dsharp.study, "_evaluate_row", lambda *a, **k: None)
    monkeypatch.setattr(dsharp.study_outputs, "write_outputs", lambda *a, **k: None)
    from dsharp.study import plan_study

    assert plan_study(loaded)[0].status == "resume from step 2"
    run_study(loaded, progress=False, echo=lambda _: None)
    assert seen == ["latest"]


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"rowz": []}, "rowz: unknown key, did you mean 'rows'?"),
        ({"base": "missing.yaml"}, "base: base recipe not found"),
        ({"kind": "chart"}, "kind: expected one of"),
        ({"rows": [{"label": "a", "overrides": ["method.nn=2"]}]}, "rows.0 (a)"),
        ({"rows": [{"label": "a b"}, {"label": "a-b"}]}, "rows.1.label"),
        ({"rows": [{"label": "x", "overrides": ["output_dir=/tmp/y"]}]}, "rows.0.overrides"),
        ({"evaluate": {"bench": "nope"}}, "unknown bench 'nope'"),
        ({"evaluate": {"seedz": 2}}, "evaluate.seedz: unknown key, did you mean 'seeds'?"),
        ({"kind": "figure"}, "plot: a figure study needs a plot section"),
        ({"rows": [{"label": "a", "paper_row": 7}]}, "paper row 7 not in table2"),
        (
            {"evaluate": {"prompts": ["a red circle", "a pink circle"], "seeds": 1}},
            "rows.0 (base): eval.prompts: reward 'shapes' cannot score a prompt: unknown word",
        ),
    ],
)
def test_bad_study_is_one_line_exit_2(tmp_path: Path, change: dict, expected: str):
    data = _table_study(tmp_path, Path("dsharp-mini"))
    data["overrides"] = []
    data.update(change)
    study = _write_study(tmp_path / "study.yaml", data)
    with pytest.raises(RecipeError) as err:
        load_study(study)
    assert expected in str(err.value)
    result = CliRunner().invoke(app, ["reproduce", str(study), "--dry-run"])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and str(study) in lines[0] and expected in lines[0]
    assert not (tmp_path / "study").exists()


def test_recipes_validate_accepts_a_study():
    study = ROOT / "recipes" / "mini" / "table2_samples.yaml"
    result = CliRunner().invoke(app, ["recipes", "validate", str(study)])
    assert result.exit_code == 0 and "table study" in result.output
    listing = CliRunner().invoke(app, ["recipes", "list", str(study.parent), "--json"])
    entry = next(e for e in json.loads(listing.output) if e["file"].endswith("table2_samples.yaml"))
    assert entry["method"].startswith("table study") and entry["model"] == "dsharp-mini"


@pytest.mark.parametrize("command", [["train"], ["eval", "--recipe"]])
def test_a_study_given_as_a_recipe_says_to_use_reproduce(command: list[str]):
    study = ROOT / "recipes" / "mini" / "table2_samples.yaml"
    result = CliRunner().invoke(app, [*command, str(study)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert (
        len(lines) == 1 and "a study, not a recipe" in lines[0] and "dsharp reproduce" in lines[0]
    )


# --------------------------------------------------------------------------- figures


def _figure(tmp_path: Path, name: str, plot: dict, rows: list[dict], **extra) -> dict:
    return {
        "kind": "figure",
        "name": name,
        "base": str(TINY_RLHF),
        "overrides": ["train.max_steps=8"],
        "rows": rows,
        "plot": plot,
        "output_dir": str(tmp_path / name),
        **extra,
    }


def _is_png(path: Path) -> bool:
    return path.read_bytes().startswith(b"\x89PNG")


def test_fig4_loss_curves_smoothed(tmp_path: Path, monkeypatch):
    import dsharp.engine

    monkeypatch.setattr(dsharp.engine, "train", lambda *a, **k: pytest.fail("trained"))
    rows = [{"label": "finetune"}, {"label": "sft sharpening", "overrides": ["method.n=2"]}]
    data = _figure(tmp_path, "fig4", {"x": "step", "y": "loss", "smooth": 3}, rows)
    loaded = load_study(_write_study(tmp_path / "fig4.yaml", data))
    finish_rows(
        loaded, metrics=lambda i, plan: [{"step": s, "loss": 1.0 / (s + i)} for s in range(1, 9)]
    )
    outcome = run_study(loaded, progress=False, echo=lambda _: None)
    png, table = tmp_path / "fig4" / "fig4.png", tmp_path / "fig4" / "fig4.csv"
    assert outcome.outputs == [png, table] and _is_png(png)
    with open(table, newline="") as fh:
        got = list(csv.DictReader(fh))
    assert len(got) == 16 and {r["series"] for r in got} == {"finetune", "sft sharpening"}
    third = next(r for r in got if r["series"] == "finetune" and r["step"] == "3")
    assert float(third["loss_smooth"]) == pytest.approx((1 + 1 / 2 + 1 / 3) / 3)


def test_fig5_score_vs_nfe_series(tmp_path: Path):
    rows = [
        {"label": "sharpening", "series": "Diffusion-Sharpening"},
        {"label": "base", "train": False, "series": "SD"},
        {
            "label": "search N=2",
            "train": False,
            "series": "inference scaling",
            "overrides": ["sample.method=inference_scaling", "sample.options.N=2"],
        },
        {
            "label": "search N=4",
            "train": False,
            "series": "inference scaling",
            "overrides": ["sample.method=inference_scaling", "sample.options.N=4"],
        },
    ]
    data = _figure(
        tmp_path, "fig5", {"x": "nfe", "y": "shapes"}, rows, evaluate={"prompts": ["a red circle"]}
    )
    loaded = load_study(_write_study(tmp_path / "fig5.yaml", data))
    nfe = [8, 8, 16, 32]
    finish_rows(
        loaded,
        result=lambda i, plan: {
            "overall": 0.5 + 0.1 * i,
            "nfe_per_image": nfe[i],
            "metrics": {"shapes": {"mean": 0.5 + 0.1 * i, "std": 0.1}},
        },
    )
    run_study(loaded, progress=False, echo=lambda _: None)
    assert _is_png(tmp_path / "fig5" / "fig5.png")
    with open(tmp_path / "fig5" / "fig5.csv", newline="") as fh:
        got = list(csv.DictReader(fh))
    scaling = [r for r in got if r["series"] == "inference scaling"]
    assert [float(r["nfe_per_image"]) for r in scaling] == [16, 32]
    assert float(scaling[1]["shapes"]) == pytest.approx(0.8)


def test_fig6_reward_band(tmp_path: Path):
    rows = [{"label": "rlhf"}, {"label": "sft", "overrides": ["method.m=2"]}]
    plot = {"x": "step", "y": "reward", "band": "reward_std"}
    loaded = load_study(_write_study(tmp_path / "fig6.yaml", _figure(tmp_path, "fig6", plot, rows)))
    finish_rows(
        loaded,
        metrics=lambda i, plan: [
            {"step": s, "loss": 0.1, "reward": 0.1 * s, "reward_std": 0.05} for s in range(1, 9)
        ],
    )
    run_study(loaded, progress=False, echo=lambda _: None)
    assert _is_png(tmp_path / "fig6" / "fig6.png")
    header = (tmp_path / "fig6" / "fig6.csv").read_text().splitlines()[0]
    assert header == "series,step,reward,reward_smooth,reward_std,reward_std_smooth"


def test_figure_with_unfinished_rows_says_which(tmp_path: Path):
    rows = [{"label": "a"}, {"label": "b"}]
    data = _figure(tmp_path, "fig4", {"x": "step", "y": "loss"}, rows)
    loaded = load_study(_write_study(tmp_path / "fig4.yaml", data))
    finish_rows(loaded, metrics=lambda i, plan: [{"step": 1, "loss": 1.0}])
    import shutil

    shutil.rmtree(loaded.rows[1].run_dir / "checkpoints")
    said: list[str] = []
    from dsharp.study_outputs import write_outputs

    outcome = write_outputs(loaded, echo=said.append)
    assert outcome.missing == ["b"] and said[0] == "not finished, left out: b"


def test_moving_average_and_step_series():
    assert moving_average([1, 2, 3, 4], 2) == [1, 1.5, 2.5, 3.5]
    pts = step_series([{"step": 1, "loss": None}, {"step": 2, "loss": 2.0}], "loss")
    assert [p["step"] for p in pts] == [2]


def test_row_whose_base_leaves_method_defaults_unset_reuses_its_own_run(tmp_path: Path):
    """Training writes the method's own defaults (DDPO's n=4, not the schema's 3) into the saved
    recipe; planning the same row again must see the same recipe, not a changed one."""
    from dsharp.config import recipe_to_yaml
    from dsharp.methods.ddpo import DDPO
    from dsharp.methods.factory import resolve_method_kwargs
    from dsharp.study import plan_study

    base = tmp_path / "ddpo.yaml"
    base.write_text(
        "model: {pretrained: dsharp-mini}\n"
        "method: {name: ddpo}\n"
        "rewards: [{name: shapes}]\n"
        "data: {generator: shapes}\n"
        "train: {max_steps: 1}\n"
    )
    data = {
        "kind": "table",
        "name": "t",
        "base": str(base),
        "rows": [{"label": "ddpo"}],
        "evaluate": {"prompts": ["a red circle"], "seeds": 1},
        "output_dir": str(tmp_path / "study"),
    }
    loaded = load_study(_write_study(tmp_path / "study.yaml", data))
    (plan,) = plan_study(loaded)
    assert "n" not in plan.recipe.method.model_fields_set
    # What the Trainer saves: the method section resolved against DDPO's constructor.
    saved = plan.recipe.model_copy(deep=True)
    resolve_method_kwargs(saved.method, DDPO)
    assert saved.method.n != type(saved.method).model_fields["n"].default
    plan.run_dir.mkdir(parents=True)
    (plan.run_dir / "recipe.yaml").write_text(recipe_to_yaml(saved))

    (again,) = plan_study(load_study(tmp_path / "study.yaml"))
    assert again.conflict is None, again.conflict
    assert again.status == "train"


def test_a_figure_row_without_values_fails_before_any_figure_opens(tmp_path: Path):
    from dsharp.io import pyplot
    from dsharp.study import PlotSpec
    from dsharp.study_outputs import plot_steps

    plt = pyplot()
    before = len(plt.get_fignums())
    with pytest.raises(ValueError, match="empty: no 'loss' values"):
        plot_steps(
            [("ok", [{"step": 1, "loss": 0.5}]), ("empty", [{"step": 1}])],
            PlotSpec(x="step", y="loss"),
            "t",
            tmp_path / "f.png",
            tmp_path / "f.csv",
        )
    assert len(plt.get_fignums()) == before and not (tmp_path / "f.png").exists()


def test_only_picks_rows_by_label_or_slug_and_refuses_an_empty_or_unknown_one(tmp_path: Path):
    study = _write_study(tmp_path / "study.yaml", _table_study(tmp_path, Path("dsharp-mini")))
    from dsharp.study import select_rows

    loaded = load_study(study)
    assert [p.label for p in select_rows(loaded, ["n-2,base"])] == ["n=2", "base"]
    for only, problem in [("", "no row label given"), ("n=3", "no row labelled 'n=3'")]:
        result = _invoke(study, "--dry-run", "--only", only)
        assert result.exit_code == 2, result.output
        assert f"{study}: --only: {problem} (rows: base, n=2)" in result.output


METHOD_RUNS = [  # one short run of every training method: (method, recipe, overrides)
    ("rlhf_sharpening", "quickstart.yaml", ["method.n=2", "method.infer_steps=2"]),
    ("sft_sharpening", "mini/sft.yaml", []),
    ("finetune", "mini/finetune.yaml", []),
    ("diffusion_dpo", "mini/diffusion_dpo.yaml", []),
    ("d3po", "mini/d3po.yaml", ["method.infer_steps=2"]),
    ("ddpo", "mini/ddpo.yaml", ["method.infer_steps=2"]),
    ("iterpo", "mini/iterpo.yaml", []),
]


def test_the_logged_columns_check_covers_every_method():
    from dsharp.methods.registry import METHODS

    assert sorted(m for m, _, _ in METHOD_RUNS) == sorted(m.name for m in METHODS)


@pytest.mark.parametrize(("method", "recipe", "shrink"), METHOD_RUNS)
def test_every_method_logs_only_columns_a_step_figure_may_plot(tmp_path, method, recipe, shrink):
    """A figure study's plot.y (x: step) is checked against each method's declared
    metrics.jsonl columns (dsharp.methods.registry): they must be all it logs."""
    from dsharp import engine
    from dsharp.config import load_recipe
    from dsharp.io import read_jsonl
    from dsharp.methods.registry import step_columns

    out = tmp_path / "run"
    small = ["train.max_steps=1", "train.batch_size=2", f"output_dir={out}", *shrink]
    recipe_ = load_recipe(ROOT / "recipes" / recipe, small)
    assert recipe_.method.name == method
    engine.train(recipe_, progress=False)
    (row,) = read_jsonl(out / "metrics.jsonl")
    assert set(row) <= set(step_columns(method)), set(row) - set(step_columns(method))


def test_a_study_may_change_what_a_resumed_train_may_change(
    tmp_path: Path, tiny_sd_dir: Path, monkeypatch: pytest.MonkeyPatch
):
    """Any change was a conflict that said to delete the rows. As `dsharp train`'s resume
    does, a larger train.max_steps trains the rows on (untrained rows keep their
    evaluation), other eval settings evaluate the rows again without training, and a real
    change (method.n) or a max_steps below what was trained is still refused."""
    import dsharp.engine

    def _wide(*args):
        return CliRunner().invoke(app, ["reproduce", *map(str, args)], env={"COLUMNS": "300"})

    data = _table_study(tmp_path, tiny_sd_dir)
    study = _write_study(tmp_path / "study.yaml", data)
    out = tmp_path / "study"
    assert _invoke(study, "--no-progress").exit_code == 0
    base_eval = (out / "base" / "eval.json").stat().st_mtime_ns

    def no_training(*args, **kwargs):
        raise AssertionError("trained")

    with monkeypatch.context() as patched:
        patched.setattr(dsharp.engine, "train", no_training)
        data["evaluate"]["seeds"] = 2
        _write_study(study, data)
        dry = _wide(study, "--dry-run")
        assert dry.exit_code == 0, dry.output
        assert dry.output.count("evaluate again (eval.seeds: 1 -> 2)") == 2
        again = _invoke(study, "--no-progress")
        assert again.exit_code == 0, again.output
    for row in ("base", "n-2"):
        assert json.loads((out / row / "eval.json").read_text())["n_images"] == 2
        assert yaml.safe_load((out / row / "recipe.yaml").read_text())["eval"]["seeds"] == 2
    assert "reuse" in _wide(study, "--dry-run").output
    base_eval = (out / "base" / "eval.json").stat().st_mtime_ns

    data["overrides"][1] = "train.max_steps=2"  # from 1
    _write_study(study, data)
    dry = _wide(study, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "resume from step 1" in dry.output
    more = _invoke(study, "--no-progress")
    assert more.exit_code == 0, more.output
    assert (out / "n-2" / "checkpoints" / "step-000002" / "trainer_state.json").exists()
    assert [r["step"] for r in map(json.loads, (out / "n-2" / "metrics.jsonl").open())] == [1, 2]
    assert (out / "base" / "eval.json").stat().st_mtime_ns == base_eval  # nothing to redo

    data["overrides"][1] = "train.max_steps=1"  # below the step the row reached
    _write_study(study, data)
    fewer = _wide(study, "--dry-run")
    assert fewer.exit_code == 2
    assert "trained to step 2, past the study's train.max_steps 1" in fewer.stderr
    data["overrides"][1] = "train.max_steps=2"
    data["rows"][1]["overrides"] = ["method.n=3"]
    _write_study(study, data)
    changed = _wide(study, "--dry-run")
    assert changed.exit_code == 2 and "method.n (saved 2, now 3)" in changed.stderr


def _stop_at(monkeypatch: pytest.MonkeyPatch, owner: object, name: str) -> None:
    """Make ``owner.name`` stop as Ctrl-C would, for tests of what an interrupted row leaves."""

    def stopped(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(owner, name, stopped)


def test_a_row_trained_on_never_reuses_the_shorter_run_s_evaluation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A larger train.max_steps trains a row on; its old eval.json scored the shorter run. It
    goes before training starts, and one left beside the longer run's final checkpoint (a
    stop between training and evaluating) reads as evaluating again, not as done."""
    import dsharp.engine
    from dsharp.checkpoints import checkpoint_dir
    from dsharp.study import _save_row_recipe, _train_row, plan_row

    mini = Path(__file__).resolve().parent.parent / "recipes" / "mini" / "table1.yaml"

    def row(steps: int):
        loaded = load_study(mini, [f"train.max_steps={steps}", f"output_dir={tmp_path}"])
        return loaded, next(p for p in loaded.rows if p.trained)

    def finish(plan, step: int) -> Path:
        plan.run_dir.mkdir(parents=True, exist_ok=True)
        _save_row_recipe(plan)
        final = checkpoint_dir(plan.run_dir, step)
        final.mkdir(parents=True)
        (final / "trainer_state.json").write_text(json.dumps({"step": step}))
        return final

    loaded, plan = row(2)
    short = finish(plan, 2)
    plan.eval_path.write_text(json.dumps({"trained": True, "checkpoint": str(short)}))
    assert plan_row(loaded, plan).status == "reuse"
    loaded, plan = row(4)
    assert plan_row(loaded, plan).status == "resume from step 2"

    _stop_at(monkeypatch, dsharp.engine, "train")
    with pytest.raises(KeyboardInterrupt):
        _train_row(plan, progress=False)
    assert not plan.eval_path.exists()

    plan.eval_path.write_text(json.dumps({"trained": True, "checkpoint": str(short)}))
    finish(plan, 4)
    status = plan_row(loaded, plan).status
    assert status.startswith("evaluate again (its eval.json scored ") and "step-000002" in status


def test_an_evaluation_stopped_while_evaluating_again_leaves_the_row_to_evaluate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """The old eval.json goes before the recipe with the new settings is saved: a stop in
    between must not leave it passing for an evaluation of the new settings."""
    import dsharp.posttrain
    from dsharp.study import _evaluate_row, plan_study

    data = _table_study(tmp_path, Path("dsharp-mini"))
    data["rows"] = data["rows"][:1]  # the untrained base row
    study = _write_study(tmp_path / "study.yaml", data)
    finish_rows(load_study(study), result=lambda i, plan: {"overall": 0.5})
    data["evaluate"]["seeds"] = 2
    (plan,) = plan_study(load_study(_write_study(study, data)))
    assert plan.status == "evaluate again (eval.seeds: 1 -> 2)"

    _stop_at(monkeypatch, dsharp.posttrain, "evaluate_recipe")
    with pytest.raises(KeyboardInterrupt):
        _evaluate_row(plan, progress=False)
    assert not plan.eval_path.exists()
    (plan,) = plan_study(load_study(study))
    assert (plan.status, plan.conflict) == ("evaluate", None)


def test_reproduce_takes_overrides_that_every_row_gets_last(tmp_path: Path):
    """`dsharp reproduce` took none (only `recipes validate STUDY key=value` did, and there
    a row's own setting and the evaluate section won over them): a study can be shrunk
    and moved from the command line."""
    data = _table_study(tmp_path, Path("dsharp-mini"))
    data["rows"][1]["overrides"] += ["train.max_steps=5"]
    data["evaluate"] = {"bench": "shapes", "limit": 4, "seeds": 2}
    study = _write_study(tmp_path / "study.yaml", data)
    small = ["train.max_steps=2", "eval.limit=1", f"output_dir={tmp_path / 'small'}"]
    loaded = load_study(study, small)
    assert [p.recipe.train.max_steps for p in loaded.rows] == [2, 2]
    assert [(p.recipe.eval.limit, p.recipe.eval.seeds) for p in loaded.rows] == [(1, 2)] * 2
    assert loaded.output_dir == tmp_path / "small"
    assert [p.run_dir for p in loaded.rows] == [
        tmp_path / "small" / "base",
        tmp_path / "small" / "n-2",
    ]
    assert loaded.given == small[:2]

    result = CliRunner().invoke(
        app, ["reproduce", str(study), *small, "--dry-run"], env={"COLUMNS": "300"}
    )
    assert result.exit_code == 0, result.output
    # the caption wraps at the table's width, which the folders' paths set
    assert "then, as given: train.max_steps=2 eval.limit=1" in " ".join(result.output.split())
    assert str(tmp_path / "small" / "n-2") in result.output
    assert not (tmp_path / "small").exists()
    bad = CliRunner().invoke(app, ["reproduce", str(study), "train.max_stepz=2", "--dry-run"])
    assert bad.exit_code == 2
    assert "train.max_stepz: unknown key, did you mean 'max_steps'?" in bad.stderr
    helped = CliRunner().invoke(app, ["reproduce", "--help"], env={"COLUMNS": "300"})
    assert "train.max_steps=2 eval.limit=1 output_dir=runs/try" in helped.output


def test_the_plan_shows_no_secret_of_the_overrides(tmp_path: Path):
    """The plan goes to CI and job logs: a key in the study's, a row's or the command's
    overrides, or in the rewards of its evaluate section, is shown redacted."""
    secret = "sk-SECRET-canary-123"
    data = _table_study(tmp_path, Path("dsharp-mini"))
    grader = {"name": "mllm", "options": {"model": "m", "extra_body": {"token": secret}}}
    data["overrides"].append("rewards.0=" + json.dumps(grader))
    data["rows"][1]["overrides"].append(f"rewards.0.options.base_url=http://u:{secret}@h/v1")
    data["evaluate"]["rewards"] = [
        {"name": "mllm", "options": {"model": "m", "extra_body": {"api_key": secret}}}
    ]
    study = _write_study(tmp_path / "study.yaml", data)
    given = f"rewards.0.options.extra_body.api_key={secret}"
    result = CliRunner().invoke(
        app, ["reproduce", str(study), given, "--dry-run"], env={"COLUMNS": "400"}
    )
    assert result.exit_code == 0, result.output
    shown = " ".join(result.output.split())
    assert secret not in "".join(result.output.split())  # wrapped or not
    assert "rewards.0.options.base_url=http://<redacted>@h/v1" in shown
    assert '"token": "<redacted>"' in shown and '"api_key": "<redacted>"' in shown
    # a key in a base_url's query is refused (the grader cannot use such a URL), unechoed
    data["evaluate"]["rewards"][0]["options"]["base_url"] = f"http://h/v1?key={secret}"
    study = _write_study(tmp_path / "study.yaml", data)
    result = CliRunner().invoke(app, ["reproduce", str(study), "--dry-run"])
    assert result.exit_code == 2 and "expected no query string" in result.output
    assert secret not in "".join(result.output.split())
    assert "rewards.0.options.extra_body.api_key=<redacted>" in shown and "method.n=2" in shown
