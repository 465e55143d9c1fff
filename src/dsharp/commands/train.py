"""`dsharp train RECIPE [key.sub=value ...]`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from dsharp.commands.errors import (
    RECIPE_ERROR_EXIT,
    debugging,
    own_warnings_as_lines,
    said_once,
    user_errors,
)
from dsharp.launch import launch_size, launcher_rank_zero

if TYPE_CHECKING:
    from dsharp.config import Recipe
    from dsharp.rewards.base import UnscoredError


def train(
    recipe: Path = typer.Argument(
        ..., metavar="RECIPE", help="YAML recipe, e.g. recipes/quickstart.yaml."
    ),
    overrides: list[str] = typer.Argument(
        None,
        metavar="OVERRIDES",
        help="Recipe overrides as key.sub=value, e.g. train.max_steps=2 output_dir=/tmp/run.",
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show the progress bar."),
) -> None:
    """Fine-tune a model as a recipe says; writes a run folder (metrics, checkpoints, report)."""
    from dsharp.recipe_errors import RecipeError
    from dsharp.recipe_io import load_recipe

    with user_errors("error"):  # a plugin's fault in a check: one line, exit 1
        try:
            cfg = load_recipe(recipe, overrides or [])
            from dsharp.posttrain import wants_report
            from dsharp.train_start import check_training

            notes = check_training(cfg, source=str(recipe), evaluation=wants_report(cfg))
            if launcher_rank_zero():
                for note in notes:
                    typer.echo(f"note: {note}", err=True)
        except RecipeError as exc:
            if debugging():
                raise
            raise said_once(f"recipe error: {exc}", RECIPE_ERROR_EXIT) from None
    with user_errors("error"):
        from dsharp.preflight import check_runtime
        from dsharp.train_start import claimed_run_folder

        # what this machine cannot run (fp16 autocast without CUDA) is refused before the plan
        # line says the run starts, as the one line of output
        check_runtime(cfg)
        main = launcher_rank_zero()  # one plan line and one lock holder, not one each
        # The folder is this command's from before the model loads until its report is
        # written, so a second process is refused at once and cannot resume mid-report.
        with claimed_run_folder(cfg):
            if main:
                typer.echo(_plan_line(cfg))
            with own_warnings_as_lines():
                run_dir = _train_and_report(cfg, recipe, overrides or [], progress)
    if main:
        typer.echo(f"run folder: {run_dir}")


def _train_and_report(cfg: Recipe, recipe: Path, overrides: list[str], progress: bool) -> Path:
    """Train, then (main process) print training warnings and write the post-train report."""
    from dsharp.engine import train as run_training
    from dsharp.interrupts import TrainingInterrupted
    from dsharp.posttrain import wants_report
    from dsharp.rewards.base import UnscoredError

    stopped_at_end = False  # a stop asked for during the last step: no report after it
    try:
        run_dir = run_training(cfg, progress=progress, report_follows=wants_report(cfg))
    except UnscoredError as err:
        raise UnscoredError(_on_error_advice(cfg, err), err.key) from None
    except KeyboardInterrupt:  # while loading, or a second Ctrl-C mid-step
        from dsharp.checkpoints import latest_checkpoint

        if launcher_rank_zero():  # every process stops; the first one says so
            newest = latest_checkpoint(Path(cfg.output_dir))
            if newest is None:
                typer.echo("stopped before any checkpoint was saved", err=True)
            else:
                again = _resume_command(cfg, recipe, overrides, Path(cfg.output_dir))
                typer.echo(f"stopped; continue from {newest.name} with: {again}", err=True)
        raise typer.Exit(130) from None
    except TrainingInterrupted as stopped:
        if not stopped.complete:
            if launcher_rank_zero():
                again = _resume_command(cfg, recipe, overrides, stopped.run_dir)
                typer.echo(
                    f"stopped after step {stopped.step} of {cfg.train.max_steps}; checkpoint "
                    f"in {stopped.run_dir}; continue with: {again}",
                    err=True,
                )
            raise typer.Exit(130) from None
        run_dir, stopped_at_end = stopped.run_dir, True
    from accelerate import PartialState

    from dsharp.posttrain import post_train_report

    if PartialState().is_main_process:
        from dsharp.runs import training_warnings

        for warning in training_warnings(run_dir):
            typer.echo(f"warning: {warning}", err=True)
        if not wants_report(cfg):
            _say_curves(run_dir)
        else:  # the report draws the final curves with it, and their line follows it
            if stopped_at_end:  # training drew the final curves, as no report follows now
                _say_curves(run_dir)
                again = _resume_command(cfg, recipe, overrides, run_dir)
                typer.echo(_report_not_written(run_dir, again), err=True)
                raise typer.Exit(130)
            from dsharp.file_sets import ReplacedThenInterrupted

            try:
                report = post_train_report(cfg, run_dir, progress=progress)
            except ReplacedThenInterrupted:  # a Ctrl-C while its files were put in place
                typer.echo(
                    f"stopped after the report was written: {run_dir / 'report.md'}", err=True
                )
                raise typer.Exit(130) from None
            except KeyboardInterrupt:
                again = _resume_command(cfg, recipe, overrides, run_dir)
                typer.echo(_report_not_written(run_dir, again), err=True)
                raise typer.Exit(130) from None
            except UnscoredError as err:  # an evaluation reward could not score an image
                again = _resume_command(cfg, recipe, overrides, run_dir)
                raise UnscoredError(_report_unscored(cfg, run_dir, err, again), err.key) from None
            except OSError as err:  # a full disk: training is whole, the report can be redone
                from dsharp.commands.errors import one_line

                again = _resume_command(cfg, recipe, overrides, run_dir)
                said = _report_not_written(run_dir, again, because=one_line(err))
                typer.echo(f"error: {said}", err=True)
                raise typer.Exit(1) from None
            _say_curves(run_dir)
            typer.echo(report.headline)
            typer.echo(f"report: {report.path}")
    return run_dir


def _on_error_field(section: str, specs: list[Any] | None, key: str | None) -> str | None:
    """``rewards.N.on_error`` (``section`` names the list) for the reward whose combined
    key is ``key`` (``name``, ``name#1`` on a repeat), or None where the list has none."""
    from dsharp.rewards.combine import _component_keys

    keys = _component_keys(specs) if specs else []
    return f"{section}.{keys.index(key)}.on_error" if key in keys else None


def _on_error_advice(cfg: Recipe, err: UnscoredError) -> str:
    """A training reward's failure to score samples, with the setting that skips such
    samples instead (``rewards.N.on_error: missing``; the override works as written)."""
    from dsharp.commands.errors import one_line

    field = _on_error_field("rewards", cfg.rewards, err.key)
    if field is None:
        return one_line(err)
    return (
        f"{one_line(err)}; to skip such samples instead (never scored, counted in "
        f"reward_missing), set {field}: missing in the recipe or add the override "
        f"{field}=missing"
    )


def _report_unscored(cfg: Recipe, run_dir: Path, err: UnscoredError, again: str) -> str:
    """The post-training evaluation stopped by an image its reward could not score: training
    is kept, and the setting that leaves such images unscored is named (in ``eval.rewards``,
    where the report's rewards are set apart from training's)."""
    from dsharp.commands.errors import one_line

    said = f"training is complete in {run_dir}, but its report was not written: {one_line(err)}"
    field = _on_error_field("eval.rewards", cfg.eval.rewards, err.key)
    if field is not None:
        how = f"set {field}: missing in the recipe (override {field}=missing)"
    else:
        how = "give the reward in eval.rewards with on_error: missing"
    return f"{said}; to leave such images unscored, {how}, then write it with: {again}"


def _say_curves(run_dir: Path) -> None:
    """Print where the run's training curves are, where they were drawn."""
    from dsharp.curves import CURVES_PNG

    if (run_dir / CURVES_PNG).exists():
        typer.echo(f"training curves: {run_dir / CURVES_PNG}")


def _report_not_written(run_dir: Path, again: str, because: str | None = None) -> str:
    """Training is kept; the report (and why it was not written, where known) can be redone."""
    why = f" ({because})" if because else ""
    return (
        f"training is complete in {run_dir}, but its report was not written{why}; "
        f"write it with: {again}"
    )


def _resume_command(cfg: Recipe, recipe: Path, overrides: list[str], run_dir: Path) -> str:
    """The command that continues an interrupted run in the same folder. An override that
    holds a secret (a key, credentials in a URL) is shown redacted, as every message shows
    it, and the command says which ones to pass again with their real values."""
    import shlex

    from dsharp.redaction import REDACTED, sensitive_setting, shown_setting

    kept = [o for o in overrides if not o.startswith(("train.resume=", "output_dir="))]
    shown, hidden = [], []
    for override in kept:
        if sensitive_setting(override) or _holds_secret(cfg, override):
            key = override.partition("=")[0].strip()
            as_shown = shown_setting(override)
            shown.append(as_shown if as_shown != override else f"{key}={REDACTED}")
            hidden.append(key)
        else:
            shown.append(override)
    args = ["dsharp", "train", str(recipe), *shown, f"output_dir={run_dir}", "train.resume=latest"]
    command = shlex.join(args)
    if (size := launch_size()) > 1:
        # a plain `dsharp train` is one process: its steps would train on other batches
        command += f" (under the launcher that started this run, with its {size} processes)"
    if hidden:
        values = "its real value" if len(hidden) == 1 else "their real values"
        command += (
            f" (secrets are not printed: give {', '.join(hidden)} {values} in place of {REDACTED})"
        )
    return command


def _holds_secret(cfg: Recipe, override: str) -> bool:
    """Whether an override's value holds a secret that its key alone does not show: a
    mapping given whole (``rewards.0.options={api_key: ...}``), or an option its reward
    declares secret (``RewardInfo.secret_options``)."""
    import yaml

    from dsharp.redaction import declared_secrets, redact_options

    key, _, raw = override.partition("=")
    parts = key.strip().split(".")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        return False
    declared: frozenset[str] = frozenset()
    section = parts[1:] if parts[0] == "eval" else parts
    specs = (cfg.eval.rewards or []) if parts[0] == "eval" else cfg.rewards
    index = int(section[1]) if len(section) > 1 and section[1].isdigit() else len(specs)
    if section[:1] == ["rewards"] and index < len(specs):
        declared = declared_secrets(specs[index].name)
    tree = {parts[-1]: value}
    return redact_options(tree, declared) != tree


def _plan_line(cfg: Recipe) -> str:
    """What is about to run, in one line, before the slow model loading starts."""
    rewards = ", ".join(r.name for r in cfg.rewards) or "none"
    trains = f"LoRA rank {cfg.model.lora_rank}" if cfg.model.lora_rank else "full fine-tuning"
    if cfg.train.mixed_precision != "no":
        trains += f", {cfg.train.mixed_precision} autocast"
    resume = f", resuming ({cfg.train.resume})" if cfg.train.resume else ""
    if cfg.train.resume == "latest":
        from dsharp.checkpoints import latest_checkpoint

        found = latest_checkpoint(Path(cfg.output_dir))
        # `latest` starts afresh where there is nothing to resume: say so, a mistyped
        # output_dir would otherwise look like a resumed run
        resume = f", resuming from {found.name}" if found else ", no checkpoint to resume yet"
    steps = f"{cfg.train.max_steps} step{'s' if cfg.train.max_steps != 1 else ''}"
    batch = f"batch {cfg.train.batch_size}"
    if (processes := launch_size()) > 1:  # train.batch_size is each process's
        batch += f" x {processes} processes"
    return (
        f"training: {cfg.method.name} of {cfg.model.pretrained} ({trains}; rewards: {rewards}), "
        f"{steps}, {batch} -> {cfg.output_dir}{resume}"
    )
