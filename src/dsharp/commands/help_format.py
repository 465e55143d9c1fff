"""Plain placeholders in ``--help``: ``PATH``, ``TEXT``, ``INT`` rather than typer's own,
and arguments in the usage line as click writes them (``RECIPE``, not ``{RECIPE}``).

Typer 0.29 and later print each parameter's Python type in the help's type column:
``<bool>`` beside every flag (``--json``, ``--help``) that takes no value, and ``<list[str]>``
beside a repeatable option, which reads like Python, not like a command line. The command and
group classes here give every parameter the plain placeholder older typer and click print:
none for a flag, the element's for a repeatable option (its help says it repeats), and keep a
placeholder a parameter names itself (``KEY=VALUE``, ``raise|missing``). Older typer prints
click's plain placeholders already, and these classes leave its parameters as they are.

Plain help (click's, without rich) is wrapped by :class:`NoHyphenBreakFormatter`, which never
breaks a line inside a hyphenated word (``eval-BENCH-FILESTEM.json``, ``--images-per-prompt``):
a path or an option cut at its hyphen reads as two, and cannot be copied whole.

Rich help (typer's panels) cuts a word wider than its column (``inference_scali…``,
``[0<=x<=4294`` / ``967295]``) on a narrow terminal: where it would, at the terminal's width,
the command prints the plain help instead, whose words stay whole (:func:`rich_help_fits`).
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Callable, Iterator
from pathlib import PurePath
from typing import Any, get_args, get_origin

from typer.core import TyperCommand, TyperGroup

#: Placeholders of the Python types dsharp's parameters have, in click's words.
_LABELS: dict[type, str] = {str: "TEXT", int: "INT", float: "FLOAT", bool: "BOOLEAN"}


def _label(annotation: Any) -> str | None:
    """The plain placeholder of ``annotation``: its element's for a list; ``None`` for a
    type not known here (typer's own then stays)."""
    if get_origin(annotation) is list:
        (element,) = get_args(annotation) or (str,)
        return _label(element)
    if isinstance(annotation, type) and issubclass(annotation, PurePath):
        return "PATH"
    return _LABELS.get(annotation) if isinstance(annotation, type) else None


def usage_name(argument: Any) -> str:
    """An argument as click writes it in a usage line: ``RECIPE``, ``[FOLDER]``, ``RUN...``,
    ``[OVERRIDES]...``; typer 0.29 wraps a required one in braces (``{RECIPE}``), which reads
    like a set or a template field to fill in, braces included."""
    name = argument.metavar or argument.name.upper()
    name = name if argument.required else f"[{name}]"
    return f"{name}..." if argument.nargs != 1 else name


def plain_placeholders(params: list[Any]) -> None:
    """Give each of ``params`` (click parameters typer built) a plain placeholder, in place.

    An option's placeholder is its ``metavar``. An argument's name column already shows its
    ``metavar`` (``RECIPE``), and typer prints its type beside it whatever the metavar, so the
    argument's type column is set on its own."""
    for param in params:
        if hasattr(param, "_usage_display_name"):  # typer 0.29: {RECIPE} in the usage line
            param.get_usage_pieces = lambda ctx, param=param: [usage_name(param)]
        descriptor = getattr(param, "type_descriptor", None)
        if descriptor is None or not hasattr(param, "display_type_rich"):
            continue  # typer before 0.29: click's placeholders are plain already
        if getattr(param, "is_flag", False) or getattr(param, "count", False):
            param.metavar = ""  # a flag takes no value: nothing to show
            continue
        label = _label(descriptor.annotation)
        if label is None:
            continue
        if param.param_type_name == "option":
            if param.metavar is None:
                param.metavar = label
        else:  # a variadic argument (OVERRIDES) says that it takes several
            label = f"{label}..." if param.nargs != 1 else label
            param.display_type_rich = lambda ctx, label=label: label


#: Click's mark, alone on the line that opens a paragraph, for "do not rewrap this paragraph":
#: a docstring's example command stays on one line in plain help (``TYPER_USE_RICH=0``).
NO_REWRAP = "\b"


def without_no_rewrap_marks(text: str) -> str:
    """``text`` without the lines that hold only :data:`NO_REWRAP`: typer's rich help keeps a
    paragraph's lines as written already, and would show the mark as an empty line."""
    return "\n".join(line for line in text.split("\n") if line.strip() != NO_REWRAP)


#: Stands for each ``-`` while click wraps a text: textwrap breaks a line after a hyphen, and
#: this (a private-use character, one column wide like the hyphen) is no hyphen to it.
_HYPHEN_STAND_IN = "\ue000"


#: The context and help formatter typer's commands use: click's own before typer 0.29, the
#: copy of click that typer 0.29 carries after (whose exceptions typer's main loop expects).
_Context: Any = TyperCommand.context_class
_Formatter: Any = _Context.formatter_class


def _hyphens_held(text: str, width: int) -> str:
    """``text`` with the hyphens of each word that fits in ``width`` columns replaced by the
    stand-in. A longer word is cut somewhere whatever is done, and at a hyphen reads best
    (held whole, textwrap would cut it at any letter: ``RUN_DIR/eval-BEN`` / ``CH.json``)."""
    return re.sub(
        r"\S+",
        lambda m: m[0].replace("-", _HYPHEN_STAND_IN) if len(m[0]) <= width else m[0],
        text,
    )


class NoHyphenBreakFormatter(_Formatter):
    """Click's help formatter, but a line never breaks inside a hyphenated word that fits on
    one: such a word moves whole to the next line, as a word without hyphens does."""

    def _restore_hyphens(self, start: int) -> None:
        """The hyphens back in what was written from ``self.buffer[start]`` on."""
        self.buffer[start:] = [t.replace(_HYPHEN_STAND_IN, "-") for t in self.buffer[start:]]

    def write_text(self, text: str) -> None:
        start = len(self.buffer)
        super().write_text(_hyphens_held(text, self.width - self.current_indent))
        self._restore_hyphens(start)

    def write_dl(self, rows: Any, col_max: int = 30, col_spacing: int = 2) -> None:
        """The options' table: only the help column wraps, as wide as click makes it."""
        start = len(self.buffer)
        rows = list(rows)
        first_col = min(max((len(first) for first, _ in rows), default=0), col_max) + col_spacing
        width = max(self.width - first_col - 2, 10)  # click's own, for the second column
        rows = [(first, _hyphens_held(second, width)) for first, second in rows]
        super().write_dl(rows, col_max, col_spacing)
        self._restore_hyphens(start)


class PlainHelpContext(_Context):
    """The context of dsharp's commands: its plain help never breaks a hyphenated word."""

    formatter_class = NoHyphenBreakFormatter


#: The lines of rich's panels and tables: no part of a word.
_BOX_LINES = re.compile(r"[\u2500-\u257f]")
#: A colour or style code rich writes where it takes the output for a terminal.
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
#: Wide enough for every word of any command's help on one line.
_WIDE = 1000


def help_words(text: str) -> set[str]:
    """The words of a rendered help: what stands between spaces once the panels' lines and
    any colour codes are taken out."""
    return set(_BOX_LINES.sub(" ", _ANSI.sub("", text)).split())


@contextlib.contextmanager
def _rich_width(width: int | None) -> Iterator[None]:
    """typer's rich help rendered ``width`` columns wide (None: the terminal's)."""
    from typer import rich_utils

    saved = rich_utils.MAX_WIDTH
    rich_utils.MAX_WIDTH = width
    try:
        yield
    finally:
        rich_utils.MAX_WIDTH = saved


def _rendered(render: Callable[[], object], width: int) -> str:
    """What ``render`` (typer's rich help) prints ``width`` columns wide."""
    buffer = io.StringIO()
    with _rich_width(width), contextlib.redirect_stdout(buffer):
        render()
    return buffer.getvalue()


def rich_help_fits(render: Callable[[], object]) -> bool:
    """Whether the rich help that ``render`` prints keeps every word whole at the terminal's
    width: each word it shows there is one it shows where every word fits on a line (a word
    cut short with ``…`` or folded over two lines is not)."""
    from rich.console import Console
    from typer import rich_utils

    width = Console(width=rich_utils.MAX_WIDTH).width  # as typer's own console measures it
    if width >= _WIDE:
        return True
    return help_words(_rendered(render, width)) <= help_words(_rendered(render, _WIDE))


@contextlib.contextmanager
def _without_rich() -> Iterator[None]:
    """typer's commands print click's plain help meanwhile."""
    import typer.core

    saved = typer.core.HAS_RICH
    typer.core.HAS_RICH = False
    try:
        yield
    finally:
        typer.core.HAS_RICH = saved


def _format_help(command: Any, ctx: Any, formatter: Any, format_help: Callable) -> None:
    """``format_help`` (typer's) as rich help where it keeps every word whole at the
    terminal's width, as plain help otherwise. Either way without the no-rewrap marks, which
    only plain help reads: rich help keeps its lines as written, and in place of rich help an
    example wider than the terminal is wrapped at its spaces, as rich help wraps it, not cut
    by the terminal inside a word."""
    import typer.core

    if not (typer.core.HAS_RICH and command.rich_markup_mode is not None):
        return format_help(ctx, formatter)  # plain help asked for: it reads the marks
    written = command.help
    command.help = without_no_rewrap_marks(written) if written else written
    try:
        if rich_help_fits(lambda: format_help(ctx, formatter)):
            return format_help(ctx, formatter)
        with _without_rich():
            return format_help(ctx, formatter)
    finally:
        command.help = written


class PlainHelpCommand(TyperCommand):
    """A typer command whose ``--help`` shows plain placeholders (see the module), and whose
    example commands marked :data:`NO_REWRAP` stay whole in plain help and as written in rich
    help."""

    context_class = PlainHelpContext

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)
        plain_placeholders(params)
        return params

    def format_help(self, ctx: Any, formatter: Any) -> None:
        _format_help(self, ctx, formatter, super().format_help)


class PlainHelpGroup(TyperGroup):
    """A typer group (``dsharp``, ``dsharp recipes``) whose ``--help`` shows plain
    placeholders; its commands are :class:`PlainHelpCommand`. Its rich help, as theirs, is
    plain where it would cut a word."""

    context_class = PlainHelpContext

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)
        plain_placeholders(params)
        return params

    def format_help(self, ctx: Any, formatter: Any) -> None:
        _format_help(self, ctx, formatter, super().format_help)


#: ``--device`` help of sample and eval: every value ``devices.pick_device`` takes
#: (here, not there: that module imports torch, which a command's help must not wait for).
DEVICE_HELP = "auto (CUDA when available, else CPU), cpu, cuda, cuda:N, mps or xpu."
