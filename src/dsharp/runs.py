"""What each run folder under a parent holds: the overview behind `dsharp runs`.

A researcher's ``runs/`` fills with finished, stopped and crashed runs; reading each one's
recipe, newest checkpoint and evaluations tells which to resume, compare or delete.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from dsharp import checkpoints as ckpts
from dsharp.folder_lock import locked_by_another_process
from dsharp.io import read_jsonl
from dsharp.model_names import absolute_model_source
from dsharp.report import eval_files, headline_order, read_evaluation

RECIPE_MISSING = "recipe.yaml missing"
"""The status of a folder with checkpoints but no recipe.yaml: ``train`` will not resume it
(it cannot check the resume against the run's recipe)."""


@dataclass(frozen=True)
class RunSummary:
    """One run folder at a glance."""

    name: str
    path: str
    method: str | None
    model: str | None
    step: int | None  # newest complete checkpoint
    max_steps: int | None
    status: str  # running, finished, stopped (before max_steps), no checkpoint,
    # not started (no step logged), evaluation only, FILE unreadable, recipe.yaml missing
    reward: float | None  # mean reward of the last logged step
    score: float | None  # overall of the newest evaluation
    score_from: str | None  # which evaluation file gave ``score``
    score_step: int | None  # the checkpoint step it scored, where the evaluation says
    updated: str  # newest change in the folder, local time (month-day hour:minute)
    updated_at: float | None = None  # the same as seconds since the epoch (None: unknown)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def find_runs(parent: Path) -> list[RunSummary]:
    """Summaries of ``parent``'s sub-folders that hold a ``recipe.yaml`` or an evaluation
    (``dsharp eval --recipe`` writes only that), newest first; a run folder itself given as
    ``parent`` is summarised alone."""
    parent = Path(parent)
    if parent.is_file():
        raise NotADirectoryError(f"{parent}: is a file, not a folder")
    if not parent.is_dir():
        raise FileNotFoundError(f"{parent}: no such folder")
    if is_run_folder(parent):
        return [summarise_run(parent)]
    found = [_summary_or_problem(p) for p in sorted(parent.iterdir()) if _may_be_run(p)]
    # on the time itself, not its "%m-%d %H:%M" text (which sorts January below December and
    # runs of one minute by name); a folder whose time cannot be read goes last
    return sorted(found, key=lambda r: math.inf if r.updated_at is None else -r.updated_at)


def study_folders(parent: Path) -> list[Path]:
    """``parent``'s sub-folders that are no run but hold run folders: a study's output folder
    (``dsharp reproduce``), whose rows are its sub-folders, listed by ``dsharp runs STUDY``."""
    found = []
    for folder in sorted(Path(parent).iterdir()):
        try:
            rows = list(folder.iterdir()) if folder.is_dir() and not is_run_folder(folder) else []
        except OSError:  # a folder that cannot be looked into is listed by find_runs
            continue
        if any(_may_be_run(row) for row in rows):
            found.append(folder)
    return found


def _may_be_run(folder: Path) -> bool:
    """A run folder, or a folder that cannot be looked into (listed as such, not skipped)."""
    try:
        return is_run_folder(folder)
    except OSError:
        return folder.is_dir()


def _summary_or_problem(run_dir: Path) -> RunSummary:
    """One damaged or unreadable run is marked in the listing, and the others still list."""
    try:
        return summarise_run(run_dir)
    except (OSError, ValueError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        return RunSummary(
            name=run_dir.name,
            path=str(run_dir),
            method=None,
            model=None,
            step=None,
            max_steps=None,
            status=f"unreadable: {reason}",
            reward=None,
            score=None,
            score_from=None,
            score_step=None,
            **_updated_or_unknown(run_dir),
        )


def _updated_or_unknown(run_dir: Path) -> dict[str, Any]:
    try:
        return _updated(run_dir)
    except OSError:
        return {"updated": "?", "updated_at": None}


def is_run_folder(folder: Path) -> bool:
    """A folder with a run's recipe, or with an evaluation of a recipe's model or sampler."""
    if (folder / "recipe.yaml").is_file():
        return True
    return folder.is_dir() and bool(eval_files(folder, include_base=True))


def summarise_run(run_dir: Path) -> RunSummary:
    """Read a run folder without loading any model; a field it cannot read is None."""
    run_dir = Path(run_dir)
    has_recipe = (run_dir / "recipe.yaml").is_file()
    read = _read_yaml(run_dir / "recipe.yaml") if has_recipe else None
    recipe = read or {}
    method = _section(recipe, "method").get("name")
    model = _section(recipe, "model").get("pretrained")
    if not has_recipe:  # an evaluation's folder: what it scored is in its JSON
        method, model = _evaluated_method_and_model(run_dir)
    max_steps = _section(recipe, "train").get("max_steps")
    damaged = None  # a file that cannot be read or is missing: said so, the others still list
    try:
        latest = ckpts.latest_checkpoint(run_dir)
        step = ckpts.checkpoint_step(latest) if latest else None
    except (ValueError, OSError):  # not JSON, a step no whole number, a folder not readable
        latest, step, damaged = None, None, "checkpoint unreadable"
    try:
        rows = read_jsonl(run_dir / "metrics.jsonl")
    except ValueError:
        rows, damaged = [], damaged or "metrics.jsonl unreadable"
    if has_recipe and read is None:
        damaged = damaged or "recipe.yaml unreadable"
    elif not has_recipe and latest is not None:
        # train refuses to resume checkpoints it cannot check against their run's recipe
        damaged = damaged or RECIPE_MISSING
    rewards = [r["reward"] for r in rows if _finite(r.get("reward"))]
    score, score_from, score_step = _newest_score(run_dir)
    trained = bool(rows) or latest is not None
    evaluated = score_from is not None or bool(eval_files(run_dir, include_base=True))
    if has_recipe and not trained and evaluated:
        # a study's untrained row: its base recipe's method never ran; what was scored is the
        # model with the evaluation's sampler (``demon (sampler)``, ``default (sampler)``)
        method = _evaluated_method_and_model(run_dir)[0]
    return RunSummary(
        name=run_dir.name,
        path=str(run_dir),
        method=method,
        # older runs saved a local folder relatively: named as newer runs name it, where it
        # resolves from here, so that runs of one model show one name
        model=absolute_model_source(str(model)) if model is not None else None,
        step=step,
        max_steps=max_steps,
        status=_folder_status(
            run_dir,
            step,
            max_steps,
            damaged,
            trained=trained,
            # a score came from an evaluation file; else look for eval-base.json as well
            evaluated=evaluated,
        ),
        reward=rewards[-1] if rewards else None,
        score=score,
        score_from=score_from,
        score_step=score_step,
        **_updated(run_dir),
    )


def _folder_status(
    run_dir: Path,
    step: int | None,
    max_steps: int | None,
    damaged: str | None,
    *,
    trained: bool,
    evaluated: bool,
) -> str:
    """The ``status`` of a run folder: a folder another process is writing is ``running``,
    whatever its checkpoints say, so that a run in progress does not read as stopped; one
    with a file that cannot be read or is missing (``damaged``: ``metrics.jsonl
    unreadable``, ``recipe.yaml missing``) says which, not that it may be resumed."""
    if locked_by_another_process(run_dir):
        return "running"
    if damaged:
        return damaged
    return _merge_status(run_dir) or _status(step, max_steps, trained, evaluated)


def _merge_status(run_dir: Path) -> str | None:
    """``merged (3 runs, scale 2)`` for a folder ``dsharp merge`` wrote, else None."""
    path = run_dir / ckpts.MERGE_JSON
    if not path.is_file():
        return None
    try:
        merge = json.loads(path.read_text(encoding="utf-8"))
        count = len(merge["runs"])
        return f"merged ({count} run{'s' if count != 1 else ''}, scale {merge['scale']:g})"
    except (OSError, ValueError, KeyError, TypeError):
        return "merged"


def _status(step: int | None, max_steps: int | None, trained: bool, evaluated: bool) -> str:
    if not trained:
        # a study's untrained row is scored without training; a run that logged no step and
        # was never scored failed, or was stopped, before its first step
        return "evaluation only" if evaluated else "not started"
    if step is None:
        return "no checkpoint"
    if max_steps is not None and step >= max_steps:
        return "finished"
    return "stopped"


def _newest_score(run_dir: Path) -> tuple[float | None, str | None, int | None]:
    """``overall`` of the newest evaluation (never eval-base.json; one scored by other
    rewards than its bench's only where no other has a score), its file and the step it
    scored (when the evaluation records one: ``dsharp eval --checkpoint`` does)."""
    for path in reversed(headline_order(eval_files(run_dir))):
        try:
            result = read_evaluation(path)
        except (OSError, ValueError):
            continue
        if _finite(result.get("overall")):
            step = result.get("step")
            return float(result["overall"]), path.name, step if isinstance(step, int) else None
    return None, None, None


def untrained_row_sampler(run_dir: Path) -> str | None:
    """The sampler (``default`` for plain DDIM) of the newest readable evaluation in a folder
    whose recipe's method never ran (no step logged, no checkpoint): a study's untrained row,
    which keeps its base recipe's ``method`` section though only sampling was scored. None
    for a folder that trained, or holds no readable evaluation."""
    run_dir = Path(run_dir)
    try:
        if ckpts.latest_checkpoint(run_dir) is not None or read_jsonl(run_dir / "metrics.jsonl"):
            return None
    except (OSError, ValueError):
        return None
    result = _newest_readable_evaluation(run_dir)
    return None if result is None else (_sampler_of(result) or "default")


def _newest_readable_evaluation(run_dir: Path) -> dict | None:
    """The newest evaluation in ``run_dir`` that reads (damaged ones are passed over; one
    scored by other rewards than its bench's only where no other reads)."""
    for path in reversed(headline_order(eval_files(run_dir, include_base=True))):
        try:
            return read_evaluation(path)
        except (OSError, ValueError):
            continue
    return None


def _sampler_of(result: dict) -> str | None:
    """The sampler an evaluation records (``sample.method``), if it records one."""
    sample = result.get("sample")
    sampler = sample.get("method") if isinstance(sample, dict) else None
    return sampler if isinstance(sampler, str) else None


def _evaluated_method_and_model(run_dir: Path) -> tuple[str | None, str | None]:
    """The sampler (``demon (sampler)``, ``default (sampler)`` for plain DDIM, as `dsharp
    recipes list` names it) and model that the newest readable evaluation in ``run_dir``
    scored."""
    result = _newest_readable_evaluation(run_dir)
    if result is None:
        return None, None
    method = f"{_sampler_of(result) or 'default'} (sampler)"
    model = result.get("model")
    return method, model if isinstance(model, str) else None


def _section(recipe: dict[str, Any], name: str) -> dict[str, Any]:
    """A recipe's section as a mapping; ``{}`` where it is missing or damaged (a bare
    ``method: ddpo``), so that one odd run folder does not stop the listing."""
    section = recipe.get(name)
    return section if isinstance(section, dict) else {}


def _read_yaml(path: Path) -> dict[str, Any] | None:
    """A YAML mapping, or None where the file cannot be read as one."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    return data if isinstance(data, dict) else None


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _updated(run_dir: Path) -> dict[str, Any]:
    """The newest modification time among the folder and its direct entries: ``updated``
    (local month-day hour:minute, for the table) and ``updated_at`` (epoch seconds, to sort
    on)."""
    times = [run_dir.stat().st_mtime]
    times += [p.stat().st_mtime for p in run_dir.iterdir()]
    newest = max(times)
    return {"updated": datetime.fromtimestamp(newest).strftime("%m-%d %H:%M"), "updated_at": newest}


def training_warnings(run_dir: Path) -> list[str]:
    """What a finished run's metrics say went wrong without an error: no step scored a sample
    (every reward missing), or no step had a usable pair to learn from (all ties)."""
    rows = read_jsonl(Path(run_dir) / "metrics.jsonl")
    warnings = []
    rewards = [r["reward"] for r in rows if "reward" in r]
    if rewards and not any(_finite(v) for v in rewards):
        warnings.append(
            "no logged step scored a sample: every reward was missing (see reward_missing in "
            "metrics.jsonl), so training had nothing to learn from"
        )
    pairs = [r["pairs"] for r in rows if "pairs" in r]
    if pairs and not any(_finite(v) and v > 0 for v in pairs):
        warnings.append(
            "no logged step had a usable best/worst pair (ties or missing scores): the loss "
            "was zero throughout"
        )
    return warnings
