"""``dsharp recipes list``: each recipe's method, model and run command, read without
validating, and the schema's fields for the recipes README."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import get_args, get_origin

from pydantic import BaseModel

from dsharp.config import MethodConfig, Recipe
from dsharp.recipe_errors import RecipeError, _unwrap, one_line
from dsharp.recipe_io import SAVED_RECIPE_HEADER
from dsharp.recipe_yaml import parse_yaml
from dsharp.shipped_recipes import shipped_recipes_dir

# --------------------------------------------------------------------------- listing


@dataclass(frozen=True)
class RecipeSummary:
    """One recipe file as ``dsharp recipes list`` shows it (read, not validated)."""

    file: Path
    method: str | None  # the training method; None for a sampler-only (eval --recipe) recipe
    model: str
    command: str
    error: str = ""
    sampler: str | None = None  # sample.method where it is not plain DDIM

    @property
    def shown(self) -> str:
        """What the listing's method column says (``demon (sampler)`` for a sampler; a study's
        untrained row scored with plain DDIM: ``default (sampler)``)."""
        if self.method is None and self.sampler is not None:
            return f"{self.sampler} (sampler)"
        return what_it_runs(self.method, self.sampler or "default")


def find_recipes_dir(cwd: Path | None = None) -> Path:
    """``./recipes`` if it exists, else the recipes that ship with dsharp (the installed
    package's, or the source checkout's)."""
    here = (cwd or Path.cwd()) / "recipes"
    if here.is_dir():
        return here
    shipped = shipped_recipes_dir()
    if shipped is not None:
        return shipped
    raise RecipeError("no recipes/ folder here or shipped with dsharp; pass a folder")


def summarize_recipe(path: Path) -> RecipeSummary:
    """Method, model and run command (the first-line comment) of a recipe, without validating.
    A run's saved ``recipe.yaml`` has no command (its first line is the header dsharp
    writes), and one of a study's untrained rows is listed as the sampler that was scored."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        return RecipeSummary(path, "?", "?", "", error=one_line(str(e)))
    first = text.lstrip().splitlines()[0] if text.strip() else ""
    saved = first.startswith(SAVED_RECIPE_HEADER)  # a run's recipe.yaml: its header, no command
    command = first.lstrip("#").strip() if first.startswith("#") and not saved else ""
    try:
        data = parse_yaml(text, str(path))
    except RecipeError as e:
        return RecipeSummary(path, "?", "?", command, error=e.reason)
    if not isinstance(data, dict):  # what `recipes validate` and `train` refuse it for
        kind = "empty" if data is None else f"a YAML {type(data).__name__}, not a mapping"
        return RecipeSummary(path, "?", "?", command, error=f"not a recipe ({kind})")
    if "rows" in data:  # a study (dsharp reproduce): rows of runs, not one recipe
        return _summarize_study(path, data, command)
    method = data.get("method") if isinstance(data.get("method"), dict) else None
    model = data.get("model") if isinstance(data.get("model"), dict) else {}
    sample = data.get("sample") if isinstance(data.get("sample"), dict) else {}
    sampler = str(sample.get("method", "default"))
    name = None if method is None else str(method.get("name", _DEFAULT_METHOD))
    if name is None and sampler == "default":
        name = _DEFAULT_METHOD  # no method section and no sampler: training's default
    scored = saved_row_sampler(path, first)
    if scored is not None:  # its method never ran: what was scored is the sampler
        return RecipeSummary(path, None, str(model.get("pretrained", "?")), "", sampler=scored)
    return RecipeSummary(
        path,
        name,
        str(model.get("pretrained", "?")),
        command,
        sampler=None if sampler == "default" else sampler,
    )


_DEFAULT_METHOD = MethodConfig.model_fields["name"].default


def saved_row_sampler(path: Path, first_line: str | None = None) -> str | None:
    """For a run's saved ``recipe.yaml`` whose folder was scored without training (a study's
    untrained row: it keeps the base recipe's ``method`` section), the sampler that was
    scored, as ``dsharp runs`` names it (``default`` for plain DDIM); None otherwise."""
    if path.name != "recipe.yaml":
        return None
    if first_line is None:
        try:
            with open(path, encoding="utf-8") as fh:
                first_line = fh.readline()
        except (OSError, UnicodeDecodeError):
            return None
    if not first_line.startswith(SAVED_RECIPE_HEADER):
        return None
    from dsharp.runs import untrained_row_sampler

    return untrained_row_sampler(path.parent)


def what_it_runs(method: str | None, sample_method: str) -> str:
    """The method a recipe is about: its training ``method`` (``None`` when it has no
    method section), else an inference-time sampler (``demon (sampler)``), which an
    ``eval --recipe`` recipe runs; a recipe with neither trains the default method."""
    if method is None and sample_method != "default":
        return f"{sample_method} (sampler)"
    return method or _DEFAULT_METHOD


def _summarize_study(path: Path, data: dict, command: str) -> RecipeSummary:
    """A study file's line in the listing: its kind and rows, and its base recipes' models."""
    rows = data.get("rows") if isinstance(data.get("rows"), list) else []
    kind = f"{data.get('kind', '?')} study"
    if data.get("name"):
        kind += f" {data['name']}"
    bases = {r.get("base") for r in rows if isinstance(r, dict) and r.get("base")}
    if data.get("base"):
        bases.add(data["base"])
    models = set()
    for base in sorted(b for b in bases if isinstance(b, str)):
        try:
            recipe = parse_yaml((path.parent / base).read_text(encoding="utf-8"), base)
            models.add(str(recipe["model"]["pretrained"]))
        except (OSError, UnicodeDecodeError, RecipeError, KeyError, TypeError):
            models.add("?")
    return RecipeSummary(
        path, f"{kind} ({len(rows)} rows)", ", ".join(sorted(models)) or "?", command
    )


def list_recipes(folder: Path) -> list[RecipeSummary]:
    """Summaries of every ``*.yaml`` / ``*.yml`` under ``folder``, sorted by path."""
    if not folder.is_dir():
        raise RecipeError("not a folder", source=str(folder))
    files = sorted(p for p in folder.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
    return [summarize_recipe(p) for p in files]


def schema_fields(model: type[BaseModel] = Recipe, prefix: str = "") -> list[tuple[str, str]]:
    """(dotted field, description) for every field, depth first: the recipe reference."""
    rows: list[tuple[str, str]] = []
    for name, field in model.model_fields.items():
        dotted = f"{prefix}{name}"
        rows.append((dotted, field.description or ""))
        for candidate in _unwrap(field.annotation):
            inner = get_args(candidate)[0] if get_origin(candidate) is list else candidate
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                sep = ".N." if get_origin(candidate) is list else "."
                rows += schema_fields(inner, dotted + sep)
    return rows
