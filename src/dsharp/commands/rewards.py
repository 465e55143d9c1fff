"""``dsharp rewards list`` and ``dsharp rewards score``: thin wrappers over the plugin layer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from dsharp.commands.errors import RECIPE_ERROR_EXIT, USER_ERRORS, debugging, one_line
from dsharp.commands.help_format import PlainHelpCommand, PlainHelpGroup

app = typer.Typer(no_args_is_help=True, cls=PlainHelpGroup)


@app.command("list", cls=PlainHelpCommand)
def list_cmd(
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List installed rewards (and plugins that failed to load or had a reward
    refused). Builds nothing.

    Exits 1 when a plugin failed to load or had a reward refused, after listing
    everything, so that a script or CI job that checks an environment notices a
    broken plugin."""
    from dsharp.rewards.plugins import (
        failures_in_words,
        plugin_failures,
        plugin_list,
        reward_registry,
    )

    rewards = [r.as_dict() for r in reward_registry().values()]
    failed = plugin_failures()
    failures = [f.as_dict() for f in failed]
    if as_json:
        doc = {"rewards": rewards, "plugins": plugin_list(), "failures": failures}
        typer.echo(json.dumps(doc, indent=2))
    else:
        _print_tables(rewards, failures)
    if failures:
        typer.echo(f"error: {failures_in_words(failed, names=True)}", err=True)
        raise typer.Exit(1)


def _print_tables(
    rewards: list[dict[str, Any]], failures: list[dict[str, Any]], console: Any = None
) -> None:
    """The rewards table, then a table of the plugins that failed (if any).

    No cell is ever cut short (two plugins' distributions must be told apart): in a terminal
    a long name or description wraps within its column; piped or redirected, where rich would
    assume 80 columns, the tables are as wide as their longest row."""
    from rich.console import Console
    from rich.table import Table

    table = Table("name", "distribution", "version", "differentiable", "description")
    for r in rewards:
        table.add_row(
            r["name"],
            r["distribution"] or "-",
            r["version"] or "-",
            "yes" if r["differentiable"] else "no",
            r["description"],
        )
    tables = [table]
    if failures:
        failed = Table("failed plugin", "distribution", "error", title="plugins that failed")
        for f in failures:
            failed.add_row(f["plugin"], f["distribution"] or "-", f["error"])
        tables.append(failed)
    for each in tables:
        for column in each.columns:
            column.overflow = "fold"  # wrap a long word, never end it with an ellipsis
    console = console if console is not None else Console()
    if not console.is_terminal:
        console = _console_as_wide_as(console, tables)
    for each in tables:
        console.print(each)


def _console_as_wide_as(console: Any, renderables: list[Any]) -> Any:
    """A console like ``console`` (same file, no terminal) wide enough for each of
    ``renderables`` on one line per row."""
    from rich.console import Console
    from rich.measure import Measurement

    wide = console.options.update_width(1_000_000)
    width = max(Measurement.get(console, wide, r).maximum for r in renderables)
    return Console(file=console.file, width=max(width, 20), no_color=True)


def _reward_spec(name: str, sets: list[str], on_error: str = "raise") -> Any:
    """The spec to score with, checked without building the reward: an unknown name, a bad
    ``--set`` or ``--on-error`` is a bad setting (``RecipeError``, exit 2), as it is in
    ``dsharp eval``."""
    from dsharp.commands.common import (
        check_on_error_flag,
        check_reward_settings,
        parse_reward_sets,
    )
    from dsharp.commands.errors import settings_errors
    from dsharp.config import check_reward_name, parse_reward_spec

    with settings_errors():
        check_on_error_flag(on_error)
        check_reward_name(name)
        options = parse_reward_sets(sets)
        if "on_error" in options:  # a setting of the reward, not one of its options
            raise ValueError("--set: on_error is not a reward option: use --on-error")
        data = {"name": name, "options": options, "on_error": on_error}
        spec = parse_reward_spec(data, "--set")
        check_reward_settings([spec])
    return spec


def _load_images(paths: list[Path]) -> Any:
    from PIL import Image

    from dsharp.rewards.base import RewardImages

    images = []
    for path in paths:
        try:
            with Image.open(path) as im:
                images.append(im.convert("RGB"))
        except (OSError, ValueError) as e:
            raise ValueError(f"{path}: cannot read image ({' '.join(str(e).split())})") from None
    first = images[0].size
    odd = [
        f"{p} is {im.width}x{im.height}"
        for p, im in zip(paths, images, strict=True)
        if im.size != first
    ]
    if odd:  # one reward call scores one batch, and a batch is one tensor
        raise ValueError(
            f"images of one call must share a size ({paths[0]} is {first[0]}x{first[1]}; "
            f"{', '.join(odd)}): score them in separate calls"
        )
    return RewardImages.from_pil(images)


def _score_lines(name: str, paths: list[Path], result: dict) -> str:
    """One line per image (its score, ``-`` where the reward could not score it), then
    where the reward's details are: what a person reads; ``--json`` is for programs."""
    width = max(len(str(p)) for p in paths)
    lines = [f"{name}:"]
    for path, score in zip(paths, result["scores"], strict=True):
        shown = "-" if score is None or score != score else f"{score:.4f}"
        lines.append(f"  {str(path):<{width}}  {shown}")
    if result["info"]:
        lines.append(f"details ({', '.join(sorted(result['info']))}) with --json")
    return "\n".join(lines)


def _json_text(result: dict[str, Any]) -> str:
    """``result`` as strict JSON, as the project's other JSON: a NaN or infinity anywhere (a
    plugin's ``info`` may hold one) is null, never the ``NaN`` that JSON parsers refuse."""
    from dsharp.io import json_safe

    return json.dumps(json_safe(result), default=str, allow_nan=False)


#: What ``score`` stopped by an image the reward could not score tells the user to do.
ON_ERROR_HINT = "rerun with --on-error missing to show '-' for such images and score the others"
#: The same under ``--json``, where such an image's score is null.
ON_ERROR_HINT_JSON = "rerun with --on-error missing to give such images null and score the others"


def _exit_status(exc: BaseException) -> int:
    """2 for a bad setting (a ``RecipeError``), 1 for any other failure, as other commands."""
    from dsharp.recipe_errors import RecipeError

    return RECIPE_ERROR_EXIT if isinstance(exc, RecipeError) else 1


@app.command("score", cls=PlainHelpCommand)
def score_cmd(
    name: str = typer.Argument(
        ..., metavar="NAME", help="Reward name (see `dsharp rewards list`)."
    ),
    images: list[Path] = typer.Argument(
        None,
        metavar="IMAGE",
        help="Image files (a shell glob such as samples/*.png works), with or instead of --image.",
        show_default=False,
    ),
    image: list[Path] = typer.Option([], "--image", help="Image file; repeat for a batch."),
    prompt: list[str] = typer.Option(
        ..., "--prompt", help="Prompt for every image, or repeat once per image."
    ),
    sets: list[str] = typer.Option(
        [], "--set", metavar="KEY=VALUE", help="Reward option KEY=VALUE (YAML value)."
    ),
    on_error: str = typer.Option(
        "raise",
        "--on-error",
        metavar="raise|missing",
        help="What an image the reward cannot score does: 'raise' fails the command (exit 1); "
        "'missing' shows '-' for it (null with --json) and scores the others, as a recipe's "
        "on_error: missing does in training.",
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print the result as JSON (scores and the reward's details)."
    ),
) -> None:
    """Build one reward and score image files with it."""
    try:
        from dsharp.commands.errors import settings_errors, usage_error
        from dsharp.rewards.base import UnscoredError
        from dsharp.rewards.combine import CombinedReward
        from dsharp.rewards.plugins import check_prompts

        image = [*(images or []), *image]
        if not image:  # a missing input, as no prompt is: exit 2
            raise usage_error("no image to score: give image files (or --image FILE)")
        if len(prompt) not in (1, len(image)):
            raise usage_error(
                f"got {len(prompt)} prompts for {len(image)} image"
                f"{'s' if len(image) > 1 else ''}: give 1 or one each"
            )
        prompts = prompt * len(image) if len(prompt) == 1 else prompt
        spec = _reward_spec(name, sets, on_error)
        with settings_errors():  # a prompt the reward cannot score: before any image loads
            check_prompts([spec], prompts, "--prompt")
        # The images before the reward: one that cannot be read fails before weights load.
        batch = _load_images(image)
        # Scored with training's checks: shape, NaN and inf, a plugin's error named.
        reward = CombinedReward([spec])
        try:
            _, combined = reward(batch, prompts, [{} for _ in image])
        except UnscoredError as err:  # an image it could not score: say how to go on
            hint = ON_ERROR_HINT_JSON if as_json else ON_ERROR_HINT
            raise UnscoredError(f"{one_line(err)}; {hint}") from None
        key = reward.keys[0]
        result = {"reward": name, "scores": combined["raw"][key], "info": combined["rewards"][key]}
        text = _json_text(result) if as_json else _score_lines(name, image, result)
    except Exception as e:  # the command's contract: any failure is one line, exit 2 or 1
        if debugging():
            raise
        # A plugin's unexpected exception keeps its type name: the message alone may not say.
        text = one_line(e) if isinstance(e, USER_ERRORS) else f"{type(e).__name__}: {e}"
        from dsharp.redaction import redact_text  # a key in an option a check quotes

        typer.echo(f"error: {redact_text(' '.join(text.split()))}", err=True)
        raise typer.Exit(_exit_status(e)) from None
    typer.echo(text)
