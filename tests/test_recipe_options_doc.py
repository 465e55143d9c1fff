"""recipes/README.md documents every ``method.options`` and ``sample.options`` key.

The accepted keys come from the code, the way it decides them: a training method's are the
keyword parameters of its constructor that are not ``method.*`` fields (the factory's
``_keyword_defaults`` less ``_generic_fields``), a sample method's the fields of its options
dataclass (what ``parse_options`` accepts). Each method has a ``### `name``` subsection in
"Method options" or "Sample method options" whose table rows name exactly those keys, with
the code's defaults.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest

from dsharp.config import MethodConfig
from dsharp.inference import SAMPLE_METHODS
from dsharp.methods.factory import (
    UnknownOptionError,
    _generic_fields,
    _keyword_defaults,
    _method_class,
    check_method_section,
)
from dsharp.methods.registry import method_specs

README = Path(__file__).resolve().parents[1] / "recipes" / "README.md"
ROW = re.compile(r"^\|\s*`([^`]+)`\s*\|[^|]*\|\s*`([^`]*)`\s*\|", re.MULTILINE)


def _method_options(name: str) -> dict[str, Any]:
    """The ``method.options`` keys ``name`` accepts, with their defaults, as the factory
    decides them (``_check_option_keys``)."""
    cls = _method_class(name)
    assert cls is not None, f"method {name!r} is registered but has no class in the factory"
    generic = _generic_fields(MethodConfig(name=name))
    return {k: v for k, v in _keyword_defaults(cls).items() if k not in generic}


def _sample_options(name: str) -> dict[str, Any]:
    """The ``sample.options`` keys of sample method ``name`` with their defaults, as
    ``parse_options`` decides them: the fields of its options dataclass."""
    return {f.name: f.default for f in dataclasses.fields(SAMPLE_METHODS[name].options)}


def _subsections(heading: str) -> dict[str, str]:
    """The ``### `name``` subsections of the README's ``## heading`` section, by name."""
    text = README.read_text(encoding="utf-8")
    match = re.search(rf"^## {re.escape(heading)}\s*$", text, re.MULTILINE)
    assert match, f"recipes/README.md has no '## {heading}' section"
    rest = text[match.end() :]
    following = re.search(r"^## ", rest, re.MULTILINE)
    body = rest[: following.start()] if following else rest
    parts = re.split(r"^### `([^`]+)`\s*$", body, flags=re.MULTILINE)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts), 2)}


def _documented(section: str) -> dict[str, str]:
    """Option -> documented default of the table rows of one subsection."""
    return dict(ROW.findall(section))


def _as_doc(value: Any) -> str:
    """A default as the README writes it (YAML's null/true/false, else Python's repr)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def _check(heading: str, field: str, accepted: dict[str, dict[str, Any]]) -> None:
    sections = _subsections(heading)
    assert set(sections) == set(accepted), (
        f"recipes/README.md '{heading}': subsections {sorted(sections)} != methods "
        f"{sorted(accepted)}"
    )
    for name, options in accepted.items():
        documented = _documented(sections[name])
        for key in options:
            assert f"`{key}`" in sections[name] and key in documented, (
                f"recipes/README.md does not document {field}.{key} of {name} "
                f"(a row '| `{key}` | ... |' under '### `{name}`' in '{heading}')"
            )
        stale = sorted(set(documented) - set(options))
        assert not stale, f"recipes/README.md documents {field} {stale} that {name} does not take"
        for key, default in options.items():
            assert documented[key] == _as_doc(default), (
                f"recipes/README.md: {field}.{key} of {name} documented with default "
                f"`{documented[key]}`, the code's is `{_as_doc(default)}`"
            )
        if not options:
            assert "no options" in sections[name], f"say that {name} takes no options"


def test_every_method_option_is_documented() -> None:
    accepted = {name: _method_options(name) for name in method_specs()}
    assert any(accepted.values())  # the collection found options at all
    _check("Method options", "method.options", accepted)


def test_every_sample_method_option_is_documented() -> None:
    accepted = {name: _sample_options(name) for name in SAMPLE_METHODS}
    assert any(accepted.values())
    _check("Sample method options", "sample.options", accepted)


@pytest.mark.parametrize("name", sorted(method_specs()))
def test_collected_method_options_are_what_the_factory_accepts(name: str) -> None:
    """The keys collected above pass the factory's check; any other key fails it."""
    options = _method_options(name)
    if name == "diffusion_dpo":  # its defaults (offline, no pairs file) are not a valid set
        options["pairs"] = "online"
    check_method_section(MethodConfig(name=name, options=options))
    with pytest.raises(UnknownOptionError):
        check_method_section(MethodConfig(name=name, options={"no_such_option": 1}))


@pytest.mark.parametrize("name", sorted(SAMPLE_METHODS))
def test_collected_sample_options_are_what_the_sampler_accepts(name: str) -> None:
    method = SAMPLE_METHODS[name]
    method.parse_options(_sample_options(name))
    with pytest.raises(ValueError, match="unknown option"):
        method.parse_options({"no_such_option": 1})
