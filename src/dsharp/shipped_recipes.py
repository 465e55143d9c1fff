"""The recipes that ship with dsharp: inside the installed package (``dsharp/recipes``, built
from the checkout's ``recipes/``), or the checkout's own ``recipes/`` when run from source.

Why: the README's commands name ``recipes/quickstart.yaml`` from a checkout's root, and the
shipped recipes name their prompt files the same way (``recipes/prompts/general.txt``, read
from the current folder). A user who installed the wheel has no checkout, so
``dsharp recipes copy`` writes the shipped folder to ``./recipes`` and those paths hold as
written.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from dsharp.io import atomic_write_bytes

_PACKAGE = Path(__file__).resolve().parent


def shipped_recipes_dir() -> Path | None:
    """The installed package's ``recipes`` folder, else the source checkout's; None if
    neither is there. The checkout's only where the package is its ``src/dsharp`` beside
    ``pyproject.toml``: a package folder put on ``PYTHONPATH`` elsewhere (``~/lib/dsharp``)
    would take a user's own ``~/recipes`` for dsharp's, copy it as such and refuse to copy
    into it."""
    if (_PACKAGE / "recipes").is_dir():
        return _PACKAGE / "recipes"
    root = _PACKAGE.parent.parent
    checkout = _PACKAGE.parent.name == "src" and (root / "pyproject.toml").is_file()
    if checkout and (root / "recipes").is_dir():
        return root / "recipes"
    return None


def copy_recipes(dest: Path) -> list[Path]:
    """Copy the shipped recipes into ``dest`` (created), returning the files written.

    Refuses, before writing anything, a ``dest`` that holds any of the files: a user's
    edited recipe is never overwritten. Each file is written atomically, so an interrupted
    copy leaves no half-written recipe.
    """
    source = shipped_recipes_dir()
    if source is None:
        raise FileNotFoundError("this dsharp installation has no recipes folder")
    if dest.exists() and not dest.is_dir():
        raise FileExistsError(f"{dest}: not a folder")
    if dest.resolve() == source.resolve():  # a checkout's root: its recipes/ are these
        raise FileExistsError(f"{dest}: is the shipped recipes folder; copy into another folder")
    if dest.resolve().is_relative_to(source.resolve()):  # a checkout's own recipes/x: the
        # copies would be listed and copied again as recipes of their own
        raise FileExistsError(f"{dest}: inside the shipped recipes folder {source}")
    files = sorted(p for p in source.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    targets = [dest / p.relative_to(source) for p in files]
    clashes = [t for t in targets if t.exists()]
    if clashes:
        more = f" and {len(clashes) - 1} more" if len(clashes) > 1 else ""
        raise FileExistsError(f"{clashes[0]} already exists{more}; copy into another folder")
    for path, target in zip(files, targets, strict=True):
        atomic_write_bytes(target, path.read_bytes())
    return targets


def missing_recipe_hint(path: Path) -> str:
    """For a missing ``recipes/...`` path that names a shipped recipe while the current
    folder has no ``recipes/``: how to get it (``""`` otherwise)."""
    parts = path.parts
    if path.is_absolute() or len(parts) < 2 or parts[0] != "recipes" or Path("recipes").exists():
        return ""
    shipped = shipped_recipes_dir()
    if shipped is None or not shipped.joinpath(*parts[1:]).is_file():
        return ""
    installed = shipped.joinpath(*parts[1:])
    copy = "no recipes/ folder here: `dsharp recipes copy` writes dsharp's recipes to ./recipes"
    if _names_recipes_files(installed):  # its recipes/prompts/... are read from ./recipes too
        return f" ({copy}, then run this again)"
    return f" ({copy}, then run this again; or give the installed file, {installed})"


def reading_recipes_folder(files: Sequence[Path]) -> list[Path]:
    """The recipes among ``files`` that name a file under ``recipes/`` (their prompts file),
    which is read from the current folder: copied elsewhere than ``./recipes`` they do not
    find it there."""
    return [f for f in files if f.suffix in (".yaml", ".yml") and _names_recipes_files(f)]


def _names_recipes_files(recipe: Path) -> bool:
    """Whether the recipe names a file under ``recipes/`` (its prompts file): such a path is
    read from the current folder, so the installed recipe runs only after a copy."""
    import yaml

    def strings(node: Any) -> Iterator[str]:
        if isinstance(node, str):
            yield node
        elif isinstance(node, dict):
            for value in node.values():
                yield from strings(value)
        elif isinstance(node, list):
            for value in node:
                yield from strings(value)

    try:
        data = yaml.safe_load(recipe.read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return True  # unreadable: do not send the user to it
    return any(Path(text).parts[:1] == ("recipes",) for text in strings(data))
