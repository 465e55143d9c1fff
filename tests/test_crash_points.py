"""Crash points of checkpointing, simulated: a process killed (SIGKILL, a power cut) at a
given line must leave nothing that a later resume, eval or listing would trust wrongly."""

from __future__ import annotations

import shutil

import pytest

from dsharp import checkpoints


class Killed(BaseException):
    """Stands for the process dying at this point: nothing after it runs."""


def _checkpoint(run_dir, step):
    tmp = checkpoints.temp_checkpoint_dir(run_dir, step)
    (tmp / "model").mkdir(parents=True)
    (tmp / "model" / "weights.safetensors").write_bytes(b"w")
    (tmp / "optimizer.bin").write_bytes(b"o")
    return checkpoints.finalize_checkpoint(run_dir, step, {"step": step}, keep=1)


def test_a_prune_cut_short_leaves_no_checkpoint_without_its_weights(tmp_path, monkeypatch):
    """rmtree deletes in directory order: killed part way, the old checkpoint's model/ may be
    gone while its trainer_state.json (which marks it whole) is still there."""
    _checkpoint(tmp_path, 1)
    real_rmtree = shutil.rmtree

    def killed_part_way(path, ignore_errors=False):
        if (path / "model").exists():
            real_rmtree(path / "model")
            raise Killed

    monkeypatch.setattr(checkpoints.shutil, "rmtree", killed_part_way)
    with pytest.raises(Killed):
        _checkpoint(tmp_path, 2)
    monkeypatch.undo()
    for found in checkpoints.list_checkpoints(tmp_path):
        assert (found / "model" / "weights.safetensors").is_file(), found
    _checkpoint(tmp_path, 3)  # the next checkpoint deletes what the prune left
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step-000003"]


def test_a_finished_run_killed_during_its_report_is_told_how_to_write_it(tmp_path):
    """SIGKILL (or a power cut) while the report after training is written leaves the final
    checkpoint without eval-final.json; the rerun of the same command must say that
    train.resume=latest writes the report, not only to delete the folder or train on."""
    import json
    from pathlib import Path

    from dsharp.recipe_io import load_recipe
    from dsharp.resume import planned_resume

    quickstart = Path(__file__).resolve().parents[1] / "recipes" / "quickstart.yaml"
    run = tmp_path / "run"
    state = run / "checkpoints" / "step-000050" / "trainer_state.json"
    state.parent.mkdir(parents=True)
    state.write_text('{"step": 50}')
    (run / "recipe.yaml").write_text(quickstart.read_text())  # the quickstart's run, 50 steps
    recipe = load_recipe(quickstart, [f"output_dir={run}"])
    finished = f"output_dir: {run} already holds this recipe's finished run (step 50 of 50)"
    start_over = "choose another output_dir (or delete this one) to start over"
    without = f"{finished} without its report: set train.resume=latest to write it, or {start_over}"
    for final in (None, '{"label": "fine-tuned", "st', '{"step": 40}'):  # none, torn, older
        if final is not None:
            (run / "eval-final.json").write_text(final)
        with pytest.raises(ValueError) as refused:
            planned_resume(recipe)
        assert str(refused.value) == without
    (run / "eval-final.json").write_text(json.dumps({"step": 50}))  # the report is whole
    with pytest.raises(ValueError) as refused:
        planned_resume(recipe)
    assert str(refused.value) == (
        f"{finished}: {start_over}, or raise train.max_steps with train.resume=latest to "
        "train it on"
    )
    no_report = load_recipe(quickstart, [f"output_dir={run}", "eval.bench=null"])
    (run / "eval-final.json").unlink()
    with pytest.raises(ValueError, match="to train it on$"):  # nothing to write
        planned_resume(no_report)


def test_a_save_cut_short_at_a_step_never_saved_again_leaves_no_temp_folder(tmp_path):
    """A stop's checkpoint (Ctrl-C, a scheduler's SIGTERM at step 3, not a checkpoint_every
    multiple) killed mid-write (the SIGKILL that follows the grace period) left its hidden
    temp folder, a whole UNet's size; the resumed run from step 2 saves step 4, never 3
    again, so the folder stayed for good."""
    _checkpoint(tmp_path, 2)
    cut_short = checkpoints.temp_checkpoint_dir(tmp_path, 3)
    (cut_short / "model").mkdir(parents=True)
    (cut_short / "optimizer.bin").write_bytes(b"half")
    _checkpoint(tmp_path, 4)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step-000004"]


def test_a_step_saved_again_and_killed_while_deleting_its_older_copy_leaves_no_old_folder(
    tmp_path, monkeypatch
):
    """A step saved again renames its older copy aside (``.step-N.old``) and deletes it
    after the new one is in place, renamed away first (``.step-N.old.deleting``): killed
    during that delete (a whole UNet's size, seconds), no half-deleted ``.old`` is left that
    a later start would put back as the step's copy; the next checkpoint's save deletes the
    rest, as it deletes other temp folders."""
    _checkpoint(tmp_path, 2)
    real_rmtree = shutil.rmtree

    def killed_deleting_the_old_copy(path, ignore_errors=False):
        if path.name.endswith(".old.deleting") and path.exists():
            real_rmtree(path / "model")
            raise Killed
        real_rmtree(path, ignore_errors=ignore_errors)

    monkeypatch.setattr(checkpoints.shutil, "rmtree", killed_deleting_the_old_copy)
    with pytest.raises(Killed):
        _checkpoint(tmp_path, 2)
    monkeypatch.undo()
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == [".step-000002.old.deleting", "step-000002"]  # what the kill left
    (tmp_path / "checkpoints" / "step-000002").rename(tmp_path / "moved")  # "move it out"
    assert checkpoints.list_checkpoints(tmp_path) == []  # nothing half-deleted put back
    _checkpoint(tmp_path, 3)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step-000003"]


def _aside(run_dir, step, tmp_too=False):
    """The folders a kill between a re-save's two renames leaves: the step's older copy
    renamed aside (whole), the new one still under its temp name, no ``step-N``."""
    final = checkpoints.checkpoint_dir(run_dir, step)
    folders = [final.parent / f".{final.name}.old"]
    if tmp_too:
        folders.append(checkpoints.temp_checkpoint_dir(run_dir, step))
    for folder in folders:
        (folder / "model").mkdir(parents=True)
        (folder / "model" / "weights.safetensors").write_bytes(folder.name.encode())
        (folder / "trainer_state.json").write_text(f'{{"step": {step}}}')
    return final


def test_a_step_aside_without_its_folder_is_the_one_resume_finds(tmp_path):
    """Killed between the renames of step 2's re-save, the run's newest whole copy of step 2
    is ``.step-000002.old``: resume (``latest``) takes it, put back, not step 1."""
    _checkpoint(tmp_path, 1)
    final = _aside(tmp_path, 2, tmp_too=True)
    assert checkpoints.latest_checkpoint(tmp_path) == final
    assert (final / "model" / "weights.safetensors").read_bytes() == b".step-000002.old"
    assert not (final.parent / ".step-000002.old").exists()


def test_a_save_keeps_a_step_aside_without_its_folder(tmp_path):
    """The next save, at another step, deleted ``.step-*.old`` leftovers: one whose
    ``step-N`` is missing was the only copy of step N; it is put back instead."""
    final = _aside(tmp_path, 2, tmp_too=True)
    tmp = checkpoints.temp_checkpoint_dir(tmp_path, 3)
    (tmp / "model").mkdir(parents=True)
    checkpoints.finalize_checkpoint(tmp_path, 3, {"step": 3}, keep=None)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step-000002", "step-000003"]
    assert (final / "model" / "weights.safetensors").read_bytes() == b".step-000002.old"


def test_a_save_deletes_a_step_aside_beside_its_folder(tmp_path):
    """A ``.step-N.old`` beside a whole ``step-N`` (a kill after the second rename) is a
    copy too many: the next save deletes it and keeps ``step-N``."""
    _checkpoint(tmp_path, 2)
    _aside(tmp_path, 2)
    assert checkpoints.latest_checkpoint(tmp_path).name == "step-000002"
    tmp = checkpoints.temp_checkpoint_dir(tmp_path, 3)
    (tmp / "model").mkdir(parents=True)
    checkpoints.finalize_checkpoint(tmp_path, 3, {"step": 3}, keep=None)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step-000002", "step-000003"]
    weights = tmp_path / "checkpoints" / "step-000002" / "model" / "weights.safetensors"
    assert weights.read_bytes() == b"w"  # its own, not the copy aside


def test_a_step_aside_is_left_alone_while_another_process_holds_the_run(tmp_path, monkeypatch):
    """Another process's save may be between its two renames right now: putting its old
    copy back would make its second rename fail, so a listing leaves it aside."""
    import dsharp.folder_lock as folder_lock

    _aside(tmp_path, 2)
    monkeypatch.setattr(folder_lock, "locked_by_another_process", lambda folder: True)
    assert checkpoints.list_checkpoints(tmp_path) == []
    assert (tmp_path / "checkpoints" / ".step-000002.old").is_dir()


def test_a_resume_named_by_its_folder_finds_a_step_aside(tmp_path):
    """``train.resume=.../step-000002`` (and ``--checkpoint`` alike) names the folder a kill
    left aside: it is put back, not refused as no checkpoint folder."""
    final = _aside(tmp_path, 2)
    assert checkpoints.resolve_resume(tmp_path, str(final)) == final
    assert checkpoints.find_model_checkpoint(final) == final


def test_a_pruned_step_takes_its_copy_aside_with_it(tmp_path):
    """A kill after a re-save's second rename leaves ``.step-N.old`` beside a whole
    ``step-N``; a later save that prunes ``step-N`` (keep) kept the copy aside, now without
    its ``step-N``, and the next listing put it back: a pruned step, in its older copy."""
    _checkpoint(tmp_path, 1)
    _aside(tmp_path, 1)
    _checkpoint(tmp_path, 2)  # keep=1: step 1 pruned
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step-000002"]
    assert [p.name for p in checkpoints.list_checkpoints(tmp_path)] == ["step-000002"]


def test_a_step_named_from_inside_checkpoints_asks_the_run_folders_lock(tmp_path, monkeypatch):
    """``--checkpoint step-000002`` given from inside ``checkpoints/``: the lock asked was
    that of ``Path('.').parent``, ``checkpoints`` itself (none there), so a listing put a
    copy aside back while the run's own training held its folder."""
    from pathlib import Path

    import dsharp.folder_lock as folder_lock

    run = tmp_path / "run"
    final = _aside(run, 2)
    monkeypatch.setattr(
        folder_lock, "locked_by_another_process", lambda folder: folder.resolve() == run
    )
    monkeypatch.chdir(final.parent)
    with pytest.raises(FileNotFoundError):
        checkpoints.find_model_checkpoint(Path(final.name))
    assert (final.parent / ".step-000002.old").is_dir()
    assert not final.exists()


def test_a_process_that_exchanges_nothing_plans_its_own_resume(tmp_path, monkeypatch):
    """``RANK=1`` without a size variable (no launch, so no exchange): the process plans
    its resume itself; taking the first process's (none sent) it started the run over."""
    from pathlib import Path

    from dsharp.recipe_io import load_recipe
    from dsharp.resume import launch_resume

    quickstart = Path(__file__).resolve().parents[1] / "recipes" / "quickstart.yaml"
    run = tmp_path / "run"
    final = _aside(run, 2)
    (run / "recipe.yaml").write_text(quickstart.read_text())
    import dsharp.launch

    for name in dsharp.launch.RANK_VARIABLES + dsharp.launch.SIZE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RANK", "1")
    recipe = load_recipe(quickstart, [f"output_dir={run}", "train.resume=latest"])
    assert launch_resume(recipe) == final
