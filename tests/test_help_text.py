"""What ``--help`` of every dsharp command shows a user: plain placeholders, no Python types."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
import typer
import typer.core
import typer.main
from typer.testing import CliRunner

from dsharp.cli import app

#: typer 0.29's own type column: ``<bool>`` on a flag, ``<list[str]>``, ``<path>``, ``<int range>``.
PYTHON_TYPES = re.compile(r"<(?:bool|str|int|float|path|list)[^>]*>|list\[", re.IGNORECASE)


def _command_paths(command: object, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """``()`` for ``dsharp`` itself, then every command and subcommand, depth first."""
    yield path
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from _command_paths(sub, (*path, name))


COMMANDS = list(_command_paths(typer.main.get_command(app)))


def _help(path: tuple[str, ...]) -> str:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.stdout


def test_the_walk_finds_every_command():
    """The walk below covers the subcommands too, not only the top level."""
    assert {("sample",), ("recipes", "validate"), ("rewards", "score")} <= set(COMMANDS)


@pytest.mark.parametrize("rich", [True, False], ids=["rich", "plain"])
@pytest.mark.parametrize("path", COMMANDS, ids=lambda path: " ".join(path) or "dsharp")
def test_help_shows_no_python_types(path, rich, monkeypatch):
    """typer 0.29 printed ``<bool>`` beside every flag (even --help) and ``<list[str]>`` beside
    repeatable options and OVERRIDES; the help shows click's plain placeholders instead."""
    if not rich:
        monkeypatch.setattr(typer.core, "HAS_RICH", False, raising=False)
    text = _help(path)
    assert not PYTHON_TYPES.findall(text), (path, PYTHON_TYPES.findall(text))


#: A usage line as click writes it: the command path, [OPTIONS], then each argument as
#: NAME (required), [NAME] (optional), either with ... when it takes several; a group ends
#: with COMMAND [ARGS]...
CLICK_USAGE = re.compile(r"Usage: dsharp( [a-z-]+)* \[OPTIONS\]( \[?[A-Z_]+\]?(\.\.\.)?)*")


def _usage(path: tuple[str, ...]) -> str:
    (line,) = [line.strip() for line in _help(path).splitlines() if "Usage:" in line]
    return line


@pytest.mark.parametrize("rich", [True, False], ids=["rich", "plain"])
@pytest.mark.parametrize("path", COMMANDS, ids=lambda path: " ".join(path) or "dsharp")
def test_the_usage_line_shows_arguments_as_click_writes_them(path, rich, monkeypatch):
    """typer 0.29 wrapped a required argument in braces (``{RECIPE}``), as if a set or a
    field to fill in, braces and all."""
    if not rich:
        monkeypatch.setattr(typer.core, "HAS_RICH", False, raising=False)
    usage = _usage(path)
    assert CLICK_USAGE.fullmatch(usage), usage


@pytest.mark.parametrize(
    ("path", "usage"),
    [
        (("train",), "dsharp train [OPTIONS] RECIPE [OVERRIDES]..."),
        (("recipes", "validate"), "dsharp recipes validate [OPTIONS] RECIPE [OVERRIDES]..."),
        (("reproduce",), "dsharp reproduce [OPTIONS] STUDY [OVERRIDES]..."),
        (("compare",), "dsharp compare [OPTIONS] RUN_OR_JSON..."),
        (("merge",), "dsharp merge [OPTIONS] RUN..."),
        (("rewards", "score"), "dsharp rewards score [OPTIONS] NAME [IMAGE]..."),
        (("runs",), "dsharp runs [OPTIONS] [FOLDER]"),
        (("sample",), "dsharp sample [OPTIONS] [OVERRIDES]..."),
        (("recipes",), "dsharp recipes [OPTIONS] COMMAND [ARGS]..."),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, tuple) else None,
)
def test_usage_lines(path, usage):
    assert _usage(path) == f"Usage: {usage}"


def test_a_missing_argument_is_named_plainly():
    """A usage error repeats the usage line (typer's own error box, as the tests see it)."""
    done = CliRunner().invoke(app, ["train"])
    assert done.exit_code == 2
    assert "'RECIPE'" in done.stderr and "{" not in done.stderr, done.stderr


def test_sample_help_keeps_placeholders_ranges_and_defaults(monkeypatch):
    """The plain placeholders replace typer's types without losing a range or a default,
    and a flag shows none (its row goes straight from the name to the help)."""
    monkeypatch.setattr(typer.core, "HAS_RICH", False, raising=False)
    text = " ".join(_help(("sample",)).split())
    for shown in (
        "OVERRIDES TEXT...",
        "--prompt TEXT",
        "--prompts PATH",
        "--seed INT",
        "--guidance FLOAT",
        "--option, --set-sample KEY=VALUE",
        "--reward, --verifier NAME",
        "0<=x<=4294967295",
        "[default: samples]",
        "--grid / --no-grid Also write",
        "--json Print",
        "--help Show",
    ):
        assert shown in text, shown


def test_rich_help_flags_show_no_type():
    """In the rich panel a flag's type column is empty and a value's is a plain word."""
    text = _help(("rewards", "score"))
    assert re.search(r"--json\s+Print the result", text), text
    assert re.search(r"--set\s+KEY=VALUE\s", text), text
    assert re.search(r"IMAGE\s+PATH\.\.\.\s", text), text


@pytest.mark.parametrize("command", ["sample", "eval"])
def test_device_help_names_every_device_that_is_taken(command):
    """--device read "cpu, cuda, or auto" while cuda:N, mps and xpu are taken too."""
    from dsharp.devices import DEVICE_TYPES

    text = " ".join(_help((command,)).split())
    for name in (*DEVICE_TYPES, "cuda:N", "auto"):
        assert re.search(rf"--device DEVICE .*\b{re.escape(name)}\b", text), name


def test_eval_limit_help_says_it_cuts_a_prompt_file_too(monkeypatch):
    """--limit cuts a --prompts file (in all), not only a bench's categories."""
    monkeypatch.setattr(typer.core, "HAS_RICH", False, raising=False)
    text = " ".join(_help(("eval",)).split())
    assert "--limit INT At most N prompts per category of a bench, or N in all" in text
    assert "(--prompts)" in text


def test_eval_categories_default_keeps_each_name_whole_in_plain_help(monkeypatch):
    """Plain help wraps at 78 columns: the unspaced default list was cut inside a name
    (``non_spati al``)."""
    from dsharp.bench.t2i_data import CATEGORIES

    monkeypatch.setattr(typer.core, "HAS_RICH", False, raising=False)
    text = " ".join(_help(("eval",)).split())
    assert f"(default: all of {', '.join(CATEGORIES)})" in text


def test_eval_help_says_a_recipe_sets_the_defaults(monkeypatch):
    """With --recipe the sampler's settings and seeds default to the recipe's, which the
    help's "(default 25)" and "(default 2)" did not say."""
    monkeypatch.setattr(typer.core, "HAS_RICH", False, raising=False)
    text = " ".join(_help(("eval",)).split())
    for shown in (
        "0..N-1 (default: the recipe's eval.seeds, else 2)",
        "--steps INT DDIM steps (default: the recipe's sample.steps, else 25)",
        "--guidance FLOAT Classifier-free guidance scale (default: the recipe's, else 5)",
    ):
        assert shown in text, shown


def test_compare_help_names_the_one_value_of_against(monkeypatch):
    monkeypatch.setattr(typer.core, "HAS_RICH", False, raising=False)
    text = " ".join(_help(("compare",)).split())
    assert "--against paper Put the paper's numbers beside ours" in text


@pytest.mark.parametrize("rich", [True, False], ids=["rich", "plain"])
@pytest.mark.parametrize(
    ("path", "argument"),
    [(("train",), "RECIPE"), (("recipes", "validate"), "RECIPE"), (("reproduce",), "STUDY")],
    ids=["train", "recipes validate", "reproduce"],
)
def test_a_recipe_or_study_file_argument_shows_path(path, argument, rich, monkeypatch):
    """`recipes validate` showed TEXT for the file that train and reproduce show as PATH."""
    if not rich:
        monkeypatch.setattr(typer.core, "HAS_RICH", False, raising=False)
    text = " ".join(_help(path).split())
    assert re.search(rf"{argument}\s+(│\s+)?PATH\b", text), text


def test_recipes_validate_takes_its_file_as_before(tmp_path):
    """A missing file is still one line, exit 2; a recipe and a study still validate."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    missing = CliRunner().invoke(app, ["recipes", "validate", str(tmp_path / "none.yaml")])
    assert missing.exit_code == 2
    assert missing.stderr.strip() == f"{tmp_path / 'none.yaml'}: file not found"
    for name, kind in (("quickstart.yaml", "(rlhf_sharpening, "), ("mini/table1.yaml", "study")):
        ok = CliRunner().invoke(app, ["recipes", "validate", str(root / "recipes" / name)])
        assert ok.exit_code == 0 and kind in ok.stdout, ok.output


EXAMPLES = {
    "sample": 'dsharp sample --checkpoint runs/quickstart -p "a red circle" -n 4 --out samples',
    "eval": "dsharp eval --model dsharp-mini --prompts prompts.txt --reward shapes --seeds 4",
    "reproduce": "dsharp reproduce recipes/mini/table1.yaml train.max_steps=2 eval.limit=1 "
    "output_dir=runs/try",
}


@pytest.mark.parametrize("rich", [True, False], ids=["rich", "plain"])
@pytest.mark.parametrize("command", sorted(EXAMPLES))
def test_an_example_command_stays_whole_on_one_line(command, rich, monkeypatch):
    """Plain help (click's, at most 78 columns wide) rewrapped an example command across
    lines, which then did not paste; click's no-rewrap mark keeps it whole, and rich help,
    which keeps the lines as written, shows it as before: no mark, no added empty line."""
    if not rich:
        monkeypatch.setattr(typer.core, "HAS_RICH", False, raising=False)
    text = _help((command,))
    lines = [line.strip() for line in text.splitlines()]
    at = [i for i, line in enumerate(lines) if EXAMPLES[command] in line]
    assert len(at) == 1, text
    assert lines[at[0] - 1] == "" and lines[at[0] - 2] != "", text
    assert "\b" not in text


#: A line cut after a hyphen inside a word (``RUN_DIR/eval-BENCH-`` then ``FILESTEM.json``).
CUT_AT_HYPHEN = re.compile(r"\w-$", re.M)


@pytest.mark.parametrize("columns", [80, 100, 120])
@pytest.mark.parametrize("path", COMMANDS, ids=lambda path: " ".join(path) or "dsharp")
def test_plain_help_never_cuts_a_hyphenated_word(path, columns, monkeypatch):
    """Before: ``dsharp eval --help`` (plain, 80 columns) wrapped --out's default as
    ``RUN_DIR/eval-BENCH-`` / ``FILESTEM.json``, which reads as two names and copies as none."""
    monkeypatch.setattr(typer.core, "HAS_RICH", False, raising=False)
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": str(columns)})
    assert result.exit_code == 0, result.output
    assert not CUT_AT_HYPHEN.findall(result.stdout), result.stdout


def test_plain_help_keeps_each_hyphen(monkeypatch):
    """The wrapping keeps the text: every hyphen is still there, none is added."""
    monkeypatch.setattr(typer.core, "HAS_RICH", False, raising=False)
    text = " ".join(_help(("eval",)).split())
    assert "--images-per-prompt INT" in text and "eval-BENCH.json" in text


@pytest.mark.parametrize("rich", [True, False], ids=["rich", "plain"])
@pytest.mark.parametrize(
    ("command", "shown"),  # a pattern
    [
        ("eval", "--seeds INT How many images per prompt, a count, not a first seed"),
        ("sample", r"--seed INT (\[0<=x<=4294967295\] )?The first seed, not a count"),
        ("eval", "--out PATH The JSON file the result is written to, not a folder"),
        ("eval", "--images PATH Also keep the generated images in this folder"),
        ("sample", "--out PATH The folder the PNGs are written in, not a file"),
    ],
)
def test_seed_and_out_help_say_what_each_takes(command, shown, rich, monkeypatch):
    """eval --seeds is a count, sample --seed a first seed; eval --out a file, sample --out a
    folder: the same word, other things, which the help did not set apart ("Images per
    prompt", "Seed of the first image", "Write the JSON here", "Output folder for PNGs")."""
    if not rich:
        monkeypatch.setattr(typer.core, "HAS_RICH", False, raising=False)
    text = " ".join(_help((command,)).replace("│", " ").split())
    assert re.search(shown, text), text  # the rich panel shows sample --seed's range first


@pytest.mark.parametrize("width", [30, 34])
def test_plain_help_cuts_a_word_too_long_for_its_column_at_a_hyphen(width):
    """A hyphenated word wider than the help column must be cut somewhere: at a hyphen, as
    before hyphenated words were held whole, not at any letter (``RUN_DIR/eval-BEN`` /
    ``CH.json``, ``eval`` / ``-BENCH-FILESTEM.``, which reads as an option). Eval's --out
    help had such words; its formatter is given them directly now."""
    from dsharp.commands.help_format import NoHyphenBreakFormatter

    formatter = NoHyphenBreakFormatter(width=width)
    formatter.write_dl(
        [("--out PATH", "(default: RUN_DIR/eval-BENCH.json, or eval-BENCH-FILESTEM.json there)")]
    )
    joined = ""
    for line in (x.strip() for x in formatter.getvalue().splitlines()):
        joined += line if joined.endswith("-") else " " + line
    assert "RUN_DIR/eval-BENCH.json" in joined and "eval-BENCH-FILESTEM.json" in joined, joined
    assert re.search(r"\w-$", formatter.getvalue(), re.M)  # cut: the words are too long


def _option_rows(text: str, option: str) -> str:
    """The rows of ``option`` in a help's table (rich's or plain), as one spaced text: its
    first line, then the lines indented further (the help column's)."""
    lines = [line.replace("│", " ").rstrip() for line in text.splitlines()]
    first = next(i for i, line in enumerate(lines) if line.lstrip().startswith(f"{option} "))
    indent = len(lines[first]) - len(lines[first].lstrip())
    rows = [lines[first]]
    for line in lines[first + 1 :]:
        if not line.strip() or len(line) - len(line.lstrip()) <= indent:
            break
        rows.append(line)
    return " ".join(" ".join(rows).split())


@pytest.mark.parametrize(
    ("rich", "columns"),
    [(True, 60), (False, 60), (False, 50)],
    ids=["rich-60", "plain-60", "plain-50"],
)
def test_eval_out_help_reads_whole_on_a_narrow_terminal(rich, columns, monkeypatch):
    """Rich help at 60 columns cut --out's default to ``RUN_DIR/eval-BE…`` and
    ``eval-BENCH-FILE…``: a word wider than its help column. Every word is shown whole."""
    command = typer.main.get_command(app).commands["eval"]
    (out,) = [p for p in command.params if p.name == "out"]
    if not rich:
        monkeypatch.setattr(typer.core, "HAS_RICH", False, raising=False)
    result = CliRunner().invoke(
        app, ["eval", "--help"], env={"COLUMNS": str(columns)}, terminal_width=columns
    )
    assert result.exit_code == 0, result.output
    assert _option_rows(result.stdout, "--out") == " ".join(f"--out PATH {out.help}".split())


#: The lines of rich's panels: no part of a word.
BOX_LINES = re.compile(r"[\u2500-\u257f]")


def help_words(text: str) -> set[str]:
    return set(BOX_LINES.sub(" ", text).split())


def _shown_help(path: tuple[str, ...], columns: int) -> str:
    """``--help`` as a terminal ``columns`` wide shows it (rich help, as by default)."""
    result = CliRunner().invoke(
        app, [*path, "--help"], env={"COLUMNS": str(columns)}, terminal_width=columns
    )
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.mark.parametrize("columns", [60, 80])
@pytest.mark.parametrize("path", COMMANDS, ids=lambda path: " ".join(path) or "dsharp")
def test_no_help_cuts_a_word_on_a_narrow_terminal(path, columns):
    """Rich help cut words wider than their column on a narrow terminal: at 60 columns
    ``inference_scali…`` and ``--option,--set-s…`` in eval, ``[0<=x<=4294`` / ``967295]`` in
    sample, ``recipes/mini/table2_sample…`` in reproduce; at 80, sample's
    ``(sample.options.K…``. Each word is now shown whole (rich help where it keeps them so,
    plain help otherwise), on lines no wider than the terminal."""
    text = _shown_help(path, columns)
    whole = help_words(_shown_help(path, 1000)) | help_words(_plain_help(path))
    # a group's plain help shortens a command's summary at a word, with "..."
    shown = {w[:-3] if w.endswith("...") and w[:-3] in whole else w for w in help_words(text)}
    assert shown <= whole, sorted(shown - whole)
    assert max(len(line) for line in text.splitlines()) <= columns, text


def _plain_help(path: tuple[str, ...]) -> str:
    previous = typer.core.HAS_RICH
    typer.core.HAS_RICH = False
    try:
        return _shown_help(path, 1000)
    finally:
        typer.core.HAS_RICH = previous


@pytest.mark.parametrize("path", [("eval",), ("runs",), ()], ids=["eval", "runs", "dsharp"])
def test_rich_help_stays_where_it_keeps_every_word(path):
    """Only where rich help would cut a word does plain help stand in for it."""
    assert "╭─ Options" in _shown_help(path, 80)


def test_eval_images_help_says_what_each_path_writes(monkeypatch):
    """--images said "with grid.png" for every bench, while --bench t2i-compbench writes its
    images by category beside its resumable state, and no grid."""
    from dsharp.bench.t2i_compbench import IMAGES_DIR, PARTIAL_FILE, RUN_FILE
    from dsharp.evaluate import evaluated_image_names
    from dsharp.sheets import SHEET_PNG

    monkeypatch.setattr(typer.core, "HAS_RICH", False, raising=False)
    text = " ".join(_help(("eval",)).split())
    (first,) = evaluated_image_names({"images": [{"seed": 0}]})
    assert f"{first}, ... and {SHEET_PNG}, a row per prompt (up to 32 x 16)" in text
    assert (
        f"with --bench t2i-compbench, a folder per category in {IMAGES_DIR}/ (0000_0.png, ...) "
        f"beside its resumable state ({PARTIAL_FILE}, {RUN_FILE}), and no {SHEET_PNG}."
    ) in text
