"""One-line recipe errors, and the mapping of pydantic's validation errors onto them: a
message names the file, the dotted field and the reason in words a recipe author can act on
(``recipes/x.yaml: method.nn: unknown key, did you mean 'n'?``)."""

from __future__ import annotations

import difflib
import types
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from dsharp.error_text import one_line
from dsharp.redaction import quoted, redact_text, shown_setting

#: A validation location: keys and list indices from the recipe's top.
Loc = tuple[str | int, ...]


def _dotted(loc: Iterable[str | int]) -> str:
    return ".".join(str(p) for p in loc)


# --------------------------------------------------------------------------- errors


class RecipeError(ValueError):
    """A recipe could not be loaded; ``str()`` is one line: ``source: field: reason``, with
    any key quoted in it (a value pasted into the wrong field) redacted."""

    def __init__(
        self, reason: str, *, source: str | None = None, field: str = "", override: str = ""
    ):
        self.reason = one_line(reason)
        self.source = source
        self.field = field
        self.override = override
        super().__init__(str(self))

    def __str__(self) -> str:
        parts = [p for p in (self.source, self.field) if p]
        line = ": ".join([*parts, self.reason])
        if self.override:
            line += f" (from override {shown_setting(self.override)!r})"
        return redact_text(line)


class FieldProblem(ValueError):
    """Raised inside validators to report a problem at a sub-location of the model."""

    def __init__(self, loc: tuple[str | int, ...], reason: str):
        self.loc = loc
        self.reason = reason
        super().__init__(reason)


def _suggest(name: object, known: Iterable[str]) -> str:
    """``", did you mean 'x'?"`` for a close match among ``known``, else ``""``."""
    if not isinstance(name, str):
        return ""
    match = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f", did you mean {match[0]!r}?" if match else ""


def unknown_name_message(kind: str, name: str, known: Iterable[str]) -> str:
    """``unknown reward 'clipp', did you mean 'clip'? (known: clip, shapes)``."""
    known = sorted(known)
    listing = ", ".join(known) if known else "none installed"
    return f"unknown {kind} {name!r}{_suggest(name, known)} (known: {listing})"


# --------------------------------------------------------------------------- error mapping


def _unwrap(annotation: Any) -> list[Any]:
    """The member types of a union (Optional included) or the annotation itself."""
    if get_origin(annotation) in (Union, types.UnionType):
        return [a for a in get_args(annotation) if a is not type(None)]
    return [annotation]


def _annotation_at(loc: Loc, root: Any = None) -> Any:
    """The type annotation at a validation location, walking models, lists and dicts."""
    if root is None:
        from dsharp.config import Recipe  # the schema imports this module

        root = Recipe
    current: Any = root
    for part in loc:
        found = None
        for candidate in _unwrap(current):
            origin = get_origin(candidate)
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                field = candidate.model_fields.get(part) if isinstance(part, str) else None
                if field is not None:
                    found = field.annotation
            elif origin in (list, tuple) and isinstance(part, int):
                found = get_args(candidate)[0]
            elif origin is dict:
                found = get_args(candidate)[1]
            if found is not None:
                break
        if found is None:
            return None
        current = found
    return current


def _section_of(name: object) -> str:
    """``", did you mean 'train.max_steps'?"`` for a top-level key that is a field of a
    section (a recipe written flat, or ``max_steps=2`` on the command line)."""
    owners = [
        section
        for section in _fields_of(_annotation_at(()))
        if isinstance(name, str) and name in _fields_of(_annotation_at((section,)))
    ]
    if not owners:
        return ""
    listing = " or ".join(repr(f"{section}.{name}") for section in owners)
    return f", did you mean {listing}?"


def _fields_of(annotation: Any) -> list[str]:
    for candidate in _unwrap(annotation):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return list(candidate.model_fields)
    return []


def _literal_values(annotation: Any) -> list[Any]:
    for candidate in _unwrap(annotation):
        if get_origin(candidate) is Literal:
            return list(get_args(candidate))
    return []


def _show(value: Any) -> str:
    """A value as an error quotes it: short, and without the secrets a mapping given in
    place of a list (``rewards: {name: x, options: {api_key: ...}}``), a URL or a key pasted
    into the wrong field (``train.optimizer=sk-...``) may hold."""
    return quoted(value)


_EXPECTED = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "string": "a string",
    "list": "a list",
    "dict": "a mapping",
    "model": "a mapping",
    "path": "a file path",
}


def _reason(error: Mapping[str, Any]) -> tuple[Loc, str]:
    """(location, reason) of one pydantic error, in words a recipe author can act on."""
    kind = error["type"]
    loc: Loc = tuple(error["loc"])
    ctx = error.get("ctx") or {}
    value = error.get("input")
    if kind in ("value_error", "assertion_error") and isinstance(ctx.get("error"), Exception):
        exc = ctx["error"]
        if isinstance(exc, FieldProblem):
            return loc + exc.loc, exc.reason
        return loc, str(exc)
    if kind == "extra_forbidden":
        hint = _suggest(loc[-1], _fields_of(_annotation_at(loc[:-1])))
        if not hint and len(loc) == 1:
            hint = _section_of(loc[0])
        if isinstance(loc[-1], str) and ":" in loc[-1]:
            hint += " (YAML reads 'key:value' as one key; write 'key: value')"
        return loc, "unknown key" + hint
    if kind == "missing":
        return loc, "required key missing"
    if kind == "literal_error":
        allowed = _literal_values(_annotation_at(loc))
        listing = ", ".join(repr(a) for a in allowed) if allowed else ctx.get("expected", "")
        hint = _suggest(value, [a for a in allowed if isinstance(a, str)])
        return loc, f"expected one of {listing}, got {_show(value)}{hint}"
    bounds = {
        "greater_than_equal": (">=", "ge"),
        "greater_than": (">", "gt"),
        "less_than_equal": ("<=", "le"),
        "less_than": ("<", "lt"),
    }
    if kind in bounds:
        op, key = bounds[kind]
        return loc, f"must be {op} {ctx.get(key)}, got {_show(value)}"
    if kind == "too_short":
        return loc, f"needs at least {ctx.get('min_length')} item(s)"
    if kind in ("finite_number",):
        return loc, f"expected a finite number, got {_show(value)}"
    if kind in ("int_from_float",):
        return loc, f"expected an integer, got {_show(value)}"
    stem = kind.split("_")[0]
    if stem in _EXPECTED and kind.endswith(("_type", "_parsing", "_attributes_type")):
        # YAML reads yes/no/on/off as booleans, which the user never wrote as True/False
        why = (
            " (YAML reads yes, no, on and off as true or false)" if isinstance(value, bool) else ""
        )
        return loc, f"expected {_EXPECTED[stem]}, got {_show(value)}{why}"
    return loc, str(error.get("msg", kind))


def _first_error(
    e: ValidationError, source: str | None, applied: Sequence[tuple[Loc, str]]
) -> RecipeError:
    # An unknown key usually explains the other errors (a misspelled key is also "missing").
    errors = sorted(e.errors(), key=lambda err: err["type"] != "extra_forbidden")
    loc, reason = _reason(errors[0])
    if len(errors) > 1:
        reason += f" (+{len(errors) - 1} more)"
    override = ""
    for path, text in applied:  # the override that set this field, or a field inside it
        if loc and (loc[: len(path)] == path or path[: len(loc)] == loc):
            override = text
    return RecipeError(reason, source=source, field=_dotted(loc), override=override)
