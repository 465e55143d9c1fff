"""`dsharp eval --bench t2i-compbench --out FILE`: an interrupted evaluation of a --model
resumes (its rows in FILE.partial until FILE is written), a resume with other settings is
refused before the model loads, and FILE names the model as it was given."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dsharp.cli import app

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "t2i-compbench"
pytestmark = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is not present")


@pytest.fixture(scope="module")
def evaluators(tmp_path_factory) -> list[str]:
    from dsharp.testing.tiny_rewards import make_tiny_t2i_evaluators

    made = make_tiny_t2i_evaluators(tmp_path_factory.mktemp("t2i-evaluators"))
    return [arg for k, v in made.items() for arg in ("--set", f"{k}={v}")]


def _args(model: object, out: Path, evaluators: list[str], *more: str) -> list[str]:
    args = ["eval", "--model", str(model), "--bench", "t2i-compbench", "--categories", "color"]
    args += ["--limit", "2", "--images-per-prompt", "1", "--steps", "2", "--batch-size", "1"]
    return [*args, "--data", str(SHARED), "--out", str(out), *evaluators, *more]


def _scored_calls(monkeypatch, stop_at: int | None = None) -> list[int]:
    """The scorer's calls (one per prompt here); the ``stop_at``-th is a Ctrl-C."""
    from dsharp.bench import t2i_scoring

    calls: list[int] = []
    real = t2i_scoring.T2IScorer.score

    def score(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == stop_at:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(t2i_scoring.T2IScorer, "score", score)
    return calls


def test_an_interrupted_evaluation_of_a_model_resumes_for_the_same_out(
    tmp_path, tiny_sd_dir, evaluators, monkeypatch
):
    out = tmp_path / "t2i.json"
    work = tmp_path / "t2i.json.partial"
    _scored_calls(monkeypatch, stop_at=2)
    stopped = CliRunner().invoke(app, _args(tiny_sd_dir, out, evaluators))
    assert stopped.exit_code == 130
    assert not out.exists() and len((work / "partial.jsonl").read_text().splitlines()) == 1
    assert f"kept in {work}; the same command resumes there" in stopped.stderr

    calls = _scored_calls(monkeypatch)
    resumed = CliRunner().invoke(app, _args(tiny_sd_dir, out, evaluators))
    assert resumed.exit_code == 0, resumed.output
    assert len(calls) == 1  # the prompt scored before the Ctrl-C is not scored again
    assert f"note: reusing 1 prompt scored before, kept in {work}" in resumed.stderr
    result = json.loads(out.read_text())
    assert result["n_prompts"] == 2 and result["out_dir"] is None
    assert not work.exists()  # FILE holds the result: its rows are gone with the folder


def test_a_resume_with_other_settings_is_refused_before_the_model_loads(
    tmp_path, tiny_sd_dir, evaluators, monkeypatch
):
    import dsharp.commands.common

    out = tmp_path / "t2i.json"
    _scored_calls(monkeypatch, stop_at=2)
    assert CliRunner().invoke(app, _args(tiny_sd_dir, out, evaluators)).exit_code == 130

    def no_model(*args, **kwargs):
        raise AssertionError("other settings must be refused before the model loads")

    monkeypatch.setattr(dsharp.commands.common, "load_model_for_inference", no_model)
    result = CliRunner().invoke(app, _args(tiny_sd_dir, out, evaluators, "--guidance", "3"))
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        f"error: {out}.partial: holds a T2I-CompBench evaluation made with other settings "
        "(sample differ); give another --out FILE or delete it"
    ]


def test_the_result_of_a_checkpoint_names_it_as_given(
    tmp_path, tiny_sd_dir, evaluators, monkeypatch
):
    """As other benches do: the rows' model id (the checkpoint folder's name) stood in the
    result, and `dsharp runs` and the printed table showed 'step-000001' for the run."""
    import dsharp.commands.common
    from dsharp.models import load_model
    from run_folders import run_folder_with_checkpoint

    monkeypatch.setattr(
        dsharp.commands.common,
        "load_model_for_inference",
        lambda *args: load_model(str(tiny_sd_dir), device="cpu"),
    )
    recipe = f"model: {{pretrained: {tiny_sd_dir}}}\nrewards: [{{name: shapes}}]\n"
    run = run_folder_with_checkpoint(tmp_path / "run", recipe + "data: {generator: shapes}\n")
    args = _args(tiny_sd_dir, tmp_path / "t2i.json", evaluators)
    args[1:3] = ["--checkpoint", str(run)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "t2i.json").read_text())["model"] == str(run)


@pytest.mark.parametrize("again", ["./{name}/", "{absolute}"], ids=["trailing-slash", "absolute"])
def test_the_same_model_folder_typed_another_way_resumes(
    tmp_path, tiny_sd_dir, evaluators, monkeypatch, again
):
    """The folder was compared as typed: ``--model ./m`` then ``--model ./m/`` (or its
    absolute path) refused each other's FILE.partial ("model differ")."""
    monkeypatch.chdir(tiny_sd_dir.parent)
    out = tmp_path / "t2i.json"
    _scored_calls(monkeypatch, stop_at=2)
    first = CliRunner().invoke(app, _args(f"./{tiny_sd_dir.name}", out, evaluators))
    assert first.exit_code == 130, first.output

    calls = _scored_calls(monkeypatch)
    model = again.format(name=tiny_sd_dir.name, absolute=tiny_sd_dir.resolve())
    resumed = CliRunner().invoke(app, _args(model, out, evaluators))
    assert resumed.exit_code == 0, resumed.output
    assert len(calls) == 1  # the prompt scored before is reused, not scored again
    assert json.loads(out.read_text())["model"] == model  # the result names it as given


def test_a_hub_id_or_built_in_name_is_kept_as_typed(tmp_path, monkeypatch):
    from dsharp.model_names import resolved_model_source

    monkeypatch.chdir(tmp_path)
    (tmp_path / "m").mkdir()
    assert resolved_model_source("org/some-model") == "org/some-model"
    assert resolved_model_source("dsharp-mini") == "dsharp-mini"
    assert resolved_model_source("./m/") == resolved_model_source("m") == str(tmp_path / "m")
