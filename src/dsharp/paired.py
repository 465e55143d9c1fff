"""Paired comparison of two evaluations on the same prompts and seeds.

Two models scored with the same seeds draw from the same initial noises, so the difference
of their scores image by image varies much less than either score: a gain and its
uncertainty should come from those differences, not from two independent means. Images of
one prompt are not independent draws, so the interval is taken over prompts: a
cluster-robust interval of the mean image difference, prompts as clusters, with Student's
t quantile for the number of prompts (few prompts give a wider interval than 1.96 would).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

ImageKey = tuple[str, int, int]


def image_scores(result: Mapping[str, Any], label: str) -> dict[ImageKey, dict[str, Any]]:
    """``(prompt, seed, occurrence) -> image entry`` of an evaluation's scored ``images``.

    A prompt listed twice in a prompt file is evaluated twice: ``occurrence`` keeps both
    images, so paired means weigh prompts as the evaluation's own means do.
    """
    images = result.get("images")
    if not images:
        raise ValueError(_no_images_message(result, label))
    seen: dict[tuple[str, int], int] = defaultdict(int)
    scores: dict[ImageKey, dict[str, Any]] = {}
    for entry in images:
        prompt, seed = entry["prompt"], int(entry["seed"])
        occurrence = seen[prompt, seed]
        seen[prompt, seed] += 1
        score = entry.get("score")
        if score is not None and math.isfinite(score):  # NaN (a JSON NaN literal): unscored
            scores[prompt, seed, occurrence] = entry
    return scores


def _no_images_message(result: Mapping[str, Any], label: str) -> str:
    """Why an evaluation holds no per-image scores: ``dsharp eval`` records them for every
    bench, T2I-CompBench too, so a file without them was written before that (or not by
    ``dsharp eval``). A T2I-CompBench evaluation's scored prompts are kept in its work
    folder, which ``dsharp eval`` run again with the same settings reuses."""
    if result.get("bench") == "t2i-compbench":
        work = result.get("out_dir")
        again = f"; run again, it reuses the prompts already scored in {work}" if work else ""
        return (
            f"{label}: no per-image scores: this T2I-CompBench evaluation predates dsharp's "
            f"recording them (`dsharp eval --bench t2i-compbench` records them now{again})"
        )
    return (
        f"{label}: no per-image scores in this evaluation: it predates dsharp's recording "
        "them, or was not written by `dsharp eval` (which records them)"
    )


def _summary(diffs: list[tuple[str, float]]) -> dict[str, float]:
    """The mean image difference and its cluster-robust 95% interval, prompts as clusters
    (:func:`dsharp.intervals.cluster_ci95`: Student's t with one degree of freedom fewer
    than the prompts): centred on that mean also where prompts hold different numbers of
    images (a prompt listed twice, an image left unscored). With equal numbers it is the
    interval of the prompts' mean differences. NaN with one prompt, which says nothing
    about the spread between prompts."""
    from dsharp.intervals import cluster_ci95

    n = len(diffs)
    delta = sum(d for _, d in diffs) / n
    ci95 = cluster_ci95([d for _, d in diffs], [prompt for prompt, _ in diffs])
    clusters = len({prompt for prompt, _ in diffs})
    return {"delta": delta, "ci95": ci95, "n_images": n, "n_prompts": clusters}


def paired_difference(
    base: Mapping[str, Any],
    other: Mapping[str, Any],
    labels: tuple[str, str] = ("base", "other"),
) -> dict[str, Any]:
    """``other`` minus ``base`` on the images both scored (same prompt, same seed).

    Returns ``delta`` (mean difference), ``ci95`` (half-width of the 95% interval over
    prompts; NaN with one prompt), ``n_images``, ``n_prompts``, ``base`` and ``other``
    (their means on those images), ``better`` / ``worse`` (share of images that scored
    higher / lower) and, where the images carry a category, ``categories`` (category ->
    the same summary). Raises ValueError when the two share no scored image.
    """
    a, b = image_scores(base, labels[0]), image_scores(other, labels[1])
    common = [key for key in a if key in b]
    if not common:
        raise ValueError(
            f"{labels[0]} and {labels[1]}: no image in common (a paired comparison needs the "
            "same prompts and seeds)"
        )
    diffs = [(key[0], b[key]["score"] - a[key]["score"]) for key in common]
    result: dict[str, Any] = _summary(diffs)
    n = len(common)
    result["base"] = sum(a[key]["score"] for key in common) / n
    result["other"] = sum(b[key]["score"] for key in common) / n
    result["better"] = sum(d > 0 for _, d in diffs) / n
    result["worse"] = sum(d < 0 for _, d in diffs) / n
    by_category: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for key, diff in zip(common, diffs, strict=True):
        category = a[key].get("category")
        if category is not None:
            by_category[category].append(diff)
    if by_category:
        result["categories"] = {
            category: _summary(cat_diffs) for category, cat_diffs in sorted(by_category.items())
        }
    return result


def check_same_rewards(named: list[tuple[str, Mapping[str, Any]]]) -> None:
    """Refuse to pair evaluations scored by different rewards (``ValueError``): one model's
    images scored by shapes and by shapes_soft differ by the rewards' scales, and would read
    as a large, certain gain; so do images scored by one reward set up otherwise (shapes
    and shapes binary=true, clip with another model, other weights). Where an evaluation
    does not record its rewards' weights (older files), a weight-0 reward it names may be
    reported only: refused only when the two share no reward; not refused where it records
    no rewards at all, nor on settings where it does not record them or records them hidden
    (``<redacted>``: a note says so)."""
    from dsharp.comparability import scoring_rewards, scoring_specs, spec_difference

    base_name, base = named[0]
    base_rewards, base_exact = scoring_rewards(dict(base))
    base_specs = scoring_specs(dict(base))
    for name, result in named[1:]:
        rewards, exact = scoring_rewards(dict(result))
        if base_rewards is None or rewards is None or rewards == base_rewards:
            specs = scoring_specs(dict(result))
            if base_specs is None or specs is None:
                continue
            difference = spec_difference((base_name, base_specs), (name, specs))
            if difference is None:
                continue
            raise ValueError(
                f"--paired: {base_name} and {name} are scored with other reward settings "
                f"({difference}): images scored differently cannot be paired (compare them "
                "without --paired)"
            )
        if not (exact and base_exact) and set(rewards) & set(base_rewards):
            continue
        raise ValueError(
            f"--paired: {base_name} is scored by {', '.join(base_rewards) or 'no reward'}, "
            f"{name} by {', '.join(rewards) or 'no reward'}: images scored by different "
            "rewards cannot be paired (compare them without --paired)"
        )


#: What the columns of a ``--paired`` table are: ``compare.md`` read alone must not leave
#: ``ci95`` (a half-width) to pass for the interval's lower end.
PAIRED_LEGEND = (
    "Each row minus its baseline on the images both scored (same prompt and seed): baseline "
    "score and score are their means on those images; delta: score - baseline score; ci95: "
    "half-width of delta's 95% interval over prompts (delta +- ci95; none with one prompt); "
    "share better / worse: of those images; delta:CATEGORY: delta on that category's images."
)


def paired_subset_notes(named: list[tuple[str, Mapping[str, Any]]]) -> list[str]:
    """A note per evaluation paired with the first on fewer images than either scored
    (other prompts, seeds or unscored images): its row's ``baseline score`` and ``score``
    are means over the images both scored, not the sources' ``overall``, and the delta
    says nothing about the prompts or seeds only one of them drew."""
    base_label, base = named[0]
    base_scores = image_scores(base, base_label)
    notes = []
    for label, result in named[1:]:
        scores = image_scores(result, label)
        common = sum(key in base_scores for key in scores)
        if common and (common < len(base_scores) or common < len(scores)):
            notes.append(
                f"{label} is paired with {base_label} on the {common} images both scored "
                f"({base_label}: {len(base_scores)}, {label}: {len(scores)} scored): its "
                "baseline score, score and delta are over those images only"
            )
    return notes


def paired_table(
    named: list[tuple[str, Mapping[str, Any]]],
) -> tuple[list[str], list[list[Any]]]:
    """Columns and one row per evaluation after the first, each paired with the first."""
    if len(named) < 2:
        raise ValueError("--paired: give a baseline and at least one evaluation to pair with it")
    base_label, base = named[0]
    pairs: list[tuple[str, dict[str, Any]]] = []
    categories: list[str] = []
    for label, result in named[1:]:
        paired = paired_difference(base, result, (base_label, label))
        pairs.append((label, paired))
        categories += [c for c in paired.get("categories", {}) if c not in categories]
    columns = ["run", "baseline", "images", "baseline score", "score", "delta", "ci95"]
    columns += ["share better", "share worse", *(f"delta:{c}" for c in categories)]
    rows: list[list[Any]] = []
    for label, p in pairs:
        row = [label, base_label, p["n_images"], p["base"], p["other"], p["delta"], p["ci95"]]
        row += [p["better"], p["worse"]]
        row += [p.get("categories", {}).get(c, {}).get("delta", math.nan) for c in categories]
        rows.append(row)
    return columns, rows
