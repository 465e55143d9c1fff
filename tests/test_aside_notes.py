"""A step whose only copy a kill left aside (``.step-N.old``) and that could not be put back
(a training holds the run folder, or the folder is read-only): a read command says so, where
it would otherwise use the step before or say only "no such folder"."""

from __future__ import annotations

import errno

import pytest

from cli_results import error_line, invoke
from dsharp import checkpoints
from dsharp import io as dsharp_io
from folder_locks import another_process_holds
from run_folders import run_folder_with_checkpoint

RECIPE = "model: {pretrained: dsharp-mini}\nrewards: [{name: shapes}]\ndata: {generator: shapes}\n"


def _aside(run, step):
    """Step ``step``'s whole copy aside, its ``step-N`` missing: what a kill between a
    re-save's two renames leaves. Returns the missing ``step-N``."""
    final = checkpoints.checkpoint_dir(run, step)
    old = final.parent / f".{final.name}.old"
    (old / "model").mkdir(parents=True)
    (old / "trainer_state.json").write_text(f'{{"step": {step}}}')
    return final


@pytest.fixture
def read_only(monkeypatch):
    """A folder that refuses renames, as a read-only one does (the tests run as root, whom
    no mode bit stops): EROFS, and ``os.access`` says not writable."""

    def refused(src, dst):
        raise OSError(errno.EROFS, "Read-only file system", str(src))

    monkeypatch.setattr(dsharp_io.os, "replace", refused)
    monkeypatch.setattr(checkpoints.os, "access", lambda path, mode: False)


def test_a_step_named_while_a_training_holds_its_run_says_where_its_copy_is(tmp_path):
    run = tmp_path / "run"
    final = _aside(run, 2)
    with another_process_holds(run), pytest.raises(FileNotFoundError) as err:
        checkpoints.find_model_checkpoint(final)
    message = str(err.value)
    assert message.startswith(f"--checkpoint: {final}: no such folder; ")
    assert f"step-000002's copy is aside in {final.parent / '.step-000002.old'}" in message
    assert "a training holds the run folder" in message
    assert "run this again once it has saved" in message
    assert not final.exists()  # still left alone: the training's save may be mid-way


def test_a_step_named_in_a_read_only_run_says_how_to_read_its_copy(tmp_path, read_only):
    run = tmp_path / "run"
    final = _aside(run, 2)
    old = final.parent / ".step-000002.old"
    with pytest.raises(FileNotFoundError) as err:
        checkpoints.find_model_checkpoint(final, label="source")
    message = str(err.value)
    assert message.startswith(f"source: {final}: no such folder; ")
    assert f"{final.parent} is read-only" in message
    assert f"give source {old} to read it where it is" in message
    assert old.is_dir()


def test_a_run_whose_only_step_is_aside_says_so_not_only_no_checkpoint(tmp_path, read_only):
    run = tmp_path / "run"
    _aside(run, 2)
    with pytest.raises(FileNotFoundError) as err:
        checkpoints.find_model_checkpoint(run)
    assert str(err.value).startswith(f"--checkpoint: no checkpoint found in {run}; step-000002")


def test_a_run_folder_whose_newest_step_is_aside_is_used_with_a_note(tmp_path):
    """`dsharp sample --checkpoint RUN` takes step 1, said once (the model is found twice:
    checked first, then loaded), in one note line naming the copy aside."""
    run = run_folder_with_checkpoint(tmp_path / "run", RECIPE)
    _aside(run, 2)
    with another_process_holds(run):
        result = invoke(["sample", "--checkpoint", run, "-p", "a red circle", "--out", tmp_path])
    notes = [line for line in result.stderr.splitlines() if line.startswith("note: ")]
    assert notes == [
        "note: using step-000001, not step-000002: step-000002's copy is aside in "
        f"{run / 'checkpoints' / '.step-000002.old'}, not put back while a training holds "
        "the run folder (it may be saving that step again now): run this again once it has "
        "saved"
    ]
    assert "holds no trained weights" in error_line(result.stderr)  # step 1's, made empty


def test_a_checkpoint_named_has_no_note_of_a_newer_step_aside(tmp_path, read_only):
    run = run_folder_with_checkpoint(tmp_path / "run", RECIPE)
    _aside(run, 2)
    step_1 = run / "checkpoints" / "step-000001"
    result = invoke(["eval", "--checkpoint", step_1])
    assert result.exit_code == 2, result.output  # no bench nor prompts, after the check
    assert "note:" not in result.stderr
