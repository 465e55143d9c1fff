"""Library code (``dsharp.*`` outside the commands) stands on its own: it imports nothing of
the CLI, and its errors name its own inputs, not the commands' flags; the commands keep
their flag-naming messages (tests/test_cli.py pins them)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import dsharp

SRC = Path(__file__).resolve().parents[1] / "src" / "dsharp"
CLI_MODULES = ("dsharp.commands", "dsharp.cli")


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(tree: ast.AST, module: str) -> list[str]:
    """Every module an import statement of ``tree`` names (relative ones resolved)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".")[: -node.level]
                base = ".".join([*package, base] if base else package)
            found.append(base)
            found += [f"{base}.{alias.name}" for alias in node.names]
    return found


def test_no_library_module_imports_the_commands():
    """posttrain, study, study_outputs and the Python API took pick_device and
    results_for_paper from dsharp.commands: a library user loaded CLI code (typer) and got
    errors naming --device."""
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        module = _module_name(path)
        if module.startswith(CLI_MODULES):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for name in _imported(tree, module):
            if name == "dsharp.commands" or name.startswith("dsharp.commands."):
                offenders.append(f"{module}: {name}")
    assert not offenders


def test_library_errors_name_the_input_not_a_flag():
    from dsharp.devices import pick_device
    from dsharp.evaluate import get_bench
    from dsharp.generate import SampleSettings

    with pytest.raises(dsharp.RecipeError, match=r"^device: expected auto, cpu") as bad:
        dsharp.load_model("dsharp-mini", device="tpu")
    assert "--" not in str(bad.value)
    with pytest.raises(ValueError, match=r"^bench: unknown bench 'nope'"):
        get_bench("nope")
    with pytest.raises(ValueError, match="needs a verifier reward") as no_verifier:
        SampleSettings(method="demon").validate()
    assert "--reward" not in str(no_verifier.value)
    with pytest.raises(ValueError, match="needs a verifier reward: pass verifier=NAME"):
        dsharp.sample(object(), ["a red circle"], method="demon")
    with pytest.raises(dsharp.RecipeError, match=r"^device: expected auto"):
        pick_device("tpu")
    # a caller names its input (the commands: the flag)
    with pytest.raises(ValueError, match=r"^--bench: unknown bench 'nope'"):
        get_bench("nope", "--bench")
    with pytest.raises(dsharp.RecipeError, match=r"^--device: expected auto"):
        pick_device("tpu", "--device")
