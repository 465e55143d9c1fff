"""The ``dsharp`` command line: thin commands that parse, call into the library, and print."""

from __future__ import annotations

import os
import signal
import sys
import warnings
from types import FrameType

import typer

from dsharp import __version__
from dsharp.commands import recipes as recipes_cmd
from dsharp.commands import rewards as rewards_cmd
from dsharp.commands.compare import compare
from dsharp.commands.errors import one_line
from dsharp.commands.evaluate import evaluate_cmd
from dsharp.commands.help_format import PlainHelpCommand, PlainHelpGroup
from dsharp.commands.merge import merge
from dsharp.commands.reproduce import reproduce
from dsharp.commands.runs import runs
from dsharp.commands.sample import sample
from dsharp.commands.train import train

app = typer.Typer(
    name="dsharp",
    help="Diffusion-Sharpening: fine-tune text-to-image diffusion models with reward feedback.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=PlainHelpGroup,
)


def _print_version(value: bool) -> None:
    """Eager ``--version``: print and exit before any command parses its arguments."""
    if value:
        typer.echo(f"dsharp {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """Root options only (--version); the commands are registered below."""


app.command("train", cls=PlainHelpCommand)(train)
app.command("sample", cls=PlainHelpCommand)(sample)
app.command("eval", cls=PlainHelpCommand)(evaluate_cmd)
app.command("compare", cls=PlainHelpCommand)(compare)
app.command("merge", cls=PlainHelpCommand)(merge)
app.command("reproduce", cls=PlainHelpCommand)(reproduce)
app.command("runs", cls=PlainHelpCommand)(runs)
app.add_typer(recipes_cmd.app, name="recipes", help="List, copy and validate YAML recipes.")
app.add_typer(
    rewards_cmd.app, name="rewards", help="List installed reward plugins and score images."
)


_stopping = False  # a stop signal came while this command ran


def _stop(signum: int, frame: FrameType | None) -> None:
    """Ctrl-C or SIGTERM outside a training loop (which has its own handlers): one line, then
    exit 130 through KeyboardInterrupt. Results are written whole or not at all, so nothing
    half-written is left. Under a launcher of several processes a repeat is ignored: the
    launcher sends every stop again (SIGINT, then SIGTERM), which would print the line twice
    and interrupt the cleanup of the first."""
    global _stopping
    from dsharp.launch import launch_size

    if _stopping and launch_size() > 1:
        return
    _stopping = True
    print(f"\n{signal.Signals(signum).name}: stopped", file=sys.stderr, flush=True)
    raise KeyboardInterrupt


def _click_exception(name: str) -> type[Exception]:
    """Click's exception class ``name``, found through typer's public ``BadParameter``: typer
    0.29 and later carry their own copy of click, older ones use the ``click`` package."""
    return next(cls for cls in typer.BadParameter.__mro__ if cls.__name__ == name)


_UsageError = _click_exception("UsageError")
_ClickException = _click_exception("ClickException")


def _run_app() -> int:
    """Run the app and return its exit status, printing a usage error as one line.

    Click's standalone mode prints a usage error as a boxed, wrapped panel over several lines;
    dsharp's errors are one line that names the input and the reason, so a script's log or a
    grep shows it whole."""
    from dsharp.redaction import redact_text

    try:
        result = app(prog_name="dsharp", standalone_mode=False)
    except _UsageError as error:
        if type(error).__name__ == "NoArgsIsHelpError":
            if error.format_message().strip():  # plain output (TYPER_USE_RICH=0): the help
                error.show()  # is the message; rich output has printed it already
            return error.exit_code
        context = getattr(error, "ctx", None)
        command = context.command_path if context is not None else "dsharp"
        message = redact_text(one_line(error.format_message()))  # a key given as a flag's value
        print(f"{command}: {message} (see '{command} --help')", file=sys.stderr)
        return error.exit_code
    except _ClickException as error:
        print(f"dsharp: {redact_text(one_line(error.format_message()))}", file=sys.stderr)
        return error.exit_code
    except typer.Abort:
        print("Aborted", file=sys.stderr)
        return 1
    return result if isinstance(result, int) else 0


def quiet_libraries() -> None:
    """dsharp shows its own progress bars and one-line errors; the libraries' per-file bars
    and warnings are noise here (the hub client's retry warnings, one pair per retry, would
    come before the one line that says the hub cannot be reached). ``DSHARP_VERBOSE=1``
    keeps them. Set before the libraries are imported, which read these once."""
    if os.environ.get("DSHARP_VERBOSE"):
        return
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks.*")


def main() -> None:
    """Console-script entry point."""
    global _stopping
    _stopping = False
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    # a job started with one ignored keeps that; one set outside Python (None) stays, as
    # signal.signal cannot put None back (the exit raised a TypeError)
    previous = {sig: h for sig, h in previous.items() if h not in (signal.SIG_IGN, None)}
    for sig in previous:
        signal.signal(sig, _stop)
    quiet_libraries()
    try:
        status = _run_app()
    finally:  # not during interpreter shutdown: a launcher's SIGTERM then ends it quietly
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    sys.exit(status)


if __name__ == "__main__":
    main()
