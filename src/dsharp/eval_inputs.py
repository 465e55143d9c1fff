"""What an evaluation scores (its prompts, bench and rewards) chosen from what was given: a
command's flags or the Python API's arguments, a recipe's eval section, a run's recipe. One
order for ``dsharp eval``, ``dsharp.evaluate_model`` and the post-training report, so that
their numbers cannot drift apart; each caller names its own inputs in the errors. A missing
input is a ``RecipeError`` (a bad setting: ``dsharp eval`` exits 2)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dsharp.config import Recipe, RewardSpec
    from dsharp.evaluate import Bench


@dataclass(frozen=True)
class InputNames:
    """How a caller's inputs read in errors: ``give {prompts} or {bench}``, ``{bench_field}:
    unknown bench``, ``{options_field}: ...`` for a bad option of a bench's reward."""

    prompts: str = "prompts"
    bench: str = "a bench"
    rewards: str = "rewards"
    bench_field: str = "bench"
    options_field: str = "options"


def choose_prompts(
    prompts: Sequence[str] | None,
    bench: str | None,
    *,
    recipe: Recipe | None = None,
    limit: int | None = None,
    names: InputNames = InputNames(),
) -> tuple[list[str], Bench | None]:
    """(prompt list, bench or None): ``prompts`` given, else the recipe's eval prompts (where
    ``bench`` is not another bench than the recipe's), else the bench's own prompts. The
    bench keeps the labels it can give every prompt (:meth:`Bench.for_prompts`).

    A recipe's ``eval.limit`` applies to a bench's or the recipe's prompts (also where
    ``bench`` names the bench), keeping an evaluation as short as the recipe meant; given
    ``prompts`` are taken whole. ``limit`` then keeps at most that many per category (of
    the whole list without categories), spread evenly."""
    from dsharp.evaluate import get_bench
    from dsharp.posttrain import limit_prompts
    from dsharp.recipe_errors import RecipeError

    ev = recipe.eval if recipe is not None else None
    if prompts is not None:
        prompt_list = list(prompts)
        spec_bench = get_bench(bench, names.bench_field) if bench else None
    else:
        if ev is None and bench is None:
            raise RecipeError(f"give {names.prompts} or {names.bench}")
        named = bench or ev.bench
        spec_bench = get_bench(named, names.bench_field) if named else None
        if ev is not None and bench in (None, ev.bench) and (ev.prompts or ev.prompts_file):
            prompt_list = ev.load_prompts()
        elif spec_bench is not None:
            prompt_list = spec_bench.default_prompts()
        else:
            raise RecipeError(
                f"give {names.prompts} or {names.bench} (the recipe's eval section has none)"
            )
    if spec_bench is not None:
        spec_bench = spec_bench.for_prompts(prompt_list)
    category_of = spec_bench.category_of if spec_bench else None
    if prompts is None and ev is not None and ev.limit:
        prompt_list = limit_prompts(prompt_list, ev.limit, category_of)
    if limit:
        prompt_list = limit_prompts(prompt_list, limit, category_of)
    return prompt_list, spec_bench


def choose_rewards(
    rewards: Sequence[RewardSpec] | None,
    spec_bench: Bench | None,
    *,
    bench: str | None = None,
    options: Mapping[str, Any] | None = None,
    recipe: Recipe | None = None,
    run_recipe: Recipe | None = None,
    names: InputNames = InputNames(),
) -> list[RewardSpec]:
    """The rewards that score the images, the first of: ``rewards`` given, the recipe's
    eval rewards (unless ``bench`` was given: the bench's own then score), the bench's,
    the recipe's or else the run's eval rewards or rewards. Those not given have
    ``options`` added (``dsharp eval --set``: every reward that scores, whichever chose it);
    ``rewards`` given carry their own."""
    from dsharp.config import parse_reward_spec
    from dsharp.recipe_errors import RecipeError

    if rewards:
        return list(rewards)
    if recipe is not None and recipe.eval.rewards is not None and not bench:
        return with_options(recipe.eval.rewards, options)
    if spec_bench is not None:
        extra = dict(options or {})
        return [
            parse_reward_spec(
                {**r, "options": {**r.get("options", {}), **extra}}, names.options_field
            )
            for r in spec_bench.rewards
        ]
    owner = recipe if recipe is not None else run_recipe
    if owner is not None and (owner.eval.rewards or owner.rewards):
        return with_options(owner.eval.rewards or owner.rewards, options)
    raise RecipeError(f"give {names.rewards} (or {names.bench}) to say how to score")


def with_options(
    specs: Sequence[RewardSpec], options: Mapping[str, Any] | None
) -> list[RewardSpec]:
    """``specs`` (a recipe's or a run's rewards) with ``options`` over their own options:
    a command's ``--set`` reaches the rewards a saved recipe names, as it does the bench's."""
    if not options:
        return list(specs)
    return [s.model_copy(update={"options": {**s.options, **options}}) for s in specs]


def verifier_with_options(
    specs: Sequence[RewardSpec], scoring: Sequence[RewardSpec], options: Mapping[str, Any] | None
) -> list[RewardSpec]:
    """``specs`` (a recipe's or a run's rewards, the verifier by default) with ``options`` on
    each that also scores (one reward, one set of options): ``--set`` is for the rewards that
    score, so the training reward that only verifies under ``--bench`` or ``--reward`` keeps
    its own, and a key of the bench's does not refuse the command there."""
    names = {spec.name for spec in scoring}
    return [with_options([s], options)[0] if s.name in names else s for s in specs]
