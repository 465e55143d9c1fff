"""The note a command prints where its output folder holds images it did not write."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import typer


def others_note(folder: Path, written: Sequence[str]) -> None:
    """Say on stderr which PNG files of ``folder`` are not of the set just written (the
    user's, another run's, or an older dsharp's that kept no record): kept, as dsharp
    removes only the files it recorded writing in a run this one repeats, they could
    otherwise be taken for this run's."""
    from dsharp.file_records import others_in

    others = others_in(folder, written)
    if not others:
        return
    shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
    files = "file" if len(others) == 1 else "files"
    typer.echo(
        f"note: {folder} also holds {len(others)} other PNG {files} this command did not "
        f"write (kept): {shown}",
        err=True,
    )


def overlong_note(model: object, prompts: Sequence[str]) -> None:
    """Say on stderr, in one line, which prompts are longer than the model's text encoder
    reads (:func:`dsharp.prompt_length.overlong_prompts`): their tail is cut off unread."""
    from dsharp.prompt_length import overlong_prompts

    found = overlong_prompts(model, prompts)
    if not found:
        return
    first = found[0]
    shown = first.prompt if len(first.prompt) <= 60 else first.prompt[:57] + "..."
    if len(found) == 1:
        text = (
            f"prompt {shown!r} is {first.tokens} tokens, more than the {first.read} the text "
            "encoder reads: the rest is cut off and changes nothing"
        )
    else:
        text = (
            f"{len(found)} prompts are longer than the {first.read} tokens the text encoder "
            f"reads (e.g. {shown!r}, {first.tokens} tokens): the rest of each is cut off and "
            "changes nothing"
        )
    typer.echo(f"note: {text}", err=True)


#: How many unknown words :func:`unknown_words_note` names before "and N more".
WORDS_SHOWN = 5


def unknown_words_note(model: object, prompts: Sequence[str]) -> None:
    """Say on stderr, in one line, which words of ``prompts`` a dsharp-mini model does not
    know (:func:`dsharp.models.mini.unknown_words`): its tokenizer splits them into pieces
    silently, and the image is drawn as if they were other words or none."""
    if getattr(model, "family", None) != "mini":
        return
    from dsharp.models.mini import unknown_words

    words = unknown_words(prompts)
    if not words:
        return
    shown = ", ".join(repr(w) for w in words[:WORDS_SHOWN])
    if len(words) > WORDS_SHOWN:
        shown += f" and {len(words) - WORDS_SHOWN} more"
    typer.echo(
        "note: dsharp-mini knows only the shapes world's words; its tokenizer splits others "
        f"into pieces the model does not read as those words: {shown}",
        err=True,
    )


def prompt_notes(model: object, prompts: Sequence[str]) -> None:
    """The notes on what of ``prompts`` the model does not read: words it does not know
    (dsharp-mini), then words past its text encoder's length; one line each, at most."""
    unknown_words_note(model, prompts)
    overlong_note(model, prompts)
