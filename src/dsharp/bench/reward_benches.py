"""Named reward benches: one reward model scored on a default prompt set with fixed seeds.

``dsharp eval --bench clip`` (and aesthetic, imagereward, pickscore, hpsv2, mllm, shapes)
takes its prompt sets from here (through :func:`dsharp.evaluate.get_bench`);
:func:`run_reward_bench` is the same evaluation for Python callers. It generates ``seeds``
images per prompt and reports the reward's mean, std and 95% confidence
interval, in the same JSON shape as :func:`dsharp.evaluate.evaluate`. Default prompt sets are
dsharp's own, shipped under ``dsharp/assets/reference/prompts``:

* ``general.txt`` (47 prompts; colours, counting, positions, text, unusual combinations,
  people, long scenes, styles, close-ups, animals, in the spirit of DrawBench's categories):
  clip, imagereward, pickscore, hpsv2, mllm;
* ``aesthetic.txt`` (32 prompts; landscapes, still lifes and portraits where composition and
  light dominate): aesthetic;
* shapes: the dsharp-mini shapes world's val prompts (grouped by category).

Reward options (model ids or local folders, ``scale``...) pass through ``options``. For
comparison with the paper, score CLIP as a plain cosine (``scale`` 1, the reward's default).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROMPTS_DIR = Path(__file__).resolve().parent.parent / "assets" / "reference" / "prompts"


def _file_prompts(name: str) -> Callable[[], list[str]]:
    def load() -> list[str]:
        from dsharp.data import read_prompt_file

        return read_prompt_file(PROMPTS_DIR / f"{name}.txt")

    return load


def _shapes_prompts() -> list[str]:
    from dsharp.shapes import prompt_sets

    return [p for group in prompt_sets("val").values() for p in group]


def _shapes_category(prompt: str) -> str:
    from dsharp.shapes import category_of

    return category_of(prompt)


def _shapes_pairs(prompt: str) -> str:
    """``held-out`` when the prompt names a colour-shape pair that pretraining never showed
    dsharp-mini (every val prompt does), else ``seen``: reward fine-tuning can teach the
    held-out pairs, so this split shows where a gain comes from."""
    from dsharp.shapes.grammar import parse
    from dsharp.shapes.prompts import uses_held_out

    return "held-out" if uses_held_out(parse(prompt)) else "seen"


@dataclass(frozen=True)
class RewardBench:
    """A reward and its default prompt set."""

    name: str
    reward: str
    prompt_set: str
    default_prompts: Callable[[], list[str]]
    description: str
    category_of: Callable[[str], str] | None = None
    groupings: Mapping[str, Callable[[str], str]] = field(default_factory=dict)


def _bench(name: str, prompt_set: str, description: str) -> RewardBench:
    return RewardBench(name, name, prompt_set, _file_prompts(prompt_set), description)


REWARD_BENCHES: dict[str, RewardBench] = {
    "clip": _bench("clip", "general", "CLIP score (cosine) on dsharp's general prompts"),
    "aesthetic": _bench(
        "aesthetic", "aesthetic", "LAION aesthetic predictor v2 on dsharp's aesthetic prompts"
    ),
    "imagereward": _bench("imagereward", "general", "ImageReward on dsharp's general prompts"),
    "pickscore": _bench("pickscore", "general", "PickScore on dsharp's general prompts"),
    "hpsv2": _bench("hpsv2", "general", "HPSv2 on dsharp's general prompts"),
    "mllm": _bench("mllm", "general", "MLLM grader (overall / 10) on dsharp's general prompts"),
    "shapes": RewardBench(
        "shapes",
        "shapes",
        "shapes-val",
        _shapes_prompts,
        "dsharp-mini shapes world, exact compositional score (val prompts)",
        _shapes_category,
        {"pairs": _shapes_pairs},
    ),
}


def get_reward_bench(name: str) -> RewardBench:
    if name not in REWARD_BENCHES:
        raise ValueError(
            f"--bench: unknown reward bench {name!r} (available: {', '.join(REWARD_BENCHES)})"
        )
    return REWARD_BENCHES[name]


def _seed_range(seeds: int | Sequence[int]) -> tuple[int, int]:
    """``(seed_base, count)`` from a count (seeds 0..N-1) or a run of consecutive seeds."""
    if isinstance(seeds, bool):
        raise ValueError(f"seeds must be a count or consecutive integers, got {seeds!r}")
    if isinstance(seeds, int):
        if seeds < 1:
            raise ValueError(f"seeds must be >= 1, got {seeds}")
        return 0, seeds
    seeds = list(seeds)
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int) for s in seeds):
        raise ValueError(f"seeds must be a count or consecutive integers, got {seeds!r}")
    if seeds != list(range(seeds[0], seeds[0] + len(seeds))):
        raise ValueError(f"seeds must be consecutive integers, got {seeds!r}")
    return seeds[0], len(seeds)


def run_reward_bench(
    model: Any,
    name: str,
    *,
    prompts: Sequence[str] | Path | None = None,
    seeds: int | Sequence[int] = 2,
    settings: Any = None,
    options: dict[str, Any] | None = None,
    progress: bool = False,
    batch_size: int = 16,
    images_dir: Path | None = None,
) -> dict[str, Any]:
    """Score ``model`` with bench ``name``'s reward on its default prompts (or ``prompts``:
    a list or a prompt file), ``seeds`` images per prompt (a count, or consecutive seeds).

    Returns :func:`dsharp.evaluate.evaluate`'s result (``metrics[<reward>]`` holds mean, std,
    ci95, n) plus ``bench``, ``reward``, ``prompt_set`` and the non-secret reward options.
    """
    from dsharp.config import RewardSpec
    from dsharp.evaluate import evaluate
    from dsharp.generate import SampleSettings
    from dsharp.redaction import redact_reward_spec

    bench = get_reward_bench(name)
    seed_base, num_seeds = _seed_range(seeds)
    if prompts is None:
        prompt_list, prompt_set = bench.default_prompts(), bench.prompt_set
    elif isinstance(prompts, str | Path):
        from dsharp.data import read_prompt_file

        prompt_list, prompt_set = read_prompt_file(Path(prompts)), str(prompts)
    else:
        prompt_list, prompt_set = [str(p) for p in prompts], "custom"
        if not prompt_list:
            raise ValueError("prompts: empty list")
    options = dict(options or {})
    spec = RewardSpec(name=bench.reward, options=options)
    result = evaluate(
        model,
        prompt_list,
        [spec],
        num_seeds=num_seeds,
        seed_base=seed_base,
        settings=settings or SampleSettings(),
        batch_size=batch_size,
        category_of=bench.category_of if prompts is None else None,
        groupings=bench.groupings if prompts is None else None,
        images_dir=images_dir,
        progress=progress,
    )
    shown = redact_reward_spec({"name": bench.reward, "options": dict(options)})["options"]
    return {
        "bench": bench.name,
        "reward": bench.reward,
        "prompt_set": prompt_set,
        "reward_options": shown,
        **result,
    }
