"""A disk that fills while `dsharp train` writes its figures and report: one line naming the
file, no temp file left, and the run folder's previous results still telling the truth."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dsharp.cli import app

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "tiny" / "rlhf_sharpening.yaml"


def _full_disk_for(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """``os.fsync`` of the temp file that becomes ``name`` fails as on a full disk (its
    writer's temp file: ``.name.x.tmp``, or ``..name.x.tmp.y.tmp`` for a file of a set)."""
    real = os.fsync

    def fsync(fd: int) -> None:
        if f".{name}." in Path(os.readlink(f"/proc/self/fd/{fd}")).name:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def _train(run: Path, tiny_sd_dir: Path, steps: int, *extra: str):
    args = [f"model.pretrained={tiny_sd_dir}", f"output_dir={run}", f"train.max_steps={steps}"]
    return CliRunner().invoke(app, ["train", str(RECIPE), *args, *extra, "--no-progress"])


def _lines(stderr: str) -> list[str]:
    """stderr without the loaders' progress lines."""
    return [x for x in stderr.strip().splitlines() if x.strip() and "Loading weights" not in x]


def _temp_files(run: Path) -> list[str]:
    return [p.name for p in run.iterdir() if p.name.endswith(".tmp")]


REPORT = (
    "eval-base.json",
    "samples_grid.png",
    "training_curves.png",
    "report.md",
    "eval-final.json",
)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to name an fd")
@pytest.mark.parametrize("full_at", ["samples_grid.png", "training_curves.png", "report.md"])
def test_a_full_disk_during_the_report_keeps_the_previous_report_whole_and_says_how_to_redo_it(
    tiny_sd_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, full_at: str
) -> None:
    run = tmp_path / "run"
    report = ["eval.prompts=[a red circle]", "eval.seeds=1"]
    assert _train(run, tiny_sd_dir, 1, *report).exit_code == 0
    before = {n: (run / n).read_bytes() for n in REPORT}

    _full_disk_for(monkeypatch, full_at)
    result = _train(run, tiny_sd_dir, 2, *report, "train.resume=latest")
    assert result.exit_code == 1, result.output
    assert _lines(result.stderr) == [
        f"error: training is complete in {run}, but its report was not written ([Errno 28] No "
        f"space left on device: '{run / full_at}'; 5 files (eval-base.json, ..., "
        "eval-final.json) are still the previous versions); write it with: "
        f"dsharp train {RECIPE} model.pretrained={tiny_sd_dir} train.max_steps=2 "
        f"'eval.prompts=[a red circle]' eval.seeds=1 output_dir={run} train.resume=latest"
    ]
    assert (run / "checkpoints" / "step-000002" / "trainer_state.json").is_file()
    assert not _temp_files(run)
    # the report, its grid, the training curves it links and the score `dsharp runs` shows
    # are all still step 1's: not a new grid, curves (or score) beside step 1's report
    assert {n: (run / n).read_bytes() for n in REPORT} == before
    assert json.loads(before["eval-final.json"])["step"] == 1


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to name an fd")
def test_a_first_report_that_fails_still_leaves_the_final_training_curves(
    tiny_sd_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no earlier report to keep in step, training draws the final curves itself (they
    were left to the report, so a first run whose report failed had none)."""
    run = tmp_path / "run"
    _full_disk_for(monkeypatch, "samples_grid.png")
    report = ["eval.prompts=[a red circle]", "eval.seeds=1", "train.checkpoint_every=2"]
    result = _train(run, tiny_sd_dir, 2, *report)  # its only checkpoint the last
    assert result.exit_code == 1, result.output
    assert "but its report was not written" in _lines(result.stderr)[-1]
    assert (run / "training_curves.png").is_file() and not (run / "report.md").exists()


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to name an fd")
def test_training_curves_that_cannot_be_written_are_one_warning_line(
    tiny_sd_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    _full_disk_for(monkeypatch, "training_curves.png")
    result = _train(run, tiny_sd_dir, 1)
    assert result.exit_code == 0, result.output  # a figure must not end a run
    assert _lines(result.stderr) == [
        "warning: training curves not drawn: [Errno 28] No space left on device: "
        f"'{run / 'training_curves.png'}'"
    ]
    assert not (run / "training_curves.png").exists() and not _temp_files(run)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to name an fd")
def test_reproduce_says_training_curves_that_cannot_be_written_in_one_warning_line(
    tiny_sd_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As `dsharp train`: Python's own format added the source line that raised it."""
    import yaml

    study = tmp_path / "study.yaml"
    out = tmp_path / "study"
    spec = {
        "kind": "table",
        "name": "table2",
        "title": "tiny table",
        "base": str(RECIPE),
        "overrides": [f"model.pretrained={tiny_sd_dir}", "train.max_steps=1", "sample.steps=2"],
        "rows": [{"label": "n=2", "overrides": ["method.n=2", "method.infer_steps=2"]}],
        "evaluate": {"prompts": ["a red circle"], "seeds": 1},
        "output_dir": str(out),
    }
    study.write_text("# dsharp reproduce study.yaml\n" + yaml.safe_dump(spec, sort_keys=False))
    _full_disk_for(monkeypatch, "training_curves.png")
    result = CliRunner().invoke(app, ["reproduce", str(study), "--no-progress"])
    assert result.exit_code == 0, result.output  # a figure must not end a study
    warned = [x for x in _lines(result.stderr) if "training curves" in x]
    assert warned == [
        "warning: training curves not drawn: [Errno 28] No space left on device: "
        f"'{out / 'n-2' / 'training_curves.png'}'"
    ], result.stderr
