"""An error as the one line a user is shown: its own module, imported by the commands'
error handling at start-up, so that ``dsharp --help`` or ``dsharp runs`` does not import
pydantic (as :mod:`dsharp.recipe_errors` does) before it has anything to fold."""

from __future__ import annotations


def one_line(exc: BaseException | str) -> str:
    """An error (or a message) as one line: whitespace and line breaks folded to spaces."""
    if isinstance(exc, str):
        return " ".join(exc.split())
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, KeyError) and text.startswith(("'", '"')):
        text = text[1:-1]
    return " ".join(text.split())
