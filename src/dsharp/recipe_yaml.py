"""Recipe YAML: a safe loader (``1e-6`` is a float, duplicate keys fail, errors point at the
line) and ``a.b.c=value`` overrides applied to the parsed data before validation."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from dsharp.recipe_errors import Loc, RecipeError, _dotted, one_line
from dsharp.redaction import sensitive_setting, shown_setting
from dsharp.shipped_recipes import missing_recipe_hint

# --------------------------------------------------------------------------- YAML


class _RecipeLoader(yaml.SafeLoader):
    """Safe YAML with two fixes: ``1e-6`` is a float (YAML 1.2) and duplicate keys fail."""


_RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$|^[-+]?\.[0-9_]+[eE][-+]?[0-9]+$"
    ),
    list("-+0123456789."),
)


#: The tag of YAML's merge key (``<<: *base``): no key of its own, so no duplicate.
_MERGE_TAG = "tag:yaml.org,2002:merge"


def _construct_unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == _MERGE_TAG:  # ``<<: *base``: construct_mapping merges it in
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in seen
            seen.add(key)
        except TypeError:  # unhashable key: let the constructor report it
            continue
        if duplicate:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
    return loader.construct_mapping(node, deep=True)


_RecipeLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping
)
# Built whole, as mappings are: PyYAML's own list is filled after it is made, so that a list
# that holds itself (``&a [*a]``) loaded, endless, where it is refused as recursive here.
_RecipeLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG,
    lambda loader, node: loader.construct_sequence(node, deep=True),
)


#: PyYAML's words for an anchor used inside itself (``&a {x: *a}``), which the recipe
#: loader refuses: a structure that contains itself has no end to validate or print.
_RECURSIVE = "found unconstructable recursive node"


def _yaml_error(e: yaml.YAMLError, text: str | None = None) -> str:
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e)
    where = f"line {mark.line + 1}: " if mark is not None else ""
    if problem == _RECURSIVE:
        key = _recursive_key(text) if text is not None else None
        what = f"{key}: " if key else ""
        return f"{where}{what}a YAML anchor is used inside itself (the value would contain itself)"
    return f"{where}invalid YAML: {problem}"


def _recursive_key(text: str) -> str | None:
    """The dotted key of the first value that contains itself in ``text``'s YAML (None at
    the top, or where it cannot be composed): where a recursive anchor is, by name."""
    try:
        root = yaml.compose(text, Loader=_RecipeLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError:
        return None

    def walk(node: Any, path: list[str], inside: list[Any]) -> str | None:
        for depth, seen in enumerate(inside):
            if node is seen:  # the value at path[:depth] holds itself
                return ".".join(path[:depth]) or None
        if isinstance(node, yaml.MappingNode):
            children = [(str(getattr(k, "value", k)), v) for k, v in node.value]
        elif isinstance(node, yaml.SequenceNode):
            children = [(str(i), v) for i, v in enumerate(node.value)]
        else:
            return None
        for name, child in children:
            found = walk(child, [*path, name], [*inside, node])
            if found is not None:
                return found
        return None

    return walk(root, [], []) if root is not None else None


def parse_yaml(text: str, source: str = "<string>") -> Any:
    """Parse YAML text with the recipe loader; errors become a one-line ``RecipeError``."""
    try:
        return yaml.load(text, Loader=_RecipeLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        raise RecipeError(_yaml_error(e, text), source=source) from None


def _read_yaml(path: Path) -> Any:
    source = str(path)
    if not path.exists():
        raise RecipeError(f"file not found{missing_recipe_hint(path)}", source=source)
    if path.is_dir():
        raise RecipeError("is a folder, expected a YAML file", source=source)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise RecipeError("not UTF-8 text", source=source) from None
    except OSError as e:
        raise RecipeError(f"cannot read: {e.strerror}", source=source) from None
    return parse_yaml(text, source)


# --------------------------------------------------------------------------- overrides


def _unshared(value: Any) -> Any:
    """``value`` with its own copy of every mapping and list, however often the YAML reused
    one (``copy.deepcopy`` would keep an alias shared)."""
    if isinstance(value, dict):
        return {key: _unshared(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_unshared(item) for item in value]
    return value


def apply_overrides(
    data: dict[str, Any], overrides: Sequence[str], source: str | None = None
) -> list[tuple[Loc, str]]:
    """Apply ``a.b.c=value`` overrides to ``data`` in place; return (location, text) pairs.

    Values are parsed as YAML (``3``, ``1e-5``, ``true``, ``[a, b]``, ``null``); a number
    segment indexes a list (``rewards.0.weight=2``), and the index one past the end appends.
    Unknown keys are left for schema validation to report. A YAML alias (``*grader``) is
    copied first: an override changes the one place it names, not every use of the anchor.
    """
    applied: list[tuple[Loc, str]] = []
    if overrides:
        for name, value in list(data.items()):
            data[name] = _unshared(value)
    for text in overrides:
        key, sep, raw = text.partition("=")
        key = key.strip()

        def fail(reason: str, text: str = text) -> RecipeError:
            return RecipeError(f"override {shown_setting(text)!r}: {reason}", source=source)

        if not sep or not key:
            raise fail("expected KEY=VALUE, e.g. train.lr=1e-5 or sample.steps=10")
        parts = key.split(".")
        if any(not p for p in parts):
            raise fail("empty key segment")
        try:
            value = yaml.load(raw, Loader=_RecipeLoader)  # noqa: S506 - a SafeLoader subclass
        except yaml.YAMLError as e:
            # the parser's detail quotes the value: left out where the value is a secret
            detail = "" if sensitive_setting(text) else f": {one_line(_yaml_error(e, raw))}"
            raise fail(f"value is not valid YAML{detail}") from None
        loc: list[str | int] = []
        node: Any = data
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, list):
                if not part.isdigit():
                    raise fail(f"{_dotted(loc)} is a list: expected an index, got {part!r}")
                index = int(part)
                if index > len(node):
                    raise fail(f"{_dotted(loc)}: index {index} out of range (length {len(node)})")
                if index == len(node):
                    node.append(None)
                loc.append(index)
                if last:
                    node[index] = value
                elif node[index] is None:
                    node[index] = [] if parts[i + 1].isdigit() else {}
                node = node[index]
            elif isinstance(node, dict):
                loc.append(part)
                if last:
                    node[part] = value
                elif node.get(part) is None:
                    node[part] = [] if parts[i + 1].isdigit() else {}
                node = node[part]
            else:
                kind = type(node).__name__
                raise fail(f"{_dotted(loc)} is a {kind}, cannot set {part!r} inside it")
        applied.append((tuple(loc), text))
    return applied
