"""One-line error reporting for commands: users see the input and the reason, not a traceback
(set ``DSHARP_DEBUG=1`` for the traceback)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer

from dsharp.error_text import one_line  # re-exported: the commands fold errors with it

#: Errors that mean "bad input or environment", reported as one line.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    FileNotFoundError,
    NotADirectoryError,
    KeyError,
    ImportError,
    NotImplementedError,
    OSError,
    RuntimeError,
)

#: What a command stopped by a candidate its verifier (of an inference-time method) could not
#: score tells the user to do: `dsharp sample` and `dsharp eval` alike.
VERIFIER_ON_ERROR_HINT = (
    "rerun with --on-error missing to pass over candidates the verifier cannot score "
    "(an image with none scored still stops)"
)

#: How `dsharp sample` and `dsharp eval` tell a user to give an inference-time method its
#: verifier (``SampleSettings.validate``).
VERIFIER_FLAG_HINT = "pass --reward NAME (or use a recipe with rewards)"


def require_counts(counts: dict[str, int | None]) -> None:
    """Refuse a count flag below 1 (``{"--seeds": 0}``); None means "not given". Without
    this, a 0 reads as "not given" wherever a command writes ``value or default``."""
    from dsharp.recipe_errors import RecipeError

    for flag, value in counts.items():
        if value is not None and value < 1:
            raise RecipeError(f"{flag} must be at least 1, got {value}")


def usage_error(message: str) -> ValueError:
    """A missing or doubled input (no prompt, no model, two of them): a usage error, so a
    ``RecipeError`` that exits ``RECIPE_ERROR_EXIT`` as the parser's own refusals do."""
    from dsharp.recipe_errors import RecipeError

    return RecipeError(message)


def refuse_a_launch(command: str) -> None:
    """``dsharp eval`` and ``sample`` run in one process: under a launcher of several, each
    process would make every image on its own and write the same files. Refused at once,
    before a model loads, said once (:func:`said_once`, as ``train`` says its refusals): the
    others wait for the launcher's stop, which an exit at once could bring on the first
    before it had said why."""
    from dsharp.launch import launch_size

    size = launch_size()
    if size <= 1:
        return
    raise said_once(
        f"error: dsharp {command} runs in one process, and this launch started {size}: "
        "run it without accelerate launch (or torchrun, mpirun)",
        RECIPE_ERROR_EXIT,
    )


@contextmanager
def settings_errors() -> Iterator[None]:
    """A ``ValueError`` from checking settings the user gave (flags, ``--option``,
    overrides) becomes a ``RecipeError``: exit ``RECIPE_ERROR_EXIT``, as a bad recipe."""
    from dsharp.recipe_errors import RecipeError

    try:
        yield
    except RecipeError:
        raise
    except ValueError as exc:
        raise RecipeError(one_line(exc)) from None


def require_model(model: str | None, checkpoint: Path | None) -> Path | None:
    """``--model`` or ``--checkpoint`` checked from local files alone: a missing model
    folder, a folder that holds no diffusers model, a built-in name's near miss, a hub id
    not in the hub cache with ``HF_HUB_OFFLINE`` set, a missing run folder or a checkpoint
    that does not fit the base its run's recipe names is one line before any download or
    heavy work (a benchmark's prompts, a reward's weights, the model's load). Returns the
    checkpoint folder, None for ``--model``."""
    from dsharp.checkpoints import find_model_checkpoint, newer_step_aside
    from dsharp.model_names import missing_model, not_a_model_folder, offline_uncached_model
    from dsharp.trained_fit import check_run_fits

    if model is not None:
        missing = missing_model(model)
        if missing is not None:
            raise FileNotFoundError(missing)
        problem = not_a_model_folder(model) or offline_uncached_model(model)
        if problem is not None:
            raise ValueError(problem)
    if checkpoint is None:
        return None
    ckpt = find_model_checkpoint(checkpoint)
    problem = _run_base_offline_uncached(ckpt)
    if problem is not None:
        raise ValueError(problem)
    check_run_fits(ckpt)  # config files only: the base's weights are compared at its load
    if ckpt != Path(checkpoint):  # a run folder's newest checkpoint, not one it names
        aside = newer_step_aside(ckpt)
        if aside is not None:
            typer.echo(f"note: {aside}", err=True)
    return ckpt


def model_section_of(model: str | None, checkpoint: Path | None) -> Any:
    """The ``model`` recipe section of ``--model``, or of the run of the checkpoint folder
    ``checkpoint`` (:func:`require_model`'s), read from config files only."""
    if checkpoint is not None:
        from dsharp.checkpoints import read_run_recipe

        return read_run_recipe(checkpoint).model
    from dsharp.config import ModelConfig

    return ModelConfig(pretrained=str(model))


def require_image_sides(model: Any, sides: dict[str, int | None]) -> None:
    """Image sides (``{"--height": 60}``; None: not given) that ``model`` (a ``model``
    section) cannot draw, refused from its config files as a bad setting (exit 2) before
    its weights load, which takes long for SDXL on a CPU; where its files are not on disk
    the model checks once loaded."""
    from dsharp.preflight import check_image_sides

    with settings_errors():
        check_image_sides(model, sides)


def _run_base_offline_uncached(checkpoint: Path) -> str | None:
    """The run's base model (``model.pretrained`` of its saved recipe) refused as
    :func:`~dsharp.model_names.offline_uncached_model` refuses ``--model``; None when the
    recipe cannot be read (the model's load says why, in its words) or the base can load."""
    from dsharp.checkpoints import run_dir_of
    from dsharp.model_names import missing_model, offline_uncached_model
    from dsharp.recipe_diff import saved_recipe_data

    recipe = run_dir_of(checkpoint) / "recipe.yaml"
    model = (saved_recipe_data(recipe) or {}).get("model")
    pretrained = model.get("pretrained") if isinstance(model, dict) else None
    if not isinstance(pretrained, str) or missing_model(pretrained) is not None:
        return None  # a local folder not found (from here): the load says so, not the cache
    revision = model.get("revision")
    problem = offline_uncached_model(pretrained, revision if isinstance(revision, str) else None)
    return f"{problem} (model.pretrained of {recipe})" if problem else None


def require_output_paths(folders: dict[str, Path | None], files: dict[str, Path | None]) -> None:
    """Refuse an output folder that is an existing file, or an output file that is an
    existing folder, before any work: otherwise the error comes when the results are saved."""
    from dsharp.preflight import check_output_folder, name_too_long

    for flag, path in folders.items():
        if path is not None:
            check_output_folder(path, flag)
    for flag, path in files.items():
        if path is not None and (too_long := name_too_long(path)) is not None:
            raise ValueError(f"{flag} {path}: {too_long}")
        if path is not None and path.is_dir():
            raise ValueError(f"{flag} {path}: is a folder; give a file name")
        if path is not None:
            check_output_folder(path.parent, f"{flag} {path}: its folder")


def debugging() -> bool:
    """``DSHARP_DEBUG=1``: show tracebacks instead of one-line errors."""
    return bool(os.environ.get("DSHARP_DEBUG"))


#: Exit status of a bad recipe or setting (as a command-line usage error), whichever command
#: reads it; other input errors exit ``1``.
RECIPE_ERROR_EXIT = 2


#: How long a process other than a launch's first waits, after an error, for the launcher
#: to stop it: where the first process met the error too (every process reads the same
#: recipe and files), the first one says it and the launcher then stops the others.
OTHERS_WAIT_S = 5.0


def said_once(line: str, code: int) -> typer.Exit:
    """Print ``line`` on stderr and return the exit (``code``) to raise, once per launch:
    under a launcher of several processes, each of which meets the same bad input, the first
    process says it and the others exit without a word when the launcher stops them. One
    that no stop reaches within ``OTHERS_WAIT_S`` met the error alone and says it itself.
    The others wait rather than exit at once: the launcher, seeing one exit, could stop the
    first process before it had said why. A key or a URL's credentials quoted in ``line`` (a
    value pasted into the wrong flag or option, which the error names; a server's URL in a
    failure) are redacted (:func:`dsharp.redaction.redact_text`)."""
    from dsharp.launch import launch_size, launcher_rank_zero, stopped_by_the_launcher
    from dsharp.redaction import redact_text

    if launch_size() > 1 and not launcher_rank_zero() and stopped_by_the_launcher(OTHERS_WAIT_S):
        return typer.Exit(code)
    print(redact_text(line), file=sys.stderr, flush=True)
    return typer.Exit(code)


@contextmanager
def user_errors(prefix: str = "error", code: int = 1) -> Iterator[None]:
    """Turn expected exceptions into ``prefix: message`` on stderr and exit ``code``
    (``RECIPE_ERROR_EXIT`` for a ``RecipeError``: a setting that does not parse), said once
    under a launcher of several processes (:func:`said_once`)."""
    from dsharp.recipe_errors import RecipeError

    try:
        yield
    except typer.Exit:
        raise
    except USER_ERRORS as exc:
        if debugging():
            raise
        status = RECIPE_ERROR_EXIT if isinstance(exc, RecipeError) else code
        raise said_once(f"{prefix}: {one_line(exc)}", status) from None


@contextmanager
def own_warnings_as_lines() -> Iterator[None]:
    """dsharp's own warnings (a figure that could not be drawn, say for a full disk) as one
    ``warning: ...`` line on stderr, as the commands' other warnings; Python's format adds
    a second line, the source line that raised it. Other libraries' warnings are shown as
    they would be."""
    import warnings

    package = str(Path(__file__).resolve().parent.parent)
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
        if str(Path(filename).resolve()).startswith(package):
            print(f"warning: {one_line(str(message))}", file=sys.stderr)
        else:
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = shown


def run_script(main: Callable[[], object]) -> None:
    """Run the ``main()`` of a script in ``bench/`` or ``scripts/`` as the CLI runs a command:
    an expected error ends with one line ``error: <input>: <reason>`` on stderr and exit ``1``
    (``RECIPE_ERROR_EXIT`` for a bad setting, a ``RecipeError``), not a traceback;
    ``DSHARP_DEBUG=1`` shows the traceback."""
    try:
        with user_errors():
            main()
    except typer.Exit as stop:
        raise SystemExit(stop.exit_code) from None
