"""`dsharp eval --bench t2i-compbench` and `--bench <reward>` through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dsharp.cli import app

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "t2i-compbench"
CATEGORIES = ["color", "shape", "texture", "spatial", "non_spatial", "complex"]


@pytest.fixture(scope="module")
def evaluators(tmp_path_factory) -> dict:
    from dsharp.testing.tiny_rewards import make_tiny_t2i_evaluators

    return make_tiny_t2i_evaluators(tmp_path_factory.mktemp("t2i-evaluators"))


def _sets(options: dict) -> list[str]:
    return [arg for k, v in options.items() for arg in ("--set", f"{k}={v}")]


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data/t2i-compbench is not present")
def test_t2i_compbench_quick_look_prints_all_six_categories(tmp_path, tiny_sd_dir, evaluators):
    out = tmp_path / "t2i.json"
    args = ["eval", "--model", str(tiny_sd_dir), "--bench", "t2i-compbench", "--limit", "2"]
    args += ["--images-per-prompt", "1", "--steps", "2", "--data", str(SHARED)]
    args += ["--out", str(out), "--json", *_sets(evaluators)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout.strip().splitlines()[-1])
    for cat in CATEGORIES:
        assert f"t2i_{cat}" in doc["metrics"], cat
        assert doc["metrics"][f"t2i_{cat}"]["n"] == 2
    assert json.loads(out.read_text())["overall"] == doc["overall"]
    from dsharp.report import read_evaluation

    assert len(read_evaluation(out)["images"]) == 12  # per image, for compare --paired


def test_t2i_compbench_missing_category_file_is_named(tmp_path, tiny_sd_dir, evaluators):
    from dsharp.bench.t2i_data import CATEGORIES, files_for

    data = tmp_path / "data"
    data.mkdir()
    for category in CATEGORIES:  # every file but one, so that only that one is named
        for name in files_for(category, "val"):
            (data / name).write_text("a red book and a blue cup\n")
    (data / "shape_val.txt").unlink()
    args = ["eval", "--model", str(tiny_sd_dir), "--bench", "t2i-compbench", "--limit", "1"]
    args += ["--images-per-prompt", "1", "--data", str(data), *_sets(evaluators)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0
    assert "shape_val.txt" in result.output and "color_val.txt" not in result.output


def _t2i_data(folder: Path) -> Path:
    """Every val prompt file of T2I-CompBench, one prompt each."""
    from dsharp.bench.t2i_data import CATEGORIES, files_for

    folder.mkdir()
    for category in CATEGORIES:
        for name in files_for(category, "val"):
            (folder / name).write_text("a red book and a blue cup\n")
    return folder


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--categories", "colour"], "error: --categories: unknown category 'colour'"),
        (["--split", "test"], "error: --split: unknown split 'test'"),
        (["--set", "bogus=1"], "error: t2i-compbench evaluator option(s) bogus unknown"),
        (["--categories", "color,texture"], "texture_val.txt: no prompts in file"),
    ],
)
def test_t2i_compbench_bad_settings_exit_2_before_the_model_loads(
    tmp_path, tiny_sd_dir, evaluators, monkeypatch, flags, message
):
    """A bad category, split, evaluator option or an empty prompt file is a bad setting
    (exit 2, one line) found before the model loads, not after."""

    def no_model(*args, **kwargs):
        raise AssertionError("the settings must be checked before the model loads")

    monkeypatch.setattr("dsharp.commands.common.load_model_for_inference", no_model)
    data = _t2i_data(tmp_path / "data")
    (data / "texture_val.txt").write_text("\n\n")
    args = ["eval", "--model", str(tiny_sd_dir), "--bench", "t2i-compbench", "--limit", "1"]
    args += ["--data", str(data), *_sets(evaluators), *flags]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_flags_t2i_compbench_would_ignore_are_refused_before_anything_loads(tiny_sd_dir):
    args = ["eval", "--model", str(tiny_sd_dir), "--bench", "t2i-compbench"]
    result = CliRunner().invoke(app, [*args, "--seeds", "3", "--eta", "0", "--method", "demon"])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(
        "error: --seeds, --method, --eta: not used by --bench t2i-compbench"
    )


def test_unknown_bench_lists_the_known_ones(tiny_sd_dir):
    result = CliRunner().invoke(app, ["eval", "--model", str(tiny_sd_dir), "--bench", "nope"])
    assert result.exit_code != 0
    assert "t2i-compbench" in result.output and "clip" in result.output


def test_compare_against_paper_uses_the_runs_n_for_table2(tmp_path):
    run = tmp_path / "sweep-a"
    run.mkdir()
    (run / "recipe.yaml").write_text("method:\n  name: rlhf_sharpening\n  n: 2\n")
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 0.5}\n')  # it trained
    (run / "eval-clip.json").write_text(json.dumps({"metrics": {"clip": {"mean": 0.3}}}))
    (run / "eval-imagereward.json").write_text(
        json.dumps({"metrics": {"imagereward": {"mean": 1.0}}})
    )
    args = ["compare", str(run), "--against", "paper", "--table", "table2", "--out", str(tmp_path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    md = (tmp_path / "compare.md").read_text()
    assert "| paper:2 | 0.3360 | 1.3550 | 0.8910 |" in md  # the paper's n=2 row
    assert "| ours:sweep-a | 0.3000 | 1.0000 | - |" in md
    assert "| delta:sweep-a | -0.0360 | -0.3550 | - |" in md
    (run / "metrics.jsonl").unlink()  # evaluated but never trained: no paper row of n
    assert CliRunner().invoke(app, args).exit_code == 0
    assert "| paper:untrained | - | - | - |" in (tmp_path / "compare.md").read_text()


def test_compare_against_paper_names_a_corrupt_evaluation_in_a_run_folder(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "eval-clip.json").write_text('{"metrics": {"clip": {"mean": 0.3}')  # cut short
    result = CliRunner().invoke(app, ["compare", str(run), "--against", "paper"])
    assert result.exit_code == 1
    assert result.stderr.strip().startswith(f"error: {run / 'eval-clip.json'}: not JSON")


def test_compare_against_something_else_is_an_error(tmp_path):
    result = CliRunner().invoke(app, ["compare", str(tmp_path), "--against", "arxiv"])
    assert result.exit_code == 2  # a bad setting, before any source is read
    assert result.stderr.strip() == "error: --against: unknown 'arxiv' (expected: paper)"


def test_cli_bench_name_matches_the_library_and_cli_import_stays_light():
    import subprocess
    import sys

    from dsharp import evaluate
    from dsharp.commands import evaluate as evaluate_cmd

    assert evaluate_cmd.T2I_COMPBENCH == evaluate.T2I_COMPBENCH
    code = "import sys, dsharp.cli; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data/t2i-compbench is not present")
def test_t2i_compbench_of_a_run_scores_each_checkpoint_anew_and_records_its_step(
    tmp_path, tiny_sd_dir, evaluators, monkeypatch
):
    """A run that trained on is scored on its new checkpoint, not from the earlier one's
    saved rows; an earlier checkpoint's result stays beside it, not in the run folder."""
    import dsharp.commands.common
    from dsharp.models import load_model
    from run_folders import run_folder_with_checkpoint

    loaded = []

    def load_for_inference(model, checkpoint, device):
        loaded.append(checkpoint)
        return load_model(str(tiny_sd_dir), device="cpu")

    monkeypatch.setattr(dsharp.commands.common, "load_model_for_inference", load_for_inference)
    # a base that loads (offline, an uncached hub id is refused before the evaluation), in a
    # recipe that validates (the run's recipe is read, and checked against the checkpoint,
    # before the prompts load)
    recipe = f"model: {{pretrained: {tiny_sd_dir}}}\nrewards: [{{name: shapes}}]\n"
    recipe += "data: {generator: shapes}\n"
    run = run_folder_with_checkpoint(tmp_path / "run", recipe)
    args = ["--bench", "t2i-compbench", "--limit", "1", "--categories", "color"]
    args += ["--images-per-prompt", "1", "--steps", "2", "--data", str(SHARED), "--json"]
    args += _sets(evaluators)

    def scored(checkpoint: Path) -> dict:
        result = CliRunner().invoke(app, ["eval", "--checkpoint", str(checkpoint), *args])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout.strip().splitlines()[-1])

    assert scored(run)["step"] == 1
    newer = run / "checkpoints" / "step-000002"
    (newer / "model").mkdir(parents=True)
    (newer / "trainer_state.json").write_text('{"step": 2}')
    assert scored(run)["step"] == 2
    for step in (1, 2):  # each checkpoint's rows were generated and kept apart, in the run
        partial = run / "t2i-compbench" / f"step-00000{step}" / "partial.jsonl"
        assert len(partial.read_text().splitlines()) == 1
    assert json.loads((run / "eval-t2i-compbench.json").read_text())["step"] == 2

    moved = run.rename(tmp_path / "moved")  # a run folder moved keeps its rows
    partial = moved / "t2i-compbench" / "step-000001" / "partial.jsonl"
    before = partial.read_text()
    scored(moved / "checkpoints" / "step-000001")  # an earlier checkpoint, its rows reused
    assert partial.read_text() == before
    earlier = moved / "checkpoints" / "step-000001" / "eval-t2i-compbench.json"
    assert json.loads(earlier.read_text())["step"] == 1
    assert json.loads((moved / "eval-t2i-compbench.json").read_text())["step"] == 2
