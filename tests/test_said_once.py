"""Under a launcher of several processes, a refusal each process meets alike is said once:
the first process says it, the others exit with its status, quietly, when the launcher
stops them (tests/test_distributed.py runs a real launch)."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from typer.testing import CliRunner

import dsharp.commands.errors
import dsharp.launch
from dsharp.cli import app

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "tiny" / "rlhf_sharpening.yaml"


def _launched(monkeypatch: pytest.MonkeyPatch, rank: int) -> None:
    for name in dsharp.launch.RANK_VARIABLES + dsharp.launch.SIZE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("WORLD_SIZE", "2")


@pytest.mark.parametrize(
    ("args", "line", "status"),
    [
        (["train.max_steps=0"], "recipe error: ", 2),  # train's own recipe check
        (["train.mixed_precision=fp16"], "error: train.mixed_precision: fp16 needs", 1),
    ],
    ids=["recipe", "runtime"],
)
def test_another_process_exits_quietly_when_the_launcher_stops_it(
    args, line, status, tmp_path, monkeypatch, launcher_stops_the_wait
):
    import torch

    if status == 1 and torch.cuda.is_available():
        pytest.skip("fp16 runs where there is CUDA")
    before = signal.getsignal(signal.SIGTERM)
    waits = launcher_stops_the_wait
    _launched(monkeypatch, rank=1)
    result = CliRunner().invoke(app, ["train", str(RECIPE), f"output_dir={tmp_path}", *args])
    assert result.exit_code == status, result.output
    assert result.stderr == ""
    assert len(waits) == 1 and 0 < waits[0] <= dsharp.commands.errors.OTHERS_WAIT_S  # waited
    assert signal.getsignal(signal.SIGTERM) is before  # its own handler for the wait only

    _launched(monkeypatch, rank=0)  # the first process says it, at once
    result = CliRunner().invoke(app, ["train", str(RECIPE), f"output_dir={tmp_path}", *args])
    assert result.exit_code == status and result.stderr.startswith(line), result.output
    assert len(result.stderr.strip().splitlines()) == 1 and len(waits) == 1


def test_another_process_that_no_stop_reaches_says_it_itself(tmp_path, monkeypatch):
    """Its error was its own (the first process went on): it is said, after the wait."""
    monkeypatch.setattr(dsharp.commands.errors, "OTHERS_WAIT_S", 0.01)
    _launched(monkeypatch, rank=1)
    args = ["train", str(RECIPE), f"output_dir={tmp_path}", "train.max_steps=0"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert result.stderr.startswith("recipe error: ") and "train.max_steps" in result.stderr
