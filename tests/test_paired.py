"""Paired comparison of two evaluations: image-by-image differences, intervals over prompts."""

from __future__ import annotations

import math

import pytest

from dsharp.paired import paired_difference, paired_table

#: Student's t 0.975 quantiles from tables: two prompts give 1 degree of freedom, three 2.
T975_1, T975_2 = 12.7062047, 4.3026527


def _result(scores: dict[tuple[str, int], float | None], category: bool = True) -> dict:
    images = []
    for (prompt, seed), score in scores.items():
        entry = {"prompt": prompt, "seed": seed, "score": score}
        if category:
            entry["category"] = prompt.split()[0]
        images.append(entry)
    return {"images": images}


def test_delta_is_the_mean_image_difference_and_the_interval_is_over_prompts():
    base = _result({("x a", 0): 0.0, ("x a", 1): 0.5, ("y b", 0): 1.0, ("y b", 1): 0.5})
    tuned = _result({("x a", 0): 1.0, ("x a", 1): 0.5, ("y b", 0): 0.5, ("y b", 1): 1.0})
    p = paired_difference(base, tuned)
    # image differences: +1, 0, -0.5, +0.5 -> mean 0.25; per prompt: +0.5 and 0.0
    assert p["delta"] == pytest.approx(0.25)
    assert p["n_images"] == 4 and p["n_prompts"] == 2
    # sample std of [0.5, 0.0] is sqrt(0.125); interval t(0.975, 1 df) * std / sqrt(2)
    assert p["ci95"] == pytest.approx(T975_1 * math.sqrt(0.125) / math.sqrt(2))
    assert p["base"] == pytest.approx(0.5) and p["other"] == pytest.approx(0.75)
    assert p["better"] == pytest.approx(0.5) and p["worse"] == pytest.approx(0.25)
    assert p["categories"]["x"]["delta"] == pytest.approx(0.5)
    assert p["categories"]["y"]["delta"] == pytest.approx(0.0)
    assert math.isnan(p["categories"]["x"]["ci95"])  # one prompt: no interval


def test_only_images_both_scored_are_paired():
    base = _result({("x a", 0): 0.2, ("x a", 1): None, ("x b", 0): 0.4})
    tuned = _result({("x a", 0): 0.6, ("x a", 1): 1.0, ("x c", 0): 1.0}, category=False)
    p = paired_difference(base, tuned)
    assert p["n_images"] == 1 and p["delta"] == pytest.approx(0.4)


def test_a_prompt_listed_twice_counts_twice_as_in_the_evaluation_means():
    base = {"images": [{"prompt": p, "seed": 0, "score": 0.0} for p in ("a", "a", "b")]}
    tuned = {"images": [{"prompt": p, "seed": 0, "score": s} for p, s in (("a", 1.0),) * 2]}
    tuned["images"].append({"prompt": "b", "seed": 0, "score": 0.0})
    p = paired_difference(base, tuned)
    assert p["n_images"] == 3 and p["n_prompts"] == 2
    assert p["delta"] == pytest.approx(2 / 3) and p["other"] == pytest.approx(2 / 3)


def test_no_common_image_or_no_per_image_scores_is_a_clear_error():
    base = _result({("x a", 0): 0.2})
    with pytest.raises(ValueError, match="no image in common"):
        paired_difference(base, _result({("x a", 1): 0.2}), ("base", "tuned"))
    with pytest.raises(ValueError, match="old: no per-image scores"):
        paired_difference(base, {"overall": 0.3}, ("base", "old"))


def test_table_pairs_every_source_with_the_first():
    base = _result({("x a", 0): 0.0, ("y a", 0): 1.0})
    one = _result({("x a", 0): 1.0, ("y a", 0): 1.0})
    two = _result({("x a", 0): 0.0, ("y a", 0): 0.0})
    columns, rows = paired_table([("base", base), ("one", one), ("two", two)])
    assert columns == [
        "run", "baseline", "images", "baseline score", "score", "delta", "ci95",
        "share better", "share worse", "delta:x", "delta:y",
    ]  # fmt: skip
    assert [r[:3] for r in rows] == [["one", "base", 2], ["two", "base", 2]]
    assert rows[0][5] == pytest.approx(0.5) and rows[1][5] == pytest.approx(-0.5)
    assert rows[0][9:] == [pytest.approx(1.0), pytest.approx(0.0)]
    with pytest.raises(ValueError, match="at least one evaluation"):
        paired_table([("base", base)])


def test_the_interval_is_centred_on_the_image_mean_when_prompts_hold_unequal_images():
    """A prompt listed twice holds four images to another's two: the interval belongs to
    the mean over images (the delta reported), computed with prompts as clusters."""
    base = _result({("x a", 0): 0.0, ("x a", 1): 0.0, ("y b", 0): 0.0, ("y b", 1): 0.0})
    tuned = _result({("x a", 0): 1.0, ("x a", 1): 1.0, ("y b", 0): 0.0, ("y b", 1): 0.0})
    base["images"] += base["images"][:2]  # "x a" again, as a repeated prompt-file line
    tuned["images"] += tuned["images"][:2]
    p = paired_difference(base, tuned)
    assert p["delta"] == pytest.approx(4 / 6) and (p["n_images"], p["n_prompts"]) == (6, 2)
    # residuals summed per prompt: x a 4 * (1 - 2/3), y b 2 * (0 - 2/3)
    residuals = [4 * (1 / 3), 2 * (-2 / 3)]
    variance = 2 / 1 * sum(r * r for r in residuals) / 6**2
    assert p["ci95"] == pytest.approx(T975_1 * math.sqrt(variance))


def test_a_nan_score_is_an_unscored_image_not_a_nan_delta():
    base = _result({("x a", 0): 0.5, ("x a", 1): float("nan"), ("y b", 0): 0.5})
    tuned = _result({("x a", 0): 1.0, ("x a", 1): 1.0, ("y b", 0): 0.5})
    p = paired_difference(base, tuned)
    assert p["n_images"] == 2 and p["delta"] == pytest.approx(0.25)


def test_few_prompts_widen_the_interval_by_student_t_not_1_96():
    """Three prompts give two degrees of freedom: 1.96 covered about 81% of the time
    (audit F6), Student's t 4.303 covers 95%."""
    base = _result({(p, s): 0.0 for p in ("x a", "y b", "z c") for s in (0, 1)})
    diffs = {"x a": 0.1, "y b": 0.3, "z c": 0.8}
    tuned = _result({(p, s): diffs[p] for p in diffs for s in (0, 1)})
    p = paired_difference(base, tuned)
    means = list(diffs.values())
    mean = sum(means) / 3
    std = math.sqrt(sum((m - mean) ** 2 for m in means) / 2)
    assert p["n_prompts"] == 3
    assert p["ci95"] == pytest.approx(T975_2 * std / math.sqrt(3), rel=1e-6)
