"""`dsharp reproduce` under a launcher of several processes: every process trains the rows
the first one planned, together; then the first alone evaluates them and writes the table.
`dsharp eval` and `dsharp sample` run in one process and refuse a launch of several."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import dsharp.engine
import dsharp.launch
import dsharp.study
import dsharp.study_outputs
from dsharp.cli import app
from study_files import write_study
from study_rows import finish_rows


def _study(tmp_path: Path) -> Path:
    rows = [{"label": "base", "train": False}, {"label": "n=2"}]
    one_step = ["model.pretrained=dsharp-mini", "train.max_steps=1"]
    out = str(tmp_path / "study")
    return write_study(tmp_path, rows, title="launch", overrides=one_step, output_dir=out)


def _launched(monkeypatch: pytest.MonkeyPatch, rank: int, size: int = 2) -> None:
    for name in dsharp.launch.RANK_VARIABLES + dsharp.launch.SIZE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("WORLD_SIZE", str(size))


def _record(monkeypatch: pytest.MonkeyPatch, main_plan: list | None = None) -> list[str]:
    """What the study does, in order: training, evaluating and writing the outputs stubbed
    out; the first process's plan as ``main_plan`` says (default: this process's own)."""
    calls: list[str] = []
    monkeypatch.setattr(
        dsharp.engine, "train", lambda r, **k: calls.append(f"train {Path(r.output_dir).name}")
    )
    monkeypatch.setattr(
        dsharp.study, "_evaluate_row", lambda p, *a, **k: calls.append(f"eval {p.run_dir.name}")
    )

    def outputs(*a, **k):
        calls.append("outputs")
        return dsharp.study_outputs.StudyOutcome([], [], [], [])

    monkeypatch.setattr(dsharp.study_outputs, "write_outputs", outputs)
    monkeypatch.setattr(
        dsharp.launch, "broadcast_from_main", lambda own: own if main_plan is None else main_plan
    )
    return calls


def test_other_processes_train_the_rows_the_first_planned_and_neither_evaluate_nor_print(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    study = _study(tmp_path)
    # This process sees both rows finished; the first one planned to evaluate and train.
    finish_rows(dsharp.study.load_study(study), result=lambda i, p: {"overall": 0.5})
    calls = _record(monkeypatch, main_plan=[("evaluate", None), ("train", None)])
    _launched(monkeypatch, rank=1)

    result = CliRunner().invoke(app, ["reproduce", str(study), "--no-progress"])

    assert result.exit_code == 0, result.output
    assert calls == ["train n-2"]  # trained with the others; evaluation is the first's
    assert result.output == ""  # no plan table, no row lines, no table: the first prints them
    assert (tmp_path / "study" / "n-2" / "eval.json").exists()  # left for the first to replace


def test_the_first_process_evaluates_once_every_row_has_trained(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    calls = _record(monkeypatch)
    _launched(monkeypatch, rank=0)

    result = CliRunner().invoke(app, ["reproduce", str(_study(tmp_path)), "--no-progress"])

    assert result.exit_code == 0, result.output
    # the others leave after the last row trains, rather than wait on an evaluation
    assert calls == ["train n-2", "eval base", "eval n-2", "outputs"]
    lines = [line for line in result.output.splitlines() if line.startswith("[")]
    assert lines == [
        f"[n=2] train -> {tmp_path / 'study' / 'n-2'}",
        f"[base] evaluate -> {tmp_path / 'study' / 'base'}",
        f"[n=2] evaluate -> {tmp_path / 'study' / 'n-2'}",
    ]


def test_one_process_still_evaluates_each_row_after_it_trains(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    calls = _record(monkeypatch)
    for name in dsharp.launch.RANK_VARIABLES + dsharp.launch.SIZE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(app, ["reproduce", str(_study(tmp_path)), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert calls == ["eval base", "train n-2", "eval n-2", "outputs"]


def test_a_conflict_the_first_process_found_stops_every_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """The others take the first's conflict too: none starts a training the first skips."""
    calls = _record(monkeypatch, main_plan=[("evaluate", None), ("train", "it differs")])
    _launched(monkeypatch, rank=1)
    loaded = dsharp.study.load_study(_study(tmp_path))
    with pytest.raises(dsharp.study.StudyConflict, match="it differs"):
        dsharp.study.run_study(loaded, progress=False, echo=lambda _: None)
    assert calls == []


@pytest.mark.parametrize("rank", [0, 1])
def test_every_process_leaves_the_process_group_before_the_evaluations(
    rank: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A rerun with nothing left to train joins the group for the plan exchange alone; a
    process that exited still holding a gloo group could abort ("terminate called without an
    active exception"), and the launcher then stopped the first one mid-evaluation."""
    import torch.distributed as dist

    calls = _record(monkeypatch, main_plan=[("evaluate", None), ("evaluate", None)])
    in_group_at_eval: list[bool] = []
    monkeypatch.setattr(
        dsharp.study,
        "_evaluate_row",
        lambda p, *a, **k: in_group_at_eval.append(dist.is_initialized()),
    )

    def exchange(own):  # a real one-process group in place of the launch's
        dist.init_process_group(
            "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
        )
        return [("evaluate", None), ("evaluate", None)]

    monkeypatch.setattr(dsharp.launch, "broadcast_from_main", exchange)
    _launched(monkeypatch, rank=rank)
    try:
        result = CliRunner().invoke(app, ["reproduce", str(_study(tmp_path)), "--no-progress"])
        assert result.exit_code == 0, result.output
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    assert in_group_at_eval == ([False, False] if rank == 0 else [])
    assert calls == (["outputs"] if rank == 0 else [])


@pytest.mark.parametrize("command", ["eval", "sample"])
@pytest.mark.parametrize("rank", [0, 1])
def test_eval_and_sample_refuse_a_launch_of_several_processes(
    command: str,
    rank: int,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    launcher_stops_the_wait: list[float],
):
    """Said once, by the first process; another waits for the launcher's stop and exits
    without a word, as train's refusals do (it exited at once, and the launcher, seeing
    it, could stop the first before it had said why)."""
    waits = launcher_stops_the_wait
    _launched(monkeypatch, rank=rank, size=2)
    args = {
        "eval": ["eval", "--model", "dsharp-mini", "--bench", "shapes", "--limit", "1"],
        "sample": ["sample", "--model", "dsharp-mini", "-p", "a red circle"],
    }[command]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    if rank == 0:
        assert result.output == (
            f"error: dsharp {command} runs in one process, and this launch started 2: run it "
            "without accelerate launch (or torchrun, mpirun)\n"
        )
        assert waits == []
    else:
        assert result.output == ""
        assert len(waits) == 1  # it waited for the launcher's stop
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["eval", "sample"])
def test_another_process_no_stop_reaches_says_the_refusal_itself(
    command: str, monkeypatch: pytest.MonkeyPatch
):
    import dsharp.commands.errors

    monkeypatch.setattr(dsharp.commands.errors, "OTHERS_WAIT_S", 0.01)
    _launched(monkeypatch, rank=1, size=3)
    result = CliRunner().invoke(app, [command, "--model", "dsharp-mini"])
    assert result.exit_code == 2
    assert result.output.startswith(
        f"error: dsharp {command} runs in one process, and this launch started 3"
    )
