"""Refuse a recipe's prompts that its rewards cannot score, before any model loads.

A reward that only scores some prompts (the shapes grammar) says so through
``RewardInfo.check_prompt``; without this check such a prompt fails when it is first scored,
minutes into training or after the post-training samples are drawn.
"""

from __future__ import annotations

from typing import Any

from dsharp.recipe_errors import RecipeError


def check_recipe_prompts(
    recipe: Any, *, source: str | None = None, training: bool = True, evaluation: bool = True
) -> None:
    """Raise :class:`RecipeError` (``source``: the recipe file; field: the prompts' key) for
    the first training or evaluation prompt that the rewards scoring it cannot score.

    Training prompts are checked against the training rewards; evaluation prompts against
    the rewards the evaluation uses (its own, its bench's, else the training rewards). A
    bench's own prompts are not checked: the bench is built for its reward.
    """
    from dsharp.rewards.plugins import check_prompts

    checks = []
    data, ev = recipe.data, recipe.eval
    if training and (data.prompts or data.prompts_file):
        where = "data.prompts_file" if data.prompts_file else "data.prompts"
        checks.append((where, data.load_prompts(), recipe.rewards))
    if evaluation and (ev.prompts or ev.prompts_file):
        from dsharp.evaluate import get_bench
        from dsharp.posttrain import eval_specs

        where = "eval.prompts_file" if ev.prompts_file else "eval.prompts"
        bench = get_bench(ev.bench) if ev.bench else None
        checks.append((where, ev.load_prompts(), eval_specs(recipe, bench)))
    for where, prompts, specs in checks:
        try:
            check_prompts(specs, prompts)
        except ValueError as err:
            raise RecipeError(str(err), source=source, field=where) from None
