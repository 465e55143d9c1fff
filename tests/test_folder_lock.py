"""One writer per run folder: a second process is refused, from before the model loads until
the post-training report is written, and a failed start leaves no empty run folder."""

from __future__ import annotations

import fcntl
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dsharp import folder_lock
from dsharp.cli import app
from folder_locks import another_process_holds, free_to_another_process

TINY_RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "tiny" / "rlhf_sharpening.yaml"


def test_a_second_process_is_refused_with_the_folder_named(tmp_path):
    held = folder_lock.hold_folder_lock(tmp_path, "output_dir")
    script = (
        "import sys\nfrom dsharp.folder_lock import hold_folder_lock\n"
        "try:\n    hold_folder_lock(sys.argv[1], 'output_dir')\n"
        "except RuntimeError as e:\n    print(e)\n    sys.exit(3)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True
    )
    held.close()
    assert done.returncode == 3, done.stderr
    assert done.stdout.strip() == (
        f"output_dir {tmp_path}: another dsharp process is writing to it; wait for it to "
        "finish, or choose another folder"
    )
    again = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True)
    assert again.returncode == 0  # free once the first holder let go


def test_holders_in_one_process_share_the_lock_until_the_last_lets_go(tmp_path):
    outer = folder_lock.hold_folder_lock(tmp_path, "output_dir")
    inner = folder_lock.hold_folder_lock(tmp_path / ".", "output_dir")  # the same folder
    inner.close()
    inner.close()  # a second close of one share gives nothing more up
    assert not free_to_another_process(tmp_path)
    outer.close()
    assert free_to_another_process(tmp_path)


def test_a_claimed_folder_that_stayed_empty_is_removed_and_others_are_kept(tmp_path):
    with folder_lock.claimed_folder(tmp_path / "typo", "output_dir"):
        pass
    assert not (tmp_path / "typo").exists()
    with folder_lock.claimed_folder(tmp_path / "run", "output_dir") as run:
        (run / "metrics.jsonl").write_text("{}\n")
    assert (tmp_path / "run" / "metrics.jsonl").exists()
    (tmp_path / "mine").mkdir()
    with folder_lock.claimed_folder(tmp_path / "mine", "output_dir"):
        pass
    assert (tmp_path / "mine").is_dir()  # the user's own folder, even if empty


def _train(run: Path, model_dir: Path, *extra: str):
    args = ["train", str(TINY_RECIPE), f"model.pretrained={model_dir}", f"output_dir={run}"]
    return CliRunner().invoke(app, [*args, "train.max_steps=1", *extra])


def test_train_refuses_a_locked_folder_before_loading_the_model(tmp_path, tiny_sd_dir, monkeypatch):
    import dsharp.engine

    def no_load(*args, **kwargs):
        raise AssertionError("the model loaded before the lock was checked")

    monkeypatch.setattr(dsharp.engine, "build_model", no_load)
    run = tmp_path / "run"
    with another_process_holds(run):
        result = _train(run, tiny_sd_dir, "eval.bench=null")
    assert result.exit_code == 1, result.output
    assert "another dsharp process is writing to it" in result.stderr
    assert sorted(p.name for p in run.iterdir()) == [folder_lock.LOCK_FILE]


def test_train_holds_the_folder_while_it_writes_the_report(tmp_path, tiny_sd_dir, monkeypatch):
    import dsharp.posttrain

    seen = []

    def report(cfg, run_dir, progress=True):
        seen.append(free_to_another_process(run_dir))
        return dsharp.posttrain.PostTrainReport(run_dir / "report.md", "headline")

    monkeypatch.setattr(dsharp.posttrain, "post_train_report", report)
    run = tmp_path / "run"
    result = _train(run, tiny_sd_dir, "eval.bench=shapes", "eval.limit=1", "eval.seeds=1")
    assert result.exit_code == 0, result.output
    assert seen == [False]  # a resume could not start while the report was being written
    assert free_to_another_process(run)  # and the folder is free once the command ends


def test_a_run_that_fails_to_start_leaves_no_folder(tmp_path, tiny_sd_dir, monkeypatch):
    import dsharp.engine

    def broken(*args, **kwargs):
        raise OSError("unet/diffusion_pytorch_model.safetensors: truncated")

    monkeypatch.setattr(dsharp.engine, "build_model", broken)
    run = tmp_path / "runs" / "new"
    result = _train(run, tiny_sd_dir, "eval.bench=null")
    assert result.exit_code == 1, result.output
    assert "truncated" in result.stderr
    assert not run.exists()


def test_only_the_main_process_claims_the_folder_and_prints_its_lines(
    tmp_path, tiny_sd_dir, monkeypatch
):
    """Under a launcher every process runs the command; a rank > 0 (RANK, or an MPI
    launcher's variable) neither locks the folder (the main process does) nor prints the
    plan and `run folder:` lines a second time."""
    import dsharp.folder_lock

    claims = []
    real = dsharp.folder_lock.claimed_folder

    def recorded(folder, what):
        claims.append(folder)
        return real(folder, what)

    monkeypatch.setattr(dsharp.folder_lock, "claimed_folder", recorded)  # the command's
    import dsharp.engine

    monkeypatch.setattr(dsharp.engine, "claimed_folder", real)  # not the trainer's own
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "1")  # an MPI launch sets no RANK
    run = tmp_path / "run"
    result = _train(run, tiny_sd_dir, "eval.bench=null")
    assert result.exit_code == 0, result.output
    assert claims == []
    assert "run folder:" not in result.stdout and "training:" not in result.stdout
    monkeypatch.setenv("RANK", "0")  # the torchrun variable comes first
    result = _train(tmp_path / "main", tiny_sd_dir, "eval.bench=null")
    assert claims == [tmp_path / "main"]
    assert f"run folder: {tmp_path / 'main'}" in result.stdout


def test_a_folder_that_stayed_empty_is_removed_before_its_lock_is_let_go(tmp_path, monkeypatch):
    """Otherwise a second process could take the lock in between and lose its folder."""
    import shutil

    real_rmtree = shutil.rmtree
    held_while_removed = []

    def rmtree(path, *args, **kwargs):
        held_while_removed.append(not free_to_another_process(Path(path)))
        real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(folder_lock.shutil, "rmtree", rmtree)
    with folder_lock.claimed_folder(tmp_path / "new", "output_dir"):
        pass
    assert held_while_removed == [True] and not (tmp_path / "new").exists()


def test_another_process_s_lock_is_seen_without_creating_or_keeping_one(tmp_path):
    assert not folder_lock.locked_by_another_process(tmp_path)
    assert not (tmp_path / folder_lock.LOCK_FILE).exists()  # asking leaves no lock file
    with another_process_holds(tmp_path):
        assert folder_lock.locked_by_another_process(tmp_path)
    assert not folder_lock.locked_by_another_process(tmp_path)  # a finished run's file
    with folder_lock.hold_folder_lock(tmp_path, "output_dir"):
        assert not folder_lock.locked_by_another_process(tmp_path)  # this process's own
        assert not free_to_another_process(tmp_path)  # the question let go of nothing


def test_a_run_starting_while_another_process_asks_is_not_refused(tmp_path, monkeypatch):
    """`dsharp runs` holds a shared lock for an instant; a run that starts then waits it out.
    The asker lets go during the run's first pause (no timer: a busy machine would race it)."""
    (tmp_path / folder_lock.LOCK_FILE).touch()
    asking = open(tmp_path / folder_lock.LOCK_FILE, encoding="utf-8")  # noqa: SIM115
    fcntl.flock(asking, fcntl.LOCK_SH | fcntl.LOCK_NB)
    pauses: list[float] = []

    def pause(seconds: float) -> None:
        pauses.append(seconds)
        asking.close()  # closing the file lets go of its lock

    monkeypatch.setattr(folder_lock.time, "sleep", pause)
    with folder_lock.hold_folder_lock(tmp_path, "output_dir"):
        assert not free_to_another_process(tmp_path)
    assert pauses == [0.05]  # refused once while the asker held it, then taken


def test_a_folder_another_process_keeps_asking_about_is_refused_after_the_retries(
    tmp_path, monkeypatch
):
    (tmp_path / folder_lock.LOCK_FILE).touch()
    with open(tmp_path / folder_lock.LOCK_FILE, encoding="utf-8") as asking:
        fcntl.flock(asking, fcntl.LOCK_SH | fcntl.LOCK_NB)
        pauses: list[float] = []
        monkeypatch.setattr(folder_lock.time, "sleep", pauses.append)
        with pytest.raises(RuntimeError, match="another dsharp process is writing to it"):
            folder_lock.hold_folder_lock(tmp_path, "output_dir")
    assert pauses == [0.05] * 9  # about half a second in all, then the one-line refusal
