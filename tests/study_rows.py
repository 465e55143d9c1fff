"""Study row folders made by hand, as `dsharp reproduce` leaves them, for tests that need
no training or model."""

from __future__ import annotations

import json
from collections.abc import Callable
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
