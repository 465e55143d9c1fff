"""Study row folders made by hand, as `dsharp reproduce` leaves them, for tests that need
no training or model."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dsharp.config import save_recipe


def finish_rows(
    loaded: Any,
    *,
    metrics: Callable[[int, Any], list[dict] | None] | None = None,
    result: Callable[[int, Any], dict] | None = None,
) -> None:
    """Make each row's folder look finished: its recipe, and for a trained row its final
    checkpoint; ``metrics(i, plan)`` rows (None: no metrics.jsonl) and ``result(i, plan)``
    as its eval.json, where given."""
    for i, plan in enumerate(loaded.rows):
        save_recipe(plan.recipe, plan.run_dir / "recipe.yaml")
        if plan.trained:
            step = plan.recipe.train.max_steps
            ckpt = plan.run_dir / "checkpoints" / f"step-{step:06d}"
            ckpt.mkdir(parents=True)
            (ckpt / "trainer_state.json").write_text(json.dumps({"step": step}))
        rows = metrics(i, plan) if metrics is not None else None
        if rows is not None:
            text = "".join(json.dumps(r) + "\n" for r in rows)
            (plan.run_dir / "metrics.jsonl").write_text(text)
        if result is not None:
            doc = {"label": plan.label, "trained": plan.trained, **result(i, plan)}
            (plan.run_dir / "eval.json").write_text(json.dumps(doc))


#: Files a shipped study names that its user supplies (weights no hub serves): the option
#: that names each, with the placeholder the study ships.
USER_SUPPLIED = {
    "recipes/paper/table1.yaml": {
        "eval.rewards.1.options.weights": "/path/to/sac+logos+ava1-l14-linearMSE.pth"
    },
}


def stand_in_overrides(study: Path, root: Path, folder: Path) -> list[str]:
    """Overrides that point a shipped study's user-supplied files at empty stand-ins in
    ``folder``: loading a study refuses a local file that is not there, as building its
    reward would after the rows had trained."""
    overrides = []
    for key, placeholder in USER_SUPPLIED.get(study.relative_to(root).as_posix(), {}).items():
        stand_in = folder / Path(placeholder).name
        stand_in.touch()
        overrides.append(f"{key}={stand_in}")
    return overrides
