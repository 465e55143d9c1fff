"""Run folders made by hand (a recipe and an empty step-1 checkpoint), for tests of what
commands read from a run before any model loads."""

from __future__ import annotations

from pathlib import Path


def run_folder_with_checkpoint(run: Path, recipe: str) -> Path:
    """``run`` holding ``recipe`` as its recipe.yaml and checkpoint step 1 (no weights)."""
    checkpoint = run / "checkpoints" / "step-000001"
    (checkpoint / "model").mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text('{"step": 1}')
    (run / "recipe.yaml").write_text(recipe)
    return run
