"""`dsharp runs`: which run folders finished, which stopped, and what they scored."""

import json
import os

import pytest
from typer.testing import CliRunner

from dsharp.cli import app
from dsharp.runs import find_runs, summarise_run


def _run(parent, name, *, max_steps, checkpoint=None, metrics=True, evals=None, age=0):
    run = parent / name
    run.mkdir()
    (run / "recipe.yaml").write_text(
        "model:\n  pretrained: dsharp-mini\nmethod:\n  name: rlhf_sharpening\n"
        f"train:\n  max_steps: {max_steps}\n"
    )
    if metrics:
        (run / "metrics.jsonl").write_text(
            '{"step": 1, "reward": 0.25}\n{"step": 2, "reward": NaN}\n'
        )
    if checkpoint is not None:
        ckpt = run / "checkpoints" / f"step-{checkpoint:06d}"
        ckpt.mkdir(parents=True)
        (ckpt / "trainer_state.json").write_text(json.dumps({"step": checkpoint}))
    for file_name, text in (evals or {}).items():
        (run / file_name).write_text(text)
    stamp = 1_700_000_000 - age * 3600  # older runs list later
    for path in [*run.iterdir(), run]:
        os.utime(path, (stamp, stamp))
    return run


def test_runs_tell_finished_stopped_and_unsaved_runs_apart_newest_first(tmp_path):
    final = json.dumps({"overall": 0.75})
    _run(tmp_path, "done", max_steps=2, checkpoint=2, evals={"eval-final.json": final})
    _run(tmp_path, "stopped", max_steps=3, checkpoint=1, age=1)
    _run(tmp_path, "crashed", max_steps=3, age=2)
    base_only = {"eval-base.json": json.dumps({"overall": 0.5}), "eval-x.json": "{torn"}
    _run(tmp_path, "evaluated", max_steps=3, metrics=False, evals=base_only, age=3)
    (tmp_path / "not-a-run").mkdir()
    found = find_runs(tmp_path)
    assert [r.name for r in found] == ["done", "stopped", "crashed", "evaluated"]
    done, stopped, crashed, evaluated = found
    assert (done.status, done.step, done.score, done.score_from) == (
        "finished",
        2,
        0.75,
        "eval-final.json",
    )
    assert done.reward == 0.25  # the last finite reward logged
    assert (stopped.status, stopped.step, stopped.score) == ("stopped", 1, None)
    assert (crashed.status, crashed.step) == ("no checkpoint", None)
    # eval-base.json is the base model's score, and a torn file is no score at all
    assert (evaluated.status, evaluated.score) == ("evaluation only", None)


def test_runs_list_a_folder_that_only_an_evaluation_of_a_recipe_wrote(tmp_path):
    """`dsharp eval --recipe` writes RUN/eval-BENCH.json and no recipe.yaml."""
    sampler = tmp_path / "mini-demon"
    sampler.mkdir()
    evaluation = {"bench": "shapes", "model": "dsharp-mini", "recipe": "recipes/mini/demon.yaml"}
    evaluation |= {"overall": 0.5, "sample": {"method": "demon", "steps": 25}}
    (sampler / "eval-shapes.json").write_text(json.dumps(evaluation))
    plain = tmp_path / "mini-plain"
    plain.mkdir()
    evaluation |= {"model": "/models/tiny-sd", "sample": {"method": "default"}, "overall": 0.25}
    (plain / "eval-shapes.json").write_text(json.dumps(evaluation))
    (tmp_path / "samples").mkdir()  # neither a recipe nor an evaluation
    found = {r.name: r for r in find_runs(tmp_path)}
    assert sorted(found) == ["mini-demon", "mini-plain"]
    demon, plain_run = found["mini-demon"], found["mini-plain"]
    assert (demon.method, demon.model, demon.status) == (
        "demon (sampler)",
        "dsharp-mini",
        "evaluation only",
    )
    assert (demon.score, demon.score_from, demon.step, demon.max_steps) == (
        0.5,
        "eval-shapes.json",
        None,
        None,
    )
    # plain DDIM ran: named as `dsharp recipes list` names it, not "-" as if nothing had
    assert (plain_run.method, plain_run.model, plain_run.score) == (
        "default (sampler)",
        "/models/tiny-sd",
        0.25,
    )
    table = CliRunner().invoke(app, ["runs", str(plain)])
    assert table.exit_code == 0, table.output
    assert "method default (sampler), model /models/tiny-sd" in " ".join(table.output.split())
    assert [r.name for r in find_runs(sampler)] == ["mini-demon"]  # the folder given itself


def test_a_study_row_scored_without_training_names_its_sampler_not_the_recipe_method(tmp_path):
    """A study's untrained rows keep their base recipe (method rlhf_sharpening) but only an
    evaluation ran: `dsharp runs` names what was scored, as for `eval --recipe` folders."""
    demon = {"overall": 0.48, "sample": {"method": "demon"}, "model": "dsharp-mini"}
    _run(
        tmp_path,
        "demon-k-4",
        max_steps=3,
        metrics=False,
        evals={"eval-shapes.json": json.dumps(demon)},
    )
    plain = demon | {"sample": {"method": "default"}}
    _run(
        tmp_path, "base", max_steps=3, metrics=False, evals={"eval-shapes.json": json.dumps(plain)}
    )
    found = {r.name: r for r in find_runs(tmp_path)}
    assert (found["demon-k-4"].method, found["demon-k-4"].status) == (
        "demon (sampler)",
        "evaluation only",
    )
    assert (found["base"].method, found["base"].model) == ("default (sampler)", "dsharp-mini")
    trained = _run(
        tmp_path,
        "trained",
        max_steps=2,
        checkpoint=2,
        evals={"eval-shapes.json": json.dumps(demon)},
    )
    assert summarise_run(trained).method == "rlhf_sharpening"  # it trained: its method ran


def test_runs_tell_a_run_in_progress_and_one_that_never_stepped(tmp_path):
    import fcntl

    from dsharp.commands.runs import _steps
    from dsharp.folder_lock import LOCK_FILE

    going = _run(tmp_path, "going", max_steps=3, checkpoint=1)
    _run(tmp_path, "failed-at-load", max_steps=3, metrics=False, age=1)
    with open(going / LOCK_FILE, "a+", encoding="utf-8") as lock:  # as a training process holds it
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        running, never = find_runs(tmp_path)
        result = CliRunner().invoke(app, ["runs", str(tmp_path)])
    assert (running.status, running.step, _steps(running)) == ("running", 1, "1/3 running")
    assert "stopped run" not in result.output  # a run in progress is not one to resume
    assert (never.status, _steps(never)) == ("not started", "-/3 not started")
    assert find_runs(tmp_path)[0].status == "stopped"  # once the process let go


def test_an_older_run_naming_its_model_folder_relatively_shows_the_same_name(tmp_path, monkeypatch):
    (tmp_path / "models" / "tiny").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    old, new = _run(tmp_path, "old", max_steps=2), _run(tmp_path, "new", max_steps=2)
    for run, name in ((old, "./models/tiny"), (new, str(tmp_path / "models" / "tiny"))):
        (run / "recipe.yaml").write_text(f"model:\n  pretrained: {name}\n")
    gone = _run(tmp_path, "gone", max_steps=2)
    (gone / "recipe.yaml").write_text("model:\n  pretrained: ./models/deleted\n")
    models = {r.name: r.model for r in find_runs(tmp_path)}
    assert models == {
        "old": str(tmp_path / "models" / "tiny"),
        "new": str(tmp_path / "models" / "tiny"),
        "gone": "./models/deleted",  # as saved where it does not resolve
    }


def test_one_damaged_or_unreadable_run_is_marked_and_the_others_still_list(tmp_path, monkeypatch):
    import dsharp.runs

    _run(tmp_path, "good", max_steps=2, checkpoint=2)
    (_run(tmp_path, "binary", max_steps=3, checkpoint=1) / "metrics.jsonl").write_bytes(b"\xff")
    (_run(tmp_path, "torn-recipe", max_steps=3, checkpoint=1) / "recipe.yaml").write_text("a: [")
    _run(tmp_path, "locked-out", max_steps=3, checkpoint=1)
    real = dsharp.runs.summarise_run

    def summarise(run_dir):
        if run_dir.name == "locked-out":  # as a folder this user may not read
            raise PermissionError(13, "Permission denied")
        return real(run_dir)

    monkeypatch.setattr(dsharp.runs, "summarise_run", summarise)
    found = {r.name: r for r in find_runs(tmp_path)}
    assert found["good"].status == "finished"
    assert (found["binary"].status, found["binary"].method) == (
        "metrics.jsonl unreadable",
        "rlhf_sharpening",
    )
    assert found["torn-recipe"].status == "recipe.yaml unreadable"
    assert found["locked-out"].status == "unreadable: Permission denied"
    result = CliRunner().invoke(app, ["runs", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "stopped run" not in result.output  # none of them is one to resume


def test_runs_command_table_json_and_errors(tmp_path):
    _run(tmp_path, "stopped", max_steps=3, checkpoint=1)
    result = CliRunner().invoke(app, ["runs", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "1/3 stopped" in result.output
    assert "1 stopped run: continue it with `dsharp train" in result.output
    listed = json.loads(CliRunner().invoke(app, ["runs", str(tmp_path), "--json"]).output)
    assert [(r["name"], r["step"], r["max_steps"]) for r in listed] == [("stopped", 1, 3)]

    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(app, ["runs", str(empty)])
    assert result.exit_code == 0 and "no run folders" in result.output
    result = CliRunner().invoke(app, ["runs", str(tmp_path / "absent")])
    assert result.exit_code == 1 and "absent: no such folder" in result.output


def test_a_first_try_with_no_runs_folder_says_there_are_none_yet(tmp_path, monkeypatch):
    """A new user's `dsharp runs` before any training exited 1 with "runs: no such folder";
    a folder named on the command line that is not there is still an error."""
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["runs"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == (
        "runs: no run folders yet (the folder does not exist); `dsharp train RECIPE` writes "
        "runs/NAME, e.g. dsharp train recipes/quickstart.yaml"
    )
    assert json.loads(CliRunner().invoke(app, ["runs", "--json"]).stdout) == []
    result = CliRunner().invoke(app, ["runs", "elsewhere"])
    assert result.exit_code == 1 and "elsewhere: no such folder" in result.output


def test_runs_table_says_which_evaluation_gave_the_score():
    from dsharp.commands.runs import _evaluation

    assert _evaluation("eval-final.json", None, 4) == "final"
    assert _evaluation("eval-shapes-heldout.json", None, None) == "shapes-heldout"
    assert _evaluation("eval.json", 4, 4) == "eval"
    assert _evaluation(None, None, 4) == "-"


def test_runs_table_fits_80_columns_with_shared_method_and_model_in_the_title(tmp_path):
    """At 80 columns rich squeezed the run column to nothing; a method and model every run
    shares now go in the title, and every row keeps its name, steps, score and source."""
    final = json.dumps({"overall": 0.75})
    heldout = json.dumps({"overall": 0.5})
    _run(
        tmp_path, "quickstart-seed0", max_steps=50, checkpoint=50, evals={"eval-final.json": final}
    )
    _run(
        tmp_path,
        "quickstart-seed1",
        max_steps=100,
        age=1,
        evals={"eval-shapes-heldout.json": heldout},
    )
    result = CliRunner().invoke(app, ["runs", str(tmp_path)], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert all(len(line) <= 80 for line in lines)
    assert "(methodrlhf_sharpening,modeldsharp-mini)" in "".join(result.output.split())
    rows = [line.split() for line in lines if "quickstart-seed" in line]
    assert rows == [
        ["quickstart-seed0", "50/50", "0.7500", "final", *rows[0][4:]],
        ["quickstart-seed1", "-/100", "no", "checkpoint", "0.5000", "shapes-heldout", *rows[1][6:]],
    ]
    (header,) = [line for line in lines if "updated" in line]
    assert header.split() == ["run", "steps", "score", "from", "updated"]


def test_a_run_folder_stands_for_its_own_evaluation_even_when_the_base_one_is_newer(tmp_path):
    """The report writes eval-base.json and eval-final.json back to back; on a coarse clock or
    after a copy the base file can look newer. A folder must never show the base's numbers."""
    import pytest

    from dsharp.report import load_result

    run = tmp_path / "run"
    run.mkdir()
    (run / "eval-final.json").write_text(json.dumps({"overall": 0.7, "n_images": 4}))
    (run / "eval-base.json").write_text(json.dumps({"overall": 0.3, "n_images": 4}))
    os.utime(run / "eval-final.json", ns=(1_000_000_000, 1_000_000_000))
    os.utime(run / "eval-base.json", ns=(2_000_000_000, 2_000_000_000))
    label, result = load_result(run)
    assert (label, result["overall"]) == ("run", 0.7)

    (run / "eval-final.json").unlink()
    with pytest.raises(FileNotFoundError, match="eval-base.json scores its base model"):
        load_result(run)
    from dsharp.paper_results import results_for_paper

    with pytest.raises(FileNotFoundError, match="eval-base.json scores its base model"):
        results_for_paper(run, "table1")  # `dsharp compare RUN --against paper`


def test_runs_on_a_run_folder_lists_it_and_on_a_file_says_so(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "recipe.yaml").write_text("method: {name: rlhf_sharpening}\n")
    assert [r.name for r in find_runs(run)] == ["run"]
    result = CliRunner().invoke(app, ["runs", str(run / "recipe.yaml")])
    assert result.exit_code == 1 and "is a file, not a folder" in result.stderr


def test_a_score_of_an_earlier_checkpoint_says_its_step(tmp_path):
    from dsharp.commands.runs import _evaluation

    run = tmp_path / "run"
    for step in (2, 4):
        folder = run / "checkpoints" / f"step-{step:06d}"
        folder.mkdir(parents=True)
        (folder / "trainer_state.json").write_text(json.dumps({"step": step}))
    (run / "recipe.yaml").write_text("train: {max_steps: 4}\n")
    (run / "eval-shapes.json").write_text(json.dumps({"overall": 0.5, "step": 2}))
    (done,) = find_runs(run)
    assert (done.score, done.score_step, done.step) == (0.5, 2, 4)
    assert _evaluation(done.score_from, done.score_step, done.step) == "shapes @ step 2"
    assert _evaluation("eval-final.json", 4, 4) == "final"


def test_training_warnings_say_when_nothing_was_scored_or_paired(tmp_path):
    from dsharp.runs import training_warnings

    run = tmp_path / "run"
    run.mkdir()
    rows = [{"step": 1, "reward": None, "pairs": 0}, {"step": 2, "reward": None, "pairs": 0}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    found = training_warnings(run)
    assert len(found) == 2 and "every reward was missing" in found[0]
    assert "no logged step had a usable best/worst pair" in found[1]
    rows[1] |= {"reward": 0.5, "pairs": 1}
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert training_warnings(run) == []
    (run / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 0.1}) + "\n")  # finetune
    assert training_warnings(run) == []


def test_at_80_columns_times_stay_whole_and_a_long_model_path_shows_its_last_part(tmp_path):
    """A long local model path and a long evaluation name used to crop the minutes of
    `updated`; names now fold where that costs fewest lines, and a path shows its last part."""
    stale = json.dumps({"overall": 0.5, "step": 3})
    _run(tmp_path, "quickstart", max_steps=4, checkpoint=4, evals={"eval-my-prompts.json": stale})
    _run(tmp_path, "rlhf_sharpening", max_steps=2, checkpoint=2, age=1)
    _run(tmp_path, "long", max_steps=10000, age=3)  # "-/10000 no checkpoint"
    tiny = _run(tmp_path, "ddp", max_steps=2, checkpoint=2, age=2)
    recipe = tiny / "recipe.yaml"
    long_path = "/work/somewhere/deep/audit39/readme-walk/tiny-sd"
    recipe.write_text(recipe.read_text().replace("dsharp-mini", long_path))
    result = CliRunner().invoke(app, ["runs", str(tmp_path)], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert all(len(line) <= 80 for line in lines)
    names = (["ddp"], ["quickstart"], ["long"])
    rows = [line.split() for line in lines if line.split()[:1] in names]
    assert len(rows) == 3
    for row in rows:  # the time is whole: month-day and hour:minute
        assert len(row[-1]) == 5 and row[-1][2] == ":" and row[-2][2] == "-", row
    (ddp,) = [row for row in rows if row[0] == "ddp"]
    assert ddp[:2] == ["ddp", "…/tiny-sd"]
    json_rows = json.loads(CliRunner().invoke(app, ["runs", str(tmp_path), "--json"]).output)
    assert long_path in [r["model"] for r in json_rows]


def test_a_damaged_trainer_state_marks_its_run_and_the_others_still_list(tmp_path):
    from dsharp.checkpoints import read_trainer_state

    good = _run(tmp_path, "good", max_steps=2, checkpoint=2)
    bad = _run(tmp_path, "bad", max_steps=4, checkpoint=2, age=1)
    state = bad / "checkpoints" / "step-000002" / "trainer_state.json"
    state.write_text('{"step": 2, "se')  # cut short
    with pytest.raises(ValueError, match=r"trainer_state.json: not JSON \("):
        read_trainer_state(state.parent)
    summaries = {r.name: r for r in find_runs(tmp_path)}
    assert summaries["good"].status == "finished" and summaries["good"].step == 2
    assert summaries["bad"].status == "checkpoint unreadable" and summaries["bad"].step is None
    assert good.exists()
    state.write_text('{"step": 1e400}')  # JSON, but no step: read as checkpoint_step reads it
    (bad_again,) = [r for r in find_runs(tmp_path) if r.name == "bad"]
    assert (bad_again.status, bad_again.step) == ("checkpoint unreadable", None)


def test_a_checkpoint_folder_it_may_not_read_marks_the_run_but_keeps_its_fields(
    tmp_path, monkeypatch
):
    """A checkpoint folder this user may not read (PermissionError from its stat) blanked
    the run's whole row ('unreadable: Permission denied': no method, model or score); a
    damaged trainer_state.json keeps them. Both now read 'checkpoint unreadable'."""
    from dsharp import checkpoints

    run = _run(tmp_path, "locked", max_steps=4, checkpoint=2)
    readable = summarise_run(run)

    def refused(run_dir):
        raise PermissionError(13, "Permission denied", str(run_dir / "checkpoints"))

    monkeypatch.setattr(checkpoints, "latest_checkpoint", refused)
    summary = summarise_run(run)
    assert (summary.status, summary.step) == ("checkpoint unreadable", None)
    assert (summary.method, summary.model) == (readable.method, readable.model)
    assert summary.method is not None


def test_an_evaluation_with_a_field_of_another_type_is_no_score_and_runs_still_lists(tmp_path):
    """`dsharp compare` refuses such a file (see test_evaluation_check); runs shows the score
    of the newest evaluation that reads, not one from that file."""
    evals = {
        "eval-a.json": json.dumps({"overall": 0.5, "metrics": {}}),
        "eval-b.json": json.dumps({"overall": 0.9, "metrics": []}),  # newest (same time, name)
    }
    _run(tmp_path, "run", max_steps=2, checkpoint=2, evals=evals)
    (found,) = find_runs(tmp_path)
    assert (found.score, found.score_from) == (0.5, "eval-a.json")
    result = CliRunner().invoke(app, ["runs", str(tmp_path)])
    assert result.exit_code == 0, result.output


def test_a_merge_of_one_run_reads_in_the_singular(tmp_path):
    run = _run(tmp_path, "doubled", max_steps=2, metrics=False)
    (run / "merge.json").write_text(json.dumps({"runs": [str(tmp_path / "a")], "scale": 2}))
    assert summarise_run(run).status == "merged (1 run, scale 2)"


def test_runs_points_at_a_study_folder_whose_rows_are_a_level_down(tmp_path):
    from typer.testing import CliRunner

    from dsharp.cli import app

    _run(tmp_path, "quickstart", max_steps=2, checkpoint=2)
    study = tmp_path / "mini fig5"
    study.mkdir()
    _run(study, "demon-k-4", max_steps=2, metrics=False, evals={"eval.json": '{"overall": 0.5}'})
    (tmp_path / "images").mkdir()  # neither a run nor a study
    result = CliRunner().invoke(app, ["runs", str(tmp_path)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"runs in {tmp_path} ")
    hint = f"{study}: a study's rows; list them with `dsharp runs '{study}'`"  # pastes whole
    assert lines[-1] == hint
    assert not any("demon-k-4" in line for line in lines[:-1])
    as_json = CliRunner().invoke(app, ["runs", str(tmp_path), "--json"])
    assert [r["name"] for r in json.loads(as_json.stdout)] == ["quickstart"]
    assert as_json.stderr.strip() == hint  # said beside the JSON, not in it
    rows = CliRunner().invoke(app, ["runs", str(study)], env={"COLUMNS": "200"}).stdout
    assert "demon-k-4" in rows and "a study's rows" not in rows


def test_a_run_folder_whose_recipe_sections_are_not_mappings_still_lists(tmp_path):
    run = tmp_path / "odd"
    run.mkdir()
    (run / "recipe.yaml").write_text("method: ddpo\ntrain: 5\nmodel: [a]\n")
    (odd,) = find_runs(tmp_path)
    assert (odd.name, odd.method, odd.model, odd.max_steps) == ("odd", None, None, None)


def test_runs_sort_newest_first_on_the_time_not_its_month_day_text(tmp_path):
    """`updated` shows month-day hour:minute; sorting on that text put a January run below a
    December one and runs of one minute in name order."""
    from datetime import datetime

    def at(run, when: datetime, plus: float = 0.0):
        stamp = when.timestamp() + plus
        for path in [*run.iterdir(), run]:
            os.utime(path, (stamp, stamp))

    new_year = datetime(2024, 1, 1, 0, 30)
    at(_run(tmp_path, "december", max_steps=2), datetime(2023, 12, 31, 23, 0))
    at(_run(tmp_path, "january", max_steps=2), new_year)
    at(_run(tmp_path, "a-same-minute-older", max_steps=2), new_year, plus=-20)
    at(_run(tmp_path, "b-same-minute-newer", max_steps=2), new_year, plus=-10)
    found = find_runs(tmp_path)
    assert [r.name for r in found] == [
        "january",
        "b-same-minute-newer",
        "a-same-minute-older",
        "december",
    ]
    assert found[0].updated == "01-01 00:30"
    assert found[0].updated_at == new_year.timestamp()


def test_a_run_without_its_recipe_is_not_offered_for_resuming(tmp_path):
    """A folder with checkpoints and an evaluation but no recipe.yaml read as `2/? stopped`
    and got the `train.resume=latest` hint, which train refuses (it cannot check the resume
    against the run's recipe): it says what is missing instead."""
    run = _run(tmp_path, "lost-recipe", max_steps=4, checkpoint=2, evals={"eval.json": "{}"})
    (run / "recipe.yaml").unlink()
    (found,) = find_runs(tmp_path)
    assert found.status == "recipe.yaml missing"
    result = CliRunner().invoke(app, ["runs", str(tmp_path)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "2/? recipe.yaml missing" in result.output
    assert "train.resume=latest" not in result.output
    assert "1 run has checkpoints but no recipe.yaml: train will not resume it" in result.output
