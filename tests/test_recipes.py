"""Every recipe shipped under recipes/ validates and says on its first line how to run it;
study files (``dsharp reproduce``) validate as studies, with every row's recipe."""

from __future__ import annotations

from pathlib import Path

import pytest

from dsharp.config import load_recipe
from dsharp.study import is_study_file, load_study
from study_rows import stand_in_overrides

ROOT = Path(__file__).resolve().parent.parent
RECIPE_FILES = sorted(
    p for p in (ROOT / "recipes").rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file()
)


def test_there_are_recipes():
    assert len(RECIPE_FILES) >= 2


@pytest.mark.parametrize("path", RECIPE_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_recipe_validates_with_its_files(
    path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    """Paths in recipes are relative to the repository root, where the commands run; the
    embedded model need not be built, since validation never loads a model. Files a study's
    user supplies (weights no hub serves) get stand-ins."""
    monkeypatch.chdir(ROOT)
    if is_study_file(path):
        loaded = load_study(path.relative_to(ROOT), stand_in_overrides(path, ROOT, tmp_path))
        assert loaded.rows and all(row.recipe.model.pretrained for row in loaded.rows)
        return
    recipe = load_recipe(path.relative_to(ROOT), validate_files=True)
    assert recipe.model.pretrained
    assert recipe.output_dir and "{recipe_name}" not in recipe.output_dir


@pytest.mark.parametrize("path", RECIPE_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_recipe_first_line_is_the_command_that_runs_it(path: Path):
    first = path.read_text(encoding="utf-8").splitlines()[0]
    rel = path.relative_to(ROOT).as_posix()
    commands = (f"# dsharp train {rel}", f"# dsharp eval --recipe {rel}")  # eval: inference-time
    if is_study_file(path):
        commands = (f"# dsharp reproduce {rel}",)
    assert any(first == c or first.startswith(f"{c} ") for c in commands), first
