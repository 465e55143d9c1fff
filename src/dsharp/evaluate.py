"""Evaluation: generate images for prompts x fixed seeds, score them, summarise as a dict.

Every model is evaluated with the same seeds (``seed_base + j`` for seed ``j`` of every
prompt), so a base model and its fine-tuned run are compared on the same initial noises.
No printing here: commands and reports format the returned dicts.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from dsharp.bench import T2I_BENCH
from dsharp.generate import SampleSettings, generate
from dsharp.models.base import DiffusionModel
from dsharp.progress import task_progress
from dsharp.rewards.base import RewardImages
from dsharp.rewards.combine import CombinedReward

if TYPE_CHECKING:
    from dsharp.inference.base import Verifier


@dataclass(frozen=True)
class Bench:
    """A named evaluation: default prompts, rewards, and how to group prompts."""

    name: str
    description: str
    default_prompts: Callable[[], list[str]]
    rewards: list[dict[str, Any]]
    category_of: Callable[[str], str] | None = None
    groupings: Mapping[str, Callable[[str], str]] = field(default_factory=dict)
    unlabelled: str | None = None
    """Why :meth:`for_prompts` dropped categories or groupings (None: it dropped none)."""

    def for_prompts(self, prompts: Sequence[str]) -> Bench:
        """This bench with only the labels (its categories, each grouping) it can give every
        one of ``prompts``. A prompt file outside the bench's own prompts (``--bench shapes
        --reward clip --prompts FILE``) is scored without them, as README documents the
        combination, rather than failing once its images are made; ``unlabelled`` says what
        was dropped and why."""
        reason, dropped = None, []
        category_of = self.category_of
        if category_of is not None and (why := _cannot_label(category_of, prompts)):
            category_of, reason = None, why
            dropped.append("categories")
        groupings = {}
        for name, label_of in self.groupings.items():
            why = _cannot_label(label_of, prompts)
            if why is None:
                groupings[name] = label_of
            else:
                reason = reason or why
                dropped.append(f"'{name}' groups")
        if not dropped:
            return self
        unlabelled = f"{reason}; the result has no {' and no '.join(dropped)}"
        return replace(self, category_of=category_of, groupings=groupings, unlabelled=unlabelled)


def _cannot_label(label_of: Callable[[str], str], prompts: Sequence[str]) -> str | None:
    """Why ``label_of`` cannot label one of ``prompts`` (the first), or None."""
    for prompt in dict.fromkeys(prompts):
        try:
            label_of(prompt)
        except ValueError as exc:
            reason = " ".join(str(exc).split())
            return reason if prompt in reason else f"prompt {prompt!r}: {reason}"
    return None


T2I_COMPBENCH = T2I_BENCH


def get_bench(name: str, label: str = "bench") -> Bench:
    """A reward bench (one reward on its default prompt set) by name; ``label`` names the
    input in errors (``--bench`` for ``dsharp eval``).

    T2I-CompBench is not a reward bench: it has its own runner (``dsharp.bench``)."""
    from dsharp.bench.reward_benches import REWARD_BENCHES

    if name == T2I_COMPBENCH:  # a bench, though not one of these: say where it runs
        raise ValueError(
            f"{label}: {T2I_COMPBENCH} has its own runner, with its own settings (split, "
            "categories, images per prompt): dsharp eval --bench t2i-compbench, or "
            "dsharp.bench.run_t2i_compbench"
        )
    if name not in REWARD_BENCHES:
        known = ", ".join([*REWARD_BENCHES, T2I_COMPBENCH])
        raise ValueError(f"{label}: unknown bench '{name}' (available: {known})")
    rb = REWARD_BENCHES[name]
    return Bench(
        name=rb.name,
        description=rb.description,
        default_prompts=rb.default_prompts,
        rewards=[{"name": rb.reward}],
        category_of=rb.category_of,
        groupings=rb.groupings,
    )


def mean_ci(
    values: Sequence[float], clusters: Sequence[Hashable] | None = None
) -> dict[str, float]:
    """Mean, standard deviation and 95% confidence interval (half-width ``ci95``) of
    ``values``, with ``clusters`` (one label per value: its prompt) as the independent
    units: the seeds of one prompt are not independent draws. Without ``clusters`` each
    value is its own. The interval uses Student's t with one degree of freedom fewer than
    the clusters (:func:`dsharp.intervals.cluster_ci95`). With fewer than two values the
    spread is not known: ``std`` and ``ci95`` are NaN (null in JSON), never 0."""
    from dsharp.intervals import cluster_ci95

    n = len(values)
    if n == 0:
        return {"mean": float("nan"), "std": float("nan"), "ci95": float("nan"), "n": 0}
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else float("nan")
    ci95 = cluster_ci95(values, list(range(n)) if clusters is None else clusters)
    return {"mean": mean, "std": std, "ci95": ci95, "n": n}


def evaluate(
    model: DiffusionModel,
    prompts: Sequence[str],
    reward_specs: Sequence[Any],
    *,
    num_seeds: int = 2,
    seed_base: int = 0,
    settings: SampleSettings | None = None,
    batch_size: int = 16,
    category_of: Callable[[str], str] | None = None,
    groupings: Mapping[str, Callable[[str], str]] | None = None,
    images_dir: Path | None = None,
    progress: bool = False,
    progress_label: str = "sample",
    keep_images: list[torch.Tensor] | None = None,
    scorer: CombinedReward | None = None,
    verifier: Verifier | None = None,
) -> dict[str, Any]:
    """Score ``model`` on ``prompts`` x ``num_seeds`` seeds with each reward.

    Returns ``overall`` (mean weighted reward: sum of weight x score over the sum of the
    weights' magnitudes), ``metrics`` (per reward: mean, std, ci95 over prompts, n),
    ``categories`` (category -> mean weighted reward, when ``category_of`` is given),
    ``groups`` (grouping name -> label -> mean weighted reward, for each of ``groupings``),
    ``strict`` (mean of a reward's per-image ``strict`` flag, when it reports one),
    ``constraints`` (constraint kind -> share met, when a reward reports per-image
    ``constraints`` with a ``kind``, as the shapes verifier does: it says *what* fails),
    ``n_images`` (generated), ``n_scored`` (those with a score: the means are over them),
    ``reward_weights`` and ``reward_specs`` (each reward's settings, secrets redacted),
    ``nfe_per_image``, ``reward_evals_per_image`` (inference-time search only),
    the seeds and sampling settings, and ``images`` (each image's prompt, seed, weighted
    score and category) for paired comparisons. With ``images_dir`` the images are kept
    there (``00000-seed0.png``, ... in prompt-major order) beside a contact sheet,
    ``grid.png``, whose images are titled with their scores. A ``keep_images`` list gets the
    generated images ``(N, 3, H, W)``, in the order of ``images``, for a caller to show.

    Each reward scores with training's checks (``on_error``, NaN and inf, a plugin's own
    exception named): a sample it cannot score stops the evaluation with an
    :class:`~dsharp.rewards.base.UnscoredError` unless its ``on_error`` is ``missing``.
    ``scorer`` (the rewards of ``reward_specs``) and ``verifier`` may come built, so that a
    command fails on a reward that cannot be built (a missing API key) before its model loads.
    """
    settings = settings or SampleSettings()
    if not prompts:
        raise ValueError("no prompts to evaluate")
    # every prompt is labelled before sampling: a label that fails must not waste the images
    category_of = _labelled(prompts, category_of)
    groupings = {name: _labelled(prompts, f) for name, f in (groupings or {}).items()}
    pairs = [(p, seed_base + j) for p in prompts for j in range(num_seeds)]
    all_prompts = [p for p, _ in pairs]
    seeds = [s for _, s in pairs]
    scorer = scorer if scorer is not None else CombinedReward(list(reward_specs))
    rewards = list(zip(scorer.specs, scorer.rewards, strict=True))
    generated = generate(
        model,
        all_prompts,
        seeds,
        settings,
        batch_size=batch_size,
        progress=progress,
        progress_label=progress_label,
        verifier=verifier,
    )
    if keep_images is not None:
        keep_images.append(generated.images)

    per_reward: dict[str, list[float]] = {}
    strict: list[float] | None = None  # per scored image, where a reward reports it
    kinds: dict[str, list[float]] = defaultdict(list)
    total = torch.zeros(len(pairs), dtype=torch.float64)
    # Normalised by the weights' magnitudes, so a penalty (negative weight) keeps the sign
    # training gives it: overall rises as the trained objective does.
    weight_sum = sum(abs(spec.weight) for spec, _ in rewards)
    # A reward named twice (other options) gets keys name, name#1, ... as in CombinedReward.
    keys = scorer.keys
    # Scoring has its own bar: a slow reward (a remote grader, a large model on CPU) can
    # take as long as sampling, which would otherwise end its bar and then show nothing.
    label = _scoring_label(progress_label)
    with task_progress(label, enabled=progress) as bar:
        task = bar.add_task(label, total=len(pairs) * len(rewards))
        for key, (spec, reward) in zip(keys, rewards, strict=True):
            scores_all: list[float] = []
            for start in range(0, len(pairs), batch_size):
                chunk = slice(start, start + batch_size)
                images = RewardImages(generated.images[chunk])
                meta = [{"seed": s} for s in seeds[chunk]]
                scores, info = scorer.score_component(
                    key, spec, reward, images, all_prompts[chunk], meta
                )
                bar.update(task, advance=len(images))
                scores_all += [float(s) for s in scores.detach().cpu()]
                if "strict" in info:  # None: an image the reward could not score
                    strict = (strict or []) + [float(v) for v in info["strict"] if v is not None]
                for image_constraints in info.get("constraints") or []:
                    for constraint in image_constraints:
                        if isinstance(constraint, dict) and "kind" in constraint:
                            kinds[constraint["kind"]].append(float(bool(constraint["ok"])))
            per_reward[key] = scores_all
            if spec.weight:  # a weight-0 reward is reported only: its NaNs must not poison
                total += spec.weight * torch.tensor(scores_all, dtype=torch.float64)
    total /= weight_sum if weight_sum else 1.0
    scored = [v for v in total.tolist() if not math.isnan(v)]

    result: dict[str, Any] = {
        "overall": sum(scored) / len(scored) if scored else float("nan"),
        "n_images": len(pairs),
        # images with a score: ``overall`` and the means are over these only
        "n_scored": len(scored),
        "n_prompts": len(prompts),
        "seeds": sorted(set(seeds)),
        # prompts as clusters: the seeds of one prompt are not independent draws
        "metrics": {name: _scored_mean_ci(vals, all_prompts) for name, vals in per_reward.items()},
        # which rewards make up each image's score (weight 0: reported only), so that two
        # evaluations can be told to be on one scale (dsharp.paired)
        "reward_weights": {key: spec.weight for key, (spec, _) in zip(keys, rewards, strict=True)},
        # and how each was set up (options, normalisation), secrets redacted: one reward name
        # with other options (shapes binary=true, clip with another model) is another scorer
        "reward_specs": {
            key: _recorded_spec(spec) for key, (spec, _) in zip(keys, rewards, strict=True)
        },
        "nfe_per_image": generated.nfe_per_image,
        "sample": settings.as_dict(),
    }
    if generated.reward_evals_per_image is not None:
        result["reward_evals_per_image"] = generated.reward_evals_per_image
    if strict is not None:
        result["strict"] = sum(strict) / len(strict) if strict else float("nan")
    if kinds:
        result["constraints"] = {k: sum(v) / len(v) for k, v in sorted(kinds.items())}
    values = total.tolist()
    if category_of is not None:
        result["categories"] = group_means(all_prompts, values, category_of)
    if groupings:
        result["groups"] = {
            name: group_means(all_prompts, values, label_of) for name, label_of in groupings.items()
        }
    # Each image's score, keyed by prompt and seed: two evaluations with the same seeds can
    # then be compared image for image (dsharp.paired), which a mean alone cannot tell.
    result["images"] = [
        _image_entry(prompt, seed, value, category_of)
        for (prompt, seed), value in zip(pairs, values, strict=True)
    ]
    if images_dir is not None:
        save_evaluated_images(Path(images_dir), generated.images, result)
    return result


def evaluated_image_names(result: dict[str, Any]) -> list[str]:
    """The file names of an evaluation's images, in the order of ``result["images"]``."""
    return [f"{i:05d}-seed{e['seed']}.png" for i, e in enumerate(result["images"])]


def save_evaluated_images(
    folder: Path, images: torch.Tensor, result: dict[str, Any], json_path: Path | None = None
) -> None:
    """An evaluation's ``images`` (``(N, 3, H, W)``, in the order of ``result["images"]``)
    and their contact sheet, with ``json_path`` (``result`` as JSON) where given, replaced as
    one set, the JSON last, then the sheet: a full disk must not leave a sheet of other
    images, other images beside it, or new images beside an older result. The images are
    recorded in ``folder`` (:mod:`dsharp.file_records`): those of an earlier evaluation
    that this one does not rewrite (more prompts or seeds) go with the set."""
    from dsharp.file_sets import replaced_together
    from dsharp.io import atomic_write_json
    from dsharp.sampling import save_images
    from dsharp.score_words import reward_words
    from dsharp.sheets import SHEET_PNG, save_contact_sheet

    entries = result["images"]
    prompts = [e["prompt"] for e in entries]
    seeds = [e["seed"] for e in entries]
    values = [float("nan") if e["score"] is None else e["score"] for e in entries]
    names = evaluated_image_names(result)
    sheet = folder / SHEET_PNG
    owned = [folder / n for n in names]
    files = [*owned, sheet, *([json_path] if json_path else [])]
    with replaced_together(*files, recorded=owned) as staged:
        save_images(images, folder, names, staged=staged)
        save_contact_sheet(images, prompts, seeds, staged(sheet), values, reward_words(result))
        if json_path is not None:
            atomic_write_json(staged(json_path), result)


def _scoring_label(progress_label: str) -> str:
    """The scoring bar's label: ``score``, or ``eval base (score)`` after ``eval base``."""
    return "score" if progress_label == "sample" else f"{progress_label} (score)"


def _labelled(prompts: Sequence[str], label_of: Callable[[str], str] | None) -> Any:
    """``label_of`` with every one of ``prompts`` labelled now (its error raised now)."""
    if label_of is None:
        return None
    return {prompt: label_of(prompt) for prompt in dict.fromkeys(prompts)}.__getitem__


def _recorded_spec(spec: Any) -> dict[str, Any]:
    """A reward spec as an evaluation records it: its fields, secret options redacted."""
    from dsharp.redaction import redact_reward_spec

    data = spec.model_dump() if hasattr(spec, "model_dump") else dict(spec)
    return redact_reward_spec(data)


def _scored_mean_ci(values: Sequence[float], prompts: Sequence[str]) -> dict[str, float]:
    """:func:`mean_ci` of the scored (not NaN) ``values``, each clustered by its prompt."""
    kept = [(v, p) for v, p in zip(values, prompts, strict=True) if not math.isnan(v)]
    return mean_ci([v for v, _ in kept], [p for _, p in kept])


def _image_entry(
    prompt: str, seed: int, value: float, category_of: Callable[[str], str] | None
) -> dict[str, Any]:
    """One image's row of ``images``: an unscored image (NaN) is ``None``, valid JSON."""
    entry: dict[str, Any] = {"prompt": prompt, "seed": seed}
    entry["score"] = None if math.isnan(value) else value
    if category_of is not None:
        entry["category"] = category_of(prompt)
    return entry


def group_means(
    prompts: Sequence[str], values: Sequence[float], label_of: Callable[[str], str]
) -> dict[str, float]:
    """Mean of the scored ``values`` per ``label_of(prompt)``, labels sorted."""
    groups: dict[str, list[float]] = defaultdict(list)
    for prompt, value in zip(prompts, values, strict=True):
        if not math.isnan(value):
            groups[label_of(prompt)].append(value)
    return {k: sum(v) / len(v) for k, v in sorted(groups.items())}
