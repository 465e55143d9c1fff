"""Run-folder layout and checkpoints.

A run folder holds ``recipe.yaml`` (resolved, secrets redacted), ``environment.json``,
``metrics.jsonl`` and ``checkpoints/step-NNNNNN/`` folders. Each checkpoint holds
accelerate's state (optimizer, LR scheduler, RNG states of every process), ``model/`` (what
training changed: full UNet or LoRA weights, loadable by ``DiffusionModel.load_trained``)
and ``trainer_state.json``. A checkpoint is written to a hidden temp folder and renamed into
place, so a crash never leaves a half-written checkpoint that resume would pick up.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from dsharp.io import (
    aside_name,
    atomic_write_json,
    discard_directory,
    replace_directory,
    restore_replaced,
    sync_folder,
    sync_tree,
)

CHECKPOINT_RE = re.compile(r"^step-(\d{6,})$")
#: What ``dsharp merge`` writes in the run folder beside its one checkpoint (the runs merged
#: and the scale): such a folder holds weights only, no run to resume.
MERGE_JSON = "merge.json"


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    """Where step ``step``'s checkpoint lives; zero-padded so that names sort by step."""
    return Path(run_dir) / "checkpoints" / f"step-{step:06d}"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first (one a kill left aside put back first:
    :func:`restore_aside_checkpoints`)."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    restore_aside_checkpoints(root)
    found = [
        (step, p)
        for p in root.iterdir()
        if (step := _step_of(p)) >= 0 and (p / "trainer_state.json").exists()
    ]
    return [p for _, p in sorted(found)]


def restore_aside_checkpoints(root: Path) -> None:
    """Put back each ``.step-N.old`` in the ``checkpoints`` folder ``root`` whose ``step-N`` is
    missing: a step saved again (:func:`~dsharp.io.replace_directory`) killed between its two
    renames left its older copy, whole, aside, the step's only copy, which resume must find and
    no save may delete. Not while another process holds the run folder: its save may be
    between those renames now."""
    from dsharp.folder_lock import locked_by_another_process

    aside = steps_left_aside(root)
    if aside and not locked_by_another_process(_run_dir_of_root(root)):
        for final in aside:
            restore_replaced(final)


def steps_left_aside(root: Path) -> list[Path]:
    """The ``step-N`` folders of the ``checkpoints`` folder ``root`` that are missing while
    their whole older copy is aside (``.step-N.old``), oldest first: what
    :func:`restore_aside_checkpoints` puts back, or, once it has run, could not."""
    found = [
        (step, final)
        for old in Path(root).glob(".step-*.old")
        if (step := _step_of(final := Path(root) / old.name[1:-4])) >= 0
        and not final.exists()
        and (old / "trainer_state.json").is_file()
    ]
    return [final for _, final in sorted(found)]


def _run_dir_of_root(root: Path) -> Path:
    """The run folder of the ``checkpoints`` folder ``root``, from its absolute path: that of
    a bare ``step-N``'s (given from inside ``checkpoints``) is not ``Path('.').parent``,
    which is ``checkpoints`` itself."""
    return Path(os.path.abspath(root)).parent


def aside_advice(final: Path, label: str = "--checkpoint") -> str:
    """For the user: step folder ``final`` (one of :func:`steps_left_aside`) is missing, its
    copy is aside, why :func:`restore_aside_checkpoints` did not put it back, and what to do.
    Else a read command would use the step before it, or say only "no such folder"."""
    from dsharp.folder_lock import locked_by_another_process

    final = Path(final)
    old = aside_name(final)
    where = f"{final.name}'s copy is aside in {old}"
    if locked_by_another_process(_run_dir_of_root(final.parent)):
        return (
            f"{where}, not put back while a training holds the run folder (it may be saving "
            "that step again now): run this again once it has saved"
        )
    why = "is read-only" if not os.access(final.parent, os.W_OK) else "refused the rename"
    return (
        f"{where} (a kill cut a save of it short), not put back: {final.parent} {why}; make "
        f"it writable and run this again (that puts it back), or give {label} {old} to read "
        "it where it is"
    )


def newer_step_aside(checkpoint: Path, label: str = "--checkpoint") -> str | None:
    """The note for a run folder whose newest checkpoint ``checkpoint`` was taken while a
    newer step's copy is left aside (:func:`aside_advice`); None when none is."""
    checkpoint = Path(checkpoint)
    newer = [f for f in steps_left_aside(checkpoint.parent) if _step_of(f) > _step_of(checkpoint)]
    if not newer:
        return None
    return f"using {checkpoint.name}, not {newer[-1].name}: {aside_advice(newer[-1], label)}"


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint (what ``train.resume: latest`` picks), or None."""
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def resolve_resume(run_dir: Path, resume: str | None) -> Path | None:
    """``train.resume``: None (fresh run), ``latest`` (newest checkpoint, if any) or a folder."""
    if not resume:
        return None
    if resume == "latest":
        return latest_checkpoint(run_dir)
    path = Path(resume)
    if CHECKPOINT_RE.match(path.name):  # a kill may have left it aside
        restore_aside_checkpoints(path.parent)
    if not (path / "trainer_state.json").exists():
        raise FileNotFoundError(f"train.resume: not a checkpoint folder: {resume}")
    own = list_checkpoints(run_dir)
    if own and path.resolve().parent != (Path(run_dir) / "checkpoints").resolve():
        # A branch into a folder of another run would mix the two runs' metrics and leave
        # that run's checkpoints beside it, where `latest` (and the report) would pick them.
        raise ValueError(
            f"output_dir: {run_dir} already holds checkpoints of another run: to branch from "
            f"{resume}, choose another output_dir (to continue the run it holds, set "
            "train.resume=latest)"
        )
    newer = [c for c in own if _step_of(c) > _step_of(path)]
    if newer:
        # Training on from here would leave the newer checkpoints beside a different history.
        raise ValueError(
            f"train.resume: {resume} is older than this run's newest checkpoint "
            f"({newer[-1].name}); to branch from it, set another output_dir"
        )
    return path


def _step_of(checkpoint: Path) -> int:
    """The step a ``step-NNNNNN`` folder name says; -1 for any other name."""
    match = CHECKPOINT_RE.match(Path(checkpoint).name)
    return int(match.group(1)) if match else -1


def read_trainer_state(checkpoint: Path) -> dict:
    """A checkpoint's ``trainer_state.json``; ``ValueError`` naming the file when it is not
    a JSON object (damaged outside dsharp: dsharp writes it atomically)."""
    path = Path(checkpoint) / "trainer_state.json"
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not JSON ({err})") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: not a JSON object")
    return state


def checkpoint_step(checkpoint: Path) -> int | None:
    """The step a checkpoint holds (None for step 0), as evaluations of it record it;
    ``ValueError`` naming the file when its ``step`` is not a whole number >= 0."""
    step = read_trainer_state(checkpoint).get("step", 0)
    if isinstance(step, float) and step.is_integer():
        step = int(step)
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        path = Path(checkpoint) / "trainer_state.json"
        raise ValueError(f"{path}: step is {step!r}, not a whole number >= 0")
    return step or None


def resume_state(checkpoint: Path) -> dict:
    """``trainer_state.json`` as a resume reads it: ``step`` present, a whole number, and the
    counters and method state of the types the trainer restores; ``ValueError`` naming the
    file and the key otherwise, before any model loads (not a bare ``KeyError: 'step'``)."""
    state = read_trainer_state(checkpoint)
    path = Path(checkpoint) / "trainer_state.json"
    if "step" not in state:
        raise ValueError(f"{path}: no step (the step the checkpoint was saved at)")
    state["step"] = checkpoint_step(checkpoint) or 0
    evals = state.get("reward_evals", 0)
    if isinstance(evals, bool) or not isinstance(evals, int) or evals < 0:
        raise ValueError(f"{path}: reward_evals is {evals!r}, not a whole number >= 0")
    if not isinstance(state.get("method_state", {}), dict):
        raise ValueError(f"{path}: method_state is not a JSON object")
    return state


#: What accelerate's ``save_state`` writes beside the model (torch zip archives), which a
#: resume loads after the model: checked first, so a partial copy fails before the load.
RESUME_FILES = ("optimizer.bin", "scheduler.bin")


def check_resume_files(checkpoint: Path) -> None:
    """``FileNotFoundError`` (``ValueError`` for a file cut short: not a whole zip archive)
    naming the first of :data:`RESUME_FILES` that ``checkpoint`` lacks: a copy that missed
    a file, or a disk that filled, found before the model loads rather than after."""
    import zipfile

    for name in RESUME_FILES:
        path = Path(checkpoint) / name
        if not path.is_file():
            raise FileNotFoundError(
                f"train.resume: {path} is missing ({damaged_checkpoint_advice(checkpoint)})"
            )
        if not zipfile.is_zipfile(path):
            raise ValueError(
                f"train.resume: {path} is damaged or truncated "
                f"({damaged_checkpoint_advice(checkpoint)})"
            )


def damaged_checkpoint_advice(checkpoint: Path) -> str:
    """What to do about a run's damaged checkpoint: a resume from an older one of the same
    run is refused while this newer one is there, so it has to move out of the way."""
    checkpoint = Path(checkpoint)
    step = _step_of(checkpoint)
    earlier = [p for p in list_checkpoints(run_dir_of(checkpoint)) if _step_of(p) < step]
    if step < 0:  # a folder train.resume named (a copy, say), not one of a run's step-*
        return "give train.resume another checkpoint, or train again in a new output_dir"
    if not earlier:  # nothing to fall back on
        return f"{checkpoint.name} is the run's only checkpoint: train again in a new output_dir"
    return (
        f"to resume the run from its previous checkpoint ({earlier[-1].name}), move "
        f"{checkpoint.name} out of {checkpoint.parent}"
    )


def temp_checkpoint_dir(run_dir: Path, step: int) -> Path:
    """The hidden folder a checkpoint is written into before its rename into place, so that a
    crash mid-save never leaves a half-written ``step-*`` folder that resume would pick."""
    final = checkpoint_dir(run_dir, step)
    return final.parent / f".{final.name}.tmp"


def finalize_checkpoint(run_dir: Path, step: int, state: dict, keep: int | None) -> Path:
    """Write ``trainer_state.json`` into the temp folder, rename it into place, prune old ones.

    The folder's files are on disk before ``trainer_state.json``, which marks it whole, and
    the rename is before this returns, so that after a power cut resume never trusts a
    checkpoint whose weights were still in the page cache. Every process has finished its
    part of this save, so any other temp folder is a save that a crash cut short (a SIGKILL
    after a stop's checkpoint at a step the resumed run never saves again), and any
    ``.step-N.old`` folder beside its ``step-N`` the older copy of a step saved again that a
    crash kept from being deleted (:func:`~dsharp.io.replace_directory`): a whole UNet's size
    each, deleted here. One without its ``step-N`` is that step's only copy: put back first."""
    tmp = temp_checkpoint_dir(run_dir, step)
    sync_tree(tmp)
    atomic_write_json(tmp / "trainer_state.json", state)
    final = checkpoint_dir(run_dir, step)
    restore_aside_checkpoints(final.parent)  # before any of them is deleted below
    replace_directory(tmp, final)
    sync_folder(final.parent)
    if keep:
        for old in list_checkpoints(run_dir)[:-keep]:
            _remove_checkpoint(old)
    for left in final.parent.glob(".step-*.pruned"):  # a prune a crash cut short
        shutil.rmtree(left, ignore_errors=True)
    for left in final.parent.glob(".step-*.tmp"):  # a save a crash cut short (see above)
        shutil.rmtree(left, ignore_errors=True)
    for left in final.parent.glob(".step-*.old"):  # a step saved again, a crash cut short
        if (left.parent / left.name[1:-4]).exists():  # else the only copy (a read-only one)
            discard_directory(left)
    for left in final.parent.glob(".step-*.old.deleting"):  # its delete, a crash cut short
        shutil.rmtree(left, ignore_errors=True)
    return final


def _remove_checkpoint(checkpoint: Path) -> None:
    """Delete an old checkpoint: renamed to a hidden name first, so that a crash part way
    through the delete never leaves a ``step-*`` folder that still has its
    ``trainer_state.json`` but has lost its weights (the next checkpoint deletes the rest).
    Its older copy that a kill left aside (``.step-N.old``) goes first: left without its
    ``step-N``, it would be put back as the step's only copy, a pruned step come back."""
    discard_directory(aside_name(checkpoint))
    hidden = checkpoint.parent / f".{checkpoint.name}.pruned"
    shutil.rmtree(hidden, ignore_errors=True)
    try:
        os.replace(checkpoint, hidden)
    except OSError:  # a folder that refuses the rename: deleted where it is, as before
        hidden = checkpoint
    shutil.rmtree(hidden, ignore_errors=True)


def find_model_checkpoint(path: Path, label: str = "--checkpoint") -> Path:
    """``--checkpoint`` accepts a run folder (its newest checkpoint) or one checkpoint folder;
    ``label`` names the input in the error (a script's positional argument, say)."""
    path = Path(path)
    if CHECKPOINT_RE.match(path.name):  # a kill may have left it aside
        restore_aside_checkpoints(path.parent)
    if (path / "trainer_state.json").exists():
        return path
    if not path.exists():
        if CHECKPOINT_RE.match(path.name) and path in steps_left_aside(path.parent):
            raise FileNotFoundError(f"{label}: {path}: no such folder; {aside_advice(path, label)}")
        raise FileNotFoundError(f"{label}: {path}: no such folder")
    latest = latest_checkpoint(path)
    if latest is None:
        aside = steps_left_aside(path / "checkpoints")
        if aside:
            raise FileNotFoundError(
                f"{label}: no checkpoint found in {path}; {aside_advice(aside[-1], label)}"
            )
        raise FileNotFoundError(f"{label}: no checkpoint found in {path}")
    return latest


def run_dir_of(checkpoint: Path) -> Path:
    """The run folder a checkpoint folder belongs to. A path too short to hold it
    (``step-000002``, given from inside the run's ``checkpoints`` folder) or one that goes
    up (``..``) is made absolute first: read as written, its run folder was ``.``, and a
    resume of the run was not compared with the run's recipe.yaml."""
    path = Path(checkpoint)
    if len(path.parts) < 2 or ".." in path.parts:
        path = Path(os.path.abspath(path))
    return path.parent.parent


def read_run_recipe(checkpoint: Path, label: str = "--checkpoint") -> Any:
    """The saved recipe of the run a checkpoint folder belongs to; ``label`` names the input
    in the error when the run folder has none. Here, not beside the model builders: the
    commands read it (to check a checkpoint fits its base) before torch is imported."""
    from dsharp.recipe_io import load_recipe

    recipe_path = run_dir_of(checkpoint) / "recipe.yaml"
    if not recipe_path.exists():
        raise FileNotFoundError(f"{label}: {recipe_path} is missing (not a dsharp run folder)")
    return load_recipe(recipe_path, validate_files=False)
