"""A full disk, a read-only folder, a checkpoint cut short or edited: one error naming the
file and the reason, the earlier files whole, nothing half-written left behind."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from dsharp import io
from dsharp.config import load_recipe
from fake_rewards import brightness_registered

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
SMALL = ("train.batch_size=1", "method.n=2", "rewards.0.name=test_brightness")


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_names_the_file_and_keeps_the_old_one_whole(tmp_path, monkeypatch):
    """os.write's ENOSPC names no file: "error: [Errno 28] No space left on device" said
    nothing of which of a run's files failed."""
    path = tmp_path / "eval.json"
    path.write_text("old\n")
    monkeypatch.setattr(io.os, "fsync", _disk_full)
    with pytest.raises(OSError, match=rf"No space left on device: '{path}'$"):
        io.atomic_write_json(path, {"new": 1})
    assert path.read_text() == "old\n" and os.listdir(tmp_path) == ["eval.json"]


def test_a_metrics_row_that_finds_the_disk_full_names_the_file(tmp_path, monkeypatch):
    path = tmp_path / "metrics.jsonl"
    monkeypatch.setattr("builtins.open", _disk_full)
    with pytest.raises(OSError, match=rf"No space left on device: '{path}'$"):
        io.append_jsonl(path, {"step": 1})


def test_a_folder_that_refuses_the_temp_file_names_the_file_written(tmp_path, monkeypatch):
    """mkstemp's error named the hidden temp file (.report.md.x8y.tmp), not report.md."""
    path = tmp_path / "report.md"

    def refused(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / ".report.md.x.tmp"))

    monkeypatch.setattr(io.tempfile, "mkstemp", refused)
    with pytest.raises(PermissionError, match=rf"Permission denied: '{path}'$"):
        io.atomic_write_text(path, "# report")


@pytest.fixture(autouse=True)
def _brightness():
    """The ``test_brightness`` reward the recipes here name."""
    with brightness_registered():
        yield


def _recipe(model_dir: Path, out: Path, *overrides: str):
    return load_recipe(
        RECIPES / "tiny" / "rlhf_sharpening.yaml",
        [f"model.pretrained={model_dir}", f"output_dir={out}", *SMALL, *overrides],
    )


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda s: s.pop("step"), r"trainer_state\.json: no step"),
        (lambda s: s.update(reward_evals="x"), r"trainer_state\.json: reward_evals is 'x'"),
        (lambda s: s.update(method_state=[1]), r"trainer_state\.json: method_state is not"),
    ],
)
def test_a_trainer_state_without_its_step_or_with_a_wrong_type_is_refused_before_loading(
    tiny_sd_dir, tmp_path, edit, expected
):
    """Before: a missing step read as step 0 in the checks, then ``error: step`` (a bare
    KeyError) after the model loaded; a wrong reward_evals: "invalid literal for int()"."""
    from dsharp.config import recipe_to_yaml
    from dsharp.methods.factory import with_method_defaults
    from dsharp.resume import planned_resume

    run = tmp_path / "run"
    checkpoint = run / "checkpoints" / "step-000002"
    checkpoint.mkdir(parents=True)
    state = {"step": 2, "reward_evals": 4}
    edit(state)
    (checkpoint / "trainer_state.json").write_text(json.dumps(state))
    first = _recipe(tiny_sd_dir, run, "train.max_steps=2")
    (run / "recipe.yaml").write_text(recipe_to_yaml(with_method_defaults(first)))
    with pytest.raises(ValueError, match=expected):
        planned_resume(_recipe(tiny_sd_dir, run, "train.max_steps=3", "train.resume=latest"))


@pytest.fixture
def trained_run(tiny_sd_dir, tmp_path):
    """A run of one step with its checkpoint, and the recipe that resumes it."""
    from dsharp.engine import Trainer

    run = tmp_path / "run"
    Trainer(_recipe(tiny_sd_dir, run, "train.max_steps=1"), progress=False).run()
    return run, _recipe(tiny_sd_dir, run, "train.max_steps=2", "train.resume=latest")


def _must_not_load(*args, **kwargs):
    raise AssertionError("the model was loaded before the checkpoint's damage was found")


@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_a_checkpoint_without_a_whole_optimizer_file_is_refused_before_the_model_loads(
    trained_run, monkeypatch, damage
):
    """Before: the model loaded, then torch's "PytorchStreamReader failed reading zip
    archive" (no file named), or the errno line; neither said how to go on, and a resume
    from the checkpoint before is refused while this newer one is there."""
    import dsharp.engine
    from dsharp.engine import Trainer

    run, resumed = trained_run
    optimizer = run / "checkpoints" / "step-000001" / "optimizer.bin"
    if damage == "missing":
        optimizer.unlink()
    else:
        os.truncate(optimizer, 100)
    monkeypatch.setattr(dsharp.engine, "build_model", _must_not_load)
    said = "is missing" if damage == "missing" else "is damaged or truncated"
    with pytest.raises((FileNotFoundError, ValueError)) as raised:
        Trainer(resumed, progress=False)
    assert str(raised.value) == (
        f"train.resume: {optimizer} {said} (step-000001 is the run's only checkpoint: train "
        "again in a new output_dir)"
    )


def test_the_advice_for_a_damaged_checkpoint_names_the_one_before_it_where_there_is_one(
    tmp_path,
):
    """Moving a damaged checkpoint aside helps only where an earlier one remains: the advice
    names it, and says to train again where there is none (it spoke of a previous
    checkpoint either way)."""
    from dsharp.checkpoints import damaged_checkpoint_advice

    root = tmp_path / "run" / "checkpoints"
    for step in (2, 4):
        (root / f"step-00000{step}").mkdir(parents=True)
        (root / f"step-00000{step}" / "trainer_state.json").write_text(f'{{"step": {step}}}')
    assert damaged_checkpoint_advice(root / "step-000004") == (
        f"to resume the run from its previous checkpoint (step-000002), move step-000004 out "
        f"of {root}"
    )
    assert damaged_checkpoint_advice(root / "step-000002") == (
        "step-000002 is the run's only checkpoint: train again in a new output_dir"
    )
    # a folder train.resume names that is no run's step-* folder: not "the run's only one"
    copy = tmp_path / "backup" / "my-checkpoint"
    copy.mkdir(parents=True)
    (copy / "trainer_state.json").write_text('{"step": 3}')
    assert damaged_checkpoint_advice(copy) == (
        "give train.resume another checkpoint, or train again in a new output_dir"
    )


def test_a_checkpoint_file_torch_cannot_read_is_named_with_its_checkpoint(trained_run):
    from dsharp.engine import Trainer

    run, resumed = trained_run
    checkpoint = run / "checkpoints" / "step-000001"
    (checkpoint / "scheduler.bin").write_bytes(b"PK\x05\x06" + bytes(18))  # an empty zip
    with pytest.raises(ValueError, match=rf"^train\.resume: {checkpoint}: cannot be loaded \("):
        Trainer(resumed, progress=False)


def test_a_checkpoint_the_disk_has_no_room_for_names_it_and_leaves_the_last_one(trained_run):
    """Before: torch's "PytorchStreamWriter failed writing file data/3: file write failed",
    naming no checkpoint; the temp folder is removed and the earlier checkpoint stays."""
    from dsharp.engine import Trainer

    run, resumed = trained_run
    trainer = Trainer(resumed, progress=False)

    def full(*args, **kwargs):
        raise RuntimeError("PytorchStreamWriter failed writing file data/3: file write failed")

    trainer.accelerator.save_state = full
    with pytest.raises(OSError) as raised:
        trainer.save_checkpoint(2)
    trainer.release_folder()
    assert str(raised.value) == (
        f"{run / 'checkpoints' / 'step-000002'}: checkpoint not saved (PytorchStreamWriter "
        "failed writing file data/3: file write failed); train.resume=latest continues from "
        "step-000001"
    )
    assert sorted(os.listdir(run / "checkpoints")) == ["step-000001"]


def test_a_failure_after_the_checkpoint_is_in_place_does_not_say_it_was_not_saved(
    trained_run, monkeypatch
):
    """The rename is the save; a failure after it (syncing the folder, say) left the
    checkpoint whole, and the message said "checkpoint not saved"."""
    import dsharp.checkpoints
    from dsharp.engine import Trainer

    run, resumed = trained_run
    trainer = Trainer(resumed, progress=False)

    def no_sync(folder):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(dsharp.checkpoints, "sync_folder", no_sync)
    with pytest.raises(OSError) as raised:
        trainer.save_checkpoint(2)
    trainer.release_folder()
    assert str(raised.value) == (
        f"{run / 'checkpoints' / 'step-000002'}: checkpoint saved, but what follows the save "
        "failed ([Errno 5] Input/output error)"
    )
    assert sorted(os.listdir(run / "checkpoints")) == ["step-000001", "step-000002"]


def _branch(trained_run, tmp_path, *overrides: str):
    """A new run that branches from ``trained_run``'s checkpoint, whose recipe.yaml is gone
    (so nothing compares the recipes before the load)."""
    run, resumed = trained_run
    checkpoint = run / "checkpoints" / "step-000001"
    (run / "recipe.yaml").unlink()
    model = resumed.model.pretrained
    branch = _recipe(
        model, tmp_path / "branch", "train.max_steps=2", f"train.resume={checkpoint}", *overrides
    )
    return checkpoint, branch


def _not_damaged(message: str, checkpoint: Path, part: str) -> None:
    assert message.startswith(f"train.resume: {checkpoint} does not fit this recipe's {part} (")  # noqa: E501
    assert "damaged" not in message and "only checkpoint" not in message, message
    assert "move" not in message and "\n" not in message, message


def test_a_branch_from_another_models_checkpoint_is_not_called_damaged(trained_run, tmp_path):
    """Before: "... load the model with lora_rank=0 (step-000001 is the run's only
    checkpoint: train again in a new output_dir)", advice for a damaged checkpoint."""
    from dsharp.engine import Trainer

    checkpoint, branch = _branch(trained_run, tmp_path, "model.lora_rank=4")
    with pytest.raises(ValueError) as raised:
        Trainer(branch, progress=False)
    message = str(raised.value)
    assert message.startswith(f"train.resume: {checkpoint}"), message
    assert message.endswith(
        "a fully fine-tuned UNet, but this recipe says model.lora_rank: 4 (the checkpoint's "
        "run trained another model: set model.lora_rank: 0)"
    ), message
    assert "damaged" not in message and "only checkpoint" not in message, message
    assert "move" not in message and "\n" not in message, message


def test_a_branch_with_another_optimizer_is_refused_before_training(trained_run, tmp_path):
    """Before: the AdamW checkpoint's settings loaded into SGD, and the first step failed
    with "error: momentum" (a bare KeyError)."""
    from dsharp.engine import Trainer

    checkpoint, branch = _branch(trained_run, tmp_path, "train.optimizer=sgd")
    with pytest.raises(ValueError) as raised:
        Trainer(branch, progress=False)
    _not_damaged(str(raised.value), checkpoint, "optimizer")
    assert "momentum" in str(raised.value) and "train.optimizer" in str(raised.value)


def test_a_newer_optimizer_setting_missing_from_an_older_checkpoint_is_no_misfit(
    trained_run, monkeypatch
):
    """An optimizer version that adds a group setting (bitsandbytes reads its newer ones
    with defaults) still resumes a checkpoint saved before it: only the settings that tell
    AdamW from SGD mean another optimizer's state."""
    import torch

    from dsharp.engine import Trainer

    real_init = torch.optim.AdamW.__init__

    def newer(self, params, *args, **kwargs):
        real_init(self, params, *args, **kwargs)
        for group in self.param_groups:
            group["t_alpha"] = None  # a setting the saved state does not hold
        self.defaults["t_alpha"] = None

    _, resumed = trained_run
    monkeypatch.setattr(torch.optim.AdamW, "__init__", newer)
    trainer = Trainer(resumed, progress=False)
    trainer.release_folder()
    assert trainer.start_step == 1


def test_torchs_optimizer_group_mismatch_is_a_misfit_not_damage(trained_run, monkeypatch):
    """torch's own ValueError for saved parameter groups of another size."""
    import torch
    from accelerate import Accelerator

    from dsharp.engine import Trainer

    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    with pytest.raises(ValueError) as torch_error:
        torch.optim.AdamW([a]).load_state_dict(torch.optim.AdamW([a, b]).state_dict())

    def mismatched(self, *args, **kwargs):
        raise torch_error.value

    run, resumed = trained_run
    monkeypatch.setattr(Accelerator, "load_state", mismatched)
    with pytest.raises(ValueError) as raised:
        Trainer(resumed, progress=False)
    # other parameters: no train.optimizer mends it (it was called the optimizer's misfit)
    _not_damaged(str(raised.value), run / "checkpoints" / "step-000001", "model")
    assert "train.optimizer" not in str(raised.value)


def test_a_branch_from_a_lora_checkpoint_into_full_fine_tuning_is_refused_before_loading(
    tiny_sd_dir, tmp_path, monkeypatch
):
    """Before: the model loaded, the LoRA was added to it, and torch's parameter-group error
    was said as the optimizer's misfit: "resume from a checkpoint of a run with this
    recipe's train.optimizer, or set it to the checkpoint's" (it was the same optimizer)."""
    import dsharp.engine
    from dsharp.engine import Trainer

    run = tmp_path / "lora"
    Trainer(
        _recipe(tiny_sd_dir, run, "train.max_steps=1", "model.lora_rank=4"), progress=False
    ).run()
    checkpoint = run / "checkpoints" / "step-000001"
    (run / "recipe.yaml").unlink()  # a checkpoint kept without its run
    branch = _recipe(
        tiny_sd_dir, tmp_path / "branch", "train.max_steps=2", f"train.resume={checkpoint}"
    )
    monkeypatch.setattr(dsharp.engine, "build_model", _must_not_load)
    with pytest.raises(ValueError) as raised:
        Trainer(branch, progress=False)
    assert str(raised.value) == (
        f"train.resume: {checkpoint / 'model'}: a LoRA (rank 4), but this recipe says "
        "model.lora_rank: 0 (the checkpoint's run trained another model: set model.lora_rank: 4)"
    )
    # a LoRA branch of it still trains
    lora = _recipe(
        tiny_sd_dir,
        tmp_path / "lora-branch",
        "train.max_steps=2",
        "model.lora_rank=4",
        f"train.resume={checkpoint}",
    )
    monkeypatch.undo()
    Trainer(lora, progress=False).run()
    assert (tmp_path / "lora-branch" / "checkpoints" / "step-000002").is_dir()
